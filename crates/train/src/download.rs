//! Downloads for users with a network: every dataset's files fetched over HTTP(S) with one
//! client (ureq), each checked against the checksum its publisher gives (MD5, as torchvision
//! lists them), into a cache directory. A file is written beside its final name and renamed
//! only once its checksum matches, so a cut or corrupt download never looks cached.

use cnnu_run::IoError;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::dataset::DatasetKind;

/// No dataset file is larger (CIFAR-10's archive is 163 MB); a longer body is not the file.
const MAX_DOWNLOAD: u64 = 256 << 20;

/// Where a dataset's files are published and what they must hash to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote<'a> {
    /// The URL the file names are appended to (ends in `/`).
    pub base_url: &'a str,
    /// `(file name, MD5 hex)` of every file to fetch.
    pub files: &'a [(&'a str, &'a str)],
    /// For an archive: the folder inside it that holds the dataset's files.
    pub archive_dir: Option<&'a str>,
}

const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

impl DatasetKind {
    /// Where its files are published (torchvision's mirrors and checksums).
    pub fn remote(self) -> Remote<'static> {
        let idx = |base_url, files| Remote {
            base_url,
            files,
            archive_dir: None,
        };
        match self {
            DatasetKind::Mnist => idx(
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                &MNIST_PAIRS,
            ),
            DatasetKind::FashionMnist => idx(
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                &FASHION_PAIRS,
            ),
            DatasetKind::Kmnist => idx(
                "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
                &KMNIST_PAIRS,
            ),
            DatasetKind::Cifar10 => Remote {
                base_url: "https://www.cs.toronto.edu/~kriz/",
                files: &[("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530")],
                archive_dir: Some("cifar-10-batches-bin"),
            },
        }
    }
}

