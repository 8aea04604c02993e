//! VOPR-style simulation of the log on a fault-injecting simulated disk
//! (`millrace_log::sim`): a seed decides a random workload (appends, group commits, reads,
//! timestamp lookups, trims, checkpoints, creates, deletes, clock moves, full-disk episodes,
//! power losses, process crashes, clean restarts, crashes armed to fire in the middle of an
//! operation or a recovery, bits flipped at rest) and which faults the disk injects (swarm
//! testing: each seed turns a random subset on). After every step the results are checked
//! against a model, and after every reopen everything is:
//!
//! - every acknowledged record is present with the same offset, timestamp and payload
//!   (unless a trim was allowed to remove it), and so is every record a read ever served;
//! - a record is never served with other bytes than were appended, nor one that was never
//!   appended, nor one of a deleted log; offsets are never reused;
//! - a failed fsync never leads to an acknowledgement (errors are only the ones the
//!   injected faults explain: `Poisoned` needs a failed fsync or a crash, `StorageFull` a
//!   full disk, `Corrupt` a flipped bit);
//! - a full disk never poisons, and once space returns writes work again;
//! - corruption is reported (`Corrupt`) and never served.
//!
//! Replay a failure with `MILLRACE_SIM_SEED=<seed> cargo test -p millrace-log --test vopr`.
//! A long run: `MILLRACE_SIM_SEEDS=20000 MILLRACE_SIM_SEED_BASE=<any> cargo test --release
//! -p millrace-log --test vopr -- --nocapture` (see docs/reliability.md).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use millrace_log::sim::{Crash, Faults, SimDisk, SimRng, SimStats};
use millrace_log::{
    AppendRecord, Appended, Durability, Log, LogConfig, LogError, LogId, ManualClock,
};

const DATA_DIR: &str = "/data";
const DEFAULT_N_SEEDS: u64 = 24;
const DEFAULT_N_STEPS: u64 = 300;
const TRACE_EVENTS_MAX: usize = 120;
const OPEN_ATTEMPTS_MAX: u32 = 12;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

/// `MILLRACE_SIM_LOG=debug` shows the log's own tracing (recovery reports, warnings).
fn init_tracing() {
    if let Ok(filter) = std::env::var("MILLRACE_SIM_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

#[test]
fn vopr() {
    init_tracing();
    let n_steps = env_u64("MILLRACE_SIM_STEPS").unwrap_or(DEFAULT_N_STEPS);
    let seeds: Vec<u64> = match env_u64("MILLRACE_SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let base = env_u64("MILLRACE_SIM_SEED_BASE").unwrap_or(0);
            let n_seeds = env_u64("MILLRACE_SIM_SEEDS").unwrap_or(DEFAULT_N_SEEDS);
            (base..base + n_seeds).collect()
        }
    };
    let mut totals = Totals::default();
    for seed in seeds {
        let outcome = catch_unwind(AssertUnwindSafe(|| run_seed(seed, n_steps)));
        match outcome {
            Ok(Ok(report)) => totals.add(&report),
            Ok(Err(failure)) => panic!(
                "VOPR seed {seed} failed at step {}: {}\n\
                 replay: MILLRACE_SIM_SEED={seed} cargo test -p millrace-log --test vopr\n\
                 last events:\n{}",
                failure.step, failure.message, failure.trace
            ),
            Err(_) => panic!(
                "VOPR seed {seed} panicked (see above)\n\
                 replay: MILLRACE_SIM_SEED={seed} cargo test -p millrace-log --test vopr"
            ),
        }
    }
    println!("{totals}");
    assert!(totals.n_acked > 0, "the simulation acknowledged nothing");
}

/// The same seed must do exactly the same thing: that is what makes a failure replayable.
#[test]
fn same_seed_replays_identically() {
    for seed in [3, 17] {
        let first = run_seed(seed, 150).unwrap_or_else(|failure| panic!("{}", failure.message));
        let second = run_seed(seed, 150).unwrap_or_else(|failure| panic!("{}", failure.message));
        assert_eq!(first.digest, second.digest, "seed {seed} diverged");
        assert_eq!(first.disk, second.disk, "seed {seed} diverged");
    }
}

// ---------------------------------------------------------------------------------------
// Reports

#[derive(Debug)]
struct Failure {
    step: u64,
    message: String,
    trace: String,
}

#[derive(Debug, Default)]
struct Report {
    digest: u64,
    disk: SimStats,
    n_acked: u64,
    n_refused: u64,
    n_reads: u64,
    n_reopens: u64,
    n_verifies: u64,
    n_corrupt_detected: u64,
    n_storage_full: u64,
    n_poisoned: u64,
}

#[derive(Default)]
struct Totals {
    n_seeds: u64,
    n_acked: u64,
    n_refused: u64,
    n_reads: u64,
    n_reopens: u64,
    n_verifies: u64,
    n_corrupt_detected: u64,
    n_storage_full: u64,
    n_poisoned: u64,
    disk: SimStats,
}

impl Totals {
    fn add(&mut self, report: &Report) {
        self.n_seeds += 1;
        self.n_acked += report.n_acked;
        self.n_refused += report.n_refused;
        self.n_reads += report.n_reads;
        self.n_reopens += report.n_reopens;
        self.n_verifies += report.n_verifies;
        self.n_corrupt_detected += report.n_corrupt_detected;
        self.n_storage_full += report.n_storage_full;
        self.n_poisoned += report.n_poisoned;
        let disk = &mut self.disk;
        let more = &report.disk;
        disk.n_calls += more.n_calls;
        disk.n_reads += more.n_reads;
        disk.n_writes += more.n_writes;
        disk.n_syncs += more.n_syncs;
        disk.n_read_errors += more.n_read_errors;
        disk.n_short_reads += more.n_short_reads;
        disk.n_read_flips += more.n_read_flips;
        disk.n_write_errors += more.n_write_errors;
        disk.n_sync_errors += more.n_sync_errors;
        disk.n_sync_dir_errors += more.n_sync_dir_errors;
        disk.n_metadata_errors += more.n_metadata_errors;
        disk.n_no_space += more.n_no_space;
        disk.n_power_losses += more.n_power_losses;
        disk.n_process_crashes += more.n_process_crashes;
        disk.n_flips_at_rest += more.n_flips_at_rest;
    }
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = &self.disk;
        write!(
            f,
            "VOPR: {} seeds; {} appends acknowledged, {} refused; {} reads; {} reopens; \
             {} full verifications; {} corruptions detected; {} StorageFull; {} Poisoned; \
             disk: {} calls, {} power losses, {} process crashes, {} flips at rest, \
             {} read flips, {} short reads, {} read errors, {} write errors, {} ENOSPC, \
             {} fsync errors, {} dir fsync errors, {} metadata errors",
            self.n_seeds,
            self.n_acked,
            self.n_refused,
            self.n_reads,
            self.n_reopens,
            self.n_verifies,
            self.n_corrupt_detected,
            self.n_storage_full,
            self.n_poisoned,
            d.n_calls,
            d.n_power_losses,
            d.n_process_crashes,
            d.n_flips_at_rest,
            d.n_read_flips,
            d.n_short_reads,
            d.n_read_errors,
            d.n_write_errors,
            d.n_no_space,
            d.n_sync_errors,
            d.n_sync_dir_errors,
            d.n_metadata_errors,
        )
    }
}

