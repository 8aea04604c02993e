//! Stream queues (the 2026 Kinesis additions): competing consumers on an on-demand stream,
//! with visibility timeouts, receive counts and built-in dead-letter handling.
//!
//! A queue's configuration is a `QueueRecord` inside its stream's catalog record, so the
//! registered-consumer limit (queues and enhanced fan-out consumers together) and "no
//! stream deletion while queues exist" are checked in the stream's own transaction. Its
//! delivery state is a [`state::DeliveryState`] in memory, made durable as events appended
//! to a log of its own (`millrace_log`, group-committed with every other append) on top of
//! a snapshot in the catalog (`QueueStateRecord`):
//!
//! - a receive leases records in memory, appends the lease events and answers only once
//!   they are on disk; an acknowledgement appends first and changes memory after, so an
//!   acknowledgement that was answered is on disk and an acknowledged record is never
//!   delivered again, after a crash either;
//! - start-up replays snapshot + log through the same `DeliveryState::apply`;
//! - housekeeping snapshots a queue whose log holds `SNAPSHOT_EVENTS_MIN` events into the
//!   catalog and starts a fresh log (then deletes the old one), so replay stays short;
//!   the queue's `gate` keeps appends out while it does.
//!
//! Records are not delivered in order (as documented); any record may be in flight to any
//! worker, whatever its partition key. A shard's records are handed out only once every
//! parent shard (that is still retained) has had all its records received, as KCL reads
//! parents before children. Records trimmed by retention leave the queue.
//!
//! `delivery.rs` holds the data plane (receive, acknowledge, visibility, dead letters);
//! `state.rs` the index and byte layouts; `receipt.rs` the receipt handles.
//!
//! Not here: channels (another part of the issue), CloudWatch metrics.

mod delivery;
pub mod receipt;
pub mod state;

pub(crate) use delivery::split_results;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use millrace_catalog::Table;
use millrace_catalog::model::{
    Lifecycle, QueueRecord, QueueStateRecord, Status, StreamMode, StreamRecord,
};
use millrace_log::Log;
use millrace_wire::EpochMillis;
use millrace_wire::kinesis as k;
use parking_lot::Mutex;

use crate::control::{TAGS_PER_STREAM_MAX, check_tags, decode_next_token, encode_next_token};
use crate::{Error, Inner, RequestContext, StreamEntry, Tags, stream_arn, stream_exists};
use state::DeliveryState;

/// Visibility timeout of a queue created without one.
pub const VISIBILITY_TIMEOUT_SECS_DEFAULT: u32 = 30;
/// MaxReceiveCount of a queue created without a DeadLetterConfiguration.
pub const MAX_RECEIVE_COUNT_DEFAULT: u32 = 6;
/// Queues in CREATING or DELETING at once per account and region (AWS's quota).
pub const QUEUES_CHANGING_MAX: usize = 5;
/// A queue whose log holds this many events is snapshotted by housekeeping.
pub const SNAPSHOT_EVENTS_MIN: u64 = 50_000;
const LIST_QUEUES_LIMIT_DEFAULT: usize = 100;
/// Events read per log read during recovery.
const REPLAY_READ_RECORDS_MAX: usize = 10_000;
const REPLAY_READ_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The runtime side of one queue: its delivery index and where its events go.
pub(crate) struct QueueRuntime {
    pub queue_id: String,
    pub account: String,
    pub region: String,
    /// Registry key of the stream (`account/region/name`).
    pub stream_key: String,
    pub state: Mutex<DeliveryState>,
    /// The log receiving this queue's events (changes at each snapshot).
    pub log_id: AtomicU64,
    pub events_since_snapshot: AtomicU64,
    /// Held shared by every change (state change + append), exclusively by a snapshot.
    pub gate: tokio::sync::RwLock<()>,
    /// Woken when records may have become visible (visibility set to 0, restore,
    /// acknowledgements freeing capacity); new stream records wake receivers through the
    /// shard logs' watch channels.
    pub notify: tokio::sync::Notify,
    /// Where the next receive starts looking for new records (round robin over shards).
    pub next_shard_idx: AtomicU64,
    /// Receives waiting (long polling) on this queue now.
    pub waiters: std::sync::atomic::AtomicUsize,
}

