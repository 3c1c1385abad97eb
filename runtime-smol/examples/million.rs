//! A node holding 1,000,000 small messages: how long the real `ghostnode` takes from
//! spawn to answering `/health`, and how much memory it holds. Figures go to
//! docs/DEPENDENCIES.md.
//!
//! Run (build the node binary first, the example starts it as a child process):
//!
//! ```text
//! cargo build --release -p runtime-smol --bins --examples
//! cargo run --release -p runtime-smol --example million -- DIR [COUNT=1000000] [--peers]
//! ```
//!
//! 1. Fills `DIR/messages.redb` with COUNT messages of 100–200 bytes for 10,000
//!    recipients through `MessageStore::insert` on `RedbBackend` (commit every 500), unless
//!    the database already holds COUNT: a second run re-measures the restart only.
//! 2. Starts `ghostnode --data-dir DIR --listen 127.0.0.1:0` (binary from `GHOSTNODE_BIN`,
//!    else `target/release/ghostnode`) and times spawn → first `/health` 200.
//! 3. Sends 300 `GET /health`, checks `ghost_messages_stored` in `/metrics`.
//! 4. Reads the node's peak (VmHWM) and current (VmRSS) resident memory from /proc.
//! 5. Stops it with SIGTERM and prints its exit status.
//!
//! Steps 2–5 run twice: first on the database this program just closed, then again after
//! the node's own SIGTERM stop (the restart an operator sees). The last line sums up the
//! restart: `messages=N restart_to_health_ms=X vmhwm_mb=Y vmrss_mb=Z db_file_mb=W`
//! (memory in MiB, file in MB).
//!
//! With `--peers`, it then restarts the node next to two empty nodes (loopback settings of
//! `ghost up`), retrieves five recipients' messages through 3-hop onion paths ending at the
//! full node, and samples the full node's memory while anti-entropy runs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ghost_cli::client::{Client, get};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use proto_core::keys::IdentityKey;
use proto_core::request::{Request, Response, RetrieveRequest};
use proto_core::store::{MAX_TTL_MS, MessageStore, NewMessage, StoreConfig};
use proto_core::{Namespace, RecipientId};
use rand_core::UnwrapErr;
use runtime_smol::host::now;
use runtime_smol::redb_store::RedbBackend;

