//! Helpers shared by the model's integration tests; the fixtures themselves are found by
//! `cnnu-fixtures`.

#![allow(dead_code)]

use burn::tensor::Device;
use cnnu_model::BackendKind;

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
