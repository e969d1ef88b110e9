//! Representation-dynamics measures (issue 7): how a layer's representation changes from
//! epoch to epoch and how its classes are arranged in it.
//!
//! * [`linear_cka`] compares two representations of the same samples (one layer at two epochs,
//!   or two layers) through their centred Gram matrices ([`CenteredGram`]), with the biased or
//!   the unbiased HSIC estimator ([`Hsic`]).
//! * [`class_subspace_alignment`] asks whether the classes occupy different directions: the
//!   mean cosine of the principal angles between every pair of per-class principal subspaces.
//! * [`nc1`] is the neural-collapse within-class variability measure `tr(Σ_W Σ_B⁺)/C`.
//! * [`linear_probe`] is the held-out accuracy of a multinomial logistic regression on the
//!   reduced scores: how linearly decodable the labels are.
//!
//! All inputs are row-major f32 matrices (`[n, d]`, one row per sample); accumulation is in f64.
//! None of the measures forms a `d × d` matrix, so they stay cheap for wide layers
//! (`d` = 12 544 at conv1 with `n` = 2000).

use std::fmt;
use std::str::FromStr;

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par, Side};
use rayon::prelude::*;

use crate::metrics::dense_ids;
use crate::reduce::{self, Method, ReduceError, Solver};
use crate::scores::{self, ScoresError};

/// Asymmetry allowed in a Gram matrix given to [`CenteredGram::from_gram`], relative to its
/// largest entry: far above the rounding of any product `X Xᵀ`, far below a layout mistake.
pub const SYMMETRY_TOL: f64 = 1e-5;

/// Eigenvalues of `Σ_B` below this share of the largest are treated as zero by [`nc1`]'s
/// pseudo-inverse. With balanced classes `Σ_c (μ_c − μ_G) = 0`, so one eigenvalue is zero up to
/// rounding (~1e-16 relative) and must be dropped; a loose cutoff also keeps near-degenerate
/// between-class directions from dominating the trace.
pub const NC1_PINV_RTOL: f64 = 1e-6;

/// The L2 penalty `λ/2 ‖W‖²` (bias not penalised) added to [`linear_probe`]'s mean
/// cross-entropy on standardised features.
pub const PROBE_L2: f64 = 1e-4;

/// The iteration cap of [`linear_probe`]'s L-BFGS: a fixed budget keeps the cost bounded and
/// the result reproducible even when (separable data) the optimum is approached slowly.
pub const PROBE_MAX_ITER: usize = 200;

/// Why a dynamics measure could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum DynamicsError {
    /// No samples or no features.
    #[error("empty input: {n} samples × {d} features")]
    Empty {
        /// Samples.
        n: usize,
        /// Features.
        d: usize,
    },
    /// The data buffer does not hold `n·d` values.
    #[error("data hold {len} values, expected {n} × {d}")]
    Shape {
        /// Values given.
        len: usize,
        /// Samples.
        n: usize,
        /// Features.
        d: usize,
    },
    /// The label buffer does not hold one label per sample.
    #[error("{labels} labels for {n} samples")]
    LabelCount {
        /// Labels given.
        labels: usize,
        /// Samples.
        n: usize,
    },
    /// A data value is NaN or infinite.
    #[error("value at sample {row}, feature {col} is {value}")]
    NonFinite {
        /// Sample index.
        row: usize,
        /// Feature index.
        col: usize,
        /// The offending value.
        value: f32,
    },
    /// A Gram buffer does not hold `n·n` values (or `n` is 0).
    #[error("Gram matrix holds {len} values, expected {n} × {n} with n ≥ 1")]
    GramShape {
        /// Values given.
        len: usize,
        /// Declared size.
        n: usize,
    },
    /// A Gram entry is NaN or infinite.
    #[error("Gram entry ({row}, {col}) is {value}")]
    GramNonFinite {
        /// Row.
        row: usize,
        /// Column.
        col: usize,
        /// The offending value.
        value: f64,
    },
    /// A Gram matrix is not symmetric (beyond [`SYMMETRY_TOL`] of its largest entry).
    #[error("Gram matrix is not symmetric: entries ({row}, {col}) and ({col}, {row}) differ")]
    GramNotSymmetric {
        /// Row of the first asymmetric pair found.
        row: usize,
        /// Column of that pair.
        col: usize,
    },
    /// Two representations that should describe the same samples have different sizes.
    #[error("the representations describe {a} and {b} samples")]
    SampleMismatch {
        /// Samples of the first.
        a: usize,
        /// Samples of the second.
        b: usize,
    },
    /// Too few samples for the estimator (the unbiased HSIC needs 4).
    #[error("{n} samples, the {what} needs at least {need}")]
    TooFewSamples {
        /// Samples given.
        n: usize,
        /// Samples needed.
        need: usize,
        /// What needs them.
        what: &'static str,
    },
    /// A representation has zero (or, for the unbiased estimator, negative) self-HSIC: a constant
    /// representation, for which CKA is undefined.
    #[error("the {which} representation has self-HSIC {value} (constant representation?)")]
    DegenerateRepresentation {
        /// `first` or `second`.
        which: &'static str,
        /// Its self-HSIC.
        value: f64,
    },
    /// Fewer than two usable classes.
    #[error("{found} usable classes, at least 2 are needed")]
    TooFewClasses {
        /// Usable classes found.
        found: usize,
    },
    /// Every class mean equals the global mean, so `Σ_B = 0` and NC1 is undefined.
    #[error("all class means coincide: no between-class spread")]
    NoBetweenClassSpread,
    /// The energy threshold must lie in (0, 1].
    #[error("energy threshold {0} is outside (0, 1]")]
    InvalidEnergy(f64),
    /// The stratified split left the train or the test half empty.
    #[error("the split has {n_train} training and {n_test} test samples; both must be > 0")]
    EmptySplit {
        /// Training samples.
        n_train: usize,
        /// Test samples.
        n_test: usize,
    },
    /// A dense eigen- or singular-value solver did not converge.
    #[error("a dense decomposition did not converge")]
    NoConvergence,
    /// Not the name of an HSIC estimator.
    #[error("unknown HSIC estimator `{0}`: expected `biased` or `unbiased`")]
    UnknownHsic(String),
    /// A per-class reduction or Gram product failed.
    #[error(transparent)]
    Reduce(#[from] ReduceError),
    /// The probe's score matrix is malformed.
    #[error(transparent)]
    Scores(#[from] ScoresError),
}

// ---------------------------------------------------------------------------------------------
// Linear CKA

/// Which HSIC estimator linear CKA uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hsic {
    /// `tr(K_c L_c)/(n − 1)²` (Gretton et al., 2005), the estimator of Kornblith et al.'s CKA.
    #[default]
    Biased,
    /// The U-statistic of Song et al. (2012): diagonal of the Gram matrices removed, so the
    /// finite-sample bias towards 1 of wide, few-sample representations disappears.
    Unbiased,
}

impl fmt::Display for Hsic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hsic::Biased => "biased",
            Hsic::Unbiased => "unbiased",
        })
    }
}

impl FromStr for Hsic {
    type Err = DynamicsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "biased" => Ok(Hsic::Biased),
            "unbiased" => Ok(Hsic::Unbiased),
            _ => Err(DynamicsError::UnknownHsic(s.to_string())),
        }
    }
}

/// A centred n×n Gram matrix of one representation (f32 storage to halve memory), with its
/// self-HSIC cached.
///
/// Alongside the matrix it keeps, in f64, the few sums the unbiased estimator needs (diagonal,
/// row sums without the diagonal), so that one HSIC between two representations is a single
/// O(n²) pass over both matrices.
#[derive(Clone)]
pub struct CenteredGram {
    n: usize,
    /// `H K H`, row-major, exactly symmetric.
    k: Vec<f32>,
    /// The diagonal of the stored matrix.
    diag: Vec<f64>,
    /// Row sums of the stored matrix with its diagonal zeroed (`K̃ 1`).
    offdiag_rows: Vec<f64>,
    /// `1ᵀ K̃ 1`.
    offdiag_total: f64,
    /// `HSIC(K, K)` with the biased estimator (0 when n < 2).
    self_biased: f64,
    /// `HSIC(K, K)` with the unbiased estimator (n ≥ 4 only).
    self_unbiased: Option<f64>,
}

impl fmt::Debug for CenteredGram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The matrix itself is millions of numbers: show what identifies it.
        f.debug_struct("CenteredGram")
            .field("n", &self.n)
            .field("self_biased", &self.self_biased)
            .field("self_unbiased", &self.self_unbiased)
            .finish_non_exhaustive()
    }
}

