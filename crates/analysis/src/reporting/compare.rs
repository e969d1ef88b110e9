//! Two training runs compared on the same probe images: for every layer both record and every
//! snapshot both took (the same `epoch-EEE` or `step-SSSSSSS` file), the linear CKA between run
//! A's and run B's representation, with a permutation null that says how high CKA gets between
//! representations of these images that have nothing to do with each other; and, at the last
//! snapshot both took, the CKA of every layer of A with every layer of B. [`write_compare`]
//! writes them as `compare.csv`, `compare.json` and the heatmap `cka-layers.png`.
//!
//! CKA here is the biased-HSIC estimator throughout. Its pull towards 1 on wide, few-sample
//! layers is what the null measures (`cka_null_mean` is that baseline, from the same images and
//! widths), so a value is read against its null rather than corrected by the unbiased estimator.
//!
//! Like the run summary's CKA, a comparison uses the first [`CKA_MAX_N`] probe images at most:
//! each representation costs an `n × n` matrix, and the probe set is the same images in both
//! runs, so the prefix is a fixed subsample. Unlike it, a comparison reads every feature of a
//! layer (the summary's CKA runs after the dead-feature filter of each snapshot), so its values
//! need not match the summary's to the digit.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use serde::Serialize;

use crate::numerics::dynamics::{
    CenteredGram, DynamicsError, Hsic, best_matches, layer_identification, linear_cka,
};
use crate::numerics::pipeline::CKA_MAX_N;
use crate::numerics::reduce;
use crate::numerics::rng::SplitMix64;
use crate::readers::foreign::{ForeignError, ForeignFolder};
use crate::readers::source::{self, SourceError};
use crate::reporting::plot;
use crate::reporting::summary::{self, SummaryError};
use cnnu_run::IoError;
use cnnu_run::SampleName;

/// The fewest permutations accepted: with 99 the smallest possible p-value is 0.01.
pub const MIN_PERMUTATIONS: usize = 99;

/// Permutations by default: the smallest possible p-value is 0.005.
pub const DEFAULT_PERMUTATIONS: usize = 199;

/// The labels tensor of a cnnu snapshot (read along with every layer, unused here).
const LABELS: &str = "labels";

/// Settings of a comparison, as given; [`check`](CompareParams::check) validates them once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompareParams {
    /// Permutations of each null (at least [`MIN_PERMUTATIONS`]).
    pub permutations: usize,
    /// Seed of the permutations.
    pub seed: u64,
    /// The layers to compare; none: every layer both runs record, the logits aside.
    pub layers: Option<Vec<String>>,
    /// The HSIC estimator of every CKA: Kornblith et al.'s biased one, or Song et al.'s
    /// unbiased one (debiased CKA; its null is taken the same way).
    pub hsic: Hsic,
}

impl Default for CompareParams {
    fn default() -> Self {
        Self {
            permutations: DEFAULT_PERMUTATIONS,
            seed: 0,
            layers: None,
            hsic: Hsic::Biased,
        }
    }
}

/// Why comparison settings are invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompareParamsError {
    /// Too few permutations for a p-value worth reading.
    #[error("permutations {given}: at least {min} are needed")]
    TooFewPermutations {
        /// Permutations asked for.
        given: usize,
        /// The fewest accepted.
        min: usize,
    },
    /// An empty list of layers.
    #[error("layers names no layer")]
    NoLayers,
    /// A layer named twice.
    #[error("layers names `{0}` twice")]
    DuplicateLayer(String),
}

/// Checked [`CompareParams`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidCompareParams(CompareParams);

/// The defaults, which are valid (a test checks them against [`CompareParams::check`]).
impl Default for ValidCompareParams {
    fn default() -> Self {
        Self(CompareParams::default())
    }
}

impl ValidCompareParams {
    /// The settings.
    pub fn params(&self) -> &CompareParams {
        &self.0
    }
}

impl CompareParams {
    /// Validates everything that does not depend on the runs.
    pub fn check(self) -> Result<ValidCompareParams, CompareParamsError> {
        if self.permutations < MIN_PERMUTATIONS {
            return Err(CompareParamsError::TooFewPermutations {
                given: self.permutations,
                min: MIN_PERMUTATIONS,
            });
        }
        if let Some(layers) = &self.layers {
            if layers.is_empty() {
                return Err(CompareParamsError::NoLayers);
            }
            if let Some(l) = layers
                .iter()
                .enumerate()
                .find_map(|(i, l)| layers[..i].contains(l).then_some(l))
            {
                return Err(CompareParamsError::DuplicateLayer(l.clone()));
            }
        }
        Ok(ValidCompareParams(self))
    }
}

/// Errors of a comparison.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// Listing a run's snapshots, or writing or drawing a result, failed (the run summary's
    /// errors, as the same steps fail alike).
    #[error(transparent)]
    Summary(#[from] SummaryError),
    /// Reading a snapshot failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The runs took no snapshot at the same epoch or step.
    #[error("{a} and {b} have no snapshot (epoch-EEE or step-SSSSSSS) in common")]
    NoCommonSamples {
        /// Run A.
        a: PathBuf,
        /// Run B.
        b: PathBuf,
    },
    /// The runs record no layer of the same name.
    #[error("{a} and {b} record no layer of the same name")]
    NoCommonLayers {
        /// Run A's first common snapshot.
        a: PathBuf,
        /// Run B's.
        b: PathBuf,
    },
    /// A folder of activations from elsewhere that cannot be read.
    #[error(transparent)]
    Foreign(Box<ForeignError>),
    /// A snapshot without `indices`, whose images cannot be matched with the other run's.
    #[error("{0}: no `indices` tensor, so its probe images cannot be matched")]
    NoIndices(PathBuf),
    /// The two snapshots hold different probe images (or the same ones in another order).
    #[error("{b}: other probe images than {a} ({detail})")]
    IndicesDiffer {
        /// Run A's snapshot.
        a: PathBuf,
        /// Run B's snapshot.
        b: PathBuf,
        /// The first difference.
        detail: String,
    },
    /// A layer whose rows are not the snapshot's probe images.
    #[error("{path}: `{layer}` has {n} rows for {indices} probe images")]
    RowCount {
        /// The snapshot.
        path: PathBuf,
        /// The layer.
        layer: String,
        /// Its rows.
        n: usize,
        /// The snapshot's `indices`.
        indices: usize,
    },
    /// CKA failed on the layer (non-finite values, an empty layer).
    #[error("{path}: `{layer}`: {source}")]
    Dynamics {
        /// The snapshot.
        path: PathBuf,
        /// The layer.
        layer: String,
        /// Why.
        #[source]
        source: DynamicsError,
    },
}

