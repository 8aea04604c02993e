//! Kinesis Data Streams semantics, with no HTTP and no wire format in them.
//!
//! [`Streams::handle`] takes a typed request (decoded and validated by `wire`) and a
//! [`RequestContext`], and returns a typed response or an [`Error`]. Metadata lives in the
//! catalog (one transaction per change), records in the log (one group-committed append per
//! PutRecord(s) call). An in-memory registry keeps, per stream, an immutable snapshot of its
//! metadata (`StreamView`) that the data path reads without locks, a gate that resharding
//! takes exclusively so no write lands in a shard after it closed, and the per-shard
//! throughput buckets.
//!
//! Time comes from the injected `Clock` and randomness from a seeded RNG, so lifecycle
//! delays, iterator expiry and retention can be driven by tests.
//!
//! Stream queues and their dead-letter handling are in `queues`, with their own durable
//! delivery state.
//!
//! Channels (`channels`) are control plane only here: their delivery runs in the
//! `firehose` crate, which reads the stream through `Streams::handle`.
//!
//! Not here: authentication (the server's).

pub mod channels;
mod codec;
mod consumers;
mod control;
mod crypto;
mod data;
mod error;
pub mod hashing;
pub mod iterator;
pub mod queues;
mod reshard;
mod resources;
pub mod seqnum;
mod throttle;
pub mod timefmt;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use millrace_catalog::model::{AccountRecord, Lifecycle, ShardRecord, Status, StreamRecord};
use millrace_catalog::{Catalog, Table};
use millrace_log::{Clock, Log};
use millrace_wire::kinesis::{self as k, Request, Response};
use parking_lot::{Mutex, RwLock};
use rand::{RngExt, SeedableRng};

pub use consumers::{SubscribeEvent, Subscription};
pub use error::Error;

/// Who is asking, and where: resources are namespaced by account and region.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub account: String,
    pub region: String,
    pub request_id: String,
    /// The authenticated principal's ARN (`None` in development mode). The server has
    /// authorized the request before the service sees it; this is for the record.
    pub principal: Option<String>,
}

/// Behaviour knobs of the service; the defaults are AWS's limits with short lifecycle
/// delays.
#[derive(Clone, Debug)]
pub struct StreamsConfig {
    /// How long a new stream stays CREATING.
    pub create_delay_ms: i64,
    /// How long a deleted stream stays DELETING before it disappears.
    pub delete_delay_ms: i64,
    /// How long a stream stays UPDATING after resharding, encryption or mode changes.
    pub update_delay_ms: i64,
    /// How long a new consumer stays CREATING (and a deregistered one DELETING).
    pub consumer_delay_ms: i64,
    /// Open shards per account and region (DescribeLimits ShardLimit).
    pub shard_limit: u32,
    /// On-demand streams per account and region.
    pub on_demand_stream_limit: u32,
    /// Registered consumers per stream.
    pub consumer_limit: u32,
    /// Per-shard write and read limits as AWS enforces them; false = unlimited.
    pub enforce_shard_throughput: bool,
    /// Shard iterators expire this long after they were issued.
    pub iterator_ttl_ms: i64,
    /// A SubscribeToShard connection lasts this long.
    pub subscription_ms: i64,
    /// On-demand streams split a shard whose writes stay above this rate.
    pub on_demand_split_bytes_per_sec: f64,
    /// ... for this long.
    pub on_demand_split_after_ms: i64,
    /// Seed for the RNG (stream ids); None = from the OS.
    pub rng_seed: Option<u64>,
    /// ReceiveQueueRecords calls that may wait (long poll) on one queue at once; a receive
    /// that would wait beyond this gets ThrottlingException. Bounds the tasks and watchers a
    /// crowd of workers can park on the server.
    pub queue_receive_waiters_max: usize,
    /// Logs that other services own (Firehose delivery streams): the sweep of logs no
    /// stream refers to, at open, leaves them alone.
    pub foreign_log_ids: std::collections::BTreeSet<u64>,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        StreamsConfig {
            create_delay_ms: 0,
            delete_delay_ms: 0,
            update_delay_ms: 0,
            consumer_delay_ms: 0,
            shard_limit: 500,
            on_demand_stream_limit: 50,
            consumer_limit: 20,
            enforce_shard_throughput: true,
            iterator_ttl_ms: 300_000,
            subscription_ms: 300_000,
            on_demand_split_bytes_per_sec: 500.0 * 1024.0,
            on_demand_split_after_ms: 60_000,
            rng_seed: None,
            queue_receive_waiters_max: 1_000,
            foreign_log_ids: std::collections::BTreeSet::new(),
        }
    }
}

