//! Node-to-node messages: replication, anti-entropy, directory gossip and probes.
//!
//! This module owns the peer codec and the envelope that authenticates a request by its
//! sender's identity key. It never decides what to do with a message (the node does) and
//! never touches the network. Invariants: decoding never panics; a [`PeerRequest`] is only
//! handed out after its envelope signature verified; message integrity never depends on
//! trusting the sender, because a [`WireMessage`] is content-addressed (the receiver
//! recomputes its hash). Layouts: `docs/PROTOCOL.md`, section 8.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

use crate::keys::{IdentityKey, MAX_DESCRIPTOR_LEN, UnverifiedDescriptor, verify_signature};
use crate::request::{Origin, Receipt, SIGNATURE_LEN};
use crate::types::{MessageHash, Namespace, NodeId, RecipientId, Timestamp, TlsKeyHash};
use crate::wire::{Reader, WireError};

/// Version byte opening every peer request: the protocol version.
pub const PEER_VERSION: u8 = 2;
/// Highest version byte answered as `unsupported_version` rather than `malformed`.
const MAX_PLAUSIBLE_VERSION: u8 = 15;
/// Version, kind, sender, time and signature: the shortest envelope of this version.
const MIN_ENVELOPE_LEN: usize = 1 + 1 + 32 + 8 + SIGNATURE_LEN;
/// Signing context of peer envelopes.
pub const PEER_SIGNING_CONTEXT: &[u8] = b"ghostnodes/v1/peer";
/// Anti-entropy digest buckets (by the first byte of a message hash).
pub const DIGEST_BUCKETS: usize = 256;
/// Most messages in one replicate or fetch exchange.
pub const MAX_BATCH: usize = 256;
/// Most hashes in one digest reply or fetch request.
pub const MAX_HASH_LIST: usize = 4096;
/// Most differing buckets one digest-diff answer reads (1/16 of the store at most).
pub const MAX_DIFF_BUCKETS: usize = 16;
/// Most descriptors in one gossip exchange.
pub const MAX_GOSSIP: usize = 64;
/// Kind byte of a gossip envelope: a stranger may send it (how a node introduces itself).
pub(crate) const KIND_GOSSIP: u8 = 4;
/// Kind byte of a probe: a stranger may send it too (a candidate proves itself to its
/// prober, and probes its prober in turn).
pub(crate) const KIND_PROBE: u8 = 5;
/// Kind byte of a tombstones envelope.
const KIND_TOMBSTONES: u8 = 7;
/// Set in the kind byte of an envelope authenticated by its TLS session instead of a
/// signature: it carries none, and counts only on a connection whose client certificate
/// is the key the sender's descriptor names (docs/PROTOCOL.md section 8).
pub const KIND_SESSION: u8 = 0x80;
/// Version, kind, sender and time: the header every envelope opens with.
const HEADER_LEN: usize = 1 + 1 + 32 + 8;
/// Longest owner's delete a tombstones envelope carries: a request fits one packet.
pub const MAX_EVIDENCE: usize = crate::packet::MAX_PAYLOAD;
/// Length of a probe's nonce.
pub const PROBE_NONCE_LEN: usize = 16;
/// Signing context of a probe answer.
pub const PROBE_SIGNING_CONTEXT: &[u8] = b"ghostnodes/v1/probe";

fn probe_message(nonce: &[u8; PROBE_NONCE_LEN], prober: &NodeId) -> [u8; PROBE_NONCE_LEN + 32] {
    let mut m = [0u8; PROBE_NONCE_LEN + 32];
    m[..PROBE_NONCE_LEN].copy_from_slice(nonce);
    m[PROBE_NONCE_LEN..].copy_from_slice(prober.as_bytes());
    m
}

/// The probed node's proof that it holds its identity key and answered at its address:
/// its signature over `nonce ‖ prober id`.
#[must_use]
pub fn prove_alive(
    identity: &IdentityKey,
    nonce: &[u8; PROBE_NONCE_LEN],
    prober: &NodeId,
) -> [u8; SIGNATURE_LEN] {
    identity.sign(PROBE_SIGNING_CONTEXT, &probe_message(nonce, prober))
}

/// Whether `signature` is `probed`'s answer to the probe `nonce` sent by `prober`.
#[must_use]
pub fn verify_alive(
    probed: &NodeId,
    nonce: &[u8; PROBE_NONCE_LEN],
    prober: &NodeId,
    signature: &[u8; SIGNATURE_LEN],
) -> bool {
    verify_signature(
        probed.as_bytes(),
        PROBE_SIGNING_CONTEXT,
        &probe_message(nonce, prober),
        signature,
    )
}

/// A stored message as it travels between swarm members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireMessage {
    /// Whose message.
    pub recipient: RecipientId,
    /// Its namespace.
    pub namespace: Namespace,
    /// When the swarm first stored it.
    pub stored_at: Timestamp,
    /// When it expires.
    pub expiry: Timestamp,
    /// The message.
    pub body: Vec<u8>,
    /// The client's store request that vouches for it; the receiver checks it as it
    /// would check the request itself.
    pub origin: Origin,
}

