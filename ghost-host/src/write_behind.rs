//! Durability off the node's thread: the message store's backend as an in-memory write
//! batch over a pinned read snapshot, with a writer thread that commits batches to redb.
//!
//! The node thread never waits for a disk. Its writes go into the *active* batch, which
//! its reads see at once (the store's rules need their own writes). At a group commit
//! ([`WriteBehind::start_commit`]) the active batch is *frozen* and handed to the writer
//! thread, which applies it in one redb write transaction and commits it with one fsync
//! while the node goes on. When the commit is durable the writer sends back a read
//! snapshot taken right after it and before anything else is written, and wakes the
//! node's driver; [`WriteBehind::absorb`] then drops the frozen batch and pins that
//! snapshot together, so a read never sees a write twice or not at all. At most one
//! batch is in the writer's hands: what arrives meanwhile is the next group.
//!
//! Reads look at the active batch, then the frozen one, then the snapshot. The core's
//! rule holds unchanged: readers are shown only messages up to [`MessageBackend::durable_seq`],
//! which moves only in [`WriteBehind::absorb`], and acks wait for it. A failed commit
//! drops its batch (none of its stores was acknowledged) and reports the database
//! unhealthy until a commit succeeds again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use proto_core::store::{DeleteRange, MessageBackend, StoreError, StoredMessage, Tombstone};
use proto_core::{MessageHash, Namespace, RecipientId, Timestamp};
use redb::ReadTransaction;

use crate::redb_store::{DatabaseOptions, RedbBackend};

type Waker = Box<dyn Fn() + Send>;

/// Writes since the last group commit, as the node sees them.
#[derive(Default)]
struct Batch {
    /// Messages inserted, by `recipient ‖ namespace ‖ seq` (the range order).
    inserted: BTreeMap<(RecipientId, Namespace, u64), StoredMessage>,
    by_hash: HashMap<MessageHash, (RecipientId, Namespace, u64)>,
    /// Messages held by older layers and removed here.
    removed: HashSet<MessageHash>,
    /// New expiries of messages held by older layers.
    expiry: HashMap<MessageHash, Timestamp>,
    /// Tombstones written (`Some`) or expired (`None`).
    tombstones: HashMap<MessageHash, Option<Tombstone>>,
    /// Delete ranges written (`Some`) or expired (`None`).
    ranges: HashMap<(RecipientId, Namespace), Option<DeleteRange>>,
    usage: HashMap<RecipientId, (i64, i64)>,
    totals: (i64, i64),
    last_seq: u64,
    writes: usize,
}

impl Batch {
    fn count(&mut self, recipient: &RecipientId, messages: i64, bytes: i64) {
        let u = self.usage.entry(*recipient).or_default();
        u.0 += messages;
        u.1 += bytes;
        self.totals.0 += messages;
        self.totals.1 += bytes;
    }

    /// Applies the batch to `db` in its open write transaction (older layers first:
    /// removals before inserts, so a message removed and stored again ends up stored).
    fn apply(&self, db: &mut RedbBackend) -> Result<(), StoreError> {
        db.remove_messages(&self.removed)?;
        for (hash, expiry) in &self.expiry {
            db.set_expiry(hash, *expiry)?;
        }
        db.put_messages(self.inserted.values())?;
        for (hash, t) in &self.tombstones {
            match t {
                Some(t) => db.put_tombstone(t.clone())?,
                None => db.remove_tombstone(hash)?,
            }
        }
        for ((recipient, namespace), r) in &self.ranges {
            match r {
                Some(r) => db.put_delete_range(r.clone())?,
                None => db.remove_delete_range(recipient, *namespace)?,
            }
        }
        Ok(())
    }
}

/// What the writer thread reports.
enum Written {
    /// The frozen batch is durable; `snapshot` shows exactly the state after it.
    Durable {
        snapshot: ReadTransaction,
        durable_seq: u64,
    },
    /// The commit failed: the batch is gone, as if never written.
    Abandoned,
}

/// Asks the writer thread for something.
enum ToWriter {
    Commit(Arc<Batch>),
    Close,
}

/// The message store's backend with its commits on a writer thread.
pub struct WriteBehind {
    reader: RedbBackend,
    active: Batch,
    frozen: Option<Arc<Batch>>,
    to_writer: Sender<ToWriter>,
    from_writer: Receiver<Written>,
    writer: Option<JoinHandle<RedbBackend>>,
    waker: Arc<std::sync::Mutex<Option<Waker>>>,
    failing: bool,
    commits: u64,
}

