//! The monitoring shipped for the compose network names only metrics a node really
//! serves: every `ghost_…` and `process_…` name in the Grafana dashboard's queries
//! (panels and template variables) and in the Prometheus alerting rules is a series in
//! the admin `/metrics` of a real node process, once with `ghostnode` (smol) and once with
//! `ghostnode-sync` (blocking threads). A renamed metric, or a typo in a query, fails here
//! with the unknown names listed, rather than as an empty panel or an alert that never
//! fires. It also checks that Prometheus scrapes the five compose nodes' admin listeners
//! and that the Grafana files agree on the data source and dashboard paths.
//!
//! The binaries are found in `target/<profile>/` (see `common`): `cargo test
//! --workspace` builds them, since runtime-smol, runtime-sync and ghost-cli all have
//! integration tests; or build them first with `cargo build -p runtime-smol -p
//! runtime-sync -p ghost-cli --bins`.

use std::collections::BTreeSet;
use std::time::Duration;

mod common;
use common::Runtime;

common::runtime_tests!(single: every_metric_the_dashboard_and_alerts_name_is_served);

/// The monitoring files, under `docker/`.
const DASHBOARD: &str = "grafana/dashboards/ghostnodes.json";
const ALERTS: &str = "prometheus/alerts.yml";
const PROMETHEUS: &str = "prometheus/prometheus.yml";
const DATASOURCE: &str = "grafana/provisioning/datasources/prometheus.yml";
const DASHBOARD_PROVIDER: &str = "grafana/provisioning/dashboards/ghostnodes.yml";

/// Fewer distinct names than these means the extraction broke (an empty extraction
/// would otherwise pass), not that the files got smaller on purpose.
const MIN_DASHBOARD_METRICS: usize = 30;
const MIN_ALERT_METRICS: usize = 10;

/// Where the node's metrics come from in the compose network: the Prometheus job and
/// the admin port of every node.
const JOB: &str = "ghostnode";
const ADMIN_PORT: u16 = 9710;
const COMPOSE_NODES: usize = 5;
const DATASOURCE_UID: &str = "ghost-prometheus";

/// The text of `docker/<path>`.
fn read(path: &str) -> String {
    let full = format!("{}/../docker/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {full}: {e}"))
}

/// The metric names in a PromQL expression: `ghost_…` and `process_…` where an
/// identifier starts, not inside a longer identifier. A label value with such a prefix
/// would be taken too, and reported unknown: none of the queries has one, and a wrong
/// failure there is cheaper than a metric name missed.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let bytes = expr.as_bytes();
    let mut names = BTreeSet::new();
    for prefix in ["ghost_", "process_"] {
        for (start, _) in expr.match_indices(prefix) {
            if start > 0 && is_ident(bytes[start - 1]) {
                continue;
            }
            let len = bytes[start..]
                .iter()
                .take_while(|&&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
                .count();
            if len > prefix.len() {
                names.insert(expr[start..start + len].to_owned());
            }
        }
    }
    names
}

/// Every PromQL string of a Grafana dashboard: panel (and nested row) targets' `expr`,
/// and template variables' `query` and `definition` (a string, or an object holding
/// `query`).
fn dashboard_expressions(dashboard: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone());
                        }
                        _ => walk(value, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    out
}

/// Every `expr:` of a Prometheus rules file, without a YAML parser: the rest of the line,
/// or for a block scalar (`expr: |`, `expr: >-`, …) the lines indented deeper than the
/// key that follow it.
fn alert_expressions(rules: &str) -> Vec<String> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let lines: Vec<&str> = rules.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let Some(rest) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || indent(l) > indent(line))
                .map(|l| l.trim())
                .collect();
            out.push(block.join("\n").trim().to_owned());
        } else {
            out.push(rest.to_owned());
        }
    }
    out
}

