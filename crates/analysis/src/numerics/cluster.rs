//! HDBSCAN clustering of per-image score vectors, configured to reproduce scikit-learn's
//! `HDBSCAN(min_cluster_size=m)`: Euclidean metric, `min_samples = m` unless set, `alpha = 1`,
//! excess-of-mass ("eom") cluster selection, `allow_single_cluster = False`,
//! `cluster_selection_epsilon = 0`, noise labelled `-1`.
//!
//! # Two routes, chosen by memory
//!
//! * **Dense route** (used while the `n × n` f32 distance matrix fits in
//!   [`DENSE_MATRIX_MAX_BYTES`], i.e. up to n = 11 585): the pairwise distances come from one
//!   blocked GEMM (`‖a‖² + ‖b‖² − 2a·b`, via `ndarray`/`matrixmultiply`), near pairs are
//!   recomputed exactly (see below), and then the rest is a line-by-line port of scikit-learn
//!   1.9's `_hdbscan_prims` (dense Prim MST over mutual reachability), `make_single_linkage`,
//!   `_condense_tree`, `_compute_stability`, `_get_clusters` (eom) and `_do_labelling`. Because
//!   the tree code is a port, ties, infinite λ from duplicate rows and the numbering of the
//!   clusters follow scikit-learn, not just the partition.
//! * **Tree route** (`petal-clustering` 0.14 `HDbscan`, Prim, `O(n·dim)` memory) above that cap.
//!   petal's defaults differ from scikit-learn's (`min_samples = 15`, `min_cluster_size = 15`,
//!   Boruvka); here it gets `alpha = 1`, `min_samples`, `min_cluster_size`, Euclidean and
//!   Prim. Its core distance counts the point itself, as scikit-learn's does, and it selects by
//!   excess of mass without the root, so only tie handling differs: petal merges MST edges of
//!   equal weight in one step where scikit-learn merges them one at a time.
//!
//! # Why this choice (measured, 2 cores shared with other builds, release build, dim = 240)
//!
//! Synthetic PCA-score-like data (6 anisotropic clusters, 15 % broad noise, 5 % exact
//! duplicate rows), `min_cluster_size = 25`; scikit-learn 1.9.1 (`algorithm="auto"`, which is
//! its KD-tree + Prim path). Ranges are over repeated runs under varying load:
//!
//! | n      | scikit-learn  | dense route (here) | petal Prim | petal Boruvka | `hdbscan` 0.12 on a GEMM matrix |
//! |--------|---------------|--------------------|------------|---------------|---------------------------------|
//! | 2 000  | 1.06–1.11 s   | 0.03–0.08 s        | 0.60 s     | 1.21 s        | 0.14–0.23 s                     |
//! | 10 000 | 32.1–34.0 s   | 0.75–1.5 s         | 36.8 s     | 51.9 s        | 4.4–7.2 s                       |
//!
//! All five gave ARI = 1.000 against scikit-learn's labels on that data, and the dense route
//! gave identical label vectors (also on overlapping-cluster sets at n = 2000 / 5000 with
//! `min_cluster_size` 10 and 50). Peak RSS of the dense route at n = 10 000: 437 MB. petal is
//! no faster than scikit-learn at this dimension (its ball tree cannot prune in 240-d, so it is
//! brute force with overhead; Boruvka did not help even at dim = 10: 3.9 s against Prim's
//! 4.0 s at n = 10 000), so it is only the fallback, with Prim. The `hdbscan` crate needs the
//! matrix as `Vec<Vec<f32>>`, fully sorts every row for the core distances (`O(n² log n)`)
//! and checks symmetry element by element; doing those steps directly on the flat matrix
//! (select-nth core distances, the dense Prim) is what the dense route gains over it, so that
//! crate is not a dependency.
//!
//! # Numerics
//!
//! Rows are centred (column means in f64) and scaled by a power of two so that the largest
//! magnitude is below 1: Euclidean HDBSCAN labels do not change under translation or uniform
//! scaling, centring shrinks the `‖a‖² + ‖b‖²` terms that cancel in the GEMM formula, and the
//! scaling rules out overflow of squared norms. GEMM distances lose relative accuracy when
//! `d² ≪ ‖a‖² + ‖b‖²`; in particular exact duplicates come out as rounding noise instead of 0
//! (in a probe, up to 4e-3 against 13.7 to the other points), which turns scikit-learn's
//! `λ = ∞` for a duplicate block into large, rounding-driven finite λ. So every pair with
//! `d² < (‖a‖² + ‖b‖²) / 32` is recomputed as `Σ (aᵢ − bᵢ)²`, which is exactly 0 for
//! duplicates and bounds the relative error of the remaining GEMM pairs at about 1e-4 in `d`
//! (measured against f64: at most 2.2e-5 on the n = 2000 benchmark sets). On the n = 10 000
//! benchmark 3.2 % of the pairs are recomputed, which is
//! lost in the timing noise.

