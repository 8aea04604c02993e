//! The `millrace` binary: command line, configuration, wiring of the clock, log, catalog,
//! services and server, signal handling and graceful shutdown.
//!
//! `millrace` with no arguments serves on 127.0.0.1:4567 with `./millrace-data`.
//! `millrace serve --listen ADDR --data-dir DIR [--config FILE] [--account-id ID]` is the
//! general form. SIGTERM or Ctrl-C: stop accepting, drain in-flight requests, checkpoint and
//! fsync the log, exit 0. `millrace gen-cert` writes a development TLS pair; `millrace kms`
//! manages the master keys of encryption at rest (`security.rs`). `millrace streams`,
//! `millrace tail STREAM` and `millrace put STREAM` talk to a running server (`cli.rs`).

mod analytics;
mod cli;
mod config;
mod firehose;
mod functions;
mod logfmt;
mod security;
mod tables;
mod video;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use millrace_catalog::Catalog;
use millrace_log::{Clock, Durability, Log, LogConfig, OffsetClock};
use millrace_server::{App, ClockControl, ServerConfig};
use millrace_streams::{RequestContext, Streams, StreamsConfig};
use tokio_util::sync::CancellationToken;

use crate::config::{DurabilityChoice, FileConfig, ShardThroughput};

#[derive(Parser, Debug)]
#[command(
    name = "millrace",
    version,
    about = "AWS Kinesis, self-hosted, in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve every service on one listener.
    Serve(ServeArgs),
    /// Write a self-signed certificate (cert.pem) and key (key.pem, 0600) for development
    /// TLS, valid for localhost, 127.0.0.1, ::1 and every --host.
    GenCert {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        host: Vec<String>,
    },
    /// Manage the master keys of encryption at rest (the key store file).
    Kms {
        #[command(subcommand)]
        command: security::KmsCommand,
    },
    /// List the streams of a running server: name, status, open shards, mode.
    Streams(cli::ClientArgs),
    /// Print a stream's records as they arrive (one line each), from every shard.
    Tail(cli::TailArgs),
    /// Put one record per line of stdin into a stream.
    Put(cli::PutArgs),
}

#[derive(clap::Args, Debug, Default)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:4567].
    #[arg(long)]
    listen: Option<String>,
    /// Where data lives [default: ./millrace-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Account id of requests that do not select one [default: 000000000000].
    #[arg(long)]
    account_id: Option<String>,
    /// Per-shard throughput limits [default: enforced].
    #[arg(long, value_enum)]
    shard_throughput: Option<ShardThroughput>,
    /// When a write is acknowledged [default: fsync].
    #[arg(long, value_enum)]
    durability: Option<DurabilityChoice>,
    /// Serve POST /moto-api/reset, which deletes every resource (for test suites).
    #[arg(long)]
    enable_reset: bool,
    /// Serve POST /millrace-api/advance-clock?ms=N (for test suites).
    #[arg(long)]
    enable_clock_advance: bool,
    /// Open shards allowed per account and region [default: 500].
    #[arg(long)]
    shard_limit: Option<u32>,
    /// Log format: "text", "json" or "logfmt" [default: text]; the access log follows it.
    #[arg(long, default_value = "text", value_parser = ["text", "json", "logfmt"])]
    log_format: String,
    /// Log one INFO line per request (request id, operation, stream, status, latency).
    #[arg(long)]
    access_log: bool,
    /// How often the metrics are rolled up into CloudWatch datapoints [default: 60000].
    #[arg(long)]
    metrics_rollup_ms: Option<u64>,
    /// TLS certificate chain (PEM); with --tls-key the listener speaks TLS only.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Key store of encryption at rest [default: DATA_DIR.kms-keys.json].
    #[arg(long)]
    kms_key_file: Option<PathBuf>,
}

struct ClockHandle(Arc<OffsetClock>);

