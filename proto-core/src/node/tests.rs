use super::*;
use crate::request::{DeleteRequest, DeleteSelector, HashList, StoreRequest, solve_pow};
use crate::store::MemoryBackend;
use crate::types::Namespace;
use crate::{Epoch, OnionKey};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

const NOW: Timestamp = Timestamp(1_800_000_000_000);
/// Where peer requests come from in these tests (a stranger's address: the budget is
/// far above what a test sends).
const PEER_IP: IpAddr = IpAddr::V4(core::net::Ipv4Addr::new(198, 51, 100, 7));

fn node_with_peers(rng: &mut ChaCha20Rng, peers: u8) -> Node<MemoryBackend> {
    let keys = NodeKeys {
        identity: IdentityKey::from_seed(&[1; 32]),
        onion: OnionKey::generate(Epoch(1), rng),
        tls_key_hash: crate::TlsKeyHash([0x77; 32]),
        address: Address::new("10.0.0.1:7100").expect("valid"),
    };
    let config = NodeConfig {
        replay_filter_words: crate::replay::BUCKETS * 64,
        ..NodeConfig::default()
    };
    let mut n = Node::new(
        config,
        keys,
        Vec::new(),
        MemoryBackend::immediate(),
        NOW,
        rng,
    )
    .expect("opens");
    for i in 0..peers {
        let d = Descriptor::sign(
            &IdentityKey::from_seed(&[i + 2; 32]),
            &OnionKey::generate(Epoch(1), rng),
            crate::TlsKeyHash([0x77; 32]),
            Address::new(&alloc::format!("10.0.1.{i}:7100")).expect("valid"),
            NOW.plus_millis(3_600_000),
        );
        n.handle_register(NOW, PEER_IP, d.into())
            .expect("registers");
        // As if it answered its first probe.
        n.admit(&d.node_id(), NOW);
    }
    n
}

fn rebuilt(n: &mut Node<MemoryBackend>) -> BTreeMap<NodeId, (Digest, usize)> {
    let kept = core::mem::take(&mut n.anti_entropy);
    n.refresh_digests();
    core::mem::replace(&mut n.anti_entropy, kept).by_peer
}

/// Drops peers whose count fell back to zero: an empty entry equals a missing one.
fn nonempty(m: BTreeMap<NodeId, (Digest, usize)>) -> BTreeMap<NodeId, (Digest, usize)> {
    m.into_iter().filter(|(_, (_, c))| *c > 0).collect()
}

#[test]
fn directory_pages_list_every_valid_node_once_in_id_order_with_the_pow_difficulty() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut n = node_with_peers(&mut rng, 9);
    n.config.pow_difficulty = 12;
    let mut listed = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = n.directory_page(NOW, after, 4);
        assert!(page.nodes.len() <= 4, "a page holds at most the limit");
        assert_eq!(page.pow_difficulty, 12);
        listed.extend(page.nodes.iter().map(Descriptor::node_id));
        pages += 1;
        match page.next {
            Some(next) => {
                assert_eq!(
                    Some(&next),
                    listed.last(),
                    "the cursor is the last id listed"
                );
                after = Some(next);
            }
            None => break,
        }
        assert!(pages < 10, "pagination ends");
    }
    assert_eq!(pages, 3, "10 nodes in pages of 4");
    assert_eq!(listed.len(), 10, "9 peers and the node itself");
    assert!(
        listed.windows(2).all(|w| w[0] < w[1]),
        "strictly in id order"
    );
    assert!(listed.contains(&n.node_id()), "the node lists itself");

    // Peers' descriptors expire after an hour: a listing never offers a stale one.
    let later = NOW.plus_millis(3_600_001);
    let page = n.directory_page(later, None, 100);
    assert!(page.nodes.iter().all(|d| d.is_valid_at(later)));
    assert!(page.nodes.len() < 10 && page.next.is_none());
}

// ---- Copies from peers obey the store's rules -------------------------------------

fn peer_key(i: u8) -> IdentityKey {
    IdentityKey::from_seed(&[i + 2; 32])
}

/// A recipient key whose swarm holds this node, and holds peer `sender` exactly when
/// `with_sender`.
fn owner_where(n: &Node<MemoryBackend>, sender: u8, with_sender: bool) -> IdentityKey {
    (0..=255u8)
        .map(|i| IdentityKey::from_seed(&[i; 32]))
        .find(|k| {
            let swarm = n.swarm_ids(&k.recipient_id());
            swarm.contains(&n.node_id())
                && swarm.contains(&peer_key(sender).node_id()) == with_sender
        })
        .expect("some recipient among 256")
}

/// The message a client's store request makes: signed by `owner` when the namespace
/// is owner-only.
fn stored_by_client(owner: &IdentityKey, namespace: Namespace, body: &[u8]) -> WireMessage {
    let request = StoreRequest {
        recipient: owner.recipient_id(),
        namespace,
        timestamp: NOW,
        ttl_ms: 3_600_000,
        pow_nonce: 0,
        body,
    };
    let mut buf = [0u8; packet::MAX_PAYLOAD];
    let len = Request::Store(request)
        .encode(Some(owner), &mut buf)
        .expect("fits");
    let signed = SignedRequest::decode(&buf[..len]).expect("decodes");
    WireMessage {
        recipient: owner.recipient_id(),
        namespace,
        stored_at: NOW,
        expiry: NOW.plus_millis(3_600_000),
        body: body.to_vec(),
        origin: Origin::of(&request, signed.signature()),
    }
}

fn answer(n: &mut Node<MemoryBackend>, req: RequestId) -> PeerResponse {
    answer_at(n, req, NOW)
}

fn answer_at(n: &mut Node<MemoryBackend>, req: RequestId, now: Timestamp) -> PeerResponse {
    n.handle_durable(now);
    while let Some(o) = n.poll_output() {
        if let Output::Respond {
            req: r,
            reply: Reply::Peer(bytes),
        } = o
            && r == req
        {
            return PeerResponse::decode(&bytes).expect("decodes");
        }
    }
    panic!("no answer to {req:?}");
}

fn replicate(
    n: &mut Node<MemoryBackend>,
    sender: u8,
    ms: Vec<WireMessage>,
) -> (Vec<MessageHash>, Vec<(MessageHash, CopyRefusal)>) {
    replicate_at(n, sender, ms, NOW)
}

