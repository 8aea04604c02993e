//! The record processors that need no network, and the error records of the error output.
//!
//! Before the transformation function: `Decompression` (gzip), `CloudWatchLogProcessing`
//! (a CloudWatch Logs subscription message becomes one record per log event's message, control
//! messages are dropped), `RecordDeAggregation` (concatenated JSON objects, or a delimiter,
//! split one record into many). After it: jq partition keys and `AppendDelimiterToRecord`
//! (in the delivery pipeline). A record a processor cannot handle becomes an error record.

use base64::Engine as _;
use bytes::Bytes;

use crate::plan::{Deaggregation, Processing};

/// Largest record after decompression (the same bound as the log's records).
const DECOMPRESSED_BYTES_MAX: usize = 10 * 1024 * 1024;
/// Sub-records one record may split into.
const SUB_RECORDS_MAX: usize = 10_000;

/// Why a processor refused a record: the `errorCode` and `errorMessage` of its error record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessingError {
    pub code: &'static str,
    pub message: String,
}

fn failed(code: &'static str, message: impl Into<String>) -> ProcessingError {
    ProcessingError {
        code,
        message: message.into(),
    }
}

/// Runs the processors that come before the transformation on one record.
pub fn preprocess(plan: &Processing, data: Bytes) -> Result<Vec<Bytes>, ProcessingError> {
    let mut data = data;
    if plan.decompress {
        data = crate::compress::gunzip(&data, DECOMPRESSED_BYTES_MAX)
            .map(Bytes::from)
            .map_err(|e| failed("Decompression.Failed", e.to_string()))?;
    }
    let records = if plan.cloudwatch_logs_extract {
        cloudwatch_messages(&data)?
    } else {
        vec![data]
    };
    match &plan.deaggregation {
        None => Ok(records),
        Some(how) => {
            let mut out = Vec::new();
            for record in records {
                out.extend(deaggregate(how, record)?);
                if out.len() > SUB_RECORDS_MAX {
                    return Err(failed(
                        "RecordDeAggregation.TooManyRecords",
                        format!("a record split into more than {SUB_RECORDS_MAX} records"),
                    ));
                }
            }
            Ok(out)
        }
    }
}

fn cloudwatch_messages(data: &[u8]) -> Result<Vec<Bytes>, ProcessingError> {
    let value: serde_json::Value = serde_json::from_slice(data).map_err(|e| {
        failed(
            "CloudWatchLogProcessing.Failed",
            format!("not a CloudWatch Logs message: {e}"),
        )
    })?;
    if value.get("messageType").and_then(|v| v.as_str()) != Some("DATA_MESSAGE") {
        return Ok(Vec::new());
    }
    let events = value
        .get("logEvents")
        .and_then(|v| v.as_array())
        .ok_or_else(|| failed("CloudWatchLogProcessing.Failed", "logEvents is missing"))?;
    Ok(events
        .iter()
        .filter_map(|e| e.get("message").and_then(|m| m.as_str()))
        .map(|m| Bytes::from(format!("{m}\n")))
        .collect())
}

fn deaggregate(how: &Deaggregation, record: Bytes) -> Result<Vec<Bytes>, ProcessingError> {
    match how {
        Deaggregation::Json => {
            let mut out = Vec::new();
            let mut stream =
                serde_json::Deserializer::from_slice(&record).into_iter::<serde::de::IgnoredAny>();
            let mut start = 0usize;
            while let Some(next) = stream.next() {
                next.map_err(|e| {
                    failed(
                        "RecordDeAggregation.Failed",
                        format!("not concatenated JSON: {e}"),
                    )
                })?;
                let end = stream.byte_offset();
                let slice = record.slice(start..end);
                let trimmed_start = slice
                    .iter()
                    .position(|b| !b.is_ascii_whitespace())
                    .unwrap_or(0);
                out.push(slice.slice(trimmed_start..));
                start = end;
            }
            Ok(out)
        }
        Deaggregation::Delimited(delimiter) => {
            let mut out = Vec::new();
            let mut start = 0usize;
            let mut pos = 0usize;
            while pos + delimiter.len() <= record.len() {
                if record.get(pos..pos + delimiter.len()) == Some(delimiter.as_slice()) {
                    out.push(record.slice(start..pos));
                    pos += delimiter.len();
                    start = pos;
                } else {
                    pos += 1;
                }
            }
            if start < record.len() {
                out.push(record.slice(start..));
            }
            Ok(out)
        }
    }
}