/// Recipients the messages are spread over (the default quota is 10,000 per recipient).
const RECIPIENTS: u64 = 10_000;
/// Messages per commit while filling.
const COMMIT_EVERY: u64 = 500;
/// Progress line every this many messages.
const PROGRESS_EVERY: u64 = 100_000;
/// Longest wait for the node to print its listening line and to answer `/health`.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// `/health` requests sent once the node serves.
const HEALTH_REQUESTS: u32 = 300;
/// With `--peers`: how long the full node's memory is sampled while anti-entropy runs.
const PEER_SAMPLE: Duration = Duration::from_secs(30);
/// With `--peers`: sampling stops (and the nodes are killed) above this resident size.
const RSS_CAP_KB: u64 = 4 << 20;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            eprintln!("million: {problem}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut positional = Vec::new();
    let mut peers = false;
    for arg in std::env::args().skip(1) {
        if arg == "--peers" {
            peers = true;
        } else {
            positional.push(arg);
        }
    }
    let usage = "usage: million DIR [COUNT=1000000] [--peers]";
    let dir = PathBuf::from(positional.first().ok_or(usage)?);
    let count: u64 = match positional.get(1) {
        Some(c) => c.parse().map_err(|_| format!("COUNT {c:?}: {usage}"))?,
        None => 1_000_000,
    };
    if count.div_ceil(RECIPIENTS) > StoreConfig::default().recipient_max_messages {
        return Err(format!(
            "{count} messages over {RECIPIENTS} recipients exceed the per-recipient quota"
        ));
    }
    let binary = ghostnode_binary()?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let db = dir.join("messages.redb");

    let held = fill(&db, count)?;
    let db_bytes = std::fs::metadata(&db).map_or(0, |m| m.len());
    println!(
        "database {}: {held} messages, {:.1} MB ({:.0} bytes per message)",
        db.display(),
        mb(db_bytes),
        db_bytes as f64 / held.max(1) as f64
    );

    // The node alone, with its default settings: a first start (the database was just
    // closed by this program), then a restart after the node's own SIGTERM stop.
    let args = vec![
        "--data-dir".into(),
        dir.as_os_str().to_owned(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    let first = start_measure_stop(&binary, &args, &dir, held, "start after a clean close")?;
    let again = start_measure_stop(&binary, &args, &dir, held, "restart after SIGTERM")?;
    println!(
        "first_start_to_health_ms={} restart_to_health_ms={}",
        first.serving.as_millis(),
        again.serving.as_millis()
    );
    println!(
        "messages={held} restart_to_health_ms={} vmhwm_mb={:.1} vmrss_mb={:.1} db_file_mb={:.1}",
        again.serving.as_millis(),
        mib(again.hwm_kb),
        mib(again.rss_kb),
        mb(db_bytes)
    );

    if peers {
        with_peers(&binary, &dir, held)?;
    }
    Ok(())
}

/// What one start of the node measured.
struct Started {
    serving: Duration,
    hwm_kb: u64,
    rss_kb: u64,
}

/// Starts the node, times spawn → `/health` 200, loads it, checks `/metrics`, reads its
/// memory, and stops it with SIGTERM.
fn start_measure_stop(
    binary: &Path,
    args: &[std::ffi::OsString],
    dir: &Path,
    held: u64,
    label: &str,
) -> Result<Started, String> {
    println!("\n{label}:");
    let mut node = NodeProcess::spawn(binary, args, &dir.join("ghostnode.log"))?;
    let serving = node.wait_healthy()?;
    println!(
        "ghostnode pid {}: listening line after {} ms, /health 200 after {} ms",
        node.pid,
        node.line_after.as_millis(),
        serving.as_millis()
    );
    health_load(&node.address)?;
    let stored = metric(&node.address, "ghost_messages_stored")?;
    if stored != held {
        return Err(format!(
            "/metrics reports ghost_messages_stored {stored}, the database holds {held}"
        ));
    }
    println!("/metrics: ghost_messages_stored {stored} (matches the database)");
    let (hwm_kb, rss_kb) = (node.status_kb("VmHWM"), node.status_kb("VmRSS"));
    println!(
        "node memory: VmHWM {:.1} MiB (peak resident), VmRSS {:.1} MiB (now)",
        mib(hwm_kb),
        mib(rss_kb)
    );
    node.stop()?;
    Ok(Started {
        serving,
        hwm_kb,
        rss_kb,
    })
}

/// Where the node binary is: `GHOSTNODE_BIN`, else `target/release/ghostnode`.
fn ghostnode_binary() -> Result<PathBuf, String> {
    let path = std::env::var_os("GHOSTNODE_BIN")
        .map_or_else(|| PathBuf::from("target/release/ghostnode"), PathBuf::from);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "the node binary {} does not exist: build it with `cargo build --release -p \
             runtime-smol --bins` from the workspace root, or set GHOSTNODE_BIN to its path",
            path.display()
        ))
    }
}

/// Fills `db` up to `count` messages (resuming a partial fill); returns how many it holds.
fn fill(db: &Path, count: u64) -> Result<u64, String> {
    let opening = Instant::now();
    let backend =
        RedbBackend::open(db).map_err(|e| format!("cannot open {}: {e}", db.display()))?;
    // A database its last process did not close is repaired here (redb walks every page).
    println!(
        "opened {} in {} ms",
        db.display(),
        opening.elapsed().as_millis()
    );
    let mut store = MessageStore::open(backend, StoreConfig::default())
        .map_err(|e| format!("cannot open the store: {e}"))?;
    let have = store.totals().0;
    if have >= count {
        println!(
            "{} already holds {have} messages: fill skipped",
            db.display()
        );
        return Ok(have);
    }
    let ids: Vec<RecipientId> = (0..RECIPIENTS)
        .map(|r| recipient_key(r).recipient_id())
        .collect();
    println!(
        "filling {} with {} messages of 100-200 bytes for {RECIPIENTS} recipients, commit every {COMMIT_EVERY}",
        db.display(),
        count - have
    );
    let started = Instant::now();
    let mut lap = Instant::now();
    let mut t = now();
    for i in have..count {
        if i % COMMIT_EVERY == 0 {
            t = now();
        }
        let recipient = ids[usize::try_from(i % RECIPIENTS).expect("below RECIPIENTS")];
        store
            .insert(
                NewMessage::unsigned(
                    recipient,
                    Namespace::DIRECT,
                    &body(i),
                    t,
                    t.plus_millis(MAX_TTL_MS),
                ),
                t,
            )
            .map_err(|e| format!("message {i} refused: {e}"))?;
        if (i + 1) % COMMIT_EVERY == 0 {
            store
                .backend_mut()
                .commit()
                .map_err(|e| format!("commit: {e}"))?;
        }
        if (i + 1) % PROGRESS_EVERY == 0 {
            println!(
                "  {:>9} messages, {:.0} s, {:.0} stores/s over the last {PROGRESS_EVERY}",
                i + 1,
                started.elapsed().as_secs_f64(),
                PROGRESS_EVERY as f64 / lap.elapsed().as_secs_f64()
            );
            lap = Instant::now();
        }
    }
    store
        .backend_mut()
        .close()
        .map_err(|e| format!("commit: {e}"))?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fill: {} stores in {secs:.1} s, {:.0} stores/s (commit every {COMMIT_EVERY})",
        count - have,
        (count - have) as f64 / secs
    );
    Ok(count)
}

