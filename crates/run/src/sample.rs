//! Samples: the frozen network taken at one optimizer step, recorded on the probe set into one
//! snapshot file. Here are their file names (`epoch-EEE` at step 0 and every epoch end,
//! `step-SSSSSSS` inside an epoch), the reserved tensor names, the metadata keys and the format
//! version every reader checks.

use crate::io_error::IoError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::header::{HeaderError, SafetensorsHeader};

/// The snapshot format this cnnu writes, as the `format` metadata entry.
pub const FORMAT: &str = "cnnu-snapshot-1";
/// The formats this cnnu reads.
const READABLE: [&str; 1] = [FORMAT];

/// Metadata key of the format version.
pub const KEY_FORMAT: &str = "format";
/// Metadata key of the whole epochs completed when the sample was taken.
pub const KEY_EPOCH: &str = "epoch";
/// Metadata key of the optimizer steps done when the sample was taken.
pub const KEY_STEP: &str = "step";

/// The probe images' labels, i64 `[N]`.
pub const LABELS: &str = "labels";
/// The network's predicted class per probe image, i64 `[N]`.
pub const PREDICTIONS: &str = "predictions";
/// The probe images' indices into the test split, i64 `[N]`: the same images in every sample.
pub const INDICES: &str = "indices";
/// The network's logits, f32 [N, classes]: kept for predictions, not a tap.
pub const LOGITS: &str = "logits";
/// The probe images as u8 [N, C, H, W], in `probe-images.safetensors` (not in snapshots).
pub const IMAGES: &str = "images";
/// Tensor names that are not taps.
pub const RESERVED: [&str; 3] = [LABELS, PREDICTIONS, INDICES];

/// The name of a sample's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SampleName {
    /// `epoch-EEE`: before training (0) or at the end of epoch EEE.
    Epoch(usize),
    /// `step-SSSSSSS`: after SSSSSSS optimizer steps, inside an epoch.
    Step(u64),
}

impl SampleName {
    /// The file stem, `epoch-003` or `step-0000040`.
    pub fn stem(self) -> String {
        match self {
            SampleName::Epoch(e) => format!("epoch-{e:03}"),
            SampleName::Step(s) => format!("step-{s:07}"),
        }
    }

    /// The file name, with `.safetensors`.
    pub fn file_name(self) -> String {
        format!("{}.safetensors", self.stem())
    }

    /// A short label for tables and plots: `epoch 2` or `step 40`.
    pub fn label(self) -> String {
        match self {
            SampleName::Epoch(e) => format!("epoch {e}"),
            SampleName::Step(s) => format!("step {s}"),
        }
    }

    /// Parses a file name written by [`SampleName::file_name`].
    pub fn parse(file_name: &str) -> Option<Self> {
        Self::from_stem(file_name.strip_suffix(".safetensors")?)
    }

    /// Parses a stem written by [`SampleName::stem`].
    pub fn from_stem(stem: &str) -> Option<Self> {
        if let Some(e) = stem.strip_prefix("epoch-") {
            return digits(e)?.parse().ok().map(SampleName::Epoch);
        }
        let s = stem.strip_prefix("step-")?;
        digits(s)?.parse().ok().map(SampleName::Step)
    }
}

/// `s` when it is all ASCII digits (so `epoch-1.tmp` or `epoch--1` are not samples).
fn digits(s: &str) -> Option<&str> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then_some(s)
}

/// The order of samples in a run: by epochs completed, then by step, the epoch-end sample after
/// any step sample of the same epoch count (old runs have no steps: their epoch files order by
/// epoch alone).
pub fn order_key(name: SampleName, step: Option<u64>, epoch: usize) -> (usize, u64, bool) {
    (
        epoch,
        step.unwrap_or(0),
        matches!(name, SampleName::Epoch(_)),
    )
}

/// A sample's file with where it sits on the training axis.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleFile {
    /// Its name.
    pub name: SampleName,
    /// The file.
    pub path: PathBuf,
    /// Optimizer steps done (None in runs from before step sampling).
    pub step: Option<u64>,
    /// Whole epochs completed.
    pub epoch: usize,
}

