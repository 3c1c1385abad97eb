//! Fragment test vectors (docs/PROTOCOL.md section 9.1): a fixed recipient and a fixed RNG
//! stream give exact inner bodies, message ids, fragments and sealed fragments, stored in
//! `tests/vectors/fragment-v2.txt`.
//!
//! The test renders every vector with the real `fragment::seal_message` and compares it
//! with the committed file; then, from the file alone, it opens every sealed fragment,
//! checks its header and plaintext, and puts the message back together with the real
//! `Inbox` from the fragments in reverse order. Any change to the format is a protocol
//! change: regenerate deliberately with
//! `GHOST_UPDATE_VECTORS=1 cargo test -p proto-core --all-features --test fragment_vectors`.
#![cfg(feature = "alloc")]

use std::fmt::Write as _;

mod common;

use common::{CountingRngForTestVectorsOnly, hex, matches_committed_file, unhex};

use proto_core::IdentityKey;
use proto_core::fragment::{
    self, FRAGMENT_BODY_LEN, FRAGMENT_HEADER_LEN, Inbox, InboxConfig, Received, StoredPart,
};
use proto_core::sealed::{self, Contact, EncryptionKey, OpenedBody};
use proto_core::store::message_hash;
use proto_core::{Namespace, Timestamp};
use sha2::{Digest, Sha256};

const VECTOR_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/fragment-v2.txt");

/// The recipient of `sealed-v2.txt`: identity seed of 32 bytes of 42, encryption secret of
/// 32 bytes of 0x43.
fn recipient() -> (IdentityKey, EncryptionKey) {
    (
        IdentityKey::from_seed(&[42; 32]),
        EncryptionKey::from_secret_bytes([0x43; 32]),
    )
}

/// The shortest message that is fragmented (two fragments), and one of three fragments
/// whose last chunk is short.
fn messages() -> Vec<(&'static str, Vec<u8>)> {
    let pattern = |len: usize| (0..len).map(|i| (i % 251) as u8).collect();
    vec![
        (
            "shortest_fragmented",
            pattern(sealed::MAX_MESSAGE_IN_ONE_BODY + 1),
        ),
        ("three_fragments", pattern(3000)),
    ]
}

/// Renders every vector with the real sealing and splitting code.
fn render() -> String {
    let (identity, key) = recipient();
    let contact = Contact {
        recipient: identity.recipient_id(),
        encryption: key.public(),
    };
    let mut out = String::new();
    for line in [
        "# GhostNodes fragment test vectors, protocol v2. See docs/PROTOCOL.md section 9.1.",
        "# Recipient: identity seed = 32 bytes of 42, encryption secret = 32 bytes of 0x43.",
        "# RNG stream: byte k = k mod 256, restarted for each message; the inner body's",
        "# ephemeral secret is its first 32 bytes, fragment i's the 32 after those of i - 1.",
        "# inner = seal(message); message_id = SHA-256(inner)[0..16]; fragment i plaintext =",
        "# message_id ‖ i (2) ‖ count (2) ‖ |inner| (4) ‖ chunk ‖ zeros (1340 bytes);",
        "# fragment i = seal_fragment(plaintext), 1392 bytes.",
    ] {
        out.push_str(line);
        out.push('\n');
    }
    writeln!(
        out,
        "recipient_id = {}",
        hex(identity.recipient_id().as_bytes())
    )
    .unwrap();
    writeln!(out, "encryption_public = {}", hex(&key.public().0)).unwrap();
    for (name, message) in messages() {
        // The inner body is what the first 32 bytes of the stream seal.
        let mut inner = vec![0u8; sealed::sealed_len(message.len()).unwrap()];
        sealed::seal(
            &contact,
            &message,
            &mut CountingRngForTestVectorsOnly(0),
            &mut inner,
        )
        .unwrap();
        let bodies =
            fragment::seal_message(&contact, &message, &mut CountingRngForTestVectorsOnly(0))
                .unwrap();
        writeln!(out, "\n[{name}]").unwrap();
        writeln!(out, "message = {}", hex(&message)).unwrap();
        writeln!(out, "inner = {}", hex(&inner)).unwrap();
        writeln!(out, "message_id = {}", hex(&Sha256::digest(&inner)[..16])).unwrap();
        writeln!(out, "count = {}", bodies.len()).unwrap();
        for (i, body) in bodies.iter().enumerate() {
            let mut opened = vec![0u8; body.len()];
            let OpenedBody::Fragment(plain) =
                sealed::open_any(&identity.recipient_id(), &key, body, &mut opened).unwrap()
            else {
                panic!("a fragment");
            };
            writeln!(
                out,
                "fragment_{i}_header = {}",
                hex(&plain[..FRAGMENT_HEADER_LEN])
            )
            .unwrap();
            writeln!(out, "fragment_{i}_plaintext = {}", hex(plain)).unwrap();
            writeln!(out, "fragment_{i}_sealed = {}", hex(body)).unwrap();
        }
    }
    out
}

#[test]
fn vectors_match_the_committed_file() {
    matches_committed_file(VECTOR_FILE, &render(), "fragment format changed");
}

#[test]
fn committed_fragments_open_and_reassemble_from_the_file_alone() {
    let (identity, key) = recipient();
    let owner = identity.recipient_id();
    let committed = std::fs::read_to_string(VECTOR_FILE).expect("vector file present");
    let mut checked = 0;
    for section in committed.split("\n[").skip(1) {
        let field = |k: &str| {
            section
                .lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(" = "))
                .unwrap_or_else(|| panic!("{k} missing in [{section}"))
        };
        let message = unhex(field("message"));
        let inner = unhex(field("inner"));
        let mut opened = vec![0u8; inner.len()];
        assert_eq!(
            sealed::open(&owner, &key, &inner, &mut opened).unwrap(),
            &message[..],
            "the inner body is the message sealed once"
        );
        assert_eq!(
            hex(&Sha256::digest(&inner)[..16]),
            field("message_id"),
            "the id is the inner body's hash"
        );
        let count: usize = field("count").parse().unwrap();
        let mut inbox = Inbox::new(InboxConfig::default());
        for i in (0..count).rev() {
            let body = unhex(field(&format!("fragment_{i}_sealed")));
            assert_eq!(body.len(), FRAGMENT_BODY_LEN);
            let mut out = vec![0u8; body.len()];
            let OpenedBody::Fragment(plain) = sealed::open_any(&owner, &key, &body, &mut out)
                .expect("a committed fragment opens")
            else {
                panic!("fragment {i} opened as a message");
            };
            assert_eq!(hex(plain), field(&format!("fragment_{i}_plaintext")));
            assert_eq!(
                hex(&plain[..FRAGMENT_HEADER_LEN]),
                field(&format!("fragment_{i}_header"))
            );
            let decoded = fragment::decode(plain).expect("a committed fragment decodes");
            assert_eq!(usize::from(decoded.header.index), i);
            assert_eq!(usize::from(decoded.header.count), count);
            assert!(
                sealed::open(&owner, &key, &body, &mut out).is_err(),
                "a fragment never opens as a message"
            );
            let part = StoredPart {
                hash: message_hash(&owner, Namespace::DIRECT, &body),
                expiry: Timestamp(1),
                body,
            };
            inbox.receive(&owner, &key, part, Timestamp(0));
        }
        match inbox.poll_received() {
            Some(Received::Message { message: got, .. }) => assert_eq!(got, message),
            other => panic!("expected the message, got {other:?}"),
        }
        checked += 1;
    }
    assert_eq!(checked, messages().len());
}
