//! Wiring of the Firehose service: its `[firehose]` config section, the adapter the server
//! calls, delivery streams declared in the config file, and its tasks' start and stop.
//!
//! ```toml
//! [firehose]
//! s3_endpoint = "http://127.0.0.1:9000"  # else AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the
//!                                         # profile's endpoint_url; none: buckets are folders
//!                                         # under DATA_DIR/buckets
//! s3_region = "us-east-1"                 # else AWS_REGION, AWS_DEFAULT_REGION, the profile
//! s3_access_key_id = "..."                # else AWS_ACCESS_KEY_ID, the shared credentials file
//! s3_secret_access_key = "..."
//! s3_path_style = true                    # default: true with an endpoint
//! create_delay_ms = 0                     # how long a new delivery stream stays CREATING
//! delete_delay_ms = 0
//! active_partitions_max = 500             # dynamic partitioning, per delivery stream
//! buffered_bytes_max = 268435456          # memory for buffers, per delivery stream
//! backlog_records_max = 10000000          # undelivered records before producers back off
//! source_poll_interval_ms = 1000          # Kinesis sources: GetRecords per shard when idle
//!
//! [[firehose.function]]                   # a transformation "Lambda": an HTTP URL
//! arn = "arn:aws:lambda:us-east-1:000000000000:function:enrich"
//! url = "http://127.0.0.1:9001/"
//!
//! [[firehose.table]]                      # a "Glue table" for JSON to Parquet conversion
//! database = "analytics"
//! name = "events"
//! columns = [{ name = "id", type = "bigint" }, { name = "tags", type = "array<string>" }]
//!
//! [[firehose.delivery_stream]]            # exists from start-up: CreateDeliveryStream's JSON
//! request = '''{"DeliveryStreamName": "orders", "ExtendedS3DestinationConfiguration":
//!   {"BucketARN": "arn:aws:s3:::orders", "RoleARN": "arn:aws:iam::000000000000:role/firehose"}}'''
//! # account_id = "...", region = "..."    # default: the server's
//! ```

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use millrace_firehose::{
    Firehose, FirehoseConfig, FunctionMapping, S3Overrides, S3Settings, TableDefinition,
};
use millrace_server::{FirehoseService, ServiceError};
use millrace_streams::RequestContext;
use millrace_wire::firehose as fh;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long delivery tasks get to stop at shutdown (what they buffered is in the log).
const STOP_DEADLINE_MS: u64 = 5_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirehoseSection {
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
    pub s3_session_token: Option<String>,
    pub s3_path_style: Option<bool>,
    pub create_delay_ms: Option<i64>,
    pub delete_delay_ms: Option<i64>,
    pub delivery_streams_max: Option<usize>,
    pub active_partitions_max: Option<usize>,
    pub buffered_bytes_max: Option<usize>,
    pub backlog_records_max: Option<u64>,
    pub source_poll_interval_ms: Option<u64>,
    #[serde(default, rename = "function")]
    pub functions: Vec<FunctionMapping>,
    #[serde(default, rename = "table")]
    pub tables: Vec<TableDefinition>,
    #[serde(default, rename = "delivery_stream")]
    pub delivery_streams: Vec<DeclaredDeliveryStream>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredDeliveryStream {
    /// The CreateDeliveryStream request as JSON (what `aws firehose create-delivery-stream
    /// --cli-input-json` takes).
    pub request: String,
    pub account_id: Option<String>,
    pub region: Option<String>,
}

/// The logs delivery streams own, which the Data Streams service must not sweep away.
pub fn owned_log_ids(
    catalog: &millrace_catalog::Catalog,
) -> anyhow::Result<std::collections::BTreeSet<u64>> {
    millrace_firehose::owned_log_ids(catalog).context("cannot read the delivery streams")
}

pub fn config(section: &FirehoseSection, data_dir: &Path) -> anyhow::Result<FirehoseConfig> {
    let defaults = FirehoseConfig::default();
    let overrides = S3Overrides {
        endpoint: section.s3_endpoint.clone(),
        region: section.s3_region.clone(),
        access_key_id: section.s3_access_key_id.clone(),
        secret_access_key: section.s3_secret_access_key.clone(),
        session_token: section.s3_session_token.clone(),
        path_style: section.s3_path_style,
    };
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let s3 = S3Settings::resolve(
        &overrides,
        &|name| std::env::var(name).ok(),
        home.as_deref(),
    );
    for table in &section.tables {
        table.schema().map_err(|e| {
            anyhow::anyhow!("[[firehose.table]] {}.{}: {e}", table.database, table.name)
        })?;
    }
    Ok(FirehoseConfig {
        create_delay_ms: section.create_delay_ms.unwrap_or(defaults.create_delay_ms),
        delete_delay_ms: section.delete_delay_ms.unwrap_or(defaults.delete_delay_ms),
        delivery_streams_max: section
            .delivery_streams_max
            .unwrap_or(defaults.delivery_streams_max),
        active_partitions_max: section
            .active_partitions_max
            .unwrap_or(defaults.active_partitions_max),
        buffered_bytes_max: section
            .buffered_bytes_max
            .unwrap_or(defaults.buffered_bytes_max),
        backlog_records_max: section
            .backlog_records_max
            .unwrap_or(defaults.backlog_records_max),
        source_poll_interval_ms: section
            .source_poll_interval_ms
            .unwrap_or(defaults.source_poll_interval_ms)
            .max(1),
        s3,
        embedded_buckets_dir: data_dir.join("buckets"),
        functions: section.functions.clone(),
        tables: section.tables.clone(),
    })
}

/// What the server calls.
pub struct Adapter(pub Firehose);

impl FirehoseService for Adapter {
    fn handle<'a>(
        &'a self,
        ctx: &'a RequestContext,
        request: fh::Request,
    ) -> BoxFuture<'a, Result<fh::Response, ServiceError>> {
        Box::pin(async move {
            self.0.handle(ctx, request).await.map_err(|error| {
                let (kind, message) = error.to_aws();
                ServiceError {
                    kind,
                    message,
                    internal: error.is_internal(),
                    detail: error.to_string(),
                }
            })
        })
    }

    fn reset(&self) -> Result<(), String> {
        self.0.reset().map_err(|e| e.to_string())
    }

    fn metrics(&self) -> Vec<(String, Vec<(&'static str, u64)>)> {
        self.0.all_metrics()
    }
}

