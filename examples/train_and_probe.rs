//! The whole study in one command: train a ResNet on MNIST, sample the frozen network every
//! epoch, analyse every (epoch, layer), and write RUN/report.html and RUN/report.md.
//!
//! `cargo run --release --example train_and_probe -- [--quick] [--data-dir DIR] [cnnu study options]`
//! It is `cnnu study` under another name: both call `cnnu::study::run`.

use clap::Parser;

/// Train, sample, analyse, report.
#[derive(Debug, Parser)]
#[command(name = "train_and_probe", version, about)]
struct Args {
    /// Backend to run on (flex, ndarray, wgpu, vulkan, cuda).
    #[arg(long)]
    backend: Option<String>,
    #[command(flatten)]
    study: cnnu::study::StudyArgs,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match cnnu::cli::study(args.backend.as_deref(), &args.study) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
