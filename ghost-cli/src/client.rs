//! The client side over HTTP: carries out what the core's client state machine
//! ([`proto_core::client`]) decides, and keeps the files a user owns (recipient keys,
//! fetch cursors), with bodies end-to-end encrypted to the recipient.
//!
//! Every decision — which directory to believe, the recipient's swarm (computed from the
//! client's own ring, never asked of a node), paths, retries, redirects, receipt and
//! message checks, the cursor walk — is the core's; this module moves bytes: the one
//! plain request is `GET /v1/nodes/directory`, the same for every client, and everything
//! that names a recipient goes inside onion packets. Key and cursor files are written
//! with mode 0600.
//!
//! Links to nodes are TLS 1.3 pinned to the key each node's verified descriptor names
//! (a seed, known by address alone, is reached encrypted but unpinned; docs/PROTOCOL.md
//! section 11), or plain HTTP only when asked for by name ([`Links::InsecurePlaintext`]).
//! Admin listeners (`/metrics`, detailed `/health`) are plain HTTP on the operator's host.
//!
//! The transport is blocking ureq, keep-alive agents per [`Client`]: every call has
//! the whole [`REQUEST_TIMEOUT`] (connect, send, answer), never follows a redirect nor a
//! proxy from the environment, and sends no `User-Agent` (the same request line and
//! headers for every client). An onion answer is read up to [`MAX_ANSWER_BYTES`]; a
//! status other than 2xx is the core's [`TransportError::Status`], not a broken
//! transport.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ghost_host::api;
use ghost_host::now;
use ghost_host::service::MAX_ANSWER_BYTES;
pub use ghost_host::tls::Links;
use ghost_host::tls::TlsLinks;
use ghost_host::tls::blocking::Agents;
use proto_core::client::{
    self as core_client, ClientConfig, FetchCursors, FetchSpec, OpId, StorePartsSpec, StoreSpec,
    Transmit, TransmitBody, TransmitId, TransportError,
};
use proto_core::fragment::{self, Inbox, InboxConfig, MessageId, StoredPart};
use proto_core::keys::{Address, Descriptor, IdentityKey};
use proto_core::node::TransmitFailure;
use proto_core::packet::{self, MAX_PAYLOAD, PACKET_LEN, PathHop, PathKeys};
use proto_core::reply::{self, Opened};
use proto_core::request::{Request, Response};
use proto_core::sealed::{self, Contact, EncryptionKey};
use proto_core::{MessageHash, NodeId, RecipientId, TlsKeyHash};
use rand_core::{CryptoRng, Rng, UnwrapErr};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Hops of every path the client builds.
pub const PATH_HOPS: usize = 3;
/// How long one exchange may take before the client gives up on it (the core's
/// `request_timeout_ms`): connecting, sending and reading the whole answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an idle keep-alive connection is reused: well inside a node's 10 s
/// `http.header_timeout_ms`, after which the node closes it and a reuse would fail.
const IDLE_REUSE: Duration = Duration::from_secs(5);
/// The largest answer to a plain `GET` read ([`get`]): a directory page is about
/// 40 KiB, `/metrics` a few hundred.
pub const MAX_GET_BYTES: u64 = 16 << 20;
/// How long a packet stays valid (hops refuse it afterwards), before rounding down to the
/// expiry grid.
const PACKET_LIFETIME_MS: u64 = 30_000;
/// Reply length asked for by hand-made requests ([`Client::request`]): room for a page of
/// messages.
pub const HAND_MADE_REPLY_LEN: usize = 64 * 1024;
/// How long stored messages live unless the sender says otherwise: 14 days, the maximum.
pub const DEFAULT_TTL_MS: u64 = proto_core::store::MAX_TTL_MS;

pub use ghost_host::start::{replace_private, write_private};

/// A recipient's two private keys: Ed25519 identity (the ID, signs retrieves) and an
/// independent X25519 key that opens message bodies.
pub struct RecipientKeys {
    /// Signs retrieve and delete requests; its public key is the recipient ID.
    pub identity: IdentityKey,
    /// Opens sealed bodies.
    pub encryption: EncryptionKey,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    identity: Zeroizing<String>,
    encryption: Zeroizing<String>,
}

impl RecipientKeys {
    /// Fresh keys.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self {
            identity: IdentityKey::generate(rng),
            encryption: EncryptionKey::generate(rng),
        }
    }

    /// What senders need: recipient ID and encryption public key.
    #[must_use]
    pub fn contact(&self) -> Contact {
        Contact {
            recipient: self.identity.recipient_id(),
            encryption: self.encryption.public(),
        }
    }

    /// Saves the keys to a new private file (refuses to overwrite one). Every buffer
    /// that held the secrets in hex is wiped before it is freed.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let file = KeyFile {
            identity: Zeroizing::new(hex::encode(&self.identity.to_seed()[..])),
            encryption: Zeroizing::new(hex::encode(&self.encryption.to_secret_bytes()[..])),
        };
        let toml_text =
            Zeroizing::new(toml::to_string(&file).expect("two strings always serialize"));
        let text = Zeroizing::new(format!(
            "# GhostNodes recipient keys: keep this file private.\n# contact: {}\n{}",
            self.contact(),
            toml_text.as_str()
        ));
        write_private(path, text.as_bytes())
    }

    /// Loads keys saved by [`RecipientKeys::save`].
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?,
        );
        let file: KeyFile = toml::from_str(&text)
            .map_err(|e| format!("{} is not a ghost key file: {e}", path.display()))?;
        let secret = |name: &str, hex_text: &str| -> Result<Zeroizing<[u8; 32]>, String> {
            let mut out = Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(hex_text, &mut out[..])
                .map_err(|_| format!("{}: {name} is not 64 hex digits", path.display()))?;
            Ok(out)
        };
        Ok(Self {
            identity: IdentityKey::from_seed(&*secret("identity", &file.identity)?),
            encryption: EncryptionKey::from_secret_bytes(*secret("encryption", &file.encryption)?),
        })
    }
}

