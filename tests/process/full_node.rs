//! Three real node processes whose stores hold at most 5 messages, on smol, on blocking
//! threads and mixed: once full, a store is refused with a clear "node storage is full"
//! error, nothing beyond the limit is kept, and the recipient still retrieves every
//! acknowledged message.
//!
//! The binaries are found in `target/<profile>/` (see `common`): `cargo test
//! --workspace` builds them, since runtime-smol, runtime-sync and ghost-cli all have
//! integration tests; or build them first with `cargo build -p runtime-smol -p
//! runtime-sync -p ghost-cli --bins`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ghost_cli::client::{self, Cursors, RecipientKeys, seal_for};
use ghost_cli::local::LocalNetwork;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

mod common;
use common::{Runtime, messages_stored, plaintext_client, plaintext_get, start_plaintext_network};

/// `[store] node_max_messages` of every node.
const LIMIT: usize = 5;

common::runtime_tests!(full_node_refuses_stores_with_a_clear_error_and_keeps_serving_retrieves);

/// Polls until every node reports `count` messages stored (the third replica of an
/// acknowledged store may still be in flight); panics after 30 s.
fn wait_all_hold(net: &LocalNetwork, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in &net.nodes {
        loop {
            let held = messages_stored(&node.admin);
            if held == Some(count as u64) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} holds {held:?} messages, expected {count}",
                node.address
            );
            std::thread::sleep(common::POLL);
        }
    }
}

fn full_node_refuses_stores_with_a_clear_error_and_keeps_serving_retrieves(runtime: Runtime) {
    let root = tempfile::tempdir().unwrap();
    let net = start_plaintext_network(
        runtime,
        root.path(),
        3,
        &format!("[store]\nnode_max_messages = {LIMIT}\n"),
    );
    let client = plaintext_client(net.seed());
    assert_eq!(client.nodes().len(), 3);

    let keys = RecipientKeys::generate(&mut ChaCha20Rng::seed_from_u64(21));
    let recipient = keys.identity.recipient_id();
    // K = 3 and W = 2 on 3 nodes: every node holds every message, so all fill together.
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    for i in 0..=LIMIT + 1 {
        let text = format!("message {i}");
        let body = seal_for(&keys.contact(), text.as_bytes()).unwrap();
        match client.store(&recipient, &body) {
            Ok(_) => {
                acknowledged.push(text);
                wait_all_hold(&net, acknowledged.len());
            }
            Err(e) => {
                refusal = Some(e.to_string());
                break;
            }
        }
    }
    let refusal = refusal.expect("a store beyond node_max_messages is refused");
    assert!(!acknowledged.is_empty(), "stores succeed before the limit");
    assert_eq!(
        acknowledged.len(),
        LIMIT,
        "every store up to the limit succeeds, the next is refused: {refusal}"
    );
    assert!(
        refusal.contains("node storage is full"),
        "the refusal says the node is full: {refusal}"
    );

    // Nothing beyond the limit was kept anywhere.
    wait_all_hold(&net, LIMIT);

    // Retrieves keep working: the recipient reads every acknowledged message.
    let mut cursors = Cursors::default();
    let fetched = client.fetch(&keys.identity, &mut cursors).unwrap();
    let got: BTreeSet<String> = fetched
        .messages
        .iter()
        .map(|m| String::from_utf8(client::open_body(&keys, &m.body).unwrap()).unwrap())
        .collect();
    let want: BTreeSet<String> = acknowledged.into_iter().collect();
    assert_eq!(
        got, want,
        "a full node still serves every acknowledged message"
    );

    for node in &net.nodes {
        let health = plaintext_get(&node.address, "/health")
            .unwrap_or_else(|e| panic!("node {} unhealthy while full: {e}", node.address));
        assert!(
            String::from_utf8_lossy(&health).contains("\"status\":\"ok\""),
            "node {}: {}",
            node.address,
            String::from_utf8_lossy(&health)
        );
    }
}
