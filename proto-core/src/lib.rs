//! The GhostNodes protocol core: every rule of the relay network, with no I/O.
//!
//! `proto-core` is `#![no_std]`. It never touches sockets, files, clocks, threads or
//! environment variables: time comes in as a [`Timestamp`] argument, randomness as a
//! caller-owned [`rand_core::CryptoRng`], and buffers are caller-owned slices. Runtimes read
//! bytes, hand them to the core, and carry out what it returns.
//!
//! Features: `alloc` enables the parts that need collections (ring, store, node state
//! machine, client state machine); `std` adds `std::error::Error` impls; `sim` adds the
//! deterministic network simulation (tests and tools only, never production builds). The
//! onion packet path (build, peel, replay filter, reply layers) needs none of them and
//! never allocates.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod keys;
pub mod packet;
pub mod replay;
pub mod reply;
pub mod sealed;
pub mod types;

pub use keys::{
    Address, Descriptor, DescriptorError, IdentityKey, OnionKey, OnionPublicKey,
    UnverifiedDescriptor,
};
pub use packet::{
    BuildError, MAX_HOPS, MAX_PAYLOAD, PACKET_LEN, PathHop, PathKeys, PeelError, Peeled, build,
    peel,
};
pub use replay::ReplayFilter;
pub use reply::{HopFailure, Opened, ReplyError, ReplyKey, ReplyStatus};
pub use sealed::{Contact, EncryptionKey, EncryptionPublicKey, SEAL_OVERHEAD, SealError};
pub use types::{Epoch, MessageHash, Namespace, NodeId, RecipientId, Timestamp, TlsKeyHash};

#[cfg(feature = "alloc")]
pub mod client;
#[cfg(feature = "alloc")]
pub mod directory;
#[cfg(feature = "alloc")]
pub mod fragment;
#[cfg(feature = "alloc")]
pub mod node;
#[cfg(feature = "alloc")]
pub mod peer;
#[cfg(feature = "alloc")]
pub mod ratelimit;
#[cfg(feature = "alloc")]
pub mod request;
#[cfg(feature = "alloc")]
pub mod ring;
#[cfg(feature = "alloc")]
pub mod seen;
#[cfg(feature = "sim")]
pub mod sim;
#[cfg(feature = "alloc")]
pub mod store;
#[cfg(feature = "alloc")]
pub mod wire;