use crate::numerics::matrix::column_means;
use crate::numerics::scores::ScoresError;
use std::collections::VecDeque;

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder, s};
use petal_clustering::{Fit, HDbscan};
use petal_neighbors::distance::Euclidean;
use rayon::prelude::*;

/// Largest distance matrix (n² f32 values) the dense route may allocate: 512 MiB, so
/// n ≤ 11 585. Above it [`hdbscan()`] falls back to petal-clustering's `O(n·dim)` tree route,
/// which is 25–50× slower at dim ≈ 240.
pub const DENSE_MATRIX_MAX_BYTES: usize = 512 << 20;

/// Pairs with `d² < (‖a‖² + ‖b‖²) · REFINE` are recomputed directly (see module docs).
const REFINE: f32 = 1.0 / 32.0;

/// Rows per GEMM block: one block of distances (128 × n f32, 5 MiB at n = 10 000) per
/// rayon task keeps tasks coarse enough to amortise packing in `matrixmultiply`.
const BLOCK_ROWS: usize = 128;

/// Tile edge for filling the lower triangle from the upper one, sized so that a tile of
/// source rows stays in L1/L2 while it is read column-wise.
const TILE: usize = 64;

/// HDBSCAN settings, named as in scikit-learn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HdbscanParams {
    /// Smallest group that counts as a cluster (scikit-learn's `min_cluster_size`).
    pub min_cluster_size: usize,
    /// Neighbours, counting the point itself, that define a point's core distance
    /// (scikit-learn's `min_samples`; it defaults to `min_cluster_size` there too).
    pub min_samples: usize,
}

impl HdbscanParams {
    /// scikit-learn's `HDBSCAN(min_cluster_size=m)`: `min_samples = m`.
    pub fn new(min_cluster_size: usize) -> Self {
        Self {
            min_cluster_size,
            min_samples: min_cluster_size,
        }
    }

    /// Overrides `min_samples` (scikit-learn's `min_samples=m`).
    pub fn with_min_samples(self, m: usize) -> Self {
        Self {
            min_samples: m,
            ..self
        }
    }

    /// Checks the parameters against `n` rows: `2 <= min_cluster_size <= n` and
    /// `1 <= min_samples <= n` (scikit-learn's own bounds).
    pub fn validate(self, n: usize) -> Result<Self, ClusterError> {
        if self.min_cluster_size < 2 || self.min_cluster_size > n {
            return Err(ClusterError::MinClusterSize {
                min_cluster_size: self.min_cluster_size,
                n,
            });
        }
        if self.min_samples < 1 || self.min_samples > n {
            return Err(ClusterError::MinSamples {
                min_samples: self.min_samples,
                n,
            });
        }
        Ok(self)
    }
}

/// Why [`hdbscan()`] refused its input.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The score matrix is malformed (shape, no columns, NaN or infinity).
    #[error(transparent)]
    Scores(#[from] ScoresError),
    /// `min_cluster_size` is outside `2..=n`.
    #[error("min_cluster_size = {min_cluster_size} must lie in 2..={n} (n = number of rows)")]
    MinClusterSize {
        /// The rejected value.
        min_cluster_size: usize,
        /// Number of rows.
        n: usize,
    },
    /// `min_samples` is outside `1..=n`.
    #[error("min_samples = {min_samples} must lie in 1..={n} (n = number of rows)")]
    MinSamples {
        /// The rejected value.
        min_samples: usize,
        /// Number of rows.
        n: usize,
    },
}

/// Clusters the rows of `scores` (row-major `[n, dim]`) like scikit-learn's
/// `HDBSCAN(min_cluster_size=params.min_cluster_size, min_samples=params.min_samples)` and
/// returns one label per row: `0..k` for the clusters (numbered as scikit-learn numbers them on
/// the dense route), `-1` for noise.
///
/// Uses `n² × 4` bytes for a distance matrix while that is at most
/// [`DENSE_MATRIX_MAX_BYTES`], otherwise `O(n·dim)` memory and much more time (module docs).
/// Duplicate rows are fine; NaN or infinite scores are rejected.
pub fn hdbscan(
    scores: &[f32],
    n: usize,
    dim: usize,
    params: HdbscanParams,
) -> Result<Vec<i64>, ClusterError> {
    hdbscan_with(scores, n, dim, params, Route::Auto)
}

