//! Replies travelling back along a packet's path.
//!
//! The hop that answers (the last hop with a response, or any hop that cannot forward,
//! with an error) *seals* the answer with ChaCha20-Poly1305 under its reply key and pads
//! it to the one of a few fixed sizes ([`REPLY_BUCKETS`]) that the client chose when it
//! built the packet; every hop drops an answer of another length, so no hop can tag a
//! reply by its length. Every hop it passes on the way
//! back *adds a layer*: a ChaCha20 stream from that hop's reply key. The client, holding
//! every hop's reply key, *opens* the reply by trying each hop's AEAD in path order and
//! peeling that hop's layer when it does not verify: the first hop whose AEAD verifies is
//! the one that wrote the answer, so an error is attributed to the hop that raised it
//! (as BOLT 4 error onions are), and nothing in clear links the two sides of a hop.
//!
//! This module never allocates and never interprets a body. Invariants: every reply on
//! the wire is exactly one bucket long; a reply key is zeroized on drop and used for one
//! packet only, which is why fixed nonces are safe: the key comes from the packet's
//! one-time ephemeral key, a hop peels a packet at most once per onion key (the replay
//! filter, whose clock never steps back), and onion keys never outlive the process that
//! holds the filter.

use core::fmt;

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Tag};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::keys::fixed;

/// The sizes (bytes on the wire) a reply is padded to, smallest first.
pub const REPLY_BUCKETS: [usize; 5] = [1024, 4096, 16 * 1024, 64 * 1024, 256 * 1024];
/// The largest reply on the wire.
pub const MAX_REPLY_LEN: usize = REPLY_BUCKETS[REPLY_BUCKETS.len() - 1];
/// AEAD tag at the front of a sealed reply.
pub const REPLY_TAG_LEN: usize = 16;
/// `status (1) ‖ body length, big-endian (4)` before the body.
const REPLY_PREFIX_LEN: usize = 5;
/// Largest body a reply can carry.
pub const MAX_REPLY_BODY: usize = MAX_REPLY_LEN - REPLY_TAG_LEN - REPLY_PREFIX_LEN;

/// The AEAD and the layer stream share a key but never a nonce.
const SEAL_NONCE: [u8; 12] = [0; 12];
const LAYER_NONCE: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// Associated data of every sealed reply: binds the protocol version.
const SEAL_AAD: &[u8] = b"ghostnodes/v1/reply";

/// One hop's reply key, derived in the hop's key schedule. Zeroized on drop.
#[derive(Default, Zeroize, ZeroizeOnDrop)]
pub struct ReplyKey([u8; 32]);

impl ReplyKey {
    pub(crate) fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for ReplyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplyKey(..)")
    }
}

/// Why a hop could not get an answer from further along the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HopFailure {
    /// The next hop could not be reached (unknown, connection refused).
    NextHopUnreachable,
    /// The next hop did not answer in time.
    NextHopTimeout,
    /// The next hop's answer was not a well-formed reply.
    NextHopBadReply,
    /// This hop is overloaded or shutting down.
    Unavailable,
    /// The next hop answered with a refusal (its rate limit for this hop was spent).
    NextHopRefused,
    /// A code this version does not know.
    Other(u8),
}

impl HopFailure {
    const fn code(self) -> u8 {
        match self {
            Self::NextHopUnreachable => 1,
            Self::NextHopTimeout => 2,
            Self::NextHopBadReply => 3,
            Self::Unavailable => 4,
            Self::NextHopRefused => 5,
            Self::Other(c) => c,
        }
    }

    const fn from_code(code: u8) -> Self {
        match code {
            1 => Self::NextHopUnreachable,
            2 => Self::NextHopTimeout,
            3 => Self::NextHopBadReply,
            4 => Self::Unavailable,
            5 => Self::NextHopRefused,
            c => Self::Other(c),
        }
    }
}

impl fmt::Display for HopFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NextHopUnreachable => f.write_str("next hop unreachable"),
            Self::NextHopTimeout => f.write_str("next hop timed out"),
            Self::NextHopBadReply => f.write_str("next hop answered with a malformed reply"),
            Self::Unavailable => f.write_str("hop unavailable"),
            Self::NextHopRefused => f.write_str("next hop refused the packet"),
            Self::Other(c) => write!(f, "hop failure code {c}"),
        }
    }
}

/// What a sealed reply says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyStatus {
    /// The last hop's response to the request.
    Response,
    /// A hop could not forward the packet or get its answer.
    Failed(HopFailure),
}

