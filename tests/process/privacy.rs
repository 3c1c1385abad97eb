//! What the `ghost` CLI reveals about a recipient outside onion packets: nothing.
//!
//! Five real node processes run on loopback: all on smol (`ghostnode`), all on blocking
//! threads (`ghostnode-sync`), or mixed (even nodes smol, odd nodes sync). Each listens
//! on its own port but advertises the address of a recording TCP proxy in front of it
//! (config `advertise`), and joins through the seed's proxy, so every connection to a
//! node — from the client or from another node — passes through that node's proxy,
//! which forwards bytes both ways and keeps every byte of the connecting side's
//! direction. The real CLI then runs
//! as child processes (`ghost keygen`, `ghost send`, `ghost fetch`). Every recorded
//! stream is parsed as HTTP/1.1 requests; request lines and headers are always scanned,
//! bodies too except those of `POST /v1/onion` (onion packets, opaque by design) and
//! `POST /v1/peer` (signed node-to-node envelopes). Neither the recipient id (raw, hex,
//! base64) nor its contact, encryption key or ring point may appear, and no request may
//! use a per-recipient path (`/v1/nodes/swarm/…`).
//!
//! The CLI is the `ghost` binary of `ghost-cli`, found with the node binaries in this
//! test's target directory, `target/<profile>/` (see `common`): `cargo test --workspace`
//! builds them, since runtime-smol, runtime-sync and ghost-cli all have integration
//! tests; or build them first with `cargo build -p runtime-smol -p runtime-sync -p
//! ghost-cli --bins`.
//!
//! The first two tests run the nodes and the CLI with `--insecure-plaintext` so the
//! scanner can read the HTTP. Negative controls: the main test checks the recorder saw
//! the client's plain GET and the onion packets of every hop; a second test sends a
//! per-recipient request through a proxy and shows the same scanner reports it. The last
//! test runs the same network on its default TLS links and finds only TLS records on
//! every connection: no request line, no header, no recipient, peer envelopes included.
//! Invariants: every wait has a deadline; nodes are killed and proxy threads joined when
//! a test ends, however it ends.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ghost_cli::local::LOCAL_CONFIG;
use proto_core::RecipientId;
use proto_core::sealed::Contact;

mod common;
use common::{POLL, Runtime, wait_for};

const NODES: usize = 5;
/// Longest wait for a node's "listening on" line, and for a proxy's target to be known.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for the network to form (every node knows every other).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest run of one CLI command.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for the proxies to see every connection closed once the nodes are gone.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

common::runtime_tests!(cli_send_and_fetch_reveal_no_recipient_outside_onions);
common::runtime_tests!(single: scanner_reports_a_per_recipient_request_sent_through_a_proxy);
common::runtime_tests!(on_tls_links_the_wire_shows_no_http_and_no_recipient);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------
// The recording proxy.

/// One proxied connection: every byte the connecting side sent, in order.
struct Conn {
    sent: Mutex<Vec<u8>>,
    /// The connecting side closed (or the proxy stopped): `sent` is complete.
    done: AtomicBool,
}