/// Why a client operation failed, in words a user can act on.
#[derive(Debug)]
pub struct ClientError(pub String);

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClientError {}

impl From<core_client::ClientError> for ClientError {
    fn from(e: core_client::ClientError) -> Self {
        Self(e.to_string())
    }
}

fn fail<T>(message: impl Into<String>) -> Result<T, ClientError> {
    Err(ClientError(message.into()))
}

/// A delivered store: the verified acknowledgement, the path it took, and what failed
/// on the way (other paths, members whose answers did not hold).
pub type Delivery = core_client::Delivery;

/// Messages fetched from one swarm member, with the path used.
pub type Fetched = core_client::Fetched;

/// One failed attempt inside an operation that may still have succeeded.
pub type AttemptFailure = core_client::AttemptFailure;

/// Where a recipient's fetches stopped, per swarm member (cursors are per node), and
/// which messages were already shown: the JSON form of the core's
/// [`FetchCursors`], kept in a private file beside the key file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Cursors {
    /// Last sequence number read from each member (node ID hex).
    pub after: BTreeMap<String, u64>,
    /// Hashes (hex) of messages already shown, oldest first, at most 10,000.
    pub seen: VecDeque<String>,
}

impl Cursors {
    /// Loads cursors, or starts fresh when the file does not exist.
    pub fn load(path: &Path) -> Result<Self, String> {
        load_private_json(path, "cursor file", "start over")
    }

    /// Saves cursors atomically (a new private file, mode 0600 like the key file, then
    /// a rename): which messages a recipient read is nobody else's business.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        save_private_json(path, self)
    }

    fn to_core(&self) -> FetchCursors {
        let parse = |text: &str| -> Option<[u8; 32]> {
            let mut out = [0u8; 32];
            hex::decode_to_slice(text, &mut out).ok().map(|()| out)
        };
        FetchCursors {
            after: self
                .after
                .iter()
                .filter_map(|(id, seq)| parse(id).map(|b| (NodeId(b), *seq)))
                .collect(),
            seen: self
                .seen
                .iter()
                .filter_map(|h| parse(h).map(MessageHash))
                .collect(),
        }
    }

    fn from_core(c: &FetchCursors) -> Self {
        Self {
            after: c.after.iter().map(|(id, s)| (id.to_string(), *s)).collect(),
            seen: c.seen.iter().map(ToString::to_string).collect(),
        }
    }
}

/// A blocking client over HTTP: carries out what [`proto_core::client::Client`] decides
/// (directory, swarm, paths, retries, redirects, receipt and message checks).
///
/// The only plain request it makes is `GET /v1/nodes/directory`, the same for every
/// client; everything that names a recipient travels inside onion packets.
pub struct Client {
    core: RefCell<core_client::Client>,
    http: Http,
    ttl_ms: u64,
}

impl Client {
    /// Reads the whole directory from `seed` (`GET /v1/nodes/directory`, every
    /// descriptor's signature and expiry checked).
    pub fn connect(seed: &str) -> Result<Self, ClientError> {
        Self::with_config(seed, ClientConfig::default())
    }

    /// [`Client::connect`] with a client configuration of one's own.
    pub fn with_config(seed: &str, config: ClientConfig) -> Result<Self, ClientError> {
        Self::with_links(seed, config, default_links())
    }

    /// [`Client::with_config`] over `links` (TLS pinned by descriptors unless
    /// [`Links::InsecurePlaintext`]).
    pub fn with_links(seed: &str, config: ClientConfig, links: Links) -> Result<Self, ClientError> {
        Self::with_transport(seed, config, Http::new(REQUEST_TIMEOUT, links))
    }

    /// [`Client::with_config`] over a given agent, which several clients may share (its
    /// connection pool with them).
    pub(crate) fn with_transport(
        seed: &str,
        config: ClientConfig,
        http: Http,
    ) -> Result<Self, ClientError> {
        let address = Address::new(seed).map_err(|_| {
            ClientError(format!(
                "{seed:?} is not a node address (host:port, at most 64 printable characters)"
            ))
        })?;
        let client = Self {
            core: RefCell::new(core_client::Client::new(config, vec![address])),
            http,
            ttl_ms: DEFAULT_TTL_MS,
        };
        client.core.borrow_mut().refresh_directory(now());
        if let Some(Err(e)) = client.drive(None) {
            return Err(e.into());
        }
        if !client.core.borrow().has_directory() {
            return fail(format!("{seed} did not return the directory"));
        }
        Ok(client)
    }

    /// Requires `w` valid receipts before a store counts as delivered (default: the
    /// core's default write quorum, 2). Match the network's `node.write_quorum`.
    #[must_use]
    pub fn with_write_quorum(self, w: usize) -> Self {
        self.core.borrow_mut().set_write_quorum(w);
        self
    }

    /// Asks the swarm to keep stored messages for `ttl_ms` (default 14 days, the most a
    /// node accepts unless configured lower).
    #[must_use]
    pub fn with_ttl_ms(mut self, ttl_ms: u64) -> Self {
        self.ttl_ms = ttl_ms;
        self
    }

