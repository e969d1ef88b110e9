//! The idx files of MNIST, Fashion-MNIST and KMNIST (gzip-compressed or raw): validated
//! reading of one split into an [`ImageSplit`]. Normalisation belongs to
//! [`ImageDataset::normalized`](crate::ImageDataset::normalized), like every dataset's.
//!
//! The idx reader is written here rather than taken from burn-dataset because that one panics
//! on a bad file and trusts the header's counts; a researcher's truncated download must give
//! a one-line error naming the file instead.

use cnnu_run::IoError;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::dataset::ImageSplit;

const IMAGES_MAGIC: u32 = 2051;
const LABELS_MAGIC: u32 = 2049;
/// No idx file of MNIST decompresses to more than this; a larger stream is not MNIST (and
/// would otherwise let a gzip bomb exhaust memory).
const MAX_DECOMPRESSED: u64 = 64 << 20;

/// The two splits of an idx dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training images (60 000 in MNIST).
    Train,
    /// The test images (10 000 in MNIST).
    Test,
}

impl Split {
    /// The idx file stems (images, labels) of this split.
    pub fn file_stems(self) -> (&'static str, &'static str) {
        match self {
            Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
            Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        }
    }
}

/// What is wrong with an MNIST file.
#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    /// The data directory does not exist.
    #[error("{0}: MNIST directory not found")]
    MissingDir(PathBuf),
    /// Neither the raw nor the `.gz` file exists.
    #[error("{dir}: neither {stem} nor {stem}.gz found")]
    MissingFile {
        /// The directory searched.
        dir: PathBuf,
        /// The idx file stem.
        stem: String,
    },
    /// The file could not be read.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The gzip stream is corrupt.
    #[error("{path}: bad gzip data: {source}")]
    BadGzip {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: std::io::Error,
    },
    /// The decompressed data is larger than any MNIST file.
    #[error("{path}: decompresses to more than {} MiB; not an MNIST idx file", MAX_DECOMPRESSED >> 20)]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The magic number is not the one of this kind of idx file.
    #[error("{path}: wrong magic number {found:#010x}, expected {expected:#010x}")]
    WrongMagic {
        /// The file.
        path: PathBuf,
        /// The magic expected.
        expected: u32,
        /// The magic found.
        found: u32,
    },
    /// The file is shorter than its header says.
    #[error("{path}: truncated: header promises {expected} bytes, file has {found}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the header implies.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// The file has more bytes than its header says.
    #[error("{path}: {extra} unexpected bytes after the {expected} the header promises")]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Bytes the header implies.
        expected: u64,
        /// Bytes beyond.
        extra: u64,
    },
    /// Images are not 28x28.
    #[error("{path}: images are {rows}x{cols}, expected 28x28")]
    BadDims {
        /// The file.
        path: PathBuf,
        /// Rows per image.
        rows: u32,
        /// Columns per image.
        cols: u32,
    },
    /// The image and label files disagree on the count.
    #[error("{images} has {n_images} images but {labels} has {n_labels} labels")]
    CountMismatch {
        /// The image file.
        images: PathBuf,
        /// Its count.
        n_images: u32,
        /// The label file.
        labels: PathBuf,
        /// Its count.
        n_labels: u32,
    },
    /// A label outside 0..=9.
    #[error("{path}: label {label} at index {index} is not a digit 0-9")]
    BadLabel {
        /// The file.
        path: PathBuf,
        /// Where.
        index: usize,
        /// The value.
        label: u8,
    },
}

/// Reads one split (28x28 u8 images and labels 0-9) from `dir`, each file as `stem` or
/// `stem.gz`.
pub fn read_split(dir: &Path, split: Split) -> Result<ImageSplit, IdxError> {
    if !dir.is_dir() {
        return Err(IdxError::MissingDir(dir.to_path_buf()));
    }
    let (img_stem, lbl_stem) = split.file_stems();
    let img_path = find(dir, img_stem)?;
    let lbl_path = find(dir, lbl_stem)?;
    let img = read_maybe_gz(&img_path)?;
    let lbl = read_maybe_gz(&lbl_path)?;
    let (n_images, images) = parse_idx(&img_path, &img, IMAGES_MAGIC, 16)?;
    let rows = be_u32(&img[8..12]);
    let cols = be_u32(&img[12..16]);
    if rows != 28 || cols != 28 {
        return Err(IdxError::BadDims {
            path: img_path,
            rows,
            cols,
        });
    }
    let (n_labels, labels) = parse_idx(&lbl_path, &lbl, LABELS_MAGIC, 8)?;
    if n_images != n_labels {
        return Err(IdxError::CountMismatch {
            images: img_path,
            n_images,
            labels: lbl_path,
            n_labels,
        });
    }
    if let Some((index, &label)) = labels.iter().enumerate().find(|(_, l)| **l > 9) {
        return Err(IdxError::BadLabel {
            path: lbl_path,
            index,
            label,
        });
    }
    Ok(ImageSplit {
        images: images.to_vec(),
        labels: labels.to_vec(),
        dims: [1, 28, 28],
    })
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf, IdxError> {
    let raw = dir.join(stem);
    if raw.is_file() {
        return Ok(raw);
    }
    let gz = dir.join(format!("{stem}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(IdxError::MissingFile {
        dir: dir.to_path_buf(),
        stem: stem.to_string(),
    })
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, IdxError> {
    let io = |source| {
        IdxError::Io(IoError {
            path: path.to_path_buf(),
            source,
        })
    };
    let file = File::open(path).map_err(io)?;
    let mut out = Vec::new();
    if path.extension().is_some_and(|e| e == "gz") {
        let mut decoder = flate2::read::GzDecoder::new(file).take(MAX_DECOMPRESSED + 1);
        decoder
            .read_to_end(&mut out)
            .map_err(|source| IdxError::BadGzip {
                path: path.to_path_buf(),
                source,
            })?;
    } else {
        file.take(MAX_DECOMPRESSED + 1)
            .read_to_end(&mut out)
            .map_err(io)?;
    }
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(IdxError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Checks magic and length against the header; returns the count and the payload. The
/// header's count is only compared with the bytes present, never used to allocate.
fn parse_idx<'a>(
    path: &Path,
    data: &'a [u8],
    magic: u32,
    header: usize,
) -> Result<(u32, &'a [u8]), IdxError> {
    if data.len() < header {
        return Err(IdxError::Truncated {
            path: path.to_path_buf(),
            expected: header as u64,
            found: data.len() as u64,
        });
    }
    let found = be_u32(&data[0..4]);
    if found != magic {
        return Err(IdxError::WrongMagic {
            path: path.to_path_buf(),
            expected: magic,
            found,
        });
    }
    let count = be_u32(&data[4..8]);
    let item: u64 = if header == 16 {
        be_u32(&data[8..12]) as u64 * be_u32(&data[12..16]) as u64
    } else {
        1
    };
    // Saturating: a lying header (count x rows x cols beyond u64) is just "truncated".
    let expected = (count as u64)
        .saturating_mul(item)
        .saturating_add(header as u64);
    let present = data.len() as u64;
    if present < expected {
        return Err(IdxError::Truncated {
            path: path.to_path_buf(),
            expected,
            found: present,
        });
    }
    if present > expected {
        return Err(IdxError::TrailingBytes {
            path: path.to_path_buf(),
            expected,
            extra: present - expected,
        });
    }
    Ok((count, &data[header..]))
}
