//! HTTP robustness of the node binaries: real node processes (`ghostnode` on hyper,
//! `ghostnode-sync` on its own HTTP/1.1 server, and networks mixing both) fed bad input
//! over raw TCP and through real three-hop onion requests. Every bad request gets its
//! documented answer (a 4xx with a JSON error body naming the problem; for bytes that are
//! not HTTP, hyper's own bare answer or the sync server's JSON `malformed_request`; a
//! closed connection for a client too slow to send its headers; a silent 204 for onion
//! garbage, visible only in the admin listener's `/metrics`), and the nodes stay healthy
//! and keep storing and retrieving afterwards. `/metrics` parses as Prometheus text.
//!
//! Timeouts and limits come from the `[http]` section appended to every node's config;
//! node descriptors (to build onion paths) from the network's directory. A closed
//! database (`/health` 503, stores refused) cannot be caused from outside a node process:
//! that case stays in-process, in `runtime-smol/tests/robustness.rs`.

mod common;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Runtime, plaintext_client, start_plaintext_network};
use ghost_cli::client;
use ghost_cli::local::LocalNetwork;
use ghost_host::now;
use proto_core::keys::{Address, IdentityKey, MAX_DESCRIPTOR_LEN, OnionKey};
use proto_core::packet::{self, PACKET_LEN};
use proto_core::peer::PeerRequest;
use proto_core::reply::{self, Opened};
use proto_core::request::{
    Request, RequestError, Response, RetrieveRequest, SIGNATURE_LEN, StoreRequest,
};
use proto_core::{Descriptor, Epoch, Namespace, Timestamp};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng, UnwrapErr};

common::runtime_tests!(
    fifty_kinds_of_bad_input_get_their_documented_answer_and_the_node_stays_healthy,
    refusals_travel_encrypted_through_three_hops_and_valid_requests_still_work,
);
common::runtime_tests!(
    single: onion_garbage_and_replays_are_dropped_silently_and_counted_in_metrics,
    a_source_over_its_rate_gets_429_with_a_json_body_and_is_counted,
);

/// Time a client gets to send its request headers (short, so slowloris cases end fast).
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a client gets to send its request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(1);
/// Slack on top of a server timeout before a case counts as hung.
const MARGIN: Duration = Duration::from_secs(5);
/// The largest request body a node reads (its `[http] max_body_bytes`).
const MAX_BODY_BYTES: usize = 1 << 20;

/// Ten minutes: far outside the ±60 s window of signed requests and peer envelopes.
const TEN_MINUTES_MS: u64 = 600_000;

/// The `[http]` section every node of these tests gets: the short timeouts above and the
/// default 1 MiB body limit, spelled out because a case announces one byte more.
fn http_section() -> String {
    format!(
        "[http]\nheader_timeout_ms = {}\nbody_timeout_ms = {}\nmax_body_bytes = {MAX_BODY_BYTES}\n",
        HEADER_TIMEOUT.as_millis(),
        BODY_TIMEOUT.as_millis(),
    )
}

/// `n` node processes of `runtime` with the short HTTP timeouts of these tests, each
/// knowing all the others.
fn start(runtime: Runtime, root: &std::path::Path, n: usize) -> LocalNetwork {
    start_plaintext_network(runtime, root, n, &http_section())
}

/// The HTTP server node `i` of a `runtime` network runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    /// `ghostnode`: hyper on smol.
    Hyper,
    /// `ghostnode-sync`: the blocking server on httparse.
    Sync,
}

fn server_of(runtime: Runtime, i: usize) -> Server {
    match runtime {
        Runtime::Smol => Server::Hyper,
        Runtime::Sync => Server::Sync,
        Runtime::Mixed if i.is_multiple_of(2) => Server::Hyper,
        Runtime::Mixed => Server::Sync,
    }
}

/// The verified descriptors of every node, from the seed's directory, in node order.
fn descriptors(net: &LocalNetwork) -> Vec<Descriptor> {
    let listed = plaintext_client(net.seed()).nodes();
    net.nodes
        .iter()
        .map(|node| {
            *listed
                .iter()
                .find(|d| d.address().as_str() == node.address)
                .unwrap_or_else(|| panic!("the directory lists no node at {}", node.address))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Raw HTTP over TCP.

/// What came back on a connection.
#[derive(Debug)]
enum Outcome {
    /// A response: status, lower-cased head, body.
    Answer {
        status: u16,
        head: String,
        body: Vec<u8>,
    },
    /// The server closed (or reset) the connection without a byte of answer.
    Closed,
}

fn header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Parses a response; `None` while it is incomplete (`eof` says no more bytes come).
fn parse_response(buf: &[u8], eof: bool) -> Option<Outcome> {
    let end = header_end(buf)?;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status: u16 = head
        .strip_prefix("http/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 status line: {head:?}"));
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .map(|v| v.trim().parse::<usize>().expect("numeric content-length"))
    });
    let body = &buf[end..];
    let complete = match length {
        Some(n) => body.len() >= n,
        None => eof || status == 204 || status == 304,
    };
    complete.then(|| Outcome::Answer {
        status,
        head,
        body: body[..length.unwrap_or(body.len()).min(body.len())].to_vec(),
    })
}