impl std::fmt::Debug for WriteBehind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBehind")
            .field("active_writes", &self.active.writes)
            .field("committing", &self.frozen.is_some())
            .field("durable_seq", &self.reader.durable_seq())
            .finish_non_exhaustive()
    }
}

impl WriteBehind {
    /// Opens (or creates) the database at `path` and starts its writer thread.
    pub fn open(path: &Path, options: &DatabaseOptions) -> Result<Self, String> {
        let db = RedbBackend::open_with(path, options).map_err(|e| e.to_string())?;
        let snapshot = db.snapshot_now().map_err(|e| e.to_string())?;
        let reader = db.reader(snapshot);
        let (to_writer, commands) = mpsc::channel();
        let (written, from_writer) = mpsc::channel();
        let waker: Arc<std::sync::Mutex<Option<Waker>>> = Arc::default();
        let wake = waker.clone();
        let writer = std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || write_loop(db, &commands, &written, &wake))
            .map_err(|e| format!("cannot start the database writer: {e}"))?;
        Ok(Self {
            reader,
            active: Batch::default(),
            frozen: None,
            to_writer,
            from_writer,
            writer: Some(writer),
            waker,
            failing: false,
            commits: 0,
        })
    }

    /// Sets what the writer thread calls after each commit (durable or abandoned), so the
    /// node's driver wakes up and calls [`WriteBehind::absorb`].
    pub fn set_waker(&mut self, wake: impl Fn() + Send + 'static) {
        *self
            .waker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Box::new(wake));
    }

    /// Hands the writes since the last group commit to the writer thread, unless it is
    /// still busy with the previous group (then they go once it is done). Never blocks.
    pub fn start_commit(&mut self) {
        if self.frozen.is_some() || self.active.writes == 0 {
            return;
        }
        let batch = Arc::new(std::mem::take(&mut self.active));
        if self.to_writer.send(ToWriter::Commit(batch.clone())).is_ok() {
            self.frozen = Some(batch);
        } else {
            // The writer is gone (closed): nothing more becomes durable.
            self.active = Arc::try_unwrap(batch).unwrap_or_default();
        }
    }

    /// Takes in what the writer finished: returns `true` when more writes became
    /// durable (then tell the core, and start the next group commit).
    pub fn absorb(&mut self) -> bool {
        let mut advanced = false;
        while let Ok(event) = self.from_writer.try_recv() {
            match event {
                Written::Durable {
                    snapshot,
                    durable_seq,
                } => {
                    self.frozen = None;
                    self.reader.pin(snapshot, durable_seq);
                    self.failing = false;
                    self.commits += 1;
                    advanced = true;
                }
                Written::Abandoned => {
                    self.frozen = None;
                    self.failing = true;
                }
            }
        }
        advanced
    }

    /// Group commits made durable since the database was opened.
    #[must_use]
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// Whether a group is being written now.
    #[must_use]
    pub fn committing(&self) -> bool {
        self.frozen.is_some()
    }

    /// Writes everything still pending, waiting for the disk, then closes the database
    /// (graceful shutdown). Later operations are refused.
    pub fn close(&mut self) -> Result<(), StoreError> {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        let pending = std::mem::take(&mut self.active);
        let _ = self.to_writer.send(ToWriter::Commit(Arc::new(pending)));
        let _ = self.to_writer.send(ToWriter::Close);
        let mut db = writer.join().map_err(|_| StoreError::Backend)?;
        let durable = db.durable_seq();
        self.frozen = None;
        // The writer's handle goes first, so the reader's close is the last and clean.
        let committed = db.close();
        self.reader.set_durable_seq(durable);
        let closed = self.reader.close();
        committed.and(closed)
    }

    /// Whether the database answers a read and commits succeed.
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        !self.failing && self.writer.is_some() && self.reader.is_healthy()
    }

    /// Size of the database file in bytes.
    #[must_use]
    pub fn file_bytes(&self) -> u64 {
        self.reader.file_bytes()
    }

    /// The layers over the snapshot, newest first.
    fn layers(&self) -> impl Iterator<Item = &Batch> {
        std::iter::once(&self.active).chain(self.frozen.as_deref())
    }

    /// Whether a layer removed the snapshot's (or an older layer's) copy of `hash`.
    fn removed_above(&self, hash: &MessageHash, layers: usize) -> bool {
        self.layers().take(layers).any(|l| l.removed.contains(hash))
    }

    /// The newest expiry a layer set for an older copy of `hash`.
    fn expiry_above(&self, hash: &MessageHash, layers: usize) -> Option<Timestamp> {
        self.layers()
            .take(layers)
            .find_map(|l| l.expiry.get(hash).copied())
    }

    fn layer_count(&self) -> usize {
        1 + usize::from(self.frozen.is_some())
    }

    /// A snapshot record as the layers left it.
    fn seen_through_layers(&self, mut m: StoredMessage) -> Option<StoredMessage> {
        let all = self.layer_count();
        if self.removed_above(&m.hash, all) {
            return None;
        }
        if let Some(expiry) = self.expiry_above(&m.hash, all) {
            m.expiry = expiry;
        }
        Some(m)
    }

    /// Messages inserted in the layers and still there, oldest layer first, with the
    /// expiry newer layers set.
    fn layer_messages(&self) -> Vec<(usize, &Batch)> {
        // (number of newer layers, layer), oldest first.
        let mut out: Vec<(usize, &Batch)> = self.layers().enumerate().collect();
        out.reverse();
        out
    }

    fn overlay_size(&self) -> usize {
        self.layers()
            .map(|l| l.removed.len() + l.expiry.len() + l.tombstones.len() + l.ranges.len())
            .sum()
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            // Not closed: what was not committed is lost, as after a crash.
            let _ = self.to_writer.send(ToWriter::Close);
            let _ = writer.join();
        }
    }
}

