//! cnnu's analysis side: the seed project's filter → reduce → cluster → purity pipeline and
//! the representation measures, the readers of recorded activations, and the run-level
//! summaries, plots and study report built on them.
//!
//! - [`numerics`]: the measures themselves, on the caller's arrays; no file I/O, no plotting.
//! - [`readers`]: everything that reads files (cnnu snapshots, MATLAB v5 `.mat` files).
//! - [`reporting`]: run-level outputs: summaries, aggregates, comparisons, figures, plots,
//!   the study report and the explorer page.
//! - I/O errors are `cnnu_run::IoError` (a path with its `std::io::Error`), shared with training.
//!
//! # Analyse your own arrays
//!
//! Rows are samples, columns features, row-major `f32`: a [`Matrix`](numerics::matrix::Matrix)
//! is checked once (shape, at least one row and column, every value finite), paired with one
//! label per row, and analysed as one layer would be (filter → PCA → HDBSCAN → purity, kNN
//! agreement, probe, …).
//!
//! ```
//! use cnnu_analysis::numerics::matrix::{Matrix, Representation};
//! use cnnu_analysis::numerics::pipeline::{AnalysisParams, analyze};
//! use cnnu_analysis::numerics::rng::SplitMix64;
//!
//! // Three well-separated blobs of 50 samples in 8 features.
//! let (n, d) = (150, 8);
//! let mut rng = SplitMix64::new(7);
//! let labels: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
//! let data: Vec<f32> = (0..n * d)
//!     .map(|i| {
//!         let centre = if (i % d) % 3 == (labels[i / d] as usize) { 10.0 } else { 0.0 };
//!         (centre + rng.normal()) as f32
//!     })
//!     .collect();
//! let rep = Representation::new(Matrix::new(data, n, d)?, labels)?;
//!
//! let params = AnalysisParams { min_cluster_size: 20, ..AnalysisParams::default() }.check()?;
//! let result = analyze(&rep, &params)?;
//! assert_eq!(result.agreement.n_clusters, 3);
//! assert!(result.agreement.purity_with_noise > 0.95);
//! assert!(result.knn_agreement > 0.99 && result.probe_acc > 0.99);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # CKA of two representations
//!
//! Linear CKA compares two representations of the same samples, whatever their widths: it is
//! 1 for a representation and any rotation or isotropic scaling of it, and near 0 for
//! unrelated ones.
//!
//! ```
//! use cnnu_analysis::numerics::dynamics::{Hsic, cka};
//! use cnnu_analysis::numerics::matrix::Matrix;
//! use cnnu_analysis::numerics::rng::SplitMix64;
//!
//! let (n, d) = (200, 6);
//! let mut rng = SplitMix64::new(1);
//! let mut random = |rows: usize, cols: usize| -> Vec<f32> {
//!     (0..rows * cols).map(|_| rng.normal() as f32).collect()
//! };
//! let x = random(n, d);
//! // Rotate every row in the plane of features 0 and 1, and scale it by 3.
//! let (c, s) = (0.6f32, 0.8f32);
//! let mut turned = x.clone();
//! for row in turned.chunks_mut(d) {
//!     let (a, b) = (row[0], row[1]);
//!     row[0] = c * a - s * b;
//!     row[1] = s * a + c * b;
//!     row.iter_mut().for_each(|v| *v *= 3.0);
//! }
//! let noise = random(n, 4);
//!
//! let x = Matrix::new(x, n, d)?;
//! assert!((cka(&x, &x, Hsic::Biased)? - 1.0).abs() < 1e-6);
//! assert!((cka(&x, &Matrix::new(turned, n, d)?, Hsic::Biased)? - 1.0).abs() < 1e-5);
//! assert!(cka(&x, &Matrix::new(noise, n, 4)?, Hsic::Unbiased)?.abs() < 0.1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod numerics;
pub mod readers;
pub mod reporting;