/// Opens a connection, writes `parts` in order (a write the server refuses ends the
/// writing), then reads until a complete answer or a close. Panics if neither comes
/// within the longest server timeout plus [`MARGIN`]. Returns the outcome and the time
/// from connecting to it.
fn raw(addr: &str, parts: &[Vec<u8>]) -> (Outcome, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).expect("the node accepts connections");
    for part in parts {
        if s.write_all(part).is_err() {
            break;
        }
    }
    let deadline = started + HEADER_TIMEOUT.max(BODY_TIMEOUT) + MARGIN;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(answer) = parse_response(&buf, false) {
            return (answer, started.elapsed());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{addr}: neither an answer nor a close within {:?}; got {:?}",
            deadline - started,
            String::from_utf8_lossy(&buf)
        );
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // Reset: the server dropped the connection with our bytes unread.
            Err(_) => break,
        }
    }
    let elapsed = started.elapsed();
    if buf.is_empty() {
        return (Outcome::Closed, elapsed);
    }
    let answer = parse_response(&buf, true)
        .unwrap_or_else(|| panic!("truncated answer: {:?}", String::from_utf8_lossy(&buf)));
    (answer, elapsed)
}

/// A request with `Host` and `Connection: close`, extra header lines, and a body.
fn request(method: &str, path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out =
        format!("{method} {path} HTTP/1.1\r\nHost: ghost\r\nConnection: close\r\n{headers}\r\n")
            .into_bytes();
    out.extend_from_slice(body);
    out
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    request(
        "POST",
        path,
        &format!("Content-Length: {}\r\n", body.len()),
        body,
    )
}

fn bare(method: &str, path: &str) -> Vec<u8> {
    request(method, path, "", b"")
}

/// A chunked body made of `chunks`, with its terminating chunk.
fn chunked(chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// `GET path` on `addr`: status and body.
fn get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    match raw(addr, &[bare("GET", path)]) {
        (Outcome::Answer { status, body, .. }, _) => (status, body),
        (Outcome::Closed, _) => panic!("{addr}{path}: connection closed without an answer"),
    }
}

fn health(addr: &str) -> (u16, serde_json::Value) {
    let (status, body) = get(addr, "/health");
    let json = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "/health is not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    });
    (status, json)
}

// ---------------------------------------------------------------------------------------
// Metrics.

fn scrape(addr: &str) -> prometheus_parse::Scrape {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "/metrics answers");
    let text = String::from_utf8(body).expect("/metrics is UTF-8");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("/metrics does not parse as Prometheus text ({e}):\n{text}"))
}

/// The value of the sample `name` carrying every label of `labels`.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    use prometheus_parse::Value;
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .and_then(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(*v),
            Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map(|b| b.count),
            Value::Summary(_) => None,
        })
}

fn metric(addr: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(&scrape(addr), name, labels)
        .unwrap_or_else(|| panic!("{addr}: /metrics has no {name}{labels:?}"))
}

// ---------------------------------------------------------------------------------------
// Onion requests.

/// Posts `packet` to `/v1/onion` and asserts the silent drop: 204 and no body.
fn assert_dropped_silently(addr: &str, packet: &[u8], what: &str) {
    match raw(addr, &[post("/v1/onion", packet)]).0 {
        Outcome::Answer { status, body, .. } => {
            assert_eq!((status, body.len()), (204, 0), "{what} is dropped silently");
        }
        Outcome::Closed => panic!("{what}: connection closed"),
    }
}

/// Builds a packet carrying `payload` along `path`; returns it with the reply keys.
fn build(path: &[Descriptor], payload: &[u8]) -> ([u8; PACKET_LEN], packet::PathKeys) {
    client::build_packet(path, payload).expect("the payload fits a packet")
}

/// Opens an onion answer and decodes the final hop's response.
fn open(keys: &packet::PathKeys, mut answer: Vec<u8>) -> Response {
    match reply::open(keys.reply_keys(), &mut answer).expect("the answer authenticates") {
        Opened::Response { body } => Response::decode(body).expect("a well-formed response"),
        other => panic!("the path failed: {other:?}"),
    }
}

