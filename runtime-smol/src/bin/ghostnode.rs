//! `ghostnode`: one GhostNodes relay and swarm-store node on smol.
//!
//! Settings come from an optional TOML file (`--config`), overridden by environment
//! variables and flags. Keeps its identity key in `<data-dir>/identity.key` (created on
//! first start, mode 0600) and its messages in `<data-dir>/messages.redb`. A fresh onion
//! key is generated at every start (a new epoch), because the replay filter does not
//! survive a restart. The addresses of the nodes it knows are kept in
//! `<data-dir>/peers.txt` (every minute and at a stop) and used as extra seeds at the next
//! start. SIGINT or SIGTERM stop it gracefully: no new connections, in-flight
//! requests finish, the database is committed and closed, exit code 0.

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use proto_core::Epoch;
use proto_core::keys::{Address, IdentityKey, OnionKey};
use proto_core::node::{Node, NodeKeys};
use rand_core::UnwrapErr;
use runtime_smol::config::{AdminListen, Config, LogFormat};
use runtime_smol::host::{Host, now, shutdown_signal};
use runtime_smol::redb_store::RedbBackend;
use smol::{Async, Executor};
use zeroize::Zeroizing;

/// A GhostNodes node: relays onion packets and stores its swarms' messages.
#[derive(Parser, Debug)]
#[command(
    version,
    about = "A GhostNodes node: relays onion packets and stores its swarms' messages.",
    after_help = "Settings: defaults < --config file < environment < flags. Every setting is listed in docs/OPERATING.md.\n\nExamples:\n  ghostnode --listen 127.0.0.1:7100 --data-dir ./node1\n  ghostnode --listen 127.0.0.1:7101 --data-dir ./node2 --seed 127.0.0.1:7100\n  ghostnode --config /etc/ghostnode.toml --log-format json"
)]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "GHOST_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (host:port; port 0 picks a free one) [default: 127.0.0.1:7100].
    #[arg(long, env = "GHOST_LISTEN")]
    listen: Option<SocketAddr>,
    /// Address of the admin listener for /metrics and detailed /health (host:port, or
    /// "off") [default: 127.0.0.1:9710].
    #[arg(long, env = "GHOST_ADMIN_LISTEN")]
    admin_listen: Option<AdminListen>,
    /// Address published to other nodes [default: the listening address].
    #[arg(long, env = "GHOST_ADVERTISE")]
    advertise: Option<String>,
    /// Directory for the identity key and the message database [default: ghost-data].
    #[arg(long, env = "GHOST_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address of a node to join through (repeatable; replaces the file's seeds).
    #[arg(long = "seed", env = "GHOST_SEEDS", value_delimiter = ',')]
    seeds: Vec<String>,
    /// Log format [default: human].
    #[arg(long, env = "GHOST_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(problem) => {
            eprintln!("ghostnode: {problem}");
            return ExitCode::from(2);
        }
    };
    init_logs(&config);
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            eprintln!("ghostnode: {problem}");
            ExitCode::from(2)
        }
    }
}

fn load_config(args: &Args) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(admin) = args.admin_listen {
        config.admin_listen = admin;
    }
    if let Some(advertise) = &args.advertise {
        config.advertise = Some(advertise.clone());
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir.clone_from(dir);
    }
    if !args.seeds.is_empty() {
        config.seeds.clone_from(&args.seeds);
    }
    if let Some(format) = args.log_format {
        config.log_format = format;
    }
    config.validate()?;
    Ok(config)
}

