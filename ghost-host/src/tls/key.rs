//! The node's TLS identity: an Ed25519 key, its self-signed certificate, and the rustls
//! signing key made from it.

use std::fmt;
use std::sync::Arc;

use ed25519_dalek::Signer as _;
use rand_core::CryptoRng;
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer,
};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use zeroize::Zeroizing;

use super::der::{ED25519_SPKI_PREFIX, key_hash};

/// The PKCS#8 v1 encoding of an Ed25519 private key (RFC 8410 §7) before its 32 secret
/// bytes: `SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING(32) } }`.
/// The only form we write, and the only one we load: keys never come from elsewhere.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A node's TLS key: an Ed25519 key pair, separate from its identity key, whose public
/// half a signed descriptor pins as `tls_key_hash` ([`TlsKey::key_hash`]).
pub struct TlsKey {
    key: ed25519_dalek::SigningKey,
}

impl TlsKey {
    /// A fresh key from `rng` (the OS generator in production).
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut *secret);
        Self::from_secret_bytes(&secret)
    }

    /// The key whose 32-byte Ed25519 secret (seed) is `secret`.
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        Self {
            key: ed25519_dalek::SigningKey::from_bytes(secret),
        }
    }

    /// The 32-byte secret, for storing the key (wiped when dropped).
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// SHA-256 of the public key: the `tls_key_hash` a descriptor carries.
    pub fn key_hash(&self) -> [u8; 32] {
        key_hash(&self.public_key())
    }

    /// A self-signed X.509 certificate for this key (CN=ghostnode, valid 1970–9999 so
    /// clocks never matter). Deterministic: Ed25519 signatures are, and the serial number
    /// is taken from the key hash. Peers trust it only through the pinned key hash.
    pub fn certificate(&self) -> Result<CertificateDer<'static>, rustls::Error> {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ghostnode");
        params.not_before = rcgen::date_time_ymd(1970, 1, 1);
        params.not_after = rcgen::date_time_ymd(9999, 12, 31);
        // rcgen without its `crypto` feature cannot hash, so it asks for a serial. 16
        // bytes of the key hash; the top bit cleared keeps the INTEGER positive.
        let mut serial = self.key_hash();
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial[..16]));
        let signer = RcgenSigner {
            key: &self.key,
            public: self.public_key(),
        };
        params
            .self_signed(&signer)
            .map(|cert| cert.der().clone())
            .map_err(|e| rustls::Error::General(format!("certificate generation: {e}")))
    }

    /// The private key as PKCS#8 DER, the form rustls's config builders take (and our
    /// provider's `KeyProvider` loads back).
    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        let mut der = Vec::with_capacity(PKCS8_PREFIX.len() + 32);
        der.extend_from_slice(&PKCS8_PREFIX);
        der.extend_from_slice(self.key.as_bytes());
        // PrivatePkcs8KeyDer wipes its buffer on drop.
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der))
    }

    /// The certificate and signing key a server presents, as rustls takes them from a
    /// certificate resolver.
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, rustls::Error> {
        Ok(Arc::new(CertifiedKey::new(
            vec![self.certificate()?],
            self.signing_key(),
        )))
    }

    /// Another handle on the same key (both wipe their copy of the secret when dropped).
    pub(crate) fn duplicate(&self) -> Self {
        Self::from_secret_bytes(&self.secret_bytes())
    }

    /// The key as rustls signs with it.
    pub(crate) fn signing_key(&self) -> Arc<dyn SigningKey> {
        Arc::new(Ed25519SigningKey(Arc::new(self.key.clone())))
    }
}

impl fmt::Debug for TlsKey {
    // Never print the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsKey")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// Loads the PKCS#8 form [`TlsKey::private_key_der`] writes; anything else is refused.
pub(crate) fn load_pkcs8(der: &PrivateKeyDer<'_>) -> Result<Arc<dyn SigningKey>, rustls::Error> {
    let PrivateKeyDer::Pkcs8(pkcs8) = der else {
        return Err(rustls::Error::General(
            "only Ed25519 PKCS#8 keys are supported".into(),
        ));
    };
    let bytes = pkcs8.secret_pkcs8_der();
    let secret: &[u8; 32] = bytes
        .strip_prefix(&PKCS8_PREFIX[..])
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| rustls::Error::General("not an Ed25519 PKCS#8 v1 key".into()))?;
    Ok(Arc::new(Ed25519SigningKey(Arc::new(
        ed25519_dalek::SigningKey::from_bytes(secret),
    ))))
}

/// rustls's view of an Ed25519 key: offers `ED25519` and nothing else.
#[derive(Clone)]
struct Ed25519SigningKey(Arc<ed25519_dalek::SigningKey>);

impl fmt::Debug for Ed25519SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ed25519SigningKey")
    }
}

impl SigningKey for Ed25519SigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ED25519)
            .then(|| Box::new(self.clone()) as Box<dyn Signer>)
    }

    // Lets rustls check, when a config is built, that the certificate is for this key.
    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        let mut spki = ED25519_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(self.0.verifying_key().as_bytes());
        Some(SubjectPublicKeyInfoDer::from(spki))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ED25519
    }
}

impl Signer for Ed25519SigningKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        Ok(self.0.sign(message).to_bytes().to_vec())
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

/// rcgen's view of the key, to sign the self-signed certificate without rcgen's own
/// (ring / aws-lc) crypto.
struct RcgenSigner<'a> {
    key: &'a ed25519_dalek::SigningKey,
    public: [u8; 32],
}

impl rcgen::PublicKeyData for RcgenSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

impl rcgen::SigningKey for RcgenSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(self.key.sign(msg).to_bytes().to_vec())
    }
}
