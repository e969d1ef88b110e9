//! The fused Adam and SGD against burn-optim's stock ones: the same parameters and states, bit
//! for bit, over several steps on random tensors, and through whole-module steps (whose
//! states also go through a checkpoint record and back).

use burn::nn::{Linear, LinearConfig};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer, RecordState, SgdConfig, StateSink};
use burn::prelude::*;
use burn::tensor::Distribution;
use cnnu_kernels::{FusedAdam, FusedSgd, FusedSgdState, StateError};

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

fn stock_sgd(momentum: f64) -> SgdConfig {
    SgdConfig::new().with_momentum(Some(
        MomentumConfig::new()
            .with_momentum(momentum)
            .with_dampening(0.0),
    ))
}

/// A state's tensors as bits, through the flattening checkpoints are written from.
fn state_bits<S: RecordState>(state: &S) -> Vec<Vec<u32>> {
    let mut sink = StateSink::default();
    state.state_flatten("", &mut sink);
    sink.tensors
        .into_iter()
        .map(|(_, d)| {
            d.convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap()
                .into_iter()
                .map(f32::to_bits)
                .collect()
        })
        .collect()
}

#[test]
fn fused_sgd_equals_stock_sgd_bit_for_bit_over_five_steps() {
    let device = Device::flex();
    device.seed(12);
    let shape = [7, 100, 100];
    let stock = stock_sgd(0.9).build();
    let fused = FusedSgd::new(0.9);
    let start = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let (mut a, mut b) = (start.clone(), start);
    let (mut sa, mut sb) = (None, None);
    for step in 0..5 {
        let grad = Tensor::<3>::random(shape, Distribution::Normal(0.0, 0.5), &device);
        let lr = 1e-2 * (step + 1) as f64;
        (a, sa) = stock.step(lr, a, grad.clone(), sa);
        (b, sb) = fused.step(lr, b, grad, sb);
        assert_eq!(bits(&a), bits(&b), "parameters after step {step}");
        let (va, vb) = (
            state_bits(sa.as_ref().unwrap()),
            state_bits(sb.as_ref().unwrap()),
        );
        assert_eq!(va.len(), 1, "one velocity tensor");
        assert_eq!(va, vb, "velocity after step {step}");
    }
}

#[test]
fn fused_sgd_steps_a_whole_module_like_the_stock_one_across_a_checkpoint() {
    let device = Device::flex().autodiff();
    device.seed(6);
    let model: Linear = LinearConfig::new(30, 4).init(&device);
    let mut stock = stock_sgd(0.8).init();
    let mut fused = FusedSgd::new(0.8).init();
    let (mut ma, mut mb) = (model.clone(), model);
    for step in 0..4 {
        let x = Tensor::<2>::random([16, 30], Distribution::Normal(0.0, 1.0), &device);
        let ga = GradientsParams::from_grads(
            ma.forward(x.clone()).powf_scalar(2.0).sum().backward(),
            &ma,
        );
        let gb = GradientsParams::from_grads(mb.forward(x).powf_scalar(2.0).sum().backward(), &mb);
        ma = stock.step(1e-2, ma, ga);
        mb = fused.step(1e-2, mb, gb);
        if step == 1 {
            // The fused state resumes in a fresh stock optimizer and the other way round.
            let (ra, rb) = (stock.to_record(), fused.to_record());
            stock = stock_sgd(0.8).init().load_record(rb);
            fused = FusedSgd::new(0.8).init().load_record(ra);
        }
    }
    assert_eq!(bits(&ma.weight.val()), bits(&mb.weight.val()));
    assert_eq!(
        bits(&ma.bias.as_ref().unwrap().val()),
        bits(&mb.bias.as_ref().unwrap().val())
    );
}

