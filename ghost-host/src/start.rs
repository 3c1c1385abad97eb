//! Start-up and stop of a node binary, the same for every runtime: settings (defaults <
//! `--config` file < environment < flags), logs, the data directory (identity key, TLS
//! key, peers file, message database), the links (TLS, or plain HTTP when asked for), a
//! fresh onion key and epoch, the listening sockets, the node driver thread, the two
//! start lines scripts read on stdout, and the signals that stop the node.
//!
//! A runtime's `main` is [`main`] with a function that serves the two bound listeners
//! until the shutdown signal, then lets in-flight requests finish.

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use proto_core::keys::{Address, IdentityKey, OnionKey};
use proto_core::node::{Node, NodeKeys};
use proto_core::{Epoch, TlsKeyHash};
use rand_core::UnwrapErr;
use zeroize::Zeroizing;

use crate::config::{AdminListen, Config, LogFormat};
use crate::driver::{self, Carrier, DriverMode, DriverSettings, DriverThread, EngineTask, now};
use crate::peers;
use crate::redb_store::DatabaseOptions;
use crate::service::Host;
use crate::tls::{KeyFile, Links, TlsLinks, TlsRotation};
use crate::write_behind::WriteBehind;

/// The flags and environment variables every node binary takes.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "Settings: defaults < --config file < environment < flags. Every setting is listed in docs/OPERATING.md.\n\nExamples:\n  ghostnode --listen 127.0.0.1:7100 --data-dir ./node1\n  ghostnode --listen 127.0.0.1:7101 --data-dir ./node2 --seed 127.0.0.1:7100\n  ghostnode --config /etc/ghostnode.toml --log-format json"
)]
pub struct NodeArgs {
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
    /// Serve and call other nodes over plain HTTP instead of TLS
    /// (`http.insecure_plaintext`): for local debugging only.
    #[arg(long, env = "GHOST_INSECURE_PLAINTEXT")]
    insecure_plaintext: bool,
}

/// A node whose sockets are bound and whose driver runs: what a runtime serves.
pub struct Started {
    /// The runtime-neutral service to answer requests with.
    pub host: Host,
    /// The public listener.
    pub listener: TcpListener,
    /// The admin listener, unless turned off.
    pub admin: Option<TcpListener>,
    /// The node driver: [`DriverThread::stop`] it last, once no request is left in
    /// flight (or the grace period ran out).
    pub driver: DriverThread,
    /// The driver's engine, for the runtime to run, when it asked for the driver as a
    /// task ([`DriverMode::Task`]).
    pub engine: Option<EngineTask>,
    /// How the listener serves and the carrier calls: TLS with the node's key, or plain
    /// HTTP when configured so.
    pub links: Links,
}

/// The whole life of a node binary: parses the settings, starts the node with the
/// runtime's `carrier` (made for the node's links), and calls `serve` with it and a
/// receiver of the shutdown signal (SIGINT or SIGTERM). Exit code 0 after a graceful
/// stop, 2 for bad settings or a failed start (with a message on stderr saying what to
/// fix).
pub fn main(
    name: &'static str,
    about: &'static str,
    mode: DriverMode,
    carrier: impl FnOnce(&Config, &Links) -> Arc<dyn Carrier>,
    serve: impl FnOnce(Started, std::sync::mpsc::Receiver<()>) -> Result<(), String>,
) -> ExitCode {
    let args = <NodeArgs as clap::CommandFactory>::command()
        .name(name)
        .about(about);
    let args = match <NodeArgs as clap::FromArgMatches>::from_arg_matches(&args.get_matches()) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(problem) => {
            eprintln!("{name}: {problem}");
            return ExitCode::from(2);
        }
    };
    init_logs(&config);
    let run = || -> Result<(), String> {
        let shutdown = shutdown_signal()?;
        let started = start(&config, mode, |links| carrier(&config, links))?;
        serve(started, shutdown)
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            eprintln!("{name}: {problem}");
            ExitCode::from(2)
        }
    }
}

/// Defaults < `--config` file < environment and flags; validated.
pub fn load_config(args: &NodeArgs) -> Result<Config, String> {
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
    if args.insecure_plaintext {
        config.http.insecure_plaintext = true;
    }
    config.validate()?;
    Ok(config)
}

