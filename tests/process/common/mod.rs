//! Helpers shared by the multi-process tests: polling with a deadline, reading one metric,
//! starting a local network of real `ghostnode` processes, finding the `ghost` CLI.
// Each test file uses some of these helpers, not all.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ghost_cli::client;
use ghost_cli::local::LocalNetwork;

/// Pause between two polls of a condition that has a deadline.
const POLL: Duration = Duration::from_millis(20);

/// Polls `probe` until it yields a value; panics naming `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(POLL);
    }
}

/// The value of the unlabelled metric `name` (full name, `ghost_…`) in the `/metrics` of
/// the admin listener at `admin`, if the node answers and reports it.
pub fn metric(admin: &str, name: &str) -> Option<f64> {
    let text = String::from_utf8(client::get(admin, "/metrics").ok()?).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// `n` real `ghostnode` processes under `root` on free loopback ports, each knowing all
/// the others.
pub fn start_network(root: &Path, n: usize) -> LocalNetwork {
    let net = LocalNetwork::start(|_| env!("CARGO_BIN_EXE_ghostnode").into(), root, n, 0, "")
        .expect("the nodes start");
    net.wait_ready(Duration::from_secs(30))
        .expect("the nodes find each other");
    net
}

/// The `ghost` command line (package `ghost-cli`) in this test's target directory: tests
/// run from `target/<profile>/deps/`, binaries sit in `target/<profile>/`. Cargo builds
/// it with `cargo test --workspace` or `cargo test -p ghost-cli -p runtime-smol` (its
/// package has integration tests), not with `cargo test -p runtime-smol` alone: a
/// dependency's binaries are never built for its dependents.
pub fn ghost_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps/");
    let ghost = profile_dir.join("ghost");
    assert!(
        ghost.exists(),
        "{} not found: build it first with `cargo build -p ghost-cli --bins` (same profile \
         as the tests), or run `cargo test --workspace`",
        ghost.display()
    );
    ghost
}