impl ClockControl for ClockHandle {
    fn advance_millis(&self, ms: i64) {
        self.0.advance(ms);
    }
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MILLRACE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        "json" => builder.json().init(),
        "logfmt" => builder.event_format(logfmt::Logfmt).init(),
        _ => builder.init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        Some(Command::GenCert { out, host }) => {
            security::restrict_umask();
            return security::gen_cert(&out, &host);
        }
        Some(Command::Kms { command }) => {
            security::restrict_umask();
            return security::kms(command);
        }
        Some(Command::Streams(args)) => return cli::streams(args),
        Some(Command::Tail(args)) => return cli::tail(args),
        Some(Command::Put(args)) => return cli::put(args),
        None => ServeArgs {
            log_format: "text".into(),
            ..ServeArgs::default()
        },
    };
    init_tracing(&args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

/// Raises the soft limit on open files to the hard limit, as servers that hold thousands of
/// connections do: the default soft limit (often 1,024) is far below the server's own bound
/// (`server::CONNECTIONS_MAX`), and every connection, segment and WAL file needs one.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed in.
    let raised = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let before = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        before < limit.rlim_max && libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
    };
    if raised {
        tracing::debug!(
            open_files_max = limit.rlim_cur,
            "raised the open files limit"
        );
    }
    if limit.rlim_cur < millrace_server::CONNECTIONS_MAX as libc::rlim_t {
        tracing::warn!(
            open_files_max = limit.rlim_cur,
            connections_max = millrace_server::CONNECTIONS_MAX,
            "the open files limit is below the connection bound; raise `ulimit -Hn`"
        );
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    security::restrict_umask();
    raise_open_files_limit();
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let listen: SocketAddr = args
        .listen
        .clone()
        .or(file.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:4567".into())
        .parse()
        .context("--listen must be ADDR:PORT")?;
    let data_dir = args
        .data_dir
        .clone()
        .or(file.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from("./millrace-data"));
    let account_id = args
        .account_id
        .clone()
        .or(file.account_id.clone())
        .unwrap_or_else(|| "000000000000".into());
    if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
        anyhow::bail!("--account-id must be 12 digits, got {account_id:?}");
    }
    let region = file.region.clone().unwrap_or_else(|| "us-east-1".into());
    let throughput = args
        .shard_throughput
        .or(file.shard_throughput)
        .unwrap_or(ShardThroughput::Enforced);
    let durability = match args
        .durability
        .or(file.durability)
        .unwrap_or(DurabilityChoice::Fsync)
    {
        DurabilityChoice::Fsync => Durability::Fsync,
        DurabilityChoice::OsBuffered => {
            tracing::warn!(
                "durability = os-buffered: writes are acknowledged before they are on disk"
            );
            Durability::OsBuffered
        }
    };
    security::create_private_dir(&data_dir)?;
    let security = security::build_security(&file)?;
    let key_file = args
        .kms_key_file
        .clone()
        .or(file.kms.key_file.clone())
        .unwrap_or_else(|| security::default_key_file(&data_dir));
    let key_store = security::open_key_store(&key_file, &data_dir)?;
    let tls = match (&args.tls_cert, &args.tls_key, &file.tls) {
        (Some(cert), Some(key), _) => Some((cert.clone(), key.clone())),
        (_, _, Some(tls)) => Some((tls.cert_file.clone(), tls.key_file.clone())),
        _ => None,
    };
    let tls_acceptor = match &tls {
        Some((cert, key)) => Some(millrace_server::tls::acceptor(cert, key)?),
        None => None,
    };

    let offset_clock = Arc::new(OffsetClock::new());
    let clock: Arc<dyn Clock> = offset_clock.clone();
    let mut log_config = LogConfig::new(data_dir.join("log"));
    log_config.durability = durability;
    let log = Log::open(log_config, clock.clone()).context("cannot open the log")?;
    let catalog =
        Arc::new(Catalog::open(&data_dir.join("catalog.redb")).context("cannot open the catalog")?);
    let s = &file.streams;
    let defaults = StreamsConfig::default();
    let streams_config = StreamsConfig {
        create_delay_ms: s.create_delay_ms.unwrap_or(defaults.create_delay_ms),
        delete_delay_ms: s.delete_delay_ms.unwrap_or(defaults.delete_delay_ms),
        update_delay_ms: s.update_delay_ms.unwrap_or(defaults.update_delay_ms),
        consumer_delay_ms: s.consumer_delay_ms.unwrap_or(defaults.consumer_delay_ms),
        shard_limit: args
            .shard_limit
            .or(s.shard_limit)
            .unwrap_or(defaults.shard_limit),
        on_demand_stream_limit: s
            .on_demand_stream_limit
            .unwrap_or(defaults.on_demand_stream_limit),
        consumer_limit: s.consumer_limit.unwrap_or(defaults.consumer_limit),
        queue_receive_waiters_max: s
            .queue_receive_waiters_max
            .unwrap_or(defaults.queue_receive_waiters_max),
        on_demand_split_bytes_per_sec: s
            .on_demand_split_bytes_per_sec
            .unwrap_or(defaults.on_demand_split_bytes_per_sec),
        on_demand_split_after_ms: s
            .on_demand_split_after_ms
            .unwrap_or(defaults.on_demand_split_after_ms),
        enforce_shard_throughput: throughput == ShardThroughput::Enforced,
        foreign_log_ids: firehose::owned_log_ids(&catalog)?,
        ..defaults
    };
    let streams = Streams::open_with_keys(
        streams_config,
        catalog.clone(),
        log.clone(),
        clock.clone(),
        key_store.clone(),
    )
    .context("cannot load the streams")?;
    declare_streams(&streams, &file, &account_id, &region).await?;
    let firehose_config = firehose::config(&file.firehose, &data_dir)?;
    let consumers = millrace_functions::Functions::open(
        functions::config(&file.functions, &firehose_config),
        catalog.clone(),
        streams.clone(),
        clock.clone(),
    )
    .context("cannot load the event source mappings")?;
    // Analytics reads reference data from where Firehose writes: the same resolved S3.
    let reference_store = millrace_analytics::reference::ReferenceStore {
        endpoint: firehose_config.s3.endpoint.clone(),
        region: firehose_config.s3.region.clone(),
        access_key_id: firehose_config.s3.access_key_id.clone(),
        secret_access_key: firehose_config.s3.secret_access_key.clone(),
        session_token: firehose_config.s3.session_token.clone(),
        path_style: firehose_config.s3.path_style,
        embedded_root: Some(firehose_config.embedded_buckets_dir.clone()),
    };
    let sql_applications = millrace_analytics::Analytics::open(
        millrace_analytics::AnalyticsConfig {
            reference_store,
            ..Default::default()
        },
        catalog.clone(),
        streams.clone(),
        clock.clone(),
    )
    .context("cannot load the analytics applications")?;
    analytics::connect(&sql_applications, &consumers);
    let delivery = millrace_firehose::Firehose::open(
        firehose_config,
        catalog,
        log.clone(),
        clock.clone(),
        streams.clone(),
    )
    .context("cannot load the delivery streams")?;
    firehose::declare(&delivery, &file.firehose, &account_id, &region).await?;
    analytics::connect_firehose(&sql_applications, &delivery);

    let server_config = ServerConfig {
        account_id: account_id.clone(),
        default_region: region,
        enable_reset: args.enable_reset || file.enable_reset.unwrap_or(false),
        enable_clock_advance: args.enable_clock_advance
            || file.enable_clock_advance.unwrap_or(false),
    };
    let authenticated = security.is_some();
    let mut app = App::new(
        streams.clone(),
        server_config,
        Some(Arc::new(ClockHandle(offset_clock))),
    );
    if let Some(security) = security {
        app = app.with_security(security);
    }
    if let Some(acceptor) = tls_acceptor {
        app = app.with_tls(acceptor);
    }
    app = app.with_firehose(Arc::new(firehose::Adapter(delivery.clone())));
    app = app.with_tables(Arc::new(tables::Adapter(tables::open(&data_dir)?)));
    app = app.with_functions(Arc::new(functions::Adapter(consumers.clone())));
    app = app.with_access_log(args.access_log);
    app = app.with_video(Arc::new(video::Adapter(video::open(
        &data_dir,
        clock.clone(),
    )?)));
    app = app.with_analytics(Arc::new(analytics::Adapter(sql_applications.clone())));
    let app = Arc::new(app);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr().unwrap_or(listen);
    if !authenticated {
        tracing::warn!(
            "authentication is not configured: any credentials are accepted (development mode)"
        );
    } else if app.config.enable_reset || app.config.enable_clock_advance {
        tracing::warn!(
            "--enable-reset / --enable-clock-advance serve unauthenticated test endpoints: \
             do not use them on a network"
        );
    }
    tracing::info!(
        tls = tls.is_some(),
        key_store = %key_file.display(),
        listen = %local,
        data_dir = %data_dir.display(),
        account_id = %account_id,
        shard_throughput = ?throughput,
        startup_ms = started.elapsed().as_millis() as u64,
        "millrace is ready"
    );

    // A plain line on stdout that scripts and test harnesses wait for (with `--listen
    // 127.0.0.1:0` it is how they learn the port).
    println!("millrace listening on {local}");
    let shutdown = CancellationToken::new();
    let firehose_tasks = tokio_util::task::TaskTracker::new();
    firehose::start(&delivery, &firehose_tasks, &shutdown);
    let function_tasks = tokio_util::task::TaskTracker::new();
    functions::start(&consumers, &function_tasks, &shutdown);
    let analytics_tasks = tokio_util::task::TaskTracker::new();
    analytics::start(&sql_applications, &analytics_tasks, &shutdown);
    tracing::info!(buckets = %delivery.describe_buckets(), "Firehose is delivering");
    let housekeeping = {
        let streams = streams.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = interval.tick() => {
                        if let Err(error) = streams.housekeeping().await {
                            tracing::error!(%error, "housekeeping failed");
                        }
                        // `millrace kms disable-key` and friends take effect here.
                        match key_store.reload_if_changed() {
                            Ok(true) => tracing::info!("reloaded the key store"),
                            Ok(false) => {}
                            Err(error) => tracing::debug!(%error, "key store not reloaded"),
                        }
                    }
                    () = shutdown.cancelled() => break,
                }
            }
        })
    };
    let metrics_rollup = {
        let app = app.clone();
        let shutdown = shutdown.clone();
        let every_ms = args
            .metrics_rollup_ms
            .unwrap_or(millrace_server::metrics::ROLLUP_INTERVAL_MS)
            .max(1000);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(every_ms));
            interval.tick().await;
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    () = shutdown.cancelled() => break,
                }
                if let Err(error) = app.rollup_metrics() {
                    tracing::error!(%error, "metrics roll-up failed");
                }
            }
            // The last partial interval, so a clean stop loses no datapoints.
            if let Err(error) = app.rollup_metrics() {
                tracing::error!(%error, "metrics roll-up failed");
            }
        })
    };
    let signals = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down: draining requests");
            shutdown.cancel();
        })
    };
    millrace_server::serve(listener, app, shutdown.clone()).await?;
    shutdown.cancel();
    let _ = housekeeping.await;
    let _ = metrics_rollup.await;
    firehose::stop(&firehose_tasks).await;
    functions::stop(&function_tasks).await;
    analytics::stop(&analytics_tasks).await;
    signals.abort();
    log.shutdown().context("log shutdown failed")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Creates the streams the config file declares, if they do not exist yet.
