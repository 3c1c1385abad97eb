//! Large messages: the fragment decoder on arbitrary plaintext, and the recipient's
//! `Inbox` fed arbitrary interleavings of two real messages' fragments with repeats,
//! drops, foreign bodies, hostile fragments sealed to the recipient, and expiry.
//!
//! Never a panic; every message the inbox gives out is one of the two real messages, each
//! at most once; and a real message whose every fragment arrived before anything expired
//! comes out whole (or, if a hostile fragment landed on its id first, as invalid: never
//! wrong, never silent).
#![no_main]

use arbitrary::Arbitrary;
use ghost_fuzz::FuzzRng;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use proto_core::fragment::{
    self, FRAGMENT_CHUNK_LEN, FRAGMENT_LEN, Inbox, InboxConfig, Received, StoredPart,
};
use proto_core::sealed::{self, Contact, EncryptionKey};
use proto_core::store::message_hash;
use proto_core::{IdentityKey, MessageHash, Namespace, RecipientId, Timestamp};

#[derive(Arbitrary, Debug)]
enum Step {
    /// Fragment `index` (modulo its count) of real message `which` (modulo 2).
    Real { which: bool, index: u8 },
    /// Arbitrary bytes as a fragment's plaintext, sealed to the recipient as a fragment:
    /// what a sender with the contact can make.
    Hostile { plaintext: Vec<u8> },
    /// Arbitrary bytes as a stored body.
    Garbage { body: Vec<u8> },
    /// Time passes beyond every fragment's expiry.
    ExpireAll,
}

#[derive(Arbitrary, Debug)]
struct Input {
    decode_me: Vec<u8>,
    lengths: [u16; 2],
    rng_seed: u64,
    steps: Vec<Step>,
}

/// The recipient never changes: deriving its keys once leaves every execution's time to
/// the sealing, opening and reassembly under test.
static RECIPIENT: LazyLock<(RecipientId, EncryptionKey)> = LazyLock::new(|| {
    let identity = IdentityKey::from_seed(&[42; 32]);
    (
        identity.recipient_id(),
        EncryptionKey::from_secret_bytes([0x43; 32]),
    )
});

const EXPIRY: Timestamp = Timestamp(1_000);

fn part(recipient: &RecipientId, body: Vec<u8>) -> StoredPart {
    StoredPart {
        hash: message_hash(recipient, Namespace::DIRECT, &body),
        expiry: EXPIRY,
        body,
    }
}

fuzz_target!(|input: Input| {
    if let Ok(f) = fragment::decode(&input.decode_me) {
        assert!(f.header.index < f.header.count);
        assert!(f.chunk.len() <= FRAGMENT_CHUNK_LEN);
        assert_eq!(input.decode_me.len(), FRAGMENT_LEN);
    }

    let (recipient, key) = &*RECIPIENT;
    let contact = Contact {
        recipient: *recipient,
        encryption: key.public(),
    };
    let mut rng = FuzzRng(input.rng_seed);
    // Two messages that need fragments, at most about 8 KiB each to keep executions fast.
    let messages: Vec<Vec<u8>> = input
        .lengths
        .iter()
        .enumerate()
        .map(|(m, &len)| {
            let len = sealed::MAX_MESSAGE_IN_ONE_BODY + 1 + usize::from(len) % 6000;
            (0..len).map(|i| (i * 13 + m * 101) as u8).collect()
        })
        .collect();
    let bodies: Vec<Vec<Vec<u8>>> = messages
        .iter()
        .map(|m| fragment::seal_message(&contact, m, &mut rng).expect("fits"))
        .collect();

    let mut inbox = Inbox::new(InboxConfig {
        max_waiting: 64,
        max_finished: 64,
    });
    let mut arrived = [vec![false; bodies[0].len()], vec![false; bodies[1].len()]];
    let mut whole_before_expiry = [false; 2];
    let mut expired = false;
    let mut out = Vec::new();
    for step in input.steps.into_iter().take(300) {
        match step {
            Step::Real { which, index } => {
                let m = usize::from(which);
                let i = usize::from(index) % bodies[m].len();
                arrived[m][i] = true;
                if !expired && arrived[m].iter().all(|&a| a) {
                    whole_before_expiry[m] = true;
                }
                inbox.receive(recipient, key, part(recipient, bodies[m][i].clone()), Timestamp(0));
            }
            Step::Hostile { plaintext } => {
                let plaintext = &plaintext[..plaintext.len().min(FRAGMENT_LEN)];
                let mut body = vec![0u8; sealed::sealed_len(plaintext.len()).expect("small")];
                sealed::seal_fragment(&contact, plaintext, &mut rng, &mut body).expect("sound");
                inbox.receive(recipient, key, part(recipient, body), Timestamp(0));
            }
            Step::Garbage { body } => {
                inbox.receive(recipient, key, part(recipient, body), Timestamp(0));
            }
            Step::ExpireAll => {
                expired = true;
                inbox.expire(EXPIRY);
            }
        }
        while let Some(r) = inbox.poll_received() {
            out.push(r);
        }
    }

    let mut delivered = [0usize; 2];
    let mut reported = [0usize; 2];
    let own_parts: Vec<Vec<MessageHash>> = bodies
        .iter()
        .map(|bs| bs.iter().map(|b| message_hash(recipient, Namespace::DIRECT, b)).collect())
        .collect();
    let whose = |parts: &[MessageHash]| (0..2).find(|&m| parts.iter().any(|p| own_parts[m].contains(p)));
    for r in &out {
        match r {
            Received::Message { message, parts, .. } => {
                let m = messages
                    .iter()
                    .position(|real| real == message)
                    .expect("only real messages come out");
                assert_eq!(parts, &own_parts[m], "from exactly its own fragments, in order");
                delivered[m] += 1;
                reported[m] += 1;
            }
            Received::Incomplete { parts, .. } | Received::Invalid { parts, .. } => {
                if let Some(m) = whose(parts) {
                    reported[m] += 1;
                }
            }
        }
    }
    for m in 0..2 {
        assert!(delivered[m] <= 1, "message {m} delivered {} times", delivered[m]);
        if whole_before_expiry[m] {
            assert_eq!(reported[m], 1, "message {m} arrived whole: it is reported once");
        }
    }
});
