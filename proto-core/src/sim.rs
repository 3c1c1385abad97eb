//! Deterministic simulation: N nodes, a virtual clock, and an in-memory network with
//! delay, loss, partitions and crashes, plus the real [`Client`] state machine (the one
//! the `ghost` CLI runs) for stores and fetches through three hops.
//!
//! The simulation owns time and the network and nothing else: every decision is made by
//! the real [`Node`] and [`Client`] state machines it drives. [`Sim::send_via`] sends one
//! hand-made request along a given path, for tests of node behaviour only. A run is a function of its seed — the same
//! seed replays the same run, event for event — which is what lets a failing seed be
//! printed and debugged. A crash drops a node's in-memory state and every write its store
//! had not reported durable; the node restarts from its durable state with the same keys.

use alloc::collections::{BTreeMap, BTreeSet, BinaryHeap};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cmp::Reverse;

use chacha20::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::client::{
    self, Client, ClientConfig, ClientError, Delivery, DirectoryAnswer, FetchCursors, FetchSpec,
    StorePartsSpec, StoreSpec, TransmitBody, TransportError,
};
use crate::keys::{
    Address, Descriptor, IdentityKey, MAX_DESCRIPTOR_LEN, OnionKey, UnverifiedDescriptor,
};
use crate::node::{
    Endpoint, Node, NodeConfig, NodeKeys, Output, Reply, RequestId, TransmitFailure, TransmitId,
};
use crate::packet::{self, PACKET_LEN, PathHop};
use crate::peer::{self, PeerRequest, PeerResponse, WireMessage};
use crate::reply::{self, Opened};
use crate::request::{
    DeleteRequest, DeleteSelector, HashList, Origin as RequestOrigin, Request, RequestError,
    Response,
};
use crate::ring::Ring;
use crate::store::{MemoryBackend, StoredMessage};
use crate::types::{Epoch, MessageHash, Namespace, NodeId, RecipientId, Timestamp, TlsKeyHash};

/// Network and timing parameters of a simulation.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Probability that an exchange (request or answer) is lost, in 1/1000.
    pub loss_per_mille: u32,
    /// Smallest one-way delay, ms.
    pub min_delay_ms: u64,
    /// Largest one-way delay, ms.
    pub max_delay_ms: u64,
    /// Largest delay between a write and its durability report (group commit), ms.
    pub max_commit_delay_ms: u64,
    /// Configuration of every node.
    pub node: NodeConfig,
    /// Configuration of the client.
    pub client: ClientConfig,
    /// How often an adversarial node misbehaves, ms.
    pub adversary_round_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        let node = NodeConfig {
            // Small filters: the simulation runs thousands of networks.
            replay_filter_words: crate::replay::BUCKETS * 64,
            // As on the TLS links nodes run by default.
            session_authenticated_peers: true,
            ..NodeConfig::default()
        };
        Self {
            nodes: 5,
            loss_per_mille: 0,
            min_delay_ms: 1,
            max_delay_ms: 20,
            max_commit_delay_ms: 5,
            client: ClientConfig {
                swarm_size: node.swarm_size,
                vnodes: node.vnodes,
                write_quorum: node.write_quorum,
                // Lost exchanges are retried as a client would; at 2 % loss per exchange
                // a 3-hop attempt fails about one time in eight, so ten attempts all
                // failing is a one-in-a-billion event, not a protocol failure.
                attempts_per_member: 10,
                // Nodes restart with new onion keys: the client re-reads the directory
                // soon after a failure.
                directory_max_age_ms: 60_000,
                directory_refresh_after_failure_ms: 1_000,
                ..ClientConfig::default()
            },
            node,
            adversary_round_ms: 1_000,
        }
    }
}

