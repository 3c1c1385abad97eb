//! A single node state machine driven by hand: drops, limits, forwarding failures.
#![cfg(feature = "alloc")]

use std::net::{IpAddr, Ipv4Addr};

use proto_core::keys::{Address, Descriptor, IdentityKey, OnionKey, UnverifiedDescriptor};
use proto_core::node::{
    Endpoint, Node, NodeConfig, NodeKeys, Output, Reply, RequestId, TransmitFailure, TransmitId,
};
use proto_core::packet::{self, PACKET_LEN, PathHop};
use proto_core::peer::{self, PROBE_NONCE_LEN, PeerError, PeerRequest, PeerResponse, Session};
use proto_core::ratelimit::RateLimitConfig;
use proto_core::reply::{self, HopFailure, Opened};
use proto_core::store::MemoryBackend;
use proto_core::{Epoch, NodeId, PeelError, Timestamp};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const NOW: Timestamp = Timestamp(1_800_000_000_000);
/// Where peer requests come from in these tests (a stranger's address: the budget is
/// far above what a test sends).
const PEER_IP: IpAddr = IpAddr::V4(core::net::Ipv4Addr::new(198, 51, 100, 7));
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const OTHER_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

fn node(config: NodeConfig) -> (Node<MemoryBackend>, OnionKey) {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let onion_secret = [9u8; 32];
    let keys = NodeKeys {
        identity: IdentityKey::from_seed(&[1; 32]),
        onion: OnionKey::from_secret_bytes(onion_secret, Epoch(1)),
        tls_key_hash: proto_core::TlsKeyHash([0x77; 32]),
        address: Address::new("127.0.0.1:1").unwrap(),
    };
    let config = NodeConfig {
        replay_filter_words: proto_core::replay::BUCKETS * 64,
        ..config
    };
    let n = Node::new(
        config,
        keys,
        vec![],
        MemoryBackend::immediate(),
        NOW,
        &mut rng,
    )
    .unwrap();
    (n, OnionKey::from_secret_bytes(onion_secret, Epoch(1)))
}

fn drain(n: &mut Node<MemoryBackend>) -> Vec<Output> {
    std::iter::from_fn(|| n.poll_output()).collect()
}

fn only_reply(outputs: Vec<Output>, req: RequestId) -> Reply {
    let mut replies: Vec<Reply> = outputs
        .into_iter()
        .filter_map(|o| match o {
            Output::Respond { req: r, reply } if r == req => Some(reply),
            _ => None,
        })
        .collect();
    assert_eq!(replies.len(), 1, "exactly one answer per request");
    replies.remove(0)
}

#[test]
fn garbage_packet_is_dropped_silently_and_counted() {
    let (mut n, _) = node(NodeConfig::default());
    let mut junk = [0x5au8; PACKET_LEN];
    n.handle_onion(NOW, RequestId(1), CLIENT, &mut junk);
    assert_eq!(only_reply(drain(&mut n), RequestId(1)), Reply::Dropped);
    let bad_mac = PeelError::ALL
        .iter()
        .position(|e| *e == PeelError::BadMac)
        .unwrap();
    assert_eq!(n.stats().packets_dropped[bad_mac], 1);
}

#[test]
fn source_over_its_rate_is_refused_before_any_crypto() {
    let config = NodeConfig {
        source_rate: RateLimitConfig {
            burst: 2,
            per_second: 1,
            max_keys: 10,
        },
        ..NodeConfig::default()
    };
    let (mut n, _) = node(config);
    let mut replies = Vec::new();
    for i in 0..3 {
        let mut junk = [0u8; PACKET_LEN];
        n.handle_onion(NOW, RequestId(i), CLIENT, &mut junk);
        replies.push(only_reply(drain(&mut n), RequestId(i)));
    }
    assert_eq!(replies[2], Reply::RateLimited);
    assert_eq!(n.stats().rate_limited, 1);
    // Another source is unaffected.
    let mut junk = [0u8; PACKET_LEN];
    n.handle_onion(NOW, RequestId(9), OTHER_CLIENT, &mut junk);
    assert_eq!(only_reply(drain(&mut n), RequestId(9)), Reply::Dropped);
}

