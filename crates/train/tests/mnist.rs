//! MNIST reading against real files — the repository's slice (the first 2000 training and test
//! images) always, the full set in the shared folder when it is there — and one typed error per
//! way an idx file can be broken.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use cnnu_train::dataset::stratified_subset;
use cnnu_train::idx::{IdxError, Split, read_split};
use cnnu_train::{DatasetError, DatasetKind, ImageDataset};

/// Both splits of the MNIST files in `dir`.
fn read_mnist(dir: &Path) -> Result<ImageDataset, DatasetError> {
    ImageDataset::read(DatasetKind::Mnist, dir)
}

fn mnist_dir() -> PathBuf {
    cnnu_fixtures::mnist_small()
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// A directory holding the test split's two files as given bytes (raw, not gzipped).
fn test_split_dir(images: &[u8], labels: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), images).unwrap();
    std::fs::write(dir.path().join("t10k-labels-idx1-ubyte"), labels).unwrap();
    dir
}

fn real_test_files() -> (Vec<u8>, Vec<u8>) {
    (
        gunzip(&mnist_dir().join("t10k-images-idx3-ubyte.gz")),
        gunzip(&mnist_dir().join("t10k-labels-idx1-ubyte.gz")),
    )
}

#[test]
fn reads_the_repository_slice() {
    let m = read_mnist(&mnist_dir()).unwrap();
    assert_eq!((m.train.len(), m.test.len()), (2000, 2000));
    assert_eq!(m.train.images.len(), 2000 * 784);
    assert_eq!(&m.train.labels[..5], &[5, 0, 4, 1, 9]);
    assert_eq!(&m.test.labels[..8], &[7, 2, 1, 0, 4, 1, 4, 9]);
    // The slice is the official files' first images, bit for bit.
    let shared = cnnu_fixtures::shared_dir().map(|d| d.join("data/mnist"));
    if let Some(full) = shared.filter(|d| d.is_dir()) {
        let full = read_mnist(&full).unwrap();
        assert_eq!(m.train.images[..], full.train.images[..2000 * 784]);
        assert_eq!(m.test.labels[..], full.test.labels[..2000]);
    }
}

