//! cnnu's analysis side: the seed project's filter → reduce → cluster → purity pipeline and
//! the representation measures, the readers of recorded activations, and the run-level
//! summaries, plots and study report built on them.
//!
//! - [`numerics`]: the measures themselves, on the caller's arrays; no file I/O, no plotting.
//! - [`readers`]: everything that reads files (cnnu snapshots, MATLAB v5 `.mat` files).
//! - [`reporting`]: run-level outputs: summaries, aggregates, comparisons, figures, plots,
//!   the study report and the explorer page.

pub mod numerics;
pub mod readers;
pub mod reporting;
