//! The seed's *filter* and *reduce* steps: keep the features that are active, centre them
//! (`pca`) or not (`svd`), and keep the leading singular directions that hold a given share of the
//! energy.
//!
//! # What is computed
//! For activations `X` `[n, d]` (f32, row-major) the singular values `s₁ ≥ s₂ ≥ …` of `X` (or of
//! the column-centred `X_c` for [`Method::Pca`]) give the energies `e_j = (s₁² + … + s_j²) / Σ s²`.
//! `k` is the first `j` with `e_j > energy`, and the scores are `U_k · S_k` (`[n, k]`). The total
//! `Σ s² = ‖X_c‖²_F` is summed from the data in f64, so `k` needs only the *leading* singular
//! values: nothing of the tail is computed, which is what makes this much cheaper than a full SVD.
//!
//! # How
//! Both solvers run the same block Lanczos iteration (blocks of 64, full reorthogonalisation) on
//! the symmetric operator `A = X_c X_cᵀ` of the smaller side (`n ≤ d`; otherwise `X_cᵀ X_c`),
//! started from a random block with a fixed seed (so results are reproducible): a randomized block
//! Krylov method (Halko et al.; Musco & Musco), which converges far faster than a fixed number of
//! power iterations. On MNIST conv1/relu activations the energies at `k` are exact to ~1e-8 once
//! the space has `m ≈ 3.5–5·k` vectors.
//!
//! * [`Solver::Gram`] first forms `A` in f64: chunks of 2048 features are centred into an f32
//!   buffer, multiplied in f32 (lower triangle only) and added into the f64 matrix, so every entry
//!   is within ~1e-7 of the exact Gram matrix at f32 speed. Forming it costs `n²·d` flops; after
//!   that a Lanczos step costs `2·n²·b`, almost nothing, so the tolerance is tight (1e-9). If the
//!   space would exceed half of `A`'s size (very many components), a dense eigensolver takes over.
//!   Memory: `n²` f64.
//! * [`Solver::Randomized`] never forms `A`: each step multiplies `X_cᵀ` and `X_c` by a block (f32
//!   products; centring is a rank-one correction in f64, so `X` is never copied), `4·n·d·b` flops.
//!   It keeps `X_cᵀQ` so that the Rayleigh–Ritz matrix `QᵀAQ = (X_cᵀQ)ᵀ(X_cᵀQ)` needs only the
//!   first product of a step: the last step and the final check cost one product, not two.
//!   Memory: `(n + d)·m` f64 for a space of dimension `m`, on top of `X`.
//!
//! Stopping: after each step the Ritz values give estimated energies, which only grow with the
//! space (Cauchy interlacing). The iteration stops when `k` is unchanged, the energies at `k − 1`
//! and `k` moved by less than the tolerance in the last step (or by less than 100× the tolerance
//! with a convergence rate that puts the rest below it), at least `k + 20` values exist, and all of
//! this still holds after one more step in which a quarter of the block is replaced by fresh random
//! vectors: a singular value of multiplicity above the block size has directions that a Krylov
//! space grown from one block never reaches, and random vectors would reveal them.
//!
//! [`Solver::Auto`] picks Gram when the smaller side is at most [`GRAM_MAX_DIM`]. Forming `A` costs
//! `n²·d` flops and the randomized products about `4·n·d·m` with `m ≈ 3.5–5·k`, so Gram wins while
//! `n ≲ 4m`: measured on this project's 2-core machine with MNIST activations (d ≈ 11 000–12 500,
//! k = 60–240), Gram and randomized tie at n = 2000 for conv1 and Gram wins for relu; at
//! n = 3000–4000 randomized is 1.1–2× faster. Beyond that the Gram matrix also grows too large
//! (800 MB at n = 10 000).
//!
//! # Sign convention
//! Each column of `U` (hence of the scores) is flipped so that its entry of largest magnitude (the
//! first one, on ties) is positive.
//!
//! # Accuracy
//! `k` matches a full f64 SVD whenever the energy at `k − 1` is more than ~1e-6 away from the
//! threshold: both solvers multiply in f32, which moves energies by ~1e-8 (measured against numpy's
//! f64 SVD on MNIST conv1/relu activations at n = 2000 and 10 000). The leading singular values are
//! accurate to ~1e-7 relative. Singular values past `k` are Ritz values: lower bounds, close but not
//! converged to the same tolerance.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};
use rayon::prelude::*;

/// The smaller side of `X` up to which [`Solver::Auto`] forms the Gram matrix (see the module
/// documentation for the reasoning).
pub const GRAM_MAX_DIM: usize = 2048;

/// With an energy threshold of 1 (no cumulative share can exceed it), `k` counts the components
/// with `s² > RANK_TOL · s₁²`: the f32 products leave numerically zero directions at ~1e-7·s₁².
pub const RANK_TOL: f64 = 1e-5;

/// How many singular values past `k` a [`Reduction`] reports (when they exist).
pub const EXTRA_SINGULAR_VALUES: usize = 20;

/// Whether the features are centred before the decomposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Centre each feature (column) over the samples: principal components.
    Pca,
    /// Decompose the activations as they are, like a truncated SVD.
    Svd,
}

/// Which algorithm computes the leading singular values and vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Solver {
    /// [`Solver::Gram`] when the smaller side of the data is at most [`GRAM_MAX_DIM`], otherwise
    /// [`Solver::Randomized`].
    Auto,
    /// Form the Gram matrix of the smaller side in f64 and iterate on it.
    Gram,
    /// Randomized block Krylov iteration on the data itself (f32 products).
    Randomized,
}

/// Which samples decide whether a feature is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterClass {
    /// Only the samples with this label (the seed uses class 0).
    Class(i64),
    /// Every sample.
    All,
}

/// The features kept by [`filter_features`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterResult {
    /// Indices of the kept features, ascending.
    pub kept: Vec<usize>,
    /// The number of features before filtering.
    pub d_total: usize,
}

/// What [`reduce`] found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reduction {
    /// The number of components needed: the first `k` with energy > the threshold.
    pub k: usize,
    /// The energy share of the first `k` components (> the threshold).
    pub energy_at_k: f64,
    /// The energy share of the first `k − 1` components (≤ the threshold; 0 when `k` = 1).
    pub energy_before_k: f64,
    /// The leading singular values, descending: `k + 20` of them, or all that exist if fewer.
    pub singular_values: Vec<f64>,
    /// `U_k·S_k` truncated to `k_used` columns, row-major `[n, k_used]`.
    pub scores: Vec<f32>,
    /// `min(k, max_k)`: the number of score columns.
    pub k_used: usize,
    /// The solver that ran ([`Solver::Auto`] is resolved to the one it picked).
    pub solver: Solver,
    /// The sample Gram matrix `X_c X_cᵀ` (`[n, n]`, f64, symmetric), when the Gram solver formed
    /// it on the sample side (`n ≤ d`): the representation measures reuse it instead of paying
    /// the `n²·d` product a second time.
    #[serde(skip)]
    pub sample_gram: Option<Vec<f64>>,
}

