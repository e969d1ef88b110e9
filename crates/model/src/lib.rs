//! cnnu's model: the basic-block ResNets (18, 34) in torchvision's topology, every layer
//! tappable by its torchvision name, loading and saving PyTorch (torchvision-keyed
//! safetensors) weights.

#![forbid(unsafe_code)]

pub mod backend;
pub mod formula;
pub mod resnet;
pub mod taps;
pub mod weights;

pub use backend::{BACKEND_ENV, BackendError, BackendKind};
pub use resnet::{BasicBlock, ModelError, ResNet, ResNetArch, ResNetConfig, TapOutputs, TapTensor};
pub use taps::{Catalogue, TapError, TapInfo, TapKind, TapSet};
pub use weights::WeightsError;
