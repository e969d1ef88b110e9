//! The `cnnu` command line: argument definitions and the code behind each subcommand.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use cnnu_model::{BackendKind, ResNet18Config, TapSet, catalogue};
use cnnu_train::tensor_file::{self, NamedTensor};

/// cnnu: study how a CNN's internal representations change while it learns.
#[derive(Debug, Parser)]
#[command(name = "cnnu", version, about)]
pub struct Cli {
    /// Backend to run on (flex, ndarray, wgpu, vulkan, cuda); default: the first compiled in.
    #[arg(long, global = true, value_name = "NAME")]
    pub backend: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every tap (name, then its output shape for a 1x28x28 input).
    Layers {
        /// Input height and width.
        #[arg(long, default_value_t = 28)]
        size: usize,
    },
    /// List the compiled-in backends and the device each finds.
    Backends,
    /// Run the model in eval mode on a tensor of images and write the selected taps.
    Probe(ProbeArgs),
}

/// Options of `cnnu probe`.
#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// Weights in torchvision's safetensors convention.
    #[arg(long)]
    pub weights: PathBuf,
    /// Safetensors file holding a float32 [N,1,28,28] tensor.
    #[arg(long)]
    pub input: PathBuf,
    /// Name of the input tensor in that file.
    #[arg(long, default_value = "input")]
    pub input_key: String,
    /// Taps to record: names, patterns (`layer1.*`, `*.conv1`), `all`, `leaves`.
    #[arg(long, default_value = "all")]
    pub taps: String,
    /// Output safetensors file, one tensor per tap keyed by its name.
    #[arg(long)]
    pub out: PathBuf,
    /// Images per forward pass.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
}

/// Resolves `--backend` to a compiled-in backend.
pub fn resolve_backend(name: Option<&str>) -> Result<BackendKind> {
    match name {
        Some(n) => Ok(n.parse::<BackendKind>()?.ensure_compiled()?),
        None => BackendKind::default_compiled()
            .context("this binary was built without any backend; enable one of the features flex, ndarray, wgpu, vulkan, cuda"),
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Layers { size } => layers(size),
        Command::Backends => backends(),
        Command::Probe(args) => probe(cli.backend.as_deref(), args),
    }
}

fn layers(size: usize) -> Result<()> {
    if size == 0 {
        bail!("--size must be at least 1");
    }
    let config = ResNet18Config::new();
    let width = catalogue().iter().map(|t| t.name.len()).max().unwrap_or(0);
    for tap in catalogue() {
        let mut shape = vec![1];
        shape.extend(tap.sample_shape(config.in_channels, config.num_classes, [size, size]));
        println!("{:<width$}  {:?}", tap.name, shape);
    }
    Ok(())
}

fn backends() -> Result<()> {
    for kind in BackendKind::ALL {
        if !kind.is_compiled() {
            println!(
                "{:<8} not compiled in (enable the `{}` feature)",
                kind.name(),
                kind.name()
            );
            continue;
        }
        match std::panic::catch_unwind(|| kind.device()) {
            Ok(Ok(device)) => println!("{:<8} {device:?}", kind.name()),
            Ok(Err(e)) => println!("{:<8} {e}", kind.name()),
            Err(_) => println!("{:<8} compiled in, but no device found", kind.name()),
        }
    }
    Ok(())
}

fn probe(backend: Option<&str>, args: ProbeArgs) -> Result<()> {
    let kind = resolve_backend(backend)?;
    let device = kind.device()?;
    let taps: TapSet = args.taps.parse().context("--taps")?;
    let (shape, input) = tensor_file::read_f32(&args.input, &args.input_key)?;
    let config = ResNet18Config::new();
    let model = config.init(&device)?.load_torchvision(&args.weights)?;
    let (_, outputs) = cnnu_train::probe(&model, &input, &shape, taps, args.batch_size, &device)
        .with_context(|| format!("{}: tensor `{}`", args.input.display(), args.input_key))?;
    let metadata = HashMap::from([
        ("taps".to_string(), taps.to_string()),
        ("weights".to_string(), args.weights.display().to_string()),
        ("backend".to_string(), kind.name().to_string()),
        (
            "cnnu_version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
    ]);
    let n_taps = outputs.len();
    let outputs: Vec<NamedTensor> = outputs;
    tensor_file::write_f32(&args.out, &outputs, Some(metadata))?;
    eprintln!(
        "wrote {n_taps} taps for {} images to {}",
        shape[0],
        args.out.display()
    );
    Ok(())
}
