//! The directory: which nodes exist, how to reach them, and whether they are alive.
//!
//! The directory owns a bounded map of verified descriptors with each node's liveness,
//! and decides when to probe a node and when to evict it. It never sends a probe itself
//! and never reads a clock: the node asks it what is due at `now` and reports probe
//! answers and failures back.
//!
//! A descriptor learned from gossip or a registration makes a **candidate**: probed at
//! once, but not live — not listed, not gossiped, not on the ring — until the node
//! proves itself by answering a probe at its address with its own identity's signature
//! ([`Directory::mark_live`]). Liveness is refreshed only by such proofs (and by signed
//! replication receipts), never by what a node sends on its own, so an identity that
//! cannot be reached at its address is evicted whatever it gossips. An evicted identity is
//! **quarantined** for `evict_after_ms`: gossip repeating its evicted descriptor (or an
//! older one) is ignored meanwhile; a newer descriptor (a restart, a renewal) and, after
//! the quarantine, any descriptor bring it back only as a candidate.
//!
//! Invariants: only verified descriptors are held (a [`Descriptor`] value always carries
//! a valid signature); the node's own ID is never listed; at most `max_nodes` entries and
//! `max_nodes` quarantined IDs; iteration order is deterministic (a `BTreeMap`).

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::ops::Bound;

use rand_core::Rng;

use crate::keys::Descriptor;
use crate::types::{Epoch, NodeId, Timestamp};

/// Most probes one call to [`Directory::due_probes`] returns, so a large directory spreads
/// its probes over several ticks.
pub const MAX_PROBES_PER_TICK: usize = 64;

/// How far ahead of the receiver's clock a descriptor may expire, and its onion-key
/// epoch (a start time in seconds) may lie: 24 hours. Nodes sign descriptors for an hour
/// (`NodeConfig::descriptor_lifetime_ms`); one valid for ever would outlive its node's
/// eviction, and a far-future epoch would supersede every later descriptor of that node.
pub const MAX_DESCRIPTOR_AHEAD_MS: u64 = 24 * 60 * 60 * 1000;

/// Directory timers and bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryConfig {
    /// Probe a node not heard from for this long, ms (default 10,000).
    pub probe_interval_ms: u64,
    /// Evict a node not heard from for this long, ms (default 60,000).
    pub evict_after_ms: u64,
    /// Most nodes held (default 10,000).
    pub max_nodes: usize,
    /// Nodes gossiped with per round (default 3).
    pub gossip_fanout: usize,
    /// A closed network: only these node IDs are admitted at all (registration, gossip,
    /// probes). `None` (the default): an open network.
    pub allowlist: Option<BTreeSet<NodeId>>,
    /// The work every admitted node ID must carry, in bits ([`crate::keys::node_id_work`];
    /// at most [`crate::keys::MAX_JOIN_DIFFICULTY`]). 0 (the default): none.
    pub join_difficulty: u8,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        Self {
            probe_interval_ms: 10_000,
            evict_after_ms: 60_000,
            max_nodes: 10_000,
            gossip_fanout: 3,
            allowlist: None,
            join_difficulty: 0,
        }
    }
}

/// What [`Directory::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    /// A node not known before.
    Added,
    /// A newer descriptor of a known node.
    Updated,
    /// The same descriptor again.
    Unchanged,
    /// Older than the one held.
    Stale,
    /// Already expired.
    Expired,
    /// Expires, or claims an epoch, further ahead than [`MAX_DESCRIPTOR_AHEAD_MS`].
    TooFarAhead,
    /// The directory is full.
    Full,
    /// The node was evicted a short while ago; gossip about it is ignored until its
    /// quarantine ends.
    Quarantined,
    /// A closed network and the node is not on its allowlist.
    NotAdmitted,
    /// This node's own descriptor.
    Own,
}

impl InsertOutcome {
    /// Whether the directory changed.
    #[must_use]
    pub fn is_changed(self) -> bool {
        matches!(self, Self::Added | Self::Updated)
    }
}

