//! Routes one request through three relays in memory and brings the answer back,
//! printing what each hop sees. Run: `cargo run -p proto-core --example three_hops`.
//!
//! The relays, keys and randomness are seeded so the run is reproducible; a real client
//! draws its ephemeral keys from the operating system's RNG.

use proto_core::keys::OnionKey;
use proto_core::packet::{self, PACKET_LEN, PathHop, Peeled};
use proto_core::replay::{BUCKETS, ReplayFilter};
use proto_core::reply::{self, Opened, ReplyStatus};
use proto_core::{Epoch, NodeId, Timestamp};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const RELAY_NAMES: [&str; 3] = ["alpha", "bravo", "charlie"];

struct Relay {
    name: &'static str,
    id: NodeId,
    key: OnionKey,
    replay: ReplayFilter<Vec<u64>>,
}

fn main() {
    let mut rng = ChaCha20Rng::seed_from_u64(2026);
    let mut relays: Vec<Relay> = RELAY_NAMES
        .into_iter()
        .enumerate()
        .map(|(i, name)| Relay {
            name,
            id: NodeId([i as u8 + 1; 32]),
            key: OnionKey::generate(Epoch(1), &mut rng),
            replay: ReplayFilter::new(vec![0u64; BUCKETS * 64]).expect("valid filter shape"),
        })
        .collect();
    let path: Vec<PathHop> = relays
        .iter()
        .map(|r| PathHop {
            node: r.id,
            onion_key: r.key.public(),
        })
        .collect();

    let now = Timestamp(1_800_000_000_000);
    let request = b"store: hello through three hops";
    let mut buf = [0u8; PACKET_LEN];
    let expiry = packet::grid_expiry(now, 30_000);
    let reply_len = 1024;
    let client = packet::build(&path, request, expiry, reply_len, &mut rng, &mut buf)
        .expect("three hops and a short payload are valid");
    println!(
        "client: built a {PACKET_LEN}-byte packet for {} hops",
        path.len()
    );

    let mut reply_keys = Vec::new();
    for relay in &mut relays {
        let first = hex8(&buf);
        match packet::peel(&relay.key, &mut relay.replay, now, &mut buf) {
            Ok(Peeled::Forward {
                next_hop,
                reply_key,
                packet,
                ..
            }) => {
                let next = path
                    .iter()
                    .position(|h| h.node == next_hop)
                    .map_or("?", relay_name);
                println!(
                    "{:>8}: received {first}…, forwards {}… to {next}",
                    relay.name,
                    hex8(packet)
                );
                reply_keys.push(reply_key);
            }
            Ok(Peeled::Deliver {
                payload, reply_key, ..
            }) => {
                println!(
                    "{:>8}: received {first}…, delivers {:?}",
                    relay.name,
                    String::from_utf8_lossy(payload)
                );
                reply_keys.push(reply_key);
                break;
            }
            Err(e) => {
                println!("{:>8}: dropped the packet: {e}", relay.name);
                return;
            }
        }
    }

    // The reply is exactly the length the client asked for, whatever it says.
    let mut wire = vec![0u8; reply_len];
    reply::seal(
        reply_keys.last().expect("three hops"),
        ReplyStatus::Response,
        b"stored",
        &mut wire,
    )
    .expect("short body fits");
    let (len, wire) = (wire.len(), &mut wire[..]);
    // Every hop but the last adds its layer on the way back, nearest to the client last.
    let forwarders = reply_keys.len() - 1;
    for (key, relay) in reply_keys.iter().zip(&relays).take(forwarders).rev() {
        reply::add_layer(key, wire, reply_len).expect("the length asked for");
        println!("{:>8}: adds its layer to the {len}-byte reply", relay.name);
    }
    match reply::open(client.reply_keys(), wire) {
        Ok(Opened::Response { body }) => {
            println!("client: response {:?}", String::from_utf8_lossy(body))
        }
        other => println!("client: {other:?}"),
    }
}

fn relay_name(i: usize) -> &'static str {
    RELAY_NAMES[i]
}

fn hex8(bytes: &[u8]) -> String {
    bytes[..8].iter().map(|b| format!("{b:02x}")).collect()
}
