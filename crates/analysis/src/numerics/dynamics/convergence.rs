//! Two published dynamics read off CKA: when each layer reaches its final representation
//! (bottom-up convergence, Raghu et al. 2017, SVCCA, Fig. 4) and whether CKA matches each
//! layer of one network to the same layer of another (layer identification, Kornblith et al.
//! 2019, Table 2).

/// The CKA to the final sample from which a layer counts as converged.
pub const CONVERGED_CKA: f64 = 0.9;

/// The first step from which every later value stays at or above `threshold`, from
/// `(step, CKA to the final sample)` in training order; None when the last value is below it
/// (or NaN). The final sample's own CKA is 1, so a run's last step is the latest answer.
pub fn converged_step(points: &[(u64, f64)], threshold: f64) -> Option<u64> {
    let mut at = None;
    for &(step, cka) in points.iter().rev() {
        if cka >= threshold {
            at = Some(step);
        } else {
            break;
        }
    }
    at
}

/// Spearman's rank correlation of `x` and `y` (ties get their average rank): NaN with fewer
/// than two pairs, a non-finite value, or no spread in either.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    if n < 2 || x.iter().chain(y).any(|v| !v.is_finite()) {
        return f64::NAN;
    }
    let (rx, ry) = (ranks(&x[..n]), ranks(&y[..n]));
    let mean = (n as f64 + 1.0) / 2.0;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        let (a, b) = (a - mean, b - mean);
        sxy += a * b;
        sxx += a * a;
        syy += b * b;
    }
    if sxx == 0.0 || syy == 0.0 {
        return f64::NAN;
    }
    sxy / (sxx * syy).sqrt()
}

/// 1-based ranks, ties sharing the mean of the ranks they span.
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut ranks = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let j = (i..order.len())
            .take_while(|&j| v[order[j]] == v[order[i]])
            .last()
            .unwrap_or(i);
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    ranks
}

/// Per row of a layer × layer similarity matrix, the columns holding its largest finite entry
/// (several on a tie); None for a row without a finite entry.
pub fn best_matches(matrix: &[Vec<f64>]) -> Vec<Option<Vec<usize>>> {
    matrix
        .iter()
        .map(|row| {
            let best = row
                .iter()
                .copied()
                .filter(|v| v.is_finite())
                .reduce(f64::max)?;
            Some((0..row.len()).filter(|&j| row[j] == best).collect())
        })
        .collect()
}

/// The share of rows `i` of a square layer × layer similarity matrix (network A's layers
/// against network B's, in the same order) whose largest finite entry is in column `i` alone:
/// each layer of A identified with the same layer of B. Rows without a finite entry are left
/// out; NaN when none is left. A tie with another column counts as a miss.
pub fn layer_identification(matrix: &[Vec<f64>]) -> f64 {
    let rows: Vec<(usize, Vec<usize>)> = (best_matches(matrix).into_iter().enumerate())
        .filter_map(|(i, best)| Some((i, best?)))
        .collect();
    let hits = rows.iter().filter(|(i, best)| *best == [*i]).count();
    if rows.is_empty() {
        f64::NAN
    } else {
        hits as f64 / rows.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converged_from_the_first_step_that_stays_above() {
        let pts = [(0, 0.5), (10, 0.95), (20, 0.85), (40, 0.91), (80, 1.0)];
        assert_eq!(converged_step(&pts, 0.9), Some(40));
        assert_eq!(converged_step(&[(0, 0.92), (5, 1.0)], 0.9), Some(0));
        assert_eq!(converged_step(&[(0, 0.2), (5, f64::NAN)], 0.9), None);
        assert_eq!(converged_step(&[], 0.9), None);
    }

    #[test]
    fn spearman_of_hand_worked_ranks() {
        // x ranks 1..5; y = 10, 30, 20, 50, 40 ranks 1, 3, 2, 5, 4: d² = 0+1+1+1+1 = 4,
        // ρ = 1 − 6·4 / (5·24) = 0.8.
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert!((spearman(&x, &[10.0, 30.0, 20.0, 50.0, 40.0]) - 0.8).abs() < 1e-12);
        assert!((spearman(&x, &[5.0, 4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // Ties: y = 0, 0, 1 ranks 1.5, 1.5, 3 against 1, 2, 3: ρ = 1.5 / √(2 · 1.5) = 0.866.
        let r = spearman(&[1.0, 2.0, 3.0], &[0.0, 0.0, 1.0]);
        assert!((r - 1.5 / 3f64.sqrt()).abs() < 1e-12, "{r}");
        assert!(spearman(&x, &[2.0; 5]).is_nan());
        assert!(spearman(&[1.0], &[1.0]).is_nan());
    }

    #[test]
    fn identification_counts_diagonal_maxima() {
        let m = vec![
            vec![1.0, 0.2, 0.1],
            vec![0.9, 0.8, 0.3],
            vec![0.1, 0.3, f64::NAN],
        ];
        // Row 0 hits, row 1 misses (0.9 in column 0), row 2's best finite is column 1: miss.
        assert!((layer_identification(&m) - 1.0 / 3.0).abs() < 1e-12);
        let ties = vec![vec![0.5, 0.5], vec![0.1, 0.7]];
        assert_eq!(layer_identification(&ties), 0.5);
        assert!(layer_identification(&[vec![f64::NAN]]).is_nan());
        assert_eq!(best_matches(&ties), [Some(vec![0, 1]), Some(vec![1])]);
        assert_eq!(best_matches(&[vec![f64::NAN]]), [None]);
    }
}
