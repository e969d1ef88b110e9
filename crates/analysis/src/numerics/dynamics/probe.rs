//! The linear probe: how linearly decodable the labels are from the reduced scores, as the
//! held-out accuracy of a multinomial logistic regression.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};

use super::lbfgs::lbfgs;
use super::{DynamicsError, check_labels};
use crate::numerics::metrics::dense_ids;
use crate::numerics::rng::SplitMix64;
use crate::numerics::scores;

/// The L2 penalty `λ/2 ‖W‖²` (bias not penalised) added to [`linear_probe`]'s mean
/// cross-entropy on standardised features.
pub const PROBE_L2: f64 = 1e-4;

/// The iteration cap of [`linear_probe`]'s L-BFGS: a fixed budget keeps the cost bounded and
/// the result reproducible even when (separable data) the optimum is approached slowly.
pub const PROBE_MAX_ITER: usize = 200;

/// Linear probe: multinomial logistic regression on `scores` `[n, dim]`, fit on a stratified half
/// (deterministic from `seed`), accuracy on the other half.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProbeResult {
    /// Accuracy on the held-out half.
    pub accuracy: f64,
    /// Accuracy on the training half.
    pub train_accuracy: f64,
    /// Training samples.
    pub n_train: usize,
    /// Test samples.
    pub n_test: usize,
}

/// Fits and scores the linear probe described at [`ProbeResult`].
///
/// * Split: per class (labels ascending), the class's sample indices are shuffled with a
///   splitmix64 generator seeded by `seed` (one generator, carried from class to class), the
///   first `⌊n_c/2⌋` train and the rest test. A one-sample class is test-only.
/// * Features are standardised with the training half's mean and standard deviation (a constant
///   feature is only centred).
/// * The model minimises mean cross-entropy + [`PROBE_L2`]`/2·‖W‖²` (bias free) with L-BFGS
///   (memory 10, Armijo backtracking) from zero, at most [`PROBE_MAX_ITER`] iterations, stopping
///   early once the largest gradient entry is below 1e-6. Every product is sequential f64, so
///   the result is bit-for-bit reproducible. (A self-contained optimiser: the problem is a few
///   thousand parameters, too small to be worth a dependency.)
/// * Ties in the predicted class go to the smaller label.
pub fn linear_probe(
    scores: &[f32],
    n: usize,
    dim: usize,
    labels: &[i64],
    seed: u64,
) -> Result<ProbeResult, DynamicsError> {
    scores::check(scores, n, dim)?;
    check_labels(labels, n)?;
    let (class_of, classes) = dense_ids(labels);
    let c = classes.len();
    if c < 2 {
        return Err(DynamicsError::TooFewClasses { found: c });
    }
    let (train, test) = stratified_split(&class_of, c, seed);
    if train.is_empty() || test.is_empty() {
        return Err(DynamicsError::EmptySplit {
            n_train: train.len(),
            n_test: test.len(),
        });
    }
    let mut mean = vec![0f64; dim];
    let mut var = vec![0f64; dim];
    for &i in &train {
        for (m, &v) in mean.iter_mut().zip(&scores[i * dim..(i + 1) * dim]) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= train.len() as f64);
    for &i in &train {
        for ((s, &v), m) in var
            .iter_mut()
            .zip(&scores[i * dim..(i + 1) * dim])
            .zip(&mean)
        {
            *s += (f64::from(v) - m).powi(2);
        }
    }
    let scale: Vec<f64> = var
        .iter()
        .map(|v| {
            let sd = (v / train.len() as f64).sqrt();
            if sd > 0.0 { 1.0 / sd } else { 1.0 }
        })
        .collect();
    // Xᵀ (dim × rows, column-major: one sample per column).
    let standardised_t = |rows: &[usize]| {
        Mat::<f64>::from_fn(dim, rows.len(), |j, t| {
            (f64::from(scores[rows[t] * dim + j]) - mean[j]) * scale[j]
        })
    };
    let xtr_t = standardised_t(&train);
    let xtr = xtr_t.transpose().to_owned();
    let xte_t = standardised_t(&test);
    let ytr: Vec<usize> = train.iter().map(|&i| class_of[i]).collect();
    let yte: Vec<usize> = test.iter().map(|&i| class_of[i]).collect();
    let problem = Softmax {
        x: xtr.as_ref(),
        xt: xtr_t.as_ref(),
        y: &ytr,
        c,
        lambda: PROBE_L2,
    };
    let mut theta = vec![0f64; (dim + 1) * c];
    lbfgs(|t, g| problem.eval(t, g), &mut theta, PROBE_MAX_ITER, 1e-6);
    Ok(ProbeResult {
        accuracy: accuracy(xte_t.as_ref(), &yte, &theta, c),
        train_accuracy: accuracy(xtr_t.as_ref(), &ytr, &theta, c),
        n_train: train.len(),
        n_test: test.len(),
    })
}