/// The Data Streams service. Cheap to clone.
#[derive(Clone)]
pub struct Streams {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: StreamsConfig,
    pub catalog: Arc<Catalog>,
    pub log: Log,
    pub clock: Arc<dyn Clock>,
    /// Key of the HMAC that makes shard iterators tamper-evident.
    pub secret: Vec<u8>,
    pub registry: RwLock<HashMap<String, Arc<StreamEntry>>>,
    /// Serialises CreateStream (AWS allows five a second), so the existence check and the
    /// insert need not hold the registry lock across IO.
    pub creating: Mutex<()>,
    pub accounts: RwLock<HashMap<String, AccountRecord>>,
    pub rng: Mutex<rand::rngs::StdRng>,
    /// Encryption at rest (data keys per shard, wrapped by the key store's master keys).
    pub crypto: crypto::Crypto,
    /// Queue runtimes (delivery index, log, waiters) by queue id.
    pub queues: RwLock<HashMap<String, Arc<queues::QueueRuntime>>>,
}

/// An immutable snapshot of a stream's metadata plus what the data path derives from it.
pub(crate) struct StreamView {
    pub record: StreamRecord,
    /// Open shards sorted by starting hash key: the routing table.
    pub open: Vec<OpenShard>,
    /// Shard index → position in `record.shards`.
    pub by_index: HashMap<u32, usize>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct OpenShard {
    pub start: u128,
    pub end: u128,
    pub index: u32,
    pub log_id: u64,
}

impl StreamView {
    pub fn new(record: StreamRecord) -> StreamView {
        let mut open: Vec<OpenShard> = record
            .shards
            .iter()
            .filter(|s| s.closed.is_none())
            .map(|s| OpenShard {
                start: s.starting_hash_key,
                end: s.ending_hash_key,
                index: s.index,
                log_id: s.log_id,
            })
            .collect();
        open.sort_by_key(|s| s.start);
        let by_index = record
            .shards
            .iter()
            .enumerate()
            .map(|(pos, s)| (s.index, pos))
            .collect();
        StreamView {
            record,
            open,
            by_index,
        }
    }

    pub fn shard(&self, index: u32) -> Option<&ShardRecord> {
        self.by_index
            .get(&index)
            .and_then(|&pos| self.record.shards.get(pos))
    }

    /// The open shard owning a hash key.
    pub fn route(&self, hash_key: u128) -> Option<OpenShard> {
        let pos = self.open.partition_point(|s| s.start <= hash_key);
        let shard = self.open.get(pos.checked_sub(1)?)?;
        (hash_key <= shard.end).then_some(*shard)
    }
}

/// Per-stream runtime state.
pub(crate) struct StreamEntry {
    /// Catalog key: `account/region/name`.
    pub key: String,
    /// Writers hold it shared across their append; resharding and deletion hold it
    /// exclusively, so that a closed shard never receives a record after its end.
    pub gate: tokio::sync::RwLock<()>,
    pub view: RwLock<Arc<StreamView>>,
    /// Serialises control-plane changes to this stream.
    pub control: Mutex<()>,
    pub limits: Mutex<HashMap<u32, throttle::ShardLimits>>,
    /// Bytes written per open shard since the on-demand scaler last looked.
    pub load: Mutex<HashMap<u32, data::ShardLoad>>,
    /// (consumer name, shard index) → when the last subscription started.
    pub subscriptions: Mutex<HashMap<(String, u32), i64>>,
}

impl StreamEntry {
    pub fn new(key: String, record: StreamRecord) -> StreamEntry {
        StreamEntry {
            key,
            gate: tokio::sync::RwLock::new(()),
            view: RwLock::new(Arc::new(StreamView::new(record))),
            control: Mutex::new(()),
            limits: Mutex::new(HashMap::new()),
            load: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(HashMap::new()),
        }
    }

    pub fn view(&self) -> Arc<StreamView> {
        self.view.read().clone()
    }
}

pub(crate) fn stream_key(account: &str, region: &str, name: &str) -> String {
    format!("{account}/{region}/{name}")
}

pub(crate) fn account_key(account: &str, region: &str) -> String {
    format!("{account}/{region}")
}

pub(crate) fn stream_arn(record: &StreamRecord) -> String {
    format!(
        "arn:aws:kinesis:{}:{}:stream/{}",
        record.region, record.account, record.name
    )
}

pub(crate) fn shard_id(index: u32) -> String {
    format!("shardId-{index:012}")
}

/// Parses `shardId-000000000007` (and, as AWS does, a bare number or any prefix before the
/// last dash) into its index.
pub(crate) fn parse_shard_id(text: &str) -> Option<u32> {
    let digits = text.rsplit('-').next().unwrap_or(text);
    if digits.is_empty() || digits.len() > 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u32>().ok().filter(|&i| i <= i32::MAX as u32)
}

pub(crate) fn status_str(status: Status) -> &'static str {
    match status {
        Status::Creating => "CREATING",
        Status::Active => "ACTIVE",
        Status::Updating => "UPDATING",
        Status::Deleting => "DELETING",
    }
}

