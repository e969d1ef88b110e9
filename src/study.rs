//! The whole study in one call: train with per-epoch sampling, analyse every (epoch, layer),
//! write the report. `cnnu study` and `examples/train_and_probe.rs` both run this.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};

use cnnu_analysis::report::{self, ReportPaths, read_accuracy};
use cnnu_analysis::summary::analyze_run;

use crate::cli::{AnalysisArgs, TrainArgs, train};

/// Taps the study samples unless `--taps` says otherwise.
pub const STUDY_TAPS: &str = "conv1,relu,layer1,layer2,layer3,layer4";

/// Options of `cnnu study` (and of the `train_and_probe` example).
#[derive(Debug, Clone, clap::Args)]
pub struct StudyArgs {
    /// Every `cnnu train` option.
    #[command(flatten)]
    pub train: TrainArgs,
    /// Every analysis option of `cnnu analyze`.
    #[command(flatten)]
    pub analysis: AnalysisArgs,
    /// A small slice for smoke tests: 2000 training images, 2 epochs, 500 probe images, 2000
    /// test images.
    #[arg(long)]
    pub quick: bool,
    /// Layers to analyse [default: every tap sampled].
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<String>>,
    /// pca (centred, the default) or svd.
    #[arg(long, default_value = "pca", value_parser = ["pca", "svd"])]
    pub method: String,
    /// Layers analysed at once.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
}

/// What a study produced.
#[derive(Debug, Clone)]
pub struct StudyOutcome {
    /// The run directory.
    pub run: PathBuf,
    /// The report files.
    pub report: ReportPaths,
    /// The console summary table.
    pub table: String,
}

impl StudyArgs {
    /// The options with `--quick` and the study's defaults applied.
    pub fn resolved(&self) -> StudyArgs {
        let mut a = self.clone();
        if a.train.taps == cnnu_train::DEFAULT_TAPS {
            a.train.taps = STUDY_TAPS.to_string();
        }
        if a.train.out.is_none() && a.train.resume.is_none() {
            a.train.out = Some(PathBuf::from(if a.quick {
                "runs/quick"
            } else {
                "runs/study"
            }));
        }
        if a.quick {
            a.train.train_limit.get_or_insert(2000);
            a.train.epochs.get_or_insert(2);
            a.train.test_limit.get_or_insert(2000);
            // An explicit --probe-limit wins, whatever its value.
            a.train.probe_limit.get_or_insert(500);
        }
        // The report's t-SNE grid needs the embeddings.
        a.analysis.tsne = true;
        a
    }
}

/// Rough seconds the study will take on this machine's default backend, from the default study
/// measured end to end (flex, 2 cores, 2026-12-02: 1456 s, of which training 1322 s for
/// 3 × 60 000 images, test pass and sampling 66 s, analysis 68 s): training ~136 img/s,
/// evaluation and sampling ~700 img/s, analysis ~2 s per (epoch, layer) at 2000 probe images.
pub fn expected_seconds(args: &StudyArgs, train_images: usize, layers: usize) -> f64 {
    let epochs = args.train.epochs.unwrap_or(3) as f64;
    let test = args.train.test_limit.unwrap_or(10_000).min(10_000) as f64;
    let probe = args.train.probe_limit.unwrap_or(2000) as f64;
    let train = train_images as f64 * epochs / 136.0;
    let eval = (epochs + 1.0) * (test + probe) / 700.0;
    let analysis = (epochs + 1.0)
        * layers as f64
        * (0.5 + 1.5 * probe / 2000.0)
        * if args.analysis.tsne { 2.0 } else { 1.0 };
    train + eval + analysis
}

