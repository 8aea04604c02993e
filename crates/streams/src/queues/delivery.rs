//! The queue data plane: ReceiveQueueRecords, AcknowledgeQueueRecords,
//! UpdateQueueRecordsVisibility and the four dead-letter calls.
//!
//! A receive takes the queue's gate (shared), then under the state lock: brings the index
//! in line with the stream (new shards, retention), takes records whose visibility ended
//! (turning exhausted ones into dead letters), reads new records from eligible shards, and
//! leases them all; it releases the lock, appends the events to the queue's log (one
//! group-committed append) and answers once they are durable. With nothing to return it
//! waits (long polling) on the shard logs' watch channels, the queue's `notify` and the
//! next visibility expiry, never longer than WaitTimeSeconds.
//!
//! Batch calls check every entry, append the events of the good ones as one record, and
//! report each entry as Successful or Failed (`InvalidArgumentException` for a handle that
//! is forged, of another queue, stale or on the wrong path; `InternalFailureException` if
//! the append failed).

use std::pin::pin;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use millrace_catalog::model::{QueueRecord, Status};
use millrace_log::AppendRecord;
use millrace_wire::EpochMillis;
use millrace_wire::kinesis as k;

use super::QueueRuntime;
use super::receipt::ReceiptHandle;
use super::state::{Check, DeliveryState, Event, TRACKED_RECORDS_MAX, encode_batch};
use crate::{Error, Inner, RequestContext, StreamEntry, StreamView, codec};

/// ReceiveQueueRecords' defaults (model documentation).
pub const RECEIVE_LIMIT_DEFAULT: usize = 10;
pub const WAIT_TIME_SECS_DEFAULT: u64 = 9;
/// Data bytes one receive returns at most (at least one record, whatever its size).
pub const RECEIVE_BYTES_MAX: usize = 10 * 1024 * 1024;

const HANDLE_INVALID: &str = "InvalidArgumentException";
const INTERNAL: &str = "InternalFailureException";

/// A record chosen by a receive: where it is, its lease, and its stored bytes.
struct Pick {
    shard: u32,
    lease: Event,
    timestamp_ms: i64,
    payload: Bytes,
}

/// A place among a queue's waiting receives, given back when the receive answers.
struct WaiterSlot(std::sync::Arc<QueueRuntime>);

impl WaiterSlot {
    fn take(
        runtime: std::sync::Arc<QueueRuntime>,
        max: usize,
        arn: &str,
    ) -> Result<WaiterSlot, Error> {
        let before = runtime.waiters.fetch_add(1, Ordering::AcqRel);
        let slot = WaiterSlot(runtime);
        if before >= max {
            return Err(Error::Throttling {
                message: format!(
                    "Rate exceeded for queue {arn}: {max} ReceiveQueueRecords calls are already \
                     waiting. Retry with exponential backoff."
                ),
            });
        }
        Ok(slot)
    }
}