#[test]
fn fused_sgd_off_the_fused_path_equals_stock_sgd_bit_for_bit() {
    // Tensors under autodiff are not the fused kernel's: this is the tensor-operation path
    // other backends take.
    let device = Device::flex().autodiff();
    device.seed(13);
    let shape = [3, 40, 50];
    let stock = stock_sgd(0.9).build();
    let fused = FusedSgd::new(0.9);
    let start = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let (mut a, mut b) = (start.clone(), start);
    let (mut sa, mut sb) = (None, None);
    for step in 0..3 {
        let grad = Tensor::<3>::random(shape, Distribution::Normal(0.0, 0.5), &device);
        let lr = 1e-2 * (step + 1) as f64;
        (a, sa) = stock.step(lr, a, grad.clone(), sa);
        (b, sb) = fused.step(lr, b, grad, sb);
        assert_eq!(bits(&a), bits(&b), "parameters after step {step}");
        assert_eq!(
            state_bits(sa.as_ref().unwrap()),
            state_bits(sb.as_ref().unwrap()),
            "velocity after step {step}"
        );
    }
}

#[test]
fn a_state_of_the_wrong_length_is_an_error_not_a_restart() {
    let device = Device::flex();
    let param = Tensor::<2>::ones([4, 30], &device);
    let grad = Tensor::<2>::ones([4, 30], &device);
    let short = Tensor::<2>::zeros([4, 29], &device);

    let sgd = FusedSgd::new(0.9);
    let state = FusedSgdState {
        velocity: Some(short.clone()),
    };
    let err = sgd
        .try_step(0.1, param.clone(), grad.clone(), Some(state.clone()))
        .expect_err("a velocity of 116 values for 120 is refused");
    assert_eq!(
        err,
        StateError::Length {
            param: "the parameter of shape [4, 30]".into(),
            state: "velocity",
            got: 116,
            expected: 120,
        }
    );
    assert_eq!(
        err.to_string(),
        "the velocity of the parameter of shape [4, 30] has 116 values, the parameter has 120"
    );
    // Through the `Optimizer` trait, which has no error channel: a panic with that message.
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sgd.step(0.1, param.clone(), grad.clone(), Some(state))
    }))
    .expect_err("the trait's step panics");
    assert_eq!(panic.downcast_ref::<String>(), Some(&err.to_string()));

    let adam = FusedAdam::new(0.9, 0.999, 1e-8);
    let (_, good) = adam.step(0.1, param.clone(), grad.clone(), None);
    let mut state = good.unwrap();
    state.momentum.moment_2 = short;
    let err = adam
        .try_step(0.1, param, grad, Some(state))
        .err()
        .expect("a second moment of 116 values for 120 is refused");
    assert_eq!(
        err,
        StateError::Length {
            param: "the parameter of shape [4, 30]".into(),
            state: "second moment",
            got: 116,
            expected: 120,
        }
    );
}

#[test]
fn a_checkpoint_file_of_stock_sgd_resumes_in_fused_sgd() {
    let device = Device::flex().autodiff();
    device.seed(7);
    let model: Linear = LinearConfig::new(5, 3).init(&device);
    let xs: Vec<_> = (0..4)
        .map(|_| Tensor::<2>::random([4, 5], Distribution::Normal(0.0, 1.0), &device))
        .collect();
    let grads = |m: &Linear, x: &Tensor<2>| {
        GradientsParams::from_grads(m.forward(x.clone()).powf_scalar(2.0).sum().backward(), m)
    };
    let mut stock = stock_sgd(0.9).init();
    let mut ma = model;
    for x in &xs[..2] {
        let g = grads(&ma, x);
        ma = stock.step(0.1, ma, g);
    }
    let mut mb = ma.clone();
    let path = std::env::temp_dir().join(format!("cnnu-sgd-{}.bpk", std::process::id()));
    stock.save(&path).unwrap();
    let written = std::fs::read(&path).unwrap();
    let mut fused = FusedSgd::new(0.9).init().load(&path).unwrap();
    assert_eq!(fused.to_record().len(), 2, "both velocities loaded");
    for x in &xs[2..] {
        let (ga, gb) = (grads(&ma, x), grads(&mb, x));
        ma = stock.step(0.1, ma, ga);
        mb = fused.step(0.1, mb, gb);
    }
    assert_eq!(bits(&ma.weight.val()), bits(&mb.weight.val()));
    // Stepping the loaded state in place leaves the file alone (it is read lazily, so only
    // now is it removed).
    assert!(
        std::fs::read(&path).unwrap() == written,
        "the checkpoint is untouched"
    );
    std::fs::remove_file(&path).unwrap();
}