impl WireMessage {
    /// The message's content address: `SHA-256(recipient ‖ namespace ‖ body)`.
    #[must_use]
    pub fn hash(&self) -> MessageHash {
        crate::store::message_hash(&self.recipient, self.namespace, &self.body)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.recipient.as_bytes());
        out.extend_from_slice(&self.namespace.0.to_be_bytes());
        out.extend_from_slice(&self.stored_at.0.to_be_bytes());
        out.extend_from_slice(&self.expiry.0.to_be_bytes());
        let len = u16::try_from(self.body.len()).expect("message bodies are below 64 KiB");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.body);
        out.extend_from_slice(&self.origin.timestamp.0.to_be_bytes());
        out.extend_from_slice(&self.origin.ttl_ms.to_be_bytes());
        out.extend_from_slice(&self.origin.pow_nonce.to_be_bytes());
        // Present exactly for owner-only namespaces, as in the store request; zeros stand
        // in for a missing one, which the receiver then refuses.
        if self.namespace.requires_owner_signature() {
            out.extend_from_slice(&self.origin.signature.unwrap_or([0; SIGNATURE_LEN]));
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let recipient = RecipientId(r.array()?);
        let namespace = Namespace(r.u16()?);
        let stored_at = Timestamp(r.u64()?);
        let expiry = Timestamp(r.u64()?);
        let body = r.bytes16()?.to_vec();
        let origin = Origin {
            timestamp: Timestamp(r.u64()?),
            ttl_ms: r.u64()?,
            pow_nonce: r.u64()?,
            signature: if namespace.requires_owner_signature() {
                Some(r.array()?)
            } else {
                None
            },
        };
        Ok(Self {
            recipient,
            namespace,
            stored_at,
            expiry,
            body,
            origin,
        })
    }
}

/// One anti-entropy bucket: how many messages, and the XOR of their hashes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DigestBucket {
    /// Messages in the bucket.
    pub count: u32,
    /// XOR of their hashes: order-independent, updated in O(1) per message.
    pub xor: [u8; 32],
}

impl DigestBucket {
    /// Adds (or, applied twice, removes) a hash.
    pub fn toggle(&mut self, hash: &MessageHash, add: bool) {
        for (x, h) in self.xor.iter_mut().zip(hash.as_bytes()) {
            *x ^= h;
        }
        self.count = if add {
            self.count.saturating_add(1)
        } else {
            self.count.saturating_sub(1)
        };
    }
}

/// A summary of the messages two swarm members should both hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digest {
    /// One bucket per value of a hash's first byte.
    pub buckets: Vec<DigestBucket>,
}

impl Default for Digest {
    fn default() -> Self {
        Self {
            buckets: alloc::vec![DigestBucket::default(); DIGEST_BUCKETS],
        }
    }
}

impl Digest {
    /// Adds a message hash to its bucket.
    pub fn add(&mut self, hash: &MessageHash) {
        self.buckets[usize::from(hash.0[0])].toggle(hash, true);
    }

    /// Removes a message hash that was added.
    pub fn remove(&mut self, hash: &MessageHash) {
        self.buckets[usize::from(hash.0[0])].toggle(hash, false);
    }

    /// Bucket indexes where `self` and `other` differ.
    #[must_use]
    pub fn differing(&self, other: &Digest) -> Vec<u8> {
        (0..=u8::MAX)
            .filter(|&i| self.buckets.get(usize::from(i)) != other.buckets.get(usize::from(i)))
            .collect()
    }
}

/// What one node asks of another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerRequest {
    /// Store these messages (the sender is a swarm member); answer with receipts once durable.
    Replicate(Vec<WireMessage>),
    /// Compare this digest of the messages we should both hold; list the differing
    /// buckets from bucket `start` on (cyclically) as far as one answer's bounds allow.
    Digest {
        /// The sender's digest.
        digest: Digest,
        /// The bucket to start listing from: the sender varies it from round to round, so
        /// buckets that cannot converge (a copy the receiver refuses) never starve the
        /// rest.
        start: u8,
    },
    /// Send me these messages.
    Fetch(Vec<MessageHash>),
    /// Here are descriptors I know (my own first); send me some of yours. The receiver
    /// verifies each one it does not already hold.
    Gossip(Vec<UnverifiedDescriptor>),
    /// Are you alive at this address? Answer with your descriptor and your signature
    /// over the nonce ([`PeerResponse::Alive`]).
    Probe {
        /// Fresh for each probe: the answer's signature covers it, so an answer cannot be
        /// replayed or made by anyone but the probed identity.
        nonce: [u8; PROBE_NONCE_LEN],
    },
    /// A recipient-signed delete or expiry update, relayed as the client sent it, so the
    /// receiver verifies the recipient's signature itself.
    Relay(Vec<u8>),
    /// Messages the receiver holds and the sender's owners deleted: each hash with the
    /// owner's signed delete that covers it, as signed. The receiver verifies the owner's
    /// signature and that the delete reaches its copy, whatever the delete's age (anti-
    /// entropy: a member that missed a delete learns it from one that applied it).
    Tombstones(Vec<(MessageHash, Vec<u8>)>),
}

