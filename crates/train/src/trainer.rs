//! The training loop with the frozen network sampled before training and after every epoch,
//! a checkpoint per epoch, and resume after the last complete epoch.
//!
//! This is a hand-written loop rather than burn-train's `Learner`: the study needs a step
//! between epochs (eval-mode sampling on a plain device into a streamed snapshot) and an
//! exact, crash-safe resume order, which are simpler to guarantee in forty lines of loop
//! than through a custom training strategy.
//!
//! Order of work for epoch `e`: train → test metrics → snapshot → checkpoint → the metrics
//! line. The line is written last, so an epoch counts as complete only when everything it
//! produces is on disk; a run killed at any moment redoes at most the epoch in progress.

use cnnu_run::IoError;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use cnnu_kernels::{FusedAdam, FusedSgd};
use cnnu_model::{BackendKind, ResNet};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::config::{OptimizerKind, SampleAt, TrainConfig, ValidTrainConfig};
use crate::dataset::{ImageDataset, ImageSplit, stratified_subset};
use crate::probe::to_f32;
use crate::progress::TrainProgress;
use crate::snapshot::{Dtype, SnapshotError, SnapshotWriter, TensorSpec};
use cnnu_run::sample::{self, SampleName};
use cnnu_run::{EpochMetrics, RunDir, atomic, read_metrics, write_metrics};

