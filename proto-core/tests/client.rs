//! The client state machine against a scripted network whose final hops lie.
//!
//! Each test serves the client's exchanges with real onion peeling (the hops' keys are the
//! test's), lets the final hop answer what the test scripts — honestly or not — and checks
//! what the client believes. The client must never accept an acknowledgement or a message
//! it cannot verify itself, and must name the problem when it refuses one.
#![cfg(feature = "alloc")]

use proto_core::client::{
    Client, ClientConfig, ClientError, DirectoryAnswer, Event, FetchCursors, FetchSpec, Problem,
    StorePartsSpec, StoreSpec, TransmitBody, TransportError,
};
use proto_core::keys::UnverifiedDescriptor;
use proto_core::keys::{Address, Descriptor, IdentityKey, MAX_DESCRIPTOR_LEN, OnionKey};
use proto_core::packet::{self, PACKET_LEN, Peeled};
use proto_core::replay::{BUCKETS, ReplayFilter};
use proto_core::reply::{self, ReplyKey, ReplyStatus};
use proto_core::request::{
    AckError, MessageView, Receipt, Request, RequestError, Response, SignedRequest, StoreAck,
};
use proto_core::ring::Ring;
use proto_core::store::message_hash;
use proto_core::{Epoch, MessageHash, Namespace, NodeId, RecipientId, Timestamp};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const NOW: Timestamp = Timestamp(1_800_000_000_000);
const TTL_MS: u64 = 3_600_000;
const NODES: u8 = 6;

struct FakeNode {
    identity: IdentityKey,
    onion: OnionKey,
    descriptor: Descriptor,
    replay: ReplayFilter<Vec<u64>>,
}

fn fake_node(i: u8, expires: Timestamp) -> FakeNode {
    let identity = IdentityKey::from_seed(&[i.wrapping_add(1); 32]);
    let onion = OnionKey::from_secret_bytes([i.wrapping_add(100); 32], Epoch(1));
    let address = Address::new(&format!("node-{i}:7100")).expect("short address");
    let descriptor = Descriptor::sign(
        &identity,
        &onion,
        proto_core::TlsKeyHash([i; 32]),
        address,
        expires,
    );
    FakeNode {
        identity,
        onion,
        descriptor,
        replay: ReplayFilter::new(vec![0u64; BUCKETS * 64]).expect("valid shape"),
    }
}

/// What the final hop saw: the request it executed.
struct Delivered {
    request: Vec<u8>,
    /// The reply length the client asked for.
    reply_len: usize,
}

/// A network of fake nodes that peel for real and answer as `answer` says.
struct Net {
    nodes: Vec<FakeNode>,
    rng: ChaCha20Rng,
    /// Directory requests seen (none of them may name a recipient).
    directory_requests: usize,
    /// Addresses the client sent onions to.
    first_hops: Vec<Address>,
}

fn unverified(d: &Descriptor) -> UnverifiedDescriptor {
    let mut buf = [0u8; MAX_DESCRIPTOR_LEN];
    let n = d.encode(&mut buf).expect("fits");
    UnverifiedDescriptor::decode(&buf[..n]).expect("decodes")
}

impl Net {
    fn new() -> Self {
        Self {
            nodes: (0..NODES)
                .map(|i| fake_node(i, NOW.plus_millis(86_400_000)))
                .collect(),
            rng: ChaCha20Rng::seed_from_u64(7),
            directory_requests: 0,
            first_hops: Vec::new(),
        }
    }

    fn client(&self) -> Client {
        Client::new(
            ClientConfig::default(),
            vec![*self.nodes[0].descriptor.address()],
        )
    }

    fn listing(&self) -> DirectoryAnswer {
        DirectoryAnswer {
            nodes: self
                .nodes
                .iter()
                .map(|n| unverified(&n.descriptor))
                .collect(),
            next: None,
            pow_difficulty: 0,
        }
    }

