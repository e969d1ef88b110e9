//! Adam and SGD with momentum as one in-place pass over each parameter tensor, behind Burn's
//! `Optimizer` trait.
//!
//! Why by hand: burn-optim's Adam is about thirteen separate tensor operations per parameter
//! (each a full pass over memory, each allocating), ~30 passes over the 45 MB of ResNet-18 per
//! step. Here one loop reads the parameter, its gradient and both moments once and writes the
//! parameter and the moments back, split over the cores in fixed chunks (each element is
//! independent, so the result does not depend on scheduling).
//!
//! The arithmetic is burn-optim's, operation for operation in f32, so the results are the
//! stock optimizer's (checked bit for bit in the tests), and the states are burn-optim's own
//! `AdamState` and `SgdState`: checkpoints written by the stock optimizers resume here and the
//! other way round. Off flex, or on a tensor that is not f32, they call the stock ones.

use burn::optim::momentum::{MomentumConfig, MomentumState};
use burn::optim::{
    Adam, AdamConfig, AdamState, AdaptiveMomentumState, LearningRate, ModuleOptimizer, Optimizer,
    Sgd, SgdConfig, SgdState,
};
use burn::prelude::*;
use rayon::prelude::*;

/// Elements per parallel task: large enough to amortise a task, small enough to split layer4.
const CHUNK: usize = 1 << 15;

/// Adam (Kingma & Ba) with burn-optim's formulation and state, fused on flex.
#[derive(Clone)]
pub struct FusedAdam {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    stock: Adam,
}

impl FusedAdam {
    /// Adam with these moments' decay rates and epsilon (no weight decay, no AMSGrad).
    pub fn new(beta_1: f32, beta_2: f32, epsilon: f32) -> Self {
        let stock = AdamConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(epsilon)
            .build();
        Self {
            beta_1,
            beta_2,
            epsilon,
            stock,
        }
    }

    /// The optimizer for a whole module.
    pub fn init(self) -> ModuleOptimizer {
        ModuleOptimizer::from(self)
    }
}

/// One Adam step on slices: `param`, `m` and `v` updated in place.
#[allow(clippy::too_many_arguments)]
pub fn adam_step(
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    lr: f32,
    [beta_1, beta_2, epsilon]: [f32; 3],
    time: i32,
    first: bool,
) {
    // burn-optim's scalars, computed the same way.
    let bias_correction2_sqrt = (1.0 - beta_2.powi(time)).sqrt();
    let combined_factor = bias_correction2_sqrt / (1.0 - beta_1.powi(time));
    let eps = epsilon * bias_correction2_sqrt;
    let (f1, f2) = (1.0 - beta_1, 1.0 - beta_2);
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .for_each(|((p, g), (m, v))| {
            for i in 0..p.len() {
                let g = g[i];
                let (mi, vi) = if first {
                    (g * f1, (g * g) * f2)
                } else {
                    (m[i] * beta_1 + g * f1, v[i] * beta_2 + (g * g) * f2)
                };
                m[i] = mi;
                v[i] = vi;
                let update = (mi * combined_factor) / (vi.sqrt() + eps);
                p[i] -= update * lr;
            }
        });
}

impl Optimizer for FusedAdam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamState<D>>,
    ) -> (Tensor<D>, Option<AdamState<D>>) {
        #[cfg(feature = "flex")]
        if flex::applies(&tensor, &grad, state.as_ref()) {
            return flex::step(self, lr, tensor, grad, state);
        }
        self.stock.step(lr, tensor, grad, state)
    }

    fn to_device<const D: usize>(state: AdamState<D>, device: &Device) -> AdamState<D> {
        Adam::to_device(state, device)
    }
}

/// SGD with momentum as PyTorch defines it (no dampening, no Nesterov, no weight decay), with
/// burn-optim's formulation and state, fused on flex.
#[derive(Clone)]
pub struct FusedSgd {
    momentum: f32,
    stock: Sgd,
}

impl FusedSgd {
    /// SGD with this momentum factor.
    pub fn new(momentum: f64) -> Self {
        let stock = SgdConfig::new()
            .with_momentum(Some(
                MomentumConfig::new()
                    .with_momentum(momentum)
                    .with_dampening(0.0),
            ))
            .build();
        Self {
            momentum: momentum as f32,
            stock,
        }
    }

    /// The optimizer for a whole module.
    pub fn init(self) -> ModuleOptimizer {
        ModuleOptimizer::from(self)
    }
}

/// One SGD step on slices: `velocity` (ignored on the first step) and `param` in place.
///
/// burn-optim's order: `v = g·(1 − 0) + v·μ` (the first step `v = g`), then `p = p − v·lr`;
/// `g·1` is `g` exactly, so it is left out.
pub fn sgd_step(
    param: &mut [f32],
    grad: &[f32],
    velocity: &mut [f32],
    lr: f32,
    momentum: f32,
    first: bool,
) {
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(velocity.par_chunks_mut(CHUNK))
        .for_each(|((p, g), v)| {
            for i in 0..p.len() {
                let vi = if first { g[i] } else { g[i] + v[i] * momentum };
                v[i] = vi;
                p[i] -= vi * lr;
            }
        });
}

