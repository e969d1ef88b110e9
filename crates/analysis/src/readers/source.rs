//! Where activations come from: a cnnu snapshot (safetensors) or a MATLAB v5 `.mat` file like
//! the original project's. Either way one layer is read as a row-major `[N, D]` matrix with
//! its labels, and nothing else of the file is loaded. What is read splits into the
//! representation the numerics take ([`Representation`]: matrix, labels, class names) and its
//! [`Provenance`] (file, layer, per-sample shape, epoch, step).

use std::fs::File;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::numerics::matrix::{Matrix, MatrixError, Representation};
use crate::readers::mat::{self, MatError};
use cnnu_run::IoError;

/// Tensors of a snapshot that are bookkeeping, not layers.
const NOT_LAYERS: [&str; 3] = cnnu_run::sample::RESERVED;

/// One layer's activations on N samples: the representation and where it came from.
#[derive(Debug, Clone)]
pub struct Activations {
    /// `[N, D]` features (each sample's flattened in C order, numpy's `reshape`), the true
    /// class of every sample, and the class names when the file records them.
    pub representation: Representation,
    /// Where it was read from.
    pub provenance: Provenance,
}

/// Where a representation was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    /// The file read.
    pub source: PathBuf,
    /// The layer (tap or variable) name.
    pub layer: String,
    /// Per-sample shape (`[C, H, W]` or `[F]`); D is its product.
    pub sample_shape: Vec<usize>,
    /// Whole epochs completed, when the file is a cnnu snapshot.
    pub epoch: Option<usize>,
    /// Optimizer steps done, when the file is a cnnu snapshot that records them.
    pub step: Option<u64>,
}

impl Activations {
    /// Samples.
    pub fn n(&self) -> usize {
        self.representation.n()
    }

    /// Features per sample.
    pub fn d(&self) -> usize {
        self.representation.d()
    }
}

/// What a reader found before it is checked: `[N, D]` values, labels, provenance.
struct Raw {
    n: usize,
    sample_shape: Vec<usize>,
    data: Vec<f32>,
    labels: Vec<i64>,
    epoch: Option<usize>,
    step: Option<u64>,
    class_names: Option<Vec<String>>,
}

