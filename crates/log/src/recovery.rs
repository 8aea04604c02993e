//! Opening a store: load the checkpoint, bring every log's segments back to the state it
//! records, replay the WAL after it, and hand a ready writer back.
//!
//! Why truncating to the checkpoint is enough: everything a checkpoint describes was
//! fsynced before the checkpoint was written, and everything after it is in the WAL (which
//! was fsynced before any of it was acknowledged). Segment bytes written after the
//! checkpoint may have reached the disk in any order, so they are dropped and rewritten
//! from the WAL rather than trusted. Trims and deletes are file removals whose durability
//! the checkpoint does not track; the rules below accept any subset of them having
//! reached the disk:
//!
//! - A log directory named `<id>.deleted` is a delete that committed (the rename is the
//!   commit point): remove it.
//! - If the checkpoint's active segment `B` of a log still exists: truncate it to the
//!   checkpointed size and index count, drop segments above it, and keep the sealed
//!   segments below it that chain to it without a gap (a gap means a trim removed what is
//!   before it).
//! - Otherwise a trim removed `B` after the checkpoint, which first made an empty segment
//!   durable at the log's end; the smallest segment above `B` starts the log, emptied, and
//!   replay refills it. A log missing from the checkpoint (created after it) is treated the
//!   same way with `B` = nothing.
//!
//! This module does not serve reads or appends; it only runs before the writer starts.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use parking_lot::RwLock;

use crate::clock::Clock;
use crate::direct::open_active;
use crate::error::{LogError, Result};
use crate::files::{FileCache, FileKey, log_dir};
use crate::format::{
    Checkpoint, CheckpointLog, INDEX_ENTRY_BYTES, INDEX_EXTENSION, IndexEntry, IndexEntryKind,
    SEGMENT_EXTENSION, WAL_EXTENSION, WAL_FRAME_HEADER_BYTES, WAL_PAYLOAD_PREFIX_BYTES,
    decode_wal_frame_header, decode_wal_frame_payload, numbered_name, parse_numbered_name,
    peek_wal_frame_group, wal_frame_bytes,
};
use crate::state::{LogState, LogView, SegmentMeta, Shared};
use crate::storage::{Storage, StorageFile, read_fully_at, remove_dir_with_files};
use crate::writer::{
    CHECKPOINT_FILE_NAME, CHECKPOINT_TEMP_FILE_NAME, DELETED_DIR_SUFFIX, SegmentRecord, WalState,
    Writer, WriterLog, create_empty_segment,
};
use crate::{
    APPEND_BYTES_MAX, APPEND_RECORDS_MAX, Durability, LOCK_FILE_NAME, LOGS_DIR_NAME, LogConfig,
    LogId, WAL_DIR_NAME,
};

/// Bytes read from the WAL per `pread` during replay (and per step of the scan for later
/// group commits after an invalid frame).
const WAL_READ_CHUNK_BYTES: usize = 1024 * 1024;
/// Times an invalid WAL frame is read from the storage before it counts as invalid: a bit
/// flipped on the way from the disk must not cut acknowledged frames off the WAL.
const WAL_FRAME_READ_ATTEMPTS_MAX: u32 = 3;

/// What recovery found and did, logged once at the end.
#[derive(Debug, Default)]
struct RecoveryReport {
    n_logs: usize,
    n_deleted_dirs_removed: usize,
    n_segments_dropped: usize,
    n_segment_bytes_truncated: u64,
    n_wal_frames_replayed: u64,
    n_records_replayed: u64,
    n_records_skipped: u64,
    n_wal_bytes_truncated: u64,
}

impl RecoveryReport {
    fn changed_anything(&self) -> bool {
        self.n_deleted_dirs_removed > 0
            || self.n_segments_dropped > 0
            || self.n_segment_bytes_truncated > 0
            || self.n_records_replayed > 0
            || self.n_wal_bytes_truncated > 0
    }
}

