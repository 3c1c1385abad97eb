//! A single node state machine driven by hand: drops, limits, forwarding failures.
#![cfg(feature = "alloc")]

use std::net::{IpAddr, Ipv4Addr};

use proto_core::keys::{Address, Descriptor, IdentityKey, OnionKey, UnverifiedDescriptor};
use proto_core::node::{
    Endpoint, Node, NodeConfig, NodeKeys, Output, Reply, RequestId, TransmitFailure,
};
use proto_core::packet::{self, PACKET_LEN, PathHop};
use proto_core::peer::{PeerRequest, PeerResponse};
use proto_core::ratelimit::RateLimitConfig;
use proto_core::reply::{self, HopFailure, Opened};
use proto_core::store::MemoryBackend;
use proto_core::{Epoch, NodeId, PeelError, Timestamp};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const NOW: Timestamp = Timestamp(1_800_000_000_000);
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const OTHER_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

fn node(config: NodeConfig) -> (Node<MemoryBackend>, OnionKey) {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let onion_secret = [9u8; 32];
    let keys = NodeKeys {
        identity: IdentityKey::from_seed(&[1; 32]),
        onion: OnionKey::from_secret_bytes(onion_secret, Epoch(1)),
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
        Address::new("10.0.0.9:7100").unwrap(),
        NOW.plus_millis(3_600_000),
    );
    n.handle_register(NOW, UnverifiedDescriptor::from(relay))
        .expect("a valid descriptor registers");
    let relay_ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));
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
    let mut rng = ChaCha20Rng::seed_from_u64(3);
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
        Address::new("127.0.0.2:1").unwrap(),
        NOW.plus_millis(3_600_000),
    );
    let gossip = PeerRequest::Gossip(vec![d.into()]).encode_signed(&peer_id, NOW);
    n.handle_peer(NOW, RequestId(1), &gossip);
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

#[test]
fn peer_requests_from_strangers_or_garbage_are_refused() {
    let (mut n, _) = node(NodeConfig::default());
    let stranger = IdentityKey::from_seed(&[3; 32]);
    n.handle_peer(
        NOW,
        RequestId(1),
        &PeerRequest::Probe.encode_signed(&stranger, NOW),
    );
    n.handle_peer(NOW, RequestId(2), b"garbage");
    let out = drain(&mut n);
    let answers: Vec<Reply> = out
        .into_iter()
        .filter_map(|o| match o {
            Output::Respond { reply, .. } => Some(reply),
            Output::Transmit { .. } => None,
        })
        .collect();
    assert_eq!(
        answers,
        vec![
            Reply::Peer(PeerResponse::Refused(proto_core::peer::PeerError::UnknownSender).encode()),
            Reply::PeerRefused(proto_core::peer::PeerError::Malformed),
        ]
    );
}
