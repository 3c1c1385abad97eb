//! Test vectors for every construction of `docs/PROTOCOL.md` besides the onion packet
//! (`vectors.rs`, `onion-v2.txt`) and the ring (`ring_vectors.rs`, `ring-v2.txt`):
//!
//! - `tests/vectors/descriptor-v2.txt`: descriptors, their signature pre-hash, descriptors
//!   that must be refused, the 24-hour plausibility rule and node-ID work (sections 1, 8.1);
//! - `tests/vectors/request-v2.txt`: every final-hop request kind, requests that must be
//!   refused, receipts, every response kind and every error byte (section 7);
//! - `tests/vectors/pow-v2.txt`: the proof-of-work input, the first nonce that meets
//!   difficulties 8, 12 and 16, and the nonce before it, which fails (section 7);
//! - `tests/vectors/peer-v2.txt`: every node-to-node envelope kind, every peer answer, every
//!   peer refusal and copy-refusal code, probe answers and envelopes that must be refused
//!   (sections 8, 8.1).
//!
//! Each file is a list of `[kind name]` sections of `key = value` lines (`#` starts a
//! comment; hex is lowercase, `-` is the empty string or list, integers are decimal). A
//! section starts with its inputs; the lines after them are what the inputs must give. The
//! test parses the committed file and recomputes every output line from the file's own
//! inputs with `proto-core` (and, for signatures, pre-hashes, layouts and hashes, with an
//! independent reference built on `sha2`, `ed25519-dalek` and `x25519-dalek`), decodes the
//! bytes back and checks they give the inputs again and that every signature verifies. So
//! the files stand alone for another implementation. A second test requires each file to
//! be exactly what the generator writes, so no byte (comments included) changes unnoticed.
//!
//! Any change to these encodings is a protocol version change; the files are regenerated
//! deliberately with
//! `GHOST_UPDATE_VECTORS=1 cargo test -p proto-core --all-features --test protocol_vectors`.
#![cfg(feature = "alloc")]

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt::Write as _;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use proto_core::TlsKeyHash;
use proto_core::directory::{MAX_DESCRIPTOR_AHEAD_MS, is_plausible};
use proto_core::keys::{DESCRIPTOR_SIGNING_CONTEXT, MAX_DESCRIPTOR_LEN, NODE_ID_WORK_CONTEXT};
use proto_core::peer::{
    self, CopyRefusal, PEER_SIGNING_CONTEXT, PROBE_NONCE_LEN, PROBE_SIGNING_CONTEXT, PeerError,
    PeerRequest, PeerResponse, Session, WireMessage,
};
use proto_core::request::{
    DEFAULT_AUTH_WINDOW_MS, DeleteRequest, DeleteSelector, HashList, MessageView, Origin,
    POW_CONTEXT, RECEIPT_SIGNING_CONTEXT, REQUEST_SIGNING_CONTEXT, Receipt, Request, RequestError,
    Response, RetrieveRequest, SIGNATURE_LEN, SignedRequest, StoreAck, StoreRequest,
    UpdateExpiryRequest,
};
use proto_core::store::message_hash;
use proto_core::{
    Address, Descriptor, DescriptorError, Epoch, IdentityKey, MessageHash, Namespace, NodeId,
    OnionKey, RecipientId, Timestamp,
};
use sha2::{Digest as _, Sha256};

// ---------------------------------------------------------------------------------------
// Fixed inputs.
// ---------------------------------------------------------------------------------------

/// The vectors' clock: 2027-01-15T08:00:00Z, in ms.
const NOW: u64 = 1_800_000_000_000;
/// The recipient who signs every request: Ed25519 seed of 32 bytes of value 42.
const OWNER_SEED: [u8; 32] = [42; 32];
/// When the final hop received the store (NOW + 250 ms): the expiry it keeps.
const ARRIVAL: u64 = NOW + 250;
const TTL_MS: u64 = 86_400_000;
const DIRECT_BODY: &[u8] = b"hello, ghost";
const SECOND_BODY: &[u8] = b"second message";
const OWNER_ONLY_BODY: &[u8] = b"profile v1";
const OWNER_ONLY_NAMESPACE: u16 = 0x8000;
/// Probe nonce: bytes 0x00, 0x01, ..., 0x0f.
const PROBE_NONCE: [u8; PROBE_NONCE_LEN] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
/// Most messages' TTL a member accepts (14 days), for checking origins.
const MAX_TTL_MS: u64 = 14 * 86_400_000;

/// The protocol version these vectors are of: the first byte of every descriptor, request
/// and envelope.
const VERSION: u8 = 2;

/// Node `n`: Ed25519 identity seed of 32 bytes of value `n`.
fn node_seed(n: u8) -> [u8; 32] {
    [n; 32]
}

/// Node `n`'s X25519 onion secret: 32 bytes of value `0x40 + n`.
fn onion_secret(n: u8) -> [u8; 32] {
    [0x40 + n; 32]
}

/// Node `n`'s Ed25519 TLS key seed: 32 bytes of value `0x80 + n`.
fn tls_seed(n: u8) -> [u8; 32] {
    [0x80 + n; 32]
}

/// The descriptor's `tls_key_hash` of a TLS key seed: SHA-256 of its Ed25519 public key,
/// computed with the reference crates.
fn reference_tls_key_hash(seed: &[u8; 32]) -> [u8; 32] {
    sha256(&SigningKey::from_bytes(seed).verifying_key().to_bytes())
}

fn node_address(n: u8) -> String {
    if n == 3 {
        "node-3.example.net:443".to_owned()
    } else {
        format!("127.0.0.1:900{n}")
    }
}

/// Node `n`'s descriptor: epoch NOW / 1000 (its start time in seconds), valid one hour.
fn node_descriptor(n: u8) -> Descriptor {
    Descriptor::sign(
        &IdentityKey::from_seed(&node_seed(n)),
        &OnionKey::from_secret_bytes(onion_secret(n), Epoch(epoch_now())),
        TlsKeyHash(reference_tls_key_hash(&tls_seed(n))),
        Address::new(&node_address(n)).expect("valid address"),
        Timestamp(NOW + 3_600_000),
    )
}

fn epoch_now() -> u32 {
    u32::try_from(NOW / 1000).expect("fits u32")
}

fn owner() -> IdentityKey {
    IdentityKey::from_seed(&OWNER_SEED)
}

fn direct_hash() -> MessageHash {
    message_hash(&owner().recipient_id(), Namespace::DIRECT, DIRECT_BODY)
}

fn second_hash() -> MessageHash {
    message_hash(&owner().recipient_id(), Namespace::DIRECT, SECOND_BODY)
}

fn owner_only_store() -> StoreRequest<'static> {
    StoreRequest {
        recipient: owner().recipient_id(),
        namespace: Namespace(OWNER_ONLY_NAMESPACE),
        timestamp: Timestamp(NOW),
        ttl_ms: 3_600_000,
        pow_nonce: 0,
        body: OWNER_ONLY_BODY,
    }
}

fn encode_request(req: &Request<'_>, signer: Option<&IdentityKey>) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let n = req.encode(signer, &mut buf).expect("fits");
    buf.truncate(n);
    buf
}

fn encode_descriptor(d: &Descriptor) -> Vec<u8> {
    let mut buf = [0u8; MAX_DESCRIPTOR_LEN];
    let n = d.encode(&mut buf).expect("fits");
    buf[..n].to_vec()
}

// ---------------------------------------------------------------------------------------
// The independent reference: the signature pre-hash and plain Ed25519 (RFC 8032).
// ---------------------------------------------------------------------------------------

/// `len(ctx) (1) ‖ ctx ‖ message`: what SHA-256 hashes before Ed25519 signs the digest.
fn prehash_input(ctx: &[u8], message: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::try_from(ctx.len()).expect("contexts are short")];
    out.extend_from_slice(ctx);
    out.extend_from_slice(message);
    out
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn reference_sign(seed: &[u8; 32], ctx: &[u8], message: &[u8]) -> [u8; 64] {
    SigningKey::from_bytes(seed)
        .sign(&sha256(&prehash_input(ctx, message)))
        .to_bytes()
}

fn reference_verify(signer: &[u8], ctx: &[u8], message: &[u8], sig: &[u8]) -> bool {
    let (Ok(signer), Ok(sig)) = (<[u8; 32]>::try_from(signer), <[u8; 64]>::try_from(sig)) else {
        return false;
    };
    VerifyingKey::from_bytes(&signer).is_ok_and(|k| {
        k.verify_strict(
            &sha256(&prehash_input(ctx, message)),
            &Signature::from_bytes(&sig),
        )
        .is_ok()
    })
}

fn leading_zero_bits(digest: &[u8]) -> u32 {
    let mut bits = 0;
    for b in digest {
        bits += b.leading_zeros();
        if *b != 0 {
            break;
        }
    }
    bits
}

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

// ---------------------------------------------------------------------------------------
// Text: hex, sections, inputs and outputs.
// ---------------------------------------------------------------------------------------

fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "-".to_owned();
    }
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if s == "-" {
        return Ok(Vec::new());
    }
    if !s.len().is_multiple_of(2)
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!("`{s}` is not lowercase hex of whole bytes"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

fn list(items: impl IntoIterator<Item = String>) -> String {
    let v: Vec<String> = items.into_iter().collect();
    if v.is_empty() {
        "-".to_owned()
    } else {
        v.join(" ")
    }
}

struct Line {
    number: usize,
    key: String,
    value: String,
}

struct Section {
    number: usize,
    kind: String,
    name: String,
    lines: Vec<Line>,
}

fn parse(text: &str) -> Result<Vec<Section>, String> {
    let mut sections: Vec<Section> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let (kind, name) = header
                .split_once(' ')
                .ok_or_else(|| format!("line {number}: expected `[kind name]`"))?;
            if sections.iter().any(|s| s.kind == kind && s.name == name) {
                return Err(format!("line {number}: a second section [{kind} {name}]"));
            }
            sections.push(Section {
                number,
                kind: kind.to_owned(),
                name: name.to_owned(),
                lines: Vec::new(),
            });
            continue;
        }
        let (key, value) = line
            .split_once(" = ")
            .ok_or_else(|| format!("line {number}: `{line}`: expected `key = value`"))?;
        let section = sections
            .last_mut()
            .ok_or_else(|| format!("line {number}: a vector line before the first [section]"))?;
        section.lines.push(Line {
            number,
            key: key.trim().to_owned(),
            value: value.trim().to_owned(),
        });
    }
    Ok(sections)
}

/// A section's input lines, read by key; the lines never read are its outputs.
struct Inputs<'a> {
    section: &'a Section,
    used: Vec<Cell<bool>>,
}

impl<'a> Inputs<'a> {
    fn new(section: &'a Section) -> Self {
        Self {
            section,
            used: section.lines.iter().map(|_| Cell::new(false)).collect(),
        }
    }

