//! The `ghost` command line's library: the client side of GhostNodes over blocking HTTP,
//! and local networks of node processes. No node logic lives here.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod bench;
pub mod client;
pub mod local;