impl SampleFile {
    /// Reads where the sample sits from its metadata (the name alone for old files).
    pub fn read(path: &Path, name: SampleName) -> Result<Self, SnapshotFormatError> {
        let meta = read_metadata(path)?;
        SnapshotFormat::check(path, &meta)?;
        let step = meta.get(KEY_STEP).and_then(|s| s.parse().ok());
        let epoch = match (name, meta.get(KEY_EPOCH).and_then(|e| e.parse().ok())) {
            (_, Some(e)) => e,
            (SampleName::Epoch(e), None) => e,
            (SampleName::Step(_), None) => {
                return Err(SnapshotFormatError::Missing {
                    path: path.to_path_buf(),
                    key: KEY_EPOCH,
                });
            }
        };
        Ok(Self {
            name,
            path: path.to_path_buf(),
            step: step.or(match name {
                SampleName::Step(s) => Some(s),
                SampleName::Epoch(_) => None,
            }),
            epoch,
        })
    }

    /// Its place in the run's training order (see [`order_key`]).
    pub fn order_key(&self) -> (usize, u64, bool) {
        order_key(self.name, self.step, self.epoch)
    }

    /// A short label for tables and plots: `epoch 2` or `step 40`.
    pub fn label(&self) -> String {
        self.name.label()
    }
}

/// Problems with a snapshot's header or version.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFormatError {
    /// The file could not be read.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The safetensors header is not what the format says.
    #[error("{path}: {problem}")]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Written in a format this cnnu does not read.
    #[error(
        "{path}: snapshot format {found:?}, this cnnu reads {READABLE:?} (written by a newer cnnu?)"
    )]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// The format it says it is.
        found: String,
    },
    /// A metadata entry the file needs is missing.
    #[error("{path}: snapshot metadata has no {key:?}")]
    Missing {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
    },
}

impl SnapshotFormatError {
    /// A header that [`SafetensorsHeader`] could not read, as this file's error.
    pub fn from_header(path: &Path, e: HeaderError) -> Self {
        match e {
            HeaderError::Io(source) => SnapshotFormatError::Io(IoError {
                path: path.to_path_buf(),
                source,
            }),
            problem => SnapshotFormatError::Header {
                path: path.to_path_buf(),
                problem: problem.to_string(),
            },
        }
    }
}

/// The version check every reader of a snapshot makes.
pub struct SnapshotFormat;

impl SnapshotFormat {
    /// Accepts the formats this cnnu reads, and files from before the `format` entry.
    pub fn check(path: &Path, meta: &BTreeMap<String, String>) -> Result<(), SnapshotFormatError> {
        match meta.get(KEY_FORMAT) {
            Some(f) if !READABLE.contains(&f.as_str()) => Err(SnapshotFormatError::Unsupported {
                path: path.to_path_buf(),
                found: f.clone(),
            }),
            _ => Ok(()),
        }
    }
}

/// A snapshot's `__metadata__` entries, read from its header alone (the tensors stay on disk).
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>, SnapshotFormatError> {
    SafetensorsHeader::read(path)
        .map(|h| h.metadata)
        .map_err(|e| SnapshotFormatError::from_header(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_not_samples() {
        for n in [
            SampleName::Epoch(0),
            SampleName::Epoch(12),
            SampleName::Step(40),
        ] {
            assert_eq!(SampleName::parse(&n.file_name()), Some(n));
        }
        assert_eq!(SampleName::Step(40).file_name(), "step-0000040.safetensors");
        assert_eq!(SampleName::Epoch(3).file_name(), "epoch-003.safetensors");
        for s in [
            "epoch-1.tmp",
            "epoch-.safetensors",
            "step--1.safetensors",
            "x.safetensors",
        ] {
            assert_eq!(SampleName::parse(s), None, "{s}");
        }
    }

    fn write_header(path: &Path, meta: &str) {
        let json = format!("{{\"__metadata__\":{meta}}}");
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(json.as_bytes());
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn metadata_gives_the_step_and_the_version_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("step-0000040.safetensors");
        write_header(
            &p,
            r#"{"format":"cnnu-snapshot-1","epoch":"0","step":"40"}"#,
        );
        let s = SampleFile::read(&p, SampleName::Step(40)).unwrap();
        assert_eq!(
            (s.epoch, s.step, s.order_key()),
            (0, Some(40), (0, 40, false))
        );
        let old = dir.path().join("epoch-002.safetensors");
        write_header(&old, r#"{"epoch":"2"}"#);
        let s = SampleFile::read(&old, SampleName::Epoch(2)).unwrap();
        assert_eq!((s.epoch, s.step), (2, None));
        write_header(&old, r#"{"format":"cnnu-snapshot-9","epoch":"2"}"#);
        let e = SampleFile::read(&old, SampleName::Epoch(2)).unwrap_err();
        assert!(e.to_string().contains("cnnu-snapshot-9"), "{e}");
    }
}
