//! Figures with plotters: log-log error-vs-depth plots with a reference slope, line plots,
//! and median/quartile bands. Each figure is written as `stem.png` and `stem.svg`.
//!
//! Points that cannot be drawn (non-finite, or non-positive on a log axis) are skipped, so a
//! diverged run still yields a figure of what did converge.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::report::write_atomic;

/// Text is drawn with the `ab_glyph` renderer, which only knows registered fonts; embedding one
/// keeps figures identical on machines without system fonts.
const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
const SIZE: (u32, u32) = (900, 620);

/// A colour-blind-safe palette (Okabe–Ito), indexed by [`SeriesStyle::palette`].
const PALETTE: [[u8; 3]; 8] = [
    [0, 114, 178],
    [213, 94, 0],
    [0, 158, 115],
    [204, 121, 167],
    [230, 159, 0],
    [86, 180, 233],
    [0, 0, 0],
    [240, 228, 66],
];

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesStyle {
    /// Line colour as RGB.
    pub color: [u8; 3],
    /// Dashed instead of solid line.
    pub dashed: bool,
    /// Mark each data point with a dot.
    pub markers: bool,
}

impl SeriesStyle {
    /// A solid line in palette colour `index` (wrapping around), without markers.
    pub fn palette(index: usize) -> Self {
        SeriesStyle {
            color: PALETTE[index % PALETTE.len()],
            dashed: false,
            markers: false,
        }
    }

    /// The same style, dashed.
    pub fn dashed(self) -> Self {
        SeriesStyle {
            dashed: true,
            ..self
        }
    }

    /// The same style, with point markers.
    pub fn markers(self) -> Self {
        SeriesStyle {
            markers: true,
            ..self
        }
    }
}

/// A labelled polyline.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text (empty: no legend entry).
    pub label: String,
    /// `(x, y)` points in drawing order.
    pub points: Vec<(f64, f64)>,
    /// How it is drawn.
    pub style: SeriesStyle,
}

impl Series {
    /// A series from its parts.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>, style: SeriesStyle) -> Self {
        Series {
            label: label.into(),
            points,
            style,
        }
    }
}

/// A reference line `y ∝ x^slope`, drawn through the first point of the first series.
#[derive(Debug, Clone, PartialEq)]
pub struct RefSlope {
    /// The exponent (e.g. −1 for a first-order rate in N).
    pub slope: f64,
    /// Legend text, e.g. "slope −1".
    pub label: String,
}

/// A median line with a shaded band between the first and third quartiles.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    /// Legend text for the median line.
    pub label: String,
    /// Style of the median line; the band uses the same colour, translucent.
    pub style: SeriesStyle,
    /// Abscissae, shared by the three curves below.
    pub x: Vec<f64>,
    /// Median at each `x`.
    pub median: Vec<f64>,
    /// First quartile at each `x`.
    pub q25: Vec<f64>,
    /// Third quartile at each `x`.
    pub q75: Vec<f64>,
}

/// Log-log plot of `series`, with an optional reference slope line.
pub fn loglog(
    stem: &Path,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[Series],
    reference: Option<RefSlope>,
) -> Result<()> {
    let axes = Axes::new(title, xlabel, ylabel, true, true);
    let mut lines = axes.clean_all(series);
    if let Some(line) = reference.and_then(|r| reference_line(&lines, &r)) {
        // Drawn first, so the data stay on top where they coincide.
        lines.insert(0, line);
    }
    write_figure(
        stem,
        &Figure {
            axes,
            lines,
            fills: Vec::new(),
        },
    )
}

/// Line plot with a linear x axis and, if `log_y`, a logarithmic y axis.
pub fn lines(
    stem: &Path,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[Series],
    log_y: bool,
) -> Result<()> {
    let axes = Axes::new(title, xlabel, ylabel, false, log_y);
    let lines = axes.clean_all(series);
    write_figure(
        stem,
        &Figure {
            axes,
            lines,
            fills: Vec::new(),
        },
    )
}

