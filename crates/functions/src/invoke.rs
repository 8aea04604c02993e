//! The Lambda invocation contract for Kinesis event sources, over an HTTP function URL.
//!
//! Millrace POSTs the event Lambda would pass to the handler (`application/json`):
//!
//! ```json
//! {"Records": [{"kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "k",
//!    "sequenceNumber": "4959...", "data": "<base64>", "approximateArrivalTimestamp": 1545084650.987},
//!   "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": "shardId-000000000000:4959...",
//!   "eventName": "aws:kinesis:record", "invokeIdentityArn": "arn:aws:iam::...:role/...",
//!   "awsRegion": "us-east-1", "eventSourceARN": "arn:aws:kinesis:...:stream/s"}]}
//! ```
//!
//! plus, with tumbling windows, `window` {`start`, `end`}, `state`, `shardId`,
//! `eventSourceARN`, `isFinalInvokeForWindow` and `isWindowTerminatedEarly`. The function's
//! answer is its return value: `{"batchItemFailures": [{"itemIdentifier": "<seq>"}]}` (with
//! ReportBatchItemFailures), `{"state": {...}}` (tumbling windows), or anything else.
//!
//! The function error convention: an answer that is not 2xx, one with the
//! `X-Amz-Function-Error` header (what Lambda's Invoke API sends), or a body that is a Lambda
//! error document (`errorMessage` and `errorType`, what the Lambda runtimes send when a
//! handler throws) is a function error. So is a transport failure or a timeout.
//!
//! Shared with Firehose's transformation contract (`firehose::lambda`): the idea of a
//! function ARN mapped to a URL, and the 6 MB response bound; the event shapes differ.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::error::InvokeError;

pub use millrace_streams::timefmt::iso8601;

/// Lambda's synchronous invocation payload limit (request and response).
pub const PAYLOAD_BYTES_MAX: usize = 6 * 1024 * 1024;
/// Bytes of the event a record takes besides its base64 data (field names, ARNs, ids).
pub const RECORD_OVERHEAD_BYTES: usize = 1024;
/// Bytes of the event besides its records (window, state).
pub const EVENT_OVERHEAD_BYTES: usize = 64 * 1024;
/// Largest tumbling-window state returned by a function (AWS: 1 MB).
pub const STATE_BYTES_MAX: usize = 1024 * 1024;

/// One record read from a shard.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    pub sequence_number: String,
    pub partition_key: String,
    pub data: Bytes,
    pub arrival_ms: i64,
}

impl StreamRecord {
    /// What the record adds to an event, at most.
    pub fn event_bytes(&self) -> usize {
        self.data.len().div_ceil(3) * 4 + self.partition_key.len() + RECORD_OVERHEAD_BYTES
    }

    /// The object filters match against.
    pub fn filter_view(&self) -> Value {
        let mut view = json!({
            "partitionKey": self.partition_key,
            "sequenceNumber": self.sequence_number,
            "approximateArrivalTimestamp": self.arrival_ms as f64 / 1000.0,
            "kinesisSchemaVersion": "1.0",
        });
        if let (Ok(data), Some(map)) = (
            serde_json::from_slice::<Value>(&self.data),
            view.as_object_mut(),
        ) {
            map.insert("data".into(), data);
        }
        view
    }
}

/// Where the records come from, for the event.
pub struct Source<'a> {
    pub event_source_arn: &'a str,
    pub region: &'a str,
    pub shard_id: &'a str,
    pub identity_arn: &'a str,
}

/// The tumbling window of an invocation.
pub struct Window<'a> {
    pub start_ms: i64,
    pub end_ms: i64,
    pub state: &'a Value,
    pub is_final: bool,
}

/// The event for `records`.
pub fn event(source: &Source<'_>, records: &[StreamRecord], window: Option<&Window<'_>>) -> Value {
    let engine = &base64::engine::general_purpose::STANDARD;
    let records: Vec<Value> = records
        .iter()
        .map(|r| {
            json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": r.partition_key,
                    "sequenceNumber": r.sequence_number,
                    "data": engine.encode(&r.data),
                    "approximateArrivalTimestamp": r.arrival_ms as f64 / 1000.0,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": format!("{}:{}", source.shard_id, r.sequence_number),
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": source.identity_arn,
                "awsRegion": source.region,
                "eventSourceARN": source.event_source_arn,
            })
        })
        .collect();
    let mut event = json!({ "Records": records });
    if let (Some(window), Some(map)) = (window, event.as_object_mut()) {
        map.insert(
            "window".into(),
            json!({"start": iso8601(window.start_ms), "end": iso8601(window.end_ms)}),
        );
        map.insert("state".into(), window.state.clone());
        map.insert("shardId".into(), Value::String(source.shard_id.to_string()));
        map.insert(
            "eventSourceARN".into(),
            Value::String(source.event_source_arn.to_string()),
        );
        map.insert(
            "isFinalInvokeForWindow".into(),
            Value::Bool(window.is_final),
        );
        map.insert("isWindowTerminatedEarly".into(), Value::Bool(false));
    }
    event
}

