//! Weights in torchvision's convention: a safetensors file as
//! `safetensors.torch.save_file(model.state_dict())` writes it. burn-store does the work; the
//! field names of [`ResNet18`] already are the state_dict keys, and its PyTorch adapters only
//! rename BatchNorm's `weight`/`bias` to Burn's `gamma`/`beta` and transpose `fc.weight`.

use std::path::{Path, PathBuf};

use burn_store::{
    ApplyError, BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore,
    SafetensorsStoreError,
};

use crate::resnet::ResNet18;

/// Errors from reading or writing torchvision-convention weights.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file could not be read or parsed as safetensors.
    #[error("{path}: cannot read weights: {source}")]
    Read {
        /// The weights file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: SafetensorsStoreError,
    },
    /// The file's keys or shapes do not fit the model.
    #[error("{path}: weights do not fit ResNet18: {}", describe(.missing, .unexpected, .mismatched))]
    Mismatch {
        /// The weights file.
        path: PathBuf,
        /// Model parameters that the file lacks.
        missing: Vec<String>,
        /// Keys in the file that the model has no place for.
        unexpected: Vec<String>,
        /// Keys whose shape or dtype differ, with both sides.
        mismatched: Vec<String>,
    },
    /// The file could not be written.
    #[error("{path}: cannot write weights: {source}")]
    Write {
        /// The weights file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: SafetensorsStoreError,
    },
}

fn describe(missing: &[String], unexpected: &[String], mismatched: &[String]) -> String {
    let mut parts = Vec::new();
    let list = |v: &[String]| {
        let shown: Vec<&str> = v.iter().take(8).map(String::as_str).collect();
        let more = v.len().saturating_sub(shown.len());
        if more > 0 {
            format!("{} (+{more} more)", shown.join(", "))
        } else {
            shown.join(", ")
        }
    };
    if !missing.is_empty() {
        parts.push(format!("missing keys: {}", list(missing)));
    }
    if !unexpected.is_empty() {
        parts.push(format!("unexpected keys: {}", list(unexpected)));
    }
    if !mismatched.is_empty() {
        parts.push(format!("shape mismatch: {}", list(mismatched)));
    }
    parts.join("; ")
}

/// One load problem in PyTorch's terms: Burn keeps `Linear` weights as `[in, out]`, so 2-D
/// shapes are reported transposed back to PyTorch's `[out, in]`.
fn describe_apply_error(e: &ApplyError) -> String {
    match e {
        ApplyError::ShapeMismatch {
            path,
            expected,
            found,
        } => {
            let torch = |s: &burn::tensor::Shape| {
                let mut d = s.to_vec();
                if d.len() == 2 {
                    d.reverse();
                }
                d
            };
            format!(
                "{path} is {:?} in the file, the model needs {:?}",
                torch(found),
                torch(expected)
            )
        }
        other => other.to_string(),
    }
}

/// PyTorch's BatchNorm step counter, which has no counterpart in the model.
fn is_ignored_key(key: &str) -> bool {
    key.ends_with("num_batches_tracked")
}

impl ResNet18 {
    /// Loads a torchvision-keyed safetensors file. Every model parameter must be present with
    /// its shape; `num_batches_tracked` keys are ignored and any other extra key is an error.
    pub fn load_torchvision(mut self, path: impl AsRef<Path>) -> Result<Self, WeightsError> {
        let path = path.as_ref();
        let mut store = SafetensorsStore::from_file(path)
            .with_from_adapter(PyTorchToBurnAdapter)
            // Collect every problem into one typed error instead of failing at the first.
            .allow_partial(true)
            .validate(false);
        let result = self
            .load_from(&mut store)
            .map_err(|source| WeightsError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        let missing: Vec<String> = result.missing.iter().map(|(p, _)| p.clone()).collect();
        let unexpected: Vec<String> = result
            .unused
            .iter()
            .filter(|k| !is_ignored_key(k))
            .cloned()
            .collect();
        let mismatched: Vec<String> = result.errors.iter().map(describe_apply_error).collect();
        if missing.is_empty() && unexpected.is_empty() && mismatched.is_empty() {
            Ok(self)
        } else {
            Err(WeightsError::Mismatch {
                path: path.to_path_buf(),
                missing,
                unexpected,
                mismatched,
            })
        }
    }

    /// Writes the parameters and BatchNorm statistics as torchvision's `state_dict` would
    /// (same keys, `fc.weight` as `[out, in]`); loading the file back gives the same bits.
    pub fn save_torchvision(&self, path: impl AsRef<Path>) -> Result<(), WeightsError> {
        let path = path.as_ref();
        let mut store = SafetensorsStore::from_file(path)
            .with_to_adapter(BurnToPyTorchAdapter)
            .overwrite(true);
        self.save_into(&mut store)
            .map_err(|source| WeightsError::Write {
                path: path.to_path_buf(),
                source,
            })
    }
}
