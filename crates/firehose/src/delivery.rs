//! The delivery task of one delivery stream: log → processors → buffers → destination.
//!
//! The task reads the delivery stream's log in order. Each record goes through the
//! processors that need no network (`process::preprocess`); then, if a transformation
//! function is configured, waits in `pending` until the function's buffer is full or old
//! enough (`BufferSizeInMBs`, `BufferIntervalInSeconds`, never longer than the destination's
//! interval); then gets its jq partition keys and delimiter and joins a buffer: one per
//! evaluated prefix with dynamic partitioning (at most `active_partitions_max`), else one,
//! plus one per error output type and one for the source backup. A buffer is delivered when it
//! holds `SizeInMBs` or its oldest record is `IntervalInSeconds` old on the injected clock,
//! whichever comes first; an object store that fails is retried with backoff until it works
//! (or the task stops), so a down destination holds the records in the log, where producers
//! feel it as backpressure.
//!
//! After deliveries the task persists its checkpoint: the lowest log offset still pending
//! or buffered. A restart re-reads from there, so every accepted record is delivered at
//! least once; records of buffers that were delivered after the checkpoint's record may be
//! delivered twice, as on AWS. Segments of the log wholly before the checkpoint, and before
//! every other reader's hold (`readers`), are trimmed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use millrace_catalog::Table;
use millrace_catalog::model::DeliveryCheckpointRecord;
use millrace_wire::firehose::CompressionFormat;

use crate::envelope::{self, KinesisOrigin};
use crate::error::DeliveryError;
use crate::http_endpoint::{self, HttpOutcome, sleep_on_clock};
use crate::lambda;
use crate::metrics::add;
use crate::plan::{Destination, Hints, LambdaPlan, Plan, S3Target};
use crate::prefix::{self, PrefixValues};
use crate::process::{self, ErrorRecord};
use crate::{Entry, Inner, delivery_stream_arn};

/// Records read from the log at once.
const READ_RECORDS_MAX: usize = 10_000;
/// Payload bytes read from the log at once.
const READ_BYTES_MAX: usize = 8 * 1024 * 1024;
/// How often an idle task looks at the clock (buffer intervals follow the injected clock,
/// which a test may move forward at any moment).
const IDLE_TICK_MS: u64 = 50;
/// Backoff between attempts to write an object: doubling from the first, capped.
const STORE_RETRY_FIRST_MS: i64 = 200;
const STORE_RETRY_MAX_MS: i64 = 30_000;
/// Backoff between transformation attempts.
const LAMBDA_RETRY_MS: i64 = 1_000;
/// Backoff between PostgreSQL load attempts: doubling from the first, capped.
const LOAD_RETRY_FIRST_MS: i64 = 1_000;
const LOAD_RETRY_MAX_MS: i64 = 60_000;
/// How often fully delivered log segments are trimmed.
const TRIM_INTERVAL_MS: i64 = 10_000;
/// How long a task whose destination cannot be planned waits before it looks again.
const PLAN_RETRY_MS: u64 = 2_000;

const _: () = assert!(READ_BYTES_MAX <= millrace_log::APPEND_BYTES_MAX);

/// Error output types (`!{firehose:error-output-type}`).
const PROCESSING_FAILED: &str = "processing-failed";
const FORMAT_CONVERSION_FAILED: &str = "format-conversion-failed";
const HTTP_ENDPOINT_FAILED: &str = "http-endpoint-failed";
const ACTIVE_PARTITION_EXCEEDED: &str = "activePartitionExceeded";

pub(crate) async fn run(inner: Arc<Inner>, entry: Arc<Entry>) {
    let record = entry.record();
    let checkpoint = entry.delivered_offset.load(Ordering::Relaxed);
    let mut pipeline = Pipeline {
        arn: delivery_stream_arn(&record),
        log_id: record.log_id,
        inner,
        entry,
        plan: None,
        plan_version: 0,
        read_offset: checkpoint,
        last_read_arrival_ms: None,
        pending: Vec::new(),
        pending_bytes: 0,
        buffers: BTreeMap::new(),
        buffered_bytes: 0,
        checkpoint_saved: checkpoint,
        last_trim_ms: 0,
    };
    pipeline.run().await;
}

