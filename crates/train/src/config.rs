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

/// Where a run samples the frozen network inside its epochs, besides step 0 and every epoch
/// end (which are always sampled).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum SampleAt {
    /// Nowhere inside epochs.
    #[default]
    None,
    /// At these global optimizer steps (`0,5,12,100`).
    Steps(Vec<u64>),
    /// At N steps spaced logarithmically from 1 to the end of the first epoch (`log:N`).
    Log(usize),
}

impl std::str::FromStr for SampleAt {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s == "none" {
            return Ok(SampleAt::None);
        }
        if let Some(n) = s.strip_prefix("log:") {
            return match n.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(SampleAt::Log(n)),
                _ => Err(format!("log:N needs a whole number N ≥ 1, got {n:?}")),
            };
        }
        s.split(',')
            .map(|t| {
                t.trim().parse::<u64>().map_err(|_| {
                    format!("{t:?} is not a step number (a list like 0,5,12,100 or log:N)")
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(SampleAt::Steps)
    }
}

impl std::fmt::Display for SampleAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SampleAt::None => f.write_str("none"),
            SampleAt::Log(n) => write!(f, "log:{n}"),
            SampleAt::Steps(s) => {
                let s: Vec<String> = s.iter().map(u64::to_string).collect();
                f.write_str(&s.join(","))
            }
        }
    }
}

impl SampleAt {
    /// The steps strictly inside epochs, ascending: step 0 and the epoch ends are left out
    /// (their `epoch-EEE` samples are taken anyway), as are steps past `total` (the caller
    /// checks an explicit list against it first).
    pub fn inner_steps(&self, steps_per_epoch: u64, total: u64) -> Vec<u64> {
        let mut steps: Vec<u64> = match self {
            SampleAt::None => Vec::new(),
            SampleAt::Steps(s) => s.clone(),
            SampleAt::Log(n) => log_steps(*n, steps_per_epoch),
        };
        steps.retain(|&s| s > 0 && s < total && s % steps_per_epoch.max(1) != 0);
        steps.sort_unstable();
        steps.dedup();
        steps
    }
}

/// `n` steps from 1 to `end` spaced evenly in log(step), rounded; fewer where rounding
/// makes two equal (the first steps of a short epoch).
fn log_steps(n: usize, end: u64) -> Vec<u64> {
    if n == 1 || end <= 1 {
        return vec![end.max(1)];
    }
    let top = (end as f64).ln();
    let mut steps: Vec<u64> = (0..n)
        .map(|i| (top * i as f64 / (n - 1) as f64).exp().round() as u64)
        .collect();
    steps.dedup();
    steps
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
    /// Where to sample inside epochs (step 0 and every epoch end are always sampled).
    #[config(default = "SampleAt::None")]
    pub sample_at: SampleAt,
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
            .entry("sample_at")
            .or_insert(serde_json::Value::String("None".into()));
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
    #[error("{name} {problem}")]
    Invalid {
        /// The field of [`TrainConfig`].
        name: &'static str,
        /// Why.
        problem: String,
    },
    /// The tap spec does not parse.
    #[error("taps: {0}")]
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

    /// The same settings with another seed (every seed is valid).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
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
            return invalid("batch_size", "must be at least 1");
        }
        if self.eval_batch_size == 0 {
            return invalid("eval_batch_size", "must be at least 1");
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
            return invalid("train_limit", "must be at least 1");
        }
        if self.test_limit == Some(0) {
            return invalid("test_limit", "must be at least 1");
        }
        if self.probe_limit == 0 || self.probe_limit > 10_000 {
            return invalid(
                "probe_limit",
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
        assert_eq!(err.to_string(), "batch_size must be at least 1");
        let err = TrainConfig::new().with_lr(-1.0).validate().unwrap_err();
        assert!(err.to_string().starts_with("lr "));
        let err = TrainConfig::new()
            .with_probe_limit(10_001)
            .validate()
            .unwrap_err();
        assert!(err.to_string().starts_with("probe_limit"));
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
        object.remove("sample_at");
        upgrade_train_json(&mut json);
        let old: TrainConfig = serde_json::from_value(json).unwrap();
        assert!(old.shuffle && old.init_weights.is_none());
        assert_eq!(old.model.arch, cnnu_model::ResNetArch::ResNet18);
        assert_eq!(old.dataset, DatasetKind::Mnist);
        assert_eq!(old.sample_at, SampleAt::None);
    }

    #[test]
    fn sample_at_parses_and_resolves_inside_epochs() {
        let s: SampleAt = "0,5,12,100".parse().unwrap();
        assert_eq!(s, SampleAt::Steps(vec![0, 5, 12, 100]));
        assert_eq!(s.to_string(), "0,5,12,100");
        // 0 is epoch-000 and 100 an epoch end (50 steps per epoch); 120 is past the end.
        let s: SampleAt = "0,5,12,100,50,120".parse().unwrap();
        assert_eq!(s.inner_steps(50, 110), vec![5, 12]);
        assert!("log:0".parse::<SampleAt>().is_err());
        assert!("5,x".parse::<SampleAt>().unwrap_err().contains("\"x\""));
        // log:12 over MNIST's 938 steps per epoch: e^(ln 938 · i/11), rounded (as numpy gives
        // them); 938 itself is
        // the epoch end.
        let log: SampleAt = "log:12".parse().unwrap();
        assert_eq!(
            log.inner_steps(938, 3 * 938),
            vec![1, 2, 3, 6, 12, 22, 42, 78, 145, 270, 504]
        );
        assert_eq!(SampleAt::Log(3).inner_steps(100, 300), vec![1, 10]);
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
