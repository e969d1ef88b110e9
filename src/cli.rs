//! The `cnnu` command line: argument definitions and the code behind each subcommand.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use cnnu_analysis::pipeline::{AnalysisParams, ValidAnalysisParams};
use cnnu_analysis::reduce::{FilterClass, Method, Solver};
use cnnu_analysis::summary::{RunAnalysis, analyze_run};
use cnnu_model::{BackendKind, ResNetArch, ResNetConfig};
use cnnu_train::tensor_file::{self, NamedTensor};
use cnnu_train::trainer::read_run_config;
use cnnu_train::{
    DatasetKind, ImageDataset, OptimizerKind, RunDir, RunOptions, RunSummary, SampleAt, TrainConfig,
};

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
// One value, parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every tap of a network (name, then its output shape for a 1-channel input).
    Layers {
        /// Input height and width.
        #[arg(long, default_value_t = 28)]
        size: usize,
        /// The network.
        #[arg(long, value_enum, default_value_t = ModelArg::Resnet18)]
        model: ModelArg,
    },
    /// List the compiled-in backends and the device each finds.
    Backends,
    /// Run the model in eval mode on a tensor of images and write the selected taps.
    Probe(ProbeArgs),
    /// Train on MNIST, sampling the frozen network before training and after every epoch.
    Train(TrainArgs),
    /// The seed's pipeline on one layer of a snapshot or .mat file: filter, reduce, cluster, purity.
    Reduce(ReduceArgs),
    /// Analyse every (epoch, layer) of a run's snapshots into RUN/analysis/.
    Analyze(AnalyzeArgs),
    /// The whole study: train, sample every epoch, analyse, write RUN/report.html and report.md.
    Study(crate::study::StudyArgs),
    /// Write a run's model at an epoch with torchvision keys, for PyTorch's `load_state_dict`.
    Export(ExportArgs),
}

/// Options of `cnnu export`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// The run directory.
    pub run: PathBuf,
    /// The epoch [default: the last complete one].
    #[arg(long)]
    pub epoch: Option<usize>,
    /// The safetensors file to write (written atomically).
    #[arg(long)]
    pub out: PathBuf,
}

/// The network, by torchvision's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelArg {
    /// ResNet-18: blocks [2, 2, 2, 2], 85 taps.
    Resnet18,
    /// ResNet-34: blocks [3, 4, 6, 3], 149 taps.
    Resnet34,
}

impl ModelArg {
    /// The architecture it names.
    pub fn arch(self) -> ResNetArch {
        match self {
            ModelArg::Resnet18 => ResNetArch::ResNet18,
            ModelArg::Resnet34 => ResNetArch::ResNet34,
        }
    }
}

/// The dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DatasetArg {
    /// MNIST digits (1x28x28).
    Mnist,
    /// Fashion-MNIST (1x28x28, idx files named as MNIST's).
    FashionMnist,
    /// Kuzushiji-MNIST (1x28x28, idx files named as MNIST's).
    Kmnist,
    /// CIFAR-10, binary version (3x32x32).
    Cifar10,
}

impl DatasetArg {
    /// The dataset it names.
    pub fn kind(self) -> DatasetKind {
        match self {
            DatasetArg::Mnist => DatasetKind::Mnist,
            DatasetArg::FashionMnist => DatasetKind::FashionMnist,
            DatasetArg::Kmnist => DatasetKind::Kmnist,
            DatasetArg::Cifar10 => DatasetKind::Cifar10,
        }
    }
}

/// The optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OptimizerArg {
    /// Adam (beta 0.9, 0.999; eps 1e-8).
    Adam,
    /// SGD with --momentum, no dampening.
    Sgd,
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// The analysis options shared by `reduce`, `analyze` and `study`.
#[derive(Debug, Clone, clap::Args)]
pub struct AnalysisArgs {
    /// Energy threshold that picks k, in (0, 1].
    #[arg(long, default_value_t = 0.9)]
    pub energy: f64,
    /// Keep a feature when its mean |x| over --filter-class samples exceeds this.
    #[arg(long, default_value_t = 1e-3)]
    pub act_threshold: f32,
    /// Class whose samples decide the filter (as the original), or `all`.
    #[arg(long, default_value = "0")]
    pub filter_class: String,
    /// HDBSCAN min cluster size.
    #[arg(long, default_value_t = 50)]
    pub min_cluster_size: usize,
    /// HDBSCAN min samples [default: the min cluster size].
    #[arg(long)]
    pub min_samples: Option<usize>,
    /// Pass at most this many scores to clustering.
    #[arg(long)]
    pub max_k: Option<usize>,
    /// SVD route: auto, gram or randomized.
    #[arg(long, default_value = "auto", value_parser = ["auto", "gram", "randomized"])]
    pub solver: String,
    /// Also embed with t-SNE and draw it.
    #[arg(long)]
    pub tsne: bool,
    /// Name of the labels variable/tensor.
    #[arg(long, default_value = "labels")]
    pub labels_var: String,
    /// HSIC estimator of the cross-epoch CKA (runs): biased (Kornblith et al.) or unbiased
    /// (Song et al.; less sensitive to the number of samples).
    #[arg(long, default_value = "biased", value_parser = ["biased", "unbiased"])]
    pub hsic: String,
}

