//! The AWS wire protocols of Millrace and nothing else.
//!
//! This crate turns the HTTP body of an AWS JSON 1.1 (`application/x-amz-json-1.1`) or CBOR 1.1
//! (`application/x-amz-cbor-1.1`) request into a typed, validated request, and typed responses
//! and errors back into bytes, byte for byte the way AWS does. The pipeline for a request is:
//!
//! 1. [`json`] / [`cbor`] parse the body into a [`value::Value`] tree (bounded depth);
//! 2. [`typecheck`] walks it against the operation's input [`shape::Shape`], producing AWS's
//!    `SerializationException` messages for wrong types and normalising numbers, blobs and
//!    timestamps;
//! 3. [`validate`] checks the model constraints and collects AWS `ValidationException` messages;
//! 4. the generated code in [`kinesis`] and [`firehose`] converts the tree into typed structs.
//!
//! Responses go the other way without an intermediate tree: the generated structs implement
//! [`encode::Encode`], which writes JSON or CBOR directly.
//!
//! Deliberately not here: HTTP (status lines, headers, routing, signatures) belongs to the server
//! crate, and the meaning of an operation belongs to the service crates. Any byte sequence given
//! to a decoder yields `Ok` or an error, never a panic.

pub mod cbor;
pub mod convert;
pub mod encode;
pub mod error;
pub mod eventstream;
pub mod firehose;
pub mod json;
pub mod kinesis;
pub mod shape;
pub mod sigv4;
pub mod typecheck;
pub mod validate;
pub mod value;

pub use error::ErrorKind;

/// The base64 engine for blobs: the runtime-detected SIMD engine (AVX2/NEON) where the crate
/// has one, the scalar standard engine elsewhere. Both are strict: canonical padding, zero
/// trailing bits.
mod b64 {
    #[cfg(any(
        target_arch = "x86_64",
        all(target_arch = "aarch64", target_feature = "neon")
    ))]
    pub(crate) static ENGINE: std::sync::LazyLock<base64::engine::Simd> =
        std::sync::LazyLock::new(|| {
            base64::engine::Simd::standard(base64::engine::general_purpose::PAD)
        });

    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "aarch64", target_feature = "neon")
    )))]
    pub(crate) static ENGINE: base64::engine::GeneralPurpose =
        base64::engine::general_purpose::STANDARD;
}

/// The body format of a request, and therefore of its response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// AWS JSON 1.1 (`application/x-amz-json-1.1`); 1.0 is accepted on input.
    Json,
    /// AWS CBOR 1.1 (`application/x-amz-cbor-1.1`), the default of the AWS SDK for Java.
    Cbor,
}

impl Format {
    /// The format of a request `Content-Type`, ignoring parameters after `;` and ASCII case.
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if media_type.eq_ignore_ascii_case("application/x-amz-json-1.1")
            || media_type.eq_ignore_ascii_case("application/x-amz-json-1.0")
        {
            Some(Format::Json)
        } else if media_type.eq_ignore_ascii_case("application/x-amz-cbor-1.1") {
            Some(Format::Cbor)
        } else {
            None
        }
    }

    /// The `Content-Type` of a response body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/x-amz-json-1.1",
            Format::Cbor => "application/x-amz-cbor-1.1",
        }
    }
}

/// A point in time as milliseconds since the Unix epoch, the resolution of every AWS timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EpochMillis(pub i64);

/// A request that could not be decoded: a `SerializationException` (bad syntax or types) or a
/// `ValidationException` (constraint violations), with the message AWS would send.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {}", kind.type_name(), message.as_deref().unwrap_or("(no message)"))]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: Option<String>,
}

impl WireError {
    /// A `SerializationException`, with or without a message.
    pub fn serialization(message: Option<String>) -> WireError {
        WireError {
            kind: ErrorKind::SerializationException,
            message,
        }
    }

    /// A `ValidationException` with a message.
    pub fn validation(message: String) -> WireError {
        WireError {
            kind: ErrorKind::ValidationException,
            message: Some(message),
        }
    }
}

