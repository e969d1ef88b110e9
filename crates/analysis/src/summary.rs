//! A whole run: every (epoch, layer) of its snapshots analysed, written to
//! `RUN/analysis/summary.csv` and `summary.json`, with plots of each figure against epoch and
//! layer × epoch heatmaps of the representation measures. The cross-epoch measures (CKA with
//! the final and the previous epoch) are computed here, one layer at a time.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use crate::dynamics::{CenteredGram, linear_cka};
use crate::pipeline::{AnalysisError, LayerReport, ValidAnalysisParams, analyze_layer};
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

/// One row of `summary.json`: the report of an (epoch, layer) pair as `cnnu reduce --json`
/// gives it, without the per-sample cluster labels.
pub fn summary_row(report: &LayerReport) -> serde_json::Value {
    let mut row = serde_json::to_value(report).expect("reports serialise");
    if let Some(obj) = row.as_object_mut() {
        obj.remove("cluster_labels");
        obj.insert("epoch".into(), report.epoch.unwrap_or(0).into());
    }
    row
}

/// The figures plotted against epoch, one PNG each.
pub const PLOTTED: [&str; 16] = [
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
    "cka_vs_final",
    "cka_vs_prev",
    "subspace_cos_mean",
    "nc1",
    "probe_acc",
];

/// The representation measures drawn as layer × epoch heatmaps (`heatmap-NAME.png`), with the
/// colour range each is read on (None: the data's own range).
pub const HEATMAPS: [(&str, Option<(f64, f64)>); 5] = [
    ("cka_vs_final", Some((0.0, 1.0))),
    ("cka_vs_prev", Some((0.0, 1.0))),
    ("subspace_cos_mean", Some((0.0, 1.0))),
    ("nc1", None),
    ("probe_acc", Some((0.0, 1.0))),
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
///
/// A worker takes one layer and walks its epochs, last epoch first, so that CKA with the final
/// and with the previous epoch needs at most three centred Gram matrices of that layer in
/// memory (final, previous, current), whatever the number of epochs.
pub fn analyze_run(
    run: &Path,
    layers: Option<&[String]>,
    params: &ValidAnalysisParams,
    jobs: usize,
    labels_var: &str,
) -> Result<RunAnalysis, SummaryError> {
    let snaps = snapshots(run)?;
    let present: Vec<String> = source::layers(&snaps[0].1, labels_var)?;
    let layers: Vec<String> = match layers {
        Some(l) => {
            // A typo should fail before minutes of work on the other layers, not after.
            if let Some(missing) = l.iter().find(|l| !present.contains(l)) {
                return Err(SourceError::MissingLayer {
                    path: snaps[0].1.clone(),
                    layer: missing.clone(),
                    present,
                }
                .into());
            }
            l.to_vec()
        }
        // The logits are there for predictions, not a tap; ask for them by name.
        None => present.into_iter().filter(|l| l != "logits").collect(),
    };
    let total = snaps.len() * layers.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let abort = std::sync::atomic::AtomicBool::new(false);
    let queue = Mutex::new(layers.iter().enumerate());
    type Slot = ((usize, usize), Result<LayerReport, SummaryError>);
    let results: Mutex<Vec<Slot>> = Mutex::new(Vec::new());
    let hsic = params.params().hsic;
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().map(|mut q| q.next()).unwrap_or(None);
                    let Some((li, layer)) = next else { break };
                    // Last epoch first: every other epoch is compared with it.
                    let order = std::iter::once(snaps.len() - 1).chain(0..snaps.len() - 1);
                    let mut final_gram: Option<CenteredGram> = None;
                    let mut prev_gram: Option<CenteredGram> = None;
                    for ei in order {
                        if abort.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        let (epoch, path) = &snaps[ei];
                        let started = Instant::now();
                        let result = source::load(path, layer, labels_var)
                            .map_err(SummaryError::from)
                            .and_then(|acts| {
                                analyze_layer(&acts, params, started.elapsed().as_secs_f64(), true)
                                    .map_err(|source| SummaryError::Analysis {
                                        path: path.clone(),
                                        source,
                                    })
                            });
                        let result = result.map(|(mut r, gram)| {
                            let t = Instant::now();
                            let cka = |other: &Option<CenteredGram>| match (&gram, other) {
                                (Some(a), Some(b)) => Some(linear_cka(a, b, hsic).unwrap_or(f64::NAN)),
                                _ => None,
                            };
                            if ei == snaps.len() - 1 {
                                // 1 unless CKA is undefined here (a constant layer).
                                r.cka_vs_final = gram
                                    .as_ref()
                                    .map(|g| linear_cka(g, g, hsic).unwrap_or(f64::NAN));
                                final_gram = gram;
                            } else {
                                r.cka_vs_final = cka(&final_gram);
                                r.cka_vs_prev = cka(&prev_gram);
                                prev_gram = gram;
                            }
                            r.seconds.cka += t.elapsed().as_secs_f64();
                            r
                        });
                        if let Ok(r) = &result {
                            let i = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            eprintln!(
                                "[{}/{total}] epoch {epoch} {layer}: k={} clusters={} purity={:.3} knn={:.3} probe={:.3} ({:.1} s)",
                                i + 1,
                                r.k,
                                r.agreement.n_clusters,
                                r.agreement.purity_with_noise,
                                r.knn_agreement,
                                r.probe_acc,
                                started.elapsed().as_secs_f64()
                            );
                        }
                        let failed = result.is_err();
                        if let Ok(mut out) = results.lock() {
                            out.push(((ei, li), result));
                        }
                        if failed {
                            // The run fails with this error: the other workers stop too.
                            abort.store(true, std::sync::atomic::Ordering::Relaxed);
                            break;
                        }
                    }
                    if abort.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    // The final epoch's own comparison with the epoch before it, now known.
                    if let (Some(a), Some(b)) = (&final_gram, &prev_gram)
                        && let Ok(mut out) = results.lock()
                        && let Some((_, Ok(r))) =
                            out.iter_mut().find(|((e, l), _)| *e == snaps.len() - 1 && *l == li)
                    {
                        let t = Instant::now();
                        r.cka_vs_prev = Some(linear_cka(a, b, hsic).unwrap_or(f64::NAN));
                        r.seconds.cka += t.elapsed().as_secs_f64();
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    // Epoch-major, layers in the order asked.
    results.sort_by_key(|(key, _)| *key);
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
    let rows: Vec<serde_json::Value> = reports.iter().map(summary_row).collect();
    let json = serde_json::to_vec_pretty(&rows).expect("rows serialise");
    write_atomic(&dir.join("summary.json"), &json)?;
    write_atomic(&dir.join("summary.csv"), csv(reports).as_bytes())?;

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
    let mut epochs: Vec<usize> = reports.iter().map(|r| r.epoch.unwrap_or(0)).collect();
    epochs.sort_unstable();
    epochs.dedup();
    let row_labels: Vec<String> = layers.iter().map(|l| l.to_string()).collect();
    let col_labels: Vec<String> = epochs.iter().map(|e| format!("epoch {e}")).collect();
    for (figure, range) in HEATMAPS {
        let values: Vec<Vec<f64>> = layers
            .iter()
            .map(|&l| {
                epochs
                    .iter()
                    .map(|&e| {
                        reports
                            .iter()
                            .find(|r| r.layer == l && r.epoch.unwrap_or(0) == e)
                            .and_then(|r| r.figures().get(figure).copied())
                            .unwrap_or(f64::NAN)
                    })
                    .collect()
            })
            .collect();
        plot::heatmap(
            &plots.join(format!("heatmap-{figure}.png")),
            &format!("{figure}: layer × epoch"),
            &row_labels,
            &col_labels,
            &values,
            range,
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
        }
    }
    Ok(())
}

fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned())
}

