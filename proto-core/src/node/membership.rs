//! Membership: the directory of known nodes (candidates, live, quarantined) and the ring
//! of live ones, kept in step in one place: a node goes on the ring when it proves itself
//! ([`Node::admit`]) and off it when evicted ([`Membership::evict`]); nothing else
//! touches the ring.

use super::*;

/// The directory and the ring of live nodes.
pub(super) struct Membership {
    /// Private to this module like the ring: liveness changes here only, together with
    /// the ring. Others read it, and record what cannot change liveness.
    directory: Directory,
    ring: Ring,
    /// IP addresses of known nodes, rebuilt when the directory's generation changes.
    node_ips: (u64, BTreeSet<IpAddr>),
}

impl Membership {
    /// This node (`me`) alone on the ring, nobody in the directory.
    pub(super) fn new(me: NodeId, config: &NodeConfig) -> Self {
        let mut ring = Ring::new(config.vnodes);
        ring.insert(me);
        Self {
            directory: Directory::new(me, config.directory.clone()),
            ring,
            node_ips: (u64::MAX, BTreeSet::new()),
        }
    }

    /// The directory, to read.
    pub(super) fn directory(&self) -> &Directory {
        &self.directory
    }

    /// A live node proved itself again (a signed receipt answered at its address).
    pub(super) fn record_contact(&mut self, id: &NodeId, now: Timestamp) {
        self.directory.record_contact(id, now);
    }

    /// An exchange with `id` failed.
    pub(super) fn record_failure(&mut self, id: &NodeId, now: Timestamp) {
        self.directory.record_failure(id, now);
    }

    /// Changes whenever a node joins or leaves the ring.
    pub(super) fn ring_generation(&self) -> u64 {
        self.ring.generation()
    }

    /// Evicts the nodes not proven for too long, from the directory and the ring; how
    /// many.
    pub(super) fn evict(&mut self, now: Timestamp) -> usize {
        let gone = self.directory.evict(now);
        for id in &gone {
            self.ring.remove(id);
        }
        gone.len()
    }
}

impl<B: MessageBackend> Node<B> {
    /// Probes the nodes due for it and evicts those not proven for too long.
    pub(super) fn probe_and_evict(&mut self, now: Timestamp) {
        for peer in self.membership.directory.due_probes(now) {
            let mut nonce = [0u8; peer::PROBE_NONCE_LEN];
            self.rng.fill_bytes(&mut nonce);
            self.transmit_peer(
                now,
                peer,
                &PeerRequest::Probe { nonce },
                Pending::Probe { peer, nonce },
            );
        }
        self.stats.nodes_evicted += self.membership.evict(now) as u64;
    }

    /// Gossip from `sender`: its descriptors are merged (candidates at most) and a sample
    /// of this node's sent back. A node's own descriptor first is how it registers: that
    /// lifts its quarantine, and it becomes a candidate that must still answer a probe.
    /// Gossip proves nothing about liveness, so it refreshes none.
    pub(super) fn gossip_received(
        &mut self,
        now: Timestamp,
        sender: NodeId,
        ds: Vec<UnverifiedDescriptor>,
    ) -> PeerResponse {
        if ds.first().is_some_and(|d| d.node_id() == sender) {
            self.membership.directory.lift_quarantine(&sender);
        }
        self.merge_descriptors(now, ds);
        let mut sample = vec![self.descriptor];
        let targets = self
            .membership
            .directory
            .gossip_targets(&mut self.rng, peer::MAX_GOSSIP - 1);
        sample.extend(
            targets
                .iter()
                .filter_map(|id| self.membership.directory.get(id).copied()),
        );
        PeerResponse::Descriptors(sample.into_iter().map(Into::into).collect())
    }

    /// A gossip answer: unsigned, so whoever answered at that address, its descriptors
    /// are checked one by one and make candidates at most; nobody is credited as alive.
    pub(super) fn gossip_answered(
        &mut self,
        now: Timestamp,
        result: Result<Vec<u8>, TransmitFailure>,
    ) {
        // Unsigned: whoever answered at that address, its descriptors are checked
        // one by one and make candidates at most; nobody is credited as alive.
        if let Ok(Ok(PeerResponse::Descriptors(ds))) = result.map(|b| PeerResponse::decode(&b)) {
            self.merge_descriptors(now, ds);
        }
    }