impl PeerRequest {
    fn kind(&self) -> u8 {
        match self {
            Self::Replicate(_) => 1,
            Self::Digest { .. } => 2,
            Self::Fetch(_) => 3,
            Self::Gossip(_) => KIND_GOSSIP,
            Self::Probe { .. } => KIND_PROBE,
            Self::Relay(_) => 6,
            Self::Tombstones(_) => KIND_TOMBSTONES,
        }
    }

    /// A stable name, for metrics.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Self::Replicate(_) => "replicate",
            Self::Digest { .. } => "digest",
            Self::Fetch(_) => "fetch",
            Self::Gossip(_) => "gossip",
            Self::Probe { .. } => "probe",
            Self::Relay(_) => "relay",
            Self::Tombstones(_) => "tombstones",
        }
    }

    /// Whether this kind may travel authenticated by its TLS session alone: every kind
    /// but gossip and probes, which strangers send (a node not yet in the receiver's
    /// directory has no descriptor there to bind its session key to).
    #[must_use]
    pub fn session_authenticated_allowed(&self) -> bool {
        !matches!(self, Self::Gossip(_) | Self::Probe { .. })
    }

    /// Encodes and signs the request as `sender` at `now`.
    #[must_use]
    pub fn encode_signed(&self, sender: &IdentityKey, now: Timestamp) -> Vec<u8> {
        let mut out = self.encode_unsigned(sender.node_id(), self.kind(), now);
        let sig = sender.sign(PEER_SIGNING_CONTEXT, &out);
        out.extend_from_slice(&sig);
        out
    }

    /// Encodes the request from `sender` at `now` without a signature, for a TLS link on
    /// which `sender` presented the certificate its descriptor names. `None` for gossip
    /// and probes, which always carry a signature.
    #[must_use]
    pub fn encode_session(&self, sender: NodeId, now: Timestamp) -> Option<Vec<u8>> {
        self.session_authenticated_allowed()
            .then(|| self.encode_unsigned(sender, self.kind() | KIND_SESSION, now))
    }

    fn encode_unsigned(&self, sender: NodeId, kind: u8, now: Timestamp) -> Vec<u8> {
        let mut out = Vec::new();
        out.push(PEER_VERSION);
        out.push(kind);
        out.extend_from_slice(sender.as_bytes());
        out.extend_from_slice(&now.0.to_be_bytes());
        match self {
            Self::Replicate(ms) => {
                put_count(&mut out, ms.len());
                for m in ms {
                    m.encode(&mut out);
                }
            }
            Self::Digest { digest, start } => {
                for b in &digest.buckets {
                    out.extend_from_slice(&b.count.to_be_bytes());
                    out.extend_from_slice(&b.xor);
                }
                out.push(*start);
            }
            Self::Fetch(hashes) => put_hashes(&mut out, hashes),
            Self::Gossip(ds) => put_descriptors(&mut out, ds),
            Self::Probe { nonce } => out.extend_from_slice(nonce),
            Self::Relay(bytes) => {
                put_count(&mut out, bytes.len());
                out.extend_from_slice(bytes);
            }
            Self::Tombstones(entries) => {
                put_count(&mut out, entries.len().min(MAX_BATCH));
                for (hash, evidence) in entries.iter().take(MAX_BATCH) {
                    out.extend_from_slice(hash.as_bytes());
                    put_count(&mut out, evidence.len());
                    out.extend_from_slice(evidence);
                }
            }
        }
        out
    }
}

/// A peer request whose envelope signature verified, or whose TLS session is its
/// sender's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated {
    /// Who sent it.
    pub sender: NodeId,
    /// When the sender says it sent it.
    pub sent_at: Timestamp,
    /// What it asks.
    pub request: PeerRequest,
}

/// Why a peer request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerError {
    /// Not a peer request of this version.
    Malformed,
    /// The sender's signature does not verify.
    BadSignature,
    /// The envelope's time is outside the accepted window.
    StaleTimestamp,
    /// The sender is not a node this node knows.
    UnknownSender,
    /// The sender is not a swarm member for what it asks.
    NotInSwarm,
    /// This node cannot serve now.
    Unavailable,
    /// The source address sent more than its budget.
    RateLimited,
    /// An envelope of another protocol version than [`PEER_VERSION`].
    UnsupportedVersion,
}

impl PeerError {
    /// A stable name, for metrics and JSON errors.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::StaleTimestamp => "stale_timestamp",
            Self::UnknownSender => "unknown_sender",
            Self::NotInSwarm => "not_in_swarm",
            Self::Unavailable => "unavailable",
            Self::RateLimited => "rate_limited",
            Self::UnsupportedVersion => "unsupported_version",
        }
    }
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed peer request",
            Self::BadSignature => "peer signature does not verify",
            Self::StaleTimestamp => "peer request timestamp outside the accepted window",
            Self::UnknownSender => "peer is not a known node",
            Self::NotInSwarm => "peer is not a swarm member for this request",
            Self::Unavailable => "node unavailable",
            Self::RateLimited => "too many peer requests from this address",
            Self::UnsupportedVersion => {
                "peer envelope of another protocol version (this node speaks version 2)"
            }
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for PeerError {}

