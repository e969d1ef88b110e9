//! The whole study as a library call on validated settings: one training run per seed (sampled
//! at step 0, inside the first epoch and at every epoch end), each analysed and reported, then,
//! with several seeds, aggregated into the study's own report with intervals over seeds.
//! `cnnu study` and `examples/train_and_probe.rs` build a [`StudyPlan`] from their options
//! (starting from [`StudyDefaults`]) and call [`run`]; code can build one directly. The study
//! prints nothing: it reports to a [`StudyProgress`] the caller gives.

use std::path::{Path, PathBuf};
use std::time::Instant;

use cnnu_analysis::numerics::pipeline::ValidAnalysisParams;
use cnnu_analysis::reporting::aggregate::{self, AggregateError};
use cnnu_analysis::reporting::compare::{self, CompareError};
use cnnu_analysis::reporting::layer::LayerReport;
use cnnu_analysis::reporting::report::{
    self, EarlyLayers, EpochAccuracy, ReportPaths, StudySeeds, read_accuracy,
};
use cnnu_analysis::reporting::summary::{Progress, SummaryError, analyze_run, sample_name};
use cnnu_model::{BackendKind, Catalogue};
use cnnu_train::trainer::read_run_config;
use cnnu_train::{
    ConfigError, DatasetError, ImageDataset, RunDir, SampleAt, TrainError, TrainProgress,
    ValidTrainConfig,
};

use crate::training::{TrainRequest, train_run};

/// The study's defaults, in one place: what `cnnu study` and the `train_and_probe` example
/// start from, and `--quick`'s small slice. Options given explicitly win over them.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyDefaults {
    /// One run per seed.
    pub seeds: Vec<u64>,
    /// Epochs per run.
    pub epochs: usize,
    /// Training images (a stratified subset), or all.
    pub train_limit: Option<usize>,
    /// Test images for the test pass, or all.
    pub test_limit: Option<usize>,
    /// Probe images sampled at every sample.
    pub probe_limit: usize,
    /// Samples inside epochs.
    pub sample_at: SampleAt,
    /// Taps recorded.
    pub taps: &'static str,
    /// The study's directory.
    pub out: &'static str,
}

impl StudyDefaults {
    /// The default study: four seeds of one epoch on all of MNIST, 1000 probe images, twelve
    /// samples inside the epoch on a log scale.
    pub fn full() -> Self {
        StudyDefaults {
            // Four seeds fill the ~20 minutes the default study is sized to on 2 Zen 4 cores
            // (~5 min each) and narrow the interval over seeds by a third against three
            // (t(0.975, 3) / 2 = 1.59 against t(0.975, 2) / sqrt(3) = 2.48 standard deviations).
            seeds: vec![0, 1, 2, 3],
            epochs: 1,
            train_limit: None,
            test_limit: None,
            probe_limit: 1000,
            sample_at: SampleAt::Log(12),
            taps: "conv1,relu,layer1,layer2,layer3,layer4",
            out: "runs/study",
        }
    }

    /// A small slice for smoke tests (`--quick`): one seed, 2000 training images, 2 epochs,
    /// 500 probe images, 2000 test images.
    pub fn quick() -> Self {
        StudyDefaults {
            seeds: vec![0],
            epochs: 2,
            train_limit: Some(2000),
            test_limit: Some(2000),
            probe_limit: 500,
            sample_at: SampleAt::Log(4),
            out: "runs/quick",
            ..Self::full()
        }
    }
}

/// Why a study stopped.
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    /// The plan has no seed.
    #[error("a study needs at least one seed")]
    NoSeeds,
    /// The dataset could not be read or fetched.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// A resumed run's saved settings are no longer valid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Training a seed's run failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// Analysing or reporting a run failed.
    #[error("analysing {run}: {source}")]
    Analysis {
        /// The run.
        run: PathBuf,
        /// Why.
        source: SummaryError,
    },
    /// Aggregating the seeds failed.
    #[error(transparent)]
    Aggregate(#[from] AggregateError),
    /// Comparing the seeds' layers (layer identification) failed.
    #[error("comparing the seeds of {run}: {source}")]
    Compare {
        /// The study's directory.
        run: PathBuf,
        /// Why.
        source: CompareError,
    },
}

/// The size of a study and the time it is expected to take, told before it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyEstimate {
    /// Seeds (runs).
    pub seeds: usize,
    /// Training images per run.
    pub train_images: usize,
    /// Epochs per run.
    pub epochs: usize,
    /// Samples inside epochs.
    pub sample_at: SampleAt,
    /// Probe images per sample.
    pub probe_images: usize,
    /// Taps analysed.
    pub layers: usize,
    /// Expected seconds on 2 CPU cores (flex).
    pub seconds: f64,
}

