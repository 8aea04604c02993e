//! A one-pass decoder for the hot requests (PutRecords and PutRecord in JSON) straight into
//! the typed structs, beside the generic pipeline (parse to a `Value` tree, type-check,
//! validate, convert) that every operation goes through.
//!
//! Hand-written for speed: the generic pipeline builds a tree with a `String` per member, a
//! copy of every base64 text, then rebuilds and converts it; for a 500-record PutRecords that
//! was about a fifth of the server's CPU. This decoder reads the body once with serde_json,
//! borrows the base64 text from the body and decodes every record's data into one buffer.
//!
//! It only ever answers for requests the generic pipeline accepts, and then with the same
//! value: it declines (returns `None`) on anything unusual (a syntax error, a member it does
//! not know, a repeated member, a `null`, a value of a type the generic pipeline would convert
//! or refuse, any constraint violation), and the caller runs the generic pipeline, which
//! produces AWS's messages in AWS's order. So it cannot change an answer, only how fast a
//! valid request is answered; `tests/fast_path.rs` compares the two on valid, invalid and
//! malformed bodies. Constraints are read from the generated shapes, so the model stays the
//! one source of truth.

use bytes::{Bytes, BytesMut};
use serde::de::{self, DeserializeSeed, Deserializer as _, MapAccess, SeqAccess, Visitor};
use std::fmt;

use super::generated::{PutRecordInput, PutRecordsInput, PutRecordsRequestEntry, shapes};
use super::{Operation, Request};
use crate::Format;
use crate::shape::Shape;
use crate::validate::{length_satisfies, string_satisfies};

/// The typed request when `body` is a valid request of `op` this decoder handles; `None`
/// means "ask the generic pipeline", never "invalid".
pub fn decode(op: Operation, format: Format, body: &[u8]) -> Option<Request> {
    if format != Format::Json {
        return None;
    }
    match op {
        Operation::PutRecords => put_records(body).map(Request::PutRecords),
        Operation::PutRecord => put_record(body).map(Request::PutRecord),
        _ => None,
    }
}

/// The error that makes the decoder decline; its text is never shown to anyone.
fn decline<E: de::Error>() -> E {
    E::custom("declined by the fast path")
}

/// One JSON object spanning all of `body`, read by `visitor`.
fn parse_object<'de, V: Visitor<'de>>(body: &'de [u8], visitor: V) -> Option<V::Value> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = deserializer.deserialize_map(visitor).ok()?;
    deserializer.end().ok()?;
    Some(value)
}

/// Member names in the order of a structure's members; a key maps to its index.
struct MemberKey(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for MemberKey {
    type Value = usize;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<usize, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for MemberKey {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<usize, E> {
        // Unknown members are dropped by the generic pipeline; declining keeps this decoder
        // from having to skip arbitrary (depth-bounded) values the same way.
        self.0
            .iter()
            .position(|name| *name == key)
            .ok_or_else(decline)
    }
}

/// Marks member `index` as seen; a repeated member declines (the generic pipeline keeps the
/// last one, or drops both when the last is `null`).
fn first_time<E: de::Error>(seen: &mut u32, index: usize) -> Result<(), E> {
    let bit = 1u32 << index;
    if *seen & bit != 0 {
        return Err(decline());
    }
    *seen |= bit;
    Ok(())
}

/// A base64 string decoded into the shared `buffer`; each blob is split off it, so a whole
/// batch's data is one allocation.
struct Blob<'a> {
    buffer: &'a mut BytesMut,
}

impl<'de> DeserializeSeed<'de> for Blob<'_> {
    type Value = Bytes;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Bytes, D::Error> {
        // As bytes: serde_json then hands over the string's contents (escapes resolved)
        // without checking they are UTF-8, a scan of every byte that base64 decoding,
        // which accepts only ASCII, makes anyway.
        deserializer.deserialize_bytes(self)
    }
}

impl<'de> Visitor<'de> for Blob<'_> {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a base64 string")
    }

    fn visit_bytes<E: de::Error>(self, text: &[u8]) -> Result<Bytes, E> {
        // Exactly what `typecheck::decode_base64` accepts: a length that is a multiple of 4
        // and the strict engine's verdict on an output of the same estimated size.
        if !text.len().is_multiple_of(4) {
            return Err(decline());
        }
        let start = self.buffer.len();
        self.buffer
            .resize(start + base64::decoded_len_estimate(text.len()), 0);
        let slot = self.buffer.get_mut(start..).ok_or_else(decline)?;
        let written = base64::Engine::decode_slice(&*crate::b64::ENGINE, text, slot)
            .map_err(|_| decline())?;
        self.buffer.truncate(start + written);
        Ok(self.buffer.split().freeze())
    }
}

