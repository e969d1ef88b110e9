//! Training settings: `TrainConfig` as given, validated once into a `ValidTrainConfig`.

use burn::prelude::*;
use cnnu_model::{Catalogue, ResNetConfig, TapSet};

use crate::dataset::DatasetKind;

/// The taps sampled every epoch unless `--taps` says otherwise.
pub const DEFAULT_TAPS: &str = "conv1,bn1,relu,maxpool,layer1,layer2,layer3,layer4,avgpool,fc";

/// The optimizer, with PyTorch's defaults (Adam eps 1e-8; SGD without dampening).
#[derive(Config, Debug, PartialEq, Copy)]
pub enum OptimizerKind {
    /// Adam (beta 0.9, 0.999; eps 1e-8).
    Adam,
    /// SGD with momentum.
    Sgd,
}

/// Every setting of a training run; `config.json` in the run directory holds it resolved.
#[derive(Config, Debug, PartialEq)]
pub struct TrainConfig {
    /// Epochs to train.
    #[config(default = 3)]
    pub epochs: usize,
    /// Images per training step.
    #[config(default = 64)]
    pub batch_size: usize,
    /// Learning rate.
    #[config(default = 1e-3)]
    pub lr: f64,
    /// Optimizer.
    #[config(default = "OptimizerKind::Adam")]
    pub optimizer: OptimizerKind,
    /// Momentum of SGD (ignored by Adam).
    #[config(default = 0.9)]
    pub momentum: f64,
    /// Seed of the initial weights and of each epoch's shuffle.
    #[config(default = 0)]
    pub seed: u64,
    /// Train on a deterministic class-stratified subset of this many images.
    #[config(default = "None")]
    pub train_limit: Option<usize>,
    /// Evaluate on the first this-many test images (default: the whole test set).
    #[config(default = "None")]
    pub test_limit: Option<usize>,
    /// Sample the first this-many test images every epoch.
    #[config(default = 2000)]
    pub probe_limit: usize,
    /// Images per forward pass when sampling and evaluating.
    #[config(default = 250)]
    pub eval_batch_size: usize,
    /// The taps to record (a `TapSet` spec).
    #[config(default = "DEFAULT_TAPS.to_string()")]
    pub taps: String,
    /// The dataset (its channels and classes must be the model's).
    #[config(default = "DatasetKind::Mnist")]
    pub dataset: DatasetKind,
    /// The network.
    #[config(default = "ResNetConfig::new()")]
    pub model: ResNetConfig,
    /// Start from these weights (torchvision keys, safetensors) instead of the seeded init.
    #[config(default = "None")]
    pub init_weights: Option<std::path::PathBuf>,
    /// Shuffle the training images every epoch (off: file order, for comparisons with
    /// another framework fed the same batches).
    #[config(default = true)]
    pub shuffle: bool,
}

/// Fills in the settings that runs written by older cnnu versions lack, with the behaviour
/// those versions had (Burn's `Config` derive gives missing fields no serde default).
pub fn upgrade_train_json(train: &mut serde_json::Value) {
    if let Some(object) = train.as_object_mut() {
        object
            .entry("shuffle")
            .or_insert(serde_json::Value::Bool(true));
        object
            .entry("init_weights")
            .or_insert(serde_json::Value::Null);
        object
            .entry("dataset")
            .or_insert(serde_json::Value::String("Mnist".into()));
        if let Some(model) = object.get_mut("model").and_then(|m| m.as_object_mut()) {
            model
                .entry("arch")
                .or_insert(serde_json::Value::String("ResNet18".into()));
        }
    }
}

/// What is wrong with a training configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A parameter out of its range.
    #[error("--{name} {problem}")]
    Invalid {
        /// The option.
        name: &'static str,
        /// Why.
        problem: String,
    },
    /// The tap spec does not parse.
    #[error("--taps: {0}")]
    Taps(#[from] cnnu_model::TapError),
    /// The model configuration is invalid.
    #[error("model: {0}")]
    Model(#[from] cnnu_model::ModelError),
}

/// A checked [`TrainConfig`]: building one is the only way to start training.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidTrainConfig {
    config: TrainConfig,
    catalogue: Catalogue,
    taps: TapSet,
}

