//! Reading and writing named f32 tensors in safetensors files (probe inputs and outputs).

use cnnu_run::IoError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use cnnu_run::atomic::write_atomic;

/// Errors from safetensors tensor files.
#[derive(Debug, thiserror::Error)]
pub enum TensorFileError {
    /// The file could not be read or written.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The file is not valid safetensors.
    #[error("{path}: not a valid safetensors file: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// The tensor is not in the file.
    #[error("{path}: no tensor `{key}`; tensors present: {}", present.join(", "))]
    Missing {
        /// The file.
        path: PathBuf,
        /// The key asked for.
        key: String,
        /// The keys the file has.
        present: Vec<String>,
    },
    /// A tensor whose values do not fill its shape.
    #[error("{path}: tensor `{key}` has {len} values, which is not shape {shape:?}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The shape given.
        shape: Vec<usize>,
        /// The number of values.
        len: usize,
    },
    /// The tensor has the wrong dtype.
    #[error("{path}: tensor `{key}` is {found:?}, expected F32")]
    Dtype {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// Its dtype.
        found: Dtype,
    },
}

/// Reads the f32 tensor `key` from a safetensors file: its shape and values.
pub fn read_f32(path: &Path, key: &str) -> Result<(Vec<usize>, Vec<f32>), TensorFileError> {
    let bytes = std::fs::read(path).map_err(IoError::at(path))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|source| TensorFileError::Format {
        path: path.to_path_buf(),
        source,
    })?;
    let view = st.tensor(key).map_err(|_| {
        let mut present: Vec<String> = st.names().into_iter().map(String::from).collect();
        present.sort();
        TensorFileError::Missing {
            path: path.to_path_buf(),
            key: key.to_string(),
            present,
        }
    })?;
    if view.dtype() != Dtype::F32 {
        return Err(TensorFileError::Dtype {
            path: path.to_path_buf(),
            key: key.to_string(),
            found: view.dtype(),
        });
    }
    let values = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((view.shape().to_vec(), values))
}

/// One named f32 tensor to write.
pub struct NamedTensor {
    /// The key in the file.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values, row-major.
    pub values: Vec<f32>,
}

/// Writes f32 tensors and string metadata to a safetensors file, atomically.
pub fn write_f32(
    path: &Path,
    tensors: &[NamedTensor],
    metadata: Option<HashMap<String, String>>,
) -> Result<(), TensorFileError> {
    let raw: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    if let Some(t) = tensors
        .iter()
        .find(|t| t.shape.iter().product::<usize>() != t.values.len())
    {
        return Err(TensorFileError::Shape {
            path: path.to_path_buf(),
            key: t.name.clone(),
            shape: t.shape.clone(),
            len: t.values.len(),
        });
    }
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .zip(&raw)
        .map(|(t, bytes)| {
            let view = TensorView::new(Dtype::F32, t.shape.clone(), bytes)
                .expect("sizes were checked above");
            (t.name.as_str(), view)
        })
        .collect();
    let bytes =
        safetensors::serialize(views, metadata).map_err(|source| TensorFileError::Format {
            path: path.to_path_buf(),
            source,
        })?;
    write_atomic(path, &bytes).map_err(|source| {
        TensorFileError::Io(IoError {
            path: path.to_path_buf(),
            source,
        })
    })
}