/// A seeded random half of every class for training the probe, the rest for testing it: a
/// split, not a sample, so not [`cnnu_run::stratified`] (which picks a deterministic subset).
fn stratified_split(class_of: &[usize], c: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut rng = SplitMix64::new(seed);
    let mut train = Vec::new();
    let mut test = Vec::new();
    for k in 0..c {
        let mut rows: Vec<usize> = (0..class_of.len()).filter(|&i| class_of[i] == k).collect();
        for i in (1..rows.len()).rev() {
            rows.swap(i, rng.below(i + 1));
        }
        let half = rows.len() / 2;
        train.extend_from_slice(&rows[..half]);
        test.extend_from_slice(&rows[half..]);
    }
    // Ascending order: the fit then depends only on which samples train, not on the shuffle.
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

/// Multinomial logistic regression: `θ = [Wᵀ (C × dim, column-major: a feature's C weights
/// are contiguous), b (C)]`. Logits are formed as `Wᵀ·Xᵀ` (`C × m`, one sample's logits
/// contiguous) and the gradient as `Rᵀ·X`, so every product has column-major operands and the
/// softmax walks contiguous memory.
struct Softmax<'a> {
    /// The samples, `m × dim` column-major.
    x: MatRef<'a, f64>,
    /// The same, transposed: `dim × m` column-major.
    xt: MatRef<'a, f64>,
    y: &'a [usize],
    c: usize,
    lambda: f64,
}

impl Softmax<'_> {
    /// The objective at `theta`, its gradient written into `grad`.
    fn eval(&self, theta: &[f64], grad: &mut [f64]) -> f64 {
        let (m, p) = (self.x.nrows(), self.x.ncols());
        let c = self.c;
        let (wt, b) = theta.split_at(p * c);
        let mut z = logits(self.xt, wt, c);
        let mut loss = 0.0;
        let inv_m = 1.0 / m as f64;
        for i in 0..m {
            let zi = z.col_as_slice_mut(i);
            let mut zmax = f64::NEG_INFINITY;
            for (v, bk) in zi.iter_mut().zip(b) {
                *v += bk;
                zmax = zmax.max(*v);
            }
            let yi = self.y[i];
            let zy = zi[yi] - zmax;
            let mut sum = 0.0;
            for v in zi.iter_mut() {
                *v = exp_nonpositive(*v - zmax);
                sum += *v;
            }
            // −log softmax_y = log Σ exp(z − zmax) − (z_y − zmax).
            loss += sum.ln() - zy;
            let scale = inv_m / sum;
            for v in zi.iter_mut() {
                *v *= scale;
            }
            zi[yi] -= inv_m;
        }
        let (gw, gb) = grad.split_at_mut(p * c);
        matmul(
            faer::MatMut::from_column_major_slice_mut(&mut *gw, c, p),
            Accum::Replace,
            z.as_ref(),
            self.x,
            1.0,
            Par::Seq,
        );
        let mut penalty = 0.0;
        for (g, &wv) in gw.iter_mut().zip(wt) {
            *g += self.lambda * wv;
            penalty += wv * wv;
        }
        gb.fill(0.0);
        for i in 0..m {
            gb.iter_mut()
                .zip(z.col_as_slice(i))
                .for_each(|(g, v)| *g += v);
        }
        loss * inv_m + 0.5 * self.lambda * penalty
    }
}