#[test]
fn a_known_node_address_gets_the_relay_budget_not_the_client_one() {
    let tight = RateLimitConfig {
        burst: 2,
        per_second: 1,
        max_keys: 10,
    };
    let config = NodeConfig {
        source_rate: tight.clone(),
        relay_rate: RateLimitConfig {
            burst: 100,
            ..tight
        },
        ..NodeConfig::default()
    };
    let (mut n, _) = node(config);
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let relay = Descriptor::sign(
        &IdentityKey::from_seed(&[5; 32]),
        &OnionKey::generate(Epoch(1), &mut rng),
        proto_core::TlsKeyHash([0x77; 32]),
        Address::new("10.0.0.9:7100").unwrap(),
        NOW.plus_millis(3_600_000),
    );
    n.handle_register(NOW, PEER_IP, UnverifiedDescriptor::from(relay))
        .expect("a valid descriptor registers");
    let relay_ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));
    // Registered but not yet proven: its address is a client's like any other.
    let mut junk = [0u8; PACKET_LEN];
    let early: Vec<Reply> = (200..203)
        .map(|i| {
            n.handle_onion(NOW, RequestId(i), relay_ip, &mut junk);
            only_reply(drain(&mut n), RequestId(i))
        })
        .collect();
    assert_eq!(
        early[2],
        Reply::RateLimited,
        "an unproven node got the relay budget"
    );
    n.handle_timeout(NOW);
    let relay_key = IdentityKey::from_seed(&[5; 32]);
    assert_eq!(
        answer_probes(&mut n, NOW, "10.0.0.9:7100", &relay_key, &relay),
        1
    );
    let mut answers = |source: IpAddr, first: u64| -> Vec<Reply> {
        (first..first + 5)
            .map(|i| {
                let mut junk = [0u8; PACKET_LEN];
                n.handle_onion(NOW, RequestId(i), source, &mut junk);
                only_reply(drain(&mut n), RequestId(i))
            })
            .collect()
    };
    // Five packets from the relay's address: all reach the peel (and are dropped as junk).
    assert!(answers(relay_ip, 0).iter().all(|r| *r == Reply::Dropped));
    // Five from a client: the burst of 2 passes, the rest are refused.
    let client = answers(CLIENT, 10);
    assert_eq!(
        client.iter().filter(|r| **r == Reply::RateLimited).count(),
        3
    );
}

fn packet_through(n_onion: &OnionKey, next: NodeId) -> ([u8; PACKET_LEN], packet::PathKeys) {
    packet_through_seeded(n_onion, next, 3)
}

/// [`packet_through`] with other ephemeral keys: another packet, not a replay.
fn packet_through_seeded(
    n_onion: &OnionKey,
    next: NodeId,
    seed: u64,
) -> ([u8; PACKET_LEN], packet::PathKeys) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let first = PathHop {
        node: IdentityKey::from_seed(&[1; 32]).node_id(),
        onion_key: n_onion.public(),
    };
    let second = PathHop {
        node: next,
        onion_key: OnionKey::from_secret_bytes([8; 32], Epoch(1)).public(),
    };
    let mut buf = [0u8; PACKET_LEN];
    let keys = packet::build(
        &[first, second],
        b"x",
        NOW.plus_millis(30_000),
        1024,
        &mut rng,
        &mut buf,
    )
    .unwrap();
    (buf, keys)
}

/// Makes the node know a next hop (through a gossip exchange from it); returns its ID.
fn learn_next_hop(n: &mut Node<MemoryBackend>) -> NodeId {
    let peer_id = IdentityKey::from_seed(&[2; 32]);
    let peer_onion = OnionKey::from_secret_bytes([8; 32], Epoch(1));
    let d = proto_core::Descriptor::sign(
        &peer_id,
        &peer_onion,
        proto_core::TlsKeyHash([0x77; 32]),
        Address::new("127.0.0.2:1").unwrap(),
        NOW.plus_millis(3_600_000),
    );
    let gossip = PeerRequest::Gossip(vec![d.into()]).encode_signed(&peer_id, NOW);
    n.handle_peer(NOW, RequestId(1), PEER_IP, Session::None, &gossip);
    drain(n);
    peer_id.node_id()
}

