//! `ghost bench` as a user runs it: real node processes it starts itself, real 3-hop
//! stores, a report on disk, and `ghost bench compare` on two reports.
//!
//! The smoke run is CI's bench: a 3-node local network, a few hundred stores through
//! three hops, every acknowledged message checked on all K members and fetched exactly
//! once; the report must follow the schema. Figures are not asserted (a benchmark is not
//! a test): only that they exist and are consistent.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Runtime, SMOL_NODE, SYNC_NODE, binary, run_ghost, start_network};
use serde_json::Value;

/// The longest a bench of a few hundred operations may take on a loaded 2-core machine.
const BENCH_TIMEOUT: Duration = Duration::from_secs(240);

fn node_flags() -> Vec<String> {
    vec![
        "--ghostnode".into(),
        binary(SMOL_NODE).display().to_string(),
        "--ghostnode-sync".into(),
        binary(SYNC_NODE).display().to_string(),
    ]
}

fn bench(args: &[&str]) -> std::process::Output {
    let mut all: Vec<String> = vec!["bench".into()];
    all.extend(args.iter().map(|s| (*s).to_owned()));
    all.extend(node_flags());
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    run_ghost(&refs, BENCH_TIMEOUT)
}

fn read_report(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("report.json")).expect("report.json written");
    serde_json::from_str(&text).expect("report.json is JSON")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every gated figure of every operation of `report` made 20 % worse.
fn slowed_down(report: &Value) -> Value {
    let mut slow = report.clone();
    for (_, op) in slow["operations"]
        .as_object_mut()
        .expect("operations")
        .iter_mut()
    {
        for (_, v) in op["latency_ms"]
            .as_object_mut()
            .expect("latency")
            .iter_mut()
        {
            *v = Value::from(v.as_f64().expect("a number") * 1.2);
        }
        let t = op["throughput_per_second"].as_f64().expect("a number");
        op["throughput_per_second"] = Value::from(t / 1.2);
    }
    slow
}

