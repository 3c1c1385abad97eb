//! Certificate verifiers that trust a key, not a CA: the client pins the server's key hash
//! from its signed descriptor; the server accepts any Ed25519 client key that proves
//! itself in the handshake and leaves the mapping to a node identity to the directory.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, PeerIncompatible,
    SignatureScheme,
};

use super::ClientAuth;
use super::der::{ed25519_key_from_cert, key_hash};

/// Why a peer's certificate was refused (carried in `CertificateError::Other`, so the
/// rustls error names it and the peer gets a `certificate_unknown` alert).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum CertRejected {
    /// The certificate is malformed or its key is not Ed25519.
    NotEd25519,
    /// The certificate's key does not hash to the pinned `tls_key_hash`.
    KeyHashMismatch,
}

impl fmt::Display for CertRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotEd25519 => "certificate does not carry an Ed25519 key",
            Self::KeyHashMismatch => "certificate key does not match the pinned tls_key_hash",
        })
    }
}

// rustls prints the reason inside its error with `Debug`: make that the sentence too.
impl fmt::Debug for CertRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for CertRejected {}

impl From<CertRejected> for rustls::Error {
    fn from(r: CertRejected) -> Self {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(r))))
    }
}

/// Client side: accepts the server only if its end-entity certificate carries an Ed25519
/// key hashing to `expected` (the descriptor's `tls_key_hash`), and the handshake
/// signature verifies with that key. Names, chains and validity dates are ignored: the
/// signed descriptor is the trust anchor. TLS 1.2 is refused.
#[derive(Debug, Clone)]
pub struct PinnedServerVerifier {
    expected: Option<[u8; 32]>,
}

impl PinnedServerVerifier {
    /// A verifier pinned to `expected` = SHA-256 of the server's Ed25519 TLS public key.
    pub fn new(expected: [u8; 32]) -> Self {
        Self {
            expected: Some(expected),
        }
    }

    /// A verifier for a server known by address alone (a seed): any Ed25519 key that
    /// signs the handshake. The link is encrypted, but nothing says whose key it is.
    pub fn unpinned() -> Self {
        Self { expected: None }
    }
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = ed25519_key_from_cert(end_entity).ok_or(CertRejected::NotEd25519)?;
        // The hash is public (it is in the descriptor), so no constant-time compare.
        if self
            .expected
            .is_some_and(|expected| key_hash(&key) != expected)
        {
            return Err(CertRejected::KeyHashMismatch.into());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Server side: asks for a client certificate, accepts any Ed25519 one whose key signs
/// the handshake, and (unless [`ClientAuth::Required`]) also accepts clients that send
/// none. After the handshake, [`peer_key_hash`](super::peer_key_hash) of
/// `ServerConnection::peer_certificates()` gives the client's `tls_key_hash`.
#[derive(Debug, Clone)]
pub struct PeerClientVerifier {
    mandatory: bool,
}

impl PeerClientVerifier {
    /// A verifier for the given client-authentication policy.
    pub fn new(auth: ClientAuth) -> Self {
        Self {
            mandatory: matches!(auth, ClientAuth::Required),
        }
    }
}

impl ClientCertVerifier for PeerClientVerifier {
    // Always ask: a node presents its certificate, a plain client answers with none.
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    // No CA names to hint: the client should send its certificate if it has one.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        ed25519_key_from_cert(end_entity).ok_or(CertRejected::NotEd25519)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Our configs and provider are TLS 1.3 only, so rustls never calls this; refuse anyway.
fn tls12_refused() -> rustls::Error {
    rustls::Error::PeerIncompatible(PeerIncompatible::SupportedVersionsExtensionRequired)
}

/// The TLS 1.3 CertificateVerify check with the certificate's Ed25519 key (the same key
/// `verify_*_cert` already accepted: both come from [`ed25519_key_from_cert`]).
fn verify_tls13(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(rustls::Error::PeerMisbehaved(
            rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
        ));
    }
    let key = ed25519_key_from_cert(cert).ok_or(CertRejected::NotEd25519)?;
    ed25519_verify(&key, message, dss.signature())
        .map(|()| HandshakeSignatureValid::assertion())
        .map_err(|()| rustls::Error::InvalidCertificate(CertificateError::BadSignature))
}

/// Strict Ed25519 verification (rejects small-order keys and non-canonical signatures,
/// which honest signers never produce).
pub(crate) fn ed25519_verify(key: &[u8; 32], message: &[u8], signature: &[u8]) -> Result<(), ()> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(key).map_err(|_| ())?;
    let signature = ed25519_dalek::Signature::from_slice(signature).map_err(|_| ())?;
    key.verify_strict(message, &signature).map_err(|_| ())
}
