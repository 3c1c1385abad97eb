//! How a node or a client makes and accepts links: TLS pinned by descriptors (the
//! default), or plain HTTP when an operator asked for it by name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use proto_core::TlsKeyHash;
use rustls::pki_types::ServerName;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig};

use super::{
    ClientAuth, TlsKey, client_config, server_config_with_resolver, unpinned_client_config,
};
use crate::api::ApiError;

/// Most client configs kept, one per pinned key; past it the cache starts over (building
/// one again costs a certificate, microseconds).
const MAX_CACHED_CONFIGS: usize = 4096;

/// The server name a client sends (as SNI) to a node whose descriptor names `pin`:
/// `<first 8 bytes of the pin in hex>.pin.ghost`. A node serving two keys during a TLS key
/// rotation presents the one the name points at (docs/PROTOCOL.md section 11); the name
/// says nothing an observer does not already know from the address. A link to a seed
/// (`None`, not pinned) sends no SNI and gets the node's current key.
#[must_use]
pub fn server_name(pin: Option<TlsKeyHash>) -> ServerName<'static> {
    let name = match pin {
        Some(pin) => pin_server_name(&pin.0),
        None => "node.invalid".to_owned(),
    };
    ServerName::try_from(name).expect("hex labels make a valid DNS name")
}

/// The SNI naming the key whose hash is `hash`.
pub(crate) fn pin_server_name(hash: &[u8; 32]) -> String {
    format!("{}{PIN_NAME_SUFFIX}", hex::encode(&hash[..8]))
}

/// What follows the hex label of a pin's server name.
const PIN_NAME_SUFFIX: &str = ".pin.ghost";

/// The first byte of every TLS record that opens a connection (a handshake record).
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Whether links are encrypted.
#[derive(Clone)]
pub enum Links {
    /// TLS 1.3, pinned by descriptors (docs/PROTOCOL.md section 11).
    Tls(Arc<TlsLinks>),
    /// Plain HTTP: `http.insecure_plaintext = true`, for local debugging only. Anyone on
    /// the path reads and rewrites the traffic between nodes.
    InsecurePlaintext,
}

impl Links {
    /// The URL scheme links use.
    #[must_use]
    pub fn scheme(&self) -> &'static str {
        match self {
            Self::Tls(_) => "https",
            Self::InsecurePlaintext => "http",
        }
    }

    /// The public listener's server config; `None` for plaintext links.
    #[must_use]
    pub fn server_config(&self) -> Option<Arc<ServerConfig>> {
        match self {
            Self::Tls(tls) => tls.server_config(),
            Self::InsecurePlaintext => None,
        }
    }

    /// What opening a TLS link to a node whose descriptor names `pin` takes (`None`: a
    /// seed), or `None` for plaintext links.
    #[must_use]
    pub fn dial(&self, pin: Option<TlsKeyHash>) -> Option<Dial> {
        match self {
            Self::Tls(tls) => Some(tls.dial(pin)),
            Self::InsecurePlaintext => None,
        }
    }

    /// How many times the node's TLS keys changed (0 for plaintext or a client's links):
    /// pools keep connections of the current generation only, so every new link presents
    /// the current certificate.
    #[must_use]
    pub fn generation(&self) -> u64 {
        match self {
            Self::Tls(tls) => tls.generation(),
            Self::InsecurePlaintext => 0,
        }
    }

    /// The client config for a link to a node whose descriptor names `pin` (`None`: a
    /// seed known by address alone), or `None` for plaintext links.
    #[must_use]
    pub fn client_config(&self, pin: Option<TlsKeyHash>) -> Option<Arc<ClientConfig>> {
        match self {
            Self::Tls(tls) => Some(tls.client_config(pin)),
            Self::InsecurePlaintext => None,
        }
    }
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tls(_) => "Links::Tls",
            Self::InsecurePlaintext => "Links::InsecurePlaintext",
        })
    }
}

