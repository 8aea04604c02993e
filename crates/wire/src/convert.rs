//! Conversion of a type-checked, validated [`Value`] tree into typed structs.
//!
//! The generated structs and enums implement [`FromValue`] on top of the impls here. After type
//! checking and validation every conversion succeeds; a mismatch means the tree did not come
//! from the checker (or a generator bug) and is reported as a `SerializationException` rather
//! than a panic. Deliberately not here: any check AWS reports (those happen before).

use crate::value::Value;
use crate::{EpochMillis, WireError};
use bytes::Bytes;
use std::collections::BTreeMap;

/// A typed value built from a checked [`Value`].
pub trait FromValue: Sized {
    fn from_value(value: Value) -> Result<Self, WireError>;
}

/// The error for a tree that does not fit the typed struct.
pub fn mismatch(expected: &str, found: &Value) -> WireError {
    WireError::serialization(Some(format!(
        "expected {expected}, found {}",
        found.kind_name()
    )))
}

/// The entries of a structure value.
pub fn entries(value: Value) -> Result<Vec<(String, Value)>, WireError> {
    match value {
        Value::Map(entries) => Ok(entries),
        other => Err(mismatch("a structure", &other)),
    }
}

/// A required member, which validation guarantees is present.
pub fn required<T>(value: Option<T>, member: &str) -> Result<T, WireError> {
    value.ok_or_else(|| WireError::serialization(Some(format!("missing required member {member}"))))
}

impl FromValue for String {
    fn from_value(value: Value) -> Result<Self, WireError> {
        match value {
            Value::String(s) => Ok(s),
            other => Err(mismatch("a string", &other)),
        }
    }
}

impl FromValue for bool {
    fn from_value(value: Value) -> Result<Self, WireError> {
        match value {
            Value::Bool(b) => Ok(b),
            other => Err(mismatch("a boolean", &other)),
        }
    }
}

impl FromValue for i32 {
    fn from_value(value: Value) -> Result<Self, WireError> {
        match value {
            Value::Int(i) => i32::try_from(i).map_err(|_| mismatch("an integer", &Value::Int(i))),
            other => Err(mismatch("an integer", &other)),
        }
    }
}

impl FromValue for i64 {
    fn from_value(value: Value) -> Result<Self, WireError> {
        match value {
            Value::Int(i) => Ok(i),
            other => Err(mismatch("a long", &other)),
        }
    }
}

impl FromValue for f64 {
    fn from_value(value: Value) -> Result<Self, WireError> {
        match value {
            Value::Float(x) => Ok(x),
            Value::Int(i) => Ok(i as f64),
            other => Err(mismatch("a double", &other)),
        }
    }
}

impl FromValue for EpochMillis {
    fn from_value(value: Value) -> Result<Self, WireError> {
        match value {
            Value::Timestamp(t) => Ok(t),
            other => Err(mismatch("a timestamp", &other)),
        }
    }
}

impl FromValue for Bytes {
    fn from_value(value: Value) -> Result<Self, WireError> {
        match value {
            Value::Blob(b) => Ok(b),
            other => Err(mismatch("a blob", &other)),
        }
    }
}

impl<T: FromValue> FromValue for Vec<T> {
    fn from_value(value: Value) -> Result<Self, WireError> {
        match value {
            Value::List(items) => items.into_iter().map(T::from_value).collect(),
            other => Err(mismatch("a list", &other)),
        }
    }
}

impl<T: FromValue> FromValue for BTreeMap<String, T> {
    fn from_value(value: Value) -> Result<Self, WireError> {
        match value {
            Value::Map(entries) => entries
                .into_iter()
                .map(|(k, v)| Ok((k, T::from_value(v)?)))
                .collect(),
            other => Err(mismatch("a map", &other)),
        }
    }
}

impl FromValue for Value {
    fn from_value(value: Value) -> Result<Self, WireError> {
        Ok(value)
    }
}

/// A generated enum from its wire string; `type_name` names the enum in the error.
pub fn enum_value<T>(
    value: Value,
    type_name: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<T, WireError> {
    match value {
        Value::String(s) => match parse(&s) {
            Some(v) => Ok(v),
            None => Err(WireError::serialization(Some(format!(
                "'{s}' is not a {type_name}"
            )))),
        },
        other => Err(mismatch(type_name, &other)),
    }
}