    fn get(&self, key: &str) -> Result<&'a str, String> {
        let i = self
            .section
            .lines
            .iter()
            .position(|l| l.key == key)
            .ok_or_else(|| format!("lacks the input line `{key} = …`"))?;
        self.used[i].set(true);
        Ok(&self.section.lines[i].value)
    }

    fn hex(&self, key: &str) -> Result<Vec<u8>, String> {
        unhex(self.get(key)?).map_err(|e| format!("`{key}`: {e}"))
    }

    fn arr<const N: usize>(&self, key: &str) -> Result<[u8; N], String> {
        let v = self.hex(key)?;
        v.try_into()
            .map_err(|_| format!("`{key}` must be {N} bytes"))
    }

    fn num<T: std::str::FromStr>(&self, key: &str) -> Result<T, String> {
        let v = self.get(key)?;
        v.parse()
            .map_err(|_| format!("`{key} = {v}` is not a number of its type"))
    }

    fn flag(&self, key: &str) -> Result<bool, String> {
        match self.get(key)? {
            "true" => Ok(true),
            "false" => Ok(false),
            v => Err(format!("`{key} = {v}`: expected true or false")),
        }
    }

    fn words(&self, key: &str) -> Result<Vec<&'a str>, String> {
        let v = self.get(key)?;
        Ok(if v == "-" {
            Vec::new()
        } else {
            v.split_whitespace().collect()
        })
    }

    fn hex_list(&self, key: &str) -> Result<Vec<Vec<u8>>, String> {
        self.words(key)?
            .into_iter()
            .map(|w| unhex(w).map_err(|e| format!("`{key}`: {e}")))
            .collect()
    }

    fn hashes(&self, key: &str) -> Result<Vec<MessageHash>, String> {
        self.hex_list(key)?
            .into_iter()
            .map(|h| {
                h.try_into()
                    .map(MessageHash)
                    .map_err(|_| format!("`{key}`: hashes are 32 bytes"))
            })
            .collect()
    }

    fn descriptors(&self, key: &str) -> Result<Vec<Descriptor>, String> {
        self.hex_list(key)?
            .iter()
            .map(|d| Descriptor::decode(d).map_err(|e| format!("`{key}`: {e}")))
            .collect()
    }
}

/// A section's outputs, in order.
#[derive(Default)]
struct Out(Vec<(String, String)>);

impl Out {
    fn put(&mut self, key: impl Into<String>, value: impl ToString) {
        self.0.push((key.into(), value.to_string()));
    }
    fn hex(&mut self, key: impl Into<String>, bytes: &[u8]) {
        self.put(key, hex(bytes));
    }
}

/// What a file's sections covered, checked against the file's required list.
type Coverage = BTreeSet<String>;

// ---------------------------------------------------------------------------------------
// Section kinds: each recomputes its outputs from its inputs.
// ---------------------------------------------------------------------------------------

fn compute(kind: &str, f: &Inputs<'_>, o: &mut Out, cov: &mut Coverage) -> Result<(), String> {
    match kind {
        "descriptor" => descriptor(f, o, cov),
        "refused_descriptor" => refused_descriptor(f, o, cov),
        "plausibility" => plausibility(f, o, cov),
        "node_id_work" => node_id_work(f, o, cov),
        "request" => request(f, o, cov),
        "bad_request" => bad_request(f, o, cov),
        "receipt" => receipt(f, o, cov),
        "response" => response(f, o, cov),
        "error_responses" => error_responses(o, cov),
        "pow" => pow(f, o, cov),
        "envelope" => envelope(f, o, cov),
        "envelope_check" => envelope_check(f, o, cov),
        "answer" => answer(f, o, cov),
        "peer_refusals" => peer_refusals(o, cov),
        _ => Err("not a known section kind".into()),
    }
}

fn descriptor_body(
    version: u8,
    node_id: &[u8; 32],
    onion_public: &[u8; 32],
    epoch: u32,
    expires: u64,
    tls_key_hash: &[u8; 32],
    address: &[u8],
) -> Vec<u8> {
    let mut b = vec![version];
    b.extend_from_slice(node_id);
    b.extend_from_slice(onion_public);
    b.extend_from_slice(&epoch.to_be_bytes());
    b.extend_from_slice(&expires.to_be_bytes());
    b.extend_from_slice(tls_key_hash);
    b.push(u8::try_from(address.len()).expect("short address"));
    b.extend_from_slice(address);
    b
}

fn descriptor(f: &Inputs<'_>, o: &mut Out, cov: &mut Coverage) -> Result<(), String> {
    let seed: [u8; 32] = f.arr("identity_seed")?;
    let secret: [u8; 32] = f.arr("onion_secret")?;
    let epoch: u32 = f.num("epoch")?;
    let expires: u64 = f.num("expires_ms")?;
    let tls_key_hash = reference_tls_key_hash(&f.arr("tls_seed")?);
    let address = f.hex("address")?;
    let text = std::str::from_utf8(&address).map_err(|e| e.to_string())?;
    let address_value = Address::new(text).map_err(|e| e.to_string())?;
    let identity = IdentityKey::from_seed(&seed);
    let onion = OnionKey::from_secret_bytes(secret, Epoch(epoch));
    let d = Descriptor::sign(
        &identity,
        &onion,
        TlsKeyHash(tls_key_hash),
        address_value,
        Timestamp(expires),
    );
    let bytes = encode_descriptor(&d);

    let node_id = identity.node_id();
    ensure(
        node_id.0 == SigningKey::from_bytes(&seed).verifying_key().to_bytes(),
        || "the node id is not the seed's Ed25519 public key".into(),
    )?;
    let onion_public = onion.public().0;
    ensure(
        onion_public == x25519_dalek::x25519(secret, x25519_dalek::X25519_BASEPOINT_BYTES),
        || "the onion public key is not X25519(secret, 9)".into(),
    )?;
    let signed = descriptor_body(
        VERSION,
        &node_id.0,
        &onion_public,
        epoch,
        expires,
        &tls_key_hash,
        &address,
    );
    let (body, signature) = bytes.split_at(bytes.len() - 64);
    ensure(body == signed.as_slice(), || {
        format!(
            "proto-core's descriptor {} is not the layout of section 1",
            hex(&bytes)
        )
    })?;
    ensure(
        reference_sign(&seed, DESCRIPTOR_SIGNING_CONTEXT, &signed) == signature,
        || "the signature is not plain Ed25519 over the pre-hash".into(),
    )?;
    let back = Descriptor::decode(&bytes).map_err(|e| e.to_string())?;
    ensure(
        back == d
            && back.node_id() == node_id
            && back.onion_key().0 == onion_public
            && back.epoch() == Epoch(epoch)
            && back.expires() == Timestamp(expires)
            && back.tls_key_hash().0 == tls_key_hash
            && back.address().as_str() == text,
        || "decoding the descriptor does not give its fields back".into(),
    )?;
    let input = prehash_input(DESCRIPTOR_SIGNING_CONTEXT, &signed);
    o.hex("node_id", &node_id.0);
    o.hex("onion_public", &onion_public);
    o.hex("tls_key_hash", &tls_key_hash);
    o.hex("signed_bytes", &signed);
    o.hex("prehash_input", &input);
    o.hex("prehash", &sha256(&input));
    o.hex("signature", signature);
    o.hex("descriptor", &bytes);
    cov.insert("descriptor".into());
    Ok(())
}

fn descriptor_error_label(e: DescriptorError) -> &'static str {
    match e {
        DescriptorError::Truncated => "truncated",
        DescriptorError::TrailingBytes => "trailing_bytes",
        DescriptorError::UnknownVersion => "unknown_version",
        DescriptorError::BadAddress => "bad_address",
        DescriptorError::BadSignature => "bad_signature",
        DescriptorError::BufferTooSmall { .. } => "buffer_too_small",
        _ => "unknown_error",
    }
}

fn refused_descriptor(f: &Inputs<'_>, o: &mut Out, cov: &mut Coverage) -> Result<(), String> {
    let bytes = f.hex("bytes")?;
    // Whether the last 64 bytes are the named node's signature over everything before:
    // the refusal must then come from the layout, not from the signature.
    let verifies = bytes.len() > 64 + 33 && {
        let (body, sig) = bytes.split_at(bytes.len() - 64);
        reference_verify(&body[1..33], DESCRIPTOR_SIGNING_CONTEXT, body, sig)
    };
    let err = match Descriptor::decode(&bytes) {
        Ok(_) => return Err("proto-core accepts this descriptor".into()),
        Err(e) => descriptor_error_label(e),
    };
    o.put("signature_verifies", verifies);
    o.put("error", err);
    cov.insert(format!("refused {err}"));
    Ok(())
}

fn plausibility(f: &Inputs<'_>, o: &mut Out, cov: &mut Coverage) -> Result<(), String> {
    let d = Descriptor::decode(&f.hex("descriptor")?).map_err(|e| e.to_string())?;
    let now = Timestamp(f.num("now_ms")?);
    let plausible = is_plausible(&d, now);
    let horizon = now.0 + MAX_DESCRIPTOR_AHEAD_MS;
    ensure(
        plausible == (d.expires().0 <= horizon && u64::from(d.epoch().0) <= horizon / 1000),
        || "is_plausible disagrees with the 24-hour rule of section 1".into(),
    )?;
    o.put("valid_at_now", d.is_valid_at(now));
    o.put("plausible", plausible);
    cov.insert(format!("plausible {plausible}"));
    Ok(())
}

fn node_id_work(f: &Inputs<'_>, o: &mut Out, cov: &mut Coverage) -> Result<(), String> {
    let id = IdentityKey::from_seed(&f.arr("identity_seed")?).node_id();
    let mut input = NODE_ID_WORK_CONTEXT.to_vec();
    input.extend_from_slice(&id.0);
    let digest = sha256(&input);
    let bits = leading_zero_bits(&digest);
    ensure(proto_core::keys::node_id_work(&id) == bits, || {
        format!(
            "keys::node_id_work gives {}",
            proto_core::keys::node_id_work(&id)
        )
    })?;
    o.hex("node_id", &id.0);
    o.hex("work_input", &input);
    o.hex("work_digest", &digest);
    o.put("work_bits", bits);
    cov.insert("node_id_work".into());
    if bits >= 8 {
        cov.insert("node_id_work >= 8".into());
    }
    Ok(())
}

