//! The study's interactive explorer: one self-contained HTML fragment (markup, inline JSON,
//! plain JavaScript, CSS; nothing fetched) in which a reader picks a layer and a sample of
//! training, sees that layer's t-SNE scatter coloured by label or cluster, hovers a point to
//! see its probe image, and clicks a cell of a heatmap to jump to its layer and sample.

use std::path::Path;

use base64::Engine as _;
use serde::{Serialize, Serializer};

use crate::readers::source::{self, SourceError};
use crate::reporting::figures;
use crate::reporting::layer::LayerReport;
use crate::reporting::summary::{SummaryError, layer_order, sample_name, sample_order};

/// The explorer's script, run once the fragment's markup and data are in the page.
const EXPLORER_JS: &str = include_str!("explorer.js");
/// The explorer's styles, every rule scoped under `#explorer` so the host page is untouched.
const EXPLORER_CSS: &str = include_str!("explorer.css");
/// The largest value of the grid that scatter coordinates are stored on (4 digits each).
const GRID: f64 = 9999.0;

/// Everything the explorer shows, serialised into the fragment as JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplorerData {
    /// The probe set's true label per probe point.
    pub labels: Vec<i64>,
    /// A name per label value (index = label), when the dataset has them.
    pub class_names: Option<Vec<String>>,
    /// The probe images, shown when a point is hovered.
    pub images: Option<ProbeImages>,
    /// The recorded moments of training, in order (the slider's positions).
    pub samples: Vec<ExplorerSample>,
    /// The layers' names (the selector's entries).
    pub layers: Vec<String>,
    /// The embedding per layer and sample, `views[layer][sample]`; none where not computed.
    pub views: Vec<Vec<Option<EmbeddingView>>>,
    /// Figures over layers × samples, drawn as clickable tables.
    pub heatmaps: Vec<ExplorerHeatmap>,
}

/// The probe images as [N, C, H, W] bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeImages {
    /// Channels: 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// N × C × H × W bytes, channel planes one after the other per image.
    pub pixels: Vec<u8>,
}

/// In the JSON the bytes travel as `png`: one grey 8-bit PNG with a row per image
/// (`C·H·W` wide), base64. Deflate shrinks MNIST's mostly black digits about fivefold, and the
/// probe images were the largest part of a seed's report (1 MB of base64 for 1000 digits).
impl Serialize for ProbeImages {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeStruct};
        let row = (self.channels * self.height * self.width).max(1);
        let rows = self.pixels.len() / row;
        let (Ok(w), Ok(h)) = (u32::try_from(row), u32::try_from(rows.max(1))) else {
            return Err(S::Error::custom("probe images too large for one PNG"));
        };
        let png = grey_png(&self.pixels[..rows * row], w, h).map_err(S::Error::custom)?;
        let mut st = s.serialize_struct("ProbeImages", 4)?;
        st.serialize_field("channels", &self.channels)?;
        st.serialize_field("height", &self.height)?;
        st.serialize_field("width", &self.width)?;
        st.serialize_field(
            "png",
            &base64::engine::general_purpose::STANDARD.encode(png),
        )?;
        st.end()
    }
}

/// `bytes` (`w·h` of them, fewer padded with black) as a grey 8-bit PNG, best compression.
fn grey_png(bytes: &[u8], w: u32, h: u32) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Best);
    let mut writer = enc.write_header()?;
    let mut data = bytes.to_vec();
    data.resize(w as usize * h as usize, 0);
    writer.write_image_data(&data)?;
    writer.finish()?;
    Ok(out)
}

/// One recorded moment of training.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplorerSample {
    /// What the reader sees, e.g. "step 40" or "epoch 1".
    pub label: String,
    /// The optimiser step.
    pub step: u64,
    /// Whole epochs completed at that step.
    pub epoch: f64,
}

/// One layer's t-SNE embedding at one sample; all vectors are per embedded point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbeddingView {
    /// The probe index of each embedded point (left out of the JSON when it is 0..n, as it is
    /// whenever every probe image was embedded).
    #[serde(skip_serializing_if = "is_identity")]
    pub indices: Vec<usize>,
    /// The 2-D t-SNE coordinates, stored in the JSON on a 0..=9999 grid over the view's own
    /// frame (t-SNE axes carry no units, and the scatter is fitted to its frame anyway), as
    /// base64 of little-endian u16 (see `serialize_coords`).
    #[serde(serialize_with = "serialize_coords")]
    pub coords: Vec<[f64; 2]>,
    /// The HDBSCAN cluster of each point, -1 for noise.
    pub clusters: Vec<i64>,
    /// The network's predicted class of each point.
    pub predictions: Vec<i64>,
}

