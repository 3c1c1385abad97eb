//! Sealed-body opening: arbitrary bytes never panic and never open (they cannot carry a
//! valid tag); an arbitrary message sealed to a recipient opens to exactly that message,
//! at the padded length `sealed_len` promises, and a flipped bit makes it unauthentic.
#![no_main]

use arbitrary::Arbitrary;
use ghost_fuzz::FuzzRng;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use proto_core::sealed::{self, Contact, EncryptionKey, SealError};
use proto_core::{IdentityKey, RecipientId};

#[derive(Arbitrary, Debug)]
struct Input {
    garbage: Vec<u8>,
    message: Vec<u8>,
    rng_seed: u64,
    flip_at: u16,
}

/// The recipient never changes: deriving its keys once leaves every execution's time to
/// the sealing and opening under test.
static RECIPIENT: LazyLock<(RecipientId, EncryptionKey)> = LazyLock::new(|| {
    let identity = IdentityKey::from_seed(&[42; 32]);
    (
        identity.recipient_id(),
        EncryptionKey::from_secret_bytes([0x43; 32]),
    )
});

fuzz_target!(|input: Input| {
    let (recipient, key) = &*RECIPIENT;
    let recipient = *recipient;
    let mut out = vec![0u8; input.garbage.len().max(input.message.len() + 2048)];
    assert!(sealed::open(&recipient, key, &input.garbage, &mut out).is_err());

    let contact = Contact {
        recipient,
        encryption: key.public(),
    };
    let message = &input.message[..input.message.len().min(8192)];
    let mut sealed_body = vec![0u8; sealed::sealed_len(message.len()).expect("small")];
    let n = sealed::seal(&contact, message, &mut FuzzRng(input.rng_seed), &mut sealed_body)
        .expect("a sound contact and a buffer of sealed_len");
    assert_eq!(n, sealed_body.len());
    assert_eq!(
        sealed::open(&recipient, key, &sealed_body, &mut out),
        Ok(message)
    );
    let at = usize::from(input.flip_at) % n;
    sealed_body[at] ^= 1;
    assert_eq!(
        sealed::open(&recipient, key, &sealed_body, &mut out),
        Err(SealError::Unauthentic)
    );
});
