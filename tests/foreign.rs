//! `cnnu analyze` on a folder of activations cnnu did not write (docs/run-format.md,
//! "Activations from elsewhere"): two safetensors files as another framework would record
//! them, two layers of 600 images, the step once from the metadata and once from the name.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use safetensors::Dtype;
use safetensors::tensor::TensorView;

const N: usize = 600;
const CLASSES: usize = 10;

/// A small deterministic generator of values in [-1, 1).
struct Lcg(u64);

impl Lcg {
    fn unit(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// `[N, d]` values: every image's class centre scaled by `structure`, plus unit noise.
fn layer(rng: &mut Lcg, d: usize, structure: f32) -> Vec<f32> {
    let centres: Vec<f32> = (0..CLASSES * d)
        .map(|i| ((i * 7919) % 13) as f32 - 6.0)
        .collect();
    (0..N * d)
        .map(|i| {
            let (row, col) = (i / d, i % d);
            structure * centres[(row % CLASSES) * d + col] + rng.unit()
        })
        .collect()
}

/// One file: `conv` f32 `[N, 4, 2, 2]`, `fc` f64 `[N, 8]`, `labels` i64, `indices` i32.
fn write(path: &Path, seed: u64, structure: f32, step: Option<u64>) {
    let mut rng = Lcg(seed);
    let conv: Vec<u8> = layer(&mut rng, 16, structure)
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let fc: Vec<u8> = layer(&mut rng, 8, structure)
        .iter()
        .flat_map(|&v| f64::from(v).to_le_bytes())
        .collect();
    let labels: Vec<u8> = (0..N as i64)
        .flat_map(|i| (i % CLASSES as i64).to_le_bytes())
        .collect();
    let indices: Vec<u8> = (0..N as i32).flat_map(|i| (i * 3).to_le_bytes()).collect();
    let tensors = vec![
        (
            "conv",
            TensorView::new(Dtype::F32, vec![N, 4, 2, 2], &conv).unwrap(),
        ),
        ("fc", TensorView::new(Dtype::F64, vec![N, 8], &fc).unwrap()),
        (
            "labels",
            TensorView::new(Dtype::I64, vec![N], &labels).unwrap(),
        ),
        (
            "indices",
            TensorView::new(Dtype::I32, vec![N], &indices).unwrap(),
        ),
    ];
    // safetensors writes f64 `fc` before f32 `conv`: `layers` gives the network's order.
    let mut meta = HashMap::from([("layers".to_string(), r#"["conv", "fc"]"#.to_string())]);
    if let Some(s) = step {
        meta.insert("step".to_string(), s.to_string());
    }
    fs::write(path, safetensors::serialize(tensors, Some(meta)).unwrap()).unwrap();
}

#[test]
fn analyze_writes_a_row_per_layer_and_step_of_a_foreign_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("acts");
    fs::create_dir_all(&dir).unwrap();
    // Untrained: noise. Step 50 (from the name): the classes stand apart.
    write(&dir.join("random.safetensors"), 1, 0.0, Some(0));
    write(&dir.join("ckpt_0050.safetensors"), 2, 1.0, None);
    fs::write(dir.join("notes.txt"), "not an activation file").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cnnu"))
        .args(["analyze", &dir.display().to_string()])
        .args(["--min-cluster-size", "20"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("analysed 4 (sample, layer) pairs"),
        "{stderr}"
    );
    let csv = fs::read_to_string(dir.join("analysis/summary.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let keys: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r[col("layer")], r[col("step")], r[col("sample")]))
        .collect();
    assert_eq!(
        keys,
        [
            ("conv", "0", "step-0000000"),
            ("fc", "0", "step-0000000"),
            ("conv", "50", "step-0000050"),
            ("fc", "50", "step-0000050"),
        ]
    );
    let value = |row: &[&str], name: &str| -> f64 { row[col(name)].parse().unwrap() };
    for r in &rows {
        assert_eq!(value(r, "n"), N as f64);
    }
    for (before, after) in [(&rows[0], &rows[2]), (&rows[1], &rows[3])] {
        // Noise has a chance-level neighbourhood; class centres make it the label's.
        assert!(value(before, "knn_agreement") < 0.3, "{before:?}");
        assert!(value(after, "knn_agreement") > 0.8, "{after:?}");
        assert!(value(after, "probe_acc") > value(before, "probe_acc") + 0.5);
    }
    // The layers' sizes: conv [4, 2, 2] and fc [8].
    assert_eq!(value(&rows[0], "d_total"), 16.0);
    assert_eq!(value(&rows[1], "d_total"), 8.0);
    assert!(dir.join("analysis/summary.json").is_file());
    assert!(dir.join("analysis/plots/knn_agreement.png").is_file());

    // --out elsewhere, one layer.
    let other = tmp.path().join("elsewhere");
    let out = Command::new(env!("CARGO_BIN_EXE_cnnu"))
        .args(["analyze", &dir.display().to_string(), "--layers", "fc"])
        .args([
            "--min-cluster-size",
            "20",
            "--out",
            &other.display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = fs::read_to_string(other.join("summary.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
}

/// `cnnu ARGS...`, which must succeed.
fn cnnu_ok(args: &[&std::ffi::OsStr]) {
    let run = Command::new(env!("CARGO_BIN_EXE_cnnu"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
}

/// `summary.csv` of `cnnu analyze DIR --out OUT`, without the timing columns.
fn analysed_rows(dir: &Path, out: &Path) -> Vec<Vec<String>> {
    let run = Command::new(env!("CARGO_BIN_EXE_cnnu"))
        .args(["analyze", &dir.display().to_string()])
        .args(["--out", &out.display().to_string()])
        .args(["--min-cluster-size", "20"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let csv = fs::read_to_string(out.join("summary.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|l| {
            l.split(',')
                .zip(&header)
                .filter(|(_, h)| !h.starts_with("seconds"))
                .map(|(c, h)| format!("{h}={c}"))
                .collect()
        })
        .collect()
}

#[test]
fn npz_archives_analyse_as_their_safetensors_twins() {
    // crates/fixtures/make_npz.py: numpy's archives (one stored, one deflated, whose step is
    // an array) and the same arrays as safetensors files.
    let tmp = tempfile::tempdir().unwrap();
    let npz = analysed_rows(&cnnu_fixtures::repo("npz"), &tmp.path().join("npz"));
    let st = analysed_rows(
        &cnnu_fixtures::repo("npz_as_safetensors"),
        &tmp.path().join("st"),
    );
    assert_eq!(npz.len(), 4, "{npz:?}");
    let keys: Vec<(&str, &str)> = npz.iter().map(|r| (r[3].as_str(), r[0].as_str())).collect();
    assert_eq!(
        keys,
        [
            ("layer=conv", "epoch=0"),
            ("layer=fc", "epoch=0"),
            ("layer=conv", "epoch=0"),
            ("layer=fc", "epoch=0"),
        ]
    );
    assert!(npz[2].contains(&"step=50".to_string()), "{:?}", npz[2]);
    // Two readers, one analysis: every figure the same, to the last digit.
    assert_eq!(npz, st);
}

/// A copy of the fixture folder `name` under `dir`, analysed in place (`dir/name/analysis/`).
fn analysed_copy(dir: &Path, name: &str) -> std::path::PathBuf {
    let to = dir.join(name);
    fs::create_dir_all(&to).unwrap();
    for entry in fs::read_dir(cnnu_fixtures::repo(name)).unwrap() {
        let from = entry.unwrap().path();
        fs::copy(&from, to.join(from.file_name().unwrap())).unwrap();
    }
    analysed_rows(&to, &to.join("analysis"));
    to
}

#[test]
fn aggregate_takes_analysed_foreign_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let a = analysed_copy(tmp.path(), "npz");
    let b = analysed_copy(tmp.path(), "npz_as_safetensors");
    let out = tmp.path().join("agg");
    cnnu_ok(&[
        "aggregate".as_ref(),
        a.as_os_str(),
        b.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    let csv = fs::read_to_string(out.join("aggregate.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 4, "{csv}");
    // The two folders hold the same arrays: every mean is the one value, with no spread.
    let summary = fs::read_to_string(a.join("analysis/summary.csv")).unwrap();
    let s_header: Vec<&str> = summary.lines().next().unwrap().split(',').collect();
    let s_col = |name: &str| s_header.iter().position(|h| *h == name).unwrap();
    for (row, s) in rows.iter().zip(summary.lines().skip(1)) {
        let s: Vec<&str> = s.split(',').collect();
        assert_eq!(row[col("n_runs")], "2");
        let mean: f64 = row[col("knn_agreement_mean")].parse().unwrap();
        let one: f64 = s[s_col("knn_agreement")].parse().unwrap();
        assert!((mean - one).abs() < 1e-12, "{mean} vs {one}");
        assert_eq!(row[col("knn_agreement_std")].parse::<f64>().unwrap(), 0.0);
    }
}

#[test]
fn compare_takes_foreign_folders() {
    // The npz archives against their safetensors twins: the same arrays, so CKA 1 at every
    // layer and step, and each layer identified with itself.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cmp");
    let (npz, st) = (
        cnnu_fixtures::repo("npz"),
        cnnu_fixtures::repo("npz_as_safetensors"),
    );
    cnnu_ok(&[
        "compare".as_ref(),
        npz.as_os_str(),
        st.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--permutations".as_ref(),
        "99".as_ref(),
    ]);
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("compare.json")).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{json}");
    for r in rows {
        assert!((r["cka"].as_f64().unwrap() - 1.0).abs() < 1e-6, "{r}");
        assert_eq!(r["n"], 600);
    }
    assert_eq!(json["matrix_sample"], "step-0000050");
    assert_eq!(json["layer_identification"], 1.0);
    assert_eq!(json["hsic"], "biased");
    // Debiased CKA (--hsic unbiased) of identical data is 1 as well.
    let debiased = tmp.path().join("cmp-unbiased");
    cnnu_ok(&[
        "compare".as_ref(),
        npz.as_os_str(),
        st.as_os_str(),
        "--out".as_ref(),
        debiased.as_os_str(),
        "--permutations".as_ref(),
        "99".as_ref(),
        "--hsic".as_ref(),
        "unbiased".as_ref(),
    ]);
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(debiased.join("compare.json")).unwrap()).unwrap();
    assert_eq!(json["hsic"], "unbiased");
    for r in json["rows"].as_array().unwrap() {
        assert!((r["cka"].as_f64().unwrap() - 1.0).abs() < 1e-6, "{r}");
        assert_eq!(r["p_value"], 0.01);
    }
}
