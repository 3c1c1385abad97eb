//! Five real node processes on loopback, once with every node on smol (`ghostnode`), once
//! on blocking threads (`ghostnode-sync`) and once mixed: 200 messages to 20 recipients
//! through true 3-hop paths, each retrieved exactly once by its owner. Then two more
//! clients on threads of their own keep storing while a swarm member is killed with
//! SIGKILL mid-load (stores in flight): the others
//! keep serving every acknowledged message, stores go on while it is down, and the killed
//! node restarts from its data directory and converges by anti-entropy. No acknowledged
//! message is lost: every store acknowledged with its receipts, before, during or after
//! the kill, is read exactly once. At the end SIGTERM stops every node cleanly.
//!
//! A store that failed (no quorum of receipts came back, e.g. its path or its swarm
//! member died under it) was never promised to anyone: it may or may not have landed, so
//! it is allowed to show up but never required, and never twice.
//!
//! The binaries are found in `target/<profile>/` (see `common`): `cargo test
//! --workspace` builds them, since runtime-smol, runtime-sync and ghost-cli all have
//! integration tests; or build them first with `cargo build -p runtime-smol -p
//! runtime-sync -p ghost-cli --bins`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ghost_cli::client::{self, Client, Cursors, RecipientKeys};
use proto_core::Descriptor;
use proto_core::request::MessageView;
use proto_core::sealed::Contact;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

mod common;
use common::{Runtime, messages_stored, start_network, terminate_cleanly, wait_for};

const NODES: usize = 5;
const RECIPIENTS: usize = 20;
const PER_RECIPIENT: usize = 10;
/// Store loops running while the swarm member is killed, each with a client of its own:
/// with two, a store is in flight at the kill whatever either loop is doing.
const LOADERS: usize = 2;
/// Most stores one loop makes (it is normally stopped long before).
const MAX_LOAD_STORES: usize = 2_000;
/// Longest a loop runs, whatever happens.
const LOAD_LIMIT: Duration = Duration::from_secs(300);

common::runtime_tests!(
    messages_survive_a_swarm_member_killed_mid_load_and_it_converges_after_restart
);

/// Everything `keys` can read from `member` from the start, decrypted, with duplicates
/// kept (so "exactly once" can be checked).
fn read_all(net: &Client, member: &Descriptor, keys: &RecipientKeys) -> Option<Vec<String>> {
    let mut cursors = Cursors::default();
    let fetched = net.fetch_from(member, &keys.identity, &mut cursors).ok()?;
    Some(open_all(keys, &fetched.messages))
}

fn open_all(keys: &RecipientKeys, messages: &[MessageView]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            let text = client::open_body(keys, &m.body).expect("only the owner's messages");
            String::from_utf8(text).expect("sent as UTF-8")
        })
        .collect()
}

/// Stores `text` for `contact` and checks it went through three distinct hops.
fn try_send(net: &Client, contact: &Contact, text: &str) -> Result<(), String> {
    let body = client::seal_for(contact, text.as_bytes()).unwrap();
    let delivery = net
        .store(&contact.recipient, &body)
        .map_err(|e| e.to_string())?;
    let distinct: BTreeSet<_> = delivery.path.iter().map(Descriptor::node_id).collect();
    assert_eq!(distinct.len(), 3, "a path has three distinct hops");
    Ok(())
}

fn send(net: &Client, keys: &RecipientKeys, text: &str) {
    try_send(net, &keys.contact(), text)
        .unwrap_or_else(|e| panic!("store of {text:?} failed: {e}"));
}

/// What a recipient was sent: the acknowledged messages, which must be read exactly once,
/// and the failed stores, which may be read (at most once) but need not.
#[derive(Clone, Debug, Default)]
struct Sent {
    acknowledged: Vec<String>,
    failed: Vec<String>,
}

impl Sent {
    /// Checks `got` (one member's or one fetch's messages, duplicates kept): nothing twice,
    /// nothing that was never sent. `Ok` with the acknowledged messages not there (none:
    /// complete).
    fn check(&self, got: &[String]) -> Result<Vec<String>, String> {
        let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
        for text in got {
            *counts.entry(text).or_default() += 1;
        }
        if let Some((text, n)) = counts.iter().find(|(_, n)| **n > 1) {
            return Err(format!("{text:?} read {n} times"));
        }
        if let Some(text) = got
            .iter()
            .find(|t| !self.acknowledged.contains(t) && !self.failed.contains(t))
        {
            return Err(format!("{text:?} was never sent"));
        }
        Ok(self
            .acknowledged
            .iter()
            .filter(|t| !counts.contains_key(t))
            .cloned()
            .collect())
    }
}

/// Shared between the test and its store loops.
#[derive(Default)]
struct LoadControl {
    /// The test asks the loops to end.
    stop: AtomicBool,
    /// Set just before the SIGKILL.
    killing: AtomicBool,
    /// Set once the victim is dead: stores started after it ran with the node down.
    killed: AtomicBool,
    acknowledged: AtomicUsize,
    acknowledged_while_down: AtomicUsize,
}

