//! Node keys and signed node descriptors.
//!
//! A node has two unrelated keys: a long-lived Ed25519 **identity key** (its [`NodeId`] is the
//! public half) and a rotatable X25519 **onion key** used for the one Diffie-Hellman per hop.
//! The onion key is never derived from the identity seed: the two are generated
//! independently, and the identity key vouches for the onion key by signing a
//! [`Descriptor`] that carries it with an [`Epoch`] and an expiry.
//!
//! This module never reads a clock or an RNG it does not own: keys are generated from the
//! caller's [`CryptoRng`], and validity is judged against the caller's [`Timestamp`].
//! Invariants: a [`Descriptor`] value only exists with a verified signature (decoding
//! verifies; signing produces one), secrets are zeroized on drop, and `Debug` of a secret
//! prints nothing secret.

use core::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hkdf::HkdfExtract;
use rand_core::CryptoRng;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::types::{Epoch, NodeId, Timestamp, TlsKeyHash};

/// HKDF-Extract salt for every per-hop key schedule (see `docs/PROTOCOL.md`, "Key schedule").
pub(crate) const HOP_KDF_SALT: &[u8] = b"ghostnodes/v1/hop-kem";

/// Domain-separation prefix of the bytes an identity key signs for a descriptor.
pub const DESCRIPTOR_SIGNING_CONTEXT: &[u8] = b"ghostnodes/v1/descriptor";

/// Domain separation of a node ID's work ([`node_id_work`]).
pub const NODE_ID_WORK_CONTEXT: &[u8] = b"ghostnodes/v1/node-id-work";

/// The most work a network may ask of a node ID: 2^32 key generations is days of CPU.
pub const MAX_JOIN_DIFFICULTY: u8 = 32;

/// The work a node ID carries: the number of leading zero bits of
/// `SHA-256(NODE_ID_WORK_CONTEXT ‖ node id)`. Finding an identity key with `d` bits takes
/// about 2^d key generations, and grinding one that also lands next to a chosen recipient
/// on the ring multiplies that, so an open network that asks for `d` bits makes joins,
/// and above all targeted joins, cost CPU (docs/PROTOCOL.md, section 8.1).
#[must_use]
pub fn node_id_work(id: &NodeId) -> u32 {
    use sha2::Digest as _;
    let digest = Sha256::new()
        .chain_update(NODE_ID_WORK_CONTEXT)
        .chain_update(id.as_bytes())
        .finalize();
    let mut bits = 0;
    for byte in digest {
        bits += byte.leading_zeros();
        if byte != 0 {
            break;
        }
    }
    bits
}

/// Version byte that opens an encoded descriptor: the protocol version.
pub const DESCRIPTOR_VERSION: u8 = 2;

/// Longest node address (`host:port`) a descriptor carries, in bytes.
pub const MAX_ADDRESS_LEN: usize = 64;

/// Offset of the address length byte in an encoded descriptor.
const ADDRESS_LEN_OFFSET: usize = 1 + 32 + 32 + 4 + 8 + 32;

/// Bytes of an encoded descriptor before the address.
const DESCRIPTOR_FIXED_LEN: usize = ADDRESS_LEN_OFFSET + 1;

/// Longest encoded descriptor, in bytes.
pub const MAX_DESCRIPTOR_LEN: usize = DESCRIPTOR_FIXED_LEN + MAX_ADDRESS_LEN + 64;

/// An Ed25519 identity key pair: a node's (its public half is the [`NodeId`]) or a
/// message recipient's (its public half is the [`crate::RecipientId`]).
pub struct IdentityKey {
    signing: SigningKey,
}

