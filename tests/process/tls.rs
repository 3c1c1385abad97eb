//! Links between real node processes are TLS by default: a three-node network on each
//! runtime and a mixed one. A client speaking plain HTTP to a node, or the CLI told to,
//! gets a clear refusal; a client pinned to another key than the node's descriptor names
//! is refused in the handshake; the CLI over TLS reads the directory and every node's
//! descriptor names the key its TLS server presents. Nodes rotating their TLS keys
//! every few seconds under a steady stream of stores lose nothing and break no link.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ghost_cli::client::{self, Client, Links};
use ghost_host::tls::TlsLinks;
use proto_core::TlsKeyHash;
use proto_core::client::ClientConfig;
use rand_core::SeedableRng;
use rustls::{ClientConnection, StreamOwned};

mod common;
use common::{Runtime, run_ghost, start_network};

const NODES: usize = 3;

common::runtime_tests!(
    plaintext_is_refused_by_name_and_pinned_tls_is_served,
    tls_keys_rotate_under_traffic_and_nothing_is_lost
);

/// Rotation every 6 s with a 3 s overlap (at least two gossip rounds of the local
/// network's 1 s).
const FAST_ROTATION: &str = "[http]\ntls_key_rotation_ms = 6000\ntls_key_overlap_ms = 3000\n";
/// Rotations every node must have made before the load stops.
const ROTATIONS: f64 = 2.0;
/// Longest the load runs, whatever happens.
const LOAD_LIMIT: Duration = Duration::from_secs(90);
/// Most stores the load makes.
const MAX_STORES: usize = 2_000;

/// The whole answer to `GET /health` at `address`, over TLS pinned to `pin`, or why the
/// handshake failed.
fn tls_health(address: &str, pin: TlsKeyHash) -> Result<String, String> {
    let dial = TlsLinks::for_client().dial(Some(pin));
    let conn = ClientConnection::new(dial.config, dial.name).map_err(|e| e.to_string())?;
    let sock = TcpStream::connect(address).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a timeout");
    let mut tls = StreamOwned::new(conn, sock);
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => Ok(String::from_utf8_lossy(&out).into_owned()),
        Err(_) if !out.is_empty() => Ok(String::from_utf8_lossy(&out).into_owned()),
        Err(e) => Err(e.to_string()),
    }
}

