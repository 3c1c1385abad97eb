//! `/v1/peer` under a flood from one address: three real node processes on 127.0.0.1
//! (on smol, on blocking threads, and mixed), and a flooder on 127.0.0.2 sending
//! strangers' signed gossip to the seed as fast as it can for a bounded time. Meanwhile
//! `/health` keeps answering, a client's stores keep being replicated and acknowledged,
//! and nearly all of the flood is refused with 429 before any signature is checked
//! (counted in the node's metrics). And one address cannot hold every connection of a
//! node (one node process: `ghostnode`, then `ghostnode-sync`).
//!
//! The binaries are found in `target/<profile>/` (see `common`): `cargo test
//! --workspace` builds them, since runtime-smol, runtime-sync and ghost-cli all have
//! integration tests; or build them first with `cargo build -p runtime-smol -p
//! runtime-sync -p ghost-cli --bins`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ghost_host::now;
use proto_core::keys::{Address, Descriptor, IdentityKey, OnionKey};
use proto_core::peer::PeerRequest;
use proto_core::{Epoch, RecipientId};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

mod common;
use common::{Runtime, metric, plaintext_client, plaintext_get, start_plaintext_network, wait_for};

const NODES: usize = 3;
const STORES: usize = 30;
/// The flood stops after this long even if the stores are not done.
const FLOOD_LIMIT: Duration = Duration::from_secs(120);
/// Flooding threads, all from 127.0.0.2.
const FLOODERS: usize = 4;

common::runtime_tests!(a_peer_flood_from_one_address_is_refused_while_health_and_replication_go_on);
common::runtime_tests!(single: one_address_cannot_hold_every_connection);

/// One request on a fresh connection from 127.0.0.2; the answer's status, or `None` when
/// the connection failed or was cut.
fn post_from_other_address(target: SocketAddr, body: &[u8]) -> Option<u16> {
    let mut s = connect_from_other_address(target)?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let head = format!(
        "POST /v1/peer HTTP/1.1\r\nHost: {target}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn a_peer_flood_from_one_address_is_refused_while_health_and_replication_go_on(runtime: Runtime) {
    let root = tempfile::tempdir().unwrap();
    let mut net = start_plaintext_network(runtime, root.path(), NODES, "");
    let seed: SocketAddr = net.seed().parse().unwrap();

    // Strangers' gossip with valid signatures: each would cost a verification.
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let bodies: Vec<Vec<u8>> = (0..16u8)
        .map(|i| {
            let key = IdentityKey::from_seed(&[i + 60; 32]);
            let d = Descriptor::sign(
                &key,
                &OnionKey::generate(Epoch(1), &mut rng),
                proto_core::TlsKeyHash([0x77; 32]),
                Address::new("127.0.0.2:9").unwrap(),
                now().plus_millis(3_600_000),
            );
            PeerRequest::Gossip(vec![d.into()]).encode_signed(&key, now())
        })
        .collect();

    let done = Arc::new(AtomicBool::new(false));
    let bodies = Arc::new(bodies);
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|_| {
            let done = Arc::clone(&done);
            let bodies = Arc::clone(&bodies);
            std::thread::spawn(move || {
                let started = Instant::now();
                let (mut sent, mut refused, mut failed) = (0u64, 0u64, 0u64);
                while !done.load(Ordering::Relaxed) && started.elapsed() < FLOOD_LIMIT {
                    match post_from_other_address(seed, &bodies[(sent % 16) as usize]) {
                        Some(429) => refused += 1,
                        Some(_) => {}
                        None => failed += 1,
                    }
                    sent += 1;
                }
                (sent, refused, failed, started.elapsed())
            })
        })
        .collect();

    let client = plaintext_client(net.seed());
    let mut health_checks = 0;
    let mut slowest_health = Duration::ZERO;
    let stores_started = Instant::now();
    for i in 0..STORES {
        let mut id = [0u8; 32];
        rng.fill_bytes(&mut id);
        let delivery = client
            .store(&RecipientId(id), format!("during the flood {i}").as_bytes())
            .unwrap_or_else(|e| panic!("store {i} during the flood failed: {e}"));
        assert!(delivery.ack.receipts.len() >= 2, "store {i}: no quorum");
        let t = Instant::now();
        let health = plaintext_get(net.seed(), "/health")
            .unwrap_or_else(|e| panic!("/health did not answer during the flood: {e}"));
        slowest_health = slowest_health.max(t.elapsed());
        let json: serde_json::Value = serde_json::from_slice(&health).unwrap();
        assert_eq!(json["status"], "ok", "{json}");
        health_checks += 1;
    }
    let stores_took = stores_started.elapsed();
    done.store(true, Ordering::Relaxed);
    let (mut sent, mut refused, mut failed, mut flooded_for) = (0, 0, 0, Duration::ZERO);
    for f in flooders {
        let (s, r, x, t) = f.join().unwrap();
        (sent, refused, failed, flooded_for) =
            (sent + s, refused + r, failed + x, flooded_for.max(t));
    }

    assert_eq!(health_checks, STORES);
    assert!(sent > 100, "the flood sent only {sent} requests");
    // Beyond the stranger burst (40) and the refill (10/s), everything is refused.
    let allowed = 40 + 10 * flooded_for.as_secs() + 10;
    assert!(
        sent - refused - failed <= allowed,
        "{} of {sent} flood requests got past the limit (at most {allowed} expected)",
        sent - refused - failed
    );
    let counted = metric(&net.nodes[0].admin, "ghost_peer_rate_limited_total").unwrap_or(0.0);
    assert!(
        counted >= refused as f64,
        "the node counted {counted} refusals, the flooder saw {refused}"
    );
    eprintln!(
        "{runtime:?} flood: {sent} requests in {flooded_for:?} ({:.0}/s), {refused} refused with 429, {failed} failed; \
         {STORES} stores acknowledged in {stores_took:?}; slowest /health {slowest_health:?}",
        sent as f64 / flooded_for.as_secs_f64()
    );
    net.stop();
}

