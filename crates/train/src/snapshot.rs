//! Streaming snapshot writer: one epoch's taps on the probe set as a safetensors file, written
//! batch by batch so memory stays bounded whatever the number of taps and images.
//!
//! All shapes are known before the first batch, so the header is written first and each
//! batch's rows go to their offset in a temporary file beside the target; `finish` checks that
//! every row arrived, fsyncs and renames. The `safetensors` crate only serialises whole
//! in-memory buffers, hence this writer; the file it produces is plain safetensors
//! (`safetensors.numpy.load_file` reads it).

use cnnu_run::IoError;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use cnnu_run::atomic;

/// Element type of a snapshot tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit float (activations, logits).
    F32,
    /// 64-bit signed integer (labels, predictions, indices).
    I64,
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::I64 => 8,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::I64 => "I64",
        }
    }
}

/// One tensor of a snapshot: `[n, sample_shape...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// The key in the file.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape of one sample's slice (without the leading `n`).
    pub sample_shape: Vec<usize>,
}

/// Errors from writing a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// An I/O error on the temporary or final file.
    #[error(transparent)]
    Io(#[from] IoError),
    /// A batch that does not fit the layout declared up front.
    #[error("{path}: tensor `{name}`: {problem}")]
    Layout {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// What is wrong.
        problem: String,
    },
}

struct Placed {
    spec: TensorSpec,
    /// Offset of the tensor's first byte from the start of the file.
    start: u64,
    row_bytes: u64,
    rows_written: usize,
}

/// A snapshot being written; dropped without [`finish`](Self::finish), it removes its
/// temporary file so that only complete snapshots ever carry the final name.
pub struct SnapshotWriter {
    file: Option<File>,
    tmp: PathBuf,
    path: PathBuf,
    n: usize,
    tensors: Vec<Placed>,
}

impl SnapshotWriter {
    /// Creates the temporary file beside `path`, writes the header and reserves room for `n`
    /// rows of every tensor. `metadata` goes to `__metadata__`.
    pub fn create(
        path: &Path,
        n: usize,
        specs: &[TensorSpec],
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self, SnapshotError> {
        Self::create_in(path, &atomic::temp_path(path), n, specs, metadata)
    }

    /// As [`create`](Self::create), with the temporary file at `tmp` (same file system).
    pub fn create_in(
        path: &Path,
        tmp: &Path,
        n: usize,
        specs: &[TensorSpec],
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self, SnapshotError> {
        let io = |source| {
            SnapshotError::Io(IoError {
                path: path.to_path_buf(),
                source,
            })
        };
        let mut header = serde_json::Map::new();
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata).expect("strings"),
        );
        let mut offset = 0u64;
        let mut placed_offsets = Vec::with_capacity(specs.len());
        for spec in specs {
            let row_bytes =
                spec.sample_shape.iter().product::<usize>() as u64 * spec.dtype.size() as u64;
            let bytes = row_bytes * n as u64;
            let mut shape = vec![n];
            shape.extend(&spec.sample_shape);
            header.insert(
                spec.name.clone(),
                serde_json::json!({
                    "dtype": spec.dtype.name(),
                    "shape": shape,
                    "data_offsets": [offset, offset + bytes],
                }),
            );
            placed_offsets.push((offset, row_bytes));
            offset += bytes;
        }
        let mut json = serde_json::to_vec(&serde_json::Value::Object(header)).expect("valid json");
        // Pad to 8 bytes with spaces, as the safetensors crate does, so data is aligned.
        while !json.len().is_multiple_of(8) {
            json.push(b' ');
        }
        let data_start = 8 + json.len() as u64;
        let tmp = tmp.to_path_buf();
        let mut file = File::create(&tmp).map_err(IoError::at(&tmp))?;
        let mut writer = SnapshotWriter {
            file: None,
            tmp,
            path: path.to_path_buf(),
            n,
            tensors: specs
                .iter()
                .zip(placed_offsets)
                .map(|(spec, (off, row_bytes))| Placed {
                    spec: spec.clone(),
                    start: data_start + off,
                    row_bytes,
                    rows_written: 0,
                })
                .collect(),
        };
        file.write_all(&(json.len() as u64).to_le_bytes())
            .map_err(io)?;
        file.write_all(&json).map_err(io)?;
        file.set_len(data_start + offset).map_err(io)?;
        writer.file = Some(file);
        Ok(writer)
    }