/// Median lines with shaded interquartile bands (e.g. test error over seeds vs depth).
pub fn band(
    stem: &Path,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    bands: &[Band],
    log_x: bool,
    log_y: bool,
) -> Result<()> {
    let axes = Axes::new(title, xlabel, ylabel, log_x, log_y);
    let mut fig = Figure {
        axes,
        lines: Vec::new(),
        fills: Vec::new(),
    };
    for b in bands {
        check_band(b)?;
        let median = Series::new(b.label.clone(), zip(&b.x, &b.median), b.style);
        fig.lines.push(fig.axes.clean(&median));
        let polygon = fig.axes.band_polygon(b);
        if polygon.len() >= 3 {
            fig.fills.push((b.style.color, polygon));
        }
    }
    write_figure(stem, &fig)
}

/// One bar of [`bars`]: its height, a whisker from `low` to `high` (a spread over seeds).
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// Legend text (the x axis carries only the bars' positions).
    pub label: String,
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// Bar chart: bar i at x = i + 1 from `baseline` to its value, outlined and shaded in palette
/// colour i and named in the legend, with a black whisker over its spread. Bars with a
/// non-finite value are left out.
pub fn bars(stem: &Path, title: &str, ylabel: &str, bars: &[Bar], baseline: f64) -> Result<()> {
    const HALF: f64 = 0.3;
    let axes = Axes::new(title, "", ylabel, false, false);
    let (mut lines, mut fills) = (Vec::new(), Vec::new());
    for (i, b) in bars.iter().enumerate().filter(|(_, b)| b.value.is_finite()) {
        let (style, x) = (SeriesStyle::palette(i), (i + 1) as f64);
        let outline = vec![
            (x - HALF, baseline),
            (x - HALF, b.value),
            (x + HALF, b.value),
            (x + HALF, baseline),
        ];
        fills.push((style.color, outline.clone()));
        lines.push(axes.clean(&Series::new(b.label.clone(), outline, style)));
        let whisker = SeriesStyle::palette(6);
        lines.push(axes.clean(&Series::new("", vec![(x, b.low), (x, b.high)], whisker)));
    }
    write_figure(stem, &Figure { axes, lines, fills })
}

/// Titles and axis kinds; decides which points can be drawn.
struct Axes<'a> {
    title: &'a str,
    xlabel: &'a str,
    ylabel: &'a str,
    log_x: bool,
    log_y: bool,
}

impl<'a> Axes<'a> {
    fn new(title: &'a str, xlabel: &'a str, ylabel: &'a str, log_x: bool, log_y: bool) -> Self {
        Axes {
            title,
            xlabel,
            ylabel,
            log_x,
            log_y,
        }
    }

    fn drawable(&self, (x, y): (f64, f64)) -> bool {
        let ok = |v: f64, log: bool| v.is_finite() && (!log || v > 0.0);
        ok(x, self.log_x) && ok(y, self.log_y)
    }

    fn clean(&self, s: &Series) -> Series {
        let points = s
            .points
            .iter()
            .copied()
            .filter(|&p| self.drawable(p))
            .collect();
        Series {
            points,
            ..s.clone()
        }
    }

    fn clean_all(&self, series: &[Series]) -> Vec<Series> {
        series.iter().map(|s| self.clean(s)).collect()
    }

    /// Upper quartile left to right, then lower quartile back, over the drawable indices.
    fn band_polygon(&self, b: &Band) -> Vec<(f64, f64)> {
        let keep: Vec<usize> = (0..b.x.len())
            .filter(|&i| self.drawable((b.x[i], b.q25[i])) && self.drawable((b.x[i], b.q75[i])))
            .collect();
        let upper = keep.iter().map(|&i| (b.x[i], b.q75[i]));
        let lower = keep.iter().rev().map(|&i| (b.x[i], b.q25[i]));
        upper.chain(lower).collect()
    }
}

/// A shaded polygon: colour and vertices.
type Fill = ([u8; 3], Vec<(f64, f64)>);

struct Figure<'a> {
    axes: Axes<'a>,
    lines: Vec<Series>,
    /// Shaded polygons, drawn under the lines.
    fills: Vec<Fill>,
}

impl Figure<'_> {
    fn points(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        let line_pts = self.lines.iter().flat_map(|s| s.points.iter().copied());
        line_pts.chain(self.fills.iter().flat_map(|(_, p)| p.iter().copied()))
    }

    fn ranges(&self) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
        let xs: Vec<f64> = self.points().map(|p| p.0).collect();
        let ys: Vec<f64> = self.points().map(|p| p.1).collect();
        (padded(&xs, self.axes.log_x), padded(&ys, self.axes.log_y))
    }

    fn has_legend(&self) -> bool {
        self.lines.iter().any(|s| !s.label.is_empty())
    }
}

