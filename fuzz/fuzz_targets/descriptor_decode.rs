//! Descriptor decoding: never panics; whatever decodes re-encodes to the same bytes; and
//! a descriptor signed from arbitrary fields round-trips.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use proto_core::keys::{
    Address, Descriptor, IdentityKey, MAX_DESCRIPTOR_LEN, OnionKey, UnverifiedDescriptor,
};
use proto_core::{Epoch, Timestamp, TlsKeyHash};

#[derive(Arbitrary, Debug)]
struct Input {
    raw: Vec<u8>,
    identity: [u8; 32],
    onion: [u8; 32],
    epoch: u32,
    expires: u64,
    tls_key_hash: [u8; 32],
    address: String,
}

fuzz_target!(|input: Input| {
    if let Ok(d) = Descriptor::decode(&input.raw) {
        let mut out = [0u8; MAX_DESCRIPTOR_LEN];
        let n = d.encode(&mut out).expect("fits");
        assert_eq!(&out[..n], &input.raw[..]);
    }
    if let Ok(u) = UnverifiedDescriptor::decode(&input.raw) {
        let mut out = [0u8; MAX_DESCRIPTOR_LEN];
        let n = u.encode(&mut out).expect("fits");
        assert_eq!(&out[..n], &input.raw[..]);
    }
    if let Ok(address) = Address::new(&input.address) {
        let id = IdentityKey::from_seed(&input.identity);
        let onion = OnionKey::from_secret_bytes(input.onion, Epoch(input.epoch));
        let d = Descriptor::sign(
            &id,
            &onion,
            TlsKeyHash(input.tls_key_hash),
            address,
            Timestamp(input.expires),
        );
        let mut out = [0u8; MAX_DESCRIPTOR_LEN];
        let n = d.encode(&mut out).expect("fits");
        let back = Descriptor::decode(&out[..n]);
        assert_eq!(back, Ok(d));
        assert_eq!(back.map(|b| b.tls_key_hash().0), Ok(input.tls_key_hash));
    }
});
