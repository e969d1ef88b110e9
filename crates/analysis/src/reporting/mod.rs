//! Run-level outputs: a run's summary, aggregates over runs, comparisons, the figure
//! catalogue, plots, the study report and the explorer page; and the comparison of two
//! activation files (`similarity`).

pub mod aggregate;
pub mod compare;
pub mod explorer;
pub mod figures;
pub mod layer;
pub mod plot;
pub mod report;
pub mod similarity;
pub mod summary;