/// Creates the delivery streams the config file declares, if they do not exist yet.
pub async fn declare(
    firehose: &Firehose,
    section: &FirehoseSection,
    account_id: &str,
    region: &str,
) -> anyhow::Result<()> {
    for declared in &section.delivery_streams {
        let ctx = RequestContext {
            account: declared
                .account_id
                .clone()
                .unwrap_or_else(|| account_id.to_string()),
            region: declared
                .region
                .clone()
                .unwrap_or_else(|| region.to_string()),
            request_id: "config".into(),
            principal: None,
        };
        let request = fh::decode_request(
            fh::Operation::CreateDeliveryStream,
            millrace_wire::Format::Json,
            declared.request.as_bytes(),
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "[[firehose.delivery_stream]] request is not a valid CreateDeliveryStream: {e}"
            )
        })?;
        let name = match &request {
            fh::Request::CreateDeliveryStream(input) => input.delivery_stream_name.clone(),
            _ => String::new(),
        };
        match firehose.handle(&ctx, request).await {
            Ok(_) => tracing::info!(delivery_stream = %name, "created declared delivery stream"),
            Err(millrace_firehose::Error::AlreadyExists { .. }) => {}
            Err(error) => anyhow::bail!("cannot create declared delivery stream {name}: {error}"),
        }
    }
    Ok(())
}

/// Starts delivery (one task per delivery stream, plus housekeeping) under `tracker`.
pub fn start(firehose: &Firehose, tracker: &TaskTracker, shutdown: &CancellationToken) {
    firehose.start(tracker.clone(), shutdown.clone());
    let firehose = firehose.clone();
    let shutdown = shutdown.clone();
    tracker.spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = interval.tick() => {
                    if let Err(error) = firehose.housekeeping() {
                        tracing::error!(%error, "Firehose housekeeping failed");
                    }
                }
                () = shutdown.cancelled() => break,
            }
        }
    });
}

/// Waits for the delivery tasks to stop (the shutdown token has fired). Nothing is flushed:
/// whatever a buffer held is in the log and is delivered after the restart.
pub async fn stop(tracker: &TaskTracker) {
    tracker.close();
    if tokio::time::timeout(Duration::from_millis(STOP_DEADLINE_MS), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some Firehose delivery tasks did not stop in time");
    }
}