/// Which implementation clusters (the benchmark compares them; [`hdbscan`] uses `Auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Dense while the distance matrix fits [`DENSE_MATRIX_MAX_BYTES`], petal beyond.
    Auto,
    /// The distance matrix and scikit-learn's algorithm, whatever the memory.
    Dense,
    /// petal-clustering's HDBSCAN in `O(n·dim)` memory.
    Petal,
}

/// [`hdbscan`] with the implementation chosen by `route`.
pub fn hdbscan_with(
    scores: &[f32],
    n: usize,
    dim: usize,
    params: HdbscanParams,
    route: Route,
) -> Result<Vec<i64>, ClusterError> {
    crate::numerics::scores::check(scores, n, dim)?;
    let params = params.validate(n)?;
    let x = centre_and_scale(scores, n, dim);
    let dense_fits = n
        .checked_mul(n)
        .and_then(|nn| nn.checked_mul(size_of::<f32>()))
        .is_some_and(|bytes| bytes <= DENSE_MATRIX_MAX_BYTES);
    let dense = match route {
        Route::Auto => dense_fits,
        Route::Dense => true,
        Route::Petal => false,
    };
    if dense {
        Ok(dense_hdbscan(&x, n, dim, params))
    } else {
        Ok(petal_hdbscan(&x, n, dim, params))
    }
}

/// Subtracts the column means and scales by a power of two so that `max |x| < 1`.
fn centre_and_scale(scores: &[f32], n: usize, dim: usize) -> Vec<f32> {
    let mean = column_means(scores, n, dim);
    let max_abs = scores
        .chunks_exact(dim)
        .flat_map(|row| {
            row.iter()
                .zip(&mean)
                .map(|(&v, &m)| (f64::from(v) - m).abs())
        })
        .fold(0f64, f64::max);
    // A power of two keeps the scaling itself exact; max_abs == 0 means every row is the
    // same point, which needs no scaling.
    let scale = if max_abs > 0.0 {
        (2f64).powi(-(max_abs.log2().floor() as i32 + 1))
    } else {
        1.0
    };
    scores
        .chunks_exact(dim)
        .flat_map(|row| {
            row.iter()
                .zip(&mean)
                .map(|(&v, &m)| ((f64::from(v) - m) * scale) as f32)
        })
        .collect()
}

/// `Σ (aᵢ − bᵢ)²` with eight independent partial sums so that the compiler vectorises it.
fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (a8, a_rest) = a.split_at(a.len() - a.len() % 8);
    let (b8, b_rest) = b.split_at(a8.len());
    for (ca, cb) in a8.chunks_exact(8).zip(b8.chunks_exact(8)) {
        for k in 0..8 {
            let t = ca[k] - cb[k];
            acc[k] += t * t;
        }
    }
    let tail: f32 = a_rest
        .iter()
        .zip(b_rest)
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// Dense `n × n` Euclidean distance matrix (row-major, exactly symmetric, zero diagonal).
fn pairwise_distances(x: &[f32], n: usize, dim: usize) -> Vec<f32> {
    let norms: Vec<f32> = x
        .chunks_exact(dim)
        .map(|r| r.iter().map(|v| v * v).sum())
        .collect();
    let xv = ArrayView2::from_shape((n, dim), x).expect("x holds n * dim values by construction");
    let mut d = vec![0f32; n * n];
    // Only the upper triangle is computed (half the GEMM work); the lower one is copied below
    // so that Prim and the core distances can read whole contiguous rows.
    d.par_chunks_mut(BLOCK_ROWS * n)
        .enumerate()
        .for_each(|(block, chunk)| {
            let r0 = block * BLOCK_ROWS;
            let rows = chunk.len() / n;
            let a = xv.slice(s![r0..r0 + rows, ..]);
            let bt = xv.slice(s![r0.., ..]).reversed_axes();
            // C[i, j - r0] = x[r0 + i] · x[j] for j >= r0, written in place with row stride n.
            let mut c = ArrayViewMut2::from_shape((rows, n - r0).strides((n, 1)), &mut chunk[r0..])
                .expect("rows * n - r0 values cover a rows × (n - r0) view with row stride n");
            general_mat_mul(1.0, &a, &bt, 0.0, &mut c);
            for i in 0..rows {
                let gi = r0 + i;
                let xi = &x[gi * dim..(gi + 1) * dim];
                let row = &mut chunk[i * n..(i + 1) * n];
                row[gi] = 0.0;
                for j in gi + 1..n {
                    let sum = norms[gi] + norms[j];
                    let mut d2 = sum - 2.0 * row[j];
                    if d2 < REFINE * sum {
                        d2 = squared_distance(xi, &x[j * dim..(j + 1) * dim]);
                    }
                    row[j] = d2.max(0.0).sqrt();
                }
            }
        });
    for i0 in (0..n).step_by(TILE) {
        let i1 = (i0 + TILE).min(n);
        let (upper, lower) = d.split_at_mut(i0 * n);
        for j0 in (0..i0).step_by(TILE) {
            let j1 = (j0 + TILE).min(i0);
            for i in i0..i1 {
                let dst = &mut lower[(i - i0) * n + j0..(i - i0) * n + j1];
                for (jj, v) in dst.iter_mut().enumerate() {
                    *v = upper[(j0 + jj) * n + i];
                }
            }
        }
        for i in i0..i1 {
            for j in i0..i {
                lower[(i - i0) * n + j] = lower[(j - i0) * n + i];
            }
        }
    }
    d
}