/// Why filtering or reducing failed.
#[derive(Debug, thiserror::Error)]
pub enum ReduceError {
    /// The energy threshold must lie in (0, 1].
    #[error("energy threshold {0} is outside (0, 1]")]
    InvalidEnergy(f64),
    /// The activity threshold must be a finite number.
    #[error("activity threshold {0} is not a finite number")]
    InvalidThreshold(f32),
    /// `max_k` must allow at least one component.
    #[error("max_k must be at least 1")]
    InvalidMaxK,
    /// No samples or no features.
    #[error("empty input: {n} samples × {d} features")]
    Empty {
        /// Samples.
        n: usize,
        /// Features.
        d: usize,
    },
    /// The activation buffer does not hold `n·d` values.
    #[error("activations hold {len} values, expected {n} × {d}")]
    ShapeMismatch {
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
    /// The filter class has no samples.
    #[error("no sample has label {0}")]
    EmptyClass(i64),
    /// Every feature fell below the activity threshold.
    #[error("all {d_total} features are at or below the activity threshold {threshold}")]
    AllFiltered {
        /// Features before filtering.
        d_total: usize,
        /// The threshold used.
        threshold: f32,
    },
    /// A value is NaN or infinite.
    #[error("activation at sample {row}, feature {col} is {value}")]
    NonFinite {
        /// Sample index.
        row: usize,
        /// Feature index.
        col: usize,
        /// The offending value.
        value: f32,
    },
    /// Every (centred) value is zero, so energy shares are undefined.
    #[error("the {method} data have zero energy (constant or all-zero features)")]
    ZeroEnergy {
        /// `pca` or `svd`.
        method: &'static str,
    },
    /// The dense eigensolver did not converge.
    #[error("the eigensolver did not converge")]
    NoConvergence,
}

/// Keeps feature `j` when the mean of `|x_ij|` over the samples of `class` (or over all samples)
/// is above `threshold` (the seed uses class 0 and 1e-3).
///
/// Means are accumulated in f64 and compared with the f32 threshold's exact value.
pub fn filter_features(
    x: &[f32],
    n: usize,
    d: usize,
    labels: &[i64],
    class: FilterClass,
    threshold: f32,
) -> Result<FilterResult, ReduceError> {
    check_shape(x, n, d)?;
    if labels.len() != n {
        return Err(ReduceError::LabelCount {
            labels: labels.len(),
            n,
        });
    }
    if !threshold.is_finite() {
        return Err(ReduceError::InvalidThreshold(threshold));
    }
    let rows: Vec<usize> = match class {
        FilterClass::All => (0..n).collect(),
        FilterClass::Class(c) => (0..n).filter(|&i| labels[i] == c).collect(),
    };
    if rows.is_empty() {
        // Only reachable for a class (n > 0 was checked).
        let FilterClass::Class(c) = class else {
            unreachable!("n > 0")
        };
        return Err(ReduceError::EmptyClass(c));
    }
    // Fixed chunks summed in order: the same bits on every run, whatever rayon's scheduling.
    let sums = rows
        .par_chunks(rows.len().div_ceil(SUM_CHUNKS))
        .map(|chunk| {
            let mut acc = vec![0f64; d];
            for &i in chunk {
                for (a, &v) in acc.iter_mut().zip(&x[i * d..(i + 1) * d]) {
                    *a += f64::from(v.abs());
                }
            }
            acc
        })
        .collect::<Vec<_>>()
        .into_iter()
        .reduce(add_vecs)
        .unwrap_or_else(|| vec![0f64; d]);
    if sums.iter().any(|s| !s.is_finite()) {
        return Err(find_non_finite(x, d, rows.iter().copied()));
    }
    let count = rows.len() as f64;
    let t = f64::from(threshold);
    let kept: Vec<usize> = (0..d).filter(|&j| sums[j] / count > t).collect();
    if kept.is_empty() {
        return Err(ReduceError::AllFiltered {
            d_total: d,
            threshold,
        });
    }
    Ok(FilterResult { kept, d_total: d })
}

/// Copies the columns `kept` of `x` (`[n, d]`, row-major) into a new row-major `[n, kept.len()]`
/// buffer.
///
/// # Panics
/// If `x.len() != n·d` or an index in `kept` is `≥ d` (both are programming errors: `kept` comes
/// from [`filter_features`] on the same data).
pub fn select_columns(x: &[f32], n: usize, d: usize, kept: &[usize]) -> Vec<f32> {
    assert_eq!(
        x.len(),
        n * d,
        "select_columns: x holds {} values, not {n} × {d}",
        x.len()
    );
    assert!(
        kept.iter().all(|&j| j < d),
        "select_columns: a kept index is ≥ d = {d}"
    );
    let k = kept.len();
    let mut out = vec![0f32; n * k];
    if k == 0 {
        return out;
    }
    out.par_chunks_mut(k)
        .zip(x.par_chunks(d))
        .for_each(|(dst, row)| {
            for (o, &j) in dst.iter_mut().zip(kept) {
                *o = row[j];
            }
        });
    out
}

/// Centres (for [`Method::Pca`]) and decomposes `x` (`[n, d]`, row-major), returning the first `k`
/// with cumulative energy > `energy`, the leading singular values and the scores `U_k·S_k` cut to
/// `max_k` columns. See the module documentation for the algorithms and their accuracy.
pub fn reduce(
    x: &[f32],
    n: usize,
    d: usize,
    method: Method,
    energy: f64,
    max_k: Option<usize>,
    solver: Solver,
) -> Result<Reduction, ReduceError> {
    check_shape(x, n, d)?;
    if !(energy > 0.0 && energy <= 1.0) {
        return Err(ReduceError::InvalidEnergy(energy));
    }
    if max_k == Some(0) {
        return Err(ReduceError::InvalidMaxK);
    }
    let stats = column_stats(x, n, d, method)?;
    // Zero (constant features) or NaN is impossible to normalise by.
    if stats.total.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return Err(ReduceError::ZeroEnergy {
            method: match method {
                Method::Pca => "pca",
                Method::Svd => "svd",
            },
        });
    }
    let data = Data {
        x,
        n,
        d,
        mu: stats.mu.as_deref(),
    };
    let rows_side = n <= d;
    let dim = n.min(d);
    let solver = match solver {
        Solver::Auto if dim <= GRAM_MAX_DIM => Solver::Gram,
        Solver::Auto => Solver::Randomized,
        s => s,
    };
    let goal = Goal {
        threshold: energy,
        total: stats.total,
    };
    let mut sample_gram = None;
    let spectrum = match solver {
        Solver::Gram => {
            let mut g = GramOp {
                g: gram(&data, rows_side),
                dim,
                y: Mat::zeros(0, 0),
            };
            // Products with the Gram matrix are cheap, so the tolerance is tight.
            let params = LanczosParams {
                block: 64,
                tol: 1e-9,
                max_dim: dim / 2,
            };
            let spectrum = match lanczos(&mut g, &goal, &params) {
                Some(s) => s,
                // Many components: past half the size a dense eigensolver is cheaper.
                None => dense_spectrum(g.mat())?,
            };
            if rows_side {
                sample_gram = Some(g.g);
            }
            spectrum
        }
        _ => {
            let mut op = DataOp::new(&data, rows_side);
            let params = LanczosParams {
                block: 64,
                tol: 1e-7,
                max_dim: dim,
            };
            lanczos(&mut op, &goal, &params).ok_or(ReduceError::NoConvergence)?
        }
    };
    let theta = &spectrum.theta;
    let cut = goal.crossing(theta);
    let k = cut.k;
    let k_used = max_k.map_or(k, |m| m.min(k));
    let n_values = theta.len().min(k + EXTRA_SINGULAR_VALUES);
    let singular_values: Vec<f64> = theta[..n_values]
        .iter()
        .map(|&t| t.max(0.0).sqrt())
        .collect();
    let basis = spectrum.basis.top(k_used);
    // Scores in f64, [n, k_used] column-major, before the sign rule.
    let mut scores = if rows_side {
        let mut u = basis;
        for (j, &s) in singular_values.iter().enumerate().take(k_used) {
            u.col_mut(j).iter_mut().for_each(|v| *v *= s);
        }
        u
    } else {
        data.mul(basis.as_ref())
    };
    for j in 0..k_used {
        let col = scores.col_as_slice_mut(j);
        // The first entry of largest magnitude decides the sign.
        let mut best = 0usize;
        for (i, v) in col.iter().enumerate() {
            if v.abs() > col[best].abs() {
                best = i;
            }
        }
        if col[best] < 0.0 {
            col.iter_mut().for_each(|v| *v = -*v);
        }
    }
    let mut out = vec![0f32; n * k_used];
    if k_used > 0 {
        out.par_chunks_mut(k_used).enumerate().for_each(|(i, row)| {
            for (j, o) in row.iter_mut().enumerate() {
                *o = scores[(i, j)] as f32;
            }
        });
    }
    Ok(Reduction {
        k,
        energy_at_k: cut.at,
        energy_before_k: cut.before,
        singular_values,
        scores: out,
        k_used,
        solver,
        sample_gram,
    })
}

/// The number of components the energy threshold keeps, for squared singular values
/// `theta` (descending) out of a total energy `total`: the rule of [`reduce`], for callers that
/// decompose by other means.
pub fn rank_for_energy(theta: &[f64], total: f64, energy: f64) -> usize {
    if theta.is_empty() {
        return 0;
    }
    Goal {
        threshold: energy,
        total,
    }
    .crossing(theta)
    .k
}

/// The sample Gram matrix `X_c X_cᵀ` of `x` (`[n, d]`, row-major) in f64, `[n, n]` symmetric,
/// with the columns centred first when `centre` is set. Same f32-product, f64-accumulation
/// scheme as the Gram solver (accurate to ~1e-7 relative); costs `n²·d` flops and `n²` f64.
pub fn sample_gram(x: &[f32], n: usize, d: usize, centre: bool) -> Result<Vec<f64>, ReduceError> {
    check_shape(x, n, d)?;
    let method = if centre { Method::Pca } else { Method::Svd };
    let stats = column_stats(x, n, d, method)?;
    let data = Data {
        x,
        n,
        d,
        mu: stats.mu.as_deref(),
    };
    Ok(gram(&data, true))
}

// ---------------------------------------------------------------------------------------------
// Input checks and column statistics

