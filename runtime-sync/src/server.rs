//! The blocking HTTP/1.1 server: one accept thread per listener, one thread per
//! connection (at most [`HttpSection::max_connections`] at once), the public listener
//! inside TLS (`rustls::StreamOwned`, handshake within the header timeout) unless
//! `http.insecure_plaintext`, request heads parsed by `httparse`, chunked bodies decoded
//! by `chunked_transfer`, answers from [`ghost_host::service::Host`].
//!
//! Why not tiny_http (what the design first named): it accepts connections itself on an
//! unbounded thread pool, reads header lines without a length limit and sets no socket
//! timeout, so one slow or endless client holds a thread and memory for ever, and it
//! gives no hook to refuse an address before reading. Owning the accept loop and the
//! head buffer is what the limits below need.
//!
//! Invariants: a head is read within [`HttpSection::header_timeout_ms`] (counted from
//! the first wait, idle keep-alive included) and is at most [`MAX_HEAD_BYTES`]; a body is
//! refused before reading when its announced length is over
//! [`HttpSection::max_body_bytes`], never read beyond it, and must arrive within
//! [`HttpSection::body_timeout_ms`]; a client that half-closes after a complete request
//! gets its answer; every refusal of a request that parses as HTTP is a 4xx with the
//! JSON error body, and the connection is closed after any refusal that leaves the
//! stream's framing unknown.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use ghost_host::api::{ApiError, Listener};
use ghost_host::config::HttpSection;
use ghost_host::service::Session;
use ghost_host::service::{Answer, Host, MAX_HEADER_BYTES, TlsRefusal};
use ghost_host::tls::{TLS_HANDSHAKE_RECORD, peer_key_hash, plaintext_refusal};
use proto_core::TlsKeyHash;
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// Largest request head (request line and headers) read: the header limit plus room for
/// the request line; a longer head gets 431.
pub const MAX_HEAD_BYTES: usize = MAX_HEADER_BYTES + 4096;
/// Most header lines a request may have.
const MAX_HEADERS: usize = 64;
/// Stack of a connection thread: parsing and answering need little.
const CONNECTION_STACK: usize = 256 * 1024;

/// Connections a listener serves at once; the accept thread waits for a free slot.
struct Slots {
    open: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

impl Slots {
    fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            open: Mutex::new(0),
            freed: Condvar::new(),
            max,
        })
    }

    /// Blocks until a connection may be served.
    fn acquire(self: &Arc<Self>) -> Slot {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        while *open >= self.max {
            open = self
                .freed
                .wait(open)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *open += 1;
        Slot(self.clone())
    }
}

struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        *self.0.open.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
        self.0.freed.notify_one();
    }
}