/// `eᵗ` for `t ≤ 0`, to ~2 ulp: `t = k·ln 2 + r` with `|r| ≤ ln 2 / 2`, a degree-13 Taylor
/// polynomial for `eʳ` (truncation below 1e-17) and `2ᵏ` from the exponent bits; 0 below −700,
/// where the term is under 1e-304 of the largest (which is 1) and adds nothing to the sum.
///
/// Why not `f64::exp`: measured on this project's 2-core machine, glibc's `exp` in the probe's
/// softmax loop (between faer's AVX products) cost ~80–100 ns a call against ~6 ns in a
/// loop of its own, and was half of the probe's time; this version halved the probe's time.
fn exp_nonpositive(t: f64) -> f64 {
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    if t <= -700.0 {
        return 0.0;
    }
    let k = (t * std::f64::consts::LOG2_E).round();
    let r = (t - k * LN2_HI) - k * LN2_LO;
    let mut p = 1.0;
    for i in (1..=13).rev() {
        p = 1.0 + p * r / f64::from(i);
    }
    // k ∈ [−1010, 0], so the biased exponent k + 1023 is a normal one.
    p * f64::from_bits(((k as i64 + 1023) as u64) << 52)
}

/// `Wᵀ·Xᵀ` (`C × m`) for `xt` = `Xᵀ` (`dim × m`) and `wt` = `Wᵀ` (`C × dim`, column-major).
fn logits(xt: MatRef<'_, f64>, wt: &[f64], c: usize) -> Mat<f64> {
    let mut z = Mat::<f64>::zeros(c, xt.ncols());
    matmul(
        z.as_mut(),
        Accum::Replace,
        MatRef::from_column_major_slice(wt, c, xt.nrows()),
        xt,
        1.0,
        Par::Seq,
    );
    z
}