impl IdentityKey {
    /// Generates a fresh identity key from the caller's RNG.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let key = Self::from_seed(&seed);
        seed.zeroize();
        key
    }

    /// Generates identity keys until one's node ID carries `difficulty` bits of work
    /// ([`node_id_work`]); `None` after `max_tries` without one (about 2^difficulty
    /// tries are needed on average).
    pub fn generate_with_work<R: CryptoRng + ?Sized>(
        difficulty: u8,
        max_tries: u64,
        rng: &mut R,
    ) -> Option<Self> {
        (0..max_tries)
            .map(|_| Self::generate(rng))
            .find(|k| node_id_work(&k.node_id()) >= u32::from(difficulty))
    }

    /// Rebuilds an identity key from its 32-byte Ed25519 seed (as stored on disk).
    #[must_use]
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// The 32-byte seed, for persisting the key. Callers must protect and zeroize it.
    #[must_use]
    pub fn to_seed(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.signing.to_bytes())
    }

    /// The public key as a node identity.
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        NodeId(self.public_key())
    }

    /// The public key as a recipient identity.
    #[must_use]
    pub fn recipient_id(&self) -> crate::RecipientId {
        crate::RecipientId(self.public_key())
    }

    /// The 32-byte Ed25519 public key.
    #[must_use]
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// Signs `message` under `context`, so a signature made for one purpose can never be
    /// replayed as another.
    #[must_use]
    pub fn sign(&self, context: &[u8], message: &[u8]) -> [u8; 64] {
        let mut prehashed = Sha256Writer::new(context);
        prehashed.update(message);
        self.signing.sign(&prehashed.finish()).to_bytes()
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKey")
            .field("node_id", &self.node_id())
            .finish_non_exhaustive()
    }
}

/// Verifies a signature made by [`IdentityKey::sign`] with the same `context`; `signer` is
/// the Ed25519 public key (a [`NodeId`] or a recipient ID).
#[must_use]
pub fn verify_signature(signer: &[u8; 32], context: &[u8], message: &[u8], sig: &[u8; 64]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(signer) else {
        return false;
    };
    let mut prehashed = Sha256Writer::new(context);
    prehashed.update(message);
    // Strict: refuses small-order keys and non-canonical encodings, so one signature
    // cannot be made to verify under several keys or in several forms.
    key.verify_strict(&prehashed.finish(), &Signature::from_bytes(sig))
        .is_ok()
}

/// SHA-256 of `len(context) ‖ context ‖ message`: what identity signatures cover. Hashing
/// first keeps signing inputs small and fixed-size whatever the message length.
struct Sha256Writer(Sha256);

impl Sha256Writer {
    fn new(context: &[u8]) -> Self {
        use sha2::Digest;
        let mut h = Sha256::new();
        // The length prefix stops one context from being a prefix-extension of another.
        h.update([u8::try_from(context.len()).unwrap_or(u8::MAX)]);
        h.update(context);
        Self(h)
    }
    fn update(&mut self, data: &[u8]) {
        use sha2::Digest;
        self.0.update(data);
    }
    fn finish(self) -> [u8; 32] {
        use sha2::Digest;
        self.0.finalize().into()
    }
}

/// The public half of a node's onion key: what clients encapsulate to for that hop.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OnionPublicKey(pub [u8; 32]);

impl fmt::Debug for OnionPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OnionPublicKey({:02x}{:02x}{:02x}{:02x}..)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// A node's X25519 onion key pair with its rotation epoch, plus the precomputed part of
/// the per-hop key schedule so a peel pays for exactly one scalar multiplication.
#[derive(ZeroizeOnDrop)]
pub struct OnionKey {
    secret: StaticSecret,
    #[zeroize(skip)]
    public: OnionPublicKey,
    #[zeroize(skip)]
    epoch: Epoch,
    /// HKDF-Extract keyed with [`HOP_KDF_SALT`]: cloning it saves re-hashing the salt's
    /// HMAC pads on every packet. It holds no secret.
    #[zeroize(skip)]
    extract: HkdfExtract<Sha256>,
}