/// Which failure the client reads from the node's onion reply.
fn failure_seen_by_client(reply: Reply, keys: &packet::PathKeys) -> (usize, HopFailure) {
    let Reply::Onion(mut body) = reply else {
        panic!("expected an onion reply, got {reply:?}");
    };
    match reply::open(keys.reply_keys(), &mut body).unwrap() {
        Opened::Failed { hop, failure, .. } => (hop, failure),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn unknown_next_hop_is_reported_as_unreachable_by_this_hop() {
    let (mut n, onion) = node(NodeConfig::default());
    let (mut buf, keys) = packet_through(&onion, NodeId([77; 32]));
    n.handle_onion(NOW, RequestId(1), CLIENT, &mut buf);
    let reply = only_reply(drain(&mut n), RequestId(1));
    assert_eq!(
        failure_seen_by_client(reply, &keys),
        (0, HopFailure::NextHopUnreachable)
    );
}

#[test]
fn silent_next_hop_is_reported_as_a_timeout_after_the_forward_timeout() {
    let (mut n, onion) = node(NodeConfig::default());
    let next = learn_next_hop(&mut n);
    let (mut buf, keys) = packet_through(&onion, next);
    n.handle_onion(NOW, RequestId(2), CLIENT, &mut buf);
    let out = drain(&mut n);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Transmit {
            endpoint: Endpoint::Onion,
            ..
        }
    )));
    assert!(!out.iter().any(|o| matches!(
        o,
        Output::Respond {
            req: RequestId(2),
            ..
        }
    )));
    let deadline = n.poll_timeout().expect("a pending forward sets a deadline");
    assert!(deadline <= NOW.plus_millis(NodeConfig::default().forward_timeout_ms));
    n.handle_timeout(NOW.plus_millis(NodeConfig::default().forward_timeout_ms));
    let reply = only_reply(drain(&mut n), RequestId(2));
    assert_eq!(
        failure_seen_by_client(reply, &keys),
        (0, HopFailure::NextHopTimeout)
    );
}

#[test]
fn next_hop_answering_garbage_is_reported_as_a_bad_reply() {
    let (mut n, onion) = node(NodeConfig::default());
    let next = learn_next_hop(&mut n);
    let (mut buf, keys) = packet_through(&onion, next);
    n.handle_onion(NOW, RequestId(2), CLIENT, &mut buf);
    let id = drain(&mut n)
        .into_iter()
        .find_map(|o| match o {
            Output::Transmit { id, .. } => Some(id),
            _ => None,
        })
        .unwrap();
    n.handle_transmit_result(NOW, id, Ok(b"not a bucket".to_vec()));
    let reply = only_reply(drain(&mut n), RequestId(2));
    assert_eq!(
        failure_seen_by_client(reply, &keys),
        (0, HopFailure::NextHopBadReply)
    );
    // A late answer to an exchange already closed is ignored.
    n.handle_transmit_result(NOW, id, Err(TransmitFailure::Unreachable));
    assert!(drain(&mut n).is_empty());
}

/// Forwards a fresh packet (asking for a 1 KiB reply) to the known next hop `next` and
/// returns the exchange's id and the client's keys.
fn forwarded(
    n: &mut Node<MemoryBackend>,
    onion: &OnionKey,
    next: NodeId,
    req: u64,
) -> (TransmitId, packet::PathKeys) {
    let (mut buf, keys) = packet_through_seeded(onion, next, 1000 + req);
    n.handle_onion(NOW, RequestId(req), CLIENT, &mut buf);
    let id = drain(n)
        .into_iter()
        .find_map(|o| match o {
            Output::Transmit { id, .. } => Some(id),
            _ => None,
        })
        .expect("forwarded");
    (id, keys)
}

#[test]
fn a_reply_of_another_bucket_than_the_client_asked_for_is_not_passed_back() {
    let (mut n, onion) = node(NodeConfig::default());
    let next = learn_next_hop(&mut n);
    for (req, other) in [(10, 4096), (11, 16 * 1024), (12, 0)] {
        let (id, keys) = forwarded(&mut n, &onion, next, req);
        // A well-formed bucket, just not the one asked for (1 KiB): a hop marking the
        // reply by its length. Or nothing at all: the next hop dropped the packet.
        n.handle_transmit_result(NOW, id, Ok(vec![0x5a; other]));
        let reply = only_reply(drain(&mut n), RequestId(req));
        let Reply::Onion(ref body) = reply else {
            panic!("{reply:?}");
        };
        assert_eq!(
            body.len(),
            1024,
            "the failure comes back in the bucket asked for"
        );
        assert_eq!(
            failure_seen_by_client(reply, &keys),
            (0, HopFailure::NextHopBadReply)
        );
    }
    assert_eq!(n.stats().replies_refused, 3);
    // The bucket asked for is layered and passed back.
    let (id, _) = forwarded(&mut n, &onion, next, 13);
    n.handle_transmit_result(NOW, id, Ok(vec![0x5a; 1024]));
    let Reply::Onion(body) = only_reply(drain(&mut n), RequestId(13)) else {
        panic!("an onion reply");
    };
    assert_eq!(body.len(), 1024);
    assert_ne!(body, vec![0x5a; 1024], "layered");
    assert_eq!(n.stats().replies_refused, 3);
}

