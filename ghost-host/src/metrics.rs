//! `/metrics`: the node's counters and gauges in the Prometheus text format.
//!
//! A scrape copies the core's [`NodeStats`] and a few gauges into a [`Snapshot`] while the
//! node is locked (a few hundred bytes, no I/O), then encodes it with `prometheus-client`
//! after the lock is released. The core keeps the counters; this module only names them.
//! Every name is listed in `docs/OPERATING.md`; renaming one is a breaking change for
//! dashboards.

use std::collections::BTreeMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use proto_core::node::{NodeStats, QUORUM_LATENCY_BOUNDS_MS};
use proto_core::packet::PeelError;
use proto_core::peer::CopyRefusal;

/// Content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Everything one scrape reports, copied out of the node.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The core's counters.
    pub stats: NodeStats,
    /// Nodes in the directory.
    pub peers: usize,
    /// Messages held.
    pub messages: u64,
    /// Body bytes held.
    pub message_bytes: u64,
    /// Size of the database file.
    pub db_file_bytes: u64,
    /// Whether the database answers.
    pub db_up: bool,
    /// Group commits made durable.
    pub db_commits: u64,
    /// Stores waiting for their write quorum.
    pub pending_stores: usize,
    /// Outbound exchanges in flight.
    pub pending_exchanges: usize,
    /// Fill ratio of the replay filter.
    pub replay_fill: f64,
    /// HTTP answers sent, by status code.
    pub http_responses: BTreeMap<u16, u64>,
    /// Connections closed on accept because their address had too many open.
    pub connections_refused: u64,
    /// Connections a TLS listener closed before any request: (handshakes that failed or
    /// timed out, plain HTTP answered `tls_required`).
    pub tls_refused: (u64, u64),
}