fn request(f: &Inputs<'_>, o: &mut Out, cov: &mut Coverage) -> Result<(), String> {
    let method = f.get("method")?;
    let owner = if method == "info" {
        None
    } else {
        Some(IdentityKey::from_seed(&f.arr("owner_seed")?))
    };
    let recipient = owner.as_ref().map(IdentityKey::recipient_id);
    let r = || recipient.ok_or_else(|| "no owner".to_owned());
    let body = if method == "store" {
        f.hex("body")?
    } else {
        Vec::new()
    };
    let selector = if method == "delete" {
        f.get("selector")?
    } else {
        ""
    };
    let hashes: Vec<u8> = if method == "update_expiry" || selector == "hashes" {
        f.hashes("hashes")?.iter().flat_map(|h| h.0).collect()
    } else {
        Vec::new()
    };
    let hash_list = || HashList::from_bytes(&hashes).ok_or_else(|| "too many hashes".to_owned());
    let req = match method {
        "store" => Request::Store(StoreRequest {
            recipient: r()?,
            namespace: Namespace(f.num("namespace")?),
            timestamp: Timestamp(f.num("ts_ms")?),
            ttl_ms: f.num("ttl_ms")?,
            pow_nonce: f.num("pow_nonce")?,
            body: &body,
        }),
        "retrieve" => Request::Retrieve(RetrieveRequest {
            recipient: r()?,
            namespace: Namespace(f.num("namespace")?),
            timestamp: Timestamp(f.num("ts_ms")?),
            after: f.num("after")?,
            limit: f.num("limit")?,
        }),
        "delete" => Request::Delete(DeleteRequest {
            recipient: r()?,
            namespace: Namespace(f.num("namespace")?),
            timestamp: Timestamp(f.num("ts_ms")?),
            selector: match selector {
                "hashes" => DeleteSelector::Hashes(hash_list()?),
                "all" => DeleteSelector::All,
                "before" => DeleteSelector::Before(Timestamp(f.num("before_ms")?)),
                s => return Err(format!("unknown selector `{s}`")),
            },
        }),
        "update_expiry" => Request::UpdateExpiry(UpdateExpiryRequest {
            recipient: r()?,
            namespace: Namespace(f.num("namespace")?),
            timestamp: Timestamp(f.num("ts_ms")?),
            hashes: hash_list()?,
            expiry: Timestamp(f.num("expiry_ms")?),
        }),
        "swarm_lookup" => Request::SwarmLookup { recipient: r()? },
        "info" => Request::Info,
        m => return Err(format!("unknown method `{m}`")),
    };
    let bytes = encode_request(&req, owner.as_ref());
    let decoded = SignedRequest::decode(&bytes).map_err(|e| format!("decoding: {e}"))?;
    ensure(decoded.request == req, || {
        "decoding the bytes does not give the request back".into()
    })?;
    match req.timestamp() {
        Some(ts) => decoded.authenticate(ts, 0),
        None => decoded.verify_owner_signature(),
    }
    .map_err(|e| format!("the request does not authenticate: {e}"))?;
    if let Some(recipient) = recipient {
        o.hex("recipient", &recipient.0);
    }
    if req.requires_signature() {
        let (signed, sig) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        ensure(
            decoded.signature().as_ref().map(|s| &s[..]) == Some(sig),
            || "the decoded signature is not the last 64 bytes".into(),
        )?;
        let seed: [u8; 32] = *owner.as_ref().ok_or("no owner")?.to_seed();
        ensure(
            reference_sign(&seed, REQUEST_SIGNING_CONTEXT, signed) == sig,
            || "the signature is not plain Ed25519 over the pre-hash".into(),
        )?;
        let input = prehash_input(REQUEST_SIGNING_CONTEXT, signed);
        o.hex("prehash_input", &input);
        o.hex("prehash", &sha256(&input));
        o.hex("signature", sig);
    } else {
        ensure(decoded.signature().is_none(), || {
            "an unsigned request decoded with a signature".into()
        })?;
    }
    o.hex("bytes", &bytes);
    if let Request::Store(s) = req {
        let mut input = s.recipient.0.to_vec();
        input.extend_from_slice(&s.namespace.0.to_be_bytes());
        input.extend_from_slice(s.body);
        let hash = message_hash(&s.recipient, s.namespace, s.body);
        ensure(hash.0 == sha256(&input), || {
            "store::message_hash is not SHA-256(recipient ‖ namespace ‖ body)".into()
        })?;
        o.hex("message_hash", &hash.0);
        cov.insert(format!(
            "store {}",
            if req.requires_signature() {
                "signed"
            } else {
                "unsigned"
            }
        ));
    }
    cov.insert(format!("request {method}"));
    if !selector.is_empty() {
        cov.insert(format!("selector {selector}"));
    }
    Ok(())
}

fn bad_request(f: &Inputs<'_>, o: &mut Out, cov: &mut Coverage) -> Result<(), String> {
    let bytes = f.hex("bytes")?;
    let now = Timestamp(f.num("now_ms")?);
    let outcome =
        SignedRequest::decode(&bytes).and_then(|r| r.authenticate(now, DEFAULT_AUTH_WINDOW_MS));
    let Err(e) = outcome else {
        return Err("proto-core accepts this request".into());
    };
    let mut answer = Vec::new();
    Response::Refused(e).encode(&mut answer);
    o.put("error", e.label());
    o.hex("answer", &answer);
    cov.insert(format!("bad_request {}", e.label()));
    Ok(())
}

fn receipt(f: &Inputs<'_>, o: &mut Out, cov: &mut Coverage) -> Result<(), String> {
    let seed: [u8; 32] = f.arr("node_seed")?;
    let hash = MessageHash(f.arr("hash")?);
    let recipient = RecipientId(f.arr("recipient")?);
    let expiry = Timestamp(f.num("expiry_ms")?);
    let key = IdentityKey::from_seed(&seed);
    let r = Receipt::sign(&key, &hash, &recipient, expiry);
    let mut message = hash.0.to_vec();
    message.extend_from_slice(&recipient.0);
    message.extend_from_slice(&expiry.0.to_be_bytes());
    ensure(
        proto_core::request::receipt_message(&hash, &recipient, expiry)[..] == message[..],
        || "receipt_message is not hash ‖ recipient ‖ expiry".into(),
    )?;
    ensure(
        r.node == key.node_id()
            && r.verify(&hash, &recipient, expiry)
            && !r.verify(&hash, &recipient, expiry.plus_millis(1))
            && reference_sign(&seed, RECEIPT_SIGNING_CONTEXT, &message) == r.signature
            && reference_verify(&r.node.0, RECEIPT_SIGNING_CONTEXT, &message, &r.signature),
        || "the receipt signature does not verify as section 7 says".into(),
    )?;
    let input = prehash_input(RECEIPT_SIGNING_CONTEXT, &message);
    o.hex("node_id", &r.node.0);
    o.hex("message", &message);
    o.hex("prehash_input", &input);
    o.hex("prehash", &sha256(&input));
    o.hex("signature", &r.signature);
    cov.insert("receipt".into());
    Ok(())
}

fn response(f: &Inputs<'_>, o: &mut Out, cov: &mut Coverage) -> Result<(), String> {
    let kind = f.get("response")?;
    let value = match kind {
        "stored" => {
            let hash = MessageHash(f.arr("hash")?);
            let expiry = Timestamp(f.num("expiry_ms")?);
            let recipient = RecipientId(f.arr("recipient")?);
            let keys: Vec<IdentityKey> = f
                .hex_list("receipt_seeds")?
                .iter()
                .map(|s| {
                    <[u8; 32]>::try_from(s.as_slice())
                        .map(|s| IdentityKey::from_seed(&s))
                        .map_err(|_| "seeds are 32 bytes".to_owned())
                })
                .collect::<Result<_, _>>()?;
            let ack = StoreAck {
                hash,
                expiry,
                receipts: keys
                    .iter()
                    .map(|k| Receipt::sign(k, &hash, &recipient, expiry))
                    .collect(),
            };
            let swarm: Vec<NodeId> = keys.iter().map(IdentityKey::node_id).collect();
            ack.verify_quorum(&hash, &recipient, &swarm, swarm.len(), expiry..=expiry)
                .map_err(|e| format!("the receipts do not make a quorum: {e}"))?;
            o.put("receipt_nodes", list(swarm.iter().map(|n| hex(&n.0))));
            Response::Stored(ack)
        }
        "messages" => {
            let recipient = RecipientId(f.arr("recipient")?);
            let namespace = Namespace(f.num("namespace")?);
            let n: usize = f.num("messages")?;
            let mut messages = Vec::new();
            for i in 0..n {
                let body = f.hex(&format!("message {i} body"))?;
                let hash = message_hash(&recipient, namespace, &body);
                o.hex(format!("message {i} hash"), &hash.0);
                messages.push(MessageView {
                    seq: f.num(&format!("message {i} seq"))?,
                    hash,
                    stored_at: Timestamp(f.num(&format!("message {i} stored_at_ms"))?),
                    expiry: Timestamp(f.num(&format!("message {i} expiry_ms"))?),
                    body,
                });
            }
            let more = f.flag("more")?;
            cov.insert(format!("more {more}"));
            Response::Messages { messages, more }
        }
        "deleted" => Response::Deleted {
            count: f.num("count")?,
        },
        "expiry_updated" => Response::ExpiryUpdated {
            count: f.num("count")?,
        },
        "swarm" => Response::Swarm {
            members: f.descriptors("descriptors")?,
        },
        "redirect" => Response::Redirect {
            swarm: f.descriptors("descriptors")?,
        },
        "info" => Response::Info {
            version: f.num("version")?,
            node_time: Timestamp(f.num("node_time_ms")?),
            node: NodeId(f.arr("node_id")?),
            pow_difficulty: f.num("pow_difficulty")?,
        },
        k => return Err(format!("unknown response `{k}`")),
    };
    let mut bytes = Vec::new();
    value.encode(&mut bytes);
    ensure(Response::decode(&bytes) == Ok(value), || {
        "decoding the bytes does not give the response back".into()
    })?;
    o.hex("bytes", &bytes);
    cov.insert(format!("response {kind}"));
    Ok(())
}

fn error_responses(o: &mut Out, cov: &mut Coverage) -> Result<(), String> {
    for code in 0..=u8::MAX {
        let Some(e) = RequestError::from_code(code) else {
            if code >= 2 {
                ensure(Response::decode(&[code]).is_err(), || {
                    format!("the single byte {code} decodes although it is no error code")
                })?;
            }
            continue;
        };
        let mut bytes = Vec::new();
        Response::Refused(e).encode(&mut bytes);
        ensure(bytes == [code] && code >= 10 && e.code() == code, || {
            format!("{} is not the single byte {code}", e.label())
        })?;
        ensure(Response::decode(&bytes) == Ok(Response::Refused(e)), || {
            format!("the byte {code} does not decode as {}", e.label())
        })?;
        o.hex(e.label(), &bytes);
    }
    cov.insert("error_responses".into());
    Ok(())
}

fn pow(f: &Inputs<'_>, o: &mut Out, cov: &mut Coverage) -> Result<(), String> {
    let body = f.hex("body")?;
    let mut req = StoreRequest {
        recipient: RecipientId(f.arr("recipient")?),
        namespace: Namespace(f.num("namespace")?),
        timestamp: Timestamp(f.num("ts_ms")?),
        ttl_ms: f.num("ttl_ms")?,
        pow_nonce: 0,
        body: &body,
    };
    let difficulty: u8 = f.num("difficulty")?;
    let nonce = proto_core::request::solve_pow(&req, difficulty, 1 << 24)
        .ok_or("no nonce within 2^24 tries")?;
    let input = |nonce: u64| {
        let mut v = POW_CONTEXT.to_vec();
        v.extend_from_slice(&req.recipient.0);
        v.extend_from_slice(&req.namespace.0.to_be_bytes());
        v.extend_from_slice(&req.timestamp.0.to_be_bytes());
        v.extend_from_slice(&req.ttl_ms.to_be_bytes());
        v.extend_from_slice(&u32::try_from(body.len()).expect("short").to_be_bytes());
        v.extend_from_slice(&body);
        v.extend_from_slice(&nonce.to_be_bytes());
        v
    };
    let good = input(nonce);
    let digest = sha256(&good);
    let bits = leading_zero_bits(&digest);
    ensure(bits >= u32::from(difficulty), || {
        format!("the reference digest has only {bits} leading zero bits")
    })?;
    let failing = nonce
        .checked_sub(1)
        .ok_or("the first nonce already works: choose inputs with a failing nonce")?;
    let bad_digest = sha256(&input(failing));
    let bad_bits = leading_zero_bits(&bad_digest);
    ensure(bad_bits < u32::from(difficulty), || {
        "the nonce before the solution meets the difficulty".into()
    })?;
    req.pow_nonce = failing;
    ensure(
        !proto_core::request::pow_satisfied(&req, difficulty),
        || "pow_satisfied accepts the failing nonce".into(),
    )?;
    req.pow_nonce = nonce;
    ensure(proto_core::request::pow_satisfied(&req, difficulty), || {
        "pow_satisfied refuses the nonce".into()
    })?;
    o.put("nonce", nonce);
    o.hex("input", &good);
    o.hex("digest", &digest);
    o.put("leading_zero_bits", bits);
    o.put("failing_nonce", failing);
    o.hex("failing_digest", &bad_digest);
    o.put("failing_leading_zero_bits", bad_bits);
    let signer = owner();
    let signer = (req.recipient == signer.recipient_id()).then_some(&signer);
    o.hex(
        "store_request",
        &encode_request(&Request::Store(req), signer),
    );
    cov.insert(format!("pow {difficulty}"));
    Ok(())
}

