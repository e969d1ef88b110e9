//! The committed seeds of the fuzz targets, `fuzz/seeds/TARGET/`, for the stable tests
//! `crates/{analysis,train}/tests/fuzz_seeds.rs`, which include this file with
//! `#[path = "../../../fuzz/harness/seeds.rs"] mod seeds;`. Both crates sit at
//! `crates/NAME/`, so the seeds are at `../../fuzz/seeds` from their manifest directory.

use std::path::{Path, PathBuf};

/// `fuzz/seeds/TARGET`.
pub fn dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target)
}

/// Every file in `fuzz/seeds/TARGET` (seeds and `repro-*` reproducers), sorted by name;
/// panics if there is none, so that a moved corpus cannot make the tests pass vacuously.
pub fn all(target: &str) -> Vec<PathBuf> {
    let dir = dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no seeds", dir.display());
    files
}
