//! Every row of `docs/errors.md`, run through the `cnnu` binary: the bad input is built in a
//! temporary directory, and the command must exit with status 1 (not a panic's 101, not a
//! signal) and print exactly one error line, the last on stderr, containing the row's message
//! (progress lines written before the failure may precede it); nothing may mention a panic.
//!
//! The table in the docs *is* this test's table: a row without a setup here fails, and so
//! does a setup without a row, so the documentation cannot drift from what cnnu prints.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::Dtype;
use safetensors::tensor::TensorView;

fn mat_data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/analysis/tests/data/mat")
        .join(name)
        .display()
        .to_string()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A small deterministic generator, so every bad file is the same on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    fn unit(&mut self) -> f32 {
        self.next() as f32 / u32::MAX as f32
    }
}

const N: usize = 120;
const C: usize = 2;
const HW: usize = 3;

/// A valid snapshot as `cnnu train` writes one: `conv1` `[120, 2, 3, 3]` (f32, positive),
/// `labels` (six classes, 0..=5, 20 samples each) and an epoch in the metadata. `edit` may
/// change the activations or the layer's dtype before it is written.
fn snapshot(path: &Path, edit: impl FnOnce(&mut Vec<f32>) -> Dtype, with_labels: bool) {
    let mut rng = Lcg(7);
    let mut acts: Vec<f32> = (0..N * C * HW * HW).map(|_| 0.1 + rng.unit()).collect();
    let dtype = edit(&mut acts);
    let act_bytes: Vec<u8> = match dtype {
        Dtype::I32 => acts
            .iter()
            .flat_map(|&v| (v as i32).to_le_bytes())
            .collect(),
        _ => acts.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    let labels: Vec<u8> = (0..N as i64).flat_map(|i| (i % 6).to_le_bytes()).collect();
    let mut tensors = vec![(
        "conv1".to_string(),
        TensorView::new(dtype, vec![N, C, HW, HW], &act_bytes).unwrap(),
    )];
    if with_labels {
        tensors.push((
            "labels".to_string(),
            TensorView::new(Dtype::I64, vec![N], &labels).unwrap(),
        ));
    }
    let meta = HashMap::from([("epoch".to_string(), "1".to_string())]);
    fs::write(path, safetensors::serialize(tensors, Some(meta)).unwrap()).unwrap();
}

fn good_snapshot(path: &Path) {
    snapshot(path, |_| Dtype::F32, true);
}

/// A safetensors file whose header is `json`, followed by `data_len` zero bytes.
fn raw_safetensors(path: &Path, json: &str, data_len: usize) {
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(json.as_bytes());
    bytes.resize(bytes.len() + data_len, 0);
    fs::write(path, bytes).unwrap();
}

/// An MNIST directory: links to the repository's slice of the real files, except `broken`, written as given (raw
/// names take precedence over `.gz` in the reader, so a raw broken file shadows the link).
fn mnist_with(dir: &Path, broken: Option<(&str, Vec<u8>)>) -> PathBuf {
    let mnist = dir.join("mnist");
    fs::create_dir_all(&mnist).unwrap();
    for stem in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        let name = format!("{stem}.gz");
        let replaced = broken.as_ref().is_some_and(|(b, _)| b.starts_with(stem));
        if !replaced {
            std::os::unix::fs::symlink(cnnu_fixtures::mnist_small().join(&name), mnist.join(&name))
                .unwrap();
        }
    }
    if let Some((name, bytes)) = broken {
        fs::write(mnist.join(name), bytes).unwrap();
    }
    mnist
}

/// An idx label file: magic, count, labels.
fn idx_labels(magic: u32, count: u32, labels: &[u8]) -> Vec<u8> {
    let mut b = magic.to_be_bytes().to_vec();
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(labels);
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn train_args(data: &Path, out: &Path) -> Vec<String> {
    [
        "train",
        "--data-dir",
        &s(data),
        "--epochs",
        "0",
        "--probe-limit",
        "64",
        "--test-limit",
        "64",
        "--taps",
        "conv1",
        "--out",
        &s(out),
    ]
    .map(String::from)
    .to_vec()
}

/// The repository fixture's formula weights with `edit` applied to its tensors.
fn weights_with(path: &Path, edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>)) {
    let bytes = fs::read(&cnnu_fixtures::Parity::resnet18_formula().weights.path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, sh, b)| (n.clone(), TensorView::new(*d, sh.clone(), b).unwrap()))
        .collect();
    fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn probe_args(weights: &Path, out: &Path) -> Vec<String> {
    let input = cnnu_fixtures::repo("resnet18_formula/input.safetensors");
    [
        "probe",
        "--weights",
        &s(weights),
        "--input",
        &s(&input),
        "--taps",
        "conv1",
        "--out",
        &s(out),
    ]
    .map(String::from)
    .to_vec()
}

