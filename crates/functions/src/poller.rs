//! Delivery: one task per enabled mapping, one worker per shard being read.
//!
//! The mapping task lists the stream's shards (every `LIST_SHARDS_INTERVAL_MS`, and at once
//! when a shard finishes) and starts a worker for each shard whose parents are finished, so
//! after a split or merge the parents' records reach the function before the children's.
//!
//! A worker reads its shard through `Streams::handle` (GetShardIterator, GetRecords), keeps
//! at most one GetRecords answer beyond a batch in memory, and cuts batches of at most
//! `BatchSize` records and `PAYLOAD_BYTES_MAX` bytes of event, waiting up to
//! `MaximumBatchingWindowInSeconds` for a batch to fill. It handles one batch at a time,
//! so records reach the function in shard order; with `ParallelizationFactor` > 1 a batch is
//! split by partition key into that many sub-batches invoked concurrently, so order holds
//! per key. Only after every record of the batch succeeded, was filtered out, or went to the
//! on-failure destination does the worker write the checkpoint (sequence number, tumbling
//! window state) to the catalog; then it cuts the next batch. A stop (shutdown, update,
//! delete, kill) between an invocation and its checkpoint replays that batch after the
//! restart: at-least-once.
//!
//! Failures: a failed invocation is retried after a backoff doubling from
//! `retry_backoff_ms_min` to `retry_backoff_ms_max`. With `BisectBatchOnFunctionError` a
//! failed batch of several records is split in two first (a split does not count as a
//! retry). With `ReportBatchItemFailures` the function names the records that failed; the
//! batch is retried from the lowest of them (a malformed list fails the whole batch). After
//! `MaximumRetryAttempts` retries, or once records are older than
//! `MaximumRecordAgeInSeconds`, they go to the OnFailure destination (or are dropped, with a
//! warning, when there is none) and the shard moves on.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use millrace_streams::RequestContext;
use millrace_wire::EpochMillis;
use millrace_wire::kinesis as k;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::destination::{self, Condition, Destination};
use crate::error::InvokeError;
use crate::filter::Filter;
use crate::invoke::{self, EVENT_OVERHEAD_BYTES, PAYLOAD_BYTES_MAX, STATE_BYTES_MAX, StreamRecord};
use crate::model::{MappingRecord, ShardCheckpoint, StartingPosition, WindowCheckpoint};
use crate::{Inner, MappingHandle};

/// How often the shard list is refreshed (new shards after resharding).
const LIST_SHARDS_INTERVAL_MS: u64 = 5_000;
/// Pages of ListShards read at most per refresh.
const LIST_SHARDS_PAGES_MAX: usize = 100;
/// Records asked for per GetRecords (the Kinesis maximum).
const GET_RECORDS_LIMIT: i32 = 10_000;
/// Backoff after a failed read or a failed checkpoint write.
const ERROR_BACKOFF_MS: u64 = 1_000;
/// Shards of one mapping being read at once at most.
const SHARD_WORKERS_MAX: usize = 1_000;

const RESULT_OK: &str = "OK";
const RESULT_PROBLEM: &str = "PROBLEM: Function call failed";

/// The worker was told to stop; nothing after the last checkpoint counts as handled.
#[derive(Debug)]
struct Stopped;