/// The series names of a Prometheus text scrape (histograms as their `_bucket`, `_sum`
/// and `_count` series).
fn series_names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The names of `wanted` that are not among `served`.
fn unknown<'a>(wanted: &'a BTreeSet<String>, served: &BTreeSet<String>) -> Vec<&'a str> {
    wanted
        .iter()
        .filter(|n| !served.contains(*n))
        .map(String::as_str)
        .collect()
}

/// The distinct metric names of the dashboard, after checking it queries the data
/// source the provisioning file creates and offers the `$instance` variable.
fn dashboard_metrics() -> BTreeSet<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is valid JSON");
    let expressions = dashboard_expressions(&dashboard);
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
        assert!(
            !targets.is_empty()
                && targets
                    .iter()
                    .all(|t| t["expr"].as_str().is_some_and(|e| !e.is_empty())),
            "panel {:?} has a target without a query",
            panel["title"]
        );
        assert_eq!(
            panel["datasource"]["uid"], DATASOURCE_UID,
            "panel {:?}",
            panel["title"]
        );
    }
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let instance = variables
        .iter()
        .find(|v| v["name"] == "instance")
        .expect("an $instance variable");
    assert_eq!(
        instance["definition"],
        format!("label_values(up{{job=\"{JOB}\"}}, instance)")
    );
    expressions.iter().flat_map(|e| metric_names(e)).collect()
}

/// The distinct metric names of the alerting rules, after checking that every rule's
/// expression was found.
fn alert_metrics() -> BTreeSet<String> {
    let rules = read(ALERTS);
    let expressions = alert_expressions(&rules);
    let alerts = rules
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert_eq!(
        expressions.len(),
        alerts,
        "one expression per alert: {expressions:#?}"
    );
    assert!(
        expressions.iter().all(|e| !e.is_empty()),
        "{expressions:#?}"
    );
    for key in ["for:", "severity:", "summary:", "description:"] {
        assert_eq!(
            rules
                .lines()
                .filter(|l| l.trim_start().starts_with(key))
                .count(),
            alerts,
            "every alert has {key}"
        );
    }
    expressions.iter().flat_map(|e| metric_names(e)).collect()
}

fn every_metric_the_dashboard_and_alerts_name_is_served(runtime: Runtime) {
    let dashboard = dashboard_metrics();
    let alerts = alert_metrics();
    assert!(
        dashboard.len() >= MIN_DASHBOARD_METRICS,
        "the dashboard names only {} metrics: {dashboard:?}",
        dashboard.len()
    );
    assert!(
        alerts.len() >= MIN_ALERT_METRICS,
        "the alerts name only {} metrics: {alerts:?}",
        alerts.len()
    );

    let root = tempfile::tempdir().unwrap();
    let net = common::start_network(runtime, root.path(), 1);
    let admin = net.nodes[0].admin.as_str();
    // HTTP statuses are series only once answered; waiting for the node's readiness
    // answered /health on this listener, which a later scrape shows.
    let scrape = common::wait_for(
        "a scrape that counts an HTTP answer",
        Duration::from_secs(10),
        || {
            let body = ghost_cli::client::get(admin, "/metrics").ok()?;
            let text = String::from_utf8(body).expect("the scrape is UTF-8");
            text.contains("ghost_http_responses_total{").then_some(text)
        },
    );
    let mut served = series_names(&scrape);
    // The node reads its CPU time and memory from Linux's /proc and exports nothing
    // elsewhere: there the process panels stay empty rather than wrong.
    if !cfg!(target_os = "linux") {
        served.extend(
            dashboard
                .iter()
                .chain(&alerts)
                .filter(|n| n.starts_with("process_"))
                .cloned(),
        );
    }

    let unknown_in_dashboard = unknown(&dashboard, &served);
    let unknown_in_alerts = unknown(&alerts, &served);
    assert!(
        unknown_in_dashboard.is_empty() && unknown_in_alerts.is_empty(),
        "{runtime:?}: metrics the node does not serve (renamed? a typo?):\n  \
         dashboard docker/{DASHBOARD}: {unknown_in_dashboard:?}\n  alerts docker/{ALERTS}: \
         {unknown_in_alerts:?}\nserved: {served:?}"
    );
    let not_shown: Vec<&String> = served.iter().filter(|n| !dashboard.contains(*n)).collect();
    println!(
        "monitoring: {runtime:?}: {} dashboard and {} alert metric names all served; \
         served but not on the dashboard: {not_shown:?}",
        dashboard.len(),
        alerts.len()
    );
}

