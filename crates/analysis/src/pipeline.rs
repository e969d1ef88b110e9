//! The seed project's analysis of one layer, step by step: filter → reduce (pca / svd) →
//! cluster (HDBSCAN) → purity and the other agreement measures → the representation measures
//! (class-subspace alignment, NC1, linear probe) → t-SNE (optional). Cross-epoch CKA needs two
//! epochs, so [`analyze_layer`] can hand back the layer's centred Gram matrix for it.

use std::time::Instant;

use serde::Serialize;

use crate::cluster::{ClusterError, HdbscanParams, hdbscan};
use crate::dynamics::{self, CenteredGram, DynamicsError, Hsic, ProbeResult, SubspaceAlignment};
use crate::embed::{EmbedError, Embedding, TsneParams, tsne};
use crate::metrics::{
    ClusterAgreement, MetricsError, cluster_agreement, knn_agreement, silhouette_true,
};
use crate::reduce::{
    FilterClass, Method, ReduceError, Solver, filter_features, reduce, select_columns,
};

/// Above this many samples CKA uses the first `CKA_MAX_N` of them (the probe set is the same
/// images at every epoch, so the prefix is a fixed subsample): its centred Gram matrices cost
/// `n²` floats each and a run keeps three per layer in flight (final, previous, current).
pub const CKA_MAX_N: usize = 4096;

/// The seed of the linear probe's train/test split, fixed so every epoch and layer is split
/// alike and runs are reproducible.
pub const PROBE_SEED: u64 = 0;
use crate::source::Activations;

/// Settings of the analysis, as given; [`check`](AnalysisParams::check) validates them once.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisParams {
    /// Centre the columns (`Pca`) or not (`Svd`).
    pub method: Method,
    /// Energy threshold that picks k, in (0, 1].
    pub energy: f64,
    /// Keep a feature when its mean |x| over the filter class exceeds this.
    pub act_threshold: f32,
    /// Which samples the filter looks at.
    pub filter_class: FilterClass,
    /// HDBSCAN's min cluster size.
    pub min_cluster_size: usize,
    /// HDBSCAN's min samples (default: the min cluster size).
    pub min_samples: Option<usize>,
    /// At most this many scores go to clustering and the score-space measures.
    pub max_k: Option<usize>,
    /// Which SVD route to use.
    pub solver: Solver,
    /// Neighbours for `knn_agreement`.
    pub knn_k: usize,
    /// Embed with t-SNE.
    pub tsne: bool,
    /// t-SNE settings.
    pub tsne_params: TsneParams,
    /// The HSIC estimator of the cross-epoch CKA.
    pub hsic: Hsic,
}

impl Default for AnalysisParams {
    fn default() -> Self {
        Self {
            method: Method::Pca,
            energy: 0.9,
            act_threshold: 1e-3,
            filter_class: FilterClass::Class(0),
            min_cluster_size: 50,
            min_samples: None,
            max_k: None,
            solver: Solver::Auto,
            knn_k: 10,
            tsne: false,
            tsne_params: TsneParams::default(),
            hsic: Hsic::Biased,
        }
    }
}

/// Checked [`AnalysisParams`].
#[derive(Debug, Clone, PartialEq)]
pub struct ValidAnalysisParams(AnalysisParams);

impl ValidAnalysisParams {
    /// The settings.
    pub fn params(&self) -> &AnalysisParams {
        &self.0
    }
}

/// Errors of the analysis.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// An option out of range.
    #[error("--{name} {problem}")]
    Invalid {
        /// The option.
        name: &'static str,
        /// Why.
        problem: String,
    },
    /// The reduce step failed.
    #[error("{layer}: {source}")]
    Reduce {
        /// The layer.
        layer: String,
        /// Why.
        #[source]
        source: ReduceError,
    },
    /// Clustering failed.
    #[error("{layer}: {source}")]
    Cluster {
        /// The layer.
        layer: String,
        /// Why.
        #[source]
        source: ClusterError,
    },
    /// A measure could not be computed.
    #[error("{layer}: {source}")]
    Metrics {
        /// The layer.
        layer: String,
        /// Why.
        #[source]
        source: MetricsError,
    },
    /// A representation measure failed on valid-looking data.
    #[error("{layer}: {source}")]
    Dynamics {
        /// The layer.
        layer: String,
        /// Why.
        #[source]
        source: DynamicsError,
    },
    /// t-SNE failed.
    #[error("{layer}: {source}")]
    Embed {
        /// The layer.
        layer: String,
        /// Why.
        #[source]
        source: EmbedError,
    },
}