/// Recovers the store in `config.dir` and returns a writer ready to run.
pub(crate) fn recover(
    config: LogConfig,
    clock: Arc<dyn Clock>,
    storage: Arc<dyn Storage>,
) -> Result<Writer> {
    let started = Instant::now();
    let dir = config.dir.clone();
    let wal_dir = dir.join(WAL_DIR_NAME);
    let logs_dir = dir.join(LOGS_DIR_NAME);
    for path in [&dir, &wal_dir, &logs_dir] {
        storage
            .create_dir(path)
            .map_err(LogError::io("create dir", path))?;
    }
    let lock_path = dir.join(LOCK_FILE_NAME);
    let lock = storage.lock(&lock_path).map_err(|error| {
        if error.kind() == io::ErrorKind::WouldBlock {
            LogError::Locked { path: dir.clone() }
        } else {
            LogError::io("lock", &lock_path)(error)
        }
    })?;
    // Whatever a previous process left in these directories (it may have died before its
    // directory fsyncs, or after a failed one) is what recovery builds on: make it durable.
    // The parent too, so that a data directory created just now survives a power loss.
    let parent = dir.parent().filter(|parent| !parent.as_os_str().is_empty());
    for path in parent
        .into_iter()
        .chain([dir.as_path(), &wal_dir, &logs_dir])
    {
        storage
            .sync_dir(path)
            .map_err(LogError::io("fsync dir", path))?;
    }
    let checkpoint = load_checkpoint(storage.as_ref(), &dir)?;
    let files = FileCache::new(
        Arc::clone(&storage),
        logs_dir.clone(),
        config.open_files_max,
    );
    let durability = config.durability;
    let shared = Arc::new(Shared {
        config,
        storage: Arc::clone(&storage),
        files,
        logs: RwLock::new(HashMap::new()),
        poisoned: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        lock: parking_lot::Mutex::new(Some(lock)),
    });
    let mut report = RecoveryReport::default();
    let mut dirty = Dirty::default();
    let wal_position = checkpoint.as_ref().map_or(0, |c| c.wal_position);
    let checkpoint_logs: HashMap<LogId, CheckpointLog> = checkpoint
        .iter()
        .flat_map(|c| c.logs.iter().map(|log| (log.log_id, *log)))
        .collect();

    let mut writer_logs = HashMap::new();
    for name in storage
        .list_dir(&logs_dir)
        .map_err(LogError::io("list logs dir", &logs_dir))?
    {
        let path = logs_dir.join(&name);
        if name.ends_with(DELETED_DIR_SUFFIX) {
            remove_dir_with_files(storage.as_ref(), &path)
                .map_err(LogError::io("remove deleted log dir", &path))?;
            report.n_deleted_dirs_removed += 1;
            continue;
        }
        let Some(log_id) = parse_log_dir_name(&name) else {
            tracing::warn!(path = %path.display(), "ignoring unexpected entry in logs dir");
            continue;
        };
        let recovered = recover_log(
            &shared,
            log_id,
            checkpoint_logs.get(&log_id),
            &mut report,
            &mut dirty,
        )?;
        let active = recovered.active();
        let state = Arc::new(LogState::new(
            log_id,
            LogView {
                segments: recovered.segments,
                end_offset: recovered.next_offset,
                last_timestamp_ms: recovered.last_timestamp_ms,
                deleted: false,
                read_hint: None,
            },
        ));
        shared.logs.write().insert(log_id, Arc::clone(&state));
        writer_logs.insert(
            log_id,
            WriterLog::new(state, active, recovered.last_timestamp_ms),
        );
    }
    report.n_logs = writer_logs.len();
    if report.n_deleted_dirs_removed > 0 {
        // Settle the deletes: a delete whose rename was not yet durable must not bring its
        // log back after the next power loss, now that this process has told the world
        // the log is gone.
        storage
            .sync_dir(&logs_dir)
            .map_err(LogError::io("fsync logs dir", &logs_dir))?;
    }

    let wal_segments = list_wal_segments(storage.as_ref(), &wal_dir, wal_position)?;
    let placeholder =
        open_wal_placeholder(storage.as_ref(), &wal_dir, &wal_segments, wal_position)?;
    let mut writer = Writer::new(shared, clock, writer_logs, placeholder);
    writer.dirty_segments = dirty.segments;
    writer.dirty_dirs = dirty.dirs;
    replay_wal(
        &mut writer,
        &wal_segments,
        wal_position,
        durability,
        &mut report,
    )?;
    let log_ids: Vec<LogId> = writer.logs.keys().copied().collect();
    for log_id in log_ids {
        writer.publish(log_id);
    }
    // A fresh WAL segment, and a checkpoint that covers everything replayed: recovery read
    // the old tail through the page cache, which after a failed fsync may hold pages that
    // never reach the disk; after this checkpoint nothing depends on them. It also starts
    // the WAL's age afresh without keeping old records in the WAL past `wal_age_ms_max`.
    let rotated = writer.wal.size_bytes > 0;
    if rotated {
        writer.rotate_wal()?;
    }
    // Also whenever recovery made a file or changed a directory: a segment it created must
    // be durable before appends roll past it (a later segment reaching the disk without it
    // would make the next recovery start the log there).
    let dirty = !writer.dirty_segments.is_empty() || !writer.dirty_dirs.is_empty();
    if rotated || dirty || report.changed_anything() || checkpoint.is_none() {
        writer.checkpoint()?;
    }
    tracing::info!(
        n_logs = report.n_logs,
        wal_position = writer.wal.end_position(),
        n_deleted_dirs_removed = report.n_deleted_dirs_removed,
        n_segments_dropped = report.n_segments_dropped,
        n_segment_bytes_truncated = report.n_segment_bytes_truncated,
        n_wal_frames_replayed = report.n_wal_frames_replayed,
        n_records_replayed = report.n_records_replayed,
        n_records_skipped = report.n_records_skipped,
        n_wal_bytes_truncated = report.n_wal_bytes_truncated,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "log recovered"
    );
    Ok(writer)
}

