//! Final-hop requests and their responses: the bytes inside an onion payload and inside
//! the sealed reply.
//!
//! This module owns the request codec, request authentication (recipient signatures and
//! the timestamp window), proof-of-work checks, the response codec and the client-side
//! check of a store acknowledgement's receipts. It never touches storage or the network:
//! the node state machine decides what to do with a request; this module only says what
//! the request is and whether it is authentic.
//!
//! Invariants: decoding never panics and never reads past its input; a request that
//! needs a signature cannot be decoded without one; the signature covers every byte of
//! the request before it (version, method, parameters, timestamp), so no parameter can be
//! changed without invalidating it. Layouts are in `docs/PROTOCOL.md`, section 7.

use alloc::vec::Vec;
use core::fmt;

use sha2::{Digest, Sha256};

use crate::keys::{
    Descriptor, IdentityKey, MAX_DESCRIPTOR_LEN, UnverifiedDescriptor, verify_signature,
};
use crate::types::{MessageHash, Namespace, NodeId, RecipientId, Timestamp};
use crate::wire::{Reader, WireError, Writer};

/// Version byte opening every request.
pub const REQUEST_VERSION: u8 = 2;
/// Signing context of recipient-signed requests.
pub const REQUEST_SIGNING_CONTEXT: &[u8] = b"ghostnodes/v1/request";
/// Signing context of storage receipts.
pub const RECEIPT_SIGNING_CONTEXT: &[u8] = b"ghostnodes/v1/receipt";
/// Prefix of the proof-of-work hash input.
pub const POW_CONTEXT: &[u8] = b"ghostnodes/v1/pow";
/// Default accepted distance between a request's timestamp and the node's clock (±60 s).
pub const DEFAULT_AUTH_WINDOW_MS: u64 = 60_000;
/// Most message hashes one delete or expiry update may name (32 × 32 bytes fit a payload).
pub const MAX_HASHES: usize = 32;
/// Most messages one retrieve may ask for.
pub const MAX_RETRIEVE_LIMIT: u16 = 512;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Request methods as they appear on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Method {
    /// Store a message for a recipient.
    Store = 1,
    /// Retrieve a recipient's messages after a cursor.
    Retrieve = 2,
    /// Delete messages by hash, all of them, or those stored before a time.
    Delete = 3,
    /// Change the expiry of messages.
    UpdateExpiry = 4,
    /// Ask for the swarm of a recipient.
    SwarmLookup = 5,
    /// Ask for the node's version and clock.
    Info = 6,
}

impl Method {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Store,
            2 => Self::Retrieve,
            3 => Self::Delete,
            4 => Self::UpdateExpiry,
            5 => Self::SwarmLookup,
            6 => Self::Info,
            _ => return None,
        })
    }
}

/// A list of message hashes borrowed from a request (at most [`MAX_HASHES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashList<'a>(&'a [u8]);

impl<'a> HashList<'a> {
    /// Wraps raw concatenated 32-byte hashes; `None` when the length is not a multiple of 32
    /// or there are more than [`MAX_HASHES`].
    #[must_use]
    pub fn from_bytes(bytes: &'a [u8]) -> Option<Self> {
        (bytes.len().is_multiple_of(32) && bytes.len() / 32 <= MAX_HASHES).then_some(Self(bytes))
    }

    /// Number of hashes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len() / 32
    }

    /// Whether the list is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The hashes in order.
    pub fn iter(&self) -> impl Iterator<Item = MessageHash> + 'a {
        self.0
            .chunks_exact(32)
            .map(|c| MessageHash(crate::keys::fixed(c)))
    }

    fn raw(&self) -> &'a [u8] {
        self.0
    }
}

/// Store `body` for `recipient` in `namespace` for `ttl_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreRequest<'a> {
    /// Whose message it is.
    pub recipient: RecipientId,
    /// Where it goes.
    pub namespace: Namespace,
    /// When the client made the request (checked against the auth window).
    pub timestamp: Timestamp,
    /// How long to keep it, in ms (at most the node's maximum TTL).
    pub ttl_ms: u64,
    /// Proof-of-work nonce (ignored when the node's difficulty is 0).
    pub pow_nonce: u64,
    /// The (end-to-end encrypted) message.
    pub body: &'a [u8],
}

/// Retrieve up to `limit` messages stored after cursor `after` (0 = from the oldest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetrieveRequest {
    /// Whose messages.
    pub recipient: RecipientId,
    /// Which namespace.
    pub namespace: Namespace,
    /// When the client made the request.
    pub timestamp: Timestamp,
    /// The cursor: the sequence number of the last message already seen (0 = none).
    pub after: u64,
    /// Most messages to return (1 ..= [`MAX_RETRIEVE_LIMIT`]).
    pub limit: u16,
}

/// Which messages a delete removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteSelector<'a> {
    /// These messages.
    Hashes(HashList<'a>),
    /// Every message of the recipient in the namespace.
    All,
    /// Messages stored before this time.
    Before(Timestamp),
}

/// Delete a recipient's messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeleteRequest<'a> {
    /// Whose messages.
    pub recipient: RecipientId,
    /// Which namespace.
    pub namespace: Namespace,
    /// When the client made the request.
    pub timestamp: Timestamp,
    /// Which messages.
    pub selector: DeleteSelector<'a>,
}

/// Set the expiry of some of a recipient's messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpdateExpiryRequest<'a> {
    /// Whose messages.
    pub recipient: RecipientId,
    /// Which namespace.
    pub namespace: Namespace,
    /// When the client made the request.
    pub timestamp: Timestamp,
    /// Which messages.
    pub hashes: HashList<'a>,
    /// Their new expiry (bounded by the node's maximum TTL from now).
    pub expiry: Timestamp,
}

