//! 2-D t-SNE maps of per-image score vectors, for pictures.
//!
//! Barnes-Hut t-SNE (θ = 0.5) from the `bhtsne` crate (0.7), set up as scikit-learn's
//! `TSNE(perplexity=30, learning_rate="auto", angle=0.5, max_iter=1000)`: early exaggeration
//! 12 for the first 250 epochs, momentum 0.5 then 0.8, Euclidean input distances, on at most
//! [`TsneParams::max_points`] rows picked by a deterministic class-stratified subsample.
//!
//! Four things differ from using `bhtsne` as it comes:
//!
//! * **Learning rate.** scikit-learn's `"auto"` is `max(N / 12 / 4, 50)`, but its gradient
//!   carries the factor 4 of the t-SNE gradient; `bhtsne`'s gradient (`pos − neg / Z`), like
//!   van der Maaten's original code, does not. The same step in `bhtsne`'s units is
//!   `max(N / 12, 200)`, which is what is passed. `bhtsne`'s own default, `max(N / 48, 50)`,
//!   copies scikit-learn's formula without the 4 and so takes steps four times smaller.
//! * **f64.** The fit runs in f64 (`tSNE<f64, …>`). In f32, `bhtsne`'s bandwidth search
//!   evaluates `exp(−β d²)` without subtracting the nearest distance, and in high dimensions,
//!   where neighbour distances bunch together, those terms underflow f32 and P comes out
//!   wrong. Exact KL divergence of the final map (computed with scikit-learn's P), n = 2000,
//!   10 classes, 1000 epochs: dim 250 — f32 2.13, f64 1.55, scikit-learn 1.42; dim 50 — f32
//!   1.68, f64 1.68, scikit-learn 1.55. f64 costs no measurable time here.
//! * **Seeding.** `bhtsne` draws its random initial embedding from `rand::rng()`, the
//!   thread-local generator seeded by the OS, and has no way to seed it. It does accept an
//!   explicit initial embedding, so that is drawn here, N(0, 1e-4²) as `bhtsne`'s and
//!   scikit-learn's random init, from a SplitMix64 stream seeded with [`TsneParams::seed`].
//! * **One worker thread.** `bhtsne` re-centres the embedding every epoch with a rayon
//!   fold/reduce and normalises P with a rayon sum; how those floating-point sums are grouped
//!   depends on work stealing, so on a multi-threaded pool two runs with the same seed and the
//!   same initial embedding drift apart (measured at n = 2000: all 4000 coordinates differed,
//!   by up to 5.8). The fit therefore runs on a private one-thread rayon pool, which makes it
//!   bit-for-bit repeatable on a given machine, at about 1.5× the time of two threads
//!   (1.9 s against 1.3 s at n = 2000, dim = 50).
//!
//! Timings (2 shared cores, release): n = 2000 — dim 50: 2.0 s, dim 250: 3.0 s; scikit-learn
//! 1.9.1 on the same data: 5.8 s / 18.8 s with its default PCA init, 24.6 s / 24.6 s with
//! random init.

use cnnu_run::stratified::{Within, stratified};

use crate::numerics::rng::SplitMix64;
use crate::numerics::scores::ScoresError;
use bhtsne::tSNE;

/// Settings for [`tsne`].
#[derive(Debug, Clone, PartialEq)]
pub struct TsneParams {
    /// Effective number of neighbours each point's Gaussian is tuned to (scikit-learn's
    /// `perplexity`). The embedded sample needs more than `3 × perplexity` rows.
    pub perplexity: f32,
    /// Most rows to embed; larger inputs are subsampled by [`stratified_sample`].
    pub max_points: usize,
    /// Seed of the initial embedding; the same seed gives the same picture.
    pub seed: u64,
    /// Gradient-descent iterations (scikit-learn's `max_iter`).
    pub epochs: usize,
}

impl Default for TsneParams {
    /// perplexity 30, 2000 points, seed 0, 1000 epochs (scikit-learn's defaults where it has
    /// them).
    fn default() -> Self {
        Self {
            perplexity: 30.0,
            max_points: 2000,
            seed: 0,
            epochs: 1000,
        }
    }
}

/// A 2-D map of a subset of the rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// Which input rows were embedded, ascending.
    pub indices: Vec<usize>,
    /// Map coordinates, one per entry of `indices`.
    pub coords: Vec<[f32; 2]>,
}