/// A record on its way through the processors.
struct Item {
    offset: u64,
    arrival_ms: i64,
    record_id: String,
    data: Bytes,
    origin: Option<KinesisOrigin>,
    lambda_keys: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum BufferKey {
    /// The destination; the evaluated prefix with dynamic partitioning, else empty.
    Main(String),
    /// An error output type.
    Error(&'static str),
    /// The source record backup.
    Backup,
}

struct Buffered {
    offset: u64,
    arrival_ms: i64,
    data: Bytes,
}

#[derive(Default)]
struct Buffer {
    items: Vec<Buffered>,
    bytes: usize,
    first_offset: u64,
    oldest_arrival_ms: i64,
}

struct Pipeline {
    inner: Arc<Inner>,
    entry: Arc<Entry>,
    arn: String,
    log_id: u64,
    plan: Option<Arc<Plan>>,
    plan_version: u64,
    read_offset: u64,
    last_read_arrival_ms: Option<i64>,
    pending: Vec<Item>,
    pending_bytes: usize,
    buffers: BTreeMap<BufferKey, Buffer>,
    buffered_bytes: usize,
    checkpoint_saved: u64,
    last_trim_ms: i64,
}

impl Pipeline {
    fn now(&self) -> i64 {
        self.inner.now_ms()
    }

    fn stopped(&self) -> bool {
        self.entry.stop.is_cancelled()
    }

    async fn run(&mut self) {
        let mut watch = match self.inner.log.watch(self.log_id) {
            Ok(watch) => watch,
            Err(error) => {
                tracing::error!(delivery_stream = %self.arn, %error, "cannot watch the delivery stream's log");
                return;
            }
        };
        loop {
            if self.stopped() {
                return;
            }
            if !self.refresh_plan().await {
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_millis(PLAN_RETRY_MS)) => {}
                    () = self.entry.changed.notified() => {}
                    () = self.entry.stop.cancelled() => return,
                }
                continue;
            }
            let Some(plan) = self.plan.clone() else {
                continue;
            };
            let read_any = match self.read(&plan) {
                Ok(read_any) => read_any,
                Err(error) => {
                    tracing::error!(delivery_stream = %self.arn, %error, "cannot read the delivery stream's log");
                    false
                }
            };
            self.flush_due(&plan).await;
            if self.stopped() {
                return;
            }
            self.checkpoint().await;
            if !read_any {
                tokio::select! {
                    _ = watch.changed() => {}
                    () = tokio::time::sleep(std::time::Duration::from_millis(IDLE_TICK_MS)) => {}
                    () = self.entry.changed.notified() => {}
                    () = self.entry.stop.cancelled() => return,
                }
            }
        }
    }

    /// Builds the plan of the current version; on a new version, delivers what the old one
    /// buffered first. False while the destination cannot be planned.
    async fn refresh_plan(&mut self) -> bool {
        let record = self.entry.record();
        if self.plan.is_some() && record.version_id == self.plan_version {
            return true;
        }
        if let Some(old) = self.plan.clone() {
            self.flush_pending(&old).await;
            let keys: Vec<BufferKey> = self.buffers.keys().cloned().collect();
            for key in keys {
                self.flush(&old, key).await;
            }
            if self.stopped() {
                return false;
            }
        }
        let built = crate::control::destination(&record).and_then(|(description, secret)| {
            Plan::build(&description, secret.as_deref(), &self.inner.config)
        });
        match built {
            Ok(plan) => {
                self.plan = Some(Arc::new(plan));
                self.plan_version = record.version_id;
                true
            }
            Err(error) => {
                self.plan = None;
                tracing::error!(delivery_stream = %self.arn, %error, "the destination cannot be used; delivery waits");
                false
            }
        }
    }

