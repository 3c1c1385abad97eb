//! The HTTP API in one place: the route table, the JSON bodies of the directory endpoints,
//! and the one mapping from a problem to an HTTP status and a JSON error body.
//!
//! Runtimes call [`route`] with the listener, method and path they read and [`ApiError::body`] to
//! answer a problem; nothing here touches a socket, so a second runtime uses the same
//! table and the same error names. Invariants: every error answer is a 4xx or 5xx with a
//! JSON body `{"error": code, "message": text}` whose `code` is a stable snake_case name;
//! descriptors travel as their signed encoding in hex, so a client verifies every node it
//! learns about and never trusts the JSON fields beside it.

use proto_core::client::DirectoryAnswer;
use proto_core::keys::{Descriptor, MAX_DESCRIPTOR_LEN, UnverifiedDescriptor};
use proto_core::node::{DirectoryPage, RegisterError};
use proto_core::peer::PeerError;
use proto_core::{NodeId, PACKET_LEN};
use serde::{Deserialize, Serialize};

/// What a request asks for, once its method and path are known to be valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/onion`: a raw onion packet of exactly [`PACKET_LEN`] bytes.
    Onion,
    /// `POST /v1/peer`: a signed node-to-node envelope.
    Peer,
    /// `GET /health` on the public listener: up or not, and nothing else.
    Health,
    /// `GET /health` on the admin listener: readiness with the node, its peer count and
    /// the database state.
    HealthDetail,
    /// `GET /metrics` on the admin listener: Prometheus text format.
    Metrics,
    /// `GET /v1/nodes/bootstrap`: signed descriptors for a client's first view.
    Bootstrap,
    /// `GET /v1/nodes/directory[?after=ID]`: one page of the whole directory, the same
    /// for every caller (clients compute swarms from it).
    Directory,
    /// `POST /v1/nodes/register`: a node announces its signed descriptor.
    Register,
}

impl Route {
    /// Whether the request carries a body the runtime must read (within the limits).
    #[must_use]
    pub fn has_body(&self) -> bool {
        matches!(self, Self::Onion | Self::Peer | Self::Register)
    }
}

/// Which of the node's two listeners a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// The address clients and nodes use: the protocol and a bare `/health`.
    Public,
    /// The operator's address (loopback by default): metrics and detailed health, which
    /// would let an outsider watch the node's traffic.
    Admin,
}

/// Every path the public listener serves, with the one method it accepts.
const PUBLIC_ROUTES: [(&str, &str); 6] = [
    ("/v1/onion", "POST"),
    ("/v1/peer", "POST"),
    ("/health", "GET"),
    ("/v1/nodes/bootstrap", "GET"),
    ("/v1/nodes/directory", "GET"),
    ("/v1/nodes/register", "POST"),
];

/// Every path the admin listener serves, with the one method it accepts.
const ADMIN_ROUTES: [(&str, &str); 2] = [("/health", "GET"), ("/metrics", "GET")];

/// Descriptors per page of `GET /v1/nodes/directory` (about 40 KiB of JSON).
pub const DIRECTORY_PAGE_LEN: usize = 256;

/// Finds the route for `method` and `path` (the path without its query string) on
/// `listener`.
pub fn route(listener: Listener, method: &str, path: &str) -> Result<Route, ApiError> {
    let routes: &[(&str, &str)] = match listener {
        Listener::Public => &PUBLIC_ROUTES,
        Listener::Admin => &ADMIN_ROUTES,
    };
    let Some(&(_, allowed)) = routes.iter().find(|(p, _)| *p == path) else {
        return Err(ApiError::new(
            404,
            "unknown_route",
            format!("no such endpoint: {path}"),
        ));
    };
    if method != allowed {
        return Err(ApiError::method_not_allowed(allowed));
    }
    Ok(match path {
        "/v1/onion" => Route::Onion,
        "/v1/peer" => Route::Peer,
        "/health" if listener == Listener::Admin => Route::HealthDetail,
        "/health" => Route::Health,
        "/metrics" => Route::Metrics,
        "/v1/nodes/bootstrap" => Route::Bootstrap,
        "/v1/nodes/directory" => Route::Directory,
        _ => Route::Register,
    })
}