fn dense_hdbscan(x: &[f32], n: usize, dim: usize, params: HdbscanParams) -> Vec<i64> {
    let d = pairwise_distances(x, n, dim);
    let k = params.min_samples;
    // scikit-learn's core distance: distance to the k-th nearest row, the row itself included.
    let core: Vec<f32> = d
        .par_chunks_exact(n)
        .map_init(
            || Vec::with_capacity(n),
            |buf: &mut Vec<f32>, row| {
                buf.clear();
                buf.extend_from_slice(row);
                *buf.select_nth_unstable_by(k - 1, f32::total_cmp).1
            },
        )
        .collect();
    let mut mst = prim_mst(&d, n, &core);
    drop(d);
    // scikit-learn uses np.argsort (unstable); a stable sort keeps Prim's order among ties.
    mst.sort_by(|a, b| a.2.total_cmp(&b.2));
    let hierarchy = single_linkage(&mst, n);
    let condensed = condense_tree(&hierarchy, n, params.min_cluster_size);
    eom_labels(&condensed, n)
}

/// Port of scikit-learn's `mst_from_data_matrix` on a precomputed matrix (same scan order,
/// same strict comparisons, so the same tree whenever the distances agree).
fn prim_mst(d: &[f32], n: usize, core: &[f32]) -> Vec<(usize, usize, f64)> {
    let mut in_tree = vec![false; n];
    let mut min_reach = vec![f32::INFINITY; n];
    let mut sources = vec![1usize; n];
    let mut mst = Vec::with_capacity(n.saturating_sub(1));
    let mut current = 0;
    for _ in 1..n {
        in_tree[current] = true;
        let core_current = core[current];
        let row = &d[current * n..(current + 1) * n];
        let mut best = f32::MAX;
        let mut source = 0;
        let mut next = 0;
        for j in 0..n {
            if in_tree[j] {
                continue;
            }
            let reach = core_current.max(core[j]).max(row[j]);
            if reach < min_reach[j] {
                min_reach[j] = reach;
                sources[j] = current;
                if reach < best {
                    best = reach;
                    source = current;
                    next = j;
                }
            } else if min_reach[j] < best {
                best = min_reach[j];
                source = sources[j];
                next = j;
            }
        }
        mst.push((source, next, f64::from(best)));
        current = next;
    }
    mst
}

/// One merge of the single-linkage dendrogram (scipy layout: node `n + i` is merge `i`).
#[derive(Debug, Clone, Copy)]
struct Merge {
    left: usize,
    right: usize,
    distance: f64,
    size: usize,
}

