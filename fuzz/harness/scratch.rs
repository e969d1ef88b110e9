//! The fuzz targets' scratch directory: one per process, under `/dev/shm` where it exists
//! (no disk I/O per iteration) or else the temp dir, created on first use and reused by
//! every iteration. The harnesses write their inputs there under fixed names, so it is never
//! cleaned up between iterations, only overwritten (see `harness/idx.rs` for stale names).
//!
//! Included by the fuzz targets only (`#[path = "../harness/scratch.rs"] mod scratch;`); the
//! stable seed tests use a `tempfile::tempdir()` instead, which is removed when they end.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `cnnu-fuzz-TARGET-PID` under `/dev/shm` or the temp dir. A fuzz binary is one target, so
/// the first call's `target` names the directory for the whole process.
pub fn scratch_dir(target: &str) -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("cnnu-fuzz-{target}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        dir
    })
}
