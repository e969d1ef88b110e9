//! The one place that knows Burn's internals. Everything else in the crate is numerics on
//! plain `f32` slices ([`conv`](crate::conv), the in-place loops of
//! [`batch_norm`](crate::batch_norm) and [`optim`](crate::optim)) or Burn's public tensor API.
//!
//! What it touches, and why (the public API that is missing):
//!
//! - **Backend dispatch** ([`is_flex_f32`]): whether a tensor lives on flex, plain or under
//!   autodiff without gradient checkpointing. Burn has no "run this kernel on backend X"
//!   hook for a `Tensor`, only `Device::inner().as_dispatch()` and
//!   `gradient_checkpointing_strategy()`.
//! - **Flex storage** ([`FlexRead`], [`FlexMut`]): a flex tensor's values as a slice, read in
//!   place or written in place in a dense buffer nobody else holds
//!   (`Tensor::try_into_primitive::<Flex>`, `FlexTensor::{as_slice, storage_mut, layout}`).
//!   The public way, `into_data`/`from_data`, copies every tensor twice per call.
//! - **Autodiff registration** ([`conv2d`]): the batch-wide convolution as a node of Burn's
//!   autodiff graph with its own backward (`burn_autodiff::ops::Backward`, `Ops`,
//!   `Gradients::{consume, register}`, `AutodiffTensor::into_parts`), the way burn-autodiff
//!   registers its own conv. Burn's `#[backend_extension]` would need a backend type of our
//!   own wrapping flex; one custom op is less code.
//! - **Optimizer record names** (`RecordState for FusedSgdState`): the fused SGD keeps its
//!   velocity in a state of its own, because burn-optim's `MomentumState` keeps the velocity
//!   private (`new` builds one; nothing but its record flattening reads it back). Its
//!   checkpoint leaves are named exactly as burn-optim's `SgdState` names them
//!   (`{param}.momentum.velocity`), so checkpoints written by either optimizer load in the
//!   other.

use burn::optim::{RecordState, StateSink, StateSource, join_path};
use burn::prelude::*;

use crate::optim::FusedSgdState;

#[cfg(feature = "flex")]
pub(crate) use flex::*;

/// The record leaves of burn-optim's `SgdState`: `momentum.velocity`, absent without momentum.
const MOMENTUM: &str = "momentum";
const VELOCITY: &str = "velocity";

impl<const D: usize> RecordState for FusedSgdState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        if let Some(velocity) = &self.velocity {
            let path = join_path(prefix, MOMENTUM);
            out.push_tensor(&path, VELOCITY, velocity.clone().into_data());
        }
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        // As the derive does for `Option<MomentumState>`: nothing under `momentum` is no
        // momentum yet; a `momentum` without its velocity is no momentum either.
        let path = join_path(prefix, MOMENTUM);
        let velocity = match src.has_under(&path) {
            true => src
                .take_tensor(&path, VELOCITY)
                .map(|data| Tensor::from_data(data, device)),
            false => None,
        };
        Some(Self { velocity })
    }
}

#[cfg(feature = "flex")]
mod flex {
    use std::borrow::Cow;
    use std::sync::Arc;

    use burn::backend::autodiff::Autodiff;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::flex::FlexTensor;
    use burn::backend::{DispatchDevice, Flex, GradientCheckpointingStrategy};
    use burn::prelude::*;
    use burn::tensor::{DType, Shape};

    use crate::batch_norm::{
        BatchNormShape, EvalTail, batch_norm_train_backward, batch_norm_train_forward,
    };
    use crate::conv::Conv2dPlan;
    use crate::pool::{MaxPoolShape, max_pool2d_backward, max_pool2d_forward, max_pool2d_values};

    /// Whether `t` is an f32 tensor on flex, plain (`autodiff` false) or under autodiff
    /// without gradient checkpointing (`autodiff` true): the tensors the kernels are written
    /// for.
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

    /// A plain flex tensor, held to read its values.
    pub(crate) struct FlexRead(FlexTensor);

    impl FlexRead {
        /// Takes `t`, which the caller checked with [`is_flex_f32`]`(t, false)`.
        pub(crate) fn new<const D: usize>(t: Tensor<D>) -> Self {
            Self(t.try_into_primitive::<Flex>().expect("checked: flex"))
        }

