//! A network of real node processes on loopback: what `ghost up` starts and what the
//! multi-process tests drive (kill, restart, stop).
//!
//! Each node runs from its own directory (`node-<i>/`: `ghostnode.toml`, identity key,
//! database, `node.log`) and its own binary, so one network can mix runtimes (`ghostnode`
//! on smol, `ghostnode-sync`): every node binary takes the same `--config` file and prints
//! the same start lines. Node 0 is the seed; the others join through it. Invariants: a
//! node counts as started only once it printed its listening line; [`LocalNetwork`]
//! stops its processes when dropped (SIGTERM, then SIGKILL after a grace period), so no
//! test leaves a node behind; every wait has a deadline.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::get;

/// Settings every local node gets on top of the defaults: loopback means every request
/// comes from one address, so the per-source limits are raised; timers are shortened so
/// a small network forms and converges in seconds.
pub const LOCAL_CONFIG: &str = "\
[node]
gossip_interval_ms = 1000
probe_interval_ms = 2000
evict_after_ms = 15000
anti_entropy_interval_ms = 5000
source_rate_per_second = 100000
source_rate_burst = 100000
recipient_rate_per_second = 10000
recipient_rate_burst = 10000
";

/// [`LOCAL_CONFIG`] with `extra` (TOML) merged over it ([`merge_settings`]). A
/// network's nodes get this after their own addresses, so `extra` may not set those.
pub fn local_settings(extra: &str) -> Result<String, String> {
    let table = parse_settings(extra)?;
    for key in ["listen", "admin_listen", "data_dir", "seeds"] {
        if table.contains_key(key) {
            return Err(format!(
                "the extra node configuration sets `{key}`, which each local node gets on its own"
            ));
        }
    }
    merge_settings(LOCAL_CONFIG, extra)
}

/// `over` merged over `base` (both TOML): tables key by key, any other value replaced
/// by `over`'s.
pub fn merge_settings(base: &str, over: &str) -> Result<String, String> {
    fn merge(base: &mut toml::Table, over: toml::Table) {
        for (key, value) in over {
            match (base.get_mut(&key), value) {
                (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
                (_, value) => {
                    base.insert(key, value);
                }
            }
        }
    }
    let mut settings = parse_settings(base)?;
    merge(&mut settings, parse_settings(over)?);
    toml::to_string(&settings).map_err(|e| format!("cannot write the node configuration: {e}"))
}

fn parse_settings(text: &str) -> Result<toml::Table, String> {
    text.parse()
        .map_err(|e| format!("the node configuration is not TOML: {e}"))
}

/// What `ghostnode` reports on stdout once it runs: its two start lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartLines {
    /// The public address it listens on.
    pub address: String,
    /// Its node ID (hex).
    pub id: String,
    /// Its admin listener's address.
    pub admin: String,
}

/// Parses `listening on ADDR as node ID` followed by `admin on ADDR`; `None` for anything
/// else (a node that failed to start, or runs with its admin listener off).
#[must_use]
pub fn parse_start_lines(text: &str) -> Option<StartLines> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let [
        "listening",
        "on",
        address,
        "as",
        "node",
        id,
        "admin",
        "on",
        admin,
    ] = words[..]
    else {
        return None;
    };
    Some(StartLines {
        address: address.to_owned(),
        id: id.to_owned(),
        admin: admin.to_owned(),
    })
}

/// The node binaries a local network can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Runtime {
    /// `ghostnode`: the node on smol and hyper.
    Smol,
    /// `ghostnode-sync`: the node on blocking threads.
    Sync,
    /// Both, alternating: node 0 smol, node 1 sync, node 2 smol, ...
    Mixed,
}

impl Runtime {
    /// The binaries nodes 0, 1, 2, ... run, in turn.
    fn rotation(self) -> &'static [NodeBinary] {
        match self {
            Self::Smol => &[NodeBinary::Smol],
            Self::Sync => &[NodeBinary::Sync],
            Self::Mixed => &[NodeBinary::Smol, NodeBinary::Sync],
        }
    }

    /// The name on the command line (`smol`, `sync`, `mixed`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Smol => "smol",
            Self::Sync => "sync",
            Self::Mixed => "mixed",
        }
    }
}

/// One node binary.
#[derive(Clone, Copy, Debug)]
enum NodeBinary {
    /// `ghostnode`, built by `runtime-smol`.
    Smol,
    /// `ghostnode-sync`, built by `runtime-sync`.
    Sync,
}

