//! The node state machine: onion relaying, the final hop's swarm store, replication,
//! anti-entropy and the directory, driven by inputs and drained through polled outputs.
//!
//! # Run loop
//!
//! ```text
//! loop {
//!     match next_event() {
//!         onion packet on /v1/onion     => node.handle_onion(now, req, peer_ip, &mut packet),
//!         peer request on /v1/peer      => node.handle_peer(now, req, peer_ip, &body),
//!         answer to an outgoing request => node.handle_transmit_result(now, id, result),
//!         storage committed             => node.handle_durable(now),
//!         timer fired                   => node.handle_timeout(now),
//!     }
//!     while let Some(out) = node.poll_output() { carry_out(out) }   // Transmit / Respond
//!     sleep_until(node.poll_timeout());
//! }
//! ```
//!
//! **Drain rule: after every `handle_*` call, drain [`Node::poll_output`] until `None`
//! before the next input.**
//!
//! The node owns every protocol decision — what to forward where, when to answer, which
//! swarm serves a recipient, when a store is acknowledged, what to replicate and when to
//! retry, which peers to probe and evict. It never reads a clock, opens a socket or
//! touches a file: the runtime hands it the time, carries out [`Output`]s, and reports
//! back. Invariants: every inbound request gets exactly one [`Output::Respond`]; a store
//! is acknowledged only with receipts from at least W swarm members whose copies are
//! durable; state is bounded (pending operations expire at their deadlines).
//!
//! This file holds forwarding, the final hop, the input dispatch and the fixed timer
//! table; `membership` (directory and ring of live nodes, which only it changes),
//! `replication` (stores waiting for their quorum, copies under the store's rules,
//! deletes relayed and shown) and `anti_entropy` (per-peer digests, reconciling) each
//! own their part of the state behind the same [`Node`] API.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};

use chacha20::ChaCha20Rng;
use rand_core::{CryptoRng, Rng, SeedableRng};

use crate::directory::{Directory, DirectoryConfig, InsertOutcome};
use crate::keys::{Address, Descriptor, IdentityKey, OnionKey, UnverifiedDescriptor};
use crate::packet::{self, PACKET_LEN, PeelError, Peeled};
use crate::peer::{
    self, CopyRefusal, Digest, MAX_BATCH, MAX_DIFF_BUCKETS, MAX_HASH_LIST, PeerError, PeerRequest,
    PeerResponse, WireMessage,
};
use crate::ratelimit::{RateLimitConfig, RateLimiter};
use crate::replay::{BUCKETS, DEFAULT_WORDS_PER_BUCKET, ReplayFilter};
use crate::reply::{self, HopFailure, ReplyKey, ReplyStatus};
use crate::request::{
    MessageView, Origin, OriginError, Receipt, Request, RequestError, Response, SignedRequest,
    StoreAck, pow_satisfied,
};
use crate::ring::Ring;
use crate::seen::{DEFAULT_SEEN_CAPACITY, SeenChanges};
use crate::store::{
    Changes, Inserted, MessageBackend, MessageStore, NewMessage, StoreConfig, StoreError,
    StoredMessage,
};
use crate::types::{Epoch, MessageHash, NodeId, RecipientId, Timestamp, TlsKeyHash};

mod anti_entropy;
mod membership;
mod replication;

use anti_entropy::AntiEntropy;
use membership::Membership;
use replication::Replication;

/// Protocol version reported by `info`.
pub const PROTOCOL_VERSION: u16 = 2;

/// Everything a node operator can tune. Defaults are documented per field and in
/// `docs/OPERATING.md`.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// K: members per swarm (default 3).
    pub swarm_size: usize,
    /// W: members, the accepting node included, that must hold a message durably before
    /// a store is acknowledged (default 2).
    pub write_quorum: usize,
    /// Virtual nodes per node on the ring (default 64).
    pub vnodes: usize,
    /// Accepted distance between a request's timestamp and the node's clock, in ms
    /// (default 60,000).
    pub auth_window_ms: u64,
    /// Whether this node's links to other nodes are TLS sessions on which it presents the
    /// certificate its descriptor names: then its peer envelopes (but gossip and probes)
    /// travel without a signature, authenticated by the session (default false: every
    /// envelope signed, as on plain HTTP).
    pub session_authenticated_peers: bool,
    /// Leading zero bits a store's proof of work must have (default 0: none).
    pub pow_difficulty: u8,
    /// How long a hop waits for the next hop's answer, in ms (default 15,000).
    pub forward_timeout_ms: u64,
    /// How long the final hop waits for the write quorum, in ms (default 5,000).
    pub store_timeout_ms: u64,
    /// Pause before re-sending a failed replication, in ms (default 500).
    pub replication_retry_ms: u64,
    /// Period of anti-entropy rounds, in ms (default 30,000).
    pub anti_entropy_interval_ms: u64,
    /// Period of descriptor gossip, in ms (default 15,000).
    pub gossip_interval_ms: u64,
    /// Period of expiry sweeps, in ms (default 10,000).
    pub expiry_sweep_interval_ms: u64,
    /// Most messages one expiry sweep removes (default 10,000), so a sweep never stalls
    /// the node; the rest go in the next sweep.
    pub max_expired_per_sweep: usize,
    /// Lifetime of the node's own signed descriptor, in ms (default 1 hour); it is
    /// re-signed at half-life.
    pub descriptor_lifetime_ms: u64,
    /// How long one onion key is used before the node makes a new one and publishes it in
    /// a new descriptor, in ms (default 1 hour; 0: keep the start-up key while the process
    /// runs). Rotation bounds what a stolen key opens to the packets of one period.
    pub onion_key_rotation_ms: u64,
    /// How long after a rotation packets for the previous key are still accepted, in ms
    /// (default 10 minutes: a client refreshes its directory at least every 5 minutes,
    /// plus a packet's lifetime and gossip). Then the previous key is erased.
    pub onion_key_grace_ms: u64,
    /// Words of the replay filter (default `BUCKETS × 2^16`, 3.5 MiB: PROTOCOL.md section 3).
    pub replay_filter_words: usize,
    /// Message store limits.
    pub store: StoreConfig,
    /// Directory timers and bounds.
    pub directory: DirectoryConfig,
    /// Token bucket per source address of onion packets (clients, and nodes whose
    /// address is not an IP literal).
    pub source_rate: RateLimitConfig,
    /// Token bucket per source address that belongs to a known node (relays forward
    /// many clients' packets from one address). Default 20,000 burst, 10,000 per second.
    pub relay_rate: RateLimitConfig,
    /// Token bucket per recipient, for stores.
    pub recipient_rate: RateLimitConfig,
    /// Token bucket per source address of `/v1/peer` requests and registrations that do
    /// not come from a live node's address: the joining nodes' gossip, probes and
    /// registrations, which cost a signature check each. Default 40 burst, 10 per second.
    pub stranger_rate: RateLimitConfig,
    /// Token bucket per live node's address for `/v1/peer` requests (replication,
    /// anti-entropy, gossip, probes), and the same again per node identity once its
    /// envelope's signature verified. Default 20,000 burst, 10,000 per second.
    pub peer_rate: RateLimitConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            swarm_size: 3,
            write_quorum: 2,
            vnodes: crate::ring::DEFAULT_VNODES,
            auth_window_ms: crate::request::DEFAULT_AUTH_WINDOW_MS,
            session_authenticated_peers: false,
            pow_difficulty: 0,
            forward_timeout_ms: 15_000,
            store_timeout_ms: 5_000,
            replication_retry_ms: 500,
            anti_entropy_interval_ms: 30_000,
            gossip_interval_ms: 15_000,
            expiry_sweep_interval_ms: 10_000,
            max_expired_per_sweep: 10_000,
            descriptor_lifetime_ms: 3_600_000,
            onion_key_rotation_ms: 3_600_000,
            onion_key_grace_ms: 600_000,
            replay_filter_words: BUCKETS * DEFAULT_WORDS_PER_BUCKET,
            store: StoreConfig::default(),
            directory: DirectoryConfig::default(),
            source_rate: RateLimitConfig::default(),
            relay_rate: RateLimitConfig {
                burst: 20_000,
                per_second: 10_000,
                max_keys: 10_000,
            },
            recipient_rate: RateLimitConfig::default(),
            stranger_rate: RateLimitConfig {
                burst: 40,
                per_second: 10,
                max_keys: 10_000,
            },
            peer_rate: RateLimitConfig {
                burst: 20_000,
                per_second: 10_000,
                max_keys: 10_000,
            },
        }
    }
}

