//! Several analysed runs of one setup (seeds) summarised: per (layer, sample) the mean, standard
//! deviation and 95% Student-t interval of every figure, written to `aggregate.csv`/`.json` with
//! band plots, and the paired change of each early-layer measure from step 0 with its interval:
//! the figures that say whether training changed a representation by more than seed-to-seed
//! noise.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use cnnu_run::{ConfigViewError, RunConfigView, RunDir, SampleName};

use crate::numerics::dynamics::{CONVERGED_CKA, spearman};
use crate::reporting::figures::{self, Figure};
use crate::reporting::plot::{self, PlotError};

impl From<PlotError> for AggregateError {
    fn from(e: PlotError) -> Self {
        AggregateError::Summary(SummaryError::Plot(e))
    }
}

/// An I/O error at `path`.
fn io_error(path: &Path, source: std::io::Error) -> AggregateError {
    AggregateError::Summary(io(path)(source))
}
use crate::reporting::report::EarlyLayers;
use crate::reporting::summary::{
    self, CsvColumns, MissingColumn, SUMMARY_CSV, SampleAxis, SummaryError, columns,
    convergence_plot, io,
};

/// Errors of an aggregation.
#[derive(Debug, thiserror::Error)]
pub enum AggregateError {
    /// Fewer than one run given.
    #[error("aggregate needs at least one analysed run")]
    NoRuns,
    /// A run has not been analysed.
    #[error("{0}: no analysis/summary.csv (run `cnnu analyze {0}` first)")]
    NotAnalysed(PathBuf),
    /// A file that does not parse.
    #[error("{path}: {problem}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A run's summary lacks a column the aggregate needs.
    #[error("{path}: {source}")]
    MissingColumn {
        /// The summary.
        path: PathBuf,
        /// The column.
        #[source]
        source: MissingColumn,
    },
    /// The runs are not of one setup.
    #[error("{a} and {b} differ in {what}: {va} vs {vb}; only runs of one setup (seeds) aggregate")]
    Differ {
        /// The first run.
        a: PathBuf,
        /// The other run.
        b: PathBuf,
        /// The setting.
        what: String,
        /// Its value in the first.
        va: String,
        /// Its value in the other.
        vb: String,
    },
    /// A run's `config.json` is missing or not a run configuration.
    #[error(transparent)]
    Config(#[from] ConfigViewError),
    /// Reading, writing or drawing failed.
    #[error(transparent)]
    Summary(#[from] SummaryError),
}

/// The two-sided 95% quantile of Student's t with 1..=30 degrees of freedom.
const T975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// t(0.975, df); beyond 30 the normal quantile with Cornish–Fisher's first correction, which is
/// within 0.001 of the exact value there.
pub fn t_quantile_975(df: usize) -> f64 {
    match df {
        0 => f64::NAN,
        1..=30 => T975[df - 1],
        _ => {
            let z = 1.959_964;
            z + (z * z * z + z) / (4.0 * df as f64)
        }
    }
}

/// Mean, sample standard deviation and 95% t-interval of some values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Values that went in (NaNs left out).
    pub n: usize,
    /// Their mean.
    pub mean: f64,
    /// Their standard deviation (n − 1 in the denominator; NaN for one value).
    pub std: f64,
    /// mean − t·std/√n.
    pub low: f64,
    /// mean + t·std/√n.
    pub high: f64,
}

impl Interval {
    /// The interval of the finite values of `v`.
    pub fn of(v: impl IntoIterator<Item = f64>) -> Self {
        let v: Vec<f64> = v.into_iter().filter(|x| x.is_finite()).collect();
        let n = v.len();
        let mean = if n == 0 {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / n as f64
        };
        let std = if n < 2 {
            f64::NAN
        } else {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        };
        let half = t_quantile_975(n.saturating_sub(1)) * std / (n as f64).sqrt();
        Self {
            n,
            mean,
            std,
            low: mean - half,
            high: mean + half,
        }
    }

    /// The interval clipped to the range `bounds` the quantity can take (None: unchanged).
    ///
    /// The t-interval is symmetric about the mean and knows nothing of a bounded measure: with
    /// few seeds and a mean near 1 it reaches above 1. The mean itself lies inside the range,
    /// so intersecting the interval with the range keeps every value it can take and loses no
    /// coverage (an interval that held the mean still holds it); the mean and std are untouched.
    /// A logit-scale interval was not chosen: it fails at the bounds themselves (a noise share
    /// of exactly 1, a purity of 1), which these measures reach.
    pub fn within(self, bounds: Option<(f64, f64)>) -> Self {
        let Some((lo, hi)) = bounds else { return self };
        let clip = |v: f64| if v.is_nan() { v } else { v.clamp(lo, hi) };
        Self {
            low: clip(self.low),
            high: clip(self.high),
            ..self
        }
    }