/// Sends a raw request `payload` (any bytes) through `path` and decodes the answer.
fn send_payload(path: &[Descriptor], payload: &[u8]) -> Response {
    let (packet, keys) = build(path, payload);
    match raw(path[0].address().as_str(), &[post("/v1/onion", &packet)]).0 {
        Outcome::Answer {
            status: 200, body, ..
        } => open(&keys, body),
        other => panic!("the first hop did not answer the packet: {other:?}"),
    }
}

fn encode(request: &Request<'_>, signer: Option<&IdentityKey>) -> Vec<u8> {
    let mut buf = [0u8; packet::MAX_PAYLOAD];
    let n = request
        .encode(signer, &mut buf)
        .expect("the request encodes");
    buf[..n].to_vec()
}

fn retrieve(owner: &IdentityKey, timestamp: Timestamp) -> Request<'static> {
    Request::Retrieve(RetrieveRequest {
        recipient: owner.recipient_id(),
        namespace: Namespace::DIRECT,
        timestamp,
        after: 0,
        limit: 10,
    })
}

fn store<'a>(owner: &IdentityKey, body: &'a [u8], ttl_ms: u64) -> Request<'a> {
    Request::Store(StoreRequest {
        recipient: owner.recipient_id(),
        namespace: Namespace::DIRECT,
        timestamp: now(),
        ttl_ms,
        pow_nonce: 0,
        body,
    })
}

