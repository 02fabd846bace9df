//! The pictures. Each chart is one generic function drawn twice — SVG for the web, PNG for
//! everything else — by [`both`].

use std::error::Error;
use std::path::Path;

use lockcheck_model::spec::Status;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::format_ns;
use super::inputs::Figure;
use crate::ReportError;
use crate::results::{Kind, Role};

pub(crate) type DrawResult = Result<(), Box<dyn Error>>;

/// Draws `draw` into `<dir>/<stem>.svg` and `<dir>/<stem>.png`; returns both paths.
macro_rules! both {
    ($dir:expr, $stem:expr, $size:expr, $draw:expr) => {{
        let svg = $dir.join(format!("{}.svg", $stem));
        let png = $dir.join(format!("{}.png", $stem));
        {
            let area = SVGBackend::new(&svg, $size).into_drawing_area();
            ($draw)(&area).map_err(|e| ReportError::Draw(svg.clone(), e.to_string()))?;
            area.present().map_err(|e| ReportError::Draw(svg.clone(), e.to_string()))?;
        }
        {
            let area = BitMapBackend::new(&png, $size).into_drawing_area();
            ($draw)(&area).map_err(|e| ReportError::Draw(png.clone(), e.to_string()))?;
            area.present().map_err(|e| ReportError::Draw(png.clone(), e.to_string()))?;
        }
        Ok::<(PathBuf, PathBuf), ReportError>((svg, png))
    }};
}
pub(crate) use both;

/// Distinguishable colours (Okabe–Ito, safe for colour-blind readers), then plotters' own.
pub(crate) fn color(i: usize) -> RGBColor {
    const OKABE_ITO: [RGBColor; 7] = [
        RGBColor(0, 114, 178),
        RGBColor(213, 94, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(230, 159, 0),
        RGBColor(86, 180, 233),
        RGBColor(90, 90, 90),
    ];
    OKABE_ITO.get(i).copied().unwrap_or_else(|| {
        let c = Palette99::pick(i).to_rgba();
        RGBColor(c.0, c.1, c.2)
    })
}

/// How a series is labelled in a legend.
pub(crate) fn series_label(f: &Figure) -> String {
    match f.role {
        Role::Subject => f.subject.clone(),
        Role::Floor => format!("{} (floor)", f.subject),
        Role::Peer => format!("{} (peer)", f.subject),
    }
}

/// Groups figures into series: one per (suite, subject, role), in first-seen order.
fn series(figures: &[Figure], keep: impl Fn(&Figure) -> bool) -> Vec<Vec<&Figure>> {
    let mut out: Vec<Vec<&Figure>> = Vec::new();
    for f in figures.iter().filter(|f| keep(f)) {
        match out.iter_mut().find(|s| s[0].suite == f.suite && s[0].subject == f.subject && s[0].role == f.role) {
            Some(s) => s.push(f),
            None => out.push(vec![f]),
        }
    }
    out
}

fn log_bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) =
        values.filter(|v| v.is_finite() && *v > 0.0).fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return (1.0, 10.0);
    }
    // Whole decades, so the log axis shows round labels.
    (10f64.powf(lo.log10().floor()), 10f64.powf(hi.log10().ceil().max(lo.log10().floor() + 1.0)))
}

fn waiters_label(x: &f64) -> String {
    format!("{}", x.round() as u64)
}

