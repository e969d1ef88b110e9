//! Parity with PyTorch: torchvision ResNet-18 outputs recorded by forward hooks, against ours
//! tap by tap — the repository's fixture (formula weights, `crates/fixtures/data/resnet18_formula`)
//! always, and `shared/fixtures/resnet18_parity` (untrained and trained weights) when the shared
//! folder is there. See each fixture's README.

mod common;

use burn::prelude::*;
use cnnu_fixtures::{Parity, read_f32s};
use cnnu_model::ResNetConfig;
use common::torch_names::our_name;
use common::{device, max_diff_and_scale};

fn check_parity(p: Parity) {
    let inputs = read_f32s(&p.input);
    let (shape, values) = &inputs["input"];
    let x = Tensor::<4>::from_data(TensorData::new(values.clone(), shape.clone()), &device());
    let model = ResNetConfig::new()
        .init(&device())
        .unwrap()
        .load_torchvision(&p.weights.path)
        .unwrap()
        .valid();
    let (logits, taps) = model.forward_taps(x.clone(), &model.catalogue().all());
    // With no tap selected every convolution runs fused with its BatchNorm, residual and ReLU:
    // the same logits bit for bit as the layer-by-layer pass checked below.
    let fused = model.forward(x).into_data();
    assert_eq!(fused.as_bytes(), logits.clone().into_data().as_bytes());
    let expected = read_f32s(&p.expected);
    assert!(
        expected.len() >= 20,
        "fixture has {} tensors",
        expected.len()
    );
    let mut worst = (String::new(), 0.0f32);
    for (key, (exp_shape, exp)) in &expected {
        let name = our_name(key);
        let ours = taps
            .get(&name)
            .unwrap_or_else(|| panic!("no tap {name} for {key}"));
        assert_eq!(&ours.dims(), exp_shape, "{key}");
        let (diff, scale) = max_diff_and_scale(ours, exp, 1.0);
        assert!(
            diff <= 1e-4 * scale,
            "{}: {key}: max|ours-torch| = {diff:e}, bound {:e}",
            p.name,
            1e-4 * scale
        );
        if diff / scale > worst.1 {
            worst = (key.clone(), diff / scale);
        }
    }
    eprintln!(
        "{}: worst relative difference {:e} at {}",
        p.name, worst.1, worst.0
    );
    let predicted: Vec<i64> = logits
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .try_into_vec()
        .unwrap();
    let predicted: Vec<usize> = predicted.into_iter().map(|p| p as usize).collect();
    assert_eq!(predicted, p.argmax);
}

#[test]
fn formula_weights_match_pytorch_at_every_tap() {
    check_parity(Parity::resnet18_formula());
}

#[test]
fn untrained_weights_match_pytorch_at_every_tap() {
    let Some(p) = Parity::resnet18_shared("epoch0") else {
        return;
    };
    assert_eq!(p.argmax, [8, 8, 8, 8, 9, 8, 8, 8]);
    check_parity(p);
}

#[test]
fn trained_weights_match_pytorch_at_every_tap() {
    let Some(p) = Parity::resnet18_shared("final") else {
        return;
    };
    assert_eq!(p.argmax, [7, 2, 1, 0, 4, 1, 4, 9]);
    check_parity(p);
}
