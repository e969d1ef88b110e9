//! One float array from a file, as an `[N, features]` matrix in f64: the whole array of a
//! `.npy` file, or one tensor of a `.safetensors` file (by name, or the only float tensor it
//! holds). A sample's values (`[N, C, H, W]` or any `[N, ...]`) are flattened in C order, as
//! numpy's `reshape(len(a), -1)` does; a 1-d array is N samples of one feature. float32 is
//! widened exactly, float64 kept as it is.
//!
//! The format is the file name's: `.npy` is numpy's, anything else is read as safetensors.

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::numerics::matrix::{Matrix64, MatrixError};
use crate::readers::npy::{self, NpyData, NpyError};
use crate::readers::source::map_file;
use cnnu_run::IoError;

/// An array read as a matrix, with what it was.
#[derive(Debug, Clone)]
pub struct FloatArray {
    /// The values, `[N, features]`.
    pub matrix: Matrix64,
    /// The shape in the file.
    pub shape: Vec<usize>,
    /// The tensor's name (none for a `.npy` file).
    pub name: Option<String>,
    /// The dtype in the file, numpy's name (`float32`, `float64`).
    pub dtype: &'static str,
}

/// Why an array could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ArrayError {
    /// The file cannot be opened, mapped or read.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The path exists but is a directory or another non-file.
    #[error("{}: not a file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// A `.npy` problem.
    #[error(transparent)]
    Npy(#[from] NpyError),
    /// A tensor name given for a `.npy` file, which holds one unnamed array.
    #[error("{}: a .npy file holds one unnamed array, there is no tensor `{key}` to pick", path.display())]
    KeyForNpy {
        /// The file.
        path: PathBuf,
        /// The name given.
        key: String,
    },
    /// Not valid safetensors (truncated, bad header, offsets outside the file).
    #[error("{}: not a valid safetensors file: {problem}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        problem: String,
    },
    /// The tensor asked for is not in the file.
    #[error("{}: no tensor `{key}`; tensors present: {}", path.display(), present.join(", "))]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The name asked for.
        key: String,
        /// The names in the file.
        present: Vec<String>,
    },
    /// No tensor named, and the file holds no float tensor.
    #[error("{}: no float32 or float64 tensor; tensors present: {}", path.display(), present.join(", "))]
    NoFloatTensor {
        /// The file.
        path: PathBuf,
        /// The names in the file (with their dtypes).
        present: Vec<String>,
    },
    /// No tensor named, and the file holds several float tensors.
    #[error("{}: {} float tensors ({}), name one", path.display(), names.len(), names.join(", "))]
    AmbiguousTensor {
        /// The file.
        path: PathBuf,
        /// The float tensors' names.
        names: Vec<String>,
    },
    /// The array is not a float array.
    #[error("{}: {what} is {dtype}, not float32 or float64", path.display())]
    NotFloat {
        /// The file.
        path: PathBuf,
        /// `the array` or the tensor's name in backticks.
        what: String,
        /// Its dtype.
        dtype: String,
    },
    /// A 0-d array: no sample dimension.
    #[error("{}: {what} has shape [], no sample dimension", path.display())]
    NoSamples {
        /// The file.
        path: PathBuf,
        /// `the array` or the tensor's name in backticks.
        what: String,
    },
    /// The values are not a usable matrix (no samples or features, a NaN or infinite value).
    #[error("{}: {what}: {source}", path.display())]
    Matrix {
        /// The file.
        path: PathBuf,
        /// `the array` or the tensor's name in backticks.
        what: String,
        /// Why.
        #[source]
        source: MatrixError,
    },
}