/// Why a member did not store a copy a peer sent it (replication or anti-entropy). The
/// same rules as a client's store apply, plus who may send what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CopyRefusal {
    /// The sender is not in the message's swarm by the receiver's ring.
    SenderNotInSwarm,
    /// The receiver is not in the message's swarm by its own ring.
    NotInSwarm,
    /// An anti-entropy answer carried a message the receiver did not ask for.
    Unrequested,
    /// An owner-only message without a valid owner signature (or a signature where none
    /// belongs).
    BadSignature,
    /// The proof of work is below the receiver's difficulty.
    InsufficientPow,
    /// The TTL is above the receiver's maximum, or the expiry too far ahead.
    TtlTooLong,
    /// `stored_at` does not follow from the request's time, or lies in the future.
    InconsistentTimes,
    /// The body is above the receiver's maximum.
    BodyTooLarge,
    /// Already expired.
    Expired,
    /// The recipient's quota is full.
    QuotaExceeded,
    /// The node is full.
    NodeFull,
    /// The receiver's storage failed.
    Unavailable,
    /// The owner deleted this message (the receiver holds its tombstone).
    Deleted,
}

impl CopyRefusal {
    /// Every refusal, in wire-code order (code = index + 1).
    pub const ALL: [Self; 13] = [
        Self::SenderNotInSwarm,
        Self::NotInSwarm,
        Self::Unrequested,
        Self::BadSignature,
        Self::InsufficientPow,
        Self::TtlTooLong,
        Self::InconsistentTimes,
        Self::BodyTooLarge,
        Self::Expired,
        Self::QuotaExceeded,
        Self::NodeFull,
        Self::Unavailable,
        Self::Deleted,
    ];

    /// Its index in [`CopyRefusal::ALL`] (metrics arrays).
    #[must_use]
    pub fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|r| *r == self)
            .expect("ALL lists every refusal")
    }

    /// The wire code.
    #[must_use]
    pub fn code(self) -> u8 {
        // ALL has 13 entries.
        self.index() as u8 + 1
    }

    /// The refusal of a wire code.
    #[must_use]
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }

    /// A stable name, for metrics.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::SenderNotInSwarm => "sender_not_in_swarm",
            Self::NotInSwarm => "not_in_swarm",
            Self::Unrequested => "unrequested",
            Self::BadSignature => "bad_signature",
            Self::InsufficientPow => "insufficient_pow",
            Self::TtlTooLong => "ttl_too_long",
            Self::InconsistentTimes => "inconsistent_times",
            Self::BodyTooLarge => "body_too_large",
            Self::Expired => "expired",
            Self::QuotaExceeded => "quota_exceeded",
            Self::NodeFull => "node_full",
            Self::Unavailable => "unavailable",
            Self::Deleted => "deleted",
        }
    }
}

impl From<WireError> for PeerError {
    fn from(_: WireError) -> Self {
        Self::Malformed
    }
}

/// The sender an envelope names, read without decoding or verifying anything else (for
/// choosing a rate-limit budget before any work is spent on it).
#[must_use]
pub fn claimed_sender(bytes: &[u8]) -> Option<NodeId> {
    bytes.get(2..34)?.try_into().ok().map(NodeId)
}

/// How the connection a peer request arrived on is authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Session {
    /// No client certificate (plain HTTP, or TLS without one): only signed envelopes.
    None,
    /// A TLS session whose client certificate carries the key with this hash.
    Tls(TlsKeyHash),
}

