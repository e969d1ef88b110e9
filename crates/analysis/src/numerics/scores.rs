//! The one check every step on a score matrix starts with: a row-major `[n, dim]` slice of
//! the right length, at least one column, and only finite values.

/// What is wrong with a score matrix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScoresError {
    /// `scores.len()` is not `n * dim` (or `n * dim` overflows).
    #[error("scores hold {len} values, but n = {n} rows of dim = {dim} were declared")]
    Shape {
        /// Length of the score slice.
        len: usize,
        /// Declared rows.
        n: usize,
        /// Declared columns.
        dim: usize,
    },
    /// Rows without any columns have no geometry to work on.
    #[error("dim must be at least 1")]
    ZeroDim,
    /// A score is NaN or infinite.
    #[error("score at row {row}, column {col} is not finite ({value})")]
    NonFinite {
        /// Row of the first offending value.
        row: usize,
        /// Column of the first offending value.
        col: usize,
        /// The value itself.
        value: f32,
    },
}

/// Checks that `scores` is a finite row-major `[n, dim]` matrix with `dim >= 1`.
pub fn check(scores: &[f32], n: usize, dim: usize) -> Result<(), ScoresError> {
    if n.checked_mul(dim) != Some(scores.len()) {
        return Err(ScoresError::Shape {
            len: scores.len(),
            n,
            dim,
        });
    }
    if dim == 0 {
        return Err(ScoresError::ZeroDim);
    }
    match crate::numerics::matrix::first_non_finite(scores) {
        Some(i) => Err(ScoresError::NonFinite {
            row: i / dim,
            col: i % dim,
            value: scores[i],
        }),
        None => Ok(()),
    }
}