/// Errors from a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// File-system trouble in the run directory.
    #[error(transparent)]
    Io(#[from] IoError),
    /// A run directory file that cannot be parsed.
    #[error("{path}: {problem}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Writing a snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// `metrics.jsonl` could not be read or written.
    #[error(transparent)]
    Metrics(#[from] cnnu_run::MetricsError),
    /// The configuration in a run directory is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The model could not be built.
    #[error(transparent)]
    Model(#[from] cnnu_model::ModelError),
    /// Weights could not be read or written.
    #[error(transparent)]
    Weights(#[from] cnnu_model::WeightsError),
    /// `cnnu export --epoch E` names an epoch without a checkpoint.
    #[error("{run}: no checkpoint for epoch {epoch} (complete epochs: {complete})")]
    NoEpoch {
        /// The run directory.
        run: PathBuf,
        /// The epoch asked for.
        epoch: usize,
        /// The epochs that have one.
        complete: String,
    },
    /// The backend is not available.
    #[error(transparent)]
    Backend(#[from] cnnu_model::BackendError),
    /// A checkpoint could not be written or read.
    #[error("{path}: checkpoint: {problem}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// `--out` names a run that already has results and `--resume` was not given.
    #[error("{0}: already holds a run; pass --resume to continue it or choose another --out")]
    RunExists(PathBuf),
    /// `--resume` names a directory without a run.
    #[error("{0}: no config.json here, so there is no run to resume")]
    NoRun(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| {
        TrainError::Io(IoError {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// The resolved settings of a run, as `config.json` holds them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// The training settings.
    pub train: TrainConfig,
    /// The backend the run was started on.
    pub backend: BackendKind,
    /// Where the dataset was read from (the key is `mnist` in runs of cnnu before 0.2, which
    /// trained on nothing else).
    #[serde(alias = "mnist")]
    pub data_source: String,
    /// The cnnu version that started the run.
    pub cnnu_version: String,
}

/// How to run: fresh or resumed.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Continue the run in the directory after its last complete epoch.
    pub resume: bool,
}

/// Reads a run's `config.json`.
pub fn read_run_config(run: &RunDir) -> Result<RunConfig, TrainError> {
    let path = run.config_path();
    let text = fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => TrainError::NoRun(run.root().to_path_buf()),
        _ => TrainError::Io(IoError {
            path: path.clone(),
            source: e,
        }),
    })?;
    let corrupt = |e: serde_json::Error| TrainError::Corrupt {
        path: path.clone(),
        problem: e.to_string(),
    };
    let mut json: serde_json::Value = serde_json::from_str(&text).map_err(corrupt)?;
    crate::config::upgrade_train_json(&mut json["train"]);
    serde_json::from_value(json).map_err(corrupt)
}

/// The sets of images a run uses, fixed for its whole life.
struct Data<'a> {
    dataset: &'a ImageDataset,
    train: &'a ImageSplit,
    train_indices: Vec<usize>,
    test: &'a ImageSplit,
    test_count: usize,
    probe_count: usize,
}

/// The optimizer a run trains with.
pub fn make_optimizer(config: &TrainConfig) -> ModuleOptimizer {
    match config.optimizer {
        // PyTorch's Adam eps; Burn's default is 1e-5. Fused: burn-optim's arithmetic and
        // state in one pass per parameter.
        OptimizerKind::Adam => FusedAdam::new(0.9, 0.999, 1e-8).init(),
        // PyTorch's SGD momentum has no dampening (Burn's default is 0.1). Fused likewise.
        OptimizerKind::Sgd => FusedSgd::new(config.momentum).init(),
    }
}

/// The epoch's shuffle seed: distinct per epoch, a pure function of the run seed so that a
/// resumed run shuffles exactly as an uninterrupted one.
fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn labels_tensor(split: &ImageSplit, indices: &[usize], device: &Device) -> Tensor<1, Int> {
    let labels: Vec<i64> = indices.iter().map(|&i| split.labels[i] as i64).collect();
    Tensor::from_data(TensorData::new(labels, [indices.len()]), device)
}

fn images_tensor(data: &Data, split: &ImageSplit, indices: &[usize], device: &Device) -> Tensor<4> {
    let [c, h, w] = split.dims;
    Tensor::from_data(
        TensorData::new(
            data.dataset.normalized(split, indices),
            [indices.len(), c, h, w],
        ),
        device,
    )
}

/// How many rows of `logits` have their argmax at the label.
fn count_correct(logits: Tensor<2>, labels: Tensor<1, Int>) -> usize {
    let hits: i64 = logits
        .argmax(1)
        .flatten::<1>(0, 1)
        .equal(labels)
        .int()
        .sum()
        .into_scalar();
    hits as usize
}

/// Test-set loss and accuracy of the eval-mode model.
fn evaluate(model: &ResNet, data: &Data, batch: usize, device: &Device) -> (f64, f64) {
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let (mut loss_sum, mut correct) = (0.0f64, 0usize);
    let indices: Vec<usize> = (0..data.test_count).collect();
    for chunk in indices.chunks(batch) {
        let x = images_tensor(data, data.test, chunk, device);
        let y = labels_tensor(data.test, chunk, device);
        let logits = model.forward(x);
        let loss: f32 = loss_fn.forward(logits.clone(), y.clone()).into_scalar();
        loss_sum += loss as f64 * chunk.len() as f64;
        correct += count_correct(logits, y);
    }
    (
        loss_sum / data.test_count as f64,
        correct as f64 / data.test_count as f64,
    )
}

/// The tensors of a snapshot: labels, predictions, indices, logits, then every selected tap
/// in forward order (the writer's indices 0..4 and 4.. follow this order).
fn snapshot_specs(config: &ValidTrainConfig, data: &Data) -> Vec<TensorSpec> {
    let (taps, catalogue) = (config.taps(), config.catalogue());
    let model_config = &config.config().model;
    let mut specs: Vec<TensorSpec> = [sample::LABELS, sample::PREDICTIONS, sample::INDICES]
        .into_iter()
        .map(|name| TensorSpec {
            name: name.into(),
            dtype: Dtype::I64,
            sample_shape: vec![],
        })
        .collect();
    specs.push(TensorSpec {
        name: sample::LOGITS.into(),
        dtype: Dtype::F32,
        sample_shape: vec![model_config.num_classes],
    });
    for tap in catalogue.selected(taps) {
        specs.push(TensorSpec {
            name: tap.name.clone(),
            dtype: Dtype::F32,
            sample_shape: tap.sample_shape(
                model_config.in_channels,
                model_config.num_classes,
                [data.test.dims[1], data.test.dims[2]],
            ),
        });
    }
    specs
}

/// Samples the eval-mode model on the probe set into a snapshot (`path`, written through
/// `partial`).
fn write_snapshot(
    model: &ResNet,
    data: &Data,
    config: &ValidTrainConfig,
    device: &Device,
    [path, partial]: [&Path; 2],
    metadata: &BTreeMap<String, String>,
) -> Result<(), TrainError> {
    let (taps, catalogue) = (config.taps(), config.catalogue());
    let batch = config.config().eval_batch_size;
    let n = data.probe_count;
    let specs = snapshot_specs(config, data);
    let tap_names: Vec<&str> = catalogue.names(taps);
    let tmp = atomic::temp_path_in(partial, path);
    let mut writer = SnapshotWriter::create_in(path, &tmp, n, &specs, metadata)?;
    let first_tap = 4;
    let indices: Vec<usize> = (0..n).collect();
    crate::probe::forward_batches::<TrainError>(
        model,
        n,
        batch,
        taps,
        |rows| images_tensor(data, data.test, &indices[rows], device),
        |start, logits, recorded| {
            let chunk = &indices[start..start + logits.dims()[0]];
            let labels: Vec<i64> = chunk.iter().map(|&i| data.test.labels[i] as i64).collect();
            let predictions: Vec<i64> = logits
                .clone()
                .argmax(1)
                .into_data()
                .convert::<i64>()
                .try_into_vec()
                .expect("i64");
            writer.write_i64(0, start, &labels)?;
            writer.write_i64(1, start, &predictions)?;
            let rows: Vec<i64> = chunk.iter().map(|&i| i as i64).collect();
            writer.write_i64(2, start, &rows)?;
            writer.write_f32(3, start, &to_f32(logits.into_data()))?;
            for (k, (name, t)) in recorded.into_iter().enumerate() {
                debug_assert_eq!(name, tap_names[k]);
                writer.write_f32(first_tap + k, start, &to_f32(t.into_data()))?;
            }
            Ok(())
        },
    )?;
    writer.finish()?;
    Ok(())
}

fn save_checkpoint(
    model: &ResNet,
    optim: &ModuleOptimizer,
    dir: &Path,
    partial: &Path,
) -> Result<(), TrainError> {
    let parent = dir.parent().expect("checkpoint dirs live in checkpoints/");
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    let tmp = atomic::temp_path_in(partial, dir);
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let model_path = tmp.join(MODEL_FILE);
    model
        .clone()
        .save_file(&model_path)
        .map_err(|e| TrainError::Checkpoint {
            path: model_path.clone(),
            problem: e.to_string(),
        })?;
    let optim_path = tmp.join(OPTIMIZER_FILE);
    optim
        .save(&optim_path)
        .map_err(|e| TrainError::Checkpoint {
            path: optim_path.clone(),
            problem: e.to_string(),
        })?;
    for f in [&model_path, &optim_path] {
        fs::File::open(f)
            .and_then(|f| f.sync_all())
            .map_err(io_err(f))?;
    }
    let _ = fs::remove_dir_all(dir);
    atomic::commit(&tmp, dir).map_err(io_err(dir))
}

/// A checkpoint's model file (Burn's format), inside `checkpoints/epoch-EEE/`.
const MODEL_FILE: &str = "model.bpk";
/// A checkpoint's optimizer state file.
const OPTIMIZER_FILE: &str = "optimizer.bpk";

fn load_model_file(model: ResNet, path: &Path) -> Result<ResNet, TrainError> {
    model
        .try_load_file(path)
        .map_err(|e| TrainError::Checkpoint {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })
}

fn load_checkpoint(
    model: ResNet,
    optim: ModuleOptimizer,
    dir: &Path,
) -> Result<(ResNet, ModuleOptimizer), TrainError> {
    let model = load_model_file(model, &dir.join(MODEL_FILE))?;
    let optim_path = dir.join(OPTIMIZER_FILE);
    let optim = optim
        .load(&optim_path)
        .map_err(|e| TrainError::Checkpoint {
            path: optim_path.clone(),
            problem: e.to_string(),
        })?;
    Ok((model, optim))
}

/// Removes what a killed run may have left: temporaries, and snapshots or checkpoints of
/// epochs after the last complete one (they are redone, identically).
fn clean_incomplete(
    run: &RunDir,
    last_complete: usize,
    steps_per_epoch: u64,
) -> Result<(), TrainError> {
    let partial = run.partial_dir();
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(io_err(&partial))?;
    }
    fs::create_dir_all(&partial).map_err(io_err(&partial))?;
    for dir in [
        run.snapshots_dir(),
        run.root().join("checkpoints"),
        run.root().to_path_buf(),
    ] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let epoch = name
                .strip_prefix("epoch-")
                .and_then(|r| r.get(..3))
                .and_then(|e| e.parse::<usize>().ok());
            // Samples inside the epoch being redone are taken again, identically.
            let step = match SampleName::parse(&name) {
                Some(SampleName::Step(s)) => Some(s),
                _ => None,
            };
            let stale = name.ends_with(".tmp")
                || epoch.is_some_and(|e| e > last_complete)
                || step.is_some_and(|s| s > last_complete as u64 * steps_per_epoch);
            if stale {
                let p = entry.path();
                let result = if p.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                result.map_err(io_err(&p))?;
            }
        }
    }
    Ok(())
}

/// Builds the initial network from `seed`. Burn's backend RNG may be process-global, so the
/// seed-then-draw pair is serialised: another run starting on another thread cannot draw from
/// the RNG in between and change this run's weights.
fn seeded_init(
    config: &cnnu_model::ResNetConfig,
    seed: u64,
    device: &Device,
) -> Result<ResNet, TrainError> {
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let ad = device.clone().autodiff();
    device.seed(seed);
    ad.seed(seed);
    Ok(config.init(&ad)?)
}

/// The model of a complete epoch of a run (the last one when `epoch` is `None`), as its
/// checkpoint holds it, in eval mode on the default device of the run's backend.
pub fn load_epoch_model(run: &RunDir, epoch: Option<usize>) -> Result<(usize, ResNet), TrainError> {
    let config = read_run_config(run)?;
    let complete: Vec<usize> = read_metrics(&run.metrics_path())?
        .iter()
        .map(|m| m.epoch)
        .filter(|&e| run.checkpoint_dir(e).join(MODEL_FILE).is_file())
        .collect();
    let epoch = match epoch.or(complete.last().copied()) {
        Some(e) if complete.contains(&e) => e,
        asked => {
            return Err(TrainError::NoEpoch {
                run: run.root().to_path_buf(),
                epoch: asked.unwrap_or(0),
                complete: format!("{complete:?}"),
            });
        }
    };
    let device = config.backend.ensure_compiled()?.device()?;
    let model = config.train.model.init(&device)?;
    let model = load_model_file(model, &run.checkpoint_dir(epoch).join(MODEL_FILE))?;
    Ok((epoch, model))
}

/// What a finished (or resumed and finished) run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Every epoch's metrics, epoch 0 first.
    pub metrics: Vec<EpochMetrics>,
    /// The epoch the run started from (0 for a fresh run).
    pub resumed_after: Option<usize>,
}