impl Snapshot {
    /// The text a scrape returns.
    #[must_use]
    pub fn encode(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        registry
            .sub_registry_with_prefix("ghost")
            .register_collector(Box::new(self));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge_i(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

fn gauge_f(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// This process's CPU time and memory under the standard names (no `ghost_` prefix), so
/// dashboards and `ghost bench` read every node the same way. Read at encode time, after
/// the node's lock is released.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let Some(usage) = crate::process::usage(None) else {
            return Ok(());
        };
        let cpu = ConstCounter::new(usage.cpu_seconds);
        cpu.encode(e.encode_descriptor(
            "process_cpu_seconds",
            "CPU time used by the node process, user and system, seconds.",
            None,
            cpu.metric_type(),
        )?)?;
        gauge_i(
            &mut e,
            "process_resident_memory_bytes",
            "Resident memory of the node process, bytes.",
            usage.rss_bytes,
        )
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.stats;
        counter(
            &mut e,
            "packets_peeled",
            "Onion packets that passed every check.",
            s.packets_peeled,
        )?;
        counter(
            &mut e,
            "packets_forwarded",
            "Onion packets forwarded to a next hop.",
            s.packets_forwarded,
        )?;
        counter(
            &mut e,
            "packets_delivered",
            "Onion packets that ended here as final hop.",
            s.packets_delivered,
        )?;
        {
            let mut m = e.encode_descriptor(
                "packets_dropped",
                "Onion packets dropped silently, by reason.",
                None,
                MetricType::Counter,
            )?;
            for (reason, n) in PeelError::ALL.iter().zip(s.packets_dropped) {
                let labels = [("reason", reason.label())];
                ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
            }
        }
        let replayed = PeelError::ALL
            .iter()
            .position(|r| *r == PeelError::Replayed)
            .map_or(0, |i| s.packets_dropped[i]);
        counter(
            &mut e,
            "replays_refused",
            "Onion packets refused as replays.",
            replayed,
        )?;
        counter(
            &mut e,
            "onion_keys_rotated",
            "Onion keys replaced by a fresh one (a new descriptor published each time).",
            s.onion_keys_rotated,
        )?;
        counter(
            &mut e,
            "tls_keys_rotated",
            "TLS keys replaced by a fresh one (a new descriptor published each time; the previous key is presented for http.tls_key_overlap_ms more).",
            s.tls_keys_rotated,
        )?;
        counter(
            &mut e,
            "replies_refused",
            "Answers from a next hop not passed back: empty (it dropped the packet) or of another length than the packet asked for.",
            s.replies_refused,
        )?;
        counter(
            &mut e,
            "rate_limited",
            "Requests refused by a rate limit.",
            s.rate_limited,
        )?;
        counter(
            &mut e,
            "stores_acked",
            "Stores acknowledged with a write quorum.",
            s.stores_acked,
        )?;
        counter(
            &mut e,
            "stores_failed",
            "Stores that missed the write quorum.",
            s.stores_failed,
        )?;
        counter(
            &mut e,
            "retrieves",
            "Retrieve requests served.",
            s.retrieves,
        )?;
        counter(
            &mut e,
            "redirects",
            "Requests answered with the current swarm.",
            s.redirects,
        )?;
        counter(
            &mut e,
            "requests_refused",
            "Final-hop requests refused.",
            s.requests_refused,
        )?;
        counter(
            &mut e,
            "messages_replicated_in",
            "Messages new here received from swarm peers.",
            s.messages_replicated_in,
        )?;
        {
            let mut m = e.encode_descriptor(
                "copies_refused",
                "Messages from peers (replication, anti-entropy) not stored, by reason.",
                None,
                MetricType::Counter,
            )?;
            for (reason, n) in CopyRefusal::ALL.iter().zip(s.copies_refused) {
                let labels = [("reason", reason.label())];
                ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
            }
        }
        counter(
            &mut e,
            "peer_rate_limited",
            "Peer requests and registrations refused by their source's rate limit.",
            s.peer_rate_limited,
        )?;
        counter(
            &mut e,
            "peer_session_envelopes",
            "Peer envelopes accepted on their sender's TLS session, without a signature each.",
            s.peer_session_envelopes,
        )?;
        counter(
            &mut e,
            "changes_already_applied",
            "Signed deletes and expiry updates refused as already applied (retries, replays).",
            s.changes_already_applied,
        )?;
        counter(
            &mut e,
            "seen_changes_evicted",
            "Remembered signed changes dropped before their window closed (memory full).",
            s.seen_changes_evicted,
        )?;
        counter(
            &mut e,
            "tombstones_shown",
            "Owners' deletes shown to peers that still held the deleted message.",
            s.tombstones_shown,
        )?;
        counter(
            &mut e,
            "deletes_learned",
            "Messages deleted here on an owner's delete shown by a peer.",
            s.deletes_learned,
        )?;
        counter(
            &mut e,
            "replications_sent",
            "Replication exchanges sent.",
            s.replications_sent,
        )?;
        counter(
            &mut e,
            "replicas_sent",
            "Copies sent in replication exchanges: several per exchange when stores fall due to the same member together.",
            s.replicas_sent,
        )?;
        counter(
            &mut e,
            "anti_entropy_rounds",
            "Anti-entropy rounds started.",
            s.anti_entropy_rounds,
        )?;
        counter(
            &mut e,
            "nodes_evicted",
            "Nodes evicted from the directory.",
            s.nodes_evicted,
        )?;
        counter(
            &mut e,
            "probes_failed",
            "Probes unanswered, or answered without the probed identity's signature.",
            s.probes_failed,
        )?;
        counter(
            &mut e,
            "messages_expired",
            "Expired messages removed.",
            s.messages_expired,
        )?;
        {
            // The encoder accumulates: each bucket is given its own (non-cumulative) count.
            let mut buckets: Vec<(f64, u64)> = QUORUM_LATENCY_BOUNDS_MS
                .iter()
                .zip(s.quorum_latency_buckets)
                .map(|(bound, n)| {
                    #[allow(clippy::cast_precision_loss)] // bounds are small integers
                    let seconds = *bound as f64 / 1000.0;
                    (seconds, n)
                })
                .collect();
            buckets.push((
                f64::INFINITY,
                s.quorum_latency_buckets[QUORUM_LATENCY_BOUNDS_MS.len()],
            ));
            let count = s.quorum_latency_buckets.iter().sum();
            #[allow(clippy::cast_precision_loss)] // a sum of milliseconds
            let sum = s.quorum_latency_ms_total as f64 / 1000.0;
            let mut m = e.encode_descriptor(
                "store_quorum_latency_seconds",
                "Time from a store's arrival to its write quorum.",
                None,
                MetricType::Histogram,
            )?;
            m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                sum, count, &buckets, None,
            )?;
        }
        gauge_i(
            &mut e,
            "peers_known",
            "Nodes in the directory.",
            self.peers as u64,
        )?;
        gauge_i(
            &mut e,
            "messages_stored",
            "Messages held by this node.",
            self.messages,
        )?;
        gauge_i(
            &mut e,
            "message_bytes_stored",
            "Body bytes held by this node.",
            self.message_bytes,
        )?;
        gauge_i(
            &mut e,
            "db_file_bytes",
            "Size of the message database file.",
            self.db_file_bytes,
        )?;
        counter(
            &mut e,
            "db_commits",
            "Group commits made durable (one fsync each, for every write since the previous one).",
            self.db_commits,
        )?;
        gauge_i(
            &mut e,
            "db_up",
            "1 when the message database answers, else 0.",
            u64::from(self.db_up),
        )?;
        gauge_i(
            &mut e,
            "replication_pending_stores",
            "Stores waiting for their write quorum (replication lag).",
            self.pending_stores as u64,
        )?;
        gauge_i(
            &mut e,
            "pending_exchanges",
            "Exchanges with other nodes awaiting an answer.",
            self.pending_exchanges as u64,
        )?;
        gauge_f(
            &mut e,
            "replay_filter_fill_ratio",
            "Share of replay filter bits set.",
            self.replay_fill,
        )?;
        {
            let mut m = e.encode_descriptor(
                "http_responses",
                "HTTP answers sent, by status code.",
                None,
                MetricType::Counter,
            )?;
            for (status, n) in &self.http_responses {
                let labels = [("status", status.to_string())];
                ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
            }
        }
        counter(
            &mut e,
            "connections_refused",
            "Connections closed on accept: their address had http.max_connections_per_address open.",
            self.connections_refused,
        )?;
        {
            let mut m = e.encode_descriptor(
                "tls_refused",
                "Connections the TLS listener closed before any request, by reason.",
                None,
                MetricType::Counter,
            )?;
            let (handshake, plaintext) = self.tls_refused;
            for (reason, n) in [("handshake_failed", handshake), ("plaintext", plaintext)] {
                ConstCounter::new(n).encode(m.encode_family(&[("reason", reason)])?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_parses_and_carries_the_counters() {
        let mut snap = Snapshot::default();
        snap.stats.packets_forwarded = 7;
        snap.stats.packets_dropped[1] = 3;
        snap.stats.copies_refused[CopyRefusal::BadSignature.index()] = 5;
        snap.stats.quorum_latency_buckets[2] = 4;
        snap.stats.quorum_latency_ms_total = 80;
        snap.http_responses.insert(400, 2);
        snap.db_up = true;
        let text = snap.encode();
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("valid text format");
        let value = |name: &str| {
            scrape
                .samples
                .iter()
                .find(|s| s.metric == name)
                .map(|s| s.value.clone())
        };
        assert!(matches!(
            value("ghost_packets_forwarded_total"),
            Some(prometheus_parse::Value::Counter(v)) if v == 7.0
        ));
        assert!(
            matches!(value("ghost_db_up"), Some(prometheus_parse::Value::Gauge(v)) if v == 1.0)
        );
        assert!(
            // A fresh test process may not have used a 10 ms tick yet: present is enough.
            matches!(value("process_cpu_seconds_total"), Some(prometheus_parse::Value::Counter(v)) if v >= 0.0),
            "{text}"
        );
        assert!(
            matches!(value("process_resident_memory_bytes"), Some(prometheus_parse::Value::Gauge(v)) if v > 0.0),
            "{text}"
        );
        assert!(
            text.contains("ghost_packets_dropped_total{reason=\"bad_mac\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("ghost_copies_refused_total{reason=\"bad_signature\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("ghost_http_responses_total{status=\"400\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("ghost_store_quorum_latency_seconds_count 4"),
            "{text}"
        );
    }
}
