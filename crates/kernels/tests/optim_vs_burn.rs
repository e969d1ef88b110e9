//! The fused Adam against burn-optim's stock Adam: the same parameters and moments, bit for
//! bit, over several steps on random tensors, and through a whole-module step.

use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::Distribution;
use cnnu_kernels::FusedAdam;

fn bits<const D: usize>(t: &Tensor<D>) -> Vec<u32> {
    t.clone()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

#[test]
fn fused_adam_equals_stock_adam_bit_for_bit_over_five_steps() {
    let device = Device::flex();
    device.seed(11);
    // 70 000 elements: more than two parallel chunks.
    let shape = [7, 100, 100];
    let stock = AdamConfig::new().with_epsilon(1e-8).build();
    let fused = FusedAdam::new(0.9, 0.999, 1e-8);
    let start = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let (mut a, mut b) = (start.clone(), start);
    let (mut sa, mut sb) = (None, None);
    for step in 0..5 {
        let grad = Tensor::<3>::random(shape, Distribution::Normal(0.0, 0.5), &device);
        let lr = 1e-3 * (step + 1) as f64;
        (a, sa) = stock.step(lr, a, grad.clone(), sa);
        (b, sb) = fused.step(lr, b, grad, sb);
        assert_eq!(bits(&a), bits(&b), "parameters after step {step}");
        let (ma, mb) = (
            &sa.as_ref().unwrap().momentum,
            &sb.as_ref().unwrap().momentum,
        );
        assert_eq!(ma.time, mb.time);
        assert_eq!(
            bits(&ma.moment_1),
            bits(&mb.moment_1),
            "first moment, step {step}"
        );
        assert_eq!(
            bits(&ma.moment_2),
            bits(&mb.moment_2),
            "second moment, step {step}"
        );
    }
}

#[test]
fn fused_adam_steps_a_whole_module_like_the_stock_one() {
    let device = Device::flex().autodiff();
    device.seed(5);
    let model: Linear = LinearConfig::new(30, 4).init(&device);
    let mut stock = AdamConfig::new().with_epsilon(1e-8).init();
    let mut fused = FusedAdam::new(0.9, 0.999, 1e-8).init();
    let (mut ma, mut mb) = (model.clone(), model);
    for _ in 0..3 {
        let x = Tensor::<2>::random([16, 30], Distribution::Normal(0.0, 1.0), &device);
        let ga = GradientsParams::from_grads(
            ma.forward(x.clone()).powf_scalar(2.0).sum().backward(),
            &ma,
        );
        let gb = GradientsParams::from_grads(mb.forward(x).powf_scalar(2.0).sum().backward(), &mb);
        ma = stock.step(1e-2, ma, ga);
        mb = fused.step(1e-2, mb, gb);
    }
    assert_eq!(bits(&ma.weight.val()), bits(&mb.weight.val()));
    assert_eq!(
        bits(&ma.bias.as_ref().unwrap().val()),
        bits(&mb.bias.as_ref().unwrap().val())
    );
}