/// Writes the probe set's pixels, labels and indices once, for the report's explorer (the
/// snapshots hold activations only).
fn write_probe_images(run: &RunDir, data: &Data) -> Result<(), TrainError> {
    use safetensors::tensor::{Dtype as StDtype, TensorView};
    let n = data.probe_count;
    let [c, h, w] = data.test.dims;
    let pixels = &data.test.images[..n * c * h * w];
    let labels: Vec<u8> = data.test.labels[..n]
        .iter()
        .flat_map(|&l| i64::from(l).to_le_bytes())
        .collect();
    let indices: Vec<u8> = (0..n as i64).flat_map(i64::to_le_bytes).collect();
    let corrupt = |e: safetensors::SafeTensorError| TrainError::Corrupt {
        path: run.probe_images_path(),
        problem: e.to_string(),
    };
    let views = [
        (
            sample::IMAGES,
            TensorView::new(StDtype::U8, vec![n, c, h, w], pixels).map_err(corrupt)?,
        ),
        (
            sample::LABELS,
            TensorView::new(StDtype::I64, vec![n], &labels).map_err(corrupt)?,
        ),
        (
            sample::INDICES,
            TensorView::new(StDtype::I64, vec![n], &indices).map_err(corrupt)?,
        ),
    ];
    let bytes = safetensors::tensor::serialize(views, None).map_err(corrupt)?;
    atomic::write_atomic(&run.probe_images_path(), &bytes).map_err(io_err(&run.probe_images_path()))
}

