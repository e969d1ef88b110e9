//! `cnnu reduce`, `cnnu analyze`, `cnnu study`, `cnnu aggregate` and `cnnu compare` end to
//! end; the study's report is loaded in headless Chromium.

#[path = "../crates/analysis/tests/browser/mod.rs"]
mod browser;

use std::path::Path;
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
    cnnu_fixtures::mnist_small().display().to_string()
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

/// `cnnu study` on a small MNIST slice (1 epoch of 128 images, 120 probe images, conv1 and
/// layer2) into `out`, with `extra` options.
fn small_study(out: &Path, extra: &[&str]) -> Output {
    let mnist = mnist_dir();
    let mut args = vec![
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
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    cnnu(&args)
}

#[test]
fn study_trains_analyses_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = small_study(&run, &["--tsne", "--seeds", "0", "--sample-at", "none"]);
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
    // The explorer in a real browser: ready, no script error, hover and click answered.
    let html_path = run.join("report.html");
    if let Some(drawn) = browser::check_explorer(&html_path, "#test") {
        let tag = &drawn.tag;
        assert_eq!(
            browser::attribute(tag, "data-tested"),
            Some("hover,click"),
            "{tag}"
        );
    }
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
        md.contains("](report-images/network-fit.png)")
            && run.join("report-images/network-fit.png").is_file()
    );
    assert!(
        md.contains("What the representation measures add")
            && md.contains("](report-images/heatmap-cka_vs_final.png)"),
        "the answer uses the representation measures and shows their heatmaps"
    );
}