impl AnalysisParams {
    /// Validates everything that does not depend on the data.
    pub fn check(self) -> Result<ValidAnalysisParams, AnalysisError> {
        let invalid = |name, problem: String| Err(AnalysisError::Invalid { name, problem });
        if !(self.energy > 0.0 && self.energy <= 1.0) {
            return invalid("energy", format!("must be in (0, 1], got {}", self.energy));
        }
        if !(self.act_threshold.is_finite() && self.act_threshold >= 0.0) {
            return invalid(
                "act-threshold",
                format!("must be a number >= 0, got {}", self.act_threshold),
            );
        }
        if self.min_cluster_size < 2 {
            return invalid(
                "min-cluster-size",
                format!("must be at least 2, got {}", self.min_cluster_size),
            );
        }
        if self.min_samples == Some(0) {
            return invalid("min-samples", "must be at least 1".into());
        }
        if self.max_k == Some(0) {
            return invalid("max-k", "must be at least 1".into());
        }
        if self.knn_k == 0 {
            return invalid("knn-k", "must be at least 1".into());
        }
        Ok(ValidAnalysisParams(self))
    }
}

/// Seconds spent in each step.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Seconds {
    /// Reading the file.
    pub load: f64,
    /// The feature filter.
    pub filter: f64,
    /// Centring and SVD.
    pub svd: f64,
    /// HDBSCAN.
    pub cluster: f64,
    /// The agreement measures.
    pub metrics: f64,
    /// t-SNE (0 when not asked for).
    pub tsne: f64,
    /// Class-subspace alignment, NC1 and the linear probe.
    pub dynamics: f64,
    /// The centred Gram matrix and the CKA products (0 outside a run).
    pub cka: f64,
}

impl Seconds {
    /// The whole layer's time.
    pub fn total(&self) -> f64 {
        self.load
            + self.filter
            + self.svd
            + self.cluster
            + self.metrics
            + self.tsne
            + self.dynamics
            + self.cka
    }
}

/// Everything the analysis of one layer finds; serialises to the JSON of `cnnu reduce --json`.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// The file analysed.
    pub source: String,
    /// Whole epochs completed when the sample was taken, for snapshots.
    pub epoch: Option<usize>,
    /// Optimizer steps done when the sample was taken (snapshots of runs with step sampling).
    pub step: Option<u64>,
    /// The sample's file stem (`epoch-003`, `step-0000040`), for snapshots of a run.
    pub sample: Option<String>,
    /// The layer.
    pub layer: String,
    /// `pca` or `svd`.
    pub method: Method,
    /// The SVD route taken.
    pub solver: Solver,
    /// Samples.
    pub n: usize,
    /// Features before the filter.
    pub d_total: usize,
    /// Features after it.
    pub d_kept: usize,
    /// Rank that reaches the energy threshold.
    pub k: usize,
    /// Scores passed on (k, or `--max-k` if smaller).
    pub k_used: usize,
    /// Cumulative energy at k.
    pub energy_at_k: f64,
    /// Leading singular values (at least k + 20), descending.
    pub singular_values: Vec<f64>,
    /// HDBSCAN's label per sample, -1 = noise.
    pub cluster_labels: Vec<i64>,
    /// Agreement of the clusters with the labels: cluster count, noise share, purity (both
    /// forms), homogeneity, completeness, V-measure, ARI, NMI (flattened into the JSON).
    #[serde(flatten)]
    pub agreement: ClusterAgreement,
    /// Share of each sample's nearest neighbours in score space with its label.
    pub knn_agreement: f64,
    /// Silhouette of the true labels in score space.
    pub silhouette_true: f64,
    /// Linear CKA with this layer's representation at the run's last epoch (runs only).
    pub cka_vs_final: Option<f64>,
    /// Linear CKA with this layer's representation at the previous epoch (runs only; none at
    /// the first epoch).
    pub cka_vs_prev: Option<f64>,
    /// Samples the CKA compared (all of them up to [`CKA_MAX_N`]; runs only).
    pub cka_n: Option<usize>,
    /// Mean over class pairs of the mean principal-angle cosine between the classes'
    /// subspaces (1: the classes span the same directions, 0: orthogonal ones).
    pub subspace_cos_mean: f64,
    /// The class subspaces behind it: classes, ranks and the class × class cosine matrix.
    pub subspace: Option<SubspaceAlignment>,
    /// Neural collapse NC1, tr(Σ_W Σ_B⁺)/C: 0 when every sample sits on its class mean.
    pub nc1: f64,
    /// Linear-probe accuracy on the scores: fit on a stratified half, measured on the other.
    pub probe_acc: f64,
    /// The probe's details (train accuracy, split sizes).
    pub probe: Option<ProbeResult>,
    /// Seconds per step.
    pub seconds: Seconds,
    /// The plain-words reading of the clustering (says so when all is noise).
    pub verdict: String,
    /// The t-SNE embedding, when asked for (not in the JSON).
    #[serde(skip)]
    pub embedding: Option<Embedding>,
    /// The labels of the samples (not in the JSON).
    #[serde(skip)]
    pub labels: Vec<i64>,
    /// Class names by label, when the source records them (not in the JSON).
    #[serde(skip)]
    pub class_names: Option<Vec<String>>,
}

