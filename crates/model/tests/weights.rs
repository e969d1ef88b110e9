//! torchvision-keyed safetensors weights: bitwise round trip and typed errors for files that
//! do not fit.

mod common;

use std::path::Path;

use burn::prelude::*;
use cnnu_fixtures::{Parity, read_f32s as read_all};
use cnnu_model::{ResNetConfig, WeightsError};
use common::device;
use safetensors::{Dtype, tensor::TensorView};

fn write(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let raw: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&raw)
        .map(|((n, s, _), b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn fixture_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    read_all(&Parity::resnet18_formula().weights.path)
        .into_iter()
        .map(|(n, (s, v))| (n, s, v))
        .collect()
}

fn load(path: &Path) -> Result<cnnu_model::ResNet, WeightsError> {
    ResNetConfig::new()
        .init(&device())
        .unwrap()
        .load_torchvision(path)
}

#[test]
fn save_gives_back_the_loaded_file_bit_for_bit() {
    let weights = Parity::resnet18_formula().weights;
    let original = weights.path.clone();
    let model = load(&original).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("roundtrip.safetensors");
    model.save_torchvision(&saved).unwrap();
    let a = read_all(&original);
    let b = read_all(&saved);
    assert_eq!(a.len(), 102, "the fixture has 102 tensors");
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (key, (shape, values)) in &a {
        let (s2, v2) = &b[key];
        assert_eq!(shape, s2, "{key}");
        let same = values
            .iter()
            .zip(v2)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{key} differs after a round trip");
    }
    // The saved file loads back into a model that computes the same logits, bit for bit.
    let again = load(&saved).unwrap();
    let x = Tensor::<4>::ones([2, 1, 28, 28], &device());
    let y1 = model.valid().forward(x.clone()).into_data();
    let y2 = again.valid().forward(x).into_data();
    assert_eq!(y1.as_bytes(), y2.as_bytes());
}

#[test]
fn num_batches_tracked_is_ignored() {
    let mut tensors = fixture_tensors();
    tensors.push(("bn1.num_batches_tracked".into(), vec![], vec![0.0]));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    write(&path, &tensors);
    load(&path).unwrap();
}

#[test]
fn missing_unexpected_and_misshapen_keys_are_listed() {
    let dir = tempfile::tempdir().unwrap();

    let mut tensors = fixture_tensors();
    tensors.retain(|(n, _, _)| n != "layer2.0.downsample.1.running_var");
    let path = dir.path().join("missing.safetensors");
    write(&path, &tensors);
    match load(&path) {
        Err(WeightsError::Mismatch {
            missing,
            unexpected,
            mismatched,
            ..
        }) => {
            assert_eq!(
                missing,
                vec!["layer2.0.downsample.1.running_var".to_string()]
            );
            assert!(unexpected.is_empty() && mismatched.is_empty());
        }
        other => panic!("expected a mismatch, got {:?}", other.map(|_| ())),
    }

    let mut tensors = fixture_tensors();
    tensors.push(("layer5.0.conv1.weight".into(), vec![2], vec![0.0, 1.0]));
    let path = dir.path().join("extra.safetensors");
    write(&path, &tensors);
    let err = load(&path).map(|_| ()).unwrap_err();
    assert!(
        err.to_string()
            .contains("unexpected keys: layer5.0.conv1.weight"),
        "{err}"
    );

    let mut tensors = fixture_tensors();
    for (n, s, v) in &mut tensors {
        if n == "fc.weight" {
            *s = vec![5, 512];
            v.truncate(5 * 512);
        }
    }
    let path = dir.path().join("shape.safetensors");
    write(&path, &tensors);
    match load(&path) {
        Err(e @ WeightsError::Mismatch { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("shape mismatch") && text.contains("fc.weight"),
                "{text}"
            );
        }
        other => panic!("expected a mismatch, got {:?}", other.map(|_| ())),
    }

    let path = dir.path().join("garbage.safetensors");
    std::fs::write(&path, b"definitely not safetensors").unwrap();
    assert!(matches!(load(&path), Err(WeightsError::Read { .. })));
}