    /// Reads one batch from the log into pending or the buffers. True if it read anything.
    fn read(&mut self, plan: &Plan) -> Result<bool, DeliveryError> {
        if self.buffered_bytes >= self.inner.config.buffered_bytes_max {
            return Ok(false);
        }
        let batch = self.inner.log.read(
            self.log_id,
            self.read_offset,
            READ_RECORDS_MAX,
            READ_BYTES_MAX,
        )?;
        if batch.records.is_empty() {
            self.read_offset = batch.next_offset.max(self.read_offset);
            return Ok(false);
        }
        for record in batch.records {
            self.read_offset = record.offset + 1;
            self.last_read_arrival_ms = Some(record.timestamp_ms);
            let Some(envelope) = envelope::decode(&record.payload) else {
                tracing::error!(delivery_stream = %self.arn, offset = record.offset, "a log record of this delivery stream cannot be decoded; skipped");
                continue;
            };
            let arrival_ms = envelope
                .origin
                .as_ref()
                .map(|o| o.arrival_ms)
                .unwrap_or(record.timestamp_ms);
            if backup_target(plan).is_some() {
                self.push(
                    BufferKey::Backup,
                    record.offset,
                    arrival_ms,
                    envelope.data.clone(),
                );
            }
            match process::preprocess(&plan.processing, envelope.data.clone()) {
                Err(error) => {
                    let item = Item {
                        offset: record.offset,
                        arrival_ms,
                        record_id: format!("{:020}", record.offset),
                        data: envelope.data,
                        origin: envelope.origin,
                        lambda_keys: BTreeMap::new(),
                    };
                    self.push_error(
                        PROCESSING_FAILED,
                        &item,
                        1,
                        error.code,
                        &error.message,
                        serde_json::Map::new(),
                    );
                }
                Ok(records) => {
                    for (sub_idx, data) in records.into_iter().enumerate() {
                        let item = Item {
                            offset: record.offset,
                            arrival_ms,
                            record_id: format!("{:020}{:06}", record.offset, sub_idx),
                            data,
                            origin: envelope.origin.clone(),
                            lambda_keys: BTreeMap::new(),
                        };
                        if plan.processing.lambda.is_some() {
                            self.pending_bytes += item.data.len();
                            self.pending.push(item);
                        } else {
                            self.route(plan, item);
                        }
                    }
                }
            }
        }
        Ok(true)
    }

    /// Partition keys, delimiter, buffer.
    fn route(&mut self, plan: &Plan, item: Item) {
        let query_keys = match &plan.processing.query {
            None => BTreeMap::new(),
            Some(query) => match query.partition_keys(&item.data) {
                Ok(keys) => keys,
                Err(message) => {
                    self.push_error(
                        PROCESSING_FAILED,
                        &item,
                        1,
                        "DynamicPartitioning.MetadataExtractionFailed",
                        &message,
                        serde_json::Map::new(),
                    );
                    return;
                }
            },
        };
        let data = match &plan.processing.append_delimiter {
            None => item.data.clone(),
            Some(delimiter) => {
                let mut data = Vec::with_capacity(item.data.len() + delimiter.len());
                data.extend_from_slice(&item.data);
                data.extend_from_slice(delimiter);
                Bytes::from(data)
            }
        };
        let key = match &plan.destination {
            Destination::S3 {
                target,
                dynamic_partitioning: true,
                ..
            } => {
                let time = prefix::zoned(item.arrival_ms, &target.zone);
                let evaluated = target.prefix.evaluate(&PrefixValues {
                    time: &time,
                    error_output_type: None,
                    query_keys: &query_keys,
                    lambda_keys: &item.lambda_keys,
                });
                match evaluated {
                    Err(message) => {
                        self.push_error(
                            PROCESSING_FAILED,
                            &item,
                            1,
                            "DynamicPartitioning.PartitionKeyMissing",
                            &message,
                            serde_json::Map::new(),
                        );
                        return;
                    }
                    Ok(partition) => {
                        let key = BufferKey::Main(partition);
                        if !self.buffers.contains_key(&key) {
                            let active = self
                                .buffers
                                .keys()
                                .filter(|k| matches!(k, BufferKey::Main(_)))
                                .count();
                            if active >= self.inner.config.active_partitions_max {
                                add(&self.entry.metrics.partition_count_exceeded, 1);
                                let message = format!(
                                    "The number of active partitions exceeds {}.",
                                    self.inner.config.active_partitions_max
                                );
                                self.push_error(
                                    ACTIVE_PARTITION_EXCEEDED,
                                    &item,
                                    1,
                                    "DynamicPartitioning.ActivePartitionsLimitExceeded",
                                    &message,
                                    serde_json::Map::new(),
                                );
                                return;
                            }
                            add(&self.entry.metrics.partition_count, 1);
                        }
                        key
                    }
                }
            }
            _ => BufferKey::Main(String::new()),
        };
        self.push(key, item.offset, item.arrival_ms, data);
    }

