//! Channel delivery: a Kinesis stream copied continuously into S3 objects or Apache Iceberg
//! tables, with no consumer to run.
//!
//! The control plane is the `streams` crate's (`streams::channels`). Here a supervisor
//! looks at the channel records every `SUPERVISE_INTERVAL_MS` and keeps one task per live
//! channel (ACTIVE or UPDATING): it starts tasks for new channels, hands changed settings
//! (freshness, logging) to running ones, and stops those whose channel is deleting or gone.
//!
//! A task reads every shard of the stream through `Streams::handle` (ListShards,
//! GetShardIterator, GetRecords) as any consumer would: from the channel's creation time
//! (`AT_TIMESTAMP`; AWS: "no backfill"), or after the last sequence number delivered. A
//! child shard is read once its parents are read to their end. Records are buffered in
//! memory, at most `BUFFER_BYTES_MAX`; the buffer is flushed when it holds
//! `FLUSH_BYTES` or its oldest record has waited `DataFreshnessInSeconds` on the injected
//! clock. A flush writes one object (S3: the records in their own format, newline-delimited
//! for JSON and STRING, compressed as asked) or one snapshot per table (`iceberg`), and
//! then commits the shard positions (and the tables' state) to `ChannelCheckpoints` in one
//! catalog transaction. Only then is the buffer dropped: after a crash the task re-reads
//! from the committed positions, so delivery is at-least-once for objects and effectively
//! once for Iceberg tables (the uncommitted metadata version is written again).
//!
//! A failed flush is logged and retried after `ERROR_BACKOFF_MS` with the same buffer (no
//! new reads while it is full). With `LoggingConfiguration.CloudWatchLogs.Enabled`, every
//! delivery and every failure is logged with the log group and stream names, at INFO and
//! WARN; without it only failures are, at DEBUG after the first.
//!
//! Not here: the dead-letter bucket (nothing a channel writes can fail per record: records
//! are stored as they came), encryption of objects with the channel's KMS key (the object
//! store's own encryption applies), Glue Schema Registry formats.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use millrace_catalog::Table;
use millrace_catalog::model::{ChannelCheckpointRecord, SourceShardCheckpoint, Status};
use millrace_streams::RequestContext;
use millrace_streams::channels::ChannelView;
use millrace_wire::EpochMillis;
use millrace_wire::kinesis as k;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Inner;
use crate::error::DeliveryError;
use crate::iceberg::{self, TableState, TableTarget};

/// How often the supervisor looks at the channel records.
const SUPERVISE_INTERVAL_MS: u64 = 500;
/// A buffer this large is flushed at once, whatever its age.
const FLUSH_BYTES: usize = 64 * 1024 * 1024;
/// No more reads while the buffer holds this much (a failing destination).
const BUFFER_BYTES_MAX: usize = 128 * 1024 * 1024;
const _: () = assert!(FLUSH_BYTES <= BUFFER_BYTES_MAX);
/// Records asked for per GetRecords.
const GET_RECORDS_LIMIT: i32 = 10_000;
/// How often the shard list is refreshed (new shards after resharding).
const LIST_SHARDS_INTERVAL_MS: u64 = 5_000;
/// Backoff after a failed read or flush.
const ERROR_BACKOFF_MS: u64 = 1_000;
/// Pages of ListShards read at most per refresh.
const LIST_SHARDS_PAGES_MAX: usize = 100;