#[derive(Default)]
struct Dirty {
    segments: BTreeSet<(LogId, u64)>,
    dirs: BTreeSet<LogId>,
}

fn parse_log_dir_name(name: &str) -> Option<LogId> {
    if name.len() != 20 || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

fn load_checkpoint(storage: &dyn Storage, dir: &Path) -> Result<Option<Checkpoint>> {
    let temp_path = dir.join(CHECKPOINT_TEMP_FILE_NAME);
    match storage.remove_file(&temp_path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(LogError::io("remove checkpoint temp", &temp_path)(error)),
    }
    let path = dir.join(CHECKPOINT_FILE_NAME);
    let file = match storage.open(&path, false) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(LogError::io("open checkpoint", &path)(error)),
    };
    let size_bytes = file
        .size_bytes()
        .map_err(LogError::io("stat checkpoint", &path))?;
    let size_bytes = usize::try_from(size_bytes)
        .map_err(|_| LogError::corrupt(&path, 0, "checkpoint too large"))?;
    let mut bytes = vec![0u8; size_bytes];
    let n = read_fully_at(file.as_ref(), &mut bytes, 0)
        .map_err(LogError::io("read checkpoint", &path))?;
    bytes.truncate(n);
    // The checkpoint is replaced atomically, so a damaged one is not a torn write: refuse.
    Checkpoint::decode(&bytes)
        .map(Some)
        .map_err(|reason| LogError::corrupt(&path, 0, reason))
}

struct RecoveredLog {
    /// Ends with the active segment.
    segments: VecDeque<SegmentMeta>,
    next_offset: u64,
    last_timestamp_ms: Option<i64>,
}

impl RecoveredLog {
    fn active(&self) -> SegmentMeta {
        self.segments
            .back()
            .copied()
            .unwrap_or(SegmentMeta::empty(self.next_offset))
    }
}

fn read_index_entry(file: &dyn StorageFile, path: &Path, entry_idx: u64) -> Result<IndexEntry> {
    let position = entry_idx * INDEX_ENTRY_BYTES as u64;
    let mut bytes = [0u8; INDEX_ENTRY_BYTES];
    let n = read_fully_at(file, &mut bytes, position).map_err(LogError::io("read index", path))?;
    if n != INDEX_ENTRY_BYTES {
        return Err(LogError::corrupt(path, position, "index entry missing"));
    }
    IndexEntry::decode(bytes).map_err(|reason| LogError::corrupt(path, position, reason))
}

fn remove_segment_files(
    shared: &Shared,
    log_id: LogId,
    base_offset: u64,
    report: &mut RecoveryReport,
    dirty: &mut Dirty,
) -> Result<()> {
    for key in [
        FileKey::segment(log_id, base_offset),
        FileKey::index(log_id, base_offset),
    ] {
        shared.files.forget(key);
        let path = shared.files.path(key);
        match shared.storage.remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(LogError::io("remove segment", &path)(error)),
        }
    }
    report.n_segments_dropped += 1;
    dirty.dirs.insert(log_id);
    Ok(())
}

fn recover_log(
    shared: &Shared,
    log_id: LogId,
    checkpointed: Option<&CheckpointLog>,
    report: &mut RecoveryReport,
    dirty: &mut Dirty,
) -> Result<RecoveredLog> {
    let logs_dir = shared.config.dir.join(LOGS_DIR_NAME);
    let dir = log_dir(&logs_dir, log_id);
    let mut segment_bases = BTreeSet::new();
    let mut index_bases = BTreeSet::new();
    for name in shared
        .storage
        .list_dir(&dir)
        .map_err(LogError::io("list log dir", &dir))?
    {
        if let Some(base) = parse_numbered_name(&name, SEGMENT_EXTENSION) {
            segment_bases.insert(base);
        } else if let Some(base) = parse_numbered_name(&name, INDEX_EXTENSION) {
            index_bases.insert(base);
        }
    }
    // An index without its segment is left over from a removal that half reached the disk.
    for base in index_bases.difference(&segment_bases) {
        let key = FileKey::index(log_id, *base);
        let path = shared.files.path(key);
        shared
            .storage
            .remove_file(&path)
            .map_err(LogError::io("remove orphan index", &path))?;
        dirty.dirs.insert(log_id);
    }
    // A segment without its index is left over from a trim whose removals reached the
    // disk in the other order (or from a creation that never became durable, which no
    // checkpoint describes): no live segment lacks its index, since both are created
    // together and made durable together before anything depends on them.
    for base in segment_bases.difference(&index_bases) {
        let key = FileKey::segment(log_id, *base);
        let path = shared.files.path(key);
        shared.files.forget(key);
        shared
            .storage
            .remove_file(&path)
            .map_err(LogError::io("remove segment without index", &path))?;
        report.n_segments_dropped += 1;
        dirty.dirs.insert(log_id);
    }
    let segment_bases: BTreeSet<u64> = segment_bases.intersection(&index_bases).copied().collect();

    if let Some(checkpointed) =
        checkpointed.filter(|c| segment_bases.contains(&c.active_base_offset))
    {
        return recover_from_checkpointed_segment(
            shared,
            log_id,
            checkpointed,
            &segment_bases,
            report,
            dirty,
        );
    }
    // The log was created after the checkpoint, or a trim removed the checkpointed active
    // segment: the smallest later segment starts the log, and the WAL refills it.
    let floor = checkpointed.map(|c| c.active_base_offset);
    let start = segment_bases
        .iter()
        .copied()
        .find(|base| floor.is_none_or(|floor| *base > floor));
    let start = match (start, checkpointed) {
        (Some(start), _) => start,
        (None, None) => 0, // create_log crashed before its segment was durable; finish it
        (None, Some(_)) => {
            return Err(LogError::corrupt(
                &dir,
                0,
                "log has lost its checkpointed segment and every later one",
            ));
        }
    };
    for base in segment_bases.iter().copied().filter(|base| *base != start) {
        remove_segment_files(shared, log_id, base, report, dirty)?;
    }
    for key in [
        FileKey::segment(log_id, start),
        FileKey::index(log_id, start),
    ] {
        let size_bytes = shared
            .files
            .get(key, false)
            .and_then(|file| file.size_bytes())
            .unwrap_or(0);
        report.n_segment_bytes_truncated += size_bytes;
    }
    create_empty_segment(&shared.files, log_id, start)?;
    dirty.dirs.insert(log_id);
    dirty.segments.insert((log_id, start));
    Ok(RecoveredLog {
        segments: [SegmentMeta::empty(start)].into(),
        next_offset: start,
        last_timestamp_ms: checkpointed.and_then(|c| c.last_timestamp_ms),
    })
}

