//! Sealed-body test vectors (docs/PROTOCOL.md section 9): a fixed recipient and a fixed
//! RNG stream give exact sealed bytes, stored in `tests/vectors/sealed-v2.txt`.
//!
//! The test renders every vector with the real `sealed::seal` and compares it with the
//! committed file, then opens each sealed body read from the file alone, so another
//! implementation can check its sealing and its opening against the file. Any change to
//! the format, the padding or the key schedule changes these bytes: that is a protocol
//! change, and the file is regenerated deliberately with
//! `GHOST_UPDATE_VECTORS=1 cargo test -p proto-core --test sealed_vectors`.

use std::fmt::Write as _;

mod common;

use common::{CountingRngForTestVectorsOnly, hex, matches_committed_file, unhex};

use proto_core::IdentityKey;
use proto_core::sealed::{self, Contact, EncryptionKey};

const VECTOR_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/sealed-v2.txt");

/// The recipient: identity seed of 32 bytes of 42, encryption secret of 32 bytes of 0x43.
fn recipient() -> (IdentityKey, EncryptionKey) {
    (
        IdentityKey::from_seed(&[42; 32]),
        EncryptionKey::from_secret_bytes([0x43; 32]),
    )
}

/// The messages: empty, short, one byte past the first bucket, and the longest one store
/// takes.
fn messages() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("empty", Vec::new()),
        ("hello", b"hello".to_vec()),
        ("first_past_128", vec![0x61; 77]),
        (
            "longest_in_one_body",
            (0..sealed::MAX_MESSAGE_IN_ONE_BODY)
                .map(|i| i as u8)
                .collect(),
        ),
    ]
}

/// Renders every vector with the real sealing code.
fn render() -> String {
    let (identity, key) = recipient();
    let contact = Contact {
        recipient: identity.recipient_id(),
        encryption: key.public(),
    };
    let mut out = String::new();
    out.push_str(
        "# GhostNodes sealed-body test vectors, protocol v2. See docs/PROTOCOL.md section 9.\n",
    );
    out.push_str(
        "# Recipient: identity seed = 32 bytes of 42, encryption secret = 32 bytes of 0x43.\n",
    );
    out.push_str(
        "# RNG stream: byte k = k mod 256, restarted for each vector; the ephemeral secret is\n",
    );
    out.push_str(
        "# its first 32 bytes (clamped by X25519). sealed = eph_pk ‖ ct ‖ tag, where the\n",
    );
    out.push_str(
        "# plaintext is len (4) ‖ message ‖ zeros up to sealed_len(len) − 48 bytes; - is empty.\n",
    );
    writeln!(
        out,
        "recipient_id = {}",
        hex(identity.recipient_id().as_bytes())
    )
    .unwrap();
    writeln!(out, "encryption_public = {}", hex(&key.public().0)).unwrap();
    for (name, message) in messages() {
        let mut rng = CountingRngForTestVectorsOnly(0);
        let mut buf = vec![0u8; 2048];
        let n = sealed::seal(&contact, &message, &mut rng, &mut buf).unwrap();
        writeln!(out, "\n[{name}]").unwrap();
        let shown = if message.is_empty() {
            "-".to_owned()
        } else {
            hex(&message)
        };
        writeln!(out, "message = {shown}").unwrap();
        writeln!(out, "sealed_len = {n}").unwrap();
        writeln!(out, "sealed = {}", hex(&buf[..n])).unwrap();
    }
    out
}

#[test]
fn vectors_match_the_committed_file() {
    matches_committed_file(VECTOR_FILE, &render(), "sealed-body format changed");
}

#[test]
fn committed_sealed_bodies_open_from_the_file_alone() {
    let (identity, key) = recipient();
    let committed = std::fs::read_to_string(VECTOR_FILE).expect("vector file present");
    let mut opened = 0;
    for section in committed.split("\n[").skip(1) {
        let field = |k: &str| {
            section
                .lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(" = "))
                .unwrap_or_else(|| panic!("{k} missing in [{section}"))
        };
        let message = if field("message") == "-" {
            Vec::new()
        } else {
            unhex(field("message"))
        };
        let sealed_bytes = unhex(field("sealed"));
        assert_eq!(sealed_bytes.len().to_string(), field("sealed_len"));
        assert_eq!(sealed::sealed_len(message.len()), Some(sealed_bytes.len()));
        let mut out = vec![0u8; sealed_bytes.len()];
        let got = sealed::open(&identity.recipient_id(), &key, &sealed_bytes, &mut out)
            .expect("a committed vector opens");
        assert_eq!(got, &message[..]);
        // One flipped bit anywhere is refused.
        let mut bad = sealed_bytes.clone();
        bad[sealed_bytes.len() / 2] ^= 1;
        assert!(sealed::open(&identity.recipient_id(), &key, &bad, &mut out).is_err());
        opened += 1;
    }
    assert_eq!(opened, messages().len());
}
