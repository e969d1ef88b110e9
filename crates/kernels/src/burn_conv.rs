//! The batch-wide convolution plugged into Burn: on the flex backend it runs
//! [`Conv2dPlan`](crate::conv::Conv2dPlan), and under autodiff its backward is registered as a
//! custom node (`burn_autodiff::ops::Backward`, the way burn-autodiff registers its own conv).
//! Any other backend (wgpu, cuda, ndarray), an unsupported option (groups, dilation, bias,
//! asymmetric padding) or a non-f32 tensor takes Burn's own `conv2d`.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;

#[cfg(feature = "flex")]
use crate::conv::Conv2dShape;

/// The convolution a `Conv2d` module computes, on the fast path where it applies.
pub fn conv2d_module(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let symmetric = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            Some([top, left])
        }
        PaddingConfig2d::Valid => Some([0, 0]),
        _ => None,
    };
    match symmetric {
        Some(padding) if conv.bias.is_none() && conv.groups == 1 && conv.dilation == [1, 1] => {
            conv2d(x, conv.weight.val(), conv.stride, padding)
        }
        _ => conv.forward(x),
    }
}

/// `conv2d(x, weight)` with groups 1, dilation 1, no bias and symmetric zero padding.
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    stride: [usize; 2],
    padding: [usize; 2],
) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if flex::applies(&x, &weight) {
        let [batch, in_channels, h, w] = x.dims();
        let [out_channels, weight_in, kh, kw] = weight.dims();
        let shape = Conv2dShape {
            batch,
            in_channels,
            input: [h, w],
            out_channels,
            kernel: [kh, kw],
            stride,
            padding,
        };
        // A shape the plan refuses goes to Burn, which reports it in its own words.
        if let (true, Ok(plan)) = (weight_in == in_channels, shape.plan()) {
            return flex::conv2d(plan, x, weight);
        }
    }
    burn_conv2d(
        x,
        weight,
        None,
        ConvOptions::new(stride, padding, [1, 1], 1),
    )
}

#[cfg(feature = "flex")]
mod flex {
    use std::sync::Arc;

    use burn::backend::Flex;
    use burn::backend::autodiff::Autodiff;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::prelude::*;

    use crate::conv::Conv2dPlan;
    use crate::flex_tensor::{from_values as tensor, is_flex_f32, values};

    /// Whether both tensors are f32 on flex, both plain or both under autodiff.
    pub(super) fn applies(x: &Tensor<4>, weight: &Tensor<4>) -> bool {
        [false, true]
            .into_iter()
            .any(|ad| is_flex_f32(x, ad) && is_flex_f32(weight, ad))
    }

    fn out_dims(plan: &Conv2dPlan) -> [usize; 4] {
        let s = plan.shape();
        let [ho, wo] = plan.output();
        [s.batch, s.out_channels, ho, wo]
    }

    pub(super) fn conv2d(plan: Conv2dPlan, x: Tensor<4>, weight: Tensor<4>) -> Tensor<4> {
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
            Tensor::from_primitive::<Flex>(tensor(out, out_dims(&plan)))
        }
    }

    /// What the backward pass needs: the plan, `col` and the live weight of the forward.
    #[derive(Debug, Clone)]
    struct Saved {
        plan: Arc<Conv2dPlan>,
        col: Arc<Vec<f32>>,
        live_weight: Arc<Vec<f32>>,
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
                .backward(&col, &live_weight, &grad, want)
                .expect("sizes from the forward");
            if let (Some(node), Some(dx)) = (node_x, dx) {
                let dims = [s.batch, s.in_channels, s.input[0], s.input[1]];
                grads.register::<Flex>(node.id, tensor(dx, dims));
            }
            if let (Some(node), Some(dw)) = (node_w, dw) {
                let dims = [s.out_channels, s.in_channels, s.kernel[0], s.kernel[1]];
                grads.register::<Flex>(node.id, tensor(dw, dims));
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
                    col: Arc::new(out.col),
                    live_weight: Arc::new(out.live_weight),
                },
                tensor(out.output, dims),
            ),
            OpsKind::UnTracked(prep) => prep.finish(tensor(out.output, dims)),
        }
    }
}
