//! Linear CKA: how similar two representations of the same samples are, compared through their
//! centred Gram matrices.

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;

use super::{DynamicsError, SYMMETRY_TOL, TILE, asymmetric_pair, check_data, first_non_finite};
use crate::numerics::matrix::Matrix;
use crate::numerics::reduce;

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

/// A centred n×n Gram matrix of one representation (f32 storage to halve memory, or f64 from
/// [`CenteredGram::from_gram_f64`]), with its self-HSIC cached.
///
/// Alongside the matrix it keeps, in f64, the few sums the unbiased estimator needs (diagonal,
/// row sums without the diagonal), so that one HSIC between two representations is a single
/// O(n²) pass over both matrices.
#[derive(Clone)]
pub struct CenteredGram {
    n: usize,
    /// `H K H`, row-major, exactly symmetric.
    k: Stored,
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

/// The centred matrix as stored: `f32` by default, `f64` where precision matters more than
/// memory.
#[derive(Clone)]
enum Stored {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// An element type the centred matrix is stored in.
trait Elem: Copy + Send + Sync + Into<f64> {
    /// `v` in this type (rounded to nearest for `f32`).
    fn narrow(v: f64) -> Self;
}

impl Elem for f32 {
    fn narrow(v: f64) -> Self {
        v as f32
    }
}

impl Elem for f64 {
    fn narrow(v: f64) -> Self {
        v
    }
}

impl fmt::Debug for CenteredGram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The matrix itself is millions of numbers: show what identifies it.
        f.debug_struct("CenteredGram")
            .field("n", &self.n)
            .field(
                "precision",
                &match self.k {
                    Stored::F32(_) => "f32",
                    Stored::F64(_) => "f64",
                },
            )
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
        let (means, grand) = Self::row_means(gram, n)?;
        let k = centred::<f32>(gram, n, &means, grand);
        Ok(Self::from_centred(Stored::F32(k), n))
    }

    /// [`CenteredGram::from_gram`] keeping the centred matrix in `f64` (twice the memory): for
    /// inputs whose precision matters, such as float64 arrays compared against published values.
    pub fn from_gram_f64(gram: &[f64], n: usize) -> Result<Self, DynamicsError> {
        let (means, grand) = Self::row_means(gram, n)?;
        let k = centred::<f64>(gram, n, &means, grand);
        Ok(Self::from_centred(Stored::F64(k), n))
    }

    /// Checks `gram` and gives the row means of its lower-triangle symmetrisation and their mean.
    fn row_means(gram: &[f64], n: usize) -> Result<(Vec<f64>, f64), DynamicsError> {
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
        Ok((means, grand))
    }

    /// From features `[n, d]` row-major (uses [`reduce::sample_gram`] with centring).
    ///
    /// This costs `n²·d` flops, the same product the Gram solver of [`reduce::reduce`] pays:
    /// when a [`reduce::Reduction`] already holds `sample_gram`, [`CenteredGram::from_gram`] on
    /// it is the cheap way.
    pub fn from_features(x: &Matrix) -> Result<Self, DynamicsError> {
        Self::from_rows(x.as_slice(), x.n(), x.d())
    }

    /// [`CenteredGram::from_features`] on a row-major `[n, d]` slice, checked here.
    pub(crate) fn from_rows(x: &[f32], n: usize, d: usize) -> Result<Self, DynamicsError> {
        check_data(x, n, d)?;
        let g = reduce::sample_gram(x, n, d, true)?;
        Self::from_gram(&g, n)
    }

    /// The number of samples.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Caches the sums the estimators need, from the stored values (so that `HSIC(K, K)`
    /// and `HSIC(K, L)` see exactly the same numbers).
    fn from_centred(k: Stored, n: usize) -> Self {
        let (diag, offdiag_rows) = match &k {
            Stored::F32(k) => row_sums(k, n),
            Stored::F64(k) => row_sums(k, n),
        };
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
        let dot = stored_dot(&g.k, &g.k, n);
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

/// `gram − row means − column means + grand mean` from the lower triangle, mirrored: `H K H`.
fn centred<T: Elem>(gram: &[f64], n: usize, means: &[f64], grand: f64) -> Vec<T> {
    let mut k = vec![T::narrow(0.0); n * n];
    k.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        for (j, (o, &g)) in row[..=i]
            .iter_mut()
            .zip(&gram[i * n..=i * n + i])
            .enumerate()
        {
            *o = T::narrow(g - means[i] - means[j] + grand);
        }
    });
    mirror_lower(&mut k, n);
    k
}