/// Runs the analysis of one layer. `load_seconds` is what reading it took.
pub fn analyze(
    acts: &Activations,
    params: &ValidAnalysisParams,
    load_seconds: f64,
) -> Result<LayerReport, AnalysisError> {
    analyze_layer(acts, params, load_seconds, false).map(|(r, _)| r)
}

/// A representation measure that is undefined on this data (one class, a constant layer, too
/// few samples to split) is a NaN for the layer, not a failed analysis.
fn undefined_or(e: DynamicsError, layer: &str) -> Result<f64, AnalysisError> {
    match e {
        DynamicsError::TooFewClasses { .. }
        | DynamicsError::TooFewSamples { .. }
        | DynamicsError::NoBetweenClassSpread
        | DynamicsError::EmptySplit { .. }
        | DynamicsError::DegenerateRepresentation { .. } => Ok(f64::NAN),
        source => Err(AnalysisError::Dynamics {
            layer: layer.to_string(),
            source,
        }),
    }
}

/// [`analyze`], also returning the layer's centred sample Gram matrix when `keep_gram` is set
/// (for CKA across epochs). The Gram solver's matrix is reused when it formed one on the
/// sample side; otherwise it costs one more `n²·d` product.
pub fn analyze_layer(
    acts: &Activations,
    params: &ValidAnalysisParams,
    load_seconds: f64,
    keep_gram: bool,
) -> Result<(LayerReport, Option<CenteredGram>), AnalysisError> {
    let p = params.params();
    let layer = acts.layer.clone();
    let reduce_err = |source| AnalysisError::Reduce {
        layer: layer.clone(),
        source,
    };
    let (n, d) = (acts.n, acts.d());
    let mut seconds = Seconds {
        load: load_seconds,
        ..Seconds::default()
    };

    let t = Instant::now();
    let filter = filter_features(
        &acts.data,
        n,
        d,
        &acts.labels,
        p.filter_class,
        p.act_threshold,
    )
    .map_err(reduce_err)?;
    let kept = select_columns(&acts.data, n, d, &filter.kept);
    seconds.filter = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let d_kept = filter.kept.len();
    let mut red =
        reduce(&kept, n, d_kept, p.method, p.energy, p.max_k, p.solver).map_err(reduce_err)?;
    seconds.svd = t.elapsed().as_secs_f64();

    // The Gram solver's sample-side matrix, when it formed one, serves CKA and the class
    // subspaces without another n²·d product.
    let sample_gram = red.sample_gram.take();
    let t = Instant::now();
    let gram = if keep_gram {
        cka_gram(&kept, n, d_kept, sample_gram.as_deref(), &layer)?
    } else {
        None
    };
    seconds.cka = t.elapsed().as_secs_f64();

    // The class subspaces and NC1 live in the filtered feature space (the directions the
    // reduce step sees); the probe reads the k scores, as HDBSCAN does.
    let t = Instant::now();
    let (subspace, nc1) = class_measures(
        &kept,
        n,
        d_kept,
        sample_gram,
        &acts.labels,
        p.energy,
        &layer,
    )?;
    drop(kept);
    let probe = match dynamics::linear_probe(&red.scores, n, red.k_used, &acts.labels, PROBE_SEED) {
        Ok(r) => Some(r),
        Err(e) => {
            undefined_or(e, &layer)?;
            None
        }
    };
    seconds.dynamics = t.elapsed().as_secs_f64();

    let (clusters, agreement, knn, silhouette) = cluster_and_agree(
        &red.scores,
        n,
        red.k_used,
        &acts.labels,
        p,
        &layer,
        &mut seconds,
    )?;

    let embedding = if p.tsne {
        let t = Instant::now();
        let e =
            tsne(&red.scores, n, red.k_used, &acts.labels, &p.tsne_params).map_err(|source| {
                AnalysisError::Embed {
                    layer: layer.clone(),
                    source,
                }
            })?;
        seconds.tsne = t.elapsed().as_secs_f64();
        Some(e)
    } else {
        None
    };

    let verdict = verdict(agreement.n_clusters, agreement.noise_frac, red.k_used, p);
    let report = LayerReport {
        source: acts.source.display().to_string(),
        epoch: acts.epoch,
        step: acts.step,
        sample: None,
        layer,
        method: p.method,
        solver: red.solver,
        n,
        d_total: filter.d_total,
        d_kept: filter.kept.len(),
        k: red.k,
        k_used: red.k_used,
        energy_at_k: red.energy_at_k,
        singular_values: red.singular_values,
        cluster_labels: clusters,
        agreement,
        knn_agreement: knn,
        silhouette_true: silhouette,
        cka_vs_final: None,
        cka_vs_prev: None,
        cka_n: gram.as_ref().map(CenteredGram::n),
        subspace_cos_mean: subspace.as_ref().map_or(f64::NAN, |s| s.mean),
        subspace,
        nc1,
        probe_acc: probe.as_ref().map_or(f64::NAN, |r| r.accuracy),
        probe,
        seconds,
        verdict,
        embedding,
        labels: acts.labels.clone(),
        class_names: acts.class_names.clone(),
    };
    Ok((report, gram))
}