/// Peer `sender` replicates `ms` at `now`: the hashes stored and those refused, why.
fn replicate_at(
    n: &mut Node<MemoryBackend>,
    sender: u8,
    ms: Vec<WireMessage>,
    now: Timestamp,
) -> (Vec<MessageHash>, Vec<(MessageHash, CopyRefusal)>) {
    let bytes = PeerRequest::Replicate(ms).encode_signed(&peer_key(sender), now);
    n.handle_peer(now, RequestId(77), PEER_IP, peer::Session::None, &bytes);
    match answer_at(n, RequestId(77), now) {
        PeerResponse::Stored { receipts, refused } => {
            (receipts.into_iter().map(|(h, _)| h).collect(), refused)
        }
        other => panic!("expected Stored, got {other:?}"),
    }
}

/// Peer `sender` answers, at `now`, an anti-entropy fetch that `n` made for `asked`
/// with the messages `ms`.
fn answer_fetch(
    n: &mut Node<MemoryBackend>,
    sender: u8,
    asked: &[MessageHash],
    ms: Vec<WireMessage>,
    now: Timestamp,
) {
    let id = TransmitId(500);
    let pending = Pending::Fetch {
        peer: peer_key(sender).node_id(),
        asked: asked.iter().copied().collect(),
    };
    n.pending.insert(id, (now, pending));
    let answer = PeerResponse::Messages(ms);
    n.handle_transmit_result(now, id, Ok(answer.encode()));
}

fn held(n: &Node<MemoryBackend>, m: &WireMessage) -> bool {
    matches!(n.store.get(&m.hash(), NOW), Ok(Some(_)))
}

#[test]
fn replicas_from_a_peer_outside_the_swarm_are_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(31);
    let mut n = node_with_peers(&mut rng, 6);
    let owner = owner_where(&n, 0, false);
    let m = stored_by_client(&owner, Namespace::DIRECT, b"pushed by an outsider");
    let (stored, refused) = replicate(&mut n, 0, vec![m.clone()]);
    assert!(stored.is_empty());
    assert_eq!(refused, [(m.hash(), CopyRefusal::SenderNotInSwarm)]);
    assert!(!held(&n, &m));
    assert_eq!(
        n.stats.copies_refused[CopyRefusal::SenderNotInSwarm.index()],
        1
    );

    // The same message from a member of its swarm is stored: the refusal was the
    // sender's standing, not the message.
    let member = (0..6u8)
        .find(|i| {
            n.swarm_ids(&owner.recipient_id())
                .contains(&peer_key(*i).node_id())
        })
        .expect("a swarm of 3 has 2 peers");
    let (stored, refused) = replicate(&mut n, member, vec![m.clone()]);
    assert_eq!((stored, refused), (vec![m.hash()], vec![]));
    assert!(held(&n, &m));
}

#[test]
fn owner_only_replicas_need_the_owners_signature() {
    let mut rng = ChaCha20Rng::seed_from_u64(32);
    let mut n = node_with_peers(&mut rng, 6);
    let owner = owner_where(&n, 1, true);
    let private = Namespace(0x8001);
    let genuine = stored_by_client(&owner, private, b"the owner's note");

    let mut unsigned = stored_by_client(&owner, private, b"a peer's forgery");
    unsigned.origin.signature = None;
    let mut forged = stored_by_client(&owner, private, b"signed by someone else");
    forged.origin.signature = stored_by_client(&peer_key(1), private, b"x")
        .origin
        .signature;
    let mut altered = genuine.clone();
    altered.body = b"the owner's note, edited".to_vec();

    let (stored, refused) = replicate(
        &mut n,
        1,
        vec![
            unsigned.clone(),
            forged.clone(),
            altered.clone(),
            genuine.clone(),
        ],
    );
    assert_eq!(stored, [genuine.hash()]);
    assert_eq!(
        refused,
        [
            (unsigned.hash(), CopyRefusal::BadSignature),
            (forged.hash(), CopyRefusal::BadSignature),
            (altered.hash(), CopyRefusal::BadSignature),
        ]
    );
    assert!(held(&n, &genuine) && !held(&n, &unsigned) && !held(&n, &forged));
}

#[test]
fn owner_only_copies_from_anti_entropy_need_the_owners_signature_and_a_request() {
    let mut rng = ChaCha20Rng::seed_from_u64(33);
    let mut n = node_with_peers(&mut rng, 6);
    let owner = owner_where(&n, 2, true);
    let private = Namespace(0x8002);
    let genuine = stored_by_client(&owner, private, b"asked for and signed");
    let mut unsigned = stored_by_client(&owner, private, b"asked for, unsigned");
    unsigned.origin.signature = None;
    let unasked = stored_by_client(&owner, Namespace::DIRECT, b"never asked for");

    answer_fetch(
        &mut n,
        2,
        &[genuine.hash(), unsigned.hash()],
        vec![genuine.clone(), unsigned.clone(), unasked.clone()],
        NOW,
    );

    assert!(held(&n, &genuine));
    assert!(
        !held(&n, &unsigned),
        "an unsigned owner-only copy was stored"
    );
    assert!(!held(&n, &unasked), "a copy nobody asked for was stored");
    assert_eq!(n.stats.copies_refused[CopyRefusal::BadSignature.index()], 1);
    assert_eq!(n.stats.copies_refused[CopyRefusal::Unrequested.index()], 1);
}