/// The node binaries given on the command line (or in the environment); `None` means
/// the one next to the running program.
#[derive(Clone, Debug, Default)]
pub struct NodeBinaries {
    /// `ghostnode`.
    pub smol: Option<PathBuf>,
    /// `ghostnode-sync`.
    pub sync: Option<PathBuf>,
}

impl NodeBinaries {
    /// The binary of each node of a `runtime` network, in turn, each checked to exist;
    /// a missing one is an error saying how to build it or where to point.
    pub fn rotation(&self, runtime: Runtime) -> Result<Vec<PathBuf>, String> {
        runtime
            .rotation()
            .iter()
            .map(|which| self.find(*which))
            .collect()
    }

    fn find(&self, which: NodeBinary) -> Result<PathBuf, String> {
        let (given, name, package, flag) = match which {
            NodeBinary::Smol => (&self.smol, "ghostnode", "runtime-smol", "--ghostnode"),
            NodeBinary::Sync => (
                &self.sync,
                "ghostnode-sync",
                "runtime-sync",
                "--ghostnode-sync",
            ),
        };
        let binary = match given {
            Some(b) => b.clone(),
            None => std::env::current_exe()
                .map_err(|e| format!("cannot find this program's path: {e}"))?
                .with_file_name(name),
        };
        if !binary.exists() {
            return Err(format!(
                "{} not found: build it (cargo build --release -p {package} --bins) or pass {flag}",
                binary.display()
            ));
        }
        Ok(binary)
    }
}

/// One running (or stopped) node process.
pub struct LocalNode {
    /// The node binary it runs (and runs again on a restart).
    pub binary: PathBuf,
    /// Its directory.
    pub dir: PathBuf,
    /// The address it listens on.
    pub address: String,
    /// The address of its admin listener (`/metrics`, detailed `/health`).
    pub admin: String,
    /// Its node ID (hex).
    pub id: String,
    child: Option<Child>,
}

impl LocalNode {
    /// Whether the process is running.
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Its process ID while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// Several node processes on loopback.
pub struct LocalNetwork {
    /// The nodes, node 0 being the seed.
    pub nodes: Vec<LocalNode>,
}

impl LocalNetwork {
    /// Starts `n` nodes under `root`, node `i` running the binary `binary(i)` and
    /// listening on `base_port + i` (or on free ports when `base_port` is 0).
    /// `extra_config` (TOML) is merged over [`LOCAL_CONFIG`] key by key, its values
    /// winning ([`local_settings`]); it must not set the addresses, data directory or
    /// seeds, which are each node's own.
    pub fn start(
        binary: impl Fn(usize) -> PathBuf,
        root: &Path,
        n: usize,
        base_port: u16,
        extra_config: &str,
    ) -> Result<Self, String> {
        if n == 0 {
            return Err("a network needs at least one node".into());
        }
        let settings = local_settings(extra_config)?;
        let mut net = Self {
            nodes: Vec::with_capacity(n),
        };
        for i in 0..n {
            let dir = root.join(format!("node-{i}"));
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let port = if base_port == 0 {
                0
            } else {
                base_port
                    .checked_add(u16::try_from(i).map_err(|_| "too many nodes")?)
                    .ok_or("the ports run past 65535: choose a lower --base-port")?
            };
            let seeds = match net.nodes.first() {
                Some(seed) => format!("seeds = [\"{}\"]\n", seed.address),
                None => String::new(),
            };
            let config = |listen: &str, admin: &str| {
                format!(
                    "listen = \"{listen}\"\nadmin_listen = \"{admin}\"\ndata_dir = \"{}\"\n{seeds}{settings}",
                    dir.display()
                )
            };
            let write = |text: String| {
                std::fs::write(dir.join("ghostnode.toml"), text)
                    .map_err(|e| format!("cannot write the config of node {i}: {e}"))
            };
            write(config(&format!("127.0.0.1:{port}"), "127.0.0.1:0"))?;
            let node = spawn(binary(i), &dir)?;
            // A restart comes back on the same addresses, as a real node would.
            write(config(&node.address, &node.admin))?;
            net.nodes.push(node);
        }
        Ok(net)
    }

    /// The seed's address.
    #[must_use]
    pub fn seed(&self) -> &str {
        &self.nodes[0].address
    }

