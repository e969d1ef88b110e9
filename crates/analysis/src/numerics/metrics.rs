//! How well clusters and score spaces agree with the true labels.
//!
//! Two families of measures live here:
//!
//! * [`cluster_agreement`] compares a clustering (with `-1` as HDBSCAN-style noise) against the
//!   true classes: purity (with and without the noise points), homogeneity / completeness /
//!   V-measure, adjusted Rand index and normalised mutual information. The information-theoretic
//!   and pair-counting scores reproduce scikit-learn's functions, edge cases included, so numbers
//!   reported by cnnu can be compared with the Python literature directly.
//! * [`knn_agreement`] and [`silhouette_true`] ask how well the true labels are separated in a
//!   score (activation / embedding) space, independently of any clustering algorithm.
//!
//! The score-space measures need all pairwise Euclidean distances. They are produced one block of
//! rows at a time from the Gram identity `‖a − b‖² = ‖a‖² + ‖b‖² − 2 a·b`, with the products done
//! by faer's matrix multiply, so memory stays at `O(n · BLOCK_ROWS)` instead of `O(n²)`.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use crate::numerics::matrix::{Matrix, centred_f64, column_means};

/// Cluster id that marks a noise point (HDBSCAN / DBSCAN convention).
pub const NOISE: i64 = -1;

/// Rows of the pairwise-distance matrix produced per step. Each step holds an `n × BLOCK_ROWS`
/// f64 buffer (20 MB at n = 10 000), which is large enough for the matrix product to run near
/// peak speed and small enough to keep memory linear in `n`.
const BLOCK_ROWS: usize = 256;

/// Errors raised by the metrics in this module.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A metric was asked about zero points.
    #[error("input is empty")]
    Empty,
    /// Two inputs that must describe the same points have different lengths.
    #[error("{what} has length {got}, expected {expected}")]
    LengthMismatch {
        /// Which input had the wrong length.
        what: &'static str,
        /// Length implied by the other inputs.
        expected: usize,
        /// Length actually given.
        got: usize,
    },
    /// `n * dim` does not fit in `usize`.
    #[error("shape [{n}, {dim}] overflows usize")]
    ShapeOverflow {
        /// Number of points.
        n: usize,
        /// Dimension of each point.
        dim: usize,
    },
    /// Score vectors must have at least one component.
    #[error("scores must have at least one dimension")]
    ZeroDim,
    /// `k` must satisfy `1 <= k < n` (a point is never its own neighbour).
    #[error("k must satisfy 1 <= k < n, got k = {k} with n = {n}")]
    InvalidK {
        /// Requested number of neighbours.
        k: usize,
        /// Number of points.
        n: usize,
    },
    /// The silhouette is only defined for `2 <= n_classes <= n - 1` (as in scikit-learn).
    #[error("silhouette needs between 2 and n - 1 distinct labels, got {n_classes} with n = {n}")]
    InvalidClassCount {
        /// Number of distinct labels found.
        n_classes: usize,
        /// Number of points.
        n: usize,
    },
    /// A score is NaN or infinite, which would make every distance meaningless.
    #[error("score at flat index {index} is not finite ({value})")]
    NonFinite {
        /// Row-major index of the offending value.
        index: usize,
        /// The value itself.
        value: f32,
    },
}

/// Label-vs-cluster agreement. `labels`: true classes (i64, any values), `clusters`: cluster ids
/// (i64, `-1` = noise).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClusterAgreement {
    /// Number of distinct non-noise cluster ids.
    pub n_clusters: usize,
    /// Share of points whose cluster id is `-1`.
    pub noise_frac: f64,
    /// Purity with the noise points counted as one more cluster: sum over clusters (the noise
    /// cluster included) of the largest class count, divided by `N`.
    pub purity_with_noise: f64,
    /// Purity after dropping the noise points: sum over real clusters of the largest class count,
    /// divided by `N - n_noise`. `None` when every point is noise.
    pub purity_without_noise: Option<f64>,
    /// scikit-learn's `homogeneity_score`, with `-1` treated as an ordinary cluster id.
    pub homogeneity: f64,
    /// scikit-learn's `completeness_score`, with `-1` treated as an ordinary cluster id.
    pub completeness: f64,
    /// scikit-learn's `v_measure_score` (beta = 1), with `-1` treated as an ordinary cluster id.
    pub v_measure: f64,
    /// scikit-learn's `adjusted_rand_score`, with `-1` treated as an ordinary cluster id.
    pub ari: f64,
    /// scikit-learn's `normalized_mutual_info_score` with `average_method="arithmetic"`, with `-1`
    /// treated as an ordinary cluster id.
    pub nmi: f64,
}

