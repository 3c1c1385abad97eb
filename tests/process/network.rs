//! Five real `ghostnode` processes on loopback: 200 messages to 20 recipients through
//! true 3-hop paths, each retrieved exactly once by its owner; then a swarm member is
//! killed with SIGKILL, the others keep serving every acknowledged message, and the
//! killed node restarts from its data directory and converges by anti-entropy; at the
//! end SIGTERM stops every node cleanly.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ghost_cli::client::{self, Client, Cursors, RecipientKeys};
use proto_core::Descriptor;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

mod processes;
use processes::{metric, start_network, wait_for};

const NODES: usize = 5;
const RECIPIENTS: usize = 20;
const PER_RECIPIENT: usize = 10;

/// Everything `keys` can read from `member` from the start, decrypted, with duplicates
/// kept (so "exactly once" can be checked).
fn read_all(net: &Client, member: &Descriptor, keys: &RecipientKeys) -> Option<Vec<String>> {
    let mut cursors = Cursors::default();
    let fetched = net.fetch_from(member, &keys.identity, &mut cursors).ok()?;
    Some(
        fetched
            .messages
            .iter()
            .map(|m| {
                let text = client::open_body(keys, &m.body).expect("only the owner's messages");
                String::from_utf8(text).expect("sent as UTF-8")
            })
            .collect(),
    )
}

fn messages_stored(admin: &str) -> Option<u64> {
    metric(admin, "ghost_messages_stored").map(|v| v as u64)
}

fn send(net: &Client, keys: &RecipientKeys, text: &str) {
    let body = client::seal_for(&keys.contact(), text.as_bytes()).unwrap();
    let delivery = net
        .store(&keys.identity.recipient_id(), &body)
        .unwrap_or_else(|e| panic!("store of {text:?} failed: {e}"));
    let distinct: BTreeSet<_> = delivery.path.iter().map(Descriptor::node_id).collect();
    assert_eq!(distinct.len(), 3, "a path has three distinct hops");
}

