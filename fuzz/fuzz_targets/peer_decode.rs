//! Node-to-node codec: arbitrary bytes never panic; a decoded response re-encodes to the
//! same bytes; a request only decodes with a valid envelope signature or, marked as a
//! session envelope, on its sender's session.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto_core::peer::{self, PeerResponse};
use proto_core::{Timestamp, TlsKeyHash};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = PeerResponse::decode(data) {
        assert_eq!(r.encode(), data);
    }
    // Every sender known with the session's key: both signed and session-authenticated
    // envelopes decode all the way.
    let pin = TlsKeyHash([7; 32]);
    let _ = peer::decode_request(
        data,
        Timestamp(1_800_000_000_000),
        u64::MAX,
        peer::Session::Tls(pin),
        |_| Some(pin),
    );
});
