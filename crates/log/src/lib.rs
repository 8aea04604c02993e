//! The durable append-only log: opaque records at offsets in many numbered logs.
//!
//! One log per Kinesis shard, thousands per node; this crate knows nothing about Kinesis,
//! JSON or HTTP. [`Log`] is the whole public surface: `create_log`, `append` (async,
//! group-committed), `read`, `bounds`, `offset_at_timestamp`, `watch`, `trim_before`,
//! `delete_log`, `maintain`, `shutdown`. [`sim`] is a simulated disk for fault-injection
//! tests.
//!
//! # Design constraints
//! - An acknowledged append is on stable storage: the writer writes the WAL, `fdatasync`s,
//!   then answers. Concurrent appends to any logs share one fsync (group commit); one
//!   `append` call is one WAL frame, all-or-nothing. Thousands of logs never mean thousands
//!   of fsyncs per batch: segment files are only fsynced at checkpoints.
//! - A record is readable only once durable: readers never look past the published end
//!   offset, which moves only after the fsync.
//! - With fsync on, bulk data skips the page cache both ways: the WAL and large segment
//!   runs are written with direct IO, and segment ranges the cache does not hold are read
//!   with direct IO (`direct.rs`, `read.rs`). The on-disk format is the same either way.
//! - Every record on disk is framed with its length and a CRC32C. Recovery truncates a torn
//!   tail; data that fails its checksum is an error ([`LogError::Corrupt`]), never served.
//! - A failed fsync poisons the log ([`LogError::Poisoned`]): nothing is retried as if it
//!   had worked (the "fsyncgate" lesson). Reopen to recover. So does any failure that
//!   leaves the files in a state the writer cannot tell.
//! - A full disk is not a poison. A WAL write that fails before its fsync (`ENOSPC`, or any
//!   other write error) is cut off again (truncate + fsync back to the last acknowledged
//!   frame) and fails only the appends of that group ([`LogError::StorageFull`] or
//!   [`LogError::Io`]); reads keep working and writes succeed again once space returns. A
//!   segment copy that fails after the WAL fsync is rolled back and kept as a backlog:
//!   those appends are acknowledged (they are durable in the WAL), become readable when a
//!   later retry copies them, and no checkpoint passes them until then; new appends are
//!   refused with the copy's error while a backlog remains. Checkpoints that fail for
//!   space are retried later.
//! - Reads by offset and by timestamp are sparse-index lookups plus a scan of at most one
//!   index interval; retention deletes whole segment files; per-log memory is bounded
//!   (no in-memory index proportional to the data). The WAL rolls and checkpoints at
//!   `wal_segment_bytes_max` and when its active segment is `wal_age_ms_max` old, so data
//!   trimmed from the segments leaves the WAL too, even under low traffic.
//! - Open files go through a bounded cache (`open_files_max`); requests through a bounded
//!   queue ([`APPEND_QUEUE_DEPTH_MAX`], backpressure); records and appends have size caps.
//! - One process at a time: `open` takes an exclusive lock on `lock` in the directory
//!   ([`LogError::Locked`] otherwise); the kernel releases it when the process dies.
//! - IO goes through the [`Storage`] trait and time through the [`Clock`] trait, so tests
//!   can count fsyncs and a simulation can inject faults ([`sim`]).
//!
//! # On disk (`LogConfig::dir`)
//! ```text
//! lock                                   held (flock) while a Log has the directory open
//! checkpoint                             last checkpoint (see `format` for every layout)
//! wal/<first WAL position, 20 digits>.wal   shared write-ahead log segments
//! logs/<log id, 20 digits>/<base offset, 20 digits>.seg   records of one log
//! logs/<log id, 20 digits>/<base offset, 20 digits>.idx   sparse index + seal of a segment
//! logs/<log id, 20 digits>.deleted/      a log being deleted (removed by recovery)
//! ```
//! A WAL position is a byte position in the concatenation of all WAL segments.
//!
//! # Recovery
//! Load the checkpoint; for each log truncate its active segment back to the state the
//! checkpoint recorded (everything before it was fsynced), drop segments created after it
//! and segments cut off by a trim, then replay every WAL frame after the checkpoint's
//! position through the live write path (records below a log's end are skipped, records of
//! unknown logs are skipped). The first torn or invalid frame ends the WAL (it is
//! truncated there), unless a frame of a later group commit follows it: that frame was
//! written after the invalid one was fsynced, so the invalid one is damage, not a torn
//! write, and opening fails with [`LogError::Corrupt`] rather than dropping acknowledged
//! records. Finally a checkpoint makes the replayed state durable.

