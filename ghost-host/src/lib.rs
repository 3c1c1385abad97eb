//! The runtime-neutral GhostNodes node host: everything a node binary needs except
//! sockets and HTTP framing, written once for every runtime.
//!
//! Parts: the route table, JSON bodies and error names ([`api`]); configuration
//! ([`config`]); Prometheus metrics ([`metrics`]); the disk-backed message store
//! ([`redb_store::RedbBackend`]); the node driver ([`driver`]), one thread that owns the
//! [`proto_core::node::Node`] and is fed by a channel; the answers to every route
//! ([`service::Host`]); the peers file ([`peers`]); and start-up, signals and stop
//! ([`start`]). A runtime (`runtime-smol`, `runtime-sync`) reads requests off its
//! sockets, hands them to [`service::Host`], writes the [`service::Answer`] back, and
//! carries the node's outgoing exchanges ([`driver::Carrier`]).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod config;
pub mod driver;
pub mod metrics;
pub mod peers;
pub mod process;
pub mod redb_store;
pub mod service;
pub mod start;
pub mod tls;
pub mod write_behind;

pub use driver::now;
