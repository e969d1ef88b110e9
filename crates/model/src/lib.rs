//! cnnu's model: ResNet18 in torchvision's topology, every layer tappable by its torchvision
//! name, loading and saving PyTorch (torchvision-keyed safetensors) weights.

pub mod backend;
pub mod resnet;
pub mod taps;
pub mod weights;

pub use backend::{BackendError, BackendKind};
pub use resnet::{BasicBlock, ModelError, ResNet18, ResNet18Config, TapOutputs, TapTensor};
pub use taps::{TapError, TapInfo, TapKind, TapSet, catalogue};
pub use weights::WeightsError;
