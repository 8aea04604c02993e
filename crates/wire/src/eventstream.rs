//! `application/vnd.amazon.eventstream` framing, as SubscribeToShard streams events.
//!
//! A message is a prelude (total length and headers length, both u32 big-endian, then the
//! CRC32 of those 8 bytes), the headers, the payload and the CRC32 of everything before it.
//! Each header is a name (u8 length + bytes), a type byte and a value; all ten value types
//! decode, and [`encode_message`] writes any of them. Messages are bounded by
//! [`MESSAGE_SIZE_BYTES_MAX`] and [`HEADERS_SIZE_BYTES_MAX`] (the limits of the AWS
//! specification).
//!
//! The SubscribeToShard helpers send what the AWS SDKs read (Java v2's
//! `EventStreamAsyncResponseTransformer`, smithy-rs, JS v3): every header is a string (Java
//! calls `getString()` on each), `:message-type` is `event` or `exception`, events carry
//! `:event-type` (`initial-response` first, then `SubscribeToShardEvent`), exceptions carry
//! `:exception-type` (the `__type`); payloads are in the format of the request (CBOR for the
//! Java SDK, whose event unmarshaller is the protocol's), with `:content-type` naming it. The
//! initial response has an empty structure as payload (`{}`). Deliberately not here: HTTP/2
//! streaming and pacing, which are the server's.

use crate::encode::{self, Encode, Writer};
use crate::error::ErrorKind;
use crate::{EpochMillis, Format};
use bytes::Bytes;

/// The largest message this codec writes or accepts (AWS: 16 MB).
pub const MESSAGE_SIZE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The largest header section this codec accepts (AWS: 128 KB).
pub const HEADERS_SIZE_BYTES_MAX: usize = 128 * 1024;
/// Prelude (12 bytes) plus message CRC (4 bytes).
const FRAMING_BYTES: usize = 16;
const _: () = assert!(HEADERS_SIZE_BYTES_MAX + FRAMING_BYTES <= MESSAGE_SIZE_BYTES_MAX);

/// The value of one header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    Bool(bool),
    Byte(i8),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    ByteArray(Bytes),
    String(String),
    Timestamp(EpochMillis),
    Uuid([u8; 16]),
}

impl HeaderValue {
    /// A string header value.
    pub fn string(value: &str) -> HeaderValue {
        HeaderValue::String(value.to_owned())
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            HeaderValue::String(s) => Some(s),
            _ => None,
        }
    }
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub headers: Vec<(String, HeaderValue)>,
    pub payload: Bytes,
}

impl Message {
    /// The first header named `name`.
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The string value of the header named `name`.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(HeaderValue::as_str)
    }
}

/// Why bytes are not an event-stream message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("incomplete message: {needed} bytes needed, {available} available")]
    Incomplete { needed: usize, available: usize },
    #[error("message length {total_len} outside 16..={MESSAGE_SIZE_BYTES_MAX}")]
    InvalidLength { total_len: usize },
    #[error("headers length {headers_len} does not fit message length {total_len}")]
    InvalidHeadersLength {
        headers_len: usize,
        total_len: usize,
    },
    #[error("prelude CRC {expected:#010x} does not match computed {computed:#010x}")]
    PreludeCrc { expected: u32, computed: u32 },
    #[error("message CRC {expected:#010x} does not match computed {computed:#010x}")]
    MessageCrc { expected: u32, computed: u32 },
    #[error("malformed header: {reason}")]
    InvalidHeader { reason: &'static str },
}

