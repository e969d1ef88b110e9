//! The run directory, owned in one place: where each file of a run lives, a typed view of its
//! `config.json`, the metrics line, how samples (snapshots) are named and versioned, the one
//! safetensors header reader, and the atomic writes every file goes through. Training writes
//! it and analysis reads it through this crate; it knows nothing of Burn. Beside it, what both
//! sides share: the one class-stratified sampler ([`stratified`]) and the one I/O-error
//! wrapper ([`IoError`]).

#![forbid(unsafe_code)]

pub mod atomic;
pub mod config;
pub mod dir;
pub mod header;
pub mod io_error;
pub mod metrics;
pub mod sample;
pub mod stratified;

pub use config::{ConfigViewError, RunConfigView};
pub use dir::RunDir;
pub use header::{HeaderError, SafetensorsHeader};
pub use io_error::IoError;
pub use metrics::{EpochMetrics, MetricsError, read_metrics, write_metrics};
pub use sample::{SampleFile, SampleName, SnapshotFormat, SnapshotFormatError};
