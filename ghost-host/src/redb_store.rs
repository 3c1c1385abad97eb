//! The disk-backed message store: `proto-core`'s [`MessageBackend`] on redb.
//!
//! Writes go into one open write transaction and become durable together when the runtime
//! calls [`RedbBackend::commit`] (group commit: one fsync for every store that arrived
//! since the last one). Reads see the open transaction, so the store's rules (dedup,
//! quotas) see their own writes; the core only shows readers what is durable. Nothing
//! is cached in memory beyond the open transaction: node memory does not grow with the
//! number of stored messages. Totals and per-recipient usage live in the database.
//!
//! Tables (all keys big-endian so byte order is numeric order):
//! `messages` `recipient ‖ namespace ‖ seq → hash ‖ stored_at ‖ expiry ‖ body`,
//! `by_hash` `hash → messages key`, `by_expiry` `expiry ‖ hash → ∅`,
//! `usage` `recipient → count ‖ bytes`, `meta` `name → u64`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proto_core::request::Origin;
use proto_core::store::{DeleteRange, MessageBackend, StoreError, StoredMessage, Tombstone};
use proto_core::{MessageHash, Namespace, RecipientId, Timestamp};
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};

const MESSAGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("messages");
const BY_HASH: TableDefinition<&[u8], &[u8]> = TableDefinition::new("by_hash");
pub(crate) const BY_EXPIRY: TableDefinition<&[u8], ()> = TableDefinition::new("by_expiry");
const USAGE: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("usage");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// `hash → recipient (32) ‖ namespace (2) ‖ until (8) ‖ the owner's signed delete`: messages their
/// owners deleted (the delete is absent in tombstones written before it was kept).
const TOMBSTONES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tombstones");
/// `recipient (32) ‖ namespace (2) → cut (8) ‖ until (8) ‖ the owner's signed delete`:
/// owners' deletes of everything (before a time) in a namespace.
const DELETE_RANGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("delete_ranges");
/// `until (8) ‖ recipient (32) ‖ namespace (2)`: the delete ranges in the order they may go.
pub(crate) const DELETE_RANGES_BY_UNTIL: TableDefinition<&[u8], ()> =
    TableDefinition::new("delete_ranges_by_until");
/// `until (8) ‖ hash (32)`: the tombstones in the order they may go.
pub(crate) const TOMBSTONES_BY_UNTIL: TableDefinition<&[u8], ()> =
    TableDefinition::new("tombstones_by_until");

/// Page cache of the message database unless configured otherwise: 64 MiB.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

const LAST_SEQ: &str = "last_seq";
/// Layout of the message values: 2 added the origin (the client's store request minus
/// the message). Version 1 databases are rewritten once at open.
const FORMAT: &str = "format";
const FORMAT_VERSION: u64 = 2;
const TOTAL_COUNT: &str = "total_count";
const TOTAL_BYTES: &str = "total_bytes";

type MessageKey = [u8; 42];

fn message_key(recipient: &RecipientId, namespace: Namespace, seq: u64) -> MessageKey {
    let mut k = [0u8; 42];
    k[..32].copy_from_slice(recipient.as_bytes());
    k[32..34].copy_from_slice(&namespace.0.to_be_bytes());
    k[34..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// `recipient (32) ‖ namespace (2)`.
fn range_key(recipient: &RecipientId, namespace: Namespace) -> [u8; 34] {
    let mut k = [0u8; 34];
    k[..32].copy_from_slice(recipient.as_bytes());
    k[32..].copy_from_slice(&namespace.0.to_be_bytes());
    k
}

/// `until (8) ‖ key`.
fn until_key(until: Timestamp, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&until.0.to_be_bytes());
    k.extend_from_slice(key);
    k
}

fn expiry_key(expiry: Timestamp, hash: &MessageHash) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&expiry.0.to_be_bytes());
    k[8..].copy_from_slice(hash.as_bytes());
    k
}

/// `hash (32) ‖ stored_at (8) ‖ expiry (8) ‖ origin timestamp (8) ‖ ttl (8) ‖ pow nonce
/// (8) ‖ has signature (1) ‖ [signature (64)] ‖ body`.
fn encode_value(m: &StoredMessage) -> Vec<u8> {
    let mut v = Vec::with_capacity(137 + m.body.len());
    v.extend_from_slice(m.hash.as_bytes());
    v.extend_from_slice(&m.stored_at.0.to_be_bytes());
    v.extend_from_slice(&m.expiry.0.to_be_bytes());
    v.extend_from_slice(&m.origin.timestamp.0.to_be_bytes());
    v.extend_from_slice(&m.origin.ttl_ms.to_be_bytes());
    v.extend_from_slice(&m.origin.pow_nonce.to_be_bytes());
    match &m.origin.signature {
        Some(sig) => {
            v.push(1);
            v.extend_from_slice(sig);
        }
        None => v.push(0),
    }
    v.extend_from_slice(&m.body);
    v
}

fn decode(key: &[u8], value: &[u8]) -> Option<StoredMessage> {
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_be_bytes(value.get(at..at + 8)?.try_into().ok()?))
    };
    if key.len() != 42 {
        return None;
    }
    let (signature, body_at) = match value.get(72)? {
        0 => (None, 73),
        1 => (Some(value.get(73..137)?.try_into().ok()?), 137),
        _ => return None,
    };
    Some(StoredMessage {
        recipient: RecipientId(key[..32].try_into().ok()?),
        namespace: Namespace(u16::from_be_bytes(key[32..34].try_into().ok()?)),
        seq: u64::from_be_bytes(key[34..42].try_into().ok()?),
        hash: MessageHash(value.get(..32)?.try_into().ok()?),
        stored_at: Timestamp(u64_at(32)?),
        expiry: Timestamp(u64_at(40)?),
        body: value[body_at..].to_vec(),
        origin: Origin {
            timestamp: Timestamp(u64_at(48)?),
            ttl_ms: u64_at(56)?,
            pow_nonce: u64_at(64)?,
            signature,
        },
    })
}

