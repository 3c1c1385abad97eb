//! Links between real node processes are TLS by default: a three-node network on each
//! runtime and a mixed one. A client speaking plain HTTP to a node, or the CLI told to,
//! gets a clear refusal; a client pinned to another key than the node's descriptor names
//! is refused in the handshake; the CLI over TLS reads the directory and every node's
//! descriptor names the key its TLS server presents.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ghost_cli::client::{self, Client, Links};
use ghost_host::tls::TlsLinks;
use proto_core::TlsKeyHash;
use proto_core::client::ClientConfig;
use rand_core::SeedableRng;
use rustls::{ClientConnection, StreamOwned};

mod common;
use common::{Runtime, run_ghost, start_network};

const NODES: usize = 3;

common::runtime_tests!(plaintext_is_refused_by_name_and_pinned_tls_is_served);

/// The whole answer to `GET /health` at `address`, over TLS pinned to `pin`, or why the
/// handshake failed.
fn tls_health(address: &str, pin: TlsKeyHash) -> Result<String, String> {
    let config = TlsLinks::for_client().client_config(Some(pin));
    let conn = ClientConnection::new(config, ghost_host::tls::unused_server_name())
        .map_err(|e| e.to_string())?;
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
    let tls_client = Client::with_links(&seed, ClientConfig::default(), client::default_links())
        .expect("the directory over TLS");
    let nodes = tls_client.nodes();
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
    let client = Client::with_links(&seed, ClientConfig::default(), client::default_links())
        .expect("the directory over TLS");
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
