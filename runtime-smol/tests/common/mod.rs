//! In-process nodes on loopback for the integration tests: real sockets, real redb files
//! in temporary directories, one executor thread.

use ghost_host::tls::{Dial, Links, TlsKey, TlsLinks};
use proto_core::TlsKeyHash;
use std::net::TcpListener;
use std::sync::Arc;

use ghost_host::config::HttpSection;
use ghost_host::driver::DriverThread;
use ghost_host::redb_store::DatabaseOptions;
use ghost_host::service::Host;
use ghost_host::write_behind::WriteBehind;
use proto_core::keys::{Address, IdentityKey, OnionKey};
use proto_core::node::{Node, NodeConfig, NodeKeys};
use proto_core::{Descriptor, Epoch};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use runtime_smol::host::{now, spawn_node};
use smol::Executor;

/// Running nodes; their directories live as long as this value.
pub struct Network {
    /// The nodes' descriptors, node 0 being the seed.
    pub descriptors: Vec<Descriptor>,
    /// Their admin listeners' addresses (`/metrics`, detailed `/health`).
    pub admins: Vec<String>,
    /// Their hosts (for closing a database from the test).
    #[allow(dead_code)] // not every test file reaches into the hosts
    pub hosts: Vec<Host>,
    _drivers: Vec<DriverThread>,
    _dirs: Vec<tempfile::TempDir>,
}

/// The TLS client config a client uses for the first hop `d`: pinned to its descriptor.
#[allow(dead_code)] // not every test file sends packets
pub fn pinned(d: &Descriptor) -> Option<Dial> {
    static CLIENT: std::sync::OnceLock<TlsLinks> = std::sync::OnceLock::new();
    Some(
        CLIENT
            .get_or_init(TlsLinks::for_client)
            .dial(Some(d.tls_key_hash())),
    )
}

/// The whole answer to `GET path` at `address` over `tls` (a pinned config) or plain
/// HTTP, with `Connection: close`.
#[allow(dead_code)] // not every test file reads a public listener by hand
pub fn http_get(address: &str, tls: Option<Dial>, path: &str) -> String {
    use std::io::{Read, Write};
    let sock = std::net::TcpStream::connect(address).expect("the node listens");
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n");
    let mut out = Vec::new();
    match tls {
        None => {
            let mut sock = sock;
            sock.write_all(request.as_bytes()).unwrap();
            let _ = sock.read_to_end(&mut out);
        }
        Some(dial) => {
            let conn = rustls::ClientConnection::new(dial.config, dial.name).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            tls.write_all(request.as_bytes())
                .expect("the TLS handshake succeeds");
            let _ = tls.read_to_end(&mut out);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Network {
    /// The address of node `i`.
    #[allow(dead_code)] // not every test file needs it
    pub fn address(&self, i: usize) -> String {
        self.descriptors[i].address().as_str().to_owned()
    }

    /// The admin address of node `i`.
    #[allow(dead_code)] // not every test file needs it
    pub fn admin(&self, i: usize) -> String {
        self.admins[i].clone()
    }
}

/// Starts `n` nodes on loopback, all seeded with the first; identities are fixed
/// (`[i + 1; 32]`), onion keys from a seeded RNG.
pub fn start(n: usize, config: &NodeConfig, http: &HttpSection) -> Network {
    let ex = Arc::new(Executor::new());
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs: Vec<Address> = listeners
        .iter()
        .map(|l| Address::new(&l.local_addr().unwrap().to_string()).unwrap())
        .collect();
    let mut net = Network {
        descriptors: Vec::new(),
        admins: Vec::new(),
        hosts: Vec::new(),
        _drivers: Vec::new(),
        _dirs: Vec::new(),
    };
    for (i, listener) in listeners.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let backend = WriteBehind::open(
            &dir.path().join("messages.redb"),
            &DatabaseOptions::with_cache_bytes(1 << 20),
        )
        .unwrap();
        let tls_key = TlsKey::from_secret_bytes(&[u8::try_from(i).unwrap() + 0x80; 32]);
        let keys = NodeKeys {
            identity: IdentityKey::from_seed(&[u8::try_from(i).unwrap() + 1; 32]),
            onion: OnionKey::generate(Epoch(1), &mut rng),
            tls_key_hash: TlsKeyHash(tls_key.key_hash()),
            address: addrs[i],
        };
        let links = Links::Tls(Arc::new(TlsLinks::for_node(tls_key).unwrap()));
        let seeds = if i == 0 { Vec::new() } else { vec![addrs[0]] };
        // TLS links with each node's own certificate: peer envelopes ride the session.
        let config = NodeConfig {
            session_authenticated_peers: true,
            ..config.clone()
        };
        let node = Node::new(config, keys, seeds, backend, now(), &mut rng).unwrap();
        net.descriptors.push(*node.descriptor());
        let admin = TcpListener::bind("127.0.0.1:0").unwrap();
        net.admins.push(admin.local_addr().unwrap().to_string());
        let (host, driver) = spawn_node(node, &ex, http.clone(), links, listener, admin).unwrap();
        net.hosts.push(host);
        net._drivers.push(driver);
        net._dirs.push(dir);
    }
    let runner = ex.clone();
    std::thread::spawn(move || smol::block_on(runner.run(smol::future::pending::<()>())));
    net
}
