//! `ghost`: the GhostNodes command line — recipient keys, a local network on loopback
//! (nodes on smol, on blocking threads, or both), and sending and fetching messages
//! through true 3-hop paths.
//!
//! Exit codes: 0 done; 1 the command failed (network, files, input), with the reason on
//! stderr; 2 a usage error or a node binary `ghost up` needs is not built.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ghost_cli::bench::{self, BenchArgs};
use ghost_cli::client::{self, Client, Cursors, InboxFile, Links, RecipientKeys};
use ghost_cli::local::{LocalNetwork, NodeBinaries, Runtime};
use ghost_host::now;
use ghost_host::start::shutdown_signal;
use proto_core::client::ClientConfig;
use proto_core::fragment::{Received, StoredPart};
use proto_core::sealed::Contact;
use proto_core::{Descriptor, MessageHash, NodeId, Timestamp};
use rand_core::UnwrapErr;

const DEFAULT_SEED: &str = "127.0.0.1:7100";

/// GhostNodes: private messages through three relays to a replicated swarm store.
#[derive(Parser, Debug)]
#[command(
    version,
    about = "GhostNodes: private messages through three relays to a replicated swarm store.",
    after_help = "Examples:\n  ghost up                                   # 5 nodes on 127.0.0.1:7100-7104\n  ghost keygen --out alice.key               # prints alice's contact\n  ghost send --to CONTACT \"hello\"           # through 3 hops, end-to-end encrypted\n  ghost fetch --key alice.key                # signed retrieve, decrypted\n  ghost nodes                                # the directory\n  ghost bench --local 5 flow --messages 20000 # load test through 3 hops, with a report"
)]
struct Cli {
    /// Talk to nodes over plain HTTP instead of TLS, and have `ghost up` run its nodes so
    /// (`http.insecure_plaintext`). For local debugging only: anyone on the path reads
    /// and rewrites the traffic.
    #[arg(long, global = true, env = "GHOST_INSECURE_PLAINTEXT")]
    insecure_plaintext: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a recipient key file and print its contact (what senders need).
    #[command(after_help = "Example:\n  ghost keygen --out alice.key")]
    Keygen {
        /// Where to write the keys (refuses to overwrite).
        #[arg(long, default_value = "ghost.key")]
        out: PathBuf,
    },
    /// Start a local network of ghostnode processes on loopback; Ctrl-C stops it.
    #[command(
        after_help = "Examples:\n  ghost up\n  ghost up --nodes 7 --base-port 0 --data-dir ./net\n  ghost up --runtime mixed"
    )]
    Up {
        /// How many nodes.
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// Port of the first node; the others follow (0: free ports).
        #[arg(long, default_value_t = 7100)]
        base_port: u16,
        /// Keep the nodes' data here (default: a temporary directory removed on exit).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Which node binary runs the nodes: smol (`ghostnode`), sync (`ghostnode-sync`),
        /// or mixed (node 0 smol, node 1 sync, and so on).
        #[arg(long, value_enum, default_value_t = Runtime::Smol)]
        runtime: Runtime,
        /// The ghostnode binary (default: next to this one).
        #[arg(long, env = "GHOSTNODE_BIN")]
        ghostnode: Option<PathBuf>,
        /// The ghostnode-sync binary (default: next to this one).
        #[arg(long, env = "GHOSTNODE_SYNC_BIN")]
        ghostnode_sync: Option<PathBuf>,
    },
    /// Send a message through a fresh 3-hop path, end-to-end encrypted to the recipient.
    #[command(
        after_help = "Examples:\n  ghost send --to CONTACT \"hello\"\n  echo hello | ghost send --to CONTACT --via 10.0.0.5:7100 -\n  ghost send --to CONTACT --file note.txt"
    )]
    Send {
        /// The recipient's contact (128 hex digits, printed by `ghost keygen`).
        #[arg(long)]
        to: String,
        /// Any node of the network.
        #[arg(long, env = "GHOST_SEED", default_value = DEFAULT_SEED)]
        via: String,
        /// Receipts required from distinct swarm members (the network's write quorum).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
        quorum: u16,
        /// How long the swarm keeps the message, in hours (at most 336 = 14 days).
        #[arg(long, default_value_t = 336, value_parser = clap::value_parser!(u16).range(1..=336))]
        ttl_hours: u16,
        /// The message, or `-` to read it from standard input.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        message: Option<String>,
        /// Read the message from this file (any bytes) instead.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Fetch and decrypt new messages through a 3-hop path (signed retrieve).
    #[command(
        after_help = "Examples:\n  ghost fetch --key alice.key\n  ghost fetch --key alice.key --out inbox/"
    )]
    Fetch {
        /// The recipient key file (from `ghost keygen`); cursors go to FILE.cursors.
        #[arg(long)]
        key: PathBuf,
        /// Any node of the network.
        #[arg(long, env = "GHOST_SEED", default_value = DEFAULT_SEED)]
        via: String,
        /// Write each message to DIR/HASH.msg (readable by the owner only) instead of
        /// printing it. The cursors advance only once the files are on disk.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Load-test a network through 3-hop paths and write a report (or compare two).
    Bench(Box<BenchArgs>),
    /// List the nodes the network's directory knows.
    Nodes {
        /// Any node of the network.
        #[arg(long, env = "GHOST_SEED", default_value = DEFAULT_SEED)]
        via: String,
    },
}

