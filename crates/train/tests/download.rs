//! Downloads against a local HTTP server on 127.0.0.1 (this machine has no internet): real
//! MNIST served from the shared folder and checked against torchvision's published MD5s, a
//! corrupt file (of the repository's MNIST slice) refused with nothing cached, and a CIFAR-10
//! archive this test writes in the official layout, unpacked into the cache.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cnnu_train::download::{DownloadError, Remote, fetch, md5_hex};
use cnnu_train::{DatasetKind, ImageDataset};

/// A one-thread HTTP/1.1 server answering `GET /name` from `files`, counting requests.
struct Server {
    base_url: String,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    requests: Arc<AtomicUsize>,
}

impl Server {
    fn start(files: HashMap<String, Vec<u8>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://{}/", listener.local_addr().unwrap());
        let files = Arc::new(Mutex::new(files));
        let requests = Arc::new(AtomicUsize::new(0));
        let (served, count) = (files.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let line = String::from_utf8_lossy(&request);
                let path = line.split_whitespace().nth(1).unwrap_or("/");
                let body = served.lock().unwrap().get(&path[1..]).cloned();
                let _ = match body {
                    Some(body) => stream
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .and_then(|_| stream.write_all(&body)),
                    None => stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ),
                };
            }
        });
        Server {
            base_url,
            files,
            requests,
        }
    }
}

/// The four MNIST files of `dir`, by name.
fn mnist_files(dir: &std::path::Path) -> HashMap<String, Vec<u8>> {
    let files = DatasetKind::Mnist.remote().files.iter();
    files
        .map(|(name, _)| (name.to_string(), std::fs::read(dir.join(name)).unwrap()))
        .collect()
}

#[test]
fn mnist_downloads_match_the_published_checksums_and_are_cached_once() {
    let mnist_dir = cnnu_fixtures::shared_or_skip!("data/mnist");
    let server = Server::start(mnist_files(&mnist_dir));
    let cache = tempfile::tempdir().unwrap();
    let published = DatasetKind::Mnist.remote();
    let remote = Remote {
        base_url: &server.base_url,
        ..published
    };
    let dir = fetch(DatasetKind::Mnist, cache.path(), &remote, &mut |_| {}).unwrap();
    assert_eq!(server.requests.load(Ordering::SeqCst), 4);
    let fetched = ImageDataset::read(DatasetKind::Mnist, &dir).unwrap();
    let local = ImageDataset::read(DatasetKind::Mnist, &mnist_dir).unwrap();
    assert_eq!(fetched.train, local.train);
    assert_eq!(fetched.test, local.test);
    // Cached: a second fetch asks the server nothing.
    fetch(DatasetKind::Mnist, cache.path(), &remote, &mut |_| {}).unwrap();
    assert_eq!(server.requests.load(Ordering::SeqCst), 4);
}

#[test]
fn a_corrupt_download_is_an_error_and_nothing_is_cached() {
    // The repository's slice, with its own checksums in place of the published ones.
    let good = mnist_files(&cnnu_fixtures::mnist_small());
    // In the published order, so that the corrupt file is the last one fetched.
    let sums: Vec<(&str, String)> = (DatasetKind::Mnist.remote().files.iter())
        .map(|(name, _)| (*name, md5_hex(&good[*name])))
        .collect();
    let sums: Vec<(&str, &str)> = sums.iter().map(|(n, s)| (*n, s.as_str())).collect();
    let mut files = good.clone();
    let labels = files.get_mut("t10k-labels-idx1-ubyte.gz").unwrap();
    let mid = labels.len() / 2;
    labels[mid] ^= 0xff;
    let server = Server::start(files);
    let cache = tempfile::tempdir().unwrap();
    let remote = Remote {
        base_url: &server.base_url,
        files: &sums,
        ..DatasetKind::Mnist.remote()
    };
    let err = fetch(DatasetKind::Mnist, cache.path(), &remote, &mut |_| {}).unwrap_err();
    assert!(matches!(err, DownloadError::Checksum { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("t10k-labels-idx1-ubyte.gz: checksum mismatch")
    );
    let dir = cache.path().join("mnist");
    assert!(!dir.join("t10k-labels-idx1-ubyte.gz").exists());
    assert!(!dir.join(".complete").exists());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("t10k-labels"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The server fixed, the next fetch completes and keeps the three good files.
    let requests = server.requests.load(Ordering::SeqCst);
    server.files.lock().unwrap().extend(good.clone());
    fetch(DatasetKind::Mnist, cache.path(), &remote, &mut |_| {}).unwrap();
    assert_eq!(server.requests.load(Ordering::SeqCst), requests + 1);

    // A missing file is an HTTP error naming its URL.
    let cache = tempfile::tempdir().unwrap();
    server.files.lock().unwrap().clear();
    let err = fetch(DatasetKind::Mnist, cache.path(), &remote, &mut |_| {}).unwrap_err();
    assert!(matches!(err, DownloadError::Http { .. }), "{err}");
    assert!(
        err.to_string().contains("train-images-idx3-ubyte.gz"),
        "{err}"
    );
}

/// `cifar-10-binary.tar.gz` in the official layout: `cifar-10-batches-bin/` holding the six
/// batches (4 records each here) and `batches.meta.txt`.
fn cifar_archive() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&inner).unwrap();
    let files = cnnu_train::cifar::TRAIN_FILES
        .into_iter()
        .chain([cnnu_train::cifar::TEST_FILE]);
    for file in files {
        let images: Vec<u8> = (0..4 * 3072).map(|i| (i % 253) as u8).collect();
        cnnu_train::cifar::write_batch(&inner.join(file), &images, &[3, 1, 4, 1]).unwrap();
    }
    let names = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n";
    std::fs::write(inner.join("batches.meta.txt"), names).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    {
        let mut tar = tar::Builder::new(&mut gz);
        tar.append_dir_all("cifar-10-batches-bin", &inner).unwrap();
        tar.finish().unwrap();
    }
    gz.finish().unwrap()
}

#[test]
fn the_cifar10_archive_is_checked_and_unpacked_into_the_cache() {
    let archive = cifar_archive();
    let md5 = md5_hex(&archive);
    let server = Server::start(HashMap::from([(
        "cifar-10-binary.tar.gz".to_string(),
        archive,
    )]));
    let files = [("cifar-10-binary.tar.gz", md5.as_str())];
    let remote = Remote {
        base_url: &server.base_url,
        files: &files,
        ..DatasetKind::Cifar10.remote()
    };
    let cache = tempfile::tempdir().unwrap();
    let dir = fetch(DatasetKind::Cifar10, cache.path(), &remote, &mut |_| {}).unwrap();
    let data = ImageDataset::read(DatasetKind::Cifar10, &dir).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (20, 4));
    assert_eq!(data.test.labels, vec![3, 1, 4, 1]);
    assert_eq!(data.class_names[0], "airplane");
}