/// Whether `path` names a `.npy` file.
fn is_npy(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// Reads the array of a `.npy` file (`key` must be `None`) or the tensor `key` of a safetensors
/// file (`None`: the only float32 or float64 tensor), flattened to `[N, features]`.
pub fn read_matrix(path: &Path, key: Option<&str>) -> Result<FloatArray, ArrayError> {
    let meta = std::fs::metadata(path).map_err(IoError::at(path))?;
    if !meta.is_file() {
        return Err(ArrayError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if is_npy(path) {
        if let Some(key) = key {
            return Err(ArrayError::KeyForNpy {
                path: path.to_path_buf(),
                key: key.to_string(),
            });
        }
        read_npy(path)
    } else {
        read_safetensors(path, key)
    }
}

fn read_npy(path: &Path) -> Result<FloatArray, ArrayError> {
    let array = npy::read(path)?;
    let what = "the array".to_string();
    let dtype = array.data.dtype_name();
    let data = match array.data {
        NpyData::F32(v) => v.into_iter().map(f64::from).collect(),
        NpyData::F64(v) => v,
        NpyData::I32(_) | NpyData::I64(_) => {
            return Err(ArrayError::NotFloat {
                path: path.to_path_buf(),
                what,
                dtype: dtype.to_string(),
            });
        }
    };
    to_matrix(path, what, None, array.shape, data, dtype)
}

fn read_safetensors(path: &Path, key: Option<&str>) -> Result<FloatArray, ArrayError> {
    let map = map_file(path)?;
    let st = SafeTensors::deserialize(&map).map_err(|e| ArrayError::Safetensors {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })?;
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let is_float = |d: Dtype| matches!(d, Dtype::F32 | Dtype::F64);
    let name = match key {
        Some(k) => k.to_string(),
        None => {
            let floats: Vec<String> = names
                .iter()
                .filter(|n| st.tensor(n).is_ok_and(|v| is_float(v.dtype())))
                .cloned()
                .collect();
            match floats.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(ArrayError::NoFloatTensor {
                        path: path.to_path_buf(),
                        present: names
                            .iter()
                            .map(|n| match st.tensor(n) {
                                Ok(v) => format!("{n} ({:?})", v.dtype()),
                                Err(_) => n.clone(),
                            })
                            .collect(),
                    });
                }
                _ => {
                    return Err(ArrayError::AmbiguousTensor {
                        path: path.to_path_buf(),
                        names: floats,
                    });
                }
            }
        }
    };
    let view = st.tensor(&name).map_err(|_| ArrayError::MissingTensor {
        path: path.to_path_buf(),
        key: name.clone(),
        present: names.clone(),
    })?;
    let what = format!("`{name}`");
    let (data, dtype): (Vec<f64>, _) = match view.dtype() {
        Dtype::F32 => (
            view.data()
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            "float32",
        ),
        Dtype::F64 => (
            view.data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
            "float64",
        ),
        other => {
            return Err(ArrayError::NotFloat {
                path: path.to_path_buf(),
                what,
                dtype: format!("{other:?}"),
            });
        }
    };
    to_matrix(path, what, Some(name), view.shape().to_vec(), data, dtype)
}

/// `[N, ...]` → `[N, product of the rest]` (1 for a 1-d array), checked.
fn to_matrix(
    path: &Path,
    what: String,
    name: Option<String>,
    shape: Vec<usize>,
    data: Vec<f64>,
    dtype: &'static str,
) -> Result<FloatArray, ArrayError> {
    let Some((&n, rest)) = shape.split_first() else {
        return Err(ArrayError::NoSamples {
            path: path.to_path_buf(),
            what,
        });
    };
    // The reader checked that the data hold the shape's product, so this cannot overflow.
    let d = rest.iter().product();
    let matrix = Matrix64::new(data, n, d).map_err(|source| ArrayError::Matrix {
        path: path.to_path_buf(),
        what,
        source,
    })?;
    Ok(FloatArray {
        matrix,
        shape,
        name,
        dtype,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use safetensors::tensor::TensorView;

    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/data/kornblith")
            .join(name)
    }

    fn safetensors(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
        let views: Vec<(String, TensorView<'_>)> = tensors
            .iter()
            .map(|(n, d, s, b)| {
                (
                    n.to_string(),
                    TensorView::new(*d, s.clone(), b).expect("view"),
                )
            })
            .collect();
        let bytes = safetensors::serialize(views, None::<HashMap<String, String>>).expect("ser");
        std::fs::write(path, bytes).expect("write");
    }

    #[test]
    fn the_fixture_reads_the_same_from_both_formats() {
        let x = read_matrix(&fixture("x.npy"), None).expect("npy");
        let xs = read_matrix(&fixture("xy.safetensors"), Some("x")).expect("safetensors");
        assert_eq!(x.matrix, xs.matrix);
        assert_eq!((x.matrix.n(), x.matrix.d()), (100, 10));
        assert_eq!((x.dtype, xs.dtype), ("float64", "float64"));
        assert_eq!((x.name, xs.name.as_deref()), (None, Some("x")));
        let e = read_matrix(&fixture("xy.safetensors"), None).expect_err("two floats");
        assert!(
            e.to_string().ends_with("2 float tensors (x, y), name one"),
            "{e}"
        );
        let e = read_matrix(&fixture("xy.safetensors"), Some("z")).expect_err("no z");
        assert!(
            e.to_string()
                .ends_with("no tensor `z`; tensors present: x, y"),
            "{e}"
        );
        let e = read_matrix(&fixture("x.npy"), Some("x")).expect_err("npy has no names");
        assert!(matches!(e, ArrayError::KeyForNpy { .. }), "{e}");
        let e = read_matrix(&fixture(""), None).expect_err("a directory");
        assert!(e.to_string().ends_with("kornblith/: not a file"), "{e}");
    }

    #[test]
    fn flattening_dtypes_and_the_only_float_tensor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("acts.safetensors");
        let acts: Vec<u8> = (0..24)
            .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
            .collect();
        let labels: Vec<u8> = [0i64, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
        safetensors(
            &p,
            &[
                ("conv1", Dtype::F32, vec![2, 3, 2, 2], acts),
                ("labels", Dtype::I64, vec![2], labels.clone()),
            ],
        );
        let a = read_matrix(&p, None).expect("the only float tensor");
        assert_eq!(a.name.as_deref(), Some("conv1"));
        assert_eq!((a.matrix.n(), a.matrix.d(), a.dtype), (2, 12, "float32"));
        assert_eq!(a.matrix.row(1)[0], 6.0);
        let e = read_matrix(&p, Some("labels")).expect_err("integers");
        assert!(
            e.to_string()
                .ends_with("`labels` is I64, not float32 or float64"),
            "{e}"
        );
        // A 1-d array is one feature per sample; a 0-d one has no samples.
        let q = dir.path().join("v.safetensors");
        let one: Vec<u8> = [1.0f64, 2.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let scalar: Vec<u8> = 3.0f64.to_le_bytes().to_vec();
        safetensors(
            &q,
            &[
                ("v", Dtype::F64, vec![3], one),
                ("s", Dtype::F64, vec![], scalar),
                ("labels", Dtype::I64, vec![2], labels.clone()),
            ],
        );
        let v = read_matrix(&q, Some("v")).expect("1-d");
        assert_eq!((v.matrix.n(), v.matrix.d()), (3, 1));
        let e = read_matrix(&q, Some("s")).expect_err("0-d");
        assert!(
            e.to_string()
                .ends_with("`s` has shape [], no sample dimension"),
            "{e}"
        );
        let r = dir.path().join("ints.safetensors");
        safetensors(&r, &[("labels", Dtype::I64, vec![2], labels)]);
        let e = read_matrix(&r, None).expect_err("no float");
        assert!(
            e.to_string()
                .ends_with("no float32 or float64 tensor; tensors present: labels (I64)"),
            "{e}"
        );
        // NaN, and zero samples.
        let nan = dir.path().join("nan.safetensors");
        let vals: Vec<u8> = [1.0f32, f32::NAN, 2.0, 3.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        safetensors(
            &nan,
            &[
                ("a", Dtype::F32, vec![2, 2], vals),
                ("e", Dtype::F32, vec![0, 2], vec![]),
            ],
        );
        let e = read_matrix(&nan, Some("a")).expect_err("NaN");
        assert!(
            e.to_string()
                .ends_with("`a`: activation at sample 0, feature 1 is NaN"),
            "{e}"
        );
        let e = read_matrix(&nan, Some("e")).expect_err("empty");
        assert!(e.to_string().contains("at least one row"), "{e}");
    }
}
