//! The swarm store's rules over a small ordered key-value backend.
//!
//! [`MessageStore`] owns the rules — TTL bound, body size bound, deduplication by message
//! hash, per-recipient quotas, the node's capacity, cursor retrieval, deletion, expiry —
//! and delegates keeping records to a [`MessageBackend`]. The core ships
//! [`MemoryBackend`] (for the simulation and embedded users); runtimes plug in a disk
//! backend. The store never reads a clock: `now` is an argument.
//!
//! Durability: every insert gets a per-node sequence number. A backend may make writes
//! durable later (group commit) and reports the highest durable sequence; a store
//! acknowledgement waits for it. A crash loses exactly the writes above that sequence.
//!
//! Invariants: a record is keyed by its hash, indexed by `(recipient, namespace, seq)` for
//! cursor retrieval in O(log n + k) and by `(expiry, hash)` for sweeps that never scan the
//! whole store; sequence numbers only grow, also across restarts.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::fmt;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use sha2::{Digest, Sha256};

use crate::request::{DeleteRequest, DeleteSelector, Origin};
use crate::types::{MessageHash, Namespace, RecipientId, Timestamp};

/// Longest TTL a store accepts: 14 days.
pub const MAX_TTL_MS: u64 = 14 * 24 * 60 * 60 * 1000;
/// Largest message body by default: what fits an onion payload with a signed store
/// request around it (1,518 − 62 − 64 bytes).
pub const DEFAULT_MAX_BODY: usize = 1392;
/// Slack on expiries of replicated messages: the origin computed them with its clock.
const EXPIRY_SLACK_MS: u64 = 60_000;

/// The message hash: `SHA-256(recipient ‖ namespace ‖ body)`, the key that deduplicates
/// stores, replication and anti-entropy.
#[must_use]
pub fn message_hash(recipient: &RecipientId, namespace: Namespace, body: &[u8]) -> MessageHash {
    let mut h = Sha256::new();
    h.update(recipient.as_bytes());
    h.update(namespace.0.to_be_bytes());
    h.update(body);
    MessageHash(h.finalize().into())
}

/// A stored message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// Per-node insertion sequence: the retrieval cursor.
    pub seq: u64,
    /// Content hash.
    pub hash: MessageHash,
    /// Whose message.
    pub recipient: RecipientId,
    /// Its namespace.
    pub namespace: Namespace,
    /// When the swarm first stored it.
    pub stored_at: Timestamp,
    /// When it is dropped.
    pub expiry: Timestamp,
    /// The message.
    pub body: Vec<u8>,
    /// The client's request that vouches for it, checked again by every member a copy
    /// reaches.
    pub origin: Origin,
}

/// A message to store, with the request that vouches for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewMessage<'a> {
    /// Whose message.
    pub recipient: RecipientId,
    /// Its namespace.
    pub namespace: Namespace,
    /// The message.
    pub body: &'a [u8],
    /// The client's store request, minus the message.
    pub origin: Origin,
    /// When the swarm first stored it.
    pub stored_at: Timestamp,
    /// When it is dropped.
    pub expiry: Timestamp,
}

impl<'a> NewMessage<'a> {
    /// A message as an unsigned store request sent at `stored_at` with no proof of work
    /// would make it (tools, tests and benchmarks; such an origin vouches only for
    /// namespaces below 0x8000 on nodes without a proof-of-work requirement).
    #[must_use]
    pub fn unsigned(
        recipient: RecipientId,
        namespace: Namespace,
        body: &'a [u8],
        stored_at: Timestamp,
        expiry: Timestamp,
    ) -> Self {
        Self {
            recipient,
            namespace,
            body,
            origin: Origin {
                timestamp: stored_at,
                ttl_ms: expiry.millis_since(stored_at),
                pow_nonce: 0,
                signature: None,
            },
            stored_at,
            expiry,
        }
    }
}

/// What is left of a message its owner deleted: kept until the message would have
/// expired, so no copy of it (replication, anti-entropy, a replayed store) is stored
/// again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    /// The deleted message's hash.
    pub hash: MessageHash,
    /// Whose it was: a tombstone blocks only that recipient's message.
    pub recipient: RecipientId,
    /// Its namespace.
    pub namespace: Namespace,
    /// When the tombstone may go (the message's expiry).
    pub until: Timestamp,
    /// The owner's signed delete request that removed it, as signed (empty when it is
    /// not known): shown to a member that still holds the message, which checks the
    /// owner's signature itself and deletes its copy.
    pub evidence: Vec<u8>,
}

/// What is left of an owner's delete of everything (or everything stored before a time)
/// in one namespace: a copy stored before `cut` arriving later (a member that held
/// nothing yet when the delete came) is refused until it would have expired anyway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteRange {
    /// Whose messages.
    pub recipient: RecipientId,
    /// Which namespace.
    pub namespace: Namespace,
    /// Messages stored before this were deleted.
    pub cut: Timestamp,
    /// When the range may go: every message it reaches has expired by then.
    pub until: Timestamp,
    /// The owner's signed delete, as signed.
    pub evidence: Vec<u8>,
}

/// The ordered key-value operations the store's rules need from a backend.
pub trait MessageBackend {
    /// The record with this hash.
    fn get(&self, hash: &MessageHash) -> Result<Option<StoredMessage>, StoreError>;
    /// The tombstone of a deleted message.
    fn tombstone(&self, hash: &MessageHash) -> Result<Option<Tombstone>, StoreError>;
    /// Records a tombstone (replacing one for the same hash).
    fn put_tombstone(&mut self, t: Tombstone) -> Result<(), StoreError>;
    /// Removes up to `limit` tombstones whose `until` is at or before `before`; returns
    /// how many.
    fn expire_tombstones(&mut self, before: Timestamp, limit: usize) -> Result<usize, StoreError>;
    /// The delete range of `(recipient, namespace)`.
    fn delete_range(
        &self,
        recipient: &RecipientId,
        namespace: Namespace,
    ) -> Result<Option<DeleteRange>, StoreError>;
    /// Records a delete range (replacing the one of the same recipient and namespace).
    fn put_delete_range(&mut self, r: DeleteRange) -> Result<(), StoreError>;
    /// Removes up to `limit` delete ranges whose `until` is at or before `before`;
    /// returns how many.
    fn expire_delete_ranges(
        &mut self,
        before: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError>;
    /// Inserts `m` (whose hash is absent).
    fn insert(&mut self, m: StoredMessage) -> Result<(), StoreError>;
    /// Inserts `m` unless a record with its hash is held, and then returns that record
    /// (inserting nothing). The default asks [`MessageBackend::get`] first; a backend that
    /// can look and insert in one search of its hash index does so.
    fn insert_unless_held(
        &mut self,
        m: StoredMessage,
    ) -> Result<Option<StoredMessage>, StoreError> {
        if let Some(held) = self.get(&m.hash)? {
            return Ok(Some(held));
        }
        self.insert(m)?;
        Ok(None)
    }
    /// Removes the record with this hash, returning it.
    fn remove(&mut self, hash: &MessageHash) -> Result<Option<StoredMessage>, StoreError>;
    /// Changes a record's expiry (and its place in the expiry index).
    fn set_expiry(&mut self, hash: &MessageHash, expiry: Timestamp) -> Result<bool, StoreError>;
    /// Up to `limit` records of `(recipient, namespace)` with `seq > after`, in `seq` order.
    fn range(
        &self,
        recipient: &RecipientId,
        namespace: Namespace,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;
    /// Up to `limit` hashes of records with `expiry <= before`, earliest first.
    fn expiring(&self, before: Timestamp, limit: usize) -> Result<Vec<MessageHash>, StoreError>;
    /// Calls `visit` with every record's `(hash, recipient)`: a full scan for
    /// anti-entropy, which must not collect the records (memory stays flat however many
    /// are stored).
    fn for_each(&self, visit: &mut dyn FnMut(&MessageHash, &RecipientId))
    -> Result<(), StoreError>;
    /// Calls `visit` with `(hash, recipient)` of every record whose hash starts with
    /// `first_byte` (one anti-entropy bucket). The default filters a full scan; a backend
    /// with a hash-ordered index reads just that range.
    fn for_each_in_bucket(
        &self,
        first_byte: u8,
        visit: &mut dyn FnMut(&MessageHash, &RecipientId),
    ) -> Result<(), StoreError> {
        self.for_each(&mut |h, r| {
            if h.0[0] == first_byte {
                visit(h, r);
            }
        })
    }
    /// `(messages, body bytes)` stored for a recipient (all namespaces).
    fn usage(&self, recipient: &RecipientId) -> (u64, u64);
    /// `(messages, body bytes)` stored in total.
    fn totals(&self) -> (u64, u64);
    /// The highest sequence number ever assigned (0 when none).
    fn last_seq(&self) -> u64;
    /// Every write with a sequence at or below this is durable.
    fn durable_seq(&self) -> u64;
    /// Whether writes wait for a commit.
    fn has_pending_writes(&self) -> bool;
}

/// Limits a store enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Longest TTL, ms (default and maximum: 14 days).
    pub max_ttl_ms: u64,
    /// Largest body, bytes (default [`DEFAULT_MAX_BODY`]).
    pub max_body: usize,
    /// Messages per recipient (default 10,000).
    pub recipient_max_messages: u64,
    /// Body bytes per recipient (default 16 MiB).
    pub recipient_max_bytes: u64,
    /// Messages per node (default 100 million).
    pub node_max_messages: u64,
    /// Body bytes per node (default 100 GB).
    pub node_max_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_ttl_ms: MAX_TTL_MS,
            max_body: DEFAULT_MAX_BODY,
            recipient_max_messages: 10_000,
            recipient_max_bytes: 16 << 20,
            node_max_messages: 100_000_000,
            node_max_bytes: 100_000_000_000,
        }
    }
}

