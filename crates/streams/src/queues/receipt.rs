//! Receipt handles: opaque, tamper-evident tokens naming one delivery of one record.
//!
//! Layout before base64 (URL-safe alphabet, no padding):
//!
//! ```text
//! u8   version = 1
//! i64  issued at, epoch milliseconds
//! u32  shard index
//! u64  offset of the record in the shard's log
//! u32  attempt (the record's receive number in this queue; a later receive makes an
//!      older handle stale)
//! u8   1 = issued by ReceiveDeadLetterQueueRecords
//! u8   length of the queue id, then the queue id
//! [16] HMAC-SHA256 of everything above, truncated, under the installation's secret
//! ```
//!
//! The HMAC key is the shard-iterator secret with a distinct prefix, so an iterator is
//! never mistaken for a receipt handle or the reverse.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const VERSION: u8 = 1;
const TAG_BYTES: usize = 16;
const DOMAIN: &[u8] = b"millrace-receipt-handle\0";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptHandle {
    pub queue_id: String,
    pub shard: u32,
    pub offset: u64,
    pub attempt: u32,
    pub dead: bool,
    pub issued_ms: i64,
}

fn mac(secret: &[u8]) -> Option<Hmac<Sha256>> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).ok()?;
    mac.update(DOMAIN);
    Some(mac)
}

impl ReceiptHandle {
    pub fn encode(&self, secret: &[u8]) -> String {
        let id = self.queue_id.as_bytes();
        let id = id.get(..id.len().min(255)).unwrap_or(id);
        let mut body = Vec::with_capacity(32 + id.len() + TAG_BYTES);
        body.push(VERSION);
        body.extend_from_slice(&self.issued_ms.to_be_bytes());
        body.extend_from_slice(&self.shard.to_be_bytes());
        body.extend_from_slice(&self.offset.to_be_bytes());
        body.extend_from_slice(&self.attempt.to_be_bytes());
        body.push(u8::from(self.dead));
        body.push(id.len() as u8);
        body.extend_from_slice(id);
        if let Some(mut mac) = mac(secret) {
            mac.update(&body);
            let full = mac.finalize().into_bytes();
            body.extend_from_slice(full.get(..TAG_BYTES).unwrap_or(&[]));
        }
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body)
    }

    /// Decodes and authenticates a handle; `None` for anything Millrace did not issue.
    pub fn decode(text: &str, secret: &[u8]) -> Option<ReceiptHandle> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        let body_len = bytes.len().checked_sub(TAG_BYTES)?;
        let (body, tag) = bytes.split_at(body_len);
        let mut check = mac(secret)?;
        check.update(body);
        check.verify_truncated_left(tag).ok()?;
        let (&version, rest) = body.split_first()?;
        if version != VERSION {
            return None;
        }
        let (issued, rest) = rest.split_first_chunk::<8>()?;
        let (shard, rest) = rest.split_first_chunk::<4>()?;
        let (offset, rest) = rest.split_first_chunk::<8>()?;
        let (attempt, rest) = rest.split_first_chunk::<4>()?;
        let (&dead, rest) = rest.split_first()?;
        let (&id_len, id) = rest.split_first()?;
        if id.len() != usize::from(id_len) || dead > 1 {
            return None;
        }
        Some(ReceiptHandle {
            queue_id: String::from_utf8(id.to_vec()).ok()?,
            shard: u32::from_be_bytes(*shard),
            offset: u64::from_be_bytes(*offset),
            attempt: u32::from_be_bytes(*attempt),
            dead: dead == 1,
            issued_ms: i64::from_be_bytes(*issued),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle() -> ReceiptHandle {
        ReceiptHandle {
            queue_id: "abcdefghij0123456789-abc".into(),
            shard: 3,
            offset: 99,
            attempt: 2,
            dead: true,
            issued_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn round_trip_within_the_model_limit() {
        let text = handle().encode(b"secret");
        assert!(text.len() <= 1024);
        assert_eq!(ReceiptHandle::decode(&text, b"secret"), Some(handle()));
    }

    #[test]
    fn forgeries_are_refused() {
        let text = handle().encode(b"secret");
        assert_eq!(ReceiptHandle::decode(&text, b"other"), None);
        let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&text)
            .unwrap_or_default();
        if let Some(b) = bytes.get_mut(14) {
            *b ^= 1;
        }
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(ReceiptHandle::decode(&forged, b"secret"), None);
        assert_eq!(ReceiptHandle::decode("", b"secret"), None);
        assert_eq!(ReceiptHandle::decode("!!", b"secret"), None);
    }
}
