//! Choosing `k`: the first component count whose share of the energy exceeds the threshold.

use super::RANK_TOL;

/// The number of components the energy threshold keeps, for squared singular values
/// `theta` (descending) out of a total energy `total`: the rule of [`reduce`](super::reduce),
/// for callers that decompose by other means.
pub fn rank_for_energy(theta: &[f64], total: f64, energy: f64) -> usize {
    if theta.is_empty() {
        return 0;
    }
    Goal {
        threshold: energy,
        total,
    }
    .crossing(theta)
    .k
}

/// The threshold and the exact total energy.
pub(super) struct Goal {
    pub(super) threshold: f64,
    pub(super) total: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Crossing {
    pub(super) k: usize,
    pub(super) at: f64,
    pub(super) before: f64,
    /// Whether the threshold was crossed (otherwise `k` counts every nonzero value).
    pub(super) crossed: bool,
}

impl Goal {
    /// `k` from values sorted descending. If the cumulative energy never exceeds the threshold
    /// (possible only for a threshold of 1, up to rounding), every nonzero component is kept.
    pub(super) fn crossing(&self, theta: &[f64]) -> Crossing {
        let mut cum = 0f64;
        let mut before = 0f64;
        // With a threshold of 1 a crossing could only come from rounding.
        let values = if self.threshold < 1.0 { theta } else { &[] };
        for (j, &t) in values.iter().enumerate() {
            cum += t.max(0.0);
            let e = cum / self.total;
            if e > self.threshold {
                return Crossing {
                    k: j + 1,
                    at: e,
                    before,
                    crossed: true,
                };
            }
            before = e;
        }
        let top = theta.first().copied().unwrap_or(0.0);
        let rank = theta.iter().filter(|&&t| t > top * RANK_TOL).count().max(1);
        let at = theta[..rank].iter().map(|t| t.max(0.0)).sum::<f64>() / self.total;
        let before = theta[..rank - 1].iter().map(|t| t.max(0.0)).sum::<f64>() / self.total;
        Crossing {
            k: rank,
            at,
            before,
            crossed: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::numerics::reduce::testing::*;
    use crate::numerics::reduce::{Method, reduce_rows};

    #[test]
    fn energies_are_consistent_and_non_decreasing() {
        let mut g = Gen::new(3);
        let (n, d) = (150, 200);
        let x = conv_like(&mut g, n, d, 40, 0.9, 0.5);
        let total: f64 = dense_singular_values(&x, n, d, Method::Pca)
            .iter()
            .map(|v| v * v)
            .sum();
        for solver in SOLVERS {
            let r = reduce_rows(&x, n, d, Method::Pca, 0.9, None, solver).expect("reduce");
            let mut cum = 0.0;
            let mut last = 0.0;
            for (j, s) in r.singular_values.iter().enumerate() {
                assert!(j == 0 || *s <= r.singular_values[j - 1], "descending");
                cum += s * s;
                let e = cum / total;
                assert!(e >= last);
                last = e;
                if j + 1 == r.k {
                    assert!((e - r.energy_at_k).abs() < 1e-9);
                }
                if j + 2 == r.k {
                    assert!((e - r.energy_before_k).abs() < 1e-9);
                }
            }
            assert!(r.energy_before_k <= 0.9 && r.energy_at_k > 0.9);
        }
    }
}
