//! Hostile bytes never panic: random, truncated and mutated bodies for every operation in both
//! formats, and random event-stream frames. Each decode must end in `Ok` or one of the two
//! errors a decoder may produce.

use millrace_wire::kinesis::{Operation, decode_request};
use millrace_wire::{ErrorKind, Format, WireError};

/// xorshift64*: deterministic, dependency-free randomness (seeded per test).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn assert_decodes_or_refuses(op: Operation, format: Format, body: &[u8]) {
    match decode_request(op, format, body) {
        Ok(request) => assert_eq!(request.operation(), op),
        Err(WireError {
            kind: ErrorKind::SerializationException | ErrorKind::ValidationException,
            ..
        }) => {}
        Err(other) => panic!("{op} {format:?} {body:?}: unexpected {other:?}"),
    }
}

#[test]
fn random_bytes() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for op in Operation::ALL {
        for format in [Format::Json, Format::Cbor] {
            for _ in 0..200 {
                let len = rng.below(64);
                let body = rng.bytes(len);
                assert_decodes_or_refuses(*op, format, &body);
            }
        }
    }
}

/// Valid bodies used as seeds for truncation and mutation.
fn seeds() -> Vec<(Operation, Format, Vec<u8>)> {
    let json: &[(Operation, &str)] = &[
        (
            Operation::PutRecords,
            r#"{"Records":[{"Data":"aGVsbG8=","PartitionKey":"a","ExplicitHashKey":"1"},{"Data":"","PartitionKey":"b"}],"StreamName":"s"}"#,
        ),
        (
            Operation::AddTagsToStream,
            r#"{"StreamName":"s","Tags":{"a":"1","b":""}}"#,
        ),
        (
            Operation::GetShardIterator,
            r#"{"ShardId":"shardId-0","ShardIteratorType":"AT_TIMESTAMP","StreamName":"s","Timestamp":1.7e9}"#,
        ),
        (
            Operation::SubscribeToShard,
            r#"{"ConsumerARN":"arn:aws:kinesis:us-east-1:123456789012:stream/s/consumer/c:1","ShardId":"shardId-0","StartingPosition":{"Type":"LATEST"}}"#,
        ),
        (
            Operation::EnableEnhancedMonitoring,
            r#"{"ShardLevelMetrics":["ALL"],"StreamName":"s"}"#,
        ),
    ];
    let mut seeds = Vec::new();
    for (op, body) in json {
        let request = decode_request(*op, Format::Json, body.as_bytes()).expect("seed is valid");
        seeds.push((*op, Format::Json, body.as_bytes().to_vec()));
        seeds.push((
            *op,
            Format::Cbor,
            millrace_wire::kinesis::encode_request(Format::Cbor, &request),
        ));
    }
    seeds
}

#[test]
fn every_truncation_is_a_serialization_exception() {
    for (op, format, body) in seeds() {
        assert!(
            decode_request(op, format, &body).is_ok(),
            "{op} {format:?} seed decodes"
        );
        for cut in 0..body.len() {
            assert_eq!(
                decode_request(op, format, &body[..cut]),
                Err(WireError::serialization(None)),
                "{op} {format:?} cut at {cut}"
            );
        }
    }
}

#[test]
fn mutations() {
    let mut rng = Rng(42);
    for (op, format, body) in seeds() {
        for _ in 0..2000 {
            let mut mutated = body.clone();
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(mutated.len());
                match rng.below(3) {
                    0 => mutated[i] = rng.next() as u8,
                    1 => mutated[i] ^= 1 << rng.below(8),
                    _ => {
                        mutated.remove(i);
                    }
                }
                if mutated.is_empty() {
                    break;
                }
            }
            assert_decodes_or_refuses(op, format, &mutated);
        }
    }
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let deep_json = format!(
        r#"{{"StreamName":{}1{}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    assert_eq!(
        decode_request(
            Operation::DescribeStream,
            Format::Json,
            deep_json.as_bytes()
        ),
        Err(WireError::serialization(None))
    );
    let mut deep_cbor = vec![0xa1, 0x6a];
    deep_cbor.extend_from_slice(b"StreamName");
    deep_cbor.extend(std::iter::repeat_n(0x81, 5000));
    deep_cbor.push(0x01);
    assert_eq!(
        decode_request(Operation::DescribeStream, Format::Cbor, &deep_cbor),
        Err(WireError::serialization(None))
    );
    // Declared lengths far beyond the body do not allocate.
    let huge = [
        0xa1, 0x64, b'D', b'a', b't', b'a', 0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ];
    assert_eq!(
        decode_request(Operation::PutRecord, Format::Cbor, &huge),
        Err(WireError::serialization(None))
    );
}

#[test]
fn random_event_stream_frames() {
    let mut rng = Rng(7);
    for _ in 0..5000 {
        let len = rng.below(80);
        let bytes = rng.bytes(len);
        // Random bytes essentially never carry a valid CRC; they must be refused, not panic.
        assert!(millrace_wire::eventstream::decode_message(&bytes).is_err());
    }
    // Valid prelude, hostile headers: every header section length with a correct CRC.
    for _ in 0..2000 {
        let headers_len = rng.below(40);
        let header_bytes = rng.bytes(headers_len);
        let total = 16 + headers_len;
        let mut frame = Vec::new();
        frame.extend_from_slice(&(total as u32).to_be_bytes());
        frame.extend_from_slice(&(headers_len as u32).to_be_bytes());
        let crc = crc32(&frame);
        frame.extend_from_slice(&crc.to_be_bytes());
        frame.extend_from_slice(&header_bytes);
        let crc = crc32(&frame);
        frame.extend_from_slice(&crc.to_be_bytes());
        if let Ok((message, used)) = millrace_wire::eventstream::decode_message(&frame) {
            assert_eq!(used, frame.len());
            assert!(message.payload.is_empty());
        }
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    // CRC-32/ISO-HDLC, bitwise, independent of the crate under test.
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