/// Who waits for the answer to an exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Origin {
    Node {
        node: usize,
        id: TransmitId,
    },
    /// The client state machine.
    Client {
        id: client::TransmitId,
    },
    /// A hand-made request of [`Sim::send_via`].
    Raw {
        op: u64,
    },
    /// Something an adversarial node made up or replayed; the answer is dropped.
    Forged {
        node: usize,
    },
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A request arrives at `to`.
    Request {
        to: usize,
        from: Origin,
        endpoint: EndpointKind,
        body: Vec<u8>,
    },
    /// The answer to an exchange arrives at its origin.
    Answer {
        to: Origin,
        result: Result<Vec<u8>, Failure>,
    },
    /// A node's store commits its pending writes.
    Commit { node: usize, generation: u64 },
    /// A node's timer.
    Wake { node: usize, generation: u64 },
    /// A directory listing reaches the client (kept in `Sim::directory_answers`).
    DirectoryAnswer { id: client::TransmitId },
    /// An adversarial node's round of misbehaviour.
    Misbehave { node: usize, generation: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum EndpointKind {
    Onion,
    Peer,
    Directory { after: Option<NodeId> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Failure {
    /// The target is down or its answer cannot reach the origin.
    Unreachable,
}

/// The hash of the TLS key a simulated node's links present (the simulation has no TLS;
/// pins are still checked against it).
fn sim_tls_key_hash(identity_seed: &[u8; 32]) -> TlsKeyHash {
    let mut hash = *identity_seed;
    for b in &mut hash {
        *b ^= 0xa5;
    }
    TlsKeyHash(hash)
}

struct SimNode {
    identity_seed: [u8; 32],
    onion_secret: [u8; 32],
    address: Address,
    node: Option<Node<MemoryBackend>>,
    /// The backend as it survives a crash (durable writes only), while the node is down.
    crashed_backend: Option<MemoryBackend>,
    /// Bumped on crash so stale timers and commits of the old incarnation are ignored.
    generation: u64,
    /// Inbound requests awaiting this node's answer.
    inbound: BTreeMap<RequestId, Origin>,
    next_req: u64,
    /// The one wake-up scheduled for this node, so timers do not pile up.
    wake_at: Option<Timestamp>,
    /// Addresses of the nodes it knew when it went down: extra seeds at its restart, as
    /// the peers file the node binary keeps.
    known_peers: Vec<Address>,
}

impl SimNode {
    /// Node `i` with fresh keys from `rng`, not yet started.
    fn fresh(i: usize, rng: &mut ChaCha20Rng) -> Self {
        let mut identity_seed = [0u8; 32];
        let mut onion_secret = [0u8; 32];
        rng.fill_bytes(&mut identity_seed);
        rng.fill_bytes(&mut onion_secret);
        Self {
            identity_seed,
            onion_secret,
            address: sim_address(i),
            node: None,
            crashed_backend: Some(MemoryBackend::default()),
            generation: 0,
            inbound: BTreeMap::new(),
            next_req: 0,
            wake_at: None,
            known_peers: Vec::new(),
        }
    }
}

/// What a client operation ended with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOutcome {
    /// The final hop answered.
    Response(Response),
    /// A hop reported a failure.
    HopFailed {
        /// Which hop (0 = first).
        hop: usize,
        /// What it reported.
        failure: crate::reply::HopFailure,
    },
    /// No answer, or an answer that did not authenticate.
    Lost,
}

/// How an adversarial node misbehaves. It runs the real node state machine, keys and
/// all, so it is a live member that answers probes and serves onion traffic; the
/// simulation adds what it makes up or replays and withholds what it should pass on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adversary {
    /// Takes part in membership and onion traffic but neither answers nor sends
    /// replication, anti-entropy or relayed changes: it hands nothing over.
    Withholding,
    /// Sends copies that break the store rules (owner-only without the owner's signature,
    /// stretched TTLs, store times in the future, valid messages for swarms it is not in),
    /// deletes signed with its own key, its own descriptor valid for years, and adds
    /// unrequested messages to its fetch answers.
    Lying,
    /// Records the envelopes and onion packets it sees and sends them again later, as
    /// they were and, for relayed deletes, re-wrapped in its own envelope.
    Replaying,
    /// Gossips descriptors of nodes that are down and of identities at addresses where
    /// nothing answers, every round.
    GossipingTheDead,
}

/// Every message an adversary makes up carries this at the start of its body, so a test
/// can tell that none was stored by an honest node.
pub const FORGED_MARK: &[u8] = b"forged by an adversary";

/// What an adversarial node knows besides its node.
struct AdversaryState {
    how: Adversary,
    /// (target, endpoint, body) of envelopes and onion packets seen, newest last.
    recorded: Vec<(usize, EndpointKind, Vec<u8>)>,
    /// Recipient-signed changes seen inside relays.
    changes: Vec<Vec<u8>>,
    /// Made-up identities whose descriptors name addresses nobody answers at.
    fakes: Vec<(IdentityKey, OnionKey, Address)>,
}

/// How much an adversary remembers for replaying.
const ADVERSARY_MEMORY: usize = 32;

/// A whole simulated network.
pub struct Sim {
    config: SimConfig,
    now: Timestamp,
    rng: ChaCha20Rng,
    nodes: Vec<SimNode>,
    events: BinaryHeap<Reverse<(Timestamp, u64, Event)>>,
    seq: u64,
    partitioned: BTreeSet<usize>,
    raw_ops: BTreeMap<u64, (packet::PathKeys, Option<ClientOutcome>)>,
    next_op: u64,
    client: Client,
    /// Directory listings on their way to the client.
    directory_answers: BTreeMap<client::TransmitId, Result<DirectoryAnswer, TransportError>>,
    /// Client operations that ended, until a test collects them.
    client_events: BTreeMap<client::OpId, client::Event>,
    /// Event log for replaying a failing seed, when enabled.
    trace: Option<Vec<String>>,
    /// Adversarial nodes by index.
    adversaries: BTreeMap<usize, AdversaryState>,
}

const START: Timestamp = Timestamp(1_800_000_000_000);

impl Sim {
    /// A network of `config.nodes` nodes, all seeded with node 0 as their seed address.
    #[must_use]
    pub fn new(config: SimConfig, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut nodes = Vec::new();
        for i in 0..config.nodes {
            nodes.push(SimNode::fresh(i, &mut rng));
        }
        let client = Client::new(config.client.clone(), vec![sim_address(0)]);
        let mut sim = Self {
            config,
            now: START,
            rng,
            nodes,
            events: BinaryHeap::new(),
            seq: 0,
            partitioned: BTreeSet::new(),
            raw_ops: BTreeMap::new(),
            next_op: 0,
            client,
            directory_answers: BTreeMap::new(),
            client_events: BTreeMap::new(),
            trace: None,
            adversaries: BTreeMap::new(),
        };
        for i in 0..sim.nodes.len() {
            sim.start(i);
        }
        sim
    }

    /// The virtual clock.
    #[must_use]
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Number of nodes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the network has no nodes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node at `i`, if it is up.
    #[must_use]
    pub fn node(&self, i: usize) -> Option<&Node<MemoryBackend>> {
        self.nodes[i].node.as_ref()
    }

    /// Node IDs in index order.
    #[must_use]
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .map(|n| IdentityKey::from_seed(&n.identity_seed).node_id())
            .collect()
    }

    fn start(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let backend = n.crashed_backend.take().unwrap_or_default();
        let mut seeds = vec![sim_address(0)];
        seeds.extend(core::mem::take(&mut n.known_peers));
        let mut rng = ChaCha20Rng::from_seed(n.identity_seed);
        let keys = NodeKeys {
            identity: IdentityKey::from_seed(&n.identity_seed),
            // As the node binary does: the start time in seconds, here plus the number of
            // restarts so a restart within the second still starts a higher epoch (above
            // any key the node rotated to before it went down).
            onion: OnionKey::from_secret_bytes(
                n.onion_secret,
                Epoch(u32::try_from(self.now.0 / 1000 + n.generation).unwrap_or(u32::MAX)),
            ),
            tls_key_hash: sim_tls_key_hash(&n.identity_seed),
            address: n.address,
        };
        let node = Node::new(
            self.config.node.clone(),
            keys,
            seeds,
            backend,
            self.now,
            &mut rng,
        )
        .expect("a memory backend always opens");
        n.node = Some(node);
        n.wake_at = Some(self.now);
        let generation = n.generation;
        self.push(
            self.now,
            Event::Wake {
                node: i,
                generation,
            },
        );
        if self.adversaries.contains_key(&i) {
            let at = self.now.plus_millis(self.config.adversary_round_ms);
            self.push(
                at,
                Event::Misbehave {
                    node: i,
                    generation,
                },
            );
        }
    }

    /// Adds a node to the running network (it announces itself to node 0).
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        self.nodes.push(SimNode::fresh(i, &mut self.rng));
        self.start(i);
        i
    }

    /// Adds an adversarial node to the running network (it announces itself to node 0
    /// like any other and misbehaves `how` every `adversary_round_ms` from then on).
    pub fn add_adversary(&mut self, how: Adversary) -> usize {
        let i = self.nodes.len();
        let mut fakes = Vec::new();
        if how == Adversary::GossipingTheDead {
            for k in 0..3 {
                let identity = IdentityKey::generate(&mut self.rng);
                let onion = OnionKey::generate(Epoch(0), &mut self.rng);
                fakes.push((identity, onion, named_address("dead", k)));
            }
        }
        self.adversaries.insert(
            i,
            AdversaryState {
                how,
                recorded: Vec::new(),
                changes: Vec::new(),
                fakes,
            },
        );
        self.nodes.push(SimNode::fresh(i, &mut self.rng));
        self.start(i);
        i
    }

    /// Whether node `i` is adversarial.
    #[must_use]
    pub fn is_adversary(&self, i: usize) -> bool {
        self.adversaries.contains_key(&i)
    }

    /// Whether node `i` is running (not crashed).
    #[must_use]
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].node.is_some()
    }

    /// Whether every running node counts every other running node as live (the network
    /// has formed: every node's ring is the whole ring).
    #[must_use]
    pub fn fully_joined(&self) -> bool {
        let ids = self.node_ids();
        let up: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.is_up(i)).collect();
        up.iter().all(|&i| {
            let node = self.nodes[i].node.as_ref().expect("up");
            let live: BTreeSet<NodeId> = node.directory().live_ids().collect();
            up.iter().all(|&j| j == i || live.contains(&ids[j]))
        })
    }

    /// The made-up identities adversaries gossip, at addresses nobody answers at.
    #[must_use]
    pub fn fake_ids(&self) -> Vec<NodeId> {
        self.adversaries
            .values()
            .flat_map(|a| a.fakes.iter().map(|(k, ..)| k.node_id()))
            .collect()
    }

    /// Crashes node `i`: its memory and non-durable writes are gone; requests in flight
    /// to it fail.
    pub fn crash(&mut self, i: usize) {
        self.note(format_args!("crash {i}"));
        let n = &mut self.nodes[i];
        if let Some(mut node) = n.node.take() {
            n.known_peers = node
                .directory()
                .live_ids()
                .filter_map(|id| node.directory().get(&id).map(|d| *d.address()))
                .collect();
            let mut backend = core::mem::take(node.backend_mut());
            backend.crash();
            n.crashed_backend = Some(backend);
        }
        n.generation += 1;
        n.wake_at = None;
        let waiting: Vec<Origin> = core::mem::take(&mut n.inbound).into_values().collect();
        for origin in waiting {
            let at = self.delay();
            self.push(
                at,
                Event::Answer {
                    to: origin,
                    result: Err(Failure::Unreachable),
                },
            );
        }
    }

    /// Restarts a crashed node from its durable state. A node that restarts without its
    /// replay filter starts a new onion-key epoch (docs/PROTOCOL.md, "Restarts").
    pub fn restart(&mut self, i: usize) {
        self.note(format_args!("restart {i}"));
        if self.nodes[i].node.is_none() {
            let mut fresh = [0u8; 32];
            self.rng.fill_bytes(&mut fresh);
            self.nodes[i].onion_secret = fresh;
            self.start(i);
        }
    }

    /// Cuts node `i` off from everyone (requests to and from it are lost).
    pub fn partition(&mut self, i: usize) {
        self.partitioned.insert(i);
    }

    /// Reconnects every partitioned node.
    pub fn heal(&mut self) {
        self.partitioned.clear();
    }

    /// Starts recording every event (for debugging a failing seed).
    pub fn enable_trace(&mut self) {
        self.trace = Some(Vec::new());
    }

    /// The events recorded since tracing was enabled.
    #[must_use]
    pub fn trace(&self) -> &[String] {
        self.trace.as_deref().unwrap_or(&[])
    }

    fn note(&mut self, what: core::fmt::Arguments<'_>) {
        if let Some(t) = self.trace.as_mut() {
            t.push(alloc::format!("{} {}", self.now.0 - START.0, what));
        }
    }

    fn push(&mut self, at: Timestamp, e: Event) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq, e)));
    }

    fn delay(&mut self) -> Timestamp {
        let span = self
            .config
            .max_delay_ms
            .saturating_sub(self.config.min_delay_ms)
            + 1;
        self.now
            .plus_millis(self.config.min_delay_ms + self.rng.next_u64() % span)
    }

    fn lost(&mut self) -> bool {
        self.config.loss_per_mille > 0 && (self.rng.next_u32() % 1000) < self.config.loss_per_mille
    }

    fn can_talk(&self, a: Option<usize>, b: Option<usize>) -> bool {
        let blocked = |x: Option<usize>| x.is_some_and(|i| self.partitioned.contains(&i));
        !(blocked(a) || blocked(b))
    }

    /// Runs events (and the client's timers) until virtual time `until`.
    pub fn run_until(&mut self, until: Timestamp) {
        loop {
            let next_event = self.events.peek().map(|Reverse((at, _, _))| *at);
            let client_wake = self.client.poll_timeout();
            let Some(at) = next_event.into_iter().chain(client_wake).min() else {
                break;
            };
            if at > until {
                break;
            }
            self.now = self.now.max(at);
            if client_wake.is_some_and(|w| w <= at) {
                self.client.handle_timeout(self.now, &mut self.rng);
                self.drain_client();
                continue;
            }
            let Reverse((_, _, event)) = self.events.pop().expect("peeked");
            self.dispatch(event);
        }
        self.now = self.now.max(until);
    }

    /// Runs for `ms` of virtual time.
    pub fn run_for(&mut self, ms: u64) {
        let until = self.now.plus_millis(ms);
        self.run_until(until);
    }

    fn dispatch(&mut self, event: Event) {
        if self.trace.is_some() {
            let summary = match &event {
                Event::Request {
                    to,
                    from,
                    endpoint,
                    body,
                } => {
                    alloc::format!("request {from:?} -> {to} {endpoint:?} {} bytes", body.len())
                }
                Event::Answer { to, result } => {
                    alloc::format!("answer -> {to:?} {:?}", result.as_ref().map(Vec::len))
                }
                Event::Commit { node, .. } => alloc::format!("commit {node}"),
                Event::Wake { node, .. } => alloc::format!("wake {node}"),
                Event::DirectoryAnswer { id } => alloc::format!("directory -> client {id:?}"),
                Event::Misbehave { node, .. } => alloc::format!("misbehave {node}"),
            };
            self.note(format_args!("{summary}"));
        }
        match event {
            Event::Request {
                to,
                from,
                endpoint,
                body,
            } => self.deliver_request(to, from, endpoint, body),
            Event::Answer { to, result } => self.deliver_answer(to, result),
            Event::DirectoryAnswer { id } => {
                if let Some(answer) = self.directory_answers.remove(&id) {
                    let now = self.now;
                    self.client.handle_directory(now, &mut self.rng, id, answer);
                    self.drain_client();
                }
            }
            Event::Commit { node, generation } => {
                let now = self.now;
                let n = &mut self.nodes[node];
                if n.generation == generation
                    && let Some(node_sm) = n.node.as_mut()
                {
                    node_sm.backend_mut().commit();
                    node_sm.handle_durable(now);
                    self.drain(node);
                }
            }
            Event::Misbehave { node, generation } => {
                if self.nodes[node].generation == generation && self.nodes[node].node.is_some() {
                    self.misbehave(node);
                    let at = self.now.plus_millis(self.config.adversary_round_ms);
                    self.push(at, Event::Misbehave { node, generation });
                }
            }
            Event::Wake { node, generation } => {
                let now = self.now;
                let n = &mut self.nodes[node];
                if n.generation == generation
                    && n.wake_at == Some(now)
                    && let Some(node_sm) = n.node.as_mut()
                {
                    n.wake_at = None;
                    node_sm.handle_timeout(now);
                    self.drain(node);
                }
            }
        }
    }

    fn deliver_request(&mut self, to: usize, from: Origin, endpoint: EndpointKind, body: Vec<u8>) {
        let now = self.now;
        let sender = match from {
            Origin::Node { node, .. } => Some(node),
            Origin::Forged { node } => Some(node),
            Origin::Client { .. } | Origin::Raw { .. } => None,
        };
        if let (EndpointKind::Directory { after }, Origin::Client { id }) = (endpoint, from) {
            // A listing is a plain read of the node's directory: no state changes.
            let answer = match self.nodes[to].node.as_ref() {
                Some(node) => {
                    let page = node.directory_page(now, after, DIRECTORY_PAGE);
                    Ok(DirectoryAnswer {
                        nodes: page.nodes.iter().map(unverified).collect(),
                        next: page.next,
                        pow_difficulty: page.pow_difficulty,
                    })
                }
                None => Err(TransportError::Unreachable),
            };
            if self.can_talk(Some(to), None) && !self.lost() {
                let at = self.delay();
                self.directory_answers.insert(id, answer);
                self.push(at, Event::DirectoryAnswer { id });
            }
            return;
        }
        if endpoint == EndpointKind::Peer && !self.adversary_takes(to, &body) {
            // Withheld: the sender learns by its own timeout.
            return;
        }
        let n = &mut self.nodes[to];
        let Some(node) = n.node.as_mut() else {
            let at = self.delay();
            self.push(
                at,
                Event::Answer {
                    to: from,
                    result: Err(Failure::Unreachable),
                },
            );
            return;
        };
        n.next_req += 1;
        let req = RequestId(n.next_req);
        n.inbound.insert(req, from);
        match endpoint {
            EndpointKind::Onion => {
                let mut packet = [0u8; PACKET_LEN];
                if body.len() == PACKET_LEN {
                    packet.copy_from_slice(&body);
                }
                node.handle_onion(now, req, source_ip(sender), &mut packet);
            }
            EndpointKind::Peer => {
                // A node's links are TLS sessions on which it presents its own key.
                let session = sender.map_or(peer::Session::None, |s| {
                    peer::Session::Tls(sim_tls_key_hash(&self.nodes[s].identity_seed))
                });
                let node = self.nodes[to].node.as_mut().expect("checked above");
                node.handle_peer(now, req, source_ip(sender), session, &body);
            }
            EndpointKind::Directory { .. } => {}
        }
        self.drain(to);
    }

    fn deliver_answer(&mut self, to: Origin, mut result: Result<Vec<u8>, Failure>) {
        let now = self.now;
        match to {
            Origin::Node { node, id } => {
                let Some(n) = self.nodes[node].node.as_mut() else {
                    return;
                };
                let result = result.map_err(|Failure::Unreachable| TransmitFailure::Unreachable);
                n.handle_transmit_result(now, id, result);
                self.drain(node);
            }
            Origin::Client { id } => {
                let answer = match &mut result {
                    Ok(body) => Ok(body.as_mut_slice()),
                    Err(Failure::Unreachable) => Err(TransportError::Unreachable),
                };
                self.client
                    .handle_onion_answer(now, &mut self.rng, id, answer);
                self.drain_client();
            }
            Origin::Forged { .. } => {}
            Origin::Raw { op } => {
                if let Some((keys, outcome)) = self.raw_ops.get_mut(&op) {
                    *outcome = Some(match result {
                        Ok(mut body) => match reply::open(keys.reply_keys(), &mut body) {
                            Ok(Opened::Response { body }) => Response::decode(body)
                                .map_or(ClientOutcome::Lost, ClientOutcome::Response),
                            Ok(Opened::Failed { hop, failure, .. }) => {
                                ClientOutcome::HopFailed { hop, failure }
                            }
                            Err(_) => ClientOutcome::Lost,
                        },
                        Err(_) => ClientOutcome::Lost,
                    });
                }
            }
        }
    }

    /// Carries out everything node `i` wants done.
    fn drain(&mut self, i: usize) {
        loop {
            let Some(node) = self.nodes[i].node.as_mut() else {
                return;
            };
            let Some(out) = node.poll_output() else {
                break;
            };
            match out {
                Output::Transmit {
                    id,
                    address,
                    tls_key_hash,
                    endpoint,
                    body,
                    ..
                } => {
                    // A link pinned to another key than the one at the address fails its
                    // handshake: to the sender, as if nobody answered there.
                    let target = self.nodes.iter().position(|n| {
                        n.address == address
                            && tls_key_hash.is_none_or(|h| h == sim_tls_key_hash(&n.identity_seed))
                    });
                    let from = Origin::Node { node: i, id };
                    let endpoint = match endpoint {
                        Endpoint::Onion => EndpointKind::Onion,
                        Endpoint::Peer => EndpointKind::Peer,
                    };
                    if !self.adversary_sends(i, target, endpoint, &body) {
                        self.note(format_args!("withheld: node {i} -> {target:?}"));
                        continue;
                    }
                    let at = self.delay();
                    match target {
                        Some(t) if self.can_talk(Some(i), Some(t)) && !self.lost() => {
                            self.push(
                                at,
                                Event::Request {
                                    to: t,
                                    from,
                                    endpoint,
                                    body,
                                },
                            );
                        }
                        // Lost or unroutable: the sender learns by its own timeout.
                        _ => self.note(format_args!("lost: node {i} -> {target:?} {endpoint:?}")),
                    }
                }
                Output::Respond { req, reply } => {
                    let Some(origin) = self.nodes[i].inbound.remove(&req) else {
                        self.note(format_args!("node {i} answered unknown {req:?}"));
                        continue;
                    };
                    let body = match reply {
                        Reply::Onion(b) => b,
                        Reply::Peer(b) => self.adversary_answers(i, b),
                        Reply::Dropped | Reply::RateLimited | Reply::PeerRefused(_) => Vec::new(),
                    };
                    let receiver = match origin {
                        Origin::Node { node, .. } | Origin::Forged { node } => Some(node),
                        Origin::Client { .. } | Origin::Raw { .. } => None,
                    };
                    let at = self.delay();
                    if self.can_talk(Some(i), receiver) && !self.lost() {
                        self.push(
                            at,
                            Event::Answer {
                                to: origin,
                                result: Ok(body),
                            },
                        );
                    } else {
                        self.note(format_args!("lost: answer of node {i} to {origin:?}"));
                    }
                }
            }
        }
        // Writes made while handling the input become durable a little later.
        let generation = self.nodes[i].generation;
        let node = self.nodes[i].node.as_ref().expect("checked above");
        let pending_writes = node.store().has_pending_writes();
        let wake = node.poll_timeout();
        if pending_writes {
            let at = self
                .now
                .plus_millis(self.rng.next_u64() % (self.config.max_commit_delay_ms + 1));
            self.push(
                at,
                Event::Commit {
                    node: i,
                    generation,
                },
            );
        }
        if let Some(t) = wake {
            let t = t.max(self.now.plus_millis(1));
            if self.nodes[i].wake_at.is_none_or(|w| t < w) {
                self.nodes[i].wake_at = Some(t);
                self.push(
                    t,
                    Event::Wake {
                        node: i,
                        generation,
                    },
                );
            }
        }
    }

    // ----------------------------------------------------------------------------------
    // Adversaries
    // ----------------------------------------------------------------------------------

    /// Whether node `to` takes in a peer envelope (a withholding adversary takes only
    /// gossip and probes); a replaying adversary records what it takes.
    fn adversary_takes(&mut self, to: usize, body: &[u8]) -> bool {
        let now = self.now;
        let window = self.config.node.auth_window_ms;
        let Some(a) = self.adversaries.get_mut(&to) else {
            return true;
        };
        match a.how {
            Adversary::Withholding => is_membership(body),
            Adversary::Replaying => {
                // The adversary reads what it receives, whoever's session carried it.
                let any = TlsKeyHash::default();
                let session = peer::Session::Tls(any);
                if let Ok(envelope) =
                    peer::decode_request(body, now, window, session, |_| Some(any))
                    && let PeerRequest::Relay(change) = envelope.request
                {
                    remember(&mut a.changes, change);
                }
                remember(&mut a.recorded, (to, EndpointKind::Peer, body.to_vec()));
                true
            }
            Adversary::Lying | Adversary::GossipingTheDead => true,
        }
    }

    /// Whether node `i` really sends what its state machine asks for (a withholding
    /// adversary sends only gossip and probes); a replaying adversary records the onion
    /// packets it forwards.
    fn adversary_sends(
        &mut self,
        i: usize,
        target: Option<usize>,
        endpoint: EndpointKind,
        body: &[u8],
    ) -> bool {
        let Some(a) = self.adversaries.get_mut(&i) else {
            return true;
        };
        match (a.how, endpoint, target) {
            (Adversary::Withholding, EndpointKind::Peer, _) => is_membership(body),
            (Adversary::Replaying, EndpointKind::Onion, Some(t)) => {
                remember(&mut a.recorded, (t, endpoint, body.to_vec()));
                true
            }
            _ => true,
        }
    }

    /// What node `i` answers a peer: a lying adversary adds a message nobody asked for to
    /// every fetch answer (valid in every other respect).
    fn adversary_answers(&mut self, i: usize, body: Vec<u8>) -> Vec<u8> {
        if self.adversaries.get(&i).map(|a| a.how) != Some(Adversary::Lying) {
            return body;
        }
        match PeerResponse::decode(&body) {
            Ok(PeerResponse::Messages(mut ms)) if !ms.is_empty() => {
                let extra = self.made_up(ms[0].recipient, Namespace::DIRECT, self.now, 3_600_000);
                ms.push(extra);
                PeerResponse::Messages(ms).encode()
            }
            _ => body,
        }
    }

    /// One round of node `i`'s misbehaviour.
    fn misbehave(&mut self, i: usize) {
        let Some(how) = self.adversaries.get(&i).map(|a| a.how) else {
            return;
        };
        let honest: Vec<usize> = (0..self.nodes.len())
            .filter(|&j| !self.adversaries.contains_key(&j) && self.nodes[j].node.is_some())
            .collect();
        if honest.is_empty() {
            return;
        }
        let identity = IdentityKey::from_seed(&self.nodes[i].identity_seed);
        match how {
            Adversary::Withholding => {}
            Adversary::Lying => self.lie(i, &identity, &honest),
            Adversary::Replaying => self.replay(i, &identity, &honest),
            Adversary::GossipingTheDead => self.gossip_the_dead(i, &identity, &honest),
        }
    }

    fn lie(&mut self, i: usize, identity: &IdentityKey, honest: &[usize]) {
        let now = self.now;
        let held = self.held_by(i, 2);
        for m in &held {
            let targets: Vec<usize> = self
                .swarm_of(&m.recipient)
                .into_iter()
                .filter(|j| honest.contains(j))
                .collect();
            // Copies that break the store rules, from a member of their swarm.
            let max_ttl = self.config.node.store.max_ttl_ms;
            let mut owner_only = self.made_up(
                m.recipient,
                Namespace(Namespace::FIRST_OWNER_ONLY),
                now,
                3_600_000,
            );
            owner_only.origin.signature = Some([7; 64]);
            let stretched = self.made_up(m.recipient, Namespace::DIRECT, now, 2 * max_ttl);
            let future = self.made_up(
                m.recipient,
                Namespace::DIRECT,
                now.plus_millis(600_000),
                3_600_000,
            );
            let replicate = PeerRequest::Replicate(vec![owner_only, stretched, future])
                .encode_signed(identity, now);
            // A delete of a real message, signed with the adversary's own key.
            let delete = Request::Delete(DeleteRequest {
                recipient: m.recipient,
                namespace: m.namespace,
                timestamp: now,
                selector: DeleteSelector::Hashes(
                    HashList::from_bytes(m.hash.as_bytes()).expect("one hash"),
                ),
            });
            let mut payload = [0u8; packet::MAX_PAYLOAD];
            let len = delete
                .encode(Some(identity), &mut payload)
                .expect("a one-hash delete fits");
            let relay = PeerRequest::Relay(payload[..len].to_vec()).encode_signed(identity, now);
            for &t in &targets {
                self.forge(i, t, EndpointKind::Peer, replicate.clone());
                self.forge(i, t, EndpointKind::Peer, relay.clone());
            }
        }
        // A message valid in every respect, for a swarm the adversary is not in by the
        // receivers' own rings, sent to that swarm's members that count the adversary as
        // live (so a probe answered meanwhile cannot put it into the swarm).
        let me = identity.node_id();
        for _ in 0..8 {
            let mut key = [0u8; 32];
            self.rng.fill_bytes(&mut key);
            let recipient = RecipientId(key);
            let targets: Vec<usize> = self
                .swarm_of(&recipient)
                .into_iter()
                .filter(|j| honest.contains(j))
                .filter(|&j| {
                    self.nodes[j].node.as_ref().is_some_and(|n| {
                        n.directory().live_ids().any(|id| id == me)
                            && n.swarm_of(&recipient).iter().all(|d| d.node_id() != me)
                    })
                })
                .collect();
            if targets.is_empty() {
                continue;
            }
            let m = self.made_up(recipient, Namespace::DIRECT, now, 3_600_000);
            let body = PeerRequest::Replicate(vec![m]).encode_signed(identity, now);
            for t in targets {
                self.forge(i, t, EndpointKind::Peer, body.clone());
            }
            break;
        }
        // Its own descriptor, with its current key and epoch, valid for ten years.
        let epoch = self.nodes[i]
            .node
            .as_ref()
            .map_or(Epoch(0), |n| n.descriptor().epoch());
        let onion = OnionKey::from_secret_bytes(self.nodes[i].onion_secret, epoch);
        let forever = Descriptor::sign(
            identity,
            &onion,
            sim_tls_key_hash(&self.nodes[i].identity_seed),
            self.nodes[i].address,
            now.plus_millis(10 * 365 * 24 * 3_600_000),
        );
        let gossip = PeerRequest::Gossip(vec![unverified(&forever)]).encode_signed(identity, now);
        for &t in honest {
            self.forge(i, t, EndpointKind::Peer, gossip.clone());
        }
    }

    fn replay(&mut self, i: usize, identity: &IdentityKey, honest: &[usize]) {
        let now = self.now;
        let Some(a) = self.adversaries.get(&i) else {
            return;
        };
        let (recorded, changes) = (a.recorded.clone(), a.changes.clone());
        for _ in 0..2 {
            if recorded.is_empty() {
                break;
            }
            let pick = self.rng.next_u64() as usize % recorded.len();
            let (target, endpoint, body) = recorded[pick].clone();
            let to = match endpoint {
                // To the next hop it was meant for: the packet itself is replayed.
                EndpointKind::Onion => target,
                _ => honest[self.rng.next_u64() as usize % honest.len()],
            };
            self.forge(i, to, endpoint, body);
        }
        // A recipient-signed change it relayed or saw relayed, in its own envelope now.
        if !changes.is_empty() {
            let pick = self.rng.next_u64() as usize % changes.len();
            let relay = PeerRequest::Relay(changes[pick].clone()).encode_signed(identity, now);
            for &t in honest {
                self.forge(i, t, EndpointKind::Peer, relay.clone());
            }
        }
    }

    fn gossip_the_dead(&mut self, i: usize, identity: &IdentityKey, honest: &[usize]) {
        let now = self.now;
        let ids = self.node_ids();
        let Some(node) = self.nodes[i].node.as_ref() else {
            return;
        };
        let mut ds = vec![unverified(node.descriptor())];
        // The genuine descriptors of nodes that are down, as the adversary last knew them.
        for (j, n) in self.nodes.iter().enumerate() {
            if n.node.is_none()
                && let Some(d) = node.directory().get(&ids[j])
            {
                ds.push(unverified(d));
            }
        }
        // Identities it made up, freshly signed, at addresses nobody answers at.
        if let Some(a) = self.adversaries.get(&i) {
            for (key, onion, address) in &a.fakes {
                let d = Descriptor::sign(
                    key,
                    onion,
                    sim_tls_key_hash(&key.to_seed()),
                    *address,
                    now.plus_millis(3_600_000),
                );
                ds.push(unverified(&d));
            }
        }
        let gossip = PeerRequest::Gossip(ds).encode_signed(identity, now);
        for &t in honest {
            self.forge(i, t, EndpointKind::Peer, gossip.clone());
        }
    }

    /// Up to `max` messages node `i` holds.
    fn held_by(&self, i: usize, max: usize) -> Vec<StoredMessage> {
        let Some(node) = self.nodes[i].node.as_ref() else {
            return Vec::new();
        };
        let mut hashes = Vec::new();
        let _ = node.store().for_each_hash(&mut |h, _| {
            if hashes.len() < max {
                hashes.push(*h);
            }
        });
        hashes
            .iter()
            .filter_map(|h| node.store().get(h, self.now).ok().flatten())
            .collect()
    }

    /// A message an adversary made up, with an origin consistent with its times (so only
    /// the rule a test aims at is broken).
    fn made_up(
        &mut self,
        recipient: RecipientId,
        namespace: Namespace,
        stored_at: Timestamp,
        ttl_ms: u64,
    ) -> WireMessage {
        let mut body = FORGED_MARK.to_vec();
        body.extend_from_slice(&self.rng.next_u64().to_be_bytes());
        WireMessage {
            recipient,
            namespace,
            stored_at,
            expiry: stored_at.plus_millis(ttl_ms),
            body,
            origin: RequestOrigin {
                timestamp: stored_at,
                ttl_ms,
                pow_nonce: 0,
                signature: None,
            },
        }
    }

    /// Sends something adversary `from` made up or replayed; the answer is dropped.
    fn forge(&mut self, from: usize, to: usize, endpoint: EndpointKind, body: Vec<u8>) {
        if self.can_talk(Some(from), Some(to)) && !self.lost() {
            let at = self.delay();
            self.push(
                at,
                Event::Request {
                    to,
                    from: Origin::Forged { node: from },
                    endpoint,
                    body,
                },
            );
        }
    }

    // ----------------------------------------------------------------------------------
    // The client
    // ----------------------------------------------------------------------------------

    /// The swarm of `recipient` computed from every node's ID (the client's view once it
    /// has looked the network up).
    #[must_use]
    pub fn swarm_of(&self, recipient: &RecipientId) -> Vec<usize> {
        let ids = self.node_ids();
        let mut ring = Ring::new(self.config.node.vnodes);
        for id in &ids {
            ring.insert(*id);
        }
        let mut out = vec![NodeId::default(); self.config.node.swarm_size];
        let n = ring.swarm(recipient, &mut out);
        out[..n]
            .iter()
            .filter_map(|id| ids.iter().position(|x| x == id))
            .collect()
    }

    /// Reply length [`Sim::send_via`] asks for: room for a page of messages.
    pub const SEND_VIA_REPLY_LEN: usize = 64 * 1024;

    /// Sends `request` through the given node path, built from the nodes' current keys;
    /// returns a handle for [`Sim::outcome`]. For tests of node behaviour: it decides
    /// nothing (stores and fetches go through [`Sim::store`] and [`Sim::retrieve_all`],
    /// the real client).
    pub fn send_via(
        &mut self,
        hops: &[usize],
        request: &Request<'_>,
        signer: Option<&IdentityKey>,
    ) -> u64 {
        let path: Vec<PathHop> = hops
            .iter()
            .map(|&i| {
                let n = &self.nodes[i];
                // The node's current key (it rotates); a node that is down gets the key it
                // started with, which no packet will meet anyway.
                let onion_key = n.node.as_ref().map_or_else(
                    || OnionKey::from_secret_bytes(n.onion_secret, Epoch(0)).public(),
                    |node| node.descriptor().onion_key(),
                );
                PathHop {
                    node: IdentityKey::from_seed(&n.identity_seed).node_id(),
                    onion_key,
                }
            })
            .collect();
        let mut payload = [0u8; packet::MAX_PAYLOAD];
        let len = request
            .encode(signer, &mut payload)
            .expect("simulated requests fit");
        let mut buf = [0u8; PACKET_LEN];
        let keys = packet::build(
            &path,
            &payload[..len],
            packet::grid_expiry(self.now, 30_000),
            Self::SEND_VIA_REPLY_LEN,
            &mut self.rng,
            &mut buf,
        )
        .expect("valid path");
        self.next_op += 1;
        let op = self.next_op;
        self.raw_ops.insert(op, (keys, None));
        let at = self.delay();
        if self.can_talk(None, Some(hops[0])) {
            self.push(
                at,
                Event::Request {
                    to: hops[0],
                    from: Origin::Raw { op },
                    endpoint: EndpointKind::Onion,
                    body: buf.to_vec(),
                },
            );
        }
        op
    }

    /// Sends `owner`'s signed delete of `hashes` (of every direct message when `None`) to
    /// node `member` through two other running nodes and waits for the answer.
    pub fn delete(
        &mut self,
        member: usize,
        owner: &IdentityKey,
        hashes: Option<&[MessageHash]>,
    ) -> ClientOutcome {
        let flat: Vec<u8> = hashes
            .unwrap_or(&[])
            .iter()
            .flat_map(|h| h.as_bytes().iter().copied())
            .collect();
        let selector = match hashes {
            Some(_) => DeleteSelector::Hashes(
                HashList::from_bytes(&flat).expect("at most the hashes one delete carries"),
            ),
            None => DeleteSelector::All,
        };
        let request = Request::Delete(DeleteRequest {
            recipient: owner.recipient_id(),
            namespace: Namespace::DIRECT,
            timestamp: self.now,
            selector,
        });
        let relays: Vec<usize> = (0..self.nodes.len())
            .filter(|&j| j != member && self.is_up(j))
            .collect();
        if relays.len() < 2 {
            return ClientOutcome::Lost;
        }
        // A hop that cannot reach the next one (just restarted, not yet live again) is
        // routed around, as a client would, a few times.
        let mut outcome = ClientOutcome::Lost;
        for _ in 0..3 {
            let mut pool = relays.clone();
            let first = pool.remove(self.rng.next_u64() as usize % pool.len());
            let second = pool[self.rng.next_u64() as usize % pool.len()];
            let op = self.send_via(&[first, second, member], &request, Some(owner));
            outcome = self.wait(op, 30_000);
            if matches!(outcome, ClientOutcome::Response(_)) {
                break;
            }
        }
        outcome
    }

    /// What a [`Sim::send_via`] request ended with, once answered.
    #[must_use]
    pub fn outcome(&self, op: u64) -> Option<&ClientOutcome> {
        self.raw_ops.get(&op).and_then(|(_, o)| o.as_ref())
    }

    /// Runs until the [`Sim::send_via`] request `op` is answered or `max_ms` of virtual
    /// time passed.
    pub fn wait(&mut self, op: u64, max_ms: u64) -> ClientOutcome {
        let deadline = self.now.plus_millis(max_ms);
        while self.now < deadline {
            if let Some(o) = self.outcome(op) {
                return o.clone();
            }
            self.run_for(10);
        }
        self.outcome(op).cloned().unwrap_or(ClientOutcome::Lost)
    }

    /// Carries out everything the client wants sent.
    fn drain_client(&mut self) {
        while let Some(t) = self.client.poll_transmit() {
            let target = self.nodes.iter().position(|n| n.address == t.to);
            let (endpoint, body) = match t.body {
                TransmitBody::Onion(packet) => (EndpointKind::Onion, packet.to_vec()),
                TransmitBody::Directory { after } => {
                    (EndpointKind::Directory { after }, Vec::new())
                }
            };
            let at = self.delay();
            match target {
                Some(to) if self.can_talk(None, Some(to)) => self.push(
                    at,
                    Event::Request {
                        to,
                        from: Origin::Client { id: t.id },
                        endpoint,
                        body,
                    },
                ),
                // Cut off: the client learns by its own timeout.
                _ => self.note(format_args!("lost: client -> {target:?} {endpoint:?}")),
            }
        }
        while let Some(event) = self.client.poll_event() {
            self.client_events.insert(event.op(), event);
        }
    }

    /// Runs until client operation `op` ends (at most an hour of virtual time).
    fn run_client(&mut self, op: client::OpId) -> Option<client::Event> {
        self.drain_client();
        let deadline = self.now.plus_millis(CLIENT_PATIENCE_MS);
        while self.now < deadline {
            if let Some(event) = self.client_events.remove(&op) {
                return Some(event);
            }
            self.run_for(10);
        }
        self.client_events.remove(&op)
    }

    /// Stores `body` for `recipient` with the real client, trying swarm member `first`
    /// first; the verified delivery, or why there is none.
    pub fn store(
        &mut self,
        first: usize,
        recipient: &IdentityKey,
        body: &[u8],
    ) -> Result<Delivery, ClientError> {
        let spec = StoreSpec {
            recipient: recipient.recipient_id(),
            body: body.to_vec(),
            ttl_ms: 3_600_000,
            first_member: Some(self.node_ids()[first]),
        };
        let now = self.now;
        let op = self.client.start_store(now, &mut self.rng, spec);
        match self.run_client(op) {
            Some(client::Event::Stored { result, .. }) => result,
            _ => Err(ClientError::Failed {
                attempts: Vec::new(),
            }),
        }
    }

    /// Stores every body of one message (its fragments) for `recipient` with the real
    /// client's [`Client::start_store_parts`]: each on its own path, several at once; every
    /// delivery, or why one body failed.
    pub fn store_parts(
        &mut self,
        recipient: &RecipientId,
        bodies: Vec<Vec<u8>>,
    ) -> Result<Vec<Delivery>, ClientError> {
        let spec = StorePartsSpec {
            recipient: *recipient,
            bodies,
            ttl_ms: 3_600_000,
        };
        let now = self.now;
        let op = self.client.start_store_parts(now, &mut self.rng, spec);
        match self.run_client(op) {
            Some(client::Event::StoredParts { result, .. }) => result,
            _ => Err(ClientError::Failed {
                attempts: Vec::new(),
            }),
        }
    }

    /// Reads every message of `owner` from node `at` with the real client (fresh
    /// cursors: from the oldest), as `(seq, hash, body)`.
    pub fn retrieve_all(
        &mut self,
        at: usize,
        owner: &IdentityKey,
    ) -> Result<Vec<(u64, MessageHash, Vec<u8>)>, ClientError> {
        let spec = FetchSpec {
            identity: IdentityKey::from_seed(&owner.to_seed()),
            cursors: FetchCursors::default(),
            only_member: Some(self.node_ids()[at]),
        };
        let now = self.now;
        let op = self.client.start_fetch(now, &mut self.rng, spec);
        match self.run_client(op) {
            Some(client::Event::Fetched { result, .. }) => result.map(|f| {
                f.messages
                    .into_iter()
                    .map(|m| (m.seq, m.hash, m.body))
                    .collect()
            }),
            _ => Err(ClientError::Failed {
                attempts: Vec::new(),
            }),
        }
    }
}