/// Compares a clustering with the true labels; see [`ClusterAgreement`] for the fields.
///
/// Errors when the slices differ in length or are empty.
pub fn cluster_agreement(
    labels: &[i64],
    clusters: &[i64],
) -> Result<ClusterAgreement, MetricsError> {
    if labels.len() != clusters.len() {
        return Err(MetricsError::LengthMismatch {
            what: "clusters",
            expected: labels.len(),
            got: clusters.len(),
        });
    }
    if labels.is_empty() {
        return Err(MetricsError::Empty);
    }
    let n = labels.len();

    let (class_of, class_ids) = dense_ids(labels);
    let (cluster_of, cluster_ids) = dense_ids(clusters);
    let noise_idx = cluster_ids.binary_search(&NOISE).ok();

    let cells = contingency(&class_of, &cluster_of);
    let mut class_sizes = vec![0u64; class_ids.len()];
    let mut cluster_sizes = vec![0u64; cluster_ids.len()];
    let mut cluster_max = vec![0u64; cluster_ids.len()];
    for &(ci, ki, cnt) in &cells {
        class_sizes[ci] += cnt;
        cluster_sizes[ki] += cnt;
        cluster_max[ki] = cluster_max[ki].max(cnt);
    }

    let n_noise = noise_idx.map_or(0, |k| cluster_sizes[k]);
    let max_sum_all: u64 = cluster_max.iter().sum();
    let max_sum_real = max_sum_all - noise_idx.map_or(0, |k| cluster_max[k]);
    let purity_with_noise = max_sum_all as f64 / n as f64;
    let purity_without_noise = if n_noise as usize == n {
        None
    } else {
        Some(max_sum_real as f64 / (n as u64 - n_noise) as f64)
    };

    let h_true = entropy(&class_sizes);
    let h_pred = entropy(&cluster_sizes);
    let mi = mutual_info(&cells, &class_sizes, &cluster_sizes, n as u64);

    // sklearn: a labelling with zero entropy cannot be improved on, so its ratio is defined as 1.
    let homogeneity = if h_true != 0.0 { mi / h_true } else { 1.0 };
    let completeness = if h_pred != 0.0 { mi / h_pred } else { 1.0 };
    let v_measure = if homogeneity + completeness == 0.0 {
        0.0
    } else {
        2.0 * homogeneity * completeness / (homogeneity + completeness)
    };

    // sklearn's normalized_mutual_info_score: two unsplit labellings are a perfect match, and once
    // that case is excluded MI = 0 means no agreement whatever the normaliser.
    let nmi = if class_ids.len() == 1 && cluster_ids.len() == 1 {
        1.0
    } else if mi == 0.0 {
        0.0
    } else {
        mi / ((h_true + h_pred) / 2.0)
    };

    Ok(ClusterAgreement {
        n_clusters: cluster_ids.len() - usize::from(noise_idx.is_some()),
        noise_frac: n_noise as f64 / n as f64,
        purity_with_noise,
        purity_without_noise,
        homogeneity,
        completeness,
        v_measure,
        ari: adjusted_rand(&cells, &class_sizes, &cluster_sizes, n as u64),
        nmi,
    })
}

/// Share, averaged over points, of each point's `k` nearest neighbours (Euclidean, excluding
/// itself) that have its label. `scores` is row-major `[n, dim]`.
///
/// A neighbour tied in distance with the k-th one is resolved in favour of the lower point index,
/// so the result is deterministic. Errors on shape mismatches, non-finite scores, and `k` outside
/// `1..n`.
pub fn knn_agreement(scores: &Matrix, labels: &[i64], k: usize) -> Result<f64, MetricsError> {
    knn_agreement_rows(scores.as_slice(), scores.n(), scores.d(), labels, k)
}

/// [`knn_agreement`] on a row-major `[n, dim]` slice, checked here.
pub(crate) fn knn_agreement_rows(
    scores: &[f32],
    n: usize,
    dim: usize,
    labels: &[i64],
    k: usize,
) -> Result<f64, MetricsError> {
    check_scores(scores, n, dim, labels)?;
    if k == 0 || k >= n {
        return Err(MetricsError::InvalidK { k, n });
    }
    let x = centred_f64(scores, dim, &column_means(scores, n, dim));
    let norms = sq_norms(&x, n, dim);

    let mut matches: u64 = 0;
    let mut per_point = vec![0u32; BLOCK_ROWS];
    for_each_row_block(&x, n, dim, &norms, |start, block| {
        let r = block.len() / n;
        block
            .par_chunks_exact(n)
            .zip(per_point[..r].par_iter_mut())
            .enumerate()
            .for_each(|(q, (d2, out))| {
                let i = start + q;
                *out = count_same_label_neighbours(d2, i, labels, k);
            });
        matches += per_point[..r].iter().map(|&m| u64::from(m)).sum::<u64>();
    });
    Ok(matches as f64 / (n as f64 * k as f64))
}

/// Mean silhouette coefficient (Euclidean) of the TRUE labels in score space, with
/// `sklearn.metrics.silhouette_score` semantics. `scores` is row-major `[n, dim]`.
///
/// A point alone in its class, or with both mean distances zero, scores 0 (as in scikit-learn).
/// Errors on shape mismatches, non-finite scores, and unless `2 <= n_classes <= n - 1`.
pub fn silhouette_true(scores: &Matrix, labels: &[i64]) -> Result<f64, MetricsError> {
    silhouette_true_rows(scores.as_slice(), scores.n(), scores.d(), labels)
}