/// A final-hop request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// See [`StoreRequest`].
    Store(StoreRequest<'a>),
    /// See [`RetrieveRequest`].
    Retrieve(RetrieveRequest),
    /// See [`DeleteRequest`].
    Delete(DeleteRequest<'a>),
    /// See [`UpdateExpiryRequest`].
    UpdateExpiry(UpdateExpiryRequest<'a>),
    /// Which nodes form `recipient`'s swarm.
    SwarmLookup {
        /// The recipient.
        recipient: RecipientId,
    },
    /// The node's protocol version and clock.
    Info,
}

impl Request<'_> {
    /// The method of this request.
    #[must_use]
    pub fn method(&self) -> Method {
        match self {
            Self::Store(_) => Method::Store,
            Self::Retrieve(_) => Method::Retrieve,
            Self::Delete(_) => Method::Delete,
            Self::UpdateExpiry(_) => Method::UpdateExpiry,
            Self::SwarmLookup { .. } => Method::SwarmLookup,
            Self::Info => Method::Info,
        }
    }

    /// The recipient whose swarm must serve the request, if any.
    #[must_use]
    pub fn recipient(&self) -> Option<RecipientId> {
        match self {
            Self::Store(r) => Some(r.recipient),
            Self::Retrieve(r) => Some(r.recipient),
            Self::Delete(r) => Some(r.recipient),
            Self::UpdateExpiry(r) => Some(r.recipient),
            Self::SwarmLookup { .. } | Self::Info => None,
        }
    }

    /// The client's timestamp, for requests that carry one.
    #[must_use]
    pub fn timestamp(&self) -> Option<Timestamp> {
        match self {
            Self::Store(r) => Some(r.timestamp),
            Self::Retrieve(r) => Some(r.timestamp),
            Self::Delete(r) => Some(r.timestamp),
            Self::UpdateExpiry(r) => Some(r.timestamp),
            Self::SwarmLookup { .. } | Self::Info => None,
        }
    }

    /// Whether the recipient's signature is required: always for reads and changes, and
    /// for stores into owner-only namespaces.
    #[must_use]
    pub fn requires_signature(&self) -> bool {
        match self {
            Self::Store(r) => r.namespace.requires_owner_signature(),
            Self::Retrieve(_) | Self::Delete(_) | Self::UpdateExpiry(_) => true,
            Self::SwarmLookup { .. } | Self::Info => false,
        }
    }

    /// Encodes the request, signed by `signer` when it needs a signature; returns the
    /// number of bytes written.
    pub fn encode(
        &self,
        signer: Option<&IdentityKey>,
        out: &mut [u8],
    ) -> Result<usize, RequestError> {
        let len = self.encode_unsigned(out)?;
        if self.requires_signature() {
            let signer = signer.ok_or(RequestError::SignatureRequired)?;
            let sig = signer.sign(REQUEST_SIGNING_CONTEXT, &out[..len]);
            let mut w = Writer::new(&mut out[len..]);
            w.put(&sig)?;
            return Ok(len + SIGNATURE_LEN);
        }
        Ok(len)
    }

    /// The bytes a signature covers: the request without its signature.
    fn encode_unsigned(&self, out: &mut [u8]) -> Result<usize, RequestError> {
        let mut w = Writer::new(out);
        w.u8(REQUEST_VERSION)?;
        w.u8(self.method() as u8)?;
        match self {
            Self::Store(r) => {
                w.put(r.recipient.as_bytes())?;
                w.u16(r.namespace.0)?;
                w.u64(r.timestamp.0)?;
                w.u64(r.ttl_ms)?;
                w.u64(r.pow_nonce)?;
                w.bytes16(r.body)?;
            }
            Self::Retrieve(r) => {
                w.put(r.recipient.as_bytes())?;
                w.u16(r.namespace.0)?;
                w.u64(r.timestamp.0)?;
                w.u64(r.after)?;
                w.u16(r.limit)?;
            }
            Self::Delete(r) => {
                w.put(r.recipient.as_bytes())?;
                w.u16(r.namespace.0)?;
                w.u64(r.timestamp.0)?;
                match r.selector {
                    DeleteSelector::Hashes(h) => {
                        w.u8(1)?;
                        // HashList holds at most MAX_HASHES (32).
                        w.u8(h.len() as u8)?;
                        w.put(h.raw())?;
                    }
                    DeleteSelector::All => w.u8(2)?,
                    DeleteSelector::Before(t) => {
                        w.u8(3)?;
                        w.u64(t.0)?;
                    }
                }
            }
            Self::UpdateExpiry(r) => {
                w.put(r.recipient.as_bytes())?;
                w.u16(r.namespace.0)?;
                w.u64(r.timestamp.0)?;
                // HashList holds at most MAX_HASHES (32).
                w.u8(r.hashes.len() as u8)?;
                w.put(r.hashes.raw())?;
                w.u64(r.expiry.0)?;
            }
            Self::SwarmLookup { recipient } => w.put(recipient.as_bytes())?,
            Self::Info => {}
        }
        Ok(w.position())
    }
}

/// A decoded request with the bytes its signature covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedRequest<'a> {
    /// The request.
    pub request: Request<'a>,
    signed: &'a [u8],
    signature: Option<[u8; SIGNATURE_LEN]>,
}

impl<'a> SignedRequest<'a> {
    /// Decodes a request from an onion payload. Structure only: call
    /// [`SignedRequest::authenticate`] before acting on it.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, RequestError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != REQUEST_VERSION {
            return Err(RequestError::UnsupportedVersion);
        }
        let method = Method::from_u8(r.u8()?).ok_or(RequestError::UnknownMethod)?;
        let request = match method {
            Method::Store => Request::Store(StoreRequest {
                recipient: RecipientId(r.array()?),
                namespace: Namespace(r.u16()?),
                timestamp: Timestamp(r.u64()?),
                ttl_ms: r.u64()?,
                pow_nonce: r.u64()?,
                body: r.bytes16()?,
            }),
            Method::Retrieve => {
                let req = RetrieveRequest {
                    recipient: RecipientId(r.array()?),
                    namespace: Namespace(r.u16()?),
                    timestamp: Timestamp(r.u64()?),
                    after: r.u64()?,
                    limit: r.u16()?,
                };
                if req.limit == 0 || req.limit > MAX_RETRIEVE_LIMIT {
                    return Err(RequestError::BadLimit);
                }
                Request::Retrieve(req)
            }
            Method::Delete => {
                let recipient = RecipientId(r.array()?);
                let namespace = Namespace(r.u16()?);
                let timestamp = Timestamp(r.u64()?);
                let selector = match r.u8()? {
                    1 => DeleteSelector::Hashes(read_hashes(&mut r)?),
                    2 => DeleteSelector::All,
                    3 => DeleteSelector::Before(Timestamp(r.u64()?)),
                    _ => return Err(RequestError::Malformed),
                };
                Request::Delete(DeleteRequest {
                    recipient,
                    namespace,
                    timestamp,
                    selector,
                })
            }
            Method::UpdateExpiry => Request::UpdateExpiry(UpdateExpiryRequest {
                recipient: RecipientId(r.array()?),
                namespace: Namespace(r.u16()?),
                timestamp: Timestamp(r.u64()?),
                hashes: read_hashes(&mut r)?,
                expiry: Timestamp(r.u64()?),
            }),
            Method::SwarmLookup => Request::SwarmLookup {
                recipient: RecipientId(r.array()?),
            },
            Method::Info => Request::Info,
        };
        let signed_len = r.position();
        let signature = if request.requires_signature() {
            if r.remaining() == 0 {
                return Err(RequestError::SignatureRequired);
            }
            Some(r.array::<SIGNATURE_LEN>()?)
        } else {
            None
        };
        r.finish()?;
        Ok(Self {
            request,
            signed: &bytes[..signed_len],
            signature,
        })
    }

    /// The recipient's signature, when the request carries one.
    #[must_use]
    pub fn signature(&self) -> Option<[u8; SIGNATURE_LEN]> {
        self.signature
    }

    /// Checks the timestamp window (`|timestamp − now| ≤ window_ms`) and, where required,
    /// the recipient's signature over everything before it.
    pub fn authenticate(&self, now: Timestamp, window_ms: u64) -> Result<(), RequestError> {
        if let Some(ts) = self.request.timestamp() {
            let skew = ts.0.abs_diff(now.0);
            if skew > window_ms {
                return Err(RequestError::StaleTimestamp);
            }
        }
        self.verify_owner_signature()
    }

    /// Checks the recipient's signature, where there is one, whatever the request's age:
    /// for evidence of what an owner asked (a delete shown to a member that missed it),
    /// never for executing a request.
    pub fn verify_owner_signature(&self) -> Result<(), RequestError> {
        if let Some(sig) = &self.signature {
            let recipient = self
                .request
                .recipient()
                .expect("every signed request names its recipient");
            if !verify_signature(
                recipient.as_bytes(),
                REQUEST_SIGNING_CONTEXT,
                self.signed,
                sig,
            ) {
                return Err(RequestError::BadSignature);
            }
        }
        Ok(())
    }
}

