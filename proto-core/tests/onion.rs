//! End-to-end properties of the onion packet: build → peel at every hop → reply back.

mod common;

use std::collections::HashSet;

use common::{EXPIRY, NOW, Relay, relays};
use proptest::prelude::*;
use proto_core::packet::{self, BuildError, MAX_HOPS, MAX_PAYLOAD, PACKET_LEN, PeelError, Peeled};
use proto_core::replay::EXPIRY_GRID_MS;
use proto_core::reply::{self, HopFailure, Opened, REPLY_BUCKETS, ReplyStatus};
use proto_core::{NodeId, ReplyKey};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Where a packet ended up after travelling the path.
struct Trip {
    /// The packet as each hop received it.
    arrivals: Vec<[u8; PACKET_LEN]>,
    /// Each hop's reply key, in path order.
    hop_reply_keys: Vec<ReplyKey>,
    delivered: Vec<u8>,
}

/// The reply length [`travel`] asks for: room for a body of up to 16 KiB minus 21 bytes.
const TRAVEL_REPLY_LEN: usize = 16 * 1024;

/// Sends `payload` through `path` (indices into `net`), asking for a reply of
/// [`TRAVEL_REPLY_LEN`], asserting each hop forwards to the next one, the last delivers
/// and every hop learns the reply length.
fn travel(
    net: &mut [Relay],
    path: &[usize],
    payload: &[u8],
    seed: u64,
) -> (Trip, packet::PathKeys) {
    let hops: Vec<_> = path.iter().map(|&i| net[i].hop()).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut buf = [0u8; PACKET_LEN];
    let keys = packet::build(&hops, payload, EXPIRY, TRAVEL_REPLY_LEN, &mut rng, &mut buf)
        .expect("valid path");
    let mut arrivals = Vec::new();
    let mut hop_reply_keys = Vec::new();
    for (pos, &i) in path.iter().enumerate() {
        arrivals.push(buf);
        let relay = &mut net[i];
        match relay.peel(NOW, &mut buf).expect("honest packet peels") {
            Peeled::Forward {
                next_hop,
                packet,
                reply_key,
                reply_len,
            } => {
                assert_eq!(reply_len, TRAVEL_REPLY_LEN);
                assert!(pos + 1 < path.len(), "hop {pos} forwarded past the end");
                assert_eq!(next_hop, hops[pos + 1].node);
                assert_eq!(packet.len(), PACKET_LEN);
                hop_reply_keys.push(reply_key);
            }
            Peeled::Deliver {
                payload: got,
                reply_key,
                reply_len,
            } => {
                assert_eq!(reply_len, TRAVEL_REPLY_LEN);
                assert_eq!(pos + 1, path.len(), "hop {pos} delivered early");
                hop_reply_keys.push(reply_key);
                let delivered = got.to_vec();
                return (
                    Trip {
                        arrivals,
                        hop_reply_keys,
                        delivered,
                    },
                    keys,
                );
            }
        }
    }
    unreachable!("the last hop always delivers or the test fails above");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_path_of_1_to_5_hops_delivers_the_payload(
        hops in 1usize..=MAX_HOPS,
        payload in proptest::collection::vec(any::<u8>(), 0..=MAX_PAYLOAD),
        seed in any::<u64>(),
    ) {
        let mut net = relays(MAX_HOPS as u8);
        let path: Vec<usize> = (0..hops).collect();
        let (trip, _) = travel(&mut net, &path, &payload, seed);
        prop_assert_eq!(trip.delivered, payload);
        prop_assert!(trip.arrivals.iter().all(|p| p.len() == PACKET_LEN));
    }

    #[test]
    fn response_unwraps_through_every_layer(
        hops in 1usize..=MAX_HOPS,
        body in proptest::collection::vec(any::<u8>(), 0..5000),
        seed in any::<u64>(),
    ) {
        let mut net = relays(MAX_HOPS as u8);
        let path: Vec<usize> = (0..hops).collect();
        let (trip, client) = travel(&mut net, &path, b"req", seed);
        let mut out = vec![0u8; TRAVEL_REPLY_LEN];
        let last = trip.hop_reply_keys.last().expect("at least one hop");
        reply::seal(last, ReplyStatus::Response, &body, &mut out).expect("fits");
        prop_assert!(REPLY_BUCKETS.contains(&out.len()));
        let wire = &mut out[..];
        for key in trip.hop_reply_keys[..hops - 1].iter().rev() {
            reply::add_layer(key, wire, TRAVEL_REPLY_LEN).expect("the length asked for");
        }
        let opened = reply::open(client.reply_keys(), wire).expect("authentic");
        prop_assert_eq!(opened, Opened::Response { body: &body });
    }

    #[test]
    fn hop_failure_is_attributed_to_the_failing_hop(
        hops in 2usize..=MAX_HOPS,
        failing in 0usize..MAX_HOPS,
        seed in any::<u64>(),
    ) {
        let failing = failing % hops;
        let mut net = relays(MAX_HOPS as u8);
        let path: Vec<usize> = (0..hops).collect();
        let (trip, client) = travel(&mut net, &path, b"req", seed);
        let mut out = vec![0u8; TRAVEL_REPLY_LEN];
        let status = ReplyStatus::Failed(HopFailure::NextHopTimeout);
        reply::seal(&trip.hop_reply_keys[failing], status, b"late", &mut out).expect("fits");
        for key in trip.hop_reply_keys[..failing].iter().rev() {
            reply::add_layer(key, &mut out, TRAVEL_REPLY_LEN).expect("the length asked for");
        }
        let opened = reply::open(client.reply_keys(), &mut out).expect("authentic");
        prop_assert_eq!(opened, Opened::Failed { hop: failing, failure: HopFailure::NextHopTimeout, detail: b"late" });
    }
}

