//! The smol runtime's sockets and HTTP: hyper's HTTP/1.1 server on smol for the public
//! listener (inside TLS via futures-rustls unless `http.insecure_plaintext`) and the
//! plain admin listener, and a pooled keep-alive hyper client, pinned to each peer's
//! descriptor, that carries the node's exchanges ([`SmolCarrier`]). Everything a
//! request means is answered by [`ghost_host::service::Host`] through the node driver
//! thread.
//!
//! Invariants: a request body is never read beyond [`HttpSection::max_body_bytes`] nor
//! for longer than its timeout; a client that half-closes its side after a complete
//! request still gets its answer; every answer to a bad request that parses as HTTP is a
//! 4xx with a JSON body (bytes that are not HTTP at all get hyper's bare 400 or 431 and
//! the connection closed); on shutdown no new connection is accepted and in-flight
//! requests get [`HttpSection::shutdown_grace_ms`] to finish.

use std::convert::Infallible;
use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ghost_host::api::{ApiError, Listener};
use ghost_host::config::HttpSection;
use ghost_host::driver::{Carrier, Exchange};
use ghost_host::service::{
    Answer, Host, MAX_ADMIN_CONNECTIONS, MAX_ANSWER_BYTES, Session, TlsRefusal,
};
use ghost_host::tls::{
    Dial, Links, PerGeneration, TLS_HANDSHAKE_RECORD, peer_key_hash, plaintext_refusal,
};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use proto_core::TlsKeyHash;
use proto_core::node::{Endpoint, TransmitFailure};
use rustls::ServerConfig;
use smol::io::AsyncWriteExt as _;
use smol::lock::Semaphore;
use smol::{Async, Executor, Timer};
use smol_hyper::rt::{FuturesIo, SmolTimer};

pub use ghost_host::now;

type Body = Full<Bytes>;

/// Carries the node's exchanges over pooled keep-alive connections, one task each.
pub struct SmolCarrier {
    ex: Arc<Executor<'static>>,
    pool: Arc<Pool>,
}

/// A peer as the pool knows it: its address and the TLS key its descriptor names.
type PeerKey = (String, Option<TlsKeyHash>);

/// Idle keep-alive connections to other nodes, by address and pinned key (a connection
/// verified for one key is never reused for another that moved to the same address).
struct Pool {
    /// Where the connections' tasks run: the node's own executor, so a request and its
    /// connection never wake each other across threads.
    ex: Arc<Executor<'static>>,
    idle: Mutex<Idle>,
    http: HttpSection,
    links: Links,
}

/// The idle connections opened since the node's TLS keys last changed: after a rotation,
/// connections presenting the previous certificate are closed, not reused.
type Idle = PerGeneration<PeerKey, Vec<SendRequest<Body>>>;

impl SmolCarrier {
    /// A carrier spawning its tasks on `ex`, with the timeout and pool size of `http`,
    /// calling over `links`.
    #[must_use]
    pub fn new(ex: Arc<Executor<'static>>, http: HttpSection, links: Links) -> Arc<Self> {
        Arc::new(Self {
            ex: ex.clone(),
            pool: Arc::new(Pool {
                ex,
                idle: Mutex::default(),
                http,
                links,
            }),
        })
    }
}

impl Carrier for SmolCarrier {
    fn carry(&self, exchange: Exchange) {
        let pool = self.pool.clone();
        let Exchange {
            address,
            tls_key_hash,
            endpoint,
            body,
            done,
        } = exchange;
        self.ex
            .spawn(async move {
                let key = (address, tls_key_hash);
                done.finish(pool.exchange(&key, endpoint, body).await);
            })
            .detach();
    }
}

