//! Recovery: reopen after a clean shutdown and after abandonment, torn WAL and segment
//! tails, bit flips, deletes and trims across a reopen.

mod common;

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use millrace_log::{Clock, LogConfig, LogError, LogId, ManualClock};

fn log_dir(root: &Path, log_id: LogId) -> PathBuf {
    root.join("logs").join(format!("{log_id:020}"))
}

fn files_with_extension(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == extension))
        .collect();
    paths.sort();
    paths
}

fn file_size(path: &Path) -> u64 {
    fs::metadata(path).expect("metadata").len()
}

fn truncate(path: &Path, size: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for truncate")
        .set_len(size)
        .expect("truncate");
}

fn flip_byte(path: &Path, position: u64) {
    let mut bytes = fs::read(path).expect("read");
    bytes[position as usize] ^= 0x40;
    fs::write(path, bytes).expect("write");
}

/// Appends `n` records of varied sizes to each of `log_ids`, one append call per round
/// spanning every log, advancing the clock; returns what each log should hold.
fn fill(
    runtime: &tokio::runtime::Runtime,
    log: &millrace_log::Log,
    clock: &ManualClock,
    log_ids: &[LogId],
    rounds: usize,
) {
    for round in 0..rounds {
        clock.advance(3);
        let payloads: Vec<Vec<u8>> = log_ids
            .iter()
            .map(|log_id| vec![(round as u8).wrapping_add(*log_id as u8); 50 + (round * 13) % 400])
            .collect();
        let records: Vec<(LogId, &[u8])> = log_ids
            .iter()
            .zip(&payloads)
            .map(|(log_id, payload)| (*log_id, payload.as_slice()))
            .collect();
        append(runtime, log, &records).expect("append");
    }
}

type Snapshot = Vec<(LogId, millrace_log::Bounds, Vec<(u64, i64, Vec<u8>)>)>;

fn snapshot(log: &millrace_log::Log) -> Snapshot {
    log.log_ids()
        .into_iter()
        .map(|log_id| {
            (
                log_id,
                log.bounds(log_id).expect("bounds"),
                read_all(log, log_id),
            )
        })
        .collect()
}

/// A config that never checkpoints on its own, so everything after open is WAL-only.
fn no_checkpoint_config(dir: &Path) -> LogConfig {
    let mut config = small_config(dir);
    config.wal_segment_bytes_max = 1 << 40;
    config
}

#[test]
fn clean_shutdown_and_reopen_keeps_offsets_timestamps_and_payloads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(1_000));
    let runtime = runtime();
    let log = open(small_config(dir.path()), clock.clone());
    for log_id in [1, 2, 3] {
        log.create_log(log_id).expect("create");
    }
    fill(&runtime, &log, &clock, &[1, 2, 3], 300);
    let before = snapshot(&log);
    assert_eq!(before.len(), 3);
    assert!(before.iter().all(|(_, bounds, _)| bounds.end_offset == 300));
    log.shutdown().expect("shutdown");
    // Small WAL segments: several checkpoints happened and old WAL segments were removed.
    assert_eq!(
        files_with_extension(&dir.path().join("wal"), "wal").len(),
        1
    );

    let log = open(small_config(dir.path()), clock.clone());
    assert_eq!(snapshot(&log), before);
    let appended = append(&runtime, &log, &[(2, b"next")]).expect("append");
    assert_eq!(appended[0].offset, 300);
    assert!(appended[0].timestamp_ms >= before[1].1.last_timestamp_ms.expect("ts"));
}

#[test]
fn abandoned_log_is_recovered_from_the_wal_even_with_damaged_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(0));
    let runtime = runtime();
    let config = no_checkpoint_config(dir.path());
    let log = open(config.clone(), clock.clone());
    log.create_log(1).expect("create");
    log.create_log(2).expect("create");
    fill(&runtime, &log, &clock, &[1, 2], 200);
    let before = snapshot(&log);
    // Simulate a crash: no shutdown, no checkpoint, the writer thread is left behind.
    drop(log); // as a crash: no checkpoint

    // Segment bytes written after the last checkpoint may not have reached the disk: tear
    // log 1's newest segment in the middle of a record and remove one of log 2's.
    let segments_1 = files_with_extension(&log_dir(dir.path(), 1), "seg");
    let newest = segments_1.last().expect("a segment");
    truncate(newest, file_size(newest) / 2 + 3);
    let segments_2 = files_with_extension(&log_dir(dir.path(), 2), "seg");
    assert!(segments_2.len() >= 3, "expected rolled segments");
    fs::remove_file(&segments_2[1]).expect("remove segment");

    let log = open(config.clone(), clock.clone());
    assert_eq!(snapshot(&log), before);
    drop(log);
    // And the repaired state is itself durable and stable.
    let log = open(config, clock);
    assert_eq!(snapshot(&log), before);
}