/// A setting of [`NodeConfig`] the node cannot run with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The setting, as a path into [`NodeConfig`] (`swarm_size`, `store.max_ttl_ms`,
    /// `source_rate.per_second`, ...).
    pub setting: &'static str,
    /// What it must be.
    pub must: alloc::string::String,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} must be {}", self.setting, self.must)
    }
}

impl NodeConfig {
    /// Refuses settings that break the protocol's own rules (a quorum larger than the
    /// swarm, a key grace shorter than a packet's life, a TTL over the protocol's
    /// maximum) or would spin a timer or lock every source out (zero periods and
    /// rates). Every runtime checks its configuration here before starting a node.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |setting, must: alloc::string::String| Err(ConfigError { setting, must });
        if self.swarm_size == 0 {
            return fail("swarm_size", "at least 1".into());
        }
        if self.write_quorum == 0 || self.write_quorum > self.swarm_size {
            return fail(
                "write_quorum",
                alloc::format!("between 1 and swarm_size ({})", self.swarm_size),
            );
        }
        if self.vnodes == 0 {
            return fail("vnodes", "at least 1".into());
        }
        if self.directory.join_difficulty > crate::keys::MAX_JOIN_DIFFICULTY {
            return fail(
                "directory.join_difficulty",
                alloc::format!("at most {} bits", crate::keys::MAX_JOIN_DIFFICULTY),
            );
        }
        let lifetime = crate::replay::MAX_PACKET_LIFETIME_MS;
        if self.onion_key_grace_ms < lifetime {
            return fail(
                "onion_key_grace_ms",
                alloc::format!("at least {lifetime} (a packet's lifetime)"),
            );
        }
        if self.onion_key_rotation_ms != 0 && self.onion_key_rotation_ms <= self.onion_key_grace_ms
        {
            return fail(
                "onion_key_rotation_ms",
                "0 (no rotation) or longer than onion_key_grace_ms".into(),
            );
        }
        if self.store.max_ttl_ms > crate::store::MAX_TTL_MS {
            return fail(
                "store.max_ttl_ms",
                alloc::format!("at most {} (14 days)", crate::store::MAX_TTL_MS),
            );
        }
        if self.store.max_body > crate::store::DEFAULT_MAX_BODY {
            return fail(
                "store.max_body",
                alloc::format!(
                    "at most {} (what fits in one onion packet)",
                    crate::store::DEFAULT_MAX_BODY
                ),
            );
        }
        let periods = [
            ("forward_timeout_ms", self.forward_timeout_ms),
            ("store_timeout_ms", self.store_timeout_ms),
            ("replication_retry_ms", self.replication_retry_ms),
            ("anti_entropy_interval_ms", self.anti_entropy_interval_ms),
            ("gossip_interval_ms", self.gossip_interval_ms),
            ("expiry_sweep_interval_ms", self.expiry_sweep_interval_ms),
            (
                "directory.probe_interval_ms",
                self.directory.probe_interval_ms,
            ),
            ("directory.evict_after_ms", self.directory.evict_after_ms),
        ];
        let rates = [
            ("source_rate.per_second", self.source_rate.per_second),
            ("source_rate.burst", self.source_rate.burst),
            ("relay_rate.per_second", self.relay_rate.per_second),
            ("relay_rate.burst", self.relay_rate.burst),
            ("recipient_rate.per_second", self.recipient_rate.per_second),
            ("recipient_rate.burst", self.recipient_rate.burst),
            ("stranger_rate.per_second", self.stranger_rate.per_second),
            ("stranger_rate.burst", self.stranger_rate.burst),
            ("peer_rate.per_second", self.peer_rate.per_second),
            ("peer_rate.burst", self.peer_rate.burst),
        ];
        let zero = periods
            .iter()
            .map(|(name, v)| (*name, *v))
            .chain(rates.iter().map(|(name, v)| (*name, u64::from(*v))))
            .find(|(_, v)| *v == 0);
        if let Some((setting, _)) = zero {
            return fail(setting, "at least 1".into());
        }
        Ok(())
    }
}

/// A node's keys and where it listens.
#[derive(Debug)]
pub struct NodeKeys {
    /// The long-lived identity key.
    pub identity: IdentityKey,
    /// The current onion key (a runtime persists it; a node restarted without its replay
    /// filter must use a fresh one).
    pub onion: OnionKey,
    /// The hash of the TLS key the node's links present, published in the descriptor.
    pub tls_key_hash: TlsKeyHash,
    /// The address published in the descriptor.
    pub address: Address,
}

/// Handle of an inbound request, chosen by the runtime; echoed in [`Output::Respond`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Handle of an outbound exchange, chosen by the node; echoed to
/// [`Node::handle_transmit_result`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransmitId(pub u64);

/// Which endpoint of the peer an outbound exchange goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/onion` with a raw packet.
    Onion,
    /// `POST /v1/peer` with a signed peer envelope.
    Peer,
}

/// Why an outbound exchange produced no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransmitFailure {
    /// Could not connect, or the connection broke.
    Unreachable,
    /// No answer in time.
    Timeout,
    /// The other node answered, refusing: an HTTP status other than success (429 when
    /// its rate limit for this node is spent).
    Refused {
        /// The HTTP status it answered.
        status: u16,
    },
}

/// One page of a node's directory listing ([`Node::directory_page`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryPage {
    /// Descriptors in node-ID order.
    pub nodes: Vec<Descriptor>,
    /// Pass as `after` to get the next page; `None` on the last page.
    pub next: Option<NodeId>,
    /// Leading zero bits the node's stores require of their proof of work.
    pub pow_difficulty: u8,
}