    /// Whether the interval lies wholly above or below zero.
    pub fn excludes_zero(&self) -> bool {
        self.low > 0.0 || self.high < 0.0
    }
}

/// One run's `summary.csv`, by (layer, sample).
#[derive(Debug, Clone)]
struct RunTable {
    dir: PathBuf,
    /// (layer, sample) → (step, epoch, figure name → value).
    rows: BTreeMap<(String, SampleName), Row>,
    layers: Vec<String>,
}

#[derive(Debug, Clone)]
struct Row {
    step: Option<u64>,
    epoch: usize,
    values: BTreeMap<String, f64>,
}

fn read_table(run: &Path) -> Result<RunTable, AggregateError> {
    let path = RunDir::new(run).analysis_dir().join(SUMMARY_CSV);
    let text = fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => AggregateError::NotAnalysed(run.to_path_buf()),
        _ => io_error(&path, e),
    })?;
    let corrupt = |problem: String| AggregateError::Corrupt {
        path: path.clone(),
        problem,
    };
    let mut lines = text.lines();
    let header = CsvColumns::parse(lines.next().unwrap_or_default());
    let required = |name| {
        header
            .require(name)
            .map_err(|source| AggregateError::MissingColumn {
                path: path.clone(),
                source,
            })
    };
    let (c_layer, c_epoch) = (required(columns::LAYER)?, required(columns::EPOCH)?);
    // Summaries from before step sampling have neither.
    let (c_step, c_sample) = (header.find(columns::STEP), header.find(columns::SAMPLE));
    // Summaries from before a figure was added lack its column: no value there.
    let c_figures: Vec<(&str, usize)> = figures::aggregated()
        .filter_map(|f| Some((f.name, header.find(f.name)?)))
        .collect();
    let mut table = RunTable {
        dir: run.to_path_buf(),
        rows: BTreeMap::new(),
        layers: Vec::new(),
    };
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != header.len() {
            return Err(corrupt(format!("line {}: {} cells", i + 2, cells.len())));
        }
        let epoch: usize = cells[c_epoch]
            .parse()
            .map_err(|_| corrupt(format!("line {}: epoch {:?}", i + 2, cells[c_epoch])))?;
        let step = c_step.and_then(|c| cells[c].parse().ok());
        // Summaries from before step sampling name no sample: their rows are epoch samples.
        let sample = c_sample
            .and_then(|c| SampleName::from_stem(cells[c]))
            .unwrap_or(SampleName::Epoch(epoch));
        let layer = cells[c_layer].to_string();
        let values = c_figures
            .iter()
            .filter_map(|&(name, c)| Some((name.to_string(), cells[c].parse::<f64>().ok()?)))
            .collect();
        if !table.layers.contains(&layer) {
            table.layers.push(layer.clone());
        }
        table.rows.insert(
            (layer, sample),
            Row {
                step,
                epoch,
                values,
            },
        );
    }
    Ok(table)
}

/// The settings that make runs one setup, from `config.json` (the seed is left out on purpose),
/// each as its JSON text ("default" where the run's config does not record it).
fn setup(run: &Path) -> Result<Vec<(&'static str, String)>, AggregateError> {
    // A folder of activations from elsewhere records no setup: its samples and layers, checked
    // below, are all there is to compare.
    if summary::is_foreign_folder(run) {
        return Ok(vec![("kind", "a folder of activation files".into())]);
    }
    let t = RunConfigView::read(&RunDir::new(run))?.train;
    fn shown<T: serde::Serialize>(v: &Option<T>) -> String {
        v.as_ref().map_or("default".into(), |v| {
            serde_json::to_string(v).expect("the view serialises")
        })
    }
    Ok(vec![
        ("kind", "a cnnu run".into()),
        ("dataset", shown(&t.dataset)),
        ("model", shown(&t.model)),
        ("probe_limit", shown(&t.probe_limit)),
        ("taps", shown(&t.taps)),
        ("sample_at", shown(&t.sample_at)),
        ("train_limit", shown(&t.train_limit)),
        ("batch_size", shown(&t.batch_size)),
    ])
}

/// Refuses runs of different setups, saying what differs.
fn check_same_setup(tables: &[RunTable]) -> Result<(), AggregateError> {
    let first = &tables[0];
    let s0 = setup(&first.dir)?;
    for t in &tables[1..] {
        let differ = |what: String, va: String, vb: String| AggregateError::Differ {
            a: first.dir.clone(),
            b: t.dir.clone(),
            what,
            va,
            vb,
        };
        for ((k, a), (_, b)) in s0.iter().zip(setup(&t.dir)?) {
            if *a != b {
                return Err(differ((*k).to_string(), a.clone(), b));
            }
        }
        let keys = |t: &RunTable| t.rows.keys().map(|(_, s)| s.stem()).collect::<Vec<_>>();
        let (ka, kb) = (dedup(keys(first)), dedup(keys(t)));
        if ka != kb {
            return Err(differ("samples".into(), ka.join(" "), kb.join(" ")));
        }
        if first.layers != t.layers {
            return Err(differ(
                "analysed layers".into(),
                first.layers.join(","),
                t.layers.join(","),
            ));
        }
    }
    Ok(())
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

/// One (layer, sample) over the runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AggregateRow {
    /// The layer.
    pub layer: String,
    /// The sample's stem (`epoch-001`, `step-0000040`).
    pub sample: String,
    /// Optimizer steps done (none for runs from before step sampling).
    pub step: Option<u64>,
    /// Whole epochs completed.
    pub epoch: usize,
    /// Runs with this row.
    pub n_runs: usize,
    /// Figure name → its interval over the runs.
    #[serde(skip)]
    pub figures: BTreeMap<String, Interval>,
}

