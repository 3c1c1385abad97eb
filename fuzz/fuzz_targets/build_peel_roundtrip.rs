//! Builder → peel round trip over arbitrary paths, payloads, expiries and randomness:
//! every hop forwards to the node the client chose, the last delivers exactly the
//! payload, and the reply comes back through every layer.
#![no_main]

use arbitrary::Arbitrary;
use ghost_fuzz::FuzzRng;
use libfuzzer_sys::fuzz_target;
use proto_core::keys::OnionKey;
use proto_core::packet::{self, MAX_HOPS, MAX_PAYLOAD, PACKET_LEN, PathHop, Peeled};
use proto_core::replay::{BUCKETS, EXPIRY_GRID_MS, MAX_PACKET_LIFETIME_MS, ReplayFilter};
use proto_core::reply::{self, Opened, REPLY_BUCKETS, ReplyStatus};
use proto_core::{Epoch, NodeId, ReplyKey, Timestamp};

#[derive(Arbitrary, Debug)]
struct Input {
    hops: u8,
    key_seeds: [[u8; 32]; MAX_HOPS],
    node_ids: [[u8; 32]; MAX_HOPS],
    payload: Vec<u8>,
    lifetime_ms: u32,
    rng_seed: u64,
    reply_bucket: u8,
    response: Vec<u8>,
}

const NOW: Timestamp = Timestamp(1_800_000_000_000);

fuzz_target!(|input: Input| {
    let hops = 1 + usize::from(input.hops) % MAX_HOPS;
    let keys: Vec<OnionKey> = input.key_seeds[..hops]
        .iter()
        .map(|s| OnionKey::from_secret_bytes(*s, Epoch(1)))
        .collect();
    let path: Vec<PathHop> = (0..hops)
        .map(|i| PathHop {
            node: NodeId(input.node_ids[i]),
            onion_key: keys[i].public(),
        })
        .collect();
    let payload = &input.payload[..input.payload.len().min(MAX_PAYLOAD)];
    let steps = MAX_PACKET_LIFETIME_MS / EXPIRY_GRID_MS + 1;
    let expiry = NOW.plus_millis(u64::from(input.lifetime_ms) % steps * EXPIRY_GRID_MS);
    let reply_len = REPLY_BUCKETS[usize::from(input.reply_bucket) % REPLY_BUCKETS.len()];
    let mut rng = FuzzRng(input.rng_seed);
    let mut buf = [0u8; PACKET_LEN];
    let Ok(client) = packet::build(&path, payload, expiry, reply_len, &mut rng, &mut buf) else {
        // Only a small-order onion key can fail here; clamped secrets never give one.
        return;
    };
    let mut hop_keys: Vec<ReplyKey> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let mut filter = ReplayFilter::new([0u64; BUCKETS * 8]).expect("valid shape");
        match packet::peel(key, &mut filter, NOW, &mut buf).expect("honest packets peel") {
            Peeled::Forward {
                next_hop,
                reply_key,
                reply_len: asked,
                ..
            } => {
                assert_eq!(asked, reply_len, "every hop learns the reply length");
                assert!(i + 1 < hops, "forwarded past the last hop");
                assert_eq!(next_hop, path[i + 1].node);
                hop_keys.push(reply_key);
            }
            Peeled::Deliver {
                payload: got,
                reply_key,
                reply_len: asked,
            } => {
                assert_eq!(asked, reply_len, "every hop learns the reply length");
                assert_eq!(i + 1, hops, "delivered early");
                assert_eq!(got, payload);
                hop_keys.push(reply_key);
            }
        }
    }
    let fits = reply::body_capacity(reply_len).min(8000);
    let response = &input.response[..input.response.len().min(fits)];
    let mut wire = vec![0u8; reply_len];
    reply::seal(
        &hop_keys[hops - 1],
        ReplyStatus::Response,
        response,
        &mut wire,
    )
    .expect("fits");
    let wire = &mut wire[..];
    for key in hop_keys[..hops - 1].iter().rev() {
        reply::add_layer(key, wire, reply_len).expect("the length asked for");
    }
    assert_eq!(
        reply::open(client.reply_keys(), wire),
        Ok(Opened::Response { body: response })
    );
});
