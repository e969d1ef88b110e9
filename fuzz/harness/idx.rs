//! The harness of the `idx` fuzz target: the MNIST idx reader,
//! `cnnu_train::idx::read_split`, driven through its real path-based API. No reader
//! code is copied; this file depends on `cnnu_train` (and `flate2`, which it uses too) only.
//!
//! One copy serves two builds:
//! - `fuzz/fuzz_targets/idx.rs` (nightly, libFuzzer), with
//!   `#[path = "../harness/idx.rs"] mod idx;`, on a per-process scratch directory;
//! - `crates/train/tests/fuzz_seeds.rs` (stable, CI), with
//!   `#[path = "../../../fuzz/harness/idx.rs"] mod idx;`, on every committed seed, so that
//!   the corpus stays meaningful.
//!
//! The input is a little container holding both files of one split, so that the
//! cross-file checks (count mismatch, labels) are reached and not only each file's own (the
//! seeds are built so by fuzz/seeds/make.py):
//!
//! - byte 0: flags. bit 0: the train split (else test); bit 1: the images file is named
//!   `….gz`; bit 2: the labels file is named `….gz`. A `.gz` name holds the bytes as given
//!   (the seeds with those bits carry real gzip streams), so the gzip decoder is fuzzed too.
//! - bytes 1-2: u16 little-endian, the images file's length L (clamped to what is left).
//! - then L bytes of images file; the rest is the labels file.
//!
//! Errors are expected; a panic (a failed post-condition below, or an overflow), a hang or
//! an outsized allocation is a bug. The fuzz build has overflow checks on, so there an
//! overflowing size computation is a panic by itself; CI runs `cargo test --release`, where
//! it would wrap silently, so the sizes a `Truncated` or `TrailingBytes` error reports are
//! also checked against the header's true (unbounded) arithmetic.

use std::io::Read;
use std::path::Path;

use cnnu_train::ImageSplit;
use cnnu_train::idx::{IdxError, Split, read_split};

/// Pixels of one 28x28 image.
const PIXELS: usize = 28 * 28;

/// Decodes `data`, writes both files to `dir` (first removing every name the reader could
/// pick up from a previous input: either split, raw or `.gz`), reads the split and checks
/// what the reader promises. Returns the split when it read, for the seed test to tell the
/// valid seeds from the broken ones.
pub fn run_idx(dir: &Path, data: &[u8]) -> Option<ImageSplit> {
    let (&flags, rest) = data.split_first()?;
    let (len, rest) = match rest {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => (0, rest),
    };
    let (images, labels) = rest.split_at(len.min(rest.len()));
    let split = if flags & 1 != 0 {
        Split::Train
    } else {
        Split::Test
    };

    for s in [Split::Train, Split::Test] {
        let (a, b) = s.file_stems();
        for stem in [a, b] {
            let _ = std::fs::remove_file(dir.join(stem));
            let _ = std::fs::remove_file(dir.join(format!("{stem}.gz")));
        }
    }
    let (img_stem, lbl_stem) = split.file_stems();
    let name = |stem: &str, gz: bool| {
        if gz {
            dir.join(format!("{stem}.gz"))
        } else {
            dir.join(stem)
        }
    };
    std::fs::write(name(img_stem, flags & 2 != 0), images).expect("write images");
    std::fs::write(name(lbl_stem, flags & 4 != 0), labels).expect("write labels");

    let split = match read_split(dir, split) {
        Ok(split) => split,
        Err(e) => {
            check_sizes(&e);
            return None;
        }
    };
    // What the reader promises on success.
    assert_eq!(split.images.len(), split.len() * PIXELS);
    assert!(split.labels.iter().all(|&l| l <= 9));
    if !split.is_empty() {
        let _ = split.image(split.len() - 1);
        assert_eq!(split.dims, [1, 28, 28]);
    }
    Some(split)
}

/// The file's bytes as the reader sees them (gunzipped for a `.gz` name, with the reader's
/// 64 MiB cap), if decodable.
fn decoded(path: &Path) -> Option<Vec<u8>> {
    let raw = std::fs::read(path).ok()?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .take(64 << 20)
            .read_to_end(&mut out)
            .ok()?;
        Some(out)
    } else {
        Some(raw)
    }
}

/// A size error must report the size the header really implies (header + count x item,
/// computed without overflow; saturated at u64::MAX where the error's field is a u64).
fn check_sizes(e: &IdxError) {
    let (path, reported, present) = match e {
        IdxError::Truncated {
            path,
            expected,
            found,
        } => (path, *expected, *found),
        IdxError::TrailingBytes {
            path,
            expected,
            extra,
            // Saturating: a wrapped `expected` then fails the check below instead of panicking
            // here, in the harness's own arithmetic.
        } => (path, *expected, expected.saturating_add(*extra)),
        _ => return,
    };
    let Some(data) = decoded(path) else { return };
    assert_eq!(present, data.len() as u64, "{e}");
    let images = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains("images"));
    let header: usize = if images { 16 } else { 8 };
    if data.len() < header {
        assert_eq!(reported, header as u64, "{e}");
        return;
    }
    let be = |i: usize| u128::from(u32::from_be_bytes(data[i..i + 4].try_into().unwrap()));
    let item = if images { be(8) * be(12) } else { 1 };
    let implied = header as u128 + be(4) * item;
    assert_eq!(
        u128::from(reported),
        implied.min(u128::from(u64::MAX)),
        "{e}: the header implies {implied} bytes"
    );
}