#[test]
fn a_next_hop_refusal_is_reported_as_such_not_as_unreachable() {
    let (mut n, onion) = node(NodeConfig::default());
    let next = learn_next_hop(&mut n);
    let (id, keys) = forwarded(&mut n, &onion, next, 14);
    n.handle_transmit_result(NOW, id, Err(TransmitFailure::Refused { status: 429 }));
    let reply = only_reply(drain(&mut n), RequestId(14));
    assert_eq!(
        failure_seen_by_client(reply, &keys),
        (0, HopFailure::NextHopRefused)
    );
}

#[test]
fn a_clock_stepping_back_does_not_reopen_a_replay_at_the_node() {
    let (mut n, onion) = node(NodeConfig::default());
    let next = learn_next_hop(&mut n);
    let (packet, _) = packet_through(&onion, next);
    let mut first = packet;
    n.handle_onion(NOW, RequestId(15), CLIENT, &mut first);
    drain(&mut n);
    let replayed = n.stats().packets_dropped;
    // The clock jumps back two minutes; the same packet arrives again.
    let mut again = packet;
    let back = Timestamp(NOW.0 - 120_000);
    n.handle_onion(back, RequestId(16), CLIENT, &mut again);
    assert_eq!(only_reply(drain(&mut n), RequestId(16)), Reply::Dropped);
    let i = PeelError::ALL
        .iter()
        .position(|e| *e == PeelError::Replayed)
        .unwrap();
    assert_eq!(n.stats().packets_dropped[i], replayed[i] + 1);
}

/// A one-hop packet to the node `to` under its onion key `onion`, built at `at`.
fn final_hop_packet(
    to: NodeId,
    onion: proto_core::keys::OnionPublicKey,
    at: Timestamp,
    seed: u64,
) -> [u8; PACKET_LEN] {
    let hop = PathHop {
        node: to,
        onion_key: onion,
    };
    let mut buf = [0u8; PACKET_LEN];
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let expiry = packet::grid_expiry(at, 30_000);
    packet::build(&[hop], b"x", expiry, 1024, &mut rng, &mut buf).unwrap();
    buf
}

/// Whether `n` peeled `packet` at `at` (rather than dropping it).
fn peels(n: &mut Node<MemoryBackend>, at: Timestamp, mut packet: [u8; PACKET_LEN]) -> bool {
    let before = n.stats().packets_peeled;
    n.handle_onion(at, RequestId(99), CLIENT, &mut packet);
    drain(n);
    n.stats().packets_peeled == before + 1
}

#[test]
fn the_onion_key_rotates_and_the_previous_one_works_only_for_its_grace_period() {
    let config = NodeConfig::default();
    let (rotation, grace) = (config.onion_key_rotation_ms, config.onion_key_grace_ms);
    let (mut n, first_key) = node(config);
    let (id, old) = (n.node_id(), first_key.public());
    let first = *n.descriptor();
    assert!(peels(&mut n, NOW, final_hop_packet(id, old, NOW, 1)));

    // Just before the period ends nothing changes; at its end a new key and descriptor.
    n.handle_timeout(NOW.plus_millis(rotation - 1));
    assert_eq!(n.descriptor().onion_key(), first.onion_key());
    let rotated_at = NOW.plus_millis(rotation);
    assert!(n.poll_timeout().is_some_and(|t| t <= rotated_at));
    n.handle_timeout(rotated_at);
    let second = *n.descriptor();
    let new = second.onion_key();
    assert_ne!(new, old);
    assert!(second.epoch() > first.epoch());
    assert!(second.is_valid_at(rotated_at));
    assert_eq!(n.stats().onion_keys_rotated, 1);
    drain(&mut n);

    // During the grace period a client holding the old descriptor still gets through, and
    // one holding the new one too.
    let late = rotated_at.plus_millis(grace - 60_000);
    assert!(peels(&mut n, late, final_hop_packet(id, old, late, 2)));
    assert!(peels(&mut n, late, final_hop_packet(id, new, late, 3)));

    // After it, the old key is gone: its packets fail the MAC like any stranger's.
    let after = rotated_at.plus_millis(grace);
    n.handle_timeout(after);
    let bad_mac = PeelError::ALL
        .iter()
        .position(|e| *e == PeelError::BadMac)
        .unwrap();
    let dropped = n.stats().packets_dropped[bad_mac];
    assert!(!peels(&mut n, after, final_hop_packet(id, old, after, 4)));
    assert_eq!(n.stats().packets_dropped[bad_mac], dropped + 1);
    assert!(peels(&mut n, after, final_hop_packet(id, new, after, 5)));
}