fn wire_messages(f: &Inputs<'_>, o: &mut Out) -> Result<Vec<WireMessage>, String> {
    let n: usize = f.num("messages")?;
    let mut out = Vec::new();
    for i in 0..n {
        let key = |k: &str| format!("message {i} {k}");
        let recipient = RecipientId(f.arr(&key("recipient"))?);
        let namespace = Namespace(f.num(&key("namespace"))?);
        let body = f.hex(&key("body"))?;
        let stored_at = Timestamp(f.num(&key("stored_at_ms"))?);
        let origin = Origin {
            timestamp: Timestamp(f.num(&key("origin_ts_ms"))?),
            ttl_ms: f.num(&key("origin_ttl_ms"))?,
            pow_nonce: f.num(&key("origin_pow_nonce"))?,
            signature: if namespace.requires_owner_signature() {
                Some(f.arr(&key("origin_signature"))?)
            } else {
                None
            },
        };
        origin
            .vouches_for(
                recipient,
                namespace,
                &body,
                stored_at,
                (0, MAX_TTL_MS, DEFAULT_AUTH_WINDOW_MS),
            )
            .map_err(|e| format!("message {i}'s origin does not vouch for it: {e:?}"))?;
        let m = WireMessage {
            recipient,
            namespace,
            stored_at,
            expiry: Timestamp(f.num(&key("expiry_ms"))?),
            body,
            origin,
        };
        o.hex(key("hash"), &m.hash().0);
        out.push(m);
    }
    Ok(out)
}

fn ae_digest(hashes: &[MessageHash]) -> peer::Digest {
    let mut d = peer::Digest::default();
    for h in hashes {
        d.add(h);
    }
    d
}

fn envelope(f: &Inputs<'_>, o: &mut Out, cov: &mut Coverage) -> Result<(), String> {
    let kind = f.get("kind")?;
    let seed: [u8; 32] = f.arr("sender_seed")?;
    let sender = IdentityKey::from_seed(&seed);
    let sent_at = Timestamp(f.num("sent_at_ms")?);
    o.hex("sender", &sender.node_id().0);
    let request = match kind {
        "replicate" => PeerRequest::Replicate(wire_messages(f, o)?),
        "digest" => PeerRequest::Digest {
            digest: ae_digest(&f.hashes("digest_hashes")?),
            start: f.num("start")?,
        },
        "fetch" => PeerRequest::Fetch(f.hashes("hashes")?),
        "gossip" => PeerRequest::Gossip(
            f.descriptors("descriptors")?
                .into_iter()
                .map(Into::into)
                .collect(),
        ),
        "probe" => PeerRequest::Probe {
            nonce: f.arr("nonce")?,
        },
        "relay" => {
            let bytes = f.hex("request")?;
            let r = SignedRequest::decode(&bytes).map_err(|e| e.to_string())?;
            ensure(
                matches!(r.request, Request::Delete(_) | Request::UpdateExpiry(_))
                    && r.verify_owner_signature().is_ok(),
                || "a relay carries an owner-signed delete or update-expiry".into(),
            )?;
            PeerRequest::Relay(bytes)
        }
        "tombstones" => {
            let n: usize = f.num("entries")?;
            let mut entries = Vec::new();
            for i in 0..n {
                let hash = MessageHash(f.arr(&format!("entry {i} hash"))?);
                let delete = f.hex(&format!("entry {i} delete"))?;
                let r = SignedRequest::decode(&delete).map_err(|e| e.to_string())?;
                let names_it = match r.request {
                    Request::Delete(DeleteRequest {
                        selector: DeleteSelector::Hashes(h),
                        ..
                    }) => h.iter().any(|x| x == hash),
                    Request::Delete(_) => true,
                    _ => false,
                };
                ensure(names_it && r.verify_owner_signature().is_ok(), || {
                    format!("entry {i} is not an owner-signed delete reaching its hash")
                })?;
                entries.push((hash, delete));
            }
            PeerRequest::Tombstones(entries)
        }
        k => return Err(format!("unknown envelope kind `{k}`")),
    };
    let bytes = request.encode_signed(&sender, sent_at);
    let sender_pin = TlsKeyHash(reference_tls_key_hash(&tls_seed(seed[0])));
    let got = peer::decode_request(&bytes, sent_at, 0, Session::None, |_| Some(sender_pin))
        .map_err(|e| format!("decoding the envelope: {e}"))?;
    ensure(
        got.sender == sender.node_id() && got.sent_at == sent_at && got.request == request,
        || "decoding the envelope does not give it back".into(),
    )?;
    ensure(
        request.label() == kind && bytes[0] == VERSION && bytes[2..34] == sender.node_id().0,
        || "the envelope header is not version ‖ kind ‖ sender".into(),
    )?;
    let (signed, sig) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
    ensure(
        reference_sign(&seed, PEER_SIGNING_CONTEXT, signed) == sig,
        || "the envelope signature is not plain Ed25519 over the pre-hash".into(),
    )?;
    o.hex(
        "prehash",
        &sha256(&prehash_input(PEER_SIGNING_CONTEXT, signed)),
    );
    o.hex("signature", sig);
    o.hex("bytes", &bytes);
    // On a TLS session whose client key is the sender's: the same bytes, kind | 0x80,
    // no signature. Gossip and probes always carry theirs.
    let session_bytes = request.encode_session(sender.node_id(), sent_at);
    let stranger_kind = matches!(kind, "gossip" | "probe");
    match &session_bytes {
        Some(b) => {
            let mut expected = signed.to_vec();
            expected[1] |= 0x80;
            ensure(!stranger_kind && *b == expected, || {
                "the session envelope is not the signed one with kind | 0x80 and no signature"
                    .into()
            })?;
            let back = peer::decode_request(b, sent_at, 0, Session::Tls(sender_pin), |_| {
                Some(sender_pin)
            })
            .map_err(|e| format!("decoding the session envelope: {e}"))?;
            ensure(back.request == request, || {
                "decoding the session envelope does not give it back".into()
            })?;
            o.hex("session_bytes", b);
        }
        None => {
            ensure(stranger_kind, || format!("{kind} may ride a session"))?;
            o.hex("session_bytes", &[]);
        }
    }
    cov.insert(format!("envelope {kind}"));
    Ok(())
}

fn envelope_check(f: &Inputs<'_>, o: &mut Out, cov: &mut Coverage) -> Result<(), String> {
    let bytes = f.hex("bytes")?;
    let now = Timestamp(f.num("now_ms")?);
    let window: u64 = f.num("window_ms")?;
    let known = f.flag("sender_known")?;
    let session = match f.hex("session")?.as_slice() {
        [] => Session::None,
        key => Session::Tls(TlsKeyHash(
            key.try_into()
                .map_err(|_| "a session key hash is 32 bytes".to_owned())?,
        )),
    };
    // A live sender is known with node 1's descriptor, whose TLS key seed is 0x81.
    let pin = TlsKeyHash(reference_tls_key_hash(&tls_seed(1)));
    match peer::decode_request(&bytes, now, window, session, |_| known.then_some(pin)) {
        Ok(a) => {
            o.put("result", "ok");
            o.put("kind", a.request.label());
            if bytes.get(1).is_some_and(|k| k & 0x80 != 0) {
                cov.insert(format!("envelope_check session ok {}", a.request.label()));
            }
            cov.insert(format!("envelope_check ok {}", a.request.label()));
        }
        Err(e) => {
            o.put("result", e.label());
            o.hex("answer", &PeerResponse::Refused(e).encode());
            cov.insert(format!("envelope_check {}", e.label()));
        }
    }
    Ok(())
}

fn answer(f: &Inputs<'_>, o: &mut Out, cov: &mut Coverage) -> Result<(), String> {
    let kind = f.get("answer")?;
    let value = match kind {
        "stored" => {
            let key = IdentityKey::from_seed(&f.arr("receipt_seed")?);
            let recipient = RecipientId(f.arr("recipient")?);
            let expiry = Timestamp(f.num("expiry_ms")?);
            let receipts = f
                .hashes("receipt_hashes")?
                .into_iter()
                .map(|h| (h, Receipt::sign(&key, &h, &recipient, expiry)))
                .collect::<Vec<_>>();
            for (h, r) in &receipts {
                ensure(r.verify(h, &recipient, expiry), || {
                    "a receipt does not verify".into()
                })?;
            }
            let mut refused = Vec::new();
            for label in f.words("refused_reasons")? {
                let why = CopyRefusal::ALL
                    .into_iter()
                    .find(|r| r.label() == label)
                    .ok_or_else(|| format!("unknown copy refusal `{label}`"))?;
                // The refused message's hash: 32 bytes of the reason's code.
                refused.push((MessageHash([why.code(); 32]), why));
                o.put(format!("reason {label}"), why.code());
                cov.insert(format!("reason {label}"));
            }
            PeerResponse::Stored { receipts, refused }
        }
        "digest_diff" => PeerResponse::DigestDiff {
            digest: ae_digest(&f.hashes("digest_hashes")?),
            hashes: f.hashes("hashes")?,
            truncated: f.flag("truncated")?,
            covered: f
                .words("covered")?
                .into_iter()
                .map(|b| b.parse().map_err(|_| format!("`{b}` is not a bucket")))
                .collect::<Result<_, _>>()?,
        },
        "messages" => PeerResponse::Messages(wire_messages(f, o)?),
        "descriptors" => PeerResponse::Descriptors(
            f.descriptors("descriptors")?
                .into_iter()
                .map(Into::into)
                .collect(),
        ),
        "applied" => PeerResponse::Applied(f.num("count")?),
        "alive" => {
            let seed: [u8; 32] = f.arr("probed_seed")?;
            let probed = IdentityKey::from_seed(&seed);
            let descriptor =
                Descriptor::decode(&f.hex("descriptor")?).map_err(|e| e.to_string())?;
            let nonce: [u8; PROBE_NONCE_LEN] = f.arr("nonce")?;
            let prober = NodeId(f.arr("prober")?);
            ensure(descriptor.node_id() == probed.node_id(), || {
                "the descriptor is not the probed node's".into()
            })?;
            let signature = peer::prove_alive(&probed, &nonce, &prober);
            let mut message = nonce.to_vec();
            message.extend_from_slice(&prober.0);
            ensure(
                peer::verify_alive(&probed.node_id(), &nonce, &prober, &signature)
                    && !peer::verify_alive(
                        &probed.node_id(),
                        &nonce,
                        &probed.node_id(),
                        &signature,
                    )
                    && reference_sign(&seed, PROBE_SIGNING_CONTEXT, &message) == signature,
                || "the probe answer's signature is not over nonce ‖ prober id".into(),
            )?;
            let input = prehash_input(PROBE_SIGNING_CONTEXT, &message);
            o.hex("probe_message", &message);
            o.hex("prehash_input", &input);
            o.hex("prehash", &sha256(&input));
            o.hex("signature", &signature);
            PeerResponse::Alive {
                descriptor: Box::new(descriptor.into()),
                signature,
            }
        }
        k => return Err(format!("unknown answer `{k}`")),
    };
    let bytes = value.encode();
    ensure(PeerResponse::decode(&bytes) == Ok(value), || {
        "decoding the answer does not give it back".into()
    })?;
    o.hex("bytes", &bytes);
    cov.insert(format!("answer {kind}"));
    Ok(())
}

