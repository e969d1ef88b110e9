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
//! stock optimizer's (checked bit for bit in the tests). Adam's state is burn-optim's own
//! `AdamState`; SGD's is [`FusedSgdState`], whose checkpoint leaves are named as burn-optim's
//! `SgdState`'s: checkpoints written by the stock optimizers resume here and the other way
//! round. Off flex, or on a tensor that is not f32, Adam calls the stock one and SGD runs
//! burn-optim's arithmetic as Burn tensor operations.
//!
//! A state whose length is not its parameter's is a [`StateError`] (from `try_step`; the
//! `Optimizer` trait has no error channel, so its `step` panics with that error), never a
//! silent restart of the state.

use burn::optim::{
    Adam, AdamConfig, AdamState, AdaptiveMomentumState, LearningRate, ModuleOptimizer, Optimizer,
};
use burn::prelude::*;
use rayon::prelude::*;

use multiversion::multiversion;

/// PyTorch's SGD momentum has none; burn-optim multiplies the gradient by `1 − dampening`.
const DAMPENING: f64 = 0.0;

/// Elements per parallel task: large enough to amortise a task, small enough to split layer4.
const CHUNK: usize = 1 << 15;

/// A slice handed to a step function that does not have the parameter's length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// The slice `what` has `got` values, the parameter `expected`.
    #[error("{what} has {got} values, the parameter has {expected}")]
    Length {
        /// Which slice: "gradient", "first moment", "second moment" or "velocity".
        what: &'static str,
        /// Its length.
        got: usize,
        /// The parameter's length.
        expected: usize,
    },
}

/// An optimizer state that does not fit its parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The state tensor `state` has `got` values, its parameter `expected`.
    #[error("the {state} of {param} has {got} values, the parameter has {expected}")]
    Length {
        /// The parameter, as far as the step knows it (its shape).
        param: String,
        /// Which state tensor: "first moment", "second moment", "max second moment" or
        /// "velocity".
        state: &'static str,
        /// The state's length.
        got: usize,
        /// The parameter's length.
        expected: usize,
    },
}