/// Logs go to stderr; stdout carries the start lines scripts read.
pub fn init_logs(config: &Config) {
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

/// Opens the data directory, binds the listeners, starts the driver thread with the
/// `carrier` made for the node's links, and prints `listening on ADDR as node ID` and
/// `admin on ADDR` (or `admin off`).
pub fn start(
    config: &Config,
    mode: DriverMode,
    carrier: impl FnOnce(&Links) -> Arc<dyn Carrier>,
) -> Result<Started, String> {
    let data_dir = &config.data_dir;
    fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", data_dir.display()))?;
    let identity =
        load_or_create_identity(&data_dir.join("identity.key"), config.node.join_difficulty)?;
    let tls_key_path = data_dir.join(TLS_KEY_FILE);
    let tls_keys =
        KeyFile::load_or_create(&tls_key_path, now(), &mut UnwrapErr(getrandom::SysRng))?;
    let tls_key_hash = TlsKeyHash(tls_keys.current.key_hash());
    // A restart within a rotation's overlap: the previous key is served until its end.
    let tls_overlap_until = tls_keys.previous.as_ref().map(|(_, until)| *until);
    let (links, tls_rotation) = if config.http.insecure_plaintext {
        tracing::warn!(
            "http.insecure_plaintext: links to and from this node are plain HTTP; \
             anyone on the path reads and rewrites them"
        );
        (Links::InsecurePlaintext, None)
    } else {
        let tls = Arc::new(TlsLinks::for_node(tls_keys.current.duplicate())?);
        if let Some((previous, _)) = &tls_keys.previous {
            tls.install(&tls_keys.current, Some(previous))?;
        }
        let rotation = TlsRotation::new(
            tls_key_path,
            tls_keys,
            tls.clone(),
            config.http.tls_key_rotation_ms,
            config.http.tls_key_overlap_ms,
        );
        (Links::Tls(tls), Some(rotation))
    };
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
    // The nodes known at the last stop are seeds too.
    let peers_file = data_dir.join(peers::FILE_NAME);
    for known in peers::read(&peers_file) {
        if !seeds.contains(&known) && known != address {
            seeds.push(known);
        }
    }
    let started = std::time::Instant::now();
    let database = DatabaseOptions {
        cache_bytes: config.store.cache_mib << 20,
        quick_repair: config.store.quick_repair,
    };
    let backend = WriteBehind::open(&data_dir.join("messages.redb"), &database)
        .map_err(|e| format!("cannot open the message database: {e}"))?;
    let mut rng = UnwrapErr(getrandom::SysRng);
    // A fresh onion key and epoch at every start: the replay filter does not survive a
    // restart.
    let epoch = Epoch(u32::try_from(now().0 / 1000).unwrap_or(u32::MAX));
    let keys = NodeKeys {
        onion: OnionKey::generate(epoch, &mut rng),
        identity,
        tls_key_hash,
        address,
    };
    let mut node_config = config.node_config();
    // On TLS links a node presents its own certificate to its peers: the session
    // authenticates its envelopes, which then need no signature each.
    node_config.session_authenticated_peers = matches!(links, Links::Tls(_));
    node_config.directory.allowlist = config.allowlist()?;
    let mut node = Node::new(node_config, keys, seeds, backend, now(), &mut rng)
        .map_err(|e| format!("cannot open the store: {e}"))?;
    if let Some(until) = tls_overlap_until.filter(|_| tls_rotation.is_some()) {
        node.rotate_tls_key(now(), tls_key_hash, until);
    }
    let node_id = node.node_id();
    let (messages, _) = node.store().totals();
    let settings = DriverSettings {
        commit_interval: Duration::from_millis(config.store.commit_interval_ms),
        peers_file: Some(peers_file),
        tls_rotation,
    };
    let (driver, engine) = match mode {
        DriverMode::Thread => (
            driver::spawn(node, carrier(&links), settings)
                .map_err(|e| format!("cannot start the node thread: {e}"))?,
            None,
        ),
        DriverMode::Task => {
            let (driver, engine) = driver::spawn_task(node, carrier(&links), settings);
            (driver, Some(engine))
        }
    };
    let host = Host::new(driver.driver(), config.http.clone());
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
    let _ = std::io::stdout().flush();
    Ok(Started {
        host,
        listener,
        admin,
        driver,
        engine,
        links,
    })
}

/// A receiver that yields once SIGINT or SIGTERM arrives (a thread waits for the signal,
/// so the handler itself does nothing but record it).
pub fn shutdown_signal() -> Result<std::sync::mpsc::Receiver<()>, String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                tracing::info!(signal, "shutdown requested");
                let _ = tx.send(());
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(rx)
}

/// Creates `path` readable and writable by its owner only (0600) with `bytes`, refusing
/// to replace an existing file.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Replaces `path` with `bytes` atomically and privately: written to `PATH.new` by
/// [`write_private`], renamed over `path`, and the directory synced, so a crash leaves the
/// old file or the new one, never a torn one, and the new name is durable on return.
pub fn replace_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    // A leftover from a crash in the middle of a replace: never read, safe to drop.
    let _ = fs::remove_file(&tmp);
    let renamed = write_private(&tmp, bytes).and_then(|()| {
        fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
    });
    if let Err(e) = renamed {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", dir.display()))
}

/// The TLS key's file in the data directory, mode 0600: the current key (and during a
/// rotation's overlap the previous one), as [`KeyFile`] describes.
pub const TLS_KEY_FILE: &str = "tls.key";

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
                write_private(path, &key.to_seed()[..])?;
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
