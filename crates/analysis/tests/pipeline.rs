//! The whole pipeline on a MATLAB file against the original tools: numpy's full float64 SVD
//! and scikit-learn's HDBSCAN and metrics, run by `tests/data/pipeline/make.py` on the same
//! file (300 samples, 60 features of which 10 are dead, three overlapping classes).

use std::path::Path;

use cnnu_analysis::numerics::pipeline::AnalysisParams;
use cnnu_analysis::numerics::reduce::{Method, Solver};
use cnnu_analysis::readers::source;
use cnnu_analysis::reporting::layer::analyze;

fn blobs() -> source::Activations {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pipeline/blobs.mat");
    source::load(&path, "acts", "labels").unwrap()
}

fn sklearn_labels() -> Vec<i64> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pipeline/sklearn_labels.txt");
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .chars()
        .map(|c| c.to_digit(10).map_or(-1, i64::from))
        .collect()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

#[test]
fn pca_pipeline_matches_numpy_and_scikit_learn() {
    let acts = blobs();
    assert_eq!((acts.n(), acts.d()), (300, 60));
    for solver in [Solver::Gram, Solver::Randomized] {
        let params = AnalysisParams {
            min_cluster_size: 20,
            solver,
            ..AnalysisParams::default()
        }
        .check()
        .unwrap();
        let r = analyze(&acts, &params, 0.0).unwrap();
        // numpy: keep = |X[y==0]|.mean(0) > 1e-3; SVD of the centred float64 matrix.
        assert_eq!((r.d_total, r.d_kept, r.k), (60, 50, 30), "{solver:?}");
        assert!(
            close(r.energy_at_k, 0.9028897564376901, 1e-6),
            "{}",
            r.energy_at_k
        );
        for (got, want) in r.singular_values.iter().zip([
            43.12317161686875,
            41.12441148561144,
            17.398091543752482,
            16.58893937681688,
            15.47869219878023,
        ]) {
            assert!(close(*got, want, 1e-5), "{got} vs {want}");
        }
        assert!(r.singular_values.len() >= 50.min(r.k + 20));
        // scikit-learn HDBSCAN(min_cluster_size=20) on numpy's float64 scores: 2 clusters, 132
        // noise. Ours run on float32 scores, where a few near-tied mutual-reachability
        // distances order differently: the same counts, ARI 0.99 against sklearn's labels, and
        // metrics (exact on our labels: see the metrics unit tests) within 0.03 of sklearn's.
        assert_eq!(r.agreement.n_clusters, 2);
        assert_eq!(r.cluster_labels.iter().filter(|&&c| c == -1).count(), 132);
        let sk = sklearn_labels();
        let agree =
            cnnu_analysis::numerics::metrics::cluster_agreement(&sk, &r.cluster_labels).unwrap();
        assert!(agree.ari >= 0.99, "ARI against scikit-learn {}", agree.ari);
        for (got, want) in [
            (r.agreement.homogeneity, 0.33453975144721065),
            (r.agreement.completeness, 0.3963765284418167),
            (r.agreement.v_measure, 0.3628423909905697),
            (r.agreement.ari, 0.2741974148903974),
            (r.agreement.nmi, 0.36284239099056975),
        ] {
            assert!((got - want).abs() < 0.03, "{got} vs scikit-learn {want}");
        }
        // silhouette_score(scores, y)
        assert!(
            close(r.silhouette_true, 0.293865720795202, 1e-4),
            "{}",
            r.silhouette_true
        );
        assert!(r.verdict.contains("2 clusters"));
    }
}

#[test]
fn all_noise_is_said_plainly_with_what_to_try() {
    let acts = blobs();
    let params = AnalysisParams {
        min_cluster_size: 150,
        method: Method::Svd,
        ..AnalysisParams::default()
    }
    .check()
    .unwrap();
    let r = analyze(&acts, &params, 0.0).unwrap();
    if r.agreement.n_clusters == 0 {
        assert_eq!(r.agreement.purity_without_noise, None);
        assert!(
            r.verdict.contains("every sample noise") && r.verdict.contains("--max-k"),
            "{}",
            r.verdict
        );
    }
    let err = AnalysisParams {
        energy: 1.5,
        ..AnalysisParams::default()
    }
    .check()
    .unwrap_err();
    assert_eq!(err.to_string(), "energy must be in (0, 1], got 1.5");
    let err = AnalysisParams {
        min_cluster_size: 1,
        ..AnalysisParams::default()
    }
    .check()
    .unwrap_err();
    assert!(err.to_string().starts_with("min_cluster_size"));
}
