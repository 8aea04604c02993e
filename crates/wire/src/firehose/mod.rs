//! Amazon Data Firehose (`Firehose_20150804`): the generated model.
//!
//! Everything typed lives in `generated.rs` (written by `tools/codegen` from
//! `model/firehose-2015-08-04.json`): one struct per model structure, one enum per string enum,
//! `Operation`, `Request`, `Response`, `decode_request`, `encode_response` and the `shapes`
//! table. This file adds only [`decode_stored`], which reads back a structure the Firehose
//! service persisted with [`crate::encode::to_vec`].
//! Deliberately not here: Firehose semantics (the firehose crate) and HTTP (the server crate).

mod generated;

pub use generated::*;

/// Reads a structure that was encoded as JSON with [`crate::encode::to_vec`] (the Firehose
/// service keeps destination descriptions in the catalog that way), type-checking it against
/// its shape exactly as a request body is checked.
pub fn decode_stored<T: crate::convert::FromValue>(
    json: &[u8],
    shape: &'static crate::shape::Shape,
) -> Result<T, crate::WireError> {
    T::from_value(crate::decode_checked(crate::Format::Json, json, shape)?)
}