/// Hand-off latency (p50 dots and line, whisker to p99) against queued waiters, every
/// backend on one log–log chart. Floors are dashed: the in-process floor per queue length,
/// a network backend's round trip as a level line. The legend has a strip of its own to the
/// right, so it never hides a curve.
pub(crate) fn hand_off_vs_waiters<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, figures: &[Figure]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    let (plot, legend_strip) = area.split_horizontally(area.dim_in_pixel().0 * 7 / 10);
    let lines = series(figures, |f| matches!(f.kind, Kind::HandOff { .. }));
    let round_trips: Vec<&Figure> = figures.iter().filter(|f| f.kind == Kind::RoundTrip).collect();
    let (lo, hi) = log_bounds(
        lines.iter().flatten().flat_map(|f| [f.p50_ns, f.p99_ns]).chain(round_trips.iter().map(|f| f.p50_ns)),
    );
    let max_waiters = lines.iter().flatten().filter_map(|f| waiters(f.kind)).max().unwrap_or(64).max(2) as f64;
    let (x_lo, x_hi) = (0.8f64, max_waiters * 1.25);
    let mut chart = ChartBuilder::on(&plot)
        .caption("Hand-off latency: release → next waiter running", ("sans-serif", 26))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(90)
        .build_cartesian_2d((x_lo..x_hi).log_scale().base(2.0), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("waiters queued when the holder releases")
        .y_desc("latency (dot: median, whisker: p99)")
        .x_label_formatter(&waiters_label)
        .y_label_formatter(&|v| format_ns(*v))
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    let mut legend: Vec<LegendEntry> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let c = color(i);
        let floor = line[0].role == Role::Floor;
        // Series side by side around each queue length, so whiskers do not hide each other.
        let dodge = 2f64.powf((i as f64 - (lines.len() as f64 - 1.0) / 2.0) * 0.05);
        let points: Vec<(f64, f64)> =
            line.iter().filter_map(|f| waiters(f.kind).map(|w| (w as f64 * dodge, f.p50_ns))).collect();
        let style = c.stroke_width(if floor { 2 } else { 3 });
        if floor {
            chart.draw_series(DashedLineSeries::new(points.clone(), 8, 6, style))?;
        } else {
            chart.draw_series(LineSeries::new(points.clone(), style))?;
        }
        legend.push(LegendEntry::new(series_label(line[0]), c, 3, floor));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 5, c.filled())))?;
        chart.draw_series(line.iter().filter_map(|f| {
            let w = waiters(f.kind)? as f64 * dodge;
            Some(PathElement::new(vec![(w, f.p50_ns), (w, f.p99_ns)], c.stroke_width(2)))
        }))?;
    }
    for (j, floor) in round_trips.iter().enumerate() {
        let c = color(lines.len() + j);
        let level = vec![(x_lo, floor.p50_ns), (x_hi, floor.p50_ns)];
        chart.draw_series(DashedLineSeries::new(level, 8, 6, c.stroke_width(2)))?;
        legend.push(LegendEntry::new(format!("{} (floor: one round trip)", floor.subject), c, 3, true));
    }
    draw_legend(&legend_strip, &legend)
}

/// One row of a legend: the series' label, colour, line width, and whether it is dashed.
struct LegendEntry {
    label: String,
    color: RGBColor,
    width: u32,
    dashed: bool,
}

impl LegendEntry {
    fn new(label: impl Into<String>, color: RGBColor, width: u32, dashed: bool) -> Self {
        LegendEntry { label: label.into(), color, width, dashed }
    }
}

/// A legend in a strip of its own, beside the plot, so it never hides a curve: a line
/// sample and the label per entry, long labels wrapped.
fn draw_legend<DB: DrawingBackend>(strip: &DrawingArea<DB, Shift>, entries: &[LegendEntry]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let width = strip.dim_in_pixel().0 as i32;
    let chars_per_row = ((width - 60) / 8).max(12) as usize;
    let mut y = 70;
    for entry in entries {
        let style = entry.color.stroke_width(entry.width);
        if entry.dashed {
            for x in (10..40).step_by(12) {
                strip.draw(&PathElement::new(vec![(x, y + 9), (x + 7, y + 9)], style))?;
            }
        } else {
            strip.draw(&PathElement::new(vec![(10, y + 9), (40, y + 9)], style))?;
        }
        for row in wrap(&entry.label, chars_per_row) {
            strip.draw(&Text::new(row, (48, y), ("sans-serif", 15).into_font()))?;
            y += 19;
        }
        y += 8;
    }
    Ok(())
}

