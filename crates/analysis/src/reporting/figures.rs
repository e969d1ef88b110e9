//! The table of figures: every number a layer report yields, declared once with its column
//! title, how it is read from a [`LayerReport`], how it is printed and where it is drawn.
//! `summary.csv`, the line plots, the heatmaps, the report's table and the aggregates over
//! runs are all generated from [`FIGURES`], so adding a measure is its function plus one row.

use crate::reporting::layer::LayerReport;

/// How a figure is printed in the report's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A whole number.
    Count,
    /// Three decimals.
    Ratio,
    /// A share printed as a whole percentage.
    Percent,
    /// Seconds, three decimals (also in the CSV, where the full digits are noise).
    Seconds,
}

/// What kind of number a figure is, which decides whether averaging it over runs means anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A size of the data (samples, features): the same in every run of one setup.
    Size,
    /// A measure of the representation.
    Measure,
    /// Time taken: machine-dependent, never aggregated.
    Timing,
}

/// The colour range a heatmap is read on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Range {
    /// A fixed range, so heatmaps of different runs can be compared by eye.
    Fixed(f64, f64),
    /// The data's own range.
    Data,
}

impl Range {
    /// The range as `plot::heatmap` takes it.
    pub fn bounds(self) -> Option<(f64, f64)> {
        match self {
            Range::Fixed(lo, hi) => Some((lo, hi)),
            Range::Data => None,
        }
    }
}

/// One figure of a layer report.
#[derive(Debug, Clone, Copy)]
pub struct Figure {
    /// Column name in `summary.csv` and key in `summary.json`.
    pub name: &'static str,
    /// Column title in the report's table (None: not in that table).
    pub title: Option<&'static str>,
    /// Reads the value; None where the report has none (no clusters, no previous sample).
    pub read: fn(&LayerReport) -> Option<f64>,
    /// How the report prints it.
    pub style: Style,
    /// What kind of number it is.
    pub kind: Kind,
    /// Whether it gets a line plot against the sample axis.
    pub plotted: bool,
    /// Whether (and on which range) it gets a layer × sample heatmap.
    pub heatmap: Option<Range>,
    /// Its name for a reader ("kNN label agreement"); the column name where empty.
    pub human: &'static str,
    /// How to read it, one line under its plot.
    pub how: &'static str,
    /// The values it can take, (low, high) with infinities for an open end (None: unbounded):
    /// an interval over runs is clipped to it (see `aggregate::Interval::within`).
    pub bounds: Option<(f64, f64)>,
}

const UNIT: Option<Range> = Some(Range::Fixed(0.0, 1.0));
/// A share, a purity, an accuracy, a CKA: never outside [0, 1].
const FRACTION: Option<(f64, f64)> = Some((0.0, 1.0));
/// A non-negative quantity without an upper bound (NC1, a loss).
const NON_NEGATIVE: Option<(f64, f64)> = Some((0.0, f64::INFINITY));

/// Declares a figure with its defaults: a measure printed as a ratio, plotted, no heatmap.
const fn measure(
    name: &'static str,
    title: &'static str,
    read: fn(&LayerReport) -> Option<f64>,
) -> Figure {
    Figure {
        name,
        title: Some(title),
        read,
        style: Style::Ratio,
        kind: Kind::Measure,
        plotted: true,
        heatmap: None,
        bounds: None,
        human: "",
        how: "",
    }
}

/// A figure that is only a column of `summary.csv`.
const fn column(name: &'static str, kind: Kind, read: fn(&LayerReport) -> Option<f64>) -> Figure {
    Figure {
        name,
        title: None,
        read,
        style: if matches!(kind, Kind::Timing) {
            Style::Seconds
        } else {
            Style::Count
        },
        kind,
        plotted: false,
        heatmap: None,
        bounds: None,
        human: "",
        how: "",
    }
}

const fn count(n: usize) -> Option<f64> {
    Some(n as f64)
}

