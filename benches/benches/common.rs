//! Fixtures shared by the wall-clock and instruction-count benches.
#![allow(dead_code)]

use proto_core::keys::OnionKey;
use proto_core::packet::{self, PACKET_LEN, PathHop, PathKeys};
use proto_core::replay::{BUCKETS, ReplayFilter};
use proto_core::ring::Ring;
use proto_core::store::{MemoryBackend, MessageStore, NewMessage, StoreConfig};
use proto_core::{Epoch, Namespace, NodeId, RecipientId, Timestamp};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

pub const NOW: Timestamp = Timestamp(1_800_000_000_000);

/// Three relays' onion keys.
pub fn relay_keys() -> Vec<OnionKey> {
    (1..=3u8)
        .map(|i| OnionKey::from_secret_bytes([i; 32], Epoch(1)))
        .collect()
}

pub fn path(keys: &[OnionKey]) -> Vec<PathHop> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| PathHop {
            node: NodeId([i as u8 + 1; 32]),
            onion_key: k.public(),
        })
        .collect()
}

/// A 3-hop packet with a 1 KiB payload, and the client's keys.
pub fn three_hop_packet(seed: u64) -> ([u8; PACKET_LEN], PathKeys) {
    let keys = relay_keys();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut buf = [0u8; PACKET_LEN];
    let client = packet::build(
        &path(&keys),
        &[7u8; 1024],
        NOW.plus_millis(60_000),
        1024,
        &mut rng,
        &mut buf,
    )
    .expect("valid path");
    (buf, client)
}

/// A replay filter big enough for any bench run.
pub fn filter() -> ReplayFilter<Vec<u64>> {
    ReplayFilter::new(vec![0u64; BUCKETS * 1024]).expect("valid shape")
}

pub fn node(i: u32) -> NodeId {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&i.to_be_bytes());
    NodeId(b)
}

pub fn recipient(i: u64) -> RecipientId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&i.to_be_bytes());
    b[8] = 0x5a;
    RecipientId(b)
}

pub fn ring(nodes: u32) -> Ring {
    let mut r = Ring::new(proto_core::ring::DEFAULT_VNODES);
    for i in 0..nodes {
        r.insert(node(i));
    }
    r
}

/// A store holding `n` messages spread over `recipients` recipients.
pub fn filled_store(n: u64, recipients: u64) -> MessageStore<MemoryBackend> {
    let config = StoreConfig {
        recipient_max_messages: u64::MAX,
        ..StoreConfig::default()
    };
    let mut s = MessageStore::open(MemoryBackend::immediate(), config).expect("memory opens");
    for i in 0..n {
        s.insert(
            NewMessage::unsigned(
                recipient(i % recipients),
                Namespace::DIRECT,
                &i.to_be_bytes(),
                NOW,
                NOW.plus_millis(3_600_000 + i),
            ),
            NOW,
        )
        .expect("within limits");
    }
    s
}
