//! The eigensolver both routes share: block Lanczos with full reorthogonalisation, its stopping
//! rule, and the dense eigensolver it hands over to.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par, Side};

use super::data::par_matmul;
use super::energy::{Crossing, Goal};
use super::{EXTRA_SINGULAR_VALUES, ReduceError};
use crate::numerics::rng::SplitMix64;

/// A symmetric positive semi-definite operator `A` on `R^dim`, driven one block at a time.
///
/// A step is split in two so that the Rayleigh–Ritz check can run before the second half: for the
/// data operator `A = F Fᵀ` (`F = X_c` or `X_cᵀ`) the projection `Qᵀ A q_j = (FᵀQ)ᵀ (Fᵀ q_j)`
/// needs only the product `Fᵀ q_j`, so the last step and the final check cost one data product
/// instead of two.
pub(super) trait SymOp {
    fn dim(&self) -> usize;
    /// Takes the new orthonormal block (the last `b` columns of `q`) and returns `qᵀ A q_j`
    /// (`m × b`).
    fn project(&mut self, q: MatRef<'_, f64>, b: usize) -> Mat<f64>;
    /// `A q_j` for the block given to the last `project`.
    fn finish(&mut self) -> Mat<f64>;
}

pub(super) struct LanczosParams {
    /// Vectors per block.
    pub(super) block: usize,
    /// Largest change of the energies at `k − 1` and `k` (and relative change of the leading
    /// values) over one step that counts as converged.
    pub(super) tol: f64,
    /// Give up (return `None`) rather than grow the space beyond this; `dim` means never.
    pub(super) max_dim: usize,
}

/// Eigenvalues descending and a way to get the corresponding leading eigenvectors.
pub(super) struct Spectrum {
    pub(super) theta: Vec<f64>,
    pub(super) basis: Basis,
}

pub(super) enum Basis {
    /// Ritz vectors `Q·W[:, j]`, `W`'s columns in the order of `theta`.
    Ritz { q: Mat<f64>, w: Mat<f64> },
    /// Eigenvectors as columns, in the order of `theta`.
    Dense(Mat<f64>),
}

impl Basis {
    pub(super) fn top(&self, k: usize) -> Mat<f64> {
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
pub(super) fn dense_spectrum(a: MatRef<'_, f64>) -> Result<Spectrum, ReduceError> {
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

/// A `rows × cols` block of uniforms in [−1, 1) from the solver's seeded stream, so that runs
/// are reproducible.
fn random_block(rng: &mut SplitMix64, rows: usize, cols: usize) -> Mat<f64> {
    Mat::from_fn(rows, cols, |_, _| rng.signed_unit())
}

/// Block Lanczos with full reorthogonalisation for the leading eigenvalues of `op`, stopping as
/// described in the module documentation. Returns `None` when the space would have to grow
/// beyond `params.max_dim`.
pub(super) fn lanczos(op: &mut dyn SymOp, goal: &Goal, params: &LanczosParams) -> Option<Spectrum> {
    let dim = op.dim();
    let mut rng = SplitMix64::new(0x5EED_CAFE_F00D_0001);
    let mut q = Growing::new(dim);
    let mut t = Growing::new(0);
    let mut block = random_block(&mut rng, dim, params.block.min(dim));
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
            let fresh = random_block(&mut rng, dim, r);
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
pub(super) struct Growing {
    pub(super) mat: Mat<f64>,
    cap: usize,
}

impl Growing {
    pub(super) fn new(rows: usize) -> Self {
        Growing {
            mat: Mat::zeros(rows, 0),
            cap: 0,
        }
    }
    pub(super) fn push(&mut self, block: MatRef<'_, f64>) {
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
fn orthonormalize(
    block: &mut Mat<f64>,
    q: MatRef<'_, f64>,
    rng: &mut SplitMix64,
    norms: Option<&[f64]>,
) {
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
fn gram_schmidt(
    block: &mut Mat<f64>,
    q: MatRef<'_, f64>,
    rng: &mut SplitMix64,
    norms: Option<&[f64]>,
) {
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
            let mut fresh = random_block(rng, rows, 1);
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
    use crate::numerics::reduce::testing::*;
    use crate::numerics::reduce::{Method, reduce_rows};

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
                let red = reduce_rows(&x, n, d, Method::Svd, 0.9, None, solver).expect("reduce");
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
            let red = reduce_rows(&x, n, d, Method::Svd, 0.9, None, solver).expect("reduce");
            assert_eq!(red.k, k, "{solver:?}");
        }
    }
}