impl OnionKey {
    /// Generates a fresh onion key for `epoch` from the caller's RNG.
    pub fn generate<R: CryptoRng + ?Sized>(epoch: Epoch, rng: &mut R) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        let key = Self::from_secret_bytes(bytes, epoch);
        bytes.zeroize();
        key
    }

    /// Rebuilds an onion key from its 32 secret bytes (as stored on disk).
    #[must_use]
    pub fn from_secret_bytes(secret: [u8; 32], epoch: Epoch) -> Self {
        let secret = StaticSecret::from(secret);
        let public = OnionPublicKey(PublicKey::from(&secret).to_bytes());
        Self {
            secret,
            public,
            epoch,
            extract: HkdfExtract::<Sha256>::new(Some(HOP_KDF_SALT)),
        }
    }

    /// The secret bytes, for persisting the key. Callers must protect and zeroize them.
    #[must_use]
    pub fn to_secret_bytes(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.secret.to_bytes())
    }

    /// The public onion key clients encapsulate to.
    #[must_use]
    pub fn public(&self) -> OnionPublicKey {
        self.public
    }

    /// The rotation epoch of this key.
    #[must_use]
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// X25519 with the peer's ephemeral key, refusing a non-contributory (all-zero) result,
    /// which a small-order `eph_pk` would force.
    pub(crate) fn diffie_hellman(&self, eph_pk: &[u8; 32]) -> Option<SharedSecret> {
        let shared = self.secret.diffie_hellman(&PublicKey::from(*eph_pk));
        shared
            .was_contributory()
            .then(|| SharedSecret(*shared.as_bytes()))
    }

    pub(crate) fn extract(&self) -> &HkdfExtract<Sha256> {
        &self.extract
    }
}

impl fmt::Debug for OnionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnionKey")
            .field("public", &self.public)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// An X25519 shared secret, zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct SharedSecret(pub(crate) [u8; 32]);

/// A node's network address (`host:port`, printable ASCII, at most [`MAX_ADDRESS_LEN`] bytes),
/// stored inline so descriptors need no allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address {
    len: u8,
    bytes: [u8; MAX_ADDRESS_LEN],
}

impl Address {
    /// Parses an address, refusing empty, over-long or non-printable-ASCII input.
    pub fn new(addr: &str) -> Result<Self, DescriptorError> {
        Self::from_bytes(addr.as_bytes())
    }

    fn from_bytes(raw: &[u8]) -> Result<Self, DescriptorError> {
        if raw.is_empty() || raw.len() > MAX_ADDRESS_LEN {
            return Err(DescriptorError::BadAddress);
        }
        if !raw.iter().all(u8::is_ascii_graphic) {
            return Err(DescriptorError::BadAddress);
        }
        let mut bytes = [0u8; MAX_ADDRESS_LEN];
        bytes[..raw.len()].copy_from_slice(raw);
        Ok(Self {
            // Bounded by MAX_ADDRESS_LEN (64) just above.
            len: raw.len() as u8,
            bytes,
        })
    }

    /// The address text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Construction admits printable ASCII only, which is valid UTF-8.
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", self.as_str())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a node publishes about itself: identity, onion key, epoch, expiry, the hash of
/// its TLS key and its address, signed by the identity key. A value of this type always
/// carries a valid signature.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Descriptor {
    node_id: NodeId,
    onion_key: OnionPublicKey,
    epoch: Epoch,
    expires: Timestamp,
    tls_key_hash: TlsKeyHash,
    address: Address,
    signature: [u8; 64],
}

/// Why a descriptor was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DescriptorError {
    /// Shorter than its fixed fields or than the address length it announces.
    Truncated,
    /// Bytes left over after the signature.
    TrailingBytes,
    /// Unknown version byte.
    UnknownVersion,
    /// Address empty, too long, or not printable ASCII.
    BadAddress,
    /// The identity key is not a valid Ed25519 point, or the signature does not verify.
    BadSignature,
    /// The caller's buffer cannot hold the encoding.
    BufferTooSmall {
        /// Bytes needed.
        required: usize,
    },
}

