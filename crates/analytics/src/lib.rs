//! Kinesis Data Analytics SQL applications (`KinesisAnalytics_20150814`): the control plane
//! (applications, versions, inputs, outputs, tags, schema discovery) and the runners that
//! execute running applications' SQL over Kinesis streams.
//!
//! The server hands each request over as its operation name and JSON body ([`Analytics::
//! handle`]) and gets back a JSON answer or an [`ApiError`] (`__type`, message, status): the
//! request and response shapes are those of the botocore model
//! `kinesisanalytics/2015-08-14/service-2.json`, handled here as JSON values because the
//! service is small and its shapes mostly go back out as they came in.
//!
//! Applications are catalog records (`Table::Applications`), written durably before an
//! answer. Every change that AWS versions (code, inputs, outputs, reference data, logging
//! options) needs the caller's `CurrentApplicationVersionId` and increments it; a stale one is
//! a `ConcurrentModificationException`. Code is compiled on create and update (a
//! `CodeValidationException` carries the parser's or compiler's message with the position),
//! and again on start. StartApplication moves READY → STARTING; the runner moves it to
//! RUNNING once it has opened its input (listed the source's shards). StopApplication moves
//! RUNNING (or STARTING) → STOPPING; the runner finishes the delivery in flight, writes its
//! checkpoint and moves it to READY as it exits. A restart resumes STARTING and RUNNING
//! applications and settles STOPPING ones as READY (their last checkpoint is on disk).
//!
//! Outputs run to Kinesis streams, Lambda functions and Firehose delivery streams; inputs
//! are Kinesis streams or Firehose delivery streams, optionally through a preprocessing
//! Lambda (`runner`, `connect`). A delivery stream input holds the delivery stream's records
//! from its checkpoint on (delivery does not trim them); deleting the application releases
//! the hold. Reference data sources are read into tables when an application starts
//! (reference.rs).

pub mod connect;
pub mod engine;
pub mod input;
pub mod metrics;
pub mod rcf;
pub mod reference;
mod runner;
pub mod sql;
pub mod value;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use millrace_catalog::{Catalog, CatalogError, Table};
use millrace_log::Clock;
use millrace_streams::{RequestContext, Streams};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const TARGET_PREFIX: &str = "KinesisAnalytics_20150814";

/// The operations served (the model's 20).
pub const OPERATIONS: &[&str] = &[
    "AddApplicationCloudWatchLoggingOption",
    "AddApplicationInput",
    "AddApplicationInputProcessingConfiguration",
    "AddApplicationOutput",
    "AddApplicationReferenceDataSource",
    "CreateApplication",
    "DeleteApplication",
    "DeleteApplicationCloudWatchLoggingOption",
    "DeleteApplicationInputProcessingConfiguration",
    "DeleteApplicationOutput",
    "DeleteApplicationReferenceDataSource",
    "DescribeApplication",
    "DiscoverInputSchema",
    "ListApplications",
    "ListTagsForResource",
    "StartApplication",
    "StopApplication",
    "TagResource",
    "UntagResource",
    "UpdateApplication",
];

#[derive(Debug, Clone)]
pub struct AnalyticsConfig {
    /// Applications per account and region (AWS's default quota is 50).
    pub applications_max: usize,
    /// How often a runner polls an idle source shard.
    pub poll_interval_ms: u64,
    /// Where reference data objects are read from (reference.rs).
    pub reference_store: reference::ReferenceStore,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            applications_max: 50,
            poll_interval_ms: 200,
            reference_store: reference::ReferenceStore::default(),
        }
    }
}

/// Outputs per application (AWS allows three destinations).
const OUTPUTS_MAX: usize = 3;
/// Tags per application.
const TAGS_MAX: usize = 50;
/// Records DiscoverInputSchema samples.
const DISCOVER_RECORDS_MAX: usize = 100;
const NAME_CHARS_MAX: usize = 128;
const DESCRIPTION_CHARS_MAX: usize = 1024;
const NAME_PREFIX_CHARS_MAX: usize = 32;
const PARALLELISM_MAX: i64 = 64;

/// An error as the client sees it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct ApiError {
    pub error_type: &'static str,
    pub message: String,
    pub status: u16,
    /// A failure inside Millrace (logged, with a generic message sent).
    pub internal: bool,
}

impl ApiError {
    fn new(error_type: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            error_type,
            message: message.into(),
            status: 400,
            internal: false,
        }
    }

    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new("InvalidArgumentException", message)
    }

    fn not_found(name: &str) -> ApiError {
        ApiError::new(
            "ResourceNotFoundException",
            format!("Application {name} not found"),
        )
    }

    fn in_use(message: impl Into<String>) -> ApiError {
        ApiError::new("ResourceInUseException", message)
    }
}

impl From<CatalogError> for ApiError {
    fn from(error: CatalogError) -> ApiError {
        ApiError {
            error_type: "ServiceUnavailableException",
            message: format!("catalog: {error}"),
            status: 500,
            internal: true,
        }
    }
}

/// An application as stored in the catalog. Inputs and outputs are kept as their
/// description JSON (the shapes DescribeApplication returns).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplicationRecord {
    pub account: String,
    pub region: String,
    pub name: String,
    pub description: Option<String>,
    pub code: Option<String>,
    pub status: String,
    pub version: i64,
    pub create_s: i64,
    pub update_s: i64,
    pub inputs: Vec<Json>,
    pub outputs: Vec<Json>,
    pub reference_data_sources: Vec<Json>,
    pub cloudwatch_logging_options: Vec<Json>,
    pub tags: BTreeMap<String, String>,
    /// The next id number for inputs, outputs, reference data and logging options.
    pub next_id: u64,
}

impl ApplicationRecord {
    fn key(&self) -> String {
        key(&self.account, &self.region, &self.name)
    }