#[test]
fn every_single_byte_change_is_dropped_at_the_first_hop_that_sees_it() {
    let mut net = relays(3);
    let (trip, _) = travel(&mut net, &[0, 1, 2], b"integrity", 7);
    let mut fresh = relays(3);
    for (hop, arrived) in trip.arrivals.iter().enumerate() {
        for pos in 0..PACKET_LEN {
            for flip in [0x01u8, 0x80] {
                let mut tampered = *arrived;
                tampered[pos] ^= flip;
                let relay = &mut fresh[hop];
                let got = relay.peel(NOW, &mut tampered);
                assert!(
                    matches!(got, Err(PeelError::BadMac | PeelError::SmallOrderKey)),
                    "hop {hop} accepted a flip of {flip:#x} at byte {pos}: {got:?}"
                );
            }
        }
    }
}

#[test]
fn replayed_packet_is_refused_within_window() {
    let mut net = relays(3);
    let hops: Vec<_> = net.iter().map(Relay::hop).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut original = [0u8; PACKET_LEN];
    packet::build(&hops, b"once", EXPIRY, 1024, &mut rng, &mut original).unwrap();
    let mut first = original;
    assert!(net[0].peel(NOW, &mut first).is_ok());
    let mut again = original;
    let later = proto_core::Timestamp(EXPIRY.0 - 1);
    assert_eq!(
        net[0].peel(later, &mut again).unwrap_err(),
        PeelError::Replayed
    );
    // A clock stepped back an hour does not reopen the window.
    let mut again = original;
    let back = proto_core::Timestamp(NOW.0 - 3_600_000);
    assert_eq!(
        net[0].peel(back, &mut again).unwrap_err(),
        PeelError::Replayed
    );
    // Another hop has its own filter and key: the same bytes are simply not for it.
    let mut elsewhere = original;
    assert_eq!(
        net[1].peel(NOW, &mut elsewhere).unwrap_err(),
        PeelError::BadMac
    );
}

#[test]
fn expired_packet_is_refused() {
    let mut net = relays(1);
    let hops = [net[0].hop()];
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let mut buf = [0u8; PACKET_LEN];
    packet::build(&hops, b"late", EXPIRY, 1024, &mut rng, &mut buf).unwrap();
    let after = proto_core::Timestamp(EXPIRY.0 + 1);
    assert_eq!(
        net[0].peel(after, &mut buf).unwrap_err(),
        PeelError::Expired
    );
}

#[test]
fn packet_valid_too_far_ahead_is_refused() {
    let mut net = relays(1);
    let hops = [net[0].hop()];
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut buf = [0u8; PACKET_LEN];
    let far = NOW.plus_millis(proto_core::replay::MAX_PACKET_LIFETIME_MS + EXPIRY_GRID_MS);
    packet::build(&hops, b"far", far, 1024, &mut rng, &mut buf).unwrap();
    assert_eq!(
        net[0].peel(NOW, &mut buf).unwrap_err(),
        PeelError::ExpiryTooFar
    );
}

