//! Reply opening: arbitrary bytes never panic and never authenticate; arbitrary bodies
//! sealed by any hop are attributed to that hop.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use ghost_fuzz::FuzzRng;
use libfuzzer_sys::fuzz_target;
use proto_core::keys::OnionKey;
use proto_core::packet::{self, PACKET_LEN, PathHop, Peeled};
use proto_core::replay::{BUCKETS, ReplayFilter};
use proto_core::reply::{self, HopFailure, Opened, REPLY_BUCKETS, ReplyStatus};
use proto_core::{Epoch, NodeId, PathKeys, ReplyKey, Timestamp};

#[derive(Arbitrary, Debug)]
struct Input {
    garbage: Vec<u8>,
    bucket: u8,
    body: Vec<u8>,
    sealer: u8,
    code: u8,
}

const NOW: Timestamp = Timestamp(1_800_000_000_000);
/// The reply length the path asks for: room for the fuzzer's bodies.
const REPLY_LEN: usize = 4096;

/// A real 3-hop path, built once: the client's keys and each hop's.
fn path() -> &'static (PathKeys, Vec<ReplyKey>) {
    static PATH: OnceLock<(PathKeys, Vec<ReplyKey>)> = OnceLock::new();
    PATH.get_or_init(build_path)
}

fn build_path() -> (PathKeys, Vec<ReplyKey>) {
    let keys: Vec<OnionKey> = (1..=3u8)
        .map(|i| OnionKey::from_secret_bytes([i; 32], Epoch(1)))
        .collect();
    let hops: Vec<PathHop> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| PathHop {
            node: NodeId([i as u8; 32]),
            onion_key: k.public(),
        })
        .collect();
    let mut buf = [0u8; PACKET_LEN];
    let client = packet::build(
        &hops,
        b"q",
        NOW.plus_millis(10_000),
        REPLY_LEN,
        &mut FuzzRng(1),
        &mut buf,
    )
    .expect("valid");
    let mut hop_keys = Vec::new();
    for k in &keys {
        let mut f = ReplayFilter::new([0u64; BUCKETS * 2]).expect("valid shape");
        match packet::peel(k, &mut f, NOW, &mut buf).expect("honest") {
            Peeled::Forward { reply_key, .. } | Peeled::Deliver { reply_key, .. } => {
                hop_keys.push(reply_key)
            }
        }
    }
    (client, hop_keys)
}

fuzz_target!(|input: Input| {
    let (client, hop_keys) = path();
    let len = REPLY_BUCKETS[usize::from(input.bucket) % 2];
    let mut garbage = input.garbage.clone();
    garbage.resize(len, 0);
    assert!(reply::open(client.reply_keys(), &mut garbage).is_err());
    let mut any = input.garbage;
    let _ = reply::open(client.reply_keys(), &mut any);

    let sealer = usize::from(input.sealer) % 3;
    let body = &input.body[..input.body.len().min(3000)];
    let failure = HopFailure::NextHopTimeout;
    let status = if sealer == 2 && input.code % 2 == 0 {
        ReplyStatus::Response
    } else {
        ReplyStatus::Failed(failure)
    };
    let mut wire = vec![0u8; REPLY_LEN];
    reply::seal(&hop_keys[sealer], status, body, &mut wire).expect("fits");
    let wire = &mut wire[..];
    for k in hop_keys[..sealer].iter().rev() {
        reply::add_layer(k, wire, REPLY_LEN).expect("the length asked for");
    }
    let opened = reply::open(client.reply_keys(), wire).expect("authentic");
    match status {
        ReplyStatus::Response => assert_eq!(opened, Opened::Response { body }),
        ReplyStatus::Failed(f) => assert_eq!(
            opened,
            Opened::Failed {
                hop: sealer,
                failure: f,
                detail: body
            }
        ),
    }
});
