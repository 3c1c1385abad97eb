//! Onion packets: the client-side builder and the relay-side peel.
//!
//! This module owns the wire layout of a packet and the per-hop key schedule. Every packet
//! is [`PACKET_LEN`] bytes whatever its path length (1 to [`MAX_HOPS`]) and payload:
//!
//! ```text
//! mac (16) ‖ eph_pk (32) ‖ routing blob (MAX_HOPS × SLOT_LEN = 480) ‖ payload (1520)
//! ```
//!
//! At a hop: one X25519 of the node's onion key with `eph_pk`, HKDF-SHA256 to per-hop keys,
//! a constant-time Poly1305 check of `mac` over everything after it, a replay and expiry
//! check, then the header stream decrypts the first slot (this hop's routing info: the next
//! hop, the next `eph_pk` and the next `mac`), the blob shifts left by one slot and gains
//! one slot of keystream at its end (the filler the client predicted), and the payload
//! stream removes one layer of the payload. The next hop's ephemeral key travels inside
//! the encrypted slot (KEM per hop), so there is no blinding and no second scalar
//! multiplication. Full description and test vectors: `docs/PROTOCOL.md`.
//!
//! Must never: allocate on the peel path, branch on secret data before the MAC check has
//! passed, or tell the sender why a packet was dropped (callers count [`PeelError`]s).
//! Invariants: peel works in place on the caller's buffer; every secret (shared secret,
//! PRK, hop keys) is zeroized when dropped.

use core::fmt;

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use hkdf::HkdfExtract;
use poly1305::Poly1305;
use poly1305::universal_hash::KeyInit;
use rand_core::CryptoRng;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::keys::{HOP_KDF_SALT, OnionKey, OnionPublicKey, fixed};
use crate::replay::{EXPIRY_GRID_MS, REPLAY_TAG_LEN, ReplayError, ReplayFilter, ReplayTag};
use crate::reply::{REPLY_BUCKETS, ReplyKey};
use crate::types::{NodeId, Timestamp};

/// Size of every packet on the wire, in bytes.
pub const PACKET_LEN: usize = 2048;
/// Longest path a packet can take.
pub const MAX_HOPS: usize = 5;
/// Path length clients use unless told otherwise.
pub const DEFAULT_HOPS: usize = 3;
/// Length of the per-hop MAC (a Poly1305 tag).
pub const MAC_LEN: usize = 16;
/// Length of an X25519 public key.
pub const EPH_LEN: usize = 32;
/// Length of one hop's routing slot.
pub const SLOT_LEN: usize = 96;
/// Length of the routing blob: one slot per possible hop.
pub const ROUTING_LEN: usize = MAX_HOPS * SLOT_LEN;
/// Length of the header (`mac ‖ eph_pk ‖ routing blob`).
pub const HEADER_LEN: usize = MAC_LEN + EPH_LEN + ROUTING_LEN;
/// Length of the (layer-encrypted) payload area.
pub const PAYLOAD_LEN: usize = PACKET_LEN - HEADER_LEN;
/// Bytes of the payload area taken by the plaintext length prefix.
const PAYLOAD_PREFIX_LEN: usize = 2;
/// Largest payload a client can send through any path (1,518 bytes).
pub const MAX_PAYLOAD: usize = PAYLOAD_LEN - PAYLOAD_PREFIX_LEN;

const EPH_AT: usize = MAC_LEN;
const ROUTING_AT: usize = EPH_AT + EPH_LEN;
const PAYLOAD_AT: usize = HEADER_LEN;

/// Slot layout: `kind (1) ‖ reply bucket (1) ‖ reserved, zero (6) ‖ expiry ms, big-endian
/// (8) ‖ next node (32) ‖ next eph_pk (32) ‖ next mac (16)`.
const SLOT_KIND: usize = 0;
const SLOT_REPLY_BUCKET: usize = 1;
const SLOT_RESERVED: core::ops::Range<usize> = 2..8;
const SLOT_EXPIRY: core::ops::Range<usize> = 8..16;
const SLOT_NEXT_NODE: core::ops::Range<usize> = 16..48;
const SLOT_NEXT_EPH: core::ops::Range<usize> = 48..80;
const SLOT_NEXT_MAC: core::ops::Range<usize> = 80..96;
const KIND_FORWARD: u8 = 1;
const KIND_DELIVER: u8 = 2;

