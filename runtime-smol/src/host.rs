//! Drives a `proto-core` [`Node`] with real sockets: an HTTP/1.1 server (hyper on smol),
//! a keep-alive HTTP client for the node's outgoing exchanges, a timer, group commit of
//! the disk store, the admin listener (`/metrics`, detailed `/health`) and graceful
//! shutdown.
//!
//! Every protocol decision stays in the core; this module only carries out [`Output`]s
//! and feeds inputs back, **draining the node after every input**. Routes, error names
//! and JSON bodies come from [`crate::api`]. Invariants: a request body is never read
//! beyond [`HttpSection::max_body_bytes`] nor for longer than its timeout; every answer
//! to a bad request that parses as HTTP is a 4xx with a JSON body (bytes that are not
//! HTTP at all get hyper's bare 400 or 431 and the connection closed); on shutdown no new connection is accepted,
//! in-flight requests get [`HttpSection::shutdown_grace_ms`] to finish, and the database
//! is committed and closed before [`Host::serve_until`] returns.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use proto_core::node::{Endpoint, Node, Output, Reply, RequestId, TransmitFailure};
use proto_core::{PACKET_LEN, Timestamp};
use rand_core::UnwrapErr;
use smol::channel::{Sender, bounded};
use smol::lock::Semaphore;
use smol::{Async, Executor, Timer};
use smol_hyper::rt::{FuturesIo, SmolTimer};

use crate::api::{self, ApiError, Listener, Route};
use crate::config::HttpSection;
use crate::metrics::{self, Snapshot};
use crate::redb_store::RedbBackend;

/// Most header bytes (names and values) a request may carry; no endpoint needs more than
/// a few hundred.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Connections the admin listener serves at once: scrapers and health checks, a few.
pub const MAX_ADMIN_CONNECTIONS: usize = 32;

/// How many nodes `GET /v1/nodes/bootstrap` lists at most.
pub const BOOTSTRAP_NODES: usize = 64;

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
    waiting: HashMap<RequestId, Sender<Reply>>,
    next_req: u64,
    http_responses: BTreeMap<u16, u64>,
}

/// Idle keep-alive connections to other nodes, by address.
#[derive(Default)]
struct Pool {
    idle: Mutex<HashMap<String, Vec<SendRequest<Body>>>>,
}

/// Settings and shared parts that never change while the node runs.
struct Shared {
    http: HttpSection,
    commit_interval: Duration,
    pool: Pool,
    connections: Arc<Semaphore>,
    admin_connections: Arc<Semaphore>,
    /// Connections open per source IP address.
    per_address: Mutex<HashMap<IpAddr, usize>>,
    /// Connections closed at once because their address had too many open.
    connections_refused: AtomicU64,
    in_flight: AtomicUsize,
}

