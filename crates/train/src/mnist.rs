//! MNIST from the four official idx files (gzip-compressed or raw): validated reading,
//! torchvision's normalisation and where to find the files.
//!
//! The idx reader is written here rather than taken from burn-dataset because that one panics
//! on a bad file and trusts the header's counts; a researcher's truncated download must give
//! a one-line error naming the file instead.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Pixel mean of the MNIST training set, as torchvision's `Normalize` uses it.
pub const MEAN: f32 = 0.1307;
/// Pixel standard deviation of the MNIST training set.
pub const STD: f32 = 0.3081;

const IMAGES_MAGIC: u32 = 2051;
const LABELS_MAGIC: u32 = 2049;
/// No idx file of MNIST decompresses to more than this; a larger stream is not MNIST (and
/// would otherwise let a gzip bomb exhaust memory).
const MAX_DECOMPRESSED: u64 = 64 << 20;

/// The two MNIST splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The 60 000 training images.
    Train,
    /// The 10 000 test images.
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
pub enum MnistError {
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
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
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

/// One split of MNIST: 28x28 u8 images, row-major, and their labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MnistSplit {
    /// `len() * 784` pixels.
    pub images: Vec<u8>,
    /// One digit per image.
    pub labels: Vec<u8>,
}

/// Pixels per image.
pub const PIXELS: usize = 28 * 28;

impl MnistSplit {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split has no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The raw pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * PIXELS..(i + 1) * PIXELS]
    }

    /// Reads a split from `dir`, each file as `stem` or `stem.gz`.
    pub fn read(dir: &Path, split: Split) -> Result<Self, MnistError> {
        if !dir.is_dir() {
            return Err(MnistError::MissingDir(dir.to_path_buf()));
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
            return Err(MnistError::BadDims {
                path: img_path,
                rows,
                cols,
            });
        }
        let (n_labels, labels) = parse_idx(&lbl_path, &lbl, LABELS_MAGIC, 8)?;
        if n_images != n_labels {
            return Err(MnistError::CountMismatch {
                images: img_path,
                n_images,
                labels: lbl_path,
                n_labels,
            });
        }
        if let Some((index, &label)) = labels.iter().enumerate().find(|(_, l)| **l > 9) {
            return Err(MnistError::BadLabel {
                path: lbl_path,
                index,
                label,
            });
        }
        Ok(MnistSplit {
            images: images.to_vec(),
            labels: labels.to_vec(),
        })
    }

    /// The images `indices`, normalised as torchvision does, `[len, 1, 28, 28]` row-major.
    pub fn normalized(&self, indices: &[usize]) -> Vec<f32> {
        let mut out = Vec::with_capacity(indices.len() * PIXELS);
        for &i in indices {
            out.extend(self.image(i).iter().map(|&p| normalize(p)));
        }
        out
    }
}

/// torchvision's `ToTensor()` then `Normalize((0.1307,), (0.3081,))`, each step in f32.
#[inline]
pub fn normalize(pixel: u8) -> f32 {
    (pixel as f32 / 255.0 - MEAN) / STD
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf, MnistError> {
    let raw = dir.join(stem);
    if raw.is_file() {
        return Ok(raw);
    }
    let gz = dir.join(format!("{stem}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(MnistError::MissingFile {
        dir: dir.to_path_buf(),
        stem: stem.to_string(),
    })
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, MnistError> {
    let io = |source| MnistError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let mut out = Vec::new();
    if path.extension().is_some_and(|e| e == "gz") {
        let mut decoder = flate2::read::GzDecoder::new(file).take(MAX_DECOMPRESSED + 1);
        decoder
            .read_to_end(&mut out)
            .map_err(|source| MnistError::BadGzip {
                path: path.to_path_buf(),
                source,
            })?;
    } else {
        file.take(MAX_DECOMPRESSED + 1)
            .read_to_end(&mut out)
            .map_err(io)?;
    }
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(MnistError::TooLarge {
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
) -> Result<(u32, &'a [u8]), MnistError> {
    if data.len() < header {
        return Err(MnistError::Truncated {
            path: path.to_path_buf(),
            expected: header as u64,
            found: data.len() as u64,
        });
    }
    let found = be_u32(&data[0..4]);
    if found != magic {
        return Err(MnistError::WrongMagic {
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
        return Err(MnistError::Truncated {
            path: path.to_path_buf(),
            expected,
            found: present,
        });
    }
    if present > expected {
        return Err(MnistError::TrailingBytes {
            path: path.to_path_buf(),
            expected,
            extra: present - expected,
        });
    }
    Ok((count, &data[header..]))
}

/// The whole of MNIST.
#[derive(Debug, Clone)]
pub struct Mnist {
    /// The training split.
    pub train: MnistSplit,
    /// The test split.
    pub test: MnistSplit,
}

impl Mnist {
    /// Reads both splits from one directory.
    pub fn read(dir: &Path) -> Result<Self, MnistError> {
        Ok(Mnist {
            train: MnistSplit::read(dir, Split::Train)?,
            test: MnistSplit::read(dir, Split::Test)?,
        })
    }
}