mod clock;
mod direct;
mod error;
mod files;
mod format;
mod read;
mod recovery;
pub mod sim;
mod state;
mod storage;
mod writer;

use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, JoinHandle, Thread};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};

pub use clock::{Clock, ManualClock, OffsetClock, SystemClock};
pub use error::LogError;
pub use storage::{OsStorage, Storage, StorageFile, StorageLock};

use state::{LogState, Shared};
use writer::{AppendRequest, ControlOp, ControlRequest, Request};

/// Identifies one log (one shard).
pub type LogId = u64;

/// Most records in one `append` call.
pub const APPEND_RECORDS_MAX: usize = 100_000;
/// Most payload bytes in one `append` call.
pub const APPEND_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Requests (appends and control operations) queued for the writer before `append` waits.
pub const APPEND_QUEUE_DEPTH_MAX: usize = 1024;
/// Bytes of segment data between two index entries.
pub const INDEX_INTERVAL_BYTES: usize = 4096;

const DEFAULT_SEGMENT_BYTES_MAX: u64 = 64 * 1024 * 1024;
const DEFAULT_RECORD_BYTES_MAX: usize = 10 * 1024 * 1024 + 64 * 1024;
const DEFAULT_WAL_SEGMENT_BYTES_MAX: u64 = 128 * 1024 * 1024;
const DEFAULT_GROUP_COMMIT_BYTES_MAX: usize = 16 * 1024 * 1024;
const DEFAULT_WAL_AGE_MS_MAX: i64 = 60 * 60 * 1000;
const DEFAULT_MAINTENANCE_INTERVAL_MS: u64 = 1000;

// One append must fit one WAL frame, whose length field is a u32.
const _: () = assert!(
    format::WAL_FRAME_HEADER_BYTES
        + 8
        + APPEND_RECORDS_MAX * format::WAL_RECORD_HEADER_BYTES
        + APPEND_BYTES_MAX
        <= u32::MAX as usize
);
const _: () = assert!(DEFAULT_RECORD_BYTES_MAX <= APPEND_BYTES_MAX);
const _: () = assert!(DEFAULT_RECORD_BYTES_MAX as u64 <= DEFAULT_SEGMENT_BYTES_MAX);
const _: () = assert!(DEFAULT_SEGMENT_BYTES_MAX <= DEFAULT_WAL_SEGMENT_BYTES_MAX);
const _: () = assert!(INDEX_INTERVAL_BYTES as u64 <= DEFAULT_SEGMENT_BYTES_MAX);

pub(crate) const WAL_DIR_NAME: &str = "wal";
pub(crate) const LOGS_DIR_NAME: &str = "logs";
pub(crate) const LOCK_FILE_NAME: &str = "lock";

/// Whether an acknowledged append waits for `fdatasync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge after the WAL frame is fsynced (the default).
    Fsync,
    /// Acknowledge after the WAL frame is written to the OS; a power loss can lose
    /// acknowledged records (a process crash cannot).
    OsBuffered,
}

/// Configuration of one [`Log`]; [`LogConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Directory holding everything the log stores.
    pub dir: PathBuf,
    pub durability: Durability,
    /// A segment rolls before it would grow past this (a single larger record gets a
    /// segment of its own).
    pub segment_bytes_max: u64,
    /// A segment rolls when a record is this much newer than the segment's first record, so
    /// retention can delete it whole.
    pub segment_age_ms_max: i64,
    /// The WAL starts a new segment and checkpoints when its segment reaches this size.
    pub wal_segment_bytes_max: u64,
    /// The WAL also starts a new segment and checkpoints when its active segment's first
    /// frame is this old (by the log's clock), so that the WAL segments holding only old
    /// records are deleted under low traffic too: retention must really delete data.
    pub wal_age_ms_max: i64,
    /// How often an idle writer wakes up (real time) to do its periodic work: the WAL age
    /// check, retrying a checkpoint or a segment copy that failed for space. `None`: only
    /// when a request comes or [`Log::maintain`] is called (deterministic simulations).
    pub maintenance_interval_ms: Option<u64>,
    /// Payload bytes the writer gathers into one group commit (more if one append is larger).
    pub group_commit_bytes_max: usize,
    /// Largest payload of one record; at most [`APPEND_BYTES_MAX`].
    pub record_bytes_max: usize,
    /// Segment and index files kept open at most.
    pub open_files_max: usize,
}

