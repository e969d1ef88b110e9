//! A whole run: every (epoch, layer) of its snapshots analysed, written to
//! `RUN/analysis/summary.csv` and `summary.json`, with plots of each figure against epoch.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use crate::pipeline::{AnalysisError, LayerReport, ValidAnalysisParams, analyze};
use crate::plot::{self, PlotError};
use crate::source::{self, SourceError};

/// Errors of a run's analysis.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    /// No snapshots to analyse.
    #[error("{0}: no snapshots (expected snapshots/epoch-EEE.safetensors)")]
    NoSnapshots(PathBuf),
    /// Reading a snapshot failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Analysing a layer failed.
    #[error("{path}: {source}")]
    Analysis {
        /// The snapshot.
        path: PathBuf,
        /// Why.
        #[source]
        source: AnalysisError,
    },
    /// Writing results failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Drawing failed.
    #[error(transparent)]
    Plot(#[from] PlotError),
}

/// The snapshots of a run, `(epoch, path)` ascending.
pub fn snapshots(run: &Path) -> Result<Vec<(usize, PathBuf)>, SummaryError> {
    let dir = run.join("snapshots");
    let mut found: Vec<(usize, PathBuf)> = fs::read_dir(&dir)
        .map_err(|_| SummaryError::NoSnapshots(run.to_path_buf()))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let epoch = name
                .strip_prefix("epoch-")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()?;
            Some((epoch, e.path()))
        })
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(SummaryError::NoSnapshots(run.to_path_buf()));
    }
    Ok(found)
}

/// One row of the summary: an (epoch, layer) pair and its figures.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryRow {
    /// The epoch.
    pub epoch: usize,
    /// The report, label lists left out of the serialised form.
    #[serde(flatten)]
    pub report: ReportFigures,
}

/// A [`LayerReport`] without its per-sample lists.
#[derive(Debug, Clone, Serialize)]
pub struct ReportFigures {
    /// The layer.
    pub layer: String,
    /// Samples.
    pub n: usize,
    /// Features before the filter.
    pub d_total: usize,
    /// Features kept.
    pub d_kept: usize,
    /// Rank at the energy threshold.
    pub k: usize,
    /// Scores used.
    pub k_used: usize,
    /// Energy at k.
    pub energy_at_k: f64,
    /// Clusters.
    pub n_clusters: usize,
    /// Noise share.
    pub noise_frac: f64,
    /// Purity, noise as a cluster.
    pub purity_with_noise: f64,
    /// Purity without noise.
    pub purity_without_noise: Option<f64>,
    /// Homogeneity.
    pub homogeneity: f64,
    /// Completeness.
    pub completeness: f64,
    /// V-measure.
    pub v_measure: f64,
    /// ARI.
    pub ari: f64,
    /// NMI.
    pub nmi: f64,
    /// kNN agreement.
    pub knn_agreement: f64,
    /// Silhouette of the true labels.
    pub silhouette_true: f64,
    /// Seconds in the SVD step.
    pub seconds_svd: f64,
    /// Seconds in all steps.
    pub seconds_total: f64,
    /// The plain-words reading.
    pub verdict: String,
    /// Leading singular values (JSON only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub singular_values: Vec<f64>,
}

impl From<&LayerReport> for ReportFigures {
    fn from(r: &LayerReport) -> Self {
        let s = &r.seconds;
        Self {
            layer: r.layer.clone(),
            n: r.n,
            d_total: r.d_total,
            d_kept: r.d_kept,
            k: r.k,
            k_used: r.k_used,
            energy_at_k: r.energy_at_k,
            n_clusters: r.n_clusters,
            noise_frac: r.noise_frac,
            purity_with_noise: r.purity_with_noise,
            purity_without_noise: r.purity_without_noise,
            homogeneity: r.homogeneity,
            completeness: r.completeness,
            v_measure: r.v_measure,
            ari: r.ari,
            nmi: r.nmi,
            knn_agreement: r.knn_agreement,
            silhouette_true: r.silhouette_true,
            seconds_svd: s.svd,
            seconds_total: s.load + s.filter + s.svd + s.cluster + s.metrics + s.tsne,
            verdict: r.verdict.clone(),
            singular_values: r.singular_values.clone(),
        }
    }
}

