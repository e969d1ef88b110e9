//! The analysis steps after the SVD, at the probe-set sizes of the study (N = 2000 and 10 000,
//! ~240 scores): HDBSCAN on both routes (so the choice of the dense route is visible) and the
//! clustering-free measures. Run with `cargo bench --bench analysis`.
//!
//! Reference, measured side by side on this 2-core machine (load ~5): scikit-learn's
//! HDBSCAN(min_cluster_size=25) took 1.1 s at N = 2000 and 33 s at N = 10 000 on data of this
//! shape.

use std::hint::black_box;

use cnnu::analysis::cluster::{HdbscanParams, Route, hdbscan_with};
use cnnu::analysis::metrics::{knn_agreement, silhouette_true};
use criterion::{Criterion, criterion_group, criterion_main};

const DIM: usize = 240;

/// Six Gaussian-ish clusters plus 15% uniform noise, like PCA scores of a trained layer.
fn scores(n: usize) -> (Vec<f32>, Vec<i64>) {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut uniform = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut x = Vec::with_capacity(n * DIM);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = (i % 6) as i64;
        let noise = i % 7 == 0;
        for j in 0..DIM {
            let centre = if noise {
                0.0
            } else if j % 6 == class as usize {
                4.0
            } else {
                0.0
            };
            let spread = if noise { 8.0 } else { 1.0 };
            x.push(centre + spread * (uniform() + uniform() + uniform() - 1.5));
        }
        labels.push(class);
    }
    (x, labels)
}

fn clustering(c: &mut Criterion) {
    let mut group = c.benchmark_group("hdbscan_dim240");
    group.sample_size(10);
    for n in [2000, 10_000] {
        let (x, _) = scores(n);
        let params = HdbscanParams::new(25);
        group.bench_function(format!("dense_n{n}"), |b| {
            b.iter(|| hdbscan_with(black_box(&x), n, DIM, params, Route::Dense).unwrap())
        });
        // petal is ~35 s a run at N = 10 000: measured once by hand, not every bench run.
        if n == 2000 {
            group.bench_function(format!("petal_n{n}"), |b| {
                b.iter(|| hdbscan_with(black_box(&x), n, DIM, params, Route::Petal).unwrap())
            });
        }
    }
    group.finish();
}

fn measures(c: &mut Criterion) {
    let mut group = c.benchmark_group("measures_dim240");
    group.sample_size(10);
    for n in [2000, 10_000] {
        let (x, labels) = scores(n);
        group.bench_function(format!("knn_agreement_n{n}"), |b| {
            b.iter(|| knn_agreement(black_box(&x), n, DIM, &labels, 10).unwrap())
        });
        group.bench_function(format!("silhouette_true_n{n}"), |b| {
            b.iter(|| silhouette_true(black_box(&x), n, DIM, &labels).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, clustering, measures);
criterion_main!(benches);
