//! `report.md`, and the targets table both reports carry.
//!
//! Targets: the Go system's (p95 3-hop latency under 1 s, 1,000 messages/s per node,
//! success above 99.5 %) and GhostNodes' own (2,000 acknowledged 3-hop stores/s on a
//! 5-node loopback network on 2 cores; p95 at most 20 ms at half that rate, offered in
//! open loop; every acknowledged message retrieved exactly once and on all K members).

use std::fmt::Write as _;

use super::report::{OpStats, Report, TargetCheck};

/// Our throughput goal: acknowledged stores per second on 5 loopback nodes, 2 cores.
pub const STORES_PER_SECOND_GOAL: f64 = 2000.0;
/// Our latency goal at half that rate, milliseconds (p95).
pub const P95_AT_HALF_RATE_MS: f64 = 20.0;

/// The targets table for `report`.
#[must_use]
pub fn targets(report: &Report) -> Vec<TargetCheck> {
    let main = report
        .operations
        .get("store")
        .or_else(|| report.operations.get("retrieve"))
        .or_else(|| report.operations.get("http"));
    let three_hop = report
        .operations
        .get("store")
        .or_else(|| report.operations.get("retrieve"));
    let mut out = Vec::new();
    let check =
        |name: &str, source: &str, goal: &str, measured: String, met: Option<bool>| TargetCheck {
            name: name.into(),
            source: source.into(),
            goal: goal.into(),
            measured,
            met,
        };
    out.push(match three_hop {
        Some(s) => check(
            "p95 latency of a 3-hop operation",
            "Go system",
            "< 1000 ms",
            format!("{:.1} ms", s.latency_ms.p95),
            Some(s.latency_ms.p95 < 1000.0),
        ),
        None => check(
            "p95 latency of a 3-hop operation",
            "Go system",
            "< 1000 ms",
            "not measured (no 3-hop operations)".into(),
            None,
        ),
    });
    let stores = report.operations.get("store");
    #[allow(clippy::cast_precision_loss)] // a handful of nodes
    let nodes = report.config.nodes.max(1) as f64;
    out.push(match stores {
        Some(s) => check(
            "messages stored per second per node",
            "Go system",
            ">= 1000 msg/s per node",
            format!("{:.0} msg/s per node", s.throughput_per_second / nodes),
            Some(s.throughput_per_second / nodes >= 1000.0),
        ),
        None => check(
            "messages stored per second per node",
            "Go system",
            ">= 1000 msg/s per node",
            "not measured (no stores)".into(),
            None,
        ),
    });
    out.push(match main {
        Some(s) => check(
            "success rate",
            "Go system",
            "> 99.5 %",
            format!("{:.3} %", s.success_rate * 100.0),
            Some(s.success_rate > 0.995),
        ),
        None => check(
            "success rate",
            "Go system",
            "> 99.5 %",
            "no operations".into(),
            None,
        ),
    });
    let reference_network = report.config.nodes == 5
        && report.config.swarm_size == 3
        && report.config.write_quorum == 2;
    out.push(match stores {
        Some(s) if reference_network && report.config.load_model == "closed" => check(
            "acknowledged 3-hop stores per second (5 nodes, K=3, W=2, 2 cores)",
            "GhostNodes",
            ">= 2000 /s",
            format!("{:.0} /s", s.throughput_per_second),
            Some(s.throughput_per_second >= STORES_PER_SECOND_GOAL),
        ),
        Some(s) => check(
            "acknowledged 3-hop stores per second (5 nodes, K=3, W=2, 2 cores)",
            "GhostNodes",
            ">= 2000 /s",
            format!(
                "{:.0} /s (judged only on a closed-loop run of 5 nodes, K=3, W=2)",
                s.throughput_per_second
            ),
            None,
        ),
        None => check(
            "acknowledged 3-hop stores per second (5 nodes, K=3, W=2, 2 cores)",
            "GhostNodes",
            ">= 2000 /s",
            "not measured (no stores)".into(),
            None,
        ),
    });
    let half = STORES_PER_SECOND_GOAL / 2.0;
    out.push(match (stores, report.config.rate_per_second) {
        (Some(s), Some(rate)) if reference_network && (rate - half).abs() < 1.0 => check(
            "store p95 at 1000 stores/s offered (open loop)",
            "GhostNodes",
            "<= 20 ms",
            format!("{:.1} ms", s.latency_ms.p95),
            Some(s.latency_ms.p95 <= P95_AT_HALF_RATE_MS),
        ),
        _ => check(
            "store p95 at 1000 stores/s offered (open loop)",
            "GhostNodes",
            "<= 20 ms",
            "not measured (run: store --rate 1000 on 5 nodes)".into(),
            None,
        ),
    });
    if let Some(flow) = &report.flow {
        out.push(check(
            "acknowledged messages retrieved exactly once and held by all K members",
            "GhostNodes",
            "100 %",
            format!(
                "{} of {} once, {} on all members",
                flow.retrieved_once, flow.acknowledged, flow.on_all_members
            ),
            Some(
                flow.retrieved_once == flow.acknowledged
                    && flow.on_all_members == flow.acknowledged,
            ),
        ));
    }
    out
}

fn row(name: &str, s: &OpStats) -> String {
    let l = &s.latency_ms;
    format!(
        "| {name} | {} | {:.2} % | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
        s.completed,
        s.success_rate * 100.0,
        s.throughput_per_second,
        l.min,
        l.p50,
        l.p90,
        l.p95,
        l.p99,
        l.p999,
        l.max
    )
}

const OPS_HEADER: &str = "| operation | completed | success | per second | min ms | p50 ms | p90 ms | p95 ms | p99 ms | p99.9 ms | max ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";

