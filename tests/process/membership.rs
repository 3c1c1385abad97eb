//! Fake nodes cannot join for free: five real node processes on loopback (on smol, on
//! blocking threads, and mixed), three fake identities registered at addresses where
//! nothing answers and gossiped to every node again and again (by themselves and relayed
//! in others' names) while a client makes 100 stores to random recipients. The fakes are
//! never listed in any node's bootstrap or directory (so no client or node puts them in a
//! swarm), every store is acknowledged with receipts verified against the client's own
//! swarm, and every node counts failed probes.
//!
//! The binaries are found in `target/<profile>/` (see `common`): `cargo test
//! --workspace` builds them, since runtime-smol, runtime-sync and ghost-cli all have
//! integration tests; or build them first with `cargo build -p runtime-smol -p
//! runtime-sync -p ghost-cli --bins`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ghost_host::now;
use proto_core::keys::{Address, Descriptor, IdentityKey, OnionKey};
use proto_core::peer::PeerRequest;
use proto_core::{Epoch, NodeId, RecipientId};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

mod common;
use common::{Runtime, metric, plaintext_client, plaintext_get, start_plaintext_network};

const NODES: usize = 5;
const STORES: usize = 100;
/// Ports on loopback where nothing listens (below 1024, never handed out by the kernel
/// to the test's own nodes, which bind port 0).
const DEAD_ADDRESSES: [&str; 3] = ["127.0.0.1:9", "127.0.0.1:13", "127.0.0.1:17"];

common::runtime_tests!(fake_nodes_at_dead_addresses_are_never_listed_and_stores_keep_succeeding);

/// `POST path` with `body` (labelled `content_type` when given) on a connection of its
/// own; the answer's status, or `None` when there was no complete answer.
fn post(address: &str, path: &str, content_type: Option<&str>, body: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&address.parse().ok()?, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let label = content_type.map_or_else(String::new, |t| format!("Content-Type: {t}\r\n"));
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\n{label}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).ok()?;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace().nth(1)?.parse().ok()
}

fn register(address: &str, d: &Descriptor) -> Option<u16> {
    let mut buf = [0u8; proto_core::keys::MAX_DESCRIPTOR_LEN];
    let n = d.encode(&mut buf).ok()?;
    let body = format!("{{\"descriptor\":\"{}\"}}", hex::encode(&buf[..n]));
    post(
        address,
        "/v1/nodes/register",
        Some("application/json"),
        body.as_bytes(),
    )
}

/// Node IDs a node lists, in its bootstrap answer and its whole directory.
fn listed_ids(address: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for path in ["/v1/nodes/bootstrap", "/v1/nodes/directory"] {
        let body = plaintext_get(address, path).expect("the node answers its listings");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        for n in json["nodes"].as_array().expect("a node list") {
            ids.push(n["id"].as_str().expect("an id").to_owned());
        }
    }
    ids
}

fn fake_nodes_at_dead_addresses_are_never_listed_and_stores_keep_succeeding(runtime: Runtime) {
    let root = tempfile::tempdir().unwrap();
    let mut net = start_plaintext_network(runtime, root.path(), NODES, "");
    let addresses: Vec<String> = net.nodes.iter().map(|n| n.address.clone()).collect();

    let mut rng = ChaCha20Rng::seed_from_u64(77);
    let fakes: Vec<(IdentityKey, Descriptor)> = DEAD_ADDRESSES
        .iter()
        .enumerate()
        .map(|(i, address)| {
            let key = IdentityKey::from_seed(&[u8::try_from(i).unwrap() + 150; 32]);
            let d = Descriptor::sign(
                &key,
                &OnionKey::generate(Epoch(1), &mut rng),
                proto_core::TlsKeyHash([0x77; 32]),
                Address::new(address).unwrap(),
                now().plus_millis(3_600_000),
            );
            (key, d)
        })
        .collect();
    let fakes = Arc::new(fakes);
    let fake_ids: Vec<String> = fakes.iter().map(|(k, _)| k.node_id().to_string()).collect();
    for address in &addresses {
        for (_, d) in fakes.iter() {
            assert_eq!(register(address, d), Some(200), "registration at {address}");
        }
    }

    // The fakes keep announcing themselves, and one relays the others, until the stores
    // are done (bounded by a deadline in case they never are).
    let done = Arc::new(AtomicBool::new(false));
    let gossiper = {
        let done = Arc::clone(&done);
        let addresses = addresses.clone();
        let fakes = Arc::clone(&fakes);
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            let mut rounds = 0u32;
            while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                for (key, d) in fakes.iter() {
                    let all: Vec<_> = fakes.iter().map(|(_, x)| (*x).into()).collect();
                    for body in [
                        PeerRequest::Gossip(vec![(*d).into()]).encode_signed(key, now()),
                        PeerRequest::Gossip(all).encode_signed(key, now()),
                    ] {
                        for address in &addresses {
                            // As a node sends them: a signed binary envelope.
                            let _ = post(address, "/v1/peer", None, &body);
                        }
                    }
                    for address in &addresses {
                        let _ = register(address, d);
                    }
                }
                rounds += 1;
                std::thread::sleep(Duration::from_millis(300));
            }
            rounds
        })
    };

    let client = plaintext_client(net.seed());
    let mut checks = 0;
    for i in 0..STORES {
        let mut id = [0u8; 32];
        rng.fill_bytes(&mut id);
        let recipient = RecipientId(id);
        let body = format!("message {i} to a random recipient");
        let delivery = client
            .store(&recipient, body.as_bytes())
            .unwrap_or_else(|e| panic!("store {i} failed: {e}"));
        let swarm: Vec<NodeId> = client
            .swarm(&recipient)
            .unwrap()
            .iter()
            .map(Descriptor::node_id)
            .collect();
        assert!(
            delivery.ack.receipts.len() >= 2,
            "store {i}: fewer than W receipts"
        );
        assert!(
            delivery
                .ack
                .receipts
                .iter()
                .all(|r| swarm.contains(&r.node)),
            "store {i}: a receipt from outside the swarm"
        );
        if i % 10 == 0 {
            for address in &addresses {
                let listed = listed_ids(address);
                for fake in &fake_ids {
                    assert!(
                        !listed.contains(fake),
                        "{address} listed fake {fake} at store {i}"
                    );
                }
                assert!(
                    listed.len() >= 2 * NODES,
                    "{address} lists {} nodes",
                    listed.len()
                );
            }
            checks += 1;
        }
    }
    done.store(true, Ordering::Relaxed);
    let rounds = gossiper.join().unwrap();
    assert!(rounds >= 1, "the fakes never gossiped");
    assert_eq!(checks, STORES / 10);
    for (i, node) in net.nodes.iter().enumerate() {
        let failed = metric(&node.admin, "ghost_probes_failed_total").unwrap_or(0.0);
        assert!(failed >= 1.0, "node {i} never failed a probe of a fake");
        let peers = metric(&node.admin, "ghost_peers_known").unwrap_or(0.0);
        assert!(
            (peers - (NODES - 1) as f64).abs() < f64::EPSILON,
            "node {i} knows {peers} peers, not the {} real ones",
            NODES - 1
        );
    }
    plaintext_get(net.seed(), "/health").unwrap();
    net.stop();
}
