//! Type checking of a parsed request against its input shape, with AWS's exact
//! `SerializationException` messages (as recorded by kinesalite against real Kinesis).
//!
//! The walk consumes the parsed [`Value`] and returns the normalised tree the validator and the
//! generated converters expect: unknown members dropped, explicit `null` members treated as
//! absent, structure members in model order, integers floored and clamped to their Java range,
//! JSON base64 strings decoded into [`Value::Blob`], numbers for timestamps turned into
//! [`Value::Timestamp`] (seconds in JSON; milliseconds in CBOR, as the AWS SDK for Java writes
//! them). The first type error in member order wins, as on AWS. Deliberately not here:
//! constraints (`required`, lengths, patterns), which are [`crate::validate`]'s.

use crate::cbor::float_to_i64;
use crate::shape::{Shape, ShapeKind, StructureShape};
use crate::value::Value;
use crate::{EpochMillis, Format, WireError};
use base64::Engine as _;
use bytes::Bytes;

/// What AWS calls a JSON number it cannot use.
const BIG_NUMBER: &str = "class com.amazon.coral.value.json.numbers.TruncatingBigNumber";
const START_OF_LIST: &str = "Start of list found where not expected";
const START_OF_MAP: &str = "Start of structure or map found where not expected.";

/// Type-check a request body against the operation's input structure shape. A body that is not
/// an object is a `SerializationException` without a message.
pub fn check_request(
    value: Value,
    input: &'static Shape,
    format: Format,
) -> Result<Value, WireError> {
    match (value, &input.kind) {
        (Value::Map(entries), ShapeKind::Structure(structure)) => {
            check_structure(entries, structure, format)
        }
        _ => Err(WireError::serialization(None)),
    }
}

fn type_error(message: String) -> WireError {
    WireError::serialization(Some(message))
}

/// Type-check one value against `shape`; `Null` stays `Null` (list elements and map values
/// may be null; the validator reports them).
pub fn check(value: Value, shape: &'static Shape, format: Format) -> Result<Value, WireError> {
    if value.is_null() {
        return Ok(Value::Null);
    }
    match &shape.kind {
        ShapeKind::Structure(structure) => match value {
            Value::Map(entries) => check_structure(entries, structure, format),
            Value::List(_) => Err(type_error(START_OF_LIST.to_owned())),
            _ => Err(type_error("Expected null".to_owned())),
        },
        ShapeKind::List(list) => match value {
            Value::List(items) => {
                let mut checked = Vec::with_capacity(items.len());
                for item in items {
                    checked.push(check(item, list.member, format)?);
                }
                Ok(Value::List(checked))
            }
            Value::Map(_) => Err(type_error(START_OF_MAP.to_owned())),
            _ => Err(type_error("Expected list or null".to_owned())),
        },
        ShapeKind::Map(map) => match value {
            Value::Map(entries) => {
                // Repeated keys: the last one wins, as when Jackson builds a map.
                let mut checked: Vec<(String, Value)> = Vec::with_capacity(entries.len());
                for (key, item) in entries {
                    let item = check(item, map.value, format)?;
                    if let Some(slot) = checked.iter_mut().find(|(k, _)| *k == key) {
                        slot.1 = item;
                    } else {
                        checked.push((key, item));
                    }
                }
                Ok(Value::Map(checked))
            }
            Value::List(_) => Err(type_error(START_OF_LIST.to_owned())),
            _ => Err(type_error("Expected map or null".to_owned())),
        },
        ShapeKind::String(_) => match value {
            Value::String(s) => Ok(Value::String(s)),
            other => Err(scalar_error(&other, "an String")),
        },
        ShapeKind::Boolean => match value {
            Value::Bool(b) => Ok(Value::Bool(b)),
            // AWS reads these spellings and refuses other strings, printed upper-cased.
            Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Ok(Value::Bool(true)),
                "false" | "no" | "0" => Ok(Value::Bool(false)),
                _ => Err(type_error(format!(
                    "'{}' can not be converted to an Boolean",
                    s.to_uppercase()
                ))),
            },
            other => Err(scalar_error(&other, "an Boolean")),
        },
        ShapeKind::Integer(_) => {
            integer(value, "Integer", i64::from(i32::MIN), i64::from(i32::MAX))
        }
        ShapeKind::Long(_) => integer(value, "Long", i64::MIN, i64::MAX),
        ShapeKind::Float(_) => float(value, "Float"),
        ShapeKind::Double(_) => float(value, "Double"),
        ShapeKind::Blob(_) => match value {
            Value::Blob(b) => Ok(Value::Blob(b)),
            Value::String(s) => decode_base64(&s).map(Value::Blob),
            other => Err(scalar_error(&other, "a Blob")),
        },
        ShapeKind::Timestamp => match value {
            Value::Timestamp(t) => Ok(Value::Timestamp(t)),
            Value::Int(i) => Ok(Value::Timestamp(EpochMillis(match format {
                Format::Json => i.saturating_mul(1000),
                Format::Cbor => i,
            }))),
            Value::Float(x) => Ok(Value::Timestamp(EpochMillis(match format {
                Format::Json => float_to_i64((x * 1000.0).round()),
                Format::Cbor => float_to_i64(x),
            }))),
            other => Err(scalar_error(&other, "milliseconds since epoch")),
        },
    }
}

