//! Targeted fault scenarios on the simulated disk (`millrace_log::sim`), each one a
//! behaviour the VOPR (`tests/vopr.rs`) checks at random, pinned down deterministically:
//! a full disk, a failed WAL write, damage inside the WAL, the WAL's age roll, the
//! directory lock.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use millrace_log::sim::{Crash, Faults, SimDisk};
use millrace_log::{
    AppendRecord, Appended, Clock, Log, LogConfig, LogError, LogId, ManualClock, Storage,
};

const DIR: &str = "/data";

fn config() -> LogConfig {
    let mut config = LogConfig::new(DIR);
    config.segment_bytes_max = 4096;
    config.wal_segment_bytes_max = 64 * 1024;
    config.maintenance_interval_ms = None;
    config
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

struct Fixture {
    disk: Arc<SimDisk>,
    clock: Arc<ManualClock>,
    config: LogConfig,
    runtime: tokio::runtime::Runtime,
    log: Log,
}

impl Fixture {
    fn new(config: LogConfig) -> Fixture {
        let disk = SimDisk::new(1);
        let clock = Arc::new(ManualClock::new(1_000_000));
        let log =
            Log::open_with_storage(config.clone(), clock.clone(), disk.storage()).expect("open");
        Fixture {
            disk,
            clock,
            config,
            runtime: runtime(),
            log,
        }
    }

    fn append(&self, log_id: LogId, payload: &[u8]) -> Result<Appended, LogError> {
        let records = vec![AppendRecord {
            log_id,
            payload: Bytes::copy_from_slice(payload),
        }];
        self.runtime
            .block_on(self.log.append(records))
            .map(|appended| appended[0])
    }

    fn read_all(&self, log_id: LogId) -> Vec<(u64, Vec<u8>)> {
        let bounds = self.log.bounds(log_id).expect("bounds");
        let result = self
            .log
            .read(log_id, bounds.start_offset, 10_000, 1 << 24)
            .expect("read");
        result
            .records
            .iter()
            .map(|record| (record.offset, record.payload.to_vec()))
            .collect()
    }

    /// Loses power and opens the store again.
    fn power_loss_and_reopen(&mut self) {
        self.disk.crash(Crash::PowerLoss);
        self.log =
            Log::open_with_storage(self.config.clone(), self.clock.clone(), self.disk.storage())
                .expect("reopen");
    }

    /// True if any file, durable or cached, holds `needle`.
    fn on_disk(&self, needle: &[u8]) -> bool {
        self.disk.durable_files().iter().any(|file| {
            self.disk
                .read_file(&file.path)
                .is_some_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        })
    }

    fn wal_files(&self) -> Vec<PathBuf> {
        let storage = self.disk.storage();
        let wal_dir = Path::new(DIR).join("wal");
        let mut names = storage.list_dir(&wal_dir).expect("list WAL");
        names.sort();
        names.into_iter().map(|name| wal_dir.join(name)).collect()
    }
}

#[test]
fn full_disk_refuses_writes_keeps_reads_and_resumes_without_poison() {
    let mut f = Fixture::new(config());
    f.log.create_logs(&[1, 2]).expect("create");
    let mut acked: Vec<(LogId, u64, Vec<u8>)> = Vec::new();
    for i in 0..20u32 {
        let payload = format!("before-{i}").into_bytes();
        let appended = f.append(1 + u64::from(i % 2), &payload).expect("append");
        acked.push((1 + u64::from(i % 2), appended.offset, payload));
    }
    // Room for the next WAL frame, not for its copy into the segment (24 + 200 bytes) nor
    // for another frame: the append is durable, hence acknowledged, but must wait.
    let frame_bytes = 8 + 16 + 28 + 200;
    f.disk
        .set_capacity(Some(f.disk.used_bytes() + frame_bytes + 100));
    let waiting = vec![b'w'; 200];
    let appended = f
        .append(1, &waiting)
        .expect("durable in the WAL: acknowledged");
    assert!(
        f.read_all(1)
            .iter()
            .all(|(offset, _)| *offset < appended.offset),
        "not readable before it is in a segment"
    );
    acked.push((1, appended.offset, waiting));
    let mut n_refused = 0;
    for i in 0..20 {
        match f.append(2, format!("during-{i}").as_bytes()) {
            Err(LogError::StorageFull { .. }) => n_refused += 1,
            other => panic!("a full disk must refuse with StorageFull, got {other:?}"),
        }
    }
    assert_eq!(n_refused, 20);
    // Reads keep working, and serve exactly what was acknowledged and copied.
    for log_id in [1, 2] {
        for (offset, payload) in f.read_all(log_id) {
            assert!(acked.contains(&(log_id, offset, payload)));
        }
    }
    assert!(matches!(
        f.log.maintain(),
        Err(LogError::StorageFull { .. })
    ));
    // Space comes back: the waiting record is copied and visible, writes resume.
    f.disk.set_capacity(None);
    f.log.maintain().expect("deferred copy");
    let appended = f.append(2, b"after").expect("writes resume");
    acked.push((2, appended.offset, b"after".to_vec()));
    let check = |f: &Fixture| {
        for log_id in [1, 2] {
            let expected: Vec<(u64, Vec<u8>)> = acked
                .iter()
                .filter(|(id, _, _)| *id == log_id)
                .map(|(_, offset, payload)| (*offset, payload.clone()))
                .collect();
            assert_eq!(f.read_all(log_id), expected, "log {log_id}");
        }
    };
    check(&f);
    f.power_loss_and_reopen();
    check(&f);
}

#[test]
fn deleting_a_log_frees_space_on_a_full_disk() {
    let f = Fixture::new(config());
    f.log.create_logs(&[1, 2]).expect("create");
    for _ in 0..30 {
        f.append(1, &[7u8; 500]).expect("fill log 1");
    }
    f.log.checkpoint().expect("checkpoint");
    f.disk.set_capacity(Some(f.disk.used_bytes() + 100));
    assert!(matches!(
        f.append(2, &[1u8; 500]),
        Err(LogError::StorageFull { .. })
    ));
    f.log.delete_log(1).expect("delete works on a full disk");
    f.append(2, &[1u8; 500])
        .expect("the deleted log's space is free");
}

#[test]
fn failed_wal_write_is_cut_off_and_the_log_stays_writable() {
    let mut f = Fixture::new(config());
    f.log.create_log(1).expect("create");
    let first = f.append(1, b"first").expect("append");
    f.disk.set_faults(Faults {
        write_error: 1_000_000,
        ..Faults::default()
    });
    assert!(matches!(
        f.append(1, b"never-acknowledged"),
        Err(LogError::Io { .. })
    ));
    f.disk.set_faults(Faults::default());
    let second = f.append(1, b"second").expect("not poisoned");
    assert_eq!(
        second.offset,
        first.offset + 1,
        "the failed offset is reused"
    );
    f.power_loss_and_reopen();
    assert_eq!(
        f.read_all(1),
        vec![(0, b"first".to_vec()), (1, b"second".to_vec())]
    );
    assert!(!f.on_disk(b"never-acknowledged"));
}

#[test]
fn damage_followed_by_a_later_group_commit_refuses_to_open() {
    let f = Fixture::new(config());
    f.log.create_log(1).expect("create");
    for i in 0..10 {
        f.append(1, format!("record-{i}-{}", "x".repeat(100)).as_bytes())
            .expect("append");
    }
    let wal = f.wal_files().pop().expect("a WAL segment");
    drop(f.log);
    f.disk.crash(Crash::PowerLoss);
    // The third frame of ten: nine groups follow it.
    assert!(f.disk.flip_at_rest(&wal, 2 * 160 + 40, 3));
    let opened = Log::open_with_storage(config(), f.clock.clone(), f.disk.storage());
    match opened {
        Err(LogError::Corrupt { reason, .. }) => {
            assert_eq!(reason, "invalid WAL frame followed by a later group commit")
        }
        other => panic!("damage inside the WAL must refuse to open, got {other:?}"),
    }
    // Repaired, everything is there.
    f.disk.undo_flips_at_rest();
    let log = Log::open_with_storage(config(), f.clock.clone(), f.disk.storage()).expect("open");
    assert_eq!(log.bounds(1).expect("bounds").end_offset, 10);
}

#[test]
fn retention_deletes_data_from_the_wal_too_under_low_traffic() {
    let mut config = config();
    config.wal_age_ms_max = 60_000;
    config.segment_age_ms_max = 10_000;
    let f = Fixture::new(config);
    f.log.create_logs(&[1, 2]).expect("create");
    f.append(1, b"expiring-secret").expect("append");
    f.clock.advance(30_000);
    f.append(1, b"newer").expect("append");
    assert!(f.on_disk(b"expiring-secret"));
    // Retention trims the old segment; the record is still in the WAL.
    let start = f
        .log
        .trim_before(1, f.clock.now_millis() - 1_000)
        .expect("trim");
    assert_eq!(start, 1);
    assert!(f.on_disk(b"expiring-secret"), "still in the WAL");
    // No traffic at all; the WAL's age alone rolls it and the checkpoint deletes it.
    f.clock.advance(60_000);
    f.log.maintain().expect("maintain");
    assert!(
        !f.on_disk(b"expiring-secret"),
        "retention must really delete data"
    );
    assert_eq!(f.read_all(1), vec![(1, b"newer".to_vec())]);
}

#[test]
fn an_idle_writer_rolls_an_old_wal_by_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = LogConfig::new(dir.path());
    config.wal_age_ms_max = 1_000;
    config.maintenance_interval_ms = Some(10);
    let clock = Arc::new(ManualClock::new(0));
    let log = Log::open(config, clock.clone()).expect("open");
    log.create_log(1).expect("create");
    let runtime = runtime();
    runtime
        .block_on(log.append(vec![AppendRecord {
            log_id: 1,
            payload: Bytes::from_static(b"idle-payload"),
        }]))
        .expect("append");
    let wal_dir = dir.path().join("wal");
    let wal_holds_payload = || {
        std::fs::read_dir(&wal_dir).expect("WAL dir").any(|entry| {
            let bytes = std::fs::read(entry.expect("entry").path()).unwrap_or_default();
            bytes.windows(12).any(|w| w == b"idle-payload")
        })
    };
    assert!(wal_holds_payload());
    clock.advance(1_000);
    // The writer's own timer (real time) notices the age (clock time): no request needed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while wal_holds_payload() {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle writer never rolled the WAL"
        );
        std::thread::yield_now();
    }
    assert_eq!(log.read(1, 0, 1, 100).expect("read").records.len(), 1);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(0));
    let log = Log::open(LogConfig::new(dir.path()), clock.clone()).expect("open");
    match Log::open(LogConfig::new(dir.path()), clock.clone()) {
        Err(LogError::Locked { path }) => assert_eq!(path, dir.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(log);
    let log = Log::open(LogConfig::new(dir.path()), clock.clone()).expect("free after drop");
    log.shutdown().expect("shutdown");
    Log::open(LogConfig::new(dir.path()), clock).expect("free after shutdown");
}
