//! A decoder for `application/vnd.amazon.eventstream`, the framing of SubscribeToShard.
//!
//! A message is a 12-byte prelude (total length and headers length, u32 big-endian, then the
//! CRC32 of those 8 bytes), the headers, the payload, and the CRC32 of everything before it.
//! Bytes arrive in arbitrary chunks (HTTP/1.1 chunked encoding cuts anywhere), so
//! [`FrameDecoder`] buffers them and hands out whole messages. Both CRCs are checked.
//!
//! Written here rather than borrowed from `millrace-wire` on purpose: the load tool judges
//! the server from outside and must not share its code. Encoding is only for tests.

use bytes::{Buf, Bytes, BytesMut};

/// The largest message accepted (the AWS specification's 16 MB).
pub const MESSAGE_SIZE_BYTES_MAX: usize = 16 * 1024 * 1024;
const PRELUDE_BYTES: usize = 12;
/// Prelude plus the trailing message CRC.
const FRAMING_BYTES: usize = PRELUDE_BYTES + 4;

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
    Timestamp(i64),
    Uuid([u8; 16]),
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub headers: Vec<(String, HeaderValue)>,
    pub payload: Bytes,
}

impl Message {
    /// The string value of the first header named `name`.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|(n, v)| match v {
            HeaderValue::String(s) if n == name => Some(s.as_str()),
            _ => None,
        })
    }
}

/// Why the bytes are not an event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    Length {
        total_len: usize,
    },
    HeadersLength {
        headers_len: usize,
        total_len: usize,
    },
    PreludeCrc {
        expected: u32,
        computed: u32,
    },
    MessageCrc {
        expected: u32,
        computed: u32,
    },
    Header {
        reason: &'static str,
    },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Length { total_len } => write!(f, "message length {total_len} invalid"),
            FrameError::HeadersLength {
                headers_len,
                total_len,
            } => write!(
                f,
                "headers length {headers_len} does not fit message length {total_len}"
            ),
            FrameError::PreludeCrc { expected, computed } => write!(
                f,
                "prelude CRC {expected:#010x} != computed {computed:#010x}"
            ),
            FrameError::MessageCrc { expected, computed } => write!(
                f,
                "message CRC {expected:#010x} != computed {computed:#010x}"
            ),
            FrameError::Header { reason } => write!(f, "malformed header: {reason}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Buffers chunks and yields whole messages.
#[derive(Default)]
pub struct FrameDecoder {
    buffer: BytesMut,
}

impl FrameDecoder {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// Bytes received that are not yet part of a whole message.
    #[cfg(test)]
    pub fn buffered_len(&self) -> usize {
        self.buffer.len()
    }

    /// The next whole message, `None` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        let Some(prelude) = self.buffer.get(..PRELUDE_BYTES) else {
            return Ok(None);
        };
        let total_len = be_u32(prelude, 0) as usize;
        let headers_len = be_u32(prelude, 4) as usize;
        let prelude_crc = be_u32(prelude, 8);
        let computed = crc32fast::hash(&prelude[..8]);
        if computed != prelude_crc {
            return Err(FrameError::PreludeCrc {
                expected: prelude_crc,
                computed,
            });
        }
        if !(FRAMING_BYTES..=MESSAGE_SIZE_BYTES_MAX).contains(&total_len) {
            return Err(FrameError::Length { total_len });
        }
        if headers_len > total_len - FRAMING_BYTES {
            return Err(FrameError::HeadersLength {
                headers_len,
                total_len,
            });
        }
        if self.buffer.len() < total_len {
            return Ok(None);
        }
        let frame = self.buffer.split_to(total_len).freeze();
        let expected = be_u32(&frame, total_len - 4);
        let computed = crc32fast::hash(&frame[..total_len - 4]);
        if expected != computed {
            return Err(FrameError::MessageCrc { expected, computed });
        }
        let headers = decode_headers(&frame[PRELUDE_BYTES..PRELUDE_BYTES + headers_len])?;
        let payload = frame.slice(PRELUDE_BYTES + headers_len..total_len - 4);
        Ok(Some(Message { headers, payload }))
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(word)
}

