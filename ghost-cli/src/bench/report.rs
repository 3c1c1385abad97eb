//! The report a bench run writes: `report.json` (this schema, versioned) and
//! `report.md`, and what [`super::compare`] and [`super::plot`] read back.
//!
//! Every figure a reader compares is here in plain units (milliseconds, operations per
//! second, bytes), next to the raw latency histograms as `[microseconds, count]` pairs so
//! a later tool can recompute any percentile. Adding a field keeps [`SCHEMA`]; renaming or
//! removing one, or changing a unit, bumps it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The schema this build writes and reads.
pub const SCHEMA: &str = "ghost-bench/1";

/// One bench run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The `ghost` version that ran it.
    pub tool_version: String,
    /// When the measured phase started, Unix milliseconds.
    pub started_unix_ms: u64,
    /// What was asked for.
    pub config: BenchConfig,
    /// Length of the measured phase (after warm-up), seconds.
    pub measured_seconds: f64,
    /// Results by operation: `store`, `retrieve`, `http` (every node and path together).
    pub operations: BTreeMap<String, OpStats>,
    /// The `http` scenario per node and path, keyed `ADDRESS PATH`.
    pub http_targets: BTreeMap<String, OpStats>,
    /// Replication and retrieval checks of the `flow` scenario.
    pub flow: Option<FlowCheck>,
    /// Completions over time.
    pub timeline: Vec<TimelineBucket>,
    /// The load generator's own CPU use.
    pub generator: GeneratorUsage,
    /// Each node's resources and counter deltas.
    pub nodes: Vec<NodeUsage>,
    /// The goals and whether this run met them.
    pub targets: Vec<TargetCheck>,
}

/// What the run was asked to do.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BenchConfig {
    /// `http`, `store`, `flow` or `mixed`.
    pub scenario: String,
    /// `local` (started by the bench) or `via` (a running network).
    pub target: String,
    /// Nodes of a local network, or of the directory read through `--via`.
    pub nodes: usize,
    /// Node runtime of a local network (`smol`, `sync`, `mixed`); `None` for `--via`.
    pub runtime: Option<String>,
    /// The seed node's address.
    pub seed_address: String,
    /// `closed` (fixed concurrency) or `open` (fixed arrival rate).
    pub load_model: String,
    /// Operations in flight (closed loop), or the most allowed in flight (open loop).
    pub concurrency: usize,
    /// Operations started per second (open loop).
    pub rate_per_second: Option<f64>,
    /// Measured phase length asked for, seconds (when bounded by time).
    pub duration_seconds: Option<f64>,
    /// Operations asked for (when bounded by count).
    pub operations: Option<u64>,
    /// Warm-up before measuring, seconds.
    pub warmup_seconds: f64,
    /// Plaintext bytes per message (sealed to the recipient before storing).
    pub payload_bytes: usize,
    /// Distinct recipients messages go to.
    pub recipients: usize,
    /// Receipts each store needs (W).
    pub write_quorum: usize,
    /// Swarm size (K).
    pub swarm_size: usize,
    /// Stores per retrieve in `mixed` (`STORES:RETRIEVES`).
    pub mix: Option<String>,
    /// Seed of the generator's choices (recipients, payloads), for reproducibility.
    pub seed: u64,
    /// `--node-config`: the TOML merged over every local node's settings.
    #[serde(default)]
    pub node_config: Option<String>,
}

/// Results of one kind of operation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OpStats {
    /// Operations that ended during the measured phase.
    pub completed: u64,
    /// Of those, how many succeeded.
    pub succeeded: u64,
    /// Failures by cause (`timeout`, `no_quorum`, `http_503`, ...).
    pub failures: BTreeMap<String, u64>,
    /// `succeeded / completed` (1.0 when nothing completed).
    pub success_rate: f64,
    /// Successful operations per second of the measured phase.
    pub throughput_per_second: f64,
    /// Latency of successful operations, from the intended start (open loop) or the
    /// actual start (closed loop) to the end.
    pub latency_ms: LatencySummary,
    /// The raw latency histogram: `[microseconds, count]`, ascending.
    pub histogram_us: Vec<[u64; 2]>,
}

/// Percentiles of a latency histogram, milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencySummary {
    /// Fastest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
}

/// What the `flow` scenario verified after its stores.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FlowCheck {
    /// Stores acknowledged with W verified receipts (warm-up included: every
    /// acknowledged message must be retrievable).
    pub acknowledged: u64,
    /// Acknowledged messages a recipient's fetch returned exactly once.
    pub retrieved_once: u64,
    /// Acknowledged messages no fetch returned.
    pub missing: u64,
    /// Acknowledged messages a fetch returned more than once.
    pub duplicated: u64,
    /// Acknowledged messages that a signed retrieve found on every one of the K members.
    pub on_all_members: u64,
    /// (message, member) pairs where a member did not hold an acknowledged message.
    pub member_copies_missing: u64,
    /// Recipients whose fetch or member retrieves failed outright.
    pub recipients_unreadable: u64,
    /// Time from acknowledgement until a sampled message was found on a member that
    /// gave no receipt, milliseconds (resolution: the probe interval plus one retrieve).
    pub replication_delay_ms: Option<LatencySummary>,
    /// Messages whose replication was probed.
    pub replication_samples: u64,
    /// Probed messages not found on every member before the probe deadline.
    pub replication_unconfirmed: u64,
    /// How long the verification took, seconds.
    pub verify_seconds: f64,
}

/// Completions in one slice of the measured phase.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TimelineBucket {
    /// Start of the slice, seconds since the measured phase began.
    pub start_seconds: f64,
    /// Length of the slice, seconds.
    pub seconds: f64,
    /// Successful operations by kind.
    pub succeeded: BTreeMap<String, u64>,
    /// Failed operations (all kinds).
    pub failed: u64,
    /// Median latency of the slice's successes, milliseconds (0 when none).
    pub p50_ms: f64,
    /// 99th percentile of the slice's successes, milliseconds (0 when none).
    pub p99_ms: f64,
}

/// The load generator's own CPU use over the measured phase.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct GeneratorUsage {
    /// CPU seconds (user + system) the bench process used.
    pub cpu_seconds: f64,
    /// `cpu_seconds` over the machine's CPU capacity for the phase (0..1).
    pub share_of_machine: f64,
    /// CPUs the machine has.
    pub cpus: usize,
}

/// One node's resources and counters over the measured phase.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeUsage {
    /// Public address.
    pub address: String,
    /// Admin address (`/metrics`), when known.
    pub admin: Option<String>,
    /// CPU seconds used during the phase (from `/proc` for local nodes, from
    /// `process_cpu_seconds_total` otherwise); `None` when unknown.
    pub cpu_seconds: Option<f64>,
    /// Resident memory at the end, bytes; `None` when unknown.
    pub rss_bytes: Option<u64>,
    /// Change of every counter in the node's `/metrics` over the phase, by series
    /// (`name{labels}`), zero changes left out.
    pub counter_deltas: BTreeMap<String, f64>,
}

/// One goal of the targets table.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TargetCheck {
    /// What is measured.
    pub name: String,
    /// Where the goal comes from (`Go system`, `GhostNodes`).
    pub source: String,
    /// The goal, in words (`< 1000 ms`).
    pub goal: String,
    /// The measured value, in words.
    pub measured: String,
    /// Whether it was met; `None` when this run cannot tell (another scenario).
    pub met: Option<bool>,
}
