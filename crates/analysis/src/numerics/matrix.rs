//! The one way the caller's arrays enter the numerics: a [`Matrix`] of `n` samples (rows) by
//! `d` features (columns), row-major `f32`, checked once when it is made: the data holds
//! `n · d` values, `n ≥ 1`, `d ≥ 1`, and every value is finite. Everything downstream relies on
//! that and does not check again.
//!
//! An own type rather than faer's `Mat`: activations arrive row-major `f32` (one sample's
//! features after another, as snapshots, MAT files and numpy's `reshape` lay them out), and
//! every step here streams rows in that layout; faer's matrices are column-major, so wrapping
//! one would cost a transposed copy of the largest array in the analysis. Where a step needs
//! faer it views the slice itself ([`Matrix::as_slice`]).
//!
//! A [`Representation`] is a matrix with the samples' labels (and optionally the class names):
//! what the per-layer analysis and the label-aware measures take.

/// What is wrong with the arrays given to [`Matrix::new`] or [`Representation::new`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MatrixError {
    /// The data does not hold `n · d` values (or `n · d` overflows).
    #[error("the data holds {len} values, but n = {n} rows of d = {d} were declared")]
    Shape {
        /// Values given.
        len: usize,
        /// Declared rows.
        n: usize,
        /// Declared columns.
        d: usize,
    },
    /// No rows or no columns.
    #[error("a matrix needs at least one row and one column, got n = {n}, d = {d}")]
    Empty {
        /// Rows.
        n: usize,
        /// Columns.
        d: usize,
    },
    /// A value is NaN or infinite.
    #[error("activation at sample {row}, feature {col} is {value}")]
    NonFinite {
        /// Row of the first offending value.
        row: usize,
        /// Column of the first offending value.
        col: usize,
        /// The value itself.
        value: f32,
    },
    /// Labels and rows disagree.
    #[error("{labels} labels for {n} rows")]
    LabelCount {
        /// Labels given.
        labels: usize,
        /// Rows.
        n: usize,
    },
}

/// `n` samples × `d` features, row-major `f32`, finite, `n, d ≥ 1`.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    data: Vec<f32>,
    n: usize,
    d: usize,
}

impl Matrix {
    /// Takes `data` as `n` rows of `d` values each, after checking the shape and that every
    /// value is finite.
    pub fn new(data: Vec<f32>, n: usize, d: usize) -> Result<Self, MatrixError> {
        check(&data, n, d)?;
        Ok(Self { data, n, d })
    }

    /// [`Matrix::new`] on a copy of `data`.
    pub fn from_slice(data: &[f32], n: usize, d: usize) -> Result<Self, MatrixError> {
        check(data, n, d)?;
        Ok(Self {
            data: data.to_vec(),
            n,
            d,
        })
    }

    /// Rows (samples).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Columns (features).
    pub fn d(&self) -> usize {
        self.d
    }

    /// The values, row-major.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.d..(i + 1) * self.d]
    }

    /// The first `m` rows (all of them when `m ≥ n`); `m` must be at least 1.
    pub fn head(&self, m: usize) -> Self {
        let m = m.clamp(1, self.n);
        Self {
            data: self.data[..m * self.d].to_vec(),
            n: m,
            d: self.d,
        }
    }

    /// The values back, row-major.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }
}

/// [`Matrix`] in `f64`, with the same checks: for inputs whose precision matters more than their
/// memory (float64 arrays compared against published values, as `cnnu similarity` does), so
/// that nothing is rounded to `f32` on the way in.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix64 {
    data: Vec<f64>,
    n: usize,
    d: usize,
}

impl Matrix64 {
    /// Takes `data` as `n` rows of `d` values each, after checking the shape and that every
    /// value is finite.
    pub fn new(data: Vec<f64>, n: usize, d: usize) -> Result<Self, MatrixError> {
        if n == 0 || d == 0 {
            return Err(MatrixError::Empty { n, d });
        }
        if n.checked_mul(d) != Some(data.len()) {
            return Err(MatrixError::Shape {
                len: data.len(),
                n,
                d,
            });
        }
        if let Some(i) = first_non_finite(&data) {
            return Err(MatrixError::NonFinite {
                row: i / d,
                col: i % d,
                // NaN and ±inf survive the narrowing, which is all this field ever holds.
                value: data[i] as f32,
            });
        }
        Ok(Self { data, n, d })
    }

    /// Rows (samples).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Columns (features).
    pub fn d(&self) -> usize {
        self.d
    }

    /// The values, row-major.
    pub fn as_slice(&self) -> &[f64] {
        &self.data
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.d..(i + 1) * self.d]
    }

    /// The values rounded to `f32` (to nearest; magnitudes beyond `f32::MAX` become infinite,
    /// which [`Matrix::new`] then refuses).
    pub fn to_f32(&self) -> Result<Matrix, MatrixError> {
        Matrix::new(
            self.data.iter().map(|&v| v as f32).collect(),
            self.n,
            self.d,
        )
    }
}

