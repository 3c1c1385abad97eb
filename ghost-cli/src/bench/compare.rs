//! `ghost bench compare`: two `report.json` files side by side, and whether the new one
//! regressed.
//!
//! For every operation of either report (the `operations` map, then each `http_targets`
//! entry) the comparison shows throughput, success rate and the latency summary. Only
//! the steady figures are *gated*, i.e. can fail the comparison:
//!
//! - throughput and success rate (higher is better), and latency p50, p90, p95 and p99
//!   (lower is better) regress when they are worse by more than the allowed fraction of
//!   the old value. The success rate is compared as itself, so 100 % → 98 % is a 2 %
//!   regression (not a doubling of the failure share).
//! - `flow`'s `missing` and `duplicated` counts are correctness figures: any rise from 0
//!   regresses whatever the threshold; a rise from a non-zero count is held to the
//!   threshold like the others.
//! - an operation in the old report but not the new one regresses: a run that stopped
//!   doing something is not faster.
//!
//! Everything else is shown as `info` and never fails: p99.9, max, mean and min depend on
//! a handful of samples (one stall moves them), so gating them would make the comparison
//! flap; replication delays are sampled by a probe whose interval dominates them; the
//! generator's CPU share depends on the machine. An operation only in the new report, and
//! a latency that was 0 before (nothing to be relative to), are `info` too.
//!
//! A gated figure that improved by more than the threshold is `better`; a smaller change
//! either way is `ok`, since it is within the noise the threshold allows.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use super::report::{FlowCheck, LatencySummary, OpStats, Report, SCHEMA};

/// Reads a `report.json`, refusing files of another schema.
pub fn load(path: &Path) -> Result<Report, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read report: {e}", path.display()))?;
    // The schema is checked before the fields so that a report of another version says
    // so, instead of failing on whichever field changed.
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a JSON report: {e}", path.display()))?;
    match value.get("schema").and_then(serde_json::Value::as_str) {
        Some(schema) if schema == SCHEMA => {}
        Some(schema) => {
            return Err(format!(
                "{}: report has schema \"{schema}\", this build reads \"{SCHEMA}\"",
                path.display()
            ));
        }
        None => {
            return Err(format!(
                "{}: no \"schema\" string, not a ghost bench report (this build reads \"{SCHEMA}\")",
                path.display()
            ));
        }
    }
    serde_json::from_value(value)
        .map_err(|e| format!("{}: not a valid \"{SCHEMA}\" report: {e}", path.display()))
}

/// Parses an allowed regression given in percent, with or without the `%` sign
/// (`"5%"`, `"5"`, `"0.5%"`), into a fraction (`0.05`, `0.05`, `0.005`).
///
/// A bare number is percent too, so `"0.05"` means 0.05 %, not 5 %. Refuses negative,
/// non-numeric and non-finite values and anything above 1000 %.
pub fn parse_threshold(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let number = trimmed.strip_suffix('%').unwrap_or(trimmed).trim_end();
    let percent: f64 = number
        .parse()
        .map_err(|_| format!("threshold {text:?}: not a number of percent (like 5%)"))?;
    if !percent.is_finite() {
        return Err(format!("threshold {text:?}: not a finite number"));
    }
    if percent < 0.0 {
        return Err(format!("threshold {text:?}: must not be negative"));
    }
    if percent > 1000.0 {
        return Err(format!(
            "threshold {text:?}: more than 1000% allows anything"
        ));
    }
    Ok(percent / 100.0)
}

/// How a figure came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Gated and within the threshold.
    Ok,
    /// Gated and improved by more than the threshold.
    Better,
    /// Gated and worse by more than the threshold (or missing, or a correctness count
    /// that rose from 0).
    Regressed,
    /// Shown, never gated.
    Info,
}

impl Verdict {
    /// The word in the verdict column.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Better => "better",
            Verdict::Regressed => "REGRESSED",
            Verdict::Info => "info",
        }
    }
}