    /// Verified, unexpired descriptors of the nodes known, by node ID.
    #[must_use]
    pub fn nodes(&self) -> Vec<Descriptor> {
        self.core.borrow().nodes().copied().collect()
    }

    /// The recipient's swarm by this client's own ring over the verified directory (no
    /// request is made: asking a node would tell it whose swarm we want).
    pub fn swarm(&self, recipient: &RecipientId) -> Result<Vec<Descriptor>, ClientError> {
        let swarm = self.core.borrow().swarm(recipient);
        if swarm.is_empty() {
            return fail("the directory is empty: no swarm");
        }
        Ok(swarm)
    }

    /// Stores `body` (already sealed) for `recipient` through a fresh 3-hop path ending
    /// at a swarm member, and verifies the W receipts (see
    /// [`proto_core::client`] for the retry and redirect rules).
    pub fn store(&self, recipient: &RecipientId, body: &[u8]) -> Result<Delivery, ClientError> {
        self.store_op(recipient, body.to_vec()).map_err(Into::into)
    }

    /// [`Client::store`] with the core's own error, for tools that sort failures by
    /// cause.
    pub fn store_op(
        &self,
        recipient: &RecipientId,
        body: Vec<u8>,
    ) -> Result<Delivery, core_client::ClientError> {
        let spec = StoreSpec {
            recipient: *recipient,
            body,
            ttl_ms: self.ttl_ms,
            first_member: None,
        };
        let op = self.core.borrow_mut().start_store(now(), &mut rng(), spec);
        match self.drive(Some(op)) {
            Some(Ok(core_client::Event::Stored { result, .. })) => result,
            Some(Err(e)) => Err(e),
            _ => Err(unfinished()),
        }
    }

    /// Stores every body of one message (its fragments, from [`seal_message`]) for
    /// `recipient`, each through its own 3-hop path, several at once
    /// (`ClientConfig::parts_in_flight`); delivered only when every body has its W
    /// receipts, in the order given.
    pub fn store_parts(
        &self,
        recipient: &RecipientId,
        bodies: Vec<Vec<u8>>,
    ) -> Result<Vec<Delivery>, core_client::ClientError> {
        let spec = StorePartsSpec {
            recipient: *recipient,
            bodies,
            ttl_ms: self.ttl_ms,
        };
        let op = self
            .core
            .borrow_mut()
            .start_store_parts(now(), &mut rng(), spec);
        match self.drive(Some(op)) {
            Some(Ok(core_client::Event::StoredParts { result, .. })) => result,
            Some(Err(e)) => Err(e),
            _ => Err(unfinished()),
        }
    }

    /// Reads every new message past `cursors` of `identity`'s recipient, from `member`
    /// only or from the first member that answers, with the core's own error; returns
    /// the cursors to keep (advanced only by walks that completed).
    pub fn fetch_op(
        &self,
        identity: &IdentityKey,
        cursors: core_client::FetchCursors,
        member: Option<NodeId>,
    ) -> (
        core_client::FetchCursors,
        Result<Fetched, core_client::ClientError>,
    ) {
        let spec = FetchSpec {
            identity: IdentityKey::from_seed(&identity.to_seed()),
            cursors: cursors.clone(),
            only_member: member,
        };
        let op = self.core.borrow_mut().start_fetch(now(), &mut rng(), spec);
        match self.drive(Some(op)) {
            Some(Ok(core_client::Event::Fetched {
                cursors: kept,
                result,
                ..
            })) => (kept, result),
            Some(Err(e)) => (cursors, Err(e)),
            _ => (cursors, Err(unfinished())),
        }
    }

    /// Reads every new message of `keys`' recipient from one swarm member (the first that
    /// answers), advancing `cursors`. Messages already in `cursors.seen` are skipped.
    pub fn fetch(&self, keys: &IdentityKey, cursors: &mut Cursors) -> Result<Fetched, ClientError> {
        self.fetch_inner(keys, cursors, None)
    }

    /// Reads every new message of `keys`' recipient from `member` only.
    pub fn fetch_from(
        &self,
        member: &Descriptor,
        keys: &IdentityKey,
        cursors: &mut Cursors,
    ) -> Result<Fetched, ClientError> {
        self.fetch_inner(keys, cursors, Some(member.node_id()))
    }

    fn fetch_inner(
        &self,
        keys: &IdentityKey,
        cursors: &mut Cursors,
        only_member: Option<NodeId>,
    ) -> Result<Fetched, ClientError> {
        let (kept, result) = self.fetch_op(keys, cursors.to_core(), only_member);
        *cursors = Cursors::from_core(&kept);
        result.map_err(Into::into)
    }

