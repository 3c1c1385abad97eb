//! The blocking server's HTTP edges against a real node in-process, over raw sockets:
//! what hostile or unusual clients send, and what they must get back. HTTP framing is the
//! same inside TLS, so those run on a plaintext listener; the TLS listener's own edges
//! (pinned clients, a wrong pin, plain HTTP on it) come last.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use ghost_host::config::HttpSection;
use ghost_host::driver::now;
use ghost_host::redb_store::DatabaseOptions;
use ghost_host::write_behind::WriteBehind;
use proto_core::Epoch;
use proto_core::keys::{Address, IdentityKey, OnionKey};
use proto_core::node::{Node, NodeConfig, NodeKeys};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use runtime_sync::{InProcess, spawn_node};

use ghost_host::tls::{Links, TlsKey, TlsLinks};
use proto_core::TlsKeyHash;
use rustls::{ClientConnection, StreamOwned};
use std::sync::Arc;

struct Served {
    address: String,
    _node: InProcess,
    _dir: tempfile::TempDir,
}

/// The node's TLS key.
fn tls_key() -> TlsKey {
    TlsKey::from_secret_bytes(&[0x84; 32])
}

fn serve(http: HttpSection) -> Served {
    serve_over(http, Links::InsecurePlaintext)
}

fn serve_over(http: HttpSection, links: Links) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let keys = NodeKeys {
        identity: IdentityKey::from_seed(&[4; 32]),
        onion: OnionKey::generate(Epoch(1), &mut rng),
        tls_key_hash: TlsKeyHash(tls_key().key_hash()),
        address: Address::new(&address).unwrap(),
    };
    let backend = WriteBehind::open(
        &dir.path().join("messages.redb"),
        &DatabaseOptions::with_cache_bytes(1 << 20),
    )
    .unwrap();
    let node = Node::new(
        NodeConfig::default(),
        keys,
        Vec::new(),
        backend,
        now(),
        &mut rng,
    )
    .unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let node = spawn_node(node, http, links, listener, admin).unwrap();
    Served {
        address,
        _node: node,
        _dir: dir,
    }
}

