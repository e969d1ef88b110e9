//! A whole run: every (epoch, layer) of its snapshots analysed, written to
//! `RUN/analysis/summary.csv` and `summary.json`, with plots of each figure against epoch and
//! layer × epoch heatmaps of the representation measures. The cross-epoch measures (CKA with
//! the final and the previous epoch) are computed here, one layer at a time.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use cnnu_run::{RunDir, SampleFile, SampleName, SnapshotFormatError};

use crate::numerics::dynamics::{CONVERGED_CKA, CenteredGram, converged_step, linear_cka};
use crate::numerics::pipeline::ValidAnalysisParams;
use crate::readers::foreign::{self, ForeignError, ForeignFolder};
use crate::readers::source::{self, SourceError};
use crate::reporting::figures;
use crate::reporting::layer::{LayerError, LayerReport, analyze_layer};
use crate::reporting::plot::{self, PlotError};
use cnnu_run::IoError;

/// Errors of a run's analysis.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    /// No snapshots to analyse.
    #[error(
        "{0}: no snapshots (expected snapshots/epoch-EEE.safetensors or step-SSSSSSS.safetensors)"
    )]
    NoSnapshots(PathBuf),
    /// Neither a run (no snapshots) nor a folder of activation files.
    #[error(
        "{0}: no snapshots (expected snapshots/epoch-EEE.safetensors or step-SSSSSSS.safetensors) and no activation files (*.safetensors, *.npz)"
    )]
    NothingToAnalyze(PathBuf),
    /// A folder of activations from elsewhere is not as specified (boxed: the error is large).
    #[error(transparent)]
    Foreign(Box<ForeignError>),
    /// Reading a snapshot failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A snapshot's header or format version is wrong.
    #[error(transparent)]
    Format(#[from] SnapshotFormatError),
    /// `metrics.jsonl` could not be read.
    #[error(transparent)]
    Metrics(#[from] cnnu_run::MetricsError),
    /// Analysing a layer failed.
    #[error("{path}: {source}")]
    Analysis {
        /// The snapshot.
        path: PathBuf,
        /// Why.
        #[source]
        source: LayerError,
    },
    /// Writing results failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// Drawing failed.
    #[error(transparent)]
    Plot(#[from] PlotError),
}

impl From<ForeignError> for SummaryError {
    fn from(e: ForeignError) -> Self {
        Self::Foreign(Box::new(e))
    }
}

/// The samples of a run in training order (every `snapshots/*.safetensors`, format checked).
pub fn snapshots(run: &Path) -> Result<Vec<SampleFile>, SummaryError> {
    let found = RunDir::new(run).samples()?;
    if found.is_empty() {
        return Err(SummaryError::NoSnapshots(run.to_path_buf()));
    }
    Ok(found)
}

/// One row of `summary.json`: the report of a (sample, layer) pair as `cnnu reduce --json`
/// gives it, without the per-sample cluster labels.
pub fn summary_row(report: &LayerReport) -> serde_json::Value {
    let mut row = serde_json::to_value(report).expect("reports serialise");
    if let Some(obj) = row.as_object_mut() {
        obj.remove("cluster_labels");
        obj.insert("epoch".into(), report.epoch.unwrap_or(0).into());
    }
    row
}

/// One (sample, layer) of a run analysed: what [`analyze_run`] reports to its caller as it
/// goes (the library prints nothing; the CLI writes [`Progress::line`] to stderr).
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// Pairs finished so far, this one included.
    pub done: usize,
    /// Pairs in the run.
    pub total: usize,
    /// The sample, as its file names it (`epoch 3`, `step 40`, …).
    pub sample: &'a str,
    /// The layer.
    pub layer: &'a str,
    /// What its analysis found.
    pub report: &'a LayerReport,
    /// Seconds it took, reading included.
    pub seconds: f64,
}

impl Progress<'_> {
    /// The one-line account of this pair for a terminal.
    pub fn line(&self) -> String {
        let r = self.report;
        format!(
            "[{}/{}] {} {}: k={} clusters={} purity={:.3} knn={:.3} probe={:.3} ({:.1} s)",
            self.done,
            self.total,
            self.sample,
            self.layer,
            r.k,
            r.agreement.n_clusters,
            r.agreement.purity_with_noise,
            r.knn_agreement,
            r.probe_acc,
            self.seconds
        )
    }
}