impl CenteredGram {
    /// From an uncentred or centred sample Gram (n×n f64 row-major, symmetric); centres it
    /// (H K H) in O(n²).
    ///
    /// The lower triangle is used for both halves, so the stored matrix is exactly symmetric;
    /// the upper one must agree with it to [`SYMMETRY_TOL`] of the largest entry.
    pub fn from_gram(gram: &[f64], n: usize) -> Result<Self, DynamicsError> {
        if n == 0 || n.checked_mul(n) != Some(gram.len()) {
            return Err(DynamicsError::GramShape { len: gram.len(), n });
        }
        if let Some(i) = first_non_finite(gram) {
            return Err(DynamicsError::GramNonFinite {
                row: i / n,
                col: i % n,
                value: gram[i],
            });
        }
        let scale = gram
            .par_chunks(n)
            .map(|row| row.iter().fold(0f64, |m, v| m.max(v.abs())))
            .reduce(|| 0.0, f64::max);
        if let Some((row, col)) = asymmetric_pair(gram, n, SYMMETRY_TOL * scale) {
            return Err(DynamicsError::GramNotSymmetric { row, col });
        }
        // Row means of the matrix whose both halves are the lower triangle: the part left of
        // the diagonal is read along the row, the part right of it is the column sums of the
        // strictly lower triangle below the row. Both read rows contiguously.
        let blocks: Vec<(Vec<f64>, Vec<f64>)> = (0..n.div_ceil(TILE * 4))
            .into_par_iter()
            .map(|b| {
                let (i0, i1) = (b * TILE * 4, ((b + 1) * TILE * 4).min(n));
                let mut left = vec![0f64; i1 - i0];
                let mut below = vec![0f64; i1];
                for i in i0..i1 {
                    let row = &gram[i * n..i * n + i];
                    left[i - i0] = row.iter().sum::<f64>() + gram[i * n + i];
                    below[..i].iter_mut().zip(row).for_each(|(a, &v)| *a += v);
                }
                (left, below)
            })
            .collect();
        let mut sums = vec![0f64; n];
        for (b, (left, below)) in blocks.iter().enumerate() {
            let i0 = b * TILE * 4;
            sums[i0..i0 + left.len()]
                .iter_mut()
                .zip(left)
                .for_each(|(s, v)| *s += v);
            sums[..below.len()]
                .iter_mut()
                .zip(below)
                .for_each(|(s, v)| *s += v);
        }
        let nf = n as f64;
        let means: Vec<f64> = sums.iter().map(|s| s / nf).collect();
        let grand = means.iter().sum::<f64>() / nf;
        let mut k = vec![0f32; n * n];
        k.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
            for (j, (o, &g)) in row[..=i]
                .iter_mut()
                .zip(&gram[i * n..=i * n + i])
                .enumerate()
            {
                *o = (g - means[i] - means[j] + grand) as f32;
            }
        });
        mirror_lower(&mut k, n);
        Ok(Self::from_centred(k, n))
    }

    /// From features [n,d] row-major (uses reduce::sample_gram with centring).
    ///
    /// This costs `n²·d` flops, the same product the Gram solver of [`reduce::reduce`] pays:
    /// when a [`reduce::Reduction`] already holds `sample_gram`, [`CenteredGram::from_gram`] on
    /// it is the cheap way.
    pub fn from_features(x: &[f32], n: usize, d: usize) -> Result<Self, DynamicsError> {
        check_data(x, n, d)?;
        let g = reduce::sample_gram(x, n, d, true)?;
        Self::from_gram(&g, n)
    }

    /// The number of samples.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Caches the sums the estimators need, from the stored f32 values (so that `HSIC(K, K)`
    /// and `HSIC(K, L)` see exactly the same numbers).
    fn from_centred(k: Vec<f32>, n: usize) -> Self {
        let diag: Vec<f64> = (0..n).map(|i| f64::from(k[i * n + i])).collect();
        let offdiag_rows: Vec<f64> = k
            .par_chunks(n)
            .zip(diag.par_iter())
            .map(|(row, &dii)| row.iter().map(|&v| f64::from(v)).sum::<f64>() - dii)
            .collect();
        let offdiag_total = offdiag_rows.iter().sum();
        let mut g = CenteredGram {
            n,
            k,
            diag,
            offdiag_rows,
            offdiag_total,
            self_biased: 0.0,
            self_unbiased: None,
        };
        let dot = frobenius_dot(&g.k, &g.k, n);
        g.self_biased = hsic_from_parts(&g, &g, dot, Hsic::Biased).unwrap_or(0.0);
        g.self_unbiased = hsic_from_parts(&g, &g, dot, Hsic::Unbiased);
        g
    }

    fn self_hsic(&self, hsic: Hsic) -> Option<f64> {
        match hsic {
            Hsic::Biased => Some(self.self_biased),
            Hsic::Unbiased => self.self_unbiased,
        }
    }
}

/// Tile edge for the cache-friendly passes over `n × n` matrices.
const TILE: usize = 64;

/// The first (row-major) index of a NaN or infinite value.
fn first_non_finite<T: Copy + Into<f64> + Sync>(v: &[T]) -> Option<usize> {
    const CHUNK: usize = 1 << 16;
    v.par_chunks(CHUNK)
        .enumerate()
        .find_map_first(|(c, chunk)| {
            chunk
                .iter()
                .position(|&x| !x.into().is_finite())
                .map(|i| c * CHUNK + i)
        })
}

/// The first pair `(i, j)`, `j < i`, with `|g_ij − g_ji| > tol`, in a fixed order (tile rows,
/// then tiles, then entries), compared tile by tile so that both reads stay in cache.
fn asymmetric_pair(g: &[f64], n: usize, tol: f64) -> Option<(usize, usize)> {
    (0..n.div_ceil(TILE)).into_par_iter().find_map_first(|bi| {
        let (i0, i1) = (bi * TILE, ((bi + 1) * TILE).min(n));
        for j0 in (0..=i0).step_by(TILE) {
            for i in i0..i1 {
                for j in j0..(j0 + TILE).min(i) {
                    if (g[i * n + j] - g[j * n + i]).abs() > tol {
                        return Some((i, j));
                    }
                }
            }
        }
        None
    })
}

/// Copies the lower triangle of the row-major `n × n` matrix `k` onto the upper one, in tiles.
fn mirror_lower(k: &mut [f32], n: usize) {
    for i0 in (0..n).step_by(TILE) {
        for j0 in (i0..n).step_by(TILE) {
            for i in i0..(i0 + TILE).min(n) {
                for j in j0.max(i + 1)..(j0 + TILE).min(n) {
                    k[i * n + j] = k[j * n + i];
                }
            }
        }
    }
}

/// `Σ_ij a_ij b_ij` in f64; per-row sums added in row order, so the result does not depend on
/// rayon's scheduling.
fn frobenius_dot(a: &[f32], b: &[f32], n: usize) -> f64 {
    let rows: Vec<f64> = a
        .par_chunks(n)
        .zip(b.par_chunks(n))
        .map(|(ra, rb)| {
            ra.iter()
                .zip(rb)
                .map(|(&x, &y)| f64::from(x) * f64::from(y))
                .sum::<f64>()
        })
        .collect();
    rows.iter().sum()
}

/// HSIC from the cached parts and `dot = Σ_ij K_ij L_ij`; `None` when `n` is too small for the
/// estimator (biased: 2, unbiased: 4).
fn hsic_from_parts(a: &CenteredGram, b: &CenteredGram, dot: f64, hsic: Hsic) -> Option<f64> {
    let n = a.n as f64;
    match hsic {
        Hsic::Biased if a.n >= 2 => Some(dot / ((n - 1.0) * (n - 1.0))),
        // Song et al. (2012), eq. (5), with K̃, L̃ the Gram matrices with zeroed diagonals:
        // [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1/((n−1)(n−2)) − 2/(n−2)·1ᵀK̃L̃1] / (n(n−3)). It is invariant to
        // translating the features, so the centred matrices give the same value as raw ones
        // (and with less cancellation).
        Hsic::Unbiased if a.n >= 4 => {
            let diag_dot: f64 = a.diag.iter().zip(&b.diag).map(|(x, y)| x * y).sum();
            let rows_dot: f64 = a
                .offdiag_rows
                .iter()
                .zip(&b.offdiag_rows)
                .map(|(x, y)| x * y)
                .sum();
            let tr = dot - diag_dot;
            let value = (tr + a.offdiag_total * b.offdiag_total / ((n - 1.0) * (n - 2.0))
                - 2.0 / (n - 2.0) * rows_dot)
                / (n * (n - 3.0));
            Some(value)
        }
        _ => None,
    }
}

/// `HSIC(K, L)` with the chosen estimator; errors on a size mismatch or too few samples.
fn hsic_value(a: &CenteredGram, b: &CenteredGram, hsic: Hsic) -> Result<f64, DynamicsError> {
    if a.n != b.n {
        return Err(DynamicsError::SampleMismatch { a: a.n, b: b.n });
    }
    let dot = frobenius_dot(&a.k, &b.k, a.n);
    hsic_from_parts(a, b, dot, hsic).ok_or(DynamicsError::TooFewSamples {
        n: a.n,
        need: min_samples(hsic),
        what: "HSIC estimator",
    })
}

fn min_samples(hsic: Hsic) -> usize {
    match hsic {
        Hsic::Biased => 2,
        Hsic::Unbiased => 4,
    }
}

/// Linear CKA (Kornblith et al., 2019): HSIC(K,L)/sqrt(HSIC(K,K)·HSIC(L,L)); Unbiased uses the
/// unbiased HSIC estimator of Song et al. (2012) (Gram with zeroed diagonal; needs n ≥ 4).
///
/// Errors if the sample counts differ, if `n` is too small for the estimator, or if a
/// self-HSIC is not positive (a constant representation), so the value is never NaN. The biased
/// value lies in [0, 1] (Cauchy–Schwarz on PSD matrices) and is clamped there against rounding;
/// the unbiased one is an estimate and may fall slightly outside [0, 1] for small `n`.
pub fn linear_cka(a: &CenteredGram, b: &CenteredGram, hsic: Hsic) -> Result<f64, DynamicsError> {
    let cross = hsic_value(a, b, hsic)?;
    let too_few = || DynamicsError::TooFewSamples {
        n: a.n,
        need: min_samples(hsic),
        what: "HSIC estimator",
    };
    let sa = a.self_hsic(hsic).ok_or_else(too_few)?;
    let sb = b.self_hsic(hsic).ok_or_else(too_few)?;
    for (which, value) in [("first", sa), ("second", sb)] {
        if value.is_nan() || value <= 0.0 {
            return Err(DynamicsError::DegenerateRepresentation { which, value });
        }
    }
    let cka = cross / (sa.sqrt() * sb.sqrt());
    Ok(match hsic {
        Hsic::Biased => cka.clamp(0.0, 1.0),
        Hsic::Unbiased => cka,
    })
}

// ---------------------------------------------------------------------------------------------
// Class-subspace alignment

/// Class-subspace alignment: per class, top-r right singular vectors of its centred samples (r
/// from the energy threshold, same rule as reduce); for each pair of classes the mean cosine of
/// their principal angles (mean of the singular values of V_aᵀV_b, there are min(r_a,r_b) of
/// them, clamped to [0,1]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubspaceAlignment {
    /// The classes that have a subspace, ascending.
    pub classes: Vec<i64>,
    /// Each class's subspace dimension `r`.
    pub ranks: Vec<usize>,
    /// `C × C` mean principal-angle cosines, diagonal 1.
    pub cos: Vec<Vec<f64>>,
    /// The mean of `cos` over the pairs `a < b`.
    pub mean: f64,
}