/// The cursor of a directory page from the query string: nothing, or `after=<node ID hex>`.
pub fn parse_directory_query(query: Option<&str>) -> Result<Option<NodeId>, ApiError> {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::new(
            400,
            "bad_query",
            "the only parameter is after=<node ID, 64 hex digits>",
        )
    };
    let text = query.strip_prefix("after=").ok_or_else(bad)?;
    let mut id = [0u8; 32];
    hex::decode_to_slice(text, &mut id).map_err(|_| bad())?;
    Ok(Some(NodeId(id)))
}

/// A problem answered over HTTP: status, stable code, human message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status (4xx for the client's mistakes, 5xx for the node's).
    pub status: u16,
    /// Stable snake_case name of the problem.
    pub code: &'static str,
    /// What went wrong and, where it helps, what to do.
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    /// A problem with this status, code and message.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn method_not_allowed(allowed: &str) -> Self {
        Self::new(
            405,
            "method_not_allowed",
            format!("this endpoint only accepts {allowed}"),
        )
    }

    /// The request body was larger than the node reads.
    #[must_use]
    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            413,
            "body_too_large",
            format!("request bodies are limited to {limit} bytes"),
        )
    }

    /// The request's headers are larger than the node accepts.
    #[must_use]
    pub fn headers_too_large(limit: usize) -> Self {
        Self::new(
            431,
            "headers_too_large",
            format!("request headers are limited to {limit} bytes"),
        )
    }

    /// The client stopped sending the body, or sent it too slowly.
    #[must_use]
    pub fn body_timeout() -> Self {
        Self::new(
            408,
            "body_timeout",
            "the request body did not arrive in time",
        )
    }

    /// An onion request whose body is not one packet.
    #[must_use]
    pub fn wrong_packet_size(got: usize) -> Self {
        Self::new(
            400,
            "wrong_packet_size",
            format!("an onion packet is exactly {PACKET_LEN} bytes, got {got}"),
        )
    }

    /// The source sent too many requests.
    #[must_use]
    pub fn rate_limited() -> Self {
        Self::new(429, "rate_limited", "too many requests; slow down")
    }

    /// The node is shutting down or its database is closed.
    #[must_use]
    pub fn unavailable(why: &str) -> Self {
        Self::new(503, "unavailable", why)
    }

    /// The JSON error body.
    #[must_use]
    pub fn body(&self) -> String {
        serde_json::to_string(&ErrorBody {
            error: self.code,
            message: &self.message,
        })
        .expect("a struct of two strings always serializes")
    }
}

impl From<RegisterError> for ApiError {
    fn from(e: RegisterError) -> Self {
        let status = match e {
            RegisterError::DirectoryFull => 503,
            RegisterError::RateLimited => 429,
            RegisterError::NotAdmitted => 403,
            _ => 400,
        };
        Self::new(status, e.label(), e.to_string())
    }
}

impl From<PeerError> for ApiError {
    fn from(e: PeerError) -> Self {
        let status = match e {
            PeerError::BadSignature | PeerError::UnknownSender | PeerError::NotInSwarm => 403,
            PeerError::Unavailable => 503,
            PeerError::RateLimited => 429,
            _ => 400,
        };
        Self::new(status, e.label(), e.to_string())
    }
}

#[derive(Serialize)]
struct HealthJson {
    status: &'static str,
    ready: bool,
    node: String,
    peers: usize,
    database: &'static str,
}

