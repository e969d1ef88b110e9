//! cnnu's training side: probing the frozen network and writing what it records.

pub mod atomic;
pub mod probe;
pub mod tensor_file;

pub use probe::{ProbeError, probe};
pub use tensor_file::{NamedTensor, TensorFileError};
