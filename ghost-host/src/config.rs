//! Node configuration: a TOML file, overridden by flags and environment variables.
//!
//! This module owns the names and defaults an operator sees (documented once more in
//! `docs/OPERATING.md`) and their translation into the core's [`NodeConfig`]. It decides
//! nothing about the protocol: every protocol default comes from `proto-core`, so a file
//! that says nothing gets exactly the core's defaults. Unknown keys are refused, so a typo
//! is an error at start rather than a silently ignored setting.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proto_core::NodeId;
use proto_core::directory::DirectoryConfig;
use proto_core::node::NodeConfig;
use proto_core::ratelimit::RateLimitConfig;
use proto_core::store::StoreConfig;
use serde::{Deserialize, Serialize};

/// Node IDs, one per line (64 hex digits); blank lines and `#` comments are skipped.
pub fn parse_allowlist(text: &str) -> Result<BTreeSet<NodeId>, String> {
    let mut ids = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut id = [0u8; 32];
        hex::decode_to_slice(line, &mut id)
            .map_err(|_| format!("line {}: a node ID is 64 hex digits, not {line:?}", i + 1))?;
        ids.insert(NodeId(id));
    }
    if ids.is_empty() {
        return Err("lists no node ID: a closed network needs at least this node's".into());
    }
    Ok(ids)
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Who may join the network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Admission {
    /// Any node that proves itself alive at its address.
    #[default]
    Open,
    /// Only the node IDs of `node.allowlist_file`.
    Allowlist,
}

/// Where the admin listener binds: an address, or nowhere (`off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct AdminListen(pub Option<SocketAddr>);

impl AdminListen {
    /// The default admin address: loopback, port 9710.
    pub const DEFAULT: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9710);
}

impl Default for AdminListen {
    fn default() -> Self {
        Self(Some(Self::DEFAULT))
    }
}

impl std::str::FromStr for AdminListen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "off" {
            return Ok(Self(None));
        }
        text.parse().map(|a| Self(Some(a))).map_err(|_| {
            format!("admin_listen must be host:port (an IP address) or \"off\", not {text:?}")
        })
    }
}

impl TryFrom<String> for AdminListen {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<AdminListen> for String {
    fn from(admin: AdminListen) -> Self {
        admin.0.map_or_else(|| "off".to_owned(), |a| a.to_string())
    }
}

/// Everything `ghostnode` reads from its configuration file. Every field has a default.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (`host:port`; port 0 picks a free one). Default
    /// `127.0.0.1:7100`.
    pub listen: SocketAddr,
    /// Address other nodes and clients use to reach this node. Default: the bound
    /// listening address.
    pub advertise: Option<String>,
    /// Address of the operator's listener, which alone serves `/metrics` and the detailed
    /// `/health` (`host:port`, or `off`). Default `127.0.0.1:9710`: loopback, because
    /// per-node traffic counts tell an outsider when a node forwards and stores.
    pub admin_listen: AdminListen,
    /// Directory holding the identity key and the message database. Default `ghost-data`.
    pub data_dir: PathBuf,
    /// Nodes to join through at start. Default: none (a first node).
    pub seeds: Vec<String>,
    /// Log format. Default `human`.
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax (`info`, `runtime_smol=debug`, ...). Default `info`;
    /// the `RUST_LOG` environment variable wins when set.
    pub log_level: String,
    /// Protocol timers, quorum and limits.
    pub node: NodeSection,
    /// Storage limits and database tuning.
    pub store: StoreSection,
    /// HTTP server limits.
    pub http: HttpSection,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7100)),
            advertise: None,
            admin_listen: AdminListen::default(),
            data_dir: PathBuf::from("ghost-data"),
            seeds: Vec::new(),
            log_format: LogFormat::Human,
            log_level: "info".to_owned(),
            node: NodeSection::default(),
            store: StoreSection::default(),
            http: HttpSection::default(),
        }
    }
}

