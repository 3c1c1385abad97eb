//! The async GhostNodes node on smol + async-io: sockets and HTTP around the
//! runtime-neutral host ([`ghost_host`]).
//!
//! [`host`] is hyper's HTTP/1.1 server on smol for the node's two listeners and the
//! pooled client that carries its exchanges. Binary: `ghostnode` (one node). The `ghost`
//! command line and the client it is built on live in `ghost-cli`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod host;

pub use ghost_host::{api, config, metrics, redb_store};