/// The data range with a margin (multiplicative on log axes); a default for empty data.
fn padded(values: &[f64], log: bool) -> std::ops::Range<f64> {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    match (lo.is_finite(), log) {
        (false, true) => 1.0..10.0,
        (false, false) => 0.0..1.0,
        (true, true) => {
            let pad = (hi / lo).powf(0.05).max(1.5);
            lo / pad..hi * pad
        }
        (true, false) => {
            let pad = if hi > lo {
                0.05 * (hi - lo)
            } else {
                lo.abs().max(1.0) * 0.1
            };
            lo - pad..hi + pad
        }
    }
}

fn reference_line(lines: &[Series], r: &RefSlope) -> Option<Series> {
    let &(x0, y0) = lines.first()?.points.first()?;
    let xs = lines.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (lo, hi) = xs.fold((x0, x0), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let at = |x: f64| (x, y0 * (x / x0).powf(r.slope));
    let points: Vec<_> = [at(lo), at(hi)]
        .into_iter()
        .filter(|p| p.1.is_finite() && p.1 > 0.0)
        .collect();
    let style = SeriesStyle {
        color: [120, 120, 120],
        dashed: true,
        markers: false,
    };
    Some(Series::new(r.label.clone(), points, style))
}

fn check_band(b: &Band) -> Result<()> {
    let n = b.x.len();
    if b.median.len() != n || b.q25.len() != n || b.q75.len() != n {
        return Err(Error::invalid(
            format!("band '{}'", b.label),
            format!(
                "x, median, q25, q75 lengths differ: {}, {}, {}, {}",
                n,
                b.median.len(),
                b.q25.len(),
                b.q75.len()
            ),
        ));
    }
    Ok(())
}

fn zip(x: &[f64], y: &[f64]) -> Vec<(f64, f64)> {
    x.iter().copied().zip(y.iter().copied()).collect()
}

fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
                .map_err(|_| "embedded DejaVuSans.ttf is not a valid font".to_string())
        })
        .clone()
        .map_err(|msg| Error::invalid("plot font", msg))
}

/// Writes `stem.png` and `stem.svg`, each atomically (PNG through a temp file renamed into
/// place, SVG rendered to a string first).
fn write_figure(stem: &Path, fig: &Figure) -> Result<()> {
    register_font()?;
    let png = with_suffix(stem, ".png");
    let svg = with_suffix(stem, ".svg");
    if let Some(dir) = png.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)
            .map_err(|e| Error::file(&png, format!("cannot create directory: {e}")))?;
    }
    let tmp = png.with_file_name(format!(".tmp-{}-{}", std::process::id(), file_name(&png)));
    let drawn = render(BitMapBackend::new(&tmp, SIZE).into_drawing_area(), fig)
        .map_err(|e| e.to_string())
        .and_then(|()| fs::rename(&tmp, &png).map_err(|e| e.to_string()));
    if let Err(msg) = drawn {
        let _ = fs::remove_file(&tmp);
        return Err(Error::file(&png, format!("cannot draw figure: {msg}")));
    }
    let mut text = String::new();
    render(
        SVGBackend::with_string(&mut text, SIZE).into_drawing_area(),
        fig,
    )
    .map_err(|e| Error::file(&svg, format!("cannot draw figure: {e}")))?;
    write_atomic(&svg, text.as_bytes())
}

fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
    let mut name: OsString = stem.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn render<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, fig: &Figure) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let (x, y) = fig.ranges();
    // Depths are powers of two: a base-2 x axis puts a tick on each; errors span decades.
    let x_base = if x.end / x.start <= 4096.0 { 2.0 } else { 10.0 };
    let y_base = log_base(&y);
    let log_x = || x.clone().log_scale().base(x_base);
    let log_y = || y.clone().log_scale().base(y_base);
    match (fig.axes.log_x, fig.axes.log_y) {
        (false, false) => draw(&root, fig, x.clone(), y.clone())?,
        (false, true) => draw(&root, fig, x.clone(), log_y())?,
        (true, false) => draw(&root, fig, log_x(), y.clone())?,
        (true, true) => draw(&root, fig, log_x(), log_y())?,
    }
    root.present()
}