/// Status and body of the public `GET /health`: 200 `{"status":"ok"}` while the database
/// answers, 503 `{"status":"unavailable"}` once it is closed. A load balancer needs no
/// more, and an outsider learns no more.
#[must_use]
pub fn public_health_body(database_open: bool) -> (u16, String) {
    if database_open {
        (200, r#"{"status":"ok"}"#.to_owned())
    } else {
        (503, r#"{"status":"unavailable"}"#.to_owned())
    }
}

/// Status and body of the admin `GET /health`: 200 while the database answers (`ready`
/// once another node is known, so the node can relay and replicate), 503 once it is
/// closed.
#[must_use]
pub fn health_body(node: NodeId, peers: usize, database_open: bool) -> (u16, String) {
    let body = HealthJson {
        status: if database_open { "ok" } else { "unavailable" },
        ready: database_open && peers > 0,
        node: node.to_string(),
        peers,
        database: if database_open { "open" } else { "closed" },
    };
    let status = if database_open { 200 } else { 503 };
    (
        status,
        serde_json::to_string(&body).expect("strings, integers and booleans serialize"),
    )
}

#[derive(Serialize)]
struct RegisteredJson {
    registered: bool,
    peers: usize,
}

/// Body of a successful `POST /v1/nodes/register`: how many nodes the directory holds.
#[must_use]
pub fn registered_body(peers: usize) -> String {
    serde_json::to_string(&RegisteredJson {
        registered: true,
        peers,
    })
    .expect("a boolean and an integer serialize")
}

/// One node as the directory endpoints list it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeJson {
    /// Identity (hex), for humans; the signed descriptor is authoritative.
    pub id: String,
    /// Address, for humans.
    pub address: String,
    /// Onion key epoch, for humans.
    pub epoch: u32,
    /// The hash of the node's TLS key (hex), for humans pinning a link by hand.
    #[serde(default)]
    pub tls_key_hash: String,
    /// The signed descriptor, hex.
    pub descriptor: String,
}

/// Body of `GET /v1/nodes/bootstrap`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodesJson {
    /// The nodes.
    pub nodes: Vec<NodeJson>,
}

/// Body of `POST /v1/nodes/register`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterJson {
    /// The node's signed descriptor, hex.
    pub descriptor: String,
}

fn descriptor_hex(d: &Descriptor) -> String {
    let mut buf = [0u8; MAX_DESCRIPTOR_LEN];
    let n = d
        .encode(&mut buf)
        .expect("every descriptor fits MAX_DESCRIPTOR_LEN");
    hex::encode(&buf[..n])
}

fn node_json(d: &Descriptor) -> NodeJson {
    NodeJson {
        id: d.node_id().to_string(),
        address: d.address().as_str().to_owned(),
        epoch: d.epoch().0,
        tls_key_hash: d.tls_key_hash().to_string(),
        descriptor: descriptor_hex(d),
    }
}

/// The JSON listing of `nodes`.
#[must_use]
pub fn nodes_body(nodes: &[Descriptor]) -> String {
    let body = NodesJson {
        nodes: nodes.iter().map(node_json).collect(),
    };
    serde_json::to_string(&body).expect("strings and integers always serialize")
}

/// Body of `GET /v1/nodes/directory`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DirectoryJson {
    /// The nodes of this page, in node-ID order.
    pub nodes: Vec<NodeJson>,
    /// Cursor of the next page (`?after=`), absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Leading zero bits a store's proof of work must have (0: none).
    pub pow_difficulty: u8,
}

/// The JSON of one directory page.
#[must_use]
pub fn directory_body(page: &DirectoryPage) -> String {
    let body = DirectoryJson {
        nodes: page.nodes.iter().map(node_json).collect(),
        next: page.next.map(|id| id.to_string()),
        pow_difficulty: page.pow_difficulty,
    };
    serde_json::to_string(&body).expect("strings and integers always serialize")
}