/// The share of samples (columns of `xt` = `Xᵀ`) whose largest logit is at their label.
fn accuracy(xt: MatRef<'_, f64>, y: &[usize], theta: &[f64], c: usize) -> f64 {
    let p = xt.nrows();
    let b = &theta[p * c..];
    let z = logits(xt, &theta[..p * c], c);
    let correct = (0..xt.ncols())
        .filter(|&i| {
            let zi = z.col_as_slice(i);
            let mut best = 0;
            for k in 1..c {
                if zi[k] + b[k] > zi[best] + b[best] {
                    best = k;
                }
            }
            best == y[i]
        })
        .count();
    correct as f64 / xt.ncols() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numerics::dynamics::testing::Gen;
    use crate::numerics::scores::ScoresError;

    fn blobs(g: &mut Gen, c: usize, per: usize, dim: usize, sep: f64) -> (Vec<f32>, Vec<i64>) {
        let mut x = Vec::new();
        let mut labels = Vec::new();
        for k in 0..c {
            for _ in 0..per {
                x.extend((0..dim).map(|j| {
                    let centre = if j == k { sep } else { 0.0 };
                    (centre + g.normal()) as f32
                }));
                labels.push(k as i64);
            }
        }
        (x, labels)
    }

    #[test]
    fn probe_separates_well_separated_blobs() {
        let mut g = Gen::new(11);
        let (x, labels) = blobs(&mut g, 5, 41, 20, 12.0);
        let r = linear_probe(&x, 205, 20, &labels, 3).expect("probe");
        assert_eq!((r.n_train, r.n_test), (100, 105));
        assert_eq!(r.accuracy, 1.0);
        assert_eq!(r.train_accuracy, 1.0);
    }

    #[test]
    fn probe_reaches_the_bayes_accuracy_of_overlapping_classes() {
        // Two 1-D Gaussians at ±1 with unit variance: the best classifier (threshold 0) is right
        // with probability Φ(1) = 0.8413; a fitted linear probe must get close on 2000 test
        // samples (standard error ≈ 0.008).
        let mut g = Gen::new(12);
        let n = 4000;
        let labels: Vec<i64> = (0..n as i64).map(|i| i % 2).collect();
        let x: Vec<f32> = labels
            .iter()
            .map(|&l| (if l == 0 { -1.0 } else { 1.0 } + g.normal()) as f32)
            .collect();
        let r = linear_probe(&x, n, 1, &labels, 0).expect("probe");
        assert!((r.accuracy - 0.8413).abs() < 0.03, "{r:?}");
    }

    #[test]
    fn probe_is_at_chance_on_random_labels_and_reproducible() {
        let mut g = Gen::new(13);
        let (n, dim) = (600, 50);
        let x = g.matrix(n, dim);
        let labels: Vec<i64> = (0..n).map(|_| g.0.below(10) as i64).collect();
        let r = linear_probe(&x, n, dim, &labels, 7).expect("probe");
        assert!(r.accuracy < 0.5, "{r:?}");
        // 300 samples, 510 parameters: even with the L2 penalty the training half is fitted
        // far better than chance (about 0.6).
        assert!(r.train_accuracy > 0.4, "{r:?}");
        let again = linear_probe(&x, n, dim, &labels, 7).expect("probe");
        assert_eq!(r, again);
        // The split is stratified and depends on the seed.
        let (class_of, _) = dense_ids(&labels);
        let (tr7, te7) = stratified_split(&class_of, 10, 7);
        let (tr8, _) = stratified_split(&class_of, 10, 8);
        assert_ne!(tr7, tr8);
        assert_eq!(tr7.len() + te7.len(), n);
        for k in 0..10 {
            let nk = class_of.iter().filter(|&&c| c == k).count();
            let in_train = tr7.iter().filter(|&&i| class_of[i] == k).count();
            assert_eq!(in_train, nk / 2);
        }
    }

    #[test]
    fn exp_nonpositive_matches_std() {
        for i in 0..7000 {
            let t = -f64::from(i) * 0.1 + 1e-3 * f64::from(i % 7);
            let t = t.min(0.0);
            let (got, want) = (exp_nonpositive(t), t.exp());
            assert!(
                (got - want).abs() <= 4.0 * f64::EPSILON * want,
                "exp({t}): {got} vs {want}"
            );
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-800.0), 0.0);
        assert_eq!(exp_nonpositive(f64::NEG_INFINITY), 0.0);
    }

    #[test]
    fn probe_input_errors() {
        let x = [0f32, 1.0, 2.0, 3.0];
        assert!(matches!(
            linear_probe(&x, 4, 1, &[0, 1, 0], 0),
            Err(DynamicsError::LabelCount { labels: 3, n: 4 })
        ));
        assert!(matches!(
            linear_probe(&x, 4, 1, &[0, 0, 0, 0], 0),
            Err(DynamicsError::TooFewClasses { found: 1 })
        ));
        // Every class has one sample: nothing to train on.
        assert!(matches!(
            linear_probe(&x, 4, 1, &[0, 1, 2, 3], 0),
            Err(DynamicsError::EmptySplit {
                n_train: 0,
                n_test: 4
            })
        ));
        let bad = [0f32, f32::NAN, 2.0, 3.0];
        assert!(matches!(
            linear_probe(&bad, 4, 1, &[0, 1, 0, 1], 0),
            Err(DynamicsError::Scores(ScoresError::NonFinite { row: 1, .. }))
        ));
        assert!(matches!(
            linear_probe(&x, 2, 1, &[0, 1], 0),
            Err(DynamicsError::Scores(ScoresError::Shape { .. }))
        ));
    }
}
