//! PNG plots with plotters: t-SNE scatters, figures against epoch, energy spectra.
//!
//! Text is drawn with DejaVu Sans embedded in the binary (ab_glyph), so plots render the same
//! on machines without system fonts (CI, containers).

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

/// Errors from drawing.
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot draw plot: {problem}")]
pub struct PlotError {
    /// The PNG being written.
    pub path: PathBuf,
    /// What went wrong.
    pub problem: String,
}

fn font() {
    static FONT: Once = Once::new();
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../assets/DejaVuSans.ttf");
        // The font is a fixed, valid asset of this crate; registration cannot fail on it.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
    });
}

fn err(path: &Path, e: impl std::fmt::Display) -> PlotError {
    PlotError {
        path: path.to_path_buf(),
        problem: e.to_string(),
    }
}

/// Ten distinguishable colours for the digits (Tableau 10), grey for noise.
pub fn class_colour(id: i64) -> RGBColor {
    const PALETTE: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    if id < 0 {
        RGBColor(200, 200, 200)
    } else {
        PALETTE[(id as usize) % PALETTE.len()]
    }
}

/// A 2-D scatter coloured by `ids` (labels, or cluster ids with -1 = noise), with a legend.
pub fn scatter(
    path: &Path,
    title: &str,
    points: &[[f32; 2]],
    ids: &[i64],
    legend: &str,
) -> Result<(), PlotError> {
    font();
    let root = BitMapBackend::new(path, (720, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for p in points {
        x0 = x0.min(p[0]);
        x1 = x1.max(p[0]);
        y0 = y0.min(p[1]);
        y1 = y1.max(p[1]);
    }
    if points.is_empty() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let pad = |a: f32, b: f32| ((b - a) * 0.05).max(1e-3);
    let (px, py) = (pad(x0, x1), pad(y0, y1));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .build_cartesian_2d((x0 - px)..(x1 + px), (y0 - py)..(y1 + py))
        .map_err(|e| err(path, e))?;
    chart
        .configure_mesh()
        .disable_mesh()
        .draw()
        .map_err(|e| err(path, e))?;
    let mut distinct: Vec<i64> = ids.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    for &id in &distinct {
        let colour = class_colour(id);
        let series = points
            .iter()
            .zip(ids)
            .filter(|(_, i)| **i == id)
            .map(|(p, _)| Circle::new((p[0], p[1]), 2, colour.filled()));
        let name = if id < 0 {
            "noise".to_string()
        } else {
            format!("{legend} {id}")
        };
        chart
            .draw_series(series)
            .map_err(|e| err(path, e))?
            .label(name)
            .legend(move |(x, y)| Circle::new((x, y), 4, colour.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(path, e))?;
    root.present().map_err(|e| err(path, e))
}

/// Lines of `y` against `x`, one per named series (e.g. a figure against epoch per layer).
/// NaN points are skipped.
pub fn lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    log_y: bool,
) -> Result<(), PlotError> {
    font();
    let root = BitMapBackend::new(path, (720, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let finite = series
        .iter()
        .flat_map(|(_, pts)| pts.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_y || *y > 0.0));
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in finite {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.1, 1.0);
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-9 {
        y1 = y0 + 1.0;
    }
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60);
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart.map_err(|e| err(path, e))?;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .draw()
                .map_err(|e| err(path, e))?;
            for (i, (name, pts)) in series.iter().enumerate() {
                let colour = class_colour(i as i64);
                let pts: Vec<(f64, f64)> = pts
                    .iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_y || *y > 0.0))
                    .collect();
                chart
                    .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
                    .map_err(|e| err(path, e))?
                    .label(name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                    });
                chart
                    .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
                    .map_err(|e| err(path, e))?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(|e| err(path, e))?;
        }};
    }
    let pad = (y1 - y0) * 0.05;
    if log_y {
        draw!(builder.build_cartesian_2d(x0..x1, (y0..y1 * 1.05).log_scale()));
    } else {
        draw!(builder.build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad)));
    }
    root.present().map_err(|e| err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_written_as_png() {
        let dir = tempfile::tempdir().unwrap();
        let scatter_path = dir.path().join("s.png");
        let pts: Vec<[f32; 2]> = (0..50).map(|i| [i as f32, (i * i) as f32 * 0.1]).collect();
        let ids: Vec<i64> = (0..50).map(|i| (i % 11) - 1).collect();
        scatter(
            &scatter_path,
            "t-SNE of conv1, epoch 3",
            &pts,
            &ids,
            "digit",
        )
        .unwrap();
        let lines_path = dir.path().join("l.png");
        let series = vec![
            (
                "conv1".to_string(),
                vec![(0.0, 0.1), (1.0, f64::NAN), (2.0, 0.5)],
            ),
            ("layer2".to_string(), vec![(0.0, 0.2), (2.0, 0.7)]),
        ];
        lines(&lines_path, "purity", "epoch", "purity", &series, false).unwrap();
        lines(
            &dir.path().join("log.png"),
            "spectrum",
            "index",
            "s",
            &series,
            true,
        )
        .unwrap();
        for p in [scatter_path, lines_path] {
            let bytes = std::fs::read(&p).unwrap();
            assert_eq!(&bytes[1..4], b"PNG", "{}", p.display());
            assert!(bytes.len() > 2000, "a real picture, not an empty canvas");
        }
    }
}