/// HKDF-Expand labels of the per-hop key schedule (listed in `docs/PROTOCOL.md`).
pub mod labels {
    /// Key of the ChaCha20 stream over the routing blob.
    pub const HEADER_STREAM: &[u8] = b"ghostnodes/v1/header-stream";
    /// One-time Poly1305 key of the hop's MAC.
    pub const HEADER_MAC: &[u8] = b"ghostnodes/v1/header-mac";
    /// Key of the ChaCha20 stream over the payload.
    pub const PAYLOAD_STREAM: &[u8] = b"ghostnodes/v1/payload-stream";
    /// Key of the hop's reply layer.
    pub const REPLY: &[u8] = b"ghostnodes/v1/reply";
    /// The hop's replay tag.
    pub const REPLAY_TAG: &[u8] = b"ghostnodes/v1/replay-tag";
}

/// Every stream key is used for exactly one packet at one hop, so a fixed nonce is safe.
const STREAM_NONCE: [u8; 12] = [0; 12];

/// Per-hop secrets derived from one X25519 shared secret.
#[derive(Zeroize, ZeroizeOnDrop)]
struct HopKeys {
    header_stream: [u8; 32],
    header_mac: [u8; 32],
    payload_stream: [u8; 32],
    reply: [u8; 32],
    replay_tag: ReplayTag,
}

impl HopKeys {
    /// HKDF-SHA256: `PRK = Extract(salt, s ‖ eph_pk ‖ onion_pk)`, then one Expand per label.
    /// Binding `eph_pk` and `onion_pk` follows DHKEM (RFC 9180): equivalent encodings of the
    /// ephemeral key (X25519 ignores the top bit) give different keys.
    fn derive(
        extract: &HkdfExtract<Sha256>,
        shared: &[u8; 32],
        eph_pk: &[u8; EPH_LEN],
        onion_pk: &OnionPublicKey,
    ) -> Self {
        let mut extract = extract.clone();
        extract.input_ikm(shared);
        extract.input_ikm(eph_pk);
        extract.input_ikm(&onion_pk.0);
        let (mut prk, hkdf) = extract.finalize();
        prk.as_mut_slice().zeroize();
        let mut keys = HopKeys {
            header_stream: [0; 32],
            header_mac: [0; 32],
            payload_stream: [0; 32],
            reply: [0; 32],
            replay_tag: [0; REPLAY_TAG_LEN],
        };
        // Lengths are all ≤ 32 bytes, far below HKDF's 255 × 32 limit.
        let outputs: [(&[u8], &mut [u8]); 5] = [
            (labels::HEADER_STREAM, &mut keys.header_stream),
            (labels::HEADER_MAC, &mut keys.header_mac),
            (labels::PAYLOAD_STREAM, &mut keys.payload_stream),
            (labels::REPLY, &mut keys.reply),
            (labels::REPLAY_TAG, &mut keys.replay_tag),
        ];
        for (label, out) in outputs {
            hkdf.expand(label, out)
                .expect("outputs of at most 32 bytes are within HKDF's limit");
        }
        keys
    }

    fn header_cipher(&self) -> ChaCha20 {
        ChaCha20::new(&self.header_stream.into(), &STREAM_NONCE.into())
    }

    fn payload_cipher(&self) -> ChaCha20 {
        ChaCha20::new(&self.payload_stream.into(), &STREAM_NONCE.into())
    }

    /// Poly1305 over `eph_pk ‖ routing blob ‖ payload` (the packet after its `mac` field).
    fn mac(&self, covered: &[u8]) -> [u8; MAC_LEN] {
        Poly1305::new(&self.header_mac.into())
            .compute_unpadded(covered)
            .into()
    }
}

