//! Amazon Data Firehose semantics, with no HTTP and no wire format in them.
//!
//! [`Firehose::handle`] takes a typed request (decoded and validated by `wire`) and a
//! [`RequestContext`], and returns a typed response or an [`Error`]. Delivery streams live in
//! the catalog (one transaction per change); the records they accept live in the log, one
//! log per delivery stream: PutRecord and PutRecordBatch answer only after their records are
//! appended and fsynced (group-committed with everything else), so an accepted record
//! survives a crash. A Kinesis source is copied into the same kind of log by a reader task.
//!
//! Each delivery stream has a delivery task ([`delivery`]) that reads its log, runs the
//! processors (transformation through an HTTP function, jq partition keys, delimiters),
//! buffers by destination prefix under the buffering hints, writes objects (compressed, or
//! converted to Parquet) to S3 or to the embedded folders, posts to an HTTP endpoint or loads
//! PostgreSQL, and then records how far it got (`DeliveryCheckpoints`). Buffers are memory
//! only: after a restart the task re-reads the log from the checkpoint, so delivery is
//! at-least-once, as on AWS. Buffering intervals and retry deadlines follow the injected
//! `Clock`, so a test that advances the clock flushes a buffer without sleeping.
//!
//! Bounds: records (1,000 KiB), batches (500 records, 4 MiB), buffers (the hints, at most
//! 128 MiB), buffered bytes per delivery stream ([`FirehoseConfig::buffered_bytes_max`]),
//! active partitions ([`FirehoseConfig::active_partitions_max`], 500 as on AWS), undelivered
//! records before producers are told to back off ([`FirehoseConfig::backlog_records_max`]).
//!
//! Kinesis channels are delivered here too ([`channel`]: S3 objects, and Iceberg tables
//! written by [`iceberg`]); their control plane is the `streams` crate's.
//!
//! Not here: authentication and HTTP (the server's), OpenSearch, Splunk, Snowflake and
//! Firehose's own Iceberg destinations and MSK or database sources (refused at creation).

mod avro;
mod channel;
mod compress;
mod control;
pub mod convert;
mod delivery;
pub mod envelope;
mod error;
mod http_endpoint;
pub mod iceberg;
mod ingest;
pub mod jq;
mod lambda;
pub mod metrics;
mod plan;
pub mod prefix;
mod process;
mod readers;
mod redshift;
mod source;
pub mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use millrace_catalog::model::{DeliveryStreamRecord, Status};
use millrace_catalog::{Catalog, Table};
use millrace_log::{Clock, Log};
use millrace_streams::Streams;
use millrace_wire::firehose::{Request, Response};
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use compress::{gunzip, hadoop_snappy_decode};
pub use convert::{ColumnDefinition, TableDefinition};
pub use error::{DeliveryError, Error};
pub use millrace_streams::RequestContext;
pub use readers::{HOLD_MS_MAX, InputRead, InputRecord};
pub use store::{S3Overrides, S3Settings};

/// A transformation function: the Lambda ARN delivery streams name, and the HTTP URL that
/// answers for it with the Lambda contract (`[[firehose.function]]`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FunctionMapping {
    pub arn: String,
    pub url: String,
}

/// Behaviour knobs of the service; the defaults are AWS's limits with short lifecycle delays.
#[derive(Clone, Debug)]
pub struct FirehoseConfig {
    /// How long a new delivery stream stays CREATING.
    pub create_delay_ms: i64,
    /// How long a deleted delivery stream stays DELETING before it disappears.
    pub delete_delay_ms: i64,
    /// Delivery streams per account and region.
    pub delivery_streams_max: usize,
    /// Dynamic partitioning: partitions buffered at once per delivery stream; records of
    /// further partitions go to the error output (`activePartitionExceeded`).
    pub active_partitions_max: usize,
    /// Bytes a delivery stream buffers in memory across all its buffers; past it the
    /// largest buffer is delivered early.
    pub buffered_bytes_max: usize,
    /// Accepted but undelivered records per delivery stream before PutRecord(Batch) answers
    /// ServiceUnavailableException (backpressure while a destination is down).
    pub backlog_records_max: u64,
    /// A Kinesis source reads each shard this often when it has caught up (AWS: 1 s).
    pub source_poll_interval_ms: u64,
    /// Where objects go.
    pub s3: S3Settings,
    /// The folder holding the embedded buckets.
    pub embedded_buckets_dir: PathBuf,
    /// Transformation functions by Lambda ARN.
    pub functions: Vec<FunctionMapping>,
    /// Tables for JSON to Parquet conversion.
    pub tables: Vec<TableDefinition>,
}

