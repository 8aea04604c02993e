//! `put-records`: PutRecords throughput, closed loop on N connections.
//!
//! Each connection cycles through a few prebuilt bodies (random partition keys, so records
//! spread over the shards), so the client spends its time sending, not encoding. A call's
//! records count as written unless the response lists them as failed (`FailedRecordCount`).
//! `--max-mib` stops after that much data, for the memory-while-10-GiB run.

use std::sync::Arc;

use bytes::Bytes;

use super::{ACTIVE_TIMEOUT, Op, Outcome, Plan, Timing, drive};
use crate::api::{body, scan};
use crate::report::Report;
use crate::setup::{Ctx, Rng};

/// Distinct bodies per connection (cycled).
const BODIES_PER_CONNECTION: usize = 4;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Shards of the stream written to.
    #[arg(long, default_value_t = 4)]
    pub shards: u32,
    /// Bytes of data per record.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Records per PutRecords call.
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    /// Concurrent connections, one request in flight on each.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Stop after writing this many MiB of record data (the duration still bounds the run).
    #[arg(long)]
    pub max_mib: Option<u64>,
    #[command(flatten)]
    pub timing: Timing,
}

pub struct PutRecordsOp {
    pub bodies: Vec<Bytes>,
    pub batch_size: u64,
    pub record_size: u64,
}

impl PutRecordsOp {
    /// `n_bodies` PutRecords bodies of `batch_size` records for `stream`.
    pub fn new(stream: &str, batch_size: usize, record_size: usize, n_bodies: usize) -> Self {
        let mut rng = Rng::new(0x5eed);
        let data = body::base64(&vec![b'r'; record_size]);
        let bodies = (0..n_bodies.max(1))
            .map(|_| {
                let keys: Vec<String> = (0..batch_size).map(|_| rng.partition_key()).collect();
                let entries: Vec<body::Entry<'_>> = keys
                    .iter()
                    .map(|key| body::Entry {
                        data: data.clone(),
                        partition_key: key,
                        explicit_hash_key: None,
                    })
                    .collect();
                body::put_records(stream, &entries)
            })
            .collect();
        PutRecordsOp {
            bodies,
            batch_size: batch_size as u64,
            record_size: record_size as u64,
        }
    }
}

impl Op for PutRecordsOp {
    type State = usize;

    fn operation(&self) -> &'static str {
        "PutRecords"
    }

    fn state(&self, worker_idx: usize) -> usize {
        worker_idx * BODIES_PER_CONNECTION
    }

    fn request(&self, cursor: &mut usize, _start_ns: u64) -> Bytes {
        *cursor += 1;
        self.bodies[*cursor % self.bodies.len()].clone()
    }

    fn outcome(&self, _cursor: &mut usize, response: &Bytes) -> Outcome {
        let failed = scan::number_member(response, "FailedRecordCount")
            .unwrap_or(0)
            .min(self.batch_size);
        let records = self.batch_size - failed;
        Outcome {
            records,
            bytes: records * self.record_size,
            failed_records: failed,
        }
    }
}

pub async fn run(ctx: &Ctx, args: &Args, report: &mut Report) -> anyhow::Result<()> {
    report.parameter("shards", args.shards);
    report.parameter("record_size", args.record_size);
    report.parameter("batch_size", args.batch_size);
    report.parameter("connections", args.connections);
    report.parameter("duration_s", args.timing.duration);
    report.parameter("warmup_s", args.timing.warmup);
    if let Some(max_mib) = args.max_mib {
        report.parameter("max_mib", max_mib);
    }
    let mut connection = ctx.connection();
    let stream = ctx
        .create_stream(&mut connection, "put-records", args.shards, ACTIVE_TIMEOUT)
        .await?;
    let op = Arc::new(PutRecordsOp::new(
        &stream,
        args.batch_size,
        args.record_size,
        args.connections * BODIES_PER_CONNECTION,
    ));
    let mut plan = Plan::closed(
        args.connections,
        args.timing.warmup(),
        args.timing.duration(),
    );
    if let Some(max_mib) = args.max_mib {
        let bytes_per_call = (args.batch_size * args.record_size).max(1) as u64;
        plan.calls_max = Some((max_mib * 1024 * 1024).div_ceil(bytes_per_call));
    }
    let (tally, _) = drive(ctx, op, plan).await;
    report.measurements.push(tally.measurement(
        "PutRecords",
        "actual send (closed loop)",
        plan.elapsed_s(&tally),
    ));
    Ok(())
}
