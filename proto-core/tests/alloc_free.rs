//! The relay hot path never touches the heap: peel, reply sealing and reply layering are
//! run under a counting global allocator and must leave the count at zero.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::{EXPIRY, NOW, relays};
use proto_core::packet::{self, PACKET_LEN, Peeled};
use proto_core::reply::{self, ReplyStatus};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Counts allocations made by the current thread, so the test harness's other threads
/// cannot disturb the measurement.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_one() {
    // try_with: during thread teardown the slot may be gone; those allocations are not ours.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations_during<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (ALLOCATIONS.with(Cell::get) - before, out)
}

#[test]
fn counting_allocator_sees_allocations() {
    // Negative control: without it, a zero below could mean the counter is broken.
    let (n, v) = allocations_during(|| vec![1u8; 64]);
    assert!(n >= 1);
    assert_eq!(v.len(), 64);
}

#[test]
fn peel_and_reply_layers_perform_zero_heap_allocations() {
    let mut net = relays(3);
    let hops: Vec<_> = net.iter().map(|r| r.hop()).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut buf = [0u8; PACKET_LEN];
    packet::build(&hops, &[5u8; 1000], EXPIRY, 1024, &mut rng, &mut buf).unwrap();
    let mut reply_buf = vec![0u8; reply::MAX_REPLY_LEN];

    for (i, relay) in net.iter_mut().enumerate() {
        let (n, outcome) = allocations_during(|| match relay.peel(NOW, &mut buf) {
            Ok(Peeled::Forward {
                reply_key,
                reply_len,
                ..
            }) => reply::add_layer(&reply_key, &mut reply_buf[..reply_len], reply_len).map(|()| 0),
            Ok(Peeled::Deliver {
                reply_key,
                payload,
                reply_len,
            }) => {
                let body_len = payload.len();
                let status = ReplyStatus::Response;
                let out = &mut reply_buf[..reply_len];
                reply::seal(&reply_key, status, &[1u8; 900], out).map(|()| body_len)
            }
            Err(e) => panic!("honest packet refused: {e}"),
        });
        assert!(outcome.is_ok());
        assert_eq!(n, 0, "hop {i} allocated {n} times");
    }

    // Errors are allocation-free too: a tampered packet is dropped without the heap.
    let mut tampered = [0u8; PACKET_LEN];
    packet::build(&hops, b"x", EXPIRY, 1024, &mut rng, &mut tampered).unwrap();
    tampered[100] ^= 1;
    let (n, outcome) = allocations_during(|| net[0].peel(NOW, &mut tampered).is_err());
    assert!(outcome);
    assert_eq!(n, 0);
}