/// `[node]`: the core's protocol settings. Defaults are the core's own
/// ([`NodeConfig::default`]).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// K: members per swarm.
    pub swarm_size: usize,
    /// W: members holding a message durably before a store is acknowledged.
    pub write_quorum: usize,
    /// Virtual nodes per node on the ring.
    pub vnodes: usize,
    /// Accepted clock distance of signed requests, ms.
    pub auth_window_ms: u64,
    /// Leading zero bits required of a store's proof of work (0: none).
    pub pow_difficulty: u8,
    /// How long a hop waits for the next hop, ms.
    pub forward_timeout_ms: u64,
    /// How long the final hop waits for the write quorum, ms.
    pub store_timeout_ms: u64,
    /// Pause before re-sending a failed replication, ms.
    pub replication_retry_ms: u64,
    /// Period of anti-entropy rounds, ms.
    pub anti_entropy_interval_ms: u64,
    /// Period of descriptor gossip, ms.
    pub gossip_interval_ms: u64,
    /// Period of expiry sweeps, ms.
    pub expiry_sweep_interval_ms: u64,
    /// Probe a node not heard from for this long, ms.
    pub probe_interval_ms: u64,
    /// Evict a node not heard from for this long, ms.
    pub evict_after_ms: u64,
    /// Onion packets per second allowed per source address (sustained).
    pub source_rate_per_second: u32,
    /// Burst allowed per source address.
    pub source_rate_burst: u32,
    /// Onion packets per second allowed from the address of a known node (a relay
    /// forwards many clients' packets).
    pub relay_rate_per_second: u32,
    /// Burst allowed from the address of a known node.
    pub relay_rate_burst: u32,
    /// Stores per second allowed per recipient (sustained).
    pub recipient_rate_per_second: u32,
    /// Burst of stores allowed per recipient.
    pub recipient_rate_burst: u32,
    /// Who may join: `open` (anyone whose node answers probes) or `allowlist` (only the
    /// node IDs listed in `allowlist_file`: a closed network).
    pub admission: Admission,
    /// With `admission = "allowlist"`: a file of node IDs, one per line (64 hex digits;
    /// `#` starts a comment).
    pub allowlist_file: Option<PathBuf>,
    /// Bits of work every node ID must carry to join (0: none; at most 32): an open
    /// network's price of a new, and above all of a targeted, identity. The same on
    /// every node.
    pub join_difficulty: u8,
    /// How long one onion key is used before a new one is made and published, ms (0: keep
    /// the start-up key while the node runs). Default 3,600,000 (1 hour).
    pub onion_key_rotation_ms: u64,
    /// How long packets for the previous onion key are accepted after a rotation, ms; then
    /// the key is erased. Default 600,000 (10 minutes); at least 60,000 (a packet's
    /// lifetime) and below `onion_key_rotation_ms`.
    pub onion_key_grace_ms: u64,
    /// `/v1/peer` requests per second allowed per source address of live nodes.
    pub peer_rate_per_second: u32,
    /// Burst of `/v1/peer` requests per live node's source address.
    pub peer_rate_burst: u32,
    /// `/v1/peer` requests and registrations per second allowed per other source
    /// address (joining nodes, strangers).
    pub stranger_rate_per_second: u32,
    /// Burst of those per other source address.
    pub stranger_rate_burst: u32,
}

impl Default for NodeSection {
    fn default() -> Self {
        let core = NodeConfig::default();
        Self {
            swarm_size: core.swarm_size,
            write_quorum: core.write_quorum,
            vnodes: core.vnodes,
            auth_window_ms: core.auth_window_ms,
            pow_difficulty: core.pow_difficulty,
            forward_timeout_ms: core.forward_timeout_ms,
            store_timeout_ms: core.store_timeout_ms,
            replication_retry_ms: core.replication_retry_ms,
            anti_entropy_interval_ms: core.anti_entropy_interval_ms,
            gossip_interval_ms: core.gossip_interval_ms,
            expiry_sweep_interval_ms: core.expiry_sweep_interval_ms,
            probe_interval_ms: core.directory.probe_interval_ms,
            evict_after_ms: core.directory.evict_after_ms,
            source_rate_per_second: core.source_rate.per_second,
            source_rate_burst: core.source_rate.burst,
            relay_rate_per_second: core.relay_rate.per_second,
            relay_rate_burst: core.relay_rate.burst,
            recipient_rate_per_second: core.recipient_rate.per_second,
            recipient_rate_burst: core.recipient_rate.burst,
            admission: Admission::Open,
            allowlist_file: None,
            join_difficulty: core.directory.join_difficulty,
            onion_key_rotation_ms: core.onion_key_rotation_ms,
            onion_key_grace_ms: core.onion_key_grace_ms,
            peer_rate_per_second: core.peer_rate.per_second,
            peer_rate_burst: core.peer_rate.burst,
            stranger_rate_per_second: core.stranger_rate.per_second,
            stranger_rate_burst: core.stranger_rate.burst,
        }
    }
}

