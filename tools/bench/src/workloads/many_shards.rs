//! `many-shards`: does the per-request cost change with the number of open shards?
//!
//! First a 1-shard stream is measured as the baseline. Then streams of up to
//! `--shards-per-stream` shards are created until the open shards total each of `--steps`
//! (1,000 then 10,000 by default; start Millrace with `--shard-limit 20000`), every new
//! shard gets `--records-per-shard` records (PutRecords with each shard's starting hash key
//! as ExplicitHashKey), and at each step two closed loops are measured:
//! - GetRecords (Limit 100) on TRIM_HORIZON iterators of up to `--sample-shards` random
//!   shards, each connection cycling through its share of them (first, so the shards hold
//!   only the few fill records, not what the PutRecord loop adds);
//! - PutRecord of one small record to a random stream with a random partition key.
//!
//! Comparing a step's rows with the baseline's shows the cost of the shards.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;

use super::put_record::PutRecordOp;
use super::{ACTIVE_TIMEOUT, Op, Outcome, Plan, Timing, drive};
use crate::api::{body, scan};
use crate::latency::now_ns;
use crate::report::Report;
use crate::setup::{self, Ctx, Rng};

const FILL_BATCH_SIZE: usize = 500;
const GET_LIMIT: u32 = 100;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Open-shard totals to measure at, in increasing order.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub steps: Vec<u32>,
    /// Shards per stream created.
    #[arg(long, default_value_t = 1000)]
    pub shards_per_stream: u32,
    /// Records written to every shard.
    #[arg(long, default_value_t = 3)]
    pub records_per_shard: u32,
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Shards whose iterators the GetRecords loop cycles through.
    #[arg(long, default_value_t = 1000)]
    pub sample_shards: usize,
    /// Seconds allowed to create and fill the streams of one step.
    #[arg(long, default_value_t = 300.0)]
    pub setup_timeout: f64,
    #[command(flatten)]
    pub timing: Timing,
}

/// Sends each of a fixed list of bodies once (the fill).
struct FillOp {
    bodies: Vec<Bytes>,
    next: AtomicUsize,
    records_per_body: Vec<u64>,
}

impl Op for FillOp {
    type State = usize;

    fn operation(&self) -> &'static str {
        "PutRecords"
    }

    fn state(&self, _worker_idx: usize) -> usize {
        0
    }

    fn request(&self, current: &mut usize, _start_ns: u64) -> Bytes {
        *current = self.next.fetch_add(1, Ordering::Relaxed) % self.bodies.len().max(1);
        self.bodies.get(*current).cloned().unwrap_or_default()
    }

    fn outcome(&self, current: &mut usize, response: &Bytes) -> Outcome {
        let sent = self.records_per_body.get(*current).copied().unwrap_or(0);
        let failed = scan::number_member(response, "FailedRecordCount")
            .unwrap_or(0)
            .min(sent);
        Outcome {
            records: sent - failed,
            bytes: 0,
            failed_records: failed,
        }
    }
}

/// GetRecords over a set of iterators, each connection cycling through its share.
struct GetRecordsOp {
    iterators: Vec<String>,
    connections: usize,
}

impl Op for GetRecordsOp {
    type State = (Vec<String>, usize);

    fn operation(&self) -> &'static str {
        "GetRecords"
    }

    fn state(&self, worker_idx: usize) -> Self::State {
        let mine = self
            .iterators
            .iter()
            .skip(worker_idx)
            .step_by(self.connections.max(1))
            .cloned()
            .collect();
        (mine, 0)
    }

    fn request(&self, (iterators, cursor): &mut Self::State, _start_ns: u64) -> Bytes {
        match iterators.get(*cursor % iterators.len().max(1)) {
            Some(iterator) => body::get_records(iterator, GET_LIMIT),
            None => Bytes::new(),
        }
    }

    fn outcome(&self, (iterators, cursor): &mut Self::State, response: &Bytes) -> Outcome {
        let at = *cursor % iterators.len().max(1);
        if let (Some(slot), Some(next)) = (
            iterators.get_mut(at),
            scan::string_member(response, "NextShardIterator"),
        ) {
            *slot = next.to_owned();
        }
        *cursor += 1;
        Outcome {
            records: scan::count_sequence_numbers(response),
            bytes: 0,
            failed_records: 0,
        }
    }
}

