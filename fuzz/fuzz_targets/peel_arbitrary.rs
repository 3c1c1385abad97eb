//! Peel of arbitrary bytes: never panics, and a random packet is never accepted (it
//! would need to forge a Poly1305 tag under a key derived from our onion secret).
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto_core::keys::OnionKey;
use proto_core::packet::{self, PACKET_LEN};
use proto_core::replay::{BUCKETS, ReplayFilter};
use proto_core::{Epoch, Timestamp};

fuzz_target!(|data: &[u8]| {
    let key = OnionKey::from_secret_bytes([7; 32], Epoch(1));
    let mut filter = ReplayFilter::new([0u64; BUCKETS * 8]).expect("valid shape");
    let mut buf = [0u8; PACKET_LEN];
    let n = data.len().min(PACKET_LEN);
    buf[..n].copy_from_slice(&data[..n]);
    let outcome = packet::peel(&key, &mut filter, Timestamp(1_800_000_000_000), &mut buf);
    assert!(outcome.is_err(), "an unauthenticated packet was accepted");
});
