//! SQL values, their coercion from JSON and CSV input, and their rendering in output records.
//!
//! Timestamps are milliseconds since the epoch, UTC, rendered as KDA does
//! (`2026-11-27 14:01:00.000`). DECIMAL columns are approximated by doubles: no application
//! in the examples depends on exact decimal arithmetic.

use serde::{Deserialize, Serialize};

use crate::sql::SqlType;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Timestamp(i64),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Timestamp(t) => Some(*t as f64),
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            Value::Str(s) => s.trim().parse().ok(),
            Value::Null => None,
        }
    }

    pub fn truthy(&self) -> bool {
        matches!(self, Value::Bool(true))
    }

    /// SQL ordering; `None` when either side is NULL or they do not compare.
    pub fn compare(&self, other: &Value) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Value::Null, _) | (_, Value::Null) => None,
            (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::Timestamp(a), Value::Timestamp(b)) => Some(a.cmp(b)),
            (Value::Timestamp(a), Value::Str(s)) => parse_timestamp(s).map(|b| a.cmp(&b)),
            (Value::Str(s), Value::Timestamp(b)) => parse_timestamp(s).map(|a| a.cmp(b)),
            (a, b) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        }
    }

    /// A key for grouping and partitioning (NULLs group together, 1 and 1.0 do not).
    pub fn key(&self) -> String {
        match self {
            Value::Null => "N".into(),
            Value::Bool(b) => format!("B{b}"),
            Value::Int(i) => format!("I{i}"),
            Value::Float(f) => format!("F{f}"),
            Value::Str(s) => format!("S{s}"),
            Value::Timestamp(t) => format!("T{t}"),
        }
    }

    /// The value as it appears in a JSON output record.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Timestamp(t) => serde_json::Value::String(format_timestamp(*t)),
        }
    }

    /// The value as text (CSV output, string functions).
    pub fn to_text(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Str(s) => s.clone(),
            Value::Timestamp(t) => format_timestamp(*t),
        }
    }
}

/// Why a value could not be coerced to a column's type (the row goes to `error_stream`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot convert {found} to {sql_type:?}")]
pub struct CoercionError {
    pub found: String,
    pub sql_type: SqlType,
}

/// Converts a value to a column type, as KDA maps input: NULL stays NULL, numbers parse from
/// strings, booleans become 1/0 for numerics, VARCHAR truncates silently.
pub fn coerce(value: Value, sql_type: SqlType) -> Result<Value, CoercionError> {
    let fail = |v: &Value| CoercionError {
        found: v.to_text(),
        sql_type,
    };
    Ok(match (sql_type, value) {
        (_, Value::Null) => Value::Null,
        (SqlType::Varchar(n), v) => {
            let text = v.to_text();
            let n = n as usize;
            if text.chars().count() > n {
                Value::Str(text.chars().take(n).collect())
            } else {
                Value::Str(text)
            }
        }
        (SqlType::Integer, Value::Int(i)) => Value::Int(i),
        (SqlType::Integer, Value::Bool(b)) => Value::Int(i64::from(b)),
        (SqlType::Integer, Value::Float(f)) => {
            if f.is_finite() && f.abs() < 9.2e18 {
                Value::Int(f.trunc() as i64)
            } else {
                return Err(fail(&Value::Float(f)));
            }
        }
        (SqlType::Integer, Value::Str(s)) => match s.trim().parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => match s.trim().parse::<f64>() {
                Ok(f) if f.is_finite() && f.abs() < 9.2e18 => Value::Int(f.trunc() as i64),
                _ => return Err(fail(&Value::Str(s))),
            },
        },
        (SqlType::Integer, Value::Timestamp(t)) => Value::Int(t),
        (SqlType::Double, Value::Float(f)) => Value::Float(f),
        (SqlType::Double, Value::Int(i)) => Value::Float(i as f64),
        (SqlType::Double, Value::Bool(b)) => Value::Float(f64::from(u8::from(b))),
        (SqlType::Double, Value::Str(s)) => match s.trim().parse::<f64>() {
            Ok(f) => Value::Float(f),
            Err(_) => return Err(fail(&Value::Str(s))),
        },
        (SqlType::Double, Value::Timestamp(t)) => Value::Float(t as f64),
        (SqlType::Boolean, Value::Bool(b)) => Value::Bool(b),
        (SqlType::Boolean, Value::Int(i)) => Value::Bool(i != 0),
        (SqlType::Boolean, Value::Str(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => return Err(fail(&Value::Str(s))),
        },
        (SqlType::Timestamp, Value::Timestamp(t)) => Value::Timestamp(t),
        (SqlType::Timestamp, Value::Str(s)) => match parse_timestamp(&s) {
            Some(t) => Value::Timestamp(t),
            None => return Err(fail(&Value::Str(s))),
        },
        (SqlType::Timestamp, Value::Int(i)) => Value::Timestamp(i),
        (_, v) => return Err(fail(&v)),
    })
}

/// A JSON value as an input value (arrays and objects as their JSON text).
pub fn from_json(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => n.as_f64().map_or(Value::Null, Value::Float),
        },
        serde_json::Value::String(s) => Value::Str(s.clone()),
        other => Value::Str(other.to_string()),
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses `1992-02-14`, `1992-02-14 18:35:44[.fff]` or `1992-02-14T18:35:44[.fff][Z]`.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let text = text.trim().trim_end_matches('Z');
    let (date, time) = match text.split_once([' ', 'T']) {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut ms = days_from_civil(y, m, d) * 86_400_000;
    if let Some(time) = time {
        let (hms, frac) = match time.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (time, None),
        };
        let mut parts = hms.split(':');
        let h: i64 = parts.next()?.parse().ok()?;
        let mi: i64 = parts.next()?.parse().ok()?;
        let s: i64 = parts.next().map_or(Some(0), |s| s.parse().ok())?;
        if h > 23 || mi > 59 || s > 60 {
            return None;
        }
        ms += (h * 3600 + mi * 60 + s) * 1000;
        if let Some(frac) = frac {
            let digits: String = frac.chars().take(3).collect();
            if !digits.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let padded = format!("{digits:0<3}");
            ms += padded.parse::<i64>().ok()?;
        }
    }
    Some(ms)
}

pub fn format_timestamp(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rest = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let ms = parse_timestamp("2026-11-27 14:01:02.5").expect("parses");
        assert_eq!(format_timestamp(ms), "2026-11-27 14:01:02.500");
        assert_eq!(parse_timestamp("1970-01-01"), Some(0));
        assert_eq!(parse_timestamp("2026-13-01"), None);
    }

    #[test]
    fn coercion_follows_the_mapping_rules() {
        assert_eq!(
            coerce(Value::Str("12".into()), SqlType::Integer),
            Ok(Value::Int(12))
        );
        assert_eq!(
            coerce(Value::Bool(true), SqlType::Double),
            Ok(Value::Float(1.0))
        );
        assert_eq!(
            coerce(Value::Str("abcdef".into()), SqlType::Varchar(4)),
            Ok(Value::Str("abcd".into()))
        );
        assert!(coerce(Value::Str("x".into()), SqlType::Integer).is_err());
    }
}