#[test]
fn replicas_obey_ttl_size_quota_and_proof_of_work() {
    let mut rng = ChaCha20Rng::seed_from_u64(34);
    let mut n = node_with_peers(&mut rng, 6);
    n.config.store.max_ttl_ms = 7_200_000;
    n.store = MessageStore::open(
        MemoryBackend::immediate(),
        StoreConfig {
            max_ttl_ms: 7_200_000,
            max_body: 64,
            recipient_max_messages: 2,
            ..StoreConfig::default()
        },
    )
    .expect("opens");
    let owner = owner_where(&n, 3, true);

    let mut long_ttl = stored_by_client(&owner, Namespace::DIRECT, b"asks for a day");
    long_ttl.origin.ttl_ms = 86_400_000;
    let mut far_expiry = stored_by_client(&owner, Namespace::DIRECT, b"expires in a year");
    far_expiry.expiry = NOW.plus_millis(365 * 86_400_000);
    let large = stored_by_client(&owner, Namespace::DIRECT, &[7; 65]);
    let mut backdated = stored_by_client(&owner, Namespace::DIRECT, b"stored before asked");
    backdated.stored_at = Timestamp(NOW.0 - 3_600_000);
    let mut future = stored_by_client(&owner, Namespace::DIRECT, b"stored tomorrow");
    future.stored_at = NOW.plus_millis(86_400_000);
    future.origin.timestamp = future.stored_at;
    let fits: Vec<WireMessage> = (0..3u8)
        .map(|i| stored_by_client(&owner, Namespace::DIRECT, &[i; 8]))
        .collect();

    let mut batch = vec![
        long_ttl.clone(),
        far_expiry.clone(),
        large.clone(),
        backdated.clone(),
        future.clone(),
    ];
    batch.extend(fits.iter().cloned());
    let (stored, refused) = replicate(&mut n, 3, batch);
    assert_eq!(stored, [fits[0].hash(), fits[1].hash()]);
    assert_eq!(
        refused,
        [
            (long_ttl.hash(), CopyRefusal::TtlTooLong),
            (far_expiry.hash(), CopyRefusal::TtlTooLong),
            (large.hash(), CopyRefusal::BodyTooLarge),
            (backdated.hash(), CopyRefusal::InconsistentTimes),
            (future.hash(), CopyRefusal::InconsistentTimes),
            (fits[2].hash(), CopyRefusal::QuotaExceeded),
        ]
    );

    // With a proof-of-work requirement, a copy must carry the work a client would.
    n.config.pow_difficulty = 8;
    let other = owner_where(&n, 4, true);
    let lazy = stored_by_client(&other, Namespace::DIRECT, b"no work");
    let mut paid = stored_by_client(&other, Namespace::DIRECT, b"work done");
    let request = paid
        .origin
        .request(paid.recipient, paid.namespace, &paid.body);
    paid.origin.pow_nonce = solve_pow(&request, 8, 1 << 20).expect("solvable");
    let (stored, refused) = replicate(&mut n, 4, vec![lazy.clone(), paid.clone()]);
    if pow_satisfied(
        &lazy
            .origin
            .request(lazy.recipient, lazy.namespace, &lazy.body),
        8,
    ) {
        panic!("nonce 0 happens to meet difficulty 8: pick another body");
    }
    assert_eq!(stored, [paid.hash()]);
    assert_eq!(refused, [(lazy.hash(), CopyRefusal::InsufficientPow)]);
}

fn signed(owner: &IdentityKey, request: &Request<'_>) -> Vec<u8> {
    let mut buf = [0u8; packet::MAX_PAYLOAD];
    let len = request.encode(Some(owner), &mut buf).expect("fits");
    buf[..len].to_vec()
}

/// How the tests' final-hop requests are answered: a fixed key, room for a page.
fn reply_to() -> ReplyTo {
    ReplyTo {
        key: ReplyKey::new([3; 32]),
        len: 64 * 1024,
    }
}

/// What the final hop answers a request (decoded from the sealed reply).
fn final_hop_answer(n: &mut Node<MemoryBackend>, payload: &[u8]) -> Response {
    final_hop_answer_in(n, payload, reply_to().len)
}

/// [`final_hop_answer`] for a packet that asked for a reply of `len` bytes.
fn final_hop_answer_in(n: &mut Node<MemoryBackend>, payload: &[u8], len: usize) -> Response {
    let to = ReplyTo {
        key: ReplyKey::new([3; 32]),
        len,
    };
    n.execute(NOW, RequestId(9), payload, to);
    while let Some(o) = n.poll_output() {
        if let Output::Respond {
            req: RequestId(9),
            reply: Reply::Onion(mut bytes),
        } = o
        {
            assert_eq!(bytes.len(), len, "sealed to the length asked for");
            let opened = reply::open(&[ReplyKey::new([3; 32])], &mut bytes).expect("opens");
            let reply::Opened::Response { body } = opened else {
                panic!("a hop failure: {opened:?}");
            };
            return Response::decode(body).expect("decodes");
        }
    }
    panic!("no answer");
}

#[test]
fn a_page_is_fitted_to_the_reply_asked_for_and_one_that_cannot_hold_a_message_is_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(41);
    let mut n = node_with_peers(&mut rng, 6);
    let owner = owner_where(&n, 0, true);
    for i in 0..3u8 {
        let m = stored_by_client(&owner, Namespace::DIRECT, &[i; 1000]);
        n.store.insert(new_message(&m), NOW).expect("stored");
    }
    let retrieve = signed(
        &owner,
        &Request::Retrieve(crate::request::RetrieveRequest {
            recipient: owner.recipient_id(),
            namespace: Namespace::DIRECT,
            timestamp: NOW,
            after: 0,
            limit: 10,
        }),
    );
    let page = |n: &mut Node<MemoryBackend>, len| match final_hop_answer_in(n, &retrieve, len) {
        Response::Messages { messages, more } => Ok((messages.len(), more)),
        Response::Refused(e) => Err(e),
        other => panic!("{other:?}"),
    };
    // 1 KiB holds no 1000-byte message: refused by name, not an endless empty page.
    assert_eq!(page(&mut n, 1024), Err(RequestError::ReplyTooSmall));
    // 4 KiB holds all three stored: no "more".
    assert_eq!(page(&mut n, 4096), Ok((3, false)));
    for i in 3..20u8 {
        let m = stored_by_client(&owner, Namespace::DIRECT, &[i; 1000]);
        n.store.insert(new_message(&m), NOW).expect("stored");
    }
    // Ten asked for, three fit in 4 KiB: the page is cut and says so.
    assert_eq!(page(&mut n, 4096), Ok((3, true)));
    assert_eq!(page(&mut n, 16 * 1024), Ok((10, true)));
}

