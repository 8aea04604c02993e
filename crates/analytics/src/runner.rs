//! The runner of one running application: reads its source stream's shards in process
//! (`Streams::handle` GetShardIterator/GetRecords, like the function consumers' poller), or
//! its source delivery stream's accepted records (through [`connect::DeliveryStreams`]),
//! maps records through the input schema into rows, runs them through the [`Engine`], sends
//! the rows of output streams to their Kinesis streams (PutRecords) and checkpoints.
//!
//! Statuses: the runner moves its application STARTING → RUNNING once it has listed the
//! source's shards (its input is open), and STOPPING → READY as it exits, after the
//! delivery in flight finished and the checkpoint of what was delivered is written.
//!
//! Outputs go to Kinesis streams (PutRecords) or to "Lambda functions" (the Lambda output
//! contract of [`crate::connect`]). An input may have a preprocessing function: the records
//! of each GetRecords go through it before the schema maps them into rows.
//!
//! Order of effects per round: read every shard once; if every shard is caught up, move the
//! watermark to the time the round began minus `WATERMARK_SLACK_MS` (records appended just
//! before are visible by then), which emits windows that ended; send the outputs, retrying
//! until they are all accepted (AWS retries a destination forever too); only then write the
//! checkpoint (shard positions + engine state). A crash between sending and checkpointing
//! sends those results again after the restart (at-least-once); nothing is lost, and an open
//! window resumes with the rows it had.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use millrace_catalog::Table;
use millrace_streams::RequestContext;
use millrace_wire::EpochMillis;
use millrace_wire::kinesis as k;
use serde_json::Value as Json;
use tokio_util::sync::CancellationToken;

use crate::connect::{self, FunctionInvoker, Preprocessed, SourceRecord};
use crate::engine::{Emitted, Engine, Program, row_to_csv, row_to_json};
use crate::{ApplicationRecord, Checkpoint, Inner, input, sources};

/// Records per GetRecords.
const GET_RECORDS_LIMIT: i32 = 10_000;
/// How often the shard list is refreshed.
const LIST_SHARDS_INTERVAL_MS: u64 = 5_000;
/// Shards read per application at most.
const SHARDS_MAX: usize = 500;
/// How far behind the round's start the watermark stays.
const WATERMARK_SLACK_MS: i64 = 2_000;
/// Records per PutRecords (the Kinesis maximum).
const PUT_BATCH_RECORDS_MAX: usize = 500;
/// Backoff after a failed read or a rejected output record.
const ERROR_BACKOFF_MS: u64 = 500;
/// Longest backoff between retries of a function (Lambda output, preprocessing).
const FUNCTION_BACKOFF_MS_MAX: u64 = 10_000;
/// Invocations of a preprocessing function per batch before its records are failed
/// (to `error_stream`).
const PREPROCESS_ATTEMPTS_MAX: u32 = 3;

pub(crate) fn stream_ctx(arn: &str) -> RequestContext {
    let parts: Vec<&str> = arn.split(':').collect();
    RequestContext {
        account: parts.get(4).copied().unwrap_or_default().to_string(),
        region: parts.get(3).copied().unwrap_or_default().to_string(),
        request_id: "analytics".into(),
        principal: None,
    }
}

async fn list_shards(
    inner: &Inner,
    ctx: &RequestContext,
    arn: &str,
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let input = match &token {
            Some(t) => k::ListShardsInput {
                next_token: Some(t.clone()),
                ..Default::default()
            },
            None => k::ListShardsInput {
                stream_arn: Some(arn.to_string()),
                ..Default::default()
            },
        };
        let response = inner
            .streams
            .handle(ctx, k::Request::ListShards(input))
            .await
            .map_err(|e| e.to_string())?;
        let k::Response::ListShards(output) = response else {
            return Err("unexpected ListShards answer".into());
        };
        out.extend(
            output
                .shards
                .unwrap_or_default()
                .into_iter()
                .map(|s| s.shard_id),
        );
        token = output.next_token;
        if token.is_none() || out.len() >= SHARDS_MAX {
            break;
        }
    }
    out.truncate(SHARDS_MAX);
    Ok(out)
}

