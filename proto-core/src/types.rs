//! Newtypes shared by every module of the core: identifiers, time and epochs.
//!
//! This module owns no logic beyond construction and formatting. It never reads a clock:
//! [`Timestamp`] values come from the caller (the runtime's clock, or the simulation's
//! virtual clock), which is what lets the whole protocol be tested with virtual time.

use core::fmt;

/// Milliseconds since the Unix epoch, as handed to the core by its caller.
///
/// The core never reads a clock; every time-dependent decision takes a `Timestamp`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The timestamp `ms` milliseconds later, saturating at `u64::MAX`.
    #[must_use]
    pub const fn plus_millis(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, or 0 when `earlier` is later.
    #[must_use]
    pub const fn millis_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// Rotation counter of a node's onion key: a descriptor with a higher epoch supersedes one
/// with a lower epoch for the same identity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u32);

/// Eight bytes as a big-endian integer (`chunk` is exactly eight bytes long).
#[inline]
fn be_u64(chunk: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(chunk);
    u64::from_be_bytes(bytes)
}

macro_rules! byte_id {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name(pub [u8; $len]);

        // Byte order (lexicographic), compared eight bytes at a time: these are B-tree
        // keys in the store and the ring, where a call to `memcmp` per comparison was a
        // large part of an insert.
        impl Ord for $name {
            #[inline]
            fn cmp(&self, other: &Self) -> core::cmp::Ordering {
                const { assert!($len % 8 == 0) };
                for (a, b) in self.0.chunks_exact(8).zip(other.0.chunks_exact(8)) {
                    let (a, b) = (be_u64(a), be_u64(b));
                    if a != b {
                        return a.cmp(&b);
                    }
                }
                core::cmp::Ordering::Equal
            }
        }

        impl PartialOrd for $name {
            #[inline]
            fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl $name {
            /// Length of the identifier in bytes.
            pub const LEN: usize = $len;

            /// The raw bytes.
            #[must_use]
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl From<[u8; $len]> for $name {
            fn from(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in &self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Eight hex digits identify a key in logs without flooding them.
                write!(f, concat!(stringify!($name), "("))?;
                for b in &self.0[..4] {
                    write!(f, "{b:02x}")?;
                }
                write!(f, "..)")
            }
        }
    };
}

byte_id!(
    /// A relay node's identity: its Ed25519 identity public key.
    NodeId,
    32
);
byte_id!(
    /// A message recipient's identity: an Ed25519 public key whose holder may retrieve and
    /// delete the recipient's messages.
    RecipientId,
    32
);
byte_id!(
    /// SHA-256 of a node's 32-byte Ed25519 TLS public key, as its descriptor publishes it:
    /// what a link to the node is pinned to.
    TlsKeyHash,
    32
);
byte_id!(
    /// SHA-256 of a stored message, the key that deduplicates stores and replication.
    MessageHash,
    32
);

/// A recipient's message namespace. Namespaces below [`Namespace::FIRST_OWNER_ONLY`] accept
/// deposits from anyone (direct messages live in [`Namespace::DIRECT`]); from it upwards
/// every operation, stores included, must be signed by the recipient's key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Namespace(pub u16);

impl Namespace {
    /// Where senders deposit direct messages, unsigned.
    pub const DIRECT: Namespace = Namespace(0);
    /// The first namespace whose every operation needs the owner's signature.
    pub const FIRST_OWNER_ONLY: u16 = 0x8000;

    /// Whether storing into this namespace needs the recipient's signature.
    #[must_use]
    pub const fn requires_owner_signature(self) -> bool {
        self.0 >= Self::FIRST_OWNER_ONLY
    }
}

#[cfg(test)]
mod tests {
    use core::cmp::Ordering;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn ids_order_exactly_as_their_bytes(
            a in any::<[u8; 32]>(),
            b in any::<[u8; 32]>(),
            shared in 0usize..=32,
        ) {
            // A shared prefix makes every chunk, and equality, decide some cases.
            let mut b = b;
            b[..shared].copy_from_slice(&a[..shared]);
            prop_assert_eq!(MessageHash(a).cmp(&MessageHash(b)), a.cmp(&b));
            prop_assert_eq!(RecipientId(b).partial_cmp(&RecipientId(a)), Some(b.cmp(&a)));
            prop_assert_eq!(NodeId(a).cmp(&NodeId(a)), Ordering::Equal);
        }
    }
}
