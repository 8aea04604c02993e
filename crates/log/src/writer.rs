//! The writer thread: group commit into the WAL, copies into segments, checkpoints, and the
//! control operations (create, delete, trim) that change which files exist.
//!
//! One std thread owns every piece of write state, so nothing here needs a lock except to
//! publish to readers. A group is: take the first queued request, drain what else is queued
//! (up to `group_commit_bytes_max`), assign offsets and timestamps, encode one WAL frame per
//! request into one buffer, `write` it, `fdatasync` once, copy the records into the
//! per-log segment files, publish the new end offsets, then answer every request. A log's
//! run of at least `DIRECT_SEGMENT_RUN_BYTES_MIN` bytes is written to its segment with
//! direct IO when the WAL is (fsync on; see `direct.rs`), in whole blocks, leaving zeros up
//! to the next block that the next run overwrites and that a roll cuts off; smaller runs go
//! through the page cache (page cache only; each whole MiB written is queued for writeback
//! at once, so checkpoints find little to flush).
//!
//! What a failure costs depends on where it happens:
//! - The WAL `write` fails (a full disk, or any error before the fsync): nothing of the
//!   group is acknowledged. The WAL is cut back to where the group started and that cut is
//!   fsynced, the offsets handed out are taken back, and the group's appends get the error
//!   (`StorageFull` or `Io`). The log stays writable. If the cut itself fails, the WAL's
//!   state is unknown: poison.
//! - The WAL `fdatasync` fails: poison (fsyncgate: the kernel may have dropped the pages
//!   and a later fsync would "succeed" without them). Nothing of the group is acknowledged.
//! - A segment copy fails after the fsync: the records are durable in the WAL, so the
//!   appends are acknowledged. The failed log's segment files are cut back to their state
//!   before the copy (`undo_run`) and its records wait in `backlog`, unpublished; a later
//!   `maintain` copies them. While a backlog remains, new appends are refused with the
//!   copy's error and no checkpoint is written (a checkpoint past their WAL frames would
//!   drop them). If the cut back fails, poison; recovery copies them from the WAL.
//! - A checkpoint fails writing its file (space): no poison, retried by `maintain`. Any
//!   failed fsync in it poisons.
//!
//! Checkpoint: fsync every segment and index file dirtied since the previous checkpoint and
//! every directory whose entries changed, record each log's end state with the WAL position
//! it covers (temp file, fsync, rename, fsync dir), then delete the WAL segments before it.
//! It runs when the WAL segment outgrows `wal_segment_bytes_max` or its first frame is
//! `wal_age_ms_max` old (after the WAL rolls to a new segment), in `delete_log`, at the end
//! of recovery, and at shutdown.
//!
//! Recovery (in `recovery`) replays the WAL through the same `append_run` the live path
//! uses, so segment roll and index decisions are identical after a crash.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::direct::{DirectAppender, open_active};
use crate::error::{LogError, Result};
use crate::files::{FileCache, FileKey, log_dir};
use crate::format::{
    Checkpoint, CheckpointLog, INDEX_ENTRY_BYTES, IndexEntry, IndexEntryKind, WAL_EXTENSION,
    WalRecord, encode_segment_record, encode_wal_frame, numbered_name, wal_frame_bytes,
};
use crate::state::{LogState, LogView, SegmentMeta, Shared};
use crate::storage::{StorageFile, remove_dir_with_files};
use crate::{AppendRecord, Appended, Durability, INDEX_INTERVAL_BYTES, LogId, ThreadWaker};

pub(crate) const CHECKPOINT_FILE_NAME: &str = "checkpoint";
pub(crate) const CHECKPOINT_TEMP_FILE_NAME: &str = "checkpoint.tmp";
/// Suffix a log directory gets while it is being deleted.
pub(crate) const DELETED_DIR_SUFFIX: &str = ".deleted";

pub(crate) enum Request {
    Append(AppendRequest),
    /// Appends to commit as one group, as they are (see `Log::append_group`).
    Group(Vec<AppendRequest>),
    Control(ControlRequest),
}

pub(crate) struct AppendRequest {
    pub records: Vec<AppendRecord>,
    pub payload_bytes: usize,
    pub reply: oneshot::Sender<Result<Vec<Appended>>>,
}

pub(crate) struct ControlRequest {
    pub op: ControlOp,
    pub reply: oneshot::Sender<Result<u64>>,
}

#[derive(Clone, Debug)]
pub(crate) enum ControlOp {
    CreateLogs(Vec<LogId>),
    DeleteLogs(Vec<LogId>),
    TrimBefore(LogId, i64),
    Checkpoint,
    Maintain,
    Shutdown,
    /// Stop at once, as a crash would: no checkpoint (the last handle was dropped).
    Abandon,
}

/// One record on its way into a segment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentRecord<'a> {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub payload: &'a [u8],
}

/// An acknowledged record whose segment copy failed; it waits for `drain_backlog`.
struct BacklogRecord {
    offset: u64,
    timestamp_ms: i64,
    payload: Bytes,
}

/// The writer's state of one log.
pub(crate) struct WriterLog {
    pub state: Arc<LogState>,
    /// Offset of the next record written to the segments.
    pub next_offset: u64,
    pub last_timestamp_ms: Option<i64>,
    /// Next offset and newest timestamp handed out (ahead of `next_offset` between
    /// assignment and segment copy, and while the log has a backlog).
    pub assign_offset: u64,
    pub assign_timestamp_ms: Option<i64>,
    pub active: SegmentMeta,
    /// Segments sealed since the last publish.
    pub sealed: Vec<SegmentMeta>,
}

impl WriterLog {
    pub fn new(state: Arc<LogState>, active: SegmentMeta, last_timestamp_ms: Option<i64>) -> Self {
        WriterLog {
            state,
            next_offset: active.end_offset,
            last_timestamp_ms,
            assign_offset: active.end_offset,
            assign_timestamp_ms: last_timestamp_ms,
            active,
            sealed: Vec::new(),
        }
    }

    fn checkpoint_entry(&self, log_id: LogId) -> CheckpointLog {
        CheckpointLog {
            log_id,
            end_offset: self.next_offset,
            active_base_offset: self.active.base_offset,
            active_size_bytes: self.active.size_bytes,
            active_index_entries_n: self.active.index_entries_n,
            last_timestamp_ms: self.last_timestamp_ms,
        }
    }
}

/// What `undo_run` needs to put a log's segments back as they were before a failed copy.
struct RunUndo {
    active: SegmentMeta,
    next_offset: u64,
    last_timestamp_ms: Option<i64>,
    n_sealed: usize,
    /// Segments the run created (rolled into), whose files go again.
    created_bases: Vec<u64>,
}

/// The WAL segment being appended to.
pub(crate) struct WalState {
    pub dir: PathBuf,
    /// Base positions of the WAL segment files, ascending; the last is `file`.
    pub segment_bases: Vec<u64>,
    pub file: Arc<dyn StorageFile>,
    pub base_position: u64,
    pub size_bytes: u64,
    /// Clock time of the first frame written to the active segment (`None` while empty).
    pub first_frame_ms: Option<i64>,
    /// Set when `file` is written with direct IO (fsync on): its tail block and buffer.
    pub direct: Option<DirectAppender>,
}