pub(crate) async fn run_mapping(
    inner: Arc<Inner>,
    handle: Arc<MappingHandle>,
    stop: CancellationToken,
) {
    let _lease = tokio::select! {
        lease = handle.lease.clone().lock_owned() => lease,
        () = stop.cancelled() => return,
    };
    if stop.is_cancelled() {
        return;
    }
    let mapping = handle.record.read().clone();
    let parts: Vec<&str> = mapping.stream_arn.split(':').collect();
    let ctx = RequestContext {
        account: parts.get(4).copied().unwrap_or_default().to_string(),
        region: parts.get(3).copied().unwrap_or_default().to_string(),
        request_id: format!("esm-{}", mapping.uuid),
        principal: None,
    };
    let filters: Arc<Vec<Filter>> = Arc::new(
        mapping
            .filters
            .iter()
            .filter_map(|p| Filter::parse(p).ok())
            .collect(),
    );
    tracing::info!(mapping = %mapping.uuid, source = %mapping.event_source_arn, function = %mapping.function_arn, "event source mapping started");
    let mut finished: HashSet<String> = HashSet::new();
    let mut running: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut workers: JoinSet<bool> = JoinSet::new();
    let mut next_list = Instant::now();
    loop {
        if Instant::now() >= next_list {
            match list_shards(&inner, &ctx, &mapping.stream_arn).await {
                Ok(shards) => {
                    let listed: HashSet<&String> = shards.iter().map(|(id, _)| id).collect();
                    for (id, _) in &shards {
                        if !finished.contains(id)
                            && inner.load_checkpoint(&mapping.uuid, id).finished
                        {
                            finished.insert(id.clone());
                        }
                    }
                    for (id, parents) in &shards {
                        let busy = running.values().any(|r| r == id);
                        let ready = parents
                            .iter()
                            .all(|p| finished.contains(p) || !listed.contains(p));
                        if busy || finished.contains(id) || !ready {
                            continue;
                        }
                        if running.len() >= SHARD_WORKERS_MAX {
                            break;
                        }
                        let worker = ShardWorker {
                            inner: inner.clone(),
                            handle: handle.clone(),
                            checkpoint: inner.load_checkpoint(&mapping.uuid, id),
                            mapping: mapping.clone(),
                            ctx: ctx.clone(),
                            shard_id: id.clone(),
                            stop: stop.child_token(),
                            filters: filters.clone(),
                            iterator: None,
                            pending: VecDeque::new(),
                            pending_since: None,
                            ended: false,
                        };
                        let task = workers.spawn(worker.run());
                        running.insert(task.id(), id.clone());
                    }
                    next_list = Instant::now() + Duration::from_millis(LIST_SHARDS_INTERVAL_MS);
                }
                Err(error) => {
                    tracing::debug!(mapping = %mapping.uuid, %error, "cannot list the source's shards");
                    next_list = Instant::now() + Duration::from_millis(ERROR_BACKOFF_MS);
                }
            }
        }
        tokio::select! {
            Some(joined) = workers.join_next_with_id() => {
                let (id, done) = match joined {
                    Ok((id, done)) => (id, done),
                    Err(error) => {
                        tracing::error!(mapping = %mapping.uuid, %error, "a shard worker failed");
                        (error.id(), false)
                    }
                };
                if let Some(shard_id) = running.remove(&id)
                    && done
                {
                    finished.insert(shard_id);
                    next_list = Instant::now();
                }
            }
            () = tokio::time::sleep_until(next_list.into()) => {}
            () = stop.cancelled() => break,
        }
    }
    while workers.join_next().await.is_some() {}
    tracing::info!(mapping = %mapping.uuid, "event source mapping stopped");
}

/// Every shard of the stream with its parents.
async fn list_shards(
    inner: &Inner,
    ctx: &RequestContext,
    stream_arn: &str,
) -> Result<Vec<(String, Vec<String>)>, String> {
    let mut out = Vec::new();
    let mut next_token: Option<String> = None;
    for _ in 0..LIST_SHARDS_PAGES_MAX {
        let input = match &next_token {
            Some(token) => k::ListShardsInput {
                next_token: Some(token.clone()),
                ..Default::default()
            },
            None => k::ListShardsInput {
                stream_arn: Some(stream_arn.to_string()),
                ..Default::default()
            },
        };
        let response = inner
            .streams
            .handle(ctx, k::Request::ListShards(input))
            .await
            .map_err(|e| e.to_string())?;
        let k::Response::ListShards(output) = response else {
            return Err("unexpected ListShards answer".into());
        };
        for shard in output.shards.unwrap_or_default() {
            let parents = shard
                .parent_shard_id
                .into_iter()
                .chain(shard.adjacent_parent_shard_id)
                .collect();
            out.push((shard.shard_id, parents));
        }
        next_token = output.next_token;
        if next_token.is_none() {
            break;
        }
    }
    Ok(out)
}

struct Batch {
    records: Vec<StreamRecord>,
    /// The last record taken (delivered or filtered out).
    last_sequence_number: String,
    window_start_ms: Option<i64>,
}

/// The tumbling window an invocation belongs to.
struct WindowArg {
    start_ms: i64,
    end_ms: i64,
    state: Value,
    is_final: bool,
}

struct ShardWorker {
    inner: Arc<Inner>,
    handle: Arc<MappingHandle>,
    mapping: Arc<MappingRecord>,
    ctx: RequestContext,
    shard_id: String,
    stop: CancellationToken,
    filters: Arc<Vec<Filter>>,
    checkpoint: ShardCheckpoint,
    iterator: Option<String>,
    /// Records read and not yet in a batch, in shard order.
    pending: VecDeque<StreamRecord>,
    pending_since: Option<Instant>,
    /// The shard is closed and every record of it was read.
    ended: bool,
}