/// True while the stream is visible at all (a DELETING stream vanishes at the end of its
/// delay).
pub(crate) fn stream_exists(record: &StreamRecord, now_ms: i64) -> bool {
    !(record.lifecycle.status == Status::Deleting && now_ms >= record.lifecycle.until_ms)
}

impl Streams {
    /// `open_with_keys` with a key store that lives in memory only: encrypted streams work
    /// but their records do not survive a restart (tests).
    pub fn open(
        config: StreamsConfig,
        catalog: Arc<Catalog>,
        log: Log,
        clock: Arc<dyn Clock>,
    ) -> Result<Streams, Error> {
        let keys = Arc::new(millrace_kms::KeyStore::in_memory().map_err(Error::Kms)?);
        Streams::open_with_keys(config, catalog, log, clock, keys)
    }

    /// Loads every stream from the catalog, removes logs no stream refers to (left by a
    /// crash between creating logs and committing the stream), and is ready to serve.
    /// `keys` holds the master keys of encrypted streams.
    pub fn open_with_keys(
        config: StreamsConfig,
        catalog: Arc<Catalog>,
        log: Log,
        clock: Arc<dyn Clock>,
        keys: Arc<millrace_kms::KeyStore>,
    ) -> Result<Streams, Error> {
        let secret = catalog.write(|txn| -> Result<Vec<u8>, Error> {
            if let Some(secret) = txn.get::<Vec<u8>>(Table::Meta, "iterator-secret")? {
                return Ok(secret);
            }
            let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
            let secret: Vec<u8> = (0..32).map(|_| rng.random::<u8>()).collect();
            txn.put(Table::Meta, "iterator-secret", &secret)?;
            Ok(secret)
        })?;
        let rng = match config.rng_seed {
            Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
            None => rand::rngs::StdRng::from_rng(&mut rand::rng()),
        };
        let streams: Vec<(String, StreamRecord)> = catalog.load_all(Table::Streams)?;
        let accounts: Vec<(String, AccountRecord)> = catalog.load_all(Table::Accounts)?;
        let mut live_logs = std::collections::HashSet::new();
        let (queue_runtimes, queue_logs) = queues::recover(&catalog, &log, &streams)?;
        live_logs.extend(queue_logs);
        let mut registry = HashMap::new();
        for (key, record) in streams {
            for shard in &record.shards {
                live_logs.insert(shard.log_id);
            }
            registry.insert(key.clone(), Arc::new(StreamEntry::new(key, record)));
        }
        let orphans: Vec<u64> = log
            .log_ids()
            .into_iter()
            .filter(|id| !live_logs.contains(id) && !config.foreign_log_ids.contains(id))
            .collect();
        if !orphans.is_empty() {
            tracing::info!(?orphans, "removing logs no stream refers to");
            log.delete_logs(&orphans)?;
        }
        let crypto = crypto::Crypto::new(keys, catalog.clone());
        crypto.forget_logs(&orphans)?;
        Ok(Streams {
            inner: Arc::new(Inner {
                crypto,
                config,
                catalog,
                log,
                clock,
                secret,
                registry: RwLock::new(registry),
                creating: Mutex::new(()),
                accounts: RwLock::new(accounts.into_iter().collect()),
                rng: Mutex::new(rng),
                queues: RwLock::new(queue_runtimes),
            }),
        })
    }

    pub fn config(&self) -> &StreamsConfig {
        &self.inner.config
    }

