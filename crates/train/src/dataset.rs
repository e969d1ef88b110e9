//! The image datasets a run can train on, as one type the trainer, the probe set and the
//! reports are written against: u8 pixels `[C, H, W]` per image, labels, class names and the
//! per-channel normalisation. Which dataset it is matters only here, where it is read.
//!
//! Adding a dataset: a [`DatasetKind`] variant with its constants (name, classes, shape,
//! mean/std, files) and, for a new file format, a reader beside [`crate::idx`] and
//! [`crate::cifar`] (CIFAR binary).

use std::path::{Path, PathBuf};

use burn::prelude::*;

use crate::cifar::{self, CifarError};
use crate::download::{self, DownloadError};
use cnnu_run::stratified::{Within, stratified};

use crate::idx::{self, IdxError, Split};

/// Which dataset.
#[derive(Config, Debug, PartialEq, Eq, Copy, Hash)]
pub enum DatasetKind {
    /// MNIST handwritten digits, 1x28x28.
    Mnist,
    /// Zalando's Fashion-MNIST, 1x28x28 (same idx files as MNIST).
    FashionMnist,
    /// Kuzushiji-MNIST (cursive Japanese characters), 1x28x28 (same idx files as MNIST).
    Kmnist,
    /// CIFAR-10 natural images, 3x32x32 (the binary version).
    Cifar10,
}

/// How a dataset's files are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// The four idx files of MNIST (raw or `.gz`).
    Idx,
    /// CIFAR-10's binary batches.
    CifarBinary,
}

impl DatasetKind {
    /// Every dataset.
    pub const ALL: [DatasetKind; 4] = [
        DatasetKind::Mnist,
        DatasetKind::FashionMnist,
        DatasetKind::Kmnist,
        DatasetKind::Cifar10,
    ];

    /// The name on the command line and in reports (`fashion-mnist`).
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Kmnist => "kmnist",
            DatasetKind::Cifar10 => "cifar10",
        }
    }

    /// The name as a person writes it (`Fashion-MNIST`).
    pub fn title(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "MNIST",
            DatasetKind::FashionMnist => "Fashion-MNIST",
            DatasetKind::Kmnist => "KMNIST",
            DatasetKind::Cifar10 => "CIFAR-10",
        }
    }

    /// How its files are laid out.
    pub fn format(self) -> FileFormat {
        match self {
            DatasetKind::Cifar10 => FileFormat::CifarBinary,
            _ => FileFormat::Idx,
        }
    }

    /// The shape of one image, `[C, H, W]`.
    pub fn image_dims(self) -> [usize; 3] {
        match self.format() {
            FileFormat::Idx => [1, 28, 28],
            FileFormat::CifarBinary => [3, 32, 32],
        }
    }

    /// Class names by label.
    pub fn class_names(self) -> [&'static str; 10] {
        match self {
            DatasetKind::Mnist => ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
            DatasetKind::FashionMnist => [
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ],
            // Romanised, as in the KMNIST paper's figures (the plots' font has no kana).
            DatasetKind::Kmnist => ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
            DatasetKind::Cifar10 => [
                "airplane",
                "automobile",
                "bird",
                "cat",
                "deer",
                "dog",
                "frog",
                "horse",
                "ship",
                "truck",
            ],
        }
    }

    /// Per-channel (mean, std) of the training pixels in [0, 1], as torchvision recipes use
    /// them for `Normalize`.
    pub fn normalization(self) -> (&'static [f32], &'static [f32]) {
        match self {
            // The MNIST training set's pixel mean and standard deviation, as torchvision's
            // `Normalize((0.1307,), (0.3081,))` uses them.
            DatasetKind::Mnist => (&[0.1307], &[0.3081]),
            DatasetKind::FashionMnist => (&[0.2860], &[0.3530]),
            DatasetKind::Kmnist => (&[0.1918], &[0.3483]),
            DatasetKind::Cifar10 => (&[0.4914, 0.4822, 0.4465], &[0.2470, 0.2435, 0.2616]),
        }
    }

    /// The environment variable that names its directory when `--data-dir` is not given.
    pub fn env_var(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "CNNU_MNIST_DIR",
            DatasetKind::FashionMnist => "CNNU_FASHION_MNIST_DIR",
            DatasetKind::Kmnist => "CNNU_KMNIST_DIR",
            DatasetKind::Cifar10 => "CNNU_CIFAR10_DIR",
        }
    }
}

/// What is wrong with a dataset's files.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// An idx file (MNIST, Fashion-MNIST, KMNIST).
    #[error(transparent)]
    Idx(#[from] IdxError),
    /// A CIFAR-10 binary file.
    #[error(transparent)]
    Cifar(#[from] CifarError),
    /// Fetching the files failed.
    #[error(
        "{dataset} is not on this machine and the download failed: {source}; pass --data-dir DIR or set {env_var}"
    )]
    Download {
        /// The dataset's title.
        dataset: &'static str,
        /// The variable that would have named a local copy.
        env_var: &'static str,
        /// What went wrong.
        #[source]
        source: DownloadError,
    },
}

/// One split: images `[N, C, H, W]` as u8, row-major, and one label per image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSplit {
    /// `len() · C·H·W` pixels.
    pub images: Vec<u8>,
    /// One class index per image.
    pub labels: Vec<u8>,
    /// `[C, H, W]` of every image.
    pub dims: [usize; 3],
}

impl ImageSplit {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split has no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image, C·H·W.
    pub fn pixels(&self) -> usize {
        self.dims.iter().product()
    }

    /// The raw pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let p = self.pixels();
        &self.images[i * p..(i + 1) * p]
    }
}