const PEER_ERRORS: [PeerError; 8] = [
    PeerError::Malformed,
    PeerError::BadSignature,
    PeerError::StaleTimestamp,
    PeerError::UnknownSender,
    PeerError::NotInSwarm,
    PeerError::Unavailable,
    PeerError::RateLimited,
    PeerError::UnsupportedVersion,
];

fn peer_refusals(o: &mut Out, cov: &mut Coverage) -> Result<(), String> {
    for e in PEER_ERRORS {
        let bytes = PeerResponse::Refused(e).encode();
        ensure(
            PeerResponse::decode(&bytes) == Ok(PeerResponse::Refused(e)),
            || format!("{} does not decode back", e.label()),
        )?;
        o.hex(e.label(), &bytes);
    }
    cov.insert("peer_refusals".into());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Checking a file.
// ---------------------------------------------------------------------------------------

/// Checks every section of `text`; returns the line numbers of the output lines checked.
fn check(source: &str, text: &str, required: &[&str]) -> Result<Vec<usize>, String> {
    let mut cov = Coverage::new();
    let mut checked = Vec::new();
    for section in parse(text).map_err(|e| format!("{source} {e}"))? {
        let at = format!(
            "{source} line {} [{} {}]",
            section.number, section.kind, section.name
        );
        let inputs = Inputs::new(&section);
        let mut out = Out::default();
        compute(&section.kind, &inputs, &mut out, &mut cov).map_err(|e| format!("{at}: {e}"))?;
        let outputs: Vec<&Line> = section
            .lines
            .iter()
            .zip(&inputs.used)
            .filter(|(_, used)| !used.get())
            .map(|(l, _)| l)
            .collect();
        for i in 0..outputs.len().max(out.0.len()) {
            match (outputs.get(i), out.0.get(i)) {
                (Some(l), Some((key, value))) if l.key == *key => {
                    if l.value != *value {
                        return Err(format!(
                            "{source} line {}: `{} = {}`: mismatch: proto-core gives {value}",
                            l.number, l.key, l.value
                        ));
                    }
                    checked.push(l.number);
                }
                (Some(l), Some((key, _))) => {
                    return Err(format!(
                        "{source} line {}: `{}`: expected the line `{key} = …` here",
                        l.number, l.key
                    ));
                }
                (Some(l), None) => {
                    return Err(format!(
                        "{source} line {}: `{}`: not a known vector line",
                        l.number, l.key
                    ));
                }
                (None, Some((key, value))) => {
                    return Err(format!("{at}: lacks the line `{key} = {value}`"));
                }
                (None, None) => unreachable!(),
            }
        }
    }
    for r in required {
        if !cov.contains(*r) {
            return Err(format!("{source}: the vectors lack {r}"));
        }
    }
    Ok(checked)
}

// ---------------------------------------------------------------------------------------
// Rendering: the inputs of every vector; the outputs come from `compute`.
// ---------------------------------------------------------------------------------------

struct Spec {
    comment: Vec<String>,
    kind: &'static str,
    name: String,
    inputs: Vec<(String, String)>,
}

fn spec(kind: &'static str, name: &str, inputs: &[(&str, String)]) -> Spec {
    Spec {
        comment: Vec::new(),
        kind,
        name: name.to_owned(),
        inputs: inputs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    }
}

impl Spec {
    fn note(mut self, line: &str) -> Self {
        self.comment.push(line.to_owned());
        self
    }
    fn with(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.inputs.push((key.into(), value.to_string()));
        self
    }
}

fn render(header: &[&str], specs: &[Spec]) -> String {
    let mut out = String::new();
    for line in header {
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            writeln!(out, "# {line}").unwrap();
        }
    }
    let mut cov = Coverage::new();
    for s in specs {
        out.push('\n');
        for c in &s.comment {
            writeln!(out, "# {c}").unwrap();
        }
        writeln!(out, "[{} {}]", s.kind, s.name).unwrap();
        let section = Section {
            number: 0,
            kind: s.kind.to_owned(),
            name: s.name.clone(),
            lines: s
                .inputs
                .iter()
                .map(|(k, v)| Line {
                    number: 0,
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
        };
        let inputs = Inputs::new(&section);
        let mut o = Out::default();
        compute(s.kind, &inputs, &mut o, &mut cov)
            .unwrap_or_else(|e| panic!("[{} {}]: {e}", s.kind, s.name));
        for (used, (k, v)) in inputs.used.iter().zip(&s.inputs) {
            assert!(
                used.get(),
                "[{} {}]: input {k} is never read",
                s.kind,
                s.name
            );
            writeln!(out, "{k} = {v}").unwrap();
        }
        for (k, v) in o.0 {
            writeln!(out, "{k} = {v}").unwrap();
        }
    }
    out
}

fn descriptor_hex(n: u8) -> String {
    hex(&encode_descriptor(&node_descriptor(n)))
}

/// A descriptor with arbitrary fields, signed by node `n`'s identity over its bytes.
fn crafted_descriptor(n: u8, version: u8, epoch: u32, expires: u64, address: &[u8]) -> Vec<u8> {
    let identity = IdentityKey::from_seed(&node_seed(n));
    let onion = OnionKey::from_secret_bytes(onion_secret(n), Epoch(epoch));
    let mut b = descriptor_body(
        version,
        &identity.node_id().0,
        &onion.public().0,
        epoch,
        expires,
        &reference_tls_key_hash(&tls_seed(n)),
        address,
    );
    let sig = identity.sign(DESCRIPTOR_SIGNING_CONTEXT, &b);
    b.extend_from_slice(&sig);
    b
}

const DESCRIPTOR_HEADER: &[&str] = &[
    "GhostNodes descriptor test vectors, protocol v2: docs/PROTOCOL.md sections 1 and 8.1.",
    "Checked line by line by",
    "`cargo test -p proto-core --all-features --test protocol_vectors`; regenerated (a protocol",
    "version change) with GHOST_UPDATE_VECTORS=1. Hex is lowercase; integers are decimal.",
    "",
    "descriptor = 2 (1) ‖ node id (32) ‖ onion public (32) ‖ epoch (u32) ‖ expires_ms (u64)",
    "             ‖ tls_key_hash (32) ‖ a (1) ‖ address (a) ‖ signature (64)   integers big-endian",
    "signed_bytes  = everything before the signature",
    "prehash_input = len(ctx) (1 byte) ‖ ctx ‖ signed_bytes,   ctx = \"ghostnodes/v1/descriptor\"",
    "prehash       = SHA-256(prehash_input)",
    "signature     = plain Ed25519 (RFC 8032, not Ed25519ph) of the 32-byte prehash",
    "node_id       = the Ed25519 public key of identity_seed; onion_public = X25519(onion_secret, 9)",
    "tls_key_hash  = SHA-256(the Ed25519 public key of tls_seed): the node's TLS key",
    "",
    "Node n: identity seed = 32 bytes of value n, onion secret = 32 bytes of value 0x40 + n,",
    "TLS key seed = 32 bytes of value 0x80 + n,",
    "epoch = 1800000000 (the start time in seconds), expires_ms = 1800003600000 (one hour after",
    "the vectors' clock, 1800000000000 ms), address 127.0.0.1:900n (node 3: node-3.example.net:443).",
    "",
    "[descriptor NAME]          inputs identity_seed, onion_secret, epoch, expires_ms, tls_seed,",
    "                           address (hex)",
    "[refused_descriptor NAME]  input bytes; signature_verifies = whether the last 64 bytes are",
    "                           the named node's valid signature over the rest; error = why refused",
    "[plausibility NAME]        a node at now_ms keeps a descriptor only while valid_at_now",
    "                           (now <= expires) and plausible: expires <= now + 24 h and",
    "                           epoch <= (now + 24 h) / 1000 (integer division)",
    "[node_id_work NAME]        work_input = \"ghostnodes/v1/node-id-work\" ‖ node id;",
    "                           work_bits = leading zero bits of work_digest = SHA-256(work_input)",
];

fn descriptor_specs() -> Vec<Spec> {
    let mut specs = Vec::new();
    for n in 1..=3 {
        specs.push(spec(
            "descriptor",
            &format!("node_{n}"),
            &[
                ("identity_seed", hex(&node_seed(n))),
                ("onion_secret", hex(&onion_secret(n))),
                ("epoch", epoch_now().to_string()),
                ("expires_ms", (NOW + 3_600_000).to_string()),
                ("tls_seed", hex(&tls_seed(n))),
                ("address", hex(node_address(n).as_bytes())),
            ],
        ));
    }
    let node_1 = encode_descriptor(&node_descriptor(1));
    let (e, x) = (epoch_now(), NOW + 3_600_000);
    let mut bad_sig = node_1.clone();
    *bad_sig.last_mut().unwrap() ^= 0x01;
    let refused = [
        (
            "bad_signature",
            "node_1 with the last signature byte XOR 0x01",
            bad_sig,
        ),
        (
            "address_with_space",
            "node_1 with address `127.0.0.1 :9001`, validly signed",
            crafted_descriptor(1, VERSION, e, x, b"127.0.0.1 :9001"),
        ),
        (
            "empty_address",
            "node_1 with an empty address (a = 0), validly signed",
            crafted_descriptor(1, VERSION, e, x, b""),
        ),
        (
            "control_byte_address",
            "node_1 with address `127.0.0.1:9001\\n`, validly signed",
            crafted_descriptor(1, VERSION, e, x, b"127.0.0.1:9001\n"),
        ),
        (
            "version_1",
            "node_1 with version byte 1 (the previous protocol), validly signed",
            crafted_descriptor(1, 1, e, x, b"127.0.0.1:9001"),
        ),
        (
            "version_3",
            "node_1 with version byte 3, validly signed",
            crafted_descriptor(1, 3, e, x, b"127.0.0.1:9001"),
        ),
        (
            "trailing_byte",
            "node_1 followed by one zero byte",
            [node_1.as_slice(), &[0]].concat(),
        ),
        (
            "truncated",
            "node_1 without its last byte",
            node_1[..node_1.len() - 1].to_vec(),
        ),
    ];
    for (name, how, bytes) in refused {
        specs.push(spec("refused_descriptor", name, &[("bytes", hex(&bytes))]).note(how));
    }
    let horizon = NOW + MAX_DESCRIPTOR_AHEAD_MS;
    let horizon_epoch = u32::try_from(horizon / 1000).unwrap();
    let plausibility = [
        (
            "within_the_hour",
            "node_1 as published",
            node_1.clone(),
            NOW,
        ),
        (
            "expires_at_the_horizon",
            "expires exactly 24 h after now: kept",
            crafted_descriptor(1, VERSION, e, horizon, b"127.0.0.1:9001"),
            NOW,
        ),
        (
            "expires_past_the_horizon",
            "expires 24 h + 1 ms after now: refused",
            crafted_descriptor(1, VERSION, e, horizon + 1, b"127.0.0.1:9001"),
            NOW,
        ),
        (
            "epoch_past_the_horizon",
            "epoch one second after now + 24 h: refused",
            crafted_descriptor(1, VERSION, horizon_epoch + 1, x, b"127.0.0.1:9001"),
            NOW,
        ),
        ("expired", "node_1 one ms after it expired", node_1, x + 1),
    ];
    for (name, how, bytes, now) in plausibility {
        specs.push(
            spec(
                "plausibility",
                name,
                &[("descriptor", hex(&bytes)), ("now_ms", now.to_string())],
            )
            .note(how),
        );
    }
    specs.push(spec(
        "node_id_work",
        "node_1",
        &[("identity_seed", hex(&node_seed(1)))],
    ));
    let worked = (0u64..)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[24..].copy_from_slice(&i.to_be_bytes());
            seed
        })
        .find(|s| proto_core::keys::node_id_work(&IdentityKey::from_seed(s).node_id()) >= 8)
        .expect("a seed with 8 bits of work");
    specs.push(
        spec(
            "node_id_work",
            "worked_8",
            &[("identity_seed", hex(&worked))],
        )
        .note(
            "The first seed 0^24 ‖ i (i a big-endian u64 from 0) whose node id has 8 bits of work.",
        ),
    );
    specs
}

