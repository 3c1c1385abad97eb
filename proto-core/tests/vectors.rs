//! Test vectors: fixed keys and a fixed RNG stream give exact bytes, stored in
//! `tests/vectors/onion-v2.txt` and described in `docs/PROTOCOL.md`.
//!
//! Any change to the wire format or key schedule changes these bytes: that is a protocol
//! version change, and the file is regenerated deliberately with
//! `GHOST_UPDATE_VECTORS=1 cargo test -p proto-core --test vectors`.

mod common;

use std::fmt::Write as _;

use common::{CountingRngForTestVectorsOnly, EXPIRY, NOW, hex, matches_committed_file, relays};
use proto_core::packet::{self, PACKET_LEN, Peeled};
use proto_core::reply::{self, HopFailure, Opened, ReplyStatus};

const VECTOR_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/onion-v2.txt");
const PAYLOAD: &[u8] = b"ghostnodes test vector";
const RESPONSE: &[u8] = b"pong";
/// The reply length every vector packet asks for (bucket index 0).
const REPLY_LEN: usize = 1024;

/// Renders every vector, running the real builder, peel and reply code.
fn render() -> String {
    let mut out = String::new();
    writeln!(
        out,
        "# GhostNodes onion packet test vectors, protocol v2. See docs/PROTOCOL.md."
    )
    .unwrap();
    writeln!(
        out,
        "# Relay i (0-based): onion secret = 32 bytes of (i+1), node id = 32 bytes of (0xa0+i)."
    )
    .unwrap();
    writeln!(
        out,
        "# RNG stream: byte k = k mod 256, restarted for each vector."
    )
    .unwrap();
    writeln!(out, "now_ms = {}", NOW.0).unwrap();
    writeln!(out, "expiry_ms = {}", EXPIRY.0).unwrap();
    writeln!(out, "payload = {}", hex(PAYLOAD)).unwrap();
    writeln!(out, "response = {}", hex(RESPONSE)).unwrap();
    writeln!(out, "reply_len = {REPLY_LEN}").unwrap();
    for hops in [1usize, 3, 5] {
        let mut net = relays(hops as u8);
        let path: Vec<_> = net.iter().map(|r| r.hop()).collect();
        writeln!(out, "\n[hops = {hops}]").unwrap();
        for (i, r) in net.iter().enumerate() {
            writeln!(out, "onion_public_{i} = {}", hex(&r.key.public().0)).unwrap();
        }
        let mut rng = CountingRngForTestVectorsOnly(0);
        let mut buf = [0u8; PACKET_LEN];
        let client = packet::build(&path, PAYLOAD, EXPIRY, REPLY_LEN, &mut rng, &mut buf).unwrap();
        let mut hop_keys = Vec::new();
        for (i, relay) in net.iter_mut().enumerate() {
            writeln!(out, "packet_at_hop_{i} = {}", hex(&buf)).unwrap();
            match relay.peel(NOW, &mut buf).unwrap() {
                Peeled::Forward {
                    reply_key,
                    reply_len,
                    ..
                } => {
                    assert_eq!(reply_len, REPLY_LEN);
                    hop_keys.push(reply_key);
                }
                Peeled::Deliver {
                    payload,
                    reply_key,
                    reply_len,
                } => {
                    assert_eq!((payload, reply_len), (PAYLOAD, REPLY_LEN));
                    hop_keys.push(reply_key);
                }
            }
        }
        // Each hop's reply key, shown by what it seals: an empty failure "next hop
        // unreachable" (code 1), as a relay that cannot forward answers. The client's key
        // for the hop seals the same bytes.
        for (i, k) in hop_keys.iter().enumerate() {
            let failure = ReplyStatus::Failed(HopFailure::NextHopUnreachable);
            let mut sealed = vec![0u8; REPLY_LEN];
            reply::seal(k, failure, &[], &mut sealed).unwrap();
            let mut by_client = vec![0u8; REPLY_LEN];
            reply::seal(&client.reply_keys()[i], failure, &[], &mut by_client).unwrap();
            assert_eq!(
                sealed, by_client,
                "hop {i} and the client share the reply key"
            );
            writeln!(out, "failure_sealed_by_hop_{i} = {}", hex(&sealed)).unwrap();
        }
        if hops > 1 {
            // The last relay reports its next hop unreachable; the hops before it layer.
            let failing = hops - 2;
            let mut wire = vec![0u8; REPLY_LEN];
            let failure = ReplyStatus::Failed(HopFailure::NextHopUnreachable);
            reply::seal(&hop_keys[failing], failure, &[], &mut wire).unwrap();
            for k in hop_keys[..failing].iter().rev() {
                reply::add_layer(k, &mut wire, REPLY_LEN).unwrap();
            }
            writeln!(out, "failure_of_hop_{failing}_at_client = {}", hex(&wire)).unwrap();
            assert_eq!(
                reply::open(client.reply_keys(), &mut wire).unwrap(),
                Opened::Failed {
                    hop: failing,
                    failure: HopFailure::NextHopUnreachable,
                    detail: &[],
                }
            );
        }
        let mut wire = vec![0u8; REPLY_LEN];
        reply::seal(
            &hop_keys[hops - 1],
            ReplyStatus::Response,
            RESPONSE,
            &mut wire,
        )
        .unwrap();
        for k in hop_keys[..hops - 1].iter().rev() {
            reply::add_layer(k, &mut wire, REPLY_LEN).unwrap();
        }
        writeln!(out, "reply_at_client = {}", hex(&wire)).unwrap();
        assert_eq!(
            reply::open(client.reply_keys(), &mut wire).unwrap(),
            Opened::Response { body: RESPONSE }
        );
    }
    out
}

#[test]
fn vectors_match_the_committed_file() {
    matches_committed_file(
        VECTOR_FILE,
        &render(),
        "wire format or key schedule changed",
    );
}

#[test]
fn committed_vectors_peel_from_the_file_alone() {
    // Read the 3-hop packet from the file (not from the builder) and peel it: the file is
    // usable by another implementation without our builder.
    let committed = std::fs::read_to_string(VECTOR_FILE).expect("vector file present");
    let section = committed.split("[hops = 3]").nth(1).expect("3-hop section");
    let first = section
        .lines()
        .find_map(|l| l.strip_prefix("packet_at_hop_0 = "))
        .expect("packet_at_hop_0");
    let bytes: Vec<u8> = (0..first.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&first[i..i + 2], 16).unwrap())
        .collect();
    let mut buf: [u8; PACKET_LEN] = bytes.try_into().expect("PACKET_LEN bytes");
    let mut net = relays(3);
    for relay in &mut net {
        if let Peeled::Deliver { payload, .. } = relay.peel(NOW, &mut buf).unwrap() {
            assert_eq!(payload, PAYLOAD);
            return;
        }
    }
    panic!("the 3-hop vector never delivered");
}