/// Several runs summarised.
#[derive(Debug, Clone)]
pub struct Aggregate {
    /// The runs.
    pub runs: Vec<PathBuf>,
    /// The layers in analysis order.
    pub layers: Vec<String>,
    /// One row per (layer, sample), samples in training order.
    pub rows: Vec<AggregateRow>,
    /// Per early-layer measure: the paired change from the first sample to each later one,
    /// averaged over the early layers within each run, then over runs.
    pub early_changes: Vec<EarlyChange>,
    /// The analysed layers that are early, in analysis order.
    pub early_layers: Vec<String>,
    /// Bottom-up convergence over the runs.
    pub convergence: Convergence,
}

/// When each layer reaches its final representation, over runs (Raghu et al. 2017, Fig. 4).
#[derive(Debug, Clone, PartialEq)]
pub struct Convergence {
    /// Per layer in depth order: its converged step (summary.csv's `converged_step`) over runs.
    pub by_layer: Vec<(String, Interval)>,
    /// Spearman's rank correlation of depth and converged step within each run, over runs:
    /// positive when deeper layers converge later (bottom-up).
    pub rank_correlation: Interval,
}

impl Convergence {
    fn of(tables: &[RunTable], layers: &[String]) -> Self {
        // A layer's converged step is on every one of its rows; the first found is read.
        let step = |t: &RunTable, l: &String| {
            t.rows
                .iter()
                .find(|((layer, _), _)| layer == l)
                .and_then(|(_, row)| row.values.get("converged_step").copied())
                .filter(|v| v.is_finite())
        };
        // No layer converges after the last sample.
        let last = (tables.iter())
            .flat_map(|t| t.rows.values().filter_map(|r| r.step))
            .max()
            .map_or(f64::INFINITY, |s| s as f64);
        let by_layer = layers
            .iter()
            .map(|l| {
                let v = tables.iter().filter_map(|t| step(t, l));
                (l.clone(), Interval::of(v).within(Some((0.0, last))))
            })
            .collect();
        let per_run = tables.iter().map(|t| {
            let (depth, steps): (Vec<f64>, Vec<f64>) = layers
                .iter()
                .enumerate()
                .filter_map(|(d, l)| Some(((d + 1) as f64, step(t, l)?)))
                .unzip();
            spearman(&depth, &steps)
        });
        Self {
            by_layer,
            rank_correlation: Interval::of(per_run).within(Some((-1.0, 1.0))),
        }
    }
}

/// The change of one measure in the early layers, from the first sample, over the runs.
#[derive(Debug, Clone, PartialEq)]
pub struct EarlyChange {
    /// The figure.
    pub figure: &'static str,
    /// (sample, its step, the interval of the per-run change from the first sample).
    pub by_sample: Vec<(SampleName, Option<u64>, Interval)>,
}

impl EarlyChange {
    /// The change at the last sample.
    pub fn at_end(&self) -> Option<&Interval> {
        self.by_sample.last().map(|(_, _, i)| i)
    }

    /// The first sample from which on the interval excludes zero at every later sample.
    pub fn settled_from(&self) -> Option<(SampleName, Option<u64>)> {
        let mut from = None;
        for (s, step, i) in &self.by_sample {
            match (i.excludes_zero(), from) {
                (true, None) => from = Some((*s, *step)),
                (false, _) => from = None,
                _ => {}
            }
        }
        from
    }
}

/// The measures the answer reads in the early layers.
pub const EARLY_MEASURES: [&str; 6] = [
    "knn_agreement",
    "silhouette_true",
    "subspace_cos_mean",
    "purity_with_noise",
    "nc1",
    "probe_acc",
];

