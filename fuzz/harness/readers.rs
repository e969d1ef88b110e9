//! The harnesses of the `snapshot` and `mat` fuzz targets: the safetensors snapshot reader
//! and the MATLAB v5 reader of `cnnu_analysis`, driven through their real path-based API.
//! No reader code is copied; this file depends on `cnnu_analysis` only.
//!
//! One copy serves two builds:
//! - `fuzz/fuzz_targets/{snapshot,mat}.rs` (nightly, libFuzzer), with
//!   `#[path = "../harness/readers.rs"] mod readers;`, on a per-process scratch directory;
//! - `crates/analysis/tests/fuzz_seeds.rs` (stable, CI), with
//!   `#[path = "../../../fuzz/harness/readers.rs"] mod readers;`, on every committed seed,
//!   so that the corpora stay meaningful.
//!
//! Errors are expected; a panic (a failed post-condition below, or an overflow), a hang or
//! an outsized allocation is a bug. The fuzz build has overflow checks on, so there an
//! overflowing size is a panic by itself; CI runs `cargo test --release`, where arithmetic
//! wraps silently, so the promises the harnesses rely on (the per-sample size D fits in
//! usize, `n * D` does too and equals the data's length) are checked explicitly here.

use std::path::Path;

use cnnu_analysis::readers::mat::{list_variables, read_labels, read_variable};
use cnnu_analysis::readers::source::{Activations, layers, load};

/// The snapshot's file name in the scratch directory: not ending in `.mat`, so the
/// safetensors path is taken, and cnnu-style, so an epoch (1) is parsed from it.
pub const SNAPSHOT_FILE: &str = "epoch-001.safetensors";

/// The MAT file's name in the scratch directory: the readers choose MAT v5 by extension.
pub const MAT_FILE: &str = "acts.mat";

/// More layers than this are not all loaded (each load re-parses the file).
const MAX_LOADS: usize = 16;

/// More variables than this are not all read (each read re-walks the file).
const MAX_READS: usize = 32;

/// The `snapshot` target: writes `data` to `dir/SNAPSHOT_FILE` (overwriting the previous
/// input) and loads each layer `layers` reports with the `labels` tensor, as `cnnu analyse`
/// does, plus a few fixed names (the bookkeeping tensors, a missing one).
pub fn run_snapshot(dir: &Path, data: &[u8]) {
    let path = dir.join(SNAPSHOT_FILE);
    std::fs::write(&path, data).expect("write the snapshot");
    let path = path.as_path();

    let mut names = layers(path, "labels").unwrap_or_default();
    names.truncate(MAX_LOADS);
    for extra in ["labels", "predictions", "conv1", "no-such-layer"] {
        names.push(extra.to_string());
    }
    for layer in &names {
        if let Ok(acts) = load(path, layer, "labels") {
            check_acts(&acts);
            assert!(!acts.provenance.sample_shape.is_empty());
        }
    }
    // Labels taken from another integer tensor, as `--labels NAME` allows.
    let _ = load(path, "fc", "predictions");
}

/// The `mat` target: writes `data` to `dir/MAT_FILE` (overwriting the previous input);
/// every variable `list_variables` reports is read as a layer and as labels, and loaded
/// through `source::load` with the `labels` variable; a missing name makes the reader walk
/// the whole file.
pub fn run_mat(dir: &Path, data: &[u8]) {
    let path = dir.join(MAT_FILE);
    std::fs::write(&path, data).expect("write the MAT file");
    let path = path.as_path();

    let mut names: Vec<String> = match list_variables(path) {
        Ok(vars) => vars.into_iter().map(|v| v.name).collect(),
        Err(_) => Vec::new(),
    };
    names.truncate(MAX_READS);
    names.push("no-such-variable".to_string());
    for name in &names {
        if let Ok(array) = read_variable(path, name) {
            // What `read_variable` promises on success.
            let numel = array.dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            assert_eq!(numel, Some(array.data.len()), "{name}: {:?}", array.dims);
        }
        let _ = read_labels(path, name);
        if let Ok(acts) = load(path, name, "labels") {
            check_acts(&acts);
        }
    }
    let _ = layers(path, "labels");
}

/// What `load` promises on success: one label per sample, and `[N, D]` values where D, the
/// product of the per-sample shape, fits in usize and is the matrix's column count. D is
/// computed checked, so that an overflow is reported as such in both builds.
fn check_acts(acts: &Activations) {
    let rep = &acts.representation;
    let shape = &acts.provenance.sample_shape;
    assert_eq!(rep.labels().len(), rep.n());
    let d = shape.iter().try_fold(1usize, |a, &x| a.checked_mul(x));
    assert!(
        d.is_some(),
        "`{}`: per-sample shape {:?} overflows usize",
        acts.provenance.layer,
        shape
    );
    assert_eq!(d, Some(rep.d()));
    assert_eq!(
        d.and_then(|d| d.checked_mul(rep.n())),
        Some(rep.features().as_slice().len())
    );
}