/// Every figure, in `summary.csv`'s column order.
pub const FIGURES: &[Figure] = &[
    column("n", Kind::Size, |r| count(r.n)),
    column("d_total", Kind::Size, |r| count(r.d_total)),
    column("d_kept", Kind::Measure, |r| count(r.d_kept)),
    Figure {
        human: "components kept (k)",
        how: "How many principal components reach the energy threshold: lower means the layer's representation is lower-dimensional.",
        style: Style::Count,
        ..measure("k", "k", |r| count(r.k))
    },
    column("k_used", Kind::Measure, |r| count(r.k_used)),
    Figure {
        title: None,
        plotted: false,
        ..measure("energy_at_k", "", |r| Some(r.energy_at_k))
    },
    Figure {
        style: Style::Count,
        plotted: false,
        ..measure("n_clusters", "clusters", |r| count(r.agreement.n_clusters))
    },
    Figure {
        human: "HDBSCAN noise share",
        how: "Share of probe points HDBSCAN leaves unclustered (0–1); 1 means it found no clusters.",
        bounds: FRACTION,
        style: Style::Percent,
        ..measure("noise_frac", "noise", |r| Some(r.agreement.noise_frac))
    },
    Figure {
        human: "cluster purity (noise as a cluster)",
        how: "Share of points whose cluster's majority label is their own (0–1); higher means clusters follow the classes. Without clusters it is the largest class share.",
        bounds: FRACTION,
        ..measure("purity_with_noise", "purity", |r| {
            Some(r.agreement.purity_with_noise)
        })
    },
    Figure {
        human: "cluster purity without noise",
        how: "Purity over the clustered points only (0–1); missing where every point is noise.",
        bounds: FRACTION,
        ..measure("purity_without_noise", "purity w/o noise", |r| {
            r.agreement.purity_without_noise
        })
    },
    Figure {
        human: "homogeneity",
        how: "1 when every cluster holds one class only.",
        bounds: FRACTION,
        ..measure("homogeneity", "homog.", |r| Some(r.agreement.homogeneity))
    },
    Figure {
        human: "completeness",
        how: "1 when every class lies in one cluster.",
        bounds: FRACTION,
        title: None,
        ..measure("completeness", "", |r| Some(r.agreement.completeness))
    },
    Figure {
        human: "V-measure",
        how: "Harmonic mean of homogeneity and completeness (0–1).",
        bounds: FRACTION,
        ..measure("v_measure", "V", |r| Some(r.agreement.v_measure))
    },
    Figure {
        human: "adjusted Rand index",
        how: "Agreement of clusters with labels beyond chance: 0 is chance, 1 is identical.",
        bounds: Some((-0.5, 1.0)),
        ..measure("ari", "ARI", |r| Some(r.agreement.ari))
    },
    Figure {
        human: "normalised mutual information",
        how: "Information the clusters share with the labels (0–1).",
        bounds: FRACTION,
        ..measure("nmi", "NMI", |r| Some(r.agreement.nmi))
    },
    Figure {
        human: "kNN label agreement",
        how: "Share of each point's nearest neighbours (in the k-dimensional scores) with its label (0–1); higher means classes are locally separated, no clustering needed.",
        bounds: FRACTION,
        ..measure("knn_agreement", "kNN", |r| Some(r.knn_agreement))
    },
    Figure {
        human: "silhouette of the true labels",
        how: "How far each point sits nearer its own class than the next one (−1–1); above 0 means the classes form groups.",
        bounds: Some((-1.0, 1.0)),
        ..measure("silhouette_true", "silhouette", |r| Some(r.silhouette_true))
    },
    Figure {
        human: "CKA with the final network",
        how: "Linear CKA between this layer now and at the last sample (0–1); 1 means the representation has reached its final form.",
        bounds: FRACTION,
        heatmap: UNIT,
        ..measure("cka_vs_final", "CKA→final", |r| r.cka_vs_final)
    },
    Figure {
        human: "CKA with the previous sample",
        how: "Linear CKA with the same layer at the previous sample (0–1); a dip marks a fast change.",
        bounds: FRACTION,
        heatmap: UNIT,
        ..measure("cka_vs_prev", "CKA→prev", |r| r.cka_vs_prev)
    },
    Figure {
        human: "class-subspace alignment",
        how: "Mean cosine of the principal angles between two classes' subspaces (0–1); higher means classes share directions.",
        bounds: FRACTION,
        heatmap: UNIT,
        ..measure("subspace_cos_mean", "subspace cos", |r| {
            Some(r.subspace_cos_mean)
        })
    },
    Figure {
        human: "within-class collapse (NC1)",
        how: "Within-class spread relative to between-class spread; lower means tighter classes, 0 is full collapse.",
        bounds: NON_NEGATIVE,
        heatmap: Some(Range::Data),
        ..measure("nc1", "NC1", |r| Some(r.nc1))
    },
    Figure {
        human: "linear-probe accuracy",
        how: "Held-out accuracy of a linear classifier on the layer's scores (0–1): how linearly decodable the labels are.",
        bounds: FRACTION,
        heatmap: UNIT,
        ..measure("probe_acc", "probe", |r| Some(r.probe_acc))
    },
    column("seconds_svd", Kind::Timing, |r| Some(r.seconds.svd)),
    column("seconds_dynamics", Kind::Timing, |r| {
        Some(r.seconds.dynamics)
    }),
    column("seconds_cka", Kind::Timing, |r| Some(r.seconds.cka)),
    column("seconds_total", Kind::Timing, |r| Some(r.seconds.total())),
    // The network's own fit on the probe images, one figure per sample (the same on every
    // layer's row); last so that the older columns keep their places.
    Figure {
        human: "network accuracy on the probe images",
        how: "Share of probe images the network itself classifies correctly (0–1).",
        bounds: FRACTION,
        title: None,
        plotted: false,
        ..measure("accuracy", "network acc.", |r| r.accuracy)
    },
    Figure {
        human: "network loss on the probe images",
        how: "Mean cross-entropy of the network's logits at the labels; lower is better.",
        bounds: NON_NEGATIVE,
        title: None,
        plotted: false,
        ..measure("loss", "network loss", |r| r.loss)
    },
    Figure {
        human: "converged step",
        how: "The first sample step from which the layer's CKA to its final representation stays at or \
              above 0.9 (Raghu et al. 2017): lower layers converging earlier is bottom-up convergence.",
        bounds: NON_NEGATIVE,
        ..column("converged_step", Kind::Measure, |r| {
            r.converged_step.map(|s| s as f64)
        })
    },
];