const MNIST_MD5: [&str; 4] = [
    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "d53e105ee54ea40749a09fcbcd1e9432",
    "9fb629c4189551a2d022fa330f9573f3",
    "ec29112dd5afa0611ce80d1b7f02629c",
];
const FASHION_MD5: [&str; 4] = [
    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "25c81989df183df01b3e8a0aad5dffbe",
    "bef4ecab320f06d8554ea6380940ec79",
    "bb300cfdad3c16e7a12a480ee83cd310",
];
const KMNIST_MD5: [&str; 4] = [
    "bdb82020997e1d708af4cf47b453dcf7",
    "e144d726b3acfaa3e44228e80efcd344",
    "5c965bf0a639b31b8f53240b1b52f4d7",
    "7320c461ea6c1c855c0b718fb2a4b134",
];
/// The idx file names with their MD5s, in the same order.
const fn pairs(md5: [&'static str; 4]) -> [(&'static str, &'static str); 4] {
    [
        (MNIST_FILES[0], md5[0]),
        (MNIST_FILES[1], md5[1]),
        (MNIST_FILES[2], md5[2]),
        (MNIST_FILES[3], md5[3]),
    ]
}
const MNIST_PAIRS: [(&str, &str); 4] = pairs(MNIST_MD5);
const FASHION_PAIRS: [(&str, &str); 4] = pairs(FASHION_MD5);
const KMNIST_PAIRS: [(&str, &str); 4] = pairs(KMNIST_MD5);

/// What went wrong while downloading.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// This build cannot download.
    #[error("cnnu was built without the `download` feature; pass --data-dir")]
    Disabled,
    /// The system has no cache directory and `CNNU_CACHE_DIR` is unset.
    #[error("no cache directory on this system: set CNNU_CACHE_DIR or pass --data-dir")]
    NoCache,
    /// The request failed.
    #[error("{url}: download failed: {problem}")]
    Http {
        /// What was fetched.
        url: String,
        /// Why it failed.
        problem: String,
    },
    /// The file arrived but is not the published one.
    #[error("{url}: checksum mismatch: MD5 {got}, published {expected}; nothing was cached")]
    Checksum {
        /// What was fetched.
        url: String,
        /// The published MD5.
        expected: String,
        /// What arrived.
        got: String,
    },
    /// The cache could not be written.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The archive does not hold what it should.
    #[error("{path}: {problem}")]
    Archive {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// The cache root: `CNNU_CACHE_DIR`, else the system's cache directory + `cnnu`.
pub fn cache_root() -> Result<PathBuf, DownloadError> {
    match std::env::var_os("CNNU_CACHE_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => system_cache().map(|d| d.join("cnnu")),
    }
}

#[cfg(feature = "download")]
fn system_cache() -> Result<PathBuf, DownloadError> {
    dirs::cache_dir().ok_or(DownloadError::NoCache)
}

#[cfg(not(feature = "download"))]
fn system_cache() -> Result<PathBuf, DownloadError> {
    Err(DownloadError::Disabled)
}

/// The directory under `cache` holding `kind`'s files, downloading from `remote` (normally
/// [`DatasetKind::remote`]) what is missing; `downloading` hears each URL before it is
/// fetched. Returns at once when everything is cached.
pub fn fetch(
    kind: DatasetKind,
    cache: &Path,
    remote: &Remote,
    downloading: &mut dyn FnMut(&str),
) -> Result<PathBuf, DownloadError> {
    let dir = cache.join(kind.name());
    let ready = dir.join(".complete");
    if ready.is_file() {
        return Ok(dir);
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DownloadError::Io(IoError { path, source })
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    for &(name, md5) in remote.files {
        let path = dir.join(name);
        if !path.is_file() {
            let url = format!("{}{name}", remote.base_url);
            downloading(&url);
            get_checked(&url, md5, &path)?;
        }
        if let Some(inner) = remote.archive_dir {
            extract(&path, inner, &dir)?;
        }
    }
    cnnu_run::atomic::write_atomic(&ready, b"").map_err(io(&ready))?;
    Ok(dir)
}

/// `url` into `path`, renamed there only when its MD5 is `md5`.
fn get_checked(url: &str, md5: &str, path: &Path) -> Result<(), DownloadError> {
    let bytes = get(url)?;
    let got = md5_hex(&bytes);
    if got != md5 {
        return Err(DownloadError::Checksum {
            url: url.to_string(),
            expected: md5.to_string(),
            got,
        });
    }
    cnnu_run::atomic::write_atomic(path, &bytes).map_err(|source| {
        DownloadError::Io(IoError {
            path: path.to_path_buf(),
            source,
        })
    })
}

#[cfg(feature = "download")]
fn get(url: &str) -> Result<Vec<u8>, DownloadError> {
    let http = |problem: String| DownloadError::Http {
        url: url.to_string(),
        problem,
    };
    let mut response = ureq::get(url).call().map_err(|e| http(e.to_string()))?;
    let mut bytes = Vec::new();
    response
        .body_mut()
        .with_config()
        .limit(MAX_DOWNLOAD)
        .reader()
        .read_to_end(&mut bytes)
        .map_err(|e| http(e.to_string()))?;
    Ok(bytes)
}

#[cfg(not(feature = "download"))]
fn get(_url: &str) -> Result<Vec<u8>, DownloadError> {
    Err(DownloadError::Disabled)
}

/// The MD5 of `bytes` in lower-case hex.
#[cfg(feature = "download")]
pub fn md5_hex(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(not(feature = "download"))]
pub fn md5_hex(_bytes: &[u8]) -> String {
    String::new()
}

/// The files under `inner/` of a `.tar.gz`, written flat into `dir`.
#[cfg(feature = "download")]
fn extract(archive: &Path, inner: &str, dir: &Path) -> Result<(), DownloadError> {
    let bad = |problem: String| DownloadError::Archive {
        path: archive.to_path_buf(),
        problem,
    };
    let file = std::fs::File::open(archive).map_err(|e| bad(e.to_string()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut found = 0;
    for entry in tar.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let (Ok(rest), true) = (
            path.strip_prefix(inner),
            entry.header().entry_type().is_file(),
        ) else {
            continue;
        };
        // Only plain names directly inside `inner`: nothing can be written outside `dir`.
        let Some(name) = rest
            .to_str()
            .filter(|n| !n.contains(['/', '\\']) && !n.starts_with('.'))
        else {
            continue;
        };
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| bad(e.to_string()))?;
        let out = dir.join(name);
        cnnu_run::atomic::write_atomic(&out, &bytes)
            .map_err(|source| DownloadError::Io(IoError { path: out, source }))?;
        found += 1;
    }
    if found == 0 {
        return Err(bad(format!("no files under {inner}/")));
    }
    Ok(())
}

#[cfg(not(feature = "download"))]
fn extract(_archive: &Path, _inner: &str, _dir: &Path) -> Result<(), DownloadError> {
    Err(DownloadError::Disabled)
}
