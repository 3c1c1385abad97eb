//! Carries the node's exchanges with ureq on a pool of worker threads: a thread is
//! started when every worker is busy (up to [`MAX_WORKERS`]) and ends after
//! 30 s without work; connections to other nodes are kept alive and reused by
//! the shared agent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ghost_host::config::HttpSection;
use ghost_host::driver::{Carrier, Exchange};
use ghost_host::service::MAX_ANSWER_BYTES;
use ghost_host::tls::Links;
use ghost_host::tls::blocking::Agents;
use proto_core::TlsKeyHash;
use proto_core::node::{Endpoint, TransmitFailure};

/// Most exchanges carried at once; more wait in the queue (the core times them out).
pub const MAX_WORKERS: usize = 256;
/// How long a worker waits for work before it ends.
const IDLE_WORKER: Duration = Duration::from_secs(30);
/// Longest a pooled connection is reused: well under the header timeout other nodes
/// apply to idle keep-alive connections, so a reused connection is still open.
const MAX_IDLE_AGE: Duration = Duration::from_secs(5);

/// The ureq-based [`Carrier`].
pub struct UreqCarrier {
    queue: Sender<Exchange>,
    shared: Arc<Shared>,
}

struct Shared {
    work: Mutex<Receiver<Exchange>>,
    agents: Agents,
    workers: AtomicUsize,
    idle: AtomicUsize,
}

impl UreqCarrier {
    /// A carrier with the timeout and pool size of `http`, calling over `links`.
    #[must_use]
    pub fn new(http: &HttpSection, links: Links) -> Arc<Self> {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(http.peer_timeout()))
            .http_status_as_error(false)
            .max_idle_connections_per_host(http.peer_idle_connections)
            .max_idle_age(MAX_IDLE_AGE)
            .build();
        let (queue, work) = mpsc::channel();
        Arc::new(Self {
            queue,
            shared: Arc::new(Shared {
                work: Mutex::new(work),
                agents: Agents::new(config, links),
                workers: AtomicUsize::new(0),
                idle: AtomicUsize::new(0),
            }),
        })
    }
}

