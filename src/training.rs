//! One training run from a validated configuration, fresh or resumed: what `cnnu train` and
//! each seed of `cnnu study` do.

use cnnu_model::BackendKind;
use cnnu_train::{
    ImageDataset, RunDir, RunOptions, RunSummary, TrainError, TrainProgress, ValidTrainConfig,
};

/// A training run to do.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    /// The settings (a resumed run's own, from its config.json).
    pub config: ValidTrainConfig,
    /// The backend to train on.
    pub backend: BackendKind,
    /// The run directory.
    pub run: RunDir,
    /// Continue after the run's last complete epoch instead of starting it.
    pub resume: bool,
}

/// Trains (or resumes) the run on `dataset`, read from `source`, reporting to `progress`.
pub fn train_run(
    request: &TrainRequest,
    dataset: &ImageDataset,
    source: &str,
    progress: &mut dyn TrainProgress,
) -> Result<RunSummary, TrainError> {
    cnnu_train::train(
        &request.config,
        request.backend,
        dataset,
        source,
        &request.run,
        RunOptions {
            resume: request.resume,
        },
        progress,
    )
}