/// A member of a string shape: a JSON string satisfying the shape's constraints.
fn string_member<'de, A: MapAccess<'de>>(
    map: &mut A,
    shape: &'static Shape,
) -> Result<String, A::Error> {
    let text: String = map.next_value()?;
    if string_satisfies(&text, shape) {
        Ok(text)
    } else {
        Err(decline())
    }
}

/// A member of a blob shape, decoded into `buffer`, satisfying the shape's length.
fn blob_member<'de, A: MapAccess<'de>>(
    map: &mut A,
    shape: &'static Shape,
    buffer: &mut BytesMut,
) -> Result<Bytes, A::Error> {
    let data = map.next_value_seed(Blob { buffer })?;
    if length_satisfies(data.len(), shape) {
        Ok(data)
    } else {
        Err(decline())
    }
}

/// A capacity for the shared data buffer: base64 decodes to 3/4 of its length, and the body
/// holds all of it.
fn data_capacity(body: &[u8]) -> usize {
    body.len() / 4 * 3 + 3
}

fn put_records(body: &[u8]) -> Option<PutRecordsInput> {
    let buffer = BytesMut::with_capacity(data_capacity(body));
    parse_object(body, PutRecordsVisitor { buffer })
}

struct PutRecordsVisitor {
    buffer: BytesMut,
}

impl<'de> Visitor<'de> for PutRecordsVisitor {
    type Value = PutRecordsInput;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a PutRecords request")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<PutRecordsInput, A::Error> {
        const MEMBERS: &[&str] = &["DryRun", "Records", "StreamARN", "StreamId", "StreamName"];
        let mut input = PutRecordsInput::default();
        let mut records = None;
        let mut seen = 0;
        while let Some(index) = map.next_key_seed(MemberKey(MEMBERS))? {
            first_time(&mut seen, index)?;
            match index {
                0 => input.dry_run = Some(map.next_value()?),
                1 => {
                    records = Some(map.next_value_seed(RecordsSeed {
                        buffer: &mut self.buffer,
                    })?)
                }
                2 => input.stream_arn = Some(string_member(&mut map, &shapes::StreamARN)?),
                3 => input.stream_id = Some(string_member(&mut map, &shapes::StreamId)?),
                _ => input.stream_name = Some(string_member(&mut map, &shapes::StreamName)?),
            }
        }
        // `Records` is required and has a length range.
        let records: Vec<PutRecordsRequestEntry> = records.ok_or_else(decline)?;
        if !length_satisfies(records.len(), &shapes::PutRecordsRequestEntryList) {
            return Err(decline());
        }
        input.records = records;
        Ok(input)
    }
}

struct RecordsSeed<'a> {
    buffer: &'a mut BytesMut,
}

impl<'de> DeserializeSeed<'de> for RecordsSeed<'_> {
    type Value = Vec<PutRecordsRequestEntry>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RecordsSeed<'_> {
    type Value = Vec<PutRecordsRequestEntry>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // More records than the list allows is a validation error: stop reading at once.
        let n_records_max = match &shapes::PutRecordsRequestEntryList.kind {
            crate::shape::ShapeKind::List(list) => list.length.max.unwrap_or(u64::MAX),
            _ => 0,
        };
        let mut records = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(512));
        while let Some(record) = seq.next_element_seed(EntrySeed {
            buffer: &mut *self.buffer,
        })? {
            if records.len() as u64 >= n_records_max {
                return Err(decline());
            }
            records.push(record);
        }
        Ok(records)
    }
}

struct EntrySeed<'a> {
    buffer: &'a mut BytesMut,
}

impl<'de> DeserializeSeed<'de> for EntrySeed<'_> {
    type Value = PutRecordsRequestEntry;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EntrySeed<'_> {
    type Value = PutRecordsRequestEntry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        const MEMBERS: &[&str] = &["Data", "ExplicitHashKey", "PartitionKey"];
        let mut data = None;
        let mut explicit_hash_key = None;
        let mut partition_key = None;
        let mut seen = 0;
        while let Some(index) = map.next_key_seed(MemberKey(MEMBERS))? {
            first_time(&mut seen, index)?;
            match index {
                0 => data = Some(blob_member(&mut map, &shapes::Data, self.buffer)?),
                1 => explicit_hash_key = Some(string_member(&mut map, &shapes::HashKey)?),
                _ => partition_key = Some(string_member(&mut map, &shapes::PartitionKey)?),
            }
        }
        Ok(PutRecordsRequestEntry {
            // `Data` is required.
            data: data.ok_or_else(decline)?,
            explicit_hash_key,
            partition_key,
        })
    }
}

fn put_record(body: &[u8]) -> Option<PutRecordInput> {
    let buffer = BytesMut::with_capacity(data_capacity(body));
    parse_object(body, PutRecordVisitor { buffer })
}