/// Computes [`SubspaceAlignment`] for `x` (`[n, d]` row-major) with labels `labels`.
///
/// Each class's samples are centred on the class mean and reduced with
/// [`reduce::reduce`] (PCA, the given `energy`), whose `k` is the subspace dimension; the basis
/// `V = X_cᵀ U S⁻¹` is rebuilt from its scores. A class with fewer than 2 samples, or with zero
/// spread, has no subspace and is left out of the result; fewer than 2 remaining classes is an
/// error. Cost: the per-class reductions (`Σ n_c²·d`), `n·d·r` for the bases and
/// `Σ_{a<b} r_a·r_b·d` for the pairs, all f32 products.
pub fn class_subspace_alignment(
    x: &[f32],
    n: usize,
    d: usize,
    labels: &[i64],
    energy: f64,
) -> Result<SubspaceAlignment, DynamicsError> {
    check_data(x, n, d)?;
    check_labels(labels, n)?;
    if !(energy > 0.0 && energy <= 1.0) {
        return Err(DynamicsError::InvalidEnergy(energy));
    }
    let (class_of, classes) = dense_ids(labels);
    // All class means in one parallel pass, and one buffer reused for every class's copy.
    let sums = class_sums(x, n, d, &class_of, classes.len());
    let mut buf: Vec<f32> = Vec::new();
    let mut kept = Vec::new();
    let mut bases: Vec<Mat<f32>> = Vec::new();
    for (c, &label) in classes.iter().enumerate() {
        let rows: Vec<usize> = (0..n).filter(|&i| class_of[i] == c).collect();
        if rows.len() < 2 {
            continue;
        }
        let nc = rows.len();
        let mu: Vec<f64> = sums[c * d..(c + 1) * d]
            .iter()
            .map(|s| s / nc as f64)
            .collect();
        buf.resize(nc * d, 0.0);
        let xc = &mut buf[..nc * d];
        centre_rows(x, d, &rows, &mu, xc);
        let red = match reduce::reduce(xc, nc, d, Method::Pca, energy, None, Solver::Auto) {
            Ok(r) => r,
            Err(ReduceError::ZeroEnergy { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        bases.push(class_basis(xc, nc, d, &red));
        kept.push(label);
    }
    let ranks = bases.iter().map(|v| v.ncols()).collect();
    alignment(kept, ranks, |a, b| {
        mean_cosine(bases[a].as_ref(), bases[b].as_ref())
    })
}

/// The class × class matrix and its mean over pairs, from `pair_cos(a, b)` for `a < b`
/// (run in parallel); fewer than two classes is an error.
fn alignment(
    classes: Vec<i64>,
    ranks: Vec<usize>,
    pair_cos: impl Fn(usize, usize) -> Result<f64, DynamicsError> + Sync,
) -> Result<SubspaceAlignment, DynamicsError> {
    let c = classes.len();
    if c < 2 {
        return Err(DynamicsError::TooFewClasses { found: c });
    }
    let pairs: Vec<(usize, usize)> = (0..c)
        .flat_map(|a| (a + 1..c).map(move |b| (a, b)))
        .collect();
    let values = pairs
        .par_iter()
        .map(|&(a, b)| pair_cos(a, b))
        .collect::<Result<Vec<f64>, _>>()?;
    let mut cos = vec![vec![0f64; c]; c];
    for (a, row) in cos.iter_mut().enumerate() {
        row[a] = 1.0;
    }
    for (&(a, b), &v) in pairs.iter().zip(&values) {
        cos[a][b] = v;
        cos[b][a] = v;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    Ok(SubspaceAlignment {
        classes,
        ranks,
        cos,
        mean,
    })
}

/// [`class_subspace_alignment`] from the sample Gram matrix `K = X Xᵀ` (`[n, n]` f64, with or
/// without column centring) instead of the features, for when the reduce step has formed it.
///
/// Everything the subspaces need is an inner product of samples: centring each class on its
/// own mean is `K̃_ij = K_ij − m_b(i) − m_a(j) + M_ab` (`i` in class `a`, `j` in `b`, `m_b(i)`
/// the mean of row `i` over `b`'s columns, `M_ab` the block mean), the class block `K̃_aa =
/// U_a Λ_a U_aᵀ` gives `V_a = X̃_aᵀ U_a Λ_a^{-1/2}`, and `V_aᵀ V_b = W_aᵀ K̃_ab W_b` with `W_a =
/// U_a Λ_a^{-1/2}` (first `r_a` columns). So the cost is `O(n²)` plus one `n_a × n_a`
/// eigendecomposition per class and `r_a·n_a·n_b` per pair, with no `d` in it: at n = 2000 and
/// d = 12 544 this is a few dozen milliseconds where the feature route takes a second. Ranks
/// come from the exact eigenvalues with the rule of [`reduce::reduce`], so they can differ from
/// the feature route's iterative `k` only when a class's energy sits on the threshold.
pub fn class_subspace_alignment_from_gram(
    gram: &[f64],
    n: usize,
    labels: &[i64],
    energy: f64,
) -> Result<SubspaceAlignment, DynamicsError> {
    if n == 0 || n.checked_mul(n) != Some(gram.len()) {
        return Err(DynamicsError::GramShape { len: gram.len(), n });
    }
    if let Some(i) = gram.iter().position(|v| !v.is_finite()) {
        return Err(DynamicsError::GramNonFinite {
            row: i / n,
            col: i % n,
            value: gram[i],
        });
    }
    // The class-centring below reads K_ji for K_ij.
    let scale = gram.iter().fold(0f64, |m, v| m.max(v.abs()));
    if let Some((row, col)) = asymmetric_pair(gram, n, SYMMETRY_TOL * scale) {
        return Err(DynamicsError::GramNotSymmetric { row, col });
    }
    check_labels(labels, n)?;
    if !(energy > 0.0 && energy <= 1.0) {
        return Err(DynamicsError::InvalidEnergy(energy));
    }
    let (class_of, classes) = dense_ids(labels);
    let members: Vec<Vec<usize>> = (0..classes.len())
        .map(|c| (0..n).filter(|&i| class_of[i] == c).collect())
        .collect();
    let nclass = classes.len();
    // row_mean[i * C + b]: the mean of K[i, j] over the j in class b.
    let mut row_mean = vec![0f64; n * nclass];
    row_mean
        .par_chunks_mut(nclass)
        .enumerate()
        .for_each(|(i, out)| {
            let row = &gram[i * n..(i + 1) * n];
            for (b, m) in members.iter().enumerate() {
                out[b] = m.iter().map(|&j| row[j]).sum::<f64>() / m.len() as f64;
            }
        });
    let mut block_mean = vec![0f64; nclass * nclass];
    for (a, m) in members.iter().enumerate() {
        for b in 0..nclass {
            block_mean[a * nclass + b] =
                m.iter().map(|&i| row_mean[i * nclass + b]).sum::<f64>() / m.len() as f64;
        }
    }
    let centred = |a: usize, b: usize| {
        let (ra, rb) = (&members[a], &members[b]);
        Mat::<f64>::from_fn(ra.len(), rb.len(), |p, q| {
            let (i, j) = (ra[p], rb[q]);
            gram[i * n + j] - row_mean[i * nclass + b] - row_mean[j * nclass + a]
                + block_mean[a * nclass + b]
        })
    };
    let mut kept = Vec::new();
    let mut weights: Vec<(usize, Mat<f64>)> = Vec::new();
    for (a, m) in members.iter().enumerate() {
        if m.len() < 2 {
            continue;
        }
        let block = centred(a, a);
        let eig = block
            .self_adjoint_eigen(Side::Lower)
            .map_err(|_| DynamicsError::NoConvergence)?;
        let mut order: Vec<usize> = (0..m.len()).collect();
        order.sort_by(|&p, &q| eig.S()[q].total_cmp(&eig.S()[p]));
        let theta: Vec<f64> = order.iter().map(|&p| eig.S()[p].max(0.0)).collect();
        let total: f64 = (0..m.len()).map(|p| block[(p, p)]).sum();
        // A class with no spread has no subspace, as in the feature route.
        if total.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) || theta[0] <= 0.0 {
            continue;
        }
        let r = reduce::rank_for_energy(&theta, total, energy);
        let w = Mat::<f64>::from_fn(m.len(), r, |p, t| eig.U()[(p, order[t])] / theta[t].sqrt());
        kept.push(classes[a]);
        weights.push((a, w));
    }
    let ranks = weights.iter().map(|(_, w)| w.ncols()).collect();
    alignment(kept, ranks, |x, y| {
        let ((a, wa), (b, wb)) = (&weights[x], &weights[y]);
        let k_ab = centred(*a, *b);
        let mut t = Mat::<f64>::zeros(wa.ncols(), k_ab.ncols());
        matmul(
            t.as_mut(),
            Accum::Replace,
            wa.transpose(),
            k_ab.as_ref(),
            1.0,
            Par::Seq,
        );
        let mut m = Mat::<f64>::zeros(wa.ncols(), wb.ncols());
        matmul(
            m.as_mut(),
            Accum::Replace,
            t.as_ref(),
            wb.as_ref(),
            1.0,
            Par::Seq,
        );
        let s = m
            .singular_values()
            .map_err(|_| DynamicsError::NoConvergence)?;
        let r = wa.ncols().min(wb.ncols());
        Ok(s.iter().take(r).map(|v| v.clamp(0.0, 1.0)).sum::<f64>() / r as f64)
    })
}

/// Writes the rows `rows` of `x`, less `mu` (their mean, f64), into `dst` (`[rows, d]`).
fn centre_rows(x: &[f32], d: usize, rows: &[usize], mu: &[f64], dst: &mut [f32]) {
    dst.par_chunks_mut(d)
        .zip(rows.par_iter())
        .for_each(|(out, &i)| {
            for ((o, &v), m) in out.iter_mut().zip(&x[i * d..(i + 1) * d]).zip(mu) {
                *o = (f64::from(v) - m) as f32;
            }
        });
}

/// The orthonormal basis `V = X_cᵀ U S⁻¹ = X_cᵀ · scores · S⁻²` (`[d, k]`) of one class's
/// principal subspace, from the centred class rows `xc` and their reduction. Centring the copy
/// first (rather than correcting `Xᵀ·coef` afterwards) keeps exact zeros exact: a class confined
/// to some coordinates gets a basis that is exactly zero elsewhere.
fn class_basis(xc: &[f32], nc: usize, d: usize, red: &reduce::Reduction) -> Mat<f32> {
    let k = red.k_used;
    let coef = Mat::<f32>::from_fn(nc, k, |i, j| {
        let s = red.singular_values[j];
        (f64::from(red.scores[i * k + j]) / (s * s)) as f32
    });
    let mut v = Mat::<f32>::zeros(d, k);
    matmul(
        v.as_mut(),
        Accum::Replace,
        MatRef::from_row_major_slice(xc, nc, d).transpose(),
        coef.as_ref(),
        1.0,
        Par::rayon(0),
    );
    for j in 0..k {
        let col = v.col_as_slice_mut(j);
        // Unit columns, so that f32 drift cannot push a cosine past 1 by more than rounding.
        let norm = col
            .iter()
            .map(|&x| f64::from(x).powi(2))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            col.iter_mut()
                .for_each(|x| *x = (f64::from(*x) / norm) as f32);
        }
    }
    v
}

/// The mean of the singular values of `VaᵀVb` (the cosines of the principal angles), each
/// clamped to [0, 1].
fn mean_cosine(va: MatRef<'_, f32>, vb: MatRef<'_, f32>) -> Result<f64, DynamicsError> {
    let mut m = Mat::<f32>::zeros(va.ncols(), vb.ncols());
    matmul(
        m.as_mut(),
        Accum::Replace,
        va.transpose(),
        vb,
        1.0,
        Par::Seq,
    );
    let m64 = Mat::<f64>::from_fn(m.nrows(), m.ncols(), |i, j| f64::from(m[(i, j)]));
    let s = m64
        .singular_values()
        .map_err(|_| DynamicsError::NoConvergence)?;
    let r = va.ncols().min(vb.ncols());
    Ok(s.iter().take(r).map(|v| v.clamp(0.0, 1.0)).sum::<f64>() / r as f64)
}

// ---------------------------------------------------------------------------------------------
// Neural collapse

/// Neural-collapse NC1 (Papyan, Han & Donoho, 2020): tr(Σ_W Σ_B⁺)/C, Σ_W = within-class
/// covariance (1/N Σ_i (x_i−μ_{y_i})(x_i−μ_{y_i})ᵀ), Σ_B = 1/C Σ_c (μ_c−μ_G)(μ_c−μ_G)ᵀ with μ_G
/// the global mean (of all samples).
///
/// `Σ_B = M Mᵀ` with `M = [(μ_c − μ_G)/√C]` (`d × C`), so its nonzero eigenpairs come from the
/// `C × C` matrix `MᵀM = W Λ Wᵀ`: `u_j = M w_j / √λ_j`. Then
/// `tr(Σ_W Σ_B⁺) = Σ_j u_jᵀ Σ_W u_j / λ_j` with `u_jᵀ Σ_W u_j = (1/N) Σ_i ((x_i − μ_{y_i})·u_j)²`;
/// eigenvalues below [`NC1_PINV_RTOL`] of the largest are dropped. Everything is f64, cost
/// `O(n·d·C)`; no `d × d` matrix is formed. C counts the distinct labels (at least 2); a
/// one-sample class is fine (it has no within-class spread).
pub fn nc1(x: &[f32], n: usize, d: usize, labels: &[i64]) -> Result<f64, DynamicsError> {
    check_data(x, n, d)?;
    check_labels(labels, n)?;
    let (class_of, classes) = dense_ids(labels);
    let c = classes.len();
    if c < 2 {
        return Err(DynamicsError::TooFewClasses { found: c });
    }
    let mut counts = vec![0usize; c];
    for &k in &class_of {
        counts[k] += 1;
    }
    let sums = class_sums(x, n, d, &class_of, c);
    let global: Vec<f64> = (0..d)
        .map(|j| (0..c).map(|k| sums[k * d + j]).sum::<f64>() / n as f64)
        .collect();
    let means: Vec<f64> = (0..c * d).map(|i| sums[i] / counts[i / d] as f64).collect();
    let inv_sqrt_c = 1.0 / (c as f64).sqrt();
    let m = Mat::<f64>::from_fn(d, c, |j, k| (means[k * d + j] - global[j]) * inv_sqrt_c);
    let mut mtm = Mat::<f64>::zeros(c, c);
    matmul(
        mtm.as_mut(),
        Accum::Replace,
        m.transpose(),
        m.as_ref(),
        1.0,
        Par::Seq,
    );
    let eig = mtm
        .self_adjoint_eigen(Side::Lower)
        .map_err(|_| DynamicsError::NoConvergence)?;
    let lambda: Vec<f64> = (0..c).map(|j| eig.S()[j]).collect();
    let lmax = lambda.iter().copied().fold(0.0, f64::max);
    if lmax <= 0.0 {
        return Err(DynamicsError::NoBetweenClassSpread);
    }
    let keep: Vec<usize> = (0..c)
        .filter(|&j| lambda[j] > NC1_PINV_RTOL * lmax)
        .collect();
    // u_j = M w_j / √λ_j, as columns of a d × r matrix.
    let w = Mat::<f64>::from_fn(c, keep.len(), |i, t| {
        eig.U()[(i, keep[t])] / lambda[keep[t]].sqrt()
    });
    let mut u = Mat::<f64>::zeros(d, keep.len());
    matmul(
        u.as_mut(),
        Accum::Replace,
        m.as_ref(),
        w.as_ref(),
        1.0,
        Par::Seq,
    );
    let proj = within_projections(x, n, d, &class_of, &means, u.as_ref());
    let trace: f64 = keep
        .iter()
        .zip(&proj)
        .map(|(&j, p)| p / n as f64 / lambda[j])
        .sum();
    Ok(trace / c as f64)
}

/// Per-class column sums (`[C, d]` row-major, f64), in parallel over column blocks; each sum runs
/// over the rows in order, so the result does not depend on scheduling.
fn class_sums(x: &[f32], n: usize, d: usize, class_of: &[usize], c: usize) -> Vec<f64> {
    const W: usize = 512;
    let blocks: Vec<Vec<f64>> = (0..d.div_ceil(W))
        .into_par_iter()
        .map(|b| {
            let j0 = b * W;
            let w = W.min(d - j0);
            let mut acc = vec![0f64; c * w];
            for i in 0..n {
                let dst = &mut acc[class_of[i] * w..(class_of[i] + 1) * w];
                for (a, &v) in dst.iter_mut().zip(&x[i * d + j0..i * d + j0 + w]) {
                    *a += f64::from(v);
                }
            }
            acc
        })
        .collect();
    let mut sums = vec![0f64; c * d];
    for (b, acc) in blocks.iter().enumerate() {
        let j0 = b * W;
        let w = acc.len() / c;
        for k in 0..c {
            sums[k * d + j0..k * d + j0 + w].copy_from_slice(&acc[k * w..(k + 1) * w]);
        }
    }
    sums
}

/// `Σ_i ((x_i − μ_{y_i})·u_j)²` for every column `u_j` of `u` (`[d, r]`), f64 throughout. The
/// residuals are formed in f64 one block of rows at a time (never the whole `n × d` copy), so an
/// exactly collapsed class gives exactly zero.
fn within_projections(
    x: &[f32],
    n: usize,
    d: usize,
    class_of: &[usize],
    means: &[f64],
    u: MatRef<'_, f64>,
) -> Vec<f64> {
    // Blocks small enough for the residuals (32 × d f64, 3 MB at d = 12 544) to stay in cache
    // between being written and being multiplied.
    const ROWS: usize = 32;
    let r = u.ncols();
    let parts: Vec<Vec<f64>> = (0..n.div_ceil(ROWS))
        .into_par_iter()
        .map(|b| {
            let i0 = b * ROWS;
            let h = ROWS.min(n - i0);
            let mut res = vec![0f64; h * d];
            for (t, dst) in res.chunks_exact_mut(d).enumerate() {
                let i = i0 + t;
                let mu = &means[class_of[i] * d..(class_of[i] + 1) * d];
                for ((o, &v), &m) in dst.iter_mut().zip(&x[i * d..(i + 1) * d]).zip(mu) {
                    *o = f64::from(v) - m;
                }
            }
            // Uᵀ·Rᵀ (r × h): faer runs this orientation faster than R·U for a thin U.
            let mut p = Mat::<f64>::zeros(r, h);
            matmul(
                p.as_mut(),
                Accum::Replace,
                u.transpose(),
                MatRef::from_column_major_slice(&res, d, h),
                1.0,
                Par::Seq,
            );
            (0..r)
                .map(|j| p.row(j).iter().map(|v| v * v).sum::<f64>())
                .collect()
        })
        .collect();
    let mut total = vec![0f64; r];
    for part in &parts {
        total.iter_mut().zip(part).for_each(|(t, p)| *t += p);
    }
    total
}

// ---------------------------------------------------------------------------------------------
// Linear probe

/// Linear probe: multinomial logistic regression on `scores` [n,dim], fit on a stratified half
/// (deterministic from `seed`), accuracy on the other half.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProbeResult {
    /// Accuracy on the held-out half.
    pub accuracy: f64,
    /// Accuracy on the training half.
    pub train_accuracy: f64,
    /// Training samples.
    pub n_train: usize,
    /// Test samples.
    pub n_test: usize,
}

/// Fits and scores the linear probe described at [`ProbeResult`].
///
/// * Split: per class (labels ascending), the class's sample indices are shuffled with a
///   splitmix64 generator seeded by `seed` (one generator, carried from class to class), the
///   first `⌊n_c/2⌋` train and the rest test. A one-sample class is test-only.
/// * Features are standardised with the training half's mean and standard deviation (a constant
///   feature is only centred).
/// * The model minimises mean cross-entropy + [`PROBE_L2`]`/2·‖W‖²` (bias free) with L-BFGS
///   (memory 10, Armijo backtracking) from zero, at most [`PROBE_MAX_ITER`] iterations, stopping
///   early once the largest gradient entry is below 1e-6. Every product is sequential f64, so
///   the result is bit-for-bit reproducible. (A self-contained optimiser: the problem is a few
///   thousand parameters, too small to be worth a dependency.)
/// * Ties in the predicted class go to the smaller label.
pub fn linear_probe(
    scores: &[f32],
    n: usize,
    dim: usize,
    labels: &[i64],
    seed: u64,
) -> Result<ProbeResult, DynamicsError> {
    scores::check(scores, n, dim)?;
    check_labels(labels, n)?;
    let (class_of, classes) = dense_ids(labels);
    let c = classes.len();
    if c < 2 {
        return Err(DynamicsError::TooFewClasses { found: c });
    }
    let (train, test) = stratified_split(&class_of, c, seed);
    if train.is_empty() || test.is_empty() {
        return Err(DynamicsError::EmptySplit {
            n_train: train.len(),
            n_test: test.len(),
        });
    }
    let mut mean = vec![0f64; dim];
    let mut var = vec![0f64; dim];
    for &i in &train {
        for (m, &v) in mean.iter_mut().zip(&scores[i * dim..(i + 1) * dim]) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= train.len() as f64);
    for &i in &train {
        for ((s, &v), m) in var
            .iter_mut()
            .zip(&scores[i * dim..(i + 1) * dim])
            .zip(&mean)
        {
            *s += (f64::from(v) - m).powi(2);
        }
    }
    let scale: Vec<f64> = var
        .iter()
        .map(|v| {
            let sd = (v / train.len() as f64).sqrt();
            if sd > 0.0 { 1.0 / sd } else { 1.0 }
        })
        .collect();
    // Xᵀ (dim × rows, column-major: one sample per column).
    let standardised_t = |rows: &[usize]| {
        Mat::<f64>::from_fn(dim, rows.len(), |j, t| {
            (f64::from(scores[rows[t] * dim + j]) - mean[j]) * scale[j]
        })
    };
    let xtr_t = standardised_t(&train);
    let xtr = xtr_t.transpose().to_owned();
    let xte_t = standardised_t(&test);
    let ytr: Vec<usize> = train.iter().map(|&i| class_of[i]).collect();
    let yte: Vec<usize> = test.iter().map(|&i| class_of[i]).collect();
    let problem = Softmax {
        x: xtr.as_ref(),
        xt: xtr_t.as_ref(),
        y: &ytr,
        c,
        lambda: PROBE_L2,
    };
    let mut theta = vec![0f64; (dim + 1) * c];
    lbfgs(|t, g| problem.eval(t, g), &mut theta, PROBE_MAX_ITER, 1e-6);
    Ok(ProbeResult {
        accuracy: accuracy(xte_t.as_ref(), &yte, &theta, c),
        train_accuracy: accuracy(xtr_t.as_ref(), &ytr, &theta, c),
        n_train: train.len(),
        n_test: test.len(),
    })
}

fn stratified_split(class_of: &[usize], c: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut rng = SplitMix(seed);
    let mut train = Vec::new();
    let mut test = Vec::new();
    for k in 0..c {
        let mut rows: Vec<usize> = (0..class_of.len()).filter(|&i| class_of[i] == k).collect();
        for i in (1..rows.len()).rev() {
            rows.swap(i, rng.below(i + 1));
        }
        let half = rows.len() / 2;
        train.extend_from_slice(&rows[..half]);
        test.extend_from_slice(&rows[half..]);
    }
    // Ascending order: the fit then depends only on which samples train, not on the shuffle.
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

/// Multinomial logistic regression: `θ = [Wᵀ (C × dim, column-major: a feature's C weights
/// are contiguous), b (C)]`. Logits are formed as `Wᵀ·Xᵀ` (`C × m`, one sample's logits
/// contiguous) and the gradient as `Rᵀ·X`, so every product has column-major operands and the
/// softmax walks contiguous memory.
struct Softmax<'a> {
    /// The samples, `m × dim` column-major.
    x: MatRef<'a, f64>,
    /// The same, transposed: `dim × m` column-major.
    xt: MatRef<'a, f64>,
    y: &'a [usize],
    c: usize,
    lambda: f64,
}

impl Softmax<'_> {
    /// The objective at `theta`, its gradient written into `grad`.
    fn eval(&self, theta: &[f64], grad: &mut [f64]) -> f64 {
        let (m, p) = (self.x.nrows(), self.x.ncols());
        let c = self.c;
        let (wt, b) = theta.split_at(p * c);
        let mut z = logits(self.xt, wt, c);
        let mut loss = 0.0;
        let inv_m = 1.0 / m as f64;
        for i in 0..m {
            let zi = z.col_as_slice_mut(i);
            let mut zmax = f64::NEG_INFINITY;
            for (v, bk) in zi.iter_mut().zip(b) {
                *v += bk;
                zmax = zmax.max(*v);
            }
            let yi = self.y[i];
            let zy = zi[yi] - zmax;
            let mut sum = 0.0;
            for v in zi.iter_mut() {
                *v = exp_nonpositive(*v - zmax);
                sum += *v;
            }
            // −log softmax_y = log Σ exp(z − zmax) − (z_y − zmax).
            loss += sum.ln() - zy;
            let scale = inv_m / sum;
            for v in zi.iter_mut() {
                *v *= scale;
            }
            zi[yi] -= inv_m;
        }
        let (gw, gb) = grad.split_at_mut(p * c);
        matmul(
            faer::MatMut::from_column_major_slice_mut(&mut *gw, c, p),
            Accum::Replace,
            z.as_ref(),
            self.x,
            1.0,
            Par::Seq,
        );
        let mut penalty = 0.0;
        for (g, &wv) in gw.iter_mut().zip(wt) {
            *g += self.lambda * wv;
            penalty += wv * wv;
        }
        gb.fill(0.0);
        for i in 0..m {
            gb.iter_mut()
                .zip(z.col_as_slice(i))
                .for_each(|(g, v)| *g += v);
        }
        loss * inv_m + 0.5 * self.lambda * penalty
    }
}

