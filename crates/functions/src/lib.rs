//! Function consumers: Lambda-style event source mappings that read Kinesis streams for
//! functions running as HTTP services.
//!
//! A function is an ARN mapped to a URL: declared in the config file, or created through
//! the Lambda API's CreateFunction with the URL as `Code.ImageUri`. An event source mapping
//! (Lambda API 2015-03-31, `api.rs`) reads a stream, or an enhanced fan-out consumer of one,
//! through `streams::Streams::handle` in process, and invokes the function with the Kinesis
//! event (`invoke.rs`), one shard at a time in sequence-number order (`poller.rs`).
//!
//! Delivery is at-least-once and in order per shard (per partition key with
//! ParallelizationFactor): a batch's checkpoint is written to the catalog
//! (`MappingCheckpoints`) only after the function succeeded or the batch went to the
//! on-failure destination (`destination.rs`), so a restart resumes after the last batch
//! handled and neither skips nor replays one that was. Child shards start once their parents
//! are finished.
//!
//! Not here: HTTP serving (the server crate routes `/2015-03-31/...` here through a trait
//! object), request signing, and the Lambda operations beyond functions and mappings.

pub mod api;
pub mod destination;
pub mod error;
pub mod filter;
pub mod invoke;
pub mod model;
mod poller;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use millrace_catalog::{Catalog, Table};
use millrace_firehose::store::Buckets;
use millrace_firehose::{FunctionMapping, S3Settings};
use millrace_log::Clock;
use millrace_streams::Streams;
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::{Error, InvokeError, LambdaError};
use model::{FunctionRecord, MappingRecord, ShardCheckpoint};

/// Settings of the function consumers (`[functions]` in the config file).
#[derive(Debug, Clone)]
pub struct FunctionsConfig {
    /// How often an idle shard is read (AWS: once per second).
    pub poll_interval_ms: u64,
    /// First retry delay after a failed invocation; it doubles per attempt up to the max.
    pub retry_backoff_ms_min: u64,
    pub retry_backoff_ms_max: u64,
    /// How long a declared function gets to answer.
    pub invocation_timeout_ms: u64,
    /// Event source mappings per installation.
    pub mappings_max: usize,
    /// Functions declared in the config file (ARN → URL).
    pub functions: Vec<FunctionMapping>,
    /// Where S3 on-failure destinations write.
    pub s3: S3Settings,
    pub embedded_buckets_dir: PathBuf,
}

impl Default for FunctionsConfig {
    fn default() -> Self {
        FunctionsConfig {
            poll_interval_ms: 1_000,
            retry_backoff_ms_min: 1_000,
            retry_backoff_ms_max: 60_000,
            invocation_timeout_ms: 300_000,
            mappings_max: 1_000,
            functions: Vec::new(),
            s3: S3Settings {
                endpoint: None,
                region: "us-east-1".into(),
                access_key_id: None,
                secret_access_key: None,
                session_token: None,
                path_style: true,
            },
            embedded_buckets_dir: PathBuf::from("buckets"),
        }
    }
}

/// The function consumers service; cheap to clone.
#[derive(Clone)]
pub struct Functions {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: FunctionsConfig,
    pub catalog: Arc<Catalog>,
    pub streams: Streams,
    pub clock: Arc<dyn Clock>,
    pub http: reqwest::Client,
    pub buckets: Buckets,
    /// Declared functions, ARN → URL.
    pub declared: HashMap<String, String>,
    pub mappings: Mutex<HashMap<String, Arc<MappingHandle>>>,
    pub runtime: Mutex<Option<(TaskTracker, CancellationToken)>>,
    /// Serializes the control plane (create, update, delete, reset).
    pub control: tokio::sync::Mutex<()>,
}

/// A mapping as the service holds it while it exists.
pub(crate) struct MappingHandle {
    pub record: RwLock<Arc<MappingRecord>>,
    /// `Deleting` while a delete is in progress.
    pub deleting: Mutex<bool>,
    pub last_result: Mutex<&'static str>,
    pub stop: Mutex<Option<CancellationToken>>,
    /// Held by the running task: a new task (after an update) starts only after the old one
    /// stopped, so a shard is never read by two tasks at once.
    pub lease: Arc<tokio::sync::Mutex<()>>,
}