/// Checks that every slice in `others` has `expected` values.
fn check_slices(expected: usize, others: &[(&'static str, usize)]) -> Result<(), StepError> {
    match others.iter().find(|(_, got)| *got != expected) {
        Some(&(what, got)) => Err(StepError::Length {
            what,
            got,
            expected,
        }),
        None => Ok(()),
    }
}

/// Checks that every state tensor in `states` has as many values as `param`.
fn check_state<const D: usize>(
    param: &Tensor<D>,
    states: &[(&'static str, Option<&Tensor<D>>)],
) -> Result<(), StateError> {
    let len = |t: &Tensor<D>| t.dims().iter().product::<usize>();
    let expected = len(param);
    for &(state, tensor) in states {
        match tensor.map(len) {
            Some(got) if got != expected => {
                return Err(StateError::Length {
                    param: format!("the parameter of shape {:?}", param.dims()),
                    state,
                    got,
                    expected,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

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

    /// One step of `tensor` by `grad`, or the error of a `state` whose moments do not have the
    /// parameter's length.
    pub fn try_step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamState<D>>,
    ) -> Result<(Tensor<D>, Option<AdamState<D>>), StateError> {
        if let Some(AdamState { momentum: m }) = &state {
            check_state(
                &tensor,
                &[
                    ("first moment", Some(&m.moment_1)),
                    ("second moment", Some(&m.moment_2)),
                    ("max second moment", m.max_moment_2.as_ref()),
                ],
            )?;
        }
        #[cfg(feature = "flex")]
        if flex::adam_applies(&tensor, &grad, state.as_ref()) {
            return Ok(flex::adam(self, lr, tensor, grad, state));
        }
        Ok(self.stock.step(lr, tensor, grad, state))
    }
}

/// One Adam step on slices: `param`, `m` and `v` updated in place (`m` and `v` are ignored on
/// the `first` step). All four slices must have the same length.
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
) -> Result<(), StepError> {
    check_slices(
        param.len(),
        &[
            ("gradient", grad.len()),
            ("first moment", m.len()),
            ("second moment", v.len()),
        ],
    )?;
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
            let scalars = [beta_1, beta_2, f1, f2, combined_factor, eps, lr];
            adam_chunk(p, g, m, v, scalars, first)
        });
    Ok(())
}

/// [`adam_step`] on one chunk; `[β1, β2, 1 − β1, 1 − β2, bias factor, ε', lr]` as burn-optim
/// computes them.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn adam_chunk(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: [f32; 7], first: bool) {
    let [beta_1, beta_2, f1, f2, combined_factor, eps, lr] = s;
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let (mi, vi) = if first {
            (g * f1, (g * g) * f2)
        } else {
            (*m * beta_1 + g * f1, *v * beta_2 + (g * g) * f2)
        };
        *m = mi;
        *v = vi;
        let update = (mi * combined_factor) / (vi.sqrt() + eps);
        *p -= update * lr;
    }
}

impl Optimizer for FusedAdam {
    type State<const D: usize> = AdamState<D>;

    /// [`FusedAdam::try_step`].
    ///
    /// # Panics
    ///
    /// With the [`StateError`] of a state that does not fit its parameter.
    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamState<D>>,
    ) -> (Tensor<D>, Option<AdamState<D>>) {
        self.try_step(lr, tensor, grad, state)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn to_device<const D: usize>(state: AdamState<D>, device: &Device) -> AdamState<D> {
        Adam::to_device(state, device)
    }
}

/// SGD with momentum as PyTorch defines it (no dampening, no Nesterov, no weight decay), with
/// burn-optim's formulation, fused on flex.
#[derive(Clone)]
pub struct FusedSgd {
    momentum: f32,
}

/// The state of [`FusedSgd`] for one parameter: its velocity, none before the first step.
///
/// burn-optim's `SgdState` holds the same tensor in a `MomentumState` that keeps it private;
/// this one is read directly. In a checkpoint both are the leaf `momentum.velocity`, so either
/// loads the other's.
#[derive(Clone, Debug)]
pub struct FusedSgdState<const D: usize> {
    /// `v` of `v = g + v·μ`.
    pub velocity: Option<Tensor<D>>,
}

impl FusedSgd {
    /// SGD with this momentum factor.
    pub fn new(momentum: f64) -> Self {
        Self {
            // As burn-optim's `Momentum` holds it (`elem()` of the f64).
            momentum: momentum as f32,
        }
    }

    /// The optimizer for a whole module.
    pub fn init(self) -> ModuleOptimizer {
        ModuleOptimizer::from(self)
    }

    /// One step of `tensor` by `grad`, or the error of a `state` whose velocity does not have
    /// the parameter's length.
    pub fn try_step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<FusedSgdState<D>>,
    ) -> Result<(Tensor<D>, Option<FusedSgdState<D>>), StateError> {
        let velocity = state.and_then(|s| s.velocity);
        check_state(&tensor, &[("velocity", velocity.as_ref())])?;
        #[cfg(feature = "flex")]
        if flex::sgd_applies(&tensor, &grad, velocity.as_ref()) {
            return Ok(flex::sgd(self, lr, tensor, grad, velocity));
        }
        // burn-optim's `Momentum::transform` (dampening 0) and `Sgd::step`, operation for
        // operation.
        let velocity = match velocity {
            Some(v) => grad
                .mul_scalar(1.0 - DAMPENING)
                .add(v.mul_scalar(self.momentum)),
            None => grad,
        };
        let delta = velocity.clone().mul_scalar(lr);
        Ok((
            tensor - delta,
            Some(FusedSgdState {
                velocity: Some(velocity),
            }),
        ))
    }
}

/// One SGD step on slices: `velocity` (ignored on the `first` step) and `param` in place. All
/// three slices must have the same length.
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
) -> Result<(), StepError> {
    check_slices(
        param.len(),
        &[("gradient", grad.len()), ("velocity", velocity.len())],
    )?;
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(velocity.par_chunks_mut(CHUNK))
        .for_each(|((p, g), v)| sgd_chunk(p, g, v, [lr, momentum], first));
    Ok(())
}

/// [`sgd_step`] on one chunk, `[lr, momentum]`.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn sgd_chunk(p: &mut [f32], g: &[f32], v: &mut [f32], [lr, momentum]: [f32; 2], first: bool) {
    for ((p, &g), v) in p.iter_mut().zip(g).zip(v.iter_mut()) {
        let vi = if first { g } else { g + *v * momentum };
        *v = vi;
        *p -= vi * lr;
    }
}

impl Optimizer for FusedSgd {
    type State<const D: usize> = FusedSgdState<D>;

    /// [`FusedSgd::try_step`].
    ///
    /// # Panics
    ///
    /// With the [`StateError`] of a state that does not fit its parameter.
    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<FusedSgdState<D>>,
    ) -> (Tensor<D>, Option<FusedSgdState<D>>) {
        self.try_step(lr, tensor, grad, state)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn to_device<const D: usize>(state: FusedSgdState<D>, device: &Device) -> FusedSgdState<D> {
        FusedSgdState {
            velocity: state.velocity.map(|v| v.to_device(device)),
        }
    }
}

