//! Parity with PyTorch: torchvision ResNet-18 outputs recorded by forward hooks in
//! `shared/fixtures/resnet18_parity` (see its README) against ours, tap by tap.

mod common;

use burn::prelude::*;
use cnnu_model::{ResNet, ResNetConfig};
use common::torch_names::our_name;
use common::{device, max_diff_and_scale, parity_dir, read_all};

fn load(weights: &str) -> ResNet {
    ResNetConfig::new()
        .init(&device())
        .unwrap()
        .load_torchvision(parity_dir().join(weights))
        .unwrap()
}

fn check_parity(weights: &str, expected: &str, argmax: [usize; 8]) {
    let inputs = read_all(&parity_dir().join("input.safetensors"));
    let (shape, values) = &inputs["input"];
    let x = Tensor::<4>::from_data(TensorData::new(values.clone(), shape.clone()), &device());
    let model = load(weights).valid();
    let (logits, taps) = model.forward_taps(x, &model.catalogue().all());
    let expected = read_all(&parity_dir().join(expected));
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
            "{weights} {key}: max|ours-torch| = {diff:e}, bound {:e}",
            1e-4 * scale
        );
        if diff / scale > worst.1 {
            worst = (key.clone(), diff / scale);
        }
    }
    eprintln!(
        "{weights}: worst relative difference {:e} at {}",
        worst.1, worst.0
    );
    let predicted: Vec<i64> = logits
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .try_into_vec()
        .unwrap();
    let predicted: Vec<usize> = predicted.into_iter().map(|p| p as usize).collect();
    assert_eq!(predicted, argmax.to_vec());
}

#[test]
fn untrained_weights_match_pytorch_at_every_tap() {
    check_parity(
        "weights_epoch0.safetensors",
        "expected_epoch0.safetensors",
        [8, 8, 8, 8, 9, 8, 8, 8],
    );
}

#[test]
fn trained_weights_match_pytorch_at_every_tap() {
    check_parity(
        "weights_final.safetensors",
        "expected_final.safetensors",
        [7, 2, 1, 0, 4, 1, 4, 9],
    );
}
