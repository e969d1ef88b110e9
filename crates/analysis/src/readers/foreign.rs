//! A folder of activations cnnu did not write (docs/run-format.md, "Activations from
//! elsewhere"): one `.safetensors` file or `.npz` archive per sample of training, each holding
//! float tensors `[N, ...]` named by layer, an integer `labels` `[N]` and optionally an integer
//! `indices` `[N]`. A file's step is its `step` metadata (in an `.npz`, a one-element integer
//! array `step`), else the last integer in its file name (`step-50.safetensors`,
//! `ckpt_0050.npz`). Every file must hold the same images:
//! the same N, the same labels, and the same `indices` where the first file has them.
//!
//! Opening the folder reads every file's header and its labels and indices; a layer's values
//! are read only when [`ForeignFolder::load`] asks for them. float64 layers are narrowed to
//! float32, as the analysis computes in float32.

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::numerics::matrix::{Matrix, MatrixError, Representation};
use crate::readers::npz::{self, Npz, NpzError};
use crate::readers::source::{Activations, Provenance, map_file, read_integers};
use cnnu_run::IoError;

/// The optional tensor naming each row's image.
pub const INDICES: &str = "indices";
/// The metadata key of a file's optimizer step.
pub const KEY_STEP: &str = "step";
/// The metadata key of the layers' order (a JSON list of names).
pub const KEY_LAYERS: &str = "layers";
/// The extensions of the files read.
const EXTENSIONS: [&str; 2] = ["safetensors", NPZ];
/// numpy's archive of arrays.
const NPZ: &str = "npz";

/// One file of the folder: one sample of training.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignFile {
    /// The file.
    pub path: PathBuf,
    /// Optimizer steps done when it was recorded.
    pub step: u64,
}

/// A checked folder of activation files, in step order.
#[derive(Debug, Clone)]
pub struct ForeignFolder {
    /// The folder.
    pub dir: PathBuf,
    /// Its files by step.
    pub files: Vec<ForeignFile>,
    /// The layers, in the first file's order: its `layers` metadata, else by data offset.
    pub layers: Vec<String>,
    /// The label of every image.
    pub labels: Vec<i64>,
    /// Each row's image index, when the files record it.
    pub indices: Option<Vec<i64>>,
    /// Class names from the first file's `class_names` metadata (a JSON list), if any.
    pub class_names: Option<Vec<String>>,
    labels_var: String,
}

/// Why a folder of activations cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ForeignError {
    /// A file or the folder cannot be read.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The folder holds no `.safetensors` or `.npz` file.
    #[error("{}: no activation files (*.safetensors, *.npz)", .0.display())]
    NoFiles(PathBuf),
    /// An `.npz` archive that cannot be read.
    #[error(transparent)]
    Npz(#[from] NpzError),
    /// Not valid safetensors.
    #[error("{}: not a valid safetensors file: {problem}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        problem: String,
    },
    /// Neither `step` metadata nor an integer in the file name.
    #[error(
        "{}: no step: no `step` metadata and no integer in the file name (name it step-N.safetensors)",
        .0.display()
    )]
    NoStep(PathBuf),
    /// `step` metadata that is not a whole number.
    #[error("{}: `step` metadata {value:?} is not a non-negative whole number", path.display())]
    BadStep {
        /// The file.
        path: PathBuf,
        /// The value.
        value: String,
    },
    /// Two files of the same step.
    #[error("{} and {}: both are step {step}", a.display(), b.display())]
    DuplicateStep {
        /// One file.
        a: PathBuf,
        /// The other.
        b: PathBuf,
        /// Their step.
        step: u64,
    },
    /// No labels tensor.
    #[error("{}: no `{name}` tensor (the label of every image); tensors present: {}", path.display(), present.join(", "))]
    NoLabels {
        /// The file.
        path: PathBuf,
        /// The labels' name.
        name: String,
        /// The tensors present.
        present: Vec<String>,
    },
    /// A tensor of the wrong dtype or shape.
    #[error("{}: `{name}`: {problem}", path.display())]
    BadTensor {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// No float tensor besides the labels and indices.
    #[error("{}: no layers (float32 or float64 tensors [N, ...] besides `{labels}` and `indices`)", path.display())]
    NoLayers {
        /// The file.
        path: PathBuf,
        /// The labels' name.
        labels: String,
    },
    /// A file whose images are not the first file's.
    #[error("{}: {problem}, unlike {}: every file must hold the same images", path.display(), first.display())]
    OtherImages {
        /// The file.
        path: PathBuf,
        /// The first file.
        first: PathBuf,
        /// How it differs.
        problem: String,
    },
    /// A file whose layers are not the first file's.
    #[error("{}: layers [{}], unlike {}'s [{}]", path.display(), these.join(", "), first.display(), those.join(", "))]
    OtherLayers {
        /// The file.
        path: PathBuf,
        /// Its layers.
        these: Vec<String>,
        /// The first file.
        first: PathBuf,
        /// The first file's layers.
        those: Vec<String>,
    },
    /// The values are not a usable matrix (a NaN or infinite value).
    #[error("{}: {layer}: {source}", path.display())]
    Matrix {
        /// The file.
        path: PathBuf,
        /// The layer.
        layer: String,
        /// Why.
        #[source]
        source: MatrixError,
    },
}