impl WalState {
    pub fn end_position(&self) -> u64 {
        self.base_position + self.size_bytes
    }

    pub fn path(&self, base_position: u64) -> PathBuf {
        self.dir.join(numbered_name(base_position, WAL_EXTENSION))
    }

    /// Clears `buf` for a group whose frames take `frames_len` bytes; returns where in
    /// `buf` the frames go.
    fn begin_frames(&self, buf: &mut Vec<u8>, frames_len: usize) -> usize {
        match &self.direct {
            Some(direct) => direct.begin(buf, frames_len),
            None => {
                buf.clear();
                0
            }
        }
    }

    /// Writes the frames in `buf` from `frames_start` at the end of the active segment
    /// (not yet durable, not yet counted in `size_bytes`).
    fn write_frames(&mut self, buf: &mut Vec<u8>, frames_start: usize) -> io::Result<()> {
        match &mut self.direct {
            Some(direct) => direct.write(self.file.as_ref(), self.size_bytes, buf, frames_start),
            None => self
                .file
                .write_all_at(buf.get(frames_start..).unwrap_or_default(), self.size_bytes),
        }
    }

    /// Cuts the zeros that direct writes leave after the last frame, so that the segment
    /// ends at its last frame.
    fn cut_padding(&self) -> io::Result<()> {
        if self.direct.is_some() && self.file.size_bytes()? > self.size_bytes {
            self.file.set_size_bytes(self.size_bytes)?;
        }
        Ok(())
    }
}

pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub clock: Arc<dyn Clock>,
    pub logs: HashMap<LogId, WriterLog>,
    pub wal: WalState,
    /// (log, segment base) whose segment or index was written since the last checkpoint.
    /// Ordered sets here and below: the order of IO must not depend on hashing, so that a
    /// seeded simulation replays exactly.
    pub dirty_segments: BTreeSet<(LogId, u64)>,
    /// Log directories whose entries changed since the last checkpoint.
    pub dirty_dirs: BTreeSet<LogId>,
    /// Acknowledged records whose segment copy failed, per log, in offset order.
    backlog: BTreeMap<LogId, Vec<BacklogRecord>>,
    /// Why the backlog is still there (what refused appends are answered with).
    backlog_error: Option<LogError>,
    /// A checkpoint is owed (a WAL roll or a delete whose checkpoint failed).
    checkpoint_due: bool,
    /// Logs deleted since the last checkpoint: the WAL after it may still hold their
    /// records, so creating one of these ids again needs a checkpoint first.
    deleted_since_checkpoint: BTreeSet<LogId>,
    /// Files (trimmed segments) and directories (deleted logs) still to remove after a
    /// failed removal. No checkpoint is written while one remains: a checkpoint must never
    /// describe a log whose trimmed-away segments are still on disk (recovery would take
    /// an unsealed leftover for damage).
    pending_removals: Vec<(PathBuf, bool)>,
    /// Whether the previous `maintain` failed (log once per episode, not per group).
    maintenance_failing: bool,
    wal_buf: Vec<u8>,
    segment_buf: Vec<u8>,
    index_buf: Vec<u8>,
    /// Logs whose active segment takes large runs with direct IO (fsync on), at most
    /// `DIRECT_SEGMENTS_MAX`. An entry holds only while it matches the segment's base and
    /// size; a buffered write or a roll-back removes it.
    direct_segments: HashMap<LogId, DirectSegment>,
}

/// A log's active segment, opened for direct IO, and where its bytes end.
struct DirectSegment {
    base_offset: u64,
    size_bytes: u64,
    file: Arc<dyn StorageFile>,
    appender: DirectAppender,
}

/// A run of at least this many bytes for one log in one group is written to its segment
/// with direct IO (when the WAL is); smaller runs go through the page cache. A tailing
/// consumer reads what arrives at once, so small runs are better served from the cache;
/// bulk loads are read later, if at all, and skip the copy into it (see `direct.rs`).
const DIRECT_SEGMENT_RUN_BYTES_MIN: u64 = 64 * 1024;
/// Most logs with a segment open for direct IO at a time (each holds a descriptor and up
/// to one block): the others write buffered until one frees its place.
const DIRECT_SEGMENTS_MAX: usize = 64;

enum Flow {
    Continue,
    Stop,
}

enum Received {
    Request(Request),
    /// The maintenance interval passed with no request.
    Idle,
    /// Every sender is gone.
    Closed,
}

/// Waits for the next request, or until `timeout` passes (forever if `None`). The writer is
/// a plain thread, so it polls the channel with a waker that unparks it.
fn receive(requests: &mut mpsc::Receiver<Request>, timeout: Option<Duration>) -> Received {
    let Some(timeout) = timeout else {
        return requests
            .blocking_recv()
            .map_or(Received::Closed, Received::Request);
    };
    let deadline = Instant::now() + timeout;
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut context = Context::from_waker(&waker);
    loop {
        match requests.poll_recv(&mut context) {
            Poll::Ready(Some(request)) => return Received::Request(request),
            Poll::Ready(None) => return Received::Closed,
            Poll::Pending => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return Received::Idle;
        }
        thread::park_timeout(deadline - now);
    }
}

