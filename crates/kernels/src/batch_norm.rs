//! Eval-mode BatchNorm (running statistics) as one parallel pass over the input, or as the
//! tail of the convolution before it ([`EvalTail`]: BatchNorm, residual add, ReLU on each
//! output plane while it is in cache); and train-mode BatchNorm's forward and backward.
//!
//! Why by hand: Burn's `batch_norm` is four broadcast tensor operations (subtract the mean,
//! divide by the standard deviation, multiply by gamma, add beta), four passes over every
//! activation and four allocations, on every BatchNorm of every evaluation and sampling
//! forward. Here each `(image, channel)` plane is done in one loop with the same four f32
//! operations in the same order, so the result is Burn's bit for bit (tested). Off flex, under
//! autodiff, or for a non-f32 tensor it calls Burn's `batch_norm`.

use burn::prelude::*;
use rayon::prelude::*;

use multiversion::multiversion;

/// Eval BatchNorm's per-channel `[mean, σ, gamma, beta]`, `σ = sqrt(var + eps)` in f32 as Burn
/// computes it.
pub fn eval_constants([gamma, beta, mean, var]: [&[f32]; 4], eps: f32) -> Vec<[f32; 4]> {
    (0..mean.len())
        .map(|c| [mean[c], (var[c] + eps).sqrt(), gamma[c], beta[c]])
        .collect()
}

/// What follows a convolution in a ResNet at eval time: BatchNorm with running statistics,
/// then optionally a residual added and a ReLU, each with Burn's f32 arithmetic, so the result
/// is bit for bit that of the separate layers.
///
/// Why one type: applied to a plane while the convolution's output is still in cache, the
/// three layers cost one pass instead of three passes and three allocations over memory.
#[derive(Debug, Clone, Copy)]
pub struct EvalTail<'a> {
    /// Per output channel `[mean, σ, gamma, beta]` (see [`eval_constants`]).
    pub norm: &'a [[f32; 4]],
    /// A residual to add after the norm, laid out as the output `[N, C, H·W]`.
    pub residual: Option<&'a [f32]>,
    /// Whether a ReLU comes last.
    pub relu: bool,
}

impl<'a> EvalTail<'a> {
    /// BatchNorm alone.
    pub fn norm(norm: &'a [[f32; 4]]) -> Self {
        Self {
            norm,
            residual: None,
            relu: false,
        }
    }

    /// Applies the tail in place to `values`, plane `plane` (`image · C + channel`) of the
    /// output.
    pub fn apply_plane(&self, values: &mut [f32], plane: usize) {
        let r = self
            .residual
            .map(|r| &r[plane * values.len()..][..values.len()]);
        finish_plane(values, self.norm[plane % self.norm.len()], r, self.relu)
    }

    /// Applies the tail to the whole output `[N, C, pixels]` in place, one task per plane.
    pub fn apply(&self, out: &mut [f32], pixels: usize) {
        out.par_chunks_mut(pixels.max(1))
            .enumerate()
            .for_each(|(plane, values)| self.apply_plane(values, plane));
    }
}

/// `v = relu?((v − mean) / σ · gamma + beta + r?)` over one plane.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn finish_plane(values: &mut [f32], [m, s, g, b]: [f32; 4], residual: Option<&[f32]>, relu: bool) {
    // Burn's (and PyTorch's) ReLU: NaN passes, everything not above zero becomes +0.
    let rectify = |v: f32| if v.is_nan() || v > 0.0 { v } else { 0.0 };
    match (residual, relu) {
        (None, false) => values.iter_mut().for_each(|v| *v = (*v - m) / s * g + b),
        (None, true) => values
            .iter_mut()
            .for_each(|v| *v = rectify((*v - m) / s * g + b)),
        (Some(r), false) => {
            for (v, &r) in values.iter_mut().zip(r) {
                *v = (*v - m) / s * g + b + r;
            }
        }
        (Some(r), true) => {
            for (v, &r) in values.iter_mut().zip(r) {
                *v = rectify((*v - m) / s * g + b + r);
            }
        }
    }
}

/// [`eval_constants`] of the statistics as tensors.
#[cfg(feature = "flex")]
pub(crate) fn eval_norm(stats: [Tensor<1>; 4], eps: f64) -> Vec<[f32; 4]> {
    let [gamma, beta, mean, var] = stats.map(|t| {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("converted to f32")
    });
    eval_constants([&gamma, &beta, &mean, &var], eps as f32)
}