#[test]
fn peer_requests_from_strangers_or_garbage_are_refused_but_probes_are_answered() {
    let (mut n, _) = node(NodeConfig::default());
    let stranger = IdentityKey::from_seed(&[3; 32]);
    n.handle_peer(
        NOW,
        RequestId(1),
        PEER_IP,
        Session::None,
        &PeerRequest::Fetch(vec![]).encode_signed(&stranger, NOW),
    );
    n.handle_peer(NOW, RequestId(2), PEER_IP, Session::None, b"garbage");
    let nonce = [6; PROBE_NONCE_LEN];
    n.handle_peer(
        NOW,
        RequestId(3),
        PEER_IP,
        Session::None,
        &PeerRequest::Probe { nonce }.encode_signed(&stranger, NOW),
    );
    let out = drain(&mut n);
    let answers: Vec<Reply> = out
        .into_iter()
        .filter_map(|o| match o {
            Output::Respond { reply, .. } => Some(reply),
            Output::Transmit { .. } => None,
        })
        .collect();
    assert_eq!(answers.len(), 3);
    assert_eq!(answers[0], Reply::PeerRefused(PeerError::UnknownSender));
    assert_eq!(answers[1], Reply::PeerRefused(PeerError::Malformed));
    // A candidate probes its prober back, so a probe from a stranger is answered: with
    // this node's signature over the stranger's nonce and ID, good for nobody else.
    let Reply::Peer(bytes) = &answers[2] else {
        panic!("a probe gets a peer answer: {:?}", answers[2]);
    };
    let Ok(PeerResponse::Alive { signature, .. }) = PeerResponse::decode(bytes) else {
        panic!("expected Alive");
    };
    assert!(peer::verify_alive(
        &n.node_id(),
        &nonce,
        &stranger.node_id(),
        &signature
    ));
    assert!(!peer::verify_alive(
        &n.node_id(),
        &nonce,
        &n.node_id(),
        &signature
    ));
}

/// Answers every probe `n` has sent to `address` as `answerer` would (signing with its
/// own key); returns how many were answered.
fn answer_probes(
    n: &mut Node<MemoryBackend>,
    now: Timestamp,
    address: &str,
    answerer: &IdentityKey,
    descriptor: &Descriptor,
) -> usize {
    let probes: Vec<(TransmitId, Vec<u8>)> = drain(n)
        .into_iter()
        .filter_map(|o| match o {
            Output::Transmit {
                id,
                address: a,
                endpoint: Endpoint::Peer,
                body,
                ..
            } if a.as_str() == address => Some((id, body)),
            _ => None,
        })
        .collect();
    let mut answered = 0;
    for (id, body) in probes {
        let Ok(auth) = peer::decode_request(&body, now, 60_000, Session::None, |_| {
            Some(proto_core::TlsKeyHash::default())
        }) else {
            continue;
        };
        if let PeerRequest::Probe { nonce } = auth.request {
            let answer = PeerResponse::Alive {
                descriptor: Box::new((*descriptor).into()),
                signature: peer::prove_alive(answerer, &nonce, &auth.sender),
            };
            n.handle_transmit_result(now, id, Ok(answer.encode()));
            answered += 1;
        }
    }
    answered
}

fn listed(n: &Node<MemoryBackend>, now: Timestamp, id: &NodeId) -> bool {
    n.directory_page(now, None, 1000)
        .nodes
        .iter()
        .any(|d| d.node_id() == *id)
        || n.directory().contains(id)
}

