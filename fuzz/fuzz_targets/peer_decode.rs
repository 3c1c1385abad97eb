//! Node-to-node codec: arbitrary bytes never panic; a decoded response re-encodes to the
//! same bytes; a request only decodes with a valid envelope signature.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto_core::Timestamp;
use proto_core::peer::{self, PeerResponse};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = PeerResponse::decode(data) {
        assert_eq!(r.encode(), data);
    }
    let _ = peer::decode_request(data, Timestamp(1_800_000_000_000), u64::MAX, |_| true);
});