fn reduce(file: &Path, layer: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["reduce", "pca", &s(file), layer]
        .map(String::from)
        .to_vec();
    a.extend(extra.iter().map(|e| e.to_string()));
    a
}

/// Runs `cnnu args` inside a private mount namespace in which `mount_at` is a fresh tmpfs
/// with the given mount options (a tiny one stands in for a full disk, `ro` for a read-only
/// one). The namespace goes away with the process, so nothing is left mounted.
fn in_tmpfs(mount_at: &Path, options: &str, args: &[String]) -> Command {
    fs::create_dir_all(mount_at).unwrap();
    let mut c = Command::new("unshare");
    c.arg("-rm")
        .arg("sh")
        .arg("-c")
        .arg(r#"mount -t tmpfs -o "$1" tmpfs "$2" || exit 99; shift 2; exec "$@""#)
        .arg("sh")
        .arg(options)
        .arg(mount_at)
        .arg(env!("CARGO_BIN_EXE_cnnu"))
        .args(args);
    c
}

fn cnnu(args: Vec<String>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cnnu"));
    c.args(args);
    c
}

/// A CIFAR-10 directory of valid batches of 4 records each, under `dir/cifar`.
fn cifar_dir(dir: &Path) -> PathBuf {
    let root = dir.join("cifar");
    fs::create_dir_all(&root).unwrap();
    let files = cnnu::train::cifar::TRAIN_FILES
        .into_iter()
        .chain([cnnu::train::cifar::TEST_FILE]);
    for file in files {
        let images: Vec<u8> = (0..4 * 3072).map(|i| (i % 251) as u8).collect();
        cnnu::train::cifar::write_batch(&root.join(file), &images, &[0, 1, 2, 3]).unwrap();
    }
    root
}

fn cifar_train(data: &Path, out: &Path) -> Command {
    let mut args = train_args(data, out);
    args.extend(["--dataset".to_string(), "cifar10".to_string()]);
    cnnu(args)
}

/// A `.npy` file (format 1.0) with this header dict and data, written as numpy writes one.
fn npy_file(path: &Path, dict: &str, data: &[u8]) {
    fs::write(path, npy_bytes(dict, data)).unwrap();
}

/// A C-order float64 `.npy` file of `rows × cols` values from `value(i)`.
fn npy_f64(path: &Path, rows: usize, cols: usize, value: impl Fn(usize) -> f64) {
    let data: Vec<u8> = (0..rows * cols)
        .flat_map(|i| value(i).to_le_bytes())
        .collect();
    let dict = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    npy_file(path, &dict, &data);
}

/// `cnnu similarity A B EXTRA...`.
fn similarity(a: &Path, b: &Path, extra: &[&str]) -> Command {
    let mut args = vec!["similarity".to_string(), s(a), s(b)];
    args.extend(extra.iter().map(|e| e.to_string()));
    cnnu(args)
}

/// The Kornblith demo fixture's `name`.
fn kornblith(name: &str) -> PathBuf {
    cnnu_fixtures::repo("kornblith").join(name)
}

/// A file of a folder of activations from elsewhere: `conv1` f32 `[n, 3]`, `labels` (unless
/// `labels` is false), `indices` (when given) and `step` metadata (when given).
fn foreign_file(path: &Path, n: usize, labels: bool, indices: Option<&[i64]>, step: Option<u64>) {
    let acts: Vec<u8> = (0..n * 3).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let label_bytes: Vec<u8> = (0..n as i64).flat_map(|i| (i % 2).to_le_bytes()).collect();
    let index_bytes: Vec<u8> = indices
        .unwrap_or_default()
        .iter()
        .flat_map(|i| i.to_le_bytes())
        .collect();
    let mut tensors = vec![(
        "conv1",
        TensorView::new(Dtype::F32, vec![n, 3], &acts).unwrap(),
    )];
    if labels {
        tensors.push((
            "labels",
            TensorView::new(Dtype::I64, vec![n], &label_bytes).unwrap(),
        ));
    }
    if let Some(i) = indices {
        tensors.push((
            "indices",
            TensorView::new(Dtype::I64, vec![i.len()], &index_bytes).unwrap(),
        ));
    }
    let meta = step.map(|s| HashMap::from([("step".to_string(), s.to_string())]));
    fs::write(path, safetensors::serialize(tensors, meta).unwrap()).unwrap();
}

/// An `.npz` archive (stored entries, as `np.savez` writes) of `.npy` entries given by their
/// header dict and data.
fn npz_file(path: &Path, entries: &[(&str, &str, &[u8])]) {
    use std::io::Write as _;
    let mut zip = zip::ZipWriter::new(fs::File::create(path).unwrap());
    let stored =
        zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, dict, data) in entries {
        let npy = npy_bytes(dict, data);
        zip.start_file(format!("{name}.npy"), stored).unwrap();
        zip.write_all(&npy).unwrap();
    }
    zip.finish().unwrap();
}

