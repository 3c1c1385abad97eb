//! Messages longer than one store: sealed once, cut into fixed-size fragments that are each
//! sealed again, and put back together by the recipient ([`Inbox`]).
//!
//! A message of up to [`sealed::MAX_MESSAGE_IN_ONE_BODY`] bytes travels as one sealed body,
//! as before. A longer one, up to [`MAX_MESSAGE_LEN`], is first [`sealed::seal`]ed whole to
//! the recipient (the *inner* body: one AEAD over the whole message, so nothing can be
//! reordered, dropped or spliced without the recipient noticing), then cut into chunks of
//! [`FRAGMENT_CHUNK_LEN`] bytes. Each chunk, behind a [`FragmentHeader`] (message id, index,
//! count, inner length), is sealed on its own with [`sealed::seal_fragment`] and a fresh
//! ephemeral key, into exactly [`FRAGMENT_BODY_LEN`] bytes: the largest single-body length.
//! Every fragment is one ordinary store, sent along its own 3-hop path.
//!
//! What a swarm member or relay sees of a large message: N stores of the largest bucket for
//! one recipient, each with an unrelated ephemeral key and ciphertext. The header, and so
//! which fragments belong together and in which order, is inside the fragment's own seal;
//! only the timing of the stores and their number (the message's length to within a
//! kilobyte) tell anything. What a member can do: withhold, duplicate or reorder fragments,
//! or hand over fragments of other messages. The [`Inbox`] turns each of those into an
//! [`Received::Incomplete`] or [`Received::Invalid`] report, never into a wrong message.
//! Anyone holding the recipient's contact can seal fragments too, but without the message
//! id (inside other fragments' seals) and the inner key they cannot make one that joins
//! another sender's message: the id is the SHA-256 of the inner body, checked with the inner
//! AEAD before anything is released.
//!
//! Format (`docs/PROTOCOL.md`, section 9.1):
//!
//! ```text
//! inner    = seal(message)                                 sealed_len(len) bytes
//! id       = SHA-256(inner)[0..16]
//! count    = ⌈|inner| / 1316⌉                              2 ≤ count ≤ MAX_FRAGMENTS
//! fragment = id (16) ‖ index (2) ‖ count (2) ‖ |inner| (4) ‖ chunk ‖ zeros   1340 bytes
//! body     = seal_fragment(fragment)                       1392 bytes
//! ```

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use rand_core::CryptoRng;
use sha2::{Digest, Sha256};

use crate::keys::fixed;
use crate::sealed::{self, Contact, EncryptionKey, OpenedBody, SealError};
use crate::types::{MessageHash, RecipientId, Timestamp};

/// Bytes of a message id: the first 16 bytes of the SHA-256 of the inner sealed body.
pub const MESSAGE_ID_LEN: usize = 16;
/// Bytes of a [`FragmentHeader`]: id, index, count and inner length.
pub const FRAGMENT_HEADER_LEN: usize = MESSAGE_ID_LEN + 2 + 2 + 4;
/// Bytes of a fragment before its seal: every fragment is this long, the last one padded
/// with zeros, so all seal to [`FRAGMENT_BODY_LEN`].
pub const FRAGMENT_LEN: usize = sealed::MAX_MESSAGE_IN_ONE_BODY;
/// Bytes of the inner body each fragment carries (the last one carries the rest).
pub const FRAGMENT_CHUNK_LEN: usize = FRAGMENT_LEN - FRAGMENT_HEADER_LEN;
/// Bytes of a sealed fragment: the largest single-body length, the default store limit.
pub const FRAGMENT_BODY_LEN: usize = sealed::SEALED_BUCKETS[sealed::SEALED_BUCKETS.len() - 1];
/// The longest message: 128 KiB. With the default node limits a recipient's swarm holds
/// about 117 such messages (16 MiB per recipient), and one fits the default per-recipient
/// rate burst of 200 stores (it takes [`MAX_FRAGMENTS`]).
pub const MAX_MESSAGE_LEN: usize = 128 * 1024;
/// The inner body of a [`MAX_MESSAGE_LEN`] message: `sealed_len(MAX_MESSAGE_LEN)`.
pub const MAX_INNER_LEN: usize =
    (MAX_MESSAGE_LEN + sealed::SEAL_LEN_PREFIX + sealed::SEAL_OVERHEAD)
        .next_multiple_of(sealed::SEALED_STEP);
