//! A data directory written by one runtime is opened and served by the other: three node
//! processes of one runtime store messages for six recipients, every node holds all of
//! them, and every node stops gracefully (SIGTERM, exit 0, database committed and
//! closed). Then every node restarts from its own directory with the other runtime's
//! binary (a [`LocalNode`](ghost_cli::local::LocalNode) runs its `binary` again on a
//! restart). Its node ID is unchanged, it starts with every message in its database, and
//! every acknowledged message is fetched exactly once from each node, through an ordinary
//! fetch too. Both directions: smol to sync, sync to smol.
//!
//! The binaries are found in `target/<profile>/` (see `common`): `cargo test
//! --workspace` builds them, since runtime-smol, runtime-sync and ghost-cli all have
//! integration tests; or build them first with `cargo build -p runtime-smol -p
//! runtime-sync -p ghost-cli --bins`.

use std::time::Duration;

use ghost_cli::client::{self, Client, Cursors, RecipientKeys};
use ghost_cli::local::LocalNetwork;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

mod common;
use common::{Runtime, messages_stored, start_network, terminate_cleanly, wait_for};

const NODES: usize = 3;
const RECIPIENTS: usize = 6;
const PER_RECIPIENT: usize = 5;
const TOTAL: u64 = (RECIPIENTS * PER_RECIPIENT) as u64;

#[test]
fn a_data_directory_written_by_smol_is_served_by_sync() {
    hand_over(Runtime::Smol, Runtime::Sync);
}

#[test]
fn a_data_directory_written_by_sync_is_served_by_smol() {
    hand_over(Runtime::Sync, Runtime::Smol);
}

/// The `messages` count of the last "node started" line in node `i`'s log: what it found
/// in its database at start, before any anti-entropy.
fn messages_at_last_start(net: &LocalNetwork, i: usize) -> Option<u64> {
    let log = std::fs::read_to_string(net.nodes[i].dir.join("node.log")).ok()?;
    let line = log.lines().rev().find(|l| l.contains("node started"))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("messages="))?
        .parse()
        .ok()
}

/// Sorted plain texts of `fetched`, duplicates kept.
fn texts(keys: &RecipientKeys, fetched: &[proto_core::request::MessageView]) -> Vec<String> {
    let mut texts: Vec<String> = fetched
        .iter()
        .map(|m| String::from_utf8(client::open_body(keys, &m.body).unwrap()).unwrap())
        .collect();
    texts.sort();
    texts
}

fn hand_over(from: Runtime, to: Runtime) {
    let root = tempfile::tempdir().unwrap();
    let mut net = start_network(from, root.path(), NODES);
    let client = Client::connect(net.seed()).unwrap();

    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let recipients: Vec<RecipientKeys> = (0..RECIPIENTS)
        .map(|_| RecipientKeys::generate(&mut rng))
        .collect();
    let mut sent: Vec<Vec<String>> = vec![Vec::new(); RECIPIENTS];
    for round in 0..PER_RECIPIENT {
        for (r, keys) in recipients.iter().enumerate() {
            let text = format!("{from:?} wrote message {round} for recipient {r}");
            let body = client::seal_for(&keys.contact(), text.as_bytes()).unwrap();
            client
                .store(&keys.identity.recipient_id(), &body)
                .unwrap_or_else(|e| panic!("store of {text:?} on {from:?} failed: {e}"));
            sent[r].push(text);
        }
    }
    for want in &mut sent {
        want.sort();
    }
    // K = 3 on 3 nodes: every node holds every message once the third replicas land.
    for (i, node) in net.nodes.iter().enumerate() {
        wait_for(
            &format!("node {i} on {from:?} holding all {TOTAL} messages"),
            Duration::from_secs(30),
            || (messages_stored(&node.admin)? == TOTAL).then_some(()),
        );
    }
    let ids: Vec<String> = net.nodes.iter().map(|n| n.id.clone()).collect();
    for i in 0..NODES {
        terminate_cleanly(&mut net, i);
    }

    // Every node comes back from its own directory on the other runtime, seed first.
    for i in 0..NODES {
        net.nodes[i].binary = to.binary_for(i);
        net.restart(i)
            .unwrap_or_else(|e| panic!("node {i} restarting on {to:?}: {e}"));
        assert_eq!(
            messages_at_last_start(&net, i),
            Some(TOTAL),
            "node {i} on {to:?} finds every message in the database {from:?} wrote"
        );
    }
    net.wait_ready(Duration::from_secs(30)).unwrap();
    let now_ids: Vec<String> = net.nodes.iter().map(|n| n.id.clone()).collect();
    assert_eq!(now_ids, ids, "every node keeps its ID");
    for (i, node) in net.nodes.iter().enumerate() {
        assert_eq!(
            messages_stored(&node.admin),
            Some(TOTAL),
            "node {i} on {to:?} reports every message"
        );
    }

    // Each node serves each recipient every message exactly once, from its own database.
    let client = Client::connect(net.seed()).unwrap();
    let members = client.nodes();
    assert_eq!(members.len(), NODES);
    for (r, keys) in recipients.iter().enumerate() {
        for member in &members {
            let fetched = wait_for(
                &format!("recipient {r} reading from {} on {to:?}", member.node_id()),
                Duration::from_secs(30),
                || {
                    let mut cursors = Cursors::default();
                    client.fetch_from(member, &keys.identity, &mut cursors).ok()
                },
            );
            assert_eq!(
                texts(keys, &fetched.messages),
                sent[r],
                "recipient {r} reads each message exactly once from {} on {to:?}",
                member.node_id()
            );
        }
        let mut cursors = Cursors::default();
        let fetched = client.fetch(&keys.identity, &mut cursors).unwrap();
        assert_eq!(texts(keys, &fetched.messages), sent[r], "recipient {r}");
        let again = client.fetch(&keys.identity, &mut cursors).unwrap();
        assert!(
            again.messages.is_empty(),
            "a second fetch finds nothing new"
        );
    }

    for i in 0..NODES {
        terminate_cleanly(&mut net, i);
    }
}