/// [`silhouette_true`] on a row-major `[n, dim]` slice, checked here.
pub(crate) fn silhouette_true_rows(
    scores: &[f32],
    n: usize,
    dim: usize,
    labels: &[i64],
) -> Result<f64, MetricsError> {
    check_scores(scores, n, dim, labels)?;
    let (class_of, class_ids) = dense_ids(labels);
    let n_classes = class_ids.len();
    if n_classes < 2 || n_classes >= n {
        return Err(MetricsError::InvalidClassCount { n_classes, n });
    }

    // Sorting the points by class turns every per-class distance sum into the sum of one
    // contiguous slice, which vectorises instead of scattering into per-class accumulators.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| class_of[i]);
    let mut sorted = Vec::with_capacity(n * dim);
    for &i in &order {
        sorted.extend_from_slice(&scores[i * dim..(i + 1) * dim]);
    }
    let sorted_class: Vec<usize> = order.iter().map(|&i| class_of[i]).collect();
    let mut class_start = vec![0usize; n_classes + 1];
    for &c in &sorted_class {
        class_start[c + 1] += 1;
    }
    for c in 0..n_classes {
        class_start[c + 1] += class_start[c];
    }

    let x = centred_f64(&sorted, dim, &column_means(&sorted, n, dim));
    let norms = sq_norms(&x, n, dim);

    let mut sil = vec![0f64; n];
    for_each_row_block(&x, n, dim, &norms, |start, block| {
        let r = block.len() / n;
        block
            .par_chunks_exact(n)
            .zip(sil[start..start + r].par_iter_mut())
            .enumerate()
            .for_each_init(
                || vec![0f64; n_classes],
                |sums, (q, (d2, out))| {
                    let own = sorted_class[start + q];
                    *out = silhouette_of_point(d2, own, &class_start, sums);
                },
            );
    });
    // Summed in a fixed order so the result does not depend on thread scheduling.
    Ok(sil.iter().sum::<f64>() / n as f64)
}

/// Maps arbitrary ids to `0..distinct`, returning the per-point dense id and the sorted distinct
/// original ids.
pub(crate) fn dense_ids(ids: &[i64]) -> (Vec<usize>, Vec<i64>) {
    let mut uniq = ids.to_vec();
    uniq.sort_unstable();
    uniq.dedup();
    let dense = ids
        .iter()
        .map(|v| uniq.binary_search(v).unwrap_or_default())
        .collect();
    (dense, uniq)
}

/// Non-zero cells `(class, cluster, count)` of the contingency table. Kept sparse because with
/// many small clusters a dense table would be `n_classes × n_clusters`, up to `n²`.
fn contingency(class_of: &[usize], cluster_of: &[usize]) -> Vec<(usize, usize, u64)> {
    let mut pairs: Vec<(usize, usize)> = class_of
        .iter()
        .copied()
        .zip(cluster_of.iter().copied())
        .collect();
    pairs.sort_unstable();
    let mut cells: Vec<(usize, usize, u64)> = Vec::new();
    for (c, k) in pairs {
        match cells.last_mut() {
            Some(last) if last.0 == c && last.1 == k => last.2 += 1,
            _ => cells.push((c, k, 1)),
        }
    }
    cells
}

/// Entropy (natural log) of a labelling given its class sizes, written as sklearn's `_entropy`
/// so the rounding matches.
fn entropy(sizes: &[u64]) -> f64 {
    if sizes.len() <= 1 {
        return 0.0;
    }
    let total: u64 = sizes.iter().sum();
    let ln_total = (total as f64).ln();
    let total = total as f64;
    -sizes
        .iter()
        .map(|&s| (s as f64 / total) * ((s as f64).ln() - ln_total))
        .sum::<f64>()
}

/// Mutual information (natural log), following sklearn's `mutual_info_score` term by term,
/// including its flushing of |term| < eps to zero and its clip at 0.
fn mutual_info(
    cells: &[(usize, usize, u64)],
    class_sizes: &[u64],
    cluster_sizes: &[u64],
    n: u64,
) -> f64 {
    // A single-valued labelling carries no information, whatever rounding would say.
    if class_sizes.len() == 1 || cluster_sizes.len() == 1 {
        return 0.0;
    }
    let ln_n = (n as f64).ln();
    let mi: f64 = cells
        .iter()
        .map(|&(c, k, nz)| {
            let p = nz as f64 / n as f64;
            let outer = u128::from(class_sizes[c]) * u128::from(cluster_sizes[k]);
            let log_outer = -(outer as f64).ln() + ln_n + ln_n;
            let term = p * ((nz as f64).ln() - ln_n) + p * log_outer;
            if term.abs() < f64::EPSILON { 0.0 } else { term }
        })
        .sum();
    mi.max(0.0)
}

/// Adjusted Rand index from the pair-confusion counts, as sklearn's `adjusted_rand_score`.
/// Pair counts reach `n²` and their products `n⁴`, hence i128.
fn adjusted_rand(
    cells: &[(usize, usize, u64)],
    class_sizes: &[u64],
    cluster_sizes: &[u64],
    n: u64,
) -> f64 {
    let sq = |v: u64| i128::from(v) * i128::from(v);
    let n = i128::from(n);
    let sum_squares: i128 = cells.iter().map(|&(_, _, v)| sq(v)).sum();
    let sum_cluster_sq: i128 = cluster_sizes.iter().map(|&v| sq(v)).sum();
    let sum_class_sq: i128 = class_sizes.iter().map(|&v| sq(v)).sum();
    let tp = sum_squares - n;
    let fp = sum_cluster_sq - sum_squares;
    let fn_ = sum_class_sq - sum_squares;
    let tn = n * n - fp - fn_ - sum_squares;
    // sklearn: no pair is split differently by the two labellings, a perfect match (this covers
    // "both one cluster" and "both all singletons").
    if fn_ == 0 && fp == 0 {
        return 1.0;
    }
    let num = tp * tn - fn_ * fp;
    let den = (tp + fn_) * (fn_ + tn) + (tp + fp) * (fp + tn);
    2.0 * num as f64 / den as f64
}