#[derive(Default)]
struct Shared {
    /// Where connections go; unknown until the node behind has started.
    target: Mutex<Option<SocketAddr>>,
    stopping: AtomicBool,
    conns: Mutex<Vec<Arc<Conn>>>,
    /// Every socket the proxy holds, shut down at stop so blocked reads return.
    sockets: Mutex<Vec<TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    /// Keeps `socket` for the stop; shuts it down at once if the stop already began.
    fn hold(&self, socket: &TcpStream) {
        let Ok(clone) = socket.try_clone() else {
            return;
        };
        lock(&self.sockets).push(clone);
        if self.stopping.load(Ordering::SeqCst) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

/// A TCP proxy on a free loopback port that records the connecting side of every
/// connection. Dropping it closes every connection and joins every thread.
struct Proxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        let address = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let accepting = shared.clone();
        let acceptor = std::thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                accepting.hold(&client);
                let conn = Arc::new(Conn {
                    sent: Mutex::new(Vec::new()),
                    done: AtomicBool::new(false),
                });
                lock(&accepting.conns).push(conn.clone());
                let shared = accepting.clone();
                let handle = std::thread::spawn(move || relay(&shared, client, &conn));
                lock(&accepting.threads).push(handle);
            }
        });
        Self {
            address,
            shared,
            acceptor: Some(acceptor),
        }
    }

    fn set_target(&self, target: SocketAddr) {
        *lock(&self.shared.target) = Some(target);
    }

    /// What each connection's connecting side sent so far, in accept order.
    fn recordings(&self) -> Vec<Vec<u8>> {
        lock(&self.shared.conns)
            .iter()
            .map(|c| lock(&c.sent).clone())
            .collect()
    }

    /// Whether every connection so far is closed on the connecting side.
    fn all_closed(&self) -> bool {
        lock(&self.shared.conns)
            .iter()
            .all(|c| c.done.load(Ordering::SeqCst))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the acceptor, which then sees the flag and returns.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for socket in lock(&self.shared.sockets).iter() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        let threads: Vec<JoinHandle<()>> = lock(&self.shared.threads).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Serves one connection: connects to the target, copies the answers back on a second
/// thread, and forwards the connecting side while recording it. Bytes are recorded
/// before they are forwarded; if forwarding fails the rest is still read and recorded
/// (a superset of what the node received), until the connecting side closes.
fn relay(shared: &Shared, mut client: TcpStream, conn: &Conn) {
    let target = {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(t) = *lock(&shared.target) {
                break Some(t);
            }
            if shared.stopping.load(Ordering::SeqCst) || Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(POLL);
        }
    };
    let upstream = target.and_then(|t| TcpStream::connect_timeout(&t, Duration::from_secs(5)).ok());
    let Some(mut upstream) = upstream else {
        let _ = client.shutdown(Shutdown::Both);
        conn.done.store(true, Ordering::SeqCst);
        return;
    };
    shared.hold(&upstream);
    let back = match (upstream.try_clone(), client.try_clone()) {
        (Ok(mut from), Ok(mut to)) => Some(std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        })),
        _ => None,
    };
    let mut forwarding = true;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        lock(&conn.sent).extend_from_slice(&buf[..n]);
        if forwarding && upstream.write_all(&buf[..n]).is_err() {
            forwarding = false;
        }
    }
    conn.done.store(true, Ordering::SeqCst);
    let _ = upstream.shutdown(Shutdown::Write);
    if let Some(back) = back {
        let _ = back.join();
    }
}

// ---------------------------------------------------------------------------------------
// Nodes behind proxies.

/// A node process, killed when dropped.
struct NodeProcess {
    child: Option<Child>,
    /// Where it really listens (only the test knows; everyone else uses the proxy).
    listen: SocketAddr,
    /// Its admin listener (`/metrics`, detailed `/health`).
    admin: SocketAddr,
}

impl NodeProcess {
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Nodes, each behind its recording proxy and advertising it. Fields drop in order:
/// nodes first, then proxies, then the directories.
struct ProxiedNetwork {
    nodes: Vec<NodeProcess>,
    proxies: Vec<Proxy>,
    root: tempfile::TempDir,
}

impl ProxiedNetwork {
    /// Starts `n` nodes of `runtime` (over plain HTTP when `plaintext`, else TLS); node 0
    /// is the seed and the others join through its proxy.
    fn start(runtime: Runtime, n: usize, plaintext: bool) -> Self {
        let mut net = Self {
            nodes: Vec::new(),
            proxies: Vec::new(),
            root: tempfile::tempdir().unwrap(),
        };
        for i in 0..n {
            let proxy = Proxy::start();
            let dir = net.root.path().join(format!("node-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let seeds = match net.proxies.first() {
                Some(seed) => format!("seeds = [\"{}\"]\n", seed.address),
                None => String::new(),
            };
            // Top-level keys first: LOCAL_CONFIG opens the [node] table.
            let config = format!(
                "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nadvertise = \"{}\"\ndata_dir = \"{}\"\n{seeds}{LOCAL_CONFIG}",
                proxy.address,
                dir.display()
            );
            std::fs::write(dir.join("ghostnode.toml"), config).unwrap();
            let node = spawn_node(runtime.binary_for(i), &dir, plaintext);
            proxy.set_target(node.listen);
            net.nodes.push(node);
            net.proxies.push(proxy);
        }
        net
    }

    fn seed(&self) -> String {
        self.proxies[0].address.to_string()
    }

    /// Waits until every node answers its admin `/health` (asked directly, not through
    /// its proxy) and knows every other node.
    fn wait_ready(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        for (i, node) in self.nodes.iter().enumerate() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            wait_for(
                &format!("node {i} knows the {} others", self.nodes.len() - 1),
                remaining,
                || {
                    let peers = health_peers(node.admin)?;
                    (peers + 1 >= self.nodes.len() as u64).then_some(())
                },
            );
        }
    }