impl Default for FirehoseConfig {
    fn default() -> Self {
        FirehoseConfig {
            create_delay_ms: 0,
            delete_delay_ms: 0,
            delivery_streams_max: 5000,
            active_partitions_max: 500,
            buffered_bytes_max: 256 * 1024 * 1024,
            backlog_records_max: 10_000_000,
            source_poll_interval_ms: 1000,
            s3: S3Settings::resolve(&S3Overrides::default(), &|_| None, None),
            embedded_buckets_dir: PathBuf::from("./millrace-data/buckets"),
            functions: Vec::new(),
            tables: Vec::new(),
        }
    }
}

/// The Firehose service. Cheap to clone.
#[derive(Clone)]
pub struct Firehose {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: FirehoseConfig,
    pub catalog: Arc<Catalog>,
    pub log: Log,
    pub clock: Arc<dyn Clock>,
    pub streams: Streams,
    pub buckets: store::Buckets,
    pub http: reqwest::Client,
    pub registry: RwLock<HashMap<String, Arc<Entry>>>,
    /// Serialises CreateDeliveryStream so the existence and limit checks hold.
    pub creating: Mutex<()>,
    /// Set by [`Firehose::start`]: where delivery tasks are spawned and what stops them.
    pub runtime: Mutex<Option<(TaskTracker, CancellationToken)>>,
}

/// Per-delivery-stream runtime state.
pub(crate) struct Entry {
    /// Catalog key: `account/region/name`.
    pub key: String,
    pub record: RwLock<Arc<DeliveryStreamRecord>>,
    /// Serialises control-plane changes to this delivery stream.
    pub control: Mutex<()>,
    pub metrics: metrics::Metrics,
    /// Stops this delivery stream's tasks (a child of the service's shutdown token).
    pub stop: CancellationToken,
    /// The first offset not yet delivered (the delivery task's checkpoint, in memory).
    pub delivered_offset: std::sync::atomic::AtomicU64,
    /// Wakes the delivery task when the configuration changed.
    pub changed: tokio::sync::Notify,
    /// Other readers' holds on the log ([`readers`]).
    pub holds: Mutex<readers::Holds>,
}

impl Entry {
    pub fn new(key: String, record: DeliveryStreamRecord, delivered_offset: u64) -> Entry {
        Entry {
            key,
            record: RwLock::new(Arc::new(record)),
            control: Mutex::new(()),
            metrics: metrics::Metrics::default(),
            stop: CancellationToken::new(),
            delivered_offset: std::sync::atomic::AtomicU64::new(delivered_offset),
            changed: tokio::sync::Notify::new(),
            holds: Mutex::new(readers::Holds::default()),
        }
    }

    pub fn record(&self) -> Arc<DeliveryStreamRecord> {
        self.record.read().clone()
    }
}

pub(crate) fn stream_key(account: &str, region: &str, name: &str) -> String {
    format!("{account}/{region}/{name}")
}

pub(crate) fn delivery_stream_arn(record: &DeliveryStreamRecord) -> String {
    format!(
        "arn:aws:firehose:{}:{}:deliverystream/{}",
        record.region, record.account, record.name
    )
}

/// True while the delivery stream is visible at all (a DELETING one vanishes at the end of
/// its delay).
pub(crate) fn exists(record: &DeliveryStreamRecord, now_ms: i64) -> bool {
    !(record.lifecycle.status == Status::Deleting && now_ms >= record.lifecycle.until_ms)
}

/// The logs delivery streams own, for the Data Streams service's sweep of orphaned logs.
pub fn owned_log_ids(catalog: &Catalog) -> Result<BTreeSet<u64>, Error> {
    let records: Vec<(String, DeliveryStreamRecord)> = catalog.load_all(Table::DeliveryStreams)?;
    Ok(records.into_iter().map(|(_, r)| r.log_id).collect())
}

