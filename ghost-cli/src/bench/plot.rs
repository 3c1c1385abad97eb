//! SVG charts of a bench [`Report`], written next to `report.json`.
//!
//! Three files, drawn with plotters' SVG backend:
//!
//! - `latency-cdf.svg`: the latency percentile spectrum of every operation that has a
//!   histogram — latency (ms, linear) against percentile, where the percentile axis is a
//!   log scale of `1 / (1 - p)` so 90 %, 99 %, 99.9 % ... are evenly spaced. A plain CDF
//!   squeezes the tail, which is what a load test is about, into the last pixels; the
//!   spectrum gives each extra "nine" the same width. Each curve ends at the percentile its
//!   sample count can resolve (`1 - 1/n`).
//! - `throughput.svg`: successes per second of each operation kind and failures per
//!   second (all kinds), per timeline slice, plotted at the slice's start.
//! - `latency-over-time.svg`: the median and 99th percentile of each slice's successes.
//!   Slices without successes are gaps in the lines, not zeros, because "no latency
//!   measured" is not "zero latency".
//!
//! No font feature is enabled, so plotters lays text out with a crude width estimate and
//! the SVG backend still emits real `<text>` elements (the viewer renders them with its
//! own fonts). With nothing to draw (no histograms, an empty timeline), a chart still gets
//! its caption and axes and says "no data", so the set of files is always the same.
//!
//! Each chart is rendered into memory first and then written with one `fs::write`, so
//! errors name the file and a failed drawing never leaves half a file behind.

use std::fmt::Display;
use std::ops::Range;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::report::Report;

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 600;
const FONT: &str = "sans-serif";

/// Beyond this many points per chart, markers would only blur the lines.
const MARKER_LIMIT: usize = 60;

/// Line colours for operation kinds (the "tab10" set minus its red, which marks failures).
const COLORS: [RGBColor; 9] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const FAILURE_COLOR: RGBColor = RGBColor(214, 39, 40);

/// Writes `latency-cdf.svg`, `throughput.svg` and `latency-over-time.svg` into `dir`
/// (created if missing) and returns their paths in that order.
///
/// Errors name the file (or the directory) that could not be drawn or written.
pub fn write_plots(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("{}: cannot create plot directory: {e}", dir.display()))?;
    let charts: [(&str, Render); 3] = [
        ("latency-cdf.svg", latency_spectrum_svg),
        ("throughput.svg", throughput_svg),
        ("latency-over-time.svg", latency_over_time_svg),
    ];
    let mut written = Vec::with_capacity(charts.len());
    for (name, render) in charts {
        let path = dir.join(name);
        let svg = render(report).map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::write(&path, svg).map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Draws one chart of a report into an SVG document.
type Render = fn(&Report) -> Result<String, String>;

/// One legend entry, drawn as one or more disconnected polylines.
struct Line {
    label: String,
    color: RGBColor,
    segments: Vec<Vec<(f64, f64)>>,
}

impl Line {
    fn points(&self) -> impl Iterator<Item = &(f64, f64)> {
        self.segments.iter().flatten()
    }
}

fn latency_spectrum_svg(report: &Report) -> Result<String, String> {
    let mut lines = Vec::new();
    for (index, (name, stats)) in report
        .operations
        .iter()
        .filter(|(_, stats)| !stats.histogram_us.is_empty())
        .enumerate()
    {
        if let Some((samples, points)) = spectrum(&stats.histogram_us) {
            lines.push(Line {
                label: format!("{name} (n={samples})"),
                color: COLORS[index % COLORS.len()],
                segments: vec![points],
            });
        }
    }
    // Whole decades on the x axis keep the tick labels on round "nines"; at least up to
    // 99.9 % so a short run still shows where its tail would be.
    let widest = lines
        .iter()
        .flat_map(Line::points)
        .map(|&(x, _)| x)
        .fold(1000.0_f64, f64::max);
    let x_max = 10f64.powf((widest.log10() - 1e-9).ceil());
    let y_max = headroom(lines.iter().flat_map(Line::points).map(|&(_, y)| y));
    let caption = caption(report, "Latency percentile spectrum");
    render_svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&caption, (FONT, 20))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d((1.0..x_max).log_scale(), 0.0..y_max)
            .map_err(drawing)?;
        chart
            .configure_mesh()
            .x_desc("percentile (log scale of 1/(1-p))")
            .y_desc("latency (ms)")
            .x_label_formatter(&|x| percentile_label(*x))
            .axis_desc_style((FONT, 16))
            .draw()
            .map_err(drawing)?;
        // Markers on a step line would mark bucket edges, not measurements.
        draw_lines(&mut chart, &lines, SeriesLabelPosition::UpperLeft, false)?;
        if lines.is_empty() {
            no_data(root)?;
        }
        Ok(())
    })
}