    /// Carries out the core's exchanges until operation `op` ends (or, with `None`, until
    /// nothing is left to send); the str0m-style blocking loop. Exchanges the core wants
    /// at the same time (the fragments of a large message) run on threads of their own,
    /// each answer handed to the core as it comes; a lone store or fetch is one exchange
    /// at a time, as before.
    fn drive(
        &self,
        op: Option<OpId>,
    ) -> Option<Result<core_client::Event, core_client::ClientError>> {
        std::thread::scope(|scope| {
            let (answers, answered) = std::sync::mpsc::channel::<(TransmitId, Answer)>();
            let mut running = 0usize;
            loop {
                let mut core = self.core.borrow_mut();
                while let Some(event) = core.poll_event() {
                    if Some(event.op()) == op {
                        return Some(Ok(event));
                    }
                }
                let due: Vec<Transmit> = std::iter::from_fn(|| core.poll_transmit()).collect();
                let deadline = core.poll_timeout();
                drop(core);
                if running == 0 && due.len() == 1 {
                    // A lone exchange (every plain store and fetch) needs no thread.
                    let t = due.into_iter().next().expect("one");
                    let answer = exchange(&self.http, t.to.as_str(), t.tls_key_hash, t.body);
                    self.hand_over(t.id, answer);
                    continue;
                }
                for t in due {
                    running += 1;
                    let answers = answers.clone();
                    let http = &self.http;
                    scope.spawn(move || {
                        let answer = exchange(http, t.to.as_str(), t.tls_key_hash, t.body);
                        // After the operation ended nobody waits for it: dropping it is right.
                        let _ = answers.send((t.id, answer));
                    });
                }
                if running == 0 {
                    // Nothing in flight that an answer could move on: only a timeout can.
                    let wait = deadline?.millis_since(now());
                    std::thread::sleep(Duration::from_millis(wait));
                    self.core.borrow_mut().handle_timeout(now(), &mut rng());
                    continue;
                }
                let wait = deadline.map_or(REQUEST_TIMEOUT, |d| {
                    Duration::from_millis(d.millis_since(now()))
                });
                let Ok((id, answer)) = answered.recv_timeout(wait) else {
                    self.core.borrow_mut().handle_timeout(now(), &mut rng());
                    continue;
                };
                running -= 1;
                self.hand_over(id, answer);
            }
        })
    }

    /// Gives the core the answer to exchange `id`.
    fn hand_over(&self, id: TransmitId, answer: Answer) {
        let mut core = self.core.borrow_mut();
        match answer {
            Answer::Onion(Ok(mut bytes)) => {
                core.handle_onion_answer(now(), &mut rng(), id, Ok(&mut bytes));
            }
            Answer::Onion(Err(error)) => {
                core.handle_onion_answer(now(), &mut rng(), id, Err(error));
            }
            Answer::Directory(page) => core.handle_directory(now(), &mut rng(), id, page),
        }
    }

    /// A fresh path ending at `last`: two other nodes picked at random, all distinct (for
    /// tools and tests that send hand-made requests with [`Client::request`]).
    pub fn path_to<R: Rng + ?Sized>(
        &self,
        last: &Descriptor,
        rng: &mut R,
    ) -> Result<Vec<Descriptor>, ClientError> {
        let others: Vec<Descriptor> = self
            .nodes()
            .into_iter()
            .filter(|d| d.node_id() != last.node_id())
            .collect();
        if others.len() < PATH_HOPS - 1 {
            return fail(format!(
                "the network has {} nodes; a {PATH_HOPS}-hop path needs {PATH_HOPS}",
                others.len() + 1
            ));
        }
        let mut path: Vec<Descriptor> = Vec::new();
        while path.len() < PATH_HOPS - 1 {
            let pick = others[usize::try_from(rng.next_u64() % others.len() as u64)
                .expect("below the node count")];
            if !path.contains(&pick) {
                path.push(pick);
            }
        }
        path.push(*last);
        Ok(path)
    }

    /// Sends one hand-made `request` through `path` and authenticates the answer; no
    /// retries, no checks beyond the reply's authentication (tools and tests).
    pub fn request(
        &self,
        path: &[Descriptor],
        request: &Request<'_>,
        signer: Option<&IdentityKey>,
    ) -> Result<Response, ClientError> {
        let mut payload = [0u8; MAX_PAYLOAD];
        let len = request
            .encode(signer, &mut payload)
            .map_err(|e| ClientError(format!("cannot encode the request: {e}")))?;
        let (packet, keys) = build_packet(path, &payload[..len])?;
        let first = path[0].address().as_str();
        let mut answer = self
            .http
            .post(first, Some(path[0].tls_key_hash()), ONION_PATH, &packet[..])
            .map_err(|e| ClientError(format!("first hop {first} did not answer: {e:?}")))?;
        match reply::open(keys.reply_keys(), &mut answer) {
            Ok(Opened::Response { body }) => Response::decode(body)
                .map_err(|e| ClientError(format!("the final hop's answer is malformed: {e}"))),
            Ok(Opened::Failed { hop, failure, .. }) => fail(format!(
                "hop {} ({}) failed: {failure}",
                hop + 1,
                path.get(hop).map_or("?", |d| d.address().as_str())
            )),
            Err(e) => fail(format!("the answer did not authenticate: {e}")),
        }
    }
}

/// An operation the drive loop saw no end of: the core ends every operation it starts
/// (its loops are bounded), so this only guards against a broken invariant.
fn unfinished() -> core_client::ClientError {
    core_client::ClientError::Failed {
        attempts: Vec::new(),
    }
}

/// The path of the directory listing.
const DIRECTORY_PATH: &str = "/v1/nodes/directory";
/// Where onion packets go.
/// What one exchange brought back, for the driver to hand to the core.
enum Answer {
    Onion(Result<Vec<u8>, TransportError>),
    Directory(Result<core_client::DirectoryAnswer, TransportError>),
}

/// Carries out one exchange the core asked for.
fn exchange(http: &Http, to: &str, pin: Option<TlsKeyHash>, body: TransmitBody) -> Answer {
    match body {
        TransmitBody::Onion(packet) => Answer::Onion(http.send_onion(to, pin, &packet[..])),
        TransmitBody::Directory { after } => Answer::Directory(http.directory_page(to, pin, after)),
    }
}

