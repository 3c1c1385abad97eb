//! End-to-end encryption of message bodies to a recipient ("sealed box").
//!
//! A recipient has two independent keys: its Ed25519 identity key (the public half is the
//! [`RecipientId`] that picks its swarm and signs its requests) and an X25519
//! [`EncryptionKey`] that is generated on its own and never derived from the identity seed.
//! A sender who knows both public halves — a [`Contact`] — [`seal`]s a body with a fresh
//! ephemeral X25519 key, one HKDF-SHA256 and one ChaCha20-Poly1305; only the holder of the
//! encryption key can [`open`] it. Format: `eph_pk (32) ‖ ciphertext ‖ tag (16)`, where the
//! plaintext is `len (4) ‖ message ‖ zeros`, padded so the sealed body is one of a few fixed
//! lengths ([`sealed_len`]): the swarm and every relay see the bucket, not the message's
//! length (see `docs/PROTOCOL.md`, "Sealed message bodies").
//!
//! This module owns the sealed-body format and its key schedule. It never allocates, never
//! reads an RNG it does not own (the ephemeral key comes from the caller's [`CryptoRng`]),
//! and never releases plaintext that has not authenticated. It does not authenticate the
//! sender: anyone holding a [`Contact`] can seal to it, so a body that must prove its author
//! carries its own signature inside the plaintext, and a [`Contact`] must reach the sender
//! over a channel the sender trusts. Invariants: every AEAD key is used for exactly one
//! message (it is derived from a fresh ephemeral key), which is why the nonce is fixed; a
//! sealed body is bound to its recipient's identity and encryption key; every way opening
//! can fail after the length check is the one error [`SealError::Unauthentic`]; secrets are
//! zeroized on drop and `Debug` of a secret prints nothing secret.

use core::fmt;
use core::str::FromStr;

