//! What the fuzz targets share: the input format of `log_recovery` (a store directory as a
//! list of files), the runner that opens a log over such a directory, and the secret the
//! iterator targets use. The targets themselves stay thin; everything they check is a
//! property of the library.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use millrace_log::sim::SimDisk;
use millrace_log::{AppendRecord, Log, LogConfig, ManualClock};

/// The installation secret the iterator-token target signs and checks with.
pub const ITERATOR_SECRET: &[u8] = b"fuzzing-iterator-secret-32-bytes";

/// Where the store lives on the simulated disk.
pub const STORE_DIR: &str = "/data";

/// Files of one `log_recovery` input, at most this many.
const FILES_MAX: usize = 64;
/// Reads of one log after a successful open, at most this many.
const READS_MAX: usize = 4_096;

/// Encodes files (paths relative to the store) as a `log_recovery` input:
/// `n x ([path_len u8][path][data_len u32 le][data])`.
pub fn encode_store(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, data) in files {
        let path = path.as_bytes();
        let path_len = u8::try_from(path.len()).unwrap_or(u8::MAX);
        out.push(path_len);
        out.extend_from_slice(path.get(..usize::from(path_len)).unwrap_or(path));
        let data_len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&data_len.to_le_bytes());
        out.extend_from_slice(data);
    }
    out
}

/// Decodes a `log_recovery` input; a truncated last entry gets what is left.
pub fn decode_store(mut input: &[u8]) -> Vec<(PathBuf, &[u8])> {
    let mut files = Vec::new();
    while files.len() < FILES_MAX {
        let Some((&path_len, rest)) = input.split_first() else {
            break;
        };
        let Some((path, rest)) = rest.split_at_checked(usize::from(path_len)) else {
            break;
        };
        let Some((len_bytes, rest)) = rest.split_first_chunk::<4>() else {
            break;
        };
        let data_len = usize::try_from(u32::from_le_bytes(*len_bytes)).unwrap_or(usize::MAX);
        let (data, rest) = rest.split_at(data_len.min(rest.len()));
        input = rest;
        let path = PathBuf::from(String::from_utf8_lossy(path).into_owned());
        // Only plain relative paths inside the store.
        if path.as_os_str().is_empty()
            || !path
                .components()
                .all(|component| matches!(component, Component::Normal(_)))
        {
            continue;
        }
        files.push((path, data));
    }
    files
}

fn config() -> LogConfig {
    let mut config = LogConfig::new(STORE_DIR);
    config.segment_bytes_max = 8 * 1024;
    config.wal_segment_bytes_max = 32 * 1024;
    config.record_bytes_max = 64 * 1024;
    config.maintenance_interval_ms = None;
    config.open_files_max = 8;
    config
}

/// Opens a log over the directory `input` describes: it must answer `Ok` or `Err`, never
/// panic; what it opens must be readable without panicking, take a write, and open again.
pub fn run_log_recovery(input: &[u8]) {
    let disk = SimDisk::new(0);
    for (path, data) in decode_store(input) {
        let _ = disk.put_durable_file(&Path::new(STORE_DIR).join(path), data);
    }
    let clock = Arc::new(ManualClock::new(1_000_000));
    let Ok(log) = Log::open_with_storage(config(), clock.clone(), disk.storage()) else {
        return;
    };
    let log_ids = log.log_ids();
    for &log_id in &log_ids {
        let Ok(bounds) = log.bounds(log_id) else {
            continue;
        };
        assert!(bounds.start_offset <= bounds.end_offset, "start after end");
        let mut next = bounds.start_offset;
        for _ in 0..READS_MAX {
            if next >= bounds.end_offset {
                break;
            }
            match log.read(log_id, next, 64, 1 << 20) {
                Ok(result) => {
                    assert!(result.next_offset > next, "a read below the end made no progress");
                    for (idx, record) in result.records.iter().enumerate() {
                        assert_eq!(record.offset, next + idx as u64, "records out of order");
                    }
                    next = result.next_offset;
                }
                // Damage is reported, not served; skip past it.
                Err(_) => next += 1,
            }
        }
        let _ = log.offset_at_timestamp(log_id, 0);
        let _ = log.offset_at_timestamp(log_id, i64::MAX);
    }
    if let Some(&log_id) = log_ids.first() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        // May fail (a damaged store poisons nothing, but a write can meet damage); must
        // not panic.
        let _ = runtime.block_on(log.append(vec![AppendRecord {
            log_id,
            payload: Bytes::from_static(b"after recovery"),
        }]));
    }
    drop(log);
    // A directory the log opened once, it opens again (its recovery left it consistent).
    let reopened = Log::open_with_storage(config(), clock, disk.storage());
    assert!(
        reopened.is_ok(),
        "opened once, then refused: {:?}",
        reopened.err()
    );
}