impl QueueRuntime {
    fn new(
        queue_id: String,
        record: &StreamRecord,
        stream_key: String,
        log_id: u64,
        state: DeliveryState,
    ) -> QueueRuntime {
        QueueRuntime {
            queue_id,
            account: record.account.clone(),
            region: record.region.clone(),
            stream_key,
            state: Mutex::new(state),
            log_id: AtomicU64::new(log_id),
            events_since_snapshot: AtomicU64::new(0),
            gate: tokio::sync::RwLock::new(()),
            notify: tokio::sync::Notify::new(),
            next_shard_idx: AtomicU64::new(0),
            waiters: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

pub(crate) fn queue_arn(record: &StreamRecord, queue: &QueueRecord) -> String {
    format!(
        "arn:aws:kinesis:{}:{}:queue/{}",
        record.region, record.account, queue.queue_id
    )
}

/// `arn:aws:kinesis:REGION:ACCOUNT:queue/ID` → (account, region, id).
pub(crate) fn parse_queue_arn(arn: &str) -> Option<(String, String, String)> {
    let mut parts = arn.splitn(6, ':');
    let (_arn, _partition, service, region, account, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let id = resource.strip_prefix("queue/")?;
    if service != "kinesis" || id.is_empty() || id.contains('/') {
        return None;
    }
    Some((account.to_string(), region.to_string(), id.to_string()))
}

/// Still visible at all: a DELETING queue vanishes at the end of its delay.
pub(crate) fn queue_exists(queue: &QueueRecord, now_ms: i64) -> bool {
    !(queue.lifecycle.status == Status::Deleting && now_ms >= queue.lifecycle.until_ms)
}

fn wire_status(status: Status) -> k::QueueStatus {
    match status {
        Status::Creating => k::QueueStatus::Creating,
        Status::Active => k::QueueStatus::Active,
        Status::Updating => k::QueueStatus::Updating,
        Status::Deleting => k::QueueStatus::Deleting,
    }
}

fn queue_not_found(arn: &str, account: &str) -> Error {
    Error::ResourceNotFound {
        message: format!("Queue {arn} under account {account} not found."),
    }
}

fn validation(field: &str, constraint: &str) -> Error {
    Error::Validation {
        message: format!(
            "1 validation error detected: Value at '{field}' failed to satisfy constraint: \
             {constraint}"
        ),
    }
}

/// (visibility timeout, max receive count) from QueueAttributes over the current values.
fn apply_attributes(
    attributes: Option<&k::QueueAttributes>,
    visibility_timeout_secs: u32,
    max_receive_count: Option<u32>,
) -> Result<(u32, Option<u32>), Error> {
    let Some(attributes) = attributes else {
        return Ok((visibility_timeout_secs, max_receive_count));
    };
    let visibility = attributes
        .visibility_timeout_seconds
        .map_or(visibility_timeout_secs, |v| u32::try_from(v).unwrap_or(0));
    let max = match &attributes.dead_letter_configuration {
        None => max_receive_count,
        Some(config) => match config.target_type {
            k::TargetType::None => None,
            k::TargetType::BuiltIn => match config.max_receive_count {
                Some(n) => Some(u32::try_from(n).unwrap_or(1)),
                None => {
                    return Err(validation(
                        "queueAttributes.deadLetterConfiguration.maxReceiveCount",
                        "Member must not be null when TargetType is BUILT_IN",
                    ));
                }
            },
        },
    };
    Ok((visibility, max))
}

impl Inner {
    /// A queue by ARN: its stream, its configuration and its runtime.
    pub(crate) fn find_queue(
        &self,
        ctx: &RequestContext,
        arn: &str,
    ) -> Result<(Arc<StreamEntry>, QueueRecord, Arc<QueueRuntime>), Error> {
        let not_found = || queue_not_found(arn, &ctx.account);
        let (account, region, id) = parse_queue_arn(arn).ok_or_else(not_found)?;
        let runtime = self.queues.read().get(&id).cloned().ok_or_else(not_found)?;
        if runtime.account != account || runtime.region != region {
            return Err(not_found());
        }
        let entry = self
            .registry
            .read()
            .get(&runtime.stream_key)
            .cloned()
            .ok_or_else(not_found)?;
        let now = self.now_ms();
        let queue = entry
            .view()
            .record
            .queues
            .iter()
            .find(|q| q.queue_id == id && queue_exists(q, now))
            .cloned()
            .ok_or_else(not_found)?;
        Ok((entry, queue, runtime))
    }

    fn describe(
        &self,
        record: &StreamRecord,
        queue: &QueueRecord,
        status: Status,
    ) -> k::QueueDescription {
        let kind = k::QueueStartingPositionType::from_str_opt(&queue.starting_position)
            .unwrap_or(k::QueueStartingPositionType::Latest);
        // While CREATING the position echoes the request; after, the effective time.
        let timestamp = match status {
            Status::Creating => queue.starting_timestamp_ms.map(EpochMillis),
            _ => Some(EpochMillis(queue.effective_start_ms)),
        };
        k::QueueDescription {
            queue_name: queue.name.clone(),
            queue_arn: queue_arn(record, queue),
            queue_status: wire_status(status),
            queue_creation_timestamp: EpochMillis(queue.created_ms),
            stream_configuration_list: vec![k::QueueStreamConfiguration {
                stream_arn: stream_arn(record),
                starting_position: Some(k::QueueStartingPosition {
                    type_: kind,
                    timestamp,
                }),
            }],
            queue_attributes: Some(k::QueueAttributes {
                visibility_timeout_seconds: Some(queue.visibility_timeout_secs as i32),
                dead_letter_configuration: Some(match queue.max_receive_count {
                    Some(n) => k::DeadLetterConfiguration {
                        target_type: k::TargetType::BuiltIn,
                        max_receive_count: Some(n as i32),
                    },
                    None => k::DeadLetterConfiguration {
                        target_type: k::TargetType::None,
                        max_receive_count: None,
                    },
                }),
            }),
        }
    }

    /// Every live queue of an account and region (stream record, queue).
    fn queues_of(&self, account: &str, region: &str, now: i64) -> Vec<(StreamRecord, QueueRecord)> {
        let entries: Vec<Arc<StreamEntry>> = self.registry.read().values().cloned().collect();
        let mut out = Vec::new();
        for entry in entries {
            let view = entry.view();
            if view.record.account != account
                || view.record.region != region
                || !stream_exists(&view.record, now)
            {
                continue;
            }
            for queue in view.record.queues.iter().filter(|q| queue_exists(q, now)) {
                out.push((view.record.clone(), queue.clone()));
            }
        }
        out
    }

    fn lifecycle_after(&self, status: Status, delay_ms: i64, now: i64, then: Status) -> Lifecycle {
        if delay_ms > 0 {
            Lifecycle {
                status,
                until_ms: now + delay_ms,
                then,
            }
        } else {
            Lifecycle::steady(then)
        }
    }

    pub(crate) fn create_queue(
        &self,
        ctx: &RequestContext,
        input: k::CreateQueueInput,
    ) -> Result<k::CreateQueueOutput, Error> {
        let [config] = input.stream_configuration_list.as_slice() else {
            return Err(validation(
                "streamConfigurationList",
                "Member must have length less than or equal to 1",
            ));
        };
        let position = config
            .starting_position
            .clone()
            .unwrap_or(k::QueueStartingPosition {
                type_: k::QueueStartingPositionType::Latest,
                timestamp: None,
            });
        match (position.type_, position.timestamp) {
            (k::QueueStartingPositionType::AtTimestamp, None) => {
                return Err(validation(
                    "streamConfigurationList.1.member.startingPosition.timestamp",
                    "Member must not be null when Type is AT_TIMESTAMP",
                ));
            }
            (k::QueueStartingPositionType::AtTimestamp, Some(_)) | (_, None) => {}
            (kind, Some(_)) => {
                return Err(validation(
                    "streamConfigurationList.1.member.startingPosition.timestamp",
                    &format!("Member must be null when Type is {}", kind.as_str()),
                ));
            }
        }
        let (visibility_timeout_secs, max_receive_count) = apply_attributes(
            input.queue_attributes.as_ref(),
            VISIBILITY_TIMEOUT_SECS_DEFAULT,
            Some(MAX_RECEIVE_COUNT_DEFAULT),
        )?;
        let tags: Tags = input.tags.unwrap_or_default();
        check_tags(&tags)?;
        if tags.len() > TAGS_PER_STREAM_MAX {
            return Err(Error::invalid(format!(
                "A queue cannot have more than {TAGS_PER_STREAM_MAX} tags."
            )));
        }
        let entry = self.find_stream(ctx, None, Some(&config.stream_arn))?;
        let now = self.now_ms();
        {
            let view = entry.view();
            let record = &view.record;
            if record.mode != StreamMode::OnDemand {
                return Err(Error::invalid(format!(
                    "Queues are supported only on data streams in on-demand capacity mode. \
                     Stream {} under account {} is in PROVISIONED mode.",
                    record.name, record.account
                )));
            }
            let status = record.lifecycle.at(now);
            if !matches!(status, Status::Active | Status::Updating) {
                return Err(Error::StreamNotActive {
                    name: record.name.clone(),
                    account: record.account.clone(),
                    status: crate::status_str(status),
                });
            }
        }
        // Names are unique per account and region: creations are serialised so the check
        // and the insert below see the same world.
        let _creating = self.creating.lock();
        let (account, region) = {
            let view = entry.view();
            (view.record.account.clone(), view.record.region.clone())
        };
        let existing = self.queues_of(&account, &region, now);
        if existing.iter().any(|(_, q)| q.name == input.queue_name) {
            return Err(Error::ResourceInUse {
                message: format!(
                    "Queue {} under account {account} already exists.",
                    input.queue_name
                ),
            });
        }
        let changing = existing
            .iter()
            .filter(|(_, q)| matches!(q.lifecycle.at(now), Status::Creating | Status::Deleting))
            .count();
        if changing >= QUEUES_CHANGING_MAX {
            return Err(Error::LimitExceeded {
                message: format!(
                    "Account {account} in {region} has {changing} queues in CREATING or \
                     DELETING state; the limit is {QUEUES_CHANGING_MAX}."
                ),
            });
        }
        let log_id = self.catalog.write(|txn| txn.allocate("log", 1))?;
        self.log.create_log(log_id)?;
        let queue_id = self.random_stream_id();
        let limit = self.config.consumer_limit as usize;
        let delay = self.config.consumer_delay_ms;
        let (record, queue) = {
            let _control = entry.control.lock();
            let mut record = entry.view().record.clone();
            let registered = record
                .consumers
                .iter()
                .filter(|c| {
                    !(c.lifecycle.status == Status::Deleting && now >= c.lifecycle.until_ms)
                })
                .count()
                + record
                    .queues
                    .iter()
                    .filter(|q| queue_exists(q, now))
                    .count();
            if registered >= limit {
                return Err(Error::LimitExceeded {
                    message: format!(
                        "Stream {} under account {} has reached the limit of {limit} registered \
                         consumers (queues and enhanced fan-out consumers together).",
                        record.name, record.account
                    ),
                });
            }
            let mut start_offsets = BTreeMap::new();
            for shard in &record.shards {
                let bounds = self.log.bounds(shard.log_id)?;
                let end = shard.closed.map_or(bounds.end_offset, |c| c.end_offset);
                let offset = match position.type_ {
                    k::QueueStartingPositionType::Latest => end,
                    k::QueueStartingPositionType::TrimHorizon => bounds.start_offset,
                    k::QueueStartingPositionType::AtTimestamp => {
                        let at = position.timestamp.map_or(now, |t| t.0);
                        self.log.offset_at_timestamp(shard.log_id, at)?
                    }
                };
                start_offsets.insert(shard.index, offset.min(end));
            }
            let earliest = record
                .created_ms
                .max(now - i64::from(record.retention_hours) * 3_600_000);
            let effective_start_ms = match position.type_ {
                k::QueueStartingPositionType::Latest => now,
                k::QueueStartingPositionType::TrimHorizon => earliest,
                k::QueueStartingPositionType::AtTimestamp => {
                    position.timestamp.map_or(now, |t| t.0).max(earliest)
                }
            };
            let queue = QueueRecord {
                name: input.queue_name.clone(),
                queue_id: queue_id.clone(),
                created_ms: now,
                lifecycle: self.lifecycle_after(Status::Creating, delay, now, Status::Active),
                visibility_timeout_secs,
                max_receive_count,
                starting_position: position.type_.as_str().to_string(),
                starting_timestamp_ms: position.timestamp.map(|t| t.0),
                effective_start_ms,
                start_offsets,
                tags,
                policy: None,
            };
            record.queues.push(queue.clone());
            let state_record = QueueStateRecord {
                log_id,
                snapshot: String::new(),
            };
            self.catalog.write(|txn| -> Result<(), Error> {
                txn.put(Table::Streams, &entry.key, &record)?;
                txn.put(Table::QueueStates, &queue_id, &state_record)?;
                Ok(())
            })?;
            *entry.view.write() = Arc::new(crate::StreamView::new(record.clone()));
            (record, queue)
        };
        let mut state = DeliveryState::default();
        for (&shard, &offset) in &queue.start_offsets {
            state.ensure_shard(shard, offset);
        }
        self.queues.write().insert(
            queue_id.clone(),
            Arc::new(QueueRuntime::new(
                queue_id,
                &record,
                entry.key.clone(),
                log_id,
                state,
            )),
        );
        // CreateQueue answers CREATING, as AWS does, whatever the delay.
        Ok(k::CreateQueueOutput {
            queue_description: self.describe(&record, &queue, Status::Creating),
        })
    }

    pub(crate) fn describe_queue(
        &self,
        ctx: &RequestContext,
        input: k::DescribeQueueInput,
    ) -> Result<k::DescribeQueueOutput, Error> {
        let (entry, queue, _) = self.find_queue(ctx, &input.queue_arn)?;
        let status = queue.lifecycle.at(self.now_ms());
        Ok(k::DescribeQueueOutput {
            queue_description: self.describe(&entry.view().record, &queue, status),
        })
    }

    pub(crate) fn list_queues(
        &self,
        ctx: &RequestContext,
        input: k::ListQueuesInput,
    ) -> Result<k::ListQueuesOutput, Error> {
        let now = self.now_ms();
        let limit = input.max_results.map_or(LIST_QUEUES_LIMIT_DEFAULT, |n| {
            usize::try_from(n).unwrap_or(1)
        });
        let start_after = match &input.next_token {
            Some(token) => {
                let fields = decode_next_token(token, 3, now)?;
                if fields.first().map(String::as_str) != Some("queues") {
                    return Err(Error::invalid(format!("Invalid NextToken: {token}")));
                }
                Some((
                    fields.get(1).cloned().unwrap_or_default(),
                    fields.get(2).cloned().unwrap_or_default(),
                ))
            }
            None => None,
        };
        let mut queues: Vec<(StreamRecord, QueueRecord)> = self
            .queues_of(&ctx.account, &ctx.region, now)
            .into_iter()
            .filter(|(record, _)| {
                input.stream_filter.as_ref().is_none_or(|filters| {
                    filters.iter().any(|f| {
                        f.stream_arn == stream_arn(record)
                            && f.stream_creation_timestamp
                                .is_none_or(|t| t.0 / 1000 == record.created_ms / 1000)
                    })
                })
            })
            .filter(|(_, q)| {
                start_after.as_ref().is_none_or(|(name, id)| {
                    (q.name.as_str(), q.queue_id.as_str()) > (name.as_str(), id.as_str())
                })
            })
            .collect();
        queues.sort_by(|a, b| (&a.1.name, &a.1.queue_id).cmp(&(&b.1.name, &b.1.queue_id)));
        let has_more = queues.len() > limit;
        queues.truncate(limit);
        let next_token = if has_more {
            queues
                .last()
                .map(|(_, q)| encode_next_token(&["queues", &q.name, &q.queue_id], now))
        } else {
            None
        };
        Ok(k::ListQueuesOutput {
            queue_summaries: queues
                .iter()
                .map(|(record, queue)| k::QueueSummary {
                    queue_name: queue.name.clone(),
                    queue_arn: queue_arn(record, queue),
                    queue_status: wire_status(queue.lifecycle.at(now)),
                    queue_creation_timestamp: EpochMillis(queue.created_ms),
                    streams: vec![k::QueueStreamIdentifier {
                        stream_arn: stream_arn(record),
                        stream_creation_timestamp: EpochMillis(record.created_ms / 1000 * 1000),
                    }],
                })
                .collect(),
            next_token,
        })
    }

    /// Changes one queue's record in its stream's record, in one transaction.
    fn mutate_queue<R>(
        &self,
        entry: &StreamEntry,
        queue_id: &str,
        f: impl FnOnce(&mut QueueRecord) -> Result<R, Error>,
    ) -> Result<(StreamRecord, R), Error> {
        self.mutate(entry, |record| {
            let queue = record
                .queues
                .iter_mut()
                .find(|q| q.queue_id == queue_id)
                .ok_or_else(|| Error::ResourceNotFound {
                    message: format!("Queue {queue_id} not found."),
                })?;
            let result = f(queue)?;
            Ok((record.clone(), result))
        })
    }

    pub(crate) fn update_queue(
        &self,
        ctx: &RequestContext,
        input: k::UpdateQueueInput,
    ) -> Result<k::UpdateQueueOutput, Error> {
        let (entry, queue, _) = self.find_queue(ctx, &input.queue_arn)?;
        let now = self.now_ms();
        let delay = self.config.update_delay_ms;
        let arn = input.queue_arn.clone();
        let (record, updated) = self.mutate_queue(&entry, &queue.queue_id, |q| {
            let status = q.lifecycle.at(now);
            if status != Status::Active {
                return Err(Error::ResourceInUse {
                    message: format!(
                        "Queue {arn} is in {} state; it must be ACTIVE to be updated.",
                        crate::status_str(status)
                    ),
                });
            }
            let (visibility, max) = apply_attributes(
                Some(&input.queue_attributes),
                q.visibility_timeout_secs,
                q.max_receive_count,
            )?;
            q.visibility_timeout_secs = visibility;
            q.max_receive_count = max;
            q.lifecycle = self.lifecycle_after(Status::Updating, delay, now, Status::Active);
            Ok(q.clone())
        })?;
        Ok(k::UpdateQueueOutput {
            queue_description: self.describe(&record, &updated, Status::Updating),
        })
    }

    pub(crate) fn delete_queue(
        &self,
        ctx: &RequestContext,
        input: k::DeleteQueueInput,
    ) -> Result<(), Error> {
        let (entry, queue, runtime) = self.find_queue(ctx, &input.queue_arn)?;
        let now = self.now_ms();
        if queue.lifecycle.at(now) == Status::Deleting {
            return Err(queue_not_found(&input.queue_arn, &ctx.account));
        }
        let delay = self.config.delete_delay_ms;
        if delay > 0 {
            self.mutate_queue(&entry, &queue.queue_id, |q| {
                q.lifecycle = Lifecycle {
                    status: Status::Deleting,
                    until_ms: now + delay,
                    then: Status::Deleting,
                };
                Ok(())
            })?;
            // Waiting receives stop now; receipt handles are refused from here on.
            runtime.notify.notify_waiters();
            Ok(())
        } else {
            self.finish_queue_delete(&entry, &queue.queue_id)
        }
    }

    /// Removes a queue: its record, its delivery state and its log.
    pub(crate) fn finish_queue_delete(
        &self,
        entry: &StreamEntry,
        queue_id: &str,
    ) -> Result<(), Error> {
        {
            let _control = entry.control.lock();
            let mut record = entry.view().record.clone();
            record.queues.retain(|q| q.queue_id != queue_id);
            self.catalog.write(|txn| -> Result<(), Error> {
                txn.put(Table::Streams, &entry.key, &record)?;
                txn.delete(Table::QueueStates, queue_id)?;
                Ok(())
            })?;
            *entry.view.write() = Arc::new(crate::StreamView::new(record));
        }
        if let Some(runtime) = self.queues.write().remove(queue_id) {
            runtime.notify.notify_waiters();
            self.log.delete_log(runtime.log_id.load(Ordering::SeqCst))?;
        }
        Ok(())
    }

    /// Live queues on a stream (they block DeleteStream and a switch to PROVISIONED).
    pub(crate) fn live_queue_count(&self, record: &StreamRecord, now: i64) -> usize {
        record
            .queues
            .iter()
            .filter(|q| q.lifecycle.at(now) != Status::Deleting)
            .count()
    }

    /// Housekeeping for one stream's queues: finishes deletions whose delay passed and
    /// snapshots queues whose log grew long.
    pub(crate) async fn queue_housekeeping(
        &self,
        entry: &StreamEntry,
        now: i64,
    ) -> Result<(), Error> {
        let view = entry.view();
        for queue in &view.record.queues {
            if !queue_exists(queue, now) {
                self.finish_queue_delete(entry, &queue.queue_id)?;
                continue;
            }
            let runtime = self.queues.read().get(&queue.queue_id).cloned();
            if let Some(runtime) = runtime
                && runtime.events_since_snapshot.load(Ordering::SeqCst) >= SNAPSHOT_EVENTS_MIN
            {
                self.snapshot_queue(&runtime).await?;
            }
        }
        Ok(())
    }

    /// Writes the queue's index to the catalog and moves its events to a fresh log.
    pub(crate) async fn snapshot_queue(&self, runtime: &QueueRuntime) -> Result<(), Error> {
        let _gate = runtime.gate.write().await;
        let new_log_id = self.catalog.write(|txn| txn.allocate("log", 1))?;
        self.log.create_log(new_log_id)?;
        let snapshot = base64::engine::general_purpose::STANDARD
            .encode(runtime.state.lock().encode_snapshot());
        let record = QueueStateRecord {
            log_id: new_log_id,
            snapshot,
        };
        self.catalog
            .write(|txn| txn.put(Table::QueueStates, &runtime.queue_id, &record))?;
        let old_log_id = runtime.log_id.swap(new_log_id, Ordering::SeqCst);
        runtime.events_since_snapshot.store(0, Ordering::SeqCst);
        drop(_gate);
        self.log.delete_log(old_log_id)?;
        Ok(())
    }
}

/// Queue runtimes by queue id.
pub(crate) type Runtimes = HashMap<String, Arc<QueueRuntime>>;

/// Rebuilds every queue's runtime at start: snapshot from the catalog, then the events of
/// its log. Returns the runtimes by queue id and the logs they use.
pub(crate) fn recover(
    catalog: &millrace_catalog::Catalog,
    log: &Log,
    streams: &[(String, StreamRecord)],
) -> Result<(Runtimes, Vec<u64>), Error> {
    let mut runtimes = HashMap::new();
    let mut log_ids = Vec::new();
    for (key, record) in streams {
        for queue in &record.queues {
            let Some(stored) =
                catalog.get::<QueueStateRecord>(Table::QueueStates, &queue.queue_id)?
            else {
                tracing::error!(queue = %queue.queue_id, "queue has no delivery state; starting it empty");
                continue;
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&stored.snapshot)
                .ok();
            let mut state = bytes
                .as_deref()
                .and_then(DeliveryState::decode_snapshot)
                .ok_or(Error::CorruptRecord {
                    log_id: stored.log_id,
                    offset: 0,
                })?;
            for (&shard, &offset) in &queue.start_offsets {
                state.ensure_shard(shard, offset);
            }
            // Where each shard stood before the log's events: a record between there and
            // the replayed cursor that no event names is a hole (see `fill_holes`).
            for shard in &record.shards {
                if !state.shards.contains_key(&shard.index) {
                    let start = log.bounds(shard.log_id)?.start_offset;
                    state.ensure_shard(shard.index, start);
                }
            }
            let base: Vec<(u32, u64)> = state
                .shards
                .iter()
                .map(|(index, shard)| (*index, shard.next_offset))
                .collect();
            let mut seen: HashMap<u32, std::collections::BTreeSet<u64>> = HashMap::new();
            let mut n_events = 0u64;
            if log.log_ids().binary_search(&stored.log_id).is_err() {
                log.create_log(stored.log_id)?;
            }
            let end = log.bounds(stored.log_id)?.end_offset;
            let mut from = 0;
            while from < end {
                let read = log.read(
                    stored.log_id,
                    from,
                    REPLAY_READ_RECORDS_MAX,
                    REPLAY_READ_BYTES_MAX,
                )?;
                if read.next_offset <= from {
                    break;
                }
                for stored_record in &read.records {
                    let events = state::decode_batch(&stored_record.payload).ok_or(
                        Error::CorruptRecord {
                            log_id: stored.log_id,
                            offset: stored_record.offset,
                        },
                    )?;
                    for event in &events {
                        if event.kind == state::EventKind::Lease && event.receive_count == 1 {
                            seen.entry(event.shard).or_default().insert(event.offset);
                        }
                        state.apply(event);
                    }
                    n_events += events.len() as u64;
                }
                from = read.next_offset;
            }
            let empty = std::collections::BTreeSet::new();
            for (shard, from_offset) in base {
                let n_holes =
                    state.fill_holes(shard, from_offset, seen.get(&shard).unwrap_or(&empty));
                if n_holes > 0 {
                    tracing::info!(queue = %queue.queue_id, shard, n_holes, "records whose receive was lost in a crash are visible again");
                }
            }
            let runtime = QueueRuntime::new(
                queue.queue_id.clone(),
                record,
                key.clone(),
                stored.log_id,
                state,
            );
            runtime
                .events_since_snapshot
                .store(n_events, Ordering::SeqCst);
            log_ids.push(stored.log_id);
            runtimes.insert(queue.queue_id.clone(), Arc::new(runtime));
        }
    }
    Ok((runtimes, log_ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_arns() {
        assert_eq!(
            parse_queue_arn("arn:aws:kinesis:eu-west-1:123456789012:queue/abc-def"),
            Some(("123456789012".into(), "eu-west-1".into(), "abc-def".into()))
        );
        assert_eq!(
            parse_queue_arn("arn:aws:kinesis:eu-west-1:123456789012:stream/abc"),
            None
        );
        assert_eq!(parse_queue_arn("arn:aws:kinesis:r:1:queue/"), None);
    }

    #[test]
    fn attributes_defaults_and_errors() -> Result<(), Error> {
        assert_eq!(apply_attributes(None, 30, Some(6))?, (30, Some(6)));
        let none = k::QueueAttributes {
            visibility_timeout_seconds: Some(0),
            dead_letter_configuration: Some(k::DeadLetterConfiguration {
                target_type: k::TargetType::None,
                max_receive_count: None,
            }),
        };
        assert_eq!(apply_attributes(Some(&none), 30, Some(6))?, (0, None));
        let missing = k::QueueAttributes {
            visibility_timeout_seconds: None,
            dead_letter_configuration: Some(k::DeadLetterConfiguration {
                target_type: k::TargetType::BuiltIn,
                max_receive_count: None,
            }),
        };
        assert!(matches!(
            apply_attributes(Some(&missing), 30, None),
            Err(Error::Validation { .. })
        ));
        Ok(())
    }
}
