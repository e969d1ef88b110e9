//! Starting from and handing back PyTorch weights: `cnnu train --init-weights`, `--shuffle off`
//! and `cnnu export`, end to end through the binary.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use safetensors::{Dtype, SafeTensors};

/// Torchvision-keyed starting weights (the repository fixture's formula), kept while in scope.
fn start_weights() -> cnnu_fixtures::Weights {
    cnnu_fixtures::Parity::resnet18_formula().weights
}

fn cnnu(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_cnnu"))
        .args(args)
        .output()
        .expect("cnnu runs");
    assert!(
        out.status.success(),
        "cnnu {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every float32 tensor of a safetensors file, as raw bits.
fn tensors(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == Dtype::F32)
        .map(|(k, v)| (k, (v.shape().to_vec(), v.data().to_vec())))
        .collect()
}

fn train(run: &Path, weights: &Path, seed: &str, epochs: &str) {
    let data = cnnu_fixtures::mnist_small();
    cnnu(&[
        "train",
        "--data-dir",
        data.to_str().unwrap(),
        "--epochs",
        epochs,
        "--train-limit",
        "256",
        "--test-limit",
        "100",
        "--probe-limit",
        "50",
        "--seed",
        seed,
        "--shuffle",
        "off",
        "--init-weights",
        weights.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
}

#[test]
fn init_weights_come_back_out_of_export_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let weights = start_weights();
    train(&run, &weights.path, "0", "0");
    let out = dir.path().join("epoch0.safetensors");
    cnnu(&[
        "export",
        run.to_str().unwrap(),
        "--epoch",
        "0",
        "--out",
        out.to_str().unwrap(),
    ]);
    let exported = tensors(&out);
    let given = tensors(&weights.path);
    assert_eq!(exported.len(), given.len(), "same tensors");
    for (name, value) in &given {
        assert_eq!(exported.get(name), Some(value), "{name}");
    }
}

#[test]
fn with_given_weights_and_no_shuffle_the_seed_changes_nothing() {
    // The seed only draws the initial weights and the shuffle; with both fixed, two seeds
    // must train identically.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let weights = start_weights();
    train(&a, &weights.path, "1", "1");
    train(&b, &weights.path, "2", "1");
    // The snapshots' tensors (their metadata names the seed).
    let snap = |run: &Path| tensors(&run.join("snapshots/epoch-001.safetensors"));
    assert!(
        snap(&a) == snap(&b),
        "epoch-1 activations differ between seeds"
    );
    let (ea, eb) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    cnnu(&["export", a.to_str().unwrap(), "--out", ea.to_str().unwrap()]);
    cnnu(&["export", b.to_str().unwrap(), "--out", eb.to_str().unwrap()]);
    assert_eq!(tensors(&ea), tensors(&eb));
    // Training moved the weights away from the start.
    let start = tensors(&weights.path);
    assert_ne!(tensors(&ea)["conv1.weight"], start["conv1.weight"]);
}