/// Splits `text` into rows of at most `width` characters at spaces (a longer word gets a
/// row of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut rows: Vec<String> = Vec::new();
    for word in text.split(' ') {
        match rows.last_mut() {
            Some(row) if row.chars().count() + 1 + word.chars().count() <= width => {
                row.push(' ');
                row.push_str(word);
            }
            _ => rows.push(word.to_owned()),
        }
    }
    rows
}

fn waiters(kind: Kind) -> Option<usize> {
    match kind {
        Kind::HandOff { waiters } => Some(waiters),
        _ => None,
    }
}

/// Throughput against clients: solid lines with one shared key, dashed with one key per
/// client.
pub(crate) fn throughput_vs_clients<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, figures: &[Figure]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    let (plot, legend_strip) = area.split_horizontally(area.dim_in_pixel().0 * 7 / 10);
    let clients = |k: Kind| match k {
        Kind::Throughput { clients, keys } => Some((clients, keys)),
        _ => None,
    };
    let all: Vec<&Figure> = figures.iter().filter(|f| clients(f.kind).is_some() && f.ops_per_sec.is_some()).collect();
    let (lo, hi) = log_bounds(all.iter().filter_map(|f| f.ops_per_sec));
    let max_clients = all.iter().filter_map(|f| clients(f.kind).map(|c| c.0)).max().unwrap_or(64).max(2) as f64;
    let mut chart = ChartBuilder::on(&plot)
        .caption("Throughput: lock, hold one scheduler turn, release — per second", ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(90)
        .build_cartesian_2d((0.8f64..max_clients * 1.25).log_scale().base(2.0), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients")
        .y_desc("operations per second")
        .x_label_formatter(&waiters_label)
        .y_label_formatter(&|v| format_rate(*v))
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    let lines = series(figures, |f| clients(f.kind).is_some() && f.ops_per_sec.is_some());
    let mut legend: Vec<LegendEntry> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let c = color(i);
        for shared in [true, false] {
            // One client is both "one shared key" and "a key per client": both lines start there.
            let mut points: Vec<(f64, f64)> = line
                .iter()
                .filter_map(|f| {
                    let (n, keys) = clients(f.kind)?;
                    let mine = if shared { keys == 1 } else { keys == n };
                    mine.then_some((n as f64, f.ops_per_sec?))
                })
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            points.dedup_by(|a, b| a.0 == b.0);
            // A line needs more than the one-client point the two variants share.
            if points.iter().all(|&(n, _)| n <= 1.0) {
                continue;
            }
            let label =
                format!("{} — {}", series_label(line[0]), if shared { "one shared key" } else { "a key per client" });
            if shared {
                chart.draw_series(LineSeries::new(points.clone(), c.stroke_width(3)))?;
            } else {
                chart.draw_series(DashedLineSeries::new(points.clone(), 8, 6, c.stroke_width(3)))?;
            }
            legend.push(LegendEntry::new(label, c, 3, !shared));
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
        }
    }
    draw_legend(&legend_strip, &legend)
}

/// `12.3k/s`-style rate labels.
pub(crate) fn format_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M/s", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k/s", v / 1e3)
    } else {
        format!("{v:.0}/s")
    }
}

/// One CDF curve: a label, whether it is a floor, its points.
pub(crate) struct Curve {
    pub label: String,
    pub floor: bool,
    pub thin: bool,
    pub color: usize,
    pub points: Vec<(f64, f64)>,
    pub p999: f64,
}

