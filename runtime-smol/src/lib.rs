//! The async GhostNodes node on smol + async-io: sockets, HTTP, timers and disk around the
//! `proto-core` state machine.
//!
//! Built so far: the disk-backed message store ([`redb_store::RedbBackend`]), the host
//! ([`host::Host`]) that serves `POST /v1/onion`, `POST /v1/peer` and `GET /health` over
//! HTTP/1.1 (hyper on smol), carries out the node's outgoing exchanges, drives its timers
//! and group-commits the store, and the `ghostnode` binary (flags and environment, identity
//! key kept in the data directory). Not yet: a TOML config file, metrics, graceful
//! shutdown and the `ghost` CLI.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod host;
pub mod redb_store;