/// The spectrum of a `[microseconds, count]` histogram as a step line of
/// `(1 / (1 - p), milliseconds)`, with the sample count; `None` without samples.
fn spectrum(histogram: &[[u64; 2]]) -> Option<(u64, Vec<(f64, f64)>)> {
    let mut buckets: Vec<[u64; 2]> = histogram.iter().copied().filter(|b| b[1] > 0).collect();
    buckets.sort_unstable_by_key(|b| b[0]);
    let samples = buckets.iter().fold(0u64, |sum, b| sum.saturating_add(b[1]));
    if samples == 0 {
        return None;
    }
    // n samples resolve percentiles up to 1 - 1/n; the maximum holds from there to 100 %,
    // which a log axis cannot reach. Tiny runs still get one visible decade.
    let x_end = (samples as f64).max(10.0);
    let spectrum_x = |below: u64| (1.0 / (1.0 - below as f64 / samples as f64)).min(x_end);
    let mut points = Vec::with_capacity(buckets.len() * 2);
    let mut below = 0u64;
    for [micros, count] in buckets {
        let ms = micros as f64 / 1000.0;
        let start = spectrum_x(below);
        below = below.saturating_add(count);
        let end = if below >= samples {
            x_end
        } else {
            spectrum_x(below)
        };
        points.push((start, ms));
        points.push((end, ms));
    }
    Some((samples, points))
}

/// `x = 1 / (1 - p)` as a percentile with as many decimals as it has nines past 99.
fn percentile_label(x: f64) -> String {
    if !x.is_finite() || x < 1.0 {
        return String::new();
    }
    let percent = 100.0 * (1.0 - 1.0 / x);
    let decimals = ((x.log10() - 1e-9).ceil() - 2.0).clamp(0.0, 9.0) as usize;
    format!("{percent:.decimals$}%")
}

fn throughput_svg(report: &Report) -> Result<String, String> {
    let kinds: std::collections::BTreeSet<&String> = report
        .timeline
        .iter()
        .flat_map(|bucket| bucket.succeeded.keys())
        .collect();
    // A slice of no length has no rate.
    let slices: Vec<_> = report
        .timeline
        .iter()
        .filter(|b| b.seconds.is_finite() && b.seconds > 0.0 && b.start_seconds.is_finite())
        .collect();
    let mut lines: Vec<Line> = kinds
        .iter()
        .enumerate()
        .map(|(index, kind)| Line {
            label: format!("{kind} succeeded/s"),
            color: COLORS[index % COLORS.len()],
            segments: vec![
                slices
                    .iter()
                    .map(|b| {
                        let count = b.succeeded.get(*kind).copied().unwrap_or(0);
                        (b.start_seconds, count as f64 / b.seconds)
                    })
                    .collect(),
            ],
        })
        .collect();
    if !slices.is_empty() {
        lines.push(Line {
            label: "failed/s (all kinds)".to_owned(),
            color: FAILURE_COLOR,
            segments: vec![
                slices
                    .iter()
                    .map(|b| (b.start_seconds, b.failed as f64 / b.seconds))
                    .collect(),
            ],
        });
    }
    time_chart(
        report,
        "Throughput over time",
        "operations per second",
        lines,
    )
}

