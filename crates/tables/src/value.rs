//! DynamoDB attribute values as they travel: the JSON form `{"S": "x"}`, `{"N": "1"}`, ...
//!
//! Items stay in that JSON form (a `serde_json::Map` of attribute name to attribute value)
//! from the request to redb and back, so nothing is converted twice. This module checks
//! them, compares them, measures them and turns key attributes into the bytes redb orders.
//! Numbers are compared and added as `i128` when both are integers and as `f64` otherwise:
//! DynamoDB's 38-digit decimals are not reproduced (documented in docs/dynamodb.md).

use std::cmp::Ordering;

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::Error;

pub type Item = Map<String, Value>;

/// An item's size limit, as DynamoDB's.
pub const ITEM_SIZE_BYTES_MAX: usize = 400 * 1024;
/// Nesting depth of lists and maps, as DynamoDB's.
pub const NESTING_DEPTH_MAX: usize = 32;
/// A partition key value's size limit.
pub const HASH_KEY_BYTES_MAX: usize = 2048;
/// A sort key value's size limit.
pub const RANGE_KEY_BYTES_MAX: usize = 1024;

/// The one-letter type of an attribute value (`S`, `N`, `M`, ...).
pub fn type_of(value: &Value) -> Option<&str> {
    let map = value.as_object()?;
    if map.len() != 1 {
        return None;
    }
    map.keys().next().map(String::as_str)
}

fn inner<'a>(value: &'a Value, kind: &str) -> Option<&'a Value> {
    value.as_object().and_then(|m| m.get(kind))
}

pub fn as_str<'a>(value: &'a Value, kind: &str) -> Option<&'a str> {
    inner(value, kind).and_then(Value::as_str)
}

/// Checks an attribute value's shape (exactly one type, well-formed content), recursively.
pub fn validate(value: &Value, depth: usize) -> Result<(), Error> {
    if depth > NESTING_DEPTH_MAX {
        return Err(Error::validation(
            "Nesting Levels have exceeded supported limits",
        ));
    }
    let Some(map) = value.as_object() else {
        return Err(Error::Serialization(
            "Start of structure or map found where not expected".into(),
        ));
    };
    if map.len() != 1 {
        return Err(Error::validation(
            "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes",
        ));
    }
    let Some((kind, content)) = map.iter().next() else {
        return Err(Error::validation(
            "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes",
        ));
    };
    let ok = match kind.as_str() {
        "S" => content.is_string(),
        "N" => content.as_str().is_some_and(|n| parse_number(n).is_some()),
        "B" => content.as_str().is_some_and(|b| decode_b64(b).is_some()),
        "BOOL" => content.is_boolean(),
        "NULL" => content.as_bool() == Some(true),
        "SS" | "NS" | "BS" => {
            let Some(list) = content.as_array() else {
                return Err(Error::validation("An string set  may not be empty"));
            };
            if list.is_empty() {
                return Err(Error::validation(
                    "One or more parameter values were invalid: An number set  may not be empty",
                ));
            }
            let mut seen = std::collections::HashSet::new();
            for element in list {
                let Some(text) = element.as_str() else {
                    return Err(Error::validation("Set elements must be strings"));
                };
                if kind == "NS" && parse_number(text).is_none() {
                    return Err(Error::validation(format!(
                        "The parameter cannot be converted to a numeric value: {text}"
                    )));
                }
                let canonical = if kind == "NS" {
                    canonical_number(text)
                } else {
                    text.to_string()
                };
                if !seen.insert(canonical) {
                    return Err(Error::validation(format!(
                        "One or more parameter values were invalid: Input collection {content} contains duplicates."
                    )));
                }
            }
            true
        }
        "L" => {
            let Some(list) = content.as_array() else {
                return Err(Error::validation("L must be a list"));
            };
            for element in list {
                validate(element, depth + 1)?;
            }
            true
        }
        "M" => {
            let Some(members) = content.as_object() else {
                return Err(Error::validation("M must be a map"));
            };
            for element in members.values() {
                validate(element, depth + 1)?;
            }
            true
        }
        _ => {
            return Err(Error::validation(format!(
                "Supplied AttributeValue has an unknown datatype: {kind}"
            )));
        }
    };
    if !ok {
        if kind == "N" {
            return Err(Error::validation(
                "The parameter cannot be converted to a numeric value",
            ));
        }
        return Err(Error::Serialization(format!("Unexpected value for {kind}")));
    }
    Ok(())
}

pub fn validate_item(item: &Item) -> Result<(), Error> {
    for value in item.values() {
        validate(value, 1)?;
    }
    let size = item_size(item);
    if size > ITEM_SIZE_BYTES_MAX {
        return Err(Error::validation(
            "Item size has exceeded the maximum allowed size",
        ));
    }
    Ok(())
}

pub fn decode_b64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// A number as `i128` (integers) or `f64`.
#[derive(Debug, Clone, Copy)]
pub enum Number {
    Int(i128),
    Float(f64),
}

pub fn parse_number(text: &str) -> Option<Number> {
    let text = text.trim();
    if text.is_empty() || text.len() > 64 {
        return None;
    }
    if let Ok(i) = text.parse::<i128>() {
        return Some(Number::Int(i));
    }
    let valid = text
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'));
    if !valid {
        return None;
    }
    let f = text.parse::<f64>().ok()?;
    if !f.is_finite() {
        return None;
    }
    if f.fract() == 0.0 && f.abs() < 1e30 {
        return Some(Number::Int(f as i128));
    }
    Some(Number::Float(f))
}