/// SplitMix64: a fixed, seedable stream for recipient seeds and message bodies.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The identity key of recipient `r` (fixed, so a later run can sign its retrieves).
fn recipient_key(r: u64) -> IdentityKey {
    let mut state = r ^ 0x6d69_6c6c_696f_6e21;
    let mut seed = [0u8; 32];
    for chunk in seed.chunks_mut(8) {
        chunk.copy_from_slice(&splitmix(&mut state).to_be_bytes());
    }
    IdentityKey::from_seed(&seed)
}

/// Body of message `i`: 100 to 200 bytes, unique (its index first), the rest noise.
fn body(i: u64) -> Vec<u8> {
    let len = 100 + usize::try_from(i % 101).expect("below 101");
    let mut out = Vec::with_capacity(len + 8);
    out.extend_from_slice(&i.to_be_bytes());
    let mut state = i;
    while out.len() < len {
        out.extend_from_slice(&splitmix(&mut state).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Messages recipient `r` holds when the database holds `held` (message `i` goes to
/// recipient `i % RECIPIENTS`).
fn expected_for(r: u64, held: u64) -> u64 {
    held / RECIPIENTS + u64::from(r < held % RECIPIENTS)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// A `kB` field of /proc/PID/status (0 when unreadable).
fn proc_status_kb(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::to_owned))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A `ghostnode` child process; killed when dropped unless stopped.
struct NodeProcess {
    child: Child,
    pid: i32,
    address: String,
    spawned: Instant,
    line_after: Duration,
    log: PathBuf,
}

impl NodeProcess {
    /// Spawns the node and waits (at most [`START_DEADLINE`]) for its listening line.
    fn spawn(binary: &Path, args: &[std::ffi::OsString], log: &Path) -> Result<Self, String> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let spawned = Instant::now();
        let mut child = Command::new(binary)
            .args(args)
            .env_remove("GHOST_CONFIG")
            .env_remove("GHOST_LISTEN")
            .env_remove("GHOST_DATA_DIR")
            .env_remove("GHOST_SEEDS")
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let pid = i32::try_from(child.id()).map_err(|_| "pid out of range")?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep reading so the node never writes into a closed pipe.
            for _ in lines {}
        });
        let mut node = Self {
            child,
            pid,
            address: String::new(),
            spawned,
            line_after: Duration::ZERO,
            log: log.to_owned(),
        };
        let line = match rx.recv_timeout(START_DEADLINE) {
            Ok(Some(Ok(line))) => line,
            Ok(_) => return Err(format!("the node exited: {}", node.last_log_line())),
            Err(_) => return Err(format!("no listening line after {START_DEADLINE:?}")),
        };
        node.line_after = spawned.elapsed();
        match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["listening", "on", address, "as", "node", _id] => {
                node.address = (*address).to_owned();
                Ok(node)
            }
            _ => Err(format!("unexpected first line {line:?}")),
        }
    }

    fn last_log_line(&self) -> String {
        std::fs::read_to_string(&self.log)
            .ok()
            .and_then(|l| l.lines().last().map(str::to_owned))
            .unwrap_or_else(|| "no message".into())
    }

    /// Polls `/health` every 10 ms; returns the time from spawn to the first 200.
    fn wait_healthy(&mut self) -> Result<Duration, String> {
        loop {
            if get(&self.address, "/health").is_ok() {
                return Ok(self.spawned.elapsed());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "the node exited ({status}): {}",
                    self.last_log_line()
                ));
            }
            if self.spawned.elapsed() > START_DEADLINE {
                return Err(format!("/health not 200 after {START_DEADLINE:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A `kB` field of its /proc/PID/status (0 when unreadable).
    fn status_kb(&self, field: &str) -> u64 {
        proc_status_kb(self.pid, field)
    }

    /// SIGTERM, then waits up to 30 s for the exit (SIGKILL after); prints the status.
    fn stop(&mut self) -> Result<(), String> {
        let asked = Instant::now();
        kill(Pid::from_raw(self.pid), Signal::SIGTERM).map_err(|e| format!("SIGTERM: {e}"))?;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                println!(
                    "ghostnode pid {} stopped by SIGTERM in {} ms: {status}",
                    self.pid,
                    asked.elapsed().as_millis()
                );
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("the node exited with {status} after SIGTERM"))
                };
            }
            if asked.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err("the node ignored SIGTERM for 30 s: killed".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends [`HEALTH_REQUESTS`] `GET /health` one after another; prints their latency.
fn health_load(address: &str) -> Result<(), String> {
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..HEALTH_REQUESTS {
        let one = Instant::now();
        get(address, "/health").map_err(|e| format!("/health under load: {e}"))?;
        slowest = slowest.max(one.elapsed());
    }
    println!(
        "{HEALTH_REQUESTS} GET /health: {:.2} ms mean, {:.2} ms slowest",
        started.elapsed().as_secs_f64() * 1e3 / f64::from(HEALTH_REQUESTS),
        slowest.as_secs_f64() * 1e3
    );
    Ok(())
}

/// An unlabelled gauge or counter from `/metrics`.
fn metric(address: &str, name: &str) -> Result<u64, String> {
    let text = get(address, "/metrics").map_err(|e| format!("/metrics: {e}"))?;
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .ok_or_else(|| format!("/metrics has no {name}"))
}

/// Every message of recipient `r` on `last`, through a fresh 3-hop path per attempt (3
/// attempts).
fn retrieve_all(
    client: &Client,
    last: &proto_core::Descriptor,
    r: u64,
    rng: &mut UnwrapErr<getrandom::SysRng>,
) -> Result<u64, String> {
    let keys = recipient_key(r);
    let mut problem = String::new();
    for _ in 0..3 {
        let path = client.path_to(last, rng).map_err(|e| e.to_string())?;
        let (mut after, mut got) = (0, 0u64);
        let outcome = loop {
            let request = Request::Retrieve(RetrieveRequest {
                recipient: keys.recipient_id(),
                namespace: Namespace::DIRECT,
                timestamp: now(),
                after,
                limit: 512,
            });
            match client.request(&path, &request, Some(&keys)) {
                Ok(Response::Messages { messages, more }) => {
                    got += messages.len() as u64;
                    after = messages.last().map_or(after, |m| m.seq);
                    if !more {
                        break Ok(got);
                    }
                }
                Ok(other) => break Err(format!("{other:?}")),
                Err(e) => break Err(e.to_string()),
            }
        };
        match outcome {
            Ok(got) => return Ok(got),
            Err(e) => problem = e,
        }
    }
    Err(problem)
}

/// The full node next to two empty ones: onion retrieves, and memory during anti-entropy.
fn with_peers(binary: &Path, dir: &Path, held: u64) -> Result<(), String> {
    let root = dir.join("million-peers");
    if root.exists() {
        std::fs::remove_dir_all(&root)
            .map_err(|e| format!("cannot empty {}: {e}", root.display()))?;
    }
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let config = root.join("local.toml");
    std::fs::write(&config, ghost_cli::local::LOCAL_CONFIG)
        .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let node_args = |data: &Path, seed: Option<&str>| {
        let mut a: Vec<std::ffi::OsString> = vec![
            "--config".into(),
            config.as_os_str().to_owned(),
            "--data-dir".into(),
            data.as_os_str().to_owned(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        if let Some(s) = seed {
            a.extend(["--seed".into(), s.into()]);
        }
        a
    };
    let mut full = NodeProcess::spawn(binary, &node_args(dir, None), &dir.join("ghostnode.log"))?;
    let serving = full.wait_healthy()?;
    println!(
        "\n--peers: full node (loopback settings) serving after {} ms",
        serving.as_millis()
    );
    let mut others = Vec::new();
    for i in 1..=2 {
        let data = root.join(format!("peer-{i}"));
        let mut p = NodeProcess::spawn(
            binary,
            &node_args(&data, Some(&full.address)),
            &root.join(format!("peer-{i}.log")),
        )?;
        p.wait_healthy()?;
        others.push(p);
    }
    let formed = Instant::now();
    let client = loop {
        // Every node must know both others, or a hop cannot reach the next one.
        let all_know = std::iter::once(&full)
            .chain(&others)
            .all(|n| metric(&n.address, "ghost_peers_known").is_ok_and(|k| k >= 2));
        if all_know
            && let Ok(c) = Client::connect(&full.address)
            && c.nodes().len() >= 3
        {
            break c;
        }
        if formed.elapsed() > START_DEADLINE {
            return Err("the three nodes did not learn each other in 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("network of 3 formed in {} ms", formed.elapsed().as_millis());
    let last = *client
        .nodes()
        .iter()
        .find(|d| d.address().as_str() == full.address)
        .ok_or("the bootstrap list lacks the full node")?;
    let mut rng = UnwrapErr(getrandom::SysRng);
    let mut failed = 0;
    for r in [0, 1, 4_999, 7_777, RECIPIENTS - 1] {
        let started = Instant::now();
        match retrieve_all(&client, &last, r, &mut rng) {
            Ok(got) => {
                let want = expected_for(r, held);
                println!(
                    "retrieve recipient {r} through 3 hops to the full node: {got} of {want} \
                     messages in {} ms",
                    started.elapsed().as_millis()
                );
                if got != want {
                    return Err(format!("recipient {r}: retrieved {got}, expected {want}"));
                }
            }
            Err(e) => {
                failed += 1;
                println!(
                    "retrieve recipient {r} failed after {} ms: {e}",
                    started.elapsed().as_millis()
                );
            }
        }
    }
    println!(
        "sampling the full node for {} s while anti-entropy runs (every 5 s with these settings)",
        PEER_SAMPLE.as_secs()
    );
    let sampling = Instant::now();
    // Memory is sampled on its own thread: /health may block while the node is busy.
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let pid = full.pid;
    let sampler = std::thread::spawn(move || {
        let mut peak = (0, Duration::ZERO);
        while matches!(
            stop_rx.recv_timeout(Duration::from_millis(50)),
            Err(mpsc::RecvTimeoutError::Timeout)
        ) {
            let rss = proc_status_kb(pid, "VmRSS");
            if rss > peak.0 {
                peak = (rss, sampling.elapsed());
            }
            if rss > RSS_CAP_KB {
                println!("VmRSS {:.0} MiB passed the cap: killing the node", mib(rss));
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                break;
            }
        }
        peak
    });
    let mut slowest_health = Duration::ZERO;
    while sampling.elapsed() < PEER_SAMPLE {
        let asked = Instant::now();
        let healthy = get(&full.address, "/health").is_ok();
        let took = asked.elapsed();
        slowest_health = slowest_health.max(took);
        println!(
            "  t={:>4.1} s VmRSS {:>7.1} MiB, /health {} in {} ms",
            sampling.elapsed().as_secs_f64(),
            mib(full.status_kb("VmRSS")),
            if healthy { "200" } else { "failed" },
            took.as_millis()
        );
        std::thread::sleep(Duration::from_millis(2000).saturating_sub(took));
    }
    let _ = stop_tx.send(());
    let (peak_rss, peak_at) = sampler.join().map_err(|_| "the memory sampler panicked")?;
    println!(
        "highest VmRSS sampled: {:.1} MiB at t={:.1} s",
        mib(peak_rss),
        peak_at.as_secs_f64()
    );
    let hwm = full.status_kb("VmHWM");
    let rounds = metric(&full.address, "ghost_anti_entropy_rounds_total").unwrap_or(0);
    let replicated: Vec<u64> = others
        .iter()
        .map(|p| metric(&p.address, "ghost_messages_stored").unwrap_or(0))
        .collect();
    println!(
        "full node with 2 peers: VmHWM {:.1} MiB, highest VmRSS sampled {:.1} MiB, \
         slowest /health {} ms, anti-entropy rounds {rounds}; messages on the peers \
         {replicated:?}",
        mib(hwm),
        mib(peak_rss),
        slowest_health.as_millis()
    );
    for p in &mut others {
        p.stop()?;
    }
    full.stop()?;
    println!(
        "peers=2 restart_to_health_ms={} vmhwm_mb={:.1} peak_vmrss_mb={:.1} \
         slowest_health_ms={} retrieves_failed={failed}",
        serving.as_millis(),
        mib(hwm),
        mib(peak_rss),
        slowest_health.as_millis()
    );
    Ok(())
}
