//! Drives a `proto-core` [`Node`] with real sockets: an HTTP/1.1 server (hyper on smol),
//! an HTTP client for the node's outgoing exchanges, a timer, and group commit of the
//! disk store. Every protocol decision stays in the core; this module only carries out
//! [`Output`]s and feeds inputs back, draining the node after every input.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use proto_core::node::{Endpoint, Node, Output, Reply, RequestId, TransmitFailure};
use proto_core::{PACKET_LEN, Timestamp};
use smol::channel::{Sender, bounded};
use smol::{Async, Executor, Timer};
use smol_hyper::rt::{FuturesIo, SmolTimer};

use crate::redb_store::RedbBackend;

/// Largest request body a node reads: a peer exchange (replication of 256 messages).
pub const MAX_BODY: usize = 1 << 20;
/// How long a node waits for a peer's HTTP answer before reporting a timeout.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest pause between group commits while writes are pending.
const COMMIT_INTERVAL: Duration = Duration::from_millis(5);

/// The node's wall clock as the core's [`Timestamp`].
#[must_use]
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Timestamp(ms)
}

struct State {
    node: Node<RedbBackend>,
    waiting: std::collections::HashMap<RequestId, Sender<Reply>>,
    next_req: u64,
}

/// A running node: shared state plus the executor its tasks run on.
#[derive(Clone)]
pub struct Host {
    state: Arc<Mutex<State>>,
    ex: Arc<Executor<'static>>,
}

type Body = Full<Bytes>;

fn json(status: StatusCode, body: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("static response parts are valid")
}

fn error(status: StatusCode, problem: &str) -> Response<Body> {
    json(status, &format!("{{\"error\":\"{problem}\"}}"))
}

impl Host {
    /// Wraps `node`; tasks are spawned on `ex`.
    pub fn new(node: Node<RedbBackend>, ex: Arc<Executor<'static>>) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                node,
                waiting: std::collections::HashMap::new(),
                next_req: 0,
            })),
            ex,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug; keep serving with the state.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on the node, then carries out everything it asked for.
    fn with_node<T>(&self, f: impl FnOnce(&mut Node<RedbBackend>, Timestamp) -> T) -> T {
        let mut st = self.lock();
        let out = f(&mut st.node, now());
        self.drain(&mut st);
        out
    }

    /// The drain rule: carry out outputs until the node has none.
    fn drain(&self, st: &mut State) {
        while let Some(out) = st.node.poll_output() {
            match out {
                Output::Respond { req, reply } => {
                    if let Some(tx) = st.waiting.remove(&req) {
                        let _ = tx.try_send(reply);
                    }
                }
                Output::Transmit {
                    id,
                    address,
                    endpoint,
                    body,
                    ..
                } => {
                    let host = self.clone();
                    let target = address.as_str().to_owned();
                    self.ex
                        .spawn(async move {
                            let result = exchange(&target, endpoint, body).await;
                            host.with_node(|n, t| n.handle_transmit_result(t, id, result));
                        })
                        .detach();
                }
            }
        }
    }

    /// Serves HTTP on `listener` until the executor stops.
    pub async fn serve(self, listener: Async<TcpListener>) {
        self.spawn_background();
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let host = self.clone();
            self.ex
                .spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let host = host.clone();
                        async move { Ok::<_, Infallible>(host.handle(req, peer).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(SmolTimer::new())
                        .header_read_timeout(Duration::from_secs(10))
                        .serve_connection(FuturesIo::new(stream), service)
                        .await;
                })
                .detach();
        }
    }

    fn spawn_background(&self) {
        let host = self.clone();
        self.ex
            .spawn(async move {
                loop {
                    let wake = host.with_node(|n, t| {
                        n.handle_timeout(t);
                        n.poll_timeout().map(|w| w.millis_since(t))
                    });
                    let pause = wake.unwrap_or(1000).clamp(1, 1000);
                    Timer::after(Duration::from_millis(pause)).await;
                }
            })
            .detach();
        let host = self.clone();
        self.ex
            .spawn(async move {
                loop {
                    Timer::after(COMMIT_INTERVAL).await;
                    let host2 = host.clone();
                    let pending = host.lock().node.store().has_pending_writes();
                    if pending {
                        // One fsync for every write since the last commit.
                        let committed = smol::unblock(move || {
                            let mut st = host2.lock();
                            let ok = st.node.backend_mut().commit().is_ok();
                            if ok {
                                st.node.handle_durable(now());
                                host2.drain(&mut st);
                            }
                            ok
                        })
                        .await;
                        if !committed {
                            tracing::error!("group commit failed; writes stay pending");
                        }
                    }
                }
            })
            .detach();
    }

    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let path = req.uri().path().to_owned();
        match (req.method().clone(), path.as_str()) {
            (Method::GET, "/health") => {
                let (id, peers) = {
                    let st = self.lock();
                    (st.node.node_id(), st.node.directory().len())
                };
                json(
                    StatusCode::OK,
                    &format!("{{\"status\":\"ok\",\"node\":\"{id}\",\"peers\":{peers}}}"),
                )
            }
            (Method::POST, "/v1/onion") => {
                let Some(body) = read_body(req).await else {
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body too large or unreadable",
                    );
                };
                let Ok(mut packet) = <[u8; PACKET_LEN]>::try_from(body.as_ref()) else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "onion packet must be exactly 2048 bytes",
                    );
                };
                let source = source_key(&peer);
                let reply = self
                    .call(|n, t, r| n.handle_onion(t, r, source, &mut packet))
                    .await;
                reply_response(reply)
            }
            (Method::POST, "/v1/peer") => {
                let Some(body) = read_body(req).await else {
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body too large or unreadable",
                    );
                };
                let reply = self.call(|n, t, r| n.handle_peer(t, r, &body)).await;
                reply_response(reply)
            }
            (_, "/health" | "/v1/onion" | "/v1/peer") => {
                error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => error(StatusCode::NOT_FOUND, "unknown route"),
        }
    }

    /// Hands an inbound request to the node and waits for its one answer.
    async fn call(
        &self,
        f: impl FnOnce(&mut Node<RedbBackend>, Timestamp, RequestId),
    ) -> Option<Reply> {
        let (tx, rx) = bounded(1);
        {
            let mut st = self.lock();
            st.next_req += 1;
            let req = RequestId(st.next_req);
            st.waiting.insert(req, tx);
            f(&mut st.node, now(), req);
            self.drain(&mut st);
        }
        rx.recv().await.ok()
    }
}

