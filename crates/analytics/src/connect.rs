//! What an application reaches outside the streams service: "Lambda functions" (HTTP URLs
//! the operator maps to function ARNs) for `LambdaOutput` and input preprocessing
//! (`InputLambdaProcessor`), and Firehose delivery streams for `KinesisFirehoseOutput` and
//! `KinesisFirehoseInput`. The crate knows the record contracts, not HTTP nor the Firehose
//! crate: the binary's wiring implements [`FunctionInvoker`] (functions resolved as the
//! function consumers resolve them: `[[functions.function]]`, `[[firehose.function]]`,
//! CreateFunction) and [`DeliveryStreams`] (the in-process Firehose service: PutRecordBatch
//! for outputs; for inputs, reads of the records a delivery stream accepted, by log offset,
//! and a hold that keeps delivery from trimming what the application has not read).
//!
//! Lambda output (one invocation per batch of output rows):
//! ```json
//! {"invocationId":"...","applicationArn":"arn:aws:kinesisanalytics:...",
//!  "records":[{"recordId":"...","lambdaDeliveryRecordMetadata":{"retryHint":0},"data":"<base64>"}]}
//! → {"records":[{"recordId":"...","result":"Ok"|"DeliveryFailed"}]}
//! ```
//! Preprocessing (one invocation per batch of source records):
//! ```json
//! {"invocationId":"...","applicationArn":"...","streamArn":"arn:aws:kinesis:...",
//!  "records":[{"recordId":"...","kinesisStreamRecordMetadata":{"sequenceNumber":"...",
//!    "partitionKey":"...","shardId":"...","approximateArrivalTimestamp":1507217624302},
//!    "data":"<base64>"}]}
//! (a delivery stream input: "streamArn" is its ARN and each record has
//!  "kinesisFirehoseRecordMetadata":{"approximateArrivalTimestamp":...} instead)
//! → {"records":[{"recordId":"...","result":"Ok"|"Dropped"|"ProcessingFailed","data":"<base64>"}]}
//! ```
//! A record id missing from an answer counts as `DeliveryFailed` (output) or fails the
//! whole invocation (preprocessing, as Firehose does).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

/// Output rows per Lambda invocation.
pub const LAMBDA_OUTPUT_RECORDS_MAX: usize = 500;
/// Bytes of row data per Lambda invocation (Lambda's request limit is 6 MB, with base64).
pub const LAMBDA_OUTPUT_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Source records per preprocessing invocation.
pub const PREPROCESS_RECORDS_MAX: usize = 500;
/// Bytes of source data per preprocessing invocation.
pub const PREPROCESS_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Rows per PutRecordBatch (the Firehose maximum).
pub const FIREHOSE_BATCH_RECORDS_MAX: usize = 500;
/// Bytes per PutRecordBatch (the Firehose maximum is 4 MiB).
pub const FIREHOSE_BATCH_BYTES_MAX: usize = 4 * 1024 * 1024 - 64 * 1024;

/// Why a delivery stream refused a whole batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    #[error("{delivery_stream_arn} is not a delivery stream ARN")]
    BadArn { delivery_stream_arn: String },
    #[error("the delivery stream refused the batch: {error_type}")]
    Refused { error_type: String },
    #[error("no delivery stream service is configured")]
    Unavailable,
    #[error("the delivery stream cannot be read: {message}")]
    Read { message: String },
}

/// One record a delivery stream accepted.
#[derive(Debug, Clone)]
pub struct DeliveredRecord {
    /// Its place in the delivery stream's log (the position an input checkpoints).
    pub offset: u64,
    pub arrival_ms: i64,
    pub data: bytes::Bytes,
}

/// The answer to [`DeliveryStreams::read`].
#[derive(Debug, Clone)]
pub struct DeliveryRead {
    pub records: Vec<DeliveredRecord>,
    /// Where to read next.
    pub next_offset: u64,
    /// The end of the delivery stream's log when the read started.
    pub end_offset: u64,
}