/// The diagonal of the row-major `n × n` matrix `k` and its row sums without the diagonal, in
/// f64.
fn row_sums<T: Elem>(k: &[T], n: usize) -> (Vec<f64>, Vec<f64>) {
    let diag: Vec<f64> = (0..n).map(|i| k[i * n + i].into()).collect();
    let offdiag_rows: Vec<f64> = k
        .par_chunks(n)
        .zip(diag.par_iter())
        .map(|(row, &dii)| row.iter().map(|&v| v.into()).sum::<f64>() - dii)
        .collect();
    (diag, offdiag_rows)
}

/// Copies the lower triangle of the row-major `n × n` matrix `k` onto the upper one, in tiles.
fn mirror_lower<T: Copy>(k: &mut [T], n: usize) {
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

/// [`frobenius_dot`] of two stored matrices, whatever their precisions.
fn stored_dot(a: &Stored, b: &Stored, n: usize) -> f64 {
    match (a, b) {
        (Stored::F32(a), Stored::F32(b)) => frobenius_dot(a, b, n),
        (Stored::F32(a), Stored::F64(b)) => frobenius_dot(a, b, n),
        (Stored::F64(a), Stored::F32(b)) => frobenius_dot(a, b, n),
        (Stored::F64(a), Stored::F64(b)) => frobenius_dot(a, b, n),
    }
}

/// `Σ_ij a_ij b_ij` in f64; per-row sums added in row order, so the result does not depend on
/// rayon's scheduling.
fn frobenius_dot<A: Elem, B: Elem>(a: &[A], b: &[B], n: usize) -> f64 {
    let rows: Vec<f64> = a
        .par_chunks(n)
        .zip(b.par_chunks(n))
        .map(|(ra, rb)| {
            ra.iter()
                .zip(rb)
                .map(|(&x, &y)| x.into() * y.into())
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
    let dot = stored_dot(&a.k, &b.k, a.n);
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

/// Linear CKA of two representations of the same `n` samples (rows), whatever their feature
/// counts: [`linear_cka`] of their [`CenteredGram::from_features`]. 1 for a representation
/// and any rotation or isotropic scaling of it.
pub fn cka(a: &Matrix, b: &Matrix, hsic: Hsic) -> Result<f64, DynamicsError> {
    linear_cka(
        &CenteredGram::from_features(a)?,
        &CenteredGram::from_features(b)?,
        hsic,
    )
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

#[cfg(test)]
mod tests {
    use faer::Mat;

    use super::*;
    use crate::numerics::dynamics::testing::Gen;

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
        let a = CenteredGram::from_rows(x, n, dx).expect("gram");
        let b = CenteredGram::from_rows(y, n, dy).expect("gram");
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
        let (Stored::F32(kr), Stored::F32(kc)) = (&ar.k, &ac.k) else {
            panic!("from_gram stores f32");
        };
        for (p, q) in kr.iter().zip(kc) {
            assert!((p - q).abs() < 1e-4, "{p} vs {q}");
        }
    }

    #[test]
    fn cka_input_errors() {
        let mut g = Gen::new(5);
        let x = g.matrix(6, 3);
        let a = CenteredGram::from_rows(&x, 6, 3).expect("gram");
        let b = CenteredGram::from_rows(&x[..15], 5, 3).expect("gram");
        assert_eq!((a.n(), b.n()), (6, 5));
        assert!(matches!(
            linear_cka(&a, &b, Hsic::Biased),
            Err(DynamicsError::SampleMismatch { a: 6, b: 5 })
        ));
        let c = CenteredGram::from_rows(&x[..9], 3, 3).expect("gram");
        assert!(matches!(
            linear_cka(&c, &c, Hsic::Unbiased),
            Err(DynamicsError::TooFewSamples { n: 3, need: 4, .. })
        ));
        assert!(linear_cka(&c, &c, Hsic::Biased).is_ok());
        let constant = CenteredGram::from_rows(&[2.5f32; 18], 6, 3).expect("gram");
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
            CenteredGram::from_rows(&bad, 6, 3),
            Err(DynamicsError::NonFinite { row: 2, col: 1, .. })
        ));
        assert!(matches!(
            CenteredGram::from_rows(&x, 5, 3),
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
}
