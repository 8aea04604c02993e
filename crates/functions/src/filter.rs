//! FilterCriteria: Lambda's event filtering patterns applied to Kinesis records.
//!
//! A record is matched as the object `{"partitionKey", "sequenceNumber",
//! "approximateArrivalTimestamp", "kinesisSchemaVersion", "data"}` where `data` is the
//! record's data parsed as JSON (a record whose data is not JSON has no `data` field, so a
//! pattern on `data` does not match it, as on AWS). A record is delivered when any filter
//! matches; the others count as processed. Supported: exact values, `prefix`, `suffix`,
//! `equals-ignore-case`, `anything-but`, `numeric` and `exists`. Not supported: `wildcard`
//! and `$or` (refused at creation).

use serde_json::{Map, Value};

/// Largest number of filters per mapping (AWS's quota).
pub const FILTERS_MAX: usize = 5;

/// A compiled pattern.
#[derive(Debug, Clone)]
pub struct Filter(Map<String, Value>);

impl Filter {
    /// Parses one `Pattern`; the error is the message for InvalidParameterValueException.
    pub fn parse(pattern: &str) -> Result<Filter, String> {
        let invalid = || "Invalid filter pattern definition.".to_string();
        let value: Value = serde_json::from_str(pattern).map_err(|_| invalid())?;
        let Value::Object(map) = value else {
            return Err(invalid());
        };
        check_object(&map).map_err(|_| invalid())?;
        Ok(Filter(map))
    }

    pub fn matches(&self, record: &Value) -> bool {
        match_object(&self.0, Some(record))
    }
}

fn check_object(map: &Map<String, Value>) -> Result<(), ()> {
    if map.is_empty() {
        return Err(());
    }
    for (key, value) in map {
        if key.starts_with('$') {
            return Err(());
        }
        match value {
            Value::Object(inner) => check_object(inner)?,
            Value::Array(items) => {
                for item in items {
                    if let Value::Object(op) = item {
                        let (name, _) = op.iter().next().ok_or(())?;
                        if !matches!(
                            name.as_str(),
                            "prefix"
                                | "suffix"
                                | "equals-ignore-case"
                                | "anything-but"
                                | "numeric"
                                | "exists"
                        ) {
                            return Err(());
                        }
                    }
                }
            }
            _ => return Err(()),
        }
    }
    Ok(())
}

fn match_object(pattern: &Map<String, Value>, value: Option<&Value>) -> bool {
    pattern.iter().all(|(key, sub)| {
        let field = value.and_then(|v| v.as_object()).and_then(|o| o.get(key));
        match sub {
            Value::Object(inner) => match_object(inner, field),
            Value::Array(alternatives) => alternatives.iter().any(|alt| match_one(alt, field)),
            _ => false,
        }
    })
}

fn match_one(alternative: &Value, field: Option<&Value>) -> bool {
    if let Value::Object(op) = alternative {
        if let Some(Value::Bool(want)) = op.get("exists") {
            return field.is_some() == *want;
        }
        let Some(field) = field else {
            return false;
        };
        return match field {
            Value::Array(items) => items.iter().any(|item| match_operator(op, item)),
            other => match_operator(op, other),
        };
    }
    match field {
        None => false,
        Some(Value::Array(items)) => items.iter().any(|item| item == alternative),
        Some(other) => other == alternative,
    }
}

fn match_operator(op: &Map<String, Value>, value: &Value) -> bool {
    if let (Some(Value::String(prefix)), Value::String(s)) = (op.get("prefix"), value) {
        return s.starts_with(prefix.as_str());
    }
    if let (Some(Value::String(suffix)), Value::String(s)) = (op.get("suffix"), value) {
        return s.ends_with(suffix.as_str());
    }
    if let (Some(Value::String(want)), Value::String(s)) = (op.get("equals-ignore-case"), value) {
        return s.eq_ignore_ascii_case(want);
    }
    if let Some(excluded) = op.get("anything-but") {
        return match excluded {
            Value::Array(items) => !items.contains(value),
            Value::Object(inner) => !match_operator(inner, value),
            single => single != value,
        };
    }
    if let (Some(Value::Array(conditions)), Some(number)) = (op.get("numeric"), value.as_f64()) {
        return conditions.chunks(2).all(|pair| match pair {
            [Value::String(operator), bound] => {
                let Some(bound) = bound.as_f64() else {
                    return false;
                };
                match operator.as_str() {
                    "=" => number == bound,
                    "<" => number < bound,
                    "<=" => number <= bound,
                    ">" => number > bound,
                    ">=" => number >= bound,
                    _ => false,
                }
            }
            _ => false,
        });
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(pattern: &str, record: Value, expected: bool) {
        let filter = Filter::parse(pattern).expect("valid pattern");
        assert_eq!(filter.matches(&record), expected, "{pattern} on {record}");
    }

    #[test]
    fn patterns() {
        let record = json!({"partitionKey": "user-1", "data": {"kind": "order", "n": 5, "tags": ["a", "b"]}});
        check(r#"{"data": {"kind": ["order"]}}"#, record.clone(), true);
        check(r#"{"data": {"kind": ["refund"]}}"#, record.clone(), false);
        check(
            r#"{"partitionKey": [{"prefix": "user-"}]}"#,
            record.clone(),
            true,
        );
        check(
            r#"{"data": {"n": [{"numeric": [">", 1, "<=", 5]}]}}"#,
            record.clone(),
            true,
        );
        check(
            r#"{"data": {"n": [{"numeric": [">", 5]}]}}"#,
            record.clone(),
            false,
        );
        check(
            r#"{"data": {"missing": [{"exists": false}]}}"#,
            record.clone(),
            true,
        );
        check(
            r#"{"data": {"kind": [{"anything-but": ["order"]}]}}"#,
            record.clone(),
            false,
        );
        check(r#"{"data": {"tags": ["b"]}}"#, record.clone(), true);
        check(
            r#"{"data": {"kind": ["order"]}}"#,
            json!({"partitionKey": "x"}),
            false,
        );
        assert!(Filter::parse("[1]").is_err());
        assert!(Filter::parse(r#"{"a": 1}"#).is_err());
        assert!(Filter::parse(r#"{"a": [{"wildcard": "x*"}]}"#).is_err());
    }
}