/// Runs until `shutdown`: one delivery task per live channel.
pub(crate) async fn supervise(
    inner: Arc<Inner>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let mut running: HashMap<String, (CancellationToken, watch::Sender<ChannelView>)> =
        HashMap::new();
    loop {
        match inner.streams.channels() {
            Ok(channels) => {
                let mut live = HashSet::new();
                for channel in channels {
                    if !matches!(channel.status, Status::Active | Status::Updating) {
                        continue;
                    }
                    live.insert(channel.channel_id.clone());
                    match running.get(&channel.channel_id) {
                        Some((_, sender)) => {
                            sender.send_if_modified(|current| {
                                let changed = current.description != channel.description;
                                *current = channel.clone();
                                changed
                            });
                        }
                        None => {
                            let stop = shutdown.child_token();
                            let (sender, receiver) = watch::channel(channel.clone());
                            tracker.spawn(run(inner.clone(), receiver, stop.clone()));
                            running.insert(channel.channel_id.clone(), (stop, sender));
                        }
                    }
                }
                running.retain(|id, (stop, _)| {
                    let keep = live.contains(id);
                    if !keep {
                        stop.cancel();
                    }
                    keep
                });
            }
            Err(error) => tracing::error!(%error, "cannot read the channels"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(SUPERVISE_INTERVAL_MS)) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

struct ShardState {
    parents: Vec<String>,
    iterator: Option<String>,
    /// Delivered and committed.
    committed: SourceShardCheckpoint,
    /// Read into the buffer (committed by the next flush).
    read: SourceShardCheckpoint,
}

struct Buffered {
    shard_id: String,
    sequence_number: String,
    partition_key: String,
    arrival_ms: i64,
    data: Bytes,
}

struct Task {
    inner: Arc<Inner>,
    view: watch::Receiver<ChannelView>,
    stop: CancellationToken,
    ctx: RequestContext,
    stream_arn: String,
    start_ms: i64,
    shards: BTreeMap<String, ShardState>,
    last_list: Option<std::time::Instant>,
    buffer: Vec<Buffered>,
    buffer_bytes: usize,
    /// When the oldest buffered record was read (injected clock).
    buffered_since_ms: Option<i64>,
    /// Iceberg tables' state by table key, as committed.
    tables: BTreeMap<String, TableState>,
    failures: u64,
}

async fn run(inner: Arc<Inner>, view: watch::Receiver<ChannelView>, stop: CancellationToken) {
    let channel = view.borrow().clone();
    let Some(stream) = channel.description.stream_configuration_list.first() else {
        return;
    };
    let saved: ChannelCheckpointRecord = match inner
        .catalog
        .get(Table::ChannelCheckpoints, &channel.channel_id)
    {
        Ok(saved) => saved.unwrap_or_default(),
        Err(error) => {
            tracing::error!(channel = %channel.name, %error, "cannot read the channel's checkpoint");
            return;
        }
    };
    let tables = saved
        .destinations
        .iter()
        .filter_map(|(key, json)| {
            serde_json::from_str::<TableState>(json)
                .ok()
                .map(|state| (key.clone(), state))
        })
        .collect();
    let mut task = Task {
        ctx: RequestContext {
            account: channel.account.clone(),
            region: channel.region.clone(),
            request_id: format!("channel-{}", channel.name),
            principal: None,
        },
        stream_arn: stream.stream_arn.clone(),
        start_ms: channel.created_ms,
        shards: saved
            .shards
            .into_iter()
            .map(|(id, checkpoint)| {
                (
                    id,
                    ShardState {
                        parents: Vec::new(),
                        iterator: None,
                        committed: checkpoint.clone(),
                        read: checkpoint,
                    },
                )
            })
            .collect(),
        inner,
        view,
        stop,
        last_list: None,
        buffer: Vec::new(),
        buffer_bytes: 0,
        buffered_since_ms: None,
        tables,
        failures: 0,
    };
    tracing::info!(channel = %channel.name, stream = %task.stream_arn, "channel delivery started");
    task.run().await;
}

impl Task {
    fn channel(&self) -> ChannelView {
        self.view.borrow().clone()
    }

    fn freshness_ms(&self) -> i64 {
        let view = self.view.borrow();
        let d = &view.description;
        let secs = d
            .s3_destination_configuration
            .as_ref()
            .map(|s| s.data_freshness_in_seconds)
            .or_else(|| {
                d.s3_tables_destination_configuration
                    .as_ref()
                    .map(|s| s.data_freshness_in_seconds)
            })
            .unwrap_or(millrace_streams::channels::DATA_FRESHNESS_SECS_DEFAULT);
        i64::from(secs) * 1000
    }

    /// CloudWatch Logs settings when enabled: (group, stream).
    fn logging(&self) -> Option<(String, String)> {
        let view = self.view.borrow();
        let logs = &view.description.logging_configuration.cloud_watch_logs;
        logs.enabled.then(|| {
            (
                logs.log_group_name.clone().unwrap_or_default(),
                logs.log_stream_name.clone().unwrap_or_default(),
            )
        })
    }

    async fn run(&mut self) {
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            let due = self
                .last_list
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(LIST_SHARDS_INTERVAL_MS));
            if due {
                self.last_list = Some(std::time::Instant::now());
                if let Err(error) = self.list_shards().await {
                    tracing::debug!(stream = %self.stream_arn, %error, "channel cannot list the stream's shards");
                }
            }
            let backlogged = if self.buffer_bytes < BUFFER_BYTES_MAX {
                self.poll_shards().await
            } else {
                false
            };
            let now = self.inner.now_ms();
            let aged = self
                .buffered_since_ms
                .is_some_and(|since| now - since >= self.freshness_ms());
            let positions_moved = self
                .shards
                .values()
                .any(|s| s.read.finished != s.committed.finished);
            let mut wait_ms = if backlogged {
                0
            } else {
                self.inner.config.source_poll_interval_ms
            };
            if self.buffer_bytes >= FLUSH_BYTES
                || aged
                || (self.buffer.is_empty() && positions_moved)
            {
                if let Err(error) = self.flush(now).await {
                    self.failures += 1;
                    let channel = self.channel();
                    match self.logging() {
                        Some((group, stream)) => tracing::warn!(
                            channel = %channel.name, log_group = %group, log_stream = %stream,
                            %error, "channel delivery failed; retrying"),
                        None if self.failures == 1 => tracing::warn!(
                            channel = %channel.name, %error, "channel delivery failed; retrying"),
                        None => tracing::debug!(
                            channel = %channel.name, %error, "channel delivery failed; retrying"),
                    }
                    wait_ms = ERROR_BACKOFF_MS;
                } else {
                    self.failures = 0;
                }
            }
            if wait_ms > 0 {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
                    () = self.stop.cancelled() => return,
                }
            }
        }
    }

    async fn call(&self, request: k::Request) -> Result<k::Response, millrace_streams::Error> {
        self.inner.streams.handle(&self.ctx, request).await
    }

    async fn list_shards(&mut self) -> Result<(), DeliveryError> {
        let mut listed: HashMap<String, Vec<String>> = HashMap::new();
        let mut next_token: Option<String> = None;
        for _ in 0..LIST_SHARDS_PAGES_MAX {
            let input = match &next_token {
                Some(token) => k::ListShardsInput {
                    next_token: Some(token.clone()),
                    ..Default::default()
                },
                None => k::ListShardsInput {
                    stream_arn: Some(self.stream_arn.clone()),
                    ..Default::default()
                },
            };
            let response = self
                .call(k::Request::ListShards(input))
                .await
                .map_err(|e| DeliveryError::Source(e.to_string()))?;
            let k::Response::ListShards(output) = response else {
                return Err(DeliveryError::Source("unexpected ListShards answer".into()));
            };
            for shard in output.shards.unwrap_or_default() {
                let parents = shard
                    .parent_shard_id
                    .into_iter()
                    .chain(shard.adjacent_parent_shard_id)
                    .collect();
                listed.insert(shard.shard_id, parents);
            }
            next_token = output.next_token;
            if next_token.is_none() {
                break;
            }
        }
        // Shards gone from the listing (past retention) are forgotten once nothing of
        // theirs waits in the buffer.
        let buffered: HashSet<&str> = self.buffer.iter().map(|b| b.shard_id.as_str()).collect();
        self.shards
            .retain(|id, _| listed.contains_key(id) || buffered.contains(id.as_str()));
        for (id, parents) in listed {
            let state = self.shards.entry(id).or_insert_with(|| ShardState {
                parents: Vec::new(),
                iterator: None,
                committed: SourceShardCheckpoint::default(),
                read: SourceShardCheckpoint::default(),
            });
            state.parents = parents;
        }
        Ok(())
    }

    /// Reads every shard that is ready once; true if some shard has more right away.
    async fn poll_shards(&mut self) -> bool {
        let ready: Vec<String> = self
            .shards
            .iter()
            .filter(|(_, s)| !s.read.finished)
            .filter(|(_, s)| {
                s.parents
                    .iter()
                    .all(|parent| self.shards.get(parent).is_none_or(|p| p.read.finished))
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut backlogged = false;
        for shard_id in ready {
            if self.stop.is_cancelled() || self.buffer_bytes >= BUFFER_BYTES_MAX {
                return false;
            }
            match self.poll_shard(&shard_id).await {
                Ok(more) => backlogged |= more,
                Err(error) => {
                    tracing::debug!(stream = %self.stream_arn, shard = %shard_id, %error, "channel read failed");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(ERROR_BACKOFF_MS)) => {}
                        () = self.stop.cancelled() => return false,
                    }
                }
            }
        }
        backlogged
    }

    async fn iterator(&self, shard_id: &str, state: &ShardState) -> Result<String, DeliveryError> {
        let iterator_input = |kind, sequence, timestamp| k::GetShardIteratorInput {
            dry_run: None,
            shard_id: shard_id.to_string(),
            shard_iterator_type: kind,
            starting_sequence_number: sequence,
            stream_arn: Some(self.stream_arn.clone()),
            stream_id: None,
            stream_name: None,
            timestamp,
        };
        let input = match &state.read.after_sequence_number {
            Some(sequence) => iterator_input(
                k::ShardIteratorType::AfterSequenceNumber,
                Some(sequence.clone()),
                None,
            ),
            None => iterator_input(
                k::ShardIteratorType::AtTimestamp,
                None,
                Some(EpochMillis(self.start_ms)),
            ),
        };
        let response = match self.call(k::Request::GetShardIterator(input)).await {
            Ok(response) => response,
            Err(error) if state.read.after_sequence_number.is_some() => {
                // The saved position is gone (retention): start at the oldest record left.
                tracing::warn!(stream = %self.stream_arn, shard = %shard_id, %error,
                    "channel cannot resume after the saved position; reading from TRIM_HORIZON");
                self.call(k::Request::GetShardIterator(iterator_input(
                    k::ShardIteratorType::TrimHorizon,
                    None,
                    None,
                )))
                .await
                .map_err(|e| DeliveryError::Source(e.to_string()))?
            }
            Err(error) => return Err(DeliveryError::Source(error.to_string())),
        };
        match response {
            k::Response::GetShardIterator(output) => output
                .shard_iterator
                .ok_or_else(|| DeliveryError::Source("no shard iterator".into())),
            _ => Err(DeliveryError::Source(
                "unexpected GetShardIterator answer".into(),
            )),
        }
    }

    /// One GetRecords on a shard; true if it is behind the tip.
    async fn poll_shard(&mut self, shard_id: &str) -> Result<bool, DeliveryError> {
        let Some(state) = self.shards.get(shard_id) else {
            return Ok(false);
        };
        let iterator = match &state.iterator {
            Some(iterator) => iterator.clone(),
            None => self.iterator(shard_id, state).await?,
        };
        let input = k::GetRecordsInput {
            limit: Some(GET_RECORDS_LIMIT),
            shard_iterator: iterator,
            stream_arn: Some(self.stream_arn.clone()),
            ..Default::default()
        };
        let output = match self.call(k::Request::GetRecords(input)).await {
            Ok(k::Response::GetRecords(output)) => output,
            Ok(_) => return Err(DeliveryError::Source("unexpected GetRecords answer".into())),
            Err(error) => {
                if let Some(state) = self.shards.get_mut(shard_id) {
                    state.iterator = None;
                }
                return Err(DeliveryError::Source(error.to_string()));
            }
        };
        let last_sequence = output.records.last().map(|r| r.sequence_number.clone());
        if !output.records.is_empty() && self.buffered_since_ms.is_none() {
            self.buffered_since_ms = Some(self.inner.now_ms());
        }
        for record in output.records {
            self.buffer_bytes += record.data.len();
            self.buffer.push(Buffered {
                shard_id: shard_id.to_string(),
                sequence_number: record.sequence_number,
                partition_key: record.partition_key.unwrap_or_default(),
                arrival_ms: record.approximate_arrival_timestamp.map_or(0, |t| t.0),
                data: record.data,
            });
        }
        let finished = output.next_shard_iterator.is_none();
        let Some(state) = self.shards.get_mut(shard_id) else {
            return Ok(false);
        };
        state.iterator = output.next_shard_iterator;
        if let Some(sequence) = last_sequence {
            state.read.after_sequence_number = Some(sequence);
        }
        if finished {
            state.read.finished = true;
            // The children become readable: list again soon.
            self.last_list = None;
        }
        Ok(!finished && output.millis_behind_latest.unwrap_or(0) > 0)
    }

    /// Writes the buffer to the destination, then commits the positions read.
    async fn flush(&mut self, now_ms: i64) -> Result<(), DeliveryError> {
        let channel = self.channel();
        let record_format = channel
            .description
            .stream_configuration_list
            .first()
            .map_or(k::RecordFormatType::ByteArray, |s| {
                s.record_configuration.record_format_type
            });
        let mut tables = self.tables.clone();
        let mut written = Vec::new();
        if !self.buffer.is_empty() {
            if let Some(s3) = &channel.description.s3_destination_configuration {
                written.push(self.write_object(&channel, s3, record_format).await?);
            }
            if let Some(config) = &channel.description.s3_tables_destination_configuration {
                let rows: Vec<iceberg::Row<'_>> = self
                    .buffer
                    .iter()
                    .map(|b| iceberg::Row {
                        partition_key: &b.partition_key,
                        sequence_number: &b.sequence_number,
                        arrival_ms: b.arrival_ms,
                        shard_id: &b.shard_id,
                        data: &b.data,
                    })
                    .collect();
                for table in &config.s3_tables_configuration_list {
                    let mut target = table_target(table, record_format)?;
                    target.bucket_url = self.inner.buckets.bucket_url(&target.bucket);
                    let key = format!("{}/{}/{}", target.bucket, target.namespace, target.name);
                    let state = tables.get(&key).cloned().unwrap_or_default();
                    let next = iceberg::append(&self.inner.buckets, &target, &state, &rows, now_ms)
                        .await?;
                    written.push(iceberg::metadata_location(&target, next.metadata_version));
                    tables.insert(key, next);
                }
            }
        }
        let mut checkpoint = ChannelCheckpointRecord::default();
        for (id, state) in &self.shards {
            checkpoint.shards.insert(id.clone(), state.read.clone());
        }
        for (key, state) in &tables {
            let json = serde_json::to_string(state)
                .map_err(|e| DeliveryError::Store(format!("table state: {e}")))?;
            checkpoint.destinations.insert(key.clone(), json);
        }
        let channel_id = channel.channel_id.clone();
        let channel_key = channel.key.clone();
        self.inner
            .catalog
            .write(|txn| -> Result<(), DeliveryError> {
                // A channel deleted meanwhile keeps no checkpoint.
                if txn
                    .get::<serde_json::Value>(Table::Channels, &channel_key)?
                    .is_some()
                {
                    txn.put(Table::ChannelCheckpoints, &channel_id, &checkpoint)?;
                }
                Ok(())
            })?;
        let n_records = self.buffer.len();
        if let Some((group, stream)) = self.logging()
            && n_records > 0
        {
            tracing::info!(channel = %channel.name, log_group = %group, log_stream = %stream,
                n_records, objects = ?written, "channel delivered");
        }
        for state in self.shards.values_mut() {
            state.committed = state.read.clone();
        }
        self.tables = tables;
        self.buffer.clear();
        self.buffer_bytes = 0;
        self.buffered_since_ms = None;
        Ok(())
    }

    async fn write_object(
        &self,
        channel: &ChannelView,
        s3: &k::S3DestinationDescription,
        record_format: k::RecordFormatType,
    ) -> Result<String, DeliveryError> {
        let storage = &s3.storage_configuration;
        let bucket = crate::store::bucket_of_arn(&storage.bucket_arn)
            .ok_or_else(|| DeliveryError::Store(format!("bad bucket {}", storage.bucket_arn)))?;
        let mut body = Vec::with_capacity(self.buffer_bytes + self.buffer.len());
        for record in &self.buffer {
            body.extend_from_slice(&record.data);
            let text = !matches!(record_format, k::RecordFormatType::ByteArray);
            if text && !record.data.ends_with(b"\n") {
                body.push(b'\n');
            }
        }
        let (body, extension) = match storage.compression_type {
            k::S3CompressionType::None => (body, ""),
            k::S3CompressionType::Gzip => (
                crate::compress::gzip(&body)
                    .map_err(|e| DeliveryError::Store(format!("gzip: {e}")))?,
                ".gz",
            ),
            k::S3CompressionType::Zstd => (
                zstd::bulk::compress(&body, 0)
                    .map_err(|e| DeliveryError::Store(format!("zstd: {e}")))?,
                ".zst",
            ),
        };
        let oldest_ms = self.buffer.iter().map(|b| b.arrival_ms).min().unwrap_or(0);
        let key = object_key(
            storage.output_key_template.as_deref(),
            &channel.name,
            oldest_ms,
            extension,
        );
        self.inner
            .buckets
            .put(bucket, &key, Bytes::from(body))
            .await?;
        Ok(format!("s3://{bucket}/{key}"))
    }
}