    /// Kills every node, then waits until every proxied connection is closed, so the
    /// recordings are complete.
    fn stop_nodes(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        wait_for(
            "every proxied connection closed after the nodes stopped",
            DRAIN_TIMEOUT,
            || self.proxies.iter().all(Proxy::all_closed).then_some(()),
        );
    }

    fn recordings(&self) -> Vec<Recording> {
        let mut out = Vec::new();
        for (node, proxy) in self.proxies.iter().enumerate() {
            for (conn, bytes) in proxy.recordings().into_iter().enumerate() {
                out.push(Recording { node, conn, bytes });
            }
        }
        out
    }

    fn log_tail(&self, i: usize) -> String {
        let log = std::fs::read_to_string(self.root.path().join(format!("node-{i}/node.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// Starts the node `binary` on `dir/ghostnode.toml` and waits for its "listening on" and
/// "admin on" lines.
fn spawn_node(binary: PathBuf, dir: &Path, plaintext: bool) -> NodeProcess {
    let log = std::fs::File::create(dir.join("node.log")).unwrap();
    let mut command = Command::new(&binary);
    if plaintext {
        command.arg("--insecure-plaintext");
    }
    let mut child = command
        .arg("--config")
        .arg(dir.join("ghostnode.toml"))
        .env_remove("GHOST_LISTEN")
        .env_remove("GHOST_DATA_DIR")
        .env_remove("GHOST_SEEDS")
        .env_remove("GHOST_ADVERTISE")
        .env_remove("GHOST_CONFIG")
        .env_remove("GHOST_ADMIN_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{} starts: {e}", binary.display()));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    // Ends at the node's exit (or when the lines are read): the pipe closes.
    std::thread::spawn(move || {
        let mut lines = String::new();
        let mut stdout = BufReader::new(stdout);
        let _ = stdout.read_line(&mut lines);
        let _ = stdout.read_line(&mut lines);
        let _ = tx.send(lines);
    });
    let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut node = NodeProcess {
        child: Some(child),
        listen: unbound,
        admin: unbound,
    };
    let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
    match ghost_cli::local::parse_start_lines(&line) {
        Some(started) => {
            node.listen = started.address.parse().expect("a socket address");
            node.admin = started.admin.parse().expect("a socket address");
            node
        }
        None => {
            node.kill();
            panic!(
                "node in {} did not start ({line:?}): {}",
                dir.display(),
                std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
            );
        }
    }
}

/// The `peers` count of a node's admin `/health`, asked with a plain std socket.
fn health_peers(address: SocketAddr) -> Option<u64> {
    let mut s = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET /health HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).ok()?;
    let at = find(&answer, b"\r\n\r\n")?;
    let json: serde_json::Value = serde_json::from_slice(&answer[at + 4..]).ok()?;
    json["peers"].as_u64()
}

/// Runs the `ghost` CLI with `args` over plain HTTP (so the scanner can read what it
/// sends); kills it and fails after [`CLI_TIMEOUT`].
fn ghost(args: &[&str]) -> Output {
    let plaintext: Vec<&str> = ["--insecure-plaintext"]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    common::run_ghost(&plaintext, CLI_TIMEOUT)
}

/// Runs the `ghost` CLI with `args` as a user would: TLS links.
fn ghost_tls(args: &[&str]) -> Output {
    common::run_ghost(args, CLI_TIMEOUT)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `ghost keygen --out <path>`: the contact it prints (the token of 128 hex digits).
fn keygen(path: &Path) -> Contact {
    let out = ghost(&["keygen", "--out", path.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "keygen failed: {out:?}");
    let contact = stdout
        .split_whitespace()
        .find(|w| w.len() == 128 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("keygen prints a contact: {stdout}"));
    Contact::parse(contact).expect("a valid contact")
}

// ---------------------------------------------------------------------------------------
// The scanner: recorded streams → HTTP/1.1 requests → what a node saw outside onions.

/// What one proxy recorded on one connection.
struct Recording {
    node: usize,
    conn: usize,
    bytes: Vec<u8>,
}

/// One request parsed from a recording.
#[derive(Debug)]
struct HttpRequest {
    method: String,
    /// The path of the request target (no query, no scheme or authority).
    path: String,
    /// Request line and headers, as sent.
    head: Vec<u8>,
    /// The body, de-chunked if it was chunked; possibly cut short if the stream ended.
    body: Vec<u8>,
}

impl HttpRequest {
    /// Bodies the scan skips: onion packets (`POST /v1/onion`, opaque by design: only
    /// the hops' keys open them) and signed node-to-node envelopes (`POST /v1/peer`, sent
    /// by swarm members after peeling, which do name the recipient; on the default TLS
    /// links nothing of them shows, see the last test).
    fn body_is_opaque(&self) -> bool {
        self.method == "POST" && (self.path == "/v1/onion" || self.path == "/v1/peer")
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Splits a client→server stream into requests (keep-alive: several per connection;
/// bodies framed by `Content-Length` or chunked). Bytes that do not parse as a request
/// come back as the second value, to be scanned whole.
fn parse_requests(bytes: &[u8]) -> (Vec<HttpRequest>, Vec<u8>) {
    let mut requests = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let Some(end) = find(&bytes[pos..], b"\r\n\r\n") else {
            break;
        };
        let head = &bytes[pos..pos + end + 4];
        let head_text = String::from_utf8_lossy(head);
        let mut lines = head_text.split("\r\n");
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let (Some(method), Some(target), Some(version)) = (
            request_line.next(),
            request_line.next(),
            request_line.next(),
        ) else {
            break;
        };
        if !version.starts_with("HTTP/") || method.is_empty() {
            break;
        }
        let mut content_length = 0usize;
        let mut chunked = false;
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => content_length = value.parse().unwrap_or(0),
                    "transfer-encoding" => {
                        chunked = value.to_ascii_lowercase().contains("chunked");
                    }
                    _ => {}
                }
            }
        }
        pos += end + 4;
        let body = if chunked {
            let (body, used) = dechunk(&bytes[pos..]);
            pos += used;
            body
        } else {
            let take = content_length.min(bytes.len() - pos);
            let body = bytes[pos..pos + take].to_vec();
            pos += take;
            body
        };
        requests.push(HttpRequest {
            method: method.to_owned(),
            path: target_path(target),
            head: head.to_vec(),
            body,
        });
    }
    (requests, bytes[pos..].to_vec())
}

/// The path of a request target in origin form (`/a/b?q`) or absolute form
/// (`http://host/a/b?q`).
fn target_path(target: &str) -> String {
    let after_authority = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    after_authority
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Decodes a chunked body at the start of `bytes`: the body and the bytes used (all of
/// them when the stream ends inside the body).
fn dechunk(bytes: &[u8]) -> (Vec<u8>, usize) {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let Some(eol) = find(&bytes[pos..], b"\r\n") else {
            body.extend_from_slice(&bytes[pos..]);
            return (body, bytes.len());
        };
        let size_text = String::from_utf8_lossy(&bytes[pos..pos + eol]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            // Not chunk framing after all: scan the rest as body.
            body.extend_from_slice(&bytes[pos..]);
            return (body, bytes.len());
        };
        pos += eol + 2;
        if size == 0 {
            // Trailers, up to an empty line; they are kept as body bytes.
            loop {
                let Some(eol) = find(&bytes[pos..], b"\r\n") else {
                    body.extend_from_slice(&bytes[pos..]);
                    return (body, bytes.len());
                };
                body.extend_from_slice(&bytes[pos..pos + eol]);
                pos += eol + 2;
                if eol == 0 {
                    return (body, pos);
                }
            }
        }
        let take = size.min(bytes.len() - pos);
        body.extend_from_slice(&bytes[pos..pos + take]);
        pos = (pos + size + 2).min(bytes.len());
        if take < size {
            return (body, bytes.len());
        }
    }
}

/// A byte string that must not appear outside onions, with what it is.
struct Needle {
    what: String,
    bytes: Vec<u8>,
}

/// Everything about `contact`'s recipient a node could link to it.
///
/// The message hash `proto_core::store::message_hash(&recipient, Namespace::DIRECT,
/// body)` is derived from the recipient too, but `body` is the sealed body, made with
/// fresh randomness inside the `ghost send` process: the test never sees it and cannot
/// compute the hash. When `ghost send` prints the hash (today: `(message <hex>)`), the
/// caller adds it with [`printed_hashes`].
fn needles_for(contact: &Contact) -> Vec<Needle> {
    let recipient: &RecipientId = &contact.recipient;
    let id = recipient.0;
    let id_hex = hex::encode(id);
    let point = proto_core::ring::key_point(recipient);
    let point_bytes = point.to_be_bytes();
    let encryption = contact.encryption.0;
    let needles = vec![
        ("recipient id (raw bytes)", id.to_vec()),
        ("recipient id (lowercase hex)", id_hex.clone().into_bytes()),
        (
            "recipient id (uppercase hex)",
            id_hex.to_ascii_uppercase().into_bytes(),
        ),
        // 40 characters encode the first 30 bytes exactly, whatever the padding after.
        ("recipient id (base64)", base64(&id, STD)[..40].into()),
        ("recipient id (base64url)", base64(&id, URL)[..40].into()),
        ("contact (hex)", contact.to_string().into_bytes()),
        ("encryption key (raw bytes)", encryption.to_vec()),
        ("encryption key (hex)", hex::encode(encryption).into_bytes()),
        ("ring point (8 big-endian bytes)", point_bytes.to_vec()),
        (
            "ring point (lowercase hex)",
            hex::encode(point_bytes).into_bytes(),
        ),
        (
            "ring point (uppercase hex)",
            hex::encode_upper(point_bytes).into_bytes(),
        ),
        ("ring point (decimal)", point.to_string().into_bytes()),
    ];
    needles
        .into_iter()
        .map(|(what, bytes)| Needle {
            what: what.to_owned(),
            bytes,
        })
        .collect()
}

/// Tokens of 64 hex digits printed by `ghost send` other than the recipient id: the
/// message hash, when the CLI prints it, which is derived from the recipient.
fn printed_hashes(stdout: &str, recipient: &RecipientId) -> Vec<Needle> {
    let id_hex = hex::encode(recipient.0);
    let tokens: BTreeSet<String> = stdout
        .split(|c: char| !c.is_ascii_hexdigit())
        .filter(|w| w.len() == 64 && w.to_ascii_lowercase() != id_hex)
        .map(str::to_ascii_lowercase)
        .collect();
    tokens
        .into_iter()
        .flat_map(|h| {
            let raw = hex::decode(&h).expect("hex digits");
            [
                Needle {
                    what: format!("message hash {h} (lowercase hex)"),
                    bytes: h.clone().into_bytes(),
                },
                Needle {
                    what: format!("message hash {h} (uppercase hex)"),
                    bytes: h.to_ascii_uppercase().into_bytes(),
                },
                Needle {
                    what: format!("message hash {h} (raw bytes)"),
                    bytes: raw,
                },
            ]
        })
        .collect()
}

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Unpadded base64 of `bytes` with `alphabet`.
fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize]);
        }
    }
    out
}

/// One request seen by a node.
#[derive(Debug)]
struct Seen {
    node: usize,
    method: String,
    path: String,
}

/// What the scan found.
#[derive(Debug, Default)]
struct Scan {
    requests: Vec<Seen>,
    /// Requests on a per-recipient path.
    per_recipient_paths: Vec<String>,
    /// Needles found outside onion bodies, with where.
    leaks: Vec<String>,
}

impl Scan {
    fn count(&self, method: &str, path: &str) -> usize {
        self.requests
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .count()
    }
}

/// Parses every recording and looks for per-recipient paths and for `needles` in every
/// byte outside onion and peer bodies.
fn scan(recordings: &[Recording], needles: &[Needle]) -> Scan {
    let mut out = Scan::default();
    for rec in recordings {
        let (requests, unparsed) = parse_requests(&rec.bytes);
        let mut kept: Vec<(String, &[u8])> = Vec::new();
        for (k, r) in requests.iter().enumerate() {
            let at = format!(
                "node {} connection {} request {k} ({} {})",
                rec.node, rec.conn, r.method, r.path
            );
            if r.path.to_ascii_lowercase().starts_with("/v1/nodes/swarm/") {
                out.per_recipient_paths.push(at.clone());
            }
            kept.push((format!("{at}, request line and headers"), &r.head));
            if !r.body_is_opaque() {
                kept.push((format!("{at}, body"), &r.body));
            }
            out.requests.push(Seen {
                node: rec.node,
                method: r.method.clone(),
                path: r.path.clone(),
            });
        }
        let tail = format!(
            "node {} connection {}, {} bytes not parsed as HTTP",
            rec.node,
            rec.conn,
            unparsed.len()
        );
        kept.push((tail, &unparsed));
        for (at, bytes) in kept {
            for n in needles {
                if find(bytes, &n.bytes).is_some() {
                    out.leaks.push(format!("{} in {at}", n.what));
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The tests.

fn cli_send_and_fetch_reveal_no_recipient_outside_onions(runtime: Runtime) {
    let started = Instant::now();
    let mut net = ProxiedNetwork::start(runtime, NODES, true);
    net.wait_ready();
    let seed = net.seed();
    let proxy_addresses: BTreeSet<String> =
        net.proxies.iter().map(|p| p.address.to_string()).collect();
    let node_addresses: BTreeSet<String> = net.nodes.iter().map(|n| n.listen.to_string()).collect();

    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("alice.key");
    let key = key.to_str().unwrap();
    let contact = keygen(Path::new(key));
    let contact_text = contact.to_string();
    let message = "privacy check: nothing outside the onion";

    let sent = ghost(&["send", "--via", &seed, "--to", &contact_text, message]);
    assert!(
        sent.status.success(),
        "send through the proxies failed: {}\n{}\nseed log:\n{}",
        text(&sent.stdout),
        text(&sent.stderr),
        net.log_tail(0)
    );
    // The message may reach the member the fetch reads a moment after the quorum
    // acknowledged it: fetch until it shows, with a deadline.
    let mut fetched_outputs = Vec::new();
    wait_for("ghost fetch prints the message", CLI_TIMEOUT, || {
        let fetched = ghost(&["fetch", "--via", &seed, "--key", key]);
        assert!(
            fetched.status.success(),
            "fetch through the proxies failed: {}\n{}",
            text(&fetched.stdout),
            text(&fetched.stderr)
        );
        let stdout = text(&fetched.stdout);
        let found = stdout.contains(message);
        fetched_outputs.push(stdout);
        found.then_some(())
    });

    // Every node address the CLI printed is a proxy: the client never went around them.
    let printed = format!("{}{}", text(&sent.stdout), fetched_outputs.concat());
    for word in printed.split(|c: char| c.is_whitespace() || c == '(' || c == ')') {
        let word = word.trim_end_matches(|c: char| !c.is_ascii_digit());
        if word.starts_with("127.0.0.1:") {
            assert!(
                proxy_addresses.contains(word) && !node_addresses.contains(word),
                "the CLI used {word}, which is not a node's recording proxy: {printed}"
            );
        }
    }

    net.stop_nodes();
    let mut needles = needles_for(&contact);
    needles.extend(printed_hashes(&text(&sent.stdout), &contact.recipient));
    let found = scan(&net.recordings(), &needles);

    // Negative control: the recorder records. Nodes only ever POST to each other, so a GET
    // through the seed's proxy is the client's (its directory request); and every hop of
    // the send and of each fetch crossed a proxy as a `POST /v1/onion`.
    assert!(
        found
            .requests
            .iter()
            .any(|r| r.node == 0 && r.method == "GET"),
        "the seed's proxy recorded no GET from the client: {:?}",
        found.requests
    );
    let onions = found.count("POST", "/v1/onion");
    let expected_onions = 3 * (1 + fetched_outputs.len());
    assert!(
        onions >= expected_onions,
        "the proxies recorded {onions} onion packets, fewer than 3 hops × {} commands",
        1 + fetched_outputs.len()
    );

    assert!(
        found.per_recipient_paths.is_empty(),
        "the client contacted nodes on per-recipient paths:\n  {}\nand the recipient showed outside onions:\n  {}",
        found.per_recipient_paths.join("\n  "),
        found.leaks.join("\n  ")
    );
    assert!(
        found.leaks.is_empty(),
        "the recipient showed outside onion packets:\n  {}",
        found.leaks.join("\n  ")
    );
    eprintln!(
        "{runtime:?} privacy: {} requests recorded ({onions} onion packets, {} peer envelopes), {} needles, none found; {:?}",
        found.requests.len(),
        found.count("POST", "/v1/peer"),
        needles.len(),
        started.elapsed()
    );
}

/// The scanner can fail: a per-recipient request sent through a proxy in front of a real
/// node is reported, both its path and the hex id in it, while the same recipient inside
/// an onion body is not, and bodies of other endpoints (chunked here) are scanned.
fn scanner_reports_a_per_recipient_request_sent_through_a_proxy(runtime: Runtime) {
    let mut net = ProxiedNetwork::start(runtime, 1, true);
    let keys = tempfile::tempdir().unwrap();
    let contact = keygen(&keys.path().join("bob.key"));
    let id = contact.recipient.0;
    let id_hex = hex::encode(id);
    let point_hex = hex::encode(proto_core::ring::key_point(&contact.recipient).to_be_bytes());
    let proxy = net.proxies[0].address;

    let mut onion = vec![0u8; proto_core::PACKET_LEN];
    onion[100..132].copy_from_slice(&id);
    onion[200..264].copy_from_slice(id_hex.as_bytes());
    let mut wire = Vec::new();
    write!(
        wire,
        "GET /v1/nodes/swarm/{id_hex} HTTP/1.1\r\nHost: {proxy}\r\n\r\n"
    )
    .unwrap();
    write!(
        wire,
        "POST /v1/onion HTTP/1.1\r\nHost: {proxy}\r\nContent-Length: {}\r\n\r\n",
        onion.len()
    )
    .unwrap();
    wire.extend_from_slice(&onion);
    // The ring point split across two chunks: only a de-chunked body shows it.
    let (a, b) = point_hex.split_at(7);
    write!(
        wire,
        "POST /v1/nodes/register HTTP/1.1\r\nHost: {proxy}\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    )
    .unwrap();
    write!(wire, "GET /health HTTP/1.1\r\nHost: {proxy}\r\n\r\n").unwrap();

    let mut s = TcpStream::connect_timeout(&proxy, Duration::from_secs(5)).unwrap();
    s.write_all(&wire).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answers = Vec::new();
    let _ = s.read_to_end(&mut answers);
    drop(s);
    net.stop_nodes();

    let recordings = net.recordings();
    assert_eq!(
        recordings.iter().map(|r| r.bytes.len()).sum::<usize>(),
        wire.len(),
        "the proxy recorded exactly what was sent"
    );
    let found = scan(&recordings, &needles_for(&contact));
    let seen: Vec<(&str, &str)> = found
        .requests
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    let swarm_path = format!("/v1/nodes/swarm/{id_hex}");
    assert_eq!(
        seen,
        [
            ("GET", swarm_path.as_str()),
            ("POST", "/v1/onion"),
            ("POST", "/v1/nodes/register"),
            ("GET", "/health"),
        ]
    );
    assert_eq!(
        found.per_recipient_paths,
        [format!(
            "node 0 connection 0 request 0 (GET /v1/nodes/swarm/{id_hex})"
        )]
    );
    assert_eq!(
        found.leaks,
        [
            format!(
                "recipient id (lowercase hex) in node 0 connection 0 request 0 (GET /v1/nodes/swarm/{id_hex}), request line and headers"
            ),
            "ring point (lowercase hex) in node 0 connection 0 request 2 (POST /v1/nodes/register), body".to_owned(),
        ],
        "the id in the onion body is not reported; the id in the path and the point in the chunked body are"
    );
}

/// The same network on its default links, TLS: every byte a proxy recorded, client to
/// node and node to node alike, is a TLS record stream. No request line, no header and no
/// recipient needle shows anywhere, peer envelopes (which do name recipients) included,
/// while the CLI still sends and fetches through the proxies, pinning every node but the
/// seed to its descriptor's key.
fn on_tls_links_the_wire_shows_no_http_and_no_recipient(runtime: Runtime) {
    let mut net = ProxiedNetwork::start(runtime, NODES, false);
    net.wait_ready();
    let seed = net.seed();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("carol.key");
    let key = key.to_str().unwrap();
    let contact = keygen(Path::new(key));
    let message = "tls check: nothing readable on the wire";
    let sent = ghost_tls(&[
        "send",
        "--via",
        &seed,
        "--to",
        &contact.to_string(),
        message,
    ]);
    assert!(
        sent.status.success(),
        "send over TLS failed: {}\n{}\nseed log:\n{}",
        text(&sent.stdout),
        text(&sent.stderr),
        net.log_tail(0)
    );
    wait_for(
        "ghost fetch over TLS prints the message",
        CLI_TIMEOUT,
        || {
            let fetched = ghost_tls(&["fetch", "--via", &seed, "--key", key]);
            assert!(
                fetched.status.success(),
                "fetch over TLS failed: {fetched:?}"
            );
            text(&fetched.stdout).contains(message).then_some(())
        },
    );
    net.stop_nodes();

    let recordings = net.recordings();
    let carrying: Vec<&Recording> = recordings.iter().filter(|r| !r.bytes.is_empty()).collect();
    // The client's connections and the nodes' connections to each other (gossip,
    // probes, replication, forwarded onions): more connections than nodes.
    assert!(
        carrying.len() > NODES,
        "the proxies recorded only {} connections with bytes",
        carrying.len()
    );
    for r in &carrying {
        assert_eq!(
            r.bytes[..2],
            [0x16, 0x03],
            "node {} connection {} does not open with a TLS handshake record",
            r.node,
            r.conn
        );
        for clear in [&b"HTTP/1."[..], b"POST /", b"GET /", b"content-length"] {
            assert!(
                find(&r.bytes, clear).is_none(),
                "node {} connection {} carries {:?} in the clear",
                r.node,
                r.conn,
                String::from_utf8_lossy(clear)
            );
        }
    }
    let mut needles = needles_for(&contact);
    needles.extend(printed_hashes(&text(&sent.stdout), &contact.recipient));
    let found = scan(&recordings, &needles);
    assert!(
        found.requests.is_empty(),
        "requests parsed: {:?}",
        found.requests
    );
    assert!(
        found.leaks.is_empty(),
        "the recipient showed on the wire:\n  {}",
        found.leaks.join("\n  ")
    );
}