#[test]
fn a_flow_smoke_bench_retrieves_every_acknowledged_message_and_compare_catches_a_slowdown() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = dir.path().join("run");
    let out_arg = out.to_str().expect("utf-8 path");
    let run = bench(&[
        "--local",
        "3",
        "flow",
        "--messages",
        "300",
        "--concurrency",
        "8",
        "--warmup",
        "0.5",
        "--recipients",
        "40",
        "--seed",
        "7",
        "--out",
        out_arg,
    ]);
    let stdout = text(&run.stdout);
    assert!(
        run.status.success(),
        "bench failed: {stdout}\n{}",
        text(&run.stderr)
    );
    assert!(stdout.contains("report: "), "{stdout}");

    let report = read_report(&out);
    assert_eq!(report["schema"], "ghost-bench/1");
    assert_eq!(report["config"]["scenario"], "flow");
    assert_eq!(report["config"]["nodes"], 3);
    assert_eq!(report["config"]["seed"], 7);
    let store = &report["operations"]["store"];
    assert_eq!(store["completed"], 300, "{store}");
    let succeeded = store["succeeded"].as_u64().expect("a count");
    assert!(succeeded > 0, "{store}");
    let histogram_total: u64 = store["histogram_us"]
        .as_array()
        .expect("raw histogram")
        .iter()
        .map(|pair| pair[1].as_u64().expect("a count"))
        .sum();
    assert_eq!(histogram_total, succeeded, "one latency per success");
    let l = &store["latency_ms"];
    let p = |k: &str| l[k].as_f64().expect("a percentile");
    assert!(
        p("min") <= p("p50") && p("p50") <= p("p99") && p("p99") <= p("max"),
        "{l}"
    );

    let flow = &report["flow"];
    let acknowledged = flow["acknowledged"].as_u64().expect("a count");
    // Warm-up stores are acknowledged too, and must be retrievable like the rest.
    assert!(acknowledged >= succeeded, "{flow}");
    assert_eq!(flow["retrieved_once"], acknowledged, "{flow}");
    assert_eq!(flow["on_all_members"], acknowledged, "{flow}");
    assert_eq!(flow["missing"], 0, "{flow}");
    assert_eq!(flow["duplicated"], 0, "{flow}");

    let nodes = report["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3);
    for n in nodes {
        assert!(
            n["cpu_seconds"].as_f64().expect("local nodes have /proc") > 0.0,
            "{n}"
        );
        let forwarded = n["counter_deltas"]["ghost_packets_forwarded_total"]
            .as_f64()
            .unwrap_or(0.0);
        let delivered = n["counter_deltas"]["ghost_packets_delivered_total"]
            .as_f64()
            .unwrap_or(0.0);
        assert!(forwarded + delivered > 0.0, "every node relays: {n}");
    }
    assert!(!report["timeline"].as_array().expect("timeline").is_empty());
    let targets = report["targets"].as_array().expect("targets");
    assert!(
        targets.iter().any(|t| t["source"] == "Go system"),
        "{targets:?}"
    );

    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md written");
    for section in [
        "## Results",
        "## Replication and retrieval",
        "## Targets",
        "## Nodes",
    ] {
        assert!(md.contains(section), "report.md lacks {section}:\n{md}");
    }
    for svg in ["latency-cdf.svg", "throughput.svg", "latency-over-time.svg"] {
        let plot = std::fs::read_to_string(out.join(svg)).expect("plot written");
        assert!(plot.contains("<svg"), "{svg}");
    }

    // compare: identical reports pass, a 20 % slowdown fails.
    let old = out.join("report.json");
    let same = run_ghost(
        &[
            "bench",
            "compare",
            old.to_str().unwrap(),
            old.to_str().unwrap(),
        ],
        BENCH_TIMEOUT,
    );
    assert!(same.status.success(), "{}", text(&same.stderr));
    assert!(
        text(&same.stdout).contains("| figure"),
        "{}",
        text(&same.stdout)
    );
    let slow_path = dir.path().join("slow.json");
    std::fs::write(&slow_path, slowed_down(&report).to_string()).expect("written");
    let slower = run_ghost(
        &[
            "bench",
            "compare",
            old.to_str().unwrap(),
            slow_path.to_str().unwrap(),
            "--max-regression",
            "5%",
        ],
        BENCH_TIMEOUT,
    );
    assert_eq!(slower.status.code(), Some(1), "{}", text(&slower.stdout));
    assert!(
        text(&slower.stdout).contains("REGRESSED"),
        "{}",
        text(&slower.stdout)
    );
    let tolerated = run_ghost(
        &[
            "bench",
            "compare",
            old.to_str().unwrap(),
            slow_path.to_str().unwrap(),
            "--max-regression",
            "25%",
        ],
        BENCH_TIMEOUT,
    );
    assert!(tolerated.status.success(), "{}", text(&tolerated.stdout));
}