const DESCRIPTOR_REQUIRED: &[&str] = &[
    "descriptor",
    "refused bad_signature",
    "refused bad_address",
    "refused unknown_version",
    "refused trailing_bytes",
    "refused truncated",
    "plausible true",
    "plausible false",
    "node_id_work",
    "node_id_work >= 8",
];

const REQUEST_HEADER: &[&str] = &[
    "GhostNodes final-hop request test vectors, protocol v2: docs/PROTOCOL.md section 7.",
    "Checked line by line by",
    "`cargo test -p proto-core --all-features --test protocol_vectors`; regenerated (a protocol",
    "version change) with GHOST_UPDATE_VECTORS=1. Hex is lowercase; `-` is empty; integers are",
    "decimal; on the wire they are big-endian.",
    "",
    "The recipient (owner) has the Ed25519 seed of 32 bytes of value 42; recipient = its public",
    "key. Requests are made at ts_ms = 1800000000000; the final hop received the store at",
    "1800000000250, so the expiry it keeps is that + ttl_ms. Node n: identity seed of 32 bytes",
    "of value n; descriptors as in descriptor-v2.txt.",
    "",
    "[request NAME]      inputs: method and its fields; outputs: recipient; for signed requests",
    "                    prehash_input = len(ctx) (1 byte) ‖ \"ghostnodes/v1/request\" ‖ every",
    "                    byte before the signature, prehash = SHA-256(prehash_input) and",
    "                    signature = plain Ed25519 of prehash; bytes = the request as the final",
    "                    hop receives it; for stores message_hash = SHA-256(recipient ‖",
    "                    namespace (2) ‖ body). hashes are listed in order, space-separated.",
    "[bad_request NAME]  bytes received at now_ms (window 60000 ms) must be refused with",
    "                    error; answer = the response: the single error code byte",
    "[receipt NAME]      message = hash ‖ recipient ‖ expiry (u64), signed by the node with",
    "                    ctx \"ghostnodes/v1/receipt\"",
    "[response NAME]     a response to one request kind; bytes = the response (inside the",
    "                    sealed reply). stored: receipts by receipt_seeds over (hash, recipient,",
    "                    expiry_ms). messages: each message's hash = SHA-256(recipient ‖",
    "                    namespace ‖ body); more = true is the byte 1.",
    "[error_responses codes]  every error: label = its single-byte response",
];

fn request_specs() -> Vec<Spec> {
    let o = hex(&OWNER_SEED);
    let ts = NOW.to_string();
    let owner_key = owner();
    let mut specs = vec![
        spec(
            "request",
            "store_direct",
            &[
                ("method", "store".into()),
                ("owner_seed", o.clone()),
                ("namespace", "0".into()),
                ("ts_ms", ts.clone()),
                ("ttl_ms", TTL_MS.to_string()),
                ("pow_nonce", "0".into()),
                ("body", hex(DIRECT_BODY)),
            ],
        )
        .note(
            "A deposit into namespace 0: anyone may store it, unsigned. body = \"hello, ghost\".",
        ),
        spec(
            "request",
            "store_owner_only",
            &[
                ("method", "store".into()),
                ("owner_seed", o.clone()),
                ("namespace", OWNER_ONLY_NAMESPACE.to_string()),
                ("ts_ms", ts.clone()),
                ("ttl_ms", "3600000".into()),
                ("pow_nonce", "0".into()),
                ("body", hex(OWNER_ONLY_BODY)),
            ],
        )
        .note("Namespace 0x8000 (32768): owner-only, so signed. body = \"profile v1\"."),
        spec(
            "request",
            "retrieve",
            &[
                ("method", "retrieve".into()),
                ("owner_seed", o.clone()),
                ("namespace", "0".into()),
                ("ts_ms", ts.clone()),
                ("after", "7".into()),
                ("limit", "50".into()),
            ],
        ),
        spec(
            "request",
            "delete_hashes",
            &[
                ("method", "delete".into()),
                ("owner_seed", o.clone()),
                ("namespace", "0".into()),
                ("ts_ms", ts.clone()),
                ("selector", "hashes".into()),
                (
                    "hashes",
                    list([hex(&direct_hash().0), hex(&second_hash().0)]),
                ),
            ],
        )
        .note("The hashes of store_direct's message and of \"second message\" in namespace 0."),
        spec(
            "request",
            "delete_all",
            &[
                ("method", "delete".into()),
                ("owner_seed", o.clone()),
                ("namespace", "0".into()),
                ("ts_ms", ts.clone()),
                ("selector", "all".into()),
            ],
        ),
        spec(
            "request",
            "delete_before",
            &[
                ("method", "delete".into()),
                ("owner_seed", o.clone()),
                ("namespace", "0".into()),
                ("ts_ms", ts.clone()),
                ("selector", "before".into()),
                ("before_ms", (NOW - 3_600_000).to_string()),
            ],
        ),
        spec(
            "request",
            "update_expiry",
            &[
                ("method", "update_expiry".into()),
                ("owner_seed", o.clone()),
                ("namespace", "0".into()),
                ("ts_ms", ts.clone()),
                ("hashes", hex(&direct_hash().0)),
                ("expiry_ms", (NOW + 7 * 86_400_000).to_string()),
            ],
        ),
        spec(
            "request",
            "swarm_lookup",
            &[("method", "swarm_lookup".into()), ("owner_seed", o.clone())],
        ),
        spec("request", "info", &[("method", "info".into())]),
    ];
    // Requests that must be refused.
    let retrieve = Request::Retrieve(RetrieveRequest {
        recipient: owner_key.recipient_id(),
        namespace: Namespace::DIRECT,
        timestamp: Timestamp(NOW),
        after: 7,
        limit: 50,
    });
    let signed_retrieve = encode_request(&retrieve, Some(&owner_key));
    let mut bad_sig = signed_retrieve.clone();
    *bad_sig.last_mut().unwrap() ^= 0x01;
    let zero_limit = encode_request(
        &Request::Retrieve(RetrieveRequest {
            recipient: owner_key.recipient_id(),
            namespace: Namespace::DIRECT,
            timestamp: Timestamp(NOW),
            after: 0,
            limit: 0,
        }),
        Some(&owner_key),
    );
    let mut many = vec![VERSION, 3];
    many.extend_from_slice(&owner_key.recipient_id().0);
    many.extend_from_slice(&0u16.to_be_bytes());
    many.extend_from_slice(&NOW.to_be_bytes());
    many.extend_from_slice(&[1, 33]);
    for i in 0..33u8 {
        many.extend_from_slice(&[i; 32]);
    }
    let sig = owner_key.sign(REQUEST_SIGNING_CONTEXT, &many);
    many.extend_from_slice(&sig);
    let bad = [
        (
            "version_1",
            "info with version byte 1 (the previous protocol)",
            vec![1u8, 6],
            NOW,
        ),
        ("version_3", "info with version byte 3", vec![3u8, 6], NOW),
        ("method_9", "version 2, method 9", vec![VERSION, 9], NOW),
        (
            "trailing_byte",
            "info followed by a zero byte",
            vec![VERSION, 6, 0],
            NOW,
        ),
        (
            "unsigned_retrieve",
            "the retrieve request without its signature",
            signed_retrieve[..signed_retrieve.len() - SIGNATURE_LEN].to_vec(),
            NOW,
        ),
        (
            "zero_limit",
            "a signed retrieve with limit 0",
            zero_limit,
            NOW,
        ),
        (
            "33_hashes",
            "a signed delete naming 33 hashes (hash i = 32 bytes of value i)",
            many,
            NOW,
        ),
        (
            "bad_signature",
            "the retrieve request with its last byte XOR 0x01",
            bad_sig,
            NOW,
        ),
        (
            "stale",
            "the retrieve request, received 60001 ms after its ts",
            signed_retrieve.clone(),
            NOW + 60_001,
        ),
    ];
    for (name, how, bytes, now) in bad {
        specs.push(
            spec(
                "bad_request",
                name,
                &[("bytes", hex(&bytes)), ("now_ms", now.to_string())],
            )
            .note(how),
        );
    }
    let expiry = (ARRIVAL + TTL_MS).to_string();
    let recipient = hex(&owner_key.recipient_id().0);
    for n in [1u8, 2] {
        specs.push(spec(
            "receipt",
            &format!("node_{n}"),
            &[
                ("node_seed", hex(&node_seed(n))),
                ("hash", hex(&direct_hash().0)),
                ("recipient", recipient.clone()),
                ("expiry_ms", expiry.clone()),
            ],
        ));
    }
    specs.push(
        spec(
            "response",
            "stored",
            &[
                ("response", "stored".into()),
                ("hash", hex(&direct_hash().0)),
                ("expiry_ms", expiry.clone()),
                ("recipient", recipient.clone()),
                (
                    "receipt_seeds",
                    list([hex(&node_seed(1)), hex(&node_seed(2))]),
                ),
            ],
        )
        .note("The answer to store_direct: receipts of nodes 1 and 2 (W = 2)."),
    );
    let mut messages = spec(
        "response",
        "messages_more",
        &[
            ("response", "messages".into()),
            ("recipient", recipient.clone()),
            ("namespace", "0".into()),
            ("messages", "2".into()),
        ],
    )
    .note("The answer to retrieve: two messages after cursor 7, and more follow.");
    for (i, (seq, at, body)) in [(8u64, ARRIVAL, DIRECT_BODY), (11, NOW + 1_000, SECOND_BODY)]
        .into_iter()
        .enumerate()
    {
        messages = messages
            .with(format!("message {i} seq"), seq)
            .with(format!("message {i} stored_at_ms"), at)
            .with(format!("message {i} expiry_ms"), at + TTL_MS)
            .with(format!("message {i} body"), hex(body));
    }
    specs.push(messages.with("more", true));
    specs.push(
        spec(
            "response",
            "messages_last",
            &[
                ("response", "messages".into()),
                ("recipient", recipient.clone()),
                ("namespace", "0".into()),
                ("messages", "0".into()),
                ("more", "false".into()),
            ],
        )
        .note("An empty last page."),
    );
    specs.push(spec(
        "response",
        "deleted",
        &[("response", "deleted".into()), ("count", "2".into())],
    ));
    specs.push(spec(
        "response",
        "expiry_updated",
        &[("response", "expiry_updated".into()), ("count", "1".into())],
    ));
    specs.push(
        spec(
            "response",
            "swarm",
            &[
                ("response", "swarm".into()),
                (
                    "descriptors",
                    list([descriptor_hex(1), descriptor_hex(2), descriptor_hex(3)]),
                ),
            ],
        )
        .note("descriptors: nodes 1, 2 and 3 of descriptor-v2.txt."),
    );
    specs.push(
        spec(
            "response",
            "redirect",
            &[
                ("response", "redirect".into()),
                ("descriptors", list([descriptor_hex(2), descriptor_hex(3)])),
            ],
        )
        .note("A redirect: status byte 1, then nodes 2 and 3."),
    );
    specs.push(spec(
        "response",
        "info",
        &[
            ("response", "info".into()),
            ("version", "2".into()),
            ("node_time_ms", ARRIVAL.to_string()),
            (
                "node_id",
                hex(&IdentityKey::from_seed(&node_seed(1)).node_id().0),
            ),
            ("pow_difficulty", "8".into()),
        ],
    ));
    specs.push(spec("error_responses", "codes", &[]));
    specs
}

