//! Final-hop request and response codecs: arbitrary bytes never panic; a decoded request
//! re-encodes to bytes that decode to the same request; a decoded response re-encodes to
//! the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto_core::Timestamp;
use proto_core::keys::IdentityKey;
use proto_core::request::{Response, SignedRequest};

fuzz_target!(|data: &[u8]| {
    if let Ok(signed) = SignedRequest::decode(data) {
        let _ = signed.authenticate(Timestamp(1_800_000_000_000), 60_000);
        let key = IdentityKey::from_seed(&[3; 32]);
        let mut out = [0u8; 4096];
        let n = signed
            .request
            .encode(Some(&key), &mut out)
            .expect("a decoded request re-encodes");
        let again = SignedRequest::decode(&out[..n]).expect("own encoding decodes");
        assert_eq!(again.request, signed.request);
    }
    if let Ok(response) = Response::decode(data) {
        let mut out = Vec::new();
        response.encode(&mut out);
        assert_eq!(out, data);
    }
});