    /// Position of tensor `name` in the layout.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.spec.name == name)
    }

    /// Writes rows `[row, row + k)` of tensor `index` from their little-endian bytes; rows
    /// must arrive in order.
    pub fn write_rows(
        &mut self,
        index: usize,
        row: usize,
        bytes: &[u8],
    ) -> Result<(), SnapshotError> {
        let path = self.path.clone();
        let n = self.n;
        let t = &mut self.tensors[index];
        let layout = |problem: String| SnapshotError::Layout {
            path: path.clone(),
            name: t.spec.name.clone(),
            problem,
        };
        if t.row_bytes == 0 || !(bytes.len() as u64).is_multiple_of(t.row_bytes) {
            return Err(layout(format!(
                "{} bytes is not a whole number of {}-byte rows",
                bytes.len(),
                t.row_bytes
            )));
        }
        let k = (bytes.len() as u64 / t.row_bytes) as usize;
        if row != t.rows_written || row + k > n {
            return Err(layout(format!(
                "rows {row}..{} out of order or beyond {n}",
                row + k
            )));
        }
        let file = self.file.as_mut().expect("open until finish");
        let io = |source| {
            SnapshotError::Io(IoError {
                path: path.clone(),
                source,
            })
        };
        file.seek(SeekFrom::Start(t.start + row as u64 * t.row_bytes))
            .map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        t.rows_written += k;
        Ok(())
    }

    /// Writes f32 rows of tensor `index`.
    pub fn write_f32(
        &mut self,
        index: usize,
        row: usize,
        values: &[f32],
    ) -> Result<(), SnapshotError> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write_rows(index, row, &bytes)
    }

    /// Writes i64 rows of tensor `index`.
    pub fn write_i64(
        &mut self,
        index: usize,
        row: usize,
        values: &[i64],
    ) -> Result<(), SnapshotError> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write_rows(index, row, &bytes)
    }

    /// Checks that every row of every tensor was written, fsyncs and moves the file to its
    /// final name.
    pub fn finish(mut self) -> Result<PathBuf, SnapshotError> {
        if let Some(t) = self.tensors.iter().find(|t| t.rows_written != self.n) {
            return Err(SnapshotError::Layout {
                path: self.path.clone(),
                name: t.spec.name.clone(),
                problem: format!("only {} of {} rows written", t.rows_written, self.n),
            });
        }
        let io = |source| {
            SnapshotError::Io(IoError {
                path: self.path.clone(),
                source,
            })
        };
        let file = self.file.take().expect("open until finish");
        file.sync_all().map_err(io)?;
        drop(file);
        atomic::commit(&self.tmp, &self.path).map_err(io)?;
        Ok(self.path.clone())
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::SafeTensors;

    fn specs() -> Vec<TensorSpec> {
        vec![
            TensorSpec {
                name: "labels".into(),
                dtype: Dtype::I64,
                sample_shape: vec![],
            },
            TensorSpec {
                name: "conv".into(),
                dtype: Dtype::F32,
                sample_shape: vec![2, 1, 3],
            },
        ]
    }

    #[test]
    fn streamed_file_reads_back_with_the_safetensors_crate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("epoch-000.safetensors");
        let meta = BTreeMap::from([("epoch".to_string(), "0".to_string())]);
        let mut w = SnapshotWriter::create(&path, 5, &specs(), &meta).unwrap();
        let conv: Vec<f32> = (0..30).map(|i| i as f32 * 0.5).collect();
        for (start, end) in [(0, 2), (2, 5)] {
            w.write_i64(0, start, &(start as i64..end as i64).collect::<Vec<_>>())
                .unwrap();
            w.write_f32(1, start, &conv[start * 6..end * 6]).unwrap();
        }
        w.finish().unwrap();
        let bytes = fs::read(&path).unwrap();
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(header.metadata().as_ref().unwrap()["epoch"], "0");
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let c = st.tensor("conv").unwrap();
        assert_eq!(c.shape(), &[5, 2, 1, 3]);
        let back: Vec<f32> = c
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(back, conv);
        let l = st.tensor("labels").unwrap();
        assert_eq!(l.shape(), &[5]);
        assert_eq!(l.data()[8 * 4], 4);
    }

    #[test]
    fn an_unfinished_snapshot_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("epoch-001.safetensors");
        let mut w = SnapshotWriter::create(&path, 3, &specs(), &BTreeMap::new()).unwrap();
        w.write_i64(0, 0, &[1, 2, 3]).unwrap();
        assert!(
            w.write_i64(0, 0, &[1]).is_err(),
            "rows must arrive in order"
        );
        let err = w.finish().unwrap_err().to_string();
        assert!(err.contains("conv") && err.contains("0 of 3"), "{err}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