/// The result of analysing a run.
#[derive(Debug, Clone)]
pub struct RunAnalysis {
    /// Every (epoch, layer) report, epoch-major, layers in the order asked.
    pub reports: Vec<LayerReport>,
    /// Where the results went.
    pub dir: PathBuf,
}

/// Analyses the given layers (or every layer of the first snapshot) of every snapshot of
/// `run`, `jobs` layers at a time, and writes the summary and plots into `RUN/analysis/`.
///
/// A worker takes one layer and walks its epochs, last epoch first, so that CKA with the final
/// and with the previous epoch needs at most three centred Gram matrices of that layer in
/// memory (final, previous, current), whatever the number of epochs.
///
/// `progress` hears of every (sample, layer) as it is done, from the worker threads.
pub fn analyze_run(
    run: &Path,
    layers: Option<&[String]>,
    params: &ValidAnalysisParams,
    jobs: usize,
    labels_var: &str,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<RunAnalysis, SummaryError> {
    analyze_dir(run, None, layers, params, jobs, labels_var, progress)
}

/// Whether `dir` is a cnnu run (it has `snapshots/` or `config.json`) rather than a folder of
/// activation files from elsewhere.
pub fn is_run(dir: &Path) -> bool {
    let run = RunDir::new(dir);
    run.snapshots_dir().is_dir() || dir.join("config.json").is_file()
}

/// Whether `dir` is read as a folder of activation files from elsewhere: no run, but
/// `.safetensors` or `.npz` files directly in it.
pub fn is_foreign_folder(dir: &Path) -> bool {
    !is_run(dir) && foreign::has_activation_files(dir)
}

/// [`analyze_run`] on a cnnu run or a folder of activation files cnnu did not write
/// ([`ForeignFolder`]), writing into `out` (default `DIR/analysis/`). A foreign folder's
/// samples are its files by step; their reports have a step and no epoch.
pub fn analyze_dir(
    dir: &Path,
    out: Option<&Path>,
    layers: Option<&[String]>,
    params: &ValidAnalysisParams,
    jobs: usize,
    labels_var: &str,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<RunAnalysis, SummaryError> {
    let (snaps, folder, layers) = if !is_foreign_folder(dir) {
        let snaps = match snapshots(dir) {
            Err(SummaryError::NoSnapshots(p)) if !is_run(dir) => {
                return Err(SummaryError::NothingToAnalyze(p));
            }
            other => other?,
        };
        let layers = resolve_layers(&snaps[0].path, layers, labels_var)?;
        let snaps: Vec<Sample> = snaps
            .into_iter()
            .map(|s| Sample {
                name: s.name,
                path: s.path,
                epoch: Some(s.epoch),
                step: s.step,
            })
            .collect();
        (snaps, None, layers)
    } else {
        let folder = ForeignFolder::open(dir, labels_var)?;
        let layers = match layers {
            Some(l) => {
                if let Some(missing) = l.iter().find(|l| !folder.layers.contains(l)) {
                    return Err(SourceError::MissingLayer {
                        path: folder.files[0].path.clone(),
                        layer: missing.clone(),
                        present: folder.layers.clone(),
                    }
                    .into());
                }
                l.to_vec()
            }
            None => folder.layers.clone(),
        };
        let snaps = folder
            .files
            .iter()
            .map(|f| Sample {
                name: SampleName::Step(f.step),
                path: f.path.clone(),
                epoch: None,
                step: Some(f.step),
            })
            .collect();
        (snaps, Some(folder), layers)
    };
    let walk = LayerWalk {
        snaps: &snaps,
        foreign: folder.as_ref(),
        params,
        labels_var,
        progress,
        total: snaps.len() * layers.len(),
        done: AtomicUsize::new(0),
        abort: AtomicBool::new(false),
    };
    let queue = Mutex::new(layers.iter().enumerate());
    let results: Mutex<Vec<Slot>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                while let Some((li, layer)) = queue.lock().map(|mut q| q.next()).unwrap_or(None) {
                    if !walk.layer(li, layer, &results) {
                        break;
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    // Sample-major, layers in the order asked.
    results.sort_by_key(|(key, _)| *key);
    let mut reports = Vec::with_capacity(results.len());
    for (_, r) in results {
        reports.push(r?);
    }
    set_converged_steps(&mut reports);
    let dir = out.map_or_else(|| RunDir::new(dir).analysis_dir(), Path::to_path_buf);
    write_summary(&dir, &reports, params.params().tsne)?;
    Ok(RunAnalysis { reports, dir })
}

/// Sets every report's `converged_step`: per layer, the first sample step from which its CKA to
/// the final sample stays at or above [`CONVERGED_CKA`]. None for a layer whose samples do not
/// all have a step and a CKA (runs from before step sampling, a lone file).
pub fn set_converged_steps(reports: &mut [LayerReport]) {
    let layers: Vec<String> = layer_order(reports).into_iter().map(String::from).collect();
    for layer in layers {
        let of_layer = || reports.iter().filter(|r| r.layer == layer);
        let mut points: Vec<(u64, f64)> = of_layer()
            .filter_map(|r| Some((r.step?, r.cka_vs_final?)))
            .collect();
        let step = if points.len() == of_layer().count() {
            points.sort_by_key(|&(s, _)| s);
            converged_step(&points, CONVERGED_CKA)
        } else {
            None
        };
        for r in reports.iter_mut().filter(|r| r.layer == layer) {
            r.converged_step = step;
        }
    }
}

/// The layers' converged steps in depth order, (depth from 1, layer, step) for those that have
/// one.
pub fn converged_by_depth(reports: &[LayerReport]) -> Vec<(usize, String, u64)> {
    layer_order(reports)
        .into_iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let step = reports.iter().find(|r| r.layer == l)?.converged_step?;
            Some((i + 1, l.to_string(), step))
        })
        .collect()
}

/// The layers asked for, checked against the first snapshot, or all its taps.
fn resolve_layers(
    first: &Path,
    layers: Option<&[String]>,
    labels_var: &str,
) -> Result<Vec<String>, SummaryError> {
    let present: Vec<String> = source::layers(first, labels_var)?;
    match layers {
        Some(l) => {
            // A typo should fail before minutes of work on the other layers, not after.
            if let Some(missing) = l.iter().find(|l| !present.contains(l)) {
                return Err(SourceError::MissingLayer {
                    path: first.to_path_buf(),
                    layer: missing.clone(),
                    present,
                }
                .into());
            }
            Ok(l.to_vec())
        }
        // The logits are there for predictions, not a tap; ask for them by name.
        None => Ok(present
            .into_iter()
            .filter(|l| l != cnnu_run::sample::LOGITS)
            .collect()),
    }
}

/// A finished (sample index, layer index) analysis.
type Slot = ((usize, usize), Result<LayerReport, SummaryError>);

/// A sample to analyse: a run's snapshot or a file of a foreign folder.
struct Sample {
    name: SampleName,
    path: PathBuf,
    epoch: Option<usize>,
    step: Option<u64>,
}

/// What the workers share while each walks one layer through every sample.
struct LayerWalk<'a> {
    snaps: &'a [Sample],
    /// The folder, when the samples are its files rather than a run's snapshots.
    foreign: Option<&'a ForeignFolder>,
    params: &'a ValidAnalysisParams,
    labels_var: &'a str,
    progress: &'a (dyn Fn(Progress<'_>) + Sync),
    total: usize,
    done: AtomicUsize,
    abort: AtomicBool,
}