#[derive(Clone, Debug)]
struct Entry {
    descriptor: Descriptor,
    /// When the node last proved itself (for a candidate: when it was added).
    last_contact: Timestamp,
    last_probe: Option<Timestamp>,
    failures: u32,
    /// Whether it has answered a probe since it was added.
    live: bool,
}

/// Whether `d` expires, and started, no more than [`MAX_DESCRIPTOR_AHEAD_MS`] after `now`.
#[must_use]
pub fn is_plausible(d: &Descriptor, now: Timestamp) -> bool {
    let horizon = now.plus_millis(MAX_DESCRIPTOR_AHEAD_MS);
    d.expires() <= horizon && u64::from(d.epoch().0) <= horizon.0 / 1000
}

/// Known nodes with their liveness.
#[derive(Clone, Debug)]
pub struct Directory {
    own: NodeId,
    config: DirectoryConfig,
    nodes: BTreeMap<NodeId, Entry>,
    /// Evicted IDs: when their quarantine ends, and the `(epoch, expires)` of the
    /// descriptor evicted (only a newer one ends it early).
    quarantine: BTreeMap<NodeId, (Timestamp, Epoch, Timestamp)>,
    /// Bumped whenever a descriptor is added, replaced or removed, so callers can cache
    /// what they derive from the set of descriptors.
    generation: u64,
}

impl Directory {
    /// An empty directory for node `own`.
    #[must_use]
    pub fn new(own: NodeId, config: DirectoryConfig) -> Self {
        Self {
            own,
            config,
            nodes: BTreeMap::new(),
            quarantine: BTreeMap::new(),
            generation: 0,
        }
    }

    /// Adds or refreshes a node's descriptor. A new node is a candidate, probed at once
    /// and evicted unless it proves itself within `evict_after_ms`.
    pub fn insert(&mut self, d: Descriptor, now: Timestamp) -> InsertOutcome {
        let id = d.node_id();
        if id == self.own {
            return InsertOutcome::Own;
        }
        if !self.admits(&id) {
            return InsertOutcome::NotAdmitted;
        }
        if self.quarantines(&id, d.epoch(), d.expires(), now) {
            return InsertOutcome::Quarantined;
        }
        self.quarantine.remove(&id);
        if !d.is_valid_at(now) {
            return InsertOutcome::Expired;
        }
        if !is_plausible(&d, now) {
            return InsertOutcome::TooFarAhead;
        }
        let full = self.nodes.len() >= self.config.max_nodes;
        match self.nodes.get_mut(&id) {
            Some(e) if e.descriptor == d => InsertOutcome::Unchanged,
            Some(e) if d.supersedes(&e.descriptor) => {
                e.descriptor = d;
                if e.live {
                    self.generation += 1;
                }
                InsertOutcome::Updated
            }
            Some(_) => InsertOutcome::Stale,
            None if full => InsertOutcome::Full,
            None => {
                self.nodes.insert(
                    id,
                    Entry {
                        descriptor: d,
                        last_contact: now,
                        last_probe: None,
                        failures: 0,
                        live: false,
                    },
                );
                InsertOutcome::Added
            }
        }
    }

    /// Merges gossiped descriptors; returns how many added or updated a node.
    pub fn merge(&mut self, ds: impl IntoIterator<Item = Descriptor>, now: Timestamp) -> usize {
        ds.into_iter()
            .filter(|d| self.insert(*d, now).is_changed())
            .count()
    }

    /// Whether `id` may be in this directory at all: on the allowlist of a closed
    /// network, and carrying the network's join work (cheap checks: a hash at most).
    #[must_use]
    pub fn admits(&self, id: &NodeId) -> bool {
        let listed = self
            .config
            .allowlist
            .as_ref()
            .is_none_or(|allowed| allowed.contains(id));
        listed
            && (self.config.join_difficulty == 0
                || crate::keys::node_id_work(id) >= u32::from(self.config.join_difficulty))
    }

