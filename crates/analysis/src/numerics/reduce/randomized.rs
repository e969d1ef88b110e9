//! The randomized route: Lanczos driven by products with the data, for when the Gram matrix of the
//! smaller side would be too large or too slow to form.

use faer::{Mat, MatRef};

use super::data::{Data, par_matmul};
use super::lanczos::{Growing, SymOp};

/// `A = X_c X_cᵀ` (rows side) or `X_cᵀ X_c`, never formed. Keeps `FᵀQ` for the projections.
pub(super) struct DataOp<'a> {
    data: &'a Data<'a>,
    rows_side: bool,
    /// `FᵀQ`, one column per basis vector.
    ft_q: Growing,
    /// Width of the last block.
    last_b: usize,
}

impl<'a> DataOp<'a> {
    pub(super) fn new(data: &'a Data<'a>, rows_side: bool) -> Self {
        let other = if rows_side { data.d } else { data.n };
        DataOp {
            data,
            rows_side,
            ft_q: Growing::new(other),
            last_b: 0,
        }
    }
}

impl SymOp for DataOp<'_> {
    fn dim(&self) -> usize {
        if self.rows_side {
            self.data.n
        } else {
            self.data.d
        }
    }
    fn project(&mut self, q: MatRef<'_, f64>, b: usize) -> Mat<f64> {
        let m = q.ncols();
        let qj = q.subcols(m - b, b);
        let z = if self.rows_side {
            self.data.mul_t(qj)
        } else {
            self.data.mul(qj)
        };
        self.ft_q.push(z.as_ref());
        self.last_b = b;
        let f = self.ft_q.mat.as_ref();
        let mut c = Mat::<f64>::zeros(m, b);
        par_matmul(c.as_mut(), f.transpose(), f.subcols(m - b, b), 1.0);
        c
    }
    fn finish(&mut self) -> Mat<f64> {
        let m = self.ft_q.mat.ncols();
        let z = self.ft_q.mat.as_ref().subcols(m - self.last_b, self.last_b);
        if self.rows_side {
            self.data.mul(z)
        } else {
            self.data.mul_t(z)
        }
    }
}
