//! The client side: learn the network from one seed, build fresh 3-hop paths, and send
//! store and retrieve requests through them, with bodies end-to-end encrypted to the
//! recipient.
//!
//! Everything cryptographic is the core's (packet build, reply open, request signing,
//! receipt verification, sealed bodies); this module picks paths, moves bytes and keeps
//! the files a user owns (recipient keys, fetch cursors). Invariants: a store counts as
//! delivered only when the answer carries W valid receipts from the recipient's swarm;
//! every descriptor used for a path was verified from its signature; a redirect is
//! followed at most once per request.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use proto_core::keys::{Descriptor, IdentityKey};
use proto_core::node::{Endpoint, NodeConfig};
use proto_core::packet::{self, MAX_PAYLOAD, PACKET_LEN, PathHop, PathKeys};
use proto_core::reply::{self, HopFailure, Opened};
use proto_core::request::{
    MessageView, Request, Response, RetrieveRequest, StoreAck, StoreRequest,
};
use proto_core::sealed::{self, Contact, EncryptionKey, SEAL_OVERHEAD};
use proto_core::store::message_hash;
use proto_core::{MessageHash, Namespace, NodeId, RecipientId};
use rand_core::{CryptoRng, Rng, UnwrapErr};
use serde::{Deserialize, Serialize};

use crate::api;
use crate::host::{exchange, now};

/// Hops of every path the client builds.
pub const PATH_HOPS: usize = 3;
/// How long one request through a path may take before the client gives up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a packet stays valid (hops refuse it afterwards).
const PACKET_LIFETIME_MS: u64 = 60_000;
/// How long stored messages live unless the sender says otherwise: 14 days, the maximum.
pub const DEFAULT_TTL_MS: u64 = proto_core::store::MAX_TTL_MS;
/// Fresh paths tried per swarm member before moving to the next (a relay may be down).
pub const PATHS_PER_MEMBER: usize = 3;
/// Messages asked for per retrieve page.
const PAGE: u16 = 50;
/// Hashes of fetched messages remembered, so a message seen on one swarm member is not
/// shown again when the next fetch reads another member.
const SEEN_MEMORY: usize = 10_000;

/// Writes `bytes` to a new file readable by its owner only (mode 0600), synced to disk.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

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
    identity: String,
    encryption: String,
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

    /// Saves the keys to a new private file (refuses to overwrite one).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let file = KeyFile {
            identity: hex::encode(&self.identity.to_seed()[..]),
            encryption: hex::encode(&self.encryption.to_secret_bytes()[..]),
        };
        let text = format!(
            "# GhostNodes recipient keys: keep this file private.\n# contact: {}\n{}",
            self.contact(),
            toml::to_string(&file).expect("two strings always serialize")
        );
        write_private(path, text.as_bytes())
    }

    /// Loads keys saved by [`RecipientKeys::save`].
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
        let file: KeyFile = toml::from_str(&text)
            .map_err(|e| format!("{} is not a ghost key file: {e}", path.display()))?;
        let secret = |name: &str, hex_text: &str| -> Result<[u8; 32], String> {
            let mut out = [0u8; 32];
            hex::decode_to_slice(hex_text, &mut out)
                .map_err(|_| format!("{}: {name} is not 64 hex digits", path.display()))?;
            Ok(out)
        };
        Ok(Self {
            identity: IdentityKey::from_seed(&secret("identity", &file.identity)?),
            encryption: EncryptionKey::from_secret_bytes(secret("encryption", &file.encryption)?),
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

fn fail<T>(message: impl Into<String>) -> Result<T, ClientError> {
    Err(ClientError(message.into()))
}

/// A delivered store: the verified acknowledgement and the path it took.
#[derive(Debug)]
pub struct Delivery {
    /// The acknowledgement, whose receipts were verified against the swarm.
    pub ack: StoreAck,
    /// The three hops, first to last.
    pub path: Vec<Descriptor>,
}

/// Messages fetched from one swarm member, with the path used.
#[derive(Debug)]
pub struct Fetched {
    /// New messages (not seen before), in the member's order.
    pub messages: Vec<MessageView>,
    /// The three hops, first to last.
    pub path: Vec<Descriptor>,
}

/// Where a recipient's fetches stopped, per swarm member (cursors are per node), and
/// which messages were already shown.
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
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "cursor file {} is damaged ({e}); delete it to start over",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Saves cursors atomically (write a temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_vec(self).expect("maps of strings and integers serialize");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("cannot save cursors to {}: {e}", path.display()))
    }

    fn remember(&mut self, hash: &MessageHash) -> bool {
        let text = hash.to_string();
        if self.seen.contains(&text) {
            return false;
        }
        if self.seen.len() >= SEEN_MEMORY {
            self.seen.pop_front();
        }
        self.seen.push_back(text);
        true
    }
}

