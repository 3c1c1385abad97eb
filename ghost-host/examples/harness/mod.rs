//! Loopback measurement harness for `tls_cost`: full handshakes and request/response
//! round trips over rustls streams, with CPU time per thread.
//!
//! CPU time is per thread, from `/proc/thread-self/schedstat` (ns on CPU).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection, StreamOwned};

/// One measured scenario, per operation: wall time and CPU of each side, in µs.
pub struct Row {
    pub name: String,
    pub wall_us: f64,
    pub client_cpu_us: f64,
    pub server_cpu_us: f64,
}

impl Row {
    pub fn print(&self) {
        println!(
            "| {:<58} | {:>9.1} | {:>9.1} | {:>9.1} | {:>9.1} |",
            self.name,
            self.wall_us,
            self.client_cpu_us,
            self.server_cpu_us,
            self.client_cpu_us + self.server_cpu_us
        );
    }
}

pub fn header() {
    println!(
        "| {:<58} | {:>9} | {:>9} | {:>9} | {:>9} |",
        "scenario (mean per operation)", "wall µs", "client µs", "server µs", "CPU µs"
    );
    println!(
        "|{:-<60}|{:->11}|{:->11}|{:->11}|{:->11}|",
        "", ":", ":", ":", ":"
    );
}

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn per_op(ns: u64, n: usize) -> f64 {
    ns as f64 / 1000.0 / n as f64
}

/// `n` full handshakes on fresh connections, each followed by a 1-byte exchange (so both
/// sides have finished, and the server has read the client's certificate and Finished).
pub fn handshakes(
    name: &str,
    configs: Option<(Arc<ServerConfig>, Arc<ClientConfig>)>,
    n: usize,
) -> Row {
    let server_cfg = configs.as_ref().map(|(s, _)| s.clone());
    let client_cfg = configs.map(|(_, c)| c);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let server_thread = thread::spawn(move || {
        let start = thread_cpu_ns();
        for _ in 0..n {
            let (mut sock, _) = listener.accept().unwrap();
            sock.set_nodelay(true).unwrap();
            let mut b = [0u8; 1];
            let Some(server) = &server_cfg else {
                sock.read_exact(&mut b).unwrap();
                sock.write_all(&b).unwrap();
                continue;
            };
            let mut tls = StreamOwned::new(ServerConnection::new(server.clone()).unwrap(), sock);
            tls.read_exact(&mut b).unwrap();
            // What a node does with the peer's certificate (None for server-only auth).
            std::hint::black_box(tls.conn.peer_certificates().map(|c| c.len()));
            tls.write_all(&b).unwrap();
            tls.flush().unwrap();
        }
        thread_cpu_ns() - start
    });
    let mut kinds = Vec::with_capacity(n);
    let wall = Instant::now();
    let start = thread_cpu_ns();
    for _ in 0..n {
        let mut sock = TcpStream::connect(addr).unwrap();
        sock.set_nodelay(true).unwrap();
        let mut b = [0u8; 1];
        let Some(client) = &client_cfg else {
            sock.write_all(b"x").unwrap();
            sock.read_exact(&mut b).unwrap();
            continue;
        };
        let conn =
            ClientConnection::new(client.clone(), ServerName::IpAddress(addr.ip().into())).unwrap();
        let mut tls = StreamOwned::new(conn, sock);
        tls.write_all(b"x").unwrap();
        tls.flush().unwrap();
        tls.read_exact(&mut b).unwrap();
        kinds.push(tls.conn.handshake_kind());
    }
    // Count the handshakes that were resumptions (to check that a resuming setup did).
    let resumed = kinds
        .iter()
        .filter(|k| **k == Some(rustls::HandshakeKind::Resumed))
        .count();
    let name = if resumed > 0 {
        format!("{name} [{resumed}/{n} resumed]")
    } else {
        name.to_string()
    };
    let client_ns = thread_cpu_ns() - start;
    let wall_ns = wall.elapsed().as_nanos() as u64;
    let server_ns = server_thread.join().unwrap();
    Row {
        name,
        wall_us: per_op(wall_ns, n),
        client_cpu_us: per_op(client_ns, n),
        server_cpu_us: per_op(server_ns, n),
    }
}

const MSG: usize = 2048;

fn echo<S: Read + Write>(mut s: S, n: usize) -> u64 {
    let start = thread_cpu_ns();
    let mut buf = [0u8; MSG];
    for _ in 0..n {
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        s.flush().unwrap();
    }
    thread_cpu_ns() - start
}

fn ask<S: Read + Write>(mut s: S, n: usize) -> (u64, u64) {
    let mut buf = [7u8; MSG];
    let wall = Instant::now();
    let start = thread_cpu_ns();
    for _ in 0..n {
        s.write_all(&buf).unwrap();
        s.flush().unwrap();
        s.read_exact(&mut buf).unwrap();
    }
    (thread_cpu_ns() - start, wall.elapsed().as_nanos() as u64)
}

/// `n` round trips of a 2 KiB request and a 2 KiB response over one established
/// connection: TLS with the given configs, or plain TCP when `configs` is `None`.
pub fn round_trips(
    name: &str,
    configs: Option<(Arc<ServerConfig>, Arc<ClientConfig>)>,
    n: usize,
) -> Row {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let server_cfg = configs.as_ref().map(|(s, _)| s.clone());
    let server_thread = thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        sock.set_nodelay(true).unwrap();
        match server_cfg {
            Some(cfg) => {
                let mut tls = StreamOwned::new(ServerConnection::new(cfg).unwrap(), sock);
                while tls.conn.is_handshaking() {
                    tls.conn.complete_io(&mut tls.sock).unwrap();
                }
                echo(tls, n)
            }
            None => echo(sock, n),
        }
    });
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_nodelay(true).unwrap();
    let (client_ns, wall_ns) = match configs {
        Some((_, cfg)) => {
            let conn = ClientConnection::new(cfg, ServerName::IpAddress(addr.ip().into())).unwrap();
            let mut tls = StreamOwned::new(conn, sock);
            while tls.conn.is_handshaking() {
                tls.conn.complete_io(&mut tls.sock).unwrap();
            }
            ask(tls, n)
        }
        None => ask(sock, n),
    };
    let server_ns = server_thread.join().unwrap();
    Row {
        name: name.to_string(),
        wall_us: per_op(wall_ns, n),
        client_cpu_us: per_op(client_ns, n),
        server_cpu_us: per_op(server_ns, n),
    }
}
