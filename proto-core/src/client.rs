//! The client state machine: stores and fetches through fresh 3-hop paths, with every
//! answer checked against what the client computed itself.
//!
//! This module owns every decision a client makes — which directory to believe, which
//! swarm a recipient has, which paths to build, which hops to avoid, when to retry, which
//! redirects to follow, which acknowledgements and messages to accept, and the cursor walk
//! — so the `ghost` CLI, the runtimes' client and the simulation share one logic. Like
//! [`crate::node::Node`] it is sans-IO: operations start with the time and an RNG, the
//! runtime drains [`Client::poll_transmit`] (bytes to send to an address), carries each
//! exchange out and reports it with [`Client::handle_onion_answer`] or
//! [`Client::handle_directory`], and calls [`Client::handle_timeout`] when
//! [`Client::poll_timeout`] says; results come out of [`Client::poll_event`].
//!
//! **Drain rule:** after every `start_*` or `handle_*` call, drain `poll_transmit` and
//! `poll_event` until both return `None`.
//!
//! ```text
//! let op = client.start_store(now, rng, spec);
//! loop {
//!     while let Some(t) = client.poll_transmit() { send t.body to t.to, remember t.id }
//!     if let Some(event) = client.poll_event() { break event }
//!     wait for an answer or client.poll_timeout(), then handle_onion_answer /
//!     handle_directory / handle_timeout
//! }
//! ```
//!
//! What it must never do: send anything that names a recipient outside an onion payload.
//! The only plain request it makes is for the whole directory ([`TransmitBody::Directory`]),
//! which is the same for every client; swarms come from the client's own [`Ring`] over the
//! verified directory, never from a per-recipient lookup.
//!
//! Invariants: a descriptor is used only after its signature verified and while it has
//! not expired; a store is delivered only with W receipts that verify, from distinct
//! members of the swarm the client's own ring gives, over the hash the client computed
//! and an expiry inside what it asked for; a redirect changes nothing until a refreshed
//! directory agrees with it; a retrieved message is shown only if its body hashes to the
//! hash the member claims, and a member's cursor only moves forward; every loop is bounded
//! (attempts per member, pages per walk, directory pages and size).

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::fmt;

use rand_core::CryptoRng;

use crate::keys::{Address, Descriptor, IdentityKey, UnverifiedDescriptor};
use crate::packet::{self, BuildError, MAX_PAYLOAD, PACKET_LEN, PathHop, PathKeys};
use crate::reply::{self, HopFailure, Opened};
use crate::request::{
    AckError, DEFAULT_AUTH_WINDOW_MS, MessageView, Request, RequestError, Response,
    RetrieveRequest, StoreAck, StoreRequest, requested_expiry, solve_pow,
};
use crate::ring::{DEFAULT_SWARM_SIZE, DEFAULT_VNODES, Ring};
use crate::store::message_hash;
use crate::types::{MessageHash, Namespace, NodeId, RecipientId, Timestamp, TlsKeyHash};

/// Most nodes a client holds in its directory (a network's directory holds at most as
/// many, see [`crate::directory::DirectoryConfig`]): 10,000 descriptors are about 1.6 MB.
pub const MAX_DIRECTORY_NODES: usize = 10_000;
/// Most directory pages read in one refresh.
pub const MAX_DIRECTORY_PAGES: usize = 64;
/// Most pages one cursor walk reads from a member, so a member that always says "more"
/// cannot keep a client busy forever.
pub const MAX_PAGES_PER_WALK: usize = 10_000;

/// What a client needs to know about the network it talks to, and its own patience.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// K, the swarm size (a network-wide constant; default 3).
    pub swarm_size: usize,
    /// Virtual nodes per node on the ring (a network-wide constant; default 64).
    pub vnodes: usize,
    /// W, receipts from distinct swarm members a store needs (default 2).
    pub write_quorum: usize,
    /// Hops of every path (default 3).
    pub path_hops: usize,
    /// How long a packet stays valid, ms (default 30,000): its expiry is `now` plus this,
    /// rounded down to the 10-second expiry grid. Hops accept at most 60 s, so the nodes'
    /// clocks may be up to 30 s behind ours.
    pub packet_lifetime_ms: u64,
    /// Length of the reply asked for every request but fetches (default 4,096 bytes: a
    /// store's receipts, a redirect to a swarm of up to 16 members).
    pub reply_len: usize,
    /// Length of the reply asked for fetches (default 16,384 bytes, about eleven of the
    /// longest messages): the node fits its page of messages to it and says when more
    /// remain. Every fetch costs this much on every hop, whatever it returns.
    pub fetch_reply_len: usize,
    /// How long one exchange may take before it counts as failed, ms (default 30,000).
    pub request_timeout_ms: u64,
    /// Fresh paths tried per swarm member before moving to the next (default 3); a member
    /// suspected of being down gets one.
    pub attempts_per_member: usize,
    /// A directory older than this is fetched again before the next operation, ms
    /// (default 300,000).
    pub directory_max_age_ms: u64,
    /// After a failed attempt, a directory older than this is fetched again (a node may
    /// have restarted with a new onion key), ms (default 10,000).
    pub directory_refresh_after_failure_ms: u64,
    /// How long a hop reported down is avoided, ms (default 60,000).
    pub suspect_ms: u64,
    /// The nodes' request window (their clock may be this far from ours), ms: bounds the
    /// acknowledged expiry (default 60,000).
    pub auth_window_ms: u64,
    /// Messages asked for per retrieve page (default 50).
    pub page_limit: u16,
    /// Most nonces tried for a proof of work before giving up (default 2^26).
    pub pow_max_tries: u64,
    /// Hashes of fetched messages remembered so a message read on one member is not
    /// shown again when a later fetch reads another (default 10,000).
    pub seen_memory: usize,
    /// Stores of one [`Client::start_store_parts`] in flight at once (default 8): the
    /// fragments of a large message go out on this many paths together.
    pub parts_in_flight: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            swarm_size: DEFAULT_SWARM_SIZE,
            vnodes: DEFAULT_VNODES,
            write_quorum: 2,
            path_hops: 3,
            packet_lifetime_ms: 30_000,
            reply_len: 4096,
            fetch_reply_len: 16 * 1024,
            request_timeout_ms: 30_000,
            attempts_per_member: 3,
            directory_max_age_ms: 300_000,
            directory_refresh_after_failure_ms: 10_000,
            suspect_ms: 60_000,
            auth_window_ms: DEFAULT_AUTH_WINDOW_MS,
            page_limit: 50,
            pow_max_tries: 1 << 26,
            seen_memory: 10_000,
            parts_in_flight: 8,
        }
    }
}

/// Handle of one operation, echoed in its [`Event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// Handle of one exchange, echoed to `handle_onion_answer` / `handle_directory`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransmitId(pub u64);

/// What to send.
#[derive(Debug)]
pub enum TransmitBody {
    /// `POST /v1/onion` with this packet; answer with [`Client::handle_onion_answer`].
    Onion(Box<[u8; PACKET_LEN]>),
    /// `GET /v1/nodes/directory` (with `?after=ID` when `after` is set); answer with
    /// [`Client::handle_directory`].
    Directory {
        /// Cursor of the page wanted.
        after: Option<NodeId>,
    },
}