/// Why [`tsne`] refused its input or gave up.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The score matrix is malformed (shape, no columns, NaN or infinity).
    #[error(transparent)]
    Scores(#[from] ScoresError),
    /// There must be one label per row.
    #[error("{labels} labels for {n} rows")]
    Labels {
        /// Number of labels given.
        labels: usize,
        /// Number of rows.
        n: usize,
    },
    /// The perplexity is not a positive finite number.
    #[error("perplexity must be positive and finite, got {0}")]
    Perplexity(f32),
    /// The sample is too small for the perplexity (`bhtsne` needs `points - 1 >= ⌊3 p⌋`).
    #[error("{points} points are too few for perplexity {perplexity}: need at least {needed}")]
    TooFewPoints {
        /// Rows that would be embedded.
        points: usize,
        /// The requested perplexity.
        perplexity: f32,
        /// Rows needed for that perplexity.
        needed: usize,
    },
    /// The private one-thread pool could not be started.
    #[error("could not start the t-SNE worker thread: {0}")]
    ThreadPool(#[from] rayon::ThreadPoolBuildError),
    /// The optimisation produced a non-finite coordinate.
    #[error("t-SNE diverged: non-finite coordinate for row {row}")]
    Diverged {
        /// Input row whose coordinate is not finite.
        row: usize,
    },
}

/// Picks at most `max_points` row indices so that every class keeps its share of the rows,
/// evenly spaced within each class ([`cnnu_run::stratified`] with [`Within::Spread`]).
/// Deterministic and sorted; all rows when there are at most `max_points`.
pub fn stratified_sample(labels: &[i64], max_points: usize) -> Vec<usize> {
    stratified(labels, max_points, Within::Spread)
}

/// Embeds (a class-stratified subsample of) the rows of `scores` (row-major `[n, dim]`) in 2-D
/// with Barnes-Hut t-SNE (θ = 0.5). `labels` (one per row) only steer the subsample.
///
/// Deterministic for a given `params.seed` on a given machine (see the module docs). Needs
/// more than `3 × perplexity` embedded rows; NaN or infinite scores are rejected.
pub fn tsne(
    scores: &[f32],
    n: usize,
    dim: usize,
    labels: &[i64],
    params: &TsneParams,
) -> Result<Embedding, EmbedError> {
    crate::numerics::scores::check(scores, n, dim)?;
    if labels.len() != n {
        return Err(EmbedError::Labels {
            labels: labels.len(),
            n,
        });
    }
    if !(params.perplexity.is_finite() && params.perplexity > 0.0) {
        return Err(EmbedError::Perplexity(params.perplexity));
    }
    let indices = stratified_sample(labels, params.max_points);
    let points = indices.len();
    // bhtsne asks the VP tree for ⌊3 p⌋ neighbours of every point (and panics below
    // 3 ⌊p⌋ + 1 points), so each point needs ⌊3 p⌋ others.
    let needed = (3.0 * f64::from(params.perplexity)).floor() as usize + 1;
    if points < needed.max(2) {
        return Err(EmbedError::TooFewPoints {
            points,
            perplexity: params.perplexity,
            needed: needed.max(2),
        });
    }

    let x = scaled_rows(scores, dim, &indices);
    let rows: Vec<&[f32]> = x.chunks_exact(dim).collect();
    let init = initial_embedding(points, params.seed);
    // scikit-learn's "auto" step, in bhtsne's gradient units (module docs).
    let learning_rate = (points as f64 / 12.0).max(200.0);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let flat = pool.install(|| {
        let mut model: tSNE<f64, &[f32], 2> = tSNE::new(&rows);
        model
            .perplexity(f64::from(params.perplexity))
            .epochs(params.epochs)
            .learning_rate(learning_rate)
            .initial_embedding(init)
            .barnes_hut(0.5, |a, b| distance(a, b));
        model.embedding()
    });
    let coords: Vec<[f32; 2]> = flat
        .chunks_exact(2)
        .map(|c| [c[0] as f32, c[1] as f32])
        .collect();
    if let Some(k) = coords
        .iter()
        .position(|c| !(c[0].is_finite() && c[1].is_finite()))
    {
        return Err(EmbedError::Diverged { row: indices[k] });
    }
    Ok(Embedding { indices, coords })
}

/// The selected rows, scaled by a power of two (exact, so every distance scales by the same
/// factor) so that the largest magnitude is below 1 and the bandwidth search starts near its
/// answer.
fn scaled_rows(scores: &[f32], dim: usize, indices: &[usize]) -> Vec<f32> {
    let row = |i: usize| &scores[i * dim..(i + 1) * dim];
    let max_abs = indices
        .iter()
        .flat_map(|&i| row(i).iter())
        .fold(0f32, |m, v| m.max(v.abs()));
    let scale = if max_abs > 0.0 {
        (2f64).powi(-(f64::from(max_abs).log2().floor() as i32 + 1))
    } else {
        1.0
    };
    indices
        .iter()
        .flat_map(|&i| row(i).iter().map(move |&v| (f64::from(v) * scale) as f32))
        .collect()
}

/// Euclidean distance accumulated in f64, the precision the fit runs in.
fn distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let t = f64::from(x) - f64::from(y);
            t * t
        })
        .sum::<f64>()
        .sqrt()
}