#[test]
fn a_registered_node_is_listed_only_after_answering_a_probe_at_its_address() {
    let (mut n, _) = node(NodeConfig::default());
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let key = IdentityKey::from_seed(&[21; 32]);
    let d = Descriptor::sign(
        &key,
        &OnionKey::generate(Epoch(1), &mut rng),
        proto_core::TlsKeyHash([0x77; 32]),
        Address::new("10.0.0.21:7100").unwrap(),
        NOW.plus_millis(3_600_000),
    );
    n.handle_register(NOW, PEER_IP, d.into())
        .expect("registers");
    assert!(
        !listed(&n, NOW, &key.node_id()),
        "listed before proving itself"
    );
    assert!(
        n.swarm_of(&proto_core::RecipientId([1; 32]))
            .iter()
            .all(|m| m.node_id() != key.node_id())
    );
    // A replayed answer (signed over another nonce) or one for another prober proves
    // nothing.
    n.handle_timeout(NOW);
    let probes: Vec<(TransmitId, Vec<u8>)> = drain(&mut n)
        .into_iter()
        .filter_map(|o| match o {
            Output::Transmit { id, body, .. } => Some((id, body)),
            _ => None,
        })
        .collect();
    assert_eq!(probes.len(), 1, "the candidate is probed at once");
    let replayed = PeerResponse::Alive {
        descriptor: Box::new(d.into()),
        signature: peer::prove_alive(&key, &[0; PROBE_NONCE_LEN], &n.node_id()),
    };
    n.handle_transmit_result(NOW, probes[0].0, Ok(replayed.encode()));
    assert!(
        !listed(&n, NOW, &key.node_id()),
        "a replayed probe answer was accepted"
    );
    let retry = NOW.plus_millis(NodeConfig::default().directory.probe_interval_ms);
    n.handle_timeout(retry);
    assert_eq!(answer_probes(&mut n, retry, "10.0.0.21:7100", &key, &d), 1);
    assert!(listed(&n, retry, &key.node_id()));
}

#[test]
fn a_fake_identity_at_an_honest_nodes_address_is_evicted_and_stays_out() {
    let config = NodeConfig::default();
    let evict_after = config.directory.evict_after_ms;
    let probe_every = config.directory.probe_interval_ms;
    let (mut n, _) = node(config);
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let honest_key = IdentityKey::from_seed(&[31; 32]);
    let fake_key = IdentityKey::from_seed(&[32; 32]);
    let address = "10.0.0.31:7100";
    let honest = Descriptor::sign(
        &honest_key,
        &OnionKey::generate(Epoch(1), &mut rng),
        proto_core::TlsKeyHash([0x77; 32]),
        Address::new(address).unwrap(),
        NOW.plus_millis(3_600_000),
    );
    let fake = Descriptor::sign(
        &fake_key,
        &OnionKey::generate(Epoch(1), &mut rng),
        proto_core::TlsKeyHash([0x77; 32]),
        Address::new(address).unwrap(),
        NOW.plus_millis(3_600_000),
    );
    n.handle_register(NOW, PEER_IP, honest.into())
        .expect("registers");
    n.handle_timeout(NOW);
    answer_probes(&mut n, NOW, address, &honest_key, &honest);
    assert!(listed(&n, NOW, &honest_key.node_id()));

    // The fake keeps gossiping itself and being gossiped; every probe to its address
    // reaches the honest node, which answers with its own key.
    let mut t = NOW;
    let mut quarantined_seen = false;
    let end = NOW.plus_millis(3 * evict_after);
    let mut req = 100;
    while t <= end {
        let own = PeerRequest::Gossip(vec![fake.into()]).encode_signed(&fake_key, t);
        let relayed =
            PeerRequest::Gossip(vec![honest.into(), fake.into()]).encode_signed(&honest_key, t);
        // Its own gossip only every other round: in between, others repeat it.
        let gossip = if (req / 2) % 2 == 0 { own } else { relayed };
        n.handle_peer(t, RequestId(req), PEER_IP, Session::None, &gossip);
        req += 1;
        n.handle_timeout(t);
        answer_probes(&mut n, t, address, &honest_key, &honest);
        assert!(
            !listed(&n, t, &fake_key.node_id()),
            "the fake was listed at {}",
            t.0 - NOW.0
        );
        assert!(
            listed(&n, t, &honest_key.node_id()),
            "the honest node was lost at {}",
            t.0 - NOW.0
        );
        quarantined_seen |= n.directory().is_quarantined(&fake_key.node_id(), t);
        t = t.plus_millis(probe_every / 2);
    }
    assert!(quarantined_seen, "the fake was never evicted");
    assert!(n.stats().probes_failed > 0);
}

