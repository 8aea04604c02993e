//! Request decoding, JSON 1.1 and CBOR 1.1, for every operation: the first byte picks the
//! operation, the second the format, the rest is the body. Bad input is an error, never a
//! panic (and never unbounded work).
#![no_main]

use millrace_wire::Format;
use millrace_wire::kinesis::{Operation, decode_request};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [op, format, body @ ..] = data else {
        return;
    };
    let Some(op) = Operation::ALL.get(usize::from(*op) % Operation::ALL.len()) else {
        return;
    };
    let format = if format % 2 == 0 { Format::Json } else { Format::Cbor };
    let _ = decode_request(*op, format, body);
});