fn read_hashes<'a>(r: &mut Reader<'a>) -> Result<HashList<'a>, RequestError> {
    let n = usize::from(r.u8()?);
    if n > MAX_HASHES {
        return Err(RequestError::TooManyHashes);
    }
    HashList::from_bytes(r.take(n * 32)?).ok_or(RequestError::TooManyHashes)
}

/// SHA-256 over the proof-of-work input of a store.
fn pow_digest(req: &StoreRequest<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(POW_CONTEXT);
    h.update(req.recipient.as_bytes());
    h.update(req.namespace.0.to_be_bytes());
    h.update(req.timestamp.0.to_be_bytes());
    h.update(req.ttl_ms.to_be_bytes());
    h.update(
        u32::try_from(req.body.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    h.update(req.body);
    h.update(req.pow_nonce.to_be_bytes());
    h.finalize().into()
}

fn leading_zero_bits(d: &[u8; 32]) -> u32 {
    let mut bits = 0;
    for b in d {
        bits += b.leading_zeros();
        if *b != 0 {
            break;
        }
    }
    bits
}

/// Whether a store carries a proof of work of at least `difficulty` leading zero bits.
/// Difficulty 0 always passes.
#[must_use]
pub fn pow_satisfied(req: &StoreRequest<'_>, difficulty: u8) -> bool {
    difficulty == 0 || leading_zero_bits(&pow_digest(req)) >= u32::from(difficulty)
}

/// Client side: finds a nonce meeting `difficulty`, trying at most `max_tries` nonces.
#[must_use]
pub fn solve_pow(req: &StoreRequest<'_>, difficulty: u8, max_tries: u64) -> Option<u64> {
    let mut probe = *req;
    (0..max_tries).find(|&nonce| {
        probe.pow_nonce = nonce;
        pow_satisfied(&probe, difficulty)
    })
}

/// What a stored message keeps of the client's store request besides the message itself:
/// enough for any swarm member to check, long after the request, that a client paid the
/// proof of work, that the owner signed an owner-only message, and that the message's
/// lifetime is the one the client asked for. Replicas and anti-entropy copies carry it,
/// and a receiver applies the same rules to it as to a client's store (PROTOCOL.md §8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The store request's timestamp (client clock).
    pub timestamp: Timestamp,
    /// The TTL it asked for.
    pub ttl_ms: u64,
    /// Its proof-of-work nonce.
    pub pow_nonce: u64,
    /// The owner's signature over the request; present exactly for owner-only
    /// namespaces.
    pub signature: Option<[u8; SIGNATURE_LEN]>,
}

/// Why an [`Origin`] does not vouch for a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OriginError {
    /// An owner-only message without a valid owner signature, or a signature on a message
    /// that needs none.
    BadSignature,
    /// The proof of work is below the receiver's difficulty.
    InsufficientPow,
    /// The TTL asked for exceeds the receiver's maximum.
    TtlTooLong,
    /// `stored_at` is further from the request's time than the auth window: no member
    /// could have accepted the request then.
    InconsistentTimes,
}

impl Origin {
    /// The origin of a client's store request as the final hop received it.
    #[must_use]
    pub fn of(request: &StoreRequest<'_>, signature: Option<[u8; SIGNATURE_LEN]>) -> Self {
        Self {
            timestamp: request.timestamp,
            ttl_ms: request.ttl_ms,
            pow_nonce: request.pow_nonce,
            signature,
        }
    }

    /// The store request this origin records, for `body`.
    #[must_use]
    pub fn request<'a>(
        &self,
        recipient: RecipientId,
        namespace: Namespace,
        body: &'a [u8],
    ) -> StoreRequest<'a> {
        StoreRequest {
            recipient,
            namespace,
            timestamp: self.timestamp,
            ttl_ms: self.ttl_ms,
            pow_nonce: self.pow_nonce,
            body,
        }
    }

    /// Checks that this origin vouches for a copy of a message: the owner's signature
    /// where the namespace needs one, the proof of work at `pow_difficulty`, a TTL within
    /// `max_ttl_ms`, and a `stored_at` that a member could have set when the request
    /// arrived (within `window_ms` of its timestamp). The expiry is not tied to the TTL:
    /// the owner may have moved it since (update-expiry); the receiver's store bounds it
    /// by its own clock and maximum TTL.
    pub fn vouches_for(
        &self,
        recipient: RecipientId,
        namespace: Namespace,
        body: &[u8],
        stored_at: Timestamp,
        (pow_difficulty, max_ttl_ms, window_ms): (u8, u64, u64),
    ) -> Result<(), OriginError> {
        let request = self.request(recipient, namespace, body);
        if self.ttl_ms > max_ttl_ms {
            return Err(OriginError::TtlTooLong);
        }
        if stored_at.0.abs_diff(self.timestamp.0) > window_ms {
            return Err(OriginError::InconsistentTimes);
        }
        if !pow_satisfied(&request, pow_difficulty) {
            return Err(OriginError::InsufficientPow);
        }
        match (namespace.requires_owner_signature(), &self.signature) {
            (false, None) => Ok(()),
            (true, Some(sig)) => {
                let mut buf = [0u8; crate::packet::MAX_PAYLOAD];
                let len = Request::Store(request)
                    .encode_unsigned(&mut buf)
                    .map_err(|_| OriginError::BadSignature)?;
                if verify_signature(
                    recipient.as_bytes(),
                    REQUEST_SIGNING_CONTEXT,
                    &buf[..len],
                    sig,
                ) {
                    Ok(())
                } else {
                    Err(OriginError::BadSignature)
                }
            }
            _ => Err(OriginError::BadSignature),
        }
    }
}