impl fmt::Display for DescriptorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("descriptor truncated"),
            Self::TrailingBytes => f.write_str("trailing bytes after descriptor"),
            Self::UnknownVersion => f.write_str("unknown descriptor version"),
            Self::BadAddress => {
                f.write_str("descriptor address is empty, too long or not printable ASCII")
            }
            Self::BadSignature => f.write_str("descriptor signature does not verify"),
            Self::BufferTooSmall { required } => {
                write!(
                    f,
                    "buffer too small for descriptor: {required} bytes required"
                )
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DescriptorError {}

impl Descriptor {
    /// Signs a descriptor for `onion_key`, reachable at `address` over TLS with the key
    /// whose hash is `tls_key_hash`, valid until `expires`.
    #[must_use]
    pub fn sign(
        identity: &IdentityKey,
        onion_key: &OnionKey,
        tls_key_hash: TlsKeyHash,
        address: Address,
        expires: Timestamp,
    ) -> Self {
        let mut d = Self {
            node_id: identity.node_id(),
            onion_key: onion_key.public(),
            epoch: onion_key.epoch(),
            expires,
            tls_key_hash,
            address,
            signature: [0; 64],
        };
        let mut body = [0u8; MAX_DESCRIPTOR_LEN];
        let n = d.encode_body(&mut body);
        d.signature = identity.sign(DESCRIPTOR_SIGNING_CONTEXT, &body[..n]);
        d
    }

    /// Encoded length of this descriptor in bytes.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        DESCRIPTOR_FIXED_LEN + usize::from(self.address.len) + 64
    }

    /// Writes the fields the signature covers; returns their length.
    fn encode_body(&self, out: &mut [u8; MAX_DESCRIPTOR_LEN]) -> usize {
        out[0] = DESCRIPTOR_VERSION;
        out[1..33].copy_from_slice(self.node_id.as_bytes());
        out[33..65].copy_from_slice(&self.onion_key.0);
        out[65..69].copy_from_slice(&self.epoch.0.to_be_bytes());
        out[69..77].copy_from_slice(&self.expires.0.to_be_bytes());
        out[77..ADDRESS_LEN_OFFSET].copy_from_slice(&self.tls_key_hash.0);
        out[ADDRESS_LEN_OFFSET] = self.address.len;
        let n = DESCRIPTOR_FIXED_LEN + usize::from(self.address.len);
        out[DESCRIPTOR_FIXED_LEN..n].copy_from_slice(self.address.as_str().as_bytes());
        n
    }

    /// Encodes into `out`, returning the number of bytes written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, DescriptorError> {
        let required = self.encoded_len();
        if out.len() < required {
            return Err(DescriptorError::BufferTooSmall { required });
        }
        let mut body = [0u8; MAX_DESCRIPTOR_LEN];
        let n = self.encode_body(&mut body);
        out[..n].copy_from_slice(&body[..n]);
        out[n..required].copy_from_slice(&self.signature);
        Ok(required)
    }

    /// Decodes `bytes` (exactly one descriptor) and verifies its signature.
    pub fn decode(bytes: &[u8]) -> Result<Self, DescriptorError> {
        UnverifiedDescriptor::decode(bytes)?.verify()
    }

    /// The node's identity.
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The onion key to encapsulate to when routing through this node.
    #[must_use]
    pub fn onion_key(&self) -> OnionPublicKey {
        self.onion_key
    }

    /// Rotation epoch of the onion key; higher supersedes lower for the same node.
    #[must_use]
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// After this instant the descriptor must no longer be used.
    #[must_use]
    pub fn expires(&self) -> Timestamp {
        self.expires
    }

    /// The hash of the key the node's TLS server presents: a link to `address` is to this
    /// node only if the server's key hashes to it.
    #[must_use]
    pub fn tls_key_hash(&self) -> TlsKeyHash {
        self.tls_key_hash
    }

    /// Where the node listens.
    #[must_use]
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Whether the descriptor may still be used at `now`.
    #[must_use]
    pub fn is_valid_at(&self, now: Timestamp) -> bool {
        now <= self.expires
    }

    /// Whether `self` should replace `other` (same node, newer epoch, or same epoch and a
    /// later expiry).
    #[must_use]
    pub fn supersedes(&self, other: &Descriptor) -> bool {
        self.node_id == other.node_id && (self.epoch, self.expires) > (other.epoch, other.expires)
    }
}

