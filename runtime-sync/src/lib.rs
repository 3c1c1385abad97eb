//! The blocking GhostNodes node: plain threads and sockets around the runtime-neutral
//! host ([`ghost_host`]), for platforms where an async runtime is unwelcome. Same
//! configuration, data directory, endpoints, metrics, error bodies and exit codes as
//! `runtime-smol`; the two interoperate in one network.
//!
//! Parts: [`server`], the HTTP/1.1 server (accept threads, a bounded set of connection
//! threads, limits); [`carrier`], the ureq client on worker threads that carries the
//! node's exchanges. Binary: `ghostnode-sync`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod carrier;
pub mod server;

use std::time::{Duration, Instant};

use ghost_host::api::Listener;
use ghost_host::service::MAX_ADMIN_CONNECTIONS;
use ghost_host::start::Started;
use ghost_host::tls::Links;

use crate::server::Acceptor;

/// Serves `started`'s listeners until `shutdown` yields, then stops accepting, lets
/// in-flight requests finish (up to the grace period) and stops the node driver (which
/// commits and closes the database).
pub fn serve(started: Started, shutdown: &std::sync::mpsc::Receiver<()>) -> Result<(), String> {
    let Started {
        host,
        listener,
        admin,
        driver,
        engine,
        links,
    } = started;
    if engine.is_some() {
        return Err(
            "the blocking runtime runs its node driver on a thread (DriverMode::Thread)".into(),
        );
    }
    let max = host.http().max_connections;
    let public = Acceptor::start(
        host.clone(),
        listener,
        Listener::Public,
        max,
        links.server_config(),
    )
    .map_err(|e| format!("cannot start accepting: {e}"))?;
    let admin = admin
        .map(|a| {
            Acceptor::start(
                host.clone(),
                a,
                Listener::Admin,
                MAX_ADMIN_CONNECTIONS,
                None,
            )
        })
        .transpose()
        .map_err(|e| format!("cannot start accepting admin connections: {e}"))?;
    let _ = shutdown.recv();
    public.stop();
    tracing::info!("shutting down: no new connections");
    let deadline = Instant::now() + Duration::from_millis(host.http().shutdown_grace_ms);
    while host.requests_in_flight() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let unfinished = host.requests_in_flight();
    if unfinished > 0 {
        tracing::warn!(
            unfinished,
            "grace period over with requests still in flight"
        );
    }
    if let Some(admin) = admin {
        admin.stop();
    }
    driver.stop();
    tracing::info!("stopped");
    Ok(())
}

/// A node served in-process: its driver thread and accept threads, with the public and
/// admin listeners already bound. What in-process tests start; the `ghostnode-sync`
/// binary goes through [`ghost_host::start`] instead. Drop the parts to stop it
/// (acceptors first).
pub fn spawn_node(
    node: ghost_host::driver::HostedNode,
    http: ghost_host::config::HttpSection,
    links: Links,
    listener: std::net::TcpListener,
    admin: std::net::TcpListener,
) -> std::io::Result<InProcess> {
    let tls = links.server_config();
    let carrier = carrier::UreqCarrier::new(&http, links);
    let driver =
        ghost_host::driver::spawn(node, carrier, ghost_host::driver::DriverSettings::default())?;
    let host = ghost_host::service::Host::new(driver.driver(), http);
    let max = host.http().max_connections;
    let public = Acceptor::start(host.clone(), listener, Listener::Public, max, tls)?;
    let admin = Acceptor::start(
        host.clone(),
        admin,
        Listener::Admin,
        MAX_ADMIN_CONNECTIONS,
        None,
    )?;
    Ok(InProcess {
        host,
        acceptors: vec![public, admin],
        driver: Some(driver),
    })
}

/// A node started by [`spawn_node`].
pub struct InProcess {
    /// Its service (counters, driver).
    pub host: ghost_host::service::Host,
    acceptors: Vec<Acceptor>,
    driver: Option<ghost_host::driver::DriverThread>,
}

impl Drop for InProcess {
    fn drop(&mut self) {
        for acceptor in self.acceptors.drain(..) {
            acceptor.stop();
        }
        if let Some(driver) = self.driver.take() {
            driver.stop();
        }
    }
}