/// Linear CKA of two representations of the same rows, with its permutation null.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CkaTest {
    /// The observed CKA (NaN where undefined: a constant representation).
    pub cka: f64,
    /// The mean CKA with B's rows permuted.
    pub cka_null_mean: f64,
    /// The 95th percentile of the null (linear interpolation, numpy's default).
    pub cka_null_p95: f64,
    /// `(1 + #{null ≥ cka}) / (1 + permutations)`.
    pub p_value: f64,
}

impl CkaTest {
    fn undefined() -> Self {
        Self {
            cka: f64::NAN,
            cka_null_mean: f64::NAN,
            cka_null_p95: f64::NAN,
            p_value: f64::NAN,
        }
    }
}

/// One (layer, snapshot) comparison: a row of `compare.csv`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompareRow {
    /// The layer.
    pub layer: String,
    /// The snapshot's file stem, e.g. `epoch-001`.
    pub sample: String,
    /// The optimiser step: run A's `step` metadata, else the file name's (step files only).
    pub step: Option<u64>,
    /// The epoch: run A's `epoch` metadata, else the file name's (epoch files only).
    pub epoch: Option<usize>,
    /// Probe images compared (all of them up to [`CKA_MAX_N`]).
    pub n: usize,
    /// CKA and its null.
    #[serde(flatten)]
    pub test: CkaTest,
}

/// The comparison of two runs.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Run A.
    pub run_a: PathBuf,
    /// Run B.
    pub run_b: PathBuf,
    /// Permutations of each null.
    pub permutations: usize,
    /// Their seed.
    pub seed: u64,
    /// The HSIC estimator of every CKA.
    pub hsic: Hsic,
    /// The layers compared, in run A's forward order.
    pub layers: Vec<String>,
    /// Layer-major, snapshots in training order.
    pub rows: Vec<CompareRow>,
    /// The last snapshot both runs took, where the layer × layer matrix is taken.
    pub matrix_sample: String,
    /// `layer_matrix[i][j]`: CKA of A's `layers[i]` with B's `layers[j]` (NaN where undefined).
    pub layer_matrix: Vec<Vec<f64>>,
    /// The share of A's layers whose most CKA-similar layer of B (in `layer_matrix`) is the
    /// same layer (Kornblith et al. 2019, Table 2); 1 for a run against itself.
    pub layer_identification: f64,
}

/// The layer identification of one pair of runs, at their last common sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairIdentification {
    /// Index of run A in the list given.
    pub a: usize,
    /// Index of run B.
    pub b: usize,
    /// The sample the matrix is taken at.
    pub sample: String,
    /// The share of A's layers identified with the same layer of B.
    pub layer_identification: f64,
    /// The layers of A not identified: (A's layer, B's layer most CKA-similar to it, several
    /// joined by `/` on a tie).
    pub misses: Vec<(String, String)>,
}

/// [`Comparison::layer_identification`] for every pair of `runs`, each at its last common
/// sample: each run's Gram matrices are formed once per sample and layer, with no null.
pub fn identification_over_pairs(
    runs: &[PathBuf],
    params: &ValidCompareParams,
) -> Result<Vec<PairIdentification>, CompareError> {
    let hsic = params.params().hsic;
    // (run, sample) → its layers' Gram matrices, formed once.
    let mut grams: BTreeMap<(usize, String), Vec<Option<CenteredGram>>> = BTreeMap::new();
    let mut out = Vec::new();
    for a in 0..runs.len() {
        for b in a + 1..runs.len() {
            let samples = common_samples(&runs[a], &runs[b])?;
            let last = samples.last().expect("common_samples is never empty");
            let layers = common_layers(last, params)?;
            for (run, path) in [(a, &last.a), (b, &last.b)] {
                if let std::collections::btree_map::Entry::Vacant(slot) =
                    grams.entry((run, last.name.clone()))
                {
                    let formed = layers
                        .par_iter()
                        .map(|l| Ok(load_side(path, l, last.n, hsic)?.gram))
                        .collect::<Result<Vec<_>, CompareError>>()?;
                    slot.insert(formed.into_iter().map(Some).collect());
                }
            }
            let (ga, gb) = (
                &grams[&(a, last.name.clone())],
                &grams[&(b, last.name.clone())],
            );
            let matrix: Vec<Vec<f64>> = ga
                .par_iter()
                .map(|x| {
                    gb.iter()
                        .map(|y| match (x, y) {
                            (Some(x), Some(y)) => linear_cka(x, y, hsic).unwrap_or(f64::NAN),
                            _ => f64::NAN,
                        })
                        .collect()
                })
                .collect();
            // The layers not identified, with what they were taken for (every column of a tie).
            let misses = (best_matches(&matrix).into_iter().enumerate())
                .filter_map(|(i, best)| {
                    let best = best?;
                    let names: Vec<&str> = best.iter().map(|&j| layers[j].as_str()).collect();
                    (best != [i]).then(|| (layers[i].clone(), names.join("/")))
                })
                .collect();
            out.push(PairIdentification {
                a,
                b,
                sample: last.name.clone(),
                layer_identification: layer_identification(&matrix),
                misses,
            });
        }
    }
    Ok(out)
}

