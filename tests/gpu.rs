//! The GPU tier: the `cnnu` binary on a GPU backend (wgpu, vulkan or cuda; `CNNU_BACKEND`
//! names it, else the first compiled in) against the same PyTorch references the CPU tests use.
//! CI runs it on Mesa's lavapipe, a Vulkan driver that runs on the CPU. The one-step gradient
//! and three-step optimizer checks are the CPU tests themselves (`grads.rs`, `pytorch_steps.rs`)
//! and kill/resume is `kill_resume.rs`, all run with `CNNU_BACKEND` set.

#![cfg(any(feature = "wgpu", feature = "vulkan", feature = "cuda"))]

use std::process::{Command, Output};

#[path = "../crates/model/tests/common/torch_names.rs"]
mod torch_names;

use cnnu::model::{BACKEND_ENV, BackendKind};
use cnnu_fixtures::Parity;
use safetensors::SafeTensors;
use torch_names::our_name;

/// The GPU backend under test: `CNNU_BACKEND` when it names one, else the first compiled in.
fn backend() -> &'static str {
    let gpu = [BackendKind::Wgpu, BackendKind::Vulkan, BackendKind::Cuda];
    match std::env::var(BACKEND_ENV) {
        Ok(name) => {
            let kind: BackendKind = name.parse().unwrap();
            assert!(
                gpu.contains(&kind),
                "{BACKEND_ENV}={name} is no GPU backend"
            );
            kind.name()
        }
        Err(_) => gpu.into_iter().find(|b| b.is_compiled()).unwrap().name(),
    }
}

fn cnnu(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_cnnu"))
        .arg("--backend")
        .arg(backend())
        .args(args)
        .output()
        .expect("cnnu runs");
    assert!(
        out.status.success(),
        "cnnu {args:?} on {}: {}",
        backend(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// `cnnu probe --taps all` with a fixture's weights and the worst |ours − torch| / scale over
/// every fixture output; each must be within 1e-4 of its tap's largest |value| (at least 1).
fn probe_parity(p: &Parity) -> (String, f32) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("taps.safetensors");
    cnnu(&[
        "probe",
        "--weights",
        p.weights.path.to_str().unwrap(),
        "--input",
        p.input.to_str().unwrap(),
        "--taps",
        "all",
        // Three batches (3, 3, 2) so that batching on the device is exercised too.
        "--batch-size",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    let ours = std::fs::read(&out).unwrap();
    let ours = SafeTensors::deserialize(&ours).unwrap();
    assert_eq!(ours.names().len(), 85, "every tap of ResNet-18");
    let expected = std::fs::read(&p.expected).unwrap();
    let expected = SafeTensors::deserialize(&expected).unwrap();
    assert!(expected.names().len() >= 20);
    let mut worst = (String::new(), 0.0f32);
    for (key, want) in expected.tensors() {
        let got = ours
            .tensor(&our_name(&key))
            .unwrap_or_else(|_| panic!("no tap for {key}"));
        assert_eq!(got.shape(), want.shape(), "{key}");
        let (got, want) = (floats(got.data()), floats(want.data()));
        let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let diff = got
            .iter()
            .zip(&want)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 1e-4 * scale,
            "{} {key} on {}: max |ours − torch| = {diff:e}, bound {:e}",
            p.name,
            backend(),
            1e-4 * scale
        );
        if diff / scale >= worst.1 {
            worst = (key, diff / scale);
        }
    }
    worst
}

#[test]
fn backends_names_the_adapter_it_opens() {
    let out = cnnu(&["backends"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(backend()))
        .unwrap_or_else(|| panic!("no {} line in:\n{text}", backend()));
    println!("{line}");
    assert!(!line.contains("no device found"), "{line}");
    // The adapter's own name, not the device's debug form.
    assert!(!line.contains("Device"), "{line}");
}

#[test]
fn probe_matches_pytorch_at_every_tap() {
    let shared = ["epoch0", "final"].map(Parity::resnet18_shared);
    let fixtures = std::iter::once(Parity::resnet18_formula()).chain(shared.into_iter().flatten());
    for p in fixtures {
        let (key, share) = probe_parity(&p);
        println!(
            "{} {}: worst |ours − torch| {share:e} of the tap's scale, at {key}",
            backend(),
            p.name
        );
    }
}

#[test]
fn a_short_run_learns_and_streams_its_four_snapshots_back() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mnist = cnnu_fixtures::mnist_small();
    cnnu(&[
        "train",
        "--data-dir",
        mnist.to_str().unwrap(),
        "--epochs",
        "1",
        "--train-limit",
        "1024",
        "--test-limit",
        "256",
        "--probe-limit",
        "64",
        "--sample-at",
        "4,8",
        "--taps",
        "conv1,layer1,fc",
        "--out",
        run.to_str().unwrap(),
    ]);
    let mut names: Vec<String> = std::fs::read_dir(run.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "epoch-000.safetensors",
            "epoch-001.safetensors",
            "step-0000004.safetensors",
            "step-0000008.safetensors"
        ]
    );
    // Every snapshot read back from the device holds its 64 probe images, finite values.
    for name in &names {
        let bytes = std::fs::read(run.join("snapshots").join(name)).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let fc = st.tensor("fc").unwrap();
        assert_eq!(fc.shape(), [64, 10], "{name}");
        assert!(floats(fc.data()).iter().all(|v| v.is_finite()), "{name}");
    }
    let metrics = cnnu_run::read_metrics(&run.join("metrics.jsonl")).unwrap();
    let last = metrics.last().unwrap();
    let accuracy = last.train_accuracy.unwrap();
    println!(
        "{}: 1024 images, train accuracy {accuracy:.3}, test accuracy {:.3}, {:.0} img/s",
        backend(),
        last.test_accuracy,
        last.images_per_second.unwrap_or(0.0)
    );
    // flex reaches 0.74 on these images; an untrained network ~0.1.
    assert!(accuracy >= 0.5, "train accuracy {accuracy}");
}
