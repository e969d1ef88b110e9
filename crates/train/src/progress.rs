//! What a training run reports while it works. The library prints nothing: the caller passes
//! a [`TrainProgress`] and decides what to show (the `cnnu` binary draws a bar over each epoch
//! and prints a line per sample); `()` shows nothing.

use std::path::Path;

use cnnu_run::EpochMetrics;

/// Receives a run's progress; every method has an empty default.
pub trait TrainProgress {
    /// The run continues after `epoch`, from the checkpoint in `run`.
    fn resumed(&mut self, _run: &Path, _epoch: usize) {}
    /// Epoch `epoch` of `epochs` starts, over `images` training images.
    fn epoch_started(&mut self, _epoch: usize, _epochs: usize, _images: usize) {}
    /// `seen` images of the epoch are done: the mean loss and accuracy so far, and the speed.
    fn batch_done(&mut self, _seen: usize, _loss: f64, _accuracy: f64, _images_per_second: f64) {}
    /// The epoch's training pass is over (its test pass and sample follow).
    fn epoch_trained(&mut self, _epoch: usize) {}
    /// A sample at an epoch end (epoch 0: before training) is on disk, with its metrics.
    fn sampled(&mut self, _metrics: &EpochMetrics) {}
}

/// Reports nothing.
impl TrainProgress for () {}
