//! PNG plots with plotters: t-SNE scatters, figures against epoch, energy spectra.
//!
//! Text is drawn with DejaVu Sans embedded in the binary (ab_glyph), so plots render the same
//! on machines without system fonts (CI, containers).

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

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
        let bytes: &'static [u8] = include_bytes!("../../assets/DejaVuSans.ttf");
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

/// A white RGB canvas of `w` × `h` pixels.
fn canvas(w: u32, h: u32) -> Vec<u8> {
    vec![255; w as usize * h as usize * 3]
}

/// Writes an RGB buffer as a small PNG: with a palette when it has at most 256 colours (most
/// plots: a few line colours and their anti-aliasing), else RGB; best compression with
/// adaptive filters either way. Plotters' own encoder writes the same pixels about five times
/// larger, and the report inlines every plot.
fn write_png(path: &Path, w: u32, h: u32, rgb: &[u8]) -> Result<(), PlotError> {
    let mut palette: Vec<[u8; 3]> = Vec::new();
    let mut index = std::collections::HashMap::new();
    let mut indexed = Vec::with_capacity(rgb.len() / 3);
    for px in rgb.chunks_exact(3) {
        let c = [px[0], px[1], px[2]];
        let i = *index.entry(c).or_insert_with(|| {
            palette.push(c);
            palette.len() - 1
        });
        if palette.len() > 256 {
            break;
        }
        indexed.push(i as u8);
    }
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, w, h);
        enc.set_compression(png::Compression::Best);
        enc.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
        enc.set_depth(png::BitDepth::Eight);
        let data: &[u8] = if palette.len() <= 256 {
            enc.set_color(png::ColorType::Indexed);
            enc.set_palette(palette.concat());
            &indexed
        } else {
            enc.set_color(png::ColorType::Rgb);
            rgb
        };
        let mut writer = enc.write_header().map_err(|e| err(path, e))?;
        writer.write_image_data(data).map_err(|e| err(path, e))?;
        writer.finish().map_err(|e| err(path, e))?;
    }
    cnnu_run::atomic::write_atomic(path, &bytes).map_err(|e| err(path, e))
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

/// What the colours of a scatter stand for, as its legend names them.
#[derive(Debug, Clone, Copy)]
pub enum Legend<'a> {
    /// True classes, by name where known (`"airplane"`), else `class 3`.
    Classes(Option<&'a [String]>),
    /// HDBSCAN clusters (`cluster 3`; -1 is noise).
    Clusters,
}

impl Legend<'_> {
    fn name(&self, id: i64) -> String {
        match self {
            _ if id < 0 => "noise".to_string(),
            Legend::Classes(Some(names)) => names
                .get(id as usize)
                .cloned()
                .unwrap_or_else(|| format!("class {id}")),
            Legend::Classes(None) => format!("class {id}"),
            Legend::Clusters => format!("cluster {id}"),
        }
    }
}

/// A 2-D scatter coloured by `ids` (labels, or cluster ids with -1 = noise), with a legend.
pub fn scatter(
    path: &Path,
    title: &str,
    points: &[[f32; 2]],
    ids: &[i64],
    legend: Legend,
) -> Result<(), PlotError> {
    font();
    let (w, h) = (720, 640);
    let mut buf = canvas(w, h);
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
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
            let name = legend.name(id);
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
        root.present().map_err(|e| err(path, e))?;
    }
    write_png(path, w, h, &buf)
}

/// The scales of a line plot's axes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Axes {
    /// Logarithmic x (points at x ≤ 0 are drawn at the left edge, where step 0 belongs).
    pub log_x: bool,
    /// Logarithmic y (points at y ≤ 0 are left out).
    pub log_y: bool,
}

/// One line of a plot: its name and its points `(x, y, low, high)`; where low < high the band
/// between them is shaded (a confidence interval), where they equal y there is none.
pub type Band = (String, Vec<(f64, f64, f64, f64)>);

