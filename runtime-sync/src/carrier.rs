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
