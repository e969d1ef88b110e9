//! ReLU inputs that float32 rounding can put on either side of zero, for the tests that
//! compare a training step with PyTorch's (`tests/grads.rs` here, `crates/train/tests/
//! pytorch_steps.rs` through `#[path]`).
//!
//! Two correct float32 implementations sum in different orders (gemm picks its AVX2 or
//! AVX-512 kernel at run time), so their activations differ by about 1e-6 of each tensor's
//! largest value. Where a ReLU input is that close to zero, one of them passes the gradient
//! and the other stops it. On an AVX-512 machine one such input (layer2.1's residual sum,
//! -0.7195530 + 0.7195546 = 1.6e-6 here, -7.4e-7 in float64) flipped, and every gradient
//! before it moved by up to 1.1% of its tensor's largest entry; PyTorch in float64 with that
//! one input pushed to our side gives our gradients to 4.9e-6 of max |g| in every parameter.
//! The tests therefore hold every parameter after the last such input to PyTorch's float32
//! accuracy, and the ones before it to what one flip moves.
//!
//! What one flip moves grows as the map shrinks: a gradient sums over the images and
//! positions of its channel, and one flipped element is one of 64·H·W of them. On wgpu
//! (lavapipe), a flip at layer4.1's residual sum (1x1 maps) moved layer4.1.conv2.weight by
//! 7.4e-2 of its max |g|; `backends_agree.rs` shows that wgpu and flex agree to 2.3e-5 on
//! batches without a flip, so that is the flip and not a kernel.

#![allow(dead_code)]

use cnnu_model::{TapOutputs, TapTensor};

/// How close to zero, as a share of the tensor's largest |value|, a ReLU input may fall on
/// either side: twice our train-mode forward's largest error against PyTorch's float64
/// (1.2e-6 of max at layer2.1's sum, fixture batch 0).
pub const TIE_BAND: f32 = 2e-6;

/// ReLU inputs of one tap inside the band.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tie {
    /// The tap (a ReLU input).
    pub tap: String,
    /// How many of its values lie inside the band.
    pub count: usize,
    /// Its map's H·W.
    pub plane: usize,
}

/// Every ReLU input (taps recorded with `Catalogue::relu_inputs`) read back once: name, H·W
/// and values, in forward order.
pub fn read_inputs(taps: &TapOutputs) -> Vec<(String, usize, Vec<f32>)> {
    (taps.0.iter())
        .filter_map(|(name, t)| {
            let TapTensor::Spatial(t) = t else {
                return None;
            };
            let [_, _, h, w] = t.dims();
            let v: Vec<f32> = t.clone().into_data().convert::<f32>().try_to_vec().ok()?;
            Some((name.clone(), h * w, v))
        })
        .collect()
}

/// The ReLU inputs with values inside the band, in forward order.
pub fn relu_ties(taps: &TapOutputs) -> Vec<Tie> {
    ties_in(&read_inputs(taps))
}

/// [`relu_ties`] of inputs already read back by [`read_inputs`].
pub fn ties_in(inputs: &[(String, usize, Vec<f32>)]) -> Vec<Tie> {
    (inputs.iter())
        .filter_map(|(name, plane, v)| {
            let band = TIE_BAND * v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let count = v.iter().filter(|x| x.abs() < band).count();
            (count > 0).then(|| Tie {
                tap: name.clone(),
                count,
                plane: *plane,
            })
        })
        .collect()
}

/// Whether parameter `name` (torchvision's key) lies before a tie in forward order, so that
/// a flip there reaches its gradient: the stem, or a block at or before the tie's.
pub fn reached_by(name: &str, ties: &[Tie]) -> bool {
    ties.iter().any(|t| position(name) <= position(&t.tap))
}

/// How much more than a flip on a 4x4 map (layer2's, where the AVX-512 flip was measured)
/// a flip among `ties` that reaches `name` may move it: 1 there and before, 4 at layer3's 2x2
/// maps, 16 at layer4's 1x1 maps (one element's share of its channel's sum), never below 1.
pub fn reach_factor(name: &str, ties: &[Tie]) -> f64 {
    ties.iter()
        .filter(|t| position(name) <= position(&t.tap))
        .map(|t| 16.0 / t.plane.max(1) as f64)
        .fold(1.0, f64::max)
}

/// [`reach_factor`] of the whole network (of the deepest tie).
pub fn flip_factor(ties: &[Tie]) -> f64 {
    reach_factor("conv1.weight", ties)
}

/// (stage, block) of a parameter or tap name: the stem is (0, 0), `layer2.1.*` is (2, 1),
/// `fc` after every block.
fn position(name: &str) -> (usize, usize) {
    let mut parts = name.split('.');
    match parts.next().and_then(|s| s.strip_prefix("layer")) {
        Some(stage) => (
            stage.parse().unwrap_or(usize::MAX),
            parts
                .next()
                .and_then(|b| b.parse().ok())
                .unwrap_or(usize::MAX),
        ),
        None if name.starts_with("fc") => (usize::MAX, usize::MAX),
        None => (0, 0),
    }
}
