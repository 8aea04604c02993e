//! `e2e-poll` and `e2e-subscribe`: how long a record takes from put to consumer.
//!
//! A producer writes single records with PutRecord, open loop at `--rate` records per
//! second; each record carries the time it counts as sent (the intended send time unless
//! the sender was free and only its timer was late, see `latency::Schedule::start_ns`).
//! Consumers start before the producer, at LATEST:
//! - polling: one task per shard calls GetRecords in a loop, at once again when records came
//!   back, after `--poll-backoff-ms` when none did;
//! - subscribe: RegisterStreamConsumer, wait until ACTIVE, SubscribeToShard on every shard,
//!   and read the event stream; a subscription that ends (AWS ends them after 5 minutes) is
//!   renewed after the last `ContinuationSequenceNumber`. The producer starts once every
//!   subscription has been answered with 200.
//!
//! Latency is receive time minus the time in the record, for records sent after the
//! warm-up. After the producer stops, consumers get `DRAIN_GRACE` to receive everything
//! acknowledged; what is still missing is reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use http_body_util::BodyExt;
use tokio::sync::watch;

use super::put_record::PutRecordOp;
use super::{ACTIVE_TIMEOUT, Plan, Timing, drive};
use crate::api::{CallError, Connection, Endpoint, body, response};
use crate::eventstream::FrameDecoder;
use crate::latency::now_ns;
use crate::report::{Report, Tally};
use crate::setup::{self, Ctx, sent_ns_of};

/// How long consumers may take to receive the last records after the producer stopped.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// How long subscriptions may take to deliver their initial response.
const SUBSCRIBE_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before renewing a subscription that was refused.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(200);

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[arg(long, default_value_t = 2)]
    pub shards: u32,
    /// Records per second written.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Producer connections (enough that a put taking a few ms, fsync included, does not
    /// cap the rate: 1,000/s × 5 ms needs 5).
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Polling: pause after an empty GetRecords.
    #[arg(long, default_value_t = 1.0)]
    pub poll_backoff_ms: f64,
    #[command(flatten)]
    pub timing: Timing,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Poll,
    Subscribe,
}

/// What consumers share: where the measured window starts, how many records arrived.
struct Received {
    measure_from_ns: AtomicU64,
    count: AtomicU64,
}

impl Received {
    /// Count every record of a batch, and the latency of those sent in the window.
    fn batch(&self, tally: &mut Tally, records: &[response::Record], received_ns: u64) {
        let measure_from_ns = self.measure_from_ns.load(Ordering::Relaxed);
        for record in records {
            self.count.fetch_add(1, Ordering::Relaxed);
            let Ok(data) = base64::engine::general_purpose::STANDARD.decode(&record.data) else {
                tally.error("undecodable-record".to_owned());
                continue;
            };
            match sent_ns_of(&data) {
                Some(sent_ns) if sent_ns >= measure_from_ns => {
                    tally.records += 1;
                    tally.bytes += data.len() as u64;
                    tally
                        .latencies
                        .record_ns(received_ns.saturating_sub(sent_ns));
                    tally.last_ns = tally.last_ns.max(received_ns);
                }
                Some(_) => {}
                None => tally.error("foreign-record".to_owned()),
            }
        }
    }
}