/// Firehose delivery streams: PutRecordBatch semantics as an output; as an input, the
/// accepted records by offset and a hold on them.
pub trait DeliveryStreams: Send + Sync {
    /// Puts `records` to the delivery stream; per record, whether it was accepted.
    fn put_record_batch<'a>(
        &'a self,
        delivery_stream_arn: &'a str,
        records: Vec<Vec<u8>>,
    ) -> BoxFuture<'a, Result<Vec<bool>, DeliveryError>>;

    /// The first offset accepted at or after `timestamp_ms`.
    fn offset_at<'a>(
        &'a self,
        delivery_stream_arn: &'a str,
        timestamp_ms: i64,
    ) -> BoxFuture<'a, Result<u64, DeliveryError>>;

    /// Up to `records_max` accepted records from `from_offset` (or the oldest kept).
    fn read<'a>(
        &'a self,
        delivery_stream_arn: &'a str,
        from_offset: u64,
        records_max: usize,
    ) -> BoxFuture<'a, Result<DeliveryRead, DeliveryError>>;

    /// Keeps the records from `offset` on for `holder` (an application ARN); `None`
    /// releases its hold.
    fn hold<'a>(
        &'a self,
        delivery_stream_arn: &'a str,
        holder: &'a str,
        offset: Option<u64>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>>;
}

/// Why calling a function failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvokeError {
    #[error("no function URL is mapped to {function_arn}")]
    NotMapped { function_arn: String },
    #[error("the function could not be reached: {message}")]
    Transport { message: String },
    #[error("the function answered HTTP {status}")]
    Status { status: u16 },
    #[error("the function's answer is larger than {bytes_max} bytes")]
    ResponseTooLarge { bytes_max: usize },
    #[error("the function's answer is malformed: {message}")]
    Malformed { message: String },
    #[error("no function invoker is configured")]
    Unavailable,
}

/// Calls a "Lambda function" by ARN with a JSON event and returns its answer body.
pub trait FunctionInvoker: Send + Sync {
    fn invoke<'a>(
        &'a self,
        function_arn: &'a str,
        event: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<u8>, InvokeError>>;
}

static INVOCATION_COUNTER: AtomicU64 = AtomicU64::new(0);

fn invocation_id(now_ms: i64) -> String {
    let n = INVOCATION_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{now_ms:016x}-{n:016x}")
}

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

#[derive(Deserialize)]
struct Answer {
    records: Vec<AnswerRecord>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnswerRecord {
    record_id: String,
    result: String,
    #[serde(default)]
    data: Option<String>,
}

fn parse_answer(body: &[u8]) -> Result<HashMap<String, AnswerRecord>, InvokeError> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| InvokeError::Malformed {
        message: e.to_string(),
    })?;
    let mut by_id = HashMap::with_capacity(answer.records.len());
    for record in answer.records {
        let id = record.record_id.clone();
        if by_id.insert(id.clone(), record).is_some() {
            return Err(InvokeError::Malformed {
                message: format!("record id {id} came back more than once"),
            });
        }
    }
    Ok(by_id)
}

/// The Lambda output event for `rows` (record ids are their indexes), each with how many
/// times it was tried before.
pub fn output_event(application_arn: &str, now_ms: i64, rows: &[(Vec<u8>, u32)]) -> Vec<u8> {
    let records: Vec<serde_json::Value> = rows
        .iter()
        .enumerate()
        .map(|(i, (data, retries))| {
            json!({
                "recordId": i.to_string(),
                "lambdaDeliveryRecordMetadata": {"retryHint": retries},
                "data": b64().encode(data),
            })
        })
        .collect();
    serde_json::to_vec(&json!({
        "invocationId": invocation_id(now_ms),
        "applicationArn": application_arn,
        "records": records,
    }))
    .unwrap_or_default()
}

/// Which of `n` output rows the function delivered (`Ok`); the rest are to be retried.
pub fn output_results(body: &[u8], n: usize) -> Result<Vec<bool>, InvokeError> {
    let by_id = parse_answer(body)?;
    Ok((0..n)
        .map(|i| by_id.get(&i.to_string()).is_some_and(|r| r.result == "Ok"))
        .collect())
}

