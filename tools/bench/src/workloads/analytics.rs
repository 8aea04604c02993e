//! `analytics`: rows per second through a Kinesis Data Analytics SQL application, end to end.
//!
//! Creates a source stream (`--shards`), a one-shard output stream and an application
//! (KinesisAnalytics_20150814 CreateApplication/StartApplication from TRIM_HORIZON) that
//! reads JSON rows `{"ticker": "T<k>", "price": <p>}` and runs one of two queries:
//! - `--window tumbling`: per ticker and `--window-seconds` tumbling window (STEP), the
//!   number of rows and the sum of their prices; done when the output's row counts add up to
//!   `--records`;
//! - `--window sliding`: per row, COUNT and AVG over the ticker's last `--window-seconds`
//!   (RANGE ... PRECEDING); done when the output holds `--records` rows.
//!
//! Once the application is RUNNING, `--producers` connections put `--records` rows with
//! PutRecords (500 per call) as fast as they are accepted, while one consumer reads the
//! output stream. The end-to-end rate is `--records` over the time from the first put to the
//! moment the output is complete (so it includes the tumbling window's close: the window
//! width plus the runner's watermark slack of 2 s); the put rate alone is reported too.
//! With `--server-pid` the report has the server's peak RSS.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};

use super::ACTIVE_TIMEOUT;
use crate::api::{Connection, body};
use crate::latency::now_ns;
use crate::report::{Report, Tally};
use crate::setup::Ctx;

const ANALYTICS_TARGET_PREFIX: &str = "KinesisAnalytics_20150814";
/// Rows per PutRecords.
const BATCH_RECORDS: u64 = 500;
/// How often the application's status is polled while it is STARTING.
const STATUS_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Pause of the output reader when it is caught up.
const EMPTY_READ_PAUSE: Duration = Duration::from_millis(20);

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Tumbling,
    Sliding,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[arg(long, value_enum, default_value_t = Window::Tumbling)]
    pub window: Window,
    /// Width of the tumbling window, or range of the sliding one.
    #[arg(long, default_value_t = 1)]
    pub window_seconds: u32,
    /// Rows to push through the application.
    #[arg(long, default_value_t = 200_000)]
    pub records: u64,
    /// Source stream shards.
    #[arg(long, default_value_t = 2)]
    pub shards: u32,
    /// Distinct tickers (GROUP BY / PARTITION BY keys).
    #[arg(long, default_value_t = 16)]
    pub tickers: u64,
    /// Producer connections.
    #[arg(long, default_value_t = 4)]
    pub producers: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
}

fn sql(args: &Args) -> String {
    let width = args.window_seconds.max(1);
    match args.window {
        Window::Tumbling => format!(
            r#"CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (TICKER VARCHAR(8), TRADES INTEGER, TOTAL DOUBLE);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM TICKER, COUNT(*), SUM(PRICE) FROM "SOURCE_SQL_STREAM_001"
    GROUP BY TICKER, STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '{width}' SECOND);"#
        ),
        Window::Sliding => format!(
            r#"CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (TICKER VARCHAR(8), N INTEGER, AVG_PRICE DOUBLE);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM TICKER, COUNT(*) OVER W1, AVG(PRICE) OVER W1 FROM "SOURCE_SQL_STREAM_001"
    WINDOW W1 AS (PARTITION BY TICKER RANGE INTERVAL '{width}' SECOND PRECEDING);"#
        ),
    }
}

async fn call(connection: &mut Connection, target: &str, body: Value) -> anyhow::Result<Value> {
    let bytes = connection
        .call_target(target, Bytes::from(body.to_string()))
        .await
        .map_err(|e| anyhow::anyhow!("{target}: {e}"))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{target}: unparseable answer"))
}

async fn analytics(
    connection: &mut Connection,
    operation: &str,
    body: Value,
) -> anyhow::Result<Value> {
    call(
        connection,
        &format!("{ANALYTICS_TARGET_PREFIX}.{operation}"),
        body,
    )
    .await
}

async fn stream_arn(connection: &mut Connection, stream: &str) -> anyhow::Result<String> {
    let summary = call(
        connection,
        "Kinesis_20131202.DescribeStreamSummary",
        json!({"StreamName": stream}),
    )
    .await?;
    summary["StreamDescriptionSummary"]["StreamARN"]
        .as_str()
        .map(str::to_owned)
        .context("DescribeStreamSummary answered without StreamARN")
}