#[test]
fn messages_survive_a_killed_swarm_member_and_it_converges_after_restart() {
    let root = tempfile::tempdir().unwrap();
    let mut net = start_network(root.path(), NODES);
    let client = Client::connect(net.seed()).unwrap();
    assert_eq!(client.nodes().len(), NODES);

    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let recipients: Vec<RecipientKeys> = (0..RECIPIENTS)
        .map(|_| RecipientKeys::generate(&mut rng))
        .collect();
    let mut sent: Vec<Vec<String>> = vec![Vec::new(); RECIPIENTS];
    let started = Instant::now();
    for round in 0..PER_RECIPIENT {
        for (r, keys) in recipients.iter().enumerate() {
            let text = format!("message {round} for recipient {r}");
            send(&client, keys, &text);
            sent[r].push(text);
        }
    }
    let stored_in = started.elapsed();

    // Every owner reads each of its messages exactly once, and nothing else.
    let swarms: Vec<Vec<Descriptor>> = recipients
        .iter()
        .map(|k| client.swarm(&k.identity.recipient_id()).unwrap())
        .collect();
    for (r, keys) in recipients.iter().enumerate() {
        let mut cursors = Cursors::default();
        let fetched = client.fetch(&keys.identity, &mut cursors).unwrap();
        let mut got: Vec<String> = fetched
            .messages
            .iter()
            .map(|m| String::from_utf8(client::open_body(keys, &m.body).unwrap()).unwrap())
            .collect();
        got.sort();
        let mut want = sent[r].clone();
        want.sort();
        assert_eq!(got, want, "recipient {r} reads each message exactly once");
        let again = client.fetch(&keys.identity, &mut cursors).unwrap();
        assert!(
            again.messages.is_empty(),
            "a second fetch finds nothing new"
        );
    }
    println!(
        "stored {} messages through 3 hops in {stored_in:?}; every one read exactly once",
        RECIPIENTS * PER_RECIPIENT
    );

    // Kill a swarm member of recipient 0 that is not the seed (clients bootstrap there).
    let victim_id = swarms[0]
        .iter()
        .map(|d| d.node_id().to_string())
        .find(|id| *id != net.nodes[0].id)
        .expect("a swarm of 3 has a member besides the seed");
    let victim = net.nodes.iter().position(|n| n.id == victim_id).unwrap();
    net.kill(victim);

    // The others keep serving every acknowledged message.
    for (r, keys) in recipients.iter().enumerate() {
        let want: BTreeSet<&String> = sent[r].iter().collect();
        wait_for(
            &format!("recipient {r}'s messages with node {victim} down"),
            Duration::from_secs(60),
            || {
                swarms[r]
                    .iter()
                    .filter(|d| d.node_id().to_string() != victim_id)
                    .find_map(|member| {
                        let got = read_all(&client, member, keys)?;
                        let got: BTreeSet<&String> = got.iter().collect();
                        (got == want).then_some(())
                    })
            },
        );
    }

    // Stores go on while it is down; some of them are for swarms it belongs to.
    let mut missed = 0;
    for (r, keys) in recipients.iter().enumerate() {
        let text = format!("sent while node {victim} was down, for {r}");
        send(&client, keys, &text);
        sent[r].push(text);
        if swarms[r]
            .iter()
            .any(|d| d.node_id().to_string() == victim_id)
        {
            missed += 1;
        }
    }
    assert!(
        missed > 0,
        "the victim belongs to at least recipient 0's swarm"
    );

    // Restart from the same data directory: it converges by anti-entropy.
    net.restart(victim).unwrap();
    net.wait_ready(Duration::from_secs(30)).unwrap();
    let expected: u64 = swarms
        .iter()
        .zip(&sent)
        .filter(|(swarm, _)| swarm.iter().any(|d| d.node_id().to_string() == victim_id))
        .map(|(_, msgs)| msgs.len() as u64)
        .sum();
    let admin = net.nodes[victim].admin.clone();
    let converge_started = Instant::now();
    wait_for(
        &format!("node {victim} holding its {expected} messages"),
        Duration::from_secs(90),
        || (messages_stored(&admin)? == expected).then_some(()),
    );
    println!(
        "node {victim} restarted and converged to {expected} messages ({missed} stored while it was down) in {:?}",
        converge_started.elapsed()
    );

    // Its owners read everything from the restarted node itself, exactly once.
    let client = Client::connect(net.seed()).unwrap();
    let restarted = *client
        .nodes()
        .iter()
        .find(|d| d.node_id().to_string() == victim_id)
        .expect("the restarted node is back in the directory");
    let mut checked = 0;
    for (r, keys) in recipients.iter().enumerate() {
        if !swarms[r].iter().any(|d| d.node_id() == restarted.node_id()) {
            continue;
        }
        let got = wait_for(
            &format!("recipient {r} reading from the restarted node"),
            Duration::from_secs(30),
            || read_all(&client, &restarted, keys),
        );
        let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
        for text in &got {
            *counts.entry(text).or_default() += 1;
        }
        assert!(
            counts.values().all(|&n| n == 1),
            "no duplicates: {counts:?}"
        );
        let got: BTreeSet<&String> = got.iter().collect();
        let want: BTreeSet<&String> = sent[r].iter().collect();
        assert_eq!(got, want, "recipient {r} on the restarted node");
        checked += 1;
    }
    assert!(checked > 0);

    // SIGTERM: every node finishes, commits, closes its database and exits with 0.
    for i in 0..NODES {
        let status = net.terminate(i, Duration::from_secs(15)).expect("running");
        assert!(status.success(), "node {i} exited with {status}");
        let log = std::fs::read_to_string(net.nodes[i].dir.join("node.log")).unwrap();
        assert!(
            log.contains("database committed and closed"),
            "node {i}: {log}"
        );
    }
}
