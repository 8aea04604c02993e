//! Event-stream decoding (`application/vnd.amazon.eventstream`): messages one after the
//! other, as a client reading a SubscribeToShard response would. Never a panic, and every
//! message decoded consumes bytes (no endless loop on a zero-length message).
#![no_main]

use millrace_wire::eventstream::decode_message;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok((_message, n_used)) = decode_message(rest) {
        assert!(n_used > 0 && n_used <= rest.len(), "decoded {n_used} of {}", rest.len());
        rest = &rest[n_used..];
    }
});
