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

// `decode_request` below shadows the generated one the glob would re-export.
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

/// The JSON or CBOR payload of an event-stream event (`SubscribeToShardEvent`), without
/// framing.
pub fn encode_event_payload<T: Encode + ?Sized>(format: Format, event: &T) -> Vec<u8> {
    crate::encode::to_vec(format, event)
}

/// A framed `SubscribeToShardEvent` message, ready to write to the response stream.
pub fn encode_subscribe_to_shard_event(format: Format, event: &SubscribeToShardEvent) -> Vec<u8> {
    crate::eventstream::encode_event(format, "SubscribeToShardEvent", event)
}
