//! The state shared by the writer thread and the readers: which logs exist, and for each
//! log the reader-visible view (segments, start and end offsets).
//!
//! The writer is the only thread that changes a view; readers copy what they need under the
//! view's lock and do their IO after releasing it. No lock here is ever held across an
//! fsync. This module does no IO.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::files::FileCache;
use crate::storage::{Storage, StorageLock};
use crate::{LogConfig, LogId};

pub(crate) struct Shared {
    pub config: LogConfig,
    pub storage: Arc<dyn Storage>,
    pub files: FileCache,
    pub logs: RwLock<HashMap<LogId, Arc<LogState>>>,
    /// Set once a write or fsync failed; never cleared (reopen to recover).
    pub poisoned: AtomicBool,
    /// Set by `shutdown`.
    pub closed: AtomicBool,
    /// The directory lock, held until `shutdown` finishes or the writer and every handle
    /// are gone.
    pub lock: Mutex<Option<StorageLock>>,
}

impl Shared {
    pub fn log(&self, log_id: LogId) -> Option<Arc<LogState>> {
        self.logs.read().get(&log_id).cloned()
    }
}

pub(crate) struct LogState {
    pub log_id: LogId,
    pub view: Mutex<LogView>,
    /// Publishes the end offset after every group commit that touched this log.
    pub end_tx: watch::Sender<u64>,
}

impl LogState {
    pub fn new(log_id: LogId, view: LogView) -> LogState {
        let (end_tx, _) = watch::channel(view.end_offset);
        LogState {
            log_id,
            view: Mutex::new(view),
            end_tx,
        }
    }
}

/// What readers may see of one log. Everything below `end_offset` is durable.
#[derive(Clone, Debug)]
pub(crate) struct LogView {
    /// Ordered by base offset, contiguous; the last one is the active segment. Never empty
    /// for a live log.
    pub segments: VecDeque<SegmentMeta>,
    pub end_offset: u64,
    pub last_timestamp_ms: Option<i64>,
    /// Set (under the lock) when the log is deleted, for readers that still hold it.
    pub deleted: bool,
    /// Where the previous read stopped, so a sequential reader skips the index search.
    pub read_hint: Option<ReadHint>,
}

impl LogView {
    pub fn start_offset(&self) -> u64 {
        self.segments
            .front()
            .map_or(self.end_offset, |segment| segment.base_offset)
    }

    /// Replaces the segment with the same base offset as `meta` if it is the last one,
    /// otherwise appends `meta`.
    pub fn put_segment(&mut self, meta: SegmentMeta) {
        match self.segments.back_mut() {
            Some(last) if last.base_offset == meta.base_offset => *last = meta,
            _ => self.segments.push_back(meta),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReadHint {
    pub base_offset: u64,
    pub offset: u64,
    pub position: u64,
}

/// One segment as readers and the writer see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentMeta {
    pub base_offset: u64,
    /// One past the last record's offset (`base_offset` when empty).
    pub end_offset: u64,
    pub size_bytes: u64,
    /// Record index entries (the seal entry is not counted).
    pub index_entries_n: u64,
    pub first_timestamp_ms: Option<i64>,
    pub last_timestamp_ms: Option<i64>,
    /// Position of the last record index entry (where the next one is due from).
    pub last_index_position: u64,
}

impl SegmentMeta {
    pub fn empty(base_offset: u64) -> SegmentMeta {
        SegmentMeta {
            base_offset,
            end_offset: base_offset,
            size_bytes: 0,
            index_entries_n: 0,
            first_timestamp_ms: None,
            last_timestamp_ms: None,
            last_index_position: 0,
        }
    }
}