/// A line plot of `series` (one line per entry, each a list of (x, y) points).
pub fn lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    axes: Axes,
) -> Result<(), PlotError> {
    let banded: Vec<Band> = series
        .iter()
        .map(|(n, pts)| (n.clone(), pts.iter().map(|&(x, y)| (x, y, y, y)).collect()))
        .collect();
    lines_with_bands(path, title, x_label, y_label, &banded, axes)
}

/// The drawable range of the points on the given axes, padded for a flat series.
fn extent(series: &[Band], axes: Axes) -> (f64, f64, f64, f64) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y, lo, hi) in series.iter().flat_map(|(_, pts)| pts.iter()) {
        if !(x.is_finite() && y.is_finite()) || (axes.log_y && y <= 0.0) {
            continue;
        }
        if !axes.log_x || x > 0.0 {
            x0 = x0.min(x);
            x1 = x1.max(x);
        }
        for v in [y, lo, hi].into_iter().filter(|v| v.is_finite()) {
            if !axes.log_y || v > 0.0 {
                y0 = y0.min(v);
                y1 = y1.max(v);
            }
        }
    }
    if x0 > x1 {
        (x0, x1) = if axes.log_x { (1.0, 10.0) } else { (0.0, 1.0) };
    }
    if y0 > y1 {
        (y0, y1) = (0.1, 1.0);
    }
    if axes.log_x {
        // Room on the left for the samples at step 0.
        x0 /= 2.0;
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-9 {
        y1 = y0 + 1.0;
    }
    (x0, x1, y0, y1)
}

/// A line plot with shaded bands (see [`Band`]).
pub fn lines_with_bands(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Band],
    axes: Axes,
) -> Result<(), PlotError> {
    font();
    let (w, h) = (720, 480);
    let mut buf = canvas(w, h);
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(path, e))?;
        let (x0, x1, y0, y1) = extent(series, axes);
        let keep = |&(x, y, _, _): &(f64, f64, f64, f64)| {
            x.is_finite() && y.is_finite() && (!axes.log_y || y > 0.0)
        };
        let at_x = |x: f64| if axes.log_x { x.max(x0) } else { x };
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
                    let pts: Vec<(f64, f64, f64, f64)> = pts.iter().copied().filter(keep).collect();
                    let band: Vec<(f64, f64)> = pts
                        .iter()
                        .filter(|p| p.2.is_finite() && p.3.is_finite())
                        .map(|p| (at_x(p.0), p.3))
                        .chain(
                            pts.iter()
                                .rev()
                                .filter(|p| p.2.is_finite() && p.3.is_finite())
                                .map(|p| (at_x(p.0), p.2)),
                        )
                        .collect();
                    if pts.iter().any(|p| p.3 > p.2) {
                        chart
                            .draw_series(std::iter::once(Polygon::new(
                                band,
                                colour.mix(0.18).filled(),
                            )))
                            .map_err(|e| err(path, e))?;
                    }
                    let line: Vec<(f64, f64)> = pts.iter().map(|p| (at_x(p.0), p.1)).collect();
                    chart
                        .draw_series(LineSeries::new(line.clone(), colour.stroke_width(2)))
                        .map_err(|e| err(path, e))?
                        .label(name.clone())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                        });
                    chart
                        .draw_series(line.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
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
        match (axes.log_x, axes.log_y) {
            (false, false) => draw!(builder.build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))),
            (false, true) => draw!(builder.build_cartesian_2d(x0..x1, (y0..y1 * 1.05).log_scale())),
            (true, false) => {
                draw!(
                    builder.build_cartesian_2d((x0..x1 * 1.05).log_scale(), (y0 - pad)..(y1 + pad))
                )
            }
            (true, true) => draw!(
                builder
                    .build_cartesian_2d((x0..x1 * 1.05).log_scale(), (y0..y1 * 1.05).log_scale())
            ),
        }
        root.present().map_err(|e| err(path, e))?;
    }
    write_png(path, w, h, &buf)
}