const REQUEST_REQUIRED: &[&str] = &[
    "request store",
    "request retrieve",
    "request delete",
    "request update_expiry",
    "request swarm_lookup",
    "request info",
    "store signed",
    "store unsigned",
    "selector hashes",
    "selector all",
    "selector before",
    "bad_request unsupported_version",
    "bad_request unknown_method",
    "bad_request malformed",
    "bad_request signature_required",
    "bad_request bad_limit",
    "bad_request too_many_hashes",
    "bad_request bad_signature",
    "bad_request stale_timestamp",
    "receipt",
    "response stored",
    "response messages",
    "response deleted",
    "response expiry_updated",
    "response swarm",
    "response redirect",
    "response info",
    "more true",
    "more false",
    "error_responses",
];

const POW_HEADER: &[&str] = &[
    "GhostNodes proof-of-work test vectors, protocol v2: docs/PROTOCOL.md section 7.",
    "Checked line by line by",
    "`cargo test -p proto-core --all-features --test protocol_vectors`; regenerated (a protocol",
    "version change) with GHOST_UPDATE_VECTORS=1. Hex is lowercase; integers are decimal.",
    "",
    "input  = \"ghostnodes/v1/pow\" ‖ recipient (32) ‖ namespace (u16) ‖ ts_ms (u64) ‖ ttl_ms (u64)",
    "         ‖ len(body) (u32) ‖ body ‖ nonce (u64)          integers big-endian",
    "digest = SHA-256(input); it meets difficulty d when it starts with d zero bits.",
    "nonce  = the first nonce from 0 upwards that meets d (what request::solve_pow finds);",
    "failing_nonce = nonce - 1, which does not; store_request = the unsigned store request",
    "carrying the nonce. The recipient is the owner of request-v2.txt (seed of 32 bytes of 42).",
];

fn pow_specs() -> Vec<Spec> {
    [8u8, 12, 16]
        .into_iter()
        .map(|d| {
            spec(
                "pow",
                &format!("difficulty_{d}"),
                &[
                    ("recipient", hex(&owner().recipient_id().0)),
                    ("namespace", "0".into()),
                    ("ts_ms", NOW.to_string()),
                    ("ttl_ms", TTL_MS.to_string()),
                    ("body", hex(DIRECT_BODY)),
                    ("difficulty", d.to_string()),
                ],
            )
        })
        .collect()
}

const POW_REQUIRED: &[&str] = &["pow 8", "pow 12", "pow 16"];

const PEER_HEADER: &[&str] = &[
    "GhostNodes node-to-node test vectors, protocol v2: docs/PROTOCOL.md sections 8 and 8.1.",
    "Checked line by line by",
    "`cargo test -p proto-core --all-features --test protocol_vectors`; regenerated (a protocol",
    "version change) with GHOST_UPDATE_VECTORS=1. Hex is lowercase; `-` is empty; integers are",
    "decimal; on the wire they are big-endian.",
    "",
    "envelope = 2 ‖ kind (1) ‖ sender node id (32) ‖ sent_at (u64) ‖ body ‖ signature (64);",
    "session envelope (not gossip or probe) = the same with kind | 0x80 and no signature, valid",
    "only on a TLS session whose client key hashes to the sender descriptor's tls_key_hash;",
    "prehash = SHA-256(len(ctx) (1 byte) ‖ \"ghostnodes/v1/peer\" ‖ every byte before the",
    "signature); signature = plain Ed25519 of prehash. Node n: identity seed of 32 bytes of",
    "value n; descriptors as in descriptor-v2.txt. The owner (request-v2.txt) has the seed of",
    "32 bytes of value 42. Envelopes are sent by node 1 at 1800000000000 ms.",
    "",
    "[envelope NAME]        kind and its body's inputs. message i: a stored message with the",
    "                       origin of its store request (origin_signature only for namespaces",
    "                       >= 0x8000: the owner's request signature); message i hash =",
    "                       SHA-256(recipient ‖ namespace ‖ body). digest: the 256 buckets of",
    "                       digest_hashes (bucket = first hash byte: count (4) ‖ XOR (32)), then",
    "                       the start byte. relay and tombstones carry owner-signed requests.",
    "[envelope_check NAME]  the envelope bytes received at now_ms with window_ms, from a live",
    "                       sender or not (live: node 1's descriptor, tls_key_hash of seed 0x81),",
    "                       on a TLS session with the client key hash `session` (- : none):",
    "                       result = ok (and kind) or the refusal and its answer",
    "[answer NAME]          one peer answer; bytes = its encoding, first byte the tag. stored:",
    "                       receipts of receipt_seed over (hash, recipient, expiry_ms), then one",
    "                       refusal per reason, the refused hash being 32 bytes of its code.",
    "                       alive: probe_message = nonce ‖ prober id, signed with ctx",
    "                       \"ghostnodes/v1/probe\" (prehash_input, prehash, signature).",
    "[peer_refusals codes]  every peer refusal: label = its answer, 0 ‖ code",
];

fn message_inputs(
    mut s: Spec,
    i: usize,
    namespace: u16,
    body: &[u8],
    ttl: u64,
    signature: Option<[u8; 64]>,
) -> Spec {
    let k = |key: &str| format!("message {i} {key}");
    s = s
        .with(k("recipient"), hex(&owner().recipient_id().0))
        .with(k("namespace"), namespace)
        .with(k("stored_at_ms"), ARRIVAL)
        .with(k("expiry_ms"), ARRIVAL + ttl)
        .with(k("body"), hex(body))
        .with(k("origin_ts_ms"), NOW)
        .with(k("origin_ttl_ms"), ttl)
        .with(k("origin_pow_nonce"), 0);
    if let Some(sig) = signature {
        s = s.with(k("origin_signature"), hex(&sig));
    }
    s
}

fn peer_specs() -> Vec<Spec> {
    let owner_key = owner();
    let sender = || {
        vec![
            ("sender_seed", hex(&node_seed(1))),
            ("sent_at_ms", NOW.to_string()),
        ]
    };
    let envelope_spec = |kind: &str, name: &str, extra: &[(&str, String)]| {
        let mut inputs = vec![("kind", kind.to_owned())];
        inputs.extend(sender());
        inputs.extend(extra.iter().cloned());
        spec("envelope", name, &inputs)
    };
    let owner_only = encode_request(&Request::Store(owner_only_store()), Some(&owner_key));
    let owner_sig: [u8; 64] = owner_only[owner_only.len() - 64..].try_into().unwrap();
    let owner_only_hash = message_hash(
        &owner_key.recipient_id(),
        Namespace(OWNER_ONLY_NAMESPACE),
        OWNER_ONLY_BODY,
    );
    let both = list([hex(&direct_hash().0), hex(&owner_only_hash.0)]);
    let delete_all = encode_request(
        &Request::Delete(DeleteRequest {
            recipient: owner_key.recipient_id(),
            namespace: Namespace::DIRECT,
            timestamp: Timestamp(NOW),
            selector: DeleteSelector::All,
        }),
        Some(&owner_key),
    );
    let hash_bytes = direct_hash().0;
    let delete_one = encode_request(
        &Request::Delete(DeleteRequest {
            recipient: owner_key.recipient_id(),
            namespace: Namespace::DIRECT,
            timestamp: Timestamp(NOW),
            selector: DeleteSelector::Hashes(HashList::from_bytes(&hash_bytes).unwrap()),
        }),
        Some(&owner_key),
    );
    let mut replicate = envelope_spec("replicate", "replicate", &[("messages", "2".into())])
        .note("store_direct's message, and store_owner_only's with the owner's signature.");
    replicate = message_inputs(replicate, 0, 0, DIRECT_BODY, TTL_MS, None);
    replicate = message_inputs(
        replicate,
        1,
        OWNER_ONLY_NAMESPACE,
        OWNER_ONLY_BODY,
        3_600_000,
        Some(owner_sig),
    );
    let node_1 = IdentityKey::from_seed(&node_seed(1)).node_id();
    let mut specs = vec![
        replicate,
        envelope_spec(
            "digest",
            "digest",
            &[("digest_hashes", both.clone()), ("start", "0".into())],
        )
        .note("A digest of the two replicated messages: 256 × 36 bytes, then start = 0."),
        envelope_spec("fetch", "fetch", &[("hashes", both.clone())]),
        envelope_spec(
            "gossip",
            "gossip",
            &[("descriptors", list([descriptor_hex(1), descriptor_hex(2)]))],
        )
        .note("The sender's own descriptor first, then node 2's."),
        envelope_spec("probe", "probe", &[("nonce", hex(&PROBE_NONCE))]),
        envelope_spec("relay", "relay", &[("request", hex(&delete_all))])
            .note("The owner's delete-all of namespace 0 (request-v2.txt, delete_all)."),
        envelope_spec(
            "tombstones",
            "tombstones",
            &[
                ("entries", "1".into()),
                ("entry 0 hash", hex(&hash_bytes)),
                ("entry 0 delete", hex(&delete_one)),
            ],
        )
        .note("store_direct's message with the owner's signed delete naming its hash."),
    ];
    // Envelope checks: what the receiver answers.
    let sign = |req: PeerRequest| {
        req.encode_signed(&IdentityKey::from_seed(&node_seed(1)), Timestamp(NOW))
    };
    let fetch = sign(PeerRequest::Fetch(vec![direct_hash()]));
    let gossip = sign(PeerRequest::Gossip(vec![node_descriptor(1).into()]));
    let probe = sign(PeerRequest::Probe { nonce: PROBE_NONCE });
    let mut bad_sig = fetch.clone();
    *bad_sig.last_mut().unwrap() ^= 0x01;
    let mut v1 = probe.clone();
    v1[0] = 1;
    let mut v3 = probe.clone();
    v3[0] = 3;
    let mut v16 = probe.clone();
    v16[0] = 16;
    let on_session = PeerRequest::Fetch(vec![direct_hash()])
        .encode_session(node_1, Timestamp(NOW))
        .expect("a fetch may ride a session");
    let mut gossip_on_session = gossip.clone();
    gossip_on_session.truncate(gossip.len() - SIGNATURE_LEN);
    gossip_on_session[1] |= 0x80;
    let own_session = reference_tls_key_hash(&tls_seed(1));
    let other_session = reference_tls_key_hash(&tls_seed(2));
    let session_checks = [
        (
            "fetch_on_its_senders_session",
            "the fetch without signature, kind | 0x80, on a TLS session whose client key is node 1's",
            on_session.clone(),
            Some(own_session),
        ),
        (
            "fetch_on_another_nodes_session",
            "the same, on node 2's TLS session: refused as bad_signature",
            on_session.clone(),
            Some(other_session),
        ),
        (
            "fetch_without_a_session",
            "the same on plain HTTP (or TLS without a client key): bad_signature",
            on_session,
            None,
        ),
        (
            "gossip_on_a_session",
            "gossip without signature, kind | 0x80, on node 1's session: malformed",
            gossip_on_session,
            Some(own_session),
        ),
    ];
    for (name, how, bytes, session) in session_checks {
        specs.push(
            spec(
                "envelope_check",
                name,
                &[
                    ("bytes", hex(&bytes)),
                    ("now_ms", NOW.to_string()),
                    ("window_ms", DEFAULT_AUTH_WINDOW_MS.to_string()),
                    ("sender_known", "true".into()),
                    (
                        "session",
                        session.map_or_else(|| "-".to_owned(), |k| hex(&k)),
                    ),
                ],
            )
            .note(how),
        );
    }
    let checks = [
        (
            "fetch_from_a_live_node",
            "a fetch of store_direct's hash",
            fetch.clone(),
            NOW,
            true,
        ),
        (
            "fetch_60001_ms_later",
            "the same fetch, 60001 ms after it was sent",
            fetch.clone(),
            NOW + 60_001,
            true,
        ),
        (
            "fetch_from_a_stranger",
            "the same fetch from a sender that is not live",
            fetch.clone(),
            NOW,
            false,
        ),
        (
            "gossip_from_a_stranger",
            "gossip of the sender's own descriptor, sender not live: accepted",
            gossip,
            NOW,
            false,
        ),
        (
            "probe_from_a_stranger",
            "the probe above, sender not live: accepted",
            probe,
            NOW,
            false,
        ),
        (
            "bad_signature",
            "the fetch with its last byte XOR 0x01",
            bad_sig,
            NOW,
            true,
        ),
        (
            "version_1",
            "the probe with version byte 1, the previous protocol (122 bytes >= 106)",
            v1,
            NOW,
            true,
        ),
        ("version_3", "the probe with version byte 3", v3, NOW, true),
        (
            "version_16",
            "the probe with version byte 16",
            v16,
            NOW,
            true,
        ),
        (
            "too_short",
            "the first 10 bytes of the fetch",
            fetch[..10].to_vec(),
            NOW,
            true,
        ),
    ];
    for (name, how, bytes, now, known) in checks {
        specs.push(
            spec(
                "envelope_check",
                name,
                &[
                    ("bytes", hex(&bytes)),
                    ("now_ms", now.to_string()),
                    ("window_ms", DEFAULT_AUTH_WINDOW_MS.to_string()),
                    ("sender_known", known.to_string()),
                    ("session", "-".into()),
                ],
            )
            .note(how),
        );
    }
    let recipient = hex(&owner_key.recipient_id().0);
    specs.push(
        spec(
            "answer",
            "stored",
            &[
                ("answer", "stored".into()),
                ("receipt_seed", hex(&node_seed(2))),
                ("recipient", recipient),
                ("expiry_ms", (ARRIVAL + TTL_MS).to_string()),
                ("receipt_hashes", hex(&direct_hash().0)),
                (
                    "refused_reasons",
                    list(CopyRefusal::ALL.iter().map(|r| r.label().to_owned())),
                ),
            ],
        )
        .note("Node 2's answer to a replicate: a receipt for store_direct's message, and every reason."),
    );
    specs.push(
        spec(
            "answer",
            "digest_diff",
            &[
                ("answer", "digest_diff".into()),
                ("digest_hashes", hex(&direct_hash().0)),
                ("hashes", hex(&direct_hash().0)),
                ("truncated", "false".into()),
                ("covered", list([direct_hash().0[0].to_string()])),
            ],
        )
        .note("The receiver holds store_direct's message only: its digest, the hash, the bucket it covers."),
    );
    let messages = spec(
        "answer",
        "messages",
        &[("answer", "messages".into()), ("messages", "1".into())],
    );
    specs.push(message_inputs(messages, 0, 0, DIRECT_BODY, TTL_MS, None));
    specs.push(spec(
        "answer",
        "descriptors",
        &[
            ("answer", "descriptors".into()),
            ("descriptors", list([descriptor_hex(2), descriptor_hex(3)])),
        ],
    ));
    specs.push(spec(
        "answer",
        "applied",
        &[("answer", "applied".into()), ("count", "1".into())],
    ));
    specs.push(
        spec(
            "answer",
            "alive",
            &[
                ("answer", "alive".into()),
                ("probed_seed", hex(&node_seed(2))),
                ("descriptor", descriptor_hex(2)),
                ("nonce", hex(&PROBE_NONCE)),
                ("prober", hex(&node_1.0)),
            ],
        )
        .note("Node 2's answer to node 1's probe above."),
    );
    specs.push(spec("peer_refusals", "codes", &[]));
    specs
}

