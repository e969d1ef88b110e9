//! The fused eval-time convolution + BatchNorm (+ residual, + ReLU) against the same layers
//! one by one with Burn's own BatchNorm, add and ReLU, bit for bit, on every path the
//! convolution takes: chunks of images, the batch-wide GEMM, and the Toeplitz lowering.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::Distribution;
use cnnu_kernels::conv::Lowering;
use cnnu_kernels::{Conv2dShape, conv2d_bn_eval, conv2d_module};

fn bits(t: Tensor<4>) -> Vec<u32> {
    let v: Vec<f32> = t.into_data().convert::<f32>().try_into_vec().unwrap();
    v.into_iter().map(f32::to_bits).collect()
}

/// A BatchNorm whose four statistics are all away from their initial values.
fn batch_norm(c: usize, device: &Device) -> BatchNorm {
    let mut bn = BatchNormConfig::new(c).init(device);
    let stat = |mean, sd| Tensor::<1>::random([c], Distribution::Normal(mean, sd), device);
    bn.gamma = bn.gamma.map(|_| stat(1.0, 0.3));
    bn.beta = bn.beta.map(|_| stat(0.0, 0.3));
    bn.running_mean.update(stat(0.1, 0.5));
    bn.running_var.update(stat(0.0, 1.0).abs() + 0.01);
    bn
}

/// Our convolution, then Burn's own eval BatchNorm.
fn conv_then_burns_norm(conv: &Conv2d, bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    burn::tensor::module::batch_norm(
        conv2d_module(conv, x),
        bn.gamma.val(),
        bn.beta.val(),
        bn.running_mean.value(),
        bn.running_var.value(),
        bn.epsilon,
    )
}

#[test]
fn fused_eval_tail_is_the_separate_layers_bit_for_bit() {
    // On one thread the 7x7 case splits into chunks of images (a chunk's planes get the tail
    // with the residual indexed by image); on the machine's threads it may take the batch-wide
    // GEMM instead.
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(check_every_lowering);
    check_every_lowering();
}

#[test]
fn a_residual_burn_would_broadcast_is_added_as_burn_adds_it() {
    let device = Device::flex();
    device.seed(12);
    let conv: Conv2d = Conv2dConfig::new([4, 8], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .init(&device);
    let bn = batch_norm(8, &device);
    let x = Tensor::<4>::random([3, 4, 5, 5], Distribution::Normal(0.0, 1.0), &device);
    let r = Tensor::<4>::random([1, 8, 5, 5], Distribution::Normal(0.0, 1.0), &device);
    let separate = conv_then_burns_norm(&conv, &bn, x.clone()) + r.clone();
    assert_eq!(
        bits(conv2d_bn_eval(&conv, &bn, x, Some(r), false)),
        bits(separate)
    );
}

fn check_every_lowering() {
    let device = Device::flex();
    device.seed(11);
    let mut lowerings = Vec::new();
    // (batch, channels in, out, map, kernel, stride): 3x3 on 7x7 in chunks, on 4x4
    // batch-wide, on 2x2 by Toeplitz at batch 128, a strided 1x1 shortcut.
    for (n, c, o, size, k, stride) in [
        (16, 8, 16, 7, 3, 1),
        (2, 8, 16, 4, 3, 1),
        (128, 8, 16, 2, 3, 1),
        (6, 8, 16, 7, 1, 2),
    ] {
        let pad = k / 2;
        let conv: Conv2d = Conv2dConfig::new([c, o], [k, k])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .with_bias(false)
            .init(&device);
        let bn = batch_norm(o, &device);
        let x = Tensor::<4>::random([n, c, size, size], Distribution::Normal(0.0, 1.0), &device);
        let out = (size + 2 * pad - k) / stride + 1;
        let r = Tensor::<4>::random([n, o, out, out], Distribution::Normal(0.0, 1.0), &device);
        let lowering = Conv2dShape {
            batch: n,
            in_channels: c,
            input: [size, size],
            out_channels: o,
            kernel: [k, k],
            stride: [stride, stride],
            padding: [pad, pad],
        }
        .plan()
        .unwrap()
        .lowering();
        lowerings.push(lowering);
        let normed = conv_then_burns_norm(&conv, &bn, x.clone());
        for residual in [false, true] {
            for relu in [false, true] {
                let mut separate = normed.clone();
                if residual {
                    separate = separate + r.clone();
                }
                if relu {
                    separate = burn::tensor::activation::relu(separate);
                }
                let fused =
                    conv2d_bn_eval(&conv, &bn, x.clone(), residual.then(|| r.clone()), relu);
                assert_eq!(
                    bits(fused),
                    bits(separate),
                    "batch {n}, {size}x{size}, {k}x{k}/{stride} ({lowering:?}), residual {residual}, relu {relu}"
                );
            }
        }
    }
    assert!(lowerings.contains(&Lowering::Toeplitz) && lowerings.contains(&Lowering::Im2col));
}
