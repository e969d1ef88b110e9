//! Class-subspace alignment: whether the classes occupy different directions, as the principal
//! angles between their principal subspaces.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par, Side};
use rayon::prelude::*;

use super::{DynamicsError, SYMMETRY_TOL, asymmetric_pair, check_data, check_labels, class_sums};
use crate::numerics::matrix::centre_rows_into;
use crate::numerics::metrics::dense_ids;
use crate::numerics::reduce::{self, Method, ReduceError, Solver};

/// Class-subspace alignment: per class, top-r right singular vectors of its centred samples (r
/// from the energy threshold, same rule as reduce); for each pair of classes the mean cosine of
/// their principal angles (mean of the singular values of V_aᵀV_b, there are min(r_a,r_b) of
/// them, clamped to `[0, 1]`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubspaceAlignment {
    /// The classes that have a subspace, ascending.
    pub classes: Vec<i64>,
    /// Each class's subspace dimension `r`.
    pub ranks: Vec<usize>,
    /// `C × C` mean principal-angle cosines, diagonal 1.
    pub cos: Vec<Vec<f64>>,
    /// The mean of `cos` over the pairs `a < b`.
    pub mean: f64,
}

/// Computes [`SubspaceAlignment`] for `x` (`[n, d]` row-major) with labels `labels`.
///
/// Each class's samples are centred on the class mean and reduced with
/// [`reduce::reduce`] (PCA, the given `energy`), whose `k` is the subspace dimension; the basis
/// `V = X_cᵀ U S⁻¹` is rebuilt from its scores. A class with fewer than 2 samples, or with zero
/// spread, has no subspace and is left out of the result; fewer than 2 remaining classes is an
/// error. Cost: the per-class reductions (`Σ n_c²·d`), `n·d·r` for the bases and
/// `Σ_{a<b} r_a·r_b·d` for the pairs, all f32 products.
pub fn class_subspace_alignment(
    x: &[f32],
    n: usize,
    d: usize,
    labels: &[i64],
    energy: f64,
) -> Result<SubspaceAlignment, DynamicsError> {
    check_data(x, n, d)?;
    check_labels(labels, n)?;
    if !(energy > 0.0 && energy <= 1.0) {
        return Err(DynamicsError::InvalidEnergy(energy));
    }
    let (class_of, classes) = dense_ids(labels);
    // All class means in one parallel pass, and one buffer reused for every class's copy.
    let sums = class_sums(x, n, d, &class_of, classes.len());
    let mut buf: Vec<f32> = Vec::new();
    let mut kept = Vec::new();
    let mut bases: Vec<Mat<f32>> = Vec::new();
    for (c, &label) in classes.iter().enumerate() {
        let rows: Vec<usize> = (0..n).filter(|&i| class_of[i] == c).collect();
        if rows.len() < 2 {
            continue;
        }
        let nc = rows.len();
        let mu: Vec<f64> = sums[c * d..(c + 1) * d]
            .iter()
            .map(|s| s / nc as f64)
            .collect();
        buf.resize(nc * d, 0.0);
        let xc = &mut buf[..nc * d];
        centre_rows_into(x, d, &rows, &mu, xc);
        let red = match reduce::reduce_rows(xc, nc, d, Method::Pca, energy, None, Solver::Auto) {
            Ok(r) => r,
            Err(ReduceError::ZeroEnergy { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        bases.push(class_basis(xc, nc, d, &red));
        kept.push(label);
    }
    let ranks = bases.iter().map(|v| v.ncols()).collect();
    alignment(kept, ranks, |a, b| {
        mean_cosine(bases[a].as_ref(), bases[b].as_ref())
    })
}

/// The class × class matrix and its mean over pairs, from `pair_cos(a, b)` for `a < b`
/// (run in parallel); fewer than two classes is an error.
fn alignment(
    classes: Vec<i64>,
    ranks: Vec<usize>,
    pair_cos: impl Fn(usize, usize) -> Result<f64, DynamicsError> + Sync,
) -> Result<SubspaceAlignment, DynamicsError> {
    let c = classes.len();
    if c < 2 {
        return Err(DynamicsError::TooFewClasses { found: c });
    }
    let pairs: Vec<(usize, usize)> = (0..c)
        .flat_map(|a| (a + 1..c).map(move |b| (a, b)))
        .collect();
    let values = pairs
        .par_iter()
        .map(|&(a, b)| pair_cos(a, b))
        .collect::<Result<Vec<f64>, _>>()?;
    let mut cos = vec![vec![0f64; c]; c];
    for (a, row) in cos.iter_mut().enumerate() {
        row[a] = 1.0;
    }
    for (&(a, b), &v) in pairs.iter().zip(&values) {
        cos[a][b] = v;
        cos[b][a] = v;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    Ok(SubspaceAlignment {
        classes,
        ranks,
        cos,
        mean,
    })
}

/// [`class_subspace_alignment`] from the sample Gram matrix `K = X Xᵀ` (`[n, n]` f64, with or
/// without column centring) instead of the features, for when the reduce step has formed it.
///
/// Everything the subspaces need is an inner product of samples: centring each class on its
/// own mean is `K̃_ij = K_ij − m_b(i) − m_a(j) + M_ab` (`i` in class `a`, `j` in `b`, `m_b(i)`
/// the mean of row `i` over `b`'s columns, `M_ab` the block mean), the class block `K̃_aa =
/// U_a Λ_a U_aᵀ` gives `V_a = X̃_aᵀ U_a Λ_a^{-1/2}`, and `V_aᵀ V_b = W_aᵀ K̃_ab W_b` with `W_a =
/// U_a Λ_a^{-1/2}` (first `r_a` columns). So the cost is `O(n²)` plus one `n_a × n_a`
/// eigendecomposition per class and `r_a·n_a·n_b` per pair, with no `d` in it: at n = 2000 and
/// d = 12 544 this is a few dozen milliseconds where the feature route takes a second. Ranks
/// come from the exact eigenvalues with the rule of [`reduce::reduce`], so they can differ from
/// the feature route's iterative `k` only when a class's energy sits on the threshold.
pub fn class_subspace_alignment_from_gram(
    gram: &[f64],
    n: usize,
    labels: &[i64],
    energy: f64,
) -> Result<SubspaceAlignment, DynamicsError> {
    if n == 0 || n.checked_mul(n) != Some(gram.len()) {
        return Err(DynamicsError::GramShape { len: gram.len(), n });
    }
    if let Some(i) = gram.iter().position(|v| !v.is_finite()) {
        return Err(DynamicsError::GramNonFinite {
            row: i / n,
            col: i % n,
            value: gram[i],
        });
    }
    // The class-centring below reads K_ji for K_ij.
    let scale = gram.iter().fold(0f64, |m, v| m.max(v.abs()));
    if let Some((row, col)) = asymmetric_pair(gram, n, SYMMETRY_TOL * scale) {
        return Err(DynamicsError::GramNotSymmetric { row, col });
    }
    check_labels(labels, n)?;
    if !(energy > 0.0 && energy <= 1.0) {
        return Err(DynamicsError::InvalidEnergy(energy));
    }
    let (class_of, classes) = dense_ids(labels);
    let members: Vec<Vec<usize>> = (0..classes.len())
        .map(|c| (0..n).filter(|&i| class_of[i] == c).collect())
        .collect();
    let nclass = classes.len();
    // row_mean[i * C + b]: the mean of K[i, j] over the j in class b.
    let mut row_mean = vec![0f64; n * nclass];
    row_mean
        .par_chunks_mut(nclass)
        .enumerate()
        .for_each(|(i, out)| {
            let row = &gram[i * n..(i + 1) * n];
            for (b, m) in members.iter().enumerate() {
                out[b] = m.iter().map(|&j| row[j]).sum::<f64>() / m.len() as f64;
            }
        });
    let mut block_mean = vec![0f64; nclass * nclass];
    for (a, m) in members.iter().enumerate() {
        for b in 0..nclass {
            block_mean[a * nclass + b] =
                m.iter().map(|&i| row_mean[i * nclass + b]).sum::<f64>() / m.len() as f64;
        }
    }
    let centred = |a: usize, b: usize| {
        let (ra, rb) = (&members[a], &members[b]);
        Mat::<f64>::from_fn(ra.len(), rb.len(), |p, q| {
            let (i, j) = (ra[p], rb[q]);
            gram[i * n + j] - row_mean[i * nclass + b] - row_mean[j * nclass + a]
                + block_mean[a * nclass + b]
        })
    };
    let mut kept = Vec::new();
    let mut weights: Vec<(usize, Mat<f64>)> = Vec::new();
    for (a, m) in members.iter().enumerate() {
        if m.len() < 2 {
            continue;
        }
        let block = centred(a, a);
        let eig = block
            .self_adjoint_eigen(Side::Lower)
            .map_err(|_| DynamicsError::NoConvergence)?;
        let mut order: Vec<usize> = (0..m.len()).collect();
        order.sort_by(|&p, &q| eig.S()[q].total_cmp(&eig.S()[p]));
        let theta: Vec<f64> = order.iter().map(|&p| eig.S()[p].max(0.0)).collect();
        let total: f64 = (0..m.len()).map(|p| block[(p, p)]).sum();
        // A class with no spread has no subspace, as in the feature route.
        if total.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) || theta[0] <= 0.0 {
            continue;
        }
        let r = reduce::rank_for_energy(&theta, total, energy);
        let w = Mat::<f64>::from_fn(m.len(), r, |p, t| eig.U()[(p, order[t])] / theta[t].sqrt());
        kept.push(classes[a]);
        weights.push((a, w));
    }
    let ranks = weights.iter().map(|(_, w)| w.ncols()).collect();
    alignment(kept, ranks, |x, y| {
        let ((a, wa), (b, wb)) = (&weights[x], &weights[y]);
        let k_ab = centred(*a, *b);
        let mut t = Mat::<f64>::zeros(wa.ncols(), k_ab.ncols());
        matmul(
            t.as_mut(),
            Accum::Replace,
            wa.transpose(),
            k_ab.as_ref(),
            1.0,
            Par::Seq,
        );
        let mut m = Mat::<f64>::zeros(wa.ncols(), wb.ncols());
        matmul(
            m.as_mut(),
            Accum::Replace,
            t.as_ref(),
            wb.as_ref(),
            1.0,
            Par::Seq,
        );
        let s = m
            .singular_values()
            .map_err(|_| DynamicsError::NoConvergence)?;
        let r = wa.ncols().min(wb.ncols());
        Ok(s.iter().take(r).map(|v| v.clamp(0.0, 1.0)).sum::<f64>() / r as f64)
    })
}

/// The orthonormal basis `V = X_cᵀ U S⁻¹ = X_cᵀ · scores · S⁻²` (`[d, k]`) of one class's
/// principal subspace, from the centred class rows `xc` and their reduction. Centring the copy
/// first (rather than correcting `Xᵀ·coef` afterwards) keeps exact zeros exact: a class confined
/// to some coordinates gets a basis that is exactly zero elsewhere.
fn class_basis(xc: &[f32], nc: usize, d: usize, red: &reduce::Reduction) -> Mat<f32> {
    let k = red.k_used;
    let coef = Mat::<f32>::from_fn(nc, k, |i, j| {
        let s = red.singular_values[j];
        (f64::from(red.scores[i * k + j]) / (s * s)) as f32
    });
    let mut v = Mat::<f32>::zeros(d, k);
    matmul(
        v.as_mut(),
        Accum::Replace,
        MatRef::from_row_major_slice(xc, nc, d).transpose(),
        coef.as_ref(),
        1.0,
        Par::rayon(0),
    );
    for j in 0..k {
        let col = v.col_as_slice_mut(j);
        // Unit columns, so that f32 drift cannot push a cosine past 1 by more than rounding.
        let norm = col
            .iter()
            .map(|&x| f64::from(x).powi(2))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            col.iter_mut()
                .for_each(|x| *x = (f64::from(*x) / norm) as f32);
        }
    }
    v
}

/// The mean of the singular values of `VaᵀVb` (the cosines of the principal angles), each
/// clamped to [0, 1].
fn mean_cosine(va: MatRef<'_, f32>, vb: MatRef<'_, f32>) -> Result<f64, DynamicsError> {
    let mut m = Mat::<f32>::zeros(va.ncols(), vb.ncols());
    matmul(
        m.as_mut(),
        Accum::Replace,
        va.transpose(),
        vb,
        1.0,
        Par::Seq,
    );
    let m64 = Mat::<f64>::from_fn(m.nrows(), m.ncols(), |i, j| f64::from(m[(i, j)]));
    let s = m64
        .singular_values()
        .map_err(|_| DynamicsError::NoConvergence)?;
    let r = va.ncols().min(vb.ncols());
    Ok(s.iter().take(r).map(|v| v.clamp(0.0, 1.0)).sum::<f64>() / r as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numerics::dynamics::testing::Gen;

    /// Samples of class `c` with random coefficients on the coordinates `coords` and the
    /// constant `offset` everywhere (removed by the per-class centring).
    fn class_block(g: &mut Gen, count: usize, d: usize, coords: &[usize], offset: f32) -> Vec<f32> {
        let mut x = vec![offset; count * d];
        for i in 0..count {
            for &j in coords {
                x[i * d + j] += g.normal() as f32;
            }
        }
        x
    }

    #[test]
    fn orthogonal_class_subspaces_have_zero_alignment() {
        let mut g = Gen::new(6);
        let (d, per) = (14, 25);
        let mut x = Vec::new();
        let mut labels = Vec::new();
        for c in 0..4usize {
            let coords: Vec<usize> = (3 * c..3 * c + 3).collect();
            x.extend(class_block(&mut g, per, d, &coords, 5.0 + c as f32));
            labels.extend(std::iter::repeat_n(10 * c as i64, per));
        }
        let n = labels.len();
        let al = class_subspace_alignment(&x, n, d, &labels, 0.999).expect("alignment");
        assert_eq!(al.classes, vec![0, 10, 20, 30]);
        assert_eq!(al.ranks, vec![3; 4]);
        for a in 0..4 {
            for b in 0..4 {
                let want = if a == b { 1.0 } else { 0.0 };
                assert!((al.cos[a][b] - want).abs() <= 1e-6, "cos[{a}][{b}]");
            }
        }
        assert!(al.mean.abs() <= 1e-6);
    }

    #[test]
    fn shared_and_tilted_class_subspaces() {
        let mut g = Gen::new(7);
        let d = 8;
        // Classes 0 and 1 span the same 3-D subspace; class 2 another one.
        let mut x = class_block(&mut g, 30, d, &[0, 1, 2], 1.0);
        x.extend(class_block(&mut g, 20, d, &[0, 1, 2], -2.0));
        x.extend(class_block(&mut g, 20, d, &[3, 4, 5], 0.0));
        let labels: Vec<i64> = [vec![0; 30], vec![1; 20], vec![2; 20]].concat();
        let al = class_subspace_alignment(&x, 70, d, &labels, 0.9999).expect("alignment");
        assert!((al.cos[0][1] - 1.0).abs() < 1e-5, "{}", al.cos[0][1]);
        assert!(al.cos[0][2].abs() < 1e-6 && al.cos[1][2].abs() < 1e-6);
        assert!((al.mean - 1.0 / 3.0).abs() < 1e-5);
        // Three lines: e₁, cos θ e₁ + sin θ e₂ and e₃. The principal angle between the first two
        // is θ, so their cosine is cos θ; the third is orthogonal to both.
        let theta = 0.7f64;
        let ts = [-2.0f64, -1.0, 0.5, 1.0, 2.5];
        let mut x = Vec::new();
        for &t in &ts {
            x.extend([t as f32, 0.0, 0.0]);
        }
        for &t in &ts {
            x.extend([(t * theta.cos()) as f32, (t * theta.sin()) as f32, 0.0]);
        }
        for &t in &ts {
            x.extend([0.0, 0.0, t as f32]);
        }
        let labels: Vec<i64> = [[7; 5], [8; 5], [9; 5]].concat();
        let al = class_subspace_alignment(&x, 15, 3, &labels, 0.9).expect("alignment");
        assert_eq!(al.ranks, vec![1, 1, 1]);
        assert!(
            (al.cos[0][1] - theta.cos()).abs() < 1e-6,
            "{}",
            al.cos[0][1]
        );
        assert!(al.cos[0][2].abs() < 1e-7 && al.cos[1][2].abs() < 1e-7);
        assert!((al.mean - theta.cos() / 3.0).abs() < 1e-6);
    }

    #[test]
    fn classes_without_spread_are_skipped() {
        let mut g = Gen::new(8);
        let d = 6;
        let mut x = class_block(&mut g, 10, d, &[0, 1], 0.0);
        x.extend(class_block(&mut g, 10, d, &[2, 3], 0.0));
        x.extend([1.0f32; 6]); // class 5: one sample
        x.extend([2.0f32; 18]); // class 6: three identical samples
        let labels: Vec<i64> = [vec![0; 10], vec![1; 10], vec![5], vec![6; 3]].concat();
        let n = labels.len();
        let al = class_subspace_alignment(&x, n, d, &labels, 0.9).expect("alignment");
        assert_eq!(al.classes, vec![0, 1]);
        assert_eq!(al.cos.len(), 2);
        // Only one class with spread left.
        assert!(matches!(
            class_subspace_alignment(&x[10 * d..], n - 10, d, &labels[10..], 0.9),
            Err(DynamicsError::TooFewClasses { found: 1 })
        ));
        for e in [0.0, 1.5, f64::NAN] {
            assert!(matches!(
                class_subspace_alignment(&x, n, d, &labels, e),
                Err(DynamicsError::InvalidEnergy(_))
            ));
        }
        assert!(matches!(
            class_subspace_alignment(&x, n, d, &labels[1..], 0.9),
            Err(DynamicsError::LabelCount { .. })
        ));
        let mut bad = x.clone();
        bad[d + 1] = f32::NEG_INFINITY;
        assert!(matches!(
            class_subspace_alignment(&bad, n, d, &labels, 0.9),
            Err(DynamicsError::NonFinite { row: 1, col: 1, .. })
        ));
    }

    #[test]
    fn subspace_alignment_from_the_gram_matrix_equals_the_feature_route() {
        // Three classes of different spread and rank in 40 dims, each with an offset that
        // both routes must centre away.
        let (n, d) = (90usize, 40usize);
        let mut state = 5u64;
        let mut rnd = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) as f32 - 0.5
        };
        let labels: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
        let mut x = vec![0f32; n * d];
        for i in 0..n {
            let c = labels[i] as usize;
            for j in 0..d {
                let scale = if j % 3 == c { 3.0 } else { 0.3 };
                x[i * d + j] = scale * rnd() + c as f32;
            }
        }
        let by_features = class_subspace_alignment(&x, n, d, &labels, 0.9).unwrap();
        for centre in [false, true] {
            let g = reduce::sample_gram(&x, n, d, centre).unwrap();
            let by_gram = class_subspace_alignment_from_gram(&g, n, &labels, 0.9).unwrap();
            assert_eq!(by_gram.classes, by_features.classes);
            assert_eq!(by_gram.ranks, by_features.ranks);
            for (ra, rb) in by_gram.cos.iter().zip(&by_features.cos) {
                for (a, b) in ra.iter().zip(rb) {
                    assert!((a - b).abs() < 1e-5, "{a} vs {b}");
                }
            }
            assert!(
                by_gram.mean > 0.05 && by_gram.mean < 0.95,
                "{}",
                by_gram.mean
            );
        }
    }
}
