//! What a node answers, whatever the HTTP library: a runtime parses a request, asks
//! [`Host::route`] where it goes, reads the body when the route has one (within the
//! limits of [`HttpSection`]), and hands it to [`Host::dispatch`], which answers through
//! the node driver. Runtimes only turn an [`Answer`] into bytes on their socket.
//!
//! Also shared here: the per-address connection limit ([`ConnectionLimits`]) and the
//! in-flight request count graceful shutdown waits on ([`InFlight`]).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use proto_core::PACKET_LEN;
use proto_core::node::Reply;
pub use proto_core::peer::Session;
use rand_core::UnwrapErr;

use crate::api::{self, ApiError, Listener, Route};
use crate::config::HttpSection;
use crate::driver::Driver;
use crate::metrics::{self, Snapshot};

/// Most header bytes (names and values) a request may carry; no endpoint needs more than
/// a few hundred.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Connections the admin listener serves at once: scrapers and health checks, a few.
pub const MAX_ADMIN_CONNECTIONS: usize = 32;

/// How many nodes `GET /v1/nodes/bootstrap` lists at most.
pub const BOOTSTRAP_NODES: usize = 64;

/// Largest answer read from another node: the biggest reply bucket or peer answer.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// One HTTP answer, ready for a runtime to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// `content-type` header; `None` for an empty answer.
    pub content_type: Option<&'static str>,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type: Some(content_type),
            body: body.into(),
        }
    }

    fn json(status: u16, body: String) -> Self {
        Self::new(status, "application/json", body)
    }

    /// The JSON error answer for `e`.
    #[must_use]
    pub fn problem(e: &ApiError) -> Self {
        Self::json(e.status, e.body())
    }

    /// What a request gets when the node stopped before answering it.
    #[must_use]
    pub fn stopping() -> Self {
        Self::problem(&ApiError::unavailable("the node is stopping"))
    }

    /// The answer to a request the core replied to.
    #[must_use]
    pub fn from_reply(reply: Reply) -> Self {
        match reply {
            Reply::Onion(b) | Reply::Peer(b) => Self::new(200, "application/octet-stream", b),
            Reply::Dropped => Self {
                status: 204,
                content_type: None,
                body: Vec::new(),
            },
            Reply::RateLimited => Self::problem(&ApiError::rate_limited()),
            Reply::PeerRefused(e) => Self::problem(&e.into()),
        }
    }
}

/// Counters the runtimes feed and `/metrics` reports beside the node's own.
#[derive(Debug, Default)]
struct Counters {
    http_responses: Mutex<BTreeMap<u16, u64>>,
    connections_refused: AtomicU64,
    tls_handshakes_failed: AtomicU64,
    tls_plaintext_refused: AtomicU64,
}

/// Why a TLS listener closed a connection before any request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsRefusal {
    /// The handshake failed (a client key that does not verify, TLS 1.2, garbage) or did
    /// not finish within the header timeout.
    HandshakeFailed,
    /// The client spoke plain HTTP; it was answered `400 tls_required`.
    Plaintext,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock would be a bug; keep serving with the state.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The runtime-neutral half of a node's HTTP service: cheap to clone.
#[derive(Clone)]
pub struct Host {
    driver: Driver,
    http: Arc<HttpSection>,
    counters: Arc<Counters>,
    limits: Arc<ConnectionLimits>,
    in_flight: Arc<AtomicUsize>,
}

impl Host {
    /// A service answering through `driver` with these HTTP limits.
    #[must_use]
    pub fn new(driver: Driver, http: HttpSection) -> Self {
        Self {
            driver,
            limits: Arc::new(ConnectionLimits::new(http.max_connections_per_address)),
            http: Arc::new(http),
            counters: Arc::default(),
            in_flight: Arc::default(),
        }
    }

    /// The HTTP limits the runtime enforces.
    #[must_use]
    pub fn http(&self) -> &HttpSection {
        &self.http
    }

    /// The node driver behind this service.
    #[must_use]
    pub fn driver(&self) -> &Driver {
        &self.driver
    }

    /// Where a request goes, or the answer that refuses it (unknown route, wrong method,
    /// oversized headers).
    pub fn route(
        &self,
        listener: Listener,
        method: &str,
        path: &str,
        header_bytes: usize,
    ) -> Result<Route, Answer> {
        if header_bytes > MAX_HEADER_BYTES {
            return Err(Answer::problem(&ApiError::headers_too_large(
                MAX_HEADER_BYTES,
            )));
        }
        api::route(listener, method, path).map_err(|e| Answer::problem(&e))
    }