impl Pool {
    fn take_idle(&self, key: &PeerKey, generation: u64) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.of(generation)?
            .get_mut(key)
            .and_then(|list| std::iter::from_fn(|| list.pop()).find(SendRequest::is_ready))
    }

    fn keep_idle(&self, key: &PeerKey, generation: u64, sender: SendRequest<Body>) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(by_peer) = idle.of(generation) else {
            return;
        };
        if !by_peer.contains_key(key) {
            // A peer that moved to a new key (or a new address) leaves no idle links behind.
            by_peer.retain(|(address, _), _| *address != key.0);
        }
        let list = by_peer.entry(key.clone()).or_default();
        if list.len() < self.http.peer_idle_connections {
            list.push(sender);
        }
    }

    /// One exchange over a pooled connection, or a fresh one, to the node at `key.0`
    /// whose descriptor names the TLS key hash `key.1`.
    async fn exchange(
        &self,
        key: &PeerKey,
        endpoint: Endpoint,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, TransmitFailure> {
        let address = key.0.as_str();
        // Links opened now present the certificate of this generation of the node's keys.
        let generation = self.links.generation();
        let attempt = async {
            let req = build_request(address, endpoint, body);
            let unsent = match self.take_idle(key, generation) {
                Some(mut pooled) => match post(&mut pooled, req).await {
                    Ok(bytes) => {
                        self.keep_idle(key, generation, pooled);
                        return Ok(bytes);
                    }
                    // Never written: safe to send once more on a fresh connection.
                    Err((_, Some(req))) => req,
                    Err((e, None)) => return Err(e),
                },
                None => req,
            };
            let (mut fresh, task) = open(address, self.links.dial(key.1)).await.map_err(|e| {
                tracing::debug!(%address, error = %e, "no link");
                TransmitFailure::Unreachable
            })?;
            self.ex.spawn(task).detach();
            let bytes = post(&mut fresh, unsent).await.map_err(|(e, _)| e)?;
            self.keep_idle(key, generation, fresh);
            Ok(bytes)
        };
        within(
            self.http.peer_timeout(),
            attempt,
            Err(TransmitFailure::Timeout),
        )
        .await
    }
}

/// `work`'s output, or `otherwise` once `limit` passed.
async fn within<T>(limit: Duration, work: impl Future<Output = T>, otherwise: T) -> T {
    let timeout = async {
        Timer::after(limit).await;
        otherwise
    };
    smol::future::or(work, timeout).await
}

/// Serves `started`'s listeners on `ex` until `shutdown` yields, then stops accepting,
/// lets in-flight requests finish (up to the grace period) and stops the node driver
/// (which commits and closes the database).
pub fn serve(
    started: ghost_host::start::Started,
    ex: &Arc<Executor<'static>>,
    shutdown: std::sync::mpsc::Receiver<()>,
) -> Result<(), String> {
    let ghost_host::start::Started {
        host,
        listener,
        admin,
        driver,
        engine,
        links,
    } = started;
    let listener =
        Async::new(listener).map_err(|e| format!("cannot use the listening socket: {e}"))?;
    if let Some(admin) = admin {
        let admin =
            Async::new(admin).map_err(|e| format!("cannot use the admin listening socket: {e}"))?;
        ex.spawn(serve_admin(host.clone(), ex.clone(), admin))
            .detach();
    }
    let stop = smol::unblock(move || {
        let _ = shutdown.recv();
    });
    let tls = links.server_config();
    let engine = engine.map(|engine| ex.spawn(run_engine(engine)));
    smol::block_on(ex.run(async {
        serve_until(host, ex.clone(), listener, tls, stop).await;
        // The engine runs on this executor: it must go on running while it stops.
        driver.request_stop();
        if let Some(engine) = engine {
            engine.await;
        }
    }));
    driver.stop();
    tracing::info!("stopped");
    Ok(())
}

/// Runs a node's driver engine on the executor it is spawned on, with smol's timers.
async fn run_engine(engine: ghost_host::driver::EngineTask) {
    engine
        .run(|wait| async move {
            Timer::after(wait).await;
        })
        .await;
}

/// Serves the public listener (over TLS with `tls`, else plain HTTP) until `shutdown`
/// completes, then stops accepting and lets in-flight requests finish, up to the grace
/// period.
pub async fn serve_until(
    host: Host,
    ex: Arc<Executor<'static>>,
    listener: Async<TcpListener>,
    tls: Option<Arc<ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Arc::new(Semaphore::new(host.http().max_connections));
    let accept_loop = async {
        loop {
            let permit = connections.acquire_arc().await;
            let (stream, peer) = accept(&listener, "accept failed").await;
            // Closed unread when its address has too many open: the permit goes back.
            let Some(slot) = host.admit(peer.ip()) else {
                continue;
            };
            let host = host.clone();
            let tls = tls.clone();
            ex.spawn(async move {
                let _permit = permit;
                let _slot = slot;
                match tls {
                    Some(tls) => serve_tls(host, stream, peer, tls).await,
                    None => {
                        serve_connection(host, stream, peer, Listener::Public, Session::None).await;
                    }
                }
            })
            .detach();
        }
    };
    smol::future::or(accept_loop, shutdown).await;
    drop(listener);
    tracing::info!("shutting down: no new connections");
    let deadline = Instant::now() + Duration::from_millis(host.http().shutdown_grace_ms);
    while host.requests_in_flight() > 0 && Instant::now() < deadline {
        Timer::after(Duration::from_millis(10)).await;
    }
    let unfinished = host.requests_in_flight();
    if unfinished > 0 {
        tracing::warn!(
            unfinished,
            "grace period over with requests still in flight"
        );
    }
}