impl AnalysisArgs {
    /// The pipeline settings these options describe, with `method`.
    pub fn params(&self, method: Method) -> Result<ValidAnalysisParams> {
        let filter_class = match self.filter_class.as_str() {
            "all" => FilterClass::All,
            c => FilterClass::Class(c.parse().with_context(|| {
                format!("--filter-class must be a class number or `all`, got `{c}`")
            })?),
        };
        let solver = match self.solver.as_str() {
            "gram" => Solver::Gram,
            "randomized" => Solver::Randomized,
            _ => Solver::Auto,
        };
        Ok(AnalysisParams {
            method,
            energy: self.energy,
            act_threshold: self.act_threshold,
            filter_class,
            min_cluster_size: self.min_cluster_size,
            min_samples: self.min_samples,
            max_k: self.max_k,
            solver,
            tsne: self.tsne,
            hsic: self.hsic.parse()?,
            ..AnalysisParams::default()
        }
        .check()?)
    }
}

/// Options of `cnnu reduce`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReduceArgs {
    /// `pca` centres the columns; `svd` does not (like a truncated SVD).
    #[arg(value_parser = ["pca", "svd"])]
    pub method: String,
    /// A cnnu snapshot (.safetensors) or a MATLAB v5 .mat file.
    pub file: PathBuf,
    /// The layer (tap or variable name).
    pub layer: String,
    /// Shared analysis options.
    #[command(flatten)]
    pub analysis: AnalysisArgs,
    /// Write report.json (and t-SNE plots with --tsne) into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print one JSON object on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// Options of `cnnu analyze`.
#[derive(Debug, Clone, clap::Args)]
pub struct AnalyzeArgs {
    /// The run directory.
    pub run: PathBuf,
    /// Layers to analyse [default: every tap in the snapshots].
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<String>>,
    /// pca (centred, the default) or svd.
    #[arg(long, default_value = "pca", value_parser = ["pca", "svd"])]
    pub method: String,
    /// Shared analysis options.
    #[command(flatten)]
    pub analysis: AnalysisArgs,
    /// Layers analysed at once (each holds one layer in memory).
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
}

/// Options of `cnnu train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// The dataset.
    #[arg(long, value_enum, default_value_t = DatasetArg::Mnist)]
    pub dataset: DatasetArg,
    /// The dataset's directory (idx files, .gz or raw; CIFAR-10's .bin batches); else its
    /// variable (CNNU_MNIST_DIR, CNNU_FASHION_MNIST_DIR, CNNU_KMNIST_DIR, CNNU_CIFAR10_DIR);
    /// else, for MNIST, the download cache.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Epochs to train [default: 3; on --resume, the run's own].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Images per training step.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Optimizer.
    #[arg(long, value_enum, default_value_t = OptimizerArg::Adam)]
    pub optimizer: OptimizerArg,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Seed of the initial weights and the shuffles.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Train on a class-stratified subset of this many images.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Evaluate on the first N test images instead of all 10 000.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Sample the first N test images every epoch [default: 2000; `study --quick`: 500].
    #[arg(long)]
    pub probe_limit: Option<usize>,
    /// Images per forward pass when evaluating and sampling.
    #[arg(long, default_value_t = 250)]
    pub eval_batch_size: usize,
    /// Taps to record every epoch.
    #[arg(long, default_value = cnnu_train::DEFAULT_TAPS)]
    pub taps: String,
    /// Also sample inside epochs, at these global optimizer steps (`0,5,12,100`) or at N steps
    /// spaced logarithmically over the first epoch (`log:N`); step 0 and every epoch end are
    /// always sampled [default: none; `cnnu study`: log:12].
    #[arg(long, value_name = "SPEC")]
    pub sample_at: Option<SampleAt>,
    /// The run directory (`cnnu study` defaults to runs/study, or runs/quick with --quick).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The network.
    #[arg(long, value_enum, default_value_t = ModelArg::Resnet18)]
    pub model: ModelArg,
    /// Start from these weights (torchvision keys, as `cnnu probe --weights` reads them)
    /// instead of the seeded initialisation.
    #[arg(long, value_name = "W.safetensors")]
    pub init_weights: Option<PathBuf>,
    /// Shuffle the training images every epoch; `off` trains on them in file order (the
    /// choice for comparing with another framework fed the same batches).
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub shuffle: Switch,
    /// Continue a run after its last complete epoch: `--resume RUN`, or a bare `--resume`
    /// for --out's run (which starts afresh if it was killed before writing config.json).
    #[arg(long, num_args = 0..=1, default_missing_value = "", value_name = "RUN")]
    pub resume: Option<String>,
}