pub async fn run(ctx: &Ctx, args: &Args, mode: Mode, report: &mut Report) -> anyhow::Result<()> {
    report.parameter("shards", args.shards);
    report.parameter("rate_per_s", args.rate);
    report.parameter("record_size", args.record_size);
    report.parameter("connections", args.connections);
    report.parameter("duration_s", args.timing.duration);
    report.parameter("warmup_s", args.timing.warmup);
    if mode == Mode::Poll {
        report.parameter("poll_backoff_ms", args.poll_backoff_ms);
    }
    let tag = match mode {
        Mode::Poll => "e2e-poll",
        Mode::Subscribe => "e2e-subscribe",
    };
    let mut connection = ctx.connection();
    let stream = ctx
        .create_stream(&mut connection, tag, args.shards, ACTIVE_TIMEOUT)
        .await?;
    let shards = setup::open_shards(&mut connection, &stream).await?;

    let (stop_sender, stop) = watch::channel(false);
    // Nothing is measured until the producer's plan sets the window.
    let received = Arc::new(Received {
        measure_from_ns: AtomicU64::new(u64::MAX),
        count: AtomicU64::new(0),
    });
    let mut consumers = tokio::task::JoinSet::new();
    match mode {
        Mode::Poll => {
            for shard in &shards {
                let iterator =
                    setup::shard_iterator(&mut connection, &stream, &shard.shard_id, "LATEST")
                        .await?;
                let backoff = Duration::from_secs_f64(args.poll_backoff_ms.max(0.0) / 1e3);
                consumers.spawn(poll(
                    ctx.connection(),
                    iterator,
                    backoff,
                    received.clone(),
                    stop.clone(),
                ));
            }
        }
        Mode::Subscribe => {
            let consumer_arn = register_consumer(&mut connection, &stream).await?;
            let (ready_sender, mut ready) = tokio::sync::mpsc::channel(shards.len().max(1));
            for shard in &shards {
                consumers.spawn(subscribe(
                    ctx.endpoint.clone(),
                    consumer_arn.clone(),
                    shard.shard_id.clone(),
                    received.clone(),
                    stop.clone(),
                    ready_sender.clone(),
                ));
            }
            drop(ready_sender);
            for _ in &shards {
                match tokio::time::timeout(SUBSCRIBE_READY_TIMEOUT, ready.recv()).await {
                    Ok(Some(Ok(()))) => {}
                    Ok(Some(Err(error))) => {
                        let _ = stop_sender.send(true);
                        return Err(error);
                    }
                    Ok(None) | Err(_) => {
                        let _ = stop_sender.send(true);
                        bail!(
                            "SubscribeToShard: no initial response within {SUBSCRIBE_READY_TIMEOUT:?}"
                        );
                    }
                }
            }
        }
    }

    // The producer's clock starts now that consumers are in place.
    let plan = Plan {
        rate_per_s: Some(args.rate),
        ..Plan::closed(
            args.connections,
            args.timing.warmup(),
            args.timing.duration(),
        )
    };
    received
        .measure_from_ns
        .store(plan.measure_from_ns, Ordering::Relaxed);
    let producer = Arc::new(PutRecordOp::new(
        vec![stream.clone()],
        args.record_size,
        true,
    ));
    let acknowledged = producer.acknowledged.clone();
    let (put_tally, _) = drive(ctx, producer, plan).await;

    let grace_end = tokio::time::Instant::now() + DRAIN_GRACE;
    while received.count.load(Ordering::Relaxed) < acknowledged.load(Ordering::Relaxed)
        && tokio::time::Instant::now() < grace_end
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_sender.send(true);
    let mut consumed = Tally::default();
    let mut resubscriptions = 0u64;
    while let Some(joined) = consumers.join_next().await {
        match joined {
            Ok(Ok((tally, renewals))) => {
                consumed.merge(&tally);
                resubscriptions += renewals;
            }
            Ok(Err(error)) => report.note(format!("consumer failed: {error:#}")),
            Err(error) => report.note(format!("consumer task failed: {error}")),
        }
    }
    let acknowledged = acknowledged.load(Ordering::Relaxed);
    let got = received.count.load(Ordering::Relaxed);
    if got < acknowledged {
        consumed
            .errors
            .insert("missing-records".to_owned(), acknowledged - got);
    }
    let elapsed_s = plan.elapsed_s(&put_tally);
    let name = match mode {
        Mode::Poll => "put to GetRecords",
        Mode::Subscribe => "put to SubscribeToShard event",
    };
    report.measurements.push(consumed.measurement(
        name,
        "producer's intended send to consumer receipt (open loop)",
        elapsed_s,
    ));
    report.measurements.push(put_tally.measurement(
        "PutRecord (producer)",
        "intended send (open loop, coordinated omission corrected)",
        elapsed_s,
    ));
    let achieved = put_tally.calls as f64 / elapsed_s.max(1e-9);
    if achieved < args.rate * 0.95 {
        report.note(format!(
            "asked for {:.0} records/s, the server sustained {achieved:.0}",
            args.rate
        ));
    }
    if resubscriptions > 0 {
        report.note(format!("subscriptions renewed {resubscriptions} times"));
    }
    report.note(format!(
        "{acknowledged} records acknowledged, {got} received (warm-up included)"
    ));
    Ok(())
}