    pub fn arn(&self) -> String {
        format!(
            "arn:aws:kinesisanalytics:{}:{}:application/{}",
            self.region, self.account, self.name
        )
    }

    fn summary(&self) -> Json {
        json!({
            "ApplicationName": self.name,
            "ApplicationARN": self.arn(),
            "ApplicationStatus": self.status,
        })
    }

    fn detail(&self) -> Json {
        let mut d = json!({
            "ApplicationName": self.name,
            "ApplicationARN": self.arn(),
            "ApplicationStatus": self.status,
            "CreateTimestamp": self.create_s,
            "LastUpdateTimestamp": self.update_s,
            "InputDescriptions": self.inputs,
            "OutputDescriptions": self.outputs,
            "ReferenceDataSourceDescriptions": self.reference_data_sources,
            "CloudWatchLoggingOptionDescriptions": self.cloudwatch_logging_options,
            "ApplicationVersionId": self.version,
        });
        if let Some(description) = &self.description {
            d["ApplicationDescription"] = json!(description);
        }
        if let Some(code) = &self.code {
            d["ApplicationCode"] = json!(code);
        }
        d
    }

    fn new_id(&mut self) -> String {
        let id = format!("{}.1", self.next_id);
        self.next_id += 1;
        id
    }
}

/// Where a runner continues: per source shard, the last sequence number taken, and the
/// engine's window state; written after the outputs of what it covers were sent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    /// `NOW` or `TRIM_HORIZON`: where shards without a position start.
    pub initial: String,
    /// For `NOW`: the time the application was started.
    pub start_ms: i64,
    pub positions: BTreeMap<String, String>,
    /// Shards read to their end (closed by resharding).
    #[serde(default)]
    pub finished: Vec<String>,
    /// The code the window state belongs to.
    pub code: Option<String>,
    pub engine: Option<engine::EngineState>,
}

fn key(account: &str, region: &str, name: &str) -> String {
    format!("{account}/{region}/{name}")
}

impl Inner {
    /// Moves an application from status `from` to `to` (a runner reporting progress); no-op
    /// when it is in another status by now (deleted, stopped, or already moved).
    pub(crate) async fn transition(&self, key: &str, from: &str, to: &str) {
        let _write = self.write.lock().await;
        let Some(mut app) = self.apps.lock().get(key).cloned() else {
            return;
        };
        if app.status != from {
            return;
        }
        app.status = to.to_string();
        match self
            .catalog
            .write(|txn| txn.put(Table::Applications, key, &app))
        {
            Ok(()) => {
                tracing::info!(application = %app.name, status = to, "analytics application status");
                self.apps.lock().insert(key.to_string(), app);
            }
            Err(error) => {
                tracing::error!(application = %app.name, %error, "cannot write the application status")
            }
        }
    }
}

pub(crate) struct Inner {
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) streams: Streams,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: AnalyticsConfig,
    apps: Mutex<BTreeMap<String, ApplicationRecord>>,
    runners: Mutex<HashMap<String, CancellationToken>>,
    tasks: Mutex<Option<(TaskTracker, CancellationToken)>>,
    /// Lambda outputs and preprocessing call functions through this (set by the wiring).
    pub(crate) functions: Mutex<Option<Arc<dyn connect::FunctionInvoker>>>,
    /// Firehose outputs put through this (set by the wiring).
    pub(crate) delivery_streams: Mutex<Option<Arc<dyn connect::DeliveryStreams>>>,
    /// Serialises control-plane writes (read-modify-write of a record and its commit).
    write: tokio::sync::Mutex<()>,
    pub(crate) metrics: metrics::AnalyticsMetrics,
}

/// The Analytics service. Cheap to clone.
#[derive(Clone)]
pub struct Analytics {
    inner: Arc<Inner>,
}

fn str_field<'a>(body: &'a Json, field: &str) -> Option<&'a str> {
    body.get(field).and_then(Json::as_str)
}

fn required<'a>(body: &'a Json, field: &str) -> Result<&'a str, ApiError> {
    str_field(body, field).ok_or_else(|| {
        ApiError::invalid(format!(
            "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
            lower_first(field)
        ))
    })
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_lowercase().chain(c).collect())
        .unwrap_or_default()
}

fn valid_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty()
        || name.chars().count() > NAME_CHARS_MAX
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
    {
        return Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{name}' at 'applicationName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
        )));
    }
    Ok(())
}

impl Analytics {
    pub fn open(
        config: AnalyticsConfig,
        catalog: Arc<Catalog>,
        streams: Streams,
        clock: Arc<dyn Clock>,
    ) -> Result<Analytics, CatalogError> {
        let apps = catalog
            .load_all::<ApplicationRecord>(Table::Applications)?
            .into_iter()
            .collect();
        Ok(Analytics {
            inner: Arc::new(Inner {
                catalog,
                streams,
                clock,
                config,
                apps: Mutex::new(apps),
                runners: Mutex::new(HashMap::new()),
                tasks: Mutex::new(None),
                functions: Mutex::new(None),
                delivery_streams: Mutex::new(None),
                write: tokio::sync::Mutex::new(()),
                metrics: metrics::AnalyticsMetrics::default(),
            }),
        })
    }

    /// Gives runners a way to call functions (Lambda outputs, input preprocessing); without
    /// one, such applications wait, retrying, as behind an unreachable function.
    pub fn set_function_invoker(&self, invoker: Arc<dyn connect::FunctionInvoker>) {
        *self.inner.functions.lock() = Some(invoker);
    }

    /// Gives runners the Firehose delivery streams (outputs); without it, such outputs wait,
    /// retrying.
    pub fn set_delivery_streams(&self, delivery_streams: Arc<dyn connect::DeliveryStreams>) {
        *self.inner.delivery_streams.lock() = Some(delivery_streams);
    }