    /// Serves one request.
    pub async fn handle(&self, ctx: &RequestContext, request: Request) -> Result<Response, Error> {
        let inner = &self.inner;
        Ok(match request {
            Request::AddTagsToStream(input) => {
                inner.add_tags_to_stream(ctx, input)?;
                Response::AddTagsToStream
            }
            Request::CreateStream(input) => {
                inner.create_stream_async(ctx, input).await?;
                Response::CreateStream
            }
            Request::DecreaseStreamRetentionPeriod(input) => {
                inner.decrease_retention(ctx, input)?;
                Response::DecreaseStreamRetentionPeriod
            }
            Request::DeleteResourcePolicy(input) => {
                inner.delete_resource_policy(ctx, input)?;
                Response::DeleteResourcePolicy
            }
            Request::DeleteStream(input) => {
                inner.delete_stream(ctx, input).await?;
                Response::DeleteStream
            }
            Request::DeregisterStreamConsumer(input) => {
                inner.deregister_stream_consumer(ctx, input)?;
                Response::DeregisterStreamConsumer
            }
            Request::DescribeAccountSettings(input) => {
                Response::DescribeAccountSettings(inner.describe_account_settings(ctx, input)?)
            }
            Request::DescribeLimits(input) => {
                Response::DescribeLimits(inner.describe_limits(ctx, input)?)
            }
            Request::DescribeStream(input) => {
                Response::DescribeStream(inner.describe_stream(ctx, input)?)
            }
            Request::DescribeStreamConsumer(input) => {
                Response::DescribeStreamConsumer(inner.describe_stream_consumer(ctx, input)?)
            }
            Request::DescribeStreamSummary(input) => {
                Response::DescribeStreamSummary(inner.describe_stream_summary(ctx, input)?)
            }
            Request::DisableEnhancedMonitoring(input) => {
                Response::DisableEnhancedMonitoring(inner.enhanced_monitoring(
                    ctx,
                    input.stream_name,
                    input.stream_arn,
                    input.shard_level_metrics,
                    false,
                )?)
            }
            Request::EnableEnhancedMonitoring(input) => {
                Response::EnableEnhancedMonitoring(inner.enhanced_monitoring(
                    ctx,
                    input.stream_name,
                    input.stream_arn,
                    input.shard_level_metrics,
                    true,
                )?)
            }
            Request::GetRecords(input) => Response::GetRecords(inner.get_records(ctx, input)?),
            Request::GetResourcePolicy(input) => {
                Response::GetResourcePolicy(inner.get_resource_policy(ctx, input)?)
            }
            Request::GetShardIterator(input) => {
                Response::GetShardIterator(inner.get_shard_iterator(ctx, input)?)
            }
            Request::IncreaseStreamRetentionPeriod(input) => {
                inner.increase_retention(ctx, input)?;
                Response::IncreaseStreamRetentionPeriod
            }
            Request::ListShards(input) => Response::ListShards(inner.list_shards(ctx, input)?),
            Request::ListStreamConsumers(input) => {
                Response::ListStreamConsumers(inner.list_stream_consumers(ctx, input)?)
            }
            Request::ListStreams(input) => Response::ListStreams(inner.list_streams(ctx, input)?),
            Request::ListTagsForResource(input) => {
                Response::ListTagsForResource(inner.list_tags_for_resource(ctx, input)?)
            }
            Request::ListTagsForStream(input) => {
                Response::ListTagsForStream(inner.list_tags_for_stream(ctx, input)?)
            }
            Request::MergeShards(input) => {
                inner.merge_shards(ctx, input).await?;
                Response::MergeShards
            }
            Request::PutRecord(input) => Response::PutRecord(inner.put_record(ctx, input).await?),
            Request::PutRecords(input) => {
                Response::PutRecords(inner.put_records(ctx, input).await?)
            }
            Request::PutResourcePolicy(input) => {
                inner.put_resource_policy(ctx, input)?;
                Response::PutResourcePolicy
            }
            Request::RegisterStreamConsumer(input) => {
                Response::RegisterStreamConsumer(inner.register_stream_consumer(ctx, input)?)
            }
            Request::RemoveTagsFromStream(input) => {
                inner.remove_tags_from_stream(ctx, input)?;
                Response::RemoveTagsFromStream
            }
            Request::SplitShard(input) => {
                inner.split_shard(ctx, input).await?;
                Response::SplitShard
            }
            Request::StartStreamEncryption(input) => {
                inner.set_encryption(
                    ctx,
                    input.stream_name,
                    input.stream_arn,
                    Some(input.key_id),
                )?;
                Response::StartStreamEncryption
            }
            Request::StopStreamEncryption(input) => {
                inner.set_encryption(ctx, input.stream_name, input.stream_arn, None)?;
                Response::StopStreamEncryption
            }
            Request::SubscribeToShard(_) => {
                // The server calls `subscribe_to_shard` directly: the answer is a stream.
                return Err(Error::Unsupported {
                    operation: "SubscribeToShard",
                });
            }
            Request::TagResource(input) => {
                inner.tag_resource(ctx, input)?;
                Response::TagResource
            }
            Request::UntagResource(input) => {
                inner.untag_resource(ctx, input)?;
                Response::UntagResource
            }
            Request::UpdateAccountSettings(input) => {
                Response::UpdateAccountSettings(inner.update_account_settings(ctx, input)?)
            }
            Request::UpdateMaxRecordSize(input) => {
                inner.update_max_record_size(ctx, input)?;
                Response::UpdateMaxRecordSize
            }
            Request::UpdateShardCount(input) => {
                Response::UpdateShardCount(inner.update_shard_count(ctx, input).await?)
            }
            Request::UpdateStreamMode(input) => {
                inner.update_stream_mode(ctx, input).await?;
                Response::UpdateStreamMode
            }
            Request::UpdateStreamWarmThroughput(input) => Response::UpdateStreamWarmThroughput(
                inner.update_stream_warm_throughput(ctx, input)?,
            ),
            Request::UpdateStreamRecordDistributionStrategy(input) => {
                inner.update_record_distribution_strategy(ctx, input)?;
                Response::UpdateStreamRecordDistributionStrategy
            }
            Request::CreateQueue(input) => Response::CreateQueue(inner.create_queue(ctx, input)?),
            Request::DescribeQueue(input) => {
                Response::DescribeQueue(inner.describe_queue(ctx, input)?)
            }
            Request::ListQueues(input) => Response::ListQueues(inner.list_queues(ctx, input)?),
            Request::UpdateQueue(input) => Response::UpdateQueue(inner.update_queue(ctx, input)?),
            Request::DeleteQueue(input) => {
                inner.delete_queue(ctx, input)?;
                Response::DeleteQueue
            }
            Request::ReceiveQueueRecords(input) => {
                Response::ReceiveQueueRecords(k::ReceiveQueueRecordsOutput {
                    queue_records: inner
                        .receive_queue_records(
                            ctx,
                            &input.queue_arn,
                            input.limit,
                            input.wait_time_seconds,
                            input.visibility_timeout_seconds,
                            false,
                        )
                        .await?,
                })
            }
            Request::ReceiveDeadLetterQueueRecords(input) => {
                Response::ReceiveDeadLetterQueueRecords(k::ReceiveDeadLetterQueueRecordsOutput {
                    queue_records: inner
                        .receive_queue_records(
                            ctx,
                            &input.queue_arn,
                            input.limit,
                            input.wait_time_seconds,
                            input.visibility_timeout_seconds,
                            true,
                        )
                        .await?,
                })
            }
            Request::AcknowledgeQueueRecords(input) => {
                let handles: Vec<String> = input
                    .entries
                    .into_iter()
                    .map(|e| e.receipt_handle)
                    .collect();
                let results = inner
                    .acknowledge(ctx, &input.queue_arn, &handles, false)
                    .await?;
                let (successful, failed) = queues::split_results(
                    handles,
                    results,
                    |receipt_handle| k::AcknowledgeQueueRecordsResultEntry { receipt_handle },
                    |receipt_handle, code, message| k::AcknowledgeQueueRecordsErrorEntry {
                        receipt_handle,
                        error_code: code.to_string(),
                        error_message: Some(message),
                    },
                );
                Response::AcknowledgeQueueRecords(k::AcknowledgeQueueRecordsOutput {
                    successful,
                    failed,
                })
            }
            Request::AcknowledgeDeadLetterQueueRecords(input) => {
                let handles: Vec<String> = input
                    .entries
                    .into_iter()
                    .map(|e| e.receipt_handle)
                    .collect();
                let results = inner
                    .acknowledge(ctx, &input.queue_arn, &handles, true)
                    .await?;
                let (successful, failed) = queues::split_results(
                    handles,
                    results,
                    |receipt_handle| k::AcknowledgeDeadLetterQueueRecordsResultEntry {
                        receipt_handle,
                    },
                    |receipt_handle, code, message| {
                        k::AcknowledgeDeadLetterQueueRecordsErrorEntry {
                            receipt_handle,
                            error_code: code.to_string(),
                            error_message: Some(message),
                        }
                    },
                );
                Response::AcknowledgeDeadLetterQueueRecords(
                    k::AcknowledgeDeadLetterQueueRecordsOutput { successful, failed },
                )
            }
            Request::UpdateQueueRecordsVisibility(input) => {
                let entries: Vec<(String, i32)> = input
                    .entries
                    .into_iter()
                    .map(|e| (e.receipt_handle, e.visibility_timeout_seconds))
                    .collect();
                let results = inner
                    .change_visibility(ctx, &input.queue_arn, &entries, false)
                    .await?;
                let handles = entries.into_iter().map(|(h, _)| h).collect();
                let (successful, failed) = queues::split_results(
                    handles,
                    results,
                    |receipt_handle| k::UpdateQueueRecordsVisibilityResultEntry { receipt_handle },
                    |receipt_handle, code, message| k::UpdateQueueRecordsVisibilityErrorEntry {
                        receipt_handle,
                        error_code: code.to_string(),
                        error_message: Some(message),
                    },
                );
                Response::UpdateQueueRecordsVisibility(k::UpdateQueueRecordsVisibilityOutput {
                    successful,
                    failed,
                })
            }
            Request::UpdateDeadLetterQueueRecordsVisibility(input) => {
                let entries: Vec<(String, i32)> = input
                    .entries
                    .into_iter()
                    .map(|e| (e.receipt_handle, e.visibility_timeout_seconds))
                    .collect();
                let results = inner
                    .change_visibility(ctx, &input.queue_arn, &entries, true)
                    .await?;
                let handles = entries.into_iter().map(|(h, _)| h).collect();
                let (successful, failed) = queues::split_results(
                    handles,
                    results,
                    |receipt_handle| k::UpdateDeadLetterQueueRecordsVisibilityResultEntry {
                        receipt_handle,
                    },
                    |receipt_handle, code, message| {
                        k::UpdateDeadLetterQueueRecordsVisibilityErrorEntry {
                            receipt_handle,
                            error_code: code.to_string(),
                            error_message: Some(message),
                        }
                    },
                );
                Response::UpdateDeadLetterQueueRecordsVisibility(
                    k::UpdateDeadLetterQueueRecordsVisibilityOutput { successful, failed },
                )
            }
            Request::RestoreDeadLetterQueueRecords(input) => {
                let handles: Vec<String> = input
                    .entries
                    .into_iter()
                    .map(|e| e.receipt_handle)
                    .collect();
                let results = inner.restore(ctx, &input.queue_arn, &handles).await?;
                let (successful, failed) = queues::split_results(
                    handles,
                    results,
                    |receipt_handle| k::RestoreDeadLetterQueueRecordsResultEntry { receipt_handle },
                    |receipt_handle, code, message| k::RestoreDeadLetterQueueRecordsErrorEntry {
                        receipt_handle,
                        error_code: code.to_string(),
                        error_message: Some(message),
                    },
                );
                Response::RestoreDeadLetterQueueRecords(k::RestoreDeadLetterQueueRecordsOutput {
                    successful,
                    failed,
                })
            }
            Request::CreateChannel(input) => {
                Response::CreateChannel(inner.create_channel(ctx, input)?)
            }
            Request::DescribeChannel(input) => {
                Response::DescribeChannel(inner.describe_channel(ctx, input)?)
            }
            Request::ListChannels(input) => {
                Response::ListChannels(inner.list_channels(ctx, input)?)
            }
            Request::UpdateChannel(input) => {
                Response::UpdateChannel(inner.update_channel(ctx, input)?)
            }
            Request::DeleteChannel(input) => {
                inner.delete_channel(ctx, input)?;
                Response::DeleteChannel
            }
        })
    }

