//! cnnu's analysis side: reading recorded activations (cnnu snapshots, MATLAB v5 files) and
//! the seed project's filter → reduce → cluster → purity pipeline, with the measures,
//! plots, run summaries and the study report built on it.

pub mod cluster;
pub mod dynamics;
pub mod embed;
pub mod mat;
pub mod metrics;
pub mod pipeline;
pub mod plot;
pub mod reduce;
pub mod report;
pub mod rng;
pub mod scores;
pub mod source;
pub mod summary;