/// A view of the network learned from one seed node.
pub struct Client {
    seed: String,
    nodes: Vec<Descriptor>,
    write_quorum: usize,
    ttl_ms: u64,
    /// Nodes a hop reported unreachable (or that refused our connection): left out of
    /// later paths while enough others remain.
    suspects: RefCell<BTreeSet<NodeId>>,
}

impl Client {
    /// Asks `seed` for the network (`GET /v1/nodes/bootstrap`) and verifies every node.
    pub fn connect(seed: &str) -> Result<Self, ClientError> {
        let body = get(seed, "/v1/nodes/bootstrap")?;
        let nodes = api::parse_nodes(&body).map_err(|e| ClientError(format!("{seed}: {e}")))?;
        Ok(Self {
            seed: seed.to_owned(),
            nodes,
            write_quorum: NodeConfig::default().write_quorum,
            ttl_ms: DEFAULT_TTL_MS,
            suspects: RefCell::new(BTreeSet::new()),
        })
    }

    /// Requires `w` valid receipts before a store counts as delivered (default: the
    /// core's default write quorum, 2). Match the network's `node.write_quorum`.
    #[must_use]
    pub fn with_write_quorum(mut self, w: usize) -> Self {
        self.write_quorum = w;
        self
    }

    /// Asks the swarm to keep stored messages for `ttl_ms` (default 14 days, the most a
    /// node accepts unless configured lower).
    #[must_use]
    pub fn with_ttl_ms(mut self, ttl_ms: u64) -> Self {
        self.ttl_ms = ttl_ms;
        self
    }

    /// Verified descriptors of the nodes known.
    #[must_use]
    pub fn nodes(&self) -> &[Descriptor] {
        &self.nodes
    }

    /// The recipient's swarm as the seed sees it (`GET /v1/nodes/swarm/{id}`).
    pub fn swarm(&self, recipient: &RecipientId) -> Result<Vec<Descriptor>, ClientError> {
        let body = get(&self.seed, &format!("/v1/nodes/swarm/{recipient}"))?;
        let swarm =
            api::parse_nodes(&body).map_err(|e| ClientError(format!("{}: {e}", self.seed)))?;
        if swarm.is_empty() {
            return fail(format!("{} knows no swarm for {recipient}", self.seed));
        }
        Ok(swarm)
    }

    /// A fresh path ending at `last`: two other nodes picked at random, all distinct.
    pub fn path_to<R: Rng + ?Sized>(
        &self,
        last: &Descriptor,
        rng: &mut R,
    ) -> Result<Vec<Descriptor>, ClientError> {
        let others = self.nodes.iter().filter(|d| d.node_id() != last.node_id());
        let mut relays: Vec<Descriptor> = others
            .clone()
            .filter(|d| !self.is_suspect(d))
            .copied()
            .collect();
        if relays.len() < PATH_HOPS - 1 {
            // Too few unsuspected nodes: suspicion may be stale, so use every node.
            relays = others.copied().collect();
        }
        if relays.len() < PATH_HOPS - 1 {
            return fail(format!(
                "the network has {} nodes; a {PATH_HOPS}-hop path needs {PATH_HOPS}",
                relays.len() + 1
            ));
        }
        // Partial Fisher–Yates: the first PATH_HOPS−1 entries become a uniform sample.
        for i in 0..PATH_HOPS - 1 {
            let span = u64::try_from(relays.len() - i).expect("a node count fits u64");
            let j = i + usize::try_from(rng.next_u64() % span).expect("below the node count");
            relays.swap(i, j);
        }
        relays.truncate(PATH_HOPS - 1);
        relays.push(*last);
        Ok(relays)
    }