#[test]
fn expiry_off_the_grid_is_refused_by_the_builder_and_dropped_by_a_hop() {
    let mut net = relays(1);
    let hops = [net[0].hop()];
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut buf = [0u8; PACKET_LEN];
    let off = NOW.plus_millis(20_001);
    assert_eq!(
        packet::build(&hops, b"off", off, 1024, &mut rng, &mut buf).unwrap_err(),
        BuildError::ExpiryOffGrid
    );
    // Hops drop what a builder that ignores the rule sends (packet.rs unit tests build
    // one below the public API); the helper puts clients on the grid.
    let on = packet::grid_expiry(NOW, 25_000);
    assert_eq!(on.0 % EXPIRY_GRID_MS, 0);
    assert!(on > NOW.plus_millis(15_000) && on <= NOW.plus_millis(25_000));
    let built_at = |t: u64| packet::grid_expiry(proto_core::Timestamp(NOW.0 + t), 25_000);
    // NOW + 25 s is mid-step: builds from NOW + 5 s to NOW + 15 s share one expiry.
    assert_eq!(
        built_at(5_000),
        built_at(5_000 + EXPIRY_GRID_MS - 1),
        "packets built within one grid step carry the same expiry"
    );
    assert_ne!(built_at(4_999), built_at(5_000));
    packet::build(&hops, b"on", on, 1024, &mut rng, &mut buf).unwrap();
    assert!(net[0].peel(NOW, &mut buf).is_ok());
}

#[test]
fn packet_size_is_the_same_for_every_hop_count_and_at_every_hop() {
    let mut sizes = HashSet::new();
    for hops in 1..=MAX_HOPS {
        let mut net = relays(MAX_HOPS as u8);
        let path: Vec<usize> = (0..hops).collect();
        let (trip, _) = travel(&mut net, &path, &[9u8; 100], hops as u64);
        sizes.extend(trip.arrivals.iter().map(|p| p.len()));
    }
    assert_eq!(sizes, HashSet::from([PACKET_LEN]));
}

#[test]
fn packet_entering_and_leaving_a_hop_share_no_16_byte_window() {
    let mut net = relays(MAX_HOPS as u8);
    let path: Vec<usize> = (0..MAX_HOPS).collect();
    // A payload of zeros is the worst case for a layer that failed to change something.
    let (trip, _) = travel(&mut net, &path, &[0u8; MAX_PAYLOAD], 11);
    for pair in trip.arrivals.windows(2) {
        let before: HashSet<&[u8]> = pair[0].windows(16).collect();
        let shared = pair[1].windows(16).filter(|w| before.contains(w)).count();
        assert_eq!(shared, 0, "{shared} 16-byte windows survived a hop");
    }
}

#[test]
fn different_paths_for_the_same_payload_look_unrelated_at_the_first_hop() {
    // Two builds of the same request differ everywhere (fresh ephemeral keys).
    let mut net = relays(3);
    let (a, _) = travel(&mut net, &[0, 1, 2], b"same", 100);
    let mut net = relays(3);
    let (b, _) = travel(&mut net, &[0, 1, 2], b"same", 101);
    let equal = a.arrivals[0]
        .iter()
        .zip(b.arrivals[0].iter())
        .filter(|(x, y)| x == y)
        .count();
    // About 1/256 of positions match by chance; anything near PACKET_LEN would be a leak.
    assert!(equal < PACKET_LEN / 64, "{equal} equal bytes");
}

#[test]
fn builder_refuses_bad_paths_and_payloads() {
    let net = relays(MAX_HOPS as u8 + 1);
    let hops: Vec<_> = net.iter().map(Relay::hop).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let mut buf = [0u8; PACKET_LEN];
    assert_eq!(
        packet::build(&[], b"", EXPIRY, 1024, &mut rng, &mut buf).unwrap_err(),
        BuildError::BadPathLength { hops: 0 }
    );
    assert_eq!(
        packet::build(&hops, b"", EXPIRY, 1024, &mut rng, &mut buf).unwrap_err(),
        BuildError::BadPathLength { hops: MAX_HOPS + 1 }
    );
    assert_eq!(
        packet::build(
            &hops[..3],
            &[0; MAX_PAYLOAD + 1],
            EXPIRY,
            1024,
            &mut rng,
            &mut buf
        )
        .unwrap_err(),
        BuildError::PayloadTooLarge {
            len: MAX_PAYLOAD + 1
        }
    );
    let mut bad = hops[0];
    bad.onion_key.0 = [0; 32];
    assert_eq!(
        packet::build(&[bad], b"", EXPIRY, 1024, &mut rng, &mut buf).unwrap_err(),
        BuildError::BadOnionKey { hop: 0 }
    );
    for len in [0, 1000, 2048, 1 << 20] {
        assert_eq!(
            packet::build(&hops[..3], b"", EXPIRY, len, &mut rng, &mut buf).unwrap_err(),
            BuildError::NotAReplyBucket { len }
        );
    }
}