/// Why the store refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// Expiry beyond the maximum TTL.
    TtlTooLong,
    /// Already expired.
    Expired,
    /// Body above the maximum size.
    BodyTooLarge,
    /// The recipient's quota is used up.
    QuotaExceeded,
    /// The node's capacity is used up; retrieves still work.
    NodeFull,
    /// The owner deleted this message: it is not stored again.
    Deleted,
    /// The backend failed (I/O); nothing was changed.
    Backend,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TtlTooLong => "TTL exceeds the maximum",
            Self::Expired => "message already expired",
            Self::BodyTooLarge => "message body exceeds the maximum size",
            Self::QuotaExceeded => "recipient quota exceeded",
            Self::NodeFull => "node storage is full",
            Self::Deleted => "the owner deleted this message",
            Self::Backend => "storage backend error",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for StoreError {}

/// Result of an insert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inserted {
    /// The message's hash.
    pub hash: MessageHash,
    /// Its sequence here (the existing one for a duplicate).
    pub seq: u64,
    /// False when the message was already stored.
    pub new: bool,
    /// The stored timestamps (the original ones for a duplicate).
    pub stored_at: Timestamp,
    /// The stored expiry.
    pub expiry: Timestamp,
    /// The stored origin (the original one for a duplicate).
    pub origin: Origin,
}

/// A page of a retrieval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// Messages after the cursor, in sequence order.
    pub messages: Vec<StoredMessage>,
    /// Whether more follow.
    pub more: bool,
}

/// A record added to or removed from the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    /// The record's hash.
    pub hash: MessageHash,
    /// Its recipient.
    pub recipient: RecipientId,
    /// Added (`true`) or removed.
    pub added: bool,
}

/// Records added and removed since the last [`MessageStore::take_changes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Changes {
    /// Every change, in order.
    List(Vec<Change>),
    /// More than [`MAX_PENDING_CHANGES`] piled up and were dropped: whoever keeps a
    /// summary must rebuild it from a scan.
    Overflowed,
}

/// Most changes kept between two [`MessageStore::take_changes`] (about 4 MiB).
pub const MAX_PENDING_CHANGES: usize = 65_536;

/// The store: rules over a backend.
#[derive(Debug)]
pub struct MessageStore<B> {
    backend: B,
    config: StoreConfig,
    next_seq: u64,
    /// Changes since the last `take_changes`; `None` after an overflow.
    changes: Option<Vec<Change>>,
}

