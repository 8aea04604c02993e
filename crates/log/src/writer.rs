//! The writer thread: group commit into the WAL, copies into segments, checkpoints, and the
//! control operations (create, delete, trim) that change which files exist.
//!
//! One std thread owns every piece of write state, so nothing here needs a lock except to
//! publish to readers. A group is: take the first queued request, drain what else is queued
//! (up to `group_commit_bytes_max`), assign offsets and timestamps, encode one WAL frame per
//! request into one buffer, `write` it, `fdatasync` once, copy the records into the
//! per-log segment files (page cache only), publish the new end offsets, then answer every
//! request. A failed write or fsync poisons the log: nothing after it is acknowledged.
//!
//! Checkpoint: fsync every segment and index file dirtied since the previous checkpoint and
//! every directory whose entries changed, record each log's end state with the WAL position
//! it covers (temp file, fsync, rename, fsync dir), then delete the WAL segments before it.
//! It runs when the WAL segment outgrows `wal_segment_bytes_max`, in `delete_log`, after a
//! recovery that replayed anything, and at shutdown.
//!
//! Recovery (in `recovery`) replays the WAL through the same `append_run` the live path
//! uses, so segment roll and index decisions are identical after a crash.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::error::{LogError, Result};
use crate::files::{FileKey, log_dir};
use crate::format::{
    Checkpoint, CheckpointLog, INDEX_ENTRY_BYTES, IndexEntry, IndexEntryKind, WAL_EXTENSION,
    WalRecord, encode_segment_record, encode_wal_frame, numbered_name,
};
use crate::state::{LogState, LogView, SegmentMeta, Shared};
use crate::storage::{StorageFile, remove_dir_with_files};
use crate::{AppendRecord, Appended, Durability, INDEX_INTERVAL_BYTES, LogId};

pub(crate) const CHECKPOINT_FILE_NAME: &str = "checkpoint";
pub(crate) const CHECKPOINT_TEMP_FILE_NAME: &str = "checkpoint.tmp";
/// Suffix a log directory gets while it is being deleted.
pub(crate) const DELETED_DIR_SUFFIX: &str = ".deleted";

pub(crate) enum Request {
    Append(AppendRequest),
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
    Shutdown,
}

/// One record on its way into a segment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentRecord<'a> {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub payload: &'a [u8],
}

/// The writer's state of one log.
pub(crate) struct WriterLog {
    pub state: Arc<LogState>,
    /// Offset of the next record written to the segments.
    pub next_offset: u64,
    pub last_timestamp_ms: Option<i64>,
    /// Next offset and newest timestamp handed out by the current group (ahead of
    /// `next_offset` between assignment and segment copy).
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

/// The WAL segment being appended to.
pub(crate) struct WalState {
    pub dir: PathBuf,
    /// Base positions of the WAL segment files, ascending; the last is `file`.
    pub segment_bases: Vec<u64>,
    pub file: Arc<dyn StorageFile>,
    pub base_position: u64,
    pub size_bytes: u64,
}

impl WalState {
    pub fn end_position(&self) -> u64 {
        self.base_position + self.size_bytes
    }

    pub fn path(&self, base_position: u64) -> PathBuf {
        self.dir.join(numbered_name(base_position, WAL_EXTENSION))
    }
}

pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub clock: Arc<dyn Clock>,
    pub logs: HashMap<LogId, WriterLog>,
    pub wal: WalState,
    /// (log, segment base) whose segment or index was written since the last checkpoint.
    pub dirty_segments: HashSet<(LogId, u64)>,
    /// Log directories whose entries changed since the last checkpoint.
    pub dirty_dirs: HashSet<LogId>,
    wal_buf: Vec<u8>,
    segment_buf: Vec<u8>,
    index_buf: Vec<u8>,
}