impl LayerWalk<'_> {
    /// Analyses `layer` at every sample, last sample first so that CKA with the final network
    /// needs at most three centred Gram matrices (final, previous, current) whatever the
    /// number of samples. False when the run is failing and workers should stop.
    fn layer(&self, li: usize, layer: &str, results: &Mutex<Vec<Slot>>) -> bool {
        let last = self.snaps.len() - 1;
        let hsic = self.params.params().hsic;
        let mut final_gram: Option<CenteredGram> = None;
        let mut prev_gram: Option<CenteredGram> = None;
        for si in std::iter::once(last).chain(0..last) {
            if self.abort.load(Ordering::Relaxed) {
                return false;
            }
            let result = self.one(si, layer).map(|(mut r, gram)| {
                let t = Instant::now();
                let cka = |other: &Option<CenteredGram>| match (&gram, other) {
                    (Some(a), Some(b)) => Some(linear_cka(a, b, hsic).unwrap_or(f64::NAN)),
                    _ => None,
                };
                if si == last {
                    // 1 unless CKA is undefined here (a constant layer).
                    r.cka_vs_final = cka(&gram);
                    final_gram = gram;
                } else {
                    r.cka_vs_final = cka(&final_gram);
                    r.cka_vs_prev = cka(&prev_gram);
                    prev_gram = gram;
                }
                r.seconds.cka += t.elapsed().as_secs_f64();
                r
            });
            let failed = result.is_err();
            if let Ok(mut out) = results.lock() {
                out.push(((si, li), result));
            }
            if failed {
                // The run fails with this error: the other workers stop too.
                self.abort.store(true, Ordering::Relaxed);
                return false;
            }
        }
        // The final sample's own comparison with the sample before it, now known.
        if let (Some(a), Some(b)) = (&final_gram, &prev_gram)
            && let Ok(mut out) = results.lock()
            && let Some((_, Ok(r))) = out.iter_mut().find(|((s, l), _)| *s == last && *l == li)
        {
            let t = Instant::now();
            r.cka_vs_prev = Some(linear_cka(a, b, hsic).unwrap_or(f64::NAN));
            r.seconds.cka += t.elapsed().as_secs_f64();
        }
        true
    }

    /// One (sample, layer): loaded, analysed, placed on the run's axis, reported to the caller.
    fn one(
        &self,
        si: usize,
        layer: &str,
    ) -> Result<(LayerReport, Option<CenteredGram>), SummaryError> {
        let sample = &self.snaps[si];
        let started = Instant::now();
        let acts = match self.foreign {
            Some(folder) => folder.load(si, layer)?,
            None => source::load(&sample.path, layer, self.labels_var)?,
        };
        let (mut r, gram) =
            analyze_layer(&acts, self.params, started.elapsed().as_secs_f64(), true).map_err(
                |source| SummaryError::Analysis {
                    path: sample.path.clone(),
                    source,
                },
            )?;
        r.epoch = sample.epoch;
        r.step = sample.step;
        r.sample = Some(sample.name.stem());
        // A run's snapshot, or a foreign safetensors file, may hold the network's predictions
        // and logits; an .npz archive is no safetensors file at all.
        let fit = match foreign::is_npz(&sample.path) {
            true => None,
            false => source::network_fit(&sample.path)?,
        };
        if let Some(fit) = fit {
            r.accuracy = Some(fit.accuracy);
            r.loss = fit.loss;
        }
        let i = self.done.fetch_add(1, Ordering::Relaxed);
        (self.progress)(Progress {
            done: i + 1,
            total: self.total,
            sample: &sample.name.label(),
            layer,
            report: &r,
            seconds: started.elapsed().as_secs_f64(),
        });
        Ok((r, gram))
    }
}