fn check_structure(
    entries: Vec<(String, Value)>,
    shape: &StructureShape,
    format: Format,
) -> Result<Value, WireError> {
    let mut slots: Vec<Option<(String, Value)>> = Vec::new();
    slots.resize_with(shape.members.len(), || None);
    for (key, value) in entries {
        let Some(index) = shape.members.iter().position(|m| m.name == key) else {
            continue;
        };
        if let Some(slot) = slots.get_mut(index) {
            // A later `null` clears an earlier value, as a JavaScript object would.
            *slot = if value.is_null() {
                None
            } else {
                Some((key, value))
            };
        }
    }
    let mut checked = Vec::with_capacity(slots.iter().flatten().count());
    for (member, slot) in shape.members.iter().zip(slots) {
        if let Some((key, value)) = slot {
            checked.push((key, check(value, member.shape, format)?));
        }
    }
    Ok(Value::Map(checked))
}

/// The message for a scalar, list or map where a scalar of another type was expected;
/// `target` is AWS's wording of the expected type ("an String", "a Blob").
fn scalar_error(value: &Value, target: &str) -> WireError {
    type_error(match value {
        Value::List(_) => return type_error(START_OF_LIST.to_owned()),
        Value::Map(_) => return type_error(START_OF_MAP.to_owned()),
        Value::Bool(_) => format!("class java.lang.Boolean can not be converted to {target}"),
        Value::Int(_) | Value::Float(_) | Value::Timestamp(_) => {
            format!("{BIG_NUMBER} can not be converted to {target}")
        }
        Value::String(_) => format!("class java.lang.String can not be converted to {target}"),
        Value::Blob(_) => format!("class java.nio.HeapByteBuffer can not be converted to {target}"),
        Value::Null => format!("null can not be converted to {target}"),
    })
}

/// Integers are floored when given as decimals and clamped to the Java type's range.
fn integer(value: Value, java: &str, min: i64, max: i64) -> Result<Value, WireError> {
    match value {
        Value::Int(i) => Ok(Value::Int(i.clamp(min, max))),
        Value::Float(x) => Ok(Value::Int(float_to_i64(x.floor()).clamp(min, max))),
        Value::Timestamp(t) => Ok(Value::Int(t.0.clamp(min, max))),
        Value::List(_) => Err(type_error(START_OF_LIST.to_owned())),
        Value::Map(_) => Err(type_error(START_OF_MAP.to_owned())),
        Value::Bool(_) => Err(type_error(format!(
            "class java.lang.Boolean can not be converted to an {java}"
        ))),
        Value::String(_) => Err(type_error(format!(
            "class java.lang.String can not be converted to an {java}"
        ))),
        Value::Blob(_) => Err(type_error(format!(
            "class java.nio.HeapByteBuffer can not be converted to an {java}"
        ))),
        Value::Null => Ok(Value::Null),
    }
}