    /// Sends `request` through `path` and authenticates the answer.
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
        let mut answer = smol::block_on(exchange(
            first,
            Endpoint::Onion,
            packet.to_vec(),
            REQUEST_TIMEOUT,
        ))
        .map_err(|e| {
            self.suspects.borrow_mut().insert(path[0].node_id());
            ClientError(format!("first hop {first} did not answer: {e:?}"))
        })?;
        match reply::open(keys.reply_keys(), &mut answer) {
            Ok(Opened::Response { body }) => Response::decode(body)
                .map_err(|e| ClientError(format!("the final hop's answer is malformed: {e}"))),
            Ok(Opened::Failed { hop, failure, .. }) => {
                if matches!(
                    failure,
                    HopFailure::NextHopUnreachable | HopFailure::NextHopTimeout
                ) && let Some(next) = path.get(hop + 1)
                {
                    self.suspects.borrow_mut().insert(next.node_id());
                }
                fail(format!(
                    "hop {} ({}) failed: {failure}",
                    hop + 1,
                    path.get(hop).map_or("?", |d| d.address().as_str())
                ))
            }
            Err(e) => fail(format!("the answer did not authenticate: {e}")),
        }
    }

    /// Stores `body` (already sealed) for `recipient` through a fresh 3-hop path ending
    /// at a swarm member, and verifies the W receipts. Tries each member in turn (those
    /// not suspected of being down first), each with up to [`PATHS_PER_MEMBER`] fresh
    /// paths; follows one redirect.
    pub fn store(&self, recipient: &RecipientId, body: &[u8]) -> Result<Delivery, ClientError> {
        let mut swarm = self.swarm(recipient)?;
        let mut last_error = ClientError("the swarm is empty".into());
        let mut rng = UnwrapErr(getrandom::SysRng);
        for _redirects in 0..2 {
            let mut redirect = None;
            'members: for member in self.by_suspicion(&swarm) {
                for try_number in 0..PATHS_PER_MEMBER {
                    // A member suspected of being down gets one path, not several.
                    if try_number > 0 && self.is_suspect(&member) {
                        continue 'members;
                    }
                    let path = self.path_to(&member, &mut rng)?;
                    let request = Request::Store(StoreRequest {
                        recipient: *recipient,
                        namespace: Namespace::DIRECT,
                        timestamp: now(),
                        ttl_ms: self.ttl_ms,
                        pow_nonce: 0,
                        body,
                    });
                    match self.request(&path, &request, None) {
                        Ok(Response::Stored(ack)) => {
                            let members: Vec<NodeId> =
                                swarm.iter().map(Descriptor::node_id).collect();
                            let expected = message_hash(recipient, Namespace::DIRECT, body);
                            ack.verify_quorum(&expected, recipient, &members, self.write_quorum)
                                .map_err(|e| {
                                    ClientError(format!("the acknowledgement does not hold: {e}"))
                                })?;
                            return Ok(Delivery { ack, path });
                        }
                        Ok(Response::Redirect { swarm: current }) if !current.is_empty() => {
                            redirect = Some(current);
                            break 'members;
                        }
                        // A refusal is the swarm's answer (quota, full node, ...): another
                        // path would get the same one.
                        Ok(Response::Refused(e)) => return fail(format!("refused: {e}")),
                        Ok(other) => {
                            last_error = ClientError(format!("unexpected answer: {other:?}"));
                        }
                        Err(e) => last_error = e,
                    }
                }
            }
            match redirect {
                Some(current) => swarm = current,
                None => break,
            }
        }
        Err(last_error)
    }

    /// `swarm` with members not suspected of being down first (order otherwise kept).
    fn by_suspicion(&self, swarm: &[Descriptor]) -> Vec<Descriptor> {
        let mut ordered = swarm.to_vec();
        ordered.sort_by_key(|d| self.is_suspect(d));
        ordered
    }

    fn is_suspect(&self, d: &Descriptor) -> bool {
        self.suspects.borrow().contains(&d.node_id())
    }

    /// Reads every new message of `keys`' recipient from one swarm member (the first that
    /// answers), advancing `cursors`. Messages already in `cursors.seen` are skipped.
    pub fn fetch(&self, keys: &IdentityKey, cursors: &mut Cursors) -> Result<Fetched, ClientError> {
        let swarm = self.swarm(&keys.recipient_id())?;
        let mut last_error = ClientError("the swarm is empty".into());
        for member in &self.by_suspicion(&swarm) {
            match self.fetch_from(member, keys, cursors) {
                Ok(fetched) => return Ok(fetched),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// Reads every new message of `keys`' recipient from `member`, through up to
    /// [`PATHS_PER_MEMBER`] fresh paths.
    pub fn fetch_from(
        &self,
        member: &Descriptor,
        keys: &IdentityKey,
        cursors: &mut Cursors,
    ) -> Result<Fetched, ClientError> {
        let mut rng = UnwrapErr(getrandom::SysRng);
        let mut last_error = ClientError("no path tried".into());
        for _ in 0..PATHS_PER_MEMBER {
            let path = self.path_to(member, &mut rng)?;
            match self.walk(&path, keys, cursors) {
                Ok(messages) => return Ok(Fetched { messages, path }),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    fn walk(
        &self,
        path: &[Descriptor],
        keys: &IdentityKey,
        cursors: &mut Cursors,
    ) -> Result<Vec<MessageView>, ClientError> {
        let member = path[PATH_HOPS - 1].node_id().to_string();
        let mut after = cursors.after.get(&member).copied().unwrap_or(0);
        let mut fresh = Vec::new();
        loop {
            let request = Request::Retrieve(RetrieveRequest {
                recipient: keys.recipient_id(),
                namespace: Namespace::DIRECT,
                timestamp: now(),
                after,
                limit: PAGE,
            });
            match self.request(path, &request, Some(keys))? {
                Response::Messages { messages, more } => {
                    for m in messages {
                        after = after.max(m.seq);
                        if cursors.remember(&m.hash) {
                            fresh.push(m);
                        }
                    }
                    cursors.after.insert(member.clone(), after);
                    if !more {
                        return Ok(fresh);
                    }
                }
                Response::Refused(e) => return fail(format!("refused: {e}")),
                other => return fail(format!("unexpected answer: {other:?}")),
            }
        }
    }
}

/// Builds an onion packet carrying `payload` along `path` with fresh ephemeral keys,
/// valid for a minute; the keys open the answer.
pub fn build_packet(
    path: &[Descriptor],
    payload: &[u8],
) -> Result<([u8; PACKET_LEN], PathKeys), ClientError> {
    let hops: Vec<PathHop> = path
        .iter()
        .map(|d| PathHop {
            node: d.node_id(),
            onion_key: d.onion_key(),
        })
        .collect();
    let mut packet = [0u8; PACKET_LEN];
    let keys = packet::build(
        &hops,
        payload,
        now().plus_millis(PACKET_LIFETIME_MS),
        &mut UnwrapErr(getrandom::SysRng),
        &mut packet,
    )
    .map_err(|e| ClientError(format!("cannot build the packet: {e}")))?;
    Ok((packet, keys))
}

/// Seals `text` for `to` (end-to-end: only the recipient's encryption key opens it).
pub fn seal_for(to: &Contact, text: &[u8]) -> Result<Vec<u8>, ClientError> {
    let max = proto_core::store::DEFAULT_MAX_BODY - SEAL_OVERHEAD;
    if text.len() > max {
        return fail(format!(
            "the message is {} bytes; at most {max} fit in one packet",
            text.len()
        ));
    }
    let mut out = vec![0u8; text.len() + SEAL_OVERHEAD];
    let n = sealed::seal(to, text, &mut UnwrapErr(getrandom::SysRng), &mut out)
        .map_err(|e| ClientError(format!("cannot seal the message: {e}")))?;
    out.truncate(n);
    Ok(out)
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

/// A plain `GET` of `path` on `address`; a non-200 answer is an error quoting its body.
pub fn get(address: &str, path: &str) -> Result<Vec<u8>, ClientError> {
    smol::block_on(get_async(address, path))
}

async fn get_async(address: &str, path: &str) -> Result<Vec<u8>, ClientError> {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    let attempt = async {
        let mut sender = crate::host::connect(address).await.map_err(ClientError)?;
        let req = hyper::Request::get(path)
            .header("host", address)
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError(format!("bad request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError(format!("{address}: {e}")))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError(format!("{address}: {e}")))?
            .to_bytes();
        if !status.is_success() {
            return fail(format!(
                "{address}{path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        Ok(body.to_vec())
    };
    let give_up = async {
        smol::Timer::after(REQUEST_TIMEOUT).await;
        fail(format!("{address} did not answer in {REQUEST_TIMEOUT:?}"))
    };
    smol::future::or(attempt, give_up).await
}
