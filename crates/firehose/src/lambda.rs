//! Lambda-style transformation through an HTTP function URL.
//!
//! The operator maps a Lambda ARN to a URL (`[[firehose.function]]`); Millrace POSTs the
//! event a Firehose transformation Lambda receives and reads the answer it returns:
//!
//! ```json
//! {"invocationId":"...","deliveryStreamArn":"arn:aws:firehose:...","region":"us-east-1",
//!  "sourceKinesisStreamArn":"arn:aws:kinesis:...",            // Kinesis sources only
//!  "records":[{"recordId":"...","approximateArrivalTimestamp":1507217624302,"data":"<base64>",
//!              "kinesisRecordMetadata":{...}}]}                 // Kinesis sources only
//! → {"records":[{"recordId":"...","result":"Ok"|"Dropped"|"ProcessingFailed","data":"<base64>",
//!                "metadata":{"partitionKeys":{"k":"v"}}}]}
//! ```
//! Every record id must come back exactly once, else the whole invocation failed. A failed
//! invocation (transport error, non-2xx status, malformed answer) is retried
//! `NumberOfRetries` times; then every record of the batch goes to the error output.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;

use crate::envelope::KinesisOrigin;

/// A function gets this long to answer (Lambda's maximum timeout).
const INVOCATION_TIMEOUT_MS: u64 = 300_000;
/// Largest answer read (Lambda's synchronous response limit).
const RESPONSE_BYTES_MAX: usize = 6 * 1024 * 1024;

/// One record as the function sees it.
pub struct InputRecord<'a> {
    pub record_id: &'a str,
    pub arrival_ms: i64,
    pub data: &'a [u8],
    pub origin: Option<&'a KinesisOrigin>,
}

/// What the function did with one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok {
        data: Bytes,
        partition_keys: BTreeMap<String, String>,
    },
    Dropped,
    ProcessingFailed,
}

/// Why an invocation failed (for the error records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationError {
    pub code: &'static str,
    pub message: String,
}

#[derive(Deserialize)]
struct Response {
    records: Vec<ResponseRecord>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResponseRecord {
    record_id: String,
    result: String,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(default)]
    partition_keys: BTreeMap<String, serde_json::Value>,
}

