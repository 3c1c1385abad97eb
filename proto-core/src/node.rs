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
use crate::types::{MessageHash, NodeId, RecipientId, Timestamp};

/// Protocol version reported by `info`.
pub const PROTOCOL_VERSION: u16 = 1;

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
    /// Words of the replay filter (default `BUCKETS × 2^15`, 3 MiB).
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
            pow_difficulty: 0,
            forward_timeout_ms: 15_000,
            store_timeout_ms: 5_000,
            replication_retry_ms: 500,
            anti_entropy_interval_ms: 30_000,
            gossip_interval_ms: 15_000,
            expiry_sweep_interval_ms: 10_000,
            max_expired_per_sweep: 10_000,
            descriptor_lifetime_ms: 3_600_000,
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

/// A node's keys and where it listens.
#[derive(Debug)]
pub struct NodeKeys {
    /// The long-lived identity key.
    pub identity: IdentityKey,
    /// The current onion key (a runtime persists it; a node restarted without its replay
    /// filter must use a fresh one).
    pub onion: OnionKey,
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
    pub packets_dropped: [u64; 6],
    /// Requests refused by a rate limit.
    pub rate_limited: u64,
    /// `/v1/peer` requests and registrations refused by their source's rate limit.
    pub peer_rate_limited: u64,
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
    /// A closed network, and the node is not on this node's allowlist.
    NotAdmitted,
}

