//! Weights in torchvision's convention: a safetensors file as
//! `safetensors.torch.save_file(model.state_dict())` writes it. burn-store does the work; the
//! field names of [`ResNet`] already are the state_dict keys, and its PyTorch adapters only
//! rename BatchNorm's `weight`/`bias` to Burn's `gamma`/`beta` and transpose `fc.weight`.

use std::path::{Path, PathBuf};

use burn_store::{
    ApplyError, BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore,
    SafetensorsStoreError,
};

use cnnu_run::SafetensorsHeader;

use crate::resnet::{ResNet, ResNetArch, ResNetConfig};

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
    #[error("{path}: weights do not fit {model}: {}", describe(.missing, .unexpected, .mismatched))]
    Mismatch {
        /// The weights file.
        path: PathBuf,
        /// The network they were loaded into (`resnet18`).
        model: &'static str,
        /// Model parameters that the file lacks.
        missing: Vec<String>,
        /// Keys in the file that the model has no place for.
        unexpected: Vec<String>,
        /// Keys whose shape or dtype differ, with both sides.
        mismatched: Vec<String>,
    },
    /// The file's header cannot be read.
    #[error("{path}: cannot read weights: {problem}")]
    Header {
        /// The weights file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The file's keys are not those of a known ResNet.
    #[error("{path}: not torchvision ResNet-18 or ResNet-34 weights: {problem}")]
    NotResNet {
        /// The weights file.
        path: PathBuf,
        /// What does not fit.
        problem: String,
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

impl ResNet {
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
                model: ResNetArch::from_blocks(self.blocks())
                    .map_or("this ResNet", ResNetArch::name),
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

impl ResNetConfig {
    /// The configuration a torchvision-keyed weights file was saved from: the depth from its
    /// `layerS.B.*` keys, input channels from `conv1.weight`, classes from `fc.weight`. Reads
    /// the safetensors header only.
    pub fn of_torchvision_file(path: impl AsRef<Path>) -> Result<Self, WeightsError> {
        let path = path.as_ref();
        let not_resnet = |problem: String| WeightsError::NotResNet {
            path: path.to_path_buf(),
            problem,
        };
        let header = SafetensorsHeader::read(path).map_err(|e| WeightsError::Header {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })?;
        let shape = |key: &str| {
            header
                .tensor(key)
                .map(|t| t.shape.clone())
                .ok_or_else(|| not_resnet(format!("no `{key}`")))
        };
        let conv1 = shape("conv1.weight")?;
        let fc = shape("fc.weight")?;
        let (&[_, in_channels, _, _], &[num_classes, _]) = (conv1.as_slice(), fc.as_slice()) else {
            return Err(not_resnet(format!(
                "conv1.weight is {conv1:?} and fc.weight {fc:?}"
            )));
        };
        let mut blocks = [0usize; 4];
        for key in header.tensors.iter().map(|t| &t.name) {
            let mut parts = key.split('.');
            let stage = parts.next().and_then(|s| s.strip_prefix("layer"));
            let block = parts.next().and_then(|b| b.parse::<usize>().ok());
            if let (Some(Ok(s @ 1..=4)), Some(b)) = (stage.map(str::parse::<usize>), block) {
                blocks[s - 1] = blocks[s - 1].max(b + 1);
            }
        }
        let arch = ResNetArch::from_blocks(blocks)
            .ok_or_else(|| not_resnet(format!("blocks per stage {blocks:?}")))?;
        Ok(ResNetConfig {
            arch,
            in_channels,
            num_classes,
        })
    }
}