    /// Starts the runners of applications that were running, and remembers where to track
    /// the ones started later.
    pub fn start(&self, tracker: TaskTracker, shutdown: CancellationToken) {
        *self.inner.tasks.lock() = Some((tracker, shutdown));
        let running: Vec<ApplicationRecord> = self
            .inner
            .apps
            .lock()
            .values()
            .filter(|a| a.status != "READY")
            .cloned()
            .collect();
        for app in running {
            if app.status == "STOPPING" {
                // Stopped by the restart: its last checkpoint is on disk.
                let mut app = app;
                app.status = "READY".into();
                if let Err(error) = self.put(app) {
                    tracing::error!(%error, "cannot settle a stopping application as READY");
                }
            } else {
                self.spawn_runner(&app);
            }
        }
    }

    fn spawn_runner(&self, app: &ApplicationRecord) {
        let Some((tracker, shutdown)) = self.inner.tasks.lock().clone() else {
            return;
        };
        let stop = shutdown.child_token();
        if let Some(previous) = self.inner.runners.lock().insert(app.key(), stop.clone()) {
            previous.cancel();
        }
        tracker.spawn(runner::run(self.inner.clone(), app.clone(), stop));
    }

    /// Cancels the application's runner; false when it has none.
    fn stop_runner(&self, key: &str) -> bool {
        match self.inner.runners.lock().remove(key) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// The `AWS/KinesisAnalytics` running totals of every application input and output:
    /// (`account/region/application/flow/id`, [(AWS metric name, total)]), sorted by key.
    pub fn metrics(&self) -> Vec<(String, Vec<(&'static str, u64)>)> {
        let live: Vec<String> = self.inner.apps.lock().keys().cloned().collect();
        self.inner.metrics.totals(&live)
    }

    /// Deletes every application (`POST /moto-api/reset`).
    pub fn reset(&self) -> Result<(), String> {
        self.inner.metrics.clear();
        let keys: Vec<String> = self.inner.apps.lock().keys().cloned().collect();
        for k in &keys {
            self.stop_runner(k);
        }
        self.inner
            .catalog
            .write(|txn| {
                txn.clear(Table::Applications)?;
                txn.clear(Table::ApplicationCheckpoints)
            })
            .map_err(|e: CatalogError| e.to_string())?;
        self.inner.apps.lock().clear();
        Ok(())
    }

    /// The application's ARN a request names, for authorization.
    pub fn resource_arn(ctx_account: &str, ctx_region: &str, body: &[u8]) -> String {
        let Ok(v) = serde_json::from_slice::<Json>(body) else {
            return "*".into();
        };
        if let Some(arn) = str_field(&v, "ResourceARN")
            && arn.contains(":application/")
        {
            return arn.to_string();
        }
        match str_field(&v, "ApplicationName") {
            Some(name) => {
                format!("arn:aws:kinesisanalytics:{ctx_region}:{ctx_account}:application/{name}")
            }
            None => "*".into(),
        }
    }

    fn get(&self, ctx: &RequestContext, name: &str) -> Result<ApplicationRecord, ApiError> {
        valid_name(name)?;
        self.inner
            .apps
            .lock()
            .get(&key(&ctx.account, &ctx.region, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(name))
    }

    fn put(&self, record: ApplicationRecord) -> Result<(), ApiError> {
        let k = record.key();
        self.inner
            .catalog
            .write(|txn| txn.put(Table::Applications, &k, &record))?;
        self.inner.apps.lock().insert(k, record);
        Ok(())
    }

    fn now_s(&self) -> i64 {
        self.inner.clock.now_millis().div_euclid(1000)
    }

    /// Checks `CurrentApplicationVersionId` and that the application can change.
    fn versioned(&self, ctx: &RequestContext, body: &Json) -> Result<ApplicationRecord, ApiError> {
        let name = required(body, "ApplicationName")?;
        let app = self.get(ctx, name)?;
        let Some(current) = body
            .get("CurrentApplicationVersionId")
            .and_then(Json::as_i64)
        else {
            return Err(ApiError::invalid(
                "1 validation error detected: Value null at 'currentApplicationVersionId' failed to satisfy constraint: Member must not be null",
            ));
        };
        if current != app.version {
            return Err(ApiError::new(
                "ConcurrentModificationException",
                format!(
                    "Current application version id {current} does not match the application's version id {} for application {name}",
                    app.version
                ),
            ));
        }
        if app.status != "READY" && app.status != "RUNNING" {
            return Err(ApiError::in_use(format!(
                "Application {name} is in {} state",
                app.status
            )));
        }
        Ok(app)
    }

    /// Validates code against the application's inputs (syntax only without inputs).
    fn validate_code(code: &str, inputs: &[Json], references: &[Json]) -> Result<(), ApiError> {
        if code.chars().count() > sql::CODE_CHARS_MAX {
            return Err(ApiError::invalid(format!(
                "ApplicationCode is longer than {} characters",
                sql::CODE_CHARS_MAX
            )));
        }
        let result = if inputs.is_empty() {
            sql::parse(code)
                .map(|_| ())
                .map_err(|e| format!("SQL error: {e}"))
        } else {
            sources(inputs)
                .map_err(|e| format!("input schema: {e}"))
                .and_then(|s| {
                    let tables = reference::tables(references)?;
                    engine::Program::compile_with_tables(code, &s, &tables).map(|_| ())
                })
        };
        result.map_err(|message| ApiError::new("CodeValidationException", message))
    }

    pub async fn handle(
        &self,
        ctx: &RequestContext,
        operation: &str,
        body: &[u8],
    ) -> Result<Json, ApiError> {
        let body: Json = serde_json::from_slice(body)
            .map_err(|_| ApiError::new("SerializationException", "The request body is not JSON"))?;
        if !body.is_object() {
            return Err(ApiError::new(
                "SerializationException",
                "The request body is not a JSON object",
            ));
        }
        let _write = self.inner.write.lock().await;
        match operation {
            "CreateApplication" => self.create(ctx, &body),
            "DescribeApplication" => {
                let app = self.get(ctx, required(&body, "ApplicationName")?)?;
                Ok(json!({"ApplicationDetail": app.detail()}))
            }
            "ListApplications" => self.list(ctx, &body),
            "DeleteApplication" => self.delete(ctx, &body),
            "StartApplication" => self.start_application(ctx, &body),
            "StopApplication" => {
                let mut app = self.get(ctx, required(&body, "ApplicationName")?)?;
                if app.status == "RUNNING" || app.status == "STARTING" {
                    // The runner moves it to READY once it has checkpointed and stopped;
                    // without a runner (not started yet) it is READY at once.
                    app.status = "STOPPING".into();
                    self.put(app.clone())?;
                    if !self.stop_runner(&app.key()) {
                        app.status = "READY".into();
                        self.put(app)?;
                    }
                }
                Ok(json!({}))
            }
            "UpdateApplication" => self.update(ctx, &body),
            "AddApplicationInput" => self.add_input(ctx, &body),
            "AddApplicationOutput" => self.add_output(ctx, &body),
            "DeleteApplicationOutput" => {
                let mut app = self.versioned(ctx, &body)?;
                let id = required(&body, "OutputId")?;
                let before = app.outputs.len();
                app.outputs.retain(|o| str_field(o, "OutputId") != Some(id));
                if app.outputs.len() == before {
                    return Err(ApiError::new(
                        "ResourceNotFoundException",
                        format!("Output {id} not found in application {}", app.name),
                    ));
                }
                self.bump_and_put(app)
            }
            "AddApplicationReferenceDataSource" => {
                let mut app = self.versioned(ctx, &body)?;
                let Some(source) = body.get("ReferenceDataSource").filter(|v| v.is_object()) else {
                    return Err(ApiError::invalid("ReferenceDataSource is required"));
                };
                let table = required(source, "TableName")?;
                if app
                    .reference_data_sources
                    .iter()
                    .any(|r| str_field(r, "TableName") == Some(table))
                {
                    return Err(ApiError::invalid(format!(
                        "Reference data source {table} already exists"
                    )));
                }
                let mut d = json!({
                    "ReferenceId": app.new_id(),
                    "TableName": table,
                    "ReferenceSchema": source.get("ReferenceSchema").cloned().unwrap_or(json!({})),
                });
                if let Some(s3) = source.get("S3ReferenceDataSource") {
                    d["S3ReferenceDataSourceDescription"] = s3.clone();
                }
                app.reference_data_sources.push(d);
                self.bump_and_put(app)
            }
            "DeleteApplicationReferenceDataSource" => {
                let mut app = self.versioned(ctx, &body)?;
                let id = required(&body, "ReferenceId")?;
                let before = app.reference_data_sources.len();
                app.reference_data_sources
                    .retain(|o| str_field(o, "ReferenceId") != Some(id));
                if app.reference_data_sources.len() == before {
                    return Err(ApiError::new(
                        "ResourceNotFoundException",
                        format!("Reference data source {id} not found"),
                    ));
                }
                self.bump_and_put(app)
            }
            "AddApplicationCloudWatchLoggingOption" => {
                let mut app = self.versioned(ctx, &body)?;
                let Some(option) = body
                    .get("CloudWatchLoggingOption")
                    .filter(|v| v.is_object())
                else {
                    return Err(ApiError::invalid("CloudWatchLoggingOption is required"));
                };
                let mut d = option.clone();
                d["CloudWatchLoggingOptionId"] = json!(app.new_id());
                app.cloudwatch_logging_options.push(d);
                self.bump_and_put(app)
            }
            "DeleteApplicationCloudWatchLoggingOption" => {
                let mut app = self.versioned(ctx, &body)?;
                let id = required(&body, "CloudWatchLoggingOptionId")?;
                let before = app.cloudwatch_logging_options.len();
                app.cloudwatch_logging_options
                    .retain(|o| str_field(o, "CloudWatchLoggingOptionId") != Some(id));
                if app.cloudwatch_logging_options.len() == before {
                    return Err(ApiError::new(
                        "ResourceNotFoundException",
                        format!("CloudWatch logging option {id} not found"),
                    ));
                }
                self.bump_and_put(app)
            }
            "AddApplicationInputProcessingConfiguration" => {
                let mut app = self.versioned(ctx, &body)?;
                let id = required(&body, "InputId")?;
                let Some(lambda) =
                    body.pointer("/InputProcessingConfiguration/InputLambdaProcessor")
                else {
                    return Err(ApiError::invalid(
                        "InputProcessingConfiguration.InputLambdaProcessor is required",
                    ));
                };
                let input = app
                    .inputs
                    .iter_mut()
                    .find(|i| str_field(i, "InputId") == Some(id))
                    .ok_or_else(|| {
                        ApiError::new("ResourceNotFoundException", format!("Input {id} not found"))
                    })?;
                input["InputProcessingConfigurationDescription"] =
                    json!({"InputLambdaProcessorDescription": lambda});
                self.bump_and_put(app)
            }
            "DeleteApplicationInputProcessingConfiguration" => {
                let mut app = self.versioned(ctx, &body)?;
                let id = required(&body, "InputId")?;
                let input = app
                    .inputs
                    .iter_mut()
                    .find(|i| str_field(i, "InputId") == Some(id))
                    .ok_or_else(|| {
                        ApiError::new("ResourceNotFoundException", format!("Input {id} not found"))
                    })?;
                if let Some(map) = input.as_object_mut() {
                    map.remove("InputProcessingConfigurationDescription");
                }
                self.bump_and_put(app)
            }
            "TagResource" => {
                let mut app = self.by_arn(ctx, &body)?;
                let tags = body
                    .get("Tags")
                    .and_then(Json::as_array)
                    .cloned()
                    .unwrap_or_default();
                for t in &tags {
                    let (Some(k), v) = (str_field(t, "Key"), str_field(t, "Value").unwrap_or(""))
                    else {
                        return Err(ApiError::invalid("a tag needs a Key"));
                    };
                    app.tags.insert(k.to_string(), v.to_string());
                }
                if app.tags.len() > TAGS_MAX {
                    return Err(ApiError::new(
                        "TooManyTagsException",
                        format!(
                            "Application {} would have more than {TAGS_MAX} tags",
                            app.name
                        ),
                    ));
                }
                self.put(app)?;
                Ok(json!({}))
            }
            "UntagResource" => {
                let mut app = self.by_arn(ctx, &body)?;
                for k in body
                    .get("TagKeys")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(k) = k.as_str() {
                        app.tags.remove(k);
                    }
                }
                self.put(app)?;
                Ok(json!({}))
            }
            "ListTagsForResource" => {
                let app = self.by_arn(ctx, &body)?;
                let tags: Vec<Json> = app
                    .tags
                    .iter()
                    .map(|(k, v)| json!({"Key": k, "Value": v}))
                    .collect();
                Ok(json!({"Tags": tags}))
            }
            "DiscoverInputSchema" => {
                drop(_write);
                self.discover(ctx, &body).await
            }
            other => Err(ApiError::new(
                "UnknownOperationException",
                format!("Unknown operation {other}"),
            )),
        }
    }

    fn by_arn(&self, ctx: &RequestContext, body: &Json) -> Result<ApplicationRecord, ApiError> {
        let arn = required(body, "ResourceARN")?;
        let name = arn
            .split_once(":application/")
            .map(|(_, n)| n)
            .ok_or_else(|| ApiError::invalid(format!("{arn} is not an application ARN")))?;
        self.get(ctx, name)
    }

    fn bump_and_put(&self, mut app: ApplicationRecord) -> Result<Json, ApiError> {
        app.version += 1;
        app.update_s = self.now_s();
        let running = app.status == "RUNNING";
        let snapshot = app.clone();
        self.put(app)?;
        if running {
            // A running application picks up its new configuration.
            self.spawn_runner(&snapshot);
        }
        Ok(json!({}))
    }

    fn create(&self, ctx: &RequestContext, body: &Json) -> Result<Json, ApiError> {
        let name = required(body, "ApplicationName")?;
        valid_name(name)?;
        let k = key(&ctx.account, &ctx.region, name);
        {
            let apps = self.inner.apps.lock();
            if apps.contains_key(&k) {
                return Err(ApiError::in_use(format!(
                    "Application {name} already exists"
                )));
            }
            let prefix = format!("{}/{}/", ctx.account, ctx.region);
            if apps.keys().filter(|k| k.starts_with(&prefix)).count()
                >= self.inner.config.applications_max
            {
                return Err(ApiError::new(
                    "LimitExceededException",
                    format!(
                        "You have reached the limit of {} applications",
                        self.inner.config.applications_max
                    ),
                ));
            }
        }
        let description = str_field(body, "ApplicationDescription").map(str::to_string);
        if description
            .as_ref()
            .is_some_and(|d| d.chars().count() > DESCRIPTION_CHARS_MAX)
        {
            return Err(ApiError::invalid(format!(
                "ApplicationDescription is longer than {DESCRIPTION_CHARS_MAX} characters"
            )));
        }
        let now = self.now_s();
        let mut app = ApplicationRecord {
            account: ctx.account.clone(),
            region: ctx.region.clone(),
            name: name.to_string(),
            description,
            code: str_field(body, "ApplicationCode").map(str::to_string),
            status: "READY".into(),
            version: 1,
            create_s: now,
            update_s: now,
            inputs: Vec::new(),
            outputs: Vec::new(),
            reference_data_sources: Vec::new(),
            cloudwatch_logging_options: Vec::new(),
            tags: BTreeMap::new(),
            next_id: 1,
        };
        for input in body
            .get("Inputs")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            if !app.inputs.is_empty() {
                return Err(ApiError::invalid(
                    "An application has at most one streaming input",
                ));
            }
            let d = input_description(input, app.new_id())?;
            app.inputs.push(d);
        }
        for output in body
            .get("Outputs")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let d = output_description(output, app.new_id())?;
            app.outputs.push(d);
        }
        if app.outputs.len() > OUTPUTS_MAX {
            return Err(ApiError::new(
                "LimitExceededException",
                format!("An application has at most {OUTPUTS_MAX} outputs"),
            ));
        }
        for option in body
            .get("CloudWatchLoggingOptions")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let mut d = option.clone();
            d["CloudWatchLoggingOptionId"] = json!(app.new_id());
            app.cloudwatch_logging_options.push(d);
        }
        for t in body
            .get("Tags")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(k) = str_field(t, "Key") {
                app.tags.insert(
                    k.to_string(),
                    str_field(t, "Value").unwrap_or("").to_string(),
                );
            }
        }
        if app.tags.len() > TAGS_MAX {
            return Err(ApiError::new(
                "TooManyTagsException",
                format!("At most {TAGS_MAX} tags"),
            ));
        }
        if let Some(code) = &app.code {
            Self::validate_code(code, &app.inputs, &app.reference_data_sources)?;
        }
        let summary = app.summary();
        self.put(app)?;
        Ok(json!({"ApplicationSummary": summary}))
    }

    fn list(&self, ctx: &RequestContext, body: &Json) -> Result<Json, ApiError> {
        let limit = body
            .get("Limit")
            .and_then(Json::as_u64)
            .unwrap_or(50)
            .clamp(1, 50) as usize;
        let start = str_field(body, "ExclusiveStartApplicationName");
        let prefix = format!("{}/{}/", ctx.account, ctx.region);
        let apps = self.inner.apps.lock();
        let matching: Vec<&ApplicationRecord> = apps
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, a)| a)
            .filter(|a| start.is_none_or(|s| a.name.as_str() > s))
            .collect();
        let summaries: Vec<Json> = matching.iter().take(limit).map(|a| a.summary()).collect();
        Ok(
            json!({"ApplicationSummaries": summaries, "HasMoreApplications": matching.len() > limit}),
        )
    }

    fn delete(&self, ctx: &RequestContext, body: &Json) -> Result<Json, ApiError> {
        let name = required(body, "ApplicationName")?;
        let app = self.get(ctx, name)?;
        let Some(created) = body.get("CreateTimestamp").and_then(Json::as_f64) else {
            return Err(ApiError::invalid(
                "1 validation error detected: Value null at 'createTimestamp' failed to satisfy constraint: Member must not be null",
            ));
        };
        if created.floor() as i64 != app.create_s {
            return Err(ApiError::invalid(format!(
                "Create timestamp does not match the application {name}'s create timestamp"
            )));
        }
        let k = app.key();
        self.stop_runner(&k);
        self.inner.catalog.write(|txn| {
            txn.delete(Table::Applications, &k)?;
            txn.delete(Table::ApplicationCheckpoints, &k)
        })?;
        self.inner.apps.lock().remove(&k);
        // Its runner, if one is still finishing, releases the hold again as it exits.
        runner::release_holds(&self.inner, &app);
        Ok(json!({}))
    }

    fn start_application(&self, ctx: &RequestContext, body: &Json) -> Result<Json, ApiError> {
        let mut app = self.get(ctx, required(body, "ApplicationName")?)?;
        if app.status != "READY" {
            return Err(ApiError::in_use(format!(
                "Application {} is in {} state",
                app.name, app.status
            )));
        }
        let Some(configs) = body.get("InputConfigurations").and_then(Json::as_array) else {
            return Err(ApiError::invalid(
                "1 validation error detected: Value null at 'inputConfigurations' failed to satisfy constraint: Member must not be null",
            ));
        };
        if app.inputs.is_empty() {
            return Err(ApiError::new(
                "InvalidApplicationConfigurationException",
                format!("Application {} has no input", app.name),
            ));
        }
        let mut position = None;
        for c in configs {
            let id = required(c, "Id")?;
            let Some(input) = app
                .inputs
                .iter_mut()
                .find(|i| str_field(i, "InputId") == Some(id))
            else {
                return Err(ApiError::invalid(format!(
                    "Input {id} not found in application {}",
                    app.name
                )));
            };
            let p = c
                .pointer("/InputStartingPositionConfiguration/InputStartingPosition")
                .and_then(Json::as_str)
                .unwrap_or("NOW");
            if !["NOW", "TRIM_HORIZON", "LAST_STOPPED_POINT"].contains(&p) {
                return Err(ApiError::invalid(format!(
                    "InputStartingPosition {p} is not NOW, TRIM_HORIZON or LAST_STOPPED_POINT"
                )));
            }
            input["InputStartingPositionConfiguration"] = json!({"InputStartingPosition": p});
            position = Some(p.to_string());
        }
        let code = app.code.clone().unwrap_or_default();
        let sources = sources(&app.inputs)
            .map_err(|e| ApiError::new("InvalidApplicationConfigurationException", e))?;
        let program = reference::tables(&app.reference_data_sources)
            .and_then(|tables| engine::Program::compile_with_tables(&code, &sources, &tables))
            .map_err(|e| ApiError::new("InvalidApplicationConfigurationException", e))?;
        for o in &app.outputs {
            let name = str_field(o, "Name").unwrap_or_default();
            if program.stream_index(name).is_none() {
                return Err(ApiError::new(
                    "InvalidApplicationConfigurationException",
                    format!(
                        "Output {name} is not an in-application stream of the application code"
                    ),
                ));
            }
        }
        let k = app.key();
        let now_ms = self.inner.clock.now_millis();
        let position = position.unwrap_or_else(|| "NOW".into());
        let previous: Option<Checkpoint> =
            self.inner.catalog.get(Table::ApplicationCheckpoints, &k)?;
        let checkpoint = match (position.as_str(), previous) {
            ("LAST_STOPPED_POINT", Some(previous)) => previous,
            (p, _) => Checkpoint {
                initial: if p == "TRIM_HORIZON" {
                    p.into()
                } else {
                    "NOW".into()
                },
                start_ms: now_ms,
                ..Default::default()
            },
        };
        app.status = "STARTING".into();
        let snapshot = app.clone();
        self.inner.catalog.write(|txn| {
            txn.put(Table::ApplicationCheckpoints, &k, &checkpoint)?;
            txn.put(Table::Applications, &k, &snapshot)
        })?;
        self.inner.apps.lock().insert(k, snapshot.clone());
        self.spawn_runner(&snapshot);
        Ok(json!({}))
    }

    fn update(&self, ctx: &RequestContext, body: &Json) -> Result<Json, ApiError> {
        let mut app = self.versioned(ctx, body)?;
        let Some(update) = body.get("ApplicationUpdate").filter(|u| u.is_object()) else {
            return Err(ApiError::invalid(
                "1 validation error detected: Value null at 'applicationUpdate' failed to satisfy constraint: Member must not be null",
            ));
        };
        for u in update
            .get("InputUpdates")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let id = required(u, "InputId")?;
            let input = app
                .inputs
                .iter_mut()
                .find(|i| str_field(i, "InputId") == Some(id))
                .ok_or_else(|| {
                    ApiError::new("ResourceNotFoundException", format!("Input {id} not found"))
                })?;
            if let Some(prefix) = str_field(u, "NamePrefixUpdate") {
                input["NamePrefix"] = json!(prefix);
                let count = input
                    .pointer("/InputParallelism/Count")
                    .and_then(Json::as_i64)
                    .unwrap_or(1);
                input["InAppStreamNames"] = json!(stream_names(prefix, count));
            }
            if let Some(s) = u.get("KinesisStreamsInputUpdate") {
                let description = json!({
                    "ResourceARN": s.get("ResourceARNUpdate").or(input.pointer("/KinesisStreamsInputDescription/ResourceARN")),
                    "RoleARN": s.get("RoleARNUpdate").or(input.pointer("/KinesisStreamsInputDescription/RoleARN")),
                });
                input["KinesisStreamsInputDescription"] = description;
            }
            if let Some(s) = u.get("InputSchemaUpdate") {
                let schema = &mut input["InputSchema"];
                if let Some(f) = s.get("RecordFormatUpdate") {
                    schema["RecordFormat"] = f.clone();
                }
                if let Some(e) = s.get("RecordEncodingUpdate") {
                    schema["RecordEncoding"] = e.clone();
                }
                if let Some(c) = s.get("RecordColumnUpdates") {
                    schema["RecordColumns"] = c.clone();
                }
                input::Schema::from_json(schema).map_err(ApiError::invalid)?;
            }
            if let Some(count) = u
                .pointer("/InputParallelismUpdate/CountUpdate")
                .and_then(Json::as_i64)
            {
                if !(1..=PARALLELISM_MAX).contains(&count) {
                    return Err(ApiError::invalid(format!(
                        "InputParallelism Count must be from 1 to {PARALLELISM_MAX}"
                    )));
                }
                input["InputParallelism"] = json!({"Count": count});
                let prefix = str_field(input, "NamePrefix")
                    .unwrap_or_default()
                    .to_string();
                input["InAppStreamNames"] = json!(stream_names(&prefix, count));
            }
        }
        for u in update
            .get("OutputUpdates")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let id = required(u, "OutputId")?;
            let output = app
                .outputs
                .iter_mut()
                .find(|o| str_field(o, "OutputId") == Some(id))
                .ok_or_else(|| {
                    ApiError::new(
                        "ResourceNotFoundException",
                        format!("Output {id} not found"),
                    )
                })?;
            if let Some(n) = str_field(u, "NameUpdate") {
                output["Name"] = json!(n);
            }
            for (update_key, description_key) in [
                (
                    "KinesisStreamsOutputUpdate",
                    "KinesisStreamsOutputDescription",
                ),
                (
                    "KinesisFirehoseOutputUpdate",
                    "KinesisFirehoseOutputDescription",
                ),
                ("LambdaOutputUpdate", "LambdaOutputDescription"),
            ] {
                if let Some(s) = u.get(update_key) {
                    let old = output.get(description_key).cloned().unwrap_or(json!({}));
                    if let Some(map) = output.as_object_mut() {
                        map.remove("KinesisStreamsOutputDescription");
                        map.remove("KinesisFirehoseOutputDescription");
                        map.remove("LambdaOutputDescription");
                    }
                    output[description_key] = json!({
                        "ResourceARN": s.get("ResourceARNUpdate").or(old.get("ResourceARN")),
                        "RoleARN": s.get("RoleARNUpdate").or(old.get("RoleARN")),
                    });
                }
            }
            if let Some(d) = u.get("DestinationSchemaUpdate") {
                output["DestinationSchema"] = d.clone();
            }
        }
        for u in update
            .get("CloudWatchLoggingOptionUpdates")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let id = required(u, "CloudWatchLoggingOptionId")?;
            let option = app
                .cloudwatch_logging_options
                .iter_mut()
                .find(|o| str_field(o, "CloudWatchLoggingOptionId") == Some(id))
                .ok_or_else(|| {
                    ApiError::new(
                        "ResourceNotFoundException",
                        format!("CloudWatch logging option {id} not found"),
                    )
                })?;
            if let Some(v) = u.get("LogStreamARNUpdate") {
                option["LogStreamARN"] = v.clone();
            }
            if let Some(v) = u.get("RoleARNUpdate") {
                option["RoleARN"] = v.clone();
            }
        }
        if let Some(code) = str_field(update, "ApplicationCodeUpdate") {
            app.code = Some(code.to_string());
        }
        if let Some(code) = &app.code {
            Self::validate_code(code, &app.inputs, &app.reference_data_sources)?;
        }
        self.bump_and_put(app)
    }

    fn add_input(&self, ctx: &RequestContext, body: &Json) -> Result<Json, ApiError> {
        let mut app = self.versioned(ctx, body)?;
        let Some(input) = body.get("Input").filter(|v| v.is_object()) else {
            return Err(ApiError::invalid(
                "1 validation error detected: Value null at 'input' failed to satisfy constraint: Member must not be null",
            ));
        };
        if !app.inputs.is_empty() {
            return Err(ApiError::invalid(format!(
                "Application {} already has an input; an application has at most one streaming input",
                app.name
            )));
        }
        let d = input_description(input, app.new_id())?;
        app.inputs.push(d);
        if let Some(code) = &app.code {
            Self::validate_code(code, &app.inputs, &app.reference_data_sources)?;
        }
        self.bump_and_put(app)
    }

    fn add_output(&self, ctx: &RequestContext, body: &Json) -> Result<Json, ApiError> {
        let mut app = self.versioned(ctx, body)?;
        let Some(output) = body.get("Output").filter(|v| v.is_object()) else {
            return Err(ApiError::invalid(
                "1 validation error detected: Value null at 'output' failed to satisfy constraint: Member must not be null",
            ));
        };
        if app.outputs.len() >= OUTPUTS_MAX {
            return Err(ApiError::new(
                "LimitExceededException",
                format!("Application {} already has {OUTPUTS_MAX} outputs", app.name),
            ));
        }
        let d = output_description(output, app.new_id())?;
        app.outputs.push(d);
        self.bump_and_put(app)
    }

    async fn discover(&self, ctx: &RequestContext, body: &Json) -> Result<Json, ApiError> {
        let Some(arn) = str_field(body, "ResourceARN") else {
            return Err(ApiError::invalid(
                "DiscoverInputSchema needs ResourceARN (a Kinesis stream); S3Configuration is not supported",
            ));
        };
        let position = body
            .pointer("/InputStartingPositionConfiguration/InputStartingPosition")
            .and_then(Json::as_str)
            .unwrap_or("TRIM_HORIZON");
        let records = runner::sample(&self.inner, ctx, arn, position, DISCOVER_RECORDS_MAX)
            .await
            .map_err(|e| ApiError::new("ResourceNotFoundException", e))?;
        let Some((schema, parsed)) = input::discover(&records) else {
            return Err(ApiError::new(
                "UnableToDetectSchemaException",
                if records.is_empty() {
                    "No data found in the stream to infer a schema from".to_string()
                } else {
                    "Unable to detect a schema: the records are neither JSON objects nor CSV lines"
                        .to_string()
                },
            ));
        };
        let raw: Vec<String> = records
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect();
        Ok(json!({
            "InputSchema": schema,
            "ParsedInputRecords": parsed,
            "RawInputRecords": raw,
            "ProcessedInputRecords": raw,
        }))
    }
}