/// Everything the server sends until it closes, or until `within` passes.
fn read_all(stream: &mut TcpStream, within: Duration) -> String {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn statuses(text: &str) -> Vec<&str> {
    text.match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect()
}

#[test]
fn a_client_that_half_closes_after_its_request_gets_the_answer() {
    let node = serve(HttpSection::default());
    let mut s = TcpStream::connect(&node.address).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let answer = read_all(&mut s, Duration::from_secs(10));
    assert_eq!(statuses(&answer), ["200"]);
    assert!(answer.ends_with(r#"{"status":"ok"}"#), "{answer}");
}

#[test]
fn pipelined_requests_are_answered_in_order_and_expect_continue_is_honoured() {
    let node = serve(HttpSection::default());
    let mut s = TcpStream::connect(&node.address).unwrap();
    s.write_all(
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let answer = read_all(&mut s, Duration::from_secs(10));
    assert_eq!(statuses(&answer), ["200", "404", "200"], "{answer}");
    assert!(answer.contains(r#""error":"unknown_route""#));

    // A packet of the wrong size, announced with Expect: the server asks for it first.
    let mut s = TcpStream::connect(&node.address).unwrap();
    s.write_all(b"POST /v1/onion HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut first = [0u8; 25];
    s.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"abc").unwrap();
    let answer = read_all(&mut s, Duration::from_secs(10));
    assert_eq!(statuses(&answer), ["400"]);
    assert!(
        answer.contains(r#""error":"wrong_packet_size""#),
        "{answer}"
    );
}

#[test]
fn chunked_bodies_are_decoded_and_capped() {
    let http = HttpSection {
        max_body_bytes: proto_core::PACKET_LEN,
        ..HttpSection::default()
    };
    let node = serve(http);
    let mut s = TcpStream::connect(&node.address).unwrap();
    s.write_all(b"POST /v1/onion HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        .unwrap();
    let answer = read_all(&mut s, Duration::from_secs(10));
    assert_eq!(statuses(&answer), ["400"]);
    assert!(
        answer.contains("got 5"),
        "decoded length reported: {answer}"
    );

    let mut s = TcpStream::connect(&node.address).unwrap();
    let chunk = vec![b'a'; 4096];
    s.write_all(
        b"POST /v1/onion HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n",
    )
    .unwrap();
    let _ = s.write_all(&chunk);
    let answer = read_all(&mut s, Duration::from_secs(10));
    assert_eq!(statuses(&answer), ["413"], "{answer}");
}

#[test]
fn oversized_or_ambiguous_requests_are_refused_before_their_body_is_read() {
    let node = serve(HttpSection::default());
    // Announced too large: refused at once, nothing of the body sent.
    let mut s = TcpStream::connect(&node.address).unwrap();
    s.write_all(b"POST /v1/peer HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n")
        .unwrap();
    let answer = read_all(&mut s, Duration::from_secs(10));
    assert_eq!(statuses(&answer), ["413"]);
    assert!(answer.contains(r#""error":"body_too_large""#));
    // A head that never ends: 431, not unbounded memory.
    let mut s = TcpStream::connect(&node.address).unwrap();
    let _ = s.write_all(b"GET /health HTTP/1.1\r\nX-Long: ");
    let _ = s.write_all(&vec![b'a'; 64 * 1024]);
    let answer = read_all(&mut s, Duration::from_secs(10));
    assert_eq!(statuses(&answer), ["431"], "{answer}");
    // Two framings at once (request smuggling): refused.
    let mut s = TcpStream::connect(&node.address).unwrap();
    s.write_all(b"POST /v1/peer HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        .unwrap();
    let answer = read_all(&mut s, Duration::from_secs(10));
    assert_eq!(statuses(&answer), ["400"]);
    assert!(answer.contains(r#""error":"malformed_request""#));
}

#[test]
fn slow_heads_and_bodies_are_cut_off_at_their_timeouts() {
    let http = HttpSection {
        header_timeout_ms: 300,
        body_timeout_ms: 300,
        ..HttpSection::default()
    };
    let node = serve(http);
    // A head trickling in: the connection is closed without an answer.
    let mut s = TcpStream::connect(&node.address).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    let answer = read_all(&mut s, Duration::from_secs(10));
    assert!(answer.is_empty(), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "closed by the server, not by us"
    );
    // A body that never comes: 408 with the JSON error.
    let mut s = TcpStream::connect(&node.address).unwrap();
    s.write_all(b"POST /v1/peer HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        .unwrap();
    let answer = read_all(&mut s, Duration::from_secs(10));
    assert_eq!(statuses(&answer), ["408"]);
    assert!(answer.contains(r#""error":"body_timeout""#));
}

#[test]
fn one_address_gets_at_most_its_connections_and_the_rest_are_closed_unread() {
    let http = HttpSection {
        max_connections_per_address: 2,
        ..HttpSection::default()
    };
    let node = serve(http);
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(&node.address).unwrap())
        .collect();
    // Wait until both are being served (the third is then refused), polling with a deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut extra = TcpStream::connect(&node.address).unwrap();
        let _ = extra.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        if read_all(&mut extra, Duration::from_secs(5)).is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a third connection was still served"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = TcpStream::connect(&node.address).unwrap();
        let _ = again.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        if statuses(&read_all(&mut again, Duration::from_secs(5))) == ["200"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the address was never served again"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn serve_tls() -> Served {
    let links = Links::Tls(Arc::new(TlsLinks::for_node(tls_key()).unwrap()));
    serve_over(HttpSection::default(), links)
}

/// `GET /health` over TLS pinned to `pin`: the whole answer, or the handshake's error.
fn tls_health(address: &str, pin: [u8; 32]) -> Result<String, String> {
    let dial = TlsLinks::for_client().dial(Some(TlsKeyHash(pin)));
    let conn = ClientConnection::new(dial.config, dial.name).map_err(|e| e.to_string())?;
    let sock = TcpStream::connect(address).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = StreamOwned::new(conn, sock);
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => Ok(String::from_utf8_lossy(&out).into_owned()),
        // An answer followed by a close without close_notify is still the answer.
        Err(_) if !out.is_empty() => Ok(String::from_utf8_lossy(&out).into_owned()),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn a_tls_listener_serves_a_pinned_client_and_refuses_a_wrong_pin() {
    let node = serve_tls();
    let answer = tls_health(&node.address, tls_key().key_hash()).expect("pinned TLS works");
    assert_eq!(statuses(&answer), ["200"], "{answer}");
    assert!(answer.ends_with(r#"{"status":"ok"}"#), "{answer}");
    let other = TlsKey::from_secret_bytes(&[0x99; 32]).key_hash();
    let refused = tls_health(&node.address, other).expect_err("another key is refused");
    assert!(refused.contains("pinned tls_key_hash"), "{refused}");
}

#[test]
fn plain_http_on_a_tls_listener_gets_a_json_400_naming_tls() {
    let node = serve_tls();
    let mut s = TcpStream::connect(&node.address).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let answer = read_all(&mut s, Duration::from_secs(10));
    assert_eq!(statuses(&answer), ["400"], "{answer}");
    assert!(answer.contains(r#""error":"tls_required""#), "{answer}");
}
