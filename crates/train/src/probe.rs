//! Running the frozen network over a set of images and collecting the selected taps.

use burn::prelude::*;
use cnnu_model::{ResNet, TapSet};

use crate::tensor_file::NamedTensor;

/// Errors from probing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The input is not `[N, C, H, W]` with the model's channel count.
    #[error("input must be [N, {channels}, H, W] float32, got shape {shape:?}")]
    InputShape {
        /// The model's input channels.
        channels: usize,
        /// The shape given.
        shape: Vec<usize>,
    },
    /// Batch size zero.
    #[error("batch size must be at least 1")]
    BatchSize,
}

/// Runs `model` in eval mode over `input` (`[N, C, H, W]`, row-major) in batches and returns
/// each selected tap as one tensor over all N images, in forward order.
///
/// The model is switched to eval mode (`valid()`), and `device` should be a plain device: on
/// it BatchNorm uses its running statistics and leaves them untouched.
pub fn probe(
    model: &ResNet,
    input: &[f32],
    shape: &[usize],
    taps: &TapSet,
    batch_size: usize,
    device: &Device,
) -> Result<(Vec<f32>, Vec<NamedTensor>), ProbeError> {
    let in_channels = model.conv1.weight.dims()[1];
    let &[n, c, h, w] = shape else {
        return Err(ProbeError::InputShape {
            channels: in_channels,
            shape: shape.to_vec(),
        });
    };
    if c != in_channels || n * c * h * w != input.len() || h == 0 || w == 0 {
        return Err(ProbeError::InputShape {
            channels: in_channels,
            shape: shape.to_vec(),
        });
    }
    if batch_size == 0 {
        return Err(ProbeError::BatchSize);
    }
    let model = model.valid();
    let per_image = c * h * w;
    let mut logits = Vec::new();
    let mut outputs: Vec<NamedTensor> = Vec::new();
    for start in (0..n).step_by(batch_size) {
        let b = batch_size.min(n - start);
        let chunk = input[start * per_image..(start + b) * per_image].to_vec();
        let x = Tensor::<4>::from_data(TensorData::new(chunk, [b, c, h, w]), device);
        let (y, recorded) = model.forward_taps(x, taps);
        logits.extend(to_f32(y.into_data()));
        for (i, (name, t)) in recorded.into_iter().enumerate() {
            let dims = t.dims();
            let values = to_f32(t.into_data());
            if start == 0 {
                let mut shape = dims;
                shape[0] = n;
                outputs.push(NamedTensor {
                    name,
                    shape,
                    values: Vec::new(),
                });
            }
            outputs[i].values.extend(values);
        }
    }
    Ok((logits, outputs))
}

/// The f32 values of a tensor read back from the device (converting if the backend's float
/// type is not f32).
pub fn to_f32(data: TensorData) -> Vec<f32> {
    data.convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32 just above")
}