/// Wraps an I/O error with the file it happened to.
pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SummaryError + '_ {
    move |source| IoError::at(path)(source).into()
}

/// Writes a result file atomically (temporary sibling, fsync, rename), so a crash never
/// leaves a half-written summary or report under its final name.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SummaryError> {
    cnnu_run::atomic::write_atomic(path, bytes).map_err(io(path))
}

/// Writes `summary.csv`, `summary.json` and the plots for `reports` into `dir`.
pub fn write_summary(dir: &Path, reports: &[LayerReport], tsne: bool) -> Result<(), SummaryError> {
    let plots = dir.join("plots");
    fs::create_dir_all(&plots).map_err(io(&plots))?;
    let rows: Vec<serde_json::Value> = reports.iter().map(summary_row).collect();
    let json = serde_json::to_vec_pretty(&rows).expect("rows serialise");
    write_atomic(&dir.join("summary.json"), &json)?;
    write_atomic(&dir.join(SUMMARY_CSV), csv(reports).as_bytes())?;
    let layers = layer_order(reports);
    write_line_plots(&plots, reports, &layers)?;
    write_heatmaps(&plots, reports, &layers)?;
    write_convergence_plot(&plots, reports)?;
    write_spectra(&plots, reports, &layers)?;
    if tsne {
        write_tsne(&plots, reports)?;
    }
    Ok(())
}

