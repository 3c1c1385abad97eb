//! The blocking GhostNodes node on tiny_http + threads: the same protocol and wire as
//! `runtime-smol`, for platforms where an async runtime is unwelcome.
//!
//! Not implemented yet: this crate holds its place in the workspace layout. Nothing here
//! runs a node today.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
