//! The HTTP endpoint destination, with Firehose's request/response contract.
//!
//! Request: `POST <Url>` with `X-Amz-Firehose-Protocol-Version: 1.0`,
//! `X-Amz-Firehose-Request-Id` (the same across retries), `X-Amz-Firehose-Source-Arn`,
//! `X-Amz-Firehose-Access-Key` (when configured), `X-Amz-Firehose-Common-Attributes` (when
//! any), `Content-Type: application/json`, `Content-Encoding: gzip` when `ContentEncoding` is
//! GZIP, and the body `{"requestId":"...","timestamp":<ms>,"records":[{"data":"<base64>"}]}`
//! (at most 10,000 records per request).
//!
//! Response: only 200 with a JSON body echoing the `requestId` is success; 413 is a
//! permanent failure (not retried); anything else (including a 200 that does not echo the
//! request id, and no answer within 3 minutes) is retried with exponential backoff (1 s
//! doubling, ±15 % jitter, at most 120 s between attempts) until `RetryOptions.DurationInSeconds`
//! has passed on the injected clock. Redirects are not followed.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use millrace_log::Clock;
use rand::RngExt;
use tokio_util::sync::CancellationToken;

use crate::plan::HttpTarget;

/// Records in one request (AWS: 10,000).
pub const REQUEST_RECORDS_MAX: usize = 10_000;
/// The endpoint has this long to answer one request.
const RESPONSE_TIMEOUT_MS: u64 = 180_000;
const BACKOFF_INITIAL_MS: i64 = 1_000;
const BACKOFF_MAX_MS: i64 = 120_000;
/// Largest response body read (AWS: 1 MiB).
const RESPONSE_BYTES_MAX: usize = 1024 * 1024;

/// How delivering one batch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpOutcome {
    Delivered {
        attempts: u32,
    },
    /// The retry window passed; the records go to the S3 error output.
    Failed {
        attempts: u32,
        message: String,
    },
    /// 413: not retried, not written to the error output.
    PayloadTooLarge {
        attempts: u32,
    },
    /// Shutdown or deletion stopped the retries (the records stay undelivered in the log).
    Stopped,
}

/// Waits `ms` on the injected clock (a test that advances the clock ends the wait), checking
/// every 20 ms of real time; `false` if `stop` fired first.
pub async fn sleep_on_clock(clock: &Arc<dyn Clock>, ms: i64, stop: &CancellationToken) -> bool {
    let until = clock.now_millis().saturating_add(ms);
    loop {
        let left = until - clock.now_millis();
        if left <= 0 {
            return true;
        }
        let step = Duration::from_millis(u64::try_from(left.min(20)).unwrap_or(20));
        tokio::select! {
            () = tokio::time::sleep(step) => {}
            () = stop.cancelled() => return false,
        }
    }
}

fn backoff_ms(attempt: u32) -> i64 {
    let base = BACKOFF_INITIAL_MS
        .saturating_mul(1i64 << attempt.min(20))
        .min(BACKOFF_MAX_MS);
    let jitter = rand::rng().random_range(-0.15..=0.15);
    (base as f64 * (1.0 + jitter)) as i64
}

