//! OnFailure destinations: where a batch goes when the function keeps failing or its
//! records expire, in AWS's failure record format.
//!
//! ```json
//! {"requestContext": {"requestId": "...", "functionArn": "...", "condition": "RetryAttemptsExhausted",
//!                     "approximateInvokeCount": 3},
//!  "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
//!  "version": "1.0", "timestamp": "2019-11-14T00:38:06.021Z",
//!  "KinesisBatchInfo": {"shardId": "...", "startSequenceNumber": "...", "endSequenceNumber": "...",
//!    "approximateArrivalOfFirstRecord": "...", "approximateArrivalOfLastRecord": "...",
//!    "batchSize": 500, "streamArn": "arn:aws:kinesis:..."}}
//! ```
//!
//! A Millrace stream receives it as one record (partition key: the shard id), without the
//! records themselves, as AWS's SQS and SNS destinations do. An S3 bucket receives it as one
//! object `aws/lambda/<UUID>/<shardId>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<random UUID>` with the
//! invocation event as `payload`, as AWS's S3 destination does. Sending is retried until it
//! succeeds: the checkpoint moves past the batch only after that.

use bytes::Bytes;
use millrace_streams::RequestContext;
use millrace_wire::kinesis as k;
use serde_json::{Value, json};

use crate::Inner;
use crate::error::InvokeError;
use crate::invoke::{StreamRecord, iso8601};
use crate::model::MappingRecord;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stream {
        arn: String,
        account: String,
        region: String,
    },
    Bucket {
        bucket: String,
    },
}

impl Destination {
    pub fn parse(arn: &str) -> Option<Destination> {
        if let Some(bucket) = arn.strip_prefix("arn:aws:s3:::") {
            let valid = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            return valid.then(|| Destination::Bucket {
                bucket: bucket.to_string(),
            });
        }
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        match parts.as_slice() {
            ["arn", _, "kinesis", region, account, resource]
                if resource
                    .strip_prefix("stream/")
                    .is_some_and(|name| !name.is_empty() && !name.contains('/')) =>
            {
                Some(Destination::Stream {
                    arn: arn.to_string(),
                    account: account.to_string(),
                    region: region.to_string(),
                })
            }
            _ => None,
        }
    }
}

/// Why a batch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    RetryAttemptsExhausted,
    RecordAgeExceeded,
    MaximumPayloadSizeExceeded,
}

impl Condition {
    pub fn name(self) -> &'static str {
        match self {
            Condition::RetryAttemptsExhausted => "RetryAttemptsExhausted",
            Condition::RecordAgeExceeded => "RecordAgeExceeded",
            Condition::MaximumPayloadSizeExceeded => "MaximumPayloadSizeExceeded",
        }
    }
}

/// The failure record of a batch.
pub fn failure_record(
    mapping: &MappingRecord,
    shard_id: &str,
    records: &[StreamRecord],
    condition: Condition,
    invoke_count: u32,
    error: Option<&InvokeError>,
    now_ms: i64,
) -> Value {
    let (status, function_error) = match error {
        Some(InvokeError::Function {
            status, error_type, ..
        }) => (*status, Some(error_type.clone())),
        Some(InvokeError::Transport(_)) => (502, Some("Unhandled".to_string())),
        Some(InvokeError::NoFunction(_)) => (404, Some("ResourceNotFoundException".to_string())),
        None => (200, None),
    };
    let first = records.first();
    let last = records.last();
    let mut response_context = json!({
        "statusCode": status,
        "executedVersion": "$LATEST",
    });
    if let (Some(function_error), Some(map)) = (function_error, response_context.as_object_mut()) {
        map.insert("functionError".into(), Value::String(function_error));
    }
    json!({
        "requestContext": {
            "requestId": uuid::Uuid::new_v4().to_string(),
            "functionArn": mapping.function_arn,
            "condition": condition.name(),
            "approximateInvokeCount": invoke_count,
        },
        "responseContext": response_context,
        "version": "1.0",
        "timestamp": iso8601(now_ms),
        "KinesisBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": first.map(|r| r.sequence_number.as_str()).unwrap_or(""),
            "endSequenceNumber": last.map(|r| r.sequence_number.as_str()).unwrap_or(""),
            "approximateArrivalOfFirstRecord": iso8601(first.map_or(0, |r| r.arrival_ms)),
            "approximateArrivalOfLastRecord": iso8601(last.map_or(0, |r| r.arrival_ms)),
            "batchSize": records.len(),
            "streamArn": mapping.stream_arn,
        },
    })
}

/// Sends one failure record; `payload` (the invocation event) goes only to S3.
pub(crate) async fn send(
    inner: &Inner,
    destination: &Destination,
    mapping: &MappingRecord,
    shard_id: &str,
    mut record: Value,
    payload: Value,
    now_ms: i64,
) -> Result<(), String> {
    match destination {
        Destination::Stream {
            arn,
            account,
            region,
        } => {
            let ctx = RequestContext {
                account: account.clone(),
                region: region.clone(),
                request_id: format!("esm-{}", mapping.uuid),
                principal: None,
            };
            let data = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
            let input = k::PutRecordInput {
                data: Bytes::from(data),
                partition_key: Some(shard_id.to_string()),
                stream_arn: Some(arn.clone()),
                ..Default::default()
            };
            inner
                .streams
                .handle(&ctx, k::Request::PutRecord(input))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Destination::Bucket { bucket } => {
            if let Some(map) = record.as_object_mut() {
                map.insert("payload".into(), payload);
            }
            let iso = iso8601(now_ms);
            let date = iso.get(..10).unwrap_or("1970-01-01");
            let stamp = iso.get(..19).unwrap_or("").replace(':', ".");
            let key = format!(
                "aws/lambda/{}/{}/{}/{}-{}",
                mapping.uuid,
                shard_id,
                date.replace('-', "/"),
                stamp,
                uuid::Uuid::new_v4()
            );
            let body = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
            inner
                .buckets
                .put(bucket, &key, Bytes::from(body))
                .await
                .map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert!(matches!(
            Destination::parse("arn:aws:s3:::failures"),
            Some(Destination::Bucket { .. })
        ));
        assert!(matches!(
            Destination::parse("arn:aws:kinesis:us-east-1:000000000000:stream/dlq"),
            Some(Destination::Stream { .. })
        ));
        assert_eq!(
            Destination::parse("arn:aws:sqs:us-east-1:000000000000:q"),
            None
        );
        assert_eq!(Destination::parse("arn:aws:s3:::A"), None);
    }
}
