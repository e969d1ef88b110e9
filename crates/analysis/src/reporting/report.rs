//! The study's report: `report.html` (self-contained, every image a data URI) and `report.md`
//! (PNGs in a folder beside it), answering "did training raise the purity of early-layer
//! clusters?" from the numbers.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::reporting::explorer::{ExplorerData, explorer_html};
use crate::reporting::figures;
use crate::reporting::layer::LayerReport;
use crate::reporting::plot;
use crate::reporting::summary::{
    SampleAxis, SummaryError, io, layer_order, sample_name, sample_order, tsne_stem, write_atomic,
};
use cnnu_run::{RunDir, SampleName};

/// Test accuracy (and loss) of one epoch, from the run's `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochAccuracy {
    /// The epoch.
    pub epoch: usize,
    /// Test accuracy.
    pub test_accuracy: f64,
    /// Test loss.
    pub test_loss: f64,
    /// Mean training loss (none at epoch 0).
    pub train_loss: Option<f64>,
}

/// Reads the test accuracy per epoch from `RUN/metrics.jsonl` (missing file: none).
pub fn read_accuracy(run: &Path) -> Result<Vec<EpochAccuracy>, SummaryError> {
    let metrics = cnnu_run::read_metrics(&RunDir::new(run).metrics_path())?;
    Ok(metrics
        .into_iter()
        .map(|m| EpochAccuracy {
            epoch: m.epoch,
            test_accuracy: m.test_accuracy,
            test_loss: m.test_loss,
            train_loss: m.train_loss,
        })
        .collect())
}

/// The layers the research question calls early (the stem and the first residual stage),
/// by name.
///
/// Which taps those are is the network's to say: `cnnu_model::Catalogue::is_early`. This crate
/// does not depend on cnnu-model, and it needs nothing written into the run for it: every
/// run's `config.json` names its model, so the caller (the CLI, the study) builds that model's
/// catalogue and hands its early taps in here. That keeps the run format as it is (old runs
/// included) and leaves no tap name in the report; a layer not in the set (a MAT variable, the
/// `logits` tensor) is not early.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EarlyLayers(BTreeSet<String>);

impl EarlyLayers {
    /// These layer names.
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        Self(names.into_iter().map(Into::into).collect())
    }

    /// Whether `layer` is early.
    pub fn contains(&self, layer: &str) -> bool {
        self.0.contains(layer)
    }
}

/// One layer's change from the first to the last epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerChange {
    /// The layer.
    pub layer: String,
    /// First and last epoch.
    pub epochs: (usize, usize),
    /// Purity (noise as a cluster) at both.
    pub purity: (f64, f64),
    /// kNN agreement at both.
    pub knn: (f64, f64),
    /// Silhouette of the true labels at both.
    pub silhouette: (f64, f64),
    /// Clusters at both.
    pub clusters: (usize, usize),
    /// k at both.
    pub k: (usize, usize),
}