#[test]
fn reads_the_official_files() {
    let dir = cnnu_fixtures::shared_or_skip!("data/mnist");
    let m = read_mnist(&dir).unwrap();
    assert_eq!((m.train.len(), m.test.len()), (60_000, 10_000));
    assert_eq!(m.train.images.len(), 60_000 * 784);
    assert_eq!(&m.train.labels[..5], &[5, 0, 4, 1, 9]);
    assert_eq!(&m.test.labels[..8], &[7, 2, 1, 0, 4, 1, 4, 9]);
    let mut counts = [0usize; 10];
    m.train.labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(
        counts,
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
}

#[test]
fn normalisation_is_torchvisions_bit_for_bit() {
    // The parity fixture's input is torchvision's ToTensor + Normalize of the first 8 test images.
    let input = cnnu_fixtures::repo("resnet18_formula/input.safetensors");
    let bytes = std::fs::read(input).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let torch: Vec<f32> = st
        .tensor("input")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let mnist = read_mnist(&mnist_dir()).unwrap();
    let ours = mnist.normalized(&mnist.test, &(0..8).collect::<Vec<_>>());
    assert_eq!(ours.len(), torch.len());
    assert!(
        ours.iter()
            .zip(&torch)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
}

#[test]
fn raw_files_read_like_gzipped_ones() {
    let (images, labels) = real_test_files();
    let dir = test_split_dir(&images, &labels);
    let raw = read_split(dir.path(), Split::Test).unwrap();
    let gz = read_split(&mnist_dir(), Split::Test).unwrap();
    assert_eq!(raw, gz);
}

fn error_for(images: &[u8], labels: &[u8]) -> String {
    let dir = test_split_dir(images, labels);
    let err = read_split(dir.path(), Split::Test).unwrap_err();
    err.to_string()
}

#[test]
fn broken_files_give_errors_that_name_the_file() {
    let (images, labels) = real_test_files();

    let err = error_for(&images[..images.len() - 100], &labels);
    assert!(err.contains("t10k-images-idx3-ubyte: truncated"), "{err}");
    let err = error_for(&images[..10], &labels);
    assert!(err.contains("truncated"), "{err}");

    let mut bad = images.clone();
    bad[3] = 0x01;
    let err = error_for(&bad, &labels);
    assert!(
        err.contains("t10k-images-idx3-ubyte: wrong magic number 0x00000801"),
        "{err}"
    );

    let mut extra = labels.clone();
    extra.push(3);
    let err = error_for(&images, &extra);
    assert!(
        err.contains("t10k-labels-idx1-ubyte") && err.contains("1 unexpected bytes"),
        "{err}"
    );

    // A header that claims 1999 labels with 1999 present: consistent, but not the image count.
    let mut fewer = labels[..labels.len() - 1].to_vec();
    fewer[4..8].copy_from_slice(&1999u32.to_be_bytes());
    let err = error_for(&images, &fewer);
    assert!(
        err.contains("2000 images but") && err.contains("1999 labels"),
        "{err}"
    );

    // A header promising four billion images is refused without allocating for them.
    let mut huge = images[..16].to_vec();
    huge[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    let err = error_for(&huge, &labels);
    assert!(err.contains("truncated: header promises"), "{err}");

    let mut bad_label = labels.clone();
    bad_label[8 + 17] = 12;
    let err = error_for(&images, &bad_label);
    assert!(err.contains("label 12 at index 17"), "{err}");
}

#[test]
fn corrupt_gzip_and_missing_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut gz = std::fs::read(mnist_dir().join("t10k-images-idx3-ubyte.gz")).unwrap();
    let mid = gz.len() / 2;
    gz[mid..mid + 64].iter_mut().for_each(|b| *b ^= 0x5a);
    std::fs::File::create(dir.path().join("t10k-images-idx3-ubyte.gz"))
        .unwrap()
        .write_all(&gz)
        .unwrap();
    std::fs::copy(
        mnist_dir().join("t10k-labels-idx1-ubyte.gz"),
        dir.path().join("t10k-labels-idx1-ubyte.gz"),
    )
    .unwrap();
    let err = read_split(dir.path(), Split::Test).unwrap_err();
    assert!(matches!(err, IdxError::BadGzip { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("t10k-images-idx3-ubyte.gz: bad gzip data"),
        "{err}"
    );

    let err = read_split(dir.path(), Split::Train)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("neither train-images-idx3-ubyte nor train-images-idx3-ubyte.gz"),
        "{err}"
    );
    let err = read_mnist(Path::new("/no/such/mnist"))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "/no/such/mnist: MNIST directory not found");
}

#[test]
fn stratified_subsets_of_the_slice_keep_class_proportions() {
    let train = read_split(&mnist_dir(), Split::Train).unwrap();
    for n in [10, 96, 500, 1999] {
        let subset = stratified_subset(&train.labels, n);
        assert_eq!(subset.len(), n);
        assert!(subset.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
        let mut counts = [0usize; 10];
        let mut freq = [0usize; 10];
        subset
            .iter()
            .for_each(|&i| counts[train.labels[i] as usize] += 1);
        train.labels.iter().for_each(|&l| freq[l as usize] += 1);
        // Largest remainders: each class gets the floor or the ceiling of its share.
        for c in 0..10 {
            let share = n as f64 * freq[c] as f64 / 2000.0;
            assert!(counts[c] as f64 >= share.floor() && counts[c] as f64 <= share.ceil());
        }
    }
}

#[test]
fn stratified_subsets_keep_class_proportions_and_are_deterministic() {
    let dir = cnnu_fixtures::shared_or_skip!("data/mnist");
    let train = read_split(&dir, Split::Train).unwrap();
    let subset = stratified_subset(&train.labels, 1000);
    assert_eq!(subset.len(), 1000);
    assert!(subset.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
    assert_eq!(subset, stratified_subset(&train.labels, 1000));
    let mut counts = [0usize; 10];
    subset
        .iter()
        .for_each(|&i| counts[train.labels[i] as usize] += 1);
    // Shares of 1000 by class frequency: 98.72, 112.37, 99.30, 102.18, 97.37, 90.35, 98.63,
    // 104.42, 97.52, 99.15. Floors sum to 996; the four largest remainders (digits 0, 6, 8, 7)
    // get one more each.
    assert_eq!(counts, [99, 112, 99, 102, 97, 90, 99, 105, 98, 99]);
}
