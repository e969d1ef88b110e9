//! The batch-wide convolution plugged into Burn: on the flex backend it runs
//! [`Conv2dPlan`](crate::conv::Conv2dPlan), and under autodiff its backward is registered as a
//! custom node (by the crate's `glue` module, the one that knows Burn's internals).
//! Any other backend (wgpu, cuda, ndarray), an unsupported option (groups, dilation, bias,
//! asymmetric padding) or a non-f32 tensor takes Burn's own `conv2d`.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;

#[cfg(feature = "flex")]
use crate::conv::Conv2dShape;

/// The convolution a `Conv2d` module computes, on the fast path where it applies.
pub fn conv2d_module(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let symmetric = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            Some([top, left])
        }
        PaddingConfig2d::Valid => Some([0, 0]),
        _ => None,
    };
    match symmetric {
        Some(padding) if conv.bias.is_none() && conv.groups == 1 && conv.dilation == [1, 1] => {
            conv2d(x, conv.weight.val(), conv.stride, padding)
        }
        _ => conv.forward(x),
    }
}

/// `conv2d(x, weight)` with groups 1, dilation 1, no bias and symmetric zero padding.
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    stride: [usize; 2],
    padding: [usize; 2],
) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if [false, true].into_iter().any(|autodiff| {
        crate::glue::is_flex_f32(&x, autodiff) && crate::glue::is_flex_f32(&weight, autodiff)
    }) {
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
        // A shape the plan refuses goes to Burn, which reports it in its own words.
        if let (true, Ok(plan)) = (weight_in == in_channels, shape.plan()) {
            return crate::glue::conv2d(plan, x, weight);
        }
    }
    burn_conv2d(
        x,
        weight,
        None,
        ConvOptions::new(stride, padding, [1, 1], 1),
    )
}