impl TrainArgs {
    /// The training configuration these options describe.
    pub fn to_config(&self) -> TrainConfig {
        TrainConfig::new()
            .with_epochs(self.epochs.unwrap_or(3))
            .with_batch_size(self.batch_size)
            .with_lr(self.lr)
            .with_optimizer(match self.optimizer {
                OptimizerArg::Adam => OptimizerKind::Adam,
                OptimizerArg::Sgd => OptimizerKind::Sgd,
            })
            .with_dataset(self.dataset.kind())
            .with_model(
                ResNetConfig::new()
                    .with_arch(self.model.arch())
                    .with_in_channels(self.dataset.kind().image_dims()[0]),
            )
            .with_momentum(self.momentum)
            .with_seed(self.seed)
            .with_train_limit(self.train_limit)
            .with_test_limit(self.test_limit)
            .with_probe_limit(self.probe_limit.unwrap_or(2000))
            .with_eval_batch_size(self.eval_batch_size)
            .with_taps(self.taps.clone())
            .with_init_weights(self.init_weights.clone())
            .with_shuffle(self.shuffle == Switch::On)
            .with_sample_at(self.sample_at.clone().unwrap_or_default())
    }
}

/// `cnnu export`: a checkpoint's model as torchvision weights.
fn export(args: &ExportArgs) -> Result<()> {
    let run = RunDir::new(&args.run);
    let (epoch, model) = cnnu_train::trainer::load_epoch_model(&run, args.epoch)?;
    let tmp = cnnu_run::atomic::temp_path(&args.out);
    model.save_torchvision(&tmp)?;
    cnnu_run::atomic::commit(&tmp, &args.out)
        .with_context(|| format!("{}: cannot write", args.out.display()))?;
    eprintln!(
        "cnnu export: {} epoch {epoch} -> {}",
        run.root().display(),
        args.out.display()
    );
    Ok(())
}

/// Options of `cnnu probe`.
#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// Weights in torchvision's safetensors convention (ResNet-18 or -34; input channels and
    /// classes are read from `conv1.weight` and `fc.weight`).
    #[arg(long)]
    pub weights: PathBuf,
    /// The network the weights must be [default: whichever their keys describe].
    #[arg(long, value_enum)]
    pub model: Option<ModelArg>,
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
        Command::Layers { size, model } => layers(size, model),
        Command::Backends => backends(),
        Command::Probe(args) => probe(cli.backend.as_deref(), args),
        Command::Train(args) => train(cli.backend.as_deref(), &args).map(|_| ()),
        Command::Reduce(args) => reduce(&args),
        Command::Analyze(args) => analyze(&args).map(|_| ()),
        Command::Study(args) => study(cli.backend.as_deref(), &args),
        Command::Export(args) => export(&args),
    }
}

