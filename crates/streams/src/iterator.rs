//! Shard iterators: opaque, tamper-evident tokens naming a position in a shard.
//!
//! Layout before base64 (standard alphabet, as AWS's iterators use):
//!
//! ```text
//! u8   version = 2
//! i64  issued at, epoch milliseconds (iterators expire 5 minutes after this)
//! u32  shard index
//! u64  offset of the next record to return
//! u16  length of the stream id, then the stream id
//! u16  length of the stream name, then the stream name
//! [16] HMAC-SHA256 of everything above, truncated, under the installation's secret
//! ```
//!
//! Version 1 had `u8` lengths and cut longer texts at 255 bytes, possibly inside a UTF-8
//! character, so such a token never decoded (found by the `iterator_token` fuzz target;
//! stream names are ASCII of at most 128 characters, so no real token was affected). Version
//! 1 tokens are still read, so iterators issued before an upgrade keep working.
//!
//! The stream id ties the iterator to one incarnation of a stream: after the stream is
//! deleted and created again under the same name, old iterators are refused.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const VERSION: u8 = 2;
const VERSION_1: u8 = 1;
const TAG_BYTES: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IteratorToken {
    pub stream_name: String,
    pub stream_id: String,
    pub shard_index: u32,
    pub offset: u64,
    pub issued_ms: i64,
}

fn tag(secret: &[u8], body: &[u8]) -> [u8; TAG_BYTES] {
    let mut out = [0u8; TAG_BYTES];
    if let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
        mac.update(body);
        let full = mac.finalize().into_bytes();
        out.copy_from_slice(&full[..TAG_BYTES]);
    }
    out
}

impl IteratorToken {
    pub fn encode(&self, secret: &[u8]) -> String {
        let mut body = Vec::with_capacity(64 + self.stream_name.len());
        body.push(VERSION);
        body.extend_from_slice(&self.issued_ms.to_be_bytes());
        body.extend_from_slice(&self.shard_index.to_be_bytes());
        body.extend_from_slice(&self.offset.to_be_bytes());
        for text in [&self.stream_id, &self.stream_name] {
            // Both are bounded far below u16::MAX (names by the model, ids by us), so the
            // clamp never cuts; it is there so no input can make the length lie.
            let bytes = text.as_bytes();
            let bytes = bytes.get(..usize::from(u16::MAX)).unwrap_or(bytes);
            body.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            body.extend_from_slice(bytes);
        }
        let mac = tag(secret, &body);
        body.extend_from_slice(&mac);
        base64::engine::general_purpose::STANDARD.encode(body)
    }

    /// Decodes and authenticates a token; `None` for anything we did not issue.
    pub fn decode(text: &str, secret: &[u8]) -> Option<IteratorToken> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?;
        if bytes.len() < 1 + 8 + 4 + 8 + 2 + TAG_BYTES {
            return None;
        }
        let (body, mac) = bytes.split_at(bytes.len() - TAG_BYTES);
        // Constant-time comparison through the Mac API.
        let mut check = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).ok()?;
        check.update(body);
        let full = check.finalize().into_bytes();
        if !constant_time_eq(&full[..TAG_BYTES], mac) {
            return None;
        }
        let mut reader = Reader { bytes: body };
        let version = *reader.take(1)?.first()?;
        if version != VERSION && version != VERSION_1 {
            return None;
        }
        let issued_ms = i64::from_be_bytes(reader.take(8)?.try_into().ok()?);
        let shard_index = u32::from_be_bytes(reader.take(4)?.try_into().ok()?);
        let offset = u64::from_be_bytes(reader.take(8)?.try_into().ok()?);
        let text = |reader: &mut Reader<'_>| -> Option<String> {
            let len = if version == VERSION_1 {
                usize::from(*reader.take(1)?.first()?)
            } else {
                usize::from(u16::from_be_bytes(reader.take(2)?.try_into().ok()?))
            };
            String::from_utf8(reader.take(len)?.to_vec()).ok()
        };
        let stream_id = text(&mut reader)?;
        let stream_name = text(&mut reader)?;
        if !reader.bytes.is_empty() {
            return None;
        }
        Some(IteratorToken {
            stream_name,
            stream_id,
            shard_index,
            offset,
            issued_ms,
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> IteratorToken {
        IteratorToken {
            stream_name: "orders".into(),
            stream_id: "abcdefghij0123456789-abc".into(),
            shard_index: 3,
            offset: 99,
            issued_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn round_trip() {
        let text = token().encode(b"secret");
        assert!(text.len() <= 512);
        assert_eq!(IteratorToken::decode(&text, b"secret"), Some(token()));
    }

    /// The fuzz target's finding: a name longer than 255 bytes in UTF-8 round-trips.
    #[test]
    fn long_multibyte_texts_round_trip() {
        let long = IteratorToken {
            stream_name: "\u{fffd}".repeat(128),
            stream_id: "\u{e9}".repeat(200),
            ..token()
        };
        let text = long.encode(b"secret");
        assert_eq!(IteratorToken::decode(&text, b"secret"), Some(long));
    }

    /// Tokens issued by version 1 (before an upgrade) still decode.
    #[test]
    fn version_1_tokens_decode() {
        let t = token();
        let mut body = vec![VERSION_1];
        body.extend_from_slice(&t.issued_ms.to_be_bytes());
        body.extend_from_slice(&t.shard_index.to_be_bytes());
        body.extend_from_slice(&t.offset.to_be_bytes());
        for text in [&t.stream_id, &t.stream_name] {
            body.push(text.len() as u8);
            body.extend_from_slice(text.as_bytes());
        }
        let mac = tag(b"secret", &body);
        body.extend_from_slice(&mac);
        let text = base64::engine::general_purpose::STANDARD.encode(body);
        assert_eq!(IteratorToken::decode(&text, b"secret"), Some(t));
    }

    #[test]
    fn tampering_and_other_secrets_are_refused() {
        let text = token().encode(b"secret");
        assert_eq!(IteratorToken::decode(&text, b"other"), None);
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(&text)
            .unwrap_or_default();
        bytes[14] ^= 1;
        let forged = base64::engine::general_purpose::STANDARD.encode(&bytes);
        assert_eq!(IteratorToken::decode(&forged, b"secret"), None);
        assert_eq!(IteratorToken::decode("not base64!", b"secret"), None);
        assert_eq!(IteratorToken::decode("", b"secret"), None);
    }
}
