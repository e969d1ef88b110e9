//! Neural collapse NC1: the within-class variability measured against the spread of the class
//! means.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par, Side};
use rayon::prelude::*;

use super::{DynamicsError, check_data, check_labels, class_sums};
use crate::numerics::metrics::dense_ids;

/// Eigenvalues of `Σ_B` below this share of the largest are treated as zero by [`nc1`]'s
/// pseudo-inverse. With balanced classes `Σ_c (μ_c − μ_G) = 0`, so one eigenvalue is zero up to
/// rounding (~1e-16 relative) and must be dropped; a loose cutoff also keeps near-degenerate
/// between-class directions from dominating the trace.
pub const NC1_PINV_RTOL: f64 = 1e-6;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numerics::dynamics::testing::Gen;

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
}