/// What a figure counts, for showing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Operations per second.
    PerSecond,
    /// A fraction 0..1, shown in percent.
    Fraction,
    /// Milliseconds.
    Millis,
    /// A plain count.
    Count,
}

impl Unit {
    fn format(self, value: f64) -> String {
        match self {
            Unit::PerSecond => format!("{value:.1}/s"),
            Unit::Fraction => format!("{:.3}%", value * 100.0),
            Unit::Millis if value.abs() >= 100.0 => format!("{value:.1} ms"),
            Unit::Millis => format!("{value:.3} ms"),
            Unit::Count => format!("{value:.0}"),
        }
    }
}

/// One line of the comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// What is compared (`store p99`, `flow missing`).
    pub figure: String,
    /// The old report's value; `None` when it lacks the figure.
    pub old: Option<f64>,
    /// The new report's value; `None` when it lacks the figure.
    pub new: Option<f64>,
    /// What the values count.
    pub unit: Unit,
    /// `(new - old) / old`; `None` when either is missing or old is 0.
    pub change: Option<f64>,
    /// The outcome.
    pub verdict: Verdict,
    /// Why the verdict is not the plain threshold rule (`missing in new`).
    pub note: Option<String>,
}

/// The outcome of [`compare`].
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// Every figure compared, operations in name order.
    pub rows: Vec<Row>,
    /// The allowed worsening, as a fraction of the old value.
    pub max_regression: f64,
}

impl Comparison {
    /// Whether any gated figure regressed.
    pub fn regressed(&self) -> bool {
        self.rows
            .iter()
            .any(|row| row.verdict == Verdict::Regressed)
    }

    /// A Markdown table (figure, old, new, change, verdict) and a one-line summary.
    pub fn render(&self) -> String {
        let mut out = String::from("| figure | old | new | change | verdict |\n");
        out.push_str("|---|---:|---:|---:|---|\n");
        for row in &self.rows {
            let figure = match &row.note {
                Some(note) => format!("{} ({note})", row.figure),
                None => row.figure.clone(),
            };
            let value = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| row.unit.format(v));
            let change = row
                .change
                .map_or_else(|| "n/a".to_owned(), |c| format!("{:+.1}%", c * 100.0));
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "| {} | {} | {} | {change} | {} |",
                escape_cell(&figure),
                value(row.old),
                value(row.new),
                row.verdict.as_str()
            );
        }
        let regressions = self
            .rows
            .iter()
            .filter(|row| row.verdict == Verdict::Regressed)
            .count();
        // Rounded, because 0.05 * 100 is not exactly 5 in binary.
        let threshold = format!("{:.4}", self.max_regression * 100.0);
        let threshold = format!("{}%", threshold.trim_end_matches('0').trim_end_matches('.'));
        let _ = if regressions == 0 {
            writeln!(out, "\nNo regression beyond {threshold}.")
        } else {
            writeln!(
                out,
                "\nREGRESSED: {regressions} figure(s) worse beyond {threshold}, missing, or newly failing a correctness check."
            )
        };
        out
    }
}

/// A `|` inside a cell (an HTTP path may hold one) would split the Markdown row.
fn escape_cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// Compares `new` against `old`, allowing gated figures to be worse by up to
/// `max_regression` (a fraction: 0.05 is 5 %; 0 fails any worsening).
pub fn compare(old: &Report, new: &Report, max_regression: f64) -> Comparison {
    let mut rows = Rows {
        rows: Vec::new(),
        threshold: max_regression,
    };
    rows.operations("", &old.operations, &new.operations);
    rows.operations("target ", &old.http_targets, &new.http_targets);
    match (&old.flow, &new.flow) {
        (Some(old_flow), Some(new_flow)) => rows.flow(old_flow, new_flow),
        (Some(_), None) => rows.note_only("flow check", "only in old"),
        (None, Some(_)) => rows.note_only("flow check", "only in new"),
        (None, None) => {}
    }
    rows.info(
        "generator CPU share of machine",
        Unit::Fraction,
        old.generator.share_of_machine,
        new.generator.share_of_machine,
    );
    Comparison {
        rows: rows.rows,
        max_regression,
    }
}