/// The metadata every snapshot of a run carries (each adds its epoch and step).
fn snapshot_metadata(
    config: &ValidTrainConfig,
    backend: BackendKind,
    dataset: &ImageDataset,
    probe_count: usize,
) -> BTreeMap<String, String> {
    let c = config.config();
    BTreeMap::from([
        (sample::KEY_FORMAT.to_string(), sample::FORMAT.to_string()),
        ("seed".to_string(), c.seed.to_string()),
        ("backend".to_string(), backend.name().to_string()),
        ("dataset".to_string(), dataset.kind.name().to_string()),
        (
            "class_names".to_string(),
            serde_json::to_string(&dataset.class_names).expect("serialisable"),
        ),
        (
            "model_config".to_string(),
            serde_json::to_string(&c.model).expect("serialisable"),
        ),
        (
            "taps".to_string(),
            config.catalogue().names(config.taps()).join(","),
        ),
        ("probe_images".to_string(), probe_count.to_string()),
        (
            "cnnu_version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
    ])
}

/// The run's optimizer steps: how many per epoch, and the ones sampled inside epochs.
#[derive(Debug, Clone)]
struct Schedule {
    steps_per_epoch: u64,
    inner: Vec<u64>,
}

impl Schedule {
    /// Resolves the sample steps for this many training images; an explicit step past the end of
    /// training is an error rather than a sample silently missing.
    fn new(c: &TrainConfig, train_images: usize) -> Result<Self, TrainError> {
        let steps_per_epoch = train_images.div_ceil(c.batch_size).max(1) as u64;
        let total = steps_per_epoch * c.epochs as u64;
        if let SampleAt::Steps(steps) = &c.sample_at
            && let Some(&late) = steps.iter().find(|&&s| s > total)
        {
            return Err(TrainError::Config(crate::config::ConfigError::Invalid {
                name: "sample_at",
                problem: format!(
                    "step {late} is past the end of training ({total} steps: {} epochs of {steps_per_epoch})",
                    c.epochs
                ),
            }));
        }
        Ok(Self {
            steps_per_epoch,
            inner: c.sample_at.inner_steps(steps_per_epoch, total),
        })
    }

    /// Whether the network is sampled after global step `step` (inside an epoch).
    fn samples_at(&self, step: u64) -> bool {
        self.inner.binary_search(&step).is_ok()
    }
}

/// Trains, sampling the frozen network at step 0, at the configured steps and after every
/// epoch into `run`; reports how it goes to `progress` (`&mut ()` for nothing).
pub fn train(
    config: &ValidTrainConfig,
    backend: BackendKind,
    dataset: &ImageDataset,
    data_source: &str,
    run: &RunDir,
    options: RunOptions,
    progress: &mut dyn TrainProgress,
) -> Result<RunSummary, TrainError> {
    let c = config.config();
    let device = backend.device()?;
    let train_indices = match c.train_limit {
        Some(n) => stratified_subset(&dataset.train.labels, n),
        None => (0..dataset.train.len()).collect(),
    };
    let data = Data {
        dataset,
        train: &dataset.train,
        train_indices,
        test: &dataset.test,
        test_count: c.test_limit.unwrap_or(usize::MAX).min(dataset.test.len()),
        probe_count: c.probe_limit.min(dataset.test.len()),
    };

    fs::create_dir_all(run.snapshots_dir()).map_err(io_err(&run.snapshots_dir()))?;
    let mut metrics = if options.resume {
        read_metrics(&run.metrics_path())?
    } else {
        Vec::new()
    };
    if !options.resume && (run.metrics_path().exists() || run.config_path().exists()) {
        return Err(TrainError::RunExists(run.root().to_path_buf()));
    }
    // The last epoch whose line, snapshot and checkpoint are all on disk.
    while let Some(last) = metrics.last() {
        if run.snapshot_path(last.epoch).is_file() && run.checkpoint_dir(last.epoch).is_dir() {
            break;
        }
        metrics.pop();
    }
    let resumed_after = metrics.last().map(|m| m.epoch);

    let mut model = seeded_init(&c.model, c.seed, &device)?;
    if let Some(path) = &c.init_weights {
        model = model.load_torchvision(path)?;
    }
    let mut optim = make_optimizer(c);
    let run_config = RunConfig {
        train: c.clone(),
        backend,
        data_source: data_source.to_string(),
        cnnu_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let metadata_base = snapshot_metadata(config, backend, dataset, data.probe_count);
    let schedule = Schedule::new(c, data.train_indices.len())?;

    match resumed_after {
        Some(last) => {
            clean_incomplete(run, last, schedule.steps_per_epoch)?;
            (model, optim) = load_checkpoint(model, optim, &run.checkpoint_dir(last))?;
            progress.resumed(run.root(), last);
        }
        None => {
            clean_incomplete(run, 0, schedule.steps_per_epoch)?;
            let json = serde_json::to_string_pretty(&run_config).expect("serialisable");
            atomic::write_atomic(&run.config_path(), json.as_bytes())
                .map_err(io_err(&run.config_path()))?;
            write_probe_images(run, &data)?;
        }
    }

    let session = Session {
        config,
        data: &data,
        run,
        device,
        metadata: metadata_base,
        schedule,
    };
    if resumed_after.is_none() {
        let m = session.sample(&model, &optim, 0, TrainPart::default())?;
        metrics.push(m);
        write_metrics(&run.metrics_path(), &metrics)?;
        progress.sampled(&metrics[0]);
    }
    let first = resumed_after.map_or(1, |e| e + 1);
    for epoch in first..=c.epochs {
        let part;
        (model, part) = session.train_epoch(model, &mut optim, epoch, progress)?;
        progress.epoch_trained(epoch);
        let m = session.sample(&model, &optim, epoch, part)?;
        metrics.push(m);
        write_metrics(&run.metrics_path(), &metrics)?;
        progress.sampled(metrics.last().expect("just pushed"));
    }
    Ok(RunSummary {
        metrics,
        resumed_after,
    })
}

/// The training-side figures of one epoch.
#[derive(Debug, Clone, Copy, Default)]
struct TrainPart {
    loss: Option<f64>,
    accuracy: Option<f64>,
    images_per_second: Option<f64>,
    seconds: f64,
}

/// What stays fixed while a run goes through its epochs.
struct Session<'a> {
    config: &'a ValidTrainConfig,
    data: &'a Data<'a>,
    run: &'a RunDir,
    device: Device,
    metadata: BTreeMap<String, String>,
    schedule: Schedule,
}

impl Session<'_> {
    /// One pass over the (shuffled) training images.
    fn train_epoch(
        &self,
        mut model: ResNet,
        optim: &mut ModuleOptimizer,
        epoch: usize,
        progress: &mut dyn TrainProgress,
    ) -> Result<(ResNet, TrainPart), TrainError> {
        let c = self.config.config();
        let ad = self.device.clone().autodiff();
        let mut order = self.data.train_indices.clone();
        if c.shuffle {
            order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(epoch_seed(
                c.seed, epoch,
            )));
        }
        let loss_fn = CrossEntropyLossConfig::new().init(&ad);
        progress.epoch_started(epoch, c.epochs, order.len());
        let started = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        let first_step = (epoch as u64 - 1) * self.schedule.steps_per_epoch;
        // Time spent sampling inside the epoch is not training time.
        let mut sampling = 0.0f64;
        for (i, chunk) in order.chunks(c.batch_size).enumerate() {
            let x = images_tensor(self.data, self.data.train, chunk, &ad);
            let y = labels_tensor(self.data.train, chunk, &ad);
            let logits = model.forward(x);
            let loss = loss_fn.forward(logits.clone(), y.clone());
            let hits = count_correct(logits, y);
            let loss_value: f32 = loss.clone().into_scalar();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(c.lr, model, grads);
            let step = first_step + i as u64 + 1;
            if self.schedule.samples_at(step) {
                let t = Instant::now();
                self.sample_step(&model, epoch - 1, step)?;
                sampling += t.elapsed().as_secs_f64();
            }
            loss_sum += loss_value as f64 * chunk.len() as f64;
            correct += hits;
            seen += chunk.len();
            let secs = started.elapsed().as_secs_f64() - sampling;
            progress.batch_done(
                seen,
                loss_sum / seen as f64,
                correct as f64 / seen as f64,
                seen as f64 / secs.max(1e-9),
            );
        }
        let seconds = started.elapsed().as_secs_f64() - sampling;
        Ok((
            model,
            TrainPart {
                loss: Some(loss_sum / seen.max(1) as f64),
                accuracy: Some(correct as f64 / seen.max(1) as f64),
                images_per_second: Some(seen as f64 / seconds.max(1e-9)),
                seconds,
            },
        ))
    }

    /// The snapshot of the model as it is after global step `step`, inside an epoch (`epochs`
    /// complete): the probe set only, no test pass and no checkpoint.
    fn sample_step(&self, model: &ResNet, epochs: usize, step: u64) -> Result<(), TrainError> {
        let mut metadata = self.metadata.clone();
        metadata.insert(sample::KEY_EPOCH.into(), epochs.to_string());
        metadata.insert(sample::KEY_STEP.into(), step.to_string());
        write_snapshot(
            &model.valid(),
            self.data,
            self.config,
            &self.device,
            [
                &self.run.sample_path(SampleName::Step(step)),
                &self.run.partial_dir(),
            ],
            &metadata,
        )
    }

    /// Test metrics, the snapshot and the checkpoint of the model as it is after `epoch`.
    fn sample(
        &self,
        model: &ResNet,
        optim: &ModuleOptimizer,
        epoch: usize,
        part: TrainPart,
    ) -> Result<EpochMetrics, TrainError> {
        let c = self.config.config();
        let started = Instant::now();
        // Eval mode on a plain device: BatchNorm uses, and cannot update, its running stats.
        let eval_model = model.valid();
        let (test_loss, test_accuracy) =
            evaluate(&eval_model, self.data, c.eval_batch_size, &self.device);
        let test_seconds = started.elapsed().as_secs_f64();
        let mut metadata = self.metadata.clone();
        metadata.insert(sample::KEY_EPOCH.into(), epoch.to_string());
        metadata.insert(
            sample::KEY_STEP.into(),
            (epoch as u64 * self.schedule.steps_per_epoch).to_string(),
        );
        metadata.insert("test_accuracy".into(), test_accuracy.to_string());
        metadata.insert("test_loss".into(), test_loss.to_string());
        write_snapshot(
            &eval_model,
            self.data,
            self.config,
            &self.device,
            [&self.run.snapshot_path(epoch), &self.run.partial_dir()],
            &metadata,
        )?;
        save_checkpoint(
            model,
            optim,
            &self.run.checkpoint_dir(epoch),
            &self.run.partial_dir(),
        )?;
        Ok(EpochMetrics {
            epoch,
            train_loss: part.loss,
            train_accuracy: part.accuracy,
            test_loss,
            test_accuracy,
            images_per_second: part.images_per_second,
            train_seconds: part.seconds,
            eval_seconds: started.elapsed().as_secs_f64(),
            test_images_per_second: Some(self.data.test_count as f64 / test_seconds.max(1e-9)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnnu_model::{ResNetArch, ResNetConfig};
    use cnnu_run::RunConfigView;

    /// `cnnu_run::RunConfigView` repeats some of `RunConfig`'s fields (cnnu-run cannot depend
    /// on this crate): a real configuration, written as training writes it, must read back
    /// through the view with every field the view names present and equal.
    #[test]
    fn run_config_reads_back_through_the_view() {
        let train = TrainConfig::new()
            .with_dataset(crate::dataset::DatasetKind::Cifar10)
            .with_model(
                ResNetConfig::new()
                    .with_arch(ResNetArch::ResNet34)
                    .with_in_channels(3),
            )
            .with_probe_limit(123)
            .with_taps("conv1,layer2".into())
            .with_sample_at(SampleAt::Log(5))
            .with_train_limit(Some(777))
            .with_batch_size(32);
        let config = RunConfig {
            train,
            backend: BackendKind::Flex,
            data_source: "somewhere".into(),
            cnnu_version: "0".into(),
        };
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let json = serde_json::to_string_pretty(&config).unwrap();
        atomic::write_atomic(&run.config_path(), json.as_bytes()).unwrap();

        let view = RunConfigView::read(&run).unwrap();
        let written: serde_json::Value = serde_json::from_str(&json).unwrap();
        // Every field of the view, serialised back, is the written field of the same name:
        // none is missing (a rename would read as null) and none is reshaped.
        let seen = serde_json::to_value(&view.train).unwrap();
        for (key, value) in seen.as_object().unwrap() {
            assert!(!value.is_null(), "the view reads no `train.{key}`");
            assert_eq!(value, &written["train"][key], "train.{key}");
        }
        assert_eq!(view.train.taps.as_deref(), Some("conv1,layer2"));
        assert_eq!(view.train.model.unwrap().arch.as_deref(), Some("ResNet34"));
    }
}