impl LogConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogConfig {
            dir: dir.into(),
            durability: Durability::Fsync,
            segment_bytes_max: DEFAULT_SEGMENT_BYTES_MAX,
            segment_age_ms_max: 60 * 60 * 1000,
            wal_segment_bytes_max: DEFAULT_WAL_SEGMENT_BYTES_MAX,
            wal_age_ms_max: DEFAULT_WAL_AGE_MS_MAX,
            maintenance_interval_ms: Some(DEFAULT_MAINTENANCE_INTERVAL_MS),
            group_commit_bytes_max: DEFAULT_GROUP_COMMIT_BYTES_MAX,
            record_bytes_max: DEFAULT_RECORD_BYTES_MAX,
            open_files_max: 1024,
        }
    }

    fn validate(&self) -> Result<(), LogError> {
        let checks = [
            (
                self.record_bytes_max <= APPEND_BYTES_MAX,
                "record_bytes_max exceeds APPEND_BYTES_MAX",
            ),
            (
                self.segment_bytes_max > 0,
                "segment_bytes_max must be positive",
            ),
            (
                self.segment_age_ms_max > 0,
                "segment_age_ms_max must be positive",
            ),
            (
                self.wal_segment_bytes_max > 0,
                "wal_segment_bytes_max must be positive",
            ),
            (self.wal_age_ms_max > 0, "wal_age_ms_max must be positive"),
            (
                self.maintenance_interval_ms.is_none_or(|ms| ms > 0),
                "maintenance_interval_ms must be positive",
            ),
            (
                self.group_commit_bytes_max > 0,
                "group_commit_bytes_max must be positive",
            ),
            (
                self.open_files_max >= 2,
                "open_files_max must be at least 2",
            ),
        ];
        match checks.into_iter().find(|(ok, _)| !ok) {
            Some((_, reason)) => Err(LogError::InvalidConfig { reason }),
            None => Ok(()),
        }
    }
}

/// One record to append.
#[derive(Clone, Debug)]
pub struct AppendRecord {
    pub log_id: LogId,
    pub payload: Bytes,
}

/// Where an appended record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub offset: u64,
    pub timestamp_ms: i64,
}

/// One stored record.
#[derive(Clone, Debug)]
pub struct Record {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub payload: Bytes,
}

/// The answer to [`Log::read`].
#[derive(Clone, Debug)]
pub struct ReadResult {
    pub records: Vec<Record>,
    /// The offset after the last record returned (where to read next).
    pub next_offset: u64,
    /// The log's end offset when the read started.
    pub end_offset: u64,
}

/// The readable range of a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub start_offset: u64,
    pub end_offset: u64,
    /// Timestamp of the newest record ever appended (kept after trims), `None` if none.
    pub last_timestamp_ms: Option<i64>,
}

/// A handle to the log store; cheap to clone, all clones share one writer.
#[derive(Clone)]
pub struct Log {
    inner: Arc<LogInner>,
}

struct LogInner {
    shared: Arc<Shared>,
    requests: mpsc::Sender<Request>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for LogInner {
    /// The last handle gone without `shutdown`: stop the writer as a crash would (no
    /// checkpoint; recovery replays the WAL) and wait for it, so the directory lock is free
    /// for the next `open` once this returns.
    fn drop(&mut self) {
        if let Some(writer_thread) = self.writer_thread.get_mut().take() {
            let (reply, _answer) = oneshot::channel();
            let request = Request::Control(ControlRequest {
                op: ControlOp::Abandon,
                reply,
            });
            if block_on(self.requests.send(request)).is_ok() {
                let _ = writer_thread.join();
            }
        }
    }
}

impl Log {
    /// Recovers the store in `config.dir` (creating it if needed) and starts the writer.
    pub fn open(config: LogConfig, clock: Arc<dyn Clock>) -> Result<Log, LogError> {
        Log::open_with_storage(config, clock, Arc::new(OsStorage))
    }

