//! Three real nodes on loopback HTTP: a store travels three hops, is replicated to a write
//! quorum over HTTP, acknowledged with verifiable receipts, and retrieved by its owner
//! through another path.

mod common;

use std::time::{Duration, Instant};

use common::Network;
use ghost_cli::client;
use proto_core::keys::IdentityKey;
use proto_core::node::{Endpoint, NodeConfig};
use proto_core::packet;
use proto_core::reply::{self, Opened};
use proto_core::request::{
    DEFAULT_AUTH_WINDOW_MS, Request, Response, RetrieveRequest, StoreRequest, requested_expiry,
};
use proto_core::store::message_hash;
use proto_core::{Descriptor, Namespace};
use runtime_smol::config::HttpSection;
use runtime_smol::host::{exchange, now};
use smol::Async;

fn start(n: usize) -> Network {
    common::start(n, &NodeConfig::default(), &HttpSection::default())
}

/// Polls the admin `/health` until every node knows the others (deadline 20 s).
fn wait_until_connected(net: &Network) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for (i, d) in net.descriptors.iter().enumerate() {
        loop {
            let body = smol::block_on(get(&net.admin(i), "/health"));
            let peers = net.descriptors.len() - 1;
            if body.contains(&format!("\"peers\":{peers}")) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} never saw its peers: {body}",
                d.address()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

async fn get(address: &str, path: &str) -> String {
    use http_body_util::{BodyExt, Empty};
    let stream =
        Async::<std::net::TcpStream>::connect(address.parse::<std::net::SocketAddr>().unwrap())
            .await
            .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(smol_hyper::rt::FuturesIo::new(stream))
            .await
            .unwrap();
    smol::spawn(async move {
        let _ = conn.await;
    })
    .detach();
    let req = hyper::Request::get(path)
        .header("host", address)
        .body(Empty::<hyper::body::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn send(
    net: &Network,
    path: &[usize],
    request: &Request<'_>,
    signer: Option<&IdentityKey>,
) -> Response {
    let hops: Vec<Descriptor> = path.iter().map(|&i| net.descriptors[i]).collect();
    let mut payload = [0u8; packet::MAX_PAYLOAD];
    let len = request.encode(signer, &mut payload).unwrap();
    let (buf, keys) = client::build_packet(&hops, &payload[..len]).unwrap();
    let first = net.descriptors[path[0]].address().as_str().to_owned();
    let mut answer = smol::block_on(exchange(
        &first,
        common::pinned(&hops[0]),
        Endpoint::Onion,
        buf.to_vec(),
        Duration::from_secs(30),
    ))
    .expect("first hop answers");
    match reply::open(keys.reply_keys(), &mut answer).expect("reply authenticates") {
        Opened::Response { body } => Response::decode(body).expect("well-formed response"),
        other => panic!("path failed: {other:?}"),
    }
}

#[test]
fn store_through_three_hops_is_replicated_acknowledged_and_retrieved() {
    let net = start(3);
    wait_until_connected(&net);
    let owner = IdentityKey::from_seed(&[42; 32]);
    let body = b"hello over real sockets";
    let sent = now();
    let store = Request::Store(StoreRequest {
        recipient: owner.recipient_id(),
        namespace: Namespace::DIRECT,
        timestamp: sent,
        ttl_ms: 3_600_000,
        pow_nonce: 0,
        body,
    });
    let Response::Stored(ack) = send(&net, &[0, 1, 2], &store, None) else {
        panic!("store not acknowledged");
    };
    let swarm: Vec<_> = net.descriptors.iter().map(Descriptor::node_id).collect();
    let expected = message_hash(&owner.recipient_id(), Namespace::DIRECT, body);
    let window = requested_expiry(sent, sent, 3_600_000, DEFAULT_AUTH_WINDOW_MS);
    ack.verify_quorum(&expected, &owner.recipient_id(), &swarm, 2, window)
        .expect("W=2 valid receipts over the requested expiry");

    // Another member, another path: the replica is durable there too (poll with a deadline).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let retrieve = Request::Retrieve(RetrieveRequest {
            recipient: owner.recipient_id(),
            namespace: Namespace::DIRECT,
            timestamp: now(),
            after: 0,
            limit: 10,
        });
        let answer = send(&net, &[2, 0, 1], &retrieve, Some(&owner));
        if let Response::Messages { messages, .. } = answer
            && messages.iter().any(|m| m.body == body)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never became retrievable"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
