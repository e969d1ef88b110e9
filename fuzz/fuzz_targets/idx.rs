//! Fuzzes the MNIST idx reader, `cnnu_train::idx::read_split`, through its real
//! path-based API. The input format (both files of one split in a little container), the
//! calls and the post-conditions are in `fuzz/harness/idx.rs`, shared with the stable seed
//! test `crates/train/tests/fuzz_seeds.rs`; this file only feeds it libFuzzer's inputs.
#![no_main]

#[path = "../harness/idx.rs"]
mod idx;
#[path = "../harness/scratch.rs"]
mod scratch;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = idx::run_idx(scratch::scratch_dir("idx"), data);
});