impl Number {
    fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }

    pub fn compare(self, other: Number) -> Ordering {
        match (self, other) {
            (Number::Int(a), Number::Int(b)) => a.cmp(&b),
            (a, b) => a
                .as_f64()
                .partial_cmp(&b.as_f64())
                .unwrap_or(Ordering::Equal),
        }
    }

    pub fn plus(self, other: Number) -> Number {
        match (self, other) {
            (Number::Int(a), Number::Int(b)) => match a.checked_add(b) {
                Some(sum) => Number::Int(sum),
                None => Number::Float(a as f64 + b as f64),
            },
            (a, b) => Number::Float(a.as_f64() + b.as_f64()),
        }
    }

    pub fn negate(self) -> Number {
        match self {
            Number::Int(i) => Number::Int(-i),
            Number::Float(f) => Number::Float(-f),
        }
    }

    pub fn render(self) -> String {
        match self {
            Number::Int(i) => i.to_string(),
            Number::Float(f) => {
                if f.fract() == 0.0 && f.abs() < 1e30 {
                    (f as i128).to_string()
                } else {
                    format!("{f}")
                }
            }
        }
    }
}

/// The form DynamoDB returns a number in (`"01"` → `"1"`).
pub fn canonical_number(text: &str) -> String {
    parse_number(text).map_or_else(|| text.to_string(), Number::render)
}

pub fn number_value(n: Number) -> Value {
    serde_json::json!({ "N": n.render() })
}

/// Equality as `=` sees it: same type and same value (sets compare as sets).
pub fn equal(a: &Value, b: &Value) -> bool {
    let (Some(ta), Some(tb)) = (type_of(a), type_of(b)) else {
        return false;
    };
    if ta != tb {
        return false;
    }
    match ta {
        "N" => match (
            as_str(a, "N").and_then(parse_number),
            as_str(b, "N").and_then(parse_number),
        ) {
            (Some(x), Some(y)) => x.compare(y) == Ordering::Equal,
            _ => false,
        },
        "SS" | "BS" | "NS" => {
            let set = |v: &Value| -> std::collections::BTreeSet<String> {
                inner(v, ta)
                    .and_then(Value::as_array)
                    .map(|l| {
                        l.iter()
                            .filter_map(Value::as_str)
                            .map(|s| {
                                if ta == "NS" {
                                    canonical_number(s)
                                } else {
                                    s.to_string()
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            };
            set(a) == set(b)
        }
        "L" => match (
            inner(a, "L").and_then(Value::as_array),
            inner(b, "L").and_then(Value::as_array),
        ) {
            (Some(x), Some(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equal(p, q)),
            _ => false,
        },
        "M" => match (
            inner(a, "M").and_then(Value::as_object),
            inner(b, "M").and_then(Value::as_object),
        ) {
            (Some(x), Some(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
            }
            _ => false,
        },
        _ => a == b,
    }
}

/// Ordering for `<`, `<=`, `>`, `>=`, BETWEEN and sort keys: only S, N and B of one type.
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    let ta = type_of(a)?;
    if Some(ta) != type_of(b) {
        return None;
    }
    match ta {
        "S" => Some(as_str(a, "S")?.as_bytes().cmp(as_str(b, "S")?.as_bytes())),
        "N" => Some(parse_number(as_str(a, "N")?)?.compare(parse_number(as_str(b, "N")?)?)),
        "B" => Some(decode_b64(as_str(a, "B")?)?.cmp(&decode_b64(as_str(b, "B")?)?)),
        _ => None,
    }
}

/// The size DynamoDB charges an attribute value.
pub fn value_size(value: &Value) -> usize {
    let Some(kind) = type_of(value) else {
        return 0;
    };
    let content = inner(value, kind);
    match kind {
        "S" => content.and_then(Value::as_str).map_or(0, str::len),
        "N" => content
            .and_then(Value::as_str)
            .map_or(0, |n| n.len().div_ceil(2) + 1),
        "B" => content
            .and_then(Value::as_str)
            .map_or(0, |b| b.len() / 4 * 3),
        "BOOL" | "NULL" => 1,
        "SS" | "NS" | "BS" => content.and_then(Value::as_array).map_or(0, |l| {
            l.iter().filter_map(Value::as_str).map(str::len).sum()
        }),
        "L" => content.and_then(Value::as_array).map_or(3, |l| {
            3 + l.iter().map(|v| 1 + value_size(v)).sum::<usize>()
        }),
        "M" => content.and_then(Value::as_object).map_or(3, |m| {
            3 + m
                .iter()
                .map(|(k, v)| 1 + k.len() + value_size(v))
                .sum::<usize>()
        }),
        _ => 0,
    }
}

pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// The bytes of a key attribute (S: UTF-8, N: canonical text, B: decoded).
pub fn key_bytes(value: &Value, kind: &str) -> Option<Vec<u8>> {
    match kind {
        "S" => as_str(value, "S").map(|s| s.as_bytes().to_vec()),
        "N" => as_str(value, "N").map(|s| canonical_number(s).into_bytes()),
        "B" => as_str(value, "B").and_then(decode_b64),
        _ => None,
    }
}