/// Where the WAL segment's frames end: with direct IO the file runs on in zeros to the
/// end of its last 4 KiB block. (Frames are `[len u32][crc u32][len bytes]`.)
fn wal_end(path: &Path) -> u64 {
    let bytes = fs::read(path).expect("read WAL");
    let mut position = 0usize;
    while let Some(len) = bytes
        .get(position..position + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    {
        if len == 0 || position + 8 + len > bytes.len() {
            break;
        }
        position += 8 + len;
    }
    position as u64
}

#[test]
fn torn_wal_tail_is_truncated_and_acknowledged_records_survive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(0));
    let runtime = runtime();
    let config = no_checkpoint_config(dir.path());
    let log = open(config.clone(), clock.clone());
    log.create_log(1).expect("create");
    fill(&runtime, &log, &clock, &[1], 50);
    let acknowledged = snapshot(&log);
    let wal = files_with_extension(&dir.path().join("wal"), "wal")
        .pop()
        .expect("a WAL segment");
    let size_acknowledged = wal_end(&wal);
    // One more append whose frame we then tear, as a crash during its write would.
    append(&runtime, &log, &[(1, &[9u8; 300])]).expect("append");
    let size_after = wal_end(&wal);
    assert!(size_after > size_acknowledged);
    drop(log); // as a crash: no checkpoint
    truncate(&wal, (size_acknowledged + size_after) / 2);

    let log = open(config.clone(), clock.clone());
    assert_eq!(snapshot(&log), acknowledged);
    // Recovery replayed the WAL into the segments, checkpointed, and started a fresh WAL
    // segment: the torn one is gone with its tail.
    let wals = files_with_extension(&dir.path().join("wal"), "wal");
    assert_eq!(wals.len(), 1, "one WAL segment after recovery: {wals:?}");
    assert_ne!(wals[0], wal, "recovery starts a new WAL segment");
    assert_eq!(file_size(&wals[0]), 0);
    let appended = append(&runtime, &log, &[(1, b"fresh")]).expect("append");
    assert_eq!(appended[0].offset, 50);
    drop(log); // as a crash: no checkpoint

    // Garbage after the last frame (a zero-filled tail) is dropped the same way.
    let wal = files_with_extension(&dir.path().join("wal"), "wal")
        .pop()
        .expect("a WAL segment");
    let size_valid = file_size(&wal);
    assert!(size_valid > 0, "the fresh record is in the WAL");
    let mut file = OpenOptions::new()
        .append(true)
        .open(&wal)
        .expect("open wal");
    std::io::Write::write_all(&mut file, &[0u8; 100]).expect("append zeros");
    drop(file);
    let log = open(config, clock);
    assert_eq!(log.bounds(1).expect("bounds").end_offset, 51);
    assert_eq!(
        read_all(&log, 1).last().map(|r| r.2.clone()),
        Some(b"fresh".to_vec())
    );
}

#[test]
fn bit_flip_in_a_segment_is_detected_and_never_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(0));
    let runtime = runtime();
    let log = open(small_config(dir.path()), clock.clone());
    log.create_log(1).expect("create");
    fill(&runtime, &log, &clock, &[1], 200);
    log.shutdown().expect("shutdown");

    let segments = files_with_extension(&log_dir(dir.path(), 1), "seg");
    let first = &segments[0];
    // Flip a payload byte of the second record (header 24 bytes; records >= 50 bytes).
    let first_record_len = u32::from_le_bytes(
        fs::read(first).expect("read")[0..4]
            .try_into()
            .expect("4 bytes"),
    ) as u64;
    let second_record = 24 + first_record_len;
    flip_byte(first, second_record + 24 + 10);

    let log = open(small_config(dir.path()), clock);
    let first_ok = log.read(1, 0, 1, usize::MAX).expect("record 0 is intact");
    assert_eq!(first_ok.records[0].offset, 0);
    assert!(matches!(
        log.read(1, 1, 1, usize::MAX),
        Err(LogError::Corrupt { .. })
    ));
    assert!(
        matches!(
            log.read(1, 0, 10, usize::MAX),
            Err(LogError::Corrupt { .. })
        ),
        "a batch that includes the bad record fails rather than stopping short silently"
    );
    // Records in other segments are unaffected.
    let later = log.read(1, 199, 1, usize::MAX).expect("last record");
    assert_eq!(later.records[0].offset, 199);
}