fn recover_from_checkpointed_segment(
    shared: &Shared,
    log_id: LogId,
    checkpointed: &CheckpointLog,
    segment_bases: &BTreeSet<u64>,
    report: &mut RecoveryReport,
    dirty: &mut Dirty,
) -> Result<RecoveredLog> {
    let active_base = checkpointed.active_base_offset;
    for base in segment_bases.range(active_base + 1..) {
        remove_segment_files(shared, log_id, *base, report, dirty)?;
    }
    // Truncate the active segment and its index to the checkpointed state.
    let segment_key = FileKey::segment(log_id, active_base);
    let index_key = FileKey::index(log_id, active_base);
    let segment_path = shared.files.path(segment_key);
    let index_path = shared.files.path(index_key);
    let segment = shared
        .files
        .get(segment_key, false)
        .map_err(LogError::io("open segment", &segment_path))?;
    let index = shared
        .files
        .get(index_key, true)
        .map_err(LogError::io("open index", &index_path))?;
    let index_size_bytes = checkpointed.active_index_entries_n * INDEX_ENTRY_BYTES as u64;
    for (file, path, size_bytes) in [
        (&segment, &segment_path, checkpointed.active_size_bytes),
        (&index, &index_path, index_size_bytes),
    ] {
        let actual = file
            .size_bytes()
            .map_err(LogError::io("stat segment", path))?;
        if actual < size_bytes {
            return Err(LogError::corrupt(
                path,
                actual,
                "file shorter than its checkpointed size",
            ));
        }
        if actual > size_bytes {
            file.set_size_bytes(size_bytes)
                .map_err(LogError::io("truncate segment", path))?;
            report.n_segment_bytes_truncated += actual - size_bytes;
            dirty.segments.insert((log_id, active_base));
        }
    }
    let (first_timestamp_ms, last_index_position) = if checkpointed.active_index_entries_n > 0 {
        let first = read_index_entry(index.as_ref(), &index_path, 0)?;
        let last = read_index_entry(
            index.as_ref(),
            &index_path,
            checkpointed.active_index_entries_n - 1,
        )?;
        if first.kind != IndexEntryKind::Record
            || first.offset != active_base
            || first.position != 0
        {
            return Err(LogError::corrupt(
                &index_path,
                0,
                "first index entry does not start the segment",
            ));
        }
        (Some(first.timestamp_ms), last.position)
    } else {
        (None, 0)
    };
    let active = SegmentMeta {
        base_offset: active_base,
        end_offset: checkpointed.end_offset,
        size_bytes: checkpointed.active_size_bytes,
        index_entries_n: checkpointed.active_index_entries_n,
        first_timestamp_ms,
        last_timestamp_ms: if checkpointed.active_size_bytes > 0 {
            checkpointed.last_timestamp_ms
        } else {
            None
        },
        last_index_position,
    };
    let mut segments = VecDeque::from([active]);
    // Sealed segments below: keep those that chain to the active one without a gap.
    let mut successor_base = active_base;
    let mut chain_broken = false;
    for base in segment_bases.range(..active_base).rev().copied() {
        if !chain_broken {
            let sealed = read_sealed_segment(shared, log_id, base)?;
            if sealed.end_offset == successor_base {
                segments.push_front(sealed);
                successor_base = base;
                continue;
            }
            chain_broken = true;
        }
        // Left behind by a trim whose later removals reached the disk first.
        remove_segment_files(shared, log_id, base, report, dirty)?;
    }
    Ok(RecoveredLog {
        segments,
        next_offset: checkpointed.end_offset,
        last_timestamp_ms: checkpointed.last_timestamp_ms,
    })
}