/// Creates and starts the application; waits until it is RUNNING.
async fn start_application(
    connection: &mut Connection,
    name: &str,
    source_arn: &str,
    dest_arn: &str,
    code: &str,
) -> anyhow::Result<()> {
    let role = "arn:aws:iam::000000000000:role/millrace-bench";
    analytics(
        connection,
        "CreateApplication",
        json!({
            "ApplicationName": name,
            "ApplicationCode": code,
            "Inputs": [{
                "NamePrefix": "SOURCE_SQL_STREAM",
                "KinesisStreamsInput": {"ResourceARN": source_arn, "RoleARN": role},
                "InputParallelism": {"Count": 1},
                "InputSchema": {
                    "RecordFormat": {
                        "RecordFormatType": "JSON",
                        "MappingParameters": {"JSONMappingParameters": {"RecordRowPath": "$"}},
                    },
                    "RecordEncoding": "UTF-8",
                    "RecordColumns": [
                        {"Name": "TICKER", "SqlType": "VARCHAR(8)", "Mapping": "$.ticker"},
                        {"Name": "PRICE", "SqlType": "DOUBLE", "Mapping": "$.price"},
                    ],
                },
            }],
            "Outputs": [{
                "Name": "DESTINATION_SQL_STREAM",
                "KinesisStreamsOutput": {"ResourceARN": dest_arn, "RoleARN": role},
                "DestinationSchema": {"RecordFormatType": "JSON"},
            }],
        }),
    )
    .await?;
    let described = analytics(
        connection,
        "DescribeApplication",
        json!({"ApplicationName": name}),
    )
    .await?;
    let input_id = described["ApplicationDetail"]["InputDescriptions"][0]["InputId"]
        .as_str()
        .context("DescribeApplication answered without an InputId")?
        .to_owned();
    analytics(
        connection,
        "StartApplication",
        json!({
            "ApplicationName": name,
            "InputConfigurations": [{
                "Id": input_id,
                "InputStartingPositionConfiguration": {"InputStartingPosition": "TRIM_HORIZON"},
            }],
        }),
    )
    .await?;
    let deadline = now_ns() + ACTIVE_TIMEOUT.as_nanos() as u64;
    loop {
        let described = analytics(
            connection,
            "DescribeApplication",
            json!({"ApplicationName": name}),
        )
        .await?;
        if described["ApplicationDetail"]["ApplicationStatus"] == "RUNNING" {
            return Ok(());
        }
        if now_ns() > deadline {
            bail!("application {name} not RUNNING after {ACTIVE_TIMEOUT:?}");
        }
        tokio::time::sleep(STATUS_POLL_INTERVAL).await;
    }
}

async fn delete_application(connection: &mut Connection, name: &str) -> anyhow::Result<()> {
    analytics(
        connection,
        "StopApplication",
        json!({"ApplicationName": name}),
    )
    .await?;
    let described = analytics(
        connection,
        "DescribeApplication",
        json!({"ApplicationName": name}),
    )
    .await?;
    let created = described["ApplicationDetail"]["CreateTimestamp"].clone();
    analytics(
        connection,
        "DeleteApplication",
        json!({"ApplicationName": name, "CreateTimestamp": created}),
    )
    .await?;
    Ok(())
}

