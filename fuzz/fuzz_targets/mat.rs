//! Fuzzes the MATLAB v5 reader, `cnnu_analysis::readers::mat::{list_variables, read_variable,
//! read_labels}` and `cnnu_analysis::readers::source::{layers, load}` on a `.mat` path, through their
//! real path-based API. The input is the MAT file itself; the calls and the post-conditions
//! are `run_mat` in `fuzz/harness/readers.rs`, shared with the stable seed test
//! `crates/analysis/tests/fuzz_seeds.rs`; this file only feeds it libFuzzer's inputs.
#![no_main]

// `run_snapshot` and its limits belong to the `snapshot` target.
#[allow(dead_code)]
#[path = "../harness/readers.rs"]
mod readers;
#[path = "../harness/scratch.rs"]
mod scratch;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| readers::run_mat(scratch::scratch_dir("mat"), data));
