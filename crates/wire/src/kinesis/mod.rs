//! Amazon Kinesis Data Streams (`Kinesis_20131202`): the generated model plus the event-stream
//! helpers of SubscribeToShard.
//!
//! Everything typed lives in `generated.rs` (written by `tools/codegen` from
//! `model/kinesis-2013-12-02.json`): one struct per model structure, one enum per string enum,
//! `Operation`, `Request`, `Response`, `decode_request`, `encode_response` and the `shapes`
//! table. This file adds what the model cannot say: how a SubscribeToShard event is framed.
//! Deliberately not here: Kinesis semantics (the streams crate) and HTTP (the server crate).

mod generated;

pub use generated::*;

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