/// Descriptors per directory page a simulated node lists.
const DIRECTORY_PAGE: usize = 256;
/// Longest a simulated client operation may take, virtual ms.
const CLIENT_PATIENCE_MS: u64 = 3_600_000;

/// A verified descriptor as the wire would carry it (the client verifies it again).
/// Where a request comes from: nodes are 10.x.y.z by index, clients 192.0.2.1. Sim
/// addresses are names, so a node's budget follows the sender it names, as for nodes
/// that advertise host names.
fn source_ip(sender: Option<usize>) -> core::net::IpAddr {
    sender.map_or(core::net::IpAddr::from([192, 0, 2, 1]), |s| {
        core::net::IpAddr::from((0x0a00_0000_u32 | (s as u32 & 0x00ff_ffff)).to_be_bytes())
    })
}

fn unverified(d: &crate::keys::Descriptor) -> UnverifiedDescriptor {
    let mut buf = [0u8; MAX_DESCRIPTOR_LEN];
    let n = d.encode(&mut buf).expect("a descriptor fits its maximum");
    UnverifiedDescriptor::decode(&buf[..n]).expect("a descriptor decodes from its own encoding")
}

/// A recognisable fake address for simulated node `i`.
fn sim_address(i: usize) -> Address {
    named_address("sim", i)
}

