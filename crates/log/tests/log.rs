//! Behaviour of the public API on one process: appends, reads, lookups, trims, limits,
//! watches, deletes, poisoning, shutdown.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use common::*;
use millrace_log::{
    APPEND_RECORDS_MAX, AppendRecord, Bounds, Clock, INDEX_INTERVAL_BYTES, Log, LogError,
    ManualClock,
};

fn manual(start_ms: i64) -> Arc<ManualClock> {
    Arc::new(ManualClock::new(start_ms))
}

#[test]
fn append_assigns_consecutive_offsets_per_log_in_input_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual(1_000);
    let log = open(small_config(dir.path()), clock.clone());
    let runtime = runtime();
    log.create_log(1).expect("create 1");
    log.create_log(2).expect("create 2");
    let appended = append(
        &runtime,
        &log,
        &[(1, b"a"), (2, b"b"), (1, b"c"), (2, b"d")],
    )
    .expect("append");
    let offsets: Vec<u64> = appended.iter().map(|a| a.offset).collect();
    assert_eq!(offsets, vec![0, 0, 1, 1]);
    assert!(appended.iter().all(|a| a.timestamp_ms == 1_000));
    let records = read_all(&log, 1);
    assert_eq!(
        records,
        vec![(0, 1_000, b"a".to_vec()), (1, 1_000, b"c".to_vec())]
    );
    assert_eq!(
        log.bounds(2).expect("bounds"),
        Bounds {
            start_offset: 0,
            end_offset: 2,
            last_timestamp_ms: Some(1_000)
        }
    );
    assert_eq!(log.log_ids(), vec![1, 2]);
}

#[test]
fn timestamps_never_go_backwards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual(5_000);
    let log = open(small_config(dir.path()), clock.clone());
    let runtime = runtime();
    log.create_log(1).expect("create");
    append(&runtime, &log, &[(1, b"x")]).expect("append");
    clock.set(4_000);
    let appended = append(&runtime, &log, &[(1, b"y")]).expect("append");
    assert_eq!(appended[0].timestamp_ms, 5_000);
    clock.set(6_000);
    let appended = append(&runtime, &log, &[(1, b"z")]).expect("append");
    assert_eq!(appended[0].timestamp_ms, 6_000);
}

#[test]
fn read_respects_limits_but_returns_at_least_one_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(small_config(dir.path()), manual(0));
    let runtime = runtime();
    log.create_log(1).expect("create");
    let payloads: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 100]).collect();
    let records: Vec<(u64, &[u8])> = payloads.iter().map(|p| (1, p.as_slice())).collect();
    append(&runtime, &log, &records).expect("append");

    let result = log.read(1, 0, 3, usize::MAX).expect("read");
    assert_eq!(result.records.len(), 3);
    assert_eq!((result.next_offset, result.end_offset), (3, 10));

    let result = log.read(1, 3, 100, 250).expect("read");
    assert_eq!(
        result.records.len(),
        2,
        "250 bytes hold two 100-byte payloads"
    );
    assert_eq!(result.next_offset, 5);

    let result = log.read(1, 5, 100, 1).expect("read");
    assert_eq!(result.records.len(), 1, "always at least one record");
    assert_eq!(result.records[0].payload.as_ref(), &[5u8; 100][..]);

    let result = log.read(1, 10, 100, 1000).expect("read at end");
    assert!(result.records.is_empty());
    assert_eq!((result.next_offset, result.end_offset), (10, 10));

    let result = log.read(1, 99, 100, 1000).expect("read past end");
    assert!(result.records.is_empty());
    assert_eq!(result.next_offset, 99);
}