fn table_target(
    table: &k::S3TablesConfiguration,
    record_format: k::RecordFormatType,
) -> Result<TableTarget, DeliveryError> {
    let bucket = table
        .table_bucket_arn
        .rsplit_once(":bucket/")
        .map(|(_, name)| name.to_string())
        .ok_or_else(|| {
            DeliveryError::Store(format!("bad table bucket {}", table.table_bucket_arn))
        })?;
    let hourly = table.partition_spec.as_ref().is_some_and(|spec| {
        spec.partition_fields.iter().any(|f| {
            f.transform == k::PartitionTransform::TimeHour
                && f.source_name == "approximate_arrival_timestamp"
        })
    });
    Ok(TableTarget {
        bucket_url: String::new(),
        bucket,
        namespace: table.namespace.clone(),
        name: table.table_name.clone(),
        compression: table.compression_type.as_str().to_string(),
        hourly,
        data_is_text: !matches!(record_format, k::RecordFormatType::ByteArray),
    })
}

/// The object key: the template with `{timestamp:FORMAT}` expanded (FORMAT's `yyyy`, `MM`,
/// `dd`, `HH`, `mm`, `ss` from the oldest record's arrival time, UTC), then
/// `<channel>-yyyy-MM-dd-HH-mm-ss-<uuid><extension>`. Without a template the prefix is
/// `yyyy/MM/dd/HH/`, as Firehose's default.
pub fn object_key(
    template: Option<&str>,
    channel: &str,
    oldest_ms: i64,
    extension: &str,
) -> String {
    let time = crate::prefix::zoned(oldest_ms, &jiff::tz::TimeZone::UTC);
    let format_time = |format: &str| {
        format
            .replace("yyyy", &format!("{:04}", time.year()))
            .replace("MM", &format!("{:02}", time.month()))
            .replace("dd", &format!("{:02}", time.day()))
            .replace("HH", &format!("{:02}", time.hour()))
            .replace("mm", &format!("{:02}", time.minute()))
            .replace("ss", &format!("{:02}", time.second()))
    };
    let template =
        template.unwrap_or("{timestamp:yyyy}/{timestamp:MM}/{timestamp:dd}/{timestamp:HH}/");
    let mut prefix = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{timestamp:") {
        prefix.push_str(&rest[..start]);
        let after = &rest[start + "{timestamp:".len()..];
        match after.find('}') {
            Some(end) => {
                prefix.push_str(&format_time(&after[..end]));
                rest = &after[end + 1..];
            }
            None => {
                prefix.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    prefix.push_str(rest);
    format!(
        "{prefix}{channel}-{}-{}{extension}",
        format_time("yyyy-MM-dd-HH-mm-ss"),
        uuid::Uuid::new_v4()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys() {
        // 2026-11-27T10:05:09Z
        let ms = 1_795_773_909_000;
        let key = object_key(None, "c", ms, ".gz");
        assert!(
            key.starts_with("2026/11/27/10/c-2026-11-27-10-05-09-"),
            "{key}"
        );
        assert!(key.ends_with(".gz"));
        let key = object_key(Some("events/day={timestamp:yyyy-MM-dd}/"), "c", ms, "");
        assert!(key.starts_with("events/day=2026-11-27/c-"), "{key}");
        let key = object_key(Some("raw/{timestamp:yyyy"), "c", ms, "");
        assert!(key.starts_with("raw/{timestamp:yyyyc-"), "{key}");
    }
}