/// `points × 2` draws from N(0, 1e-4²), row-major, from SplitMix64 seeded with `seed`.
fn initial_embedding(points: usize, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(2 * points);
    for _ in 0..points {
        // Box-Muller: one pair of normals per point; (0, 1] keeps the logarithm finite.
        let (u, v) = (rng.unit_nonzero(), rng.unit_nonzero());
        let r = (-2.0 * u.ln()).sqrt() * 1e-4;
        let t = std::f64::consts::TAU * v;
        out.push(r * t.cos());
        out.push(r * t.sin());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `classes` blobs of `per_class` rows in `dim` dimensions, rows interleaved by class:
    /// centres on a spread-out lattice (±8 per coordinate), unit-ish spread.
    fn blobs(classes: usize, per_class: usize, dim: usize) -> (Vec<f32>, Vec<i64>) {
        let mut state: u64 = 7;
        let mut uniform = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 40) as f32 / (1u32 << 24) as f32
        };
        let centres: Vec<Vec<f32>> = (0..classes)
            .map(|_| {
                (0..dim)
                    .map(|_| if uniform() < 0.5 { -8.0 } else { 8.0 })
                    .collect()
            })
            .collect();
        let mut x = Vec::with_capacity(classes * per_class * dim);
        let mut labels = Vec::with_capacity(classes * per_class);
        for i in 0..classes * per_class {
            let c = i % classes;
            labels.push(c as i64);
            for centre in &centres[c] {
                x.push(centre + uniform() + uniform() + uniform() + uniform() - 2.0);
            }
        }
        (x, labels)
    }

    fn fast() -> TsneParams {
        TsneParams {
            epochs: 500,
            ..TsneParams::default()
        }
    }

    #[test]
    fn same_seed_same_picture() {
        let (x, labels) = blobs(3, 60, 10);
        let a = tsne(&x, 180, 10, &labels, &fast()).expect("valid input");
        let b = tsne(&x, 180, 10, &labels, &fast()).expect("valid input");
        assert_eq!(a, b);
        let other = TsneParams { seed: 1, ..fast() };
        let c = tsne(&x, 180, 10, &labels, &other).expect("valid input");
        assert_eq!(c.indices, a.indices);
        assert_ne!(c.coords, a.coords);
    }

    #[test]
    fn separated_blobs_stay_separated() {
        let (x, labels) = blobs(4, 75, 20);
        let e = tsne(&x, 300, 20, &labels, &TsneParams::default()).expect("valid input");
        assert_eq!(e.indices, (0..300).collect::<Vec<_>>());
        let (mut intra, mut inter) = ((0f64, 0usize), (0f64, 0usize));
        for i in 0..300 {
            for j in i + 1..300 {
                let (a, b) = (e.coords[i], e.coords[j]);
                let d = f64::from((a[0] - b[0]).hypot(a[1] - b[1]));
                let acc = if labels[i] == labels[j] {
                    &mut intra
                } else {
                    &mut inter
                };
                acc.0 += d;
                acc.1 += 1;
            }
        }
        let (intra, inter) = (intra.0 / intra.1 as f64, inter.0 / inter.1 as f64);
        assert!(
            intra < 0.2 * inter,
            "mean intra-class {intra} vs inter-class {inter}"
        );
    }

    #[test]
    fn subsample_is_embedded_when_input_is_large() {
        let (x, labels) = blobs(3, 200, 8);
        let params = TsneParams {
            max_points: 150,
            ..fast()
        };
        let e = tsne(&x, 600, 8, &labels, &params).expect("valid input");
        assert_eq!(e.indices, stratified_sample(&labels, 150));
        assert_eq!(e.coords.len(), 150);
        for c in 0..3 {
            assert_eq!(e.indices.iter().filter(|&&i| labels[i] == c).count(), 50);
        }
    }

    #[test]
    fn stratified_sample_by_hand() {
        // Class 0 holds rows 0 2 3 6 7 9, class 1 rows 1 5 8, class 2 row 4. Five of ten:
        // shares 3.0, 1.5, 0.5 -> floors 3, 1, 0; the one row left goes to the largest
        // remainder, a tie of 0.5 between classes 1 and 2 that the smaller label wins.
        // Class 0 takes its rows at positions (2j+1)·6/6 = 1, 3, 5 -> rows 2, 6, 9;
        // class 1 at (2j+1)·3/4 = 0, 2 -> rows 1, 8.
        let labels = [0, 1, 0, 0, 2, 1, 0, 0, 1, 0];
        assert_eq!(stratified_sample(&labels, 5), vec![1, 2, 6, 8, 9]);
        // Nothing to drop.
        assert_eq!(stratified_sample(&labels, 10), (0..10).collect::<Vec<_>>());
        assert_eq!(stratified_sample(&labels, 50), (0..10).collect::<Vec<_>>());
        assert!(stratified_sample(&labels, 0).is_empty());
        // Noise (-1) is a class like the others: 2 of 4 noise rows, 1 of 2 class-7 rows.
        assert_eq!(stratified_sample(&[-1, 7, -1, -1, 7, -1], 3), vec![2, 4, 5]);
    }

    #[test]
    fn stratified_sample_keeps_proportions() {
        // 1000 rows in classes of 500, 300, 150, 49, 1 (in a scrambled order), 97 kept.
        let sizes = [500usize, 300, 150, 49, 1];
        let mut labels: Vec<i64> = sizes
            .iter()
            .enumerate()
            .flat_map(|(c, &s)| std::iter::repeat_n(c as i64, s))
            .collect();
        for i in 0..labels.len() {
            labels.swap(i, (i * 7919) % 1000);
        }
        let picked = stratified_sample(&labels, 97);
        assert_eq!(picked.len(), 97);
        assert!(picked.windows(2).all(|w| w[0] < w[1]));
        for (c, &s) in sizes.iter().enumerate() {
            let got = picked.iter().filter(|&&i| labels[i] == c as i64).count() as f64;
            assert!(
                (got - 97.0 * s as f64 / 1000.0).abs() < 1.0,
                "class {c}: {got}"
            );
        }
        assert_eq!(stratified_sample(&labels, 97), picked);
    }

    #[test]
    fn bad_input_is_rejected() {
        let (mut x, labels) = blobs(2, 60, 4);
        let p = fast();
        assert!(matches!(
            tsne(&x[1..], 120, 4, &labels, &p),
            Err(EmbedError::Scores(ScoresError::Shape { .. }))
        ));
        assert!(matches!(
            tsne(&[], 120, 0, &labels, &p),
            Err(EmbedError::Scores(ScoresError::ZeroDim))
        ));
        assert!(matches!(
            tsne(&x, 120, 4, &labels[1..], &p),
            Err(EmbedError::Labels { .. })
        ));
        for perplexity in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let bad = TsneParams {
                perplexity,
                ..fast()
            };
            assert!(matches!(
                tsne(&x, 120, 4, &labels, &bad),
                Err(EmbedError::Perplexity(_))
            ));
        }
        // 90 points are one short of perplexity 30 (bhtsne would panic).
        let small = TsneParams {
            max_points: 90,
            ..fast()
        };
        assert!(matches!(
            tsne(&x, 120, 4, &labels, &small),
            Err(EmbedError::TooFewPoints { needed: 91, .. })
        ));
        x[5] = f32::NAN;
        assert!(matches!(
            tsne(&x, 120, 4, &labels, &p),
            Err(EmbedError::Scores(ScoresError::NonFinite {
                row: 1,
                col: 1,
                ..
            }))
        ));
    }

    #[test]
    fn duplicate_rows_do_not_break_it() {
        // Half the rows are exact zeros, as all-zero ReLU activations give.
        let (mut x, labels) = blobs(2, 60, 6);
        x[..60 * 6].fill(0.0);
        let e = tsne(&x, 120, 6, &labels, &fast()).expect("valid input");
        assert!(
            e.coords
                .iter()
                .all(|c| c[0].is_finite() && c[1].is_finite())
        );
        // Every row the same point: no structure, but still no panic and no NaN.
        let same = vec![0.5f32; 120 * 6];
        let e = tsne(&same, 120, 6, &labels, &fast()).expect("valid input");
        assert!(
            e.coords
                .iter()
                .all(|c| c[0].is_finite() && c[1].is_finite())
        );
    }
}