/// Why a request (or a response) was refused. Each has its own wire code (section 7 of
/// `docs/PROTOCOL.md`), so clients can tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// Bytes do not form a request of this version.
    Malformed,
    /// Unknown version byte.
    UnsupportedVersion,
    /// Unknown method byte.
    UnknownMethod,
    /// The recipient's signature does not verify (wrong key or changed parameters).
    BadSignature,
    /// The request's timestamp is outside the node's window.
    StaleTimestamp,
    /// The request needs the recipient's signature and has none.
    SignatureRequired,
    /// Retrieve limit of 0 or above [`MAX_RETRIEVE_LIMIT`].
    BadLimit,
    /// More than [`MAX_HASHES`] hashes.
    TooManyHashes,
    /// The requested TTL exceeds the node's maximum.
    TtlTooLong,
    /// The message body exceeds the node's maximum.
    BodyTooLarge,
    /// The recipient's quota is used up.
    QuotaExceeded,
    /// The node's storage is full; it still serves retrieves.
    NodeFull,
    /// Too many requests from this source or for this recipient.
    RateLimited,
    /// The proof of work is missing or too weak.
    InsufficientPow,
    /// Fewer than W swarm members made the message durable in time.
    QuorumNotReached,
    /// The node cannot serve right now (starting, shutting down, storage error).
    Unavailable,
    /// This signed delete or expiry update was already applied here (a retry, or a
    /// replay): it is never applied twice. Sign a new request to apply it again.
    AlreadyApplied,
    /// The owner deleted this message: it is not stored again (until it would have
    /// expired).
    Deleted,
    /// The response does not fit the reply size the packet asked for: ask again with a
    /// larger reply bucket.
    ReplyTooSmall,
    /// An output buffer was too small.
    BufferTooSmall {
        /// Bytes needed.
        required: usize,
    },
}

impl RequestError {
    /// Wire code of the error (never 0 or 1, which mean success and redirect).
    #[must_use]
    pub const fn code(self) -> u8 {
        match self {
            Self::Malformed | Self::BufferTooSmall { .. } => 10,
            Self::UnsupportedVersion => 11,
            Self::UnknownMethod => 12,
            Self::BadSignature => 13,
            Self::StaleTimestamp => 14,
            Self::SignatureRequired => 15,
            Self::BadLimit => 16,
            Self::TooManyHashes => 17,
            Self::TtlTooLong => 18,
            Self::BodyTooLarge => 19,
            Self::QuotaExceeded => 20,
            Self::NodeFull => 21,
            Self::RateLimited => 22,
            Self::InsufficientPow => 23,
            Self::QuorumNotReached => 24,
            Self::Unavailable => 25,
            Self::AlreadyApplied => 26,
            Self::Deleted => 27,
            Self::ReplyTooSmall => 28,
        }
    }

    /// The error with wire code `code`, if it is one.
    #[must_use]
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            10 => Self::Malformed,
            11 => Self::UnsupportedVersion,
            12 => Self::UnknownMethod,
            13 => Self::BadSignature,
            14 => Self::StaleTimestamp,
            15 => Self::SignatureRequired,
            16 => Self::BadLimit,
            17 => Self::TooManyHashes,
            18 => Self::TtlTooLong,
            19 => Self::BodyTooLarge,
            20 => Self::QuotaExceeded,
            21 => Self::NodeFull,
            22 => Self::RateLimited,
            23 => Self::InsufficientPow,
            24 => Self::QuorumNotReached,
            25 => Self::Unavailable,
            26 => Self::AlreadyApplied,
            27 => Self::Deleted,
            28 => Self::ReplyTooSmall,
            _ => return None,
        })
    }

    /// A stable snake_case name, for metrics and JSON errors.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnsupportedVersion => "unsupported_version",
            Self::UnknownMethod => "unknown_method",
            Self::BadSignature => "bad_signature",
            Self::StaleTimestamp => "stale_timestamp",
            Self::SignatureRequired => "signature_required",
            Self::BadLimit => "bad_limit",
            Self::TooManyHashes => "too_many_hashes",
            Self::TtlTooLong => "ttl_too_long",
            Self::BodyTooLarge => "body_too_large",
            Self::QuotaExceeded => "quota_exceeded",
            Self::NodeFull => "node_full",
            Self::RateLimited => "rate_limited",
            Self::InsufficientPow => "insufficient_pow",
            Self::QuorumNotReached => "quorum_not_reached",
            Self::Unavailable => "unavailable",
            Self::AlreadyApplied => "already_applied",
            Self::Deleted => "deleted",
            Self::ReplyTooSmall => "reply_too_small",
            Self::BufferTooSmall { .. } => "buffer_too_small",
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed => f.write_str("malformed request"),
            Self::UnsupportedVersion => f.write_str("unsupported request version"),
            Self::UnknownMethod => f.write_str("unknown request method"),
            Self::BadSignature => f.write_str("recipient signature does not verify"),
            Self::StaleTimestamp => f.write_str("request timestamp outside the accepted window"),
            Self::SignatureRequired => f.write_str("request must be signed by the recipient"),
            Self::BadLimit => write!(f, "retrieve limit must be 1 to {MAX_RETRIEVE_LIMIT}"),
            Self::TooManyHashes => write!(f, "more than {MAX_HASHES} message hashes"),
            Self::TtlTooLong => f.write_str("requested TTL exceeds the node's maximum"),
            Self::BodyTooLarge => f.write_str("message body exceeds the node's maximum"),
            Self::QuotaExceeded => f.write_str("recipient quota exceeded"),
            Self::NodeFull => f.write_str("node storage is full"),
            Self::RateLimited => f.write_str("rate limited"),
            Self::InsufficientPow => f.write_str("proof of work missing or too weak"),
            Self::QuorumNotReached => f.write_str("too few swarm members stored the message"),
            Self::Unavailable => f.write_str("node unavailable"),
            Self::AlreadyApplied => f.write_str("this signed change was already applied"),
            Self::Deleted => f.write_str("the owner deleted this message; it is not stored again"),
            Self::ReplyTooSmall => {
                f.write_str("the response does not fit the reply size the packet asked for")
            }
            Self::BufferTooSmall { required } => {
                write!(f, "buffer too small: {required} bytes required")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for RequestError {}

impl From<WireError> for RequestError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::BufferTooSmall { required } => Self::BufferTooSmall { required },
            WireError::Truncated | WireError::TrailingBytes => Self::Malformed,
        }
    }
}

/// A swarm member's signed statement that it holds a message durably.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The member that signed.
    pub node: NodeId,
    /// Its signature over [`receipt_message`].
    pub signature: [u8; SIGNATURE_LEN],
}

/// The bytes a receipt signs: `hash ‖ recipient ‖ expiry`.
#[must_use]
pub fn receipt_message(hash: &MessageHash, recipient: &RecipientId, expiry: Timestamp) -> [u8; 72] {
    let mut m = [0u8; 72];
    m[..32].copy_from_slice(hash.as_bytes());
    m[32..64].copy_from_slice(recipient.as_bytes());
    m[64..].copy_from_slice(&expiry.0.to_be_bytes());
    m
}

