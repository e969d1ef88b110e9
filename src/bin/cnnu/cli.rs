//! The `cnnu` command line's arguments (clap types) and their conversion into the validated
//! configurations the library takes; the code behind each subcommand is in `commands.rs`.
//! The `train_and_probe` example reads the study's options from here too (`#[path]`), so that
//! both front ends take the same options.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use cnnu::study::{StudyDefaults, StudyError, StudyPlan};
use cnnu_analysis::numerics::dynamics::Hsic;
use cnnu_analysis::numerics::pipeline::{AnalysisError, AnalysisParams, ValidAnalysisParams};
use cnnu_analysis::numerics::reduce::{FilterClass, Method, Solver};
use cnnu_analysis::reporting::compare::CompareParamsError;
use cnnu_model::{BackendKind, ResNetArch, ResNetConfig};
use cnnu_train::config::ConfigError;
use cnnu_train::{DatasetKind, OptimizerKind, SampleAt, TrainConfig, TrainError};

/// A library parameter's complaint as its option's: the field `batch_size` is `--batch-size`.
fn invalid_option(field: &str, problem: &str) -> anyhow::Error {
    anyhow::anyhow!("--{} {problem}", field.replace('_', "-"))
}

/// A configuration error in the command line's words: the field `batch_size` is the option
/// `--batch-size`.
pub fn flag_error(e: ConfigError) -> anyhow::Error {
    match e {
        ConfigError::Invalid { name, problem } => invalid_option(name, &problem),
        ConfigError::Taps(e) => anyhow::anyhow!("--taps: {e}"),
        e => e.into(),
    }
}

/// An analysis-parameter error in the command line's words: the field `min_cluster_size` is
/// the option `--min-cluster-size`.
pub fn analysis_flag_error(e: AnalysisError) -> anyhow::Error {
    match e {
        AnalysisError::Invalid { name, problem } => invalid_option(name, &problem),
        e => e.into(),
    }
}

/// A `compare` parameter error in the command line's words.
pub fn compare_flag_error(e: CompareParamsError) -> anyhow::Error {
    anyhow::anyhow!("--{e}")
}

/// A training error in the command line's words (see [`flag_error`]).
pub fn train_error(e: TrainError) -> anyhow::Error {
    match e {
        TrainError::Config(e) => flag_error(e),
        e => e.into(),
    }
}

/// A study error in the command line's words (see [`flag_error`]).
pub fn study_error(e: StudyError) -> anyhow::Error {
    match e {
        StudyError::Config(e) => flag_error(e),
        StudyError::Train(e) => train_error(e),
        e => e.into(),
    }
}

/// cnnu: study how a CNN's internal representations change while it learns.
#[derive(Debug, Parser)]
#[command(name = "cnnu", version, about)]
pub struct Cli {
    /// Backend to run on (flex, ndarray, wgpu, vulkan, cuda); default: the first compiled in.
    #[arg(long, global = true, value_name = "NAME", env = cnnu_model::BACKEND_ENV)]
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
    /// Train, sampling the frozen network at step 0, at --sample-at steps and after every epoch.
    Train(TrainCommand),
    /// The seed's pipeline on one layer of a snapshot or .mat file: filter, reduce, cluster, purity.
    Reduce(ReduceArgs),
    /// Analyse every (sample, layer) of a run's snapshots into RUN/analysis/.
    Analyze(AnalyzeArgs),
    /// Analysed runs of one setup (seeds) summarised: mean, std and 95% t-interval per figure.
    Aggregate(AggregateArgs),
    /// Two runs' representations of the same probe images compared: cross-run CKA with a
    /// permutation null, per layer and common sample.
    Compare(CompareArgs),
    /// Two activation matrices of the same samples (.npy or .safetensors) compared: linear,
    /// debiased and RBF CKA, and a permutation p-value.
    Similarity(SimilarityArgs),
    /// The whole study: train one run per seed, analyse, aggregate, write OUT/report.html.
    Study(StudyArgs),
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

/// `pca` centres the columns; `svd` does not (like a truncated SVD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodArg {
    /// Centred: principal components.
    Pca,
    /// Uncentred truncated SVD.
    Svd,
}

impl MethodArg {
    /// The analysis method it names.
    pub fn method(self) -> Method {
        match self {
            MethodArg::Pca => Method::Pca,
            MethodArg::Svd => Method::Svd,
        }
    }

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            MethodArg::Pca => "pca",
            MethodArg::Svd => "svd",
        }
    }
}

/// The SVD route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SolverArg {
    /// Gram when the samples are fewer than the features, else randomized.
    Auto,
    /// The n × n Gram matrix's eigenvectors.
    Gram,
    /// Randomized block Lanczos on the data.
    Randomized,
}