/// `[store]`: storage limits (the core's defaults) and database tuning.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// Longest accepted TTL, ms (at most 14 days).
    pub max_ttl_ms: u64,
    /// Largest accepted message body, bytes.
    pub max_body: usize,
    /// Messages kept per recipient.
    pub recipient_max_messages: u64,
    /// Body bytes kept per recipient.
    pub recipient_max_bytes: u64,
    /// Messages kept by this node; beyond it stores are refused with `node_full`.
    pub node_max_messages: u64,
    /// Body bytes kept by this node; beyond it stores are refused with `node_full`.
    pub node_max_bytes: u64,
    /// Page cache of the database, MiB: the bound on its resident memory. Default 64.
    pub cache_mib: usize,
    /// Shortest time between the starts of two group commits, ms: a write after a quiet
    /// spell goes to the writer thread at once, writes arriving sooner wait for the
    /// interval and go as one group. Default 1; `ghost bench` on 5 local nodes measured
    /// 8 ms at 4 % less node CPU per store near saturation, for a higher latency.
    pub commit_interval_ms: u64,
    /// Save the database's allocator state with every commit, so that a restart after a
    /// crash needs no repair walk over the file (seconds per GB), at about 10 % more node
    /// CPU per store under load: every commit then takes two fsyncs instead of one.
    /// Default false; durability is the same either way.
    pub quick_repair: bool,
}

impl Default for StoreSection {
    fn default() -> Self {
        let core = StoreConfig::default();
        Self {
            max_ttl_ms: core.max_ttl_ms,
            max_body: core.max_body,
            recipient_max_messages: core.recipient_max_messages,
            recipient_max_bytes: core.recipient_max_bytes,
            node_max_messages: core.node_max_messages,
            node_max_bytes: core.node_max_bytes,
            cache_mib: crate::redb_store::DEFAULT_CACHE_BYTES >> 20,
            commit_interval_ms: 1,
            quick_repair: false,
        }
    }
}

/// `[http]`: limits that keep slow or hostile clients from holding the node.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Largest request body read, bytes (checked before reading). Default 1 MiB.
    pub max_body_bytes: usize,
    /// Time allowed to send the request headers, ms. Default 10,000.
    pub header_timeout_ms: u64,
    /// Time allowed to send the request body, ms. Default 10,000.
    pub body_timeout_ms: u64,
    /// Connections served at once; more wait in the listen queue. Default 1,024.
    pub max_connections: usize,
    /// Connections served at once from one IP address; more are closed as soon as they
    /// are accepted, so one address (slow requests, slow forwards) cannot hold every
    /// permit. Default 256.
    pub max_connections_per_address: usize,
    /// On SIGINT/SIGTERM, how long in-flight requests may take to finish, ms. Default
    /// 10,000.
    pub shutdown_grace_ms: u64,
    /// Time allowed for an exchange with another node, ms. Default 20,000.
    pub peer_timeout_ms: u64,
    /// Idle keep-alive connections kept per peer node. Default 8.
    pub peer_idle_connections: usize,
    /// Serve, and call other nodes, over plain HTTP instead of TLS. For local debugging
    /// only: anyone on the path reads which recipients' messages move between which nodes,
    /// and nothing binds a connection to the node it claims to reach. A TLS node and a
    /// plaintext node cannot talk to each other. Default false.
    pub insecure_plaintext: bool,
    /// How long one TLS key is presented before the node makes a new one and publishes
    /// its hash in a new descriptor, ms (0: never). Default 86,400,000 (1 day).
    pub tls_key_rotation_ms: u64,
    /// How long after a TLS key rotation the previous key is still presented to clients
    /// that pinned it (and peer envelopes are signed, for peers that have not yet seen the
    /// new descriptor), ms; then it is wiped. Default 600,000 (10 minutes: a client
    /// refreshes its directory at least every 5 minutes); at least two
    /// `node.gossip_interval_ms`, and below `tls_key_rotation_ms`.
    pub tls_key_overlap_ms: u64,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            max_connections: 1024,
            max_connections_per_address: 256,
            shutdown_grace_ms: 10_000,
            peer_timeout_ms: 20_000,
            peer_idle_connections: 8,
            insecure_plaintext: false,
            tls_key_rotation_ms: 86_400_000,
            tls_key_overlap_ms: 600_000,
        }
    }
}