/// The viridis colour map (matplotlib's perceptually uniform default) at `t` in [0, 1], by
/// linear interpolation between nine of its samples.
fn viridis(t: f64) -> RGBColor {
    const STOPS: [(u8, u8, u8); 9] = [
        (68, 1, 84),
        (71, 44, 122),
        (59, 81, 139),
        (44, 113, 142),
        (33, 144, 141),
        (39, 173, 129),
        (92, 200, 99),
        (170, 220, 50),
        (253, 231, 37),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let pos = t * (STOPS.len() - 1) as f64;
    let i = (pos.floor() as usize).min(STOPS.len() - 2);
    let f = pos - i as f64;
    let mix = |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * f).round() as u8;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// A heatmap of `values[row][col]` (NaN drawn as a hatched/grey cell, labelled "n/a"), one row
/// per layer and one column per epoch, each cell annotated with its value (3 decimals), with a
/// colour bar.
///
/// The colours span `range` (values outside it take the end colours) or, when `None`, the
/// finite values' range. `values` must have one row per row label and one entry per column
/// label.
pub fn heatmap(
    path: &Path,
    title: &str,
    row_labels: &[String],
    col_labels: &[String],
    values: &[Vec<f64>],
    range: Option<(f64, f64)>,
) -> Result<(), PlotError> {
    font();
    let (rows, cols) = (row_labels.len(), col_labels.len());
    if rows == 0 || cols == 0 {
        return Err(err(
            path,
            format!("nothing to draw: {rows} rows × {cols} columns"),
        ));
    }
    if values.len() != rows || values.iter().any(|r| r.len() != cols) {
        return Err(err(
            path,
            format!("values are not {rows} rows × {cols} columns, as the labels say"),
        ));
    }
    let (lo, hi) = colour_range(path, values, range)?;
    let longest = row_labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0) as i32;
    let g = Grid::new(rows, cols, longest);
    let (w, h) = (g.width as u32, g.height as u32);
    let mut buf = canvas(w, h);
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(path, e))?;
        let draw =
            |e: &dyn Fn(&Area<'_>) -> Result<(), DrawingAreaErrorKind<BitMapBackendError>>| {
                e(&root).map_err(|e| err(path, e))
            };
        draw(&|a| {
            a.draw(&Text::new(
                title.to_string(),
                (g.width / 2, 20),
                text(18, &BLACK, HPos::Center, VPos::Center),
            ))
        })?;
        for (r, row) in values.iter().enumerate() {
            let y0 = TOP + r as i32 * g.cell_h;
            for (c, &v) in row.iter().enumerate() {
                let x0 = g.left + c as i32 * CELL_W;
                draw(&|a| draw_cell(a, (x0, y0), (CELL_W, g.cell_h), v, (lo, hi)))?;
            }
            draw(&|a| {
                a.draw(&Text::new(
                    row_labels[r].clone(),
                    (g.left - 10, y0 + g.cell_h / 2),
                    text(14, &BLACK, HPos::Right, VPos::Center),
                ))
            })?;
        }
        for (c, label) in col_labels.iter().enumerate() {
            draw(&|a| {
                a.draw(&Text::new(
                    label.clone(),
                    (g.left + c as i32 * CELL_W + CELL_W / 2, TOP + g.grid_h + 10),
                    text(14, &BLACK, HPos::Center, VPos::Top),
                ))
            })?;
        }
        draw(&|a| draw_colour_bar(a, g.left + g.grid_w + 24, g.grid_h, (lo, hi)))?;
        root.present().map_err(|e| err(path, e))?;
    }
    write_png(path, w, h, &buf)
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type BitMapBackendError = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

// Sizes chosen so that 6–12 layer rows and 2–14 sample columns stay readable.
const CELL_W: i32 = 84;
const TOP: i32 = 56;
const BOTTOM: i32 = 44;
const BAR_AREA: i32 = 120;

