//! numpy's `.npz` archives as `np.savez` (stored) and `np.savez_compressed` (deflate) write
//! them: a zip of `.npy` files, one per array, named by the keyword it was saved under, in
//! the order the keywords were given. Each entry's declared size is checked against its
//! compressed size (deflate expands at most about 1032:1) before its array is read by
//! [`npy::read_from`], which checks the header against that size before allocating.

use std::fs::File;
use std::path::{Path, PathBuf};

use zip::ZipArchive;

use crate::readers::npy::{self, NpyArray, NpyData, NpyError, NpyShape};
use cnnu_run::IoError;

/// The largest expansion accepted: deflate's ceiling (about 1032:1) with room to spare.
const MAX_RATIO: u64 = 1100;

/// An open `.npz` archive.
pub struct Npz {
    path: PathBuf,
    archive: ZipArchive<File>,
}

/// Why an `.npz` archive cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum NpzError {
    /// The file cannot be read.
    #[error(transparent)]
    Io(#[from] IoError),
    /// Not a zip archive, or an entry that cannot be read.
    #[error("{}: not a readable .npz archive: {problem}", path.display())]
    Archive {
        /// The archive, or the entry (`archive.npz/name.npy`).
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// An entry that is not a valid `.npy` array.
    #[error(transparent)]
    Npy(#[from] NpyError),
}

impl Npz {
    /// Opens `path` and reads its directory.
    pub fn open(path: &Path) -> Result<Self, NpzError> {
        let file = File::open(path).map_err(IoError::at(path))?;
        let archive = ZipArchive::new(file).map_err(|e| NpzError::Archive {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            archive,
        })
    }

    /// The arrays' names (without `.npy`), in archive order: the order `np.savez` was given
    /// them in.
    pub fn names(&mut self) -> Result<Vec<String>, NpzError> {
        let mut names = Vec::with_capacity(self.archive.len());
        for i in 0..self.archive.len() {
            let entry = self
                .archive
                .by_index_raw(i)
                .map_err(|e| NpzError::Archive {
                    path: self.path.clone(),
                    problem: e.to_string(),
                })?;
            if let Some(name) = entry.name().strip_suffix(".npy") {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    /// The array `name`, if the archive has it.
    pub fn array(&mut self, name: &str) -> Result<Option<NpyArray>, NpzError> {
        self.entry(name, |r, len, path| npy::read_from(r, len, path))
    }

    /// The shape and kind of the array `name` from its header alone, if the archive has it.
    pub fn shape_of(&mut self, name: &str) -> Result<Option<NpyShape>, NpzError> {
        self.entry(name, |r, len, path| npy::peek_from(r, len, path))
    }

    /// `read` applied to the entry `name.npy`, its declared size checked first.
    fn entry<T>(
        &mut self,
        name: &str,
        read: impl FnOnce(&mut dyn std::io::Read, u64, &Path) -> Result<T, NpyError>,
    ) -> Result<Option<T>, NpzError> {
        let entry_path = self.path.join(format!("{name}.npy"));
        let archive_err = |problem: String| NpzError::Archive {
            path: entry_path.clone(),
            problem,
        };
        let mut entry = match self.archive.by_name(&format!("{name}.npy")) {
            Ok(e) => e,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(archive_err(e.to_string())),
        };
        let (size, packed) = (entry.size(), entry.compressed_size());
        if size > packed.saturating_mul(MAX_RATIO).saturating_add(1024) {
            return Err(archive_err(format!(
                "declares {size} bytes from {packed} compressed: not an array numpy wrote"
            )));
        }
        Ok(Some(read(&mut entry, size, &entry_path)?))
    }
}

/// The values of a float array as f32 (float64 narrowed), None for integers.
pub fn floats(data: NpyData) -> Option<Vec<f32>> {
    match data {
        NpyData::F32(v) => Some(v),
        NpyData::F64(v) => Some(v.into_iter().map(|x| x as f32).collect()),
        NpyData::I32(_) | NpyData::I64(_) => None,
    }
}

/// The values of an integer array, None for floats.
pub fn integers(data: &NpyData) -> Option<Vec<i64>> {
    match data {
        NpyData::I32(v) => Some(v.iter().map(|&x| i64::from(x)).collect()),
        NpyData::I64(v) => Some(v.clone()),
        NpyData::F32(_) | NpyData::F64(_) => None,
    }
}
