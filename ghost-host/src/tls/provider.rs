//! A rustls `CryptoProvider` on the workspace's one RustCrypto generation (dalek 3,
//! sha2 0.11, hmac 0.13, chacha20poly1305 0.11, getrandom 0.4), so TLS adds neither ring
//! nor aws-lc-rs nor a second digest stack. Adapted from rustls's `provider-example`,
//! cut down to what nodes speak: TLS 1.3, TLS13_CHACHA20_POLY1305_SHA256, X25519, Ed25519.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Tag};
use hmac::{Hmac, Mac};
use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, InboundPlainMessage, Iv, MessageDecrypter, MessageEncrypter,
    Nonce, OutboundOpaqueMessage, OutboundPlainMessage, PrefixedPayload, Tls13AeadAlgorithm,
    UnsupportedOperationError, make_tls13_aad,
};
use rustls::crypto::{
    self, ActiveKeyExchange, CipherSuiteCommon, CryptoProvider, GetRandomFailed, KeyProvider,
    SecureRandom, SharedSecret, SupportedKxGroup, WebPkiSupportedAlgorithms, hash,
};
use rustls::pki_types::{
    AlgorithmIdentifier, InvalidSignature, PrivateKeyDer, SignatureVerificationAlgorithm, alg_id,
};
use rustls::{
    CipherSuite, ConnectionTrafficSecrets, ContentType, NamedGroup, PeerMisbehaved,
    ProtocolVersion, SignatureScheme, SupportedCipherSuite, Tls13CipherSuite,
};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use zeroize::Zeroizing;

/// The provider: one suite, one group, one signature scheme, the OS random generator,
/// and a key loader for Ed25519 PKCS#8 keys.
pub fn provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![TLS13_CHACHA20_POLY1305_SHA256],
        kx_groups: vec![&X25519],
        signature_verification_algorithms: SIGNATURE_ALGORITHMS,
        secure_random: &OsRandom,
        key_provider: &Ed25519Keys,
    }
}

/// TLS13_CHACHA20_POLY1305_SHA256 on RustCrypto.
pub static TLS13_CHACHA20_POLY1305_SHA256: SupportedCipherSuite =
    SupportedCipherSuite::Tls13(&Tls13CipherSuite {
        common: CipherSuiteCommon {
            suite: CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            hash_provider: &Sha256Hash,
            // RFC 8446 §5.5: ChaCha20-Poly1305 has no practical confidentiality limit
            // (rustls's own providers use the same value).
            confidentiality_limit: u64::MAX,
        },
        // rustls's HKDF over our HMAC: the same construction its own providers use.
        hkdf_provider: &crypto::tls13::HkdfUsingHmac(&Sha256Hmac),
        aead_alg: &ChaCha20Poly1305Aead,
        quic: None,
    });

/// Ed25519 for webpki-style verification (the provider must name its algorithms; our own
/// verifiers call ed25519-dalek directly, see `verify.rs`).
static SIGNATURE_ALGORITHMS: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[&Ed25519Verify],
    mapping: &[(SignatureScheme::ED25519, &[&Ed25519Verify])],
};

// ---- hash and HMAC ----

struct Sha256Hash;

impl hash::Hash for Sha256Hash {
    fn start(&self) -> Box<dyn hash::Context> {
        Box::new(Sha256Context(Sha256::new()))
    }

    fn hash(&self, data: &[u8]) -> hash::Output {
        hash::Output::new(&Sha256::digest(data))
    }

    fn output_len(&self) -> usize {
        32
    }

    fn algorithm(&self) -> hash::HashAlgorithm {
        hash::HashAlgorithm::SHA256
    }
}

struct Sha256Context(Sha256);

impl hash::Context for Sha256Context {
    fn fork_finish(&self) -> hash::Output {
        hash::Output::new(&self.0.clone().finalize())
    }

    fn fork(&self) -> Box<dyn hash::Context> {
        Box::new(Self(self.0.clone()))
    }

    fn finish(self: Box<Self>) -> hash::Output {
        hash::Output::new(&self.0.finalize())
    }

    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
}

struct Sha256Hmac;

impl crypto::hmac::Hmac for Sha256Hmac {
    fn with_key(&self, key: &[u8]) -> Box<dyn crypto::hmac::Key> {
        // HMAC takes keys of any length (longer ones are hashed first): hmac 0.13's
        // `new_from_slice` always returns `Ok`, and its own `KeyInit::new` expects the
        // same. Failing here would be a bug in hmac, not a runtime condition.
        let mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
        Box::new(Sha256HmacKey(mac))
    }

    fn hash_output_len(&self) -> usize {
        32
    }
}

struct Sha256HmacKey(Hmac<Sha256>);

impl crypto::hmac::Key for Sha256HmacKey {
    fn sign_concat(&self, first: &[u8], middle: &[&[u8]], last: &[u8]) -> crypto::hmac::Tag {
        let mut mac = self.0.clone();
        mac.update(first);
        for part in middle {
            mac.update(part);
        }
        mac.update(last);
        crypto::hmac::Tag::new(&mac.finalize().into_bytes())
    }

    fn tag_len(&self) -> usize {
        32
    }
}

// ---- AEAD ----

struct ChaCha20Poly1305Aead;

const TAG_LEN: usize = 16;

impl Tls13AeadAlgorithm for ChaCha20Poly1305Aead {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        Box::new(Tls13Cipher::new(&key, iv))
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        Box::new(Tls13Cipher::new(&key, iv))
    }

    fn key_len(&self) -> usize {
        32
    }

    fn extract_keys(
        &self,
        key: AeadKey,
        iv: Iv,
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        Ok(ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv })
    }
}

