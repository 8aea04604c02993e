//! Benchmarks of the log's write path: framing and CRC alone, then `append` with group
//! commit (fsync and OS-buffered), and a sequential read drain.
//!
//! Run with `cargo bench -p millrace-log`. The store lives in a temp dir on the machine's
//! disk, so the fsync figures measure that disk.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use millrace_log::bench_support::{
    encode_segment_records, encode_wal_frame, verify_segment_records,
};
use millrace_log::{AppendRecord, Durability, Log, LogConfig, SystemClock};

const RECORD_BYTES: usize = 1024;
const BATCH_RECORDS: usize = 500;

fn framing(c: &mut Criterion) {
    let payload = vec![0xabu8; RECORD_BYTES];
    let mut group = c.benchmark_group("framing");
    group.throughput(Throughput::Elements(BATCH_RECORDS as u64));
    let wal_records: Vec<(u64, u64, i64, &[u8])> = (0..BATCH_RECORDS as u64)
        .map(|i| (i % 4, i, 1_700_000_000_000, payload.as_slice()))
        .collect();
    let mut buf = Vec::with_capacity(BATCH_RECORDS * (RECORD_BYTES + 64));
    group.bench_function("wal_frame_500x1KiB", |b| {
        b.iter(|| {
            buf.clear();
            encode_wal_frame(&mut buf, &wal_records);
            buf.len()
        })
    });
    let segment_records: Vec<(u64, i64, &[u8])> = (0..BATCH_RECORDS as u64)
        .map(|i| (i, 1_700_000_000_000, payload.as_slice()))
        .collect();
    group.bench_function("segment_records_500x1KiB", |b| {
        b.iter(|| {
            buf.clear();
            encode_segment_records(&mut buf, &segment_records);
            buf.len()
        })
    });
    buf.clear();
    encode_segment_records(&mut buf, &segment_records);
    group.bench_function("verify_segment_records_500x1KiB", |b| {
        b.iter(|| verify_segment_records(&buf))
    });
    group.finish();
}

fn open_log(durability: Durability, n_logs: u64) -> (tempfile::TempDir, Log) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = LogConfig::new(dir.path());
    config.durability = durability;
    let log = Log::open(config, Arc::new(SystemClock)).expect("open");
    for log_id in 0..n_logs {
        log.create_log(log_id).expect("create");
    }
    (dir, log)
}

/// `n_callers` tasks each issue `iters / n_callers` appends of `records_per_append`
/// records spread over `n_logs` logs; returns the elapsed time.
fn run_appends(
    runtime: &tokio::runtime::Runtime,
    log: &Log,
    iters: u64,
    n_callers: u64,
    records_per_append: usize,
    record_bytes: usize,
    n_logs: u64,
) -> Duration {
    let payload = Bytes::from(vec![0x5au8; record_bytes]);
    let per_caller = iters.div_ceil(n_callers);
    let started = Instant::now();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for caller in 0..n_callers {
            let log = log.clone();
            let payload = payload.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..per_caller {
                    let records = (0..records_per_append as u64)
                        .map(|k| AppendRecord {
                            log_id: (caller + i + k) % n_logs,
                            payload: payload.clone(),
                        })
                        .collect();
                    log.append(records).await.expect("append");
                }
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
    });
    started.elapsed()
}

fn append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("append");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    let cases: [(&str, Durability, u64, usize, usize, u64); 5] = [
        // PutRecords-like: 500 x 1 KiB over 4 shards.
        (
            "fsync_1_caller_500x1KiB",
            Durability::Fsync,
            1,
            BATCH_RECORDS,
            RECORD_BYTES,
            4,
        ),
        (
            "fsync_16_callers_500x1KiB",
            Durability::Fsync,
            16,
            BATCH_RECORDS,
            RECORD_BYTES,
            4,
        ),
        // PutRecord-like: one small record per call, many callers, many shards.
        ("fsync_1_caller_1x100B", Durability::Fsync, 1, 1, 100, 64),
        ("fsync_64_callers_1x100B", Durability::Fsync, 64, 1, 100, 64),
        (
            "osbuffered_64_callers_1x100B",
            Durability::OsBuffered,
            64,
            1,
            100,
            64,
        ),
    ];
    for (name, durability, n_callers, records_per_append, record_bytes, n_logs) in cases {
        let (_dir, log) = open_log(durability, n_logs);
        group.throughput(Throughput::Elements(records_per_append as u64));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                run_appends(
                    &runtime,
                    &log,
                    iters,
                    n_callers,
                    records_per_append,
                    record_bytes,
                    n_logs,
                )
            })
        });
        log.shutdown().expect("shutdown");
    }
    group.finish();
}

fn read(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (_dir, log) = open_log(Durability::OsBuffered, 1);
    let payload = Bytes::from(vec![1u8; RECORD_BYTES]);
    for _ in 0..200 {
        let records = (0..BATCH_RECORDS)
            .map(|_| AppendRecord {
                log_id: 0,
                payload: payload.clone(),
            })
            .collect();
        runtime.block_on(log.append(records)).expect("append");
    }
    let end = log.bounds(0).expect("bounds").end_offset;
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Elements(BATCH_RECORDS as u64));
    let mut next = 0;
    group.bench_function("sequential_500x1KiB", |b| {
        b.iter(|| {
            if next >= end {
                next = 0;
            }
            let result = log.read(0, next, BATCH_RECORDS, usize::MAX).expect("read");
            next = result.next_offset;
            result.records.len()
        })
    });
    group.finish();
    log.shutdown().expect("shutdown");
}

criterion_group!(benches, framing, append, read);
criterion_main!(benches);
