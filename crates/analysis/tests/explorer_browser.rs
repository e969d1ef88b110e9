//! The explorer in a real browser: headless Chromium loads a page around the fragment and dumps
//! its DOM, whose root must say `data-ready="true"` and carry no `data-error`; with `#test` the
//! script also hovers the first point and clicks the first heatmap cell with real events.
//! Without Chromium the browser check is skipped with one line, or fails when
//! `CNNU_REQUIRE_BROWSER=1` (CI); `CNNU_SKIP_BROWSER=1` skips it always.

mod browser;

use std::path::{Path, PathBuf};

use cnnu_analysis::reporting::explorer::{
    EmbeddingView, ExplorerData, ExplorerHeatmap, ExplorerSample, ProbeImages, explorer_html,
};

const POINTS: usize = 300;
const SIDE: usize = 28;
const CLASSES: usize = 10;

/// A deterministic value in [0, 1) per seed, so the data needs no random number crate.
fn unit(seed: usize) -> f64 {
    // splitmix64's finaliser.
    let mut x = (seed as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((x ^ (x >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

fn labels() -> Vec<i64> {
    (0..POINTS).map(|i| (i % CLASSES) as i64).collect()
}

/// Each class a blob on a circle, tighter at later samples, as training would make them.
fn view(layer: usize, sample: usize) -> EmbeddingView {
    let spread = 3.0 / (1.0 + sample as f64 + layer as f64);
    let coords = (0..POINTS)
        .map(|i| {
            let angle = (i % CLASSES) as f64 * std::f64::consts::TAU / CLASSES as f64;
            let jitter = |axis: usize| spread * (unit(i * 7 + axis + 100 * sample) - 0.5);
            [
                10.0 * angle.cos() + jitter(0),
                10.0 * angle.sin() + jitter(1),
            ]
        })
        .collect();
    EmbeddingView {
        indices: (0..POINTS).collect(),
        coords,
        clusters: (0..POINTS)
            .map(|i| if i % 7 == 0 { -1 } else { (i % CLASSES) as i64 })
            .collect(),
        predictions: (0..POINTS)
            .map(|i| ((i + usize::from(i % 5 == 0)) % CLASSES) as i64)
            .collect(),
    }
}

/// Grey 28 × 28 images, a bright square whose place tells the class.
fn images() -> ProbeImages {
    let mut pixels = vec![0u8; POINTS * SIDE * SIDE];
    for (i, image) in pixels.chunks_mut(SIDE * SIDE).enumerate() {
        let corner = 2 + 2 * (i % CLASSES);
        for y in corner..corner + 6 {
            for x in corner..corner + 6 {
                image[y * SIDE + x] = 255;
            }
        }
    }
    ProbeImages {
        channels: 1,
        height: SIDE,
        width: SIDE,
        pixels,
    }
}

/// Two layers, three samples; the first layer's first sample has no embedding (so clicking
/// the first heatmap cell shows the "no embedding" note) and one heatmap value is missing.
fn data() -> ExplorerData {
    let layers = ["conv1", "layer1.0"];
    // Step 0, a step inside the first epoch, the end of that epoch (80 steps).
    let samples = [
        ("epoch 0", 0, 0.0),
        ("step 40", 40, 0.0),
        ("epoch 1", 80, 1.0),
    ];
    ExplorerData {
        labels: labels(),
        class_names: Some((0..CLASSES).map(|c| format!("digit {c}")).collect()),
        images: Some(images()),
        samples: samples
            .iter()
            .map(|&(label, step, epoch)| ExplorerSample {
                label: label.into(),
                step,
                epoch,
            })
            .collect(),
        layers: layers.iter().map(|l| l.to_string()).collect(),
        views: (0..layers.len())
            .map(|l| {
                (0..samples.len())
                    .map(|s| ((l, s) != (0, 0)).then(|| view(l, s)))
                    .collect()
            })
            .collect(),
        heatmaps: vec![ExplorerHeatmap {
            name: "purity".into(),
            values: vec![
                vec![Some(0.2), Some(0.5), None],
                vec![Some(0.3), Some(0.6), Some(0.9)],
            ],
            range: Some((0.0, 1.0)),
        }],
    }
}

/// The page around the fragment, written into `dir`.
fn write_page(dir: &Path) -> PathBuf {
    let fragment = explorer_html(&data());
    eprintln!("explorer fragment: {} bytes", fragment.len());
    let page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>explorer</title></head>\n\
         <body>\n{fragment}</body></html>\n"
    );
    let path = dir.join("page.html");
    std::fs::write(&path, page).unwrap();
    path
}

/// Loads the page (with `hash` appended to its URL) and returns the root's start tag, after
/// checking that the explorer got ready without a script error.
fn run_page(hash: &str) -> Option<browser::Drawn> {
    let dir = tempfile::tempdir().unwrap();
    let page = write_page(dir.path());
    browser::check_explorer(&page, hash)
}

#[test]
fn the_explorer_draws_in_chromium_without_errors() {
    if let Some(drawn) = run_page("") {
        let tag = &drawn.tag;
        assert_eq!(browser::attribute(tag, "data-tested"), None, "{tag}");
        // It opens at the last sample; the label adds what the sample's name does not say.
        assert_eq!(drawn.sample_label(), Some("epoch 1 (step 80)"));
    }
}

#[test]
fn the_explorer_answers_a_hover_and_a_heatmap_click() {
    if let Some(drawn) = run_page("#test") {
        let tag = &drawn.tag;
        assert_eq!(
            browser::attribute(tag, "data-tested"),
            Some("hover,click"),
            "{tag}"
        );
        // The self-test clicked the first heatmap cell: layer 0 at step 0.
        assert_eq!(drawn.sample_label(), Some("epoch 0 (before training)"));
    }
}