    /// Lifts the quarantine of `id`: the node itself asked to join (its own signed
    /// gossip or registration). It still has to answer a probe to become live.
    pub fn lift_quarantine(&mut self, id: &NodeId) {
        self.quarantine.remove(id);
    }

    /// `id` proved itself: it answered a probe at its address with its identity's
    /// signature. Returns true when it was a candidate and is live from now on.
    pub fn mark_live(&mut self, id: &NodeId, now: Timestamp) -> bool {
        let Some(e) = self.nodes.get_mut(id) else {
            return false;
        };
        e.last_contact = e.last_contact.max(now);
        e.failures = 0;
        let became = !e.live;
        e.live = true;
        if became {
            self.generation += 1;
        }
        became
    }

    /// A signed answer from a live `id` at its address (a replication receipt): as good
    /// as a probe for liveness. Does nothing for candidates.
    pub fn record_contact(&mut self, id: &NodeId, now: Timestamp) {
        if let Some(e) = self.nodes.get_mut(id).filter(|e| e.live) {
            e.last_contact = e.last_contact.max(now);
            e.failures = 0;
        }
    }

    /// A failed exchange with `id` (eviction still waits for the timeout: one lost
    /// packet must not remove a node).
    pub fn record_failure(&mut self, id: &NodeId, _now: Timestamp) {
        if let Some(e) = self.nodes.get_mut(id) {
            e.failures = e.failures.saturating_add(1);
        }
    }