/// What a TLS link to one node is opened with: the client config pinned to the key its
/// descriptor names, and the server name (SNI) naming that key.
#[derive(Clone, Debug)]
pub struct Dial {
    /// The pinned client config.
    pub config: Arc<ClientConfig>,
    /// The name to connect with ([`server_name`]).
    pub name: ServerName<'static>,
}

/// The TLS side of a node (its keys, its server config, a client config per pinned peer
/// key, presenting its own current certificate) or of a client (no key, no certificate).
///
/// A node's keys change at a rotation ([`TlsLinks::install`]): the server then presents
/// the current key, or the previous one to clients whose SNI names it, and every new
/// outgoing connection presents the current one. [`TlsLinks::generation`] counts the
/// changes, so connection pools can drop links opened with an older certificate.
pub struct TlsLinks {
    served: Option<Arc<ServedKeys>>,
    server: Option<Arc<ServerConfig>>,
    clients: Mutex<ClientConfigs>,
}

/// Client configs by pinned key, all presenting the certificate of one generation.
type ClientConfigs = PerGeneration<Option<[u8; 32]>, Arc<ClientConfig>>;

/// A cache of things made with one generation of a node's TLS keys
/// ([`TlsLinks::generation`]): client configs, agents and pooled connections that present
/// its certificate. A newer generation empties it; an older one (a caller that read the
/// generation just before a rotation) neither reads nor fills it.
#[derive(Debug)]
pub struct PerGeneration<K, V> {
    generation: u64,
    entries: HashMap<K, V>,
}

impl<K, V> Default for PerGeneration<K, V> {
    fn default() -> Self {
        Self {
            generation: 0,
            entries: HashMap::new(),
        }
    }
}

impl<K, V> PerGeneration<K, V> {
    /// The entries made with `generation`, or `None` when that generation is past.
    pub fn of(&mut self, generation: u64) -> Option<&mut HashMap<K, V>> {
        if generation > self.generation {
            self.entries.clear();
            self.generation = generation;
        }
        (generation == self.generation).then_some(&mut self.entries)
    }
}

impl TlsLinks {
    /// A node's links: serves with `key` (clients may present a certificate, nodes do)
    /// and presents it when calling other nodes.
    pub fn for_node(key: TlsKey) -> Result<Self, String> {
        let served = Arc::new(
            ServedKeys::new(key)
                .map_err(|e| format!("cannot set up TLS with the key in tls.key: {e}"))?,
        );
        let server = server_config_with_resolver(served.clone(), ClientAuth::Optional)
            .map_err(|e| format!("cannot set up TLS with the key in tls.key: {e}"))?;
        Ok(Self {
            served: Some(served),
            server: Some(server),
            clients: Mutex::default(),
        })
    }

    /// A client's links: no certificate of its own.
    #[must_use]
    pub fn for_client() -> Self {
        Self {
            served: None,
            server: None,
            clients: Mutex::default(),
        }
    }

    /// The server config (a node's links only).
    #[must_use]
    pub fn server_config(&self) -> Option<Arc<ServerConfig>> {
        self.server.clone()
    }

    /// The hash of the key this side presents (a node's links only).
    #[must_use]
    pub fn key_hash(&self) -> Option<TlsKeyHash> {
        self.served.as_ref().map(|s| s.current_hash())
    }