/// The centred sample Gram matrix for CKA (on the first [`CKA_MAX_N`] samples), from the
/// Gram solver's matrix when it formed one on all of them; None where CKA is undefined.
fn cka_gram(
    kept: &[f32],
    n: usize,
    d_kept: usize,
    sample_gram: Option<&[f64]>,
    layer: &str,
) -> Result<Option<CenteredGram>, AnalysisError> {
    let m = n.min(CKA_MAX_N);
    let g = match sample_gram {
        Some(g) if m == n => CenteredGram::from_gram(g, n),
        _ => CenteredGram::from_features(&kept[..m * d_kept], m, d_kept),
    };
    match g {
        Ok(g) => Ok(Some(g)),
        Err(e) => undefined_or(e, layer).map(|_| None),
    }
}

/// The class subspaces and NC1, in the filtered feature space (the directions the reduce step
/// sees); the Gram matrix, when there is one, spares the subspaces an n²·d product.
fn class_measures(
    kept: &[f32],
    n: usize,
    d_kept: usize,
    sample_gram: Option<Vec<f64>>,
    labels: &[i64],
    energy: f64,
    layer: &str,
) -> Result<(Option<SubspaceAlignment>, f64), AnalysisError> {
    let subspace = match &sample_gram {
        Some(g) => dynamics::class_subspace_alignment_from_gram(g, n, labels, energy),
        None => dynamics::class_subspace_alignment(kept, n, d_kept, labels, energy),
    };
    drop(sample_gram);
    let subspace = match subspace {
        Ok(s) => Some(s),
        Err(e) => {
            undefined_or(e, layer)?;
            None
        }
    };
    let nc1 = dynamics::nc1(kept, n, d_kept, labels).or_else(|e| undefined_or(e, layer))?;
    Ok((subspace, nc1))
}