/// Whom an exchange goes to.
#[derive(Clone, Copy)]
enum Callee {
    /// A node of the directory: its address, pinned to its descriptor's TLS key.
    Node(Descriptor),
    /// A seed, known by address alone.
    Seed(Address),
}

/// What the node wants the runtime to do.
#[derive(Debug)]
pub enum Output {
    /// Send `body` to `address` at `endpoint` and report the answer with `id`.
    Transmit {
        /// Echo this to [`Node::handle_transmit_result`].
        id: TransmitId,
        /// The peer, when known (seeds are known only by address).
        to: Option<NodeId>,
        /// Where to send it.
        address: Address,
        /// The hash of the TLS key the peer's descriptor names: a link to `address` must
        /// present that key. `None` for a seed, known only by address.
        tls_key_hash: Option<TlsKeyHash>,
        /// Which endpoint.
        endpoint: Endpoint,
        /// The request body.
        body: Vec<u8>,
    },
    /// Answer inbound request `req`.
    Respond {
        /// The request being answered.
        req: RequestId,
        /// The answer.
        reply: Reply,
    },
}

/// An answer to an inbound request.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// A reply bucket for an onion request (sealed or layered).
    Onion(Vec<u8>),
    /// The onion packet was dropped; answer with no content and no reason.
    Dropped,
    /// Too many requests from this source; answer 429.
    RateLimited,
    /// An answer to a peer request.
    Peer(Vec<u8>),
    /// A peer request whose envelope did not decode, verify or fall inside the time
    /// window; answer with an HTTP error naming the reason (a node that sent it treats
    /// any such answer as a failed exchange).
    PeerRefused(PeerError),
}

/// Most messages pushed to one peer per anti-entropy round (16 replication batches): the
/// bound on the memory a round takes, whatever the size of the store.
pub const MAX_HANDOFF_PER_ROUND: usize = 16 * MAX_BATCH;

/// Upper bounds (ms) of the quorum-latency histogram in [`NodeStats`].
pub const QUORUM_LATENCY_BOUNDS_MS: [u64; 10] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000];

/// Counters a runtime exports as metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Packets that passed every check.
    pub packets_peeled: u64,
    /// Packets forwarded to a next hop.
    pub packets_forwarded: u64,
    /// Packets delivered here as final hop.
    pub packets_delivered: u64,
    /// Dropped packets, by [`PeelError::ALL`] index.
    pub packets_dropped: [u64; PeelError::ALL.len()],
    /// Answers from a next hop not passed back: empty (it dropped the packet) or not of
    /// the reply length the packet asked for.
    pub replies_refused: u64,
    /// Onion keys replaced by a fresh one ([`NodeConfig::onion_key_rotation_ms`]).
    pub onion_keys_rotated: u64,
    /// TLS keys replaced by the host ([`Node::rotate_tls_key`]).
    pub tls_keys_rotated: u64,
    /// Requests refused by a rate limit.
    pub rate_limited: u64,
    /// `/v1/peer` requests and registrations refused by their source's rate limit.
    pub peer_rate_limited: u64,
    /// Peer envelopes accepted on their sender's TLS session, without a signature.
    pub peer_session_envelopes: u64,
    /// Stores acknowledged to clients.
    pub stores_acked: u64,
    /// Stores that missed the write quorum.
    pub stores_failed: u64,
    /// Retrieve requests served.
    pub retrieves: u64,
    /// Requests answered with a redirect.
    pub redirects: u64,
    /// Requests refused, by reason.
    pub requests_refused: u64,
    /// Messages received by replication or anti-entropy that were new here.
    pub messages_replicated_in: u64,
    /// Replication exchanges sent.
    pub replications_sent: u64,
    /// Copies sent in replication exchanges (several per exchange when stores fall due
    /// together).
    pub replicas_sent: u64,
    /// Anti-entropy rounds started.
    pub anti_entropy_rounds: u64,
    /// Sum of store quorum latencies in ms (with `stores_acked`, the mean).
    pub quorum_latency_ms_total: u64,
    /// Acknowledged stores by quorum latency: entry `i` counts those that took at most
    /// [`QUORUM_LATENCY_BOUNDS_MS`]`[i]` ms (non-cumulative; the last entry counts the
    /// rest).
    pub quorum_latency_buckets: [u64; QUORUM_LATENCY_BOUNDS_MS.len() + 1],
    /// Nodes evicted from the directory.
    pub nodes_evicted: u64,
    /// Probes unanswered, or answered without the probed identity's signature.
    pub probes_failed: u64,
    /// Expired messages removed.
    pub messages_expired: u64,
    /// Signed deletes and expiry updates refused because they were already applied here
    /// (client retries, or replays by a relay or a swarm member).
    pub changes_already_applied: u64,
    /// Remembered changes dropped early because the memory was full: a replay of one of
    /// them would be applied again.
    pub seen_changes_evicted: u64,
    /// Copies from peers (replication, anti-entropy) not stored, by
    /// [`CopyRefusal::ALL`] index.
    pub copies_refused: [u64; CopyRefusal::ALL.len()],
    /// Owners' deletes shown to peers that still held the deleted message (anti-entropy).
    pub tombstones_shown: u64,
    /// Messages deleted here on an owner's delete shown by a peer.
    pub deletes_learned: u64,
}

/// Why [`Node::handle_register`] refused a descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegisterError {
    /// The descriptor does not decode or its signature does not verify.
    Invalid(crate::keys::DescriptorError),
    /// The descriptor has expired.
    Expired,
    /// The descriptor expires, or claims an epoch, more than a day ahead.
    TooFarAhead,
    /// An older descriptor than the one held for that node.
    Stale,
    /// The descriptor is this node's own identity.
    OwnIdentity,
    /// The directory holds its maximum number of nodes.
    DirectoryFull,
    /// The source address is over its registration budget.
    RateLimited,
    /// The node is not on this closed network's allowlist, or its node ID lacks the
    /// network's join work.
    NotAdmitted,
}

impl RegisterError {
    /// A stable machine-readable name (the HTTP error name); `label` across the crate,
    /// `code` being the wire byte where an error has one.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid_descriptor",
            Self::Expired => "expired_descriptor",
            Self::TooFarAhead => "descriptor_too_far_ahead",
            Self::Stale => "stale_descriptor",
            Self::OwnIdentity => "own_identity",
            Self::DirectoryFull => "directory_full",
            Self::RateLimited => "rate_limited",
            Self::NotAdmitted => "not_admitted",
        }
    }
}