/// Reads a directory page (client side). Signatures are the client core's to check; a
/// descriptor that does not even decode makes the whole page malformed.
pub fn parse_directory(body: &[u8]) -> Result<DirectoryAnswer, String> {
    let page: DirectoryJson =
        serde_json::from_slice(body).map_err(|e| format!("not a directory listing: {e}"))?;
    let nodes = page
        .nodes
        .iter()
        .map(|n| {
            let bytes = hex::decode(&n.descriptor)
                .map_err(|_| format!("descriptor of {} is not hex", n.id))?;
            UnverifiedDescriptor::decode(&bytes).map_err(|e| format!("descriptor of {}: {e}", n.id))
        })
        .collect::<Result<_, String>>()?;
    let next = match page.next {
        None => None,
        Some(text) => {
            let mut id = [0u8; 32];
            hex::decode_to_slice(&text, &mut id)
                .map_err(|_| format!("next cursor {text:?} is not a node ID"))?;
            Some(NodeId(id))
        }
    };
    Ok(DirectoryAnswer {
        nodes,
        next,
        pow_difficulty: page.pow_difficulty,
    })
}

/// Reads a node listing, verifying every descriptor's signature (client side).
pub fn parse_nodes(body: &[u8]) -> Result<Vec<Descriptor>, String> {
    let list: NodesJson =
        serde_json::from_slice(body).map_err(|e| format!("not a node listing: {e}"))?;
    list.nodes
        .iter()
        .map(|n| {
            let bytes = hex::decode(&n.descriptor)
                .map_err(|_| format!("descriptor of {} is not hex", n.id))?;
            UnverifiedDescriptor::decode(&bytes)
                .and_then(UnverifiedDescriptor::verify)
                .map_err(|e| format!("descriptor of {}: {e}", n.id))
        })
        .collect()
}

/// The registration body for `d`.
#[must_use]
pub fn register_body(d: &Descriptor) -> String {
    serde_json::to_string(&RegisterJson {
        descriptor: descriptor_hex(d),
    })
    .expect("one string always serializes")
}