/// Reads a sealed segment's metadata from its first index entry and its seal.
fn read_sealed_segment(shared: &Shared, log_id: LogId, base_offset: u64) -> Result<SegmentMeta> {
    let index_key = FileKey::index(log_id, base_offset);
    let index_path = shared.files.path(index_key);
    let index = shared
        .files
        .get(index_key, false)
        .map_err(LogError::io("open index", &index_path))?;
    let index_size_bytes = index
        .size_bytes()
        .map_err(LogError::io("stat index", &index_path))?;
    let entry_bytes = INDEX_ENTRY_BYTES as u64;
    if index_size_bytes % entry_bytes != 0 || index_size_bytes < 2 * entry_bytes {
        return Err(LogError::corrupt(
            &index_path,
            index_size_bytes,
            "sealed segment index has a bad size",
        ));
    }
    let n_entries = index_size_bytes / entry_bytes;
    let first = read_index_entry(index.as_ref(), &index_path, 0)?;
    let seal = read_index_entry(index.as_ref(), &index_path, n_entries - 1)?;
    if first.kind != IndexEntryKind::Record || first.offset != base_offset || first.position != 0 {
        return Err(LogError::corrupt(
            &index_path,
            0,
            "first index entry does not start the segment",
        ));
    }
    if seal.kind != IndexEntryKind::Seal || seal.offset <= base_offset {
        return Err(LogError::corrupt(
            &index_path,
            index_size_bytes - entry_bytes,
            "sealed segment has no valid seal",
        ));
    }
    let segment_key = FileKey::segment(log_id, base_offset);
    let segment_path = shared.files.path(segment_key);
    let segment_size_bytes = shared
        .files
        .get(segment_key, false)
        .and_then(|file| file.size_bytes())
        .map_err(LogError::io("stat segment", &segment_path))?;
    if segment_size_bytes != seal.position {
        return Err(LogError::corrupt(
            &segment_path,
            segment_size_bytes,
            "sealed segment size differs from its seal",
        ));
    }
    Ok(SegmentMeta {
        base_offset,
        end_offset: seal.offset,
        size_bytes: seal.position,
        index_entries_n: n_entries - 1,
        first_timestamp_ms: Some(first.timestamp_ms),
        last_timestamp_ms: Some(seal.timestamp_ms),
        last_index_position: 0,
    })
}

// ---------------------------------------------------------------------------------------
// WAL

/// WAL segment bases still needed (covering `wal_position` and after), ascending; removes
/// segments the checkpoint covers entirely.
fn list_wal_segments(storage: &dyn Storage, wal_dir: &Path, wal_position: u64) -> Result<Vec<u64>> {
    let mut bases: Vec<u64> = storage
        .list_dir(wal_dir)
        .map_err(LogError::io("list WAL dir", wal_dir))?
        .iter()
        .filter_map(|name| parse_numbered_name(name, WAL_EXTENSION))
        .collect();
    bases.sort_unstable();
    let n_covered = bases
        .windows(2)
        .take_while(|pair| pair.get(1).is_some_and(|next| *next <= wal_position))
        .count();
    for base in bases.drain(..n_covered) {
        let path = wal_dir.join(numbered_name(base, WAL_EXTENSION));
        storage
            .remove_file(&path)
            .map_err(LogError::io("remove WAL segment", &path))?;
    }
    Ok(bases)
}

/// The WAL state to construct the writer with; `replay_wal` fixes its size afterwards.
fn open_wal_placeholder(
    storage: &dyn Storage,
    wal_dir: &Path,
    segment_bases: &[u64],
    wal_position: u64,
) -> Result<WalState> {
    let base_position = segment_bases.last().copied().unwrap_or(wal_position);
    let path = wal_dir.join(numbered_name(base_position, WAL_EXTENSION));
    // Buffered while recovery replays; `finish_wal` opens the segment for appends.
    let file = storage
        .open(&path, true)
        .map_err(LogError::io("open WAL segment", &path))?;
    if segment_bases.is_empty() {
        storage
            .sync_dir(wal_dir)
            .map_err(LogError::io("fsync WAL dir", wal_dir))?;
    }
    Ok(WalState {
        dir: wal_dir.to_path_buf(),
        segment_bases: vec![base_position],
        file,
        base_position,
        size_bytes: 0,
        first_frame_ms: None,
        direct: None,
    })
}

/// Buffered sequential reader of one WAL segment.
struct WalReader {
    file: Arc<dyn StorageFile>,
    path: PathBuf,
    buf: Vec<u8>,
    buf_position: u64,
    position: u64,
}

