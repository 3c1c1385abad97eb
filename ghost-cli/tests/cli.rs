//! The README's quick start, as a user runs it: `ghost up` starts a network and prints
//! ready-to-paste commands; the printed `ghost send` delivers through three distinct hops
//! and the printed `ghost fetch` prints the original message; Ctrl-C stops every node.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

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
fn printed_send_and_fetch_deliver_the_message_through_three_distinct_hops() {
    let root = tempfile::tempdir().unwrap();
    let mut up = Up(Command::new(env!("CARGO_BIN_EXE_ghost"))
        .args(["up", "--nodes", "5", "--base-port", "0", "--data-dir"])
        .arg(root.path())
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