impl ShardWorker {
    /// Runs until stopped (false) or the shard is finished (true).
    async fn run(mut self) -> bool {
        let poll = Duration::from_millis(self.inner.config.poll_interval_ms);
        loop {
            if self.stop.is_cancelled() {
                return false;
            }
            if !self.ended
                && self.pending.len() < self.mapping.batch_size as usize
                && let Err(error) = self.fetch().await
            {
                tracing::debug!(mapping = %self.mapping.uuid, shard = %self.shard_id, %error, "reading the shard failed");
                if self
                    .pause(Duration::from_millis(ERROR_BACKOFF_MS))
                    .await
                    .is_err()
                {
                    return false;
                }
                continue;
            }
            if let Some(batch) = self.take_batch() {
                if self.process(batch).await.is_err() {
                    return false;
                }
                continue;
            }
            if self.ended && self.pending.is_empty() {
                if self.checkpoint.window.is_some() && self.close_window().await.is_err() {
                    return false;
                }
                self.checkpoint.finished = true;
                if self.save().await.is_err() {
                    return false;
                }
                tracing::debug!(mapping = %self.mapping.uuid, shard = %self.shard_id, "shard finished");
                return true;
            }
            if self.pending.is_empty()
                && let Some(window) = &self.checkpoint.window
                && self.inner.clock.now_millis()
                    >= window.start_ms + i64::from(self.mapping.tumbling_window_s) * 1000
                && self.close_window().await.is_err()
            {
                return false;
            }
            if self.pause(poll).await.is_err() {
                return false;
            }
        }
    }

    async fn pause(&self, duration: Duration) -> Result<(), Stopped> {
        tokio::select! {
            () = tokio::time::sleep(duration) => Ok(()),
            () = self.stop.cancelled() => Err(Stopped),
        }
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let config = &self.inner.config;
        let ms = config
            .retry_backoff_ms_min
            .saturating_mul(1u64 << attempts.saturating_sub(1).min(20))
            .min(config.retry_backoff_ms_max);
        Duration::from_millis(ms)
    }

    async fn call(&self, request: k::Request) -> Result<k::Response, millrace_streams::Error> {
        self.inner.streams.handle(&self.ctx, request).await
    }

    async fn shard_iterator(&self) -> Result<String, String> {
        let m = &self.mapping;
        let (iterator_type, sequence, timestamp) = match &self.checkpoint.after_sequence_number {
            Some(sequence) => (
                k::ShardIteratorType::AfterSequenceNumber,
                Some(sequence.clone()),
                None,
            ),
            None => match m.starting_position {
                StartingPosition::TrimHorizon => (k::ShardIteratorType::TrimHorizon, None, None),
                // LATEST is fixed at the mapping's creation, so a restart before the first
                // batch does not skip what arrived in between.
                StartingPosition::Latest => (
                    k::ShardIteratorType::AtTimestamp,
                    None,
                    Some(EpochMillis(m.created_ms)),
                ),
                StartingPosition::AtTimestamp => (
                    k::ShardIteratorType::AtTimestamp,
                    None,
                    Some(EpochMillis(m.starting_position_timestamp_ms.unwrap_or(0))),
                ),
            },
        };
        let input = |t: k::ShardIteratorType, s: Option<String>, ts: Option<EpochMillis>| {
            k::GetShardIteratorInput {
                dry_run: None,
                shard_id: self.shard_id.clone(),
                shard_iterator_type: t,
                starting_sequence_number: s,
                stream_arn: Some(m.stream_arn.clone()),
                stream_id: None,
                stream_name: None,
                timestamp: ts,
            }
        };
        let response = match self
            .call(k::Request::GetShardIterator(input(
                iterator_type,
                sequence,
                timestamp,
            )))
            .await
        {
            Ok(response) => response,
            Err(error) if self.checkpoint.after_sequence_number.is_some() => {
                tracing::warn!(mapping = %m.uuid, shard = %self.shard_id, %error, "cannot resume after the checkpoint; reading from TRIM_HORIZON");
                self.call(k::Request::GetShardIterator(input(
                    k::ShardIteratorType::TrimHorizon,
                    None,
                    None,
                )))
                .await
                .map_err(|e| e.to_string())?
            }
            Err(error) => return Err(error.to_string()),
        };
        match response {
            k::Response::GetShardIterator(output) => output
                .shard_iterator
                .ok_or_else(|| "no shard iterator".to_string()),
            _ => Err("unexpected GetShardIterator answer".into()),
        }
    }