/// Most fragments of one message (101).
pub const MAX_FRAGMENTS: usize = MAX_INNER_LEN.div_ceil(FRAGMENT_CHUNK_LEN);

const _: () =
    assert!(FRAGMENT_LEN + sealed::SEAL_LEN_PREFIX + sealed::SEAL_OVERHEAD == FRAGMENT_BODY_LEN);
const _: () = assert!(MAX_FRAGMENTS <= u16::MAX as usize);

/// Which large message a fragment belongs to (known only to the recipient).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct MessageId(pub [u8; MESSAGE_ID_LEN]);

impl fmt::Display for MessageId {
    /// 32 lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// What a fragment says about itself, inside its seal.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FragmentHeader {
    /// The message it belongs to.
    pub message_id: MessageId,
    /// Its place, from 0.
    pub index: u16,
    /// How many fragments the message has.
    pub count: u16,
    /// Length of the inner sealed body the chunks add up to.
    pub inner_len: u32,
}

impl FragmentHeader {
    /// The header's [`FRAGMENT_HEADER_LEN`] bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; FRAGMENT_HEADER_LEN] {
        let mut out = [0u8; FRAGMENT_HEADER_LEN];
        out[..MESSAGE_ID_LEN].copy_from_slice(&self.message_id.0);
        out[16..18].copy_from_slice(&self.index.to_be_bytes());
        out[18..20].copy_from_slice(&self.count.to_be_bytes());
        out[20..24].copy_from_slice(&self.inner_len.to_be_bytes());
        out
    }

    /// Where this fragment's chunk lies in the inner body.
    fn chunk_range(&self) -> core::ops::Range<usize> {
        let start = usize::from(self.index) * FRAGMENT_CHUNK_LEN;
        start..(start + FRAGMENT_CHUNK_LEN).min(self.inner_len as usize)
    }
}

/// A fragment as its recipient reads it, after its seal opened.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Fragment<'a> {
    /// Its header.
    pub header: FragmentHeader,
    /// Its part of the inner body, padding removed.
    pub chunk: &'a [u8],
}

/// Why an opened fragment is not a well-formed one. Only whoever sealed it could have made
/// it so: the sender of a broken or hostile message, never a relay or member.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum FragmentError {
    /// Not [`FRAGMENT_LEN`] bytes.
    Length {
        /// The length seen.
        len: usize,
    },
    /// The count is below 2 or above [`MAX_FRAGMENTS`], or does not match the inner length.
    Count {
        /// The count seen.
        count: u16,
        /// The inner length seen.
        inner_len: u32,
    },
    /// The index is not below the count.
    Index {
        /// The index seen.
        index: u16,
        /// The count seen.
        count: u16,
    },
    /// The bytes after the last chunk are not zero.
    Padding,
}

impl fmt::Display for FragmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length { len } => write!(f, "a fragment of {len} bytes (not {FRAGMENT_LEN})"),
            Self::Count { count, inner_len } => write!(
                f,
                "{count} fragments cannot carry {inner_len} bytes (or more than {MAX_FRAGMENTS})"
            ),
            Self::Index { index, count } => write!(f, "fragment index {index} of {count}"),
            Self::Padding => f.write_str("non-zero bytes after the last chunk"),
        }
    }
}

/// Reads an opened fragment: header, bounds, and the zeros after the last chunk.
pub fn decode(fragment: &[u8]) -> Result<Fragment<'_>, FragmentError> {
    if fragment.len() != FRAGMENT_LEN {
        return Err(FragmentError::Length {
            len: fragment.len(),
        });
    }
    let header = FragmentHeader {
        message_id: MessageId(fixed(&fragment[..MESSAGE_ID_LEN])),
        index: u16::from_be_bytes(fixed(&fragment[16..18])),
        count: u16::from_be_bytes(fixed(&fragment[18..20])),
        inner_len: u32::from_be_bytes(fixed(&fragment[20..24])),
    };
    let (count, inner_len) = (header.count, header.inner_len);
    let inner = inner_len as usize;
    if count < 2
        || usize::from(count) > MAX_FRAGMENTS
        || inner > MAX_INNER_LEN
        || inner.div_ceil(FRAGMENT_CHUNK_LEN) != usize::from(count)
    {
        return Err(FragmentError::Count { count, inner_len });
    }
    if header.index >= count {
        return Err(FragmentError::Index {
            index: header.index,
            count,
        });
    }
    let range = header.chunk_range();
    let body = &fragment[FRAGMENT_HEADER_LEN..];
    let (chunk, padding) = body.split_at(range.len());
    if padding.iter().any(|&b| b != 0) {
        return Err(FragmentError::Padding);
    }
    Ok(Fragment { header, chunk })
}