fn write_loop(
    mut db: RedbBackend,
    commands: &Receiver<ToWriter>,
    written: &Sender<Written>,
    waker: &std::sync::Mutex<Option<Waker>>,
) -> RedbBackend {
    let wake = || {
        if let Some(wake) = waker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            wake();
        }
    };
    while let Ok(ToWriter::Commit(batch)) = commands.recv() {
        let done = batch
            .apply(&mut db)
            .and_then(|()| db.commit())
            .and_then(|()| db.snapshot_now());
        let _ = written.send(match done {
            Ok(snapshot) => Written::Durable {
                snapshot,
                durable_seq: db.durable_seq(),
            },
            Err(e) => {
                // Nothing of the batch reached the disk, and none of its stores was
                // acknowledged (acks wait for durability): the node forgets it.
                tracing::error!(error = %e, "group commit failed; its writes are dropped");
                db.rollback();
                Written::Abandoned
            }
        });
        wake();
    }
    db
}

impl MessageBackend for WriteBehind {
    fn get(&self, hash: &MessageHash) -> Result<Option<StoredMessage>, StoreError> {
        for (newer, layer) in self.layers().enumerate() {
            if let Some(key) = layer.by_hash.get(hash) {
                let mut m = layer.inserted[key].clone();
                if let Some(expiry) = self.expiry_above(hash, newer) {
                    m.expiry = expiry;
                }
                return Ok(Some(m));
            }
            if layer.removed.contains(hash) {
                return Ok(None);
            }
        }
        Ok(self
            .reader
            .get(hash)?
            .and_then(|m| self.seen_through_layers(m)))
    }

    fn insert(&mut self, m: StoredMessage) -> Result<(), StoreError> {
        let len = i64::try_from(m.body.len()).unwrap_or(i64::MAX);
        let key = (m.recipient, m.namespace, m.seq);
        let a = &mut self.active;
        a.count(&m.recipient, 1, len);
        a.last_seq = a.last_seq.max(m.seq);
        a.by_hash.insert(m.hash, key);
        a.inserted.insert(key, m);
        a.writes += 1;
        Ok(())
    }

    fn remove(&mut self, hash: &MessageHash) -> Result<Option<StoredMessage>, StoreError> {
        let Some(m) = self.get(hash)? else {
            return Ok(None);
        };
        let len = i64::try_from(m.body.len()).unwrap_or(i64::MAX);
        let a = &mut self.active;
        match a.by_hash.remove(hash) {
            Some(key) => {
                a.inserted.remove(&key);
            }
            None => {
                a.removed.insert(*hash);
            }
        }
        a.expiry.remove(hash);
        a.count(&m.recipient, -1, -len);
        a.writes += 1;
        Ok(Some(m))
    }