#[test]
fn a_replayed_signed_delete_all_deletes_nothing_the_second_time() {
    let mut rng = ChaCha20Rng::seed_from_u64(35);
    let mut n = node_with_peers(&mut rng, 6);
    let owner = owner_where(&n, 0, true);
    let put = |n: &mut Node<MemoryBackend>, body: &[u8], at: Timestamp| {
        let mut m = stored_by_client(&owner, Namespace::DIRECT, body);
        m.stored_at = at;
        m.origin.timestamp = at;
        n.store.insert(new_message(&m), at).expect("stored");
        m
    };
    for i in 0..3u8 {
        put(&mut n, &[i; 4], NOW);
    }
    let delete_all = delete_all_of(&owner, &owner, NOW);
    assert_eq!(
        final_hop_answer(&mut n, &delete_all),
        Response::Deleted { count: 3 }
    );

    // New mail arrives; the same signed delete-all comes again inside its window:
    // through another path, and relayed by a swarm member that captured it.
    let later = NOW.plus_millis(1_000);
    let kept = [
        put(&mut n, b"new one", later),
        put(&mut n, b"another", later),
    ];
    assert_eq!(
        final_hop_answer(&mut n, &delete_all),
        Response::Refused(RequestError::AlreadyApplied)
    );
    let relay = PeerRequest::Relay(delete_all.clone()).encode_signed(&peer_key(0), NOW);
    n.handle_peer(NOW, RequestId(78), PEER_IP, peer::Session::None, &relay);
    assert_eq!(answer(&mut n, RequestId(78)), PeerResponse::Applied(0));
    assert!(
        kept.iter().all(|m| held(&n, m)),
        "the replay deleted new mail"
    );
    assert_eq!(n.stats.changes_already_applied, 2);

    // A new request, signed again after the new mail came, does apply.
    let again = delete_all_of(&owner, &owner, NOW.plus_millis(2_000));
    assert_eq!(
        final_hop_answer(&mut n, &again),
        Response::Deleted { count: 2 }
    );
}

#[test]
fn a_delete_all_applied_late_spares_mail_stored_after_it_was_signed() {
    let mut rng = ChaCha20Rng::seed_from_u64(37);
    let mut n = node_with_peers(&mut rng, 6);
    let owner = owner_where(&n, 0, true);
    let old = stored_by_client(&owner, Namespace::DIRECT, b"before the delete");
    n.store.insert(new_message(&old), NOW).expect("stored");
    let delete_all = delete_all_of(&owner, &owner, NOW);
    // Mail stored after the request was signed, then the relay of the delete arrives
    // late (retried after this member was unreachable for a while).
    let later = NOW.plus_millis(20_000);
    let mut new = stored_by_client(&owner, Namespace::DIRECT, b"after the delete");
    new.stored_at = NOW.plus_millis(10_000);
    new.origin.timestamp = new.stored_at;
    n.store.insert(new_message(&new), later).expect("stored");
    let relay = PeerRequest::Relay(delete_all).encode_signed(&peer_key(1), later);
    n.handle_peer(later, RequestId(79), PEER_IP, peer::Session::None, &relay);
    assert_eq!(answer(&mut n, RequestId(79)), PeerResponse::Applied(1));
    assert!(!held(&n, &old), "the delete removed the older message");
    assert!(held(&n, &new), "the late delete removed newer mail");
}

#[test]
fn a_message_deleted_here_is_not_brought_back_by_a_member_that_missed_the_delete() {
    let mut rng = ChaCha20Rng::seed_from_u64(36);
    let mut n = node_with_peers(&mut rng, 6);
    let owner = owner_where(&n, 0, true);
    let m = stored_by_client(&owner, Namespace::DIRECT, b"to be deleted");
    n.store.insert(new_message(&m), NOW).expect("stored");
    // The delete reaches this member (relayed by another member); the third member
    // (peer 0 here) missed it and still holds the message.
    let delete = signed(
        &owner,
        &Request::Delete(DeleteRequest {
            recipient: owner.recipient_id(),
            namespace: Namespace::DIRECT,
            timestamp: NOW,
            selector: DeleteSelector::Hashes(
                HashList::from_bytes(m.hash().as_bytes()).expect("one hash"),
            ),
        }),
    );
    let relay = PeerRequest::Relay(delete).encode_signed(&peer_key(1), NOW);
    n.handle_peer(NOW, RequestId(80), PEER_IP, peer::Session::None, &relay);
    assert_eq!(answer(&mut n, RequestId(80)), PeerResponse::Applied(1));

    // Anti-entropy from the member that missed it: pushed as a handoff, and as the
    // answer to a fetch this node made. Neither brings it back.
    let later = NOW.plus_millis(30_000);
    assert_eq!(
        replicate_at(&mut n, 0, vec![m.clone()], later),
        (vec![], vec![(m.hash(), CopyRefusal::Deleted)])
    );
    answer_fetch(&mut n, 0, &[m.hash()], vec![m.clone()], later);
    assert!(!matches!(n.store.get(&m.hash(), later), Ok(Some(_))));
    assert_eq!(n.stats.copies_refused[CopyRefusal::Deleted.index()], 2);
}

#[test]
fn an_identity_has_one_peer_budget_whatever_address_it_sends_from() {
    let mut rng = ChaCha20Rng::seed_from_u64(40);
    let mut n = node_with_peers(&mut rng, 6);
    n.identities = RateLimiter::new(RateLimitConfig {
        burst: 3,
        per_second: 1,
        max_keys: 16,
    });
    let digest = |sender: u8| {
        PeerRequest::Digest {
            digest: Digest::default(),
            start: 0,
        }
        .encode_signed(&peer_key(sender), NOW)
    };
    let refused = |n: &mut Node<MemoryBackend>, req: u64| {
        core::iter::from_fn(|| n.poll_output()).any(|o| {
            matches!(
                o,
                Output::Respond {
                    req: r,
                    reply: Reply::PeerRefused(PeerError::RateLimited),
                } if r == RequestId(req)
            )
        })
    };
    // Peer 0 spreads its requests over five live nodes' addresses: its fourth is
    // refused all the same.
    for k in 0..5u8 {
        let source = IpAddr::from([10, 0, 1, k]);
        n.handle_peer(
            NOW,
            RequestId(u64::from(k)),
            source,
            peer::Session::None,
            &digest(0),
        );
        assert_eq!(refused(&mut n, u64::from(k)), k >= 3, "request {k}");
    }
    // Another identity from the same address is not charged for it; and naming
    // peer 1 in an envelope that does not verify spends none of peer 1's budget.
    let mut forged = digest(1);
    let last = forged.len() - 1;
    forged[last] ^= 1;
    for k in 10..13 {
        n.handle_peer(
            NOW,
            RequestId(k),
            IpAddr::from([10, 0, 1, 0]),
            peer::Session::None,
            &forged,
        );
    }
    while n.poll_output().is_some() {}
    for k in 20..23 {
        n.handle_peer(
            NOW,
            RequestId(k),
            IpAddr::from([10, 0, 1, 0]),
            peer::Session::None,
            &digest(1),
        );
        assert!(!refused(&mut n, k));
    }
}