#[test]
fn prometheus_scrapes_the_admin_listeners_of_the_five_compose_nodes() {
    let config = read(PROMETHEUS);
    let line = |wanted: &str| config.lines().any(|l| l.trim() == wanted);
    assert!(line("scrape_interval: 5s"), "{config}");
    assert!(line(&format!("- job_name: {JOB}")), "{config}");
    assert!(line("metrics_path: /metrics"), "{config}");
    assert!(line("scheme: http"), "{config}");
    assert!(line("- /etc/prometheus/alerts.yml"), "{config}");
    let targets: Vec<&str> = config
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- node"))
        .collect();
    let expected: Vec<String> = (1..=COMPOSE_NODES)
        .map(|i| format!("{i}:{ADMIN_PORT}"))
        .collect();
    assert_eq!(targets, expected, "{config}");

    // The dashboard and the rules select the job scraped here.
    let job = format!("job=\"{JOB}\"");
    assert!(read(DASHBOARD).contains(&job.replace('"', "\\\"")));
    assert!(read(ALERTS).contains(&job));
}

#[test]
fn grafana_provisions_the_data_source_and_the_dashboard_directory() {
    let datasource = read(DATASOURCE);
    let line = |text: &str, wanted: &str| text.lines().any(|l| l.trim() == wanted);
    assert!(
        line(&datasource, &format!("uid: {DATASOURCE_UID}")),
        "{datasource}"
    );
    assert!(line(&datasource, "type: prometheus"), "{datasource}");
    assert!(
        line(&datasource, "url: http://prometheus:9090"),
        "{datasource}"
    );
    assert!(line(&datasource, "isDefault: true"), "{datasource}");
    let provider = read(DASHBOARD_PROVIDER);
    assert!(line(&provider, "type: file"), "{provider}");
    assert!(
        line(&provider, "path: /var/lib/grafana/dashboards"),
        "{provider}"
    );
}

#[test]
fn the_extraction_finds_names_in_block_expressions_and_reports_unknown_ones() {
    let rules = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: \
                 ghost_db_up{job=\"ghostnode\"} == 0\n        for: 1m\n      - alert: B\n        \
                 expr: |\n          rate(ghost_stores_failed_total[5m])\n\n            / \
                 rate(process_cpu_seconds_total[5m]) + ghost_no_such_metric_total\n        \
                 for: 5m\n        annotations:\n          description: ghost_not_an_expr\n";
    let expressions = alert_expressions(rules);
    assert_eq!(expressions.len(), 2, "{expressions:?}");
    let names: BTreeSet<String> = expressions.iter().flat_map(|e| metric_names(e)).collect();
    assert_eq!(
        names.iter().map(String::as_str).collect::<Vec<_>>(),
        [
            "ghost_db_up",
            "ghost_no_such_metric_total",
            "ghost_stores_failed_total",
            "process_cpu_seconds_total"
        ],
    );
    let served = series_names(
        "# TYPE ghost_db_up gauge\nghost_db_up 1\nghost_stores_failed_total 0\n\
         process_cpu_seconds_total 0.5\n",
    );
    assert_eq!(unknown(&names, &served), ["ghost_no_such_metric_total"]);
    assert!(metric_names("xghost_a + my_process_b + ghost_ + job=\"ghostnode\"").is_empty());
}