/// Runs the study: train (or resume), analyse, report.
pub fn run(backend: Option<&str>, args: &StudyArgs) -> Result<StudyOutcome> {
    let args = args.resolved();
    let started = Instant::now();
    let layers = args
        .train
        .taps
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .count();
    let train_images = args.train.train_limit.unwrap_or(60_000).min(60_000);
    let eta = expected_seconds(&args, train_images, layers);
    eprintln!(
        "cnnu study: {} training images x {} epochs, {} probe images, {layers} taps; expected time about {:.0} min on 2 CPU cores (flex)",
        train_images,
        args.train.epochs.unwrap_or(3),
        args.train.probe_limit.unwrap_or(2000),
        (eta / 60.0).max(1.0)
    );
    let (run, trained) = train(backend, &args.train)?;
    let root = run.root().to_path_buf();
    let method = if args.method == "svd" {
        cnnu_analysis::reduce::Method::Svd
    } else {
        cnnu_analysis::reduce::Method::Pca
    };
    let params = args.analysis.params(method)?;
    let analysis_started = Instant::now();
    let analysis = analyze_run(
        &root,
        args.layers.as_deref(),
        &params,
        args.jobs,
        &args.analysis.labels_var,
    )
    .with_context(|| format!("analysing {}", root.display()))?;
    let analyse_seconds = analysis_started.elapsed().as_secs_f64();
    let accuracy = read_accuracy(&root)?;
    let train_seconds: f64 = trained.metrics.iter().map(|m| m.train_seconds).sum();
    let sample_seconds: f64 = trained.metrics.iter().map(|m| m.eval_seconds).sum();
    let settings = format!(
        "Run `{}`: {} on {} (classes {}; {} training images, {} epochs, batch {}, lr {}, seed {}); {} probe images sampled \
         before training and after every epoch; taps {}. Analysis: {}, energy {}, HDBSCAN min cluster size {}. \
         Made by cnnu {} in {:.0} s: training {:.0} s, test pass and sampling {:.0} s, analysis {:.0} s.",
        root.display(),
        args.train.model.arch().name(),
        args.train.dataset.kind().title(),
        args.train.dataset.kind().class_names().join(", "),
        train_images,
        args.train.epochs.unwrap_or(3),
        args.train.batch_size,
        args.train.lr,
        args.train.seed,
        args.train.probe_limit.unwrap_or(2000),
        args.train.taps,
        args.method,
        args.analysis.energy,
        args.analysis.min_cluster_size,
        env!("CARGO_PKG_VERSION"),
        started.elapsed().as_secs_f64(),
        train_seconds,
        sample_seconds,
        analyse_seconds,
    );
    let paths = report::write_report(
        &root,
        "cnnu study: does training make early-layer clusters purer?",
        &settings,
        &analysis.reports,
        &accuracy,
        &analysis.dir,
    )?;
    let table = summary_table(&analysis.reports, &accuracy);
    Ok(StudyOutcome {
        run: root,
        report: paths,
        table,
    })
}

/// The console table: one row per (layer, epoch).
pub fn summary_table(
    reports: &[cnnu_analysis::pipeline::LayerReport],
    accuracy: &[report::EpochAccuracy],
) -> String {
    let mut out = String::from(
        "epoch  test_acc  layer      k   clusters  noise   purity  knn    silhouette\n",
    );
    for r in reports {
        let epoch = r.epoch.unwrap_or(0);
        let acc = accuracy
            .iter()
            .find(|a| a.epoch == epoch)
            .map_or("   -  ".to_string(), |a| format!("{:.4}", a.test_accuracy));
        out.push_str(&format!(
            "{epoch:>5}  {acc:>8}  {:<9} {:>4}  {:>8}  {:>5.1}%  {:.3}   {:.3}  {:>7.3}\n",
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

    use crate::cli::{Cli, Command};

    fn resolved(args: &[&str]) -> super::StudyArgs {
        let cli = Cli::try_parse_from(["cnnu", "study"].iter().chain(args)).unwrap();
        let Command::Study(study) = cli.command else {
            panic!("parsed as study")
        };
        study.resolved()
    }

    #[test]
    fn an_explicit_probe_limit_wins_over_quick_even_at_the_default_value() {
        assert_eq!(resolved(&["--quick"]).train.probe_limit, Some(500));
        let explicit = resolved(&["--quick", "--probe-limit", "2000"]);
        assert_eq!(explicit.train.probe_limit, Some(2000));
        assert_eq!(resolved(&[]).train.to_config().probe_limit, 2000);
    }
}