/// HDBSCAN on the scores and the clusters' agreement with the labels, then the two measures
/// that need no clusters (kNN agreement, silhouette of the labels).
fn cluster_and_agree(
    scores: &[f32],
    n: usize,
    k: usize,
    labels: &[i64],
    p: &AnalysisParams,
    layer: &str,
    seconds: &mut Seconds,
) -> Result<(Vec<i64>, ClusterAgreement, f64, f64), AnalysisError> {
    let t = Instant::now();
    let cluster_err = |source| AnalysisError::Cluster {
        layer: layer.to_string(),
        source,
    };
    let hdb = HdbscanParams::new(p.min_cluster_size)
        .with_min_samples(p.min_samples.unwrap_or(p.min_cluster_size))
        .validate(n)
        .map_err(cluster_err)?;
    let clusters = hdbscan(scores, n, k, hdb).map_err(cluster_err)?;
    seconds.cluster = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let metrics_err = |source| AnalysisError::Metrics {
        layer: layer.to_string(),
        source,
    };
    let agreement = cluster_agreement(labels, &clusters).map_err(metrics_err)?;
    // Both measures are undefined on degenerate inputs (one sample; one class, or one class
    // per sample): that is a NaN (null in JSON) for this layer, not a failed analysis.
    let knn = match knn_agreement(
        scores,
        n,
        k,
        labels,
        p.knn_k.min(n.saturating_sub(1)).max(1),
    ) {
        Err(MetricsError::InvalidK { .. }) => f64::NAN,
        other => other.map_err(metrics_err)?,
    };
    let silhouette = match silhouette_true(scores, n, k, labels) {
        Err(MetricsError::InvalidClassCount { .. }) => f64::NAN,
        other => other.map_err(metrics_err)?,
    };
    seconds.metrics = t.elapsed().as_secs_f64();
    Ok((clusters, agreement, knn, silhouette))
}

/// The clustering in plain words; when HDBSCAN finds nothing it says so, with what to try.
pub fn verdict(n_clusters: usize, noise_frac: f64, k_used: usize, p: &AnalysisParams) -> String {
    if n_clusters == 0 {
        format!(
            "HDBSCAN labelled every sample noise on {k_used} scores (min cluster size {}): no \
             cluster purity to report. Try fewer scores (--max-k 10), a smaller \
             --min-cluster-size, or rely on knn_agreement and silhouette_true, which need no \
             clusters.",
            p.min_cluster_size
        )
    } else {
        format!(
            "HDBSCAN found {n_clusters} cluster{} on {k_used} scores, {:.0}% of samples noise.",
            if n_clusters == 1 { "" } else { "s" },
            noise_frac * 100.0
        )
    }
}

impl LayerReport {
    /// A few lines for a terminal.
    pub fn summary_text(&self) -> String {
        let purity_wo = self
            .agreement
            .purity_without_noise
            .map_or("n/a (all noise)".to_string(), |v| format!("{v:.3}"));
        format!(
            "{layer}{epoch}: n={n} d={d_total} kept={d_kept} k={k} (energy {e:.4}{capped})\n\
             clusters={nc} noise={noise:.1}% purity={pw:.3} purity_without_noise={purity_wo}\n\
             homogeneity={h:.3} completeness={c:.3} v_measure={v:.3} ari={ari:.3} nmi={nmi:.3}\n\
             knn_agreement={knn:.3} silhouette_true={sil:.3}\n\
             subspace_cos_mean={scos:.3} nc1={nc1:.4} probe_acc={probe:.3}\n{verdict}",
            layer = self.layer,
            epoch = self
                .epoch
                .map_or(String::new(), |e| format!(" (epoch {e})")),
            n = self.n,
            d_total = self.d_total,
            d_kept = self.d_kept,
            k = self.k,
            e = self.energy_at_k,
            capped = if self.k_used < self.k {
                format!(", first {} used", self.k_used)
            } else {
                String::new()
            },
            nc = self.agreement.n_clusters,
            noise = self.agreement.noise_frac * 100.0,
            pw = self.agreement.purity_with_noise,
            h = self.agreement.homogeneity,
            c = self.agreement.completeness,
            v = self.agreement.v_measure,
            ari = self.agreement.ari,
            nmi = self.agreement.nmi,
            knn = self.knn_agreement,
            sil = self.silhouette_true,
            scos = self.subspace_cos_mean,
            nc1 = self.nc1,
            probe = self.probe_acc,
            verdict = self.verdict,
        )
    }
}