/// Reads one figure out of a latency summary.
type Pick = fn(&LatencySummary) -> f64;

/// Which way a gated figure improves.
#[derive(Clone, Copy)]
enum Better {
    Higher,
    Lower,
}

struct Rows {
    rows: Vec<Row>,
    threshold: f64,
}

impl Rows {
    fn operations(
        &mut self,
        prefix: &str,
        old: &std::collections::BTreeMap<String, OpStats>,
        new: &std::collections::BTreeMap<String, OpStats>,
    ) {
        let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        for name in names {
            let figure = format!("{prefix}{name}");
            match (old.get(name), new.get(name)) {
                (Some(old_stats), Some(new_stats)) => self.operation(&figure, old_stats, new_stats),
                (Some(old_stats), None) => self.rows.push(Row {
                    figure: format!("{figure} throughput"),
                    old: Some(old_stats.throughput_per_second),
                    new: None,
                    unit: Unit::PerSecond,
                    change: None,
                    verdict: Verdict::Regressed,
                    note: Some("missing in new".to_owned()),
                }),
                (None, Some(new_stats)) => self.rows.push(Row {
                    figure: format!("{figure} throughput"),
                    old: None,
                    new: Some(new_stats.throughput_per_second),
                    unit: Unit::PerSecond,
                    change: None,
                    verdict: Verdict::Info,
                    note: Some("only in new".to_owned()),
                }),
                (None, None) => {}
            }
        }
    }

    fn operation(&mut self, name: &str, old: &OpStats, new: &OpStats) {
        self.gated(
            &format!("{name} throughput"),
            Unit::PerSecond,
            Better::Higher,
            old.throughput_per_second,
            new.throughput_per_second,
        );
        self.gated(
            &format!("{name} success rate"),
            Unit::Fraction,
            Better::Higher,
            old.success_rate,
            new.success_rate,
        );
        // Without successes the summary is all zeros: "faster" or "slower" than that
        // means nothing, and the throughput row already carries the news.
        let no_latency = match (old.succeeded, new.succeeded) {
            (0, _) => Some("no successes in old"),
            (_, 0) => Some("no successes in new"),
            _ => None,
        };
        let (o, n) = (&old.latency_ms, &new.latency_ms);
        let gated: [(&str, Pick); 4] = [
            ("p50", |l| l.p50),
            ("p90", |l| l.p90),
            ("p95", |l| l.p95),
            ("p99", |l| l.p99),
        ];
        for (label, pick) in gated {
            let figure = format!("{name} {label}");
            match no_latency {
                Some(why) => {
                    self.info(&figure, Unit::Millis, pick(o), pick(n));
                    if let Some(row) = self.rows.last_mut() {
                        row.note = Some(why.to_owned());
                    }
                }
                None => self.gated(&figure, Unit::Millis, Better::Lower, pick(o), pick(n)),
            }
        }
        let shown: [(&str, Pick); 4] = [
            ("p99.9", |l| l.p999),
            ("max", |l| l.max),
            ("mean", |l| l.mean),
            ("min", |l| l.min),
        ];
        for (label, pick) in shown {
            self.info(&format!("{name} {label}"), Unit::Millis, pick(o), pick(n));
        }
    }

    fn flow(&mut self, old: &FlowCheck, new: &FlowCheck) {
        self.correctness_count("flow missing", old.missing, new.missing);
        self.correctness_count("flow duplicated", old.duplicated, new.duplicated);
        if let (Some(o), Some(n)) = (&old.replication_delay_ms, &new.replication_delay_ms) {
            self.info("flow replication delay p50", Unit::Millis, o.p50, n.p50);
            self.info("flow replication delay p99", Unit::Millis, o.p99, n.p99);
        }
    }