pub async fn run(ctx: &Ctx, args: &Args, report: &mut Report) -> anyhow::Result<()> {
    report.parameter("steps", &args.steps);
    report.parameter("shards_per_stream", args.shards_per_stream);
    report.parameter("records_per_shard", args.records_per_shard);
    report.parameter("connections", args.connections);
    report.parameter("sample_shards", args.sample_shards);
    report.parameter("duration_s", args.timing.duration);
    let setup_timeout = Duration::from_secs_f64(args.setup_timeout);
    let mut connection = ctx.connection();
    let mut rng = Rng::new(0x5ca1e);

    // Baseline: one stream of one shard.
    let base = ctx
        .create_stream(&mut connection, "base", 1, ACTIVE_TIMEOUT)
        .await?;
    let base_shards = fill(ctx, args, &mut connection, &base).await?;
    measure(
        ctx,
        args,
        report,
        "1 shard",
        &[base],
        &base_shards,
        &mut rng,
    )
    .await?;

    let mut streams: Vec<String> = Vec::new();
    let mut shards: Vec<(String, String)> = Vec::new();
    for &step in &args.steps {
        let started_ns = now_ns();
        let before = shards.len();
        while (shards.len() as u32) < step {
            let remaining = step - shards.len() as u32;
            let count = remaining.min(args.shards_per_stream.max(1));
            let tag = format!("many-{}", streams.len());
            let stream = ctx
                .create_stream(&mut connection, &tag, count, setup_timeout)
                .await
                .with_context(|| format!("creating the streams of the {step}-shard step"))?;
            shards.extend(fill(ctx, args, &mut connection, &stream).await?);
            streams.push(stream);
            if now_ns() - started_ns > setup_timeout.as_nanos() as u64 {
                anyhow::bail!(
                    "setting up {step} shards took longer than {setup_timeout:?} ({} so far)",
                    shards.len()
                );
            }
        }
        report.note(format!(
            "{step} shards: created and filled {} shards in {} streams in {:.1} s",
            shards.len() - before,
            streams.len(),
            (now_ns() - started_ns) as f64 / 1e9
        ));
        let label = format!("{step} shards");
        measure(ctx, args, report, &label, &streams, &shards, &mut rng).await?;
    }
    Ok(())
}

/// Write `records_per_shard` records to every open shard of `stream`; returns its shards.
async fn fill(
    ctx: &Ctx,
    args: &Args,
    connection: &mut crate::api::Connection,
    stream: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let shards = setup::open_shards(connection, stream).await?;
    let data = body::base64(&vec![b'f'; args.record_size]);
    let mut keys = Vec::new();
    for shard in &shards {
        for n in 0..args.records_per_shard {
            keys.push((
                format!("fill-{n}"),
                shard.hash_key_range.starting_hash_key.clone(),
            ));
        }
    }
    let mut bodies = Vec::new();
    let mut records_per_body = Vec::new();
    for chunk in keys.chunks(FILL_BATCH_SIZE) {
        let entries: Vec<body::Entry<'_>> = chunk
            .iter()
            .map(|(key, hash)| body::Entry {
                data: data.clone(),
                partition_key: key,
                explicit_hash_key: Some(hash),
            })
            .collect();
        bodies.push(body::put_records(stream, &entries));
        records_per_body.push(chunk.len() as u64);
    }
    let calls = bodies.len() as u64;
    let op = Arc::new(FillOp {
        bodies,
        next: AtomicUsize::new(0),
        records_per_body,
    });
    let mut plan = Plan::closed(args.connections, Duration::ZERO, Duration::from_secs(3600));
    plan.calls_max = Some(calls);
    let (tally, _) = drive(ctx, op, plan).await;
    if !tally.errors.is_empty() || tally.failed_records > 0 {
        anyhow::bail!(
            "filling {stream}: errors {:?}, {} failed records",
            tally.errors,
            tally.failed_records
        );
    }
    Ok(shards
        .into_iter()
        .map(|s| (stream.to_owned(), s.shard_id))
        .collect())
}

async fn measure(
    ctx: &Ctx,
    args: &Args,
    report: &mut Report,
    label: &str,
    streams: &[String],
    shards: &[(String, String)],
    rng: &mut Rng,
) -> anyhow::Result<()> {
    // Iterators on a random sample of shards, at least one per connection.
    let n_iterators = args.sample_shards.min(shards.len()).max(args.connections);
    let mut connection = ctx.connection();
    let mut iterators = Vec::with_capacity(n_iterators);
    for _ in 0..n_iterators {
        let (stream, shard_id) = &shards[rng.below(shards.len() as u64) as usize];
        iterators
            .push(setup::shard_iterator(&mut connection, stream, shard_id, "TRIM_HORIZON").await?);
    }
    let get = Arc::new(GetRecordsOp {
        iterators,
        connections: args.connections,
    });
    let plan = Plan::closed(
        args.connections,
        args.timing.warmup(),
        args.timing.duration(),
    );
    let (tally, _) = drive(ctx, get, plan).await;
    report.measurements.push(tally.measurement(
        &format!("GetRecords, {label}"),
        "actual send (closed loop)",
        plan.elapsed_s(&tally),
    ));
    let put = Arc::new(PutRecordOp::new(streams.to_vec(), args.record_size, false));
    let plan = Plan::closed(
        args.connections,
        args.timing.warmup(),
        args.timing.duration(),
    );
    let (tally, _) = drive(ctx, put, plan).await;
    report.measurements.push(tally.measurement(
        &format!("PutRecord, {label}"),
        "actual send (closed loop)",
        plan.elapsed_s(&tally),
    ));

    Ok(())
}