/// The HSIC estimator of CKA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HsicArg {
    /// Kornblith et al.'s biased estimator.
    Biased,
    /// Song et al.'s unbiased estimator.
    Unbiased,
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
    /// SVD route.
    #[arg(long, value_enum, default_value_t = SolverArg::Auto)]
    pub solver: SolverArg,
    /// Also embed with t-SNE and draw it.
    #[arg(long)]
    pub tsne: bool,
    /// Name of the labels variable/tensor.
    #[arg(long, default_value = "labels")]
    pub labels_var: String,
    /// HSIC estimator of the cross-epoch CKA (runs): biased (Kornblith et al.) or unbiased
    /// (Song et al.; less sensitive to the number of samples).
    #[arg(long, value_enum, default_value_t = HsicArg::Biased)]
    pub hsic: HsicArg,
}

impl AnalysisArgs {
    /// The pipeline settings these options describe, with `method`.
    pub fn params(&self, method: MethodArg) -> Result<ValidAnalysisParams> {
        let filter_class = match self.filter_class.as_str() {
            "all" => FilterClass::All,
            c => FilterClass::Class(c.parse().with_context(|| {
                format!("--filter-class must be a class number or `all`, got `{c}`")
            })?),
        };
        let solver = match self.solver {
            SolverArg::Gram => Solver::Gram,
            SolverArg::Randomized => Solver::Randomized,
            SolverArg::Auto => Solver::Auto,
        };
        AnalysisParams {
            method: method.method(),
            energy: self.energy,
            act_threshold: self.act_threshold,
            filter_class,
            min_cluster_size: self.min_cluster_size,
            min_samples: self.min_samples,
            max_k: self.max_k,
            solver,
            tsne: self.tsne,
            hsic: match self.hsic {
                HsicArg::Biased => Hsic::Biased,
                HsicArg::Unbiased => Hsic::Unbiased,
            },
            ..AnalysisParams::default()
        }
        .check()
        .map_err(analysis_flag_error)
    }
}

/// Options of `cnnu reduce`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReduceArgs {
    /// `pca` centres the columns; `svd` does not (like a truncated SVD).
    #[arg(value_enum)]
    pub method: MethodArg,
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
    /// The run directory, or a folder of activation files recorded elsewhere (one
    /// .safetensors per sample; docs/run-format.md, "Activations from elsewhere").
    pub run: PathBuf,
    /// Write the summary and plots here [default: DIR/analysis].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Layers to analyse [default: every tap in the snapshots].
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<String>>,
    /// pca (centred) or svd.
    #[arg(long, value_enum, default_value_t = MethodArg::Pca)]
    pub method: MethodArg,
    /// Shared analysis options.
    #[command(flatten)]
    pub analysis: AnalysisArgs,
    /// Layers analysed at once (each holds one layer in memory).
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
}

/// The training options `cnnu train` and `cnnu study` share (each adds the seed, taps and
/// sample steps with its own defaults).
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
    /// Epochs to train [default: `train` 3, `study` 1 (--quick 2); on --resume, the run's own].
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
    /// Train on a class-stratified subset of this many images.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Evaluate on the first N test images instead of all 10 000.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Sample the first N test images [default: `train` 2000, `study` 1000 (--quick 500)].
    #[arg(long)]
    pub probe_limit: Option<usize>,
    /// Images per forward pass when evaluating and sampling.
    #[arg(long, default_value_t = 250)]
    pub eval_batch_size: usize,
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

/// What one training run records, where the commands' defaults differ.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    /// Seed of the initial weights and the shuffles.
    pub seed: u64,
    /// The tap spec.
    pub taps: String,
    /// The samples inside epochs.
    pub sample_at: SampleAt,
    /// Epochs when --epochs is not given.
    pub default_epochs: usize,
    /// Probe images when --probe-limit is not given.
    pub default_probe: usize,
}

impl TrainArgs {
    /// The training configuration these options describe, recording as `rec` says.
    pub fn to_config(&self, rec: &Recording) -> TrainConfig {
        TrainConfig::new()
            .with_epochs(self.epochs.unwrap_or(rec.default_epochs))
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
            .with_seed(rec.seed)
            .with_train_limit(self.train_limit)
            .with_test_limit(self.test_limit)
            .with_probe_limit(self.probe_limit.unwrap_or(rec.default_probe))
            .with_eval_batch_size(self.eval_batch_size)
            .with_taps(rec.taps.clone())
            .with_init_weights(self.init_weights.clone())
            .with_shuffle(self.shuffle == Switch::On)
            .with_sample_at(rec.sample_at.clone())
    }
}