/// Port of scikit-learn's `make_single_linkage` (edges must be sorted by distance).
fn single_linkage(mst: &[(usize, usize, f64)], n: usize) -> Vec<Merge> {
    let mut parent = vec![usize::MAX; 2 * n - 1];
    let mut size: Vec<usize> = (0..2 * n - 1).map(|i| usize::from(i < n)).collect();
    let mut next_label = n;
    let find = |parent: &mut Vec<usize>, mut x: usize| {
        let mut p = x;
        while parent[x] != usize::MAX {
            x = parent[x];
        }
        while parent[p] != usize::MAX && parent[p] != x {
            let up = parent[p];
            parent[p] = x;
            p = up;
        }
        x
    };
    mst.iter()
        .map(|&(a, b, distance)| {
            let left = find(&mut parent, a);
            let right = find(&mut parent, b);
            let merged = size[left] + size[right];
            parent[left] = next_label;
            parent[right] = next_label;
            size[next_label] = merged;
            next_label += 1;
            Merge {
                left,
                right,
                distance,
                size: merged,
            }
        })
        .collect()
}

/// Nodes of the dendrogram below `root`, breadth first (scikit-learn's `bfs_from_hierarchy`).
fn bfs_hierarchy(hierarchy: &[Merge], n: usize, root: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut queue = VecDeque::from([root]);
    while let Some(node) = queue.pop_front() {
        out.push(node);
        if node >= n {
            let m = hierarchy[node - n];
            queue.push_back(m.left);
            queue.push_back(m.right);
        }
    }
    out
}

/// One row of the condensed tree: `child` (a point `< n` or a cluster `> n`) leaves or splits
/// off `parent` at density `lambda`.
#[derive(Debug, Clone, Copy)]
struct Condensed {
    parent: usize,
    child: usize,
    lambda: f64,
    size: usize,
}

/// Port of scikit-learn's `_condense_tree`; cluster ids start at `n` (the root) and are handed
/// out in breadth-first order, so a child's id is always larger than its parent's.
fn condense_tree(hierarchy: &[Merge], n: usize, min_cluster_size: usize) -> Vec<Condensed> {
    let root = 2 * n - 2;
    let mut relabel = vec![0usize; root + 1];
    relabel[root] = n;
    let mut next_label = n + 1;
    let mut ignore = vec![false; root + 1];
    let mut out = Vec::with_capacity(2 * n);
    let size_of = |node: usize| {
        if node >= n {
            hierarchy[node - n].size
        } else {
            1
        }
    };
    for node in bfs_hierarchy(hierarchy, n, root) {
        if ignore[node] || node < n {
            continue;
        }
        let m = hierarchy[node - n];
        let lambda = if m.distance > 0.0 {
            1.0 / m.distance
        } else {
            f64::INFINITY
        };
        let (left_count, right_count) = (size_of(m.left), size_of(m.right));
        let parent = relabel[node];
        let fall_out = |sub_root: usize, out: &mut Vec<Condensed>, ignore: &mut Vec<bool>| {
            for sub in bfs_hierarchy(hierarchy, n, sub_root) {
                if sub < n {
                    out.push(Condensed {
                        parent,
                        child: sub,
                        lambda,
                        size: 1,
                    });
                }
                ignore[sub] = true;
            }
        };
        match (
            left_count >= min_cluster_size,
            right_count >= min_cluster_size,
        ) {
            (true, true) => {
                for (child, count) in [(m.left, left_count), (m.right, right_count)] {
                    relabel[child] = next_label;
                    next_label += 1;
                    out.push(Condensed {
                        parent,
                        child: relabel[child],
                        lambda,
                        size: count,
                    });
                }
            }
            (false, false) => {
                fall_out(m.left, &mut out, &mut ignore);
                fall_out(m.right, &mut out, &mut ignore);
            }
            (false, true) => {
                relabel[m.right] = parent;
                fall_out(m.left, &mut out, &mut ignore);
            }
            (true, false) => {
                relabel[m.left] = parent;
                fall_out(m.right, &mut out, &mut ignore);
            }
        }
    }
    out
}