fn stream_names(prefix: &str, count: i64) -> Vec<String> {
    (1..=count.max(1))
        .map(|i| format!("{prefix}_{i:03}"))
        .collect()
}

fn input_description(input: &Json, id: String) -> Result<Json, ApiError> {
    let prefix = required(input, "NamePrefix")?;
    if prefix.is_empty() || prefix.chars().count() > NAME_PREFIX_CHARS_MAX {
        return Err(ApiError::invalid(format!(
            "NamePrefix must be 1 to {NAME_PREFIX_CHARS_MAX} characters"
        )));
    }
    let Some(schema) = input.get("InputSchema") else {
        return Err(ApiError::invalid(
            "1 validation error detected: Value null at 'input.inputSchema' failed to satisfy constraint: Member must not be null",
        ));
    };
    input::Schema::from_json(schema).map_err(ApiError::invalid)?;
    let count = input
        .pointer("/InputParallelism/Count")
        .and_then(Json::as_i64)
        .unwrap_or(1);
    if !(1..=PARALLELISM_MAX).contains(&count) {
        return Err(ApiError::invalid(format!(
            "InputParallelism Count must be from 1 to {PARALLELISM_MAX}"
        )));
    }
    let mut d = json!({
        "InputId": id,
        "NamePrefix": prefix,
        "InAppStreamNames": stream_names(prefix, count),
        "InputSchema": schema,
        "InputParallelism": {"Count": count},
        "InputStartingPositionConfiguration": {},
    });
    match (
        input.get("KinesisStreamsInput"),
        input.get("KinesisFirehoseInput"),
    ) {
        (Some(s), None) => d["KinesisStreamsInputDescription"] = s.clone(),
        (None, Some(f)) => d["KinesisFirehoseInputDescription"] = f.clone(),
        _ => {
            return Err(ApiError::invalid(
                "An input needs exactly one of KinesisStreamsInput and KinesisFirehoseInput",
            ));
        }
    }
    if let Some(lambda) = input.pointer("/InputProcessingConfiguration/InputLambdaProcessor") {
        d["InputProcessingConfigurationDescription"] =
            json!({"InputLambdaProcessorDescription": lambda});
    }
    Ok(d)
}

