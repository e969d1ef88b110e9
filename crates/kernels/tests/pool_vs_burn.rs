//! The one-pass max pool against Burn's `MaxPool2d`: the output bit for bit, and the input
//! gradient through autodiff, on shapes with padding, odd sizes and strides.

use burn::nn::PaddingConfig2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use cnnu_kernels::max_pool2d_module;
use cnnu_kernels::pool::{
    MaxPoolShape, max_pool2d_backward, max_pool2d_forward, max_pool2d_values,
};

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec().unwrap()
}

fn pool(kernel: usize, stride: usize, pad: usize) -> MaxPool2d {
    MaxPool2dConfig::new([kernel, kernel])
        .with_strides([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .init()
}

const CASES: [([usize; 4], usize, usize, usize); 4] = [
    ([8, 64, 14, 14], 3, 2, 1),
    ([3, 5, 7, 9], 3, 2, 1),
    ([2, 4, 5, 5], 2, 2, 0),
    ([2, 3, 6, 4], 3, 1, 1),
];

#[test]
fn forward_is_burns_bit_for_bit() {
    let device = Device::flex();
    device.seed(3);
    for (shape, k, s, p) in CASES {
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let m = pool(k, s, p);
        let ours = values(max_pool2d_module(&m, x.clone()));
        let burn = values(m.forward(x));
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        assert_eq!(bits(ours), bits(burn), "{shape:?} k{k} s{s} p{p}");
    }
}

#[test]
fn gradient_is_burns_through_autodiff() {
    let device = Device::flex().autodiff();
    device.seed(5);
    for (shape, k, s, p) in CASES {
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let m = pool(k, s, p);
        let out_dims = m.forward(x.clone()).dims();
        let weights = Tensor::<4>::random(out_dims, Distribution::Normal(0.0, 1.0), &device);
        let grad = |fused: bool| {
            let x = x.clone().require_grad();
            let y = match fused {
                true => max_pool2d_module(&m, x.clone()),
                false => m.forward(x.clone()),
            };
            let grads = (y * weights.clone()).sum().backward();
            values(x.grad(&grads).unwrap())
        };
        // Continuous random inputs hold no ties, so both send each gradient to one place.
        assert_eq!(grad(true), grad(false), "{shape:?} k{k} s{s} p{p}");
    }
}

#[test]
fn hand_worked_plane_with_a_tie_and_padding() {
    // One 3x3 plane, 3x3 windows, stride 2, padding 1: outputs 2x2. The window of output
    // (0, 0) covers rows 0..2, columns 0..2: 1 2 / 4 9 → 9 at index 4. Ties (the 9 at
    // index 4 is in every window) go to the first in row-major order.
    let shape = MaxPoolShape {
        batch: 1,
        channels: 1,
        input: [3, 3],
        kernel: [3, 3],
        stride: [2, 2],
        padding: [1, 1],
    };
    let x = [1.0, 2.0, 3.0, 4.0, 9.0, 6.0, 7.0, 8.0, 9.0];
    let (out, idx) = max_pool2d_forward(&x, shape);
    assert_eq!(out, [9.0; 4]);
    assert_eq!(idx, [4, 4, 4, 4]);
    let dx = max_pool2d_backward(&[1.0, 2.0, 3.0, 4.0], &idx, shape);
    assert_eq!(dx, [0.0, 0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn values_alone_are_the_scans_with_ties_signed_zeros_and_nan() {
    // Mostly +0 and −0, with −1, −∞, NaN and a few 1s: windows hold ties, +0 beside −0 and
    // NaN, and the row-then-column path must pick the same bits as the row-major scan.
    let value = |i: usize| match (i.wrapping_mul(2_654_435_761) >> 7) % 32 {
        0..12 => 0.0,
        12..22 => -0.0,
        22..26 => -1.0,
        26..28 => f32::NEG_INFINITY,
        28 => f32::NAN,
        _ => 1.0,
    };
    let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let mut seen = Vec::new();
    for (shape, k, s, p) in CASES {
        let [batch, channels, h, w] = shape;
        let shape = MaxPoolShape {
            batch,
            channels,
            input: [h, w],
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
        };
        let x: Vec<f32> = (0..batch * channels * h * w).map(value).collect();
        let scan = max_pool2d_forward(&x, shape).0;
        assert_eq!(
            bits(&max_pool2d_values(&x, shape)),
            bits(&scan),
            "{shape:?}"
        );
        seen.extend(scan);
    }
    let bits_seen = bits(&seen);
    for v in [0.0f32, -0.0, 1.0] {
        assert!(
            bits_seen.contains(&v.to_bits()),
            "no window's maximum is {v:?}"
        );
    }
    assert!(seen.iter().any(|v| v.is_nan()), "no window holds a NaN");
}