    fn ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.identity.node_id()).collect()
    }

    /// The swarm by the test's own ring (the oracle), as node indices.
    fn swarm(&self, recipient: &RecipientId) -> Vec<usize> {
        let mut ring = Ring::new(proto_core::ring::DEFAULT_VNODES);
        for id in self.ids() {
            ring.insert(id);
        }
        let mut out = [NodeId::default(); 3];
        let n = ring.swarm(recipient, &mut out);
        out[..n]
            .iter()
            .map(|id| self.ids().iter().position(|x| x == id).expect("a node"))
            .collect()
    }

    fn index_of_address(&self, a: &Address) -> usize {
        self.nodes
            .iter()
            .position(|n| n.descriptor.address() == a)
            .expect("the client only sends to listed nodes")
    }

    /// Peels `packet` hop by hop from the node at `first`; the final hop's index, the
    /// request, and the reply keys in path order.
    fn peel_all(
        &mut self,
        first: usize,
        packet: &mut [u8; PACKET_LEN],
    ) -> (Delivered, Vec<ReplyKey>) {
        let mut at = first;
        let mut keys = Vec::new();
        loop {
            let node = &mut self.nodes[at];
            match packet::peel(&node.onion, &mut node.replay, NOW, packet)
                .expect("the client builds valid packets")
            {
                Peeled::Forward {
                    next_hop,
                    reply_key,
                    ..
                } => {
                    keys.push(reply_key);
                    at = self
                        .ids()
                        .iter()
                        .position(|id| *id == next_hop)
                        .expect("paths use listed nodes");
                }
                Peeled::Deliver {
                    payload,
                    reply_key,
                    reply_len,
                } => {
                    let request = payload.to_vec();
                    keys.push(reply_key);
                    return (Delivered { request, reply_len }, keys);
                }
            }
        }
    }

    /// Serves the client until an operation ends; `answer` scripts the final hop.
    fn run(
        &mut self,
        client: &mut Client,
        mut answer: impl FnMut(&Net, &Delivered) -> Response,
    ) -> Event {
        for _ in 0..1000 {
            if let Some(event) = client.poll_event() {
                return event;
            }
            let t = client
                .poll_transmit()
                .expect("an operation in progress sends something");
            match t.body {
                TransmitBody::Directory { after } => {
                    assert_eq!(after, None, "one page holds this network");
                    self.directory_requests += 1;
                    let listing = self.listing();
                    client.handle_directory(NOW, &mut self.rng, t.id, Ok(listing));
                }
                TransmitBody::Onion(mut packet) => {
                    self.first_hops.push(t.to);
                    let first = self.index_of_address(&t.to);
                    assert_eq!(
                        t.tls_key_hash,
                        Some(self.nodes[first].descriptor.tls_key_hash()),
                        "a first hop's link is pinned to the key its descriptor names"
                    );
                    let (delivered, keys) = self.peel_all(first, &mut packet);
                    let response = answer(self, &delivered);
                    let mut body = Vec::new();
                    response.encode(&mut body);
                    let mut out = vec![0u8; delivered.reply_len];
                    reply::seal(
                        keys.last().expect("three hops"),
                        ReplyStatus::Response,
                        &body,
                        &mut out,
                    )
                    .expect("bucket sized");
                    for k in keys[..keys.len() - 1].iter().rev() {
                        reply::add_layer(k, &mut out, delivered.reply_len).expect("a bucket");
                    }
                    client.handle_onion_answer(NOW, &mut self.rng, t.id, Ok(&mut out));
                }
            }
        }
        panic!("the client did not finish within 1000 exchanges");
    }
}

/// The store request the final hop received.
fn store_of(d: &Delivered) -> (RecipientId, Vec<u8>, u64) {
    let signed = SignedRequest::decode(&d.request).expect("the client encodes valid requests");
    match signed.request {
        Request::Store(s) => (s.recipient, s.body.to_vec(), s.ttl_ms),
        other => panic!("expected a store, got {other:?}"),
    }
}

/// What an honest final hop answers to a store: W receipts from the swarm.
fn honest_ack(net: &Net, d: &Delivered) -> StoreAck {
    let (recipient, body, ttl) = store_of(d);
    let hash = message_hash(&recipient, Namespace::DIRECT, &body);
    swarm_ack(net, &recipient, hash, NOW.plus_millis(ttl))
}