/// Why a message could not be sealed for sending.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum MessageError {
    /// Longer than [`MAX_MESSAGE_LEN`].
    TooLong {
        /// Its length.
        len: usize,
    },
    /// Sealing failed (a weak recipient key).
    Seal(SealError),
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong { len } => write!(
                f,
                "the message is {len} bytes; at most {MAX_MESSAGE_LEN} (128 KiB) can be sent"
            ),
            Self::Seal(e) => write!(f, "cannot seal the message: {e}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for MessageError {}

/// The store bodies that carry `message` to `to`: one sealed body when it fits
/// ([`sealed::MAX_MESSAGE_IN_ONE_BODY`]), otherwise its sealed fragments in order, each
/// [`FRAGMENT_BODY_LEN`] bytes. Every body is to be stored separately, on its own path.
pub fn seal_message<R: CryptoRng + ?Sized>(
    to: &Contact,
    message: &[u8],
    rng: &mut R,
) -> Result<Vec<Vec<u8>>, MessageError> {
    if message.len() > MAX_MESSAGE_LEN {
        return Err(MessageError::TooLong { len: message.len() });
    }
    let inner_len = sealed::sealed_len(message.len()).expect("at most MAX_MESSAGE_LEN");
    let mut inner = vec![0u8; inner_len];
    sealed::seal(to, message, rng, &mut inner).map_err(MessageError::Seal)?;
    if message.len() <= sealed::MAX_MESSAGE_IN_ONE_BODY {
        return Ok(vec![inner]);
    }
    let message_id = MessageId(fixed(&Sha256::digest(&inner)[..MESSAGE_ID_LEN]));
    let count = inner_len.div_ceil(FRAGMENT_CHUNK_LEN);
    let mut bodies = Vec::with_capacity(count);
    let mut fragment = [0u8; FRAGMENT_LEN];
    for (index, chunk) in inner.chunks(FRAGMENT_CHUNK_LEN).enumerate() {
        let header = FragmentHeader {
            message_id,
            // Bounded by MAX_FRAGMENTS and MAX_INNER_LEN above.
            index: index as u16,
            count: count as u16,
            inner_len: inner_len as u32,
        };
        fragment.fill(0);
        fragment[..FRAGMENT_HEADER_LEN].copy_from_slice(&header.encode());
        fragment[FRAGMENT_HEADER_LEN..FRAGMENT_HEADER_LEN + chunk.len()].copy_from_slice(chunk);
        let mut body = vec![0u8; FRAGMENT_BODY_LEN];
        sealed::seal_fragment(to, &fragment, rng, &mut body).map_err(MessageError::Seal)?;
        bodies.push(body);
    }
    Ok(bodies)
}

/// One stored message as fetched from the swarm: what the [`Inbox`] takes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StoredPart {
    /// Its store hash.
    pub hash: MessageHash,
    /// When the swarm drops it.
    pub expiry: Timestamp,
    /// The sealed body.
    pub body: Vec<u8>,
}

/// Names a received message: the store hash of a one-body message, or the id of a
/// fragmented one.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReceivedId {
    /// A message in one body.
    Single(MessageHash),
    /// A message in fragments.
    Fragmented(MessageId),
}

impl fmt::Display for ReceivedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Single(hash) => write!(f, "{hash}"),
            Self::Fragmented(id) => write!(f, "{id}"),
        }
    }
}

/// Why a body or a set of fragments is not a message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Invalid {
    /// The body does not open with the recipient's key: sealed to someone else, or forged.
    Unopenable,
    /// A fragment opened but is malformed.
    Malformed(FragmentError),
    /// Two fragments of one message disagree (count, length, or a chunk at one index).
    Conflicting {
        /// The index where they disagree.
        index: u16,
    },
    /// Every fragment arrived, but together they do not open: they do not hash to their
    /// message id, or the inner seal fails.
    Unauthentic,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unopenable => f.write_str("it does not open with this key"),
            Self::Malformed(e) => write!(f, "malformed fragment: {e}"),
            Self::Conflicting { index } => write!(f, "two different fragments at index {index}"),
            Self::Unauthentic => f.write_str("its fragments together do not open"),
        }
    }
}