fn float(value: Value, java: &str) -> Result<Value, WireError> {
    match value {
        Value::Int(i) => Ok(Value::Float(i as f64)),
        Value::Float(x) => Ok(Value::Float(x)),
        Value::Timestamp(t) => Ok(Value::Float(t.0 as f64)),
        other => integer(other, java, 0, 0),
    }
}

/// Decode a JSON blob, refusing exactly what AWS refuses, with its messages (including its
/// spelling of "dectected"). Decodes straight into the returned buffer.
///
/// The strict decoder accepts exactly the canonical base64 AWS accepts (length a multiple of
/// 4, alphabet, padding only at the end, zero trailing bits), so the common valid blob costs
/// one decoding pass; the character scan that picks AWS's message runs only on failure.
pub fn decode_base64(text: &str) -> Result<Bytes, WireError> {
    if text.len().is_multiple_of(4) {
        let mut decoded = vec![0u8; base64::decoded_len_estimate(text.len())];
        if let Ok(written) = crate::b64::ENGINE.decode_slice(text, &mut decoded) {
            decoded.truncate(written);
            return Ok(Bytes::from(decoded));
        }
    }
    Err(base64_error(text))
}

/// The message AWS gives for a blob string that is not canonical base64.
fn base64_error(text: &str) -> WireError {
    let fail =
        |detail: String| type_error(format!("'{text}' can not be converted to a Blob: {detail}"));
    // AWS counts UTF-16 code units, as Java's String.length() does.
    let length = if text.is_ascii() {
        text.len()
    } else {
        text.encode_utf16().count()
    };
    if length % 4 != 0 {
        return fail(format!(
            "Base64 encoded length is expected a multiple of 4 bytes but found: {length}"
        ));
    }
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let valid = c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '=';
        let misplaced_pad = c == '=' && chars.peek().is_some_and(|next| *next != '=');
        if !valid || misplaced_pad {
            return fail(format!("Invalid Base64 character: '{c}'"));
        }
    }
    fail("Invalid last non-pad Base64 character dectected".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_messages() {
        let cases = [
            (
                "23456",
                "'23456' can not be converted to a Blob: Base64 encoded length is expected a multiple of 4 bytes but found: 5",
            ),
            (
                "=+/=",
                "'=+/=' can not be converted to a Blob: Invalid Base64 character: '='",
            ),
            (
                "+/+=",
                "'+/+=' can not be converted to a Blob: Invalid last non-pad Base64 character dectected",
            ),
            (
                "ab-d",
                "'ab-d' can not be converted to a Blob: Invalid Base64 character: '-'",
            ),
            (
                "AAAA====",
                "'AAAA====' can not be converted to a Blob: Invalid last non-pad Base64 character dectected",
            ),
            (
                "ééé",
                "'ééé' can not be converted to a Blob: Base64 encoded length is expected a multiple of 4 bytes but found: 3",
            ),
        ];
        for (input, message) in cases {
            assert_eq!(
                decode_base64(input),
                Err(WireError::serialization(Some(message.to_owned()))),
                "{input}"
            );
        }
        assert_eq!(decode_base64(""), Ok(Bytes::new()));
        assert_eq!(decode_base64("aGVsbG8="), Ok(Bytes::from_static(b"hello")));
        assert_eq!(decode_base64("AA=="), Ok(Bytes::from_static(&[0])));
        assert_eq!(decode_base64("AAA="), Ok(Bytes::from_static(&[0, 0])));
        // Non-ASCII text of a byte length divisible by 4 still gets AWS's length message.
        assert!(
            decode_base64("éé")
                .is_err_and(|e| e.message.as_deref().is_some_and(|m| m.contains("found: 2")))
        );
        for bad in ["====", "A===", "AB==", "AA=A", "AAA\n"] {
            assert!(decode_base64(bad).is_err(), "{bad}");
        }
    }
}
