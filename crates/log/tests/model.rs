//! Model-based property test: random sequences of appends, reads, timestamp lookups, trims,
//! checkpoints, clock moves and reopens (clean and abandoned) across several logs, checked
//! step by step against an in-memory model.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use millrace_log::{AppendRecord, Log, LogConfig, LogId, ManualClock};
use proptest::prelude::*;

const N_LOGS: u64 = 3;

#[derive(Clone, Debug)]
enum Op {
    /// (log index, payload size) per record; one append call.
    Append(Vec<(u64, usize)>),
    Read {
        log: u64,
        from_back: u64,
        records_max: usize,
        bytes_max: usize,
    },
    OffsetAtTimestamp {
        log: u64,
        back_ms: i64,
    },
    Trim {
        log: u64,
        back_ms: i64,
    },
    AdvanceClock(i64),
    Checkpoint,
    Reopen {
        clean: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((0..N_LOGS, 0usize..700), 1..6).prop_map(Op::Append),
        3 => (0..N_LOGS, 0u64..40, 0usize..8, 0usize..2_000).prop_map(
            |(log, from_back, records_max, bytes_max)| Op::Read { log, from_back, records_max, bytes_max }
        ),
        1 => (0..N_LOGS, 0i64..400).prop_map(|(log, back_ms)| Op::OffsetAtTimestamp { log, back_ms }),
        1 => (0..N_LOGS, 0i64..400).prop_map(|(log, back_ms)| Op::Trim { log, back_ms }),
        2 => (0i64..60).prop_map(Op::AdvanceClock),
        1 => Just(Op::Checkpoint),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

#[derive(Clone, Debug, Default)]
struct ModelLog {
    start: u64,
    end: u64,
    last_timestamp_ms: Option<i64>,
    /// Records at offsets `start..end`.
    records: Vec<(u64, i64, Vec<u8>)>,
}

fn config(dir: &std::path::Path) -> LogConfig {
    let mut config = buffered(small_config(dir));
    config.segment_bytes_max = 2 * 1024;
    config.segment_age_ms_max = 50;
    config.wal_segment_bytes_max = 8 * 1024;
    config.open_files_max = 4;
    config
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(10_000));
    let runtime = runtime();
    let mut log = Log::open(config(dir.path()), clock.clone()).expect("open");
    let mut model: Vec<ModelLog> = vec![ModelLog::default(); N_LOGS as usize];
    for log_id in 0..N_LOGS {
        log.create_log(log_id).expect("create");
    }
    let mut payload_counter = 0u32;
    for op in ops {
        match op {
            Op::Append(records) => {
                let now = clock.now();
                let mut expected = Vec::new();
                let mut to_append = Vec::new();
                let mut next = model.clone();
                for (log_id, size) in records {
                    payload_counter += 1;
                    let mut payload = payload_counter.to_le_bytes().to_vec();
                    payload.resize(size.max(4), (payload_counter % 251) as u8);
                    let m = &mut next[log_id as usize];
                    let timestamp_ms = m.last_timestamp_ms.map_or(now, |last| last.max(now));
                    expected.push((m.end, timestamp_ms));
                    m.records.push((m.end, timestamp_ms, payload.clone()));
                    m.end += 1;
                    m.last_timestamp_ms = Some(timestamp_ms);
                    to_append.push(AppendRecord {
                        log_id,
                        payload: Bytes::from(payload),
                    });
                }
                let appended = runtime.block_on(log.append(to_append)).expect("append");
                let got: Vec<(u64, i64)> = appended
                    .iter()
                    .map(|a| (a.offset, a.timestamp_ms))
                    .collect();
                prop_assert_eq!(got, expected);
                model = next;
            }
            Op::Read {
                log: log_id,
                from_back,
                records_max,
                bytes_max,
            } => {
                let m = &model[log_id as usize];
                let from = (m.end + 2).saturating_sub(from_back);
                let result = log
                    .read(log_id, from, records_max, bytes_max)
                    .expect("read");
                let mut expected = Vec::new();
                let mut n_bytes = 0;
                for (offset, timestamp_ms, payload) in &m.records {
                    if *offset < from {
                        continue;
                    }
                    if expected.len() >= records_max.max(1) {
                        break;
                    }
                    if !expected.is_empty() && n_bytes + payload.len() > bytes_max {
                        break;
                    }
                    n_bytes += payload.len();
                    expected.push((*offset, *timestamp_ms, payload.clone()));
                    if n_bytes >= bytes_max {
                        break;
                    }
                }
                let got: Vec<(u64, i64, Vec<u8>)> = result
                    .records
                    .iter()
                    .map(|r| (r.offset, r.timestamp_ms, r.payload.to_vec()))
                    .collect();
                let expected_next = expected
                    .last()
                    .map_or(from.max(m.start), |(offset, _, _)| offset + 1);
                prop_assert_eq!(got, expected);
                prop_assert_eq!(result.next_offset, expected_next);
                prop_assert_eq!(result.end_offset, m.end);
            }
            Op::OffsetAtTimestamp {
                log: log_id,
                back_ms,
            } => {
                let target = clock.now() - back_ms;
                let m = &model[log_id as usize];
                let expected = m
                    .records
                    .iter()
                    .find(|(_, timestamp_ms, _)| *timestamp_ms >= target)
                    .map_or(m.end, |(offset, _, _)| *offset);
                prop_assert_eq!(
                    log.offset_at_timestamp(log_id, target).expect("lookup"),
                    expected
                );
            }
            Op::Trim {
                log: log_id,
                back_ms,
            } => {
                let cutoff = clock.now() - back_ms;
                let start = log.trim_before(log_id, cutoff).expect("trim");
                let m = &mut model[log_id as usize];
                // Which segments exist is the log's business; what it may delete is not.
                prop_assert!(start >= m.start && start <= m.end);
                for (offset, timestamp_ms, _) in &m.records {
                    if *offset < start {
                        prop_assert!(
                            *timestamp_ms < cutoff,
                            "trim to {} removed record {} at {} >= cutoff {}",
                            start,
                            offset,
                            timestamp_ms,
                            cutoff
                        );
                    }
                }
                m.records.retain(|(offset, _, _)| *offset >= start);
                m.start = start;
            }
            Op::AdvanceClock(delta_ms) => clock.advance(delta_ms),
            Op::Checkpoint => log.checkpoint().expect("checkpoint"),
            Op::Reopen { clean } => {
                if clean {
                    log.shutdown().expect("shutdown");
                }
                drop(log);
                log = Log::open(config(dir.path()), clock.clone()).expect("reopen");
            }
        }
        for (log_id, m) in model.iter().enumerate() {
            let bounds = log.bounds(log_id as LogId).expect("bounds");
            prop_assert_eq!(
                (
                    bounds.start_offset,
                    bounds.end_offset,
                    bounds.last_timestamp_ms
                ),
                (m.start, m.end, m.last_timestamp_ms),
                "bounds of log {}",
                log_id
            );
        }
    }
    for (log_id, m) in model.iter().enumerate() {
        prop_assert_eq!(read_all(&log, log_id as LogId), m.records.clone());
    }
    Ok(())
}

trait Now {
    fn now(&self) -> i64;
}

impl Now for ManualClock {
    fn now(&self) -> i64 {
        millrace_log::Clock::now_millis(self)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn log_behaves_like_its_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}
