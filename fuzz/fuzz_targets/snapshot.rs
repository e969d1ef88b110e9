//! Fuzzes the safetensors snapshot reader, `cnnu_analysis::readers::source::{layers, load}`, through
//! its real path-based API. The input is the snapshot file itself; the calls and the
//! post-conditions are `run_snapshot` in `fuzz/harness/readers.rs`, shared with the stable
//! seed test `crates/analysis/tests/fuzz_seeds.rs`; this file only feeds it libFuzzer's
//! inputs.
#![no_main]

// `run_mat` and its limits belong to the `mat` target.
#[allow(dead_code)]
#[path = "../harness/readers.rs"]
mod readers;
#[path = "../harness/scratch.rs"]
mod scratch;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| readers::run_snapshot(scratch::scratch_dir("snapshot"), data));