fn decode_headers(mut bytes: &[u8]) -> Result<Vec<(String, HeaderValue)>, FrameError> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], FrameError> {
        if bytes.len() < n {
            return Err(FrameError::Header {
                reason: "truncated",
            });
        }
        let (head, tail) = bytes.split_at(n);
        *bytes = tail;
        Ok(head)
    }
    let mut headers = Vec::new();
    while !bytes.is_empty() {
        let name_len = usize::from(take(&mut bytes, 1)?[0]);
        let name = std::str::from_utf8(take(&mut bytes, name_len)?)
            .map_err(|_| FrameError::Header {
                reason: "name is not UTF-8",
            })?
            .to_owned();
        let value_type = take(&mut bytes, 1)?[0];
        let value = match value_type {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(take(&mut bytes, 1)?.get_i8()),
            3 => HeaderValue::Int16(take(&mut bytes, 2)?.get_i16()),
            4 => HeaderValue::Int32(take(&mut bytes, 4)?.get_i32()),
            5 => HeaderValue::Int64(take(&mut bytes, 8)?.get_i64()),
            6 | 7 => {
                let len = usize::from(take(&mut bytes, 2)?.get_u16());
                let value = take(&mut bytes, len)?;
                if value_type == 6 {
                    HeaderValue::ByteArray(Bytes::copy_from_slice(value))
                } else {
                    HeaderValue::String(
                        std::str::from_utf8(value)
                            .map_err(|_| FrameError::Header {
                                reason: "string value is not UTF-8",
                            })?
                            .to_owned(),
                    )
                }
            }
            8 => HeaderValue::Timestamp(take(&mut bytes, 8)?.get_i64()),
            9 => {
                let mut uuid = [0u8; 16];
                uuid.copy_from_slice(take(&mut bytes, 16)?);
                HeaderValue::Uuid(uuid)
            }
            _ => {
                return Err(FrameError::Header {
                    reason: "unknown value type",
                });
            }
        };
        headers.push((name, value));
    }
    Ok(headers)
}