    /// [`Log::open`] over another [`Storage`] (fault injection, fsync counting).
    pub fn open_with_storage(
        config: LogConfig,
        clock: Arc<dyn Clock>,
        storage: Arc<dyn Storage>,
    ) -> Result<Log, LogError> {
        config.validate()?;
        let writer = recovery::recover(config, clock, storage)?;
        let shared = Arc::clone(&writer.shared);
        let (requests, receiver) = mpsc::channel(APPEND_QUEUE_DEPTH_MAX);
        let writer_thread = thread::Builder::new()
            .name("millrace-log-writer".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(LogError::io("spawn writer thread", &shared.config.dir))?;
        Ok(Log {
            inner: Arc::new(LogInner {
                shared,
                requests,
                writer_thread: Mutex::new(Some(writer_thread)),
            }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    fn check_open(&self) -> Result<(), LogError> {
        if self.shared().closed.load(Ordering::SeqCst) {
            return Err(LogError::Closed);
        }
        Ok(())
    }

    fn log_state(&self, log_id: LogId) -> Result<Arc<LogState>, LogError> {
        self.check_open()?;
        self.shared()
            .log(log_id)
            .ok_or(LogError::UnknownLog { log_id })
    }

    /// Appends `records` durably. Returns one result per record, in input order; records of
    /// the same log get consecutive offsets in input order. All or nothing: on error no
    /// record of this call is acknowledged (though after `Poisoned`, `Io` or `StorageFull`
    /// some may be on disk and show up after a reopen, at offsets never acknowledged).
    pub async fn append(&self, records: Vec<AppendRecord>) -> Result<Vec<Appended>, LogError> {
        let payload_bytes = self.validate_append(&records)?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.inner
            .requests
            .send(Request::Append(AppendRequest {
                records,
                payload_bytes,
                reply,
            }))
            .await
            .map_err(|_| LogError::Closed)?;
        answer.await.map_err(|_| LogError::Closed)?
    }

    /// Several appends committed as one group (one WAL write, one fsync), in order; one
    /// result per append. The writer forms such groups by itself from concurrent appends;
    /// this makes one deterministically, for simulations. Not a stable API.
    #[doc(hidden)]
    pub async fn append_group(
        &self,
        appends: Vec<Vec<AppendRecord>>,
    ) -> Vec<Result<Vec<Appended>, LogError>> {
        let mut results: Vec<Option<Result<Vec<Appended>, LogError>>> = Vec::new();
        let mut group = Vec::new();
        let mut answers = Vec::new();
        for records in appends {
            match self.validate_append(&records) {
                Err(error) => results.push(Some(Err(error))),
                Ok(_) if records.is_empty() => results.push(Some(Ok(Vec::new()))),
                Ok(payload_bytes) => {
                    let (reply, answer) = oneshot::channel();
                    group.push(AppendRequest {
                        records,
                        payload_bytes,
                        reply,
                    });
                    answers.push((results.len(), answer));
                    results.push(None);
                }
            }
        }
        if !group.is_empty()
            && self
                .inner
                .requests
                .send(Request::Group(group))
                .await
                .is_err()
        {
            return results
                .into_iter()
                .map(|result| result.unwrap_or(Err(LogError::Closed)))
                .collect();
        }
        for (result_idx, answer) in answers {
            let result = answer.await.unwrap_or(Err(LogError::Closed));
            if let Some(slot) = results.get_mut(result_idx) {
                *slot = Some(result);
            }
        }
        results
            .into_iter()
            .map(|result| result.unwrap_or(Err(LogError::Closed)))
            .collect()
    }

    /// Checks an append against the limits before it is queued; returns its payload bytes.
    fn validate_append(&self, records: &[AppendRecord]) -> Result<usize, LogError> {
        self.check_open()?;
        if self.shared().poisoned.load(Ordering::SeqCst) {
            return Err(LogError::Poisoned);
        }
        if records.len() > APPEND_RECORDS_MAX {
            return Err(LogError::TooManyRecords {
                n_records: records.len(),
                n_records_max: APPEND_RECORDS_MAX,
            });
        }
        let record_bytes_max = self.shared().config.record_bytes_max;
        let mut payload_bytes = 0usize;
        for record in records {
            if record.payload.len() > record_bytes_max {
                return Err(LogError::RecordTooLarge {
                    size_bytes: record.payload.len(),
                    size_bytes_max: record_bytes_max,
                });
            }
            payload_bytes += record.payload.len();
        }
        if payload_bytes > APPEND_BYTES_MAX {
            return Err(LogError::AppendTooLarge {
                size_bytes: payload_bytes,
                size_bytes_max: APPEND_BYTES_MAX,
            });
        }
        let logs = self.shared().logs.read();
        if let Some(record) = records.iter().find(|r| !logs.contains_key(&r.log_id)) {
            return Err(LogError::UnknownLog {
                log_id: record.log_id,
            });
        }
        Ok(payload_bytes)
    }

    /// Runs a control operation on the writer and waits for it (blocking the thread).
    fn control(&self, op: ControlOp) -> Result<u64, LogError> {
        self.check_open()?;
        let (reply, answer) = oneshot::channel();
        let request = Request::Control(ControlRequest { op, reply });
        block_on(self.inner.requests.send(request)).map_err(|_| LogError::Closed)?;
        block_on(answer).map_err(|_| LogError::Closed)?
    }

    /// Creates log `log_id`, durably, before returning. Idempotent. Blocks the calling
    /// thread until the writer has done it (at most one group commit plus a few fsyncs).
    pub fn create_log(&self, log_id: LogId) -> Result<(), LogError> {
        self.create_logs(&[log_id])
    }

    /// Creates several logs at once (one directory fsync for the batch). Idempotent.
    pub fn create_logs(&self, log_ids: &[LogId]) -> Result<(), LogError> {
        self.control(ControlOp::CreateLogs(log_ids.to_vec()))
            .map(|_| ())
    }

    /// Deletes log `log_id` and its files; later appends to it fail with `UnknownLog`, and
    /// WAL replay never brings it back. Idempotent. Blocks the calling thread (it
    /// checkpoints).
    pub fn delete_log(&self, log_id: LogId) -> Result<(), LogError> {
        self.delete_logs(&[log_id])
    }

    /// Deletes several logs at once (one checkpoint for the batch). Idempotent.
    pub fn delete_logs(&self, log_ids: &[LogId]) -> Result<(), LogError> {
        self.control(ControlOp::DeleteLogs(log_ids.to_vec()))
            .map(|_| ())
    }

    /// Durable records with offset `>= max(from_offset, start_offset)`: up to
    /// `records_max` records and `bytes_max` payload bytes, but at least one if any is
    /// available. `next_offset` is the offset after the last record returned, or
    /// `max(from_offset, start_offset)` if none.
    pub fn read(
        &self,
        log_id: LogId,
        from_offset: u64,
        records_max: usize,
        bytes_max: usize,
    ) -> Result<ReadResult, LogError> {
        let state = self.log_state(log_id)?;
        match read::read(self.shared(), &state, from_offset, records_max, bytes_max) {
            // One more time from the disk: a bit flipped in transit is not damage at rest.
            // What fails twice is reported, never served.
            Err(LogError::Corrupt { .. }) => {
                read::read(self.shared(), &state, from_offset, records_max, bytes_max)
            }
            result => result,
        }
    }

    pub fn bounds(&self, log_id: LogId) -> Result<Bounds, LogError> {
        let state = self.log_state(log_id)?;
        let view = state.view.lock();
        Ok(Bounds {
            start_offset: view.start_offset(),
            end_offset: view.end_offset,
            last_timestamp_ms: view.last_timestamp_ms,
        })
    }

    /// The first offset (at or after the start) whose timestamp is `>= timestamp_ms`, or
    /// the end offset if there is none.
    pub fn offset_at_timestamp(&self, log_id: LogId, timestamp_ms: i64) -> Result<u64, LogError> {
        let state = self.log_state(log_id)?;
        match read::offset_at_timestamp(self.shared(), &state, timestamp_ms) {
            Err(LogError::Corrupt { .. }) => {
                read::offset_at_timestamp(self.shared(), &state, timestamp_ms)
            }
            result => result,
        }
    }

    /// A receiver of the log's end offset; it changes after every commit that appended to
    /// the log, and closes when the log is deleted.
    pub fn watch(&self, log_id: LogId) -> Result<watch::Receiver<u64>, LogError> {
        let state = self.log_state(log_id)?;
        Ok(state.end_tx.subscribe())
    }

    /// Deletes whole segments whose newest record is older than `timestamp_ms`, oldest
    /// first; returns the new start offset. Cheap when nothing is due (no writer round
    /// trip); otherwise blocks the calling thread until the writer has done it.
    pub fn trim_before(&self, log_id: LogId, timestamp_ms: i64) -> Result<u64, LogError> {
        let state = self.log_state(log_id)?;
        {
            let view = state.view.lock();
            let first_expired = view.segments.front().is_some_and(|segment| {
                segment.end_offset > segment.base_offset
                    && segment
                        .last_timestamp_ms
                        .is_some_and(|last| last < timestamp_ms)
            });
            if !first_expired {
                return Ok(view.start_offset());
            }
        }
        self.control(ControlOp::TrimBefore(log_id, timestamp_ms))
    }

    /// The ids of every live log, ascending.
    pub fn log_ids(&self) -> Vec<LogId> {
        let mut log_ids: Vec<LogId> = self.shared().logs.read().keys().copied().collect();
        log_ids.sort_unstable();
        log_ids
    }

    /// Forces a checkpoint now (tests and operators; the writer checkpoints by itself).
    pub fn checkpoint(&self) -> Result<(), LogError> {
        self.control(ControlOp::Checkpoint).map(|_| ())
    }

    /// Runs the writer's periodic work now: copies a segment backlog left by a full disk,
    /// retries a failed checkpoint, rolls the WAL if it is full or `wal_age_ms_max` old. The
    /// writer does this by itself every `maintenance_interval_ms` and before every request;
    /// this is for simulations (which turn the interval off) and tests. Returns the error
    /// of the work that still failed, if any.
    pub fn maintain(&self) -> Result<(), LogError> {
        self.control(ControlOp::Maintain).map(|_| ())
    }

    /// Stops the writer after the appends already queued, checkpoints and fsyncs
    /// everything. Later calls on any clone fail with `Closed`.
    pub fn shutdown(&self) -> Result<(), LogError> {
        let result = self.control(ControlOp::Shutdown).map(|_| ());
        self.shared().closed.store(true, Ordering::SeqCst);
        if let Some(writer_thread) = self.inner.writer_thread.lock().take() {
            let _ = writer_thread.join();
        }
        // Closed for good: another `Log` may open the directory now.
        drop(self.shared().lock.lock().take());
        result
    }
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.shared().config.dir)
            .finish_non_exhaustive()
    }
}

/// Wakes a thread parked in `block_on` or in the writer's wait for requests.
pub(crate) struct ThreadWaker(pub Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Drives `future` to completion on the current thread. Used by the synchronous control
/// calls to talk to the writer through the same queue as `append`; works inside and
/// outside a tokio runtime (it only blocks this thread; the writer is a thread of its own).
fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut context = Context::from_waker(&waker);
    // `unconstrained`: inside a tokio task whose coop budget is spent, tokio's primitives
    // would answer Pending forever, since this loop never yields back to the scheduler.
    let mut future = pin!(tokio::task::unconstrained(future));
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        thread::park();
    }
}

/// Framing entry points for `benches/`; not part of the API and not stable.
#[doc(hidden)]
pub mod bench_support {
    use crate::format;

    /// Encodes one WAL frame holding `records` (log id, offset, timestamp, payload).
    pub fn encode_wal_frame(buf: &mut Vec<u8>, records: &[(u64, u64, i64, &[u8])]) {
        let n_records = u32::try_from(records.len()).unwrap_or(u32::MAX);
        format::encode_wal_frame(
            buf,
            n_records,
            0,
            records.iter().map(
                |(log_id, offset, timestamp_ms, payload)| format::WalRecord {
                    log_id: *log_id,
                    offset: *offset,
                    timestamp_ms: *timestamp_ms,
                    payload,
                },
            ),
        );
    }

    /// Encodes segment records (offset, timestamp, payload) back to back.
    pub fn encode_segment_records(buf: &mut Vec<u8>, records: &[(u64, i64, &[u8])]) {
        for (offset, timestamp_ms, payload) in records {
            format::encode_segment_record(buf, *offset, *timestamp_ms, payload);
        }
    }

    /// Walks back-to-back segment records, verifying each checksum; returns how many
    /// checked, stopping at the first that does not.
    pub fn verify_segment_records(mut bytes: &[u8]) -> usize {
        let mut n_checked = 0;
        while let Some((header, rest)) =
            bytes.split_first_chunk::<{ format::SEGMENT_RECORD_HEADER_BYTES }>()
        {
            let header = format::decode_segment_header(*header);
            let Some((payload, rest)) = usize::try_from(header.payload_len)
                .ok()
                .and_then(|len| rest.split_at_checked(len))
            else {
                break;
            };
            if !header.checks(payload) {
                break;
            }
            n_checked += 1;
            bytes = rest;
        }
        n_checked
    }
}