/// Decodes a peer request and authenticates its envelope: a timestamp within `window_ms`
/// of `now`, a sender the caller `knows` (asked for every kind but gossip and probes,
/// which is how a new node becomes known), and either the claimed sender's signature or,
/// for an envelope marked [`KIND_SESSION`], a `session` whose client key is the one
/// `pinned_key` (the sender's descriptor) names. The cheap checks come first, so a
/// stranger's or a stale envelope never costs a signature verification.
pub fn decode_request(
    bytes: &[u8],
    now: Timestamp,
    window_ms: u64,
    session: Session,
    knows: impl FnOnce(&NodeId) -> Option<TlsKeyHash>,
) -> Result<Authenticated, PeerError> {
    let session_kind = bytes.get(1).is_some_and(|k| k & KIND_SESSION != 0);
    let signed_len = if session_kind {
        bytes.len()
    } else {
        bytes
            .len()
            .checked_sub(SIGNATURE_LEN)
            .ok_or(PeerError::Malformed)?
    };
    if signed_len < HEADER_LEN {
        return Err(PeerError::Malformed);
    }
    let (signed, sig) = bytes.split_at(signed_len);
    let mut r = Reader::new(signed);
    match r.u8()? {
        PEER_VERSION => {}
        // Another version (a small number in an envelope at least as long as this
        // version's shortest) is named as such; anything else is noise.
        1..=MAX_PLAUSIBLE_VERSION if bytes.len() >= MIN_ENVELOPE_LEN => {
            return Err(PeerError::UnsupportedVersion);
        }
        _ => return Err(PeerError::Malformed),
    }
    let kind = r.u8()? & !KIND_SESSION;
    let sender = NodeId(r.array()?);
    let sent_at = Timestamp(r.u64()?);
    if sent_at.0.abs_diff(now.0) > window_ms {
        return Err(PeerError::StaleTimestamp);
    }
    let stranger_kind = kind == KIND_GOSSIP || kind == KIND_PROBE;
    if session_kind && stranger_kind {
        return Err(PeerError::Malformed);
    }
    let pinned_key = if stranger_kind {
        None
    } else {
        Some(knows(&sender).ok_or(PeerError::UnknownSender)?)
    };
    // Checked before decoding the body: a session that is not the sender's costs nothing
    // more.
    if session_kind {
        match (pinned_key, session) {
            (Some(pinned), Session::Tls(presented)) if pinned == presented => {}
            _ => return Err(PeerError::BadSignature),
        }
    }
    let request = match kind {
        1 => {
            let n = read_count(&mut r, MAX_BATCH)?;
            let mut ms = Vec::with_capacity(n);
            for _ in 0..n {
                ms.push(WireMessage::decode(&mut r)?);
            }
            PeerRequest::Replicate(ms)
        }
        2 => {
            let mut digest = Digest::default();
            for b in &mut digest.buckets {
                b.count = r.u32()?;
                b.xor = r.array()?;
            }
            PeerRequest::Digest {
                digest,
                start: r.u8()?,
            }
        }
        3 => PeerRequest::Fetch(read_hashes(&mut r)?),
        KIND_GOSSIP => PeerRequest::Gossip(read_descriptors(&mut r)?),
        KIND_PROBE => PeerRequest::Probe { nonce: r.array()? },
        6 => {
            let n = read_count(&mut r, usize::from(u16::MAX))?;
            PeerRequest::Relay(r.take(n)?.to_vec())
        }
        KIND_TOMBSTONES => {
            let n = read_count(&mut r, MAX_BATCH)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let hash = MessageHash(r.array()?);
                let len = read_count(&mut r, MAX_EVIDENCE)?;
                entries.push((hash, r.take(len)?.to_vec()));
            }
            PeerRequest::Tombstones(entries)
        }
        _ => return Err(PeerError::Malformed),
    };
    r.finish()?;
    if !session_kind {
        let sig: [u8; SIGNATURE_LEN] = crate::keys::fixed(sig);
        if !verify_signature(sender.as_bytes(), PEER_SIGNING_CONTEXT, signed, &sig) {
            return Err(PeerError::BadSignature);
        }
    }
    Ok(Authenticated {
        sender,
        sent_at,
        request,
    })
}

/// What a node answers to a peer request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerResponse {
    /// The answer to a replicate: receipts for the messages now durable here, and the
    /// reason for each message not stored.
    Stored {
        /// (hash, receipt) for each stored message.
        receipts: Vec<(MessageHash, Receipt)>,
        /// (hash, reason) for each refused one.
        refused: Vec<(MessageHash, CopyRefusal)>,
    },
    /// The hashes this node holds in some of the buckets where the digests differ, plus
    /// its own digest. At most [`MAX_DIFF_BUCKETS`] buckets are read per answer, so a
    /// digest that differs everywhere never costs a whole-store scan.
    DigestDiff {
        /// The responder's digest of the shared set.
        digest: Digest,
        /// Hashes held in the `covered` buckets (or, when one bucket alone holds more
        /// than [`MAX_HASH_LIST`], the first of them).
        hashes: Vec<MessageHash>,
        /// Whether differing buckets were left out, or a bucket's list was cut.
        truncated: bool,
        /// The differing buckets whose hashes are all listed: only for those may the
        /// asker conclude that a message it holds and the list lacks is missing there.
        covered: Vec<u8>,
    },
    /// The requested messages this node has.
    Messages(Vec<WireMessage>),
    /// Descriptors this node knows (unverified until the receiver checks them).
    Descriptors(Vec<UnverifiedDescriptor>),
    /// The relayed request was applied to this many messages.
    Applied(u32),
    /// The answer to a probe: the node's descriptor and its signature over the probe's
    /// nonce and the prober's ID ([`prove_alive`]).
    Alive {
        /// The answering node's current descriptor (boxed: the other answers are small).
        descriptor: Box<UnverifiedDescriptor>,
        /// Its identity's signature.
        signature: [u8; SIGNATURE_LEN],
    },
    /// Refused.
    Refused(PeerError),
}