impl core::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Invalid(e) => write!(f, "invalid descriptor: {e}"),
            Self::Expired => f.write_str("the descriptor has expired"),
            Self::TooFarAhead => f.write_str(
                "the descriptor expires or claims an onion-key epoch more than 24 hours ahead of this node's clock",
            ),
            Self::Stale => f.write_str("a newer descriptor of that node is already known"),
            Self::OwnIdentity => f.write_str("the descriptor carries this node's own identity"),
            Self::DirectoryFull => f.write_str("the directory is full"),
            Self::RateLimited => f.write_str("too many registrations from this address; retry later"),
            Self::NotAdmitted => f.write_str(
                "this is a closed network and the node is not on its allowlist (node.allowlist_file)",
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for RegisterError {}

/// How to answer one onion packet: this hop's reply key and the reply length the client
/// chose (every answer, response or failure, is sealed or passed back at exactly that
/// length).
#[derive(Debug)]
pub(super) struct ReplyTo {
    key: ReplyKey,
    len: usize,
}

/// What a pending outbound exchange was for.
#[derive(Debug)]
enum Pending {
    Forward {
        req: RequestId,
        reply: ReplyTo,
    },
    /// Copies for the stores `ops`, in one request.
    Replicate {
        ops: Vec<u64>,
        peer: NodeId,
    },
    Handoff,
    /// `mine` is the digest sent, reused when the answer comes back (no second scan).
    Digest {
        peer: NodeId,
        mine: Box<Digest>,
    },
    /// The hashes asked of `peer`: an answer may carry only these.
    Fetch {
        peer: NodeId,
        asked: BTreeSet<MessageHash>,
    },
    Gossip,
    Probe {
        peer: NodeId,
        nonce: [u8; peer::PROBE_NONCE_LEN],
    },
    /// A signed change relayed to `peer`, asked again until `until` unless confirmed.
    Relay {
        peer: NodeId,
        change: Vec<u8>,
        until: Timestamp,
    },
}

/// Periodic duties, each with its own deadline in a fixed table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    Probe = 0,
    Gossip = 1,
    AntiEntropy = 2,
    Expire = 3,
    Descriptor = 4,
}
const TIMERS: usize = 5;

/// The node state machine. See the module documentation for the run loop.
pub struct Node<B: MessageBackend> {
    config: NodeConfig,
    identity: IdentityKey,
    onion: OnionKey,
    /// When the current onion key was made.
    onion_since: Timestamp,
    /// The onion key before the current one and until when its packets are accepted;
    /// dropped (and zeroized) after that.
    previous_onion: Option<(OnionKey, Timestamp)>,
    /// Until when peer envelopes are signed even on TLS sessions: after a TLS key rotation,
    /// peers still holding the previous descriptor would not recognise the new session key.
    signed_envelopes_until: Option<Timestamp>,
    address: Address,
    descriptor: Descriptor,
    replay: ReplayFilter<Box<[u64]>>,
    /// The latest time any input carried: a clock that steps back is read as this.
    clock: Timestamp,
    membership: Membership,
    store: MessageStore<B>,
    sources: RateLimiter<IpAddr>,
    relays: RateLimiter<IpAddr>,
    anti_entropy: AntiEntropy,
    recipients: RateLimiter<RecipientId>,
    strangers: RateLimiter<IpAddr>,
    peers: RateLimiter<IpAddr>,
    /// The same budget per node identity, charged once its envelope's signature verified
    /// (so nobody spends another node's budget by naming it): an identity cannot
    /// multiply its budget by sending from many addresses.
    identities: RateLimiter<NodeId>,
    /// Signed deletes and expiry updates applied within their window: never twice.
    seen_changes: SeenChanges,
    seeds: Vec<Address>,
    /// Outbound exchanges awaiting their result, with the deadline each is filed under in
    /// `transmit_deadlines`: a result removes both by key, never by scanning.
    pending: BTreeMap<TransmitId, (Timestamp, Pending)>,
    transmit_deadlines: BTreeSet<(Timestamp, TransmitId)>,
    replication: Replication,
    timers: [Timestamp; TIMERS],
    outputs: VecDeque<Output>,
    next_id: u64,
    /// Seeded from the caller's RNG at start: samples gossip peers, so the simulation
    /// replays exactly.
    rng: ChaCha20Rng,
    stats: NodeStats,
}