/// The first-to-last-epoch change of every layer, in report order.
pub fn changes(reports: &[LayerReport]) -> Vec<LayerChange> {
    let layers = layer_order(reports);
    layers
        .into_iter()
        .filter_map(|l| {
            let mut rs: Vec<&LayerReport> = reports.iter().filter(|r| r.layer == l).collect();
            rs.sort_by_key(|r| r.epoch.unwrap_or(0));
            let (a, b) = (rs.first()?, rs.last()?);
            Some(LayerChange {
                layer: l.to_string(),
                epochs: (a.epoch.unwrap_or(0), b.epoch.unwrap_or(0)),
                purity: (a.agreement.purity_with_noise, b.agreement.purity_with_noise),
                knn: (a.knn_agreement, b.knn_agreement),
                silhouette: (a.silhouette_true, b.silhouette_true),
                clusters: (a.agreement.n_clusters, b.agreement.n_clusters),
                k: (a.k, b.k),
            })
        })
        .collect()
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

/// The answer to the research question, computed from the numbers, in a few sentences.
pub fn answer(reports: &[LayerReport], early_layers: &EarlyLayers) -> String {
    let ch = changes(reports);
    if ch.is_empty() {
        return "No layers were analysed, so the question cannot be answered.".into();
    }
    let (first, last) = ch[0].epochs;
    if first == last {
        return format!(
            "Only epoch {first} was analysed: a change with training needs at least two epochs."
        );
    }
    let is_early = |c: &&LayerChange| early_layers.contains(&c.layer);
    let early: Vec<&LayerChange> = ch.iter().filter(is_early).collect();
    let deep: Vec<&LayerChange> = ch.iter().filter(|c| !is_early(c)).collect();
    let delta = |cs: &[&LayerChange], f: fn(&LayerChange) -> (f64, f64)| {
        mean(cs.iter().map(|c| f(c).1 - f(c).0))
    };
    let fmt = |d: Option<f64>| d.map_or("n/a".to_string(), |d| format!("{d:+.3}"));
    let mut text = String::new();
    let early_names: Vec<&str> = early.iter().map(|c| c.layer.as_str()).collect();
    let deep_names: Vec<&str> = deep.iter().map(|c| c.layer.as_str()).collect();
    let dp_early = delta(&early, |c| c.purity);
    let dp_deep = delta(&deep, |c| c.purity);
    let no_early_clusters = !early.is_empty() && early.iter().all(|c| c.clusters == (0, 0));
    let verdict = match dp_early {
        _ if no_early_clusters => {
            "purity cannot tell: HDBSCAN found no clusters in any early layer at either epoch"
        }
        Some(d) if d > 0.02 => "yes",
        Some(d) if d < -0.02 => "no, it fell",
        Some(_) => "hardly: the change is within ±0.02",
        None => "there are no early layers in this analysis",
    };
    let _ = write!(
        text,
        "**Did training raise the purity of early-layer clusters? {verdict}.** From epoch {first} to epoch {last}, \
         cluster purity (noise counted as a cluster) changed by {} on average over the early layers ({}) and by {} over \
         the deeper ones ({}). ",
        fmt(dp_early),
        if early_names.is_empty() {
            "none".into()
        } else {
            early_names.join(", ")
        },
        fmt(dp_deep),
        if deep_names.is_empty() {
            "none".into()
        } else {
            deep_names.join(", ")
        },
    );
    let no_clusters: Vec<String> = ch
        .iter()
        .filter(|c| c.clusters.0 == 0 || c.clusters.1 == 0)
        .map(|c| {
            let when = match (c.clusters.0 == 0, c.clusters.1 == 0) {
                (true, true) => {
                    format!("at epochs {first} and {last} (k = {} and {})", c.k.0, c.k.1)
                }
                (true, false) => format!("at epoch {first} (k = {})", c.k.0),
                _ => format!("at epoch {last} (k = {})", c.k.1),
            };
            format!("{} {when}", c.layer)
        })
        .collect();
    if !no_clusters.is_empty() {
        let _ = write!(
            text,
            "HDBSCAN found no clusters at all — every sample noise, so purity is just the largest class share — in {}; \
             there purity cannot show a change, and the clustering-free measures below carry the answer. ",
            no_clusters.join("; ")
        );
    }
    let _ = write!(
        text,
        "Without clustering: kNN label agreement in score space changed by {} (early) and {} (deeper); the silhouette \
         of the true labels by {} (early) and {} (deeper).",
        fmt(delta(&early, |c| c.knn)),
        fmt(delta(&deep, |c| c.knn)),
        fmt(delta(&early, |c| c.silhouette)),
        fmt(delta(&deep, |c| c.silhouette)),
    );
    text
}

/// The representation measures' half of the answer: how much each group of layers moved
/// (CKA with the final network), whether the class subspaces aligned (the hypothesis), and
/// what NC1 and the linear probe add; computed from the numbers behind the heatmaps.
pub fn dynamics_answer(reports: &[LayerReport], early_layers: &EarlyLayers) -> String {
    let layers = layer_order(reports);
    // (first, last) report of every layer.
    let ends: Vec<(&LayerReport, &LayerReport)> = layers
        .iter()
        .filter_map(|&l| {
            let mut rs: Vec<&LayerReport> = reports.iter().filter(|r| r.layer == l).collect();
            rs.sort_by_key(|r| r.epoch.unwrap_or(0));
            Some((*rs.first()?, *rs.last()?))
        })
        .collect();
    let Some(&(a0, b0)) = ends.first() else {
        return String::new();
    };
    let (first, last) = (a0.epoch.unwrap_or(0), b0.epoch.unwrap_or(0));
    if first == last {
        return String::new();
    }
    let group = |early: bool| -> Vec<(&LayerReport, &LayerReport)> {
        ends.iter()
            .copied()
            .filter(|(a, _)| early_layers.contains(&a.layer) == early)
            .collect()
    };
    let (early, deep) = (group(true), group(false));
    // Only layers with the figure at both ends, so that a value missing at one end cannot
    // pose as a change.
    let paired = |g: &[(&LayerReport, &LayerReport)], f: fn(&LayerReport) -> f64| {
        g.iter()
            .map(|(a, b)| (f(a), f(b)))
            .filter(|(a, b)| a.is_finite() && b.is_finite())
            .collect::<Vec<(f64, f64)>>()
    };
    let at_first = |g: &[(&LayerReport, &LayerReport)], f: fn(&LayerReport) -> f64| {
        mean(paired(g, f).into_iter().map(|(a, _)| a))
    };
    let at_last = |g: &[(&LayerReport, &LayerReport)], f: fn(&LayerReport) -> f64| {
        mean(paired(g, f).into_iter().map(|(_, b)| b))
    };
    let change = |g: &[(&LayerReport, &LayerReport)], f: fn(&LayerReport) -> f64| {
        mean(paired(g, f).into_iter().map(|(a, b)| b - a))
    };
    let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.3}"));
    let span = |g: &[(&LayerReport, &LayerReport)], f: fn(&LayerReport) -> f64| {
        format!("{} → {}", fmt(at_first(g, f)), fmt(at_last(g, f)))
    };
    let cka0 = |r: &LayerReport| r.cka_vs_final.unwrap_or(f64::NAN);
    let cos = |r: &LayerReport| r.subspace_cos_mean;
    let nc1 = |r: &LayerReport| r.nc1;
    let probe = |r: &LayerReport| r.probe_acc;
    let mut text = String::new();
    // CKA with the final network is read at the first epoch; the last is 1 by definition.
    let first_only = |g: &[(&LayerReport, &LayerReport)], f: fn(&LayerReport) -> f64| {
        mean(g.iter().map(|(a, _)| f(a)).filter(|x| x.is_finite()))
    };
    let (ce, cd) = (first_only(&early, cka0), first_only(&deep, cka0));
    let moved = match (ce, cd) {
        (Some(e), Some(d)) if e > d + 0.05 => "the early layers changed less than the deeper ones",
        (Some(e), Some(d)) if d > e + 0.05 => "the early layers changed more than the deeper ones",
        (Some(_), Some(_)) => "early and deeper layers changed about as much",
        _ => "CKA could not be compared between the groups",
    };
    let _ = write!(
        text,
        "**What the representation measures add** (heatmaps below). Linear CKA between epoch {first} and the final \
         network is {} for the early layers and {} for the deeper ones (1 = the same representation up to rotation and \
         scale): {moved}. ",
        fmt(ce),
        fmt(cd),
    );
    let d_cos = change(&early, cos);
    // Alignment that the deeper layers show just as much is not specific to early layers.
    let deeper = change(&deep, cos).map_or(String::new(), |dd| {
        format!("; the deeper layers' changed by {dd:+.3}")
    });
    let hypothesis = match d_cos {
        Some(d) if d > 0.02 => {
            format!(
                "supports it: the early layers' class subspaces aligned further ({d:+.3}{deeper})"
            )
        }
        Some(d) if d < -0.02 => {
            format!("goes against it: the early layers' class subspaces drew apart ({d:+.3})")
        }
        Some(d) => format!("shows no clear change ({d:+.3}, within ±0.02)"),
        None => "cannot tell (no class subspaces could be formed)".into(),
    };
    let _ = write!(
        text,
        "The hypothesis that training aligns the class subspaces in early layers: the mean principal-angle cosine \
         between class subspaces went {} in the early layers and {} in the deeper ones, which {hypothesis}. \
         NC1 (within-class spread relative to between-class spread; 0 is full collapse) went {} (early) and {} \
         (deeper); a linear probe on the scores reached {} (early) and {} (deeper) held-out accuracy.",
        span(&early, cos),
        span(&deep, cos),
        span(&early, nc1),
        span(&deep, nc1),
        span(&early, probe),
        span(&deep, probe),
    );
    text
}