fn latency_over_time_svg(report: &Report) -> Result<String, String> {
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    // Slices without successes report 0 ms; they split the lines instead.
    let mut run50 = Vec::new();
    let mut run99 = Vec::new();
    for bucket in &report.timeline {
        let successes = bucket
            .succeeded
            .values()
            .fold(0u64, |s, c| s.saturating_add(*c));
        let x = bucket.start_seconds;
        if successes == 0 || !x.is_finite() {
            p50.extend(take_nonempty(&mut run50));
            p99.extend(take_nonempty(&mut run99));
            continue;
        }
        if bucket.p50_ms.is_finite() {
            run50.push((x, bucket.p50_ms));
        }
        if bucket.p99_ms.is_finite() {
            run99.push((x, bucket.p99_ms));
        }
    }
    p50.extend(take_nonempty(&mut run50));
    p99.extend(take_nonempty(&mut run99));
    let mut lines = Vec::new();
    if !p50.is_empty() {
        lines.push(Line {
            label: "p50".to_owned(),
            color: COLORS[0],
            segments: p50,
        });
    }
    if !p99.is_empty() {
        lines.push(Line {
            label: "p99".to_owned(),
            color: COLORS[1],
            segments: p99,
        });
    }
    time_chart(report, "Latency over time", "latency (ms)", lines)
}

fn take_nonempty(run: &mut Vec<(f64, f64)>) -> Option<Vec<(f64, f64)>> {
    (!run.is_empty()).then(|| std::mem::take(run))
}

/// A chart over the measured phase: x is seconds since it began, y starts at 0.
fn time_chart(
    report: &Report,
    title: &str,
    y_desc: &str,
    mut lines: Vec<Line>,
) -> Result<String, String> {
    for line in &mut lines {
        for segment in &mut line.segments {
            segment.retain(|(x, y)| x.is_finite() && y.is_finite());
        }
        line.segments.retain(|segment| !segment.is_empty());
    }
    lines.retain(|line| !line.segments.is_empty());
    let x_range = time_range(report);
    let y_max = headroom(lines.iter().flat_map(Line::points).map(|&(_, y)| y));
    let caption = caption(report, title);
    render_svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&caption, (FONT, 20))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(x_range, 0.0..y_max)
            .map_err(drawing)?;
        chart
            .configure_mesh()
            .x_desc("time since measuring began (s)")
            .y_desc(y_desc)
            .axis_desc_style((FONT, 16))
            .draw()
            .map_err(drawing)?;
        draw_lines(&mut chart, &lines, SeriesLabelPosition::UpperRight, true)?;
        if lines.is_empty() {
            no_data(root)?;
        }
        Ok(())
    })
}

/// The timeline's span: from the first slice's start to the last slice's end.
fn time_range(report: &Report) -> Range<f64> {
    let starts = report
        .timeline
        .iter()
        .map(|b| b.start_seconds)
        .filter(|x| x.is_finite());
    let ends = report
        .timeline
        .iter()
        .map(|b| b.start_seconds + b.seconds.max(0.0))
        .filter(|x| x.is_finite());
    let start = starts.fold(f64::INFINITY, f64::min);
    let end = ends.fold(f64::NEG_INFINITY, f64::max);
    if start.is_finite() && end > start {
        start..end
    } else if start.is_finite() {
        // A degenerate range would make plotters divide by zero when mapping points.
        start..start + 1.0
    } else {
        0.0..1.0
    }
}

/// An upper bound for a y axis from 0: the largest value plus room for the legend.
fn headroom(values: impl Iterator<Item = f64>) -> f64 {
    let max = values.filter(|v| v.is_finite()).fold(0.0_f64, f64::max);
    if max > 0.0 { max * 1.15 } else { 1.0 }
}

fn draw_lines<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    lines: &[Line],
    legend_position: SeriesLabelPosition,
    markers: bool,
) -> Result<(), String>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let point_count: usize = lines.iter().map(|line| line.points().count()).sum();
    for line in lines {
        let style = line.color.stroke_width(2);
        for (index, segment) in line.segments.iter().enumerate() {
            let series = chart
                .draw_series(LineSeries::new(segment.iter().copied(), style))
                .map_err(drawing)?;
            // One legend entry per line, however many gaps split it.
            if index == 0 {
                series
                    .label(line.label.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            }
        }
        // Few points (or a single slice) are invisible as lines alone.
        if markers && point_count <= MARKER_LIMIT {
            chart
                .draw_series(
                    line.points()
                        .map(|&point| Circle::new(point, 3, line.color.filled())),
                )
                .map_err(drawing)?;
        }
    }
    if !lines.is_empty() {
        chart
            .configure_series_labels()
            .position(legend_position)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 14))
            .draw()
            .map_err(drawing)?;
    }
    Ok(())
}

