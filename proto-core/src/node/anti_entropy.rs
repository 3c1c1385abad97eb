//! Anti-entropy: per-peer digests of the messages two members should both hold, kept up
//! to date from the store's change log; digest-diff answers read in pages of buckets;
//! reconciling fetches what a peer has, pushes what it lacks and shows it the owners'
//! deletes it missed.

use super::*;

/// Digests of the messages shared with each peer, kept up to date from the store's
/// change log, valid for one ring generation.
#[derive(Debug, Default)]
pub(super) struct AntiEntropy {
    /// The ring generation the digests were computed for (`None`: never).
    pub(super) ring_generation: Option<u64>,
    /// Per peer: the digest of the messages both should hold, and how many there are.
    pub(super) by_peer: BTreeMap<NodeId, (Digest, usize)>,
}

impl AntiEntropy {
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

impl<B: MessageBackend> Node<B> {
    /// A peer answered this node's digest: reconcile, or count the silence against it.
    pub(super) fn digest_answered(
        &mut self,
        now: Timestamp,
        peer: NodeId,
        mine: &Digest,
        result: Result<Vec<u8>, TransmitFailure>,
    ) {
        if let Ok(Ok(PeerResponse::DigestDiff {
            digest,
            hashes,
            covered,
            ..
        })) = result.map(|b| PeerResponse::decode(&b))
        {
            self.reconcile(now, peer, mine, &digest, &hashes, &covered);
        } else {
            self.membership.record_failure(&peer, now);
        }
    }

    /// A peer answered this node's fetch: copies of the hashes asked for are stored under
    /// the store's rules, anything else is refused, and deletes it missed are shown to it.
    pub(super) fn fetch_answered(
        &mut self,
        now: Timestamp,
        peer: NodeId,
        asked: &BTreeSet<MessageHash>,
        result: Result<Vec<u8>, TransmitFailure>,
    ) {
        if let Ok(Ok(PeerResponse::Messages(ms))) = result.map(|b| PeerResponse::decode(&b)) {
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

    /// Brings the per-peer digests up to date: the store's changes since the last call
    /// are applied, or, after a ring change or an overflowing change log, the digests are
    /// rebuilt by one scan of the store. Rounds and digest answers then cost no scan.
    pub(super) fn refresh_digests(&mut self) {
        let changes = self.store.take_changes();
        let generation = self.membership.ring_generation();
        let mut cache = core::mem::take(&mut self.anti_entropy);
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
                cache = AntiEntropy {
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
        self.anti_entropy = cache;
    }

    /// The digest of the messages shared with `peer` and how many there are (call
    /// [`Node::refresh_digests`] first).
    pub(super) fn digest_with(&self, peer: &NodeId) -> (Digest, usize) {
        self.anti_entropy
            .by_peer
            .get(peer)
            .cloned()
            .unwrap_or_default()
    }

    /// Shared hashes in the `differing` buckets for which `keep` holds, at most
    /// `limit + 1` of them (one more than asked tells the caller the list was cut). Reads
    /// only those buckets of the store's hash index.
    pub(super) fn shared_in_buckets(
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
    pub(super) fn digest_diff(
        &mut self,
        sender: &NodeId,
        theirs: &Digest,
        start: u8,
    ) -> PeerResponse {
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

    /// Second half of anti-entropy: fetch what the peer has and we lack, push what we
    /// have in the differing buckets and it lacks.
    pub(super) fn reconcile(
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
        self.send_tombstones(now, peer, deleted);
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

    /// Starts a round with every node that shares a swarm with this one.
    pub(super) fn anti_entropy(&mut self, now: Timestamp) {
        self.stats.anti_entropy_rounds += 1;
        let neighbours: Vec<NodeId> = self.membership.directory().live_ids().collect();
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
}