    fn set_expiry(&mut self, hash: &MessageHash, expiry: Timestamp) -> Result<bool, StoreError> {
        if self.get(hash)?.is_none() {
            return Ok(false);
        }
        let a = &mut self.active;
        match a.by_hash.get(hash) {
            Some(key) => {
                if let Some(m) = a.inserted.get_mut(key) {
                    m.expiry = expiry;
                }
            }
            None => {
                a.expiry.insert(*hash, expiry);
            }
        }
        a.writes += 1;
        Ok(true)
    }

    fn tombstone(&self, hash: &MessageHash) -> Result<Option<Tombstone>, StoreError> {
        match self.layers().find_map(|l| l.tombstones.get(hash)) {
            Some(t) => Ok(t.clone()),
            None => self.reader.tombstone(hash),
        }
    }

    fn put_tombstone(&mut self, t: Tombstone) -> Result<(), StoreError> {
        self.active.tombstones.insert(t.hash, Some(t));
        self.active.writes += 1;
        Ok(())
    }

    fn expire_tombstones(&mut self, before: Timestamp, limit: usize) -> Result<usize, StoreError> {
        let mut due: Vec<(Timestamp, MessageHash)> = Vec::new();
        let mut decided = HashSet::new();
        for layer in self.layers() {
            for (hash, t) in &layer.tombstones {
                if decided.insert(*hash)
                    && let Some(t) = t
                    && t.until <= before
                {
                    due.push((t.until, *hash));
                }
            }
        }
        let from_disk = self.reader.due_keys(
            crate::redb_store::TOMBSTONES_BY_UNTIL,
            before,
            limit + self.overlay_size(),
        )?;
        for (until, rest) in from_disk {
            if let Ok(h) = <[u8; 32]>::try_from(rest.as_slice())
                && !decided.contains(&MessageHash(h))
            {
                due.push((until, MessageHash(h)));
            }
        }
        due.sort_unstable();
        due.truncate(limit);
        for (_, hash) in &due {
            self.active.tombstones.insert(*hash, None);
            self.active.writes += 1;
        }
        Ok(due.len())
    }

    fn delete_range(
        &self,
        recipient: &RecipientId,
        namespace: Namespace,
    ) -> Result<Option<DeleteRange>, StoreError> {
        match self
            .layers()
            .find_map(|l| l.ranges.get(&(*recipient, namespace)))
        {
            Some(r) => Ok(r.clone()),
            None => self.reader.delete_range(recipient, namespace),
        }
    }

    fn put_delete_range(&mut self, r: DeleteRange) -> Result<(), StoreError> {
        self.active
            .ranges
            .insert((r.recipient, r.namespace), Some(r));
        self.active.writes += 1;
        Ok(())
    }

    fn expire_delete_ranges(
        &mut self,
        before: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let mut due: Vec<(Timestamp, RecipientId, Namespace)> = Vec::new();
        let mut decided = HashSet::new();
        for layer in self.layers() {
            for (key, r) in &layer.ranges {
                if decided.insert(*key)
                    && let Some(r) = r
                    && r.until <= before
                {
                    due.push((r.until, key.0, key.1));
                }
            }
        }
        let from_disk = self.reader.due_keys(
            crate::redb_store::DELETE_RANGES_BY_UNTIL,
            before,
            limit + self.overlay_size(),
        )?;
        for (until, rest) in from_disk {
            let (Some(r), Some(ns)) = (
                rest.get(..32).and_then(|b| <[u8; 32]>::try_from(b).ok()),
                rest.get(32..34).and_then(|b| <[u8; 2]>::try_from(b).ok()),
            ) else {
                continue;
            };
            let key = (RecipientId(r), Namespace(u16::from_be_bytes(ns)));
            if !decided.contains(&key) {
                due.push((until, key.0, key.1));
            }
        }
        due.sort_unstable();
        due.truncate(limit);
        for (_, recipient, namespace) in &due {
            self.active.ranges.insert((*recipient, *namespace), None);
            self.active.writes += 1;
        }
        Ok(due.len())
    }

