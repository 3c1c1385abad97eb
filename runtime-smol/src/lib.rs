//! The async GhostNodes node (`ghostnode`) on smol + async-io: sockets, HTTP, timers, disk
//! and config around the `proto-core` state machine.
//!
//! Built so far: the disk-backed message store ([`redb_store::RedbBackend`]). The HTTP
//! server, the run loop and the `ghostnode` binary are not written yet.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod redb_store;
