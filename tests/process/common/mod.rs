//! Helpers shared by the multi-process tests: which node binary a test runs
//! ([`Runtime`], [`runtime_tests!`]), finding the binaries, polling with a deadline,
//! reading one metric, starting a local network of real node processes.
//!
//! The binaries are `ghostnode` (runtime-smol), `ghostnode-sync` (runtime-sync) and
//! `ghost` (ghost-cli), looked up in this test's target directory: tests run from
//! `target/<profile>/deps/`, binaries sit in `target/<profile>/`. Cargo never builds a
//! dependency's binaries for its dependents, so `cargo test -p ghost-tests` alone does not
//! build them; `cargo test --workspace` does (runtime-smol, runtime-sync and ghost-cli all
//! have integration tests, so cargo builds their binaries), and so does [`BUILD_COMMAND`].
//! A missing binary fails the test with that command.
//!
//! Invariants: every wait has a deadline; every network started here is stopped when
//! dropped (see [`LocalNetwork`]).
// Each test file uses some of these helpers, not all.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ghost_cli::client;
use ghost_cli::local::LocalNetwork;

/// Pause between two polls of a condition that has a deadline.
pub const POLL: Duration = Duration::from_millis(20);

/// Builds every binary the process tests run, in the profile and target directory of
/// the tests (add `--release`, or set `CARGO_TARGET_DIR`, as for the tests).
pub const BUILD_COMMAND: &str = "cargo build -p runtime-smol -p runtime-sync -p ghost-cli --bins";

/// The node on smol (package runtime-smol).
pub const SMOL_NODE: &str = "ghostnode";
/// The node on blocking threads (package runtime-sync).
pub const SYNC_NODE: &str = "ghostnode-sync";
/// The command line (package ghost-cli).
pub const CLI: &str = "ghost";

/// Which node binaries a scenario runs. Both take the same flags, config file and data
/// directory and print the same start lines, so a scenario only chooses the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// Every node is `ghostnode`.
    Smol,
    /// Every node is `ghostnode-sync`.
    Sync,
    /// Even nodes (the seed among them) are `ghostnode`, odd nodes `ghostnode-sync`.
    Mixed,
}

impl Runtime {
    /// The binary node `node` of a network runs (node 0 is the seed). For a scenario with
    /// a single process this is the binary of [`Runtime::Smol`] or [`Runtime::Sync`].
    pub fn binary_for(self, node: usize) -> PathBuf {
        let name = match self {
            Self::Smol => SMOL_NODE,
            Self::Sync => SYNC_NODE,
            Self::Mixed if node.is_multiple_of(2) => SMOL_NODE,
            Self::Mixed => SYNC_NODE,
        };
        binary(name)
    }
}

/// Expands each scenario `fn name(runtime: Runtime)` into a module `name` of `#[test]`s,
/// one per runtime: `name::smol`, `name::sync` and `name::mixed`. Prefix the list with
/// `single:` for scenarios of one node process, where a mixed network means nothing:
/// only `name::smol` and `name::sync`.
// A file with its own pairs of tests (data_dir.rs) uses no expansion.
#[allow(unused_macros)]
macro_rules! runtime_tests {
    (single: $($scenario:ident),+ $(,)?) => {
        $( $crate::common::runtime_tests!(@one $scenario [smol Smol] [sync Sync]); )+
    };
    (@one $scenario:ident $([$test:ident $variant:ident])+) => {
        mod $scenario {
            $(
                #[test]
                fn $test() {
                    super::$scenario($crate::common::Runtime::$variant);
                }
            )+
        }
    };
    ($($scenario:ident),+ $(,)?) => {
        $( $crate::common::runtime_tests!(@one $scenario [smol Smol] [sync Sync] [mixed Mixed]); )+
    };
}
#[allow(unused_imports)]
pub(crate) use runtime_tests;

/// The binary `name` in this test's target directory (`target/<profile>/`); panics with
/// [`BUILD_COMMAND`] when it is not there.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps/");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first with `{BUILD_COMMAND}` (same profile and \
         target directory as the tests), or run `cargo test --workspace`",
        path.display()
    );
    path
}

/// The `ghost` command line (package `ghost-cli`).
pub fn ghost_binary() -> PathBuf {
    binary(CLI)
}