/// Stores `body` for `owner` through three hops and reads it back through another path
/// from a member that signed a receipt: a receipt means durable and readable there. (The
/// member that took the store may answer with two other members' receipts before its
/// own copy is committed, so it is not the one to ask.)
fn store_and_retrieve_through_three_hops(seed: &str, owner: &IdentityKey, body: &[u8]) {
    let client = plaintext_client(seed);
    let delivery = client
        .store(&owner.recipient_id(), body)
        .expect("a valid store is acknowledged by a write quorum");
    let signer = delivery.ack.receipts[0].node;
    let member = client
        .nodes()
        .into_iter()
        .find(|d| d.node_id() == signer)
        .expect("receipts come from nodes of the directory");
    let path = client
        .path_to(&member, &mut UnwrapErr(getrandom::SysRng))
        .expect("three nodes make a path");
    match client.request(&path, &retrieve(owner, now()), Some(owner)) {
        Ok(Response::Messages { messages, .. }) => assert!(
            messages.iter().any(|m| m.body == body),
            "the stored message is not among {messages:?}"
        ),
        other => panic!("retrieve failed: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// The table of bad input.

/// The answer a case must get.
#[derive(Debug)]
enum Expect {
    /// This status and a JSON body `{"error": code, "message": ...}`.
    Error(u16, &'static str),
    /// hyper's own answer to bytes that are not valid HTTP/1.1: this status, empty body
    /// (the sync server answers those with [`Expect::Error`]).
    Bare(u16),
    /// hyper's answer, or a reset when the server closes with our bytes still unread.
    BareOrClosed(u16),
    /// The connection is closed without an answer.
    Closed,
}

struct Case {
    name: &'static str,
    send: Vec<Vec<u8>>,
    expect: Expect,
    /// The server timeout that produces the answer: it must not come earlier, nor much
    /// later.
    waits_for: Option<Duration>,
}

fn case(name: &'static str, send: Vec<u8>, expect: Expect) -> Case {
    Case {
        name,
        send: vec![send],
        expect,
        waits_for: None,
    }
}

fn descriptor_bytes(d: &Descriptor) -> Vec<u8> {
    let mut buf = [0u8; MAX_DESCRIPTOR_LEN];
    let n = d.encode(&mut buf).expect("a descriptor fits");
    buf[..n].to_vec()
}

fn register(descriptor: &[u8]) -> Vec<u8> {
    let body = format!("{{\"descriptor\":\"{}\"}}", hex::encode(descriptor));
    post("/v1/nodes/register", body.as_bytes())
}

/// The table of bad input for a node whose server is `server`, `own` being its
/// descriptor.
fn cases(own: &Descriptor, server: Server) -> Vec<Case> {
    use Expect::{Bare, BareOrClosed, Closed, Error};
    // Bytes that do not parse as HTTP/1.1: hyper answers them itself (a bare status, no
    // body), the sync server with its JSON error.
    let not_http = |hyper: Expect| match server {
        Server::Hyper => hyper,
        Server::Sync => Error(400, "malformed_request"),
    };
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    let stranger = IdentityKey::from_seed(&[200; 32]);
    let stranger_descriptor = |expires| {
        Descriptor::sign(
            &stranger,
            &OnionKey::generate(Epoch(1), &mut ChaCha20Rng::seed_from_u64(5)),
            proto_core::TlsKeyHash([0x77; 32]),
            Address::new("127.0.0.1:9").unwrap(),
            expires,
        )
    };
    let valid = descriptor_bytes(&stranger_descriptor(now().plus_millis(3_600_000)));
    let mut forged = valid.clone();
    *forged.last_mut().unwrap() ^= 0x01;
    let expired = descriptor_bytes(&stranger_descriptor(Timestamp(1_000)));
    let for_ever = descriptor_bytes(&stranger_descriptor(Timestamp(u64::MAX)));
    let own = descriptor_bytes(own);

    // A fetch: a kind only known nodes may send (strangers may gossip and probe).
    let probe = |at: Timestamp| PeerRequest::Fetch(Vec::new()).encode_signed(&stranger, at);
    // Gossip is the one kind a stranger may send, so only it reaches the signature check.
    let mut tampered = PeerRequest::Gossip(Vec::new()).encode_signed(&stranger, now());
    *tampered.last_mut().unwrap() ^= 0x01;
    let mut trailing = PeerRequest::Gossip(Vec::new()).encode_signed(&stranger, now());
    trailing.push(0);

    let zeros = |n: usize| vec![0u8; n];
    let mut random = vec![0u8; 100];
    rng.fill_bytes(&mut random);
    let swarm_id = "ab".repeat(32);
    let onion_chunked =
        |body: Vec<u8>| request("POST", "/v1/onion", "Transfer-Encoding: chunked\r\n", &body);

    vec![
        // Onion packets of the wrong size or shape.
        case(
            "onion, empty body",
            post("/v1/onion", b""),
            Error(400, "wrong_packet_size"),
        ),
        case(
            "onion, 1 byte",
            post("/v1/onion", &zeros(1)),
            Error(400, "wrong_packet_size"),
        ),
        case(
            "onion, 2047 bytes",
            post("/v1/onion", &zeros(2047)),
            Error(400, "wrong_packet_size"),
        ),
        case(
            "onion, 2049 bytes",
            post("/v1/onion", &zeros(2049)),
            Error(400, "wrong_packet_size"),
        ),
        case(
            "onion, 1 MiB + 1 announced (body never sent)",
            request(
                "POST",
                "/v1/onion",
                &format!("Content-Length: {}\r\n", MAX_BODY_BYTES + 1),
                b"",
            ),
            Error(413, "body_too_large"),
        ),
        case(
            "onion, chunked, 100 bytes in all",
            onion_chunked(chunked(&[&random])),
            Error(400, "wrong_packet_size"),
        ),
        case(
            "onion, chunked, 2049 bytes in two chunks",
            onion_chunked(chunked(&[&zeros(1024), &zeros(1025)])),
            Error(400, "wrong_packet_size"),
        ),
        case(
            "onion, chunked, chunk size not hex",
            onion_chunked(b"zz\r\nabc\r\n0\r\n\r\n".to_vec()),
            Error(400, "body_unreadable"),
        ),
        Case {
            name: "onion, 2048 announced, 100 sent, then silence",
            send: vec![request(
                "POST",
                "/v1/onion",
                "Content-Length: 2048\r\n",
                &zeros(100),
            )],
            expect: Error(408, "body_timeout"),
            waits_for: Some(BODY_TIMEOUT),
        },
        case(
            "onion, Content-Length not a number",
            request("POST", "/v1/onion", "Content-Length: abc\r\n", b""),
            not_http(Bare(400)),
        ),
        case(
            "onion, two different Content-Lengths",
            request(
                "POST",
                "/v1/onion",
                "Content-Length: 2048\r\nContent-Length: 5\r\n",
                b"",
            ),
            not_http(Bare(400)),
        ),
        // Methods a route does not accept.
        case(
            "GET /v1/onion",
            bare("GET", "/v1/onion"),
            Error(405, "method_not_allowed"),
        ),
        case(
            "PUT /v1/onion",
            post_with("PUT", "/v1/onion", &zeros(2048)),
            Error(405, "method_not_allowed"),
        ),
        case(
            "DELETE /v1/onion",
            bare("DELETE", "/v1/onion"),
            Error(405, "method_not_allowed"),
        ),
        case(
            "GET /v1/peer",
            bare("GET", "/v1/peer"),
            Error(405, "method_not_allowed"),
        ),
        case(
            "POST /health",
            post("/health", b"{}"),
            Error(405, "method_not_allowed"),
        ),
        case(
            "GET /metrics (only on the admin listener)",
            bare("GET", "/metrics"),
            Error(404, "unknown_route"),
        ),
        case(
            "POST /v1/nodes/bootstrap",
            post("/v1/nodes/bootstrap", b""),
            Error(405, "method_not_allowed"),
        ),
        case(
            "GET /v1/nodes/register",
            bare("GET", "/v1/nodes/register"),
            Error(405, "method_not_allowed"),
        ),
        case(
            "POST /v1/nodes/directory",
            post("/v1/nodes/directory", b""),
            Error(405, "method_not_allowed"),
        ),
        case(
            "lower-case method name",
            bare("get", "/health"),
            Error(405, "method_not_allowed"),
        ),
        // Paths that name nothing.
        case("GET /", bare("GET", "/"), Error(404, "unknown_route")),
        case(
            "POST /v2/onion",
            post("/v2/onion", &zeros(2048)),
            Error(404, "unknown_route"),
        ),
        case(
            "GET /v1/nodes",
            bare("GET", "/v1/nodes"),
            Error(404, "unknown_route"),
        ),
        case(
            "GET /health/ (trailing slash)",
            bare("GET", "/health/"),
            Error(404, "unknown_route"),
        ),
        // No plain endpoint names a recipient: that question travels only inside onions.
        case(
            "GET /v1/nodes/swarm/{id} (removed)",
            bare("GET", &format!("/v1/nodes/swarm/{swarm_id}")),
            Error(404, "unknown_route"),
        ),
        // Directory pages: the only parameter is a node ID cursor.
        case(
            "directory, unknown parameter",
            bare("GET", "/v1/nodes/directory?limit=5"),
            Error(400, "bad_query"),
        ),
        case(
            "directory, cursor not hex",
            bare(
                "GET",
                &format!("/v1/nodes/directory?after={}", "zz".repeat(32)),
            ),
            Error(400, "bad_query"),
        ),
        case(
            "directory, cursor of 63 hex digits",
            bare(
                "GET",
                &format!("/v1/nodes/directory?after={}", &swarm_id[..63]),
            ),
            Error(400, "bad_query"),
        ),
        // Registrations that are not a valid, fresh, foreign descriptor.
        case(
            "register, empty body",
            post("/v1/nodes/register", b""),
            Error(400, "malformed_json"),
        ),
        case(
            "register, garbage JSON",
            post("/v1/nodes/register", b"{\"descriptor\":"),
            Error(400, "malformed_json"),
        ),
        case(
            "register, JSON array",
            post("/v1/nodes/register", b"[]"),
            Error(400, "malformed_json"),
        ),
        case(
            "register, descriptor is a number",
            post("/v1/nodes/register", b"{\"descriptor\": 5}"),
            Error(400, "malformed_json"),
        ),
        case(
            "register, unknown field",
            post(
                "/v1/nodes/register",
                format!(
                    "{{\"descriptor\":\"{}\",\"admin\":true}}",
                    hex::encode(&valid)
                )
                .as_bytes(),
            ),
            Error(400, "malformed_json"),
        ),
        case(
            "register, body not UTF-8",
            post("/v1/nodes/register", b"{\"descriptor\":\"\xff\xfe\"}"),
            Error(400, "malformed_json"),
        ),
        case(
            "register, descriptor not hex",
            post("/v1/nodes/register", b"{\"descriptor\":\"not hex at all\"}"),
            Error(400, "invalid_descriptor"),
        ),
        case(
            "register, descriptor truncated",
            register(&valid[..valid.len() / 2]),
            Error(400, "invalid_descriptor"),
        ),
        case(
            "register, signature byte flipped",
            register(&forged),
            Error(400, "invalid_descriptor"),
        ),
        case(
            "register, expired descriptor",
            register(&expired),
            Error(400, "expired_descriptor"),
        ),
        case(
            "register, a descriptor valid for ever",
            register(&for_ever),
            Error(400, "descriptor_too_far_ahead"),
        ),
        case(
            "register, the node's own descriptor",
            register(&own),
            Error(400, "own_identity"),
        ),
        // Peer envelopes that are not from a node, or not now.
        case(
            "peer, empty body",
            post("/v1/peer", b""),
            Error(400, "malformed"),
        ),
        case(
            "peer, garbage",
            post("/v1/peer", &random),
            Error(400, "malformed"),
        ),
        case(
            "peer, trailing byte after the envelope",
            post("/v1/peer", &trailing),
            Error(400, "malformed"),
        ),
        case(
            "peer, gossip with a signature byte flipped",
            post("/v1/peer", &tampered),
            Error(403, "bad_signature"),
        ),
        case(
            "peer, timestamp 10 minutes old",
            post("/v1/peer", &probe(Timestamp(now().0 - TEN_MINUTES_MS))),
            Error(400, "stale_timestamp"),
        ),
        case(
            "peer, timestamp 10 minutes ahead",
            post("/v1/peer", &probe(now().plus_millis(TEN_MINUTES_MS))),
            Error(400, "stale_timestamp"),
        ),
        case(
            "peer, valid fetch from an unknown node (refused before its signature is checked)",
            post("/v1/peer", &probe(now())),
            Error(403, "unknown_sender"),
        ),
        // Bytes that are not (acceptable) HTTP/1.1.
        case(
            // Unterminated, so hyper sees a partial head past its 64 KiB buffer limit
            // whatever the read sizes. (A complete 100 KiB head that lands in one read is
            // parsed and served: hyper checks the limit on partial heads only.)
            "100 KiB header line, never terminated",
            format!(
                "GET /health HTTP/1.1\r\nHost: ghost\r\nX-Big: {}",
                "a".repeat(100 * 1024)
            )
            .into_bytes(),
            // The sync server refuses any head over 20 KiB with its JSON 431 once it
            // has read that much; hyper only past its 64 KiB buffer, bare or by reset.
            match server {
                Server::Hyper => BareOrClosed(431),
                Server::Sync => Error(431, "headers_too_large"),
            },
        ),
        case(
            "20 KiB of headers in a complete request",
            format!(
                "GET /health HTTP/1.1\r\nHost: ghost\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
                "a".repeat(20 * 1024)
            )
            .into_bytes(),
            Error(431, "headers_too_large"),
        ),
        case(
            "garbage instead of HTTP",
            b"\x00\x01\x02\xff garbage\r\n\r\n".to_vec(),
            not_http(Bare(400)),
        ),
        case(
            "HTTP/9.9",
            b"GET /health HTTP/9.9\r\nHost: ghost\r\n\r\n".to_vec(),
            not_http(Bare(400)),
        ),
        case(
            "control byte in the path",
            b"GET /hea\x01lth HTTP/1.1\r\nHost: ghost\r\n\r\n".to_vec(),
            not_http(Bare(400)),
        ),
        case(
            "HTTP/2 preface to an HTTP/1.1 server",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            // hyper closes on seeing a preface it does not speak; to the sync server it
            // is an HTTP/1.1 head it cannot parse.
            not_http(Closed),
        ),
        Case {
            name: "slowloris: half a request line, then silence",
            send: vec![b"GET /hea".to_vec()],
            expect: Closed,
            waits_for: Some(HEADER_TIMEOUT),
        },
        Case {
            name: "slowloris: headers never finished",
            send: vec![b"POST /v1/onion HTTP/1.1\r\nHost: ghost\r\nContent-Le".to_vec()],
            expect: Closed,
            waits_for: Some(HEADER_TIMEOUT),
        },
    ]
}

fn post_with(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    request(
        method,
        path,
        &format!("Content-Length: {}\r\n", body.len()),
        body,
    )
}

/// Runs one case against `addr`; returns a one-line description of what it got.
fn run(addr: &str, c: &Case) -> String {
    let (outcome, elapsed) = raw(addr, &c.send);
    let name = c.name;
    if let Some(timeout) = c.waits_for {
        assert!(
            elapsed >= timeout && elapsed <= timeout + MARGIN,
            "{name}: answered after {elapsed:?}, expected after the {timeout:?} timeout"
        );
    }
    match (&c.expect, &outcome) {
        (Expect::Error(want, code), Outcome::Answer { status, head, body }) => {
            assert_eq!(status, want, "{name}: {}", String::from_utf8_lossy(body));
            assert!(
                head.contains("content-type: application/json"),
                "{name}: {head}"
            );
            let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
                panic!(
                    "{name}: body is not JSON ({e}): {:?}",
                    String::from_utf8_lossy(body)
                )
            });
            assert_eq!(json["error"], *code, "{name}: {json}");
            assert!(json["message"].is_string(), "{name}: {json}");
            format!("{status} {code}")
        }
        (Expect::Bare(want) | Expect::BareOrClosed(want), Outcome::Answer { status, body, .. }) => {
            assert_eq!(status, want, "{name}: {}", String::from_utf8_lossy(body));
            assert!(body.is_empty(), "{name}: {}", String::from_utf8_lossy(body));
            format!("{status} (bare, empty body)")
        }
        (Expect::BareOrClosed(_) | Expect::Closed, Outcome::Closed) => {
            format!("closed after {} ms", elapsed.as_millis())
        }
        (expect, outcome) => panic!("{name}: expected {expect:?}, got {outcome:?}"),
    }
}

fn fifty_kinds_of_bad_input_get_their_documented_answer_and_the_node_stays_healthy(
    runtime: Runtime,
) {
    let root = tempfile::tempdir().unwrap();
    let net = start(runtime, root.path(), 3);
    let descriptors = descriptors(&net);
    // A mixed network's node 0 runs hyper: its node 1 (sync) gets the table too.
    let targets: &[usize] = match runtime {
        Runtime::Mixed => &[0, 1],
        Runtime::Smol | Runtime::Sync => &[0],
    };
    for &target in targets {
        let server = server_of(runtime, target);
        let addr = net.nodes[target].address.as_str();
        let table = cases(&descriptors[target], server);
        assert!(table.len() >= 30, "only {} cases", table.len());
        let mut json_errors: BTreeMap<u16, u32> = BTreeMap::new();
        for c in &table {
            let got = run(addr, c);
            println!("{server:?} {:<50} -> {got}", c.name);
            if let Expect::Error(status, _) = c.expect {
                *json_errors.entry(status).or_default() += 1;
            }
            let (status, health) = health(addr);
            assert_eq!(status, 200, "after {:?}: {health}", c.name);
        }

        // Every JSON error was counted under its status (hyper's bare answers are not).
        let scrape = scrape(&net.nodes[target].admin);
        for (status, count) in &json_errors {
            let label = status.to_string();
            assert_eq!(
                value(&scrape, "ghost_http_responses_total", &[("status", &label)]),
                Some(f64::from(*count)),
                "{server:?} node {target}: ghost_http_responses_total{{status=\"{status}\"}}"
            );
        }
        println!(
            "robustness: {server:?} node {target}: {} bad-input cases answered as documented; \
             statuses {json_errors:?}",
            table.len()
        );
    }

    for (i, node) in net.nodes.iter().enumerate() {
        let (status, health) = health(&node.admin);
        assert_eq!(
            (status, &health["database"]),
            (200, &"open".into()),
            "node {i}"
        );
    }
    let owner = IdentityKey::from_seed(&[42; 32]);
    store_and_retrieve_through_three_hops(net.seed(), &owner, b"still working");
}

fn onion_garbage_and_replays_are_dropped_silently_and_counted_in_metrics(runtime: Runtime) {
    let root = tempfile::tempdir().unwrap();
    let net = start(runtime, root.path(), 1);
    let descriptors = descriptors(&net);
    let addr = net.nodes[0].address.as_str();
    let admin = net.nodes[0].admin.as_str();
    let bad_mac = |admin: &str| {
        metric(
            admin,
            "ghost_packets_dropped_total",
            &[("reason", "bad_mac")],
        )
    };
    let before = bad_mac(admin);
    let mut garbage = [0u8; PACKET_LEN];
    ChaCha20Rng::seed_from_u64(3).fill_bytes(&mut garbage);
    assert_dropped_silently(addr, &garbage, "garbage");
    assert_eq!(bad_mac(admin), before + 1.0);

    // A valid packet is answered once; the same bytes again are a replay, dropped silently.
    let (packet, keys) = build(&descriptors[..1], &encode(&Request::Info, None));
    let replays = metric(admin, "ghost_replays_refused_total", &[]);
    let first = match raw(addr, &[post("/v1/onion", &packet)]).0 {
        Outcome::Answer {
            status: 200, body, ..
        } => body,
        other => panic!("first send: {other:?}"),
    };
    assert!(matches!(open(&keys, first), Response::Info { .. }));
    assert_dropped_silently(addr, &packet, "a replay");
    assert_eq!(
        metric(admin, "ghost_replays_refused_total", &[]),
        replays + 1.0
    );
    assert_eq!(
        metric(
            admin,
            "ghost_packets_dropped_total",
            &[("reason", "replayed")]
        ),
        replays + 1.0
    );
    assert_eq!(health(addr).0, 200);
}

fn refusals_travel_encrypted_through_three_hops_and_valid_requests_still_work(runtime: Runtime) {
    let root = tempfile::tempdir().unwrap();
    let net = start(runtime, root.path(), 3);
    let seed = net.seed();
    let client = plaintext_client(seed);
    let owner = IdentityKey::from_seed(&[42; 32]);
    let other = IdentityKey::from_seed(&[43; 32]);
    let swarm = client.swarm(&owner.recipient_id()).expect("a swarm");
    let mut rng = UnwrapErr(getrandom::SysRng);
    let mut path = || client.path_to(&swarm[0], &mut rng).expect("a path");
    let refused = |response: Result<Response, _>| match response {
        Ok(Response::Refused(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    };

    let wrong_key = client.request(&path(), &retrieve(&owner, now()), Some(&other));
    assert_eq!(refused(wrong_key), RequestError::BadSignature);
    let old = Timestamp(now().0 - TEN_MINUTES_MS);
    let stale = client.request(&path(), &retrieve(&owner, old), Some(&owner));
    assert_eq!(refused(stale), RequestError::StaleTimestamp);
    let ahead = now().plus_millis(TEN_MINUTES_MS);
    let future = client.request(&path(), &retrieve(&owner, ahead), Some(&owner));
    assert_eq!(refused(future), RequestError::StaleTimestamp);
    let signed = encode(&retrieve(&owner, now()), Some(&owner));
    let unsigned = &signed[..signed.len() - SIGNATURE_LEN];
    assert_eq!(
        send_payload(&path(), unsigned),
        Response::Refused(RequestError::SignatureRequired)
    );
    let too_long = store(&owner, b"forever", u64::MAX);
    assert_eq!(
        refused(client.request(&path(), &too_long, None)),
        RequestError::TtlTooLong
    );
    assert_eq!(
        send_payload(&path(), b"\x09not a request"),
        Response::Refused(RequestError::UnsupportedVersion)
    );

    // The refusals were answered inside 200s: the relays saw nothing to count as errors.
    for (i, node) in net.nodes.iter().enumerate() {
        let scrape = scrape(&node.admin);
        for status in ["400", "403"] {
            assert_eq!(
                value(&scrape, "ghost_http_responses_total", &[("status", status)]),
                None,
                "node {i} answered a {status}"
            );
        }
    }

    // Valid requests still work, and /metrics shows the store.
    store_and_retrieve_through_three_hops(seed, &owner, b"valid after refusals");
    let mut quorum_latency_count = 0.0;
    for (i, node) in net.nodes.iter().enumerate() {
        assert_eq!(health(&node.address).0, 200, "node {i}");
        let scrape = scrape(&node.admin);
        assert_eq!(value(&scrape, "ghost_db_up", &[]), Some(1.0), "node {i}");
        assert!(
            value(&scrape, "ghost_http_responses_total", &[("status", "200")])
                .is_some_and(|n| n >= 1.0)
        );
        for reason in ["bad_mac", "replayed", "expired", "malformed"] {
            assert!(
                value(
                    &scrape,
                    "ghost_packets_dropped_total",
                    &[("reason", reason)]
                )
                .is_some(),
                "node {i}: no ghost_packets_dropped_total{{reason=\"{reason}\"}}"
            );
        }
        assert!(
            value(&scrape, "ghost_store_quorum_latency_seconds", &[]).is_some(),
            "node {i}: no quorum latency histogram buckets"
        );
        let count = value(&scrape, "ghost_store_quorum_latency_seconds_count", &[])
            .expect("the quorum latency count");
        assert_eq!(
            value(&scrape, "ghost_store_quorum_latency_seconds", &[]),
            Some(count),
            "node {i}: the +Inf bucket holds every store"
        );
        quorum_latency_count += count;
    }
    assert!(
        quorum_latency_count >= 1.0,
        "no node recorded the store's quorum latency"
    );
}

fn a_source_over_its_rate_gets_429_with_a_json_body_and_is_counted(runtime: Runtime) {
    // One node alone: 127.0.0.1 is no known node's address, so the client budget applies.
    // The local settings raise that budget out of reach; this node gets a burst of 3 at 1
    // per second instead (a second `[node]` table would not parse, so its config file is
    // rewritten and the node restarted on the same addresses).
    let root = tempfile::tempdir().unwrap();
    let mut net = start(runtime, root.path(), 1);
    let config_path = net.nodes[0].dir.join("ghostnode.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let lowered = config
        .replace(
            "source_rate_per_second = 100000",
            "source_rate_per_second = 1",
        )
        .replace("source_rate_burst = 100000", "source_rate_burst = 3");
    assert_ne!(lowered, config, "the local settings name the source budget");
    std::fs::write(&config_path, lowered).unwrap();
    net.terminate(0, Duration::from_secs(15))
        .expect("the node was running");
    net.restart(0).expect("the node comes back");
    let addr = net.nodes[0].address.clone();
    common::wait_for(
        "the restarted node answers",
        Duration::from_secs(10),
        || (health(&addr).0 == 200).then_some(()),
    );
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (outcome, _) = raw(&addr, &[post("/v1/onion", &[0x42; PACKET_LEN])]);
        let Outcome::Answer { status, body, .. } = outcome else {
            panic!("the node closed the connection");
        };
        if status == 429 {
            let json: serde_json::Value = serde_json::from_slice(&body).expect("a JSON body");
            assert_eq!(json["error"], "rate_limited");
        }
        statuses.push(status);
    }
    assert_eq!(statuses, [204, 204, 204, 429, 429]);
    assert_eq!(
        metric(&net.nodes[0].admin, "ghost_rate_limited_total", &[]),
        2.0
    );
    assert_eq!(health(&addr).0, 200, "the node stays healthy");
}