/// Latency CDFs on a log time axis.
pub(crate) fn cdf_chart<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, title: &str, curves: &[Curve]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    let (plot, legend_strip) = area.split_horizontally(area.dim_in_pixel().0 * 7 / 10);
    // The axis ends just past the slowest p99.9: a single scheduler hiccup of milliseconds
    // would otherwise squeeze every curve into the left edge. The max is in the tables.
    let (lo, _) = log_bounds(curves.iter().flat_map(|c| c.points.iter().map(|p| p.0)));
    let (_, hi) = log_bounds(curves.iter().map(|c| c.p999 * 1.5));
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, ("sans-serif", 26))
        .margin(20)
        .margin_right(45)
        .x_label_area_size(55)
        .y_label_area_size(70)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..1.0)?;
    chart
        .configure_mesh()
        .x_desc("latency (log scale; cut just past the slowest p99.9 — the max is in the tables)")
        .y_desc("fraction of hand-offs at most this slow")
        .x_label_formatter(&|v| format_ns(*v))
        .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    let mut legend: Vec<LegendEntry> = Vec::new();
    for curve in curves {
        let c = color(curve.color);
        // A CDF is a step function: draw it as steps.
        let mut steps = Vec::with_capacity(curve.points.len() * 2);
        let mut last = 0.0;
        for &(x, y) in curve.points.iter().filter(|p| p.0 <= hi) {
            steps.push((x, last));
            steps.push((x, y));
            last = y;
        }
        steps.push((hi, last));
        let width = if curve.thin { 1 } else { 3 };
        if curve.floor {
            chart.draw_series(DashedLineSeries::new(steps, 8, 5, c.stroke_width(2)))?;
        } else {
            chart.draw_series(LineSeries::new(steps, c.stroke_width(width)))?;
        }
        legend.push(LegendEntry::new(curve.label.clone(), c, if curve.floor { 2 } else { width }, curve.floor));
    }
    draw_legend(&legend_strip, &legend)
}

/// A cell of a matrix picture.
pub(crate) struct Cell {
    pub text: String,
    pub fill: RGBColor,
}

/// The colour of a status.
pub(crate) fn status_color(status: Status) -> RGBColor {
    match status {
        Status::Passed => RGBColor(166, 219, 160),
        Status::Violated => RGBColor(239, 100, 90),
        Status::Predicted => RGBColor(253, 204, 138),
        Status::Unknown => RGBColor(200, 170, 230),
        Status::NotClaimed | Status::NotChecked => RGBColor(230, 230, 230),
    }
}

/// The colour of an operation that neither returned well nor left its outcome open (failed,
/// not granted, timed out).
const OTHER_OPERATION: RGBColor = RGBColor(255, 255, 255);

/// A rows × columns grid of coloured cells with a legend: the check and fault matrices.
pub(crate) fn matrix<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    rows: &[String],
    columns: &[String],
    cells: &dyn Fn(usize, usize) -> Option<Cell>,
    legend: &[(&str, RGBColor)],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    let layout = MatrixLayout::new(rows, columns);
    let text = |size: u32| ("sans-serif", size).into_font().color(&BLACK);
    area.draw(&Text::new(title.to_owned(), (20, 14), text(24)))?;
    for (r, row) in rows.iter().enumerate() {
        let y = layout.top + r as i32 * layout.cell_h;
        area.draw(&Text::new(row.clone(), (20, y + layout.cell_h / 2 - 8), text(16)))?;
    }
    for (c, column) in columns.iter().enumerate() {
        let x = layout.left + c as i32 * layout.cell_w;
        // Column headers are rotated so long property names fit narrow columns.
        let style = text(16).transform(FontTransform::Rotate270);
        area.draw(&Text::new(column.clone(), (x + layout.cell_w / 2 - 8, layout.top - 8), style))?;
    }
    for r in 0..rows.len() {
        for c in 0..columns.len() {
            let x = layout.left + c as i32 * layout.cell_w;
            let y = layout.top + r as i32 * layout.cell_h;
            let cell = cells(r, c).unwrap_or(Cell { text: "–".to_owned(), fill: RGBColor(255, 255, 255) });
            area.draw(&Rectangle::new([(x, y), (x + layout.cell_w, y + layout.cell_h)], cell.fill.filled()))?;
            area.draw(&Rectangle::new(
                [(x, y), (x + layout.cell_w, y + layout.cell_h)],
                BLACK.mix(0.3).stroke_width(1),
            ))?;
            let width = cell.text.chars().count() as i32 * 8;
            area.draw(&Text::new(
                cell.text,
                (x + (layout.cell_w - width).max(4) / 2, y + layout.cell_h / 2 - 8),
                text(15),
            ))?;
        }
    }
    let mut x = 20;
    let y = layout.top + rows.len() as i32 * layout.cell_h + 20;
    for (label, fill) in legend {
        area.draw(&Rectangle::new([(x, y), (x + 18, y + 18)], fill.filled()))?;
        area.draw(&Rectangle::new([(x, y), (x + 18, y + 18)], BLACK.mix(0.3).stroke_width(1)))?;
        area.draw(&Text::new(label.to_string(), (x + 24, y + 1), text(15)))?;
        x += 24 + label.chars().count() as i32 * 9 + 24;
    }
    Ok(())
}

