//! Does a node stall while it commits? Runs a sustained 3-hop store load on a local
//! network of real node processes and, meanwhile, times two probes against node 0:
//! `GET /health` on its public listener, and a 2,048-byte packet of random bytes to
//! `/v1/onion` (the node peels it, finds no valid MAC and answers 204: the path every
//! forwarded packet takes through the node, minus the next hop). Figures go to
//! docs/DEPENDENCIES.md (durability off the request path).
//!
//! ```text
//! cargo build --release -p runtime-smol -p runtime-sync -p ghost-cli --bins --examples
//! target/release/examples/commit_stall [NODE_BINARY] [SECONDS=20] [THREADS=8]
//! ```
//!
//! NODE_BINARY defaults to `ghostnode` next to the example's directory; pass an older
//! build to compare. Prints one line per measure: count, p50, p90, p99, max (ms).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ghost_cli::client::{Client, RecipientKeys, seal_for};
use ghost_cli::local::LocalNetwork;
use rand_core::{Rng, UnwrapErr};

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let binary = args.next().map_or_else(default_binary, PathBuf::from);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    let net = LocalNetwork::start(|_| binary.clone(), root.path(), 5, 0, "")?;
    net.wait_ready(Duration::from_secs(30))?;
    let target = net.nodes[0].address.clone();
    println!(
        "node {} ({}), {threads} store threads, {seconds} s",
        target,
        binary.display()
    );

    let recipients: Vec<RecipientKeys> = (0..64)
        .map(|_| RecipientKeys::generate(&mut UnwrapErr(getrandom::SysRng)))
        .collect();
    let recipients = Arc::new(recipients);
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let store_ms = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for t in 0..threads {
        let (seed, recipients, stop, failed, store_ms) = (
            net.seed().to_owned(),
            recipients.clone(),
            stop.clone(),
            failed.clone(),
            store_ms.clone(),
        );
        workers.push(std::thread::spawn(move || {
            let client = Client::connect(&seed).expect("the seed answers");
            let mut i = t;
            while !stop.load(Ordering::Relaxed) {
                let keys = &recipients[i % recipients.len()];
                i += threads;
                let body = seal_for(&keys.contact(), &[7u8; 200]).expect("fits");
                let started = Instant::now();
                match client.store(&keys.identity.recipient_id(), &body) {
                    Ok(_) => store_ms.lock().unwrap().push(ms(started.elapsed())),
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // Let the load settle before probing.
    std::thread::sleep(Duration::from_secs(2));
    let mut health = Probe::connect(&target)?;
    let mut onion = Probe::connect(&target)?;
    let mut packet = vec![0u8; proto_core::PACKET_LEN];
    let (mut health_ms, mut onion_ms) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        health_ms.push(health.time(b"GET /health HTTP/1.1\r\nHost: n\r\n\r\n", &[])?);
        UnwrapErr(getrandom::SysRng).fill_bytes(&mut packet);
        let head = format!(
            "POST /v1/onion HTTP/1.1\r\nHost: n\r\nContent-Length: {}\r\n\r\n",
            packet.len()
        );
        onion_ms.push(onion.time(head.as_bytes(), &packet)?);
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let stores = store_ms.lock().unwrap().clone();
    println!(
        "stores: {} acked ({:.0}/s), {} failed",
        stores.len(),
        stores.len() as f64 / (seconds + 2) as f64,
        failed.load(Ordering::Relaxed)
    );
    report("3-hop store", stores);
    report("GET /health", health_ms);
    report("onion packet (peel, 204)", onion_ms);
    Ok(())
}

fn default_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    // target/<profile>/examples/commit_stall → target/<profile>/ghostnode
    exe.parent()
        .and_then(|examples| examples.parent())
        .map(|profile| profile.join("ghostnode"))
        .expect("inside target/")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(what: &str, mut samples: Vec<f64>) {
    if samples.is_empty() {
        println!("{what}: no samples");
        return;
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "{what}: n={} p50={:.2} p90={:.2} p99={:.2} max={:.2} ms",
        samples.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        samples[samples.len() - 1]
    );
}

/// One keep-alive connection that times request → whole answer.
struct Probe {
    stream: TcpStream,
}

impl Probe {
    fn connect(address: &str) -> Result<Self, String> {
        let stream = TcpStream::connect(address).map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        Ok(Self { stream })
    }

    fn time(&mut self, head: &[u8], body: &[u8]) -> Result<f64, String> {
        let started = Instant::now();
        self.stream
            .write_all(&[head, body].concat())
            .map_err(|e| e.to_string())?;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the node closed the probe connection".into());
            }
            got.extend_from_slice(&buf[..n]);
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    return Ok(ms(started.elapsed()));
                }
            }
        }
    }
}