impl PeerResponse {
    /// Encodes the response.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Self::Stored { receipts, refused } => {
                out.push(1);
                put_count(&mut out, receipts.len());
                for (h, r) in receipts {
                    out.extend_from_slice(h.as_bytes());
                    out.extend_from_slice(r.node.as_bytes());
                    out.extend_from_slice(&r.signature);
                }
                put_count(&mut out, refused.len());
                for (h, why) in refused {
                    out.extend_from_slice(h.as_bytes());
                    out.push(why.code());
                }
            }
            Self::DigestDiff {
                digest,
                hashes,
                truncated,
                covered,
            } => {
                out.push(2);
                for b in &digest.buckets {
                    out.extend_from_slice(&b.count.to_be_bytes());
                    out.extend_from_slice(&b.xor);
                }
                put_hashes(&mut out, hashes);
                out.push(u8::from(*truncated));
                out.extend_from_slice(&u16::try_from(covered.len()).unwrap_or(0).to_be_bytes());
                out.extend_from_slice(covered);
            }
            Self::Messages(ms) => {
                out.push(3);
                put_count(&mut out, ms.len());
                for m in ms {
                    m.encode(&mut out);
                }
            }
            Self::Descriptors(ds) => {
                out.push(4);
                put_descriptors(&mut out, ds);
            }
            Self::Applied(n) => {
                out.push(5);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Self::Alive {
                descriptor,
                signature,
            } => {
                out.push(6);
                put_descriptors(&mut out, core::slice::from_ref(descriptor));
                out.extend_from_slice(signature);
            }
            Self::Refused(e) => {
                out.push(0);
                out.push(match e {
                    PeerError::Malformed => 1,
                    PeerError::BadSignature => 2,
                    PeerError::StaleTimestamp => 3,
                    PeerError::UnknownSender => 4,
                    PeerError::NotInSwarm => 5,
                    PeerError::Unavailable => 6,
                    PeerError::RateLimited => 7,
                    PeerError::UnsupportedVersion => 8,
                });
            }
        }
        out
    }

    /// Decodes a response.
    pub fn decode(bytes: &[u8]) -> Result<Self, PeerError> {
        let mut r = Reader::new(bytes);
        let out = match r.u8()? {
            0 => Self::Refused(match r.u8()? {
                1 => PeerError::Malformed,
                2 => PeerError::BadSignature,
                3 => PeerError::StaleTimestamp,
                4 => PeerError::UnknownSender,
                5 => PeerError::NotInSwarm,
                6 => PeerError::Unavailable,
                7 => PeerError::RateLimited,
                8 => PeerError::UnsupportedVersion,
                _ => return Err(PeerError::Malformed),
            }),
            1 => {
                let n = read_count(&mut r, MAX_BATCH)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let h = MessageHash(r.array()?);
                    let node = NodeId(r.array()?);
                    let signature = r.array()?;
                    v.push((h, Receipt { node, signature }));
                }
                let m = read_count(&mut r, MAX_BATCH)?;
                let mut refused = Vec::with_capacity(m);
                for _ in 0..m {
                    let h = MessageHash(r.array()?);
                    let why = CopyRefusal::from_code(r.u8()?).ok_or(PeerError::Malformed)?;
                    refused.push((h, why));
                }
                Self::Stored {
                    receipts: v,
                    refused,
                }
            }
            2 => {
                let mut digest = Digest::default();
                for b in &mut digest.buckets {
                    b.count = r.u32()?;
                    b.xor = r.array()?;
                }
                let hashes = read_hashes(&mut r)?;
                let truncated = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(PeerError::Malformed),
                };
                let n = usize::from(r.u16()?);
                if n > 256 {
                    return Err(PeerError::Malformed);
                }
                let covered = r.take(n)?.to_vec();
                Self::DigestDiff {
                    digest,
                    hashes,
                    truncated,
                    covered,
                }
            }
            3 => {
                let n = read_count(&mut r, MAX_BATCH)?;
                let mut ms = Vec::with_capacity(n);
                for _ in 0..n {
                    ms.push(WireMessage::decode(&mut r)?);
                }
                Self::Messages(ms)
            }
            4 => Self::Descriptors(read_descriptors(&mut r)?),
            5 => Self::Applied(r.u32()?),
            6 => {
                let mut ds = read_descriptors(&mut r)?;
                if ds.len() != 1 {
                    return Err(PeerError::Malformed);
                }
                Self::Alive {
                    descriptor: Box::new(ds.remove(0)),
                    signature: r.array()?,
                }
            }
            _ => return Err(PeerError::Malformed),
        };
        r.finish()?;
        Ok(out)
    }
}

fn put_count(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

fn read_count(r: &mut Reader<'_>, max: usize) -> Result<usize, PeerError> {
    let n = usize::try_from(r.u32()?).map_err(|_| PeerError::Malformed)?;
    if n > max {
        return Err(PeerError::Malformed);
    }
    Ok(n)
}

fn put_hashes(out: &mut Vec<u8>, hashes: &[MessageHash]) {
    put_count(out, hashes.len());
    for h in hashes {
        out.extend_from_slice(h.as_bytes());
    }
}

fn read_hashes(r: &mut Reader<'_>) -> Result<Vec<MessageHash>, PeerError> {
    let n = read_count(r, MAX_HASH_LIST)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(MessageHash(r.array()?));
    }
    Ok(v)
}

fn put_descriptors(out: &mut Vec<u8>, ds: &[UnverifiedDescriptor]) {
    put_count(out, ds.len().min(MAX_GOSSIP));
    for d in ds.iter().take(MAX_GOSSIP) {
        let mut buf = [0u8; MAX_DESCRIPTOR_LEN];
        let n = d
            .encode(&mut buf)
            .expect("MAX_DESCRIPTOR_LEN fits every descriptor");
        out.extend_from_slice(&buf[..n]);
    }
}