/// Whether `dir` holds any `.safetensors` or `.npz` file (so it may be a folder of activations).
pub fn has_activation_files(dir: &Path) -> bool {
    list(dir).is_ok_and(|f| !f.is_empty())
}

/// The `.safetensors` and `.npz` files directly in `dir`, by name.
fn list(dir: &Path) -> Result<Vec<PathBuf>, ForeignError> {
    let io = |e| IoError::at(dir)(e);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let ours = path
            .extension()
            .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)));
        if ours && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The last run of ASCII digits in the file's stem, as a number.
pub fn step_from_name(path: &Path) -> Option<u64> {
    let stem = path.file_stem()?.to_str()?;
    let end = stem.rfind(|c: char| c.is_ascii_digit())? + 1;
    let start = stem[..end]
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    stem[start..end].parse().ok()
}

/// What opening a file finds: its step, layers, labels and indices.
struct Header {
    step: u64,
    layers: Vec<String>,
    labels: Vec<i64>,
    indices: Option<Vec<i64>>,
    class_names: Option<Vec<String>>,
}

fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>, ForeignError> {
    SafeTensors::deserialize(bytes).map_err(|e| ForeignError::Safetensors {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })
}

fn metadata(
    path: &Path,
    bytes: &[u8],
) -> Result<std::collections::BTreeMap<String, String>, ForeignError> {
    cnnu_run::SafetensorsHeader::parse(bytes)
        .map(|h| h.metadata)
        .map_err(|e| ForeignError::Safetensors {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })
}

fn is_float(d: Dtype) -> bool {
    matches!(d, Dtype::F32 | Dtype::F64)
}

/// An integer tensor of shape `[n]` (`n` from the labels when known).
fn integers(
    path: &Path,
    st: &SafeTensors<'_>,
    name: &str,
    n: Option<usize>,
) -> Result<Option<Vec<i64>>, ForeignError> {
    let Ok(view) = st.tensor(name) else {
        return Ok(None);
    };
    let bad = |problem: String| ForeignError::BadTensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        problem,
    };
    let shape = view.shape();
    if shape.len() != 1 || n.is_some_and(|n| shape[0] != n) {
        let want = n.map_or("[N]".to_string(), |n| format!("[{n}]"));
        return Err(bad(format!("shape {shape:?}, expected {want}")));
    }
    read_integers(view.dtype(), view.data())
        .map(Some)
        .ok_or_else(|| {
            bad(format!(
                "dtype {:?} does not hold whole numbers",
                view.dtype()
            ))
        })
}