/// The axis a run's figures are drawn against: optimizer steps when every sample records its
/// step (logarithmic when there are samples inside epochs, which `log:N` spaces that way),
/// else epochs (runs from before step sampling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleAxis {
    /// x is the optimizer step.
    pub by_step: bool,
    /// x is drawn logarithmically.
    pub log: bool,
}

impl SampleAxis {
    /// The axis for these reports.
    pub fn of(reports: &[LayerReport]) -> Self {
        let by_step = !reports.is_empty() && reports.iter().all(|r| r.step.is_some());
        let inside = reports
            .iter()
            .any(|r| matches!(sample_name(r), SampleName::Step(_)));
        Self {
            by_step,
            log: by_step && inside,
        }
    }

    /// A report's position on the axis.
    pub fn x(self, r: &LayerReport) -> f64 {
        match (self.by_step, r.step) {
            (true, Some(s)) => s as f64,
            _ => r.epoch.unwrap_or(0) as f64,
        }
    }

    /// The axis' name.
    pub fn name(self) -> &'static str {
        if self.by_step { "step" } else { "epoch" }
    }

    /// The axis title with its scale.
    pub fn title(self) -> &'static str {
        match (self.by_step, self.log) {
            (true, true) => "optimizer step (log scale; step 0 at the left edge)",
            (true, false) => "optimizer step",
            _ => "epoch",
        }
    }

    /// The plot axes.
    pub fn axes(self) -> plot::Axes {
        plot::Axes {
            log_x: self.log,
            log_y: false,
        }
    }
}

/// The sample a report belongs to (its epoch, for reports from outside a run).
pub fn sample_name(r: &LayerReport) -> SampleName {
    r.sample
        .as_deref()
        .and_then(SampleName::from_stem)
        .unwrap_or(SampleName::Epoch(r.epoch.unwrap_or(0)))
}

/// The samples of `reports` in their first-seen order (reports come sample-major).
pub fn sample_order(reports: &[LayerReport]) -> Vec<SampleName> {
    let mut samples: Vec<SampleName> = Vec::new();
    for r in reports {
        let s = sample_name(r);
        if !samples.contains(&s) {
            samples.push(s);
        }
    }
    samples
}

/// The layers of `reports` in their first-seen order.
pub fn layer_order(reports: &[LayerReport]) -> Vec<&str> {
    let mut layers: Vec<&str> = Vec::new();
    for r in reports {
        if !layers.contains(&r.layer.as_str()) {
            layers.push(&r.layer);
        }
    }
    layers
}

/// One line plot per plotted figure, one line per layer, against the sample axis.
fn write_line_plots(
    plots: &Path,
    reports: &[LayerReport],
    layers: &[&str],
) -> Result<(), SummaryError> {
    let axis = SampleAxis::of(reports);
    for figure in figures::plotted() {
        let series: Vec<(String, Vec<(f64, f64)>)> = layers
            .iter()
            .map(|&l| {
                let pts = reports
                    .iter()
                    .filter(|r| r.layer == l)
                    .map(|r| (axis.x(r), figure.value(r)))
                    .collect();
                (l.to_string(), pts)
            })
            .collect();
        plot::lines(
            &plots.join(format!("{}.png", figure.name)),
            &format!("{} against {}", figure.name, axis.name()),
            axis.title(),
            figure.name,
            &series,
            axis.axes(),
        )?;
    }
    Ok(())
}

