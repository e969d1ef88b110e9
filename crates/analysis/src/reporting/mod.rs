//! Run-level outputs: a run's summary, aggregates over runs, comparisons, the figure
//! catalogue, plots, the study report and the explorer page.

pub mod aggregate;
pub mod compare;
pub mod explorer;
pub mod figures;
pub mod layer;
pub mod plot;
pub mod report;
pub mod summary;