/// Valid receipts from the first W = 2 members of `recipient`'s swarm for `hash` and
/// `expiry`, whether or not those are what the client stored.
fn swarm_ack(net: &Net, recipient: &RecipientId, hash: MessageHash, expiry: Timestamp) -> StoreAck {
    let receipts = net.swarm(recipient)[..2]
        .iter()
        .map(|&i| Receipt::sign(&net.nodes[i].identity, &hash, recipient, expiry))
        .collect();
    StoreAck {
        hash,
        expiry,
        receipts,
    }
}

/// A store for `recipient()` through a network whose final hops answer with `answer`.
fn store_answered_by(
    answer: impl FnMut(&Net, &Delivered) -> Response,
) -> Result<proto_core::client::Delivery, ClientError> {
    let mut net = Net::new();
    let mut client = net.client();
    start_store(&mut net, &mut client, recipient().recipient_id());
    store_result(net.run(&mut client, answer))
}

fn start_store(net: &mut Net, client: &mut Client, recipient: RecipientId) {
    let spec = StoreSpec {
        recipient,
        body: b"sealed body".to_vec(),
        ttl_ms: TTL_MS,
        first_member: None,
    };
    let _ = client.start_store(NOW, &mut net.rng, spec);
}

fn recipient() -> IdentityKey {
    IdentityKey::from_seed(&[42; 32])
}

fn store_result(event: Event) -> Result<proto_core::client::Delivery, ClientError> {
    match event {
        Event::Stored { result, .. } => result,
        other => panic!("expected a store result, got {other:?}"),
    }
}

fn failures(e: &ClientError) -> Vec<Problem> {
    match e {
        ClientError::Failed { attempts } => attempts.iter().map(|a| a.problem.clone()).collect(),
        other => panic!("expected every attempt to fail, got {other}"),
    }
}

#[test]
fn honest_network_acknowledges_a_store_verified_against_the_clients_own_ring() {
    let mut net = Net::new();
    let mut client = net.client();
    let owner = recipient().recipient_id();
    start_store(&mut net, &mut client, owner);
    let delivery = store_result(net.run(&mut client, |n, d| Response::Stored(honest_ack(n, d))))
        .expect("an honest swarm's acknowledgement holds");
    assert!(delivery.problems.is_empty());
    let swarm: Vec<NodeId> = net.swarm(&owner).iter().map(|&i| net.ids()[i]).collect();
    let last = delivery.path.last().expect("three hops").node_id();
    assert!(swarm.contains(&last), "the path ends at a swarm member");
    assert_eq!(delivery.path.len(), 3);
    let distinct: std::collections::BTreeSet<_> =
        delivery.path.iter().map(|d| d.node_id()).collect();
    assert_eq!(distinct.len(), 3, "three distinct hops");
    assert_eq!(
        net.directory_requests, 1,
        "the directory is read once, whole"
    );
}

#[test]
fn redirect_to_fabricated_identities_is_refused_and_never_followed() {
    let mut net = Net::new();
    let mut client = net.client();
    let owner = recipient().recipient_id();
    let fabricated: Vec<Descriptor> = (0..3)
        .map(|i| fake_node(200 + i, NOW.plus_millis(86_400_000)).descriptor)
        .collect();
    start_store(&mut net, &mut client, owner);
    let redirect = fabricated.clone();
    let error = store_result(net.run(&mut client, move |_, _| Response::Redirect {
        swarm: redirect.clone(),
    }))
    .expect_err("a swarm of strangers is not the recipient's swarm");
    let problems = failures(&error);
    assert!(
        problems.iter().all(|p| *p == Problem::RedirectDisagrees),
        "{problems:?}"
    );
    assert_eq!(
        problems.len(),
        3,
        "each real member is asked once, then given up on"
    );
    assert!(
        error.to_string().contains("not the recipient's swarm"),
        "{error}"
    );
    assert_eq!(
        net.directory_requests, 2,
        "the directory is refreshed once to judge it"
    );
    for f in &fabricated {
        assert!(
            !net.first_hops.contains(f.address()),
            "never sent to a fabricated node"
        );
    }
}

