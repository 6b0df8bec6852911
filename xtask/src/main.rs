//! `cargo xtask ...`: the project's task runner, a thin shell over `latentscope::cli`.
fn main() -> std::process::ExitCode {
    latentscope::cli::main()
}