impl<B: MessageBackend> Node<B> {
    /// Creates a node. `seeds` are addresses of nodes to register with at start; the node
    /// announces itself to them on the first [`Node::handle_timeout`]. `rng` seeds the
    /// node's own generator for sampling gossip peers.
    pub fn new<R: CryptoRng + ?Sized>(
        config: NodeConfig,
        keys: NodeKeys,
        seeds: Vec<Address>,
        backend: B,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<Self, StoreError> {
        let NodeKeys {
            identity,
            onion,
            tls_key_hash,
            address,
        } = keys;
        let descriptor = Descriptor::sign(
            &identity,
            &onion,
            tls_key_hash,
            address,
            now.plus_millis(config.descriptor_lifetime_ms),
        );
        let words = config.replay_filter_words;
        let replay = ReplayFilter::new(vec![0u64; words].into_boxed_slice())
            .or_else(|_| {
                ReplayFilter::new(vec![0u64; BUCKETS * DEFAULT_WORDS_PER_BUCKET].into_boxed_slice())
            })
            .expect("the default replay filter shape is valid");
        let store = MessageStore::open(backend, config.store.clone())?;
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Ok(Self {
            membership: Membership::new(identity.node_id(), &config),
            sources: RateLimiter::new(config.source_rate.clone()),
            relays: RateLimiter::new(config.relay_rate.clone()),
            anti_entropy: AntiEntropy::default(),
            recipients: RateLimiter::new(config.recipient_rate.clone()),
            strangers: RateLimiter::new(config.stranger_rate.clone()),
            peers: RateLimiter::new(config.peer_rate.clone()),
            identities: RateLimiter::new(config.peer_rate.clone()),
            seen_changes: SeenChanges::new(DEFAULT_SEEN_CAPACITY),
            identity,
            onion,
            address,
            descriptor,
            replay,
            clock: now,
            onion_since: now,
            previous_onion: None,
            signed_envelopes_until: None,
            store,
            seeds,
            pending: BTreeMap::new(),
            transmit_deadlines: BTreeSet::new(),
            replication: Replication::default(),
            // Everything is due at once: the first tick announces and starts timers.
            timers: [now; TIMERS],
            outputs: VecDeque::new(),
            next_id: 1,
            rng: ChaCha20Rng::from_seed(seed),
            stats: NodeStats::default(),
            config,
        })
    }

    /// This node's identity.
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// This node's current signed descriptor.
    #[must_use]
    pub fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    /// Counters for metrics.
    #[must_use]
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// The message store (for metrics and read-only inspection).
    #[must_use]
    pub fn store(&self) -> &MessageStore<B> {
        &self.store
    }

    /// Mutable access to the store's backend, for runtimes that commit in batches.
    pub fn backend_mut(&mut self) -> &mut B {
        self.store.backend_mut()
    }

    /// The directory (known nodes).
    #[must_use]
    pub fn directory(&self) -> &Directory {
        self.membership.directory()
    }

    /// Stores waiting for their write quorum (a gauge of replication lag).
    #[must_use]
    pub fn pending_stores(&self) -> usize {
        self.replication.stores.len()
    }

    /// Outbound exchanges awaiting an answer (a gauge).
    #[must_use]
    pub fn pending_exchanges(&self) -> usize {
        self.pending.len()
    }

    /// `now`, or the latest time an input carried if the clock stepped back since: the
    /// replay filter, signed-change windows, rate limits and timers never see time run
    /// backwards, so a clock step cannot reopen a replay.
    pub(super) fn monotonic(&mut self, now: Timestamp) -> Timestamp {
        if now > self.clock {
            self.clock = now;
        }
        self.clock
    }

    /// Fill ratio of the replay filter (gauge).
    #[must_use]
    pub fn replay_fill_ratio(&self) -> f32 {
        self.replay.fill_ratio()
    }

    /// Signed descriptors of the swarm of `recipient` as this node sees it.
    #[must_use]
    pub fn swarm_of(&self, recipient: &RecipientId) -> Vec<Descriptor> {
        self.swarm_ids(recipient)
            .into_iter()
            .filter_map(|id| self.descriptor_of(&id))
            .collect()
    }

    /// Up to `n` descriptors for a client's first view of the network, this node's own
    /// included.
    pub fn bootstrap<R: CryptoRng + ?Sized>(
        &self,
        now: Timestamp,
        n: usize,
        rng: &mut R,
    ) -> Vec<Descriptor> {
        let mut out = vec![self.descriptor];
        out.extend(
            self.membership
                .directory()
                .bootstrap_set(now, n.saturating_sub(1), rng),
        );
        out
    }

    /// One page of the whole directory for a client that computes swarms itself: up to
    /// `limit` descriptors valid at `now` (this node's own included) whose node IDs follow
    /// `after`, in node-ID order, and the cursor of the next page when more follow. The
    /// listing names no recipient and is the same for every caller, so asking for it
    /// reveals nothing about whom a client writes to.
    #[must_use]
    pub fn directory_page(
        &self,
        now: Timestamp,
        after: Option<NodeId>,
        limit: usize,
    ) -> DirectoryPage {
        let limit = limit.max(1);
        // One more than a page tells whether another follows.
        let mut page: Vec<Descriptor> = self
            .membership
            .directory()
            .descriptors_after(after)
            .filter(|d| d.is_valid_at(now))
            .take(limit + 1)
            .copied()
            .collect();
        let own = self.descriptor;
        if own.is_valid_at(now) && after.is_none_or(|a| own.node_id() > a) {
            let at = page.partition_point(|d| d.node_id() < own.node_id());
            page.insert(at, own);
        }
        let next = (page.len() > limit).then(|| page[limit - 1].node_id());
        page.truncate(limit);
        DirectoryPage {
            nodes: page,
            next,
            pow_difficulty: self.config.pow_difficulty,
        }
    }

    fn next_transmit_id(&mut self) -> TransmitId {
        self.next_id += 1;
        TransmitId(self.next_id)
    }

    fn respond(&mut self, req: RequestId, reply: Reply) {
        self.outputs.push_back(Output::Respond { req, reply });
    }

    fn transmit(
        &mut self,
        now: Timestamp,
        callee: Callee,
        endpoint: Endpoint,
        body: Vec<u8>,
        pending: Pending,
    ) -> TransmitId {
        let (to, address, tls_key_hash) = match callee {
            Callee::Node(d) => (Some(d.node_id()), *d.address(), Some(d.tls_key_hash())),
            Callee::Seed(address) => (None, address, None),
        };
        let id = self.next_transmit_id();
        let timeout = match pending {
            Pending::Forward { .. } => self.config.forward_timeout_ms,
            _ => self.config.store_timeout_ms,
        };
        let deadline = now.plus_millis(timeout);
        self.pending.insert(id, (deadline, pending));
        self.transmit_deadlines.insert((deadline, id));
        self.outputs.push_back(Output::Transmit {
            id,
            to,
            address,
            tls_key_hash,
            endpoint,
            body,
        });
        id
    }

    fn transmit_peer(
        &mut self,
        now: Timestamp,
        to: NodeId,
        request: &PeerRequest,
        pending: Pending,
    ) -> bool {
        let Some(d) = self.membership.directory().get(&to).copied() else {
            return false;
        };
        let overlap = self.signed_envelopes_until.is_some_and(|until| now < until);
        let session = (self.config.session_authenticated_peers && !overlap)
            .then(|| request.encode_session(self.node_id(), now))
            .flatten();
        let body = session.unwrap_or_else(|| request.encode_signed(&self.identity, now));
        self.transmit(now, Callee::Node(d), Endpoint::Peer, body, pending);
        true
    }

    /// The next output to carry out, or `None` when drained.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.outputs.is_empty() && !self.replication.due.is_empty() {
            self.send_due_replications();
        }
        self.outputs.pop_front()
    }

    /// When to call [`Node::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let mut t = self.timers.iter().copied().min();
        let mut consider = |x: Timestamp| t = Some(t.map_or(x, |t| t.min(x)));
        if let Some((d, _)) = self.transmit_deadlines.first() {
            consider(*d);
        }
        if let Some(d) = self.replication.next_wakeup() {
            consider(d);
        }
        if let Some(d) = self.membership.directory().next_wakeup() {
            consider(d);
        }
        if let Some((_, until)) = &self.previous_onion {
            consider(*until);
        }
        if self.config.onion_key_rotation_ms > 0 {
            consider(
                self.onion_since
                    .plus_millis(self.config.onion_key_rotation_ms),
            );
        }
        t
    }

    /// Erases the previous onion key once its grace period is over, and makes a new
    /// onion key when the current one has served its period: a new epoch (the time in
    /// seconds, and always above the last), a new descriptor gossiped at once, the old key
    /// kept for [`NodeConfig::onion_key_grace_ms`].
    fn rotate_onion_key(&mut self, now: Timestamp) {
        if self
            .previous_onion
            .as_ref()
            .is_some_and(|(_, until)| *until <= now)
        {
            self.previous_onion = None;
        }
        let period = self.config.onion_key_rotation_ms;
        if period == 0 || now.millis_since(self.onion_since) < period {
            return;
        }
        let seconds = u32::try_from(now.0 / 1000).unwrap_or(u32::MAX);
        let epoch = Epoch(seconds.max(self.onion.epoch().0.saturating_add(1)));
        let fresh = OnionKey::generate(epoch, &mut self.rng);
        let old = core::mem::replace(&mut self.onion, fresh);
        self.previous_onion = Some((old, now.plus_millis(self.config.onion_key_grace_ms)));
        self.onion_since = now;
        self.publish_descriptor(now, self.descriptor.tls_key_hash());
        self.stats.onion_keys_rotated += 1;
    }

    /// Signs a new descriptor naming the current onion key and `tls_key_hash`, and gossips
    /// it at once: peers (and clients from them) learn a rotated key without waiting a
    /// round. Its expiry is later than the previous descriptor's, so peers take it even
    /// within one epoch.
    fn publish_descriptor(&mut self, now: Timestamp, tls_key_hash: TlsKeyHash) {
        let expires = now
            .plus_millis(self.config.descriptor_lifetime_ms)
            .max(self.descriptor.expires().plus_millis(1));
        self.descriptor = Descriptor::sign(
            &self.identity,
            &self.onion,
            tls_key_hash,
            self.address,
            expires,
        );
        self.timers[Timer::Descriptor as usize] =
            now.plus_millis(self.config.descriptor_lifetime_ms / 2);
        self.timers[Timer::Gossip as usize] = now;
    }

    /// The host's links now present the TLS key hashing to `tls_key_hash` (a rotation, or
    /// a restart within one's overlap): a new descriptor naming it is signed and gossiped
    /// at once, and until `overlap_until` this node signs every peer envelope instead of
    /// letting the session authenticate it, because a peer that still holds the previous
    /// descriptor would refuse a session on the new key. The host keeps serving the
    /// previous key until then too (docs/PROTOCOL.md section 11).
    pub fn rotate_tls_key(
        &mut self,
        now: Timestamp,
        tls_key_hash: TlsKeyHash,
        overlap_until: Timestamp,
    ) {
        let now = self.monotonic(now);
        self.signed_envelopes_until = Some(
            self.signed_envelopes_until
                .map_or(overlap_until, |t| t.max(overlap_until)),
        );
        if self.descriptor.tls_key_hash() == tls_key_hash {
            return;
        }
        self.publish_descriptor(now, tls_key_hash);
        self.stats.tls_keys_rotated += 1;
    }

    /// Whether peer envelopes are signed because a TLS key rotation's overlap runs.
    #[must_use]
    pub fn in_tls_key_overlap(&self, now: Timestamp) -> bool {
        self.signed_envelopes_until.is_some_and(|until| now < until)
    }

    // ----------------------------------------------------------------------------------
    // Onion requests
    // ----------------------------------------------------------------------------------

    /// An onion packet arrived from the IP address `source`. A hop cannot tell a client
    /// from a relay by the packet (that is the point of onion routing), so the rate limit
    /// is chosen by address: a known node's address gets the relay budget, any other the
    /// per-source budget.
    pub fn handle_onion(
        &mut self,
        now: Timestamp,
        req: RequestId,
        source: IpAddr,
        packet: &mut [u8; PACKET_LEN],
    ) {
        let now = self.monotonic(now);
        let limited = if self.is_node_address(source) {
            self.relays.check(source, now).is_err()
        } else {
            self.sources.check(source, now).is_err()
        };
        if limited {
            self.stats.rate_limited += 1;
            self.respond(req, Reply::RateLimited);
            return;
        }
        let previous = self.previous_onion.as_ref().map(|(key, _)| key);
        match packet::peel_with_previous(&self.onion, previous, &mut self.replay, now, packet) {
            Err(e) => {
                let i = PeelError::ALL.iter().position(|x| *x == e).unwrap_or(0);
                self.stats.packets_dropped[i] += 1;
                self.respond(req, Reply::Dropped);
            }
            Ok(Peeled::Forward {
                next_hop,
                packet,
                reply_key,
                reply_len,
            }) => {
                let reply = ReplyTo {
                    key: reply_key,
                    len: reply_len,
                };
                self.stats.packets_peeled += 1;
                let target = self.descriptor_of(&next_hop);
                match target {
                    Some(d) if next_hop != self.node_id() => {
                        self.stats.packets_forwarded += 1;
                        let body = packet.to_vec();
                        self.transmit(
                            now,
                            Callee::Node(d),
                            Endpoint::Onion,
                            body,
                            Pending::Forward { req, reply },
                        );
                    }
                    _ => self.respond_failure(req, &reply, HopFailure::NextHopUnreachable),
                }
            }
            Ok(Peeled::Deliver {
                payload,
                reply_key,
                reply_len,
            }) => {
                self.stats.packets_peeled += 1;
                self.stats.packets_delivered += 1;
                let payload = payload.to_vec();
                let reply = ReplyTo {
                    key: reply_key,
                    len: reply_len,
                };
                self.execute(now, req, &payload, reply);
            }
        }
    }

    fn respond_failure(&mut self, req: RequestId, to: &ReplyTo, failure: HopFailure) {
        let mut out = vec![0u8; to.len];
        reply::seal(&to.key, ReplyStatus::Failed(failure), &[], &mut out)
            .expect("an empty failure fits every bucket");
        self.respond(req, Reply::Onion(out));
    }

    fn respond_sealed(&mut self, req: RequestId, to: &ReplyTo, response: &Response) {
        let mut body = Vec::new();
        response.encode(&mut body);
        if body.len() > reply::body_capacity(to.len) {
            // Retrieves size their pages to the reply; anything else (a redirect listing
            // a large swarm, a store's receipts) asks for a larger reply.
            self.stats.requests_refused += 1;
            body.clear();
            Response::Refused(RequestError::ReplyTooSmall).encode(&mut body);
        }
        let mut out = vec![0u8; to.len];
        reply::seal(&to.key, ReplyStatus::Response, &body, &mut out)
            .expect("the body fits the reply, checked above");
        self.respond(req, Reply::Onion(out));
    }

    fn refuse(&mut self, req: RequestId, to: &ReplyTo, e: RequestError) {
        self.stats.requests_refused += 1;
        if e == RequestError::RateLimited {
            self.stats.rate_limited += 1;
        }
        self.respond_sealed(req, to, &Response::Refused(e));
    }

    /// Executes a request delivered to this node as the final hop.
    fn execute(&mut self, now: Timestamp, req: RequestId, payload: &[u8], key: ReplyTo) {
        let signed = match SignedRequest::decode(payload) {
            Ok(s) => s,
            Err(e) => return self.refuse(req, &key, e),
        };
        if let Err(e) = signed.authenticate(now, self.config.auth_window_ms) {
            return self.refuse(req, &key, e);
        }
        let request = signed.request;
        let signature = signed.signature();
        if let Some(recipient) = request.recipient()
            && !self.in_swarm(&recipient)
        {
            self.stats.redirects += 1;
            let swarm = self.swarm_of(&recipient);
            return self.respond_sealed(req, &key, &Response::Redirect { swarm });
        }
        match request {
            Request::Info => {
                let r = Response::Info {
                    version: PROTOCOL_VERSION,
                    node_time: now,
                    node: self.node_id(),
                    pow_difficulty: self.config.pow_difficulty,
                };
                self.respond_sealed(req, &key, &r);
            }
            Request::SwarmLookup { recipient } => {
                let members = self.swarm_of(&recipient);
                self.respond_sealed(req, &key, &Response::Swarm { members });
            }
            Request::Store(s) => {
                if !pow_satisfied(&s, self.config.pow_difficulty) {
                    return self.refuse(req, &key, RequestError::InsufficientPow);
                }
                if self.recipients.check(s.recipient, now).is_err() {
                    return self.refuse(req, &key, RequestError::RateLimited);
                }
                let message = WireMessage {
                    recipient: s.recipient,
                    namespace: s.namespace,
                    stored_at: now,
                    expiry: now.plus_millis(s.ttl_ms),
                    body: s.body.to_vec(),
                    origin: Origin::of(&s, signature),
                };
                if s.ttl_ms > self.config.store.max_ttl_ms {
                    return self.refuse(req, &key, RequestError::TtlTooLong);
                }
                self.start_store(now, req, key, message);
            }
            Request::Retrieve(r) => {
                self.stats.retrieves += 1;
                let budget = reply::body_capacity(key.len).saturating_sub(Response::MESSAGES_FIXED);
                let (messages, more) = match self.store.retrieve(
                    &r.recipient,
                    r.namespace,
                    r.after,
                    usize::from(r.limit),
                    now,
                ) {
                    Ok(page) => fit_page(page.messages, page.more, budget),
                    Err(e) => return self.refuse(req, &key, store_error(e)),
                };
                if messages.is_empty() && more {
                    // Not even the next message fits the reply asked for: an empty page
                    // saying "more" would be asked for again and again.
                    return self.refuse(req, &key, RequestError::ReplyTooSmall);
                }
                self.respond_sealed(req, &key, &Response::Messages { messages, more });
            }
            Request::Delete(_) | Request::UpdateExpiry(_) => {
                if !self.first_application(now, &request, signature) {
                    return self.refuse(req, &key, RequestError::AlreadyApplied);
                }
                let count = match self.apply_change(now, &request, payload) {
                    Ok(n) => n,
                    Err(e) => return self.refuse(req, &key, e),
                };
                // The other members apply the same signed request themselves; a member that
                // does not confirm is asked again while the signature's window lasts.
                let until = request
                    .timestamp()
                    .map_or(now, |ts| ts.plus_millis(self.config.auth_window_ms));
                for peer in self.swarm_ids(&request.recipient().expect("changes name a recipient"))
                {
                    if peer != self.node_id() {
                        self.send_relay(now, peer, payload.to_vec(), until);
                    }
                }
                let r = match request {
                    Request::Delete(_) => Response::Deleted { count },
                    _ => Response::ExpiryUpdated { count },
                };
                self.respond_sealed(req, &key, &r);
            }
        }
    }

    /// Records an authenticated change; false when it was applied here already (then it
    /// must not be applied again: a captured delete-all replayed inside its window, by
    /// anyone who saw it, deletes nothing new).
    fn first_application(
        &mut self,
        now: Timestamp,
        request: &Request<'_>,
        signature: Option<[u8; 64]>,
    ) -> bool {
        let (Some(sig), Some(ts)) = (signature, request.timestamp()) else {
            return true;
        };
        let until = ts.plus_millis(self.config.auth_window_ms);
        let before = self.seen_changes.evicted_early();
        let first = self.seen_changes.insert(SeenChanges::key(&sig), until, now);
        self.stats.seen_changes_evicted += self.seen_changes.evicted_early() - before;
        if !first {
            self.stats.changes_already_applied += 1;
        }
        first
    }

    /// Applies an authenticated delete or expiry update (`signed`: its bytes as the owner
    /// signed them, kept with a delete's tombstones as evidence) to the local store.
    fn apply_change(
        &mut self,
        now: Timestamp,
        request: &Request<'_>,
        signed: &[u8],
    ) -> Result<u32, RequestError> {
        let n = match request {
            Request::Delete(d) => self.store.apply_delete(d, signed, now),
            Request::UpdateExpiry(u) => {
                let latest = now.plus_millis(self.config.store.max_ttl_ms);
                if u.expiry > latest {
                    return Err(RequestError::TtlTooLong);
                }
                self.store
                    .update_expiry(&u.recipient, u.namespace, u.hashes.iter(), u.expiry, now)
            }
            _ => return Err(RequestError::Malformed),
        };
        n.map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            .map_err(store_error)
    }

    // ----------------------------------------------------------------------------------
    // Peer requests
    // ----------------------------------------------------------------------------------

    /// Whether `source` is over its `/v1/peer` or registration budget. A request from a
    /// live node's address, or naming a live node as its sender (nodes may advertise
    /// host names, whose addresses are not known here), draws on the source's peer
    /// budget; any other on its much smaller stranger budget. Checked before anything is
    /// decoded or verified, so a flood costs a token-bucket lookup per request; a
    /// stranger claiming a live node's ID still pays for its signature check out of its
    /// own address's budget only.
    fn peer_limited(&mut self, source: IpAddr, claimed: Option<NodeId>, now: Timestamp) -> bool {
        let known = claimed.is_some_and(|id| self.membership.directory().contains(&id))
            || self.is_node_address(source);
        let limited = if known {
            self.peers.check(source, now).is_err()
        } else {
            self.strangers.check(source, now).is_err()
        };
        if limited {
            self.stats.peer_rate_limited += 1;
        }
        limited
    }

    /// A peer request arrived on `/v1/peer` from `source`, over a connection authenticated
    /// as `session`.
    pub fn handle_peer(
        &mut self,
        now: Timestamp,
        req: RequestId,
        source: IpAddr,
        session: peer::Session,
        bytes: &[u8],
    ) {
        let now = self.monotonic(now);
        let claimed = peer::claimed_sender(bytes);
        if self.peer_limited(source, claimed, now) {
            return self.respond(req, Reply::PeerRefused(PeerError::RateLimited));
        }
        // A closed network talks to its members only, gossip and probes included.
        if claimed.is_some_and(|id| !self.membership.directory().admits(&id)) {
            return self.respond(req, Reply::PeerRefused(PeerError::UnknownSender));
        }
        let directory = &self.membership.directory();
        let decoded = peer::decode_request(bytes, now, self.config.auth_window_ms, session, |id| {
            directory.get(id).map(Descriptor::tls_key_hash)
        });
        let auth = match decoded {
            Ok(a) => a,
            // Not an envelope from a node at all: refused outright, nothing is decoded further.
            Err(e) => return self.respond(req, Reply::PeerRefused(e)),
        };
        if bytes.get(1).is_some_and(|k| k & peer::KIND_SESSION != 0) {
            self.stats.peer_session_envelopes += 1;
        }
        if self.identities.check(auth.sender, now).is_err() {
            self.stats.peer_rate_limited += 1;
            return self.respond(req, Reply::PeerRefused(PeerError::RateLimited));
        }
        let known = self.membership.directory().contains(&auth.sender);
        let response = match auth.request {
            PeerRequest::Gossip(ds) => self.gossip_received(now, auth.sender, ds),
            PeerRequest::Probe { nonce } => PeerResponse::Alive {
                descriptor: Box::new(self.descriptor.into()),
                signature: peer::prove_alive(&self.identity, &nonce, &auth.sender),
            },
            _ if !known => PeerResponse::Refused(PeerError::UnknownSender),
            PeerRequest::Replicate(ms) => return self.accept_replicas(now, req, auth.sender, ms),
            PeerRequest::Digest { digest, start } => self.digest_diff(&auth.sender, &digest, start),
            PeerRequest::Fetch(hashes) => {
                let ms = hashes
                    .iter()
                    .take(MAX_BATCH)
                    .filter_map(|h| self.store.get(h, now).ok().flatten())
                    .map(to_wire)
                    .collect();
                PeerResponse::Messages(ms)
            }
            PeerRequest::Relay(bytes) => self.apply_relay(now, &bytes),
            PeerRequest::Tombstones(entries) => self.apply_tombstones(now, &entries),
        };
        self.respond(req, Reply::Peer(response.encode()));
    }

    // ----------------------------------------------------------------------------------
    // Answers to our own requests
    // ----------------------------------------------------------------------------------

    /// An outbound exchange finished: `Ok(body)` with the peer's answer, or a failure.
    pub fn handle_transmit_result(
        &mut self,
        now: Timestamp,
        id: TransmitId,
        result: Result<Vec<u8>, TransmitFailure>,
    ) {
        let now = self.monotonic(now);
        let Some((deadline, pending)) = self.pending.remove(&id) else {
            return; // Already timed out.
        };
        self.transmit_deadlines.remove(&(deadline, id));
        match pending {
            Pending::Forward { req, reply } => self.finish_forward(req, &reply, result),
            Pending::Replicate { ops, peer } => self.replica_answered(now, &ops, peer, result),
            Pending::Digest { peer, mine } => self.digest_answered(now, peer, &mine, result),
            Pending::Fetch { peer, asked } => self.fetch_answered(now, peer, &asked, result),
            Pending::Gossip => self.gossip_answered(now, result),
            Pending::Probe { peer, nonce } => self.probe_answered(now, peer, &nonce, result),
            Pending::Relay {
                peer,
                change,
                until,
            } => self.relay_answered(now, peer, change, until, result),
            Pending::Handoff => {}
        }
    }

    fn finish_forward(
        &mut self,
        req: RequestId,
        to: &ReplyTo,
        result: Result<Vec<u8>, TransmitFailure>,
    ) {
        match result {
            Ok(mut body) => {
                if reply::add_layer(&to.key, &mut body, to.len).is_ok() {
                    self.respond(req, Reply::Onion(body));
                } else {
                    // Empty (the next hop dropped the packet) or of another length than
                    // the client asked for (a hop marking the reply): not passed back.
                    self.stats.replies_refused += 1;
                    self.respond_failure(req, to, HopFailure::NextHopBadReply);
                }
            }
            Err(TransmitFailure::Timeout) => {
                self.respond_failure(req, to, HopFailure::NextHopTimeout)
            }
            Err(TransmitFailure::Unreachable) => {
                self.respond_failure(req, to, HopFailure::NextHopUnreachable);
            }
            Err(TransmitFailure::Refused { .. }) => {
                self.respond_failure(req, to, HopFailure::NextHopRefused);
            }
        }
    }

    // ----------------------------------------------------------------------------------
    // Timers
    // ----------------------------------------------------------------------------------

    /// Time passed: expire exchanges, retry replications, run periodic duties. Calling it
    /// early or twice does nothing extra.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let now = self.monotonic(now);
        while let Some(&(deadline, id)) = self.transmit_deadlines.first() {
            if deadline > now {
                break;
            }
            self.transmit_deadlines.pop_first();
            if self.pending.contains_key(&id) {
                self.handle_transmit_result(now, id, Err(TransmitFailure::Timeout));
            }
        }
        self.retry_replication(now);
        self.rotate_onion_key(now);
        if self.timers[Timer::Descriptor as usize] <= now {
            self.timers[Timer::Descriptor as usize] =
                now.plus_millis(self.config.descriptor_lifetime_ms / 2);
            if self.descriptor.expires().millis_since(now) < self.config.descriptor_lifetime_ms / 2
            {
                self.descriptor = Descriptor::sign(
                    &self.identity,
                    &self.onion,
                    self.descriptor.tls_key_hash(),
                    self.address,
                    now.plus_millis(self.config.descriptor_lifetime_ms),
                );
            }
        }
        if self.timers[Timer::Gossip as usize] <= now {
            self.timers[Timer::Gossip as usize] = now.plus_millis(self.config.gossip_interval_ms);
            self.gossip(now);
        }
        if self.timers[Timer::Probe as usize] <= now {
            self.timers[Timer::Probe as usize] =
                now.plus_millis(self.config.directory.probe_interval_ms);
        }
        self.probe_and_evict(now);
        if self.timers[Timer::AntiEntropy as usize] <= now {
            self.timers[Timer::AntiEntropy as usize] =
                now.plus_millis(self.config.anti_entropy_interval_ms);
            self.anti_entropy(now);
        }
        if self.timers[Timer::Expire as usize] <= now {
            self.timers[Timer::Expire as usize] =
                now.plus_millis(self.config.expiry_sweep_interval_ms);
            if let Ok(n) = self.store.expire(now, self.config.max_expired_per_sweep) {
                self.stats.messages_expired += n as u64;
            }
        }
    }
}