impl Drop for WaiterSlot {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The outcome of one entry of a batch call.
type EntryResult = Result<(), (&'static str, String)>;

impl Inner {
    /// Refuses data-plane calls on a queue that is not serving.
    fn check_serving(queue: &QueueRecord, arn: &str, account: &str, now: i64) -> Result<(), Error> {
        match queue.lifecycle.at(now) {
            Status::Active | Status::Updating => Ok(()),
            Status::Creating => Err(Error::invalid(format!(
                "Queue {arn} is in CREATING state; records can be received once it is ACTIVE."
            ))),
            Status::Deleting => Err(super::queue_not_found(arn, account)),
        }
    }

    pub(crate) async fn receive_queue_records(
        &self,
        ctx: &RequestContext,
        arn: &str,
        limit: Option<i32>,
        wait_secs: Option<i32>,
        visibility_secs: Option<i32>,
        dead: bool,
    ) -> Result<Vec<k::QueueRecord>, Error> {
        let limit = limit.map_or(RECEIVE_LIMIT_DEFAULT, |n| usize::try_from(n).unwrap_or(1));
        let wait = Duration::from_secs(
            wait_secs.map_or(WAIT_TIME_SECS_DEFAULT, |s| u64::try_from(s).unwrap_or(0)),
        );
        let deadline = Instant::now() + wait;
        let mut waiting: Option<WaiterSlot> = None;
        loop {
            let (entry, queue, runtime) = self.find_queue(ctx, arn)?;
            Self::check_serving(&queue, arn, &ctx.account, self.now_ms())?;
            let visibility_ms =
                i64::from(visibility_secs.map_or(queue.visibility_timeout_secs, |s| {
                    u32::try_from(s).unwrap_or(0)
                })) * 1000;
            // Subscribe before looking, so nothing that lands in between is missed.
            let notified = runtime.notify.notified();
            let mut notified = pin!(notified);
            notified.as_mut().enable();
            let mut watches = Vec::new();
            if !dead {
                for shard in entry.view().open.iter() {
                    let mut watch = self.log.watch(shard.log_id)?;
                    watch.borrow_and_update();
                    watches.push(watch);
                }
            }
            let records = self
                .receive_once(&entry, &queue, &runtime, limit, visibility_ms, dead)
                .await?;
            let now_real = Instant::now();
            if !records.is_empty() || now_real >= deadline {
                return Ok(records);
            }
            if waiting.is_none() {
                waiting = Some(WaiterSlot::take(
                    runtime.clone(),
                    self.config.queue_receive_waiters_max,
                    arn,
                )?);
            }
            let mut sleep = deadline - now_real;
            let next_visible = {
                let state = runtime.state.lock();
                // The dead-letter path also wakes when a live lease ends: that record may
                // have become a dead letter.
                let own = state.next_visible_ms(dead);
                if dead {
                    own.into_iter().chain(state.next_visible_ms(false)).min()
                } else {
                    own
                }
            };
            if let Some(at) = next_visible {
                let in_ms = (at - self.now_ms()).max(1);
                sleep = sleep.min(Duration::from_millis(u64::try_from(in_ms).unwrap_or(1)));
            }
            let changed = futures::future::select_all(
                watches
                    .iter_mut()
                    .map(|w| w.changed().map(|_| ()).boxed())
                    .chain(std::iter::once(futures::future::pending::<()>().boxed())),
            );
            tokio::select! {
                _ = &mut notified => {}
                _ = changed => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// One attempt: leases up to `limit` visible records and makes the leases durable.
    async fn receive_once(
        &self,
        entry: &StreamEntry,
        queue: &QueueRecord,
        runtime: &QueueRuntime,
        limit: usize,
        visibility_ms: i64,
        dead: bool,
    ) -> Result<Vec<k::QueueRecord>, Error> {
        let _gate = runtime.gate.read().await;
        let view = entry.view();
        let now = self.now_ms();
        let until = now.saturating_add(visibility_ms);
        let mut picks = Vec::new();
        let mut events = Vec::new();
        {
            let mut state = runtime.state.lock();
            self.sync_shards(&view, queue, &mut state)?;
            events.extend(state.sweep_dead_letters(now, queue.max_receive_count));
            let (due, dead_letters) = state.take_visible(now, limit, dead, queue.max_receive_count);
            events.extend(dead_letters);
            let mut bytes = 0usize;
            for (shard, offset, slot) in due {
                if bytes >= RECEIVE_BYTES_MAX {
                    break;
                }
                let Some(stored) = self.read_one(&view, shard, offset)? else {
                    // Trimmed by retention between the sync and now: gone for good.
                    state.trim(shard, offset.saturating_add(1));
                    continue;
                };
                let lease = DeliveryState::lease_event(shard, offset, Some(slot), now, until, dead);
                state.apply(&lease);
                bytes += stored.payload.len();
                picks.push(Pick {
                    shard,
                    lease,
                    timestamp_ms: stored.timestamp_ms,
                    payload: stored.payload,
                });
            }
            if !dead {
                self.take_new_records(
                    &view, runtime, &mut state, limit, &mut bytes, now, until, &mut picks,
                )?;
            }
            events.extend(picks.iter().map(|p| p.lease));
        }
        if !events.is_empty() {
            let log_id = runtime.log_id.load(Ordering::SeqCst);
            self.log
                .append(vec![AppendRecord {
                    log_id,
                    payload: Bytes::from(encode_batch(&events)),
                }])
                .await?;
            runtime
                .events_since_snapshot
                .fetch_add(events.len() as u64, Ordering::SeqCst);
        }
        picks
            .into_iter()
            .map(|pick| self.queue_record(&view, runtime, pick))
            .collect()
    }

    /// Reads new records from the shards a queue may read now (round robin), leasing each.
    #[allow(clippy::too_many_arguments)]
    fn take_new_records(
        &self,
        view: &StreamView,
        runtime: &QueueRuntime,
        state: &mut DeliveryState,
        limit: usize,
        bytes: &mut usize,
        now: i64,
        until: i64,
        picks: &mut Vec<Pick>,
    ) -> Result<(), Error> {
        let mut shards: Vec<&millrace_catalog::model::ShardRecord> =
            view.record.shards.iter().collect();
        shards.sort_by_key(|s| s.index);
        if shards.is_empty() {
            return Ok(());
        }
        let start = runtime.next_shard_idx.fetch_add(1, Ordering::Relaxed) as usize % shards.len();
        for round_idx in 0..shards.len() {
            if picks.len() >= limit
                || *bytes >= RECEIVE_BYTES_MAX
                || state.n_tracked() >= TRACKED_RECORDS_MAX
            {
                break;
            }
            let Some(shard) = shards.get((start + round_idx) % shards.len()) else {
                continue;
            };
            // Parents first: a child is read once every retained parent was read to its end.
            let parents_done = [shard.parent, shard.adjacent_parent]
                .into_iter()
                .flatten()
                .filter_map(|p| view.shard(p))
                .all(|parent| {
                    let end = parent.closed.map_or(u64::MAX, |c| c.end_offset);
                    state
                        .shards
                        .get(&parent.index)
                        .is_some_and(|s| s.next_offset >= end)
                });
            if !parents_done {
                continue;
            }
            let Some(next_offset) = state.shards.get(&shard.index).map(|s| s.next_offset) else {
                continue;
            };
            let end = shard.closed.map_or(u64::MAX, |c| c.end_offset);
            if next_offset >= end {
                continue;
            }
            let wanted = (limit - picks.len()).min(TRACKED_RECORDS_MAX - state.n_tracked());
            let read = self.log.read(
                shard.log_id,
                next_offset,
                wanted,
                RECEIVE_BYTES_MAX.saturating_sub(*bytes).max(1),
            )?;
            for stored in read.records {
                if stored.offset >= end || picks.len() >= limit {
                    break;
                }
                let lease =
                    DeliveryState::lease_event(shard.index, stored.offset, None, now, until, false);
                state.apply(&lease);
                *bytes += stored.payload.len();
                picks.push(Pick {
                    shard: shard.index,
                    lease,
                    timestamp_ms: stored.timestamp_ms,
                    payload: stored.payload,
                });
            }
        }
        Ok(())
    }

    /// Brings the index in line with the stream: tracks new shards, forgets shards that
    /// left it, drops records trimmed by retention.
    fn sync_shards(
        &self,
        view: &StreamView,
        queue: &QueueRecord,
        state: &mut DeliveryState,
    ) -> Result<(), Error> {
        for shard in &view.record.shards {
            let bounds = self.log.bounds(shard.log_id)?;
            let start = queue
                .start_offsets
                .get(&shard.index)
                .copied()
                .unwrap_or(bounds.start_offset);
            state.ensure_shard(shard.index, start);
            state.trim(shard.index, bounds.start_offset);
        }
        let gone: Vec<u32> = state
            .shards
            .keys()
            .copied()
            .filter(|index| view.shard(*index).is_none())
            .collect();
        for index in gone {
            state.forget_shard(index);
        }
        Ok(())
    }

    fn read_one(
        &self,
        view: &StreamView,
        shard: u32,
        offset: u64,
    ) -> Result<Option<millrace_log::Record>, Error> {
        let Some(record) = view.shard(shard) else {
            return Ok(None);
        };
        let read = self.log.read(record.log_id, offset, 1, usize::MAX)?;
        Ok(read
            .records
            .into_iter()
            .next()
            .filter(|r| r.offset == offset))
    }

    fn queue_record(
        &self,
        view: &StreamView,
        runtime: &QueueRuntime,
        pick: Pick,
    ) -> Result<k::QueueRecord, Error> {
        let log_id = view.shard(pick.shard).map_or(0, |s| s.log_id);
        let payload = self.crypto.open(log_id, pick.lease.offset, &pick.payload)?;
        let decoded = codec::decode(&payload).ok_or(Error::CorruptRecord {
            log_id,
            offset: pick.lease.offset,
        })?;
        let handle = ReceiptHandle {
            queue_id: runtime.queue_id.clone(),
            shard: pick.shard,
            offset: pick.lease.offset,
            attempt: pick.lease.attempt,
            dead: pick.lease.dead,
            issued_ms: self.now_ms(),
        };
        Ok(k::QueueRecord {
            receipt_handle: handle.encode(&self.secret),
            record_id: Self::sequence_number(
                view,
                pick.shard,
                pick.lease.offset,
                pick.timestamp_ms,
            ),
            partition_key: decoded.partition_key,
            data: decoded.data,
            approximate_arrival_timestamp: EpochMillis(pick.timestamp_ms),
            first_receive_timestamp: EpochMillis(pick.lease.first_receive_ms),
            receive_count: i32::try_from(pick.lease.receive_count).unwrap_or(i32::MAX),
        })
    }

    /// Runs a batch call: `decide` checks one entry against the index (under the lock) and
    /// returns its event, or `None` for an entry that succeeds with nothing to record.
    /// Events with `apply_before` are applied before the append, the others after it is
    /// durable (acknowledgements: an answered acknowledgement is on disk first).
    async fn batch(
        &self,
        ctx: &RequestContext,
        arn: &str,
        handles: &[String],
        apply_before: bool,
        mut decide: impl FnMut(
            usize,
            &ReceiptHandle,
            i64,
            &DeliveryState,
        ) -> Result<Option<Event>, (&'static str, String)>,
    ) -> Result<Vec<EntryResult>, Error> {
        let (_, queue, runtime) = self.find_queue(ctx, arn)?;
        if queue.lifecycle.at(self.now_ms()) == Status::Deleting {
            return Err(super::queue_not_found(arn, &ctx.account));
        }
        let _gate = runtime.gate.read().await;
        let now = self.now_ms();
        let mut results: Vec<EntryResult> = Vec::with_capacity(handles.len());
        let mut events = Vec::new();
        let mut event_entries = Vec::new();
        {
            let mut state = runtime.state.lock();
            for (entry_idx, text) in handles.iter().enumerate() {
                let outcome = match ReceiptHandle::decode(text, &self.secret) {
                    None => Err((
                        HANDLE_INVALID,
                        "The receipt handle is not valid.".to_string(),
                    )),
                    Some(handle) if handle.queue_id != runtime.queue_id => Err((
                        HANDLE_INVALID,
                        format!("The receipt handle was not issued by queue {arn}."),
                    )),
                    Some(handle) => decide(entry_idx, &handle, now, &state),
                };
                match outcome {
                    Ok(Some(event)) => {
                        if apply_before {
                            state.apply(&event);
                        }
                        events.push(event);
                        event_entries.push(entry_idx);
                        results.push(Ok(()));
                    }
                    Ok(None) => results.push(Ok(())),
                    Err(failure) => results.push(Err(failure)),
                }
            }
        }
        if !events.is_empty() {
            let log_id = runtime.log_id.load(Ordering::SeqCst);
            let appended = self
                .log
                .append(vec![AppendRecord {
                    log_id,
                    payload: Bytes::from(encode_batch(&events)),
                }])
                .await;
            match appended {
                Ok(_) => {
                    runtime
                        .events_since_snapshot
                        .fetch_add(events.len() as u64, Ordering::SeqCst);
                    if !apply_before {
                        let mut state = runtime.state.lock();
                        for event in &events {
                            state.apply(event);
                        }
                    }
                }
                Err(error) => {
                    tracing::error!(%error, queue = %runtime.queue_id, "queue state append failed");
                    for entry_idx in event_entries {
                        if let Some(result) = results.get_mut(entry_idx) {
                            *result = Err((INTERNAL, "Internal service failure.".to_string()));
                        }
                    }
                }
            }
        }
        // Capacity freed or records made visible: let waiting receives look again.
        runtime.notify.notify_waiters();
        Ok(results)
    }

    fn wrong_path(dead: bool) -> (&'static str, String) {
        if dead {
            (
                HANDLE_INVALID,
                "The record is not a dead-letter record.".to_string(),
            )
        } else {
            (
                HANDLE_INVALID,
                "The record is a dead-letter record; use the dead-letter queue operations."
                    .to_string(),
            )
        }
    }

    fn stale() -> (&'static str, String) {
        (
            HANDLE_INVALID,
            "The receipt handle has expired: the record was received again since.".to_string(),
        )
    }

    pub(crate) async fn acknowledge(
        &self,
        ctx: &RequestContext,
        arn: &str,
        handles: &[String],
        dead: bool,
    ) -> Result<Vec<EntryResult>, Error> {
        self.batch(ctx, arn, handles, false, |_, handle, _now, state| {
            if handle.dead != dead {
                return Err(Self::wrong_path(!dead));
            }
            match state.check(handle.shard, handle.offset, handle.attempt, dead) {
                Check::Acknowledged => Ok(None),
                Check::Stale => Err(Self::stale()),
                Check::WrongPath => Err(Self::wrong_path(dead)),
                Check::Current(_) => Ok(Some(Event::ack(handle.shard, handle.offset))),
            }
        })
        .await
    }

    pub(crate) async fn change_visibility(
        &self,
        ctx: &RequestContext,
        arn: &str,
        entries: &[(String, i32)],
        dead: bool,
    ) -> Result<Vec<EntryResult>, Error> {
        let handles: Vec<String> = entries.iter().map(|(h, _)| h.clone()).collect();
        self.batch(ctx, arn, &handles, true, |entry_idx, handle, now, state| {
            let secs = entries.get(entry_idx).map_or(0, |(_, secs)| *secs);
            if handle.dead != dead {
                return Err(Self::wrong_path(!dead));
            }
            match state.check(handle.shard, handle.offset, handle.attempt, dead) {
                Check::Acknowledged => {
                    Err((HANDLE_INVALID, "The record was acknowledged.".to_string()))
                }
                Check::Stale => Err(Self::stale()),
                Check::WrongPath => Err(Self::wrong_path(dead)),
                Check::Current(slot) if slot.visible_at_ms <= now => Err((
                    HANDLE_INVALID,
                    "The record is not in flight: its visibility timeout has expired.".to_string(),
                )),
                Check::Current(_) => Ok(Some(Event::visibility(
                    handle.shard,
                    handle.offset,
                    handle.attempt,
                    now.saturating_add(i64::from(secs) * 1000),
                ))),
            }
        })
        .await
    }

    pub(crate) async fn restore(
        &self,
        ctx: &RequestContext,
        arn: &str,
        handles: &[String],
    ) -> Result<Vec<EntryResult>, Error> {
        self.batch(ctx, arn, handles, true, |_, handle, now, state| {
            if !handle.dead {
                return Err(Self::wrong_path(false));
            }
            match state.check(handle.shard, handle.offset, handle.attempt, true) {
                Check::Acknowledged => {
                    Err((HANDLE_INVALID, "The record was acknowledged.".to_string()))
                }
                Check::Stale => Err(Self::stale()),
                Check::WrongPath => Err(Self::wrong_path(true)),
                Check::Current(_) => Ok(Some(Event::restore(handle.shard, handle.offset, now))),
            }
        })
        .await
    }
}

/// Splits batch results into the model's Successful and Failed lists.
pub(crate) fn split_results<S, F>(
    handles: Vec<String>,
    results: Vec<EntryResult>,
    success: impl Fn(String) -> S,
    failure: impl Fn(String, &'static str, String) -> F,
) -> (Vec<S>, Vec<F>) {
    let mut successful = Vec::new();
    let mut failed = Vec::new();
    for (handle, result) in handles.into_iter().zip(results) {
        match result {
            Ok(()) => successful.push(success(handle)),
            Err((code, message)) => failed.push(failure(handle, code, message)),
        }
    }
    (successful, failed)
}