#[test]
fn a_digest_that_differs_everywhere_is_answered_in_pages_of_buckets() {
    let mut rng = ChaCha20Rng::seed_from_u64(41);
    let mut n = node_with_peers(&mut rng, 6);
    let owner = owner_where(&n, 0, true);
    let mut held = BTreeSet::new();
    for i in 0..600u32 {
        let m = stored_by_client(&owner, Namespace::DIRECT, &i.to_be_bytes());
        n.store.insert(new_message(&m), NOW).expect("stored");
        held.insert(m.hash());
    }
    // A peer that holds nothing: every bucket differs.
    let ask = |n: &mut Node<MemoryBackend>, start: u8| {
        let bytes = PeerRequest::Digest {
            digest: Digest::default(),
            start,
        }
        .encode_signed(&peer_key(0), NOW);
        n.handle_peer(NOW, RequestId(90), PEER_IP, peer::Session::None, &bytes);
        match answer(n, RequestId(90)) {
            PeerResponse::DigestDiff {
                hashes,
                truncated,
                covered,
                ..
            } => (hashes, truncated, covered),
            other => panic!("expected a digest diff, got {other:?}"),
        }
    };
    let mut seen = BTreeSet::new();
    let mut start = 250u8;
    for page in 0..20 {
        let (hashes, truncated, covered) = ask(&mut n, start);
        assert!(
            covered.len() <= MAX_DIFF_BUCKETS,
            "page {page} read too much"
        );
        assert!(truncated, "256 differing buckets do not fit one page");
        // Cyclic order from `start` (250..=255, then 0, 1, ...), skipping the buckets
        // where both sides agree (empty on both).
        let first = (0..=255u8)
            .map(|k| start.wrapping_add(k))
            .find(|b| held.iter().any(|h| h.as_bytes()[0] == *b));
        assert_eq!(covered.first().copied(), first);
        let expected: BTreeSet<MessageHash> = held
            .iter()
            .filter(|h| covered.contains(&h.as_bytes()[0]))
            .copied()
            .collect();
        assert_eq!(hashes.iter().copied().collect::<BTreeSet<_>>(), expected);
        seen.extend(hashes);
        start = covered[covered.len() - 1].wrapping_add(1);
    }
    assert_eq!(
        seen, held,
        "pages from successive starts cover every bucket"
    );
}