impl HttpSection {
    /// [`HttpSection::header_timeout_ms`] as a duration.
    #[must_use]
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    /// [`HttpSection::body_timeout_ms`] as a duration.
    #[must_use]
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }

    /// [`HttpSection::peer_timeout_ms`] as a duration.
    #[must_use]
    pub fn peer_timeout(&self) -> Duration {
        Duration::from_millis(self.peer_timeout_ms)
    }
}

impl Config {
    /// Reads a TOML file; a missing or malformed file is an error naming the file and the
    /// offending key or line.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| format!("config file {}: {e}", path.display()))
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// The node IDs of a closed network, read from `node.allowlist_file`; `None` for an
    /// open network.
    pub fn allowlist(&self) -> Result<Option<BTreeSet<NodeId>>, String> {
        let n = &self.node;
        if n.admission == Admission::Open {
            return Ok(None);
        }
        let path = n
            .allowlist_file
            .as_ref()
            .ok_or("node.admission = \"allowlist\" needs node.allowlist_file")?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read node.allowlist_file {}: {e}", path.display()))?;
        parse_allowlist(&text)
            .map(Some)
            .map_err(|e| format!("node.allowlist_file {}: {e}", path.display()))
    }

    /// Refuses settings the node could not run with, with a message saying what to fix.
    pub fn validate(&self) -> Result<(), String> {
        let n = &self.node;
        if n.admission == Admission::Allowlist && n.allowlist_file.is_none() {
            return Err("node.admission = \"allowlist\" needs node.allowlist_file".into());
        }
        self.node_config()
            .validate()
            .map_err(|e| format!("{} must be {}", file_key(e.setting), e.must))?;
        if self.store.cache_mib == 0 {
            return Err("store.cache_mib must be at least 1".into());
        }
        if self.http.max_body_bytes < proto_core::PACKET_LEN {
            return Err(format!(
                "http.max_body_bytes must be at least {} (one onion packet)",
                proto_core::PACKET_LEN
            ));
        }
        if self.http.max_connections == 0 {
            return Err("http.max_connections must be at least 1".into());
        }
        if self.http.max_connections_per_address == 0 {
            return Err("http.max_connections_per_address must be at least 1".into());
        }
        // The core checked its own periods and rates; these are the host's.
        let at_least_one = [
            ("store.commit_interval_ms", self.store.commit_interval_ms),
            ("http.header_timeout_ms", self.http.header_timeout_ms),
            ("http.body_timeout_ms", self.http.body_timeout_ms),
            ("http.peer_timeout_ms", self.http.peer_timeout_ms),
        ];
        if let Some((name, _)) = at_least_one.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        // Peers learn a new descriptor by gossip: the previous key must outlive a round
        // or two, or links pinned to it break before their callers hear of the new one.
        let min_overlap = self.node.gossip_interval_ms.saturating_mul(2);
        if self.http.tls_key_overlap_ms < min_overlap {
            return Err(format!(
                "http.tls_key_overlap_ms must be at least {min_overlap} (two \
                 node.gossip_interval_ms)"
            ));
        }
        let rotation = self.http.tls_key_rotation_ms;
        if rotation != 0 && rotation <= self.http.tls_key_overlap_ms {
            return Err(
                "http.tls_key_rotation_ms must be 0 (no rotation) or longer than \
                 http.tls_key_overlap_ms"
                    .into(),
            );
        }
        Ok(())
    }

