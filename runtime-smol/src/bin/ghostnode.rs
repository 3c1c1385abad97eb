//! `ghostnode`: one GhostNodes relay and swarm-store node on smol.
//!
//! Keeps its identity key in `<data-dir>/identity.key` (created on first start, mode
//! 0600) and its messages in `<data-dir>/messages.redb`. A fresh onion key is generated at
//! every start (a new epoch), because the replay filter does not survive a restart.

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use proto_core::Epoch;
use proto_core::keys::{Address, IdentityKey, OnionKey};
use proto_core::node::{Node, NodeConfig, NodeKeys};
use rand_core::UnwrapErr;
use runtime_smol::host::{Host, now};
use runtime_smol::redb_store::RedbBackend;
use smol::{Async, Executor};

/// A GhostNodes node: relays onion packets and stores its swarms' messages.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Example:\n  ghostnode --listen 127.0.0.1:7100 --data-dir ./node1\n  ghostnode --listen 127.0.0.1:7101 --data-dir ./node2 --seed 127.0.0.1:7100"
)]
struct Args {
    /// Address to listen on (host:port; port 0 picks a free one).
    #[arg(long, env = "GHOST_LISTEN", default_value = "127.0.0.1:7100")]
    listen: SocketAddr,
    /// Address published to other nodes (defaults to the listening address).
    #[arg(long, env = "GHOST_ADVERTISE")]
    advertise: Option<String>,
    /// Directory for the identity key and the message database.
    #[arg(long, env = "GHOST_DATA_DIR", default_value = "ghost-data")]
    data_dir: PathBuf,
    /// Address of a node to join through (repeatable).
    #[arg(long = "seed", env = "GHOST_SEEDS", value_delimiter = ',')]
    seeds: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Logs go to stderr; stdout carries the one "listening on" line scripts read.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            eprintln!("ghostnode: {problem}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    fs::create_dir_all(&args.data_dir).map_err(|e| {
        format!(
            "cannot create data directory {}: {e}",
            args.data_dir.display()
        )
    })?;
    let identity = load_or_create_identity(&args.data_dir.join("identity.key"))?;
    let listener = TcpListener::bind(args.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    let advertise = args.advertise.unwrap_or_else(|| bound.to_string());
    let address = Address::new(&advertise).map_err(|_| {
        format!("--advertise {advertise:?} is not a host:port of at most 64 printable characters")
    })?;
    let seeds = args
        .seeds
        .iter()
        .map(|s| Address::new(s).map_err(|_| format!("--seed {s:?} is not a valid host:port")))
        .collect::<Result<Vec<_>, _>>()?;
    let backend = RedbBackend::open(&args.data_dir.join("messages.redb"))
        .map_err(|e| format!("cannot open the message database: {e}"))?;
    let mut rng = UnwrapErr(getrandom::SysRng);
    let epoch = Epoch(u32::try_from(now().0 / 1000).unwrap_or(u32::MAX));
    let keys = NodeKeys {
        onion: OnionKey::generate(epoch, &mut rng),
        identity,
        address,
    };
    let node = Node::new(NodeConfig::default(), keys, seeds, backend, now(), &mut rng)
        .map_err(|e| format!("cannot open the store: {e}"))?;
    let node_id = node.node_id();
    let ex = Arc::new(Executor::new());
    let host = Host::new(node, ex.clone());
    let listener =
        Async::new(listener).map_err(|e| format!("cannot use the listening socket: {e}"))?;
    tracing::info!(%node_id, %advertise, "node started");
    println!("listening on {bound} as node {node_id}");
    let _ = std::io::stdout().flush();
    smol::block_on(ex.run(host.serve(listener)));
    Ok(())
}

/// Reads the 32-byte identity seed, or creates it (readable by the owner only).
fn load_or_create_identity(path: &Path) -> Result<IdentityKey, String> {
    match fs::read(path) {
        Ok(bytes) => {
            let seed: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| format!("{} is not a 32-byte identity key", path.display()))?;
            Ok(IdentityKey::from_seed(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = IdentityKey::generate(&mut UnwrapErr(getrandom::SysRng));
            let mut options = fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options
                .open(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            file.write_all(&key.to_seed()[..])
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}