#[test]
fn small_order_ephemeral_key_is_refused() {
    let mut net = relays(1);
    let mut buf = [0u8; PACKET_LEN];
    // eph_pk = 0 (the identity point) forces an all-zero shared secret.
    buf[16..48].fill(0);
    assert_eq!(
        net[0].peel(NOW, &mut buf).unwrap_err(),
        PeelError::SmallOrderKey
    );
}

#[test]
fn reply_of_wrong_size_or_corrupted_is_refused() {
    let mut net = relays(3);
    let (trip, client) = travel(&mut net, &[0, 1, 2], b"q", 5);
    let asked = TRAVEL_REPLY_LEN;
    let mut out = vec![0u8; asked];
    reply::seal(
        &trip.hop_reply_keys[2],
        ReplyStatus::Response,
        b"answer",
        &mut out,
    )
    .unwrap();
    reply::add_layer(&trip.hop_reply_keys[1], &mut out, asked).unwrap();
    reply::add_layer(&trip.hop_reply_keys[0], &mut out, asked).unwrap();
    let mut corrupted = out.clone();
    corrupted[500] ^= 1;
    assert_eq!(
        reply::open(client.reply_keys(), &mut corrupted),
        Err(reply::ReplyError::Unauthentic)
    );
    assert_eq!(
        reply::add_layer(&trip.hop_reply_keys[0], &mut out[..1000], asked),
        Err(reply::ReplyError::NotABucket { len: 1000 })
    );
    // A hop that answers in another bucket than the client asked for (to mark the
    // reply by its length) is not passed back: the previous hop refuses to layer it.
    for other in REPLY_BUCKETS.into_iter().filter(|&b| b != asked) {
        let mut marked = vec![0u8; other];
        reply::seal(
            &trip.hop_reply_keys[2],
            ReplyStatus::Response,
            b"m",
            &mut marked,
        )
        .unwrap();
        assert_eq!(
            reply::add_layer(&trip.hop_reply_keys[1], &mut marked, asked),
            Err(reply::ReplyError::NotABucket { len: other })
        );
    }
    // A relay cannot pass itself off as the final responder.
    let mut forged = vec![0u8; asked];
    reply::seal(
        &trip.hop_reply_keys[1],
        ReplyStatus::Response,
        b"fake",
        &mut forged,
    )
    .unwrap();
    reply::add_layer(&trip.hop_reply_keys[0], &mut forged, asked).unwrap();
    assert_eq!(
        reply::open(client.reply_keys(), &mut forged),
        Err(reply::ReplyError::Malformed { hop: 1 })
    );
}

#[test]
fn hop_cannot_tell_its_position_from_the_packet_it_forwards() {
    // The blob a hop emits is full-length and its tail is keystream: position 0 of a
    // 5-hop path and position 0 of a 2-hop path produce outputs of identical shape.
    let mut net = relays(MAX_HOPS as u8);
    let (long, _) = travel(&mut net, &[0, 1, 2, 3, 4], b"x", 21);
    let mut net = relays(MAX_HOPS as u8);
    let (short, _) = travel(&mut net, &[0, 1], b"x", 22);
    let zeros = |p: &[u8; PACKET_LEN]| p.iter().filter(|&&b| b == 0).count();
    // Neither arrival at hop 1 shows a run of structure (zeros ≈ 1/256 of bytes).
    assert!(zeros(&long.arrivals[1]) < 40);
    assert!(zeros(&short.arrivals[1]) < 40);
}

#[test]
fn next_hop_of_forward_is_the_one_the_client_chose() {
    let mut net = relays(4);
    let (trip, _) = travel(&mut net, &[3, 1, 0, 2], b"route", 9);
    assert_eq!(trip.delivered, b"route");
    assert_eq!(net[2].id, NodeId([0xA2; 32]));
}
