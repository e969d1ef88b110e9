//! CPU kernels that Burn's CPU backend (flex) lacks, plugged into Burn so that the model code
//! stays backend-agnostic: other backends take Burn's own operations.
//!
//! - [`conv`]: 2-D convolution as one GEMM over the whole batch, live kernel taps only, with
//!   batch-wide weight and input gradients (pure slices, no Burn types);
//! - [`burn_conv`]: that convolution as a Burn operation, with its backward registered in
//!   Burn's autodiff graph on flex, and at eval time fused with the BatchNorm, residual and
//!   ReLU after it;
//! - [`batch_norm`]: eval-mode BatchNorm as one pass (or as the tail of a convolution),
//!   Burn's arithmetic bit for bit, and
//!   train-mode BatchNorm as three passes forward and two backward (PyTorch's arithmetic);
//! - [`pool`]: 2-D max pooling as one pass per plane, with its backward;
//! - [`optim`]: Adam and SGD with momentum as one in-place pass per parameter, burn-optim's
//!   arithmetic and checkpoint format;
//! - [`memory`]: the allocator setting that keeps freed buffers for the next step.
//!
//! The hot loops here (im2col, col2im, BatchNorm, the max pool, Adam) are compiled a second and
//! third time for AVX-512 and for AVX2+FMA by `multiversion`, which picks one at run time: the
//! workspace builds for baseline x86-64, so one binary runs on any x86-64 CPU.
//!
//! Everything that reaches into Burn's internals (flex storage, autodiff registration, the
//! backend behind a device, optimizer record names) is in one private module, `glue`; the
//! modules above hold the numerics on slices and use Burn's public API.

pub mod batch_norm;
pub mod burn_conv;
pub mod conv;
mod glue;
pub mod memory;
pub mod optim;
pub mod pool;

pub use batch_norm::{EvalTail, batch_norm_eval, batch_norm_train};
pub use burn_conv::{conv2d, conv2d_bn_eval, conv2d_module};
pub use conv::{Conv2dPlan, Conv2dShape, ConvError};
pub use memory::keep_freed_memory;
pub use optim::{FusedAdam, FusedSgd, FusedSgdState, StateError, StepError};
pub use pool::max_pool2d_module;
