//! Weights given by a formula rather than a file, so that a parity fixture made with PyTorch
//! needs no weight file: every element is a SplitMix64 draw of (tensor number, element
//! number), evaluated the same way in Python and here. `resnet34_cifar_parity`'s README is the
//! specification.

use std::collections::BTreeMap;

/// The uniform draw in `[0, 1)` for element `j` of tensor `t`.
pub fn uniform(t: u64, j: u64) -> f64 {
    let mut z =
        (t.wrapping_shl(32).wrapping_add(j).wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 * 2f64.powi(-53)
}

/// The values of tensor number `t` of a torchvision state dict, by its name and shape:
/// He-scaled weights, BatchNorm weights near 1, running variances at least 1, the rest small.
pub fn tensor_values(t: u64, name: &str, shape: &[usize]) -> Vec<f32> {
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

/// The formula's state dict for `keys` (name and shape, in `state_dict()` order, which numbers
/// the tensors), name → (shape, values); written as f32 safetensors (`tensor_file::write_f32`
/// in cnnu-train) it loads with [`crate::ResNet::load_torchvision`].
pub fn state_dict(keys: &[(String, Vec<usize>)]) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    keys.iter()
        .enumerate()
        .map(|(t, (name, shape))| {
            let values = tensor_values(t as u64, name, shape);
            (name.clone(), (shape.clone(), values))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_draws_are_the_readme_check_values() {
        assert!((uniform(0, 0) - 0.883_310_808_213_642_6).abs() < 1e-15);
        assert!((uniform(3, 5) - 0.325_065_115_571_022_25).abs() < 1e-15);
    }
}