/// Paths of the written report.
#[derive(Debug, Clone)]
pub struct ReportPaths {
    /// `report.html`.
    pub html: PathBuf,
    /// `report.md`.
    pub md: PathBuf,
}

/// One block of the report, rendered to both Markdown and HTML.
enum Block {
    Heading(String),
    Para(String),
    Table(Vec<String>, Vec<Vec<String>>),
    /// Rows of (layer, one optional image per column) under column titles.
    Grid(Vec<String>, Vec<(String, Vec<Option<String>>)>),
    /// Ready HTML (the explorer); nothing in Markdown.
    Html(String),
    /// One block in report.html, another in report.md.
    Apart(Box<Block>, Box<Block>),
    /// Several blocks in a row.
    Group(Vec<Block>),
    /// A plot with the line that says how to read it: (file, alt text, how to read it).
    Plot(String, String, String),
    /// Blocks folded away under a summary line (`<details>`; a heading in Markdown).
    Details(String, Vec<Block>),
    /// A line of links: (text, relative address).
    Links(String, Vec<(String, String)>),
}

/// Writes `RUN/report.html` and `RUN/report.md` (PNGs under `RUN/report-images/`) from the run's
/// analysis (whose plots are in `analysis_dir/plots`) and its accuracy per epoch.
pub fn write_report(
    run: &Path,
    title: &str,
    settings: &str,
    reports: &[LayerReport],
    early: &EarlyLayers,
    accuracy: &[EpochAccuracy],
    analysis_dir: &Path,
) -> Result<ReportPaths, SummaryError> {
    let images = run.join("report-images");
    fs::create_dir_all(&images).map_err(io(&images))?;
    let copied = copy_plots(&analysis_dir.join("plots"), &images)?;
    let fit = network_fit_plot(&images.join("network-fit.png"), reports, accuracy)?;
    let mut doc = vec![
        Block::Para(settings.to_string()),
        Block::Heading("The answer".into()),
        Block::Para(answer(reports, early)),
        run_answer_table(reports, early),
        Block::Para(
            "Each row: the measure's mean over the early layers at the first sample and at the last, and the \
             change. One seed gives no interval: the study's report over several seeds says whether a change \
             exceeds seed-to-seed noise."
                .into(),
        ),
    ];
    let dynamics = dynamics_answer(reports, early);
    if !dynamics.is_empty() {
        doc.push(Block::Para(dynamics));
    }
    if let Some(convergence) = run_convergence(reports) {
        doc.push(Block::Para(convergence));
    }
    let explorer = reports.iter().any(|r| r.embedding.is_some());
    if explorer {
        doc.extend(explorer_section(run, reports, "")?);
    }
    doc.extend(accuracy_section(accuracy, fit));
    doc.extend(figures_section(reports, &copied, explorer));
    doc.push(figures_table(reports));
    doc.extend(spectra_section(reports, &copied));
    doc.extend(tsne_section(reports, &copied, explorer));
    let paths = ReportPaths {
        html: run.join("report.html"),
        md: run.join("report.md"),
    };
    write_atomic(&paths.md, render_markdown(title, &doc).as_bytes())?;
    write_atomic(&paths.html, render_html(title, &doc, &images)?.as_bytes())?;
    Ok(paths)
}

/// One run's converged step per layer and the rank correlation of depth with it, in words;
/// None with fewer than two layers that have one.
fn run_convergence(reports: &[LayerReport]) -> Option<String> {
    let by_depth = crate::reporting::summary::converged_by_depth(reports);
    if by_depth.len() < 2 {
        return None;
    }
    let depth: Vec<f64> = by_depth.iter().map(|&(d, _, _)| d as f64).collect();
    let steps: Vec<f64> = by_depth.iter().map(|&(_, _, s)| s as f64).collect();
    let rho = crate::numerics::dynamics::spearman(&depth, &steps);
    let list: Vec<String> = by_depth
        .iter()
        .map(|(_, l, s)| format!("{l} {s}"))
        .collect();
    let reading = match rho {
        r if r > 0.0 => "deeper layers converge later here (bottom-up)",
        r if r < 0.0 => "deeper layers converge earlier here",
        0.0 => "no order with depth here",
        _ => "the rank correlation is undefined (every layer converged at the same step)",
    };
    Some(format!(
        "**Bottom-up convergence** (Raghu et al. 2017, SVCCA, Fig. 4). The step from which each layer's linear \
         CKA to its final representation stays at or above {}: {}. Spearman's rank correlation of depth and \
         converged step: {rho:+.2}; {reading}. One seed gives no interval: the study's report gives it over seeds.",
        crate::numerics::dynamics::CONVERGED_CKA,
        list.join(", ")
    ))
}

