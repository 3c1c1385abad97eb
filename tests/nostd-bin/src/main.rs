//! Links `proto-core` (default features: no `alloc`, no `std`) into a `#![no_std]`
//! binary and runs the whole packet path, proving no std leaks into the hot path.
#![no_std]
#![no_main]

use core::convert::Infallible;
use core::panic::PanicInfo;

use proto_core::keys::OnionKey;
use proto_core::packet::{self, PACKET_LEN, PathHop, Peeled};
use proto_core::replay::{BUCKETS, ReplayFilter};
use proto_core::reply::{self, Opened, ReplyKey, ReplyStatus};
use proto_core::{Epoch, NodeId, Timestamp};
use rand_core::{TryCryptoRng, TryRng};

// libc provides memcpy/memset and the C start files that call `main`.
#[link(name = "c")]
unsafe extern "C" {}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    loop {}
}

// The precompiled `core` for this target is built with unwinding and references this
// symbol even though this binary aborts on panic.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

/// A counter-based generator so the binary needs no OS entropy. NOT FOR PRODUCTION: the
/// ephemeral keys it yields are predictable.
struct CounterRngNotForProduction(u64);

impl TryRng for CounterRngNotForProduction {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        self.try_next_u64().map(|x| x as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Ok(z ^ (z >> 31))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let x = self.try_next_u64()?.to_le_bytes();
            chunk.copy_from_slice(&x[..chunk.len()]);
        }
        Ok(())
    }
}

impl TryCryptoRng for CounterRngNotForProduction {}

const NOW: Timestamp = Timestamp(1_800_000_000_000);
const PAYLOAD: &[u8] = b"no_std says hello";
const RESPONSE: &[u8] = b"no_std reply";
/// The reply length the packet asks for (the smallest bucket).
const REPLY_LEN: usize = 1024;

fn run() -> bool {
    let keys = [
        OnionKey::from_secret_bytes([1; 32], Epoch(1)),
        OnionKey::from_secret_bytes([2; 32], Epoch(1)),
        OnionKey::from_secret_bytes([3; 32], Epoch(1)),
    ];
    let ids = [NodeId([0xA0; 32]), NodeId([0xA1; 32]), NodeId([0xA2; 32])];
    let path = [
        PathHop {
            node: ids[0],
            onion_key: keys[0].public(),
        },
        PathHop {
            node: ids[1],
            onion_key: keys[1].public(),
        },
        PathHop {
            node: ids[2],
            onion_key: keys[2].public(),
        },
    ];
    let mut rng = CounterRngNotForProduction(42);
    let mut buf = [0u8; PACKET_LEN];
    let expiry = packet::grid_expiry(NOW, 30_000);
    let Ok(client) = packet::build(&path, PAYLOAD, expiry, REPLY_LEN, &mut rng, &mut buf) else {
        return false;
    };
    let mut hop_keys: [ReplyKey; 3] = Default::default();
    for (i, key) in keys.iter().enumerate() {
        let Ok(mut filter) = ReplayFilter::new([0u64; BUCKETS * 64]) else {
            return false;
        };
        match packet::peel(key, &mut filter, NOW, &mut buf) {
            Ok(Peeled::Forward {
                next_hop,
                reply_key,
                reply_len,
                ..
            }) if i < 2 && next_hop == ids[i + 1] && reply_len == REPLY_LEN => {
                hop_keys[i] = reply_key;
            }
            Ok(Peeled::Deliver {
                payload,
                reply_key,
                reply_len,
            }) if i == 2 && payload == PAYLOAD && reply_len == REPLY_LEN => {
                hop_keys[i] = reply_key;
            }
            _ => return false,
        }
    }
    let mut wire = [0u8; REPLY_LEN];
    if reply::seal(&hop_keys[2], ReplyStatus::Response, RESPONSE, &mut wire).is_err() {
        return false;
    }
    for key in hop_keys[..2].iter().rev() {
        if reply::add_layer(key, &mut wire, REPLY_LEN).is_err() {
            return false;
        }
    }
    matches!(
        reply::open(client.reply_keys(), &mut wire),
        Ok(Opened::Response { body }) if body == RESPONSE
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: isize, _argv: *const *const u8) -> isize {
    if run() { 0 } else { 1 }
}