    /// Waits until every running node answers its admin `/health` and knows all other
    /// running nodes, or `timeout` passes.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let running = self.nodes.iter().filter(|n| n.is_running()).count();
        let deadline = Instant::now() + timeout;
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            loop {
                let peers = get(&node.admin, "/health")
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .and_then(|v| v["peers"].as_u64());
                if peers.is_some_and(|p| p + 1 >= running as u64) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "node {} knows {} of {} peers after {timeout:?}",
                        node.address,
                        peers.map_or_else(|| "no".into(), |p| p.to_string()),
                        running - 1
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Kills node `i` with SIGKILL (a crash: nothing is flushed).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts a stopped node `i` from its directory (same identity, same address).
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        if self.nodes[i].is_running() {
            return Ok(());
        }
        let node = spawn(self.nodes[i].binary.clone(), &self.nodes[i].dir)?;
        if node.id != self.nodes[i].id {
            return Err(format!("node {i} came back with another identity"));
        }
        self.nodes[i] = node;
        Ok(())
    }

    /// Stops node `i` gracefully (SIGTERM) and returns its exit status; SIGKILL after
    /// `grace`.
    pub fn terminate(&mut self, i: usize, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.nodes[i].child.take()?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).ok()?);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops every node gracefully.
    pub fn stop(&mut self) {
        for i in 0..self.nodes.len() {
            self.terminate(i, Duration::from_secs(15));
        }
    }
}

impl Drop for LocalNetwork {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `binary` on `dir/ghostnode.toml` and waits for its start lines.
/// How long a node may take to print its start lines.
const START_TIMEOUT: Duration = Duration::from_secs(30);

fn spawn(binary: PathBuf, dir: &Path) -> Result<LocalNode, String> {
    spawn_within(binary, dir, START_TIMEOUT)
}

fn spawn_within(binary: PathBuf, dir: &Path, timeout: Duration) -> Result<LocalNode, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("node.log"))
        .map_err(|e| format!("cannot open {}/node.log: {e}", dir.display()))?;
    let mut child = Command::new(&binary)
        .arg("--config")
        .arg(dir.join("ghostnode.toml"))
        .env_remove("GHOST_LISTEN")
        .env_remove("GHOST_DATA_DIR")
        .env_remove("GHOST_SEEDS")
        .env_remove("GHOST_ADVERTISE")
        .env_remove("GHOST_CONFIG")
        .env_remove("GHOST_ADMIN_LISTEN")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    // The node prints its listening and admin lines once bound, or exits with a
    // message on stderr; a node that does neither is not waited for forever. The reader
    // ends when the lines are read or the pipe closes (the node exited or was killed).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = String::new();
        let mut stdout = BufReader::new(stdout);
        let _ = stdout.read_line(&mut lines);
        let _ = stdout.read_line(&mut lines);
        let _ = tx.send(lines);
    });
    let lines = rx.recv_timeout(timeout).unwrap_or_default();
    match parse_start_lines(&lines) {
        Some(started) => Ok(LocalNode {
            binary,
            dir: dir.to_owned(),
            address: started.address,
            admin: started.admin,
            id: started.id,
            child: Some(child),
        }),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
            Err(format!(
                "node in {} did not start (no start lines within {timeout:?}, or it exited): {}",
                dir.display(),
                log.lines().last().unwrap_or("no message")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_settings_merge_over_the_local_ones_key_by_key() {
        let merged =
            local_settings("[node]\ngossip_interval_ms = 7\n[store]\ncommit_interval_ms = 1\n")
                .expect("valid TOML");
        let table: toml::Table = merged.parse().expect("valid TOML out");
        assert_eq!(table["node"]["gossip_interval_ms"].as_integer(), Some(7));
        // Untouched local settings stay.
        assert_eq!(table["node"]["probe_interval_ms"].as_integer(), Some(2000));
        assert_eq!(table["store"]["commit_interval_ms"].as_integer(), Some(1));
        assert!(local_settings("").is_ok());
    }

    #[test]
    fn a_node_that_never_prints_its_start_lines_is_not_waited_for_forever() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let silent = dir.path().join("silent-node");
        std::fs::write(&silent, "#!/bin/sh\nexec sleep 30\n").expect("written");
        std::fs::set_permissions(&silent, std::fs::Permissions::from_mode(0o755))
            .expect("executable");
        let started = std::time::Instant::now();
        let e = spawn_within(silent, dir.path(), Duration::from_millis(300))
            .err()
            .expect("a silent node is refused");
        assert!(e.contains("did not start"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "it was waited for"
        );
    }

    #[test]
    fn extra_settings_that_are_not_toml_or_set_a_node_address_are_refused() {
        let e = local_settings("[node").unwrap_err();
        assert!(e.contains("not TOML"), "{e}");
        let e = local_settings("listen = \"127.0.0.1:1\"").unwrap_err();
        assert!(e.contains("`listen`"), "{e}");
    }
}
