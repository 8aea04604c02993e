//! `millrace-bench`: a load tool for any Kinesis Data Streams endpoint.
//!
//! Speaks awsJson1.1 over HTTP/1.1 (and the SubscribeToShard event stream) with fake SigV4
//! headers, so the same runs drive Millrace, kinesalite, kinesis-mock and ferrokinesis.
//! Each subcommand is one workload (see `workloads`); it creates uniquely named streams,
//! measures, deletes them (unless `--keep`), and prints a table, or JSON with `--json`.
//! With `--server-pid` the server's peak RSS over the run is reported too.
//!
//! Deliberately not the AWS SDK: its retries would hide errors, and its weight would sit in
//! the measurement. The tool shares no code with the server it measures.

mod api;
mod eventstream;
mod floor;
mod latency;
mod report;
mod rss;
mod setup;
mod workloads;

use clap::{Parser, Subcommand};

use crate::report::Report;
use crate::setup::Ctx;
use crate::workloads::{analytics, e2e, get_drain, many_shards, put_record, put_records, queue};

#[derive(Parser, Debug)]
#[command(
    name = "millrace-bench",
    about = "Load tool for Kinesis-compatible endpoints"
)]
struct Cli {
    /// The server, `http://HOST:PORT`.
    #[arg(long, global = true, default_value = "http://127.0.0.1:4567")]
    endpoint: String,
    /// Print the report as JSON (for scripts) instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Report the peak resident memory of this process (the server) during the run.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Do not delete the streams the run created.
    #[arg(long, global = true)]
    keep: bool,
    /// Client runtime threads.
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand, Debug)]
enum Workload {
    /// PutRecords throughput (closed loop).
    PutRecords(put_records::Args),
    /// Single-record PutRecord rate and latency (closed loop, or open loop with --rate).
    PutRecord(put_record::Args),
    /// Preload a backlog, then read it back with GetRecords as fast as possible.
    GetDrain(get_drain::Args),
    /// Put-to-get latency at a fixed rate with polling (GetRecords) consumers.
    E2ePoll(e2e::Args),
    /// Put-to-get latency at a fixed rate with SubscribeToShard consumers.
    E2eSubscribe(e2e::Args),
    /// Per-request cost with 1, 1,000 and 10,000 open shards.
    ManyShards(many_shards::Args),
    /// Receive-and-acknowledge throughput of a stream queue with many competing workers.
    Queue(queue::Args),
    /// Rows per second through a Kinesis Data Analytics SQL application (tumbling or
    /// sliding window), from PutRecords to the aggregates in the output stream.
    Analytics(analytics::Args),
    /// Serve the least a Kinesis endpoint can be (fixed answers, optionally fsynced appends)
    /// at `--listen`, to measure the workloads against: the ceiling of this machine.
    Floor(floor::Args),
    /// Wait until the endpoint answers ListStreams with 200; print the milliseconds since
    /// `--since-ns` (wall clock, e.g. `date +%s%N` taken before the server was launched).
    Ready(ReadyArgs),
}

#[derive(clap::Args, Debug)]
struct ReadyArgs {
    #[arg(long)]
    since_ns: Option<u128>,
    /// Give up (exit 1) after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
}

/// Poll ListStreams every millisecond until it answers; the time from `since_ns` (or from
/// now) to that answer, in ms.
async fn ready(endpoint: &str, args: &ReadyArgs) -> anyhow::Result<f64> {
    let wall_ns = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    };
    let since_ns = args.since_ns.unwrap_or_else(wall_ns);
    let endpoint = api::Endpoint::parse(endpoint)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(args.timeout);
    while std::time::Instant::now() < deadline {
        let mut connection = api::Connection::new(&endpoint);
        if connection
            .call("ListStreams", bytes::Bytes::from_static(b"{}"))
            .await
            .is_ok()
        {
            return Ok(wall_ns().saturating_sub(since_ns) as f64 / 1e6);
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    anyhow::bail!(
        "{} did not answer within {} s",
        endpoint.authority,
        args.timeout
    )
}

impl Workload {
    fn name(&self) -> &'static str {
        match self {
            Workload::PutRecords(_) => "put-records",
            Workload::PutRecord(_) => "put-record",
            Workload::GetDrain(_) => "get-drain",
            Workload::E2ePoll(_) => "e2e-poll",
            Workload::E2eSubscribe(_) => "e2e-subscribe",
            Workload::ManyShards(_) => "many-shards",
            Workload::Queue(_) => "queue",
            Workload::Analytics(_) => "analytics",
            Workload::Ready(_) => "ready",
            Workload::Floor(_) => "floor",
        }
    }
}

async fn run(cli: &Cli, ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    match &cli.workload {
        Workload::PutRecords(args) => put_records::run(ctx, args, report).await,
        Workload::PutRecord(args) => put_record::run(ctx, args, report).await,
        Workload::GetDrain(args) => get_drain::run(ctx, args, report).await,
        Workload::E2ePoll(args) => e2e::run(ctx, args, e2e::Mode::Poll, report).await,
        Workload::E2eSubscribe(args) => e2e::run(ctx, args, e2e::Mode::Subscribe, report).await,
        Workload::ManyShards(args) => many_shards::run(ctx, args, report).await,
        Workload::Queue(args) => queue::run(ctx, args, report).await,
        Workload::Analytics(args) => analytics::run(ctx, args, report).await,
        Workload::Ready(_) | Workload::Floor(_) => Ok(()),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("millrace-bench: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Workload::Floor(args) = &cli.workload {
        return match runtime.block_on(floor::run(args)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("millrace-bench: {error:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if let Workload::Ready(args) = &cli.workload {
        return match runtime.block_on(ready(&cli.endpoint, args)) {
            Ok(ms) => {
                println!("{ms:.1}");
                std::process::ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("millrace-bench: {error:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let report = runtime.block_on(async {
        let mut report = Report::new(cli.workload.name(), &cli.endpoint);
        let ctx = match Ctx::new(&cli.endpoint, cli.keep, cli.workload.name()) {
            Ok(mut ctx) => {
                ctx.server_pid = cli.server_pid;
                ctx
            }
            Err(error) => {
                report.failure = Some(format!("{error:#}"));
                return report;
            }
        };
        let sampler = cli.server_pid.map(rss::Sampler::start);
        if let Err(error) = run(&cli, &ctx, &mut report).await {
            let text = format!("{error:#}");
            match text.find(e2e::UNSUPPORTED) {
                Some(at) => {
                    report.unsupported = Some(text[at + e2e::UNSUPPORTED.len()..].trim().to_owned())
                }
                None => report.failure = Some(text),
            }
        }
        if let Some(sampler) = sampler {
            if !sampler.reset {
                report.note("could not reset the server's VmHWM: peak RSS is since it started");
            }
            (report.server_rss_peak_mib, report.server_rss_mib_over_time) = sampler.finish().await;
        }
        for problem in ctx.cleanup().await {
            report.note(format!("cleanup: {problem}"));
        }
        report
    });
    if cli.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(error) => eprintln!("millrace-bench: {error}"),
        }
    } else {
        print!("{}", report.to_table());
    }
    if report.failure.is_some() {
        std::process::ExitCode::from(2)
    } else {
        std::process::ExitCode::SUCCESS
    }
}