/// One exchange the runtime must carry out.
#[derive(Debug)]
pub struct Transmit {
    /// Echo this with the answer.
    pub id: TransmitId,
    /// The node to send to.
    pub to: Address,
    /// The hash of the TLS key the node's verified descriptor names: the link must present
    /// that key. `None` only for a seed the client knows by address alone.
    pub tls_key_hash: Option<TlsKeyHash>,
    /// What to send.
    pub body: TransmitBody,
}

/// Why an exchange produced no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportError {
    /// Could not connect, or the connection broke.
    Unreachable,
    /// No answer in time.
    Timeout,
    /// The node answered with an HTTP error status.
    Status(u16),
    /// The answer could not be read (not a listing, bad hex, ...).
    Malformed,
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable => f.write_str("unreachable"),
            Self::Timeout => f.write_str("no answer in time"),
            Self::Status(s) => write!(f, "answered HTTP {s}"),
            Self::Malformed => f.write_str("answered something that is not a listing"),
        }
    }
}

/// One page of a node's directory listing as received: nothing in it is trusted yet.
#[derive(Clone, Debug, Default)]
pub struct DirectoryAnswer {
    /// The descriptors (signatures not yet checked).
    pub nodes: Vec<UnverifiedDescriptor>,
    /// Cursor of the next page, when the listing says there is one.
    pub next: Option<NodeId>,
    /// Proof-of-work difficulty the node says its stores require.
    pub pow_difficulty: u8,
}

/// Where a recipient's fetches stopped on each member (cursors are per node) and which
/// messages were already shown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchCursors {
    /// Last sequence number read from each member.
    pub after: BTreeMap<NodeId, u64>,
    /// Hashes of messages already shown, oldest first.
    pub seen: VecDeque<MessageHash>,
}

impl FetchCursors {
    fn remember(&mut self, hash: MessageHash, cap: usize) {
        if self.seen.contains(&hash) {
            return;
        }
        while self.seen.len() >= cap.max(1) {
            self.seen.pop_front();
        }
        self.seen.push_back(hash);
    }
}

/// A store to start.
#[derive(Clone, Debug)]
pub struct StoreSpec {
    /// Whose message.
    pub recipient: RecipientId,
    /// The (already sealed) body.
    pub body: Vec<u8>,
    /// How long the swarm keeps it, ms.
    pub ttl_ms: u64,
    /// Try this swarm member first (tests and tools; `None`: the client's own order).
    pub first_member: Option<NodeId>,
}

/// Several bodies for one recipient to store as one operation: the fragments of a large
/// message ([`crate::fragment::seal_message`]). Each is an ordinary store on its own path.
#[derive(Clone, Debug)]
pub struct StorePartsSpec {
    /// Whose message.
    pub recipient: RecipientId,
    /// The (already sealed) bodies, in order.
    pub bodies: Vec<Vec<u8>>,
    /// How long the swarm keeps them, ms.
    pub ttl_ms: u64,
}

/// A fetch to start.
pub struct FetchSpec {
    /// The recipient's identity key (signs every retrieve).
    pub identity: IdentityKey,
    /// Where earlier fetches stopped.
    pub cursors: FetchCursors,
    /// Read only this member (`None`: the first member that answers).
    pub only_member: Option<NodeId>,
}

/// A delivered store.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The acknowledgement, verified against the client's own swarm.
    pub ack: StoreAck,
    /// The hops, first to last.
    pub path: Vec<Descriptor>,
    /// What failed before the store got through (other paths, lying members).
    pub problems: Vec<AttemptFailure>,
}

/// New messages read from one swarm member.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// Messages not shown before, in the member's order, each checked against its hash.
    pub messages: Vec<MessageView>,
    /// The hops, first to last.
    pub path: Vec<Descriptor>,
    /// What failed before the fetch got through (other paths, lying members).
    pub problems: Vec<AttemptFailure>,
}

/// The end of an operation.
#[derive(Debug)]
pub enum Event {
    /// A store ended.
    Stored {
        /// Which operation.
        op: OpId,
        /// The delivery, or why there is none.
        result: Result<Delivery, ClientError>,
    },
    /// A [`Client::start_store_parts`] ended: every body delivered, or the first that
    /// could not be (the others are then abandoned).
    StoredParts {
        /// Which operation.
        op: OpId,
        /// Each body's delivery, in the order given, or why one failed.
        result: Result<Vec<Delivery>, ClientError>,
    },
    /// A fetch ended.
    Fetched {
        /// Which operation.
        op: OpId,
        /// The cursors to keep (advanced only by walks that completed).
        cursors: FetchCursors,
        /// The messages, or why there are none.
        result: Result<Fetched, ClientError>,
    },
}

impl Event {
    /// The operation that ended.
    #[must_use]
    pub fn op(&self) -> OpId {
        match self {
            Self::Stored { op, .. } | Self::StoredParts { op, .. } | Self::Fetched { op, .. } => {
                *op
            }
        }
    }
}

/// What went wrong with one attempt (one path to one member).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptFailure {
    /// The swarm member the path ended at.
    pub member: NodeId,
    /// What happened.
    pub problem: Problem,
}

impl fmt::Display for AttemptFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            // These name their hop themselves.
            Problem::FirstHopUnreachable { .. } | Problem::HopFailed { .. } => {
                write!(f, "{}", self.problem)
            }
            p => write!(f, "swarm member {}: {p}", Short(&self.member)),
        }
    }
}

/// Why one attempt failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The first hop did not answer.
    FirstHopUnreachable {
        /// Its address.
        address: Address,
        /// What the transport saw.
        error: TransportError,
    },
    /// A hop sealed a failure report.
    HopFailed {
        /// Which hop, 1-based.
        hop: usize,
        /// Its address.
        address: Address,
        /// What it reported.
        failure: HopFailure,
    },
    /// The answer did not authenticate under any hop's key.
    Unauthentic,
    /// The final hop's answer did not decode.
    MalformedAnswer(RequestError),
    /// The final hop answered something that does not answer the request.
    UnexpectedAnswer,
    /// The acknowledgement does not hold.
    BadAcknowledgement(AckError),
    /// The member said it is not in the swarm and named nodes the client's ring, after a
    /// directory refresh, does not give.
    RedirectDisagrees,
    /// The member said it is not in the swarm; the refreshed ring agrees.
    Redirected,
    /// A returned message's body does not hash to the hash the member claims.
    BodyHashMismatch {
        /// The hash the member claimed.
        claimed: MessageHash,
    },
    /// The member returned one message twice in one walk.
    DuplicateMessage {
        /// Its hash.
        hash: MessageHash,
    },
    /// The member's cursor went backwards (a message at or before the cursor asked for).
    CursorWentBack {
        /// The sequence number returned.
        seq: u64,
        /// The cursor asked for.
        after: u64,
    },
    /// The member kept saying "more" past [`MAX_PAGES_PER_WALK`] pages.
    TooManyPages,
    /// The member cannot serve now (it did not reach its write quorum, or its storage
    /// failed); another member may.
    CannotServe(RequestError),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FirstHopUnreachable { address, error } => {
                write!(f, "first hop {address} did not answer: {error}")
            }
            Self::HopFailed {
                hop,
                address,
                failure,
            } => write!(f, "hop {hop} ({address}) failed: {failure}"),
            Self::Unauthentic => f.write_str("the answer did not authenticate"),
            Self::MalformedAnswer(e) => write!(f, "the final hop's answer is malformed: {e}"),
            Self::UnexpectedAnswer => f.write_str("unexpected answer"),
            Self::BadAcknowledgement(e) => write!(f, "the acknowledgement does not hold: {e}"),
            Self::RedirectDisagrees => f.write_str(
                "redirected to nodes that are not the recipient's swarm by the client's own ring",
            ),
            Self::Redirected => f.write_str("not in the recipient's swarm (directory refreshed)"),
            Self::BodyHashMismatch { claimed } => write!(
                f,
                "returned a message whose body does not match its claimed hash {claimed}"
            ),
            Self::DuplicateMessage { hash } => write!(f, "returned message {hash} twice"),
            Self::CursorWentBack { seq, after } => {
                write!(
                    f,
                    "returned message {seq} when asked for messages after {after}"
                )
            }
            Self::TooManyPages => {
                write!(f, "kept answering \"more\" past {MAX_PAGES_PER_WALK} pages")
            }
            Self::CannotServe(e) => write!(f, "cannot serve now: {e}"),
        }
    }
}