/// What the [`Inbox`] made of the bodies it was given.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Received {
    /// A whole message, opened and authenticated; given out once per message.
    Message {
        /// Which message.
        id: ReceivedId,
        /// Its bytes.
        message: Vec<u8>,
        /// The stores it came in, in order (one for a one-body message).
        parts: Vec<MessageHash>,
        /// When the first of its stores was received.
        received_first: Timestamp,
    },
    /// A fragmented message given up: its fragments stopped being stored (`expiry` passed)
    /// or too many others were waiting. Later fragments of it are dropped.
    Incomplete {
        /// Which message.
        id: MessageId,
        /// How many fragments it has.
        count: u16,
        /// The indexes that never arrived.
        missing: Vec<u16>,
        /// The stores of the fragments that did.
        parts: Vec<MessageHash>,
    },
    /// Not a message (see [`Invalid`]); a fragmented message reported invalid is given up.
    Invalid {
        /// The message, when its fragments said which.
        id: Option<MessageId>,
        /// Why.
        problem: Invalid,
        /// The stores involved.
        parts: Vec<MessageHash>,
    },
}

/// How much an [`Inbox`] holds.
#[derive(Clone, Copy, Debug)]
pub struct InboxConfig {
    /// Fragmented messages waiting for fragments at once (each holds up to about 280 KB);
    /// one more gives up the one whose fragments expire first.
    pub max_waiting: usize,
    /// Ids of finished messages remembered, so late duplicates of their fragments are
    /// dropped instead of starting over.
    pub max_finished: usize,
}

impl Default for InboxConfig {
    /// 32 waiting (at most about 9 MB), 10,000 finished.
    fn default() -> Self {
        Self {
            max_waiting: 32,
            max_finished: 10_000,
        }
    }
}

/// A fragmented message still waiting for fragments.
#[derive(Clone, Debug)]
pub struct Waiting {
    /// Which message.
    pub id: MessageId,
    /// How many fragments it has.
    pub count: u16,
    /// The indexes still missing.
    pub missing: Vec<u16>,
    /// The latest expiry of its fragments: past it, it is given up.
    pub expiry: Timestamp,
}

struct Partial {
    count: u16,
    inner_len: u32,
    inner: Vec<u8>,
    /// The stored fragment at each index, once it arrived.
    parts: Vec<Option<StoredPart>>,
    have: usize,
    expiry: Timestamp,
    received_first: Timestamp,
}

/// The recipient's side of large messages: opens every fetched body, passes one-body
/// messages through, collects fragments until their message is whole, and reports each
/// message exactly once — whole, [`Received::Incomplete`] or [`Received::Invalid`].
///
/// Sans-IO like the rest of the core: give it bodies with [`Inbox::receive`] and the time
/// with [`Inbox::expire`], then drain [`Inbox::poll_received`]. Memory is bounded by
/// [`InboxConfig`]. To keep waiting fragments across restarts, save
/// [`Inbox::waiting_parts`] and [`Inbox::finished`] and feed them back with
/// [`Inbox::receive`] and [`Inbox::remember_finished`].
pub struct Inbox {
    config: InboxConfig,
    waiting: BTreeMap<MessageId, Partial>,
    finished: VecDeque<MessageId>,
    out: VecDeque<Received>,
}

impl Inbox {
    /// An empty inbox.
    #[must_use]
    pub fn new(config: InboxConfig) -> Self {
        Self {
            config,
            waiting: BTreeMap::new(),
            finished: VecDeque::new(),
            out: VecDeque::new(),
        }
    }