/// The largest base among 10, 2, 1.5 and 1.2 whose powers put at least three labelled ticks in
/// `range` (a log axis over less than two decades had one or two labels in base 10).
fn log_base(range: &std::ops::Range<f64>) -> f64 {
    let powers = |base: f64| {
        let (lo, hi) = (range.start.log(base).ceil(), range.end.log(base).floor());
        hi - lo + 1.0
    };
    [10.0, 2.0, 1.5]
        .into_iter()
        .find(|&b| powers(b) >= 3.0)
        .unwrap_or(1.2)
}

/// The corner of the plot with the fewest data points near it, for the legend (it covered
/// data in the upper right). Points are placed in [0, 1]² by the axes' own scales.
fn legend_corner(fig: &Figure) -> SeriesLabelPosition {
    let (x, y) = fig.ranges();
    let unit = |v: f64, r: &std::ops::Range<f64>, log: bool| {
        if log {
            (v.ln() - r.start.ln()) / (r.end.ln() - r.start.ln())
        } else {
            (v - r.start) / (r.end - r.start)
        }
    };
    let near = |right: bool, top: bool| {
        fig.points()
            .filter(|&(px, py)| {
                let (u, v) = (unit(px, &x, fig.axes.log_x), unit(py, &y, fig.axes.log_y));
                (if right { u > 0.55 } else { u < 0.45 }) && (if top { v > 0.6 } else { v < 0.4 })
            })
            .count()
    };
    [
        (SeriesLabelPosition::UpperRight, near(true, true)),
        (SeriesLabelPosition::UpperLeft, near(false, true)),
        (SeriesLabelPosition::LowerLeft, near(false, false)),
        (SeriesLabelPosition::LowerRight, near(true, false)),
    ]
    .into_iter()
    .min_by_key(|(_, n)| *n)
    .map_or(SeriesLabelPosition::UpperRight, |(corner, _)| corner)
}

/// Draws the chart for any combination of linear and logarithmic axes.
fn draw<DB, X, Y>(root: &DrawingArea<DB, Shift>, fig: &Figure, x: X, y: Y) -> DrawResult<DB>
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(root)
        .caption(fig.axes.title, (FAMILY, 24))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(fig.axes.xlabel)
        .y_desc(fig.axes.ylabel)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 17))
        .light_line_style(TRANSPARENT)
        .draw()?;
    for (color, polygon) in &fig.fills {
        let fill = rgb(*color).mix(0.2).filled();
        chart.draw_series(std::iter::once(Polygon::new(polygon.clone(), fill)))?;
    }
    for s in &fig.lines {
        draw_series(&mut chart, s)?;
    }
    if fig.has_legend() {
        chart
            .configure_series_labels()
            .position(legend_corner(fig))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.5))
            .label_font((FAMILY, 15))
            .draw()?;
    }
    Ok(())
}

fn draw_series<DB, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    s: &Series,
) -> DrawResult<DB>
where
    DB: DrawingBackend,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let color = rgb(s.style.color);
    let stroke = color.stroke_width(2);
    let anno = if s.style.dashed {
        chart.draw_series(DashedLineSeries::new(s.points.clone(), 10, 6, stroke))?
    } else {
        chart.draw_series(LineSeries::new(s.points.clone(), stroke))?
    };
    if !s.label.is_empty() {
        let anno = anno.label(s.label.as_str());
        if s.style.dashed {
            anno.legend(move |(x, y)| {
                DashedPathElement::new(vec![(x, y), (x + 24, y)], 7, 4, stroke)
            });
        } else {
            anno.legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], stroke));
        }
    }
    if s.style.markers {
        let dot = color.filled();
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, dot)))?;
    }
    Ok(())
}

fn rgb([r, g, b]: [u8; 3]) -> RGBColor {
    RGBColor(r, g, b)
}