/// The summary as CSV, one row per (epoch, layer): every figure but the per-sample lists and
/// the singular values.
pub fn csv(reports: &[LayerReport]) -> String {
    let mut out = String::from(
        "epoch,layer,n,d_total,d_kept,k,k_used,energy_at_k,n_clusters,noise_frac,purity_with_noise,purity_without_noise,homogeneity,completeness,v_measure,ari,nmi,knn_agreement,silhouette_true,cka_vs_final,cka_vs_prev,subspace_cos_mean,nc1,probe_acc,seconds_svd,seconds_dynamics,seconds_cka,seconds_total\n",
    );
    for r in reports {
        let s = &r.seconds;
        let purity_wo = r
            .agreement
            .purity_without_noise
            .map_or(String::new(), |v| format!("{v}"));
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v}"));
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{purity_wo},{},{},{},{},{},{},{},{},{},{},{},{},{:.3},{:.3},{:.3},{:.3}\n",
            r.epoch.unwrap_or(0),
            r.layer,
            r.n,
            r.d_total,
            r.d_kept,
            r.k,
            r.k_used,
            r.energy_at_k,
            r.agreement.n_clusters,
            r.agreement.noise_frac,
            r.agreement.purity_with_noise,
            r.agreement.homogeneity,
            r.agreement.completeness,
            r.agreement.v_measure,
            r.agreement.ari,
            r.agreement.nmi,
            r.knn_agreement,
            r.silhouette_true,
            opt(r.cka_vs_final),
            opt(r.cka_vs_prev),
            r.subspace_cos_mean,
            r.nc1,
            r.probe_acc,
            s.svd,
            s.dynamics,
            s.cka,
            s.load + s.filter + s.svd + s.cluster + s.metrics + s.tsne + s.dynamics + s.cka,
        ));
    }
    out
}