/// A dataset: both splits, what its classes are called and how its pixels are normalised.
#[derive(Debug, Clone)]
pub struct ImageDataset {
    /// Which dataset.
    pub kind: DatasetKind,
    /// The training split.
    pub train: ImageSplit,
    /// The test split (the probe set is its first images).
    pub test: ImageSplit,
    /// Class names by label (from the files where they carry them).
    pub class_names: Vec<String>,
}

/// Where a dataset was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// A directory the caller gave.
    Given(PathBuf),
    /// The dataset's environment variable.
    Env(&'static str, PathBuf),
    /// The download cache.
    Cache(PathBuf),
}

impl std::fmt::Display for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSource::Given(p) => write!(f, "{}", p.display()),
            DataSource::Env(var, p) => write!(f, "{} ({var})", p.display()),
            DataSource::Cache(p) => write!(f, "{} (download cache)", p.display()),
        }
    }
}

impl ImageDataset {
    /// Reads both splits of `kind` from `dir`.
    pub fn read(kind: DatasetKind, dir: &Path) -> Result<Self, DatasetError> {
        let names = || kind.class_names().map(String::from).to_vec();
        let (train, test, class_names) = match kind.format() {
            FileFormat::Idx => {
                let split = |s| idx::read_split(dir, s);
                (split(Split::Train)?, split(Split::Test)?, names())
            }
            FileFormat::CifarBinary => {
                let files = cifar::read(dir)?;
                let class_names = files.class_names.unwrap_or_else(names);
                (files.train, files.test, class_names)
            }
        };
        Ok(Self {
            kind,
            train,
            test,
            class_names,
        })
    }

    /// Reads `kind` from `data_dir`, else its environment variable, else the download
    /// cache ([`download::cache_root`]), downloading it there first if needed (`downloading`
    /// hears each URL).
    pub fn load(
        kind: DatasetKind,
        data_dir: Option<&Path>,
        downloading: &mut dyn FnMut(&str),
    ) -> Result<(Self, DataSource), DatasetError> {
        if let Some(dir) = data_dir {
            return Ok((Self::read(kind, dir)?, DataSource::Given(dir.to_path_buf())));
        }
        let var = kind.env_var();
        if let Some(dir) = std::env::var_os(var).filter(|d| !d.is_empty()) {
            let dir = PathBuf::from(dir);
            return Ok((Self::read(kind, &dir)?, DataSource::Env(var, dir)));
        }
        let failed = |source| DatasetError::Download {
            dataset: kind.title(),
            env_var: var,
            source,
        };
        let cache = download::cache_root().map_err(failed)?;
        let dir = download::fetch(kind, &cache, &kind.remote(), downloading).map_err(failed)?;
        Ok((Self::read(kind, &dir)?, DataSource::Cache(dir)))
    }

    /// The number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// `[C, H, W]` of every image.
    pub fn image_dims(&self) -> [usize; 3] {
        self.train.dims
    }

    /// The images `indices` of `split`, normalised as torchvision's `ToTensor()` then
    /// `Normalize(mean, std)` do (each step in f32), `[len, C, H, W]` row-major.
    pub fn normalized(&self, split: &ImageSplit, indices: &[usize]) -> Vec<f32> {
        let (mean, std) = self.kind.normalization();
        let plane = split.dims[1] * split.dims[2];
        let mut out = Vec::with_capacity(indices.len() * split.pixels());
        for &i in indices {
            for (c, pixels) in split.image(i).chunks_exact(plane).enumerate() {
                let (m, s) = (mean[c], std[c]);
                out.extend(pixels.iter().map(|&p| (p as f32 / 255.0 - m) / s));
            }
        }
        out
    }
}

/// A deterministic class-stratified subset of `n` indices: each class gets its share of `n`
/// ([`cnnu_run::stratified`]), taken as the first images of that class in file order;
/// returned in file order.
pub fn stratified_subset(labels: &[u8], n: usize) -> Vec<usize> {
    let labels: Vec<i64> = labels.iter().map(|&l| i64::from(l)).collect();
    stratified(&labels, n, Within::First)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stratified_subset_of_labels_past_nine_by_hand() {
        // Counts 0:1, 5:2, 11:3 of 6; shares of 3 are 0.5, 1, 1.5: floors 0, 1, 1, and the one
        // left goes to the largest remainder, a tie between 0 and 11 that the lower label wins.
        // The first image of each class in file order: indices 1, 3 and 0.
        assert_eq!(stratified_subset(&[11, 0, 11, 5, 11, 5], 3), vec![0, 1, 3]);
    }

    #[test]
    fn cifar_normalises_each_channel_with_its_own_statistics() {
        // One 3x32x32 image: channel c all pixel value 51·(c + 1).
        let images: Vec<u8> = (0..3).flat_map(|c| vec![51 * (c + 1); 1024]).collect();
        let split = ImageSplit {
            images,
            labels: vec![0],
            dims: [3, 32, 32],
        };
        let data = ImageDataset {
            kind: DatasetKind::Cifar10,
            train: split.clone(),
            test: split.clone(),
            class_names: vec![],
        };
        let out = data.normalized(&split, &[0]);
        let (mean, std) = DatasetKind::Cifar10.normalization();
        for c in 0..3 {
            let want = ((51 * (c + 1)) as f32 / 255.0 - mean[c]) / std[c];
            assert!(out[c * 1024..(c + 1) * 1024].iter().all(|&v| v == want));
        }
    }

    #[test]
    fn every_dataset_has_ten_named_classes_and_statistics_per_channel() {
        for kind in DatasetKind::ALL {
            let (mean, std) = kind.normalization();
            assert_eq!(mean.len(), kind.image_dims()[0], "{}", kind.name());
            assert_eq!(std.len(), kind.image_dims()[0]);
            let names = kind.class_names();
            let mut unique = names.to_vec();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), 10, "{}", kind.name());
        }
    }
}