use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Tag};
use hkdf::Hkdf;
use rand_core::CryptoRng;
use sha2::Sha256;
use x25519_dalek::{EphemeralSecret, PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::keys::fixed;
use crate::types::RecipientId;

/// HKDF-Expand label of the AEAD key of a sealed body (listed in `docs/PROTOCOL.md`).
pub const LABEL_SEALED_BODY: &[u8] = b"ghostnodes/v1/sealed-body";
/// HKDF-Expand label of the AEAD key of one fragment of a large message
/// ([`crate::fragment`]): a fragment never opens as a message, nor a message as a fragment.
pub const LABEL_SEALED_FRAGMENT: &[u8] = b"ghostnodes/v1/sealed-fragment";

/// Length of the ephemeral X25519 public key that opens a sealed body.
pub const SEAL_EPH_LEN: usize = 32;
/// Length of the Poly1305 tag that closes a sealed body.
pub const SEAL_TAG_LEN: usize = 16;
/// Bytes a sealed body adds to its plaintext: ephemeral public key and tag.
pub const SEAL_OVERHEAD: usize = SEAL_EPH_LEN + SEAL_TAG_LEN;
/// Bytes of the message length in front of the message, inside the plaintext.
pub const SEAL_LEN_PREFIX: usize = 4;

/// The lengths a sealed body is padded to, smallest first; the last is the default store
/// body limit (`store::DEFAULT_MAX_BODY`), so the longest message one store takes fills it.
/// Longer bodies are padded to a multiple of [`SEALED_STEP`].
pub const SEALED_BUCKETS: [usize; 3] = [128, 512, 1392];
/// Above the last of [`SEALED_BUCKETS`], sealed bodies are a multiple of this.
pub const SEALED_STEP: usize = 1024;
/// The longest message that seals into the default store body limit (1,340 bytes).
pub const MAX_MESSAGE_IN_ONE_BODY: usize =
    SEALED_BUCKETS[SEALED_BUCKETS.len() - 1] - SEAL_OVERHEAD - SEAL_LEN_PREFIX;

/// The length of the sealed body of a `message_len`-byte message: the smallest of
/// [`SEALED_BUCKETS`] that holds `message_len + SEAL_LEN_PREFIX + SEAL_OVERHEAD`, or above
/// them the next multiple of [`SEALED_STEP`]. `None` beyond a 32-bit length.
#[must_use]
pub fn sealed_len(message_len: usize) -> Option<usize> {
    if u32::try_from(message_len).is_err() {
        return None;
    }
    let needed = message_len.checked_add(SEAL_LEN_PREFIX + SEAL_OVERHEAD)?;
    match SEALED_BUCKETS.iter().find(|&&b| b >= needed) {
        Some(&b) => Some(b),
        None => needed.checked_next_multiple_of(SEALED_STEP),
    }
}

/// Length of a [`Contact`]'s text form: two 32-byte keys as hex.
pub const CONTACT_TEXT_LEN: usize = 2 * (RecipientId::LEN + 32);

/// Every AEAD key seals exactly one message (its ephemeral key is fresh), so a fixed nonce
/// never repeats under one key.
const SEAL_NONCE: [u8; 12] = [0; 12];

/// The public half of a recipient's encryption key: what senders seal to.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EncryptionPublicKey(pub [u8; 32]);

impl fmt::Debug for EncryptionPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EncryptionPublicKey({:02x}{:02x}{:02x}{:02x}..)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

impl fmt::Display for EncryptionPublicKey {
    /// All 32 bytes as 64 lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A recipient's X25519 encryption key pair, independent of its identity key. Zeroized on
/// drop; `Debug` shows only the public half.
#[derive(ZeroizeOnDrop)]
pub struct EncryptionKey {
    secret: StaticSecret,
    #[zeroize(skip)]
    public: EncryptionPublicKey,
}

impl EncryptionKey {
    /// Generates a fresh encryption key from the caller's RNG.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        let key = Self::from_secret_bytes(bytes);
        bytes.zeroize();
        key
    }

    /// Rebuilds an encryption key from its 32 secret bytes (as stored on disk).
    #[must_use]
    pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
        let secret = StaticSecret::from(secret);
        let public = EncryptionPublicKey(PublicKey::from(&secret).to_bytes());
        Self { secret, public }
    }

    /// The secret bytes, for persisting the key. Callers must protect them.
    #[must_use]
    pub fn to_secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    /// The public key senders seal to.
    #[must_use]
    pub fn public(&self) -> EncryptionPublicKey {
        self.public
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// What a sender needs to reach someone: where their messages are stored (the
/// [`RecipientId`]) and what to seal them to (the [`EncryptionPublicKey`]).
///
/// Text form ([`fmt::Display`], [`Contact::parse`]): [`CONTACT_TEXT_LEN`] hex digits, the
/// recipient id followed by the encryption key. Parsing checks the syntax only; nothing
/// here proves the two keys belong to the same person, so a contact must come from a
/// channel the sender trusts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Contact {
    /// The recipient's identity: chooses the swarm that stores its messages.
    pub recipient: RecipientId,
    /// The recipient's encryption key: what bodies are sealed to.
    pub encryption: EncryptionPublicKey,
}

impl Contact {
    /// Parses the text form: [`CONTACT_TEXT_LEN`] hex digits (either case), surrounding
    /// whitespace ignored.
    pub fn parse(text: &str) -> Result<Contact, SealError> {
        let text = text.trim().as_bytes();
        if text.len() != CONTACT_TEXT_LEN {
            return Err(SealError::ContactLength { len: text.len() });
        }
        let (recipient, encryption) = text.split_at(CONTACT_TEXT_LEN / 2);
        Ok(Contact {
            recipient: RecipientId(decode_hex(recipient, 0)?),
            encryption: EncryptionPublicKey(decode_hex(encryption, CONTACT_TEXT_LEN / 2)?),
        })
    }
}

impl fmt::Display for Contact {
    /// [`CONTACT_TEXT_LEN`] lowercase hex digits: recipient id, then encryption key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.recipient, self.encryption)
    }
}