/// Runs the `ghost` CLI with `args` (no `GHOST_SEED` from the environment, no stdin) and
/// collects its output; kills it and panics after `timeout`.
pub fn run_ghost(args: &[&str], timeout: Duration) -> Output {
    run_ghost_with_input(args, None, timeout)
}

/// [`run_ghost`] with `input`, when given, on its standard input (then closed).
pub fn run_ghost_with_input(args: &[&str], input: Option<&[u8]>, timeout: Duration) -> Output {
    let mut child = Command::new(ghost_binary())
        .args(args)
        .env_remove("GHOST_SEED")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ghost starts");
    if let Some(input) = input {
        // Dropping the pipe after the write is the end of ghost's input.
        let mut stdin = child.stdin.take().expect("piped");
        std::io::Write::write_all(&mut stdin, input).expect("ghost reads its input");
    }
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = pipe.read_to_end(&mut out);
            out
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waitable") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ghost {args:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(POLL);
    };
    Output {
        status,
        stdout: stdout.join().expect("drained"),
        stderr: stderr.join().expect("drained"),
    }
}

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

/// `ghost_messages_stored` of the node whose admin listener is `admin`.
pub fn messages_stored(admin: &str) -> Option<u64> {
    metric(admin, "ghost_messages_stored").map(|v| v as u64)
}

/// What a test that writes raw HTTP to public listeners appends to its nodes' config: the
/// HTTP edges under test are the same inside TLS, which other tests cover.
#[allow(dead_code)] // not every test file talks raw HTTP
pub const PLAINTEXT: &str = "[http]\ninsecure_plaintext = true\n";

/// A client of a [`PLAINTEXT`] network, reading its directory from `seed`.
#[allow(dead_code)] // not every test file talks raw HTTP
pub fn plaintext_client(seed: &str) -> ghost_cli::client::Client {
    ghost_cli::client::Client::with_links(
        seed,
        proto_core::client::ClientConfig::default(),
        ghost_cli::client::Links::InsecurePlaintext,
    )
    .expect("the seed lists the network")
}

/// `GET path` on the public listener at `address` of a [`PLAINTEXT`] node.
#[allow(dead_code)] // not every test file talks raw HTTP
pub fn plaintext_get(address: &str, path: &str) -> Result<Vec<u8>, ghost_cli::client::ClientError> {
    ghost_cli::client::get_public(address, path, ghost_cli::client::Links::InsecurePlaintext)
}

/// `n` real node processes of `runtime` under `root` on free loopback ports, each knowing
/// all the others.
pub fn start_network(runtime: Runtime, root: &Path, n: usize) -> LocalNetwork {
    start_network_with(runtime, root, n, "")
}

/// [`start_network_with`] on [`PLAINTEXT`] nodes.
#[allow(dead_code)] // not every test file talks raw HTTP
pub fn start_plaintext_network(
    runtime: Runtime,
    root: &Path,
    n: usize,
    extra_config: &str,
) -> LocalNetwork {
    let config = ghost_cli::local::merge_settings(extra_config, PLAINTEXT).expect("valid TOML");
    start_network_with(runtime, root, n, &config)
}

/// [`start_network`] with `extra_config` appended to every node's config file.
pub fn start_network_with(
    runtime: Runtime,
    root: &Path,
    n: usize,
    extra_config: &str,
) -> LocalNetwork {
    let net = LocalNetwork::start(|i| runtime.binary_for(i), root, n, 0, extra_config)
        .expect("the nodes start");
    net.wait_ready(Duration::from_secs(30))
        .expect("the nodes find each other");
    net
}

/// Stops node `i` with SIGTERM and checks it exits with 0 after committing and closing
/// its database: its log (appended to by every run in its directory) says so once more
/// than before the signal.
pub fn terminate_cleanly(net: &mut LocalNetwork, i: usize) {
    const CLOSED: &str = "database committed and closed";
    let log_path = net.nodes[i].dir.join("node.log");
    let closed_before = std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .matches(CLOSED)
        .count();
    let status = net.terminate(i, Duration::from_secs(15)).expect("running");
    assert!(status.success(), "node {i} exited with {status}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(
        log.matches(CLOSED).count(),
        closed_before + 1,
        "node {i} logs {CLOSED:?} at its stop: {log}"
    );
}