/// Two seeds sampled inside the epoch: one run each, aggregated with intervals over seeds into
/// the study's report; `cnnu aggregate` and `cnnu compare` on the runs it left.
#[test]
fn a_study_over_two_seeds_aggregates_and_the_runs_compare() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("study");
    let out = small_study(&out_dir, &["--seeds", "0,1", "--sample-at", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Samples: epoch-000 (step 0), step 2, epoch-001 (step 4), two layers.
    for seed in ["seed-0", "seed-1"] {
        let csv = std::fs::read_to_string(out_dir.join(seed).join("analysis/summary.csv")).unwrap();
        let samples: Vec<&str> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(2).unwrap())
            .collect();
        assert_eq!(
            samples,
            [
                "epoch-000",
                "epoch-000",
                "step-0000002",
                "step-0000002",
                "epoch-001",
                "epoch-001"
            ],
            "{csv}"
        );
        assert!(csv.starts_with("epoch,step,sample,layer,"));
        assert!(csv.contains("\n0,2,step-0000002,conv1,"), "{csv}");
        // report.md links every t-SNE picture; report.html, beside its explorer, inlines the
        // first and last samples' only: every image of the Markdown but the two (layers) of step 2.
        let md = std::fs::read_to_string(out_dir.join(seed).join("report.md")).unwrap();
        let html = std::fs::read_to_string(out_dir.join(seed).join("report.html")).unwrap();
        assert!(
            md.contains("](report-images/tsne-conv1-step-0000002-labels.png)"),
            "{md}"
        );
        assert!(html.contains("Every layer's t-SNE at every sample is in the explorer above"));
        // The order a reader meets: the answer table, the explorer, the figures over
        // training, the full table folded away, then spectra and t-SNE.
        let at = |needle: &str| {
            html.find(needle)
                .unwrap_or_else(|| panic!("{needle} not in the report"))
        };
        assert!(at("<h2>The answer</h2>") < at("<table"));
        assert!(at("<table") < at("id=\"explorer\""));
        assert!(at("id=\"explorer\"") < at("<h2>Figures over training</h2>"));
        assert!(at("<h2>Figures over training</h2>") < at("<details class=\"full-table\">"));
        let details = at("<details class=\"full-table\">");
        let closed = details + html[details..].find("</details>").unwrap();
        assert!(html[details..closed].contains("<th>layer</th><th>sample</th>"));
        assert!(closed < at("<h2>Energy spectrum</h2>"));
        assert!(html.contains("class=\"how\">How to read it:"));
        // A quick seed report stays small: plots as palette PNGs, the explorer's data compact.
        let bytes = std::fs::metadata(out_dir.join(seed).join("report.html"))
            .unwrap()
            .len();
        assert!(bytes < 1_500_000, "report.html is {bytes} bytes");
        // The network's own accuracy at every sample, step samples included: the share of
        // the snapshot's predictions equal to its labels, by hand.
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let col = |name: &str| header.iter().position(|c| *c == name).unwrap();
        let (c_sample, c_acc, c_loss) = (col("sample"), col("accuracy"), col("loss"));
        // Each layer's converged step from its own rows: the first step from which
        // cka_vs_final stays at or above 0.9, by hand.
        let (c_layer, c_step) = (col("layer"), col("step"));
        let (c_cka, c_conv) = (col("cka_vs_final"), col("converged_step"));
        for layer in ["conv1", "layer2"] {
            let mut rows: Vec<(u64, f64, String)> = csv
                .lines()
                .skip(1)
                .map(|l| l.split(',').collect::<Vec<_>>())
                .filter(|c| c[c_layer] == layer)
                .map(|c| {
                    (
                        c[c_step].parse().unwrap(),
                        c[c_cka].parse().unwrap(),
                        c[c_conv].to_string(),
                    )
                })
                .collect();
            rows.sort_by_key(|r| r.0);
            let mut want = None;
            for (step, cka, _) in rows.iter().rev() {
                if *cka < 0.9 {
                    break;
                }
                want = Some(*step);
            }
            let want = want.map_or(String::new(), |s| s.to_string());
            assert!(
                rows.iter().all(|r| r.2 == want),
                "{layer}: {want} vs {rows:?}"
            );
        }
        let row: Vec<&str> = csv
            .lines()
            .find(|l| l.split(',').nth(c_sample) == Some("step-0000002"))
            .unwrap()
            .split(',')
            .collect();
        let snap = std::fs::read(
            out_dir
                .join(seed)
                .join("snapshots/step-0000002.safetensors"),
        )
        .unwrap();
        let st = safetensors::SafeTensors::deserialize(&snap).unwrap();
        let ints = |name: &str| -> Vec<i64> {
            st.tensor(name)
                .unwrap()
                .data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect()
        };
        let (labels, predictions) = (ints("labels"), ints("predictions"));
        let hits = labels
            .iter()
            .zip(&predictions)
            .filter(|(l, p)| l == p)
            .count();
        let accuracy: f64 = row[c_acc].parse().unwrap();
        assert!(
            (accuracy - hits as f64 / labels.len() as f64).abs() < 1e-12,
            "{accuracy} vs {hits}/{}",
            labels.len()
        );
        let loss: f64 = row[c_loss].parse().unwrap();
        assert!(loss.is_finite() && loss > 0.0, "{loss}");
        assert!(md.contains("](report-images/network-fit.png)"));
        // Every plot of report.md is inlined in report.html but the static t-SNE maps and,
        // where the explorer draws them, the layer × sample heatmaps.
        let heatmaps = match html.contains("id=\"explorer\"") {
            true => md.matches("](report-images/heatmap-").count(),
            false => 0,
        };
        assert_eq!(
            html.matches("src=\"data:image/png;base64,").count(),
            md.matches("](report-images/").count()
                - md.matches("](report-images/tsne-").count()
                - heatmaps,
            "{md}"
        );
    }
    let agg = std::fs::read_to_string(out_dir.join("aggregate/aggregate.csv")).unwrap();
    assert_eq!(agg.lines().count(), 1 + 3 * 2, "{agg}");
    assert!(
        agg.lines()
            .nth(1)
            .unwrap()
            .starts_with("conv1,epoch-000,0,0,2,"),
        "{agg}"
    );
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(
        md.contains("Over 2 seeds") && md.contains("[seed 1](seed-1/report.html)"),
        "{md}"
    );
    assert!(
        md.contains("[aggregate.csv](aggregate/aggregate.csv)"),
        "{md}"
    );
    // The answer first, as a table of the early measures by their titles, the question of
    // the seed project before it.
    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    let purity = html.find("Did training raise the purity of early-layer HDBSCAN clusters?");
    let table = html.find("<th>early-layer measure</th>");
    assert!(
        purity.is_some() && table.is_some() && purity < table,
        "{md}"
    );
    assert!(html.contains("<td>kNN label agreement</td>"), "{md}");
    // The first seed's explorer right under the answer, before the links and the figures.
    let explorer = html
        .find("id=\"explorer\"")
        .expect("the study report's explorer");
    assert!(table < Some(explorer) && Some(explorer) < html.find("<h2>Figures"));
    assert!(html.contains("<h2>Explorer (seed 0)</h2>"));
    // The published dynamics over the seeds: convergence by depth, layer identification.
    assert!(
        md.contains("**Bottom-up convergence** (Raghu et al. 2017"),
        "{md}"
    );
    assert!(
        md.contains("Spearman's rank correlation of depth and converged step"),
        "{md}"
    );
    assert!(
        md.contains("**Layer identification** (Kornblith et al. 2019"),
        "{md}"
    );
    assert!(md.contains("Per pair: seed 0 – seed 1: "), "{md}");
    let agg_json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("aggregate/aggregate.json")).unwrap(),
    )
    .unwrap();
    let layers = agg_json["convergence"]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{agg_json}");
    assert_eq!(layers[0]["converged_step"]["n"], 2);
    assert!(!html[..html.find("<h2>Figures").unwrap()].contains("knn_agreement"));
    assert!(html.contains("<a href=\"seed-0/report.html\">seed 0</a>"));
    // No band leaves a bounded measure's range.
    let header: Vec<&str> = agg.lines().next().unwrap().split(',').collect();
    for name in [
        "noise_frac",
        "purity_with_noise",
        "knn_agreement",
        "probe_acc",
        "accuracy",
    ] {
        for end in ["ci_low", "ci_high"] {
            let c = header
                .iter()
                .position(|h| *h == format!("{name}_{end}"))
                .unwrap();
            for line in agg.lines().skip(1) {
                if let Ok(v) = line.split(',').nth(c).unwrap().parse::<f64>() {
                    assert!((0.0..=1.0).contains(&v), "{name}_{end} {v}: {line}");
                }
            }
        }
    }
    assert!(md.contains("](report-images/knn_agreement.png)"), "{md}");

    // The same aggregate by hand, and the two runs compared (the same run with itself: CKA 1).
    let (a, b) = (out_dir.join("seed-0"), out_dir.join("seed-1"));
    let again = dir.path().join("again");
    let out = cnnu(&[
        "aggregate",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(again.join("aggregate.csv")).unwrap(),
        agg
    );
    let cmp = dir.path().join("cmp");
    let out = cnnu(&[
        "compare",
        a.to_str().unwrap(),
        a.to_str().unwrap(),
        "--out",
        cmp.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = std::fs::read_to_string(cmp.join("compare.csv")).unwrap();
    for line in csv.lines().skip(1) {
        let cka: f64 = line.split(',').nth(5).unwrap().parse().unwrap();
        assert!((cka - 1.0).abs() < 1e-9, "{line}");
    }
    let out = cnnu(&[
        "compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        cmp.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(cmp.join("cka-layers.png").is_file());
}

/// A run whose epoch 1 is epoch 0 scaled by 3 and whose epoch 2 is unrelated noise: CKA is
/// invariant to scale, so epochs 0 and 1 are the same representation (CKA 1 with each other)
/// and both differ from the last epoch.
#[test]
fn analyze_writes_cka_and_the_representation_measures_per_epoch() {
    use safetensors::{Dtype, tensor::TensorView};
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(run.join("snapshots")).unwrap();
    let (n, d) = (120usize, 24usize);
    let mut state = 11u64;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    // Class c shifts features 4c..4c+3, so the classes are separable.
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 6).collect();
    let base: Vec<f32> = (0..n * d)
        .map(|i| {
            let (row, col) = (i / d, i % d);
            uniform()
                + if col / 4 == labels[row] as usize {
                    4.0
                } else {
                    0.0
                }
        })
        .collect();
    let noise: Vec<f32> = (0..n * d).map(|_| 0.1 + uniform()).collect();
    let label_bytes: Vec<u8> = labels.iter().flat_map(|l| l.to_le_bytes()).collect();
    for (epoch, acts) in [
        (0, base.clone()),
        (1, base.iter().map(|v| 3.0 * v).collect::<Vec<f32>>()),
        (2, noise),
    ] {
        let bytes: Vec<u8> = acts.iter().flat_map(|v| v.to_le_bytes()).collect();
        let tensors = vec![
            (
                "fc",
                TensorView::new(Dtype::F32, vec![n, d], &bytes).unwrap(),
            ),
            (
                "labels",
                TensorView::new(Dtype::I64, vec![n], &label_bytes).unwrap(),
            ),
        ];
        let meta = std::collections::HashMap::from([("epoch".to_string(), epoch.to_string())]);
        std::fs::write(
            run.join(format!("snapshots/epoch-{epoch:03}.safetensors")),
            safetensors::serialize(tensors, Some(meta)).unwrap(),
        )
        .unwrap();
    }
    let out = cnnu(&["analyze", run.to_str().unwrap(), "--min-cluster-size", "10"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(run.join("analysis/summary.json")).unwrap())
            .unwrap();
    let f = |e: usize, k: &str| rows[e][k].as_f64();
    assert!(
        rows[0]["cka_vs_prev"].is_null(),
        "no previous epoch at epoch 0"
    );
    assert!(
        (f(1, "cka_vs_prev").unwrap() - 1.0).abs() < 1e-6,
        "scale does not change CKA"
    );
    assert!((f(2, "cka_vs_final").unwrap() - 1.0).abs() < 1e-12);
    let (c0, c1) = (f(0, "cka_vs_final").unwrap(), f(1, "cka_vs_final").unwrap());
    assert!((c0 - c1).abs() < 1e-6 && c0 < 0.5, "{c0} {c1}");
    assert!((f(2, "cka_vs_prev").unwrap() - c1).abs() < 1e-6);
    // Separable classes: the probe is perfect on them, at chance level on noise.
    assert_eq!(f(0, "probe_acc"), Some(1.0));
    assert!(f(2, "probe_acc").unwrap() < 0.5);
    let cos = &rows[0]["subspace"]["cos"];
    assert_eq!(
        cos.as_array().unwrap().len(),
        6,
        "the class x class matrix is in the JSON"
    );
    assert!(f(0, "nc1").unwrap() < f(2, "nc1").unwrap());
    for m in [
        "cka_vs_final",
        "cka_vs_prev",
        "subspace_cos_mean",
        "nc1",
        "probe_acc",
    ] {
        assert!(
            run.join(format!("analysis/plots/heatmap-{m}.png"))
                .is_file(),
            "heatmap of {m}"
        );
    }
    let csv = std::fs::read_to_string(run.join("analysis/summary.csv")).unwrap();
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .contains("cka_vs_final,cka_vs_prev,subspace_cos_mean,nc1,probe_acc")
    );
}