impl ValidTrainConfig {
    /// The settings.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The parsed tap selection.
    pub fn taps(&self) -> &TapSet {
        &self.taps
    }

    /// The network's tap catalogue, which the selection indexes.
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }
}

impl TrainConfig {
    /// Checks every parameter once.
    pub fn validate(self) -> Result<ValidTrainConfig, ConfigError> {
        let invalid = |name, problem: &str| {
            Err(ConfigError::Invalid {
                name,
                problem: problem.to_string(),
            })
        };
        if self.batch_size == 0 {
            return invalid("batch-size", "must be at least 1");
        }
        if self.eval_batch_size == 0 {
            return invalid("eval-batch-size", "must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return invalid("lr", &format!("must be a positive number, got {}", self.lr));
        }
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            return invalid(
                "momentum",
                &format!("must be in [0, 1), got {}", self.momentum),
            );
        }
        if self.train_limit == Some(0) {
            return invalid("train-limit", "must be at least 1");
        }
        if self.test_limit == Some(0) {
            return invalid("test-limit", "must be at least 1");
        }
        if self.probe_limit == 0 || self.probe_limit > 10_000 {
            return invalid(
                "probe-limit",
                &format!("must be in 1..=10000, got {}", self.probe_limit),
            );
        }
        self.model.validate()?;
        let channels = self.dataset.image_dims()[0];
        if self.model.in_channels != channels {
            return invalid(
                "dataset",
                &format!(
                    "{} has {channels}-channel images, the model takes {}",
                    self.dataset.name(),
                    self.model.in_channels
                ),
            );
        }
        let catalogue = self.model.arch.catalogue();
        let taps = catalogue.parse(&self.taps)?;
        Ok(ValidTrainConfig {
            config: self,
            catalogue,
            taps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_reference_study_settings_and_validate() {
        let c = TrainConfig::new();
        assert_eq!((c.batch_size, c.lr, c.probe_limit), (64, 1e-3, 2000));
        let v = c.validate().unwrap();
        assert_eq!(v.catalogue().spec(v.taps()), DEFAULT_TAPS);
    }

    #[test]
    fn bad_values_name_their_option() {
        let err = TrainConfig::new()
            .with_batch_size(0)
            .validate()
            .unwrap_err();
        assert_eq!(err.to_string(), "--batch-size must be at least 1");
        let err = TrainConfig::new().with_lr(-1.0).validate().unwrap_err();
        assert!(err.to_string().starts_with("--lr"));
        let err = TrainConfig::new()
            .with_probe_limit(10_001)
            .validate()
            .unwrap_err();
        assert!(err.to_string().starts_with("--probe-limit"));
        let err = TrainConfig::new()
            .with_taps("layer1.0.bn3".into())
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("layer1.0.bn1"), "{err}");
    }

    #[test]
    fn a_config_written_before_init_weights_shuffle_and_arch_still_loads() {
        let mut json: serde_json::Value = serde_json::to_value(TrainConfig::new()).unwrap();
        let object = json.as_object_mut().unwrap();
        object.remove("init_weights");
        object.remove("shuffle");
        object["model"].as_object_mut().unwrap().remove("arch");
        object.remove("dataset");
        upgrade_train_json(&mut json);
        let old: TrainConfig = serde_json::from_value(json).unwrap();
        assert!(old.shuffle && old.init_weights.is_none());
        assert_eq!(old.model.arch, cnnu_model::ResNetArch::ResNet18);
        assert_eq!(old.dataset, DatasetKind::Mnist);
    }

    #[test]
    fn config_round_trips_through_json() {
        let c = TrainConfig::new()
            .with_train_limit(Some(500))
            .with_optimizer(OptimizerKind::Sgd);
        let json = serde_json::to_string(&c).unwrap();
        let back: TrainConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(c, back);
    }
}
