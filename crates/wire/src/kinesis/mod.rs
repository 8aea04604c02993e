//! Amazon Kinesis Data Streams (`Kinesis_20131202`): the generated model plus the event-stream
//! helpers of SubscribeToShard.
//!
//! Everything typed lives in `generated.rs` (written by `tools/codegen` from
//! `model/kinesis-2013-12-02.json`): one struct per model structure, one enum per string enum,
//! `Operation`, `Request`, `Response`, the generic `decode_request`, `encode_response` and the
//! `shapes` table. This file adds what the model cannot say: how a SubscribeToShard event is
//! framed, and the entry point [`decode_request`] that sends the hot requests through the
//! one-pass decoder of [`fast`] first. Deliberately not here: Kinesis semantics (the streams
//! crate) and HTTP (the server crate).

pub mod fast;
mod generated;

// `decode_request` and `encode_response` below shadow the generated ones the glob would
// re-export.
pub use generated::*;

use crate::WireError;

/// Parse, type-check and validate a request body of `op`, exactly as AWS does: the typed
/// request, or the `SerializationException`/`ValidationException` AWS would send.
///
/// PutRecords and PutRecord in JSON try [`fast::decode`] first, which answers only for valid
/// requests and then with what the generic pipeline gives; everything else, and every
/// request it declines, goes through [`decode_request_generic`].
pub fn decode_request(op: Operation, format: Format, body: &[u8]) -> Result<Request, WireError> {
    match fast::decode(op, format, body) {
        Some(request) => Ok(request),
        None => generated::decode_request(op, format, body),
    }
}

/// The generic pipeline alone (parse to a tree, type-check, validate, convert), for every
/// operation; tests compare [`fast`] against it.
pub fn decode_request_generic(
    op: Operation,
    format: Format,
    body: &[u8],
) -> Result<Request, WireError> {
    generated::decode_request(op, format, body)
}

use crate::Format;
use crate::encode::Encode;

/// The body of a response. GetRecords is written into a buffer sized for it up front (its
/// body runs to 14 MB of base64); everything else goes through the generated encoder.
pub fn encode_response(format: Format, response: &Response) -> Vec<u8> {
    match response {
        Response::GetRecords(output) => crate::encode::to_vec_with_capacity(
            format,
            output,
            get_records_size_hint(format, output),
        ),
        _ => generated::encode_response(format, response),
    }
}

/// About the encoded size of a GetRecords body: per record the data (base64 in JSON), the
/// partition key and the sequence number, plus the keys and the timestamp around them; then
/// the iterator and the rest.
fn get_records_size_hint(format: Format, output: &GetRecordsOutput) -> usize {
    const PER_RECORD: usize = 160;
    let iterator = output.next_shard_iterator.as_ref().map_or(0, String::len);
    output
        .records
        .iter()
        .map(|record| {
            let data = match format {
                Format::Json => record.data.len().div_ceil(3) * 4,
                Format::Cbor => record.data.len(),
            };
            let key = record.partition_key.as_ref().map_or(0, String::len);
            data + key + record.sequence_number.len() + PER_RECORD
        })
        .sum::<usize>()
        + iterator
        + PER_RECORD
}

/// The JSON or CBOR payload of an event-stream event (`SubscribeToShardEvent`), without
/// framing.
pub fn encode_event_payload<T: Encode + ?Sized>(format: Format, event: &T) -> Vec<u8> {
    crate::encode::to_vec(format, event)
}

/// A framed `SubscribeToShardEvent` message, ready to write to the response stream.
pub fn encode_subscribe_to_shard_event(format: Format, event: &SubscribeToShardEvent) -> Vec<u8> {
    crate::eventstream::encode_event(format, "SubscribeToShardEvent", event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get_records_output(n_records: u64) -> GetRecordsOutput {
        let records = (0..n_records)
            .map(|i| Record {
                approximate_arrival_timestamp: Some(crate::EpochMillis(1_764_000_000_123)),
                data: bytes::Bytes::from(vec![u8::try_from(i % 251).unwrap_or(0); 1024]),
                encryption_type: Some(EncryptionType::None),
                partition_key: Some(format!("partition-key-{i}")),
                sequence_number: format!("4966{i:052}"),
            })
            .collect();
        GetRecordsOutput {
            records,
            // Longer than any iterator Millrace hands out.
            next_shard_iterator: Some("AAAAAAAAAAE".repeat(40)),
            millis_behind_latest: Some(12_345),
            child_shards: None,
        }
    }

    #[test]
    fn get_records_bodies_are_the_generated_ones_in_a_buffer_that_never_grew() {
        for n_records in [1000, 1, 0] {
            let response = Response::GetRecords(get_records_output(n_records));
            let Response::GetRecords(output) = &response else {
                unreachable!("built above");
            };
            for format in [Format::Json, Format::Cbor] {
                let body = encode_response(format, &response);
                assert_eq!(body, generated::encode_response(format, &response));
                // The hint covers the body, so the buffer was allocated once, and for a
                // full batch does not overshoot by more than a tenth.
                let hint = get_records_size_hint(format, output);
                assert!(
                    hint >= body.len(),
                    "{format:?}, {n_records} records: hint {hint} < body {}",
                    body.len()
                );
                if n_records == 1000 {
                    assert!(
                        hint < body.len() + body.len() / 10,
                        "{format:?}: hint {hint} for {}",
                        body.len()
                    );
                }
            }
        }
    }
}