/// Whether `path` is an `.npz` archive (by its extension).
pub fn is_npz(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case(NPZ))
}

/// An integer array `[n]` of an archive (`n` from the labels when known).
fn npz_integers(
    path: &Path,
    npz: &mut Npz,
    name: &str,
    n: Option<usize>,
) -> Result<Option<Vec<i64>>, ForeignError> {
    let Some(array) = npz.array(name)? else {
        return Ok(None);
    };
    let bad = |problem: String| ForeignError::BadTensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        problem,
    };
    if array.shape.len() != 1 || n.is_some_and(|n| array.shape[0] != n) {
        let want = n.map_or("[N]".to_string(), |n| format!("[{n}]"));
        return Err(bad(format!("shape {:?}, expected {want}", array.shape)));
    }
    npz::integers(&array.data).map(Some).ok_or_else(|| {
        bad(format!(
            "dtype {}, expected int32 or int64",
            array.data.dtype_name()
        ))
    })
}

/// [`read_header`] of an `.npz` archive: layers in the order `np.savez` stored them.
fn read_npz_header(path: &Path, labels_var: &str) -> Result<Header, ForeignError> {
    let mut npz = Npz::open(path)?;
    let names = npz.names()?;
    let step = match npz.array(KEY_STEP)? {
        Some(a) => match (npz::integers(&a.data), a.shape.iter().product::<usize>()) {
            (Some(v), 1) if v[0] >= 0 => v[0] as u64,
            _ => {
                return Err(ForeignError::BadStep {
                    path: path.to_path_buf(),
                    value: format!("array of shape {:?}, {}", a.shape, a.data.dtype_name()),
                });
            }
        },
        None => step_from_name(path).ok_or_else(|| ForeignError::NoStep(path.to_path_buf()))?,
    };
    let labels =
        npz_integers(path, &mut npz, labels_var, None)?.ok_or_else(|| ForeignError::NoLabels {
            path: path.to_path_buf(),
            name: labels_var.to_string(),
            present: names.clone(),
        })?;
    let n = labels.len();
    let indices = npz_integers(path, &mut npz, INDICES, Some(n))?;
    let mut layers = Vec::new();
    for name in names {
        if [labels_var, INDICES, KEY_STEP].contains(&name.as_str()) {
            continue;
        }
        let Some(shape) = npz.shape_of(&name)? else {
            continue;
        };
        if !shape.float {
            continue;
        }
        if shape.shape.first() != Some(&n) {
            return Err(ForeignError::BadTensor {
                path: path.to_path_buf(),
                name,
                problem: format!("shape {:?}, expected [{n}, ...] ({n} labels)", shape.shape),
            });
        }
        layers.push(name);
    }
    if layers.is_empty() {
        return Err(ForeignError::NoLayers {
            path: path.to_path_buf(),
            labels: labels_var.to_string(),
        });
    }
    Ok(Header {
        step,
        layers,
        labels,
        indices,
        class_names: None,
    })
}