impl Receipt {
    /// Signs a receipt with a node's identity key.
    #[must_use]
    pub fn sign(
        key: &IdentityKey,
        hash: &MessageHash,
        recipient: &RecipientId,
        expiry: Timestamp,
    ) -> Self {
        Self {
            node: key.node_id(),
            signature: key.sign(
                RECEIPT_SIGNING_CONTEXT,
                &receipt_message(hash, recipient, expiry),
            ),
        }
    }

    /// Whether the signature verifies for this message.
    #[must_use]
    pub fn verify(&self, hash: &MessageHash, recipient: &RecipientId, expiry: Timestamp) -> bool {
        verify_signature(
            self.node.as_bytes(),
            RECEIPT_SIGNING_CONTEXT,
            &receipt_message(hash, recipient, expiry),
            &self.signature,
        )
    }
}

/// Acknowledgement of a store: the message's hash and expiry and one receipt per swarm
/// member that made it durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreAck {
    /// Hash of the stored message.
    pub hash: MessageHash,
    /// When the swarm will drop it.
    pub expiry: Timestamp,
    /// Receipts, one per member.
    pub receipts: Vec<Receipt>,
}

/// Why a client refuses an acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AckError {
    /// Fewer than W distinct swarm members signed valid receipts. The other counts say
    /// what was ignored, so the error names the problem.
    TooFewReceipts {
        /// Valid receipts from distinct swarm members.
        valid: usize,
        /// Receipts required.
        required: usize,
        /// Receipts signed by nodes outside the swarm (one of them in `outsider`).
        outsiders: usize,
        /// One node outside the swarm that signed a receipt.
        outsider: Option<NodeId>,
        /// Second and later receipts of one member.
        duplicates: usize,
        /// Receipts whose signature does not verify.
        bad_signatures: usize,
    },
    /// The acknowledged hash is not the hash of the message the client sent.
    WrongMessage,
    /// The acknowledged expiry is outside what the client asked for.
    ExpiryMismatch {
        /// The expiry the swarm acknowledged.
        acknowledged: Timestamp,
        /// The earliest expiry the request allows.
        earliest: Timestamp,
        /// The latest expiry the request allows.
        latest: Timestamp,
    },
}

impl fmt::Display for AckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooFewReceipts {
                valid,
                required,
                outsiders,
                outsider,
                duplicates,
                bad_signatures,
            } => {
                write!(
                    f,
                    "{valid} valid receipts from swarm members, {required} required"
                )?;
                if let Some(node) = outsider {
                    write!(
                        f,
                        "; {outsiders} from nodes outside the recipient's swarm (e.g. {node})"
                    )?;
                }
                if *duplicates > 0 {
                    write!(f, "; {duplicates} duplicate")?;
                }
                if *bad_signatures > 0 {
                    write!(f, "; {bad_signatures} with a bad signature")?;
                }
                Ok(())
            }
            Self::WrongMessage => f.write_str("acknowledgement is for another message"),
            Self::ExpiryMismatch {
                acknowledged,
                earliest,
                latest,
            } => write!(
                f,
                "acknowledged expiry {} ms is outside the requested {}..={} ms",
                acknowledged.0, earliest.0, latest.0
            ),
        }
    }
}

impl StoreAck {
    /// Client-side quorum check: at least `w` receipts that verify, from distinct members
    /// of `swarm`, for `expected` (the hash the client computed for its message), over an
    /// expiry inside `expiry` (what the request allows; see [`requested_expiry`]).
    pub fn verify_quorum(
        &self,
        expected: &MessageHash,
        recipient: &RecipientId,
        swarm: &[NodeId],
        w: usize,
        expiry: core::ops::RangeInclusive<Timestamp>,
    ) -> Result<(), AckError> {
        if self.hash != *expected {
            return Err(AckError::WrongMessage);
        }
        if !expiry.contains(&self.expiry) {
            return Err(AckError::ExpiryMismatch {
                acknowledged: self.expiry,
                earliest: *expiry.start(),
                latest: *expiry.end(),
            });
        }
        let mut counted: Vec<NodeId> = Vec::new();
        let (mut outsiders, mut outsider, mut duplicates, mut bad_signatures) = (0, None, 0, 0);
        for r in &self.receipts {
            if !swarm.contains(&r.node) {
                outsiders += 1;
                outsider = outsider.or(Some(r.node));
            } else if counted.contains(&r.node) {
                duplicates += 1;
            } else if !r.verify(&self.hash, recipient, self.expiry) {
                bad_signatures += 1;
            } else {
                counted.push(r.node);
            }
        }
        if counted.len() >= w {
            Ok(())
        } else {
            Err(AckError::TooFewReceipts {
                valid: counted.len(),
                required: w,
                outsiders,
                outsider,
                duplicates,
                bad_signatures,
            })
        }
    }
}

/// The expiries a swarm may acknowledge for a store of `ttl_ms` first sent at
/// `first_sent` and last sent at `last_sent` (client clock): a member sets expiry =
/// its arrival time + ttl, and accepts only requests whose timestamp is within
/// `auth_window_ms` of its clock, so arrival lies in
/// `[first_sent − window, last_sent + window]` (docs/PROTOCOL.md §7).
#[must_use]
pub fn requested_expiry(
    first_sent: Timestamp,
    last_sent: Timestamp,
    ttl_ms: u64,
    auth_window_ms: u64,
) -> core::ops::RangeInclusive<Timestamp> {
    let earliest = Timestamp(first_sent.0.saturating_sub(auth_window_ms)).plus_millis(ttl_ms);
    let latest = last_sent.plus_millis(ttl_ms.saturating_add(auth_window_ms));
    earliest..=latest
}

/// One message in a retrieve response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageView {
    /// Cursor of this message: pass it as `after` to continue.
    pub seq: u64,
    /// Its hash.
    pub hash: MessageHash,
    /// When the swarm stored it.
    pub stored_at: Timestamp,
    /// When it expires.
    pub expiry: Timestamp,
    /// The stored body.
    pub body: Vec<u8>,
}

/// A final hop's answer to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The message is durable on at least W swarm members.
    Stored(StoreAck),
    /// Messages after the cursor; `more` when the limit or the reply size cut the list.
    Messages {
        /// Messages in cursor order.
        messages: Vec<MessageView>,
        /// Whether more messages follow the last one.
        more: bool,
    },
    /// Number of messages deleted.
    Deleted {
        /// How many.
        count: u32,
    },
    /// Number of messages whose expiry changed.
    ExpiryUpdated {
        /// How many.
        count: u32,
    },
    /// The swarm of the requested recipient.
    Swarm {
        /// Its members' signed descriptors.
        members: Vec<Descriptor>,
    },
    /// The node's version and clock (for clients to correct their clock skew) and the
    /// proof-of-work difficulty its stores require.
    Info {
        /// Protocol version.
        version: u16,
        /// The node's clock.
        node_time: Timestamp,
        /// The node.
        node: NodeId,
        /// Leading zero bits a store's proof of work must have (0: none).
        pow_difficulty: u8,
    },
    /// This node is not in the recipient's swarm: ask these nodes instead.
    Redirect {
        /// The current swarm's signed descriptors.
        swarm: Vec<Descriptor>,
    },
    /// The request was refused.
    Refused(RequestError),
}