/// One store a loop made.
struct LoadStore {
    recipient: usize,
    text: String,
    /// `None` when acknowledged with W receipts, else the error.
    error: Option<String>,
    /// Started after the victim was killed.
    while_down: bool,
    /// Started before the SIGKILL and ended after it: in flight when the node died.
    across_the_kill: bool,
}

/// Loop `loader`: stores for every recipient in turn, each message once, with a client of
/// its own connected through `seed`, until told to stop; bounded by [`MAX_LOAD_STORES`]
/// and [`LOAD_LIMIT`].
fn store_loop(
    loader: usize,
    seed: &str,
    contacts: &[Contact],
    control: &LoadControl,
) -> Vec<LoadStore> {
    let client = Client::connect(seed).expect("the loader reaches the seed");
    let started = Instant::now();
    let mut stores = Vec::new();
    for k in 0..MAX_LOAD_STORES {
        if control.stop.load(Ordering::SeqCst) || started.elapsed() > LOAD_LIMIT {
            break;
        }
        let recipient = (k + loader) % contacts.len();
        let before_the_kill = !control.killing.load(Ordering::SeqCst);
        let while_down = control.killed.load(Ordering::SeqCst);
        let text = format!("loader {loader} store {k} for recipient {recipient}");
        let error = try_send(&client, &contacts[recipient], &text).err();
        let across_the_kill = before_the_kill && control.killed.load(Ordering::SeqCst);
        if error.is_none() {
            control.acknowledged.fetch_add(1, Ordering::SeqCst);
            if while_down {
                control
                    .acknowledged_while_down
                    .fetch_add(1, Ordering::SeqCst);
            }
        }
        stores.push(LoadStore {
            recipient,
            text,
            error,
            while_down,
            across_the_kill,
        });
    }
    stores
}