async fn shard_iterator(
    inner: &Inner,
    ctx: &RequestContext,
    arn: &str,
    shard: &str,
    after: Option<&str>,
    initial: &str,
    start_ms: i64,
) -> Result<String, String> {
    let (kind, sequence, timestamp) = match (after, initial) {
        (Some(seq), _) => (
            k::ShardIteratorType::AfterSequenceNumber,
            Some(seq.to_string()),
            None,
        ),
        (None, "TRIM_HORIZON") => (k::ShardIteratorType::TrimHorizon, None, None),
        (None, "LATEST") => (k::ShardIteratorType::Latest, None, None),
        (None, _) => (
            k::ShardIteratorType::AtTimestamp,
            None,
            Some(EpochMillis(start_ms)),
        ),
    };
    let input = k::GetShardIteratorInput {
        dry_run: None,
        shard_id: shard.to_string(),
        shard_iterator_type: kind,
        starting_sequence_number: sequence,
        stream_arn: Some(arn.to_string()),
        stream_id: None,
        stream_name: None,
        timestamp,
    };
    match inner
        .streams
        .handle(ctx, k::Request::GetShardIterator(input))
        .await
    {
        Ok(k::Response::GetShardIterator(output)) => output
            .shard_iterator
            .ok_or_else(|| "no shard iterator".into()),
        Ok(_) => Err("unexpected GetShardIterator answer".into()),
        Err(e) => Err(e.to_string()),
    }
}