    fn correctness_count(&mut self, figure: &str, old: u64, new: u64) {
        if old == 0 && new > 0 {
            self.rows.push(Row {
                figure: figure.to_owned(),
                old: Some(0.0),
                new: Some(new as f64),
                unit: Unit::Count,
                change: None,
                verdict: Verdict::Regressed,
                note: Some("was 0".to_owned()),
            });
        } else {
            self.gated(figure, Unit::Count, Better::Lower, old as f64, new as f64);
        }
    }

    fn gated(&mut self, figure: &str, unit: Unit, better: Better, old: f64, new: f64) {
        let change = relative_change(old, new);
        let (verdict, note) = if !old.is_finite() || !new.is_finite() {
            (Verdict::Info, Some("not a number"))
        } else if old == 0.0 {
            // Nothing to be relative to: gaining throughput or success is better; a
            // latency appearing where there was none is news, not a regression.
            match better {
                Better::Higher if new > 0.0 => (Verdict::Better, Some("was 0")),
                Better::Lower if new > 0.0 => (Verdict::Info, Some("was 0")),
                Better::Higher | Better::Lower => (Verdict::Ok, None),
            }
        } else {
            let worse_by = match better {
                Better::Higher => (old - new) / old.abs(),
                Better::Lower => (new - old) / old.abs(),
            };
            let verdict = if worse_by > self.threshold {
                Verdict::Regressed
            } else if -worse_by > self.threshold {
                Verdict::Better
            } else {
                Verdict::Ok
            };
            (verdict, None)
        };
        self.rows.push(Row {
            figure: figure.to_owned(),
            old: Some(old),
            new: Some(new),
            unit,
            change,
            verdict,
            note: note.map(str::to_owned),
        });
    }

    fn info(&mut self, figure: &str, unit: Unit, old: f64, new: f64) {
        self.rows.push(Row {
            figure: figure.to_owned(),
            old: Some(old),
            new: Some(new),
            unit,
            change: relative_change(old, new),
            verdict: Verdict::Info,
            note: None,
        });
    }

    fn note_only(&mut self, figure: &str, note: &str) {
        self.rows.push(Row {
            figure: figure.to_owned(),
            old: None,
            new: None,
            unit: Unit::Count,
            change: None,
            verdict: Verdict::Info,
            note: Some(note.to_owned()),
        });
    }
}