    /// Starts a SubscribeToShard: checks everything AWS checks before it answers 200, then
    /// returns the subscription whose events the server streams.
    pub fn subscribe_to_shard(
        &self,
        ctx: &RequestContext,
        input: millrace_wire::kinesis::SubscribeToShardInput,
    ) -> Result<Subscription, Error> {
        consumers::subscribe(&self.inner, ctx, input)
    }

    /// Periodic work: finishes deletions whose delay passed, applies retention, lets
    /// on-demand streams scale. The binary calls it about once a second.
    pub async fn housekeeping(&self) -> Result<(), Error> {
        self.inner.housekeeping().await
    }

    /// Deletes every stream and account setting (the reset call for test suites).
    pub async fn reset(&self) -> Result<(), Error> {
        let runtimes: Vec<Arc<queues::QueueRuntime>> =
            self.inner.queues.write().drain().map(|(_, r)| r).collect();
        let queue_logs: Vec<u64> = runtimes
            .iter()
            .map(|r| r.log_id.load(std::sync::atomic::Ordering::SeqCst))
            .collect();
        for runtime in &runtimes {
            runtime.notify.notify_waiters();
        }
        self.inner.log.delete_logs(&queue_logs)?;
        self.inner
            .catalog
            .write(|txn| txn.clear(Table::QueueStates))?;
        let entries: Vec<Arc<StreamEntry>> = self.inner.registry.read().values().cloned().collect();
        for entry in entries {
            let _gate = entry.gate.write().await;
            let view = entry.view();
            self.inner
                .catalog
                .write(|txn| txn.delete(Table::Streams, &entry.key))?;
            self.inner.registry.write().remove(&entry.key);
            let log_ids: Vec<u64> = view.record.shards.iter().map(|s| s.log_id).collect();
            self.inner.log.delete_logs(&log_ids)?;
        }
        self.inner.catalog.write(|txn| {
            txn.clear(Table::Channels)?;
            txn.clear(Table::ChannelCheckpoints)
        })?;
        self.inner.catalog.write(|txn| txn.clear(Table::Accounts))?;
        self.inner.accounts.write().clear();
        self.inner.crypto.forget_all()?;
        Ok(())
    }
}

