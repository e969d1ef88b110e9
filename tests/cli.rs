//! The `cnnu` binary end to end: `layers`, `backends`, `probe`, a quick study on CIFAR-10
//! files, and their errors.

use std::path::Path;
use std::process::{Command, Output};

use safetensors::SafeTensors;

/// The repository's ResNet-18 parity fixture: formula weights, input, expected taps.
fn fixture() -> cnnu_fixtures::Parity {
    cnnu_fixtures::Parity::resnet18_formula()
}

fn cnnu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cnnu"))
        .args(args)
        .output()
        .expect("cnnu runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn layers_lists_all_85_taps_with_shapes() {
    let out = cnnu(&["layers"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 85);
    assert_eq!(lines[0].split_whitespace().next(), Some("x"));
    let conv1 = lines.iter().find(|l| l.starts_with("conv1 ")).unwrap();
    assert!(conv1.ends_with("[1, 64, 14, 14]"), "{conv1}");
    let fc = lines.last().unwrap();
    assert!(fc.starts_with("fc ") && fc.ends_with("[1, 10]"), "{fc}");
}

#[test]
fn layers_of_resnet34_lists_all_149_taps() {
    let out = cnnu(&["layers", "--model", "resnet34"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 149);
    assert!(lines.iter().any(|l| l.starts_with("layer3.5.relu_1 ")));
    assert!(lines.last().unwrap().starts_with("fc "));
}

#[test]
fn backends_lists_flex_and_names_missing_features() {
    let out = cnnu(&["backends"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("flex") && l.contains("Flex")),
        "{text}"
    );
    assert!(
        text.contains("enable the `cuda` feature") || cfg!(feature = "cuda"),
        "{text}"
    );
}

#[test]
fn an_uncompiled_backend_is_an_error_naming_its_feature() {
    if cfg!(feature = "cuda") {
        return;
    }
    let out = cnnu(&[
        "--backend",
        "cuda",
        "probe",
        "--weights",
        "w",
        "--input",
        "x",
        "--out",
        "o",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("--features cuda"), "{err}");
    assert_eq!(err.lines().count(), 1, "one-line error: {err}");
}

#[test]
fn probe_writes_the_selected_taps_matching_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("taps.safetensors");
    let f = fixture();
    let out = cnnu(&[
        "probe",
        "--weights",
        f.weights.path.to_str().unwrap(),
        "--input",
        f.input.to_str().unwrap(),
        "--taps",
        "conv1,layer1.0.relu,layer2.0.downsample.*,fc",
        "--batch-size",
        "3",
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ours = std::fs::read(&out_path).unwrap();
    let ours = SafeTensors::deserialize(&ours).unwrap();
    let mut names = ours.names();
    names.sort();
    assert_eq!(
        names,
        [
            "conv1",
            "fc",
            "layer1.0.relu",
            "layer2.0.downsample.0",
            "layer2.0.downsample.1"
        ]
    );
    let expected = std::fs::read(&f.expected).unwrap();
    let expected = SafeTensors::deserialize(&expected).unwrap();
    for (ours_key, torch_key) in [
        ("conv1", "conv1"),
        ("layer1.0.relu", "layer1.0.relu#0"),
        ("fc", "fc"),
    ] {
        let a = ours.tensor(ours_key).unwrap();
        let b = expected.tensor(torch_key).unwrap();
        assert_eq!(a.shape(), b.shape(), "{ours_key}");
        let floats = |d: &[u8]| -> Vec<f32> {
            d.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        };
        let (a, b) = (floats(a.data()), floats(b.data()));
        let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let diff = a
            .iter()
            .zip(&b)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff <= 1e-4 * scale, "{ours_key}: {diff}");
    }
}

#[test]
fn probe_reports_bad_taps_and_inputs_in_one_line() {
    let f = fixture();
    let (weights, input) = (&f.weights.path, &f.input);
    let run = |taps: &str, key: &str| {
        cnnu(&[
            "probe",
            "--weights",
            weights.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--input-key",
            key,
            "--taps",
            taps,
            "--out",
            "/nonexistent-dir/out.safetensors",
        ])
    };
    let one_line = |o: &Output| assert_eq!(stderr(o).lines().count(), 1, "{}", stderr(o));
    let out = run("layer1.0.conv9", "input");
    let err = stderr(&out);
    one_line(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("unknown tap `layer1.0.conv9`") && err.contains("layer1.0.conv1"),
        "{err}"
    );
    let out = run("conv1", "images");
    let err = stderr(&out);
    one_line(&out);
    assert!(
        err.contains("no tensor `images`") && err.contains("input, labels"),
        "{err}"
    );
    let out = run("conv1", "input");
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.contains("/nonexistent-dir/out.safetensors"),
        "{err}"
    );
    one_line(&out);
}

/// A small CIFAR-10 directory in the official binary format: 5 × 100 training records and 200
/// test records whose pixels depend on the class, so that a network can learn something.
fn write_cifar(dir: &Path) {
    use cnnu::train::cifar::{TEST_FILE, TRAIN_FILES, write_batch};
    std::fs::create_dir_all(dir).unwrap();
    for (f, file) in TRAIN_FILES.into_iter().chain([TEST_FILE]).enumerate() {
        let n = if file == TEST_FILE { 200 } else { 100 };
        let labels: Vec<u8> = (0..n).map(|i| ((i * 7 + f) % 10) as u8).collect();
        let images: Vec<u8> = labels
            .iter()
            .enumerate()
            .flat_map(|(i, &l)| {
                (0..3072).map(move |p| {
                    let class = if (p / 1024) == (l as usize % 3) {
                        40 * l as usize
                    } else {
                        0
                    };
                    ((class + (p * 31 + i * 17) % 60) % 256) as u8
                })
            })
            .collect();
        write_batch(&dir.join(file), &images, &labels).unwrap();
    }
}

#[test]
fn a_quick_study_on_cifar10_files_names_the_classes() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("cifar");
    write_cifar(&data);
    let out_dir = root.path().join("study");
    let out = cnnu(&[
        "study",
        "--quick",
        "--dataset",
        "cifar10",
        "--data-dir",
        data.to_str().unwrap(),
        "--epochs",
        "1",
        "--probe-limit",
        "200",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(report.contains("CIFAR-10"), "{report}");
    assert!(report.contains("airplane") && report.contains("truck"));
    let snapshot = std::fs::read(out_dir.join("snapshots/epoch-001.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&snapshot).unwrap();
    assert_eq!(st.tensor("conv1").unwrap().shape(), &[200, 64, 16, 16]);
}
