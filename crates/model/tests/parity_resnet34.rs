//! Parity with PyTorch for ResNet-34 on 3x32x32 input: `shared/fixtures/resnet34_cifar_parity`
//! (see its README). Its weights are a SplitMix64 formula (`cnnu_model::formula`), evaluated into a
//! torchvision-keyed safetensors file and loaded like any PyTorch checkpoint; every one of the
//! 149 taps must then match within 1e-4 of its max |value|.

mod common;

use burn::prelude::*;
use cnnu_model::{ResNetArch, ResNetConfig, formula};
use common::{device, max_diff_and_scale, read_all, shared_dir};

fn fixture_dir() -> std::path::PathBuf {
    shared_dir().join("fixtures/resnet34_cifar_parity")
}

fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture_dir().join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The formula's weights (`cnnu_model::formula`) as a torchvision-keyed safetensors file,
/// checked against the manifest's per-tensor sums first.
fn write_weights(manifest: &serde_json::Value, path: &std::path::Path) {
    let keys: Vec<(String, Vec<usize>)> = manifest["state_dict"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let shape = entry[1].as_array().unwrap();
            let shape = shape.iter().map(|d| d.as_u64().unwrap() as usize);
            (entry[0].as_str().unwrap().to_string(), shape.collect())
        })
        .collect();
    let tensors = formula::state_dict(&keys);
    for (name, (_, values)) in &tensors {
        let sum: f64 = values.iter().map(|&v| v as f64).sum();
        let want = manifest["weight_checksums"][name].as_f64().unwrap();
        assert!(
            (sum - want).abs() <= 1e-9 * values.len() as f64 + 1e-9 * want.abs(),
            "{name}: sum {sum} vs manifest {want}"
        );
    }
    let bytes: Vec<(&String, &Vec<usize>, Vec<u8>)> = (tensors.iter())
        .map(|(k, (shape, v))| (k, shape, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views = bytes.iter().map(|(k, shape, b)| {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, (*shape).clone(), b);
        ((*k).clone(), view.unwrap())
    });
    safetensors::serialize_to_file(views, None, path).unwrap();
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