/// Why `ghost` stopped: what to tell the user, and the exit code.
struct Failure {
    message: String,
    code: u8,
}

/// Exit code of a command that failed (the network, a file, the input).
const EXIT_FAILED: u8 = 1;
/// Exit code when something `ghost` needs is not installed (a node binary), as for a
/// usage error: the fix is on the user's side before any retry.
const EXIT_SETUP: u8 = 2;

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self {
            message,
            code: EXIT_FAILED,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let links = if cli.insecure_plaintext {
        eprintln!("ghost: --insecure-plaintext: talking to nodes over plain HTTP");
        Links::InsecurePlaintext
    } else {
        client::default_links()
    };
    let result = match cli.command {
        Command::Keygen { out } => keygen(&out).map_err(Failure::from),
        Command::Up {
            nodes,
            base_port,
            data_dir,
            runtime,
            ghostnode,
            ghostnode_sync,
        } => up(
            nodes,
            base_port,
            data_dir,
            runtime,
            &NodeBinaries {
                smol: ghostnode,
                sync: ghostnode_sync,
            },
            &links,
        ),
        Command::Send {
            to,
            via,
            quorum,
            ttl_hours,
            message,
            file,
        } => {
            let input = match (&message, &file) {
                (_, Some(path)) => Input::File(path),
                (Some(m), None) if m == "-" => Input::Stdin,
                (Some(m), None) => Input::Text(m),
                (None, None) => unreachable!("clap requires a message or --file"),
            };
            send(&to, &via, usize::from(quorum), ttl_hours, input, links).map_err(Failure::from)
        }
        Command::Fetch { key, via, out } => {
            fetch(&key, &via, out.as_deref(), links).map_err(Failure::from)
        }
        Command::Nodes { via } => nodes(&via, links).map_err(Failure::from),
        Command::Bench(args) => bench::run(&args, &links).map_err(|f| Failure {
            message: f.message,
            code: f.code,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { message, code }) => {
            eprintln!("ghost: {message}");
            ExitCode::from(code)
        }
    }
}

fn keygen(out: &Path) -> Result<(), String> {
    if out.exists() {
        return Err(format!(
            "{} already exists; choose another --out (keys are never overwritten)",
            out.display()
        ));
    }
    let keys = RecipientKeys::generate(&mut UnwrapErr(getrandom::SysRng));
    keys.save(out)?;
    println!("wrote {} (private, mode 0600)", out.display());
    println!("recipient id: {}", keys.identity.recipient_id());
    println!("contact:      {}", keys.contact());
    println!(
        "Give the contact to senders: ghost send --to {} \"hello\"",
        keys.contact()
    );
    Ok(())
}

fn hop_line(path: &[Descriptor]) -> String {
    path.iter()
        .map(|d| {
            let id = d.node_id().to_string();
            format!("{} ({}…)", d.address(), &id[..8])
        })
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// Where `ghost send` reads the message.
enum Input<'a> {
    Text(&'a str),
    Stdin,
    File(&'a Path),
}

fn send(
    to: &str,
    via: &str,
    quorum: usize,
    ttl_hours: u16,
    input: Input<'_>,
    links: Links,
) -> Result<(), String> {
    let contact = Contact::parse(to).map_err(|e| {
        format!("--to must be a contact of 128 hex digits as printed by `ghost keygen` ({e})")
    })?;
    let text = match input {
        Input::Text(message) => message.as_bytes().to_vec(),
        Input::Stdin => {
            let mut s = Vec::new();
            std::io::stdin()
                .read_to_end(&mut s)
                .map_err(|e| format!("cannot read the message from stdin: {e}"))?;
            s
        }
        Input::File(path) => std::fs::read(path)
            .map_err(|e| format!("cannot read --file {}: {e}", path.display()))?,
    };
    let mut bodies = client::seal_message(&contact, &text).map_err(|e| e.0)?;
    let net = Client::with_links(via, ClientConfig::default(), links)
        .map_err(|e| e.0)?
        .with_write_quorum(quorum)
        .with_ttl_ms(u64::from(ttl_hours) * 3_600_000);
    if bodies.len() > 1 {
        let count = bodies.len();
        let deliveries = net
            .store_parts(&contact.recipient, bodies)
            .map_err(|e| format!("the message was not delivered: {e}"))?;
        for d in &deliveries {
            warn_misbehaviour(&d.problems);
        }
        let hops: std::collections::BTreeSet<NodeId> = deliveries
            .iter()
            .flat_map(|d| d.path.iter().map(Descriptor::node_id))
            .collect();
        println!(
            "delivered {} bytes to {} in {count} fragments, each through its own 3-hop path ({} nodes used)",
            text.len(),
            contact.recipient,
            hops.len()
        );
        println!(
            "  every fragment durable on at least {quorum} swarm members (write quorum verified)"
        );
        return Ok(());
    }
    let body = bodies.pop().expect("one body");
    let delivery = net.store(&contact.recipient, &body).map_err(|e| e.0)?;
    warn_misbehaviour(&delivery.problems);
    println!(
        "delivered {} bytes to {} (message {})",
        text.len(),
        contact.recipient,
        delivery.ack.hash
    );
    println!("  path (3 hops): {}", hop_line(&delivery.path));
    let receipts: Vec<String> = delivery
        .ack
        .receipts
        .iter()
        .map(|r| r.node.to_string()[..8].to_owned())
        .collect();
    println!(
        "  durable on {} swarm members (write quorum verified): {}",
        receipts.len(),
        receipts.join(", ")
    );
    Ok(())
}

/// A member that lied (forged receipts, a fabricated redirect, a body that does not match
/// its hash) was skipped and the operation still succeeded; the user should know, because
/// it points at a malicious or broken node. Plain unreachability is not worth a warning.
fn warn_misbehaviour(problems: &[client::AttemptFailure]) {
    for p in problems.iter().filter(|p| p.problem.is_misbehaviour()) {
        eprintln!("warning: skipped a misbehaving swarm member: {p}");
    }
}

fn fetch(key: &Path, via: &str, out: Option<&Path>, links: Links) -> Result<(), String> {
    let keys = RecipientKeys::load(key)?;
    if let Some(dir) = out {
        create_private_dir(dir)?;
    }
    let mut cursor_path = key.as_os_str().to_owned();
    cursor_path.push(".cursors");
    let cursor_path = PathBuf::from(cursor_path);
    let mut cursors = Cursors::load(&cursor_path)?;
    let mut inbox_path = key.as_os_str().to_owned();
    inbox_path.push(".inbox");
    let inbox_path = PathBuf::from(inbox_path);
    let mut inbox = InboxFile::load(&inbox_path)?.restore(&keys)?;
    let net = Client::with_links(via, ClientConfig::default(), links).map_err(|e| e.0)?;
    let fetched = net.fetch(&keys.identity, &mut cursors).map_err(|e| e.0)?;
    warn_misbehaviour(&fetched.problems);
    println!("path (3 hops): {}", hop_line(&fetched.path));
    let t = now();
    let recipient = keys.identity.recipient_id();
    let stored_at: std::collections::BTreeMap<MessageHash, Timestamp> = fetched
        .messages
        .iter()
        .map(|m| (m.hash, m.stored_at))
        .collect();
    for m in &fetched.messages {
        let part = StoredPart {
            hash: m.hash,
            expiry: m.expiry,
            body: m.body.clone(),
        };
        inbox.receive(&recipient, &keys.encryption, part, t);
    }
    inbox.expire(t);
    let mut shown = 0;
    while let Some(received) = inbox.poll_received() {
        shown += 1;
        let age = |parts: &[MessageHash]| {
            let first = parts.iter().filter_map(|h| stored_at.get(h)).min();
            first.map_or_else(String::new, |s| {
                format!("[{}s ago] ", t.millis_since(*s) / 1000)
            })
        };
        match received {
            Received::Message {
                id, message, parts, ..
            } => {
                let age = age(&parts);
                let pieces = if parts.len() > 1 {
                    format!(" (in {} fragments)", parts.len())
                } else {
                    String::new()
                };
                match out {
                    None => println!("{age}{}", String::from_utf8_lossy(&message)),
                    Some(dir) => {
                        let path = write_message(dir, &id.to_string(), &message)?;
                        println!("{age}{} bytes{pieces} -> {}", message.len(), path.display());
                    }
                }
            }
            Received::Incomplete {
                id,
                count,
                missing,
                parts,
            } => println!(
                "{}(message {id} is incomplete and given up: {} of {count} fragments did not arrive before the others expired or too many incomplete messages waited ({}))",
                age(&parts),
                missing.len(),
                list_indexes(&missing)
            ),
            Received::Invalid { id, problem, parts } => {
                let name = id.map_or_else(|| parts[0].to_string(), |id| id.to_string());
                println!(
                    "{}(message {name} could not be opened: {problem})",
                    age(&parts)
                );
            }
        }
    }
    for w in inbox.waiting() {
        println!(
            "(message {} is waiting for {} of {} fragments: {}; fetch again later)",
            w.id,
            w.missing.len(),
            w.count,
            list_indexes(&w.missing)
        );
    }
    if shown == 0 && inbox.waiting().next().is_none() {
        println!("no new messages");
    }
    // Messages are written before the inbox and the cursors move past them, and the inbox
    // before the cursors: a fetch cut short repeats, it never loses.
    InboxFile::of(&inbox).save(&inbox_path)?;
    cursors.save(&cursor_path)
}

/// Fragment indexes as people count them (from 1), the first few.
fn list_indexes(indexes: &[u16]) -> String {
    let mut text: Vec<String> = indexes
        .iter()
        .take(8)
        .map(|i| format!("#{}", i + 1))
        .collect();
    if indexes.len() > 8 {
        text.push(format!("and {} more", indexes.len() - 8));
    }
    text.join(", ")
}

/// Creates `dir` (readable by the owner only) unless it exists as a directory.
fn create_private_dir(dir: &Path) -> Result<(), String> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| format!("cannot create --out directory {}: {e}", dir.display()))
}

/// Writes a fetched message to `dir/HASH.msg`, durably, before the cursors move past it.
/// A message with the same hash is the same message: an existing file is kept.
fn write_message(dir: &Path, hash: &str, bytes: &[u8]) -> Result<PathBuf, String> {
    let path = dir.join(format!("{hash}.msg"));
    if !path.exists() {
        client::replace_private(&path, bytes)?;
    }
    Ok(path)
}

fn nodes(via: &str, links: Links) -> Result<(), String> {
    let net = Client::with_links(via, ClientConfig::default(), links).map_err(|e| e.0)?;
    println!("{} nodes known to {via}:", net.nodes().len());
    for d in net.nodes() {
        println!("  {}  {}  epoch {}", d.node_id(), d.address(), d.epoch().0);
    }
    Ok(())
}

fn up(
    n: usize,
    base_port: u16,
    data_dir: Option<PathBuf>,
    runtime: Runtime,
    binaries: &NodeBinaries,
    links: &Links,
) -> Result<(), Failure> {
    if n < 3 {
        return Err(
            String::from("--nodes must be at least 3: every path has three distinct hops").into(),
        );
    }
    // Only the binaries this network runs need to exist.
    let rotation = binaries.rotation(runtime).map_err(|message| Failure {
        message,
        code: EXIT_SETUP,
    })?;
    let binary_of = |i: usize| rotation[i % rotation.len()].clone();
    let temp;
    let root = match data_dir {
        Some(d) => d,
        None => {
            temp = tempfile::Builder::new()
                .prefix("ghost-net-")
                .tempdir()
                .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
            temp.path().to_owned()
        }
    };
    let stop = shutdown_signal()?;
    eprintln!("starting {n} nodes under {} ...", root.display());
    let extra = match links {
        Links::InsecurePlaintext => "[http]\ninsecure_plaintext = true\n",
        Links::Tls(_) => "",
    };
    let mut net = LocalNetwork::start(binary_of, &root, n, base_port, extra)?;
    net.wait_ready(Duration::from_secs(30))?;
    let demo_key = root.join("demo.key");
    let keys = match RecipientKeys::load(&demo_key) {
        Ok(k) => k,
        Err(_) => {
            let k = RecipientKeys::generate(&mut UnwrapErr(getrandom::SysRng));
            k.save(&demo_key)?;
            k
        }
    };
    let me = std::env::current_exe().map_or_else(|_| "ghost".into(), |p| p.display().to_string());
    println!("GhostNodes local network: {n} nodes on loopback, ready.");
    for (i, node) in net.nodes.iter().enumerate() {
        println!(
            "  node {i}: {}  id {}…  metrics http://{}/metrics  log {}/node.log",
            node.address,
            &node.id[..16],
            node.admin,
            node.dir.display()
        );
    }
    println!();
    println!("seed: {}", net.seed());
    println!("A recipient key was made for you: {}", demo_key.display());
    println!("Send it a message through three hops, then fetch it (paste in another terminal):");
    println!();
    println!(
        "  {me} send --via {} --to {} \"hello through three hops\"",
        net.seed(),
        keys.contact()
    );
    println!(
        "  {me} fetch --via {} --key {}",
        net.seed(),
        demo_key.display()
    );
    println!();
    println!("Press Ctrl-C to stop the network.");
    let _ = stop.recv();
    eprintln!("stopping {n} nodes ...");
    net.stop();
    eprintln!("all nodes stopped");
    Ok(())
}
