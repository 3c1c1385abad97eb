//! Wall-clock benches (criterion) of a node's store path on disk: the core's store over
//! `ghost_host::write_behind::WriteBehind`, redb written behind by its own thread, as
//! `ghostnode` runs it. Run: `cargo bench -p ghost-benches --bench disk`. The database
//! lives under Cargo's target directory (a real disk, so fsync costs what it costs), not
//! in `/tmp`, which may be memory; `GHOST_BENCH_DIR` puts it elsewhere (the disk a node
//! will use, or `/dev/shm` to see the CPU without the disk). Not run in CI: wall time
//! and fsync are noisy on shared machines.

use std::hint::black_box;
use std::path::Path;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use ghost_host::redb_store::DatabaseOptions;
use ghost_host::write_behind::WriteBehind;
use proto_core::Namespace;
use proto_core::store::{MessageStore, NewMessage, StoreConfig};

mod common;

/// Messages held while the benches insert.
const HELD: u64 = 100_000;
/// Inserts per timed batch; each batch is expired again, untimed.
const INSERT_BATCH: u64 = 10_000;
/// Writes per group commit: what a loaded node commits at once (`ghost_db_commits_total`
/// showed 2 to 6 writes per commit at 16 stores in flight and above).
const GROUP: u64 = 4;
/// The body size `ghost bench` stores (a sealed 200-byte message is larger, but the
/// store's cost hardly depends on it).
const BODY: usize = 200;

/// A node's store: the core's rules over redb written behind, and the channel its writer
/// thread signals when a commit is done.
struct DiskStore {
    store: MessageStore<WriteBehind>,
    committed: Receiver<()>,
}

impl DiskStore {
    fn open(dir: &Path) -> Self {
        let mut db =
            WriteBehind::open(&dir.join("store.redb"), &DatabaseOptions::default()).expect("opens");
        let (wake, committed) = mpsc::channel();
        db.set_waker(move || {
            let _ = wake.send(());
        });
        let config = StoreConfig {
            recipient_max_messages: u64::MAX,
            ..StoreConfig::default()
        };
        Self {
            store: MessageStore::open(db, config).expect("opens"),
            committed,
        }
    }

    /// Stores message `i` for one of `recipients`, living `ttl_ms`.
    fn insert(&mut self, i: u64, recipients: u64, ttl_ms: u64) {
        let mut body = [0u8; BODY];
        body[..8].copy_from_slice(&i.to_be_bytes());
        let now = common::NOW;
        black_box(self.store.insert(
            NewMessage::unsigned(
                common::recipient(i % recipients),
                Namespace::DIRECT,
                &body,
                now,
                now.plus_millis(ttl_ms),
            ),
            now,
        ))
        .expect("fits");
    }

    /// Group-commits what was written and waits until it is durable (fsync'd).
    fn commit(&mut self) {
        let db = self.store.backend_mut();
        db.start_commit();
        while db.committing() {
            self.committed
                .recv_timeout(Duration::from_secs(30))
                .expect("the writer commits");
            db.absorb();
        }
        assert!(db.is_healthy(), "the commit succeeded");
    }
}

/// Inserts into a store held at [`HELD`] messages, timed in batches of [`INSERT_BATCH`]
/// (each expired again, untimed), with a durable group commit every [`GROUP`] inserts.
/// `timed_commits` says whether the commits are timed too: without, the figure is the
/// node thread's part of a store; with, it is a store made durable, one group at a time.
fn insert_holding(c: &mut Criterion, name: &str, timed_commits: bool) {
    let parent = std::env::var_os("GHOST_BENCH_DIR").map_or_else(
        || env!("CARGO_TARGET_TMPDIR").into(),
        std::path::PathBuf::from,
    );
    let dir = tempfile::tempdir_in(&parent).expect("a temporary directory in GHOST_BENCH_DIR");
    let recipients = HELD / 10;
    let mut s = DiskStore::open(dir.path());
    for i in 0..HELD {
        s.insert(i, recipients, 3_600_000 + i);
        if (i + 1) % INSERT_BATCH == 0 {
            s.commit();
        }
    }
    let mut i = HELD;
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(INSERT_BATCH);
                let mut done = 0;
                while done < n {
                    let group = GROUP.min(n - done);
                    let started = Instant::now();
                    for _ in 0..group {
                        i += 1;
                        s.insert(i, recipients, 60_000);
                    }
                    if timed_commits {
                        s.commit();
                        timed += started.elapsed();
                    } else {
                        timed += started.elapsed();
                        s.commit();
                    }
                    done += group;
                }
                let removed = s
                    .store
                    .expire(common::NOW.plus_millis(60_000), usize::MAX)
                    .expect("expires");
                assert_eq!(removed as u64, n, "only the batch expires");
                s.commit();
                let _ = s.store.take_changes();
                left -= n;
            }
            timed
        })
    });
    s.store.backend_mut().close().expect("closes cleanly");
}

fn disk(c: &mut Criterion) {
    insert_holding(c, "store insert on redb, written behind (100k held)", false);
    insert_holding(
        c,
        "store insert on redb + durable group commit of 4 (100k held)",
        true,
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = disk
}
criterion_main!(benches);