enum Flow {
    Continue,
    Stop,
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
            dirty_segments: HashSet::new(),
            dirty_dirs: HashSet::new(),
            wal_buf: Vec::new(),
            segment_buf: Vec::new(),
            index_buf: Vec::new(),
        }
    }

    fn logs_dir(&self) -> PathBuf {
        self.shared.config.dir.join(crate::LOGS_DIR_NAME)
    }

    fn poison(&self, error: &LogError) {
        if !self.shared.poisoned.swap(true, Ordering::SeqCst) {
            tracing::error!(%error, "storage failure; the log refuses writes until reopened");
        }
    }

    /// Runs until shutdown or until every `Log` handle is dropped.
    pub fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        let mut carried: Option<Request> = None;
        loop {
            let first = match carried.take() {
                Some(request) => request,
                None => match requests.blocking_recv() {
                    Some(request) => request,
                    None => return,
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
                            Ok(control) => {
                                carried = Some(control);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit_group(group);
                }
                Request::Control(control) => {
                    if let Flow::Stop = self.control(control, &mut requests) {
                        return;
                    }
                }
            }
        }
    }

    fn control(&mut self, request: ControlRequest, requests: &mut mpsc::Receiver<Request>) -> Flow {
        if let ControlOp::Shutdown = request.op {
            let result = self.shutdown(requests);
            let _ = request.reply.send(result);
            return Flow::Stop;
        }
        let result = if self.shared.poisoned.load(Ordering::SeqCst) {
            Err(LogError::Poisoned)
        } else {
            match request.op {
                ControlOp::CreateLogs(log_ids) => self.create_logs(&log_ids).map(|()| 0),
                ControlOp::DeleteLogs(log_ids) => self.delete_logs(&log_ids).map(|()| 0),
                ControlOp::TrimBefore(log_id, timestamp_ms) => {
                    self.trim_before(log_id, timestamp_ms)
                }
                ControlOp::Checkpoint => self.checkpoint().map(|()| 0),
                ControlOp::Shutdown => Ok(0),
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
                Request::Control(control) => {
                    let _ = control.reply.send(Err(LogError::Closed));
                }
            }
        }
        let result = if self.shared.poisoned.load(Ordering::SeqCst) {
            Err(LogError::Poisoned)
        } else {
            self.checkpoint().map(|()| 0)
        };
        self.shared.closed.store(true, Ordering::SeqCst);
        if result.is_ok() {
            tracing::info!(
                wal_position = self.wal.end_position(),
                n_logs = self.logs.len(),
                "log shut down cleanly"
            );
        }
        result
    }

    // -----------------------------------------------------------------------------------
    // Group commit

    fn commit_group(&mut self, group: Vec<AppendRequest>) {
        if self.shared.poisoned.load(Ordering::SeqCst) {
            for request in group {
                let _ = request.reply.send(Err(LogError::Poisoned));
            }
            return;
        }
        let wal_full = self.wal.size_bytes >= self.shared.config.wal_segment_bytes_max;
        let rotated = if wal_full {
            self.rotate_wal().and_then(|()| self.checkpoint())
        } else {
            Ok(())
        };
        if let Err(error) = rotated {
            self.poison(&error);
            for request in group {
                let _ = request.reply.send(Err(LogError::Poisoned));
            }
            return;
        }
        let now_ms = self.clock.now_millis();
        let mut accepted: Vec<(AppendRequest, Vec<Appended>)> = Vec::with_capacity(group.len());
        self.wal_buf.clear();
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
        if let Err(error) = self.write_wal() {
            self.poison(&error);
            for (request, _) in accepted {
                let _ = request.reply.send(Err(LogError::Poisoned));
            }
            return;
        }
        if let Err(error) = self.copy_to_segments(&accepted) {
            // The records are durable in the WAL (recovery will copy them) but not readable;
            // stop rather than continue with segments that miss acknowledged offsets.
            self.poison(&error);
            for (request, _) in accepted {
                let _ = request.reply.send(Err(LogError::Poisoned));
            }
            return;
        }
        for (request, appended) in accepted {
            let _ = request.reply.send(Ok(appended));
        }
    }

    fn write_wal(&mut self) -> Result<()> {
        let path = self.wal.path(self.wal.base_position);
        self.wal
            .file
            .write_all_at(&self.wal_buf, self.wal.size_bytes)
            .map_err(LogError::io("write WAL", &path))?;
        self.wal.size_bytes += self.wal_buf.len() as u64;
        if self.shared.config.durability == Durability::Fsync {
            self.wal
                .file
                .sync_data()
                .map_err(LogError::io("fdatasync WAL", &path))?;
        }
        Ok(())
    }

    fn copy_to_segments(&mut self, accepted: &[(AppendRequest, Vec<Appended>)]) -> Result<()> {
        // Group by log, keeping input order within a log (the sort is stable), so each log
        // gets one write per file.
        let mut entries: Vec<(LogId, SegmentRecord<'_>)> = accepted
            .iter()
            .flat_map(|(request, appended)| {
                request
                    .records
                    .iter()
                    .zip(appended)
                    .map(|(record, appended)| {
                        (
                            record.log_id,
                            SegmentRecord {
                                offset: appended.offset,
                                timestamp_ms: appended.timestamp_ms,
                                payload: &record.payload,
                            },
                        )
                    })
            })
            .collect();
        entries.sort_by_key(|(log_id, _)| *log_id);
        let mut run: Vec<SegmentRecord<'_>> = Vec::new();
        for chunk in entries.chunk_by(|a, b| a.0 == b.0) {
            let Some((log_id, _)) = chunk.first() else {
                continue;
            };
            run.clear();
            run.extend(chunk.iter().map(|(_, record)| *record));
            self.append_run(*log_id, &run)?;
            self.publish(*log_id);
        }
        Ok(())
    }

    /// Copies consecutive records of one log into its segments, rolling and indexing as
    /// needed. Also used by WAL replay. Does not publish.
    pub fn append_run(&mut self, log_id: LogId, records: &[SegmentRecord<'_>]) -> Result<()> {
        let config = &self.shared.config;
        let files = &self.shared.files;
        let Some(log) = self.logs.get_mut(&log_id) else {
            return Err(LogError::UnknownLog { log_id });
        };
        self.segment_buf.clear();
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
                    &self.segment_buf,
                    segment_write_position,
                    &self.index_buf,
                    index_write_entry,
                )?;
                self.segment_buf.clear();
                self.index_buf.clear();
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
                create_empty_segment(files, log_id, record.offset)?;
                self.dirty_dirs.insert(log_id);
                log.active = SegmentMeta::empty(record.offset);
                segment_write_position = 0;
                index_write_entry = 0;
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
        flush_run(
            files,
            log_id,
            &log.active,
            &self.segment_buf,
            segment_write_position,
            &self.index_buf,
            index_write_entry,
        )?;
        if log.assign_offset < log.next_offset {
            // Replay moves the log without assigning; keep assignment caught up.
            log.assign_offset = log.next_offset;
            log.assign_timestamp_ms = log.last_timestamp_ms;
        }
        self.dirty_segments.insert((log_id, log.active.base_offset));
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

    fn rotate_wal(&mut self) -> Result<()> {
        let base_position = self.wal.end_position();
        let path = self.wal.path(base_position);
        let file = self
            .shared
            .storage
            .open(&path, true)
            .and_then(|file| file.set_size_bytes(0).map(|()| file))
            .map_err(LogError::io("create WAL segment", &path))?;
        // The new segment must survive a crash before any acknowledged frame goes into it.
        self.shared
            .storage
            .sync_dir(&self.wal.dir)
            .map_err(LogError::io("fsync WAL dir", &self.wal.dir))?;
        self.wal.segment_bases.push(base_position);
        self.wal.file = file;
        self.wal.base_position = base_position;
        self.wal.size_bytes = 0;
        Ok(())
    }

    /// Makes everything written so far durable in the segments and records it.
    pub fn checkpoint(&mut self) -> Result<()> {
        let result = self.checkpoint_inner();
        if let Err(error) = &result {
            self.poison(error);
        }
        result
    }

    fn checkpoint_inner(&mut self) -> Result<()> {
        let storage = &self.shared.storage;
        let files = &self.shared.files;
        let wal_position = self.wal.end_position();
        let n_files_synced = self.dirty_segments.len() * 2;
        for (log_id, base_offset) in self.dirty_segments.drain() {
            for key in [
                FileKey::segment(log_id, base_offset),
                FileKey::index(log_id, base_offset),
            ] {
                let path = files.path(key);
                files
                    .get(key, false)
                    .and_then(|file| file.sync_data())
                    .map_err(LogError::io("fsync segment", &path))?;
            }
        }
        let logs_dir = self.shared.config.dir.join(crate::LOGS_DIR_NAME);
        for log_id in self.dirty_dirs.drain() {
            let dir = log_dir(&logs_dir, log_id);
            storage
                .sync_dir(&dir)
                .map_err(LogError::io("fsync log dir", &dir))?;
        }
        let mut logs: Vec<CheckpointLog> = self
            .logs
            .iter()
            .map(|(log_id, log)| log.checkpoint_entry(*log_id))
            .collect();
        logs.sort_by_key(|log| log.log_id);
        let bytes = Checkpoint { wal_position, logs }.encode();
        let dir = &self.shared.config.dir;
        let temp_path = dir.join(CHECKPOINT_TEMP_FILE_NAME);
        let path = dir.join(CHECKPOINT_FILE_NAME);
        let temp = storage
            .open(&temp_path, true)
            .map_err(LogError::io("create checkpoint", &temp_path))?;
        temp.set_size_bytes(0)
            .and_then(|()| temp.write_all_at(&bytes, 0))
            .and_then(|()| temp.sync_data())
            .map_err(LogError::io("write checkpoint", &temp_path))?;
        storage
            .rename(&temp_path, &path)
            .map_err(LogError::io("rename checkpoint", &path))?;
        storage
            .sync_dir(dir)
            .map_err(LogError::io("fsync data dir", dir))?;
        // Every WAL segment but the active one ends at or before `wal_position`.
        let n_wal_segments = self.wal.segment_bases.len();
        for base_position in self
            .wal
            .segment_bases
            .drain(..n_wal_segments.saturating_sub(1))
        {
            let wal_path = self
                .wal
                .dir
                .join(numbered_name(base_position, WAL_EXTENSION));
            storage
                .remove_file(&wal_path)
                .map_err(LogError::io("remove WAL segment", &wal_path))?;
        }
        tracing::debug!(wal_position, n_files_synced, "checkpoint written");
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // Control operations

    /// Creates logs; one fsync of the logs directory covers the whole batch.
    fn create_logs(&mut self, log_ids: &[LogId]) -> Result<()> {
        let mut created = false;
        for &log_id in log_ids {
            created |= self.create_log(log_id)?;
        }
        if created {
            let logs_dir = self.logs_dir();
            self.shared
                .storage
                .sync_dir(&logs_dir)
                .map_err(LogError::io("fsync logs dir", &logs_dir))?;
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
        let storage = &self.shared.storage;
        storage
            .create_dir(&dir)
            .map_err(LogError::io("create log dir", &dir))?;
        create_empty_segment(&self.shared.files, log_id, 0)?;
        storage
            .sync_dir(&dir)
            .map_err(LogError::io("fsync log dir", &dir))?;
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
    /// logs directory and one checkpoint cover the batch, then the files are removed.
    fn delete_logs(&mut self, log_ids: &[LogId]) -> Result<()> {
        let mut renamed = Vec::new();
        for &log_id in log_ids {
            if let Some(deleted_dir) = self.unlink_log(log_id)? {
                renamed.push((log_id, deleted_dir));
            }
        }
        if renamed.is_empty() {
            return Ok(());
        }
        let logs_dir = self.logs_dir();
        let storage = Arc::clone(&self.shared.storage);
        storage
            .sync_dir(&logs_dir)
            .map_err(LogError::io("fsync logs dir", &logs_dir))?;
        // Move the checkpoint past every WAL frame of these logs, so that a log created
        // later with the same id is never given their records by WAL replay.
        self.checkpoint()?;
        for (log_id, deleted_dir) in renamed {
            remove_dir_with_files(storage.as_ref(), &deleted_dir)
                .map_err(LogError::io("remove deleted log dir", &deleted_dir))?;
            tracing::debug!(log_id, "log deleted");
        }
        Ok(())
    }

    /// Forgets a log and renames its directory to `<id>.deleted`; `None` if it did not
    /// exist.
    fn unlink_log(&mut self, log_id: LogId) -> Result<Option<PathBuf>> {
        let Some(log) = self.logs.remove(&log_id) else {
            return Ok(None);
        };
        self.shared.logs.write().remove(&log_id);
        {
            let mut view = log.state.view.lock();
            view.deleted = true;
            view.segments.clear();
            view.read_hint = None;
            self.shared.files.forget_log(log_id);
        }
        self.dirty_segments
            .retain(|(dirty_log_id, _)| *dirty_log_id != log_id);
        self.dirty_dirs.remove(&log_id);
        let logs_dir = self.logs_dir();
        let dir = log_dir(&logs_dir, log_id);
        let mut deleted_name = dir.clone().into_os_string();
        deleted_name.push(DELETED_DIR_SUFFIX);
        let deleted_dir = PathBuf::from(deleted_name);
        let storage = Arc::clone(&self.shared.storage);
        if storage.list_dir(&deleted_dir).is_ok() {
            remove_dir_with_files(storage.as_ref(), &deleted_dir)
                .map_err(LogError::io("remove deleted log dir", &deleted_dir))?;
        }
        // The rename is the commit point (once the logs directory is fsynced): after it
        // the log is gone, whatever the WAL says.
        storage
            .rename(&dir, &deleted_dir)
            .map_err(LogError::io("rename log dir", &dir))?;
        Ok(Some(deleted_dir))
    }

    fn trim_before(&mut self, log_id: LogId, timestamp_ms: i64) -> Result<u64> {
        let files = &self.shared.files;
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
        let dir = log_dir(&self.shared.config.dir.join(crate::LOGS_DIR_NAME), log_id);
        if n_expired == n_segments {
            // Everything is expired, the active segment too. An empty segment named by the
            // end offset keeps that offset on disk (so it is never reused), and must be
            // durable before the old segments go.
            let end_offset = log.next_offset;
            create_empty_segment(files, log_id, end_offset)?;
            self.shared
                .storage
                .sync_dir(&dir)
                .map_err(LogError::io("fsync log dir", &dir))?;
            log.active = SegmentMeta::empty(end_offset);
            log.state.view.lock().put_segment(log.active);
        }
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
        for segment in &removed {
            self.dirty_segments.remove(&(log_id, segment.base_offset));
            for key in [
                FileKey::segment(log_id, segment.base_offset),
                FileKey::index(log_id, segment.base_offset),
            ] {
                let path = files.path(key);
                self.shared
                    .storage
                    .remove_file(&path)
                    .map_err(LogError::io("remove segment", &path))?;
            }
        }
        // Removals become durable at the next checkpoint; recovery copes with any subset.
        self.dirty_dirs.insert(log_id);
        let start_offset = log.state.view.lock().start_offset();
        tracing::debug!(
            log_id,
            n_segments_removed = removed.len(),
            start_offset,
            "log trimmed"
        );
        Ok(start_offset)
    }
}

/// Writes the buffered records and index entries of one run to the active segment.
fn flush_run(
    files: &crate::files::FileCache,
    log_id: LogId,
    active: &SegmentMeta,
    segment_buf: &[u8],
    segment_position: u64,
    index_buf: &[u8],
    index_entry: u64,
) -> Result<()> {
    if !segment_buf.is_empty() {
        let key = FileKey::segment(log_id, active.base_offset);
        let path = files.path(key);
        files
            .get(key, false)
            .and_then(|file| file.write_all_at(segment_buf, segment_position))
            .map_err(LogError::io("write segment", &path))?;
    }
    if !index_buf.is_empty() {
        let key = FileKey::index(log_id, active.base_offset);
        let path = files.path(key);
        files
            .get(key, false)
            .and_then(|file| file.write_all_at(index_buf, index_entry * INDEX_ENTRY_BYTES as u64))
            .map_err(LogError::io("write index", &path))?;
    }
    Ok(())
}

/// Creates (or empties) the segment and index files for `base_offset`. Not durable until
/// the log directory is fsynced.
pub(crate) fn create_empty_segment(
    files: &crate::files::FileCache,
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