enum FrameRead {
    Frame {
        len: u32,
        crc: u32,
    },
    /// Clean end of the file.
    End,
    /// A torn or invalid frame starts at `position`.
    Invalid(&'static str),
}

impl WalReader {
    /// Makes `len` bytes from `position` available in `buf`; false if the file ends first.
    fn fill(&mut self, len: usize) -> Result<bool> {
        let start = usize::try_from(self.position - self.buf_position).unwrap_or(usize::MAX);
        if self.position >= self.buf_position && start.saturating_add(len) <= self.buf.len() {
            return Ok(true);
        }
        self.buf.resize(len.max(WAL_READ_CHUNK_BYTES), 0);
        let n = read_fully_at(self.file.as_ref(), &mut self.buf, self.position)
            .map_err(LogError::io("read WAL", &self.path))?;
        self.buf.truncate(n);
        self.buf_position = self.position;
        Ok(n >= len)
    }

    /// Forgets the buffered bytes, so the next frame is read from the storage again.
    fn discard_buffer(&mut self) {
        self.buf.clear();
        self.buf_position = self.position;
    }

    fn bytes(&self, len: usize) -> &[u8] {
        let start = usize::try_from(self.position - self.buf_position).unwrap_or(usize::MAX);
        self.buf
            .get(start..start.saturating_add(len))
            .unwrap_or_default()
    }