impl Firehose {
    /// Loads every delivery stream from the catalog (re-creating a log that a crash between
    /// the catalog commit and the log creation left missing) and is ready to serve. Delivery
    /// starts with [`Firehose::start`].
    pub fn open(
        config: FirehoseConfig,
        catalog: Arc<Catalog>,
        log: Log,
        clock: Arc<dyn Clock>,
        streams: Streams,
    ) -> Result<Firehose, Error> {
        let records: Vec<(String, DeliveryStreamRecord)> =
            catalog.load_all(Table::DeliveryStreams)?;
        let checkpoints: Vec<(String, millrace_catalog::model::DeliveryCheckpointRecord)> =
            catalog.load_all(Table::DeliveryCheckpoints)?;
        let mut checkpoints: HashMap<String, millrace_catalog::model::DeliveryCheckpointRecord> =
            checkpoints.into_iter().collect();
        let log_ids: Vec<u64> = records.iter().map(|(_, r)| r.log_id).collect();
        if !log_ids.is_empty() {
            log.create_logs(&log_ids)?;
        }
        let registry = records
            .into_iter()
            .map(|(key, record)| {
                let checkpoint = checkpoints.remove(&key).unwrap_or_default();
                let entry = Entry::new(key.clone(), record, checkpoint.delivered_offset);
                entry.holds.lock().offsets = checkpoint.holds;
                (key, Arc::new(entry))
            })
            .collect();
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .pool_max_idle_per_host(8)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        let buckets = store::Buckets::new(config.s3.clone(), config.embedded_buckets_dir.clone());
        Ok(Firehose {
            inner: Arc::new(Inner {
                config,
                catalog,
                log,
                clock,
                streams,
                buckets,
                http,
                registry: RwLock::new(registry),
                creating: Mutex::new(()),
                runtime: Mutex::new(None),
            }),
        })
    }

    pub fn config(&self) -> &FirehoseConfig {
        &self.inner.config
    }

    /// Where objects go, for the start-up log line.
    pub fn describe_buckets(&self) -> String {
        self.inner.buckets.describe()
    }

    /// Starts a delivery task (and a source reader, for Kinesis sources) for every delivery
    /// stream, and for every one created later. Tasks stop when `shutdown` fires; the caller
    /// waits for `tracker`.
    pub fn start(&self, tracker: TaskTracker, shutdown: CancellationToken) {
        *self.inner.runtime.lock() = Some((tracker.clone(), shutdown.clone()));
        tracker.spawn(channel::supervise(
            self.inner.clone(),
            tracker.clone(),
            shutdown,
        ));
        let entries: Vec<Arc<Entry>> = self.inner.registry.read().values().cloned().collect();
        for entry in entries {
            self.inner.spawn_tasks(&entry);
        }
    }

    /// Serves one request.
    pub async fn handle(&self, ctx: &RequestContext, request: Request) -> Result<Response, Error> {
        let inner = &self.inner;
        Ok(match request {
            Request::CreateDeliveryStream(input) => {
                Response::CreateDeliveryStream(inner.create_delivery_stream(ctx, input).await?)
            }
            Request::DeleteDeliveryStream(input) => {
                inner.delete_delivery_stream(ctx, input)?;
                Response::DeleteDeliveryStream(Default::default())
            }
            Request::DescribeDeliveryStream(input) => {
                Response::DescribeDeliveryStream(inner.describe_delivery_stream(ctx, input)?)
            }
            Request::ListDeliveryStreams(input) => {
                Response::ListDeliveryStreams(inner.list_delivery_streams(ctx, input))
            }
            Request::ListTagsForDeliveryStream(input) => {
                Response::ListTagsForDeliveryStream(inner.list_tags(ctx, input)?)
            }
            Request::PutRecord(input) => Response::PutRecord(inner.put_record(ctx, input).await?),
            Request::PutRecordBatch(input) => {
                Response::PutRecordBatch(inner.put_record_batch(ctx, input).await?)
            }
            Request::StartDeliveryStreamEncryption(input) => {
                inner.start_encryption(ctx, input)?;
                Response::StartDeliveryStreamEncryption(Default::default())
            }
            Request::StopDeliveryStreamEncryption(input) => {
                inner.stop_encryption(ctx, input)?;
                Response::StopDeliveryStreamEncryption(Default::default())
            }
            Request::TagDeliveryStream(input) => {
                inner.tag(ctx, input)?;
                Response::TagDeliveryStream(Default::default())
            }
            Request::UntagDeliveryStream(input) => {
                inner.untag(ctx, input)?;
                Response::UntagDeliveryStream(Default::default())
            }
            Request::UpdateDestination(input) => {
                inner.update_destination(ctx, input)?;
                Response::UpdateDestination(Default::default())
            }
        })
    }

    /// Periodic work: finishes deletions whose delay passed. The binary calls it about once a
    /// second.
    pub fn housekeeping(&self) -> Result<(), Error> {
        self.inner.housekeeping()
    }