/// One open connection of an address, released when dropped.
struct AddressSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl AddressSlot {
    /// A slot for `ip`, or `None` when it holds its maximum already.
    fn take(shared: &Arc<Shared>, ip: IpAddr) -> Option<Self> {
        let mut open = lock(&shared.per_address);
        let n = open.entry(ip).or_default();
        if *n >= shared.http.max_connections_per_address {
            return None;
        }
        *n += 1;
        Some(Self {
            shared: shared.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.shared.per_address);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A running node: shared state plus the executor its tasks run on.
#[derive(Clone)]
pub struct Host {
    state: Arc<Mutex<State>>,
    shared: Arc<Shared>,
    ex: Arc<Executor<'static>>,
}

type Body = Full<Bytes>;

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("status and header are valid")
}

fn json_ok(body: String) -> Response<Body> {
    respond(StatusCode::OK, "application/json", body)
}

fn problem(e: &ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    respond(status, "application/json", e.body())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock would be a bug; keep serving with the state.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts a request as in flight until dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Host {
    /// Wraps `node` with default HTTP settings; tasks are spawned on `ex`.
    pub fn new(node: Node<RedbBackend>, ex: Arc<Executor<'static>>) -> Self {
        Self::with_settings(node, ex, HttpSection::default(), Duration::from_millis(5))
    }

    /// Wraps `node` with these HTTP limits, group-committing at most every
    /// `commit_interval`.
    pub fn with_settings(
        node: Node<RedbBackend>,
        ex: Arc<Executor<'static>>,
        http: HttpSection,
        commit_interval: Duration,
    ) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                node,
                waiting: HashMap::new(),
                next_req: 0,
                http_responses: BTreeMap::new(),
            })),
            shared: Arc::new(Shared {
                connections: Arc::new(Semaphore::new(http.max_connections)),
                admin_connections: Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS)),
                per_address: Mutex::new(HashMap::new()),
                connections_refused: AtomicU64::new(0),
                http,
                commit_interval,
                pool: Pool::default(),
                in_flight: AtomicUsize::new(0),
            }),
            ex,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
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
                            let result = host.exchange(&target, endpoint, body).await;
                            host.with_node(|n, t| n.handle_transmit_result(t, id, result));
                        })
                        .detach();
                }
            }
        }
    }

    /// Serves HTTP on `listener` forever.
    pub async fn serve(self, listener: Async<TcpListener>) {
        self.serve_until(listener, smol::future::pending::<()>())
            .await;
    }

    /// Serves HTTP on `listener` until `shutdown` completes, then stops accepting, lets
    /// in-flight requests finish (up to the grace period) and commits and closes the
    /// database.
    pub async fn serve_until(
        self,
        listener: Async<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) {
        self.spawn_background();
        let accept_loop = async {
            loop {
                let permit = self.shared.connections.acquire_arc().await;
                let (stream, peer) = accept(&listener, "accept failed").await;
                let Some(slot) = AddressSlot::take(&self.shared, peer.ip()) else {
                    // Closed unread: the permit goes back at once.
                    self.shared
                        .connections_refused
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "too many connections from this address");
                    continue;
                };
                let host = self.clone();
                self.ex
                    .spawn(async move {
                        let _permit = permit;
                        let _slot = slot;
                        host.serve_connection(stream, peer, Listener::Public).await;
                    })
                    .detach();
            }
        };
        smol::future::or(accept_loop, shutdown).await;
        drop(listener);
        tracing::info!("shutting down: no new connections");
        let deadline = Instant::now() + Duration::from_millis(self.shared.http.shutdown_grace_ms);
        while self.shared.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            Timer::after(Duration::from_millis(10)).await;
        }
        let unfinished = self.shared.in_flight.load(Ordering::SeqCst);
        if unfinished > 0 {
            tracing::warn!(
                unfinished,
                "grace period over with requests still in flight"
            );
        }
        self.close_database();
    }

    /// Serves the admin listener (`/metrics`, detailed `/health`) on `listener` for as
    /// long as the executor runs; spawn it beside [`Host::serve_until`]. Its connections
    /// are few and separate from the public ones, so a flood on the public address does
    /// not lock the operator out.
    pub async fn serve_admin(self, listener: Async<TcpListener>) {
        loop {
            let permit = self.shared.admin_connections.acquire_arc().await;
            let (stream, peer) = accept(&listener, "admin accept failed").await;
            let host = self.clone();
            self.ex
                .spawn(async move {
                    let _permit = permit;
                    host.serve_connection(stream, peer, Listener::Admin).await;
                })
                .detach();
        }
    }

    /// Commits pending writes and closes the database: later stores are refused and
    /// `/health` reports the node unavailable.
    pub fn close_database(&self) {
        let mut st = self.lock();
        match st.node.backend_mut().close() {
            Ok(()) => {
                st.node.handle_durable(now());
                tracing::info!("database committed and closed");
            }
            Err(e) => tracing::error!(error = %e, "final commit failed"),
        }
        self.drain(&mut st);
    }

    async fn serve_connection(
        &self,
        stream: Async<TcpStream>,
        peer: SocketAddr,
        listener: Listener,
    ) {
        let host = self.clone();
        let service = hyper::service::service_fn(move |req| {
            let host = host.clone();
            async move {
                let _in_flight = InFlight::new(&host.shared.in_flight);
                let response = host.handle(req, peer, listener).await;
                *lock(&host.state)
                    .http_responses
                    .entry(response.status().as_u16())
                    .or_default() += 1;
                Ok::<_, Infallible>(response)
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .timer(SmolTimer::new())
            .header_read_timeout(self.shared.http.header_timeout())
            .max_buf_size(64 * 1024)
            .serve_connection(FuturesIo::new(stream), service)
            .await;
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
                    Timer::after(host.shared.commit_interval).await;
                    if !host.lock().node.store().has_pending_writes() {
                        continue;
                    }
                    let host2 = host.clone();
                    // One fsync for every write since the last commit, off the executor.
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
            })
            .detach();
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        listener: Listener,
    ) -> Response<Body> {
        let header_bytes: usize = req
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        if header_bytes > MAX_HEADER_BYTES {
            return problem(&ApiError::headers_too_large(MAX_HEADER_BYTES));
        }
        let route = match api::route(listener, req.method().as_str(), req.uri().path()) {
            Ok(r) => r,
            Err(e) => return problem(&e),
        };
        match route {
            Route::Health => self.health(),
            Route::HealthDetail => self.health_detail(),
            Route::Metrics => respond(
                StatusCode::OK,
                metrics::CONTENT_TYPE,
                self.snapshot().encode(),
            ),
            Route::Bootstrap => {
                let nodes = self.with_node(|n, t| {
                    n.bootstrap(t, BOOTSTRAP_NODES, &mut UnwrapErr(getrandom::SysRng))
                });
                json_ok(api::nodes_body(&nodes))
            }
            Route::Directory => match api::parse_directory_query(req.uri().query()) {
                Ok(after) => {
                    let page =
                        self.with_node(|n, t| n.directory_page(t, after, api::DIRECTORY_PAGE_LEN));
                    json_ok(api::directory_body(&page))
                }
                Err(e) => problem(&e),
            },
            Route::Register => {
                let body = match self.read_body(req).await {
                    Ok(b) => b,
                    Err(e) => return problem(&e),
                };
                let result = api::parse_register(&body).and_then(|d| {
                    self.with_node(|n, t| n.handle_register(t, peer.ip(), d))
                        .map_err(Into::into)
                });
                match result {
                    Ok(_) => json_ok(api::registered_body(self.lock().node.directory().len())),
                    Err(e) => problem(&e),
                }
            }
            Route::Onion => {
                let body = match self.read_body(req).await {
                    Ok(b) => b,
                    Err(e) => return problem(&e),
                };
                let Ok(mut packet) = <[u8; PACKET_LEN]>::try_from(body.as_ref()) else {
                    return problem(&ApiError::wrong_packet_size(body.len()));
                };
                let reply = self
                    .call(|n, t, r| n.handle_onion(t, r, peer.ip(), &mut packet))
                    .await;
                reply_response(reply)
            }
            Route::Peer => {
                let body = match self.read_body(req).await {
                    Ok(b) => b,
                    Err(e) => return problem(&e),
                };
                let reply = self
                    .call(|n, t, r| n.handle_peer(t, r, peer.ip(), &body))
                    .await;
                reply_response(reply)
            }
        }
    }

    fn health(&self) -> Response<Body> {
        let open = self.lock().node.store().backend().is_healthy();
        let (status, body) = api::public_health_body(open);
        let status = StatusCode::from_u16(status).expect("200 or 503");
        respond(status, "application/json", body)
    }

    fn health_detail(&self) -> Response<Body> {
        let st = self.lock();
        let (status, body) = api::health_body(
            st.node.node_id(),
            st.node.directory().len(),
            st.node.store().backend().is_healthy(),
        );
        let status = StatusCode::from_u16(status).expect("200 or 503");
        respond(status, "application/json", body)
    }

    /// Addresses of the nodes in the directory.
    #[must_use]
    pub fn peer_addresses(&self) -> Vec<String> {
        self.lock()
            .node
            .directory()
            .descriptors()
            .map(|d| d.address().as_str().to_owned())
            .collect()
    }

    /// What `/metrics` reports now.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        let st = self.lock();
        let node = &st.node;
        let (messages, message_bytes) = node.store().totals();
        let backend = node.store().backend();
        Snapshot {
            stats: node.stats().clone(),
            peers: node.directory().len(),
            messages,
            message_bytes,
            db_file_bytes: backend.file_bytes(),
            db_up: backend.is_healthy(),
            pending_stores: node.pending_stores(),
            pending_exchanges: node.pending_exchanges(),
            replay_fill: f64::from(node.replay_fill_ratio()),
            http_responses: st.http_responses.clone(),
            connections_refused: self.shared.connections_refused.load(Ordering::Relaxed),
        }
    }

    /// Reads the body: refused before reading when its announced length is too large,
    /// and when it does not arrive in time.
    async fn read_body(&self, req: Request<Incoming>) -> Result<Bytes, ApiError> {
        let limit = self.shared.http.max_body_bytes;
        if hyper::body::Body::size_hint(req.body()).lower() > limit as u64 {
            return Err(ApiError::body_too_large(limit));
        }
        let read = async {
            Limited::new(req.into_body(), limit)
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        ApiError::body_too_large(limit)
                    } else {
                        ApiError::new(400, "body_unreadable", "the request body broke off")
                    }
                })
        };
        let timeout = async {
            Timer::after(self.shared.http.body_timeout()).await;
            Err(ApiError::body_timeout())
        };
        smol::future::or(read, timeout).await
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

    fn keep_idle(&self, address: &str, sender: SendRequest<Body>) {
        let mut idle = lock(&self.shared.pool.idle);
        let list = idle.entry(address.to_owned()).or_default();
        if list.len() < self.shared.http.peer_idle_connections {
            list.push(sender);
        }
    }

    /// One exchange with another node over a pooled keep-alive connection.
    async fn exchange(
        &self,
        address: &str,
        endpoint: Endpoint,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, TransmitFailure> {
        let pool = &self.shared.pool;
        let attempt = async {
            let reused = lock(&pool.idle)
                .get_mut(address)
                .and_then(|idle| std::iter::from_fn(|| idle.pop()).find(SendRequest::is_ready));
            let req = build_request(address, endpoint, body);
            let unsent = match reused {
                Some(mut pooled) => match post(&mut pooled, req).await {
                    Ok(bytes) => {
                        self.keep_idle(address, pooled);
                        return Ok(bytes);
                    }
                    // Never written: safe to send once more on a fresh connection.
                    Err((_, Some(req))) => req,
                    Err((e, None)) => return Err(e),
                },
                None => req,
            };
            let mut fresh = connect(address)
                .await
                .map_err(|_| TransmitFailure::Unreachable)?;
            let bytes = post(&mut fresh, unsent).await.map_err(|(e, _)| e)?;
            self.keep_idle(address, fresh);
            Ok(bytes)
        };
        let timeout = async {
            Timer::after(self.shared.http.peer_timeout()).await;
            Err(TransmitFailure::Timeout)
        };
        smol::future::or(attempt, timeout).await
    }
}

