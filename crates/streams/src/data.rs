//! The data plane: PutRecord, PutRecords, GetShardIterator and GetRecords.
//!
//! A PutRecords call is routed and admitted record by record (hash key, size, per-shard
//! throughput), then every admitted record goes to the log in one append, which returns
//! once the group commit holding it is on disk. Records a shard's limits refuse get a
//! per-record ProvisionedThroughputExceededException, as on AWS.

use std::sync::Arc;

use bytes::Bytes;
use millrace_catalog::model::{ShardRecord, Status};
use millrace_log::AppendRecord;
use millrace_wire::EpochMillis;
use millrace_wire::kinesis as k;

use crate::control::{shard_epoch_secs, wire_shard};
use crate::iterator::IteratorToken;
use crate::throttle::ShardLimits;
use crate::{
    Error, Inner, OpenShard, RequestContext, StreamEntry, StreamView, codec, hashing,
    parse_shard_id, seqnum, shard_id, stream_key, timefmt,
};

/// PutRecords: total size of a request, data plus partition keys (10 MiB since the
/// large-records launch).
pub const PUT_RECORDS_BYTES_MAX: usize = 10 * 1024 * 1024;
/// GetRecords returns at most this many bytes of data.
pub const GET_RECORDS_BYTES_MAX: usize = 10 * 1024 * 1024;
pub const GET_RECORDS_LIMIT_DEFAULT: usize = 10_000;

/// Bytes written to a shard in the current measuring window (for on-demand scaling).
#[derive(Clone, Copy, Debug, Default)]
pub struct ShardLoad {
    pub window_start_ms: i64,
    pub bytes: u64,
    /// Since when the shard has been over the split threshold, if it is.
    pub hot_since_ms: Option<i64>,
}

/// One record on its way in.
struct Incoming {
    partition_key: Option<String>,
    data: Bytes,
    explicit_hash_key: Option<String>,
}

/// What became of one record of a put.
enum Outcome {
    Appended { shard: OpenShard, batch_idx: usize },
    Throttled { shard: OpenShard },
}

fn dry_run_error() -> Error {
    Error::DryRun {
        message: "Request would have succeeded, but DryRun flag is set.".to_string(),
    }
}

impl Inner {
    /// A stream that accepts reads and writes: visible and neither CREATING nor DELETING.
    pub(crate) fn find_usable_stream(
        &self,
        ctx: &RequestContext,
        name: Option<&str>,
        arn: Option<&str>,
    ) -> Result<Arc<StreamEntry>, Error> {
        let entry = self.find_stream(ctx, name, arn)?;
        let view = entry.view();
        match view.record.lifecycle.at(self.now_ms()) {
            Status::Active | Status::Updating => Ok(entry),
            Status::Creating | Status::Deleting => Err(Error::StreamNotFound {
                name: view.record.name.clone(),
                account: view.record.account.clone(),
            }),
        }
    }

    fn hash_key_for(&self, record: &Incoming, auto: bool) -> Result<u128, Error> {
        if auto {
            // AUTO distribution: partition key and ExplicitHashKey are ignored for
            // placement; a uniformly random point of the key space spreads records evenly.
            return Ok(rand::RngExt::random::<u128>(&mut *self.rng.lock()));
        }
        match (&record.explicit_hash_key, &record.partition_key) {
            (Some(text), _) => hashing::parse_hash_key(text).ok_or_else(|| {
                Error::invalid(format!(
                    "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, {}]. \
                     Specified value was {text}",
                    u128::MAX
                ))
            }),
            (None, Some(key)) => Ok(hashing::partition_key_hash(key)),
            // Without a partition key (allowed by the newest model for streams that
            // distribute records themselves) pick a random point of the key space.
            (None, None) => Err(Error::Validation {
                message: "1 validation error detected: Value null at 'partitionKey' failed to \
                          satisfy constraint: Member must not be null (the stream uses the \
                          USER_PARTITION_KEY record distribution strategy)"
                    .to_string(),
            }),
        }
    }