/// Ports of scikit-learn's `_compute_stability`, `_get_clusters` (eom, root excluded, no
/// epsilon, no max size) and `_do_labelling`. Float semantics are kept on purpose: a cluster
/// born and dissolved at `λ = ∞` (a block of duplicates split at distance 0) gets stability
/// `∞ − ∞ = NaN`, and NaN loses every `>` comparison, exactly as in scikit-learn.
fn eom_labels(condensed: &[Condensed], n: usize) -> Vec<i64> {
    let Some(max_cluster) = condensed.iter().map(|r| r.parent).max() else {
        return vec![-1; n];
    };
    let clusters = max_cluster - n + 1;
    let mut birth = vec![f64::NAN; clusters];
    let mut parent_of = vec![usize::MAX; clusters];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); clusters];
    birth[0] = 0.0;
    for r in condensed.iter().filter(|r| r.child >= n) {
        birth[r.child - n] = r.lambda;
        parent_of[r.child - n] = r.parent;
        children[r.parent - n].push(r.child);
    }
    let mut stability = vec![0f64; clusters];
    for r in condensed {
        stability[r.parent - n] += (r.lambda - birth[r.parent - n]) * r.size as f64;
    }
    let mut selected = vec![true; clusters];
    selected[0] = false;
    for c in (1..clusters).rev() {
        let subtree: f64 = children[c].iter().map(|&ch| stability[ch - n]).sum();
        if subtree > stability[c] {
            selected[c] = false;
            stability[c] = subtree;
        } else {
            let mut queue: VecDeque<usize> = children[c].iter().copied().collect();
            while let Some(sub) = queue.pop_front() {
                selected[sub - n] = false;
                queue.extend(children[sub - n].iter().copied());
            }
        }
    }
    // Labels follow the ascending cluster ids of the selection, as scikit-learn's cluster_map.
    let mut cluster_label = vec![-1i64; clusters];
    let mut next = 0;
    for c in 1..clusters {
        if selected[c] {
            cluster_label[c] = next;
            next += 1;
        } else {
            // Parents have smaller ids, so they are labelled first.
            cluster_label[c] = cluster_label[parent_of[c] - n];
        }
    }
    let mut labels = vec![-1i64; n];
    for r in condensed.iter().filter(|r| r.child < n) {
        labels[r.child] = cluster_label[r.parent - n];
    }
    labels
}