/// Errors from reading activations.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A snapshot in a format this cnnu does not read.
    #[error(transparent)]
    Format(#[from] cnnu_run::SnapshotFormatError),
    /// The file cannot be opened or mapped.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The file is not valid safetensors (truncated, bad header, offsets outside the file).
    #[error("{path}: not a valid snapshot: {problem}")]
    Snapshot {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        problem: String,
    },
    /// A MAT-file problem.
    #[error(transparent)]
    Mat(#[from] MatError),
    /// The layer is not in the file.
    #[error("{path}: no layer `{layer}`; layers present: {}", present.join(", "))]
    MissingLayer {
        /// The file.
        path: PathBuf,
        /// The layer asked for.
        layer: String,
        /// What the file has.
        present: Vec<String>,
    },
    /// A tensor of the wrong type or shape.
    #[error("{path}: `{name}`: {problem}")]
    BadTensor {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// The values are not a usable matrix (no samples, or a NaN or infinite value).
    #[error("{path}: {layer}: {source}")]
    Matrix {
        /// The file.
        path: PathBuf,
        /// The layer.
        layer: String,
        /// Why.
        #[source]
        source: MatrixError,
    },
    /// Labels and activations disagree on N.
    #[error("{path}: {n_labels} labels for {n} samples of `{layer}`")]
    LabelCount {
        /// The file.
        path: PathBuf,
        /// The layer.
        layer: String,
        /// Samples.
        n: usize,
        /// Labels.
        n_labels: usize,
    },
}

/// Whether `path` is a MATLAB file (by extension).
fn is_mat(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("mat"))
}

/// The layers a file holds, in file order for snapshots (forward order) and MAT files.
pub fn layers(path: &Path, labels_var: &str) -> Result<Vec<String>, SourceError> {
    if is_mat(path) {
        return Ok(mat::list_variables(path)?
            .into_iter()
            .map(|v| v.name)
            .filter(|n| n != labels_var)
            .collect());
    }
    let map = map_file(path)?;
    let st = parse(path, &map)?;
    Ok(snapshot_layers(&st, &map))
}

/// Reads one layer and the labels, checked: one label per sample, at least one sample and one
/// feature, every value finite.
pub fn load(path: &Path, layer: &str, labels_var: &str) -> Result<Activations, SourceError> {
    let acts = if is_mat(path) {
        load_mat(path, layer, labels_var)?
    } else {
        load_snapshot(path, layer, labels_var)?
    };
    if acts.labels.len() != acts.n {
        return Err(SourceError::LabelCount {
            path: path.to_path_buf(),
            layer: layer.to_string(),
            n: acts.n,
            n_labels: acts.labels.len(),
        });
    }
    // N = 0 hides any per-sample shape from the element count; D must still fit usize.
    if acts
        .sample_shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .is_none()
    {
        return Err(SourceError::BadTensor {
            path: path.to_path_buf(),
            name: layer.to_string(),
            problem: format!(
                "per-sample shape {:?} has more values than fit in usize",
                acts.sample_shape
            ),
        });
    }
    let matrix_err = |source| SourceError::Matrix {
        path: path.to_path_buf(),
        layer: layer.to_string(),
        source,
    };
    let d = acts.sample_shape.iter().product();
    let features = Matrix::new(acts.data, acts.n, d).map_err(matrix_err)?;
    let representation = Representation::new(features, acts.labels)
        .map_err(matrix_err)?
        .with_class_names(acts.class_names);
    Ok(Activations {
        representation,
        provenance: Provenance {
            source: path.to_path_buf(),
            layer: layer.to_string(),
            sample_shape: acts.sample_shape,
            epoch: acts.epoch,
            step: acts.step,
        },
    })
}

fn load_mat(path: &Path, layer: &str, labels_var: &str) -> Result<Raw, SourceError> {
    let array = mat::read_variable(path, layer)?;
    let labels = mat::read_labels(path, labels_var)?;
    let (n, sample_shape) = match array.dims.split_first() {
        Some((&n, rest)) if !rest.is_empty() => (n, rest.to_vec()),
        _ => {
            return Err(SourceError::BadTensor {
                path: path.to_path_buf(),
                name: layer.to_string(),
                problem: format!("shape {:?} is not [N, D] or [N, C, H, W]", array.dims),
            });
        }
    };
    Ok(Raw {
        n,
        sample_shape,
        data: array.data,
        labels,
        epoch: None,
        step: None,
        class_names: None,
    })
}

/// Maps a safetensors file (a snapshot, or the arrays `cnnu similarity` reads) for reading.
#[allow(unsafe_code)] // the memory map below
pub(crate) fn map_file(path: &Path) -> Result<memmap2::Mmap, IoError> {
    let io = IoError::at(path);
    let file = File::open(path).map_err(io)?;
    // Mapping, not reading: only the pages of the one tensor asked for are touched, so a
    // multi-GB snapshot costs the size of one layer. The file is a finished snapshot that
    // nothing rewrites in place (cnnu replaces files by rename), which is what makes the map
    // safe to read.
    unsafe { memmap2::Mmap::map(&file) }.map_err(io)
}

fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>, SourceError> {
    SafeTensors::deserialize(bytes).map_err(|e| SourceError::Snapshot {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })
}

fn snapshot_layers(st: &SafeTensors<'_>, bytes: &[u8]) -> Vec<String> {
    // Forward order is the order of the data offsets, which the writer follows.
    let mut named: Vec<(usize, String)> = st
        .tensors()
        .into_iter()
        .filter(|(name, _)| !NOT_LAYERS.contains(&name.as_str()))
        .map(|(name, view)| {
            (
                view.data().as_ptr() as usize - bytes.as_ptr() as usize,
                name,
            )
        })
        .collect();
    named.sort();
    named.into_iter().map(|(_, n)| n).collect()
}

fn load_snapshot(path: &Path, layer: &str, labels_var: &str) -> Result<Raw, SourceError> {
    let map = map_file(path)?;
    let st = parse(path, &map)?;
    let view = st.tensor(layer).map_err(|_| SourceError::MissingLayer {
        path: path.to_path_buf(),
        layer: layer.to_string(),
        present: snapshot_layers(&st, &map),
    })?;
    let bad = |name: &str, problem: String| SourceError::BadTensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        problem,
    };
    if view.dtype() != Dtype::F32 {
        return Err(bad(
            layer,
            format!("dtype {:?}, expected F32", view.dtype()),
        ));
    }
    let (n, sample_shape) = match view.shape().split_first() {
        Some((&n, rest)) if !rest.is_empty() => (n, rest.to_vec()),
        _ => {
            return Err(bad(
                layer,
                format!("shape {:?} has no feature dimension", view.shape()),
            ));
        }
    };
    let data: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let labels_view = st
        .tensor(labels_var)
        .map_err(|_| SourceError::MissingLayer {
            path: path.to_path_buf(),
            layer: labels_var.to_string(),
            present: st.names().into_iter().map(String::from).collect(),
        })?;
    let labels = read_integers(labels_view.dtype(), labels_view.data()).ok_or_else(|| {
        bad(
            labels_var,
            format!(
                "dtype {:?} is not an integer or float type",
                labels_view.dtype()
            ),
        )
    })?;
    let metadata = metadata(path, &map)?;
    cnnu_run::SnapshotFormat::check(path, &metadata)?;
    let epoch = metadata
        .get(cnnu_run::sample::KEY_EPOCH)
        .and_then(|e| e.parse().ok());
    let step = metadata
        .get(cnnu_run::sample::KEY_STEP)
        .and_then(|e| e.parse().ok());
    // Snapshots before cnnu 0.2 trained on MNIST only and carry no names.
    let class_names = metadata
        .get("class_names")
        .and_then(|names| serde_json::from_str(names).ok());
    Ok(Raw {
        n,
        sample_shape,
        data,
        labels,
        epoch,
        step,
        class_names,
    })
}

