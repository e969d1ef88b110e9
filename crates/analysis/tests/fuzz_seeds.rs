//! Every committed seed (and fuzzer-found reproducer, `repro-*`) of the `snapshot` and `mat`
//! fuzz targets, run through the very harnesses of fuzz/fuzz_targets/{snapshot,mat}.rs
//! (`fuzz/harness/readers.rs`, included below), on stable and without libFuzzer: none may
//! panic. Errors are expected for the broken seeds; a few valid ones are also checked to
//! still read, so the corpora stay meaningful.
//!
//! The fuzz build has overflow checks on, so there an overflowing size is a panic; CI runs
//! `cargo test --release`, where arithmetic wraps silently, so the harness checks the
//! promises it relies on (`n * d` fits in usize and equals the data's length) explicitly.

use std::path::Path;

use cnnu_analysis::readers::source::{layers, load};

#[path = "../../../fuzz/harness/readers.rs"]
mod readers;
#[path = "../../../fuzz/harness/seeds.rs"]
mod seeds;

/// Runs `harness` on every seed of `target`, in a scratch directory of its own (the fuzz
/// targets use a per-process one), and lists the seeds that panicked.
fn run_all(target: &str, harness: fn(&Path, &[u8])) {
    let dir = tempfile::tempdir().unwrap();
    let mut panicked = Vec::new();
    for seed in seeds::all(target) {
        let data = std::fs::read(&seed).unwrap();
        if std::panic::catch_unwind(|| harness(dir.path(), &data)).is_err() {
            panicked.push(seed.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(
        panicked.is_empty(),
        "{target} seeds that panicked: {panicked:?}"
    );
}

#[test]
fn snapshot_seeds_do_not_panic() {
    run_all("snapshot", readers::run_snapshot);
}

#[test]
fn mat_seeds_do_not_panic() {
    run_all("mat", readers::run_mat);
}

#[test]
fn valid_seeds_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("epoch-002.safetensors");
    std::fs::copy(seeds::dir("snapshot").join("valid_cnnu"), &snap).unwrap();
    assert_eq!(
        layers(&snap, "labels").unwrap(),
        ["logits", "conv1", "avgpool", "fc"]
    );
    let acts = load(&snap, "conv1", "labels").unwrap();
    assert_eq!(
        (acts.n(), acts.provenance.sample_shape.as_slice()),
        (3, &[2, 3, 3][..])
    );
    assert_eq!(acts.provenance.epoch, Some(2));
    assert_eq!(acts.representation.labels(), [0, 3, 6]);

    let mat = dir.path().join("small.mat");
    for name in ["small_valid.mat", "small_valid_z.mat"] {
        std::fs::copy(seeds::dir("mat").join(name), &mat).unwrap();
        let acts = load(&mat, "conv1", "labels").unwrap();
        assert_eq!(
            (acts.n(), acts.provenance.sample_shape.as_slice()),
            (3, &[1, 2, 2][..])
        );
        assert_eq!(acts.representation.labels(), [1, 0, 2]);
        assert_eq!(load(&mat, "fc", "labels").unwrap().d(), 2);
    }
}
