//! The `cnnu` binary: parses the command line and reports errors in one line.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cnnu::cli::Cli::parse();
    match cnnu::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
