//! The whole study in one command: train a ResNet on MNIST once per seed, sample the frozen
//! network at step 0, inside the first epoch and at every epoch end, analyse every (sample,
//! layer), aggregate over seeds, and write OUT/report.html and OUT/report.md.
//!
//! `cargo run --release --example train_and_probe -- [--quick] [--data-dir DIR] [cnnu study options]`
//! It is `cnnu study` under another name: both call `cnnu::study::run`.

use clap::Parser;

/// Train, sample, analyse, report.
#[derive(Debug, Parser)]
#[command(name = "train_and_probe", version, about)]
struct Args {
    /// Backend to run on (flex, ndarray, wgpu, vulkan, cuda); default: the first compiled in.
    #[arg(long, env = cnnu::model::BACKEND_ENV)]
    backend: Option<String>,
    #[command(flatten)]
    study: cnnu::cli::StudyArgs,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match cnnu::commands::study(args.backend.as_deref(), &args.study) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