fn check_shape(x: &[f32], n: usize, d: usize) -> Result<(), ReduceError> {
    if n == 0 || d == 0 {
        return Err(ReduceError::Empty { n, d });
    }
    match n.checked_mul(d) {
        Some(len) if len == x.len() => Ok(()),
        _ => Err(ReduceError::ShapeMismatch { len: x.len(), n, d }),
    }
}

/// Parallel column sums use this many row chunks (at most 64·2·d f64 of partial sums).
const SUM_CHUNKS: usize = 64;

fn add_vecs(mut a: Vec<f64>, b: Vec<f64>) -> Vec<f64> {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
    a
}

fn find_non_finite(x: &[f32], d: usize, rows: impl Iterator<Item = usize>) -> ReduceError {
    for i in rows {
        if let Some(j) = x[i * d..(i + 1) * d].iter().position(|v| !v.is_finite()) {
            return ReduceError::NonFinite {
                row: i,
                col: j,
                value: x[i * d + j],
            };
        }
    }
    unreachable!("a non-finite sum implies a non-finite value")
}

struct ColumnStats {
    /// Column means (f64) for [`Method::Pca`].
    mu: Option<Vec<f64>>,
    /// `‖X_c‖²_F`, summed in f64.
    total: f64,
}

/// One pass over the data for per-column sums of `x` and `x²` in f64 (which also catches NaN/Inf:
/// sums of finite f32 values cannot overflow f64). The centred energy of column `j` is then
/// `Σx² − n·μ²`; in f64 this loses accuracy only for a feature whose mean exceeds its spread by
/// ~1e4 and more, and then only on that feature's share.
fn column_stats(x: &[f32], n: usize, d: usize, method: Method) -> Result<ColumnStats, ReduceError> {
    // Fixed chunks summed in order: the same bits on every run, whatever rayon's scheduling.
    let (sums, squares) = x
        .par_chunks(n.div_ceil(SUM_CHUNKS) * d)
        .map(|chunk| {
            let (mut s1, mut s2) = (vec![0f64; d], vec![0f64; d]);
            for row in chunk.chunks_exact(d) {
                for ((a, b), &v) in s1.iter_mut().zip(s2.iter_mut()).zip(row) {
                    let v = f64::from(v);
                    *a += v;
                    *b += v * v;
                }
            }
            (s1, s2)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .reduce(|(a, b), (c, e)| (add_vecs(a, c), add_vecs(b, e)))
        .unwrap_or_else(|| (vec![0f64; d], vec![0f64; d]));
    if squares.iter().any(|s| !s.is_finite()) {
        return Err(find_non_finite(x, d, 0..n));
    }
    match method {
        Method::Svd => Ok(ColumnStats {
            mu: None,
            total: squares.iter().sum(),
        }),
        Method::Pca => {
            let mu: Vec<f64> = sums.iter().map(|s| s / n as f64).collect();
            let total = squares
                .iter()
                .zip(&mu)
                .map(|(q, m)| (q - n as f64 * m * m).max(0.0))
                .sum();
            Ok(ColumnStats {
                mu: Some(mu),
                total,
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Products with the (implicitly centred) data

/// The data `X` `[n, d]` row-major and, for PCA, its column means: `X_c = X − 1·μᵀ`.
struct Data<'a> {
    x: &'a [f32],
    n: usize,
    d: usize,
    mu: Option<&'a [f64]>,
}

/// `dst = lhs · rhs`, split over row blocks of `lhs` with rayon: about four tasks per thread.
/// faer's own parallel GEMM splits a skinny product (a few dozen columns) into one piece per
/// thread, which stalls when one core is busy with another process; with several sequential
/// GEMMs per thread, rayon's work stealing moves the pieces to the free core.
fn par_matmul<T: faer::traits::ComplexField + Copy>(
    dst: MatMut<'_, T>,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    one: T,
) {
    let threads = rayon::current_num_threads();
    let chunk = dst
        .nrows()
        .div_ceil(4 * threads)
        .next_multiple_of(16)
        .max(64);
    par_matmul_rec(dst, lhs, rhs, one, chunk);
}

fn par_matmul_rec<T: faer::traits::ComplexField + Copy>(
    dst: MatMut<'_, T>,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    one: T,
    chunk: usize,
) {
    let rows = dst.nrows();
    if rows <= chunk {
        matmul(dst, Accum::Replace, lhs, rhs, one, Par::Seq);
        return;
    }
    let half = (rows / 2).div_ceil(chunk) * chunk;
    let (top, bottom) = dst.split_at_row_mut(half);
    let (lt, lb) = lhs.split_at_row(half);
    rayon::join(
        || par_matmul_rec(top, lt, rhs, one, chunk),
        || par_matmul_rec(bottom, lb, rhs, one, chunk),
    );
}

impl Data<'_> {
    fn x(&self) -> MatRef<'_, f32> {
        MatRef::from_row_major_slice(self.x, self.n, self.d)
    }

    /// `X_c · v` for `v` `[d, b]` (f64 in, f64 out, f32 product).
    fn mul(&self, v: MatRef<'_, f64>) -> Mat<f64> {
        let b = v.ncols();
        let v32 = Mat::<f32>::from_fn(self.d, b, |i, j| v[(i, j)] as f32);
        let mut p32 = Mat::<f32>::zeros(self.n, b);
        par_matmul(p32.as_mut(), self.x(), v32.as_ref(), 1.0);
        let shift: Vec<f64> = match self.mu {
            Some(mu) => (0..b).map(|j| dot_col(mu, v, j)).collect(),
            None => vec![0.0; b],
        };
        Mat::from_fn(self.n, b, |i, j| f64::from(p32[(i, j)]) - shift[j])
    }

    /// `X_cᵀ · u` for `u` `[n, b]` (f64 in, f64 out, f32 product).
    fn mul_t(&self, u: MatRef<'_, f64>) -> Mat<f64> {
        let b = u.ncols();
        let u32 = Mat::<f32>::from_fn(self.n, b, |i, j| u[(i, j)] as f32);
        let mut z32 = Mat::<f32>::zeros(self.d, b);
        par_matmul(z32.as_mut(), self.x().transpose(), u32.as_ref(), 1.0);
        match self.mu {
            Some(mu) => {
                let colsum: Vec<f64> = (0..b).map(|j| u.col(j).iter().sum()).collect();
                Mat::from_fn(self.d, b, |i, j| f64::from(z32[(i, j)]) - mu[i] * colsum[j])
            }
            None => Mat::from_fn(self.d, b, |i, j| f64::from(z32[(i, j)])),
        }
    }
}

fn dot_col(a: &[f64], v: MatRef<'_, f64>, j: usize) -> f64 {
    a.iter().zip(v.col(j).iter()).map(|(x, y)| x * y).sum()
}

/// The Gram matrix of the smaller side, `X_c X_cᵀ` (`rows_side`) or `X_cᵀ X_c`, in f64 with
/// both triangles filled (symmetric, so row- and column-major are the same).
///
/// Chunks of `CHUNK` features (or samples) are centred into an f32 buffer `B` and `B·Bᵀ` is added
/// into the f64 result: each f32 product sums only `CHUNK` terms, so its rounding error stays
/// ~1e-7 relative, and f64 accumulation across chunks keeps it there, at twice the speed and half
/// the memory traffic of an f64 GEMM on a converted copy. Only the lower triangle is computed, one
/// panel of `PANEL` rows per rayon task (`B[panel]·B[..panel end]ᵀ`, a plain GEMM), which both
/// halves the work and lets a core slowed by another process hand its panels to the other.
fn gram(data: &Data<'_>, rows_side: bool) -> Vec<f64> {
    const CHUNK: usize = 2048;
    const PANEL: usize = 64;
    let (dim, len) = if rows_side {
        (data.n, data.d)
    } else {
        (data.d, data.n)
    };
    let mut g = vec![0f64; dim * dim];
    let mut buf = vec![0f32; dim * CHUNK.min(len)];
    let mut start = 0;
    while start < len {
        let w = CHUNK.min(len - start);
        let buf = &mut buf[..dim * w];
        // `b` is [dim, w]: a chunk of X_c's columns (rows side, copied row-major) or of X_cᵀ's
        // columns, i.e. a chunk of X_c's rows copied as they are (column-major `b`).
        let centred = |dst: &mut [f32], src: &[f32], mu: Option<&[f64]>| match mu {
            Some(mu) => {
                for ((o, &v), &m) in dst.iter_mut().zip(src).zip(mu) {
                    *o = (f64::from(v) - m) as f32;
                }
            }
            None => dst.copy_from_slice(src),
        };
        let b = if rows_side {
            buf.par_chunks_mut(w).enumerate().for_each(|(i, dst)| {
                let src = &data.x[i * data.d + start..i * data.d + start + w];
                centred(dst, src, data.mu.map(|mu| &mu[start..start + w]));
            });
            MatRef::from_row_major_slice(&*buf, dim, w)
        } else {
            buf.par_chunks_mut(dim).enumerate().for_each(|(r, dst)| {
                let src = &data.x[(start + r) * data.d..(start + r + 1) * data.d];
                centred(dst, src, data.mu);
            });
            MatRef::from_column_major_slice(&*buf, dim, w)
        };
        g.par_chunks_mut(PANEL * dim)
            .enumerate()
            .for_each(|(p, rows)| {
                let r0 = p * PANEL;
                let ph = rows.len() / dim;
                let r1 = r0 + ph;
                let mut panel = Mat::<f32>::zeros(ph, r1);
                matmul(
                    panel.as_mut(),
                    Accum::Replace,
                    b.subrows(r0, ph),
                    b.subrows(0, r1).transpose(),
                    1.0,
                    Par::Seq,
                );
                for (i, row) in rows.chunks_exact_mut(dim).enumerate() {
                    for (j, o) in row[..r1].iter_mut().enumerate() {
                        *o += f64::from(panel[(i, j)]);
                    }
                }
            });
        start += w;
    }
    // Mirror the lower triangle (row-major) into the upper one, in tiles to stay in cache.
    const TILE: usize = 64;
    for i0 in (0..dim).step_by(TILE) {
        for j0 in (i0..dim).step_by(TILE) {
            for i in i0..(i0 + TILE).min(dim) {
                for j in j0.max(i + 1)..(j0 + TILE).min(dim) {
                    g[i * dim + j] = g[j * dim + i];
                }
            }
        }
    }
    g
}

// ---------------------------------------------------------------------------------------------
// Block Lanczos

/// A symmetric positive semi-definite operator `A` on `R^dim`, driven one block at a time.
///
/// A step is split in two so that the Rayleigh–Ritz check can run before the second half: for the
/// data operator `A = F Fᵀ` (`F = X_c` or `X_cᵀ`) the projection `Qᵀ A q_j = (FᵀQ)ᵀ (Fᵀ q_j)`
/// needs only the product `Fᵀ q_j`, so the last step and the final check cost one data product
/// instead of two.
trait SymOp {
    fn dim(&self) -> usize;
    /// Takes the new orthonormal block (the last `b` columns of `q`) and returns `qᵀ A q_j`
    /// (`m × b`).
    fn project(&mut self, q: MatRef<'_, f64>, b: usize) -> Mat<f64>;
    /// `A q_j` for the block given to the last `project`.
    fn finish(&mut self) -> Mat<f64>;
}

/// `A = X_c X_cᵀ` (rows side) or `X_cᵀ X_c`, never formed. Keeps `FᵀQ` for the projections.
struct DataOp<'a> {
    data: &'a Data<'a>,
    rows_side: bool,
    /// `FᵀQ`, one column per basis vector.
    ft_q: Growing,
    /// Width of the last block.
    last_b: usize,
}

impl<'a> DataOp<'a> {
    fn new(data: &'a Data<'a>, rows_side: bool) -> Self {
        let other = if rows_side { data.d } else { data.n };
        DataOp {
            data,
            rows_side,
            ft_q: Growing::new(other),
            last_b: 0,
        }
    }
}

impl SymOp for DataOp<'_> {
    fn dim(&self) -> usize {
        if self.rows_side {
            self.data.n
        } else {
            self.data.d
        }
    }
    fn project(&mut self, q: MatRef<'_, f64>, b: usize) -> Mat<f64> {
        let m = q.ncols();
        let qj = q.subcols(m - b, b);
        let z = if self.rows_side {
            self.data.mul_t(qj)
        } else {
            self.data.mul(qj)
        };
        self.ft_q.push(z.as_ref());
        self.last_b = b;
        let f = self.ft_q.mat.as_ref();
        let mut c = Mat::<f64>::zeros(m, b);
        par_matmul(c.as_mut(), f.transpose(), f.subcols(m - b, b), 1.0);
        c
    }
    fn finish(&mut self) -> Mat<f64> {
        let m = self.ft_q.mat.ncols();
        let z = self.ft_q.mat.as_ref().subcols(m - self.last_b, self.last_b);
        if self.rows_side {
            self.data.mul(z)
        } else {
            self.data.mul_t(z)
        }
    }
}

/// An explicit symmetric matrix, column-major with both triangles filled.
struct GramOp {
    g: Vec<f64>,
    dim: usize,
    /// `A q_j` of the current step.
    y: Mat<f64>,
}

impl GramOp {
    fn mat(&self) -> MatRef<'_, f64> {
        MatRef::from_column_major_slice(&self.g, self.dim, self.dim)
    }
}

impl SymOp for GramOp {
    fn dim(&self) -> usize {
        self.dim
    }
    fn project(&mut self, q: MatRef<'_, f64>, b: usize) -> Mat<f64> {
        let m = q.ncols();
        let mut y = Mat::<f64>::zeros(self.dim, b);
        par_matmul(y.as_mut(), self.mat(), q.subcols(m - b, b), 1.0);
        let mut c = Mat::<f64>::zeros(m, b);
        par_matmul(c.as_mut(), q.transpose(), y.as_ref(), 1.0);
        self.y = y;
        c
    }
    fn finish(&mut self) -> Mat<f64> {
        std::mem::replace(&mut self.y, Mat::zeros(0, 0))
    }
}

struct LanczosParams {
    /// Vectors per block.
    block: usize,
    /// Largest change of the energies at `k − 1` and `k` (and relative change of the leading
    /// values) over one step that counts as converged.
    tol: f64,
    /// Give up (return `None`) rather than grow the space beyond this; `dim` means never.
    max_dim: usize,
}

/// The threshold and the exact total energy.
struct Goal {
    threshold: f64,
    total: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Crossing {
    k: usize,
    at: f64,
    before: f64,
    /// Whether the threshold was crossed (otherwise `k` counts every nonzero value).
    crossed: bool,
}

impl Goal {
    /// `k` from values sorted descending. If the cumulative energy never exceeds the threshold
    /// (possible only for a threshold of 1, up to rounding), every nonzero component is kept.
    fn crossing(&self, theta: &[f64]) -> Crossing {
        let mut cum = 0f64;
        let mut before = 0f64;
        // With a threshold of 1 a crossing could only come from rounding.
        let values = if self.threshold < 1.0 { theta } else { &[] };
        for (j, &t) in values.iter().enumerate() {
            cum += t.max(0.0);
            let e = cum / self.total;
            if e > self.threshold {
                return Crossing {
                    k: j + 1,
                    at: e,
                    before,
                    crossed: true,
                };
            }
            before = e;
        }
        let top = theta.first().copied().unwrap_or(0.0);
        let rank = theta.iter().filter(|&&t| t > top * RANK_TOL).count().max(1);
        let at = theta[..rank].iter().map(|t| t.max(0.0)).sum::<f64>() / self.total;
        let before = theta[..rank - 1].iter().map(|t| t.max(0.0)).sum::<f64>() / self.total;
        Crossing {
            k: rank,
            at,
            before,
            crossed: false,
        }
    }
}

/// Eigenvalues descending and a way to get the corresponding leading eigenvectors.
struct Spectrum {
    theta: Vec<f64>,
    basis: Basis,
}

enum Basis {
    /// Ritz vectors `Q·W[:, j]`, `W`'s columns in the order of `theta`.
    Ritz { q: Mat<f64>, w: Mat<f64> },
    /// Eigenvectors as columns, in the order of `theta`.
    Dense(Mat<f64>),
}

impl Basis {
    fn top(&self, k: usize) -> Mat<f64> {
        match self {
            Basis::Ritz { q, w } => {
                let mut u = Mat::<f64>::zeros(q.nrows(), k);
                par_matmul(u.as_mut(), q.as_ref(), w.as_ref().subcols(0, k), 1.0);
                u
            }
            Basis::Dense(u) => u.as_ref().subcols(0, k).to_owned(),
        }
    }
}

/// Eigenvalues (descending) and eigenvectors of a symmetric matrix.
fn dense_spectrum(a: MatRef<'_, f64>) -> Result<Spectrum, ReduceError> {
    let e = a
        .self_adjoint_eigen(Side::Lower)
        .map_err(|_| ReduceError::NoConvergence)?;
    let m = a.nrows();
    let theta: Vec<f64> = (0..m).rev().map(|i| e.S()[i]).collect();
    let u = Mat::<f64>::from_fn(m, m, |i, j| e.U()[(i, m - 1 - j)]);
    Ok(Spectrum {
        theta,
        basis: Basis::Dense(u),
    })
}

fn eigenvalues_desc(t: MatRef<'_, f64>) -> Result<Vec<f64>, ReduceError> {
    let mut v = t
        .self_adjoint_eigenvalues(Side::Lower)
        .map_err(|_| ReduceError::NoConvergence)?;
    v.reverse();
    Ok(v)
}

/// Deterministic uniform numbers in [−1, 1) (splitmix64), so that runs are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
    fn block(&mut self, rows: usize, cols: usize) -> Mat<f64> {
        Mat::from_fn(rows, cols, |_, _| self.next())
    }
}

/// Block Lanczos with full reorthogonalisation for the leading eigenvalues of `op`, stopping as
/// described in the module documentation. Returns `None` when the space would have to grow
/// beyond `params.max_dim`.
fn lanczos(op: &mut dyn SymOp, goal: &Goal, params: &LanczosParams) -> Option<Spectrum> {
    let dim = op.dim();
    let mut rng = Rng(0x5EED_CAFE_F00D_0001);
    let mut q = Growing::new(dim);
    let mut t = Growing::new(0);
    let mut block = rng.block(dim, params.block.min(dim));
    orthonormalize(&mut block, q.mat.as_ref(), &mut rng, None);
    let mut prev: Option<(Crossing, Vec<f64>)> = None;
    // The largest energy change of the previous step, for the convergence-rate estimate.
    let mut prev_delta = f64::INFINITY;
    // Whether the current block holds fresh random columns (the final check).
    let mut checking = false;
    loop {
        let m0 = q.mat.ncols();
        let b = block.ncols();
        q.push(block.as_ref());
        let m = m0 + b;
        // c = Qᵀ A q_j: the new columns of T = Qᵀ A Q, and the first reorthogonalisation pass.
        let c = op.project(q.mat.as_ref(), b);
        grow_t(&mut t, c.as_ref());
        let full = m >= dim;
        if full {
            return ritz(q.mat, &t.mat);
        }
        let trace: f64 = (0..m).map(|i| t.mat[(i, i)]).sum();
        if goal.total - trace <= 1e-6 * goal.total {
            // The space holds all the energy up to the rounding of the f32 products (low-rank
            // data): what is left cannot move an energy share by more than 1e-6.
            return ritz(q.mat, &t.mat);
        }
        let mut converged = false;
        // Below this trace no k can exist yet, so the eigenvalues of T are not needed.
        if trace > goal.threshold * goal.total {
            let theta = eigenvalues_desc(t.mat.as_ref()).ok()?;
            let cut = goal.crossing(&theta);
            if let Some((p, ptheta)) = &prev {
                let delta = (cut.at - p.at).abs().max((cut.before - p.before).abs());
                // Block Lanczos converges faster than geometrically, so the next changes sum to
                // less than delta·r/(1−r) with r the last ratio of changes (unknown, so no
                // shortcut, at the first comparison).
                let r = if prev_delta.is_finite() {
                    delta / prev_delta
                } else {
                    1.0
                };
                let remaining = if r < 0.5 {
                    delta * r / (1.0 - r)
                } else {
                    f64::INFINITY
                };
                let n_top = theta.len().min(EXTRA_SINGULAR_VALUES);
                converged = cut.crossed
                    && p.crossed
                    && cut.k == p.k
                    && m >= cut.k + EXTRA_SINGULAR_VALUES
                    && (delta <= params.tol
                        || (delta <= 100.0 * params.tol && remaining <= params.tol))
                    && (0..n_top).all(|i| (theta[i] - ptheta[i]).abs() <= params.tol * theta[i]);
                prev_delta = delta;
            }
            if converged && checking {
                return ritz(q.mat, &t.mat);
            }
            prev = Some((cut, theta));
        }
        checking = false;
        let next_b = params.block.min(dim - m);
        if m + next_b > params.max_dim {
            return None;
        }
        let y = op.finish();
        let mut norms: Vec<f64> = (0..next_b).map(|j| y.col(j).norm_l2()).collect();
        block = y.as_ref().subcols(0, next_b).to_owned();
        let q = q.mat.as_ref();
        let mut qc = Mat::<f64>::zeros(dim, next_b);
        par_matmul(qc.as_mut(), q, c.as_ref().subcols(0, next_b), 1.0);
        block -= &qc;
        if converged {
            // The check: a quarter of the next block is replaced by random vectors. A singular
            // value whose multiplicity exceeds the block size has directions the Krylov space
            // never reaches; random vectors have a component along them that would move the
            // energies, so the iteration goes on until it finds them.
            checking = true;
            let r = (next_b / 4).max(1);
            let fresh = rng.block(dim, r);
            block
                .as_mut()
                .subcols_mut(next_b - r, r)
                .copy_from(fresh.as_ref());
            for j in 0..r {
                norms[next_b - r + j] = fresh.col(j).norm_l2();
            }
        }
        reorthogonalize(&mut block, q);
        orthonormalize(&mut block, q, &mut rng, Some(&norms));
    }
}

/// The Rayleigh–Ritz pairs of the space `q` (`t = qᵀ A q`).
fn ritz(q: Mat<f64>, t: &Mat<f64>) -> Option<Spectrum> {
    let e = t.self_adjoint_eigen(Side::Lower).ok()?;
    let m = t.nrows();
    let theta: Vec<f64> = (0..m).rev().map(|i| e.S()[i]).collect();
    let w = Mat::<f64>::from_fn(m, m, |i, j| e.U()[(i, m - 1 - j)]);
    Some(Spectrum {
        theta,
        basis: Basis::Ritz { q, w },
    })
}

/// A matrix that grows by blocks of columns, with doubling capacity so that appending does not
/// copy the whole basis every step.
struct Growing {
    mat: Mat<f64>,
    cap: usize,
}

impl Growing {
    fn new(rows: usize) -> Self {
        Growing {
            mat: Mat::zeros(rows, 0),
            cap: 0,
        }
    }
    fn push(&mut self, block: MatRef<'_, f64>) {
        let (rows, m, b) = (self.mat.nrows(), self.mat.ncols(), block.ncols());
        if m + b > self.cap {
            self.cap = (2 * self.cap).max(m + b).max(256);
            self.mat.reserve(rows, self.cap);
        }
        self.mat.resize_with(rows, m + b, |_, _| 0.0);
        self.mat.as_mut().subcols_mut(m, b).copy_from(block);
    }
}

/// Extends `t` (`m0 × m0`) by the columns `c` (`m × b`, `m = m0 + b`), keeping it symmetric.
fn grow_t(t: &mut Growing, c: MatRef<'_, f64>) {
    let m = c.nrows();
    let b = c.ncols();
    let m0 = m - b;
    if m > t.cap {
        t.cap = (2 * t.cap).max(m).max(256);
        t.mat.reserve(t.cap, t.cap);
    }
    t.mat.resize_with(m, m, |_, _| 0.0);
    let out = &mut t.mat;
    for j in 0..b {
        for i in 0..m0 {
            out[(i, m0 + j)] = c[(i, j)];
            out[(m0 + j, i)] = c[(i, j)];
        }
    }
    // The new diagonal block is symmetric in exact arithmetic; average away the rounding.
    for j in 0..b {
        for i in 0..b {
            out[(m0 + i, m0 + j)] = 0.5 * (c[(m0 + i, j)] + c[(m0 + j, i)]);
        }
    }
}

/// One more classical Gram–Schmidt pass against `q` ("twice is enough").
fn reorthogonalize(block: &mut Mat<f64>, q: MatRef<'_, f64>) {
    if q.ncols() == 0 {
        return;
    }
    let mut c = Mat::<f64>::zeros(q.ncols(), block.ncols());
    par_matmul(c.as_mut(), q.transpose(), block.as_ref(), 1.0);
    let mut qc = Mat::<f64>::zeros(q.nrows(), block.ncols());
    par_matmul(qc.as_mut(), q, c.as_ref(), 1.0);
    *block -= &qc;
}

/// Orthonormalises the columns of `block` among themselves after they were made orthogonal to
/// `q`. The usual path is Cholesky QR, twice (two small GEMMs and a triangular solve; modified
/// Gram–Schmidt over 64 columns costs ten times more at N = 10 000). When a column (nearly)
/// vanished — the Krylov space became invariant, e.g. for low-rank data — or the block is too
/// ill-conditioned for Cholesky, modified Gram–Schmidt takes over and replaces such columns by
/// random vectors orthogonal to everything, so the iteration keeps exploring instead of
/// normalising rounding noise. `norms` are the columns' norms before any orthogonalisation (what
/// "vanished" is relative to).
fn orthonormalize(block: &mut Mat<f64>, q: MatRef<'_, f64>, rng: &mut Rng, norms: Option<&[f64]>) {
    let b = block.ncols();
    let healthy = (0..b).all(|j| {
        let nrm = norm(block.col_as_slice(j));
        nrm > 1e-6 * norms.map_or(nrm, |n| n[j]) && nrm > 0.0
    });
    if healthy && cholesky_qr(block) && cholesky_qr(block) {
        return;
    }
    gram_schmidt(block, q, rng, norms);
}

/// `B ← B·R⁻¹` with `BᵀB = RᵀR`; false (and `B` untouched) when Cholesky fails or `B` is
/// numerically rank deficient.
fn cholesky_qr(block: &mut Mat<f64>) -> bool {
    let b = block.ncols();
    let mut s = Mat::<f64>::zeros(b, b);
    matmul(
        s.as_mut(),
        Accum::Replace,
        block.as_ref().transpose(),
        block.as_ref(),
        1.0,
        Par::Seq,
    );
    let Ok(llt) = s.llt(Side::Lower) else {
        return false;
    };
    let l = llt.L();
    let max_diag = (0..b).map(|i| l[(i, i)]).fold(0.0, f64::max);
    // Also rejects NaN diagonals.
    if (0..b)
        .any(|i| l[(i, i)].partial_cmp(&(1e-7 * max_diag)) != Some(std::cmp::Ordering::Greater))
    {
        return false;
    }
    // X·R = B  ⟺  L·Xᵀ = Bᵀ with L = Rᵀ.
    faer::linalg::triangular_solve::solve_lower_triangular_in_place(
        l,
        block.as_mut().transpose_mut(),
        Par::rayon(0),
    );
    true
}

/// Modified Gram–Schmidt (twice) with replacement of vanished columns, see [`orthonormalize`].
fn gram_schmidt(block: &mut Mat<f64>, q: MatRef<'_, f64>, rng: &mut Rng, norms: Option<&[f64]>) {
    let (rows, b) = (block.nrows(), block.ncols());
    let mut col = vec![0f64; rows];
    for j in 0..b {
        col.copy_from_slice(block.col_as_slice(j));
        let mut reference = norms.map_or_else(|| norm(&col), |n| n[j]);
        let mut attempt = 0;
        loop {
            for _ in 0..2 {
                for p in 0..j {
                    let pc = block.col_as_slice(p);
                    let dot = dot(pc, &col);
                    col.iter_mut().zip(pc).for_each(|(v, a)| *v -= dot * a);
                }
            }
            let nrm = norm(&col);
            if nrm > 1e-10 * reference && nrm > 0.0 {
                col.iter_mut().for_each(|v| *v /= nrm);
                break;
            }
            attempt += 1;
            if attempt > 8 {
                // Unreachable while blocks never exceed the remaining dimension; a zero column
                // only adds a zero Ritz value.
                col.iter_mut().for_each(|v| *v = 0.0);
                break;
            }
            let mut fresh = rng.block(rows, 1);
            reorthogonalize(&mut fresh, q);
            reorthogonalize(&mut fresh, q);
            col.copy_from_slice(fresh.col_as_slice(0));
            reference = norm(&col);
        }
        block.col_as_slice_mut(j).copy_from_slice(&col);
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    // Four partial sums let the compiler vectorise the reduction.
    let mut acc = [0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..4 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f64>() + tail
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic standard-normal-ish numbers (sum of uniforms), independent of any crate.
    struct Gen(Rng);

    impl Gen {
        fn new(seed: u64) -> Self {
            Gen(Rng(seed))
        }
        fn normal(&mut self) -> f64 {
            (0..4).map(|_| self.0.next()).sum::<f64>() * 0.866
        }
        fn matrix(&mut self, rows: usize, cols: usize) -> Mat<f64> {
            Mat::from_fn(rows, cols, |_, _| self.normal())
        }
        /// `rows × r` with orthonormal columns.
        fn orthonormal(&mut self, rows: usize, r: usize) -> Mat<f64> {
            self.matrix(rows, r).qr().compute_thin_Q()
        }
    }

    fn to_f32_row_major(a: MatRef<'_, f64>) -> Vec<f32> {
        let (n, d) = (a.nrows(), a.ncols());
        (0..n * d).map(|i| a[(i / d, i % d)] as f32).collect()
    }

    fn from_f32_row_major(x: &[f32], n: usize, d: usize) -> Mat<f64> {
        Mat::from_fn(n, d, |i, j| f64::from(x[i * d + j]))
    }

    /// `U diag(s) Vᵀ` with random orthonormal `U`, `V`, as f32 row-major.
    fn with_spectrum(g: &mut Gen, n: usize, d: usize, s: &[f64]) -> Vec<f32> {
        let r = s.len();
        let u = g.orthonormal(n, r);
        let v = g.orthonormal(d, r);
        let us = Mat::from_fn(n, r, |i, j| u[(i, j)] * s[j]);
        to_f32_row_major((&us * v.transpose()).as_ref())
    }

    /// Low rank with geometrically decaying weights plus noise: the shape of conv1 activations.
    fn conv_like(g: &mut Gen, n: usize, d: usize, r: usize, decay: f64, noise: f64) -> Vec<f32> {
        let s: Vec<f64> = (0..r).map(|i| 100.0 * decay.powi(i as i32)).collect();
        let mut x = with_spectrum(g, n, d, &s);
        for v in &mut x {
            *v += (noise * g.normal()) as f32;
        }
        x
    }

    /// Singular values of `X` (or of `X_c`), descending, by faer's dense f64 SVD.
    fn dense_singular_values(x: &[f32], n: usize, d: usize, method: Method) -> Vec<f64> {
        let mut a = from_f32_row_major(x, n, d);
        if method == Method::Pca {
            for j in 0..d {
                let mean = a.col(j).iter().sum::<f64>() / n as f64;
                a.col_mut(j).iter_mut().for_each(|v| *v -= mean);
            }
        }
        a.singular_values().expect("dense SVD")
    }

    /// `k` and the energies at `k − 1`, `k` from a full spectrum, the way numpy's seed does it.
    fn dense_k(s: &[f64], threshold: f64) -> (usize, f64, f64) {
        let total: f64 = s.iter().map(|v| v * v).sum();
        let mut cum = 0.0;
        for (j, v) in s.iter().enumerate() {
            let before = cum / total;
            cum += v * v;
            if cum / total > threshold {
                return (j + 1, before, cum / total);
            }
        }
        unreachable!("threshold below 1")
    }

    const SOLVERS: [Solver; 2] = [Solver::Gram, Solver::Randomized];

    #[test]
    fn singular_values_match_a_dense_svd() {
        let mut g = Gen::new(1);
        // Both sides: the operator works on the smaller one.
        for (n, d) in [(60, 90), (90, 60)] {
            let x = to_f32_row_major(g.matrix(n, d).as_ref());
            for method in [Method::Pca, Method::Svd] {
                let dense = dense_singular_values(&x, n, d, method);
                for solver in SOLVERS {
                    let r = reduce(&x, n, d, method, 0.99, None, solver).expect("reduce");
                    let (k, before, at) = dense_k(&dense, 0.99);
                    assert_eq!(r.k, k, "{n}×{d} {method:?} {solver:?}");
                    // Both solvers multiply in f32: energies move by ~1e-8.
                    let tol = 1e-7;
                    assert!(
                        (r.energy_before_k - before).abs() < tol,
                        "{solver:?} {} vs {before}",
                        r.energy_before_k
                    );
                    assert!(
                        (r.energy_at_k - at).abs() < tol,
                        "{solver:?} {} vs {at}",
                        r.energy_at_k
                    );
                    assert_eq!(
                        r.singular_values.len(),
                        dense.len().min(k + EXTRA_SINGULAR_VALUES)
                    );
                    for (i, (a, b)) in r.singular_values.iter().zip(&dense).enumerate() {
                        if *b > 1e-3 * dense[0] {
                            assert!((a - b).abs() <= 1e-6 * b, "{solver:?} s[{i}] = {a} vs {b}");
                        } else {
                            // The structural zero of centred data (rank n − 1): from s² through
                            // f32 products it is only known to be ≲ 3e-4·s₁.
                            assert!(*a < 1e-3 * dense[0], "{solver:?} s[{i}] = {a} vs {b}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn many_components_match_a_dense_svd() {
        // A flat spectrum: k is most of the rank, so the Gram solver hands over to the dense
        // eigensolver and the randomized one grows its space to nearly everything.
        let mut g = Gen::new(10);
        let (n, d) = (300, 200);
        let x = to_f32_row_major(g.matrix(n, d).as_ref());
        let dense = dense_singular_values(&x, n, d, Method::Pca);
        let (k, before, at) = dense_k(&dense, 0.95);
        assert!(k > 120, "k = {k}");
        for solver in SOLVERS {
            let r = reduce(&x, n, d, Method::Pca, 0.95, None, solver).expect("reduce");
            assert_eq!(r.k, k, "{solver:?}");
            assert!((r.energy_before_k - before).abs() < 1e-7);
            assert!((r.energy_at_k - at).abs() < 1e-7);
            for (a, b) in r.singular_values.iter().zip(&dense).take(20) {
                assert!((a - b).abs() <= 1e-6 * b, "{solver:?} {a} vs {b}");
            }
        }
    }

    #[test]
    fn scores_rebuild_the_data_and_follow_the_sign_rule() {
        let mut g = Gen::new(2);
        let (n, d, rank) = (80, 120, 12);
        let s: Vec<f64> = (0..rank).map(|i| 10.0 / (1.0 + i as f64)).collect();
        let x = with_spectrum(&mut g, n, d, &s);
        let a = from_f32_row_major(&x, n, d);
        for solver in SOLVERS {
            // Energy 1 keeps every nonzero component: k is the rank.
            let r = reduce(&x, n, d, Method::Svd, 1.0, None, solver).expect("reduce");
            assert_eq!(r.k, rank, "{solver:?}");
            let k = r.k_used;
            let u = Mat::from_fn(n, k, |i, j| {
                f64::from(r.scores[i * k + j]) / r.singular_values[j]
            });
            // U is orthonormal and U Uᵀ X = X, i.e. U·S·Vᵀ with V = Xᵀ U S⁻¹ rebuilds X.
            let utu = u.transpose() * &u;
            for i in 0..k {
                for j in 0..k {
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((utu[(i, j)] - want).abs() < 1e-5, "{solver:?} UᵀU[{i},{j}]");
                }
            }
            let rebuilt = &u * (u.transpose() * &a);
            let err = (&rebuilt - &a).norm_l2() / a.norm_l2();
            assert!(err < 1e-5, "{solver:?} reconstruction error {err}");
            // Sign rule: in each column the first entry of largest magnitude is positive.
            for j in 0..k {
                let col: Vec<f32> = (0..n).map(|i| r.scores[i * k + j]).collect();
                let best = col.iter().fold(0usize, |b, v| {
                    if v.abs() > col[b].abs() {
                        col.iter().position(|w| w == v).unwrap_or(b)
                    } else {
                        b
                    }
                });
                assert!(col[best] > 0.0, "{solver:?} column {j}");
            }
        }
    }

    #[test]
    fn energies_are_consistent_and_non_decreasing() {
        let mut g = Gen::new(3);
        let (n, d) = (150, 200);
        let x = conv_like(&mut g, n, d, 40, 0.9, 0.5);
        let total: f64 = dense_singular_values(&x, n, d, Method::Pca)
            .iter()
            .map(|v| v * v)
            .sum();
        for solver in SOLVERS {
            let r = reduce(&x, n, d, Method::Pca, 0.9, None, solver).expect("reduce");
            let mut cum = 0.0;
            let mut last = 0.0;
            for (j, s) in r.singular_values.iter().enumerate() {
                assert!(j == 0 || *s <= r.singular_values[j - 1], "descending");
                cum += s * s;
                let e = cum / total;
                assert!(e >= last);
                last = e;
                if j + 1 == r.k {
                    assert!((e - r.energy_at_k).abs() < 1e-9);
                }
                if j + 2 == r.k {
                    assert!((e - r.energy_before_k).abs() < 1e-9);
                }
            }
            assert!(r.energy_before_k <= 0.9 && r.energy_at_k > 0.9);
        }
    }

    #[test]
    fn k_does_not_depend_on_the_order_of_the_samples() {
        let mut g = Gen::new(4);
        let (n, d) = (120, 160);
        let x = conv_like(&mut g, n, d, 30, 0.85, 0.3);
        // A fixed permutation: i ↦ 7i mod n (7 and 120 are coprime).
        let perm: Vec<usize> = (0..n).map(|i| (7 * i) % n).collect();
        let mut xp = vec![0f32; n * d];
        for (i, &p) in perm.iter().enumerate() {
            xp[i * d..(i + 1) * d].copy_from_slice(&x[p * d..(p + 1) * d]);
        }
        for solver in SOLVERS {
            let a = reduce(&x, n, d, Method::Pca, 0.9, None, solver).expect("reduce");
            let b = reduce(&xp, n, d, Method::Pca, 0.9, None, solver).expect("reduce");
            assert_eq!(a.k, b.k);
            assert!((a.energy_at_k - b.energy_at_k).abs() < 1e-7);
            for (s, t) in a.singular_values.iter().zip(&b.singular_values).take(20) {
                assert!((s - t).abs() < 1e-6 * s);
            }
        }
    }

    #[test]
    fn pca_centres_the_features() {
        let mut g = Gen::new(5);
        let (n, d) = (100, 140);
        // Features with large, different means.
        let mut x = conv_like(&mut g, n, d, 20, 0.8, 0.2);
        for (i, v) in x.iter_mut().enumerate() {
            *v += 5.0 + (i % d) as f32 * 0.1;
        }
        let mut xc = x.clone();
        for j in 0..d {
            let mean = (0..n).map(|i| f64::from(x[i * d + j])).sum::<f64>() / n as f64;
            for i in 0..n {
                xc[i * d + j] = (f64::from(x[i * d + j]) - mean) as f32;
            }
        }
        for solver in SOLVERS {
            let pca = reduce(&x, n, d, Method::Pca, 0.9, None, solver).expect("reduce");
            let svd_of_centred = reduce(&xc, n, d, Method::Svd, 0.9, None, solver).expect("reduce");
            let svd = reduce(&x, n, d, Method::Svd, 0.9, None, solver).expect("reduce");
            assert_eq!(pca.k, svd_of_centred.k);
            for (a, b) in pca
                .singular_values
                .iter()
                .zip(&svd_of_centred.singular_values)
                .take(20)
            {
                assert!((a - b).abs() < 1e-5 * a, "{a} vs {b}");
            }
            // The means dominate the uncentred data: one component is enough.
            assert_eq!(svd.k, 1);
            // The scores of centred data have zero column means.
            let k = pca.k_used;
            for j in 0..k {
                let mean = (0..n)
                    .map(|i| f64::from(pca.scores[i * k + j]))
                    .sum::<f64>()
                    / n as f64;
                assert!(
                    mean.abs() < 1e-4 * pca.singular_values[0],
                    "column {j} mean {mean}"
                );
            }
        }
    }

    #[test]
    fn filter_keeps_the_hand_worked_columns() {
        // 4 samples × 5 features; labels 0, 1, 0, 2.
        #[rustfmt::skip]
        let x: Vec<f32> = vec![
            0.0,  0.5, -0.002, 0.0,   1.0,
            9.0,  0.0,  0.0,   0.0,   1.0,
            0.0, -0.5,  0.0,   0.001, 1.0,
            9.0,  0.0,  0.0,   0.0,   1.0,
        ];
        let labels = [0, 1, 0, 2];
        // Class 0 (rows 0 and 2): mean |x| = [0, 0.5, 0.001, 0.0005, 1].
        let f = filter_features(&x, 4, 5, &labels, FilterClass::Class(0), 1e-3).expect("filter");
        assert_eq!(f.kept, vec![1, 4]); // 0.001 is not > 0.001
        assert_eq!(f.d_total, 5);
        let f = filter_features(&x, 4, 5, &labels, FilterClass::Class(0), 4e-4).expect("filter");
        assert_eq!(f.kept, vec![1, 2, 3, 4]);
        // All samples: mean |x| = [4.5, 0.25, 0.0005, 0.00025, 1].
        let f = filter_features(&x, 4, 5, &labels, FilterClass::All, 1e-3).expect("filter");
        assert_eq!(f.kept, vec![0, 1, 4]);
        assert_eq!(
            select_columns(&x, 4, 5, &f.kept),
            vec![0.0, 0.5, 1.0, 9.0, 0.0, 1.0, 0.0, -0.5, 1.0, 9.0, 0.0, 1.0]
        );
        assert!(matches!(
            filter_features(&x, 4, 5, &labels, FilterClass::Class(7), 1e-3),
            Err(ReduceError::EmptyClass(7))
        ));
        assert!(matches!(
            filter_features(&x, 4, 5, &labels, FilterClass::Class(2), 10.0),
            Err(ReduceError::AllFiltered { d_total: 5, .. })
        ));
        assert!(matches!(
            filter_features(&x, 4, 5, &labels[..3], FilterClass::All, 1e-3),
            Err(ReduceError::LabelCount { labels: 3, n: 4 })
        ));
        let mut bad = x.clone();
        bad[7] = f32::NAN;
        assert!(matches!(
            filter_features(&bad, 4, 5, &labels, FilterClass::All, 1e-3),
            Err(ReduceError::NonFinite { row: 1, col: 2, .. })
        ));
    }

    #[test]
    fn gram_and_randomized_agree_on_conv1_like_data() {
        let mut g = Gen::new(6);
        let (n, d) = (2000, 3000);
        let x = conv_like(&mut g, n, d, 300, 0.985, 0.05);
        let gram = reduce(&x, n, d, Method::Pca, 0.9, Some(50), Solver::Gram).expect("gram");
        let rand =
            reduce(&x, n, d, Method::Pca, 0.9, Some(50), Solver::Randomized).expect("randomized");
        let auto = reduce(&x, n, d, Method::Pca, 0.9, Some(50), Solver::Auto).expect("auto");
        assert_eq!(auto.solver, Solver::Gram);
        assert_eq!(gram.k, rand.k);
        assert!(gram.k > 50 && gram.k < 300, "k = {}", gram.k);
        assert!((gram.energy_before_k - rand.energy_before_k).abs() < 1e-6);
        assert!((gram.energy_at_k - rand.energy_at_k).abs() < 1e-6);
        for (a, b) in gram
            .singular_values
            .iter()
            .zip(&rand.singular_values)
            .take(20)
        {
            assert!((a - b).abs() < 1e-6 * a, "{a} vs {b}");
        }
        assert_eq!((gram.k_used, rand.k_used), (50, 50));
        assert_eq!(gram.scores.len(), n * 50);
        // Same subspace: the leading score columns agree up to rounding.
        for j in 0..5 {
            let dotp: f64 = (0..n)
                .map(|i| f64::from(gram.scores[i * 50 + j]) * f64::from(rand.scores[i * 50 + j]))
                .sum();
            let s2 = gram.singular_values[j] * rand.singular_values[j];
            assert!(
                (dotp / s2 - 1.0).abs() < 1e-4,
                "column {j}: cosine {}",
                dotp / s2
            );
        }
    }

    /// Singular values placed so that the energy at `k0 − 1` sits `margin` from the threshold.
    fn tiny_margin_spectrum(k0: usize, r: usize, margin: f64) -> Vec<f64> {
        // Energies (shares of s²): the first k0 − 1 hold 0.9 + margin in total, geometric.
        let head: Vec<f64> = (0..k0 - 1).map(|i| 0.8f64.powi(i as i32)).collect();
        let head_sum: f64 = head.iter().sum();
        let mut e: Vec<f64> = head.iter().map(|h| h / head_sum * (0.9 + margin)).collect();
        // The rest share 0.1 − margin, decaying slowly, all below the last head value.
        let tail: Vec<f64> = (0..r - k0 + 1).map(|i| 0.97f64.powi(i as i32)).collect();
        let tail_sum: f64 = tail.iter().sum();
        e.extend(tail.iter().map(|t| t / tail_sum * (0.1 - margin)));
        e.iter().map(|v| (v * 1e4).sqrt()).collect()
    }

    #[test]
    fn k_is_exact_when_the_threshold_is_crossed_by_a_tiny_margin() {
        let mut g = Gen::new(7);
        let (n, d, r, k0) = (300, 400, 120, 15);
        // The energy of the first 14 components is 0.9 − 1e-6 (k = 15) or 0.9 + 1e-6 (k = 14).
        for (margin, want) in [(-1e-6, k0), (1e-6, k0 - 1)] {
            let s = tiny_margin_spectrum(k0, r, margin);
            let x = with_spectrum(&mut g, n, d, &s);
            // What a full f64 SVD says about the f32 matrix (rounding to f32 moves energies by
            // ~1e-8, far less than the margin).
            let dense = dense_singular_values(&x, n, d, Method::Svd);
            let (k, before, at) = dense_k(&dense, 0.9);
            assert_eq!(k, want);
            let gap = if margin < 0.0 { 0.9 - before } else { at - 0.9 };
            assert!(gap > 5e-7 && gap < 2e-6, "margin in the f32 matrix: {gap}");
            for solver in SOLVERS {
                let red = reduce(&x, n, d, Method::Svd, 0.9, None, solver).expect("reduce");
                assert_eq!(red.k, want, "{solver:?} margin {margin}");
                assert!((red.energy_before_k - before).abs() < 1e-7);
                assert!((red.energy_at_k - at).abs() < 1e-7);
            }
        }
    }

    #[test]
    fn repeated_singular_values_wider_than_a_block_are_all_found() {
        let mut g = Gen::new(8);
        let (n, d) = (1200, 1500);
        // Shares of s²: 10 values with 7.5 % each, then 100 equal values (wider than a block:
        // a Krylov space started from one block holds at most a block's worth of them) with
        // 0.1 % each, then a tail of 1090 holding 15 %. k falls in the tail, after all 100 equal
        // values; missing some of them would shift it far to the right.
        let mut e = vec![0.075; 10];
        e.extend(vec![0.001; 100]);
        let tail: Vec<f64> = (0..1090).map(|i| 0.995f64.powi(i)).collect();
        let tail_sum: f64 = tail.iter().sum();
        e.extend(tail.iter().map(|t| t / tail_sum * 0.15));
        let s: Vec<f64> = e.iter().map(|v| (v * 1e4).sqrt()).collect();
        let x = with_spectrum(&mut g, n, d, &s);
        // The constructed spectrum decides k (rounding to f32 moves energies by ~1e-8).
        let (k, before, at) = dense_k(&s, 0.9);
        assert!(
            k > 110 && k < 200 && 0.9 - before > 1e-5 && at - 0.9 > 1e-5,
            "k = {k}"
        );
        for solver in SOLVERS {
            let red = reduce(&x, n, d, Method::Svd, 0.9, None, solver).expect("reduce");
            assert_eq!(red.k, k, "{solver:?}");
        }
    }

    #[test]
    fn results_are_reproducible_and_max_k_cuts_the_scores() {
        let mut g = Gen::new(9);
        let (n, d) = (200, 150);
        let x = conv_like(&mut g, n, d, 60, 0.93, 0.2);
        for solver in SOLVERS {
            let a = reduce(&x, n, d, Method::Pca, 0.9, Some(3), solver).expect("reduce");
            let b = reduce(&x, n, d, Method::Pca, 0.9, Some(3), solver).expect("reduce");
            assert!(a.k > 3);
            assert_eq!(a.k_used, 3);
            assert_eq!(a.scores.len(), n * 3);
            assert_eq!(a.scores, b.scores);
            assert_eq!(a.singular_values, b.singular_values);
        }
    }

    #[test]
    fn invalid_input_is_an_error() {
        let x = vec![1f32, 2.0, 3.0, 4.0, 5.0, 7.0];
        let ok = |e: f64| reduce(&x, 3, 2, Method::Svd, e, None, Solver::Auto);
        for e in [0.0, -0.1, 1.5, f64::NAN] {
            assert!(matches!(ok(e), Err(ReduceError::InvalidEnergy(_))), "{e}");
        }
        assert!(ok(1.0).is_ok());
        assert!(matches!(
            reduce(&x, 0, 2, Method::Svd, 0.9, None, Solver::Auto),
            Err(ReduceError::Empty { .. })
        ));
        assert!(matches!(
            reduce(&x, 2, 2, Method::Svd, 0.9, None, Solver::Auto),
            Err(ReduceError::ShapeMismatch { len: 6, n: 2, d: 2 })
        ));
        assert!(matches!(
            reduce(&x, 3, 2, Method::Svd, 0.9, Some(0), Solver::Auto),
            Err(ReduceError::InvalidMaxK)
        ));
        let mut bad = x.clone();
        bad[3] = f32::INFINITY;
        assert!(matches!(
            reduce(&bad, 3, 2, Method::Pca, 0.9, None, Solver::Auto),
            Err(ReduceError::NonFinite { row: 1, col: 1, .. })
        ));
        let constant = vec![2f32; 6];
        assert!(matches!(
            reduce(&constant, 3, 2, Method::Pca, 0.9, None, Solver::Auto),
            Err(ReduceError::ZeroEnergy { method: "pca" })
        ));
        // One sample, uncentred: a single component.
        let one =
            reduce(&x[..2], 1, 2, Method::Svd, 0.9, None, Solver::Randomized).expect("reduce");
        assert_eq!((one.k, one.singular_values.len()), (1, 1));
        assert!((one.singular_values[0] - 5f64.sqrt()).abs() < 1e-6);
    }
}
