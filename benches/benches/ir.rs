//! Instruction counts (callgrind, via gungraun) of the hot paths, compared with the
//! committed baselines by `benches/check-instructions`. Setup — building packets, filling
//! stores — runs outside the measured function.

use std::hint::black_box;

use gungraun::{
    Callgrind, LibraryBenchmarkConfig, library_benchmark, library_benchmark_group, main,
};
use proto_core::keys::OnionKey;
use proto_core::packet::{self, PACKET_LEN};
use proto_core::replay::ReplayFilter;
use proto_core::ring::Ring;
use proto_core::store::{MemoryBackend, MessageStore, NewMessage};
use proto_core::{Namespace, NodeId, Timestamp};
use x25519_dalek::{PublicKey, StaticSecret};

mod common;

type PeelInput = (OnionKey, ReplayFilter<Vec<u64>>, Box<[u8; PACKET_LEN]>);

fn peel_setup() -> PeelInput {
    let (packet, _) = common::three_hop_packet(1);
    (
        common::relay_keys().remove(0),
        common::filter(),
        Box::new(packet),
    )
}

// One peel of a 3-hop packet at its first hop.
#[library_benchmark]
#[bench::first_hop(setup = peel_setup)]
fn peel(input: PeelInput) -> PeelInput {
    let (key, mut filter, mut packet) = input;
    let forwarded = packet::peel(&key, &mut filter, common::NOW, black_box(&mut packet)).is_ok();
    assert!(black_box(forwarded));
    (key, filter, packet)
}

fn dh_setup() -> (StaticSecret, PublicKey) {
    let peer = StaticSecret::from([9u8; 32]);
    (StaticSecret::from([3u8; 32]), PublicKey::from(&peer))
}

// One bare X25519 Diffie-Hellman: the floor a peel is compared with.
#[library_benchmark]
#[bench::x25519(setup = dh_setup)]
fn x25519(input: (StaticSecret, PublicKey)) -> [u8; 32] {
    let (secret, public) = input;
    black_box(*secret.diffie_hellman(black_box(&public)).as_bytes())
}

fn ring_setup(nodes: u32) -> Ring {
    common::ring(nodes)
}

// One swarm lookup (K = 3) on a ring of 100 nodes with 64 virtual nodes each.
#[library_benchmark]
#[bench::nodes_100(args = (100), setup = ring_setup)]
fn ring_lookup(ring: Ring) -> Ring {
    let mut out = [NodeId::default(); 3];
    black_box(ring.swarm(black_box(&common::recipient(42)), &mut out));
    ring
}

fn store_setup(n: u64) -> MessageStore<MemoryBackend> {
    common::filled_store(n, 1000)
}

// One insert into a store already holding 10,000 messages.
#[library_benchmark]
#[bench::into_10k(args = (10_000), setup = store_setup)]
fn store_insert(mut store: MessageStore<MemoryBackend>) -> MessageStore<MemoryBackend> {
    let now = common::NOW;
    let r = store.insert(
        NewMessage::unsigned(
            common::recipient(7),
            Namespace::DIRECT,
            black_box(b"a fresh message body of some length"),
            now,
            Timestamp(now.0 + 60_000),
        ),
        now,
    );
    assert!(black_box(r).is_ok());
    store
}

library_benchmark_group!(
    name = hot_path,
    benchmarks = [peel, x25519, ring_lookup, store_insert]
);

main!(
    config = LibraryBenchmarkConfig::default().tool(Callgrind::default().fail_fast(false)),
    library_benchmark_groups = hot_path
);
