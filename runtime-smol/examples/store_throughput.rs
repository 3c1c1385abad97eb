//! Measures the disk store: stores per second with group commit (one fsync per batch),
//! and retrieval of 100 messages from a large store. Figures go to docs/DEPENDENCIES.md.
//! Run: `cargo run --release -p runtime-smol --example store_throughput [messages] [batch]`.

use std::time::Instant;

use proto_core::store::{MessageStore, NewMessage, StoreConfig};
use proto_core::{Namespace, RecipientId, Timestamp};
use runtime_smol::redb_store::RedbBackend;

fn main() {
    let mut args = std::env::args().skip(1);
    let total: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let batch: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let dir = tempfile::tempdir().expect("temporary directory");
    let backend = RedbBackend::open(&dir.path().join("messages.redb")).expect("database opens");
    let config = StoreConfig {
        recipient_max_messages: u64::MAX,
        ..StoreConfig::default()
    };
    let mut store = MessageStore::open(backend, config).expect("store opens");
    let now = Timestamp(1_800_000_000_000);
    let body = [7u8; 200];
    let started = Instant::now();
    for i in 0..total {
        let mut r = [0u8; 32];
        r[..8].copy_from_slice(&(i % 1000).to_be_bytes());
        let mut b = body;
        b[..8].copy_from_slice(&i.to_be_bytes());
        store
            .insert(
                NewMessage::unsigned(
                    RecipientId(r),
                    Namespace::DIRECT,
                    &b,
                    now,
                    now.plus_millis(3_600_000),
                ),
                now,
            )
            .expect("fits");
        if (i + 1) % batch == 0 {
            store.backend_mut().commit().expect("commit");
        }
    }
    store.backend_mut().commit().expect("commit");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{total} stores of 200 bytes, commit every {batch}: {:.0} stores/s ({:.1} µs each)",
        total as f64 / secs,
        secs * 1e6 / total as f64
    );
    let started = Instant::now();
    let rounds = 1000u64;
    for i in 0..rounds {
        let mut r = [0u8; 32];
        r[..8].copy_from_slice(&(i % 1000).to_be_bytes());
        let page = store
            .retrieve(&RecipientId(r), Namespace::DIRECT, 0, 100, now)
            .expect("reads");
        assert_eq!(page.messages.len() as u64, (total / 1000).min(100));
    }
    println!(
        "retrieve 100 of {total}: {:.1} µs",
        started.elapsed().as_secs_f64() * 1e6 / rounds as f64
    );
    let size = std::fs::metadata(dir.path().join("messages.redb")).map_or(0, |m| m.len());
    println!("database file: {:.1} MB", size as f64 / 1e6);
}