impl<B: MessageBackend> MessageStore<B> {
    /// Opens a store over `backend`, continuing its sequence numbers.
    pub fn open(backend: B, config: StoreConfig) -> Result<Self, StoreError> {
        let next_seq = backend.last_seq() + 1;
        Ok(Self {
            backend,
            config,
            next_seq,
            changes: Some(Vec::new()),
        })
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, mutably (commits, crash simulation).
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The limits in force.
    #[must_use]
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Stores a message, or returns the existing copy's details for a duplicate.
    pub fn insert(&mut self, m: NewMessage<'_>, now: Timestamp) -> Result<Inserted, StoreError> {
        let NewMessage {
            recipient,
            namespace,
            body,
            origin,
            stored_at,
            expiry,
        } = m;
        if body.len() > self.config.max_body {
            return Err(StoreError::BodyTooLarge);
        }
        if expiry <= now {
            return Err(StoreError::Expired);
        }
        if expiry.millis_since(now) > self.config.max_ttl_ms + EXPIRY_SLACK_MS {
            return Err(StoreError::TtlTooLong);
        }
        let hash = message_hash(&recipient, namespace, body);
        if let Some(t) = self.backend.tombstone(&hash)?
            && t.recipient == recipient
            && t.namespace == namespace
            && t.until > now
        {
            return Err(StoreError::Deleted);
        }
        if let Some(r) = self.backend.delete_range(&recipient, namespace)?
            && stored_at < r.cut
            && r.until > now
        {
            return Err(StoreError::Deleted);
        }
        // A message held already is answered as stored whatever the limits say now.
        let held = |existing: StoredMessage| Inserted {
            hash,
            seq: existing.seq,
            new: false,
            stored_at: existing.stored_at,
            expiry: existing.expiry,
            origin: existing.origin,
        };
        let len = body.len() as u64;
        let (count, bytes) = self.backend.usage(&recipient);
        let (total, total_bytes) = self.backend.totals();
        let refusal = if count >= self.config.recipient_max_messages
            || bytes + len > self.config.recipient_max_bytes
        {
            Some(StoreError::QuotaExceeded)
        } else if total >= self.config.node_max_messages
            || total_bytes + len > self.config.node_max_bytes
        {
            Some(StoreError::NodeFull)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            return match self.backend.get(&hash)? {
                Some(existing) => Ok(held(existing)),
                None => Err(refusal),
            };
        }
        let seq = self.next_seq;
        let message = StoredMessage {
            seq,
            hash,
            recipient,
            namespace,
            stored_at,
            expiry,
            body: body.to_vec(),
            origin,
        };
        // One search of the hash index both finds a duplicate and inserts.
        if let Some(existing) = self.backend.insert_unless_held(message)? {
            return Ok(held(existing));
        }
        self.next_seq += 1;
        self.record(hash, recipient, true);
        Ok(Inserted {
            hash,
            seq,
            new: true,
            stored_at,
            expiry,
            origin,
        })
    }

    /// Up to `limit` live, durable messages of `(recipient, namespace)` after cursor `after`.
    pub fn retrieve(
        &self,
        recipient: &RecipientId,
        namespace: Namespace,
        after: u64,
        limit: usize,
        now: Timestamp,
    ) -> Result<Page, StoreError> {
        // Readers see durable messages only: a write lost in a crash was never visible,
        // so its sequence number can be reused without a cursor skipping a message.
        let durable = self.backend.durable_seq();
        // Expired-but-unswept records are skipped; fetch in rounds so they cannot starve a page.
        let mut messages = Vec::new();
        let mut cursor = after;
        loop {
            let batch = self
                .backend
                .range(recipient, namespace, cursor, limit + 1)?;
            let exhausted = batch.len() <= limit;
            for m in batch {
                if m.seq > durable {
                    return Ok(Page {
                        messages,
                        more: false,
                    });
                }
                cursor = m.seq;
                if m.expiry > now {
                    if messages.len() == limit {
                        return Ok(Page {
                            messages,
                            more: true,
                        });
                    }
                    messages.push(m);
                }
            }
            if exhausted {
                return Ok(Page {
                    messages,
                    more: false,
                });
            }
        }
    }

    /// The live message with this hash.
    pub fn get(
        &self,
        hash: &MessageHash,
        now: Timestamp,
    ) -> Result<Option<StoredMessage>, StoreError> {
        Ok(self.backend.get(hash)?.filter(|m| m.expiry > now))
    }

    /// Deletes the listed messages of `(recipient, namespace)`; returns how many existed.
    pub fn delete_hashes(
        &mut self,
        recipient: &RecipientId,
        namespace: Namespace,
        hashes: impl Iterator<Item = MessageHash>,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        self.delete_listed(recipient, namespace, hashes, now, &[])
    }

    /// Applies the owner's signed delete `d`, whose signed bytes are `evidence` (kept with
    /// each tombstone). A delete reaches no message stored after it was signed, so
    /// applying it late (a relay retried, a member that restarted and forgot what it
    /// applied, a replay) never removes newer mail.
    pub fn apply_delete(
        &mut self,
        d: &DeleteRequest<'_>,
        evidence: &[u8],
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        match d.selector {
            DeleteSelector::Hashes(h) => {
                self.delete_listed(&d.recipient, d.namespace, h.iter(), now, evidence)
            }
            DeleteSelector::All | DeleteSelector::Before(_) => {
                let n = self.delete_matching(&d.recipient, d.namespace, evidence, |m| {
                    delete_covers(d, m)
                })?;
                // Copies of what it reached may still arrive (a member that held nothing
                // yet): they are refused while they could live.
                let cut = match d.selector {
                    DeleteSelector::Before(t) => t.min(d.timestamp.plus_millis(1)),
                    _ => d.timestamp.plus_millis(1),
                };
                let known = self.backend.delete_range(&d.recipient, d.namespace)?;
                if known.is_none_or(|k| k.cut < cut) {
                    self.backend.put_delete_range(DeleteRange {
                        recipient: d.recipient,
                        namespace: d.namespace,
                        cut,
                        until: cut
                            .max(now)
                            .plus_millis(self.config.max_ttl_ms + EXPIRY_SLACK_MS),
                        evidence: evidence.to_vec(),
                    })?;
                }
                Ok(n)
            }
        }
    }

    /// The delete range of `(recipient, namespace)`, if its owner deleted everything (or
    /// everything before a time) there.
    pub fn delete_range(
        &self,
        recipient: &RecipientId,
        namespace: Namespace,
    ) -> Result<Option<DeleteRange>, StoreError> {
        self.backend.delete_range(recipient, namespace)
    }

    /// Deletes the message `hash` when the owner's signed delete `d` (bytes `evidence`)
    /// covers it: a member that missed the delete, shown it by one that applied it.
    /// Whether it was deleted.
    pub fn apply_delete_to(
        &mut self,
        hash: &MessageHash,
        d: &DeleteRequest<'_>,
        evidence: &[u8],
    ) -> Result<bool, StoreError> {
        match self.backend.get(hash)? {
            Some(m) if delete_covers(d, &m) => {
                self.remove_deleted(&m, evidence)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn delete_listed(
        &mut self,
        recipient: &RecipientId,
        namespace: Namespace,
        hashes: impl Iterator<Item = MessageHash>,
        now: Timestamp,
        evidence: &[u8],
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        for h in hashes {
            match self.backend.get(&h)? {
                Some(m) if m.recipient == *recipient && m.namespace == namespace => {
                    self.remove_deleted(&m, evidence)?;
                    n += 1;
                }
                // Another recipient's message: the owner of this request cannot touch it.
                Some(_) => {}
                // Not here (yet): a copy arriving later must not bring it back. The
                // message's expiry is unknown, so the tombstone lasts the longest TTL.
                None => self.backend.put_tombstone(Tombstone {
                    hash: h,
                    recipient: *recipient,
                    namespace,
                    until: now.plus_millis(self.config.max_ttl_ms + EXPIRY_SLACK_MS),
                    evidence: evidence.to_vec(),
                })?,
            }
        }
        Ok(n)
    }

    /// Removes a message its owner deleted and leaves its tombstone.
    fn remove_deleted(&mut self, m: &StoredMessage, evidence: &[u8]) -> Result<(), StoreError> {
        self.remove_record(&m.hash)?;
        self.backend.put_tombstone(Tombstone {
            hash: m.hash,
            recipient: m.recipient,
            namespace: m.namespace,
            until: m.expiry,
            evidence: evidence.to_vec(),
        })
    }

    /// The tombstone of `hash`, if its owner deleted it.
    pub fn tombstone(&self, hash: &MessageHash) -> Result<Option<Tombstone>, StoreError> {
        self.backend.tombstone(hash)
    }

    /// Deletes every message of `(recipient, namespace)`.
    pub fn delete_all(
        &mut self,
        recipient: &RecipientId,
        namespace: Namespace,
        _now: Timestamp,
    ) -> Result<usize, StoreError> {
        self.delete_matching(recipient, namespace, &[], |_| true)
    }

    /// Deletes the messages of `(recipient, namespace)` stored before `before`.
    pub fn delete_before(
        &mut self,
        recipient: &RecipientId,
        namespace: Namespace,
        before: Timestamp,
        _now: Timestamp,
    ) -> Result<usize, StoreError> {
        self.delete_matching(recipient, namespace, &[], |m| m.stored_at < before)
    }

    fn delete_matching(
        &mut self,
        recipient: &RecipientId,
        namespace: Namespace,
        evidence: &[u8],
        matches: impl Fn(&StoredMessage) -> bool,
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        let mut cursor = 0;
        loop {
            let batch = self.backend.range(recipient, namespace, cursor, 256)?;
            let Some(last) = batch.last() else {
                return Ok(n);
            };
            cursor = last.seq;
            for m in batch.iter().filter(|m| matches(m)) {
                self.remove_deleted(m, evidence)?;
                n += 1;
            }
        }
    }

    /// Sets the expiry of the listed messages of `(recipient, namespace)`.
    pub fn update_expiry(
        &mut self,
        recipient: &RecipientId,
        namespace: Namespace,
        hashes: impl Iterator<Item = MessageHash>,
        expiry: Timestamp,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        if expiry.millis_since(now) > self.config.max_ttl_ms {
            return Err(StoreError::TtlTooLong);
        }
        let mut n = 0;
        for h in hashes {
            if let Some(m) = self.backend.get(&h)?
                && m.recipient == *recipient
                && m.namespace == namespace
                && self.backend.set_expiry(&h, expiry)?
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Removes up to `max` messages expired at `now`, earliest first; returns how many.
    pub fn expire(&mut self, now: Timestamp, max: usize) -> Result<usize, StoreError> {
        let due = self.backend.expiring(now, max)?;
        for h in &due {
            self.remove_record(h)?;
        }
        // Tombstones outlive nothing: a message past its expiry is refused anyway.
        self.backend
            .expire_tombstones(Timestamp(now.0.saturating_sub(1)), max)?;
        self.backend
            .expire_delete_ranges(Timestamp(now.0.saturating_sub(1)), max)?;
        Ok(due.len())
    }

    fn remove_record(&mut self, hash: &MessageHash) -> Result<(), StoreError> {
        if let Some(m) = self.backend.remove(hash)? {
            self.record(m.hash, m.recipient, false);
        }
        Ok(())
    }

    fn record(&mut self, hash: MessageHash, recipient: RecipientId, added: bool) {
        if let Some(list) = &mut self.changes {
            if list.len() < MAX_PENDING_CHANGES {
                list.push(Change {
                    hash,
                    recipient,
                    added,
                });
            } else {
                self.changes = None;
            }
        }
    }

    /// The records added and removed since the last call (for summaries kept up to date
    /// without rescanning, such as anti-entropy digests).
    pub fn take_changes(&mut self) -> Changes {
        match self.changes.replace(Vec::new()) {
            Some(list) => Changes::List(list),
            None => Changes::Overflowed,
        }
    }

    /// Visits `(hash, recipient)` of every record in one anti-entropy bucket (hashes
    /// starting with `first_byte`).
    pub fn for_each_in_bucket(
        &self,
        first_byte: u8,
        visit: &mut dyn FnMut(&MessageHash, &RecipientId),
    ) -> Result<(), StoreError> {
        self.backend.for_each_in_bucket(first_byte, visit)
    }

    /// Visits every `(hash, recipient)` held (a full scan, for anti-entropy), without
    /// collecting them.
    pub fn for_each_hash(
        &self,
        visit: &mut dyn FnMut(&MessageHash, &RecipientId),
    ) -> Result<(), StoreError> {
        self.backend.for_each(visit)
    }

    /// `(messages, body bytes)` stored.
    #[must_use]
    pub fn totals(&self) -> (u64, u64) {
        self.backend.totals()
    }

    /// Highest durable sequence.
    #[must_use]
    pub fn durable_seq(&self) -> u64 {
        self.backend.durable_seq()
    }

    /// Whether writes wait for a commit.
    #[must_use]
    pub fn has_pending_writes(&self) -> bool {
        self.backend.has_pending_writes()
    }
}

/// Whether the owner's delete `d` reaches message `m`: its recipient and namespace, and
/// for `all` and `before`, stored no later than the request was signed.
#[must_use]
pub fn delete_covers(d: &DeleteRequest<'_>, m: &StoredMessage) -> bool {
    if m.recipient != d.recipient || m.namespace != d.namespace {
        return false;
    }
    let signed_until = d.timestamp.plus_millis(1);
    match d.selector {
        DeleteSelector::Hashes(h) => h.iter().any(|x| x == m.hash),
        DeleteSelector::All => m.stored_at < signed_until,
        DeleteSelector::Before(t) => m.stored_at < t.min(signed_until),
    }
}

/// The records and indexes of a memory backend. Records live with their recipient's
/// usage, in a small tree per recipient: a store reads the quota and files the record
/// in one place (a new message appends to its recipient's tree), and a cursor retrieval
/// reads them in one range scan.
#[derive(Clone, Debug, Default)]
struct Tables {
    by_recipient: BTreeMap<RecipientId, Held>,
    key_of: HashIndex,
    by_expiry: BTreeSet<(Timestamp, MessageHash)>,
    totals: (u64, u64),
    last_seq: u64,
    tombstones: BTreeMap<MessageHash, Tombstone>,
    tombstones_by_until: BTreeSet<(Timestamp, MessageHash)>,
    delete_ranges: BTreeMap<(RecipientId, Namespace), DeleteRange>,
    delete_ranges_by_until: BTreeSet<(Timestamp, RecipientId, Namespace)>,
}

/// Where a record is filed: `(recipient, namespace, seq)`, its key in [`Tables::by_recipient`].
type Place = (RecipientId, Namespace, u64);

/// The memory backend's hash index: each record's [`Place`] by its message hash, in one
/// hash table per first byte of the hash (an anti-entropy bucket, listed without reading
/// the others).
///
/// A hash table, not a tree, because every store looks up a hash at a random place:
/// a tree of 100,000 hashes costs several cache misses per search, a table one or two
/// (docs/PERFORMANCE.md, section "Store insert"). The slot hash mixes the message hash
/// with a key, random per table with `std` (fixed without it), so that messages ground
/// to collide in one table would need the key as well as SHA-256 preimage work. Bucket
/// listings are sorted, so the tables' own order (which the key changes) never shows.
#[derive(Clone, Debug)]
struct HashIndex {
    buckets: Vec<HashTable<(MessageHash, Place)>>,
    key: [u64; 2],
}

impl Default for HashIndex {
    fn default() -> Self {
        Self {
            buckets: (0..=u8::MAX).map(|_| HashTable::new()).collect(),
            key: hash_index_key(),
        }
    }
}

/// A fresh key for a [`HashIndex`]: random with `std`, a fixed constant without it.
fn hash_index_key() -> [u64; 2] {
    #[cfg(feature = "std")]
    {
        use core::hash::BuildHasher;
        let random = std::hash::RandomState::new();
        [random.hash_one(0u8), random.hash_one(1u8)]
    }
    #[cfg(not(feature = "std"))]
    {
        [0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344]
    }
}

/// The slot hash of `hash` in its bucket's table: a folded multiply of two of its words
/// (the first byte chose the bucket) mixed with the index's `key`.
fn slot_hash(key: [u64; 2], hash: &MessageHash) -> u64 {
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&hash.0[i..i + 8]);
        u64::from_le_bytes(w)
    };
    let product = u128::from(word(8) ^ key[0]) * u128::from(word(16) ^ key[1]);
    (product as u64) ^ ((product >> 64) as u64)
}

impl HashIndex {
    fn get(&self, hash: &MessageHash) -> Option<&Place> {
        self.buckets[usize::from(hash.0[0])]
            .find(slot_hash(self.key, hash), |(h, _)| h == hash)
            .map(|(_, place)| place)
    }

    /// The entry of `hash`, found or to be filled, in one search.
    fn entry(&mut self, hash: &MessageHash) -> Entry<'_, (MessageHash, Place)> {
        let key = self.key;
        self.buckets[usize::from(hash.0[0])].entry(
            slot_hash(key, hash),
            |(h, _)| h == hash,
            move |(h, _)| slot_hash(key, h),
        )
    }

    fn insert(&mut self, hash: MessageHash, place: Place) {
        match self.entry(&hash) {
            Entry::Occupied(mut held) => held.get_mut().1 = place,
            Entry::Vacant(slot) => {
                slot.insert((hash, place));
            }
        }
    }

    /// Files `place` under `hash` unless the hash is held: then returns the held place.
    fn insert_unless_held(&mut self, hash: MessageHash, place: Place) -> Option<Place> {
        match self.entry(&hash) {
            Entry::Occupied(held) => Some(held.get().1),
            Entry::Vacant(slot) => {
                slot.insert((hash, place));
                None
            }
        }
    }

    fn remove(&mut self, hash: &MessageHash) -> Option<Place> {
        let held = self.buckets[usize::from(hash.0[0])]
            .find_entry(slot_hash(self.key, hash), |(h, _)| h == hash)
            .ok()?;
        Some(held.remove().0.1)
    }

    /// The bucket of hashes starting with `first_byte`, in hash order (the order a
    /// disk backend's index lists them in, and the same on every run).
    fn bucket_in_order(&self, first_byte: u8) -> Vec<&(MessageHash, Place)> {
        let mut listed: Vec<_> = self.buckets[usize::from(first_byte)].iter().collect();
        listed.sort_unstable_by_key(|(hash, _)| *hash);
        listed
    }
}

/// What one recipient holds in a memory backend.
#[derive(Clone, Debug, Default)]
struct Held {
    count: u64,
    bytes: u64,
    messages: BTreeMap<(Namespace, u64), StoredMessage>,
}

impl Tables {
    fn get(&self, hash: &MessageHash) -> Option<&StoredMessage> {
        self.key_of.get(hash).and_then(|key| self.at(key))
    }

    /// The record filed under `(recipient, namespace, seq)`, a value of the hash index.
    fn at(
        &self,
        (recipient, namespace, seq): &(RecipientId, Namespace, u64),
    ) -> Option<&StoredMessage> {
        self.by_recipient
            .get(recipient)?
            .messages
            .get(&(*namespace, *seq))
    }

    fn get_mut(&mut self, hash: &MessageHash) -> Option<&mut StoredMessage> {
        let (recipient, namespace, seq) = self.key_of.get(hash)?;
        self.by_recipient
            .get_mut(recipient)?
            .messages
            .get_mut(&(*namespace, *seq))
    }

    fn insert(&mut self, m: StoredMessage) {
        self.key_of
            .insert(m.hash, (m.recipient, m.namespace, m.seq));
        self.index(m);
    }

    /// Inserts `m` unless its hash is held (then returns the held record), with one
    /// search of the hash index.
    fn insert_unless_held(&mut self, m: StoredMessage) -> Option<&StoredMessage> {
        match self
            .key_of
            .insert_unless_held(m.hash, (m.recipient, m.namespace, m.seq))
        {
            Some(place) => self.at(&place),
            None => {
                self.index(m);
                None
            }
        }
    }

    /// Files `m`, already in the hash index, in every other index.
    fn index(&mut self, m: StoredMessage) {
        let len = m.body.len() as u64;
        self.by_expiry.insert((m.expiry, m.hash));
        self.totals.0 += 1;
        self.totals.1 += len;
        self.last_seq = self.last_seq.max(m.seq);
        let held = self.by_recipient.entry(m.recipient).or_default();
        held.count += 1;
        held.bytes += len;
        held.messages.insert((m.namespace, m.seq), m);
    }

    fn remove(&mut self, hash: &MessageHash) -> Option<StoredMessage> {
        let (recipient, namespace, seq) = self.key_of.remove(hash)?;
        let held = self.by_recipient.get_mut(&recipient)?;
        let m = held.messages.remove(&(namespace, seq))?;
        let len = m.body.len() as u64;
        held.count -= 1;
        held.bytes -= len;
        if held.count == 0 {
            self.by_recipient.remove(&recipient);
        }
        self.by_expiry.remove(&(m.expiry, m.hash));
        self.totals.0 -= 1;
        self.totals.1 -= len;
        Some(m)
    }

    fn put_tombstone(&mut self, t: Tombstone) {
        let key = (t.until, t.hash);
        if let Some(old) = self.tombstones.insert(t.hash, t) {
            self.tombstones_by_until.remove(&(old.until, old.hash));
        }
        self.tombstones_by_until.insert(key);
    }

    fn remove_tombstone(&mut self, hash: &MessageHash) {
        if let Some(old) = self.tombstones.remove(hash) {
            self.tombstones_by_until.remove(&(old.until, old.hash));
        }
    }

    fn put_delete_range(&mut self, r: DeleteRange) {
        let key = (r.until, r.recipient, r.namespace);
        if let Some(old) = self.delete_ranges.insert((r.recipient, r.namespace), r) {
            self.delete_ranges_by_until
                .remove(&(old.until, old.recipient, old.namespace));
        }
        self.delete_ranges_by_until.insert(key);
    }

    fn remove_delete_range(&mut self, recipient: RecipientId, namespace: Namespace) {
        if let Some(old) = self.delete_ranges.remove(&(recipient, namespace)) {
            self.delete_ranges_by_until
                .remove(&(old.until, old.recipient, old.namespace));
        }
    }

    fn set_expiry(&mut self, hash: &MessageHash, expiry: Timestamp) -> bool {
        let Some(m) = self.get_mut(hash) else {
            return false;
        };
        let old = m.expiry;
        m.expiry = expiry;
        self.by_expiry.remove(&(old, *hash));
        self.by_expiry.insert((expiry, *hash));
        true
    }
}

/// A write not yet committed.
#[derive(Clone, Debug)]
enum Op {
    Insert(StoredMessage),
    Remove(MessageHash),
    SetExpiry(MessageHash, Timestamp),
    PutTombstone(Tombstone),
    RemoveTombstone(MessageHash),
    PutDeleteRange(DeleteRange),
    RemoveDeleteRange(RecipientId, Namespace),
}

/// An in-memory backend with an explicit commit, modelling a disk with group commit:
/// reads see every write; [`MemoryBackend::commit`] makes them durable;
/// [`MemoryBackend::crash`] loses the uncommitted ones.
#[derive(Clone, Debug, Default)]
pub struct MemoryBackend {
    live: Tables,
    durable: Tables,
    pending: Vec<Op>,
    /// Commit every write at once (no group commit), for embedded users.
    immediate: bool,
}

impl MemoryBackend {
    /// A backend whose writes are durable as soon as they are made.
    #[must_use]
    pub fn immediate() -> Self {
        Self {
            immediate: true,
            ..Self::default()
        }
    }

    /// Makes every write so far durable.
    pub fn commit(&mut self) {
        for op in self.pending.drain(..) {
            match op {
                Op::Insert(m) => self.durable.insert(m),
                Op::Remove(h) => {
                    self.durable.remove(&h);
                }
                Op::SetExpiry(h, e) => {
                    self.durable.set_expiry(&h, e);
                }
                Op::PutTombstone(t) => self.durable.put_tombstone(t),
                Op::RemoveTombstone(h) => self.durable.remove_tombstone(&h),
                Op::PutDeleteRange(r) => self.durable.put_delete_range(r),
                Op::RemoveDeleteRange(r, ns) => self.durable.remove_delete_range(r, ns),
            }
        }
    }

    /// Loses every uncommitted write, as a power cut would.
    pub fn crash(&mut self) {
        if self.immediate {
            return; // Every write was durable when made.
        }
        self.pending.clear();
        self.live = self.durable.clone();
    }

    fn log(&mut self, op: Op) {
        // An immediate backend's live tables are its durable state: no second copy.
        if !self.immediate {
            self.pending.push(op);
        }
    }
}

impl MessageBackend for MemoryBackend {
    fn get(&self, hash: &MessageHash) -> Result<Option<StoredMessage>, StoreError> {
        Ok(self.live.get(hash).cloned())
    }

    fn tombstone(&self, hash: &MessageHash) -> Result<Option<Tombstone>, StoreError> {
        Ok(self.live.tombstones.get(hash).cloned())
    }

    fn put_tombstone(&mut self, t: Tombstone) -> Result<(), StoreError> {
        self.log(Op::PutTombstone(t.clone()));
        self.live.put_tombstone(t);
        Ok(())
    }

    fn expire_tombstones(&mut self, before: Timestamp, limit: usize) -> Result<usize, StoreError> {
        let due: Vec<MessageHash> = self
            .live
            .tombstones_by_until
            .iter()
            .take_while(|(u, _)| *u <= before)
            .take(limit)
            .map(|(_, h)| *h)
            .collect();
        for h in &due {
            self.live.remove_tombstone(h);
            self.log(Op::RemoveTombstone(*h));
        }
        Ok(due.len())
    }

    fn delete_range(
        &self,
        recipient: &RecipientId,
        namespace: Namespace,
    ) -> Result<Option<DeleteRange>, StoreError> {
        Ok(self
            .live
            .delete_ranges
            .get(&(*recipient, namespace))
            .cloned())
    }

    fn put_delete_range(&mut self, r: DeleteRange) -> Result<(), StoreError> {
        self.log(Op::PutDeleteRange(r.clone()));
        self.live.put_delete_range(r);
        Ok(())
    }

    fn expire_delete_ranges(
        &mut self,
        before: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let due: Vec<(RecipientId, Namespace)> = self
            .live
            .delete_ranges_by_until
            .iter()
            .take_while(|(u, ..)| *u <= before)
            .take(limit)
            .map(|(_, r, ns)| (*r, *ns))
            .collect();
        for (r, ns) in &due {
            self.live.remove_delete_range(*r, *ns);
            self.log(Op::RemoveDeleteRange(*r, *ns));
        }
        Ok(due.len())
    }

    fn insert(&mut self, m: StoredMessage) -> Result<(), StoreError> {
        if self.immediate {
            self.live.insert(m);
        } else {
            self.live.insert(m.clone());
            self.log(Op::Insert(m));
        }
        Ok(())
    }

    fn insert_unless_held(
        &mut self,
        m: StoredMessage,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let logged = (!self.immediate).then(|| m.clone());
        if let Some(held) = self.live.insert_unless_held(m) {
            return Ok(Some(held.clone()));
        }
        if let Some(m) = logged {
            self.log(Op::Insert(m));
        }
        Ok(None)
    }

    fn remove(&mut self, hash: &MessageHash) -> Result<Option<StoredMessage>, StoreError> {
        let m = self.live.remove(hash);
        if m.is_some() {
            self.log(Op::Remove(*hash));
        }
        Ok(m)
    }

    fn set_expiry(&mut self, hash: &MessageHash, expiry: Timestamp) -> Result<bool, StoreError> {
        let changed = self.live.set_expiry(hash, expiry);
        if changed {
            self.log(Op::SetExpiry(*hash, expiry));
        }
        Ok(changed)
    }

    fn range(
        &self,
        recipient: &RecipientId,
        namespace: Namespace,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let Some(held) = self.live.by_recipient.get(recipient) else {
            return Ok(Vec::new());
        };
        let from = (namespace, after.saturating_add(1));
        let to = (namespace, u64::MAX);
        Ok(held
            .messages
            .range(from..=to)
            .take(limit)
            .map(|(_, m)| m.clone())
            .collect())
    }

    fn expiring(&self, before: Timestamp, limit: usize) -> Result<Vec<MessageHash>, StoreError> {
        Ok(self
            .live
            .by_expiry
            .iter()
            .take_while(|(e, _)| *e <= before)
            .take(limit)
            .map(|(_, h)| *h)
            .collect())
    }

    fn for_each(
        &self,
        visit: &mut dyn FnMut(&MessageHash, &RecipientId),
    ) -> Result<(), StoreError> {
        for m in self
            .live
            .by_recipient
            .values()
            .flat_map(|h| h.messages.values())
        {
            visit(&m.hash, &m.recipient);
        }
        Ok(())
    }

    fn for_each_in_bucket(
        &self,
        first_byte: u8,
        visit: &mut dyn FnMut(&MessageHash, &RecipientId),
    ) -> Result<(), StoreError> {
        for (hash, (recipient, _, _)) in self.live.key_of.bucket_in_order(first_byte) {
            visit(hash, recipient);
        }
        Ok(())
    }

    fn usage(&self, recipient: &RecipientId) -> (u64, u64) {
        self.live
            .by_recipient
            .get(recipient)
            .map_or((0, 0), |h| (h.count, h.bytes))
    }

    fn totals(&self) -> (u64, u64) {
        self.live.totals
    }

    fn last_seq(&self) -> u64 {
        self.live.last_seq
    }

    fn durable_seq(&self) -> u64 {
        if self.pending.is_empty() {
            return u64::MAX;
        }
        // Everything before the first uncommitted insert is durable.
        self.pending
            .iter()
            .find_map(|op| match op {
                Op::Insert(m) => Some(m.seq - 1),
                _ => None,
            })
            .unwrap_or(u64::MAX)
    }

    fn has_pending_writes(&self) -> bool {
        !self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: Timestamp = Timestamp(1_000_000_000);

    fn store() -> MessageStore<MemoryBackend> {
        MessageStore::open(MemoryBackend::immediate(), StoreConfig::default()).unwrap()
    }

    fn r(i: u8) -> RecipientId {
        RecipientId([i; 32])
    }

    fn put(
        s: &mut MessageStore<MemoryBackend>,
        who: u8,
        body: &[u8],
    ) -> Result<Inserted, StoreError> {
        s.insert(
            NewMessage::unsigned(r(who), Namespace::DIRECT, body, NOW, NOW.plus_millis(1000)),
            NOW,
        )
    }

    #[test]
    fn the_hash_index_finds_every_record_and_lists_each_bucket_in_hash_order() {
        let config = StoreConfig {
            recipient_max_messages: u64::MAX,
            ..StoreConfig::default()
        };
        let mut s = MessageStore::open(MemoryBackend::default(), config).unwrap();
        let mut held = BTreeMap::new();
        // Enough messages that every bucket's table grows several times.
        for i in 0..20_000u32 {
            let stored = put(&mut s, (i % 7) as u8, &i.to_be_bytes()).unwrap();
            held.insert(stored.hash, r((i % 7) as u8));
        }
        let removed: Vec<MessageHash> = held.keys().copied().step_by(3).collect();
        s.delete_hashes(&r(0), Namespace::DIRECT, removed.iter().copied(), NOW)
            .unwrap();
        for hash in &removed {
            if held[hash] == r(0) {
                held.remove(hash);
            }
        }
        for (hash, recipient) in &held {
            let found = s.backend().get(hash).unwrap().expect("held");
            assert_eq!((found.hash, found.recipient), (*hash, *recipient));
        }
        for bucket in 0..=u8::MAX {
            let mut listed = Vec::new();
            s.for_each_in_bucket(bucket, &mut |h, r| listed.push((*h, *r)))
                .unwrap();
            let expected: Vec<_> = held
                .iter()
                .filter(|(h, _)| h.0[0] == bucket)
                .map(|(h, r)| (*h, *r))
                .collect();
            assert_eq!(listed, expected, "bucket {bucket}");
        }
        // A duplicate is found through the index after the table grew.
        let again = put(&mut s, 3, &3u32.to_be_bytes()).unwrap();
        assert!(!again.new);
    }

    #[test]
    fn hashes_ground_to_share_one_slot_are_each_kept_found_and_removed_on_their_own() {
        // What a stranger grinding SHA-256 for colliding messages could at best send:
        // hashes equal in the first byte (the bucket) and in every word the slot hash
        // reads, different only in the last eight bytes.
        let ground = |i: u64| {
            let mut h = [0x5au8; 32];
            h[24..].copy_from_slice(&i.to_be_bytes());
            MessageHash(h)
        };
        let mut backend = MemoryBackend::immediate();
        for i in 0..500u64 {
            let m = StoredMessage {
                seq: i + 1,
                hash: ground(i),
                recipient: r((i % 3) as u8),
                namespace: Namespace::DIRECT,
                stored_at: NOW,
                expiry: NOW.plus_millis(1000),
                body: i.to_be_bytes().to_vec(),
                origin: NewMessage::unsigned(r(0), Namespace::DIRECT, &[], NOW, NOW).origin,
            };
            assert_eq!(backend.insert_unless_held(m.clone()).unwrap(), None, "{i}");
            let held = backend.insert_unless_held(m).unwrap().expect("a duplicate");
            assert_eq!(held.seq, i + 1);
        }
        for i in (0..500u64).step_by(2) {
            assert_eq!(
                backend.remove(&ground(i)).unwrap().map(|m| m.seq),
                Some(i + 1)
            );
        }
        for i in 0..500u64 {
            let found = backend.get(&ground(i)).unwrap().map(|m| m.body);
            let expected = (i % 2 == 1).then(|| i.to_be_bytes().to_vec());
            assert_eq!(found, expected, "{i}");
        }
        let mut listed = Vec::new();
        backend
            .for_each_in_bucket(0x5a, &mut |h, _| listed.push(*h))
            .unwrap();
        let odd: Vec<_> = (0..500u64).filter(|i| i % 2 == 1).map(ground).collect();
        assert_eq!(listed, odd);
    }

    #[test]
    fn ttl_above_14_days_is_refused() {
        let mut s = store();
        let too_far = NOW.plus_millis(MAX_TTL_MS + EXPIRY_SLACK_MS + 1);
        assert_eq!(
            s.insert(
                NewMessage::unsigned(r(1), Namespace::DIRECT, b"x", NOW, too_far),
                NOW
            ),
            Err(StoreError::TtlTooLong)
        );
        assert_eq!(
            s.insert(
                NewMessage::unsigned(r(1), Namespace::DIRECT, b"x", NOW, NOW),
                NOW
            ),
            Err(StoreError::Expired)
        );
    }

    #[test]
    fn a_deleted_message_is_not_stored_again_until_it_would_have_expired() {
        let mut s = store();
        let kept = put(&mut s, 1, b"kept").unwrap();
        let gone = put(&mut s, 1, b"deleted").unwrap();
        let gone_too = put(&mut s, 1, b"deleted by delete-all").unwrap();
        assert_eq!(
            s.delete_hashes(&r(1), Namespace::DIRECT, [gone.hash].into_iter(), NOW),
            Ok(1)
        );
        assert_eq!(put(&mut s, 1, b"deleted"), Err(StoreError::Deleted));
        // A tombstone binds its recipient: the same body for someone else is another
        // message, and a delete naming another recipient's hash leaves it alone.
        let other = put(&mut s, 2, b"deleted").unwrap();
        assert_eq!(
            s.delete_hashes(&r(1), Namespace::DIRECT, [other.hash].into_iter(), NOW),
            Ok(0)
        );
        assert!(s.get(&other.hash, NOW).unwrap().is_some());
        assert_eq!(put(&mut s, 2, b"deleted").map(|i| i.new), Ok(false));

        // delete-all leaves tombstones too; a hash deleted before it arrived here is
        // refused when it does.
        assert_eq!(s.delete_all(&r(1), Namespace::DIRECT, NOW), Ok(2));
        assert_eq!(
            put(&mut s, 1, b"deleted by delete-all"),
            Err(StoreError::Deleted)
        );
        assert_eq!(put(&mut s, 1, b"kept"), Err(StoreError::Deleted));
        let early = message_hash(&r(1), Namespace::DIRECT, b"not here yet");
        assert_eq!(
            s.delete_hashes(&r(1), Namespace::DIRECT, [early].into_iter(), NOW),
            Ok(0)
        );
        assert_eq!(put(&mut s, 1, b"not here yet"), Err(StoreError::Deleted));
        assert!(gone_too.new && kept.new);

        // Once the message would have expired, the tombstone goes with the sweep.
        let later = NOW.plus_millis(1001);
        s.expire(later, 100).unwrap();
        assert_eq!(s.tombstone(&gone.hash), Ok(None));
        assert!(
            s.tombstone(&early).unwrap().is_some(),
            "unknown expiry: kept longest"
        );
    }

    #[test]
    fn oversized_body_is_refused() {
        let mut s = store();
        assert_eq!(
            put(&mut s, 1, &[0; DEFAULT_MAX_BODY + 1]),
            Err(StoreError::BodyTooLarge)
        );
        assert!(put(&mut s, 1, &[0; DEFAULT_MAX_BODY]).is_ok());
    }

    #[test]
    fn duplicate_store_returns_the_original() {
        let mut s = store();
        let a = put(&mut s, 1, b"same").unwrap();
        let b = s
            .insert(
                NewMessage::unsigned(
                    r(1),
                    Namespace::DIRECT,
                    b"same",
                    NOW.plus_millis(5),
                    NOW.plus_millis(900),
                ),
                NOW,
            )
            .unwrap();
        assert!(a.new && !b.new);
        assert_eq!((a.seq, a.expiry), (b.seq, b.expiry));
        assert_eq!(s.totals().0, 1);
    }

    #[test]
    fn recipient_quota_is_enforced() {
        let config = StoreConfig {
            recipient_max_messages: 2,
            ..StoreConfig::default()
        };
        let mut s = MessageStore::open(MemoryBackend::immediate(), config).unwrap();
        let a = put(&mut s, 1, b"a").unwrap();
        put(&mut s, 1, b"b").unwrap();
        assert_eq!(put(&mut s, 1, b"c"), Err(StoreError::QuotaExceeded));
        assert!(put(&mut s, 2, b"c").is_ok());
        // A message held already is still answered as stored at a full quota.
        let again = put(&mut s, 1, b"a").unwrap();
        assert!(!again.new && again.seq == a.seq);
    }

    #[test]
    fn a_duplicate_under_group_commit_is_written_once() {
        let mut s = MessageStore::open(MemoryBackend::default(), StoreConfig::default()).unwrap();
        let a = put(&mut s, 1, b"same").unwrap();
        let b = put(&mut s, 1, b"same").unwrap();
        assert!(a.new && !b.new && a.seq == b.seq);
        s.backend_mut().commit();
        assert_eq!(s.totals(), (1, 4));
        assert_eq!(
            s.backend().durable.totals,
            (1, 4),
            "one insert reached the commit"
        );
    }

    #[test]
    fn full_node_refuses_stores_and_keeps_serving_retrieves() {
        let config = StoreConfig {
            node_max_messages: 3,
            ..StoreConfig::default()
        };
        let mut s = MessageStore::open(MemoryBackend::immediate(), config).unwrap();
        for b in [b"1", b"2", b"3"] {
            put(&mut s, 1, b).unwrap();
        }
        assert_eq!(put(&mut s, 2, b"4"), Err(StoreError::NodeFull));
        let page = s.retrieve(&r(1), Namespace::DIRECT, 0, 10, NOW).unwrap();
        assert_eq!(page.messages.len(), 3);
    }

    #[test]
    fn cursor_pagination_visits_every_message_once_in_order() {
        let mut s = store();
        for i in 0..1000u32 {
            put(&mut s, 1, &i.to_be_bytes()).unwrap();
            put(&mut s, 2, &i.to_be_bytes()).unwrap();
        }
        let mut after = 0;
        let mut seen = Vec::new();
        loop {
            let page = s
                .retrieve(&r(1), Namespace::DIRECT, after, 64, NOW)
                .unwrap();
            seen.extend(page.messages.iter().map(|m| m.body.clone()));
            after = page.messages.last().map_or(after, |m| m.seq);
            if !page.more {
                break;
            }
        }
        let expected: Vec<Vec<u8>> = (0..1000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn expiry_sweep_is_bounded_and_earliest_first() {
        let mut s = store();
        for i in 0..10u64 {
            s.insert(
                NewMessage::unsigned(
                    r(1),
                    Namespace::DIRECT,
                    &i.to_be_bytes(),
                    NOW,
                    NOW.plus_millis(10 + i),
                ),
                NOW,
            )
            .unwrap();
        }
        let later = NOW.plus_millis(100);
        assert_eq!(s.expire(later, 4), Ok(4));
        assert_eq!(s.totals().0, 6);
        assert_eq!(s.expire(later, 100), Ok(6));
        assert_eq!(s.totals(), (0, 0));
    }

    #[test]
    fn deletes_touch_only_the_named_recipient_and_namespace() {
        let mut s = store();
        let a = put(&mut s, 1, b"a").unwrap();
        put(&mut s, 2, b"a").unwrap();
        assert_eq!(
            s.delete_hashes(&r(2), Namespace::DIRECT, [a.hash].into_iter(), NOW),
            Ok(0)
        );
        assert_eq!(
            s.delete_hashes(&r(1), Namespace(5), [a.hash].into_iter(), NOW),
            Ok(0)
        );
        assert_eq!(
            s.delete_hashes(&r(1), Namespace::DIRECT, [a.hash].into_iter(), NOW),
            Ok(1)
        );
        assert_eq!(s.delete_all(&r(2), Namespace::DIRECT, NOW), Ok(1));
        assert_eq!(s.totals().0, 0);
    }

    #[test]
    fn crash_loses_exactly_the_uncommitted_writes_and_keeps_sequence_growing() {
        let mut s = MessageStore::open(MemoryBackend::default(), StoreConfig::default()).unwrap();
        let a = put(&mut s, 1, b"a").unwrap();
        assert!(s.durable_seq() < a.seq);
        s.backend_mut().commit();
        assert!(s.durable_seq() >= a.seq);
        let b = put(&mut s, 1, b"b").unwrap();
        assert!(s.durable_seq() < b.seq && s.durable_seq() >= a.seq);
        let mut backend = core::mem::take(s.backend_mut());
        backend.crash();
        let mut s = MessageStore::open(backend, StoreConfig::default()).unwrap();
        assert!(s.get(&a.hash, NOW).unwrap().is_some());
        assert!(s.get(&b.hash, NOW).unwrap().is_none());
        let c = put(&mut s, 1, b"c").unwrap();
        assert!(c.seq > a.seq);
    }

    /// Operations of the model test.
    #[derive(Clone, Debug)]
    enum ModelOp {
        Store(u8, u8),
        Retrieve(u8, u8),
        Delete(u8, u8),
        Expire(u16),
        Commit,
        Crash,
    }

    fn op() -> impl Strategy<Value = ModelOp> {
        prop_oneof![
            4 => (0u8..4, 0u8..16).prop_map(|(w, b)| ModelOp::Store(w, b)),
            2 => (0u8..4, 1u8..5).prop_map(|(w, l)| ModelOp::Retrieve(w, l)),
            1 => (0u8..4, 0u8..16).prop_map(|(w, b)| ModelOp::Delete(w, b)),
            1 => (0u16..200).prop_map(ModelOp::Expire),
            2 => Just(ModelOp::Commit),
            1 => Just(ModelOp::Crash),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn store_matches_a_simple_model(ops in proptest::collection::vec(op(), 1..80)) {
            // Model: (recipient, body, expiry, committed) in insertion order, plus the
            // durable copy a crash returns to. Readers see committed messages only.
            let mut s = MessageStore::open(MemoryBackend::default(), StoreConfig::default()).unwrap();
            let mut live: Vec<(u8, u8, Timestamp, bool)> = Vec::new();
            let mut durable = live.clone();
            // Tombstones: (recipient, body) → until.
            let mut tombs: BTreeMap<(u8, u8), Timestamp> = BTreeMap::new();
            let mut durable_tombs = tombs.clone();
            let mut now = NOW;
            for op in ops {
                now = now.plus_millis(1);
                match op {
                    ModelOp::Store(w, b) => {
                        let expiry = now.plus_millis(50 + u64::from(b) * 7);
                        let result = s.insert(NewMessage::unsigned(r(w), Namespace::DIRECT, &[b], now, expiry), now);
                        if tombs.get(&(w, b)).is_some_and(|until| *until > now) {
                            prop_assert_eq!(result, Err(StoreError::Deleted));
                            continue;
                        }
                        let got = result.unwrap();
                        let existing = live.iter().any(|(x, y, _, _)| (*x, *y) == (w, b));
                        prop_assert_eq!(got.new, !existing);
                        if !existing {
                            live.push((w, b, expiry, false));
                        }
                    }
                    ModelOp::Retrieve(w, limit) => {
                        let mut after = 0;
                        let mut got = Vec::new();
                        loop {
                            let page = s.retrieve(&r(w), Namespace::DIRECT, after, usize::from(limit), now).unwrap();
                            prop_assert!(page.messages.len() <= usize::from(limit));
                            got.extend(page.messages.iter().map(|m| m.body[0]));
                            after = page.messages.last().map_or(after, |m| m.seq);
                            if !page.more { break; }
                        }
                        let expected: Vec<u8> = live.iter().filter(|(x, _, e, c)| *x == w && *e > now && *c).map(|(_, b, _, _)| *b).collect();
                        prop_assert_eq!(got, expected);
                    }
                    ModelOp::Delete(w, b) => {
                        let h = message_hash(&r(w), Namespace::DIRECT, &[b]);
                        let n = s.delete_hashes(&r(w), Namespace::DIRECT, [h].into_iter(), now).unwrap();
                        let before = live.len();
                        let until = live
                            .iter()
                            .find(|(x, y, _, _)| (*x, *y) == (w, b))
                            .map_or(now.plus_millis(MAX_TTL_MS + EXPIRY_SLACK_MS), |m| m.2);
                        tombs.insert((w, b), until);
                        live.retain(|(x, y, _, _)| (*x, *y) != (w, b));
                        prop_assert_eq!(n, before - live.len());
                    }
                    ModelOp::Expire(max) => {
                        let n = s.expire(now, usize::from(max)).unwrap();
                        let due = live.iter().filter(|(_, _, e, _)| *e <= now).count();
                        prop_assert_eq!(n, due.min(usize::from(max)));
                        // Ties in expiry may be broken either way: follow the store.
                        live.retain(|(w, b, _, _)| {
                            let h = message_hash(&r(*w), Namespace::DIRECT, &[*b]);
                            s.backend().get(&h).ok().flatten().is_some()
                        });
                        prop_assert!(live.iter().filter(|(_, _, e, _)| *e <= now).count() == due - n);
                    }
                    ModelOp::Commit => {
                        s.backend_mut().commit();
                        for entry in &mut live {
                            entry.3 = true;
                        }
                        durable = live.clone();
                        durable_tombs = tombs.clone();
                    }
                    ModelOp::Crash => {
                        let mut backend = core::mem::take(s.backend_mut());
                        backend.crash();
                        s = MessageStore::open(backend, StoreConfig::default()).unwrap();
                        live = durable.clone();
                        tombs = durable_tombs.clone();
                    }
                }
                prop_assert_eq!(s.totals().0, live.len() as u64);
            }
        }
    }

    #[test]
    fn hash_binds_recipient_namespace_and_body() {
        let h = message_hash(&r(1), Namespace(0), b"x");
        assert_ne!(h, message_hash(&r(2), Namespace(0), b"x"));
        assert_ne!(h, message_hash(&r(1), Namespace(1), b"x"));
        assert_ne!(h, message_hash(&r(1), Namespace(0), b"y"));
    }
}