fn output_description(output: &Json, id: String) -> Result<Json, ApiError> {
    let name = required(output, "Name")?;
    if name.is_empty() || name.chars().count() > NAME_PREFIX_CHARS_MAX {
        return Err(ApiError::invalid(format!(
            "Output Name must be 1 to {NAME_PREFIX_CHARS_MAX} characters"
        )));
    }
    let Some(schema) = output.get("DestinationSchema") else {
        return Err(ApiError::invalid(
            "1 validation error detected: Value null at 'output.destinationSchema' failed to satisfy constraint: Member must not be null",
        ));
    };
    let format = str_field(schema, "RecordFormatType").unwrap_or("");
    if format != "JSON" && format != "CSV" {
        return Err(ApiError::invalid(format!(
            "RecordFormatType {format} is not JSON or CSV"
        )));
    }
    let mut d = json!({"OutputId": id, "Name": name, "DestinationSchema": schema});
    let mut n = 0;
    for (request_key, description_key) in [
        ("KinesisStreamsOutput", "KinesisStreamsOutputDescription"),
        ("KinesisFirehoseOutput", "KinesisFirehoseOutputDescription"),
        ("LambdaOutput", "LambdaOutputDescription"),
    ] {
        if let Some(v) = output.get(request_key) {
            d[description_key] = v.clone();
            n += 1;
        }
    }
    if n != 1 {
        return Err(ApiError::invalid(
            "An output needs exactly one of KinesisStreamsOutput, KinesisFirehoseOutput and LambdaOutput",
        ));
    }
    Ok(d)
}

/// The source in-application streams of the inputs, with their columns.
pub(crate) fn sources(inputs: &[Json]) -> Result<Vec<(String, Vec<sql::Column>)>, String> {
    let mut out = Vec::new();
    for input in inputs {
        let schema = input::Schema::from_json(input.get("InputSchema").unwrap_or(&Json::Null))?;
        for name in input
            .get("InAppStreamNames")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(name) = name.as_str() {
                out.push((name.to_string(), schema.columns()));
            }
        }
    }
    Ok(out)
}
