//! The numerics: reduce, cluster, measure, embed, on arrays the caller owns. Nothing here
//! reads or writes files or draws.

pub mod cluster;
pub mod dynamics;
pub mod embed;
pub mod matrix;
pub mod metrics;
pub mod pipeline;
pub mod reduce;
pub mod rng;
pub mod scores;