fn reply_response(reply: Option<Reply>) -> Response<Body> {
    match reply {
        Some(Reply::Onion(b) | Reply::Peer(b)) => Response::builder()
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(b)))
            .expect("static response parts are valid"),
        Some(Reply::Dropped) => Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Full::new(Bytes::new()))
            .expect("static response parts are valid"),
        Some(Reply::RateLimited) => error(StatusCode::TOO_MANY_REQUESTS, "rate limited"),
        None => error(StatusCode::SERVICE_UNAVAILABLE, "node stopped"),
    }
}

/// An opaque rate-limit key for the connecting address (the port is ignored).
fn source_key(peer: &SocketAddr) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    peer.ip().hash(&mut h);
    h.finish()
}

async fn read_body(req: Request<Incoming>) -> Option<Bytes> {
    Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .ok()
        .map(http_body_util::Collected::to_bytes)
}

/// One HTTP exchange with a peer: POST `body` to `endpoint` at `address`.
pub async fn exchange(
    address: &str,
    endpoint: Endpoint,
    body: Vec<u8>,
) -> Result<Vec<u8>, TransmitFailure> {
    let path = match endpoint {
        Endpoint::Onion => "/v1/onion",
        Endpoint::Peer => "/v1/peer",
    };
    let attempt = async {
        let addr: SocketAddr = address.parse().map_err(|_| TransmitFailure::Unreachable)?;
        let stream = Async::<TcpStream>::connect(addr)
            .await
            .map_err(|_| TransmitFailure::Unreachable)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(FuturesIo::new(stream))
            .await
            .map_err(|_| TransmitFailure::Unreachable)?;
        smol::spawn(async move {
            let _ = conn.await;
        })
        .detach();
        let req = Request::post(path)
            .header("host", address)
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| TransmitFailure::Unreachable)?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|_| TransmitFailure::Unreachable)?;
        let bytes = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|_| TransmitFailure::Unreachable)?
            .to_bytes();
        Ok(bytes.to_vec())
    };
    let timeout = async {
        Timer::after(EXCHANGE_TIMEOUT).await;
        Err(TransmitFailure::Timeout)
    };
    smol::future::or(attempt, timeout).await
}