async fn declare_streams(
    streams: &Streams,
    file: &FileConfig,
    account_id: &str,
    region: &str,
) -> anyhow::Result<()> {
    use millrace_wire::kinesis as k;
    for declared in &file.declared_streams {
        let ctx = RequestContext {
            account: declared
                .account_id
                .clone()
                .unwrap_or_else(|| account_id.to_string()),
            region: declared
                .region
                .clone()
                .unwrap_or_else(|| region.to_string()),
            request_id: "config".into(),
            principal: None,
        };
        let create = k::CreateStreamInput {
            stream_name: declared.name.clone(),
            shard_count: declared.shard_count,
            ..Default::default()
        };
        match streams.handle(&ctx, k::Request::CreateStream(create)).await {
            Ok(_) => tracing::info!(stream = %declared.name, "created declared stream"),
            Err(millrace_streams::Error::StreamExists { .. }) => {}
            Err(error) => anyhow::bail!("cannot create declared stream {}: {error}", declared.name),
        }
        if let Some(hours) = declared.retention_hours
            && hours > 24
        {
            let input = k::IncreaseStreamRetentionPeriodInput {
                stream_name: Some(declared.name.clone()),
                retention_period_hours: hours,
                ..Default::default()
            };
            let _ = streams
                .handle(&ctx, k::Request::IncreaseStreamRetentionPeriod(input))
                .await;
        }
        for consumer in &declared.consumers {
            let input = k::RegisterStreamConsumerInput {
                stream_arn: format!(
                    "arn:aws:kinesis:{}:{}:stream/{}",
                    ctx.region, ctx.account, declared.name
                ),
                consumer_name: consumer.clone(),
                ..Default::default()
            };
            let _ = streams
                .handle(&ctx, k::Request::RegisterStreamConsumer(input))
                .await;
        }
    }
    Ok(())
}