/// A version 1 value (`hash ‖ stored_at ‖ expiry ‖ body`) in the current layout. Its
/// origin is the one an unsigned request without proof of work would have had: such a
/// message stays readable here, and other members accept a copy only where that origin
/// satisfies their rules (namespaces below 0x8000, no proof-of-work requirement).
fn upgrade_v1_value(value: &[u8]) -> Option<Vec<u8>> {
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_be_bytes(value.get(at..at + 8)?.try_into().ok()?))
    };
    let stored_at = u64_at(32)?;
    let expiry = u64_at(40)?;
    let mut v = Vec::with_capacity(value.len() + 25);
    v.extend_from_slice(&value[..48]);
    v.extend_from_slice(&stored_at.to_be_bytes());
    v.extend_from_slice(&expiry.saturating_sub(stored_at).to_be_bytes());
    v.extend_from_slice(&0u64.to_be_bytes());
    v.push(0);
    v.extend_from_slice(&value[48..]);
    Some(v)
}

/// Brings a database written by an earlier release to [`FORMAT_VERSION`], inside the
/// opening transaction (all or nothing).
fn upgrade_format(w: &WriteTransaction) -> Result<(), redb::Error> {
    let mut meta = w.open_table(META)?;
    let version = meta.get(FORMAT)?.map(|v| v.value());
    match version {
        Some(FORMAT_VERSION) => return Ok(()),
        Some(other) => {
            return Err(redb::Error::Corrupted(format!(
                "message database format {other} is newer than this release understands ({FORMAT_VERSION}): run the release that wrote it"
            )));
        }
        None => {}
    }
    let mut messages = w.open_table(MESSAGES)?;
    let old: Vec<(Vec<u8>, Vec<u8>)> = messages
        .iter()?
        .map(|e| e.map(|(k, v)| (k.value().to_vec(), v.value().to_vec())))
        .collect::<Result<_, _>>()?;
    let mut upgraded = 0u64;
    for (key, value) in old {
        let Some(new) = upgrade_v1_value(&value) else {
            continue;
        };
        messages.insert(key.as_slice(), new.as_slice())?;
        upgraded += 1;
    }
    if upgraded > 0 {
        tracing::info!(
            messages = upgraded,
            "message database upgraded to format {FORMAT_VERSION}"
        );
    }
    meta.insert(FORMAT, FORMAT_VERSION)?;
    Ok(())
}

fn decode_tombstone(hash: &MessageHash, value: &[u8]) -> Option<Tombstone> {
    Some(Tombstone {
        hash: *hash,
        recipient: RecipientId(value.get(..32)?.try_into().ok()?),
        namespace: Namespace(u16::from_be_bytes(value.get(32..34)?.try_into().ok()?)),
        until: Timestamp(u64::from_be_bytes(value.get(34..42)?.try_into().ok()?)),
        // The owner's signed delete follows; tombstones written before it was kept end here.
        evidence: value.get(42..).unwrap_or_default().to_vec(),
    })
}

/// Calls `visit` with one entry of the hash index (`hash → recipient ‖ namespace ‖ seq`).
fn visit_hash_entry(key: &[u8], value: &[u8], visit: &mut dyn FnMut(&MessageHash, &RecipientId)) {
    if let (Ok(h), Some(Ok(r))) = (
        <[u8; 32]>::try_from(key),
        value.get(..32).map(<[u8; 32]>::try_from),
    ) {
        visit(&MessageHash(h), &RecipientId(r));
    }
}

fn backend_error<E: std::fmt::Display>(e: E) -> StoreError {
    tracing::error!(error = %e, "message database error");
    StoreError::Backend
}

/// The message store's records in a redb database file.
pub struct RedbBackend {
    /// `None` once closed: every operation is refused from then on. Shared with a
    /// [`crate::write_behind::WriteBehind`]'s reader when there is one.
    db: Option<Arc<Database>>,
    /// The open write transaction holding writes not yet committed.
    txn: Option<WriteTransaction>,
    /// A pinned read snapshot that reads go through when no write is open (a
    /// write-behind reader: the state its overlay sits on).
    snapshot: Option<ReadTransaction>,
    /// Highest sequence number in the last committed transaction.
    durable_seq: u64,
    /// The database file, for its size.
    path: PathBuf,
    /// [`DatabaseOptions::quick_repair`].
    quick_repair: bool,
}

/// How [`RedbBackend::open_with`] opens the database.
#[derive(Clone, Debug)]
pub struct DatabaseOptions {
    /// Page cache, bytes: the bound on the store's resident memory, whatever the number of
    /// messages. Default [`DEFAULT_CACHE_BYTES`].
    pub cache_bytes: usize,
    /// Save redb's allocator state with every commit, so that opening after a crash needs
    /// no walk over the file. It makes every commit two-phase (two fsyncs instead of one)
    /// and serialises the allocator's bitmaps each time: about 10 % of a node's CPU per
    /// store under load (docs/PERFORMANCE.md). Off by default: durability is the same
    /// either way (redb's one-phase commit checksums what it writes), and a clean stop
    /// saves the allocator state anyway, so only a crash pays, with a repair walk of about
    /// 1.5 s per 650 MB file in the page cache, 9.5 s from a cold disk.
    pub quick_repair: bool,
}

impl DatabaseOptions {
    /// The defaults with a page cache of `cache_bytes`.
    #[must_use]
    pub fn with_cache_bytes(cache_bytes: usize) -> Self {
        Self {
            cache_bytes,
            ..Self::default()
        }
    }
}

impl Default for DatabaseOptions {
    fn default() -> Self {
        Self {
            cache_bytes: DEFAULT_CACHE_BYTES,
            quick_repair: false,
        }
    }
}

impl std::fmt::Debug for RedbBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbBackend")
            .field("pending", &self.txn.is_some())
            .field("durable_seq", &self.durable_seq)
            .finish_non_exhaustive()
    }
}

/// Reads go through the open write transaction when there is one.
macro_rules! with_table {
    ($self:ident, $def:expr, |$t:ident| $body:expr) => {{
        match &$self.txn {
            Some(txn) => {
                let $t = txn.open_table($def).map_err(backend_error)?;
                $body
            }
            None if $self.snapshot.is_some() => {
                let read = $self.snapshot.as_ref().expect("checked");
                let $t = read.open_table($def).map_err(backend_error)?;
                $body
            }
            None => {
                let read = $self.db()?.begin_read().map_err(backend_error)?;
                let $t = read.open_table($def).map_err(backend_error)?;
                $body
            }
        }
    }};
}