#[test]
fn reads_and_timestamp_lookups_across_many_segments_and_index_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual(0);
    let mut config = small_config(dir.path());
    config.segment_bytes_max = 8 * INDEX_INTERVAL_BYTES as u64;
    let log = open(config, clock.clone());
    let runtime = runtime();
    log.create_log(7).expect("create");
    // 2,000 records of 100..300 bytes: several segments, each with several index entries.
    let mut expected = Vec::new();
    for i in 0..2_000u64 {
        clock.set(i as i64 * 10);
        let payload = vec![(i % 251) as u8; 100 + (i as usize * 37) % 200];
        let appended = append(&runtime, &log, &[(7, &payload)]).expect("append");
        assert_eq!(appended[0].offset, i);
        expected.push((i, i as i64 * 10, payload));
    }
    let segment_files = std::fs::read_dir(dir.path().join("logs").join(format!("{:020}", 7)))
        .expect("log dir")
        .count();
    assert!(
        segment_files >= 10,
        "expected several segments, got {segment_files} files"
    );
    assert_eq!(read_all(&log, 7), expected);
    // Random access lands exactly.
    for offset in [0u64, 1, 41, 999, 1_000, 1_234, 1_998, 1_999] {
        let result = log.read(7, offset, 1, usize::MAX).expect("read");
        assert_eq!(result.records[0].offset, offset);
        assert_eq!(
            result.records[0].payload.as_ref(),
            expected[offset as usize].2
        );
    }
    // Timestamp lookups: exact hits, between records, before and after everything.
    assert_eq!(log.offset_at_timestamp(7, -5).expect("ts"), 0);
    assert_eq!(log.offset_at_timestamp(7, 0).expect("ts"), 0);
    assert_eq!(log.offset_at_timestamp(7, 10).expect("ts"), 1);
    assert_eq!(log.offset_at_timestamp(7, 12_345).expect("ts"), 1_235);
    assert_eq!(log.offset_at_timestamp(7, 19_990).expect("ts"), 1_999);
    assert_eq!(log.offset_at_timestamp(7, 19_991).expect("ts"), 2_000);
}

#[test]
fn segments_roll_by_age_and_trim_deletes_whole_old_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = manual(0);
    let mut config = small_config(dir.path());
    config.segment_age_ms_max = 1_000;
    let log = open(config, clock.clone());
    let runtime = runtime();
    log.create_log(3).expect("create");
    // Three "ages" of two records each: 0-1 at t=0, 2-3 at t=1000, 4-5 at t=2000.
    for age in 0..3i64 {
        clock.set(age * 1_000);
        append(&runtime, &log, &[(3, b"one"), (3, b"two")]).expect("append");
    }
    // Nothing older than t=0.
    assert_eq!(log.trim_before(3, 0).expect("trim"), 0);
    // Records at t=0 are older than 500: the first segment goes.
    assert_eq!(log.trim_before(3, 500).expect("trim"), 2);
    assert_eq!(log.bounds(3).expect("bounds").start_offset, 2);
    let result = log.read(3, 0, 100, usize::MAX).expect("read");
    assert_eq!(result.records[0].offset, 2, "reads start at the new start");
    assert_eq!(log.offset_at_timestamp(3, 0).expect("ts"), 2);
    // Everything older than 10,000: the active segment goes too, offsets are kept.
    assert_eq!(log.trim_before(3, 10_000).expect("trim"), 6);
    let bounds = log.bounds(3).expect("bounds");
    assert_eq!((bounds.start_offset, bounds.end_offset), (6, 6));
    assert!(log.read(3, 0, 10, 100).expect("read").records.is_empty());
    clock.set(20_000);
    let appended = append(&runtime, &log, &[(3, b"after")]).expect("append");
    assert_eq!(
        appended[0].offset, 6,
        "offsets are never reused after a trim"
    );
    assert_eq!(read_all(&log, 3), vec![(6, 20_000, b"after".to_vec())]);
}

#[test]
fn limits_unknown_logs_and_all_or_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(small_config(dir.path()), manual(0));
    let runtime = runtime();
    log.create_log(1).expect("create");
    assert!(matches!(
        append(&runtime, &log, &[(1, b"ok"), (2, b"no such log")]),
        Err(LogError::UnknownLog { log_id: 2 })
    ));
    let big = vec![0u8; 64 * 1024 + 1];
    assert!(matches!(
        append(&runtime, &log, &[(1, &big)]),
        Err(LogError::RecordTooLarge {
            size_bytes: 65_537,
            size_bytes_max: 65_536
        })
    ));
    let too_many: Vec<AppendRecord> = (0..=APPEND_RECORDS_MAX)
        .map(|_| AppendRecord {
            log_id: 1,
            payload: Bytes::new(),
        })
        .collect();
    assert!(matches!(
        runtime.block_on(log.append(too_many)),
        Err(LogError::TooManyRecords { .. })
    ));
    assert_eq!(
        log.bounds(1).expect("bounds").end_offset,
        0,
        "nothing was appended"
    );
    assert!(
        append(&runtime, &log, &[])
            .expect("empty append")
            .is_empty()
    );
    assert!(matches!(
        log.read(9, 0, 1, 1),
        Err(LogError::UnknownLog { log_id: 9 })
    ));
    assert!(matches!(
        log.bounds(9),
        Err(LogError::UnknownLog { log_id: 9 })
    ));
}

