//! The nodes' side of a run: CPU time and memory (from `/proc` for nodes the bench
//! started, from the standard `process_*` series of `/metrics` otherwise) and every
//! counter of `/metrics` before and after the measured phase.

use std::collections::BTreeMap;

use ghost_host::process;

use super::report::NodeUsage;
use crate::client::Http;

/// A node being watched.
#[derive(Clone, Debug)]
pub struct Watched {
    /// Public address.
    pub address: String,
    /// Admin address, when known.
    pub admin: Option<String>,
    /// Process ID, for nodes this bench started.
    pub pid: Option<u32>,
}

/// One reading of a node.
#[derive(Clone, Debug, Default)]
pub struct Reading {
    cpu_seconds: Option<f64>,
    rss_bytes: Option<u64>,
    counters: BTreeMap<String, f64>,
}

/// Reads `node` now.
#[must_use]
pub fn read(http: &Http, node: &Watched) -> Reading {
    let mut r = Reading::default();
    if let Some(text) = node
        .admin
        .as_ref()
        .and_then(|admin| http.get(admin, "/metrics").ok())
    {
        // A node that answers something other than the text format gives no figures.
        if let Some(scrape) = parse(&String::from_utf8_lossy(&text)) {
            r.counters = counters(&scrape);
            r.cpu_seconds = r.counters.get("process_cpu_seconds_total").copied();
            r.rss_bytes = gauge(&scrape, "process_resident_memory_bytes");
        }
    }
    if let Some(usage) = node.pid.and_then(|p| process::usage(Some(p))) {
        r.cpu_seconds = Some(usage.cpu_seconds);
        r.rss_bytes = Some(usage.rss_bytes);
    }
    r
}

/// The node ID (hex) an admin listener's detailed `/health` names, if it answers.
#[must_use]
pub fn admin_node_id(http: &Http, admin: &str) -> Option<String> {
    let body = http.get(admin, "/health").ok()?;
    let json: serde_json::Value = serde_json::from_slice(&body).ok()?;
    json["node"].as_str().map(str::to_owned)
}

/// What changed between two readings.
#[must_use]
pub fn usage(node: &Watched, before: &Reading, after: &Reading) -> NodeUsage {
    let counter_deltas = after
        .counters
        .iter()
        .filter(|(name, _)| name.as_str() != "process_cpu_seconds_total")
        .map(|(name, v)| {
            (
                name.clone(),
                v - before.counters.get(name).copied().unwrap_or(0.0),
            )
        })
        .filter(|(_, d)| *d != 0.0)
        .collect();
    NodeUsage {
        address: node.address.clone(),
        admin: node.admin.clone(),
        cpu_seconds: match (before.cpu_seconds, after.cpu_seconds) {
            (Some(b), Some(a)) => Some(a - b),
            _ => None,
        },
        rss_bytes: after.rss_bytes,
        counter_deltas,
    }
}

/// Every counter series of a Prometheus text page (histograms by their `_count` and
/// `_sum`), keyed `name{label="value",...}`.
fn counters(scrape: &prometheus_parse::Scrape) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in &scrape.samples {
        let name = series_name(&s.metric, &s.labels);
        match &s.value {
            prometheus_parse::Value::Counter(v) => {
                out.insert(name, *v);
            }
            prometheus_parse::Value::Histogram(buckets) => {
                if let Some(last) = buckets.last() {
                    out.insert(
                        series_name(&format!("{}_count", s.metric), &s.labels),
                        last.count,
                    );
                }
            }
            _ => {}
        }
    }
    // prometheus-parse keeps `_sum` and `_count` of histograms as their own samples
    // (untyped); the sums are the counters worth a delta.
    for s in &scrape.samples {
        if s.metric.ends_with("_sum")
            && let prometheus_parse::Value::Untyped(v) = s.value
        {
            out.insert(series_name(&s.metric, &s.labels), v);
        }
    }
    out
}

/// A `/metrics` page in the Prometheus text format, once.
fn parse(text: &str) -> Option<prometheus_parse::Scrape> {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).ok()
}