impl RedbBackend {
    /// Opens (or creates) the database at `path` with the default [`DatabaseOptions`].
    pub fn open(path: &Path) -> Result<Self, redb::Error> {
        Self::open_with(path, &DatabaseOptions::default())
    }

    /// Opens (or creates) the database at `path`. A database its last process did not
    /// close (a crash) is repaired first, which without [`DatabaseOptions::quick_repair`]
    /// walks the whole file; the walk is logged.
    pub fn open_with(path: &Path, options: &DatabaseOptions) -> Result<Self, redb::Error> {
        let reported_tenth = std::cell::Cell::new(None);
        let db = redb::Builder::new()
            .set_cache_size(options.cache_bytes)
            .set_repair_callback(move |session| {
                let tenth = (session.progress() * 10.0) as u32;
                if reported_tenth.get() != Some(tenth) {
                    reported_tenth.set(Some(tenth));
                    tracing::warn!(
                        progress_percent = tenth * 10,
                        "repairing the message database after an unclean stop"
                    );
                }
            })
            .create(path)?;
        // Create every table so readers never meet a missing one.
        let mut w = db.begin_write()?;
        w.set_durability(Durability::Immediate)?;
        w.set_quick_repair(options.quick_repair);
        {
            w.open_table(MESSAGES)?;
            w.open_table(BY_HASH)?;
            w.open_table(BY_EXPIRY)?;
            w.open_table(USAGE)?;
            w.open_table(META)?;
            w.open_table(TOMBSTONES)?;
            w.open_table(TOMBSTONES_BY_UNTIL)?;
            w.open_table(DELETE_RANGES)?;
            w.open_table(DELETE_RANGES_BY_UNTIL)?;
        }
        upgrade_format(&w)?;
        w.commit()?;
        let durable_seq = {
            let r = db.begin_read()?;
            let meta = r.open_table(META)?;
            meta.get(LAST_SEQ)?.map_or(0, |v| v.value())
        };
        Ok(Self {
            db: Some(Arc::new(db)),
            txn: None,
            snapshot: None,
            durable_seq,
            path: path.to_owned(),
            quick_repair: options.quick_repair,
        })
    }

    /// A second handle on the same database that never writes and reads through
    /// `snapshot` (replace it with [`RedbBackend::pin`]).
    pub(crate) fn reader(&self, snapshot: ReadTransaction) -> Self {
        Self {
            db: self.db.clone(),
            txn: None,
            snapshot: Some(snapshot),
            durable_seq: self.durable_seq,
            path: self.path.clone(),
            quick_repair: self.quick_repair,
        }
    }

    /// A read snapshot of what is committed now.
    pub(crate) fn snapshot_now(&self) -> Result<ReadTransaction, StoreError> {
        self.db()?.begin_read().map_err(backend_error)
    }

    /// Drops the open write transaction and everything written in it.
    pub(crate) fn rollback(&mut self) {
        self.txn = None;
    }

    /// Records that everything up to `durable_seq` is committed (by another handle).
    pub(crate) fn set_durable_seq(&mut self, durable_seq: u64) {
        self.durable_seq = durable_seq;
    }

    /// Reads from now on see `snapshot`, in which everything up to `durable_seq` is
    /// committed.
    pub(crate) fn pin(&mut self, snapshot: ReadTransaction, durable_seq: u64) {
        self.snapshot = Some(snapshot);
        self.durable_seq = durable_seq;
    }

    /// Commits what is pending, closes the database file cleanly (so the next open needs
    /// no repair) and refuses every later operation (graceful shutdown).
    pub fn close(&mut self) -> Result<(), StoreError> {
        let committed = self.commit();
        // An open write transaction (only after a failed commit) is rolled back first.
        self.txn = None;
        self.snapshot = None;
        let closed = match self.db.take().map(Arc::try_unwrap) {
            Some(Ok(db)) => db.close().map_err(backend_error),
            // Another handle still uses the file: the last one to go closes it.
            Some(Err(_)) | None => Ok(()),
        };
        committed.and(closed)
    }

    fn db(&self) -> Result<&Database, StoreError> {
        self.db.as_deref().ok_or(StoreError::Backend)
    }