async fn poll(
    mut connection: Connection,
    iterator: String,
    backoff: Duration,
    received: Arc<Received>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(Tally, u64)> {
    let mut tally = Tally::default();
    let mut iterator = iterator;
    let mut stop = stop;
    while !*stop.borrow() {
        // A call still unanswered when the run stops must not hold the run up.
        let result = tokio::select! {
            result = connection.call("GetRecords", body::get_records(&iterator, 10_000)) => result,
            _ = stop.changed() => break,
        };
        let received_ns = now_ns();
        match result {
            Ok(bytes) => {
                let parsed: response::Records = serde_json::from_slice(&bytes)
                    .context("GetRecords response is not the expected JSON")?;
                tally.calls += 1;
                received.batch(&mut tally, &parsed.records, received_ns);
                let empty = parsed.records.is_empty();
                match parsed.next_shard_iterator {
                    Some(next) => iterator = next,
                    None => return Ok((tally, 0)),
                }
                if empty {
                    pause(backoff).await;
                }
            }
            Err(error) => {
                tally.error(error.label());
                tokio::time::sleep(backoff.max(Duration::from_millis(1))).await;
            }
        }
    }
    Ok((tally, 0))
}

/// Waits `backoff` between empty polls. tokio's timer counts in whole milliseconds and
/// rounds a deadline up to the next tick, so `tokio::time::sleep` of 1 ms waits 1-2 ms, and
/// the poll interval would be half again what was asked; a blocking thread's sleep keeps to
/// it within tens of microseconds. Zero yields once and polls again.
async fn pause(backoff: Duration) {
    if backoff.is_zero() {
        tokio::task::yield_now().await;
        return;
    }
    if tokio::task::spawn_blocking(move || std::thread::sleep(backoff))
        .await
        .is_err()
    {
        tokio::time::sleep(backoff).await;
    }
}

async fn register_consumer(connection: &mut Connection, stream: &str) -> anyhow::Result<String> {
    let stream_arn = setup::wait_active(connection, stream, ACTIVE_TIMEOUT).await?;
    let registered: response::Consumer = connection
        .call_json(
            "RegisterStreamConsumer",
            body::register_stream_consumer(&stream_arn, "millrace-bench"),
        )
        .await
        .map_err(|e| unsupported_or(e, "RegisterStreamConsumer"))?;
    let consumer_arn = registered.consumer.consumer_arn;
    let deadline = tokio::time::Instant::now() + ACTIVE_TIMEOUT;
    loop {
        let described: response::ConsumerDescribed = connection
            .call_json("DescribeStreamConsumer", body::consumer_arn(&consumer_arn))
            .await
            .map_err(|e| unsupported_or(e, "DescribeStreamConsumer"))?;
        if described.consumer_description.consumer_status.as_deref() == Some("ACTIVE") {
            return Ok(consumer_arn);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("consumer {consumer_arn} not ACTIVE after {ACTIVE_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The marker workloads use to say "the server does not have this operation".
pub const UNSUPPORTED: &str = "unsupported:";

fn unsupported_or(error: CallError, operation: &str) -> anyhow::Error {
    if error.is_unsupported() {
        anyhow!("{UNSUPPORTED} {operation}: {error}")
    } else {
        anyhow!("{operation}: {error}")
    }
}

async fn subscribe(
    endpoint: Endpoint,
    consumer_arn: String,
    shard_id: String,
    received: Arc<Received>,
    mut stop: watch::Receiver<bool>,
    ready: tokio::sync::mpsc::Sender<anyhow::Result<()>>,
) -> anyhow::Result<(Tally, u64)> {
    let mut connection = Connection::new(&endpoint);
    let mut tally = Tally::default();
    let mut after: Option<String> = None;
    let mut subscriptions = 0u64;
    let mut ready = Some(ready);
    while !*stop.borrow() {
        let request = body::subscribe_to_shard(&consumer_arn, &shard_id, after.as_deref());
        let response = match connection.send("SubscribeToShard", request).await {
            Ok(response) => response,
            Err(error) => {
                tally.error(error.label());
                tokio::time::sleep(RESUBSCRIBE_PAUSE).await;
                continue;
            }
        };
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let (error_type, message) = crate::api::error_type_of(&bytes);
            let error = CallError::Service {
                status,
                error_type,
                message,
            };
            if let Some(ready) = ready.take() {
                let _ = ready
                    .send(Err(unsupported_or(error.clone(), "SubscribeToShard")))
                    .await;
                return Err(anyhow!("SubscribeToShard: {error}"));
            }
            tally.error(error.label());
            tokio::time::sleep(RESUBSCRIBE_PAUSE).await;
            continue;
        }
        subscriptions += 1;
        // The position (LATEST) is fixed once the server answers 200; not every server
        // sends an initial-response event (kinesis-mock goes straight to events).
        if let Some(ready) = ready.take() {
            let _ = ready.send(Ok(())).await;
        }
        let mut body = response.into_body();
        let mut decoder = FrameDecoder::default();
        loop {
            let frame = tokio::select! {
                frame = body.frame() => frame,
                _ = stop.changed() => break,
            };
            let received_ns = now_ns();
            let Some(Ok(frame)) = frame else {
                break; // the subscription ended (or broke): renew it
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            decoder.push(&data);
            loop {
                let message = match decoder.next_message() {
                    Ok(Some(message)) => message,
                    Ok(None) => break,
                    Err(error) => return Err(anyhow!("event stream: {error}")),
                };
                match (
                    message.header_str(":message-type"),
                    message.header_str(":event-type"),
                ) {
                    (Some("event"), Some("SubscribeToShardEvent")) => {
                        let event: response::Records = serde_json::from_slice(&message.payload)
                            .context("SubscribeToShardEvent payload is not the expected JSON")?;
                        tally.calls += 1;
                        received.batch(&mut tally, &event.records, received_ns);
                        if let Some(sequence) = event.continuation_sequence_number {
                            after = Some(sequence);
                        }
                    }
                    (Some("exception"), _) | (Some("error"), _) => {
                        let kind = message
                            .header_str(":exception-type")
                            .or(message.header_str(":error-code"))
                            .unwrap_or("exception");
                        tally.error(format!("event-stream {kind}"));
                    }
                    _ => {}
                }
            }
        }
        // The old connection may still be mid-body: the next subscription gets a new one.
        connection = Connection::new(&endpoint);
    }
    Ok((tally, subscriptions.saturating_sub(1)))
}