/// One figure over layers × samples, e.g. cluster purity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplorerHeatmap {
    /// The figure's name, the table's caption.
    pub name: String,
    /// `values[layer][sample]`; none (or non-finite) where not measured.
    pub values: Vec<Vec<Option<f64>>>,
    /// A fixed colour range (lo, hi); without it the finite values' own range.
    pub range: Option<(f64, f64)>,
}

/// The explorer as one HTML fragment, `<div id="explorer">` with its data and script inline.
pub fn explorer_html(data: &ExplorerData) -> String {
    format!(
        concat!(
            "<div id=\"explorer\" class=\"explorer\">\n",
            "<style>\n{css}</style>\n",
            "<noscript>The explorer needs JavaScript.</noscript>\n",
            "<div class=\"ex-controls\">\n",
            "<label>Layer <select class=\"ex-layer\"></select></label>\n",
            "<label>Sample <input type=\"range\" class=\"ex-sample\" min=\"0\" max=\"0\" ",
            "value=\"0\"></label>\n",
            "<span class=\"ex-sample-label\"></span>\n",
            "<span class=\"ex-colour\">Colour by ",
            "<label><input type=\"radio\" name=\"explorer-colour\" value=\"label\" checked> ",
            "label</label> ",
            "<label><input type=\"radio\" name=\"explorer-colour\" value=\"cluster\"> ",
            "cluster</label></span>\n",
            "</div>\n",
            "<div class=\"ex-main\">\n",
            "<div class=\"ex-scatter-wrap\">\n",
            "<canvas class=\"ex-scatter\"></canvas>\n",
            "<div class=\"ex-empty\" hidden></div>\n",
            "<div class=\"ex-tooltip\" hidden><canvas class=\"ex-probe\"></canvas>",
            "<div class=\"ex-tip-text\"></div></div>\n",
            "</div>\n",
            "<div class=\"ex-legend\"></div>\n",
            "</div>\n",
            "<div class=\"ex-heatmaps\"></div>\n",
            "<script type=\"application/json\" id=\"explorer-data\">{json}</script>\n",
            "<script>\n{js}</script>\n",
            "</div>\n"
        ),
        css = EXPLORER_CSS,
        json = data_json(data),
        js = EXPLORER_JS,
    )
}

/// The data as JSON that is safe inside `<script>`: `<` only occurs inside JSON strings, where
/// `\u003c` means the same, so neither `</script>` nor `<!--` can reach the HTML parser.
fn data_json(data: &ExplorerData) -> String {
    serde_json::to_string(data)
        .expect("explorer data serialises")
        .replace('<', "\\u003c")
}

/// Raw bytes as one base64 string: a third of the size of a JSON array of numbers.
fn serialize_base64<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Coordinates as base64 of the grid positions `x0, y0, x1, y1, …`, each a little-endian u16
/// (65535: non-finite): about half the size of a JSON array of the same numbers.
fn serialize_coords<S: Serializer>(coords: &[[f64; 2]], s: S) -> Result<S::Ok, S::Error> {
    let bytes: Vec<u8> = grid_coords(coords)
        .into_iter()
        .flat_map(|g| g.unwrap_or(u16::MAX).to_le_bytes())
        .collect();
    serialize_base64(&bytes, s)
}

/// Whether `indices` is 0..n.
fn is_identity(indices: &[usize]) -> bool {
    indices.iter().enumerate().all(|(i, &j)| i == j)
}

/// The coordinates on the 0..=9999 grid, centred, one scale for both axes so the embedding's
/// shape is kept.
fn grid_coords(coords: &[[f64; 2]]) -> Vec<Option<u16>> {
    let (mid, extent) = frame(coords);
    coords
        .iter()
        .flat_map(|p| [0, 1].map(|axis| grid_position(p[axis], mid[axis], extent)))
        .collect()
}

/// The centre of the finite coordinates' bounding box and its larger side (1 when degenerate).
fn frame(coords: &[[f64; 2]]) -> ([f64; 2], f64) {
    let finite = coords
        .iter()
        .filter(|p| p[0].is_finite() && p[1].is_finite());
    let (lo, hi) = finite.fold(
        ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]),
        |(lo, hi), p| {
            (
                [lo[0].min(p[0]), lo[1].min(p[1])],
                [hi[0].max(p[0]), hi[1].max(p[1])],
            )
        },
    );
    let extent = (hi[0] - lo[0]).max(hi[1] - lo[1]);
    let extent = if extent.is_finite() && extent > 0.0 {
        extent
    } else {
        1.0
    };
    let mid = [0, 1].map(|a| {
        if lo[a] <= hi[a] {
            (lo[a] + hi[a]) / 2.0
        } else {
            0.0
        }
    });
    (mid, extent)
}

