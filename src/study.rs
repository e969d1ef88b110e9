//! The whole study as a library call on validated settings: one training run per seed (sampled
//! at step 0, inside the first epoch and at every epoch end), each analysed and reported, then,
//! with several seeds, aggregated into the study's own report with intervals over seeds.
//! `cnnu study` and `examples/train_and_probe.rs` build a [`StudyPlan`] from their options and
//! call [`run`]; code can build one directly.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};

use cnnu_analysis::numerics::pipeline::ValidAnalysisParams;
use cnnu_analysis::reporting::aggregate;
use cnnu_analysis::reporting::layer::LayerReport;
use cnnu_analysis::reporting::report::{self, EpochAccuracy, ReportPaths, read_accuracy};
use cnnu_analysis::reporting::summary::{analyze_run, sample_name};
use cnnu_model::BackendKind;
use cnnu_train::trainer::read_run_config;
use cnnu_train::{ImageDataset, RunDir, ValidTrainConfig};

use crate::training::{TrainRequest, train_run};

/// Taps the study samples unless `--taps` says otherwise.
pub const STUDY_TAPS: &str = "conv1,relu,layer1,layer2,layer3,layer4";

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

/// The estimate revised on this machine's own speed once `done` seeds took `elapsed` seconds
/// (seeds cost the same, so the mean so far times the seeds left).
fn remaining_words(seed: u64, elapsed: f64, done: usize, left: usize) -> String {
    let per_seed = elapsed / done as f64;
    format!(
        "cnnu study: seed {seed} done, {:.1} min per seed so far; the {left} seed(s) left take about {:.0} min more",
        per_seed / 60.0,
        (per_seed * left as f64 / 60.0).max(1.0)
    )
}

/// One seed's trained, analysed and reported run.
struct SeedRun {
    root: PathBuf,
    reports: Vec<LayerReport>,
    accuracy: Vec<EpochAccuracy>,
    report: ReportPaths,
}

/// Runs the study: every seed trained (or resumed), analysed and reported; several seeds
/// aggregated into the study's report.
pub fn run(plan: &StudyPlan) -> Result<StudyOutcome> {
    let started = Instant::now();
    let c = plan.train.config();
    let (dataset, source) = ImageDataset::load(c.dataset, plan.data_dir.as_deref())?;
    let train_images = c.train_limit.unwrap_or(usize::MAX).min(dataset.train.len());
    let layers = plan.layers.as_ref().map_or_else(
        || plan.train.catalogue().names(plan.train.taps()).len(),
        Vec::len,
    );
    eprintln!(
        "cnnu study: {} seed(s) × {train_images} training images × {} epoch(s), sampled at step 0, {} and every \
         epoch end, {} probe images, {layers} taps; expected time about {:.0} min on 2 CPU cores (flex)",
        plan.seeds.len(),
        c.epochs,
        c.sample_at,
        c.probe_limit,
        (expected_seconds(plan, train_images, layers) / 60.0).max(1.0)
    );
    let mut runs = Vec::with_capacity(plan.seeds.len());
    for (done, &seed) in plan.seeds.iter().enumerate() {
        runs.push(run_seed(
            plan,
            seed,
            &dataset,
            &source.to_string(),
            train_images,
        )?);
        let left = plan.seeds.len() - done - 1;
        if left > 0 {
            eprintln!(
                "{}",
                remaining_words(seed, started.elapsed().as_secs_f64(), done + 1, left)
            );
        }
    }
    if let [one] = runs.as_slice() {
        return Ok(StudyOutcome {
            run: one.root.clone(),
            report: one.report.clone(),
            table: summary_table(&one.reports, &one.accuracy),
        });
    }
    let roots: Vec<PathBuf> = runs.iter().map(|r| r.root.clone()).collect();
    let agg = aggregate::aggregate(&roots)?;
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
    let paths = report::write_aggregate_report(
        &plan.out,
        "cnnu study over seeds: does training make early-layer representations purer, beyond seed-to-seed noise?",
        &settings,
        &agg,
        &agg_dir,
        &seeds,
    )?;
    Ok(StudyOutcome {
        run: plan.out.clone(),
        report: paths,
        table: aggregate::answer(&agg),
    })
}

/// One seed: trained or resumed, analysed, reported.
fn run_seed(
    plan: &StudyPlan,
    seed: u64,
    dataset: &ImageDataset,
    source: &str,
    train_images: usize,
) -> Result<SeedRun> {
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
    let trained = train_run(&request, dataset, source)?;
    let root = request.run.root().to_path_buf();
    let analysis_started = Instant::now();
    let analysis = analyze_run(
        &root,
        plan.layers.as_deref(),
        &plan.analysis,
        plan.jobs,
        &plan.labels_var,
        &|p| eprintln!("{}", p.line()),
    )
    .with_context(|| format!("analysing {}", root.display()))?;
    let analyse_seconds = analysis_started.elapsed().as_secs_f64();
    let accuracy = read_accuracy(&root)?;
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
        &accuracy,
        &analysis.dir,
    )?;
    Ok(SeedRun {
        root,
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
    use clap::Parser;

    use crate::cli::{Cli, Command, StudyArgs};

    fn resolved(args: &[&str]) -> StudyArgs {
        let cli = Cli::try_parse_from(["cnnu", "study"].iter().chain(args)).unwrap();
        let Command::Study(study) = cli.command else {
            panic!("parsed as study")
        };
        study.resolved()
    }

    #[test]
    fn the_estimate_is_revised_on_the_seeds_done() {
        // Two seeds in 20 min: 10 min each, so the one left takes 10 more.
        let words = super::remaining_words(1, 1200.0, 2, 1);
        assert!(words.contains("10.0 min per seed"), "{words}");
        assert!(
            words.contains("the 1 seed(s) left take about 10 min more"),
            "{words}"
        );
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
        assert_eq!(d.sample_at, Some(cnnu_train::SampleAt::Log(12)));
        assert_eq!(d.taps, super::STUDY_TAPS);
        let q = resolved(&["--quick", "--seeds", "4,5"]);
        assert_eq!(q.seeds, Some(vec![4, 5]));
        let plan = resolved(&["--seeds", "7"]).plan(None).unwrap();
        assert_eq!(plan.run_dir(7), std::path::PathBuf::from("runs/study"));
        let plan = resolved(&[]).plan(None).unwrap();
        assert_eq!(
            plan.run_dir(2),
            std::path::PathBuf::from("runs/study/seed-2")
        );
        // Full MNIST, 4 seeds: 4 × (60 000 / 290 s of training + 2 test passes + 13 samples
        // + 78 analysed pairs) = 4 × (207 + 14 + 9 + 62) s, about 19.5 min.
        let eta = super::expected_seconds(&plan, 60_000, 6);
        assert!((1100.0..1250.0).contains(&eta), "{eta}");
    }
}
