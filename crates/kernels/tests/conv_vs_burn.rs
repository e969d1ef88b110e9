//! The batch-wide convolution against Burn's own `conv2d` (the independent reference): the
//! forward, the weight gradient and the input gradient, through Burn's autodiff, for every
//! convolution shape of ResNet-18 on 28x28 MNIST at batch 1 and 64 (and the small maps at 128),
//! two more, and random shapes.

use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;
use cnnu_kernels::conv2d;
use proptest::prelude::*;

/// Shapes as (in, out, spatial, kernel, stride, padding).
const RESNET18_MNIST: [(usize, usize, usize, usize, usize, usize); 13] = [
    (1, 64, 28, 7, 2, 3),   // conv1
    (64, 64, 7, 3, 1, 1),   // layer1.*
    (64, 128, 7, 3, 2, 1),  // layer2.0.conv1
    (64, 128, 7, 1, 2, 0),  // layer2.0.downsample.0
    (128, 128, 4, 3, 1, 1), // layer2.*.conv2
    (128, 256, 4, 3, 2, 1), // layer3.0.conv1
    (128, 256, 4, 1, 2, 0), // layer3.0.downsample.0
    (256, 256, 2, 3, 1, 1), // layer3.*
    (256, 512, 2, 3, 2, 1), // layer4.0.conv1: 4 of 9 taps live
    (256, 512, 2, 1, 2, 0), // layer4.0.downsample.0
    (512, 512, 1, 3, 1, 1), // layer4.*: only the centre tap live
    (16, 24, 14, 3, 1, 1),  // a 14x14 map
    (64, 4, 1, 3, 1, 1),    // few outputs: the weight gradient column-major, with dead taps
];

struct Result3 {
    out: Vec<f32>,
    dx: Vec<f32>,
    dw: Vec<f32>,
}

fn vec(t: Tensor<4>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec().unwrap()
}

/// Output, and the gradients of `sum(out · r)` for a fixed random `r`.
fn run(
    fast: bool,
    x: &Tensor<4>,
    w: &Tensor<4>,
    r: &Tensor<4>,
    stride: usize,
    pad: usize,
) -> Result3 {
    let x = x.clone().require_grad();
    let w = w.clone().require_grad();
    let out = if fast {
        conv2d(x.clone(), w.clone(), [stride, stride], [pad, pad])
    } else {
        burn_conv2d(
            x.clone(),
            w.clone(),
            None,
            ConvOptions::new([stride, stride], [pad, pad], [1, 1], 1),
        )
    };
    let grads = (out.clone() * r.clone()).sum().backward();
    Result3 {
        out: vec(out),
        dx: vec(x.grad(&grads).unwrap()),
        dw: vec(w.grad(&grads).unwrap()),
    }
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= 2e-5 * scale,
        "{what}: worst difference {worst:e}, max |reference| {scale:e}"
    );
}

fn check(n: usize, (c, o, hw, k, s, p): (usize, usize, usize, usize, usize, usize), seed: u64) {
    let device = Device::flex().autodiff();
    device.seed(seed);
    let x = Tensor::<4>::random([n, c, hw, hw], Distribution::Normal(0.0, 1.0), &device);
    let w = Tensor::<4>::random([o, c, k, k], Distribution::Normal(0.0, 0.1), &device);
    let ho = (hw + 2 * p - k) / s + 1;
    let r = Tensor::<4>::random([n, o, ho, ho], Distribution::Normal(0.0, 1.0), &device);
    let fast = run(true, &x, &w, &r, s, p);
    let burn = run(false, &x, &w, &r, s, p);
    let what = format!("n={n} c={c} o={o} hw={hw} k={k} s={s} p={p}");
    assert_close(&format!("{what} forward"), &fast.out, &burn.out);
    assert_close(&format!("{what} input gradient"), &fast.dx, &burn.dx);
    assert_close(&format!("{what} weight gradient"), &fast.dw, &burn.dw);
}

#[test]
fn every_resnet18_mnist_convolution_at_batch_1_and_64() {
    for (i, shape) in RESNET18_MNIST.into_iter().enumerate() {
        for n in [1, 64] {
            check(n, shape, i as u64);
        }
    }
}

/// From batch 128 the 2x2 and 1x1 maps take the other lowering (the convolution's whole matrix),
/// whose backward keeps the input tensor instead of `col`.
#[test]
fn the_small_maps_at_batch_128_match_burn() {
    for (i, shape) in RESNET18_MNIST.into_iter().enumerate() {
        if shape.2 <= 2 && shape.3 == 3 {
            check(128, shape, 100 + i as u64);
        }
    }
}

#[test]
fn inference_without_autodiff_matches_burn() {
    let device = Device::flex();
    device.seed(7);
    // A 9x9 map at stride 2; a 2x2 map at batch 128 (the convolution's whole matrix); and
    // stride 1 on odd, even, oblong and 1x3 maps, at batches that leave a last chunk short.
    let cases = [
        ([3, 5, 9, 9, 6], 2),
        ([128, 6, 2, 2, 5], 1),
        ([3, 5, 7, 7, 6], 1),
        ([37, 8, 4, 4, 3], 1),
        ([2, 3, 5, 8, 4], 1),
        ([5, 4, 14, 14, 7], 1),
        ([1, 2, 1, 3, 2], 1),
    ];
    for ([n, c, h, w, o], s) in cases {
        let x = Tensor::<4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &device);
        let wt = Tensor::<4>::random([o, c, 3, 3], Distribution::Normal(0.0, 1.0), &device);
        let fast = conv2d(x.clone(), wt.clone(), [s, s], [1, 1]);
        let burn = burn_conv2d(x, wt, None, ConvOptions::new([s, s], [1, 1], [1, 1], 1));
        assert!(!fast.device().is_autodiff());
        let what = format!("plain flex, [{n}, {c}, {h}, {w}] to {o} channels, stride {s}");
        assert_close(&what, &vec(fast), &vec(burn));
    }
}

#[test]
fn a_strided_view_input_is_read_correctly() {
    let device = Device::flex();
    device.seed(3);
    let x = Tensor::<4>::random([4, 3, 6, 6], Distribution::Normal(0.0, 1.0), &device);
    let w = Tensor::<4>::random([2, 4, 3, 3], Distribution::Normal(0.0, 1.0), &device);
    // [C, N, H, W] swapped to [N, C, H, W]: a non-contiguous view.
    let xt = x.swap_dims(0, 1);
    let fast = conv2d(xt.clone(), w.clone(), [1, 1], [1, 1]);
    let burn = burn_conv2d(xt, w, None, ConvOptions::new([1, 1], [1, 1], [1, 1], 1));
    assert_close("strided input", &vec(fast), &vec(burn));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn random_shapes_match_burn(
        n in 1usize..4, c in 1usize..6, o in 1usize..6, hw in 1usize..9,
        k in prop::sample::select(vec![1usize, 3, 5]), s in 1usize..4, p in 0usize..3,
        seed in 0u64..1000,
    ) {
        prop_assume!(k <= hw + 2 * p);
        check(n, (c, o, hw, k, s, p), seed);
    }
}