    /// Routes, checks and appends a batch; the heart of PutRecord and PutRecords.
    async fn put(
        &self,
        entry: &StreamEntry,
        records: Vec<Incoming>,
        dry_run: bool,
    ) -> Result<
        (
            Arc<StreamView>,
            Vec<Result<(OpenShard, u64, i64), OpenShard>>,
            bool,
        ),
        Error,
    > {
        let total: usize = records
            .iter()
            .map(|r| r.data.len() + r.partition_key.as_ref().map_or(0, String::len))
            .sum();
        if total > PUT_RECORDS_BYTES_MAX {
            return Err(Error::invalid(format!(
                "Records size exceeds {} MiB limit. Request size: {total} bytes.",
                PUT_RECORDS_BYTES_MAX / (1024 * 1024)
            )));
        }
        // Shared gate: no reshard can close a shard between routing and the append.
        let _gate = entry.gate.read().await;
        let view = entry.view();
        let record_bytes_max = view.record.max_record_size_kib as usize * 1024;
        let encrypted = view.record.encryption.is_some();
        // Encryption at rest (crypto.rs): the stream's master key must exist and be enabled
        // before anything is admitted.
        let master_key_id = match &view.record.encryption {
            Some(e) => Some(self.crypto.resolve(
                &e.key_id,
                &view.record.account,
                &view.record.region,
            )?),
            None => None,
        };
        let now = self.now_ms();
        let auto = view.record.mode == millrace_catalog::model::StreamMode::OnDemand
            && view.record.record_distribution_strategy.as_deref() == Some("AUTO");
        let mut routed = Vec::with_capacity(records.len());
        for record in &records {
            let size = record.data.len() + record.partition_key.as_ref().map_or(0, String::len);
            if size > record_bytes_max {
                return Err(Error::Validation {
                    message: format!(
                        "1 validation error detected: Value at 'data' failed to satisfy \
                         constraint: Member must have length less than or equal to {} (the \
                         maximum record size of stream {} is {} KiB)",
                        record_bytes_max, view.record.name, view.record.max_record_size_kib
                    ),
                });
            }
            let hash_key = self.hash_key_for(record, auto)?;
            let shard = view.route(hash_key).ok_or_else(|| {
                // Open shards always tile the key space; reaching this is a bug.
                Error::invalid(format!("No open shard owns hash key {hash_key}."))
            })?;
            routed.push((shard, size));
        }
        if dry_run {
            return Err(dry_run_error());
        }
        // Admission against the per-shard limits, in request order.
        let mut outcomes = Vec::with_capacity(records.len());
        let mut batch = Vec::with_capacity(records.len());
        // Every payload of the batch in one allocation (codec::encode_in).
        let mut payloads = bytes::BytesMut::with_capacity(
            records
                .iter()
                .map(|r| codec::encoded_len(r.partition_key.as_deref(), &r.data))
                .sum(),
        );
        {
            let mut limits = entry.limits.lock();
            let mut load = entry.load.lock();
            for ((shard, size), record) in routed.iter().zip(&records) {
                let admitted = !self.config.enforce_shard_throughput
                    || limits
                        .entry(shard.index)
                        .or_insert_with(|| ShardLimits::new(now))
                        .admit_write(now, *size);
                if admitted {
                    let l = load.entry(shard.index).or_default();
                    l.bytes += *size as u64;
                    outcomes.push(Outcome::Appended {
                        shard: *shard,
                        batch_idx: batch.len(),
                    });
                    batch.push(AppendRecord {
                        log_id: shard.log_id,
                        payload: codec::encode_in(
                            &mut payloads,
                            record.partition_key.as_deref(),
                            &record.data,
                            encrypted,
                        ),
                    });
                } else {
                    outcomes.push(Outcome::Throttled { shard: *shard });
                }
            }
        }
        if let Some(master_key_id) = &master_key_id {
            // No plaintext of an encrypted stream reaches the log.
            self.crypto.seal_batch(
                &mut batch,
                master_key_id,
                &view.record.account,
                &view.record.region,
                now,
            )?;
        }
        let appended = if batch.is_empty() {
            Vec::new()
        } else {
            self.log.append(batch).await?
        };
        let results = outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Outcome::Appended { shard, batch_idx } => match appended.get(batch_idx) {
                    Some(a) => Ok((shard, a.offset, a.timestamp_ms)),
                    None => Err(shard),
                },
                Outcome::Throttled { shard } => Err(shard),
            })
            .collect();
        Ok((view, results, encrypted))
    }

    pub(crate) fn sequence_number(
        view: &StreamView,
        index: u32,
        offset: u64,
        timestamp_ms: i64,
    ) -> String {
        // Sequence index = log offset + 1: index 0 is the shard's starting sequence number,
        // which no record has, so AFTER_SEQUENCE_NUMBER of it starts at the first record.
        Self::sequence_number_at_index(view, index, offset.saturating_add(1), timestamp_ms)
    }

    pub(crate) fn sequence_number_at_index(
        view: &StreamView,
        index: u32,
        seq_index: u64,
        timestamp_ms: i64,
    ) -> String {
        let epoch = view.shard(index).map(shard_epoch_secs).unwrap_or(0);
        seqnum::encode(seqnum::SeqParts {
            shard_epoch_secs: epoch,
            shard_index: index,
            offset: seq_index,
            arrival_secs: u64::try_from(timestamp_ms / 1000).unwrap_or(0),
        })
    }

    fn throttle_message(view: &StreamView, index: u32) -> String {
        format!(
            "Rate exceeded for shard {} in stream {} under account {}.",
            shard_id(index),
            view.record.name,
            view.record.account
        )
    }

    pub(crate) async fn put_record(
        &self,
        ctx: &RequestContext,
        input: k::PutRecordInput,
    ) -> Result<k::PutRecordOutput, Error> {
        let entry = self.find_usable_stream(
            ctx,
            input.stream_name.as_deref(),
            input.stream_arn.as_deref(),
        )?;
        let incoming = vec![Incoming {
            partition_key: input.partition_key,
            data: input.data,
            explicit_hash_key: input.explicit_hash_key,
        }];
        let (view, results, encrypted) = self
            .put(&entry, incoming, input.dry_run.unwrap_or(false))
            .await?;
        match results.into_iter().next() {
            Some(Ok((shard, offset, timestamp_ms))) => Ok(k::PutRecordOutput {
                shard_id: shard_id(shard.index),
                sequence_number: Self::sequence_number(&view, shard.index, offset, timestamp_ms),
                encryption_type: Some(encryption_type(encrypted)),
            }),
            Some(Err(shard)) => Err(Error::ThroughputExceeded {
                message: Self::throttle_message(&view, shard.index),
            }),
            None => Err(Error::invalid("Empty PutRecord result.")),
        }
    }

    pub(crate) async fn put_records(
        &self,
        ctx: &RequestContext,
        input: k::PutRecordsInput,
    ) -> Result<k::PutRecordsOutput, Error> {
        let entry = self.find_usable_stream(
            ctx,
            input.stream_name.as_deref(),
            input.stream_arn.as_deref(),
        )?;
        let incoming = input
            .records
            .into_iter()
            .map(|r| Incoming {
                partition_key: r.partition_key,
                data: r.data,
                explicit_hash_key: r.explicit_hash_key,
            })
            .collect();
        let (view, results, encrypted) = self
            .put(&entry, incoming, input.dry_run.unwrap_or(false))
            .await?;
        let mut failed = 0;
        let records = results
            .into_iter()
            .map(|result| match result {
                Ok((shard, offset, timestamp_ms)) => k::PutRecordsResultEntry {
                    sequence_number: Some(Self::sequence_number(
                        &view,
                        shard.index,
                        offset,
                        timestamp_ms,
                    )),
                    shard_id: Some(shard_id(shard.index)),
                    error_code: None,
                    error_message: None,
                },
                Err(shard) => {
                    failed += 1;
                    k::PutRecordsResultEntry {
                        sequence_number: None,
                        shard_id: None,
                        error_code: Some("ProvisionedThroughputExceededException".to_string()),
                        error_message: Some(Self::throttle_message(&view, shard.index)),
                    }
                }
            })
            .collect();
        Ok(k::PutRecordsOutput {
            failed_record_count: Some(failed),
            records,
            encryption_type: Some(encryption_type(encrypted)),
        })
    }

    pub(crate) fn get_shard_iterator(
        &self,
        ctx: &RequestContext,
        input: k::GetShardIteratorInput,
    ) -> Result<k::GetShardIteratorOutput, Error> {
        let entry = self.find_usable_stream(
            ctx,
            input.stream_name.as_deref(),
            input.stream_arn.as_deref(),
        )?;
        let view = entry.view();
        let record = &view.record;
        let shard = parse_shard_id(&input.shard_id)
            .and_then(|index| view.shard(index))
            .ok_or_else(|| Error::ResourceNotFound {
                message: format!(
                    "Shard {} in stream {} under account {} does not exist",
                    input.shard_id, record.name, record.account
                ),
            })?;
        let offset = self.starting_offset(
            &view,
            shard,
            input.shard_iterator_type,
            input.starting_sequence_number.as_deref(),
            input.timestamp,
            "GetShardIterator",
        )?;
        if input.dry_run.unwrap_or(false) {
            return Err(dry_run_error());
        }
        let token = IteratorToken {
            stream_name: record.name.clone(),
            stream_id: record.stream_id.clone(),
            shard_index: shard.index,
            offset,
            issued_ms: self.now_ms(),
        };
        Ok(k::GetShardIteratorOutput {
            shard_iterator: Some(token.encode(&self.secret)),
        })
    }

    /// Where an iterator (or a subscription) of the given type starts in a shard.
    pub(crate) fn starting_offset(
        &self,
        view: &StreamView,
        shard: &ShardRecord,
        kind: k::ShardIteratorType,
        sequence_number: Option<&str>,
        timestamp: Option<EpochMillis>,
        operation: &str,
    ) -> Result<u64, Error> {
        let record = &view.record;
        let id = shard_id(shard.index);
        let both = "Must either specify (1) AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER and \
                    StartingSequenceNumber or (2) TRIM_HORIZON or LATEST and no \
                    StartingSequenceNumber.";
        let bounds = self.log.bounds(shard.log_id)?;
        let end = shard.closed.map_or(bounds.end_offset, |c| c.end_offset);
        let offset = match kind {
            k::ShardIteratorType::AtSequenceNumber | k::ShardIteratorType::AfterSequenceNumber => {
                let Some(text) = sequence_number else {
                    return Err(Error::invalid(format!(
                        "{both} Request specified {} and no StartingSequenceNumber.",
                        kind.as_str()
                    )));
                };
                let parts = seqnum::decode(text).ok_or_else(|| {
                    Error::invalid(format!(
                        "StartingSequenceNumber {text} used in {operation} on shard {id} in \
                         stream {} under account {} is invalid.",
                        record.name, record.account
                    ))
                })?;
                if parts.shard_index != shard.index {
                    return Err(Error::invalid(format!(
                        "Invalid StartingSequenceNumber. It encodes {}, while it was used in a \
                         call to a shard with {id}",
                        shard_id(parts.shard_index)
                    )));
                }
                if parts.shard_epoch_secs != shard_epoch_secs(shard) {
                    return Err(Error::invalid(format!(
                        "StartingSequenceNumber {text} used in {operation} on shard {id} in \
                         stream {} under account {} is invalid because it did not come from \
                         this stream.",
                        record.name, record.account
                    )));
                }
                // The sequence index is the log offset + 1 (see `sequence_number`).
                if kind == k::ShardIteratorType::AtSequenceNumber {
                    parts.offset.saturating_sub(1)
                } else {
                    parts.offset
                }
            }
            k::ShardIteratorType::TrimHorizon | k::ShardIteratorType::Latest => {
                if sequence_number.is_some() {
                    return Err(Error::invalid(format!(
                        "{both} Request specified {} and also a StartingSequenceNumber.",
                        kind.as_str()
                    )));
                }
                if kind == k::ShardIteratorType::TrimHorizon {
                    bounds.start_offset
                } else {
                    end
                }
            }
            k::ShardIteratorType::AtTimestamp => {
                let Some(timestamp) = timestamp else {
                    return Err(Error::invalid(
                        "Must specify timestampInMillis parameter for iterator of type \
                         AT_TIMESTAMP. Current request has no timestamp parameter.",
                    ));
                };
                let now = self.now_ms();
                if timestamp.0 > now {
                    return Err(Error::invalid(format!(
                        "The timestampInMillis parameter cannot be greater than the \
                         currentTimestampInMillis. timestampInMillis: {}, \
                         currentTimestampInMillis: {now}",
                        timestamp.0
                    )));
                }
                self.log.offset_at_timestamp(shard.log_id, timestamp.0)?
            }
        };
        Ok(offset.min(end).max(bounds.start_offset.min(end)))
    }

    pub(crate) fn get_records(
        &self,
        ctx: &RequestContext,
        input: k::GetRecordsInput,
    ) -> Result<k::GetRecordsOutput, Error> {
        let token = IteratorToken::decode(&input.shard_iterator, &self.secret)
            .ok_or_else(|| Error::invalid("Invalid ShardIterator."))?;
        let now = self.now_ms();
        if now - token.issued_ms > self.config.iterator_ttl_ms {
            return Err(Error::ExpiredIterator {
                message: format!(
                    "Iterator expired. The iterator was created at time {} while right now it \
                     is {} which is further in the future than the tolerated delay of {} \
                     milliseconds.",
                    timefmt::java_date(token.issued_ms),
                    timefmt::java_date(now),
                    self.config.iterator_ttl_ms
                ),
            });
        }
        let missing = || Error::ResourceNotFound {
            message: format!(
                "Shard {} in stream {} under account {} does not exist",
                shard_id(token.shard_index),
                token.stream_name,
                ctx.account
            ),
        };
        let key = stream_key(&ctx.account, &ctx.region, &token.stream_name);
        let entry = self
            .registry
            .read()
            .get(&key)
            .cloned()
            .ok_or_else(missing)?;
        let view = entry.view();
        if view.record.stream_id != token.stream_id || !crate::stream_exists(&view.record, now) {
            return Err(missing());
        }
        if input.dry_run.unwrap_or(false) {
            return Err(dry_run_error());
        }
        let shard = view.shard(token.shard_index).ok_or_else(missing)?.clone();
        if self.config.enforce_shard_throughput {
            let mut limits = entry.limits.lock();
            let l = limits
                .entry(shard.index)
                .or_insert_with(|| ShardLimits::new(now));
            if !(l.read_calls.has_tokens(now) && l.read_bytes.has_tokens(now)) {
                return Err(Error::ThroughputExceeded {
                    message: Self::throttle_message(&view, shard.index),
                });
            }
            l.read_calls.take(1.0);
        }
        let limit = input
            .limit
            .map(|l| l as usize)
            .unwrap_or(GET_RECORDS_LIMIT_DEFAULT);
        let batch = self.read_batch(&view, &shard, token.offset, limit, now)?;
        if self.config.enforce_shard_throughput
            && let Some(l) = entry.limits.lock().get_mut(&shard.index)
        {
            l.read_bytes.take(batch.bytes as f64);
        }
        let next_shard_iterator = if batch.shard_ended {
            None
        } else {
            Some(
                IteratorToken {
                    offset: batch.next_offset,
                    issued_ms: now,
                    ..token
                }
                .encode(&self.secret),
            )
        };
        Ok(k::GetRecordsOutput {
            records: batch.records,
            next_shard_iterator,
            millis_behind_latest: Some(batch.millis_behind_latest),
            child_shards: batch.child_shards,
        })
    }

    /// Reads records of a shard from `offset`, shaped for GetRecords and SubscribeToShard.
    pub(crate) fn read_batch(
        &self,
        view: &StreamView,
        shard: &ShardRecord,
        offset: u64,
        limit: usize,
        now: i64,
    ) -> Result<ReadBatch, Error> {
        let end_of_shard = shard.closed.map(|c| c.end_offset);
        let result = self
            .log
            .read(shard.log_id, offset, limit, GET_RECORDS_BYTES_MAX)?;
        let mut records = Vec::with_capacity(result.records.len());
        let mut bytes = 0usize;
        let mut last_timestamp = None;
        let mut next_offset = result.next_offset;
        for stored in result.records {
            if end_of_shard.is_some_and(|end| stored.offset >= end) {
                next_offset = stored.offset;
                break;
            }
            let payload = self
                .crypto
                .open(shard.log_id, stored.offset, &stored.payload)?;
            let Some(decoded) = codec::decode(&payload) else {
                // Not a record this service wrote: refuse to serve it.
                return Err(Error::CorruptRecord {
                    log_id: shard.log_id,
                    offset: stored.offset,
                });
            };
            bytes += decoded.data.len();
            last_timestamp = Some(stored.timestamp_ms);
            records.push(k::Record {
                sequence_number: Self::sequence_number(
                    view,
                    shard.index,
                    stored.offset,
                    stored.timestamp_ms,
                ),
                approximate_arrival_timestamp: Some(EpochMillis(stored.timestamp_ms)),
                data: decoded.data,
                partition_key: decoded.partition_key,
                encryption_type: Some(encryption_type(decoded.encrypted)),
            });
        }
        let end = end_of_shard
            .unwrap_or(result.end_offset)
            .min(result.end_offset);
        let caught_up = next_offset >= end;
        let shard_ended = end_of_shard.is_some_and(|e| next_offset >= e);
        let millis_behind_latest = if caught_up {
            0
        } else {
            last_timestamp.map_or(0, |t| (now - t).max(0))
        };
        let child_shards = shard_ended.then(|| {
            view.record
                .shards
                .iter()
                .filter(|s| s.parent == Some(shard.index) || s.adjacent_parent == Some(shard.index))
                .map(|child| {
                    let wire = wire_shard(&view.record, child);
                    k::ChildShard {
                        shard_id: wire.shard_id,
                        parent_shards: [child.parent, child.adjacent_parent]
                            .into_iter()
                            .flatten()
                            .map(shard_id)
                            .collect(),
                        hash_key_range: wire.hash_key_range,
                    }
                })
                .collect()
        });
        Ok(ReadBatch {
            records,
            bytes,
            next_offset,
            millis_behind_latest,
            shard_ended,
            child_shards,
        })
    }
}

pub(crate) struct ReadBatch {
    pub records: Vec<k::Record>,
    pub bytes: usize,
    pub next_offset: u64,
    pub millis_behind_latest: i64,
    pub shard_ended: bool,
    pub child_shards: Option<Vec<k::ChildShard>>,
}

fn encryption_type(encrypted: bool) -> k::EncryptionType {
    if encrypted {
        k::EncryptionType::Kms
    } else {
        k::EncryptionType::None
    }
}
