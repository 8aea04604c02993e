//! Wiring of the Kinesis Data Analytics service: the adapter the server calls, the function
//! invoker its Lambda outputs and preprocessing use, and its runners' start and stop. It has
//! no config section yet: defaults (`millrace_analytics::AnalyticsConfig`) apply. Functions
//! are resolved as the function consumers resolve them: declared under
//! `[[functions.function]]` / `[[firehose.function]]`, or created through CreateFunction.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use millrace_analytics::Analytics;
use millrace_analytics::connect::{
    DeliveredRecord, DeliveryError, DeliveryRead, DeliveryStreams, FunctionInvoker, InvokeError,
};
use millrace_firehose::Firehose;
use millrace_functions::Functions;
use millrace_server::{AnalyticsError, AnalyticsService};
use millrace_streams::RequestContext;
use millrace_wire::firehose as fh;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long application runners get to stop at shutdown (their checkpoint is at most one
/// round old).
const STOP_DEADLINE_MS: u64 = 5_000;

/// Largest answer read (Lambda's synchronous response limit).
const RESPONSE_BYTES_MAX: usize = 6 * 1024 * 1024;

/// Calls functions (declared ones and those created through the Lambda API, resolved by the
/// function consumers' service) with a POST of the event.
pub struct FunctionUrls {
    http: reqwest::Client,
    functions: Functions,
}

impl FunctionInvoker for FunctionUrls {
    fn invoke<'a>(
        &'a self,
        function_arn: &'a str,
        event: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<u8>, InvokeError>> {
        Box::pin(async move {
            let (url, timeout_ms) = self.functions.function_url(function_arn).ok_or_else(|| {
                InvokeError::NotMapped {
                    function_arn: function_arn.to_string(),
                }
            })?;
            let transport = |e: reqwest::Error| InvokeError::Transport {
                message: e.to_string(),
            };
            let mut response = self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .timeout(Duration::from_millis(timeout_ms))
                .body(event)
                .send()
                .await
                .map_err(transport)?;
            let status = response.status();
            if !status.is_success() {
                return Err(InvokeError::Status {
                    status: status.as_u16(),
                });
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(transport)? {
                if body.len() + chunk.len() > RESPONSE_BYTES_MAX {
                    return Err(InvokeError::ResponseTooLarge {
                        bytes_max: RESPONSE_BYTES_MAX,
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        })
    }
}

/// The applications' view of the in-process Firehose service: outputs put their rows with
/// PutRecordBatch (in the delivery stream's account and region); inputs read the accepted
/// records from the delivery stream's log and hold them ([`Firehose::read_input`]).
pub struct FirehoseOutputs(pub Firehose);

/// Bytes per read of a delivery stream input.
const INPUT_READ_BYTES_MAX: usize = 8 * 1024 * 1024;

/// The request context and name of a delivery stream ARN
/// (`arn:aws:firehose:REGION:ACCOUNT:deliverystream/NAME`).
fn delivery_stream(arn: &str) -> Result<(RequestContext, String), DeliveryError> {
    let bad_arn = || DeliveryError::BadArn {
        delivery_stream_arn: arn.to_string(),
    };
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let (Some(region), Some(account), Some(resource)) = (parts.get(3), parts.get(4), parts.get(5))
    else {
        return Err(bad_arn());
    };
    let name = resource
        .strip_prefix("deliverystream/")
        .ok_or_else(bad_arn)?;
    let ctx = RequestContext {
        account: (*account).to_string(),
        region: (*region).to_string(),
        request_id: "analytics".into(),
        principal: None,
    };
    Ok((ctx, name.to_string()))
}

fn read_error(error: impl std::fmt::Display) -> DeliveryError {
    DeliveryError::Read {
        message: error.to_string(),
    }
}

impl DeliveryStreams for FirehoseOutputs {
    fn put_record_batch<'a>(
        &'a self,
        delivery_stream_arn: &'a str,
        records: Vec<Vec<u8>>,
    ) -> BoxFuture<'a, Result<Vec<bool>, DeliveryError>> {
        Box::pin(async move {
            let (ctx, name) = delivery_stream(delivery_stream_arn)?;
            let n = records.len();
            let input = fh::PutRecordBatchInput {
                delivery_stream_name: name,
                records: records
                    .into_iter()
                    .map(|data| fh::Record { data: data.into() })
                    .collect(),
            };
            match self
                .0
                .handle(&ctx, fh::Request::PutRecordBatch(input))
                .await
            {
                Ok(fh::Response::PutRecordBatch(output)) if output.request_responses.len() == n => {
                    Ok(output
                        .request_responses
                        .iter()
                        .map(|r| r.error_code.is_none())
                        .collect())
                }
                Ok(_) => Err(DeliveryError::Refused {
                    error_type: "unexpected answer".into(),
                }),
                Err(error) => Err(DeliveryError::Refused {
                    error_type: error.to_string(),
                }),
            }
        })
    }

    fn offset_at<'a>(
        &'a self,
        delivery_stream_arn: &'a str,
        timestamp_ms: i64,
    ) -> BoxFuture<'a, Result<u64, DeliveryError>> {
        Box::pin(async move {
            let (ctx, name) = delivery_stream(delivery_stream_arn)?;
            let firehose = self.0.clone();
            // The log reads files: off the runtime's threads.
            tokio::task::spawn_blocking(move || firehose.input_offset_at(&ctx, &name, timestamp_ms))
                .await
                .map_err(read_error)?
                .map_err(read_error)
        })
    }

    fn read<'a>(
        &'a self,
        delivery_stream_arn: &'a str,
        from_offset: u64,
        records_max: usize,
    ) -> BoxFuture<'a, Result<DeliveryRead, DeliveryError>> {
        Box::pin(async move {
            let (ctx, name) = delivery_stream(delivery_stream_arn)?;
            let firehose = self.0.clone();
            let read = tokio::task::spawn_blocking(move || {
                firehose.read_input(&ctx, &name, from_offset, records_max, INPUT_READ_BYTES_MAX)
            })
            .await
            .map_err(read_error)?
            .map_err(read_error)?;
            Ok(DeliveryRead {
                records: read
                    .records
                    .into_iter()
                    .map(|r| DeliveredRecord {
                        offset: r.offset,
                        arrival_ms: r.arrival_ms,
                        data: r.data,
                    })
                    .collect(),
                next_offset: read.next_offset,
                end_offset: read.end_offset,
            })
        })
    }

    fn hold<'a>(
        &'a self,
        delivery_stream_arn: &'a str,
        holder: &'a str,
        offset: Option<u64>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let (ctx, name) = delivery_stream(delivery_stream_arn)?;
            let firehose = self.0.clone();
            let holder = holder.to_string();
            // A hold placed or released is written to the catalog (an fsync).
            tokio::task::spawn_blocking(move || match offset {
                Some(offset) => firehose.hold_input(&ctx, &name, &holder, offset),
                None => firehose.release_input(&ctx, &name, &holder),
            })
            .await
            .map_err(read_error)?
            .map_err(read_error)
        })
    }
}

