//! The whole study in one command: train a ResNet on MNIST once per seed, sample the frozen
//! network at step 0, inside the first epoch and at every epoch end, analyse every (sample,
//! layer), aggregate over seeds, and write OUT/report.html and OUT/report.md.
//!
//! `cargo run --release --example train_and_probe -- [--quick] [--data-dir DIR] [cnnu study options]`
//! It is `cnnu study` under another name: the same options (the binary's `cli.rs`), the same
//! progress lines (its `console.rs`), the same library call (`cnnu::study::run`).

use clap::Parser;

#[allow(dead_code)]
#[path = "../src/bin/cnnu/cli.rs"]
mod cli;
#[allow(dead_code)]
#[path = "../src/bin/cnnu/console.rs"]
mod console;

/// Train, sample, analyse, report.
#[derive(Debug, Parser)]
#[command(name = "train_and_probe", version, about)]
struct Args {
    /// Backend to run on (flex, ndarray, wgpu, vulkan, cuda); default: the first compiled in.
    #[arg(long, env = cnnu::model::BACKEND_ENV)]
    backend: Option<String>,
    #[command(flatten)]
    study: cli::StudyArgs,
}

fn run(args: &Args) -> anyhow::Result<()> {
    let plan = args.study.plan(args.backend.as_deref())?;
    let outcome =
        cnnu::study::run(&plan, &mut console::Console::new()).map_err(cli::study_error)?;
    println!("{}", outcome.table);
    println!("report: {}", outcome.report.html.display());
    println!("        {}", outcome.report.md.display());
    Ok(())
}

fn main() -> std::process::ExitCode {
    cnnu::kernels::keep_freed_memory();
    match run(&Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