    /// Whether the database answers a read: `false` once closed or when the file cannot
    /// be read. What `/health` reports.
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        self.db
            .as_ref()
            .is_some_and(|db| db.begin_read().is_ok_and(|r| r.open_table(META).is_ok()))
    }

    /// Size of the database file in bytes (a gauge for `/metrics`).
    #[must_use]
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    fn write(&mut self) -> Result<&WriteTransaction, StoreError> {
        if self.txn.is_none() {
            let mut w = self.db()?.begin_write().map_err(backend_error)?;
            w.set_durability(Durability::Immediate)
                .map_err(backend_error)?;
            w.set_quick_repair(self.quick_repair);
            self.txn = Some(w);
        }
        Ok(self.txn.as_ref().expect("just opened"))
    }

    /// Commits every pending write with one fsync. After it returns `Ok`, the writes
    /// survive a crash; call the node's `handle_durable` then.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        if let Some(txn) = self.txn.take() {
            let last = {
                let meta = txn.open_table(META).map_err(backend_error)?;
                meta.get(LAST_SEQ)
                    .map_err(backend_error)?
                    .map_or(0, |v| v.value())
            };
            txn.commit().map_err(backend_error)?;
            self.durable_seq = last;
        }
        Ok(())
    }

    fn add_meta(txn: &WriteTransaction, name: &str, delta: i64) -> Result<(), StoreError> {
        let mut meta = txn.open_table(META).map_err(backend_error)?;
        let current = meta
            .get(name)
            .map_err(backend_error)?
            .map_or(0, |v| v.value());
        let next = current.saturating_add_signed(delta);
        meta.insert(name, next).map_err(backend_error)?;
        Ok(())
    }

    fn add_usage(
        txn: &WriteTransaction,
        recipient: &RecipientId,
        count: i64,
        bytes: i64,
    ) -> Result<(), StoreError> {
        let mut usage = txn.open_table(USAGE).map_err(backend_error)?;
        let (c, b) = usage
            .get(recipient.as_bytes().as_slice())
            .map_err(backend_error)?
            .map_or((0, 0), |v| v.value());
        let (c, b) = (
            c.saturating_add_signed(count),
            b.saturating_add_signed(bytes),
        );
        if c == 0 {
            usage
                .remove(recipient.as_bytes().as_slice())
                .map_err(backend_error)?;
        } else {
            usage
                .insert(recipient.as_bytes().as_slice(), (c, b))
                .map_err(backend_error)?;
        }
        Ok(())
    }

    /// Up to `limit` entries of a `time ‖ hash` index (`BY_EXPIRY`)
    /// whose time is at or before `before`, oldest first.
    pub(crate) fn due(
        &self,
        index: TableDefinition<'static, &'static [u8], ()>,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Timestamp, MessageHash)>, StoreError> {
        Ok(self
            .due_keys(index, before, limit)?
            .into_iter()
            .filter_map(|(time, rest)| Some((time, MessageHash(rest.try_into().ok()?))))
            .collect())
    }

    /// Writes `value` under `key` in `table` and indexes it by `until` in `index`
    /// (`until ‖ key`), replacing the index entry of the record it replaces (`old`).
    /// Tombstones and delete ranges are kept this way until they can reach nothing.
    fn put_until(
        &mut self,
        table: TableDefinition<'static, &'static [u8], &'static [u8]>,
        index: TableDefinition<'static, &'static [u8], ()>,
        key: &[u8],
        old: Option<Timestamp>,
        until: Timestamp,
        value: &[u8],
    ) -> Result<(), StoreError> {
        let txn = self.write()?;
        let mut by_until = txn.open_table(index).map_err(backend_error)?;
        if let Some(old) = old {
            by_until
                .remove(until_key(old, key).as_slice())
                .map_err(backend_error)?;
        }
        by_until
            .insert(until_key(until, key).as_slice(), ())
            .map_err(backend_error)?;
        txn.open_table(table)
            .map_err(backend_error)?
            .insert(key, value)
            .map_err(backend_error)?;
        Ok(())
    }

    /// Removes up to `limit` records of `table` whose `index` time is at or before
    /// `before` (written by [`RedbBackend::put_until`]); returns how many.
    fn expire_until(
        &mut self,
        table: TableDefinition<'static, &'static [u8], &'static [u8]>,
        index: TableDefinition<'static, &'static [u8], ()>,
        before: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let due = self.due_keys(index, before, limit)?;
        if due.is_empty() {
            return Ok(0);
        }
        let txn = self.write()?;
        let mut by_until = txn.open_table(index).map_err(backend_error)?;
        let mut records = txn.open_table(table).map_err(backend_error)?;
        for (until, key) in &due {
            by_until
                .remove(until_key(*until, key).as_slice())
                .map_err(backend_error)?;
            records.remove(key.as_slice()).map_err(backend_error)?;
        }
        Ok(due.len())
    }

    /// Up to `limit` entries of a `time ‖ rest` index whose time is at or before
    /// `before`, oldest first, as (time, rest).
    pub(crate) fn due_keys(
        &self,
        index: TableDefinition<'static, &'static [u8], ()>,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Timestamp, Vec<u8>)>, StoreError> {
        // Past every key of that time: the longest key is 8 + 34 bytes.
        let mut to = [0xff; 8 + 64];
        to[..8].copy_from_slice(&before.0.to_be_bytes());
        with_table!(self, index, |t| {
            let mut out = Vec::new();
            for entry in t
                .range(..=to.as_slice())
                .map_err(backend_error)?
                .take(limit)
            {
                let (k, _) = entry.map_err(backend_error)?;
                let key = k.value();
                if let Some(time) = key.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                    out.push((Timestamp(u64::from_be_bytes(time)), key[8..].to_vec()));
                }
            }
            Ok(out)
        })
    }

    /// Inserts `m` (whose hash is absent) without taking it.
    pub(crate) fn put_message(&mut self, m: &StoredMessage) -> Result<(), StoreError> {
        self.put_messages(std::iter::once(m))
    }

    /// Inserts `messages` (none of whose hashes is held) without taking them. Each table
    /// is opened once for all of them, and each recipient's usage and the totals are
    /// read and written once, not once per message: a group of 64 inserts costs the
    /// writer 15 % less so (a group of a few, nothing measurable; docs/PERFORMANCE.md).
    pub(crate) fn put_messages<'a>(
        &mut self,
        messages: impl IntoIterator<Item = &'a StoredMessage>,
    ) -> Result<(), StoreError> {
        let txn = self.write()?;
        let mut usage: BTreeMap<RecipientId, (i64, i64)> = BTreeMap::new();
        let mut last_seq = None;
        {
            let mut records = txn.open_table(MESSAGES).map_err(backend_error)?;
            let mut by_hash = txn.open_table(BY_HASH).map_err(backend_error)?;
            let mut by_expiry = txn.open_table(BY_EXPIRY).map_err(backend_error)?;
            for m in messages {
                let key = message_key(&m.recipient, m.namespace, m.seq);
                records
                    .insert(key.as_slice(), encode_value(m).as_slice())
                    .map_err(backend_error)?;
                by_hash
                    .insert(m.hash.as_bytes().as_slice(), key.as_slice())
                    .map_err(backend_error)?;
                by_expiry
                    .insert(expiry_key(m.expiry, &m.hash).as_slice(), ())
                    .map_err(backend_error)?;
                let len = i64::try_from(m.body.len()).unwrap_or(i64::MAX);
                let held = usage.entry(m.recipient).or_default();
                held.0 += 1;
                held.1 = held.1.saturating_add(len);
                last_seq = last_seq.max(Some(m.seq));
            }
        }
        let Some(last_seq) = last_seq else {
            return Ok(());
        };
        Self::add_counts(txn, &usage)?;
        let mut meta = txn.open_table(META).map_err(backend_error)?;
        let last = meta
            .get(LAST_SEQ)
            .map_err(backend_error)?
            .map_or(0, |v| v.value());
        meta.insert(LAST_SEQ, last.max(last_seq))
            .map_err(backend_error)?;
        Ok(())
    }

    /// Removes the messages of `hashes` that are held (the others are skipped), with each
    /// table opened once and each recipient's usage and the totals written once, as
    /// [`RedbBackend::put_messages`] does for inserts (an expiry sweep removes many).
    pub(crate) fn remove_messages<'a>(
        &mut self,
        hashes: impl IntoIterator<Item = &'a MessageHash>,
    ) -> Result<(), StoreError> {
        let txn = self.write()?;
        let mut usage: BTreeMap<RecipientId, (i64, i64)> = BTreeMap::new();
        {
            let mut records = txn.open_table(MESSAGES).map_err(backend_error)?;
            let mut by_hash = txn.open_table(BY_HASH).map_err(backend_error)?;
            let mut by_expiry = txn.open_table(BY_EXPIRY).map_err(backend_error)?;
            for hash in hashes {
                let Some(key) = by_hash
                    .get(hash.as_bytes().as_slice())
                    .map_err(backend_error)?
                    .map(|v| v.value().to_vec())
                else {
                    continue;
                };
                let Some(m) = records
                    .get(key.as_slice())
                    .map_err(backend_error)?
                    .and_then(|v| decode(&key, v.value()))
                else {
                    continue;
                };
                records.remove(key.as_slice()).map_err(backend_error)?;
                by_hash
                    .remove(hash.as_bytes().as_slice())
                    .map_err(backend_error)?;
                by_expiry
                    .remove(expiry_key(m.expiry, hash).as_slice())
                    .map_err(backend_error)?;
                let len = i64::try_from(m.body.len()).unwrap_or(i64::MAX);
                let held = usage.entry(m.recipient).or_default();
                held.0 -= 1;
                held.1 = held.1.saturating_sub(len);
            }
        }
        Self::add_counts(txn, &usage)
    }

    /// Adds per-recipient `(messages, bytes)` deltas to the usage table and their sums to
    /// the totals.
    fn add_counts(
        txn: &WriteTransaction,
        usage: &BTreeMap<RecipientId, (i64, i64)>,
    ) -> Result<(), StoreError> {
        if usage.is_empty() {
            return Ok(());
        }
        let (mut count, mut bytes) = (0i64, 0i64);
        for (recipient, (c, b)) in usage {
            Self::add_usage(txn, recipient, *c, *b)?;
            count += c;
            bytes = bytes.saturating_add(*b);
        }
        Self::add_meta(txn, TOTAL_COUNT, count)?;
        Self::add_meta(txn, TOTAL_BYTES, bytes)
    }

    /// Removes the tombstone of `hash`, if any.
    pub(crate) fn remove_tombstone(&mut self, hash: &MessageHash) -> Result<(), StoreError> {
        let Some(old) = self.tombstone(hash)? else {
            return Ok(());
        };
        self.remove_until(TOMBSTONES, TOMBSTONES_BY_UNTIL, hash.as_bytes(), old.until)
    }

    /// Removes the delete range of `(recipient, namespace)`, if any.
    pub(crate) fn remove_delete_range(
        &mut self,
        recipient: &RecipientId,
        namespace: Namespace,
    ) -> Result<(), StoreError> {
        let Some(old) = self.delete_range(recipient, namespace)? else {
            return Ok(());
        };
        let key = range_key(recipient, namespace);
        self.remove_until(DELETE_RANGES, DELETE_RANGES_BY_UNTIL, &key, old.until)
    }

    fn remove_until(
        &mut self,
        table: TableDefinition<'static, &'static [u8], &'static [u8]>,
        index: TableDefinition<'static, &'static [u8], ()>,
        key: &[u8],
        until: Timestamp,
    ) -> Result<(), StoreError> {
        let txn = self.write()?;
        txn.open_table(index)
            .map_err(backend_error)?
            .remove(until_key(until, key).as_slice())
            .map_err(backend_error)?;
        txn.open_table(table)
            .map_err(backend_error)?
            .remove(key)
            .map_err(backend_error)?;
        Ok(())
    }

    fn meta(&self, name: &str) -> Result<u64, StoreError> {
        with_table!(self, META, |t| Ok(t
            .get(name)
            .map_err(backend_error)?
            .map_or(0, |v| v.value())))
    }
}

