//! The async GhostNodes node on smol + async-io: sockets, HTTP, timers and disk around the
//! `proto-core` state machine, and the client side the `ghost` CLI is built on.
//!
//! Parts: the disk-backed message store ([`redb_store::RedbBackend`]), the host
//! ([`host::Host`]) that serves the HTTP API over HTTP/1.1 (hyper on smol), carries out the
//! node's outgoing exchanges, drives its timers, group-commits the store and shuts down
//! gracefully; the route table and JSON bodies ([`api`]); configuration ([`config`]);
//! Prometheus metrics ([`metrics`]); and the client ([`client`]) that finds paths and
//! swarms and sends requests through three hops. Binaries: `ghostnode` (one node) and
//! `ghost` (keys, a local network, send, fetch).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod client;
pub mod config;
pub mod host;
pub mod local;
pub mod metrics;
pub mod redb_store;