#[test]
fn redirect_that_the_refreshed_ring_confirms_is_followed() {
    let mut net = Net::new();
    let mut client = net.client();
    let owner = recipient().recipient_id();
    let swarm = net.swarm(&owner);
    // The first member asked claims not to be a member and names the real swarm (as a
    // node with a different view would); the client refreshes, finds its ring agrees with
    // the listed swarm, and stores through another member.
    let mut first = true;
    start_store(&mut net, &mut client, owner);
    let delivery = store_result(net.run(&mut client, |n, d| {
        if std::mem::take(&mut first) {
            let members = swarm.iter().map(|&i| n.nodes[i].descriptor).collect();
            Response::Redirect { swarm: members }
        } else {
            Response::Stored(honest_ack(n, d))
        }
    }))
    .expect("the other members acknowledge");
    assert_eq!(delivery.problems.len(), 1);
    assert_eq!(delivery.problems[0].problem, Problem::Redirected);
}

#[test]
fn receipts_from_non_members_do_not_count() {
    let error = store_answered_by(|n, d| {
        let mut ack = honest_ack(n, d);
        let (recipient, _, _) = store_of(d);
        let outsider = (0..n.nodes.len())
            .find(|i| !n.swarm(&recipient).contains(i))
            .expect("6 nodes, swarm of 3");
        // One real receipt and one from a listed node outside the swarm.
        ack.receipts[1] = Receipt::sign(
            &n.nodes[outsider].identity,
            &ack.hash,
            &recipient,
            ack.expiry,
        );
        Response::Stored(ack)
    })
    .expect_err("one member's receipt is not W = 2");
    for p in failures(&error) {
        assert!(
            matches!(
                p,
                Problem::BadAcknowledgement(AckError::TooFewReceipts {
                    valid: 1,
                    outsiders: 1,
                    ..
                })
            ),
            "{p:?}"
        );
    }
    assert!(
        error.to_string().contains("outside the recipient's swarm"),
        "{error}"
    );
}

#[test]
fn duplicate_receipts_of_one_member_count_once() {
    let error = store_answered_by(|n, d| {
        let mut ack = honest_ack(n, d);
        ack.receipts[1] = ack.receipts[0];
        Response::Stored(ack)
    })
    .expect_err("one member twice is not W = 2");
    for p in failures(&error) {
        assert!(
            matches!(
                p,
                Problem::BadAcknowledgement(AckError::TooFewReceipts {
                    valid: 1,
                    duplicates: 1,
                    ..
                })
            ),
            "{p:?}"
        );
    }
    assert!(error.to_string().contains("duplicate"), "{error}");
}

#[test]
fn acknowledged_expiry_shorter_than_requested_is_refused() {
    let error = store_answered_by(|n, d| {
        let (recipient, body, _) = store_of(d);
        let hash = message_hash(&recipient, Namespace::DIRECT, &body);
        // Valid receipts, but over a one-second lifetime.
        Response::Stored(swarm_ack(n, &recipient, hash, NOW.plus_millis(1_000)))
    })
    .expect_err("a one-second lifetime is not what was asked");
    for p in failures(&error) {
        assert!(
            matches!(
                p,
                Problem::BadAcknowledgement(AckError::ExpiryMismatch { .. })
            ),
            "{p:?}"
        );
    }
    assert!(error.to_string().contains("expiry"), "{error}");
}

#[test]
fn acknowledgement_of_another_message_is_refused() {
    let error = store_answered_by(|n, d| {
        let (recipient, _, ttl) = store_of(d);
        let hash = message_hash(&recipient, Namespace::DIRECT, b"something else");
        Response::Stored(swarm_ack(n, &recipient, hash, NOW.plus_millis(ttl)))
    })
    .expect_err("receipts for another hash prove nothing about this message");
    for p in failures(&error) {
        assert_eq!(p, Problem::BadAcknowledgement(AckError::WrongMessage));
    }
    assert!(error.to_string().contains("another message"), "{error}");
}

#[test]
fn one_lying_member_is_named_and_an_honest_one_still_delivers() {
    let mut net = Net::new();
    let mut client = net.client();
    let mut first = true;
    start_store(&mut net, &mut client, recipient().recipient_id());
    let delivery = store_result(net.run(&mut client, |n, d| {
        let mut ack = honest_ack(n, d);
        if std::mem::take(&mut first) {
            ack.expiry = NOW.plus_millis(1_000);
        }
        Response::Stored(ack)
    }))
    .expect("the next member is honest");
    assert_eq!(delivery.problems.len(), 1);
    assert!(delivery.problems[0].problem.is_misbehaviour());
}