fn relative_change(old: f64, new: f64) -> Option<f64> {
    let change = (new - old) / old.abs();
    (old != 0.0 && change.is_finite()).then_some(change)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::report::{
        BenchConfig, GeneratorUsage, NodeUsage, TargetCheck, TimelineBucket,
    };
    use super::*;

    /// Multiples that stay exact in binary, so a JSON round trip compares equal.
    fn latency(p50: f64) -> LatencySummary {
        LatencySummary {
            min: p50 * 0.25,
            mean: p50 * 1.25,
            p50,
            p90: p50 * 2.0,
            p95: p50 * 3.0,
            p99: p50 * 5.0,
            p999: p50 * 9.0,
            max: p50 * 20.0,
        }
    }

    fn op(throughput: f64, success_rate: f64, p50: f64) -> OpStats {
        let completed = 10_000;
        let succeeded = (completed as f64 * success_rate).round() as u64;
        OpStats {
            completed,
            succeeded,
            failures: BTreeMap::from([("timeout".to_owned(), completed - succeeded)]),
            success_rate,
            throughput_per_second: throughput,
            latency_ms: latency(p50),
            histogram_us: vec![[(p50 * 1000.0) as u64, succeeded]],
        }
    }

    /// A full report with `store`, `retrieve`, one HTTP target and a flow check.
    fn report() -> Report {
        Report {
            schema: SCHEMA.to_owned(),
            tool_version: "0.0.0-test".to_owned(),
            started_unix_ms: 1_700_000_000_000,
            config: BenchConfig {
                scenario: "flow".to_owned(),
                target: "local".to_owned(),
                nodes: 5,
                runtime: Some("smol".to_owned()),
                seed_address: "127.0.0.1:9000".to_owned(),
                load_model: "closed".to_owned(),
                concurrency: 32,
                rate_per_second: None,
                duration_seconds: Some(30.0),
                operations: None,
                warmup_seconds: 5.0,
                payload_bytes: 1024,
                recipients: 16,
                write_quorum: 2,
                swarm_size: 3,
                mix: Some("3:1".to_owned()),
                seed: 7,
                node_config: None,
            },
            measured_seconds: 30.0,
            operations: BTreeMap::from([
                ("store".to_owned(), op(800.0, 1.0, 12.0)),
                ("retrieve".to_owned(), op(2400.0, 0.999, 4.0)),
            ]),
            http_targets: BTreeMap::from([(
                "127.0.0.1:9000 /health|ready".to_owned(),
                op(5000.0, 1.0, 0.75),
            )]),
            flow: Some(FlowCheck {
                acknowledged: 24_000,
                retrieved_once: 24_000,
                missing: 0,
                duplicated: 0,
                on_all_members: 24_000,
                member_copies_missing: 0,
                recipients_unreadable: 0,
                replication_delay_ms: Some(latency(40.0)),
                replication_samples: 200,
                replication_unconfirmed: 0,
                verify_seconds: 3.5,
            }),
            timeline: vec![TimelineBucket {
                start_seconds: 0.0,
                seconds: 1.0,
                succeeded: BTreeMap::from([("store".to_owned(), 800)]),
                failed: 0,
                p50_ms: 12.0,
                p99_ms: 60.0,
            }],
            generator: GeneratorUsage {
                cpu_seconds: 12.0,
                share_of_machine: 0.1,
                cpus: 4,
            },
            nodes: vec![NodeUsage {
                address: "127.0.0.1:9000".to_owned(),
                admin: Some("127.0.0.1:9100".to_owned()),
                cpu_seconds: Some(20.0),
                rss_bytes: Some(50_000_000),
                counter_deltas: BTreeMap::from([("stores_total".to_owned(), 24_000.0)]),
            }],
            targets: vec![TargetCheck {
                name: "store p99".to_owned(),
                source: "GhostNodes".to_owned(),
                goal: "< 1000 ms".to_owned(),
                measured: "60 ms".to_owned(),
                met: Some(true),
            }],
        }
    }

    fn scale_latency(l: &mut LatencySummary, factor: f64) {
        for value in [
            &mut l.min,
            &mut l.mean,
            &mut l.p50,
            &mut l.p90,
            &mut l.p95,
            &mut l.p99,
            &mut l.p999,
            &mut l.max,
        ] {
            *value *= factor;
        }
    }

    /// Every latency times `factor`, every throughput divided by it.
    fn slower(factor: f64) -> Report {
        let mut slow = report();
        for stats in slow
            .operations
            .values_mut()
            .chain(slow.http_targets.values_mut())
        {
            scale_latency(&mut stats.latency_ms, factor);
            stats.throughput_per_second /= factor;
        }
        slow
    }

    fn row<'a>(comparison: &'a Comparison, figure: &str) -> &'a Row {
        comparison
            .rows
            .iter()
            .find(|row| row.figure == figure)
            .unwrap_or_else(|| panic!("no row {figure:?} in\n{}", comparison.render()))
    }

    fn regressions(comparison: &Comparison) -> Vec<&str> {
        comparison
            .rows
            .iter()
            .filter(|row| row.verdict == Verdict::Regressed)
            .map(|row| row.figure.as_str())
            .collect()
    }

    #[test]
    fn identical_reports_do_not_regress() {
        for threshold in [0.0, 0.05] {
            let comparison = compare(&report(), &report(), threshold);
            assert!(!comparison.regressed(), "{}", comparison.render());
            assert!(
                comparison
                    .rows
                    .iter()
                    .all(|row| matches!(row.verdict, Verdict::Ok | Verdict::Info))
            );
        }
    }

    #[test]
    fn twenty_percent_slower_regresses_at_5_percent_not_at_25() {
        let comparison = compare(&report(), &slower(1.2), 0.05);
        assert!(comparison.regressed());
        let regressed = regressions(&comparison);
        for figure in [
            "store throughput",
            "store p50",
            "store p99",
            "retrieve p90",
            "target 127.0.0.1:9000 /health|ready p95",
        ] {
            assert!(regressed.contains(&figure), "{figure} in {regressed:?}");
        }
        // Noisy figures are shown, not gated.
        assert_eq!(row(&comparison, "store max").verdict, Verdict::Info);
        assert_eq!(row(&comparison, "store p99.9").verdict, Verdict::Info);
        let change = row(&comparison, "store p50").change.expect("old is not 0");
        assert!((change - 0.2).abs() < 1e-9);

        let comparison = compare(&report(), &slower(1.2), 0.25);
        assert!(!comparison.regressed(), "{}", comparison.render());
    }

    #[test]
    fn success_rate_drop_regresses() {
        let mut new = report();
        new.operations
            .insert("store".to_owned(), op(800.0, 0.98, 12.0));
        let comparison = compare(&report(), &new, 0.01);
        assert_eq!(regressions(&comparison), ["store success rate"]);
        let change = row(&comparison, "store success rate")
            .change
            .expect("old 1.0");
        assert!((change + 0.02).abs() < 1e-9);
        // 1.0 → 0.98 is a 2 % drop of the rate itself: within a 5 % allowance.
        assert!(!compare(&report(), &new, 0.05).regressed());
    }

    #[test]
    fn latency_improvement_is_better() {
        let comparison = compare(&report(), &slower(0.5), 0.05);
        assert!(!comparison.regressed(), "{}", comparison.render());
        assert_eq!(row(&comparison, "store p99").verdict, Verdict::Better);
        assert_eq!(
            row(&comparison, "store throughput").verdict,
            Verdict::Better
        );
        // A change inside the allowance is neither.
        let comparison = compare(&report(), &slower(0.98), 0.05);
        assert_eq!(row(&comparison, "store p99").verdict, Verdict::Ok);
    }

    #[test]
    fn zero_threshold_fails_any_worsening() {
        let comparison = compare(&report(), &slower(1.001), 0.0);
        assert!(comparison.regressed());
        assert!(!compare(&report(), &report(), 0.0).regressed());
    }

    #[test]
    fn missing_operation_regresses_and_new_one_is_info() {
        let mut new = report();
        new.operations.remove("retrieve");
        new.operations
            .insert("http".to_owned(), op(100.0, 1.0, 1.0));
        let comparison = compare(&report(), &new, 10.0);
        assert_eq!(regressions(&comparison), ["retrieve throughput"]);
        let missing = row(&comparison, "retrieve throughput");
        assert_eq!(missing.note.as_deref(), Some("missing in new"));
        assert_eq!(missing.new, None);
        let added = row(&comparison, "http throughput");
        assert_eq!(added.verdict, Verdict::Info);
        assert!(
            comparison
                .render()
                .contains("retrieve throughput (missing in new)")
        );
    }

    #[test]
    fn flow_missing_from_zero_regresses_at_any_threshold() {
        let mut new = report();
        if let Some(flow) = new.flow.as_mut() {
            flow.missing = 1;
        }
        let comparison = compare(&report(), &new, 10.0);
        assert_eq!(regressions(&comparison), ["flow missing"]);
        assert_eq!(
            row(&comparison, "flow replication delay p99").verdict,
            Verdict::Info
        );
        // Back to 0 is better.
        let comparison = compare(&new, &report(), 0.05);
        assert_eq!(row(&comparison, "flow missing").verdict, Verdict::Better);
    }

    #[test]
    fn zero_old_values_do_not_divide_by_zero() {
        let mut old = report();
        old.operations.insert("store".to_owned(), op(0.0, 0.0, 0.0));
        old.operations
            .get_mut("retrieve")
            .expect("retrieve")
            .latency_ms = LatencySummary::default();
        let comparison = compare(&old, &report(), 0.0);
        assert!(!comparison.regressed(), "{}", comparison.render());
        assert_eq!(
            row(&comparison, "store throughput").verdict,
            Verdict::Better
        );
        assert_eq!(row(&comparison, "store p50").verdict, Verdict::Info);
        assert_eq!(row(&comparison, "retrieve p99").verdict, Verdict::Info);
        assert_eq!(row(&comparison, "retrieve p99").change, None);
        assert!(
            comparison
                .rows
                .iter()
                .all(|row| row.change.is_none_or(f64::is_finite))
        );
        assert!(comparison.render().contains("n/a"));
    }

    #[test]
    fn render_is_a_markdown_table() {
        let text = compare(&report(), &slower(1.2), 0.05).render();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("| figure | old | new | change | verdict |")
        );
        assert_eq!(lines.next(), Some("|---|---:|---:|---:|---|"));
        assert!(text.contains("| store p50 | 12.000 ms | 14.400 ms | +20.0% | REGRESSED |"));
        assert!(text.contains("| store success rate | 100.000% | 100.000% | +0.0% | ok |"));
        assert!(text.contains("/health\\|ready p99"));
        assert!(text.contains("| info |"));
        assert!(text.contains("REGRESSED: "));
    }

    #[test]
    fn load_reads_a_written_report() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("report.json");
        let json = serde_json::to_string_pretty(&report()).expect("serializable");
        std::fs::write(&path, json).expect("write");
        assert_eq!(load(&path), Ok(report()));
    }

    #[test]
    fn load_refuses_wrong_schema_naming_file_and_schemas() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("old-report.json");
        let mut value = serde_json::to_value(report()).expect("serializable");
        value["schema"] = "ghost-bench/0".into();
        std::fs::write(&path, value.to_string()).expect("write");
        let error = load(&path).expect_err("wrong schema");
        assert!(error.contains("old-report.json"), "{error}");
        assert!(
            error.contains("ghost-bench/0") && error.contains(SCHEMA),
            "{error}"
        );

        std::fs::write(&path, r#"{"hello": 1}"#).expect("write");
        let error = load(&path).expect_err("no schema");
        assert!(
            error.contains("old-report.json") && error.contains("schema"),
            "{error}"
        );
    }

    #[test]
    fn load_refuses_non_json_and_missing_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "not json at all").expect("write");
        let error = load(&path).expect_err("not JSON");
        assert!(
            error.contains("notes.txt") && error.contains("JSON"),
            "{error}"
        );

        let error = load(&dir.path().join("absent.json")).expect_err("missing");
        assert!(error.contains("absent.json"), "{error}");
    }

    #[test]
    fn parse_threshold_reads_percent() {
        let close = |text: &str, expected: f64| {
            let parsed = parse_threshold(text).expect(text);
            assert!((parsed - expected).abs() < 1e-12, "{text}: {parsed}");
        };
        close("5%", 0.05);
        close("5", 0.05);
        close("0.5%", 0.005);
        close(" 12.5 % ", 0.125);
        close("0", 0.0);
        close("1000%", 10.0);
    }

    #[test]
    fn parse_threshold_refuses_bad_input() {
        for text in [
            "-5%",
            "-1",
            "five",
            "",
            "%",
            "5%%",
            "1000.1%",
            "inf",
            "NaN",
            "5 percent",
        ] {
            assert!(parse_threshold(text).is_err(), "{text:?} accepted");
        }
        let error = parse_threshold("abc").expect_err("non-numeric");
        assert!(error.contains("abc"), "{error}");
    }
}
