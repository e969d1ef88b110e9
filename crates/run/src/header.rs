//! The one reader of a safetensors header: the 8-byte little-endian length, then that many
//! bytes of JSON, `{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {key: value}}`.
//! Snapshots (their metadata), torchvision weights files (their shapes) and the activation
//! reader (a mapped snapshot's metadata) all read it here, so the size checks live once: the
//! length is checked against the file (and safetensors' own 100 MB cap) before anything is
//! allocated, and every problem is one line.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::Deserialize;

/// The largest header accepted; safetensors' own limit.
pub const MAX_HEADER: u64 = 100_000_000;

/// The key of the string-to-string metadata in the header.
pub const METADATA_KEY: &str = "__metadata__";

/// One tensor's entry in the header.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TensorEntry {
    /// The tensor's name (filled in from the header's key).
    #[serde(skip)]
    pub name: String,
    /// Its dtype as safetensors spells it (`F32`, `I64`, `U8`, …).
    pub dtype: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Where its bytes lie, relative to the end of the header.
    pub data_offsets: [u64; 2],
}

/// A safetensors header: the tensors in the order of their data (the order they were written),
/// and the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SafetensorsHeader {
    /// Every tensor, by ascending data offset.
    pub tensors: Vec<TensorEntry>,
    /// `__metadata__` (empty when the header has none).
    pub metadata: BTreeMap<String, String>,
}

/// Why a header could not be read; the message is one line, without the file's path (the
/// caller's error names it).
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The file could not be opened or read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Shorter than the 8-byte header length.
    #[error("not a safetensors file ({0} bytes, too short for a header)")]
    TooShort(u64),
    /// The header length is more than the file holds or the format allows.
    #[error("not a safetensors file (header of {len} bytes in a file of {file} bytes)")]
    TooLong {
        /// The length the file states.
        len: u64,
        /// The file's size.
        file: u64,
    },
    /// The header is not the JSON the format says.
    #[error("bad safetensors header: {0}")]
    Json(String),
}

impl SafetensorsHeader {
    /// Reads the header of the file at `path`, and nothing of its data.
    pub fn read(path: &Path) -> Result<Self, HeaderError> {
        let mut file = File::open(path)?;
        let size = file.metadata()?.len();
        let mut len = [0u8; 8];
        if size < 8 {
            return Err(HeaderError::TooShort(size));
        }
        file.read_exact(&mut len)?;
        let len = checked_len(u64::from_le_bytes(len), size)?;
        let mut json = vec![0u8; len];
        file.read_exact(&mut json)?;
        Self::from_json(&json)
    }

    /// Parses the header at the start of a whole file's bytes (a memory map, a buffer).
    pub fn parse(bytes: &[u8]) -> Result<Self, HeaderError> {
        let size = bytes.len() as u64;
        let Some((len, rest)) = bytes.split_first_chunk::<8>() else {
            return Err(HeaderError::TooShort(size));
        };
        let len = checked_len(u64::from_le_bytes(*len), size)?;
        Self::from_json(&rest[..len])
    }

    fn from_json(json: &[u8]) -> Result<Self, HeaderError> {
        let bad = |e: serde_json::Error| HeaderError::Json(e.to_string());
        let entries: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(json).map_err(bad)?;
        let mut header = Self::default();
        for (name, value) in entries {
            if name == METADATA_KEY {
                header.metadata = serde_json::from_value(value)
                    .map_err(|e| HeaderError::Json(format!("{METADATA_KEY}: {e}")))?;
            } else {
                let mut entry: TensorEntry = serde_json::from_value(value)
                    .map_err(|e| HeaderError::Json(format!("`{name}`: {e}")))?;
                entry.name = name;
                header.tensors.push(entry);
            }
        }
        header.tensors.sort_by_key(|t| t.data_offsets);
        Ok(header)
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// The stated header length, when the file (of `size` bytes, the 8 of the length included)
/// holds it and it is within the format's cap.
fn checked_len(len: u64, size: u64) -> Result<usize, HeaderError> {
    if len > MAX_HEADER || len > size - 8 {
        return Err(HeaderError::TooLong { len, file: size });
    }
    Ok(len as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str, data: usize) -> Vec<u8> {
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(json.as_bytes());
        bytes.resize(bytes.len() + data, 0);
        bytes
    }

    #[test]
    fn tensors_come_in_data_order_with_the_metadata() {
        let bytes = file(
            r#"{"b":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]},
                "a":{"dtype":"I64","shape":[1],"data_offsets":[8,16]},
                "__metadata__":{"epoch":"2"}}"#,
            16,
        );
        let h = SafetensorsHeader::parse(&bytes).unwrap();
        let names: Vec<&str> = h.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(h.tensor("b").unwrap().shape, [1, 2]);
        assert_eq!(h.metadata["epoch"], "2");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.safetensors");
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(SafetensorsHeader::read(&p).unwrap(), h);
    }

    #[test]
    fn lengths_past_the_file_are_refused_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.safetensors");
        // A zip's first bytes as a length: about 2^60, in a 35-byte file.
        let zip = b"PK\x03\x04 this is a zip, not safetensors";
        std::fs::write(&p, zip).unwrap();
        let e = SafetensorsHeader::read(&p).unwrap_err().to_string();
        assert!(e.starts_with("not a safetensors file (header of "), "{e}");
        assert!(e.ends_with("in a file of 35 bytes)"), "{e}");
        // One byte more than the file holds.
        let mut short = file("{}", 0);
        short[0] = 3;
        assert!(matches!(
            SafetensorsHeader::parse(&short),
            Err(HeaderError::TooLong { len: 3, file: 10 })
        ));
        assert!(matches!(
            SafetensorsHeader::parse(b"1234"),
            Err(HeaderError::TooShort(4))
        ));
        std::fs::write(&p, b"").unwrap();
        assert!(matches!(
            SafetensorsHeader::read(&p),
            Err(HeaderError::TooShort(0))
        ));
        let bad = file(r#"{"__metadata__":{"epoch":2}}"#, 0);
        let e = SafetensorsHeader::parse(&bad).unwrap_err().to_string();
        assert!(
            e.starts_with("bad safetensors header: __metadata__:"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
}
