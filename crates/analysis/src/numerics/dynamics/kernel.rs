//! CKA in f64 with the linear and the RBF kernel, following the conventions of Kornblith et
//! al.'s (2019) reference demo (google-research `representation_similarity`): linear CKA, its
//! debiased form (the unbiased HSIC of Song et al., 2012, on the linear Gram matrices), and RBF
//! CKA whose bandwidth is `σ² = threshold² · median of the squared pairwise distances`, the
//! median taken over all `n²` entries of the distance matrix, its zero diagonal included.
//!
//! Everything here stays in f64 (the Gram matrices, their centred forms, the sums), so float64
//! inputs reproduce float64 references to ~1e-12; [`CenteredGram::from_gram_f64`] carries the
//! estimators of [`linear_cka`] over unchanged.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};
use rayon::prelude::*;

use super::{CenteredGram, DynamicsError, Hsic, linear_cka};
use crate::numerics::matrix::Matrix64;

/// The RBF threshold of Kornblith et al.'s demo figures: σ = 0.5 · the median distance.
pub const DEFAULT_RBF_THRESHOLD: f64 = 0.5;

/// The three CKA values of two representations of the same samples.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct KernelCka {
    /// Linear CKA, biased HSIC (Kornblith et al., 2019).
    pub linear: f64,
    /// Linear CKA with the unbiased HSIC of Song et al. (2012): "debiased CKA".
    pub debiased: f64,
    /// RBF CKA, biased HSIC, `σ² = threshold² · median squared distance` per representation.
    pub rbf: f64,
}

/// The sample Gram matrix `X_c X_cᵀ` of the column-centred features, `n × n` row-major in f64,
/// exactly symmetric (the lower triangle of the product mirrored).
///
/// Centring does not change linear CKA (it is centred again) nor pairwise distances; it keeps
/// the products small, so that distances taken from them lose less to cancellation.
pub fn centred_gram(x: &Matrix64) -> Vec<f64> {
    let (n, d) = (x.n(), x.d());
    let mut means = vec![0f64; d];
    for i in 0..n {
        means.iter_mut().zip(x.row(i)).for_each(|(m, &v)| *m += v);
    }
    means.iter_mut().for_each(|m| *m /= n as f64);
    let mut xc = x.as_slice().to_vec();
    xc.par_chunks_mut(d)
        .for_each(|row| row.iter_mut().zip(&means).for_each(|(v, m)| *v -= m));
    let xc = MatRef::from_row_major_slice(&xc, n, d);
    let mut g = Mat::<f64>::zeros(n, n);
    matmul(
        g.as_mut(),
        Accum::Replace,
        xc,
        xc.transpose(),
        1.0,
        Par::rayon(0),
    );
    let mut out = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            out[i * n + j] = g[(i, j)];
            out[j * n + i] = g[(i, j)];
        }
    }
    out
}

/// Squared Euclidean distances `‖x_i − x_j‖²` from a sample Gram matrix (`g_ii + g_jj − 2 g_ij`),
/// with an exactly zero diagonal, exactly symmetric, and rounding below zero clamped to 0.
pub fn squared_distances(gram: &[f64], n: usize) -> Vec<f64> {
    let mut d2 = vec![0f64; n * n];
    d2.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        for (j, o) in row.iter_mut().enumerate() {
            // The same operands in the same order for (i, j) and (j, i): symmetric bit for bit.
            let (a, b) = if i < j { (i, j) } else { (j, i) };
            *o = if i == j {
                0.0
            } else {
                (gram[a * n + a] + gram[b * n + b] - 2.0 * gram[a * n + b]).max(0.0)
            };
        }
    });
    d2
}

