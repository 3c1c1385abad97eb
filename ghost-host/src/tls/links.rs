//! How a node or a client makes and accepts links: TLS pinned by descriptors (the
//! default), or plain HTTP when an operator asked for it by name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use proto_core::TlsKeyHash;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};

use super::{ClientAuth, TlsKey, client_config, server_config, unpinned_client_config};
use crate::api::ApiError;

/// Most client configs kept, one per pinned key; past it the cache starts over (building
/// one again costs a certificate, microseconds).
const MAX_CACHED_CONFIGS: usize = 4096;

/// The server name handed to rustls when connecting: our verifier ignores names and SNI
/// is off, so it never reaches the wire.
#[must_use]
pub fn unused_server_name() -> ServerName<'static> {
    ServerName::try_from("node.invalid").expect("a valid DNS name")
}

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

/// The TLS side of a node (its key, its server config, a client config per pinned peer
/// key, presenting its own certificate) or of a client (no key, no certificate).
pub struct TlsLinks {
    key: Option<TlsKey>,
    server: Option<Arc<ServerConfig>>,
    clients: Mutex<HashMap<Option<[u8; 32]>, Arc<ClientConfig>>>,
}

impl TlsLinks {
    /// A node's links: serves with `key` (clients may present a certificate, nodes do)
    /// and presents it when calling other nodes.
    pub fn for_node(key: TlsKey) -> Result<Self, String> {
        let server = server_config(&key, ClientAuth::Optional)
            .map_err(|e| format!("cannot set up TLS with the key in tls.key: {e}"))?;
        Ok(Self {
            key: Some(key),
            server: Some(server),
            clients: Mutex::default(),
        })
    }

    /// A client's links: no certificate of its own.
    #[must_use]
    pub fn for_client() -> Self {
        Self {
            key: None,
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
        self.key.as_ref().map(|k| TlsKeyHash(k.key_hash()))
    }

    /// The client config accepting only a server whose key hashes to `pin`; with `None`
    /// (a seed), any Ed25519 server key that signs its handshake: encrypted, not pinned.
    #[must_use]
    pub fn client_config(&self, pin: Option<TlsKeyHash>) -> Arc<ClientConfig> {
        let slot = pin.map(|p| p.0);
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(config) = clients.get(&slot) {
            return config.clone();
        }
        if clients.len() >= MAX_CACHED_CONFIGS {
            clients.clear();
        }
        let config = match slot {
            Some(hash) => client_config(hash, self.key.as_ref()),
            None => unpinned_client_config(self.key.as_ref()),
        }
        .expect("our provider, protocol version and Ed25519 key always make a config");
        clients.insert(slot, config.clone());
        config
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