/// Why a reply could not be sealed, layered or opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyError {
    /// The body exceeds [`MAX_REPLY_BODY`].
    BodyTooLarge {
        /// The length given.
        len: usize,
    },
    /// The reply's length is not one of [`REPLY_BUCKETS`].
    NotABucket {
        /// The length seen.
        len: usize,
    },
    /// No hop's key authenticates the reply: it was corrupted on the way back.
    Unauthentic,
    /// Authenticated, but its contents break the format (a relay that claims to be the
    /// final responder, or a body length past the bucket).
    Malformed {
        /// Index of the hop that sealed it.
        hop: usize,
    },
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BodyTooLarge { len } => {
                write!(f, "reply body of {len} bytes exceeds {MAX_REPLY_BODY}")
            }
            Self::NotABucket { len } => write!(f, "reply of {len} bytes is not a bucket size"),
            Self::Unauthentic => f.write_str("reply does not authenticate under any hop's key"),
            Self::Malformed { hop } => write!(f, "reply sealed by hop {hop} is malformed"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ReplyError {}

/// The smallest bucket that holds a body of `body_len` bytes.
#[must_use]
pub fn bucket_for(body_len: usize) -> Option<usize> {
    REPLY_BUCKETS
        .iter()
        .copied()
        .find(|&b| b >= body_len + REPLY_TAG_LEN + REPLY_PREFIX_LEN)
}

/// The largest body a reply of `reply_len` bytes carries.
#[must_use]
pub const fn body_capacity(reply_len: usize) -> usize {
    reply_len.saturating_sub(REPLY_TAG_LEN + REPLY_PREFIX_LEN)
}

/// Seals `body` with `status` under `key` into all of `out`, whose length is the reply
/// length the packet asked for (one of [`REPLY_BUCKETS`]); zeros pad the rest.
pub fn seal(
    key: &ReplyKey,
    status: ReplyStatus,
    body: &[u8],
    out: &mut [u8],
) -> Result<(), ReplyError> {
    if !REPLY_BUCKETS.contains(&out.len()) {
        return Err(ReplyError::NotABucket { len: out.len() });
    }
    if body.len() > body_capacity(out.len()) {
        return Err(ReplyError::BodyTooLarge { len: body.len() });
    }
    let (tag, plain) = out.split_at_mut(REPLY_TAG_LEN);
    plain[0] = match status {
        ReplyStatus::Response => 0,
        ReplyStatus::Failed(f) => f.code(),
    };
    // body.len() ≤ MAX_REPLY_BODY < 2^32, checked above.
    plain[1..REPLY_PREFIX_LEN].copy_from_slice(&(body.len() as u32).to_be_bytes());
    plain[REPLY_PREFIX_LEN..REPLY_PREFIX_LEN + body.len()].copy_from_slice(body);
    plain[REPLY_PREFIX_LEN + body.len()..].fill(0);
    let sealed = ChaCha20Poly1305::new(&key.0.into())
        .encrypt_inout_detached(&SEAL_NONCE.into(), SEAL_AAD, plain.into())
        .expect("a reply of at most 256 KiB is far below the AEAD's length limit");
    tag.copy_from_slice(&sealed);
    Ok(())
}

/// Adds this hop's layer to a reply of `reply_len` bytes (the length the packet asked
/// for) coming back from further along the path.
///
/// A reply of any other length is refused: the hop then seals
/// [`HopFailure::NextHopBadReply`] itself, so the client learns where the path broke and
/// a hop further along cannot mark the reply by its length.
pub fn add_layer(key: &ReplyKey, reply: &mut [u8], reply_len: usize) -> Result<(), ReplyError> {
    if reply.len() != reply_len || !REPLY_BUCKETS.contains(&reply.len()) {
        return Err(ReplyError::NotABucket { len: reply.len() });
    }
    ChaCha20::new(&key.0.into(), &LAYER_NONCE.into()).apply_keystream(reply);
    Ok(())
}

/// A reply the client has opened.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened<'a> {
    /// The last hop answered; `body` is its response.
    Response {
        /// The response body, borrowed from the caller's buffer.
        body: &'a [u8],
    },
    /// Hop `hop` (0 = first) could not complete the request.
    Failed {
        /// Index of the failing hop in the path.
        hop: usize,
        /// What it reported.
        failure: HopFailure,
        /// Any detail it attached.
        detail: &'a [u8],
    },
}

/// Opens a reply with the path's reply keys (first hop first), in place.
pub fn open<'a>(keys: &[ReplyKey], reply: &'a mut [u8]) -> Result<Opened<'a>, ReplyError> {
    if !REPLY_BUCKETS.contains(&reply.len()) {
        return Err(ReplyError::NotABucket { len: reply.len() });
    }
    let last = keys.len().checked_sub(1).ok_or(ReplyError::Unauthentic)?;
    for (hop, key) in keys.iter().enumerate() {
        let (tag, sealed) = reply.split_at_mut(REPLY_TAG_LEN);
        let tag = Tag::from(fixed::<REPLY_TAG_LEN>(tag));
        let opened = ChaCha20Poly1305::new(&key.0.into()).decrypt_inout_detached(
            &SEAL_NONCE.into(),
            SEAL_AAD,
            sealed.into(),
            &tag,
        );
        if opened.is_err() {
            // Not sealed by this hop: peel its layer and try the next.
            let len = reply.len();
            add_layer(key, reply, len)?;
            continue;
        }
        let plain = &reply[REPLY_TAG_LEN..];
        let len = u32::from_be_bytes(fixed(&plain[1..REPLY_PREFIX_LEN])) as usize;
        let body = plain
            .get(REPLY_PREFIX_LEN..REPLY_PREFIX_LEN.saturating_add(len))
            .ok_or(ReplyError::Malformed { hop })?;
        return match plain[0] {
            0 if hop == last => Ok(Opened::Response { body }),
            0 => Err(ReplyError::Malformed { hop }),
            code => Ok(Opened::Failed {
                hop,
                failure: HopFailure::from_code(code),
                detail: body,
            }),
        };
    }
    Err(ReplyError::Unauthentic)
}