// ---------------------------------------------------------------------------------------
// The model

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    /// Created (acknowledged) and not deleted.
    Live,
    /// A create failed: it may exist.
    MaybeLive,
    /// A delete failed: it may be gone.
    MaybeDeleted,
}

#[derive(Debug)]
struct ModelLog {
    status: Status,
    /// Acknowledged records and records a read served (both must be durable).
    known: BTreeMap<u64, (i64, Bytes)>,
    /// Payloads of appends that failed: they may show up, at offsets never acknowledged.
    maybe: BTreeSet<Bytes>,
    /// The end offset is at least this (acknowledged records are never lost).
    end_min: u64,
    /// A trim may have removed records older than this.
    trim_horizon_ms: i64,
}

impl ModelLog {
    fn new(status: Status) -> ModelLog {
        ModelLog {
            status,
            known: BTreeMap::new(),
            maybe: BTreeSet::new(),
            end_min: 0,
            trim_horizon_ms: i64::MIN,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The simulation

struct Sim {
    seed: u64,
    rng: SimRng,
    disk: Arc<SimDisk>,
    clock: Arc<ManualClock>,
    config: LogConfig,
    runtime: tokio::runtime::Runtime,
    log: Option<Log>,
    /// Disk epoch the open log lives in; a different one means the disk crashed under it.
    log_epoch: u64,
    /// Disk counters when the log was opened (which errors are explained this epoch).
    stats_at_open: SimStats,
    faults: Faults,
    full_disk_episodes: bool,
    flips_at_rest: bool,
    logs: BTreeMap<LogId, ModelLog>,
    deleted: BTreeSet<LogId>,
    next_log_id: LogId,
    next_payload: u64,
    step: u64,
    trace: VecDeque<String>,
    digest: u64,
    report: Report,
    paranoid: bool,
    trace_events_max: usize,
    /// Verifying right after a recovery: logs whose create or delete failed are settled.
    settle: bool,
    /// Acknowledged records may be waiting in the log's backlog (not yet readable).
    acked_may_wait: bool,
}

type Check = Result<(), String>;

fn run_seed(seed: u64, n_steps: u64) -> Result<Report, Failure> {
    let mut sim = Sim::new(seed);
    let result = sim.run(n_steps);
    match result {
        Ok(()) => {
            sim.report.digest = sim.digest;
            sim.report.disk = sim.disk.stats();
            // Leave no writer thread behind.
            sim.log = None;
            Ok(std::mem::take(&mut sim.report))
        }
        Err(message) => {
            let mut trace = sim.trace.iter().cloned().collect::<Vec<_>>().join("\n");
            if let Ok(path) = std::env::var("MILLRACE_SIM_DUMP") {
                let bytes = sim
                    .disk
                    .read_file(std::path::Path::new(&path))
                    .unwrap_or_default();
                trace.push_str(&format!("\ndump of {path} ({} bytes):", bytes.len()));
                let mut position = 0usize;
                while position + 24 <= bytes.len() {
                    let field = |at: usize, n: usize| -> u64 {
                        let mut value = 0u64;
                        for (idx, byte) in
                            bytes[position + at..position + at + n].iter().enumerate()
                        {
                            value |= u64::from(*byte) << (8 * idx);
                        }
                        value
                    };
                    let len = field(0, 4) as usize;
                    let offset = field(8, 8);
                    let head = String::from_utf8_lossy(
                        &bytes[(position + 24).min(bytes.len())
                            ..(position + 24 + len.min(30)).min(bytes.len())],
                    )
                    .into_owned();
                    trace.push_str(&format!(
                        "\n  @{position} len {len} offset {offset} {head:?}"
                    ));
                    position += 24 + len;
                }
            }
            trace.push_str("\nfiles (durable size, last synced write at), first 80:");
            for file in sim.disk.durable_files().into_iter().take(80) {
                trace.push_str(&format!(
                    "\n  {} {} {:?}",
                    file.path.display(),
                    file.durable_size_bytes,
                    file.last_synced_write_position
                ));
            }
            sim.disk.crash(Crash::ProcessCrash);
            sim.log = None;
            Err(Failure {
                step: sim.step,
                message,
                trace,
            })
        }
    }
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = SimRng::new(seed ^ 0x5EED_5EED_5EED_5EED);
        let mut swarm = |max: u64| -> u32 {
            if rng.chance(500_000) {
                rng.range(1, max + 1) as u32
            } else {
                0
            }
        };
        let faults = Faults {
            read_error: swarm(3_000),
            read_short: swarm(200_000),
            read_flip: swarm(3_000),
            write_error: swarm(8_000),
            sync_error: swarm(4_000),
            sync_dir_error: swarm(4_000),
            metadata_error: swarm(3_000),
        };
        let full_disk_episodes = rng.chance(500_000);
        let flips_at_rest = rng.chance(500_000);
        let mut config = LogConfig::new(DATA_DIR);
        config.durability = Durability::Fsync;
        config.segment_bytes_max = rng.range(600, 6_000);
        config.segment_age_ms_max = rng.range(100, 3_000) as i64;
        config.wal_segment_bytes_max = rng.range(2_000, 20_000);
        config.wal_age_ms_max = rng.range(200, 5_000) as i64;
        config.group_commit_bytes_max = rng.range(1, 4_000) as usize;
        config.record_bytes_max = 3_000;
        config.open_files_max = rng.range(2, 9) as usize;
        config.maintenance_interval_ms = None;
        let disk = SimDisk::new(seed);
        disk.set_faults(faults);
        Sim {
            seed,
            rng,
            disk,
            clock: Arc::new(ManualClock::new(1_000_000)),
            config,
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime"),
            log: None,
            log_epoch: 0,
            stats_at_open: SimStats::default(),
            faults,
            full_disk_episodes,
            flips_at_rest,
            logs: BTreeMap::new(),
            deleted: BTreeSet::new(),
            next_log_id: 1,
            next_payload: 0,
            step: 0,
            trace: VecDeque::new(),
            digest: 0xcbf2_9ce4_8422_2325,
            report: Report::default(),
            paranoid: std::env::var("MILLRACE_SIM_PARANOID").is_ok(),
            trace_events_max: env_u64("MILLRACE_SIM_TRACE_EVENTS")
                .map_or(TRACE_EVENTS_MAX, |n| n as usize),
            acked_may_wait: false,
            settle: false,
        }
    }

    fn event(&mut self, text: String) {
        for byte in text.bytes() {
            self.digest = (self.digest ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        if self.trace.len() >= self.trace_events_max {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("[{}] {text}", self.step));
    }

    fn log(&self) -> Result<&Log, String> {
        self.log.as_ref().ok_or_else(|| "no open log".to_owned())
    }

    fn run(&mut self, n_steps: u64) -> Check {
        self.event(format!(
            "seed {} faults {:?} full_disk {} flips_at_rest {} config seg {} seg_age {} wal {} \
             wal_age {} group {} files {}",
            self.seed,
            self.faults,
            self.full_disk_episodes,
            self.flips_at_rest,
            self.config.segment_bytes_max,
            self.config.segment_age_ms_max,
            self.config.wal_segment_bytes_max,
            self.config.wal_age_ms_max,
            self.config.group_commit_bytes_max,
            self.config.open_files_max
        ));
        self.open()?;
        for _ in 0..3 {
            self.create()?;
        }
        for step in 0..n_steps {
            self.step = step;
            if self.disk.epoch() != self.log_epoch {
                self.event("the disk lost power under the log".to_owned());
                self.reopen(None)?;
            }
            let poisoned = self.log.as_ref().is_some_and(|log| {
                log.maintain()
                    .is_err_and(|e| matches!(e, LogError::Poisoned))
            });
            if poisoned {
                // Only a reopen makes a poisoned log writable again.
                let crash = if self.rng.chance(500_000) {
                    Crash::PowerLoss
                } else {
                    Crash::ProcessCrash
                };
                self.reopen(Some(crash))?;
            }
            match self.rng.below(100) {
                0..30 => self.append()?,
                30..38 => self.append_group()?,
                38..56 => self.read()?,
                56..60 => self.offset_at_timestamp()?,
                60..65 => self.trim()?,
                65..69 => self.create()?,
                69..71 => self.delete()?,
                71..74 => self.checkpoint()?,
                74..77 => self.maintain()?,
                77..85 => self.advance_clock(),
                85..88 => self.toggle_full_disk(),
                88..90 => self.arm_crash(),
                90..95 => {
                    let crash = match self.rng.below(3) {
                        0 => Some(Crash::PowerLoss),
                        1 => Some(Crash::ProcessCrash),
                        _ => None,
                    };
                    self.reopen(crash)?;
                }
                _ => self.quiesce_and_verify()?,
            }
            if self.paranoid && !self.crashed() && !self.disk.crash_armed() && self.log.is_some() {
                // Debugging aid (`MILLRACE_SIM_PARANOID=1`): find the first bad step. A
                // backlog may hold acknowledged records back: the end is not checked.
                self.acked_may_wait = true;
                let result = self.verify_all();
                self.acked_may_wait = false;
                result?;
            }
        }
        self.step = n_steps;
        self.reopen(Some(Crash::PowerLoss))?;
        self.quiesce_and_verify()
    }

    // -----------------------------------------------------------------------------------
    // What errors the injected faults explain

    fn crashed(&self) -> bool {
        self.disk.epoch() != self.log_epoch
    }

    fn explains(&self, error: &LogError) -> bool {
        let now = self.disk.stats();
        let since = &self.stats_at_open;
        match error {
            LogError::StorageFull { .. } => self.disk.capacity().is_some(),
            LogError::Io { .. } => self.faults != Faults::default() || self.crashed(),
            LogError::Poisoned => {
                self.crashed()
                    || now.n_sync_errors > since.n_sync_errors
                    || now.n_sync_dir_errors > since.n_sync_dir_errors
                    || now.n_metadata_errors > since.n_metadata_errors
            }
            LogError::Corrupt { .. } => {
                self.disk.n_flips_at_rest() > 0 || self.faults.read_flip > 0
            }
            _ => false,
        }
    }

    /// An error from a write-path call: fine if explained, else the failure.
    fn expect_explained(&mut self, what: &str, error: &LogError) -> Check {
        match error {
            LogError::StorageFull { .. } => self.report.n_storage_full += 1,
            LogError::Poisoned => self.report.n_poisoned += 1,
            LogError::Corrupt { .. } => self.report.n_corrupt_detected += 1,
            _ => {}
        }
        if self.explains(error) {
            Ok(())
        } else {
            Err(format!("{what}: unexplained error {error:?}"))
        }
    }

    // -----------------------------------------------------------------------------------
    // Operations

    fn pick_log(&mut self) -> Option<LogId> {
        let ids: Vec<LogId> = self.logs.keys().copied().collect();
        let idx = self.rng.below(ids.len() as u64) as usize;
        ids.get(idx).copied()
    }

    fn payload(&mut self, log_id: LogId) -> Bytes {
        self.next_payload += 1;
        let size = match self.rng.below(10) {
            0 => 0,
            1 => self.rng.range(1_000, 3_001),
            _ => self.rng.range(1, 400),
        } as usize;
        let head = format!("s{}-l{}-p{}|", self.seed, log_id, self.next_payload);
        let mut bytes = head.into_bytes();
        let fill = b'a' + (self.next_payload % 26) as u8;
        bytes.resize(bytes.len().max(size), fill);
        Bytes::from(bytes)
    }

    fn records(&mut self) -> Vec<AppendRecord> {
        let n_records = self.rng.range(1, 6);
        let mut records = Vec::new();
        for _ in 0..n_records {
            let Some(log_id) = self.pick_log() else {
                break;
            };
            let payload = self.payload(log_id);
            records.push(AppendRecord { log_id, payload });
        }
        records
    }

    fn append(&mut self) -> Check {
        let records = self.records();
        if records.is_empty() {
            return Ok(());
        }
        let log = self.log()?.clone();
        let result = self.runtime.block_on(log.append(records.clone()));
        self.check_append(&records, result)
    }

    fn append_group(&mut self) -> Check {
        let n_appends = self.rng.range(2, 5);
        let appends: Vec<Vec<AppendRecord>> = (0..n_appends).map(|_| self.records()).collect();
        let log = self.log()?.clone();
        let results = self.runtime.block_on(log.append_group(appends.clone()));
        if results.len() != appends.len() {
            return Err("append_group answered the wrong number of results".to_owned());
        }
        for (records, result) in appends.iter().zip(results) {
            self.check_append(records, result)?;
        }
        Ok(())
    }

    fn check_append(
        &mut self,
        records: &[AppendRecord],
        result: Result<Vec<Appended>, LogError>,
    ) -> Check {
        let summary: Vec<LogId> = records.iter().map(|r| r.log_id).collect();
        match result {
            Ok(appended) => {
                self.event(format!(
                    "append {summary:?} -> {:?}",
                    appended.iter().map(|a| a.offset).collect::<Vec<_>>()
                ));
                if appended.len() != records.len() {
                    return Err("append answered the wrong number of results".to_owned());
                }
                self.report.n_acked += 1;
                let mut previous: BTreeMap<LogId, u64> = BTreeMap::new();
                for (record, appended) in records.iter().zip(&appended) {
                    if self.deleted.contains(&record.log_id) {
                        return Err(format!(
                            "append to deleted log {} acknowledged",
                            record.log_id
                        ));
                    }
                    if let Some(previous) = previous.insert(record.log_id, appended.offset)
                        && appended.offset != previous + 1
                    {
                        return Err(format!(
                            "offsets of one append to log {} not consecutive",
                            record.log_id
                        ));
                    }
                    let model = self.logs.get_mut(&record.log_id).ok_or_else(|| {
                        format!("append to unknown log {} acknowledged", record.log_id)
                    })?;
                    if let Some((_, (timestamp_ms, _))) =
                        model.known.range(..appended.offset).next_back()
                        && *timestamp_ms > appended.timestamp_ms
                    {
                        return Err(format!(
                            "log {}: timestamp went back at offset {}",
                            record.log_id, appended.offset
                        ));
                    }
                    if let Some((timestamp_ms, payload)) = model.known.get(&appended.offset)
                        && (*payload != record.payload || *timestamp_ms != appended.timestamp_ms)
                    {
                        return Err(format!(
                            "log {}: offset {} reused (it held {:?})",
                            record.log_id,
                            appended.offset,
                            String::from_utf8_lossy(
                                payload.get(..30.min(payload.len())).unwrap_or_default()
                            )
                        ));
                    }
                    model.known.insert(
                        appended.offset,
                        (appended.timestamp_ms, record.payload.clone()),
                    );
                    model.maybe.remove(&record.payload);
                    model.end_min = model.end_min.max(appended.offset + 1);
                    if model.status == Status::MaybeLive {
                        model.status = Status::Live;
                    }
                }
                Ok(())
            }
            Err(error) => {
                self.event(format!("append {summary:?} -> {error}"));
                self.report.n_refused += 1;
                for record in records {
                    if let Some(model) = self.logs.get_mut(&record.log_id) {
                        model.maybe.insert(record.payload.clone());
                    }
                }
                if let LogError::UnknownLog { log_id } = error {
                    let status = self.logs.get(&log_id).map(|m| m.status);
                    return match status {
                        Some(Status::Live) => Err(format!("live log {log_id} unknown to append")),
                        _ => Ok(()),
                    };
                }
                self.expect_explained("append", &error)
            }
        }
    }

    /// Checks records a read served against the model (and learns the ones it did not
    /// know, which are durable from now on).
    fn check_served(&mut self, log_id: LogId, records: &[millrace_log::Record]) -> Check {
        let Some(model) = self.logs.get_mut(&log_id) else {
            return Err(format!(
                "read served log {log_id}, which the model does not have"
            ));
        };
        let mut previous_timestamp_ms = i64::MIN;
        for record in records {
            if record.timestamp_ms < previous_timestamp_ms {
                return Err(format!(
                    "log {log_id}: timestamps go back at {}",
                    record.offset
                ));
            }
            previous_timestamp_ms = record.timestamp_ms;
            match model.known.get(&record.offset) {
                Some((timestamp_ms, payload)) => {
                    if *payload != record.payload || *timestamp_ms != record.timestamp_ms {
                        return Err(format!(
                            "log {log_id}: offset {} served other data than acknowledged",
                            record.offset
                        ));
                    }
                }
                None => {
                    if !model.maybe.remove(&record.payload) {
                        return Err(format!(
                            "log {log_id}: offset {} served a record never appended to it: {:?}",
                            record.offset,
                            String::from_utf8_lossy(
                                record
                                    .payload
                                    .get(..40.min(record.payload.len()))
                                    .unwrap_or_default()
                            )
                        ));
                    }
                    model
                        .known
                        .insert(record.offset, (record.timestamp_ms, record.payload.clone()));
                    model.end_min = model.end_min.max(record.offset + 1);
                }
            }
        }
        Ok(())
    }

    fn read(&mut self) -> Check {
        let Some(log_id) = self.pick_log() else {
            return Ok(());
        };
        let log = self.log()?.clone();
        let bounds = match log.bounds(log_id) {
            Ok(bounds) => bounds,
            Err(LogError::UnknownLog { .. }) => {
                return match self.logs.get(&log_id).map(|m| m.status) {
                    Some(Status::Live) => Err(format!("live log {log_id} unknown to bounds")),
                    _ => Ok(()),
                };
            }
            Err(error) => return Err(format!("bounds failed: {error:?}")),
        };
        if bounds.start_offset > bounds.end_offset {
            return Err(format!("log {log_id}: start after end: {bounds:?}"));
        }
        let from = self
            .rng
            .range(bounds.start_offset.saturating_sub(2), bounds.end_offset + 3);
        let records_max = self.rng.range(1, 12) as usize;
        let bytes_max = self.rng.range(1, 5_000) as usize;
        self.report.n_reads += 1;
        match log.read(log_id, from, records_max, bytes_max) {
            Ok(result) => {
                self.event(format!(
                    "read {log_id} from {from} -> {} records, next {}",
                    result.records.len(),
                    result.next_offset
                ));
                let first = from.max(bounds.start_offset);
                match result.records.first() {
                    None if first < bounds.end_offset => {
                        return Err(format!(
                            "log {log_id}: read from {from} empty below the end"
                        ));
                    }
                    Some(record) if record.offset != first => {
                        return Err(format!(
                            "log {log_id}: read from {from} started at {}",
                            record.offset
                        ));
                    }
                    _ => {}
                }
                if result
                    .records
                    .windows(2)
                    .any(|pair| pair[1].offset != pair[0].offset + 1)
                {
                    return Err(format!("log {log_id}: read from {from} has a hole"));
                }
                if result.records.len() > records_max {
                    return Err("read returned more records than asked".to_owned());
                }
                self.check_served(log_id, &result.records)
            }
            Err(LogError::UnknownLog { .. }) => Ok(()),
            Err(error) => {
                self.event(format!("read {log_id} from {from} -> {error}"));
                self.expect_explained("read", &error)
            }
        }
    }

    fn offset_at_timestamp(&mut self) -> Check {
        let Some(log_id) = self.pick_log() else {
            return Ok(());
        };
        let log = self.log()?.clone();
        let target_ms = self.clock_ms() - self.rng.below(3_000) as i64;
        match log.offset_at_timestamp(log_id, target_ms) {
            Ok(offset) => {
                self.event(format!(
                    "offset_at_timestamp {log_id} {target_ms} -> {offset}"
                ));
                let Ok(bounds) = log.bounds(log_id) else {
                    return Ok(());
                };
                let Some(model) = self.logs.get(&log_id) else {
                    return Ok(());
                };
                if offset > bounds.end_offset || offset < bounds.start_offset {
                    return Err(format!("offset_at_timestamp {offset} outside {bounds:?}"));
                }
                for (known_offset, (timestamp_ms, _)) in
                    model.known.range(bounds.start_offset..bounds.end_offset)
                {
                    let before = *known_offset < offset;
                    if before && *timestamp_ms >= target_ms {
                        return Err(format!(
                            "offset_at_timestamp({target_ms}) = {offset} skips offset \
                             {known_offset} at {timestamp_ms}"
                        ));
                    }
                    if *known_offset == offset && *timestamp_ms < target_ms {
                        return Err(format!(
                            "offset_at_timestamp({target_ms}) = {offset}, which is older"
                        ));
                    }
                }
                Ok(())
            }
            Err(LogError::UnknownLog { .. }) => Ok(()),
            Err(error) => {
                self.event(format!("offset_at_timestamp {log_id} -> {error}"));
                self.expect_explained("offset_at_timestamp", &error)
            }
        }
    }

    fn clock_ms(&self) -> i64 {
        use millrace_log::Clock;
        self.clock.now_millis()
    }

    fn trim(&mut self) -> Check {
        let Some(log_id) = self.pick_log() else {
            return Ok(());
        };
        let horizon_ms = self.clock_ms() - self.rng.below(4_000) as i64;
        let log = self.log()?.clone();
        // Even a failed trim may have removed some segments.
        if let Some(model) = self.logs.get_mut(&log_id) {
            model.trim_horizon_ms = model.trim_horizon_ms.max(horizon_ms);
        }
        match log.trim_before(log_id, horizon_ms) {
            Ok(start) => {
                self.event(format!(
                    "trim {log_id} before {horizon_ms} -> start {start}"
                ));
                let Some(model) = self.logs.get(&log_id) else {
                    return Ok(());
                };
                // Trims only remove records older than the newest horizon asked for.
                let horizon_ms = model.trim_horizon_ms;
                if let Some((offset, (timestamp_ms, _))) = model
                    .known
                    .range(..start)
                    .find(|(_, (timestamp_ms, _))| *timestamp_ms >= horizon_ms)
                {
                    return Err(format!(
                        "trims before {horizon_ms} removed offset {offset} at {timestamp_ms}"
                    ));
                }
                Ok(())
            }
            Err(LogError::UnknownLog { .. }) => match self.logs.get(&log_id).map(|m| m.status) {
                Some(Status::Live) => Err(format!("live log {log_id} unknown to trim")),
                _ => Ok(()),
            },
            Err(error) => {
                self.event(format!("trim {log_id} -> {error}"));
                self.expect_explained("trim", &error)
            }
        }
    }

    fn create(&mut self) -> Check {
        // Sometimes bring back a deleted id: its old records must never come back with it.
        let reuse = self
            .deleted
            .iter()
            .next()
            .copied()
            .filter(|_| self.rng.chance(300_000));
        let log_id = reuse.unwrap_or_else(|| {
            self.next_log_id += 1;
            self.next_log_id
        });
        let log = self.log()?.clone();
        match log.create_log(log_id) {
            Ok(()) => {
                self.event(format!("create {log_id} -> ok"));
                self.deleted.remove(&log_id);
                let existing = self.logs.get(&log_id).map(|m| m.status);
                match existing {
                    Some(Status::Live | Status::MaybeDeleted) => {
                        // Idempotent: an existing log stays as it was, and is live.
                        if let Some(model) = self.logs.get_mut(&log_id) {
                            model.status = Status::Live;
                        }
                    }
                    Some(Status::MaybeLive) | None => {
                        // Whatever a failed create left, the log is new and empty... unless
                        // the failed create did create it and records were appended.
                        let model = self
                            .logs
                            .entry(log_id)
                            .or_insert_with(|| ModelLog::new(Status::Live));
                        model.status = Status::Live;
                    }
                }
                Ok(())
            }
            Err(error) => {
                self.event(format!("create {log_id} -> {error}"));
                if !self.logs.contains_key(&log_id) {
                    self.deleted.remove(&log_id);
                    self.logs.insert(log_id, ModelLog::new(Status::MaybeLive));
                }
                self.expect_explained("create", &error)
            }
        }
    }

    fn delete(&mut self) -> Check {
        let Some(log_id) = self.pick_log() else {
            return Ok(());
        };
        if self.logs.len() <= 1 {
            return Ok(());
        }
        let log = self.log()?.clone();
        match log.delete_log(log_id) {
            Ok(()) => {
                self.event(format!("delete {log_id} -> ok"));
                self.logs.remove(&log_id);
                self.deleted.insert(log_id);
                match log.read(log_id, 0, 1, 1) {
                    Err(LogError::UnknownLog { .. }) => Ok(()),
                    other => Err(format!("deleted log {log_id} still readable: {other:?}")),
                }
            }
            Err(error) => {
                self.event(format!("delete {log_id} -> {error}"));
                if let Some(model) = self.logs.get_mut(&log_id) {
                    model.status = Status::MaybeDeleted;
                }
                self.expect_explained("delete", &error)
            }
        }
    }

    fn checkpoint(&mut self) -> Check {
        let log = self.log()?.clone();
        match log.checkpoint() {
            Ok(()) => {
                self.event("checkpoint -> ok".to_owned());
                Ok(())
            }
            Err(error) => {
                self.event(format!("checkpoint -> {error}"));
                self.expect_explained("checkpoint", &error)
            }
        }
    }

    fn maintain(&mut self) -> Check {
        let log = self.log()?.clone();
        match log.maintain() {
            Ok(()) => {
                self.event("maintain -> ok".to_owned());
                Ok(())
            }
            Err(error) => {
                self.event(format!("maintain -> {error}"));
                self.expect_explained("maintain", &error)
            }
        }
    }

    fn advance_clock(&mut self) {
        let delta_ms = if self.rng.chance(100_000) {
            self.config.wal_age_ms_max + self.rng.below(1_000) as i64
        } else {
            self.rng.below(60) as i64
        };
        self.clock.advance(delta_ms);
        self.event(format!("clock +{delta_ms} ms"));
    }

    fn toggle_full_disk(&mut self) {
        if !self.full_disk_episodes {
            return;
        }
        if self.disk.capacity().is_some() {
            self.disk.set_capacity(None);
            self.event("disk has space again".to_owned());
        } else {
            let capacity = self.disk.used_bytes() + self.rng.below(4_000);
            self.disk.set_capacity(Some(capacity));
            self.event(format!("disk full at {capacity} bytes"));
        }
    }

    fn arm_crash(&mut self) {
        let n_calls = self.rng.range(1, 60);
        self.disk.crash_after_calls(n_calls);
        self.event(format!("power loss armed in {n_calls} storage calls"));
    }

    // -----------------------------------------------------------------------------------
    // Crashes, reopens and full verification

    fn open(&mut self) -> Check {
        for attempt in 0..OPEN_ATTEMPTS_MAX {
            let last_chances = attempt + 3 >= OPEN_ATTEMPTS_MAX;
            if last_chances {
                // With the faults gone and space back, recovery must succeed.
                self.disk.pause_faults(true);
                self.disk.set_capacity(None);
                self.disk.crash_after_calls(0);
                self.disk.undo_flips_at_rest();
            } else if attempt == 0 && self.rng.chance(150_000) {
                let n_calls = self.rng.range(1, 80);
                self.disk.crash_after_calls(n_calls);
                self.event(format!(
                    "power loss armed in {n_calls} calls, during recovery"
                ));
            }
            let epoch = self.disk.epoch();
            let stats = self.disk.stats();
            let result = Log::open_with_storage(
                self.config.clone(),
                self.clock.clone(),
                self.disk.storage(),
            );
            match result {
                Ok(log) => {
                    self.disk.pause_faults(false);
                    if self.disk.epoch() != epoch {
                        // The armed crash fired on the very last call and open still said
                        // yes? Then it must not have needed that call.
                        drop(log);
                        continue;
                    }
                    self.disk.crash_after_calls(0);
                    self.event(format!("open -> ok (attempt {attempt})"));
                    self.log = Some(log);
                    self.log_epoch = epoch;
                    self.stats_at_open = stats;
                    self.report.n_reopens += 1;
                    // Recovery settled every uncertain create and delete durably.
                    self.settle = true;
                    let result = self.verify_all();
                    self.settle = false;
                    return result;
                }
                Err(error) => {
                    self.event(format!("open -> {error}"));
                    if last_chances && attempt + 1 == OPEN_ATTEMPTS_MAX {
                        return Err(format!("recovery fails without faults: {error:?}"));
                    }
                    let crashed = self.disk.epoch() != epoch;
                    let explained = crashed
                        || match &error {
                            LogError::Corrupt { .. } => {
                                self.report.n_corrupt_detected += 1;
                                self.disk.n_flips_at_rest() > 0 || self.faults.read_flip > 0
                            }
                            LogError::StorageFull { .. } => self.disk.capacity().is_some(),
                            LogError::Io { .. } | LogError::Poisoned => {
                                self.faults != Faults::default()
                            }
                            _ => false,
                        };
                    if !explained {
                        return Err(format!("open failed unexplained: {error:?}"));
                    }
                    if matches!(error, LogError::Corrupt { .. }) && self.disk.n_flips_at_rest() > 0
                    {
                        // Detected: repair it as an operator would from a good copy.
                        self.disk.undo_flips_at_rest();
                    }
                    if matches!(error, LogError::StorageFull { .. }) {
                        self.disk.set_capacity(None);
                    }
                    // The failed process exits.
                    if !crashed {
                        self.disk.crash(Crash::ProcessCrash);
                    }
                }
            }
        }
        Err("open never succeeded".to_owned())
    }

    /// Ends the current process life (`None`: a clean shutdown, which may fail under
    /// faults), maybe decays a bit at rest, and opens again.
    fn reopen(&mut self, crash: Option<Crash>) -> Check {
        self.event(format!("reopen after {crash:?}"));
        match crash {
            None if !self.crashed() => {
                if let Some(log) = self.log.take() {
                    match log.shutdown() {
                        Ok(()) => self.event("shutdown -> ok".to_owned()),
                        Err(error) => {
                            self.event(format!("shutdown -> {error}"));
                            self.expect_explained("shutdown", &error)?;
                        }
                    }
                }
                self.disk.crash(Crash::ProcessCrash);
            }
            Some(crash) if !self.crashed() => self.disk.crash(crash),
            None | Some(_) => {}
        }
        self.log = None;
        self.disk.crash_after_calls(0);
        // A flip lives one process life: what it hid is checked again after the repair.
        self.disk.undo_flips_at_rest();
        if self.flips_at_rest && self.rng.chance(400_000) {
            self.flip_a_bit_at_rest();
        }
        self.open()
    }

    /// Decays one durable bit: anywhere in a segment, index or checkpoint; in a WAL segment
    /// only before the start of its last synced write (a flip in the last acknowledged group
    /// commit, when nothing durable follows it, is indistinguishable from a torn write of
    /// it; see the log's recovery docs).
    fn flip_a_bit_at_rest(&mut self) {
        let files: Vec<(PathBuf, u64)> = self
            .disk
            .durable_files()
            .into_iter()
            .filter_map(|file| {
                let name = file.path.file_name()?.to_str()?.to_owned();
                if name == "lock" || name.ends_with(".tmp") {
                    return None;
                }
                let flippable = if name.ends_with(".wal") {
                    file.last_synced_write_position
                        .unwrap_or(0)
                        .min(file.durable_size_bytes)
                } else {
                    file.durable_size_bytes
                };
                (flippable > 0).then_some((file.path, flippable))
            })
            .collect();
        let idx = self.rng.below(files.len() as u64) as usize;
        let Some((path, flippable)) = files.get(idx).cloned() else {
            return;
        };
        let position = self.rng.below(flippable);
        let bit = self.rng.below(8) as u8;
        if self.disk.flip_at_rest(&path, position, bit) {
            self.event(format!(
                "flip at rest: {} byte {position} bit {bit}",
                path.display()
            ));
        }
    }

    /// Removes the faults' excuses (faults paused, space back, armed crash off) and checks
    /// that the log does its deferred work, takes writes again, and holds everything.
    fn quiesce_and_verify(&mut self) -> Check {
        if self.crashed() {
            self.reopen(None)?;
        }
        self.disk.pause_faults(true);
        self.disk.set_capacity(None);
        self.disk.crash_after_calls(0);
        let result = self.quiesced_checks();
        self.disk.pause_faults(false);
        result
    }

    fn quiesced_checks(&mut self) -> Check {
        let log = self.log()?.clone();
        match log.maintain() {
            Ok(()) => {}
            Err(LogError::Poisoned) if self.explains(&LogError::Poisoned) => {
                self.event("quiesce: poisoned; reopening".to_owned());
                self.disk.pause_faults(false);
                self.reopen(Some(Crash::ProcessCrash))?;
                self.disk.pause_faults(true);
                return self.quiesced_checks();
            }
            Err(error) => {
                return Err(format!(
                    "with space back and no faults, deferred work still fails: {error:?}"
                ));
            }
        }
        // Writes resume.
        if let Some(log_id) = self
            .logs
            .iter()
            .find(|(_, model)| model.status == Status::Live)
            .map(|(log_id, _)| *log_id)
        {
            let payload = self.payload(log_id);
            let records = vec![AppendRecord { log_id, payload }];
            let result = self.runtime.block_on(log.append(records.clone()));
            if let Err(error) = &result {
                return Err(format!(
                    "with space back and no faults, an append fails: {error:?}"
                ));
            }
            self.check_append(&records, result)?;
        }
        self.verify_all()
    }

    /// Reads every log whole and checks it against the model.
    fn verify_all(&mut self) -> Check {
        self.disk.pause_faults(true);
        let result = self.verify_all_quietly();
        self.disk.pause_faults(false);
        result
    }

    fn verify_all_quietly(&mut self) -> Check {
        self.report.n_verifies += 1;
        let log = self.log()?.clone();
        let live: BTreeSet<LogId> = log.log_ids().into_iter().collect();
        for log_id in &live {
            if self.deleted.contains(log_id) {
                return Err(format!("deleted log {log_id} came back"));
            }
            if !self.logs.contains_key(log_id) {
                return Err(format!("log {log_id} exists but was never created"));
            }
        }
        let ids: Vec<LogId> = self.logs.keys().copied().collect();
        for log_id in ids {
            let present = live.contains(&log_id);
            let status = self.logs.get(&log_id).map(|m| m.status);
            match (status, present) {
                (Some(Status::Live), false) => {
                    return Err(format!("created log {log_id} is gone"));
                }
                (Some(Status::MaybeLive), false) if self.settle => {
                    self.logs.remove(&log_id);
                    continue;
                }
                (Some(Status::MaybeDeleted), false) if self.settle => {
                    self.logs.remove(&log_id);
                    self.deleted.insert(log_id);
                    continue;
                }
                (Some(Status::MaybeLive | Status::MaybeDeleted), false) => continue,
                (Some(Status::MaybeLive | Status::MaybeDeleted), true) if self.settle => {
                    if let Some(model) = self.logs.get_mut(&log_id) {
                        model.status = Status::Live;
                    }
                }
                _ => {}
            }
            self.verify_log(&log, log_id)?;
        }
        self.event(format!("verified {} logs", live.len()));
        Ok(())
    }

    fn verify_log(&mut self, log: &Log, log_id: LogId) -> Check {
        let bounds = log
            .bounds(log_id)
            .map_err(|error| format!("bounds of {log_id}: {error:?}"))?;
        let Some(model) = self.logs.get(&log_id) else {
            return Ok(());
        };
        let end_min = model.end_min;
        let known_end = model
            .known
            .keys()
            .next_back()
            .map_or(0, |offset| offset + 1);
        if bounds.end_offset < end_min.max(known_end) && !self.acked_may_wait {
            return Err(format!(
                "log {log_id}: end {} but acknowledged or served records reach {}",
                bounds.end_offset,
                end_min.max(known_end)
            ));
        }
        if bounds.start_offset > bounds.end_offset {
            return Err(format!("log {log_id}: start after end: {bounds:?}"));
        }
        if let Some((offset, (timestamp_ms, _))) = model
            .known
            .range(..bounds.start_offset)
            .find(|(_, (timestamp_ms, _))| *timestamp_ms >= model.trim_horizon_ms)
        {
            return Err(format!(
                "log {log_id}: record {offset} at {timestamp_ms} lost below start {} (trims \
                 only reached {})",
                bounds.start_offset, model.trim_horizon_ms
            ));
        }
        let mut next = bounds.start_offset;
        while next < bounds.end_offset {
            match log.read(log_id, next, 64, 1 << 20) {
                Ok(result) => {
                    let Some(first) = result.records.first() else {
                        return Err(format!("log {log_id}: nothing at {next} below the end"));
                    };
                    if first.offset != next {
                        return Err(format!("log {log_id}: asked {next}, got {}", first.offset));
                    }
                    for (idx, record) in result.records.iter().enumerate() {
                        if record.offset != next + idx as u64 {
                            return Err(format!("log {log_id}: hole after {}", record.offset));
                        }
                    }
                    next += result.records.len() as u64;
                    self.check_served(log_id, &result.records)?;
                }
                Err(LogError::Corrupt { .. }) if self.disk.n_flips_at_rest() > 0 => {
                    // Reported, not served: checked again once the flip is repaired.
                    self.report.n_corrupt_detected += 1;
                    self.event(format!("verify {log_id}: corrupt at {next}, reported"));
                    next += 1;
                }
                Err(error) => return Err(format!("log {log_id}: read at {next}: {error:?}")),
            }
        }
        Ok(())
    }
}
