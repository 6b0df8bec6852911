//! `cargo xtask ...`: the project's task runner, a thin shell over `latentscope::cli`.
//!
//! `cargo xtask --features cuda pipeline run` rebuilds this runner with the feature (through
//! cargo) and runs the rest of the command line with it.
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--features") {
        let Some(features) = args.get(1) else {
            eprintln!("error: --features needs a value (cuda or metal)");
            return ExitCode::FAILURE;
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["run", "--release", "--quiet", "-p", "xtask", "--features", features, "--"])
            .args(&args[2..])
            .status();
        return match status {
            Ok(s) if s.success() => ExitCode::SUCCESS,
            Ok(s) => ExitCode::from(s.code().unwrap_or(1).clamp(1, 255) as u8),
            Err(e) => {
                eprintln!("error: cannot run cargo: {e}");
                ExitCode::FAILURE
            }
        };
    }
    latentscope::cli::main()
}
