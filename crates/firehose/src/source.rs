//! A Kinesis data stream as the source of a delivery stream.
//!
//! The reader calls the Data Streams service in-process, through its public API
//! (`Streams::handle` with ListShards, GetShardIterator, GetRecords), as a consumer would.
//! Each shard is read from the delivery stream's creation time (`AT_TIMESTAMP`, which AWS
//! reports as `DeliveryStartTimestamp`; records put before it are not delivered, as with
//! LATEST), or after the last sequence number copied. A child shard is read only once its
//! parents are finished, so records of one partition key keep their order across a split or
//! merge. Records are copied into the delivery stream's own log (one append per GetRecords,
//! carrying shard, partition key and sequence number for the transformation contract) and
//! the shard's position is saved in the same catalog record as the delivery checkpoint:
//! after a crash the reader resumes after the saved position, so a record copied but not yet
//! checkpointed is copied again (at-least-once).
//!
//! A shard is read again at once while it has a backlog, else every
//! `source_poll_interval_ms` (AWS: once per second per shard). Throttling backs off.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use millrace_catalog::Table;
use millrace_catalog::model::{DeliveryCheckpointRecord, SourceShardCheckpoint};
use millrace_log::AppendRecord;
use millrace_streams::RequestContext;
use millrace_wire::EpochMillis;
use millrace_wire::kinesis as k;

use crate::envelope::{self, KinesisOrigin};
use crate::error::DeliveryError;
use crate::metrics::add;
use crate::{Entry, Inner};

/// Records asked for per GetRecords.
const GET_RECORDS_LIMIT: i32 = 10_000;
/// How often the shard list is refreshed (new shards after resharding).
const LIST_SHARDS_INTERVAL_MS: u64 = 5_000;
/// Backoff after throttling or an unavailable stream.
const ERROR_BACKOFF_MS: u64 = 1_000;
/// Pages of ListShards read at most per refresh.
const LIST_SHARDS_PAGES_MAX: usize = 100;

struct ShardState {
    parents: Vec<String>,
    iterator: Option<String>,
    checkpoint: SourceShardCheckpoint,
}

pub(crate) async fn run(inner: Arc<Inner>, entry: Arc<Entry>) {
    let record = entry.record();
    let Some(stream_arn) = record.source_stream_arn.clone() else {
        return;
    };
    let Some((account, region)) = crate::control::source_account_region(&stream_arn) else {
        return;
    };
    let ctx = RequestContext {
        account,
        region,
        request_id: format!("firehose-source-{}", record.name),
        principal: None,
    };
    let saved: DeliveryCheckpointRecord = inner
        .catalog
        .get(Table::DeliveryCheckpoints, &entry.key)
        .ok()
        .flatten()
        .unwrap_or_default();
    let mut reader = Reader {
        inner,
        entry,
        ctx,
        stream_arn,
        start_ms: record.created_ms,
        log_id: record.log_id,
        shards: saved
            .shards
            .into_iter()
            .map(|(id, checkpoint)| {
                (
                    id,
                    ShardState {
                        parents: Vec::new(),
                        iterator: None,
                        checkpoint,
                    },
                )
            })
            .collect(),
        last_list: None,
    };
    reader.run().await;
}

struct Reader {
    inner: Arc<Inner>,
    entry: Arc<Entry>,
    ctx: RequestContext,
    stream_arn: String,
    start_ms: i64,
    log_id: u64,
    shards: BTreeMap<String, ShardState>,
    last_list: Option<std::time::Instant>,
}

impl Reader {
    async fn run(&mut self) {
        loop {
            if self.entry.stop.is_cancelled() {
                return;
            }
            let due = self
                .last_list
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(LIST_SHARDS_INTERVAL_MS));
            if due {
                self.last_list = Some(std::time::Instant::now());
                if let Err(error) = self.list_shards().await {
                    tracing::debug!(source = %self.stream_arn, %error, "cannot list the source's shards");
                }
            }
            let backlogged = self.poll_shards().await;
            let wait = if backlogged {
                0
            } else {
                self.inner.config.source_poll_interval_ms
            };
            if wait > 0 {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(wait)) => {}
                    () = self.entry.stop.cancelled() => return,
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
        // Shards gone from the listing (past retention) are forgotten.
        self.shards.retain(|id, _| listed.contains_key(id));
        for (id, parents) in listed {
            let state = self.shards.entry(id).or_insert_with(|| ShardState {
                parents: Vec::new(),
                iterator: None,
                checkpoint: SourceShardCheckpoint::default(),
            });
            state.parents = parents;
        }
        Ok(())
    }

