//! The async GhostNodes node (`ghostnode`) on smol + async-io: sockets, HTTP, timers, disk
//! and config around the `proto-core` state machine.
//!
//! Not implemented yet: this crate holds its place in the workspace layout. Nothing here
//! runs a node today.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