    fn range(
        &self,
        recipient: &RecipientId,
        namespace: Namespace,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut out = Vec::new();
        // On disk first (older sequence numbers), skipping what the layers removed.
        let mut cursor = after;
        let page = limit.max(1);
        loop {
            let found = self.reader.range(recipient, namespace, cursor, page)?;
            let full = found.len() == page;
            for m in found {
                cursor = m.seq;
                if out.len() < limit
                    && let Some(m) = self.seen_through_layers(m)
                {
                    out.push(m);
                }
            }
            if !full || out.len() >= limit {
                break;
            }
        }
        let from = (*recipient, namespace, after.saturating_add(1));
        let to = (*recipient, namespace, u64::MAX);
        if after < u64::MAX {
            for (newer, layer) in self.layer_messages() {
                for m in layer.inserted.range(from..=to).map(|(_, m)| m) {
                    if out.len() >= limit {
                        return Ok(out);
                    }
                    if self.removed_above(&m.hash, newer) {
                        continue;
                    }
                    let mut m = m.clone();
                    if let Some(expiry) = self.expiry_above(&m.hash, newer) {
                        m.expiry = expiry;
                    }
                    out.push(m);
                }
            }
        }
        Ok(out)
    }

    fn expiring(&self, before: Timestamp, limit: usize) -> Result<Vec<MessageHash>, StoreError> {
        let mut due: Vec<(Timestamp, MessageHash)> = Vec::new();
        let all = self.layer_count();
        for (time, hash) in self.reader.due(
            crate::redb_store::BY_EXPIRY,
            before,
            limit + self.overlay_size(),
        )? {
            if !self.removed_above(&hash, all) && self.expiry_above(&hash, all).is_none() {
                due.push((time, hash));
            }
        }
        let mut decided = HashSet::new();
        for (newer, layer) in self.layers().enumerate() {
            for (hash, expiry) in &layer.expiry {
                if decided.insert(*hash) && !self.removed_above(hash, newer) && *expiry <= before {
                    due.push((*expiry, *hash));
                }
            }
        }
        for (newer, layer) in self.layer_messages() {
            for m in layer.inserted.values() {
                let expiry = self.expiry_above(&m.hash, newer).unwrap_or(m.expiry);
                if !self.removed_above(&m.hash, newer) && expiry <= before {
                    due.push((expiry, m.hash));
                }
            }
        }
        due.sort_unstable();
        due.dedup_by_key(|(_, h)| *h);
        due.truncate(limit);
        Ok(due.into_iter().map(|(_, h)| h).collect())
    }

    fn for_each(
        &self,
        visit: &mut dyn FnMut(&MessageHash, &RecipientId),
    ) -> Result<(), StoreError> {
        let all = self.layer_count();
        self.reader.for_each(&mut |h, r| {
            if !self.removed_above(h, all) {
                visit(h, r);
            }
        })?;
        for (newer, layer) in self.layer_messages() {
            for m in layer.inserted.values() {
                if !self.removed_above(&m.hash, newer) {
                    visit(&m.hash, &m.recipient);
                }
            }
        }
        Ok(())
    }

    fn for_each_in_bucket(
        &self,
        first_byte: u8,
        visit: &mut dyn FnMut(&MessageHash, &RecipientId),
    ) -> Result<(), StoreError> {
        let all = self.layer_count();
        self.reader.for_each_in_bucket(first_byte, &mut |h, r| {
            if !self.removed_above(h, all) {
                visit(h, r);
            }
        })?;
        for (newer, layer) in self.layer_messages() {
            for m in layer.inserted.values() {
                if m.hash.0[0] == first_byte && !self.removed_above(&m.hash, newer) {
                    visit(&m.hash, &m.recipient);
                }
            }
        }
        Ok(())
    }

    fn usage(&self, recipient: &RecipientId) -> (u64, u64) {
        let (mut c, mut b) = self.reader.usage(recipient);
        for layer in self.layers() {
            if let Some((dc, db)) = layer.usage.get(recipient) {
                c = c.saturating_add_signed(*dc);
                b = b.saturating_add_signed(*db);
            }
        }
        (c, b)
    }

    fn totals(&self) -> (u64, u64) {
        let (mut c, mut b) = self.reader.totals();
        for layer in self.layers() {
            c = c.saturating_add_signed(layer.totals.0);
            b = b.saturating_add_signed(layer.totals.1);
        }
        (c, b)
    }