/// Why a relay dropped a packet. Counted by the caller, never sent back to the sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeelError {
    /// `eph_pk` is a small-order point: the shared secret would be all zeros.
    SmallOrderKey,
    /// The MAC does not verify: tampered, tagged, or not meant for this key.
    BadMac,
    /// The authenticated routing slot is not one this version understands.
    Malformed,
    /// The packet's expiry has passed.
    Expired,
    /// The packet claims to be valid for longer than a hop accepts.
    ExpiryTooFar,
    /// The packet's expiry is not on the expiry grid.
    ExpiryOffGrid,
    /// This hop has already seen this packet within its validity window.
    Replayed,
}

impl PeelError {
    /// Every variant, for pre-registering metric labels.
    pub const ALL: [PeelError; 7] = [
        Self::SmallOrderKey,
        Self::BadMac,
        Self::Malformed,
        Self::Expired,
        Self::ExpiryTooFar,
        Self::ExpiryOffGrid,
        Self::Replayed,
    ];

    /// A stable snake_case name for metric labels.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::SmallOrderKey => "small_order_key",
            Self::BadMac => "bad_mac",
            Self::Malformed => "malformed",
            Self::Expired => "expired",
            Self::ExpiryTooFar => "expiry_too_far",
            Self::ExpiryOffGrid => "expiry_off_grid",
            Self::Replayed => "replayed",
        }
    }
}

impl fmt::Display for PeelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SmallOrderKey => "ephemeral key has small order",
            Self::BadMac => "packet MAC does not verify",
            Self::Malformed => "routing information is malformed",
            Self::Expired => "packet expired",
            Self::ExpiryTooFar => "packet expiry too far in the future",
            Self::ExpiryOffGrid => "packet expiry not on the expiry grid",
            Self::Replayed => "packet replayed",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for PeelError {}

/// What a hop does with a packet that passed every check.
#[derive(Debug)]
pub enum Peeled<'a> {
    /// Send `packet` (the caller's buffer, now holding the next hop's packet) to `next_hop`,
    /// hold the request open, and wrap the answer with `reply_key`.
    Forward {
        /// The node to forward to.
        next_hop: NodeId,
        /// The packet to forward: the caller's buffer, rewritten in place.
        packet: &'a [u8; PACKET_LEN],
        /// This hop's key for the reply layer (or for an error it originates).
        reply_key: ReplyKey,
        /// The reply length the client asked for (one of [`REPLY_BUCKETS`]): an answer
        /// of any other length from the next hop is not passed back.
        reply_len: usize,
    },
    /// This hop is the last: execute `payload` and seal the answer with `reply_key`.
    Deliver {
        /// The request the client sent, borrowed from the caller's buffer.
        payload: &'a [u8],
        /// This hop's key for sealing the response.
        reply_key: ReplyKey,
        /// The reply length the client asked for (one of [`REPLY_BUCKETS`]): the response
        /// is sealed to exactly this length.
        reply_len: usize,
    },
}

/// Peels one layer of `packet` in place with this node's onion key.
///
/// Exactly one X25519 scalar multiplication, no heap allocation. On `Err` the packet must
/// be dropped silently; on `SmallOrderKey` and `BadMac` the buffer is untouched, otherwise
/// its contents are unspecified.
pub fn peel<'a, S: AsRef<[u64]> + AsMut<[u64]>>(
    key: &OnionKey,
    replay: &mut ReplayFilter<S>,
    now: Timestamp,
    packet: &'a mut [u8; PACKET_LEN],
) -> Result<Peeled<'a>, PeelError> {
    let keys = authenticate(key, packet)?;
    open_authenticated(&keys, replay, now, packet)
}

/// [`peel`] for a hop that holds its current onion key and, for a grace period after a
/// rotation, the previous one (packets built from a descriptor a client fetched before the
/// rotation). The current key is tried first, so a packet for it costs exactly what
/// [`peel`] costs; only a packet that fails it costs a second X25519.
pub fn peel_with_previous<'a, S: AsRef<[u64]> + AsMut<[u64]>>(
    current: &OnionKey,
    previous: Option<&OnionKey>,
    replay: &mut ReplayFilter<S>,
    now: Timestamp,
    packet: &'a mut [u8; PACKET_LEN],
) -> Result<Peeled<'a>, PeelError> {
    let keys = match (authenticate(current, packet), previous) {
        (Err(PeelError::BadMac), Some(previous)) => authenticate(previous, packet)?,
        (result, _) => result?,
    };
    open_authenticated(&keys, replay, now, packet)
}