#[test]
fn an_http_bench_reports_every_node_and_path_on_a_mixed_network() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = dir.path().join("http");
    let run = bench(&[
        "--local",
        "3",
        "--runtime",
        "mixed",
        "http",
        "--messages",
        "300",
        "--concurrency",
        "4",
        "--warmup",
        "0",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let report = read_report(&out);
    let targets = report["http_targets"]
        .as_object()
        .expect("per-target stats");
    assert_eq!(
        targets.len(),
        6,
        "/health and /metrics of 3 nodes: {targets:?}"
    );
    for (name, s) in targets {
        assert!(
            name.ends_with(" /health") || name.ends_with(" /metrics"),
            "{name}"
        );
        assert_eq!(s["success_rate"], 1.0, "{name}: {s}");
        assert_eq!(s["completed"], 50, "round robin over 6 targets: {name}");
    }
    assert_eq!(report["operations"]["http"]["completed"], 300);
}

#[test]
fn a_bench_via_a_running_network_reads_each_admin_listener_as_its_node() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let net = start_network(Runtime::Sync, root.path(), 3);
    let out = root.path().join("via");
    // Admin listeners in another order than the directory's: each is matched to its
    // node by the node ID its /health names.
    let mut args = vec![
        "bench".to_owned(),
        "--via".into(),
        net.seed().to_owned(),
        "store".into(),
        "--messages".into(),
        "60".into(),
        "--concurrency".into(),
        "4".into(),
        "--warmup".into(),
        "0".into(),
        "--out".into(),
        out.to_str().unwrap().to_owned(),
    ];
    for node in net.nodes.iter().rev() {
        args.push("--admin".into());
        args.push(node.admin.clone());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_ghost(&refs, BENCH_TIMEOUT);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let report = read_report(&out);
    assert_eq!(report["config"]["target"], "via");
    assert_eq!(report["operations"]["store"]["completed"], 60);
    let nodes = report["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3, "one line per node: {nodes:?}");
    for n in nodes {
        let local = net
            .nodes
            .iter()
            .find(|l| n["address"] == l.address.as_str())
            .unwrap_or_else(|| panic!("a node of the network: {n}"));
        assert_eq!(n["admin"], local.admin.as_str(), "matched by node ID: {n}");
        assert!(
            n["cpu_seconds"].is_number(),
            "from process_cpu_seconds_total: {n}"
        );
        assert!(n["rss_bytes"].as_u64().expect("from /metrics") > 0, "{n}");
    }
}

#[test]
fn a_flow_bench_of_large_messages_checks_every_fragment() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = dir.path().join("run");
    let run = bench(&[
        "--local",
        "3",
        "flow",
        "--messages",
        "6",
        "--payload",
        "20000",
        "--concurrency",
        "2",
        "--warmup",
        "0",
        "--recipients",
        "4",
        "--seed",
        "9",
        "--out",
        out.to_str().expect("utf-8 path"),
    ]);
    let stdout = text(&run.stdout);
    assert!(
        run.status.success(),
        "bench failed: {stdout}\n{}",
        text(&run.stderr)
    );
    let report = read_report(&out);
    assert_eq!(report["config"]["payload_bytes"], 20000);
    let store = &report["operations"]["store"];
    assert_eq!(store["completed"], 6, "{store}");
    assert_eq!(store["succeeded"], 6, "{store}");
    // 20,000 bytes seal to 20,480 and travel as 16 fragments of 1,316 bytes each: every
    // fragment is a store of its own, acknowledged and checked on every member.
    let flow = &report["flow"];
    assert_eq!(flow["acknowledged"], 6 * 16, "{flow}");
    assert_eq!(flow["retrieved_once"], 6 * 16, "{flow}");
    assert_eq!(flow["on_all_members"], 6 * 16, "{flow}");
}

#[test]
fn bad_bench_options_are_refused_with_what_to_fix() {
    let cases: [(&[&str], &str); 6] = [
        (&["store"], "--local N"),
        (&["--local", "2", "store"], "at least 3"),
        (&["--local", "3", "store", "--payload", "0"], "--payload"),
        (
            &["--local", "3", "store", "--payload", "131073"],
            "1 to 131072",
        ),
        (&["--local", "3", "mixed", "--mix", "x"], "--mix"),
        (&["compare", "only-one.json"], "two reports"),
    ];
    for (args, hint) in cases {
        let run = bench(args);
        assert_eq!(
            run.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&run.stderr)
        );
        let stderr = text(&run.stderr);
        assert!(stderr.contains(hint), "{args:?}: {stderr}");
    }
    let missing = run_ghost(
        &[
            "bench",
            "compare",
            "/nonexistent/a.json",
            "/nonexistent/b.json",
        ],
        BENCH_TIMEOUT,
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("/nonexistent/a.json"),
        "{}",
        text(&missing.stderr)
    );
}