/// Messages an honest member holds for `owner`.
fn messages(owner: &RecipientId, bodies: &[&[u8]]) -> Vec<MessageView> {
    bodies
        .iter()
        .enumerate()
        .map(|(i, b)| MessageView {
            seq: i as u64 + 1,
            hash: message_hash(owner, Namespace::DIRECT, b),
            stored_at: NOW,
            expiry: NOW.plus_millis(TTL_MS),
            body: b.to_vec(),
        })
        .collect()
}

fn fetch(
    net: &mut Net,
    only: Option<usize>,
    answer: impl FnMut(&Net, &Delivered) -> Response,
) -> (
    FetchCursors,
    Result<proto_core::client::Fetched, ClientError>,
) {
    let mut client = net.client();
    let spec = FetchSpec {
        identity: recipient(),
        cursors: FetchCursors::default(),
        only_member: only.map(|i| net.ids()[i]),
    };
    let _ = client.start_fetch(NOW, &mut net.rng, spec);
    match net.run(&mut client, answer) {
        Event::Fetched {
            cursors, result, ..
        } => (cursors, result),
        other => panic!("expected a fetch result, got {other:?}"),
    }
}

#[test]
fn fetched_messages_are_checked_against_their_bodies() {
    let mut net = Net::new();
    let owner = recipient().recipient_id();
    let member = net.swarm(&owner)[0];
    let (cursors, result) = fetch(&mut net, Some(member), |_, d| {
        let signed = SignedRequest::decode(&d.request).expect("valid");
        assert!(matches!(signed.request, Request::Retrieve(_)));
        let mut page = messages(&owner, &[b"one", b"two"]);
        // The member swaps in a body that does not match the hash it claims.
        page[1].body = b"forged".to_vec();
        Response::Messages {
            messages: page,
            more: false,
        }
    });
    let error = result.expect_err("a body that does not match its hash is refused");
    let problems = failures(&error);
    assert!(
        matches!(problems[..], [Problem::BodyHashMismatch { .. }]),
        "{problems:?}"
    );
    let text = error.to_string();
    let member_hex = net.ids()[member].to_string();
    assert!(
        text.contains(&member_hex[..8]),
        "the error names the member: {text}"
    );
    assert!(text.contains("does not match"), "{text}");
    assert!(cursors.after.is_empty(), "a rejected walk moves no cursor");
    assert!(cursors.seen.is_empty(), "and poisons no seen-list");
}

#[test]
fn honest_fetch_returns_each_message_once_and_moves_the_cursor() {
    let mut net = Net::new();
    let owner = recipient().recipient_id();
    let member = net.swarm(&owner)[0];
    let (cursors, result) = fetch(&mut net, Some(member), |_, _| Response::Messages {
        messages: messages(&owner, &[b"one", b"two"]),
        more: false,
    });
    let fetched = result.expect("honest member");
    let bodies: Vec<&[u8]> = fetched.messages.iter().map(|m| m.body.as_slice()).collect();
    assert_eq!(bodies, [b"one".as_slice(), b"two".as_slice()]);
    assert_eq!(cursors.after.get(&net.ids()[member]), Some(&2));
    assert_eq!(cursors.seen.len(), 2);
}

#[test]
fn member_repeating_or_rewinding_its_cursor_is_refused() {
    let mut net = Net::new();
    let owner = recipient().recipient_id();
    let member = net.swarm(&owner)[0];
    let (_, result) = fetch(&mut net, Some(member), |_, _| {
        let mut page = messages(&owner, &[b"one"]);
        page.push(page[0].clone());
        page[1].seq = 5;
        Response::Messages {
            messages: page,
            more: false,
        }
    });
    let problems = failures(&result.expect_err("one message twice"));
    assert!(
        matches!(problems[..], [Problem::DuplicateMessage { .. }]),
        "{problems:?}"
    );
    let (_, result) = fetch(&mut net, Some(member), |_, _| Response::Messages {
        // seq 0 is never after any cursor: a member looping the client back.
        messages: messages(&owner, &[b"one"])
            .into_iter()
            .map(|mut m| {
                m.seq = 0;
                m
            })
            .collect(),
        more: true,
    });
    let problems = failures(&result.expect_err("a cursor that does not move"));
    assert!(
        matches!(problems[..], [Problem::CursorWentBack { .. }]),
        "{problems:?}"
    );
}