impl RegisterError {
    /// A stable machine-readable name (used as the HTTP error code).
    #[must_use]
    pub const fn code(self) -> &'static str {
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

/// What a pending outbound exchange was for.
#[derive(Debug)]
enum Pending {
    Forward {
        req: RequestId,
        reply_key: ReplyKey,
    },
    Replicate {
        op: u64,
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

/// A store waiting for its write quorum.
#[derive(Debug)]
struct PendingStore {
    req: RequestId,
    reply_key: ReplyKey,
    message: WireMessage,
    hash: MessageHash,
    started: Timestamp,
    deadline: Timestamp,
    /// Whether this node's own copy is durable and its receipt counted.
    local_durable: bool,
    /// Sequence of the local write; durable once the store reports it.
    local_seq: u64,
    receipts: Vec<Receipt>,
    /// Members still to confirm, with the time of the next attempt (None: in flight).
    peers: BTreeMap<NodeId, Option<Timestamp>>,
}

/// A replication request answered once the copies are durable.
#[derive(Debug)]
struct PendingReplicaAck {
    req: RequestId,
    max_seq: u64,
    items: Vec<(MessageHash, RecipientId, Timestamp)>,
    refused: Vec<(MessageHash, CopyRefusal)>,
}

/// Digests of the messages shared with each peer, kept up to date from the store's
/// change log, valid for one ring generation.
#[derive(Debug, Default)]
struct DigestCache {
    ring_generation: Option<u64>,
    by_peer: BTreeMap<NodeId, (Digest, usize)>,
}

impl DigestCache {
    /// Counts `hash` in (or out of) the digest of every other member of `swarm`, when
    /// this node (`me`) is a member.
    fn apply(&mut self, me: NodeId, swarm: &[NodeId], hash: &MessageHash, added: bool) {
        if !swarm.contains(&me) {
            return;
        }
        for peer in swarm.iter().filter(|p| **p != me) {
            let (digest, count) = self.by_peer.entry(*peer).or_default();
            if added {
                digest.add(hash);
                *count += 1;
            } else {
                digest.remove(hash);
                *count = count.saturating_sub(1);
            }
        }
    }
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
    address: Address,
    descriptor: Descriptor,
    replay: ReplayFilter<Box<[u64]>>,
    ring: Ring,
    directory: Directory,
    store: MessageStore<B>,
    sources: RateLimiter<IpAddr>,
    relays: RateLimiter<IpAddr>,
    digests: DigestCache,
    /// IP addresses of known nodes, rebuilt when the directory's generation changes.
    node_ips: (u64, BTreeSet<IpAddr>),
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
    pending: BTreeMap<TransmitId, Pending>,
    transmit_deadlines: BTreeSet<(Timestamp, TransmitId)>,
    stores: BTreeMap<u64, PendingStore>,
    replica_acks: Vec<PendingReplicaAck>,
    /// Relayed changes to send again: (when, to whom, the signed change, until when).
    relay_retries: Vec<(Timestamp, NodeId, Vec<u8>, Timestamp)>,
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
            address,
        } = keys;
        let descriptor = Descriptor::sign(
            &identity,
            &onion,
            address,
            now.plus_millis(config.descriptor_lifetime_ms),
        );
        let words = config.replay_filter_words;
        let replay = ReplayFilter::new(vec![0u64; words].into_boxed_slice())
            .or_else(|_| {
                ReplayFilter::new(vec![0u64; BUCKETS * DEFAULT_WORDS_PER_BUCKET].into_boxed_slice())
            })
            .expect("the default replay filter shape is valid");
        let mut ring = Ring::new(config.vnodes);
        ring.insert(identity.node_id());
        let store = MessageStore::open(backend, config.store.clone())?;
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Ok(Self {
            directory: Directory::new(identity.node_id(), config.directory.clone()),
            sources: RateLimiter::new(config.source_rate.clone()),
            relays: RateLimiter::new(config.relay_rate.clone()),
            digests: DigestCache::default(),
            node_ips: (u64::MAX, BTreeSet::new()),
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
            ring,
            store,
            seeds,
            pending: BTreeMap::new(),
            transmit_deadlines: BTreeSet::new(),
            stores: BTreeMap::new(),
            replica_acks: Vec::new(),
            relay_retries: Vec::new(),
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
        &self.directory
    }

    /// Stores waiting for their write quorum (a gauge of replication lag).
    #[must_use]
    pub fn pending_stores(&self) -> usize {
        self.stores.len()
    }

    /// Outbound exchanges awaiting an answer (a gauge).
    #[must_use]
    pub fn pending_exchanges(&self) -> usize {
        self.pending.len()
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
        out.extend(self.directory.bootstrap_set(now, n.saturating_sub(1), rng));
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
            .directory
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

    fn descriptor_of(&self, id: &NodeId) -> Option<Descriptor> {
        if *id == self.node_id() {
            Some(self.descriptor)
        } else {
            self.directory.get(id).copied()
        }
    }

    /// Runs `f` on `recipient`'s swarm without allocating when K ≤ 16 (scans call this
    /// once per stored message).
    fn with_swarm<T>(&self, recipient: &RecipientId, f: impl FnOnce(&[NodeId]) -> T) -> T {
        const STACK_K: usize = 16;
        if self.config.swarm_size <= STACK_K {
            let mut buf = [NodeId::default(); STACK_K];
            let n = self
                .ring
                .swarm(recipient, &mut buf[..self.config.swarm_size]);
            f(&buf[..n])
        } else {
            f(&self.swarm_ids(recipient))
        }
    }

    fn swarm_ids(&self, recipient: &RecipientId) -> Vec<NodeId> {
        let mut out = vec![NodeId::default(); self.config.swarm_size];
        let n = self.ring.swarm(recipient, &mut out);
        out.truncate(n);
        out
    }

    fn in_swarm(&self, recipient: &RecipientId) -> bool {
        let me = self.node_id();
        self.with_swarm(recipient, |ids| ids.contains(&me))
    }

    /// Whether `ip` is the address of a node in the directory (descriptors whose address
    /// is an IP literal; a host name cannot be matched without resolving it).
    fn is_node_address(&mut self, ip: IpAddr) -> bool {
        let generation = self.directory.generation();
        if self.node_ips.0 != generation {
            let ips = self
                .directory
                .descriptors()
                .filter_map(|d| d.address().as_str().parse::<SocketAddr>().ok())
                .map(|a| a.ip())
                .collect();
            self.node_ips = (generation, ips);
        }
        self.node_ips.1.contains(&ip)
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
        to: Option<NodeId>,
        address: Address,
        endpoint: Endpoint,
        body: Vec<u8>,
        pending: Pending,
    ) -> TransmitId {
        let id = self.next_transmit_id();
        let timeout = match pending {
            Pending::Forward { .. } => self.config.forward_timeout_ms,
            _ => self.config.store_timeout_ms,
        };
        self.pending.insert(id, pending);
        self.transmit_deadlines
            .insert((now.plus_millis(timeout), id));
        self.outputs.push_back(Output::Transmit {
            id,
            to,
            address,
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
        let Some(d) = self.directory.get(&to).copied() else {
            return false;
        };
        let body = request.encode_signed(&self.identity, now);
        self.transmit(now, Some(to), *d.address(), Endpoint::Peer, body, pending);
        true
    }

    /// The next output to carry out, or `None` when drained.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
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
        for s in self.stores.values() {
            consider(s.deadline);
            for at in s.peers.values().flatten() {
                consider(*at);
            }
        }
        if let Some(d) = self.directory.next_wakeup() {
            consider(d);
        }
        for (at, ..) in &self.relay_retries {
            consider(*at);
        }
        t
    }

    fn send_relay(&mut self, now: Timestamp, peer: NodeId, change: Vec<u8>, until: Timestamp) {
        let request = PeerRequest::Relay(change.clone());
        self.transmit_peer(
            now,
            peer,
            &request,
            Pending::Relay {
                peer,
                change,
                until,
            },
        );
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
        match packet::peel(&self.onion, &mut self.replay, now, packet) {
            Err(e) => {
                let i = PeelError::ALL.iter().position(|x| *x == e).unwrap_or(0);
                self.stats.packets_dropped[i] += 1;
                self.respond(req, Reply::Dropped);
            }
            Ok(Peeled::Forward {
                next_hop,
                packet,
                reply_key,
            }) => {
                self.stats.packets_peeled += 1;
                let target = self.descriptor_of(&next_hop);
                match target {
                    Some(d) if next_hop != self.node_id() => {
                        self.stats.packets_forwarded += 1;
                        let body = packet.to_vec();
                        self.transmit(
                            now,
                            Some(next_hop),
                            *d.address(),
                            Endpoint::Onion,
                            body,
                            Pending::Forward { req, reply_key },
                        );
                    }
                    _ => self.respond_failure(req, &reply_key, HopFailure::NextHopUnreachable),
                }
            }
            Ok(Peeled::Deliver { payload, reply_key }) => {
                self.stats.packets_peeled += 1;
                self.stats.packets_delivered += 1;
                let payload = payload.to_vec();
                self.execute(now, req, &payload, reply_key);
            }
        }
    }

    fn respond_failure(&mut self, req: RequestId, key: &ReplyKey, failure: HopFailure) {
        let mut out = vec![0u8; reply::REPLY_BUCKETS[0]];
        let n = reply::seal(key, ReplyStatus::Failed(failure), &[], &mut out)
            .expect("an empty failure fits the smallest bucket");
        out.truncate(n);
        self.respond(req, Reply::Onion(out));
    }

    fn respond_sealed(&mut self, req: RequestId, key: &ReplyKey, response: &Response) {
        let mut body = Vec::new();
        response.encode(&mut body);
        if body.len() > reply::MAX_REPLY_BODY {
            // Retrieves size themselves below the limit; anything else is a bug, and the
            // client still gets a well-formed answer.
            body.clear();
            Response::Refused(RequestError::Unavailable).encode(&mut body);
        }
        let len = reply::bucket_for(body.len()).expect("body checked against MAX_REPLY_BODY");
        let mut out = vec![0u8; len];
        reply::seal(key, ReplyStatus::Response, &body, &mut out).expect("bucket sized for body");
        self.respond(req, Reply::Onion(out));
    }

    fn refuse(&mut self, req: RequestId, key: &ReplyKey, e: RequestError) {
        self.stats.requests_refused += 1;
        if e == RequestError::RateLimited {
            self.stats.rate_limited += 1;
        }
        self.respond_sealed(req, key, &Response::Refused(e));
    }

    /// Executes a request delivered to this node as the final hop.
    fn execute(&mut self, now: Timestamp, req: RequestId, payload: &[u8], key: ReplyKey) {
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
                let budget = reply::MAX_REPLY_BODY - Response::MESSAGES_FIXED;
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
    // Stores and replication
    // ----------------------------------------------------------------------------------

    fn start_store(&mut self, now: Timestamp, req: RequestId, key: ReplyKey, message: WireMessage) {
        let inserted = match self.store.insert(new_message(&message), now) {
            Ok(i) => i,
            Err(e) => return self.refuse(req, &key, store_error(e)),
        };
        let mut message = message;
        // A duplicate keeps its original timestamps and origin, so every member signs the
        // same expiry and checks the request that first stored it.
        message.stored_at = inserted.stored_at;
        message.expiry = inserted.expiry;
        message.origin = inserted.origin;
        let op = self.next_id;
        self.next_id += 1;
        let members = self.swarm_ids(&message.recipient);
        let peers = members
            .into_iter()
            .filter(|m| *m != self.node_id())
            .map(|m| (m, Some(now)))
            .collect();
        self.stores.insert(
            op,
            PendingStore {
                req,
                reply_key: key,
                hash: inserted.hash,
                message,
                started: now,
                deadline: now.plus_millis(self.config.store_timeout_ms),
                local_durable: false,
                local_seq: inserted.seq,
                receipts: Vec::new(),
                peers,
            },
        );
        self.advance_store(now, op);
    }

    /// Sends due replications, counts the local receipt once durable, and answers the
    /// client when the quorum is met or the deadline passed.
    fn advance_store(&mut self, now: Timestamp, op: u64) {
        let durable_seq = self.store.durable_seq();
        let Some(s) = self.stores.get_mut(&op) else {
            return;
        };
        if !s.local_durable && s.local_seq <= durable_seq {
            s.local_durable = true;
            let r = Receipt::sign(
                &self.identity,
                &s.hash,
                &s.message.recipient,
                s.message.expiry,
            );
            s.receipts.push(r);
        }
        if s.receipts.len() >= self.config.write_quorum {
            let s = self.stores.remove(&op).expect("present above");
            self.stats.stores_acked += 1;
            let latency = now.millis_since(s.started);
            self.stats.quorum_latency_ms_total += latency;
            let bucket = QUORUM_LATENCY_BOUNDS_MS
                .iter()
                .position(|&bound| latency <= bound)
                .unwrap_or(QUORUM_LATENCY_BOUNDS_MS.len());
            self.stats.quorum_latency_buckets[bucket] += 1;
            let ack = StoreAck {
                hash: s.hash,
                expiry: s.message.expiry,
                receipts: s.receipts,
            };
            // Members that have not confirmed yet keep getting the message through
            // anti-entropy; nothing else waits on them.
            return self.respond_sealed(s.req, &s.reply_key, &Response::Stored(ack));
        }
        if now >= s.deadline {
            let s = self.stores.remove(&op).expect("present above");
            self.stats.stores_failed += 1;
            return self.refuse(s.req, &s.reply_key, RequestError::QuorumNotReached);
        }
        let due: Vec<NodeId> = s
            .peers
            .iter()
            .filter(|(_, at)| at.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        let message = s.message.clone();
        for peer in due {
            let request = PeerRequest::Replicate(vec![message.clone()]);
            let sent = self.transmit_peer(now, peer, &request, Pending::Replicate { op, peer });
            let retry = now.plus_millis(self.config.replication_retry_ms);
            if let Some(s) = self.stores.get_mut(&op) {
                s.peers.insert(peer, if sent { None } else { Some(retry) });
            }
            if sent {
                self.stats.replications_sent += 1;
            }
        }
    }

    /// The store backend made writes durable (group commit): release what waited on it.
    pub fn handle_durable(&mut self, now: Timestamp) {
        let ops: Vec<u64> = self.stores.keys().copied().collect();
        for op in ops {
            self.advance_store(now, op);
        }
        self.release_replica_acks();
    }

    fn release_replica_acks(&mut self) {
        let durable = self.store.durable_seq();
        let (ready, waiting): (Vec<_>, Vec<_>) = core::mem::take(&mut self.replica_acks)
            .into_iter()
            .partition(|a| a.max_seq <= durable);
        self.replica_acks = waiting;
        for a in ready {
            let receipts = a
                .items
                .iter()
                .map(|(h, r, e)| (*h, Receipt::sign(&self.identity, h, r, *e)))
                .collect();
            let answer = PeerResponse::Stored {
                receipts,
                refused: a.refused,
            };
            self.respond(a.req, Reply::Peer(answer.encode()));
        }
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
        let known =
            claimed.is_some_and(|id| self.directory.contains(&id)) || self.is_node_address(source);
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

    /// A peer request arrived on `/v1/peer` from `source`.
    pub fn handle_peer(&mut self, now: Timestamp, req: RequestId, source: IpAddr, bytes: &[u8]) {
        let claimed = peer::claimed_sender(bytes);
        if self.peer_limited(source, claimed, now) {
            return self.respond(req, Reply::PeerRefused(PeerError::RateLimited));
        }
        // A closed network talks to its members only, gossip and probes included.
        if claimed.is_some_and(|id| !self.directory.admits(&id)) {
            return self.respond(req, Reply::PeerRefused(PeerError::UnknownSender));
        }
        let directory = &self.directory;
        let decoded = peer::decode_request(bytes, now, self.config.auth_window_ms, |id| {
            directory.contains(id)
        });
        let auth = match decoded {
            Ok(a) => a,
            // Not an envelope from a node at all: refused outright, nothing is decoded further.
            Err(e) => return self.respond(req, Reply::PeerRefused(e)),
        };
        if self.identities.check(auth.sender, now).is_err() {
            self.stats.peer_rate_limited += 1;
            return self.respond(req, Reply::PeerRefused(PeerError::RateLimited));
        }
        let known = self.directory.contains(&auth.sender);
        let response = match auth.request {
            PeerRequest::Gossip(ds) => {
                // A node's own descriptor first is how it registers: that lifts its
                // quarantine, and it becomes a candidate that must still answer a probe.
                // Gossip proves nothing about liveness, so it refreshes none.
                if ds.first().is_some_and(|d| d.node_id() == auth.sender) {
                    self.directory.lift_quarantine(&auth.sender);
                }
                self.merge_descriptors(now, ds);
                let mut sample = vec![self.descriptor];
                let targets = self
                    .directory
                    .gossip_targets(&mut self.rng, peer::MAX_GOSSIP - 1);
                sample.extend(
                    targets
                        .iter()
                        .filter_map(|id| self.directory.get(id).copied()),
                );
                PeerResponse::Descriptors(sample.into_iter().map(Into::into).collect())
            }
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

    fn apply_relay(&mut self, now: Timestamp, bytes: &[u8]) -> PeerResponse {
        let Ok(signed) = SignedRequest::decode(bytes) else {
            return PeerResponse::Refused(PeerError::Malformed);
        };
        if signed
            .authenticate(now, self.config.auth_window_ms)
            .is_err()
        {
            return PeerResponse::Refused(PeerError::BadSignature);
        }
        if !self.first_application(now, &signed.request, signed.signature()) {
            return PeerResponse::Applied(0);
        }
        match self.apply_change(now, &signed.request, bytes) {
            Ok(n) => PeerResponse::Applied(n),
            Err(_) => PeerResponse::Refused(PeerError::Malformed),
        }
    }

    /// A peer shows the owners' signed deletes of messages this node still holds (it
    /// missed them: down, cut off, or not yet on the swarm's ring). Each is checked as
    /// evidence, not executed as a request: the owner's signature whatever its age, and
    /// that it reaches this copy (recipient, namespace, the hash listed or stored before
    /// the delete was signed). Nothing else is deleted, so a peer cannot remove a message
    /// its owner did not.
    fn apply_tombstones(
        &mut self,
        now: Timestamp,
        entries: &[(MessageHash, Vec<u8>)],
    ) -> PeerResponse {
        let mut deleted = 0u32;
        // One delete-all shown for many messages costs one signature check.
        let mut verified: Option<&[u8]> = None;
        for (hash, evidence) in entries.iter().take(MAX_BATCH) {
            let Ok(signed) = SignedRequest::decode(evidence) else {
                continue;
            };
            let Request::Delete(d) = signed.request else {
                continue;
            };
            // Cheap checks first: a signature is checked only for a copy held here that
            // the delete reaches.
            let reaches = matches!(
                self.store.get(hash, now),
                Ok(Some(m)) if crate::store::delete_covers(&d, &m)
            );
            if !reaches {
                continue;
            }
            if verified != Some(evidence.as_slice()) {
                if signed.signature().is_none() || signed.verify_owner_signature().is_err() {
                    continue;
                }
                verified = Some(evidence);
            }
            if let Ok(true) = self.store.apply_delete_to(hash, &d, evidence) {
                deleted += 1;
            }
        }
        self.stats.deletes_learned += u64::from(deleted);
        PeerResponse::Applied(deleted)
    }

    /// Shows `peer` the owners' deletes of the copies it sent that this node refused as
    /// deleted (from the message's tombstone, or the owner's delete of everything before
    /// a time), so it deletes its own copy.
    fn show_deletes(&mut self, now: Timestamp, peer: NodeId, copies: &[&WireMessage]) {
        let mut entries = Vec::new();
        for m in copies.iter().take(MAX_BATCH) {
            let hash = m.hash();
            let evidence = match self.store.tombstone(&hash) {
                Ok(Some(t)) if !t.evidence.is_empty() => Some(t.evidence),
                _ => match self.store.delete_range(&m.recipient, m.namespace) {
                    Ok(Some(r)) if !r.evidence.is_empty() => Some(r.evidence),
                    _ => None,
                },
            };
            if let Some(e) = evidence {
                entries.push((hash, e));
            }
        }
        if entries.is_empty() {
            return;
        }
        self.stats.tombstones_shown += entries.len() as u64;
        self.transmit_peer(
            now,
            peer,
            &PeerRequest::Tombstones(entries),
            Pending::Handoff,
        );
    }

    fn accept_replicas(
        &mut self,
        now: Timestamp,
        req: RequestId,
        sender: NodeId,
        ms: Vec<WireMessage>,
    ) {
        let mut items = Vec::new();
        let mut refused = Vec::new();
        let mut max_seq = 0;
        let mut deleted = Vec::new();
        for m in &ms {
            match self.accept_copy(m, &sender, now) {
                Ok(ins) => {
                    max_seq = max_seq.max(ins.seq);
                    items.push((ins.hash, m.recipient, ins.expiry));
                }
                Err(why) => {
                    if why == CopyRefusal::Deleted {
                        deleted.push(m);
                    }
                    refused.push((m.hash(), why));
                }
            }
        }
        self.show_deletes(now, sender, &deleted);
        self.replica_acks.push(PendingReplicaAck {
            req,
            max_seq,
            items,
            refused,
        });
        self.release_replica_acks();
    }

    /// Stores a copy `sender` sent (replication or anti-entropy) under the rules of a
    /// client's store: both nodes must be in the message's swarm by this node's ring, the
    /// origin must vouch for it (owner signature, proof of work, TTL, times), and the
    /// store's own rules (size, expiry, quota, capacity) must hold. Counts each refusal.
    fn accept_copy(
        &mut self,
        m: &WireMessage,
        sender: &NodeId,
        now: Timestamp,
    ) -> Result<Inserted, CopyRefusal> {
        let result = self
            .check_copy(m, sender, now)
            .and_then(|()| self.store.insert(new_message(m), now).map_err(copy_refusal));
        match &result {
            Ok(ins) if ins.new => self.stats.messages_replicated_in += 1,
            Ok(_) => {}
            Err(why) => self.stats.copies_refused[why.index()] += 1,
        }
        result
    }

    fn check_copy(
        &self,
        m: &WireMessage,
        sender: &NodeId,
        now: Timestamp,
    ) -> Result<(), CopyRefusal> {
        let me = self.node_id();
        let (receiver_ok, sender_ok) = self.with_swarm(&m.recipient, |swarm| {
            (swarm.contains(&me), swarm.contains(sender))
        });
        if !sender_ok {
            return Err(CopyRefusal::SenderNotInSwarm);
        }
        if !receiver_ok {
            return Err(CopyRefusal::NotInSwarm);
        }
        let window = self.config.auth_window_ms;
        if m.stored_at > now.plus_millis(window) {
            return Err(CopyRefusal::InconsistentTimes);
        }
        let limits = (
            self.config.pow_difficulty,
            self.config.store.max_ttl_ms,
            window,
        );
        m.origin
            .vouches_for(m.recipient, m.namespace, &m.body, m.stored_at, limits)
            .map_err(|e| match e {
                OriginError::BadSignature => CopyRefusal::BadSignature,
                OriginError::InsufficientPow => CopyRefusal::InsufficientPow,
                OriginError::TtlTooLong => CopyRefusal::TtlTooLong,
                OriginError::InconsistentTimes => CopyRefusal::InconsistentTimes,
            })
    }

    /// A node announces itself with its signed descriptor (`POST /v1/nodes/register`).
    /// The descriptor is verified here and the node becomes a candidate: probed at once,
    /// and live (listed, on the ring) only once it answers the probe at its address with
    /// its identity's signature. A registration for a dead or borrowed address is evicted
    /// without ever being listed.
    pub fn handle_register(
        &mut self,
        now: Timestamp,
        source: IpAddr,
        descriptor: UnverifiedDescriptor,
    ) -> Result<InsertOutcome, RegisterError> {
        if self.peer_limited(source, None, now) {
            return Err(RegisterError::RateLimited);
        }
        let d = descriptor.verify().map_err(RegisterError::Invalid)?;
        self.directory.lift_quarantine(&d.node_id());
        let outcome = self.directory.insert(d, now);
        match outcome {
            InsertOutcome::Added | InsertOutcome::Updated | InsertOutcome::Unchanged => Ok(outcome),
            InsertOutcome::Quarantined => Err(RegisterError::Stale),
            InsertOutcome::NotAdmitted => Err(RegisterError::NotAdmitted),
            InsertOutcome::Own => Err(RegisterError::OwnIdentity),
            InsertOutcome::Expired => Err(RegisterError::Expired),
            InsertOutcome::TooFarAhead => Err(RegisterError::TooFarAhead),
            InsertOutcome::Stale => Err(RegisterError::Stale),
            InsertOutcome::Full => Err(RegisterError::DirectoryFull),
        }
    }

    fn merge_descriptors(&mut self, now: Timestamp, ds: Vec<UnverifiedDescriptor>) -> usize {
        let mut changed = 0;
        for u in ds {
            let id = u.node_id();
            if id == self.node_id() || self.directory.get(&id).is_some_and(|known| u.is(known)) {
                continue;
            }
            // Cheap refusals before the signature check: gossip about a node outside a
            // closed network, or evicted a moment ago, is ignored whatever its signature.
            if !self.directory.admits(&id) {
                continue;
            }
            if self.directory.quarantines(&id, u.epoch(), u.expires(), now) {
                continue;
            }
            let Ok(d) = u.verify() else {
                continue;
            };
            if self.directory.insert(d, now).is_changed() {
                changed += 1;
            }
        }
        changed
    }

    /// `id` answered a probe with its identity's signature: live, and on the ring.
    fn admit(&mut self, id: &NodeId, now: Timestamp) {
        if self.directory.mark_live(id, now) {
            self.ring.insert(*id);
        }
    }

    /// Brings the per-peer digests up to date: the store's changes since the last call
    /// are applied, or, after a ring change or an overflowing change log, the digests are
    /// rebuilt by one scan of the store. Rounds and digest answers then cost no scan.
    fn refresh_digests(&mut self) {
        let changes = self.store.take_changes();
        let generation = self.ring.generation();
        let mut cache = core::mem::take(&mut self.digests);
        let me = self.node_id();
        match changes {
            Changes::List(list) if cache.ring_generation == Some(generation) => {
                for c in list {
                    self.with_swarm(&c.recipient, |ids| {
                        cache.apply(me, ids, &c.hash, c.added);
                    });
                }
            }
            _ => {
                cache = DigestCache {
                    ring_generation: Some(generation),
                    by_peer: BTreeMap::new(),
                };
                // A failed scan leaves digests partial: peers then push what they hold
                // (deduplicated), and the next ring change or overflow rebuilds.
                let _ = self.store.for_each_hash(&mut |hash, recipient| {
                    self.with_swarm(recipient, |ids| cache.apply(me, ids, hash, true));
                });
            }
        }
        self.digests = cache;
    }

    /// The digest of the messages shared with `peer` and how many there are (call
    /// [`Node::refresh_digests`] first).
    fn digest_with(&self, peer: &NodeId) -> (Digest, usize) {
        self.digests.by_peer.get(peer).cloned().unwrap_or_default()
    }

    /// Shared hashes in the `differing` buckets for which `keep` holds, at most
    /// `limit + 1` of them (one more than asked tells the caller the list was cut). Reads
    /// only those buckets of the store's hash index.
    fn shared_in_buckets(
        &self,
        peer: &NodeId,
        differing: &[u8],
        limit: usize,
        keep: impl Fn(&MessageHash) -> bool,
    ) -> Vec<MessageHash> {
        let me = self.node_id();
        let mut out = Vec::new();
        for &bucket in differing {
            if out.len() > limit {
                break;
            }
            let _ = self
                .store
                .for_each_in_bucket(bucket, &mut |hash, recipient| {
                    if out.len() <= limit
                        && keep(hash)
                        && self.with_swarm(recipient, |ids| ids.contains(peer) && ids.contains(&me))
                    {
                        out.push(*hash);
                    }
                });
        }
        out
    }

    /// Lists the shared hashes of the buckets where `theirs` differs from this node's
    /// digest, bucket by bucket from `start` on: at most [`MAX_DIFF_BUCKETS`] buckets
    /// read and [`MAX_HASH_LIST`] hashes listed, so one request never costs a scan of
    /// the whole store; the asker pages on with its next rounds.
    fn digest_diff(&mut self, sender: &NodeId, theirs: &Digest, start: u8) -> PeerResponse {
        self.refresh_digests();
        let (mine, _) = self.digest_with(sender);
        let mut differing = mine.differing(theirs);
        let first = differing.partition_point(|&b| b < start);
        differing.rotate_left(first);
        let mut hashes = Vec::new();
        let mut covered = Vec::new();
        let mut truncated = false;
        for &bucket in differing.iter().take(MAX_DIFF_BUCKETS) {
            let mut listed = self.shared_in_buckets(sender, &[bucket], MAX_HASH_LIST, |_| true);
            if hashes.len() + listed.len() > MAX_HASH_LIST {
                if covered.is_empty() {
                    // One bucket alone overflows an answer: its first part, not covered.
                    listed.truncate(MAX_HASH_LIST);
                    hashes = listed;
                }
                truncated = true;
                break;
            }
            hashes.extend(listed);
            covered.push(bucket);
        }
        truncated |= covered.len() < differing.len();
        PeerResponse::DigestDiff {
            digest: mine,
            hashes,
            truncated,
            covered,
        }
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
        let Some(pending) = self.pending.remove(&id) else {
            return; // Already timed out.
        };
        self.transmit_deadlines.retain(|(_, t)| *t != id);
        match pending {
            Pending::Forward { req, reply_key } => self.finish_forward(req, &reply_key, result),
            Pending::Replicate { op, peer } => {
                let receipt = result.ok().and_then(|b| match PeerResponse::decode(&b) {
                    Ok(PeerResponse::Stored { receipts, .. }) => Some(receipts),
                    _ => None,
                });
                let retry = now.plus_millis(self.config.replication_retry_ms);
                let mut proved = false;
                if let Some(s) = self.stores.get_mut(&op) {
                    let valid = receipt.into_iter().flatten().find(|(h, r)| {
                        *h == s.hash
                            && r.node == peer
                            && r.verify(&s.hash, &s.message.recipient, s.message.expiry)
                    });
                    match valid {
                        Some((_, r)) => {
                            // A receipt signed by the peer, answered at its address: as good
                            // as a probe answer for its liveness. Anything less is not.
                            proved = true;
                            s.peers.remove(&peer);
                            if !s.receipts.iter().any(|x| x.node == r.node) {
                                s.receipts.push(r);
                            }
                        }
                        None => {
                            s.peers.insert(peer, Some(retry));
                        }
                    }
                }
                if proved {
                    self.directory.record_contact(&peer, now);
                }
                self.advance_store(now, op);
            }
            Pending::Digest { peer, mine } => {
                if let Ok(Ok(PeerResponse::DigestDiff {
                    digest,
                    hashes,
                    covered,
                    ..
                })) = result.map(|b| PeerResponse::decode(&b))
                {
                    self.reconcile(now, peer, &mine, &digest, &hashes, &covered);
                } else {
                    self.directory.record_failure(&peer, now);
                }
            }
            Pending::Fetch { peer, asked } => {
                if let Ok(Ok(PeerResponse::Messages(ms))) = result.map(|b| PeerResponse::decode(&b))
                {
                    let mut deleted = Vec::new();
                    for m in &ms {
                        if asked.contains(&m.hash()) {
                            if self.accept_copy(m, &peer, now) == Err(CopyRefusal::Deleted) {
                                deleted.push(m);
                            }
                        } else {
                            let why = CopyRefusal::Unrequested;
                            self.stats.copies_refused[why.index()] += 1;
                        }
                    }
                    self.show_deletes(now, peer, &deleted);
                }
            }
            Pending::Gossip => {
                // Unsigned: whoever answered at that address, its descriptors are checked
                // one by one and make candidates at most; nobody is credited as alive.
                if let Ok(Ok(PeerResponse::Descriptors(ds))) =
                    result.map(|b| PeerResponse::decode(&b))
                {
                    self.merge_descriptors(now, ds);
                }
            }
            Pending::Probe { peer, nonce } => match result.map(|b| PeerResponse::decode(&b)) {
                Ok(Ok(PeerResponse::Alive {
                    descriptor,
                    signature,
                })) if peer::verify_alive(&peer, &nonce, &self.node_id(), &signature) => {
                    if descriptor.node_id() == peer {
                        self.merge_descriptors(now, vec![*descriptor]);
                    }
                    self.admit(&peer, now);
                }
                // Silence, an error, or an answer not signed by the probed identity (an
                // honest node at a borrowed address answers with its own key): a failure.
                _ => {
                    self.stats.probes_failed += 1;
                    self.directory.record_failure(&peer, now);
                }
            },
            Pending::Relay {
                peer,
                change,
                until,
            } => {
                // Applied, or refused for good (asking again would not change the
                // answer): done. Unreachable, silent or garbled: ask again.
                let answered = matches!(
                    result.map(|b| PeerResponse::decode(&b)),
                    Ok(Ok(PeerResponse::Applied(_) | PeerResponse::Refused(_)))
                );
                let retry = now.plus_millis(self.config.replication_retry_ms);
                if !answered && retry <= until {
                    self.relay_retries.push((retry, peer, change, until));
                }
            }
            Pending::Handoff => {}
        }
    }

    fn finish_forward(
        &mut self,
        req: RequestId,
        key: &ReplyKey,
        result: Result<Vec<u8>, TransmitFailure>,
    ) {
        match result {
            Ok(mut body) => {
                if reply::add_layer(key, &mut body).is_ok() {
                    self.respond(req, Reply::Onion(body));
                } else {
                    self.respond_failure(req, key, HopFailure::NextHopBadReply);
                }
            }
            Err(TransmitFailure::Timeout) => {
                self.respond_failure(req, key, HopFailure::NextHopTimeout)
            }
            Err(TransmitFailure::Unreachable) => {
                self.respond_failure(req, key, HopFailure::NextHopUnreachable);
            }
        }
    }

    /// Second half of anti-entropy: fetch what the peer has and we lack, push what we
    /// have in the differing buckets and it lacks.
    fn reconcile(
        &mut self,
        now: Timestamp,
        peer: NodeId,
        my_digest: &Digest,
        digest: &Digest,
        theirs: &[MessageHash],
        covered: &[u8],
    ) {
        // What the peer holds that we lack (`theirs` is at most MAX_HASH_LIST long). What
        // we lack because its owner deleted it here, the peer is shown the owner's delete
        // for; the rest we fetch.
        let mut missing = Vec::new();
        let mut deleted = Vec::new();
        for h in theirs {
            if matches!(self.store.get(h, now), Ok(Some(_))) {
                continue;
            }
            match self.store.tombstone(h) {
                Ok(Some(t)) if t.until > now => {
                    if !t.evidence.is_empty() && deleted.len() < MAX_BATCH {
                        deleted.push((*h, t.evidence));
                    }
                }
                _ => missing.push(*h),
            }
        }
        if !deleted.is_empty() {
            self.stats.tombstones_shown += deleted.len() as u64;
            self.transmit_peer(
                now,
                peer,
                &PeerRequest::Tombstones(deleted),
                Pending::Handoff,
            );
        }
        for chunk in missing.chunks(MAX_BATCH) {
            self.transmit_peer(
                now,
                peer,
                &PeerRequest::Fetch(chunk.to_vec()),
                Pending::Fetch {
                    peer,
                    asked: chunk.iter().copied().collect(),
                },
            );
        }
        // What we hold that the peer lacks. `theirs` lists everything the peer holds in the
        // `covered` buckets, which differ; in the other buckets both sides agree or the
        // peer did not list them this time, so a message of ours missing from `theirs` is
        // only pushed when its bucket is covered and differs. At most
        // MAX_HANDOFF_PER_ROUND go per round, so a peer that lacks everything (a new or
        // wiped node) is filled over several rounds with bounded memory. `my_digest` is
        // the one sent this round: a message stored since then is not pushed now but by
        // the next round.
        let differing: Vec<u8> = my_digest
            .differing(digest)
            .into_iter()
            .filter(|b| covered.contains(b))
            .collect();
        if differing.is_empty() {
            return;
        }
        let theirs_set: BTreeSet<MessageHash> = theirs.iter().copied().collect();
        let mut extra = self.shared_in_buckets(&peer, &differing, MAX_HANDOFF_PER_ROUND, |h| {
            !theirs_set.contains(h)
        });
        extra.truncate(MAX_HANDOFF_PER_ROUND);
        for chunk in extra.chunks(MAX_BATCH) {
            let messages: Vec<WireMessage> = chunk
                .iter()
                .filter_map(|h| self.store.get(h, now).ok().flatten())
                .map(to_wire)
                .collect();
            self.transmit_peer(
                now,
                peer,
                &PeerRequest::Replicate(messages),
                Pending::Handoff,
            );
        }
    }

    // ----------------------------------------------------------------------------------
    // Timers
    // ----------------------------------------------------------------------------------

    /// Time passed: expire exchanges, retry replications, run periodic duties. Calling it
    /// early or twice does nothing extra.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while let Some(&(deadline, id)) = self.transmit_deadlines.first() {
            if deadline > now {
                break;
            }
            self.transmit_deadlines.pop_first();
            if self.pending.contains_key(&id) {
                self.handle_transmit_result(now, id, Err(TransmitFailure::Timeout));
            }
        }
        let ops: Vec<u64> = self.stores.keys().copied().collect();
        for op in ops {
            self.advance_store(now, op);
        }
        let (due, later): (Vec<_>, Vec<_>) = core::mem::take(&mut self.relay_retries)
            .into_iter()
            .partition(|(at, ..)| *at <= now);
        self.relay_retries = later;
        for (_, peer, change, until) in due {
            self.send_relay(now, peer, change, until);
        }
        if self.timers[Timer::Descriptor as usize] <= now {
            self.timers[Timer::Descriptor as usize] =
                now.plus_millis(self.config.descriptor_lifetime_ms / 2);
            if self.descriptor.expires().millis_since(now) < self.config.descriptor_lifetime_ms / 2
            {
                self.descriptor = Descriptor::sign(
                    &self.identity,
                    &self.onion,
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
        for peer in self.directory.due_probes(now) {
            let mut nonce = [0u8; peer::PROBE_NONCE_LEN];
            self.rng.fill_bytes(&mut nonce);
            self.transmit_peer(
                now,
                peer,
                &PeerRequest::Probe { nonce },
                Pending::Probe { peer, nonce },
            );
        }
        for gone in self.directory.evict(now) {
            self.ring.remove(&gone);
            self.stats.nodes_evicted += 1;
        }
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

    fn gossip(&mut self, now: Timestamp) {
        let mine = PeerRequest::Gossip(self.gossip_sample());
        if self.directory.is_empty() {
            // Nobody known yet: announce to the seeds (known only by address).
            let body = mine.encode_signed(&self.identity, now);
            for seed in self.seeds.clone() {
                if seed != self.address {
                    self.transmit(
                        now,
                        None,
                        seed,
                        Endpoint::Peer,
                        body.clone(),
                        Pending::Gossip,
                    );
                }
            }
            return;
        }
        let fanout = self.config.directory.gossip_fanout;
        let targets = self.directory.gossip_targets(&mut self.rng, fanout);
        for t in targets {
            self.transmit_peer(now, t, &mine, Pending::Gossip);
        }
    }

    fn gossip_sample(&mut self) -> Vec<UnverifiedDescriptor> {
        let mut out = vec![self.descriptor.into()];
        let others = self
            .directory
            .gossip_targets(&mut self.rng, peer::MAX_GOSSIP - 1);
        out.extend(others.iter().filter_map(|id| {
            self.directory
                .get(id)
                .map(|d| UnverifiedDescriptor::from(*d))
        }));
        out
    }

    /// Starts a round with every node that shares a swarm with this one.
    fn anti_entropy(&mut self, now: Timestamp) {
        self.stats.anti_entropy_rounds += 1;
        let neighbours: Vec<NodeId> = self.directory.live_ids().collect();
        if neighbours.is_empty() {
            // Nobody to compare with: leave the digests (and their rebuild) for later.
            return;
        }
        self.refresh_digests();
        for peer in neighbours {
            let (digest, shared) = self.digest_with(&peer);
            if shared == 0 && !self.ring_neighbour(&peer) {
                continue;
            }
            let start = self.rng.next_u32().to_be_bytes()[0];
            self.transmit_peer(
                now,
                peer,
                &PeerRequest::Digest {
                    digest: digest.clone(),
                    start,
                },
                Pending::Digest {
                    peer,
                    mine: Box::new(digest),
                },
            );
        }
    }

    /// Whether `peer` is close enough on the ring to share swarms with this node.
    fn ring_neighbour(&self, peer: &NodeId) -> bool {
        self.ring
            .shares_swarm(&self.node_id(), peer, self.config.swarm_size)
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
mod tests {
    use super::*;
    use crate::request::{DeleteRequest, DeleteSelector, HashList, StoreRequest, solve_pow};
    use crate::store::MemoryBackend;
    use crate::types::Namespace;
    use crate::{Epoch, OnionKey};
    use rand_chacha::ChaCha20Rng;
    use rand_core::{Rng, SeedableRng};

    const NOW: Timestamp = Timestamp(1_800_000_000_000);
    /// Where peer requests come from in these tests (a stranger's address: the budget is
    /// far above what a test sends).
    const PEER_IP: IpAddr = IpAddr::V4(core::net::Ipv4Addr::new(198, 51, 100, 7));

    fn node_with_peers(rng: &mut ChaCha20Rng, peers: u8) -> Node<MemoryBackend> {
        let keys = NodeKeys {
            identity: IdentityKey::from_seed(&[1; 32]),
            onion: OnionKey::generate(Epoch(1), rng),
            address: Address::new("10.0.0.1:7100").expect("valid"),
        };
        let config = NodeConfig {
            replay_filter_words: crate::replay::BUCKETS * 64,
            ..NodeConfig::default()
        };
        let mut n = Node::new(
            config,
            keys,
            Vec::new(),
            MemoryBackend::immediate(),
            NOW,
            rng,
        )
        .expect("opens");
        for i in 0..peers {
            let d = Descriptor::sign(
                &IdentityKey::from_seed(&[i + 2; 32]),
                &OnionKey::generate(Epoch(1), rng),
                Address::new(&alloc::format!("10.0.1.{i}:7100")).expect("valid"),
                NOW.plus_millis(3_600_000),
            );
            n.handle_register(NOW, PEER_IP, d.into())
                .expect("registers");
            // As if it answered its first probe.
            n.admit(&d.node_id(), NOW);
        }
        n
    }

    fn rebuilt(n: &mut Node<MemoryBackend>) -> BTreeMap<NodeId, (Digest, usize)> {
        let kept = core::mem::take(&mut n.digests);
        n.refresh_digests();
        core::mem::replace(&mut n.digests, kept).by_peer
    }

    /// Drops peers whose count fell back to zero: an empty entry equals a missing one.
    fn nonempty(m: BTreeMap<NodeId, (Digest, usize)>) -> BTreeMap<NodeId, (Digest, usize)> {
        m.into_iter().filter(|(_, (_, c))| *c > 0).collect()
    }

    #[test]
    fn directory_pages_list_every_valid_node_once_in_id_order_with_the_pow_difficulty() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut n = node_with_peers(&mut rng, 9);
        n.config.pow_difficulty = 12;
        let mut listed = Vec::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            let page = n.directory_page(NOW, after, 4);
            assert!(page.nodes.len() <= 4, "a page holds at most the limit");
            assert_eq!(page.pow_difficulty, 12);
            listed.extend(page.nodes.iter().map(Descriptor::node_id));
            pages += 1;
            match page.next {
                Some(next) => {
                    assert_eq!(
                        Some(&next),
                        listed.last(),
                        "the cursor is the last id listed"
                    );
                    after = Some(next);
                }
                None => break,
            }
            assert!(pages < 10, "pagination ends");
        }
        assert_eq!(pages, 3, "10 nodes in pages of 4");
        assert_eq!(listed.len(), 10, "9 peers and the node itself");
        assert!(
            listed.windows(2).all(|w| w[0] < w[1]),
            "strictly in id order"
        );
        assert!(listed.contains(&n.node_id()), "the node lists itself");

        // Peers' descriptors expire after an hour: a listing never offers a stale one.
        let later = NOW.plus_millis(3_600_001);
        let page = n.directory_page(later, None, 100);
        assert!(page.nodes.iter().all(|d| d.is_valid_at(later)));
        assert!(page.nodes.len() < 10 && page.next.is_none());
    }

    // ---- Copies from peers obey the store's rules -------------------------------------

    fn peer_key(i: u8) -> IdentityKey {
        IdentityKey::from_seed(&[i + 2; 32])
    }

    /// A recipient key whose swarm holds this node, and holds peer `sender` exactly when
    /// `with_sender`.
    fn owner_where(n: &Node<MemoryBackend>, sender: u8, with_sender: bool) -> IdentityKey {
        (0..=255u8)
            .map(|i| IdentityKey::from_seed(&[i; 32]))
            .find(|k| {
                let swarm = n.swarm_ids(&k.recipient_id());
                swarm.contains(&n.node_id())
                    && swarm.contains(&peer_key(sender).node_id()) == with_sender
            })
            .expect("some recipient among 256")
    }

    /// The message a client's store request makes: signed by `owner` when the namespace
    /// is owner-only.
    fn stored_by_client(owner: &IdentityKey, namespace: Namespace, body: &[u8]) -> WireMessage {
        let request = StoreRequest {
            recipient: owner.recipient_id(),
            namespace,
            timestamp: NOW,
            ttl_ms: 3_600_000,
            pow_nonce: 0,
            body,
        };
        let mut buf = [0u8; packet::MAX_PAYLOAD];
        let len = Request::Store(request)
            .encode(Some(owner), &mut buf)
            .expect("fits");
        let signed = SignedRequest::decode(&buf[..len]).expect("decodes");
        WireMessage {
            recipient: owner.recipient_id(),
            namespace,
            stored_at: NOW,
            expiry: NOW.plus_millis(3_600_000),
            body: body.to_vec(),
            origin: Origin::of(&request, signed.signature()),
        }
    }

    fn answer(n: &mut Node<MemoryBackend>, req: RequestId) -> PeerResponse {
        answer_at(n, req, NOW)
    }

    fn answer_at(n: &mut Node<MemoryBackend>, req: RequestId, now: Timestamp) -> PeerResponse {
        n.handle_durable(now);
        while let Some(o) = n.poll_output() {
            if let Output::Respond {
                req: r,
                reply: Reply::Peer(bytes),
            } = o
                && r == req
            {
                return PeerResponse::decode(&bytes).expect("decodes");
            }
        }
        panic!("no answer to {req:?}");
    }

    fn replicate(
        n: &mut Node<MemoryBackend>,
        sender: u8,
        ms: Vec<WireMessage>,
    ) -> (Vec<MessageHash>, Vec<(MessageHash, CopyRefusal)>) {
        replicate_at(n, sender, ms, NOW)
    }

    /// Peer `sender` replicates `ms` at `now`: the hashes stored and those refused, why.
    fn replicate_at(
        n: &mut Node<MemoryBackend>,
        sender: u8,
        ms: Vec<WireMessage>,
        now: Timestamp,
    ) -> (Vec<MessageHash>, Vec<(MessageHash, CopyRefusal)>) {
        let bytes = PeerRequest::Replicate(ms).encode_signed(&peer_key(sender), now);
        n.handle_peer(now, RequestId(77), PEER_IP, &bytes);
        match answer_at(n, RequestId(77), now) {
            PeerResponse::Stored { receipts, refused } => {
                (receipts.into_iter().map(|(h, _)| h).collect(), refused)
            }
            other => panic!("expected Stored, got {other:?}"),
        }
    }

    /// Peer `sender` answers, at `now`, an anti-entropy fetch that `n` made for `asked`
    /// with the messages `ms`.
    fn answer_fetch(
        n: &mut Node<MemoryBackend>,
        sender: u8,
        asked: &[MessageHash],
        ms: Vec<WireMessage>,
        now: Timestamp,
    ) {
        let id = TransmitId(500);
        let pending = Pending::Fetch {
            peer: peer_key(sender).node_id(),
            asked: asked.iter().copied().collect(),
        };
        n.pending.insert(id, pending);
        let answer = PeerResponse::Messages(ms);
        n.handle_transmit_result(now, id, Ok(answer.encode()));
    }

    fn held(n: &Node<MemoryBackend>, m: &WireMessage) -> bool {
        matches!(n.store.get(&m.hash(), NOW), Ok(Some(_)))
    }

    #[test]
    fn replicas_from_a_peer_outside_the_swarm_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(31);
        let mut n = node_with_peers(&mut rng, 6);
        let owner = owner_where(&n, 0, false);
        let m = stored_by_client(&owner, Namespace::DIRECT, b"pushed by an outsider");
        let (stored, refused) = replicate(&mut n, 0, vec![m.clone()]);
        assert!(stored.is_empty());
        assert_eq!(refused, [(m.hash(), CopyRefusal::SenderNotInSwarm)]);
        assert!(!held(&n, &m));
        assert_eq!(
            n.stats.copies_refused[CopyRefusal::SenderNotInSwarm.index()],
            1
        );

        // The same message from a member of its swarm is stored: the refusal was the
        // sender's standing, not the message.
        let member = (0..6u8)
            .find(|i| {
                n.swarm_ids(&owner.recipient_id())
                    .contains(&peer_key(*i).node_id())
            })
            .expect("a swarm of 3 has 2 peers");
        let (stored, refused) = replicate(&mut n, member, vec![m.clone()]);
        assert_eq!((stored, refused), (vec![m.hash()], vec![]));
        assert!(held(&n, &m));
    }

    #[test]
    fn owner_only_replicas_need_the_owners_signature() {
        let mut rng = ChaCha20Rng::seed_from_u64(32);
        let mut n = node_with_peers(&mut rng, 6);
        let owner = owner_where(&n, 1, true);
        let private = Namespace(0x8001);
        let genuine = stored_by_client(&owner, private, b"the owner's note");

        let mut unsigned = stored_by_client(&owner, private, b"a peer's forgery");
        unsigned.origin.signature = None;
        let mut forged = stored_by_client(&owner, private, b"signed by someone else");
        forged.origin.signature = stored_by_client(&peer_key(1), private, b"x")
            .origin
            .signature;
        let mut altered = genuine.clone();
        altered.body = b"the owner's note, edited".to_vec();

        let (stored, refused) = replicate(
            &mut n,
            1,
            vec![
                unsigned.clone(),
                forged.clone(),
                altered.clone(),
                genuine.clone(),
            ],
        );
        assert_eq!(stored, [genuine.hash()]);
        assert_eq!(
            refused,
            [
                (unsigned.hash(), CopyRefusal::BadSignature),
                (forged.hash(), CopyRefusal::BadSignature),
                (altered.hash(), CopyRefusal::BadSignature),
            ]
        );
        assert!(held(&n, &genuine) && !held(&n, &unsigned) && !held(&n, &forged));
    }

    #[test]
    fn owner_only_copies_from_anti_entropy_need_the_owners_signature_and_a_request() {
        let mut rng = ChaCha20Rng::seed_from_u64(33);
        let mut n = node_with_peers(&mut rng, 6);
        let owner = owner_where(&n, 2, true);
        let private = Namespace(0x8002);
        let genuine = stored_by_client(&owner, private, b"asked for and signed");
        let mut unsigned = stored_by_client(&owner, private, b"asked for, unsigned");
        unsigned.origin.signature = None;
        let unasked = stored_by_client(&owner, Namespace::DIRECT, b"never asked for");

        answer_fetch(
            &mut n,
            2,
            &[genuine.hash(), unsigned.hash()],
            vec![genuine.clone(), unsigned.clone(), unasked.clone()],
            NOW,
        );

        assert!(held(&n, &genuine));
        assert!(
            !held(&n, &unsigned),
            "an unsigned owner-only copy was stored"
        );
        assert!(!held(&n, &unasked), "a copy nobody asked for was stored");
        assert_eq!(n.stats.copies_refused[CopyRefusal::BadSignature.index()], 1);
        assert_eq!(n.stats.copies_refused[CopyRefusal::Unrequested.index()], 1);
    }

    #[test]
    fn replicas_obey_ttl_size_quota_and_proof_of_work() {
        let mut rng = ChaCha20Rng::seed_from_u64(34);
        let mut n = node_with_peers(&mut rng, 6);
        n.config.store.max_ttl_ms = 7_200_000;
        n.store = MessageStore::open(
            MemoryBackend::immediate(),
            StoreConfig {
                max_ttl_ms: 7_200_000,
                max_body: 64,
                recipient_max_messages: 2,
                ..StoreConfig::default()
            },
        )
        .expect("opens");
        let owner = owner_where(&n, 3, true);

        let mut long_ttl = stored_by_client(&owner, Namespace::DIRECT, b"asks for a day");
        long_ttl.origin.ttl_ms = 86_400_000;
        let mut far_expiry = stored_by_client(&owner, Namespace::DIRECT, b"expires in a year");
        far_expiry.expiry = NOW.plus_millis(365 * 86_400_000);
        let large = stored_by_client(&owner, Namespace::DIRECT, &[7; 65]);
        let mut backdated = stored_by_client(&owner, Namespace::DIRECT, b"stored before asked");
        backdated.stored_at = Timestamp(NOW.0 - 3_600_000);
        let mut future = stored_by_client(&owner, Namespace::DIRECT, b"stored tomorrow");
        future.stored_at = NOW.plus_millis(86_400_000);
        future.origin.timestamp = future.stored_at;
        let fits: Vec<WireMessage> = (0..3u8)
            .map(|i| stored_by_client(&owner, Namespace::DIRECT, &[i; 8]))
            .collect();

        let mut batch = vec![
            long_ttl.clone(),
            far_expiry.clone(),
            large.clone(),
            backdated.clone(),
            future.clone(),
        ];
        batch.extend(fits.iter().cloned());
        let (stored, refused) = replicate(&mut n, 3, batch);
        assert_eq!(stored, [fits[0].hash(), fits[1].hash()]);
        assert_eq!(
            refused,
            [
                (long_ttl.hash(), CopyRefusal::TtlTooLong),
                (far_expiry.hash(), CopyRefusal::TtlTooLong),
                (large.hash(), CopyRefusal::BodyTooLarge),
                (backdated.hash(), CopyRefusal::InconsistentTimes),
                (future.hash(), CopyRefusal::InconsistentTimes),
                (fits[2].hash(), CopyRefusal::QuotaExceeded),
            ]
        );

        // With a proof-of-work requirement, a copy must carry the work a client would.
        n.config.pow_difficulty = 8;
        let other = owner_where(&n, 4, true);
        let lazy = stored_by_client(&other, Namespace::DIRECT, b"no work");
        let mut paid = stored_by_client(&other, Namespace::DIRECT, b"work done");
        let request = paid
            .origin
            .request(paid.recipient, paid.namespace, &paid.body);
        paid.origin.pow_nonce = solve_pow(&request, 8, 1 << 20).expect("solvable");
        let (stored, refused) = replicate(&mut n, 4, vec![lazy.clone(), paid.clone()]);
        if pow_satisfied(
            &lazy
                .origin
                .request(lazy.recipient, lazy.namespace, &lazy.body),
            8,
        ) {
            panic!("nonce 0 happens to meet difficulty 8: pick another body");
        }
        assert_eq!(stored, [paid.hash()]);
        assert_eq!(refused, [(lazy.hash(), CopyRefusal::InsufficientPow)]);
    }

    fn signed(owner: &IdentityKey, request: &Request<'_>) -> Vec<u8> {
        let mut buf = [0u8; packet::MAX_PAYLOAD];
        let len = request.encode(Some(owner), &mut buf).expect("fits");
        buf[..len].to_vec()
    }

    /// What the final hop answers a request (decoded from the sealed reply).
    fn final_hop_answer(n: &mut Node<MemoryBackend>, payload: &[u8]) -> Response {
        n.execute(NOW, RequestId(9), payload, ReplyKey::new([3; 32]));
        while let Some(o) = n.poll_output() {
            if let Output::Respond {
                req: RequestId(9),
                reply: Reply::Onion(mut bytes),
            } = o
            {
                let opened = reply::open(&[ReplyKey::new([3; 32])], &mut bytes).expect("opens");
                let reply::Opened::Response { body } = opened else {
                    panic!("a hop failure: {opened:?}");
                };
                return Response::decode(body).expect("decodes");
            }
        }
        panic!("no answer");
    }

    #[test]
    fn a_replayed_signed_delete_all_deletes_nothing_the_second_time() {
        let mut rng = ChaCha20Rng::seed_from_u64(35);
        let mut n = node_with_peers(&mut rng, 6);
        let owner = owner_where(&n, 0, true);
        let put = |n: &mut Node<MemoryBackend>, body: &[u8], at: Timestamp| {
            let mut m = stored_by_client(&owner, Namespace::DIRECT, body);
            m.stored_at = at;
            m.origin.timestamp = at;
            n.store.insert(new_message(&m), at).expect("stored");
            m
        };
        for i in 0..3u8 {
            put(&mut n, &[i; 4], NOW);
        }
        let delete_all = signed(
            &owner,
            &Request::Delete(DeleteRequest {
                recipient: owner.recipient_id(),
                namespace: Namespace::DIRECT,
                timestamp: NOW,
                selector: DeleteSelector::All,
            }),
        );
        assert_eq!(
            final_hop_answer(&mut n, &delete_all),
            Response::Deleted { count: 3 }
        );

        // New mail arrives; the same signed delete-all comes again inside its window:
        // through another path, and relayed by a swarm member that captured it.
        let later = NOW.plus_millis(1_000);
        let kept = [
            put(&mut n, b"new one", later),
            put(&mut n, b"another", later),
        ];
        assert_eq!(
            final_hop_answer(&mut n, &delete_all),
            Response::Refused(RequestError::AlreadyApplied)
        );
        let relay = PeerRequest::Relay(delete_all.clone()).encode_signed(&peer_key(0), NOW);
        n.handle_peer(NOW, RequestId(78), PEER_IP, &relay);
        assert_eq!(answer(&mut n, RequestId(78)), PeerResponse::Applied(0));
        assert!(
            kept.iter().all(|m| held(&n, m)),
            "the replay deleted new mail"
        );
        assert_eq!(n.stats.changes_already_applied, 2);

        // A new request, signed again after the new mail came, does apply.
        let again = signed(
            &owner,
            &Request::Delete(DeleteRequest {
                recipient: owner.recipient_id(),
                namespace: Namespace::DIRECT,
                timestamp: NOW.plus_millis(2_000),
                selector: DeleteSelector::All,
            }),
        );
        assert_eq!(
            final_hop_answer(&mut n, &again),
            Response::Deleted { count: 2 }
        );
    }

    #[test]
    fn a_delete_all_applied_late_spares_mail_stored_after_it_was_signed() {
        let mut rng = ChaCha20Rng::seed_from_u64(37);
        let mut n = node_with_peers(&mut rng, 6);
        let owner = owner_where(&n, 0, true);
        let old = stored_by_client(&owner, Namespace::DIRECT, b"before the delete");
        n.store.insert(new_message(&old), NOW).expect("stored");
        let delete_all = signed(
            &owner,
            &Request::Delete(DeleteRequest {
                recipient: owner.recipient_id(),
                namespace: Namespace::DIRECT,
                timestamp: NOW,
                selector: DeleteSelector::All,
            }),
        );
        // Mail stored after the request was signed, then the relay of the delete arrives
        // late (retried after this member was unreachable for a while).
        let later = NOW.plus_millis(20_000);
        let mut new = stored_by_client(&owner, Namespace::DIRECT, b"after the delete");
        new.stored_at = NOW.plus_millis(10_000);
        new.origin.timestamp = new.stored_at;
        n.store.insert(new_message(&new), later).expect("stored");
        let relay = PeerRequest::Relay(delete_all).encode_signed(&peer_key(1), later);
        n.handle_peer(later, RequestId(79), PEER_IP, &relay);
        assert_eq!(answer(&mut n, RequestId(79)), PeerResponse::Applied(1));
        assert!(!held(&n, &old), "the delete removed the older message");
        assert!(held(&n, &new), "the late delete removed newer mail");
    }

    #[test]
    fn a_message_deleted_here_is_not_brought_back_by_a_member_that_missed_the_delete() {
        let mut rng = ChaCha20Rng::seed_from_u64(36);
        let mut n = node_with_peers(&mut rng, 6);
        let owner = owner_where(&n, 0, true);
        let m = stored_by_client(&owner, Namespace::DIRECT, b"to be deleted");
        n.store.insert(new_message(&m), NOW).expect("stored");
        // The delete reaches this member (relayed by another member); the third member
        // (peer 0 here) missed it and still holds the message.
        let delete = signed(
            &owner,
            &Request::Delete(DeleteRequest {
                recipient: owner.recipient_id(),
                namespace: Namespace::DIRECT,
                timestamp: NOW,
                selector: DeleteSelector::Hashes(
                    HashList::from_bytes(m.hash().as_bytes()).expect("one hash"),
                ),
            }),
        );
        let relay = PeerRequest::Relay(delete).encode_signed(&peer_key(1), NOW);
        n.handle_peer(NOW, RequestId(80), PEER_IP, &relay);
        assert_eq!(answer(&mut n, RequestId(80)), PeerResponse::Applied(1));

        // Anti-entropy from the member that missed it: pushed as a handoff, and as the
        // answer to a fetch this node made. Neither brings it back.
        let later = NOW.plus_millis(30_000);
        assert_eq!(
            replicate_at(&mut n, 0, vec![m.clone()], later),
            (vec![], vec![(m.hash(), CopyRefusal::Deleted)])
        );
        answer_fetch(&mut n, 0, &[m.hash()], vec![m.clone()], later);
        assert!(!matches!(n.store.get(&m.hash(), later), Ok(Some(_))));
        assert_eq!(n.stats.copies_refused[CopyRefusal::Deleted.index()], 2);
    }

    #[test]
    fn an_identity_has_one_peer_budget_whatever_address_it_sends_from() {
        let mut rng = ChaCha20Rng::seed_from_u64(40);
        let mut n = node_with_peers(&mut rng, 6);
        n.identities = RateLimiter::new(RateLimitConfig {
            burst: 3,
            per_second: 1,
            max_keys: 16,
        });
        let digest = |sender: u8| {
            PeerRequest::Digest {
                digest: Digest::default(),
                start: 0,
            }
            .encode_signed(&peer_key(sender), NOW)
        };
        let refused = |n: &mut Node<MemoryBackend>, req: u64| {
            core::iter::from_fn(|| n.poll_output()).any(|o| {
                matches!(
                    o,
                    Output::Respond {
                        req: r,
                        reply: Reply::PeerRefused(PeerError::RateLimited),
                    } if r == RequestId(req)
                )
            })
        };
        // Peer 0 spreads its requests over five live nodes' addresses: its fourth is
        // refused all the same.
        for k in 0..5u8 {
            let source = IpAddr::from([10, 0, 1, k]);
            n.handle_peer(NOW, RequestId(u64::from(k)), source, &digest(0));
            assert_eq!(refused(&mut n, u64::from(k)), k >= 3, "request {k}");
        }
        // Another identity from the same address is not charged for it; and naming
        // peer 1 in an envelope that does not verify spends none of peer 1's budget.
        let mut forged = digest(1);
        let last = forged.len() - 1;
        forged[last] ^= 1;
        for k in 10..13 {
            n.handle_peer(NOW, RequestId(k), IpAddr::from([10, 0, 1, 0]), &forged);
        }
        while n.poll_output().is_some() {}
        for k in 20..23 {
            n.handle_peer(NOW, RequestId(k), IpAddr::from([10, 0, 1, 0]), &digest(1));
            assert!(!refused(&mut n, k));
        }
    }

    #[test]
    fn a_digest_that_differs_everywhere_is_answered_in_pages_of_buckets() {
        let mut rng = ChaCha20Rng::seed_from_u64(41);
        let mut n = node_with_peers(&mut rng, 6);
        let owner = owner_where(&n, 0, true);
        let mut held = BTreeSet::new();
        for i in 0..600u32 {
            let m = stored_by_client(&owner, Namespace::DIRECT, &i.to_be_bytes());
            n.store.insert(new_message(&m), NOW).expect("stored");
            held.insert(m.hash());
        }
        // A peer that holds nothing: every bucket differs.
        let ask = |n: &mut Node<MemoryBackend>, start: u8| {
            let bytes = PeerRequest::Digest {
                digest: Digest::default(),
                start,
            }
            .encode_signed(&peer_key(0), NOW);
            n.handle_peer(NOW, RequestId(90), PEER_IP, &bytes);
            match answer(n, RequestId(90)) {
                PeerResponse::DigestDiff {
                    hashes,
                    truncated,
                    covered,
                    ..
                } => (hashes, truncated, covered),
                other => panic!("expected a digest diff, got {other:?}"),
            }
        };
        let mut seen = BTreeSet::new();
        let mut start = 250u8;
        for page in 0..20 {
            let (hashes, truncated, covered) = ask(&mut n, start);
            assert!(
                covered.len() <= MAX_DIFF_BUCKETS,
                "page {page} read too much"
            );
            assert!(truncated, "256 differing buckets do not fit one page");
            // Cyclic order from `start` (250..=255, then 0, 1, ...), skipping the buckets
            // where both sides agree (empty on both).
            let first = (0..=255u8)
                .map(|k| start.wrapping_add(k))
                .find(|b| held.iter().any(|h| h.as_bytes()[0] == *b));
            assert_eq!(covered.first().copied(), first);
            let expected: BTreeSet<MessageHash> = held
                .iter()
                .filter(|h| covered.contains(&h.as_bytes()[0]))
                .copied()
                .collect();
            assert_eq!(hashes.iter().copied().collect::<BTreeSet<_>>(), expected);
            seen.extend(hashes);
            start = covered[covered.len() - 1].wrapping_add(1);
        }
        assert_eq!(
            seen, held,
            "pages from successive starts cover every bucket"
        );
    }

    #[test]
    fn a_member_that_held_nothing_when_everything_was_deleted_refuses_older_copies_later() {
        let mut rng = ChaCha20Rng::seed_from_u64(42);
        let mut n = node_with_peers(&mut rng, 6);
        let owner = owner_where(&n, 0, true);
        let delete_all = signed(
            &owner,
            &Request::Delete(DeleteRequest {
                recipient: owner.recipient_id(),
                namespace: Namespace::DIRECT,
                timestamp: NOW,
                selector: DeleteSelector::All,
            }),
        );
        assert_eq!(
            final_hop_answer(&mut n, &delete_all),
            Response::Deleted { count: 0 }
        );
        while n.poll_output().is_some() {}
        // A copy of a message stored before the delete reaches this member afterwards
        // (replication was still retrying): refused, and its sender is shown the delete.
        let later = NOW.plus_millis(30_000);
        let old = stored_by_client(&owner, Namespace::DIRECT, b"stored before");
        let mut new = stored_by_client(&owner, Namespace::DIRECT, b"stored after");
        new.stored_at = NOW.plus_millis(5_000);
        new.origin.timestamp = new.stored_at;
        let bytes = PeerRequest::Replicate(vec![old.clone(), new.clone()])
            .encode_signed(&peer_key(0), later);
        n.handle_peer(later, RequestId(91), PEER_IP, &bytes);
        n.handle_durable(later);
        let outputs: Vec<Output> = core::iter::from_fn(|| n.poll_output()).collect();
        let answer = outputs.iter().find_map(|o| match o {
            Output::Respond {
                req: RequestId(91),
                reply: Reply::Peer(b),
            } => PeerResponse::decode(b).ok(),
            _ => None,
        });
        let Some(PeerResponse::Stored { receipts, refused }) = answer else {
            panic!("expected stored, got {answer:?}");
        };
        assert_eq!(
            receipts.iter().map(|(h, _)| *h).collect::<Vec<_>>(),
            vec![new.hash()]
        );
        assert_eq!(refused, vec![(old.hash(), CopyRefusal::Deleted)]);
        let shown: Vec<PeerRequest> = outputs
            .into_iter()
            .filter_map(|o| match o {
                Output::Transmit {
                    to: Some(to),
                    endpoint: Endpoint::Peer,
                    body,
                    ..
                } if to == peer_key(0).node_id() => {
                    peer::decode_request(&body, later, 60_000, |_| true)
                        .ok()
                        .map(|a| a.request)
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            shown,
            vec![PeerRequest::Tombstones(vec![(old.hash(), delete_all)])]
        );
    }

    /// The owner's signed delete of `m`, as a client sends it at `ts`.
    fn delete_of(owner: &IdentityKey, m: &WireMessage, ts: Timestamp) -> Vec<u8> {
        signed(
            owner,
            &Request::Delete(DeleteRequest {
                recipient: owner.recipient_id(),
                namespace: m.namespace,
                timestamp: ts,
                selector: DeleteSelector::Hashes(
                    HashList::from_bytes(m.hash().as_bytes()).expect("one hash"),
                ),
            }),
        )
    }

    /// Peer `sender` shows `entries` (hash, owner's delete) at `now`; the answer.
    fn show_tombstones(
        n: &mut Node<MemoryBackend>,
        sender: u8,
        entries: Vec<(MessageHash, Vec<u8>)>,
        now: Timestamp,
    ) -> PeerResponse {
        let bytes = PeerRequest::Tombstones(entries).encode_signed(&peer_key(sender), now);
        n.handle_peer(now, RequestId(81), PEER_IP, &bytes);
        answer_at(n, RequestId(81), now)
    }

    #[test]
    fn a_member_that_applied_a_delete_shows_it_to_a_peer_still_holding_the_message() {
        let mut rng = ChaCha20Rng::seed_from_u64(38);
        let mut n = node_with_peers(&mut rng, 6);
        let owner = owner_where(&n, 0, true);
        let m = stored_by_client(&owner, Namespace::DIRECT, b"to be deleted");
        n.store.insert(new_message(&m), NOW).expect("stored");
        let delete = delete_of(&owner, &m, NOW);
        let relay = PeerRequest::Relay(delete.clone()).encode_signed(&peer_key(1), NOW);
        n.handle_peer(NOW, RequestId(80), PEER_IP, &relay);
        assert_eq!(answer(&mut n, RequestId(80)), PeerResponse::Applied(1));
        while n.poll_output().is_some() {}

        // Anti-entropy with peer 0, which still lists the message: this node does not
        // fetch it back but shows peer 0 the owner's delete, long after its window.
        let later = NOW.plus_millis(600_000);
        let digest = Digest::default();
        n.reconcile(
            later,
            peer_key(0).node_id(),
            &digest,
            &digest,
            &[m.hash()],
            &[],
        );
        let sent: Vec<PeerRequest> = core::iter::from_fn(|| n.poll_output())
            .filter_map(|o| match o {
                Output::Transmit {
                    endpoint: Endpoint::Peer,
                    body,
                    ..
                } => peer::decode_request(&body, later, 60_000, |_| true)
                    .ok()
                    .map(|a| a.request),
                _ => None,
            })
            .collect();
        assert_eq!(
            sent,
            vec![PeerRequest::Tombstones(vec![(m.hash(), delete)])]
        );
        assert_eq!(n.stats.tombstones_shown, 1);
    }

    #[test]
    fn a_member_that_missed_a_delete_deletes_its_copy_only_on_the_owners_own_delete() {
        let mut rng = ChaCha20Rng::seed_from_u64(39);
        let mut n = node_with_peers(&mut rng, 6);
        let owner = owner_where(&n, 0, true);
        let m = stored_by_client(&owner, Namespace::DIRECT, b"missed the delete");
        let kept = stored_by_client(&owner, Namespace::DIRECT, b"never deleted");
        for x in [&m, &kept] {
            n.store.insert(new_message(x), NOW).expect("stored");
        }
        let later = NOW.plus_millis(600_000);
        let delete_all = |ts: Timestamp, by: &IdentityKey| {
            signed(
                by,
                &Request::Delete(DeleteRequest {
                    recipient: owner.recipient_id(),
                    namespace: Namespace::DIRECT,
                    timestamp: ts,
                    selector: DeleteSelector::All,
                }),
            )
        };
        // What a peer cannot make it delete: a delete signed by another key, one of
        // another message, a delete-all signed before the message was stored, something
        // that is not a delete, and bytes that are not a request.
        let forged = [
            (m.hash(), delete_all(NOW, &peer_key(0))),
            (kept.hash(), delete_of(&owner, &m, NOW)),
            (m.hash(), delete_all(Timestamp(NOW.0 - 1), &owner)),
            (m.hash(), signed(&owner, &Request::Info)),
            (m.hash(), vec![1, 3, 0]),
        ];
        assert_eq!(
            show_tombstones(&mut n, 0, forged.to_vec(), later),
            PeerResponse::Applied(0)
        );
        assert!(held(&n, &m) && held(&n, &kept));

        // The owner's own delete, ten minutes old: applied, with its tombstone and the
        // evidence kept for the next member that missed it.
        let delete = delete_of(&owner, &m, NOW);
        assert_eq!(
            show_tombstones(&mut n, 0, vec![(m.hash(), delete.clone())], later),
            PeerResponse::Applied(1)
        );
        assert!(!held(&n, &m) && held(&n, &kept));
        let t = n.store.tombstone(&m.hash()).unwrap().expect("a tombstone");
        assert_eq!(t.evidence, delete);
        assert_eq!(n.stats.deletes_learned, 1);
    }

    /// The relays of a signed change `n` has sent: (exchange, peer).
    fn relays_sent(n: &mut Node<MemoryBackend>, now: Timestamp) -> Vec<(TransmitId, NodeId)> {
        core::iter::from_fn(|| n.poll_output())
            .filter_map(|o| match o {
                Output::Transmit {
                    id,
                    to: Some(peer),
                    endpoint: Endpoint::Peer,
                    body,
                    ..
                } => match peer::decode_request(&body, now, 60_000, |_| true) {
                    Ok(a) if matches!(a.request, PeerRequest::Relay(_)) => Some((id, peer)),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_relayed_delete_is_asked_again_until_confirmed_within_its_window() {
        let mut rng = ChaCha20Rng::seed_from_u64(37);
        let mut n = node_with_peers(&mut rng, 6);
        let owner = owner_where(&n, 0, true);
        let delete = signed(
            &owner,
            &Request::Delete(DeleteRequest {
                recipient: owner.recipient_id(),
                namespace: Namespace::DIRECT,
                timestamp: NOW,
                selector: DeleteSelector::All,
            }),
        );
        n.execute(NOW, RequestId(9), &delete, ReplyKey::new([3; 32]));
        let first = relays_sent(&mut n, NOW);
        assert_eq!(first.len(), 2, "one relay per other member");
        // One member is down; the other confirms.
        let (down_id, down) = first[0];
        n.handle_transmit_result(NOW, down_id, Err(TransmitFailure::Unreachable));
        n.handle_transmit_result(NOW, first[1].0, Ok(PeerResponse::Applied(0).encode()));
        let retry_at = NOW.plus_millis(n.config.replication_retry_ms);
        assert!(n.poll_timeout().is_some_and(|t| t <= retry_at));
        n.handle_timeout(retry_at);
        let again = relays_sent(&mut n, retry_at);
        assert_eq!(again.iter().map(|(_, p)| *p).collect::<Vec<_>>(), [down]);
        // Still down until the window closes: no relay after that.
        let mut t = retry_at;
        let mut last = again[0].0;
        let window_end = NOW.plus_millis(n.config.auth_window_ms);
        let mut attempts = 1;
        loop {
            n.handle_transmit_result(t, last, Err(TransmitFailure::Timeout));
            t = t.plus_millis(n.config.replication_retry_ms);
            n.handle_timeout(t);
            match relays_sent(&mut n, t).first() {
                Some((id, _)) => {
                    assert!(t <= window_end, "a relay after its window");
                    last = *id;
                    attempts += 1;
                }
                None => break,
            }
            assert!(attempts < 1_000, "relays never stop");
        }
        assert!(attempts > 10, "only {attempts} attempts in the window");
        // Once confirmed, never again.
        n.handle_timeout(t.plus_millis(60_000));
        assert!(relays_sent(&mut n, t).is_empty());
    }

    #[test]
    fn digests_kept_from_the_change_log_equal_a_full_rebuild() {
        let mut rng = ChaCha20Rng::seed_from_u64(21);
        let mut n = node_with_peers(&mut rng, 5);
        n.refresh_digests();
        let recipients: Vec<RecipientId> = (0..40u8).map(|i| RecipientId([i; 32])).collect();
        for round in 0..6u64 {
            for (i, r) in recipients.iter().enumerate() {
                let body = alloc::format!("round {round} message {i}");
                let ttl = 1_000 + (rng.next_u64() % 5_000);
                n.store
                    .insert(
                        NewMessage::unsigned(
                            *r,
                            Namespace::DIRECT,
                            body.as_bytes(),
                            NOW,
                            NOW.plus_millis(ttl),
                        ),
                        NOW,
                    )
                    .expect("stored");
            }
            let victim = recipients[usize::try_from(round).expect("small") * 3];
            n.store
                .delete_all(&victim, Namespace::DIRECT, NOW)
                .expect("deleted");
            n.store
                .expire(NOW.plus_millis(1_000 + round * 700), 50)
                .expect("swept");
            n.refresh_digests();
            assert_eq!(
                nonempty(n.digests.by_peer.clone()),
                nonempty(rebuilt(&mut n)),
                "round {round}"
            );
        }
        assert!(n.digests.by_peer.values().any(|(_, c)| *c > 0));
    }

    #[test]
    fn a_ring_change_rebuilds_the_digests() {
        let mut rng = ChaCha20Rng::seed_from_u64(22);
        let mut n = node_with_peers(&mut rng, 2);
        for i in 0..30u8 {
            n.store
                .insert(
                    NewMessage::unsigned(
                        RecipientId([i; 32]),
                        Namespace::DIRECT,
                        &[i],
                        NOW,
                        NOW.plus_millis(60_000),
                    ),
                    NOW,
                )
                .expect("stored");
        }
        n.refresh_digests();
        let before = n.digests.by_peer.len();
        let d = Descriptor::sign(
            &IdentityKey::from_seed(&[99; 32]),
            &OnionKey::generate(Epoch(1), &mut rng),
            Address::new("10.0.2.1:7100").expect("valid"),
            NOW.plus_millis(3_600_000),
        );
        n.handle_register(NOW, PEER_IP, d.into())
            .expect("registers");
        n.refresh_digests();
        assert_eq!(n.digests.ring_generation, Some(n.ring.generation()));
        assert_eq!(
            nonempty(n.digests.by_peer.clone()),
            nonempty(rebuilt(&mut n))
        );
        assert!(n.digests.by_peer.len() >= before);
    }
}