    /// Removes nodes whose descriptor expired or that have not proved themselves for
    /// `evict_after_ms`, and quarantines them for as long; returns the removed nodes that
    /// were live (candidates were never on the ring).
    pub fn evict(&mut self, now: Timestamp) -> Vec<NodeId> {
        let limit = self.config.evict_after_ms;
        self.quarantine.retain(|_, (until, _, _)| *until >= now);
        let gone: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, e)| {
                !e.descriptor.is_valid_at(now) || now.millis_since(e.last_contact) > limit
            })
            .map(|(id, _)| *id)
            .collect();
        let mut were_live = Vec::new();
        for id in gone {
            let Some(e) = self.nodes.remove(&id) else {
                continue;
            };
            if e.live {
                were_live.push(id);
            }
            if self.quarantine.len() >= self.config.max_nodes {
                // Bounded: the quarantine closest to its end goes first.
                if let Some((&first, _)) = self.quarantine.iter().min_by_key(|(_, q)| q.0) {
                    self.quarantine.remove(&first);
                }
            }
            let d = e.descriptor;
            self.quarantine
                .insert(id, (now.plus_millis(limit), d.epoch(), d.expires()));
        }
        if !were_live.is_empty() {
            self.generation += 1;
        }
        were_live
    }

    /// Nodes to probe now — candidates never probed, and nodes not proved, and not
    /// probed, for `probe_interval_ms` — at most [`MAX_PROBES_PER_TICK`]; each is marked
    /// probed.
    pub fn due_probes(&mut self, now: Timestamp) -> Vec<NodeId> {
        let interval = self.config.probe_interval_ms;
        let mut due = Vec::new();
        for (id, e) in &mut self.nodes {
            if due.len() == MAX_PROBES_PER_TICK {
                break;
            }
            let quiet = !e.live || now.millis_since(e.last_contact) >= interval;
            let again = retry_interval(interval, e.failures);
            let not_probed = e.last_probe.is_none_or(|p| now.millis_since(p) >= again);
            if quiet && not_probed {
                e.last_probe = Some(now);
                due.push(*id);
            }
        }
        due
    }

    /// The earliest time a probe or an eviction becomes due.
    #[must_use]
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        self.nodes
            .values()
            .map(|e| {
                let interval = self.config.probe_interval_ms;
                let again = retry_interval(interval, e.failures);
                let probe = match (e.live, e.last_probe) {
                    (false, None) => e.last_contact,
                    (false, Some(p)) => p.plus_millis(again),
                    (true, None) => e.last_contact.plus_millis(interval),
                    (true, Some(p)) => e
                        .last_contact
                        .plus_millis(interval)
                        .max(p.plus_millis(again)),
                };
                let evict = e.last_contact.plus_millis(self.config.evict_after_ms + 1);
                probe.min(evict).min(e.descriptor.expires().plus_millis(1))
            })
            .min()
    }

    /// Up to `n` distinct live nodes chosen at random (gossip partners).
    pub fn gossip_targets<R: Rng + ?Sized>(&self, rng: &mut R, n: usize) -> Vec<NodeId> {
        let ids: Vec<NodeId> = self.live_ids().collect();
        sample(&ids, n, rng)
    }

    /// Up to `n` distinct valid descriptors chosen at random: a client's first view.
    pub fn bootstrap_set<R: Rng + ?Sized>(
        &self,
        now: Timestamp,
        n: usize,
        rng: &mut R,
    ) -> Vec<Descriptor> {
        let valid: Vec<Descriptor> = self
            .nodes
            .values()
            .filter(|e| e.live)
            .map(|e| e.descriptor)
            .filter(|d| d.is_valid_at(now))
            .collect();
        sample(&valid, n, rng)
    }

    /// Changes whenever the set of live nodes or one of their descriptors changes.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The descriptor of `id`, live or candidate (where to reach it).
    #[must_use]
    pub fn get(&self, id: &NodeId) -> Option<&Descriptor> {
        self.nodes.get(id).map(|e| &e.descriptor)
    }

    /// Whether `id` is live.
    #[must_use]
    pub fn contains(&self, id: &NodeId) -> bool {
        self.nodes.get(id).is_some_and(|e| e.live)
    }

    /// Whether `id` is held at all, live or candidate.
    #[must_use]
    pub fn holds(&self, id: &NodeId) -> bool {
        self.nodes.contains_key(id)
    }

    /// Whether `id` is quarantined after an eviction at `now`.
    #[must_use]
    pub fn is_quarantined(&self, id: &NodeId, now: Timestamp) -> bool {
        self.quarantine.get(id).is_some_and(|q| now <= q.0)
    }

    /// Whether a descriptor of `id` with this `(epoch, expires)` is to be ignored at
    /// `now`: `id` is quarantined and the descriptor is not newer than the one evicted.
    /// Checked before the descriptor's signature.
    #[must_use]
    pub fn quarantines(
        &self,
        id: &NodeId,
        epoch: Epoch,
        expires: Timestamp,
        now: Timestamp,
    ) -> bool {
        self.quarantine
            .get(id)
            .is_some_and(|&(until, e, x)| now <= until && (epoch, expires) <= (e, x))
    }

    /// Number of live nodes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.nodes.values().filter(|e| e.live).count()
    }

    /// Number of candidates waiting to answer a probe.
    #[must_use]
    pub fn candidates(&self) -> usize {
        self.nodes.values().filter(|e| !e.live).count()
    }

    /// Whether no node is live.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        !self.nodes.values().any(|e| e.live)
    }

    /// Every live node's descriptor, by node ID.
    pub fn descriptors(&self) -> impl Iterator<Item = &Descriptor> {
        self.nodes
            .values()
            .filter(|e| e.live)
            .map(|e| &e.descriptor)
    }

    /// Live descriptors whose node IDs follow `after` (all, when `None`), in node-ID
    /// order: a range of the map, so a page of a large directory costs its own length.
    pub fn descriptors_after(&self, after: Option<NodeId>) -> impl Iterator<Item = &Descriptor> {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.nodes
            .range((from, Bound::Unbounded))
            .filter(|(_, e)| e.live)
            .map(|(_, e)| &e.descriptor)
    }

    /// Every live node's ID.
    pub fn live_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.iter().filter(|(_, e)| e.live).map(|(id, _)| *id)
    }
}