/// Validates the shape of a score matrix and its labels and rejects non-finite values.
fn check_scores(scores: &[f32], n: usize, dim: usize, labels: &[i64]) -> Result<(), MetricsError> {
    if n == 0 {
        return Err(MetricsError::Empty);
    }
    if dim == 0 {
        return Err(MetricsError::ZeroDim);
    }
    let expected = n
        .checked_mul(dim)
        .ok_or(MetricsError::ShapeOverflow { n, dim })?;
    if scores.len() != expected {
        return Err(MetricsError::LengthMismatch {
            what: "scores",
            expected,
            got: scores.len(),
        });
    }
    if labels.len() != n {
        return Err(MetricsError::LengthMismatch {
            what: "labels",
            expected: n,
            got: labels.len(),
        });
    }
    if let Some(index) = crate::numerics::matrix::first_non_finite(scores) {
        let value = scores[index];
        return Err(MetricsError::NonFinite { index, value });
    }
    Ok(())
}

/// Squared Euclidean norm of every row of a row-major `[n, dim]` matrix.
fn sq_norms(x: &[f64], n: usize, dim: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    out.extend(
        x.chunks_exact(dim)
            .map(|r| r.iter().map(|v| v * v).sum::<f64>()),
    );
    out
}

/// Streams the squared-distance matrix in blocks of up to [`BLOCK_ROWS`] points.
///
/// `f(start, block)` receives, for points `start..start + r`, a column-major `n × r` buffer whose
/// column `q` holds the squared distances from point `start + q` to every point (its own entry is
/// exactly 0). Only one such buffer exists at a time.
fn for_each_row_block(
    x: &[f64],
    n: usize,
    dim: usize,
    norms: &[f64],
    mut f: impl FnMut(usize, &[f64]),
) {
    let rows = BLOCK_ROWS.min(n);
    let mut buf = vec![0f64; n * rows];
    let all = MatRef::from_row_major_slice(x, n, dim);
    let mut start = 0;
    while start < n {
        let r = rows.min(n - start);
        let block = &mut buf[..n * r];
        {
            let dst = MatMut::from_column_major_slice_mut(block, n, r);
            let rhs = MatRef::from_row_major_slice(&x[start * dim..(start + r) * dim], r, dim);
            matmul(
                dst,
                Accum::Replace,
                all,
                rhs.transpose(),
                1.0,
                Par::rayon(0),
            );
        }
        block
            .par_chunks_exact_mut(n)
            .enumerate()
            .for_each(|(q, col)| {
                let i = start + q;
                let ni = norms[i];
                for (g, &nj) in col.iter_mut().zip(norms) {
                    // Rounding can push near-duplicates slightly below zero.
                    *g = (ni + nj - 2.0 * *g).max(0.0);
                }
                col[i] = 0.0;
            });
        f(start, block);
        start += r;
    }
}

/// Candidate neighbour ordered by (squared distance, index), so the heap's maximum is the
/// current worst of the k best.
#[derive(Clone, Copy)]
struct Cand {
    d2: f64,
    j: usize,
}

