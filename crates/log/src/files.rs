//! A bounded cache of open segment and index files, least recently used out first.
//!
//! Ten thousand logs must not need twenty thousand file descriptors: every segment or index
//! handle the log uses comes from here, and at most `open_files_max` stay cached. A handle
//! is an `Arc`, so one evicted while a reader still uses it stays open until that reader
//! drops it. Eviction does not fsync: the writer remembers which files it dirtied and the
//! checkpoint reopens and syncs them (Linux reports an unseen writeback error to a new
//! descriptor, since 4.16).
//!
//! Locking rule (keeps a removed file from coming back into the cache): entries of a log
//! are inserted by readers only while they hold that log's view lock, and removed by the
//! writer only while it holds the same lock.
//!
//! This module does not know what the files contain, nor create directories.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::LogId;
use crate::format::{INDEX_EXTENSION, SEGMENT_EXTENSION, numbered_name};
use crate::storage::{Storage, StorageFile};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum FileKind {
    Segment,
    Index,
}

/// Names one segment or index file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FileKey {
    pub log_id: LogId,
    pub base_offset: u64,
    pub kind: FileKind,
}

impl FileKey {
    pub fn segment(log_id: LogId, base_offset: u64) -> FileKey {
        FileKey {
            log_id,
            base_offset,
            kind: FileKind::Segment,
        }
    }

    pub fn index(log_id: LogId, base_offset: u64) -> FileKey {
        FileKey {
            log_id,
            base_offset,
            kind: FileKind::Index,
        }
    }
}

/// The directory of log `log_id` under `logs_dir`.
pub(crate) fn log_dir(logs_dir: &Path, log_id: LogId) -> PathBuf {
    logs_dir.join(format!("{log_id:020}"))
}

pub(crate) fn file_path(logs_dir: &Path, key: FileKey) -> PathBuf {
    let extension = match key.kind {
        FileKind::Segment => SEGMENT_EXTENSION,
        FileKind::Index => INDEX_EXTENSION,
    };
    log_dir(logs_dir, key.log_id).join(numbered_name(key.base_offset, extension))
}

pub(crate) struct FileCache {
    storage: Arc<dyn Storage>,
    logs_dir: PathBuf,
    capacity: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    entries: HashMap<FileKey, CacheEntry>,
    /// Use tick -> key; the first entry is the least recently used.
    by_use: BTreeMap<u64, FileKey>,
    use_tick: u64,
}

struct CacheEntry {
    file: Arc<dyn StorageFile>,
    use_tick: u64,
}

impl FileCache {
    pub fn new(storage: Arc<dyn Storage>, logs_dir: PathBuf, capacity: usize) -> FileCache {
        FileCache {
            storage,
            logs_dir,
            capacity: capacity.max(1),
            inner: Mutex::new(CacheInner::default()),
        }
    }

    pub fn path(&self, key: FileKey) -> PathBuf {
        file_path(&self.logs_dir, key)
    }

    /// The open file for `key`, opening (and, if `create`, creating) it on a miss.
    pub fn get(&self, key: FileKey, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        {
            let mut inner = self.inner.lock();
            if let Some(file) = inner.touch(key) {
                return Ok(file);
            }
        }
        // Open outside the cache lock so one slow open does not stall every reader.
        let file = self.storage.open(&self.path(key), create)?;
        let mut inner = self.inner.lock();
        if let Some(existing) = inner.touch(key) {
            return Ok(existing);
        }
        inner.use_tick += 1;
        let use_tick = inner.use_tick;
        inner.by_use.insert(use_tick, key);
        inner.entries.insert(
            key,
            CacheEntry {
                file: Arc::clone(&file),
                use_tick,
            },
        );
        while inner.entries.len() > self.capacity {
            let Some((_, evicted)) = inner.by_use.pop_first() else {
                break;
            };
            inner.entries.remove(&evicted);
        }
        Ok(file)
    }

    /// Drops the cached handle of `key` (the file is about to be removed).
    pub fn forget(&self, key: FileKey) {
        let mut inner = self.inner.lock();
        if let Some(entry) = inner.entries.remove(&key) {
            inner.by_use.remove(&entry.use_tick);
        }
    }

    /// Drops every cached handle of log `log_id`.
    pub fn forget_log(&self, log_id: LogId) {
        let mut inner = self.inner.lock();
        let keys: Vec<FileKey> = inner
            .entries
            .keys()
            .filter(|key| key.log_id == log_id)
            .copied()
            .collect();
        for key in keys {
            if let Some(entry) = inner.entries.remove(&key) {
                inner.by_use.remove(&entry.use_tick);
            }
        }
    }

    #[cfg(test)]
    pub fn n_cached(&self) -> usize {
        self.inner.lock().entries.len()
    }
}

impl CacheInner {
    fn touch(&mut self, key: FileKey) -> Option<Arc<dyn StorageFile>> {
        self.use_tick += 1;
        let use_tick = self.use_tick;
        let entry = self.entries.get_mut(&key)?;
        self.by_use.remove(&entry.use_tick);
        entry.use_tick = use_tick;
        self.by_use.insert(use_tick, key);
        Some(Arc::clone(&entry.file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::OsStorage;

    #[test]
    fn cache_is_bounded_and_evicts_least_recently_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs_dir = dir.path().to_path_buf();
        std::fs::create_dir_all(log_dir(&logs_dir, 1)).expect("mkdir");
        let cache = FileCache::new(Arc::new(OsStorage), logs_dir, 2);
        let a = cache.get(FileKey::segment(1, 0), true).expect("open a");
        let _b = cache.get(FileKey::segment(1, 10), true).expect("open b");
        // Touch a, so b is now the least recently used.
        let a_again = cache.get(FileKey::segment(1, 0), false).expect("hit a");
        assert!(Arc::ptr_eq(&a, &a_again));
        let _c = cache.get(FileKey::segment(1, 20), true).expect("open c");
        assert_eq!(cache.n_cached(), 2);
        let a_third = cache
            .get(FileKey::segment(1, 0), false)
            .expect("a still cached");
        assert!(Arc::ptr_eq(&a, &a_third), "a was evicted instead of b");
        cache.forget_log(1);
        assert_eq!(cache.n_cached(), 0);
        assert!(cache.get(FileKey::index(1, 99), false).is_err());
    }
}