/// Linear CKA (biased HSIC) of `a` (`[n, da]`) with `b` (`[n, db]`), row-major, whose rows
/// are the same samples.
pub fn cross_cka(
    a: &[f32],
    b: &[f32],
    n: usize,
    da: usize,
    db: usize,
) -> Result<f64, DynamicsError> {
    let ga = CenteredGram::from_rows(a, n, da)?;
    let gb = CenteredGram::from_rows(b, n, db)?;
    linear_cka(&ga, &gb, Hsic::Biased)
}

/// [`cross_cka`] with its permutation null: `b`'s rows shuffled `permutations` times.
pub fn cka_test(
    a: &[f32],
    b: &[f32],
    n: usize,
    da: usize,
    db: usize,
    params: &ValidCompareParams,
) -> Result<CkaTest, DynamicsError> {
    let hsic = params.params().hsic;
    null_test(
        &Side::new(a, n, da, hsic)?,
        &Side::new(b, n, db, hsic)?,
        params,
    )
}

/// One run's representation of the probe images, in the two forms a test reads.
struct Side {
    /// For the observed CKA and the layer × layer matrix: the crate's CKA.
    gram: CenteredGram,
    /// The same centred Gram matrix (`n × n`, row-major) for the null, which reads it
    /// permuted: `CenteredGram` keeps its matrix to itself. The two agree to f32 rounding, far
    /// below any null's spread, so the observed value can be ranked among the null's.
    k: Vec<f32>,
    /// `‖K‖_F` of `k`.
    norm: f64,
}

impl Side {
    fn new(x: &[f32], n: usize, d: usize, hsic: Hsic) -> Result<Self, DynamicsError> {
        // Columns centred before the product, so the Gram matrix is already H K H.
        let g = reduce::sample_gram(x, n, d, true)?;
        let gram = CenteredGram::from_gram(&g, n)?;
        let k: Vec<f32> = match hsic {
            Hsic::Biased => g.iter().map(|&v| v as f32).collect(),
            Hsic::Unbiased => u_centred(&g, n).iter().map(|&v| v as f32).collect(),
        };
        let norm = k.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
        Ok(Self { gram, k, norm })
    }
}

/// The U-centred Gram matrix (Song et al. 2012; Kornblith et al.'s `center_gram(unbiased=True)`):
/// the diagonal set to 0, then each entry less its row's and column's adjusted means, the
/// diagonal 0 again. Its Frobenius inner products are n(n − 3) times the unbiased HSIC, so
/// their ratio is debiased CKA; permuting the samples permutes its rows and columns alike,
/// which is what lets the null reuse it.
fn u_centred(g: &[f64], n: usize) -> Vec<f64> {
    let mut u = g.to_vec();
    (0..n).for_each(|i| u[i * n + i] = 0.0);
    let denom = (n as f64 - 2.0).max(1.0);
    let mut means: Vec<f64> = u
        .chunks_exact(n)
        .map(|r| r.iter().sum::<f64>() / denom)
        .collect();
    let shift = means.iter().sum::<f64>() / (2.0 * (n as f64 - 1.0).max(1.0));
    means.iter_mut().for_each(|m| *m -= shift);
    for (i, row) in u.chunks_exact_mut(n).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = if i == j {
                0.0
            } else {
                *v - means[i] - means[j]
            };
        }
    }
    u
}

/// The observed CKA of `a` with `b` and its null.
fn null_test(a: &Side, b: &Side, params: &ValidCompareParams) -> Result<CkaTest, DynamicsError> {
    let p = params.params();
    let cka = linear_cka(&a.gram, &b.gram, p.hsic)?;
    Ok(summarise(
        cka,
        null_ckas(a, b, p.permutations, p.seed, p.hsic),
    ))
}

/// CKA of `a` with `b`'s rows permuted, `permutations` times.
///
/// Permuting B's rows permutes the rows and the columns of its centred Gram matrix alike
/// (centring commutes with a permutation) and leaves its self-HSIC as it is, so a draw is one
/// O(n²) pass over the two stored matrices, `Σ_ij K_ij L_π(i)π(j)`, instead of a new `n²·d`
/// Gram product.
fn null_ckas(a: &Side, b: &Side, permutations: usize, seed: u64, hsic: Hsic) -> Vec<f64> {
    let n = a.gram.n();
    // One seed per draw, taken from the stream in order: the draws run in parallel and are still
    // the same whatever the scheduling. Every comparison of a run pair draws the same
    // permutations (same seed, same n), so its rows are tested alike.
    let mut rng = SplitMix64::new(seed);
    let seeds: Vec<u64> = (0..permutations).map(|_| rng.next_u64()).collect();
    let scale = a.norm * b.norm;
    // Biased CKA lies in [0, 1]; debiased CKA of unrelated data scatters around 0.
    let low = match hsic {
        Hsic::Biased => 0.0,
        Hsic::Unbiased => -1.0,
    };
    seeds
        .par_iter()
        .map(|&s| {
            let mut perm: Vec<usize> = (0..n).collect();
            SplitMix64::new(s).shuffle(&mut perm);
            (permuted_dot(&a.k, &b.k, n, &perm) / scale).clamp(low, 1.0)
        })
        .collect()
}

/// `Σ_ij k_ij l_π(i)π(j)` in f64, row sums added in row order.
fn permuted_dot(k: &[f32], l: &[f32], n: usize, perm: &[usize]) -> f64 {
    k.chunks_exact(n)
        .zip(perm)
        .map(|(k_row, &pi)| {
            let l_row = &l[pi * n..(pi + 1) * n];
            k_row
                .iter()
                .zip(perm)
                .map(|(&kij, &pj)| f64::from(kij) * f64::from(l_row[pj]))
                .sum::<f64>()
        })
        .sum()
}