#[test]
fn a_flood_of_peer_requests_from_one_address_is_cut_off_before_any_signature_check() {
    let config = NodeConfig::default();
    let burst = u64::from(config.stranger_rate.burst);
    let (mut n, _) = node(config);
    let flooder = IdentityKey::from_seed(&[40; 32]);
    // Valid signatures would cost a check each; broken ones show the refusal comes first.
    let mut gossip = PeerRequest::Gossip(vec![]).encode_signed(&flooder, NOW);
    *gossip.last_mut().unwrap() ^= 1;
    let flood_ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 66));
    let answers: Vec<Reply> = (0..burst + 10)
        .map(|i| {
            n.handle_peer(NOW, RequestId(1000 + i), flood_ip, Session::None, &gossip);
            only_reply(drain(&mut n), RequestId(1000 + i))
        })
        .collect();
    let limited = answers
        .iter()
        .filter(|r| **r == Reply::PeerRefused(PeerError::RateLimited))
        .count();
    assert_eq!(limited, 10, "the burst passes, the rest is refused");
    assert!(
        answers[..usize::try_from(burst).unwrap()]
            .iter()
            .all(|r| *r == Reply::PeerRefused(PeerError::BadSignature))
    );
    assert_eq!(n.stats().peer_rate_limited, 10);
    // Another address is not affected, and the budget refills with time.
    n.handle_peer(NOW, RequestId(1), PEER_IP, Session::None, &gossip);
    assert_eq!(
        only_reply(drain(&mut n), RequestId(1)),
        Reply::PeerRefused(PeerError::BadSignature)
    );
    let later = NOW.plus_millis(1_000);
    let mut fresh = PeerRequest::Gossip(vec![]).encode_signed(&flooder, later);
    *fresh.last_mut().unwrap() ^= 1;
    n.handle_peer(later, RequestId(2), flood_ip, Session::None, &fresh);
    assert_eq!(
        only_reply(drain(&mut n), RequestId(2)),
        Reply::PeerRefused(PeerError::BadSignature)
    );
}

#[test]
fn a_closed_network_ignores_everyone_off_its_allowlist() {
    let member = IdentityKey::from_seed(&[50; 32]);
    let outsider = IdentityKey::from_seed(&[51; 32]);
    let mut config = NodeConfig::default();
    config.directory.allowlist = Some([member.node_id()].into_iter().collect());
    let (mut n, _) = node(config);
    let mut rng = ChaCha20Rng::seed_from_u64(50);
    let descriptor = |key: &IdentityKey, rng: &mut ChaCha20Rng| {
        Descriptor::sign(
            key,
            &OnionKey::generate(Epoch(1), rng),
            proto_core::TlsKeyHash([0x77; 32]),
            Address::new("10.0.0.50:7100").unwrap(),
            NOW.plus_millis(3_600_000),
        )
    };
    let theirs = descriptor(&outsider, &mut rng);
    let ours = descriptor(&member, &mut rng);
    n.handle_peer(
        NOW,
        RequestId(1),
        PEER_IP,
        Session::None,
        &PeerRequest::Gossip(vec![theirs.into()]).encode_signed(&outsider, NOW),
    );
    assert_eq!(
        only_reply(drain(&mut n), RequestId(1)),
        Reply::PeerRefused(PeerError::UnknownSender)
    );
    assert_eq!(
        n.handle_register(NOW, PEER_IP, theirs.into())
            .unwrap_err()
            .label(),
        "not_admitted"
    );
    // A member's gossip relaying the outsider admits only the member (as a candidate).
    n.handle_peer(
        NOW,
        RequestId(2),
        PEER_IP,
        Session::None,
        &PeerRequest::Gossip(vec![ours.into(), theirs.into()]).encode_signed(&member, NOW),
    );
    drain(&mut n);
    assert!(n.directory().holds(&member.node_id()));
    assert!(!n.directory().holds(&outsider.node_id()));
}

