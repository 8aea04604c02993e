//! Helpers shared by the integration tests: small configs, a runtime to drive `append`
//! from synchronous tests, and a storage wrapper that counts and injects fsync failures.
#![allow(dead_code)]

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use millrace_log::{
    AppendRecord, Appended, Clock, Durability, Log, LogConfig, LogError, LogId, OsStorage, Storage,
    StorageFile, StorageLock,
};

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A config with small limits so rolls, index entries and checkpoints happen in tests.
pub fn small_config(dir: &Path) -> LogConfig {
    let mut config = LogConfig::new(dir);
    config.segment_bytes_max = 16 * 1024;
    config.wal_segment_bytes_max = 64 * 1024;
    config.open_files_max = 8;
    config.record_bytes_max = 64 * 1024;
    config
}

pub fn buffered(mut config: LogConfig) -> LogConfig {
    config.durability = Durability::OsBuffered;
    config
}

pub fn open(config: LogConfig, clock: Arc<dyn Clock>) -> Log {
    Log::open(config, clock).expect("open log")
}

pub fn append(
    runtime: &tokio::runtime::Runtime,
    log: &Log,
    records: &[(LogId, &[u8])],
) -> Result<Vec<Appended>, LogError> {
    let records = records
        .iter()
        .map(|(log_id, payload)| AppendRecord {
            log_id: *log_id,
            payload: Bytes::copy_from_slice(payload),
        })
        .collect();
    runtime.block_on(log.append(records))
}

/// Every record of `log_id`, read in small pieces to exercise `next_offset`.
pub fn read_all(log: &Log, log_id: LogId) -> Vec<(u64, i64, Vec<u8>)> {
    let bounds = log.bounds(log_id).expect("bounds");
    let mut out = Vec::new();
    let mut next = bounds.start_offset;
    while next < bounds.end_offset {
        let result = log.read(log_id, next, 7, 1 << 20).expect("read");
        assert!(
            !result.records.is_empty(),
            "no record at {next} below the end"
        );
        for record in &result.records {
            assert_eq!(record.offset, next, "records are consecutive");
            out.push((record.offset, record.timestamp_ms, record.payload.to_vec()));
            next += 1;
        }
        assert_eq!(result.next_offset, next);
    }
    out
}

/// Wraps [`OsStorage`]: counts fsyncs of WAL files and can make the next ones fail.
#[derive(Default)]
pub struct CountingStorage {
    pub wal_syncs: AtomicU64,
    pub all_syncs: AtomicU64,
    pub fail_syncs: AtomicBool,
    /// Extra latency of every WAL fsync, modelling a slow disk.
    pub wal_sync_latency_ms: AtomicU64,
}

struct CountingFile {
    inner: Arc<dyn StorageFile>,
    is_wal: bool,
    storage: Arc<CountingStorage>,
}

pub struct CountingStorageHandle(pub Arc<CountingStorage>);

impl Storage for CountingStorageHandle {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let inner = OsStorage.open(path, create)?;
        let is_wal = path.extension().is_some_and(|ext| ext == "wal");
        Ok(Arc::new(CountingFile {
            inner,
            is_wal,
            storage: Arc::clone(&self.0),
        }))
    }
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        OsStorage.create_dir(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        OsStorage.list_dir(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        OsStorage.remove_file(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        OsStorage.remove_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        OsStorage.rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        OsStorage.sync_dir(path)
    }
    fn lock(&self, path: &Path) -> io::Result<StorageLock> {
        OsStorage.lock(path)
    }
}

impl StorageFile for CountingFile {
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        self.inner.read_at(buf, position)
    }
    fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, position)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.storage.all_syncs.fetch_add(1, Ordering::SeqCst);
        if self.is_wal {
            self.storage.wal_syncs.fetch_add(1, Ordering::SeqCst);
            let latency_ms = self.storage.wal_sync_latency_ms.load(Ordering::SeqCst);
            if latency_ms > 0 {
                std::thread::sleep(std::time::Duration::from_millis(latency_ms));
            }
        }
        if self.storage.fail_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected fsync failure"));
        }
        self.inner.sync_data()
    }
    fn size_bytes(&self) -> io::Result<u64> {
        self.inner.size_bytes()
    }
    fn set_size_bytes(&self, size_bytes: u64) -> io::Result<()> {
        self.inner.set_size_bytes(size_bytes)
    }
}