/// `converged-step.png`: each layer's converged step against its depth, when there are two or
/// more layers with one.
fn write_convergence_plot(plots: &Path, reports: &[LayerReport]) -> Result<(), PlotError> {
    let points: Vec<(usize, String, [f64; 3])> = converged_by_depth(reports)
        .into_iter()
        .map(|(d, l, s)| (d, l, [s as f64; 3]))
        .collect();
    convergence_plot(plots, "", &points)
}

/// Converged step (with a band: `[mean, low, high]`) against depth, titled with `over` (how
/// many runs, or nothing), into `plots/converged-step.png`; nothing with fewer than two layers.
pub(crate) fn convergence_plot(
    plots: &Path,
    over: &str,
    points: &[(usize, String, [f64; 3])],
) -> Result<(), PlotError> {
    if points.len() < 2 {
        return Ok(());
    }
    let names: Vec<String> = points
        .iter()
        .map(|(d, l, _)| format!("{d} = {l}"))
        .collect();
    let pts = points
        .iter()
        .map(|&(d, _, [m, lo, hi])| (d as f64, m, lo, hi))
        .collect();
    plot::lines_with_bands(
        &plots.join(CONVERGENCE_PLOT),
        &format!("converged step (CKA to final >= {CONVERGED_CKA}) against depth{over}"),
        &format!("depth: {}", names.join(", ")),
        "converged step",
        &[("converged step".to_string(), pts)],
        plot::Axes {
            log_x: false,
            log_y: false,
        },
    )
}

/// The file name of the converged-step plot, in a run's and in the aggregate's `plots/`.
pub const CONVERGENCE_PLOT: &str = "converged-step.png";

/// One layer × sample heatmap per figure that has one.
fn write_heatmaps(
    plots: &Path,
    reports: &[LayerReport],
    layers: &[&str],
) -> Result<(), SummaryError> {
    let samples = sample_order(reports);
    let row_labels: Vec<String> = layers.iter().map(|l| l.to_string()).collect();
    let col_labels: Vec<String> = samples.iter().map(|s| s.label()).collect();
    for figure in figures::heatmaps() {
        let values: Vec<Vec<f64>> = layers
            .iter()
            .map(|&l| {
                samples
                    .iter()
                    .map(|&s| {
                        reports
                            .iter()
                            .find(|r| r.layer == l && sample_name(r) == s)
                            .map_or(f64::NAN, |r| figure.value(r))
                    })
                    .collect()
            })
            .collect();
        plot::heatmap(
            &plots.join(format!("heatmap-{}.png", figure.name)),
            &format!("{}: layer × sample", figure.name),
            &row_labels,
            &col_labels,
            &values,
            figure.heatmap.and_then(figures::Range::bounds),
        )?;
    }
    Ok(())
}

/// Per layer, the share of energy of each leading component, one line per sample.
fn write_spectra(
    plots: &Path,
    reports: &[LayerReport],
    layers: &[&str],
) -> Result<(), SummaryError> {
    for &l in layers {
        let series: Vec<(String, Vec<(f64, f64)>)> = reports
            .iter()
            .filter(|r| r.layer == l)
            .map(|r| {
                let total: f64 = r
                    .singular_values
                    .iter()
                    .map(|s| s * s)
                    .sum::<f64>()
                    .max(f64::MIN_POSITIVE);
                let pts = r
                    .singular_values
                    .iter()
                    .enumerate()
                    .map(|(i, s)| ((i + 1) as f64, s * s / total))
                    .collect();
                (sample_name(r).label(), pts)
            })
            .collect();
        plot::lines(
            &plots.join(format!("spectrum-{l}.png")),
            &format!("{l}: share of leading energy per component"),
            "component",
            "s_i^2 / sum",
            &series,
            plot::Axes {
                log_x: false,
                log_y: true,
            },
        )?;
    }
    Ok(())
}