const ONION_PATH: &str = "/v1/onion";

fn rng() -> UnwrapErr<getrandom::SysRng> {
    UnwrapErr(getrandom::SysRng)
}

/// Builds an onion packet carrying `payload` along `path` with fresh ephemeral keys,
/// valid for about half a minute, asking for a reply of [`HAND_MADE_REPLY_LEN`] bytes; the
/// keys open the answer.
pub fn build_packet(
    path: &[Descriptor],
    payload: &[u8],
) -> Result<([u8; PACKET_LEN], PathKeys), ClientError> {
    let hops: Vec<PathHop> = path.iter().map(PathHop::from).collect();
    let mut packet = [0u8; PACKET_LEN];
    let keys = packet::build(
        &hops,
        payload,
        packet::grid_expiry(now(), PACKET_LIFETIME_MS),
        HAND_MADE_REPLY_LEN,
        &mut UnwrapErr(getrandom::SysRng),
        &mut packet,
    )
    .map_err(|e| ClientError(format!("cannot build the packet: {e}")))?;
    Ok((packet, keys))
}

/// Seals `text` for `to` (end-to-end: only the recipient's encryption key opens it).
pub fn seal_for(to: &Contact, text: &[u8]) -> Result<Vec<u8>, ClientError> {
    let max = sealed::MAX_MESSAGE_IN_ONE_BODY;
    if text.len() > max {
        return fail(format!(
            "the message is {} bytes; at most {max} fit in one packet",
            text.len()
        ));
    }
    let len = sealed::sealed_len(text.len()).expect("at most MAX_MESSAGE_IN_ONE_BODY");
    let mut out = vec![0u8; len];
    let n = sealed::seal(to, text, &mut UnwrapErr(getrandom::SysRng), &mut out)
        .map_err(|e| ClientError(format!("cannot seal the message: {e}")))?;
    out.truncate(n);
    Ok(out)
}

/// Seals `message` for `to` into the bodies to store: one when it fits one packet,
/// otherwise its fragments ([`proto_core::fragment`]); refused above
/// [`fragment::MAX_MESSAGE_LEN`].
pub fn seal_message(to: &Contact, message: &[u8]) -> Result<Vec<Vec<u8>>, ClientError> {
    fragment::seal_message(to, message, &mut rng()).map_err(|e| ClientError(e.to_string()))
}

/// A recipient's [`Inbox`] kept in a private file beside its key (`KEY.inbox`): the
/// fragments of messages still incomplete (sealed, as fetched) and the ids of messages
/// already given out, so a large message spread over several fetches comes out once.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct InboxFile {
    /// Fragments of incomplete messages, as fetched.
    pub waiting: Vec<WaitingPart>,
    /// Ids (hex) of large messages already given out or given up, oldest first.
    pub finished: Vec<String>,
}

/// One saved fragment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WaitingPart {
    /// Its store hash (hex).
    pub hash: String,
    /// When the swarm drops it, ms since the Unix epoch.
    pub expiry: u64,
    /// The sealed body (hex).
    pub body: String,
}

impl InboxFile {
    /// Loads the file, or an empty inbox when there is none.
    pub fn load(path: &Path) -> Result<Self, String> {
        load_private_json(path, "inbox file", "drop incomplete messages")
    }

    /// An inbox holding what this file saved, for `keys`.
    pub fn restore(&self, keys: &RecipientKeys) -> Result<Inbox, String> {
        let mut inbox = Inbox::new(InboxConfig::default());
        for id in &self.finished {
            let mut bytes = [0u8; fragment::MESSAGE_ID_LEN];
            hex::decode_to_slice(id, &mut bytes)
                .map_err(|e| format!("inbox file: bad message id {id}: {e}"))?;
            inbox.remember_finished(MessageId(bytes));
        }
        for part in &self.waiting {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(&part.hash, &mut hash)
                .map_err(|e| format!("inbox file: bad hash {}: {e}", part.hash))?;
            let body = hex::decode(&part.body).map_err(|e| format!("inbox file: bad body: {e}"))?;
            let part = StoredPart {
                hash: MessageHash(hash),
                expiry: proto_core::Timestamp(part.expiry),
                body,
            };
            inbox.receive(&keys.identity.recipient_id(), &keys.encryption, part, now());
        }
        Ok(inbox)
    }

    /// What to save of `inbox`.
    #[must_use]
    pub fn of(inbox: &Inbox) -> Self {
        Self {
            waiting: inbox
                .waiting_parts()
                .map(|p| WaitingPart {
                    hash: p.hash.to_string(),
                    expiry: p.expiry.0,
                    body: hex::encode(&p.body),
                })
                .collect(),
            finished: inbox.finished().map(ToString::to_string).collect(),
        }
    }

    /// Saves the file atomically, private like the key file.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        save_private_json(path, self)
    }
}

/// Reads a user's JSON state file (`what`, for messages), or the empty state when there is
/// none; a damaged file is an error that says deleting it will `remedy`.
fn load_private_json<T: serde::de::DeserializeOwned + Default>(
    path: &Path,
    what: &str,
    remedy: &str,
) -> Result<T, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{what} {} is damaged ({e}); delete it to {remedy}",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes a user's JSON state file atomically and private ([`replace_private`]).
fn save_private_json<T: Serialize>(path: &Path, state: &T) -> Result<(), String> {
    let text = serde_json::to_vec(state).expect("maps, lists, strings and integers serialize");
    replace_private(path, &text)
}