    /// A probe answer: live only when signed by the probed identity over this probe's
    /// nonce. Silence, an error, or an answer not signed by the probed identity (an honest
    /// node at a borrowed address answers with its own key): a failure.
    pub(super) fn probe_answered(
        &mut self,
        now: Timestamp,
        peer: NodeId,
        nonce: &[u8; peer::PROBE_NONCE_LEN],
        result: Result<Vec<u8>, TransmitFailure>,
    ) {
        match result.map(|b| PeerResponse::decode(&b)) {
            Ok(Ok(PeerResponse::Alive {
                descriptor,
                signature,
            })) if peer::verify_alive(&peer, nonce, &self.node_id(), &signature) => {
                if descriptor.node_id() == peer {
                    self.merge_descriptors(now, vec![*descriptor]);
                }
                self.admit(&peer, now);
            }
            // Silence, an error, or an answer not signed by the probed identity (an
            // honest node at a borrowed address answers with its own key): a failure.
            _ => {
                self.stats.probes_failed += 1;
                self.membership.directory.record_failure(&peer, now);
            }
        }
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
        let now = self.monotonic(now);
        if self.peer_limited(source, None, now) {
            return Err(RegisterError::RateLimited);
        }
        let d = descriptor.verify().map_err(RegisterError::Invalid)?;
        self.membership.directory.lift_quarantine(&d.node_id());
        let outcome = self.membership.directory.insert(d, now);
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

    pub(super) fn merge_descriptors(
        &mut self,
        now: Timestamp,
        ds: Vec<UnverifiedDescriptor>,
    ) -> usize {
        let mut changed = 0;
        for u in ds {
            let id = u.node_id();
            if id == self.node_id()
                || self
                    .membership
                    .directory
                    .get(&id)
                    .is_some_and(|known| u.is(known))
            {
                continue;
            }
            // Cheap refusals before the signature check: gossip about a node outside a
            // closed network, or evicted a moment ago, is ignored whatever its signature.
            if !self.membership.directory.admits(&id) {
                continue;
            }
            if self
                .membership
                .directory
                .quarantines(&id, u.epoch(), u.expires(), now)
            {
                continue;
            }
            let Ok(d) = u.verify() else {
                continue;
            };
            if self.membership.directory.insert(d, now).is_changed() {
                changed += 1;
            }
        }
        changed
    }

    /// `id` answered a probe with its identity's signature: live, and on the ring.
    pub(super) fn admit(&mut self, id: &NodeId, now: Timestamp) {
        if self.membership.directory.mark_live(id, now) {
            self.membership.ring.insert(*id);
        }
    }

    pub(super) fn gossip(&mut self, now: Timestamp) {
        let mine = PeerRequest::Gossip(self.gossip_sample());
        if self.membership.directory.is_empty() {
            // Nobody known yet: announce to the seeds (known only by address).
            let body = mine.encode_signed(&self.identity, now);
            for seed in self.seeds.clone() {
                if seed != self.address {
                    self.transmit(
                        now,
                        Callee::Seed(seed),
                        Endpoint::Peer,
                        body.clone(),
                        Pending::Gossip,
                    );
                }
            }
            return;
        }
        let fanout = self.config.directory.gossip_fanout;
        let targets = self
            .membership
            .directory
            .gossip_targets(&mut self.rng, fanout);
        for t in targets {
            self.transmit_peer(now, t, &mine, Pending::Gossip);
        }
    }

    pub(super) fn gossip_sample(&mut self) -> Vec<UnverifiedDescriptor> {
        let mut out = vec![self.descriptor.into()];
        let others = self
            .membership
            .directory
            .gossip_targets(&mut self.rng, peer::MAX_GOSSIP - 1);
        out.extend(others.iter().filter_map(|id| {
            self.membership
                .directory
                .get(id)
                .map(|d| UnverifiedDescriptor::from(*d))
        }));
        out
    }

    /// Whether `peer` is close enough on the ring to share swarms with this node.
    pub(super) fn ring_neighbour(&self, peer: &NodeId) -> bool {
        self.membership
            .ring
            .shares_swarm(&self.node_id(), peer, self.config.swarm_size)
    }

    /// Runs `f` on `recipient`'s swarm without allocating when K ≤ 16 (scans call this
    /// once per stored message).
    pub(super) fn with_swarm<T>(
        &self,
        recipient: &RecipientId,
        f: impl FnOnce(&[NodeId]) -> T,
    ) -> T {
        const STACK_K: usize = 16;
        if self.config.swarm_size <= STACK_K {
            let mut buf = [NodeId::default(); STACK_K];
            let n = self
                .membership
                .ring
                .swarm(recipient, &mut buf[..self.config.swarm_size]);
            f(&buf[..n])
        } else {
            f(&self.swarm_ids(recipient))
        }
    }

    pub(super) fn swarm_ids(&self, recipient: &RecipientId) -> Vec<NodeId> {
        let mut out = vec![NodeId::default(); self.config.swarm_size];
        let n = self.membership.ring.swarm(recipient, &mut out);
        out.truncate(n);
        out
    }

    pub(super) fn in_swarm(&self, recipient: &RecipientId) -> bool {
        let me = self.node_id();
        self.with_swarm(recipient, |ids| ids.contains(&me))
    }

    /// Whether `ip` is the address of a node in the directory (descriptors whose address
    /// is an IP literal; a host name cannot be matched without resolving it).
    pub(super) fn is_node_address(&mut self, ip: IpAddr) -> bool {
        let generation = self.membership.directory.generation();
        if self.membership.node_ips.0 != generation {
            let ips = self
                .membership
                .directory
                .descriptors()
                .filter_map(|d| d.address().as_str().parse::<SocketAddr>().ok())
                .map(|a| a.ip())
                .collect();
            self.membership.node_ips = (generation, ips);
        }
        self.membership.node_ips.1.contains(&ip)
    }

    pub(super) fn descriptor_of(&self, id: &NodeId) -> Option<Descriptor> {
        if *id == self.node_id() {
            Some(self.descriptor)
        } else {
            self.membership.directory.get(id).copied()
        }
    }
}