fn layers(size: usize, model: ModelArg) -> Result<()> {
    if size == 0 {
        bail!("--size must be at least 1");
    }
    let config = ResNetConfig::new().with_arch(model.arch());
    let catalogue = config.arch.catalogue();
    let width = catalogue
        .taps()
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(0);
    for tap in catalogue.taps() {
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
    let config = ResNetConfig::of_torchvision_file(&args.weights)?;
    if let Some(model) = args.model
        && model.arch() != config.arch
    {
        bail!(
            "--model {} but {} holds {} weights",
            model.arch().name(),
            args.weights.display(),
            config.arch.name()
        );
    }
    let catalogue = config.arch.catalogue();
    let taps = catalogue.parse(&args.taps).context("--taps")?;
    let (shape, input) = tensor_file::read_f32(&args.input, &args.input_key)?;
    let model = config.init(&device)?.load_torchvision(&args.weights)?;
    let (_, outputs) =
        cnnu_train::probe(&model, &input, &shape, &taps, args.batch_size, &device)
            .with_context(|| format!("{}: tensor `{}`", args.input.display(), args.input_key))?;
    let metadata = HashMap::from([
        ("taps".to_string(), catalogue.spec(&taps)),
        ("model".to_string(), config.arch.name().to_string()),
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

/// `cnnu train`: a fresh run into `--out`, or `--resume` of an existing one.
pub fn train(backend: Option<&str>, args: &TrainArgs) -> Result<(RunDir, RunSummary)> {
    // A bare --resume on a run killed before its config.json was written has nothing to
    // resume: it starts the run the other options describe.
    let resume_dir = match args.resume.as_deref() {
        Some("") => {
            let out = args
                .out
                .clone()
                .context("a bare --resume needs --out RUN")?;
            RunDir::new(&out).config_path().is_file().then_some(out)
        }
        Some(dir) => Some(PathBuf::from(dir)),
        None => None,
    };
    let (run, config, kind, resume) = match resume_dir {
        Some(dir) => {
            let run = RunDir::new(dir);
            let saved = read_run_config(&run)?;
            let mut config = saved.train;
            if let Some(epochs) = args.epochs {
                config.epochs = epochs;
            }
            let kind = match backend {
                Some(_) => resolve_backend(backend)?,
                None => saved.backend.ensure_compiled()?,
            };
            (run, config, kind, true)
        }
        None => {
            let out = args.out.clone().context("--out RUN is required")?;
            (
                RunDir::new(out),
                args.to_config(),
                resolve_backend(backend)?,
                false,
            )
        }
    };
    let config = config.validate()?;
    let c = config.config();
    let (dataset, source) = ImageDataset::load(c.dataset, args.data_dir.as_deref())?;
    eprintln!(
        "cnnu train: {} on {kind}, {}, {} epochs, {} from {source}",
        run.root().display(),
        c.model.arch.name(),
        c.epochs,
        c.dataset.title(),
    );
    let summary = cnnu_train::train(
        &config,
        kind,
        &dataset,
        &source.to_string(),
        &run,
        RunOptions {
            resume,
            progress: true,
        },
    )?;
    Ok((run, summary))
}

fn method(name: &str) -> Method {
    if name == "svd" {
        Method::Svd
    } else {
        Method::Pca
    }
}

/// `cnnu reduce`: one layer of one file.
pub fn reduce(args: &ReduceArgs) -> Result<()> {
    let params = args.analysis.params(method(&args.method))?;
    let started = std::time::Instant::now();
    let acts = cnnu_analysis::source::load(&args.file, &args.layer, &args.analysis.labels_var)?;
    let report = cnnu_analysis::pipeline::analyze(&acts, &params, started.elapsed().as_secs_f64())?;
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        let json = serde_json::to_vec_pretty(&report).context("report serialises")?;
        let path = dir.join("report.json");
        std::fs::write(&path, json).with_context(|| format!("{}: cannot write", path.display()))?;
        if let Some(e) = &report.embedding {
            let labels: Vec<i64> = e.indices.iter().map(|&i| report.labels[i]).collect();
            let clusters: Vec<i64> = e
                .indices
                .iter()
                .map(|&i| report.cluster_labels[i])
                .collect();
            let title = format!(
                "{} · {}{}",
                args.file
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default(),
                report.layer,
                report
                    .epoch
                    .map_or(String::new(), |e| format!(" · epoch {e}"))
            );
            cnnu_analysis::plot::scatter(
                &dir.join("tsne-labels.png"),
                &format!("{title} · by label"),
                &e.coords,
                &labels,
                cnnu_analysis::plot::Legend::Classes(report.class_names.as_deref()),
            )?;
            cnnu_analysis::plot::scatter(
                &dir.join("tsne-clusters.png"),
                &format!("{title} · by cluster"),
                &e.coords,
                &clusters,
                cnnu_analysis::plot::Legend::Clusters,
            )?;
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).context("report serialises")?
        );
    } else {
        println!("{}", report.summary_text());
    }
    Ok(())
}

/// `cnnu analyze`: every (epoch, layer) of a run.
pub fn analyze(args: &AnalyzeArgs) -> Result<RunAnalysis> {
    let params = args.analysis.params(method(&args.method))?;
    let analysis = analyze_run(
        &args.run,
        args.layers.as_deref(),
        &params,
        args.jobs,
        &args.analysis.labels_var,
    )?;
    eprintln!(
        "analysed {} (epoch, layer) pairs; summary in {}",
        analysis.reports.len(),
        analysis.dir.join("summary.csv").display()
    );
    Ok(analysis)
}

/// `cnnu study`: prints the summary table and where the report is.
pub fn study(backend: Option<&str>, args: &crate::study::StudyArgs) -> Result<()> {
    let outcome = crate::study::run(backend, args)?;
    println!("{}", outcome.table);
    println!("report: {}", outcome.report.html.display());
    println!("        {}", outcome.report.md.display());
    Ok(())
}