const STATUS_OK: u8 = 0;
const STATUS_REDIRECT: u8 = 1;

impl Response {
    /// Encodes the response, appending to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let put_descriptors = |out: &mut Vec<u8>, ds: &[Descriptor]| {
            // Swarms and redirects list a handful of nodes; cap at 255 by construction.
            out.push(u8::try_from(ds.len()).unwrap_or(u8::MAX));
            for d in ds.iter().take(255) {
                let mut buf = [0u8; MAX_DESCRIPTOR_LEN];
                let n = d
                    .encode(&mut buf)
                    .expect("MAX_DESCRIPTOR_LEN fits every descriptor");
                out.extend_from_slice(&buf[..n]);
            }
        };
        match self {
            Self::Stored(ack) => {
                out.extend_from_slice(&[STATUS_OK, Method::Store as u8]);
                out.extend_from_slice(ack.hash.as_bytes());
                out.extend_from_slice(&ack.expiry.0.to_be_bytes());
                out.push(u8::try_from(ack.receipts.len()).unwrap_or(u8::MAX));
                for r in ack.receipts.iter().take(255) {
                    out.extend_from_slice(r.node.as_bytes());
                    out.extend_from_slice(&r.signature);
                }
            }
            Self::Messages { messages, more } => {
                out.extend_from_slice(&[STATUS_OK, Method::Retrieve as u8]);
                out.extend_from_slice(
                    &u16::try_from(messages.len())
                        .unwrap_or(u16::MAX)
                        .to_be_bytes(),
                );
                for m in messages.iter().take(usize::from(u16::MAX)) {
                    out.extend_from_slice(&m.seq.to_be_bytes());
                    out.extend_from_slice(m.hash.as_bytes());
                    out.extend_from_slice(&m.stored_at.0.to_be_bytes());
                    out.extend_from_slice(&m.expiry.0.to_be_bytes());
                    let len = u16::try_from(m.body.len()).expect("store bodies are below 64 KiB");
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(&m.body);
                }
                out.push(u8::from(*more));
            }
            Self::Deleted { count } => {
                out.extend_from_slice(&[STATUS_OK, Method::Delete as u8]);
                out.extend_from_slice(&count.to_be_bytes());
            }
            Self::ExpiryUpdated { count } => {
                out.extend_from_slice(&[STATUS_OK, Method::UpdateExpiry as u8]);
                out.extend_from_slice(&count.to_be_bytes());
            }
            Self::Swarm { members } => {
                out.extend_from_slice(&[STATUS_OK, Method::SwarmLookup as u8]);
                put_descriptors(out, members);
            }
            Self::Info {
                version,
                node_time,
                node,
                pow_difficulty,
            } => {
                out.extend_from_slice(&[STATUS_OK, Method::Info as u8]);
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(&node_time.0.to_be_bytes());
                out.extend_from_slice(node.as_bytes());
                out.push(*pow_difficulty);
            }
            Self::Redirect { swarm } => {
                out.push(STATUS_REDIRECT);
                put_descriptors(out, swarm);
            }
            Self::Refused(e) => out.push(e.code()),
        }
    }

    /// Bytes a retrieve response spends on each message besides its body; lets the node
    /// stop adding messages before the reply's largest bucket overflows.
    pub const MESSAGE_OVERHEAD: usize = 8 + 32 + 8 + 8 + 2;

    /// Bytes of a retrieve response besides its messages.
    pub const MESSAGES_FIXED: usize = 2 + 2 + 1;

    /// Decodes a response.
    pub fn decode(bytes: &[u8]) -> Result<Self, RequestError> {
        let mut r = Reader::new(bytes);
        let read_descriptors = |r: &mut Reader<'_>| -> Result<Vec<Descriptor>, RequestError> {
            let n = r.u8()?;
            let mut out = Vec::with_capacity(usize::from(n));
            for _ in 0..n {
                let rest = r.rest();
                let len =
                    UnverifiedDescriptor::encoded_len_at(rest).ok_or(RequestError::Malformed)?;
                let d = Descriptor::decode(rest.get(..len).ok_or(RequestError::Malformed)?)
                    .map_err(|_| RequestError::Malformed)?;
                out.push(d);
                *r = Reader::new(&rest[len..]);
            }
            Ok(out)
        };
        let status = r.u8()?;
        let response = match status {
            STATUS_OK => match Method::from_u8(r.u8()?).ok_or(RequestError::Malformed)? {
                Method::Store => {
                    let hash = MessageHash(r.array()?);
                    let expiry = Timestamp(r.u64()?);
                    let n = r.u8()?;
                    let mut receipts = Vec::with_capacity(usize::from(n));
                    for _ in 0..n {
                        receipts.push(Receipt {
                            node: NodeId(r.array()?),
                            signature: r.array()?,
                        });
                    }
                    Self::Stored(StoreAck {
                        hash,
                        expiry,
                        receipts,
                    })
                }
                Method::Retrieve => {
                    let n = r.u16()?;
                    let mut messages = Vec::with_capacity(
                        usize::from(n).min(r.remaining() / Self::MESSAGE_OVERHEAD),
                    );
                    for _ in 0..n {
                        messages.push(MessageView {
                            seq: r.u64()?,
                            hash: MessageHash(r.array()?),
                            stored_at: Timestamp(r.u64()?),
                            expiry: Timestamp(r.u64()?),
                            body: r.bytes16()?.to_vec(),
                        });
                    }
                    let more = match r.u8()? {
                        0 => false,
                        1 => true,
                        _ => return Err(RequestError::Malformed),
                    };
                    Self::Messages { messages, more }
                }
                Method::Delete => Self::Deleted { count: r.u32()? },
                Method::UpdateExpiry => Self::ExpiryUpdated { count: r.u32()? },
                Method::SwarmLookup => Self::Swarm {
                    members: read_descriptors(&mut r)?,
                },
                Method::Info => Self::Info {
                    version: r.u16()?,
                    node_time: Timestamp(r.u64()?),
                    node: NodeId(r.array()?),
                    pow_difficulty: r.u8()?,
                },
            },
            STATUS_REDIRECT => Self::Redirect {
                swarm: read_descriptors(&mut r)?,
            },
            code => Self::Refused(RequestError::from_code(code).ok_or(RequestError::Malformed)?),
        };
        r.finish()?;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Address, OnionKey};
    use crate::types::Epoch;
    use alloc::vec;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const NOW: Timestamp = Timestamp(1_800_000_000_000);

    fn key(seed: u8) -> IdentityKey {
        IdentityKey::from_seed(&[seed; 32])
    }

    fn retrieve(owner: &IdentityKey, ts: Timestamp) -> Request<'static> {
        Request::Retrieve(RetrieveRequest {
            recipient: owner.recipient_id(),
            namespace: Namespace::DIRECT,
            timestamp: ts,
            after: 5,
            limit: 10,
        })
    }

    fn encode(req: &Request<'_>, signer: Option<&IdentityKey>) -> Vec<u8> {
        let mut buf = [0u8; 2048];
        let n = req.encode(signer, &mut buf).expect("fits");
        buf[..n].to_vec()
    }

    #[test]
    fn signed_retrieve_authenticates() {
        let owner = key(1);
        let bytes = encode(&retrieve(&owner, NOW), Some(&owner));
        let req = SignedRequest::decode(&bytes).unwrap();
        assert_eq!(req.request, retrieve(&owner, NOW));
        assert_eq!(
            req.authenticate(NOW.plus_millis(59_000), DEFAULT_AUTH_WINDOW_MS),
            Ok(())
        );
    }

    #[test]
    fn retrieve_signed_by_wrong_key_is_refused() {
        let owner = key(1);
        let bytes = encode(&retrieve(&owner, NOW), Some(&key(2)));
        let req = SignedRequest::decode(&bytes).unwrap();
        assert_eq!(
            req.authenticate(NOW, DEFAULT_AUTH_WINDOW_MS),
            Err(RequestError::BadSignature)
        );
    }

    #[test]
    fn stale_timestamp_is_refused_in_both_directions() {
        let owner = key(1);
        for ts in [Timestamp(NOW.0 - 60_001), NOW.plus_millis(60_001)] {
            let bytes = encode(&retrieve(&owner, ts), Some(&owner));
            let req = SignedRequest::decode(&bytes).unwrap();
            assert_eq!(
                req.authenticate(NOW, DEFAULT_AUTH_WINDOW_MS),
                Err(RequestError::StaleTimestamp)
            );
        }
    }

    #[test]
    fn replayed_retrieve_outside_the_window_is_refused() {
        let owner = key(1);
        let bytes = encode(&retrieve(&owner, NOW), Some(&owner));
        let replay = SignedRequest::decode(&bytes).unwrap();
        assert_eq!(replay.authenticate(NOW, DEFAULT_AUTH_WINDOW_MS), Ok(()));
        let later = NOW.plus_millis(DEFAULT_AUTH_WINDOW_MS + 1);
        assert_eq!(
            replay.authenticate(later, DEFAULT_AUTH_WINDOW_MS),
            Err(RequestError::StaleTimestamp)
        );
    }

    #[test]
    fn every_tampered_parameter_byte_breaks_the_signature() {
        let owner = key(1);
        let bytes = encode(&retrieve(&owner, NOW), Some(&owner));
        // Skip version and method (they fail decoding) and the timestamp (it fails the
        // window first); every other signed byte must fail the signature.
        let ts_at = 2 + 32 + 2;
        for i in 2..bytes.len() - SIGNATURE_LEN {
            if (ts_at..ts_at + 8).contains(&i) {
                continue;
            }
            let mut t = bytes.clone();
            t[i] ^= 0x01;
            let outcome =
                SignedRequest::decode(&t).and_then(|r| r.authenticate(NOW, DEFAULT_AUTH_WINDOW_MS));
            assert!(
                matches!(
                    outcome,
                    Err(RequestError::BadSignature | RequestError::BadLimit)
                ),
                "byte {i}: {outcome:?}"
            );
        }
    }

    #[test]
    fn unsigned_store_to_owner_only_namespace_is_refused() {
        let owner = key(1);
        let store = Request::Store(StoreRequest {
            recipient: owner.recipient_id(),
            namespace: Namespace(Namespace::FIRST_OWNER_ONLY),
            timestamp: NOW,
            ttl_ms: 1000,
            pow_nonce: 0,
            body: b"secret config",
        });
        let mut buf = [0u8; 256];
        assert_eq!(
            store.encode(None, &mut buf),
            Err(RequestError::SignatureRequired)
        );
        // A sender that strips the signature off a signed store is refused the same way.
        let signed = encode(&store, Some(&owner));
        let stripped = &signed[..signed.len() - SIGNATURE_LEN];
        assert_eq!(
            SignedRequest::decode(stripped),
            Err(RequestError::SignatureRequired)
        );
        let ok = SignedRequest::decode(&signed).unwrap();
        assert_eq!(ok.authenticate(NOW, DEFAULT_AUTH_WINDOW_MS), Ok(()));
    }

    #[test]
    fn unsigned_store_to_direct_namespace_is_accepted() {
        let store = Request::Store(StoreRequest {
            recipient: key(1).recipient_id(),
            namespace: Namespace::DIRECT,
            timestamp: NOW,
            ttl_ms: 1000,
            pow_nonce: 0,
            body: b"hi",
        });
        let bytes = encode(&store, None);
        let req = SignedRequest::decode(&bytes).unwrap();
        assert_eq!(req.authenticate(NOW, DEFAULT_AUTH_WINDOW_MS), Ok(()));
        // An appended "signature" on an unsigned request is trailing garbage.
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0u8; SIGNATURE_LEN]);
        assert_eq!(SignedRequest::decode(&padded), Err(RequestError::Malformed));
    }

    #[test]
    fn proof_of_work_is_checked() {
        let mut store = StoreRequest {
            recipient: key(1).recipient_id(),
            namespace: Namespace::DIRECT,
            timestamp: NOW,
            ttl_ms: 1000,
            pow_nonce: 0,
            body: b"work",
        };
        assert!(pow_satisfied(&store, 0));
        let nonce = solve_pow(&store, 8, 1 << 16).expect("8 bits within 65k tries");
        store.pow_nonce = nonce;
        assert!(pow_satisfied(&store, 8));
        // The proof is bound to the body (fixed inputs: this nonce does not carry over).
        store.body = b"other";
        assert!(!pow_satisfied(&store, 8));
    }

    #[test]
    fn acknowledgement_with_fewer_than_w_valid_receipts_is_rejected() {
        let recipient = key(9).recipient_id();
        let hash = MessageHash([7; 32]);
        let expiry = NOW.plus_millis(1000);
        let members: Vec<IdentityKey> = (10..13).map(key).collect();
        let swarm: Vec<NodeId> = members.iter().map(IdentityKey::node_id).collect();
        let outsider = key(50);
        let good = |k: &IdentityKey| Receipt::sign(k, &hash, &recipient, expiry);
        let mut forged = good(&members[1]);
        forged.signature[0] ^= 1;
        // (receipts, valid, outsiders, duplicates, bad signatures)
        let cases: [(Vec<Receipt>, usize, usize, usize, usize); 5] = [
            (vec![good(&members[0]), good(&members[1])], 2, 0, 0, 0),
            (vec![good(&members[0])], 1, 0, 0, 0),
            (vec![good(&members[0]), good(&members[0])], 1, 0, 1, 0),
            (vec![good(&members[0]), good(&outsider)], 1, 1, 0, 0),
            (vec![good(&members[0]), forged], 1, 0, 0, 1),
        ];
        let window = expiry..=expiry;
        for (receipts, valid, outsiders, duplicates, bad_signatures) in cases {
            let ack = StoreAck {
                hash,
                expiry,
                receipts,
            };
            let outcome = ack.verify_quorum(&hash, &recipient, &swarm, 2, window.clone());
            if valid >= 2 {
                assert_eq!(outcome, Ok(()));
            } else {
                assert_eq!(
                    outcome,
                    Err(AckError::TooFewReceipts {
                        valid,
                        required: 2,
                        outsiders,
                        outsider: (outsiders > 0).then(|| outsider.node_id()),
                        duplicates,
                        bad_signatures,
                    })
                );
            }
        }
        let ack = StoreAck {
            hash,
            expiry,
            receipts: vec![good(&members[0]), good(&members[1])],
        };
        assert_eq!(
            ack.verify_quorum(&MessageHash([8; 32]), &recipient, &swarm, 2, window.clone()),
            Err(AckError::WrongMessage)
        );
        // Valid receipts over an expiry shorter than asked for still fail.
        let asked = expiry.plus_millis(3_600_000)..=expiry.plus_millis(3_700_000);
        assert_eq!(
            ack.verify_quorum(&hash, &recipient, &swarm, 2, asked.clone()),
            Err(AckError::ExpiryMismatch {
                acknowledged: expiry,
                earliest: *asked.start(),
                latest: *asked.end(),
            })
        );
    }

    #[test]
    fn requested_expiry_spans_both_clocks_and_every_retry() {
        let r = requested_expiry(NOW, NOW.plus_millis(5_000), 1_000_000, 60_000);
        assert_eq!(*r.start(), Timestamp(NOW.0 - 60_000 + 1_000_000));
        assert_eq!(*r.end(), NOW.plus_millis(5_000 + 1_000_000 + 60_000));
    }

    fn descriptor(seed: u8) -> Descriptor {
        let mut rng = ChaCha20Rng::seed_from_u64(u64::from(seed));
        let id = key(seed);
        let onion = OnionKey::generate(Epoch(1), &mut rng);
        Descriptor::sign(
            &id,
            &onion,
            crate::TlsKeyHash([0x77; 32]),
            Address::new("127.0.0.1:9000").unwrap(),
            NOW,
        )
    }

    #[test]
    fn every_response_round_trips() {
        let responses = [
            Response::Stored(StoreAck {
                hash: MessageHash([1; 32]),
                expiry: NOW,
                receipts: vec![Receipt::sign(
                    &key(3),
                    &MessageHash([1; 32]),
                    &key(4).recipient_id(),
                    NOW,
                )],
            }),
            Response::Messages {
                messages: vec![MessageView {
                    seq: 3,
                    hash: MessageHash([2; 32]),
                    stored_at: NOW,
                    expiry: NOW.plus_millis(5),
                    body: b"body".to_vec(),
                }],
                more: true,
            },
            Response::Deleted { count: 4 },
            Response::ExpiryUpdated { count: 2 },
            Response::Swarm {
                members: vec![descriptor(1), descriptor(2)],
            },
            Response::Info {
                version: 2,
                node_time: NOW,
                node: NodeId([5; 32]),
                pow_difficulty: 12,
            },
            Response::Redirect {
                swarm: vec![descriptor(3)],
            },
            Response::Refused(RequestError::NodeFull),
            Response::Refused(RequestError::QuorumNotReached),
        ];
        for r in responses {
            let mut out = Vec::new();
            r.encode(&mut out);
            assert_eq!(Response::decode(&out), Ok(r.clone()), "{r:?}");
            out.push(0);
            assert!(
                Response::decode(&out).is_err(),
                "trailing byte accepted for {r:?}"
            );
        }
    }

    #[test]
    fn every_error_code_is_distinct_and_round_trips() {
        let all = [
            RequestError::Malformed,
            RequestError::UnsupportedVersion,
            RequestError::UnknownMethod,
            RequestError::BadSignature,
            RequestError::StaleTimestamp,
            RequestError::SignatureRequired,
            RequestError::BadLimit,
            RequestError::TooManyHashes,
            RequestError::TtlTooLong,
            RequestError::BodyTooLarge,
            RequestError::QuotaExceeded,
            RequestError::NodeFull,
            RequestError::RateLimited,
            RequestError::InsufficientPow,
            RequestError::QuorumNotReached,
            RequestError::Unavailable,
            RequestError::AlreadyApplied,
            RequestError::Deleted,
        ];
        for e in all {
            assert_eq!(RequestError::from_code(e.code()), Some(e));
            assert!(e.code() > STATUS_REDIRECT);
        }
    }

    fn arb_request_bytes() -> impl Strategy<Value = (u8, Vec<u8>, u64, u16, u16, Vec<u8>)> {
        (
            1u8..=6,
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<u64>(),
            1u16..=MAX_RETRIEVE_LIMIT,
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 0..=MAX_HASHES * 32),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn every_request_round_trips((method, body, n, limit, ns, hashes) in arb_request_bytes()) {
            let owner = key(1);
            let hashes = &hashes[..hashes.len() / 32 * 32];
            let hash_list = HashList::from_bytes(hashes).expect("multiple of 32, at most MAX");
            let recipient = owner.recipient_id();
            let namespace = Namespace(ns);
            let ts = Timestamp(n);
            let req = match method {
                1 => Request::Store(StoreRequest { recipient, namespace, timestamp: ts, ttl_ms: n / 2, pow_nonce: n ^ 1, body: &body }),
                2 => Request::Retrieve(RetrieveRequest { recipient, namespace, timestamp: ts, after: n, limit }),
                3 => Request::Delete(DeleteRequest { recipient, namespace, timestamp: ts, selector: match n % 3 {
                    0 => DeleteSelector::Hashes(hash_list),
                    1 => DeleteSelector::All,
                    _ => DeleteSelector::Before(Timestamp(n / 3)),
                }}),
                4 => Request::UpdateExpiry(UpdateExpiryRequest { recipient, namespace, timestamp: ts, hashes: hash_list, expiry: Timestamp(n / 5) }),
                5 => Request::SwarmLookup { recipient },
                _ => Request::Info,
            };
            let bytes = encode(&req, Some(&owner));
            let back = SignedRequest::decode(&bytes).expect("own encoding decodes");
            prop_assert_eq!(back.request, req);
            if req.timestamp().is_some() {
                prop_assert_eq!(back.authenticate(ts, 0), Ok(()));
            }
            for cut in [0, 1, bytes.len() / 2, bytes.len().saturating_sub(1)] {
                if cut < bytes.len() {
                    prop_assert!(SignedRequest::decode(&bytes[..cut]).is_err());
                }
            }
        }
    }
}
