//! A typed, read-only view of a run's `config.json`: the few settings readers outside training
//! need (which runs are one setup), without the Burn types of the full configuration.
//!
//! `cnnu-train` owns the file: it writes its `RunConfig` there (`train` is its `TrainConfig`).
//! This crate cannot depend on `cnnu-train`, so the view repeats the fields it reads, by the
//! same names and serde shapes. **It must stay in step with `cnnu_train::RunConfig`**: the test
//! `run_config_reads_back_through_the_view` in `cnnu-train` serialises a real `RunConfig` and
//! reads it back through this view, so a renamed or retyped field fails there.
//!
//! The view is tolerant: unknown fields are ignored (the file holds every setting), and a field
//! it names may be absent (runs of older cnnu versions lack some), which reads as `None`.

use crate::io_error::IoError;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::RunDir;

/// `config.json` as readers outside training see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfigView {
    /// The training settings.
    pub train: TrainView,
}

/// The training settings that decide what a run samples (its setup); the seed is left out.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TrainView {
    /// The dataset, as `DatasetKind` serialises (`"Mnist"`, `"Cifar10"`, …).
    #[serde(default)]
    pub dataset: Option<String>,
    /// The network.
    #[serde(default)]
    pub model: Option<ModelView>,
    /// Probe images sampled.
    #[serde(default)]
    pub probe_limit: Option<usize>,
    /// The tap spec as given (`conv1,layer1,...`).
    #[serde(default)]
    pub taps: Option<String>,
    /// Where the run samples inside epochs.
    #[serde(default)]
    pub sample_at: Option<SampleAtView>,
    /// The training subset's size (none: the whole training split, or absent).
    #[serde(default)]
    pub train_limit: Option<usize>,
    /// Images per training step.
    #[serde(default)]
    pub batch_size: Option<usize>,
}

/// The network's configuration, as `ResNetConfig` serialises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelView {
    /// `"ResNet18"` or `"ResNet34"` (absent in runs from before ResNet-34: ResNet-18).
    #[serde(default)]
    pub arch: Option<String>,
    /// Input channels.
    pub in_channels: usize,
    /// Output classes.
    pub num_classes: usize,
}

/// Where a run samples inside epochs, as `SampleAt` serialises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SampleAtView {
    /// Nowhere inside epochs.
    None,
    /// At these global steps.
    Steps(Vec<u64>),
    /// At N log-spaced steps of the first epoch.
    Log(usize),
}

/// Why a run's `config.json` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigViewError {
    /// The file is not there: the directory holds no run.
    #[error("{0}: no config.json here, so there is no run")]
    NoRun(PathBuf),
    /// The file could not be read.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The file is not a run configuration (bad JSON, or a field of the wrong type).
    #[error("{path}: {problem}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        problem: String,
    },
}

impl RunConfigView {
    /// Reads `run`'s `config.json`.
    pub fn read(run: &RunDir) -> Result<Self, ConfigViewError> {
        let path = run.config_path();
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ConfigViewError::NoRun(run.root().to_path_buf()),
            _ => ConfigViewError::Io(IoError {
                path: path.clone(),
                source: e,
            }),
        })?;
        serde_json::from_str(&text).map_err(|e| ConfigViewError::Corrupt {
            path,
            problem: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_fields_are_ignored_and_missing_ones_are_none() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        std::fs::write(
            run.config_path(),
            r#"{"train": {"seed": 3, "taps": "conv1", "sample_at": {"Log": 3},
                "model": {"in_channels": 1, "num_classes": 10}}, "backend": "flex"}"#,
        )
        .unwrap();
        let v = RunConfigView::read(&run).unwrap();
        assert_eq!(v.train.taps.as_deref(), Some("conv1"));
        assert_eq!(v.train.sample_at, Some(SampleAtView::Log(3)));
        assert_eq!(v.train.model.unwrap().arch, None);
        assert_eq!((v.train.dataset, v.train.batch_size), (None, None));
    }

    #[test]
    fn a_wrong_type_or_no_file_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        assert!(matches!(
            RunConfigView::read(&run),
            Err(ConfigViewError::NoRun(_))
        ));
        std::fs::write(run.config_path(), r#"{"train": {"taps": 5}}"#).unwrap();
        let e = RunConfigView::read(&run).unwrap_err();
        assert!(matches!(e, ConfigViewError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("config.json: invalid type"), "{e}");
    }
}