/// Why an operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// No seed or known node returned a usable directory.
    NoDirectory {
        /// Addresses asked.
        asked: usize,
        /// The last transport problem, when there was one.
        last: Option<TransportError>,
    },
    /// The network has too few nodes for a path of distinct hops.
    TooFewNodes {
        /// Nodes in the directory.
        nodes: usize,
        /// Nodes a path needs.
        needed: usize,
    },
    /// A swarm member refused the request: another path would get the same answer.
    Refused {
        /// The member.
        member: NodeId,
        /// Its reason.
        error: RequestError,
    },
    /// The body does not fit one request.
    BodyTooLarge {
        /// Its length.
        len: usize,
    },
    /// The proof of work the network asks for was not found within the configured tries.
    PowUnsolved {
        /// Leading zero bits asked for.
        difficulty: u8,
    },
    /// The configuration cannot build a packet (a reply length that is no reply bucket).
    BadConfig(BuildError),
    /// Every member and path was tried; the failures, oldest first.
    Failed {
        /// What went wrong with each attempt.
        attempts: Vec<AttemptFailure>,
    },
    /// One body of a [`Client::start_store_parts`] could not be stored.
    PartFailed {
        /// Its place among the bodies, from 0.
        index: usize,
        /// How many bodies there were.
        count: usize,
        /// Why.
        error: Box<ClientError>,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoDirectory { asked, last } => {
                write!(f, "no node returned the directory ({asked} asked")?;
                if let Some(e) = last {
                    write!(f, "; last: {e}")?;
                }
                f.write_str(")")
            }
            Self::BadConfig(e) => write!(f, "the client configuration cannot build a packet: {e}"),
            Self::TooFewNodes { nodes, needed } => write!(
                f,
                "the network has {nodes} nodes; a {needed}-hop path needs {needed}"
            ),
            Self::Refused { error, .. } => write!(f, "refused: {error}"),
            Self::BodyTooLarge { len } => {
                write!(f, "a {len}-byte body does not fit one request")
            }
            Self::PartFailed {
                index,
                count,
                error,
            } => write!(f, "part {} of {count}: {error}", index + 1),
            Self::PowUnsolved { difficulty } => write!(
                f,
                "no proof of work of difficulty {difficulty} found within the configured tries"
            ),
            Self::Failed { attempts } => match attempts.last() {
                None => f.write_str("the recipient's swarm is empty"),
                Some(last) => {
                    write!(f, "{last}")?;
                    if attempts.len() > 1 {
                        write!(f, " ({} attempts failed", attempts.len())?;
                        // A lie is worth naming even when a plain failure came last.
                        if let Some(lie) = attempts.iter().find(|a| a.problem.is_misbehaviour())
                            && lie != last
                        {
                            write!(f, "; {lie}")?;
                        }
                        f.write_str(")")?;
                    }
                    Ok(())
                }
            },
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ClientError {}

impl Problem {
    /// Whether the member answered something it cannot have answered honestly.
    #[must_use]
    pub fn is_misbehaviour(&self) -> bool {
        matches!(
            self,
            Self::BadAcknowledgement(_)
                | Self::RedirectDisagrees
                | Self::BodyHashMismatch { .. }
                | Self::DuplicateMessage { .. }
                | Self::CursorWentBack { .. }
                | Self::TooManyPages
        )
    }
}

/// The first 8 hex digits of an ID, for messages.
struct Short<'a>(&'a NodeId);

impl fmt::Display for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0.as_bytes()[..4] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

struct StoreOp {
    recipient: RecipientId,
    body: Vec<u8>,
    ttl_ms: u64,
    hash: MessageHash,
    first_sent: Option<Timestamp>,
    last_sent: Timestamp,
}

struct Walk {
    member: NodeId,
    path: Vec<Descriptor>,
    after: u64,
    fresh: Vec<MessageView>,
    /// Every hash this walk returned: a member's store holds each hash once.
    hashes: BTreeSet<MessageHash>,
    pages: usize,
}

struct FetchOp {
    identity: IdentityKey,
    cursors: FetchCursors,
    walk: Option<Walk>,
}

enum OpKind {
    Store(StoreOp),
    Fetch(Box<FetchOp>),
}

impl OpKind {
    fn recipient(&self) -> RecipientId {
        match self {
            Self::Store(s) => s.recipient,
            Self::Fetch(f) => f.identity.recipient_id(),
        }
    }
}

struct Op {
    kind: OpKind,
    /// Try this member first (store) or only this one (fetch).
    pinned: Option<NodeId>,
    /// Swarm members in the order they are tried; empty until the directory is there.
    members: Vec<NodeId>,
    /// Index into `members` of the member being tried.
    member: usize,
    /// Attempts made on that member.
    tries: usize,
    /// Attempts that member gets, fixed when its turn begins (one if it was suspected of
    /// being down then): a relay's report during the turn does not cut it short.
    limit: Option<usize>,
    /// Members that said they are not in the swarm (skipped from then on).
    redirected_by: BTreeSet<NodeId>,
    /// A redirect waits for a refreshed directory to be judged.
    pending_redirect: Option<Vec<NodeId>>,
    /// The directory was refreshed once for a redirect already.
    refreshed_for_redirect: bool,
    waiting_for_directory: bool,
    problems: Vec<AttemptFailure>,
}

impl Op {
    /// A fresh turn on the current member: its attempt count and limit start over, and a
    /// fetch walk starts over from the kept cursor.
    fn start_turn(&mut self) {
        self.tries = 0;
        self.limit = None;
        if let OpKind::Fetch(f) = &mut self.kind {
            f.walk = None;
        }
    }

    /// Gives up on the current member and turns to the next.
    fn next_member(&mut self) {
        self.member += 1;
        self.start_turn();
    }
}

/// How a member's redirect is judged once the client's ring is current: `Redirected` when
/// the nodes it named are the client's swarm, `RedirectDisagrees` (misbehaviour) otherwise.
fn redirect_problem(named: &[NodeId], swarm: &[NodeId]) -> Problem {
    if named.len() == swarm.len() && named.iter().all(|n| swarm.contains(n)) {
        Problem::Redirected
    } else {
        Problem::RedirectDisagrees
    }
}

/// A [`Client::start_store_parts`] operation: its bodies go out as ordinary store
/// operations (its parts), at most `parts_in_flight` at once.
struct PartsOp {
    recipient: RecipientId,
    ttl_ms: u64,
    /// Bodies not started yet, with their index.
    queued: VecDeque<(usize, Vec<u8>)>,
    /// Part operations running, with their index.
    running: BTreeMap<OpId, usize>,
    deliveries: Vec<Option<Delivery>>,
    failed: Option<ClientError>,
}

