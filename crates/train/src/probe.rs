//! Running the frozen network over a set of images and collecting the selected taps.

use std::ops::Range;

use burn::prelude::*;
use cnnu_model::{ResNet, TapOutputs, TapSet};

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
    let per_image = c * h * w;
    let mut logits = Vec::new();
    let mut outputs: Vec<NamedTensor> = Vec::new();
    let input_of = |rows: Range<usize>| {
        let b = rows.len();
        let chunk = input[rows.start * per_image..rows.end * per_image].to_vec();
        Tensor::<4>::from_data(TensorData::new(chunk, [b, c, h, w]), device)
    };
    forward_batches::<ProbeError>(
        &model.valid(),
        n,
        batch_size,
        taps,
        input_of,
        |start, y, recorded| {
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
            Ok(())
        },
    )?;
    Ok((logits, outputs))
}

/// The one batched forward pass of the frozen network over `n` images: `input` builds the
/// batch of rows `start..end`, `sink` takes each batch's first row, logits and recorded taps.
/// The probe and the trainer's snapshots both go through it; `model` should be in eval mode
/// on a plain device.
pub fn forward_batches<E>(
    model: &ResNet,
    n: usize,
    batch: usize,
    taps: &TapSet,
    mut input: impl FnMut(Range<usize>) -> Tensor<4>,
    mut sink: impl FnMut(usize, Tensor<2>, TapOutputs) -> Result<(), E>,
) -> Result<(), E> {
    for start in (0..n).step_by(batch.max(1)) {
        let rows = start..(start + batch).min(n);
        let (logits, recorded) = model.forward_taps(input(rows), taps);
        sink(start, logits, recorded)?;
    }
    Ok(())
}

/// The f32 values of a tensor read back from the device (converting if the backend's float
/// type is not f32).
pub fn to_f32(data: TensorData) -> Vec<f32> {
    data.convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32 just above")
}
