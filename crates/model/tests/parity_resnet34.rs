//! Parity with PyTorch for ResNet-34 on 3x32x32 input: `shared/fixtures/resnet34_cifar_parity`
//! (see its README). Its weights are a SplitMix64 formula, evaluated here into a
//! torchvision-keyed safetensors file and loaded like any PyTorch checkpoint; every one of the
//! 149 taps must then match within 1e-4 of its max |value|.

mod common;

use std::collections::BTreeMap;

use burn::prelude::*;
use cnnu_model::{ResNetArch, ResNetConfig};
use common::{device, max_diff_and_scale, read_all, shared_dir};

fn fixture_dir() -> std::path::PathBuf {
    shared_dir().join("fixtures/resnet34_cifar_parity")
}

/// The README's uniform draw for element `j` of tensor `t`.
fn uniform(t: u64, j: u64) -> f64 {
    let mut z =
        (t.wrapping_shl(32).wrapping_add(j).wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 * 2f64.powi(-53)
}

/// Tensor `t` of the state dict, by the README's table.
fn tensor_values(t: u64, name: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let fan_in: usize = shape.iter().skip(1).product();
    let is_bn_weight = name.ends_with(".weight") && shape.len() == 1;
    (0..n as u64)
        .map(|j| {
            let s = 3f64.sqrt() * (2.0 * uniform(t, j) - 1.0);
            let v = if name.ends_with("running_var") {
                1.0 + 0.5 * s * s
            } else if is_bn_weight {
                1.0 + 0.1 * s
            } else if name.ends_with(".weight") {
                s * (2.0 / fan_in as f64).sqrt()
            } else {
                0.1 * s
            };
            v as f32
        })
        .collect()
}

fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture_dir().join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The formula's weights as a torchvision-keyed safetensors file, checked against the
/// manifest's per-tensor sums first.
fn write_weights(manifest: &serde_json::Value, path: &std::path::Path) {
    let checksums = &manifest["weight_checksums"];
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for (t, entry) in manifest["state_dict"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let name = entry[0].as_str().unwrap();
        let shape: Vec<usize> = entry[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let values = tensor_values(t as u64, name, &shape);
        let sum: f64 = values.iter().map(|&v| v as f64).sum();
        let want = checksums[name].as_f64().unwrap();
        assert!(
            (sum - want).abs() <= 1e-9 * values.len() as f64 + 1e-9 * want.abs(),
            "{name}: sum {sum} vs manifest {want}"
        );
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.insert(name.to_string(), (shape, bytes));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(k, (shape, bytes))| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .unwrap();
            (k.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

#[test]
fn the_formula_reproduces_the_readme_check_values() {
    assert!((uniform(0, 0) - 0.883_310_808_213_642_6).abs() < 1e-15);
    assert!((uniform(3, 5) - 0.325_065_115_571_022_25).abs() < 1e-15);
}

#[test]
fn resnet34_on_3x32x32_matches_pytorch_at_every_one_of_its_149_taps() {
    let manifest = manifest();
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("resnet34.safetensors");
    write_weights(&manifest, &weights);

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

    let inputs = read_all(&fixture_dir().join("input.safetensors"));
    let (shape, values) = &inputs["input"];
    let x = Tensor::<4>::from_data(TensorData::new(values.clone(), shape.clone()), &device());
    let (logits, taps) = model.forward_taps(x, &catalogue.all());
    assert_eq!(taps.len(), 149, "--taps all records every tap");

    let expected = read_all(&fixture_dir().join("expected.safetensors"));
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
    let want: Vec<i64> = manifest["argmax_fc"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(argmax, want);
    eprintln!("worst tap {}: {:.2e} of its max |value|", worst.0, worst.1);
}
