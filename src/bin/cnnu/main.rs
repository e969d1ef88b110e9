//! The `cnnu` binary: parses the command line (`cli`), does the work through the library
//! (`commands`), shows progress (`console`) and reports errors in one line.

mod cli;
mod commands;
mod console;

use clap::Parser;

/// The error and its causes on one line. Many of cnnu's errors already quote their cause
/// (`conv1: all 18 features are ...`), so a cause whose text is already on the line is not
/// repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line.replace('\n', " ")
}

fn main() -> std::process::ExitCode {
    cnnu::kernels::keep_freed_memory();
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