/// The memory-bounded fallback: petal-clustering configured as scikit-learn.
fn petal_hdbscan(x: &[f32], n: usize, dim: usize, params: HdbscanParams) -> Vec<i64> {
    let view = ArrayView2::from_shape((n, dim), x).expect("x holds n * dim values by construction");
    let mut model = HDbscan {
        alpha: 1.0f32,
        min_samples: params.min_samples,
        min_cluster_size: params.min_cluster_size,
        metric: Euclidean::default(),
        boruvka: false,
    };
    let (clusters, _noise, _outlier_scores) = model.fit(&view, None);
    // petal's cluster ids, like scikit-learn's, grow from the root downwards; numbering the
    // clusters in id order keeps the labels deterministic.
    let mut ids: Vec<usize> = clusters.keys().copied().collect();
    ids.sort_unstable();
    let mut labels = vec![-1i64; n];
    for (label, id) in (0i64..).zip(&ids) {
        for &p in &clusters[id] {
            labels[p] = label;
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    //! Reference labels come from scikit-learn 1.9.1 via `tests/data/cluster/make.py`, which
    //! rebuilds the same datasets from the same LCG.

    use super::*;
    use std::collections::HashMap;

    /// Knuth's MMIX LCG, mirrored in make.py; 24-bit draws are exact in f32 and f64.
    struct Lcg(u64);

    impl Lcg {
        fn uniform(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 40) as f64 / f64::from(1u32 << 24)
        }

        fn gauss(&mut self) -> f64 {
            self.uniform() + self.uniform() + self.uniform() + self.uniform() - 2.0
        }
    }

    /// A dataset: row-major f32 scores, rows, columns, min_cluster_size used by make.py.
    struct Data {
        x: Vec<f32>,
        n: usize,
        dim: usize,
        m: usize,
    }

    fn data(rows: Vec<Vec<f64>>, m: usize) -> Data {
        let n = rows.len();
        let dim = rows[0].len();
        let x = rows.into_iter().flatten().map(|v| v as f32).collect();
        Data { x, n, dim, m }
    }

    fn blobs() -> Data {
        let mut rng = Lcg(1);
        let mut rows = Vec::new();
        for (size, c) in [(200, 0), (150, 1), (100, 2)] {
            for _ in 0..size {
                rows.push(
                    (0..8)
                        .map(|j| if j == c { 6.0 } else { 0.0 } + 1.5 * rng.gauss())
                        .collect(),
                );
            }
        }
        for _ in 0..30 {
            rows.push((0..8).map(|_| -4.0 + 14.0 * rng.uniform()).collect());
        }
        data(rows, 15)
    }

    fn relu_dups() -> Data {
        let mut rng = Lcg(2);
        let mut rows = Vec::new();
        for (size, c) in [(150, 0), (150, 8)] {
            for _ in 0..size {
                rows.push(
                    (0..16)
                        .map(|j| {
                            let centre = if (c..c + 8).contains(&j) { 4.0 } else { -1.0 };
                            f64::max(0.0, centre + 2.0 * rng.gauss())
                        })
                        .collect(),
                );
            }
        }
        rows.extend(std::iter::repeat_n(vec![0.0; 16], 120));
        for _ in 0..20 {
            rows.push(
                (0..16)
                    .map(|_| f64::max(0.0, -2.0 + 10.0 * rng.uniform()))
                    .collect(),
            );
        }
        data(rows, 10)
    }

    fn uniform() -> Data {
        let mut rng = Lcg(3);
        let rows = (0..300)
            .map(|_| (0..4).map(|_| rng.uniform()).collect())
            .collect();
        data(rows, 20)
    }

    fn sklearn_labels(encoded: &str) -> Vec<i64> {
        encoded
            .trim()
            .chars()
            .map(|c| {
                if c == '-' {
                    -1
                } else {
                    i64::from(c.to_digit(36).expect("label digit"))
                }
            })
            .collect()
    }

    /// Adjusted Rand index (Hubert & Arabie), noise treated as one more label as scikit-learn's
    /// `adjusted_rand_score` does.
    fn ari(a: &[i64], b: &[i64]) -> f64 {
        let mut table: HashMap<(i64, i64), f64> = HashMap::new();
        let mut rows: HashMap<i64, f64> = HashMap::new();
        let mut cols: HashMap<i64, f64> = HashMap::new();
        for (&x, &y) in a.iter().zip(b) {
            *table.entry((x, y)).or_default() += 1.0;
            *rows.entry(x).or_default() += 1.0;
            *cols.entry(y).or_default() += 1.0;
        }
        let pairs = |v: f64| v * (v - 1.0) / 2.0;
        let index: f64 = table.values().copied().map(pairs).sum();
        let sum_rows: f64 = rows.values().copied().map(pairs).sum();
        let sum_cols: f64 = cols.values().copied().map(pairs).sum();
        let expected = sum_rows * sum_cols / pairs(a.len() as f64);
        let max = (sum_rows + sum_cols) / 2.0;
        if max == expected {
            1.0
        } else {
            (index - expected) / (max - expected)
        }
    }

    fn summary(labels: &[i64]) -> (i64, usize) {
        let clusters = labels.iter().copied().max().map_or(0, |m| m + 1);
        (clusters, labels.iter().filter(|&&l| l < 0).count())
    }

    /// Runs both routes on `d` and checks them against scikit-learn's labels.
    fn check(d: &Data, expected_sum: f64, reference: &str, clusters: i64, noise: usize) {
        // Guards against the Rust and Python generators drifting apart.
        let sum: f64 = d.x.iter().map(|&v| f64::from(v)).sum();
        assert!(
            (sum - expected_sum).abs() < 1e-5,
            "dataset sum {sum} != make.py's {expected_sum}"
        );
        let sk = sklearn_labels(reference);
        assert_eq!(sk.len(), d.n);
        assert_eq!(
            summary(&sk),
            (clusters, noise),
            "reference file out of date"
        );

        let labels = hdbscan(&d.x, d.n, d.dim, HdbscanParams::new(d.m)).expect("valid input");
        assert_eq!(summary(&labels), (clusters, noise));
        let score = ari(&labels, &sk);
        assert!(score >= 0.99, "dense route ARI {score}");

        let x = centre_and_scale(&d.x, d.n, d.dim);
        let fallback = petal_hdbscan(&x, d.n, d.dim, HdbscanParams::new(d.m));
        let score = ari(&fallback, &sk);
        assert!(score >= 0.99, "petal route ARI {score}");
    }

    #[test]
    fn three_blobs_match_sklearn() {
        let reference = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/cluster/blobs.txt"
        ));
        check(&blobs(), 3537.038062, reference, 3, 29);
    }

    #[test]
    fn duplicate_zero_rows_match_sklearn() {
        let reference = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/cluster/relu_dups.txt"
        ));
        let d = relu_dups();
        check(&d, 10996.389843, reference, 3, 20);
        // The 120 zero rows (300..420) form one cluster of their own.
        let labels = hdbscan(&d.x, d.n, d.dim, HdbscanParams::new(d.m)).expect("valid input");
        let zero_label = labels[300];
        assert!(zero_label >= 0);
        assert!(labels[300..420].iter().all(|&l| l == zero_label));
        assert!(
            labels[..300]
                .iter()
                .chain(&labels[420..])
                .all(|&l| l != zero_label)
        );
    }

    #[test]
    fn uniform_noise_has_no_clusters() {
        let reference = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/cluster/uniform.txt"
        ));
        check(&uniform(), 607.400112, reference, 0, 300);
    }

    #[test]
    fn identical_rows_do_not_break_it() {
        // Every distance is 0, so every λ is infinite; scikit-learn labels all of it noise.
        let x = vec![0.25f32; 60 * 3];
        let labels = hdbscan(&x, 60, 3, HdbscanParams::new(5)).expect("valid input");
        assert_eq!(labels, vec![-1; 60]);
        // The fallback must survive it too (its λ are f32::MAX rather than ∞).
        let fallback = petal_hdbscan(&centre_and_scale(&x, 60, 3), 60, 3, HdbscanParams::new(5));
        assert_eq!(fallback.len(), 60);
    }

    #[test]
    fn distances_are_symmetric_and_exact_for_duplicates() {
        let d = relu_dups();
        let x = centre_and_scale(&d.x, d.n, d.dim);
        let m = pairwise_distances(&x, d.n, d.dim);
        for i in 0..d.n {
            for j in 0..d.n {
                assert_eq!(m[i * d.n + j].to_bits(), m[j * d.n + i].to_bits());
                let direct = squared_distance(
                    &x[i * d.dim..(i + 1) * d.dim],
                    &x[j * d.dim..(j + 1) * d.dim],
                )
                .sqrt();
                assert!(
                    (m[i * d.n + j] - direct).abs() <= 1e-3 * direct.max(1e-3),
                    "({i}, {j})"
                );
            }
        }
        assert!((300..420).all(|i| (300..420).all(|j| m[i * d.n + j] == 0.0)));
    }

    #[test]
    fn params_follow_sklearn_bounds() {
        let p = HdbscanParams::new(5);
        assert_eq!(p.min_samples, 5);
        assert_eq!(p.with_min_samples(2).min_samples, 2);
        assert!(p.validate(5).is_ok());
        assert!(matches!(
            p.validate(4),
            Err(ClusterError::MinClusterSize { .. })
        ));
        assert!(matches!(
            HdbscanParams::new(1).validate(10),
            Err(ClusterError::MinClusterSize { .. })
        ));
        assert!(matches!(
            p.with_min_samples(0).validate(10),
            Err(ClusterError::MinSamples { .. })
        ));
        assert!(matches!(
            p.with_min_samples(11).validate(10),
            Err(ClusterError::MinSamples { .. })
        ));
    }

    #[test]
    fn bad_input_is_rejected() {
        let p = HdbscanParams::new(2);
        assert!(matches!(
            hdbscan(&[0.0; 5], 2, 3, p),
            Err(ClusterError::Scores(ScoresError::Shape { .. }))
        ));
        assert!(matches!(
            hdbscan(&[], 3, 0, p),
            Err(ClusterError::Scores(ScoresError::ZeroDim))
        ));
        assert!(matches!(
            hdbscan(&[0.0; 4], usize::MAX, 2, p),
            Err(ClusterError::Scores(ScoresError::Shape { .. }))
        ));
        let mut x = vec![1.0f32; 12];
        x[7] = f32::NAN;
        assert!(matches!(
            hdbscan(&x, 4, 3, p),
            Err(ClusterError::Scores(ScoresError::NonFinite {
                row: 2,
                col: 1,
                ..
            }))
        ));
        x[7] = f32::INFINITY;
        assert!(matches!(
            hdbscan(&x, 4, 3, p),
            Err(ClusterError::Scores(ScoresError::NonFinite {
                row: 2,
                col: 1,
                ..
            }))
        ));
    }

    #[test]
    fn huge_and_tiny_scales_give_the_same_labels() {
        // The power-of-two rescaling makes the labels independent of the units.
        let d = blobs();
        let base = hdbscan(&d.x, d.n, d.dim, HdbscanParams::new(d.m)).expect("valid input");
        for factor in [1e30f32, 1e-30] {
            let x: Vec<f32> = d.x.iter().map(|v| v * factor).collect();
            let labels = hdbscan(&x, d.n, d.dim, HdbscanParams::new(d.m)).expect("valid input");
            assert!(ari(&labels, &base) >= 0.99, "factor {factor}");
        }
    }
}