/// The explorer of one run's analysis, under its heading with the line on how to read it
/// (`which` names the run when the page covers several).
fn explorer_section(
    run: &Path,
    reports: &[LayerReport],
    which: &str,
) -> Result<Vec<Block>, SummaryError> {
    let data = ExplorerData::of_run(run, reports)?;
    Ok(vec![
        Block::Heading(format!("Explorer{which}")),
        Block::Apart(
            Box::new(Block::Group(vec![
                Block::Para(
                    "How to read it: pick a layer and drag the slider through training; each point is a probe \
                     image placed by t-SNE of the layer's scores, coloured by its label (or HDBSCAN cluster). \
                     Classes pulling apart into islands is the representation learning them. Hover a point for \
                     its image; click a heatmap cell to jump there."
                        .into(),
                ),
                Block::Html(explorer_html(&data)),
            ])),
            Box::new(Block::Para(
                "The interactive explorer (t-SNE per layer with a slider over the samples, probe images \
                 on hover, clickable heatmaps) is in report.html."
                    .into(),
            )),
        ),
    ])
}

/// What the study's report shows of its seeds beside the aggregate.
#[derive(Debug, Clone, Copy)]
pub struct StudySeeds<'a> {
    /// Each seed's name and the path of its own report.
    pub reports: &'a [(String, PathBuf)],
    /// One seed's explorer: its name, run directory and analysis.
    pub explorer: Option<(&'a str, &'a Path, &'a [LayerReport])>,
    /// The layer identification of every seed pair (indices into `reports`).
    pub identification: &'a [crate::reporting::compare::PairIdentification],
}

/// Writes the report of several seeds' runs into `dir` (`report.html`, `report.md`, PNGs
/// under `dir/report-images/`): the answer with its intervals over seeds, the early-layer
/// changes against step, the band plots of `agg_dir/plots`, and links to each seed's report.
pub fn write_aggregate_report(
    dir: &Path,
    title: &str,
    settings: &str,
    agg: &crate::reporting::aggregate::Aggregate,
    agg_dir: &Path,
    seeds: &StudySeeds<'_>,
) -> Result<ReportPaths, SummaryError> {
    let images = dir.join("report-images");
    fs::create_dir_all(&images).map_err(io(&images))?;
    let copied = copy_plots(&agg_dir.join("plots"), &images)?;
    let n = agg.runs.len();
    let mut doc = vec![
        Block::Para(settings.to_string()),
        Block::Heading("The answer".into()),
        Block::Para(crate::reporting::aggregate::purity_answer(agg)),
        answer_table(agg),
        Block::Para(crate::reporting::aggregate::answer(agg)),
    ];
    // One seed's explorer right under the answer: the page's most direct view of the change.
    if let Some((name, run, reports)) = seeds.explorer
        && reports.iter().any(|r| r.embedding.is_some())
    {
        doc.extend(explorer_section(run, reports, &format!(" ({name})"))?);
    }
    let seed_links = seeds
        .reports
        .iter()
        .map(|(name, path)| {
            let rel = path.strip_prefix(dir).unwrap_or(path);
            (name.clone(), rel.display().to_string())
        })
        .collect();
    doc.push(Block::Links(
        "Each seed's own report, with its interactive explorer (t-SNE per layer over training):"
            .into(),
        seed_links,
    ));
    let agg_rel = agg_dir.strip_prefix(dir).unwrap_or(agg_dir);
    doc.push(Block::Links(
        "The numbers behind this page:".into(),
        ["aggregate.csv", "aggregate.json"]
            .iter()
            .map(|f| (f.to_string(), agg_rel.join(f).display().to_string()))
            .collect(),
    ));
    doc.extend(published_dynamics(
        agg,
        seeds.reports,
        seeds.identification,
        &copied,
    ));
    doc.push(Block::Heading(format!(
        "Figures against training, mean and 95% band over {n} seeds"
    )));
    if copied.iter().any(|c| c == "accuracy.png") {
        doc.push(Block::Plot(
            "accuracy.png".into(),
            "the network's accuracy on the probe images against step".into(),
            "How to read it: the network's own accuracy on the probe images at every sample, step samples \
             included, mean and 95% band over seeds; where it rises steeply is where learning happens."
                .into(),
        ));
    }
    for f in figures::plotted() {
        let name = format!("{}.png", f.name);
        if copied.contains(&name) {
            doc.push(Block::Plot(
                name,
                format!(
                    "{}: one line per layer, band = 95% interval over seeds",
                    f.human_title()
                ),
                format!(
                    "How to read it: {} One line per layer, band = 95% interval over seeds.",
                    lower_first(f.how)
                ),
            ));
        }
    }
    doc.push(Block::Details(
        "Early layers: change from the first sample at every sample, over seeds".into(),
        vec![
            Block::Para(
                "Each seed's mean over the early layers (stem and layer1) minus its value at the first sample; mean \
                 over seeds and 95% Student-t interval (t(0.975, n−1)·std/√n), clipped to the range a change of \
                 the measure can take. An interval that excludes 0 (*) is a change larger than seed-to-seed noise."
                    .into(),
            ),
            early_changes_table(agg),
        ],
    ));
    let paths = ReportPaths {
        html: dir.join("report.html"),
        md: dir.join("report.md"),
    };
    write_atomic(&paths.md, render_markdown(title, &doc).as_bytes())?;
    write_atomic(&paths.html, render_html(title, &doc, &images)?.as_bytes())?;
    Ok(paths)
}

