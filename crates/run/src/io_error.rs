//! The one I/O-error wrapper of the workspace: an `std::io::Error` with the file it happened
//! to, which the training side's and the analysis side's error types carry as their `Io`
//! variant.

use std::path::{Path, PathBuf};

/// An I/O error at `path`; displays as `PATH: ERROR`.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct IoError {
    /// The file.
    pub path: PathBuf,
    /// The error.
    #[source]
    pub source: std::io::Error,
}

impl IoError {
    /// The `map_err` adapter for an operation on `path`:
    /// `fs::read(p).map_err(IoError::at(p))?`.
    pub fn at(path: &Path) -> impl Fn(std::io::Error) -> IoError + Copy + '_ {
        move |source| IoError {
            path: path.to_path_buf(),
            source,
        }
    }
}
