//! `metrics.jsonl`: one line of test (and training) figures per complete epoch. The file is
//! rewritten whole and atomically after each epoch, so its last line is always complete.

use crate::io_error::IoError;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// The epoch (0 = before training).
    pub epoch: usize,
    /// Mean training loss over the epoch (none at epoch 0).
    pub train_loss: Option<f64>,
    /// Training accuracy over the epoch (none at epoch 0).
    pub train_accuracy: Option<f64>,
    /// Mean cross-entropy on the test set.
    pub test_loss: f64,
    /// Accuracy on the test set.
    pub test_accuracy: f64,
    /// Training throughput (none at epoch 0).
    pub images_per_second: Option<f64>,
    /// Seconds spent on the epoch's training steps.
    pub train_seconds: f64,
    /// Seconds spent on the test set, the snapshot and the checkpoint.
    pub eval_seconds: f64,
    /// Throughput of the test pass alone, the model's inference speed (absent in runs written
    /// before it was recorded).
    #[serde(default)]
    pub test_images_per_second: Option<f64>,
}

/// Problems reading or writing `metrics.jsonl`.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The file could not be read or written.
    #[error(transparent)]
    Io(#[from] IoError),
    /// A line that is not a metrics line.
    #[error("{path}: line {line}: {problem}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
}

/// Reads `metrics.jsonl` (a missing file: no epochs yet).
pub fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>, MetricsError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(MetricsError::Io(IoError {
                path: path.to_path_buf(),
                source,
            }));
        }
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| MetricsError::Corrupt {
                path: path.to_path_buf(),
                line: i + 1,
                problem: e.to_string(),
            })
        })
        .collect()
}

/// Writes every line of `metrics.jsonl`, atomically.
pub fn write_metrics(path: &Path, metrics: &[EpochMetrics]) -> Result<(), MetricsError> {
    let mut text = String::new();
    for m in metrics {
        text.push_str(&serde_json::to_string(m).expect("metrics serialise"));
        text.push('\n');
    }
    crate::atomic::write_atomic(path, text.as_bytes()).map_err(|source| {
        MetricsError::Io(IoError {
            path: path.to_path_buf(),
            source,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let m = EpochMetrics {
            epoch: 1,
            train_loss: Some(0.25),
            train_accuracy: Some(0.9),
            test_loss: 0.125,
            test_accuracy: 0.96,
            images_per_second: Some(140.0),
            train_seconds: 430.5,
            eval_seconds: 20.0,
            test_images_per_second: Some(2500.0),
        };
        write_metrics(
            &p,
            &[
                m.clone(),
                EpochMetrics {
                    epoch: 2,
                    ..m.clone()
                },
            ],
        )
        .unwrap();
        let back = read_metrics(&p).unwrap();
        assert_eq!((back.len(), &back[0]), (2, &m));
        // A line from before `test_images_per_second` existed still reads.
        let old = "{\"epoch\":0,\"train_loss\":null,\"train_accuracy\":null,\"test_loss\":2.5,\
                   \"test_accuracy\":0.1,\"images_per_second\":null,\"train_seconds\":0.0,\
                   \"eval_seconds\":4.5}\n";
        fs::write(&p, old).unwrap();
        assert_eq!(read_metrics(&p).unwrap()[0].test_images_per_second, None);
        fs::write(&p, "{\"epoch\":0}\n").unwrap();
        let e = read_metrics(&p).unwrap_err();
        assert!(matches!(e, MetricsError::Corrupt { line: 1, .. }), "{e}");
        assert!(
            read_metrics(&dir.path().join("none.jsonl"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn every_f64_reads_back_bit_for_bit() {
        // Test losses of a real run that serde_json's default (fast) float parser read back one
        // ulp off, so that a resumed run's metrics differed from an uninterrupted one's.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let losses = [2.2916019035074466, 1.7469338575998943, 0.1 + 0.2];
        let m: Vec<EpochMetrics> = losses
            .iter()
            .enumerate()
            .map(|(epoch, &test_loss)| EpochMetrics {
                epoch,
                train_loss: Some(test_loss / 3.0),
                train_accuracy: None,
                test_loss,
                test_accuracy: 0.1875,
                images_per_second: None,
                train_seconds: 0.0,
                eval_seconds: 7.207384666,
                test_images_per_second: None,
            })
            .collect();
        write_metrics(&p, &m).unwrap();
        let back = read_metrics(&p).unwrap();
        for (a, b) in m.iter().zip(&back) {
            assert_eq!(
                a.test_loss.to_bits(),
                b.test_loss.to_bits(),
                "{}",
                a.test_loss
            );
            assert_eq!(
                a.train_loss.map(f64::to_bits),
                b.train_loss.map(f64::to_bits)
            );
        }
    }
}
