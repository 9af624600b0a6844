//! Time-series graphs drawn in process, as PNG or SVG, the way Ganglia's graphs look:
//! a title, a time axis, a value axis with SI prefixes and the unit, and a legend that
//! gives each line's last, average and maximum value.
//!
//! This module owns drawing only: it takes finished series ([`GraphSpec`]) and returns
//! bytes. It does not read storage or know about hosts; the caller fetches the points
//! from the archive that fits the range and hands them over. That keeps it usable for
//! the dashboard, for graphs inlined in alert emails, and in tests without a server.
//!
//! Unknown values (`None`, or a non-finite number) are drawn as gaps, never as zero:
//! a host that stopped reporting, or a counter that wrapped, must not look like an idle
//! one. Text comes from the DejaVu Sans font compiled into the binary, so a headless
//! server without fontconfig or system fonts draws the same labels. Every string in a
//! spec is untrusted (host and metric names come from agents) and the SVG writer escapes
//! all text and attributes.
//!
//! ```
//! use ganglion_web::graph::{render_png, render_svg, GraphSpec, Line};
//! let spec = GraphSpec {
//!     title: "load_one on web-1".into(),
//!     start: 0,
//!     end: 600,
//!     lines: vec![Line::new("load_one", "", (0..10).map(|i| (i * 60, Some(i as f64))).collect())],
//!     ..GraphSpec::default()
//! };
//! let png = render_png(&spec).unwrap();
//! assert_eq!(&png[1..4], b"PNG");
//! assert!(render_svg(&spec).unwrap().contains("load_one"));
//! ```

use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

/// Largest width or height accepted, so one request cannot allocate without bound.
pub const MAX_SIZE: u32 = 4000;
/// Smallest width and height that still fit an axis and a plot area.
pub const MIN_WIDTH: u32 = 80;
pub const MIN_HEIGHT: u32 = 40;

use crate::raster::FONT;

/// A graph failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    #[error("size {width}x{height} is outside {MIN_WIDTH}x{MIN_HEIGHT} to {MAX_SIZE}x{MAX_SIZE}")]
    InvalidSize { width: u32, height: u32 },
    #[error("the range must end after it starts (start {start}, end {end})")]
    InvalidRange { start: i64, end: i64 },
    #[error("drawing failed: {0}")]
    Draw(String),
    #[error("PNG encoding failed: {0}")]
    Encode(String),
}

/// How several lines share the plot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Each line on its own, over the others.
    #[default]
    Lines,
    /// Each line filled on top of the ones before it (CPU user/system/wio/steal). Where
    /// one layer is unknown, it and every layer above it are unknown there, as with
    /// rrdtool's STACK.
    Stacked,
}

/// `(unix seconds, low, high)` of a band; either bound unknown leaves a gap.
pub type BandPoint = (i64, Option<f64>, Option<f64>);

/// One series of a graph.
#[derive(Debug, Clone, Default)]
pub struct Line {
    /// Shown in the legend; untrusted.
    pub label: String,
    /// Unit of the values, shown in the legend and on the value axis.
    pub unit: String,
    /// `(unix seconds, value)` in time order; `None` is unknown and drawn as a gap.
    pub points: Vec<(i64, Option<f64>)>,
    /// Optional band drawn behind the line, e.g. the MIN and MAX consolidations around
    /// the AVERAGE line: `(unix seconds, low, high)`.
    pub band: Option<Vec<BandPoint>>,
    /// Colour as RGB; `None` picks from the palette by position.
    pub color: Option<(u8, u8, u8)>,
}

impl Line {
    /// A line with a palette colour and no band.
    pub fn new(label: impl Into<String>, unit: impl Into<String>, points: Vec<(i64, Option<f64>)>) -> Line {
        Line { label: label.into(), unit: unit.into(), points, band: None, color: None }
    }
}

/// Everything that decides one graph's pixels.
#[derive(Debug, Clone)]
pub struct GraphSpec {
    /// Shown above the plot; untrusted. Empty for none.
    pub title: String,
    pub width: u32,
    pub height: u32,
    /// Time range shown, unix seconds.
    pub start: i64,
    pub end: i64,
    pub mode: Mode,
    pub lines: Vec<Line>,
    /// Draw the legend rows (last/avg/max per line) under the plot.
    pub legend: bool,
    /// Label of the value axis; empty means the first line's unit.
    pub vertical_label: String,
    /// Lowest value of the value axis when the data do not go below it (Ganglia draws
    /// most metrics from zero). `None` fits the axis to the data.
    pub lower_limit: Option<f64>,
}