    /// Takes one fetched body of `recipient`'s, received at `now`.
    pub fn receive(
        &mut self,
        recipient: &RecipientId,
        key: &EncryptionKey,
        part: StoredPart,
        now: Timestamp,
    ) {
        let mut opened = vec![0u8; part.body.len()];
        let fragment = match sealed::open_any(recipient, key, &part.body, &mut opened) {
            Err(_) => return self.invalid(None, Invalid::Unopenable, vec![part.hash]),
            Ok(OpenedBody::Message(message)) => {
                self.out.push_back(Received::Message {
                    id: ReceivedId::Single(part.hash),
                    message: message.to_vec(),
                    parts: vec![part.hash],
                    received_first: now,
                });
                return;
            }
            Ok(OpenedBody::Fragment(fragment)) => match decode(fragment) {
                Ok(fragment) => fragment,
                Err(e) => return self.invalid(None, Invalid::Malformed(e), vec![part.hash]),
            },
        };
        let header = fragment.header;
        let id = header.message_id;
        if self.finished.contains(&id) {
            return;
        }
        if !self.waiting.contains_key(&id) {
            if self.waiting.len() >= self.config.max_waiting.max(1) {
                let first_to_expire = self
                    .waiting
                    .iter()
                    .min_by_key(|(_, p)| p.expiry)
                    .map(|(id, _)| *id);
                if let Some(evicted) = first_to_expire {
                    self.give_up(evicted);
                }
            }
            self.waiting.insert(
                id,
                Partial {
                    count: header.count,
                    inner_len: header.inner_len,
                    inner: vec![0u8; header.inner_len as usize],
                    parts: vec![None; usize::from(header.count)],
                    have: 0,
                    expiry: part.expiry,
                    received_first: now,
                },
            );
        }
        let partial = self.waiting.get_mut(&id).expect("inserted above");
        let range = header.chunk_range();
        if partial.count != header.count || partial.inner_len != header.inner_len {
            return self.conflict(id, header.index, part.hash);
        }
        let slot = usize::from(header.index);
        if partial.parts[slot].is_some() {
            if partial.inner[range] == *fragment.chunk {
                // The same fragment again (another store of it, or a replay): nothing new.
                return;
            }
            return self.conflict(id, header.index, part.hash);
        }
        partial.inner[range].copy_from_slice(fragment.chunk);
        partial.expiry = partial.expiry.max(part.expiry);
        partial.parts[slot] = Some(part);
        partial.have += 1;
        if partial.have == usize::from(partial.count) {
            self.complete(recipient, key, id);
        }
    }

    /// Gives up every waiting message whose fragments have all expired by `now`: the swarm
    /// no longer holds them, so the missing ones cannot come.
    pub fn expire(&mut self, now: Timestamp) {
        let expired: Vec<MessageId> = self
            .waiting
            .iter()
            .filter(|(_, p)| p.expiry <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.give_up(id);
        }
    }

    /// The next result, oldest first.
    pub fn poll_received(&mut self) -> Option<Received> {
        self.out.pop_front()
    }

    /// The messages still waiting for fragments.
    pub fn waiting(&self) -> impl Iterator<Item = Waiting> + '_ {
        self.waiting.iter().map(|(id, p)| Waiting {
            id: *id,
            count: p.count,
            missing: missing(p),
            expiry: p.expiry,
        })
    }

    /// The stored fragments of waiting messages, as received (still sealed): what to save
    /// to pick up where this inbox stopped.
    pub fn waiting_parts(&self) -> impl Iterator<Item = &StoredPart> + '_ {
        self.waiting.values().flat_map(|p| p.parts.iter().flatten())
    }

    /// The ids of finished messages remembered, oldest first.
    pub fn finished(&self) -> impl Iterator<Item = &MessageId> + '_ {
        self.finished.iter()
    }

    /// Marks `id` finished (restoring a saved inbox): its fragments are dropped from now on.
    pub fn remember_finished(&mut self, id: MessageId) {
        self.waiting.remove(&id);
        self.finish(id);
    }

    fn finish(&mut self, id: MessageId) {
        if self.finished.contains(&id) {
            return;
        }
        while self.finished.len() >= self.config.max_finished.max(1) {
            self.finished.pop_front();
        }
        self.finished.push_back(id);
    }

    fn complete(&mut self, recipient: &RecipientId, key: &EncryptionKey, id: MessageId) {
        let partial = self
            .waiting
            .remove(&id)
            .expect("complete is called on a waiting id");
        self.finish(id);
        let parts: Vec<MessageHash> = partial.parts.iter().flatten().map(|p| p.hash).collect();
        let digest = Sha256::digest(&partial.inner);
        let mut message = vec![0u8; partial.inner.len()];
        let opened = (digest[..MESSAGE_ID_LEN] == id.0)
            .then(|| sealed::open(recipient, key, &partial.inner, &mut message).ok())
            .flatten()
            .map(<[u8]>::len);
        match opened {
            Some(len) => {
                let start = sealed::SEAL_LEN_PREFIX;
                message.copy_within(start..start + len, 0);
                message.truncate(len);
                self.out.push_back(Received::Message {
                    id: ReceivedId::Fragmented(id),
                    message,
                    parts,
                    received_first: partial.received_first,
                });
            }
            None => self.invalid(Some(id), Invalid::Unauthentic, parts),
        }
    }

    fn conflict(&mut self, id: MessageId, index: u16, hash: MessageHash) {
        let partial = self
            .waiting
            .remove(&id)
            .expect("conflict is called on a waiting id");
        self.finish(id);
        let mut parts: Vec<MessageHash> = partial.parts.iter().flatten().map(|p| p.hash).collect();
        parts.push(hash);
        self.invalid(Some(id), Invalid::Conflicting { index }, parts);
    }

    fn give_up(&mut self, id: MessageId) {
        let Some(partial) = self.waiting.remove(&id) else {
            return;
        };
        self.finish(id);
        self.out.push_back(Received::Incomplete {
            id,
            count: partial.count,
            missing: missing(&partial),
            parts: partial.parts.iter().flatten().map(|p| p.hash).collect(),
        });
    }

    fn invalid(&mut self, id: Option<MessageId>, problem: Invalid, parts: Vec<MessageHash>) {
        self.out.push_back(Received::Invalid { id, problem, parts });
    }
}