/// A descriptor as received: well-formed, signature not yet checked. The only way to a
/// [`Descriptor`] is [`UnverifiedDescriptor::verify`], or recognising it as identical to
/// a descriptor already verified ([`UnverifiedDescriptor::is`]), which lets a node skip
/// re-verifying the same gossip over and over.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UnverifiedDescriptor(Descriptor);

impl UnverifiedDescriptor {
    /// Decodes `bytes` (exactly one descriptor) without checking the signature.
    pub fn decode(bytes: &[u8]) -> Result<Self, DescriptorError> {
        if bytes.len() < DESCRIPTOR_FIXED_LEN {
            return Err(DescriptorError::Truncated);
        }
        if bytes[0] != DESCRIPTOR_VERSION {
            return Err(DescriptorError::UnknownVersion);
        }
        let addr_len = usize::from(bytes[ADDRESS_LEN_OFFSET]);
        let body_len = DESCRIPTOR_FIXED_LEN + addr_len;
        let total = body_len + 64;
        if bytes.len() < total {
            return Err(DescriptorError::Truncated);
        }
        if bytes.len() > total {
            return Err(DescriptorError::TrailingBytes);
        }
        Ok(Self(Descriptor {
            node_id: NodeId(fixed(&bytes[1..33])),
            onion_key: OnionPublicKey(fixed(&bytes[33..65])),
            epoch: Epoch(u32::from_be_bytes(fixed(&bytes[65..69]))),
            expires: Timestamp(u64::from_be_bytes(fixed(&bytes[69..77]))),
            tls_key_hash: TlsKeyHash(fixed(&bytes[77..ADDRESS_LEN_OFFSET])),
            address: Address::from_bytes(&bytes[DESCRIPTOR_FIXED_LEN..body_len])?,
            signature: fixed(&bytes[body_len..total]),
        }))
    }

    /// Length of the encoded descriptor at the start of `bytes`, from its address length
    /// byte, for decoding a sequence of descriptors.
    #[must_use]
    pub fn encoded_len_at(bytes: &[u8]) -> Option<usize> {
        bytes
            .get(ADDRESS_LEN_OFFSET)
            .map(|&a| DESCRIPTOR_FIXED_LEN + usize::from(a) + 64)
    }

    /// Checks the identity key's signature.
    pub fn verify(self) -> Result<Descriptor, DescriptorError> {
        let d = self.0;
        let mut body = [0u8; MAX_DESCRIPTOR_LEN];
        // Decoding is canonical, so re-encoding reproduces the signed bytes.
        let n = d.encode_body(&mut body);
        if verify_signature(
            d.node_id.as_bytes(),
            DESCRIPTOR_SIGNING_CONTEXT,
            &body[..n],
            &d.signature,
        ) {
            Ok(d)
        } else {
            Err(DescriptorError::BadSignature)
        }
    }

    /// Whether this is exactly `known` (same fields, same signature): then it needs no
    /// second verification.
    #[must_use]
    pub fn is(&self, known: &Descriptor) -> bool {
        self.0 == *known
    }

    /// The node the descriptor claims to describe (unverified).
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        self.0.node_id
    }

    /// The onion-key epoch it claims (unverified: for cheap refusals only).
    #[must_use]
    pub fn epoch(&self) -> Epoch {
        self.0.epoch
    }

    /// The expiry it claims (unverified: for cheap refusals only).
    #[must_use]
    pub fn expires(&self) -> Timestamp {
        self.0.expires
    }

    /// Encodes into `out`, returning the number of bytes written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, DescriptorError> {
        self.0.encode(out)
    }
}

impl From<Descriptor> for UnverifiedDescriptor {
    fn from(d: Descriptor) -> Self {
        Self(d)
    }
}

