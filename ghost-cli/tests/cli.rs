//! The README's quick start, as a user runs it, on each runtime (`ghost up --runtime
//! smol|sync|mixed`): `ghost up` starts a network and prints ready-to-paste commands; the
//! printed `ghost send` delivers through three distinct hops and the printed `ghost fetch`
//! prints the original message; Ctrl-C stops every node.
//!
//! `ghost up` needs the node binaries `ghostnode` (runtime-smol) and `ghostnode-sync`
//! (runtime-sync), found in this test's target directory (`target/<profile>/`; tests run
//! from `target/<profile>/deps/`). Cargo does not build a dependency's binaries for its
//! dependents, so `cargo test -p ghost-cli` alone does not build them: `cargo test
//! --workspace` does, since both runtimes have integration tests; or build them first with
//! `cargo build -p runtime-smol -p runtime-sync --bins`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The node binary `name` in this test's target directory; panics saying how to build it.
fn node_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps/");
    let binary = profile_dir.join(name);
    assert!(
        binary.exists(),
        "{} not found: build it first with `cargo build -p runtime-smol -p runtime-sync \
         --bins` (same profile as the tests), or run `cargo test --workspace`",
        binary.display()
    );
    binary
}

fn ghostnode_binary() -> PathBuf {
    node_binary("ghostnode")
}

struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a printed example command line (program, then arguments; the message is quoted).
fn run_printed(line: &str) -> std::process::Output {
    let (head, quoted) = match line.split_once(" \"") {
        Some((head, rest)) => (head, Some(rest.trim_end_matches('"'))),
        None => (line, None),
    };
    let mut words = head.split_whitespace();
    let program = words.next().expect("a program");
    let mut command = Command::new(program);
    command.args(words);
    if let Some(message) = quoted {
        command.arg(message);
    }
    command.output().expect("the printed command runs")
}

#[test]
fn printed_send_and_fetch_deliver_the_message_through_three_distinct_hops_smol() {
    quick_start("smol");
}

#[test]
fn printed_send_and_fetch_deliver_the_message_through_three_distinct_hops_sync() {
    quick_start("sync");
}

#[test]
fn printed_send_and_fetch_deliver_the_message_through_three_distinct_hops_mixed() {
    quick_start("mixed");
}