/// The next connection on `listener`. A failed accept (out of file descriptors and the
/// like) is logged as `what` and retried after a pause instead of spinning.
async fn accept(listener: &Async<TcpListener>, what: &str) -> (Async<TcpStream>, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                tracing::warn!(error = %e, "{what}");
                Timer::after(Duration::from_millis(50)).await;
            }
        }
    }
}

fn reply_response(reply: Option<Reply>) -> Response<Body> {
    match reply {
        Some(Reply::Onion(b) | Reply::Peer(b)) => {
            respond(StatusCode::OK, "application/octet-stream", b)
        }
        Some(Reply::Dropped) => Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Full::new(Bytes::new()))
            .expect("static response parts are valid"),
        Some(Reply::RateLimited) => problem(&ApiError::rate_limited()),
        Some(Reply::PeerRefused(e)) => problem(&e.into()),
        None => problem(&ApiError::unavailable("the node is stopping")),
    }
}

fn endpoint_path(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Onion => "/v1/onion",
        Endpoint::Peer => "/v1/peer",
    }
}

/// Opens a TCP connection to `address` (`host:port`; a host name is resolved, each of its
/// addresses tried in turn).
async fn dial(address: &str) -> std::io::Result<Async<TcpStream>> {
    let mut last = std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("{address} resolves to no address"),
    );
    for addr in smol::net::resolve(address).await? {
        match Async::<TcpStream>::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// An HTTP/1.1 connection to `address`, ready for requests; the error says what failed.
pub async fn connect(address: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = dial(address)
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(FuturesIo::new(stream))
        .await
        .map_err(|e| format!("{address}: {e}"))?;
    smol::spawn(async move {
        let _ = conn.await;
    })
    .detach();
    Ok(sender)
}

fn build_request(address: &str, endpoint: Endpoint, body: Vec<u8>) -> Request<Body> {
    Request::post(endpoint_path(endpoint))
        .header("host", address)
        .body(Full::new(Bytes::from(body)))
        .expect("a socket address is a valid host header")
}

/// Sends `req` on `sender`. When the connection turned out closed before the request was
/// written (a pooled connection the peer timed out), the request comes back unsent.
async fn post(
    sender: &mut SendRequest<Body>,
    req: Request<Body>,
) -> Result<Vec<u8>, (TransmitFailure, Option<Request<Body>>)> {
    let resp = sender
        .try_send_request(req)
        .await
        .map_err(|mut e| (TransmitFailure::Unreachable, e.take_message()))?;
    if !resp.status().is_success() {
        // A refusal (429, 4xx) carries no reply layer: the core reports it as such.
        let status = resp.status().as_u16();
        return Err((TransmitFailure::Refused { status }, None));
    }
    let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|_| (TransmitFailure::Unreachable, None))?
        .to_bytes();
    Ok(bytes.to_vec())
}

/// Largest answer read from another node: the biggest reply bucket or peer answer.
const MAX_ANSWER: usize = 1 << 20;

/// One HTTP exchange on a fresh connection: POST `body` to `endpoint` at `address`,
/// giving up after `timeout`. What clients use (the node itself pools connections).
pub async fn exchange(
    address: &str,
    endpoint: Endpoint,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, TransmitFailure> {
    let attempt = async {
        let mut sender = connect(address)
            .await
            .map_err(|_| TransmitFailure::Unreachable)?;
        post(&mut sender, build_request(address, endpoint, body))
            .await
            .map_err(|(e, _)| e)
    };
    let give_up = async {
        Timer::after(timeout).await;
        Err(TransmitFailure::Timeout)
    };
    smol::future::or(attempt, give_up).await
}

/// A channel that yields once SIGINT or SIGTERM arrives (a thread waits for the signal,
/// so the handler itself does nothing but record it).
pub fn shutdown_signal() -> Result<smol::channel::Receiver<()>, String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let (tx, rx) = bounded(1);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                tracing::info!(signal, "shutdown requested");
                let _ = tx.send_blocking(());
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(rx)
}