/// Eval-mode BatchNorm of `x [N, C, H, W]` with the given statistics.
pub fn batch_norm_eval(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    mean: Tensor<1>,
    var: Tensor<1>,
    eps: f64,
) -> Tensor<4> {
    #[cfg(feature = "flex")]
    {
        use crate::glue::{FlexMut, is_flex_f32};
        let stats = [&gamma, &beta, &mean, &var];
        if is_flex_f32(&x, false) && stats.iter().all(|t| is_flex_f32(t, false)) {
            let dims @ [_, _, h, w] = x.dims();
            let norm = eval_norm([gamma, beta, mean, var], eps);
            // Written in place when the input is a dense tensor nobody else holds.
            let mut x = FlexMut::take(x);
            EvalTail::norm(&norm).apply(x.values_mut(), h * w);
            return x.into_tensor(dims);
        }
    }
    burn::tensor::module::batch_norm(x, gamma, beta, mean, var, eps)
}

/// What train-mode BatchNorm's forward gives: the output and the batch statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainForward {
    /// `(x − mean) · gamma / sqrt(var + eps) + beta`, laid out as the input.
    pub output: Vec<f32>,
    /// Per-channel batch mean.
    pub mean: Vec<f32>,
    /// Per-channel biased (population) batch variance, without eps.
    pub variance: Vec<f32>,
}

/// The gradients of train-mode BatchNorm.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainBackward {
    /// Gradient of the input, laid out as the input.
    pub x: Vec<f32>,
    /// Gradient of gamma, per channel.
    pub gamma: Vec<f32>,
    /// Gradient of beta, per channel.
    pub beta: Vec<f32>,
}

/// The layout of a BatchNorm input `[N, C, H·W]`, row-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchNormShape {
    /// Images in the batch.
    pub batch: usize,
    /// Channels, each normalised on its own.
    pub channels: usize,
    /// Pixels per channel plane (H·W).
    pub pixels: usize,
}

impl BatchNormShape {
    /// Values per channel: the count the statistics are taken over.
    pub fn count(&self) -> usize {
        self.batch * self.pixels
    }

    /// The planes of channel `c` in `x`, one per image.
    fn planes<'a>(&self, x: &'a [f32], c: usize) -> impl Iterator<Item = &'a [f32]> + 'a {
        let (pixels, stride) = (self.pixels, self.channels * self.pixels);
        (0..self.batch).map(move |n| &x[n * stride + c * pixels..][..pixels])
    }
}

/// `Σ f(a_i, b_i)` in f64 with four running sums, so that the loop is not one long chain of
/// dependent additions; the order is fixed, so the result is the same run to run.
#[inline(always)]
fn sum_pairs(a: &[f32], b: &[f32], f: impl Fn(f64, f64) -> f64) -> f64 {
    let mut acc = [0.0f64; 4];
    let (a4, b4) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = a4
        .remainder()
        .iter()
        .zip(b4.remainder())
        .map(|(&x, &y)| f(x.into(), y.into()))
        .sum();
    for (x, y) in a4.zip(b4) {
        for i in 0..4 {
            acc[i] += f(x[i].into(), y[i].into());
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// `Σ v` over one plane, in f64.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn sum_plane(p: &[f32]) -> f64 {
    sum_pairs(p, p, |v, _| v)
}

/// `Σ (v − mean)²` over one plane, in f64.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn sum_squares(p: &[f32], mean: f64) -> f64 {
    sum_pairs(p, p, |v, _| (v - mean) * (v - mean))
}

/// `Σ (x − mean) · dy` over one plane, in f64.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn sum_centred_products(x: &[f32], dy: &[f32], mean: f64) -> f64 {
    sum_pairs(x, dy, |v, g| (v - mean) * g)
}

/// `out = (x − mean) · a + beta` over one plane, `[mean, a, beta]`.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn affine_plane(out: &mut [f32], x: &[f32], [m, a, b]: [f32; 3]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v - m) * a + b;
    }
}

/// `dx = (dy − mean(dy)) · s − (x − mean) · k` over one plane, `[s, k, mean(dy), mean]`.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn input_gradient_plane(dx: &mut [f32], x: &[f32], dy: &[f32], [s, k, g_mean, m]: [f32; 4]) {
    for ((d, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
        *d = (g - g_mean) * s - (v - m) * k;
    }
}