/// Frame one message. Header names longer than 255 bytes and string or byte-array values longer
/// than 65535 bytes are cut to fit (the framing cannot express them; callers use short ones).
pub fn encode_message(headers: &[(&str, HeaderValue)], payload: &[u8]) -> Vec<u8> {
    let mut header_bytes = Vec::with_capacity(128);
    for (name, value) in headers {
        let name = truncate(name.as_bytes(), usize::from(u8::MAX));
        header_bytes.push(name.len() as u8);
        header_bytes.extend_from_slice(name);
        match value {
            HeaderValue::Bool(true) => header_bytes.push(0),
            HeaderValue::Bool(false) => header_bytes.push(1),
            HeaderValue::Byte(v) => {
                header_bytes.push(2);
                header_bytes.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Int16(v) => {
                header_bytes.push(3);
                header_bytes.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Int32(v) => {
                header_bytes.push(4);
                header_bytes.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Int64(v) => {
                header_bytes.push(5);
                header_bytes.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::ByteArray(v) => {
                header_bytes.push(6);
                let v = truncate(v, usize::from(u16::MAX));
                header_bytes.extend_from_slice(&(v.len() as u16).to_be_bytes());
                header_bytes.extend_from_slice(v);
            }
            HeaderValue::String(v) => {
                header_bytes.push(7);
                let v = truncate(v.as_bytes(), usize::from(u16::MAX));
                header_bytes.extend_from_slice(&(v.len() as u16).to_be_bytes());
                header_bytes.extend_from_slice(v);
            }
            HeaderValue::Timestamp(v) => {
                header_bytes.push(8);
                header_bytes.extend_from_slice(&v.0.to_be_bytes());
            }
            HeaderValue::Uuid(v) => {
                header_bytes.push(9);
                header_bytes.extend_from_slice(v);
            }
        }
    }
    let total_len = FRAMING_BYTES + header_bytes.len() + payload.len();
    let mut out = Vec::with_capacity(total_len);
    out.extend_from_slice(&(total_len as u32).to_be_bytes());
    out.extend_from_slice(&(header_bytes.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&header_bytes);
    out.extend_from_slice(payload);
    let message_crc = crc32fast::hash(&out);
    out.extend_from_slice(&message_crc.to_be_bytes());
    out
}

fn truncate(bytes: &[u8], max: usize) -> &[u8] {
    bytes.get(..max).unwrap_or(bytes)
}

/// Decode the message at the start of `input`; returns it and the number of bytes it used.
/// `Incomplete` means more bytes are needed (the caller keeps buffering).
pub fn decode_message(input: &[u8]) -> Result<(Message, usize), DecodeError> {
    let available = input.len();
    let prelude = input.get(..12).ok_or(DecodeError::Incomplete {
        needed: 12,
        available,
    })?;
    let total_len = be_u32(prelude, 0) as usize;
    let headers_len = be_u32(prelude, 4) as usize;
    let expected = be_u32(prelude, 8);
    let computed = crc32fast::hash(prelude.get(..8).unwrap_or_default());
    if expected != computed {
        return Err(DecodeError::PreludeCrc { expected, computed });
    }
    if !(FRAMING_BYTES..=MESSAGE_SIZE_BYTES_MAX).contains(&total_len) {
        return Err(DecodeError::InvalidLength { total_len });
    }
    if headers_len > HEADERS_SIZE_BYTES_MAX || headers_len > total_len - FRAMING_BYTES {
        return Err(DecodeError::InvalidHeadersLength {
            headers_len,
            total_len,
        });
    }
    let message = input.get(..total_len).ok_or(DecodeError::Incomplete {
        needed: total_len,
        available,
    })?;
    let body_end = total_len - 4;
    let expected = be_u32(message, body_end);
    let computed = crc32fast::hash(message.get(..body_end).unwrap_or_default());
    if expected != computed {
        return Err(DecodeError::MessageCrc { expected, computed });
    }
    let header_bytes = message.get(12..12 + headers_len).unwrap_or_default();
    let payload = message.get(12 + headers_len..body_end).unwrap_or_default();
    let headers = decode_headers(header_bytes)?;
    Ok((
        Message {
            headers,
            payload: Bytes::copy_from_slice(payload),
        },
        total_len,
    ))
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(slice) = bytes.get(at..at + 4) {
        word.copy_from_slice(slice);
    }
    u32::from_be_bytes(word)
}

fn decode_headers(mut bytes: &[u8]) -> Result<Vec<(String, HeaderValue)>, DecodeError> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = bytes
            .split_at_checked(n)
            .ok_or(DecodeError::InvalidHeader {
                reason: "truncated",
            })?;
        *bytes = tail;
        Ok(head)
    }
    fn array<const N: usize>(bytes: &mut &[u8]) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(take(bytes, N)?);
        Ok(out)
    }
    let mut headers = Vec::new();
    while !bytes.is_empty() {
        let [name_len] = array::<1>(&mut bytes)?;
        if name_len == 0 {
            return Err(DecodeError::InvalidHeader {
                reason: "empty name",
            });
        }
        let name = std::str::from_utf8(take(&mut bytes, usize::from(name_len))?)
            .map_err(|_| DecodeError::InvalidHeader {
                reason: "name is not UTF-8",
            })?
            .to_owned();
        let [value_type] = array::<1>(&mut bytes)?;
        let value = match value_type {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(i8::from_be_bytes(array(&mut bytes)?)),
            3 => HeaderValue::Int16(i16::from_be_bytes(array(&mut bytes)?)),
            4 => HeaderValue::Int32(i32::from_be_bytes(array(&mut bytes)?)),
            5 => HeaderValue::Int64(i64::from_be_bytes(array(&mut bytes)?)),
            6 | 7 => {
                let len = usize::from(u16::from_be_bytes(array(&mut bytes)?));
                let raw = take(&mut bytes, len)?;
                if value_type == 6 {
                    HeaderValue::ByteArray(Bytes::copy_from_slice(raw))
                } else {
                    let text =
                        std::str::from_utf8(raw).map_err(|_| DecodeError::InvalidHeader {
                            reason: "string value is not UTF-8",
                        })?;
                    HeaderValue::String(text.to_owned())
                }
            }
            8 => HeaderValue::Timestamp(EpochMillis(i64::from_be_bytes(array(&mut bytes)?))),
            9 => HeaderValue::Uuid(array(&mut bytes)?),
            _ => {
                return Err(DecodeError::InvalidHeader {
                    reason: "unknown value type",
                });
            }
        };
        headers.push((name, value));
    }
    Ok(headers)
}

/// The first message of a SubscribeToShard response: an `initial-response` event with an empty
/// structure as payload.
pub fn encode_initial_response(format: Format) -> Vec<u8> {
    struct Empty;
    impl Encode for Empty {
        fn encode<W: Writer>(&self, w: &mut W) {
            w.begin_map(0);
            w.end_map();
        }
    }
    encode_event(format, "initial-response", &Empty)
}

/// An event message whose payload is `payload` in `format` (e.g. `SubscribeToShardEvent`).
pub fn encode_event<T: Encode + ?Sized>(format: Format, event_type: &str, payload: &T) -> Vec<u8> {
    let body = encode::to_vec(format, payload);
    encode_message(
        &[
            (":event-type", HeaderValue::string(event_type)),
            (":content-type", HeaderValue::string(format.content_type())),
            (":message-type", HeaderValue::string("event")),
        ],
        &body,
    )
}

/// An exception message that ends the stream: `:exception-type` is the `__type`, the payload
/// carries the message (`{"message":"..."}`, or `{}` without one).
pub fn encode_exception(format: Format, kind: ErrorKind, message: Option<&str>) -> Vec<u8> {
    struct Body<'a>(Option<&'a str>);
    impl Encode for Body<'_> {
        fn encode<W: Writer>(&self, w: &mut W) {
            w.begin_map(usize::from(self.0.is_some()));
            if let Some(message) = self.0 {
                w.key("message");
                w.string(message);
            }
            w.end_map();
        }
    }
    let body = encode::to_vec(format, &Body(message));
    encode_message(
        &[
            (":exception-type", HeaderValue::string(kind.type_name())),
            (":content-type", HeaderValue::string(format.content_type())),
            (":message-type", HeaderValue::string("exception")),
        ],
        &body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_header_type() {
        let headers = [
            ("t", HeaderValue::Bool(true)),
            ("f", HeaderValue::Bool(false)),
            ("b", HeaderValue::Byte(-3)),
            ("s", HeaderValue::Int16(-300)),
            ("i", HeaderValue::Int32(70_000)),
            ("l", HeaderValue::Int64(-5_000_000_000)),
            ("a", HeaderValue::ByteArray(Bytes::from_static(b"\x00\x01"))),
            (":event-type", HeaderValue::string("SubscribeToShardEvent")),
            ("ts", HeaderValue::Timestamp(EpochMillis(1_700_000_000_123))),
            ("u", HeaderValue::Uuid([7; 16])),
        ];
        let bytes = encode_message(&headers, b"payload");
        let (message, used) = decode_message(&bytes).expect("decodes");
        assert_eq!(used, bytes.len());
        assert_eq!(message.payload, Bytes::from_static(b"payload"));
        let expected: Vec<(String, HeaderValue)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect();
        assert_eq!(message.headers, expected);
        assert_eq!(
            message.header_str(":event-type"),
            Some("SubscribeToShardEvent")
        );
    }

    #[test]
    fn matches_the_aws_specification_example() {
        // The "empty message" test vector of the AWS event-stream test suite
        // (aws-c-event-stream, smithy-rs): no headers, no payload.
        let empty = encode_message(&[], b"");
        assert_eq!(
            empty,
            [
                0, 0, 0, 0x10, 0, 0, 0, 0, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98, 0xc8, 0xff
            ]
        );
        // The "int32 header" vector: header "event-type" = int32 0x0000A00C, payload "{'foo':'bar'}".
        let int32 = encode_message(
            &[("event-type", HeaderValue::Int32(0xa00c))],
            b"{'foo':'bar'}",
        );
        let expected: [u8; 45] = [
            0x00, 0x00, 0x00, 0x2d, 0x00, 0x00, 0x00, 0x10, 0x41, 0xc4, 0x24, 0xb8, 0x0a, 0x65,
            0x76, 0x65, 0x6e, 0x74, 0x2d, 0x74, 0x79, 0x70, 0x65, 0x04, 0x00, 0x00, 0xa0, 0x0c,
            0x7b, 0x27, 0x66, 0x6f, 0x6f, 0x27, 0x3a, 0x27, 0x62, 0x61, 0x72, 0x27, 0x7d, 0x36,
            0xf4, 0x80, 0xa0,
        ];
        assert_eq!(int32, expected);
    }

    #[test]
    fn detects_corruption_and_truncation() {
        let bytes = encode_message(&[(":message-type", HeaderValue::string("event"))], b"{}");
        for cut in 0..bytes.len() {
            assert!(
                matches!(
                    decode_message(&bytes[..cut]),
                    Err(DecodeError::Incomplete { .. })
                ),
                "cut at {cut}"
            );
        }
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x01;
            assert!(decode_message(&flipped).is_err(), "flip at {i}");
        }
        // Two messages back to back: the first is consumed exactly.
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes);
        let (_, used) = decode_message(&two).expect("first decodes");
        assert_eq!(used, bytes.len());
        assert!(decode_message(&two[used..]).is_ok());
    }

    #[test]
    fn subscribe_to_shard_frames() {
        let initial = encode_initial_response(Format::Json);
        let (message, _) = decode_message(&initial).expect("decodes");
        assert_eq!(message.header_str(":message-type"), Some("event"));
        assert_eq!(message.header_str(":event-type"), Some("initial-response"));
        assert_eq!(
            message.header_str(":content-type"),
            Some("application/x-amz-json-1.1")
        );
        assert_eq!(&message.payload[..], b"{}");

        let initial = encode_initial_response(Format::Cbor);
        let (message, _) = decode_message(&initial).expect("decodes");
        assert_eq!(&message.payload[..], [0xa0]);
        assert_eq!(
            message.header_str(":content-type"),
            Some("application/x-amz-cbor-1.1")
        );

        let exception = encode_exception(
            Format::Json,
            ErrorKind::ResourceNotFoundException,
            Some("gone"),
        );
        let (message, _) = decode_message(&exception).expect("decodes");
        assert_eq!(message.header_str(":message-type"), Some("exception"));
        assert_eq!(
            message.header_str(":exception-type"),
            Some("ResourceNotFoundException")
        );
        assert_eq!(&message.payload[..], br#"{"message":"gone"}"#);
        assert!(
            message.headers.iter().all(|(_, v)| v.as_str().is_some()),
            "Java reads every header as a string"
        );
    }
}