impl MessageBackend for RedbBackend {
    fn get(&self, hash: &MessageHash) -> Result<Option<StoredMessage>, StoreError> {
        let key = with_table!(self, BY_HASH, |t| t
            .get(hash.as_bytes().as_slice())
            .map_err(backend_error)?
            .map(|v| v.value().to_vec()));
        let Some(key) = key else {
            return Ok(None);
        };
        with_table!(self, MESSAGES, |t| Ok(t
            .get(key.as_slice())
            .map_err(backend_error)?
            .and_then(|v| decode(&key, v.value()))))
    }

    fn insert(&mut self, m: StoredMessage) -> Result<(), StoreError> {
        self.put_message(&m)
    }

    fn remove(&mut self, hash: &MessageHash) -> Result<Option<StoredMessage>, StoreError> {
        let Some(m) = self.get(hash)? else {
            return Ok(None);
        };
        self.remove_messages(std::iter::once(hash))?;
        Ok(Some(m))
    }

    fn tombstone(&self, hash: &MessageHash) -> Result<Option<Tombstone>, StoreError> {
        with_table!(self, TOMBSTONES, |t| Ok(t
            .get(hash.as_bytes().as_slice())
            .map_err(backend_error)?
            .and_then(|v| decode_tombstone(hash, v.value()))))
    }

    fn put_tombstone(&mut self, t: Tombstone) -> Result<(), StoreError> {
        let old = self.tombstone(&t.hash)?.map(|old| old.until);
        let mut value = Vec::with_capacity(42 + t.evidence.len());
        value.extend_from_slice(t.recipient.as_bytes());
        value.extend_from_slice(&t.namespace.0.to_be_bytes());
        value.extend_from_slice(&t.until.0.to_be_bytes());
        value.extend_from_slice(&t.evidence);
        let key = t.hash.as_bytes().as_slice();
        self.put_until(TOMBSTONES, TOMBSTONES_BY_UNTIL, key, old, t.until, &value)
    }

