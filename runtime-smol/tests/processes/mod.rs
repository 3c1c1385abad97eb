//! Helpers shared by the multi-process tests: polling with a deadline, reading one metric,
//! starting a local network of real `ghostnode` processes.
// Each test file uses some of these helpers, not all.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use runtime_smol::client;
use runtime_smol::local::LocalNetwork;

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
    let net = LocalNetwork::start(env!("CARGO_BIN_EXE_ghostnode").as_ref(), root, n, 0, "")
        .expect("the nodes start");
    net.wait_ready(Duration::from_secs(30))
        .expect("the nodes find each other");
    net
}