/// How long after a probe the next one is due: the interval, or a quarter of it after a
/// failure, so one or two lost packets do not run a live node into its eviction.
fn retry_interval(interval: u64, failures: u32) -> u64 {
    if failures > 0 { interval / 4 } else { interval }
}

/// A uniform random sample of up to `n` distinct items (partial Fisher–Yates).
fn sample<T: Copy, R: Rng + ?Sized>(items: &[T], n: usize, rng: &mut R) -> Vec<T> {
    let mut pool: Vec<T> = items.to_vec();
    let n = n.min(pool.len());
    for i in 0..n {
        let span = (pool.len() - i) as u64;
        // Modulo bias is irrelevant for picking gossip partners.
        let j = i + (rng.next_u64() % span) as usize;
        pool.swap(i, j);
    }
    pool.truncate(n);
    pool
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Address, IdentityKey, OnionKey};
    use alloc::collections::BTreeSet;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const T0: Timestamp = Timestamp(1_000_000);

    fn descriptor(seed: u8, epoch: u32, expires: Timestamp) -> Descriptor {
        let mut rng = ChaCha20Rng::seed_from_u64(u64::from(seed) << 32 | u64::from(epoch));
        let onion = OnionKey::generate(Epoch(epoch), &mut rng);
        Descriptor::sign(
            &IdentityKey::from_seed(&[seed; 32]),
            &onion,
            crate::TlsKeyHash([0x77; 32]),
            Address::new("n:1").unwrap(),
            expires,
        )
    }

    /// Inserts `desc` and marks it live, as a probe answer at `t` would.
    fn insert_live(d: &mut Directory, desc: Descriptor, t: Timestamp) -> InsertOutcome {
        let outcome = d.insert(desc, t);
        d.mark_live(&desc.node_id(), t);
        outcome
    }

    fn dir() -> Directory {
        Directory::new(
            IdentityKey::from_seed(&[0; 32]).node_id(),
            DirectoryConfig::default(),
        )
    }

    #[test]
    fn newer_epoch_supersedes_and_stale_is_ignored() {
        let mut d = dir();
        let far = T0.plus_millis(1_000_000);
        assert_eq!(d.insert(descriptor(1, 1, far), T0), InsertOutcome::Added);
        assert_eq!(d.insert(descriptor(1, 2, far), T0), InsertOutcome::Updated);
        assert_eq!(d.insert(descriptor(1, 1, far), T0), InsertOutcome::Stale);
        assert_eq!(
            d.insert(descriptor(1, 2, far), T0),
            InsertOutcome::Unchanged
        );
        assert_eq!(
            d.get(&descriptor(1, 2, far).node_id()).unwrap().epoch(),
            Epoch(2)
        );
    }

    #[test]
    fn own_and_expired_descriptors_are_refused() {
        let mut d = dir();
        assert_eq!(
            d.insert(descriptor(0, 1, T0.plus_millis(5)), T0),
            InsertOutcome::Own
        );
        assert_eq!(
            d.insert(descriptor(2, 1, Timestamp(T0.0 - 1)), T0),
            InsertOutcome::Expired
        );
        assert!(d.is_empty());
    }

    #[test]
    fn descriptors_from_too_far_ahead_are_refused() {
        let mut d = dir();
        let horizon = T0.plus_millis(MAX_DESCRIPTOR_AHEAD_MS);
        // Valid for ever, as an attacker registered one.
        assert_eq!(
            d.insert(descriptor(4, 1, Timestamp(u64::MAX)), T0),
            InsertOutcome::TooFarAhead
        );
        assert_eq!(
            d.insert(descriptor(5, 1, horizon.plus_millis(1)), T0),
            InsertOutcome::TooFarAhead
        );
        // An epoch (seconds) from the far future would supersede every later descriptor.
        assert_eq!(
            d.insert(descriptor(6, u32::MAX, T0.plus_millis(60_000)), T0),
            InsertOutcome::TooFarAhead
        );
        let last_second = u32::try_from(horizon.0 / 1000).unwrap();
        assert!(d.is_empty());
        assert_eq!(
            d.insert(descriptor(7, last_second, horizon), T0),
            InsertOutcome::Added
        );
    }

    #[test]
    fn expired_descriptor_is_evicted_when_it_expires() {
        let mut d = dir();
        let desc = descriptor(3, 1, T0.plus_millis(100));
        insert_live(&mut d, desc, T0);
        assert!(d.evict(T0.plus_millis(100)).is_empty());
        assert_eq!(d.evict(T0.plus_millis(101)), alloc::vec![desc.node_id()]);
    }

    #[test]
    fn silent_node_is_evicted_after_the_timeout_but_not_before() {
        let mut d = dir();
        let desc = descriptor(4, 1, T0.plus_millis(10_000_000));
        insert_live(&mut d, desc, T0);
        assert!(d.evict(T0.plus_millis(60_000)).is_empty());
        d.record_contact(&desc.node_id(), T0.plus_millis(50_000));
        assert!(
            d.evict(T0.plus_millis(100_000)).is_empty(),
            "contact reset the timer"
        );
        d.record_failure(&desc.node_id(), T0.plus_millis(100_000));
        assert!(d.contains(&desc.node_id()), "one failure does not evict");
        assert_eq!(d.evict(T0.plus_millis(110_001)).len(), 1);
    }

    #[test]
    fn probes_are_due_at_the_interval_and_not_repeated_at_once() {
        let mut d = dir();
        let desc = descriptor(5, 1, T0.plus_millis(10_000_000));
        insert_live(&mut d, desc, T0);
        assert!(d.due_probes(T0.plus_millis(9_999)).is_empty());
        assert_eq!(d.next_wakeup(), Some(T0.plus_millis(10_000)));
        assert_eq!(
            d.due_probes(T0.plus_millis(10_000)),
            alloc::vec![desc.node_id()]
        );
        assert!(d.due_probes(T0.plus_millis(10_000)).is_empty());
        assert_eq!(d.due_probes(T0.plus_millis(20_000)).len(), 1);
        // That probe was lost: the next comes after a quarter interval, not a whole one.
        d.record_failure(&desc.node_id(), T0.plus_millis(21_000));
        assert_eq!(d.next_wakeup(), Some(T0.plus_millis(22_500)));
        assert!(d.due_probes(T0.plus_millis(22_499)).is_empty());
        assert_eq!(d.due_probes(T0.plus_millis(22_500)).len(), 1);
    }

    #[test]
    fn candidates_are_probed_at_once_listed_only_when_live_and_evicted_ones_quarantined() {
        let mut d = dir();
        let desc = descriptor(6, 1, T0.plus_millis(10_000_000));
        let id = desc.node_id();
        assert_eq!(d.insert(desc, T0), InsertOutcome::Added);
        assert!(!d.contains(&id) && d.holds(&id) && d.is_empty());
        assert_eq!(d.descriptors().count(), 0);
        assert_eq!(d.next_wakeup(), Some(T0), "a candidate is probed at once");
        assert_eq!(d.due_probes(T0), alloc::vec![id]);
        // What a candidate sends on its own does not keep it: only a probe answer does.
        d.record_contact(&id, T0.plus_millis(50_000));
        assert!(
            d.evict(T0.plus_millis(60_001)).is_empty(),
            "a candidate was never live"
        );
        assert!(!d.holds(&id));
        assert!(d.is_quarantined(&id, T0.plus_millis(60_001)));
        assert_eq!(
            d.insert(desc, T0.plus_millis(70_000)),
            InsertOutcome::Quarantined
        );
        // A restart signs a newer descriptor: that one is not ignored.
        let restarted = descriptor(6, 2, T0.plus_millis(10_000_000));
        let at = T0.plus_millis(70_000);
        assert!(!d.quarantines(&id, restarted.epoch(), restarted.expires(), at));
        assert!(d.quarantines(&id, desc.epoch(), desc.expires(), at));
        // After the quarantine it may come back, as a candidate again.
        assert_eq!(
            d.insert(desc, T0.plus_millis(120_002)),
            InsertOutcome::Added
        );
        assert!(d.mark_live(&id, T0.plus_millis(120_003)));
        assert!(d.contains(&id) && d.len() == 1);
        assert_eq!(d.descriptors().count(), 1);
    }

    #[test]
    fn a_closed_network_admits_only_its_allowlist() {
        let allowed = descriptor(8, 1, T0.plus_millis(10_000));
        let stranger = descriptor(9, 1, T0.plus_millis(10_000));
        let mut d = Directory::new(
            IdentityKey::from_seed(&[0; 32]).node_id(),
            DirectoryConfig {
                allowlist: Some([allowed.node_id()].into_iter().collect()),
                ..DirectoryConfig::default()
            },
        );
        assert_eq!(d.insert(stranger, T0), InsertOutcome::NotAdmitted);
        assert!(!d.holds(&stranger.node_id()));
        assert_eq!(d.insert(allowed, T0), InsertOutcome::Added);
    }

    #[test]
    fn an_open_network_with_join_work_admits_only_worked_identities() {
        let mut rng = ChaCha20Rng::seed_from_u64(12);
        let worked = IdentityKey::generate_with_work(10, 1 << 20, &mut rng).expect("found");
        assert!(crate::keys::node_id_work(&worked.node_id()) >= 10);
        let lazy = (1..=255u8)
            .map(|i| descriptor(i, 1, T0.plus_millis(10_000)))
            .find(|d| crate::keys::node_id_work(&d.node_id()) < 10)
            .expect("most keys carry little work");
        let onion = OnionKey::generate(Epoch(1), &mut rng);
        let good = Descriptor::sign(
            &worked,
            &onion,
            crate::TlsKeyHash([0x77; 32]),
            Address::new("n:1").unwrap(),
            T0.plus_millis(10_000),
        );
        let mut d = Directory::new(
            IdentityKey::from_seed(&[0; 32]).node_id(),
            DirectoryConfig {
                join_difficulty: 10,
                ..DirectoryConfig::default()
            },
        );
        assert!(!d.admits(&lazy.node_id()));
        assert_eq!(d.insert(lazy, T0), InsertOutcome::NotAdmitted);
        assert_eq!(d.insert(good, T0), InsertOutcome::Added);
    }

    #[test]
    fn size_is_bounded() {
        let mut d = Directory::new(
            NodeId([0; 32]),
            DirectoryConfig {
                max_nodes: 3,
                ..DirectoryConfig::default()
            },
        );
        let far = T0.plus_millis(1_000_000);
        let outcomes: Vec<_> = (1..=5)
            .map(|i| insert_live(&mut d, descriptor(i, 1, far), T0))
            .collect();
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == InsertOutcome::Added)
                .count(),
            3
        );
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == InsertOutcome::Full)
                .count(),
            2
        );
        assert_eq!(d.len(), 3);
    }

    #[test]
    fn bootstrap_set_is_distinct_and_valid() {
        let mut d = dir();
        for i in 1..=10 {
            insert_live(
                &mut d,
                descriptor(i, 1, T0.plus_millis(u64::from(i) * 1000)),
                T0,
            );
        }
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let later = T0.plus_millis(5_500);
        let set = d.bootstrap_set(later, 8, &mut rng);
        let ids: BTreeSet<_> = set.iter().map(Descriptor::node_id).collect();
        assert_eq!(ids.len(), set.len());
        assert!(set.iter().all(|x| x.is_valid_at(later)));
        assert_eq!(set.len(), 5, "only 5 descriptors are still valid");
    }
}