async fn get_records(
    inner: &Inner,
    ctx: &RequestContext,
    arn: &str,
    iterator: String,
) -> Result<k::GetRecordsOutput, String> {
    let input = k::GetRecordsInput {
        limit: Some(GET_RECORDS_LIMIT),
        shard_iterator: iterator,
        stream_arn: Some(arn.to_string()),
        ..Default::default()
    };
    match inner
        .streams
        .handle(ctx, k::Request::GetRecords(input))
        .await
    {
        Ok(k::Response::GetRecords(output)) => Ok(output),
        Ok(_) => Err("unexpected GetRecords answer".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Up to `max` records of a stream (DiscoverInputSchema).
pub(crate) async fn sample(
    inner: &Inner,
    ctx: &RequestContext,
    arn: &str,
    position: &str,
    max: usize,
) -> Result<Vec<Vec<u8>>, String> {
    if is_delivery_stream(arn) {
        let delivery = delivery_streams(inner)?;
        let from = if position == "NOW" {
            delivery
                .offset_at(arn, inner.clock.now_millis())
                .await
                .map_err(|e| e.to_string())?
        } else {
            0
        };
        let read = delivery
            .read(arn, from, max)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(read.records.into_iter().map(|r| r.data.to_vec()).collect());
    }
    let stream_ctx = RequestContext {
        request_id: ctx.request_id.clone(),
        ..stream_ctx(arn)
    };
    let initial = if position == "NOW" {
        "LATEST"
    } else {
        "TRIM_HORIZON"
    };
    let mut out = Vec::new();
    for shard in list_shards(inner, &stream_ctx, arn).await? {
        let mut iterator =
            Some(shard_iterator(inner, &stream_ctx, arn, &shard, None, initial, 0).await?);
        // A few reads per shard: a fresh shard answers its records in one or two.
        for _ in 0..3 {
            let Some(it) = iterator.take() else { break };
            let output = get_records(inner, &stream_ctx, arn, it).await?;
            let empty = output.records.is_empty();
            out.extend(output.records.into_iter().map(|r| r.data.to_vec()));
            if out.len() >= max {
                out.truncate(max);
                return Ok(out);
            }
            iterator = output.next_shard_iterator;
            if empty && output.millis_behind_latest.unwrap_or(0) == 0 {
                break;
            }
        }
    }
    Ok(out)
}

/// Releases the holds an application has on delivery stream inputs (it is deleted), in
/// the background; a hold that cannot be released expires (`HOLD_MS_MAX` in firehose).
pub(crate) fn release_holds(inner: &Inner, app: &ApplicationRecord) {
    let Ok(delivery) = delivery_streams(inner) else {
        return;
    };
    let holder = app.arn();
    for input in &app.inputs {
        let Some(arn) = input
            .pointer("/KinesisFirehoseInputDescription/ResourceARN")
            .and_then(Json::as_str)
            .map(str::to_string)
        else {
            continue;
        };
        let delivery = delivery.clone();
        let holder = holder.clone();
        tokio::spawn(async move {
            if let Err(error) = delivery.hold(&arn, &holder, None).await {
                tracing::warn!(delivery_stream = %arn, %error, "cannot release the input's hold");
            }
        });
    }
}

/// The position key of a delivery stream input in the checkpoint: the input reads one
/// log, as one "shard" whose sequence numbers are the log's offsets.
const DELIVERY_STREAM_POSITION: &str = "deliverystream";

fn is_delivery_stream(arn: &str) -> bool {
    arn.starts_with("arn:") && arn.split(':').nth(2) == Some("firehose")
}

fn delivery_streams(inner: &Inner) -> Result<Arc<dyn connect::DeliveryStreams>, String> {
    inner
        .delivery_streams
        .lock()
        .clone()
        .ok_or_else(|| connect::DeliveryError::Unavailable.to_string())
}

/// Where an application's records come from: a Kinesis stream's shards (read with
/// GetShardIterator and GetRecords in process), or a delivery stream's accepted records
/// (read by offset through [`connect::DeliveryStreams`], with a hold at the checkpoint so
/// delivery does not trim what the application has not read).
enum Source {
    Stream {
        arn: String,
        ctx: RequestContext,
    },
    DeliveryStream {
        arn: String,
        /// The application ARN: who holds the delivery stream's records.
        holder: String,
    },
}

impl Source {
    fn of_input(input: &Json, app_arn: String) -> Result<Source, String> {
        if let Some(arn) = input
            .pointer("/KinesisStreamsInputDescription/ResourceARN")
            .and_then(Json::as_str)
        {
            return Ok(Source::Stream {
                arn: arn.to_string(),
                ctx: stream_ctx(arn),
            });
        }
        if let Some(arn) = input
            .pointer("/KinesisFirehoseInputDescription/ResourceARN")
            .and_then(Json::as_str)
        {
            return Ok(Source::DeliveryStream {
                arn: arn.to_string(),
                holder: app_arn,
            });
        }
        Err("the input has no source ARN".into())
    }

    fn arn(&self) -> &str {
        match self {
            Source::Stream { arn, .. } | Source::DeliveryStream { arn, .. } => arn,
        }
    }

    /// The shard id a preprocessing function sees (none for a delivery stream).
    fn shard_id<'a>(&self, shard: &'a str) -> Option<&'a str> {
        match self {
            Source::Stream { .. } => Some(shard),
            Source::DeliveryStream { .. } => None,
        }
    }

    /// The source's shards; for a delivery stream, its one position once it is readable.
    async fn shards(&self, inner: &Inner) -> Result<Vec<String>, String> {
        match self {
            Source::Stream { arn, ctx } => list_shards(inner, ctx, arn).await,
            Source::DeliveryStream { arn, .. } => {
                delivery_streams(inner)?
                    .offset_at(arn, 0)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(vec![DELIVERY_STREAM_POSITION.to_string()])
            }
        }
    }

    /// An iterator after the checkpointed position, else at the input's starting position
    /// (`TRIM_HORIZON`, else `start_ms`). A delivery stream's iterator is the offset to read
    /// next, and its hold is placed there at once.
    async fn iterator(
        &self,
        inner: &Inner,
        shard: &str,
        after: Option<&str>,
        initial: &str,
        start_ms: i64,
    ) -> Result<String, String> {
        let (arn, holder) = match self {
            Source::Stream { arn, ctx } => {
                return shard_iterator(inner, ctx, arn, shard, after, initial, start_ms).await;
            }
            Source::DeliveryStream { arn, holder } => (arn, holder),
        };
        let delivery = delivery_streams(inner)?;
        let offset = match (after, initial) {
            (Some(position), _) => position
                .parse::<u64>()
                .map_err(|_| format!("bad delivery stream position {position}"))?
                .saturating_add(1),
            (None, "TRIM_HORIZON") => 0,
            (None, _) => delivery
                .offset_at(arn, start_ms)
                .await
                .map_err(|e| e.to_string())?,
        };
        delivery
            .hold(arn, holder, Some(offset))
            .await
            .map_err(|e| e.to_string())?;
        Ok(offset.to_string())
    }

    /// One read at `iterator`, as a GetRecords answer (a delivery stream's records have
    /// their offsets as sequence numbers and no partition key).
    async fn read(&self, inner: &Inner, iterator: String) -> Result<k::GetRecordsOutput, String> {
        let arn = match self {
            Source::Stream { arn, ctx } => return get_records(inner, ctx, arn, iterator).await,
            Source::DeliveryStream { arn, .. } => arn,
        };
        let from: u64 = iterator
            .parse()
            .map_err(|_| format!("bad delivery stream iterator {iterator}"))?;
        let read = delivery_streams(inner)?
            .read(arn, from, GET_RECORDS_LIMIT as usize)
            .await
            .map_err(|e| e.to_string())?;
        Ok(k::GetRecordsOutput {
            child_shards: None,
            // Not a time: any positive value says the reader is behind.
            millis_behind_latest: Some(i64::from(read.next_offset < read.end_offset)),
            next_shard_iterator: Some(read.next_offset.max(from).to_string()),
            records: read
                .records
                .into_iter()
                .map(|r| k::Record {
                    approximate_arrival_timestamp: Some(EpochMillis(r.arrival_ms)),
                    data: r.data,
                    encryption_type: None,
                    partition_key: None,
                    sequence_number: r.offset.to_string(),
                })
                .collect(),
        })
    }

    /// After a checkpoint is written: a delivery stream's hold moves up to it.
    async fn checkpointed(&self, inner: &Inner, checkpoint: &Checkpoint) {
        let Source::DeliveryStream { arn, holder } = self else {
            return;
        };
        let Some(offset) = checkpoint
            .positions
            .get(DELIVERY_STREAM_POSITION)
            .and_then(|p| p.parse::<u64>().ok())
        else {
            return;
        };
        let held = match delivery_streams(inner) {
            Ok(delivery) => delivery
                .hold(arn, holder, Some(offset.saturating_add(1)))
                .await
                .map_err(|e| e.to_string()),
            Err(error) => Err(error),
        };
        if let Err(error) = held {
            tracing::warn!(delivery_stream = %arn, %error, "cannot move the input's hold");
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Destination {
    Stream,
    Lambda,
    Firehose,
}

struct Output {
    stream: usize,
    destination: Destination,
    arn: String,
    csv: bool,
    /// The OutputId (the metrics' `Id` dimension).
    id: String,
}

pub(crate) async fn run(inner: Arc<Inner>, app: ApplicationRecord, stop: CancellationToken) {
    tracing::info!(application = %app.name, "analytics application started");
    let key = app.key();
    if let Err(error) = run_inner(&inner, &app, &stop).await {
        tracing::error!(application = %app.name, %error, "analytics application stopped on an error");
        // It cannot run as configured: it is not running.
        inner.transition(&key, "STARTING", "READY").await;
        inner.transition(&key, "RUNNING", "READY").await;
    }
    inner.transition(&key, "STOPPING", "READY").await;
    if !inner.apps.lock().contains_key(&key) {
        // Deleted while it ran: its last round may have moved a hold after the deletion
        // released it.
        release_holds(&inner, &app);
    }
    tracing::info!(application = %app.name, "analytics application stopped");
}

async fn pause(stop: &CancellationToken, ms: u64) -> bool {
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(ms)) => true,
        () = stop.cancelled() => false,
    }
}

async fn run_inner(
    inner: &Arc<Inner>,
    app: &ApplicationRecord,
    stop: &CancellationToken,
) -> Result<(), String> {
    let key = app.key();
    let Some(input) = app.inputs.first() else {
        return Err("the application has no input".into());
    };
    let input_source = Source::of_input(input, app.arn())?;
    let schema = input::Schema::from_json(input.get("InputSchema").unwrap_or(&Json::Null))?;
    let srcs = sources(&app.inputs)?;
    // Reference data (reference.rs): tables compiled into the program, loaded below.
    let references = crate::reference::sources(&app.reference_data_sources)?;
    let tables: Vec<_> = references
        .iter()
        .map(|r| (r.table.clone(), r.schema.columns()))
        .collect();
    let program = Program::compile_with_tables(app.code.as_deref().unwrap_or(""), &srcs, &tables)?;
    let source_streams: Vec<usize> = srcs
        .iter()
        .filter_map(|(n, _)| program.stream_index(n))
        .collect();
    let mut outputs = Vec::new();
    for o in &app.outputs {
        let name = o.get("Name").and_then(Json::as_str).unwrap_or_default();
        let Some(stream) = program.stream_index(name) else {
            continue;
        };
        let csv = o
            .pointer("/DestinationSchema/RecordFormatType")
            .and_then(Json::as_str)
            == Some("CSV");
        let destination = [
            (
                "/KinesisStreamsOutputDescription/ResourceARN",
                Destination::Stream,
            ),
            ("/LambdaOutputDescription/ResourceARN", Destination::Lambda),
            (
                "/KinesisFirehoseOutputDescription/ResourceARN",
                Destination::Firehose,
            ),
        ]
        .into_iter()
        .find_map(|(pointer, d)| o.pointer(pointer).and_then(Json::as_str).map(|a| (d, a)));
        match destination {
            Some((destination, arn)) => outputs.push(Output {
                stream,
                destination,
                id: o
                    .get("OutputId")
                    .and_then(Json::as_str)
                    .unwrap_or_default()
                    .to_string(),
                arn: arn.to_string(),
                csv,
            }),
            None => {
                tracing::warn!(application = %app.name, output = %name, "the output has no destination ARN; it is stored only")
            }
        }
    }
    let preprocessor: Option<String> = input
        .pointer(
            "/InputProcessingConfigurationDescription/InputLambdaProcessorDescription/ResourceARN",
        )
        .and_then(Json::as_str)
        .map(str::to_string);
    let app_arn = app.arn();
    let mut engine = Engine::new(program);
    for r in &references {
        let rows = crate::reference::load(&inner.config.reference_store, r).await?;
        engine.load_table(&r.table, rows)?;
    }
    let mut checkpoint: Checkpoint = inner
        .catalog
        .get(Table::ApplicationCheckpoints, &key)
        .map_err(|e| e.to_string())?
        .unwrap_or_else(|| Checkpoint {
            initial: "NOW".into(),
            start_ms: inner.clock.now_millis(),
            ..Default::default()
        });
    if checkpoint.code == app.code
        && let Some(state) = checkpoint.engine.take()
        && !engine.restore(state)
    {
        tracing::warn!(application = %app.name, "checkpointed window state does not fit the code; windows start afresh");
    }
    let arn = input_source.arn().to_string();
    let mut iterators: HashMap<String, Option<String>> = HashMap::new();
    let mut shards: Vec<String> = Vec::new();
    let mut next_list = Instant::now();
    let mut partition_counter: u64 = 0;
    let mut opened = false;
    while !stop.is_cancelled() {
        if Instant::now() >= next_list {
            match input_source.shards(inner).await {
                Ok(list) => {
                    shards = list;
                    next_list = Instant::now() + Duration::from_millis(LIST_SHARDS_INTERVAL_MS);
                    if !opened {
                        opened = true;
                        inner.transition(&key, "STARTING", "RUNNING").await;
                    }
                }
                Err(error) => {
                    tracing::warn!(application = %app.name, %error, "cannot list the source stream's shards");
                    if !pause(stop, ERROR_BACKOFF_MS * 4).await {
                        break;
                    }
                    continue;
                }
            }
        }
        let round_start_ms = inner.clock.now_millis();
        let mut out: Vec<Emitted> = Vec::new();
        let mut caught_up = true;
        let mut read_any = false;
        for (i, shard) in shards.iter().enumerate() {
            if checkpoint.finished.contains(shard) {
                continue;
            }
            let iterator = match iterators.get_mut(shard).and_then(Option::take) {
                Some(it) => it,
                None => match input_source
                    .iterator(
                        inner,
                        shard,
                        checkpoint.positions.get(shard).map(String::as_str),
                        &checkpoint.initial,
                        checkpoint.start_ms,
                    )
                    .await
                {
                    Ok(it) => it,
                    Err(error) => {
                        tracing::warn!(application = %app.name, %shard, %error, "cannot get a shard iterator");
                        caught_up = false;
                        continue;
                    }
                },
            };
            let output = match input_source.read(inner, iterator).await {
                Ok(output) => output,
                Err(error) => {
                    tracing::debug!(application = %app.name, %shard, %error, "GetRecords failed; a new iterator follows");
                    caught_up = false;
                    continue;
                }
            };
            if output.millis_behind_latest.unwrap_or(0) > 0 {
                caught_up = false;
            }
            (inner.metrics).count_input(&key, input, &output);
            let source = source_streams
                .get(i % source_streams.len().max(1))
                .copied()
                .unwrap_or(0);
            let processed = match &preprocessor {
                Some(function) => {
                    let Some(processed) = preprocess(
                        inner,
                        &app_arn,
                        function,
                        &arn,
                        input_source.shard_id(shard),
                        &output.records,
                        round_start_ms,
                        stop,
                    )
                    .await
                    else {
                        // Stopped mid-batch: nothing of this round is checkpointed.
                        return Ok(());
                    };
                    Some(processed)
                }
                None => None,
            };
            for (record_idx, record) in output.records.iter().enumerate() {
                let arrival = record
                    .approximate_arrival_timestamp
                    .map_or(round_start_ms, |t| t.0);
                let data: &[u8] = match processed.as_ref().and_then(|p| p.get(record_idx)) {
                    None => &record.data,
                    Some(Preprocessed::Ok(data)) => data,
                    Some(Preprocessed::Dropped) => &[],
                    Some(Preprocessed::ProcessingFailed) => {
                        engine.reject_source(
                            arrival,
                            &record.data,
                            "the preprocessing function failed the record",
                            &mut out,
                        );
                        &[]
                    }
                };
                let skip = matches!(
                    processed.as_ref().and_then(|p| p.get(record_idx)),
                    Some(Preprocessed::Dropped | Preprocessed::ProcessingFailed)
                );
                for row in schema.decode(data).into_iter().filter(|_| !skip) {
                    match row {
                        Ok(values) => engine.insert_source(source, arrival, values, &mut out),
                        Err(message) => engine.reject_source(arrival, data, &message, &mut out),
                    }
                }
                checkpoint
                    .positions
                    .insert(shard.clone(), record.sequence_number.clone());
                read_any = true;
            }
            match output.next_shard_iterator {
                Some(next) => {
                    iterators.insert(shard.clone(), Some(next));
                }
                None => checkpoint.finished.push(shard.clone()),
            }
        }
        if caught_up {
            engine.advance(round_start_ms.saturating_sub(WATERMARK_SLACK_MS), &mut out);
        }
        let emitted = out
            .iter()
            .any(|e| outputs.iter().any(|o| o.stream == e.stream));
        if !send(
            inner,
            app,
            &engine,
            &outputs,
            out,
            &mut partition_counter,
            stop,
        )
        .await
        {
            break;
        }
        if read_any || emitted {
            checkpoint.engine = Some(engine.state().clone());
            checkpoint.code = app.code.clone();
            // Written even when a stop came during the round: everything it covers was
            // delivered (`send` answered true), so the next start does not repeat it.
            let write = inner
                .catalog
                .write(|txn| txn.put(Table::ApplicationCheckpoints, &key, &checkpoint));
            checkpoint.engine = None;
            match write {
                Ok(()) => input_source.checkpointed(inner, &checkpoint).await,
                Err(error) => {
                    tracing::error!(application = %app.name, %error, "cannot write the checkpoint")
                }
            }
        }
        if !read_any && !pause(stop, inner.config.poll_interval_ms).await {
            break;
        }
    }
    Ok(())
}

/// Sends the rows of output streams; false when stopped before everything was accepted.
async fn send(
    inner: &Inner,
    app: &ApplicationRecord,
    engine: &Engine,
    outputs: &[Output],
    rows: Vec<Emitted>,
    counter: &mut u64,
    stop: &CancellationToken,
) -> bool {
    for output in outputs {
        let Some(stream) = engine.program.streams.get(output.stream) else {
            continue;
        };
        if output.destination != Destination::Stream {
            let data: Vec<Vec<u8>> = rows
                .iter()
                .filter(|e| e.stream == output.stream)
                .map(|e| {
                    if output.csv {
                        row_to_csv(&e.row)
                    } else {
                        row_to_json(stream, &e.row)
                    }
                })
                .collect();
            if !send_batched(inner, app, output, data, stop).await {
                return false;
            }
            continue;
        }
        let mut pending: Vec<k::PutRecordsRequestEntry> = rows
            .iter()
            .filter(|e| e.stream == output.stream)
            .map(|e| {
                *counter += 1;
                k::PutRecordsRequestEntry {
                    data: if output.csv {
                        row_to_csv(&e.row)
                    } else {
                        row_to_json(stream, &e.row)
                    }
                    .into(),
                    explicit_hash_key: None,
                    partition_key: Some(format!("{}-{}", app.name, *counter % 1024)),
                }
            })
            .collect();
        let ctx = stream_ctx(&output.arn);
        while !pending.is_empty() {
            if stop.is_cancelled() {
                return false;
            }
            let take = pending.len().min(PUT_BATCH_RECORDS_MAX);
            let batch: Vec<k::PutRecordsRequestEntry> = pending.drain(..take).collect();
            let input = k::PutRecordsInput {
                records: batch.clone(),
                stream_arn: Some(output.arn.clone()),
                ..Default::default()
            };
            match inner
                .streams
                .handle(&ctx, k::Request::PutRecords(input))
                .await
            {
                Ok(k::Response::PutRecords(result)) => {
                    (inner.metrics).count_output(&app.key(), &output.id, &result, &batch);
                    let failed: Vec<k::PutRecordsRequestEntry> = result
                        .records
                        .iter()
                        .zip(batch)
                        .filter(|(r, _)| r.error_code.is_some())
                        .map(|(_, e)| e)
                        .collect();
                    if !failed.is_empty() {
                        pending = failed.into_iter().chain(pending).collect();
                        if !pause(stop, ERROR_BACKOFF_MS).await {
                            return false;
                        }
                    }
                }
                Ok(_) | Err(_) => {
                    tracing::warn!(application = %app.name, destination = %output.arn, "output stream refused records; retrying");
                    pending = batch.into_iter().chain(pending).collect();
                    if !pause(stop, ERROR_BACKOFF_MS).await {
                        return false;
                    }
                }
            }
        }
    }
    true
}

fn invoker(inner: &Inner) -> Option<Arc<dyn FunctionInvoker>> {
    inner.functions.lock().clone()
}

fn next_backoff(backoff_ms: u64) -> u64 {
    (backoff_ms * 2).min(FUNCTION_BACKOFF_MS_MAX)
}

/// Delivers rows to a Lambda or Firehose output, a bounded batch at a time; rows the
/// function answers `DeliveryFailed` for (or leaves out), or the delivery stream refuses,
/// are offered again (with a higher `retryHint` for a function) after a growing backoff,
/// until every row is delivered. A call in flight is awaited even when a stop comes (the
/// application is STOPPING meanwhile); false when stopped before every row was delivered.
async fn send_batched(
    inner: &Inner,
    app: &ApplicationRecord,
    output: &Output,
    rows: Vec<Vec<u8>>,
    stop: &CancellationToken,
) -> bool {
    let destination_arn = output.arn.as_str();
    let (records_max, bytes_max) = match output.destination {
        Destination::Firehose => (
            connect::FIREHOSE_BATCH_RECORDS_MAX,
            connect::FIREHOSE_BATCH_BYTES_MAX,
        ),
        Destination::Lambda | Destination::Stream => (
            connect::LAMBDA_OUTPUT_RECORDS_MAX,
            connect::LAMBDA_OUTPUT_BYTES_MAX,
        ),
    };
    let app_arn = app.arn();
    let mut pending: std::collections::VecDeque<(Vec<u8>, u32)> =
        rows.into_iter().map(|r| (r, 0)).collect();
    let mut backoff_ms = ERROR_BACKOFF_MS;
    while !pending.is_empty() {
        if stop.is_cancelled() {
            return false;
        }
        let mut batch: Vec<(Vec<u8>, u32)> = Vec::new();
        let mut batch_bytes = 0;
        while let Some((data, _)) = pending.front() {
            if !batch.is_empty()
                && (batch.len() >= records_max || batch_bytes + data.len() > bytes_max)
            {
                break;
            }
            batch_bytes += data.len();
            if let Some(row) = pending.pop_front() {
                batch.push(row);
            }
        }
        let delivered: Result<Vec<bool>, String> = if output.destination == Destination::Firehose {
            let delivery_streams = inner.delivery_streams.lock().clone();
            match delivery_streams {
                Some(d) => d
                    .put_record_batch(
                        destination_arn,
                        batch.iter().map(|(data, _)| data.clone()).collect(),
                    )
                    .await
                    .map_err(|e| e.to_string()),
                None => Err(connect::DeliveryError::Unavailable.to_string()),
            }
        } else {
            let event = connect::output_event(&app_arn, inner.clock.now_millis(), &batch);
            let answer = match invoker(inner) {
                Some(functions) => functions.invoke(destination_arn, event).await,
                None => Err(connect::InvokeError::Unavailable),
            };
            answer
                .and_then(|body| connect::output_results(&body, batch.len()))
                .map_err(|e| e.to_string())
        };
        // An answer that does not cover the batch is a failed call (nothing is assumed
        // delivered).
        let delivered = delivered.and_then(|d| {
            if d.len() == batch.len() {
                Ok(d)
            } else {
                Err(format!("{} answers for {} records", d.len(), batch.len()))
            }
        });
        let failed: Vec<(Vec<u8>, u32)> = match delivered {
            Ok(delivered) => {
                let (n_records, n_bytes) = batch
                    .iter()
                    .zip(&delivered)
                    .filter(|(_, ok)| **ok)
                    .fold((0, 0), |(n, b), ((data, _), _)| {
                        (n + 1, b + data.len() as u64)
                    });
                (inner.metrics).count_delivered(&app.key(), &output.id, n_records, n_bytes);
                batch
                    .into_iter()
                    .zip(delivered)
                    .filter(|(_, ok)| !ok)
                    .map(|((data, tries), _)| (data, tries + 1))
                    .collect()
            }
            Err(error) => {
                tracing::warn!(application = %app.name, destination = %destination_arn, %error, "output delivery failed; retrying");
                batch
                    .into_iter()
                    .map(|(data, tries)| (data, tries + 1))
                    .collect()
            }
        };
        if failed.is_empty() {
            backoff_ms = ERROR_BACKOFF_MS;
            continue;
        }
        for row in failed.into_iter().rev() {
            pending.push_front(row);
        }
        if !pause(stop, backoff_ms).await {
            return false;
        }
        backoff_ms = next_backoff(backoff_ms);
    }
    true
}

/// Runs one GetRecords' records through the input's preprocessing function, a bounded
/// batch per invocation: one outcome per record. A batch whose invocation keeps failing
/// (`PREPROCESS_ATTEMPTS_MAX` times) has its records failed (they go to `error_stream`).
/// `None` when stopped.
#[allow(clippy::too_many_arguments)]
async fn preprocess(
    inner: &Inner,
    app_arn: &str,
    function_arn: &str,
    stream_arn: &str,
    shard: Option<&str>,
    records: &[k::Record],
    now_ms: i64,
    stop: &CancellationToken,
) -> Option<Vec<Preprocessed>> {
    let mut out = Vec::with_capacity(records.len());
    let mut start = 0;
    while start < records.len() {
        let mut end = start;
        let mut bytes = 0;
        while let Some(record) = records.get(end) {
            if end > start
                && (end - start >= connect::PREPROCESS_RECORDS_MAX
                    || bytes + record.data.len() > connect::PREPROCESS_BYTES_MAX)
            {
                break;
            }
            bytes += record.data.len();
            end += 1;
        }
        let batch: Vec<SourceRecord<'_>> = records
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .map(|r| SourceRecord {
                data: &r.data,
                arrival_ms: r.approximate_arrival_timestamp.map_or(now_ms, |t| t.0),
                sequence_number: &r.sequence_number,
                partition_key: r.partition_key.as_deref().unwrap_or_default(),
                shard_id: shard,
            })
            .collect();
        let mut backoff_ms = ERROR_BACKOFF_MS;
        let mut attempt = 0;
        let outcomes = loop {
            attempt += 1;
            let event = connect::preprocess_event(app_arn, stream_arn, now_ms, &batch);
            let answer = match invoker(inner) {
                Some(functions) => functions.invoke(function_arn, event).await,
                None => Err(connect::InvokeError::Unavailable),
            };
            match answer.and_then(|body| connect::preprocess_results(&body, batch.len())) {
                Ok(outcomes) => break outcomes,
                Err(error) if attempt < PREPROCESS_ATTEMPTS_MAX => {
                    tracing::warn!(function = %function_arn, %error, attempt, "preprocessing failed; retrying");
                    if !pause(stop, backoff_ms).await {
                        return None;
                    }
                    backoff_ms = next_backoff(backoff_ms);
                }
                Err(error) => {
                    tracing::warn!(function = %function_arn, %error, "preprocessing failed; the records go to error_stream");
                    break vec![Preprocessed::ProcessingFailed; batch.len()];
                }
            }
        };
        out.extend(outcomes);
        start = end;
    }
    Some(out)
}