#[test]
fn create_is_idempotent_and_delete_removes_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(small_config(dir.path()), manual(0));
    let runtime = runtime();
    log.create_log(4).expect("create");
    append(&runtime, &log, &[(4, b"keep")]).expect("append");
    log.create_log(4).expect("create again");
    assert_eq!(
        log.bounds(4).expect("bounds").end_offset,
        1,
        "create kept the data"
    );
    let mut watch = log.watch(4).expect("watch");
    log.delete_log(4).expect("delete");
    log.delete_log(4).expect("delete again");
    assert!(log.log_ids().is_empty());
    assert!(matches!(
        append(&runtime, &log, &[(4, b"gone")]),
        Err(LogError::UnknownLog { log_id: 4 })
    ));
    assert!(
        runtime.block_on(watch.changed()).is_err(),
        "a deleted log's watch closes"
    );
    let log_dir = dir.path().join("logs").join(format!("{:020}", 4));
    assert!(!log_dir.exists());
    // Re-creating the id starts from scratch.
    log.create_log(4).expect("create anew");
    assert_eq!(log.bounds(4).expect("bounds").end_offset, 0);
}

#[test]
fn watch_sees_end_offset_after_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(small_config(dir.path()), manual(0));
    let runtime = runtime();
    log.create_log(1).expect("create");
    let mut watch = log.watch(1).expect("watch");
    assert_eq!(*watch.borrow(), 0);
    append(&runtime, &log, &[(1, b"a"), (1, b"b")]).expect("append");
    runtime.block_on(watch.changed()).expect("changed");
    assert_eq!(*watch.borrow_and_update(), 2);
}

#[test]
fn failed_fsync_poisons_every_later_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Arc::new(CountingStorage::default());
    let log = Log::open_with_storage(
        small_config(dir.path()),
        manual(0),
        Arc::new(CountingStorageHandle(Arc::clone(&storage))),
    )
    .expect("open");
    let runtime = runtime();
    log.create_log(1).expect("create");
    append(&runtime, &log, &[(1, b"durable")]).expect("append");
    storage.fail_syncs.store(true, Ordering::SeqCst);
    assert!(matches!(
        append(&runtime, &log, &[(1, b"lost")]),
        Err(LogError::Poisoned)
    ));
    storage.fail_syncs.store(false, Ordering::SeqCst);
    assert!(
        matches!(
            append(&runtime, &log, &[(1, b"after")]),
            Err(LogError::Poisoned)
        ),
        "a working fsync later must not un-poison the log"
    );
    assert!(matches!(log.create_log(2), Err(LogError::Poisoned)));
    // Reads still serve what was durable; the failed record is not visible.
    assert_eq!(read_all(&log, 1), vec![(0, 0, b"durable".to_vec())]);
    drop(log);
    // Reopening recovers; the unacknowledged record may or may not have survived, but the
    // acknowledged one did and the log takes writes again.
    let log = Log::open(small_config(dir.path()), manual(0)).expect("reopen");
    let records = read_all(&log, 1);
    assert_eq!(records[0], (0, 0, b"durable".to_vec()));
    append(&runtime, &log, &[(1, b"again")]).expect("append after reopen");
}

#[test]
fn shutdown_drains_and_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock: Arc<dyn Clock> = manual(0);
    let log = open(small_config(dir.path()), clock.clone());
    let runtime = runtime();
    log.create_log(1).expect("create");
    append(&runtime, &log, &[(1, b"a")]).expect("append");
    let other = log.clone();
    log.shutdown().expect("shutdown");
    assert!(matches!(
        append(&runtime, &other, &[(1, b"b")]),
        Err(LogError::Closed)
    ));
    assert!(matches!(other.read(1, 0, 1, 1), Err(LogError::Closed)));
    assert!(matches!(other.shutdown(), Err(LogError::Closed)));
    let log = open(small_config(dir.path()), clock);
    assert_eq!(read_all(&log, 1), vec![(0, 0, b"a".to_vec())]);
}

#[test]
fn control_calls_work_inside_a_tokio_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(small_config(dir.path()), manual(0));
    let runtime = runtime();
    runtime.block_on(async {
        // Spend the task's coop budget first, as a busy request handler would.
        log.create_log(1).expect("create in async context");
        for _ in 0..300 {
            log.append(vec![AppendRecord {
                log_id: 1,
                payload: Bytes::from_static(b"p"),
            }])
            .await
            .expect("append");
        }
        log.create_log(2).expect("create after many awaits");
        log.delete_log(2).expect("delete in async context");
    });
    assert_eq!(log.bounds(1).expect("bounds").end_offset, 300);
}