/// The figures plotted against epoch, one PNG each.
pub const PLOTTED: [&str; 11] = [
    "purity_with_noise",
    "purity_without_noise",
    "homogeneity",
    "completeness",
    "v_measure",
    "ari",
    "nmi",
    "knn_agreement",
    "silhouette_true",
    "noise_frac",
    "k",
];

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
pub fn analyze_run(
    run: &Path,
    layers: Option<&[String]>,
    params: &ValidAnalysisParams,
    jobs: usize,
    labels_var: &str,
) -> Result<RunAnalysis, SummaryError> {
    let snaps = snapshots(run)?;
    let layers: Vec<String> = match layers {
        Some(l) => l.to_vec(),
        None => source::layers(&snaps[0].1, labels_var)?
            .into_iter()
            .filter(|l| l != "logits")
            .collect(),
    };
    let work: Vec<(usize, PathBuf, String)> = snaps
        .iter()
        .flat_map(|(e, p)| layers.iter().map(move |l| (*e, p.clone(), l.clone())))
        .collect();
    let total = work.len();
    let queue = Mutex::new(work.into_iter().enumerate());
    let results: Mutex<Vec<(usize, Result<LayerReport, SummaryError>)>> = Mutex::new(Vec::new());
    // Each worker holds one layer's activations at a time, so memory is bounded by `jobs`
    // layers whatever the number of epochs.
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().map(|mut q| q.next()).unwrap_or(None);
                    let Some((i, (epoch, path, layer))) = next else { break };
                    let started = Instant::now();
                    let result = source::load(&path, &layer, labels_var)
                        .map_err(SummaryError::from)
                        .and_then(|acts| {
                            analyze(&acts, params, started.elapsed().as_secs_f64())
                                .map_err(|source| SummaryError::Analysis { path: path.clone(), source })
                        });
                    if let Ok(r) = &result {
                        eprintln!(
                            "[{}/{total}] epoch {epoch} {layer}: k={} clusters={} purity={:.3} knn={:.3} ({:.1} s)",
                            i + 1,
                            r.k,
                            r.n_clusters,
                            r.purity_with_noise,
                            r.knn_agreement,
                            started.elapsed().as_secs_f64()
                        );
                    }
                    if let Ok(mut out) = results.lock() {
                        out.push((i, result));
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(i, _)| *i);
    let mut reports = Vec::with_capacity(results.len());
    for (_, r) in results {
        reports.push(r?);
    }
    let dir = run.join("analysis");
    write_summary(&dir, &reports, params.params().tsne)?;
    Ok(RunAnalysis { reports, dir })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SummaryError + '_ {
    move |source| SummaryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a result file through a temporary sibling and a rename, so a crash never leaves a
/// half-written summary or report under its final name.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SummaryError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    fs::write(&tmp, bytes).map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// Writes `summary.csv`, `summary.json` and the plots for `reports` into `dir`.
pub fn write_summary(dir: &Path, reports: &[LayerReport], tsne: bool) -> Result<(), SummaryError> {
    let plots = dir.join("plots");
    fs::create_dir_all(&plots).map_err(io(&plots))?;
    let rows: Vec<SummaryRow> = reports
        .iter()
        .map(|r| SummaryRow {
            epoch: r.epoch.unwrap_or(0),
            report: ReportFigures::from(r),
        })
        .collect();
    let json = serde_json::to_vec_pretty(&rows).expect("rows serialise");
    write_atomic(&dir.join("summary.json"), &json)?;
    write_atomic(&dir.join("summary.csv"), csv(&rows).as_bytes())?;

    let mut layers: Vec<&str> = Vec::new();
    for r in reports {
        if !layers.contains(&r.layer.as_str()) {
            layers.push(&r.layer);
        }
    }
    for figure in PLOTTED {
        let series: Vec<(String, Vec<(f64, f64)>)> = layers
            .iter()
            .map(|&l| {
                let pts = reports
                    .iter()
                    .filter(|r| r.layer == l)
                    .map(|r| {
                        (
                            r.epoch.unwrap_or(0) as f64,
                            r.figures().get(figure).copied().unwrap_or(f64::NAN),
                        )
                    })
                    .collect();
                (l.to_string(), pts)
            })
            .collect();
        plot::lines(
            &plots.join(format!("{figure}.png")),
            &format!("{figure} against epoch"),
            "epoch",
            figure,
            &series,
            false,
        )?;
    }
    for &l in &layers {
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
                (format!("epoch {}", r.epoch.unwrap_or(0)), pts)
            })
            .collect();
        plot::lines(
            &plots.join(format!("spectrum-{l}.png")),
            &format!("{l}: share of leading energy per component"),
            "component",
            "s_i^2 / sum",
            &series,
            true,
        )?;
    }
    if tsne {
        for r in reports {
            if let Some(e) = &r.embedding {
                let epoch = r.epoch.unwrap_or(0);
                let labels: Vec<i64> = e.indices.iter().map(|&i| r.labels[i]).collect();
                let clusters: Vec<i64> = e.indices.iter().map(|&i| r.cluster_labels[i]).collect();
                let name = format!("tsne-{}-epoch-{epoch:03}", r.layer);
                let title = format!("{} · {} · epoch {epoch}", file_name(&r.source), r.layer);
                plot::scatter(
                    &plots.join(format!("{name}-labels.png")),
                    &format!("{title} · by label"),
                    &e.coords,
                    &labels,
                    "digit",
                )?;
                plot::scatter(
                    &plots.join(format!("{name}-clusters.png")),
                    &format!("{title} · by cluster"),
                    &e.coords,
                    &clusters,
                    "cluster",
                )?;
            }
        }
    }
    Ok(())
}

fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned())
}

/// The summary as CSV, one row per (epoch, layer).
pub fn csv(rows: &[SummaryRow]) -> String {
    let mut out = String::from(
        "epoch,layer,n,d_total,d_kept,k,k_used,energy_at_k,n_clusters,noise_frac,purity_with_noise,purity_without_noise,homogeneity,completeness,v_measure,ari,nmi,knn_agreement,silhouette_true,seconds_svd,seconds_total\n",
    );
    for row in rows {
        let r = &row.report;
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v}"));
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.3},{:.3}\n",
            row.epoch,
            r.layer,
            r.n,
            r.d_total,
            r.d_kept,
            r.k,
            r.k_used,
            r.energy_at_k,
            r.n_clusters,
            r.noise_frac,
            r.purity_with_noise,
            opt(r.purity_without_noise),
            r.homogeneity,
            r.completeness,
            r.v_measure,
            r.ari,
            r.nmi,
            r.knn_agreement,
            r.silhouette_true,
            r.seconds_svd,
            r.seconds_total,
        ));
    }
    out
}