    /// Answers a routed request from `peer`, on a connection authenticated as `session`
    /// (the TLS client key, if one was presented). `body` is what the runtime read (empty
    /// for routes without one); `done` gets the answer, possibly later and on another
    /// thread. When the node stops first, `done` is dropped uncalled: answer
    /// [`Answer::stopping`].
    pub fn dispatch(
        &self,
        route: Route,
        query: Option<&str>,
        body: Vec<u8>,
        peer: IpAddr,
        session: Session,
        done: impl FnOnce(Answer) + Send + 'static,
    ) {
        match route {
            Route::Health => {
                let (status, body) = api::public_health_body(self.driver.status().database_open());
                done(Answer::json(status, body));
            }
            Route::HealthDetail => {
                let s = self.driver.status();
                let (status, body) = api::health_body(s.node_id, s.peers(), s.database_open());
                done(Answer::json(status, body));
            }
            Route::Metrics => {
                let http_responses = lock(&self.counters.http_responses).clone();
                let connections_refused = self.counters.connections_refused.load(Ordering::Relaxed)
                    + self.limits.refused.load(Ordering::Relaxed);
                let tls_refused = (
                    self.counters.tls_handshakes_failed.load(Ordering::Relaxed),
                    self.counters.tls_plaintext_refused.load(Ordering::Relaxed),
                );
                self.driver.run(
                    move |n, _| snapshot(n, http_responses, connections_refused, tls_refused),
                    move |s| done(Answer::new(200, metrics::CONTENT_TYPE, s.encode())),
                );
            }
            Route::Bootstrap => self.driver.run(
                |n, t| n.bootstrap(t, BOOTSTRAP_NODES, &mut UnwrapErr(getrandom::SysRng)),
                move |nodes| done(Answer::json(200, api::nodes_body(&nodes))),
            ),
            Route::Directory => match api::parse_directory_query(query) {
                Ok(after) => self.driver.run(
                    move |n, t| n.directory_page(t, after, api::DIRECTORY_PAGE_LEN),
                    move |page| done(Answer::json(200, api::directory_body(&page))),
                ),
                Err(e) => done(Answer::problem(&e)),
            },
            Route::Register => match api::parse_register(&body) {
                Ok(d) => self.driver.run(
                    move |n, t| n.handle_register(t, peer, d).map(|_| n.directory().len()),
                    move |result| {
                        done(match result {
                            Ok(peers) => Answer::json(200, api::registered_body(peers)),
                            Err(e) => Answer::problem(&e.into()),
                        });
                    },
                ),
                Err(e) => done(Answer::problem(&e)),
            },
            Route::Onion => {
                // The body becomes the packet the core peels in place, without a copy.
                let got = body.len();
                let Ok(mut packet) = <Box<[u8; PACKET_LEN]>>::try_from(body.into_boxed_slice())
                else {
                    return done(Answer::problem(&ApiError::wrong_packet_size(got)));
                };
                self.driver.request(
                    move |n, t, r| n.handle_onion(t, r, peer, &mut packet),
                    move |reply| done(Answer::from_reply(reply)),
                );
            }
            Route::Peer => self.driver.request(
                move |n, t, r| n.handle_peer(t, r, peer, session, &body),
                move |reply| done(Answer::from_reply(reply)),
            ),
        }
    }

    /// Counts an answer sent, by status (every answer a runtime writes, its own refusals
    /// included).
    pub fn record(&self, status: u16) {
        *lock(&self.counters.http_responses)
            .entry(status)
            .or_default() += 1;
    }

    /// Counts a connection closed at once for a reason of the runtime's own.
    pub fn record_refused_connection(&self) {
        self.counters
            .connections_refused
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection a TLS listener closed before any request.
    pub fn record_tls_refusal(&self, why: TlsRefusal) {
        let counter = match why {
            TlsRefusal::HandshakeFailed => &self.counters.tls_handshakes_failed,
            TlsRefusal::Plaintext => &self.counters.tls_plaintext_refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A slot for one more connection from `ip`, or `None` (close it unread) when that
    /// address has its maximum open.
    #[must_use]
    pub fn admit(&self, ip: IpAddr) -> Option<AddressSlot> {
        self.limits.take(ip)
    }

    /// Marks a request in flight until the guard drops.
    #[must_use]
    pub fn in_flight(&self) -> InFlight {
        InFlight::new(self.in_flight.clone())
    }

    /// Requests being handled now (what a graceful stop waits for).
    #[must_use]
    pub fn requests_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// What `/metrics` reports now.
fn snapshot(
    node: &crate::driver::HostedNode,
    http_responses: BTreeMap<u16, u64>,
    connections_refused: u64,
    tls_refused: (u64, u64),
) -> Snapshot {
    let (messages, message_bytes) = node.store().totals();
    let backend = node.store().backend();
    Snapshot {
        stats: node.stats().clone(),
        peers: node.directory().len(),
        messages,
        message_bytes,
        db_file_bytes: backend.file_bytes(),
        db_up: backend.is_healthy(),
        db_commits: backend.commits(),
        pending_stores: node.pending_stores(),
        pending_exchanges: node.pending_exchanges(),
        replay_fill: f64::from(node.replay_fill_ratio()),
        http_responses,
        connections_refused,
        tls_refused,
    }
}

/// Connections open per source address, against a maximum.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_per_address: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
    refused: AtomicU64,
}

impl ConnectionLimits {
    fn new(max_per_address: usize) -> Self {
        Self {
            max_per_address,
            open: Mutex::default(),
            refused: AtomicU64::new(0),
        }
    }

    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let mut open = lock(&self.open);
        let n = open.entry(ip).or_default();
        if *n >= self.max_per_address {
            drop(open);
            self.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%ip, "too many connections from this address");
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            limits: self.clone(),
            ip,
        })
    }
}

/// One open connection of an address, released when dropped.
pub struct AddressSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.limits.open);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A request in flight, counted until dropped.
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