/// One coordinate's grid position, none when it is not finite.
fn grid_position(v: f64, mid: f64, extent: f64) -> Option<u16> {
    v.is_finite()
        .then(|| (((v - mid) / extent + 0.5) * GRID).round().clamp(0.0, GRID) as u16)
}

impl ExplorerData {
    /// The explorer's data for an analysed run: every report's embedding, the predictions and
    /// probe images from the run's files, the heatmap figures of the table.
    pub fn of_run(run: &Path, reports: &[LayerReport]) -> Result<Self, SummaryError> {
        let layers: Vec<String> = layer_order(reports).into_iter().map(String::from).collect();
        let samples = sample_order(reports);
        let find = |l: &str, s| reports.iter().find(|r| r.layer == l && sample_name(r) == s);
        // Predictions are per sample, the same for every layer: read once per snapshot.
        let mut predictions = Vec::with_capacity(samples.len());
        for &s in &samples {
            let path = cnnu_run::RunDir::new(run).sample_path(s);
            let p = match source::snapshot_info(&path) {
                Ok(info) => info.predictions,
                Err(SourceError::Io(_)) => None,
                Err(e) => return Err(e.into()),
            };
            predictions.push(p);
        }
        let views = layers
            .iter()
            .map(|l| {
                samples
                    .iter()
                    .zip(&predictions)
                    .map(|(&s, p)| find(l, s).and_then(|r| view(r, p.as_deref())))
                    .collect()
            })
            .collect();
        let heatmaps = figures::heatmaps()
            .map(|f| ExplorerHeatmap {
                name: f.name.to_string(),
                values: layers
                    .iter()
                    .map(|l| {
                        samples
                            .iter()
                            .map(|&s| find(l, s).and_then(f.read))
                            .collect()
                    })
                    .collect(),
                range: f.heatmap.and_then(figures::Range::bounds),
            })
            .collect();
        let images =
            source::probe_images(run)?.and_then(|source::ProbePixels { shape, pixels }| {
                // The probe set of the analysis must be the one the images are of.
                let n = reports.first().map_or(0, |r| r.labels.len());
                (shape[0] >= n).then(|| ProbeImages {
                    channels: shape[1],
                    height: shape[2],
                    width: shape[3],
                    pixels: pixels[..n * shape[1] * shape[2] * shape[3]].to_vec(),
                })
            });
        Ok(ExplorerData {
            labels: reports
                .first()
                .map(|r| r.labels.clone())
                .unwrap_or_default(),
            class_names: reports.first().and_then(|r| r.class_names.clone()),
            images,
            samples: samples
                .iter()
                .map(|&s| {
                    let r = layers.first().and_then(|l| find(l, s));
                    ExplorerSample {
                        label: s.label(),
                        step: r.and_then(|r| r.step).unwrap_or(0),
                        epoch: r.and_then(|r| r.epoch).unwrap_or(0) as f64,
                    }
                })
                .collect(),
            layers,
            views,
            heatmaps,
        })
    }
}