/// Serves the admin listener (`/metrics`, detailed `/health`) for as long as the
/// executor runs. Its connections are few and separate from the public ones, so a flood
/// on the public address does not lock the operator out.
pub async fn serve_admin(host: Host, ex: Arc<Executor<'static>>, listener: Async<TcpListener>) {
    let connections = Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        let permit = connections.acquire_arc().await;
        let (stream, peer) = accept(&listener, "admin accept failed").await;
        let host = host.clone();
        ex.spawn(async move {
            let _permit = permit;
            serve_connection(host, stream, peer, Listener::Admin, Session::None).await;
        })
        .detach();
    }
}

/// A public connection on a TLS listener: the handshake (within the header timeout),
/// then HTTP inside it. One that opens with plain HTTP gets a JSON 400 saying TLS is
/// required, in plain HTTP it can read, and is closed.
async fn serve_tls(host: Host, stream: Async<TcpStream>, peer: SocketAddr, tls: Arc<ServerConfig>) {
    let header_timeout = host.http().header_timeout();
    let mut first = [0u8; 1];
    let peeked = within(header_timeout, stream.peek(&mut first), Ok(0)).await;
    if !matches!(peeked, Ok(1)) {
        return;
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        host.record_tls_refusal(TlsRefusal::Plaintext);
        let mut stream = stream;
        let refusal = plaintext_refusal();
        let _ = within(header_timeout, stream.write_all(&refusal), Ok(())).await;
        let _ = stream.get_ref().shutdown(std::net::Shutdown::Both);
        return;
    }
    let handshake = futures_rustls::TlsAcceptor::from(tls).accept(stream);
    let accepted = within(
        header_timeout,
        handshake,
        Err(std::io::ErrorKind::TimedOut.into()),
    )
    .await;
    match accepted {
        Ok(tls) => {
            let session = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(peer_key_hash)
                .map_or(Session::None, |h| Session::Tls(TlsKeyHash(h)));
            serve_connection(host, tls, peer, Listener::Public, session).await;
        }
        Err(e) => {
            host.record_tls_refusal(TlsRefusal::HandshakeFailed);
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
        }
    }
}