    fn delete_range(
        &self,
        recipient: &RecipientId,
        namespace: Namespace,
    ) -> Result<Option<DeleteRange>, StoreError> {
        let key = range_key(recipient, namespace);
        with_table!(self, DELETE_RANGES, |t| Ok(t
            .get(key.as_slice())
            .map_err(backend_error)?
            .and_then(|v| {
                let v = v.value();
                Some(DeleteRange {
                    recipient: *recipient,
                    namespace,
                    cut: Timestamp(u64::from_be_bytes(v.get(..8)?.try_into().ok()?)),
                    until: Timestamp(u64::from_be_bytes(v.get(8..16)?.try_into().ok()?)),
                    evidence: v.get(16..)?.to_vec(),
                })
            })))
    }

    fn put_delete_range(&mut self, r: DeleteRange) -> Result<(), StoreError> {
        let old = self
            .delete_range(&r.recipient, r.namespace)?
            .map(|old| old.until);
        let mut value = Vec::with_capacity(16 + r.evidence.len());
        value.extend_from_slice(&r.cut.0.to_be_bytes());
        value.extend_from_slice(&r.until.0.to_be_bytes());
        value.extend_from_slice(&r.evidence);
        let key = range_key(&r.recipient, r.namespace);
        self.put_until(
            DELETE_RANGES,
            DELETE_RANGES_BY_UNTIL,
            &key,
            old,
            r.until,
            &value,
        )
    }

    fn expire_delete_ranges(
        &mut self,
        before: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        self.expire_until(DELETE_RANGES, DELETE_RANGES_BY_UNTIL, before, limit)
    }

    fn expire_tombstones(&mut self, before: Timestamp, limit: usize) -> Result<usize, StoreError> {
        self.expire_until(TOMBSTONES, TOMBSTONES_BY_UNTIL, before, limit)
    }

    fn set_expiry(&mut self, hash: &MessageHash, expiry: Timestamp) -> Result<bool, StoreError> {
        let Some(mut m) = self.get(hash)? else {
            return Ok(false);
        };
        let txn = self.write()?;
        let mut by_expiry = txn.open_table(BY_EXPIRY).map_err(backend_error)?;
        by_expiry
            .remove(expiry_key(m.expiry, hash).as_slice())
            .map_err(backend_error)?;
        by_expiry
            .insert(expiry_key(expiry, hash).as_slice(), ())
            .map_err(backend_error)?;
        m.expiry = expiry;
        let key = message_key(&m.recipient, m.namespace, m.seq);
        txn.open_table(MESSAGES)
            .map_err(backend_error)?
            .insert(key.as_slice(), encode_value(&m).as_slice())
            .map_err(backend_error)?;
        Ok(true)
    }

    fn range(
        &self,
        recipient: &RecipientId,
        namespace: Namespace,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let from = message_key(recipient, namespace, first);
        let to = message_key(recipient, namespace, u64::MAX);
        with_table!(self, MESSAGES, |t| {
            let mut out = Vec::new();
            for entry in t
                .range(from.as_slice()..=to.as_slice())
                .map_err(backend_error)?
                .take(limit)
            {
                let (k, v) = entry.map_err(backend_error)?;
                out.extend(decode(k.value(), v.value()));
            }
            Ok(out)
        })
    }

    fn expiring(&self, before: Timestamp, limit: usize) -> Result<Vec<MessageHash>, StoreError> {
        Ok(self
            .due(BY_EXPIRY, before, limit)?
            .into_iter()
            .map(|(_, h)| h)
            .collect())
    }

    fn for_each(
        &self,
        visit: &mut dyn FnMut(&MessageHash, &RecipientId),
    ) -> Result<(), StoreError> {
        // The hash index holds `hash → recipient ‖ namespace ‖ seq`: the scan never reads
        // a message body.
        with_table!(self, BY_HASH, |t| {
            for entry in t.iter().map_err(backend_error)? {
                let (k, v) = entry.map_err(backend_error)?;
                visit_hash_entry(k.value(), v.value(), visit);
            }
            Ok(())
        })
    }

    fn for_each_in_bucket(
        &self,
        first_byte: u8,
        visit: &mut dyn FnMut(&MessageHash, &RecipientId),
    ) -> Result<(), StoreError> {
        // Hashes starting with `first_byte` are one contiguous range of the hash index.
        let start = [first_byte];
        with_table!(self, BY_HASH, |t| {
            for entry in t.range(start.as_slice()..).map_err(backend_error)? {
                let (k, v) = entry.map_err(backend_error)?;
                if k.value().first() != Some(&first_byte) {
                    break;
                }
                visit_hash_entry(k.value(), v.value(), visit);
            }
            Ok(())
        })
    }

    fn usage(&self, recipient: &RecipientId) -> (u64, u64) {
        let read = || -> Result<(u64, u64), StoreError> {
            with_table!(self, USAGE, |t| Ok(t
                .get(recipient.as_bytes().as_slice())
                .map_err(backend_error)?
                .map_or((0, 0), |v| v.value())))
        };
        // A failed read reports the quota as used up: refuse rather than overfill.
        read().unwrap_or((u64::MAX, u64::MAX))
    }

    fn totals(&self) -> (u64, u64) {
        match (self.meta(TOTAL_COUNT), self.meta(TOTAL_BYTES)) {
            (Ok(c), Ok(b)) => (c, b),
            _ => (u64::MAX, u64::MAX),
        }
    }

    fn last_seq(&self) -> u64 {
        self.meta(LAST_SEQ).unwrap_or(self.durable_seq)
    }

    fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    fn has_pending_writes(&self) -> bool {
        self.txn.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_core::request::{DeleteRequest, DeleteSelector};
    use proto_core::store::{MessageStore, NewMessage, StoreConfig};

    const NOW: Timestamp = Timestamp(1_800_000_000_000);

    fn r(i: u8) -> RecipientId {
        RecipientId([i; 32])
    }

    fn open(dir: &Path) -> MessageStore<RedbBackend> {
        MessageStore::open(
            RedbBackend::open(&dir.join("messages.redb")).unwrap(),
            StoreConfig::default(),
        )
        .unwrap()
    }

    #[test]
    fn committed_messages_survive_reopening_and_uncommitted_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (kept, lost) = {
            let mut s = open(dir.path());
            let kept = s
                .insert(
                    NewMessage::unsigned(
                        r(1),
                        Namespace::DIRECT,
                        b"kept",
                        NOW,
                        NOW.plus_millis(60_000),
                    ),
                    NOW,
                )
                .unwrap();
            assert!(s.durable_seq() < kept.seq, "not durable before the commit");
            s.backend_mut().commit().unwrap();
            assert!(s.durable_seq() >= kept.seq);
            let lost = s
                .insert(
                    NewMessage::unsigned(
                        r(1),
                        Namespace::DIRECT,
                        b"lost",
                        NOW,
                        NOW.plus_millis(60_000),
                    ),
                    NOW,
                )
                .unwrap();
            (kept, lost)
            // Dropped without a commit: the open transaction is aborted, as a crash would.
        };
        let s = open(dir.path());
        assert!(s.get(&kept.hash, NOW).unwrap().is_some());
        assert!(s.get(&lost.hash, NOW).unwrap().is_none());
        assert_eq!(s.totals().0, 1);
        let page = s.retrieve(&r(1), Namespace::DIRECT, 0, 10, NOW).unwrap();
        assert_eq!(page.messages.len(), 1);
        assert_eq!(page.messages[0].body, b"kept");
    }