/// Train-mode BatchNorm forward of `x` (`shape`): the batch statistics of every channel
/// (accumulated in f64, the variance about the mean), then `y = (x − mean) · a + beta` with
/// `a = gamma / sqrt(var + eps)`.
///
/// Why by hand: Burn's default `batch_norm_train` is a dozen broadcast and transposed tensor
/// operations, each a pass and an allocation; here it is two passes over the input for the
/// statistics and one to write the output. Parallel over channels, then over images; every
/// sum has a fixed order, so the result is the same run to run.
pub fn batch_norm_train_forward(
    x: &[f32],
    shape: BatchNormShape,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
) -> TrainForward {
    let count = shape.count().max(1) as f64;
    let stats: Vec<(f64, f64)> = (0..shape.channels)
        .into_par_iter()
        .map(|c| {
            let sum: f64 = shape.planes(x, c).map(sum_plane).sum();
            let mean = sum / count;
            let squares: f64 = shape.planes(x, c).map(|p| sum_squares(p, mean)).sum();
            (mean, squares / count)
        })
        .collect();
    // y = (x − mean) · a + beta with a = gamma / σ: the difference first, so that a mean
    // large against the spread cancels exactly rather than in a folded offset.
    let affine: Vec<[f32; 3]> = stats
        .iter()
        .zip(gamma.iter().zip(beta))
        .map(|(&(mean, var), (&g, &b))| {
            [mean as f32, (f64::from(g) / (var + eps).sqrt()) as f32, b]
        })
        .collect();
    let mut output = vec![0.0f32; x.len()];
    let image = (shape.channels * shape.pixels).max(1);
    let pixels = shape.pixels.max(1);
    output
        .par_chunks_mut(image)
        .zip(x.par_chunks(image))
        .for_each(|(out, x)| {
            let planes = out.chunks_mut(pixels).zip(x.chunks(pixels));
            for ((out, x), &[m, a, b]) in planes.zip(&affine) {
                affine_plane(out, x, [m, a, b]);
            }
        });
    TrainForward {
        output,
        mean: stats.iter().map(|s| s.0 as f32).collect(),
        variance: stats.iter().map(|s| s.1 as f32).collect(),
    }
}

/// Train-mode BatchNorm backward: given the input `x`, the output gradient `dy`, gamma and
/// the forward's statistics, `dx = (dy − mean(dy) − x̂ · mean(dy · x̂)) · gamma / σ`,
/// `dgamma = Σ dy · x̂`, `dbeta = Σ dy` with `x̂ = (x − mean) / σ`, `σ = sqrt(var + eps)`, as
/// PyTorch's CPU kernel computes them (sums in f64). Two passes over `x` and `dy`.
pub fn batch_norm_train_backward(
    x: &[f32],
    dy: &[f32],
    shape: BatchNormShape,
    gamma: &[f32],
    [mean, variance]: [&[f32]; 2],
    eps: f64,
) -> TrainBackward {
    let count = shape.count().max(1) as f64;
    let sums: Vec<(f64, f64)> = (0..shape.channels)
        .into_par_iter()
        .map(|c| {
            let m = f64::from(mean[c]);
            let planes = shape.planes(x, c).zip(shape.planes(dy, c));
            planes.fold((0.0, 0.0), |(s, d), (x, dy)| {
                (s + sum_plane(dy), d + sum_centred_products(x, dy, m))
            })
        })
        .collect();
    // Per channel: dx = (dy − mean(dy)) · s − (x − mean) · k, the formula above with its
    // constants folded; x − mean stays a difference so that a large mean cancels exactly.
    let constants: Vec<[f32; 4]> = (0..shape.channels)
        .map(|c| {
            let inv_std = 1.0 / (f64::from(variance[c]) + eps).sqrt();
            let (sum, dot) = sums[c];
            let s = inv_std * f64::from(gamma[c]);
            let k = dot * inv_std * inv_std / count * s;
            [s as f32, k as f32, (sum / count) as f32, mean[c]]
        })
        .collect();
    let mut dx = vec![0.0f32; x.len()];
    let image = (shape.channels * shape.pixels).max(1);
    let pixels = shape.pixels.max(1);
    dx.par_chunks_mut(image)
        .zip(x.par_chunks(image).zip(dy.par_chunks(image)))
        .for_each(|(dx, (x, dy))| {
            let planes = dx
                .chunks_mut(pixels)
                .zip(x.chunks(pixels).zip(dy.chunks(pixels)));
            for ((dx, (x, dy)), &[s, k, g_mean, m]) in planes.zip(&constants) {
                input_gradient_plane(dx, x, dy, [s, k, g_mean, m]);
            }
        });
    TrainBackward {
        x: dx,
        gamma: (0..shape.channels)
            .map(|c| (sums[c].1 / (f64::from(variance[c]) + eps).sqrt()) as f32)
            .collect(),
        beta: sums.iter().map(|s| s.0 as f32).collect(),
    }
}

/// Train-mode BatchNorm of `x [N, C, ...]` with the batch's statistics: the output and the
/// detached batch mean and biased variance, as `burn::tensor::module::batch_norm_train`. On
/// flex under autodiff it runs [`batch_norm_train_forward`] with [`batch_norm_train_backward`]
/// as its backward node; elsewhere it is Burn's.
pub fn batch_norm_train<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> burn::tensor::module::BatchNormTrainOutput<D> {
    #[cfg(feature = "flex")]
    {
        use crate::glue::is_flex_f32;
        if is_flex_f32(&x, true) && is_flex_f32(&gamma, true) && is_flex_f32(&beta, true) {
            return crate::glue::batch_norm_train(x, gamma, beta, eps);
        }
    }
    burn::tensor::module::batch_norm_train(x, gamma, beta, eps)
}