/// The event body for a batch.
pub fn event(
    delivery_stream_arn: &str,
    region: &str,
    source_stream_arn: Option<&str>,
    records: &[InputRecord<'_>],
) -> Vec<u8> {
    let engine = &base64::engine::general_purpose::STANDARD;
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            let mut record = serde_json::json!({
                "recordId": r.record_id,
                "approximateArrivalTimestamp": r.arrival_ms,
                "data": engine.encode(r.data),
            });
            if let (Some(origin), Some(map)) = (r.origin, record.as_object_mut()) {
                map.insert(
                    "kinesisRecordMetadata".to_string(),
                    serde_json::json!({
                        "shardId": format!("shardId-{:012}", origin.shard_index),
                        "partitionKey": origin.partition_key,
                        "approximateArrivalTimestamp": origin.arrival_ms,
                        "sequenceNumber": origin.sequence_number,
                        "subsequenceNumber": 0,
                    }),
                );
            }
            record
        })
        .collect();
    let mut body = serde_json::json!({
        "invocationId": uuid::Uuid::new_v4().to_string(),
        "deliveryStreamArn": delivery_stream_arn,
        "region": region,
        "records": records,
    });
    if let (Some(source), Some(map)) = (source_stream_arn, body.as_object_mut()) {
        map.insert(
            "sourceKinesisStreamArn".to_string(),
            serde_json::Value::String(source.to_string()),
        );
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Calls the function once; one outcome per input record id, in input order.
pub async fn invoke(
    http: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    record_ids: &[&str],
) -> Result<Vec<Outcome>, InvocationError> {
    let error = |code: &'static str, message: String| InvocationError { code, message };
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .timeout(Duration::from_millis(INVOCATION_TIMEOUT_MS))
        .body(body)
        .send()
        .await
        .map_err(|e| error("Lambda.InvokeFailed", e.to_string()))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| error("Lambda.InvokeFailed", e.to_string()))?;
    if !status.is_success() {
        return Err(error(
            "Lambda.FunctionError",
            format!(
                "The function answered {status}: {}",
                String::from_utf8_lossy(bytes.get(..512).unwrap_or(&bytes))
            ),
        ));
    }
    if bytes.len() > RESPONSE_BYTES_MAX {
        return Err(error(
            "Lambda.ResponseTooLarge",
            format!("The response is {} bytes, more than 6 MB.", bytes.len()),
        ));
    }
    let parsed: Response = serde_json::from_slice(&bytes).map_err(|e| {
        error(
            "Lambda.JsonProcessingException",
            format!("The response could not be parsed: {e}"),
        )
    })?;
    let mut by_id: HashMap<String, ResponseRecord> = HashMap::with_capacity(parsed.records.len());
    for record in parsed.records {
        let id = record.record_id.clone();
        if by_id.insert(id.clone(), record).is_some() {
            return Err(error(
                "Lambda.DuplicatedRecordId",
                format!("Record ID {id} was returned more than once."),
            ));
        }
    }
    let mut outcomes = Vec::with_capacity(record_ids.len());
    for id in record_ids {
        let record = by_id.remove(*id).ok_or_else(|| {
            error(
                "Lambda.MissingRecordId",
                format!("Record ID {id} was not returned by the function."),
            )
        })?;
        outcomes.push(match record.result.as_str() {
            "Ok" => {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(record.data.unwrap_or_default())
                    .map_err(|_| {
                        error(
                            "Lambda.InvalidBase64",
                            format!("The data of record {id} is not base64."),
                        )
                    })?;
                let partition_keys = record
                    .metadata
                    .map(|m| {
                        m.partition_keys
                            .into_iter()
                            .map(|(k, v)| match v {
                                serde_json::Value::String(s) => (k, s),
                                other => (k, other.to_string()),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Outcome::Ok {
                    data: Bytes::from(data),
                    partition_keys,
                }
            }
            "Dropped" => Outcome::Dropped,
            "ProcessingFailed" => Outcome::ProcessingFailed,
            other => {
                return Err(error(
                    "Lambda.InvalidResult",
                    format!("Record {id} has the invalid result {other:?}."),
                ));
            }
        });
    }
    if let Some(extra) = by_id.keys().next() {
        return Err(error(
            "Lambda.InvalidRecordId",
            format!("Record ID {extra} was not part of the invocation."),
        ));
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_shape() -> Result<(), serde_json::Error> {
        let origin = KinesisOrigin {
            shard_index: 3,
            arrival_ms: 5,
            partition_key: "pk".into(),
            sequence_number: "49".into(),
        };
        let body = event(
            "arn:aws:firehose:us-east-1:000000000000:deliverystream/d",
            "us-east-1",
            Some("arn:aws:kinesis:us-east-1:000000000000:stream/s"),
            &[InputRecord {
                record_id: "r1",
                arrival_ms: 7,
                data: b"hi",
                origin: Some(&origin),
            }],
        );
        let parsed: serde_json::Value = serde_json::from_slice(&body)?;
        assert_eq!(parsed["region"], "us-east-1");
        assert_eq!(parsed["records"][0]["recordId"], "r1");
        assert_eq!(parsed["records"][0]["data"], "aGk=");
        assert_eq!(parsed["records"][0]["approximateArrivalTimestamp"], 7);
        assert_eq!(
            parsed["records"][0]["kinesisRecordMetadata"]["shardId"],
            "shardId-000000000003"
        );
        assert_eq!(
            parsed["sourceKinesisStreamArn"],
            "arn:aws:kinesis:us-east-1:000000000000:stream/s"
        );
        Ok(())
    }
}