struct InFlight {
    op: OpId,
    keys: PathKeys,
    path: Vec<Descriptor>,
    deadline: Timestamp,
}

struct Refresh {
    id: TransmitId,
    /// Where to ask, with the TLS key pin of those the directory knows.
    sources: Vec<(Address, Option<TlsKeyHash>)>,
    source: usize,
    collected: BTreeMap<NodeId, Descriptor>,
    pages: usize,
    pow_difficulty: u8,
    deadline: Timestamp,
    last_error: Option<TransportError>,
    /// The largest listing too small for a path, used if no source has a better one.
    best_small: Option<(BTreeMap<NodeId, Descriptor>, u8)>,
}

/// The client state machine (see the module docs for the run loop).
pub struct Client {
    config: ClientConfig,
    seeds: Vec<Address>,
    nodes: BTreeMap<NodeId, Descriptor>,
    ring: Ring,
    fetched_at: Option<Timestamp>,
    /// The earliest expiry of a descriptor in the directory: past it, refresh.
    earliest_expiry: Option<Timestamp>,
    /// Set by a failed attempt: the next operation step refreshes a directory older than
    /// `directory_refresh_after_failure_ms`.
    doubt_directory: bool,
    pow_difficulty: u8,
    refresh: Option<Refresh>,
    suspects: BTreeMap<NodeId, Timestamp>,
    ops: BTreeMap<OpId, Op>,
    parts_ops: BTreeMap<OpId, PartsOp>,
    /// Which parts operation each running part belongs to.
    part_of: BTreeMap<OpId, OpId>,
    in_flight: BTreeMap<TransmitId, InFlight>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    next_id: u64,
}

impl Client {
    /// A client that learns the network from `seeds` (any nodes of it).
    #[must_use]
    pub fn new(config: ClientConfig, seeds: Vec<Address>) -> Self {
        Self {
            ring: Ring::new(config.vnodes),
            config,
            seeds,
            nodes: BTreeMap::new(),
            fetched_at: None,
            earliest_expiry: None,
            doubt_directory: false,
            pow_difficulty: 0,
            refresh: None,
            suspects: BTreeMap::new(),
            ops: BTreeMap::new(),
            parts_ops: BTreeMap::new(),
            part_of: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_id: 0,
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Sets W, the receipts a store needs, for operations started from now on.
    pub fn set_write_quorum(&mut self, w: usize) {
        self.config.write_quorum = w;
    }

    /// Verified, unexpired descriptors of the directory, by node ID.
    pub fn nodes(&self) -> impl Iterator<Item = &Descriptor> {
        self.nodes.values()
    }

    /// The proof-of-work difficulty the network announced.
    #[must_use]
    pub fn pow_difficulty(&self) -> u8 {
        self.pow_difficulty
    }

    /// Whether a directory was installed at least once.
    #[must_use]
    pub fn has_directory(&self) -> bool {
        self.fetched_at.is_some()
    }

    /// The swarm of `recipient` by the client's own ring over its directory, in ring order.
    #[must_use]
    pub fn swarm(&self, recipient: &RecipientId) -> Vec<Descriptor> {
        self.swarm_ids(recipient)
            .iter()
            .filter_map(|id| self.nodes.get(id).copied())
            .collect()
    }

    fn swarm_ids(&self, recipient: &RecipientId) -> Vec<NodeId> {
        let mut out = alloc::vec![NodeId::default(); self.config.swarm_size];
        let n = self.ring.swarm(recipient, &mut out);
        out.truncate(n);
        out
    }

    /// Starts fetching the directory now (operations also do it themselves when theirs is
    /// missing or stale). Does nothing while a refresh is under way.
    pub fn refresh_directory(&mut self, now: Timestamp) {
        if self.refresh.is_some() {
            return;
        }
        let pin_of = |a: &Address| {
            self.nodes
                .values()
                .find(|d| d.address() == a)
                .map(Descriptor::tls_key_hash)
        };
        let mut sources: Vec<(Address, Option<TlsKeyHash>)> = Vec::new();
        for a in self
            .seeds
            .iter()
            .chain(self.nodes.values().map(Descriptor::address))
        {
            if !sources.iter().any(|(s, _)| s == a) && sources.len() < self.seeds.len() + 8 {
                sources.push((*a, pin_of(a)));
            }
        }
        if sources.is_empty() {
            return self.directory_unavailable(None, 0);
        }
        let id = self.next_transmit();
        self.transmits.push_back(Transmit {
            id,
            to: sources[0].0,
            tls_key_hash: sources[0].1,
            body: TransmitBody::Directory { after: None },
        });
        self.refresh = Some(Refresh {
            id,
            sources,
            source: 0,
            collected: BTreeMap::new(),
            pages: 0,
            pow_difficulty: 0,
            deadline: now.plus_millis(self.config.request_timeout_ms),
            last_error: None,
            best_small: None,
        });
    }

    /// Starts storing `spec.body` for `spec.recipient`.
    pub fn start_store<R: CryptoRng + ?Sized>(
        &mut self,
        now: Timestamp,
        rng: &mut R,
        spec: StoreSpec,
    ) -> OpId {
        let op = self.begin_store(now, rng, spec);
        self.run_parts(now, rng);
        op
    }

    /// Starts storing every body of `spec` for `spec.recipient`, each as its own store on
    /// its own path (with the same retries as [`Client::start_store`]), at most
    /// `parts_in_flight` at once. It ends with one [`Event::StoredParts`]: delivered when
    /// every body has its W receipts; failed, with the rest abandoned, as soon as one body
    /// fails.
    pub fn start_store_parts<R: CryptoRng + ?Sized>(
        &mut self,
        now: Timestamp,
        rng: &mut R,
        spec: StorePartsSpec,
    ) -> OpId {
        self.next_id += 1;
        let id = OpId(self.next_id);
        self.parts_ops.insert(
            id,
            PartsOp {
                recipient: spec.recipient,
                ttl_ms: spec.ttl_ms,
                deliveries: spec.bodies.iter().map(|_| None).collect(),
                queued: spec.bodies.into_iter().enumerate().collect(),
                running: BTreeMap::new(),
                failed: None,
            },
        );
        self.run_parts(now, rng);
        id
    }

    /// Moves every parts operation on: takes its parts' ended stores out of the event
    /// queue, starts queued bodies while fewer than `parts_in_flight` run, and ends it when
    /// all are delivered or one failed. Runs after every call that can end a store, so a
    /// part's own event never reaches the caller.
    fn run_parts<R: CryptoRng + ?Sized>(&mut self, now: Timestamp, rng: &mut R) {
        if self.parts_ops.is_empty() {
            return;
        }
        loop {
            let mut kept = VecDeque::with_capacity(self.events.len());
            while let Some(event) = self.events.pop_front() {
                let parent = self.part_of.remove(&event.op());
                match (parent, event) {
                    (Some(parent), Event::Stored { op, result }) => {
                        let parts = self.parts_ops.get_mut(&parent).expect("parts of a live op");
                        let index = parts.running.remove(&op).expect("a running part");
                        match result {
                            Ok(delivery) => parts.deliveries[index] = Some(delivery),
                            Err(error) => {
                                parts.failed.get_or_insert(ClientError::PartFailed {
                                    index,
                                    count: parts.deliveries.len(),
                                    error: Box::new(error),
                                });
                            }
                        }
                    }
                    (_, event) => kept.push_back(event),
                }
            }
            self.events = kept;
            let mut started = false;
            let ids: Vec<OpId> = self.parts_ops.keys().copied().collect();
            for id in ids {
                let parts = self.parts_ops.get_mut(&id).expect("listed above");
                if parts.failed.is_none()
                    && parts.running.len() < self.config.parts_in_flight.max(1)
                    && let Some((index, body)) = parts.queued.pop_front()
                {
                    let spec = StoreSpec {
                        recipient: parts.recipient,
                        body,
                        ttl_ms: parts.ttl_ms,
                        first_member: None,
                    };
                    let part = self.begin_store(now, rng, spec);
                    self.part_of.insert(part, id);
                    let parts = self.parts_ops.get_mut(&id).expect("listed above");
                    parts.running.insert(part, index);
                    started = true;
                    continue;
                }
                if parts.failed.is_some() || (parts.queued.is_empty() && parts.running.is_empty()) {
                    self.end_parts(id);
                }
            }
            if !started {
                return;
            }
        }
    }

    /// Ends parts operation `id`: abandons its running parts and reports it.
    fn end_parts(&mut self, id: OpId) {
        let parts = self.parts_ops.remove(&id).expect("ending a live parts op");
        for part in parts.running.keys() {
            self.part_of.remove(part);
            self.ops.remove(part);
            let abandoned: Vec<TransmitId> = self
                .in_flight
                .iter()
                .filter(|(_, f)| f.op == *part)
                .map(|(id, _)| *id)
                .collect();
            for id in abandoned {
                self.in_flight.remove(&id);
                // Not sent yet: nothing needs to go out for a store nobody waits for.
                self.transmits.retain(|t| t.id != id);
            }
        }
        let result = match parts.failed {
            Some(error) => Err(error),
            None => Ok(parts
                .deliveries
                .into_iter()
                .map(|d| d.expect("every part delivered"))
                .collect()),
        };
        self.events.push_back(Event::StoredParts { op: id, result });
    }

    fn begin_store<R: CryptoRng + ?Sized>(
        &mut self,
        now: Timestamp,
        rng: &mut R,
        spec: StoreSpec,
    ) -> OpId {
        let hash = message_hash(&spec.recipient, Namespace::DIRECT, &spec.body);
        let op = self.new_op(
            OpKind::Store(StoreOp {
                recipient: spec.recipient,
                body: spec.body,
                ttl_ms: spec.ttl_ms,
                hash,
                first_sent: None,
                last_sent: now,
            }),
            spec.first_member,
        );
        self.advance(now, rng, op);
        op
    }

    /// Starts reading every new message of `spec.identity`'s recipient.
    pub fn start_fetch<R: CryptoRng + ?Sized>(
        &mut self,
        now: Timestamp,
        rng: &mut R,
        spec: FetchSpec,
    ) -> OpId {
        let op = self.new_op(
            OpKind::Fetch(Box::new(FetchOp {
                identity: spec.identity,
                cursors: spec.cursors,
                walk: None,
            })),
            spec.only_member,
        );
        self.advance(now, rng, op);
        self.run_parts(now, rng);
        op
    }

    fn new_op(&mut self, kind: OpKind, pinned: Option<NodeId>) -> OpId {
        self.next_id += 1;
        let id = OpId(self.next_id);
        self.ops.insert(
            id,
            Op {
                kind,
                pinned,
                members: Vec::new(),
                member: 0,
                tries: 0,
                limit: None,
                redirected_by: BTreeSet::new(),
                pending_redirect: None,
                refreshed_for_redirect: false,
                waiting_for_directory: false,
                problems: Vec::new(),
            },
        );
        id
    }

    fn next_transmit(&mut self) -> TransmitId {
        self.next_id += 1;
        TransmitId(self.next_id)
    }

    /// The next exchange to carry out.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next operation that ended.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        // A part's own event is for its parts operation, which takes it in at the next
        // call that can move it on; it never reaches the caller.
        let at = self
            .events
            .iter()
            .position(|e| !self.part_of.contains_key(&e.op()))?;
        self.events.remove(at)
    }

    /// When [`Client::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.in_flight
            .values()
            .map(|f| f.deadline)
            .chain(self.refresh.as_ref().map(|r| r.deadline))
            .min()
    }

