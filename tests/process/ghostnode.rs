//! The node binaries as a user runs them, each test once with `ghostnode` (smol) and
//! once with `ghostnode-sync` (blocking threads): first start creates a private identity
//! key, the node answers `/health`, a restart keeps the identity, bad flags get a clear
//! error, and traffic counts are served only on the admin listener.
//!
//! The binaries are found in `target/<profile>/` (see `common`): `cargo test
//! --workspace` builds them, since runtime-smol, runtime-sync and ghost-cli all have
//! integration tests; or build them first with `cargo build -p runtime-smol -p
//! runtime-sync -p ghost-cli --bins`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::Runtime;

common::runtime_tests!(
    single: first_start_creates_a_private_identity_that_a_restart_keeps,
    traffic_counts_and_health_detail_are_served_only_on_the_admin_listener,
    unknown_route_and_wrong_packet_size_get_json_errors,
    bad_flags_get_a_clear_message_and_exit_code_2,
    known_nodes_are_saved_at_stop_and_used_as_seeds_at_the_next_start,
    a_network_with_join_work_gets_a_worked_identity_and_refuses_a_lazy_one,
    a_client_that_half_closes_after_a_complete_request_gets_its_answer,
);

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A started node: the process, its public address, its ID and its admin address.
struct Started {
    process: Running,
    address: String,
    id: String,
    admin: String,
}

/// Starts the node `binary` on free ports (public and admin) and reads its "listening on
/// ADDR as node ID" and "admin on ADDR" lines.
fn start(binary: &Path, data_dir: &Path) -> Started {
    let mut child = Command::new(binary)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        // Raw HTTP to the public listener below: the edges are the same inside TLS.
        .arg("--insecure-plaintext")
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the node starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut lines = String::new();
    stdout.read_line(&mut lines).expect("first line");
    stdout.read_line(&mut lines).expect("second line");
    let Some(started) = ghost_cli::local::parse_start_lines(&lines) else {
        panic!("unexpected start lines: {lines}");
    };
    Started {
        process: Running(child),
        address: started.address,
        id: started.id,
        admin: started.admin,
    }
}

/// The whole HTTP answer to `GET path` at `addr`.
fn get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn health(addr: &str) -> Option<String> {
    get(addr, "/health")
}