    /// Deletes every delivery stream (the reset call for test suites).
    pub fn reset(&self) -> Result<(), Error> {
        let entries: Vec<Arc<Entry>> = self.inner.registry.read().values().cloned().collect();
        for entry in entries {
            self.inner.remove(&entry)?;
        }
        Ok(())
    }

    /// The `AWS/Firehose` counters of every delivery stream: (`account/region/name`,
    /// [(AWS metric name, total)]), sorted by key (the metrics endpoint and roll-up).
    pub fn all_metrics(&self) -> Vec<(String, Vec<(&'static str, u64)>)> {
        let entries: Vec<Arc<Entry>> = self.inner.registry.read().values().cloned().collect();
        let mut all: Vec<_> = entries
            .iter()
            .map(|entry| (entry.key.clone(), entry.metrics.snapshot()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The `AWS/Firehose` counters of a delivery stream (name, value), for a later metrics
    /// endpoint and for tests.
    pub fn metrics(&self, ctx: &RequestContext, name: &str) -> Option<Vec<(&'static str, u64)>> {
        let key = stream_key(&ctx.account, &ctx.region, name);
        let entry = self.inner.registry.read().get(&key).cloned()?;
        Some(entry.metrics.snapshot())
    }
}

impl Inner {
    pub fn now_ms(&self) -> i64 {
        self.clock.now_millis()
    }

    /// Finds a visible delivery stream by name in the caller's account and region.
    pub fn find(&self, ctx: &RequestContext, name: &str) -> Result<Arc<Entry>, Error> {
        let key = stream_key(&ctx.account, &ctx.region, name);
        let entry = self.registry.read().get(&key).cloned();
        match entry {
            Some(entry) if exists(&entry.record(), self.now_ms()) => Ok(entry),
            _ => Err(Error::NotFound {
                name: name.to_string(),
                account: ctx.account.clone(),
            }),
        }
    }

    /// Applies a change to a delivery stream's record in one catalog transaction, then
    /// publishes it. Runs under the entry's control lock.
    pub fn mutate<R>(
        &self,
        entry: &Entry,
        f: impl FnOnce(&mut DeliveryStreamRecord) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let _control = entry.control.lock();
        let mut record = (*entry.record()).clone();
        let result = f(&mut record)?;
        self.catalog
            .write(|txn| txn.put(Table::DeliveryStreams, &entry.key, &record))?;
        *entry.record.write() = Arc::new(record);
        entry.changed.notify_one();
        Ok(result)
    }

    /// Spawns the tasks of a delivery stream if the service is started.
    pub fn spawn_tasks(self: &Arc<Self>, entry: &Arc<Entry>) {
        let runtime = self.runtime.lock().clone();
        let Some((tracker, shutdown)) = runtime else {
            return;
        };
        // A delivery stream's tasks stop with the service or when it is deleted.
        let stop = entry.stop.clone();
        {
            let stop = stop.clone();
            tracker.spawn(async move {
                tokio::select! {
                    () = shutdown.cancelled() => stop.cancel(),
                    () = stop.cancelled() => {}
                }
            });
        }
        let record = entry.record();
        if record.stream_type == "KinesisStreamAsSource" {
            tracker.spawn(source::run(self.clone(), entry.clone()));
        }
        tracker.spawn(delivery::run(self.clone(), entry.clone()));
    }

    fn housekeeping(&self) -> Result<(), Error> {
        let now = self.now_ms();
        let entries: Vec<Arc<Entry>> = self.registry.read().values().cloned().collect();
        for entry in entries {
            if !exists(&entry.record(), now) {
                self.remove(&entry)?;
            }
        }
        Ok(())
    }

    /// Removes a delivery stream from the catalog, the registry and the log.
    pub fn remove(&self, entry: &Arc<Entry>) -> Result<(), Error> {
        entry.stop.cancel();
        let record = entry.record();
        self.catalog.write(|txn| {
            txn.delete(Table::DeliveryStreams, &entry.key)?;
            txn.delete(Table::DeliveryCheckpoints, &entry.key)
        })?;
        {
            let mut registry = self.registry.write();
            if registry
                .get(&entry.key)
                .is_some_and(|current| Arc::ptr_eq(current, entry))
            {
                registry.remove(&entry.key);
            }
        }
        self.log.delete_logs(&[record.log_id])?;
        Ok(())
    }
}

/// Tags as the sorted map the catalog keeps.
pub(crate) type Tags = BTreeMap<String, String>;