/// The geometry of a heatmap: cells, the label column, the whole picture.
struct Grid {
    cell_h: i32,
    grid_w: i32,
    grid_h: i32,
    left: i32,
    width: i32,
    height: i32,
}

impl Grid {
    fn new(rows: usize, cols: usize, longest_label: i32) -> Self {
        let cell_h = (240 / rows as i32).max(40);
        let label_w = (longest_label * 8 + 24).clamp(70, 260);
        let grid_w = CELL_W * cols as i32;
        let grid_h = cell_h * rows as i32;
        let width = (label_w + grid_w + BAR_AREA).max(480);
        Self {
            cell_h,
            grid_w,
            grid_h,
            // A narrow grid (few columns) sits in the middle of the minimum width.
            left: label_w + (width - label_w - grid_w - BAR_AREA) / 2,
            width,
            height: TOP + grid_h + BOTTOM,
        }
    }
}

/// The colour range: the one given, else the data's own (padded when flat).
fn colour_range(
    path: &Path,
    values: &[Vec<f64>],
    range: Option<(f64, f64)>,
) -> Result<(f64, f64), PlotError> {
    match range {
        Some((a, b)) if a.is_finite() && b.is_finite() && a < b => Ok((a, b)),
        Some((a, b)) => Err(err(path, format!("invalid colour range [{a}, {b}]"))),
        None => {
            let (mut a, mut b) = (f64::INFINITY, f64::NEG_INFINITY);
            for &v in values.iter().flatten().filter(|v| v.is_finite()) {
                a = a.min(v);
                b = b.max(v);
            }
            Ok(if a > b {
                (0.0, 1.0)
            } else if b - a < 1e-12 {
                // One value: centre it in a small range rather than divide by zero.
                let pad = if a.abs() > 0.0 { 0.05 * a.abs() } else { 0.5 };
                (a - pad, b + pad)
            } else {
                (a, b)
            })
        }
    }
}

fn text(size: u32, colour: &RGBColor, h: HPos, v: VPos) -> TextStyle<'static> {
    ("sans-serif", size)
        .into_font()
        .color(colour)
        .pos(Pos::new(h, v))
}

/// One cell: its colour and value, or a hatched grey "n/a" where there is no value.
fn draw_cell(
    a: &Area<'_>,
    (x0, y0): (i32, i32),
    (w, h): (i32, i32),
    v: f64,
    (lo, hi): (f64, f64),
) -> Result<(), DrawingAreaErrorKind<BitMapBackendError>> {
    let (x1, y1) = (x0 + w - 1, y0 + h - 1);
    let centre = (x0 + w / 2, y0 + h / 2);
    if v.is_finite() {
        let t = (v - lo) / (hi - lo);
        a.draw(&Rectangle::new([(x0, y0), (x1, y1)], viridis(t).filled()))?;
        // Dark text on the light (yellow-green) end, white on the dark end.
        let ink = if t.clamp(0.0, 1.0) > 0.6 {
            BLACK
        } else {
            WHITE
        };
        return a.draw(&Text::new(
            format!("{v:.3}"),
            centre,
            text(14, &ink, HPos::Center, VPos::Center),
        ));
    }
    let nan_fill = RGBColor(224, 224, 224);
    a.draw(&Rectangle::new([(x0, y0), (x1, y1)], nan_fill.filled()))?;
    // Anti-diagonal hatching u + v = t, clipped to the cell by hand.
    let (w, h) = (x1 - x0, y1 - y0);
    for t in (8..w + h).step_by(10) {
        let (ua, ub) = (t.min(w), t - t.min(h));
        let (va, vb) = (t - ua, t.min(h));
        a.draw(&PathElement::new(
            vec![(x0 + ua, y0 + va), (x0 + ub, y0 + vb)],
            RGBColor(176, 176, 176).stroke_width(1),
        ))?;
    }
    let (bx, by) = (22, 10);
    a.draw(&Rectangle::new(
        [
            (centre.0 - bx, centre.1 - by),
            (centre.0 + bx, centre.1 + by),
        ],
        nan_fill.filled(),
    ))?;
    a.draw(&Text::new(
        "n/a".to_string(),
        centre,
        text(14, &RGBColor(90, 90, 90), HPos::Center, VPos::Center),
    ))
}