/// The probe images of a run (`RUN/probe-images.safetensors`, u8 [N, C, H, W]), if it has them
/// (runs from before cnnu wrote them have none).
pub fn probe_images(run: &Path) -> Result<Option<ProbePixels>, SourceError> {
    let path = cnnu_run::RunDir::new(run).probe_images_path();
    if !path.is_file() {
        return Ok(None);
    }
    let map = map_file(&path)?;
    let st = parse(&path, &map)?;
    let view = st
        .tensor(cnnu_run::sample::IMAGES)
        .map_err(|_| SourceError::MissingLayer {
            path: path.clone(),
            layer: cnnu_run::sample::IMAGES.into(),
            present: st.names().into_iter().map(String::from).collect(),
        })?;
    if view.dtype() != Dtype::U8 || view.shape().len() != 4 {
        return Err(SourceError::BadTensor {
            path,
            name: cnnu_run::sample::IMAGES.into(),
            problem: format!(
                "{:?} {:?}, expected U8 [N, C, H, W]",
                view.dtype(),
                view.shape()
            ),
        });
    }
    let shape = view.shape();
    Ok(Some(ProbePixels {
        shape: [shape[0], shape[1], shape[2], shape[3]],
        pixels: view.data().to_vec(),
    }))
}

/// A run's probe images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePixels {
    /// `[N, C, H, W]`.
    pub shape: [usize; 4],
    /// The pixels, row-major in that shape.
    pub pixels: Vec<u8>,
}

/// A mapped snapshot's `__metadata__` (empty when it has none), through the one header reader.
fn metadata(
    path: &Path,
    bytes: &[u8],
) -> Result<std::collections::BTreeMap<String, String>, SourceError> {
    cnnu_run::SafetensorsHeader::parse(bytes)
        .map(|h| h.metadata)
        .map_err(|e| cnnu_run::SnapshotFormatError::from_header(path, e).into())
}

/// What a snapshot records besides its layers: which probe images its rows are and what the
/// network predicted for them (where in training it was taken is `cnnu_run::SampleFile`'s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Each row's image index in the test set (`indices`); none in snapshots without it.
    pub indices: Option<Vec<i64>>,
    /// The network's predicted class per row (`predictions`); none in snapshots without it.
    pub predictions: Option<Vec<i64>>,
}

/// Reads a snapshot's `indices` and `predictions` (its format checked), and none of its layers.
pub fn snapshot_info(path: &Path) -> Result<SnapshotInfo, SourceError> {
    let map = map_file(path)?;
    let st = parse(path, &map)?;
    let integers = |name: &str| match st.tensor(name) {
        Ok(view) => read_integers(view.dtype(), view.data())
            .map(Some)
            .ok_or_else(|| SourceError::BadTensor {
                path: path.to_path_buf(),
                name: name.into(),
                problem: format!("dtype {:?} does not hold whole numbers", view.dtype()),
            }),
        Err(_) => Ok(None),
    };
    let indices = integers(cnnu_run::sample::INDICES)?;
    let predictions = integers(cnnu_run::sample::PREDICTIONS)?;
    cnnu_run::SnapshotFormat::check(path, &metadata(path, &map)?)?;
    Ok(SnapshotInfo {
        indices,
        predictions,
    })
}

/// How well the sampled network itself fits the probe images of one snapshot: the share of
/// `predictions` equal to `labels`, and the mean cross-entropy of `logits` at the labels. These
/// are the network's own figures, not a probe's, and a snapshot has them at every sample (step
/// samples included), where the run's test pass exists only at epoch ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetworkFit {
    /// Share of rows whose prediction is the label.
    pub accuracy: f64,
    /// Mean cross-entropy (natural log) of the logits at the labels; none in snapshots without
    /// `logits`.
    pub loss: Option<f64>,
}

