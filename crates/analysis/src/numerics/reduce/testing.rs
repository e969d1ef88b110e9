//! Test data shared by the solver tests: seeded matrices of a chosen spectrum and the dense
//! references they are checked against.

use faer::{Mat, MatRef};

use super::{Method, Solver};
use crate::numerics::rng::SplitMix64;

/// Deterministic standard-normal-ish numbers (a sum of four uniforms).
pub(super) struct Gen(SplitMix64);

impl Gen {
    pub(super) fn new(seed: u64) -> Self {
        Gen(SplitMix64::new(seed))
    }
    pub(super) fn normal(&mut self) -> f64 {
        (0..4).map(|_| self.0.signed_unit()).sum::<f64>() * 0.866
    }
    pub(super) fn matrix(&mut self, rows: usize, cols: usize) -> Mat<f64> {
        Mat::from_fn(rows, cols, |_, _| self.normal())
    }
    /// `rows × r` with orthonormal columns.
    fn orthonormal(&mut self, rows: usize, r: usize) -> Mat<f64> {
        self.matrix(rows, r).qr().compute_thin_Q()
    }
}

pub(super) fn to_f32_row_major(a: MatRef<'_, f64>) -> Vec<f32> {
    let (n, d) = (a.nrows(), a.ncols());
    (0..n * d).map(|i| a[(i / d, i % d)] as f32).collect()
}

pub(super) fn from_f32_row_major(x: &[f32], n: usize, d: usize) -> Mat<f64> {
    Mat::from_fn(n, d, |i, j| f64::from(x[i * d + j]))
}

/// `U diag(s) Vᵀ` with random orthonormal `U`, `V`, as f32 row-major.
pub(super) fn with_spectrum(g: &mut Gen, n: usize, d: usize, s: &[f64]) -> Vec<f32> {
    let r = s.len();
    let u = g.orthonormal(n, r);
    let v = g.orthonormal(d, r);
    let us = Mat::from_fn(n, r, |i, j| u[(i, j)] * s[j]);
    to_f32_row_major((&us * v.transpose()).as_ref())
}

/// Low rank with geometrically decaying weights plus noise: the shape of conv1 activations.
pub(super) fn conv_like(
    g: &mut Gen,
    n: usize,
    d: usize,
    r: usize,
    decay: f64,
    noise: f64,
) -> Vec<f32> {
    let s: Vec<f64> = (0..r).map(|i| 100.0 * decay.powi(i as i32)).collect();
    let mut x = with_spectrum(g, n, d, &s);
    for v in &mut x {
        *v += (noise * g.normal()) as f32;
    }
    x
}

/// Singular values of `X` (or of `X_c`), descending, by faer's dense f64 SVD.
pub(super) fn dense_singular_values(x: &[f32], n: usize, d: usize, method: Method) -> Vec<f64> {
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
pub(super) fn dense_k(s: &[f64], threshold: f64) -> (usize, f64, f64) {
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

pub(super) const SOLVERS: [Solver; 2] = [Solver::Gram, Solver::Randomized];