/// numpy's `np.median` of all `n²` entries of a squared-distance matrix (symmetric, zero
/// diagonal): the middle value, or the mean of the two middle values when `n²` is even.
///
/// The entries are the `n` diagonal zeros and every off-diagonal distance twice, so the k-th
/// smallest entry is 0 for `k < n` and otherwise the `(k − n)/2`-th smallest distance of the
/// upper triangle: only that triangle is searched (selection, not a sort).
pub fn median_squared_distance(d2: &[f64], n: usize) -> f64 {
    let mut upper: Vec<f64> = (0..n)
        .flat_map(|i| d2[i * n + i + 1..(i + 1) * n].iter().copied())
        .collect();
    let m = n * n;
    let mut order_stat = |k: usize| -> f64 {
        if k < n {
            return 0.0;
        }
        let idx = (k - n) / 2;
        let (_, v, _) = upper.select_nth_unstable_by(idx, f64::total_cmp);
        *v
    };
    if m % 2 == 1 {
        order_stat(m / 2)
    } else {
        let (lo, hi) = (order_stat(m / 2 - 1), order_stat(m / 2));
        (lo + hi) / 2.0
    }
}

/// The RBF Gram matrix `exp(−‖x_i − x_j‖² / (2σ²))` with `σ² = threshold² · median` of the
/// squared distances ([`median_squared_distance`]), Kornblith et al.'s `gram_rbf(x, threshold)`.
///
/// Errors if `threshold` is not positive and finite, or if the median distance is 0 (more than
/// half the pairs coincide), where the kernel has no bandwidth; `which` names the
/// representation in that error.
pub fn rbf_gram(
    x: &Matrix64,
    threshold: f64,
    which: &'static str,
) -> Result<Vec<f64>, DynamicsError> {
    check_threshold(threshold)?;
    let n = x.n();
    let mut k = squared_distances(&centred_gram(x), n);
    let median = median_squared_distance(&k, n);
    let sigma2 = threshold * threshold * median;
    if !(sigma2 > 0.0 && sigma2.is_finite()) {
        return Err(DynamicsError::ZeroBandwidth { which, median });
    }
    k.par_iter_mut()
        .for_each(|v| *v = (-*v / (2.0 * sigma2)).exp());
    Ok(k)
}

fn check_threshold(threshold: f64) -> Result<(), DynamicsError> {
    if threshold > 0.0 && threshold.is_finite() {
        Ok(())
    } else {
        Err(DynamicsError::InvalidThreshold(threshold))
    }
}

/// Linear, debiased and RBF CKA of two representations of the same `n` samples (rows), in f64.
///
/// Errors if the sample counts differ, if `n < 4` (the unbiased estimator's minimum), if a
/// representation is constant, or as [`rbf_gram`] does.
pub fn kernel_cka(
    a: &Matrix64,
    b: &Matrix64,
    rbf_threshold: f64,
) -> Result<KernelCka, DynamicsError> {
    check_threshold(rbf_threshold)?;
    if a.n() != b.n() {
        return Err(DynamicsError::SampleMismatch { a: a.n(), b: b.n() });
    }
    let n = a.n();
    let ga = CenteredGram::from_gram_f64(&centred_gram(a), n)?;
    let gb = CenteredGram::from_gram_f64(&centred_gram(b), n)?;
    let linear = linear_cka(&ga, &gb, Hsic::Biased)?;
    let debiased = linear_cka(&ga, &gb, Hsic::Unbiased)?;
    drop((ga, gb));
    let ra = CenteredGram::from_gram_f64(&rbf_gram(a, rbf_threshold, "first")?, n)?;
    let rb = CenteredGram::from_gram_f64(&rbf_gram(b, rbf_threshold, "second")?, n)?;
    let rbf = linear_cka(&ra, &rb, Hsic::Biased)?;
    Ok(KernelCka {
        linear,
        debiased,
        rbf,
    })
}