/// Where a matrix's parts go, in pixels.
pub(crate) struct MatrixLayout {
    left: i32,
    top: i32,
    cell_w: i32,
    cell_h: i32,
    width: u32,
    height: u32,
}

impl MatrixLayout {
    pub(crate) fn new(rows: &[String], columns: &[String]) -> Self {
        let left = 40 + rows.iter().map(|r| r.chars().count()).max().unwrap_or(8) as i32 * 9;
        let top = 70 + columns.iter().map(|c| c.chars().count()).max().unwrap_or(8) as i32 * 9;
        let (cell_w, cell_h) = (104, 36);
        let width = (left + columns.len() as i32 * cell_w + 40).max(700) as u32;
        let height = (top + rows.len() as i32 * cell_h + 70) as u32;
        MatrixLayout { left, top, cell_w, cell_h, width, height }
    }

    pub(crate) fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }
}

/// One operation of a timeline.
#[derive(Clone, Debug)]
pub(crate) struct TimelineOp {
    pub client: u32,
    pub start_ms: f64,
    pub end_ms: Option<f64>,
    pub label: String,
    /// Passed: it returned what it asked for; unknown: its outcome is open; `None`: anything
    /// else (failed, not granted).
    pub status: Option<Status>,
}

/// An interval in which a client believed it held the lock.
#[derive(Clone, Debug)]
pub(crate) struct Holding {
    pub client: u32,
    pub from_ms: f64,
    pub to_ms: f64,
    pub label: String,
}