/// Gives the applications' runners the Firehose delivery streams.
pub fn connect_firehose(analytics: &Analytics, firehose: &Firehose) {
    analytics.set_delivery_streams(Arc::new(FirehoseOutputs(firehose.clone())));
}

/// Gives the applications' runners the functions.
pub fn connect(analytics: &Analytics, functions: &Functions) {
    analytics.set_function_invoker(Arc::new(FunctionUrls {
        http: reqwest::Client::new(),
        functions: functions.clone(),
    }));
}

/// What the server calls.
pub struct Adapter(pub Analytics);

impl AnalyticsService for Adapter {
    fn has_operation(&self, operation: &str) -> bool {
        millrace_analytics::OPERATIONS.contains(&operation)
    }

    fn resource_arn(&self, account: &str, region: &str, body: &[u8]) -> String {
        Analytics::resource_arn(account, region, body)
    }

    fn handle<'a>(
        &'a self,
        ctx: &'a RequestContext,
        operation: &'a str,
        body: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, AnalyticsError>> {
        Box::pin(async move {
            match self.0.handle(ctx, operation, body).await {
                Ok(answer) => Ok(serde_json::to_vec(&answer).unwrap_or_else(|_| b"{}".to_vec())),
                Err(error) => Err(AnalyticsError {
                    error_type: error.error_type.to_string(),
                    message: if error.internal {
                        "Internal service error".to_string()
                    } else {
                        error.message.clone()
                    },
                    status: error.status,
                    internal_detail: error.internal.then(|| error.message.clone()),
                }),
            }
        })
    }

    fn reset(&self) -> Result<(), String> {
        self.0.reset()
    }

    fn metrics(&self) -> Vec<(String, Vec<(&'static str, u64)>)> {
        self.0.metrics()
    }
}

/// Starts the runners of running applications under `tracker`.
pub fn start(analytics: &Analytics, tracker: &TaskTracker, shutdown: &CancellationToken) {
    analytics.start(tracker.clone(), shutdown.clone());
}

/// Waits for the runners to stop (the shutdown token has fired).
pub async fn stop(tracker: &TaskTracker) {
    tracker.close();
    if tokio::time::timeout(Duration::from_millis(STOP_DEADLINE_MS), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some analytics application runners did not stop in time");
    }
}
