//! Handshake and round-trip costs of the RustCrypto provider on loopback.
//! `cargo run --release -p ghost-host --example tls_cost -- [HANDSHAKES] [ROUND_TRIPS]`

mod harness;

use std::sync::Arc;

use ghost_host::tls::{ClientAuth, TlsKey, client_config, server_config};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rustls::client::Resumption;
use rustls::server::ServerSessionMemoryCache;

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().unwrap());
    let handshakes = args.next().unwrap_or(200);
    let round_trips = args.next().unwrap_or(20_000);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (server_key, client_key) = (TlsKey::generate(&mut rng), TlsKey::generate(&mut rng));
    let hash = server_key.key_hash();
    let server_optional = server_config(&server_key, ClientAuth::Optional).unwrap();
    let server_required = server_config(&server_key, ClientAuth::Required).unwrap();
    let anonymous = client_config(hash, None).unwrap();
    let mutual = client_config(hash, Some(&client_key)).unwrap();

    // For comparison only: what stateful TLS 1.3 resumption would save.
    let mut resuming_server = (*server_required).clone();
    resuming_server.session_storage = ServerSessionMemoryCache::new(256);
    resuming_server.send_tls13_tickets = 1;
    let mut resuming_client = (*mutual).clone();
    resuming_client.resumption = Resumption::in_memory_sessions(256);

    // Warm-up (page faults, allocator, CPU frequency), not printed.
    harness::handshakes(
        "warm-up",
        Some((server_required.clone(), mutual.clone())),
        handshakes,
    );

    harness::header();
    harness::handshakes("plain TCP: connect + 1-byte exchange", None, handshakes).print();
    harness::handshakes(
        "RustCrypto: handshake, server auth only",
        Some((server_optional.clone(), anonymous.clone())),
        handshakes,
    )
    .print();
    harness::handshakes(
        "RustCrypto: handshake, mutual",
        Some((server_required.clone(), mutual.clone())),
        handshakes,
    )
    .print();
    harness::handshakes(
        "RustCrypto: resumed, mutual (not used)",
        Some((Arc::new(resuming_server), Arc::new(resuming_client))),
        handshakes,
    )
    .print();
    harness::round_trips(
        "RustCrypto: 2 KiB request + 2 KiB response",
        Some((server_required, mutual)),
        round_trips,
    )
    .print();
    harness::round_trips(
        "plain TCP: 2 KiB request + 2 KiB response",
        None,
        round_trips,
    )
    .print();
    primitives();
}

/// Mean µs of `f` over `n` calls on this thread's CPU clock.
fn micro(name: &str, n: usize, mut f: impl FnMut()) {
    let start = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    for _ in 0..n {
        f();
    }
    let end = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    let ns = |s: &str| s.split_whitespace().next().unwrap().parse::<u64>().unwrap();
    println!(
        "| {name:<40} | {:>8.2} |",
        (ns(&end) - ns(&start)) as f64 / 1000.0 / n as f64
    );
}

/// Where a handshake's and a record's crypto time goes (the primitives under the provider).
pub fn primitives() {
    use chacha20poly1305::aead::{AeadInOut, KeyInit};
    use ed25519_dalek::{Signer, Verifier};
    println!("\n| primitive (RustCrypto, this machine) | µs CPU |\n|---|---:|");
    let sk = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let vk = sk.verifying_key();
    let msg = [1u8; 130];
    let sig = sk.sign(&msg);
    micro("Ed25519 sign (TLS 1.3 CertificateVerify)", 2000, || {
        std::hint::black_box(sk.sign(std::hint::black_box(&msg)));
    });
    micro("Ed25519 verify_strict", 2000, || {
        std::hint::black_box(vk.verify_strict(std::hint::black_box(&msg), &sig).is_ok());
    });
    micro("Ed25519 verify", 2000, || {
        std::hint::black_box(vk.verify(std::hint::black_box(&msg), &sig).is_ok());
    });
    let peer = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([9u8; 32]));
    micro("X25519 keygen + DH", 2000, || {
        let s = x25519_dalek::StaticSecret::from(std::hint::black_box([3u8; 32]));
        let p = x25519_dalek::PublicKey::from(&s);
        std::hint::black_box((p, s.diffie_hellman(&peer).to_bytes()));
    });
    let aead = chacha20poly1305::ChaCha20Poly1305::new_from_slice(&[5; 32]).unwrap();
    let mut buf = vec![0u8; 2048];
    micro("ChaCha20-Poly1305 seal 2 KiB", 20000, || {
        let nonce = [0u8; 12].into();
        std::hint::black_box(
            aead.encrypt_inout_detached(&nonce, b"aad12", buf.as_mut_slice().into())
                .unwrap(),
        );
    });
}