/// The body of an error response: `{"__type":"ResourceNotFoundException","message":"..."}` in
/// JSON, a map with the same keys in CBOR.
///
/// `SerializationException` carries its text under `Message` (capital M) as AWS sends it; the
/// message key is omitted when `message` is `None`.
pub fn encode_error(format: Format, kind: ErrorKind, message: Option<&str>) -> Vec<u8> {
    use encode::Writer;
    fn write<W: Writer>(w: &mut W, kind: ErrorKind, message: Option<&str>) {
        w.begin_map(1 + usize::from(message.is_some()));
        w.key("__type");
        w.string(kind.type_name());
        if let Some(message) = message {
            w.key(kind.message_key());
            w.string(message);
        }
        w.end_map();
    }
    match format {
        Format::Json => {
            let mut w = json::JsonWriter::new();
            write(&mut w, kind, message);
            w.finish()
        }
        Format::Cbor => {
            let mut w = cbor::CborWriter::new();
            write(&mut w, kind, message);
            w.finish()
        }
    }
}

/// Parse a request body and check it against an operation's input structure: syntax and
/// type errors give `SerializationException`, constraint violations `ValidationException`.
/// The returned tree is ready for the generated [`convert::FromValue`] impls.
pub fn decode_checked(
    format: Format,
    body: &[u8],
    input: &'static shape::Shape,
) -> Result<value::Value, WireError> {
    let parsed = decode_object(format, body)?;
    let checked = typecheck::check_request(parsed, input, format)?;
    validate::validate_request(&checked, input)?;
    Ok(checked)
}

/// Parse a request body that must be an object (map); anything else, including an empty or
/// malformed body, is a `SerializationException` without a message, as AWS answers it.
pub fn decode_object(format: Format, body: &[u8]) -> Result<value::Value, WireError> {
    let parsed = match format {
        Format::Json => json::parse(body),
        Format::Cbor => cbor::parse(body),
    };
    match parsed {
        Ok(value @ value::Value::Map(_)) => Ok(value),
        _ => Err(WireError::serialization(None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let cases = [
            ("application/x-amz-json-1.1", Some(Format::Json)),
            ("application/x-amz-json-1.0", Some(Format::Json)),
            (
                "application/x-amz-json-1.1; charset=utf-8",
                Some(Format::Json),
            ),
            ("Application/X-Amz-Cbor-1.1", Some(Format::Cbor)),
            ("application/x-amz-cbor-1.1;x=y", Some(Format::Cbor)),
            ("application/json", None),
            ("", None),
        ];
        for (content_type, expected) in cases {
            assert_eq!(
                Format::from_content_type(content_type),
                expected,
                "{content_type}"
            );
        }
        assert_eq!(Format::Json.content_type(), "application/x-amz-json-1.1");
        assert_eq!(Format::Cbor.content_type(), "application/x-amz-cbor-1.1");
    }

    #[test]
    fn error_bodies() {
        let body = encode_error(
            Format::Json,
            ErrorKind::ResourceNotFoundException,
            Some("Stream x not found."),
        );
        assert_eq!(
            String::from_utf8_lossy(&body),
            r#"{"__type":"ResourceNotFoundException","message":"Stream x not found."}"#
        );
        let body = encode_error(Format::Json, ErrorKind::SerializationException, Some("bad"));
        assert_eq!(
            String::from_utf8_lossy(&body),
            r#"{"__type":"SerializationException","Message":"bad"}"#
        );
        let body = encode_error(Format::Json, ErrorKind::UnknownOperationException, None);
        assert_eq!(
            String::from_utf8_lossy(&body),
            r#"{"__type":"UnknownOperationException"}"#
        );

        let body = encode_error(Format::Cbor, ErrorKind::ValidationException, Some("m"));
        let parsed = cbor::parse(&body).map(|v| v.to_string());
        assert_eq!(
            parsed.as_deref(),
            Ok(r#"{__type=ValidationException, message=m}"#)
        );
    }
}