/// Options of `cnnu train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainCommand {
    /// The shared training options.
    #[command(flatten)]
    pub train: TrainArgs,
    /// Seed of the initial weights and the shuffles.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Taps to record: names, patterns (`layer1.*`, `*.conv1`), `all`, `leaves`.
    #[arg(long, default_value = cnnu_train::DEFAULT_TAPS)]
    pub taps: String,
    /// Also sample inside epochs: at these global optimizer steps (`0,5,12,100`) or at N
    /// steps spaced logarithmically over the first epoch (`log:N`); step 0 and every epoch end
    /// are always sampled.
    #[arg(long, value_name = "SPEC", default_value = "none")]
    pub sample_at: SampleAt,
}

impl TrainCommand {
    /// The training configuration of `cnnu train`.
    pub fn to_config(&self) -> TrainConfig {
        self.train.to_config(&Recording {
            seed: self.seed,
            taps: self.taps.clone(),
            sample_at: self.sample_at.clone(),
            default_epochs: 3,
            default_probe: 2000,
        })
    }
}

/// Options of `cnnu aggregate`.
#[derive(Debug, Clone, clap::Args)]
pub struct AggregateArgs {
    /// Analysed run directories of one setup (different seeds).
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// Where aggregate.csv, aggregate.json and the band plots go.
    #[arg(long)]
    pub out: PathBuf,
}

/// Options of `cnnu compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// The first run.
    pub run_a: PathBuf,
    /// The second run (same probe images).
    pub run_b: PathBuf,
    /// Where compare.csv, compare.json and cka-layers.png go.
    #[arg(long)]
    pub out: PathBuf,
    /// Permutations of the null (at least 99).
    #[arg(long, default_value_t = cnnu_analysis::reporting::compare::DEFAULT_PERMUTATIONS)]
    pub permutations: usize,
    /// Seed of the permutations.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Layers to compare [default: every tap both runs recorded].
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<String>>,
    /// HSIC estimator of every CKA and of its null: biased (Kornblith et al.) or unbiased
    /// (debiased CKA, Song et al.; for few probe images).
    #[arg(long, value_enum, default_value_t = HsicArg::Biased)]
    pub hsic: HsicArg,
}

/// Options of `cnnu similarity`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimilarityArgs {
    /// The first activations: a .npy file or a .safetensors file, `[N, ...]` float32/float64.
    pub a: PathBuf,
    /// The second activations, of the same N samples in the same order.
    pub b: PathBuf,
    /// The tensor of A to read [default: its only float tensor] (safetensors only).
    #[arg(long, value_name = "NAME")]
    pub a_key: Option<String>,
    /// The tensor of B to read [default: its only float tensor] (safetensors only).
    #[arg(long, value_name = "NAME")]
    pub b_key: Option<String>,
    /// RBF kernel width: sigma = F x the median pairwise distance, i.e. sigma² = F² x the
    /// median of the squared distances (Kornblith et al.'s threshold).
    #[arg(long, value_name = "F", default_value_t = cnnu_analysis::numerics::dynamics::DEFAULT_RBF_THRESHOLD)]
    pub rbf_sigma: f64,
    /// Permutations of B's rows for the p-value of linear CKA (at least 99).
    #[arg(long, default_value_t = cnnu_analysis::reporting::compare::DEFAULT_PERMUTATIONS)]
    pub permutations: usize,
    /// Seed of the permutations.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object (linear_cka, debiased_cka, rbf_cka, n, p_value, …) instead of
    /// the summary.
    #[arg(long)]
    pub json: bool,
}

/// Options of `cnnu study` (and of the `train_and_probe` example).
#[derive(Debug, Clone, clap::Args)]
pub struct StudyArgs {
    /// Every shared `cnnu train` option.
    #[command(flatten)]
    pub train: TrainArgs,
    /// Every analysis option of `cnnu analyze`.
    #[command(flatten)]
    pub analysis: AnalysisArgs,
    /// Seeds, one run each (OUT/seed-S/ when more than one) [default: 0,1,2,3; --quick: 0].
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<u64>>,
    /// Taps to record [default: conv1,relu,layer1,layer2,layer3,layer4].
    #[arg(long)]
    pub taps: Option<String>,
    /// Samples inside epochs, as for `cnnu train` [default: log:12; --quick: log:4].
    #[arg(long, value_name = "SPEC")]
    pub sample_at: Option<SampleAt>,
    /// A small slice for smoke tests: one seed, 2000 training images, 2 epochs, 500 probe
    /// images, 2000 test images.
    #[arg(long)]
    pub quick: bool,
    /// Layers to analyse [default: every tap sampled].
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<String>>,
    /// pca (centred) or svd.
    #[arg(long, value_enum, default_value_t = MethodArg::Pca)]
    pub method: MethodArg,
    /// Layers analysed at once.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
}