/// Reads and summarises analysed runs of one setup; `early` are the layers the early-layer
/// changes average over (the runs' model's early taps, see [`EarlyLayers`]).
pub fn aggregate(runs: &[PathBuf], early: &EarlyLayers) -> Result<Aggregate, AggregateError> {
    if runs.is_empty() {
        return Err(AggregateError::NoRuns);
    }
    let tables = runs
        .iter()
        .map(|r| read_table(r))
        .collect::<Result<Vec<_>, _>>()?;
    check_same_setup(&tables)?;
    let first = &tables[0];
    let mut samples: Vec<(SampleName, Option<u64>, usize)> = first
        .rows
        .iter()
        .map(|((_, s), r)| (*s, r.step, r.epoch))
        .collect();
    samples.sort_by_key(|&(s, step, epoch)| {
        (epoch, step.unwrap_or(0), matches!(s, SampleName::Epoch(_)))
    });
    samples.dedup();
    let mut rows = Vec::new();
    for &(sample, step, epoch) in &samples {
        for layer in &first.layers {
            let key = (layer.clone(), sample);
            let found: Vec<&Row> = tables.iter().filter_map(|t| t.rows.get(&key)).collect();
            let figures = figures::aggregated()
                .map(|f| {
                    let v = found.iter().filter_map(|r| r.values.get(f.name).copied());
                    (f.name.to_string(), Interval::of(v).within(f.bounds))
                })
                .collect();
            rows.push(AggregateRow {
                layer: layer.clone(),
                sample: sample.stem(),
                step,
                epoch,
                n_runs: found.len(),
                figures,
            });
        }
    }
    let early_changes = EARLY_MEASURES
        .iter()
        .filter_map(|&name| figures::figure(name))
        .map(|f| early_change(&tables, &samples, early, f))
        .collect();
    Ok(Aggregate {
        runs: runs.to_vec(),
        layers: first.layers.clone(),
        rows,
        early_changes,
        early_layers: first
            .layers
            .iter()
            .filter(|l| early.contains(l))
            .cloned()
            .collect(),
        convergence: Convergence::of(&tables, &first.layers),
    })
}

/// Per run, the early layers' mean of `f` at each sample minus at the first; over runs.
fn early_change(
    tables: &[RunTable],
    samples: &[(SampleName, Option<u64>, usize)],
    early: &EarlyLayers,
    f: &Figure,
) -> EarlyChange {
    let early_mean = |t: &RunTable, s: SampleName| -> f64 {
        let v: Vec<f64> = t
            .layers
            .iter()
            .filter(|l| early.contains(l))
            .filter_map(|l| t.rows.get(&(l.clone(), s))?.values.get(f.name).copied())
            .filter(|v| v.is_finite())
            .collect();
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let Some(&(s0, _, _)) = samples.first() else {
        return EarlyChange {
            figure: f.name,
            by_sample: Vec::new(),
        };
    };
    let by_sample = samples[1..]
        .iter()
        .map(|&(s, step, _)| {
            let deltas = tables.iter().map(|t| early_mean(t, s) - early_mean(t, s0));
            (s, step, Interval::of(deltas).within(f.change_bounds()))
        })
        .collect();
    EarlyChange {
        figure: f.name,
        by_sample,
    }
}

fn cell(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        String::new()
    }
}

/// `aggregate.csv`: per (layer, sample) `n_runs` and, for every figure F, `F_mean`, `F_std`,
/// `F_ci_low`, `F_ci_high`.
pub fn csv(agg: &Aggregate) -> String {
    let mut out = [
        columns::LAYER,
        columns::SAMPLE,
        columns::STEP,
        columns::EPOCH,
        "n_runs",
    ]
    .join(",");
    for f in figures::aggregated() {
        for s in ["mean", "std", "ci_low", "ci_high"] {
            out.push_str(&format!(",{}_{s}", f.name));
        }
    }
    out.push('\n');
    for r in &agg.rows {
        out.push_str(&format!(
            "{},{},{},{},{}",
            r.layer,
            r.sample,
            r.step.map_or(String::new(), |s| s.to_string()),
            r.epoch,
            r.n_runs
        ));
        for f in figures::aggregated() {
            let i = r.figures[f.name];
            for v in [i.mean, i.std, i.low, i.high] {
                out.push(',');
                out.push_str(&cell(v));
            }
        }
        out.push('\n');
    }
    out
}

/// The rows as JSON objects with the same keys as the CSV (NaN as null).
pub fn json(agg: &Aggregate) -> serde_json::Value {
    let num = |v: f64| {
        serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number)
    };
    let rows = agg
        .rows
        .iter()
        .map(|r| {
            let mut o = serde_json::to_value(r).expect("rows serialise");
            let obj = o.as_object_mut().expect("an object");
            for (name, i) in &r.figures {
                obj.insert(format!("{name}_mean"), num(i.mean));
                obj.insert(format!("{name}_std"), num(i.std));
                obj.insert(format!("{name}_ci_low"), num(i.low));
                obj.insert(format!("{name}_ci_high"), num(i.high));
            }
            o
        })
        .collect();
    let interval = |i: &Interval| {
        serde_json::json!({
            "n": i.n, "mean": num(i.mean), "std": num(i.std), "ci_low": num(i.low), "ci_high": num(i.high)
        })
    };
    let c = &agg.convergence;
    let layers: Vec<serde_json::Value> = c
        .by_layer
        .iter()
        .map(|(l, i)| serde_json::json!({ "layer": l, "converged_step": interval(i) }))
        .collect();
    serde_json::json!({
        "runs": agg.runs,
        "interval": "95% Student t over runs: mean ± t(0.975, n−1)·std/√n",
        "rows": serde_json::Value::Array(rows),
        "convergence": {
            "threshold": CONVERGED_CKA,
            "layers": layers,
            "rank_correlation_depth_step": interval(&c.rank_correlation),
        },
    })
}