#[test]
fn a_member_that_held_nothing_when_everything_was_deleted_refuses_older_copies_later() {
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    let mut n = node_with_peers(&mut rng, 6);
    let owner = owner_where(&n, 0, true);
    let delete_all = delete_all_of(&owner, &owner, NOW);
    assert_eq!(
        final_hop_answer(&mut n, &delete_all),
        Response::Deleted { count: 0 }
    );
    while n.poll_output().is_some() {}
    // A copy of a message stored before the delete reaches this member afterwards
    // (replication was still retrying): refused, and its sender is shown the delete.
    let later = NOW.plus_millis(30_000);
    let old = stored_by_client(&owner, Namespace::DIRECT, b"stored before");
    let mut new = stored_by_client(&owner, Namespace::DIRECT, b"stored after");
    new.stored_at = NOW.plus_millis(5_000);
    new.origin.timestamp = new.stored_at;
    let bytes =
        PeerRequest::Replicate(vec![old.clone(), new.clone()]).encode_signed(&peer_key(0), later);
    n.handle_peer(later, RequestId(91), PEER_IP, peer::Session::None, &bytes);
    n.handle_durable(later);
    let outputs: Vec<Output> = core::iter::from_fn(|| n.poll_output()).collect();
    let answer = outputs.iter().find_map(|o| match o {
        Output::Respond {
            req: RequestId(91),
            reply: Reply::Peer(b),
        } => PeerResponse::decode(b).ok(),
        _ => None,
    });
    let Some(PeerResponse::Stored { receipts, refused }) = answer else {
        panic!("expected stored, got {answer:?}");
    };
    assert_eq!(
        receipts.iter().map(|(h, _)| *h).collect::<Vec<_>>(),
        vec![new.hash()]
    );
    assert_eq!(refused, vec![(old.hash(), CopyRefusal::Deleted)]);
    let shown: Vec<PeerRequest> = outputs
        .into_iter()
        .filter_map(|o| match o {
            Output::Transmit {
                to: Some(to),
                endpoint: Endpoint::Peer,
                body,
                ..
            } if to == peer_key(0).node_id() => {
                peer::decode_request(&body, later, 60_000, peer::Session::None, |_| {
                    Some(crate::TlsKeyHash::default())
                })
                .ok()
                .map(|a| a.request)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        shown,
        vec![PeerRequest::Tombstones(vec![(old.hash(), delete_all)])]
    );
}

#[test]
fn requests_and_envelopes_of_another_protocol_version_are_refused_by_name() {
    let mut rng = ChaCha20Rng::seed_from_u64(43);
    let mut n = node_with_peers(&mut rng, 3);
    // A final-hop request whose version byte is 1: sealed back as unsupported_version.
    let mut info = [0u8; 8];
    let len = Request::Info.encode(None, &mut info).expect("fits");
    let mut request = info[..len].to_vec();
    request[0] = 1;
    assert_eq!(
        final_hop_answer(&mut n, &request),
        Response::Refused(RequestError::UnsupportedVersion)
    );
    // A peer envelope whose version byte is 1, from a live node: refused by name,
    // before anything else is read.
    let mut envelope = PeerRequest::Fetch(vec![]).encode_signed(&peer_key(0), NOW);
    envelope[0] = 1;
    n.handle_peer(NOW, RequestId(92), PEER_IP, peer::Session::None, &envelope);
    let refused = core::iter::from_fn(|| n.poll_output()).any(|o| {
        matches!(
            o,
            Output::Respond {
                req: RequestId(92),
                reply: Reply::PeerRefused(PeerError::UnsupportedVersion),
            }
        )
    });
    assert!(
        refused,
        "a version-2 envelope was not refused as unsupported_version"
    );
}

/// A delete of every direct message of `owner`, signed by `signer` (the owner itself,
/// unless a test forges it) at `ts`.
fn delete_all_of(owner: &IdentityKey, signer: &IdentityKey, ts: Timestamp) -> Vec<u8> {
    signed(
        signer,
        &Request::Delete(DeleteRequest {
            recipient: owner.recipient_id(),
            namespace: Namespace::DIRECT,
            timestamp: ts,
            selector: DeleteSelector::All,
        }),
    )
}

/// The owner's signed delete of `m`, as a client sends it at `ts`.
fn delete_of(owner: &IdentityKey, m: &WireMessage, ts: Timestamp) -> Vec<u8> {
    signed(
        owner,
        &Request::Delete(DeleteRequest {
            recipient: owner.recipient_id(),
            namespace: m.namespace,
            timestamp: ts,
            selector: DeleteSelector::Hashes(
                HashList::from_bytes(m.hash().as_bytes()).expect("one hash"),
            ),
        }),
    )
}

/// Peer `sender` shows `entries` (hash, owner's delete) at `now`; the answer.
fn show_tombstones(
    n: &mut Node<MemoryBackend>,
    sender: u8,
    entries: Vec<(MessageHash, Vec<u8>)>,
    now: Timestamp,
) -> PeerResponse {
    let bytes = PeerRequest::Tombstones(entries).encode_signed(&peer_key(sender), now);
    n.handle_peer(now, RequestId(81), PEER_IP, peer::Session::None, &bytes);
    answer_at(n, RequestId(81), now)
}

#[test]
fn a_member_that_applied_a_delete_shows_it_to_a_peer_still_holding_the_message() {
    let mut rng = ChaCha20Rng::seed_from_u64(38);
    let mut n = node_with_peers(&mut rng, 6);
    let owner = owner_where(&n, 0, true);
    let m = stored_by_client(&owner, Namespace::DIRECT, b"to be deleted");
    n.store.insert(new_message(&m), NOW).expect("stored");
    let delete = delete_of(&owner, &m, NOW);
    let relay = PeerRequest::Relay(delete.clone()).encode_signed(&peer_key(1), NOW);
    n.handle_peer(NOW, RequestId(80), PEER_IP, peer::Session::None, &relay);
    assert_eq!(answer(&mut n, RequestId(80)), PeerResponse::Applied(1));
    while n.poll_output().is_some() {}

    // Anti-entropy with peer 0, which still lists the message: this node does not
    // fetch it back but shows peer 0 the owner's delete, long after its window.
    let later = NOW.plus_millis(600_000);
    let digest = Digest::default();
    n.reconcile(
        later,
        peer_key(0).node_id(),
        &digest,
        &digest,
        &[m.hash()],
        &[],
    );
    let sent: Vec<PeerRequest> = core::iter::from_fn(|| n.poll_output())
        .filter_map(|o| match o {
            Output::Transmit {
                endpoint: Endpoint::Peer,
                body,
                ..
            } => peer::decode_request(&body, later, 60_000, peer::Session::None, |_| {
                Some(crate::TlsKeyHash::default())
            })
            .ok()
            .map(|a| a.request),
            _ => None,
        })
        .collect();
    assert_eq!(
        sent,
        vec![PeerRequest::Tombstones(vec![(m.hash(), delete)])]
    );
    assert_eq!(n.stats.tombstones_shown, 1);
}

#[test]
fn a_member_that_missed_a_delete_deletes_its_copy_only_on_the_owners_own_delete() {
    let mut rng = ChaCha20Rng::seed_from_u64(39);
    let mut n = node_with_peers(&mut rng, 6);
    let owner = owner_where(&n, 0, true);
    let m = stored_by_client(&owner, Namespace::DIRECT, b"missed the delete");
    let kept = stored_by_client(&owner, Namespace::DIRECT, b"never deleted");
    for x in [&m, &kept] {
        n.store.insert(new_message(x), NOW).expect("stored");
    }
    let later = NOW.plus_millis(600_000);
    let delete_all = |ts: Timestamp, by: &IdentityKey| delete_all_of(&owner, by, ts);
    // What a peer cannot make it delete: a delete signed by another key, one of
    // another message, a delete-all signed before the message was stored, something
    // that is not a delete, and bytes that are not a request.
    let forged = [
        (m.hash(), delete_all(NOW, &peer_key(0))),
        (kept.hash(), delete_of(&owner, &m, NOW)),
        (m.hash(), delete_all(Timestamp(NOW.0 - 1), &owner)),
        (m.hash(), signed(&owner, &Request::Info)),
        (m.hash(), vec![1, 3, 0]),
    ];
    assert_eq!(
        show_tombstones(&mut n, 0, forged.to_vec(), later),
        PeerResponse::Applied(0)
    );
    assert!(held(&n, &m) && held(&n, &kept));

    // The owner's own delete, ten minutes old: applied, with its tombstone and the
    // evidence kept for the next member that missed it.
    let delete = delete_of(&owner, &m, NOW);
    assert_eq!(
        show_tombstones(&mut n, 0, vec![(m.hash(), delete.clone())], later),
        PeerResponse::Applied(1)
    );
    assert!(!held(&n, &m) && held(&n, &kept));
    let t = n.store.tombstone(&m.hash()).unwrap().expect("a tombstone");
    assert_eq!(t.evidence, delete);
    assert_eq!(n.stats.deletes_learned, 1);
}

/// The peer requests `n` sends when its outputs are polled, decoded: (exchange, peer,
/// request).
fn peer_requests_sent(
    n: &mut Node<MemoryBackend>,
    now: Timestamp,
) -> Vec<(TransmitId, NodeId, PeerRequest)> {
    core::iter::from_fn(|| n.poll_output())
        .filter_map(|o| match o {
            Output::Transmit {
                id,
                to: Some(peer),
                endpoint: Endpoint::Peer,
                body,
                ..
            } => peer::decode_request(&body, now, 60_000, peer::Session::None, |_| {
                Some(crate::TlsKeyHash::default())
            })
            .ok()
            .map(|a| (id, peer, a.request)),
            _ => None,
        })
        .collect()
}

/// The relays of a signed change `n` has sent: (exchange, peer).
fn relays_sent(n: &mut Node<MemoryBackend>, now: Timestamp) -> Vec<(TransmitId, NodeId)> {
    peer_requests_sent(n, now)
        .into_iter()
        .filter_map(|(id, peer, request)| {
            matches!(request, PeerRequest::Relay(_)).then_some((id, peer))
        })
        .collect()
}

#[test]
fn a_relayed_delete_is_asked_again_until_confirmed_within_its_window() {
    let mut rng = ChaCha20Rng::seed_from_u64(37);
    let mut n = node_with_peers(&mut rng, 6);
    let owner = owner_where(&n, 0, true);
    let delete = delete_all_of(&owner, &owner, NOW);
    n.execute(NOW, RequestId(9), &delete, reply_to());
    let first = relays_sent(&mut n, NOW);
    assert_eq!(first.len(), 2, "one relay per other member");
    // One member is down; the other confirms.
    let (down_id, down) = first[0];
    n.handle_transmit_result(NOW, down_id, Err(TransmitFailure::Unreachable));
    n.handle_transmit_result(NOW, first[1].0, Ok(PeerResponse::Applied(0).encode()));
    let retry_at = NOW.plus_millis(n.config.replication_retry_ms);
    assert!(n.poll_timeout().is_some_and(|t| t <= retry_at));
    n.handle_timeout(retry_at);
    let again = relays_sent(&mut n, retry_at);
    assert_eq!(again.iter().map(|(_, p)| *p).collect::<Vec<_>>(), [down]);
    // Still down until the window closes: no relay after that.
    let mut t = retry_at;
    let mut last = again[0].0;
    let window_end = NOW.plus_millis(n.config.auth_window_ms);
    let mut attempts = 1;
    loop {
        n.handle_transmit_result(t, last, Err(TransmitFailure::Timeout));
        t = t.plus_millis(n.config.replication_retry_ms);
        n.handle_timeout(t);
        match relays_sent(&mut n, t).first() {
            Some((id, _)) => {
                assert!(t <= window_end, "a relay after its window");
                last = *id;
                attempts += 1;
            }
            None => break,
        }
        assert!(attempts < 1_000, "relays never stop");
    }
    assert!(attempts > 10, "only {attempts} attempts in the window");
    // Once confirmed, never again.
    n.handle_timeout(t.plus_millis(60_000));
    assert!(relays_sent(&mut n, t).is_empty());
}

#[test]
fn digests_kept_from_the_change_log_equal_a_full_rebuild() {
    let mut rng = ChaCha20Rng::seed_from_u64(21);
    let mut n = node_with_peers(&mut rng, 5);
    n.refresh_digests();
    let recipients: Vec<RecipientId> = (0..40u8).map(|i| RecipientId([i; 32])).collect();
    for round in 0..6u64 {
        for (i, r) in recipients.iter().enumerate() {
            let body = alloc::format!("round {round} message {i}");
            let ttl = 1_000 + (rng.next_u64() % 5_000);
            n.store
                .insert(
                    NewMessage::unsigned(
                        *r,
                        Namespace::DIRECT,
                        body.as_bytes(),
                        NOW,
                        NOW.plus_millis(ttl),
                    ),
                    NOW,
                )
                .expect("stored");
        }
        let victim = recipients[usize::try_from(round).expect("small") * 3];
        n.store
            .delete_all(&victim, Namespace::DIRECT, NOW)
            .expect("deleted");
        n.store
            .expire(NOW.plus_millis(1_000 + round * 700), 50)
            .expect("swept");
        n.refresh_digests();
        assert_eq!(
            nonempty(n.anti_entropy.by_peer.clone()),
            nonempty(rebuilt(&mut n)),
            "round {round}"
        );
    }
    assert!(n.anti_entropy.by_peer.values().any(|(_, c)| *c > 0));
}

#[test]
fn a_ring_change_rebuilds_the_digests() {
    let mut rng = ChaCha20Rng::seed_from_u64(22);
    let mut n = node_with_peers(&mut rng, 2);
    for i in 0..30u8 {
        n.store
            .insert(
                NewMessage::unsigned(
                    RecipientId([i; 32]),
                    Namespace::DIRECT,
                    &[i],
                    NOW,
                    NOW.plus_millis(60_000),
                ),
                NOW,
            )
            .expect("stored");
    }
    n.refresh_digests();
    let before = n.anti_entropy.by_peer.len();
    let d = Descriptor::sign(
        &IdentityKey::from_seed(&[99; 32]),
        &OnionKey::generate(Epoch(1), &mut rng),
        crate::TlsKeyHash([0x77; 32]),
        Address::new("10.0.2.1:7100").expect("valid"),
        NOW.plus_millis(3_600_000),
    );
    n.handle_register(NOW, PEER_IP, d.into())
        .expect("registers");
    n.refresh_digests();
    assert_eq!(
        n.anti_entropy.ring_generation,
        Some(n.membership.ring_generation())
    );
    assert_eq!(
        nonempty(n.anti_entropy.by_peer.clone()),
        nonempty(rebuilt(&mut n))
    );
    assert!(n.anti_entropy.by_peer.len() >= before);
}

#[test]
fn exchange_results_clear_their_deadline_by_id_and_late_or_repeated_results_do_nothing() {
    let mut rng = ChaCha20Rng::seed_from_u64(41);
    let mut n = node_with_peers(&mut rng, 6);
    let owner = owner_where(&n, 0, true);
    // Deletes relayed to the other members: several exchanges in flight at once.
    for i in 0..5 {
        let delete = delete_all_of(&owner, &owner, NOW.plus_millis(i));
        n.execute(NOW, RequestId(100 + i), &delete, reply_to());
    }
    let sent = relays_sent(&mut n, NOW);
    assert!(sent.len() >= 6, "only {} exchanges in flight", sent.len());
    assert_eq!(n.pending_exchanges(), sent.len());
    assert_eq!(n.transmit_deadlines.len(), sent.len());
    // Answered out of order, all but one; each answer removes exactly its own deadline.
    let (kept, answered) = sent.split_last().expect("several");
    for (i, (id, _)) in answered.iter().rev().enumerate() {
        n.handle_transmit_result(NOW, *id, Err(TransmitFailure::Unreachable));
        assert_eq!(n.pending_exchanges(), answered.len() - i);
        assert_eq!(n.transmit_deadlines.len(), answered.len() - i);
        assert!(n.transmit_deadlines.iter().all(|(_, t)| *t != *id));
    }
    // A repeated answer finds nothing to remove.
    n.handle_transmit_result(NOW, answered[0].0, Ok(PeerResponse::Applied(0).encode()));
    assert_eq!(n.pending_exchanges(), 1);
    // The one left times out at its deadline; its late answer is then ignored.
    let deadline = n.transmit_deadlines.first().expect("one left").0;
    n.handle_timeout(deadline);
    assert!(!n.pending.contains_key(&kept.0));
    assert!(n.transmit_deadlines.iter().all(|(_, t)| *t != kept.0));
    // Retries and periodic duties started new exchanges: each filed under its deadline.
    let filed = n.pending.len();
    assert_eq!(n.transmit_deadlines.len(), filed);
    assert!(
        n.pending
            .iter()
            .all(|(id, (d, _))| n.transmit_deadlines.contains(&(*d, *id)))
    );
    n.handle_transmit_result(deadline, kept.0, Ok(PeerResponse::Applied(0).encode()));
    assert_eq!(n.pending.len(), filed);
}

#[test]
fn settings_that_break_the_protocol_are_refused_by_name() {
    assert_eq!(NodeConfig::default().validate(), Ok(()));
    let refused = |change: fn(&mut NodeConfig)| {
        let mut c = NodeConfig::default();
        change(&mut c);
        c.validate().expect_err("refused").setting
    };
    assert_eq!(refused(|c| c.write_quorum = 4), "write_quorum");
    assert_eq!(refused(|c| c.swarm_size = 0), "swarm_size");
    assert_eq!(
        refused(|c| c.onion_key_grace_ms = 1_000),
        "onion_key_grace_ms"
    );
    assert_eq!(
        refused(|c| c.onion_key_rotation_ms = c.onion_key_grace_ms),
        "onion_key_rotation_ms"
    );
    assert_eq!(
        refused(|c| c.store.max_ttl_ms += 15 * 86_400_000),
        "store.max_ttl_ms"
    );
    assert_eq!(
        refused(|c| c.directory.evict_after_ms = 0),
        "directory.evict_after_ms"
    );
    assert_eq!(refused(|c| c.peer_rate.burst = 0), "peer_rate.burst");
    let e = NodeConfig {
        write_quorum: 5,
        ..NodeConfig::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(
        alloc::string::ToString::to_string(&e),
        "write_quorum must be between 1 and swarm_size (3)"
    );
}

// ---- Copies due together travel together ------------------------------------------

/// The replicates `n` sends when its outputs are polled: (exchange, member, the hashes
/// of the copies it carries).
fn replicates_sent(
    n: &mut Node<MemoryBackend>,
    now: Timestamp,
) -> Vec<(TransmitId, NodeId, Vec<MessageHash>)> {
    peer_requests_sent(n, now)
        .into_iter()
        .filter_map(|(id, peer, request)| match request {
            PeerRequest::Replicate(ms) => {
                Some((id, peer, ms.iter().map(WireMessage::hash).collect()))
            }
            _ => None,
        })
        .collect()
}

/// The requests `n` answered with an acknowledgement.
fn acknowledged(n: &mut Node<MemoryBackend>) -> Vec<RequestId> {
    core::iter::from_fn(|| n.poll_output())
        .filter_map(|o| match o {
            Output::Respond {
                req,
                reply: Reply::Onion(mut bytes),
            } => {
                let opened = reply::open(&[ReplyKey::new([3; 32])], &mut bytes).ok()?;
                let reply::Opened::Response { body } = opened else {
                    return None;
                };
                matches!(Response::decode(body), Ok(Response::Stored(_))).then_some(req)
            }
            _ => None,
        })
        .collect()
}

#[test]
fn copies_due_to_a_member_together_go_in_one_replicate_and_count_only_by_their_own_receipt() {
    let mut rng = ChaCha20Rng::seed_from_u64(41);
    let mut n = node_with_peers(&mut rng, 6);
    let owner = owner_where(&n, 0, true);
    let member = peer_key(0);
    let recipient = owner.recipient_id();
    // Three stores to one recipient arrive before the node's outputs are next carried.
    let mut messages = Vec::new();
    for i in 0..3u8 {
        let m = stored_by_client(&owner, Namespace::DIRECT, &[i; 40]);
        let request = Request::Store(StoreRequest {
            recipient,
            namespace: Namespace::DIRECT,
            timestamp: NOW,
            ttl_ms: 3_600_000,
            pow_nonce: 0,
            body: &m.body,
        });
        let mut buf = [0u8; packet::MAX_PAYLOAD];
        let len = request.encode(None, &mut buf).expect("fits");
        n.execute(NOW, RequestId(100 + u64::from(i)), &buf[..len], reply_to());
        messages.push(m);
    }
    let hashes: Vec<MessageHash> = messages.iter().map(WireMessage::hash).collect();
    let sent = replicates_sent(&mut n, NOW);
    assert_eq!(sent.len(), 2, "one replicate per other member: {sent:?}");
    for (_, _, carried) in &sent {
        assert_eq!(carried, &hashes, "every store's copy, in order");
    }
    assert_eq!(n.stats().replications_sent, 2);
    assert_eq!(n.stats().replicas_sent, 6);
    let (to_member, _, _) = *sent
        .iter()
        .find(|(_, p, _)| *p == member.node_id())
        .expect("the member is in the swarm");
    let other = sent
        .iter()
        .map(|(_, p, _)| *p)
        .find(|p| *p != member.node_id())
        .expect("a third member");
    // The member answers: a good receipt for the first copy, one over another expiry
    // for the second, and for the third a receipt the *other* member signed.
    let expiry = messages[0].expiry;
    let other_key = (0..6u8)
        .map(peer_key)
        .find(|k| k.node_id() == other)
        .expect("a peer of the test");
    let receipts = vec![
        (
            hashes[0],
            Receipt::sign(&member, &hashes[0], &recipient, expiry),
        ),
        (
            hashes[1],
            Receipt::sign(&member, &hashes[1], &recipient, expiry.plus_millis(1)),
        ),
        (
            hashes[2],
            Receipt::sign(&other_key, &hashes[2], &recipient, expiry),
        ),
    ];
    let answer = PeerResponse::Stored {
        receipts,
        refused: Vec::new(),
    };
    n.handle_transmit_result(NOW, to_member, Ok(answer.encode()));
    assert_eq!(
        acknowledged(&mut n),
        [RequestId(100)],
        "only the store whose own receipt the member signed reached its quorum"
    );
    // The two others ask the member again, together.
    let retry_at = NOW.plus_millis(n.config.replication_retry_ms);
    n.handle_timeout(retry_at);
    let again = replicates_sent(&mut n, retry_at);
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].1, member.node_id());
    assert_eq!(again[0].2, hashes[1..]);
}