impl StudyArgs {
    /// The options with the study's defaults (`--quick`'s with it) filled in.
    pub fn resolved(&self) -> StudyArgs {
        let mut a = self.clone();
        let d = if a.quick {
            StudyDefaults::quick()
        } else {
            StudyDefaults::full()
        };
        if a.train.out.is_none() && a.train.resume.is_none() {
            a.train.out = Some(PathBuf::from(d.out));
        }
        // An explicit option wins, whatever its value.
        a.train.train_limit = a.train.train_limit.or(d.train_limit);
        a.train.test_limit = a.train.test_limit.or(d.test_limit);
        a.train.epochs.get_or_insert(d.epochs);
        a.train.probe_limit.get_or_insert(d.probe_limit);
        a.seeds.get_or_insert(d.seeds);
        a.sample_at.get_or_insert(d.sample_at);
        a.taps.get_or_insert_with(|| d.taps.to_string());
        // The report's t-SNE grid and explorer need the embeddings.
        a.analysis.tsne = true;
        a
    }

    /// The study these options describe, validated.
    pub fn plan(&self, backend: Option<&str>) -> Result<StudyPlan> {
        let a = self.resolved();
        let seeds = a.seeds.clone().unwrap_or_default();
        let Some(&first) = seeds.first() else {
            anyhow::bail!("--seeds needs at least one seed");
        };
        let d = StudyDefaults::full();
        let rec = Recording {
            seed: first,
            taps: a.taps.clone().unwrap_or_else(|| d.taps.to_string()),
            sample_at: a.sample_at.clone().unwrap_or_default(),
            default_epochs: d.epochs,
            default_probe: d.probe_limit,
        };
        let out = match (&a.train.resume, &a.train.out) {
            (Some(r), _) if !r.is_empty() => PathBuf::from(r),
            (_, Some(o)) => o.clone(),
            _ => anyhow::bail!("a bare --resume needs --out OUT"),
        };
        Ok(StudyPlan {
            train: a.train.to_config(&rec).validate().map_err(flag_error)?,
            seeds,
            backend: BackendKind::resolve(backend)?,
            data_dir: a.train.data_dir.clone(),
            out,
            resume: a.train.resume.is_some(),
            analysis: a.analysis.params(a.method)?,
            method: a.method.name(),
            layers: a.layers.clone(),
            jobs: a.jobs,
            labels_var: a.analysis.labels_var.clone(),
        })
    }
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
    /// Safetensors file holding a float32 `[N, C, H, W]` tensor.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(args: &[&str]) -> StudyArgs {
        let cli = Cli::try_parse_from(["cnnu", "study"].iter().chain(args)).unwrap();
        let Command::Study(study) = cli.command else {
            panic!("parsed as study")
        };
        study.resolved()
    }

    #[test]
    fn an_explicit_probe_limit_wins_over_quick_even_at_the_default_value() {
        assert_eq!(resolved(&["--quick"]).train.probe_limit, Some(500));
        let explicit = resolved(&["--quick", "--probe-limit", "1000"]);
        assert_eq!(explicit.train.probe_limit, Some(1000));
        assert_eq!(resolved(&[]).train.probe_limit, Some(1000));
    }

    #[test]
    fn the_default_study_is_four_seeds_one_epoch_sampled_logarithmically() {
        let d = resolved(&[]);
        assert_eq!(d.seeds, Some(vec![0, 1, 2, 3]));
        assert_eq!(d.train.epochs, Some(1));
        assert_eq!(d.sample_at, Some(SampleAt::Log(12)));
        assert_eq!(d.taps.as_deref(), Some(StudyDefaults::full().taps));
        let q = resolved(&["--quick", "--seeds", "4,5"]);
        assert_eq!(q.seeds, Some(vec![4, 5]));
        let plan = resolved(&["--seeds", "7"]).plan(None).unwrap();
        assert_eq!(plan.run_dir(7), PathBuf::from("runs/study"));
        let plan = resolved(&[]).plan(None).unwrap();
        assert_eq!(plan.run_dir(2), PathBuf::from("runs/study/seed-2"));
        // Full MNIST, 4 seeds: 4 × (60 000 / 290 s of training + 2 test passes + 13 samples
        // + 78 analysed pairs) = 4 × (207 + 14 + 9 + 62) s, about 19.5 min.
        let eta = cnnu::study::expected_seconds(&plan, 60_000, 6);
        assert!((1100.0..1250.0).contains(&eta), "{eta}");
    }

    #[test]
    fn configuration_errors_name_the_option() {
        let cli = Cli::try_parse_from(["cnnu", "study", "--batch-size", "0"]).unwrap();
        let Command::Study(study) = cli.command else {
            panic!("parsed as study")
        };
        let err = study.plan(None).unwrap_err().to_string();
        assert_eq!(err, "--batch-size must be at least 1");
    }
}