/// The axis of the aggregate's samples, as a run's summary draws it: steps when every row has
/// one, logarithmic when some are inside epochs.
fn axis(agg: &Aggregate) -> SampleAxis {
    let by_step = agg.rows.iter().all(|r| r.step.is_some());
    SampleAxis {
        by_step,
        log: by_step && agg.rows.iter().any(|r| r.sample.starts_with("step-")),
    }
}

/// Writes `aggregate.csv`, `aggregate.json` and `plots/F.png` (one line per layer, its 95%
/// band shaded) into `dir`.
pub fn write_aggregate(dir: &Path, agg: &Aggregate) -> Result<(), AggregateError> {
    let plots = dir.join("plots");
    fs::create_dir_all(&plots).map_err(|e| io_error(&plots, e))?;
    let write = |name: &str, bytes: &[u8]| {
        cnnu_run::atomic::write_atomic(&dir.join(name), bytes)
            .map_err(|e| io_error(&dir.join(name), e))
    };
    write("aggregate.csv", csv(agg).as_bytes())?;
    let json = serde_json::to_vec_pretty(&json(agg)).expect("serialisable");
    write("aggregate.json", &json)?;
    let axis = axis(agg);
    // The network's own accuracy on the probe images: one figure per sample, read off the
    // first layer's rows (every layer's row holds the same).
    if let Some(first) = agg.layers.first() {
        let pts: Vec<(f64, f64, f64, f64)> = agg
            .rows
            .iter()
            .filter(|r| &r.layer == first)
            .filter_map(|r| {
                let i = r.figures.get("accuracy")?;
                let x = if axis.by_step {
                    r.step.unwrap_or(0) as f64
                } else {
                    r.epoch as f64
                };
                let (lo, hi) = if i.low.is_finite() {
                    (i.low, i.high)
                } else {
                    (i.mean, i.mean)
                };
                i.mean.is_finite().then_some((x, i.mean, lo, hi))
            })
            .collect();
        if !pts.is_empty() {
            plot::lines_with_bands(
                &plots.join("accuracy.png"),
                &format!(
                    "network accuracy on the probe images over {} runs, 95% t-interval",
                    agg.runs.len()
                ),
                axis.title(),
                "accuracy",
                &[("network".to_string(), pts)],
                axis.axes(),
            )?;
        }
    }
    write_convergence_plot(&plots, agg)?;
    for f in figures::plotted() {
        let series: Vec<plot::Band> = agg
            .layers
            .iter()
            .map(|l| {
                let pts = agg
                    .rows
                    .iter()
                    .filter(|r| &r.layer == l)
                    .map(|r| {
                        let x = if axis.by_step {
                            r.step.unwrap_or(0) as f64
                        } else {
                            r.epoch as f64
                        };
                        let i = r.figures[f.name];
                        let (lo, hi) = if i.low.is_finite() {
                            (i.low, i.high)
                        } else {
                            (i.mean, i.mean)
                        };
                        (x, i.mean, lo, hi)
                    })
                    .collect();
                (l.clone(), pts)
            })
            .collect();
        plot::lines_with_bands(
            &plots.join(format!("{}.png", f.name)),
            &format!(
                "{} over {} runs, 95% t-interval",
                f.human_title(),
                agg.runs.len()
            ),
            axis.title(),
            f.name,
            &series,
            axis.axes(),
        )?;
    }
    Ok(())
}

/// `plots/converged-step.png`: each layer's mean converged step over runs with its interval,
/// against depth.
fn write_convergence_plot(plots: &Path, agg: &Aggregate) -> Result<(), AggregateError> {
    let points: Vec<(usize, String, [f64; 3])> = (agg.convergence.by_layer.iter())
        .enumerate()
        .filter(|(_, (_, i))| i.mean.is_finite())
        .map(|(d, (l, i))| {
            let band = match i.low.is_finite() {
                true => [i.mean, i.low, i.high],
                false => [i.mean; 3],
            };
            (d + 1, l.clone(), band)
        })
        .collect();
    let over = format!(" over {} runs, 95% t-interval", agg.runs.len());
    Ok(convergence_plot(plots, &over, &points)?)
}

