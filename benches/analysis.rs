//! The analysis steps after the SVD, at the probe-set sizes of the study (N = 2000 and 10 000,
//! ~240 scores): HDBSCAN on both routes (so the choice of the dense route is visible) and the
//! clustering-free measures; and the representation-dynamics measures (reduce, centred Gram,
//! CKA, class subspaces, NC1, probe) at MNIST-layer sizes. Run with `cargo bench --bench
//! analysis` (`-- dynamics` for the last group alone).
//!
//! Reference, measured side by side on this 2-core machine (load ~5): scikit-learn's
//! HDBSCAN(min_cluster_size=25) took 1.1 s at N = 2000 and 33 s at N = 10 000 on data of this
//! shape.

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;

use cnnu::analysis::numerics::cluster::{HdbscanParams, Route, hdbscan_with};
use cnnu::analysis::numerics::dynamics::{
    CenteredGram, Hsic, class_subspace_alignment, linear_cka, linear_probe, nc1,
};
use cnnu::analysis::numerics::matrix::Matrix;
use cnnu::analysis::numerics::metrics::{knn_agreement, silhouette_true};
use cnnu::analysis::numerics::reduce::{Method, Solver, reduce};
use cnnu::analysis::numerics::rng::SplitMix64;
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
        let m = Matrix::from_slice(&x, n, DIM).unwrap();
        group.bench_function(format!("knn_agreement_n{n}"), |b| {
            b.iter(|| knn_agreement(black_box(&m), &labels, 10).unwrap())
        });
        group.bench_function(format!("silhouette_true_n{n}"), |b| {
            b.iter(|| silhouette_true(black_box(&m), &labels).unwrap())
        });
    }
    group.finish();
}

/// `n × d` standard normals, row-major.
fn normal_matrix(rng: &mut SplitMix64, n: usize, d: usize) -> Vec<f32> {
    (0..n * d).map(|_| rng.normal() as f32).collect()
}

/// Ten classes of `n / 10` samples (interleaved), each in its own random 40-dimensional subspace
/// plus a little noise: real layers sit between this and pure noise.
fn low_rank(rng: &mut SplitMix64, n: usize, d: usize) -> Vec<f32> {
    let basis = normal_matrix(rng, 400, d);
    let mut out = vec![0f32; n * d];
    for i in 0..n {
        let c = (i % 10) * 40;
        for t in 0..40 {
            let w = rng.normal() as f32;
            for j in 0..d {
                out[i * d + j] += w * basis[(c + t) * d + j];
            }
        }
        for j in 0..d {
            out[i * d + j] += 0.05 * rng.normal() as f32;
        }
    }
    out
}

/// The dynamics measures at the study's probe-set size (N = 2000, ten classes) and two layer
/// widths: d = 512 (the samples outnumber the features, so the reduction forms no sample Gram
/// matrix) and d = 12 544 (conv1 of MNIST, where it does and the Gram matrix is reused).
fn dynamics(c: &mut Criterion) {
    let n = 2000;
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 10).collect();
    let mut rng = SplitMix64::new(14);
    let mut group = c.benchmark_group("dynamics_n2000");
    group.sample_size(10);
    for d in [512usize, 12_544] {
        let random = normal_matrix(&mut rng, n, d);
        let structured = low_rank(&mut rng, n, d);
        for (name, x) in [("random", &random), ("low_rank", &structured)] {
            let id = format!("{name}_d{d}");
            let m = Matrix::from_slice(x, n, d).unwrap();
            let red = reduce(&m, Method::Pca, 0.9, None, Solver::Auto).unwrap();
            group.bench_function(format!("reduce_{id}"), |b| {
                b.iter(|| reduce(black_box(&m), Method::Pca, 0.9, None, Solver::Auto).unwrap())
            });
            group.bench_function(format!("gram_from_features_{id}"), |b| {
                b.iter(|| CenteredGram::from_features(black_box(&m)).unwrap())
            });
            if let Some(g) = red.sample_gram.as_deref() {
                group.bench_function(format!("gram_from_gram_{id}"), |b| {
                    b.iter(|| CenteredGram::from_gram(black_box(g), n).unwrap())
                });
            }
            let gram = CenteredGram::from_features(&m).unwrap();
            group.bench_function(format!("cka_unbiased_{id}"), |b| {
                b.iter(|| linear_cka(black_box(&gram), &gram, Hsic::Unbiased).unwrap())
            });
            group.bench_function(format!("subspace_alignment_{id}"), |b| {
                b.iter(|| class_subspace_alignment(black_box(x), n, d, &labels, 0.9).unwrap())
            });
            group.bench_function(format!("nc1_{id}"), |b| {
                b.iter(|| nc1(black_box(x), n, d, &labels).unwrap())
            });
            // At most 250 scores, about what the study's layers keep (~240).
            let k = red.k_used.min(250);
            let scores: Vec<f32> = (0..n)
                .flat_map(|i| red.scores[i * red.k_used..i * red.k_used + k].to_vec())
                .collect();
            group.bench_function(format!("probe_k{k}_{id}"), |b| {
                b.iter(|| linear_probe(black_box(&scores), n, k, &labels, 0).unwrap())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, clustering, measures, dynamics);
criterion_main!(benches);
