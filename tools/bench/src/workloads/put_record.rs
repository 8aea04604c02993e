//! `put-record`: single-record PutRecord calls, closed loop on N connections, or open loop
//! at `--rate` calls per second with latency from the intended send time.
//!
//! [`PutRecordOp`] is also the producer of the end-to-end workloads (with timed records) and
//! of many-shards (spread over many streams).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::{ACTIVE_TIMEOUT, Op, Outcome, Plan, Timing, drive};
use crate::api::body;
use crate::report::Report;
use crate::setup::{Ctx, Rng, timed_record};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Shards of the stream written to.
    #[arg(long, default_value_t = 4)]
    pub shards: u32,
    /// Bytes of data per record.
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Concurrent connections, one request in flight on each.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Open loop: this many calls per second in all, latency from the intended send time.
    #[arg(long)]
    pub rate: Option<f64>,
    #[command(flatten)]
    pub timing: Timing,
}

pub struct PutRecordOp {
    pub streams: Vec<String>,
    pub record_size: usize,
    /// Write the send time and a sequence into each record (end-to-end workloads).
    pub timed: bool,
    /// Records acknowledged, warm-up included.
    pub acknowledged: Arc<AtomicU64>,
}

impl PutRecordOp {
    pub fn new(streams: Vec<String>, record_size: usize, timed: bool) -> PutRecordOp {
        PutRecordOp {
            streams,
            record_size,
            timed,
            acknowledged: Arc::new(AtomicU64::new(0)),
        }
    }
}

pub struct PutRecordState {
    rng: Rng,
    seq: u64,
    data: Vec<u8>,
}

impl Op for PutRecordOp {
    type State = PutRecordState;

    fn operation(&self) -> &'static str {
        "PutRecord"
    }

    fn state(&self, worker_idx: usize) -> PutRecordState {
        PutRecordState {
            rng: Rng::new(0xbeef + worker_idx as u64),
            seq: (worker_idx as u64) << 40,
            data: vec![b'r'; self.record_size],
        }
    }

    fn request(&self, state: &mut PutRecordState, start_ns: u64) -> Bytes {
        let stream = &self.streams[state.rng.below(self.streams.len() as u64) as usize];
        let key = state.rng.partition_key();
        state.seq += 1;
        if self.timed {
            let data = timed_record(start_ns, state.seq, self.record_size);
            body::put_record(stream, &key, &data)
        } else {
            body::put_record(stream, &key, &state.data)
        }
    }

    fn outcome(&self, _state: &mut PutRecordState, _response: &Bytes) -> Outcome {
        self.acknowledged.fetch_add(1, Ordering::Relaxed);
        Outcome {
            records: 1,
            bytes: self.record_size as u64,
            failed_records: 0,
        }
    }
}

pub async fn run(ctx: &Ctx, args: &Args, report: &mut Report) -> anyhow::Result<()> {
    report.parameter("shards", args.shards);
    report.parameter("record_size", args.record_size);
    report.parameter("connections", args.connections);
    report.parameter("duration_s", args.timing.duration);
    report.parameter("warmup_s", args.timing.warmup);
    if let Some(rate) = args.rate {
        report.parameter("rate_per_s", rate);
    }
    let mut connection = ctx.connection();
    let stream = ctx
        .create_stream(&mut connection, "put-record", args.shards, ACTIVE_TIMEOUT)
        .await?;
    let op = Arc::new(PutRecordOp::new(vec![stream], args.record_size, false));
    let mut plan = Plan::closed(
        args.connections,
        args.timing.warmup(),
        args.timing.duration(),
    );
    plan.rate_per_s = args.rate;
    let (tally, _) = drive(ctx, op, plan).await;
    let (name, basis) = match args.rate {
        Some(_) => (
            "PutRecord (open loop)",
            "intended send (open loop, coordinated omission corrected)",
        ),
        None => ("PutRecord", "actual send (closed loop)"),
    };
    report
        .measurements
        .push(tally.measurement(name, basis, plan.elapsed_s(&tally)));
    if let Some(rate) = args.rate {
        let achieved = tally.calls as f64 / plan.elapsed_s(&tally).max(1e-9);
        if achieved < rate * 0.95 {
            report.note(format!(
                "asked for {rate:.0} calls/s, the server sustained {achieved:.0}"
            ));
        }
    }
    Ok(())
}
