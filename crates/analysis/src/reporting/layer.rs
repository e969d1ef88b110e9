//! One layer of one file analysed: the numerics' [`LayerAnalysis`] together with where the
//! representation came from (file, layer, epoch, step, sample), which is what `cnnu reduce`
//! prints and a run's summary collects.

use std::ops::{Deref, DerefMut};

use serde::Serialize;

use crate::numerics::dynamics::CenteredGram;
use crate::numerics::pipeline::{self, AnalysisError, LayerAnalysis, ValidAnalysisParams};
use crate::readers::source::Activations;

/// A layer's analysis with its provenance; serialises to the JSON of `cnnu reduce --json`.
/// It reads as its [`LayerAnalysis`] (`report.k`, `report.agreement`, …) through `Deref`.
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
    /// The sampled network's own accuracy on the probe images (its predictions against the
    /// labels): one figure per sample, the same on every layer's row. Set by a run's analysis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// The network's mean cross-entropy on the probe images, from the snapshot's logits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// The layer's converged step: the first sample step from which its CKA to the final
    /// sample stays at or above [`CONVERGED_CKA`](crate::numerics::dynamics::CONVERGED_CKA),
    /// the same on every sample's row of the layer. Set by a run's analysis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub converged_step: Option<u64>,
    /// What the analysis found.
    #[serde(flatten)]
    pub analysis: LayerAnalysis,
}

impl Deref for LayerReport {
    type Target = LayerAnalysis;

    fn deref(&self) -> &LayerAnalysis {
        &self.analysis
    }
}

impl DerefMut for LayerReport {
    fn deref_mut(&mut self) -> &mut LayerAnalysis {
        &mut self.analysis
    }
}

/// The analysis of a layer failed.
#[derive(Debug, thiserror::Error)]
#[error("{layer}: {source}")]
pub struct LayerError {
    /// The layer.
    pub layer: String,
    /// Why.
    #[source]
    pub source: AnalysisError,
}

/// Analyses the layer `acts` holds; `load_seconds` is what reading it took.
pub fn analyze(
    acts: &Activations,
    params: &ValidAnalysisParams,
    load_seconds: f64,
) -> Result<LayerReport, LayerError> {
    analyze_layer(acts, params, load_seconds, false).map(|(r, _)| r)
}

/// [`analyze`], also returning the layer's centred sample Gram matrix when `keep_gram` is set
/// (for CKA across epochs); see [`pipeline::analyze_layer`].
pub fn analyze_layer(
    acts: &Activations,
    params: &ValidAnalysisParams,
    load_seconds: f64,
    keep_gram: bool,
) -> Result<(LayerReport, Option<CenteredGram>), LayerError> {
    let p = &acts.provenance;
    let (mut analysis, gram) = pipeline::analyze_layer(&acts.representation, params, keep_gram)
        .map_err(|source| LayerError {
            layer: p.layer.clone(),
            source,
        })?;
    analysis.seconds.load = load_seconds;
    let report = LayerReport {
        source: p.source.display().to_string(),
        epoch: p.epoch,
        step: p.step,
        sample: None,
        layer: p.layer.clone(),
        accuracy: None,
        loss: None,
        converged_step: None,
        analysis,
    };
    Ok((report, gram))
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