/// `eᵗ` for `t ≤ 0`, to ~2 ulp: `t = k·ln 2 + r` with `|r| ≤ ln 2 / 2`, a degree-13 Taylor
/// polynomial for `eʳ` (truncation below 1e-17) and `2ᵏ` from the exponent bits; 0 below −700,
/// where the term is under 1e-304 of the largest (which is 1) and adds nothing to the sum.
///
/// Why not `f64::exp`: measured on this project's 2-core machine, glibc's `exp` in the probe's
/// softmax loop (between faer's AVX products) cost ~80–100 ns a call against ~6 ns in a
/// loop of its own, and was half of the probe's time; this version halved the probe's time.
fn exp_nonpositive(t: f64) -> f64 {
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    if t <= -700.0 {
        return 0.0;
    }
    let k = (t * std::f64::consts::LOG2_E).round();
    let r = (t - k * LN2_HI) - k * LN2_LO;
    let mut p = 1.0;
    for i in (1..=13).rev() {
        p = 1.0 + p * r / f64::from(i);
    }
    // k ∈ [−1010, 0], so the biased exponent k + 1023 is a normal one.
    p * f64::from_bits(((k as i64 + 1023) as u64) << 52)
}

/// `Wᵀ·Xᵀ` (`C × m`) for `xt` = `Xᵀ` (`dim × m`) and `wt` = `Wᵀ` (`C × dim`, column-major).
fn logits(xt: MatRef<'_, f64>, wt: &[f64], c: usize) -> Mat<f64> {
    let mut z = Mat::<f64>::zeros(c, xt.ncols());
    matmul(
        z.as_mut(),
        Accum::Replace,
        MatRef::from_column_major_slice(wt, c, xt.nrows()),
        xt,
        1.0,
        Par::Seq,
    );
    z
}