    /// The core's configuration with this file's settings applied.
    #[must_use]
    pub fn node_config(&self) -> NodeConfig {
        let n = &self.node;
        let s = &self.store;
        let core = NodeConfig::default();
        NodeConfig {
            swarm_size: n.swarm_size,
            write_quorum: n.write_quorum,
            vnodes: n.vnodes,
            auth_window_ms: n.auth_window_ms,
            pow_difficulty: n.pow_difficulty,
            forward_timeout_ms: n.forward_timeout_ms,
            store_timeout_ms: n.store_timeout_ms,
            replication_retry_ms: n.replication_retry_ms,
            anti_entropy_interval_ms: n.anti_entropy_interval_ms,
            gossip_interval_ms: n.gossip_interval_ms,
            expiry_sweep_interval_ms: n.expiry_sweep_interval_ms,
            onion_key_rotation_ms: n.onion_key_rotation_ms,
            onion_key_grace_ms: n.onion_key_grace_ms,
            store: StoreConfig {
                max_ttl_ms: s.max_ttl_ms,
                max_body: s.max_body,
                recipient_max_messages: s.recipient_max_messages,
                recipient_max_bytes: s.recipient_max_bytes,
                node_max_messages: s.node_max_messages,
                node_max_bytes: s.node_max_bytes,
            },
            directory: DirectoryConfig {
                probe_interval_ms: n.probe_interval_ms,
                evict_after_ms: n.evict_after_ms,
                join_difficulty: n.join_difficulty,
                ..core.directory
            },
            source_rate: RateLimitConfig {
                burst: n.source_rate_burst,
                per_second: n.source_rate_per_second,
                ..core.source_rate
            },
            relay_rate: RateLimitConfig {
                burst: n.relay_rate_burst,
                per_second: n.relay_rate_per_second,
                ..core.relay_rate
            },
            recipient_rate: RateLimitConfig {
                burst: n.recipient_rate_burst,
                per_second: n.recipient_rate_per_second,
                ..core.recipient_rate
            },
            peer_rate: RateLimitConfig {
                burst: n.peer_rate_burst,
                per_second: n.peer_rate_per_second,
                ..core.peer_rate
            },
            stranger_rate: RateLimitConfig {
                burst: n.stranger_rate_burst,
                per_second: n.stranger_rate_per_second,
                ..core.stranger_rate
            },
            ..core
        }
    }
}