/// Opens a sealed body with the recipient's keys.
pub fn open_body(keys: &RecipientKeys, body: &[u8]) -> Result<Vec<u8>, ClientError> {
    let mut out = vec![0u8; body.len()];
    let text = sealed::open(
        &keys.identity.recipient_id(),
        &keys.encryption,
        body,
        &mut out,
    )
    .map_err(|e| ClientError(format!("cannot open a message: {e}")))?;
    Ok(text.to_vec())
}

/// The links a client uses unless told otherwise: TLS pinned by descriptors, with no
/// certificate of its own (one value per process, so configs are built once).
#[must_use]
pub fn default_links() -> Links {
    static TLS: OnceLock<Arc<TlsLinks>> = OnceLock::new();
    Links::Tls(TLS.get_or_init(|| Arc::new(TlsLinks::for_client())).clone())
}

/// A plain-HTTP `GET` of `path` on an admin listener at `address` (`/metrics`, detailed
/// `/health`), on a connection of its own; a non-200 answer is an error quoting its body.
pub fn get(address: &str, path: &str) -> Result<Vec<u8>, ClientError> {
    Http::new(REQUEST_TIMEOUT, Links::InsecurePlaintext).get(address, path)
}

/// A `GET` of `path` on a node's public listener at `address` over `links` (TLS
/// unpinned: what answers is trusted no further than its signatures); a non-200 answer is
/// an error quoting its body.
pub fn get_public(address: &str, path: &str, links: Links) -> Result<Vec<u8>, ClientError> {
    Http::new(REQUEST_TIMEOUT, links).get_public(address, path)
}

/// Blocking HTTP/1.1 over ureq agents (one per pinned key for the nodes' public
/// listeners, one plain for admin listeners), whose idle keep-alive connections are
/// reused for [`IDLE_REUSE`]. Cloning shares the agents and their connection pools, so
/// threads of a load generator can carry exchanges side by side.
#[derive(Clone)]
pub(crate) struct Http {
    agents: Arc<Agents>,
    admin: ureq::Agent,
    /// What every call may take, from connecting to the end of the answer.
    timeout: Duration,
}

/// Which listener of a node a request goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Listening {
    /// The public listener, over the client's links, pinned to this key when known.
    Public(Option<TlsKeyHash>),
    /// The admin listener: plain HTTP.
    Admin,
}

impl Http {
    fn new(timeout: Duration, links: Links) -> Self {
        // ureq's default pool: a single client talks to few nodes one request at a time.
        Self::with_pool(timeout, 10, links)
    }

    /// Agents keeping up to `idle_connections` idle keep-alive connections, per node
    /// and in all: a load generator with that many exchanges in flight then reconnects
    /// only when a node closes a connection.
    pub(crate) fn with_pool(timeout: Duration, idle_connections: usize, links: Links) -> Self {
        let config = ureq::Agent::config_builder()
            .max_idle_connections(idle_connections)
            .max_idle_connections_per_host(idle_connections)
            .timeout_global(Some(timeout))
            // A refusal is an answer the core weighs (a 429 is not a dead node).
            .http_status_as_error(false)
            // The node's answer is the answer: a redirect would send the packet elsewhere.
            .max_redirects(0)
            // Nodes are reached directly, as the core chose; an HTTP_PROXY in the
            // environment would see every request.
            .proxy(None)
            // No version string for nodes to tell clients apart by.
            .user_agent("")
            .accept("")
            .max_idle_age(IDLE_REUSE)
            .build();
        Self {
            agents: Arc::new(Agents::new(config.clone(), links)),
            admin: config.into(),
            timeout,
        }
    }

    /// The agent for `listening` and the URL of `path` at `address` on it.
    fn target(&self, listening: Listening, address: &str, path: &str) -> (ureq::Agent, String) {
        match listening {
            Listening::Public(pin) => (self.agents.agent(pin), self.agents.url(address, path)),
            Listening::Admin => (self.admin.clone(), format!("http://{address}{path}")),
        }
    }

    /// Sends an onion packet to its first hop, with the errors as the core client weighs
    /// them.
    pub(crate) fn send_onion(
        &self,
        address: &str,
        pin: Option<TlsKeyHash>,
        packet: &[u8],
    ) -> Result<Vec<u8>, TransportError> {
        self.post(address, pin, ONION_PATH, packet)
            .map_err(|e| match e {
                TransmitFailure::Timeout => TransportError::Timeout,
                TransmitFailure::Refused { status } => TransportError::Status(status),
                _ => TransportError::Unreachable,
            })
    }

    /// Reads one page of `address`'s directory listing (nothing in it verified yet).
    pub(crate) fn directory_page(
        &self,
        address: &str,
        pin: Option<TlsKeyHash>,
        after: Option<NodeId>,
    ) -> Result<core_client::DirectoryAnswer, TransportError> {
        let path = match after {
            None => DIRECTORY_PATH.to_owned(),
            Some(id) => format!("{DIRECTORY_PATH}?after={id}"),
        };
        match self.get_on(address, &path, Listening::Public(pin)) {
            Ok(body) => api::parse_directory(&body).map_err(|_| TransportError::Malformed),
            Err(_) => Err(TransportError::Unreachable),
        }
    }