/// CKA of two precomputed kernel matrices (`n × n`, symmetric, f64, uncentred or centred) with
/// the chosen HSIC estimator, kept in f64: the demo's `cka(gram_x, gram_y, debiased)`.
pub fn gram_cka(k: &[f64], l: &[f64], n: usize, hsic: Hsic) -> Result<f64, DynamicsError> {
    linear_cka(
        &CenteredGram::from_gram_f64(k, n)?,
        &CenteredGram::from_gram_f64(l, n)?,
        hsic,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numerics::dynamics::testing::Gen;

    fn matrix(g: &mut Gen, n: usize, d: usize) -> Matrix64 {
        Matrix64::new((0..n * d).map(|_| g.normal()).collect(), n, d).expect("finite")
    }

    /// The fixture's arrays, read without the crate's readers (the .npy header is the fixed
    /// 128 bytes numpy writes for them; the readers have their own tests).
    fn demo() -> (Matrix64, Matrix64) {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/data/kornblith");
        let read = |name: &str| {
            let bytes = std::fs::read(dir.join(name)).expect("fixture present");
            let data: Vec<f64> = bytes[128..]
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect();
            Matrix64::new(data, 100, 10).expect("100 × 10")
        };
        (read("x.npy"), read("y.npy"))
    }

    #[test]
    fn the_reference_demo_values() {
        // Kornblith et al.'s demo (np.random.seed(1337); X = randn(100, 10);
        // Y = randn(100, 10) + X) publishes 0.55761, 0.51346 and, with threshold 0.5, 0.65483;
        // numpy in float64 on the same arrays gives the longer values (make_kornblith.py).
        let (x, y) = demo();
        let v = kernel_cka(&x, &y, 0.5).expect("cka");
        for (got, numpy, published) in [
            (v.linear, 0.557_613_256_611_758_6, 0.55761),
            (v.debiased, 0.513_456_489_505_526, 0.51346),
            (v.rbf, 0.654_831_182_261_498_1, 0.65483),
        ] {
            assert!((got - numpy).abs() < 1e-10, "{got} vs numpy {numpy}");
            assert!((got - published).abs() < 5e-6, "{got} vs {published}");
        }
        // Debiased RBF CKA, which the demo does not print: numpy gives 0.4192767510220516.
        let (ka, kb) = (
            rbf_gram(&x, 0.5, "first").expect("rbf"),
            rbf_gram(&y, 0.5, "second").expect("rbf"),
        );
        let deb = gram_cka(&ka, &kb, 100, Hsic::Unbiased).expect("cka");
        assert!((deb - 0.419_276_751_022_051_6).abs() < 1e-10, "{deb}");
    }

    #[test]
    fn the_median_counts_the_diagonal_zeros_as_numpy_does() {
        // Three points on a line at 0, 1, 5 (centred −2, −1, 3, exact in binary): squared
        // distances 1, 25, 16 off the diagonal. The nine entries sorted: 0 0 0 1 1 16 16 25 25,
        // median 1 (without the zeros it would be 16).
        let x = Matrix64::new(vec![0.0, 1.0, 5.0], 3, 1).expect("finite");
        let d2 = squared_distances(&centred_gram(&x), 3);
        assert_eq!(d2, vec![0.0, 1.0, 25.0, 1.0, 0.0, 16.0, 25.0, 16.0, 0.0]);
        assert_eq!(median_squared_distance(&d2, 3), 1.0);
        // Four points at 0, 1, 3, 7: 16 entries, 0×4 then 1 1 4 4 9 9 16 16 36 36 49 49, so
        // the two middle ones (8th and 9th) are 4 and 9; at 0, 1, 2, 10 (1 1 1 1 4 4 64 64 81 81
        // 100 100 after the zeros) they are 1 and 4.
        for (pts, want) in [([0.0, 1.0, 3.0, 7.0], 6.5), ([0.0, 1.0, 2.0, 10.0], 2.5)] {
            let x = Matrix64::new(pts.to_vec(), 4, 1).expect("finite");
            let d2 = squared_distances(&centred_gram(&x), 4);
            assert_eq!(median_squared_distance(&d2, 4), want, "{pts:?}");
        }
        // A brute-force check on random data: sort all n² entries.
        let mut g = Gen::new(11);
        for n in [5, 6, 17] {
            let x = matrix(&mut g, n, 3);
            let d2 = squared_distances(&centred_gram(&x), n);
            let mut all = d2.clone();
            all.sort_by(f64::total_cmp);
            let m = n * n;
            let want = if m % 2 == 1 {
                all[m / 2]
            } else {
                (all[m / 2 - 1] + all[m / 2]) / 2.0
            };
            assert_eq!(median_squared_distance(&d2, n), want, "n = {n}");
        }
    }

    #[test]
    fn rbf_gram_is_the_kernel_of_the_distances() {
        let mut g = Gen::new(12);
        let (n, d) = (9, 4);
        let x = matrix(&mut g, n, d);
        let k = rbf_gram(&x, 0.8, "first").expect("rbf");
        let direct = |i: usize, j: usize| -> f64 {
            x.row(i)
                .iter()
                .zip(x.row(j))
                .map(|(a, b)| (a - b) * (a - b))
                .sum()
        };
        let mut all: Vec<f64> = (0..n * n).map(|t| direct(t / n, t % n)).collect();
        all.sort_by(f64::total_cmp);
        let median = all[n * n / 2];
        for i in 0..n {
            assert_eq!(k[i * n + i], 1.0);
            for j in 0..n {
                let want = (-direct(i, j) / (2.0 * 0.64 * median)).exp();
                assert!((k[i * n + j] - want).abs() < 1e-12, "({i}, {j})");
                assert_eq!(k[i * n + j], k[j * n + i]);
            }
        }
    }

    #[test]
    fn identities() {
        let mut g = Gen::new(13);
        let (n, d) = (40, 6);
        let x = matrix(&mut g, n, d);
        // Any rotation (here a Givens rotation of features 0 and 2), isotropic scaling and
        // translation leaves all three at 1; RBF CKA is scale-free because σ follows the median.
        let (c, s) = (0.28f64, 0.96f64);
        let mut moved = x.as_slice().to_vec();
        for row in moved.chunks_mut(d) {
            let (a, b) = (row[0], row[2]);
            row[0] = c * a - s * b;
            row[2] = s * a + c * b;
            row.iter_mut().for_each(|v| *v = 4.0 * *v - 7.0);
        }
        let moved = Matrix64::new(moved, n, d).expect("finite");
        let v = kernel_cka(&x, &moved, 0.5).expect("cka");
        for value in [v.linear, v.debiased, v.rbf] {
            assert!((value - 1.0).abs() < 1e-12, "{v:?}");
        }
        // Symmetric in its arguments, and unrelated data are far from 1.
        let y = matrix(&mut g, n, 3);
        let (ab, ba) = (
            kernel_cka(&x, &y, 0.5).expect("cka"),
            kernel_cka(&y, &x, 0.5).expect("cka"),
        );
        assert!((ab.linear - ba.linear).abs() < 1e-14);
        assert!((ab.debiased - ba.debiased).abs() < 1e-14);
        assert!((ab.rbf - ba.rbf).abs() < 1e-14);
        assert!(
            ab.linear < 0.5 && ab.rbf < 0.5 && ab.debiased.abs() < 0.2,
            "{ab:?}"
        );
        // The f64 linear CKA agrees with the crate's f32 path to f32 rounding.
        let f32_cka = super::super::cka(
            &x.to_f32().expect("finite"),
            &y.to_f32().expect("finite"),
            Hsic::Biased,
        )
        .expect("cka");
        assert!((f32_cka - ab.linear).abs() < 1e-5, "{f32_cka} vs {ab:?}");
    }

    #[test]
    fn errors() {
        let mut g = Gen::new(14);
        let x = matrix(&mut g, 6, 2);
        let y = matrix(&mut g, 5, 2);
        assert!(matches!(
            kernel_cka(&x, &y, 0.5),
            Err(DynamicsError::SampleMismatch { a: 6, b: 5 })
        ));
        for t in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                kernel_cka(&x, &x, t),
                Err(DynamicsError::InvalidThreshold(_))
            ));
        }
        // Four of five points coincide: the median squared distance is 0.
        let same = Matrix64::new(vec![1.0, 1.0, 1.0, 1.0, 2.0], 5, 1).expect("finite");
        let other = Matrix64::new(vec![0.0, 1.0, 2.0, 3.0, 4.0], 5, 1).expect("finite");
        let e = kernel_cka(&other, &same, 0.5).expect_err("no bandwidth");
        assert!(
            matches!(e, DynamicsError::ZeroBandwidth { which: "second", median } if median == 0.0),
            "{e}"
        );
        let three = Matrix64::new(vec![0.0, 1.0, 3.0], 3, 1).expect("finite");
        assert!(matches!(
            kernel_cka(&three, &three, 0.5),
            Err(DynamicsError::TooFewSamples { n: 3, need: 4, .. })
        ));
    }
}
