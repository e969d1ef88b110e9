//! Parity with PyTorch for ResNet-34 on 3x32x32 input: the repository's
//! `crates/fixtures/data/resnet34_cifar` (2 images) always, `shared/fixtures/resnet34_cifar_parity`
//! (4 images) when the shared folder is there (see their READMEs). The weights are a SplitMix64
//! formula (`cnnu_model::formula`), written as a torchvision-keyed safetensors file
//! (`cnnu_fixtures::formula_weights`) and loaded like any PyTorch checkpoint; every one of the
//! 149 taps must then match within 1e-4 of its max |value|.

mod common;

use burn::prelude::*;
use cnnu_fixtures::{Parity, read_f32s as read_all};
use cnnu_model::{ResNetArch, ResNetConfig};
use common::{device, max_diff_and_scale};

#[test]
fn resnet34_on_two_images_matches_pytorch_at_every_one_of_its_149_taps() {
    check(Parity::resnet34_formula());
}

#[test]
fn resnet34_on_the_shared_four_images_matches_pytorch_at_every_tap() {
    if let Some(p) = Parity::resnet34_shared() {
        check(p);
    }
}

fn check(p: Parity) {
    let weights = p.weights.path.clone();

    let config = ResNetConfig::of_torchvision_file(&weights).unwrap();
    assert_eq!(
        config,
        ResNetConfig::new()
            .with_arch(ResNetArch::ResNet34)
            .with_in_channels(3)
    );
    let model = config
        .init(&device())
        .unwrap()
        .load_torchvision(&weights)
        .unwrap()
        .valid();
    let catalogue = model.catalogue();
    assert_eq!(catalogue.len(), 149);

    let inputs = read_all(&p.input);
    let (shape, values) = &inputs["input"];
    let x = Tensor::<4>::from_data(TensorData::new(values.clone(), shape.clone()), &device());
    let (logits, taps) = model.forward_taps(x.clone(), &catalogue.all());
    // The fused eval path (no tap selected) gives the layer-by-layer logits bit for bit.
    let fused = model.forward(x).into_data();
    assert_eq!(fused.as_bytes(), logits.clone().into_data().as_bytes());
    assert_eq!(taps.len(), 149, "--taps all records every tap");

    let expected = read_all(&p.expected);
    assert_eq!(expected.len(), 149);
    let mut worst = (String::new(), 0.0f32);
    for (name, (exp_shape, exp)) in &expected {
        let ours = taps.get(name).unwrap_or_else(|| panic!("no tap {name}"));
        assert_eq!(&ours.dims(), exp_shape, "{name}");
        let (diff, scale) = max_diff_and_scale(ours, exp, 1e-6);
        assert!(
            diff <= 1e-4 * scale,
            "{name}: max |diff| {diff} vs max |value| {scale}"
        );
        if diff / scale > worst.1 {
            worst = (name.clone(), diff / scale);
        }
    }
    let argmax: Vec<i64> = logits
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .try_into_vec()
        .unwrap();
    let want: Vec<i64> = p.argmax.iter().map(|&a| a as i64).collect();
    assert_eq!(argmax, want);
    eprintln!(
        "{}: worst tap {}: {:.2e} of its max |value|",
        p.name, worst.0, worst.1
    );
}