impl FromStr for Contact {
    type Err = SealError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// Decodes exactly `2 × N` hex digits; `offset` places a bad digit within the whole text.
fn decode_hex<const N: usize>(hex: &[u8], offset: usize) -> Result<[u8; N], SealError> {
    let mut out = [0u8; N];
    for (i, (byte, pair)) in out.iter_mut().zip(hex.chunks_exact(2)).enumerate() {
        let digit = |j: usize| {
            let position = offset + 2 * i + j;
            match pair[j] {
                c @ b'0'..=b'9' => Ok(c - b'0'),
                c @ b'a'..=b'f' => Ok(c - b'a' + 10),
                c @ b'A'..=b'F' => Ok(c - b'A' + 10),
                _ => Err(SealError::ContactNotHex { position }),
            }
        };
        *byte = (digit(0)? << 4) | digit(1)?;
    }
    Ok(out)
}

/// Why a body could not be sealed or opened, or a contact not parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealError {
    /// The caller's output buffer is too small.
    BufferTooSmall {
        /// Bytes needed.
        required: usize,
    },
    /// The sealed body is shorter than [`SEAL_OVERHEAD`] plus the length prefix, so it
    /// cannot be one.
    TooShort {
        /// The length seen.
        len: usize,
    },
    /// The sealed body does not open under this recipient and key: corrupted, forged,
    /// or sealed to someone else. Deliberately one variant for every cause.
    Unauthentic,
    /// The contact's encryption key is of small order (it would make the shared secret
    /// all-zero, so the body would be readable by anyone); such a contact is unusable.
    WeakRecipientKey,
    /// The plaintext exceeds ChaCha20-Poly1305's limit (about 256 GiB).
    PlaintextTooLong,
    /// A contact's text, trimmed, is not [`CONTACT_TEXT_LEN`] bytes long.
    ContactLength {
        /// The length seen, in bytes.
        len: usize,
    },
    /// A contact's text has a byte that is not a hex digit.
    ContactNotHex {
        /// Byte offset of the first bad byte in the trimmed text.
        position: usize,
    },
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BufferTooSmall { required } => {
                write!(
                    f,
                    "buffer too small for sealed body: {required} bytes required"
                )
            }
            Self::TooShort { len } => write!(
                f,
                "sealed body of {len} bytes is shorter than the {}-byte overhead",
                SEAL_OVERHEAD + SEAL_LEN_PREFIX
            ),
            Self::Unauthentic => f.write_str("sealed body does not authenticate"),
            Self::WeakRecipientKey => {
                f.write_str("contact's encryption key is of small order and unusable")
            }
            Self::PlaintextTooLong => f.write_str("plaintext too long to seal"),
            Self::ContactLength { len } => write!(
                f,
                "contact must be {CONTACT_TEXT_LEN} hex digits, got {len} bytes"
            ),
            Self::ContactNotHex { position } => {
                write!(f, "contact has a non-hex character at byte {position}")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SealError {}

/// The one-message AEAD key: `HKDF-SHA256(salt = eph_pk ‖ enc_pk ‖ recipient,
/// ikm = shared).expand(LABEL_SEALED_BODY)`. Binding both public keys follows DHKEM
/// (RFC 9180); binding the recipient id stops a body being re-addressed to another
/// identity that shares the encryption key.
fn body_cipher(
    shared: &[u8; 32],
    eph_pk: &[u8; SEAL_EPH_LEN],
    enc_pk: &EncryptionPublicKey,
    recipient: &RecipientId,
    label: &[u8],
) -> ChaCha20Poly1305 {
    let mut salt = [0u8; SEAL_EPH_LEN + 32 + RecipientId::LEN];
    salt[..SEAL_EPH_LEN].copy_from_slice(eph_pk);
    salt[SEAL_EPH_LEN..SEAL_EPH_LEN + 32].copy_from_slice(&enc_pk.0);
    salt[SEAL_EPH_LEN + 32..].copy_from_slice(recipient.as_bytes());
    let (mut prk, hkdf) = Hkdf::<Sha256>::extract(Some(&salt), shared);
    prk.as_mut_slice().zeroize();
    let mut key = Zeroizing::new([0u8; 32]);
    hkdf.expand(label, key.as_mut_slice())
        .expect("32 bytes are within HKDF-SHA256's 8160-byte limit");
    ChaCha20Poly1305::new(&(*key).into())
}

/// Seals `message` to `to` into `out`, returning the bytes written
/// ([`sealed_len`]`(message.len())`: the message, its length and zero padding, encrypted).
///
/// Draws one fresh ephemeral X25519 key from `rng`, so sealing the same message twice
/// gives unrelated outputs. Fails with [`SealError::BufferTooSmall`] when `out` is short
/// (nothing is drawn from `rng` then) and [`SealError::WeakRecipientKey`] when the contact's
/// encryption key is of small order.
pub fn seal<R: CryptoRng + ?Sized>(
    to: &Contact,
    message: &[u8],
    rng: &mut R,
    out: &mut [u8],
) -> Result<usize, SealError> {
    seal_labelled(LABEL_SEALED_BODY, to, message, rng, out)
}

/// [`seal`] for one fragment of a large message ([`crate::fragment`]): the same format,
/// with the key from [`LABEL_SEALED_FRAGMENT`], so only [`open_any`] opens it, as a
/// [`OpenedBody::Fragment`].
pub fn seal_fragment<R: CryptoRng + ?Sized>(
    to: &Contact,
    fragment: &[u8],
    rng: &mut R,
    out: &mut [u8],
) -> Result<usize, SealError> {
    seal_labelled(LABEL_SEALED_FRAGMENT, to, fragment, rng, out)
}

fn seal_labelled<R: CryptoRng + ?Sized>(
    label: &[u8],
    to: &Contact,
    message: &[u8],
    rng: &mut R,
    out: &mut [u8],
) -> Result<usize, SealError> {
    let required = sealed_len(message.len()).ok_or(SealError::PlaintextTooLong)?;
    if out.len() < required {
        return Err(SealError::BufferTooSmall { required });
    }
    let eph_sk = EphemeralSecret::random_from_rng(rng);
    let eph_pk = PublicKey::from(&eph_sk).to_bytes();
    // A small-order recipient key forces an all-zero secret whatever the ephemeral key
    // (clamped scalars are multiples of 8), which would make the body public.
    let shared = eph_sk.diffie_hellman(&PublicKey::from(to.encryption.0));
    if !shared.was_contributory() {
        return Err(SealError::WeakRecipientKey);
    }
    let cipher = body_cipher(
        shared.as_bytes(),
        &eph_pk,
        &to.encryption,
        &to.recipient,
        label,
    );
    let (head, rest) = out[..required].split_at_mut(SEAL_EPH_LEN);
    let (plaintext, tag) = rest.split_at_mut(required - SEAL_OVERHEAD);
    // sealed_len refused lengths beyond 32 bits.
    plaintext[..SEAL_LEN_PREFIX].copy_from_slice(&(message.len() as u32).to_be_bytes());
    let (body, padding) = plaintext[SEAL_LEN_PREFIX..].split_at_mut(message.len());
    body.copy_from_slice(message);
    padding.fill(0);
    let sealed_tag = cipher
        .encrypt_inout_detached(
            &SEAL_NONCE.into(),
            to.recipient.as_bytes(),
            plaintext.into(),
        )
        .map_err(|_| SealError::PlaintextTooLong)?;
    head.copy_from_slice(&eph_pk);
    tag.copy_from_slice(&sealed_tag);
    Ok(required)
}

/// Opens a body sealed to `recipient` under `key` into `out`, returning the message
/// (borrowed from `out`, which also receives the length prefix and padding).
///
/// Fails with [`SealError::TooShort`] for input shorter than `SEAL_OVERHEAD +
/// SEAL_LEN_PREFIX`, [`SealError::BufferTooSmall`] when `out` cannot hold
/// `sealed.len() - SEAL_OVERHEAD` bytes, and otherwise, for any cause (the tag, a length
/// past the end, non-zero padding), [`SealError::Unauthentic`]; when the tag fails `out`
/// is left untouched, so no unauthenticated plaintext is ever released.
pub fn open<'a>(
    recipient: &RecipientId,
    key: &EncryptionKey,
    sealed: &[u8],
    out: &'a mut [u8],
) -> Result<&'a [u8], SealError> {
    open_labelled(recipient, key, sealed, out, &[LABEL_SEALED_BODY]).map(|(_, message)| message)
}

