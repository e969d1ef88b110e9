//! cnnu's training side: the image datasets, the training loop, per-epoch sampling of the frozen network
//! into streamed safetensors snapshots, checkpoints and resume.

#![forbid(unsafe_code)]

pub mod cifar;
pub mod config;
pub mod dataset;
pub mod download;
pub mod idx;
pub mod probe;
pub mod progress;
pub mod snapshot;
pub mod tensor_file;
pub mod trainer;

pub use cnnu_run::{EpochMetrics, RunDir};
pub use config::{
    ConfigError, DEFAULT_TAPS, OptimizerKind, SampleAt, TrainConfig, ValidTrainConfig,
};
pub use dataset::{DataSource, DatasetError, DatasetKind, ImageDataset, ImageSplit};
pub use idx::IdxError;
pub use probe::{ProbeError, probe};
pub use progress::TrainProgress;
pub use snapshot::{SnapshotError, SnapshotWriter};
pub use tensor_file::{NamedTensor, TensorFileError};
pub use trainer::{RunConfig, RunOptions, RunSummary, TrainError, train};
