//! What both solvers build on: input checks, one pass of column statistics, and products with
//! the implicitly centred data (`X_c` is never formed).

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use rayon::prelude::*;

use super::{Method, ReduceError};

pub(super) fn check_shape(x: &[f32], n: usize, d: usize) -> Result<(), ReduceError> {
    if n == 0 || d == 0 {
        return Err(ReduceError::Empty { n, d });
    }
    match n.checked_mul(d) {
        Some(len) if len == x.len() => Ok(()),
        _ => Err(ReduceError::ShapeMismatch { len: x.len(), n, d }),
    }
}

/// Parallel column sums use this many row chunks (at most 64·2·d f64 of partial sums).
pub(super) const SUM_CHUNKS: usize = 64;

pub(super) fn add_vecs(mut a: Vec<f64>, b: Vec<f64>) -> Vec<f64> {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
    a
}

pub(super) fn find_non_finite(
    x: &[f32],
    d: usize,
    rows: impl Iterator<Item = usize>,
) -> ReduceError {
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

pub(super) struct ColumnStats {
    /// Column means (f64) for [`Method::Pca`].
    pub(super) mu: Option<Vec<f64>>,
    /// `‖X_c‖²_F`, summed in f64.
    pub(super) total: f64,
}

/// One pass over the data for per-column sums of `x` and `x²` in f64 (which also catches NaN/Inf:
/// sums of finite f32 values cannot overflow f64). The centred energy of column `j` is then
/// `Σx² − n·μ²`; in f64 this loses accuracy only for a feature whose mean exceeds its spread by
/// ~1e4 and more, and then only on that feature's share.
pub(super) fn column_stats(
    x: &[f32],
    n: usize,
    d: usize,
    method: Method,
) -> Result<ColumnStats, ReduceError> {
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
pub(super) struct Data<'a> {
    pub(super) x: &'a [f32],
    pub(super) n: usize,
    pub(super) d: usize,
    pub(super) mu: Option<&'a [f64]>,
}

/// `dst = lhs · rhs`, split over row blocks of `lhs` with rayon: about four tasks per thread.
/// faer's own parallel GEMM splits a skinny product (a few dozen columns) into one piece per
/// thread, which stalls when one core is busy with another process; with several sequential
/// GEMMs per thread, rayon's work stealing moves the pieces to the free core.
pub(super) fn par_matmul<T: faer::traits::ComplexField + Copy>(
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
    pub(super) fn mul(&self, v: MatRef<'_, f64>) -> Mat<f64> {
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
    pub(super) fn mul_t(&self, u: MatRef<'_, f64>) -> Mat<f64> {
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
