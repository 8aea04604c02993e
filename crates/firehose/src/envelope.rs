//! The payload of one record in a delivery stream's log: the data a producer sent plus, for a
//! Kinesis source, where it came from (the Lambda contract's `kinesisRecordMetadata`).
//!
//! ```text
//! DirectPut          0x00  data...
//! Kinesis stream     0x01  shard index u32 BE | arrival ms i64 BE | partition key len u16 BE |
//!                          partition key | sequence number len u8 | sequence number | data...
//! ```
//! The log adds the offset and the arrival timestamp; nothing else is stored per record.
//! Deliberately not here: what happens to the data afterwards (the delivery pipeline).

use bytes::{BufMut, Bytes, BytesMut};

const KIND_DIRECT: u8 = 0;
const KIND_KINESIS: u8 = 1;

/// Where a record of a Kinesis source came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KinesisOrigin {
    pub shard_index: u32,
    pub arrival_ms: i64,
    pub partition_key: String,
    pub sequence_number: String,
}

/// One decoded log record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub origin: Option<KinesisOrigin>,
    pub data: Bytes,
}

pub fn encode_direct(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(1 + data.len());
    out.put_u8(KIND_DIRECT);
    out.put_slice(data);
    out.freeze()
}

pub fn encode_kinesis(origin: &KinesisOrigin, data: &[u8]) -> Bytes {
    let key = origin.partition_key.as_bytes();
    let key = key.get(..usize::from(u16::MAX)).unwrap_or(key);
    let seq = origin.sequence_number.as_bytes();
    let seq = seq.get(..usize::from(u8::MAX)).unwrap_or(seq);
    let mut out = BytesMut::with_capacity(1 + 4 + 8 + 2 + key.len() + 1 + seq.len() + data.len());
    out.put_u8(KIND_KINESIS);
    out.put_u32(origin.shard_index);
    out.put_i64(origin.arrival_ms);
    out.put_u16(u16::try_from(key.len()).unwrap_or(u16::MAX));
    out.put_slice(key);
    out.put_u8(u8::try_from(seq.len()).unwrap_or(u8::MAX));
    out.put_slice(seq);
    out.put_slice(data);
    out.freeze()
}

/// Decodes a log payload; `None` if it is not one this module wrote.
pub fn decode(payload: &Bytes) -> Option<Envelope> {
    let (&kind, _) = payload.split_first()?;
    match kind {
        KIND_DIRECT => Some(Envelope {
            origin: None,
            data: payload.slice(1..),
        }),
        KIND_KINESIS => {
            let mut pos = 1usize;
            let mut take = |n: usize| -> Option<&[u8]> {
                let bytes = payload.get(pos..pos.checked_add(n)?)?;
                pos += n;
                Some(bytes)
            };
            let shard_index = u32::from_be_bytes(take(4)?.try_into().ok()?);
            let arrival_ms = i64::from_be_bytes(take(8)?.try_into().ok()?);
            let key_len = usize::from(u16::from_be_bytes(take(2)?.try_into().ok()?));
            let partition_key = String::from_utf8(take(key_len)?.to_vec()).ok()?;
            let seq_len = usize::from(*take(1)?.first()?);
            let sequence_number = String::from_utf8(take(seq_len)?.to_vec()).ok()?;
            Some(Envelope {
                origin: Some(KinesisOrigin {
                    shard_index,
                    arrival_ms,
                    partition_key,
                    sequence_number,
                }),
                data: payload.slice(pos..),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let direct = encode_direct(b"hello");
        assert_eq!(
            decode(&direct),
            Some(Envelope {
                origin: None,
                data: Bytes::from_static(b"hello")
            })
        );
        let origin = KinesisOrigin {
            shard_index: 7,
            arrival_ms: 1_700_000_000_123,
            partition_key: "pk".into(),
            sequence_number: "4959".into(),
        };
        let kinesis = encode_kinesis(&origin, b"{}");
        assert_eq!(
            decode(&kinesis),
            Some(Envelope {
                origin: Some(origin),
                data: Bytes::from_static(b"{}")
            })
        );
        assert_eq!(decode(&Bytes::from_static(b"")), None);
        assert_eq!(decode(&Bytes::from_static(b"\x01\x00")), None);
        assert_eq!(decode(&Bytes::from_static(b"\x09abc")), None);
    }
}