        /// The values in row-major order, borrowed when the tensor is already laid out so.
        pub(crate) fn values(&self) -> Cow<'_, [f32]> {
            values(&self.0)
        }
    }

    /// A plain flex f32 tensor as a dense row-major buffer of its own, to write in place.
    pub(crate) struct FlexMut(FlexTensor);

    impl FlexMut {
        /// Takes `t`, which the caller checked with [`is_flex_f32`]`(t, false)`. Its buffer is
        /// written in place when it is dense and nobody else holds it; otherwise it is copied.
        pub(crate) fn take<const D: usize>(t: Tensor<D>) -> Self {
            Self(dense(
                t.try_into_primitive::<Flex>().expect("checked: flex"),
            ))
        }

        /// A new zero tensor of these dimensions.
        pub(crate) fn zeros<const D: usize>(dims: [usize; D]) -> Self {
            Self(FlexTensor::zeros(Shape::from(dims), DType::F32))
        }

        /// The values, row-major, to write.
        pub(crate) fn values_mut(&mut self) -> &mut [f32] {
            let n = self.0.layout().num_elements();
            &mut self.0.storage_mut::<f32>()[..n]
        }

        /// The tensor, as `dims`.
        pub(crate) fn into_tensor<const D: usize>(self, dims: [usize; D]) -> Tensor<D> {
            Tensor::<D>::from_primitive::<Flex>(self.0).reshape(dims)
        }
    }

    /// The values in row-major order, borrowed when the tensor is already laid out so.
    fn values(t: &FlexTensor) -> Cow<'_, [f32]> {
        match t.as_slice::<f32>() {
            Some(s) => s.into(),
            None => dense(t.clone())
                .as_slice::<f32>()
                .expect("dense f32")
                .to_vec()
                .into(),
        }
    }

    /// The tensor as a dense row-major buffer starting at offset 0 (itself when it already
    /// is), so that `storage_mut()[..n]` are its values; writing there copies only a shared
    /// buffer.
    fn dense(t: FlexTensor) -> FlexTensor {
        if t.is_contiguous() && t.layout().start_offset() == 0 {
            t
        } else {
            t.to_contiguous()
        }
    }

    /// A new tensor holding `values` in `dims`.
    fn from_values<const D: usize>(values: Vec<f32>, dims: [usize; D]) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, dims))
    }

    fn out_dims(plan: &Conv2dPlan) -> [usize; 4] {
        let s = plan.shape();
        let [ho, wo] = plan.output();
        [s.batch, s.out_channels, ho, wo]
    }

    /// `plan`'s convolution of `x` by `weight`, both checked with [`is_flex_f32`] in the same
    /// mode: plain, or under autodiff with [`ConvBackward`] registered as its backward.
    pub(crate) fn conv2d(plan: Conv2dPlan, x: Tensor<4>, weight: Tensor<4>) -> Tensor<4> {
        if x.device().is_autodiff() {
            let x = x
                .try_into_primitive::<Autodiff<Flex>>()
                .expect("checked: autodiff flex");
            let w = weight
                .try_into_primitive::<Autodiff<Flex>>()
                .expect("checked: autodiff flex");
            Tensor::from_primitive::<Autodiff<Flex>>(tracked(plan, x, w))
        } else {
            let x = x.try_into_primitive::<Flex>().expect("checked: flex");
            let w = weight.try_into_primitive::<Flex>().expect("checked: flex");
            let out = plan
                .infer(&values(&x), &values(&w))
                .expect("plan matches the tensors");
            Tensor::from_primitive::<Flex>(from_values(out, out_dims(&plan)))
        }
    }

    /// `plan`'s convolution of the plain flex tensors `x` and `weight` followed by eval
    /// BatchNorm `norm`, the residual and the ReLU ([`EvalTail`]).
    pub(crate) fn conv2d_then(
        plan: Conv2dPlan,
        x: Tensor<4>,
        weight: Tensor<4>,
        norm: &[[f32; 4]],
        residual: Option<Tensor<4>>,
        relu: bool,
    ) -> Tensor<4> {
        let [x, weight] = [x, weight].map(FlexRead::new);
        let residual = residual.map(FlexRead::new);
        let residual = residual.as_ref().map(|r| r.values());
        let tail = EvalTail {
            norm,
            residual: residual.as_deref(),
            relu,
        };
        let out = plan
            .infer_then(&x.values(), &weight.values(), Some(&tail))
            .expect("plan matches the tensors");
        Tensor::from_primitive::<Flex>(from_values(out, out_dims(&plan)))
    }

    /// What the backward pass needs: the plan and what the two gradients multiply by.
    #[derive(Debug, Clone)]
    struct Saved {
        plan: Arc<Conv2dPlan>,
        /// `col`, or the input itself.
        col: Kept,
        /// The live weight (or the convolution's matrix), or the weight itself.
        live_weight: Kept,
    }

    /// Values the backward reads: a tensor of the graph, shared rather than copied, or a
    /// buffer of the forward's own.
    #[derive(Debug, Clone)]
    enum Kept {
        Tensor(FlexTensor),
        Values(Arc<Vec<f32>>),
    }

    impl Kept {
        /// `values` when the forward made them, else the tensor.
        fn new(values: Option<Vec<f32>>, tensor: FlexTensor) -> Self {
            match values {
                Some(v) => Self::Values(Arc::new(v)),
                None => Self::Tensor(tensor),
            }
        }

        fn values(&self) -> Cow<'_, [f32]> {
            match self {
                Self::Tensor(t) => values(t),
                Self::Values(v) => v.as_slice().into(),
            }
        }
    }

    #[derive(Debug)]
    struct ConvBackward;

    impl Backward<Flex, 2> for ConvBackward {
        type State = Saved;

        fn backward(self, ops: Ops<Saved, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [node_x, node_w] = ops.parents;
            let grad = grads.consume::<Flex>(&ops.node);
            let grad = values(&grad);
            let Saved {
                plan,
                col,
                live_weight,
            } = ops.state;
            let s = *plan.shape();
            let want = [node_x.is_some(), node_w.is_some()];
            let (dx, dw) = plan
                .backward(&col.values(), &live_weight.values(), &grad, want)
                .expect("sizes from the forward");
            if let (Some(node), Some(dx)) = (node_x, dx) {
                let dims = [s.batch, s.in_channels, s.input[0], s.input[1]];
                grads.register::<Flex>(node.id, from_values(dx, dims));
            }
            if let (Some(node), Some(dw)) = (node_w, dw) {
                let dims = [s.out_channels, s.in_channels, s.kernel[0], s.kernel[1]];
                grads.register::<Flex>(node.id, from_values(dw, dims));
            }
        }
    }

    type AdTensor = burn::backend::tensor::FloatTensor<Autodiff<Flex>>;

    fn tracked(plan: Conv2dPlan, x: AdTensor, w: AdTensor) -> AdTensor {
        let (xp, xg) = x.into_parts();
        let (wp, wg) = w.into_parts();
        let dims = out_dims(&plan);
        let prep = ConvBackward
            .prepare::<NoCheckpointing>([xg, wg])
            .compute_bound()
            .stateful();
        let out = plan
            .forward(&values(&xp), &values(&wp))
            .expect("plan matches the tensors");
        match prep {
            OpsKind::Tracked(prep) => prep.finish(
                Saved {
                    plan: Arc::new(plan),
                    col: Kept::new(out.col, xp),
                    live_weight: Kept::new(out.live_weight, wp),
                },
                from_values(out.output, dims),
            ),
            OpsKind::UnTracked(prep) => prep.finish(from_values(out.output, dims)),
        }
    }

    /// What train-mode BatchNorm's backward needs: the input, gamma and the statistics.
    #[derive(Debug, Clone)]
    struct BatchNormSaved {
        x: FlexTensor,
        gamma: Arc<Vec<f32>>,
        mean: Arc<Vec<f32>>,
        variance: Arc<Vec<f32>>,
        shape: BatchNormShape,
        eps: f64,
    }

    #[derive(Debug)]
    struct BatchNormBackward;

    impl Backward<Flex, 3> for BatchNormBackward {
        type State = BatchNormSaved;

        fn backward(
            self,
            ops: Ops<BatchNormSaved, 3>,
            grads: &mut Gradients,
            _: &mut Checkpointer,
        ) {
            let [node_x, node_gamma, node_beta] = ops.parents;
            let grad = grads.consume::<Flex>(&ops.node);
            let s = ops.state;
            let dims = s.x.layout().shape().clone();
            let back = batch_norm_train_backward(
                &values(&s.x),
                &values(&grad),
                s.shape,
                &s.gamma,
                [&s.mean, &s.variance],
                s.eps,
            );
            if let Some(node) = node_x {
                grads.register::<Flex>(
                    node.id,
                    FlexTensor::from_data(TensorData::new(back.x, dims)),
                );
            }
            let channels = [s.shape.channels];
            if let Some(node) = node_gamma {
                grads.register::<Flex>(node.id, from_values(back.gamma, channels));
            }
            if let Some(node) = node_beta {
                grads.register::<Flex>(node.id, from_values(back.beta, channels));
            }
        }
    }

    /// Train-mode BatchNorm of `x [N, C, ...]` with the batch's own statistics, the three
    /// tensors checked with [`is_flex_f32`]`(_, true)`; its backward is [`BatchNormBackward`].
    /// The returned mean and variance are detached, as Burn's.
    pub(crate) fn batch_norm_train<const D: usize>(
        x: Tensor<D>,
        gamma: Tensor<1>,
        beta: Tensor<1>,
        eps: f64,
    ) -> burn::tensor::module::BatchNormTrainOutput<D> {
        let dims = x.dims();
        let shape = BatchNormShape {
            batch: dims[0],
            channels: dims[1],
            pixels: dims[2..].iter().product(),
        };
        let [(xp, xg), (gp, gg), (bp, bg)] = [
            x.try_into_primitive::<Autodiff<Flex>>(),
            gamma.try_into_primitive::<Autodiff<Flex>>(),
            beta.try_into_primitive::<Autodiff<Flex>>(),
        ]
        .map(|t| t.expect("checked: autodiff flex").into_parts());
        let gamma = values(&gp).into_owned();
        let fwd = batch_norm_train_forward(&values(&xp), shape, &gamma, &values(&bp), eps);
        let prep = BatchNormBackward
            .prepare::<NoCheckpointing>([xg, gg, bg])
            .compute_bound()
            .stateful();
        let output = from_values(fwd.output, dims);
        let output = match prep {
            OpsKind::Tracked(prep) => prep.finish(
                BatchNormSaved {
                    x: xp,
                    gamma: Arc::new(gamma),
                    mean: Arc::new(fwd.mean.clone()),
                    variance: Arc::new(fwd.variance.clone()),
                    shape,
                    eps,
                },
                output,
            ),
            OpsKind::UnTracked(prep) => prep.finish(output),
        };
        let detached = |v: Vec<f32>| {
            Tensor::from_primitive::<Autodiff<Flex>>(AdTensor::new(from_values(
                v,
                [shape.channels],
            )))
        };
        burn::tensor::module::BatchNormTrainOutput {
            output: Tensor::from_primitive::<Autodiff<Flex>>(output),
            mean: detached(fwd.mean),
            variance: detached(fwd.variance),
        }
    }

    /// What max pooling's backward needs: the shape and where each output came from.
    #[derive(Debug, Clone)]
    struct PoolSaved {
        shape: MaxPoolShape,
        indices: Arc<Vec<u32>>,
    }

    #[derive(Debug)]
    struct MaxPoolBackward;

    impl Backward<Flex, 1> for MaxPoolBackward {
        type State = PoolSaved;

        fn backward(self, ops: Ops<PoolSaved, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [node] = ops.parents;
            let grad = grads.consume::<Flex>(&ops.node);
            let PoolSaved { shape, indices } = ops.state;
            if let Some(node) = node {
                let dx = max_pool2d_backward(&values(&grad), &indices, shape);
                let [h, w] = shape.input;
                grads.register::<Flex>(
                    node.id,
                    from_values(dx, [shape.batch, shape.channels, h, w]),
                );
            }
        }
    }

    /// Max pooling of `x`, checked with [`is_flex_f32`] (plain, or under autodiff with
    /// [`MaxPoolBackward`] as its backward).
    pub(crate) fn max_pool2d(shape: MaxPoolShape, x: Tensor<4>) -> Tensor<4> {
        let [ho, wo] = shape.output();
        let dims = [shape.batch, shape.channels, ho, wo];
        if !x.device().is_autodiff() {
            let x = x.try_into_primitive::<Flex>().expect("checked: flex");
            let out = max_pool2d_values(&values(&x), shape);
            return Tensor::from_primitive::<Flex>(from_values(out, dims));
        }
        let x = x
            .try_into_primitive::<Autodiff<Flex>>()
            .expect("checked: autodiff flex");
        let (xp, xg) = x.into_parts();
        let (out, indices) = max_pool2d_forward(&values(&xp), shape);
        let prep = MaxPoolBackward
            .prepare::<NoCheckpointing>([xg])
            .compute_bound()
            .stateful();
        let out = from_values(out, dims);
        let out = match prep {
            OpsKind::Tracked(prep) => prep.finish(
                PoolSaved {
                    shape,
                    indices: Arc::new(indices),
                },
                out,
            ),
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        Tensor::from_primitive::<Autodiff<Flex>>(out)
    }
}