fn init_logs(config: &Config) {
    // Logs go to stderr; stdout carries the "listening on" and "admin" lines scripts read.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter);
    match config.log_format {
        LogFormat::Human => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

fn run(config: Config) -> Result<(), String> {
    let data_dir = &config.data_dir;
    fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", data_dir.display()))?;
    let identity =
        load_or_create_identity(&data_dir.join("identity.key"), config.node.join_difficulty)?;
    let listener = TcpListener::bind(config.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let admin = match config.admin_listen.0 {
        Some(addr) => Some(TcpListener::bind(addr).map_err(|e| {
            format!("cannot listen for admin on {addr}: {e} (set admin_listen or --admin-listen, or \"off\")")
        })?),
        None => None,
    };
    let admin_bound = admin
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()
        .map_err(|e| format!("cannot read the bound admin address: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    if config.advertise.is_none() && bound.ip().is_unspecified() {
        return Err(format!(
            "listening on {bound} needs an advertise address other nodes can reach (--advertise HOST:PORT)"
        ));
    }
    let advertise = config
        .advertise
        .clone()
        .unwrap_or_else(|| bound.to_string());
    let address = Address::new(&advertise).map_err(|_| {
        format!(
            "advertise address {advertise:?} is not a host:port of at most 64 printable characters"
        )
    })?;
    let mut seeds = config
        .seeds
        .iter()
        .map(|s| Address::new(s).map_err(|_| format!("seed {s:?} is not a valid host:port")))
        .collect::<Result<Vec<_>, _>>()?;
    // The nodes known at the last stop are seeds too: a node without configured seeds (or
    // whose seeds are gone) finds the network again after any downtime.
    let peers_file = data_dir.join(PEERS_FILE);
    for known in read_peers(&peers_file) {
        if !seeds.contains(&known) && known != address {
            seeds.push(known);
        }
    }
    let started = std::time::Instant::now();
    let backend = RedbBackend::open_with_cache(
        &data_dir.join("messages.redb"),
        config.store.cache_mib << 20,
    )
    .map_err(|e| format!("cannot open the message database: {e}"))?;
    let mut rng = UnwrapErr(getrandom::SysRng);
    let epoch = Epoch(u32::try_from(now().0 / 1000).unwrap_or(u32::MAX));
    let keys = NodeKeys {
        onion: OnionKey::generate(epoch, &mut rng),
        identity,
        address,
    };
    let mut node_config = config.node_config();
    node_config.directory.allowlist = config.allowlist()?;
    let node = Node::new(node_config, keys, seeds, backend, now(), &mut rng)
        .map_err(|e| format!("cannot open the store: {e}"))?;
    let node_id = node.node_id();
    let (messages, _) = node.store().totals();
    let ex = Arc::new(Executor::new());
    let host = Host::with_settings(
        node,
        ex.clone(),
        config.http.clone(),
        Duration::from_millis(config.store.commit_interval_ms),
    );
    let listener =
        Async::new(listener).map_err(|e| format!("cannot use the listening socket: {e}"))?;
    let shutdown = shutdown_signal()?;
    tracing::info!(
        %node_id,
        %advertise,
        messages,
        startup_ms = started.elapsed().as_millis(),
        "node started"
    );
    println!("listening on {bound} as node {node_id}");
    match admin_bound {
        Some(a) => println!("admin on {a}"),
        None => println!("admin off"),
    }
    if let Some(admin) = admin {
        let admin =
            Async::new(admin).map_err(|e| format!("cannot use the admin listening socket: {e}"))?;
        ex.spawn(host.clone().serve_admin(admin)).detach();
    }
    let _ = std::io::stdout().flush();
    let saver = host.clone();
    let peers_path = peers_file.clone();
    ex.spawn(async move {
        loop {
            smol::Timer::after(PEERS_SAVE_INTERVAL).await;
            write_peers(&peers_path, &saver.peer_addresses());
        }
    })
    .detach();
    smol::block_on(ex.run(host.clone().serve_until(listener, async move {
        let _ = shutdown.recv().await;
    })));
    write_peers(&peers_file, &host.peer_addresses());
    tracing::info!("stopped");
    Ok(())
}

/// Addresses of the nodes known, one per line, in the data directory.
const PEERS_FILE: &str = "peers.txt";
/// How often the known nodes are written down (also at a graceful stop).
const PEERS_SAVE_INTERVAL: Duration = Duration::from_secs(60);
/// Most addresses kept: enough to find the network again, bounded.
const MAX_SAVED_PEERS: usize = 64;

/// The addresses saved at the last stop; a missing or damaged file gives none.
fn read_peers(path: &Path) -> Vec<Address> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| Address::new(l.trim()).ok())
        .take(MAX_SAVED_PEERS)
        .collect()
}

/// Replaces the saved addresses (write, then rename, so a crash leaves the old list).
/// An empty list keeps the old one: a node cut off from all peers still knows whom to ask.
fn write_peers(path: &Path, addresses: &[String]) {
    if addresses.is_empty() {
        return;
    }
    let text: String = addresses
        .iter()
        .take(MAX_SAVED_PEERS)
        .map(|a| format!("{a}\n"))
        .collect();
    let tmp = path.with_extension("tmp");
    if let Err(e) = fs::write(&tmp, text).and_then(|()| fs::rename(&tmp, path)) {
        tracing::warn!(error = %e, "cannot save the known nodes to {}", path.display());
    }
}

/// Reads the 32-byte identity seed, or creates it (readable by the owner only) carrying
/// the network's join work (`node.join_difficulty` bits: about 2^bits key generations).
fn load_or_create_identity(path: &Path, join_difficulty: u8) -> Result<IdentityKey, String> {
    let key =
        match fs::read(path).map(Zeroizing::new) {
            Ok(bytes) => {
                let seed: Zeroizing<[u8; 32]> =
                    Zeroizing::new(bytes.as_slice().try_into().map_err(|_| {
                        format!("{} is not a 32-byte identity key", path.display())
                    })?);
                IdentityKey::from_seed(&seed)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if join_difficulty > 0 {
                    tracing::info!(
                        bits = join_difficulty,
                        "generating an identity key with join work"
                    );
                }
                let key = IdentityKey::generate_with_work(
                    join_difficulty,
                    u64::MAX,
                    &mut UnwrapErr(getrandom::SysRng),
                )
                .expect("tries without bound find a key");
                runtime_smol::client::write_private(path, &key.to_seed()[..])?;
                key
            }
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
    let work = proto_core::keys::node_id_work(&key.node_id());
    if work < u32::from(join_difficulty) {
        return Err(format!(
            "the identity key in {} carries {work} bits of join work, the network asks for \
             node.join_difficulty = {join_difficulty}: move it away to generate a new identity \
             (the node rejoins under a new node ID)",
            path.display()
        ));
    }
    Ok(key)
}
