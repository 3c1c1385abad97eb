//! Reading a node's Ed25519 public key out of its certificate.
//!
//! Trust never comes from the certificate itself (its issuer, names, dates and own
//! signature are all ignored): the only thing we need from it is the 32-byte key, which
//! the verifiers hash against a descriptor's `tls_key_hash` and use to check the TLS
//! handshake signature. So instead of a general X.509 parser this is a fixed, bounded
//! walk: at most ten TLV headers, every index checked, no recursion, no allocation.

use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

/// The DER of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410 §4) before its 32 key bytes:
/// `SEQUENCE(42) { SEQUENCE(5) { OID 1.3.101.112 }, BIT STRING(33) { 0 unused bits, key } }`.
pub(crate) const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const VERSION_TAG: u8 = 0xa0; // [0] EXPLICIT, constructed

/// SHA-256 of a 32-byte Ed25519 public key: the `tls_key_hash` a descriptor carries.
pub fn key_hash(public_key: &[u8; 32]) -> [u8; 32] {
    Sha256::digest(public_key).into()
}

/// The `tls_key_hash` of the peer's end-entity certificate (the first of `certs`), or
/// `None` if there is none or it does not carry an Ed25519 key.
///
/// On a server, pass `ServerConnection::peer_certificates()` after the handshake: with
/// [`PeerClientVerifier`](super::PeerClientVerifier) installed, a certificate is only
/// there if the client also proved possession of its key in the handshake.
pub fn peer_key_hash(certs: &[CertificateDer<'_>]) -> Option<[u8; 32]> {
    let key = ed25519_key_from_cert(certs.first()?)?;
    Some(key_hash(&key))
}

/// The 32-byte Ed25519 public key in an X.509 certificate's `SubjectPublicKeyInfo`, or
/// `None` if `cert` is not a well-formed DER certificate with an Ed25519 key.
///
/// Only the structure up to the `SubjectPublicKeyInfo` is checked (outer
/// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }`, and the
/// `tbsCertificate` fields before the key); nothing else in the certificate matters here.
pub fn ed25519_key_from_cert(cert: &[u8]) -> Option<[u8; 32]> {
    // Certificate: one SEQUENCE spanning the whole input.
    let (body, rest) = tlv(cert, SEQUENCE)?;
    if !rest.is_empty() {
        return None;
    }
    // tbsCertificate, signatureAlgorithm, signatureValue, and nothing after.
    let (tbs, after_tbs) = tlv(body, SEQUENCE)?;
    let (_sig_alg, after_alg) = tlv(after_tbs, SEQUENCE)?;
    let (_sig, after_sig) = tlv(after_alg, BIT_STRING)?;
    if !after_sig.is_empty() {
        return None;
    }
    // [0] version (optional), serialNumber, signature, issuer, validity, subject.
    let mut fields = tbs;
    if fields.first() == Some(&VERSION_TAG) {
        fields = tlv(fields, VERSION_TAG)?.1;
    }
    fields = tlv(fields, INTEGER)?.1;
    for _ in 0..4 {
        fields = tlv(fields, SEQUENCE)?.1;
    }
    // subjectPublicKeyInfo, compared whole against the one Ed25519 encoding.
    let spki = fields.get(..ED25519_SPKI_PREFIX.len() + 32)?;
    let (prefix, key) = spki.split_at(ED25519_SPKI_PREFIX.len());
    if prefix != ED25519_SPKI_PREFIX {
        return None;
    }
    key.try_into().ok()
}

/// Splits one DER TLV with tag `tag` off the front of `input`: `(contents, rest)`.
/// Definite lengths only, minimally encoded, at most 4 length bytes (certificates are far
/// below 4 GiB); every bound checked, so garbage yields `None` rather than a panic.
fn tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, input) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        // 0x80 is the BER indefinite form; more than 4 bytes cannot be a certificate.
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, rest) = input.split_at_checked(count)?;
        input = rest;
        // Minimal encoding: no leading zero byte, and the long form only from 128 on.
        if bytes.first() == Some(&0) {
            return None;
        }
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        if len < 0x80 {
            return None;
        }
        len
    };
    input.split_at_checked(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlv_lengths() {
        assert_eq!(tlv(&[0x30, 0x00], SEQUENCE), Some((&[][..], &[][..])));
        assert_eq!(
            tlv(&[0x30, 0x01, 0xaa, 0xbb], SEQUENCE),
            Some((&[0xaa][..], &[0xbb][..]))
        );
        let mut long = vec![0x30, 0x81, 0x80];
        long.extend([7u8; 0x80]);
        assert_eq!(tlv(&long, SEQUENCE).map(|(c, _)| c.len()), Some(0x80));
        // Wrong tag, truncated, indefinite, non-minimal, too many length bytes.
        assert_eq!(tlv(&[0x31, 0x00], SEQUENCE), None);
        assert_eq!(tlv(&[0x30, 0x02, 0x00], SEQUENCE), None);
        assert_eq!(tlv(&[0x30, 0x80, 0x00, 0x00], SEQUENCE), None);
        assert_eq!(tlv(&[0x30, 0x81, 0x05, 0, 0, 0, 0, 0], SEQUENCE), None);
        assert_eq!(tlv(&[0x30, 0x82, 0x00, 0x80], SEQUENCE), None);
        assert_eq!(tlv(&[0x30, 0x85, 1, 0, 0, 0, 0], SEQUENCE), None);
        assert_eq!(tlv(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff], SEQUENCE), None);
        assert_eq!(tlv(&[], SEQUENCE), None);
    }
}
