//! Shared fixtures for the onion packet tests: a small set of relays with keys and filters.
#![allow(dead_code)]

use proto_core::keys::OnionKey;
use proto_core::packet::PathHop;
use proto_core::replay::{BUCKETS, ReplayFilter};
use proto_core::{Epoch, NodeId, Timestamp};

/// A relay as the tests see it: identity, onion key and its own replay filter.
pub struct Relay {
    pub id: NodeId,
    pub key: OnionKey,
    pub replay: ReplayFilter<Vec<u64>>,
}

impl Relay {
    /// Relay `i` with fixed, distinct key material.
    pub fn fixed(i: u8) -> Self {
        Relay {
            id: NodeId([0xA0 + i; 32]),
            key: OnionKey::from_secret_bytes([i + 1; 32], Epoch(1)),
            replay: ReplayFilter::new(vec![0u64; BUCKETS * 64]).expect("valid shape"),
        }
    }

    /// Peels `buf` at this relay.
    pub fn peel<'a>(
        &mut self,
        now: Timestamp,
        buf: &'a mut [u8; proto_core::PACKET_LEN],
    ) -> Result<proto_core::Peeled<'a>, proto_core::PeelError> {
        proto_core::packet::peel(&self.key, &mut self.replay, now, buf)
    }

    pub fn hop(&self) -> PathHop {
        PathHop {
            node: self.id,
            onion_key: self.key.public(),
        }
    }
}

pub fn relays(n: u8) -> Vec<Relay> {
    (0..n).map(Relay::fixed).collect()
}

/// A fixed "now" and an expiry one minute later.
pub const NOW: Timestamp = Timestamp(1_800_000_000_000);
pub const EXPIRY: Timestamp = Timestamp(1_800_000_060_000);