/// What a sealed body turned out to be, once it opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenedBody<'a> {
    /// A whole message, sealed with [`seal`].
    Message(&'a [u8]),
    /// One fragment of a large message, sealed with [`seal_fragment`]; what it holds is
    /// read by [`crate::fragment`].
    Fragment(&'a [u8]),
}

/// [`open`] for a body that may be a message or a fragment: one X25519, then the message
/// key and, if its tag fails, the fragment key. The errors are [`open`]'s.
pub fn open_any<'a>(
    recipient: &RecipientId,
    key: &EncryptionKey,
    sealed: &[u8],
    out: &'a mut [u8],
) -> Result<OpenedBody<'a>, SealError> {
    let labels = [LABEL_SEALED_BODY, LABEL_SEALED_FRAGMENT];
    let (which, content) = open_labelled(recipient, key, sealed, out, &labels)?;
    Ok(if which == 0 {
        OpenedBody::Message(content)
    } else {
        OpenedBody::Fragment(content)
    })
}

/// Opens `sealed` under the first of `labels` whose key verifies its tag, returning that
/// label's index and the content.
fn open_labelled<'a>(
    recipient: &RecipientId,
    key: &EncryptionKey,
    sealed: &[u8],
    out: &'a mut [u8],
    labels: &[&[u8]],
) -> Result<(usize, &'a [u8]), SealError> {
    let len = sealed
        .len()
        .checked_sub(SEAL_OVERHEAD)
        .filter(|&n| n >= SEAL_LEN_PREFIX)
        .ok_or(SealError::TooShort { len: sealed.len() })?;
    if out.len() < len {
        return Err(SealError::BufferTooSmall { required: len });
    }
    let (eph_pk, rest) = sealed.split_at(SEAL_EPH_LEN);
    let (ciphertext, tag) = rest.split_at(len);
    let eph_pk = fixed::<SEAL_EPH_LEN>(eph_pk);
    let shared = key.secret.diffie_hellman(&PublicKey::from(eph_pk));
    if !shared.was_contributory() {
        // A small-order ephemeral key: only a forger sends one.
        return Err(SealError::Unauthentic);
    }
    let plaintext = &mut out[..len];
    let tag = Tag::from(fixed::<SEAL_TAG_LEN>(tag));
    // The AEAD checks the tag before it writes to `plaintext`, so a failed label leaves
    // it untouched for the next.
    let which = labels
        .iter()
        .position(|label| {
            let cipher = body_cipher(shared.as_bytes(), &eph_pk, &key.public, recipient, label);
            let buffer = InOutBuf::new(ciphertext, &mut *plaintext).expect("both slices are len");
            cipher
                .decrypt_inout_detached(&SEAL_NONCE.into(), recipient.as_bytes(), buffer, &tag)
                .is_ok()
        })
        .ok_or(SealError::Unauthentic)?;
    let (prefix, rest) = plaintext.split_at(SEAL_LEN_PREFIX);
    let message_len = u32::from_be_bytes(fixed(prefix)) as usize;
    if message_len > rest.len() || rest[message_len..].iter().any(|&b| b != 0) {
        // Only the sender could have written this: its own malformed body.
        return Err(SealError::Unauthentic);
    }
    Ok((
        which,
        &plaintext[SEAL_LEN_PREFIX..SEAL_LEN_PREFIX + message_len],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use std::format;
    use std::string::ToString;
    use std::vec;

    use crate::keys::IdentityKey;

    /// The default store body limit (`store::DEFAULT_MAX_BODY`), spelled out so these tests
    /// also run without the `alloc` feature.
    const MAX_BODY: usize = 1392;

    struct Recipient {
        id: RecipientId,
        key: EncryptionKey,
    }

    impl Recipient {
        fn new(rng: &mut ChaCha20Rng) -> Self {
            Self {
                id: IdentityKey::generate(rng).recipient_id(),
                key: EncryptionKey::generate(rng),
            }
        }

        fn contact(&self) -> Contact {
            Contact {
                recipient: self.id,
                encryption: self.key.public(),
            }
        }
    }

    #[test]
    fn sealed_body_opens_to_its_plaintext_at_every_length() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let bob = Recipient::new(&mut rng);
        for len in [0, 1, 76, 77, 100, 460, 461, MAX_MESSAGE_IN_ONE_BODY] {
            let plaintext: vec::Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut sealed = [0u8; MAX_BODY];
            let n = seal(&bob.contact(), &plaintext, &mut rng, &mut sealed).unwrap();
            assert_eq!(Some(n), sealed_len(len));
            let mut out = [0u8; MAX_BODY];
            let opened = open(&bob.id, &bob.key, &sealed[..n], &mut out).unwrap();
            assert_eq!(opened, &plaintext[..]);
        }
    }

    #[test]
    fn a_sealed_body_shows_its_bucket_not_its_length() {
        let mut rng = ChaCha20Rng::seed_from_u64(15);
        let bob = Recipient::new(&mut rng);
        let mut lengths = std::collections::BTreeSet::new();
        for len in 0..=MAX_MESSAGE_IN_ONE_BODY {
            let n = seal(
                &bob.contact(),
                &vec![1u8; len],
                &mut rng,
                &mut [0u8; MAX_BODY],
            )
            .unwrap();
            lengths.insert(n);
        }
        assert_eq!(lengths.into_iter().collect::<vec::Vec<_>>(), SEALED_BUCKETS);
        assert_eq!(sealed_len(MAX_MESSAGE_IN_ONE_BODY + 1), Some(2048));
        assert_eq!(sealed_len(64 * 1024), Some(65 * 1024));
        assert_eq!(
            MAX_MESSAGE_IN_ONE_BODY,
            MAX_BODY - SEAL_OVERHEAD - SEAL_LEN_PREFIX
        );
    }

    #[test]
    fn wrong_encryption_key_is_unauthentic() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let bob = Recipient::new(&mut rng);
        let eve = EncryptionKey::generate(&mut rng);
        let mut sealed = [0u8; 128];
        let n = seal(&bob.contact(), b"hello", &mut rng, &mut sealed).unwrap();
        let mut out = [0u8; 128];
        assert_eq!(
            open(&bob.id, &eve, &sealed[..n], &mut out),
            Err(SealError::Unauthentic)
        );
    }

    #[test]
    fn different_recipient_id_is_unauthentic() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let bob = Recipient::new(&mut rng);
        let other = IdentityKey::generate(&mut rng).recipient_id();
        let mut sealed = [0u8; 128];
        let n = seal(&bob.contact(), b"hello", &mut rng, &mut sealed).unwrap();
        let mut out = [0u8; 128];
        assert_eq!(
            open(&other, &bob.key, &sealed[..n], &mut out),
            Err(SealError::Unauthentic)
        );
    }

    #[test]
    fn flipped_byte_is_unauthentic() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let bob = Recipient::new(&mut rng);
        let mut sealed = [0u8; 128];
        let n = seal(&bob.contact(), &[0x5a; 16], &mut rng, &mut sealed).unwrap();
        assert_eq!(n, 128);
        for i in 0..n {
            for bit in [0x01, 0x80] {
                let mut bad = sealed;
                bad[i] ^= bit;
                let mut out = [0u8; 128];
                assert_eq!(
                    open(&bob.id, &bob.key, &bad, &mut out),
                    Err(SealError::Unauthentic),
                    "flip {bit:#04x} at {i} accepted"
                );
            }
        }
    }

    #[test]
    fn a_length_past_the_end_or_non_zero_padding_is_unauthentic() {
        // Sealed with a valid tag by a sender that breaks the framing: opening refuses it
        // like any forgery, so a reader never sees a half-framed message.
        let mut rng = ChaCha20Rng::seed_from_u64(16);
        let bob = Recipient::new(&mut rng);
        let seal_raw = |plain: &[u8], rng: &mut ChaCha20Rng| {
            let eph_sk = EphemeralSecret::random_from_rng(rng);
            let eph_pk = PublicKey::from(&eph_sk).to_bytes();
            let shared = eph_sk.diffie_hellman(&PublicKey::from(bob.key.public().0));
            let cipher = body_cipher(
                shared.as_bytes(),
                &eph_pk,
                &bob.key.public(),
                &bob.id,
                LABEL_SEALED_BODY,
            );
            let mut out = vec::Vec::from(eph_pk);
            let mut body = plain.to_vec();
            let tag = cipher
                .encrypt_inout_detached(
                    &SEAL_NONCE.into(),
                    bob.id.as_bytes(),
                    (&mut body[..]).into(),
                )
                .unwrap();
            out.extend_from_slice(&body);
            out.extend_from_slice(&tag);
            out
        };
        let mut good = [0u8; 80];
        good[..4].copy_from_slice(&3u32.to_be_bytes());
        good[4..7].copy_from_slice(b"abc");
        let mut out = [0u8; 128];
        assert_eq!(
            open(&bob.id, &bob.key, &seal_raw(&good, &mut rng), &mut out),
            Ok(&b"abc"[..])
        );
        let mut long = good;
        long[..4].copy_from_slice(&77u32.to_be_bytes());
        assert_eq!(
            open(&bob.id, &bob.key, &seal_raw(&long, &mut rng), &mut out),
            Err(SealError::Unauthentic)
        );
        let mut dirty = good;
        dirty[79] = 1;
        assert_eq!(
            open(&bob.id, &bob.key, &seal_raw(&dirty, &mut rng), &mut out),
            Err(SealError::Unauthentic)
        );
    }

    #[test]
    fn truncated_or_extended_body_is_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let bob = Recipient::new(&mut rng);
        let mut sealed = [0u8; 128];
        let n = seal(&bob.contact(), &[7; 16], &mut rng, &mut sealed).unwrap();
        let mut out = [0u8; 128];
        for len in SEAL_OVERHEAD + SEAL_LEN_PREFIX..n {
            assert_eq!(
                open(&bob.id, &bob.key, &sealed[..len], &mut out),
                Err(SealError::Unauthentic)
            );
        }
        let mut longer = [0u8; 129];
        longer[..n].copy_from_slice(&sealed[..n]);
        let mut out = [0u8; 129];
        assert_eq!(
            open(&bob.id, &bob.key, &longer, &mut out),
            Err(SealError::Unauthentic)
        );
        for len in 0..SEAL_OVERHEAD + SEAL_LEN_PREFIX {
            assert_eq!(
                open(&bob.id, &bob.key, &sealed[..len], &mut out),
                Err(SealError::TooShort { len })
            );
        }
    }

    #[test]
    fn failed_open_leaves_output_untouched() {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let bob = Recipient::new(&mut rng);
        let mut sealed = [0u8; 128];
        let n = seal(&bob.contact(), &[1; 16], &mut rng, &mut sealed).unwrap();
        sealed[n - 1] ^= 1;
        let mut out = [0xee; 80];
        assert!(open(&bob.id, &bob.key, &sealed[..n], &mut out).is_err());
        assert_eq!(out, [0xee; 80]);
    }

    #[test]
    fn sealing_twice_gives_different_bodies() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let bob = Recipient::new(&mut rng);
        let (mut a, mut b) = ([0u8; 128], [0u8; 128]);
        let n = seal(&bob.contact(), &[0; 32], &mut rng, &mut a).unwrap();
        seal(&bob.contact(), &[0; 32], &mut rng, &mut b).unwrap();
        assert_ne!(a[..SEAL_EPH_LEN], b[..SEAL_EPH_LEN]);
        assert_ne!(a[SEAL_EPH_LEN..n], b[SEAL_EPH_LEN..n]);
    }

    #[test]
    fn small_order_recipient_key_is_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let bob = Recipient::new(&mut rng);
        // 0 and 1 are points of order 1 and 4 on Curve25519's Montgomery form.
        for weak in [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }] {
            let to = Contact {
                recipient: bob.id,
                encryption: EncryptionPublicKey(weak),
            };
            let mut out = [0u8; 128];
            assert_eq!(
                seal(&to, b"secret", &mut rng, &mut out),
                Err(SealError::WeakRecipientKey)
            );
        }
    }

    #[test]
    fn small_order_ephemeral_key_is_unauthentic() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let bob = Recipient::new(&mut rng);
        let forged = [0u8; 128];
        let mut out = [0u8; 128];
        assert_eq!(
            open(&bob.id, &bob.key, &forged, &mut out),
            Err(SealError::Unauthentic)
        );
    }

    #[test]
    fn seal_into_small_buffer_reports_required_size() {
        let mut rng = ChaCha20Rng::seed_from_u64(10);
        let bob = Recipient::new(&mut rng);
        let mut out = [0u8; 511];
        assert_eq!(
            seal(&bob.contact(), &[0; 100], &mut rng, &mut out),
            Err(SealError::BufferTooSmall { required: 512 })
        );
    }

    #[test]
    fn open_into_small_buffer_reports_required_size() {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let bob = Recipient::new(&mut rng);
        let mut sealed = [0u8; 512];
        let n = seal(&bob.contact(), &[0; 100], &mut rng, &mut sealed).unwrap();
        let mut out = [0u8; 99];
        assert_eq!(
            open(&bob.id, &bob.key, &sealed[..n], &mut out),
            Err(SealError::BufferTooSmall {
                required: 512 - SEAL_OVERHEAD
            })
        );
    }

    #[test]
    fn encryption_key_round_trips_through_secret_bytes() {
        let mut rng = ChaCha20Rng::seed_from_u64(12);
        let key = EncryptionKey::generate(&mut rng);
        let back = EncryptionKey::from_secret_bytes(*key.to_secret_bytes());
        assert_eq!(back.public(), key.public());
    }

    #[test]
    fn encryption_key_is_independent_of_identity_seed() {
        let mut rng = ChaCha20Rng::seed_from_u64(13);
        let id = IdentityKey::generate(&mut rng);
        let enc = EncryptionKey::generate(&mut rng);
        assert_ne!(*id.to_seed(), *enc.to_secret_bytes());
        assert_ne!(id.public_key(), enc.public().0);
    }

    #[test]
    fn encryption_key_debug_prints_nothing_secret() {
        let key = EncryptionKey::from_secret_bytes([0xab; 32]);
        let shown = format!("{key:?}");
        assert!(!shown.contains("abab"), "{shown}");
        assert!(shown.starts_with("EncryptionKey"), "{shown}");
    }

    #[test]
    fn contact_display_parses_back() {
        let mut rng = ChaCha20Rng::seed_from_u64(14);
        let contact = Recipient::new(&mut rng).contact();
        let text = contact.to_string();
        assert_eq!(text.len(), CONTACT_TEXT_LEN);
        assert!(text.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        assert!(text.starts_with(&contact.recipient.to_string()));
        assert_eq!(Contact::parse(&text), Ok(contact));
        assert_eq!(Contact::parse(&text.to_uppercase()), Ok(contact));
        assert_eq!(Contact::parse(&format!("  {text}\n")), Ok(contact));
        assert_eq!(text.parse::<Contact>(), Ok(contact));
    }

    #[test]
    fn contact_of_wrong_length_is_refused() {
        let text = "0".repeat(CONTACT_TEXT_LEN);
        assert_eq!(
            Contact::parse(&text[1..]),
            Err(SealError::ContactLength {
                len: CONTACT_TEXT_LEN - 1
            })
        );
        assert_eq!(
            Contact::parse(&format!("{text}0")),
            Err(SealError::ContactLength {
                len: CONTACT_TEXT_LEN + 1
            })
        );
        assert_eq!(Contact::parse(""), Err(SealError::ContactLength { len: 0 }));
    }

    #[test]
    fn contact_with_non_hex_is_refused() {
        let mut text = "0".repeat(CONTACT_TEXT_LEN);
        text.replace_range(70..71, "g");
        assert_eq!(
            Contact::parse(&text),
            Err(SealError::ContactNotHex { position: 70 })
        );
        // A two-byte character at the right byte length is still refused, not split.
        let text = format!("{}é", "0".repeat(CONTACT_TEXT_LEN - 2));
        assert_eq!(
            Contact::parse(&text),
            Err(SealError::ContactNotHex {
                position: CONTACT_TEXT_LEN - 2
            })
        );
        let text = format!("{} {}", "0".repeat(63), "0".repeat(64));
        assert_eq!(
            Contact::parse(&text),
            Err(SealError::ContactNotHex { position: 63 })
        );
    }

    #[test]
    fn a_fragment_never_opens_as_a_message_and_open_any_tells_them_apart() {
        let mut rng = ChaCha20Rng::seed_from_u64(17);
        let bob = Recipient::new(&mut rng);
        let mut sealed = [0u8; MAX_BODY];
        let mut out = [0u8; MAX_BODY];
        let n = seal_fragment(&bob.contact(), b"part", &mut rng, &mut sealed).unwrap();
        assert_eq!(n, 128, "fragments are padded like messages");
        assert_eq!(
            open(&bob.id, &bob.key, &sealed[..n], &mut out),
            Err(SealError::Unauthentic)
        );
        assert_eq!(
            open_any(&bob.id, &bob.key, &sealed[..n], &mut out),
            Ok(OpenedBody::Fragment(&b"part"[..]))
        );
        let n = seal(&bob.contact(), b"whole", &mut rng, &mut sealed).unwrap();
        assert_eq!(
            open_any(&bob.id, &bob.key, &sealed[..n], &mut out),
            Ok(OpenedBody::Message(&b"whole"[..]))
        );
        sealed[n / 2] ^= 1;
        assert_eq!(
            open_any(&bob.id, &bob.key, &sealed[..n], &mut out),
            Err(SealError::Unauthentic)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_plaintext_round_trips(
            seed in any::<u64>(),
            plaintext in proptest::collection::vec(any::<u8>(), 0..=2 * MAX_BODY),
        ) {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let bob = Recipient::new(&mut rng);
            let mut sealed = [0u8; 3 * SEALED_STEP];
            let n = seal(&bob.contact(), &plaintext, &mut rng, &mut sealed).unwrap();
            prop_assert_eq!(Some(n), sealed_len(plaintext.len()));
            prop_assert!(SEALED_BUCKETS.contains(&n) || n % SEALED_STEP == 0);
            let mut out = [0u8; 3 * SEALED_STEP];
            let opened = open(&bob.id, &bob.key, &sealed[..n], &mut out).unwrap();
            prop_assert_eq!(opened, &plaintext[..]);
        }
    }
}