    /// Reads every shard that is ready once; true if some shard has more to read right away.
    async fn poll_shards(&mut self) -> bool {
        let delivered = self.entry.delivered_offset.load(Ordering::Relaxed);
        let end = self
            .inner
            .log
            .bounds(self.log_id)
            .map(|b| b.end_offset)
            .unwrap_or(0);
        if end.saturating_sub(delivered) > self.inner.config.backlog_records_max {
            // Delivery is behind: the source waits (its own retention keeps the records).
            return false;
        }
        let ready: Vec<String> = self
            .shards
            .iter()
            .filter(|(_, s)| !s.checkpoint.finished)
            .filter(|(_, s)| {
                s.parents.iter().all(|parent| {
                    self.shards
                        .get(parent)
                        .is_none_or(|p| p.checkpoint.finished)
                })
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut backlogged = false;
        for shard_id in ready {
            if self.entry.stop.is_cancelled() {
                return false;
            }
            match self.poll_shard(&shard_id).await {
                Ok(more) => backlogged |= more,
                Err(error) => {
                    tracing::debug!(source = %self.stream_arn, shard = %shard_id, %error, "reading the source failed");
                    tokio::time::sleep(Duration::from_millis(ERROR_BACKOFF_MS)).await;
                }
            }
        }
        backlogged
    }

    async fn iterator(&self, shard_id: &str, state: &ShardState) -> Result<String, DeliveryError> {
        let (iterator_type, sequence, timestamp) = match &state.checkpoint.after_sequence_number {
            Some(sequence) => (
                k::ShardIteratorType::AfterSequenceNumber,
                Some(sequence.clone()),
                None,
            ),
            None => (
                k::ShardIteratorType::AtTimestamp,
                None,
                Some(EpochMillis(self.start_ms)),
            ),
        };
        let input = k::GetShardIteratorInput {
            dry_run: None,
            shard_id: shard_id.to_string(),
            shard_iterator_type: iterator_type,
            starting_sequence_number: sequence,
            stream_arn: Some(self.stream_arn.clone()),
            stream_id: None,
            stream_name: None,
            timestamp,
        };
        let response = match self.call(k::Request::GetShardIterator(input)).await {
            Ok(response) => response,
            Err(error) if state.checkpoint.after_sequence_number.is_some() => {
                // The saved position is gone (retention): start at the oldest record left.
                tracing::warn!(source = %self.stream_arn, shard = %shard_id, %error, "cannot resume after the saved position; reading from TRIM_HORIZON");
                let input = k::GetShardIteratorInput {
                    dry_run: None,
                    shard_id: shard_id.to_string(),
                    shard_iterator_type: k::ShardIteratorType::TrimHorizon,
                    starting_sequence_number: None,
                    stream_arn: Some(self.stream_arn.clone()),
                    stream_id: None,
                    stream_name: None,
                    timestamp: None,
                };
                self.call(k::Request::GetShardIterator(input))
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
                if matches!(error, millrace_streams::Error::ThroughputExceeded { .. }) {
                    add(&self.entry.metrics.throttled_get_records, 1);
                }
                return Err(DeliveryError::Source(error.to_string()));
            }
        };
        let shard_index = shard_id
            .rsplit('-')
            .next()
            .and_then(|d| d.parse::<u32>().ok())
            .unwrap_or(0);
        let last_sequence = output.records.last().map(|r| r.sequence_number.clone());
        if !output.records.is_empty() {
            let mut bytes = 0u64;
            let appends: Vec<AppendRecord> = output
                .records
                .iter()
                .map(|r| {
                    bytes += r.data.len() as u64;
                    let origin = KinesisOrigin {
                        shard_index,
                        arrival_ms: r.approximate_arrival_timestamp.map(|t| t.0).unwrap_or(0),
                        partition_key: r.partition_key.clone().unwrap_or_default(),
                        sequence_number: r.sequence_number.clone(),
                    };
                    AppendRecord {
                        log_id: self.log_id,
                        payload: envelope::encode_kinesis(&origin, &r.data),
                    }
                })
                .collect();
            self.inner.log.append(appends).await?;
            add(
                &self.entry.metrics.data_read_from_kinesis_stream_records,
                output.records.len() as u64,
            );
            add(
                &self.entry.metrics.data_read_from_kinesis_stream_bytes,
                bytes,
            );
            add(
                &self.entry.metrics.incoming_records,
                output.records.len() as u64,
            );
            add(&self.entry.metrics.incoming_bytes, bytes);
        }
        let finished = output.next_shard_iterator.is_none();
        let Some(state) = self.shards.get_mut(shard_id) else {
            return Ok(false);
        };
        state.iterator = output.next_shard_iterator.clone();
        let changed = last_sequence.is_some() || finished;
        if let Some(sequence) = last_sequence {
            state.checkpoint.after_sequence_number = Some(sequence);
        }
        if finished {
            state.checkpoint.finished = true;
            // The children become readable: list again soon.
            self.last_list = None;
        }
        if changed {
            let checkpoint = state.checkpoint.clone();
            let key = self.entry.key.clone();
            let shard_id = shard_id.to_string();
            self.inner
                .catalog
                .write(|txn| -> Result<(), DeliveryError> {
                    let mut record: DeliveryCheckpointRecord = txn
                        .get(Table::DeliveryCheckpoints, &key)?
                        .unwrap_or_default();
                    record.shards.insert(shard_id, checkpoint);
                    txn.put(Table::DeliveryCheckpoints, &key, &record)?;
                    Ok(())
                })?;
        }
        Ok(!finished && output.millis_behind_latest.unwrap_or(0) > 0)
    }
}
