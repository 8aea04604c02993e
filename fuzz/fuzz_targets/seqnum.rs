//! Sequence numbers: any text decodes without panicking, and whatever decodes encodes back
//! to a number that decodes to the same parts (so a client's number always names one
//! position).
#![no_main]

use millrace_streams::seqnum::{decode, encode};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(parts) = decode(&text) {
        assert_eq!(decode(&encode(parts)), Some(parts), "{text:?} does not round-trip");
    }
});
