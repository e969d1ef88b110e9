//! The seed project's analysis of one layer, step by step: filter → reduce (pca / svd) →
//! cluster (HDBSCAN) → purity and the other agreement measures → the representation measures
//! (class-subspace alignment, NC1, linear probe) → t-SNE (optional). Cross-epoch CKA needs two
//! epochs, so [`analyze_layer`] can hand back the layer's centred Gram matrix for it.
//!
//! It takes a [`Representation`] (the caller's matrix and labels) and nothing about where it
//! came from: file, layer name, epoch and the time spent reading are the reader's and the
//! run's (`reporting::layer` puts them together).

use std::time::Instant;

use serde::Serialize;

use crate::numerics::cluster::{ClusterError, HdbscanParams, hdbscan};
use crate::numerics::dynamics::{
    self, CenteredGram, DynamicsError, Hsic, ProbeResult, SubspaceAlignment,
};
use crate::numerics::embed::{EmbedError, Embedding, TsneParams, tsne};
use crate::numerics::matrix::Representation;
use crate::numerics::metrics::{
    ClusterAgreement, MetricsError, cluster_agreement, knn_agreement_rows, silhouette_true_rows,
};
use crate::numerics::reduce::{
    FilterClass, Method, ReduceError, Solver, filter_features, reduce_rows, select_columns,
};

/// Above this many samples CKA uses the first `CKA_MAX_N` of them (the probe set is the same
/// images at every epoch, so the prefix is a fixed subsample): its centred Gram matrices cost
/// `n²` floats each and a run keeps three per layer in flight (final, previous, current).
pub const CKA_MAX_N: usize = 4096;

/// The seed of the linear probe's train/test split, fixed so every epoch and layer is split
/// alike and runs are reproducible.
pub const PROBE_SEED: u64 = 0;

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
    /// A parameter out of range.
    #[error("{name} {problem}")]
    Invalid {
        /// The field of [`AnalysisParams`].
        name: &'static str,
        /// Why.
        problem: String,
    },
    /// The reduce step failed.
    #[error(transparent)]
    Reduce(#[from] ReduceError),
    /// Clustering failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A measure could not be computed.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// A representation measure failed on valid-looking data.
    #[error(transparent)]
    Dynamics(#[from] DynamicsError),
    /// t-SNE failed.
    #[error(transparent)]
    Embed(#[from] EmbedError),
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
                "act_threshold",
                format!("must be a number >= 0, got {}", self.act_threshold),
            );
        }
        if self.min_cluster_size < 2 {
            return invalid(
                "min_cluster_size",
                format!("must be at least 2, got {}", self.min_cluster_size),
            );
        }
        if self.min_samples == Some(0) {
            return invalid("min_samples", "must be at least 1".into());
        }
        if self.max_k == Some(0) {
            return invalid("max_k", "must be at least 1".into());
        }
        if self.knn_k == 0 {
            return invalid("knn_k", "must be at least 1".into());
        }
        Ok(ValidAnalysisParams(self))
    }
}

/// Seconds spent in each step.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Seconds {
    /// Reading the file (0 here: set by whoever read it).
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

