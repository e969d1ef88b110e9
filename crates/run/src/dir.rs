//! Where each file of a run directory lives.

use std::fs;
use std::path::{Path, PathBuf};

use crate::sample::{SampleFile, SampleName, SnapshotFormatError};

/// The files of a run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// A run directory at `root` (nothing is created yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `config.json`: every setting, resolved.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.json")
    }

    /// `metrics.jsonl`: one line per complete epoch.
    pub fn metrics_path(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    /// The snapshots directory.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// `snapshots/epoch-EEE.safetensors`.
    pub fn snapshot_path(&self, epoch: usize) -> PathBuf {
        self.sample_path(SampleName::Epoch(epoch))
    }

    /// `snapshots/<name>.safetensors`.
    pub fn sample_path(&self, name: SampleName) -> PathBuf {
        self.snapshots_dir().join(name.file_name())
    }

    /// `checkpoints/epoch-EEE/` holding `model.bpk` and `optimizer.bpk`.
    pub fn checkpoint_dir(&self, epoch: usize) -> PathBuf {
        self.root
            .join("checkpoints")
            .join(format!("epoch-{epoch:03}"))
    }

    /// `partial/`: files being written, renamed into place when complete.
    pub fn partial_dir(&self) -> PathBuf {
        self.root.join("partial")
    }

    /// `probe-images.safetensors`: the probe set's pixels (u8 [N, C, H, W]), labels and
    /// indices, written once when the run starts, for the report's explorer.
    pub fn probe_images_path(&self) -> PathBuf {
        self.root.join("probe-images.safetensors")
    }

    /// `analysis/`: what `cnnu analyze` writes.
    pub fn analysis_dir(&self) -> PathBuf {
        self.root.join("analysis")
    }

    /// The names of the complete snapshots, unordered.
    pub fn sample_names(&self) -> Vec<SampleName> {
        fs::read_dir(self.snapshots_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| SampleName::parse(&e.file_name().to_string_lossy()))
            .collect()
    }

    /// The epochs with a complete snapshot, ascending.
    pub fn snapshot_epochs(&self) -> Vec<usize> {
        let mut epochs: Vec<usize> = self
            .sample_names()
            .into_iter()
            .filter_map(|n| match n {
                SampleName::Epoch(e) => Some(e),
                SampleName::Step(_) => None,
            })
            .collect();
        epochs.sort_unstable();
        epochs
    }

    /// Every sample of the run in training order, each read from its header (format checked).
    pub fn samples(&self) -> Result<Vec<SampleFile>, SnapshotFormatError> {
        let mut samples = self
            .sample_names()
            .into_iter()
            .map(|n| SampleFile::read(&self.sample_path(n), n))
            .collect::<Result<Vec<_>, _>>()?;
        samples.sort_by_key(SampleFile::order_key);
        Ok(samples)
    }
}
