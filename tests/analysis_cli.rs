//! `cnnu reduce`, `cnnu analyze` and `cnnu study` end to end.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cnnu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cnnu"))
        .args(args)
        .output()
        .expect("cnnu runs")
}

fn data(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/analysis/tests/data")
        .join(rel)
        .display()
        .to_string()
}

fn mnist_dir() -> String {
    let shared = std::env::var("CNNU_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    shared.join("data/mnist").display().to_string()
}

#[test]
fn reduce_json_has_every_field_the_original_scripts_report() {
    let out = cnnu(&[
        "reduce",
        "pca",
        &data("pipeline/blobs.mat"),
        "acts",
        "--min-cluster-size",
        "20",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    for key in [
        "layer",
        "method",
        "n",
        "d_total",
        "d_kept",
        "k",
        "energy_at_k",
        "singular_values",
        "cluster_labels",
        "n_clusters",
        "noise_frac",
        "purity_with_noise",
        "purity_without_noise",
        "homogeneity",
        "completeness",
        "v_measure",
        "ari",
        "nmi",
        "knn_agreement",
        "silhouette_true",
        "seconds",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    for step in ["load", "filter", "svd", "cluster", "metrics", "tsne"] {
        assert!(v["seconds"][step].is_number(), "seconds.{step}");
    }
    assert_eq!(v["method"], "pca");
    assert_eq!(v["k"], 30);
    assert_eq!(v["cluster_labels"].as_array().unwrap().len(), 300);
    assert!(v["singular_values"].as_array().unwrap().len() >= 50);
}

#[test]
fn reduce_errors_name_the_file_and_what_is_there() {
    let out = cnnu(&["reduce", "svd", &data("pipeline/blobs.mat"), "conv9"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("conv9") && err.contains("acts"),
        "{err}"
    );
    let out = cnnu(&["reduce", "svd", &data("mat/fake_v73.mat"), "conv1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("7.3") && err.contains("savemat"),
        "{err}"
    );
    let out = cnnu(&[
        "reduce",
        "pca",
        &data("pipeline/blobs.mat"),
        "acts",
        "--energy",
        "0",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--energy"), "{err}");
    assert_eq!(err.lines().count(), 1, "one-line error: {err}");
}

#[test]
fn study_trains_analyses_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mnist = mnist_dir();
    let out = cnnu(&[
        "study",
        "--data-dir",
        &mnist,
        "--epochs",
        "1",
        "--train-limit",
        "128",
        "--test-limit",
        "100",
        "--probe-limit",
        "120",
        "--batch-size",
        "32",
        "--taps",
        "conv1,layer2",
        "--min-cluster-size",
        "10",
        "--tsne",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("report:") && stdout.contains("conv1"),
        "{stdout}"
    );
    let csv = std::fs::read_to_string(run.join("analysis/summary.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        1 + 2 * 2,
        "header + 2 epochs x 2 layers:\n{csv}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("analysis/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary.as_array().unwrap().len(), 4);
    assert!(
        summary[0].get("cluster_labels").is_none(),
        "no label lists in the summary"
    );
    for plot in [
        "purity_with_noise.png",
        "k.png",
        "spectrum-conv1.png",
        "tsne-layer2-epoch-001-labels.png",
    ] {
        assert!(run.join("analysis/plots").join(plot).is_file(), "{plot}");
    }
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(
        html.contains("data:image/png;base64,") && !html.contains("src=\"report-images"),
        "self-contained"
    );
    assert!(html.contains("Did training raise the purity of early-layer clusters?"));
    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        md.contains("](report-images/accuracy.png)")
            && run.join("report-images/accuracy.png").is_file()
    );
}
