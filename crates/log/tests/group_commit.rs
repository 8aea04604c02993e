//! Group commit: many concurrent appenders share fsyncs.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use common::*;
use millrace_log::{AppendRecord, Log, SystemClock};

#[test]
fn concurrent_appends_share_wal_fsyncs() {
    const N_TASKS: u64 = 64;
    const N_APPENDS_PER_TASK: u64 = 20;
    const N_LOGS: u64 = 16;
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Arc::new(CountingStorage::default());
    // A disk whose fsync takes 2 ms (a fast NVMe takes less, a cloud volume more): while
    // one group is being synced, the other tasks' appends queue up behind it.
    storage.wal_sync_latency_ms.store(2, Ordering::SeqCst);
    let mut config = small_config(dir.path());
    config.wal_segment_bytes_max = 1 << 30;
    let log = Log::open_with_storage(
        config,
        Arc::new(SystemClock),
        Arc::new(CountingStorageHandle(Arc::clone(&storage))),
    )
    .expect("open");
    for log_id in 0..N_LOGS {
        log.create_log(log_id).expect("create");
    }
    let syncs_before = storage.wal_syncs.load(Ordering::SeqCst);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let acks: Vec<(u64, u64)> = runtime.block_on(async {
        let mut tasks = Vec::new();
        for task in 0..N_TASKS {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut acks = Vec::new();
                for i in 0..N_APPENDS_PER_TASK {
                    // Each append spans two logs, like a PutRecords batch over two shards.
                    let log_a = (task + i) % N_LOGS;
                    let log_b = (task * 7 + i) % N_LOGS;
                    let appended = log
                        .append(vec![
                            AppendRecord {
                                log_id: log_a,
                                payload: Bytes::from(format!("{task}-{i}-a")),
                            },
                            AppendRecord {
                                log_id: log_b,
                                payload: Bytes::from(format!("{task}-{i}-b")),
                            },
                        ])
                        .await
                        .expect("append");
                    acks.push((log_a, appended[0].offset));
                    acks.push((log_b, appended[1].offset));
                }
                acks
            }));
        }
        let mut acks = Vec::new();
        for task in tasks {
            acks.extend(task.await.expect("task"));
        }
        acks
    });
    let n_appends = N_TASKS * N_APPENDS_PER_TASK;
    let n_syncs = storage.wal_syncs.load(Ordering::SeqCst) - syncs_before;
    assert!(n_syncs >= 1);
    assert!(
        n_syncs * 8 <= n_appends,
        "{n_appends} appends took {n_syncs} WAL fsyncs: group commit is not grouping"
    );
    // Every acknowledged offset is distinct and each log is dense.
    let mut per_log: HashMap<u64, Vec<u64>> = HashMap::new();
    for (log_id, offset) in acks {
        per_log.entry(log_id).or_default().push(offset);
    }
    for (log_id, mut offsets) in per_log {
        offsets.sort_unstable();
        let expected: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(offsets, expected, "log {log_id}");
        assert_eq!(
            log.bounds(log_id).expect("bounds").end_offset,
            expected.len() as u64
        );
    }
}