    /// How many times the keys changed ([`TlsLinks::install`]); 0 for a client.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.served.as_ref().map_or(0, |s| s.generation())
    }

    /// Presents `current` from now on, and `previous` too to clients that name it by SNI
    /// (`None`: the previous key is retired). A node's links only; errors if a
    /// certificate cannot be made, leaving the keys as they were.
    pub fn install(&self, current: &TlsKey, previous: Option<&TlsKey>) -> Result<(), String> {
        let served = self
            .served
            .as_ref()
            .ok_or("a client's links have no keys to rotate")?;
        served
            .install(current, previous)
            .map_err(|e| format!("cannot make a certificate for the new TLS key: {e}"))
    }

    /// [`TlsLinks::client_config`] with the server name that goes with it.
    #[must_use]
    pub fn dial(&self, pin: Option<TlsKeyHash>) -> Dial {
        Dial {
            config: self.client_config(pin),
            name: server_name(pin),
        }
    }

    /// The client config accepting only a server whose key hashes to `pin`; with `None`
    /// (a seed), any Ed25519 server key that signs its handshake: encrypted, not pinned.
    /// Connect with [`server_name`]`(pin)`.
    #[must_use]
    pub fn client_config(&self, pin: Option<TlsKeyHash>) -> Arc<ClientConfig> {
        let slot = pin.map(|p| p.0);
        let (generation, key) = match &self.served {
            Some(served) => {
                let (generation, key) = served.client_key();
                (generation, Some(key))
            }
            None => (0, None),
        };
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(by_pin) = clients.of(generation) {
            if let Some(config) = by_pin.get(&slot) {
                return config.clone();
            }
            if by_pin.len() >= MAX_CACHED_CONFIGS {
                by_pin.clear();
            }
        }
        let config = match slot {
            Some(hash) => client_config(hash, key.as_deref()),
            None => unpinned_client_config(key.as_deref()),
        }
        .expect("our provider, protocol version and Ed25519 key always make a config");
        if let Some(by_pin) = clients.of(generation) {
            by_pin.insert(slot, config.clone());
        }
        config
    }
}

/// The keys a node's TLS server presents: the current one to every client but those whose
/// SNI names the previous one, during a rotation's overlap.
struct ServedKeys {
    state: RwLock<Served>,
}

struct Served {
    generation: u64,
    current_key: Arc<TlsKey>,
    current: Arc<CertifiedKey>,
    /// The previous key's server name and certified key.
    previous: Option<(String, Arc<CertifiedKey>)>,
}

impl ServedKeys {
    fn new(key: TlsKey) -> Result<Self, rustls::Error> {
        Ok(Self {
            state: RwLock::new(Served {
                generation: 0,
                current: key.certified_key()?,
                current_key: Arc::new(key),
                previous: None,
            }),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Served> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn current_hash(&self) -> TlsKeyHash {
        TlsKeyHash(self.read().current_key.key_hash())
    }

    fn generation(&self) -> u64 {
        self.read().generation
    }

    fn client_key(&self) -> (u64, Arc<TlsKey>) {
        let served = self.read();
        (served.generation, served.current_key.clone())
    }

    fn install(&self, current: &TlsKey, previous: Option<&TlsKey>) -> Result<(), rustls::Error> {
        let certified = current.certified_key()?;
        let previous = match previous {
            Some(key) => Some((pin_server_name(&key.key_hash()), key.certified_key()?)),
            None => None,
        };
        let mut served = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if served.current_key.public_key() != current.public_key() {
            served.generation += 1;
            served.current = certified;
            served.current_key = Arc::new(current.duplicate());
        }
        served.previous = previous;
        Ok(())
    }
}

impl std::fmt::Debug for ServedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let served = self.read();
        f.debug_struct("ServedKeys")
            .field("generation", &served.generation)
            .field("current_public_key", &served.current_key.public_key())
            .field("previous", &served.previous.as_ref().map(|(name, _)| name))
            .finish()
    }
}

impl ResolvesServerCert for ServedKeys {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let served = self.read();
        if let (Some(asked), Some((name, previous))) = (hello.server_name(), &served.previous)
            && asked.eq_ignore_ascii_case(name)
        {
            return Some(previous.clone());
        }
        Some(served.current.clone())
    }
}

/// What a TLS listener answers to a connection that opens with plain HTTP instead of a
/// TLS handshake, before closing it: a 400 with a JSON body naming the problem.
#[must_use]
pub fn plaintext_refusal() -> Vec<u8> {
    let body = ApiError::new(
        400,
        "tls_required",
        "this node accepts TLS connections only: connect with https:// (plain HTTP is \
         served only by nodes run with http.insecure_plaintext = true)",
    )
    .body();
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