    fn push(&mut self, key: BufferKey, offset: u64, arrival_ms: i64, data: Bytes) {
        let buffer = self.buffers.entry(key).or_insert_with(|| Buffer {
            first_offset: offset,
            oldest_arrival_ms: arrival_ms,
            ..Default::default()
        });
        buffer.first_offset = buffer.first_offset.min(offset);
        buffer.oldest_arrival_ms = buffer.oldest_arrival_ms.min(arrival_ms);
        buffer.bytes += data.len();
        self.buffered_bytes += data.len();
        buffer.items.push(Buffered {
            offset,
            arrival_ms,
            data,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn push_error(
        &mut self,
        kind: &'static str,
        item: &Item,
        attempts_made: u32,
        code: &str,
        message: &str,
        mut extra: serde_json::Map<String, serde_json::Value>,
    ) {
        if let Some(origin) = &item.origin {
            extra.insert(
                "sequenceNumber".into(),
                origin.sequence_number.clone().into(),
            );
            extra.insert("subSequenceNumber".into(), 0.into());
            extra.insert("partitionKey".into(), origin.partition_key.clone().into());
            extra.insert(
                "shardId".into(),
                format!("shardId-{:012}", origin.shard_index).into(),
            );
        }
        let line = ErrorRecord {
            attempts_made,
            arrival_ms: item.arrival_ms,
            error_code: code,
            error_message: message,
            attempt_ending_ms: self.now(),
            raw_data: &item.data,
            extra,
            last_error_names: kind == FORMAT_CONVERSION_FAILED,
        }
        .to_json_line();
        self.push(BufferKey::Error(kind), item.offset, item.arrival_ms, line);
    }

    fn hints_of(&self, plan: &Plan, key: &BufferKey) -> Hints {
        match key {
            BufferKey::Main(_) => plan.hints(),
            BufferKey::Error(_) => error_target(plan).hints,
            BufferKey::Backup => backup_target(plan).map(|t| t.hints).unwrap_or(plan.hints()),
        }
    }

    /// Runs the transformation and delivers every buffer that is due.
    async fn flush_due(&mut self, plan: &Plan) {
        let now = self.now();
        if let Some(lambda) = &plan.processing.lambda
            && let Some(first) = self.pending.first()
        {
            let interval_ms = lambda.interval_ms.min(plan.hints().interval_ms);
            if self.pending_bytes as u64 >= lambda.buffer_bytes
                || now - first.arrival_ms >= interval_ms
            {
                self.flush_pending(plan).await;
            }
        }
        let now = self.now();
        let due: Vec<BufferKey> = self
            .buffers
            .iter()
            .filter(|(key, buffer)| {
                let hints = self.hints_of(plan, key);
                buffer.bytes as u64 >= hints.size_bytes
                    || now - buffer.oldest_arrival_ms >= hints.interval_ms
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            if self.stopped() {
                return;
            }
            self.flush(plan, key).await;
        }
        // Past the memory bound, the largest buffers go early.
        while self.buffered_bytes > self.inner.config.buffered_bytes_max && !self.stopped() {
            let Some(largest) = self
                .buffers
                .iter()
                .max_by_key(|(_, b)| b.bytes)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.flush(plan, largest).await;
        }
    }

    /// Sends the pending records through the transformation function.
    async fn flush_pending(&mut self, plan: &Plan) {
        let Some(lambda) = plan.processing.lambda.clone() else {
            return;
        };
        while !self.pending.is_empty() && !self.stopped() {
            // One invocation holds at most the function's buffer size (and one record).
            let mut n_records = 0;
            let mut bytes = 0usize;
            for item in &self.pending {
                if n_records > 0 && (bytes + item.data.len()) as u64 > lambda.buffer_bytes {
                    break;
                }
                bytes += item.data.len();
                n_records += 1;
            }
            let batch: Vec<Item> = self.pending.drain(..n_records).collect();
            self.pending_bytes = self.pending.iter().map(|i| i.data.len()).sum();
            self.transform(plan, &lambda, batch).await;
        }
    }

    async fn transform(&mut self, plan: &Plan, lambda: &LambdaPlan, batch: Vec<Item>) {
        let record = self.entry.record();
        let inputs: Vec<lambda::InputRecord<'_>> = batch
            .iter()
            .map(|item| lambda::InputRecord {
                record_id: &item.record_id,
                arrival_ms: item.arrival_ms,
                data: &item.data,
                origin: item.origin.as_ref(),
            })
            .collect();
        let ids: Vec<&str> = batch.iter().map(|i| i.record_id.as_str()).collect();
        let body = lambda::event(
            &self.arn,
            &record.region,
            record.source_stream_arn.as_deref(),
            &inputs,
        );
        let mut attempts = 0u32;
        let result = loop {
            attempts += 1;
            let outcome = tokio::select! {
                outcome = lambda::invoke(&self.inner.http, &lambda.url, body.clone(), &ids) => outcome,
                () = self.entry.stop.cancelled() => return,
            };
            match outcome {
                Ok(outcomes) => break Ok(outcomes),
                Err(error) if attempts <= lambda.retries => {
                    tracing::debug!(delivery_stream = %self.arn, code = error.code, message = %error.message, "transformation failed; retrying");
                    if !sleep_on_clock(&self.inner.clock, LAMBDA_RETRY_MS, &self.entry.stop).await {
                        return;
                    }
                }
                Err(error) => break Err(error),
            }
        };
        drop(inputs);
        let mut extra = serde_json::Map::new();
        extra.insert("lambdaArn".into(), lambda.arn.clone().into());
        match result {
            Ok(outcomes) => {
                add(&self.entry.metrics.execute_processing_success, 1);
                for (mut item, outcome) in batch.into_iter().zip(outcomes) {
                    match outcome {
                        lambda::Outcome::Ok {
                            data,
                            partition_keys,
                        } => {
                            add(&self.entry.metrics.succeed_processing_records, 1);
                            add(
                                &self.entry.metrics.succeed_processing_bytes,
                                data.len() as u64,
                            );
                            item.data = data;
                            item.lambda_keys = partition_keys;
                            self.route(plan, item);
                        }
                        lambda::Outcome::Dropped => {}
                        lambda::Outcome::ProcessingFailed => {
                            self.push_error(
                                PROCESSING_FAILED,
                                &item,
                                attempts,
                                "Lambda.ProcessingFailed",
                                "The function returned ProcessingFailed for the record.",
                                extra.clone(),
                            );
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(delivery_stream = %self.arn, code = error.code, message = %error.message, attempts, "transformation failed; records go to the error output");
                for item in &batch {
                    self.push_error(
                        PROCESSING_FAILED,
                        item,
                        attempts,
                        error.code,
                        &error.message,
                        extra.clone(),
                    );
                }
            }
        }
    }

    /// Delivers one buffer; it stays buffered if the task stops first.
    async fn flush(&mut self, plan: &Plan, key: BufferKey) {
        let Some(buffer) = self.buffers.remove(&key) else {
            return;
        };
        let delivered = match &key {
            BufferKey::Main(partition) => self.deliver_main(plan, partition, &buffer).await,
            BufferKey::Error(kind) => {
                let target = error_target(plan).clone();
                self.write_error_object(&target, kind, &buffer).await
            }
            BufferKey::Backup => match backup_target(plan).cloned() {
                Some(target) => {
                    let data = concat(&buffer);
                    let prefix = self.evaluate_prefix(&target, buffer.oldest_arrival_ms);
                    let ok = self
                        .write_object(
                            &target,
                            &prefix,
                            buffer.oldest_arrival_ms,
                            &data,
                            target.compression,
                        )
                        .await;
                    if ok {
                        add(
                            &self.entry.metrics.backup_to_s3_records,
                            buffer.items.len() as u64,
                        );
                    }
                    ok
                }
                None => true,
            },
        };
        if delivered {
            self.buffered_bytes = self.buffered_bytes.saturating_sub(buffer.bytes);
        } else {
            self.buffers.insert(key, buffer);
        }
    }

    fn evaluate_prefix(&self, target: &S3Target, arrival_ms: i64) -> String {
        let time = prefix::zoned(arrival_ms, &target.zone);
        let empty = BTreeMap::new();
        target
            .prefix
            .evaluate(&PrefixValues {
                time: &time,
                error_output_type: None,
                query_keys: &empty,
                lambda_keys: &empty,
            })
            .unwrap_or_default()
    }

    async fn deliver_main(&mut self, plan: &Plan, partition: &str, buffer: &Buffer) -> bool {
        match &plan.destination {
            Destination::S3 {
                target,
                converter,
                dynamic_partitioning,
                ..
            } => {
                let prefix = if *dynamic_partitioning {
                    partition.to_string()
                } else {
                    self.evaluate_prefix(target, buffer.oldest_arrival_ms)
                };
                let (data, n_records) = match converter {
                    None => (concat(buffer), buffer.items.len()),
                    Some(converter) => {
                        let records: Vec<&[u8]> =
                            buffer.items.iter().map(|i| i.data.as_ref()).collect();
                        let (result, failures) = converter.convert(&records);
                        let failed: Vec<(usize, String)> = match result {
                            Ok(_) => failures
                                .into_iter()
                                .map(|f| (f.record_idx, f.message))
                                .collect(),
                            Err(ref message) => {
                                (0..records.len()).map(|i| (i, message.clone())).collect()
                            }
                        };
                        add(
                            &self.entry.metrics.failed_conversion_records,
                            failed.len() as u64,
                        );
                        add(
                            &self.entry.metrics.succeed_conversion_records,
                            (records.len() - failed.len().min(records.len())) as u64,
                        );
                        for (record_idx, message) in &failed {
                            if let Some(source) = buffer.items.get(*record_idx) {
                                let item = Item {
                                    offset: source.offset,
                                    arrival_ms: source.arrival_ms,
                                    record_id: String::new(),
                                    data: source.data.clone(),
                                    origin: None,
                                    lambda_keys: BTreeMap::new(),
                                };
                                self.push_error(
                                    FORMAT_CONVERSION_FAILED,
                                    &item,
                                    1,
                                    "DataFormatConversion.InvalidSchema",
                                    message,
                                    serde_json::Map::new(),
                                );
                            }
                        }
                        match result {
                            Ok(Some(parquet)) => (parquet, records.len() - failed.len()),
                            Ok(None) | Err(_) => return true,
                        }
                    }
                };
                let compression = if converter.is_some() {
                    CompressionFormat::Uncompressed
                } else {
                    target.compression
                };
                let ok = self
                    .write_object(
                        target,
                        &prefix,
                        buffer.oldest_arrival_ms,
                        &data,
                        compression,
                    )
                    .await;
                if ok {
                    let metrics = &self.entry.metrics;
                    add(&metrics.delivery_to_s3_records, n_records as u64);
                    add(&metrics.delivery_to_s3_bytes, buffer.bytes as u64);
                    add(&metrics.delivery_to_s3_success, 1);
                }
                ok
            }
            Destination::Http { endpoint, s3 } => {
                let records: Vec<Bytes> = buffer.items.iter().map(|i| i.data.clone()).collect();
                for (chunk_idx, chunk) in records
                    .chunks(http_endpoint::REQUEST_RECORDS_MAX)
                    .enumerate()
                {
                    let outcome = http_endpoint::deliver(
                        &self.inner.http,
                        endpoint,
                        &self.arn,
                        chunk,
                        &self.inner.clock,
                        &self.entry.stop,
                    )
                    .await;
                    let start = chunk_idx * http_endpoint::REQUEST_RECORDS_MAX;
                    let items = buffer
                        .items
                        .get(start..start + chunk.len())
                        .unwrap_or_default();
                    match outcome {
                        HttpOutcome::Stopped => return false,
                        HttpOutcome::Delivered { .. } => {
                            let metrics = &self.entry.metrics;
                            add(
                                &metrics.delivery_to_http_endpoint_records,
                                chunk.len() as u64,
                            );
                            add(
                                &metrics.delivery_to_http_endpoint_bytes,
                                chunk.iter().map(|c| c.len() as u64).sum(),
                            );
                            add(&metrics.delivery_to_http_endpoint_success, 1);
                        }
                        HttpOutcome::PayloadTooLarge { attempts } => {
                            tracing::warn!(delivery_stream = %self.arn, attempts, n_records = chunk.len(), "the HTTP endpoint answered 413: the records are not retried");
                        }
                        HttpOutcome::Failed { attempts, message } => {
                            tracing::warn!(delivery_stream = %self.arn, attempts, %message, "HTTP endpoint delivery failed for the whole retry duration; records go to the S3 error output");
                            let lines = failed_http_records(items, attempts, &message, self.now());
                            let failed = Buffer {
                                bytes: lines.iter().map(|l| l.data.len()).sum(),
                                first_offset: buffer.first_offset,
                                oldest_arrival_ms: buffer.oldest_arrival_ms,
                                items: lines,
                            };
                            if !self
                                .write_error_object(s3, HTTP_ENDPOINT_FAILED, &failed)
                                .await
                            {
                                return false;
                            }
                        }
                    }
                }
                if endpoint.backup_all {
                    let prefix = self.evaluate_prefix(s3, buffer.oldest_arrival_ms);
                    let data = concat(buffer);
                    if !self
                        .write_object(s3, &prefix, buffer.oldest_arrival_ms, &data, s3.compression)
                        .await
                    {
                        return false;
                    }
                    add(
                        &self.entry.metrics.backup_to_s3_records,
                        buffer.items.len() as u64,
                    );
                }
                true
            }
            Destination::Postgres { database, s3, .. } => {
                // Stage the batch in S3 first, as Firehose does; then load it.
                let prefix = self.evaluate_prefix(s3, buffer.oldest_arrival_ms);
                let data = concat(buffer);
                let Some(staged) = self
                    .write_object_named(
                        s3,
                        &prefix,
                        buffer.oldest_arrival_ms,
                        &data,
                        s3.compression,
                    )
                    .await
                else {
                    return false;
                };
                let records: Vec<Bytes> = buffer.items.iter().map(|i| i.data.clone()).collect();
                let deadline = self.now().saturating_add(database.retry_ms);
                let mut attempt = 0u32;
                loop {
                    attempt += 1;
                    let result = tokio::select! {
                        result = crate::redshift::load(database, &records) => result,
                        () = self.entry.stop.cancelled() => return false,
                    };
                    match result {
                        Ok(rows) => {
                            let metrics = &self.entry.metrics;
                            add(&metrics.delivery_to_redshift_records, rows);
                            add(&metrics.delivery_to_redshift_bytes, data.len() as u64);
                            add(&metrics.delivery_to_redshift_success, 1);
                            return true;
                        }
                        Err(error) => {
                            let wait =
                                (LOAD_RETRY_FIRST_MS << attempt.min(16)).min(LOAD_RETRY_MAX_MS);
                            if self.now().saturating_add(wait) > deadline {
                                tracing::warn!(delivery_stream = %self.arn, %error, attempts = attempt, "loading into PostgreSQL failed for the whole retry duration; the batch's manifest goes to errors/");
                                return self
                                    .write_manifest(s3, &staged, buffer.oldest_arrival_ms)
                                    .await;
                            }
                            tracing::debug!(delivery_stream = %self.arn, %error, "loading into PostgreSQL failed; retrying");
                            if !sleep_on_clock(&self.inner.clock, wait, &self.entry.stop).await {
                                return false;
                            }
                        }
                    }
                }
            }
        }
    }

    /// The manifest of a batch that could not be loaded, under `<prefix>errors/manifests/`.
    async fn write_manifest(&mut self, s3: &S3Target, staged_key: &str, arrival_ms: i64) -> bool {
        let manifest = serde_json::json!({
            "entries": [{ "url": format!("s3://{}/{}", s3.bucket, staged_key), "mandatory": true }]
        });
        let Ok(template) =
            crate::prefix::PrefixTemplate::parse(&format!("{}errors/manifests/", s3.raw_prefix))
        else {
            return true;
        };
        let target = S3Target {
            prefix: template.with_default_time(),
            extension: String::new(),
            ..s3.clone()
        };
        let prefix = self.evaluate_prefix(&target, arrival_ms);
        let data = serde_json::to_vec(&manifest).unwrap_or_default();
        self.write_object(
            &target,
            &prefix,
            arrival_ms,
            &data,
            CompressionFormat::Uncompressed,
        )
        .await
    }

    async fn write_error_object(&mut self, target: &S3Target, kind: &str, buffer: &Buffer) -> bool {
        let time = prefix::zoned(buffer.oldest_arrival_ms, &target.zone);
        let empty = BTreeMap::new();
        let prefix = target
            .error_prefix
            .evaluate(&PrefixValues {
                time: &time,
                error_output_type: Some(kind),
                query_keys: &empty,
                lambda_keys: &empty,
            })
            .unwrap_or_default();
        let data = concat(buffer);
        let target = S3Target {
            extension: String::new(),
            ..target.clone()
        };
        self.write_object(
            &target,
            &prefix,
            buffer.oldest_arrival_ms,
            &data,
            CompressionFormat::Uncompressed,
        )
        .await
    }

    async fn write_object(
        &mut self,
        target: &S3Target,
        prefix: &str,
        arrival_ms: i64,
        data: &[u8],
        compression: CompressionFormat,
    ) -> bool {
        self.write_object_named(target, prefix, arrival_ms, data, compression)
            .await
            .is_some()
    }

    /// Writes one object, retrying until it is written; its key, or `None` if the task
    /// stopped first.
    async fn write_object_named(
        &mut self,
        target: &S3Target,
        prefix: &str,
        arrival_ms: i64,
        data: &[u8],
        compression: CompressionFormat,
    ) -> Option<String> {
        let record = self.entry.record();
        let time = prefix::zoned(arrival_ms, &target.zone);
        let suffix = prefix::object_suffix(&record.name, record.version_id, &time);
        let key = format!("{prefix}{suffix}{}", target.extension);
        let body = match crate::compress::compress(compression, data, &suffix) {
            Ok(body) => Bytes::from(body),
            Err(error) => {
                tracing::error!(delivery_stream = %self.arn, %error, "cannot compress an object; writing it uncompressed");
                Bytes::copy_from_slice(data)
            }
        };
        let mut wait = STORE_RETRY_FIRST_MS;
        loop {
            let put = tokio::select! {
                put = self.inner.buckets.put(&target.bucket, &key, body.clone()) => put,
                () = self.entry.stop.cancelled() => return None,
            };
            match put {
                Ok(()) => {
                    add(&self.entry.metrics.delivery_to_s3_object_count, 1);
                    tracing::debug!(delivery_stream = %self.arn, bucket = %target.bucket, %key, bytes = body.len(), "object written");
                    return Some(key);
                }
                Err(error) => {
                    tracing::warn!(delivery_stream = %self.arn, bucket = %target.bucket, %key, %error, retry_ms = wait, "cannot write an object; retrying");
                    if !sleep_on_clock(&self.inner.clock, wait, &self.entry.stop).await {
                        return None;
                    }
                    wait = (wait * 2).min(STORE_RETRY_MAX_MS);
                }
            }
        }
    }

    /// Persists how far delivery got, and trims log segments that are wholly delivered.
    async fn checkpoint(&mut self) {
        let mut low = self.read_offset;
        let mut oldest_arrival = self.last_read_arrival_ms;
        for item in &self.pending {
            low = low.min(item.offset);
            oldest_arrival =
                Some(oldest_arrival.map_or(item.arrival_ms, |o| o.min(item.arrival_ms)));
        }
        for buffer in self.buffers.values() {
            low = low.min(buffer.first_offset);
            oldest_arrival = Some(oldest_arrival.map_or(buffer.oldest_arrival_ms, |o| {
                o.min(buffer.oldest_arrival_ms)
            }));
        }
        if low > self.checkpoint_saved {
            let key = self.entry.key.clone();
            let saved = self
                .inner
                .catalog
                .write(|txn| -> Result<(), DeliveryError> {
                    let mut checkpoint: DeliveryCheckpointRecord = txn
                        .get(Table::DeliveryCheckpoints, &key)?
                        .unwrap_or_default();
                    checkpoint.delivered_offset = low;
                    txn.put(Table::DeliveryCheckpoints, &key, &checkpoint)?;
                    Ok(())
                });
            match saved {
                Ok(()) => {
                    self.checkpoint_saved = low;
                    self.entry.delivered_offset.store(low, Ordering::Relaxed);
                }
                Err(error) => {
                    tracing::error!(delivery_stream = %self.arn, %error, "cannot save the delivery checkpoint");
                }
            }
        }
        let now = self.now();
        if let Some(before) = oldest_arrival
            && now - self.last_trim_ms >= TRIM_INTERVAL_MS
        {
            self.last_trim_ms = now;
            let log = self.inner.log.clone();
            let log_id = self.log_id;
            let holds: Vec<u64> = self.entry.holds.lock().offsets.values().copied().collect();
            let trimmed = tokio::task::spawn_blocking(move || {
                let before = crate::readers::trim_point(&log, log_id, before, &holds, now)?;
                log.trim_before(log_id, before)
            })
            .await;
            if let Ok(Err(error)) = trimmed {
                tracing::warn!(delivery_stream = %self.arn, %error, "cannot trim delivered records from the log");
            }
        }
    }
}

fn concat(buffer: &Buffer) -> Vec<u8> {
    let mut data = Vec::with_capacity(buffer.bytes);
    for item in &buffer.items {
        data.extend_from_slice(&item.data);
    }
    data
}

/// Where error objects go: the S3 destination, or the S3 configuration of the others.
fn error_target(plan: &Plan) -> &S3Target {
    match &plan.destination {
        Destination::S3 { target, .. } => target,
        Destination::Http { s3, .. } => s3,
        Destination::Postgres { s3, .. } => s3,
    }
}

fn backup_target(plan: &Plan) -> Option<&S3Target> {
    match &plan.destination {
        Destination::S3 { backup, .. } => backup.as_ref(),
        Destination::Postgres { backup, .. } => backup.as_ref(),
        Destination::Http { .. } => None,
    }
}

fn failed_http_records(
    items: &[Buffered],
    attempts: u32,
    message: &str,
    now_ms: i64,
) -> Vec<Buffered> {
    items
        .iter()
        .map(|item| {
            let mut extra = serde_json::Map::new();
            extra.insert("subsequenceNumber".into(), 0.into());
            extra.insert("dataId".into(), format!("{}.0", item.offset).into());
            Buffered {
                offset: item.offset,
                arrival_ms: item.arrival_ms,
                data: ErrorRecord {
                    attempts_made: attempts,
                    arrival_ms: item.arrival_ms,
                    error_code: "HttpEndpoint.DestinationException",
                    error_message: message,
                    attempt_ending_ms: now_ms,
                    raw_data: &item.data,
                    extra,
                    last_error_names: false,
                }
                .to_json_line(),
            }
        })
        .collect()
}