/// Marks the log poisoned (once, with an operator-facing error line).
fn poison(shared: &Shared, error: &LogError) {
    if !shared.poisoned.swap(true, Ordering::SeqCst) {
        tracing::error!(%error, "storage failure; the log refuses writes until reopened");
    }
}

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        clock: Arc<dyn Clock>,
        logs: HashMap<LogId, WriterLog>,
        wal: WalState,
    ) -> Writer {
        Writer {
            shared,
            clock,
            logs,
            wal,
            dirty_segments: BTreeSet::new(),
            dirty_dirs: BTreeSet::new(),
            backlog: BTreeMap::new(),
            backlog_error: None,
            checkpoint_due: false,
            deleted_since_checkpoint: BTreeSet::new(),
            pending_removals: Vec::new(),
            maintenance_failing: false,
            wal_buf: Vec::new(),
            segment_buf: Vec::new(),
            index_buf: Vec::new(),
            direct_segments: HashMap::new(),
        }
    }

    fn logs_dir(&self) -> PathBuf {
        self.shared.config.dir.join(crate::LOGS_DIR_NAME)
    }

    fn is_poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::SeqCst)
    }

    /// `sync_dir` that poisons on failure (a failed fsync is never retried).
    fn sync_dir(&self, dir: &std::path::Path, op: &'static str) -> Result<()> {
        self.shared.storage.sync_dir(dir).map_err(|error| {
            let error = LogError::io(op, dir)(error);
            poison(&self.shared, &error);
            error
        })
    }

    /// Runs until shutdown or until every `Log` handle is dropped.
    pub fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        let interval = self
            .shared
            .config
            .maintenance_interval_ms
            .map(Duration::from_millis);
        let mut carried: Option<Request> = None;
        loop {
            let first = match carried.take() {
                Some(request) => request,
                None => match receive(&mut requests, interval) {
                    Received::Request(request) => request,
                    Received::Idle => {
                        let _ = self.maintain();
                        continue;
                    }
                    Received::Closed => return,
                },
            };
            match first {
                Request::Append(append) => {
                    let mut group_bytes = append.payload_bytes;
                    let mut group = vec![append];
                    while group_bytes < self.shared.config.group_commit_bytes_max {
                        match requests.try_recv() {
                            Ok(Request::Append(append)) => {
                                group_bytes += append.payload_bytes;
                                group.push(append);
                            }
                            Ok(other) => {
                                carried = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit_group(group);
                }
                Request::Group(group) => self.commit_group(group),
                Request::Control(control) => {
                    if let Flow::Stop = self.control(control, &mut requests) {
                        return;
                    }
                }
            }
        }
    }

    fn control(&mut self, request: ControlRequest, requests: &mut mpsc::Receiver<Request>) -> Flow {
        match request.op {
            ControlOp::Shutdown => {
                let result = self.shutdown(requests);
                let _ = request.reply.send(result);
                return Flow::Stop;
            }
            ControlOp::Abandon => return Flow::Stop,
            _ => {}
        }
        if !matches!(request.op, ControlOp::Maintain | ControlOp::Checkpoint) {
            // Periodic work rides on every request; its failure is this request's only if
            // the request needs what failed (checked by the operation itself).
            let _ = self.maintain();
        }
        let result = if self.is_poisoned() {
            Err(LogError::Poisoned)
        } else {
            match request.op {
                ControlOp::CreateLogs(log_ids) => self.create_logs(&log_ids).map(|()| 0),
                ControlOp::DeleteLogs(log_ids) => self.delete_logs(&log_ids).map(|()| 0),
                ControlOp::TrimBefore(log_id, timestamp_ms) => {
                    self.trim_before(log_id, timestamp_ms)
                }
                ControlOp::Checkpoint => self.checkpoint().map(|()| 0),
                ControlOp::Maintain => self.maintain().map(|()| 0),
                ControlOp::Shutdown | ControlOp::Abandon => Ok(0),
            }
        };
        let _ = request.reply.send(result);
        Flow::Continue
    }

    /// Drains what is queued, refuses what comes after, checkpoints.
    fn shutdown(&mut self, requests: &mut mpsc::Receiver<Request>) -> Result<u64> {
        requests.close();
        while let Ok(request) = requests.try_recv() {
            match request {
                Request::Append(append) => self.commit_group(vec![append]),
                Request::Group(group) => self.commit_group(group),
                Request::Control(control) => {
                    let _ = control.reply.send(Err(LogError::Closed));
                }
            }
        }
        let result = if self.is_poisoned() {
            Err(LogError::Poisoned)
        } else {
            self.checkpoint().map(|()| 0)
        };
        self.shared.closed.store(true, Ordering::SeqCst);
        if result.is_ok() {
            // Best effort: a segment left padded only makes recovery cut the zeros.
            let _ = self.wal.cut_padding();
            tracing::info!(
                wal_position = self.wal.end_position(),
                n_logs = self.logs.len(),
                "log shut down cleanly"
            );
        }
        result
    }

    /// The periodic work: copy the backlog, roll the WAL when it is full or old, write an
    /// owed checkpoint. Returns the first failure (after trying everything that can run).
    pub fn maintain(&mut self) -> Result<()> {
        if self.is_poisoned() {
            return Err(LogError::Poisoned);
        }
        let mut first_error: Option<LogError> = None;
        if !self.backlog.is_empty()
            && let Err(error) = self.drain_backlog()
        {
            first_error.get_or_insert(error);
        }
        if let Err(error) = self.remove_pending() {
            first_error.get_or_insert(error);
        }
        let config = &self.shared.config;
        let now_ms = self.clock.now_millis();
        let wal_full = self.wal.size_bytes >= config.wal_segment_bytes_max;
        let wal_old = self
            .wal
            .first_frame_ms
            .is_some_and(|first_ms| now_ms.saturating_sub(first_ms) >= config.wal_age_ms_max);
        if (wal_full || wal_old) && !self.is_poisoned() {
            match self.rotate_wal() {
                Ok(()) => self.checkpoint_due = true,
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        if self.checkpoint_due
            && self.backlog.is_empty()
            && !self.is_poisoned()
            && let Err(error) = self.checkpoint()
        {
            first_error.get_or_insert(error);
        }
        match first_error {
            None => {
                if self.maintenance_failing {
                    tracing::info!("storage writable again; deferred work done");
                    self.maintenance_failing = false;
                }
                Ok(())
            }
            Some(error) => {
                if !self.maintenance_failing && !self.is_poisoned() {
                    tracing::warn!(%error, "deferred log work failed; retrying periodically");
                    self.maintenance_failing = true;
                }
                Err(error)
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Group commit

    fn commit_group(&mut self, group: Vec<AppendRequest>) {
        let _ = self.maintain();
        if self.is_poisoned() {
            for request in group {
                let _ = request.reply.send(Err(LogError::Poisoned));
            }
            return;
        }
        if !self.backlog.is_empty() {
            // Acknowledged records still wait for their segment copy (the disk is full):
            // taking more would only grow what waits.
            for request in group {
                let error = match &self.backlog_error {
                    Some(error) => error.duplicate(),
                    None => LogError::StorageFull {
                        op: "copy to segment",
                        path: self.logs_dir(),
                    },
                };
                let _ = request.reply.send(Err(error));
            }
            return;
        }
        let now_ms = self.clock.now_millis();
        let group_position = self.wal.end_position();
        let mut accepted: Vec<(AppendRequest, Vec<Appended>)> = Vec::with_capacity(group.len());
        let frames_len: usize = group
            .iter()
            .map(|request| wal_frame_bytes(request.records.len(), request.payload_bytes))
            .sum();
        let frames_start = self.wal.begin_frames(&mut self.wal_buf, frames_len);
        for request in group {
            if let Some(unknown) = request
                .records
                .iter()
                .find(|record| !self.logs.contains_key(&record.log_id))
            {
                let log_id = unknown.log_id;
                let _ = request.reply.send(Err(LogError::UnknownLog { log_id }));
                continue;
            }
            let mut appended = Vec::with_capacity(request.records.len());
            for record in &request.records {
                let Some(log) = self.logs.get_mut(&record.log_id) else {
                    continue; // checked above
                };
                let timestamp_ms = log
                    .assign_timestamp_ms
                    .map_or(now_ms, |last| last.max(now_ms));
                appended.push(Appended {
                    offset: log.assign_offset,
                    timestamp_ms,
                });
                log.assign_offset += 1;
                log.assign_timestamp_ms = Some(timestamp_ms);
            }
            let n_records = u32::try_from(request.records.len()).unwrap_or(u32::MAX);
            encode_wal_frame(
                &mut self.wal_buf,
                n_records,
                group_position,
                request
                    .records
                    .iter()
                    .zip(&appended)
                    .map(|(record, appended)| WalRecord {
                        log_id: record.log_id,
                        offset: appended.offset,
                        timestamp_ms: appended.timestamp_ms,
                        payload: &record.payload,
                    }),
            );
            accepted.push((request, appended));
        }
        if accepted.is_empty() {
            return;
        }
        let position = self.wal.size_bytes;
        let frames_len = self.wal_buf.len() - frames_start;
        if let Err(error) = self.wal.write_frames(&mut self.wal_buf, frames_start) {
            let path = self.wal.path(self.wal.base_position);
            let error = LogError::io("write WAL", &path)(error);
            self.take_back_offsets(&accepted);
            // Some of the frames may have reached the file: cut them off again, durably, so
            // neither the next group nor a recovery ever sees them.
            let cut = self
                .wal
                .file
                .set_size_bytes(position)
                .and_then(|()| self.wal.file.sync_data());
            if let Err(cut_error) = cut {
                let cut_error = LogError::io("truncate WAL after a failed write", &path)(cut_error);
                poison(&self.shared, &cut_error);
                for (request, _) in accepted {
                    let _ = request.reply.send(Err(LogError::Poisoned));
                }
                return;
            }
            tracing::warn!(%error, n_appends = accepted.len(), "WAL write failed; appends refused");
            for (request, _) in accepted {
                let _ = request.reply.send(Err(error.duplicate()));
            }
            return;
        }
        self.wal.size_bytes += frames_len as u64;
        self.wal.first_frame_ms.get_or_insert(now_ms);
        if self.shared.config.durability == Durability::Fsync
            && let Err(error) = self.wal.file.sync_data()
        {
            let path = self.wal.path(self.wal.base_position);
            poison(&self.shared, &LogError::io("fdatasync WAL", &path)(error));
            for (request, _) in accepted {
                let _ = request.reply.send(Err(LogError::Poisoned));
            }
            return;
        }
        // Durable from here on: whatever the segment copy meets, the appends are
        // acknowledged (a failed copy waits in the backlog, or recovery redoes it).
        self.copy_to_segments(&accepted);
        for (request, appended) in accepted {
            let _ = request.reply.send(Ok(appended));
        }
    }

    /// Hands the offsets and timestamps of a group that never reached the WAL back: the
    /// next group assigns them again. (No backlog exists while a group is assigned, so
    /// every log's assignment restarts where its segments end.)
    fn take_back_offsets(&mut self, accepted: &[(AppendRequest, Vec<Appended>)]) {
        for (request, _) in accepted {
            for record in &request.records {
                if let Some(log) = self.logs.get_mut(&record.log_id) {
                    log.assign_offset = log.next_offset;
                    log.assign_timestamp_ms = log.last_timestamp_ms;
                }
            }
        }
    }

    /// Copies a durable group into the segments, log by log; a log whose copy fails keeps
    /// its records in the backlog.
    fn copy_to_segments(&mut self, accepted: &[(AppendRequest, Vec<Appended>)]) {
        // Group by log, keeping input order within a log (the sort is stable), so each log
        // gets one write per file.
        let mut entries: Vec<(LogId, &Bytes, Appended)> = accepted
            .iter()
            .flat_map(|(request, appended)| {
                request
                    .records
                    .iter()
                    .zip(appended)
                    .map(|(record, appended)| (record.log_id, &record.payload, *appended))
            })
            .collect();
        entries.sort_by_key(|(log_id, _, _)| *log_id);
        for chunk in entries.chunk_by(|a, b| a.0 == b.0) {
            let Some((log_id, _, _)) = chunk.first() else {
                continue;
            };
            let run: Vec<SegmentRecord<'_>> = chunk
                .iter()
                .map(|(_, payload, appended)| SegmentRecord {
                    offset: appended.offset,
                    timestamp_ms: appended.timestamp_ms,
                    payload,
                })
                .collect();
            match self.append_run(*log_id, &run) {
                Ok(()) => self.publish(*log_id),
                Err(error) => {
                    tracing::warn!(
                        %error,
                        log_id,
                        n_records = run.len(),
                        "segment copy failed; the records are durable in the WAL and wait"
                    );
                    let records = chunk
                        .iter()
                        .map(|(_, payload, appended)| BacklogRecord {
                            offset: appended.offset,
                            timestamp_ms: appended.timestamp_ms,
                            payload: Bytes::clone(payload),
                        })
                        .collect();
                    self.backlog.insert(*log_id, records);
                    self.backlog_error.get_or_insert(error);
                }
            }
        }
    }

    /// Copies the backlog into the segments; what still fails stays.
    fn drain_backlog(&mut self) -> Result<()> {
        let log_ids: Vec<LogId> = self.backlog.keys().copied().collect();
        let mut first_error: Option<LogError> = None;
        for log_id in log_ids {
            let Some(records) = self.backlog.remove(&log_id) else {
                continue;
            };
            let result = {
                let run: Vec<SegmentRecord<'_>> = records
                    .iter()
                    .map(|record| SegmentRecord {
                        offset: record.offset,
                        timestamp_ms: record.timestamp_ms,
                        payload: &record.payload,
                    })
                    .collect();
                self.append_run(log_id, &run)
            };
            match result {
                Ok(()) => self.publish(log_id),
                Err(error) => {
                    self.backlog.insert(log_id, records);
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            None => {
                self.backlog_error = None;
                Ok(())
            }
            Some(error) => {
                self.backlog_error = Some(error.duplicate());
                Err(error)
            }
        }
    }

    /// Copies consecutive records of one log into its segments, rolling and indexing as
    /// needed. Also used by WAL replay. Does not publish. All or nothing: on failure the
    /// log's files and state are put back as they were (or, if that fails too, the log is
    /// poisoned).
    pub fn append_run(&mut self, log_id: LogId, records: &[SegmentRecord<'_>]) -> Result<()> {
        let Some(log) = self.logs.get(&log_id) else {
            return Err(LogError::UnknownLog { log_id });
        };
        let mut undo = RunUndo {
            active: log.active,
            next_offset: log.next_offset,
            last_timestamp_ms: log.last_timestamp_ms,
            n_sealed: log.sealed.len(),
            created_bases: Vec::new(),
        };
        match self.append_run_inner(log_id, records, &mut undo.created_bases) {
            Ok(()) => Ok(()),
            Err(error) => {
                if let Err(undo_error) = self.undo_run(log_id, undo) {
                    poison(&self.shared, &undo_error);
                }
                Err(error)
            }
        }
    }

    fn append_run_inner(
        &mut self,
        log_id: LogId,
        records: &[SegmentRecord<'_>],
        created_bases: &mut Vec<u64>,
    ) -> Result<()> {
        let config = &self.shared.config;
        let files = &self.shared.files;
        let storage = self.shared.storage.as_ref();
        let Some(log) = self.logs.get_mut(&log_id) else {
            return Err(LogError::UnknownLog { log_id });
        };
        let run_bytes: u64 = records
            .iter()
            .map(|record| {
                crate::format::SEGMENT_RECORD_HEADER_BYTES as u64 + record.payload.len() as u64
            })
            .sum();
        let use_direct = self.wal.direct.is_some() && run_bytes >= DIRECT_SEGMENT_RUN_BYTES_MIN;
        let mut direct = if use_direct {
            direct_segment(
                &mut self.direct_segments,
                storage,
                files,
                log_id,
                &log.active,
            )?
        } else {
            self.direct_segments.remove(&log_id);
            None
        };
        let mut segment_start =
            begin_segment_buf(&mut self.segment_buf, direct.as_deref(), run_bytes);
        self.index_buf.clear();
        let mut segment_write_position = log.active.size_bytes;
        let mut index_write_entry = log.active.index_entries_n;
        for record in records {
            if record.offset != log.next_offset {
                let path = files.path(FileKey::segment(log_id, log.active.base_offset));
                return Err(LogError::corrupt(
                    &path,
                    log.active.size_bytes,
                    "record offset does not continue the log",
                ));
            }
            let record_bytes =
                crate::format::SEGMENT_RECORD_HEADER_BYTES as u64 + record.payload.len() as u64;
            let too_big = log.active.size_bytes + record_bytes > config.segment_bytes_max;
            let too_old = log.active.first_timestamp_ms.is_some_and(|first| {
                record.timestamp_ms.saturating_sub(first) >= config.segment_age_ms_max
            });
            if log.active.size_bytes > 0 && (too_big || too_old) {
                flush_run(
                    files,
                    log_id,
                    &log.active,
                    &mut self.segment_buf,
                    segment_start,
                    direct.as_deref_mut(),
                    segment_write_position,
                    &self.index_buf,
                    index_write_entry,
                )?;
                self.index_buf.clear();
                // Direct writes leave zeros up to the next block; a sealed segment ends at
                // its last record (recovery checks its size against the seal).
                let segment_key = FileKey::segment(log_id, log.active.base_offset);
                files
                    .get(segment_key, false)
                    .and_then(|file| {
                        if file.size_bytes()? > log.active.size_bytes {
                            file.set_size_bytes(log.active.size_bytes)?;
                        }
                        Ok(())
                    })
                    .map_err(LogError::io("cut segment", &files.path(segment_key)))?;
                // Seal: the entry after the last record entry tells recovery and trim where
                // the segment ends and how new its newest record is.
                let seal = IndexEntry {
                    offset: log.active.end_offset,
                    position: log.active.size_bytes,
                    timestamp_ms: log.active.last_timestamp_ms.unwrap_or(record.timestamp_ms),
                    kind: IndexEntryKind::Seal,
                };
                let index_key = FileKey::index(log_id, log.active.base_offset);
                let index_path = files.path(index_key);
                files
                    .get(index_key, false)
                    .and_then(|file| {
                        file.write_all_at(
                            &seal.encode(),
                            log.active.index_entries_n * INDEX_ENTRY_BYTES as u64,
                        )
                    })
                    .map_err(LogError::io("write seal", &index_path))?;
                self.dirty_segments.insert((log_id, log.active.base_offset));
                log.sealed.push(log.active);
                created_bases.push(record.offset);
                create_empty_segment(files, log_id, record.offset)?;
                self.dirty_dirs.insert(log_id);
                log.active = SegmentMeta::empty(record.offset);
                segment_write_position = 0;
                index_write_entry = 0;
                direct = None;
                if use_direct {
                    direct = direct_segment(
                        &mut self.direct_segments,
                        storage,
                        files,
                        log_id,
                        &log.active,
                    )?;
                }
                segment_start =
                    begin_segment_buf(&mut self.segment_buf, direct.as_deref(), run_bytes);
            }
            let position = log.active.size_bytes;
            if position == 0
                || position - log.active.last_index_position >= INDEX_INTERVAL_BYTES as u64
            {
                let entry = IndexEntry {
                    offset: record.offset,
                    position,
                    timestamp_ms: record.timestamp_ms,
                    kind: IndexEntryKind::Record,
                };
                self.index_buf.extend_from_slice(&entry.encode());
                log.active.index_entries_n += 1;
                log.active.last_index_position = position;
            }
            encode_segment_record(
                &mut self.segment_buf,
                record.offset,
                record.timestamp_ms,
                record.payload,
            );
            log.active.size_bytes += record_bytes;
            log.active.end_offset = record.offset + 1;
            log.active
                .first_timestamp_ms
                .get_or_insert(record.timestamp_ms);
            log.active.last_timestamp_ms = Some(record.timestamp_ms);
            log.next_offset = record.offset + 1;
            log.last_timestamp_ms = Some(record.timestamp_ms);
        }
        self.dirty_segments.insert((log_id, log.active.base_offset));
        flush_run(
            files,
            log_id,
            &log.active,
            &mut self.segment_buf,
            segment_start,
            direct,
            segment_write_position,
            &self.index_buf,
            index_write_entry,
        )?;
        if log.assign_offset < log.next_offset {
            // Replay moves the log without assigning; keep assignment caught up.
            log.assign_offset = log.next_offset;
            log.assign_timestamp_ms = log.last_timestamp_ms;
        }
        Ok(())
    }

    /// Puts a log's segment files and state back as they were before a failed run: the
    /// segments it rolled into are removed, the one that was active is cut back to its
    /// size and index count (which also drops a seal the run wrote).
    fn undo_run(&mut self, log_id: LogId, undo: RunUndo) -> Result<()> {
        // The files go back to an earlier size: a direct appender's tail no longer holds.
        self.direct_segments.remove(&log_id);
        let files = &self.shared.files;
        let storage = &self.shared.storage;
        let Some(log) = self.logs.get_mut(&log_id) else {
            return Ok(());
        };
        for base_offset in &undo.created_bases {
            for key in [
                FileKey::segment(log_id, *base_offset),
                FileKey::index(log_id, *base_offset),
            ] {
                files.forget(key);
                let path = files.path(key);
                match storage.remove_file(&path) {
                    Ok(()) => {}
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => {
                        return Err(LogError::io("remove rolled-back segment", &path)(error));
                    }
                }
            }
            self.dirty_segments.remove(&(log_id, *base_offset));
            self.dirty_dirs.insert(log_id);
        }
        let base_offset = undo.active.base_offset;
        for (key, size_bytes) in [
            (
                FileKey::segment(log_id, base_offset),
                undo.active.size_bytes,
            ),
            (
                FileKey::index(log_id, base_offset),
                undo.active.index_entries_n * INDEX_ENTRY_BYTES as u64,
            ),
        ] {
            let path = files.path(key);
            files
                .get(key, false)
                .and_then(|file| file.set_size_bytes(size_bytes))
                .map_err(LogError::io("truncate rolled-back segment", &path))?;
        }
        self.dirty_segments.insert((log_id, base_offset));
        log.active = undo.active;
        log.sealed.truncate(undo.n_sealed);
        log.next_offset = undo.next_offset;
        log.last_timestamp_ms = undo.last_timestamp_ms;
        Ok(())
    }

    /// Makes what `append_run` wrote visible to readers and watchers.
    pub fn publish(&mut self, log_id: LogId) {
        let Some(log) = self.logs.get_mut(&log_id) else {
            return;
        };
        let end_offset = log.next_offset;
        {
            let mut view = log.state.view.lock();
            for sealed in log.sealed.drain(..) {
                view.put_segment(sealed);
            }
            view.put_segment(log.active);
            view.end_offset = end_offset;
            view.last_timestamp_ms = log.last_timestamp_ms;
        }
        log.state.end_tx.send_replace(end_offset);
    }

    // -----------------------------------------------------------------------------------
    // WAL segments and checkpoints

    /// Starts a new WAL segment at the current end position. The old ones go at the next
    /// checkpoint.
    pub fn rotate_wal(&mut self) -> Result<()> {
        if self.wal.direct.is_some() {
            // The segment must end at its last frame before a later one exists: recovery
            // takes an invalid frame followed by another segment for damage.
            let old_path = self.wal.path(self.wal.base_position);
            self.wal
                .cut_padding()
                .map_err(LogError::io("cut WAL segment", &old_path))?;
            if let Err(error) = self.wal.file.sync_data() {
                let error = LogError::io("fdatasync WAL", &old_path)(error);
                poison(&self.shared, &error);
                return Err(error);
            }
        }
        let base_position = self.wal.end_position();
        let path = self.wal.path(base_position);
        let direct = self.wal.direct.is_some();
        let (file, direct) = open_active(self.shared.storage.as_ref(), &path, 0, direct)
            .and_then(|(file, direct)| file.set_size_bytes(0).map(|()| (file, direct)))
            .map_err(LogError::io("create WAL segment", &path))?;
        // The new segment must survive a crash before any acknowledged frame goes into it.
        let wal_dir = self.wal.dir.clone();
        self.sync_dir(&wal_dir, "fsync WAL dir")?;
        if self.wal.segment_bases.last() != Some(&base_position) {
            self.wal.segment_bases.push(base_position);
        }
        self.wal.file = file;
        self.wal.base_position = base_position;
        self.wal.size_bytes = 0;
        self.wal.first_frame_ms = None;
        self.wal.direct = direct;
        Ok(())
    }

    /// Makes everything written so far durable in the segments and records it. Refused
    /// while a backlog cannot be copied (the checkpoint would pass its WAL frames).
    pub fn checkpoint(&mut self) -> Result<()> {
        let result = if self.backlog.is_empty() {
            Ok(())
        } else {
            self.drain_backlog()
        }
        .and_then(|()| self.remove_pending())
        .and_then(|()| self.checkpoint_inner());
        match &result {
            Ok(()) => {
                self.checkpoint_due = false;
                self.deleted_since_checkpoint.clear();
            }
            Err(_) => self.checkpoint_due = true,
        }
        result
    }

    /// Removes what earlier removals left; keeps what fails again.
    fn remove_pending(&mut self) -> Result<()> {
        let storage = Arc::clone(&self.shared.storage);
        let mut first_error = None;
        self.pending_removals.retain(|(path, is_dir)| {
            let result = if *is_dir {
                remove_dir_with_files(storage.as_ref(), path)
            } else {
                storage.remove_file_soon(path)
            };
            match result {
                Ok(()) => false,
                Err(error) if error.kind() == io::ErrorKind::NotFound => false,
                Err(error) => {
                    first_error.get_or_insert(LogError::io("remove", path)(error));
                    true
                }
            }
        });
        first_error.map_or(Ok(()), Err)
    }

    fn checkpoint_inner(&mut self) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let storage = &shared.storage;
        let files = &shared.files;
        let wal_position = self.wal.end_position();
        let n_files_synced = self.dirty_segments.len() * 2;
        while let Some(&(log_id, base_offset)) = self.dirty_segments.first() {
            for key in [
                FileKey::segment(log_id, base_offset),
                FileKey::index(log_id, base_offset),
            ] {
                let path = files.path(key);
                let file = files
                    .get(key, false)
                    .map_err(LogError::io("open segment", &path))?;
                if let Err(error) = file.sync_data() {
                    let error = LogError::io("fsync segment", &path)(error);
                    poison(&shared, &error);
                    return Err(error);
                }
            }
            self.dirty_segments.remove(&(log_id, base_offset));
        }
        let logs_dir = shared.config.dir.join(crate::LOGS_DIR_NAME);
        while let Some(&log_id) = self.dirty_dirs.first() {
            self.sync_dir(&log_dir(&logs_dir, log_id), "fsync log dir")?;
            self.dirty_dirs.remove(&log_id);
        }
        let mut logs: Vec<CheckpointLog> = self
            .logs
            .iter()
            .map(|(log_id, log)| log.checkpoint_entry(*log_id))
            .collect();
        logs.sort_by_key(|log| log.log_id);
        let bytes = Checkpoint { wal_position, logs }.encode();
        let dir = &shared.config.dir;
        let temp_path = dir.join(CHECKPOINT_TEMP_FILE_NAME);
        let path = dir.join(CHECKPOINT_FILE_NAME);
        let temp = storage
            .open(&temp_path, true)
            .map_err(LogError::io("create checkpoint", &temp_path))?;
        if let Err(error) = temp
            .set_size_bytes(0)
            .and_then(|()| temp.write_all_at(&bytes, 0))
        {
            // Typically a full disk. The old checkpoint still stands; give the space back.
            drop(temp);
            let _ = storage.remove_file(&temp_path);
            return Err(LogError::io("write checkpoint", &temp_path)(error));
        }
        if let Err(error) = temp.sync_data() {
            let error = LogError::io("fsync checkpoint", &temp_path)(error);
            poison(&shared, &error);
            return Err(error);
        }
        storage
            .rename(&temp_path, &path)
            .map_err(LogError::io("rename checkpoint", &path))?;
        self.sync_dir(dir, "fsync data dir")?;
        // Every WAL segment but the active one ends at or before `wal_position`.
        while self.wal.segment_bases.len() > 1 {
            let Some(&base_position) = self.wal.segment_bases.first() else {
                break;
            };
            let wal_path = self.wal.path(base_position);
            match storage.remove_file_soon(&wal_path) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(LogError::io("remove WAL segment", &wal_path)(error)),
            }
            self.wal.segment_bases.remove(0);
        }
        tracing::debug!(wal_position, n_files_synced, "checkpoint written");
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // Control operations

    /// Creates logs; one fsync of the logs directory covers the whole batch.
    fn create_logs(&mut self, log_ids: &[LogId]) -> Result<()> {
        let reused = log_ids.iter().any(|log_id| {
            self.deleted_since_checkpoint.contains(log_id) && !self.logs.contains_key(log_id)
        });
        if reused {
            // The WAL after the last checkpoint may hold records of the deleted log with
            // this id; replay must never hand them to the new one.
            self.checkpoint()?;
        }
        let mut created = false;
        for &log_id in log_ids {
            created |= self.create_log(log_id)?;
        }
        if created {
            let logs_dir = self.logs_dir();
            self.sync_dir(&logs_dir, "fsync logs dir")?;
        }
        Ok(())
    }

    /// Creates one log's directory and first segment; the caller fsyncs the logs
    /// directory. Returns false if the log already existed.
    fn create_log(&mut self, log_id: LogId) -> Result<bool> {
        if self.logs.contains_key(&log_id) {
            return Ok(false);
        }
        let logs_dir = self.logs_dir();
        let dir = log_dir(&logs_dir, log_id);
        self.shared
            .storage
            .create_dir(&dir)
            .map_err(LogError::io("create log dir", &dir))?;
        create_empty_segment(&self.shared.files, log_id, 0)?;
        self.sync_dir(&dir, "fsync log dir")?;
        let active = SegmentMeta::empty(0);
        let state = Arc::new(LogState::new(
            log_id,
            LogView {
                segments: [active].into(),
                end_offset: 0,
                last_timestamp_ms: None,
                deleted: false,
                read_hint: None,
            },
        ));
        self.shared.logs.write().insert(log_id, Arc::clone(&state));
        self.logs
            .insert(log_id, WriterLog::new(state, active, None));
        tracing::debug!(log_id, "log created");
        Ok(true)
    }

    /// Deletes logs: each directory is renamed away (the commit point), one fsync of the
    /// logs directory covers the batch, then the files are removed (which frees space on
    /// a full disk) and a checkpoint moves past their WAL frames. A checkpoint that fails
    /// for space does not fail the delete: it is owed, and creating one of these ids again
    /// waits for it.
    fn delete_logs(&mut self, log_ids: &[LogId]) -> Result<()> {
        let mut renamed = Vec::new();
        let mut unlink_error = None;
        for &log_id in log_ids {
            match self.unlink_log(log_id) {
                Ok(Some(deleted_dir)) => renamed.push((log_id, deleted_dir)),
                Ok(None) => {}
                Err(error) => {
                    unlink_error = Some(error);
                    break;
                }
            }
        }
        if renamed.is_empty() {
            return unlink_error.map_or(Ok(()), Err);
        }
        let logs_dir = self.logs_dir();
        self.sync_dir(&logs_dir, "fsync logs dir")?;
        let storage = Arc::clone(&self.shared.storage);
        for (log_id, deleted_dir) in renamed {
            self.deleted_since_checkpoint.insert(log_id);
            // A leftover is retried by `maintain` (and removed by recovery after a crash).
            if let Err(error) = remove_dir_with_files(storage.as_ref(), &deleted_dir) {
                let error = LogError::io("remove deleted log dir", &deleted_dir)(error);
                tracing::warn!(%error, log_id, "deleted log's files not removed yet");
                self.pending_removals.push((deleted_dir, true));
            }
            tracing::debug!(log_id, "log deleted");
        }
        if let Err(error) = self.checkpoint() {
            if self.is_poisoned() {
                return Err(error);
            }
            tracing::warn!(%error, "checkpoint after delete failed; retrying later");
        }
        unlink_error.map_or(Ok(()), Err)
    }

    /// Renames a log's directory to `<id>.deleted`, then forgets the log; `None` if it did
    /// not exist. If the rename fails, the log is left as it was.
    fn unlink_log(&mut self, log_id: LogId) -> Result<Option<PathBuf>> {
        let logs_dir = self.logs_dir();
        let dir = log_dir(&logs_dir, log_id);
        if !self.logs.contains_key(&log_id) && !dir_exists(self.shared.storage.as_ref(), &dir)? {
            return Ok(None);
        }
        // (A directory of a log this writer does not know is what a failed create left;
        // recovery would bring it back as a log, so it goes the same way.)
        let mut deleted_name = dir.clone().into_os_string();
        deleted_name.push(DELETED_DIR_SUFFIX);
        let deleted_dir = PathBuf::from(deleted_name);
        let storage = Arc::clone(&self.shared.storage);
        if dir_exists(storage.as_ref(), &deleted_dir)? {
            remove_dir_with_files(storage.as_ref(), &deleted_dir)
                .map_err(LogError::io("remove deleted log dir", &deleted_dir))?;
        }
        // The rename is the commit point (once the logs directory is fsynced): after it
        // the log is gone, whatever the WAL says.
        storage
            .rename(&dir, &deleted_dir)
            .map_err(LogError::io("rename log dir", &dir))?;
        self.direct_segments.remove(&log_id);
        let Some(log) = self.logs.remove(&log_id) else {
            return Ok(Some(deleted_dir));
        };
        self.shared.logs.write().remove(&log_id);
        {
            let mut view = log.state.view.lock();
            view.deleted = true;
            view.segments.clear();
            view.read_hint = None;
            self.shared.files.forget_log(log_id);
        }
        self.backlog.remove(&log_id);
        if self.backlog.is_empty() {
            self.backlog_error = None;
        }
        self.dirty_segments
            .retain(|(dirty_log_id, _)| *dirty_log_id != log_id);
        self.dirty_dirs.remove(&log_id);
        Ok(Some(deleted_dir))
    }

    fn trim_before(&mut self, log_id: LogId, timestamp_ms: i64) -> Result<u64> {
        let shared = Arc::clone(&self.shared);
        let files = &shared.files;
        let Some(log) = self.logs.get_mut(&log_id) else {
            return Err(LogError::UnknownLog { log_id });
        };
        let (n_expired, n_segments, start_offset) = {
            let view = log.state.view.lock();
            let n_expired = view
                .segments
                .iter()
                .take_while(|segment| {
                    segment.end_offset > segment.base_offset
                        && segment
                            .last_timestamp_ms
                            .is_some_and(|last| last < timestamp_ms)
                })
                .count();
            (n_expired, view.segments.len(), view.start_offset())
        };
        if n_expired == 0 {
            return Ok(start_offset);
        }
        let dir = log_dir(&shared.config.dir.join(crate::LOGS_DIR_NAME), log_id);
        if n_expired == n_segments {
            // Everything is expired, the active segment too. An empty segment named by the
            // end offset keeps that offset on disk (so it is never reused).
            let end_offset = log.next_offset;
            create_empty_segment(files, log_id, end_offset)?;
            log.active = SegmentMeta::empty(end_offset);
            log.state.view.lock().put_segment(log.active);
            self.dirty_dirs.insert(log_id);
        }
        if self.dirty_dirs.contains(&log_id) {
            // The segments that stay (one rolled into since the last checkpoint, or the
            // empty one just made) must be durable before the old ones go: recovery starts
            // a log whose checkpointed segment was trimmed away at the next one on disk.
            if let Err(error) = shared.storage.sync_dir(&dir) {
                let error = LogError::io("fsync log dir", &dir)(error);
                poison(&shared, &error);
                return Err(error);
            }
            self.dirty_dirs.remove(&log_id);
        }
        let Some(log) = self.logs.get_mut(&log_id) else {
            return Err(LogError::UnknownLog { log_id });
        };
        let removed: Vec<SegmentMeta> = {
            let mut view = log.state.view.lock();
            let removed: Vec<SegmentMeta> = view.segments.drain(..n_expired).collect();
            for segment in &removed {
                files.forget(FileKey::segment(log_id, segment.base_offset));
                files.forget(FileKey::index(log_id, segment.base_offset));
            }
            if view
                .read_hint
                .is_some_and(|hint| hint.base_offset < view.start_offset())
            {
                view.read_hint = None;
            }
            removed
        };
        // Removals become durable at the next checkpoint; recovery copes with any subset.
        self.dirty_dirs.insert(log_id);
        for segment in &removed {
            self.dirty_segments.remove(&(log_id, segment.base_offset));
            for key in [
                FileKey::segment(log_id, segment.base_offset),
                FileKey::index(log_id, segment.base_offset),
            ] {
                self.pending_removals.push((files.path(key), false));
            }
        }
        let start_offset = log.state.view.lock().start_offset();
        self.remove_pending()?;
        tracing::debug!(
            log_id,
            n_segments_removed = removed.len(),
            start_offset,
            "log trimmed"
        );
        Ok(start_offset)
    }
}

/// Whether directory `dir` exists (an error other than "not found" is an error).
fn dir_exists(storage: &dyn crate::storage::Storage, dir: &std::path::Path) -> Result<bool> {
    match storage.list_dir(dir) {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(LogError::io("list log dir", dir)(error)),
    }
}

/// Segment bytes handed to the disk at once after they are written (`start_writeback`).
const WRITEBACK_CHUNK_BYTES: u64 = 1024 * 1024;

/// Writes the buffered records and index entries of one run to the active segment.
/// Clears `buf` for a run of `run_bytes` into a segment; returns where the records go (after
/// the direct appender's alignment and tail, if the run is written directly).
fn begin_segment_buf(buf: &mut Vec<u8>, direct: Option<&DirectSegment>, run_bytes: u64) -> usize {
    match direct {
        Some(direct) => direct
            .appender
            .begin(buf, usize::try_from(run_bytes).unwrap_or(usize::MAX)),
        None => {
            buf.clear();
            0
        }
    }
}

/// The direct appender of `log_id`'s active segment, opened (and its tail read back) when
/// there is none for this segment and size yet. `None`: write this run through the page
/// cache (the storage cannot do direct IO, or `DIRECT_SEGMENTS_MAX` logs have one).
fn direct_segment<'a>(
    direct_segments: &'a mut HashMap<LogId, DirectSegment>,
    storage: &dyn crate::storage::Storage,
    files: &FileCache,
    log_id: LogId,
    active: &SegmentMeta,
) -> Result<Option<&'a mut DirectSegment>> {
    let current = direct_segments.get(&log_id).is_some_and(|direct| {
        direct.base_offset == active.base_offset && direct.size_bytes == active.size_bytes
    });
    if !current {
        direct_segments.remove(&log_id);
        if direct_segments.len() >= DIRECT_SEGMENTS_MAX {
            return Ok(None);
        }
        let key = FileKey::segment(log_id, active.base_offset);
        let opened = storage
            .open_direct(&files.path(key), false)
            .and_then(|file| match file {
                None => Ok(None),
                Some(file) => {
                    let reader = files.get(key, false)?;
                    let appender = DirectAppender::resume(reader.as_ref(), active.size_bytes)?;
                    Ok(Some((file, appender)))
                }
            })
            .map_err(|error| LogError::io("open segment", &files.path(key))(error))?;
        let Some((file, appender)) = opened else {
            return Ok(None);
        };
        direct_segments.insert(
            log_id,
            DirectSegment {
                base_offset: active.base_offset,
                size_bytes: active.size_bytes,
                file,
                appender,
            },
        );
    }
    Ok(direct_segments.get_mut(&log_id))
}

#[allow(clippy::too_many_arguments)]
fn flush_run(
    files: &FileCache,
    log_id: LogId,
    active: &SegmentMeta,
    segment_buf: &mut Vec<u8>,
    segment_start: usize,
    direct: Option<&mut DirectSegment>,
    segment_position: u64,
    index_buf: &[u8],
    index_entry: u64,
) -> Result<()> {
    // Paths are built only on failure: formatting them for every group cost more than the
    // rest of this function.
    if let Some(direct) = direct
        && segment_buf.len() > segment_start
    {
        let run_len = (segment_buf.len() - segment_start) as u64;
        direct
            .appender
            .write(
                direct.file.as_ref(),
                segment_position,
                segment_buf,
                segment_start,
            )
            .map_err(|error| {
                let key = FileKey::segment(log_id, active.base_offset);
                LogError::io("write segment", &files.path(key))(error)
            })?;
        direct.size_bytes = segment_position + run_len;
    } else if let Some(segment_buf) = segment_buf.get(segment_start..)
        && !segment_buf.is_empty()
    {
        let key = FileKey::segment(log_id, active.base_offset);
        let file = files
            .get(key, false)
            .and_then(|file| {
                file.write_all_at(segment_buf, segment_position)
                    .map(|()| file)
            })
            .map_err(|error| LogError::io("write segment", &files.path(key))(error))?;
        // Each whole WRITEBACK_CHUNK_BYTES of a segment is handed to the disk as soon as it is
        // written: the checkpoint's fsync of the segment then finds little left to write,
        // instead of stalling every append behind the whole WAL's worth of segment data.
        let chunk = WRITEBACK_CHUNK_BYTES;
        let written_end = segment_position + segment_buf.len() as u64;
        let (from, to) = (
            segment_position / chunk * chunk,
            written_end / chunk * chunk,
        );
        if to > from {
            file.start_writeback(from, to - from);
        }
    }
    if !index_buf.is_empty() {
        let key = FileKey::index(log_id, active.base_offset);
        files
            .get(key, false)
            .and_then(|file| file.write_all_at(index_buf, index_entry * INDEX_ENTRY_BYTES as u64))
            .map_err(|error| LogError::io("write index", &files.path(key))(error))?;
    }
    Ok(())
}

/// Creates (or empties) the segment and index files for `base_offset`. Not durable until
/// the log directory is fsynced.
pub(crate) fn create_empty_segment(
    files: &FileCache,
    log_id: LogId,
    base_offset: u64,
) -> Result<()> {
    for key in [
        FileKey::segment(log_id, base_offset),
        FileKey::index(log_id, base_offset),
    ] {
        let path = files.path(key);
        files
            .get(key, true)
            .and_then(|file| file.set_size_bytes(0))
            .map_err(LogError::io("create segment", &path))?;
    }
    Ok(())
}