fn messages_survive_a_swarm_member_killed_mid_load_and_it_converges_after_restart(
    runtime: Runtime,
) {
    let root = tempfile::tempdir().unwrap();
    let mut net = start_network(runtime, root.path(), NODES);
    let client = Client::connect(net.seed()).unwrap();
    assert_eq!(client.nodes().len(), NODES);

    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let recipients: Vec<RecipientKeys> = (0..RECIPIENTS)
        .map(|_| RecipientKeys::generate(&mut rng))
        .collect();
    let mut sent: Vec<Sent> = vec![Sent::default(); RECIPIENTS];
    let started = Instant::now();
    for round in 0..PER_RECIPIENT {
        for (r, keys) in recipients.iter().enumerate() {
            let text = format!("message {round} for recipient {r}");
            send(&client, keys, &text);
            sent[r].acknowledged.push(text);
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
        let mut got = open_all(keys, &fetched.messages);
        got.sort();
        let mut want = sent[r].acknowledged.clone();
        want.sort();
        assert_eq!(got, want, "recipient {r} reads each message exactly once");
        let again = client.fetch(&keys.identity, &mut cursors).unwrap();
        assert!(
            again.messages.is_empty(),
            "a second fetch finds nothing new"
        );
    }
    println!(
        "{runtime:?}: stored {} messages through 3 hops in {stored_in:?}; every one read exactly once",
        RECIPIENTS * PER_RECIPIENT
    );

    // A swarm member of recipient 0 that is not the seed (clients bootstrap there).
    let victim_id = swarms[0]
        .iter()
        .map(|d| d.node_id().to_string())
        .find(|id| *id != net.nodes[0].id)
        .expect("a swarm of 3 has a member besides the seed");
    let victim = net.nodes.iter().position(|n| n.id == victim_id).unwrap();
    let in_victims_swarm = |r: usize| {
        swarms[r]
            .iter()
            .any(|d| d.node_id().to_string() == victim_id)
    };

    // Kill it with SIGKILL while other clients keep storing.
    let control = Arc::new(LoadControl::default());
    let contacts: Vec<Contact> = recipients.iter().map(RecipientKeys::contact).collect();
    let loaders: Vec<_> = (0..LOADERS)
        .map(|loader| {
            let seed = net.seed().to_owned();
            let contacts = contacts.clone();
            let control = Arc::clone(&control);
            std::thread::spawn(move || store_loop(loader, &seed, &contacts, &control))
        })
        .collect();
    let loader_running = |what: &str| {
        assert!(
            loaders.iter().all(|l| !l.is_finished()),
            "a store loop ended before {what} (it panicked or ran out of time)"
        );
    };
    wait_for(
        "the store loops acknowledging a round of stores",
        Duration::from_secs(120),
        || {
            loader_running("the kill");
            (control.acknowledged.load(Ordering::SeqCst) >= RECIPIENTS).then_some(())
        },
    );
    let acknowledged_at_kill = control.acknowledged.load(Ordering::SeqCst);
    control.killing.store(true, Ordering::SeqCst);
    net.kill(victim);
    control.killed.store(true, Ordering::SeqCst);
    // Stores go on while it is down; a round covers every recipient, so some of them are
    // for swarms it belongs to (recipient 0's at least).
    wait_for(
        &format!("the store loops acknowledging a round of stores with node {victim} down"),
        Duration::from_secs(120),
        || {
            loader_running("a round with the victim down");
            (control.acknowledged_while_down.load(Ordering::SeqCst) >= RECIPIENTS).then_some(())
        },
    );
    control.stop.store(true, Ordering::SeqCst);
    let load: Vec<LoadStore> = loaders
        .into_iter()
        .flat_map(|l| l.join().expect("the store loop ends without a panic"))
        .collect();
    let across_the_kill = load.iter().filter(|s| s.across_the_kill).count();

    let mut missed = 0;
    let mut failures = Vec::new();
    for store in &load {
        match &store.error {
            None => {
                sent[store.recipient].acknowledged.push(store.text.clone());
                if store.while_down && in_victims_swarm(store.recipient) {
                    missed += 1;
                }
            }
            Some(e) => {
                sent[store.recipient].failed.push(store.text.clone());
                failures.push(format!("{}: {e}", store.text));
            }
        }
    }
    assert!(
        missed > 0,
        "the victim belongs to at least recipient 0's swarm"
    );
    println!(
        "{runtime:?}: node {victim} killed mid-load after {acknowledged_at_kill} acknowledged stores, \
         with {across_the_kill} stores in flight; the loops made {} stores, {} acknowledged ({missed} \
         for the victim's swarms while it was down), {} failed: {failures:?}",
        load.len(),
        load.len() - failures.len(),
        failures.len()
    );

    // The others keep serving every acknowledged message.
    for (r, keys) in recipients.iter().enumerate() {
        wait_for(
            &format!("recipient {r}'s messages with node {victim} down"),
            Duration::from_secs(60),
            || {
                swarms[r]
                    .iter()
                    .filter(|d| d.node_id().to_string() != victim_id)
                    .find_map(|member| {
                        let got = read_all(&client, member, keys)?;
                        let missing = sent[r]
                            .check(&got)
                            .unwrap_or_else(|e| panic!("recipient {r} on a survivor: {e}"));
                        missing.is_empty().then_some(())
                    })
            },
        );
    }

    // Restart from the same data directory: it converges by anti-entropy. Its owners read
    // every acknowledged message of its swarms from the restarted node itself, exactly
    // once (and at most the failed stores besides).
    net.restart(victim).unwrap();
    net.wait_ready(Duration::from_secs(30)).unwrap();
    let converge_started = Instant::now();
    let client = Client::connect(net.seed()).unwrap();
    let restarted = *client
        .nodes()
        .iter()
        .find(|d| d.node_id().to_string() == victim_id)
        .expect("the restarted node is back in the directory");
    let its_recipients: Vec<usize> = (0..RECIPIENTS).filter(|&r| in_victims_swarm(r)).collect();
    assert!(!its_recipients.is_empty());
    wait_for(
        &format!("node {victim} serving every acknowledged message of its swarms"),
        Duration::from_secs(90),
        || {
            its_recipients.iter().try_for_each(|&r| {
                let got = read_all(&client, &restarted, &recipients[r])?;
                let missing = sent[r]
                    .check(&got)
                    .unwrap_or_else(|e| panic!("recipient {r} on the restarted node: {e}"));
                missing.is_empty().then_some(())
            })
        },
    );
    // It holds nothing else: the acknowledged messages of its swarms, and at most the
    // failed stores besides.
    let (least, most) = its_recipients
        .iter()
        .map(|&r| {
            let acknowledged = sent[r].acknowledged.len() as u64;
            (acknowledged, acknowledged + sent[r].failed.len() as u64)
        })
        .fold((0, 0), |(a, b), (x, y)| (a + x, b + y));
    let admin = net.nodes[victim].admin.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held = messages_stored(&admin);
        if held.is_some_and(|h| (least..=most).contains(&h)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {victim} holds {held:?} messages, not {least}..={most}"
        );
        std::thread::sleep(common::POLL);
    }
    println!(
        "{runtime:?}: node {victim} restarted and converged to {least} messages in {:?}",
        converge_started.elapsed()
    );

    // Every owner reads every acknowledged message exactly once, wherever it asks.
    for (r, keys) in recipients.iter().enumerate() {
        wait_for(
            &format!("recipient {r} reading all its acknowledged messages"),
            Duration::from_secs(30),
            || {
                let mut cursors = Cursors::default();
                let fetched = client.fetch(&keys.identity, &mut cursors).ok()?;
                let got = open_all(keys, &fetched.messages);
                let missing = sent[r]
                    .check(&got)
                    .unwrap_or_else(|e| panic!("recipient {r}: {e}"));
                let again = client.fetch(&keys.identity, &mut cursors).ok()?;
                assert!(
                    again.messages.is_empty(),
                    "a second fetch finds nothing new"
                );
                missing.is_empty().then_some(())
            },
        );
    }

    // SIGTERM: every node finishes, commits, closes its database and exits with 0.
    for i in 0..NODES {
        terminate_cleanly(&mut net, i);
    }
}