/// `{prefix}-{i}:1`.
fn named_address(prefix: &str, i: usize) -> Address {
    let mut text = [0u8; 24];
    let s = {
        use core::fmt::Write;
        let mut w = FixedWriter {
            buf: &mut text,
            len: 0,
        };
        let _ = write!(w, "{prefix}-{i}:1");
        w.len
    };
    Address::new(core::str::from_utf8(&text[..s]).expect("ASCII")).expect("short printable address")
}

/// Whether a peer envelope is gossip or a probe (how a node stays a member).
fn is_membership(envelope: &[u8]) -> bool {
    matches!(
        envelope.get(1),
        Some(&peer::KIND_GOSSIP | &peer::KIND_PROBE)
    )
}

/// Keeps the newest [`ADVERSARY_MEMORY`] items.
fn remember<T>(memory: &mut Vec<T>, item: T) {
    if memory.len() == ADVERSARY_MEMORY {
        memory.remove(0);
    }
    memory.push(item);
}

struct FixedWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl core::fmt::Write for FixedWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(core::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Refusals the simulated client may see without it being a protocol failure.
#[must_use]
pub fn is_expected_refusal(e: &RequestError) -> bool {
    matches!(
        e,
        RequestError::QuorumNotReached | RequestError::Unavailable
    )
}