/// The hop's keys for `packet` under `key`, once its MAC verifies; reads the packet only.
fn authenticate(key: &OnionKey, packet: &[u8; PACKET_LEN]) -> Result<HopKeys, PeelError> {
    let eph_pk: [u8; EPH_LEN] = fixed(&packet[EPH_AT..ROUTING_AT]);
    let shared = key
        .diffie_hellman(&eph_pk)
        .ok_or(PeelError::SmallOrderKey)?;
    let keys = HopKeys::derive(key.extract(), &shared.0, &eph_pk, &key.public());
    drop(shared);

    let expected = keys.mac(&packet[MAC_LEN..]);
    if !bool::from(expected.ct_eq(&packet[..MAC_LEN])) {
        return Err(PeelError::BadMac);
    }
    Ok(keys)
}

/// The rest of [`peel`] for a packet whose MAC verified under `keys`.
fn open_authenticated<'a, S: AsRef<[u64]> + AsMut<[u64]>>(
    keys: &HopKeys,
    replay: &mut ReplayFilter<S>,
    now: Timestamp,
    packet: &'a mut [u8; PACKET_LEN],
) -> Result<Peeled<'a>, PeelError> {
    let mut header = keys.header_cipher();
    let mut slot = Zeroizing::new([0u8; SLOT_LEN]);
    slot.copy_from_slice(&packet[ROUTING_AT..ROUTING_AT + SLOT_LEN]);
    header.apply_keystream(&mut slot[..]);

    if slot[SLOT_RESERVED].iter().any(|&b| b != 0) {
        return Err(PeelError::Malformed);
    }
    let reply_len = *REPLY_BUCKETS
        .get(usize::from(slot[SLOT_REPLY_BUCKET]))
        .ok_or(PeelError::Malformed)?;
    let expiry = Timestamp(u64::from_be_bytes(fixed(&slot[SLOT_EXPIRY])));
    let kind = slot[SLOT_KIND];
    if kind != KIND_FORWARD && kind != KIND_DELIVER {
        return Err(PeelError::Malformed);
    }
    replay
        .check_and_insert(&keys.replay_tag, expiry, now)
        .map_err(|e| match e {
            ReplayError::Replayed => PeelError::Replayed,
            ReplayError::Expired => PeelError::Expired,
            ReplayError::TooFarAhead => PeelError::ExpiryTooFar,
            ReplayError::OffGrid => PeelError::ExpiryOffGrid,
        })?;

    keys.payload_cipher()
        .apply_keystream(&mut packet[PAYLOAD_AT..]);
    let reply_key = ReplyKey::new(keys.reply);

    if kind == KIND_DELIVER {
        let data_at = PAYLOAD_AT + PAYLOAD_PREFIX_LEN;
        let len = usize::from(u16::from_be_bytes(fixed(&packet[PAYLOAD_AT..data_at])));
        if len > MAX_PAYLOAD {
            return Err(PeelError::Malformed);
        }
        let payload = &packet[data_at..data_at + len];
        return Ok(Peeled::Deliver {
            payload,
            reply_key,
            reply_len,
        });
    }

    // The header stream continues where the slot left off: decrypt the rest, shift it
    // one slot left, and append one slot of keystream (encrypting the implicit zeros).
    let routing = &mut packet[ROUTING_AT..PAYLOAD_AT];
    header.apply_keystream(&mut routing[SLOT_LEN..]);
    routing.copy_within(SLOT_LEN.., 0);
    let tail = &mut routing[ROUTING_LEN - SLOT_LEN..];
    tail.fill(0);
    header.apply_keystream(tail);

    packet[..MAC_LEN].copy_from_slice(&slot[SLOT_NEXT_MAC]);
    packet[EPH_AT..ROUTING_AT].copy_from_slice(&slot[SLOT_NEXT_EPH]);
    let next_hop = NodeId(fixed(&slot[SLOT_NEXT_NODE]));
    Ok(Peeled::Forward {
        next_hop,
        packet,
        reply_key,
        reply_len,
    })
}

