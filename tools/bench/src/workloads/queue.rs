//! `queue`: receive-and-acknowledge throughput of a stream queue with many workers (the
//! 2026 queue API: CreateQueue, ReceiveQueueRecords, AcknowledgeQueueRecords).
//!
//! Preload: PutRecords (500 per call) of `--records` records into an on-demand stream
//! (`--shards` shards, created provisioned and switched) with a queue on it (starting at
//! TRIM_HORIZON). Drain: `--workers` tasks, each with its own connection,
//! loop ReceiveQueueRecords (`--limit`, at most 10) then AcknowledgeQueueRecords with the
//! receipt handles they got, until every record was acknowledged or `--timeout` passed.
//! The rate is acknowledged records over the time from the first receive to the last
//! acknowledgement; latency is per receive-plus-acknowledge round (two calls). Records
//! received twice (a visibility timeout running out) are counted and reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::{Value, json};

use super::put_records::PutRecordsOp;
use super::{ACTIVE_TIMEOUT, Plan, drive};
use crate::api::Connection;
use crate::latency::now_ns;
use crate::report::{Report, Tally};
use crate::setup::Ctx;

/// How often the queue's status is polled while it is CREATING.
const QUEUE_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Empty receives in a row after which a worker checks whether everything is acknowledged.
const EMPTY_RECEIVES_PAUSE: Duration = Duration::from_millis(5);

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[arg(long, default_value_t = 4)]
    pub shards: u32,
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Records to preload and then receive and acknowledge.
    #[arg(long, default_value_t = 50_000)]
    pub records: u64,
    /// Competing workers (one connection each).
    #[arg(long, default_value_t = 32)]
    pub workers: usize,
    /// ReceiveQueueRecords Limit (1-10).
    #[arg(long, default_value_t = 10)]
    pub limit: u32,
    /// VisibilityTimeoutSeconds of each receive.
    #[arg(long, default_value_t = 60)]
    pub visibility_timeout: u32,
    /// Stop preloading after this many seconds, whatever the backlog.
    #[arg(long, default_value_t = 60.0)]
    pub preload_timeout: f64,
    /// Stop draining after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
}

fn to_bytes(value: &Value) -> Bytes {
    Bytes::from(value.to_string())
}

async fn call_value(
    connection: &mut Connection,
    operation: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let bytes = connection
        .call(operation, to_bytes(&body))
        .await
        .map_err(|e| anyhow::anyhow!("{operation}: {e}"))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{operation}: unparseable answer"))
}

async fn create_queue(
    connection: &mut Connection,
    name: &str,
    stream_arn: &str,
) -> anyhow::Result<String> {
    let created = call_value(
        connection,
        "CreateQueue",
        json!({
            "QueueName": name,
            "StreamConfigurationList": [
                {"StreamARN": stream_arn, "StartingPosition": {"Type": "TRIM_HORIZON"}}
            ],
        }),
    )
    .await?;
    let arn = created["QueueDescription"]["QueueARN"]
        .as_str()
        .context("CreateQueue answered without QueueDescription.QueueARN")?
        .to_owned();
    let deadline = now_ns() + ACTIVE_TIMEOUT.as_nanos() as u64;
    loop {
        let described = call_value(connection, "DescribeQueue", json!({"QueueARN": arn})).await?;
        if described["QueueDescription"]["QueueStatus"] == "ACTIVE" {
            return Ok(arn);
        }
        if now_ns() > deadline {
            bail!("queue {arn} not ACTIVE after {ACTIVE_TIMEOUT:?}");
        }
        tokio::time::sleep(QUEUE_POLL_INTERVAL).await;
    }
}