/// The fused steps on flex tensors, through [`glue`](crate::glue)'s slices.
#[cfg(feature = "flex")]
mod flex {
    use super::*;
    use crate::glue::{FlexMut, FlexRead, is_flex_f32};

    fn on_flex<const D: usize>(t: &Tensor<D>) -> bool {
        is_flex_f32(t, false)
    }

    pub(super) fn adam_applies<const D: usize>(
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

    pub(super) fn adam<const D: usize>(
        adam: &FusedAdam,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamState<D>>,
    ) -> (Tensor<D>, Option<AdamState<D>>) {
        let dims = tensor.dims();
        let mut param = FlexMut::take(tensor);
        let grad = FlexRead::new(grad);
        let (time, mut m, mut v, first) = match state {
            Some(s) => (
                s.momentum.time + 1,
                FlexMut::take(s.momentum.moment_1),
                FlexMut::take(s.momentum.moment_2),
                false,
            ),
            None => (1, FlexMut::zeros(dims), FlexMut::zeros(dims), true),
        };
        adam_step(
            param.values_mut(),
            &grad.values(),
            m.values_mut(),
            v.values_mut(),
            lr as f32,
            [adam.beta_1, adam.beta_2, adam.epsilon],
            time as i32,
            first,
        )
        .expect("state lengths checked, gradient of the parameter's shape");
        let momentum = AdaptiveMomentumState {
            time,
            moment_1: m.into_tensor(dims),
            moment_2: v.into_tensor(dims),
            max_moment_2: None,
        };
        (param.into_tensor(dims), Some(AdamState { momentum }))
    }

    pub(super) fn sgd_applies<const D: usize>(
        tensor: &Tensor<D>,
        grad: &Tensor<D>,
        velocity: Option<&Tensor<D>>,
    ) -> bool {
        on_flex(tensor) && on_flex(grad) && velocity.is_none_or(on_flex)
    }

    pub(super) fn sgd<const D: usize>(
        sgd: &FusedSgd,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        velocity: Option<Tensor<D>>,
    ) -> (Tensor<D>, Option<FusedSgdState<D>>) {
        let dims = tensor.dims();
        let mut param = FlexMut::take(tensor);
        let grad = FlexRead::new(grad);
        let first = velocity.is_none();
        let mut v = match velocity {
            Some(v) => FlexMut::take(v),
            None => FlexMut::zeros(dims),
        };
        sgd_step(
            param.values_mut(),
            &grad.values(),
            v.values_mut(),
            lr as f32,
            sgd.momentum,
            first,
        )
        .expect("state length checked, gradient of the parameter's shape");
        let velocity = Some(v.into_tensor(dims));
        (param.into_tensor(dims), Some(FusedSgdState { velocity }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_functions_refuse_slices_of_other_lengths() {
        let (mut p, g, mut m, mut v) = (vec![1.0; 4], vec![0.5; 4], vec![0.0; 4], vec![0.0; 3]);
        let err =
            adam_step(&mut p, &g, &mut m, &mut v, 0.1, [0.9, 0.999, 1e-8], 1, true).unwrap_err();
        assert_eq!(
            err,
            StepError::Length {
                what: "second moment",
                got: 3,
                expected: 4
            }
        );
        assert_eq!(p, vec![1.0; 4], "nothing written");
        let err = sgd_step(&mut p, &g[..2], &mut m, 0.1, 0.9, true).unwrap_err();
        assert_eq!(
            err,
            StepError::Length {
                what: "gradient",
                got: 2,
                expected: 4
            }
        );
        let mut short = vec![0.0; 5];
        let err = sgd_step(&mut p, &g, &mut short, 0.1, 0.9, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "velocity has 5 values, the parameter has 4"
        );
        assert_eq!(p, vec![1.0; 4], "nothing written");
    }

    #[test]
    fn step_functions_take_slices_of_equal_lengths() {
        let (mut p, g, mut v) = (vec![1.0f32; 3], vec![0.5f32; 3], vec![0.0f32; 3]);
        sgd_step(&mut p, &g, &mut v, 0.1, 0.9, true).unwrap();
        assert_eq!(v, vec![0.5; 3]);
        assert_eq!(p, vec![1.0 - 0.5 * 0.1; 3]);
        let (mut m, mut v2) = (vec![0.0f32; 3], vec![0.0f32; 3]);
        adam_step(
            &mut p,
            &g,
            &mut m,
            &mut v2,
            0.1,
            [0.9, 0.999, 1e-8],
            1,
            true,
        )
        .unwrap();
        assert!(m.iter().all(|&x| x == 0.5 * (1.0 - 0.9)));
    }
}
