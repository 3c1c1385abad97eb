//! Sealed-body opening: arbitrary bytes never panic and never open (they cannot carry a
//! valid tag); an arbitrary message sealed to a recipient opens to exactly that message,
//! at the padded length `sealed_len` promises, and a flipped bit makes it unauthentic.
#![no_main]

use arbitrary::Arbitrary;
use ghost_fuzz::FuzzRng;
use libfuzzer_sys::fuzz_target;
use proto_core::IdentityKey;
use proto_core::sealed::{self, Contact, EncryptionKey, SealError};

#[derive(Arbitrary, Debug)]
struct Input {
    garbage: Vec<u8>,
    message: Vec<u8>,
    rng_seed: u64,
    flip_at: u16,
}

fuzz_target!(|input: Input| {
    let identity = IdentityKey::from_seed(&[42; 32]);
    let key = EncryptionKey::from_secret_bytes([0x43; 32]);
    let recipient = identity.recipient_id();
    let mut out = vec![0u8; input.garbage.len().max(input.message.len() + 2048)];
    assert!(sealed::open(&recipient, &key, &input.garbage, &mut out).is_err());

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
        sealed::open(&recipient, &key, &sealed_body, &mut out),
        Ok(message)
    );
    let at = usize::from(input.flip_at) % n;
    sealed_body[at] ^= 1;
    assert_eq!(
        sealed::open(&recipient, &key, &sealed_body, &mut out),
        Err(SealError::Unauthentic)
    );
});