/// Producers: PutRecords of JSON rows until `records` are accepted (retrying rejected
/// entries).
async fn produce(ctx: &Ctx, args: &Args, stream: &str) -> Tally {
    let next_row = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.producers.max(1) {
        let mut connection = ctx.connection();
        let next_row = next_row.clone();
        let stream = stream.to_owned();
        let (records, tickers) = (args.records, args.tickers.max(1));
        tasks.spawn(async move {
            let mut tally = Tally::default();
            loop {
                let first = next_row.fetch_add(BATCH_RECORDS, Ordering::Relaxed);
                if first >= records {
                    break;
                }
                let rows: Vec<(String, String)> = (first..(first + BATCH_RECORDS).min(records))
                    .map(|i| {
                        let price = 5.0 + (i * 37 % 400) as f64 / 10.0;
                        (
                            format!(r#"{{"ticker":"T{}","price":{price}}}"#, i % tickers),
                            i.to_string(),
                        )
                    })
                    .collect();
                let mut pending: Vec<&(String, String)> = rows.iter().collect();
                while !pending.is_empty() {
                    let entries: Vec<body::Entry<'_>> = pending
                        .iter()
                        .map(|(data, key)| body::Entry {
                            data: body::base64(data.as_bytes()),
                            partition_key: key,
                            explicit_hash_key: None,
                        })
                        .collect();
                    let sent_ns = now_ns();
                    match connection
                        .call("PutRecords", body::put_records(&stream, &entries))
                        .await
                    {
                        Ok(answer) => {
                            let done_ns = now_ns();
                            let answer: Value =
                                serde_json::from_slice(&answer).unwrap_or(Value::Null);
                            let results = answer["Records"].as_array().cloned().unwrap_or_default();
                            let before = pending.len() as u64;
                            pending = pending
                                .into_iter()
                                .zip(results.iter().map(|r| r.get("ErrorCode").is_some()))
                                .filter(|(_, failed)| *failed)
                                .map(|(row, _)| row)
                                .collect();
                            let accepted = before - pending.len() as u64;
                            tally.calls += 1;
                            tally.records += accepted;
                            tally.failed_records += pending.len() as u64;
                            tally.latencies.record_ns(done_ns - sent_ns);
                            tally.first_ns = tally.first_ns.min(sent_ns);
                            tally.last_ns = done_ns;
                        }
                        Err(error) => {
                            tally.error(error.label());
                            tokio::time::sleep(EMPTY_READ_PAUSE).await;
                        }
                    }
                }
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(tally) = joined {
            total.merge(&tally);
        }
    }
    total
}

/// Reads the output stream until its rows account for `target` input rows; the time that
/// happened (`now_ns`) and the output rows read.
async fn consume(
    ctx: &Ctx,
    stream: &str,
    window: Window,
    target: u64,
    deadline_ns: u64,
) -> anyhow::Result<(u64, u64)> {
    let mut connection = ctx.connection();
    let mut iterator = crate::setup::shard_iterator(
        &mut connection,
        stream,
        "shardId-000000000000",
        "TRIM_HORIZON",
    )
    .await?;
    let (mut covered, mut output_rows) = (0u64, 0u64);
    let engine = &base64::engine::general_purpose::STANDARD;
    while covered < target {
        if now_ns() > deadline_ns {
            bail!("the output accounts for {covered} of {target} rows at the timeout");
        }
        let page = call(
            &mut connection,
            "Kinesis_20131202.GetRecords",
            json!({"ShardIterator": iterator, "Limit": 10_000}),
        )
        .await?;
        let records = page["Records"].as_array().cloned().unwrap_or_default();
        for record in &records {
            let data = engine
                .decode(record["Data"].as_str().unwrap_or_default())
                .context("output record data is not base64")?;
            let row: Value = serde_json::from_slice(&data).context("output row is not JSON")?;
            output_rows += 1;
            covered += match window {
                Window::Tumbling => row["TRADES"].as_u64().unwrap_or(0),
                Window::Sliding => 1,
            };
        }
        iterator = page["NextShardIterator"]
            .as_str()
            .context("GetRecords answered without NextShardIterator")?
            .to_owned();
        if records.is_empty() {
            tokio::time::sleep(EMPTY_READ_PAUSE).await;
        }
    }
    if covered > target {
        bail!("the output accounts for {covered} rows, more than the {target} put");
    }
    Ok((now_ns(), output_rows))
}

pub async fn run(ctx: &Ctx, args: &Args, report: &mut Report) -> anyhow::Result<()> {
    report.parameter(
        "window",
        match args.window {
            Window::Tumbling => "tumbling",
            Window::Sliding => "sliding",
        },
    );
    report.parameter("window_seconds", args.window_seconds);
    report.parameter("records", args.records);
    report.parameter("shards", args.shards);
    report.parameter("tickers", args.tickers);
    report.parameter("producers", args.producers);
    let mut connection = ctx.connection();
    let source = ctx
        .create_stream(
            &mut connection,
            "analytics-src",
            args.shards,
            ACTIVE_TIMEOUT,
        )
        .await?;
    let dest = ctx
        .create_stream(&mut connection, "analytics-dst", 1, ACTIVE_TIMEOUT)
        .await?;
    let source_arn = stream_arn(&mut connection, &source).await?;
    let dest_arn = stream_arn(&mut connection, &dest).await?;
    let name = format!("{source}-app");
    start_application(&mut connection, &name, &source_arn, &dest_arn, &sql(args)).await?;

    let cpu_at_start = ctx.server_cpu_s();
    let started_ns = now_ns();
    let deadline_ns = started_ns + Duration::from_secs_f64(args.timeout).as_nanos() as u64;
    let consumer = consume(ctx, &dest, args.window, args.records, deadline_ns);
    let (put, consumed) = tokio::join!(produce(ctx, args, &source), consumer);
    let cleanup = delete_application(&mut connection, &name).await;
    let (done_ns, output_rows) = consumed?;
    if let Err(error) = cleanup {
        report.note(format!("cleanup: {error:#}"));
    }
    report.parameter("output_rows", output_rows);
    let put_elapsed_s = put.last_ns.saturating_sub(started_ns) as f64 / 1e9;
    report.measurements.push(put.measurement(
        "put (PutRecords)",
        "PutRecords sent to answered",
        put_elapsed_s,
    ));
    let mut end_to_end = Tally {
        records: args.records,
        ..Tally::default()
    };
    if let (Some(start), Some(end)) = (cpu_at_start, ctx.server_cpu_s()) {
        end_to_end.server_cpu_s = Some(end - start);
    }
    report.measurements.push(end_to_end.measurement(
        "rows through the application",
        "first put to the output complete (no per-row latency)",
        done_ns.saturating_sub(started_ns) as f64 / 1e9,
    ));
    Ok(())
}
