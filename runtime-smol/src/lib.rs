//! The async GhostNodes node on smol + async-io: sockets and HTTP around the
//! runtime-neutral host ([`ghost_host`]), and the client side the `ghost` CLI is built on.
//!
//! Parts: [`host`], hyper's HTTP/1.1 server on smol for the node's two listeners and the
//! pooled client that carries its exchanges; the client ([`client`]) that finds paths and
//! swarms and sends requests through three hops; and [`local`], a network of node
//! processes on loopback. Binaries: `ghostnode` (one node) and `ghost` (keys, a local
//! network, send, fetch).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod client;
pub mod host;
pub mod local;

pub use ghost_host::{api, config, metrics, redb_store};