fn read_descriptors(r: &mut Reader<'_>) -> Result<Vec<UnverifiedDescriptor>, PeerError> {
    let n = read_count(r, MAX_GOSSIP)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let rest = r.rest();
        let len = UnverifiedDescriptor::encoded_len_at(rest).ok_or(PeerError::Malformed)?;
        let d = UnverifiedDescriptor::decode(rest.get(..len).ok_or(PeerError::Malformed)?)
            .map_err(|_| PeerError::Malformed)?;
        v.push(d);
        *r = Reader::new(&rest[len..]);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Address, Descriptor, OnionKey};
    use crate::types::Epoch;
    use alloc::vec;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const NOW: Timestamp = Timestamp(1_800_000_000_000);
    /// The TLS key hash every known sender's descriptor names in these tests.
    const PIN: TlsKeyHash = TlsKeyHash([0x5a; 32]);

    #[test]
    fn a_session_envelope_counts_only_on_its_senders_session() {
        let sender = IdentityKey::from_seed(&[11; 32]);
        let request = PeerRequest::Replicate(vec![msg(1)]);
        let signed = request.encode_signed(&sender, NOW);
        let bytes = request
            .encode_session(sender.node_id(), NOW)
            .expect("replication may ride a session");
        // The same header and body, with the session bit and without the 64-byte signature.
        assert_eq!(bytes.len() + SIGNATURE_LEN, signed.len());
        assert_eq!(bytes[1], signed[1] | KIND_SESSION);
        assert_eq!(bytes[2..], signed[2..signed.len() - SIGNATURE_LEN]);
        let ok = decode_request(&bytes, NOW, 60_000, Session::Tls(PIN), |_| Some(PIN))
            .expect("the sender's session");
        assert_eq!((ok.sender, ok.request), (sender.node_id(), request.clone()));
        // Another client key, no client key, or a sender not in the directory: refused.
        let other = TlsKeyHash([0x5b; 32]);
        for (session, known) in [(Session::Tls(other), Some(PIN)), (Session::None, Some(PIN))] {
            assert_eq!(
                decode_request(&bytes, NOW, 60_000, session, |_| known),
                Err(PeerError::BadSignature)
            );
        }
        assert_eq!(
            decode_request(&bytes, NOW, 60_000, Session::Tls(PIN), |_| None),
            Err(PeerError::UnknownSender)
        );
        // A signed envelope still counts on any session, or none.
        for session in [Session::Tls(other), Session::None] {
            assert!(decode_request(&signed, NOW, 60_000, session, |_| Some(PIN)).is_ok());
        }
        // The session bit on a signed envelope: the signature is then read as body bytes.
        let mut marked = signed.clone();
        marked[1] |= KIND_SESSION;
        assert!(decode_request(&marked, NOW, 60_000, Session::Tls(PIN), |_| Some(PIN)).is_err());
    }

    #[test]
    fn gossip_and_probes_never_ride_a_session() {
        let sender = IdentityKey::from_seed(&[12; 32]);
        for request in [
            PeerRequest::Gossip(vec![descriptor(12)]),
            PeerRequest::Probe { nonce: [3; 16] },
        ] {
            assert_eq!(request.encode_session(sender.node_id(), NOW), None);
            let mut forged = request.encode_signed(&sender, NOW);
            forged.truncate(forged.len() - SIGNATURE_LEN);
            forged[1] |= KIND_SESSION;
            assert_eq!(
                decode_request(&forged, NOW, 60_000, Session::Tls(PIN), |_| Some(PIN)),
                Err(PeerError::Malformed)
            );
        }
    }

    fn msg(i: u8) -> WireMessage {
        // Every other message is owner-only, so both origin layouts are exercised.
        let owner_only = i.is_multiple_of(2);
        WireMessage {
            recipient: RecipientId([i; 32]),
            namespace: Namespace(u16::from(i) | if owner_only { 0x8000 } else { 0 }),
            stored_at: NOW,
            expiry: NOW.plus_millis(1000),
            body: vec![i; usize::from(i) * 3],
            origin: Origin {
                timestamp: NOW,
                ttl_ms: 1000,
                pow_nonce: u64::from(i),
                signature: owner_only.then_some([i; SIGNATURE_LEN]),
            },
        }
    }

    fn descriptor(seed: u8) -> UnverifiedDescriptor {
        let mut rng = ChaCha20Rng::seed_from_u64(u64::from(seed));
        let onion = OnionKey::generate(Epoch(1), &mut rng);
        Descriptor::sign(
            &IdentityKey::from_seed(&[seed; 32]),
            &onion,
            crate::TlsKeyHash([0x77; 32]),
            Address::new("10.0.0.1:1").unwrap(),
            NOW,
        )
        .into()
    }

    fn every_request() -> Vec<PeerRequest> {
        let mut d = Digest::default();
        d.add(&msg(1).hash());
        vec![
            PeerRequest::Replicate(vec![msg(1), msg(2)]),
            PeerRequest::Digest {
                digest: d,
                start: 77,
            },
            PeerRequest::Fetch(vec![msg(3).hash()]),
            PeerRequest::Gossip(vec![descriptor(1), descriptor(2)]),
            PeerRequest::Probe {
                nonce: [5; PROBE_NONCE_LEN],
            },
            PeerRequest::Relay(vec![1, 2, 3]),
            PeerRequest::Tombstones(vec![
                (msg(4).hash(), vec![4, 5, 6]),
                (msg(5).hash(), vec![]),
            ]),
        ]
    }

    #[test]
    fn signed_requests_round_trip_and_name_their_sender() {
        let key = IdentityKey::from_seed(&[9; 32]);
        for req in every_request() {
            let bytes = req.encode_signed(&key, NOW);
            let got = decode_request(&bytes, NOW, 60_000, Session::None, |_| Some(PIN)).unwrap();
            assert_eq!(got.sender, key.node_id());
            assert_eq!(got.request, req);
        }
    }

    #[test]
    fn tampered_or_stale_envelopes_are_refused() {
        let key = IdentityKey::from_seed(&[9; 32]);
        let bytes = PeerRequest::Fetch(vec![msg(3).hash()]).encode_signed(&key, NOW);
        for i in 0..bytes.len() {
            let mut t = bytes.clone();
            t[i] ^= 1;
            assert!(
                decode_request(&t, NOW, 60_000, Session::None, |_| Some(PIN)).is_err(),
                "flip at {i} accepted"
            );
        }
        assert_eq!(
            decode_request(
                &bytes,
                NOW.plus_millis(60_001),
                60_000,
                Session::None,
                |_| Some(PIN)
            ),
            Err(PeerError::StaleTimestamp)
        );
        assert_eq!(
            decode_request(&bytes[..10], NOW, 60_000, Session::None, |_| Some(PIN)),
            Err(PeerError::Malformed)
        );
    }

    #[test]
    fn strangers_and_stale_envelopes_are_refused_before_the_signature_is_checked() {
        let stranger = IdentityKey::from_seed(&[10; 32]);
        let mut bytes = PeerRequest::Replicate(vec![msg(1)]).encode_signed(&stranger, NOW);
        // A broken signature: only the order of the checks can name the other reasons.
        *bytes.last_mut().unwrap() ^= 1;
        let knows_nobody = |_: &NodeId| None;
        assert_eq!(
            decode_request(&bytes, NOW, 60_000, Session::None, knows_nobody),
            Err(PeerError::UnknownSender)
        );
        assert_eq!(
            decode_request(
                &bytes,
                NOW.plus_millis(60_001),
                60_000,
                Session::None,
                |_| Some(PIN)
            ),
            Err(PeerError::StaleTimestamp)
        );
        assert_eq!(
            decode_request(&bytes, NOW, 60_000, Session::None, |_| Some(PIN)),
            Err(PeerError::BadSignature)
        );
        // Gossip is how a stranger introduces itself: it is verified, not refused.
        let hello = PeerRequest::Gossip(vec![descriptor(10)]).encode_signed(&stranger, NOW);
        let got = decode_request(&hello, NOW, 60_000, Session::None, knows_nobody).unwrap();
        assert_eq!(got.sender, stranger.node_id());
    }

    #[test]
    fn responses_round_trip() {
        let key = IdentityKey::from_seed(&[4; 32]);
        let m = msg(5);
        let receipt = Receipt::sign(&key, &m.hash(), &m.recipient, m.expiry);
        let responses = [
            PeerResponse::Stored {
                receipts: vec![(m.hash(), receipt)],
                refused: CopyRefusal::ALL
                    .iter()
                    .map(|r| (msg(6).hash(), *r))
                    .collect(),
            },
            PeerResponse::DigestDiff {
                digest: Digest::default(),
                hashes: vec![m.hash()],
                truncated: true,
                covered: vec![0, 9, 255],
            },
            PeerResponse::Messages(vec![m.clone(), msg(6), msg(7)]),
            PeerResponse::Descriptors(vec![descriptor(3)]),
            PeerResponse::Applied(3),
            PeerResponse::Alive {
                descriptor: Box::new(descriptor(8)),
                signature: [8; SIGNATURE_LEN],
            },
            PeerResponse::Refused(PeerError::NotInSwarm),
        ];
        for r in responses {
            assert_eq!(PeerResponse::decode(&r.encode()), Ok(r.clone()));
            let mut long = r.encode();
            long.push(0);
            assert!(PeerResponse::decode(&long).is_err());
        }
    }

    #[test]
    fn digest_is_order_independent_and_finds_differences() {
        let (a, b) = (msg(1).hash(), msg(2).hash());
        let mut x = Digest::default();
        x.add(&a);
        x.add(&b);
        let mut y = Digest::default();
        y.add(&b);
        y.add(&a);
        assert_eq!(x, y);
        assert!(x.differing(&y).is_empty());
        let mut z = Digest::default();
        z.add(&a);
        assert_eq!(x.differing(&z), vec![b.0[0]]);
    }
}