fn read_header(path: &Path, labels_var: &str) -> Result<Header, ForeignError> {
    if is_npz(path) {
        return read_npz_header(path, labels_var);
    }
    let map = map_file(path)?;
    let st = parse(path, &map)?;
    let meta = metadata(path, &map)?;
    let step = match meta.get(KEY_STEP) {
        Some(v) => v.trim().parse().map_err(|_| ForeignError::BadStep {
            path: path.to_path_buf(),
            value: v.clone(),
        })?,
        None => step_from_name(path).ok_or_else(|| ForeignError::NoStep(path.to_path_buf()))?,
    };
    let mut present: Vec<String> = st.names().into_iter().map(String::from).collect();
    present.sort();
    let labels = integers(path, &st, labels_var, None)?.ok_or_else(|| ForeignError::NoLabels {
        path: path.to_path_buf(),
        name: labels_var.to_string(),
        present,
    })?;
    let n = labels.len();
    let indices = integers(path, &st, INDICES, Some(n))?;
    // Forward order is the order of the data offsets, as writers follow it.
    let mut named: Vec<(usize, String)> = Vec::new();
    for (name, view) in st.tensors() {
        if name == labels_var || name == INDICES || !is_float(view.dtype()) {
            continue;
        }
        if view.shape().first() != Some(&n) {
            return Err(ForeignError::BadTensor {
                path: path.to_path_buf(),
                name,
                problem: format!("shape {:?}, expected [{n}, ...] ({n} labels)", view.shape()),
            });
        }
        named.push((view.data().as_ptr() as usize - map.as_ptr() as usize, name));
    }
    named.sort();
    let mut layers: Vec<String> = named.into_iter().map(|(_, n)| n).collect();
    // Writers order tensors their own way (safetensors by dtype, then name): a `layers` list
    // in the metadata gives the network's order; layers it does not name follow.
    if let Some(order) = meta
        .get(KEY_LAYERS)
        .and_then(|l| serde_json::from_str::<Vec<String>>(l).ok())
    {
        layers.sort_by_key(|l| order.iter().position(|o| o == l).unwrap_or(usize::MAX));
    }
    if layers.is_empty() {
        return Err(ForeignError::NoLayers {
            path: path.to_path_buf(),
            labels: labels_var.to_string(),
        });
    }
    let class_names = meta
        .get("class_names")
        .and_then(|names| serde_json::from_str(names).ok());
    Ok(Header {
        step,
        layers,
        labels,
        indices,
        class_names,
    })
}