impl Default for GraphSpec {
    fn default() -> GraphSpec {
        GraphSpec {
            title: String::new(),
            width: 400,
            height: 200,
            start: 0,
            end: 3600,
            mode: Mode::Lines,
            lines: Vec::new(),
            legend: true,
            vertical_label: String::new(),
            lower_limit: Some(0.0),
        }
    }
}

/// Last, average and maximum of a line's known values, as the legend shows them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub last: Option<f64>,
    pub avg: Option<f64>,
    pub max: Option<f64>,
}

/// Legend values of a series: unknown and non-finite values are left out.
pub fn summarize(points: &[(i64, Option<f64>)]) -> Summary {
    let mut last = None;
    let mut sum = 0.0;
    let mut n = 0usize;
    let mut max: Option<f64> = None;
    for v in points.iter().filter_map(|p| known(p.1)) {
        last = Some(v);
        sum += v;
        n += 1;
        max = Some(max.map_or(v, |m| m.max(v)));
    }
    let avg = if n > 0 { Some(sum / n as f64).filter(|a| a.is_finite()) } else { None };
    Summary { last, avg, max }
}

/// Values beyond this are clamped so that the axis span (`hi - lo`) stays finite.
const VALUE_LIMIT: f64 = 1e300;

fn known(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite()).map(|v| v.clamp(-VALUE_LIMIT, VALUE_LIMIT))
}

/// Formats a number the way rrdtool's `%s` does: three significant digits and an SI
/// prefix (`1.23k`, `45.6M`, `12.0m`).
pub fn format_si(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    if v == 0.0 {
        return "0".into();
    }
    const PREFIXES: [(f64, &str); 10] = [
        (1e18, "E"),
        (1e15, "P"),
        (1e12, "T"),
        (1e9, "G"),
        (1e6, "M"),
        (1e3, "k"),
        (1.0, ""),
        (1e-3, "m"),
        (1e-6, "u"),
        (1e-9, "n"),
    ];
    let a = v.abs();
    if !(1e-9..1e21).contains(&a) {
        return format!("{v:.2e}");
    }
    let (scale, prefix) = PREFIXES.iter().copied().find(|(s, _)| a >= *s).unwrap_or((1e-9, "n"));
    let x = v / scale;
    let digits = if x.abs() >= 100.0 {
        0
    } else if x.abs() >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{x:.digits$}");
    // "1.50" → "1.5", "2.00" → "2": axis labels stay short.
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    format!("{s}{prefix}")
}

/// A time axis label: clock time for short ranges, the day for longer ones (UTC).
fn format_time(t: i64, span: i64) -> String {
    let Some(dt) = chrono::DateTime::from_timestamp(t, 0) else { return String::new() };
    let f = if span <= 2 * 86_400 {
        "%H:%M"
    } else if span <= 10 * 86_400 {
        "%a %H:%M"
    } else if span <= 200 * 86_400 {
        "%d %b"
    } else {
        "%b %Y"
    };
    dt.format(f).to_string()
}

/// Tick times aligned to the clock (UTC), at most about `wanted` of them in the range.
fn time_ticks(start: i64, end: i64, wanted: i64) -> Vec<i64> {
    const STEPS: [i64; 18] = [
        60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400, 172_800, 604_800, 1_209_600,
        2_592_000, 7_776_000, 31_536_000,
    ];
    let span = end - start;
    let step = STEPS.iter().copied().find(|s| span / s <= wanted).unwrap_or(span / wanted.max(1)).max(1);
    // Weeks start on Monday: the epoch was a Thursday.
    let offset = if step == 604_800 || step == 1_209_600 { 4 * 86_400 } else { 0 };
    let first = (start - offset).div_euclid(step) * step + offset;
    let first = if first < start { first + step } else { first };
    (0..).map(|k| first.saturating_add(k * step)).take_while(|t| *t <= end).take(64).collect()
}

