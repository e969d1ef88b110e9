//! Eval-mode BatchNorm (running statistics) as one parallel pass over the input.
//!
//! Why by hand: Burn's `batch_norm` is four broadcast tensor operations (subtract the mean,
//! divide by the standard deviation, multiply by gamma, add beta), four passes over every
//! activation and four allocations, on every BatchNorm of every evaluation and sampling
//! forward. Here each `(image, channel)` plane is done in one loop with the same four f32
//! operations in the same order, so the result is Burn's bit for bit (tested). Off flex, under
//! autodiff, or for a non-f32 tensor it calls Burn's `batch_norm`.

use burn::prelude::*;
use rayon::prelude::*;

/// `y = (x − mean) / sqrt(var + eps) · gamma + beta` per channel of `x [N, C, H·W]`, in place.
pub fn batch_norm_eval_in_place(
    x: &mut [f32],
    channels: usize,
    pixels: usize,
    [gamma, beta, mean, var]: [&[f32]; 4],
    eps: f32,
) {
    let std: Vec<f32> = var.iter().map(|v| (v + eps).sqrt()).collect();
    x.par_chunks_mut(pixels.max(1))
        .enumerate()
        .for_each(|(plane, values)| {
            let c = plane % channels;
            let (m, s, g, b) = (mean[c], std[c], gamma[c], beta[c]);
            for v in values {
                *v = (*v - m) / s * g + b;
            }
        });
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
            let dims @ [_, channels, h, w] = x.dims();
            let [gamma, beta, mean, var] = [gamma, beta, mean, var].map(|t| {
                t.into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .expect("f32 statistics")
            });
            // Written in place when the input is a dense tensor nobody else holds.
            let mut x = FlexMut::take(x);
            batch_norm_eval_in_place(
                x.values_mut(),
                channels,
                h * w,
                [&gamma, &beta, &mean, &var],
                eps as f32,
            );
            return x.into_tensor(dims);
        }
    }
    burn::tensor::module::batch_norm(x, gamma, beta, mean, var, eps)
}
