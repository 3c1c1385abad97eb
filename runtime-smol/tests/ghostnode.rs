//! The `ghostnode` binary as a user runs it: first start creates a private identity key,
//! the node answers `/health`, a restart keeps the identity, bad flags get a clear error.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the node on a free port; returns it and its "listening on ADDR as node ID" line.
fn start(data_dir: &std::path::Path) -> (Running, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ghostnode"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ghostnode starts");
    let stdout = child.stdout.take().expect("piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        words.get(..2),
        Some(&["listening", "on"][..]),
        "unexpected first line: {line}"
    );
    (Running(child), words[2].to_owned(), words[5].to_owned())
}

fn health(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
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

#[test]
fn first_start_creates_a_private_identity_that_a_restart_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let (node, addr, id) = start(dir.path());
    let body = wait_healthy(&addr);
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
    drop(node);
    let (_again, addr, same) = start(dir.path());
    wait_healthy(&addr);
    assert_eq!(same, id, "restart must keep the node identity");
}

#[test]
fn unknown_route_and_wrong_packet_size_get_json_errors() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let (_node, addr, _) = start(dir.path());
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

#[test]
fn bad_flags_get_a_clear_message_and_exit_code_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_ghostnode"))
        .args(["--listen", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--listen"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("identity.key"), b"short").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ghostnode"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a 32-byte identity key"));
}

/// Polls `/health` until the node reports `peers` known nodes (deadline 30 s).
fn wait_peers(addr: &str, peers: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let want = format!("\"peers\":{peers}");
    while !health(addr).is_some_and(|r| r.contains(&want)) {
        assert!(Instant::now() < deadline, "{addr} never knew {peers} peers");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn known_nodes_are_saved_at_stop_and_used_as_seeds_at_the_next_start() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // B runs alone, without seeds; A has no configured seeds either, only B's address in
    // its peers file, as a previous run would have left it.
    let (_b, addr_b, _) = start(dir_b.path());
    wait_healthy(&addr_b);
    std::fs::write(dir_a.path().join("peers.txt"), format!("{addr_b}\n")).unwrap();
    let (mut a, addr_a, _) = start(dir_a.path());
    wait_peers(&addr_b, 1);
    wait_peers(&addr_a, 1);
    // A graceful stop writes the nodes it knows.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(a.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while a.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "ghostnode did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let saved = std::fs::read_to_string(dir_a.path().join("peers.txt")).unwrap();
    assert_eq!(saved.lines().collect::<Vec<_>>(), [addr_b.as_str()]);
}

#[test]
fn a_network_with_join_work_gets_a_worked_identity_and_refuses_a_lazy_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "[node]\njoin_difficulty = 12\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ghostnode"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map(Running)
        .expect("ghostnode starts");
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
    let refused = Command::new(env!("CARGO_BIN_EXE_ghostnode"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
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
    let too_much = Command::new(env!("CARGO_BIN_EXE_ghostnode"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&too_much.stderr).contains("at most 32"));
}