    fn last_seq(&self) -> u64 {
        self.layers()
            .map(|l| l.last_seq)
            .fold(self.reader.last_seq(), u64::max)
    }

    fn durable_seq(&self) -> u64 {
        self.reader.durable_seq()
    }

    fn has_pending_writes(&self) -> bool {
        self.active.writes > 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use proto_core::request::Origin;
    use proto_core::store::MemoryBackend;
    use rand_chacha::ChaCha20Rng;
    use rand_core::{Rng, SeedableRng};

    use super::*;

    fn open(dir: &Path) -> WriteBehind {
        let options = DatabaseOptions::with_cache_bytes(1 << 20);
        WriteBehind::open(&dir.join("messages.redb"), &options).unwrap()
    }

    /// Polls until the writer finished the group in its hands.
    fn settle(db: &mut WriteBehind) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while db.committing() {
            db.absorb();
            assert!(Instant::now() < deadline, "the writer never finished");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn message(rng: &mut ChaCha20Rng, seq: u64) -> StoredMessage {
        let mut hash = [0u8; 32];
        rng.fill_bytes(&mut hash);
        StoredMessage {
            seq,
            hash: MessageHash(hash),
            recipient: RecipientId([rng.next_u32() as u8 % 3; 32]),
            namespace: Namespace(u16::from(rng.next_u32().is_multiple_of(2))),
            stored_at: Timestamp(1_000),
            expiry: Timestamp(1_000 + u64::from(rng.next_u32() % 100)),
            body: vec![seq as u8; (rng.next_u32() % 40) as usize],
            origin: Origin {
                timestamp: Timestamp(1_000),
                ttl_ms: 100,
                pow_nonce: 0,
                signature: None,
            },
        }
    }

    /// Every read the store makes gives the same answer from both backends.
    fn assert_same(db: &WriteBehind, model: &MemoryBackend, hashes: &[MessageHash], step: usize) {
        for h in hashes {
            assert_eq!(
                db.get(h).unwrap(),
                model.get(h).unwrap(),
                "get, step {step}"
            );
            assert_eq!(
                db.tombstone(h).unwrap(),
                model.tombstone(h).unwrap(),
                "tombstone, step {step}"
            );
        }
        for r in 0..3u8 {
            let r = RecipientId([r; 32]);
            assert_eq!(db.usage(&r), model.usage(&r), "usage, step {step}");
            for ns in [Namespace(0), Namespace(1)] {
                assert_eq!(
                    db.delete_range(&r, ns).unwrap(),
                    model.delete_range(&r, ns).unwrap()
                );
                for (after, limit) in [(0, 1000), (0, 3), (5, 2), (17, 1000)] {
                    assert_eq!(
                        db.range(&r, ns, after, limit).unwrap(),
                        model.range(&r, ns, after, limit).unwrap(),
                        "range {after} {limit}, step {step}"
                    );
                }
            }
        }
        assert_eq!(db.totals(), model.totals(), "totals, step {step}");
        for (before, limit) in [(1_050, 5), (1_100, 1000), (1_020, 1000)] {
            assert_eq!(
                db.expiring(Timestamp(before), limit).unwrap(),
                model.expiring(Timestamp(before), limit).unwrap(),
                "expiring, step {step}"
            );
        }
        let mut seen = Vec::new();
        db.for_each(&mut |h, r| seen.push((*h, *r))).unwrap();
        let mut expected = Vec::new();
        model.for_each(&mut |h, r| expected.push((*h, *r))).unwrap();
        seen.sort_unstable();
        expected.sort_unstable();
        assert_eq!(seen, expected, "for_each, step {step}");
        let first_byte = hashes.first().map_or(0, |h| h.0[0]);
        let mut bucket = Vec::new();
        db.for_each_in_bucket(first_byte, &mut |h, r| bucket.push((*h, *r)))
            .unwrap();
        let mut expected_bucket = Vec::new();
        model
            .for_each_in_bucket(first_byte, &mut |h, r| expected_bucket.push((*h, *r)))
            .unwrap();
        bucket.sort_unstable();
        assert_eq!(bucket, expected_bucket, "bucket {first_byte}, step {step}");
    }

    #[test]
    fn reads_during_and_between_group_commits_equal_an_immediate_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = open(dir.path());
        let mut model = MemoryBackend::immediate();
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let mut hashes: Vec<MessageHash> = Vec::new();
        let mut seq = 0;
        for step in 0..1_500 {
            let pick = |rng: &mut ChaCha20Rng, hashes: &[MessageHash]| {
                hashes[rng.next_u32() as usize % hashes.len()]
            };
            match rng.next_u32() % 12 {
                0..=3 => {
                    seq += 1;
                    let m = message(&mut rng, seq);
                    hashes.push(m.hash);
                    db.insert(m.clone()).unwrap();
                    model.insert(m).unwrap();
                }
                4 if !hashes.is_empty() => {
                    let h = pick(&mut rng, &hashes);
                    assert_eq!(db.remove(&h).unwrap(), model.remove(&h).unwrap());
                }
                5 if !hashes.is_empty() => {
                    let h = pick(&mut rng, &hashes);
                    let e = Timestamp(1_000 + u64::from(rng.next_u32() % 100));
                    assert_eq!(
                        db.set_expiry(&h, e).unwrap(),
                        model.set_expiry(&h, e).unwrap()
                    );
                }
                6 if !hashes.is_empty() => {
                    let h = pick(&mut rng, &hashes);
                    let t = Tombstone {
                        hash: h,
                        recipient: RecipientId([1; 32]),
                        namespace: Namespace(0),
                        until: Timestamp(1_000 + u64::from(rng.next_u32() % 100)),
                        evidence: vec![7; 3],
                    };
                    db.put_tombstone(t.clone()).unwrap();
                    model.put_tombstone(t).unwrap();
                }
                7 => {
                    let before = Timestamp(1_000 + u64::from(rng.next_u32() % 100));
                    let limit = 1 + rng.next_u32() as usize % 4;
                    assert_eq!(
                        db.expire_tombstones(before, limit).unwrap(),
                        model.expire_tombstones(before, limit).unwrap()
                    );
                    assert_eq!(
                        db.expire_delete_ranges(before, limit).unwrap(),
                        model.expire_delete_ranges(before, limit).unwrap()
                    );
                }
                8 => {
                    let r = DeleteRange {
                        recipient: RecipientId([rng.next_u32() as u8 % 3; 32]),
                        namespace: Namespace(u16::from(rng.next_u32().is_multiple_of(2))),
                        cut: Timestamp(900),
                        until: Timestamp(1_000 + u64::from(rng.next_u32() % 100)),
                        evidence: vec![9; 2],
                    };
                    db.put_delete_range(r.clone()).unwrap();
                    model.put_delete_range(r).unwrap();
                }
                9 | 10 => db.start_commit(),
                _ => settle(&mut db),
            }
            // Sometimes the writer finishes while the node works on.
            db.absorb();
            assert_eq!(db.last_seq(), model.last_seq());
            if step % 7 == 0 {
                assert_same(&db, &model, &hashes, step);
            }
        }
        assert_same(&db, &model, &hashes, usize::MAX);
        // Everything written survives a clean close, in the same state.
        db.close().unwrap();
        assert!(
            db.insert(message(&mut rng, seq + 1)).is_ok(),
            "accepted in memory"
        );
        drop(db);
        let reopened = open(dir.path());
        assert_eq!(reopened.durable_seq(), model.last_seq());
        assert_same(&reopened, &model, &hashes, usize::MAX - 1);
    }

    #[test]
    fn only_absorbed_commits_are_durable_and_a_crash_loses_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let (a, b) = (message(&mut rng, 1), message(&mut rng, 2));
        {
            let mut db = open(dir.path());
            db.insert(a.clone()).unwrap();
            assert!(db.has_pending_writes());
            assert_eq!(db.durable_seq(), 0, "nothing durable before a commit");
            db.start_commit();
            assert!(!db.has_pending_writes(), "the group went to the writer");
            // Written while the commit is under way: the next group.
            db.insert(b.clone()).unwrap();
            assert_eq!(db.get(&a.hash).unwrap(), Some(a.clone()));
            settle(&mut db);
            assert_eq!(db.durable_seq(), 1);
            assert!(db.has_pending_writes());
            // Dropped without a commit or close: a crash for `b`.
        }
        let db = open(dir.path());
        assert_eq!(db.get(&a.hash).unwrap(), Some(a));
        assert_eq!(db.get(&b.hash).unwrap(), None);
        assert_eq!(db.durable_seq(), 1);
    }
}
