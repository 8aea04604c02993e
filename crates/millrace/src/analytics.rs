//! Wiring of the Kinesis Data Analytics service: the adapter the server calls and its
//! runners' start and stop. It has no config section yet: defaults
//! (`millrace_analytics::AnalyticsConfig`) apply.

use std::time::Duration;

use futures::future::BoxFuture;
use millrace_analytics::Analytics;
use millrace_server::{AnalyticsError, AnalyticsService};
use millrace_streams::RequestContext;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long application runners get to stop at shutdown (their checkpoint is at most one
/// round old).
const STOP_DEADLINE_MS: u64 = 5_000;

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
