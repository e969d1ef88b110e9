//! The filter step: keep the features whose mean activity on a class (or on every sample) is
//! above a threshold.

use rayon::prelude::*;

use super::ReduceError;
use super::data::{SUM_CHUNKS, add_vecs, check_shape, find_non_finite};

/// Which samples decide whether a feature is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterClass {
    /// Only the samples with this label (the seed uses class 0).
    Class(i64),
    /// Every sample.
    All,
}

/// The features kept by [`filter_features`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterResult {
    /// Indices of the kept features, ascending.
    pub kept: Vec<usize>,
    /// The number of features before filtering.
    pub d_total: usize,
}

/// Keeps feature `j` when the mean of `|x_ij|` over the samples of `class` (or over all samples)
/// is above `threshold` (the seed uses class 0 and 1e-3).
///
/// Means are accumulated in f64 and compared with the f32 threshold's exact value.
pub fn filter_features(
    x: &[f32],
    n: usize,
    d: usize,
    labels: &[i64],
    class: FilterClass,
    threshold: f32,
) -> Result<FilterResult, ReduceError> {
    check_shape(x, n, d)?;
    if labels.len() != n {
        return Err(ReduceError::LabelCount {
            labels: labels.len(),
            n,
        });
    }
    if !threshold.is_finite() {
        return Err(ReduceError::InvalidThreshold(threshold));
    }
    let rows: Vec<usize> = match class {
        FilterClass::All => (0..n).collect(),
        FilterClass::Class(c) => (0..n).filter(|&i| labels[i] == c).collect(),
    };
    if rows.is_empty() {
        // Only reachable for a class (n > 0 was checked).
        let FilterClass::Class(c) = class else {
            unreachable!("n > 0")
        };
        return Err(ReduceError::EmptyClass(c));
    }
    // Fixed chunks summed in order: the same bits on every run, whatever rayon's scheduling.
    let sums = rows
        .par_chunks(rows.len().div_ceil(SUM_CHUNKS))
        .map(|chunk| {
            let mut acc = vec![0f64; d];
            for &i in chunk {
                for (a, &v) in acc.iter_mut().zip(&x[i * d..(i + 1) * d]) {
                    *a += f64::from(v.abs());
                }
            }
            acc
        })
        .collect::<Vec<_>>()
        .into_iter()
        .reduce(add_vecs)
        .unwrap_or_else(|| vec![0f64; d]);
    if sums.iter().any(|s| !s.is_finite()) {
        return Err(find_non_finite(x, d, rows.iter().copied()));
    }
    let count = rows.len() as f64;
    let t = f64::from(threshold);
    let kept: Vec<usize> = (0..d).filter(|&j| sums[j] / count > t).collect();
    if kept.is_empty() {
        return Err(ReduceError::AllFiltered {
            d_total: d,
            threshold,
        });
    }
    Ok(FilterResult { kept, d_total: d })
}

/// Copies the columns `kept` of `x` (`[n, d]`, row-major) into a new row-major `[n, kept.len()]`
/// buffer.
///
/// # Panics
/// If `x.len() != n·d` or an index in `kept` is `≥ d` (both are programming errors: `kept` comes
/// from [`filter_features`] on the same data).
pub fn select_columns(x: &[f32], n: usize, d: usize, kept: &[usize]) -> Vec<f32> {
    assert_eq!(
        x.len(),
        n * d,
        "select_columns: x holds {} values, not {n} × {d}",
        x.len()
    );
    assert!(
        kept.iter().all(|&j| j < d),
        "select_columns: a kept index is ≥ d = {d}"
    );
    let k = kept.len();
    let mut out = vec![0f32; n * k];
    if k == 0 {
        return out;
    }
    out.par_chunks_mut(k)
        .zip(x.par_chunks(d))
        .for_each(|(dst, row)| {
            for (o, &j) in dst.iter_mut().zip(kept) {
                *o = row[j];
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_keeps_the_hand_worked_columns() {
        // 4 samples × 5 features; labels 0, 1, 0, 2.
        #[rustfmt::skip]
        let x: Vec<f32> = vec![
            0.0,  0.5, -0.002, 0.0,   1.0,
            9.0,  0.0,  0.0,   0.0,   1.0,
            0.0, -0.5,  0.0,   0.001, 1.0,
            9.0,  0.0,  0.0,   0.0,   1.0,
        ];
        let labels = [0, 1, 0, 2];
        // Class 0 (rows 0 and 2): mean |x| = [0, 0.5, 0.001, 0.0005, 1].
        let f = filter_features(&x, 4, 5, &labels, FilterClass::Class(0), 1e-3).expect("filter");
        assert_eq!(f.kept, vec![1, 4]); // 0.001 is not > 0.001
        assert_eq!(f.d_total, 5);
        let f = filter_features(&x, 4, 5, &labels, FilterClass::Class(0), 4e-4).expect("filter");
        assert_eq!(f.kept, vec![1, 2, 3, 4]);
        // All samples: mean |x| = [4.5, 0.25, 0.0005, 0.00025, 1].
        let f = filter_features(&x, 4, 5, &labels, FilterClass::All, 1e-3).expect("filter");
        assert_eq!(f.kept, vec![0, 1, 4]);
        assert_eq!(
            select_columns(&x, 4, 5, &f.kept),
            vec![0.0, 0.5, 1.0, 9.0, 0.0, 1.0, 0.0, -0.5, 1.0, 9.0, 0.0, 1.0]
        );
        assert!(matches!(
            filter_features(&x, 4, 5, &labels, FilterClass::Class(7), 1e-3),
            Err(ReduceError::EmptyClass(7))
        ));
        assert!(matches!(
            filter_features(&x, 4, 5, &labels, FilterClass::Class(2), 10.0),
            Err(ReduceError::AllFiltered { d_total: 5, .. })
        ));
        assert!(matches!(
            filter_features(&x, 4, 5, &labels[..3], FilterClass::All, 1e-3),
            Err(ReduceError::LabelCount { labels: 3, n: 4 })
        ));
        let mut bad = x.clone();
        bad[7] = f32::NAN;
        assert!(matches!(
            filter_features(&bad, 4, 5, &labels, FilterClass::All, 1e-3),
            Err(ReduceError::NonFinite { row: 1, col: 2, .. })
        ));
    }
}