/// A source record offered to a preprocessing function.
pub struct SourceRecord<'a> {
    pub data: &'a [u8],
    pub arrival_ms: i64,
    pub sequence_number: &'a str,
    pub partition_key: &'a str,
    /// The record's shard; `None` for a delivery stream's record (its metadata is
    /// `kinesisFirehoseRecordMetadata`).
    pub shard_id: Option<&'a str>,
}

/// What a preprocessing function did with one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preprocessed {
    Ok(Vec<u8>),
    Dropped,
    ProcessingFailed,
}

pub fn preprocess_event(
    application_arn: &str,
    stream_arn: &str,
    now_ms: i64,
    records: &[SourceRecord<'_>],
) -> Vec<u8> {
    let records: Vec<serde_json::Value> = records
        .iter()
        .enumerate()
        .map(|(i, r)| match r.shard_id {
            Some(shard_id) => json!({
                "recordId": i.to_string(),
                "kinesisStreamRecordMetadata": {
                    "sequenceNumber": r.sequence_number,
                    "partitionKey": r.partition_key,
                    "shardId": shard_id,
                    "approximateArrivalTimestamp": r.arrival_ms,
                },
                "data": b64().encode(r.data),
            }),
            None => json!({
                "recordId": i.to_string(),
                "kinesisFirehoseRecordMetadata": {
                    "approximateArrivalTimestamp": r.arrival_ms,
                },
                "data": b64().encode(r.data),
            }),
        })
        .collect();
    serde_json::to_vec(&json!({
        "invocationId": invocation_id(now_ms),
        "applicationArn": application_arn,
        "streamArn": stream_arn,
        "records": records,
    }))
    .unwrap_or_default()
}

/// One outcome per offered record, in order; any record missing, an unknown result or
/// data that is not base64 fails the invocation.
pub fn preprocess_results(body: &[u8], n: usize) -> Result<Vec<Preprocessed>, InvokeError> {
    let mut by_id = parse_answer(body)?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let id = i.to_string();
        let record = by_id.remove(&id).ok_or_else(|| InvokeError::Malformed {
            message: format!("record id {id} did not come back"),
        })?;
        out.push(match record.result.as_str() {
            "Ok" => {
                Preprocessed::Ok(b64().decode(record.data.unwrap_or_default()).map_err(|_| {
                    InvokeError::Malformed {
                        message: format!("the data of record {id} is not base64"),
                    }
                })?)
            }
            "Dropped" => Preprocessed::Dropped,
            "ProcessingFailed" => Preprocessed::ProcessingFailed,
            other => {
                return Err(InvokeError::Malformed {
                    message: format!("record {id} has the unknown result {other}"),
                });
            }
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_results_count_missing_and_failed_records_as_undelivered() {
        let body = br#"{"records":[{"recordId":"0","result":"Ok"},{"recordId":"2","result":"DeliveryFailed"}]}"#;
        assert_eq!(output_results(body, 3).ok(), Some(vec![true, false, false]));
        assert!(matches!(
            output_results(b"{}", 1),
            Err(InvokeError::Malformed { .. })
        ));
        let event: serde_json::Value =
            serde_json::from_slice(&output_event("arn:app", 1, &[(b"hi".to_vec(), 2)]))
                .unwrap_or_default();
        assert_eq!(event["records"][0]["data"], "aGk=");
        assert_eq!(
            event["records"][0]["lambdaDeliveryRecordMetadata"]["retryHint"],
            2
        );
    }

    #[test]
    fn preprocess_results_decode_every_outcome() {
        let body = br#"{"records":[{"recordId":"1","result":"Dropped"},{"recordId":"0","result":"Ok","data":"aGk="},{"recordId":"2","result":"ProcessingFailed"}]}"#;
        assert_eq!(
            preprocess_results(body, 3).ok(),
            Some(vec![
                Preprocessed::Ok(b"hi".to_vec()),
                Preprocessed::Dropped,
                Preprocessed::ProcessingFailed
            ])
        );
        let missing = br#"{"records":[{"recordId":"0","result":"Ok","data":""}]}"#;
        assert!(matches!(
            preprocess_results(missing, 2),
            Err(InvokeError::Malformed { .. })
        ));
    }
}
