//! Blocking HTTP over our links with ureq: one agent per pinned key, each with its own
//! keep-alive pool, whose connector wraps ureq's TCP transport in our rustls client
//! config (ureq's own TLS support builds its config from CA roots, which we have none of).

use std::io::{Read, Write};
use std::sync::{Arc, Mutex, PoisonError};

use proto_core::TlsKeyHash;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, TcpConnector,
    Transport, TransportAdapter,
};

use rustls::pki_types::ServerName;

use super::{Links, PerGeneration, server_name};

/// Most agents kept, one per pinned key; past it the cache starts over.
const MAX_AGENTS: usize = 4096;

/// ureq agents for `links`, by pinned key.
pub struct Agents {
    config: ureq::config::Config,
    links: Links,
    agents: Mutex<AgentsOf>,
}

/// The agents made since the node's TLS keys last changed: after a rotation, agents (and
/// their pooled connections) presenting the previous certificate are dropped.
type AgentsOf = PerGeneration<Option<[u8; 32]>, ureq::Agent>;

impl Agents {
    /// Agents with ureq settings `config` over `links`.
    #[must_use]
    pub fn new(config: ureq::config::Config, links: Links) -> Self {
        Self {
            config,
            links,
            agents: Mutex::default(),
        }
    }

    /// The URL of `path` at `address` (`host:port`) over these links.
    #[must_use]
    pub fn url(&self, address: &str, path: &str) -> String {
        format!("{}://{address}{path}", self.links.scheme())
    }

    /// The agent for a node whose descriptor names `pin` (`None`: a seed known by address
    /// alone). Plaintext links have one agent for every node.
    #[must_use]
    pub fn agent(&self, pin: Option<TlsKeyHash>) -> ureq::Agent {
        let slot = match self.links {
            Links::Tls(_) => pin.map(|p| p.0),
            Links::InsecurePlaintext => None,
        };
        let generation = self.links.generation();
        let mut agents = self.agents.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(by_pin) = agents.of(generation) {
            if let Some(agent) = by_pin.get(&slot) {
                return agent.clone();
            }
            if by_pin.len() >= MAX_AGENTS {
                by_pin.clear();
            }
        }
        let agent = match self.links.client_config(pin) {
            Some(tls) => ureq::Agent::with_parts(
                self.config.clone(),
                ().chain(TcpConnector::default()).chain(PinnedTlsConnector {
                    config: tls,
                    name: server_name(pin),
                }),
                DefaultResolver::default(),
            ),
            None => self.config.clone().into(),
        };
        if let Some(by_pin) = agents.of(generation) {
            by_pin.insert(slot, agent.clone());
        }
        agent
    }
}

/// Wraps a TCP transport in TLS with a fixed client config (one pinned key), naming
/// that key by SNI.
#[derive(Debug)]
struct PinnedTlsConnector {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl<In: Transport> Connector<In> for PinnedTlsConnector {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let mut conn = ClientConnection::new(self.config.clone(), self.name.clone())
            .map_err(|e| ureq::Error::Io(std::io::Error::other(e)))?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)?;
        }
        Ok(Some(Either::B(TlsTransport {
            buffers: LazyBuffers::new(
                details.config.input_buffer_size(),
                details.config.output_buffer_size(),
            ),
            stream: StreamOwned::new(conn, sock),
        })))
    }
}

/// A TLS session over ureq's transport, as ureq's own rustls transport does it.
struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl std::fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsTransport")
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}