/// A listener served by its own accept thread until [`Acceptor::stop`].
pub struct Acceptor {
    stopping: Arc<AtomicBool>,
    wake: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Acceptor {
    /// Starts accepting on `listener` for `which` of the node's listeners, serving at
    /// most `max_connections` at once (public connections also within the host's
    /// per-address limit), over TLS with `tls`, else plain HTTP.
    pub fn start(
        host: Host,
        listener: TcpListener,
        which: Listener,
        max_connections: usize,
        tls: Option<Arc<ServerConfig>>,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let wake = match local.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::from((Ipv4Addr::LOCALHOST, local.port()))
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::from((Ipv6Addr::LOCALHOST, local.port()))
            }
            _ => local,
        };
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = stopping.clone();
        let thread = std::thread::Builder::new()
            .name(format!("accept-{which:?}").to_lowercase())
            .spawn(move || {
                let slots = Slots::new(max_connections);
                accept_loop(&host, &listener, which, &slots, &flag, tls.as_ref());
            })?;
        Ok(Self {
            stopping,
            wake,
            thread: Some(thread),
        })
    }

    /// Stops accepting: the listening socket is closed once this returns. Connections
    /// already accepted finish their current request.
    pub fn stop(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // The accept thread sleeps in accept(): one connection of our own wakes it.
        let _ = TcpStream::connect_timeout(&self.wake, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(
    host: &Host,
    listener: &TcpListener,
    which: Listener,
    slots: &Arc<Slots>,
    stopping: &Arc<AtomicBool>,
    tls: Option<&Arc<ServerConfig>>,
) {
    loop {
        let slot = slots.acquire();
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let address_slot = match which {
            Listener::Public => match host.admit(peer.ip()) {
                Some(s) => Some(s),
                // Closed unread: the slot goes back at once.
                None => continue,
            },
            Listener::Admin => None,
        };
        let served = host.clone();
        let stopping = stopping.clone();
        let tls = tls.cloned();
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .stack_size(CONNECTION_STACK)
            .spawn(move || {
                let _slot = slot;
                let _address_slot = address_slot;
                let http = served.http();
                let wire = match tls {
                    None => Wire::Plain(stream),
                    Some(tls) => match accept_tls(&served, stream, tls) {
                        Some(session) => Wire::Tls(Box::new(session)),
                        None => return,
                    },
                };
                Connection::new(wire, http).serve(&served, peer, which, &stopping);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a connection thread");
            host.record_refused_connection();
        }
    }
}

/// A connection's bytes: the socket itself, or a TLS session over it.
enum Wire {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Wire {
    /// How the connection is authenticated: the client's TLS key, if it presented one.
    fn session(&self) -> Session {
        match self {
            Self::Plain(_) => Session::None,
            Self::Tls(t) => t
                .conn
                .peer_certificates()
                .and_then(peer_key_hash)
                .map_or(Session::None, |h| Session::Tls(TlsKeyHash(h))),
        }
    }

    fn socket(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(t) => &t.sock,
        }
    }

    /// Ends the sending side (after TLS's close_notify), so the client reads the end of
    /// the answer.
    fn shutdown_write(&mut self) {
        if let Self::Tls(t) = self {
            t.conn.send_close_notify();
            let _ = t.flush();
        }
        let _ = self.socket().shutdown(Shutdown::Write);
    }
}

impl Read for Wire {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(out),
            Self::Tls(t) => t.read(out),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(bytes),
            Self::Tls(t) => t.write(bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(t) => t.flush(),
        }
    }
}

/// The TLS handshake on an accepted socket, within the header timeout in all. A client
/// that opens with plain HTTP gets a JSON 400 saying TLS is required, in plain HTTP it
/// can read; `None` for it and for any failed or slow handshake (both counted).
fn accept_tls(
    host: &Host,
    stream: TcpStream,
    tls: Arc<ServerConfig>,
) -> Option<StreamOwned<ServerConnection, TcpStream>> {
    let timeout = host.http().header_timeout();
    let deadline = Instant::now() + timeout;
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let mut first = [0u8; 1];
    if stream.peek(&mut first).ok()? == 0 {
        return None;
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        host.record_tls_refusal(TlsRefusal::Plaintext);
        let mut stream = stream;
        let _ = stream.write_all(&plaintext_refusal());
        let _ = stream.shutdown(Shutdown::Write);
        return None;
    }
    let mut conn = ServerConnection::new(tls).ok()?;
    let mut stream = stream;
    while conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        let step = if left.is_zero() {
            Err(io::ErrorKind::TimedOut.into())
        } else {
            stream
                .set_read_timeout(Some(left))
                .and_then(|()| conn.complete_io(&mut stream).map(|_| ()))
        };
        if let Err(e) = step {
            host.record_tls_refusal(TlsRefusal::HandshakeFailed);
            tracing::debug!(error = %e, "TLS handshake failed");
            return None;
        }
    }
    Some(StreamOwned::new(conn, stream))
}

/// Why a request head could not be read.
enum HeadError {
    /// The client closed (or reset) between requests: nothing to answer.
    Closed,
    /// The head did not arrive within the header timeout.
    TimedOut,
    /// The head is longer than [`MAX_HEAD_BYTES`] or has too many lines.
    TooLarge,
    /// Not HTTP/1.x.
    Malformed(&'static str),
}

/// What the head says about the body and the connection.
struct Head {
    method: String,
    target: String,
    header_bytes: usize,
    content_length: Option<usize>,
    chunked: bool,
    expect_continue: bool,
    keep_alive: bool,
}

/// One client connection: its socket (or TLS session) and the bytes read but not yet used.
struct Connection {
    stream: Wire,
    session: Session,
    buf: Vec<u8>,
    header_timeout: Duration,
    body_timeout: Duration,
    max_body: usize,
}

impl Connection {
    fn new(stream: Wire, http: &HttpSection) -> Self {
        let _ = stream.socket().set_nodelay(true);
        Self {
            session: stream.session(),
            stream,
            buf: Vec::with_capacity(4096),
            header_timeout: http.header_timeout(),
            body_timeout: http.body_timeout(),
            max_body: http.max_body_bytes,
        }
    }

    fn serve(mut self, host: &Host, peer: SocketAddr, which: Listener, stopping: &AtomicBool) {
        loop {
            let head = match self.read_head() {
                Ok(head) => head,
                Err(HeadError::Closed | HeadError::TimedOut) => return,
                Err(HeadError::TooLarge) => {
                    return self.refuse(host, &ApiError::headers_too_large(MAX_HEADER_BYTES));
                }
                Err(HeadError::Malformed(why)) => {
                    return self.refuse(host, &ApiError::new(400, "malformed_request", why));
                }
            };
            let _in_flight = host.in_flight();
            let (path, query) = match head.target.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (head.target.as_str(), None),
            };
            let route = match host.route(which, &head.method, path, head.header_bytes) {
                Ok(route) => route,
                Err(answer) => {
                    // The body (if any) is unread: the framing is lost unless there is none.
                    let framed = head.content_length.unwrap_or(0) == 0 && !head.chunked;
                    self.answer(host, &answer, head.keep_alive && framed);
                    if framed && head.keep_alive {
                        continue;
                    }
                    return;
                }
            };
            let body = if route.has_body() || head.chunked || head.content_length.unwrap_or(0) > 0 {
                match self.read_body(&head) {
                    Ok(body) => body,
                    Err(e) => return self.refuse(host, &e),
                }
            } else {
                Vec::new()
            };
            let (tx, rx) = mpsc::sync_channel(1);
            host.dispatch(route, query, body, peer.ip(), self.session, move |answer| {
                let _ = tx.send(answer);
            });
            let answer = rx.recv().unwrap_or_else(|_| Answer::stopping());
            // After a chunked body the stream's position is the decoder's: start afresh.
            let keep_alive = head.keep_alive && !head.chunked && !stopping.load(Ordering::SeqCst);
            if !self.answer(host, &answer, keep_alive) || !keep_alive {
                return;
            }
        }
    }

    /// Reads until a whole head is buffered, then parses it and drops it from the buffer.
    fn read_head(&mut self) -> Result<Head, HeadError> {
        let deadline = Instant::now() + self.header_timeout;
        loop {
            if !self.buf.is_empty() {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&self.buf) {
                    Ok(httparse::Status::Complete(len)) => {
                        let head = Head::from_parsed(&req)?;
                        self.buf.drain(..len);
                        return Ok(head);
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
                    Err(_) => return Err(HeadError::Malformed("this is not an HTTP/1.1 request")),
                }
                if self.buf.len() >= MAX_HEAD_BYTES {
                    return Err(HeadError::TooLarge);
                }
            }
            match self.fill(deadline, MAX_HEAD_BYTES) {
                Ok(0) if self.buf.is_empty() => return Err(HeadError::Closed),
                Ok(0) => return Err(HeadError::Malformed("the request head broke off")),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => return Err(HeadError::TimedOut),
                Err(_) => return Err(HeadError::Closed),
            }
        }
    }

    /// Reads more bytes into the buffer (up to `cap` buffered), waiting until
    /// `deadline`; `Ok(0)` at the end of the client's stream.
    fn fill(&mut self, deadline: Instant, cap: usize) -> io::Result<usize> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream.socket().set_read_timeout(Some(left))?;
        let start = self.buf.len();
        let room = cap.saturating_sub(start).clamp(1, 16 * 1024);
        self.buf.resize(start + room, 0);
        let got = self.stream.read(&mut self.buf[start..]);
        self.buf.truncate(start + *got.as_ref().unwrap_or(&0));
        got
    }

    fn read_body(&mut self, head: &Head) -> Result<Vec<u8>, ApiError> {
        let deadline = Instant::now() + self.body_timeout;
        if head.expect_continue {
            let _ = self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        if head.chunked {
            let limit = self.max_body;
            let mut decoded = Vec::new();
            let reader = BodyReader {
                conn: self,
                deadline,
            };
            let read = chunked_transfer::Decoder::new(reader)
                .take(limit as u64 + 1)
                .read_to_end(&mut decoded);
            return match read {
                Ok(_) if decoded.len() > limit => Err(ApiError::body_too_large(limit)),
                Ok(_) => Ok(decoded),
                Err(e) if is_timeout(&e) => Err(ApiError::body_timeout()),
                Err(_) => Err(ApiError::new(
                    400,
                    "body_unreadable",
                    "the request body broke off",
                )),
            };
        }
        let len = head.content_length.unwrap_or(0);
        if len > self.max_body {
            return Err(ApiError::body_too_large(self.max_body));
        }
        while self.buf.len() < len {
            match self.fill(deadline, len) {
                Ok(0) => {
                    return Err(ApiError::new(
                        400,
                        "body_unreadable",
                        "the request body broke off",
                    ));
                }
                Ok(_) => {}
                Err(e) if is_timeout(&e) => return Err(ApiError::body_timeout()),
                Err(_) => {
                    return Err(ApiError::new(
                        400,
                        "body_unreadable",
                        "the request body broke off",
                    ));
                }
            }
        }
        let rest = self.buf.split_off(len);
        Ok(std::mem::replace(&mut self.buf, rest))
    }

    /// Answers a request that broke the rules, then closes.
    fn refuse(&mut self, host: &Host, e: &ApiError) {
        self.answer(host, &Answer::problem(e), false);
        self.stream.shutdown_write();
    }

    /// Writes `answer`; `false` when the client is gone.
    fn answer(&mut self, host: &Host, answer: &Answer, keep_alive: bool) -> bool {
        host.record(answer.status);
        let mut head = format!(
            "HTTP/1.1 {} {}\r\ncontent-length: {}\r\nconnection: {}\r\n",
            answer.status,
            reason(answer.status),
            answer.body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        );
        if let Some(content_type) = answer.content_type {
            head.push_str("content-type: ");
            head.push_str(content_type);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let _ = self
            .stream
            .socket()
            .set_write_timeout(Some(self.body_timeout));
        self.stream
            .write_all(head.as_bytes())
            .and_then(|()| self.stream.write_all(&answer.body))
            .is_ok()
    }
}

/// The connection's buffered bytes, then its socket, until the body's deadline.
struct BodyReader<'a> {
    conn: &'a mut Connection,
    deadline: Instant,
}

impl Read for BodyReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.conn.buf.is_empty() {
            let cap = out.len().min(16 * 1024);
            if self.conn.fill(self.deadline, cap)? == 0 {
                return Ok(0);
            }
        }
        let n = out.len().min(self.conn.buf.len());
        out[..n].copy_from_slice(&self.conn.buf[..n]);
        self.conn.buf.drain(..n);
        Ok(n)
    }
}