/// The figure called `name`.
pub fn figure(name: &str) -> Option<&'static Figure> {
    FIGURES.iter().find(|f| f.name == name)
}

/// The figures with a line plot.
pub fn plotted() -> impl Iterator<Item = &'static Figure> {
    FIGURES.iter().filter(|f| f.plotted)
}

/// The figures with a heatmap.
pub fn heatmaps() -> impl Iterator<Item = &'static Figure> {
    FIGURES.iter().filter(|f| f.heatmap.is_some())
}

/// The figures of the report's table.
pub fn in_table() -> impl Iterator<Item = &'static Figure> {
    FIGURES.iter().filter(|f| f.title.is_some())
}

/// The figures that mean something averaged over runs (every one but the timings).
pub fn aggregated() -> impl Iterator<Item = &'static Figure> {
    FIGURES.iter().filter(|f| f.kind != Kind::Timing)
}

impl Figure {
    /// The value, NaN where the report has none (how plots and heatmaps take a gap).
    pub fn value(&self, r: &LayerReport) -> f64 {
        (self.read)(r).unwrap_or(f64::NAN)
    }

    /// The CSV cell: every digit (empty where there is no value), seconds to the millisecond.
    pub fn csv_cell(&self, r: &LayerReport) -> String {
        match ((self.read)(r), self.style) {
            (None, _) => String::new(),
            (Some(v), Style::Seconds) => format!("{v:.3}"),
            (Some(v), _) => format!("{v}"),
        }
    }

    /// The report's table cell ("–" where there is no value).
    pub fn table_cell(&self, r: &LayerReport) -> String {
        self.format((self.read)(r))
    }

    /// The range of a change of this figure (one value minus another): (low − high, high −
    /// low) of its bounds.
    pub fn change_bounds(&self) -> Option<(f64, f64)> {
        self.bounds.map(|(lo, hi)| (lo - hi, hi - lo))
    }

    /// Its name for a reader: [`Figure::human`], else the column name.
    pub fn human_title(&self) -> &'static str {
        if self.human.is_empty() {
            self.name
        } else {
            self.human
        }
    }

    /// A value printed in this figure's style ("–" for none).
    pub fn format(&self, v: Option<f64>) -> String {
        match (v, self.style) {
            (None, _) => "–".into(),
            (Some(v), _) if v.is_nan() => "–".into(),
            (Some(v), Style::Count) => format!("{v:.0}"),
            (Some(v), Style::Ratio | Style::Seconds) => format!("{v:.3}"),
            (Some(v), Style::Percent) => format!("{:.0}%", v * 100.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_csv_order_is_kept() {
        let names: Vec<&str> = FIGURES.iter().map(|f| f.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "duplicate figure names");
        // The columns downstream readers (notebooks, the reference comparison) index by.
        assert_eq!(
            names.join(","),
            "n,d_total,d_kept,k,k_used,energy_at_k,n_clusters,noise_frac,purity_with_noise,\
             purity_without_noise,homogeneity,completeness,v_measure,ari,nmi,knn_agreement,\
             silhouette_true,cka_vs_final,cka_vs_prev,subspace_cos_mean,nc1,probe_acc,\
             seconds_svd,seconds_dynamics,seconds_cka,seconds_total,accuracy,loss,converged_step"
        );
    }

    #[test]
    fn styles_print_as_the_report_always_did() {
        let f = |name| *figure(name).unwrap();
        assert_eq!(f("noise_frac").format(Some(0.456)), "46%");
        assert_eq!(f("k").format(Some(12.0)), "12");
        assert_eq!(f("ari").format(Some(0.12345)), "0.123");
        assert_eq!(f("cka_vs_prev").format(None), "–");
        assert_eq!(
            heatmaps().map(|f| f.name).collect::<Vec<_>>(),
            [
                "cka_vs_final",
                "cka_vs_prev",
                "subspace_cos_mean",
                "nc1",
                "probe_acc"
            ]
        );
        assert_eq!(plotted().count(), 16);
        assert!(aggregated().all(|f| !f.name.starts_with("seconds")));
    }
}