fn wait_healthy(addr: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(r) = health(addr).filter(|r| r.starts_with("HTTP/1.1 200")) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "node at {addr} never became healthy"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn first_start_creates_a_private_identity_that_a_restart_keeps(runtime: Runtime) {
    let binary = runtime.binary_for(0);
    let dir = tempfile::tempdir().unwrap();
    let node = start(&binary, dir.path());
    wait_healthy(&node.address);
    let id = node.id.clone();
    let body = wait_healthy(&node.admin);
    assert!(body.contains(&format!("\"node\":\"{id}\"")), "{body}");
    let key = dir.path().join("identity.key");
    assert_eq!(std::fs::read(&key).unwrap().len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let tls_key = dir.path().join("tls.key");
    // The current key's seed, then when it was made (docs/OPERATING.md).
    let tls_file = std::fs::read(&tls_key).unwrap();
    assert_eq!(tls_file.len(), 40, "a seed and its creation time");
    let tls_seed: [u8; 32] = tls_file[..32].try_into().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&tls_key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let published = published_tls_key_hash(&node.address, &id);
    assert_eq!(
        published,
        ghost_host::tls::TlsKey::from_secret_bytes(&tls_seed).key_hash(),
        "the descriptor names the hash of the key in tls.key"
    );
    drop(node.process);
    let again = start(&binary, dir.path());
    wait_healthy(&again.address);
    assert_eq!(again.id, id, "restart must keep the node identity");
    assert_eq!(
        std::fs::read(&tls_key).unwrap(),
        tls_file,
        "and its TLS key"
    );
    assert_eq!(published_tls_key_hash(&again.address, &id), published);
}

/// The `tls_key_hash` of node `id`'s own descriptor, as its directory listing serves it.
fn published_tls_key_hash(addr: &str, id: &str) -> [u8; 32] {
    let listing = get(addr, "/v1/nodes/directory").expect("answers");
    let body = listing.split("\r\n\r\n").nth(1).unwrap_or_default();
    let page: serde_json::Value = serde_json::from_str(body).expect("a JSON listing");
    page["nodes"]
        .as_array()
        .expect("a node list")
        .iter()
        .filter_map(|d| hex::decode(d["descriptor"].as_str()?).ok())
        .filter_map(|bytes| proto_core::keys::Descriptor::decode(&bytes).ok())
        .find(|d| d.node_id().to_string() == id)
        .map(|d| d.tls_key_hash().0)
        .expect("the node lists its own descriptor")
}

fn traffic_counts_and_health_detail_are_served_only_on_the_admin_listener(runtime: Runtime) {
    let binary = runtime.binary_for(0);
    let dir = tempfile::tempdir().unwrap();
    let node = start(&binary, dir.path());
    let public = wait_healthy(&node.address);
    let body = public.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert_eq!(body, r#"{"status":"ok"}"#, "public /health says no more");
    let metrics = get(&node.address, "/metrics").expect("the public listener answers");
    assert!(metrics.starts_with("HTTP/1.1 404"), "{metrics}");
    assert!(!metrics.contains("ghost_"), "no counter leaks: {metrics}");

    let detail = wait_healthy(&node.admin);
    assert!(
        detail.contains(&format!("\"node\":\"{}\"", node.id)),
        "{detail}"
    );
    assert!(detail.contains("\"peers\":0"), "{detail}");
    let metrics = get(&node.admin, "/metrics").expect("the admin listener answers");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("ghost_packets_forwarded_total"),
        "{metrics}"
    );
    // The admin listener speaks no protocol: onions and peer messages go to the public one.
    let onion = get(&node.admin, "/v1/nodes/directory").expect("answers");
    assert!(onion.starts_with("HTTP/1.1 404"), "{onion}");
}

fn unknown_route_and_wrong_packet_size_get_json_errors(runtime: Runtime) {
    let binary = runtime.binary_for(0);
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let node = start(&binary, dir.path());
    let addr = node.address.clone();
    wait_healthy(&addr);
    let ask = |req: String| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let missing = ask(format!(
        "GET /nope HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    ));
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    assert!(missing.contains("\"error\":\"unknown_route\""), "{missing}");
    let short = ask(format!(
        "POST /v1/onion HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
    ));
    assert!(short.starts_with("HTTP/1.1 400"), "{short}");
    assert!(short.contains("2048 bytes"));
    let wrong_method = ask(format!(
        "GET /v1/onion HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    ));
    assert!(wrong_method.starts_with("HTTP/1.1 405"), "{wrong_method}");
    // The node is still healthy after the bad requests.
    wait_healthy(&addr);
}

fn bad_flags_get_a_clear_message_and_exit_code_2(runtime: Runtime) {
    let binary = runtime.binary_for(0);
    let out = Command::new(&binary)
        .args(["--listen", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--listen"), "{err}");
    let out = Command::new(&binary)
        .args(["--admin-listen", "localhost"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--admin-listen") && err.contains("off"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("identity.key"), b"short").unwrap();
    let out = Command::new(&binary)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a 32-byte identity key"));
}

/// Polls the admin `/health` until the node reports `peers` known nodes (deadline 30 s).
fn wait_peers(addr: &str, peers: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let want = format!("\"peers\":{peers}");
    while !health(addr).is_some_and(|r| r.contains(&want)) {
        assert!(Instant::now() < deadline, "{addr} never knew {peers} peers");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn known_nodes_are_saved_at_stop_and_used_as_seeds_at_the_next_start(runtime: Runtime) {
    let binary = runtime.binary_for(0);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // B runs alone, without seeds; A has no configured seeds either, only B's address in
    // its peers file, as a previous run would have left it.
    let b = start(&binary, dir_b.path());
    let addr_b = b.address.clone();
    wait_healthy(&addr_b);
    std::fs::write(dir_a.path().join("peers.txt"), format!("{addr_b}\n")).unwrap();
    let Started {
        process: mut a,
        admin: admin_a,
        ..
    } = start(&binary, dir_a.path());
    wait_peers(&b.admin, 1);
    wait_peers(&admin_a, 1);
    // A graceful stop writes the nodes it knows.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(a.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while a.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the node did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let saved = std::fs::read_to_string(dir_a.path().join("peers.txt")).unwrap();
    assert_eq!(saved.lines().collect::<Vec<_>>(), [addr_b.as_str()]);
}

fn a_network_with_join_work_gets_a_worked_identity_and_refuses_a_lazy_one(runtime: Runtime) {
    let binary = runtime.binary_for(0);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "[node]\njoin_difficulty = 12\n").unwrap();
    let out = Command::new(&binary)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
            "--data-dir",
        ])
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map(Running)
        .expect("the node starts");
    let key = dir.path().join("identity.key");
    let seed = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(bytes) = std::fs::read(&key)
                && bytes.len() == 32
            {
                break <[u8; 32]>::try_from(bytes).unwrap();
            }
            assert!(Instant::now() < deadline, "no identity key written");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    drop(out);
    let id = proto_core::keys::IdentityKey::from_seed(&seed).node_id();
    let work = proto_core::keys::node_id_work(&id);
    assert!(work >= 12, "the new identity carries {work} bits");

    // The network now asks for more than this key carries: the node says so and stops.
    std::fs::write(&config, format!("[node]\njoin_difficulty = {}\n", work + 1)).unwrap();
    let refused = Command::new(&binary)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
            "--data-dir",
        ])
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_ne!(refused.status.code(), Some(0));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("node.join_difficulty"), "{err}");
    // Beyond the documented bound the configuration itself is refused.
    std::fs::write(&config, "[node]\njoin_difficulty = 33\n").unwrap();
    let too_much = Command::new(&binary)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&too_much.stderr).contains("at most 32"));
}

/// A client may shut its sending side once its request is complete (`shutdown(SHUT_WR)`,
/// as `curl --no-keepalive` and some proxies do): the answer must still come, on both
/// listeners, for a bodiless and a body-carrying request.
fn a_client_that_half_closes_after_a_complete_request_gets_its_answer(runtime: Runtime) {
    use std::io::{Read, Write};
    let binary = runtime.binary_for(0);
    let dir = tempfile::tempdir().unwrap();
    let node = start(&binary, dir.path());
    wait_healthy(&node.address);
    let half_closed = |addr: &str, request: &[u8]| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let health = half_closed(&node.address, b"GET /health HTTP/1.1\r\nHost: n\r\n\r\n");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with(r#"{"status":"ok"}"#), "{health}");
    let metrics = half_closed(&node.admin, b"GET /metrics HTTP/1.1\r\nHost: n\r\n\r\n");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("ghost_packets_dropped_total"), "{metrics}");
    let short = half_closed(
        &node.address,
        b"POST /v1/onion HTTP/1.1\r\nHost: n\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert!(short.starts_with("HTTP/1.1 400"), "{short}");
    assert!(short.contains("\"error\":\"wrong_packet_size\""), "{short}");
}