/// What a study reports while it works; every method has an empty default, and each run's
/// training reports through [`TrainProgress`]. `()` reports nothing; the `cnnu` binary prints.
/// `Sync` because a run's layers are analysed on several threads at once.
pub trait StudyProgress: TrainProgress + Sync {
    /// The dataset is being downloaded from `url`.
    fn downloading(&mut self, _url: &str) {}
    /// The study starts.
    fn planned(&mut self, _estimate: &StudyEstimate) {}
    /// A seed's run starts (or resumes), on data read from `source`.
    fn run_started(&mut self, _request: &TrainRequest, _source: &str) {}
    /// The run in `run` is trained; its analysis starts.
    fn analysing(&mut self, _run: &Path) {}
    /// One (sample, layer) of the run is analysed (called from the analysis threads).
    fn analysed(&self, _pair: Progress<'_>) {}
    /// `done` seeds took `elapsed` seconds; `left` seeds remain.
    fn seed_done(&mut self, _seed: u64, _elapsed: f64, _done: usize, _left: usize) {}
}

/// Reports nothing.
impl StudyProgress for () {}

/// A study to run.
#[derive(Debug, Clone)]
pub struct StudyPlan {
    /// The training settings; each seed's run takes them with its own seed.
    pub train: ValidTrainConfig,
    /// One run per seed (`out/seed-S/` when there are several, `out` itself for one).
    pub seeds: Vec<u64>,
    /// The backend to train on.
    pub backend: BackendKind,
    /// The dataset's directory (else its variable, else the download cache).
    pub data_dir: Option<PathBuf>,
    /// The study's directory.
    pub out: PathBuf,
    /// Continue runs that are already there instead of refusing them.
    pub resume: bool,
    /// The analysis settings.
    pub analysis: ValidAnalysisParams,
    /// The analysis method's name, for the report.
    pub method: &'static str,
    /// Layers to analyse (None: every tap sampled).
    pub layers: Option<Vec<String>>,
    /// Layers analysed at once.
    pub jobs: usize,
    /// The labels tensor's name.
    pub labels_var: String,
}

impl StudyPlan {
    /// The run directory of `seed`.
    pub fn run_dir(&self, seed: u64) -> PathBuf {
        if self.seeds.len() == 1 {
            self.out.clone()
        } else {
            self.out.join(format!("seed-{seed}"))
        }
    }
}

/// What a study produced.
#[derive(Debug, Clone)]
pub struct StudyOutcome {
    /// The study's directory (the run itself for one seed).
    pub run: PathBuf,
    /// The study's report files.
    pub report: ReportPaths,
    /// The console summary table.
    pub table: String,
}

/// Measured on the project's 2-core Zen 4 machine (flex, AVX-512, 2026-12-02, the default
/// 3-seed study alone): training 262–309 img/s end to end, test passes and epoch samples
/// ~1450 img/s, and ~0.8 s per (sample, layer) of analysis with t-SNE at 1000 probe images,
/// two layers at once (quadratic in the probe count for the Gram matrices, ~n log n for
/// t-SNE). A VM without AVX-512 trains at about half that (136 img/s); the study revises its
/// estimate from its own time after the first seed.
const TRAIN_IMG_PER_S: f64 = 290.0;
const TEST_IMG_PER_S: f64 = 1400.0;
const SAMPLE_IMG_PER_S: f64 = 1400.0;
const ANALYSIS_S_PER_PAIR_AT_1000: f64 = 0.8;

/// Rough seconds the study takes on this machine's default backend for `train_images`
/// training images and `layers` analysed layers.
pub fn expected_seconds(plan: &StudyPlan, train_images: usize, layers: usize) -> f64 {
    let c = plan.train.config();
    let epochs = c.epochs as f64;
    let steps_per_epoch = train_images.div_ceil(c.batch_size).max(1) as u64;
    let inner = c
        .sample_at
        .inner_steps(steps_per_epoch, steps_per_epoch * c.epochs as u64)
        .len() as f64;
    let samples = 1.0 + epochs + inner;
    let test = c.test_limit.unwrap_or(10_000).min(10_000) as f64;
    let probe = c.probe_limit as f64;
    let per_pair = ANALYSIS_S_PER_PAIR_AT_1000 * (0.3 + 0.7 * (probe / 1000.0).powi(2));
    let per_seed = train_images as f64 * epochs / TRAIN_IMG_PER_S
        + (epochs + 1.0) * test / TEST_IMG_PER_S
        + samples * probe / SAMPLE_IMG_PER_S
        + samples * layers as f64 * per_pair;
    per_seed * plan.seeds.len() as f64
}

/// One seed's trained, analysed and reported run.
struct SeedRun {
    root: PathBuf,
    /// Its network's early layers.
    early: EarlyLayers,
    reports: Vec<LayerReport>,
    accuracy: Vec<EpochAccuracy>,
    report: ReportPaths,
}

/// Runs the study: every seed trained (or resumed), analysed and reported; several seeds
/// aggregated into the study's report.
pub fn run(plan: &StudyPlan, progress: &mut dyn StudyProgress) -> Result<StudyOutcome, StudyError> {
    let started = Instant::now();
    if plan.seeds.is_empty() {
        return Err(StudyError::NoSeeds);
    }
    let c = plan.train.config();
    let (dataset, source) = ImageDataset::load(c.dataset, plan.data_dir.as_deref(), &mut |url| {
        progress.downloading(url)
    })?;
    let train_images = c.train_limit.unwrap_or(usize::MAX).min(dataset.train.len());
    let layers = plan.layers.as_ref().map_or_else(
        || plan.train.catalogue().names(plan.train.taps()).len(),
        Vec::len,
    );
    progress.planned(&StudyEstimate {
        seeds: plan.seeds.len(),
        train_images,
        epochs: c.epochs,
        sample_at: c.sample_at.clone(),
        probe_images: c.probe_limit,
        layers,
        seconds: expected_seconds(plan, train_images, layers),
    });
    let mut runs = Vec::with_capacity(plan.seeds.len());
    for (done, &seed) in plan.seeds.iter().enumerate() {
        let source = source.to_string();
        runs.push(run_seed(
            plan,
            seed,
            &dataset,
            &source,
            train_images,
            progress,
        )?);
        let left = plan.seeds.len() - done - 1;
        progress.seed_done(seed, started.elapsed().as_secs_f64(), done + 1, left);
    }
    if let [one] = runs.as_slice() {
        return Ok(StudyOutcome {
            run: one.root.clone(),
            report: one.report.clone(),
            table: summary_table(&one.reports, &one.accuracy),
        });
    }
    let roots: Vec<PathBuf> = runs.iter().map(|r| r.root.clone()).collect();
    let agg = aggregate::aggregate(&roots, &runs[0].early)?;
    let agg_dir = plan.out.join("aggregate");
    aggregate::write_aggregate(&agg_dir, &agg)?;
    let settings = format!(
        "{} seeds ({}), each {}. Made by cnnu {} in {:.0} s.",
        plan.seeds.len(),
        plan.seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        run_words(plan, train_images),
        env!("CARGO_PKG_VERSION"),
        started.elapsed().as_secs_f64()
    );
    let seeds: Vec<(String, PathBuf)> = plan
        .seeds
        .iter()
        .zip(&runs)
        .map(|(s, r)| (format!("seed {s}"), r.report.html.clone()))
        .collect();
    let identification =
        compare::identification_over_pairs(&roots, &Default::default()).map_err(|source| {
            StudyError::Compare {
                run: plan.out.clone(),
                source,
            }
        })?;
    let paths = report::write_aggregate_report(
        &plan.out,
        "cnnu study over seeds: does training make early-layer representations purer, beyond seed-to-seed noise?",
        &settings,
        &agg,
        &agg_dir,
        &StudySeeds {
            reports: &seeds,
            explorer: Some((seeds[0].0.as_str(), &runs[0].root, &runs[0].reports)),
            identification: &identification,
        },
    )
    .map_err(|source| StudyError::Analysis {
        run: plan.out.clone(),
        source,
    })?;
    Ok(StudyOutcome {
        run: plan.out.clone(),
        report: paths,
        table: aggregate::answer(&agg),
    })
}

/// The layers the report calls early: the early taps of the network's catalogue (the analysis
/// crate takes them as names; it does not know the network).
pub fn early_layers(catalogue: &Catalogue) -> EarlyLayers {
    EarlyLayers::new(catalogue.early())
}

/// One seed: trained or resumed, analysed, reported.
fn run_seed(
    plan: &StudyPlan,
    seed: u64,
    dataset: &ImageDataset,
    source: &str,
    train_images: usize,
    progress: &mut dyn StudyProgress,
) -> Result<SeedRun, StudyError> {
    let started = Instant::now();
    let run = RunDir::new(plan.run_dir(seed));
    let resume = plan.resume && run.config_path().is_file();
    let config = if resume {
        // A resumed run keeps its own settings (they made its finished epochs).
        let mut saved = read_run_config(&run)?.train;
        saved.epochs = plan.train.config().epochs;
        saved.validate()?
    } else {
        plan.train.clone().with_seed(seed)
    };
    let request = TrainRequest {
        config,
        backend: plan.backend,
        run,
        resume,
    };
    progress.run_started(&request, source);
    let trained = train_run(&request, dataset, source, progress)?;
    let early = early_layers(request.config.catalogue());
    let root = request.run.root().to_path_buf();
    progress.analysing(&root);
    let shared: &dyn StudyProgress = progress;
    let analysis_started = Instant::now();
    let failed = |source| StudyError::Analysis {
        run: root.clone(),
        source,
    };
    let analysis = analyze_run(
        &root,
        plan.layers.as_deref(),
        &plan.analysis,
        plan.jobs,
        &plan.labels_var,
        &|pair| shared.analysed(pair),
    )
    .map_err(failed)?;
    let analyse_seconds = analysis_started.elapsed().as_secs_f64();
    let accuracy = read_accuracy(&root).map_err(failed)?;
    let train_seconds: f64 = trained.metrics.iter().map(|m| m.train_seconds).sum();
    let sample_seconds: f64 = trained.metrics.iter().map(|m| m.eval_seconds).sum();
    let settings = format!(
        "Run `{}`: {}, seed {seed}. Made by cnnu {} in {:.0} s: training {:.0} s (with the samples inside epochs), \
         test passes and epoch samples {:.0} s, analysis {:.0} s.",
        root.display(),
        run_words(plan, train_images),
        env!("CARGO_PKG_VERSION"),
        started.elapsed().as_secs_f64(),
        train_seconds,
        sample_seconds,
        analyse_seconds,
    );
    let report = report::write_report(
        &root,
        "cnnu study: does training make early-layer clusters purer?",
        &settings,
        &analysis.reports,
        &early,
        &accuracy,
        &analysis.dir,
    )
    .map_err(failed)?;
    Ok(SeedRun {
        root,
        early,
        reports: analysis.reports,
        accuracy,
        report,
    })
}

/// The settings of a run in words, for the reports.
fn run_words(plan: &StudyPlan, train_images: usize) -> String {
    let c = plan.train.config();
    let p = plan.analysis.params();
    format!(
        "{} on {} (classes {}; {train_images} training images, {} epoch(s), batch {}, lr {}); {} probe images sampled \
         at step 0, {} and after every epoch; taps {}. Analysis: {}, energy {}, HDBSCAN min cluster size {}",
        c.model.arch.name(),
        c.dataset.title(),
        c.dataset.class_names().join(", "),
        c.epochs,
        c.batch_size,
        c.lr,
        c.probe_limit,
        c.sample_at,
        plan.train.catalogue().spec(plan.train.taps()),
        plan.method,
        p.energy,
        p.min_cluster_size,
    )
}

/// The console table: one row per (sample, layer).
pub fn summary_table(reports: &[LayerReport], accuracy: &[EpochAccuracy]) -> String {
    let mut out = String::from(
        "sample        test_acc  layer      k   clusters  noise   purity  knn    silhouette\n",
    );
    for r in reports {
        let sample = sample_name(r);
        let acc = match sample {
            cnnu_run::SampleName::Epoch(e) => accuracy
                .iter()
                .find(|a| a.epoch == e)
                .map(|a| format!("{:.4}", a.test_accuracy)),
            cnnu_run::SampleName::Step(_) => None,
        }
        .unwrap_or_else(|| "   -  ".to_string());
        out.push_str(&format!(
            "{:<12}  {acc:>8}  {:<9} {:>4}  {:>8}  {:>5.1}%  {:.3}   {:.3}  {:>7.3}\n",
            sample.label(),
            r.layer,
            r.k,
            r.agreement.n_clusters,
            r.agreement.noise_frac * 100.0,
            r.agreement.purity_with_noise,
            r.knn_agreement,
            r.silhouette_true
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_differs_from_the_full_study_only_in_its_slice() {
        let (full, quick) = (StudyDefaults::full(), StudyDefaults::quick());
        assert_eq!(full.seeds, [0, 1, 2, 3]);
        assert_eq!((quick.epochs, quick.probe_limit), (2, 500));
        assert_eq!(quick.taps, full.taps);
    }
}