impl Functions {
    /// Loads the mappings from the catalog (they start with `start`).
    pub fn open(
        config: FunctionsConfig,
        catalog: Arc<Catalog>,
        streams: Streams,
        clock: Arc<dyn Clock>,
    ) -> Result<Functions, Error> {
        let declared = config
            .functions
            .iter()
            .map(|f| (strip_qualifier(&f.arn).to_string(), f.url.clone()))
            .collect();
        let buckets = Buckets::new(config.s3.clone(), config.embedded_buckets_dir.clone());
        let mut mappings = HashMap::new();
        for (uuid, record) in catalog.load_all::<MappingRecord>(Table::EventSourceMappings)? {
            mappings.insert(uuid, Arc::new(MappingHandle::new(record)));
        }
        Ok(Functions {
            inner: Arc::new(Inner {
                config,
                catalog,
                streams,
                clock,
                http: reqwest::Client::new(),
                buckets,
                declared,
                mappings: Mutex::new(mappings),
                runtime: Mutex::new(None),
                control: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Starts every enabled mapping's task under `tracker`; they stop when `shutdown` fires.
    pub fn start(&self, tracker: TaskTracker, shutdown: CancellationToken) {
        *self.inner.runtime.lock() = Some((tracker, shutdown));
        let handles: Vec<Arc<MappingHandle>> =
            self.inner.mappings.lock().values().cloned().collect();
        for handle in handles {
            self.inner.spawn(&handle);
        }
    }

    /// Deletes every mapping and function (`POST /moto-api/reset`).
    pub async fn reset(&self) -> Result<(), Error> {
        let _control = self.inner.control.lock().await;
        let handles: Vec<Arc<MappingHandle>> =
            self.inner.mappings.lock().drain().map(|(_, h)| h).collect();
        for handle in &handles {
            if let Some(stop) = handle.stop.lock().take() {
                stop.cancel();
            }
        }
        for handle in &handles {
            let _ = handle.lease.lock().await;
        }
        self.inner.catalog.write(|txn| -> Result<(), Error> {
            txn.clear(Table::EventSourceMappings)?;
            txn.clear(Table::MappingCheckpoints)?;
            txn.clear(Table::Functions)?;
            Ok(())
        })
    }

    /// Serves one REST request of the Lambda API.
    pub async fn handle(
        &self,
        ctx: &millrace_streams::RequestContext,
        method: &str,
        path: &str,
        query: &str,
        body: &[u8],
    ) -> Result<(u16, serde_json::Value), Error> {
        api::handle(&self.inner, ctx, method, path, query, body).await
    }

    /// The URL a function ARN runs at and how long it gets to answer (ms): declared in the
    /// config file or created through CreateFunction. Other services that call functions
    /// (Analytics' Lambda outputs and preprocessing) resolve them here.
    pub fn function_url(&self, arn: &str) -> Option<(String, u64)> {
        self.inner.function_target(arn)
    }

    /// The operation a request is, and the resource ARN (or `*`) it acts on, for
    /// authorization.
    pub fn operation(
        method: &str,
        path: &str,
        account: &str,
        region: &str,
    ) -> Option<(&'static str, String)> {
        api::authorization(method, path, account, region)
    }
}

impl MappingHandle {
    fn new(record: MappingRecord) -> MappingHandle {
        MappingHandle {
            record: RwLock::new(Arc::new(record)),
            deleting: Mutex::new(false),
            last_result: Mutex::new("No records processed"),
            stop: Mutex::new(None),
            lease: Arc::new(tokio::sync::Mutex::new(())),
        }
    }
}

impl Inner {
    /// Starts the mapping's task when it is enabled and the service runs.
    fn spawn(self: &Arc<Inner>, handle: &Arc<MappingHandle>) {
        let Some((tracker, shutdown)) = self.runtime.lock().clone() else {
            return;
        };
        if !handle.record.read().enabled {
            return;
        }
        let stop = shutdown.child_token();
        if let Some(old) = handle.stop.lock().replace(stop.clone()) {
            old.cancel();
        }
        tracker.spawn(poller::run_mapping(self.clone(), handle.clone(), stop));
    }

    /// The URL and timeout of a function, if it exists.
    pub(crate) fn function_target(&self, arn: &str) -> Option<(String, u64)> {
        let arn = strip_qualifier(arn);
        if let Some(url) = self.declared.get(arn) {
            return Some((url.clone(), self.config.invocation_timeout_ms));
        }
        let key = function_key_of_arn(arn)?;
        let record: FunctionRecord = self.catalog.get(Table::Functions, &key).ok().flatten()?;
        Some((record.url, u64::from(record.timeout_s) * 1000))
    }

    pub(crate) fn load_checkpoint(&self, uuid: &str, shard_id: &str) -> ShardCheckpoint {
        self.catalog
            .get(
                Table::MappingCheckpoints,
                &model::checkpoint_key(uuid, shard_id),
            )
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    pub(crate) fn save_checkpoint(
        &self,
        uuid: &str,
        shard_id: &str,
        checkpoint: &ShardCheckpoint,
    ) -> Result<(), Error> {
        let key = model::checkpoint_key(uuid, shard_id);
        self.catalog.write(|txn| -> Result<(), Error> {
            txn.put(Table::MappingCheckpoints, &key, checkpoint)?;
            Ok(())
        })
    }
}

/// `arn:...:function:name:qualifier` → `arn:...:function:name`.
pub(crate) fn strip_qualifier(arn: &str) -> &str {
    let parts: Vec<&str> = arn.splitn(8, ':').collect();
    if parts.len() == 8 {
        let keep: usize = parts.iter().take(7).map(|p| p.len() + 1).sum::<usize>() - 1;
        return arn.get(..keep).unwrap_or(arn);
    }
    arn
}

/// The catalog key (`account/region/name`) of a function ARN.
pub(crate) fn function_key_of_arn(arn: &str) -> Option<String> {
    let parts: Vec<&str> = strip_qualifier(arn).split(':').collect();
    match parts.as_slice() {
        ["arn", _, "lambda", region, account, "function", name] => {
            Some(format!("{account}/{region}/{name}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualifiers() {
        assert_eq!(
            strip_qualifier("arn:aws:lambda:us-east-1:000000000000:function:f:$LATEST"),
            "arn:aws:lambda:us-east-1:000000000000:function:f"
        );
        assert_eq!(
            strip_qualifier("arn:aws:lambda:us-east-1:000000000000:function:f"),
            "arn:aws:lambda:us-east-1:000000000000:function:f"
        );
        assert_eq!(
            function_key_of_arn("arn:aws:lambda:us-east-1:000000000000:function:f").as_deref(),
            Some("000000000000/us-east-1/f")
        );
    }
}