const PEER_REQUIRED: &[&str] = &[
    "envelope replicate",
    "envelope digest",
    "envelope fetch",
    "envelope gossip",
    "envelope probe",
    "envelope relay",
    "envelope tombstones",
    "envelope_check ok fetch",
    "envelope_check session ok fetch",
    "envelope_check ok gossip",
    "envelope_check ok probe",
    "envelope_check stale_timestamp",
    "envelope_check unknown_sender",
    "envelope_check bad_signature",
    "envelope_check unsupported_version",
    "envelope_check malformed",
    "answer stored",
    "answer digest_diff",
    "answer messages",
    "answer descriptors",
    "answer applied",
    "answer alive",
    "reason sender_not_in_swarm",
    "reason not_in_swarm",
    "reason unrequested",
    "reason bad_signature",
    "reason insufficient_pow",
    "reason ttl_too_long",
    "reason inconsistent_times",
    "reason body_too_large",
    "reason expired",
    "reason quota_exceeded",
    "reason node_full",
    "reason unavailable",
    "reason deleted",
    "peer_refusals",
];

// ---------------------------------------------------------------------------------------
// The files and the tests.
// ---------------------------------------------------------------------------------------

struct VectorFile {
    path: &'static str,
    header: &'static [&'static str],
    specs: fn() -> Vec<Spec>,
    required: &'static [&'static str],
}

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/");

const FILES: [VectorFile; 4] = [
    VectorFile {
        path: "descriptor-v2.txt",
        header: DESCRIPTOR_HEADER,
        specs: descriptor_specs,
        required: DESCRIPTOR_REQUIRED,
    },
    VectorFile {
        path: "request-v2.txt",
        header: REQUEST_HEADER,
        specs: request_specs,
        required: REQUEST_REQUIRED,
    },
    VectorFile {
        path: "pow-v2.txt",
        header: POW_HEADER,
        specs: pow_specs,
        required: POW_REQUIRED,
    },
    VectorFile {
        path: "peer-v2.txt",
        header: PEER_HEADER,
        specs: peer_specs,
        required: PEER_REQUIRED,
    },
];

impl VectorFile {
    fn full_path(&self) -> String {
        format!("{DIR}{}", self.path)
    }
    fn render(&self) -> String {
        render(self.header, &(self.specs)())
    }
    fn committed(&self) -> String {
        std::fs::read_to_string(self.full_path()).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; regenerate with GHOST_UPDATE_VECTORS=1",
                self.full_path()
            )
        })
    }
    fn check(&self, text: &str) -> Result<Vec<usize>, String> {
        check(self.path, text, self.required)
    }
}

fn run(file: &VectorFile) {
    if std::env::var_os("GHOST_UPDATE_VECTORS").is_some() {
        let rendered = file.render();
        file.check(&rendered).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(file.full_path(), rendered).unwrap();
        return;
    }
    let checked = file.check(&file.committed()).unwrap_or_else(|e| {
        panic!(
            "{e}\nthe protocol changed: the vectors in {} no longer match",
            file.path
        )
    });
    assert!(!checked.is_empty());
}

#[test]
fn descriptor_vectors_match_the_committed_file() {
    run(&FILES[0]);
}

#[test]
fn request_vectors_match_the_committed_file() {
    run(&FILES[1]);
}

#[test]
fn pow_vectors_match_the_committed_file() {
    run(&FILES[2]);
}

#[test]
fn peer_vectors_match_the_committed_file() {
    run(&FILES[3]);
}

#[test]
fn committed_files_are_exactly_what_the_generator_writes() {
    // The line checks above read the inputs from the file; this pins the inputs, the
    // comments and the choice of vectors too.
    if std::env::var_os("GHOST_UPDATE_VECTORS").is_some() {
        return;
    }
    for file in &FILES {
        assert!(
            file.committed() == file.render(),
            "{} is not what the generator writes: regenerate it deliberately with \
             GHOST_UPDATE_VECTORS=1",
            file.path
        );
    }
}

fn with_line(text: &str, number: usize, line: &str) -> String {
    text.lines()
        .enumerate()
        .map(|(i, l)| if i + 1 == number { line } else { l })
        .fold(String::new(), |s, l| s + l + "\n")
}

#[test]
fn one_changed_hex_digit_in_any_output_line_is_reported_with_its_line() {
    if std::env::var_os("GHOST_UPDATE_VECTORS").is_some() {
        return;
    }
    for file in &FILES {
        let text = file.committed();
        let outputs = file.check(&text).expect("the committed file checks");
        let lines: Vec<&str> = text.lines().collect();
        let mut flipped = 0;
        for number in outputs {
            let line = lines[number - 1];
            let (key, value) = line.split_once(" = ").unwrap();
            // Change the last hex digit of a hex value (numbers and words are changed
            // by their own rules below).
            if unhex(value).is_err() || value == "-" {
                continue;
            }
            let last = value.chars().last().unwrap();
            let other = if last == '0' { '1' } else { '0' };
            let corrupted = format!("{key} = {}{other}", &value[..value.len() - 1]);
            let err = file
                .check(&with_line(&text, number, &corrupted))
                .expect_err(&format!(
                    "{} line {number}: a changed digit passed",
                    file.path
                ));
            assert!(
                err.contains(&format!("line {number}: `{key} = ")) && err.contains("mismatch"),
                "{err}"
            );
            flipped += 1;
        }
        assert!(flipped > 10, "{}: only {flipped} hex lines", file.path);
    }
}

#[test]
fn changed_inputs_unknown_lines_and_missing_vectors_are_reported() {
    if std::env::var_os("GHOST_UPDATE_VECTORS").is_some() {
        return;
    }
    let file = &FILES[1];
    let text = file.committed();
    // A changed input (the retrieve's cursor) changes the bytes it must give.
    let (index, _) = text
        .lines()
        .enumerate()
        .find(|(_, l)| *l == "after = 7")
        .expect("the retrieve's cursor");
    let err = file
        .check(&with_line(&text, index + 1, "after = 8"))
        .expect_err("a changed input must fail");
    assert!(err.contains("mismatch"), "{err}");
    // An unknown line is an error, not silently skipped.
    let err = file
        .check(&format!("{text}colour = 00\n"))
        .expect_err("an unknown line must fail");
    assert!(err.contains("not a known vector line"), "{err}");
    // A missing output line is an error.
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("message_hash = "))
        .fold(String::new(), |s, l| s + l + "\n");
    let err = file.check(&without).expect_err("a missing line must fail");
    assert!(err.contains("lacks the line `message_hash = "), "{err}");
    // Dropping a whole vector leaves a required case uncovered.
    let mut skipping = false;
    let partial: String = text
        .lines()
        .filter(|l| {
            if l.starts_with('[') {
                skipping = *l == "[request info]";
            }
            !skipping
        })
        .fold(String::new(), |s, l| s + l + "\n");
    let err = file
        .check(&partial)
        .expect_err("missing coverage must fail");
    assert!(err.contains("the vectors lack request info"), "{err}");
}
