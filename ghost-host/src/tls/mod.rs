//! TLS between nodes, and from clients to first hops, trusting keys rather than CAs.
//!
//! Every node has a [`TlsKey`] (Ed25519) whose hash its signed descriptor carries as
//! `tls_key_hash`. A client pins that hash ([`client_config`]); a server may ask peers
//! for their own certificate and read their hash after the handshake
//! ([`server_config`], [`peer_key_hash`]). Everything runs on rustls 0.23 with our own
//! [`provider`] over the workspace's RustCrypto crates: TLS 1.3 only,
//! TLS13_CHACHA20_POLY1305_SHA256, X25519, Ed25519.
//!
//! Session resumption is off on both sides: every connection re-proves the pinned server
//! key and re-presents the client's certificate, so a peer's identity always comes from
//! a fresh handshake signature; there are no ticket keys or session caches to manage,
//! and nodes keep connections alive, so the full handshake is paid rarely.

pub mod blocking;
mod der;
mod key;
mod links;
mod provider;
mod rotation;
mod verify;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use rustls::client::Resumption;
use rustls::server::{NoServerSessionStorage, ResolvesServerCert};
use rustls::version::TLS13;
use rustls::{ClientConfig, ServerConfig};

pub use der::{ed25519_key_from_cert, key_hash, peer_key_hash};
pub use key::TlsKey;
pub use links::{
    Dial, Links, PerGeneration, TLS_HANDSHAKE_RECORD, TlsLinks, plaintext_refusal, server_name,
};
pub use provider::{TLS13_CHACHA20_POLY1305_SHA256, provider};
pub use rotation::{KeyFile, Rotated, TlsRotation};
pub use verify::{CertRejected, PeerClientVerifier, PinnedServerVerifier};

/// The one application protocol nodes speak over TLS.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Whether a server asks connecting clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Node-to-node: the client must present an Ed25519 certificate and sign with it.
    Required,
    /// First hops: clients may present none; when one is presented it must verify, and
    /// its hash is available after the handshake.
    Optional,
}

/// A TLS 1.3 server config presenting `key`'s self-signed certificate, with client
/// certificates per `client_auth`, ALPN `http/1.1`, and no session resumption.
///
/// Errors only if the certificate cannot be built or rustls refuses the provider or key,
/// which would be a bug here rather than a runtime condition.
pub fn server_config(
    key: &TlsKey,
    client_auth: ClientAuth,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let builder = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&TLS13])?
        .with_client_cert_verifier(Arc::new(PeerClientVerifier::new(client_auth)))
        // Loads the key through our provider and checks it matches the certificate.
        .with_single_cert(vec![key.certificate()?], key.private_key_der())?;
    Ok(finish_server_config(builder))
}

/// [`server_config`] presenting whatever certificate `resolver` picks per connection (a
/// node's current or previous key, during a rotation).
pub(crate) fn server_config_with_resolver(
    resolver: Arc<dyn ResolvesServerCert>,
    client_auth: ClientAuth,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let builder = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&TLS13])?
        .with_client_cert_verifier(Arc::new(PeerClientVerifier::new(client_auth)))
        .with_cert_resolver(resolver);
    Ok(finish_server_config(builder))
}

fn finish_server_config(mut config: ServerConfig) -> Arc<ServerConfig> {
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Arc::new(config)
}

/// A TLS 1.3 client config that accepts only a server whose Ed25519 key hashes to
/// `expected_server_hash`, presenting `client_key`'s certificate when given (node to
/// node), with ALPN `http/1.1` and no session resumption.
///
/// Connect with [`server_name`]`(Some(pin))`: the verifier ignores it, but it goes on the
/// wire as SNI so that a node serving two keys during a rotation presents the pinned one.
pub fn client_config(
    expected_server_hash: [u8; 32],
    client_key: Option<&TlsKey>,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    client_config_with(
        PinnedServerVerifier::new(expected_server_hash),
        client_key,
        true,
    )
}

/// [`client_config`] for a server known by address alone (a seed): any Ed25519 server
/// key that signs the handshake is accepted, so the link is encrypted but not pinned.
pub fn unpinned_client_config(
    client_key: Option<&TlsKey>,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    client_config_with(PinnedServerVerifier::unpinned(), client_key, false)
}

fn client_config_with(
    verifier: PinnedServerVerifier,
    client_key: Option<&TlsKey>,
    send_pin_name: bool,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let builder = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match client_key {
        Some(key) => {
            builder.with_client_auth_cert(vec![key.certificate()?], key.private_key_der())?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    config.resumption = Resumption::disabled();
    // Trust is the pinned hash, not a name; the only name sent is the pin's own
    // ([`server_name`]), which picks the key during a rotation. An unpinned link sends none.
    config.enable_sni = send_pin_name;
    Ok(Arc::new(config))
}
