//! Progress bars for long work (hidden when stderr is not a terminal, as indicatif does).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over one epoch's training images.
pub fn epoch_bar(show: bool, epoch: usize, epochs: usize, images: usize) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(images as u64);
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar
}
