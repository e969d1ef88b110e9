//! One training run from a validated configuration, fresh or resumed: what `cnnu train` and
//! each seed of `cnnu study` do.

use anyhow::Result;

use cnnu_model::BackendKind;
use cnnu_train::{ImageDataset, RunDir, RunOptions, RunSummary, ValidTrainConfig};

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

/// Trains (or resumes) the run on `dataset`, read from `source`, with a progress bar.
pub fn train_run(
    request: &TrainRequest,
    dataset: &ImageDataset,
    source: &str,
) -> Result<RunSummary> {
    let c = request.config.config();
    eprintln!(
        "cnnu train: {} on {}, {}, {} epochs, seed {}, sampled at step 0, {} and every epoch end; {} from {source}",
        request.run.root().display(),
        request.backend,
        c.model.arch.name(),
        c.epochs,
        c.seed,
        c.sample_at,
        c.dataset.title(),
    );
    Ok(cnnu_train::train(
        &request.config,
        request.backend,
        dataset,
        source,
        &request.run,
        RunOptions {
            resume: request.resume,
            progress: true,
        },
    )?)
}