impl Inner {
    pub fn now_ms(&self) -> i64 {
        self.clock.now_millis()
    }

    /// Finds a stream by name or ARN (ARN wins: it names the account and region too).
    pub fn find_stream(
        &self,
        ctx: &RequestContext,
        name: Option<&str>,
        arn: Option<&str>,
    ) -> Result<Arc<StreamEntry>, Error> {
        let (account, region, name) = match (arn, name) {
            (Some(arn), _) => {
                let parsed = parse_stream_arn(arn)
                    .ok_or_else(|| Error::invalid(format!("Invalid StreamARN {arn}.")))?;
                (parsed.0, parsed.1, parsed.2)
            }
            (None, Some(name)) => (ctx.account.clone(), ctx.region.clone(), name.to_string()),
            (None, None) => {
                return Err(Error::invalid(
                    "Either StreamName or StreamARN must be provided.",
                ));
            }
        };
        let key = stream_key(&account, &region, &name);
        let entry = self.registry.read().get(&key).cloned();
        match entry {
            Some(entry) if stream_exists(&entry.view().record, self.now_ms()) => Ok(entry),
            _ => Err(Error::StreamNotFound { name, account }),
        }
    }

    /// Like `find_stream`, but the stream must be ACTIVE.
    pub fn find_active_stream(
        &self,
        ctx: &RequestContext,
        name: Option<&str>,
        arn: Option<&str>,
    ) -> Result<Arc<StreamEntry>, Error> {
        let entry = self.find_stream(ctx, name, arn)?;
        let view = entry.view();
        let status = view.record.lifecycle.at(self.now_ms());
        if status != Status::Active {
            return Err(Error::StreamNotActive {
                name: view.record.name.clone(),
                account: view.record.account.clone(),
                status: status_str(status),
            });
        }
        Ok(entry)
    }