fn plaintext_is_refused_by_name_and_pinned_tls_is_served(runtime: Runtime) {
    let root = tempfile::tempdir().expect("a temporary directory");
    let net = start_network(runtime, root.path(), NODES);
    let seed = net.seed().to_owned();

    // The CLI's default links: TLS, the seed unpinned, every node after it pinned.
    let nodes = tls_client(&seed).nodes();
    assert_eq!(nodes.len(), NODES);

    for d in &nodes {
        let address = d.address().as_str();
        // Pinned to the descriptor's key: served.
        let answer = tls_health(address, d.tls_key_hash()).expect("the pinned key is served");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // Pinned to another key (what a client of a man in the middle would see): refused.
        let mut other = d.tls_key_hash();
        other.0[0] ^= 1;
        let refused = tls_health(address, other).expect_err("another key is refused");
        assert!(refused.contains("pinned tls_key_hash"), "{refused}");
        // Plain HTTP on the TLS listener: a 400 naming the problem, readable as HTTP.
        let mut plain = TcpStream::connect(address).expect("the node accepts");
        plain
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a timeout");
        plain
            .write_all(b"GET /health HTTP/1.1\r\nHost: n\r\n\r\n")
            .expect("sent");
        let mut text = String::new();
        let _ = plain.read_to_string(&mut text);
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert!(text.contains(r#""error":"tls_required""#), "{text}");
    }

    // Each node counted what it refused before any request: the plain request and the
    // handshake the client pinned to another key gave up.
    for node in &net.nodes {
        for reason in ["plaintext", "handshake_failed"] {
            let name = format!("ghost_tls_refused_total{{reason=\"{reason}\"}}");
            common::wait_for(&name, Duration::from_secs(10), || {
                common::metric(&node.admin, &name)
                    .filter(|n| *n >= 1.0)
                    .map(drop)
            });
        }
    }

    // The nodes' envelopes to each other ride their TLS sessions, unsigned: every node
    // took some (gossip and probes stay signed, replication and anti-entropy do not).
    let client = tls_client(&seed);
    let contact =
        client::RecipientKeys::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(5)).contact();
    let body = client::seal_for(&contact, b"replicated over sessions").expect("sealed");
    client
        .store(&contact.recipient, &body)
        .expect("stored over TLS");
    let session_total = || {
        net.nodes
            .iter()
            .filter_map(|n| common::metric(&n.admin, "ghost_peer_session_envelopes_total"))
            .sum::<f64>()
    };
    common::wait_for("session envelopes counted", Duration::from_secs(30), || {
        (session_total() > 0.0).then_some(())
    });

    // A plaintext client library and the CLI told to speak plain HTTP fail clearly.
    let refused = Client::with_links(&seed, ClientConfig::default(), Links::InsecurePlaintext);
    assert!(refused.is_err(), "a plaintext client gets no directory");
    let out = run_ghost(
        &["--insecure-plaintext", "nodes", "--via", &seed],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did not return the directory"), "{stderr}");
    // The same CLI over TLS (the default) lists the network.
    let out = run_ghost(&["nodes", "--via", &seed], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("{NODES} nodes known")), "{stdout}");
}

/// A client of the network at `seed` on the CLI's default links (TLS, pinned after the
/// seed), with the directory read.
fn tls_client(seed: &str) -> Client {
    Client::with_links(seed, ClientConfig::default(), client::default_links())
        .expect("the directory over TLS")
}

/// The sum of `name` over every node's metrics.
fn total(net: &ghost_cli::local::LocalNetwork, name: &str) -> f64 {
    net.nodes
        .iter()
        .filter_map(|n| common::metric(&n.admin, name))
        .sum()
}

/// The `tls_key_hash` of every node as the seed's directory lists it.
fn published_pins(seed: &str) -> BTreeSet<[u8; 32]> {
    tls_client(seed)
        .nodes()
        .iter()
        .map(|d| d.tls_key_hash().0)
        .collect()
}

fn tls_keys_rotate_under_traffic_and_nothing_is_lost(runtime: Runtime) {
    let root = tempfile::tempdir().expect("a temporary directory");
    let net = common::start_network_with(runtime, root.path(), NODES, FAST_ROTATION);
    let seed = net.seed().to_owned();
    let nodes = tls_client(&seed).nodes();
    let first_pins: BTreeSet<[u8; 32]> = nodes.iter().map(|d| d.tls_key_hash().0).collect();
    assert_eq!(first_pins.len(), NODES);

    // A store at a time, each from a client with a fresh directory (as each `ghost send`
    // is), until every node has rotated its key twice: no store may fail.
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(17);
    let recipients: Vec<client::RecipientKeys> = (0..3)
        .map(|_| client::RecipientKeys::generate(&mut rng))
        .collect();
    let mut sent: Vec<Vec<String>> = vec![Vec::new(); recipients.len()];
    let started = Instant::now();
    let rotated_everywhere = || {
        net.nodes.iter().all(|n| {
            common::metric(&n.admin, "ghost_tls_keys_rotated_total").is_some_and(|r| r >= ROTATIONS)
        })
    };
    let mut stores = 0;
    while !rotated_everywhere() {
        assert!(
            started.elapsed() < LOAD_LIMIT && stores < MAX_STORES,
            "every node rotates its TLS key {ROTATIONS} times within {LOAD_LIMIT:?}"
        );
        let r = stores % recipients.len();
        let text = format!("message {stores} during rotations");
        let contact = recipients[r].contact();
        let body = client::seal_for(&contact, text.as_bytes()).expect("sealed");
        let client = Client::with_links(&seed, ClientConfig::default(), client::default_links())
            .expect("the directory over TLS, whichever key the seed presents");
        client
            .store(&contact.recipient, &body)
            .unwrap_or_else(|e| panic!("store {stores} failed during TLS key rotations: {e}"));
        sent[r].push(text);
        stores += 1;
    }

    // Every node now publishes a key it did not start with.
    let pins_now = published_pins(&seed);
    assert!(
        pins_now.is_disjoint(&first_pins),
        "every descriptor names a new TLS key"
    );
    // No link between the nodes, or from the clients, failed a handshake: whoever pinned
    // the previous key was served it until they learnt the new one.
    assert_eq!(
        total(&net, "ghost_tls_refused_total{reason=\"handshake_failed\"}"),
        0.0,
        "no TLS handshake failed during the rotations"
    );

    // Every member of every swarm (all three nodes) holds every acknowledged message
    // exactly once: replication and anti-entropy ran over the rotated links.
    let reader = tls_client(&seed);
    for (r, keys) in recipients.iter().enumerate() {
        let mut want = sent[r].clone();
        want.sort();
        for member in &reader.nodes() {
            common::wait_for(
                "every message on every member",
                Duration::from_secs(60),
                || {
                    let mut cursors = client::Cursors::default();
                    let fetched = reader
                        .fetch_from(member, &keys.identity, &mut cursors)
                        .ok()?;
                    let mut got: Vec<String> = fetched
                        .messages
                        .iter()
                        .map(|m| {
                            let text = client::open_body(keys, &m.body).expect("the owner's");
                            String::from_utf8(text).expect("UTF-8")
                        })
                        .collect();
                    got.sort();
                    (got == want).then_some(())
                },
            );
        }
    }

    // Once their overlap is over, the keys the nodes started with are refused by name.
    for d in &nodes {
        let address = d.address().as_str();
        let old = d.tls_key_hash();
        common::wait_for("the first key retired", Duration::from_secs(30), || {
            tls_health(address, old)
                .err()
                .filter(|e| e.contains("pinned tls_key_hash"))
        });
    }

    // Between overlaps the nodes' envelopes ride their sessions again.
    let before = total(&net, "ghost_peer_session_envelopes_total");
    common::wait_for("session envelopes again", Duration::from_secs(60), || {
        (total(&net, "ghost_peer_session_envelopes_total") > before).then_some(())
    });
    println!(
        "{runtime:?}: {stores} stores acknowledged during {ROTATIONS} TLS key rotations per node in {:?}",
        started.elapsed()
    );
}