/// Ganglia's and rrdtool's usual colours, in the order lines get them.
const PALETTE: [(u8, u8, u8); 10] = [
    (0x33, 0x66, 0xcc),
    (0xdd, 0x44, 0x22),
    (0xff, 0x99, 0x00),
    (0x10, 0x96, 0x18),
    (0x99, 0x00, 0x99),
    (0x00, 0x99, 0xc6),
    (0xdd, 0x44, 0x77),
    (0x66, 0xaa, 0x00),
    (0xb8, 0x2e, 0x2e),
    (0x31, 0x63, 0x95),
];

fn color_of(i: usize, line: &Line) -> RGBColor {
    let (r, g, b) = line.color.unwrap_or(PALETTE[i % PALETTE.len()]);
    RGBColor(r, g, b)
}

pub(crate) fn register_fonts() {
    static FONTS: Once = Once::new();
    FONTS.call_once(|| {
        // The bytes are a valid TrueType font compiled in; a failure would be a broken build.
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .unwrap_or_else(|_| panic!("the embedded DejaVu Sans font is valid"));
        plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold())
            .unwrap_or_else(|_| panic!("the embedded DejaVu Sans Bold font is valid"));
    });
}

fn check(spec: &GraphSpec) -> Result<(), GraphError> {
    let (w, h) = (spec.width, spec.height);
    if !(MIN_WIDTH..=MAX_SIZE).contains(&w) || !(MIN_HEIGHT..=MAX_SIZE).contains(&h) {
        return Err(GraphError::InvalidSize { width: w, height: h });
    }
    if spec.end <= spec.start {
        return Err(GraphError::InvalidRange { start: spec.start, end: spec.end });
    }
    Ok(())
}