    /// Applies a change to a stream's record in one catalog transaction, then publishes
    /// the new snapshot. The caller holds `entry.control`.
    pub fn commit(
        &self,
        entry: &StreamEntry,
        record: StreamRecord,
    ) -> Result<Arc<StreamView>, Error> {
        self.catalog
            .write(|txn| txn.put(Table::Streams, &entry.key, &record))?;
        let view = Arc::new(StreamView::new(record));
        *entry.view.write() = view.clone();
        Ok(view)
    }

    /// Reads, changes and commits a stream's record under its control lock.
    pub fn mutate<R>(
        &self,
        entry: &StreamEntry,
        f: impl FnOnce(&mut StreamRecord) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let _control = entry.control.lock();
        let mut record = entry.view().record.clone();
        let result = f(&mut record)?;
        self.commit(entry, record)?;
        Ok(result)
    }

    pub fn random_stream_id(&self) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = self.rng.lock();
        let mut pick = |n: usize| -> String {
            (0..n)
                .map(|_| {
                    let i = rng.random_range(0..ALPHABET.len());
                    char::from(ALPHABET.get(i).copied().unwrap_or(b'a'))
                })
                .collect()
        };
        let head = pick(20);
        let tail = pick(3);
        format!("{head}-{tail}")
    }

    /// Open shards of every stream of an account and region.
    pub fn open_shard_count(&self, account: &str, region: &str) -> u32 {
        let now = self.now_ms();
        self.registry
            .read()
            .values()
            .map(|e| e.view())
            .filter(|v| {
                v.record.account == account
                    && v.record.region == region
                    && stream_exists(&v.record, now)
            })
            .map(|v| v.open.len() as u32)
            .sum()
    }

    pub fn shard_limit_error(
        &self,
        account: &str,
        region: &str,
        current: u32,
        extra: u32,
    ) -> Error {
        Error::LimitExceeded {
            message: format!(
                "This request would exceed the shard limit for the account {account} in {region}. \
                 Current shard count for the account: {current}. Limit: {}. Number of additional \
                 shards that would have resulted from this request: {extra}. Refer to the AWS \
                 Service Limits page (http://docs.aws.amazon.com/general/latest/gr/aws_service_limits.html) \
                 for current limits and how to request higher limits.",
                self.config.shard_limit
            ),
        }
    }

    pub fn updating(&self, now: i64) -> Lifecycle {
        if self.config.update_delay_ms > 0 {
            Lifecycle {
                status: Status::Updating,
                until_ms: now + self.config.update_delay_ms,
                then: Status::Active,
            }
        } else {
            Lifecycle::steady(Status::Active)
        }
    }

    async fn housekeeping(&self) -> Result<(), Error> {
        let now = self.now_ms();
        self.channel_housekeeping(now)?;
        let entries: Vec<Arc<StreamEntry>> = self.registry.read().values().cloned().collect();
        for entry in entries {
            let view = entry.view();
            if !stream_exists(&view.record, now) {
                self.finish_delete(&entry).await?;
                continue;
            }
            // Retention: delete whole segments older than the retention period.
            let horizon = now - i64::from(view.record.retention_hours) * 3_600_000;
            for shard in &view.record.shards {
                self.log.trim_before(shard.log_id, horizon)?;
            }
            // A shard closed longer ago than the retention period holds nothing any more:
            // it leaves the listings (as on AWS) and its log goes.
            let expired: Vec<(u32, u64)> = view
                .record
                .shards
                .iter()
                .filter(|s| s.closed.is_some_and(|c| c.closed_ms < horizon))
                .map(|s| (s.index, s.log_id))
                .collect();
            if !expired.is_empty() {
                self.mutate(&entry, |record| {
                    record
                        .shards
                        .retain(|s| !expired.iter().any(|(index, _)| *index == s.index));
                    Ok(())
                })?;
                let log_ids: Vec<u64> = expired.iter().map(|(_, log_id)| *log_id).collect();
                self.log.delete_logs(&log_ids)?;
                self.crypto.forget_logs(&log_ids)?;
            }
            consumers::finish_consumer_changes(self, &entry, now)?;
            self.queue_housekeeping(&entry, now).await?;
            self.scale_on_demand(&entry, now).await?;
        }
        Ok(())
    }

    /// Removes a stream from the catalog, the registry and the log.
    pub async fn finish_delete(&self, entry: &Arc<StreamEntry>) -> Result<(), Error> {
        let _gate = entry.gate.write().await;
        let view = entry.view();
        self.catalog
            .write(|txn| txn.delete(Table::Streams, &entry.key))?;
        {
            let mut registry = self.registry.write();
            if registry
                .get(&entry.key)
                .is_some_and(|current| Arc::ptr_eq(current, entry))
            {
                registry.remove(&entry.key);
            }
        }
        let mut log_ids: Vec<u64> = view.record.shards.iter().map(|s| s.log_id).collect();
        // Queues left DELETING when their stream went: their state goes with it.
        for queue in &view.record.queues {
            if let Some(runtime) = self.queues.write().remove(&queue.queue_id) {
                runtime.notify.notify_waiters();
                log_ids.push(runtime.log_id.load(std::sync::atomic::Ordering::SeqCst));
            }
            self.catalog
                .write(|txn| txn.delete(Table::QueueStates, &queue.queue_id))?;
        }
        self.log.delete_logs(&log_ids)?;
        self.crypto.forget_logs(&log_ids)?;
        Ok(())
    }

    pub fn account_record(&self, account: &str, region: &str) -> AccountRecord {
        self.accounts
            .read()
            .get(&account_key(account, region))
            .cloned()
            .unwrap_or_default()
    }
}

