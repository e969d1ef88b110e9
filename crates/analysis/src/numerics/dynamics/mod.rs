//! Representation-dynamics measures (issue 7): how a layer's representation changes from
//! epoch to epoch and how its classes are arranged in it.
//!
//! * [`linear_cka`] compares two representations of the same samples (one layer at two epochs,
//!   or two layers) through their centred Gram matrices ([`CenteredGram`]), with the biased or
//!   the unbiased HSIC estimator ([`Hsic`]).
//! * [`kernel_cka`] gives linear, debiased and RBF CKA in f64, with the conventions of Kornblith
//!   et al.'s reference demo (the RBF bandwidth from the median squared distance).
//! * [`class_subspace_alignment`] asks whether the classes occupy different directions: the
//!   mean cosine of the principal angles between every pair of per-class principal subspaces.
//! * [`nc1`](fn@nc1) is the neural-collapse within-class variability measure `tr(Σ_W Σ_B⁺)/C`.
//! * [`converged_step`] and [`layer_identification`] read two published dynamics off CKA:
//!   when a layer reaches its final representation, and whether CKA tells layers apart.
//! * [`linear_probe`] is the held-out accuracy of a multinomial logistic regression on the
//!   reduced scores: how linearly decodable the labels are.
//!
//! All inputs are row-major f32 matrices (`[n, d]`, one row per sample); accumulation is in f64.
//! None of the measures forms a `d × d` matrix, so they stay cheap for wide layers
//! (`d` = 12 544 at conv1 with `n` = 2000).

mod cka;
mod convergence;
mod kernel;
mod lbfgs;
mod nc1;
mod probe;
mod subspace;

pub use cka::{CenteredGram, Hsic, cka, linear_cka};
pub use convergence::{
    CONVERGED_CKA, best_matches, converged_step, layer_identification, spearman,
};
pub use kernel::{
    DEFAULT_RBF_THRESHOLD, KernelCka, centred_gram, gram_cka, kernel_cka, median_squared_distance,
    rbf_gram, squared_distances,
};
pub use nc1::{NC1_PINV_RTOL, nc1};
pub use probe::{PROBE_L2, PROBE_MAX_ITER, ProbeResult, linear_probe};
pub use subspace::{
    SubspaceAlignment, class_subspace_alignment, class_subspace_alignment_from_gram,
};

use rayon::prelude::*;

use crate::numerics::reduce::ReduceError;
use crate::numerics::scores::ScoresError;

/// Asymmetry allowed in a Gram matrix given to [`CenteredGram::from_gram`], relative to its
/// largest entry: far above the rounding of any product `X Xᵀ`, far below a layout mistake.
pub const SYMMETRY_TOL: f64 = 1e-5;

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
    /// The RBF threshold (σ as a multiple of the median distance) is not positive and finite.
    #[error("RBF threshold {0} must be positive and finite")]
    InvalidThreshold(f64),
    /// The median squared distance between samples is 0 (more than half the pairs coincide),
    /// so the RBF kernel has no bandwidth.
    #[error(
        "the {which} representation's median squared distance between samples is {median}: the RBF kernel has no bandwidth"
    )]
    ZeroBandwidth {
        /// `first` or `second`.
        which: &'static str,
        /// The median.
        median: f64,
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
// Shared checks and helpers

/// Tile edge for the cache-friendly passes over `n × n` matrices.
const TILE: usize = 64;

use crate::numerics::matrix::first_non_finite;

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

#[cfg(test)]
mod testing {
    use crate::numerics::rng::SplitMix64;

    /// Seeded standard normals for the tests of every measure.
    pub(super) struct Gen(pub(super) SplitMix64);

    impl Gen {
        pub(super) fn new(seed: u64) -> Self {
            Gen(SplitMix64::new(seed))
        }

        pub(super) fn normal(&mut self) -> f64 {
            self.0.normal()
        }

        pub(super) fn matrix(&mut self, n: usize, d: usize) -> Vec<f32> {
            (0..n * d).map(|_| self.normal() as f32).collect()
        }
    }
}