    /// One GetRecords into `pending`.
    async fn fetch(&mut self) -> Result<(), String> {
        let iterator = match self.iterator.take() {
            Some(iterator) => iterator,
            None => self.shard_iterator().await?,
        };
        let input = k::GetRecordsInput {
            limit: Some(GET_RECORDS_LIMIT),
            shard_iterator: iterator,
            stream_arn: Some(self.mapping.stream_arn.clone()),
            ..Default::default()
        };
        let output = match self.call(k::Request::GetRecords(input)).await {
            Ok(k::Response::GetRecords(output)) => output,
            Ok(_) => return Err("unexpected GetRecords answer".into()),
            Err(error) => return Err(error.to_string()),
        };
        if self.pending.is_empty() && !output.records.is_empty() {
            self.pending_since = Some(Instant::now());
        }
        for record in output.records {
            self.pending.push_back(StreamRecord {
                sequence_number: record.sequence_number,
                partition_key: record.partition_key.unwrap_or_default(),
                data: record.data,
                arrival_ms: record.approximate_arrival_timestamp.map_or(0, |t| t.0),
            });
        }
        match output.next_shard_iterator {
            Some(next) => self.iterator = Some(next),
            None => self.ended = true,
        }
        Ok(())
    }

    fn window_start(&self, arrival_ms: i64) -> i64 {
        let width_ms = i64::from(self.mapping.tumbling_window_s) * 1000;
        arrival_ms.div_euclid(width_ms) * width_ms
    }

    /// The next batch, when one is due.
    fn take_batch(&mut self) -> Option<Batch> {
        let m = &self.mapping;
        if self.pending.is_empty() {
            return None;
        }
        let budget = PAYLOAD_BYTES_MAX - EVENT_OVERHEAD_BYTES;
        let pending_bytes: usize = self.pending.iter().map(StreamRecord::event_bytes).sum();
        let window_ms = u64::from(m.batching_window_s) * 1000;
        let due = self.ended
            || window_ms == 0
            || self.pending.len() >= m.batch_size as usize
            || pending_bytes >= budget
            || self
                .pending_since
                .is_some_and(|since| since.elapsed() >= Duration::from_millis(window_ms));
        if !due {
            return None;
        }
        let tumbling = m.tumbling_window_s > 0;
        let mut batch = Batch {
            records: Vec::new(),
            last_sequence_number: String::new(),
            window_start_ms: None,
        };
        let mut bytes = 0usize;
        while let Some(record) = self.pending.front() {
            if tumbling {
                let start = self.window_start(record.arrival_ms);
                match batch.window_start_ms {
                    Some(current) if current != start => break,
                    Some(_) => {}
                    None => batch.window_start_ms = Some(start),
                }
            }
            let matched = self.filters.is_empty() || {
                let view = record.filter_view();
                self.filters.iter().any(|f| f.matches(&view))
            };
            if matched {
                if batch.records.len() >= m.batch_size as usize
                    || (!batch.records.is_empty() && bytes + record.event_bytes() > budget)
                {
                    break;
                }
                bytes += record.event_bytes();
            }
            let Some(record) = self.pending.pop_front() else {
                break;
            };
            batch.last_sequence_number = record.sequence_number.clone();
            if matched {
                batch.records.push(record);
            }
        }
        self.pending_since = (!self.pending.is_empty()).then(Instant::now);
        Some(batch)
    }

