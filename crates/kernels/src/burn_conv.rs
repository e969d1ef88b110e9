//! The batch-wide convolution plugged into Burn: on the flex backend it runs
//! [`Conv2dPlan`], and under autodiff its backward is registered as a
//! custom node (by the crate's `glue` module, the one that knows Burn's internals).
//! Any other backend (wgpu, cuda, ndarray), an unsupported option (groups, dilation, bias,
//! asymmetric padding) or a non-f32 tensor takes Burn's own `conv2d`.

use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation;
use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;

use crate::batch_norm::batch_norm_eval;
#[cfg(feature = "flex")]
use crate::batch_norm::eval_norm;
#[cfg(feature = "flex")]
use crate::conv::{Conv2dPlan, Conv2dShape};

/// The convolution a `Conv2d` module computes, on the fast path where it applies.
pub fn conv2d_module(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    match fast_padding(conv) {
        Some(padding) => conv2d(x, conv.weight.val(), conv.stride, padding),
        None => conv.forward(x),
    }
}

/// `relu?(bn(conv(x)) + residual?)` with `bn` in eval mode (running statistics): on flex one
/// convolution whose output planes go through the BatchNorm, the residual and the ReLU while
/// still in cache ([`EvalTail`](crate::batch_norm::EvalTail)); elsewhere the separate Burn
/// operations. Bit for bit the separate layers' result either way.
pub fn conv2d_bn_eval(
    conv: &Conv2d,
    bn: &BatchNorm,
    x: Tensor<4>,
    residual: Option<Tensor<4>>,
    relu: bool,
) -> Tensor<4> {
    let [gamma, beta] = [&bn.gamma, &bn.beta].map(|p| p.val());
    let [mean, var] = [&bn.running_mean, &bn.running_var].map(|s| s.value());
    #[cfg(feature = "flex")]
    if let Some(plan) = fused_plan(conv, &x, [&gamma, &beta, &mean, &var], residual.as_ref()) {
        let norm = eval_norm([gamma, beta, mean, var], bn.epsilon);
        return crate::glue::conv2d_then(plan, x, conv.weight.val(), &norm, residual, relu);
    }
    let y = batch_norm_eval(conv2d_module(conv, x), gamma, beta, mean, var, bn.epsilon);
    let y = match residual {
        Some(r) => y + r,
        None => y,
    };
    if relu { activation::relu(y) } else { y }
}

/// The plan for [`conv2d_bn_eval`]'s fused path: plain f32 flex tensors throughout, one
/// statistic per output channel and a residual of the output's shape. Anything else (a
/// residual Burn would broadcast, mismatched statistics) takes the separate Burn operations,
/// which report it in their own words.
#[cfg(feature = "flex")]
fn fused_plan(
    conv: &Conv2d,
    x: &Tensor<4>,
    stats: [&Tensor<1>; 4],
    residual: Option<&Tensor<4>>,
) -> Option<Conv2dPlan> {
    let padding = fast_padding(conv)?;
    let plan = flex_plan(x, &conv.weight.val(), conv.stride, padding, false)?;
    let s = plan.shape();
    let [ho, wo] = plan.output();
    let stats_fit = stats
        .iter()
        .all(|t| crate::glue::is_flex_f32(t, false) && t.dims() == [s.out_channels]);
    let residual_fits = residual.is_none_or(|r| {
        crate::glue::is_flex_f32(r, false) && r.dims() == [s.batch, s.out_channels, ho, wo]
    });
    (stats_fit && residual_fits).then_some(plan)
}

/// The symmetric padding of `conv` when the fast path can compute it: groups 1, dilation 1,
/// no bias.
fn fast_padding(conv: &Conv2d) -> Option<[usize; 2]> {
    let padding = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            Some([top, left])
        }
        PaddingConfig2d::Valid => Some([0, 0]),
        _ => None,
    };
    padding.filter(|_| conv.bias.is_none() && conv.groups == 1 && conv.dilation == [1, 1])
}

/// `conv2d(x, weight)` with groups 1, dilation 1, no bias and symmetric zero padding.
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    stride: [usize; 2],
    padding: [usize; 2],
) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if let Some(plan) = [false, true]
        .into_iter()
        .find_map(|autodiff| flex_plan(&x, &weight, stride, padding, autodiff))
    {
        return crate::glue::conv2d(plan, x, weight);
    }
    burn_conv2d(
        x,
        weight,
        None,
        ConvOptions::new(stride, padding, [1, 1], 1),
    )
}

/// The plan for `x` and `weight` when both are f32 flex tensors in the mode `autodiff` asks
/// for ([`is_flex_f32`](crate::glue::is_flex_f32)) and the plan accepts the shape; a shape it
/// refuses goes to Burn, which reports it in its own words.
#[cfg(feature = "flex")]
fn flex_plan(
    x: &Tensor<4>,
    weight: &Tensor<4>,
    stride: [usize; 2],
    padding: [usize; 2],
    autodiff: bool,
) -> Option<Conv2dPlan> {
    if !(crate::glue::is_flex_f32(x, autodiff) && crate::glue::is_flex_f32(weight, autodiff)) {
        return None;
    }
    let [batch, in_channels, h, w] = x.dims();
    let [out_channels, weight_in, kh, kw] = weight.dims();
    let shape = Conv2dShape {
        batch,
        in_channels,
        input: [h, w],
        out_channels,
        kernel: [kh, kw],
        stride,
        padding,
    };
    (weight_in == in_channels)
        .then(|| shape.plan().ok())
        .flatten()
}