/// One error record of the error output, as a JSON line.
pub struct ErrorRecord<'a> {
    pub attempts_made: u32,
    pub arrival_ms: i64,
    pub error_code: &'a str,
    pub error_message: &'a str,
    pub attempt_ending_ms: i64,
    pub raw_data: &'a [u8],
    /// Fields particular to the error type (`lambdaArn`, `dataCatalogTable`, ...).
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Format-conversion errors name their fields `lastErrorCode` / `lastErrorMessage`.
    pub last_error_names: bool,
}

impl ErrorRecord<'_> {
    pub fn to_json_line(&self) -> Bytes {
        let (code_key, message_key) = if self.last_error_names {
            ("lastErrorCode", "lastErrorMessage")
        } else {
            ("errorCode", "errorMessage")
        };
        let mut object = serde_json::Map::new();
        object.insert("attemptsMade".into(), self.attempts_made.into());
        object.insert("arrivalTimestamp".into(), self.arrival_ms.into());
        object.insert(code_key.into(), self.error_code.into());
        object.insert(message_key.into(), self.error_message.into());
        object.insert(
            "attemptEndingTimestamp".into(),
            self.attempt_ending_ms.into(),
        );
        object.insert(
            "rawData".into(),
            base64::engine::general_purpose::STANDARD
                .encode(self.raw_data)
                .into(),
        );
        for (key, value) in &self.extra {
            object.insert(key.clone(), value.clone());
        }
        let mut line = serde_json::to_vec(&serde_json::Value::Object(object)).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(plan: &Processing, data: &[u8]) -> Result<Vec<String>, ProcessingError> {
        preprocess(plan, Bytes::copy_from_slice(data)).map(|records| {
            records
                .iter()
                .map(|r| String::from_utf8_lossy(r).into_owned())
                .collect()
        })
    }

    #[test]
    fn processors() -> Result<(), ProcessingError> {
        let none = Processing::default();
        assert_eq!(run(&none, b"x")?, vec!["x"]);
        let json = Processing {
            deaggregation: Some(Deaggregation::Json),
            ..Default::default()
        };
        assert_eq!(
            run(&json, br#"{"a":1} {"a":2}{"b":[1]}"#)?,
            vec![r#"{"a":1}"#, r#"{"a":2}"#, r#"{"b":[1]}"#]
        );
        assert!(run(&json, br#"{"a":1} nope"#).is_err());
        let delimited = Processing {
            deaggregation: Some(Deaggregation::Delimited(b"||".to_vec())),
            ..Default::default()
        };
        assert_eq!(run(&delimited, b"a||b||c")?, vec!["a", "b", "c"]);
        assert_eq!(run(&delimited, b"a||")?, vec!["a"]);
        let logs = Processing {
            decompress: true,
            cloudwatch_logs_extract: true,
            ..Default::default()
        };
        let message = br#"{"messageType":"DATA_MESSAGE","logEvents":[{"id":"1","timestamp":1,"message":"one"},{"id":"2","timestamp":2,"message":"two"}]}"#;
        let gz = crate::compress::gzip(message).map_err(|e| failed("test", e.to_string()))?;
        assert_eq!(run(&logs, &gz)?, vec!["one\n", "two\n"]);
        let control = crate::compress::gzip(br#"{"messageType":"CONTROL_MESSAGE"}"#)
            .map_err(|e| failed("test", e.to_string()))?;
        assert!(run(&logs, &control)?.is_empty());
        assert!(run(&logs, b"not gzip").is_err());
        Ok(())
    }

    #[test]
    fn error_records() -> Result<(), serde_json::Error> {
        let mut extra = serde_json::Map::new();
        extra.insert(
            "lambdaArn".into(),
            "arn:aws:lambda:us-east-1:0:function:f".into(),
        );
        let line = ErrorRecord {
            attempts_made: 4,
            arrival_ms: 10,
            error_code: "Lambda.FunctionError",
            error_message: "boom",
            attempt_ending_ms: 20,
            raw_data: b"hi",
            extra,
            last_error_names: false,
        }
        .to_json_line();
        assert!(line.ends_with(b"\n"));
        let parsed: serde_json::Value = serde_json::from_slice(&line)?;
        assert_eq!(
            parsed,
            serde_json::json!({"attemptsMade":4,"arrivalTimestamp":10,"errorCode":"Lambda.FunctionError",
                "errorMessage":"boom","attemptEndingTimestamp":20,"rawData":"aGk=",
                "lambdaArn":"arn:aws:lambda:us-east-1:0:function:f"})
        );
        Ok(())
    }
}
