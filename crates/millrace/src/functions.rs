//! Wiring of the function consumers: the `[functions]` config section, the adapter the
//! server calls, and the mapping tasks' start and stop.
//!
//! ```toml
//! [functions]
//! poll_interval_ms = 1000          # an idle shard is read this often (AWS: 1 s)
//! retry_backoff_ms_min = 1000      # first retry after a failed invocation, doubling ...
//! retry_backoff_ms_max = 60000     # ... up to this
//! invocation_timeout_ms = 300000   # how long a declared function gets to answer
//! mappings_max = 1000
//!
//! [[functions.function]]           # a "Lambda function": an ARN and the URL it runs at
//! arn = "arn:aws:lambda:us-east-1:000000000000:function:process-orders"
//! url = "http://127.0.0.1:9001/"
//! ```
//!
//! Functions declared under `[[firehose.function]]` are functions here too. S3 on-failure
//! destinations use the `[firehose]` S3 settings (or folders under `DATA_DIR/buckets`).

use std::time::Duration;

use futures::future::BoxFuture;
use millrace_firehose::{FirehoseConfig, FunctionMapping};
use millrace_functions::{Functions, FunctionsConfig};
use millrace_server::{FunctionsService, RestAnswer};
use millrace_streams::RequestContext;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long mapping tasks get to stop at shutdown (an unfinished batch is replayed after
/// the restart).
const STOP_DEADLINE_MS: u64 = 5_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionsSection {
    pub poll_interval_ms: Option<u64>,
    pub retry_backoff_ms_min: Option<u64>,
    pub retry_backoff_ms_max: Option<u64>,
    pub invocation_timeout_ms: Option<u64>,
    pub mappings_max: Option<usize>,
    #[serde(default, rename = "function")]
    pub functions: Vec<FunctionMapping>,
}

pub fn config(section: &FunctionsSection, firehose: &FirehoseConfig) -> FunctionsConfig {
    let defaults = FunctionsConfig::default();
    let mut functions = section.functions.clone();
    functions.extend(firehose.functions.iter().cloned());
    let backoff_min = section
        .retry_backoff_ms_min
        .unwrap_or(defaults.retry_backoff_ms_min)
        .max(1);
    FunctionsConfig {
        poll_interval_ms: section
            .poll_interval_ms
            .unwrap_or(defaults.poll_interval_ms)
            .max(1),
        retry_backoff_ms_min: backoff_min,
        retry_backoff_ms_max: section
            .retry_backoff_ms_max
            .unwrap_or(defaults.retry_backoff_ms_max)
            .max(backoff_min),
        invocation_timeout_ms: section
            .invocation_timeout_ms
            .unwrap_or(defaults.invocation_timeout_ms)
            .max(1),
        mappings_max: section.mappings_max.unwrap_or(defaults.mappings_max),
        functions,
        s3: firehose.s3.clone(),
        embedded_buckets_dir: firehose.embedded_buckets_dir.clone(),
    }
}

/// What the server calls.
pub struct Adapter(pub Functions);

impl FunctionsService for Adapter {
    fn operation(
        &self,
        method: &str,
        path: &str,
        account: &str,
        region: &str,
    ) -> Option<(&'static str, String)> {
        Functions::operation(method, path, account, region)
    }

    fn handle<'a>(
        &'a self,
        ctx: &'a RequestContext,
        method: &'a str,
        path: &'a str,
        query: &'a str,
        body: &'a [u8],
    ) -> BoxFuture<'a, RestAnswer> {
        Box::pin(async move {
            match self.0.handle(ctx, method, path, query, body).await {
                Ok((status, value)) => RestAnswer {
                    status,
                    body: if value.is_null() {
                        Vec::new()
                    } else {
                        serde_json::to_vec(&value).unwrap_or_default()
                    },
                    error_type: None,
                    internal_detail: None,
                },
                Err(error) => {
                    let mapped = error.to_lambda();
                    let kind = if mapped.status >= 500 {
                        "Service"
                    } else {
                        "User"
                    };
                    RestAnswer {
                        status: mapped.status,
                        body: serde_json::to_vec(
                            &serde_json::json!({"Type": kind, "message": mapped.message}),
                        )
                        .unwrap_or_default(),
                        error_type: Some(mapped.error_type.to_string()),
                        internal_detail: error.is_internal().then(|| error.to_string()),
                    }
                }
            }
        })
    }

    fn reset(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.0.reset().await.map_err(|e| e.to_string()) })
    }
}

/// Starts the mapping tasks under `tracker`.
pub fn start(functions: &Functions, tracker: &TaskTracker, shutdown: &CancellationToken) {
    functions.start(tracker.clone(), shutdown.clone());
}

/// Waits for the mapping tasks to stop (the shutdown token has fired).
pub async fn stop(tracker: &TaskTracker) {
    tracker.close();
    if tokio::time::timeout(Duration::from_millis(STOP_DEADLINE_MS), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some event source mapping tasks did not stop in time");
    }
}
