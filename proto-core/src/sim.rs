//! Deterministic simulation: N nodes, a virtual clock, and an in-memory network with
//! delay, loss, partitions and crashes, plus a client that speaks the real protocol
//! (onion packets through three hops, signed requests, receipts).
//!
//! The simulation owns time and the network and nothing else: every decision is made by
//! the real [`Node`] state machines it drives. A run is a function of its seed — the same
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

use crate::keys::{Address, IdentityKey, OnionKey};
use crate::node::{
    Endpoint, Node, NodeConfig, NodeKeys, Output, Reply, RequestId, TransmitFailure, TransmitId,
};
use crate::packet::{self, PACKET_LEN, PathHop};
use crate::reply::{self, Opened};
use crate::request::{Request, RequestError, Response, RetrieveRequest, StoreAck, StoreRequest};
use crate::ring::Ring;
use crate::store::{MemoryBackend, message_hash};
use crate::types::{Epoch, MessageHash, Namespace, NodeId, RecipientId, Timestamp};

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
}

impl Default for SimConfig {
    fn default() -> Self {
        let node = NodeConfig {
            // Small filters: the simulation runs thousands of networks.
            replay_filter_words: crate::replay::BUCKETS * 64,
            ..NodeConfig::default()
        };
        Self {
            nodes: 5,
            loss_per_mille: 0,
            min_delay_ms: 1,
            max_delay_ms: 20,
            max_commit_delay_ms: 5,
            node,
        }
    }
}