    /// GETs `path` at `address` and reads the whole answer: its status, or what broke
    /// (`timeout`, `unreachable`, `broken_answer`) as a short label for a bench report.
    pub(crate) fn get_status(
        &self,
        address: &str,
        path: &str,
        listening: Listening,
    ) -> Result<u16, &'static str> {
        let label = |e: ureq::Error| match e {
            ureq::Error::Timeout(_) => "timeout",
            ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => "timeout",
            ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => "unreachable",
            ureq::Error::Io(e) if is_connect_failure(e.kind()) => "unreachable",
            _ => "broken_answer",
        };
        let (agent, url) = self.target(listening, address, path);
        let mut resp = agent.get(url).call().map_err(label)?;
        resp.body_mut()
            .with_config()
            .limit(MAX_GET_BYTES)
            .read_to_vec()
            .map_err(label)?;
        Ok(resp.status().as_u16())
    }

    /// POSTs `body` to `path` at `address`: the answer's body when the status is 2xx.
    /// Errors: no connection is [`TransmitFailure::Unreachable`], the call outlasting
    /// its timeout is [`TransmitFailure::Timeout`], another status is
    /// [`TransmitFailure::Refused`] (a refusal carries no reply layer), and an answer
    /// over [`MAX_ANSWER_BYTES`] or broken off is [`TransmitFailure::Unreachable`].
    fn post(
        &self,
        address: &str,
        pin: Option<TlsKeyHash>,
        path: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, TransmitFailure> {
        let transport = |e: ureq::Error| match e {
            ureq::Error::Timeout(_) => TransmitFailure::Timeout,
            ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                TransmitFailure::Timeout
            }
            _ => TransmitFailure::Unreachable,
        };
        let (agent, url) = self.target(Listening::Public(pin), address, path);
        let mut resp = agent.post(url).send(body).map_err(transport)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(TransmitFailure::Refused {
                status: status.as_u16(),
            });
        }
        resp.body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES as u64)
            .read_to_vec()
            .map_err(transport)
    }

    /// GETs `path` on the admin listener at `address`: the body of a 2xx answer (at most
    /// [`MAX_GET_BYTES`]), any other answer an error quoting its body.
    pub(crate) fn get(&self, address: &str, path: &str) -> Result<Vec<u8>, ClientError> {
        self.get_on(address, path, Listening::Admin)
    }

    /// [`Http::get`] on a node's public listener, unpinned.
    pub(crate) fn get_public(&self, address: &str, path: &str) -> Result<Vec<u8>, ClientError> {
        self.get_on(address, path, Listening::Public(None))
    }

    fn get_on(
        &self,
        address: &str,
        path: &str,
        listening: Listening,
    ) -> Result<Vec<u8>, ClientError> {
        let timeout = self.timeout;
        let problem = |e: ureq::Error| {
            ClientError(match e {
                ureq::Error::Timeout(_) => format!("{address} did not answer in {timeout:?}"),
                ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    format!("{address} did not answer in {timeout:?}")
                }
                ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => {
                    format!("cannot connect to {address}: {e}")
                }
                ureq::Error::Io(e) if is_connect_failure(e.kind()) => {
                    format!("cannot connect to {address}: {e}")
                }
                e => format!("{address}: {e}"),
            })
        };
        let (agent, url) = self.target(listening, address, path);
        let mut resp = agent.get(url).call().map_err(problem)?;
        let status = resp.status();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_GET_BYTES)
            .read_to_vec()
            .map_err(problem)?;
        if !status.is_success() {
            return fail(format!(
                "{address}{path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        Ok(body)
    }
}

/// Whether an I/O error of `kind` means no connection could be made.
fn is_connect_failure(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        kind,
        K::ConnectionRefused
            | K::NotFound
            | K::AddrNotAvailable
            | K::HostUnreachable
            | K::NetworkUnreachable
    )
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    use super::*;

    /// A one-connection HTTP server on loopback: reads one request (head and
    /// `Content-Length` body), then writes `answer` (or nothing, holding the connection
    /// until the client closes it) and returns what it read.
    fn serve_once(answer: Option<Vec<u8>>) -> (String, JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        let address = listener.local_addr().expect("bound").to_string();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("the client connects");
            let mut reader = BufReader::new(stream);
            let mut request = Vec::new();
            let mut content_length = 0usize;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("a request line");
                request.extend_from_slice(line.as_bytes());
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    content_length = v.trim().parse().expect("a length");
                }
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut body = vec![0u8; content_length];
            reader.read_exact(&mut body).expect("the body");
            request.extend_from_slice(&body);
            let mut stream = reader.into_inner();
            match answer {
                Some(bytes) => {
                    let _ = stream.write_all(&bytes);
                }
                // Silent: wait for the client to give up and close.
                None => {
                    let _ = stream.read_to_end(&mut Vec::new());
                }
            }
            request
        });
        (address, server)
    }

    fn answer(status: &str, body: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn post_returns_the_body_of_a_2xx_answer_and_sends_only_the_needed_headers() {
        let (address, server) = serve_once(Some(answer("200 OK", b"reply")));
        let got = Http::new(REQUEST_TIMEOUT, Links::InsecurePlaintext)
            .post(&address, None, ONION_PATH, b"packet");
        assert_eq!(got, Ok(b"reply".to_vec()));
        let request = String::from_utf8(server.join().unwrap()).unwrap();
        assert!(
            request.starts_with("POST /v1/onion HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.ends_with("\r\n\r\npacket"), "{request}");
        let lower = request.to_ascii_lowercase();
        assert!(!lower.contains("user-agent"), "{request}");
        assert!(!lower.contains("accept"), "{request}");
    }

    #[test]
    fn post_maps_a_refusal_to_refused_with_its_status() {
        for status in [
            "429 Too Many Requests",
            "404 Not Found",
            "503 Service Unavailable",
        ] {
            let (address, server) = serve_once(Some(answer(status, b"{\"error\":\"x\"}")));
            let got = Http::new(REQUEST_TIMEOUT, Links::InsecurePlaintext)
                .post(&address, None, ONION_PATH, b"packet");
            let code: u16 = status[..3].parse().unwrap();
            assert_eq!(got, Err(TransmitFailure::Refused { status: code }));
            server.join().unwrap();
        }
    }

    #[test]
    fn post_reads_an_answer_of_one_mib_and_refuses_a_larger_one_as_unreachable() {
        let (address, server) = serve_once(Some(answer("200 OK", &vec![7u8; MAX_ANSWER_BYTES])));
        let got = Http::new(REQUEST_TIMEOUT, Links::InsecurePlaintext)
            .post(&address, None, ONION_PATH, b"packet");
        assert_eq!(got.map(|b| b.len()), Ok(MAX_ANSWER_BYTES));
        server.join().unwrap();

        let too_long = vec![7u8; MAX_ANSWER_BYTES + 1];
        let (address, server) = serve_once(Some(answer("200 OK", &too_long)));
        let got = Http::new(REQUEST_TIMEOUT, Links::InsecurePlaintext)
            .post(&address, None, ONION_PATH, b"packet");
        assert_eq!(got, Err(TransmitFailure::Unreachable));
        server.join().unwrap();
    }

    #[test]
    fn post_to_a_closed_port_is_unreachable() {
        let address = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let got = Http::new(REQUEST_TIMEOUT, Links::InsecurePlaintext)
            .post(&address, None, ONION_PATH, b"packet");
        assert_eq!(got, Err(TransmitFailure::Unreachable));
    }

    #[test]
    fn post_to_a_silent_node_times_out() {
        let (address, server) = serve_once(None);
        let got = Http::new(Duration::from_millis(300), Links::InsecurePlaintext)
            .post(&address, None, ONION_PATH, b"packet");
        assert_eq!(got, Err(TransmitFailure::Timeout));
        server.join().unwrap();
    }

    #[test]
    fn get_quotes_the_body_of_a_non_2xx_answer_and_returns_a_2xx_one() {
        let (address, server) = serve_once(Some(answer("503 Service Unavailable", b"busy")));
        let got = Http::new(REQUEST_TIMEOUT, Links::InsecurePlaintext).get(&address, "/health");
        let message = got.expect_err("a 503 is an error").0;
        assert!(message.contains("/health answered 503"), "{message}");
        assert!(message.ends_with(": busy"), "{message}");
        server.join().unwrap();

        let (address, server) = serve_once(Some(answer("200 OK", b"{}")));
        assert_eq!(get(&address, "/health").unwrap(), b"{}");
        let request = String::from_utf8(server.join().unwrap()).unwrap();
        assert!(request.starts_with("GET /health HTTP/1.1\r\n"), "{request}");
    }
}

#[cfg(test)]
mod inbox_file_tests {
    use super::*;
    use proto_core::Namespace;
    use proto_core::fragment::Received;
    use proto_core::store::message_hash;

    fn part(keys: &RecipientKeys, body: &[u8]) -> StoredPart {
        StoredPart {
            hash: message_hash(&keys.identity.recipient_id(), Namespace::DIRECT, body),
            expiry: now().plus_millis(3_600_000),
            body: body.to_vec(),
        }
    }

    #[test]
    fn a_message_split_over_two_fetches_comes_out_once_across_a_saved_inbox() {
        let keys = RecipientKeys::generate(&mut rng());
        let message: Vec<u8> = (0..5000u32).map(|i| (i % 253) as u8).collect();
        let bodies = seal_message(&keys.contact(), &message).unwrap();
        assert!(bodies.len() > 2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alice.key.inbox");
        let recipient = keys.identity.recipient_id();

        // First fetch: all fragments but the last, saved.
        let mut inbox = InboxFile::load(&path).unwrap().restore(&keys).unwrap();
        for body in &bodies[..bodies.len() - 1] {
            inbox.receive(&recipient, &keys.encryption, part(&keys, body), now());
        }
        assert!(inbox.poll_received().is_none());
        InboxFile::of(&inbox).save(&path).unwrap();

        // Second fetch, in a new process: the last fragment completes the message.
        let mut inbox = InboxFile::load(&path).unwrap().restore(&keys).unwrap();
        assert_eq!(inbox.waiting().count(), 1, "the saved fragments are back");
        inbox.receive(
            &recipient,
            &keys.encryption,
            part(&keys, bodies.last().unwrap()),
            now(),
        );
        match inbox.poll_received() {
            Some(Received::Message { message: got, .. }) => assert_eq!(got, message),
            other => panic!("expected the message, got {other:?}"),
        }
        InboxFile::of(&inbox).save(&path).unwrap();
        let saved = InboxFile::load(&path).unwrap();
        assert!(saved.waiting.is_empty());
        assert_eq!(saved.finished.len(), 1);

        // Third fetch from another member: the same fragments again give nothing.
        let mut inbox = saved.restore(&keys).unwrap();
        for body in &bodies {
            inbox.receive(&recipient, &keys.encryption, part(&keys, body), now());
        }
        assert!(inbox.poll_received().is_none(), "given out once");
        assert_eq!(inbox.waiting().count(), 0);
    }

    #[test]
    fn a_damaged_inbox_file_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.inbox");
        std::fs::write(&path, b"{not json").unwrap();
        let e = InboxFile::load(&path).unwrap_err();
        assert!(e.contains("is damaged") && e.contains("delete it"), "{e}");
    }
}