/// A counterexample as a picture: one band per client; operations as boxes from invocation to
/// return (open-ended ones fade out), stacked in lanes so their labels never overlap; the
/// intervals each client believed it held the lock as green bars; the time two of them overlap
/// in red — Jepsen's and Porcupine's timelines.
///
/// The time axis ends shortly after the last operation: a lease that runs on for seconds is
/// cut there and labelled with its end.
pub(crate) fn timeline<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    ops: &[TimelineOp],
    holdings: &[Holding],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    let layout = TimelineLayout::new(ops, holdings, area.dim_in_pixel().0);
    let (plot, legend_strip) = area.split_vertically(area.dim_in_pixel().1.saturating_sub(44));
    // Enough decimals that neighbouring tick labels differ.
    let span = layout.x_to - layout.x_from;
    let decimals = if span < 1.0 {
        3
    } else if span < 10.0 {
        2
    } else if span < 100.0 {
        1
    } else {
        0
    };
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(90)
        .build_cartesian_2d(layout.x_from..layout.x_to, 0f64..layout.height)?;
    chart
        .configure_mesh()
        .x_desc("time since the history started (ms)")
        .y_labels(0)
        .x_label_formatter(&|x| format!("{x:.decimals$}"))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .disable_y_mesh()
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    let cut = layout.x_to;
    // Overlapping holdings of different clients: where mutual exclusion broke.
    for (i, a) in holdings.iter().enumerate() {
        for b in &holdings[i + 1..] {
            let (from, to) = (a.from_ms.max(b.from_ms), a.to_ms.min(b.to_ms).min(cut));
            if a.client != b.client && from < to {
                let width = (to - from).max(layout.min_width);
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(from, 0.0), (from + width, layout.height)],
                    RGBColor(239, 60, 50).mix(0.3).filled(),
                )))?;
            }
        }
    }
    let held = RGBColor(0, 158, 115);
    for h in holdings {
        let y = layout.holding_y(h.client);
        let to = h.to_ms.min(cut);
        let to = to.max(h.from_ms + layout.min_width);
        chart.draw_series(std::iter::once(Rectangle::new([(h.from_ms, y - 0.15), (to, y + 0.15)], held.filled())))?;
        let label = if h.to_ms > cut { format!("{} (until {:.0} ms)", h.label, h.to_ms) } else { h.label.clone() };
        chart.draw_series(std::iter::once(Text::new(
            label,
            (h.from_ms, y + 0.45),
            ("sans-serif", 13).into_font().color(&held),
        )))?;
    }
    for (op, lane) in ops.iter().zip(&layout.lanes) {
        let y = layout.op_y(op.client, *lane);
        let fill = op.status.map_or(OTHER_OPERATION, status_color);
        let end = op.end_ms.unwrap_or(cut).max(op.start_ms + layout.min_width);
        let style = if op.end_ms.is_some() { fill.filled() } else { fill.mix(0.45).filled() };
        let corners = [(op.start_ms, y - 0.4), (end, y + 0.4)];
        chart.draw_series(std::iter::once(Rectangle::new(corners, style)))?;
        chart.draw_series(std::iter::once(Rectangle::new(corners, BLACK.mix(0.6).stroke_width(1))))?;
        chart.draw_series(std::iter::once(Text::new(
            op.label.clone(),
            (end + layout.min_width, y + 0.3),
            ("sans-serif", 13).into_font(),
        )))?;
    }
    // Client names, centred on their bands, in the label area left of the plot.
    for (client, centre) in layout.client_centres() {
        let (px, py) = chart.backend_coord(&(layout.x_from, centre));
        let (ox, oy) = plot.get_base_pixel();
        area.draw(&Text::new(format!("client {client}"), (px - ox - 85, py - oy - 8), ("sans-serif", 15).into_font()))?;
        let (_, top) = chart.backend_coord(&(layout.x_from, layout.band_top(client)));
        chart.plotting_area().draw(&PathElement::new(
            vec![(layout.x_from, layout.band_top(client)), (layout.x_to, layout.band_top(client))],
            BLACK.mix(0.15).stroke_width(1),
        ))?;
        let _ = top;
    }
    let mut x = 20;
    for (label, fill) in [
        ("operation (invoke → return)", status_color(Status::Passed)),
        ("outcome unknown", status_color(Status::Unknown)),
        ("failed / not granted", OTHER_OPERATION),
        ("believed held (grant → release / expiry)", held),
        ("held by two at once", RGBColor(239, 60, 50).mix(0.3).to_rgba().rgb_color()),
    ] {
        legend_strip.draw(&Rectangle::new([(x, 8), (x + 18, 24)], fill.filled()))?;
        legend_strip.draw(&Rectangle::new([(x, 8), (x + 18, 24)], BLACK.mix(0.4).stroke_width(1)))?;
        legend_strip.draw(&Text::new(label.to_owned(), (x + 24, 9), ("sans-serif", 14).into_font()))?;
        x += 24 + label.chars().count() as i32 * 8 + 18;
    }
    Ok(())
}

/// Where a timeline's parts go. Y grows upwards; each client has a band made of one track
/// for its holdings and one lane per level of overlapping operation labels.
pub(crate) struct TimelineLayout {
    x_from: f64,
    x_to: f64,
    /// The narrowest drawn width, in ms (so an instant operation is still visible).
    min_width: f64,
    /// The lane of each operation, in order.
    lanes: Vec<usize>,
    /// Per client (sorted): (client, lanes, bottom y of its band).
    bands: Vec<(u32, usize, f64)>,
    height: f64,
}

