//! What the `cnnu` binary shows while the library works: a bar over each epoch's training
//! images (hidden when stderr is not a terminal, as indicatif does) and a line per sample,
//! per run and per seed, on stderr. The library reports through its progress traits and
//! prints nothing itself.

use std::path::Path;

use cnnu::study::{StudyEstimate, StudyProgress};
use cnnu::training::TrainRequest;
use cnnu_analysis::reporting::summary::Progress;
use cnnu_train::{EpochMetrics, TrainProgress};
use indicatif::{ProgressBar, ProgressStyle};

/// Progress on stderr.
#[derive(Default)]
pub struct Console {
    bar: Option<ProgressBar>,
}

impl Console {
    /// Nothing shown yet.
    pub fn new() -> Self {
        Self::default()
    }
}

impl TrainProgress for Console {
    fn resumed(&mut self, run: &Path, epoch: usize) {
        eprintln!("resuming {} after epoch {epoch}", run.display());
    }

    fn epoch_started(&mut self, epoch: usize, epochs: usize, images: usize) {
        let bar = ProgressBar::new(images as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{epoch}/{epochs}"));
        self.bar = Some(bar);
    }

    fn batch_done(&mut self, seen: usize, loss: f64, accuracy: f64, images_per_second: f64) {
        if let Some(bar) = &self.bar {
            bar.set_position(seen as u64);
            bar.set_message(format!(
                "loss {loss:.4} acc {accuracy:.3} {images_per_second:.0} img/s"
            ));
        }
    }

    fn epoch_trained(&mut self, _epoch: usize) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn sampled(&mut self, m: &EpochMetrics) {
        let test_speed = m
            .test_images_per_second
            .map(|ips| format!(" ({ips:.0} img/s)"))
            .unwrap_or_default();
        match (m.train_loss, m.train_accuracy, m.images_per_second) {
            (Some(loss), Some(acc), Some(ips)) => eprintln!(
                "epoch {:>3}: train loss {loss:.4} acc {acc:.4} ({ips:.0} img/s, {:.1} s) | test loss {:.4} acc {:.4}{test_speed}",
                m.epoch, m.train_seconds, m.test_loss, m.test_accuracy
            ),
            _ => eprintln!(
                "epoch {:>3}: before training | test loss {:.4} acc {:.4}{test_speed}",
                m.epoch, m.test_loss, m.test_accuracy
            ),
        }
    }
}

impl StudyProgress for Console {
    fn downloading(&mut self, url: &str) {
        eprintln!("downloading {url}");
    }

    fn planned(&mut self, e: &StudyEstimate) {
        eprintln!(
            "cnnu study: {} seed(s) × {} training images × {} epoch(s), sampled at step 0, {} and every \
             epoch end, {} probe images, {} taps; expected time about {:.0} min on 2 CPU cores (flex)",
            e.seeds,
            e.train_images,
            e.epochs,
            e.sample_at,
            e.probe_images,
            e.layers,
            (e.seconds / 60.0).max(1.0)
        );
    }

    fn run_started(&mut self, request: &TrainRequest, source: &str) {
        eprintln!("{}", run_line(request, source));
    }

    fn analysed(&self, pair: Progress<'_>) {
        eprintln!("{}", pair.line());
    }

    fn seed_done(&mut self, seed: u64, elapsed: f64, done: usize, left: usize) {
        if left > 0 {
            eprintln!("{}", remaining_words(seed, elapsed, done, left));
        }
    }
}

/// The line that opens a training run.
pub fn run_line(request: &TrainRequest, source: &str) -> String {
    let c = request.config.config();
    format!(
        "cnnu train: {} on {}, {}, {} epochs, seed {}, sampled at step 0, {} and every epoch end; {} from {source}",
        request.run.root().display(),
        request.backend,
        c.model.arch.name(),
        c.epochs,
        c.seed,
        c.sample_at,
        c.dataset.title(),
    )
}

/// The estimate revised on this machine's own speed once `done` seeds took `elapsed` seconds
/// (seeds cost the same, so the mean so far times the seeds left).
fn remaining_words(seed: u64, elapsed: f64, done: usize, left: usize) -> String {
    let per_seed = elapsed / done as f64;
    format!(
        "cnnu study: seed {seed} done, {:.1} min per seed so far; the {left} seed(s) left take about {:.0} min more",
        per_seed / 60.0,
        (per_seed * left as f64 / 60.0).max(1.0)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_estimate_is_revised_on_the_seeds_done() {
        // Two seeds in 20 min: 10 min each, so the one left takes 10 more.
        let words = super::remaining_words(1, 1200.0, 2, 1);
        assert!(words.contains("10.0 min per seed"), "{words}");
        assert!(
            words.contains("the 1 seed(s) left take about 10 min more"),
            "{words}"
        );
    }
}