/// One hop of a client-chosen path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathHop {
    /// The hop's identity (what the previous hop forwards to).
    pub node: NodeId,
    /// The hop's current onion key, from its signed descriptor.
    pub onion_key: OnionPublicKey,
}

impl From<&crate::keys::Descriptor> for PathHop {
    /// The hop a verified descriptor describes: its identity and current onion key.
    fn from(d: &crate::keys::Descriptor) -> Self {
        Self {
            node: d.node_id(),
            onion_key: d.onion_key(),
        }
    }
}

/// Why a packet could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// The path is empty or longer than [`MAX_HOPS`].
    BadPathLength {
        /// The length given.
        hops: usize,
    },
    /// The payload exceeds [`MAX_PAYLOAD`].
    PayloadTooLarge {
        /// The length given.
        len: usize,
    },
    /// A hop's onion key is a small-order point.
    BadOnionKey {
        /// Index of the hop in the path.
        hop: usize,
    },
    /// The expiry is not a multiple of [`EXPIRY_GRID_MS`] (see [`grid_expiry`]).
    ExpiryOffGrid,
    /// The reply length is not one of [`REPLY_BUCKETS`].
    NotAReplyBucket {
        /// The length given.
        len: usize,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadPathLength { hops } => {
                write!(f, "path of {hops} hops; 1 to {MAX_HOPS} are allowed")
            }
            Self::PayloadTooLarge { len } => {
                write!(f, "payload of {len} bytes exceeds {MAX_PAYLOAD}")
            }
            Self::BadOnionKey { hop } => write!(f, "onion key of hop {hop} is invalid"),
            Self::ExpiryOffGrid => {
                write!(f, "expiry is not a multiple of {EXPIRY_GRID_MS} ms")
            }
            Self::NotAReplyBucket { len } => {
                write!(f, "reply length {len} is not one of {REPLY_BUCKETS:?}")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for BuildError {}

/// The client's half of a sent packet: one reply key per hop, in path order, to unwrap the
/// answer with [`crate::reply::open`].
#[derive(Debug)]
pub struct PathKeys {
    keys: [ReplyKey; MAX_HOPS],
    hops: usize,
}

impl PathKeys {
    /// Reply keys of the path's hops, first hop first.
    #[must_use]
    pub fn reply_keys(&self) -> &[ReplyKey] {
        &self.keys[..self.hops]
    }
}

/// The expiry of a packet built at `now` to live about `lifetime_ms`: `now + lifetime_ms`
/// rounded down to the expiry grid, so every packet built in the same [`EXPIRY_GRID_MS`]
/// carries the same expiry. Choose `lifetime_ms` at least two grid steps and well below
/// [`crate::replay::MAX_PACKET_LIFETIME_MS`], so clocks a little apart still agree.
#[must_use]
pub fn grid_expiry(now: Timestamp, lifetime_ms: u64) -> Timestamp {
    Timestamp(now.plus_millis(lifetime_ms).0 / EXPIRY_GRID_MS * EXPIRY_GRID_MS)
}

/// Builds a packet for `path` carrying `payload`, valid until `expiry` (on the expiry grid:
/// see [`grid_expiry`]), whose answer comes back exactly `reply_len` bytes long (one of
/// [`REPLY_BUCKETS`]), into `out`.
///
/// Each hop gets a fresh ephemeral key from `rng`. The returned [`PathKeys`] unwrap the reply.
pub fn build<R: CryptoRng + ?Sized>(
    path: &[PathHop],
    payload: &[u8],
    expiry: Timestamp,
    reply_len: usize,
    rng: &mut R,
    out: &mut [u8; PACKET_LEN],
) -> Result<PathKeys, BuildError> {
    let hops = path.len();
    if hops == 0 || hops > MAX_HOPS {
        return Err(BuildError::BadPathLength { hops });
    }
    if payload.len() > MAX_PAYLOAD {
        return Err(BuildError::PayloadTooLarge { len: payload.len() });
    }
    if !expiry.0.is_multiple_of(EXPIRY_GRID_MS) {
        return Err(BuildError::ExpiryOffGrid);
    }
    let bucket = REPLY_BUCKETS
        .iter()
        .position(|&b| b == reply_len)
        .ok_or(BuildError::NotAReplyBucket { len: reply_len })?;
    // At most 5 buckets: the index fits a byte.
    build_unchecked(path, payload, expiry, bucket as u8, rng, out)
}

/// [`build`] without the expiry and reply-length checks (the path and payload are checked
/// by [`build`] only too): unit tests build what a careless sender would.
fn build_unchecked<R: CryptoRng + ?Sized>(
    path: &[PathHop],
    payload: &[u8],
    expiry: Timestamp,
    bucket: u8,
    rng: &mut R,
    out: &mut [u8; PACKET_LEN],
) -> Result<PathKeys, BuildError> {
    let hops = path.len();

    let extract = HkdfExtract::<Sha256>::new(Some(HOP_KDF_SALT));
    let mut eph_pks = [[0u8; EPH_LEN]; MAX_HOPS];
    let mut hop_keys: [Option<HopKeys>; MAX_HOPS] = Default::default();
    for (i, hop) in path.iter().enumerate() {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut seed[..]);
        let eph_sk = StaticSecret::from(*seed);
        eph_pks[i] = PublicKey::from(&eph_sk).to_bytes();
        let shared = eph_sk.diffie_hellman(&PublicKey::from(hop.onion_key.0));
        if !shared.was_contributory() {
            return Err(BuildError::BadOnionKey { hop: i });
        }
        hop_keys[i] = Some(HopKeys::derive(
            &extract,
            shared.as_bytes(),
            &eph_pks[i],
            &hop.onion_key,
        ));
    }
    let key = |i: usize| hop_keys[i].as_ref().expect("derived for every hop above");

    // Filler: what hops 0..n-2 append to the blob, as the last hop will see it. Hop i
    // appends one slot of its header stream (offset ROUTING_LEN) and re-encrypts what
    // earlier hops appended (offsets ROUTING_LEN - i·SLOT_LEN onwards).
    let mut filler = Zeroizing::new([0u8; ROUTING_LEN]);
    for i in 0..hops - 1 {
        let len = (i + 1) * SLOT_LEN;
        let mut stream = key(i).header_cipher();
        stream.seek((ROUTING_LEN - i * SLOT_LEN) as u64);
        stream.apply_keystream(&mut filler[..len]);
    }
    let filler_len = (hops - 1) * SLOT_LEN;

    // Payload: length prefix, data, zeros; encrypted under every hop's payload stream.
    // (Only the last hop ever sees the zeros in clear.)
    let payload_area = &mut out[PAYLOAD_AT..];
    payload_area.fill(0);
    // MAX_PAYLOAD < 2^16, checked above.
    payload_area[..PAYLOAD_PREFIX_LEN].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    payload_area[PAYLOAD_PREFIX_LEN..PAYLOAD_PREFIX_LEN + payload.len()].copy_from_slice(payload);

    // Last hop: its slot, then random bytes the hop ignores (zeros would tell it how
    // long the path was), encrypted with its header stream; then the filler.
    let last = hops - 1;
    let open_len = ROUTING_LEN - filler_len;
    let routing = &mut out[ROUTING_AT..PAYLOAD_AT];
    routing[..SLOT_LEN].fill(0);
    routing[SLOT_KIND] = KIND_DELIVER;
    routing[SLOT_REPLY_BUCKET] = bucket;
    routing[SLOT_EXPIRY].copy_from_slice(&expiry.0.to_be_bytes());
    rng.fill_bytes(&mut routing[SLOT_LEN..open_len]);
    key(last)
        .header_cipher()
        .apply_keystream(&mut routing[..open_len]);
    routing[open_len..].copy_from_slice(&filler[..filler_len]);

    // From the last hop back to the first, wrap each hop's view around the next one's.
    for i in (0..hops).rev() {
        if i < last {
            // Hop i's slot points at hop i+1, whose eph_pk and mac are in the header now.
            let mut slot = [0u8; SLOT_LEN];
            slot[SLOT_KIND] = KIND_FORWARD;
            slot[SLOT_REPLY_BUCKET] = bucket;
            slot[SLOT_EXPIRY].copy_from_slice(&expiry.0.to_be_bytes());
            slot[SLOT_NEXT_NODE].copy_from_slice(path[i + 1].node.as_bytes());
            slot[SLOT_NEXT_EPH].copy_from_slice(&out[EPH_AT..ROUTING_AT]);
            slot[SLOT_NEXT_MAC].copy_from_slice(&out[..MAC_LEN]);
            // The last slot of hop i+1's blob falls off here: hop i regenerates it as filler.
            out.copy_within(ROUTING_AT..PAYLOAD_AT - SLOT_LEN, ROUTING_AT + SLOT_LEN);
            out[ROUTING_AT..ROUTING_AT + SLOT_LEN].copy_from_slice(&slot);
            key(i)
                .header_cipher()
                .apply_keystream(&mut out[ROUTING_AT..PAYLOAD_AT]);
        }
        key(i)
            .payload_cipher()
            .apply_keystream(&mut out[PAYLOAD_AT..]);
        out[EPH_AT..ROUTING_AT].copy_from_slice(&eph_pks[i]);
        let mac = key(i).mac(&out[MAC_LEN..]);
        out[..MAC_LEN].copy_from_slice(&mac);
    }

    let mut keys: [ReplyKey; MAX_HOPS] = Default::default();
    for (i, k) in keys.iter_mut().take(hops).enumerate() {
        *k = ReplyKey::new(key(i).reply);
    }
    Ok(PathKeys { keys, hops })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::BUCKETS;
    use std::vec;

    const NOW: Timestamp = Timestamp(1_800_000_000_000);

    /// A one-hop packet as a sender that ignores the rules would build it, and the hop's
    /// key and filter.
    fn careless(expiry: Timestamp, bucket: u8) -> ([u8; PACKET_LEN], OnionKey) {
        let key = OnionKey::from_secret_bytes([1; 32], crate::Epoch(1));
        let hop = PathHop {
            node: NodeId([7; 32]),
            onion_key: key.public(),
        };
        let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed([5; 32]);
        let mut buf = [0u8; PACKET_LEN];
        build_unchecked(&[hop], b"x", expiry, bucket, &mut rng, &mut buf).unwrap();
        (buf, key)
    }

    #[test]
    fn a_hop_drops_an_expiry_off_the_grid() {
        let mut filter = ReplayFilter::new(vec![0u64; BUCKETS * 64]).unwrap();
        for off in [1, 4_999, 9_999] {
            let (mut packet, key) = careless(NOW.plus_millis(20_000 + off), 0);
            assert_eq!(
                peel(&key, &mut filter, NOW, &mut packet).unwrap_err(),
                PeelError::ExpiryOffGrid
            );
        }
        let (mut packet, key) = careless(NOW.plus_millis(20_000), 0);
        assert!(peel(&key, &mut filter, NOW, &mut packet).is_ok());
    }

    #[test]
    fn a_hop_drops_a_reply_bucket_it_does_not_know() {
        let mut filter = ReplayFilter::new(vec![0u64; BUCKETS * 64]).unwrap();
        let last = (REPLY_BUCKETS.len() - 1) as u8;
        let (mut packet, key) = careless(NOW.plus_millis(20_000), last);
        match peel(&key, &mut filter, NOW, &mut packet).unwrap() {
            Peeled::Deliver { reply_len, .. } => assert_eq!(reply_len, REPLY_BUCKETS[4]),
            Peeled::Forward { .. } => panic!("one hop delivers"),
        }
        let (mut packet, key) = careless(NOW.plus_millis(20_000), last + 1);
        assert_eq!(
            peel(&key, &mut filter, NOW, &mut packet).unwrap_err(),
            PeelError::Malformed
        );
    }
}