/// The Markdown report.
#[must_use]
pub fn render(report: &Report) -> String {
    let c = &report.config;
    let mut md = String::new();
    let _ = writeln!(md, "# ghost bench: {}\n", c.scenario);
    let target = match &c.runtime {
        Some(rt) => format!("local network of {} nodes ({rt} runtime)", c.nodes),
        None => format!("network of {} nodes via {}", c.nodes, c.seed_address),
    };
    let load = match c.rate_per_second {
        Some(r) => format!(
            "open loop at {r} operations/s (at most {} in flight)",
            c.concurrency
        ),
        None => format!("closed loop, {} in flight", c.concurrency),
    };
    let _ = writeln!(
        md,
        "{target}; {load}; {:.1} s measured after {} s warm-up; payload {} bytes to {} recipients; K = {}, W = {}; seed {}; `ghost` {}.\n",
        report.measured_seconds,
        c.warmup_seconds,
        c.payload_bytes,
        c.recipients,
        c.swarm_size,
        c.write_quorum,
        c.seed,
        report.tool_version
    );
    if let Some(mix) = &c.mix {
        let _ = writeln!(md, "Mix of stores to retrieves: {mix}.\n");
    }

    md.push_str("## Results\n\n");
    md.push_str(OPS_HEADER);
    for (name, s) in &report.operations {
        md.push_str(&row(name, s));
    }
    md.push('\n');
    let failures: Vec<String> = report
        .operations
        .iter()
        .flat_map(|(op, s)| {
            s.failures
                .iter()
                .map(move |(why, n)| format!("{op} {why}: {n}"))
        })
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(md, "Failures: {}.\n", failures.join(", "));
    }
    let _ = writeln!(
        md,
        "Latency runs from when an operation was due (open loop) or started (closed loop) to its end. Load generator: {:.1} CPU seconds, {:.1} % of the machine's {} CPUs.\n",
        report.generator.cpu_seconds,
        report.generator.share_of_machine * 100.0,
        report.generator.cpus
    );

    if !report.http_targets.is_empty() {
        md.push_str("## Per node and path\n\n");
        md.push_str(&OPS_HEADER.replace("| operation |", "| node and path |"));
        for (name, s) in &report.http_targets {
            md.push_str(&row(name, s));
        }
        md.push('\n');
    }

    if let Some(f) = &report.flow {
        md.push_str("## Replication and retrieval\n\n");
        let _ = writeln!(
            md,
            "| acknowledged | retrieved once | missing | duplicated | on all K members | member copies missing | unreadable recipients |\n|---:|---:|---:|---:|---:|---:|---:|\n| {} | {} | {} | {} | {} | {} | {} |\n",
            f.acknowledged,
            f.retrieved_once,
            f.missing,
            f.duplicated,
            f.on_all_members,
            f.member_copies_missing,
            f.recipients_unreadable
        );
        match &f.replication_delay_ms {
            Some(d) => {
                let _ = writeln!(
                    md,
                    "Replication delay (acknowledgement to a copy on every member without a receipt, {} sampled messages, {} unconfirmed): p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms. Checked in {:.1} s.\n",
                    f.replication_samples,
                    f.replication_unconfirmed,
                    d.p50,
                    d.p95,
                    d.p99,
                    d.max,
                    f.verify_seconds
                );
            }
            None => {
                let _ = writeln!(
                    md,
                    "Replication delay: no sample. Checked in {:.1} s.\n",
                    f.verify_seconds
                );
            }
        }
    }

    md.push_str(
        "## Targets\n\n| target | source | goal | measured | verdict |\n|---|---|---|---|---|\n",
    );
    for t in &report.targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "n/a",
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {verdict} |",
            t.name, t.source, t.goal, t.measured
        );
    }
    md.push('\n');

    if !report.nodes.is_empty() {
        md.push_str("## Nodes\n\n| node | CPU seconds | CPU share of the phase | RSS MiB |\n|---|---:|---:|---:|\n");
        for n in &report.nodes {
            let cpu = n.cpu_seconds.map_or("?".into(), |c| format!("{c:.2}"));
            let share = n.cpu_seconds.map_or("?".into(), |c| {
                format!("{:.1} %", 100.0 * c / report.measured_seconds.max(1e-9))
            });
            #[allow(clippy::cast_precision_loss)] // bytes to MiB for display
            let rss = n
                .rss_bytes
                .map_or("?".into(), |b| format!("{:.1}", b as f64 / 1_048_576.0));
            let _ = writeln!(md, "| {} | {cpu} | {share} | {rss} |", n.address);
        }
        md.push('\n');
        let mut series: Vec<&String> = report
            .nodes
            .iter()
            .flat_map(|n| n.counter_deltas.keys())
            .collect();
        series.sort();
        series.dedup();
        if !series.is_empty() {
            md.push_str("### Counter changes during the phase\n\n| series |");
            for n in &report.nodes {
                let _ = write!(md, " {} |", n.address);
            }
            md.push_str("\n|---|");
            for _ in &report.nodes {
                md.push_str("---:|");
            }
            md.push('\n');
            for s in series {
                let _ = write!(md, "| `{s}` |");
                for n in &report.nodes {
                    let v = n.counter_deltas.get(s).copied().unwrap_or(0.0);
                    if v.fract() == 0.0 {
                        let _ = write!(md, " {v:.0} |");
                    } else {
                        let _ = write!(md, " {v:.3} |");
                    }
                }
                md.push('\n');
            }
            md.push('\n');
        }
    }
    md.push_str("## Plots\n\n![latency CDF](latency-cdf.svg)\n\n![throughput over time](throughput.svg)\n\n![latency over time](latency-over-time.svg)\n");
    md
}