fn gauge(scrape: &prometheus_parse::Scrape, metric: &str) -> Option<u64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric)
        .and_then(|s| match s.value {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // bytes
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => {
                Some(v as u64)
            }
            _ => None,
        })
}

fn series_name(metric: &str, labels: &prometheus_parse::Labels) -> String {
    let mut pairs: Vec<(&String, &String)> = labels.iter().collect();
    pairs.sort();
    if pairs.is_empty() {
        return metric.to_owned();
    }
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{metric}{{{}}}", inner.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "\
# HELP process_cpu_seconds_total CPU.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
# HELP process_resident_memory_bytes RSS.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1048576
# HELP ghost_packets_forwarded_total Forwarded.
# TYPE ghost_packets_forwarded_total counter
ghost_packets_forwarded_total 40
# HELP ghost_packets_dropped_total Dropped.
# TYPE ghost_packets_dropped_total counter
ghost_packets_dropped_total{reason=\"bad_mac\"} 3
ghost_packets_dropped_total{reason=\"replayed\"} 0
# HELP ghost_store_quorum_latency_seconds Quorum.
# TYPE ghost_store_quorum_latency_seconds histogram
ghost_store_quorum_latency_seconds_bucket{le=\"0.005\"} 2
ghost_store_quorum_latency_seconds_bucket{le=\"+Inf\"} 5
ghost_store_quorum_latency_seconds_sum 0.05
ghost_store_quorum_latency_seconds_count 5
# HELP ghost_peers_known Peers.
# TYPE ghost_peers_known gauge
ghost_peers_known 4
";

    #[test]
    fn counters_and_histogram_totals_are_read_and_gauges_left_out() {
        let page = parse(PAGE).expect("the text format");
        let c = counters(&page);
        assert_eq!(c["ghost_packets_forwarded_total"], 40.0);
        assert_eq!(c["ghost_packets_dropped_total{reason=\"bad_mac\"}"], 3.0);
        assert_eq!(c["ghost_store_quorum_latency_seconds_count"], 5.0);
        assert_eq!(c["ghost_store_quorum_latency_seconds_sum"], 0.05);
        assert_eq!(c["process_cpu_seconds_total"], 12.5);
        assert!(!c.contains_key("ghost_peers_known"), "{c:?}");
        assert_eq!(
            gauge(&page, "process_resident_memory_bytes"),
            Some(1_048_576)
        );
    }

    #[test]
    fn a_hostile_metrics_page_is_read_without_a_panic() {
        // What a lying or broken node might answer on its admin listener.
        let mut garbage = vec![
            String::new(),
            "not metrics at all".to_owned(),
            "process_cpu_seconds_total NaN\nprocess_cpu_seconds_total -1e308".to_owned(),
            "# TYPE x histogram\nx_bucket{le=\"oops\"} 1\nx_sum\n".to_owned(),
            "{{{{{{ }}}}}} 3".to_owned(),
            "a{b=\"".repeat(10_000),
        ];
        let mut seed = 7u64;
        for _ in 0..200 {
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    (seed >> 56) as u8
                })
                .collect();
            garbage.push(String::from_utf8_lossy(&bytes).into_owned());
        }
        for text in &garbage {
            if let Some(page) = parse(text) {
                let c = counters(&page);
                let _ = gauge(&page, "process_resident_memory_bytes");
                assert!(c.len() <= page.samples.len(), "{text:?}");
            }
        }
    }

    #[test]
    fn usage_keeps_changed_counters_and_the_cpu_difference() {
        let node = Watched {
            address: "a".into(),
            admin: None,
            pid: None,
        };
        let before = Reading {
            cpu_seconds: Some(1.0),
            rss_bytes: Some(10),
            counters: counters(&parse(PAGE).expect("the text format")),
        };
        let mut after = before.clone();
        after.cpu_seconds = Some(3.5);
        *after
            .counters
            .get_mut("ghost_packets_forwarded_total")
            .unwrap() += 7.0;
        let u = usage(&node, &before, &after);
        assert_eq!(u.cpu_seconds, Some(2.5));
        assert_eq!(u.counter_deltas.len(), 1, "{:?}", u.counter_deltas);
        assert_eq!(u.counter_deltas["ghost_packets_forwarded_total"], 7.0);
    }
}
