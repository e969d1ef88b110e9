//! The reduce step (`cnnu::analysis::numerics::reduce`) on conv1-shaped activations: each solver at
//! N = 2000 and N = 10 000 samples × D = 12 544 features, so the winner at each size is visible.
//!
//! The data imitate ResNet18-MNIST conv1 activations (64 channels × 14 × 14): a sum of R = 300
//! rank-one terms with geometrically decaying weights plus small noise, which puts k at 90 %
//! energy near the real conv1's 60–90 and gives the same slowly decaying tail. The numbers to
//! compare with (same machine): numpy.linalg.svd(full_matrices=False) and numpy's Gram route
//! (X·Xᵀ in f64, then eigvalsh).
//!
//! The Gram solver at N = 10 000 forms a 10 000² f64 matrix (800 MB) at a cost of N²·D = 1.3e12
//! flops (one run took 20 s on the busy 2-core machine, against 3.6 s for the randomized solver),
//! and `Solver::Auto` never picks it there (`GRAM_MAX_DIM`), so it is left out unless
//! `CNNU_BENCH_GRAM_10K=1` is set.
//! Run with `cargo bench --bench svd`.

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;

use cnnu::analysis::numerics::matrix::Matrix;
use cnnu::analysis::numerics::reduce::{GRAM_MAX_DIM, Method, Solver, reduce};
use criterion::{Criterion, criterion_group, criterion_main};

const D: usize = 12_544;
const RANK: usize = 300;
const DECAY: f64 = 0.985;
const NOISE: f32 = 1.0;

/// Deterministic pseudo-normal numbers (splitmix64, sum of four uniforms).
struct Gen(u64);

impl Gen {
    fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn normal(&mut self) -> f32 {
        (self.uniform() + self.uniform() + self.uniform() + self.uniform()) * 0.866
    }
}

/// `[n, D]` row-major: `Σ_r w_r u_r v_rᵀ + noise`, `w_r = DECAY^r`, `u_r`, `v_r` pseudo-normal
/// (scaled so that every term has unit expected energy per entry before weighting).
fn conv1_like(n: usize, seed: u64) -> Vec<f32> {
    let mut g = Gen(seed);
    // Weighted left factors [n, R] and right factors [R, D], then one product per row.
    let u: Vec<f32> = (0..n * RANK)
        .map(|i| g.normal() * DECAY.powi((i % RANK) as i32) as f32)
        .collect();
    let v: Vec<f32> = (0..RANK * D).map(|_| g.normal()).collect();
    let mut x = vec![0f32; n * D];
    for (row, ur) in x.chunks_exact_mut(D).zip(u.chunks_exact(RANK)) {
        for (&w, vr) in ur.iter().zip(v.chunks_exact(D)) {
            for (o, &b) in row.iter_mut().zip(vr) {
                *o += w * b;
            }
        }
        for o in row.iter_mut() {
            *o += NOISE * g.normal();
        }
    }
    x
}

fn svd(c: &mut Criterion) {
    let gram_10k = std::env::var_os("CNNU_BENCH_GRAM_10K").is_some();
    for n in [2000usize, 10_000] {
        let x = Matrix::new(conv1_like(n, 0x5EED ^ n as u64), n, D).expect("finite");
        let solvers: &[Solver] = if n <= GRAM_MAX_DIM || gram_10k {
            &[Solver::Gram, Solver::Randomized]
        } else {
            &[Solver::Randomized]
        };
        // One run each, so that the report shows that every solver finds the same k.
        for &solver in solvers {
            let r = reduce(&x, Method::Pca, 0.9, None, solver).expect("reduce");
            eprintln!(
                "n={n} d={D} {solver:?}: k={} energy at k−1 {:.7}, at k {:.7}, s1={:.4}",
                r.k, r.energy_before_k, r.energy_at_k, r.singular_values[0]
            );
        }
        let mut group = c.benchmark_group(format!("reduce_pca_{n}x{D}"));
        group.sample_size(10);
        for &solver in solvers {
            group.bench_function(format!("{solver:?}").to_lowercase(), |b| {
                b.iter(|| reduce(black_box(&x), Method::Pca, 0.9, None, solver).expect("reduce"))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, svd);
criterion_main!(benches);