pub async fn run(ctx: &Ctx, args: &Args, report: &mut Report) -> anyhow::Result<()> {
    if !(1..=10).contains(&args.limit) {
        bail!("--limit must be between 1 and 10");
    }
    report.parameter("shards", args.shards);
    report.parameter("record_size", args.record_size);
    report.parameter("records", args.records);
    report.parameter("workers", args.workers);
    report.parameter("limit", args.limit);
    let mut connection = ctx.connection();
    let stream = ctx
        .create_stream(&mut connection, "queue", args.shards, ACTIVE_TIMEOUT)
        .await?;
    let summary = call_value(
        &mut connection,
        "DescribeStreamSummary",
        json!({"StreamName": stream}),
    )
    .await?;
    let stream_arn = summary["StreamDescriptionSummary"]["StreamARN"]
        .as_str()
        .context("DescribeStreamSummary answered without StreamARN")?
        .to_owned();
    // Queues need an on-demand stream: switch the stream (keeping its shards) and wait.
    connection
        .call(
            "UpdateStreamMode",
            to_bytes(
                &json!({"StreamARN": stream_arn, "StreamModeDetails": {"StreamMode": "ON_DEMAND"}}),
            ),
        )
        .await
        .map_err(|e| anyhow::anyhow!("UpdateStreamMode: {e}"))?;
    crate::setup::wait_active(&mut connection, &stream, ACTIVE_TIMEOUT).await?;
    let queue_arn = create_queue(&mut connection, &format!("{stream}-q"), &stream_arn).await?;

    // Preload.
    let batch_size = 500usize;
    let op = Arc::new(PutRecordsOp::new(&stream, batch_size, args.record_size, 64));
    let mut plan = Plan::closed(
        8,
        Duration::ZERO,
        Duration::from_secs_f64(args.preload_timeout),
    );
    plan.calls_max = Some(args.records.div_ceil(batch_size as u64));
    let (preload, _) = drive(ctx, op, plan).await;
    let backlog = preload.records;
    report.parameter("backlog_records", backlog);
    if preload.failed_records > 0 || !preload.errors.is_empty() {
        report.note(format!(
            "preload: {} records failed, errors {:?}",
            preload.failed_records, preload.errors
        ));
    }

    // Drain with competing workers.
    let acknowledged = Arc::new(AtomicU64::new(0));
    let cpu_at_start = ctx.server_cpu_s();
    let started_ns = now_ns();
    let deadline_ns = started_ns + Duration::from_secs_f64(args.timeout).as_nanos() as u64;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.workers.max(1) {
        let mut connection = ctx.connection();
        let acknowledged = acknowledged.clone();
        let queue_arn = queue_arn.clone();
        let (limit, visibility, record_size) =
            (args.limit, args.visibility_timeout, args.record_size as u64);
        tasks.spawn(async move {
            let mut tally = Tally::default();
            let mut redelivered = 0u64;
            while acknowledged.load(Ordering::Relaxed) < backlog && now_ns() < deadline_ns {
                let sent_ns = now_ns();
                let received = connection
                    .call(
                        "ReceiveQueueRecords",
                        to_bytes(&json!({
                            "QueueARN": queue_arn,
                            "Limit": limit,
                            "VisibilityTimeoutSeconds": visibility,
                        })),
                    )
                    .await;
                let received: Value = match received {
                    Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    Err(error) => {
                        tally.error(error.label());
                        tokio::time::sleep(EMPTY_RECEIVES_PAUSE).await;
                        continue;
                    }
                };
                let handles: Vec<Value> = received["QueueRecords"]
                    .as_array()
                    .map(|records| {
                        records
                            .iter()
                            .filter_map(|r| {
                                if r["ReceiveCount"].as_u64().unwrap_or(1) > 1 {
                                    redelivered += 1;
                                }
                                r["ReceiptHandle"]
                                    .as_str()
                                    .map(|h| json!({"ReceiptHandle": h}))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if handles.is_empty() {
                    tokio::time::sleep(EMPTY_RECEIVES_PAUSE).await;
                    continue;
                }
                let n = handles.len() as u64;
                let acked = connection
                    .call(
                        "AcknowledgeQueueRecords",
                        to_bytes(&json!({"QueueARN": queue_arn, "Entries": handles})),
                    )
                    .await;
                let done_ns = now_ns();
                match acked {
                    Ok(bytes) => {
                        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                        let failed = answer["Failed"].as_array().map_or(0, Vec::len) as u64;
                        let ok = n.saturating_sub(failed);
                        acknowledged.fetch_add(ok, Ordering::Relaxed);
                        tally.calls += 1;
                        tally.records += ok;
                        tally.failed_records += failed;
                        tally.bytes += ok * record_size;
                        tally.latencies.record_ns(done_ns - sent_ns);
                        tally.last_ns = done_ns;
                    }
                    Err(error) => tally.error(error.label()),
                }
            }
            (tally, redelivered)
        });
    }
    let mut total = Tally::default();
    let mut redelivered = 0u64;
    while let Some(joined) = tasks.join_next().await {
        if let Ok((tally, again)) = joined {
            total.merge(&tally);
            redelivered += again;
        }
    }
    if let (Some(start), Some(end)) = (cpu_at_start, ctx.server_cpu_s()) {
        total.server_cpu_s = Some(end - start);
    }
    let done = acknowledged.load(Ordering::Relaxed);
    if done < backlog {
        report.note(format!(
            "only {done} of {backlog} records acknowledged before the {} s timeout",
            args.timeout
        ));
    }
    if redelivered > 0 {
        report.note(format!(
            "{redelivered} records were received more than once"
        ));
    }
    let elapsed_s = total.last_ns.saturating_sub(started_ns) as f64 / 1e9;
    report.measurements.push(total.measurement(
        "receive + acknowledge",
        "receive sent to acknowledge answered (closed loop)",
        elapsed_s,
    ));
    if let Err(error) = connection
        .call("DeleteQueue", to_bytes(&json!({"QueueARN": queue_arn})))
        .await
    {
        report.note(format!("cleanup: DeleteQueue: {error}"));
    }
    Ok(())
}