/// Runs `n`'s timers at `at`, answers its probes to the peer `answerer` at `address` (so
/// it stays live), and returns the kinds (second byte) of the other envelopes sent there:
/// gossip and probes are left out, they are always signed.
fn session_capable_envelopes(
    n: &mut Node<MemoryBackend>,
    at: Timestamp,
    answerer: &IdentityKey,
    descriptor: &Descriptor,
) -> Vec<u8> {
    n.handle_timeout(at);
    let address = descriptor.address().as_str();
    let mut kinds = Vec::new();
    for o in drain(n) {
        let Output::Transmit {
            id,
            address: a,
            endpoint: Endpoint::Peer,
            body,
            ..
        } = o
        else {
            continue;
        };
        if a.as_str() != address {
            continue;
        }
        let decoded = peer::decode_request(&body, at, 60_000, Session::None, |_| None);
        match decoded.map(|auth| auth.request) {
            Ok(PeerRequest::Probe { nonce }) => {
                let answer = PeerResponse::Alive {
                    descriptor: Box::new((*descriptor).into()),
                    signature: peer::prove_alive(answerer, &nonce, &n.node_id()),
                };
                n.handle_transmit_result(at, id, Ok(answer.encode()));
            }
            Ok(PeerRequest::Gossip(_)) => {}
            _ => kinds.push(body[1]),
        }
    }
    drain(n);
    kinds
}

/// [`session_capable_envelopes`] of every second from `from` to `to`.
fn envelopes_between(
    n: &mut Node<MemoryBackend>,
    from: Timestamp,
    to: Timestamp,
    answerer: &IdentityKey,
    descriptor: &Descriptor,
) -> Vec<u8> {
    let mut kinds = Vec::new();
    let mut at = from;
    while at <= to {
        kinds.extend(session_capable_envelopes(n, at, answerer, descriptor));
        at = at.plus_millis(1000);
    }
    kinds
}

#[test]
fn a_tls_key_rotation_publishes_the_new_pin_and_signs_envelopes_for_the_overlap() {
    let config = NodeConfig {
        session_authenticated_peers: true,
        ..NodeConfig::default()
    };
    let ae = config.anti_entropy_interval_ms;
    let (mut n, _) = node(config);
    let peer_key = IdentityKey::from_seed(&[2; 32]);
    let peer_id = learn_next_hop(&mut n);
    let peer_descriptor = *n.directory().get(&peer_id).expect("learned");
    envelopes_between(&mut n, NOW, NOW, &peer_key, &peer_descriptor);
    assert!(
        n.directory().contains(&peer_id),
        "the peer answered its probe"
    );

    // Before any rotation, anti-entropy rides the session: no signature.
    let mut at = NOW.plus_millis(ae);
    let kinds = envelopes_between(&mut n, NOW, at, &peer_key, &peer_descriptor);
    assert!(!kinds.is_empty(), "an anti-entropy round went to the peer");
    assert!(
        kinds.iter().all(|k| k & peer::KIND_SESSION != 0),
        "{kinds:?}"
    );

    // The host rotates: a new descriptor naming the new key, gossiped at once, later
    // expiry, same onion epoch; envelopes are signed until the overlap ends.
    let before = *n.descriptor();
    let new_pin = proto_core::TlsKeyHash([0x78; 32]);
    let overlap_until = at.plus_millis(ae + 5_000);
    n.rotate_tls_key(at, new_pin, overlap_until);
    let after = *n.descriptor();
    assert_eq!(after.tls_key_hash(), new_pin);
    assert_eq!(after.epoch(), before.epoch());
    assert!(after.supersedes(&before), "peers take the new descriptor");
    assert_eq!(n.stats().tls_keys_rotated, 1);
    assert!(
        n.poll_timeout().is_some_and(|t| t <= at),
        "gossip is due at once"
    );
    assert!(n.in_tls_key_overlap(at));

    let later = at.plus_millis(ae);
    let kinds = envelopes_between(
        &mut n,
        at.plus_millis(1000),
        later,
        &peer_key,
        &peer_descriptor,
    );
    assert!(!kinds.is_empty());
    assert!(
        kinds.iter().all(|k| k & peer::KIND_SESSION == 0),
        "{kinds:?}"
    );
    at = later;

    // Rotating to the key already published changes nothing but may extend the overlap
    // (a restart within an overlap does that).
    n.rotate_tls_key(at, new_pin, overlap_until);
    assert_eq!(*n.descriptor(), after);
    assert_eq!(n.stats().tls_keys_rotated, 1);

    // Once the overlap is over, sessions authenticate envelopes again.
    assert!(!n.in_tls_key_overlap(overlap_until));
    let kinds = envelopes_between(
        &mut n,
        overlap_until,
        overlap_until.plus_millis(ae),
        &peer_key,
        &peer_descriptor,
    );
    assert!(!kinds.is_empty());
    assert!(
        kinds.iter().all(|k| k & peer::KIND_SESSION != 0),
        "{kinds:?}"
    );
}