    /// Delivers a batch and checkpoints after it.
    async fn process(&mut self, batch: Batch) -> Result<(), Stopped> {
        if let Some(start_ms) = batch.window_start_ms {
            if self
                .checkpoint
                .window
                .as_ref()
                .is_some_and(|w| w.start_ms != start_ms)
            {
                self.close_window().await?;
            }
            let state = self
                .checkpoint
                .window
                .as_ref()
                .map_or_else(|| json!({}), |w| w.state.clone());
            let state = if batch.records.is_empty() {
                state
            } else {
                let window = WindowArg {
                    start_ms,
                    end_ms: start_ms + i64::from(self.mapping.tumbling_window_s) * 1000,
                    state: state.clone(),
                    is_final: false,
                };
                self.deliver(batch.records, Some(window))
                    .await?
                    .unwrap_or(state)
            };
            self.checkpoint.window = Some(WindowCheckpoint { start_ms, state });
        } else if !batch.records.is_empty() {
            let factor = self.mapping.parallelization_factor.max(1) as usize;
            if factor == 1 {
                self.deliver(batch.records, None).await?;
            } else {
                let mut groups: Vec<Vec<StreamRecord>> = vec![Vec::new(); factor];
                for record in batch.records {
                    let mut hasher = std::collections::hash_map::DefaultHasher::new();
                    record.partition_key.hash(&mut hasher);
                    let group_idx = (hasher.finish() % factor as u64) as usize;
                    if let Some(group) = groups.get_mut(group_idx) {
                        group.push(record);
                    }
                }
                let this = &*self;
                let results = futures::future::join_all(
                    groups
                        .into_iter()
                        .filter(|g| !g.is_empty())
                        .map(|g| this.deliver(g, None)),
                )
                .await;
                for result in results {
                    result?;
                }
            }
        }
        self.checkpoint.after_sequence_number = Some(batch.last_sequence_number);
        self.save().await
    }

    /// Invokes the function with the window's final call and forgets the window.
    async fn close_window(&mut self) -> Result<(), Stopped> {
        let Some(window) = self.checkpoint.window.clone() else {
            return Ok(());
        };
        let arg = WindowArg {
            start_ms: window.start_ms,
            end_ms: window.start_ms + i64::from(self.mapping.tumbling_window_s) * 1000,
            state: window.state,
            is_final: true,
        };
        self.deliver(Vec::new(), Some(arg)).await?;
        self.checkpoint.window = None;
        self.save().await
    }

    /// Writes the checkpoint, retrying until it is stored or the worker is stopped.
    async fn save(&self) -> Result<(), Stopped> {
        loop {
            match self
                .inner
                .save_checkpoint(&self.mapping.uuid, &self.shard_id, &self.checkpoint)
            {
                Ok(()) => return Ok(()),
                Err(error) => {
                    tracing::error!(mapping = %self.mapping.uuid, shard = %self.shard_id, %error, "cannot write the checkpoint");
                    self.pause(Duration::from_millis(ERROR_BACKOFF_MS)).await?;
                }
            }
        }
    }