/// Everything the analysis of one representation finds (with where it came from, it is the
/// JSON of `cnnu reduce --json`).
#[derive(Debug, Clone, Serialize)]
pub struct LayerAnalysis {
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

/// Runs the analysis of one layer's representation: `rep`'s rows are the samples, its labels
/// their classes.
pub fn analyze(
    rep: &Representation,
    params: &ValidAnalysisParams,
) -> Result<LayerAnalysis, AnalysisError> {
    analyze_layer(rep, params, false).map(|(r, _)| r)
}

/// A representation measure that is undefined on this data (one class, a constant layer, too
/// few samples to split) is a NaN for the layer, not a failed analysis.
fn undefined_or(e: DynamicsError) -> Result<f64, AnalysisError> {
    match e {
        DynamicsError::TooFewClasses { .. }
        | DynamicsError::TooFewSamples { .. }
        | DynamicsError::NoBetweenClassSpread
        | DynamicsError::EmptySplit { .. }
        | DynamicsError::DegenerateRepresentation { .. } => Ok(f64::NAN),
        source => Err(AnalysisError::Dynamics(source)),
    }
}

/// [`analyze`], also returning the layer's centred sample Gram matrix when `keep_gram` is set
/// (for CKA across epochs). The Gram solver's matrix is reused when it formed one on the
/// sample side; otherwise it costs one more `n²·d` product.
pub fn analyze_layer(
    rep: &Representation,
    params: &ValidAnalysisParams,
    keep_gram: bool,
) -> Result<(LayerAnalysis, Option<CenteredGram>), AnalysisError> {
    let p = params.params();
    let (n, d) = (rep.n(), rep.d());
    let (data, labels) = (rep.features().as_slice(), rep.labels());
    let mut seconds = Seconds::default();

    let t = Instant::now();
    let filter = filter_features(data, n, d, labels, p.filter_class, p.act_threshold)?;
    let kept = select_columns(data, n, d, &filter.kept);
    seconds.filter = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let d_kept = filter.kept.len();
    let mut red = reduce_rows(&kept, n, d_kept, p.method, p.energy, p.max_k, p.solver)?;
    seconds.svd = t.elapsed().as_secs_f64();

    // The Gram solver's sample-side matrix, when it formed one, serves CKA and the class
    // subspaces without another n²·d product.
    let sample_gram = red.sample_gram.take();
    let t = Instant::now();
    let gram = if keep_gram {
        cka_gram(&kept, n, d_kept, sample_gram.as_deref())?
    } else {
        None
    };
    seconds.cka = t.elapsed().as_secs_f64();

    // The class subspaces and NC1 live in the filtered feature space (the directions the
    // reduce step sees); the probe reads the k scores, as HDBSCAN does.
    let t = Instant::now();
    let (subspace, nc1) = class_measures(&kept, n, d_kept, sample_gram, labels, p.energy)?;
    drop(kept);
    let probe = match dynamics::linear_probe(&red.scores, n, red.k_used, labels, PROBE_SEED) {
        Ok(r) => Some(r),
        Err(e) => {
            undefined_or(e)?;
            None
        }
    };
    seconds.dynamics = t.elapsed().as_secs_f64();

    let (clusters, agreement, knn, silhouette) =
        cluster_and_agree(&red.scores, n, red.k_used, labels, p, &mut seconds)?;

    let embedding = if p.tsne {
        let t = Instant::now();
        let e = tsne(&red.scores, n, red.k_used, labels, &p.tsne_params)?;
        seconds.tsne = t.elapsed().as_secs_f64();
        Some(e)
    } else {
        None
    };

    let verdict = verdict(agreement.n_clusters, agreement.noise_frac, red.k_used, p);
    let report = LayerAnalysis {
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
        labels: labels.to_vec(),
        class_names: rep.class_names().map(<[String]>::to_vec),
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
) -> Result<Option<CenteredGram>, AnalysisError> {
    let m = n.min(CKA_MAX_N);
    let g = match sample_gram {
        Some(g) if m == n => CenteredGram::from_gram(g, n),
        _ => CenteredGram::from_rows(&kept[..m * d_kept], m, d_kept),
    };
    match g {
        Ok(g) => Ok(Some(g)),
        Err(e) => undefined_or(e).map(|_| None),
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
) -> Result<(Option<SubspaceAlignment>, f64), AnalysisError> {
    let subspace = match &sample_gram {
        Some(g) => dynamics::class_subspace_alignment_from_gram(g, n, labels, energy),
        None => dynamics::class_subspace_alignment(kept, n, d_kept, labels, energy),
    };
    drop(sample_gram);
    let subspace = match subspace {
        Ok(s) => Some(s),
        Err(e) => {
            undefined_or(e)?;
            None
        }
    };
    let nc1 = dynamics::nc1(kept, n, d_kept, labels).or_else(undefined_or)?;
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
    seconds: &mut Seconds,
) -> Result<(Vec<i64>, ClusterAgreement, f64, f64), AnalysisError> {
    let t = Instant::now();
    let hdb = HdbscanParams::new(p.min_cluster_size)
        .with_min_samples(p.min_samples.unwrap_or(p.min_cluster_size))
        .validate(n)?;
    let clusters = hdbscan(scores, n, k, hdb)?;
    seconds.cluster = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let agreement = cluster_agreement(labels, &clusters)?;
    // Both measures are undefined on degenerate inputs (one sample; one class, or one class
    // per sample): that is a NaN (null in JSON) for this layer, not a failed analysis.
    let knn = match knn_agreement_rows(
        scores,
        n,
        k,
        labels,
        p.knn_k.min(n.saturating_sub(1)).max(1),
    ) {
        Err(MetricsError::InvalidK { .. }) => f64::NAN,
        other => other?,
    };
    let silhouette = match silhouette_true_rows(scores, n, k, labels) {
        Err(MetricsError::InvalidClassCount { .. }) => f64::NAN,
        other => other?,
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