/// The t-SNE scatters of every report that has an embedding, by label and by cluster.
fn write_tsne(plots: &Path, reports: &[LayerReport]) -> Result<(), SummaryError> {
    for r in reports {
        let Some(e) = &r.embedding else { continue };
        let sample = sample_name(r);
        let labels: Vec<i64> = e.indices.iter().map(|&i| r.labels[i]).collect();
        let clusters: Vec<i64> = e.indices.iter().map(|&i| r.cluster_labels[i]).collect();
        let name = tsne_stem(&r.layer, sample);
        let title = format!(
            "{} · {} · {}",
            file_name(&r.source),
            r.layer,
            sample.label()
        );
        plot::scatter(
            &plots.join(format!("{name}-labels.png")),
            &format!("{title} · by label"),
            &e.coords,
            &labels,
            plot::Legend::Classes(r.class_names.as_deref()),
        )?;
        plot::scatter(
            &plots.join(format!("{name}-clusters.png")),
            &format!("{title} · by cluster"),
            &e.coords,
            &clusters,
            plot::Legend::Clusters,
        )?;
    }
    Ok(())
}

/// The file stem of a layer's t-SNE plots at a sample (`-labels.png` / `-clusters.png` follow).
pub fn tsne_stem(layer: &str, sample: SampleName) -> String {
    format!("tsne-{layer}-{}", sample.stem())
}

fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned())
}

/// The summary's CSV in `RUN/analysis/`.
pub const SUMMARY_CSV: &str = "summary.csv";

/// The column names of `summary.csv`'s keys, spelled once for its writer ([`csv`]) and its
/// readers (the aggregate over runs), which look every column up by name, never by position.
/// The figures' columns are named by [`figures::FIGURES`].
pub mod columns {
    /// Whole epochs completed.
    pub const EPOCH: &str = "epoch";
    /// Optimizer steps done (empty in runs from before step sampling).
    pub const STEP: &str = "step";
    /// The sample's stem (`epoch-001`, `step-0000040`).
    pub const SAMPLE: &str = "sample";
    /// The layer.
    pub const LAYER: &str = "layer";
}

/// How a key column's cell is made from a report.
type KeyCell = fn(&LayerReport) -> String;

/// The key columns in the order written, each with how its cell is made.
const KEY_COLUMNS: [(&str, KeyCell); 4] = [
    (columns::EPOCH, |r| r.epoch.unwrap_or(0).to_string()),
    (columns::STEP, |r| {
        r.step.map_or(String::new(), |s| s.to_string())
    }),
    (columns::SAMPLE, |r| sample_name(r).stem()),
    (columns::LAYER, |r| r.layer.clone()),
];

/// The summary as CSV, one row per (sample, layer): the sample's keys (whole epochs completed,
/// optimizer steps done where recorded, the snapshot's name), the layer, then every figure of
/// [`figures::FIGURES`] in its order.
pub fn csv(reports: &[LayerReport]) -> String {
    let names = KEY_COLUMNS
        .iter()
        .map(|(name, _)| *name)
        .chain(figures::FIGURES.iter().map(|f| f.name));
    let mut out = names.collect::<Vec<_>>().join(",");
    out.push('\n');
    for r in reports {
        let keys = KEY_COLUMNS.iter().map(|(_, cell)| cell(r));
        let values = figures::FIGURES.iter().map(|f| f.csv_cell(r));
        out.push_str(&keys.chain(values).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

/// The header of a `summary.csv`: its columns by name.
#[derive(Debug, Clone)]
pub struct CsvColumns {
    names: Vec<String>,
}

impl CsvColumns {
    /// The columns of a header line.
    pub fn parse(header: &str) -> Self {
        Self {
            names: header.split(',').map(|c| c.trim().to_string()).collect(),
        }
    }

    /// How many columns.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The position of the column `name`, if the file has it (older summaries lack some).
    pub fn find(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The position of the column `name`, which the file must have.
    pub fn require(&self, name: &'static str) -> Result<usize, MissingColumn> {
        self.find(name).ok_or(MissingColumn(name))
    }
}

/// A column a reader needs is not in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no `{0}` column")]
pub struct MissingColumn(pub &'static str);