#[test]
fn forged_and_expired_descriptors_are_left_out_of_the_directory() {
    let mut net = Net::new();
    let mut client = net.client();
    let mut listing = net.listing();
    // A descriptor whose address was changed after signing, and one already expired.
    let mut bytes = [0u8; MAX_DESCRIPTOR_LEN];
    let n = net.nodes[1].descriptor.encode(&mut bytes).expect("fits");
    bytes[80] ^= 1;
    listing.nodes[1] = UnverifiedDescriptor::decode(&bytes[..n]).expect("well-formed");
    listing.nodes[2] = unverified(&fake_node(2, Timestamp(NOW.0 - 1)).descriptor);
    // A lying seed's descriptor valid for ever (nodes refuse it too).
    listing.nodes[3] = unverified(&fake_node(3, Timestamp(u64::MAX)).descriptor);
    client.refresh_directory(NOW);
    let t = client.poll_transmit().expect("a directory request");
    assert!(matches!(t.body, TransmitBody::Directory { after: None }));
    client.handle_directory(NOW, &mut net.rng, t.id, Ok(listing));
    let known: Vec<NodeId> = client.nodes().map(Descriptor::node_id).collect();
    let ids = net.ids();
    assert_eq!(known.len(), 3);
    assert!(!known.contains(&ids[1]) && !known.contains(&ids[2]) && !known.contains(&ids[3]));
    assert!(known.contains(&ids[0]), "the rest of the listing is kept");
}

#[test]
fn unreachable_seed_fails_with_a_clear_error() {
    let mut net = Net::new();
    let mut client = net.client();
    start_store(&mut net, &mut client, recipient().recipient_id());
    let t = client.poll_transmit().expect("a directory request");
    client.handle_directory(NOW, &mut net.rng, t.id, Err(TransportError::Unreachable));
    let error =
        store_result(client.poll_event().expect("nothing else to ask")).expect_err("no directory");
    assert_eq!(
        error,
        ClientError::NoDirectory {
            asked: 1,
            last: Some(TransportError::Unreachable)
        }
    );
    assert!(error.to_string().contains("no node returned the directory"));
}

#[test]
fn every_plain_request_is_the_same_for_every_recipient() {
    // The only exchange outside an onion is the directory request, and its content does
    // not depend on the recipient: two clients storing for different recipients send
    // identical plain requests.
    let mut plain = Vec::new();
    for seed in [1u8, 2] {
        let net = Net::new();
        let mut client = net.client();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let owner = IdentityKey::from_seed(&[seed; 32]).recipient_id();
        let _ = client.start_store(
            NOW,
            &mut rng,
            StoreSpec {
                recipient: owner,
                body: vec![seed; 10],
                ttl_ms: TTL_MS,
                first_member: None,
            },
        );
        let t = client.poll_transmit().expect("directory first");
        let TransmitBody::Directory { after } = t.body else {
            panic!("the first exchange must be the directory, got an onion");
        };
        plain.push((t.to, after));
    }
    assert_eq!(plain[0], plain[1]);
}

/// Bodies of a large message's parts (any bytes do: the client does not read them).
fn part_bodies(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("part {i}").into_bytes()).collect()
}