/// `.npy` bytes (format 1.0) of a header dict and data.
fn npy_bytes(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut header = dict.to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    bytes
}

/// `cnnu analyze DIR` on the folder `dir/acts`, created empty.
fn analyze_foreign(dir: &Path, files: impl FnOnce(&Path)) -> Command {
    let acts = dir.join("acts");
    fs::create_dir_all(&acts).unwrap();
    files(&acts);
    cnnu(["analyze", &s(&acts)].map(String::from).to_vec())
}

/// Builds the bad input of row `id` under `dir` and returns the command that must fail.
fn setup(id: &str, dir: &Path) -> Option<Command> {
    let snap = dir.join("snap.safetensors");
    let out = dir.join("run");
    let train_on_broken =
        |name: &str, bytes: Vec<u8>| cnnu(train_args(&mnist_with(dir, Some((name, bytes))), &out));
    let reduce_good = |extra: &[&str]| {
        good_snapshot(&snap);
        cnnu(reduce(&snap, "conv1", extra))
    };
    let cmd = match id {
        // ---- idx files
        "idx-missing-dir" => cnnu(train_args(&dir.join("no-such-dir"), &out)),
        "idx-missing-file" => {
            let m = mnist_with(dir, None);
            fs::remove_file(m.join("t10k-labels-idx1-ubyte.gz")).unwrap();
            cnnu(train_args(&m, &out))
        }
        "idx-truncated" => {
            let labels = idx_labels(0x801, 10_000, &[1; 100]);
            train_on_broken("t10k-labels-idx1-ubyte", labels)
        }
        "idx-magic" => {
            let labels = idx_labels(0x803, 10_000, &[1; 10_000]);
            train_on_broken("t10k-labels-idx1-ubyte", labels)
        }
        "idx-count-mismatch" => {
            let labels = idx_labels(0x801, 1_999, &[1; 1_999]);
            train_on_broken("t10k-labels-idx1-ubyte", labels)
        }
        "idx-bad-label" => {
            // As many labels as the repository's MNIST slice has test images.
            let mut l = vec![3u8; 2_000];
            l[17] = 12;
            train_on_broken("t10k-labels-idx1-ubyte", idx_labels(0x801, 2_000, &l))
        }
        "idx-gzip-corrupt" => {
            let mut gz = gzip(&idx_labels(0x801, 10_000, &[1; 10_000]));
            let mid = gz.len() / 2;
            gz[mid..].iter_mut().for_each(|b| *b ^= 0x5a);
            train_on_broken("t10k-labels-idx1-ubyte.gz", gz)
        }
        // ---- CIFAR-10 binary files
        "cifar-missing-file" => {
            let c = cifar_dir(dir);
            fs::remove_file(c.join("test_batch.bin")).unwrap();
            cifar_train(&c, &out)
        }
        "cifar-size" => {
            let c = cifar_dir(dir);
            fs::write(c.join("data_batch_3.bin"), vec![0u8; 3000]).unwrap();
            cifar_train(&c, &out)
        }
        "cifar-bad-label" => {
            let c = cifar_dir(dir);
            let images = vec![0u8; 4 * 3072];
            cnnu::train::cifar::write_batch(&c.join("test_batch.bin"), &images, &[0, 1, 10, 3])
                .unwrap();
            cifar_train(&c, &out)
        }
        // ---- snapshots and other safetensors
        "snap-missing-file" => cnnu(reduce(&dir.join("nope.safetensors"), "conv1", &[])),
        "snap-empty" => {
            fs::write(&snap, b"").unwrap();
            cnnu(reduce(&snap, "conv1", &[]))
        }
        "snap-truncated" => {
            good_snapshot(&snap);
            let b = fs::read(&snap).unwrap();
            fs::write(&snap, &b[..b.len() / 2]).unwrap();
            cnnu(reduce(&snap, "conv1", &[]))
        }
        "snap-random-bytes" => {
            let mut rng = Lcg(99);
            let b: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
            fs::write(&snap, b).unwrap();
            cnnu(reduce(&snap, "conv1", &[]))
        }
        "snap-header-json" => {
            raw_safetensors(&snap, r#"{"conv1": {"dtype": "F32", "shape": [2, 3"#, 24);
            cnnu(reduce(&snap, "conv1", &[]))
        }
        "snap-offsets" => {
            raw_safetensors(
                &snap,
                r#"{"conv1":{"dtype":"F32","shape":[4,2],"data_offsets":[0,4096]}}"#,
                32,
            );
            cnnu(reduce(&snap, "conv1", &[]))
        }
        "snap-absurd-shape" => {
            raw_safetensors(
                &snap,
                r#"{"conv1":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,32]}}"#,
                32,
            );
            cnnu(reduce(&snap, "conv1", &[]))
        }
        "snap-dtype" => {
            snapshot(&snap, |_| Dtype::I32, true);
            cnnu(reduce(&snap, "conv1", &[]))
        }
        "snap-missing-tensor" => {
            good_snapshot(&snap);
            cnnu(reduce(&snap, "layer9", &[]))
        }
        "snap-missing-labels" => {
            snapshot(&snap, |_| Dtype::F32, false);
            cnnu(reduce(&snap, "conv1", &[]))
        }
        // ---- .mat files
        "mat-v73" => cnnu(reduce(Path::new(&mat_data("fake_v73.mat")), "conv1", &[])),
        "mat-v4" => cnnu(reduce(Path::new(&mat_data("v4.mat")), "conv1", &[])),
        // The file is cut inside its last variable, `sp`.
        "mat-truncated" => cnnu(reduce(Path::new(&mat_data("truncated.mat")), "sp", &[])),
        "mat-non-numeric" => cnnu(reduce(Path::new(&mat_data("acts.mat")), "cellvar", &[])),
        "mat-labels-length" => cnnu(reduce(Path::new(&mat_data("acts.mat")), "conv1", &[])),
        "mat-missing-variable" => cnnu(reduce(Path::new(&mat_data("acts.mat")), "relu", &[])),
        // ---- activation files of `cnnu similarity` (.npy, safetensors)
        "similarity-sample-mismatch" => {
            let b = dir.join("b.npy");
            npy_f64(&b, 50, 3, |i| (i % 7) as f64);
            similarity(&kornblith("x.npy"), &b, &[])
        }
        "similarity-two-floats" => {
            let xy = kornblith("xy.safetensors");
            similarity(&xy, &xy, &["--b-key", "y"])
        }
        "similarity-missing-key" => {
            let xy = kornblith("xy.safetensors");
            similarity(&xy, &xy, &["--a-key", "x", "--b-key", "z"])
        }
        "similarity-key-for-npy" => {
            similarity(&kornblith("x.npy"), &kornblith("y.npy"), &["--a-key", "x"])
        }
        "similarity-not-a-file" => similarity(&kornblith("x.npy"), dir, &[]),
        "similarity-constant" => {
            let b = dir.join("b.npy");
            npy_f64(&b, 100, 4, |_| 2.5);
            similarity(&kornblith("x.npy"), &b, &[])
        }
        "npy-dtype" => {
            let b = dir.join("b.npy");
            npy_file(
                &b,
                "{'descr': '<c16', 'fortran_order': False, 'shape': (100, 1), }",
                &[0; 1600],
            );
            similarity(&kornblith("x.npy"), &b, &[])
        }
        "npy-fortran" => {
            let b = dir.join("b.npy");
            npy_file(
                &b,
                "{'descr': '<f8', 'fortran_order': True, 'shape': (100, 2), }",
                &[0; 1600],
            );
            similarity(&kornblith("x.npy"), &b, &[])
        }
        "npy-truncated" => {
            let b = dir.join("b.npy");
            npy_file(
                &b,
                "{'descr': '<f8', 'fortran_order': False, 'shape': (100, 10), }",
                &[0; 800],
            );
            similarity(&kornblith("x.npy"), &b, &[])
        }
        "npy-not-npy" => {
            let b = dir.join("b.npy");
            fs::write(&b, "0.5,1.5\n2.5,3.5\n").unwrap();
            similarity(&kornblith("x.npy"), &b, &[])
        }
        "rbf-sigma-zero" => similarity(
            &kornblith("x.npy"),
            &kornblith("y.npy"),
            &["--rbf-sigma", "0"],
        ),
        "similarity-permutations" => similarity(
            &kornblith("x.npy"),
            &kornblith("y.npy"),
            &["--permutations", "9"],
        ),
        // ---- weights
        "weights-missing-key" => {
            let w = dir.join("w.safetensors");
            weights_with(&w, |t| t.retain(|(n, ..)| n != "fc.bias"));
            cnnu(probe_args(&w, &dir.join("o.safetensors")))
        }
        "weights-unexpected-key" => {
            let w = dir.join("w.safetensors");
            weights_with(&w, |t| {
                t.push(("fc2.weight".into(), Dtype::F32, vec![2], vec![0; 8]));
            });
            cnnu(probe_args(&w, &dir.join("o.safetensors")))
        }
        "weights-shape" => {
            let w = dir.join("w.safetensors");
            weights_with(&w, |t| {
                for (n, _, shape, data) in t.iter_mut() {
                    if n == "fc.bias" {
                        *shape = vec![5];
                        data.truncate(20);
                    }
                }
            });
            cnnu(probe_args(&w, &dir.join("o.safetensors")))
        }
        "weights-not-safetensors" => {
            let w = dir.join("w.safetensors");
            fs::write(&w, b"PK\x03\x04 this is a zip, not safetensors").unwrap();
            cnnu(probe_args(&w, &dir.join("o.safetensors")))
        }
        "backend-env-unknown" => {
            let w = dir.join("w.safetensors");
            weights_with(&w, |_| {});
            let mut c = cnnu(probe_args(&w, &dir.join("o.safetensors")));
            c.env(cnnu::model::BACKEND_ENV, "tpu");
            c
        }
        "init-weights-missing-key" => {
            let w = dir.join("w.safetensors");
            weights_with(&w, |t| t.retain(|(n, ..)| n != "fc.bias"));
            let mut a = train_args(&cnnu_fixtures::mnist_small(), &out);
            a.extend(["--init-weights".to_string(), s(&w)]);
            cnnu(a)
        }
        "export-no-epoch" => {
            let run = dir.join("run");
            fs::create_dir_all(&run).unwrap();
            let config = serde_json::json!({
                "train": serde_json::to_value(cnnu::train::TrainConfig::new()).unwrap(),
                "backend": "flex", "mnist": "test", "cnnu_version": "0",
            });
            fs::write(run.join("config.json"), config.to_string()).unwrap();
            cnnu(
                [
                    "export",
                    &s(&run),
                    "--epoch",
                    "7",
                    "--out",
                    &s(&dir.join("w.safetensors")),
                ]
                .map(String::from)
                .to_vec(),
            )
        }
        // ---- options
        "tap-unknown" => {
            let mut a = train_args(&cnnu_fixtures::mnist_small(), &out);
            let i = a.iter().position(|x| x == "--taps").unwrap();
            a[i + 1] = "layer1.0.conv9".into();
            cnnu(a)
        }
        "layer-unknown" => {
            let run = dir.join("run");
            fs::create_dir_all(run.join("snapshots")).unwrap();
            good_snapshot(&run.join("snapshots/epoch-000.safetensors"));
            cnnu(
                ["analyze", &s(&run), "--layers", "conv1,layer9"]
                    .map(String::from)
                    .to_vec(),
            )
        }
        "energy-zero" => reduce_good(&["--energy", "0"]),
        "energy-above-one" => reduce_good(&["--energy", "1.5"]),
        "min-cluster-size-below-2" => reduce_good(&["--min-cluster-size", "1"]),
        "min-cluster-size-above-n" => reduce_good(&["--min-cluster-size", "500"]),
        "all-features-filtered" => reduce_good(&["--act-threshold", "1e9"]),
        "filter-class-empty" => reduce_good(&["--filter-class", "7"]),
        "activations-nan" => {
            snapshot(
                &snap,
                |a| {
                    a[5 * C * HW * HW + 4] = f32::NAN;
                    Dtype::F32
                },
                true,
            );
            cnnu(reduce(&snap, "conv1", &["--filter-class", "all"]))
        }
        "activations-inf" => {
            snapshot(
                &snap,
                |a| {
                    a[7 * C * HW * HW + 2] = f32::INFINITY;
                    Dtype::F32
                },
                true,
            );
            cnnu(reduce(&snap, "conv1", &[]))
        }
        "sample-at-past-end" => {
            let mut args = train_args(&cnnu_fixtures::mnist_small(), &out);
            args.extend(["--sample-at", "5"].map(String::from));
            cnnu(args)
        }
        "snapshot-format-newer" => {
            fs::create_dir_all(out.join("snapshots")).unwrap();
            let labels: Vec<u8> = [0i64, 1].iter().flat_map(|l| l.to_le_bytes()).collect();
            let view = TensorView::new(Dtype::I64, vec![2], &labels).unwrap();
            let meta = HashMap::from([
                ("format".to_string(), "cnnu-snapshot-9".to_string()),
                ("epoch".to_string(), "0".to_string()),
            ]);
            let bytes = safetensors::tensor::serialize([("labels", view)], Some(meta)).unwrap();
            fs::write(out.join("snapshots/epoch-000.safetensors"), bytes).unwrap();
            cnnu(["analyze", &s(&out)].map(String::from).to_vec())
        }
        "analyze-no-snapshots" => {
            fs::create_dir_all(&out).unwrap();
            cnnu(["analyze", &s(&out)].map(String::from).to_vec())
        }
        // ---- folders of activations from elsewhere
        "foreign-no-files" => analyze_foreign(dir, |d| {
            fs::write(d.join("notes.txt"), "no activations here").unwrap();
        }),
        "foreign-sample-count" => analyze_foreign(dir, |d| {
            foreign_file(&d.join("step-0.safetensors"), 100, true, None, None);
            foreign_file(&d.join("step-10.safetensors"), 50, true, None, None);
        }),
        "foreign-indices" => analyze_foreign(dir, |d| {
            let same: Vec<i64> = (0..100).collect();
            let other: Vec<i64> = (0..100).rev().collect();
            foreign_file(&d.join("step-0.safetensors"), 100, true, Some(&same), None);
            foreign_file(
                &d.join("step-10.safetensors"),
                100,
                true,
                Some(&other),
                None,
            );
        }),
        "foreign-no-labels" => analyze_foreign(dir, |d| {
            foreign_file(&d.join("step-0.safetensors"), 100, false, None, None);
        }),
        "foreign-no-step" => analyze_foreign(dir, |d| {
            foreign_file(&d.join("final.safetensors"), 100, true, None, None);
        }),
        "foreign-duplicate-step" => analyze_foreign(dir, |d| {
            foreign_file(&d.join("a.safetensors"), 100, true, None, Some(5));
            foreign_file(&d.join("step-5.safetensors"), 100, true, None, None);
        }),
        "foreign-npz-not-zip" => analyze_foreign(dir, |d| {
            fs::write(d.join("step-0.npz"), b"PK but not a zip archive").unwrap();
        }),
        "foreign-npz-object" => analyze_foreign(dir, |d| {
            let labels: Vec<u8> = (0..4i64).flat_map(|i| i.to_le_bytes()).collect();
            npz_file(
                &d.join("step-0.npz"),
                &[
                    (
                        "labels",
                        "{'descr': '<i8', 'fortran_order': False, 'shape': (4,), }",
                        &labels,
                    ),
                    (
                        "conv1",
                        "{'descr': '|O', 'fortran_order': False, 'shape': (4,), }",
                        b"pickle",
                    ),
                ],
            );
        }),
        "out-not-a-directory" => {
            let file = dir.join("a-file");
            fs::write(&file, b"x").unwrap();
            cnnu(train_args(&cnnu_fixtures::mnist_small(), &file.join("run")))
        }
        "out-read-only" => {
            good_snapshot(&snap);
            let ro = dir.join("ro");
            let args = reduce(&snap, "conv1", &["--out", &s(&ro.join("plots"))]);
            in_tmpfs(&ro, "ro,size=1m", &args)
        }
        "disk-full-snapshot" => {
            let small = dir.join("small");
            let args = train_args(&cnnu_fixtures::mnist_small(), &small.join("run"));
            // config.json fits in 256 KiB, the 64-image conv1 snapshot (3.2 MB) does not.
            in_tmpfs(&small, "size=256k", &args)
        }
        "disk-full-analysis" => {
            let run = dir.join("run");
            fs::create_dir_all(run.join("snapshots")).unwrap();
            good_snapshot(&run.join("snapshots/epoch-000.safetensors"));
            let args = ["analyze", &s(&run), "--min-cluster-size", "5"]
                .map(String::from)
                .to_vec();
            // The summary fits in 16 KiB, the plots do not.
            in_tmpfs(&run.join("analysis"), "size=16k", &args)
        }
        _ => return None,
    };
    Some(cmd)
}

/// Rows of the table in docs/errors.md: `(id, message fragment)`.
fn documented_rows() -> Vec<(String, String)> {
    let doc = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/errors.md"))
        .expect("docs/errors.md exists");
    // Every line of the table after its separator is a row, and must have an id.
    doc.lines()
        .skip_while(|l| !l.starts_with("| ---"))
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .inspect(|l| assert!(l.starts_with("| `"), "a row without a `code` id: {l}"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            // Cells are code spans, doubled (`` a `b` c ``) where the text has backticks; a
            // pipe inside one is escaped (`\|`), as GitHub's tables need.
            let unquote = |c: &str| c.trim().trim_matches('`').trim().replace("\\|", "|");
            (unquote(cells[0]), unquote(cells[cells.len() - 1]))
        })
        .collect()
}

fn check(id: &str, fragment: &str, out: &Output) -> Result<(), String> {
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    let problem = if out.status.code() == Some(99) {
        Some("could not mount the test's tmpfs (unshare/mount unavailable)".to_string())
    } else if out.status.code() != Some(1) {
        Some(format!("exit status {:?}, expected 1", out.status))
    } else if err.contains("panicked") || err.contains("RUST_BACKTRACE") {
        Some("panicked".into())
    } else if lines.iter().filter(|l| l.starts_with("error")).count() != 1
        || !lines.last().is_some_and(|l| l.starts_with("error: "))
    {
        Some("expected exactly one `error: ` line, the last on stderr".into())
    } else if !lines.last().is_some_and(|l| l.contains(fragment)) {
        Some(format!("message lacks `{fragment}`"))
    } else {
        None
    };
    match problem {
        Some(p) => Err(format!("{id}: {p}\n  stderr: {err}")),
        None => Ok(()),
    }
}

#[test]
fn every_documented_error_is_one_line_and_says_what_the_docs_say() {
    let rows = documented_rows();
    assert!(
        rows.len() >= 40,
        "docs/errors.md lists only {} rows",
        rows.len()
    );
    let mut failures = Vec::new();
    for (id, fragment) in &rows {
        let dir = tempfile::tempdir().unwrap();
        let Some(mut cmd) = setup(id, dir.path()) else {
            failures.push(format!(
                "{id}: documented but has no setup in tests/errors.rs"
            ));
            continue;
        };
        let out = cmd.output().expect("the command starts");
        if let Err(e) = check(id, fragment, &out) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_setup_is_documented() {
    let documented: Vec<String> = documented_rows().into_iter().map(|(id, _)| id).collect();
    let source = include_str!("errors.rs");
    let mut missing = Vec::new();
    for line in source.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix('"')
            && let Some((id, tail)) = rest.split_once('"')
            && tail.trim_start().starts_with("=>")
            && !documented.iter().any(|d| d == id)
        {
            missing.push(id.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "set up but not in docs/errors.md: {missing:?}"
    );
}
