//! Wall-clock benches (criterion) of the onion packet path, the ring and the store.
//! Run: `cargo bench -p ghost-benches --bench wall`. Not run in CI (wall time is noisy
//! on shared machines); the CI gate is the instruction-count bench.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use proto_core::packet::{self, PACKET_LEN, Peeled};
use proto_core::reply::{self, ReplyKey, ReplyStatus};
use proto_core::store::{MemoryBackend, MessageStore, NewMessage, StoreConfig};
use proto_core::{Namespace, NodeId, Timestamp};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use x25519_dalek::{PublicKey, StaticSecret};

mod common;

fn onion(c: &mut Criterion) {
    let keys = common::relay_keys();
    let path = common::path(&keys);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    c.bench_function("build 3 hops, 1 KiB payload", |b| {
        let mut buf = [0u8; PACKET_LEN];
        b.iter(|| {
            packet::build(
                black_box(&path),
                &[7u8; 1024],
                common::NOW.plus_millis(60_000),
                1024,
                &mut rng,
                &mut buf,
            )
        })
    });

    let (packet, _) = common::three_hop_packet(2);
    c.bench_function("peel first hop of 3", |b| {
        b.iter_batched_ref(
            || (common::filter(), packet),
            |(filter, buf)| black_box(packet::peel(&keys[0], filter, common::NOW, buf).is_ok()),
            BatchSize::SmallInput,
        )
    });

    // Reply keys of a real path.
    let (mut buf, client) = common::three_hop_packet(3);
    let mut hop_keys: Vec<ReplyKey> = Vec::new();
    for k in &keys {
        let mut f = common::filter();
        match packet::peel(k, &mut f, common::NOW, &mut buf).expect("honest") {
            Peeled::Forward { reply_key, .. } | Peeled::Deliver { reply_key, .. } => {
                hop_keys.push(reply_key)
            }
        }
    }
    c.bench_function("reply: seal + 2 layers + open, 1 KiB", |b| {
        let mut wire = [0u8; 1024];
        b.iter(|| {
            reply::seal(&hop_keys[2], ReplyStatus::Response, b"stored", &mut wire).expect("fits");
            reply::add_layer(&hop_keys[1], &mut wire, 1024).expect("bucket");
            reply::add_layer(&hop_keys[0], &mut wire, 1024).expect("bucket");
            black_box(reply::open(client.reply_keys(), &mut wire).is_ok())
        })
    });

    let secret = StaticSecret::from([3u8; 32]);
    let public = PublicKey::from(&StaticSecret::from([9u8; 32]));
    c.bench_function("x25519 diffie-hellman", |b| {
        b.iter(|| black_box(*secret.diffie_hellman(black_box(&public)).as_bytes()))
    });
}

fn ring(c: &mut Criterion) {
    for nodes in [100u32, 10_000] {
        let ring = common::ring(nodes);
        let mut i = 0u64;
        c.bench_function(&format!("ring lookup, {nodes} nodes"), |b| {
            b.iter(|| {
                i += 1;
                let mut out = [NodeId::default(); 3];
                black_box(ring.swarm(&common::recipient(i), &mut out))
            })
        });
    }
}

/// Inserts per timed batch in the store insert benches; each batch is removed again,
/// untimed, so the store holds the same number of messages throughout.
const INSERT_BATCH: u64 = 10_000;

/// One insert into a store holding `held` messages (over `held / 10` recipients), the
/// store kept at that size: criterion's iterations are timed in batches of
/// [`INSERT_BATCH`] fresh messages (one hour shorter lived than those held), each batch
/// expired again untimed.
fn store_insert_holding(c: &mut Criterion, name: &str, held: u64) {
    let recipients = held / 10;
    let mut s = common::filled_store(held, recipients);
    let mut i = 0u64;
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let now = common::NOW;
            let mut timed = std::time::Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(INSERT_BATCH);
                let started = std::time::Instant::now();
                for _ in 0..n {
                    i += 1;
                    black_box(s.insert(
                        NewMessage::unsigned(
                            common::recipient(i % recipients),
                            Namespace::DIRECT,
                            &(i << 20).to_be_bytes(),
                            now,
                            now.plus_millis(60_000),
                        ),
                        now,
                    ))
                    .expect("fits");
                }
                timed += started.elapsed();
                let removed = s
                    .expire(now.plus_millis(60_000), usize::MAX)
                    .expect("memory");
                assert_eq!(removed as u64, n, "only the batch expires");
                let _ = s.take_changes();
                left -= n;
            }
            timed
        })
    });
}

fn store(c: &mut Criterion) {
    store_insert_holding(c, "store insert (100k held)", 100_000);
    store_insert_holding(c, "store insert (1M held)", 1_000_000);

    // 1,000,000 messages over 1,000 recipients: each recipient holds 1,000.
    let big = common::filled_store(1_000_000, 1_000);
    c.bench_function("retrieve 100 of 1,000,000 (one recipient of 1,000)", |b| {
        let mut r = 0u64;
        b.iter(|| {
            r = (r + 1) % 1000;
            let page = big
                .retrieve(
                    &common::recipient(r),
                    Namespace::DIRECT,
                    0,
                    100,
                    common::NOW,
                )
                .expect("memory");
            black_box(page.messages.len())
        })
    });
    drop(big);

    c.bench_function("expire 100,000 messages", |b| {
        b.iter_batched(
            || {
                let config = StoreConfig {
                    recipient_max_messages: u64::MAX,
                    ..StoreConfig::default()
                };
                let mut s = MessageStore::open(MemoryBackend::immediate(), config).expect("opens");
                for i in 0..100_000u64 {
                    let now = common::NOW;
                    s.insert(
                        NewMessage::unsigned(
                            common::recipient(i % 100),
                            Namespace::DIRECT,
                            &i.to_be_bytes(),
                            now,
                            now.plus_millis(1 + i % 1000),
                        ),
                        now,
                    )
                    .expect("fits");
                }
                s
            },
            |mut s| {
                black_box(
                    s.expire(Timestamp(common::NOW.0 + 10_000), 100_000)
                        .expect("memory"),
                )
            },
            BatchSize::PerIteration,
        )
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = onion, ring, store
}
criterion_main!(benches);
