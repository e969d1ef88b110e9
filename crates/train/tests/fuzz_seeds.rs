//! Every committed seed (and fuzzer-found reproducer, `repro-*`) of the `idx` fuzz target,
//! run through the very harness of fuzz/fuzz_targets/idx.rs (`fuzz/harness/idx.rs`,
//! included below; it describes the seed container), on stable and without libFuzzer: none
//! may panic. Errors are expected for the broken seeds; the valid ones are also checked to
//! still read, so the corpus stays meaningful.
//!
//! The fuzz build has overflow checks on, so there an overflowing size computation is a
//! panic; CI runs `cargo test --release`, where it would wrap silently, so the harness also
//! checks the sizes a `Truncated` or `TrailingBytes` error reports against the header's
//! true (unbounded) arithmetic.

#[path = "../../../fuzz/harness/idx.rs"]
mod idx;
#[path = "../../../fuzz/harness/seeds.rs"]
mod seeds;

#[test]
fn idx_seeds_do_not_panic_and_valid_ones_read() {
    // A scratch directory of its own (the fuzz target uses a per-process one).
    let dir = tempfile::tempdir().unwrap();
    let mut read = Vec::new();
    let mut failed = Vec::new();
    for seed in seeds::all("idx") {
        let data = std::fs::read(&seed).unwrap();
        let result = std::panic::catch_unwind(|| idx::run_idx(dir.path(), &data));
        let name = seed.file_name().unwrap().to_string_lossy().into_owned();
        match result {
            Ok(Some(split)) => read.push((name, split.len())),
            Ok(None) if name.starts_with("valid_") => failed.push(format!("{name} (did not read)")),
            Ok(None) => {}
            Err(_) => failed.push(format!("{name} (panicked)")),
        }
    }
    assert!(failed.is_empty(), "idx seeds: {failed:?}");
    read.sort();
    let want: Vec<(String, usize)> = [
        ("valid_empty", 0),
        ("valid_test_gz", 3),
        ("valid_test_lbl_gz", 3),
        ("valid_test_raw", 3),
        ("valid_train_img_gz", 3),
        ("valid_train_raw", 3),
    ]
    .into_iter()
    .map(|(n, k)| (n.to_string(), k))
    .collect();
    // Reproducers of fixed bugs may read successfully; the broken seeds must not.
    read.retain(|(n, _)| !n.starts_with("repro-"));
    assert_eq!(read, want);
}
