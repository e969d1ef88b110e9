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

mod data;
mod energy;
mod filter;
mod gram;
mod lanczos;
mod randomized;
#[cfg(test)]
mod testing;

pub use energy::rank_for_energy;
pub use filter::{FilterClass, FilterResult, filter_features, select_columns};
pub use gram::sample_gram;

use faer::Mat;

use crate::numerics::matrix::Matrix;
use rayon::prelude::*;

use data::{Data, check_shape, column_stats};
use energy::Goal;
use gram::{GramOp, gram};
use lanczos::{LanczosParams, dense_spectrum, lanczos};
use randomized::DataOp;

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

/// Centres (for [`Method::Pca`]) and decomposes `x` (`[n, d]`, row-major), returning the first `k`
/// with cumulative energy > `energy`, the leading singular values and the scores `U_k·S_k` cut to
/// `max_k` columns. See the module documentation for the algorithms and their accuracy.
pub fn reduce(
    x: &Matrix,
    method: Method,
    energy: f64,
    max_k: Option<usize>,
    solver: Solver,
) -> Result<Reduction, ReduceError> {
    reduce_rows(x.as_slice(), x.n(), x.d(), method, energy, max_k, solver)
}

/// [`reduce`] on a row-major `[n, d]` slice, checked here (the pipeline's filtered copy).
pub(crate) fn reduce_rows(
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

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn singular_values_match_a_dense_svd() {
        let mut g = Gen::new(1);
        // Both sides: the operator works on the smaller one.
        for (n, d) in [(60, 90), (90, 60)] {
            let x = to_f32_row_major(g.matrix(n, d).as_ref());
            for method in [Method::Pca, Method::Svd] {
                let dense = dense_singular_values(&x, n, d, method);
                for solver in SOLVERS {
                    let r = reduce_rows(&x, n, d, method, 0.99, None, solver).expect("reduce");
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
            let r = reduce_rows(&x, n, d, Method::Pca, 0.95, None, solver).expect("reduce");
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
            let r = reduce_rows(&x, n, d, Method::Svd, 1.0, None, solver).expect("reduce");
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
            let a = reduce_rows(&x, n, d, Method::Pca, 0.9, None, solver).expect("reduce");
            let b = reduce_rows(&xp, n, d, Method::Pca, 0.9, None, solver).expect("reduce");
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
            let pca = reduce_rows(&x, n, d, Method::Pca, 0.9, None, solver).expect("reduce");
            let svd_of_centred =
                reduce_rows(&xc, n, d, Method::Svd, 0.9, None, solver).expect("reduce");
            let svd = reduce_rows(&x, n, d, Method::Svd, 0.9, None, solver).expect("reduce");
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
    fn gram_and_randomized_agree_on_conv1_like_data() {
        let mut g = Gen::new(6);
        let (n, d) = (2000, 3000);
        let x = conv_like(&mut g, n, d, 300, 0.985, 0.05);
        let gram = reduce_rows(&x, n, d, Method::Pca, 0.9, Some(50), Solver::Gram).expect("gram");
        let rand = reduce_rows(&x, n, d, Method::Pca, 0.9, Some(50), Solver::Randomized)
            .expect("randomized");
        let auto = reduce_rows(&x, n, d, Method::Pca, 0.9, Some(50), Solver::Auto).expect("auto");
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

    #[test]
    fn results_are_reproducible_and_max_k_cuts_the_scores() {
        let mut g = Gen::new(9);
        let (n, d) = (200, 150);
        let x = conv_like(&mut g, n, d, 60, 0.93, 0.2);
        for solver in SOLVERS {
            let a = reduce_rows(&x, n, d, Method::Pca, 0.9, Some(3), solver).expect("reduce");
            let b = reduce_rows(&x, n, d, Method::Pca, 0.9, Some(3), solver).expect("reduce");
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
        let ok = |e: f64| reduce_rows(&x, 3, 2, Method::Svd, e, None, Solver::Auto);
        for e in [0.0, -0.1, 1.5, f64::NAN] {
            assert!(matches!(ok(e), Err(ReduceError::InvalidEnergy(_))), "{e}");
        }
        assert!(ok(1.0).is_ok());
        assert!(matches!(
            reduce_rows(&x, 0, 2, Method::Svd, 0.9, None, Solver::Auto),
            Err(ReduceError::Empty { .. })
        ));
        assert!(matches!(
            reduce_rows(&x, 2, 2, Method::Svd, 0.9, None, Solver::Auto),
            Err(ReduceError::ShapeMismatch { len: 6, n: 2, d: 2 })
        ));
        assert!(matches!(
            reduce_rows(&x, 3, 2, Method::Svd, 0.9, Some(0), Solver::Auto),
            Err(ReduceError::InvalidMaxK)
        ));
        let mut bad = x.clone();
        bad[3] = f32::INFINITY;
        assert!(matches!(
            reduce_rows(&bad, 3, 2, Method::Pca, 0.9, None, Solver::Auto),
            Err(ReduceError::NonFinite { row: 1, col: 1, .. })
        ));
        let constant = vec![2f32; 6];
        assert!(matches!(
            reduce_rows(&constant, 3, 2, Method::Pca, 0.9, None, Solver::Auto),
            Err(ReduceError::ZeroEnergy { method: "pca" })
        ));
        // One sample, uncentred: a single component.
        let one =
            reduce_rows(&x[..2], 1, 2, Method::Svd, 0.9, None, Solver::Randomized).expect("reduce");
        assert_eq!((one.k, one.singular_values.len()), (1, 1));
        assert!((one.singular_values[0] - 5f64.sqrt()).abs() < 1e-6);
    }
}
