//! `get-drain`: how fast a backlog can be read back with GetRecords.
//!
//! Preload: PutRecords (500 per call, N connections) until `--records` are written or
//! `--preload-timeout` passes (slow peers get a smaller backlog; the report says how big),
//! counting how many records each shard got. Drain: one task per shard, each with its own
//! connection and a TRIM_HORIZON iterator, calls GetRecords with `--limit` until it has read
//! every record its shard got. The rate is all records read over the time from the first
//! call to the last answer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::put_records::PutRecordsOp;
use super::{ACTIVE_TIMEOUT, Op, Outcome, Plan, drive};
use crate::api::{body, response, scan};
use crate::latency::now_ns;
use crate::report::{Report, Tally};
use crate::setup::{self, Ctx};

/// Empty answers in a row (with nothing behind) after which a shard counts as drained even
/// if fewer records came back than were written.
const EMPTY_READS_MAX: u32 = 3;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[arg(long, default_value_t = 4)]
    pub shards: u32,
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Records to preload (the backlog).
    #[arg(long, default_value_t = 200_000)]
    pub records: u64,
    /// Connections used to preload.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// GetRecords Limit.
    #[arg(long, default_value_t = 10_000)]
    pub limit: u32,
    /// Stop preloading after this many seconds, whatever the backlog.
    #[arg(long, default_value_t = 60.0)]
    pub preload_timeout: f64,
    /// Stop draining after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    pub drain_timeout: f64,
}

/// PutRecords that also counts, from each response, how many records went to each shard.
struct PreloadOp(PutRecordsOp);

impl Op for PreloadOp {
    type State = (usize, HashMap<String, u64>);

    fn operation(&self) -> &'static str {
        "PutRecords"
    }

    fn state(&self, worker_idx: usize) -> Self::State {
        (worker_idx, HashMap::new())
    }

    fn request(&self, state: &mut Self::State, start_ns: u64) -> Bytes {
        self.0.request(&mut state.0, start_ns)
    }

    fn outcome(&self, state: &mut Self::State, response: &Bytes) -> Outcome {
        let mut outcome = Outcome::default();
        if let Ok(parsed) = serde_json::from_slice::<response::PutRecordsResult>(response) {
            for entry in parsed.records {
                match (entry.shard_id, entry.error_code) {
                    (Some(shard_id), None) => {
                        *state.1.entry(shard_id).or_default() += 1;
                        outcome.records += 1;
                        outcome.bytes += self.0.record_size;
                    }
                    _ => outcome.failed_records += 1,
                }
            }
        }
        outcome
    }
}

pub async fn run(ctx: &Ctx, args: &Args, report: &mut Report) -> anyhow::Result<()> {
    report.parameter("shards", args.shards);
    report.parameter("record_size", args.record_size);
    report.parameter("records", args.records);
    report.parameter("limit", args.limit);
    let mut connection = ctx.connection();
    let stream = ctx
        .create_stream(&mut connection, "get-drain", args.shards, ACTIVE_TIMEOUT)
        .await?;

    // Preload.
    let batch_size = 500usize;
    let op = Arc::new(PreloadOp(PutRecordsOp::new(
        &stream,
        batch_size,
        args.record_size,
        args.connections * 2,
    )));
    let mut plan = Plan::closed(
        args.connections,
        Duration::ZERO,
        Duration::from_secs_f64(args.preload_timeout),
    );
    plan.calls_max = Some(args.records.div_ceil(batch_size as u64));
    let preload_started = now_ns();
    let (preload, states) = drive(ctx, op, plan).await;
    let mut per_shard: HashMap<String, u64> = HashMap::new();
    for (_, counts) in states {
        for (shard, n) in counts {
            *per_shard.entry(shard).or_default() += n;
        }
    }
    let backlog: u64 = per_shard.values().sum();
    report.parameter("backlog_records", backlog);
    report.note(format!(
        "preloaded {backlog} records in {:.1} s ({} failed, errors {:?})",
        (now_ns() - preload_started) as f64 / 1e9,
        preload.failed_records,
        preload.errors
    ));
    if backlog < args.records {
        report.note(format!(
            "backlog smaller than the {} asked for: preload stopped after {} s",
            args.records, args.preload_timeout
        ));
    }

    // Drain: iterators first, so the timed part is GetRecords only.
    let shards = setup::open_shards(&mut connection, &stream).await?;
    let mut iterators = Vec::new();
    for shard in &shards {
        let iterator =
            setup::shard_iterator(&mut connection, &stream, &shard.shard_id, "TRIM_HORIZON")
                .await?;
        let expected = per_shard.get(&shard.shard_id).copied().unwrap_or(0);
        iterators.push((iterator, expected));
    }
    let cpu_at_start = ctx.server_cpu_s();
    let started_ns = now_ns();
    let deadline_ns = started_ns + Duration::from_secs_f64(args.drain_timeout).as_nanos() as u64;
    let mut tasks = tokio::task::JoinSet::new();
    for (iterator, expected) in iterators {
        let mut connection = ctx.connection();
        let limit = args.limit;
        let record_size = args.record_size as u64;
        tasks.spawn(async move {
            let mut tally = Tally::default();
            let mut iterator = Some(iterator);
            let mut read = 0u64;
            let mut empty_reads = 0u32;
            while let Some(current) = iterator.take() {
                if read >= expected || now_ns() > deadline_ns {
                    break;
                }
                let sent_ns = now_ns();
                let result = connection
                    .call("GetRecords", body::get_records(&current, limit))
                    .await;
                let done_ns = now_ns();
                match result {
                    Ok(response) => {
                        let n = scan::count_sequence_numbers(&response);
                        tally.calls += 1;
                        tally.records += n;
                        tally.bytes += n * record_size;
                        tally.latencies.record_ns(done_ns - sent_ns);
                        tally.last_ns = done_ns;
                        read += n;
                        let behind = scan::number_member(&response, "MillisBehindLatest");
                        empty_reads = if n == 0 { empty_reads + 1 } else { 0 };
                        if empty_reads >= EMPTY_READS_MAX && behind.unwrap_or(0) == 0 {
                            break;
                        }
                        iterator =
                            scan::string_member(&response, "NextShardIterator").map(str::to_owned);
                    }
                    Err(error) => {
                        tally.error(error.label());
                        // Retry the same iterator (throttling, a dropped connection).
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        iterator = Some(current);
                    }
                }
            }
            (tally, read < expected)
        });
    }
    let mut total = Tally::default();
    let mut short_shards = 0;
    while let Some(joined) = tasks.join_next().await {
        if let Ok((tally, short)) = joined {
            total.merge(&tally);
            short_shards += usize::from(short);
        }
    }
    if let (Some(start), Some(end)) = (cpu_at_start, ctx.server_cpu_s()) {
        total.server_cpu_s = Some(end - start);
    }
    if short_shards > 0 {
        report.note(format!(
            "{short_shards} shard(s) returned fewer records than were written"
        ));
    }
    let elapsed_s = total.last_ns.saturating_sub(started_ns) as f64 / 1e9;
    report.measurements.push(total.measurement(
        "GetRecords drain",
        "actual send (closed loop)",
        elapsed_s,
    ));
    Ok(())
}