/// A report's embedding as the explorer draws it (none without an embedding).
fn view(r: &LayerReport, predictions: Option<&[i64]>) -> Option<EmbeddingView> {
    let e = r.embedding.as_ref()?;
    Some(EmbeddingView {
        indices: e.indices.clone(),
        coords: e
            .coords
            .iter()
            .map(|c| [c[0] as f64, c[1] as f64])
            .collect(),
        clusters: e.indices.iter().map(|&i| r.cluster_labels[i]).collect(),
        predictions: e
            .indices
            .iter()
            .map(|&i| predictions.and_then(|p| p.get(i).copied()).unwrap_or(-1))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(coords: Vec<[f64; 2]>) -> EmbeddingView {
        let n = coords.len();
        EmbeddingView {
            indices: (0..n).collect(),
            coords,
            clusters: vec![-1; n],
            predictions: vec![0; n],
        }
    }

    fn data(class_names: Option<Vec<String>>) -> ExplorerData {
        ExplorerData {
            labels: vec![0, 1, 1],
            class_names,
            images: Some(ProbeImages {
                channels: 1,
                height: 1,
                width: 2,
                pixels: vec![0, 255, 1, 2, 3, 4],
            }),
            samples: vec![ExplorerSample {
                label: "step 40".into(),
                step: 40,
                epoch: 0.5,
            }],
            layers: vec!["conv1".into()],
            views: vec![vec![Some(view(vec![[0.0, 0.0], [2.0, 1.0], [1.0, 0.5]]))]],
            heatmaps: vec![ExplorerHeatmap {
                name: "purity".into(),
                values: vec![vec![Some(0.25)]],
                range: Some((0.0, 1.0)),
            }],
        }
    }

    /// The JSON between the data script's tags.
    fn embedded_json(html: &str) -> &str {
        let open = "<script type=\"application/json\" id=\"explorer-data\">";
        let start = html.find(open).expect("data script") + open.len();
        let len = html[start..].find("</script>").expect("data script end");
        &html[start..start + len]
    }

    #[test]
    fn a_class_name_cannot_close_the_data_script() {
        let evil = "</script><script>alert(1)</script><!--".to_string();
        let html = explorer_html(&data(Some(vec![evil.clone(), "one".into()])));
        // Only the two scripts' own end tags.
        assert_eq!(html.matches("</script").count(), 2);
        assert!(!embedded_json(&html).contains('<'));
        let parsed: serde_json::Value = serde_json::from_str(embedded_json(&html)).unwrap();
        assert_eq!(parsed["class_names"][0], evil.as_str());
    }

    #[test]
    fn the_fragment_holds_root_data_and_script_and_fetches_nothing() {
        let html = explorer_html(&data(None));
        assert!(html.starts_with("<div id=\"explorer\""));
        assert!(html.trim_end().ends_with("</div>"));
        assert!(html.contains(EXPLORER_JS) && html.contains(EXPLORER_CSS));
        assert!(!html.contains("src=") && !html.contains("://") && !html.contains("@import"));
        let parsed: serde_json::Value = serde_json::from_str(embedded_json(&html)).unwrap();
        assert_eq!(parsed["labels"], serde_json::json!([0, 1, 1]));
        assert_eq!(parsed["layers"][0], "conv1");
        assert_eq!(parsed["samples"][0]["label"], "step 40");
        assert_eq!(
            parsed["heatmaps"][0]["range"],
            serde_json::json!([0.0, 1.0])
        );
        assert_eq!(
            parsed["views"][0][0]["clusters"],
            serde_json::json!([-1, -1, -1])
        );
        // Indices 0..n are left out; coordinates travel as base64 of u16 grid positions.
        assert!(parsed["views"][0][0].get("indices").is_none());
        let coords = base64::engine::general_purpose::STANDARD
            .decode(parsed["views"][0][0]["coords"].as_str().unwrap())
            .unwrap();
        let grid: Vec<u16> = coords
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(grid, [0, 2500, 9999, 7499, 5000, 5000]);
    }

    #[test]
    fn the_script_and_styles_cannot_end_their_elements_early() {
        assert!(!EXPLORER_JS.contains("</script") && !EXPLORER_JS.contains("<!--"));
        assert!(!EXPLORER_CSS.contains("</style"));
    }

    #[test]
    fn images_travel_as_a_png_of_the_raw_bytes() {
        let html = explorer_html(&data(None));
        let parsed: serde_json::Value = serde_json::from_str(embedded_json(&html)).unwrap();
        let text = parsed["images"]["png"].as_str().unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(png))
            .read_info()
            .unwrap();
        let mut bytes = vec![0; reader.output_buffer_size()];
        let frame = reader.next_frame(&mut bytes).unwrap();
        assert_eq!(frame.color_type, png::ColorType::Grayscale);
        assert_eq!(&bytes[..frame.buffer_size()], [0, 255, 1, 2, 3, 4]);
        assert_eq!(parsed["images"]["width"], 2);
    }

    #[test]
    fn coordinates_fill_the_grid_centred_with_one_scale() {
        // x spans 0..2 (the extent), y spans 0..1 and is centred on the grid.
        let grid = grid_coords(&[[0.0, 0.0], [2.0, 1.0], [1.0, 0.5]]);
        assert_eq!(grid, [0, 2500, 9999, 7499, 5000, 5000].map(Some));
    }

    #[test]
    fn degenerate_and_non_finite_coordinates_stay_on_the_grid() {
        assert_eq!(grid_coords(&[[3.0, 3.0]]), [Some(5000), Some(5000)]);
        let grid = grid_coords(&[[f64::NAN, 1.0], [0.0, 0.0], [1.0, 1.0]]);
        assert_eq!(grid[0], None);
        assert!(grid[1..].iter().all(|g| g.is_some_and(|g| g <= 9999)));
        assert!(grid_coords(&[]).is_empty());
    }
}