/// The first row at which two lists differ.
fn first_difference(a: &[i64], b: &[i64]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// A tensor's shape and its values as f32.
type Values = (Vec<usize>, Vec<f32>);

/// A float tensor's shape and values (float64 narrowed to float32) from a safetensors file;
/// None when the file has no tensor of that name.
fn safetensors_values(path: &Path, layer: &str) -> Result<Option<Values>, ForeignError> {
    let map = map_file(path)?;
    let st = parse(path, &map)?;
    let Ok(view) = st.tensor(layer) else {
        return Ok(None);
    };
    // The parser checked that the data hold the shape's product.
    let data: Vec<f32> = match view.dtype() {
        Dtype::F32 => view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => view
            .data()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        other => {
            return Err(ForeignError::BadTensor {
                path: path.to_path_buf(),
                name: layer.to_string(),
                problem: format!("dtype {other:?}, expected float32 or float64"),
            });
        }
    };
    Ok(Some((view.shape().to_vec(), data)))
}

/// [`safetensors_values`] of an `.npz` archive's array.
fn npz_values(path: &Path, layer: &str) -> Result<Option<Values>, ForeignError> {
    let Some(array) = Npz::open(path)?.array(layer)? else {
        return Ok(None);
    };
    let dtype = array.data.dtype_name();
    let data = npz::floats(array.data).ok_or_else(|| ForeignError::BadTensor {
        path: path.to_path_buf(),
        name: layer.to_string(),
        problem: format!("dtype {dtype}, expected float32 or float64"),
    })?;
    Ok(Some((array.shape, data)))
}

impl ForeignFolder {
    /// Lists and checks the folder: every file's step, labels, indices and layers.
    pub fn open(dir: &Path, labels_var: &str) -> Result<Self, ForeignError> {
        let paths = list(dir)?;
        if paths.is_empty() {
            return Err(ForeignError::NoFiles(dir.to_path_buf()));
        }
        let mut files: Vec<ForeignFile> = Vec::with_capacity(paths.len());
        let mut first: Option<(PathBuf, Header)> = None;
        for path in paths {
            let h = read_header(&path, labels_var)?;
            files.push(ForeignFile {
                path: path.clone(),
                step: h.step,
            });
            let Some((fp, f)) = &first else {
                first = Some((path, h));
                continue;
            };
            let other = |problem: String| ForeignError::OtherImages {
                path: path.clone(),
                first: fp.clone(),
                problem,
            };
            if h.labels.len() != f.labels.len() {
                return Err(other(format!(
                    "{} images, not {}",
                    h.labels.len(),
                    f.labels.len()
                )));
            }
            match (&h.indices, &f.indices) {
                (Some(a), Some(b)) => {
                    if let Some(i) = first_difference(a, b) {
                        return Err(other(format!(
                            "`indices` at row {i} is {}, not {}",
                            a[i], b[i]
                        )));
                    }
                }
                (None, Some(_)) => return Err(other("no `indices`".into())),
                (Some(_), None) => return Err(other("`indices` where the first has none".into())),
                (None, None) => {}
            }
            if let Some(i) = first_difference(&h.labels, &f.labels) {
                return Err(other(format!(
                    "label at row {i} is {}, not {}",
                    h.labels[i], f.labels[i]
                )));
            }
            let mut these = h.layers.clone();
            let mut those = f.layers.clone();
            these.sort();
            those.sort();
            if these != those {
                return Err(ForeignError::OtherLayers {
                    path,
                    these,
                    first: fp.clone(),
                    those,
                });
            }
        }
        files.sort_by_key(|f| f.step);
        if let Some(w) = files.windows(2).find(|w| w[0].step == w[1].step) {
            return Err(ForeignError::DuplicateStep {
                a: w[0].path.clone(),
                b: w[1].path.clone(),
                step: w[0].step,
            });
        }
        let (_, f) = first.ok_or_else(|| ForeignError::NoFiles(dir.to_path_buf()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            layers: f.layers,
            labels: f.labels,
            indices: f.indices,
            class_names: f.class_names,
            labels_var: labels_var.to_string(),
        })
    }

    /// Images per file.
    pub fn n(&self) -> usize {
        self.labels.len()
    }

    /// One layer of the `i`-th file (by step), with the folder's labels, checked: every
    /// value finite.
    pub fn load(&self, i: usize, layer: &str) -> Result<Activations, ForeignError> {
        let file = &self.files[i];
        let path = &file.path;
        let bad = |problem: String| ForeignError::BadTensor {
            path: path.clone(),
            name: layer.to_string(),
            problem,
        };
        let (shape, data) = match is_npz(path) {
            true => npz_values(path, layer)?,
            false => safetensors_values(path, layer)?,
        }
        .ok_or_else(|| bad("not in the file".into()))?;
        let n = self.n();
        if shape.first() != Some(&n) {
            return Err(bad(format!("shape {shape:?}, expected [{n}, ...]")));
        }
        let sample_shape = if shape.len() == 1 {
            vec![1]
        } else {
            shape[1..].to_vec()
        };
        let d: usize = sample_shape.iter().product();
        let matrix_err = |source| ForeignError::Matrix {
            path: path.clone(),
            layer: layer.to_string(),
            source,
        };
        let features = Matrix::new(data, n, d).map_err(matrix_err)?;
        let representation = Representation::new(features, self.labels.clone())
            .map_err(matrix_err)?
            .with_class_names(self.class_names.clone());
        Ok(Activations {
            representation,
            provenance: Provenance {
                source: path.clone(),
                layer: layer.to_string(),
                sample_shape,
                epoch: None,
                step: Some(file.step),
            },
        })
    }

    /// The name of the labels tensor the folder was opened with.
    pub fn labels_var(&self) -> &str {
        &self.labels_var
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_step_is_the_last_integer_of_the_name() {
        let s = |n: &str| step_from_name(Path::new(n));
        assert_eq!(s("step-50.safetensors"), Some(50));
        assert_eq!(s("ckpt_0050.npz"), Some(50));
        assert_eq!(s("run3-step120.safetensors"), Some(120));
        assert_eq!(s("7"), Some(7));
        assert_eq!(s("final.safetensors"), None);
        assert_eq!(s("x99999999999999999999999.safetensors"), None);
    }
}