struct PutRecordVisitor {
    buffer: BytesMut,
}

impl<'de> Visitor<'de> for PutRecordVisitor {
    type Value = PutRecordInput;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a PutRecord request")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<PutRecordInput, A::Error> {
        const MEMBERS: &[&str] = &[
            "Data",
            "DryRun",
            "ExplicitHashKey",
            "PartitionKey",
            "SequenceNumberForOrdering",
            "StreamARN",
            "StreamId",
            "StreamName",
        ];
        let mut input = PutRecordInput::default();
        let mut data = None;
        let mut seen = 0;
        while let Some(index) = map.next_key_seed(MemberKey(MEMBERS))? {
            first_time(&mut seen, index)?;
            match index {
                0 => data = Some(blob_member(&mut map, &shapes::Data, &mut self.buffer)?),
                1 => input.dry_run = Some(map.next_value()?),
                2 => input.explicit_hash_key = Some(string_member(&mut map, &shapes::HashKey)?),
                3 => input.partition_key = Some(string_member(&mut map, &shapes::PartitionKey)?),
                4 => {
                    input.sequence_number_for_ordering =
                        Some(string_member(&mut map, &shapes::SequenceNumber)?)
                }
                5 => input.stream_arn = Some(string_member(&mut map, &shapes::StreamARN)?),
                6 => input.stream_id = Some(string_member(&mut map, &shapes::StreamId)?),
                _ => input.stream_name = Some(string_member(&mut map, &shapes::StreamName)?),
            }
        }
        // `Data` is required.
        input.data = data.ok_or_else(decline)?;
        Ok(input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::ShapeKind;

    /// The member lists above must be the model's, in the model's order.
    #[test]
    fn member_lists_follow_the_model() {
        let names = |shape: &Shape| match &shape.kind {
            ShapeKind::Structure(s) => s.members.iter().map(|m| m.name).collect::<Vec<_>>(),
            _ => Vec::new(),
        };
        assert_eq!(
            names(&shapes::PutRecordsInput),
            ["DryRun", "Records", "StreamARN", "StreamId", "StreamName"]
        );
        assert_eq!(
            names(&shapes::PutRecordsRequestEntry),
            ["Data", "ExplicitHashKey", "PartitionKey"]
        );
        assert_eq!(
            names(&shapes::PutRecordInput),
            [
                "Data",
                "DryRun",
                "ExplicitHashKey",
                "PartitionKey",
                "SequenceNumberForOrdering",
                "StreamARN",
                "StreamId",
                "StreamName"
            ]
        );
    }

    #[test]
    fn decodes_a_valid_batch_into_one_buffer() {
        let body = br#"{"StreamName":"s","Records":[{"Data":"aGVsbG8=","PartitionKey":"k"},{"Data":"","PartitionKey":"k","ExplicitHashKey":"5"}]}"#;
        let decoded = decode(Operation::PutRecords, Format::Json, body);
        let Some(Request::PutRecords(input)) = decoded else {
            panic!("declined: {decoded:?}");
        };
        assert_eq!(input.stream_name.as_deref(), Some("s"));
        assert_eq!(input.records.len(), 2);
        assert_eq!(
            input.records.first().map(|r| r.data.as_ref()),
            Some(&b"hello"[..])
        );
        assert_eq!(
            input
                .records
                .get(1)
                .and_then(|r| r.explicit_hash_key.as_deref()),
            Some("5")
        );
    }

    #[test]
    fn declines_what_it_does_not_handle() {
        let bodies: &[&[u8]] = &[
            br#"{"StreamName":"s","Records":[{"Data":"aGVsbG8=","PartitionKey":"k","X":1}]}"#,
            br#"{"StreamName":"s","StreamName":"t","Records":[{"Data":"","PartitionKey":"k"}]}"#,
            br#"{"StreamName":null,"Records":[{"Data":"","PartitionKey":"k"}]}"#,
            br#"{"StreamName":"s","Records":[{"Data":"abc","PartitionKey":"k"}]}"#,
            br#"{"StreamName":"s","Records":[{"Data":"","PartitionKey":""}]}"#,
            br#"{"StreamName":"s","Records":[]}"#,
            br#"{"StreamName":"s","DryRun":"true","Records":[{"Data":""}]}"#,
            br#"{"StreamName":"s","Records":[{"Data":""}]} x"#,
            br#"[]"#,
        ];
        for body in bodies {
            assert_eq!(
                decode(Operation::PutRecords, Format::Json, body),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(decode(Operation::ListStreams, Format::Json, b"{}"), None);
        assert_eq!(decode(Operation::PutRecords, Format::Cbor, b"\xa0"), None);
    }
}