fn quick_start(runtime: &str) {
    let root = tempfile::tempdir().unwrap();
    let mut up = Up(Command::new(env!("CARGO_BIN_EXE_ghost"))
        .args([
            "up",
            "--nodes",
            "5",
            "--base-port",
            "0",
            "--runtime",
            runtime,
            "--data-dir",
        ])
        .arg(root.path())
        .arg("--ghostnode")
        .arg(ghostnode_binary())
        .arg("--ghostnode-sync")
        .arg(node_binary("ghostnode-sync"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ghost up starts"));
    let stdout = up.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("ghost up prints its instructions within 60 s");
        let done = line.starts_with("Press Ctrl-C");
        printed.push(line);
        if done {
            break;
        }
    }
    assert!(printed[0].contains("5 nodes"), "{printed:?}");
    let send = printed
        .iter()
        .find(|l| l.trim_start().contains(" send --via "))
        .expect("a send example");
    let fetch = printed
        .iter()
        .find(|l| l.trim_start().contains(" fetch --via "))
        .expect("a fetch example");

    let sent = run_printed(send.trim());
    let sent_text = String::from_utf8_lossy(&sent.stdout);
    assert!(sent.status.success(), "send failed: {sent:?}");
    let path_line = sent_text
        .lines()
        .find(|l| l.contains("path (3 hops):"))
        .expect("send prints the path");
    let hops: BTreeSet<&str> = path_line
        .split("):")
        .nth(1)
        .unwrap()
        .split(" -> ")
        .map(|h| h.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(hops.len(), 3, "three distinct hops: {path_line}");

    let fetched = run_printed(fetch.trim());
    let fetched_text = String::from_utf8_lossy(&fetched.stdout);
    assert!(fetched.status.success(), "fetch failed: {fetched:?}");
    assert!(
        fetched_text.contains("hello through three hops"),
        "{fetched_text}"
    );
    assert!(fetched_text.contains("path (3 hops):"), "{fetched_text}");
    // The cursor is remembered: the next fetch has nothing new.
    let again = run_printed(fetch.trim());
    assert!(String::from_utf8_lossy(&again.stdout).contains("no new messages"));

    // Ctrl-C: ghost up stops every node and exits 0.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(up.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = up.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ghost up did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    for i in 0..5 {
        let log = std::fs::read_to_string(root.path().join(format!("node-{i}/node.log"))).unwrap();
        assert!(
            log.contains("database committed and closed"),
            "node {i}: {log}"
        );
    }
}

#[test]
fn send_with_a_malformed_contact_says_what_to_fix() {
    let out = Command::new(env!("CARGO_BIN_EXE_ghost"))
        .args(["send", "--to", "abc", "hi"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--to must be a contact of 128 hex digits"),
        "{err}"
    );
}

#[test]
fn keygen_refuses_to_overwrite_and_writes_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.key");
    let first = Command::new(env!("CARGO_BIN_EXE_ghost"))
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(first.status.success());
    assert!(String::from_utf8_lossy(&first.stdout).contains("contact:"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let second = Command::new(env!("CARGO_BIN_EXE_ghost"))
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already exists"));
}

/// `ghost up` with `args` (and a free base port, data under `data_dir`).
fn up_once(data_dir: &Path, args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ghost"))
        .args(["up", "--base-port", "0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env_remove("GHOSTNODE_BIN")
        .env_remove("GHOSTNODE_SYNC_BIN")
        .stdin(Stdio::null())
        .output()
        .expect("ghost runs")
}

#[test]
fn up_with_a_missing_node_binary_says_how_to_build_it_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-binary");
    // `ghost` itself stands in for a node binary that exists (it is no node: see below).
    let present = Path::new(env!("CARGO_BIN_EXE_ghost"));
    let cases = [
        (
            "smol",
            missing.as_path(),
            present,
            "-p runtime-smol",
            "--ghostnode",
        ),
        (
            "sync",
            present,
            missing.as_path(),
            "-p runtime-sync",
            "--ghostnode-sync",
        ),
        (
            "mixed",
            present,
            missing.as_path(),
            "-p runtime-sync",
            "--ghostnode-sync",
        ),
        (
            "mixed",
            missing.as_path(),
            present,
            "-p runtime-smol",
            "--ghostnode",
        ),
    ];
    for (runtime, smol, sync, package, flag) in cases {
        let out = up_once(
            dir.path(),
            &[
                "--runtime".as_ref(),
                runtime.as_ref(),
                "--ghostnode".as_ref(),
                smol.as_os_str(),
                "--ghostnode-sync".as_ref(),
                sync.as_os_str(),
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--runtime {runtime}: {err}");
        assert!(
            err.contains(&format!("cargo build --release {package} --bins")),
            "--runtime {runtime}: {err}"
        );
        assert!(err.contains(flag), "--runtime {runtime}: {err}");
        assert!(
            !dir.path().join("node-0").exists(),
            "--runtime {runtime}: nothing starts"
        );
    }
    // The control: `--runtime smol` does not need the missing sync binary; it gets past
    // the check and tries to start node 0, which fails because `ghost` is no node: exit 1.
    let out = up_once(
        dir.path(),
        &[
            "--runtime".as_ref(),
            "smol".as_ref(),
            "--ghostnode".as_ref(),
            present.as_os_str(),
            "--ghostnode-sync".as_ref(),
            missing.as_os_str(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("did not start"), "{err}");
    assert!(!err.contains("runtime-sync"), "{err}");
}
