//! Atomic file writes: a temporary sibling, fsync, rename, fsync of the directory, so that a
//! crash leaves either the old file or the complete new one, never a torn file.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The temporary sibling used while `path` is being written; a leftover one after a crash is
/// recognisable by its `.tmp` suffix and safe to delete.
pub fn temp_path(path: &Path) -> PathBuf {
    temp_path_in(path.parent().unwrap_or(Path::new("")), path)
}

/// A temporary name for `path` inside `dir`, which must be on the same file system so that
/// the final rename is atomic. Writing in a separate directory keeps even a killed writer's
/// leftovers out of the directory that holds the finished files.
pub fn temp_path_in(dir: &Path, path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(".{name}.{}.tmp", std::process::id()))
}

/// Moves a fully written and synced temporary file into place and syncs the directory entry.
pub fn commit(tmp: &Path, path: &Path) -> io::Result<()> {
    fs::rename(tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Directory fsync makes the rename itself durable; not all filesystems allow opening
        // a directory for it, and the data is already safe, so a failure here is ignored.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    match result {
        Ok(()) => commit(&tmp, path),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomic(&p, b"first version").unwrap();
        write_atomic(&p, b"2nd").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"2nd");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