/// Bottom-up convergence and layer identification over the seeds, as the papers that
/// introduced them report them.
fn published_dynamics(
    agg: &crate::reporting::aggregate::Aggregate,
    seeds: &[(String, PathBuf)],
    identification: &[crate::reporting::compare::PairIdentification],
    copied: &[String],
) -> Vec<Block> {
    let mut doc = vec![Block::Heading("Published dynamics, over seeds".into())];
    if let Some(text) = crate::reporting::aggregate::convergence_answer(agg) {
        doc.push(Block::Para(text));
    }
    let plot = crate::reporting::summary::CONVERGENCE_PLOT;
    if copied.iter().any(|c| c == plot) {
        doc.push(Block::Plot(
            plot.into(),
            "converged step against depth, mean and 95% interval over seeds".into(),
            "How to read it: a line rising from left (conv1) to right (layer4) is bottom-up convergence, \
             lower layers settling on their final representation earlier in training."
                .into(),
        ));
    }
    if let Some(text) = identification_answer(seeds, identification) {
        doc.push(Block::Para(text));
    }
    doc
}

/// Layer identification over the seed pairs, in words.
fn identification_answer(
    seeds: &[(String, PathBuf)],
    pairs: &[crate::reporting::compare::PairIdentification],
) -> Option<String> {
    use crate::reporting::aggregate::Interval;
    let values: Vec<f64> = pairs.iter().map(|p| p.layer_identification).collect();
    let i = Interval::of(values.iter().copied()).within(Some((0.0, 1.0)));
    if !i.mean.is_finite() {
        return None;
    }
    let name = |k: usize| {
        seeds
            .get(k)
            .map_or_else(|| format!("run {k}"), |s| s.0.clone())
    };
    let each: Vec<String> = pairs
        .iter()
        .map(|p| {
            format!(
                "{} – {}: {:.0}%",
                name(p.a),
                name(p.b),
                100.0 * p.layer_identification
            )
        })
        .collect();
    let ci = match i.low.is_finite() {
        true => format!(
            ", 95% t-interval {:.0}% … {:.0}% over the {} pairs (pairs share seeds, so read it as a spread, \
             not as independent draws)",
            100.0 * i.low,
            100.0 * i.high,
            i.n
        ),
        false => String::new(),
    };
    // Which layers were taken for which, counted over the pairs.
    let mut missed: std::collections::BTreeMap<(&str, &str), usize> = Default::default();
    for (a, b) in pairs.iter().flat_map(|p| &p.misses) {
        *missed.entry((a.as_str(), b.as_str())).or_default() += 1;
    }
    let misses = match missed.is_empty() {
        true => " Every layer was matched with itself.".to_string(),
        false => format!(
            " Taken for another layer: {}.",
            missed
                .iter()
                .map(|((a, b), k)| format!("{a} → {b} ({k} of {} pairs)", pairs.len()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Some(format!(
        "**Layer identification** (Kornblith et al. 2019, Table 2: linear CKA matches a layer to the same layer \
         of a network trained from another seed 99.3% of the time on CIFAR-10). Here, at the last sample, the \
         share of one seed's analysed layers whose most CKA-similar layer in the other seed is the same layer: \
         {:.0}% on average{ci}. Per pair: {}.{misses}",
        100.0 * i.mean,
        each.join(", ")
    ))
}

/// Rows of (sample, then per early measure: mean change and its interval).
fn early_changes_table(agg: &crate::reporting::aggregate::Aggregate) -> Block {
    let mut header = vec!["sample".to_string(), "step".to_string()];
    header.extend(agg.early_changes.iter().map(|c| format!("Δ {}", c.figure)));
    let n = agg.early_changes.first().map_or(0, |c| c.by_sample.len());
    let rows = (0..n)
        .map(|i| {
            let (s, step, _) = agg.early_changes[0].by_sample[i];
            let mut row = vec![s.label(), step.map_or("–".into(), |s| s.to_string())];
            row.extend(agg.early_changes.iter().map(|c| {
                let iv = c.by_sample[i].2;
                if iv.mean.is_finite() && iv.low.is_finite() {
                    let star = if iv.excludes_zero() { " *" } else { "" };
                    format!("{:+.3} [{:+.3}, {:+.3}]{star}", iv.mean, iv.low, iv.high)
                } else if iv.mean.is_finite() {
                    format!("{:+.3}", iv.mean)
                } else {
                    "–".into()
                }
            }));
            row
        })
        .collect();
    Block::Table(header, rows)
}

/// The network's own accuracy and loss on the probe images at every sample (step samples
/// included) against step, log axis, and the test accuracy of each epoch end beside them: the
/// curve that shows where learning happens. Writes nothing and returns false when the reports
/// carry no accuracy (runs from outside cnnu).
fn network_fit_plot(
    png: &Path,
    reports: &[LayerReport],
    accuracy: &[EpochAccuracy],
) -> Result<bool, SummaryError> {
    let axis = SampleAxis::of(reports);
    let first = layer_order(reports).first().map(|l| l.to_string());
    let rows: Vec<&LayerReport> = reports
        .iter()
        .filter(|r| Some(&r.layer) == first.as_ref() && r.accuracy.is_some())
        .collect();
    if rows.is_empty() {
        return Ok(false);
    }
    let pts = |f: fn(&LayerReport) -> Option<f64>| {
        rows.iter()
            .filter_map(|r| Some((axis.x(r), f(r)?)))
            .collect::<Vec<_>>()
    };
    let mut series = vec![
        (
            "network accuracy on the probe images".to_string(),
            pts(|r| r.accuracy),
        ),
        (
            "network loss on the probe images / 2.5".to_string(),
            pts(|r| r.loss.map(|l| l / 2.5)),
        ),
    ];
    // The epoch ends' test pass, placed at their steps.
    let at_epoch_end: Vec<(f64, f64)> = accuracy
        .iter()
        .filter_map(|a| {
            let r = rows
                .iter()
                .find(|r| matches!(sample_name(r), SampleName::Epoch(e) if e == a.epoch))?;
            Some((axis.x(r), a.test_accuracy))
        })
        .collect();
    if !at_epoch_end.is_empty() {
        series.push(("test accuracy (epoch ends)".to_string(), at_epoch_end));
    }
    plot::lines(
        png,
        &format!("the network's accuracy and loss against {}", axis.name()),
        axis.title(),
        "accuracy; loss / 2.5",
        &series,
        axis.axes(),
    )?;
    Ok(true)
}
/// Copies the analysis plots next to the Markdown so the folder is self-contained too;
/// returns the names copied.
fn copy_plots(plots: &Path, images: &Path) -> Result<Vec<String>, SummaryError> {
    let mut copied: Vec<String> = Vec::new();
    let Ok(entries) = fs::read_dir(plots) else {
        return Ok(copied);
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png"))
        .collect();
    names.sort();
    for name in names {
        let dst = images.join(&name);
        fs::copy(plots.join(&name), &dst).map_err(io(&dst))?;
        copied.push(name);
    }
    Ok(copied)
}

/// The network's accuracy along training (the plot over every sample) and the epoch ends'
/// test pass.
fn accuracy_section(accuracy: &[EpochAccuracy], fit: bool) -> Vec<Block> {
    let rows = accuracy
        .iter()
        .map(|a| {
            vec![
                a.epoch.to_string(),
                format!("{:.4}", a.test_accuracy),
                format!("{:.4}", a.test_loss),
                a.train_loss.map_or("–".into(), |l| format!("{l:.4}")),
            ]
        })
        .collect();
    let header = ["epoch", "test accuracy", "test loss", "train loss"];
    let mut doc = vec![Block::Heading(
        "The network's accuracy along training".into(),
    )];
    if fit {
        doc.push(Block::Plot(
            "network-fit.png".into(),
            "the network's accuracy and loss on the probe images against step".into(),
            "How to read it: the network's own accuracy (and cross-entropy loss, scaled by 1/2.5) on the probe \
             images at every sample, step samples included (summary.csv columns accuracy and loss; not the \
             linear probe's probe_acc), with the test accuracy of each epoch end as points; where the curve \
             rises steeply is where learning happens."
                .into(),
        ));
    }
    doc.push(Block::Table(
        header.iter().map(|s| s.to_string()).collect(),
        rows,
    ));
    doc
}

/// The early measures' mean over the early layers of one run at the first and the last
/// sample, and the change: the seed report's answer table.
fn run_answer_table(reports: &[LayerReport], early: &EarlyLayers) -> Block {
    let samples = sample_order(reports);
    let header = ["measure", "first sample", "last sample", "change"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (Some(&first), Some(&last)) = (samples.first(), samples.last()) else {
        return Block::Table(header, Vec::new());
    };
    let early_mean = |f: &figures::Figure, s: SampleName| {
        mean(
            reports
                .iter()
                .filter(|r| early.contains(&r.layer) && sample_name(r) == s)
                .filter_map(|r| (f.read)(r))
                .filter(|v| v.is_finite()),
        )
    };
    let rows = crate::reporting::aggregate::EARLY_MEASURES
        .iter()
        .filter_map(|&n| figures::figure(n))
        .map(|f| {
            let (a, b) = (early_mean(f, first), early_mean(f, last));
            vec![
                f.human_title().to_string(),
                format!("{} ({})", f.format(a), first.label()),
                format!("{} ({})", f.format(b), last.label()),
                match (a, b) {
                    (Some(a), Some(b)) => format!("{:+.3}", b - a),
                    _ => "–".into(),
                },
            ]
        })
        .collect();
    Block::Table(header, rows)
}

/// The study's answer table: per early measure its human title, the change from the first
/// sample to the last with its 95% interval over seeds, whether that exceeds seed noise and
/// from which step on.
fn answer_table(agg: &crate::reporting::aggregate::Aggregate) -> Block {
    let header = [
        "early-layer measure",
        "change, first → last sample (95% CI over seeds)",
        "exceeds seed noise?",
        "from",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let rows = agg
        .early_changes
        .iter()
        .filter_map(|c| {
            let f = figures::figure(c.figure)?;
            let end = c.at_end()?;
            let change = if end.mean.is_finite() && end.low.is_finite() {
                format!("{:+.3} [{:+.3}, {:+.3}]", end.mean, end.low, end.high)
            } else if end.mean.is_finite() {
                format!("{:+.3} (no interval: one seed)", end.mean)
            } else {
                "–".into()
            };
            let exceeds = if !end.low.is_finite() {
                "– (needs two seeds)"
            } else if end.mean == 0.0 && end.std == 0.0 {
                "no: the same in every seed"
            } else if end.excludes_zero() {
                "yes"
            } else {
                "no"
            };
            let from = if end.excludes_zero() {
                c.settled_from().map_or("–".into(), |(s, step)| {
                    step.map_or(s.label(), |st| format!("step {st}"))
                })
            } else {
                "–".into()
            };
            Some(vec![
                f.human_title().to_string(),
                change,
                exceeds.into(),
                from,
            ])
        })
        .collect();
    Block::Table(header, rows)
}

/// The table of every figure per layer and sample, the heatmaps, the line plots and the
/// energy spectra.
fn figures_section(reports: &[LayerReport], copied: &[String], explorer: bool) -> Vec<Block> {
    let has = |name: &str| copied.iter().any(|c| c == name);
    let mut doc = Vec::new();
    let heatmaps: Vec<&figures::Figure> = figures::heatmaps()
        .filter(|f| has(&format!("heatmap-{}.png", f.name)))
        .collect();
    if !heatmaps.is_empty() {
        doc.push(Block::Heading(
            "Representation dynamics: layer × sample".into(),
        ));
        let plots = heatmaps
            .into_iter()
            .map(|f| {
                Block::Plot(
                    format!("heatmap-{}.png", f.name),
                    format!("{}, one row per layer, one column per sample", f.human_title()),
                    format!(
                        "How to read it: {} One row per layer, one column per sample, left to right through training.",
                        lower_first(f.how)
                    ),
                )
            })
            .collect();
        // The explorer draws the same heatmaps, clickable; the page carries them once.
        doc.push(match explorer {
            true => Block::Apart(
                Box::new(Block::Para(
                    "The layer × sample heatmaps are the explorer's, above: click a cell to see that layer at \
                     that sample."
                        .into(),
                )),
                Box::new(Block::Group(plots)),
            ),
            false => Block::Group(plots),
        });
    }
    let axis = SampleAxis::of(reports);
    doc.push(Block::Heading("Figures over training".into()));
    let plot = crate::reporting::summary::CONVERGENCE_PLOT;
    if has(plot) {
        doc.push(Block::Plot(
            plot.into(),
            "each layer's converged step against its depth".into(),
            "How to read it: the step from which a layer's CKA to its final representation stays at or above \
             0.9; a line rising from conv1 to layer4 is bottom-up convergence."
                .into(),
        ));
    }
    for figure in figures::plotted() {
        let name = format!("{}.png", figure.name);
        if has(&name) {
            doc.push(Block::Plot(
                name,
                format!(
                    "{} against {}, one line per layer",
                    figure.human_title(),
                    axis.name()
                ),
                format!(
                    "How to read it: {} One line per layer.",
                    lower_first(figure.how)
                ),
            ));
        }
    }
    doc
}

/// The table of every figure per (layer, sample), folded away.
fn figures_table(reports: &[LayerReport]) -> Block {
    let layers = layer_order(reports);
    let mut header = vec!["layer".to_string(), "sample".to_string()];
    header.extend(
        figures::in_table()
            .filter_map(|f| f.title)
            .map(String::from),
    );
    let mut rows = Vec::new();
    for &l in &layers {
        for r in reports.iter().filter(|r| r.layer == l) {
            let mut row = vec![l.to_string(), sample_name(r).label()];
            row.extend(figures::in_table().map(|f| f.table_cell(r)));
            rows.push(row);
        }
    }
    let n = rows.len();
    Block::Details(
        format!("Every figure per layer and sample ({n} rows)"),
        vec![Block::Table(header, rows)],
    )
}

/// The energy spectrum of every layer.
fn spectra_section(reports: &[LayerReport], copied: &[String]) -> Vec<Block> {
    let layers = layer_order(reports);
    let has = |name: &str| copied.iter().any(|c| c == name);
    let mut doc = Vec::new();
    doc.push(Block::Heading("Energy spectrum".into()));
    for &l in &layers {
        let name = format!("spectrum-{l}.png");
        if has(&name) {
            doc.push(Block::Plot(
                name,
                format!("{l}: energy share of the leading components"),
                "How to read it: the share of the layer's energy in each principal component, one line per \
                 sample; a steeper fall means fewer directions carry the representation."
                    .into(),
            ));
        }
    }
    doc
}

/// The grid of t-SNE scatters, one row per layer, one column per sample. With the `explorer`
/// beside it, report.html leaves the pictures out (the explorer shows every sample's map, and
/// the grid would be a large part of the file); report.md, whose images are links, keeps them.
fn tsne_section(reports: &[LayerReport], copied: &[String], explorer: bool) -> Vec<Block> {
    let samples = sample_order(reports);
    let (cols, rows) = tsne_grid(reports, copied, &samples);
    if !rows.iter().any(|(_, c)| c.iter().any(Option::is_some)) {
        return Vec::new();
    }
    let all = Block::Grid(cols, rows);
    let heading = Block::Heading("t-SNE of the scores, coloured by label".into());
    if !explorer || samples.len() <= 2 {
        return vec![heading, all];
    }
    // report.html has the explorer, with every sample's map: the static pictures would be a
    // fifth of the file for nothing new.
    let note = Block::Para(
        "Every layer's t-SNE at every sample is in the explorer above; report.md links the static pictures."
            .into(),
    );
    vec![heading, Block::Apart(Box::new(note), Box::new(all))]
}

/// Column titles and one row per layer of `samples`' t-SNE pictures (None where one is
/// missing).
type GridCells = (Vec<String>, Vec<(String, Vec<Option<String>>)>);

/// [`GridCells`] of `samples`.
fn tsne_grid(reports: &[LayerReport], copied: &[String], samples: &[SampleName]) -> GridCells {
    let cols: Vec<String> = samples.iter().map(|s| s.label()).collect();
    let rows: Vec<(String, Vec<Option<String>>)> = layer_order(reports)
        .iter()
        .map(|&l| {
            let cells = samples
                .iter()
                .map(|&s| {
                    let name = format!("{}-labels.png", tsne_stem(l, s));
                    copied.contains(&name).then_some(name)
                })
                .collect();
            (l.to_string(), cells)
        })
        .collect();
    (cols, rows)
}

/// The document as Markdown, images as links into `report-images/`.
fn render_markdown(title: &str, doc: &[Block]) -> String {
    let mut md = format!("# {title}\n\n");
    for b in doc {
        md_block(&mut md, b);
    }
    md
}

/// One block as Markdown onto `md`.
fn md_block(md: &mut String, b: &Block) {
    let table_head = |md: &mut String, h: &[String]| {
        let _ = write!(md, "| {} |\n|{}\n", h.join(" | "), " --- |".repeat(h.len()));
    };
    match b {
        Block::Heading(h) => md.push_str(&format!("## {h}\n\n")),
        Block::Para(p) => md.push_str(&format!("{p}\n\n")),
        Block::Table(h, rows) => {
            table_head(md, h);
            for r in rows {
                md.push_str(&format!("| {} |\n", r.join(" | ")));
            }
            md.push('\n');
        }
        Block::Html(_) => {}
        Block::Plot(name, alt, how) => {
            md.push_str(&format!("*{how}*\n\n![{alt}](report-images/{name})\n\n"))
        }
        Block::Details(summary, blocks) => {
            md.push_str(&format!("### {summary}\n\n"));
            blocks.iter().for_each(|b| md_block(md, b));
        }
        Block::Links(text, links) => {
            let l: Vec<String> = links.iter().map(|(t, a)| format!("[{t}]({a})")).collect();
            md.push_str(&format!("{text} {}\n\n", l.join(" · ")));
        }
        Block::Apart(_, in_md) => md_block(md, in_md),
        Block::Group(blocks) => blocks.iter().for_each(|b| md_block(md, b)),
        Block::Grid(cols, rows) => {
            let mut h = vec!["layer".to_string()];
            h.extend(cols.iter().cloned());
            table_head(md, &h);
            for (l, cells) in rows {
                let cells: Vec<String> = cells
                    .iter()
                    .map(|c| {
                        c.as_ref()
                            .map_or("–".into(), |n| format!("![{l}](report-images/{n})"))
                    })
                    .collect();
                md.push_str(&format!("| {l} | {} |\n", cells.join(" | ")));
            }
            md.push('\n');
        }
    }
}

/// `s` with its first letter in lower case (a sentence continued after "How to read it:").
fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    c.next().map_or(String::new(), |f| {
        f.to_lowercase().collect::<String>() + c.as_str()
    })
}

/// `s` with the characters HTML gives a meaning escaped.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A paragraph with `**bold**` spans, escaped.
fn bold(s: &str) -> String {
    s.split("**")
        .enumerate()
        .map(|(i, p)| {
            if i % 2 == 1 {
                format!("<strong>{}</strong>", esc(p))
            } else {
                esc(p)
            }
        })
        .collect()
}

/// The PNG `images/name` as a data URI.
fn data_uri(images: &Path, name: &str) -> Result<String, SummaryError> {
    let path = images.join(name);
    let bytes = fs::read(&path).map_err(io(&path))?;
    Ok(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
     table{border-collapse:collapse;margin:1em 0;font-size:90%}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}\
     th{background:#f3f3f3}img{max-width:100%}.grid img{width:260px}\
     figure{margin:1em 0}figcaption.how{font-size:90%;color:#555;margin:0 0 .3em}\
     details.full-table>summary{cursor:pointer;font-weight:600;margin:1em 0}";

/// The document as one self-contained HTML file, every image inlined.
fn render_html(title: &str, doc: &[Block], images: &Path) -> Result<String, SummaryError> {
    let mut html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head><body>\n<h1>{t}</h1>\n",
        t = esc(title)
    );
    for b in doc {
        html_block(&mut html, b, images)?;
    }
    html.push_str("</body></html>\n");
    Ok(html)
}

/// One block as HTML onto `html`, images from `images` inlined.
fn html_block(html: &mut String, b: &Block, images: &Path) -> Result<(), SummaryError> {
    match b {
        Block::Heading(h) => html.push_str(&format!("<h2>{}</h2>\n", esc(h))),
        Block::Para(p) => html.push_str(&format!("<p>{}</p>\n", bold(p))),
        Block::Table(h, rows) => html_table(html, h, rows),
        Block::Grid(cols, rows) => html_grid(html, cols, rows, images)?,
        Block::Html(fragment) => html.push_str(fragment),
        Block::Plot(name, alt, how) => html.push_str(&format!(
            "<figure><figcaption class=\"how\">{}</figcaption><img alt=\"{}\" src=\"{}\"></figure>\n",
            esc(how),
            esc(alt),
            data_uri(images, name)?
        )),
        Block::Details(summary, blocks) => {
            html.push_str(&format!(
                "<details class=\"full-table\"><summary>{}</summary>\n",
                esc(summary)
            ));
            for b in blocks {
                html_block(html, b, images)?;
            }
            html.push_str("</details>\n");
        }
        Block::Links(text, links) => {
            let l: Vec<String> = links
                .iter()
                .map(|(t, a)| format!("<a href=\"{}\">{}</a>", esc(a).replace('"', "&quot;"), esc(t)))
                .collect();
            html.push_str(&format!("<p>{} {}</p>\n", esc(text), l.join(" · ")));
        }
        Block::Apart(in_html, _) => html_block(html, in_html, images)?,
        Block::Group(blocks) => {
            for b in blocks {
                html_block(html, b, images)?;
            }
        }
    }
    Ok(())
}

fn html_table(html: &mut String, header: &[String], rows: &[Vec<String>]) {
    html.push_str("<table><tr>");
    for c in header {
        html.push_str(&format!("<th>{}</th>", esc(c)));
    }
    html.push_str("</tr>\n");
    for r in rows {
        html.push_str("<tr>");
        for c in r {
            html.push_str(&format!("<td>{}</td>", esc(c)));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n");
}

fn html_grid(
    html: &mut String,
    cols: &[String],
    rows: &[(String, Vec<Option<String>>)],
    images: &Path,
) -> Result<(), SummaryError> {
    html.push_str("<table class=\"grid\"><tr><th>layer</th>");
    for c in cols {
        html.push_str(&format!("<th>{}</th>", esc(c)));
    }
    html.push_str("</tr>\n");
    for (l, cells) in rows {
        html.push_str(&format!("<tr><th>{}</th>", esc(l)));
        for c in cells {
            match c {
                Some(n) => html.push_str(&format!(
                    "<td><img alt=\"{}\" src=\"{}\"></td>",
                    esc(l),
                    data_uri(images, n)?
                )),
                None => html.push_str("<td>–</td>"),
            }
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n");
    Ok(())
}