    /// Fails every exchange whose time is up. Calling it early or twice does nothing.
    pub fn handle_timeout<R: CryptoRng + ?Sized>(&mut self, now: Timestamp, rng: &mut R) {
        if let Some(r) = &self.refresh
            && r.deadline <= now
        {
            let id = r.id;
            self.handle_directory(now, rng, id, Err(TransportError::Timeout));
        }
        let expired: Vec<TransmitId> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.handle_onion_answer(now, rng, id, Err(TransportError::Timeout));
        }
    }

    /// The answer to a [`TransmitBody::Directory`] exchange. Answers to exchanges the
    /// client no longer waits for are ignored.
    pub fn handle_directory<R: CryptoRng + ?Sized>(
        &mut self,
        now: Timestamp,
        rng: &mut R,
        id: TransmitId,
        answer: Result<DirectoryAnswer, TransportError>,
    ) {
        self.take_directory(now, rng, id, answer);
        self.run_parts(now, rng);
    }

    fn take_directory<R: CryptoRng + ?Sized>(
        &mut self,
        now: Timestamp,
        rng: &mut R,
        id: TransmitId,
        answer: Result<DirectoryAnswer, TransportError>,
    ) {
        let timeout = self.config.request_timeout_ms;
        let Some(r) = self.refresh.as_mut().filter(|r| r.id == id) else {
            return;
        };
        match answer {
            Ok(page) => {
                r.pages += 1;
                r.pow_difficulty = r.pow_difficulty.max(page.pow_difficulty);
                for u in page.nodes {
                    // Forged, expired or implausibly long-lived descriptors are dropped
                    // one by one (nodes refuse the last kind too): the rest of a listing
                    // is still worth having.
                    let Ok(d) = u.verify() else { continue };
                    if !d.is_valid_at(now) || !crate::directory::is_plausible(&d, now) {
                        continue;
                    }
                    match r.collected.get(&d.node_id()) {
                        Some(old) if !d.supersedes(old) => {}
                        Some(_) => {
                            r.collected.insert(d.node_id(), d);
                        }
                        None if r.collected.len() < MAX_DIRECTORY_NODES => {
                            r.collected.insert(d.node_id(), d);
                        }
                        None => {}
                    }
                }
                let more = page.next.filter(|_| {
                    r.pages < MAX_DIRECTORY_PAGES && r.collected.len() < MAX_DIRECTORY_NODES
                });
                if let Some(after) = more {
                    let (to, tls_key_hash) = r.sources[r.source];
                    let id = self.next_transmit();
                    let r = self.refresh.as_mut().expect("matched above");
                    r.id = id;
                    r.deadline = now.plus_millis(timeout);
                    self.transmits.push_back(Transmit {
                        id,
                        to,
                        tls_key_hash,
                        body: TransmitBody::Directory { after: Some(after) },
                    });
                    return;
                }
                if r.collected.len() < self.config.path_hops {
                    // A node that just restarted may know almost nobody: ask the next
                    // source, and keep this listing in case none knows more.
                    if r.best_small
                        .as_ref()
                        .is_none_or(|(b, _)| b.len() < r.collected.len())
                    {
                        let collected = core::mem::take(&mut r.collected);
                        r.best_small = Some((collected, r.pow_difficulty));
                    }
                    return self.next_directory_source(now, rng);
                }
                let mut r = self.refresh.take().expect("matched above");
                if let Some((small, _)) = &r.best_small {
                    // A small listing may still hold newer descriptors (a restarted node
                    // lists its new onion key before the others have heard of it); the
                    // signature and epoch decide, not which source said it.
                    for d in small.values() {
                        if let Some(old) = r.collected.get_mut(&d.node_id())
                            && d.supersedes(old)
                        {
                            *old = *d;
                        }
                    }
                }
                self.install_directory(now, r.collected, r.pow_difficulty);
                self.resume_waiting(now, rng);
            }
            Err(e) => {
                r.last_error = Some(e);
                self.next_directory_source(now, rng);
            }
        }
    }

    fn next_directory_source<R: CryptoRng + ?Sized>(&mut self, now: Timestamp, rng: &mut R) {
        let r = self.refresh.as_mut().expect("called during a refresh");
        r.source += 1;
        r.collected.clear();
        r.pages = 0;
        r.pow_difficulty = 0;
        if r.source < r.sources.len() {
            let (to, tls_key_hash) = r.sources[r.source];
            let id = self.next_transmit();
            let r = self.refresh.as_mut().expect("checked above");
            r.id = id;
            r.deadline = now.plus_millis(self.config.request_timeout_ms);
            self.transmits.push_back(Transmit {
                id,
                to,
                tls_key_hash,
                body: TransmitBody::Directory { after: None },
            });
            return;
        }
        let r = self.refresh.take().expect("checked above");
        if let Some((small, pow)) = r.best_small.filter(|(b, _)| b.len() > self.nodes.len()) {
            // Every source knows too few nodes for a path: that is the network as it is.
            self.install_directory(now, small, pow);
            self.resume_waiting(now, rng);
        } else if self.nodes.is_empty() {
            self.directory_unavailable(r.last_error, r.sources.len());
        } else {
            // Keep the older view: it was verified, and it is better than none. It counts
            // as fresh again so the next operation does not ask everyone once more.
            self.fetched_at = Some(now);
            self.resume_waiting(now, rng);
        }
    }

    fn directory_unavailable(&mut self, last: Option<TransportError>, asked: usize) {
        let waiting: Vec<OpId> = self
            .ops
            .iter()
            .filter(|(_, o)| o.waiting_for_directory)
            .map(|(id, _)| *id)
            .collect();
        for op in waiting {
            self.finish(op, Err(ClientError::NoDirectory { asked, last }));
        }
    }

    fn install_directory(
        &mut self,
        now: Timestamp,
        nodes: BTreeMap<NodeId, Descriptor>,
        pow_difficulty: u8,
    ) {
        let mut ring = Ring::new(self.config.vnodes);
        for id in nodes.keys() {
            ring.insert(*id);
        }
        self.earliest_expiry = nodes.values().map(Descriptor::expires).min();
        self.ring = ring;
        self.nodes = nodes;
        self.pow_difficulty = pow_difficulty;
        self.fetched_at = Some(now);
        self.doubt_directory = false;
    }

    fn resume_waiting<R: CryptoRng + ?Sized>(&mut self, now: Timestamp, rng: &mut R) {
        let waiting: Vec<OpId> = self
            .ops
            .iter()
            .filter(|(_, o)| o.waiting_for_directory)
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            let ring_swarm = {
                let op = &self.ops[&id];
                self.swarm_ids(&op.kind.recipient())
            };
            let op = self.ops.get_mut(&id).expect("listed above");
            op.waiting_for_directory = false;
            if let Some(named) = op.pending_redirect.take() {
                let member = op.members.get(op.member).copied().unwrap_or_default();
                op.problems.push(AttemptFailure {
                    member,
                    problem: redirect_problem(&named, &ring_swarm),
                });
            }
            // Members are recomputed from the new ring; progress starts over on it, with
            // members that redirected left out.
            op.members.clear();
            op.member = 0;
            op.start_turn();
            self.advance(now, rng, id);
        }
    }

    fn directory_is_stale(&self, now: Timestamp) -> bool {
        let Some(at) = self.fetched_at else {
            return true;
        };
        let age = now.millis_since(at);
        age > self.config.directory_max_age_ms
            || self.earliest_expiry.is_some_and(|e| now > e)
            || (self.doubt_directory && age > self.config.directory_refresh_after_failure_ms)
    }

    fn is_suspect(&self, id: &NodeId, now: Timestamp) -> bool {
        self.suspects
            .get(id)
            .is_some_and(|since| now.millis_since(*since) < self.config.suspect_ms)
    }

    /// Sends the operation's next attempt, or ends it.
    fn advance<R: CryptoRng + ?Sized>(&mut self, now: Timestamp, rng: &mut R, id: OpId) {
        if self.directory_is_stale(now) {
            self.refresh_directory(now);
            if let Some(op) = self.ops.get_mut(&id) {
                op.waiting_for_directory = self.refresh.is_some();
            }
            if self.refresh.is_some() {
                return;
            }
        }
        let Some(op) = self.ops.get(&id) else { return };
        if op.members.is_empty() {
            let mut members = match (&op.kind, op.pinned) {
                // Reading one named node is a signed retrieve like any other: it goes to
                // that node even when the client's ring disagrees, and the node answers
                // with a redirect if it is not in the swarm.
                (OpKind::Fetch(_), Some(only)) if self.nodes.contains_key(&only) => {
                    alloc::vec![only]
                }
                _ => self.swarm_ids(&op.kind.recipient()),
            };
            members.retain(|m| !op.redirected_by.contains(m));
            // Members not suspected of being down first, the pinned one before all; the
            // sort is stable, so ring order decides the rest.
            members.sort_by_key(|m| (Some(*m) != op.pinned, self.is_suspect(m, now)));
            let op = self.ops.get_mut(&id).expect("looked up above");
            op.members = members;
        }
        loop {
            let op = self.ops.get(&id).expect("looked up above");
            let Some(&member) = op.members.get(op.member) else {
                let attempts = core::mem::take(&mut self.ops.get_mut(&id).expect("ok").problems);
                return self.finish(id, Err(ClientError::Failed { attempts }));
            };
            let limit = op.limit.unwrap_or(if self.is_suspect(&member, now) {
                1
            } else {
                self.config.attempts_per_member.max(1)
            });
            self.ops.get_mut(&id).expect("looked up above").limit = Some(limit);
            let op = self.ops.get(&id).expect("looked up above");
            if op.tries >= limit {
                self.ops
                    .get_mut(&id)
                    .expect("looked up above")
                    .next_member();
                continue;
            }
            let Some(last) = self.nodes.get(&member).copied() else {
                // The ring only holds directory nodes; skip anything else defensively.
                self.ops
                    .get_mut(&id)
                    .expect("looked up above")
                    .next_member();
                continue;
            };
            let path = match self.choose_path(&last, now, rng) {
                Ok(p) => p,
                Err(e) => return self.finish(id, Err(e)),
            };
            return self.send_attempt(now, rng, id, path);
        }
    }

    /// Two (path_hops − 1) random relays other than `last`, then `last`; relays reported
    /// down are avoided while enough others remain.
    fn choose_path<R: CryptoRng + ?Sized>(
        &self,
        last: &Descriptor,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<Vec<Descriptor>, ClientError> {
        let relays_needed = self.config.path_hops.max(1) - 1;
        let others = || {
            self.nodes
                .values()
                .filter(|d| d.node_id() != last.node_id() && d.is_valid_at(now))
        };
        let mut relays: Vec<Descriptor> = others()
            .filter(|d| !self.is_suspect(&d.node_id(), now))
            .copied()
            .collect();
        if relays.len() < relays_needed {
            // Suspicion may be stale: with too few unsuspected nodes, use every node.
            relays = others().copied().collect();
        }
        if relays.len() < relays_needed {
            return Err(ClientError::TooFewNodes {
                nodes: relays.len() + 1,
                needed: self.config.path_hops,
            });
        }
        // Partial Fisher–Yates: the first relays_needed entries become a uniform sample.
        for i in 0..relays_needed {
            let span = (relays.len() - i) as u64;
            let j = i + (rng.next_u64() % span) as usize;
            relays.swap(i, j);
        }
        relays.truncate(relays_needed);
        relays.push(*last);
        Ok(relays)
    }

    fn send_attempt<R: CryptoRng + ?Sized>(
        &mut self,
        now: Timestamp,
        rng: &mut R,
        id: OpId,
        path: Vec<Descriptor>,
    ) {
        let pow_difficulty = self.pow_difficulty;
        let (page_limit, pow_max_tries) = (self.config.page_limit, self.config.pow_max_tries);
        let op = self.ops.get_mut(&id).expect("caller checked");
        op.tries += 1;
        let member = path[path.len() - 1].node_id();
        let mut payload = [0u8; MAX_PAYLOAD];
        let encoded = match &mut op.kind {
            OpKind::Store(s) => {
                let mut request = StoreRequest {
                    recipient: s.recipient,
                    namespace: Namespace::DIRECT,
                    timestamp: now,
                    ttl_ms: s.ttl_ms,
                    pow_nonce: 0,
                    body: &s.body,
                };
                if pow_difficulty > 0 {
                    match solve_pow(&request, pow_difficulty, pow_max_tries) {
                        Some(nonce) => request.pow_nonce = nonce,
                        None => {
                            let e = ClientError::PowUnsolved {
                                difficulty: pow_difficulty,
                            };
                            return self.finish(id, Err(e));
                        }
                    }
                }
                s.first_sent = s.first_sent.or(Some(now));
                s.last_sent = now;
                Request::Store(request).encode(None, &mut payload)
            }
            OpKind::Fetch(f) => {
                let walk = f.walk.get_or_insert_with(|| Walk {
                    member,
                    path: path.clone(),
                    after: f.cursors.after.get(&member).copied().unwrap_or(0),
                    fresh: Vec::new(),
                    hashes: BTreeSet::new(),
                    pages: 0,
                });
                let request = Request::Retrieve(RetrieveRequest {
                    recipient: f.identity.recipient_id(),
                    namespace: Namespace::DIRECT,
                    timestamp: now,
                    after: walk.after,
                    limit: page_limit,
                });
                request.encode(Some(&f.identity), &mut payload)
            }
        };
        let len = match encoded {
            Ok(n) => n,
            Err(_) => {
                let len = match &op.kind {
                    OpKind::Store(s) => s.body.len(),
                    OpKind::Fetch(_) => 0,
                };
                return self.finish(id, Err(ClientError::BodyTooLarge { len }));
            }
        };
        let reply_len = match &op.kind {
            OpKind::Store(_) => self.config.reply_len,
            OpKind::Fetch(_) => self.config.fetch_reply_len,
        };
        let hops: Vec<PathHop> = path.iter().map(PathHop::from).collect();
        let mut packet = Box::new([0u8; PACKET_LEN]);
        let keys = match packet::build(
            &hops,
            &payload[..len],
            packet::grid_expiry(now, self.config.packet_lifetime_ms),
            reply_len,
            rng,
            &mut packet,
        ) {
            Ok(k) => k,
            Err(e @ (BuildError::NotAReplyBucket { .. } | BuildError::ExpiryOffGrid)) => {
                return self.finish(id, Err(ClientError::BadConfig(e)));
            }
            Err(_) => {
                // A descriptor with an unusable onion key (all-zero shared secret): the
                // attempt fails like an unreachable hop, and the next path avoids it.
                self.suspects.insert(path[0].node_id(), now);
                return self.attempt_failed(
                    now,
                    rng,
                    id,
                    member,
                    Problem::FirstHopUnreachable {
                        address: *path[0].address(),
                        error: TransportError::Malformed,
                    },
                );
            }
        };
        let tid = self.next_transmit();
        self.transmits.push_back(Transmit {
            id: tid,
            to: *path[0].address(),
            tls_key_hash: Some(path[0].tls_key_hash()),
            body: TransmitBody::Onion(packet),
        });
        self.in_flight.insert(
            tid,
            InFlight {
                op: id,
                keys,
                path,
                deadline: now.plus_millis(self.config.request_timeout_ms),
            },
        );
    }

    /// The answer to a [`TransmitBody::Onion`] exchange (the reply bytes, opened in
    /// place). Answers to exchanges the client no longer waits for are ignored.
    pub fn handle_onion_answer<R: CryptoRng + ?Sized>(
        &mut self,
        now: Timestamp,
        rng: &mut R,
        id: TransmitId,
        answer: Result<&mut [u8], TransportError>,
    ) {
        self.take_onion_answer(now, rng, id, answer);
        self.run_parts(now, rng);
    }

    fn take_onion_answer<R: CryptoRng + ?Sized>(
        &mut self,
        now: Timestamp,
        rng: &mut R,
        id: TransmitId,
        answer: Result<&mut [u8], TransportError>,
    ) {
        let Some(flight) = self.in_flight.remove(&id) else {
            return;
        };
        if !self.ops.contains_key(&flight.op) {
            return;
        }
        let path = &flight.path;
        let member = path[path.len() - 1].node_id();
        let response = match answer {
            Err(error) => {
                self.suspects.insert(path[0].node_id(), now);
                let problem = Problem::FirstHopUnreachable {
                    address: *path[0].address(),
                    error,
                };
                return self.attempt_failed(now, rng, flight.op, member, problem);
            }
            Ok(bytes) => match reply::open(flight.keys.reply_keys(), bytes) {
                Ok(Opened::Response { body }) => match Response::decode(body) {
                    Ok(r) => r,
                    Err(e) => {
                        let problem = Problem::MalformedAnswer(e);
                        return self.attempt_failed(now, rng, flight.op, member, problem);
                    }
                },
                Ok(Opened::Failed { hop, failure, .. }) => {
                    if matches!(
                        failure,
                        HopFailure::NextHopUnreachable
                            | HopFailure::NextHopTimeout
                            | HopFailure::NextHopBadReply
                            | HopFailure::NextHopRefused
                    ) && let Some(next) = path.get(hop + 1)
                    {
                        // A failure report blames a link, not a node: the next hop may
                        // be down or busy, or the reporting hop may not reach it (it may
                        // not know it yet) or lie to discredit it. Both are avoided for a
                        // while, the same, so a lying hop costs itself as much as the
                        // node it accuses.
                        self.suspects.insert(next.node_id(), now);
                        self.suspects.insert(path[hop].node_id(), now);
                    }
                    let problem = Problem::HopFailed {
                        hop: hop + 1,
                        address: *path.get(hop).unwrap_or(&path[0]).address(),
                        failure,
                    };
                    return self.attempt_failed(now, rng, flight.op, member, problem);
                }
                Err(_) => {
                    return self.attempt_failed(now, rng, flight.op, member, Problem::Unauthentic);
                }
            },
        };
        // The path worked: none of its hops is down.
        for d in path {
            self.suspects.remove(&d.node_id());
        }
        if let Response::Redirect { swarm } = &response {
            let named: Vec<NodeId> = swarm.iter().map(Descriptor::node_id).collect();
            return self.redirected(now, rng, flight.op, member, named);
        }
        if let Response::Refused(error) = response {
            if matches!(
                error,
                RequestError::QuorumNotReached | RequestError::Unavailable
            ) {
                // A member that cannot reach its quorum (its peers withhold, or are cut
                // off from it) or whose storage failed says nothing of the others: the
                // next member is asked, with the attempts of this one left unspent.
                return self.skip_member(now, rng, flight.op, member, Problem::CannotServe(error));
            }
            return self.finish(flight.op, Err(ClientError::Refused { member, error }));
        }
        let op = self.ops.get_mut(&flight.op).expect("checked above");
        match &mut op.kind {
            OpKind::Store(s) => {
                let Response::Stored(ack) = response else {
                    return self.skip_member(
                        now,
                        rng,
                        flight.op,
                        member,
                        Problem::UnexpectedAnswer,
                    );
                };
                let first = s.first_sent.unwrap_or(now);
                let expiry =
                    requested_expiry(first, s.last_sent, s.ttl_ms, self.config.auth_window_ms);
                let (hash, recipient) = (s.hash, s.recipient);
                let swarm = self.swarm_ids(&recipient);
                match ack.verify_quorum(&hash, &recipient, &swarm, self.config.write_quorum, expiry)
                {
                    Ok(()) => {
                        let op = self.ops.remove(&flight.op).expect("checked above");
                        self.events.push_back(Event::Stored {
                            op: flight.op,
                            result: Ok(Delivery {
                                ack,
                                path: flight.path,
                                problems: op.problems,
                            }),
                        });
                    }
                    Err(e) => {
                        self.skip_member(
                            now,
                            rng,
                            flight.op,
                            member,
                            Problem::BadAcknowledgement(e),
                        );
                    }
                }
            }
            OpKind::Fetch(f) => {
                let Response::Messages { messages, more } = response else {
                    return self.skip_member(
                        now,
                        rng,
                        flight.op,
                        member,
                        Problem::UnexpectedAnswer,
                    );
                };
                let recipient = f.identity.recipient_id();
                let walk = f.walk.as_mut().expect("a retrieve is sent within a walk");
                for m in messages {
                    if m.seq <= walk.after {
                        let problem = Problem::CursorWentBack {
                            seq: m.seq,
                            after: walk.after,
                        };
                        return self.skip_member(now, rng, flight.op, member, problem);
                    }
                    // The member could claim any hash (and poison the seen-list with it):
                    // only the body's own hash counts.
                    if message_hash(&recipient, Namespace::DIRECT, &m.body) != m.hash {
                        let problem = Problem::BodyHashMismatch { claimed: m.hash };
                        return self.skip_member(now, rng, flight.op, member, problem);
                    }
                    if !walk.hashes.insert(m.hash) {
                        let problem = Problem::DuplicateMessage { hash: m.hash };
                        return self.skip_member(now, rng, flight.op, member, problem);
                    }
                    walk.after = m.seq;
                    if !f.cursors.seen.contains(&m.hash) {
                        walk.fresh.push(m);
                    }
                }
                walk.pages += 1;
                if more && walk.pages >= MAX_PAGES_PER_WALK {
                    return self.skip_member(now, rng, flight.op, member, Problem::TooManyPages);
                }
                if more {
                    let path = walk.path.clone();
                    return self.send_attempt(now, rng, flight.op, path);
                }
                let walk = f.walk.take().expect("checked above");
                f.cursors.after.insert(walk.member, walk.after);
                let cap = self.config.seen_memory;
                for m in &walk.fresh {
                    f.cursors.remember(m.hash, cap);
                }
                let op = self.ops.remove(&flight.op).expect("checked above");
                let OpKind::Fetch(f) = op.kind else {
                    unreachable!("matched as a fetch above")
                };
                self.events.push_back(Event::Fetched {
                    op: flight.op,
                    cursors: f.cursors,
                    result: Ok(Fetched {
                        messages: walk.fresh,
                        path: walk.path,
                        problems: op.problems,
                    }),
                });
            }
        }
    }

    /// A path failed: note it, doubt the directory, try again.
    fn attempt_failed<R: CryptoRng + ?Sized>(
        &mut self,
        now: Timestamp,
        rng: &mut R,
        id: OpId,
        member: NodeId,
        problem: Problem,
    ) {
        self.doubt_directory = true;
        if let Some(op) = self.ops.get_mut(&id) {
            op.problems.push(AttemptFailure { member, problem });
            if let OpKind::Fetch(f) = &mut op.kind {
                // A walk that broke is read again from the kept cursor.
                f.walk = None;
            }
        }
        self.advance(now, rng, id);
    }

    /// The member answered something an honest member cannot, or that it cannot serve
    /// now: no other path to it will do better, so the next member is tried.
    fn skip_member<R: CryptoRng + ?Sized>(
        &mut self,
        now: Timestamp,
        rng: &mut R,
        id: OpId,
        member: NodeId,
        problem: Problem,
    ) {
        if let Some(op) = self.ops.get_mut(&id) {
            op.problems.push(AttemptFailure { member, problem });
            op.next_member();
        }
        self.advance(now, rng, id);
    }

    fn redirected<R: CryptoRng + ?Sized>(
        &mut self,
        now: Timestamp,
        rng: &mut R,
        id: OpId,
        member: NodeId,
        named: Vec<NodeId>,
    ) {
        let op = self.ops.get_mut(&id).expect("caller checked");
        op.redirected_by.insert(member);
        if let OpKind::Fetch(f) = &mut op.kind {
            f.walk = None;
        }
        if op.refreshed_for_redirect {
            // One refresh per operation: a second redirect is judged by the ring as it is.
            let swarm = {
                let recipient = op.kind.recipient();
                self.swarm_ids(&recipient)
            };
            let op = self.ops.get_mut(&id).expect("caller checked");
            op.problems.push(AttemptFailure {
                member,
                problem: redirect_problem(&named, &swarm),
            });
            op.next_member();
            return self.advance(now, rng, id);
        }
        op.refreshed_for_redirect = true;
        op.pending_redirect = Some(named);
        op.waiting_for_directory = true;
        self.refresh_directory(now);
        if self.refresh.is_none() {
            // No source to ask: judge the redirect by the directory as it is.
            self.resume_waiting(now, rng);
        }
    }

    /// Ends operation `id` with `e`.
    fn finish(&mut self, id: OpId, e: Result<core::convert::Infallible, ClientError>) {
        let Err(error) = e;
        let Some(op) = self.ops.remove(&id) else {
            return;
        };
        self.in_flight.retain(|_, f| f.op != id);
        self.events.push_back(match op.kind {
            OpKind::Store(_) => Event::Stored {
                op: id,
                result: Err(error),
            },
            OpKind::Fetch(f) => Event::Fetched {
                op: id,
                cursors: f.cursors,
                result: Err(error),
            },
        });
    }
}