    /// Whether redb repairs the database at `path` when opening it.
    fn opening_repairs(path: &Path) -> bool {
        let repaired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = Arc::clone(&repaired);
        redb::Builder::new()
            .set_repair_callback(move |_| seen.store(true, std::sync::atomic::Ordering::SeqCst))
            .create(path)
            .unwrap();
        repaired.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A crash as the disk sees it: the file as the last commit left it, never closed.
    /// Copying it while the database is open gives exactly that (a commit's pages are in
    /// the file before `commit` returns), without killing a process.
    #[test]
    fn a_file_left_by_a_crash_after_a_commit_opens_with_every_committed_message() {
        for quick_repair in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let options = DatabaseOptions {
                quick_repair,
                ..DatabaseOptions::default()
            };
            let open = |name: &str| {
                let backend = RedbBackend::open_with(&dir.path().join(name), &options).unwrap();
                MessageStore::open(backend, StoreConfig::default()).unwrap()
            };
            let insert = |s: &mut MessageStore<RedbBackend>, i: u64| {
                let body = i.to_be_bytes();
                let m = NewMessage::unsigned(
                    r(1 + (i % 3) as u8),
                    Namespace::DIRECT,
                    &body,
                    NOW,
                    NOW.plus_millis(60_000),
                );
                s.insert(m, NOW).unwrap()
            };
            let mut s = open("live.redb");
            let mut committed = Vec::new();
            for round in 0..4u64 {
                for i in 0..25 {
                    committed.push(insert(&mut s, round * 25 + i).hash);
                }
                s.backend_mut().commit().unwrap();
            }
            let lost = insert(&mut s, 1000).hash;
            for copy in ["crashed.redb", "crashed-probe.redb"] {
                std::fs::copy(dir.path().join("live.redb"), dir.path().join(copy)).unwrap();
            }
            s.backend_mut().close().unwrap();
            drop(s);
            assert_eq!(
                opening_repairs(&dir.path().join("crashed-probe.redb")),
                !quick_repair,
                "a file left by a crash needs a repair walk unless commits saved the allocator"
            );
            assert!(
                !opening_repairs(&dir.path().join("live.redb")),
                "a closed file needs no repair (quick_repair {quick_repair})"
            );

            let mut s = open("crashed.redb");
            assert_eq!(s.totals().0, 100, "quick_repair {quick_repair}");
            for hash in &committed {
                assert!(
                    s.get(hash, NOW).unwrap().is_some(),
                    "quick_repair {quick_repair}"
                );
            }
            assert!(s.get(&lost, NOW).unwrap().is_none(), "never committed");
            // The repaired file takes new writes that survive its next opening.
            let after = insert(&mut s, 2000);
            assert_eq!(
                after.seq, 101,
                "sequence numbers go on from the last commit"
            );
            s.backend_mut().commit().unwrap();
            s.backend_mut().close().unwrap();
            drop(s);
            let s = open("crashed.redb");
            assert_eq!(s.totals().0, 101, "quick_repair {quick_repair}");
            assert!(s.get(&after.hash, NOW).unwrap().is_some());
        }
    }