/// Draws the graph as a PNG of exactly `width` × `height` pixels.
///
/// # Errors
/// [`GraphError::InvalidSize`] or [`GraphError::InvalidRange`] for a spec that cannot be
/// drawn; drawing and encoding errors otherwise (not expected with valid specs).
pub fn render_png(spec: &GraphSpec) -> Result<Vec<u8>, GraphError> {
    check(spec)?;
    register_fonts();
    let (w, h) = (spec.width, spec.height);
    let len = w as usize * h as usize * 3;
    let render = |rgb: &mut [u8]| {
        {
            let root = crate::raster::Surface::new(rgb, (w, h)).into_drawing_area();
            draw(&root, spec)?;
            root.present().map_err(|e| GraphError::Draw(e.to_string()))?;
        }
        crate::raster::encode_png(rgb, w, h).map_err(|e| GraphError::Encode(e.to_string()))
    };
    if len > CANVAS_KEPT_BYTES {
        return render(&mut vec![0u8; len]);
    }
    // A fresh buffer of this size is mapped and zeroed by the kernel on every graph;
    // each thread keeps one instead. Its old pixels do not matter: drawing starts by
    // filling the whole canvas.
    thread_local! {
        static CANVAS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    CANVAS.with_borrow_mut(|rgb| {
        if rgb.len() < len {
            rgb.resize(len, 0);
        }
        render(&mut rgb[..len])
    })
}

/// Largest RGB canvas a thread keeps between graphs (the `xlarge` size is 918 KB).
const CANVAS_KEPT_BYTES: usize = 1 << 20;

/// Draws the graph as an SVG document; all text is escaped.
///
/// # Errors
/// As [`render_png`].
pub fn render_svg(spec: &GraphSpec) -> Result<String, GraphError> {
    check(spec)?;
    register_fonts();
    let mut out = String::with_capacity(32 * 1024);
    {
        let root = SVGBackend::with_string(&mut out, (spec.width, spec.height)).into_drawing_area();
        draw(&root, spec)?;
        root.present().map_err(|e| GraphError::Draw(e.to_string()))?;
    }
    Ok(out)
}

/// Splits a series into runs of known values: each run is drawn as one path, so an
/// unknown value leaves a gap.
fn runs(points: impl Iterator<Item = (i64, Option<f64>)>) -> Vec<Vec<(i64, f64)>> {
    let mut out = Vec::new();
    let mut cur: Vec<(i64, f64)> = Vec::new();
    for (t, v) in points {
        match known(v) {
            Some(v) => cur.push((t, v)),
            None if !cur.is_empty() => out.push(std::mem::take(&mut cur)),
            None => {}
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The stacked tops: layer `i` at a time is the sum of layers `0..=i`, unknown when any
/// of them is unknown there. Layers are aligned by time; a time missing from a layer
/// counts as unknown for it.
fn stack(lines: &[Line]) -> Vec<Vec<(i64, Option<f64>)>> {
    let mut times: Vec<i64> = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0)).collect();
    times.sort_unstable();
    times.dedup();
    let mut below: Vec<Option<f64>> = vec![Some(0.0); times.len()];
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        let mut vals: Vec<Option<f64>> = vec![None; times.len()];
        for (t, v) in &line.points {
            if let Ok(i) = times.binary_search(t) {
                vals[i] = known(*v);
            }
        }
        let tops: Vec<Option<f64>> = below
            .iter()
            .zip(&vals)
            .map(|(b, v)| match (b, v) {
                (Some(b), Some(v)) => Some((b + v).clamp(-VALUE_LIMIT, VALUE_LIMIT)),
                _ => None,
            })
            .collect();
        out.push(times.iter().copied().zip(tops.iter().copied()).collect());
        below = tops;
    }
    out
}

fn value_range(spec: &GraphSpec, tops: &[Vec<(i64, Option<f64>)>]) -> (f64, f64) {
    let in_range = |t: i64| t >= spec.start && t <= spec.end;
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    let mut see = |v: f64| {
        lo = lo.min(v);
        hi = hi.max(v);
    };
    for series in tops {
        series.iter().filter(|p| in_range(p.0)).filter_map(|p| known(p.1)).for_each(&mut see);
    }
    for line in &spec.lines {
        for (t, a, b) in line.band.iter().flatten() {
            if in_range(*t) {
                known(*a).into_iter().chain(known(*b)).for_each(&mut see);
            }
        }
    }
    if let Some(floor) = spec.lower_limit.filter(|f| f.is_finite()) {
        if lo > floor || !lo.is_finite() {
            lo = floor;
        }
    }
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if hi <= lo {
        // A flat line sits in the middle of a small span instead of on the edge.
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return (lo - pad, hi + pad);
    }
    let pad = (hi - lo) * 0.05;
    let top = if (hi + pad).is_finite() { hi + pad } else { hi };
    (lo, top)
}

/// Font size of a graph of `height` pixels.
fn font_size(height: u32) -> f64 {
    (f64::from(height) / 18.0).clamp(9.0, 13.0)
}

fn is_small(width: u32, height: u32) -> bool {
    width < 240 || height < 120
}

fn y_label_width(width: u32, height: u32) -> u32 {
    let fs = font_size(height) as u32;
    if is_small(width, height) {
        fs * 3
    } else {
        fs * 4 + 8
    }
}

const MARGIN_LEFT: u32 = 2;
const MARGIN_RIGHT: u32 = 8;

/// Left edge and width of the plot area in a graph of this size, in pixels: pages use
/// it to turn a drag on the image into a time range.
pub fn plot_x(width: u32, height: u32) -> (u32, u32) {
    let left = MARGIN_LEFT + y_label_width(width, height);
    (left, width.saturating_sub(left + MARGIN_RIGHT))
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, spec: &GraphSpec) -> Result<(), GraphError> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| GraphError::Draw(e.to_string());
    root.fill(&WHITE).map_err(err)?;
    // Text scales a little with the graph so small tiles stay readable and large
    // graphs do not look empty.
    let fs = font_size(spec.height);
    let text = |size: f64| (FONT, size).into_font();
    let legend_rows = if spec.legend { spec.lines.len() } else { 0 };
    let row_h = (fs * 1.35).ceil() as u32;
    let legend_h = (legend_rows as u32 * row_h + if legend_rows > 0 { 4 } else { 0 }).min(spec.height / 2);
    let (upper, lower) = root.split_vertically(spec.height - legend_h);

    let tops: Vec<Vec<(i64, Option<f64>)>> = match spec.mode {
        Mode::Stacked => stack(&spec.lines),
        Mode::Lines => spec.lines.iter().map(|l| l.points.clone()).collect(),
    };
    let (lo, hi) = value_range(spec, &tops);
    let span = spec.end - spec.start;

    let mut builder = ChartBuilder::on(&upper);
    builder.margin_top(4).margin_right(MARGIN_RIGHT).margin_left(MARGIN_LEFT);
    if !spec.title.is_empty() {
        builder.caption(&spec.title, text(fs + 1.0));
    }
    let small = is_small(spec.width, spec.height);
    builder.x_label_area_size(if small { fs as u32 + 4 } else { fs as u32 + 8 });
    builder.y_label_area_size(y_label_width(spec.width, spec.height));
    let mut chart = builder.build_cartesian_2d(spec.start..spec.end, lo..hi).map_err(err)?;

    let unit = if spec.vertical_label.is_empty() {
        spec.lines.first().map(|l| l.unit.as_str()).unwrap_or("")
    } else {
        spec.vertical_label.as_str()
    };
    let y_fmt = |v: &f64| format_si(*v);
    let mut mesh = chart.configure_mesh();
    // Time ticks are drawn below, aligned to clock minutes, hours and days; plotters
    // would put them at round numbers of seconds.
    // (Zero labels trips an overflow in plotters' key points, so one empty label.)
    let no_label = |_: &i64| String::new();
    mesh.x_labels(1)
        .x_label_formatter(&no_label)
        .set_tick_mark_size(plotters::chart::LabelAreaPosition::Bottom, 0)
        .disable_x_mesh()
        .y_labels(if small { 3 } else { (spec.height / 40).clamp(3, 10) as usize })
        .y_label_formatter(&y_fmt)
        .label_style(text(fs - 1.0))
        .light_line_style(RGBColor(0xee, 0xee, 0xee))
        .bold_line_style(RGBColor(0xdd, 0xdd, 0xdd))
        .axis_style(RGBColor(0x99, 0x99, 0x99));
    if !unit.is_empty() && !small {
        mesh.y_desc(unit).axis_desc_style(text(fs - 1.0));
    }
    mesh.draw().map_err(err)?;
    let grid = RGBColor(0xe4, 0xe4, 0xe4);
    let wanted = if small { 3 } else { (spec.width / 90).clamp(3, 12) as i64 };
    for t in time_ticks(spec.start, spec.end, wanted) {
        chart.draw_series(std::iter::once(PathElement::new(vec![(t, lo), (t, hi)], grid))).map_err(err)?;
        let (x, y) = chart.backend_coord(&(t, lo));
        let style = TextStyle::from(text(fs - 1.0)).pos(plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Center,
            plotters::style::text_anchor::VPos::Top,
        ));
        root.draw(&Text::new(format_time(t, span), (x, y + 3), style)).map_err(err)?;
    }

    // Bands first, so lines stay on top.
    for (i, line) in spec.lines.iter().enumerate() {
        let Some(band) = &line.band else { continue };
        let color = color_of(i, line).mix(0.2);
        let mut run: Vec<(i64, f64, f64)> = Vec::new();
        let flush = |run: &mut Vec<(i64, f64, f64)>| -> Vec<(i64, f64)> {
            let mut poly: Vec<(i64, f64)> = run.iter().map(|p| (p.0, p.2)).collect();
            poly.extend(run.iter().rev().map(|p| (p.0, p.1)));
            run.clear();
            poly
        };
        let mut polys = Vec::new();
        for (t, a, b) in band {
            match (known(*a), known(*b)) {
                (Some(a), Some(b)) => run.push((*t, a.min(b), a.max(b))),
                _ if !run.is_empty() => polys.push(flush(&mut run)),
                _ => {}
            }
        }
        if !run.is_empty() {
            polys.push(flush(&mut run));
        }
        chart.draw_series(polys.into_iter().map(|p| Polygon::new(p, color.filled()))).map_err(err)?;
    }

    for (i, line) in spec.lines.iter().enumerate() {
        let color = color_of(i, line);
        let top_runs = runs(tops[i].iter().copied());
        if spec.mode == Mode::Stacked {
            // The area between this layer's top and the one below, per known run.
            let below: Option<&Vec<(i64, Option<f64>)>> = if i > 0 { Some(&tops[i - 1]) } else { None };
            for run in &top_runs {
                let mut poly = run.clone();
                for (t, _) in run.iter().rev() {
                    let b = below
                        .and_then(|bl| bl.binary_search_by_key(t, |p| p.0).ok().and_then(|k| known(bl[k].1)))
                        .unwrap_or(0.0);
                    poly.push((*t, b));
                }
                chart.draw_series(std::iter::once(Polygon::new(poly, color.mix(0.85).filled()))).map_err(err)?;
            }
        }
        for run in top_runs {
            if run.len() == 1 {
                // A lone known value between unknowns is still shown.
                chart.draw_series(std::iter::once(Circle::new(run[0], 1, color.filled()))).map_err(err)?;
            } else {
                chart.draw_series(LineSeries::new(run, color.stroke_width(1))).map_err(err)?;
            }
        }
    }

    if legend_rows > 0 {
        let x0 = 6;
        for (i, line) in spec.lines.iter().enumerate() {
            let y = 2 + i as i32 * row_h as i32;
            if y + row_h as i32 > legend_h as i32 + 1 {
                break;
            }
            let color = color_of(i, line);
            let sq = (fs * 0.8) as i32;
            lower.draw(&Rectangle::new([(x0, y + 2), (x0 + sq, y + 2 + sq)], color.filled())).map_err(err)?;
            let s = summarize(&line.points);
            let v = |x: Option<f64>| x.map_or_else(|| "-".to_string(), format_si);
            let unit = if line.unit.is_empty() { String::new() } else { format!(" {}", line.unit) };
            let label =
                format!("{}  Now: {}{unit}  Avg: {}{unit}  Max: {}{unit}", line.label, v(s.last), v(s.avg), v(s.max));
            lower.draw(&Text::new(label, (x0 + sq + 5, y), text(fs - 1.0))).map_err(err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn png_size(png: &[u8]) -> (u32, u32) {
        let dec = png::Decoder::new(png);
        let reader = dec.read_info().unwrap();
        let info = reader.info();
        (info.width, info.height)
    }

    fn series(n: i64, step: i64, f: impl Fn(i64) -> Option<f64>) -> Vec<(i64, Option<f64>)> {
        (0..n).map(|i| (1_700_000_000 + i * step, f(i))).collect()
    }

    fn spec(lines: Vec<Line>) -> GraphSpec {
        GraphSpec {
            title: "load on web-1".into(),
            width: 500,
            height: 220,
            start: 1_700_000_000,
            end: 1_700_000_000 + 3600,
            lines,
            ..GraphSpec::default()
        }
    }

    #[test]
    fn png_has_requested_size() {
        for (w, h) in [(500, 220), (MIN_WIDTH, MIN_HEIGHT), (1200, 400), (200, 100)] {
            let s =
                GraphSpec { width: w, height: h, ..spec(vec![Line::new("x", "", series(60, 60, |i| Some(i as f64)))]) };
            assert_eq!(png_size(&render_png(&s).unwrap()), (w, h));
        }
    }

    #[test]
    fn cached_glyphs_draw_the_same_pixels_as_plotters() {
        // The whole graph through the PNG path's surface and through plotters' own
        // bitmap backend: every pixel equal, for lines, bands, stacks and every text.
        let mut band = Line::new("cpu", "%", series(60, 60, |i| Some(5.0 + (i % 7) as f64)));
        band.band = Some((0..60).map(|i| (1_700_000_000 + i * 60, Some(2.0), Some(14.0))).collect());
        let stacked = GraphSpec {
            mode: Mode::Stacked,
            ..spec(vec![
                Line::new("user", "%", series(60, 60, |i| Some(i as f64))),
                Line::new("system", "%", series(60, 60, |i| if i == 30 { None } else { Some(3.0) })),
            ])
        };
        let small =
            GraphSpec { width: 200, height: 90, ..spec(vec![Line::new("x", "B/s", series(60, 60, |_| Some(1e6)))]) };
        for s in [spec(vec![band]), stacked, small] {
            register_fonts();
            let (w, h) = (s.width, s.height);
            let mut ours = vec![0u8; (w * h * 3) as usize];
            let mut theirs = ours.clone();
            draw(&crate::raster::Surface::new(&mut ours, (w, h)).into_drawing_area(), &s).unwrap();
            draw(&BitMapBackend::with_buffer(&mut theirs, (w, h)).into_drawing_area(), &s).unwrap();
            assert!(ours == theirs, "{} pixels differ", ours.iter().zip(&theirs).filter(|(a, b)| a != b).count());
        }
    }

    #[test]
    fn a_reused_canvas_leaves_nothing_of_the_previous_graph() {
        let b = spec(vec![Line::new("x", "", series(60, 60, |i| Some(i as f64)))]);
        let first = render_png(&b).unwrap();
        let mut a = GraphSpec { width: 700, height: 300, mode: Mode::Stacked, ..b.clone() };
        a.lines.push(Line::new("y", "", series(60, 60, |_| Some(1e9))));
        render_png(&a).unwrap();
        assert!(render_png(&b).unwrap() == first);
    }

    #[test]
    fn rejects_bad_size_and_range() {
        let s = GraphSpec { width: 10, ..spec(vec![]) };
        assert!(matches!(render_png(&s), Err(GraphError::InvalidSize { .. })));
        let s = GraphSpec { width: MAX_SIZE + 1, ..spec(vec![]) };
        assert!(matches!(render_svg(&s), Err(GraphError::InvalidSize { .. })));
        let s = GraphSpec { end: 0, start: 10, ..spec(vec![]) };
        assert!(matches!(render_png(&s), Err(GraphError::InvalidRange { .. })));
    }

    #[test]
    fn unknown_values_are_gaps_not_zero() {
        // Two known runs separated by unknowns: two paths, and no point drawn at zero.
        let pts = series(60, 60, |i| if (20..30).contains(&i) { None } else { Some(5.0) });
        let svg = render_svg(&spec(vec![Line::new("load_one", "", pts)])).unwrap();
        assert_eq!(svg.matches("stroke=\"#3366CC\" stroke-width=\"1\" points").count(), 2, "{svg}");
        // The average ignores the unknowns: 5, not 5 * 50 / 60.
        assert!(svg.contains("Avg: 5"), "{svg}");
    }

    #[test]
    fn counter_wrap_unknown_splits_the_line() {
        // A rate computed from a counter that wrapped at sample 40 is unknown there
        // (as rrdtool's COUNTER/DERIVE with a min of 0 gives), and draws as a gap.
        let raw: Vec<u64> =
            (0..60u64).map(|i| if i < 40 { u32::MAX as u64 - 4000 + i * 100 } else { i * 100 }).collect();
        let rates = series(60, 60, |i| {
            if i == 0 {
                return None;
            }
            let (a, b) = (raw[i as usize - 1], raw[i as usize]);
            b.checked_sub(a).map(|d| d as f64 / 60.0)
        });
        assert_eq!(rates.iter().filter(|p| p.1.is_none()).count(), 2);
        let svg = render_svg(&spec(vec![Line::new("bytes_in", "B/s", rates)])).unwrap();
        assert_eq!(svg.matches("stroke=\"#3366CC\" stroke-width=\"1\" points").count(), 2);
        assert!(svg.contains("Max: 1.67 B/s"), "{svg}");
    }

    #[test]
    fn svg_has_axis_labels_and_legend_values() {
        let pts = series(61, 60, |i| Some(if i == 60 { 1500.0 } else { 500.0 }));
        let mut s = spec(vec![Line::new("bytes_out", "B/s", pts)]);
        s.start = 1_700_000_400; // 22:20 UTC
        s.end = s.start + 3600;
        let svg = render_svg(&s).unwrap();
        assert!(svg.contains("load on web-1"));
        assert!(svg.contains("Now: 1.5k B/s"), "{svg}");
        assert!(svg.contains("Max: 1.5k B/s"));
        assert!(svg.contains("Avg: 516 B/s"));
        assert!(svg.contains(">B/s<") || svg.contains("B/s\n"), "unit on the value axis");
        // Clock times on the time axis, and SI values on the value axis.
        for t in ["22:30", "22:45", "23:00", "23:15"] {
            assert!(svg.contains(&format!("\n{t}\n")), "{t} in {svg}");
        }
        assert!(svg.contains(">\n1k\n<") || svg.contains(">1k<") || svg.contains("\n1k\n"), "{svg}");
    }

    #[test]
    fn stacked_layers_sum_and_unknown_propagates_up() {
        let a = Line::new("user", "%", series(10, 60, |_| Some(10.0)));
        let b = Line::new("system", "%", series(10, 60, |i| if i == 5 { None } else { Some(5.0) }));
        let tops = stack(&[a.clone(), b.clone()]);
        assert_eq!(tops[1][0].1, Some(15.0));
        assert_eq!(tops[1][5].1, None);
        assert_eq!(tops[0][5].1, Some(10.0));
        let s = GraphSpec { mode: Mode::Stacked, ..spec(vec![a, b]) };
        let svg = render_svg(&s).unwrap();
        assert!(svg.contains("<polygon"));
        render_png(&s).unwrap();
    }

    #[test]
    fn text_in_svg_is_escaped() {
        let evil = "<script>alert(\"x\")</script>'&";
        let mut s = spec(vec![Line::new(evil, evil, series(5, 60, |_| Some(1.0)))]);
        s.title = evil.into();
        s.vertical_label = evil.into();
        let svg = render_svg(&s).unwrap();
        assert!(!svg.contains("<script"), "{svg}");
        assert!(!svg.contains("alert(\""));
        assert!(svg.contains("&lt;script&gt;"));
    }

    #[test]
    fn band_draws_behind_the_line() {
        let mut l = Line::new("cpu", "%", series(10, 60, |_| Some(5.0)));
        l.band = Some((0..10).map(|i| (1_700_000_000 + i * 60, Some(2.0), Some(9.0))).collect());
        let svg = render_svg(&spec(vec![l])).unwrap();
        assert!(svg.contains("<polygon"));
    }

    #[test]
    fn time_ticks_are_aligned() {
        assert_eq!(
            time_ticks(1_700_000_400, 1_700_004_000, 6),
            vec![
                1_700_000_400,
                1_700_001_000,
                1_700_001_600,
                1_700_002_200,
                1_700_002_800,
                1_700_003_400,
                1_700_004_000
            ]
        );
        let day = time_ticks(1_700_000_000, 1_700_086_400, 6);
        assert!(day.iter().all(|t| t % 21_600 == 0), "{day:?}");
        let week = time_ticks(1_700_000_000, 1_700_604_800, 8);
        assert!(week.iter().all(|t| t % 86_400 == 0), "{week:?}");
    }

    #[test]
    fn si_format() {
        assert_eq!(format_si(0.0), "0");
        assert_eq!(format_si(1500.0), "1.5k");
        assert_eq!(format_si(123_456_789.0), "123M");
        assert_eq!(format_si(0.012), "12m");
        assert_eq!(format_si(-2.5), "-2.5");
        assert_eq!(format_si(f64::NAN), "-");
        assert_eq!(format_si(1e300), "1.00e300");
    }

    #[test]
    fn empty_and_all_unknown_draw() {
        for lines in [vec![], vec![Line::new("x", "", vec![])], vec![Line::new("x", "", series(30, 60, |_| None))]] {
            let s = spec(lines);
            assert_eq!(png_size(&render_png(&s).unwrap()), (500, 220));
            assert!(render_svg(&s).unwrap().contains("Now: -") || s.lines.is_empty());
        }
    }

    fn value() -> impl Strategy<Value = Option<f64>> {
        prop_oneof![
            Just(None),
            Just(Some(f64::NAN)),
            Just(Some(f64::INFINITY)),
            Just(Some(f64::NEG_INFINITY)),
            Just(Some(f64::MAX)),
            Just(Some(-f64::MAX)),
            Just(Some(0.0)),
            any::<f64>().prop_map(Some),
            (-1e6..1e6f64).prop_map(Some),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn never_panics(
            vals in proptest::collection::vec(proptest::collection::vec(value(), 0..40), 0..4),
            stacked in any::<bool>(),
            w in MIN_WIDTH..700u32,
            h in MIN_HEIGHT..300u32,
            start in -1_000_000i64..2_000_000_000,
            len in 1i64..40_000_000,
        ) {
            let lines = vals.into_iter().enumerate().map(|(k, vs)| {
                let step = (len / 40).max(1);
                let pts = vs.into_iter().enumerate().map(|(i, v)| (start + i as i64 * step, v)).collect();
                Line::new(format!("l{k}"), "u", pts)
            }).collect();
            let s = GraphSpec {
                width: w, height: h, start, end: start + len,
                mode: if stacked { Mode::Stacked } else { Mode::Lines },
                lines, ..GraphSpec::default()
            };
            let png = render_png(&s).unwrap();
            prop_assert_eq!(png_size(&png), (w, h));
            render_svg(&s).unwrap();
        }
    }
}