/// Reads a snapshot's `labels`, `predictions` and `logits` into the network's accuracy and
/// loss on the probe images; none when the snapshot lacks labels or predictions (MAT files,
/// snapshots from before predictions were written). Where `predictions` is missing but the
/// logits are there, the prediction is the logits' argmax.
pub fn network_fit(path: &Path) -> Result<Option<NetworkFit>, SourceError> {
    let map = map_file(path)?;
    let st = parse(path, &map)?;
    let bad = |name: &str, problem: String| SourceError::BadTensor {
        path: path.to_path_buf(),
        name: name.into(),
        problem,
    };
    let integers = |name: &str| match st.tensor(name) {
        Ok(view) => read_integers(view.dtype(), view.data())
            .map(Some)
            .ok_or_else(|| {
                bad(
                    name,
                    format!("dtype {:?} does not hold whole numbers", view.dtype()),
                )
            }),
        Err(_) => Ok(None),
    };
    let Some(labels) = integers(cnnu_run::sample::LABELS)? else {
        return Ok(None);
    };
    let logits = match st.tensor(cnnu_run::sample::LOGITS) {
        Ok(view) => {
            let shape = view.shape().to_vec();
            if view.dtype() != Dtype::F32
                || shape.len() != 2
                || shape[0] != labels.len()
                || shape[1] == 0
            {
                return Err(bad(
                    cnnu_run::sample::LOGITS,
                    format!(
                        "{:?} {:?}, expected F32 [{}, classes]",
                        view.dtype(),
                        shape,
                        labels.len()
                    ),
                ));
            }
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Some((data, shape[1]))
        }
        Err(_) => None,
    };
    let predictions = match (integers(cnnu_run::sample::PREDICTIONS)?, &logits) {
        (Some(p), _) => p,
        (None, Some((data, c))) => data
            .chunks_exact(*c)
            .map(|row| {
                let best = row
                    .iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                    );
                best.0 as i64
            })
            .collect(),
        (None, None) => return Ok(None),
    };
    if predictions.len() != labels.len() {
        return Err(bad(
            cnnu_run::sample::PREDICTIONS,
            format!("{} rows for {} labels", predictions.len(), labels.len()),
        ));
    }
    cnnu_run::SnapshotFormat::check(path, &metadata(path, &map)?)?;
    if labels.is_empty() {
        return Ok(None);
    }
    let n = labels.len() as f64;
    let hits = predictions
        .iter()
        .zip(&labels)
        .filter(|(p, l)| p == l)
        .count();
    let loss = logits.map(|(data, c)| cross_entropy(&data, c, &labels));
    Ok(Some(NetworkFit {
        accuracy: hits as f64 / n,
        loss,
    }))
}

/// Mean of −log softmax(row)\[label\] over the rows of `logits` ([N, classes] row-major), by the
/// log-sum-exp with the row's maximum taken out; NaN when a label is not a class.
pub fn cross_entropy(logits: &[f32], classes: usize, labels: &[i64]) -> f64 {
    let mut sum = 0.0;
    for (row, &label) in logits.chunks_exact(classes).zip(labels) {
        let Some(&at) = usize::try_from(label).ok().and_then(|l| row.get(l)) else {
            return f64::NAN;
        };
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let lse = max
            + row
                .iter()
                .map(|&v| (v as f64 - max).exp())
                .sum::<f64>()
                .ln();
        sum += lse - at as f64;
    }
    sum / labels.len().max(1) as f64
}

/// Labels stored as any integer type, or as floats holding whole numbers.
pub(crate) fn read_integers(dtype: Dtype, bytes: &[u8]) -> Option<Vec<i64>> {
    fn chunks<const W: usize>(b: &[u8]) -> impl Iterator<Item = [u8; W]> + '_ {
        b.chunks_exact(W).map(|c| {
            let mut a = [0u8; W];
            a.copy_from_slice(c);
            a
        })
    }
    let whole = |v: f64| (v.fract() == 0.0 && v.is_finite()).then_some(v as i64);
    match dtype {
        Dtype::I64 => Some(chunks::<8>(bytes).map(i64::from_le_bytes).collect()),
        Dtype::I32 => Some(
            chunks::<4>(bytes)
                .map(|c| i32::from_le_bytes(c) as i64)
                .collect(),
        ),
        Dtype::I16 => Some(
            chunks::<2>(bytes)
                .map(|c| i16::from_le_bytes(c) as i64)
                .collect(),
        ),
        Dtype::I8 => Some(bytes.iter().map(|&b| b as i8 as i64).collect()),
        Dtype::U8 => Some(bytes.iter().map(|&b| b as i64).collect()),
        Dtype::U16 => Some(
            chunks::<2>(bytes)
                .map(|c| u16::from_le_bytes(c) as i64)
                .collect(),
        ),
        Dtype::U32 => Some(
            chunks::<4>(bytes)
                .map(|c| u32::from_le_bytes(c) as i64)
                .collect(),
        ),
        Dtype::F32 => chunks::<4>(bytes)
            .map(|c| whole(f32::from_le_bytes(c) as f64))
            .collect(),
        Dtype::F64 => chunks::<8>(bytes)
            .map(|c| whole(f64::from_le_bytes(c)))
            .collect(),
        _ => None,
    }
}