/// The file's key for a setting of the core's `NodeConfig` (`source_rate.per_second` is
/// `node.source_rate_per_second`, `directory.probe_interval_ms` is
/// `node.probe_interval_ms`, `store.*` stays).
fn file_key(setting: &str) -> String {
    if setting.starts_with("store.") {
        return setting.to_owned();
    }
    let flat = setting
        .strip_prefix("directory.")
        .unwrap_or(setting)
        .replace('.', "_");
    format!("node.{flat}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_network_reads_its_allowlist_and_names_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("allowlist");
        let a = "ab".repeat(32);
        let b = "CD".repeat(32);
        std::fs::write(&file, format!("# our nodes\n{a}\n\n{b}  # the second\n")).unwrap();
        let toml = format!(
            "[node]\nadmission = \"allowlist\"\nallowlist_file = \"{}\"\n",
            file.display()
        );
        let config = Config::from_toml(&toml).unwrap();
        let ids = config.allowlist().unwrap().expect("a closed network");
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&NodeId([0xab; 32])) && ids.contains(&NodeId([0xcd; 32])));
        assert_eq!(Config::from_toml("").unwrap().allowlist(), Ok(None));

        let missing = Config::from_toml("[node]\nadmission = \"allowlist\"\n").unwrap_err();
        assert!(missing.contains("node.allowlist_file"), "{missing}");
        std::fs::write(&file, format!("{a}\nnot-an-id\n")).unwrap();
        let bad = config.allowlist().unwrap_err();
        assert!(bad.contains("line 2"), "{bad}");
        std::fs::write(&file, "# nobody\n").unwrap();
        assert!(config.allowlist().unwrap_err().contains("no node ID"));
        assert!(Config::from_toml("[node]\nadmission = \"closed\"\n").is_err());
    }

    #[test]
    fn empty_file_gives_the_core_defaults() {
        let config = Config::from_toml("").unwrap();
        let core = NodeConfig::default();
        let ours = config.node_config();
        assert_eq!(ours.swarm_size, core.swarm_size);
        assert_eq!(ours.write_quorum, core.write_quorum);
        assert_eq!(ours.anti_entropy_interval_ms, core.anti_entropy_interval_ms);
        assert_eq!(ours.store, core.store);
        assert_eq!(ours.source_rate, core.source_rate);
        assert_eq!(config.listen.port(), 7100);
    }

    #[test]
    fn settings_reach_the_core() {
        let config = Config::from_toml(
            "seeds = [\"127.0.0.1:7100\"]\n[node]\nwrite_quorum = 3\nanti_entropy_interval_ms = 2000\n[store]\nnode_max_messages = 5\n",
        )
        .unwrap();
        let core = config.node_config();
        assert_eq!(core.write_quorum, 3);
        assert_eq!(core.anti_entropy_interval_ms, 2000);
        assert_eq!(core.store.node_max_messages, 5);
        assert_eq!(config.seeds, ["127.0.0.1:7100"]);
    }

    #[test]
    fn unknown_key_is_refused_by_name() {
        let e = Config::from_toml("[node]\nswarm_sise = 3\n").unwrap_err();
        assert!(e.contains("swarm_sise"), "{e}");
    }

    #[test]
    fn impossible_quorum_is_refused_with_what_to_fix() {
        let e = Config::from_toml("[node]\nwrite_quorum = 4\n").unwrap_err();
        assert!(e.contains("node.write_quorum"), "{e}");
    }

    #[test]
    fn zero_periods_and_rates_are_refused_by_name() {
        let e = Config::from_toml("[store]\ncommit_interval_ms = 0\n").unwrap_err();
        assert!(e.contains("store.commit_interval_ms"), "{e}");
        let e = Config::from_toml("[node]\nsource_rate_per_second = 0\n").unwrap_err();
        assert!(e.contains("node.source_rate_per_second"), "{e}");
    }

    #[test]
    fn admin_listener_is_loopback_by_default_and_can_be_moved_or_turned_off() {
        let config = Config::from_toml("").unwrap();
        assert!(config.admin_listen.0.is_some_and(|a| a.ip().is_loopback()));
        let moved = Config::from_toml("admin_listen = \"127.0.0.1:0\"\n").unwrap();
        assert_eq!(moved.admin_listen.0, Some("127.0.0.1:0".parse().unwrap()));
        let off = Config::from_toml("admin_listen = \"off\"\n").unwrap();
        assert_eq!(off.admin_listen, AdminListen(None));
        let e = Config::from_toml("admin_listen = \"localhost\"\n").unwrap_err();
        assert!(e.contains("admin_listen"), "{e}");
    }

    #[test]
    fn onion_key_rotation_reaches_the_core_and_a_grace_too_short_is_refused() {
        let config = Config::from_toml(
            "[node]\nonion_key_rotation_ms = 7200000\nonion_key_grace_ms = 900000\n",
        )
        .unwrap();
        let core = config.node_config();
        assert_eq!(
            (core.onion_key_rotation_ms, core.onion_key_grace_ms),
            (7_200_000, 900_000)
        );
        let e = Config::from_toml("[node]\nonion_key_grace_ms = 1000\n").unwrap_err();
        assert!(e.contains("node.onion_key_grace_ms"), "{e}");
        let e = Config::from_toml("[node]\nonion_key_rotation_ms = 600000\n").unwrap_err();
        assert!(e.contains("node.onion_key_rotation_ms"), "{e}");
        assert!(Config::from_toml("[node]\nonion_key_rotation_ms = 0\n").is_ok());
    }

    #[test]
    fn a_tls_key_overlap_shorter_than_gossip_or_longer_than_the_rotation_is_refused() {
        let config = Config::from_toml(
            "[http]\ntls_key_rotation_ms = 3600000\ntls_key_overlap_ms = 900000\n",
        )
        .unwrap();
        assert_eq!(config.http.tls_key_rotation_ms, 3_600_000);
        let e = Config::from_toml("[http]\ntls_key_overlap_ms = 20000\n").unwrap_err();
        assert!(
            e.contains("http.tls_key_overlap_ms must be at least 30000"),
            "{e}"
        );
        let fast_gossip = "[node]\ngossip_interval_ms = 1000\n[http]\ntls_key_overlap_ms = 2000\n";
        assert!(Config::from_toml(fast_gossip).is_ok());
        let e = Config::from_toml("[http]\ntls_key_rotation_ms = 600000\n").unwrap_err();
        assert!(e.contains("http.tls_key_rotation_ms"), "{e}");
        assert!(Config::from_toml("[http]\ntls_key_rotation_ms = 0\n").is_ok());
    }

    #[test]
    fn wrong_type_is_refused() {
        assert!(Config::from_toml("listen = 7100\n").is_err());
    }

    #[test]
    fn defaults_round_trip_through_toml() {
        let text = toml::to_string(&Config::default()).unwrap();
        let back = Config::from_toml(&text).unwrap();
        assert_eq!(back.listen, Config::default().listen);
        assert_eq!(back.admin_listen, AdminListen::default());
        assert_eq!(back.http.max_body_bytes, 1 << 20);
    }
}