impl PartialEq for Cand {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Cand {
    fn cmp(&self, other: &Self) -> Ordering {
        self.d2.total_cmp(&other.d2).then(self.j.cmp(&other.j))
    }
}

/// Number of the `k` nearest neighbours of point `i` (given its squared distances `d2` to every
/// point) that share its label.
fn count_same_label_neighbours(d2: &[f64], i: usize, labels: &[i64], k: usize) -> u32 {
    let mut heap: BinaryHeap<Cand> = BinaryHeap::with_capacity(k + 1);
    let mut worst = f64::INFINITY;
    for (j, &d) in d2.iter().enumerate() {
        if j == i {
            continue;
        }
        if heap.len() < k {
            heap.push(Cand { d2: d, j });
            if heap.len() == k {
                worst = heap.peek().map_or(f64::INFINITY, |c| c.d2);
            }
        } else if d < worst {
            // Strict `<`: indices arrive in increasing order, so on a tie the earlier (lower
            // index) candidate already in the heap wins.
            if let Some(mut top) = heap.peek_mut() {
                *top = Cand { d2: d, j };
            }
            worst = heap.peek().map_or(f64::INFINITY, |c| c.d2);
        }
    }
    let own = labels[i];
    heap.iter().filter(|c| labels[c.j] == own).count() as u32
}

/// Silhouette of one point given its squared distances `d2` to all points (sorted by class, class
/// `c` occupying `class_start[c]..class_start[c + 1]`). `sums` is scratch space of length
/// `n_classes`.
fn silhouette_of_point(d2: &[f64], own: usize, class_start: &[usize], sums: &mut [f64]) -> f64 {
    let own_size = class_start[own + 1] - class_start[own];
    if own_size <= 1 {
        return 0.0;
    }
    for (c, s) in sums.iter_mut().enumerate() {
        *s = sum_sqrt(&d2[class_start[c]..class_start[c + 1]]);
    }
    // The point's own distance is 0, so summing over the whole class and dividing by size - 1
    // gives the mean over the others.
    let a = sums[own] / (own_size - 1) as f64;
    let b = sums
        .iter()
        .enumerate()
        .filter(|&(c, _)| c != own)
        .map(|(c, &s)| s / (class_start[c + 1] - class_start[c]) as f64)
        .fold(f64::INFINITY, f64::min);
    let denom = a.max(b);
    // sklearn turns the 0/0 of a point sitting on duplicates of every class into 0.
    if denom > 0.0 { (b - a) / denom } else { 0.0 }
}

/// Sum of square roots with eight independent accumulators, so the loop vectorises.
fn sum_sqrt(v: &[f64]) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = v.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x.sqrt();
        }
    }
    let mut s: f64 = acc.iter().sum();
    for &x in tail {
        s += x.sqrt();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: f64 = 1e-9;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < TOL
    }

    /// Asserts the sklearn-derived fields of a `ClusterAgreement`.
    fn assert_sk(m: &ClusterAgreement, h: f64, c: f64, v: f64, ari: f64, nmi: f64) {
        assert!(
            close(m.homogeneity, h),
            "homogeneity {} != {h}",
            m.homogeneity
        );
        assert!(
            close(m.completeness, c),
            "completeness {} != {c}",
            m.completeness
        );
        assert!(close(m.v_measure, v), "v_measure {} != {v}", m.v_measure);
        assert!(close(m.ari, ari), "ari {} != {ari}", m.ari);
        assert!(close(m.nmi, nmi), "nmi {} != {nmi}", m.nmi);
    }

    // Reference numbers below come from scikit-learn 1.9.1:
    //   h, c, v = sklearn.metrics.homogeneity_completeness_v_measure(labels, clusters)
    //   sklearn.metrics.adjusted_rand_score(labels, clusters)
    //   sklearn.metrics.normalized_mutual_info_score(labels, clusters)   # arithmetic
    // Purity numbers are worked by hand in the comments.

    #[test]
    fn perfect_clustering() -> Result<(), MetricsError> {
        let l = [0, 0, 0, 1, 1, 1, 2, 2, 2];
        let m = cluster_agreement(&l, &l)?;
        assert_sk(&m, 1.0, 1.0, 1.0, 1.0, 1.0);
        assert_eq!(m.n_clusters, 3);
        assert_eq!(m.noise_frac, 0.0);
        assert_eq!(m.purity_with_noise, 1.0);
        assert_eq!(m.purity_without_noise, Some(1.0));
        Ok(())
    }

    #[test]
    fn renamed_ids_clustering() -> Result<(), MetricsError> {
        let l = [0, 0, 0, 1, 1, 1, 2, 2, 2];
        let c = [42, 42, 42, 3, 3, 3, -5, -5, -5];
        let m = cluster_agreement(&l, &c)?;
        assert_sk(&m, 1.0, 1.0, 1.0, 1.0, 1.0);
        assert_eq!(m.n_clusters, 3);
        assert_eq!(m.purity_without_noise, Some(1.0));
        Ok(())
    }

    #[test]
    fn all_noise() -> Result<(), MetricsError> {
        let l = [0, 0, 1, 1, 2, 2];
        let m = cluster_agreement(&l, &[-1; 6])?;
        // sklearn: h=0.0 c=1.0 v=0.0 ari=0.0 nmi=0.0
        assert_sk(&m, 0.0, 1.0, 0.0, 0.0, 0.0);
        assert_eq!(m.n_clusters, 0);
        assert_eq!(m.noise_frac, 1.0);
        // The noise "cluster" holds 2 of the largest class out of 6.
        assert!(close(m.purity_with_noise, 2.0 / 6.0));
        assert_eq!(m.purity_without_noise, None);
        Ok(())
    }

    #[test]
    fn single_cluster() -> Result<(), MetricsError> {
        let l = [0, 0, 1, 1, 1];
        let m = cluster_agreement(&l, &[4; 5])?;
        // sklearn: h=0.0 c=1.0 v=0.0 ari=0.0 nmi=0.0
        assert_sk(&m, 0.0, 1.0, 0.0, 0.0, 0.0);
        assert_eq!(m.n_clusters, 1);
        assert_eq!(m.noise_frac, 0.0);
        // One cluster whose majority class has 3 of 5 points.
        assert!(close(m.purity_with_noise, 0.6));
        assert!(close(m.purity_without_noise.unwrap_or(f64::NAN), 0.6));
        Ok(())
    }

    #[test]
    fn both_single() -> Result<(), MetricsError> {
        let m = cluster_agreement(&[2, 2, 2, 2], &[0, 0, 0, 0])?;
        // sklearn: h=1.0 c=1.0 v=1.0 ari=1.0 nmi=1.0 (both-unsplit special cases)
        assert_sk(&m, 1.0, 1.0, 1.0, 1.0, 1.0);
        assert_eq!(m.purity_with_noise, 1.0);
        Ok(())
    }

    #[test]
    fn mix_with_noise() -> Result<(), MetricsError> {
        let l = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2];
        let c = [0, 0, 1, -1, 1, 1, -1, 2, 2, 2, -1, 0];
        let m = cluster_agreement(&l, &c)?;
        // sklearn: h=0.4497641177344434 c=0.3495983135651329 v=0.3934054714241225
        //          ari=0.12830188679245283 nmi=0.3934054714241225
        assert_sk(
            &m,
            0.4497641177344434,
            0.3495983135651329,
            0.3934054714241225,
            0.12830188679245283,
            0.3934054714241225,
        );
        assert_eq!(m.n_clusters, 3);
        assert!(close(m.noise_frac, 3.0 / 12.0));
        // Cluster 0 = {0,0,2} -> 2, cluster 1 = {0,1,1} -> 2, cluster 2 = {2,2,2} -> 3,
        // noise = {0,1,2} -> 1. With noise (2+2+3+1)/12, without (2+2+3)/9.
        assert!(close(m.purity_with_noise, 8.0 / 12.0));
        assert!(close(m.purity_without_noise.unwrap_or(f64::NAN), 7.0 / 9.0));
        Ok(())
    }

    #[test]
    fn unequal_sizes() -> Result<(), MetricsError> {
        let mut l = vec![0; 10];
        l.extend([1; 6]);
        l.extend([2; 3]);
        l.push(3);
        let mut c = vec![0; 7];
        c.extend([1; 7]);
        c.extend([2, 2, 2, 2, 0, -1]);
        let m = cluster_agreement(&l, &c)?;
        // sklearn: h=0.5373907143094195 c=0.5090828907196724 v=0.5228539295626925
        //          ari=0.3376371852808263 nmi=0.5228539295626926
        assert_sk(
            &m,
            0.5373907143094195,
            0.5090828907196724,
            0.5228539295626925,
            0.3376371852808263,
            0.5228539295626926,
        );
        assert_eq!(m.n_clusters, 3);
        assert!(close(m.noise_frac, 1.0 / 20.0));
        // Cluster 0 = 7×class0 + 1×class2 -> 7; cluster 1 = 3×class0 + 4×class1 -> 4;
        // cluster 2 = 2×class1 + 2×class2 -> 2; noise = {3} -> 1.
        assert!(close(m.purity_with_noise, 14.0 / 20.0));
        assert!(close(
            m.purity_without_noise.unwrap_or(f64::NAN),
            13.0 / 19.0
        ));
        Ok(())
    }

    #[test]
    fn split_into_singletons() -> Result<(), MetricsError> {
        let m = cluster_agreement(&[0, 0, 1, 1], &[0, 1, 2, 3])?;
        // sklearn: h=0.9999999999999999 c=0.49999999999999994 v=0.6666666666666666 ari=0.0
        //          nmi=0.6666666666666666
        assert_sk(
            &m,
            0.9999999999999999,
            0.49999999999999994,
            0.6666666666666666,
            0.0,
            0.6666666666666666,
        );
        // Every singleton cluster is pure.
        assert_eq!(m.purity_with_noise, 1.0);
        Ok(())
    }

    #[test]
    fn singletons_on_both_sides() -> Result<(), MetricsError> {
        let m = cluster_agreement(&[0, 1, 2, 3], &[3, 2, 1, 0])?;
        // sklearn: all 1.0 (ARI's "all singletons" special case)
        assert_sk(&m, 1.0, 1.0, 1.0, 1.0, 1.0);
        Ok(())
    }

    #[test]
    fn discordant() -> Result<(), MetricsError> {
        let m = cluster_agreement(&[0, 0, 1, 1], &[0, 1, 0, 1])?;
        // sklearn: h=0.0 c=0.0 v=0.0 ari=-0.5 nmi=0.0
        assert_sk(&m, 0.0, 0.0, 0.0, -0.5, 0.0);
        // Each cluster holds one point of each class.
        assert!(close(m.purity_with_noise, 0.5));
        Ok(())
    }

    #[test]
    fn one_point_of_noise() -> Result<(), MetricsError> {
        let m = cluster_agreement(&[5], &[-1])?;
        // sklearn: all 1.0
        assert_sk(&m, 1.0, 1.0, 1.0, 1.0, 1.0);
        assert_eq!(m.n_clusters, 0);
        assert_eq!(m.purity_with_noise, 1.0);
        assert_eq!(m.purity_without_noise, None);
        Ok(())
    }

    #[test]
    fn extreme_label_values() -> Result<(), MetricsError> {
        let l = [i64::MIN, i64::MAX, 7, 7, i64::MIN, i64::MAX];
        let m = cluster_agreement(&l, &[1, 1, -1, -1, 2, 2])?;
        // sklearn: h=c=v=nmi=0.5793801642856948 ari=0.16666666666666666
        let x = 0.5793801642856948;
        assert_sk(&m, x, x, x, 0.16666666666666666, x);
        // Cluster 1 = {MIN, MAX} -> 1, cluster 2 = {MIN, MAX} -> 1, noise = {7, 7} -> 2.
        assert!(close(m.purity_with_noise, 4.0 / 6.0));
        assert!(close(m.purity_without_noise.unwrap_or(f64::NAN), 2.0 / 4.0));
        Ok(())
    }

    #[test]
    fn cluster_agreement_errors() {
        assert!(matches!(
            cluster_agreement(&[], &[]),
            Err(MetricsError::Empty)
        ));
        assert!(matches!(
            cluster_agreement(&[0, 1], &[0]),
            Err(MetricsError::LengthMismatch {
                expected: 2,
                got: 1,
                ..
            })
        ));
    }

    /// Tiny deterministic generator so the property tests need no extra dependency.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn below(&mut self, m: u64) -> i64 {
            (self.next() % m) as i64
        }
    }

    #[test]
    fn property_renaming_invariance_and_bounds() -> Result<(), MetricsError> {
        let mut rng = Lcg(7);
        for trial in 0..200 {
            let n = 1 + rng.below(60) as usize;
            let n_classes = 1 + rng.below(5) as u64;
            let n_clusters = 1 + rng.below(7) as u64;
            let labels: Vec<i64> = (0..n).map(|_| rng.below(n_classes)).collect();
            // Id 0 plays noise, so some trials have noise and some have none.
            let clusters: Vec<i64> = (0..n)
                .map(|_| {
                    let k = rng.below(n_clusters);
                    if k == 0 && trial % 3 != 0 { NOISE } else { k }
                })
                .collect();
            let m = cluster_agreement(&labels, &clusters)?;

            // Injective renaming that keeps noise as noise and never creates new noise.
            let renamed: Vec<i64> = clusters
                .iter()
                .map(|&k| if k == NOISE { NOISE } else { 1000 - 13 * k })
                .collect();
            let relabelled: Vec<i64> = labels.iter().map(|&l| -7 * l + 3).collect();
            // Renaming reorders the floating-point sums, so equality is up to rounding.
            for r in [
                cluster_agreement(&labels, &renamed)?,
                cluster_agreement(&relabelled, &clusters)?,
            ] {
                assert_eq!(r.n_clusters, m.n_clusters, "trial {trial}");
                assert_eq!(
                    r.purity_without_noise.is_some(),
                    m.purity_without_noise.is_some()
                );
                for (a, b) in [
                    (r.noise_frac, m.noise_frac),
                    (r.purity_with_noise, m.purity_with_noise),
                    (
                        r.purity_without_noise.unwrap_or(0.0),
                        m.purity_without_noise.unwrap_or(0.0),
                    ),
                    (r.homogeneity, m.homogeneity),
                    (r.completeness, m.completeness),
                    (r.v_measure, m.v_measure),
                    (r.ari, m.ari),
                    (r.nmi, m.nmi),
                ] {
                    assert!(close(a, b), "trial {trial}: {r:?} vs {m:?}");
                }
            }

            for (name, v) in [
                ("noise_frac", m.noise_frac),
                ("purity_with_noise", m.purity_with_noise),
                (
                    "purity_without_noise",
                    m.purity_without_noise.unwrap_or(0.5),
                ),
                ("homogeneity", m.homogeneity),
                ("completeness", m.completeness),
                ("v_measure", m.v_measure),
                ("nmi", m.nmi),
            ] {
                assert!(
                    (0.0..=1.0 + 1e-12).contains(&v),
                    "trial {trial}: {name} = {v}"
                );
            }
            assert!(
                (-1.0..=1.0 + 1e-12).contains(&m.ari),
                "trial {trial}: ari = {}",
                m.ari
            );
        }
        Ok(())
    }

    /// 30 points in 4-d, three classes (labels 10, -3, 7) each shifted by 8 along its own axis.
    /// Coordinates are multiples of 1/64, so f32 holds them exactly and the Python reference
    /// sees the same points:
    ///   X[i, j] = ((i*i*(37+2j) + i*(11+j) + 5j + 3) % 1009) / 64 + (8 if j == i % 3 else 0)
    fn fixed_points() -> (Vec<f32>, Vec<i64>, usize, usize) {
        let (n, d) = (30usize, 4usize);
        let mut x = Vec::with_capacity(n * d);
        let mut lab = Vec::with_capacity(n);
        for i in 0..n {
            let c = i % 3;
            lab.push([10, -3, 7][c]);
            for j in 0..d {
                let v = (i * i * (37 + 2 * j) + i * (11 + j) + 5 * j + 3) % 1009;
                x.push(v as f32 / 64.0 + if j == c { 8.0 } else { 0.0 });
            }
        }
        (x, lab, n, d)
    }

    #[test]
    fn knn_matches_sklearn() -> Result<(), MetricsError> {
        let (x, lab, n, d) = fixed_points();
        // idx = NearestNeighbors(n_neighbors=k).fit(X).kneighbors(return_distance=False)
        // (lab[idx] == lab[:, None]).mean()
        // The gap between the k-th and (k+1)-th distance is >= 1.7e-5 for all these k, so
        // there are no ties to break.
        for (k, want) in [
            (1, 0.5666666666666667),
            (3, 0.4777777777777778),
            (5, 0.4666666666666667),
            (10, 0.44),
        ] {
            let got = knn_agreement_rows(&x, n, d, &lab, k)?;
            assert!(close(got, want), "k={k}: {got} != {want}");
        }
        // k = n - 1: every other point is a neighbour, 9 of the 29 share the label.
        assert!(close(
            knn_agreement_rows(&x, n, d, &lab, n - 1)?,
            9.0 / 29.0
        ));
        Ok(())
    }

    #[test]
    fn silhouette_matches_sklearn() -> Result<(), MetricsError> {
        let (x, lab, n, d) = fixed_points();
        // sklearn.metrics.silhouette_score(X, lab)
        assert!(close(
            silhouette_true_rows(&x, n, d, &lab)?,
            0.10109703382982847
        ));
        // Same with point 0 moved to its own class 99 (a singleton, which scores 0).
        let mut lab2 = lab.clone();
        lab2[0] = 99;
        assert!(close(
            silhouette_true_rows(&x, n, d, &lab2)?,
            0.047016148950599294
        ));
        // Labels i % 2, unrelated to the geometry.
        let lab3: Vec<i64> = (0..n as i64).map(|i| i % 2).collect();
        assert!(close(
            silhouette_true_rows(&x, n, d, &lab3)?,
            -0.03684300559970506
        ));

        // silhouette_score([[0,0],[0,1],[3,0],[3,1],[3,2],[10,10]], [0,0,1,1,1,2])
        let x = [0., 0., 0., 1., 3., 0., 3., 1., 3., 2., 10., 10.];
        assert!(close(
            silhouette_true_rows(&x, 6, 2, &[0, 0, 1, 1, 1, 2])?,
            0.519412706334527
        ));
        // silhouette_score(np.zeros((4, 1)), [0, 0, 1, 1]) == 0.0: every a = b = 0.
        assert_eq!(silhouette_true_rows(&[0.0; 4], 4, 1, &[0, 0, 1, 1])?, 0.0);
        Ok(())
    }

    #[test]
    fn score_space_errors() {
        let (x, lab, n, d) = fixed_points();
        assert!(matches!(
            knn_agreement_rows(&x, n, d, &lab, 0),
            Err(MetricsError::InvalidK { .. })
        ));
        assert!(matches!(
            knn_agreement_rows(&x, n, d, &lab, n),
            Err(MetricsError::InvalidK { .. })
        ));
        assert!(matches!(
            knn_agreement_rows(&[], 0, d, &[], 1),
            Err(MetricsError::Empty)
        ));
        assert!(matches!(
            knn_agreement_rows(&x, n, 0, &lab, 1),
            Err(MetricsError::ZeroDim)
        ));
        assert!(matches!(
            knn_agreement_rows(&x[1..], n, d, &lab, 1),
            Err(MetricsError::LengthMismatch { what: "scores", .. })
        ));
        assert!(matches!(
            silhouette_true_rows(&x, n, d, &lab[1..]),
            Err(MetricsError::LengthMismatch { what: "labels", .. })
        ));
        assert!(matches!(
            silhouette_true_rows(&x, usize::MAX, 2, &lab),
            Err(MetricsError::ShapeOverflow { .. })
        ));
        let mut bad = x.clone();
        bad[17] = f32::NAN;
        assert!(matches!(
            knn_agreement_rows(&bad, n, d, &lab, 3),
            Err(MetricsError::NonFinite { index: 17, .. })
        ));
        bad[17] = f32::INFINITY;
        assert!(matches!(
            silhouette_true_rows(&bad, n, d, &lab),
            Err(MetricsError::NonFinite { .. })
        ));
        assert!(matches!(
            silhouette_true_rows(&x, n, d, &[1; 30]),
            Err(MetricsError::InvalidClassCount { n_classes: 1, .. })
        ));
        let distinct: Vec<i64> = (0..30).collect();
        assert!(matches!(
            silhouette_true_rows(&x, n, d, &distinct),
            Err(MetricsError::InvalidClassCount { n_classes: 30, .. })
        ));
    }

    /// Random-ish points far from the origin, several blocks' worth.
    fn offset_points(n: usize, d: usize, n_classes: u64, seed: u64) -> (Vec<f32>, Vec<i64>) {
        let mut rng = Lcg(seed);
        let lab: Vec<i64> = (0..n).map(|_| rng.below(n_classes)).collect();
        let mut x = Vec::with_capacity(n * d);
        for &l in &lab {
            for j in 0..d {
                let noise = rng.below(1 << 20) as f32 / (1 << 20) as f32;
                let shift = if j as i64 % n_classes as i64 == l {
                    0.7
                } else {
                    0.0
                };
                x.push(500.0 + noise + shift);
            }
        }
        (x, lab)
    }

    /// Direct O(n²·d) distance, the ground truth for the blocked Gram computation.
    fn naive_dist(x: &[f32], d: usize, i: usize, j: usize) -> f64 {
        x[i * d..(i + 1) * d]
            .iter()
            .zip(&x[j * d..(j + 1) * d])
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum::<f64>()
            .sqrt()
    }

    #[test]
    fn blocked_matches_naive() -> Result<(), MetricsError> {
        // n spans several BLOCK_ROWS-sized blocks plus a ragged tail, and the +500 offset would
        // wreck an uncentred f64 Gram identity's accuracy if centring were missing.
        let (n, d) = (2 * BLOCK_ROWS + 77, 13);
        let (x, lab) = offset_points(n, d, 4, 11);
        let dist: Vec<Vec<f64>> = (0..n)
            .map(|i| (0..n).map(|j| naive_dist(&x, d, i, j)).collect())
            .collect();

        let k = 7;
        let mut matches = 0usize;
        for i in 0..n {
            let mut others: Vec<(f64, usize)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| (dist[i][j], j))
                .collect();
            others.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            matches += others[..k]
                .iter()
                .filter(|&&(_, j)| lab[j] == lab[i])
                .count();
        }
        let want_knn = matches as f64 / (n * k) as f64;
        assert!(close(knn_agreement_rows(&x, n, d, &lab, k)?, want_knn));

        let mut total = 0.0;
        for i in 0..n {
            let own = lab[i];
            let mut sum = [0f64; 4];
            let mut cnt = [0usize; 4];
            for j in 0..n {
                sum[lab[j] as usize] += dist[i][j];
                cnt[lab[j] as usize] += 1;
            }
            let a = sum[own as usize] / (cnt[own as usize] - 1) as f64;
            let b = (0..4)
                .filter(|&c| c != own as usize)
                .map(|c| sum[c] / cnt[c] as f64)
                .fold(f64::INFINITY, f64::min);
            total += (b - a) / a.max(b);
        }
        let got = silhouette_true_rows(&x, n, d, &lab)?;
        assert!(
            (got - total / n as f64).abs() < 1e-9,
            "{got} vs {}",
            total / n as f64
        );
        Ok(())
    }

    #[test]
    fn score_metrics_ignore_label_names_and_translation() -> Result<(), MetricsError> {
        let (x, lab, n, d) = fixed_points();
        let renamed: Vec<i64> = lab.iter().map(|&l| 1_000_000 - l * 3).collect();
        let shifted: Vec<f32> = x.iter().map(|&v| v + 1024.0).collect();
        let s = silhouette_true_rows(&x, n, d, &lab)?;
        assert!(close(silhouette_true_rows(&x, n, d, &renamed)?, s));
        assert!(close(silhouette_true_rows(&shifted, n, d, &lab)?, s));
        let q = knn_agreement_rows(&x, n, d, &lab, 5)?;
        assert!(close(knn_agreement_rows(&x, n, d, &renamed, 5)?, q));
        assert!(close(knn_agreement_rows(&shifted, n, d, &lab, 5)?, q));
        assert!((0.0..=1.0).contains(&q) && (-1.0..=1.0).contains(&s));
        Ok(())
    }
}