/// Tick labels: plain decimals in [1e-3, 1e4), otherwise short scientific notation.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if (1e-3..1e4).contains(&a) {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.1e}").replace(".0e", "e")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

    #[test]
    fn log_axes_get_at_least_three_labels() {
        let labels = |r: std::ops::Range<f64>| {
            let b = log_base(&r);
            (r.end.log(b).floor() - r.start.log(b).ceil() + 1.0, b)
        };
        assert_eq!(labels(1e-6..1e-1).1, 10.0, "decades keep base 10");
        for r in [2.0..40.0, 0.03..0.5, 9.0..30.0, 1.0..1.9] {
            let (n, base) = labels(r.clone());
            assert!(n >= 3.0, "{r:?}: {n} labels in base {base}");
        }
    }

    #[test]
    fn the_legend_avoids_the_data() {
        let falling = Series::new(
            "a",
            vec![(1.0, 100.0), (2.0, 10.0), (4.0, 1.0)],
            SeriesStyle::palette(0),
        );
        let fig = Figure {
            axes: Axes::new("t", "x", "y", true, true),
            lines: vec![falling],
            fills: Vec::new(),
        };
        let corner = legend_corner(&fig);
        assert!(
            matches!(
                corner,
                SeriesLabelPosition::UpperRight | SeriesLabelPosition::LowerLeft
            ),
            "a falling line leaves the upper right and lower left free: {corner:?}"
        );
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("resnet-ode-plot-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn assert_written(stem: &Path) {
        let png = fs::read(with_suffix(stem, ".png")).unwrap();
        assert!(png.starts_with(PNG_MAGIC), "not a PNG");
        let svg = fs::read_to_string(with_suffix(stem, ".svg")).unwrap();
        assert!(svg.contains("<svg"), "not an SVG");
        let dir = stem.parent().unwrap();
        let stray = fs::read_dir(dir)
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().contains("tmp"));
        assert!(!stray, "temp file left behind");
    }

    fn rate(c: f64, p: f64) -> Vec<(f64, f64)> {
        [4.0, 8.0, 16.0, 32.0, 64.0]
            .iter()
            .map(|&n: &f64| (n, c * n.powf(p)))
            .collect()
    }

    #[test]
    fn loglog_writes_png_and_svg() {
        let dir = temp_dir("loglog");
        let stem = dir.join("errors");
        let mut bad = rate(1.0, -2.0);
        bad.extend([(128.0, 0.0), (256.0, f64::NAN), (-1.0, 1.0)]);
        let series = [
            Series::new("Euler", rate(1.0, -1.0), SeriesStyle::palette(0).markers()),
            Series::new("Heun", bad, SeriesStyle::palette(1).dashed()),
        ];
        let reference = RefSlope {
            slope: -1.0,
            label: "slope −1".into(),
        };
        loglog(
            &stem,
            "error vs depth",
            "depth N",
            "error",
            &series,
            Some(reference),
        )
        .unwrap();
        assert_written(&stem);
        assert!(fs::read_to_string(with_suffix(&stem, ".svg"))
            .unwrap()
            .contains("slope"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lines_writes_png_and_svg_even_when_empty() {
        let dir = temp_dir("lines");
        let stem = dir.join("loss");
        let series = [Series::new(
            "loss",
            vec![(0.0, 1.0), (1.0, 0.5), (2.0, 0.25)],
            SeriesStyle::palette(2),
        )];
        lines(&stem, "training loss", "epoch", "loss", &series, true).unwrap();
        assert_written(&stem);
        let empty = dir.join("empty");
        lines(&empty, "nothing", "x", "y", &[], false).unwrap();
        assert_written(&empty);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn band_writes_png_and_svg_and_checks_lengths() {
        let dir = temp_dir("band");
        let stem = dir.join("test_error");
        let b = Band {
            label: "Euler".into(),
            style: SeriesStyle::palette(0),
            x: vec![2.0, 4.0, 8.0, 16.0],
            median: vec![0.2, 0.15, 0.12, 0.11],
            q25: vec![0.18, 0.13, 0.11, 0.10],
            q75: vec![0.22, 0.17, 0.14, 0.12],
        };
        band(
            &stem,
            "test error",
            "depth",
            "error",
            std::slice::from_ref(&b),
            true,
            false,
        )
        .unwrap();
        assert_written(&stem);
        let short = Band {
            q25: vec![0.1],
            ..b
        };
        let err = band(&stem, "t", "x", "y", &[short], false, false).unwrap_err();
        assert!(err.to_string().contains("lengths differ"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unwritable_path_is_an_error_naming_the_file() {
        let dir = temp_dir("bad");
        fs::create_dir_all(&dir).unwrap();
        let blocker = dir.join("file");
        fs::write(&blocker, b"x").unwrap();
        let stem = blocker.join("fig");
        let err = lines(&stem, "t", "x", "y", &[], false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("fig.png"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tick_labels() {
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(16.0), "16");
        assert_eq!(tick(1e-5), "1e-5");
        assert_eq!(tick(2.5e6), "2.5e6");
    }
}
