//! The Gram route: the Gram matrix of the smaller side formed once in f64, after which a Lanczos
//! step is almost free.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};
use rayon::prelude::*;

use super::data::{Data, check_shape, column_stats, par_matmul};
use super::lanczos::SymOp;
use super::{Method, ReduceError};

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

/// The Gram matrix of the smaller side, `X_c X_cᵀ` (`rows_side`) or `X_cᵀ X_c`, in f64 with
/// both triangles filled (symmetric, so row- and column-major are the same).
///
/// Chunks of `CHUNK` features (or samples) are centred into an f32 buffer `B` and `B·Bᵀ` is added
/// into the f64 result: each f32 product sums only `CHUNK` terms, so its rounding error stays
/// ~1e-7 relative, and f64 accumulation across chunks keeps it there, at twice the speed and half
/// the memory traffic of an f64 GEMM on a converted copy. Only the lower triangle is computed, one
/// panel of `PANEL` rows per rayon task (`B[panel]·B[..panel end]ᵀ`, a plain GEMM), which both
/// halves the work and lets a core slowed by another process hand its panels to the other.
pub(super) fn gram(data: &Data<'_>, rows_side: bool) -> Vec<f64> {
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

/// An explicit symmetric matrix, column-major with both triangles filled.
pub(super) struct GramOp {
    pub(super) g: Vec<f64>,
    pub(super) dim: usize,
    /// `A q_j` of the current step.
    pub(super) y: Mat<f64>,
}

impl GramOp {
    pub(super) fn mat(&self) -> MatRef<'_, f64> {
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
