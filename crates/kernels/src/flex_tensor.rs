//! Getting at flex tensors' f32 values: which tensors the kernels take, and their data as
//! slices (the one place that knows flex's layout rules).

use std::borrow::Cow;

use burn::backend::flex::FlexTensor;
use burn::backend::{DispatchDevice, GradientCheckpointingStrategy};
use burn::prelude::*;
use burn::tensor::DType;

/// Whether `t` is an f32 tensor on flex, plain (`autodiff` false) or under autodiff without
/// gradient checkpointing (`autodiff` true): the tensors the kernels are written for.
pub(crate) fn is_flex_f32<const D: usize>(t: &Tensor<D>, autodiff: bool) -> bool {
    let device = t.device();
    let mode = match autodiff {
        false => !device.is_autodiff(),
        true => {
            device.gradient_checkpointing_strategy()
                == Some(GradientCheckpointingStrategy::Disabled)
        }
    };
    mode && matches!(device.inner().as_dispatch(), DispatchDevice::Flex(_))
        && t.dtype() == DType::F32
}

/// The values in row-major order, borrowed when the tensor is already laid out so.
pub(crate) fn values(t: &FlexTensor) -> Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => s.into(),
        None => dense(t.clone())
            .as_slice::<f32>()
            .expect("dense f32")
            .to_vec()
            .into(),
    }
}

/// The tensor as a dense row-major buffer starting at offset 0 (itself when it already is),
/// so that `storage_mut()[..n]` are its values; writing there copies only a shared buffer.
pub(crate) fn dense(t: FlexTensor) -> FlexTensor {
    if t.is_contiguous() && t.layout().start_offset() == 0 {
        t
    } else {
        t.to_contiguous()
    }
}

/// A new tensor holding `values` in `dims`.
pub(crate) fn from_values<const D: usize>(values: Vec<f32>, dims: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, dims))
}