async fn serve_connection<S>(
    host: Host,
    stream: S,
    peer: SocketAddr,
    listener: Listener,
    session: Session,
) where
    S: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = host.http().header_timeout();
    let service = hyper::service::service_fn(move |req| {
        let host = host.clone();
        async move {
            let _in_flight = host.in_flight();
            let answer = handle(&host, req, peer, listener, session).await;
            host.record(answer.status);
            Ok::<_, Infallible>(response(answer))
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(SmolTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024)
        .half_close(true)
        .serve_connection(FuturesIo::new(stream), service)
        .await;
}

async fn handle(
    host: &Host,
    req: Request<Incoming>,
    peer: SocketAddr,
    listener: Listener,
    session: Session,
) -> Answer {
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    let route = match host.route(
        listener,
        req.method().as_str(),
        req.uri().path(),
        header_bytes,
    ) {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    let query = req.uri().query().map(str::to_owned);
    let body = if route.has_body() {
        match read_body(host.http(), req).await {
            Ok(b) => b,
            Err(e) => return Answer::problem(&e),
        }
    } else {
        Vec::new()
    };
    let (tx, rx) = smol::channel::bounded(1);
    host.dispatch(
        route,
        query.as_deref(),
        body,
        peer.ip(),
        session,
        move |answer| {
            let _ = tx.try_send(answer);
        },
    );
    rx.recv().await.unwrap_or_else(|_| Answer::stopping())
}

fn response(answer: Answer) -> Response<Body> {
    let mut builder = Response::builder().status(answer.status);
    if let Some(content_type) = answer.content_type {
        builder = builder.header("content-type", content_type);
    }
    builder
        .body(Full::new(Bytes::from(answer.body)))
        .expect("status and header are valid")
}

/// Reads the body: refused before reading when its announced length is too large, and
/// when it does not arrive in time.
async fn read_body(http: &HttpSection, req: Request<Incoming>) -> Result<Vec<u8>, ApiError> {
    let limit = http.max_body_bytes;
    if hyper::body::Body::size_hint(req.body()).lower() > limit as u64 {
        return Err(ApiError::body_too_large(limit));
    }
    let read = async {
        Limited::new(req.into_body(), limit)
            .collect()
            .await
            .map(|c| Vec::from(c.to_bytes()))
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    ApiError::body_too_large(limit)
                } else {
                    ApiError::new(400, "body_unreadable", "the request body broke off")
                }
            })
    };
    within(http.body_timeout(), read, Err(ApiError::body_timeout())).await
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

/// The task that drives one HTTP/1.1 client connection: whoever opens the connection
/// spawns it, so it runs on the executor of the requests that use it.
type ConnectionTask = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// An HTTP/1.1 connection to `address`, over TLS dialled with `tls` (else plain HTTP),
/// ready for requests once its task runs on smol's global executor; the error says what
/// failed (a refused TLS key among others).
pub async fn connect(address: &str, tls: Option<Dial>) -> Result<SendRequest<Full<Bytes>>, String> {
    let (sender, task) = open(address, tls).await?;
    smol::spawn(task).detach();
    Ok(sender)
}

/// An HTTP/1.1 connection to `address` and the task that drives it, for the caller to
/// spawn.
async fn open(
    address: &str,
    tls: Option<Dial>,
) -> Result<(SendRequest<Full<Bytes>>, ConnectionTask), String> {
    let stream = dial(address)
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    match tls {
        None => http_over(address, stream).await,
        Some(Dial { config, name }) => {
            let session = futures_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS with {address} failed: {e}"))?;
            http_over(address, session).await
        }
    }
}

async fn http_over<S>(
    address: &str,
    stream: S,
) -> Result<(SendRequest<Full<Bytes>>, ConnectionTask), String>
where
    S: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(FuturesIo::new(stream))
        .await
        .map_err(|e| format!("{address}: {e}"))?;
    Ok((
        sender,
        Box::pin(async move {
            let _ = conn.await;
        }),
    ))
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
    let bytes = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|_| (TransmitFailure::Unreachable, None))?
        .to_bytes();
    Ok(Vec::from(bytes))
}

/// One HTTP exchange on a fresh connection (TLS dialled with `tls`): POST `body` to
/// `endpoint` at `address`, giving up after `timeout`. What clients use (the node itself
/// pools connections).
pub async fn exchange(
    address: &str,
    tls: Option<Dial>,
    endpoint: Endpoint,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, TransmitFailure> {
    let attempt = async {
        let mut sender = connect(address, tls)
            .await
            .map_err(|_| TransmitFailure::Unreachable)?;
        post(&mut sender, build_request(address, endpoint, body))
            .await
            .map_err(|(e, _)| e)
    };
    within(timeout, attempt, Err(TransmitFailure::Timeout)).await
}

/// A node served in-process on `ex` over `links`: its driver thread, with the public and
/// admin listeners already bound. What the in-process tests start; the `ghostnode` binary
/// goes through [`ghost_host::start`] instead.
pub fn spawn_node(
    node: ghost_host::driver::HostedNode,
    ex: &Arc<Executor<'static>>,
    http: HttpSection,
    links: Links,
    listener: TcpListener,
    admin: TcpListener,
) -> std::io::Result<(Host, ghost_host::driver::DriverThread)> {
    let tls = links.server_config();
    let carrier = SmolCarrier::new(ex.clone(), http.clone(), links);
    let (driver, engine) = ghost_host::driver::spawn_task(
        node,
        carrier,
        ghost_host::driver::DriverSettings::default(),
    );
    ex.spawn(run_engine(engine)).detach();
    let host = Host::new(driver.driver(), http);
    ex.spawn(serve_until(
        host.clone(),
        ex.clone(),
        Async::new(listener)?,
        tls,
        smol::future::pending::<()>(),
    ))
    .detach();
    ex.spawn(serve_admin(host.clone(), ex.clone(), Async::new(admin)?))
        .detach();
    Ok((host, driver))
}