/// The null's mean, 95th percentile and the p-value of `cka` against it.
fn summarise(cka: f64, mut null: Vec<f64>) -> CkaTest {
    let count = null.len();
    let exceed = null.iter().filter(|&&v| v >= cka).count();
    null.sort_by(f64::total_cmp);
    CkaTest {
        cka,
        cka_null_mean: null.iter().sum::<f64>() / count as f64,
        cka_null_p95: quantile(&null, 0.95),
        p_value: (1 + exceed) as f64 / (1 + count) as f64,
    }
}

/// The `q` quantile of ascending `sorted`, interpolated linearly between order statistics.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return f64::NAN;
    };
    let pos = q * last as f64;
    let (lo, t) = (pos.floor() as usize, pos.fract());
    let hi = (lo + 1).min(last);
    sorted[lo] + t * (sorted[hi] - sorted[lo])
}

/// CKA undefined on this data (a constant layer, too few images): a NaN row, not a failure.
fn undefined(e: &DynamicsError) -> bool {
    matches!(
        e,
        DynamicsError::DegenerateRepresentation { .. } | DynamicsError::TooFewSamples { .. }
    )
}

/// Where one side of a sample is: a run's snapshot, or the `i`-th file of a folder of
/// activations from elsewhere.
#[derive(Debug, Clone)]
struct Loc {
    path: PathBuf,
    folder: Option<(Arc<ForeignFolder>, usize)>,
}

impl Loc {
    /// The layers it records (the logits of a run's snapshot among them).
    fn layers(&self) -> Result<Vec<String>, CompareError> {
        match &self.folder {
            Some((f, _)) => Ok(f.layers.clone()),
            None => Ok(source::layers(&self.path, LABELS)?),
        }
    }

    /// The images of its rows: a snapshot's `indices`; a folder's `indices`, else its labels
    /// (then only the labels can be checked to match, row for row).
    fn images(&self) -> Result<Vec<i64>, CompareError> {
        match &self.folder {
            Some((f, _)) => Ok(f.indices.clone().unwrap_or_else(|| f.labels.clone())),
            None => source::snapshot_info(&self.path)?
                .indices
                .ok_or_else(|| CompareError::NoIndices(self.path.clone())),
        }
    }

    /// One layer's activations.
    fn load(&self, layer: &str) -> Result<source::Activations, CompareError> {
        match &self.folder {
            Some((f, i)) => f
                .load(*i, layer)
                .map_err(|e| CompareError::Foreign(Box::new(e))),
            None => Ok(source::load(&self.path, layer, LABELS)?),
        }
    }
}

/// A snapshot both runs took, with the same probe images.
#[derive(Debug, Clone)]
struct Sample {
    /// The file stem, e.g. `epoch-001`.
    name: String,
    step: Option<u64>,
    epoch: Option<usize>,
    /// Run A's file.
    a: Loc,
    /// Run B's file.
    b: Loc,
    /// Probe images.
    n: usize,
}

/// A listed sample: its name, step, epoch and where it is.
type Listed = (SampleName, Option<u64>, Option<usize>, Loc);

/// A run's samples in training order, or a folder's files in step order.
fn listing(run: &Path) -> Result<Vec<Listed>, CompareError> {
    if !summary::is_foreign_folder(run) {
        return Ok(summary::snapshots(run)?
            .into_iter()
            .map(|s| {
                let loc = Loc {
                    path: s.path,
                    folder: None,
                };
                (s.name, s.step, Some(s.epoch), loc)
            })
            .collect());
    }
    let folder =
        Arc::new(ForeignFolder::open(run, LABELS).map_err(|e| CompareError::Foreign(Box::new(e)))?);
    Ok((folder.files.iter().enumerate())
        .map(|(i, f)| {
            let loc = Loc {
                path: f.path.clone(),
                folder: Some((folder.clone(), i)),
            };
            (SampleName::Step(f.step), Some(f.step), None, loc)
        })
        .collect())
}

/// Compares `run_a` with `run_b`: every common layer at every common snapshot, and the layer ×
/// layer matrix at the last common snapshot. Layers run in parallel.
///
/// Memory: a layer in flight holds two `n × n` f32 matrices per run (plus a transient f64 one
/// while it is formed), and every layer keeps its two last Gram matrices for the matrix, with
/// `n` at most [`CKA_MAX_N`] (64 MiB per matrix there).
pub fn compare_runs(
    run_a: &Path,
    run_b: &Path,
    params: &ValidCompareParams,
) -> Result<Comparison, CompareError> {
    let samples = common_samples(run_a, run_b)?;
    let layers = common_layers(&samples[0], params)?;
    let per_layer: Vec<(Vec<CompareRow>, Option<Grams>)> = layers
        .par_iter()
        .map(|l| compare_layer(&samples, l, params))
        .collect::<Result<_, _>>()?;
    let (rows, last): (Vec<Vec<CompareRow>>, Vec<Option<Grams>>) = per_layer.into_iter().unzip();
    let matrix_sample = samples.last().map(|s| s.name.clone()).unwrap_or_default();
    let matrix = layer_matrix(&last, params.params().hsic);
    let p = params.params();
    Ok(Comparison {
        run_a: run_a.to_path_buf(),
        run_b: run_b.to_path_buf(),
        permutations: p.permutations,
        seed: p.seed,
        hsic: p.hsic,
        layers,
        rows: rows.into_iter().flatten().collect(),
        matrix_sample,
        layer_identification: layer_identification(&matrix),
        layer_matrix: matrix,
    })
}

/// A layer's centred Gram matrices in run A and run B at one snapshot.
type Grams = (CenteredGram, CenteredGram);

