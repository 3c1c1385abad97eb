//! A node whose database closes under it (the disk went away, or an operator closed it)
//! keeps answering and says so: the admin `/health` reports the database closed with 503,
//! the public `/health` says only "unavailable", `ghost_db_up` drops to 0, and stores and
//! retrieves through the onion are refused as unavailable. In-process, because closing
//! the database of a running node needs the host's handle; the HTTP matrix that both
//! node binaries answer alike is `tests/process/robustness.rs`.

mod common;

use std::time::Duration;

use ghost_cli::client;
use proto_core::keys::IdentityKey;
use proto_core::node::{Endpoint, NodeConfig};
use proto_core::packet;
use proto_core::reply::{self, Opened};
use proto_core::request::{Request, RequestError, Response, RetrieveRequest, StoreRequest};
use proto_core::{Descriptor, Namespace, Timestamp};
use runtime_smol::config::HttpSection;
use runtime_smol::host::{exchange, now};

/// Status and JSON body of `GET path` at `addr` (over TLS with `tls`).
fn get_json(
    addr: &str,
    tls: Option<ghost_host::tls::Dial>,
    path: &str,
) -> (u16, serde_json::Value) {
    let text = common::http_get(addr, tls, path);
    let status = text[9..12].parse().expect("a status line");
    let body = &text[text.find("\r\n\r\n").expect("a head") + 4..];
    (status, serde_json::from_str(body).unwrap_or_default())
}

/// The value of the unlabelled metric `name` at the admin address.
fn metric(admin: &str, name: &str) -> Option<f64> {
    let text = String::from_utf8(client::get(admin, "/metrics").ok()?).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Sends `payload` through `path` and decodes the final hop's response.
fn send(path: &[Descriptor], payload: &[u8]) -> Response {
    let (packet, keys) = client::build_packet(path, payload).expect("fits a packet");
    let mut answer = smol::block_on(exchange(
        path[0].address().as_str(),
        common::pinned(&path[0]),
        Endpoint::Onion,
        packet.to_vec(),
        Duration::from_secs(30),
    ))
    .expect("the first hop answers");
    match reply::open(keys.reply_keys(), &mut answer).expect("the answer authenticates") {
        Opened::Response { body } => Response::decode(body).expect("a well-formed response"),
        other => panic!("the path failed: {other:?}"),
    }
}

fn encode(request: &Request<'_>, signer: Option<&IdentityKey>) -> Vec<u8> {
    let mut buf = [0u8; packet::MAX_PAYLOAD];
    let n = request.encode(signer, &mut buf).expect("encodes");
    buf[..n].to_vec()
}

fn store<'a>(owner: &IdentityKey, body: &'a [u8]) -> Request<'a> {
    Request::Store(StoreRequest {
        recipient: owner.recipient_id(),
        namespace: Namespace::DIRECT,
        timestamp: now(),
        ttl_ms: 60_000,
        pow_nonce: 0,
        body,
    })
}

fn retrieve(owner: &IdentityKey, timestamp: Timestamp) -> Request<'static> {
    Request::Retrieve(RetrieveRequest {
        recipient: owner.recipient_id(),
        namespace: Namespace::DIRECT,
        timestamp,
        after: 0,
        limit: 10,
    })
}

#[test]
fn health_reflects_a_closed_database_and_the_node_keeps_answering() {
    let config = NodeConfig {
        swarm_size: 1,
        write_quorum: 1,
        ..NodeConfig::default()
    };
    let net = common::start(1, &config, &HttpSection::default());
    let (addr, admin) = (net.address(0), net.admin(0));
    let owner = IdentityKey::from_seed(&[42; 32]);
    let path = &net.descriptors[..1];

    let (status, health) = get_json(&admin, None, "/health");
    assert_eq!(
        (status, &health["database"]),
        (200, &"open".into()),
        "{health}"
    );
    assert!(matches!(
        send(path, &encode(&store(&owner, b"before"), None)),
        Response::Stored(_)
    ));

    net.hosts[0].driver().close_database();

    let (status, health) = get_json(&admin, None, "/health");
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["status"], "unavailable");
    assert_eq!(health["database"], "closed");
    assert_eq!(metric(&admin, "ghost_db_up"), Some(0.0));
    // The public /health tells a load balancer the same, and nothing more.
    assert_eq!(
        get_json(&addr, common::pinned(&net.descriptors[0]), "/health"),
        (503, serde_json::json!({"status": "unavailable"}))
    );
    assert_eq!(
        send(path, &encode(&store(&owner, b"after"), None)),
        Response::Refused(RequestError::Unavailable)
    );
    assert!(matches!(
        send(path, &encode(&retrieve(&owner, now()), Some(&owner))),
        Response::Refused(RequestError::Unavailable)
    ));
    // Still up: it answers, and keeps saying why it is unavailable.
    let (status, health) = get_json(&admin, None, "/health");
    assert_eq!((status, &health["database"]), (503, &"closed".into()));
}