fn missing(partial: &Partial) -> Vec<u16> {
    (0..partial.count)
        .filter(|&i| partial.parts[usize::from(i)].is_none())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::IdentityKey;
    use crate::store::message_hash;
    use crate::types::Namespace;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    struct Bob {
        id: RecipientId,
        key: EncryptionKey,
    }

    impl Bob {
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

        fn part(&self, body: &[u8]) -> StoredPart {
            StoredPart {
                hash: message_hash(&self.id, Namespace::DIRECT, body),
                expiry: Timestamp(10_000),
                body: body.to_vec(),
            }
        }

        fn receive_all(&self, inbox: &mut Inbox, bodies: &[Vec<u8>]) -> Vec<Received> {
            for body in bodies {
                inbox.receive(&self.id, &self.key, self.part(body), Timestamp(1));
            }
            core::iter::from_fn(|| inbox.poll_received()).collect()
        }
    }

    fn message(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn only_message(received: &[Received]) -> &[u8] {
        match received {
            [Received::Message { message, .. }] => message,
            other => panic!("expected one message, got {other:?}"),
        }
    }

    #[test]
    fn the_constants_are_what_the_protocol_says() {
        assert_eq!(FRAGMENT_LEN, 1340);
        assert_eq!(FRAGMENT_CHUNK_LEN, 1316);
        assert_eq!(FRAGMENT_BODY_LEN, 1392);
        assert_eq!(Some(MAX_INNER_LEN), sealed::sealed_len(MAX_MESSAGE_LEN));
        assert_eq!(MAX_FRAGMENTS, 101);
    }

    #[test]
    fn messages_of_every_size_come_back_whole_in_any_order() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let bob = Bob::new(&mut rng);
        for len in [
            0,
            sealed::MAX_MESSAGE_IN_ONE_BODY,
            sealed::MAX_MESSAGE_IN_ONE_BODY + 1,
            16 * 1024,
            64 * 1024,
            MAX_MESSAGE_LEN,
        ] {
            let sent = message(len);
            let mut bodies = seal_message(&bob.contact(), &sent, &mut rng).unwrap();
            let expected = if len <= sealed::MAX_MESSAGE_IN_ONE_BODY {
                1
            } else {
                sealed::sealed_len(len)
                    .unwrap()
                    .div_ceil(FRAGMENT_CHUNK_LEN)
            };
            assert_eq!(bodies.len(), expected, "{len} bytes");
            if expected > 1 {
                assert!(bodies.iter().all(|b| b.len() == FRAGMENT_BODY_LEN));
            }
            bodies.reverse();
            bodies.swap(0, expected / 2);
            let mut inbox = Inbox::new(InboxConfig::default());
            let received = bob.receive_all(&mut inbox, &bodies);
            assert_eq!(only_message(&received), &sent[..], "{len} bytes");
            assert_eq!(inbox.waiting().count(), 0);
        }
        assert_eq!(
            seal_message(&bob.contact(), &message(MAX_MESSAGE_LEN + 1), &mut rng),
            Err(MessageError::TooLong {
                len: MAX_MESSAGE_LEN + 1
            })
        );
    }

    #[test]
    fn a_withheld_fragment_keeps_the_message_waiting_until_it_expires_then_names_it() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let bob = Bob::new(&mut rng);
        let mut bodies = seal_message(&bob.contact(), &message(5000), &mut rng).unwrap();
        let withheld = bodies.remove(2);
        let mut inbox = Inbox::new(InboxConfig::default());
        assert!(bob.receive_all(&mut inbox, &bodies).is_empty());
        let waiting: Vec<Waiting> = inbox.waiting().collect();
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].missing, [2]);
        inbox.expire(Timestamp(9_999));
        assert!(inbox.poll_received().is_none(), "not expired yet");
        inbox.expire(Timestamp(10_000));
        match inbox.poll_received() {
            Some(Received::Incomplete {
                missing,
                count,
                parts,
                ..
            }) => {
                assert_eq!((missing, usize::from(count)), (vec![2], bodies.len() + 1));
                assert_eq!(parts.len(), bodies.len());
            }
            other => panic!("expected incomplete, got {other:?}"),
        }
        // The fragment that comes after the message was given up starts nothing.
        assert!(bob.receive_all(&mut inbox, &[withheld]).is_empty());
        assert_eq!(inbox.waiting().count(), 0);
    }

    #[test]
    fn duplicates_are_delivered_once() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let bob = Bob::new(&mut rng);
        let sent = message(3000);
        let bodies = seal_message(&bob.contact(), &sent, &mut rng).unwrap();
        let mut twice: Vec<Vec<u8>> = bodies.iter().flat_map(|b| [b.clone(), b.clone()]).collect();
        twice.extend(bodies.iter().cloned());
        let mut inbox = Inbox::new(InboxConfig::default());
        let received = bob.receive_all(&mut inbox, &twice);
        assert_eq!(only_message(&received), &sent[..]);
    }

    #[test]
    fn fragments_of_two_messages_mixed_never_make_a_wrong_message() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let bob = Bob::new(&mut rng);
        let (a, b) = (message(4000), vec![0x55; 4000]);
        let fa = seal_message(&bob.contact(), &a, &mut rng).unwrap();
        let fb = seal_message(&bob.contact(), &b, &mut rng).unwrap();
        // A member swaps fragment 1 of each: each set is still whole per its own headers.
        let swapped_a = vec![fa[0].clone(), fb[1].clone(), fa[2].clone(), fa[3].clone()];
        let mut inbox = Inbox::new(InboxConfig::default());
        assert!(
            bob.receive_all(&mut inbox, &swapped_a).is_empty(),
            "waiting for a's fragment 1"
        );
        let rest = vec![fb[0].clone(), fb[2].clone(), fb[3].clone(), fa[1].clone()];
        let received = bob.receive_all(&mut inbox, &rest);
        let mut got: Vec<&[u8]> = received
            .iter()
            .map(|r| match r {
                Received::Message { message, .. } => &message[..],
                other => panic!("{other:?}"),
            })
            .collect();
        got.sort();
        let mut want = vec![&a[..], &b[..]];
        want.sort();
        assert_eq!(
            got, want,
            "headers put every fragment back where it belongs"
        );
    }

    #[test]
    fn a_forged_fragment_under_a_known_id_makes_the_message_invalid_not_wrong() {
        // The sender itself (who knows the id) sends a second, different fragment 0.
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let bob = Bob::new(&mut rng);
        let bodies = seal_message(&bob.contact(), &message(3000), &mut rng).unwrap();
        let mut opened = vec![0u8; FRAGMENT_BODY_LEN];
        let OpenedBody::Fragment(first) =
            sealed::open_any(&bob.id, &bob.key, &bodies[0], &mut opened).unwrap()
        else {
            panic!("a fragment");
        };
        let mut forged = first.to_vec();
        forged[FRAGMENT_HEADER_LEN + 100] ^= 1;
        let mut forged_body = vec![0u8; FRAGMENT_BODY_LEN];
        sealed::seal_fragment(&bob.contact(), &forged, &mut rng, &mut forged_body).unwrap();

        // Forged first: every fragment arrives, but they do not hash to the id.
        let mut inbox = Inbox::new(InboxConfig::default());
        let mut set = vec![forged_body.clone()];
        set.extend(bodies[1..].iter().cloned());
        let received = bob.receive_all(&mut inbox, &set);
        assert!(
            matches!(
                &received[..],
                [Received::Invalid {
                    problem: Invalid::Unauthentic,
                    ..
                }]
            ),
            "{received:?}"
        );
        // And the genuine fragment 0 afterwards is dropped: the message was reported once.
        assert!(bob.receive_all(&mut inbox, &bodies[..1]).is_empty());

        // Both versions of fragment 0: a conflict, reported at once.
        let mut inbox = Inbox::new(InboxConfig::default());
        let received = bob.receive_all(&mut inbox, &[bodies[0].clone(), forged_body]);
        assert!(
            matches!(
                &received[..],
                [Received::Invalid {
                    problem: Invalid::Conflicting { index: 0 },
                    ..
                }]
            ),
            "{received:?}"
        );
    }

    #[test]
    fn bodies_for_someone_else_and_malformed_fragments_are_reported() {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let bob = Bob::new(&mut rng);
        let eve = Bob::new(&mut rng);
        let for_eve = seal_message(&eve.contact(), &message(2000), &mut rng).unwrap();
        let mut fragment = [0u8; FRAGMENT_LEN];
        fragment[18..20].copy_from_slice(&1u16.to_be_bytes());
        let mut bad = vec![0u8; FRAGMENT_BODY_LEN];
        sealed::seal_fragment(&bob.contact(), &fragment, &mut rng, &mut bad).unwrap();
        let mut inbox = Inbox::new(InboxConfig::default());
        let received = bob.receive_all(&mut inbox, &[for_eve[0].clone(), bad]);
        assert!(matches!(
            received[0],
            Received::Invalid {
                problem: Invalid::Unopenable,
                ..
            }
        ));
        assert!(matches!(
            received[1],
            Received::Invalid {
                problem: Invalid::Malformed(FragmentError::Count { count: 1, .. }),
                ..
            }
        ));
    }

    #[test]
    fn decode_refuses_every_inconsistent_header() {
        let header = |index: u16, count: u16, inner_len: u32| {
            let mut f = [0u8; FRAGMENT_LEN];
            f[..FRAGMENT_HEADER_LEN].copy_from_slice(
                &FragmentHeader {
                    message_id: MessageId([9; 16]),
                    index,
                    count,
                    inner_len,
                }
                .encode(),
            );
            f
        };
        assert!(decode(&header(1, 2, 2048)).is_ok());
        assert_eq!(
            decode(&header(1, 2, 2048)[..100]),
            Err(FragmentError::Length { len: 100 })
        );
        assert!(matches!(
            decode(&header(0, 3, 2048)),
            Err(FragmentError::Count { .. })
        ));
        assert!(matches!(
            decode(&header(0, 1, 1000)),
            Err(FragmentError::Count { .. })
        ));
        let too_long = (MAX_FRAGMENTS as u32 + 1) * FRAGMENT_CHUNK_LEN as u32;
        assert!(matches!(
            decode(&header(0, MAX_FRAGMENTS as u16 + 1, too_long)),
            Err(FragmentError::Count { .. })
        ));
        assert_eq!(
            decode(&header(2, 2, 2048)),
            Err(FragmentError::Index { index: 2, count: 2 })
        );
        let mut padded = header(1, 2, 2048);
        padded[FRAGMENT_HEADER_LEN + 2048 - FRAGMENT_CHUNK_LEN] = 1;
        assert_eq!(decode(&padded), Err(FragmentError::Padding));
        // The first fragment is all chunk: any byte is allowed.
        let mut first = header(0, 2, 2048);
        first[FRAGMENT_LEN - 1] = 1;
        assert_eq!(decode(&first).unwrap().chunk.len(), FRAGMENT_CHUNK_LEN);
    }

    #[test]
    fn too_many_waiting_messages_give_up_the_first_to_expire() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let bob = Bob::new(&mut rng);
        let mut inbox = Inbox::new(InboxConfig {
            max_waiting: 2,
            max_finished: 10,
        });
        for expiry in [300, 100, 200] {
            let bodies = seal_message(&bob.contact(), &message(3000), &mut rng).unwrap();
            let mut part = bob.part(&bodies[0]);
            part.expiry = Timestamp(expiry);
            inbox.receive(&bob.id, &bob.key, part, Timestamp(1));
        }
        let mut waiting: Vec<u64> = inbox.waiting().map(|w| w.expiry.0).collect();
        waiting.sort_unstable();
        assert_eq!(waiting, [200, 300]);
        assert!(matches!(
            inbox.poll_received(),
            Some(Received::Incomplete { .. })
        ));
        assert_eq!(inbox.waiting_parts().count(), 2);
    }
}
