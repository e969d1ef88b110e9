//! CIFAR-10, binary version: `data_batch_1.bin` .. `data_batch_5.bin` (training) and
//! `test_batch.bin`, each a run of records of 1 label byte + 3072 pixel bytes (planes R, G, B
//! of 32x32, row-major); `batches.meta.txt`, when present, names the classes one per line.
//!
//! Checked strictly, like the idx reader: a missing file, a length that is not a whole number
//! of records, or a label above 9 is a one-line error naming the file. The official files hold
//! 10 000 records each; fewer are accepted, so that a slice can stand in for the whole.

use cnnu_run::IoError;
use std::path::{Path, PathBuf};

use crate::dataset::ImageSplit;

/// Bytes per record: the label, then 3x32x32 pixels.
pub const RECORD: usize = 1 + 3 * 32 * 32;
/// The training files, in order.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test file.
pub const TEST_FILE: &str = "test_batch.bin";
/// The optional class names file.
pub const META_FILE: &str = "batches.meta.txt";

/// What is wrong with a CIFAR-10 file.
#[derive(Debug, thiserror::Error)]
pub enum CifarError {
    /// The data directory does not exist.
    #[error("{0}: CIFAR-10 directory not found")]
    MissingDir(PathBuf),
    /// A batch file is absent.
    #[error(
        "{dir}: {file} not found (CIFAR-10 binary version: data_batch_1.bin .. data_batch_5.bin, test_batch.bin)"
    )]
    MissingFile {
        /// The directory searched.
        dir: PathBuf,
        /// The file name.
        file: &'static str,
    },
    /// The file could not be read.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The length is not a positive whole number of records.
    #[error("{path}: {len} bytes is not a whole number of {RECORD}-byte CIFAR-10 records")]
    BadSize {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// A label above 9.
    #[error("{path}: record {index} has label {label}, CIFAR-10 labels are 0..=9")]
    BadLabel {
        /// The file.
        path: PathBuf,
        /// The record.
        index: usize,
        /// The label found.
        label: u8,
    },
    /// `batches.meta.txt` does not name ten classes.
    #[error("{path}: names {found} classes, CIFAR-10 has 10")]
    BadMeta {
        /// The file.
        path: PathBuf,
        /// Non-empty lines found.
        found: usize,
    },
}

/// Both splits and, when the directory has `batches.meta.txt`, the class names.
#[derive(Debug, Clone)]
pub struct CifarFiles {
    /// The five training batches, concatenated in order.
    pub train: ImageSplit,
    /// The test batch.
    pub test: ImageSplit,
    /// The names in `batches.meta.txt`.
    pub class_names: Option<Vec<String>>,
}

/// Reads the CIFAR-10 binary files from `dir`.
pub fn read(dir: &Path) -> Result<CifarFiles, CifarError> {
    if !dir.is_dir() {
        return Err(CifarError::MissingDir(dir.to_path_buf()));
    }
    let mut train = empty_split();
    for file in TRAIN_FILES {
        let part = read_batch(dir, file)?;
        train.images.extend(part.images);
        train.labels.extend(part.labels);
    }
    let test = read_batch(dir, TEST_FILE)?;
    Ok(CifarFiles {
        train,
        test,
        class_names: read_meta(&dir.join(META_FILE))?,
    })
}

fn empty_split() -> ImageSplit {
    ImageSplit {
        images: Vec::new(),
        labels: Vec::new(),
        dims: [3, 32, 32],
    }
}

/// One batch file's records.
pub fn read_batch(dir: &Path, file: &'static str) -> Result<ImageSplit, CifarError> {
    let path = dir.join(file);
    if !path.is_file() {
        return Err(CifarError::MissingFile {
            dir: dir.to_path_buf(),
            file,
        });
    }
    let bytes = std::fs::read(&path).map_err(IoError::at(&path))?;
    if bytes.is_empty() || bytes.len() % RECORD != 0 {
        return Err(CifarError::BadSize {
            path,
            len: bytes.len(),
        });
    }
    let mut split = empty_split();
    split.images.reserve(bytes.len() / RECORD * (RECORD - 1));
    for (index, record) in bytes.chunks_exact(RECORD).enumerate() {
        let label = record[0];
        if label > 9 {
            return Err(CifarError::BadLabel { path, index, label });
        }
        split.labels.push(label);
        split.images.extend_from_slice(&record[1..]);
    }
    Ok(split)
}

fn read_meta(path: &Path) -> Result<Option<Vec<String>>, CifarError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(IoError::at(path))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != 10 {
        return Err(CifarError::BadMeta {
            path: path.to_path_buf(),
            found: names.len(),
        });
    }
    Ok(Some(names))
}

/// Writes records in the official format: `labels[i]` then `images[i·3072..]`. For tests and
/// for making a slice of the real files.
pub fn write_batch(path: &Path, images: &[u8], labels: &[u8]) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(labels.len() * RECORD);
    for (i, &label) in labels.iter().enumerate() {
        bytes.push(label);
        bytes.extend_from_slice(&images[i * (RECORD - 1)..(i + 1) * (RECORD - 1)]);
    }
    cnnu_run::atomic::write_atomic(path, &bytes)
}