/// The snapshots (or a folder's files) both runs took, their probe images checked to match,
/// in run A's training order (`RunDir::samples`, which places each by its metadata).
fn common_samples(run_a: &Path, run_b: &Path) -> Result<Vec<Sample>, CompareError> {
    let in_b: BTreeMap<SampleName, Loc> = listing(run_b)?
        .into_iter()
        .map(|(name, _, _, loc)| (name, loc))
        .collect();
    let samples = listing(run_a)?
        .into_iter()
        .filter_map(|(name, step, epoch, a)| {
            let b = in_b.get(&name)?.clone();
            Some(sample(name, step, epoch, a, b))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if samples.is_empty() {
        return Err(CompareError::NoCommonSamples {
            a: run_a.to_path_buf(),
            b: run_b.to_path_buf(),
        });
    }
    Ok(samples)
}

/// Run A's sample `a` and run B's file of the same name, their probe images checked to match.
fn sample(
    name: SampleName,
    step: Option<u64>,
    epoch: Option<usize>,
    a: Loc,
    b: Loc,
) -> Result<Sample, CompareError> {
    let (ia, ib) = (a.images()?, b.images()?);
    if let Some(detail) = indices_differ(&ia, &ib) {
        return Err(CompareError::IndicesDiffer {
            a: a.path,
            b: b.path,
            detail,
        });
    }
    Ok(Sample {
        name: name.stem(),
        step,
        epoch,
        a,
        b,
        n: ia.len(),
    })
}

/// Where run B's probe images (`b`) first differ from run A's (`a`), in words.
fn indices_differ(a: &[i64], b: &[i64]) -> Option<String> {
    if a.len() != b.len() {
        return Some(format!("{} images, against {}", b.len(), a.len()));
    }
    let i = a.iter().zip(b).position(|(x, y)| x != y)?;
    Some(format!("row {i} is test image {}, against {}", b[i], a[i]))
}

/// The layers to compare: those asked for (each must be in both runs) or all that both record
/// at their first common snapshot, in run A's order, the logits aside.
fn common_layers(s: &Sample, params: &ValidCompareParams) -> Result<Vec<String>, CompareError> {
    let in_a = s.a.layers()?;
    let in_b = s.b.layers()?;
    let layers: Vec<String> = match &params.params().layers {
        Some(asked) => {
            for (path, present) in [(&s.a.path, &in_a), (&s.b.path, &in_b)] {
                if let Some(missing) = asked.iter().find(|l| !present.contains(l)) {
                    return Err(SourceError::MissingLayer {
                        path: path.clone(),
                        layer: missing.clone(),
                        present: present.clone(),
                    }
                    .into());
                }
            }
            asked.clone()
        }
        // The logits are there for predictions, not a tap (as in the run summary).
        None => in_a
            .into_iter()
            .filter(|l| l != "logits" && in_b.contains(l))
            .collect(),
    };
    if layers.is_empty() {
        return Err(CompareError::NoCommonLayers {
            a: s.a.path.clone(),
            b: s.b.path.clone(),
        });
    }
    Ok(layers)
}

/// One layer at every common snapshot, with its Gram matrices at the last one.
fn compare_layer(
    samples: &[Sample],
    layer: &str,
    params: &ValidCompareParams,
) -> Result<(Vec<CompareRow>, Option<Grams>), CompareError> {
    let mut rows = Vec::with_capacity(samples.len());
    let mut last = None;
    for s in samples {
        let hsic = params.params().hsic;
        let a = load_side(&s.a, layer, s.n, hsic)?;
        let b = load_side(&s.b, layer, s.n, hsic)?;
        let test = match null_test(&a, &b, params) {
            Ok(t) => t,
            Err(e) if undefined(&e) => CkaTest::undefined(),
            Err(source) => return Err(dynamics_err(&s.b.path, layer, source)),
        };
        rows.push(CompareRow {
            layer: layer.to_string(),
            sample: s.name.clone(),
            step: s.step,
            epoch: s.epoch,
            n: a.gram.n(),
            test,
        });
        // Replacing the previous pair frees it: one pair per layer outlives its snapshot.
        last = Some((a.gram, b.gram));
    }
    Ok((rows, last))
}

fn dynamics_err(path: &Path, layer: &str, source: DynamicsError) -> CompareError {
    CompareError::Dynamics {
        path: path.to_path_buf(),
        layer: layer.to_string(),
        source,
    }
}

/// A layer of a snapshot whose rows are its `indices` probe images, as a [`Side`] of its first
/// [`CKA_MAX_N`] rows.
fn load_side(loc: &Loc, layer: &str, indices: usize, hsic: Hsic) -> Result<Side, CompareError> {
    let path = &loc.path;
    let acts = loc.load(layer)?;
    if acts.n() != indices {
        return Err(CompareError::RowCount {
            path: path.to_path_buf(),
            layer: layer.to_string(),
            n: acts.n(),
            indices,
        });
    }
    let features = acts.representation.features();
    let (m, d) = (features.n().min(CKA_MAX_N), features.d());
    Side::new(&features.as_slice()[..m * d], m, d, hsic).map_err(|e| dynamics_err(path, layer, e))
}

/// CKA of every layer of A with every layer of B, from each layer's last Gram matrices.
fn layer_matrix(last: &[Option<Grams>], hsic: Hsic) -> Vec<Vec<f64>> {
    last.par_iter()
        .map(|row| {
            last.iter()
                .map(|col| match (row, col) {
                    (Some((a, _)), Some((_, b))) => linear_cka(a, b, hsic).unwrap_or(f64::NAN),
                    _ => f64::NAN,
                })
                .collect()
        })
        .collect()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CompareError + '_ {
    move |source| SummaryError::Io(IoError::at(path)(source)).into()
}

/// Writes `compare.csv`, `compare.json` and `cka-layers.png` into `dir`, each atomically.
pub fn write_compare(dir: &Path, comparison: &Comparison) -> Result<(), CompareError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    summary::write_atomic(&dir.join("compare.csv"), csv(comparison).as_bytes())?;
    let json_path = dir.join("compare.json");
    // Only a run path that is not UTF-8 can fail to serialise.
    let json = serde_json::to_vec_pretty(comparison)
        .map_err(|e| io(&json_path)(std::io::Error::other(e)))?;
    summary::write_atomic(&json_path, &json)?;
    write_heatmap(dir, comparison)
}

/// The layer × layer matrix as a heatmap, drawn beside its final name and renamed onto it.
fn write_heatmap(dir: &Path, c: &Comparison) -> Result<(), CompareError> {
    let path = dir.join("cka-layers.png");
    // The plotter picks the format from the extension, so the temporary name keeps `.png`.
    let tmp = dir.join(".cka-layers.tmp.png");
    let name = |run: &Path| {
        run.file_name().map_or_else(
            || run.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    let title = format!(
        "linear CKA at {}: {} (rows) × {} (columns)",
        c.matrix_sample,
        name(&c.run_a),
        name(&c.run_b)
    );
    plot::heatmap(
        &tmp,
        &title,
        &c.layers,
        &c.layers,
        &c.layer_matrix,
        Some((0.0, 1.0)),
    )
    .map_err(SummaryError::from)?;
    fs::rename(&tmp, &path).map_err(io(&path))
}

/// The comparison as CSV, one row per (layer, snapshot); unknown steps or epochs are empty.
pub fn csv(comparison: &Comparison) -> String {
    let mut out =
        String::from("layer,sample,step,epoch,n,cka,cka_null_mean,cka_null_p95,p_value\n");
    let opt = |v: Option<String>| v.unwrap_or_default();
    for r in &comparison.rows {
        let t = &r.test;
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            r.layer,
            r.sample,
            opt(r.step.map(|s| s.to_string())),
            opt(r.epoch.map(|e| e.to_string())),
            r.n,
            t.cka,
            t.cka_null_mean,
            t.cka_null_p95,
            t.p_value,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::{Dtype, tensor::TensorView};

    /// Seeded standard normals (Box–Muller).
    fn normals(seed: u64, len: usize) -> Vec<f32> {
        let mut r = SplitMix64::new(seed);
        (0..len)
            .map(|_| {
                let (u1, u2) = (r.unit_nonzero(), r.unit_open());
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
            })
            .collect()
    }

    fn params(permutations: usize) -> ValidCompareParams {
        CompareParams {
            permutations,
            ..CompareParams::default()
        }
        .check()
        .unwrap()
    }

    /// `s·x·R + c` for `x` `[·, d]` and an orthogonal `R` (three Householder reflections).
    fn rotate_scale_shift(x: &[f32], d: usize, s: f32, c: f32) -> Vec<f32> {
        let mut y = x.to_vec();
        for h in 0..3 {
            let v = normals(100 + h, d);
            let vv: f32 = v.iter().map(|a| a * a).sum();
            for row in y.chunks_exact_mut(d) {
                let dot: f32 = row.iter().zip(&v).map(|(a, b)| a * b).sum();
                row.iter_mut()
                    .zip(&v)
                    .for_each(|(a, &b)| *a -= 2.0 * dot / vv * b);
            }
        }
        y.iter().map(|v| s * v + c).collect()
    }

    /// The null mean of independent Gaussian `[n, da]` and `[n, db]` representations:
    /// E tr(KL) ≈ n·da·db and E‖K‖² ≈ da·n·(n + da), so CKA ≈ √(da·db / ((n + da)(n + db))).
    fn gaussian_null_mean(n: usize, da: usize, db: usize) -> f64 {
        let (n, da, db) = (n as f64, da as f64, db as f64);
        (da * db / ((n + da) * (n + db))).sqrt()
    }

    #[test]
    fn params_are_checked_once() {
        let check = |permutations, layers: Option<&[&str]>| {
            CompareParams {
                permutations,
                seed: 0,
                layers: layers.map(|l| l.iter().map(|s| s.to_string()).collect()),
                hsic: Hsic::Biased,
            }
            .check()
        };
        assert_eq!(
            check(98, None).unwrap_err(),
            CompareParamsError::TooFewPermutations { given: 98, min: 99 }
        );
        assert_eq!(check(99, None).unwrap().params().permutations, 99);
        assert_eq!(
            check(199, Some(&[])).unwrap_err(),
            CompareParamsError::NoLayers
        );
        assert_eq!(
            check(199, Some(&["conv", "fc", "conv"])).unwrap_err(),
            CompareParamsError::DuplicateLayer("conv".into())
        );
        assert_eq!(CompareParams::default().permutations, 199);
    }

    #[test]
    fn null_summary_by_hand() {
        // 99 nulls 0, 1/98, …, 1: mean 1/2; the 95th percentile sits at order statistic
        // 0.95·98 = 93.1, i.e. 93.1/98 = 0.95; 50 of them (49/98 … 1) are ≥ 0.5.
        let null: Vec<f64> = (0..99).rev().map(|i| i as f64 / 98.0).collect();
        let t = summarise(0.5, null);
        assert!((t.cka_null_mean - 0.5).abs() < 1e-12);
        assert!((t.cka_null_p95 - 0.95).abs() < 1e-12);
        assert_eq!(t.p_value, 51.0 / 100.0);
        assert_eq!(summarise(2.0, vec![0.1; 99]).p_value, 0.01);
    }

    #[test]
    fn permuting_the_gram_matrix_is_permuting_the_rows() {
        let (n, da, db) = (150, 8, 5);
        let a = normals(1, n * da);
        // B shares a direction with A, so that CKA is far from 0 and permutations matter.
        let mut b = normals(2, n * db);
        for i in 0..n {
            b[i * db] += 2.0 * a[i * da];
        }
        // CKA from the rows, by the crate's estimator (independent of the null's matrices).
        let from_rows = |b: &[f32], hsic| {
            let ga = CenteredGram::from_rows(&a, n, da).unwrap();
            let gb = CenteredGram::from_rows(b, n, db).unwrap();
            linear_cka(&ga, &gb, hsic).unwrap()
        };
        for hsic in [Hsic::Biased, Hsic::Unbiased] {
            let (sa, sb) = (
                Side::new(&a, n, da, hsic).unwrap(),
                Side::new(&b, n, db, hsic).unwrap(),
            );
            let mut perm: Vec<usize> = (0..n).collect();
            let identity = permuted_dot(&sa.k, &sb.k, n, &perm) / (sa.norm * sb.norm);
            let observed = from_rows(&b, hsic);
            assert!(
                (identity - observed).abs() < 1e-6,
                "{hsic:?}: {identity} vs {observed}"
            );
            assert!(observed > 0.2, "{observed}");
            SplitMix64::new(9).shuffle(&mut perm);
            let b_perm: Vec<f32> = perm
                .iter()
                .flat_map(|&p| b[p * db..(p + 1) * db].iter().copied())
                .collect();
            let permuted = from_rows(&b_perm, hsic);
            let from_gram = permuted_dot(&sa.k, &sb.k, n, &perm) / (sa.norm * sb.norm);
            assert!(
                (permuted - from_gram).abs() < 1e-6,
                "{hsic:?}: {permuted} vs {from_gram}"
            );
        }
    }

    #[test]
    fn a_rotated_scaled_shifted_copy_has_cka_one() {
        let (n, d) = (300, 16);
        let a = normals(3, n * d);
        let b = rotate_scale_shift(&a, d, 3.7, -2.0);
        let moved = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(moved > 1.0, "the copy is not the same numbers: {moved}");
        let t = cka_test(&a, &b, n, d, d, &params(199)).unwrap();
        assert!((t.cka - 1.0).abs() < 1e-6, "{}", t.cka);
        assert_eq!(t.p_value, 1.0 / 200.0);
        let want = gaussian_null_mean(n, d, d);
        assert!(
            (t.cka_null_mean / want - 1.0).abs() < 0.15,
            "{} vs {want}",
            t.cka_null_mean
        );
    }

    #[test]
    fn unrelated_representations_sit_in_their_null() {
        let (n, da, db) = (300, 20, 30);
        let a = normals(4, n * da);
        let b = normals(5, n * db);
        let t = cka_test(&a, &b, n, da, db, &params(199)).unwrap();
        let want = gaussian_null_mean(n, da, db);
        assert!(
            (t.cka_null_mean / want - 1.0).abs() < 0.15,
            "{} vs {want}",
            t.cka_null_mean
        );
        assert!((t.cka / want - 1.0).abs() < 0.3, "{} vs {want}", t.cka);
        let spread = t.cka_null_p95 - t.cka_null_mean;
        assert!(spread > 0.0);
        assert!((t.cka - t.cka_null_mean).abs() < 2.0 * spread, "{t:?}");
        // 0.07 here; a p-value under the null is uniform: another stream fails 1 time in 100.
        assert!(t.p_value > 0.01, "{t:?}");
        // Same seed, same permutations, same numbers.
        assert_eq!(cka_test(&a, &b, n, da, db, &params(199)).unwrap(), t);
    }

    #[test]
    fn a_constant_layer_is_undefined_not_an_error() {
        let (n, d) = (50, 4);
        let a = normals(6, n * d);
        let err = cka_test(&a, &vec![1.5; n * d], n, d, d, &params(99)).unwrap_err();
        assert!(undefined(&err), "{err}");
    }

    // -----------------------------------------------------------------------------------------
    // Runs on disk

    /// Probe images per fake snapshot.
    const N: usize = 240;

    /// A fake layer: name, per-sample shape, `[N, ...]` values.
    type Layer = (&'static str, Vec<usize>, Vec<f32>);

    fn probe() -> Vec<i64> {
        (0..N as i64).map(|i| 3 * i + 1).collect()
    }

    /// Random layers `conv` `[2, 4, 4]`, `fc` `[12]` and `logits` `[10]`, seeded by run and epoch.
    fn random_layers(run: u64, epoch: usize) -> Vec<Layer> {
        let s = 1000 * run + 10 * epoch as u64;
        vec![
            ("conv", vec![2, 4, 4], normals(s, N * 32)),
            ("fc", vec![12], normals(s + 1, N * 12)),
            ("logits", vec![10], normals(s + 2, N * 10)),
        ]
    }

    /// Writes a snapshot as cnnu does: labels, predictions, indices (i64), f32 layers, epoch.
    fn write_snapshot(path: &Path, indices: &[i64], layers: &[Layer], epoch: usize) {
        let n = indices.len();
        let ints = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let labels: Vec<i64> = indices.iter().map(|i| i % 10).collect();
        let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![
            ("labels".into(), Dtype::I64, vec![n], ints(&labels)),
            ("predictions".into(), Dtype::I64, vec![n], ints(&labels)),
            ("indices".into(), Dtype::I64, vec![n], ints(indices)),
        ];
        for (name, shape, values) in layers {
            let shape = std::iter::once(n).chain(shape.iter().copied()).collect();
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            tensors.push((name.to_string(), Dtype::F32, shape, bytes));
        }
        let views = tensors.iter().map(|(name, dtype, shape, bytes)| {
            (
                name.as_str(),
                TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
            )
        });
        let meta = [("epoch".to_string(), epoch.to_string())].into();
        fs::write(path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
    }

    /// A run directory with one snapshot per epoch, from `layers(epoch)` and `indices(epoch)`.
    fn write_run(
        run: &Path,
        epochs: &[usize],
        layers: impl Fn(usize) -> Vec<Layer>,
        indices: impl Fn(usize) -> Vec<i64>,
    ) {
        let dir = run.join("snapshots");
        fs::create_dir_all(&dir).unwrap();
        for &e in epochs {
            let path = dir.join(format!("epoch-{e:03}.safetensors"));
            write_snapshot(&path, &indices(e), &layers(e), e);
        }
    }

    fn row<'a>(c: &'a Comparison, layer: &str, sample: &str) -> &'a CompareRow {
        c.rows
            .iter()
            .find(|r| r.layer == layer && r.sample == sample)
            .unwrap()
    }

    #[test]
    fn the_default_settings_are_valid() {
        assert_eq!(
            CompareParams::default().check(),
            Ok(ValidCompareParams::default())
        );
    }

    #[test]
    fn a_run_against_itself_has_cka_one_and_the_smallest_p_value() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("a");
        write_run(&run, &[0, 1, 2], |e| random_layers(1, e), |_| probe());
        let c = compare_runs(&run, &run, &params(199)).unwrap();
        let mut layers = c.layers.clone();
        layers.sort();
        assert_eq!(layers, ["conv", "fc"]);
        assert_eq!(c.rows.len(), 6);
        for r in &c.rows {
            assert!((r.test.cka - 1.0).abs() < 1e-9, "{r:?}");
            // Every null draw is below 1, so only the observed value itself counts.
            assert_eq!(r.test.p_value, 1.0 / 200.0, "{r:?}");
            assert!(r.test.cka_null_p95 < 0.3, "{r:?}");
            assert_eq!((r.n, r.step), (N, None));
        }
        let r = row(&c, "fc", "epoch-002");
        assert_eq!(r.epoch, Some(2));
        assert_eq!(c.layer_identification, 1.0);
        assert_eq!(c.matrix_sample, "epoch-002");
        for (i, values) in c.layer_matrix.iter().enumerate() {
            for (j, &v) in values.iter().enumerate() {
                if i == j {
                    assert!((v - 1.0).abs() < 1e-9, "{v}");
                } else {
                    // Independent layers: about √(32·12/(272·252)) = 0.075.
                    assert!(v < 0.2, "{v}");
                }
            }
        }
    }

    #[test]
    fn two_runs_compare_on_common_layers_and_epochs_and_write_their_results() {
        let dir = tempfile::tempdir().unwrap();
        let (run_a, run_b) = (dir.path().join("a"), dir.path().join("b"));
        write_run(&run_a, &[0, 1, 2], |e| random_layers(1, e), |_| probe());
        // B: conv is A's conv rotated, scaled and shifted; fc is unrelated; one layer of its own.
        let layers_b = |e| {
            let mut l = random_layers(2, e);
            l[0].2 = rotate_scale_shift(&random_layers(1, e)[0].2, 32, 0.5, 1.0);
            l.push(("only_b", vec![3], normals(77, N * 3)));
            l
        };
        write_run(&run_b, &[0, 1], layers_b, |_| probe());
        let c = compare_runs(&run_a, &run_b, &params(199)).unwrap();
        assert_eq!(c.rows.len(), 4);
        assert!(c.layers.iter().all(|l| l == "conv" || l == "fc"));
        assert_eq!(c.matrix_sample, "epoch-001");
        for sample in ["epoch-000", "epoch-001"] {
            let conv = row(&c, "conv", sample);
            assert!((conv.test.cka - 1.0).abs() < 1e-5, "{conv:?}");
            assert_eq!(conv.test.p_value, 1.0 / 200.0);
            let fc = row(&c, "fc", sample);
            assert!(fc.test.cka < 0.2 && fc.test.p_value > 0.01, "{fc:?}");
        }
        let conv = c.layers.iter().position(|l| l == "conv").unwrap();
        assert_eq!(
            c.layer_matrix[conv][conv],
            row(&c, "conv", "epoch-001").test.cka
        );

        let out = dir.path().join("out");
        write_compare(&out, &c).unwrap();
        let csv = fs::read_to_string(out.join("compare.csv")).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "layer,sample,step,epoch,n,cka,cka_null_mean,cka_null_p95,p_value"
        );
        assert_eq!(lines.len(), 5);
        assert!(
            lines[1..]
                .iter()
                .any(|l| l.starts_with("fc,epoch-001,,1,240,"))
        );
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(out.join("compare.json")).unwrap()).unwrap();
        assert_eq!(json["rows"].as_array().map(Vec::len), Some(4));
        // serde_json's default float parsing may differ from the written value in the last bit.
        let m = json["layer_matrix"][conv][conv].as_f64().unwrap();
        assert!((m - c.layer_matrix[conv][conv]).abs() < 1e-12);
        // conv is identified (CKA 1 with B's conv); fc against two unrelated layers may go
        // either way.
        let identified = json["layer_identification"].as_f64().unwrap();
        assert!(identified == 0.5 || identified == 1.0, "{identified}");
        assert_eq!(identified, c.layer_identification);
        assert_eq!(
            json["rows"][0]["p_value"].as_f64(),
            Some(c.rows[0].test.p_value)
        );
        let png = fs::read(out.join("cka-layers.png")).unwrap();
        assert_eq!(&png[..4], b"\x89PNG");
        let mut names: Vec<String> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["cka-layers.png", "compare.csv", "compare.json"]);
    }

    #[test]
    fn other_probe_images_are_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (run_a, run_b) = (dir.path().join("a"), dir.path().join("b"));
        write_run(&run_a, &[0, 1], |e| random_layers(1, e), |_| probe());
        let shifted = |e| {
            let mut p = probe();
            if e == 1 {
                p[7] += 1;
            }
            p
        };
        write_run(&run_b, &[0, 1], |e| random_layers(1, e), shifted);
        let err = compare_runs(&run_a, &run_b, &params(99)).unwrap_err();
        let CompareError::IndicesDiffer { b, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(b, &run_b.join("snapshots/epoch-001.safetensors"));
        let message = err.to_string();
        assert!(message.contains("epoch-001.safetensors"), "{message}");
        assert!(
            message.contains("row 7 is test image 23, against 22"),
            "{message}"
        );
    }
}
