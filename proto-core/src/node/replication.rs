//! Replication: a final hop's store waiting for its write quorum, the copies a member
//! accepts from its peers under the store's rules, deletes relayed to the other members
//! and shown to those that missed them. Its state is [`Replication`].

use super::*;

/// Stores waiting for their quorum, replication answers waiting for durability, and
/// relayed changes to send again.
#[derive(Debug, Default)]
pub(super) struct Replication {
    /// By operation number.
    pub(super) stores: BTreeMap<u64, PendingStore>,
    /// Replication requests answered once the copies they stored are durable.
    pub(super) replica_acks: Vec<PendingReplicaAck>,
    /// Relayed changes to send again: (when, to whom, the signed change, until when).
    pub(super) relay_retries: Vec<(Timestamp, NodeId, Vec<u8>, Timestamp)>,
    /// Copies due to go to a member, by member, with the store each is for: sent
    /// together when the outputs are next polled ([`Node::send_due_replications`]).
    pub(super) due: BTreeMap<NodeId, Vec<(u64, WireMessage)>>,
}

/// Most message bytes one replication request carries (with at most [`MAX_BATCH`]
/// messages), so a batch stays far inside every node's `http.max_body_bytes` whatever
/// the store's largest body.
pub(super) const REPLICATE_BATCH_BYTES: usize = 256 * 1024;

/// A store waiting for its write quorum.
#[derive(Debug)]
pub(super) struct PendingStore {
    pub(super) req: RequestId,
    pub(super) reply: ReplyTo,
    pub(super) message: WireMessage,
    pub(super) hash: MessageHash,
    pub(super) started: Timestamp,
    pub(super) deadline: Timestamp,
    /// Whether this node's own copy is durable and its receipt counted.
    pub(super) local_durable: bool,
    /// Sequence of the local write; durable once the store reports it.
    pub(super) local_seq: u64,
    pub(super) receipts: Vec<Receipt>,
    /// Members still to confirm, with the time of the next attempt (None: in flight).
    pub(super) peers: BTreeMap<NodeId, Option<Timestamp>>,
}

/// A replication request answered once the copies are durable.
#[derive(Debug)]
pub(super) struct PendingReplicaAck {
    pub(super) req: RequestId,
    pub(super) max_seq: u64,
    pub(super) items: Vec<(MessageHash, RecipientId, Timestamp)>,
    pub(super) refused: Vec<(MessageHash, CopyRefusal)>,
}

impl Replication {
    /// The earliest deadline or retry among the pending stores and relays.
    pub(super) fn next_wakeup(&self) -> Option<Timestamp> {
        let stores = self
            .stores
            .values()
            .flat_map(|s| core::iter::once(s.deadline).chain(s.peers.values().flatten().copied()));
        let relays = self.relay_retries.iter().map(|(at, ..)| *at);
        stores.chain(relays).min()
    }
}

impl<B: MessageBackend> Node<B> {
    /// Time passed: stores move on (retries, deadlines) and relayed changes due are sent
    /// again.
    pub(super) fn retry_replication(&mut self, now: Timestamp) {
        let ops: Vec<u64> = self.replication.stores.keys().copied().collect();
        for op in ops {
            self.advance_store(now, op);
        }
        let (due, later): (Vec<_>, Vec<_>) = core::mem::take(&mut self.replication.relay_retries)
            .into_iter()
            .partition(|(at, ..)| *at <= now);
        self.replication.relay_retries = later;
        for (_, peer, change, until) in due {
            self.send_relay(now, peer, change, until);
        }
    }

    /// A member answered a replicate of the stores `ops`: a receipt it signed for a
    /// store's message counts toward that store's quorum; a store it gave none for is
    /// asked again later.
    pub(super) fn replica_answered(
        &mut self,
        now: Timestamp,
        ops: &[u64],
        peer: NodeId,
        result: Result<Vec<u8>, TransmitFailure>,
    ) {
        // Only the member's own receipts count, whatever else the answer holds.
        let receipts: BTreeMap<MessageHash, Receipt> = result
            .ok()
            .and_then(|b| match PeerResponse::decode(&b) {
                Ok(PeerResponse::Stored { receipts, .. }) => Some(receipts),
                _ => None,
            })
            .into_iter()
            .flatten()
            .filter(|(_, r)| r.node == peer)
            .collect();
        let retry = now.plus_millis(self.config.replication_retry_ms);
        let mut proved = false;
        for op in ops {
            let Some(s) = self.replication.stores.get_mut(op) else {
                continue; // Answered or given up meanwhile.
            };
            let valid = receipts
                .get(&s.hash)
                .filter(|r| r.verify(&s.hash, &s.message.recipient, s.message.expiry));
            match valid {
                Some(r) => {
                    // A receipt signed by the peer, answered at its address: as good
                    // as a probe answer for its liveness. Anything less is not.
                    proved = true;
                    s.peers.remove(&peer);
                    if !s.receipts.iter().any(|x| x.node == r.node) {
                        s.receipts.push(*r);
                    }
                }
                None => {
                    s.peers.insert(peer, Some(retry));
                }
            }
        }
        if proved {
            self.membership.record_contact(&peer, now);
        }
        for op in ops {
            self.advance_store(now, *op);
        }
    }