    #[test]
    fn readers_see_only_durable_messages_and_writers_see_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        let a = s
            .insert(
                NewMessage::unsigned(r(2), Namespace::DIRECT, b"a", NOW, NOW.plus_millis(60_000)),
                NOW,
            )
            .unwrap();
        // Dedup sees the uncommitted write.
        let again = s
            .insert(
                NewMessage::unsigned(r(2), Namespace::DIRECT, b"a", NOW, NOW.plus_millis(60_000)),
                NOW,
            )
            .unwrap();
        assert!(!again.new);
        assert_eq!(again.seq, a.seq);
        assert!(
            s.retrieve(&r(2), Namespace::DIRECT, 0, 10, NOW)
                .unwrap()
                .messages
                .is_empty()
        );
        s.backend_mut().commit().unwrap();
        assert_eq!(
            s.retrieve(&r(2), Namespace::DIRECT, 0, 10, NOW)
                .unwrap()
                .messages
                .len(),
            1
        );
    }

    #[test]
    fn cursor_expiry_delete_and_quota_work_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            recipient_max_messages: 50,
            ..StoreConfig::default()
        };
        let mut s = MessageStore::open(
            RedbBackend::open(&dir.path().join("m.redb")).unwrap(),
            config,
        )
        .unwrap();
        for i in 0..50u64 {
            s.insert(
                NewMessage::unsigned(
                    r(3),
                    Namespace::DIRECT,
                    &i.to_be_bytes(),
                    NOW,
                    NOW.plus_millis(1000 + i),
                ),
                NOW,
            )
            .unwrap();
        }
        assert_eq!(
            s.insert(
                NewMessage::unsigned(r(3), Namespace::DIRECT, b"over", NOW, NOW.plus_millis(1000)),
                NOW
            ),
            Err(StoreError::QuotaExceeded)
        );
        s.backend_mut().commit().unwrap();
        let mut after = 0;
        let mut seen = 0;
        loop {
            let page = s.retrieve(&r(3), Namespace::DIRECT, after, 7, NOW).unwrap();
            seen += page.messages.len();
            after = page.messages.last().map_or(after, |m| m.seq);
            if !page.more {
                break;
            }
        }
        assert_eq!(seen, 50);
        assert_eq!(s.expire(NOW.plus_millis(1009), 100).unwrap(), 10);
        assert_eq!(s.delete_all(&r(3), Namespace::DIRECT, NOW).unwrap(), 40);
        s.backend_mut().commit().unwrap();
        assert_eq!(s.totals(), (0, 0));
        assert_eq!(s.backend().usage(&r(3)), (0, 0));
    }

    #[test]
    fn origins_survive_reopening_and_a_format_1_database_is_upgraded_once() {
        let dir = tempfile::tempdir().unwrap();
        let private = Namespace(0x8000);
        let signed = NewMessage {
            origin: Origin {
                timestamp: Timestamp(NOW.0 - 5),
                ttl_ms: 60_000,
                pow_nonce: 42,
                signature: Some([9; 64]),
            },
            ..NewMessage::unsigned(r(2), private, b"owner only", NOW, NOW.plus_millis(60_000))
        };
        let hash = {
            let mut s = open(dir.path());
            let ins = s.insert(signed, NOW).unwrap();
            s.backend_mut().commit().unwrap();
            ins.hash
        };
        let s = open(dir.path());
        let got = s.get(&hash, NOW).unwrap().expect("kept");
        assert_eq!(
            (got.origin, got.body.as_slice()),
            (signed.origin, &b"owner only"[..])
        );
        drop(s);

        // A database as the previous release wrote it: values without an origin, no
        // format marker. Opening rewrites each value once; the message reads the same.
        let old = dir.path().join("old.redb");
        {
            let db = redb::Database::create(&old).unwrap();
            let w = db.begin_write().unwrap();
            {
                let mut m = w.open_table(MESSAGES).unwrap();
                let key = message_key(&r(3), Namespace::DIRECT, 1);
                let h = proto_core::store::message_hash(&r(3), Namespace::DIRECT, b"from v1");
                let mut v = h.as_bytes().to_vec();
                v.extend_from_slice(&NOW.0.to_be_bytes());
                v.extend_from_slice(&(NOW.0 + 60_000).to_be_bytes());
                v.extend_from_slice(b"from v1");
                m.insert(key.as_slice(), v.as_slice()).unwrap();
            }
            w.commit().unwrap();
        }
        for _ in 0..2 {
            let b = RedbBackend::open(&old).unwrap();
            let r3 = b.db().unwrap().begin_read().unwrap();
            let t = r3.open_table(MESSAGES).unwrap();
            let (k, v) = t.first().unwrap().expect("one message");
            let m = decode(k.value(), v.value()).expect("decodes after the upgrade");
            assert_eq!(m.body, b"from v1");
            assert_eq!((m.stored_at, m.expiry), (NOW, NOW.plus_millis(60_000)));
            assert_eq!(
                m.origin,
                Origin {
                    timestamp: NOW,
                    ttl_ms: 60_000,
                    pow_nonce: 0,
                    signature: None
                }
            );
        }
    }

    #[test]
    fn tombstones_survive_reopening_and_go_when_the_message_would_have_expired() {
        let dir = tempfile::tempdir().unwrap();
        let expiry = NOW.plus_millis(60_000);
        let hash = {
            let mut s = open(dir.path());
            let ins = s
                .insert(
                    NewMessage::unsigned(r(4), Namespace::DIRECT, b"deleted", NOW, expiry),
                    NOW,
                )
                .unwrap();
            assert_eq!(
                s.delete_hashes(&r(4), Namespace::DIRECT, [ins.hash].into_iter(), NOW),
                Ok(1)
            );
            s.backend_mut().commit().unwrap();
            ins.hash
        };
        let mut s = open(dir.path());
        let again = NewMessage::unsigned(r(4), Namespace::DIRECT, b"deleted", NOW, expiry);
        assert_eq!(s.insert(again, NOW), Err(StoreError::Deleted));
        let t = s.tombstone(&hash).unwrap().expect("kept");
        assert_eq!(t.until, expiry);
        assert!(t.evidence.is_empty(), "no owner's delete was given");
        s.expire(expiry.plus_millis(1), 10).unwrap();
        s.backend_mut().commit().unwrap();
        assert_eq!(s.tombstone(&hash), Ok(None));
    }

    #[test]
    fn a_tombstone_keeps_the_owners_delete_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let expiry = NOW.plus_millis(60_000);
        // The store keeps the signed bytes as given; the node checks them.
        let evidence: Vec<u8> = (0..=255u8).cycle().take(300).collect();
        let hash = {
            let mut s = open(dir.path());
            let ins = s
                .insert(
                    NewMessage::unsigned(r(5), Namespace::DIRECT, b"deleted", NOW, expiry),
                    NOW,
                )
                .unwrap();
            let delete = DeleteRequest {
                recipient: r(5),
                namespace: Namespace::DIRECT,
                timestamp: NOW,
                selector: DeleteSelector::All,
            };
            assert_eq!(s.apply_delete(&delete, &evidence, NOW), Ok(1));
            s.backend_mut().commit().unwrap();
            ins.hash
        };
        let mut s = open(dir.path());
        let t = s.tombstone(&hash).unwrap().expect("kept");
        assert_eq!((t.recipient, t.until), (r(5), expiry));
        assert_eq!(t.evidence, evidence);
        // The delete of everything is kept too: a copy stored before it is refused,
        // one stored after is not, until the range could reach nothing.
        let range = s
            .delete_range(&r(5), Namespace::DIRECT)
            .unwrap()
            .expect("kept");
        assert_eq!(
            (range.cut, range.evidence.clone()),
            (NOW.plus_millis(1), evidence)
        );
        let before = NewMessage::unsigned(r(5), Namespace::DIRECT, b"older", NOW, expiry);
        assert_eq!(s.insert(before, NOW), Err(StoreError::Deleted));
        let after_delete = NOW.plus_millis(2);
        let newer = NewMessage::unsigned(r(5), Namespace::DIRECT, b"newer", after_delete, expiry);
        assert!(s.insert(newer, after_delete).is_ok());
        s.expire(range.until.plus_millis(1), 10).unwrap();
        s.backend_mut().commit().unwrap();
        assert_eq!(s.delete_range(&r(5), Namespace::DIRECT), Ok(None));
    }
}
