//! Helpers shared by the model's integration tests: locating `../shared` and reading
//! safetensors fixtures.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use cnnu_model::BackendKind;
use safetensors::{Dtype, SafeTensors};

/// The `shared` directory beside the project root (`CNNU_SHARED_DIR` overrides).
pub fn shared_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CNNU_SHARED_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|a| a.join("shared"))
        .find(|p| p.join("fixtures").is_dir())
        .expect("no shared/fixtures beside the project; set CNNU_SHARED_DIR")
}

/// The PyTorch parity fixtures.
pub fn parity_dir() -> PathBuf {
    shared_dir().join("fixtures/resnet18_parity")
}

/// Every f32 tensor of a safetensors file: name -> (shape, values).
pub fn read_all(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == Dtype::F32)
        .map(|(name, v)| {
            let values = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (name, (v.shape().to_vec(), values))
        })
        .collect()
}

/// The plain device of the backend `CNNU_BACKEND` names (the GPU tier sets it), else the
/// first compiled in.
pub fn device() -> Device {
    BackendKind::from_env().unwrap().device().unwrap()
}

/// Largest |ours − reference| and the reference's largest |value| (at least `floor`), for
/// tolerances relative to a tap's scale.
pub fn max_diff_and_scale(
    ours: &cnnu_model::TapTensor,
    reference: &[f32],
    floor: f32,
) -> (f32, f32) {
    let got = ours
        .clone()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap();
    assert_eq!(got.len(), reference.len());
    let scale = reference.iter().fold(floor, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(reference)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    (diff, scale)
}
pub mod relu_ties;
pub mod step;
pub mod torch_names;