impl Carrier for UreqCarrier {
    fn carry(&self, exchange: Exchange) {
        if self.queue.send(exchange).is_err() {
            return;
        }
        let shared = &self.shared;
        if shared.idle.load(Ordering::SeqCst) > 0 {
            return;
        }
        // Every worker is busy: one more, unless at the maximum (then a busy worker gets
        // to this exchange when it is done).
        if shared.workers.fetch_add(1, Ordering::SeqCst) >= MAX_WORKERS {
            shared.workers.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        let worker = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("exchange".into())
            .stack_size(256 * 1024)
            .spawn(move || worker.work());
        if spawned.is_err() {
            shared.workers.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Shared {
    fn work(&self) {
        loop {
            self.idle.fetch_add(1, Ordering::SeqCst);
            let next = self
                .work
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .recv_timeout(IDLE_WORKER);
            self.idle.fetch_sub(1, Ordering::SeqCst);
            match next {
                Ok(Exchange {
                    address,
                    tls_key_hash,
                    endpoint,
                    body,
                    done,
                }) => done.finish(self.exchange(&address, tls_key_hash, endpoint, &body)),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        self.workers.fetch_sub(1, Ordering::SeqCst);
    }

    fn exchange(
        &self,
        address: &str,
        tls_key_hash: Option<TlsKeyHash>,
        endpoint: Endpoint,
        body: &[u8],
    ) -> Result<Vec<u8>, TransmitFailure> {
        let path = match endpoint {
            Endpoint::Onion => "/v1/onion",
            Endpoint::Peer => "/v1/peer",
        };
        let mut response = self
            .agents
            .agent(tls_key_hash)
            .post(&self.agents.url(address, path))
            .header("content-type", "application/octet-stream")
            .send(body)
            .map_err(|e| match e {
                ureq::Error::Timeout(_) => TransmitFailure::Timeout,
                e => {
                    tracing::debug!(%address, error = %e, "no link");
                    TransmitFailure::Unreachable
                }
            })?;
        let status = response.status();
        if !status.is_success() {
            // A refusal (429, 4xx) carries no reply layer: the core reports it as such.
            return Err(TransmitFailure::Refused {
                status: status.as_u16(),
            });
        }
        response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES as u64)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::Timeout(_) => TransmitFailure::Timeout,
                _ => TransmitFailure::Unreachable,
            })
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    use ghost_host::tls::{TlsKey, TlsLinks};

    use super::*;

    /// A one-connection peer on loopback that reads one request and answers with
    /// `head` followed by `body_len` bytes of body (written in chunks, stopping quietly
    /// when the carrier hangs up), or never answers when `head` is `None`.
    fn hostile_peer(head: Option<String>, body_len: usize) -> (String, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        let address = listener.local_addr().expect("bound").to_string();
        let peer = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("the carrier connects");
            let mut reader = BufReader::new(stream);
            let mut content_length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    content_length = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut request_body = vec![0u8; content_length];
            let _ = reader.read_exact(&mut request_body);
            let mut stream = reader.into_inner();
            let Some(head) = head else {
                // Silent: hold the connection until the carrier gives up.
                let _ = stream.read_to_end(&mut Vec::new());
                return;
            };
            let _ = stream.write_all(head.as_bytes());
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            while sent < body_len {
                let n = chunk.len().min(body_len - sent);
                if stream.write_all(&chunk[..n]).is_err() {
                    return;
                }
                sent += n;
            }
        });
        (address, peer)
    }

    fn carrier(peer_timeout_ms: u64) -> Arc<UreqCarrier> {
        // Hostile peers here speak plain HTTP; the carrier's answer cap is the same
        // inside TLS.
        UreqCarrier::new(
            &HttpSection {
                peer_timeout_ms,
                ..HttpSection::default()
            },
            Links::InsecurePlaintext,
        )
    }

    #[test]
    fn a_peer_answering_more_than_the_cap_is_cut_off_as_unreachable() {
        let too_long = MAX_ANSWER_BYTES * 4;
        for head in [
            format!("HTTP/1.1 200 OK\r\ncontent-length: {too_long}\r\n\r\n"),
            // No length announced: the carrier must still stop reading at the cap.
            "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_owned(),
        ] {
            let (address, peer) = hostile_peer(Some(head.clone()), too_long);
            let got = carrier(20_000)
                .shared
                .exchange(&address, None, Endpoint::Peer, b"envelope");
            assert_eq!(got, Err(TransmitFailure::Unreachable), "{head}");
            peer.join()
                .expect("the peer ends once the carrier hangs up");
        }
    }

    #[test]
    fn a_peer_answering_exactly_the_cap_is_read_whole() {
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {MAX_ANSWER_BYTES}\r\n\r\n");
        let (address, peer) = hostile_peer(Some(head), MAX_ANSWER_BYTES);
        let got = carrier(20_000)
            .shared
            .exchange(&address, None, Endpoint::Peer, b"envelope");
        assert_eq!(got.map(|b| b.len()), Ok(MAX_ANSWER_BYTES));
        peer.join().expect("the peer ends");
    }

    /// A one-connection TLS peer presenting `key` and asking for a client certificate:
    /// answers one request with `ok`; the thread returns the client's key hash, or the
    /// handshake's error.
    fn tls_peer(key: TlsKey) -> (String, JoinHandle<Result<[u8; 32], String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        let address = listener.local_addr().expect("bound").to_string();
        let config = ghost_host::tls::server_config(&key, ghost_host::tls::ClientAuth::Required)
            .expect("a server config");
        let peer = std::thread::spawn(move || {
            let (sock, _) = listener.accept().map_err(|e| e.to_string())?;
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            let conn = rustls::ServerConnection::new(config).map_err(|e| e.to_string())?;
            let mut tls = rustls::StreamOwned::new(conn, sock);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                tls.read_exact(&mut byte).map_err(|e| e.to_string())?;
                head.push(byte[0]);
            }
            let client = tls
                .conn
                .peer_certificates()
                .and_then(ghost_host::tls::peer_key_hash)
                .ok_or("no client certificate")?;
            tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .map_err(|e| e.to_string())?;
            tls.conn.send_close_notify();
            let _ = tls.flush();
            Ok(client)
        });
        (address, peer)
    }

    #[test]
    fn a_tls_peer_is_reached_only_with_the_key_its_descriptor_names() {
        let seed = |b: u8| TlsKey::from_secret_bytes(&[b; 32]);
        let own = seed(0xb0);
        let own_hash = own.key_hash();
        let links = Links::Tls(Arc::new(TlsLinks::for_node(own).expect("links")));
        let carrier = UreqCarrier::new(&HttpSection::default(), links);

        // The peer's real key: answered, and the peer saw this node's own certificate.
        let (address, peer) = tls_peer(seed(0xa0));
        let pin = Some(TlsKeyHash(seed(0xa0).key_hash()));
        let got = carrier
            .shared
            .exchange(&address, pin, Endpoint::Peer, b"envelope");
        assert_eq!(got, Ok(b"ok".to_vec()));
        assert_eq!(peer.join().expect("the peer ends"), Ok(own_hash));

        // Something else at the address (another node's key, a man in the middle's):
        // the handshake fails and nothing is sent.
        let (address, peer) = tls_peer(seed(0xc0));
        let got = carrier
            .shared
            .exchange(&address, pin, Endpoint::Peer, b"envelope");
        assert_eq!(got, Err(TransmitFailure::Unreachable));
        assert!(peer.join().expect("the peer ends").is_err());
    }

    #[test]
    fn a_refusing_peer_is_refused_with_its_status_and_a_silent_one_times_out() {
        let head = "HTTP/1.1 429 Too Many Requests\r\ncontent-length: 2\r\n\r\n".to_owned();
        let (address, peer) = hostile_peer(Some(head), 2);
        let got = carrier(20_000)
            .shared
            .exchange(&address, None, Endpoint::Peer, b"envelope");
        assert_eq!(got, Err(TransmitFailure::Refused { status: 429 }));
        peer.join().expect("the peer ends");

        let (address, peer) = hostile_peer(None, 0);
        let got = carrier(300)
            .shared
            .exchange(&address, None, Endpoint::Onion, b"packet");
        assert_eq!(got, Err(TransmitFailure::Timeout));
        peer.join()
            .expect("the peer ends once the carrier hangs up");
    }
}