/// Drops trailing messages so the encoded page fits `budget` bytes.
fn fit_page(
    mut messages: Vec<StoredMessage>,
    mut more: bool,
    budget: usize,
) -> (Vec<MessageView>, bool) {
    let mut used = 0;
    let mut keep = 0;
    for m in &messages {
        let size = Response::MESSAGE_OVERHEAD + m.body.len();
        if used + size > budget {
            more = true;
            break;
        }
        used += size;
        keep += 1;
    }
    messages.truncate(keep);
    let views = messages
        .into_iter()
        .map(|m| MessageView {
            seq: m.seq,
            hash: m.hash,
            stored_at: m.stored_at,
            expiry: m.expiry,
            body: m.body,
        })
        .collect();
    (views, more)
}

fn to_wire(m: StoredMessage) -> WireMessage {
    WireMessage {
        recipient: m.recipient,
        namespace: m.namespace,
        stored_at: m.stored_at,
        expiry: m.expiry,
        body: m.body,
        origin: m.origin,
    }
}

fn new_message(m: &WireMessage) -> NewMessage<'_> {
    NewMessage {
        recipient: m.recipient,
        namespace: m.namespace,
        body: &m.body,
        origin: m.origin,
        stored_at: m.stored_at,
        expiry: m.expiry,
    }
}

fn copy_refusal(e: StoreError) -> CopyRefusal {
    match e {
        StoreError::TtlTooLong => CopyRefusal::TtlTooLong,
        StoreError::BodyTooLarge => CopyRefusal::BodyTooLarge,
        StoreError::QuotaExceeded => CopyRefusal::QuotaExceeded,
        StoreError::NodeFull => CopyRefusal::NodeFull,
        StoreError::Expired => CopyRefusal::Expired,
        StoreError::Deleted => CopyRefusal::Deleted,
        _ => CopyRefusal::Unavailable,
    }
}

fn store_error(e: StoreError) -> RequestError {
    match e {
        StoreError::TtlTooLong => RequestError::TtlTooLong,
        StoreError::BodyTooLarge => RequestError::BodyTooLarge,
        StoreError::QuotaExceeded => RequestError::QuotaExceeded,
        StoreError::NodeFull => RequestError::NodeFull,
        StoreError::Deleted => RequestError::Deleted,
        _ => RequestError::Unavailable,
    }
}

#[cfg(test)]
mod tests;