/// What a successful invocation returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// `batchItemFailures[].itemIdentifier`; `Err` when the list is malformed (an entry with a
    /// missing, null or empty identifier), which fails the whole batch as on AWS.
    pub item_failures: Result<Vec<String>, ()>,
    /// `state` (tumbling windows).
    pub state: Option<Value>,
}

/// POSTs `body` to `url` and reads the answer under the 6 MB bound.
pub async fn invoke(
    http: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    timeout_ms: u64,
) -> Result<Answer, InvokeError> {
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .timeout(Duration::from_millis(timeout_ms))
        .body(body)
        .send()
        .await
        .map_err(|e| InvokeError::Transport(e.to_string()))?;
    let status = response.status().as_u16();
    let function_error = response
        .headers()
        .get("x-amz-function-error")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if response
        .content_length()
        .is_some_and(|n| n > PAYLOAD_BYTES_MAX as u64)
    {
        return Err(InvokeError::Function {
            status,
            error_type: "Function.ResponseSizeTooLarge".into(),
            message: "Response payload size exceeded maximum allowed payload size (6291556 bytes)."
                .into(),
        });
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| InvokeError::Transport(e.to_string()))?;
    if bytes.len() > PAYLOAD_BYTES_MAX {
        return Err(InvokeError::Function {
            status,
            error_type: "Function.ResponseSizeTooLarge".into(),
            message: "Response payload size exceeded maximum allowed payload size (6291556 bytes)."
                .into(),
        });
    }
    let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
    let error_document = parsed.as_ref().and_then(|v| {
        let object = v.as_object()?;
        let message = object.get("errorMessage")?;
        let error_type = object.get("errorType")?;
        Some((
            error_type.as_str().unwrap_or("Error").to_string(),
            message
                .as_str()
                .map_or_else(|| message.to_string(), str::to_string),
        ))
    });
    if !(200..300).contains(&status) || function_error.is_some() || error_document.is_some() {
        let (error_type, message) = error_document.unwrap_or_else(|| {
            (
                function_error.unwrap_or_else(|| "Unhandled".into()),
                String::from_utf8_lossy(bytes.get(..512).unwrap_or(&bytes)).into_owned(),
            )
        });
        return Err(InvokeError::Function {
            status,
            error_type,
            message,
        });
    }
    Ok(parse_answer(parsed.as_ref()))
}

fn parse_answer(parsed: Option<&Value>) -> Answer {
    let object = parsed.and_then(Value::as_object);
    let item_failures = match object.and_then(|o| o.get("batchItemFailures")) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item.get("itemIdentifier") {
                Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
                _ => Err(()),
            })
            .collect(),
        Some(_) => Err(()),
    };
    let state = object.and_then(|o| o.get("state")).cloned();
    Answer {
        item_failures,
        state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        let answer = parse_answer(Some(
            &json!({"batchItemFailures": [{"itemIdentifier": "5"}]}),
        ));
        assert_eq!(answer.item_failures, Ok(vec!["5".to_string()]));
        let answer = parse_answer(Some(
            &json!({"batchItemFailures": [{"itemIdentifier": ""}]}),
        ));
        assert_eq!(answer.item_failures, Err(()));
        let answer = parse_answer(Some(&json!({"state": {"n": 1}})));
        assert_eq!(answer.state, Some(json!({"n": 1})));
        assert_eq!(parse_answer(None).item_failures, Ok(Vec::new()));
    }

    #[test]
    fn event_shape() {
        let source = Source {
            event_source_arn: "arn:aws:kinesis:us-east-1:000000000000:stream/s",
            region: "us-east-1",
            shard_id: "shardId-000000000000",
            identity_arn: "arn:aws:iam::000000000000:role/r",
        };
        let records = [StreamRecord {
            sequence_number: "49".into(),
            partition_key: "k".into(),
            data: Bytes::from_static(b"hi"),
            arrival_ms: 1500,
        }];
        let state = json!({});
        let window = Window {
            start_ms: 0,
            end_ms: 60_000,
            state: &state,
            is_final: false,
        };
        let event = event(&source, &records, Some(&window));
        assert_eq!(event["Records"][0]["kinesis"]["data"], "aGk=");
        assert_eq!(event["Records"][0]["eventID"], "shardId-000000000000:49");
        assert_eq!(
            event["Records"][0]["kinesis"]["approximateArrivalTimestamp"],
            1.5
        );
        assert_eq!(event["window"]["end"], "1970-01-01T00:01:00.000Z");
        assert_eq!(event["isFinalInvokeForWindow"], false);
    }
}
