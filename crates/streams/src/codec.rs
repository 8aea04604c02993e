//! How a Kinesis record is stored as an opaque payload in the log.
//!
//! ```text
//! u8   format version = 1
//! u8   flags: bit 0 = written while the stream was encrypted (EncryptionType KMS)
//! u16  partition key length in bytes (big-endian); 0xFFFF = no partition key
//! ...  partition key (UTF-8)
//! ...  data
//! ```
//!
//! The arrival timestamp and the offset (hence the sequence number) come from the log.
//!
//! Flag bit 0 says the stream was encrypted when the record was written (GetRecords reports
//! `EncryptionType` KMS). Bit 1 (`SEALED`) marks a payload `crypto` sealed: the bytes after
//! the flags are then a data key id, a nonce and AES-256-GCM ciphertext of a whole payload
//! of this format, and `crypto::Crypto::open` must turn it back into one before `decode`.
//! (Records written before encryption at rest existed carry bit 0 without bit 1: they are
//! plaintext and still read as such.)

use bytes::{BufMut, Bytes, BytesMut};

pub(crate) const VERSION: u8 = 1;
pub(crate) const FLAG_ENCRYPTED: u8 = 1;
pub(crate) const FLAG_SEALED: u8 = 2;
const NO_KEY: u16 = 0xFFFF;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    pub partition_key: Option<String>,
    pub data: Bytes,
    pub encrypted: bool,
}

/// One record on its own (the write path encodes a batch with [`encode_in`]).
#[cfg(test)]
pub fn encode(partition_key: Option<&str>, data: &[u8], encrypted: bool) -> Bytes {
    let mut out = BytesMut::new();
    encode_in(&mut out, partition_key, data, encrypted)
}

/// The size [`encode`] gives a record.
pub fn encoded_len(partition_key: Option<&str>, data: &[u8]) -> usize {
    4 + partition_key.map_or(0, str::len) + data.len()
}

/// [`encode`] into the free capacity of `buffer`, which is split off and returned: a batch
/// encoded into one buffer reserved for all of it is one allocation instead of one per
/// record (PutRecords' 500).
pub fn encode_in(
    buffer: &mut BytesMut,
    partition_key: Option<&str>,
    data: &[u8],
    encrypted: bool,
) -> Bytes {
    let key = partition_key.unwrap_or("").as_bytes();
    let mut out = buffer.split_off(buffer.len());
    out.reserve(encoded_len(partition_key, data));
    out.put_u8(VERSION);
    out.put_u8(if encrypted { FLAG_ENCRYPTED } else { 0 });
    match partition_key {
        // Partition keys are at most 256 characters (1,024 bytes), far below the marker.
        Some(_) => out.put_u16(key.len().min(usize::from(NO_KEY - 1)) as u16),
        None => out.put_u16(NO_KEY),
    }
    out.put_slice(key);
    out.put_slice(data);
    let encoded = out.split().freeze();
    // Hand the rest of the reserved capacity back for the next record.
    *buffer = out;
    encoded
}

/// Decodes a stored record; `None` if the bytes are not a record this crate wrote.
pub fn decode(payload: &Bytes) -> Option<StoredRecord> {
    let header = payload.get(..4)?;
    if header.first() != Some(&VERSION) {
        return None;
    }
    let flags = *header.get(1)?;
    if flags & FLAG_SEALED != 0 {
        // Ciphertext: `crypto` opens it first.
        return None;
    }
    let key_len = u16::from_be_bytes([*header.get(2)?, *header.get(3)?]);
    let (partition_key, data_start) = if key_len == NO_KEY {
        (None, 4)
    } else {
        let end = 4 + usize::from(key_len);
        let key = std::str::from_utf8(payload.get(4..end)?).ok()?.to_string();
        (Some(key), end)
    };
    if data_start > payload.len() {
        return None;
    }
    Some(StoredRecord {
        partition_key,
        data: payload.slice(data_start..),
        encrypted: flags & FLAG_ENCRYPTED != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bytes = encode(Some("pk-ü"), b"hello", true);
        let record = decode(&bytes);
        assert_eq!(
            record,
            Some(StoredRecord {
                partition_key: Some("pk-ü".into()),
                data: Bytes::from_static(b"hello"),
                encrypted: true,
            })
        );
        let no_key = decode(&encode(None, b"", false));
        assert_eq!(no_key.map(|r| r.partition_key), Some(None));
        assert_eq!(decode(&Bytes::from_static(b"\x02\x00\x00\x00")), None);
        assert_eq!(decode(&Bytes::from_static(b"\x01\x00\x00\x09ab")), None);
    }

    #[test]
    fn batch_encoding_is_record_encoding() {
        let records: [(Option<&str>, &[u8]); 4] = [
            (Some("a"), b"one"),
            (None, b""),
            (Some("pk-\u{fc}"), &[7; 300]),
            (Some(""), b"x"),
        ];
        // Too small a reservation for the batch: later records allocate, the result is the same.
        for reserved in [0, 10, 1000] {
            let mut buffer = BytesMut::with_capacity(reserved);
            for (key, data) in records {
                let encoded = encode_in(&mut buffer, key, data, false);
                assert_eq!(encoded, encode(key, data, false));
                assert_eq!(encoded.len(), encoded_len(key, data));
            }
        }
    }
}