    fn source(&self) -> invoke::Source<'_> {
        invoke::Source {
            event_source_arn: &self.mapping.stream_arn,
            region: &self.mapping.region,
            shard_id: &self.shard_id,
            identity_arn: &self.mapping.function_arn,
        }
    }

    fn event(&self, records: &[StreamRecord], window: Option<&WindowArg>) -> Value {
        let window = window.map(|w| invoke::Window {
            start_ms: w.start_ms,
            end_ms: w.end_ms,
            state: &w.state,
            is_final: w.is_final,
        });
        invoke::event(&self.source(), records, window.as_ref())
    }

    /// Delivers `records` (retries, bisection, partial failures, on-failure); the state
    /// the last successful invocation returned, with tumbling windows.
    async fn deliver(
        &self,
        records: Vec<StreamRecord>,
        window: Option<WindowArg>,
    ) -> Result<Option<Value>, Stopped> {
        let m = &self.mapping;
        let mut window = window;
        let mut new_state: Option<Value> = None;
        let mut queue: VecDeque<(Vec<StreamRecord>, u32)> = VecDeque::from([(records, 0)]);
        let is_final = window.as_ref().is_some_and(|w| w.is_final);
        while let Some((mut batch, attempts)) = queue.pop_front() {
            if self.stop.is_cancelled() {
                return Err(Stopped);
            }
            if m.record_age_s_max >= 0 {
                let now_ms = self.inner.clock.now_millis();
                let age_ms_max = i64::from(m.record_age_s_max) * 1000;
                let (expired, fresh): (Vec<StreamRecord>, Vec<StreamRecord>) = batch
                    .into_iter()
                    .partition(|r| now_ms - r.arrival_ms > age_ms_max);
                if !expired.is_empty() {
                    self.fail(
                        &expired,
                        Condition::RecordAgeExceeded,
                        attempts,
                        None,
                        window.as_ref(),
                    )
                    .await?;
                }
                batch = fresh;
                if batch.is_empty() && !is_final {
                    continue;
                }
            }
            let body = serde_json::to_vec(&self.event(&batch, window.as_ref())).unwrap_or_default();
            let result = match self.inner.function_target(&m.function_arn) {
                Some((url, timeout_ms)) => tokio::select! {
                    result = invoke::invoke(&self.inner.http, &url, body, timeout_ms) => result,
                    () = self.stop.cancelled() => return Err(Stopped),
                },
                None => Err(InvokeError::NoFunction(m.function_arn.clone())),
            };
            let (failed_from, error, partial) = match result {
                Ok(answer) => {
                    if let (Some(state), Some(w)) = (answer.state, window.as_mut()) {
                        let size = serde_json::to_vec(&state).map_or(0, |v| v.len());
                        if size <= STATE_BYTES_MAX {
                            w.state = state.clone();
                            new_state = Some(state);
                        } else {
                            tracing::warn!(mapping = %m.uuid, size, "the function returned a state over 1 MB; it is ignored");
                        }
                    }
                    let failed_from = if m.report_batch_item_failures {
                        match answer.item_failures {
                            Ok(ids) if ids.is_empty() => None,
                            Ok(ids) => {
                                let positions: Option<Vec<usize>> = ids
                                    .iter()
                                    .map(|id| batch.iter().position(|r| r.sequence_number == *id))
                                    .collect();
                                // An identifier that is not in the batch fails the whole batch.
                                Some(positions.and_then(|p| p.into_iter().min()).unwrap_or(0))
                            }
                            Err(()) => Some(0),
                        }
                    } else {
                        None
                    };
                    (failed_from, None, true)
                }
                Err(error) => {
                    tracing::debug!(mapping = %m.uuid, shard = %self.shard_id, %error, "invocation failed");
                    (Some(0), Some(error), false)
                }
            };
            let Some(failed_from) = failed_from else {
                *self.handle.last_result.lock() = RESULT_OK;
                continue;
            };
            *self.handle.last_result.lock() = RESULT_PROBLEM;
            let rest: Vec<StreamRecord> = batch
                .get(failed_from..)
                .map(<[_]>::to_vec)
                .unwrap_or_default();
            if m.bisect_on_error && !partial && rest.len() > 1 {
                // A split is not a retry.
                let half = rest.len() / 2;
                let (first, second) = rest.split_at(half);
                queue.push_front((second.to_vec(), attempts));
                queue.push_front((first.to_vec(), attempts));
                continue;
            }
            let attempts = attempts + 1;
            if m.retry_attempts_max >= 0 && attempts > m.retry_attempts_max as u32 {
                self.fail(
                    &rest,
                    Condition::RetryAttemptsExhausted,
                    attempts,
                    error.as_ref(),
                    window.as_ref(),
                )
                .await?;
                continue;
            }
            self.pause(self.backoff(attempts)).await?;
            queue.push_front((rest, attempts));
        }
        Ok(new_state)
    }

    /// Sends records to the on-failure destination (retrying until it worked), or drops
    /// them when the mapping has none.
    async fn fail(
        &self,
        records: &[StreamRecord],
        condition: Condition,
        invoke_count: u32,
        error: Option<&InvokeError>,
        window: Option<&WindowArg>,
    ) -> Result<(), Stopped> {
        let m = &self.mapping;
        let destination = m.on_failure.as_deref().and_then(Destination::parse);
        let Some(destination) = destination.filter(|_| !records.is_empty()) else {
            tracing::warn!(mapping = %m.uuid, shard = %self.shard_id, n_records = records.len(), condition = condition.name(), "discarding records the function did not process");
            return Ok(());
        };
        let mut attempts = 0u32;
        loop {
            let now_ms = self.inner.clock.now_millis();
            let record = destination::failure_record(
                m,
                &self.shard_id,
                records,
                condition,
                invoke_count,
                error,
                now_ms,
            );
            let payload = self.event(records, window);
            match destination::send(
                &self.inner,
                &destination,
                m,
                &self.shard_id,
                record,
                payload,
                now_ms,
            )
            .await
            {
                Ok(()) => return Ok(()),
                Err(error) => {
                    attempts += 1;
                    tracing::warn!(mapping = %m.uuid, shard = %self.shard_id, %error, "cannot send a failure record to the on-failure destination");
                    self.pause(self.backoff(attempts)).await?;
                }
            }
        }
    }
}