impl Optimizer for FusedSgd {
    type State<const D: usize> = SgdState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<SgdState<D>>,
    ) -> (Tensor<D>, Option<SgdState<D>>) {
        #[cfg(feature = "flex")]
        if flex::sgd_applies(&tensor, &grad) {
            return flex::sgd(self, lr, tensor, grad, state);
        }
        self.stock.step(lr, tensor, grad, state)
    }

    fn to_device<const D: usize>(state: SgdState<D>, device: &Device) -> SgdState<D> {
        Sgd::to_device(state, device)
    }
}

/// The velocity held by a momentum state. burn-optim keeps the field private; its
/// `RecordState` flattening (what checkpoints are written from) is the public way to it.
fn velocity<const D: usize>(state: &MomentumState<D>) -> Option<TensorData> {
    use burn::optim::{RecordState, StateSink};
    let mut sink = StateSink::default();
    state.state_flatten("", &mut sink);
    sink.tensors.pop().map(|(_, data)| data)
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;
    use burn::tensor::DType;

    use super::*;
    use crate::flex_tensor::{dense, is_flex_f32, values};

    fn on_flex<const D: usize>(t: &Tensor<D>) -> bool {
        is_flex_f32(t, false)
    }

    pub(super) fn applies<const D: usize>(
        tensor: &Tensor<D>,
        grad: &Tensor<D>,
        state: Option<&AdamState<D>>,
    ) -> bool {
        on_flex(tensor)
            && on_flex(grad)
            && state.is_none_or(|s| {
                s.momentum.max_moment_2.is_none()
                    && on_flex(&s.momentum.moment_1)
                    && on_flex(&s.momentum.moment_2)
            })
    }

    /// The tensor's values in a dense buffer of its own when nobody else holds it.
    fn owned<const D: usize>(t: Tensor<D>) -> FlexTensor {
        dense(t.try_into_primitive::<Flex>().expect("checked: flex"))
    }

    pub(super) fn sgd_applies<const D: usize>(tensor: &Tensor<D>, grad: &Tensor<D>) -> bool {
        on_flex(tensor) && on_flex(grad)
    }

    pub(super) fn sgd<const D: usize>(
        sgd: &FusedSgd,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<SgdState<D>>,
    ) -> (Tensor<D>, Option<SgdState<D>>) {
        let dims = tensor.dims();
        let device = tensor.device();
        let mut param = owned(tensor);
        let grad = grad.try_into_primitive::<Flex>().expect("checked: flex");
        let n = param.layout().num_elements();
        let previous = state
            .and_then(|s| s.momentum)
            .and_then(|m| velocity(&m))
            .and_then(|data| data.convert::<f32>().try_into_vec::<f32>().ok())
            .filter(|v| v.len() == n);
        let first = previous.is_none();
        let mut v = previous.unwrap_or_else(|| vec![0.0; n]);
        sgd_step(
            &mut param.storage_mut::<f32>()[..n],
            &values(&grad),
            &mut v,
            lr as f32,
            sgd.momentum,
            first,
        );
        let velocity = Tensor::<D>::from_data(TensorData::new(v, dims), &device);
        let param = Tensor::<D>::from_primitive::<Flex>(param).reshape(dims);
        (
            param,
            Some(SgdState::new(Some(MomentumState::new(velocity)))),
        )
    }

    pub(super) fn step<const D: usize>(
        adam: &FusedAdam,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamState<D>>,
    ) -> (Tensor<D>, Option<AdamState<D>>) {
        let dims = tensor.dims();
        let mut param = owned(tensor);
        let grad = grad.try_into_primitive::<Flex>().expect("checked: flex");
        let n = param.layout().num_elements();
        let (time, mut m, mut v, first) = match state {
            Some(s) => (
                s.momentum.time + 1,
                owned(s.momentum.moment_1),
                owned(s.momentum.moment_2),
                false,
            ),
            None => {
                let zeros = || FlexTensor::zeros(param.layout().shape().clone(), DType::F32);
                (1, zeros(), zeros(), true)
            }
        };
        adam_step(
            &mut param.storage_mut::<f32>()[..n],
            &values(&grad),
            &mut m.storage_mut::<f32>()[..n],
            &mut v.storage_mut::<f32>()[..n],
            lr as f32,
            [adam.beta_1, adam.beta_2, adam.epsilon],
            time as i32,
            first,
        );
        let wrap = |t: FlexTensor| Tensor::<D>::from_primitive::<Flex>(t).reshape(dims);
        let momentum = AdaptiveMomentumState {
            time,
            moment_1: wrap(m),
            moment_2: wrap(v),
            max_moment_2: None,
        };
        (wrap(param), Some(AdamState { momentum }))
    }
}
