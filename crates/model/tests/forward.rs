//! The forward pass and its taps: shapes, selections, identities between taps, and
//! BatchNorm's behaviour in eval and training mode.

mod common;

use burn::prelude::*;
use cnnu_model::{ResNet, ResNetConfig, TapSet};
use common::device;

fn model() -> ResNet {
    ResNetConfig::new().init(&device()).unwrap()
}

fn input(n: usize, h: usize, w: usize, device: &Device) -> Tensor<4> {
    let values: Vec<f32> = (0..n * h * w)
        .map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.4)
        .collect();
    Tensor::from_data(TensorData::new(values, [n, 1, h, w]), device)
}

fn values(t: &cnnu_model::TapTensor) -> Vec<f32> {
    t.clone()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

#[test]
fn every_tap_has_the_catalogue_shape() {
    let m = model().valid();
    for [h, w] in [[28, 28], [32, 20]] {
        let catalogue = m.catalogue();
        let (_, taps) = m.forward_taps(input(2, h, w, &device()), &catalogue.all());
        assert_eq!(taps.len(), 85);
        for (tap, (name, t)) in catalogue.taps().iter().zip(taps.0.iter()) {
            assert_eq!(tap.name, *name, "taps come in catalogue order");
            let mut expected = vec![2];
            expected.extend(tap.sample_shape(1, 10, [h, w]));
            assert_eq!(t.dims(), expected, "{name} at {h}x{w}");
        }
    }
    // The shapes the issue lists for a 28x28 input.
    let (_, taps) = m.forward_taps(input(3, 28, 28, &device()), &m.catalogue().all());
    for (name, dims) in [
        ("conv1", vec![3, 64, 14, 14]),
        ("maxpool", vec![3, 64, 7, 7]),
        ("layer1", vec![3, 64, 7, 7]),
        ("layer2", vec![3, 128, 4, 4]),
        ("layer3", vec![3, 256, 2, 2]),
        ("layer4", vec![3, 512, 1, 1]),
        ("avgpool", vec![3, 512, 1, 1]),
        ("flatten", vec![3, 512]),
        ("fc", vec![3, 10]),
    ] {
        assert_eq!(taps.get(name).unwrap().dims(), dims, "{name}");
    }
}

#[test]
fn empty_selection_records_nothing_and_gives_the_same_logits_bitwise() {
    let m = model().valid();
    let x = input(4, 28, 28, &device());
    let plain = m.forward(x.clone()).into_data();
    let (logits, taps) = m.forward_taps(x.clone(), &TapSet::empty());
    assert!(taps.is_empty());
    assert_eq!(plain.as_bytes(), logits.into_data().as_bytes());
    // Recording taps does not change the logits either.
    let (logits, _) = m.forward_taps(x, &m.catalogue().all());
    assert_eq!(plain.as_bytes(), logits.into_data().as_bytes());
}

#[test]
fn any_selection_gives_the_values_of_the_layer_by_layer_pass_bit_for_bit() {
    // Unselected convolutions run fused with what follows them; selected ones layer by layer.
    let m = model().valid();
    let x = input(6, 28, 28, &device());
    let (all_logits, all) = m.forward_taps(x.clone(), &m.catalogue().all());
    let all_logits = all_logits.into_data();
    for selection in [
        "layer1.0.relu,layer2.0.downsample,layer3.1.add",
        "layer2.0.downsample.*,layer4.1.bn2",
        "conv1,layer1.1.conv2,layer4",
        "maxpool,layer3.0.relu_1",
    ] {
        let sel = m.catalogue().parse(selection).unwrap();
        let (logits, taps) = m.forward_taps(x.clone(), &sel);
        assert_eq!(logits.into_data().as_bytes(), all_logits.as_bytes());
        for (name, t) in taps.0.iter() {
            assert_eq!(
                values(t),
                values(all.get(name).unwrap()),
                "{name} in {selection}"
            );
        }
    }
}

#[test]
fn a_selection_returns_exactly_its_taps_in_forward_order() {
    let m = model().valid();
    let sel = m
        .catalogue()
        .parse("fc,layer2.0.downsample.*,conv1")
        .unwrap();
    let (_, taps) = m.forward_taps(input(1, 28, 28, &device()), &sel);
    assert_eq!(
        taps.names(),
        vec![
            "conv1",
            "layer2.0.downsample.0",
            "layer2.0.downsample.1",
            "fc"
        ]
    );
}

#[test]
fn taps_obey_the_block_identities() {
    let m = model().valid();
    let (logits, taps) = m.forward_taps(input(2, 28, 28, &device()), &m.catalogue().all());
    let v = |n: &str| values(taps.get(n).unwrap());
    for s in 1..=4 {
        for b in 0..2 {
            let block = format!("layer{s}.{b}");
            let add = v(&format!("{block}.add"));
            let relu_1 = v(&format!("{block}.relu_1"));
            let relu_of_add: Vec<f32> = add.iter().map(|x| x.max(0.0)).collect();
            assert_eq!(relu_1, relu_of_add, "{block}.relu_1 = relu({block}.add)");
            assert_eq!(relu_1, v(&block), "{block} output = its relu_1");
            let first_relu = v(&format!("{block}.relu"));
            let bn1: Vec<f32> = v(&format!("{block}.bn1"))
                .iter()
                .map(|x| x.max(0.0))
                .collect();
            assert_eq!(first_relu, bn1, "{block}.relu is the first ReLU, after bn1");
        }
        assert_eq!(v(&format!("layer{s}")), v(&format!("layer{s}.1")));
    }
    for s in 2..=4 {
        assert_eq!(
            v(&format!("layer{s}.0.downsample")),
            v(&format!("layer{s}.0.downsample.1"))
        );
    }
    assert_eq!(v("flatten"), v("avgpool"));
    assert_eq!(
        v("fc"),
        logits
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
    );
}

fn running_mean(m: &ResNet) -> Vec<f32> {
    m.bn1
        .running_mean
        .value_sync()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

#[test]
fn eval_mode_uses_running_statistics_and_leaves_them_alone() {
    let m = model();
    let before = running_mean(&m);
    let eval = m.valid();
    let x = input(8, 28, 28, &device());
    let (_, taps) = eval.forward_taps(x.clone(), &eval.catalogue().parse("conv1,bn1").unwrap());
    // Fresh statistics are mean 0, var 1, so eval BN is x / sqrt(1 + eps).
    let conv = values(taps.get("conv1").unwrap());
    let bn = values(taps.get("bn1").unwrap());
    let scale = 1.0 / (1.0f32 + 1e-5).sqrt();
    for (c, b) in conv.iter().zip(&bn) {
        assert!((c * scale - b).abs() <= 1e-6 * (1.0 + c.abs()));
    }
    assert_eq!(
        running_mean(&eval),
        before,
        "eval forward must not update the statistics"
    );
}

#[test]
fn training_mode_updates_running_mean_with_pytorch_momentum() {
    let device = device().autodiff();
    let m = ResNetConfig::new().init(&device).unwrap();
    let x = input(8, 28, 28, &device);
    let (_, taps) = m.forward_taps(x, &m.catalogue().parse("conv1").unwrap());
    let conv = taps.get("conv1").unwrap().clone();
    let cnnu_model::TapTensor::Spatial(conv) = conv else {
        panic!("conv1 is spatial")
    };
    let batch_mean: Vec<f32> = conv
        .mean_dims(&[0, 2, 3])
        .flatten::<1>(0, 3)
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .unwrap();
    // PyTorch: running = (1 - 0.1) * running + 0.1 * batch_mean, from running = 0.
    let got = running_mean(&m);
    for (g, b) in got.iter().zip(&batch_mean) {
        assert!(
            (g - 0.1 * b).abs() <= 1e-5 * (1.0 + b.abs()),
            "{g} vs 0.1*{b}"
        );
    }
    assert!(
        batch_mean.iter().any(|b| b.abs() > 1e-3),
        "the check is not vacuous"
    );
}