async fn attempt(
    http: &reqwest::Client,
    target: &HttpTarget,
    source_arn: &str,
    request_id: &str,
    body: &Bytes,
) -> Result<(), (u16, String)> {
    let mut request = http
        .post(&target.url)
        .timeout(Duration::from_millis(RESPONSE_TIMEOUT_MS))
        .header("content-type", "application/json")
        .header("x-amz-firehose-protocol-version", "1.0")
        .header("x-amz-firehose-request-id", request_id)
        .header("x-amz-firehose-source-arn", source_arn)
        .body(body.clone());
    if target.gzip {
        request = request.header("content-encoding", "gzip");
    }
    if let Some(key) = &target.access_key {
        request = request.header("x-amz-firehose-access-key", key);
    }
    if let Some(attributes) = &target.common_attributes {
        request = request.header("x-amz-firehose-common-attributes", attributes);
    }
    let response = request.send().await.map_err(|e| (0, e.to_string()))?;
    let status = response.status().as_u16();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| (status, e.to_string()))?;
    if status != 200 {
        let text = String::from_utf8_lossy(bytes.get(..512).unwrap_or(&bytes)).into_owned();
        return Err((status, format!("The endpoint answered {status}: {text}")));
    }
    if bytes.len() > RESPONSE_BYTES_MAX {
        return Err((500, "The response body is larger than 1 MiB.".to_string()));
    }
    let parsed: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| (500, "The response body is not JSON.".to_string()))?;
    if parsed.get("requestId").and_then(|v| v.as_str()) != Some(request_id) {
        return Err((
            500,
            "The response does not echo the request's requestId.".to_string(),
        ));
    }
    Ok(())
}

fn body(request_id: &str, timestamp_ms: i64, records: &[Bytes], gzip: bool) -> Bytes {
    let engine = &base64::engine::general_purpose::STANDARD;
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|r| serde_json::json!({ "data": engine.encode(r) }))
        .collect();
    let json = serde_json::to_vec(&serde_json::json!({
        "requestId": request_id,
        "timestamp": timestamp_ms,
        "records": records,
    }))
    .unwrap_or_default();
    if gzip {
        match crate::compress::gzip(&json) {
            Ok(compressed) => return Bytes::from(compressed),
            Err(error) => tracing::warn!(%error, "cannot gzip an HTTP endpoint request"),
        }
    }
    Bytes::from(json)
}

/// Delivers records (at most [`REQUEST_RECORDS_MAX`]) in one request, retrying as the
/// contract says.
pub async fn deliver(
    http: &reqwest::Client,
    target: &HttpTarget,
    source_arn: &str,
    records: &[Bytes],
    clock: &Arc<dyn Clock>,
    stop: &CancellationToken,
) -> HttpOutcome {
    let request_id = uuid::Uuid::new_v4().to_string();
    let deadline = clock.now_millis().saturating_add(target.retry_ms);
    let mut attempts = 0u32;
    loop {
        let payload = body(&request_id, clock.now_millis(), records, target.gzip);
        attempts += 1;
        let result = tokio::select! {
            result = attempt(http, target, source_arn, &request_id, &payload) => result,
            () = stop.cancelled() => return HttpOutcome::Stopped,
        };
        match result {
            Ok(()) => return HttpOutcome::Delivered { attempts },
            Err((413, _)) => return HttpOutcome::PayloadTooLarge { attempts },
            Err((_, message)) => {
                let wait = backoff_ms(attempts - 1);
                if clock.now_millis().saturating_add(wait) > deadline {
                    return HttpOutcome::Failed { attempts, message };
                }
                tracing::debug!(%message, attempts, wait_ms = wait, "HTTP endpoint delivery failed; retrying");
                if !sleep_on_clock(clock, wait, stop).await {
                    return HttpOutcome::Stopped;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        for attempt in 0..10 {
            let expected = (1000i64 << attempt).min(120_000) as f64;
            let wait = backoff_ms(attempt) as f64;
            assert!(
                wait >= expected * 0.84 && wait <= expected * 1.16,
                "{attempt}: {wait}"
            );
        }
    }

    #[test]
    fn bodies() -> Result<(), Box<dyn std::error::Error>> {
        let records = [Bytes::from_static(b"hello"), Bytes::from_static(b"")];
        let plain = body("rid", 42, &records, false);
        let parsed: serde_json::Value = serde_json::from_slice(&plain)?;
        assert_eq!(
            parsed,
            serde_json::json!({"requestId":"rid","timestamp":42,"records":[{"data":"aGVsbG8="},{"data":""}]})
        );
        let gz = body("rid", 42, &records, true);
        assert_eq!(crate::compress::gunzip(&gz, 1 << 20)?, plain.to_vec());
        Ok(())
    }
}
