//! The format-neutral tree a request body is parsed into before it is type-checked.
//!
//! JSON and CBOR both parse into [`Value`]; after type checking, the tree holds exactly the
//! members of the input shape (in model order), numbers coerced to the shape's type, blobs
//! decoded and timestamps in [`EpochMillis`]. It is not used for responses, which the generated
//! structs encode directly.

use crate::EpochMillis;
use bytes::Bytes;
use std::fmt;

/// A parsed JSON or CBOR value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// An integer that fits `i64`; larger integers parse as [`Value::Float`].
    Int(i64),
    Float(f64),
    String(String),
    /// A CBOR byte string, or a JSON base64 string once type-checked as a blob.
    Blob(Bytes),
    /// A CBOR tag-1 date, or a number once type-checked as a timestamp.
    Timestamp(EpochMillis),
    List(Vec<Value>),
    /// Object entries in wire order (duplicates kept until type checking).
    Map(Vec<(String, Value)>),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The entry named `key` (the last one if repeated).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A short name of the variant, for diagnostics.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::String(_) => "string",
            Value::Blob(_) => "blob",
            Value::Timestamp(_) => "timestamp",
            Value::List(_) => "list",
            Value::Map(_) => "map",
        }
    }
}

/// Java-style rendering, the way AWS prints values in validation messages: strings unquoted,
/// lists `[a, b]`, maps `{k=v}`, blobs as `java.nio.HeapByteBuffer[pos=0 lim=N cap=N]`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::String(s) => f.write_str(s),
            Value::Blob(b) => write!(f, "java.nio.HeapByteBuffer[pos=0 lim={0} cap={0}]", b.len()),
            Value::Timestamp(t) => write!(f, "{}", t.0),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Value::Map(entries) => {
                f.write_str("{")?;
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}={v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_java_style() {
        let value = Value::Map(vec![
            ("a".to_owned(), Value::String("x y".to_owned())),
            (
                "b".to_owned(),
                Value::List(vec![Value::Int(1), Value::Null, Value::Bool(true)]),
            ),
            ("c".to_owned(), Value::Blob(Bytes::from_static(b"abc"))),
        ]);
        assert_eq!(
            value.to_string(),
            "{a=x y, b=[1, null, true], c=java.nio.HeapByteBuffer[pos=0 lim=3 cap=3]}"
        );
        assert_eq!(value.get("b").map(Value::kind_name), Some("list"));
        assert_eq!(value.get("zz"), None);
    }
}