/// The one finite-matrix check: `x` is `n × d` row-major with `n, d ≥ 1` and only finite
/// values.
pub fn check(x: &[f32], n: usize, d: usize) -> Result<(), MatrixError> {
    if n == 0 || d == 0 {
        return Err(MatrixError::Empty { n, d });
    }
    if n.checked_mul(d) != Some(x.len()) {
        return Err(MatrixError::Shape { len: x.len(), n, d });
    }
    match first_non_finite(x) {
        Some(i) => Err(MatrixError::NonFinite {
            row: i / d,
            col: i % d,
            value: x[i],
        }),
        None => Ok(()),
    }
}

/// The first (row-major) index of a NaN or infinite value, searched in parallel chunks.
pub(crate) fn first_non_finite<T: Copy + Into<f64> + Sync>(v: &[T]) -> Option<usize> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 16;
    v.par_chunks(CHUNK)
        .enumerate()
        .find_map_first(|(c, chunk)| {
            chunk
                .iter()
                .position(|&x| !x.into().is_finite())
                .map(|i| c * CHUNK + i)
        })
}

/// Column means of an `n × d` row-major matrix, summed in f64 row by row: the one centring
/// helper's first half (with [`centred_f64`] and [`centre_rows_into`]).
pub fn column_means(x: &[f32], n: usize, d: usize) -> Vec<f64> {
    let mut mean = vec![0f64; d];
    for row in x.chunks_exact(d) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    mean
}

/// Every row of `x` (`d` columns) minus `mean`, in f64.
pub fn centred_f64(x: &[f32], d: usize, mean: &[f64]) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(d) {
        out.extend(row.iter().zip(mean).map(|(&v, &m)| f64::from(v) - m));
    }
    out
}

/// The rows `rows` of `x` (`d` columns) minus `mean`, in f32, into `dst` (`rows.len() · d`),
/// in parallel.
pub fn centre_rows_into(x: &[f32], d: usize, rows: &[usize], mean: &[f64], dst: &mut [f32]) {
    use rayon::prelude::*;
    dst.par_chunks_mut(d)
        .zip(rows.par_iter())
        .for_each(|(out, &i)| {
            for ((o, &v), m) in out.iter_mut().zip(&x[i * d..(i + 1) * d]).zip(mean) {
                *o = (f64::from(v) - m) as f32;
            }
        });
}

/// A layer's representation of `n` samples: the feature matrix, one label per row, and the
/// class names by label when they are known. Where it came from (file, layer, epoch) is the
/// reader's business, not this type's.
#[derive(Debug, Clone, PartialEq)]
pub struct Representation {
    features: Matrix,
    labels: Vec<i64>,
    class_names: Option<Vec<String>>,
}

impl Representation {
    /// `features` with one label per row.
    pub fn new(features: Matrix, labels: Vec<i64>) -> Result<Self, MatrixError> {
        if labels.len() != features.n() {
            return Err(MatrixError::LabelCount {
                labels: labels.len(),
                n: features.n(),
            });
        }
        Ok(Self {
            features,
            labels,
            class_names: None,
        })
    }

    /// With the class names by label.
    pub fn with_class_names(mut self, names: Option<Vec<String>>) -> Self {
        self.class_names = names;
        self
    }

    /// The feature matrix.
    pub fn features(&self) -> &Matrix {
        &self.features
    }

    /// The label of every row.
    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    /// Class names by label, when known.
    pub fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref()
    }

    /// Rows (samples).
    pub fn n(&self) -> usize {
        self.features.n()
    }

    /// Columns (features).
    pub fn d(&self) -> usize {
        self.features.d()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_shape_emptiness_and_finiteness() {
        assert!(Matrix::new(vec![1.0; 6], 2, 3).is_ok());
        assert_eq!(
            Matrix::new(vec![1.0; 5], 2, 3),
            Err(MatrixError::Shape { len: 5, n: 2, d: 3 })
        );
        assert_eq!(
            Matrix::new(vec![], 0, 3),
            Err(MatrixError::Empty { n: 0, d: 3 })
        );
        assert_eq!(
            Matrix::new(vec![], 2, 0),
            Err(MatrixError::Empty { n: 2, d: 0 })
        );
        assert!(matches!(
            Matrix::new(vec![0.0, 1.0, 2.0, 3.0, f32::NAN, 5.0], 2, 3),
            Err(MatrixError::NonFinite { row: 1, col: 1, .. })
        ));
        assert!(matches!(
            Matrix::new(vec![1.0; 3], usize::MAX, 2),
            Err(MatrixError::Shape { .. })
        ));
    }

    #[test]
    fn representation_needs_a_label_per_row() {
        let m = Matrix::new(vec![0.0; 6], 3, 2).unwrap();
        assert_eq!(
            Representation::new(m.clone(), vec![0, 1]),
            Err(MatrixError::LabelCount { labels: 2, n: 3 })
        );
        let r = Representation::new(m, vec![0, 1, 1]).unwrap();
        assert_eq!((r.n(), r.d(), r.labels()), (3, 2, &[0, 1, 1][..]));
        assert_eq!(r.features().row(2), &[0.0, 0.0]);
    }
}