/// Reads a registration body; the signature is checked by the node.
pub fn parse_register(body: &[u8]) -> Result<UnverifiedDescriptor, ApiError> {
    let json: RegisterJson = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            400,
            "malformed_json",
            format!("expected {{\"descriptor\": \"<hex>\"}}: {e}"),
        )
    })?;
    let bytes = hex::decode(&json.descriptor)
        .map_err(|_| ApiError::new(400, "invalid_descriptor", "the descriptor is not valid hex"))?;
    UnverifiedDescriptor::decode(&bytes).map_err(|e| {
        ApiError::new(
            400,
            "invalid_descriptor",
            format!("invalid descriptor: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_answers_its_method_and_refuses_the_others() {
        for (listener, routes) in [
            (Listener::Public, &PUBLIC_ROUTES[..]),
            (Listener::Admin, &ADMIN_ROUTES[..]),
        ] {
            for &(path, method) in routes {
                assert!(route(listener, method, path).is_ok(), "{method} {path}");
                let other = if method == "GET" { "POST" } else { "GET" };
                assert_eq!(route(listener, other, path).unwrap_err().status, 405);
            }
            assert_eq!(route(listener, "GET", "/nope").unwrap_err().status, 404);
        }
        let public = Listener::Public;
        assert_eq!(
            route(public, "DELETE", "/v1/onion").unwrap_err().status,
            405
        );
    }

    #[test]
    fn traffic_counts_and_health_detail_are_only_on_the_admin_listener() {
        assert_eq!(
            route(Listener::Public, "GET", "/metrics")
                .unwrap_err()
                .status,
            404
        );
        assert_eq!(
            route(Listener::Public, "GET", "/health").unwrap(),
            Route::Health
        );
        assert_eq!(
            route(Listener::Admin, "GET", "/health").unwrap(),
            Route::HealthDetail
        );
        for path in ["/v1/onion", "/v1/peer", "/v1/nodes/register"] {
            assert_eq!(
                route(Listener::Admin, "POST", path).unwrap_err().status,
                404
            );
        }
        assert_eq!(public_health_body(true), (200, r#"{"status":"ok"}"#.into()));
        assert_eq!(public_health_body(false).0, 503);
    }

    #[test]
    fn no_route_names_a_recipient() {
        // A plain request naming a recipient would tell the node (and the wire) who the
        // client writes to or reads as: such questions travel only inside onions.
        let e = route(
            Listener::Public,
            "GET",
            &format!("/v1/nodes/swarm/{}", "ab".repeat(32)),
        )
        .unwrap_err();
        assert_eq!((e.status, e.code), (404, "unknown_route"));
    }

    #[test]
    fn error_body_is_json_naming_the_problem() {
        let e = ApiError::wrong_packet_size(3);
        let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(v["error"], "wrong_packet_size");
        assert!(v["message"].as_str().unwrap().contains("2048"));
    }

    #[test]
    fn register_body_round_trips_and_garbage_is_refused() {
        use proto_core::keys::{Address, IdentityKey, OnionKey};
        use rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let d = Descriptor::sign(
            &IdentityKey::from_seed(&[3; 32]),
            &OnionKey::generate(proto_core::Epoch(1), &mut rng),
            proto_core::TlsKeyHash([0x77; 32]),
            Address::new("127.0.0.1:1").unwrap(),
            proto_core::Timestamp(1_000_000),
        );
        let parsed = parse_register(register_body(&d).as_bytes()).unwrap();
        assert_eq!(parsed.verify().unwrap(), d);
        assert_eq!(parse_register(b"{").unwrap_err().code, "malformed_json");
        assert_eq!(
            parse_register(b"{\"descriptor\":\"00\"}").unwrap_err().code,
            "invalid_descriptor"
        );
        let listed = parse_nodes(nodes_body(&[d]).as_bytes()).unwrap();
        assert_eq!(listed, [d]);
    }

    #[test]
    fn directory_page_round_trips_and_a_bad_cursor_is_refused() {
        use proto_core::keys::{Address, IdentityKey, OnionKey};
        use rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let d = Descriptor::sign(
            &IdentityKey::from_seed(&[4; 32]),
            &OnionKey::generate(proto_core::Epoch(1), &mut rng),
            proto_core::TlsKeyHash([0x77; 32]),
            Address::new("127.0.0.1:2").unwrap(),
            proto_core::Timestamp(1_000_000),
        );
        let page = DirectoryPage {
            nodes: vec![d],
            next: Some(d.node_id()),
            pow_difficulty: 9,
        };
        let answer = parse_directory(directory_body(&page).as_bytes()).unwrap();
        assert_eq!(answer.nodes.len(), 1);
        assert_eq!(answer.nodes[0].verify().unwrap(), d);
        assert_eq!((answer.next, answer.pow_difficulty), (Some(d.node_id()), 9));

        let last = DirectoryPage { next: None, ..page };
        let text = directory_body(&last);
        assert!(
            !text.contains("next"),
            "the last page has no cursor: {text}"
        );
        assert_eq!(parse_directory(text.as_bytes()).unwrap().next, None);

        assert!(parse_directory(b"{\"nodes\":[],\"next\":\"zz\",\"pow_difficulty\":0}").is_err());
        assert!(parse_directory(b"[]").is_err());
        let id = "cd".repeat(32);
        assert_eq!(
            parse_directory_query(Some(&format!("after={id}"))).unwrap(),
            Some(NodeId([0xcd; 32]))
        );
        assert_eq!(parse_directory_query(None).unwrap(), None);
        assert_eq!(parse_directory_query(Some("")).unwrap(), None);
        for bad in ["after=", "after=zz", "limit=3", &format!("after={id}&x=1")] {
            assert_eq!(
                parse_directory_query(Some(bad)).unwrap_err().code,
                "bad_query",
                "{bad}"
            );
        }
    }
}