    fn next_frame(&mut self) -> Result<FrameRead> {
        if !self.fill(WAL_FRAME_HEADER_BYTES)? {
            let start = self.position - self.buf_position;
            return Ok(if self.buf.len() as u64 <= start {
                FrameRead::End
            } else {
                FrameRead::Invalid("torn WAL frame header")
            });
        }
        let Ok(header) =
            <[u8; WAL_FRAME_HEADER_BYTES]>::try_from(self.bytes(WAL_FRAME_HEADER_BYTES))
        else {
            return Ok(FrameRead::Invalid("torn WAL frame header"));
        };
        let (len, crc) = decode_wal_frame_header(header);
        let payload_bytes_max =
            wal_frame_bytes(APPEND_RECORDS_MAX, APPEND_BYTES_MAX) - WAL_FRAME_HEADER_BYTES;
        let Ok(len_usize) = usize::try_from(len) else {
            return Ok(FrameRead::Invalid("WAL frame length out of range"));
        };
        if len == 0 || len_usize > payload_bytes_max {
            return Ok(FrameRead::Invalid("WAL frame length out of range"));
        }
        if !self.fill(WAL_FRAME_HEADER_BYTES + len_usize)? {
            return Ok(FrameRead::Invalid("torn WAL frame"));
        }
        Ok(FrameRead::Frame { len, crc })
    }
}

fn replay_wal(
    writer: &mut Writer,
    segment_bases: &[u64],
    wal_position: u64,
    durability: Durability,
    report: &mut RecoveryReport,
) -> Result<()> {
    let storage = Arc::clone(&writer.shared.storage);
    let wal_dir = writer.wal.dir.clone();
    // The segment holding the checkpoint position comes first, then each segment must start
    // where the previous one ended.
    let mut expected_base: Option<u64> = None;
    let mut last_valid: Option<(u64, u64)> = None; // (segment base, valid size)
    for (segment_idx, base_position) in segment_bases.iter().copied().enumerate() {
        let path = wal_dir.join(numbered_name(base_position, WAL_EXTENSION));
        let in_sequence = match expected_base {
            Some(expected_base) => base_position == expected_base,
            None => base_position <= wal_position,
        };
        if !in_sequence {
            let rest = segment_bases.get(segment_idx..).unwrap_or_default();
            drop_wal_after_hole(durability, &path, rest, storage.as_ref(), &wal_dir, report)?;
            break;
        }
        let file = storage
            .open(&path, false)
            .map_err(LogError::io("open WAL segment", &path))?;
        let file_size_bytes = file
            .size_bytes()
            .map_err(LogError::io("stat WAL segment", &path))?;
        let start = wal_position.saturating_sub(base_position);
        if start > file_size_bytes {
            // The checkpoint covers more than this segment holds (possible only when the
            // WAL is not fsynced): nothing here to replay.
            last_valid = Some((base_position, file_size_bytes));
            expected_base = Some(base_position + file_size_bytes);
            continue;
        }
        let mut reader = WalReader {
            file: Arc::clone(&file),
            path: path.clone(),
            buf: Vec::new(),
            buf_position: start,
            position: start,
        };
        let mut n_attempts = 0;
        let invalid = loop {
            let reason = match reader.next_frame()? {
                FrameRead::End => break None,
                FrameRead::Invalid(reason) => reason,
                FrameRead::Frame { len, crc } => {
                    let frame_bytes = WAL_FRAME_HEADER_BYTES + len as usize;
                    let frame = reader.bytes(frame_bytes);
                    let payload = frame.get(WAL_FRAME_HEADER_BYTES..).unwrap_or_default();
                    match decode_wal_frame_payload(len, crc, payload) {
                        Err(reason) => reason,
                        Ok(frame) => {
                            let segment_records: Vec<(LogId, SegmentRecord<'_>)> = frame
                                .records
                                .iter()
                                .map(|record| {
                                    (
                                        record.log_id,
                                        SegmentRecord {
                                            offset: record.offset,
                                            timestamp_ms: record.timestamp_ms,
                                            payload: record.payload,
                                        },
                                    )
                                })
                                .collect();
                            apply_frame(writer, &segment_records, &path, reader.position, report)?;
                            report.n_wal_frames_replayed += 1;
                            reader.position += frame_bytes as u64;
                            n_attempts = 0;
                            continue;
                        }
                    }
                }
            };
            n_attempts += 1;
            if n_attempts >= WAL_FRAME_READ_ATTEMPTS_MAX {
                break Some(reason);
            }
            reader.discard_buffer();
        };
        let valid_size_bytes = reader.position;
        let rest = segment_bases.get(segment_idx + 1..).unwrap_or_default();
        if let Some(reason) = invalid {
            if !rest.is_empty() && durability == Durability::Fsync {
                // Frames after this one were acknowledged after an fsync: this is not a
                // torn tail but damage, and dropping them would lose acknowledged data.
                return Err(LogError::corrupt(&path, valid_size_bytes, reason));
            }
            if durability == Durability::Fsync
                && find_later_group(
                    file.as_ref(),
                    &path,
                    base_position,
                    valid_size_bytes,
                    file_size_bytes,
                )?
                .is_some()
            {
                // A later group commit was written only after this frame's fsync returned:
                // the frame was durable and acknowledged, and is damaged now.
                return Err(LogError::corrupt(
                    &path,
                    valid_size_bytes,
                    "invalid WAL frame followed by a later group commit",
                ));
            }
            tracing::warn!(
                path = %path.display(),
                position = valid_size_bytes,
                n_bytes_dropped = file_size_bytes - valid_size_bytes,
                reason,
                "truncating the WAL at a torn or invalid frame"
            );
        }
        if valid_size_bytes < file_size_bytes {
            file.set_size_bytes(valid_size_bytes)
                .map_err(LogError::io("truncate WAL", &path))?;
            report.n_wal_bytes_truncated += file_size_bytes - valid_size_bytes;
        }
        last_valid = Some((base_position, valid_size_bytes));
        expected_base = Some(base_position + valid_size_bytes);
        if invalid.is_some() && !rest.is_empty() {
            drop_wal_after_hole(durability, &path, rest, storage.as_ref(), &wal_dir, report)?;
            break;
        }
    }
    finish_wal(writer, last_valid, wal_position)
}

/// Looks for a valid frame of a later group commit than the invalid frame at
/// `invalid_at` (a position in the segment file at WAL position `base_position`): one
/// whose group position is past the invalid frame's own position. Returns its position in
/// the file. Reads the tail in chunks; only byte positions whose frame prefix looks right
/// (kind, zero reserved bytes, a plausible group position) pay for a checksum.
fn find_later_group(
    file: &dyn StorageFile,
    path: &Path,
    base_position: u64,
    invalid_at: u64,
    file_size_bytes: u64,
) -> Result<Option<u64>> {
    const PEEK_BYTES: usize = WAL_FRAME_HEADER_BYTES + WAL_PAYLOAD_PREFIX_BYTES;
    let invalid_wal_position = base_position + invalid_at;
    let payload_bytes_max =
        wal_frame_bytes(APPEND_RECORDS_MAX, APPEND_BYTES_MAX) - WAL_FRAME_HEADER_BYTES;
    let mut chunk = vec![0u8; WAL_READ_CHUNK_BYTES + PEEK_BYTES];
    let mut chunk_start = invalid_at + 1;
    while chunk_start + PEEK_BYTES as u64 <= file_size_bytes {
        let n_read =
            read_fully_at(file, &mut chunk, chunk_start).map_err(LogError::io("read WAL", path))?;
        let bytes = chunk.get(..n_read).unwrap_or_default();
        let n_positions = n_read
            .saturating_sub(PEEK_BYTES - 1)
            .min(WAL_READ_CHUNK_BYTES);
        for idx in 0..n_positions {
            let Some(peek) = bytes.get(idx..idx + PEEK_BYTES) else {
                break;
            };
            let Some((header, prefix)) = peek.split_first_chunk::<WAL_FRAME_HEADER_BYTES>() else {
                continue;
            };
            let position = chunk_start + idx as u64;
            let Some(group_position) = peek_wal_frame_group(prefix) else {
                continue;
            };
            if group_position <= invalid_wal_position || group_position > base_position + position {
                continue;
            }
            let (len, crc) = decode_wal_frame_header(*header);
            let Ok(len_usize) = usize::try_from(len) else {
                continue;
            };
            if len_usize < WAL_PAYLOAD_PREFIX_BYTES
                || len_usize > payload_bytes_max
                || position + (WAL_FRAME_HEADER_BYTES + len_usize) as u64 > file_size_bytes
            {
                continue;
            }
            let mut payload = vec![0u8; len_usize];
            let n = read_fully_at(file, &mut payload, position + WAL_FRAME_HEADER_BYTES as u64)
                .map_err(LogError::io("read WAL", path))?;
            if n == len_usize && decode_wal_frame_payload(len, crc, &payload).is_ok() {
                return Ok(Some(position));
            }
        }
        chunk_start += WAL_READ_CHUNK_BYTES as u64;
    }
    Ok(None)
}

/// A hole in the WAL: corrupt when acknowledged frames were fsynced, else drop the WAL
/// segments `rest` that follow it.
fn drop_wal_after_hole(
    durability: Durability,
    path: &Path,
    rest: &[u64],
    storage: &dyn Storage,
    wal_dir: &Path,
    report: &mut RecoveryReport,
) -> Result<()> {
    if durability == Durability::Fsync {
        return Err(LogError::corrupt(path, 0, "gap in the WAL"));
    }
    for base_position in rest {
        let path = wal_dir.join(numbered_name(*base_position, WAL_EXTENSION));
        tracing::warn!(path = %path.display(), "dropping a WAL segment after a hole");
        storage
            .remove_file(&path)
            .map_err(LogError::io("remove WAL segment", &path))?;
        report.n_wal_bytes_truncated += 1;
    }
    Ok(())
}

/// Points the writer at the end of the replayed WAL (or a fresh segment at the checkpoint
/// position when the WAL ends before it).
fn finish_wal(
    writer: &mut Writer,
    last_valid: Option<(u64, u64)>,
    wal_position: u64,
) -> Result<()> {
    let storage = Arc::clone(&writer.shared.storage);
    let wal_dir = writer.wal.dir.clone();
    let (base_position, size_bytes) = match last_valid {
        Some((base, size)) if base + size >= wal_position => (base, size),
        _ => (wal_position, 0),
    };
    let path = wal_dir.join(numbered_name(base_position, WAL_EXTENSION));
    let direct = writer.shared.config.durability == Durability::Fsync;
    let (file, direct) = open_active(storage.as_ref(), &path, size_bytes, direct)
        .map_err(LogError::io("open WAL segment", &path))?;
    if last_valid.is_some_and(|(base, _)| base != base_position) {
        storage
            .sync_dir(&wal_dir)
            .map_err(LogError::io("fsync WAL dir", &wal_dir))?;
    }
    let mut bases: Vec<u64> = storage
        .list_dir(&wal_dir)
        .map_err(LogError::io("list WAL dir", &wal_dir))?
        .iter()
        .filter_map(|name| parse_numbered_name(name, WAL_EXTENSION))
        .filter(|base| *base <= base_position)
        .collect();
    bases.sort_unstable();
    writer.wal = WalState {
        dir: wal_dir,
        segment_bases: bases,
        file,
        base_position,
        size_bytes,
        first_frame_ms: None,
        direct,
    };
    Ok(())
}

/// Copies one WAL frame's records into the segments: records below a log's end are
/// already there (or trimmed), records of unknown logs belong to deleted logs.
fn apply_frame(
    writer: &mut Writer,
    records: &[(LogId, SegmentRecord<'_>)],
    path: &Path,
    position: u64,
    report: &mut RecoveryReport,
) -> Result<()> {
    let mut run: Vec<SegmentRecord<'_>> = Vec::new();
    let mut run_log_id = None;
    for (log_id, record) in records {
        let Some(log) = writer.logs.get_mut(log_id) else {
            report.n_records_skipped += 1;
            continue;
        };
        // Records of one log in one frame are consecutive offsets, but other logs' records
        // may sit between them; account by what the run will have written.
        let pending = if run_log_id == Some(*log_id) {
            run.len() as u64
        } else {
            0
        };
        let next_offset = log.next_offset + pending;
        if record.offset < next_offset {
            // Already in the segments, or trimmed: either way its timestamp still bounds
            // the next ones (and is the log's newest if everything was trimmed).
            let newest = log
                .last_timestamp_ms
                .map_or(record.timestamp_ms, |last| last.max(record.timestamp_ms));
            log.last_timestamp_ms = Some(newest);
            log.assign_timestamp_ms = Some(newest);
            report.n_records_skipped += 1;
            continue;
        }
        if record.offset > next_offset {
            return Err(LogError::corrupt(
                path,
                position,
                "WAL record leaves a gap in its log",
            ));
        }
        if run_log_id != Some(*log_id) {
            if let Some(previous) = run_log_id {
                writer.append_run(previous, &run)?;
            }
            run.clear();
            run_log_id = Some(*log_id);
        }
        run.push(*record);
        report.n_records_replayed += 1;
    }
    if let Some(previous) = run_log_id {
        writer.append_run(previous, &run)?;
    }
    Ok(())
}