/// Copies a slice whose length the caller has already checked into a fixed array.
pub(crate) fn fixed<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn signed(rng: &mut ChaCha20Rng) -> (IdentityKey, Descriptor, [u8; MAX_DESCRIPTOR_LEN], usize) {
        let id = IdentityKey::generate(rng);
        let onion = OnionKey::generate(Epoch(7), rng);
        let d = Descriptor::sign(
            &id,
            &onion,
            crate::TlsKeyHash([0x77; 32]),
            Address::new("127.0.0.1:4000").unwrap(),
            Timestamp(99),
        );
        let mut buf = [0u8; MAX_DESCRIPTOR_LEN];
        let n = d.encode(&mut buf).unwrap();
        (id, d, buf, n)
    }

    #[test]
    fn descriptor_round_trips_and_verifies() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (id, d, buf, n) = signed(&mut rng);
        let back = Descriptor::decode(&buf[..n]).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.node_id(), id.node_id());
        assert_eq!(back.epoch(), Epoch(7));
        assert_eq!(back.address().as_str(), "127.0.0.1:4000");
    }

    #[test]
    fn any_flipped_descriptor_byte_is_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let (_, _, buf, n) = signed(&mut rng);
        for i in 0..n {
            let mut b = buf;
            b[i] ^= 0x01;
            assert!(Descriptor::decode(&b[..n]).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn truncated_and_padded_descriptors_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let (_, _, buf, n) = signed(&mut rng);
        assert_eq!(
            Descriptor::decode(&buf[..n - 1]),
            Err(DescriptorError::Truncated)
        );
        assert_eq!(
            Descriptor::decode(&buf[..n + 1]),
            Err(DescriptorError::TrailingBytes)
        );
        assert_eq!(Descriptor::decode(&[]), Err(DescriptorError::Truncated));
    }

    #[test]
    fn encode_into_small_buffer_reports_required_size() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let (_, d, _, n) = signed(&mut rng);
        let mut small = [0u8; 10];
        assert_eq!(
            d.encode(&mut small),
            Err(DescriptorError::BufferTooSmall { required: n })
        );
    }

    #[test]
    fn onion_key_is_independent_of_identity_seed() {
        // The replaced system used the Ed25519 seed as the X25519 key; make sure ours differ.
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let id = IdentityKey::generate(&mut rng);
        let onion = OnionKey::generate(Epoch(0), &mut rng);
        assert_ne!(*id.to_seed(), *onion.to_secret_bytes());
        let from_seed = OnionKey::from_secret_bytes(*id.to_seed(), Epoch(0));
        assert_ne!(from_seed.public(), onion.public());
    }

    #[test]
    fn newer_epoch_supersedes() {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let id = IdentityKey::generate(&mut rng);
        let addr = Address::new("n:1").unwrap();
        let old = Descriptor::sign(
            &id,
            &OnionKey::generate(Epoch(1), &mut rng),
            crate::TlsKeyHash([0x77; 32]),
            addr,
            Timestamp(10),
        );
        let new = Descriptor::sign(
            &id,
            &OnionKey::generate(Epoch(2), &mut rng),
            crate::TlsKeyHash([0x77; 32]),
            addr,
            Timestamp(5),
        );
        assert!(new.supersedes(&old));
        assert!(!old.supersedes(&new));
    }

    #[test]
    fn signatures_are_bound_to_their_context() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let id = IdentityKey::generate(&mut rng);
        let sig = id.sign(b"a", b"msg");
        assert!(verify_signature(
            id.node_id().as_bytes(),
            b"a",
            b"msg",
            &sig
        ));
        assert!(!verify_signature(
            id.node_id().as_bytes(),
            b"b",
            b"msg",
            &sig
        ));
        assert!(!verify_signature(
            id.node_id().as_bytes(),
            b"a",
            b"msh",
            &sig
        ));
    }

    #[test]
    fn bad_addresses_are_refused() {
        assert_eq!(Address::new(""), Err(DescriptorError::BadAddress));
        assert_eq!(Address::new("a b"), Err(DescriptorError::BadAddress));
        assert!(Address::new(&"x".repeat(MAX_ADDRESS_LEN)).is_ok());
        assert_eq!(
            Address::new(&"x".repeat(MAX_ADDRESS_LEN + 1)),
            Err(DescriptorError::BadAddress)
        );
    }
}