impl Head {
    fn from_parsed(req: &httparse::Request<'_, '_>) -> Result<Self, HeadError> {
        let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version)
        else {
            return Err(HeadError::Malformed("incomplete request line"));
        };
        let mut head = Self {
            method: method.to_owned(),
            target: target.to_owned(),
            header_bytes: 0,
            content_length: None,
            chunked: false,
            expect_continue: false,
            keep_alive: version == 1,
        };
        for h in req.headers.iter() {
            head.header_bytes += h.name.len() + h.value.len();
            let value = std::str::from_utf8(h.value).unwrap_or("").trim();
            if h.name.eq_ignore_ascii_case("content-length") {
                let len = value
                    .parse()
                    .map_err(|_| HeadError::Malformed("content-length is not a number"))?;
                if head.content_length.is_some_and(|l| l != len) {
                    return Err(HeadError::Malformed("two different content-lengths"));
                }
                head.content_length = Some(len);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                if !value.eq_ignore_ascii_case("chunked") {
                    return Err(HeadError::Malformed(
                        "only the chunked transfer-encoding is accepted",
                    ));
                }
                head.chunked = true;
            } else if h.name.eq_ignore_ascii_case("connection") {
                for token in value.split(',').map(str::trim) {
                    if token.eq_ignore_ascii_case("close") {
                        head.keep_alive = false;
                    } else if token.eq_ignore_ascii_case("keep-alive") {
                        head.keep_alive = true;
                    }
                }
            } else if h.name.eq_ignore_ascii_case("expect") {
                head.expect_continue = value.eq_ignore_ascii_case("100-continue");
            }
        }
        if head.chunked && head.content_length.is_some() {
            // Two framings at once is how requests are smuggled past proxies.
            return Err(HeadError::Malformed(
                "both content-length and transfer-encoding",
            ));
        }
        Ok(head)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}
