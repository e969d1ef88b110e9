//! Property tests (proptest) of the measures and the SVD step: invariances and identities that
//! must hold for every input, not just the fixed cases of the unit tests.

use cnnu_analysis::numerics::matrix::Matrix;
use cnnu_analysis::numerics::metrics::cluster_agreement;
use cnnu_analysis::numerics::reduce::{Method, Solver, reduce};
use proptest::prelude::*;

fn labelings() -> impl Strategy<Value = (Vec<i64>, Vec<i64>)> {
    (2usize..80).prop_flat_map(|n| {
        (
            prop::collection::vec(0i64..5, n),
            prop::collection::vec(-1i64..6, n),
        )
    })
}

fn in_unit(x: f64) -> bool {
    (-1e-12..=1.0 + 1e-12).contains(&x)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn measures_ignore_cluster_names_and_stay_in_bounds((labels, clusters) in labelings(), shift in 1i64..1000) {
        let a = cluster_agreement(&labels, &clusters).unwrap();
        // Rename every real cluster id (noise stays -1).
        let renamed: Vec<i64> = clusters.iter().map(|&c| if c < 0 { c } else { c * 7 + shift }).collect();
        let b = cluster_agreement(&labels, &renamed).unwrap();
        for (x, y) in [(a.purity_with_noise, b.purity_with_noise), (a.homogeneity, b.homogeneity),
                       (a.completeness, b.completeness), (a.v_measure, b.v_measure), (a.ari, b.ari), (a.nmi, b.nmi)] {
            prop_assert!((x - y).abs() < 1e-9, "{x} vs {y}");
        }
        prop_assert_eq!(a.n_clusters, b.n_clusters);
        for x in [a.purity_with_noise, a.homogeneity, a.completeness, a.v_measure, a.nmi, a.noise_frac] {
            prop_assert!(in_unit(x), "{x} outside [0, 1]");
        }
        if let Some(p) = a.purity_without_noise {
            prop_assert!(in_unit(p));
        }
        prop_assert!((-1.0 - 1e-12..=1.0 + 1e-12).contains(&a.ari));
    }

    #[test]
    fn v_measure_is_symmetric((labels, clusters) in labelings()) {
        let ab = cluster_agreement(&labels, &clusters).unwrap();
        let ba = cluster_agreement(&clusters, &labels).unwrap();
        prop_assert!((ab.v_measure - ba.v_measure).abs() < 1e-9);
        prop_assert!((ab.homogeneity - ba.completeness).abs() < 1e-9);
        prop_assert!((ab.ari - ba.ari).abs() < 1e-9);
    }

    #[test]
    fn a_perfect_clustering_scores_one(labels in prop::collection::vec(0i64..6, 2..80), shift in 0i64..50) {
        let clusters: Vec<i64> = labels.iter().map(|&l| l * 3 + shift).collect();
        let a = cluster_agreement(&labels, &clusters).unwrap();
        for x in [a.purity_with_noise, a.homogeneity, a.completeness, a.v_measure, a.ari, a.nmi] {
            prop_assert!((x - 1.0).abs() < 1e-9, "{x}");
        }
        prop_assert_eq!(a.purity_without_noise, Some(1.0));
    }
}

fn matrices() -> impl Strategy<Value = (usize, usize, Vec<f32>)> {
    (3usize..14, 2usize..10)
        .prop_flat_map(|(n, d)| (Just(n), Just(d), prop::collection::vec(-4.0f32..4.0, n * d)))
}

/// `A·Aᵀ` of a row-major `[n, m]` matrix, in f64.
fn gram(a: &[f32], n: usize, m: usize) -> Vec<f64> {
    let mut g = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            g[i * n + j] = (0..m)
                .map(|t| a[i * m + t] as f64 * a[j * m + t] as f64)
                .sum();
        }
    }
    g
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// With every component kept, the scores U·S rebuild X up to the rotation Vᵀ: S·Sᵀ = X·Xᵀ,
    /// the identity U·S·Vᵀ = X gives, with V orthogonal.
    #[test]
    fn all_components_rebuild_the_gram_matrix((n, d, x) in matrices()) {
        for solver in [Solver::Gram, Solver::Randomized] {
            let r = reduce(&Matrix::from_slice(&x, n, d).unwrap(), Method::Svd, 1.0, None, solver).unwrap();
            let s1 = r.singular_values[0];
            // Components below 1e-5·s₁² of energy are dropped at energy 1; they hold at most that much.
            let gx = gram(&x, n, d);
            let gs = gram(&r.scores, n, r.k_used);
            let scale = gx.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            for (a, b) in gx.iter().zip(&gs) {
                prop_assert!((a - b).abs() <= 1e-4 * scale + 1e-5 * s1 * s1 * n as f64, "{a} vs {b} ({solver:?})");
            }
        }
    }

    #[test]
    fn energies_grow_and_k_ignores_row_order((n, d, x) in matrices(), energy in 0.3f64..0.99, rot in 1usize..13) {
        let r = reduce(&Matrix::from_slice(&x, n, d).unwrap(), Method::Pca, energy, None, Solver::Auto).unwrap();
        prop_assert!(r.singular_values.windows(2).all(|w| w[0] >= w[1] - 1e-9), "descending");
        prop_assert!(r.singular_values.iter().all(|s| *s >= 0.0));
        prop_assert!(r.energy_at_k > energy - 1e-9 && r.energy_before_k <= r.energy_at_k);
        // The same rows in another order.
        let rot = rot % n;
        let permuted: Vec<f32> = (0..n).flat_map(|i| x[((i + rot) % n) * d..((i + rot) % n + 1) * d].to_vec()).collect();
        let p = reduce(&Matrix::from_slice(&permuted, n, d).unwrap(), Method::Pca, energy, None, Solver::Auto).unwrap();
        // Equal k unless the energy at k-1 sits within float noise of the threshold.
        if (r.energy_before_k - energy).abs() > 1e-5 {
            prop_assert_eq!(r.k, p.k);
        }
    }
}