    /// A member answered a relayed change: applied or refused for good, done; unreachable,
    /// silent or garbled, asked again while the change's window lasts.
    pub(super) fn relay_answered(
        &mut self,
        now: Timestamp,
        peer: NodeId,
        change: Vec<u8>,
        until: Timestamp,
        result: Result<Vec<u8>, TransmitFailure>,
    ) {
        let answered = matches!(
            result.map(|b| PeerResponse::decode(&b)),
            Ok(Ok(PeerResponse::Applied(_) | PeerResponse::Refused(_)))
        );
        let retry = now.plus_millis(self.config.replication_retry_ms);
        if !answered && retry <= until {
            self.replication
                .relay_retries
                .push((retry, peer, change, until));
        }
    }

    pub(super) fn start_store(
        &mut self,
        now: Timestamp,
        req: RequestId,
        key: ReplyTo,
        message: WireMessage,
    ) {
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
        self.replication.stores.insert(
            op,
            PendingStore {
                req,
                reply: key,
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
    pub(super) fn advance_store(&mut self, now: Timestamp, op: u64) {
        let durable_seq = self.store.durable_seq();
        let Some(s) = self.replication.stores.get_mut(&op) else {
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
            let s = self.replication.stores.remove(&op).expect("present above");
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
            return self.respond_sealed(s.req, &s.reply, &Response::Stored(ack));
        }
        if now >= s.deadline {
            let s = self.replication.stores.remove(&op).expect("present above");
            self.stats.stores_failed += 1;
            return self.refuse(s.req, &s.reply, RequestError::QuorumNotReached);
        }
        let due: Vec<NodeId> = s
            .peers
            .iter()
            .filter(|(_, at)| at.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for peer in due {
            // In flight from now on: queued, then sent with the other copies due to the
            // same member.
            s.peers.insert(peer, None);
            self.replication
                .due
                .entry(peer)
                .or_default()
                .push((op, s.message.clone()));
        }
    }

    /// Sends the copies made due since the outputs were last polled: one request per
    /// member carrying every copy due to it (at most [`MAX_BATCH`] messages and
    /// [`REPLICATE_BATCH_BYTES`] per request), so stores that fall due together (a burst
    /// of stores, retries after a member's outage) cost an exchange per member, not one
    /// per store and member. A copy goes even if its store was answered meanwhile: the
    /// members beyond the quorum should hold it too.
    pub(super) fn send_due_replications(&mut self) {
        let now = self.clock;
        for (peer, copies) in core::mem::take(&mut self.replication.due) {
            let mut ops = Vec::new();
            let mut messages = Vec::new();
            let mut bytes = 0;
            for (op, message) in copies {
                let full = messages.len() == MAX_BATCH
                    || bytes + message.body.len() > REPLICATE_BATCH_BYTES;
                if full && !messages.is_empty() {
                    let batch = (core::mem::take(&mut ops), core::mem::take(&mut messages));
                    self.send_replicas(now, peer, batch);
                    bytes = 0;
                }
                bytes += message.body.len();
                ops.push(op);
                messages.push(message);
            }
            if !messages.is_empty() {
                self.send_replicas(now, peer, (ops, messages));
            }
        }
    }

    /// One replication request to `peer`; when it cannot go (the member left the
    /// directory), its stores ask again later.
    fn send_replicas(
        &mut self,
        now: Timestamp,
        peer: NodeId,
        (ops, messages): (Vec<u64>, Vec<WireMessage>),
    ) {
        let count = messages.len() as u64;
        let request = PeerRequest::Replicate(messages);
        let pending = Pending::Replicate {
            ops: ops.clone(),
            peer,
        };
        if self.transmit_peer(now, peer, &request, pending) {
            self.stats.replications_sent += 1;
            self.stats.replicas_sent += count;
            return;
        }
        let retry = now.plus_millis(self.config.replication_retry_ms);
        for op in ops {
            if let Some(s) = self.replication.stores.get_mut(&op) {
                s.peers.insert(peer, Some(retry));
            }
        }
    }

    /// The store backend made writes durable (group commit): release what waited on it.
    pub fn handle_durable(&mut self, now: Timestamp) {
        let now = self.monotonic(now);
        let ops: Vec<u64> = self.replication.stores.keys().copied().collect();
        for op in ops {
            self.advance_store(now, op);
        }
        self.release_replica_acks();
    }

    pub(super) fn release_replica_acks(&mut self) {
        let durable = self.store.durable_seq();
        let (ready, waiting): (Vec<_>, Vec<_>) =
            core::mem::take(&mut self.replication.replica_acks)
                .into_iter()
                .partition(|a| a.max_seq <= durable);
        self.replication.replica_acks = waiting;
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

    pub(super) fn send_relay(
        &mut self,
        now: Timestamp,
        peer: NodeId,
        change: Vec<u8>,
        until: Timestamp,
    ) {
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

    pub(super) fn apply_relay(&mut self, now: Timestamp, bytes: &[u8]) -> PeerResponse {
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
    pub(super) fn apply_tombstones(
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
    pub(super) fn show_deletes(&mut self, now: Timestamp, peer: NodeId, copies: &[&WireMessage]) {
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
        self.send_tombstones(now, peer, entries);
    }

    /// Shows `peer` the owners' deletes of messages it still holds, if any.
    pub(super) fn send_tombstones(
        &mut self,
        now: Timestamp,
        peer: NodeId,
        entries: Vec<(MessageHash, Vec<u8>)>,
    ) {
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

    pub(super) fn accept_replicas(
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
        self.replication.replica_acks.push(PendingReplicaAck {
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
    pub(super) fn accept_copy(
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

    pub(super) fn check_copy(
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
}