/// One direction of a TLS 1.3 record protection. `None` only if rustls handed us a key
/// of the wrong length (it asks `key_len()` first, so never): then every record fails,
/// closing the connection, rather than panicking.
struct Tls13Cipher(Option<ChaCha20Poly1305>, Iv);

impl Tls13Cipher {
    fn new(key: &AeadKey, iv: Iv) -> Self {
        Self(ChaCha20Poly1305::new_from_slice(key.as_ref()).ok(), iv)
    }
}

impl MessageEncrypter for Tls13Cipher {
    fn encrypt(
        &mut self,
        msg: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, rustls::Error> {
        let aead = self.0.as_ref().ok_or(rustls::Error::EncryptError)?;
        let total_len = self.encrypted_payload_len(msg.payload.len());
        let mut payload = PrefixedPayload::with_capacity(total_len);
        // TLSInnerPlaintext: content, then the real content type (RFC 8446 §5.2).
        payload.extend_from_chunks(&msg.payload);
        payload.extend_from_slice(&msg.typ.to_array());
        let nonce = Nonce::new(&self.1, seq).0;
        let tag = aead
            .encrypt_inout_detached(
                &nonce.into(),
                &make_tls13_aad(total_len),
                payload.as_mut().into(),
            )
            .map_err(|_| rustls::Error::EncryptError)?;
        payload.extend_from_slice(&tag);
        Ok(OutboundOpaqueMessage::new(
            ContentType::ApplicationData,
            ProtocolVersion::TLSv1_2,
            payload,
        ))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len + 1 + TAG_LEN
    }
}

impl MessageDecrypter for Tls13Cipher {
    fn decrypt<'a>(
        &mut self,
        mut msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, rustls::Error> {
        let aead = self.0.as_ref().ok_or(rustls::Error::DecryptError)?;
        let payload = &mut msg.payload;
        let aad = make_tls13_aad(payload.len());
        let text_len = payload
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(rustls::Error::DecryptError)?;
        let (text, tag) = payload.split_at_mut(text_len);
        let tag = Tag::try_from(&*tag).map_err(|_| rustls::Error::DecryptError)?;
        let nonce = Nonce::new(&self.1, seq).0;
        aead.decrypt_inout_detached(&nonce.into(), &aad, text.into(), &tag)
            .map_err(|_| rustls::Error::DecryptError)?;
        payload.truncate(text_len);
        msg.into_tls13_unpadded_message()
    }
}

// ---- key exchange ----

#[derive(Debug)]
struct X25519;

impl SupportedKxGroup for X25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        // A StaticSecret from getrandom bytes rather than EphemeralSecret: its generator
        // API wants an infallible RNG, and a failed getrandom should fail the handshake.
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut *bytes).map_err(|_| GetRandomFailed)?;
        let secret = x25519_dalek::StaticSecret::from(*bytes);
        let public = x25519_dalek::PublicKey::from(&secret);
        Ok(Box::new(X25519Exchange { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

struct X25519Exchange {
    secret: x25519_dalek::StaticSecret,
    public: x25519_dalek::PublicKey,
}

impl ActiveKeyExchange for X25519Exchange {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, rustls::Error> {
        let peer: [u8; 32] = peer
            .try_into()
            .map_err(|_| PeerMisbehaved::InvalidKeyShare)?;
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer));
        // RFC 8446 §7.4.2: abort on an all-zero shared secret (a small-order peer key).
        if !shared.was_contributory() {
            return Err(PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(SharedSecret::from(&shared.as_bytes()[..]))
    }

    fn pub_key(&self) -> &[u8] {
        self.public.as_bytes()
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

// ---- randomness and keys ----

#[derive(Debug)]
struct OsRandom;

impl SecureRandom for OsRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        getrandom::fill(buf).map_err(|_| GetRandomFailed)
    }
}

#[derive(Debug)]
struct Ed25519Keys;

impl KeyProvider for Ed25519Keys {
    fn load_private_key(
        &self,
        key_der: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        super::key::load_pkcs8(&key_der)
    }
}

// ---- signature verification (for webpki-style users of the provider) ----

#[derive(Debug)]
struct Ed25519Verify;

impl SignatureVerificationAlgorithm for Ed25519Verify {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        let key: &[u8; 32] = public_key.try_into().map_err(|_| InvalidSignature)?;
        super::verify::ed25519_verify(key, message, signature).map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ED25519
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ED25519
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_offers_exactly_one_of_each() {
        let p = provider();
        assert_eq!(p.cipher_suites, vec![TLS13_CHACHA20_POLY1305_SHA256]);
        assert_eq!(
            p.kx_groups.iter().map(|g| g.name()).collect::<Vec<_>>(),
            vec![NamedGroup::X25519]
        );
        assert_eq!(
            p.signature_verification_algorithms.supported_schemes(),
            vec![SignatureScheme::ED25519]
        );
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        p.secure_random.fill(&mut a).expect("random");
        p.secure_random.fill(&mut b).expect("random");
        assert_ne!(a, b);
    }

    #[test]
    fn x25519_agrees_and_refuses_small_order_shares() {
        let (c, d) = (X25519.start().expect("c"), X25519.start().expect("d"));
        let (c_pub, d_pub) = (c.pub_key().to_vec(), d.pub_key().to_vec());
        assert_ne!(c_pub, d_pub);
        assert_eq!(
            c.complete(&d_pub).expect("cd").secret_bytes(),
            d.complete(&c_pub).expect("dc").secret_bytes()
        );
        // The all-zero point (small order) and a short share are refused.
        assert!(X25519.start().expect("e").complete(&[0u8; 32]).is_err());
        assert!(X25519.start().expect("f").complete(&[9u8; 31]).is_err());
    }
}