#[test]
fn bit_flip_in_an_index_is_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(0));
    let runtime = runtime();
    let mut config = small_config(dir.path());
    config.segment_bytes_max = 64 * 1024;
    let log = open(config.clone(), clock.clone());
    log.create_log(1).expect("create");
    fill(&runtime, &log, &clock, &[1], 200);
    log.shutdown().expect("shutdown");
    let index = files_with_extension(&log_dir(dir.path(), 1), "idx")
        .into_iter()
        .next()
        .expect("an index");
    assert!(file_size(&index) >= 3 * 32, "several index entries");
    flip_byte(&index, 32 + 9); // second entry's position field
    let log = open(config, clock);
    let bounds = log.bounds(1).expect("bounds");
    let results: Vec<Result<_, _>> = (bounds.start_offset..bounds.end_offset)
        .map(|offset| log.read(1, offset, 1, usize::MAX))
        .collect();
    assert!(
        results
            .iter()
            .any(|r| matches!(r, Err(LogError::Corrupt { .. }))),
        "some lookup must hit the damaged entry"
    );
    for result in results.into_iter().flatten() {
        // Whatever is served is right.
        let record = &result.records[0];
        assert!(record.payload.len() >= 50);
    }
}

#[test]
fn deleted_logs_stay_deleted_after_replay_and_a_recreated_id_starts_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(0));
    let runtime = runtime();
    let config = no_checkpoint_config(dir.path());
    let log = open(config.clone(), clock.clone());
    log.create_log(1).expect("create");
    log.create_log(2).expect("create");
    fill(&runtime, &log, &clock, &[1, 2], 20);
    log.delete_log(1).expect("delete");
    fill(&runtime, &log, &clock, &[2], 5);
    log.create_log(1).expect("recreate");
    append(&runtime, &log, &[(1, b"new life")]).expect("append");
    let before = snapshot(&log);
    drop(log); // as a crash: no checkpoint

    let log = open(config.clone(), clock.clone());
    assert_eq!(log.log_ids(), vec![1, 2]);
    assert_eq!(snapshot(&log), before);
    assert_eq!(
        read_all(&log, 1),
        vec![(0, before[0].2[0].1, b"new life".to_vec())]
    );
    log.delete_log(1).expect("delete");
    drop(log); // as a crash: no checkpoint

    // A delete that crashed after its rename: the directory is cleaned up at open.
    let log = open(config.clone(), clock.clone());
    assert_eq!(log.log_ids(), vec![2]);
    log.shutdown().expect("shutdown");
    let renamed = dir.path().join("logs").join(format!("{:020}.deleted", 2));
    fs::rename(log_dir(dir.path(), 2), &renamed).expect("rename");
    let log = open(config, clock);
    assert!(log.log_ids().is_empty());
    assert!(!renamed.exists());
}

#[test]
fn trims_hold_across_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(0));
    let runtime = runtime();
    let mut config = no_checkpoint_config(dir.path());
    config.segment_age_ms_max = 100;
    let log = open(config.clone(), clock.clone());
    log.create_log(1).expect("create");
    log.create_log(2).expect("create");
    fill(&runtime, &log, &clock, &[1, 2], 100); // t = 3..300
    let start_1 = log.trim_before(1, 150).expect("trim");
    assert!(start_1 > 0 && start_1 < 100);
    let start_2 = log.trim_before(2, 1_000).expect("trim everything");
    assert_eq!(start_2, 100);
    let before = snapshot(&log);
    drop(log); // as a crash: no checkpoint
    let log = open(config.clone(), clock.clone());
    assert_eq!(snapshot(&log), before);
    let appended = append(&runtime, &log, &[(2, b"x")]).expect("append");
    assert_eq!(
        appended[0].offset, 100,
        "offsets of a fully trimmed log are kept"
    );
    log.shutdown().expect("shutdown");
    let log = open(config, clock);
    assert_eq!(log.bounds(2).expect("bounds").start_offset, 100);
    assert_eq!(log.bounds(2).expect("bounds").end_offset, 101);
}

#[test]
fn damage_in_the_middle_of_the_wal_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(0));
    let runtime = runtime();
    let config = no_checkpoint_config(dir.path());
    let log = open(config.clone(), clock.clone());
    log.create_log(1).expect("create");
    for _ in 0..20 {
        append(&runtime, &log, &[(1, &[7u8; 200])]).expect("append");
    }
    drop(log); // as a crash: no checkpoint
    // Simulate a second WAL segment after the first, as a rotation would leave.
    let wal = files_with_extension(&dir.path().join("wal"), "wal")
        .pop()
        .expect("wal");
    let base: u64 = wal
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("numbered");
    let next = wal.with_file_name(format!("{:020}.wal", base + file_size(&wal)));
    fs::write(&next, []).expect("next segment");
    flip_byte(&wal, file_size(&wal) / 2);
    assert!(matches!(
        millrace_log::Log::open(config, clock),
        Err(LogError::Corrupt { .. })
    ));
}