/// The share of samples (columns of `xt` = `Xᵀ`) whose largest logit is at their label.
fn accuracy(xt: MatRef<'_, f64>, y: &[usize], theta: &[f64], c: usize) -> f64 {
    let p = xt.nrows();
    let b = &theta[p * c..];
    let z = logits(xt, &theta[..p * c], c);
    let correct = (0..xt.ncols())
        .filter(|&i| {
            let zi = z.col_as_slice(i);
            let mut best = 0;
            for k in 1..c {
                if zi[k] + b[k] > zi[best] + b[best] {
                    best = k;
                }
            }
            best == y[i]
        })
        .count();
    correct as f64 / xt.ncols() as f64
}

/// Minimises `f` (which writes its gradient into the second argument) from `x` with L-BFGS
/// (memory 10, Armijo backtracking), for at most `max_iter` iterations or until the largest
/// gradient entry is at most `gtol`.
fn lbfgs(mut f: impl FnMut(&[f64], &mut [f64]) -> f64, x: &mut [f64], max_iter: usize, gtol: f64) {
    const MEMORY: usize = 10;
    let len = x.len();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
    let mut g = vec![0f64; len];
    let mut fx = f(x, &mut g);
    let mut hist: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> =
        std::collections::VecDeque::new();
    let mut x_new = vec![0f64; len];
    let mut g_new = vec![0f64; len];
    for _ in 0..max_iter {
        if g.iter().fold(0f64, |m, v| m.max(v.abs())) <= gtol {
            break;
        }
        // Two-loop recursion: d = −H g.
        let mut q = g.clone();
        let mut alpha = Vec::with_capacity(hist.len());
        for (s, y, rho) in hist.iter().rev() {
            let a = rho * dot(s, &q);
            q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= a * yi);
            alpha.push(a);
        }
        let gamma = match hist.back() {
            Some((s, y, _)) => dot(s, y) / dot(y, y),
            // No curvature yet: a first step of unit length.
            None => 1.0 / dot(&g, &g).sqrt(),
        };
        q.iter_mut().for_each(|v| *v *= gamma);
        for ((s, y, rho), a) in hist.iter().zip(alpha.iter().rev()) {
            let beta = rho * dot(y, &q);
            q.iter_mut()
                .zip(s)
                .for_each(|(qi, si)| *qi += (a - beta) * si);
        }
        let mut dir: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &dir);
        if slope.is_nan() || slope >= 0.0 {
            // Not a descent direction (rounding): restart from steepest descent.
            hist.clear();
            let scale = 1.0 / dot(&g, &g).sqrt();
            dir = g.iter().map(|v| -v * scale).collect();
            slope = dot(&g, &dir);
        }
        let mut t = 1.0;
        let mut accepted = None;
        for _ in 0..40 {
            for ((o, xi), di) in x_new.iter_mut().zip(x.iter()).zip(&dir) {
                *o = xi + t * di;
            }
            let f_new = f(&x_new, &mut g_new);
            if f_new <= fx + 1e-4 * t * slope {
                accepted = Some(f_new);
                break;
            }
            t *= 0.5;
        }
        let Some(f_new) = accepted else { break };
        let s: Vec<f64> = x_new.iter().zip(x.iter()).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-12 * dot(&y, &y).sqrt() * dot(&s, &s).sqrt() {
            if hist.len() == MEMORY {
                hist.pop_front();
            }
            hist.push_back((s, y, 1.0 / sy));
        }
        let decrease = fx - f_new;
        x.copy_from_slice(&x_new);
        g.copy_from_slice(&g_new);
        fx = f_new;
        if decrease <= 1e-15 * fx.abs().max(1.0) {
            break;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

fn check_data(x: &[f32], n: usize, d: usize) -> Result<(), DynamicsError> {
    if n == 0 || d == 0 {
        return Err(DynamicsError::Empty { n, d });
    }
    if n.checked_mul(d) != Some(x.len()) {
        return Err(DynamicsError::Shape { len: x.len(), n, d });
    }
    match first_non_finite(x) {
        Some(i) => Err(DynamicsError::NonFinite {
            row: i / d,
            col: i % d,
            value: x[i],
        }),
        None => Ok(()),
    }
}

fn check_labels(labels: &[i64], n: usize) -> Result<(), DynamicsError> {
    if labels.len() == n {
        Ok(())
    } else {
        Err(DynamicsError::LabelCount {
            labels: labels.len(),
            n,
        })
    }
}

/// splitmix64: a tiny, well-mixed generator, so the probe's split is reproducible without a
/// dependency.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..m` (Lemire's multiply-shift; the bias is below 2⁻³² for any `m` here).
    fn below(&mut self, m: usize) -> usize {
        ((u128::from(self.next_u64()) * m as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeded standard normals (Box–Muller on splitmix64).
    struct Gen(SplitMix);

    impl Gen {
        fn new(seed: u64) -> Self {
            Gen(SplitMix(seed))
        }

        fn uniform(&mut self) -> f64 {
            ((self.0.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        fn normal(&mut self) -> f64 {
            let (u, v) = (self.uniform(), self.uniform());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }

        fn matrix(&mut self, n: usize, d: usize) -> Vec<f32> {
            (0..n * d).map(|_| self.normal() as f32).collect()
        }
    }

    fn gram_of(x: &[f32], n: usize, d: usize) -> Vec<f64> {
        let mut g = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                g[i * n + j] = (0..d)
                    .map(|t| f64::from(x[i * d + t]) * f64::from(x[j * d + t]))
                    .sum();
            }
        }
        g
    }

    fn centred_f64(x: &[f32], n: usize, d: usize) -> Vec<f64> {
        let mut out: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        for j in 0..d {
            let m = (0..n).map(|i| out[i * d + j]).sum::<f64>() / n as f64;
            (0..n).for_each(|i| out[i * d + j] -= m);
        }
        out
    }

    fn cka_of(x: &[f32], y: &[f32], n: usize, dx: usize, dy: usize, h: Hsic) -> f64 {
        let a = CenteredGram::from_features(x, n, dx).expect("gram");
        let b = CenteredGram::from_features(y, n, dy).expect("gram");
        linear_cka(&a, &b, h).expect("cka")
    }

    #[test]
    fn cka_is_one_for_identical_rotated_and_scaled_representations() {
        let mut g = Gen::new(1);
        let (n, d) = (40, 12);
        let x = g.matrix(n, d);
        // A random orthogonal Q from the QR factorisation of a random matrix.
        let a = Mat::<f64>::from_fn(d, d, |_, _| g.normal());
        let q = a.qr().compute_Q();
        let xq: Vec<f32> = (0..n * d)
            .map(|idx| {
                let (i, j) = (idx / d, idx % d);
                (0..d)
                    .map(|t| f64::from(x[i * d + t]) * q[(t, j)])
                    .sum::<f64>() as f32
            })
            .collect();
        let x3: Vec<f32> = x.iter().map(|v| 3.0 * v).collect();
        for h in [Hsic::Biased, Hsic::Unbiased] {
            assert!((cka_of(&x, &x, n, d, d, h) - 1.0).abs() < 1e-12, "{h}");
            assert!(
                (cka_of(&x, &xq, n, d, d, h) - 1.0).abs() < 1e-6,
                "{h} rotated"
            );
            assert!(
                (cka_of(&x, &x3, n, d, d, h) - 1.0).abs() < 1e-6,
                "{h} scaled"
            );
            // An unrelated representation is far from 1, so the checks above can fail.
            let y = g.matrix(n, d);
            assert!(cka_of(&x, &y, n, d, d, h) < 0.6, "{h} unrelated");
        }
    }

    #[test]
    fn one_dimensional_cka_is_the_squared_correlation() {
        // x = (1, 2, 3, 4) centres to (−1.5, −0.5, 0.5, 1.5), ‖x‖² = 5; y = (1, 2, 3, 5) centres
        // to (−1.75, −0.75, 0.25, 2.25), ‖y‖² = 8.75; x·y = 6.5. Linear CKA of 1-D features is
        // (x·y)² / (‖x‖²‖y‖²) = 42.25 / 43.75 = 169/175.
        let x = [1f32, 2.0, 3.0, 4.0];
        let y = [1f32, 2.0, 3.0, 5.0];
        let cka = cka_of(&x, &y, 4, 1, 1, Hsic::Biased);
        assert!((cka - 169.0 / 175.0).abs() < 1e-7, "{cka}");
    }

    #[test]
    fn biased_cka_matches_the_feature_space_formula() {
        let mut g = Gen::new(2);
        let (n, dx, dy) = (30, 8, 5);
        let x = g.matrix(n, dx);
        // Y: a linear map of X plus noise, so CKA is neither 0 nor 1.
        let y: Vec<f32> = (0..n * dy)
            .map(|idx| {
                let (i, j) = (idx / dy, idx % dy);
                x[i * dx + j] + x[i * dx + j + 3] * 0.5 + 1.5 * g.normal() as f32 + 2.0
            })
            .collect();
        let (xc, yc) = (centred_f64(&x, n, dx), centred_f64(&y, n, dy));
        // ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F), every product written out.
        let cross = |a: &[f64], da: usize, b: &[f64], db: usize| {
            let mut s = 0.0;
            for p in 0..da {
                for q in 0..db {
                    let v: f64 = (0..n).map(|i| a[i * da + p] * b[i * db + q]).sum();
                    s += v * v;
                }
            }
            s
        };
        let want = cross(&yc, dy, &xc, dx)
            / (cross(&xc, dx, &xc, dx).sqrt() * cross(&yc, dy, &yc, dy).sqrt());
        assert!(want > 0.2 && want < 0.9, "test data give CKA {want}");
        let got = cka_of(&x, &y, n, dx, dy, Hsic::Biased);
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    /// Song et al.'s closed form on raw (uncentred) Gram matrices, written out naively.
    fn unbiased_closed_form(k: &[f64], l: &[f64], n: usize) -> f64 {
        let zd = |m: &[f64]| {
            let mut z = m.to_vec();
            (0..n).for_each(|i| z[i * n + i] = 0.0);
            z
        };
        let (kt, lt) = (zd(k), zd(l));
        let tr: f64 = (0..n * n).map(|i| kt[i] * lt[i]).sum();
        let sk: f64 = kt.iter().sum();
        let sl: f64 = lt.iter().sum();
        let rk: Vec<f64> = (0..n)
            .map(|i| kt[i * n..(i + 1) * n].iter().sum())
            .collect();
        let rl: Vec<f64> = (0..n)
            .map(|i| lt[i * n..(i + 1) * n].iter().sum())
            .collect();
        let kl: f64 = rk.iter().zip(&rl).map(|(a, b)| a * b).sum();
        let nf = n as f64;
        (tr + sk * sl / ((nf - 1.0) * (nf - 2.0)) - 2.0 / (nf - 2.0) * kl) / (nf * (nf - 3.0))
    }

    #[test]
    fn unbiased_hsic_is_the_u_statistic() {
        let mut g = Gen::new(3);
        let (n, dx, dy) = (7, 3, 2);
        // Large offsets: the raw Gram matrices are far from centred.
        let x: Vec<f32> = g.matrix(n, dx).iter().map(|v| v + 4.0).collect();
        let y: Vec<f32> = (0..n * dy)
            .map(|i| x[(i / dy) * dx + i % dy] + 0.7 * g.normal() as f32 - 3.0)
            .collect();
        let (k, l) = (gram_of(&x, n, dx), gram_of(&y, n, dy));
        // HSIC₁ = (1/(n)₄) Σ over distinct (i, j, q, r) of k_ij l_ij + k_ij l_qr − 2 k_ij l_iq
        // (Song et al., 2012, Theorem 2: the U-statistic whose kernel h averages these terms
        // over the 24 orderings; summing over all ordered quadruples does that averaging).
        let mut sum = 0.0;
        let mut count = 0usize;
        for i in 0..n {
            for j in 0..n {
                for q in 0..n {
                    for r in 0..n {
                        if i == j || i == q || i == r || j == q || j == r || q == r {
                            continue;
                        }
                        let kij = k[i * n + j];
                        sum += kij * l[i * n + j] + kij * l[q * n + r] - 2.0 * kij * l[i * n + q];
                        count += 1;
                    }
                }
            }
        }
        assert_eq!(count, 7 * 6 * 5 * 4);
        let u_stat = sum / count as f64;
        let closed = unbiased_closed_form(&k, &l, n);
        assert!(
            (closed - u_stat).abs() < 1e-9 * u_stat.abs(),
            "{closed} vs {u_stat}"
        );
        let a = CenteredGram::from_gram(&k, n).expect("gram");
        let b = CenteredGram::from_gram(&l, n).expect("gram");
        let got = hsic_value(&a, &b, Hsic::Unbiased).expect("hsic");
        assert!(
            (got - u_stat).abs() < 1e-5 * u_stat.abs(),
            "{got} vs {u_stat}"
        );
        // And the biased estimator is tr(HKH·HLH)/(n−1)², distinct from the unbiased one.
        let biased = hsic_value(&a, &b, Hsic::Biased).expect("hsic");
        assert!((biased - got).abs() > 1e-3 * got.abs());
    }

    #[test]
    fn unbiased_estimator_is_invariant_to_centring() {
        let mut g = Gen::new(4);
        let (n, d) = (9, 4);
        let x: Vec<f32> = g.matrix(n, d).iter().map(|v| v * 2.0 + 5.0).collect();
        let y: Vec<f32> = g.matrix(n, d).iter().map(|v| v - 1.0).collect();
        let (kr, lr) = (gram_of(&x, n, d), gram_of(&y, n, d));
        let (xc, yc) = (centred_f64(&x, n, d), centred_f64(&y, n, d));
        let gram64 = |a: &[f64]| {
            let mut gm = vec![0f64; n * n];
            for i in 0..n {
                for j in 0..n {
                    gm[i * n + j] = (0..d).map(|t| a[i * d + t] * a[j * d + t]).sum();
                }
            }
            gm
        };
        let (kc, lc) = (gram64(&xc), gram64(&yc));
        // The formula itself, on raw and on centred matrices.
        let (raw, cen) = (
            unbiased_closed_form(&kr, &lr, n),
            unbiased_closed_form(&kc, &lc, n),
        );
        assert!((raw - cen).abs() < 1e-9 * cen.abs(), "{raw} vs {cen}");
        // And the implementation, fed either.
        let from = |m: &[f64]| CenteredGram::from_gram(m, n).expect("gram");
        let (ar, ac) = (from(&kr), from(&kc));
        let (br, bc) = (from(&lr), from(&lc));
        let v_raw = linear_cka(&ar, &br, Hsic::Unbiased).expect("cka");
        let v_cen = linear_cka(&ac, &bc, Hsic::Unbiased).expect("cka");
        assert!((v_raw - v_cen).abs() < 1e-6, "{v_raw} vs {v_cen}");
        let h = hsic_value(&ar, &br, Hsic::Unbiased).expect("hsic");
        assert!((h - cen).abs() < 1e-5 * cen.abs(), "{h} vs {cen}");
        // from_gram centres: the stored matrices agree.
        for (p, q) in ar.k.iter().zip(&ac.k) {
            assert!((p - q).abs() < 1e-4, "{p} vs {q}");
        }
    }

    #[test]
    fn cka_input_errors() {
        let mut g = Gen::new(5);
        let x = g.matrix(6, 3);
        let a = CenteredGram::from_features(&x, 6, 3).expect("gram");
        let b = CenteredGram::from_features(&x[..15], 5, 3).expect("gram");
        assert_eq!((a.n(), b.n()), (6, 5));
        assert!(matches!(
            linear_cka(&a, &b, Hsic::Biased),
            Err(DynamicsError::SampleMismatch { a: 6, b: 5 })
        ));
        let c = CenteredGram::from_features(&x[..9], 3, 3).expect("gram");
        assert!(matches!(
            linear_cka(&c, &c, Hsic::Unbiased),
            Err(DynamicsError::TooFewSamples { n: 3, need: 4, .. })
        ));
        assert!(linear_cka(&c, &c, Hsic::Biased).is_ok());
        let constant = CenteredGram::from_features(&[2.5f32; 18], 6, 3).expect("gram");
        for h in [Hsic::Biased, Hsic::Unbiased] {
            assert!(matches!(
                linear_cka(&a, &constant, h),
                Err(DynamicsError::DegenerateRepresentation {
                    which: "second",
                    ..
                })
            ));
        }
        let mut bad = x.clone();
        bad[7] = f32::NAN;
        assert!(matches!(
            CenteredGram::from_features(&bad, 6, 3),
            Err(DynamicsError::NonFinite { row: 2, col: 1, .. })
        ));
        assert!(matches!(
            CenteredGram::from_features(&x, 5, 3),
            Err(DynamicsError::Shape {
                len: 18,
                n: 5,
                d: 3
            })
        ));
        assert!(matches!(
            CenteredGram::from_gram(&[1.0; 8], 3),
            Err(DynamicsError::GramShape { len: 8, n: 3 })
        ));
        assert!(matches!(
            CenteredGram::from_gram(&[], 0),
            Err(DynamicsError::GramShape { n: 0, .. })
        ));
        assert!(matches!(
            CenteredGram::from_gram(&[1.0, 0.5, 0.5, f64::INFINITY], 2),
            Err(DynamicsError::GramNonFinite { row: 1, col: 1, .. })
        ));
        assert!(matches!(
            CenteredGram::from_gram(&[1.0, 0.5, 0.2, 1.0], 2),
            Err(DynamicsError::GramNotSymmetric { row: 1, col: 0 })
        ));
        assert_eq!("biased".parse::<Hsic>().ok(), Some(Hsic::Biased));
        assert_eq!(" Unbiased".parse::<Hsic>().ok(), Some(Hsic::Unbiased));
        let e = "u-stat".parse::<Hsic>().expect_err("not an estimator");
        assert!(e.to_string().contains("`biased` or `unbiased`"), "{e}");
        assert_eq!(Hsic::default(), Hsic::Biased);
    }

    /// Samples of class `c` with random coefficients on the coordinates `coords` and the
    /// constant `offset` everywhere (removed by the per-class centring).
    fn class_block(g: &mut Gen, count: usize, d: usize, coords: &[usize], offset: f32) -> Vec<f32> {
        let mut x = vec![offset; count * d];
        for i in 0..count {
            for &j in coords {
                x[i * d + j] += g.normal() as f32;
            }
        }
        x
    }

    #[test]
    fn orthogonal_class_subspaces_have_zero_alignment() {
        let mut g = Gen::new(6);
        let (d, per) = (14, 25);
        let mut x = Vec::new();
        let mut labels = Vec::new();
        for c in 0..4usize {
            let coords: Vec<usize> = (3 * c..3 * c + 3).collect();
            x.extend(class_block(&mut g, per, d, &coords, 5.0 + c as f32));
            labels.extend(std::iter::repeat_n(10 * c as i64, per));
        }
        let n = labels.len();
        let al = class_subspace_alignment(&x, n, d, &labels, 0.999).expect("alignment");
        assert_eq!(al.classes, vec![0, 10, 20, 30]);
        assert_eq!(al.ranks, vec![3; 4]);
        for a in 0..4 {
            for b in 0..4 {
                let want = if a == b { 1.0 } else { 0.0 };
                assert!((al.cos[a][b] - want).abs() <= 1e-6, "cos[{a}][{b}]");
            }
        }
        assert!(al.mean.abs() <= 1e-6);
    }

    #[test]
    fn shared_and_tilted_class_subspaces() {
        let mut g = Gen::new(7);
        let d = 8;
        // Classes 0 and 1 span the same 3-D subspace; class 2 another one.
        let mut x = class_block(&mut g, 30, d, &[0, 1, 2], 1.0);
        x.extend(class_block(&mut g, 20, d, &[0, 1, 2], -2.0));
        x.extend(class_block(&mut g, 20, d, &[3, 4, 5], 0.0));
        let labels: Vec<i64> = [vec![0; 30], vec![1; 20], vec![2; 20]].concat();
        let al = class_subspace_alignment(&x, 70, d, &labels, 0.9999).expect("alignment");
        assert!((al.cos[0][1] - 1.0).abs() < 1e-5, "{}", al.cos[0][1]);
        assert!(al.cos[0][2].abs() < 1e-6 && al.cos[1][2].abs() < 1e-6);
        assert!((al.mean - 1.0 / 3.0).abs() < 1e-5);
        // Three lines: e₁, cos θ e₁ + sin θ e₂ and e₃. The principal angle between the first two
        // is θ, so their cosine is cos θ; the third is orthogonal to both.
        let theta = 0.7f64;
        let ts = [-2.0f64, -1.0, 0.5, 1.0, 2.5];
        let mut x = Vec::new();
        for &t in &ts {
            x.extend([t as f32, 0.0, 0.0]);
        }
        for &t in &ts {
            x.extend([(t * theta.cos()) as f32, (t * theta.sin()) as f32, 0.0]);
        }
        for &t in &ts {
            x.extend([0.0, 0.0, t as f32]);
        }
        let labels: Vec<i64> = [[7; 5], [8; 5], [9; 5]].concat();
        let al = class_subspace_alignment(&x, 15, 3, &labels, 0.9).expect("alignment");
        assert_eq!(al.ranks, vec![1, 1, 1]);
        assert!(
            (al.cos[0][1] - theta.cos()).abs() < 1e-6,
            "{}",
            al.cos[0][1]
        );
        assert!(al.cos[0][2].abs() < 1e-7 && al.cos[1][2].abs() < 1e-7);
        assert!((al.mean - theta.cos() / 3.0).abs() < 1e-6);
    }

    #[test]
    fn classes_without_spread_are_skipped() {
        let mut g = Gen::new(8);
        let d = 6;
        let mut x = class_block(&mut g, 10, d, &[0, 1], 0.0);
        x.extend(class_block(&mut g, 10, d, &[2, 3], 0.0));
        x.extend([1.0f32; 6]); // class 5: one sample
        x.extend([2.0f32; 18]); // class 6: three identical samples
        let labels: Vec<i64> = [vec![0; 10], vec![1; 10], vec![5], vec![6; 3]].concat();
        let n = labels.len();
        let al = class_subspace_alignment(&x, n, d, &labels, 0.9).expect("alignment");
        assert_eq!(al.classes, vec![0, 1]);
        assert_eq!(al.cos.len(), 2);
        // Only one class with spread left.
        assert!(matches!(
            class_subspace_alignment(&x[10 * d..], n - 10, d, &labels[10..], 0.9),
            Err(DynamicsError::TooFewClasses { found: 1 })
        ));
        for e in [0.0, 1.5, f64::NAN] {
            assert!(matches!(
                class_subspace_alignment(&x, n, d, &labels, e),
                Err(DynamicsError::InvalidEnergy(_))
            ));
        }
        assert!(matches!(
            class_subspace_alignment(&x, n, d, &labels[1..], 0.9),
            Err(DynamicsError::LabelCount { .. })
        ));
        let mut bad = x.clone();
        bad[d + 1] = f32::NEG_INFINITY;
        assert!(matches!(
            class_subspace_alignment(&bad, n, d, &labels, 0.9),
            Err(DynamicsError::NonFinite { row: 1, col: 1, .. })
        ));
    }

    #[test]
    fn collapsed_classes_have_zero_nc1() {
        let mut g = Gen::new(9);
        let (d, c, per) = (20, 3, 10);
        let means = g.matrix(c, d);
        let mut x = Vec::new();
        let mut labels = Vec::new();
        for k in 0..c {
            for _ in 0..per {
                x.extend_from_slice(&means[k * d..(k + 1) * d]);
                labels.push(k as i64);
            }
        }
        assert_eq!(nc1(&x, c * per, d, &labels).expect("nc1"), 0.0);
    }

    #[test]
    fn nc1_of_a_hand_worked_case() {
        // 1-D: class 0 = {0, 2} (mean 1), class 1 = {10} (mean 10); global mean 4.
        // Σ_W = (1 + 1 + 0)/3 = 2/3; Σ_B = ((1 − 4)² + (10 − 4)²)/2 = 22.5;
        // NC1 = (2/3)/22.5/2 = 1/67.5.
        let x = [0f32, 2.0, 10.0];
        let v = nc1(&x, 3, 1, &[3, 3, 8]).expect("nc1");
        assert!((v - 1.0 / 67.5).abs() < 1e-15, "{v}");
        // Scaling the features leaves it unchanged.
        let x3 = [0f32, 6.0, 30.0];
        assert!((nc1(&x3, 3, 1, &[3, 3, 8]).expect("nc1") - v).abs() < 1e-15);
    }

    /// tr(Σ_W Σ_B⁺)/C with d × d matrices and a dense pseudo-inverse.
    fn nc1_dense(x: &[f32], n: usize, d: usize, labels: &[i64]) -> f64 {
        let (class_of, classes) = dense_ids(labels);
        let c = classes.len();
        let xf: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        let mut mu = vec![vec![0f64; d]; c];
        let mut cnt = vec![0f64; c];
        for i in 0..n {
            cnt[class_of[i]] += 1.0;
            (0..d).for_each(|j| mu[class_of[i]][j] += xf[i * d + j]);
        }
        (0..c).for_each(|k| mu[k].iter_mut().for_each(|m| *m /= cnt[k]));
        let mg: Vec<f64> = (0..d)
            .map(|j| (0..n).map(|i| xf[i * d + j]).sum::<f64>() / n as f64)
            .collect();
        let sw = Mat::<f64>::from_fn(d, d, |p, q| {
            (0..n)
                .map(|i| {
                    let m = &mu[class_of[i]];
                    (xf[i * d + p] - m[p]) * (xf[i * d + q] - m[q])
                })
                .sum::<f64>()
                / n as f64
        });
        let sb = Mat::<f64>::from_fn(d, d, |p, q| {
            (0..c)
                .map(|k| (mu[k][p] - mg[p]) * (mu[k][q] - mg[q]))
                .sum::<f64>()
                / c as f64
        });
        let e = sb.self_adjoint_eigen(Side::Lower).expect("eigen");
        let lmax = (0..d).map(|j| e.S()[j]).fold(0.0, f64::max);
        let mut pinv = Mat::<f64>::zeros(d, d);
        for j in 0..d {
            let l = e.S()[j];
            if l > NC1_PINV_RTOL * lmax {
                let u = e.U().col(j);
                pinv += Mat::<f64>::from_fn(d, d, |p, q| u[p] * u[q] / l);
            }
        }
        let prod = &sw * &pinv;
        (0..d).map(|j| prod[(j, j)]).sum::<f64>() / c as f64
    }

    #[test]
    fn nc1_matches_the_dense_formula() {
        let mut g = Gen::new(10);
        let d = 6;
        // Balanced classes (Σ_B has rank C − 1) and unbalanced ones (rank C).
        for sizes in [vec![12usize, 12, 12], vec![5, 9, 14, 3]] {
            let mut x = Vec::new();
            let mut labels = Vec::new();
            for (k, &s) in sizes.iter().enumerate() {
                let centre: Vec<f64> = (0..d).map(|_| 3.0 * g.normal()).collect();
                for _ in 0..s {
                    x.extend(centre.iter().map(|m| (m + g.normal()) as f32));
                    labels.push(k as i64 * 2 - 3);
                }
            }
            let n = labels.len();
            let want = nc1_dense(&x, n, d, &labels);
            let got = nc1(&x, n, d, &labels).expect("nc1");
            assert!(want > 0.01, "{want}");
            assert!(
                (got - want).abs() < 1e-9 * want,
                "{sizes:?}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn nc1_input_errors() {
        let x = [1f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert!(matches!(
            nc1(&x, 3, 2, &[0, 0, 0]),
            Err(DynamicsError::TooFewClasses { found: 1 })
        ));
        // Both class means are (2, 3): no between-class spread.
        let same = [1f32, 2.0, 3.0, 4.0, 2.0, 3.0];
        assert!(matches!(
            nc1(&same, 3, 2, &[0, 0, 1]),
            Err(DynamicsError::NoBetweenClassSpread)
        ));
        assert!(matches!(
            nc1(&x, 3, 2, &[0, 1]),
            Err(DynamicsError::LabelCount { labels: 2, n: 3 })
        ));
        let mut bad = x;
        bad[5] = f32::NAN;
        assert!(matches!(
            nc1(&bad, 3, 2, &[0, 0, 1]),
            Err(DynamicsError::NonFinite { row: 2, col: 1, .. })
        ));
        assert!(matches!(
            nc1(&[], 0, 2, &[]),
            Err(DynamicsError::Empty { n: 0, d: 2 })
        ));
    }

    fn blobs(g: &mut Gen, c: usize, per: usize, dim: usize, sep: f64) -> (Vec<f32>, Vec<i64>) {
        let mut x = Vec::new();
        let mut labels = Vec::new();
        for k in 0..c {
            for _ in 0..per {
                x.extend((0..dim).map(|j| {
                    let centre = if j == k { sep } else { 0.0 };
                    (centre + g.normal()) as f32
                }));
                labels.push(k as i64);
            }
        }
        (x, labels)
    }

    #[test]
    fn probe_separates_well_separated_blobs() {
        let mut g = Gen::new(11);
        let (x, labels) = blobs(&mut g, 5, 41, 20, 12.0);
        let r = linear_probe(&x, 205, 20, &labels, 3).expect("probe");
        assert_eq!((r.n_train, r.n_test), (100, 105));
        assert_eq!(r.accuracy, 1.0);
        assert_eq!(r.train_accuracy, 1.0);
    }

    #[test]
    fn probe_reaches_the_bayes_accuracy_of_overlapping_classes() {
        // Two 1-D Gaussians at ±1 with unit variance: the best classifier (threshold 0) is right
        // with probability Φ(1) = 0.8413; a fitted linear probe must get close on 2000 test
        // samples (standard error ≈ 0.008).
        let mut g = Gen::new(12);
        let n = 4000;
        let labels: Vec<i64> = (0..n as i64).map(|i| i % 2).collect();
        let x: Vec<f32> = labels
            .iter()
            .map(|&l| (if l == 0 { -1.0 } else { 1.0 } + g.normal()) as f32)
            .collect();
        let r = linear_probe(&x, n, 1, &labels, 0).expect("probe");
        assert!((r.accuracy - 0.8413).abs() < 0.03, "{r:?}");
    }

    #[test]
    fn probe_is_at_chance_on_random_labels_and_reproducible() {
        let mut g = Gen::new(13);
        let (n, dim) = (600, 50);
        let x = g.matrix(n, dim);
        let labels: Vec<i64> = (0..n).map(|_| g.0.below(10) as i64).collect();
        let r = linear_probe(&x, n, dim, &labels, 7).expect("probe");
        assert!(r.accuracy < 0.5, "{r:?}");
        // 300 samples, 510 parameters: even with the L2 penalty the training half is fitted
        // far better than chance (about 0.6).
        assert!(r.train_accuracy > 0.4, "{r:?}");
        let again = linear_probe(&x, n, dim, &labels, 7).expect("probe");
        assert_eq!(r, again);
        // The split is stratified and depends on the seed.
        let (class_of, _) = dense_ids(&labels);
        let (tr7, te7) = stratified_split(&class_of, 10, 7);
        let (tr8, _) = stratified_split(&class_of, 10, 8);
        assert_ne!(tr7, tr8);
        assert_eq!(tr7.len() + te7.len(), n);
        for k in 0..10 {
            let nk = class_of.iter().filter(|&&c| c == k).count();
            let in_train = tr7.iter().filter(|&&i| class_of[i] == k).count();
            assert_eq!(in_train, nk / 2);
        }
    }

    #[test]
    fn exp_nonpositive_matches_std() {
        for i in 0..7000 {
            let t = -f64::from(i) * 0.1 + 1e-3 * f64::from(i % 7);
            let t = t.min(0.0);
            let (got, want) = (exp_nonpositive(t), t.exp());
            assert!(
                (got - want).abs() <= 4.0 * f64::EPSILON * want,
                "exp({t}): {got} vs {want}"
            );
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-800.0), 0.0);
        assert_eq!(exp_nonpositive(f64::NEG_INFINITY), 0.0);
    }

    #[test]
    fn probe_input_errors() {
        let x = [0f32, 1.0, 2.0, 3.0];
        assert!(matches!(
            linear_probe(&x, 4, 1, &[0, 1, 0], 0),
            Err(DynamicsError::LabelCount { labels: 3, n: 4 })
        ));
        assert!(matches!(
            linear_probe(&x, 4, 1, &[0, 0, 0, 0], 0),
            Err(DynamicsError::TooFewClasses { found: 1 })
        ));
        // Every class has one sample: nothing to train on.
        assert!(matches!(
            linear_probe(&x, 4, 1, &[0, 1, 2, 3], 0),
            Err(DynamicsError::EmptySplit {
                n_train: 0,
                n_test: 4
            })
        ));
        let bad = [0f32, f32::NAN, 2.0, 3.0];
        assert!(matches!(
            linear_probe(&bad, 4, 1, &[0, 1, 0, 1], 0),
            Err(DynamicsError::Scores(ScoresError::NonFinite { row: 1, .. }))
        ));
        assert!(matches!(
            linear_probe(&x, 2, 1, &[0, 1], 0),
            Err(DynamicsError::Scores(ScoresError::Shape { .. }))
        ));
    }

    /// Timings of the four measures on random data of MNIST-layer size (run with
    /// `cargo test --release -p cnnu-analysis --lib dynamics::tests::timings -- --ignored
    /// --nocapture`).
    #[test]
    #[ignore = "prints timings, asserts nothing; run with --ignored --nocapture (see above)"]
    fn timings() {
        use std::time::Instant;
        let mut g = Gen::new(14);
        let n = 2000;
        let labels: Vec<i64> = (0..n as i64).map(|i| i % 10).collect();
        for d in [512usize, 12544] {
            let x = g.matrix(n, d);
            // Low-rank class structure as well as pure noise: real layers sit in between.
            let low: Vec<f32> = {
                let basis = g.matrix(400, d);
                let mut out = vec![0f32; n * d];
                for i in 0..n {
                    let c = (i % 10) * 40;
                    for t in 0..40 {
                        let w = g.normal() as f32;
                        for j in 0..d {
                            out[i * d + j] += w * basis[(c + t) * d + j];
                        }
                    }
                    for j in 0..d {
                        out[i * d + j] += 0.05 * g.normal() as f32;
                    }
                }
                out
            };
            for (name, data) in [("random", &x), ("low-rank", &low)] {
                let t = Instant::now();
                let red = reduce::reduce(data, n, d, Method::Pca, 0.9, None, Solver::Auto)
                    .expect("reduce");
                let t_reduce = t.elapsed();
                let t = Instant::now();
                let cg = CenteredGram::from_features(data, n, d).expect("gram");
                let t_gram = t.elapsed();
                let t = Instant::now();
                let cg2 = CenteredGram::from_gram(red.sample_gram.as_deref().unwrap_or(&[]), n);
                let t_from_gram = t.elapsed();
                let t = Instant::now();
                let cka = linear_cka(&cg, &cg, Hsic::Unbiased).expect("cka");
                let t_cka = t.elapsed();
                let t = Instant::now();
                let al = class_subspace_alignment(data, n, d, &labels, 0.9).expect("align");
                let t_align = t.elapsed();
                let t = Instant::now();
                let v = nc1(data, n, d, &labels).expect("nc1");
                let t_nc1 = t.elapsed();
                let k = 250.min(red.k_used);
                let scores: Vec<f32> = (0..n)
                    .flat_map(|i| red.scores[i * red.k_used..i * red.k_used + k].to_vec())
                    .collect();
                let t = Instant::now();
                let p = linear_probe(&scores, n, k, &labels, 0).expect("probe");
                let t_probe = t.elapsed();
                eprintln!(
                    "d={d} {name}: reduce {t_reduce:.2?} (k {}), from_features {t_gram:.2?}, \
                     from_gram {t_from_gram:.2?} ({}), cka {t_cka:.2?} ({cka:.3}), \
                     alignment {t_align:.2?} (ranks {:?}, mean {:.3}), nc1 {t_nc1:.2?} ({v:.3}), \
                     probe k={k} {t_probe:.2?} ({:.3}/{:.3})",
                    red.k,
                    cg2.is_ok(),
                    al.ranks,
                    al.mean,
                    p.accuracy,
                    p.train_accuracy
                );
            }
        }
    }

    #[test]
    fn subspace_alignment_from_the_gram_matrix_equals_the_feature_route() {
        // Three classes of different spread and rank in 40 dims, each with an offset that
        // both routes must centre away.
        let (n, d) = (90usize, 40usize);
        let mut state = 5u64;
        let mut rnd = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) as f32 - 0.5
        };
        let labels: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
        let mut x = vec![0f32; n * d];
        for i in 0..n {
            let c = labels[i] as usize;
            for j in 0..d {
                let scale = if j % 3 == c { 3.0 } else { 0.3 };
                x[i * d + j] = scale * rnd() + c as f32;
            }
        }
        let by_features = class_subspace_alignment(&x, n, d, &labels, 0.9).unwrap();
        for centre in [false, true] {
            let g = crate::reduce::sample_gram(&x, n, d, centre).unwrap();
            let by_gram = class_subspace_alignment_from_gram(&g, n, &labels, 0.9).unwrap();
            assert_eq!(by_gram.classes, by_features.classes);
            assert_eq!(by_gram.ranks, by_features.ranks);
            for (ra, rb) in by_gram.cos.iter().zip(&by_features.cos) {
                for (a, b) in ra.iter().zip(rb) {
                    assert!((a - b).abs() < 1e-5, "{a} vs {b}");
                }
            }
            assert!(
                by_gram.mean > 0.05 && by_gram.mean < 0.95,
                "{}",
                by_gram.mean
            );
        }
    }
}