/// `arn:aws:kinesis:REGION:ACCOUNT:stream/NAME` → (account, region, name).
pub(crate) fn parse_stream_arn(arn: &str) -> Option<(String, String, String)> {
    let mut parts = arn.splitn(6, ':');
    let (_arn, _partition, service, region, account, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if service != "kinesis" {
        return None;
    }
    let name = resource.strip_prefix("stream/")?;
    let name = name.split('/').next()?;
    if name.is_empty() {
        return None;
    }
    Some((account.to_string(), region.to_string(), name.to_string()))
}

/// Tags as the sorted map the catalog keeps.
pub(crate) type Tags = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_ids() {
        assert_eq!(shard_id(7), "shardId-000000000007");
        assert_eq!(parse_shard_id("shardId-000000000007"), Some(7));
        assert_eq!(parse_shard_id("7"), Some(7));
        assert_eq!(parse_shard_id("shardId-"), None);
        assert_eq!(parse_shard_id("shardId-99999999999999"), None);
        assert_eq!(parse_shard_id("shardId-x"), None);
    }

    #[test]
    fn stream_arns() {
        assert_eq!(
            parse_stream_arn("arn:aws:kinesis:eu-west-1:123456789012:stream/orders"),
            Some(("123456789012".into(), "eu-west-1".into(), "orders".into()))
        );
        assert_eq!(
            parse_stream_arn(
                "arn:aws:kinesis:eu-west-1:123456789012:stream/orders/consumer/c:1700000000"
            )
            .map(|p| p.2),
            Some("orders".into())
        );
        assert_eq!(parse_stream_arn("arn:aws:s3:::bucket"), None);
    }
}
