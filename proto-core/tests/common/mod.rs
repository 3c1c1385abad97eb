//! Shared fixtures for the onion packet and vector tests: a small set of relays with keys
//! and filters, the vectors' predictable RNG and hex rendering.
#![allow(dead_code)]

use std::convert::Infallible;
use std::fmt::Write as _;

use proto_core::keys::OnionKey;
use proto_core::packet::PathHop;
use proto_core::replay::{BUCKETS, ReplayFilter};
use proto_core::{Epoch, NodeId, Timestamp};
use rand_core::{TryCryptoRng, TryRng};

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

/// The vectors' "randomness": byte k of the stream is `k mod 256`. Predictable on
/// purpose, so anyone can reproduce the vectors; never use it for real packets.
pub struct CountingRngForTestVectorsOnly(pub u8);

impl TryRng for CountingRngForTestVectorsOnly {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for b in dst {
            *b = self.0;
            self.0 = self.0.wrapping_add(1);
        }
        Ok(())
    }
}

impl TryCryptoRng for CountingRngForTestVectorsOnly {}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Bytes of lowercase or uppercase hex (the vector files' own text, trusted to be hex).
pub fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Compares `rendered` with the committed vector file at `path`, failing with
/// `changed` when they differ; with `GHOST_UPDATE_VECTORS` set it rewrites the file
/// instead (a deliberate protocol change).
pub fn matches_committed_file(path: &str, rendered: &str, changed: &str) {
    if std::env::var_os("GHOST_UPDATE_VECTORS").is_some() {
        std::fs::write(path, rendered).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}; regenerate with GHOST_UPDATE_VECTORS=1"));
    assert!(
        committed == rendered,
        "{changed}: the vectors in {path} no longer match"
    );
}