/// Frame a message with string headers (tests build server output with it).
#[cfg(test)]
pub fn encode_message(headers: &[(&str, HeaderValue)], payload: &[u8]) -> Vec<u8> {
    let mut header_bytes = Vec::new();
    for (name, value) in headers {
        header_bytes.push(name.len() as u8);
        header_bytes.extend_from_slice(name.as_bytes());
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
                header_bytes.extend_from_slice(&(v.len() as u16).to_be_bytes());
                header_bytes.extend_from_slice(v);
            }
            HeaderValue::String(v) => {
                header_bytes.push(7);
                header_bytes.extend_from_slice(&(v.len() as u16).to_be_bytes());
                header_bytes.extend_from_slice(v.as_bytes());
            }
            HeaderValue::Timestamp(v) => {
                header_bytes.push(8);
                header_bytes.extend_from_slice(&v.to_be_bytes());
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
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn event(payload: &[u8]) -> Vec<u8> {
        encode_message(
            &[
                (":message-type", HeaderValue::String("event".into())),
                (
                    ":event-type",
                    HeaderValue::String("SubscribeToShardEvent".into()),
                ),
                (
                    ":content-type",
                    HeaderValue::String("application/json".into()),
                ),
            ],
            payload,
        )
    }

    /// A known-good frame: the AWS event stream specification's "int32 header" test vector
    /// (one header `event-type: Int32 0x0000A00C`, payload `{'foo':'bar'}`).
    #[test]
    fn decodes_the_specification_vector() {
        let frame: [u8; 45] = [
            0x00, 0x00, 0x00, 0x2d, 0x00, 0x00, 0x00, 0x10, 0x41, 0xc4, 0x24, 0xb8, 0x0a, 0x65,
            0x76, 0x65, 0x6e, 0x74, 0x2d, 0x74, 0x79, 0x70, 0x65, 0x04, 0x00, 0x00, 0xa0, 0x0c,
            0x7b, 0x27, 0x66, 0x6f, 0x6f, 0x27, 0x3a, 0x27, 0x62, 0x61, 0x72, 0x27, 0x7d, 0x36,
            0xf4, 0x80, 0xa0,
        ];
        let mut decoder = FrameDecoder::default();
        decoder.push(&frame);
        let message = decoder.next_message().unwrap().unwrap();
        assert_eq!(
            message.headers,
            vec![("event-type".to_owned(), HeaderValue::Int32(0xa00c))]
        );
        assert_eq!(&message.payload[..], b"{'foo':'bar'}");
        assert_eq!(decoder.next_message().unwrap(), None);
    }

    #[test]
    fn yields_messages_fed_one_byte_at_a_time() {
        let mut stream = event(b"{\"Records\":[]}");
        stream.extend(event(b"second"));
        let mut decoder = FrameDecoder::default();
        let mut messages = Vec::new();
        for byte in &stream {
            decoder.push(std::slice::from_ref(byte));
            while let Some(message) = decoder.next_message().unwrap() {
                messages.push(message);
            }
        }
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].header_str(":message-type"), Some("event"));
        assert_eq!(
            messages[0].header_str(":event-type"),
            Some("SubscribeToShardEvent")
        );
        assert_eq!(&messages[0].payload[..], b"{\"Records\":[]}");
        assert_eq!(&messages[1].payload[..], b"second");
        assert_eq!(decoder.buffered_len(), 0);
    }

    #[test]
    fn decodes_every_header_type() {
        let headers = vec![
            ("t", HeaderValue::Bool(true)),
            ("f", HeaderValue::Bool(false)),
            ("b", HeaderValue::Byte(-3)),
            ("s", HeaderValue::Int16(-300)),
            ("i", HeaderValue::Int32(70000)),
            ("l", HeaderValue::Int64(-1 << 40)),
            ("a", HeaderValue::ByteArray(Bytes::from_static(b"\x00\x01"))),
            ("str", HeaderValue::String("x".into())),
            ("ts", HeaderValue::Timestamp(1_700_000_000_000)),
            ("u", HeaderValue::Uuid([7; 16])),
        ];
        let mut decoder = FrameDecoder::default();
        decoder.push(&encode_message(&headers, b""));
        let message = decoder.next_message().unwrap().unwrap();
        let expected: Vec<(String, HeaderValue)> = headers
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v))
            .collect();
        assert_eq!(message.headers, expected);
        assert!(message.payload.is_empty());
    }

    #[test]
    fn refuses_a_corrupt_payload() {
        let mut frame = event(b"payload");
        let at = frame.len() - 6;
        frame[at] ^= 0xff;
        let mut decoder = FrameDecoder::default();
        decoder.push(&frame);
        assert!(matches!(
            decoder.next_message(),
            Err(FrameError::MessageCrc { .. })
        ));
    }

    #[test]
    fn refuses_a_corrupt_prelude_before_waiting_for_the_body() {
        let mut frame = event(b"payload");
        frame[1] ^= 0x01;
        let mut decoder = FrameDecoder::default();
        decoder.push(&frame[..PRELUDE_BYTES]);
        assert!(matches!(
            decoder.next_message(),
            Err(FrameError::PreludeCrc { .. })
        ));
    }

    #[test]
    fn refuses_headers_longer_than_the_message() {
        let mut prelude = Vec::new();
        prelude.extend_from_slice(&20u32.to_be_bytes());
        prelude.extend_from_slice(&10u32.to_be_bytes());
        let crc = crc32fast::hash(&prelude);
        prelude.extend_from_slice(&crc.to_be_bytes());
        let mut decoder = FrameDecoder::default();
        decoder.push(&prelude);
        assert_eq!(
            decoder.next_message(),
            Err(FrameError::HeadersLength {
                headers_len: 10,
                total_len: 20
            })
        );
    }

    #[test]
    fn refuses_a_truncated_header() {
        // A string header claiming 5 bytes of value with only 1 present.
        let headers = [1u8, b'n', 7, 0, 5, b'x'];
        let total_len = FRAMING_BYTES + headers.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(total_len as u32).to_be_bytes());
        out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out.extend_from_slice(&headers);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        let mut decoder = FrameDecoder::default();
        decoder.push(&out);
        assert_eq!(
            decoder.next_message(),
            Err(FrameError::Header {
                reason: "truncated"
            })
        );
    }
}