/// Whether convergence was bottom-up over the runs, in words, with the converged step of each
/// layer; None when no layer has one.
pub fn convergence_answer(agg: &Aggregate) -> Option<String> {
    let c = &agg.convergence;
    let steps: Vec<String> = c
        .by_layer
        .iter()
        .filter(|(_, i)| i.mean.is_finite())
        .map(|(l, i)| match i.low.is_finite() {
            true => format!("{l} {:.0} [{:.0}, {:.0}]", i.mean, i.low, i.high),
            false => format!("{l} {:.0}", i.mean),
        })
        .collect();
    if steps.is_empty() {
        return None;
    }
    let r = &c.rank_correlation;
    let verdict = if !r.mean.is_finite() {
        "the rank correlation of depth and converged step is undefined (no spread in one of them)"
            .to_string()
    } else {
        let ci = match r.low.is_finite() {
            true => format!(" (95% CI {:+.2} … {:+.2} over {} runs)", r.low, r.high, r.n),
            false => String::new(),
        };
        let reading = if r.low > 0.0 {
            "convergence is bottom-up: deeper layers reach their final representation later"
        } else if r.high < 0.0 {
            "convergence is top-down here: deeper layers reach their final representation earlier"
        } else if r.mean > 0.0 {
            "deeper layers tend to converge later, but the interval includes 0: bottom-up convergence is not established"
        } else {
            "no bottom-up order: the interval includes 0"
        };
        format!(
            "Spearman's rank correlation of depth and converged step is {:+.2}{ci}: {reading}",
            r.mean
        )
    };
    Some(format!(
        "**Bottom-up convergence** (Raghu et al. 2017, SVCCA, Fig. 4: lower layers reach their final \
         representation earlier). A layer's converged step is the first sample step from which its linear CKA to \
         the final sample stays at or above {CONVERGED_CKA}; mean [95% interval] over runs: {}. {verdict}.",
        steps.join(", ")
    ))
}