/// Who waits for the answer to an exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Origin {
    Node { node: usize, id: TransmitId },
    Client { op: u64 },
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum EndpointKind {
    Onion,
    Peer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Failure {
    /// The target is down or its answer cannot reach the origin.
    Unreachable,
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

/// A whole simulated network.
pub struct Sim {
    config: SimConfig,
    now: Timestamp,
    rng: ChaCha20Rng,
    nodes: Vec<SimNode>,
    events: BinaryHeap<Reverse<(Timestamp, u64, Event)>>,
    seq: u64,
    partitioned: BTreeSet<usize>,
    client_ops: BTreeMap<u64, (packet::PathKeys, Option<ClientOutcome>)>,
    next_op: u64,
    /// Event log for replaying a failing seed, when enabled.
    trace: Option<Vec<String>>,
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
        let mut sim = Self {
            config,
            now: START,
            rng,
            nodes,
            events: BinaryHeap::new(),
            seq: 0,
            partitioned: BTreeSet::new(),
            client_ops: BTreeMap::new(),
            next_op: 0,
            trace: None,
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
        let seeds = vec![sim_address(0)];
        let mut rng = ChaCha20Rng::from_seed(n.identity_seed);
        let keys = NodeKeys {
            identity: IdentityKey::from_seed(&n.identity_seed),
            onion: OnionKey::from_secret_bytes(
                n.onion_secret,
                Epoch(u32::try_from(n.generation).unwrap_or(u32::MAX)),
            ),
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
    }

    /// Adds a node to the running network (it announces itself to node 0).
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        self.nodes.push(SimNode::fresh(i, &mut self.rng));
        self.start(i);
        i
    }

    /// Crashes node `i`: its memory and non-durable writes are gone; requests in flight
    /// to it fail.
    pub fn crash(&mut self, i: usize) {
        self.note(format_args!("crash {i}"));
        let n = &mut self.nodes[i];
        if let Some(mut node) = n.node.take() {
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

    /// Runs events until virtual time `until`.
    pub fn run_until(&mut self, until: Timestamp) {
        while let Some(Reverse((at, _, _))) = self.events.peek() {
            if *at > until {
                break;
            }
            let Reverse((at, _, event)) = self.events.pop().expect("peeked");
            self.now = self.now.max(at);
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
            Origin::Client { .. } => None,
        };
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
                // Nodes are 10.x.y.z by index, clients 192.0.2.1 (sim addresses are names,
                // so every source gets the per-source budget).
                let source = sender.map_or(core::net::IpAddr::from([192, 0, 2, 1]), |s| {
                    core::net::IpAddr::from(
                        (0x0a00_0000_u32 | (s as u32 & 0x00ff_ffff)).to_be_bytes(),
                    )
                });
                node.handle_onion(now, req, source, &mut packet);
            }
            EndpointKind::Peer => node.handle_peer(now, req, &body),
        }
        self.drain(to);
    }

    fn deliver_answer(&mut self, to: Origin, result: Result<Vec<u8>, Failure>) {
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
            Origin::Client { op } => {
                if let Some((keys, outcome)) = self.client_ops.get_mut(&op) {
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
                    endpoint,
                    body,
                    ..
                } => {
                    let target = self.nodes.iter().position(|n| n.address == address);
                    let from = Origin::Node { node: i, id };
                    let endpoint = match endpoint {
                        Endpoint::Onion => EndpointKind::Onion,
                        Endpoint::Peer => EndpointKind::Peer,
                    };
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
                        Reply::Onion(b) | Reply::Peer(b) => b,
                        Reply::Dropped | Reply::RateLimited | Reply::PeerRefused(_) => Vec::new(),
                    };
                    let receiver = match origin {
                        Origin::Node { node, .. } => Some(node),
                        Origin::Client { .. } => None,
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

    /// Sends `request` through a 3-hop path ending at node `last` (two other nodes chosen
    /// at random first); returns an operation handle for [`Sim::outcome`].
    pub fn send(
        &mut self,
        last: usize,
        request: &Request<'_>,
        signer: Option<&IdentityKey>,
    ) -> u64 {
        // A client builds paths from relays that answer (it retries with another path
        // otherwise): up and not cut off. With too few of those it takes any node.
        let reachable: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                i != last && self.nodes[i].node.is_some() && !self.partitioned.contains(&i)
            })
            .collect();
        let pool: Vec<usize> = if reachable.len() >= 2 {
            reachable
        } else {
            (0..self.nodes.len()).filter(|&i| i != last).collect()
        };
        let mut hops = Vec::new();
        while hops.len() < 2 {
            let pick = pool[(self.rng.next_u32() as usize) % pool.len()];
            if !hops.contains(&pick) {
                hops.push(pick);
            }
        }
        hops.push(last);
        self.note(format_args!(
            "client sends {:?} via {hops:?}",
            request.method()
        ));
        self.send_via(&hops, request, signer)
    }

    /// Sends `request` through the given node path.
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
                PathHop {
                    node: IdentityKey::from_seed(&n.identity_seed).node_id(),
                    onion_key: OnionKey::from_secret_bytes(n.onion_secret, Epoch(0)).public(),
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
            self.now.plus_millis(60_000),
            &mut self.rng,
            &mut buf,
        )
        .expect("valid path");
        self.next_op += 1;
        let op = self.next_op;
        self.client_ops.insert(op, (keys, None));
        let at = self.delay();
        if self.can_talk(None, Some(hops[0])) {
            self.push(
                at,
                Event::Request {
                    to: hops[0],
                    from: Origin::Client { op },
                    endpoint: EndpointKind::Onion,
                    body: buf.to_vec(),
                },
            );
        }
        op
    }

    /// What operation `op` ended with, once answered.
    #[must_use]
    pub fn outcome(&self, op: u64) -> Option<&ClientOutcome> {
        self.client_ops.get(&op).and_then(|(_, o)| o.as_ref())
    }

    /// Runs until `op` is answered or `max_ms` of virtual time passed.
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

    /// Stores `body` for `recipient` via a 3-hop path ending at swarm member `last`;
    /// returns the verified acknowledgement, or why there is none.
    pub fn store(
        &mut self,
        last: usize,
        recipient: &IdentityKey,
        body: &[u8],
    ) -> Result<StoreAck, ClientOutcome> {
        let req = Request::Store(StoreRequest {
            recipient: recipient.recipient_id(),
            namespace: Namespace::DIRECT,
            timestamp: self.now,
            ttl_ms: 3_600_000,
            pow_nonce: 0,
            body,
        });
        let op = self.send(last, &req, None);
        match self.wait(op, 30_000) {
            ClientOutcome::Response(Response::Stored(ack)) => {
                let swarm: Vec<NodeId> = {
                    let ids = self.node_ids();
                    self.swarm_of(&recipient.recipient_id())
                        .into_iter()
                        .map(|i| ids[i])
                        .collect()
                };
                let expected = message_hash(&recipient.recipient_id(), Namespace::DIRECT, body);
                match ack.verify_quorum(
                    &expected,
                    &recipient.recipient_id(),
                    &swarm,
                    self.config.node.write_quorum,
                ) {
                    Ok(()) => Ok(ack),
                    Err(_) => Err(ClientOutcome::Response(Response::Stored(ack))),
                }
            }
            other => Err(other),
        }
    }

    /// Retrieves every message of `owner` from node `at` by walking the cursor; the last
    /// answer when a page could not be fetched.
    pub fn retrieve_all(
        &mut self,
        at: usize,
        owner: &IdentityKey,
    ) -> Result<Vec<(u64, MessageHash, Vec<u8>)>, ClientOutcome> {
        let mut after = 0;
        let mut out = Vec::new();
        for _ in 0..1000 {
            // Pages lost on a lossy network are asked for again, as a client would, each
            // time freshly signed (a request's timestamp must be recent). At 2 % loss per
            // exchange a 3-hop attempt fails about one time in eight; ten attempts all
            // failing is a one-in-a-billion event, not a protocol failure.
            let mut answer = ClientOutcome::Lost;
            for _ in 0..10 {
                let req = Request::Retrieve(RetrieveRequest {
                    recipient: owner.recipient_id(),
                    namespace: Namespace::DIRECT,
                    timestamp: self.now,
                    after,
                    limit: 50,
                });
                let op = self.send(at, &req, Some(owner));
                answer = self.wait(op, 30_000);
                if matches!(answer, ClientOutcome::Response(_)) {
                    break;
                }
            }
            match answer {
                ClientOutcome::Response(Response::Messages { messages, more }) => {
                    for m in &messages {
                        out.push((m.seq, m.hash, m.body.clone()));
                        after = m.seq;
                    }
                    if !more {
                        return Ok(out);
                    }
                }
                other => return Err(other),
            }
        }
        Err(ClientOutcome::Lost)
    }
}

/// A recognisable fake address for simulated node `i`.
fn sim_address(i: usize) -> Address {
    let mut text = [0u8; 24];
    let s = {
        use core::fmt::Write;
        let mut w = FixedWriter {
            buf: &mut text,
            len: 0,
        };
        let _ = write!(w, "sim-{i}:1");
        w.len
    };
    Address::new(core::str::from_utf8(&text[..s]).expect("ASCII")).expect("short printable address")
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