/// The colour bar: a vertical gradient beside the grid, `hi` at the top, five ticks.
fn draw_colour_bar(
    a: &Area<'_>,
    bx0: i32,
    grid_h: i32,
    (lo, hi): (f64, f64),
) -> Result<(), DrawingAreaErrorKind<BitMapBackendError>> {
    let bx1 = bx0 + 20;
    let steps = grid_h.max(1);
    for s in 0..steps {
        let t = 1.0 - f64::from(s) / f64::from((steps - 1).max(1));
        a.draw(&Rectangle::new(
            [(bx0, TOP + s), (bx1, TOP + s + 1)],
            viridis(t).filled(),
        ))?;
    }
    a.draw(&Rectangle::new(
        [(bx0, TOP), (bx1, TOP + grid_h)],
        BLACK.stroke_width(1),
    ))?;
    for k in 0..5 {
        let f = f64::from(k) / 4.0;
        let y = TOP + ((1.0 - f) * f64::from(grid_h - 1)).round() as i32;
        a.draw(&PathElement::new(
            vec![(bx1, y), (bx1 + 5, y)],
            BLACK.stroke_width(1),
        ))?;
        a.draw(&Text::new(
            format!("{:.3}", lo + f * (hi - lo)),
            (bx1 + 8, y),
            text(12, &BLACK, HPos::Left, VPos::Center),
        ))?;
    }
    Ok(())
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
            Legend::Classes(None),
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
        lines(
            &lines_path,
            "purity",
            "epoch",
            "purity",
            &series,
            Axes::default(),
        )
        .unwrap();
        let log_path = dir.path().join("log.png");
        let both = Axes {
            log_x: true,
            log_y: true,
        };
        lines(&log_path, "spectrum", "index", "s", &series, both).unwrap();
        let band_path = dir.path().join("band.png");
        let band: Vec<Band> = vec![(
            "conv1".into(),
            vec![
                (0.0, 0.1, 0.05, 0.2),
                (40.0, 0.3, 0.2, 0.4),
                (938.0, 0.5, 0.45, 0.6),
            ],
        )];
        let log_x = Axes {
            log_x: true,
            log_y: false,
        };
        lines_with_bands(&band_path, "bands", "step", "knn", &band, log_x).unwrap();
        for p in [scatter_path, lines_path, log_path, band_path] {
            let bytes = std::fs::read(&p).unwrap();
            assert_eq!(&bytes[1..4], b"PNG", "{}", p.display());
            assert!(bytes.len() > 2000, "a real picture, not an empty canvas");
        }
    }

    #[test]
    fn heatmap_is_written_as_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.png");
        let rows: Vec<String> = ["conv1", "layer1", "layer4.1.relu_1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let cols: Vec<String> = (1..=4).map(|e| format!("epoch {e}")).collect();
        let values = vec![
            vec![0.912, 0.954, 0.978, 0.990],
            vec![0.401, f64::NAN, 0.733, 0.861],
            vec![0.052, 0.310, 0.620, 1.0],
        ];
        heatmap(
            &path,
            "CKA with the final epoch",
            &rows,
            &cols,
            &values,
            None,
        )
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(bytes.len() > 5000, "a real picture, not an empty canvas");
        heatmap(
            &path,
            "fixed range",
            &rows,
            &cols,
            &values,
            Some((0.0, 1.0)),
        )
        .unwrap();
        assert!(heatmap(&path, "ragged", &rows, &cols, &values[..2], None).is_err());
        assert!(heatmap(&path, "bad range", &rows, &cols, &values, Some((1.0, 0.0))).is_err());
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_eq!(viridis(1.0), RGBColor(253, 231, 37));
    }
}