/// The seed project's own question first: did training raise the purity of the early layers'
/// HDBSCAN clusters? Answered from the purity change over seeds, or, where HDBSCAN found no
/// early-layer clusters at all, with that reason and the measures that answer instead.
pub fn purity_answer(agg: &Aggregate) -> String {
    let q = "**Did training raise the purity of early-layer HDBSCAN clusters?**";
    if agg.early_layers.is_empty() {
        return format!("{q} No early layer was analysed, so it cannot be answered.");
    }
    let clusters: Vec<f64> = agg
        .rows
        .iter()
        .filter(|r| agg.early_layers.contains(&r.layer))
        .filter_map(|r| r.figures.get("n_clusters").map(|i| i.mean))
        .filter(|v| v.is_finite())
        .collect();
    if !clusters.is_empty() && clusters.iter().all(|&c| c == 0.0) {
        return format!(
            "{q} It cannot be answered from these runs: HDBSCAN found no clusters in the early layers ({}) at any \
             sample of any seed — every point is noise, so purity is just the largest class share and cannot \
             move. The clustering-free measures in the table answer instead: kNN label agreement and the \
             silhouette of the true labels say whether the classes separate, the linear probe whether they \
             are linearly decodable.",
            agg.early_layers.join(", ")
        );
    }
    let purity = agg
        .early_changes
        .iter()
        .find(|c| c.figure == "purity_with_noise")
        .and_then(|c| c.at_end());
    match purity {
        Some(i) if i.mean.is_finite() && i.low.is_finite() => {
            let verdict = if i.low > 0.0 {
                "yes, by more than seed-to-seed noise"
            } else if i.high < 0.0 {
                "no, it fell by more than seed-to-seed noise"
            } else {
                "not distinguishably: the change is within seed-to-seed noise"
            };
            format!(
                "{q} {}: purity changed by {:+.3} (95% CI {:+.3} … {:+.3}) from the first sample to the last.",
                capitalise(verdict),
                i.mean,
                i.low,
                i.high
            )
        }
        Some(i) if i.mean.is_finite() => format!(
            "{q} Purity changed by {:+.3} in the one seed; an interval over seeds needs at least two.",
            i.mean
        ),
        _ => format!("{q} No purity was measured, so it cannot be answered."),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map_or(String::new(), |f| {
        f.to_uppercase().collect::<String>() + c.as_str()
    })
}

/// The answer to the research question over seeds in one or two plain sentences: which
/// early-layer measures changed by more than seed-to-seed noise, and from when.
pub fn answer(agg: &Aggregate) -> String {
    let n = agg.runs.len();
    if n < 2 {
        return "One run: an interval over seeds needs at least two.".into();
    }
    let title = |c: &EarlyChange| figures::figure(c.figure).map_or(c.figure, |f| f.human_title());
    let measured: Vec<&EarlyChange> = agg
        .early_changes
        .iter()
        .filter(|c| c.at_end().is_some_and(|e| e.mean.is_finite()))
        .collect();
    if measured.is_empty() {
        return "No early layers were analysed, so the question cannot be answered.".into();
    }
    let (moved, still): (Vec<&EarlyChange>, Vec<&EarlyChange>) = measured
        .iter()
        .partition(|c| c.at_end().is_some_and(|e| e.excludes_zero()));
    let names = |cs: &[&EarlyChange]| cs.iter().map(|c| title(c)).collect::<Vec<_>>().join(", ");
    let mut text = format!(
        "Over {n} seeds, {} of the {} early-layer measures changed from the first sample to the last by more \
         than seed-to-seed noise",
        moved.len(),
        measured.len()
    );
    if moved.is_empty() {
        text.push('.');
    } else {
        let earliest = moved
            .iter()
            .filter_map(|c| c.settled_from())
            .min_by_key(|(_, step)| step.unwrap_or(u64::MAX));
        text.push_str(&format!(": {}", names(&moved)));
        if let Some((s, step)) = earliest {
            let at = step.map_or(s.label(), |st| format!("step {st}"));
            text.push_str(&format!(
                "; the earliest stays outside its interval from {at} on"
            ));
        }
        text.push('.');
    }
    if !still.is_empty() {
        text.push_str(&format!(" Within seed noise: {}.", names(&still)));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_matches_a_hand_worked_example() {
        // 1, 2, 3, 6: mean 3, squared deviations 4+1+0+9 = 14, var 14/3, std 2.1602;
        // half-width t(0.975, 3) · std / 2 = 3.182 · 2.1602 / 2 = 3.4369.
        let i = Interval::of([1.0, 2.0, 3.0, 6.0, f64::NAN]);
        assert_eq!(i.n, 4);
        assert!((i.mean - 3.0).abs() < 1e-12);
        assert!((i.std - (14.0f64 / 3.0).sqrt()).abs() < 1e-12);
        let half = 3.182 * (14.0f64 / 3.0).sqrt() / 2.0;
        assert!((i.high - (3.0 + half)).abs() < 1e-12 && (i.low - (3.0 - half)).abs() < 1e-12);
        assert!((half - 3.4369).abs() < 1e-4);
        assert!(!i.excludes_zero());
        let one = Interval::of([0.5]);
        assert!(one.std.is_nan() && one.low.is_nan() && one.mean == 0.5);
        // Large df: the exact t(0.975, 60) is 2.0003, t(0.975, 120) is 1.9799.
        assert!((t_quantile_975(60) - 2.0003).abs() < 1e-3);
        assert!((t_quantile_975(120) - 1.9799).abs() < 1e-3);
    }

    #[test]
    fn an_interval_of_a_fraction_is_clipped_to_its_range() {
        // 0.9, 1.0, 1.0: mean 0.96667, std 0.057735, half-width t(0.975, 2) · std / √3 =
        // 4.303 · 0.057735 / 1.73205 = 0.14343: [0.82324, 1.11010] before clipping.
        let raw = Interval::of([0.9, 1.0, 1.0]);
        let half = 4.303 * (0.01f64 / 3.0).sqrt() / 3f64.sqrt();
        assert!((half - 0.14343).abs() < 1e-5);
        assert!((raw.high - (0.96667 + 0.14343)).abs() < 1e-4 && raw.high > 1.0);
        let noise = figures::figure("noise_frac").unwrap();
        let i = raw.within(noise.bounds);
        assert_eq!(i.high, 1.0, "clipped at the top of [0, 1]");
        assert_eq!(
            (i.low, i.mean, i.std, i.n),
            (raw.low, raw.mean, raw.std, raw.n)
        );
        // Near 0 the low end is clipped, and a change of a fraction stays in [−1, 1].
        let low = Interval::of([0.0, 0.0, 0.1]).within(noise.bounds);
        assert_eq!(low.low, 0.0);
        assert_eq!(noise.change_bounds(), Some((-1.0, 1.0)));
        // An unbounded figure keeps its interval; a single value's NaN ends stay NaN.
        assert_eq!(raw.within(None), raw);
        assert!(Interval::of([0.5]).within(noise.bounds).low.is_nan());
        // Every [0, 1] figure is declared so, the network's accuracy included.
        for name in [
            "purity_with_noise",
            "cka_vs_final",
            "probe_acc",
            "accuracy",
            "knn_agreement",
        ] {
            assert_eq!(
                figures::figure(name).unwrap().bounds,
                Some((0.0, 1.0)),
                "{name}"
            );
        }
    }

    fn fake_run(dir: &Path, seed: u64, knn: [f64; 3], taps: &str) -> PathBuf {
        let run = dir.join(format!("s{seed}"));
        fs::create_dir_all(run.join("analysis")).unwrap();
        let config = serde_json::json!({"train": {"seed": seed, "dataset": "Mnist", "taps": taps,
            "probe_limit": 500, "sample_at": {"Log": 3}}});
        fs::write(run.join("config.json"), config.to_string()).unwrap();
        let mut csv =
            String::from("epoch,step,sample,layer,knn_agreement,cka_vs_prev,seconds_svd\n");
        for (i, (sample, step, epoch)) in [
            ("epoch-000", 0, 0),
            ("step-0000010", 10, 0),
            ("epoch-001", 100, 1),
        ]
        .iter()
        .enumerate()
        {
            for (layer, off) in [("conv1", 0.0), ("layer4", 0.5)] {
                let prev = if i == 0 { String::new() } else { "0.9".into() };
                csv.push_str(&format!(
                    "{epoch},{step},{sample},{layer},{},{prev},1.5\n",
                    knn[i] + off
                ));
            }
        }
        fs::write(run.join("analysis/summary.csv"), csv).unwrap();
        run
    }

    #[test]
    fn three_runs_give_means_intervals_and_the_early_change() {
        let dir = tempfile::tempdir().unwrap();
        let runs = vec![
            fake_run(dir.path(), 0, [0.1, 0.2, 0.30], "conv1,layer4"),
            fake_run(dir.path(), 1, [0.1, 0.3, 0.40], "conv1,layer4"),
            fake_run(dir.path(), 2, [0.1, 0.4, 0.35], "conv1,layer4"),
        ];
        let agg = aggregate(&runs, &EarlyLayers::new(["conv1"])).unwrap();
        assert_eq!(agg.rows.len(), 6);
        let row = |layer: &str, sample: &str| {
            agg.rows
                .iter()
                .find(|r| r.layer == layer && r.sample == sample)
                .unwrap()
        };
        let r = row("conv1", "step-0000010");
        assert_eq!((r.n_runs, r.step, r.epoch), (3, Some(10), 0));
        // 0.2, 0.3, 0.4: mean 0.3, std 0.1, half-width 4.303 · 0.1 / √3.
        let i = r.figures["knn_agreement"];
        let half = 4.303 * 0.1 / 3f64.sqrt();
        assert!((i.mean - 0.3).abs() < 1e-12 && (i.std - 0.1).abs() < 1e-12);
        assert!((i.high - 0.3 - half).abs() < 1e-12);
        assert!(
            row("conv1", "epoch-000").figures["cka_vs_prev"]
                .mean
                .is_nan()
        );
        // Only conv1 is early: its change 0.2, 0.3, 0.25 at the end: CI 0.25 ± 4.303·0.05/√3,
        // above zero, and already at step 10 (0.1, 0.2, 0.3: 0.2 ± 0.248 is not).
        let c = agg
            .early_changes
            .iter()
            .find(|c| c.figure == "knn_agreement")
            .unwrap();
        let end = c.at_end().unwrap();
        assert!((end.mean - 0.25).abs() < 1e-12 && end.excludes_zero());
        assert_eq!(c.settled_from(), Some((SampleName::Epoch(1), Some(100))));
        assert!(!c.by_sample[0].2.excludes_zero());
        let text = answer(&agg);
        assert!(
            text.contains("1 of the 1 early-layer measures")
                && text.contains("kNN label agreement")
                && text.contains("from step 100 on"),
            "{text}"
        );
        assert_eq!(agg.early_layers, ["conv1"]);

        let out = dir.path().join("agg");
        write_aggregate(&out, &agg).unwrap();
        let csv = fs::read_to_string(out.join("aggregate.csv")).unwrap();
        let header = csv.lines().next().unwrap();
        assert!(header.starts_with("layer,sample,step,epoch,n_runs,"));
        assert!(header.contains(
            "knn_agreement_mean,knn_agreement_std,knn_agreement_ci_low,knn_agreement_ci_high"
        ));
        assert!(!header.contains("seconds"), "timings are not aggregated");
        assert!(out.join("plots/knn_agreement.png").is_file());
    }

    #[test]
    fn runs_of_different_setups_are_refused_with_what_differs() {
        let dir = tempfile::tempdir().unwrap();
        let a = fake_run(dir.path(), 0, [0.1, 0.2, 0.3], "conv1,layer4");
        let b = fake_run(dir.path(), 1, [0.1, 0.2, 0.3], "conv1,layer2");
        let e = aggregate(&[a, b], &EarlyLayers::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("taps") && e.contains("conv1,layer2"), "{e}");
        let c = dir.path().join("none");
        fs::create_dir_all(&c).unwrap();
        let e = aggregate(&[c], &EarlyLayers::default()).unwrap_err();
        assert!(matches!(e, AggregateError::NotAnalysed(_)), "{e}");
    }

    #[test]
    fn summary_columns_are_read_by_name_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let run = fake_run(dir.path(), 0, [0.1, 0.2, 0.3], "conv1,layer4");
        let want = read_table(&run).unwrap();
        // The same summary with its columns in another order reads the same.
        let path = run.join("analysis/summary.csv");
        let text = fs::read_to_string(&path).unwrap();
        let order = [6, 3, 5, 0, 4, 2, 1];
        let shuffled: String = text
            .lines()
            .map(|l| {
                let cells: Vec<&str> = l.split(',').collect();
                let row: Vec<&str> = order.iter().map(|&i| cells[i]).collect();
                row.join(",") + "\n"
            })
            .collect();
        assert!(shuffled.starts_with("seconds_svd,layer,"), "{shuffled}");
        fs::write(&path, shuffled).unwrap();
        let got = read_table(&run).unwrap();
        assert_eq!(got.layers, want.layers);
        assert_eq!(got.rows.len(), want.rows.len());
        for (key, row) in &want.rows {
            let other = &got.rows[key];
            assert_eq!((other.step, other.epoch), (row.step, row.epoch));
            assert_eq!(format!("{:?}", other.values), format!("{:?}", row.values));
        }
        // Without the layer column: an error that names it.
        let text = fs::read_to_string(&path)
            .unwrap()
            .replace(",layer,", ",stratum,");
        fs::write(&path, text).unwrap();
        let e = read_table(&run).unwrap_err();
        assert!(matches!(e, AggregateError::MissingColumn { .. }), "{e}");
        assert!(
            e.to_string().ends_with("summary.csv: no `layer` column"),
            "{e}"
        );
    }
}
