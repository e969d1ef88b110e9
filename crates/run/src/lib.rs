//! The run directory, owned in one place: where each file of a run lives, the metrics line,
//! how samples (snapshots) are named and versioned, and the atomic writes every file goes
//! through. Training writes it and analysis reads it through this crate; it knows nothing of
//! Burn. Beside it, the one class-stratified sampler both sides use ([`stratified`]).

#![forbid(unsafe_code)]

pub mod atomic;
pub mod dir;
pub mod metrics;
pub mod sample;
pub mod stratified;

pub use dir::RunDir;
pub use metrics::{EpochMetrics, MetricsError, read_metrics, write_metrics};
pub use sample::{SampleFile, SampleName, SnapshotFormat, SnapshotFormatError};