/// A TCP connection to `target` from 127.0.0.2, or `None` when it cannot be made.
fn connect_from_other_address(target: SocketAddr) -> Option<TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .ok()?;
    let source: SocketAddr = "127.0.0.2:0".parse().ok()?;
    socket.bind(&source.into()).ok()?;
    socket
        .connect_timeout(&target.into(), Duration::from_secs(5))
        .ok()?;
    Some(TcpStream::from(socket))
}

/// A connection from 127.0.0.2 that sends nothing.
fn idle_connection_from_other_address(target: SocketAddr) -> TcpStream {
    let s = connect_from_other_address(target).expect("connects from 127.0.0.2");
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    s
}

/// Whether the node closed `s` (end of stream or reset), as opposed to waiting for a
/// request on it.
fn closed_by_node(s: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

fn one_address_cannot_hold_every_connection(runtime: Runtime) {
    let root = tempfile::tempdir().unwrap();
    let net = start_plaintext_network(
        runtime,
        root.path(),
        1,
        "[http]\nmax_connections_per_address = 4\n",
    );
    let seed: SocketAddr = net.seed().parse().unwrap();

    // Ten idle connections from one address: four are served (waiting for a request),
    // the node closes the other six as soon as it accepts them.
    let mut held: Vec<TcpStream> = (0..10)
        .map(|_| idle_connection_from_other_address(seed))
        .collect();
    let closed = wait_for("six connections closed", Duration::from_secs(10), || {
        let closed = held.iter_mut().map(closed_by_node).filter(|c| *c).count();
        (closed >= 6).then_some(closed)
    });
    assert_eq!(closed, 6, "the four within the limit stay open");
    // Other addresses are served meanwhile; the refusals are counted.
    let health = plaintext_get(net.seed(), "/health").expect("health answers");
    assert!(String::from_utf8_lossy(&health).contains("\"status\""));
    let refused = metric(&net.nodes[0].admin, "ghost_connections_refused_total").expect("reported");
    assert!(refused >= 6.0, "{refused}");
    // Once they go, the address is served again.
    drop(held);
    wait_for("the address served again", Duration::from_secs(10), || {
        let mut s = idle_connection_from_other_address(seed);
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET /health HTTP/1.1\r\nHost: {seed}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).ok()?;
        answer.starts_with("HTTP/1.1 200").then_some(())
    });
}