impl TimelineLayout {
    pub(crate) fn new(ops: &[TimelineOp], holdings: &[Holding], width_px: u32) -> Self {
        let last_op = ops.iter().map(|o| o.end_ms.unwrap_or(o.start_ms)).fold(0.0f64, f64::max);
        let first = ops.iter().map(|o| o.start_ms).chain(holdings.iter().map(|h| h.from_ms)).fold(last_op, f64::min);
        let span = (last_op - first).max(0.001);
        // Room on the right for the last labels.
        let x_from = first - span * 0.02;
        let x_to = last_op + span * 0.35;
        let ms_per_px = (x_to - x_from) / f64::from(width_px.saturating_sub(150).max(100));
        let mut clients: Vec<u32> = ops.iter().map(|o| o.client).chain(holdings.iter().map(|h| h.client)).collect();
        clients.sort_unstable();
        clients.dedup();
        // Greedy lanes per client: an operation goes to the first lane whose previous label
        // has ended (labels are about 7 px per character at 13 px).
        let mut lane_ends: Vec<Vec<f64>> = vec![Vec::new(); clients.len()];
        let mut lanes = Vec::with_capacity(ops.len());
        for op in ops {
            let c = clients.iter().position(|&c| c == op.client).unwrap_or(0);
            let end =
                op.end_ms.unwrap_or(x_to).max(op.start_ms) + (op.label.chars().count() as f64 * 7.0 + 12.0) * ms_per_px;
            let lane = match lane_ends[c].iter().position(|&e| e <= op.start_ms) {
                Some(l) => l,
                None => {
                    lane_ends[c].push(0.0);
                    lane_ends[c].len() - 1
                }
            };
            lane_ends[c][lane] = end;
            lanes.push(lane);
        }
        let mut bands = Vec::new();
        let mut y = 0.3;
        // First client on top: build bottom-up from the last one.
        for (c, client) in clients.iter().enumerate().rev() {
            let n = lane_ends[c].len().max(1);
            bands.push((*client, n, y));
            y += n as f64 + 1.2;
        }
        bands.reverse();
        TimelineLayout { x_from, x_to, min_width: 3.0 * ms_per_px, lanes, bands, height: y }
    }

    fn band(&self, client: u32) -> (usize, f64) {
        self.bands.iter().find(|b| b.0 == client).map(|b| (b.1, b.2)).unwrap_or((1, 0.0))
    }

    /// The centre of lane `lane` of `client` (lane 0 on top, under the holding track).
    fn op_y(&self, client: u32, lane: usize) -> f64 {
        let (lanes, bottom) = self.band(client);
        bottom + (lanes - 1 - lane.min(lanes - 1)) as f64 + 0.5
    }

    /// The centre of the holding track of `client`, above its operations.
    fn holding_y(&self, client: u32) -> f64 {
        let (lanes, bottom) = self.band(client);
        bottom + lanes as f64 + 0.35
    }

    fn band_top(&self, client: u32) -> f64 {
        let (lanes, bottom) = self.band(client);
        bottom + lanes as f64 + 0.95
    }

    fn client_centres(&self) -> Vec<(u32, f64)> {
        self.bands.iter().map(|&(client, lanes, bottom)| (client, bottom + (lanes as f64 + 0.9) / 2.0)).collect()
    }

    /// A picture height that gives every lane room.
    pub(crate) fn pixel_height(&self) -> u32 {
        (200.0 + self.height * 34.0).round() as u32
    }
}

trait RgbaExt {
    fn rgb_color(self) -> RGBColor;
}

impl RgbaExt for RGBAColor {
    fn rgb_color(self) -> RGBColor {
        // Blend onto white: legends draw opaque swatches.
        let a = self.3;
        let mix = |c: u8| (c as f64 * a + 255.0 * (1.0 - a)).round() as u8;
        RGBColor(mix(self.0), mix(self.1), mix(self.2))
    }
}

/// Makes sure `dir` exists.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(|e| ReportError::File(dir.to_owned(), e))
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn legend_labels_wrap_at_spaces() {
        assert_eq!(wrap("Go original (5→500 ms backoff) (peer)", 16), ["Go original", "(5→500 ms", "backoff) (peer)"]);
        assert_eq!(wrap("short", 16), ["short"]);
        assert_eq!(wrap("averyveryverylongword x", 8), ["averyveryverylongword", "x"]);
    }
}
