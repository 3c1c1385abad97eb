//! In-process nodes on loopback for the integration tests: real sockets, real redb files
//! in temporary directories, one executor thread.

use ghost_host::tls::TlsKey;
use proto_core::TlsKeyHash;
use std::net::TcpListener;
use std::sync::Arc;

use ghost_host::config::HttpSection;
use ghost_host::driver::DriverThread;
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
        let backend = WriteBehind::open(&dir.path().join("messages.redb"), 1 << 20).unwrap();
        let keys = NodeKeys {
            identity: IdentityKey::from_seed(&[u8::try_from(i).unwrap() + 1; 32]),
            onion: OnionKey::generate(Epoch(1), &mut rng),
            tls_key_hash: TlsKeyHash(
                TlsKey::from_secret_bytes(&[u8::try_from(i).unwrap() + 0x80; 32]).key_hash(),
            ),
            address: addrs[i],
        };
        let seeds = if i == 0 { Vec::new() } else { vec![addrs[0]] };
        let node = Node::new(config.clone(), keys, seeds, backend, now(), &mut rng).unwrap();
        net.descriptors.push(*node.descriptor());
        let admin = TcpListener::bind("127.0.0.1:0").unwrap();
        net.admins.push(admin.local_addr().unwrap().to_string());
        let (host, driver) = spawn_node(node, &ex, http.clone(), listener, admin).unwrap();
        net.hosts.push(host);
        net._drivers.push(driver);
        net._dirs.push(dir);
    }
    let runner = ex.clone();
    std::thread::spawn(move || smol::block_on(runner.run(smol::future::pending::<()>())));
    net
}
