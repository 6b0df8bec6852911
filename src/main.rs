//! The `latentscope` binary: the same CLI as `cargo xtask`, for installed use and tests.
fn main() -> std::process::ExitCode {
    latentscope::cli::main()
}