fn no_data(root: &DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String> {
    let style = TextStyle::from((FONT, 28).into_font())
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Center));
    let center = (WIDTH as i32 / 2, HEIGHT as i32 / 2);
    root.draw(&Text::new("no data", center, style))
        .map_err(drawing)
}

/// "TITLE — scenario S, L load (detail)", so a chart read alone says what run it shows.
fn caption(report: &Report, title: &str) -> String {
    let config = &report.config;
    let detail = match config.rate_per_second {
        Some(rate) if config.load_model == "open" => {
            format!("{rate} ops/s, at most {} in flight", config.concurrency)
        }
        _ => format!("concurrency {}", config.concurrency),
    };
    format!(
        "{title} — scenario {}, {}-loop load ({detail})",
        config.scenario, config.load_model
    )
}

fn drawing(error: impl Display) -> String {
    format!("drawing failed: {error}")
}

/// Runs `draw` on an in-memory SVG canvas and returns the document.
fn render_svg(
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        draw(&root)?;
        root.present().map_err(drawing)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::report::{
        BenchConfig, GeneratorUsage, LatencySummary, OpStats, Report, SCHEMA, TimelineBucket,
    };
    use super::*;

    fn op(histogram_us: Vec<[u64; 2]>) -> OpStats {
        let count = histogram_us.iter().map(|b| b[1]).sum();
        OpStats {
            completed: count,
            succeeded: count,
            failures: BTreeMap::new(),
            success_rate: 1.0,
            throughput_per_second: count as f64 / 10.0,
            latency_ms: LatencySummary::default(),
            histogram_us,
        }
    }

    fn bucket(start: f64, stores: u64, failed: u64, p50: f64, p99: f64) -> TimelineBucket {
        TimelineBucket {
            start_seconds: start,
            seconds: 1.0,
            succeeded: BTreeMap::from([("store".to_owned(), stores)]),
            failed,
            p50_ms: p50,
            p99_ms: p99,
        }
    }

    fn report(operations: BTreeMap<String, OpStats>, timeline: Vec<TimelineBucket>) -> Report {
        Report {
            schema: SCHEMA.to_owned(),
            tool_version: "0.0.0-test".to_owned(),
            started_unix_ms: 0,
            config: BenchConfig {
                scenario: "store & <retrieve>".to_owned(),
                target: "local".to_owned(),
                nodes: 3,
                runtime: Some("smol".to_owned()),
                seed_address: "127.0.0.1:9000".to_owned(),
                load_model: "closed".to_owned(),
                concurrency: 8,
                rate_per_second: None,
                duration_seconds: Some(10.0),
                operations: None,
                warmup_seconds: 1.0,
                payload_bytes: 256,
                recipients: 4,
                write_quorum: 2,
                swarm_size: 3,
                mix: None,
                seed: 1,
                node_config: None,
            },
            measured_seconds: 10.0,
            operations,
            http_targets: BTreeMap::new(),
            flow: None,
            timeline,
            generator: GeneratorUsage::default(),
            nodes: Vec::new(),
            targets: Vec::new(),
        }
    }

    fn full_report() -> Report {
        let operations = BTreeMap::from([
            (
                "store".to_owned(),
                op(vec![
                    [800, 10],
                    [1500, 500],
                    [3000, 400],
                    [9000, 80],
                    [40000, 10],
                ]),
            ),
            (
                "retrieve".to_owned(),
                op(vec![[300, 900], [700, 99], [5000, 1]]),
            ),
            ("http".to_owned(), op(Vec::new())),
        ]);
        let timeline = (0u32..10)
            .map(|s| bucket(f64::from(s), 100 + u64::from(s), u64::from(s % 3), 1.5, 9.0))
            .chain([bucket(10.0, 0, 4, 0.0, 0.0), bucket(11.0, 50, 0, 2.0, 12.0)])
            .collect();
        report(operations, timeline)
    }

    fn svg_body(path: &Path) -> String {
        let text = std::fs::read_to_string(path).expect("plot was written");
        let body = match text.strip_prefix("<?xml") {
            Some(rest) => rest.split_once("?>").expect("XML prolog closes").1,
            None => text.as_str(),
        };
        let body = body.trim_start();
        assert!(body.starts_with("<svg"), "{}: {body:.80}", path.display());
        assert!(body.trim_end().ends_with("</svg>"), "{}", path.display());
        body.to_owned()
    }

    /// The contents of the `<text>` elements, which the backend writes on lines of their own.
    fn texts(body: &str) -> Vec<String> {
        body.split("<text")
            .skip(1)
            .filter_map(|rest| {
                let (_, content) = rest.split_once('>')?;
                let (content, _) = content.split_once("</text>")?;
                Some(content.trim().to_owned())
            })
            .collect()
    }

    #[test]
    fn writes_three_svgs_with_lines_labels_and_titles() {
        let dir = tempfile::tempdir().expect("temp dir");
        let paths = write_plots(&full_report(), dir.path()).expect("plots");
        let names: Vec<_> = paths
            .iter()
            .map(|p| p.file_name().and_then(|n| n.to_str()).unwrap_or_default())
            .collect();
        assert_eq!(
            names,
            ["latency-cdf.svg", "throughput.svg", "latency-over-time.svg"]
        );
        let texts: Vec<Vec<String>> = paths
            .iter()
            .map(|path| {
                let body = svg_body(path);
                assert!(body.contains("<polyline") || body.contains("<path"));
                texts(&body)
            })
            .collect();
        let has = |chart: usize, text: &str| texts[chart].iter().any(|t| t == text);
        for (chart, title) in [
            "Latency percentile spectrum",
            "Throughput over time",
            "Latency over time",
        ]
        .iter()
        .enumerate()
        {
            // The scenario name is escaped, not dropped.
            let caption = format!(
                "{title} — scenario store &amp; &lt;retrieve&gt;, closed-loop load (concurrency 8)"
            );
            assert!(has(chart, &caption), "{:?}", texts[chart]);
            assert!(!has(chart, "no data"));
        }
        assert!(has(0, "latency (ms)"));
        assert!(has(0, "percentile (log scale of 1/(1-p))"));
        assert!(has(0, "store (n=1000)") && has(0, "retrieve (n=1000)"));
        assert!(has(0, "90%") && has(0, "99.9%"), "{:?}", texts[0]);
        // No histogram, no curve.
        assert!(!texts[0].iter().any(|t| t.starts_with("http")));
        assert!(has(1, "operations per second"));
        assert!(has(1, "time since measuring began (s)"));
        assert!(has(1, "store succeeded/s") && has(1, "failed/s (all kinds)"));
        assert!(has(2, "latency (ms)") && has(2, "time since measuring began (s)"));
        assert!(has(2, "p50") && has(2, "p99"));
    }

    #[test]
    fn empty_report_still_writes_three_valid_svgs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let paths = write_plots(&report(BTreeMap::new(), Vec::new()), dir.path()).expect("plots");
        assert_eq!(paths.len(), 3);
        for path in &paths {
            let texts = texts(&svg_body(path));
            assert!(texts.iter().any(|t| t == "no data"), "{}", path.display());
            assert!(texts.iter().any(|t| t.contains("scenario store")));
        }
    }

    #[test]
    fn single_bucket_and_zero_values_do_not_panic() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ops = BTreeMap::from([
            ("store".to_owned(), op(vec![[0, 1]])),
            ("retrieve".to_owned(), op(vec![[5, 0]])),
        ]);
        let mut zero = bucket(0.0, 0, 0, 0.0, 0.0);
        zero.seconds = 0.0;
        for timeline in [vec![bucket(0.0, 1, 0, 0.0, 0.0)], vec![zero]] {
            let paths = write_plots(&report(ops.clone(), timeline), dir.path()).expect("plots");
            for path in &paths {
                svg_body(path);
            }
        }
    }

    #[test]
    fn error_names_the_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "x").expect("write");
        let error = write_plots(&full_report(), &file).expect_err("a file is no directory");
        assert!(error.contains("not-a-dir"), "{error}");
    }

    #[test]
    fn spectrum_steps_and_ends_at_resolvable_percentile() {
        let (samples, points) = spectrum(&[[2000, 1], [1000, 3]]).expect("samples");
        assert_eq!(samples, 4);
        assert_eq!(points, [(1.0, 1.0), (4.0, 1.0), (4.0, 2.0), (10.0, 2.0)]);
        assert!(spectrum(&[[5, 0]]).is_none());
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(percentile_label(100_000.0), "99.999%");
    }
}