/// Serves a parts operation with every exchange queued at once answered last first, and
/// checks that no more than `limit` onions were ever waiting for an answer.
fn run_parts(
    net: &mut Net,
    client: &mut Client,
    limit: usize,
    mut answer: impl FnMut(&Net, &Delivered) -> Response,
) -> Event {
    let mut waiting = Vec::new();
    for _ in 0..1000 {
        if let Some(event) = client.poll_event() {
            assert!(
                client.poll_event().is_none(),
                "a part's own event never shows"
            );
            return event;
        }
        while let Some(t) = client.poll_transmit() {
            waiting.push(t);
        }
        let onions = waiting
            .iter()
            .filter(|t| matches!(t.body, TransmitBody::Onion(_)))
            .count();
        assert!(onions <= limit, "{onions} parts in flight, limit {limit}");
        let t = waiting
            .pop()
            .expect("an operation in progress sends something");
        match t.body {
            TransmitBody::Directory { .. } => {
                let listing = net.listing();
                client.handle_directory(NOW, &mut net.rng, t.id, Ok(listing));
            }
            TransmitBody::Onion(mut packet) => {
                let first = net.index_of_address(&t.to);
                let (delivered, keys) = net.peel_all(first, &mut packet);
                let mut body = Vec::new();
                answer(net, &delivered).encode(&mut body);
                let mut out = vec![0u8; delivered.reply_len];
                reply::seal(keys.last().unwrap(), ReplyStatus::Response, &body, &mut out).unwrap();
                for k in keys[..keys.len() - 1].iter().rev() {
                    reply::add_layer(k, &mut out, delivered.reply_len).unwrap();
                }
                client.handle_onion_answer(NOW, &mut net.rng, t.id, Ok(&mut out));
            }
        }
    }
    panic!("the parts did not finish within 1000 exchanges");
}

#[test]
fn parts_are_stored_each_on_its_own_path_a_bounded_number_at_once_and_acknowledged_together() {
    let mut net = Net::new();
    let mut client = net.client();
    let owner = recipient().recipient_id();
    let bodies = part_bodies(20);
    let spec = StorePartsSpec {
        recipient: owner,
        bodies: bodies.clone(),
        ttl_ms: TTL_MS,
    };
    let _ = client.start_store_parts(NOW, &mut net.rng, spec);
    let limit = ClientConfig::default().parts_in_flight;
    let mut stored = Vec::new();
    let event = run_parts(&mut net, &mut client, limit, |n, d| {
        stored.push(store_of(d).1);
        Response::Stored(honest_ack(n, d))
    });
    let Event::StoredParts { result, .. } = event else {
        panic!("expected the parts' result, got {event:?}");
    };
    let deliveries = result.expect("every part acknowledged");
    assert_eq!(deliveries.len(), bodies.len());
    for (delivery, body) in deliveries.iter().zip(&bodies) {
        assert_eq!(
            delivery.ack.hash,
            message_hash(&owner, Namespace::DIRECT, body),
            "deliveries come back in the order of the bodies"
        );
        assert_eq!(delivery.path.len(), 3);
    }
    stored.sort();
    let mut want = bodies.clone();
    want.sort();
    assert_eq!(stored, want, "each body stored exactly once");
    let paths: std::collections::BTreeSet<Vec<NodeId>> = deliveries
        .iter()
        .map(|d| d.path.iter().map(Descriptor::node_id).collect())
        .collect();
    assert!(paths.len() > 1, "parts do not share one path");
}

#[test]
fn a_part_that_cannot_be_stored_fails_the_whole_and_nothing_more_is_sent() {
    let mut net = Net::new();
    let mut client = net.client();
    let owner = recipient().recipient_id();
    let bodies = part_bodies(30);
    let refused = bodies[3].clone();
    let spec = StorePartsSpec {
        recipient: owner,
        bodies,
        ttl_ms: TTL_MS,
    };
    let _ = client.start_store_parts(NOW, &mut net.rng, spec);
    let mut answered = 0;
    let event = run_parts(&mut net, &mut client, 8, |n, d| {
        answered += 1;
        if store_of(d).1 == refused {
            Response::Refused(RequestError::QuotaExceeded)
        } else {
            Response::Stored(honest_ack(n, d))
        }
    });
    let Event::StoredParts { result, .. } = event else {
        panic!("expected the parts' result, got {event:?}");
    };
    match result {
        Err(ClientError::PartFailed {
            index: 3,
            count: 30,
            error,
        }) => assert!(matches!(*error, ClientError::Refused { .. }), "{error}"),
        other => panic!("expected part 4 of 30 refused, got {other:?}"),
    }
    assert!(
        answered < 30,
        "the bodies after the failure were not all sent"
    );
    assert!(
        client.poll_transmit().is_none(),
        "abandoned parts send nothing"
    );
    assert!(client.poll_timeout().is_none(), "and wait for nothing");
}