/// Groups of 256 KiB and more copy into the segments while the WAL is written and synced
/// (on a scoped thread when the WAL is written with direct IO): what they acknowledge reads
/// back, across segment rolls, and again after a crash and recovery.
#[test]
fn large_groups_read_back_and_survive_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(0));
    let runtime = runtime();
    let mut config = no_checkpoint_config(dir.path());
    config.segment_bytes_max = 64 * 1024;
    let log = open(config.clone(), clock.clone());
    for log_id in [1, 2, 3] {
        log.create_log(log_id).expect("create");
    }
    for round in 0..6usize {
        clock.advance(5);
        let payloads: Vec<(LogId, Vec<u8>)> = (0..330usize)
            .map(|i| {
                let log_id = 1 + (i % 3) as LogId;
                (log_id, vec![(round * 7 + i) as u8; 1000 + i % 50])
            })
            .collect();
        let records: Vec<(LogId, &[u8])> = payloads
            .iter()
            .map(|(log_id, payload)| (*log_id, payload.as_slice()))
            .collect();
        let appended = append(&runtime, &log, &records).expect("append");
        assert_eq!(appended.len(), 330);
        assert_eq!(appended[0].offset, round as u64 * 110);
    }
    let before = snapshot(&log);
    for (log_id, bounds, records) in &before {
        assert_eq!(bounds.end_offset, 660, "log {log_id}");
        assert_eq!(records.len(), 660, "log {log_id}");
    }
    drop(log); // as a crash: no checkpoint, everything after open is in the WAL only

    let log = open(config, clock.clone());
    assert_eq!(snapshot(&log), before);
}

/// With fsync on, a log's large runs go to its segment with direct IO and small ones
/// through the page cache, interleaved on one segment; reads (from a runtime worker, where
/// uncached ranges are read directly inside `block_in_place`) see every record, across
/// rolls (which cut the direct writes' padding), a crash and a clean reopen.
#[test]
fn direct_and_buffered_runs_interleave_on_one_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(0));
    let runtime = runtime();
    let workers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("multi-thread runtime");
    let mut config = no_checkpoint_config(dir.path());
    config.segment_bytes_max = 512 * 1024;
    let log = Arc::new(open(config.clone(), clock.clone()));
    log.create_log(1).expect("create");
    let mut expected: Vec<Vec<u8>> = Vec::new();
    let write_round = |log: &millrace_log::Log, round: usize, expected: &mut Vec<Vec<u8>>| {
        clock.advance(1);
        // 100 records of about 1 KiB: one run of about 100 KiB, written directly.
        let large: Vec<Vec<u8>> = (0..100usize)
            .map(|i| vec![(round * 31 + i) as u8 | 1; 900 + (round * 7 + i) % 200])
            .collect();
        // Then three small records: a run of a few hundred bytes, through the page cache.
        let small: Vec<Vec<u8>> = (0..3usize)
            .map(|i| vec![(round + i) as u8 | 2; 10 + round * 3 + i])
            .collect();
        for batch in [&large, &small] {
            let records: Vec<(LogId, &[u8])> = batch
                .iter()
                .map(|payload| (1, payload.as_slice()))
                .collect();
            append(&runtime, log, &records).expect("append");
            expected.extend(batch.iter().cloned());
        }
    };
    let read_on_worker = |log: &Arc<millrace_log::Log>| -> Vec<Vec<u8>> {
        let log = Arc::clone(log);
        workers
            .block_on(workers.spawn(async move { read_all(&log, 1) }))
            .expect("read task")
            .into_iter()
            .map(|(_, _, payload)| payload)
            .collect()
    };
    for round in 0..12 {
        write_round(&log, round, &mut expected);
        assert_eq!(read_on_worker(&log), expected, "round {round}");
    }
    let segments = files_with_extension(&log_dir(dir.path(), 1), "seg");
    assert!(segments.len() >= 3, "rolled: {segments:?}");
    drop(log); // as a crash: everything is in the WAL only

    let log = Arc::new(open(config.clone(), clock.clone()));
    assert_eq!(read_on_worker(&log), expected);
    for round in 12..16 {
        write_round(&log, round, &mut expected);
    }
    assert_eq!(read_on_worker(&log), expected);
    log.shutdown().expect("shutdown");

    let log = Arc::new(open(config, clock.clone()));
    assert_eq!(read_on_worker(&log), expected);
    let bounds = log.bounds(1).expect("bounds");
    assert_eq!(bounds.end_offset, expected.len() as u64);
}
