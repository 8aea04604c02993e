//! The HTTP boundary of Millrace, and the only crate that knows HTTP.
//!
//! One listener serves HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on the same port, as
//! the JavaScript SDK v3 and the Java SDK's async client (which the KCL uses) connect with
//! HTTP/2 by default and everything else with HTTP/1.1. Requests are routed by
//! `X-Amz-Target`; each gets a request id (echoed as `x-amzn-RequestId`) and a tracing span
//! at DEBUG level: at the default INFO the span is disabled and costs nothing (an enabled span
//! had `tracing_subscriber` format its fields on every request, 5-7 % of a PutRecord's CPU), so
//! the log lines an operator needs (errors) carry `request_id` as a field of their own.
//!
//! Before the action runs, a request goes through the checks AWS makes, in AWS's order
//! (kinesalite's `index.js` documents it): method, content type, body parse
//! (SerializationException), operation (UnknownOperationException), authentication
//! (`auth`: the SigV4 signature when credentials are configured, else only the presence of
//! an authentication header), type checks and constraints (`wire`), authorization (`authz`
//! with `policy`: identity and resource policies, AccessDeniedException), then the action.
//!
//! With `[tls]` configured the listener speaks TLS only (`tls`), with ALPN h2/http/1.1.
//!
//! Also here: `GET /health`, `POST /moto-api/reset` (wipes every resource, when enabled) and
//! `POST /millrace-api/advance-clock?ms=N` (moves the service clock forward, when enabled).
//!
//! `GET /metrics` answers the `AWS/Kinesis` and `AWS/Firehose` metrics as Prometheus text
//! (`metrics`), `POST /millrace-api/rollup-metrics` rolls them up into CloudWatch datapoints
//! now rather than at the next interval, and `/console` serves the web console (`console`).
//!
//! Not here: what operations mean (the service crates), body formats and the SigV4
//! algorithm (`wire`).

mod analytics;
mod auth;
pub mod authz;
mod console;
mod firehose;
mod functions;
pub mod metrics;
pub mod policy;
mod subscribe;
mod tables;
pub mod tls;
mod video;

pub use analytics::{AnalyticsError, AnalyticsService};
pub use auth::{Authenticator, CredentialSpec, Principal};
pub use authz::Authorizer;
pub use firehose::{FirehoseService, ServiceError};
pub use functions::{FunctionsService, RestAnswer};
pub use tables::{TablesAnswer, TablesApi, TablesCall, TablesProtocol, TablesService};
pub use video::{VideoAnswer, VideoBody, VideoCall, VideoService};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use millrace_streams::{RequestContext, Streams};
use millrace_wire::kinesis::{self, Operation};
use millrace_wire::{ErrorKind, Format};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub type Body = BoxBody<Bytes, Infallible>;

/// Largest request body accepted: a 10 MiB PutRecords in base64 plus its JSON framing.
pub const REQUEST_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Time in-flight requests get to finish at shutdown.
pub const SHUTDOWN_DRAIN_MS: u64 = 10_000;
/// Request bodies held in memory at once, across all connections. A request waits for room
/// (backpressure); one that waits longer than `BODY_BUDGET_WAIT_MS` is shed with
/// ServiceUnavailableException, which every AWS SDK retries.
pub const BODY_BYTES_IN_FLIGHT_MAX: usize = 256 * 1024 * 1024;
pub const BODY_BUDGET_WAIT_MS: u64 = 5_000;
/// A request body must arrive within this time (slow or stalled uploads are cut off).
pub const BODY_READ_TIMEOUT_MS: u64 = 60_000;
/// Open connections at most; past it the server stops accepting until one closes.
pub const CONNECTIONS_MAX: usize = 10_000;
/// Unit of the body budget's permits (a semaphore counts in u32).
const BODY_BUDGET_UNIT_BYTES: usize = 1024;
/// GetRecords answers held in memory at once, across all connections: while they are read
/// and encoded, and until the client has taken all but the last chunk. Without it, a big
/// backlog read by many slow consumers at once held about 13 MiB per consumer (300 boto3
/// readers took the server to 936 MiB). A call waits for room like a request body does and
/// is shed the same way.
pub const RESPONSE_BYTES_IN_FLIGHT_MAX: usize = 128 * 1024 * 1024;
/// What one GetRecords may need before its size is known: up to 10 MiB of records read
/// plus their encoding (base64 in JSON: 4/3 of it). Cut to the encoded size once known.
const GET_RECORDS_RESERVE_BYTES: usize = 24 * 1024 * 1024;
const _: () = assert!(GET_RECORDS_RESERVE_BYTES <= RESPONSE_BYTES_IN_FLIGHT_MAX);
/// Budgeted answers go out in chunks of this size, so the budget is returned only when the
/// client has taken (nearly) all of it, not when hyper has queued it.
const RESPONSE_CHUNK_BYTES: usize = 64 * 1024;
const _: () = assert!(REQUEST_BODY_BYTES_MAX <= BODY_BYTES_IN_FLIGHT_MAX);

const KINESIS_TARGET_PREFIX: &str = "Kinesis_20131202";

/// Moves the service clock forward (the test-hygiene clock-advance call).
pub trait ClockControl: Send + Sync + 'static {
    fn advance_millis(&self, ms: i64);
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The account used when a request does not select one.
    pub account_id: String,
    /// The region used when a request's signature names none.
    pub default_region: String,
    /// Serve `POST /moto-api/reset`.
    pub enable_reset: bool,
    /// Serve `POST /millrace-api/advance-clock`.
    pub enable_clock_advance: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            account_id: "000000000000".into(),
            default_region: "us-east-1".into(),
            enable_reset: false,
            enable_clock_advance: false,
        }
    }
}

/// Authentication and authorization, when credentials are configured.
pub struct Security {
    pub authenticator: Authenticator,
    pub authorizer: Authorizer,
}

/// Marks a request that arrived over TLS (`aws:SecureTransport`).
#[derive(Clone, Copy, Debug)]
struct SecureTransport;

/// Everything a request handler needs.
pub struct App {
    pub streams: Streams,
    pub config: ServerConfig,
    pub clock: Option<Arc<dyn ClockControl>>,
    ready: AtomicBool,
    body_budget: Arc<tokio::sync::Semaphore>,
    /// Bytes of GetRecords answers in flight, in `BODY_BUDGET_UNIT_BYTES` permits.
    response_budget: Arc<tokio::sync::Semaphore>,
    /// `None`: development mode, any credentials accepted.
    security: Option<Security>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Serves `Firehose_20150804.*` when set.
    firehose: Option<Arc<dyn FirehoseService>>,
    /// Serves DynamoDB and CloudWatch when set.
    tables: Option<Arc<dyn TablesService>>,
    /// Serves the Lambda API (`/2015-03-31/...`) when set.
    functions: Option<Arc<dyn FunctionsService>>,
    /// The `AWS/Kinesis` counters (`metrics`).
    pub kinesis_metrics: metrics::KinesisMetrics,
    /// Previous totals of the `AWS/Firehose` counters, for their roll-up.
    firehose_rolled: parking_lot::Mutex<metrics::CounterRollup>,
    /// Previous totals of the `AWS/KinesisVideo` counters.
    video_rolled: parking_lot::Mutex<metrics::CounterRollup>,
    /// Previous totals of the `AWS/KinesisAnalytics` counters.
    analytics_rolled: parking_lot::Mutex<metrics::CounterRollup>,
    /// Log one INFO line per request (`--access-log`).
    access_log: bool,
    /// Serves the Kinesis Video Streams REST APIs when set.
    video: Option<Arc<dyn VideoService>>,
    /// Serves `KinesisAnalytics_20150814.*` when set.
    analytics: Option<Arc<dyn AnalyticsService>>,
}

impl App {
    pub fn new(
        streams: Streams,
        config: ServerConfig,
        clock: Option<Arc<dyn ClockControl>>,
    ) -> App {
        App {
            streams,
            config,
            clock,
            ready: AtomicBool::new(true),
            body_budget: Arc::new(tokio::sync::Semaphore::new(
                BODY_BYTES_IN_FLIGHT_MAX / BODY_BUDGET_UNIT_BYTES,
            )),
            response_budget: Arc::new(tokio::sync::Semaphore::new(
                RESPONSE_BYTES_IN_FLIGHT_MAX / BODY_BUDGET_UNIT_BYTES,
            )),
            security: None,
            tls: None,
            firehose: None,
            tables: None,
            functions: None,
            kinesis_metrics: metrics::KinesisMetrics::default(),
            firehose_rolled: parking_lot::Mutex::new(metrics::CounterRollup::default()),
            video_rolled: parking_lot::Mutex::new(metrics::CounterRollup::default()),
            analytics_rolled: parking_lot::Mutex::new(metrics::CounterRollup::default()),
            access_log: false,
            video: None,
            analytics: None,
        }
    }

    /// Logs one INFO line per request: request id, operation, stream, status, latency.
    pub fn with_access_log(mut self, enabled: bool) -> App {
        self.access_log = enabled;
        self
    }

    /// Rolls the metrics counted since the previous roll-up into CloudWatch datapoints
    /// (`AWS/Kinesis`, `AWS/Firehose`), stored by the tables service. Returns how many.
    pub fn rollup_metrics(&self) -> Result<usize, String> {
        let Some(tables) = &self.tables else {
            return Ok(0);
        };
        let at_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut n_datapoints = 0;
        for (_group, data) in self.kinesis_metrics.rollup() {
            n_datapoints += data.len();
            tables.put_service_metrics("AWS/Kinesis", at_secs, &data)?;
        }
        if let Some(firehose) = &self.firehose {
            let data = self.firehose_rolled.lock().rollup(&firehose.metrics());
            n_datapoints += data.len();
            if !data.is_empty() {
                tables.put_service_metrics("AWS/Firehose", at_secs, &data)?;
            }
        }
        let counted: [(&metrics::CounterService, _, Option<Vec<_>>); 2] = [
            (
                &metrics::VIDEO,
                &self.video_rolled,
                self.video.as_ref().map(|v| v.metrics()),
            ),
            (
                &metrics::ANALYTICS,
                &self.analytics_rolled,
                self.analytics.as_ref().map(|a| a.metrics()),
            ),
        ];
        for (service, rolled, totals) in counted {
            let Some(totals) = totals else { continue };
            let data = rolled.lock().rollup_of(service, &totals);
            n_datapoints += data.len();
            if !data.is_empty() {
                tables.put_service_metrics(service.namespace, at_secs, &data)?;
            }
        }
        Ok(n_datapoints)
    }

    /// The Prometheus text of `GET /metrics`.
    pub fn prometheus_text(&self) -> String {
        let mut out = String::new();
        self.kinesis_metrics.render_prometheus(&mut out);
        if let Some(firehose) = &self.firehose {
            metrics::render_firehose(&firehose.metrics(), &mut out);
        }
        if let Some(video) = &self.video {
            metrics::render_counters(&metrics::VIDEO, &video.metrics(), &mut out);
        }
        if let Some(analytics) = &self.analytics {
            metrics::render_counters(&metrics::ANALYTICS, &analytics.metrics(), &mut out);
        }
        out
    }

    /// Verifies every request's signature and authorizes it against the policies.
    pub fn with_security(mut self, security: Security) -> App {
        self.security = Some(security);
        self
    }

    /// Serves the Firehose API (`Firehose_20150804.*`) on the same listener.
    pub fn with_firehose(mut self, firehose: Arc<dyn FirehoseService>) -> App {
        self.firehose = Some(firehose);
        self
    }

    /// Serves DynamoDB and CloudWatch (`tables`) on the same listener.
    pub fn with_tables(mut self, tables: Arc<dyn TablesService>) -> App {
        self.tables = Some(tables);
        self
    }

    /// Serves the Lambda API's event source mappings and functions on the same listener.
    pub fn with_functions(mut self, functions: Arc<dyn FunctionsService>) -> App {
        self.functions = Some(functions);
        self
    }

    /// Serves the Kinesis Video Streams APIs (REST, by path) on the same listener.
    pub fn with_video(mut self, video: Arc<dyn VideoService>) -> App {
        self.video = Some(video);
        self
    }

    /// Serves the Kinesis Data Analytics API (`KinesisAnalytics_20150814.*`).
    pub fn with_analytics(mut self, analytics: Arc<dyn AnalyticsService>) -> App {
        self.analytics = Some(analytics);
        self
    }

    /// Serves TLS (only) on the listener.
    pub fn with_tls(mut self, acceptor: tokio_rustls::TlsAcceptor) -> App {
        self.tls = Some(acceptor);
        self
    }
}

/// Accepts connections until `shutdown` fires, then stops accepting and gives in-flight
/// requests up to `SHUTDOWN_DRAIN_MS` to finish.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let connections = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let secure = app.tls.is_some();
        let service = {
            let app = app.clone();
            hyper::service::service_fn(move |mut request: Request<Incoming>| {
                let app = app.clone();
                if secure {
                    request.extensions_mut().insert(SecureTransport);
                }
                async move { Ok::<_, Infallible>(handle(app, peer, request).await) }
            })
        };
        if let Some(acceptor) = app.tls.clone() {
            // TLS: the handshake runs in the connection's own task (tls.rs).
            let builder = builder.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(
                    Duration::from_millis(tls::TLS_HANDSHAKE_TIMEOUT_MS),
                    acceptor.accept(stream),
                )
                .await;
                let stream = match handshake {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%error, %peer, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let connection =
                    builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                if let Err(error) = watcher.watch(connection.into_owned()).await {
                    tracing::debug!(%error, %peer, "connection ended with an error");
                }
                drop(permit);
            });
            continue;
        }
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
    app.ready.store(false, Ordering::SeqCst);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_millis(SHUTDOWN_DRAIN_MS)) => {
            tracing::warn!("some connections were still open after the drain period");
        }
    }
    Ok(())
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `x-amz-id-2`: 72 random bytes in base64, as AWS sends.
/// Built on the stack: it is sent with every response.
fn amz_id_2() -> Option<HeaderValue> {
    use base64::Engine;
    let mut bytes = [0u8; 72];
    rand::fill(&mut bytes[..]);
    let mut text = [0u8; 96];
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(bytes, &mut text)
        .ok()?;
    HeaderValue::from_bytes(text.get(..n)?).ok()
}

fn with_ids(mut response: Response<Body>, request_id: &str) -> Response<Body> {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-RequestId", value);
    }
    if let Some(value) = amz_id_2() {
        headers.insert("x-amz-id-2", value);
    }
    response
}

/// Room for `bytes` of answer in the response budget, waiting for it as a request body waits
/// for the body budget; `None` when the server stays too busy.
async fn reserve_response(app: &App, bytes: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let permits = u32::try_from(bytes.div_ceil(BODY_BUDGET_UNIT_BYTES)).unwrap_or(u32::MAX);
    tokio::time::timeout(
        Duration::from_millis(BODY_BUDGET_WAIT_MS),
        app.response_budget.clone().acquire_many_owned(permits),
    )
    .await
    .ok()?
    .ok()
}

/// A 200 answer whose bytes count against the response budget until the client has taken
/// them: the reservation is cut to the encoded size, and the body hands the bytes to hyper
/// in `RESPONSE_CHUNK_BYTES` slices (no copies), keeping the permit until the last one.
fn budgeted(
    content_type: &str,
    body: Vec<u8>,
    mut permit: tokio::sync::OwnedSemaphorePermit,
) -> Response<Body> {
    let keep = body.len().div_ceil(BODY_BUDGET_UNIT_BYTES).max(1);
    if let Some(excess) = permit.num_permits().checked_sub(keep) {
        drop(permit.split(excess));
    }
    let body = ChunkedBody {
        rest: Bytes::from(body),
        _permit: permit,
    };
    let mut response = Response::new(body.boxed());
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

struct ChunkedBody {
    rest: Bytes,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl http_body::Body for ChunkedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if self.rest.is_empty() {
            return std::task::Poll::Ready(None);
        }
        let n = self.rest.len().min(RESPONSE_CHUNK_BYTES);
        let chunk = self.rest.split_to(n);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.rest.len() as u64)
    }
}

fn simple(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// An AWS error in the request's format.
pub(crate) fn error_response(
    format: Format,
    kind: ErrorKind,
    message: Option<&str>,
) -> Response<Body> {
    let body = millrace_wire::encode_error(format, kind, message);
    let status = StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    simple(status, format.content_type(), body)
}

/// The XML-ish answers AWS's front end gives before it knows the protocol.
fn front_end_error(status: StatusCode, kind: &str, message: Option<&str>) -> Response<Body> {
    let body = match message {
        Some(message) => format!("<{kind}>\n  <Message>{message}</Message>\n</{kind}>\n"),
        None => format!("<{kind}/>\n"),
    };
    simple(status, "application/xml", body)
}

async fn handle(app: Arc<App>, peer: SocketAddr, request: Request<Incoming>) -> Response<Body> {
    let request_id = request_id();
    let target = request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // DEBUG, not INFO: see the module docs.
    let span = tracing::debug_span!(
        "request",
        request_id = %request_id,
        %peer,
        method = %request.method(),
        path = %request.uri().path(),
        target = %target,
        status = tracing::field::Empty,
        latency_us = tracing::field::Empty,
    );
    let started = Instant::now();
    let response = route(&app, request, &request_id, &target)
        .instrument(span.clone())
        .await;
    let latency_us = started.elapsed().as_micros() as u64;
    span.record("status", response.status().as_u16());
    span.record("latency_us", latency_us);
    span.in_scope(|| tracing::debug!("answered"));
    if app.access_log {
        let stream = response
            .extensions()
            .get::<LoggedStream>()
            .map_or("", |s| s.0.as_str());
        let operation = target.split_once('.').map_or(target.as_str(), |(_, op)| op);
        tracing::info!(
            target: "millrace::access",
            request_id = %request_id,
            operation,
            stream,
            status = response.status().as_u16(),
            latency_us,
            "request"
        );
    }
    with_ids(response, &request_id)
}

/// The other services' futures are boxed: every request's future is as large as the
/// largest branch, and hyper and tokio move it (memcpy) several times per request, so the
/// Data Streams hot path should not carry the size of a video or analytics state machine.
async fn route(
    app: &Arc<App>,
    request: Request<Incoming>,
    request_id: &str,
    target: &str,
) -> Response<Body> {
    let path = request.uri().path().to_string();
    match (request.method(), path.as_str()) {
        (&Method::GET, "/health") => {
            return if app.ready.load(Ordering::SeqCst) {
                simple(StatusCode::OK, "application/json", r#"{"status":"ok"}"#)
            } else {
                simple(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "application/json",
                    r#"{"status":"stopping"}"#,
                )
            };
        }
        (&Method::POST, "/moto-api/reset") if app.config.enable_reset => {
            firehose::reset(app, request_id);
            tables::reset(app, request_id);
            Box::pin(functions::reset(app, request_id)).await;
            app.kinesis_metrics.clear();
            video::reset(app, request_id);
            analytics::reset(app, request_id);
            return match Box::pin(app.streams.reset()).await {
                Ok(()) => simple(StatusCode::OK, "application/json", r#"{"status":"ok"}"#),
                Err(error) => {
                    tracing::error!(%request_id, %error, "reset failed");
                    simple(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "application/json",
                        r#"{"status":"error"}"#,
                    )
                }
            };
        }
        (&Method::POST, "/millrace-api/advance-clock") if app.config.enable_clock_advance => {
            let ms = request
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|pair| pair.strip_prefix("ms="))
                .and_then(|v| v.parse::<i64>().ok());
            return match (ms, &app.clock) {
                (Some(ms), Some(clock)) if ms >= 0 => {
                    clock.advance_millis(ms);
                    simple(StatusCode::OK, "application/json", r#"{"status":"ok"}"#)
                }
                _ => simple(
                    StatusCode::BAD_REQUEST,
                    "application/json",
                    r#"{"status":"error","message":"expected ?ms=N with N >= 0"}"#,
                ),
            };
        }
        (&Method::GET, "/metrics") => {
            return simple(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                app.prometheus_text(),
            );
        }
        (&Method::POST, "/millrace-api/rollup-metrics") => {
            return match app.rollup_metrics() {
                Ok(n) => simple(
                    StatusCode::OK,
                    "application/json",
                    format!(r#"{{"status":"ok","datapoints":{n}}}"#),
                ),
                Err(error) => {
                    tracing::error!(%request_id, %error, "metrics roll-up failed");
                    simple(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "application/json",
                        r#"{"status":"error"}"#,
                    )
                }
            };
        }
        (&Method::GET, _) if console::serves(&path) => {
            return console::respond(app, &path);
        }
        _ if functions::serves(app, &path) => {
            return Box::pin(functions::respond(app, request, request_id)).await;
        }
        _ if video::serves(app, &path) => {
            return Box::pin(video::respond(app, request, request_id)).await;
        }
        _ => {}
    }
    if let Some(operation) = analytics::claim(app, &request, target) {
        return Box::pin(analytics::respond(app, request, request_id, operation)).await;
    }
    if let Some(call) = tables::claim(app, &request, target) {
        return Box::pin(tables::respond(app, request, request_id, call)).await;
    }
    aws_request(app, request, request_id, target).await
}

/// Serves one AWS JSON/CBOR protocol request.
async fn aws_request(
    app: &Arc<App>,
    request: Request<Incoming>,
    request_id: &str,
    target: &str,
) -> Response<Body> {
    if request.method() != Method::POST {
        return front_end_error(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            Some("Unable to determine service/operation name to be authorized"),
        );
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (service, operation_name) = target.split_once('.').unwrap_or((target, ""));
    let Some(format) = Format::from_content_type(content_type) else {
        if service.is_empty() || operation_name.is_empty() {
            return front_end_error(
                StatusCode::FORBIDDEN,
                "AccessDeniedException",
                Some("Unable to determine service/operation name to be authorized"),
            );
        }
        return front_end_error(StatusCode::NOT_FOUND, "UnknownOperationException", None);
    };
    let operation = (service == KINESIS_TARGET_PREFIX)
        .then(|| Operation::from_name(operation_name))
        .flatten();
    let firehose_operation = firehose::operation(app, service, operation_name);
    let (parts, body) = request.into_parts();
    let declared = header_str(&parts.headers, "content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(REQUEST_BODY_BYTES_MAX)
        .min(REQUEST_BODY_BYTES_MAX);
    let permits =
        u32::try_from(declared.div_ceil(BODY_BUDGET_UNIT_BYTES).max(1)).unwrap_or(u32::MAX);
    let budget = tokio::time::timeout(
        Duration::from_millis(BODY_BUDGET_WAIT_MS),
        app.body_budget.clone().acquire_many_owned(permits),
    )
    .await;
    let _budget = match budget {
        Ok(Ok(permit)) => permit,
        _ => {
            return error_response(
                format,
                ErrorKind::ServiceUnavailableException,
                Some("The server is busy. Retry the request."),
            );
        }
    };
    let collected = tokio::time::timeout(
        Duration::from_millis(BODY_READ_TIMEOUT_MS),
        Limited::new(body, REQUEST_BODY_BYTES_MAX).collect(),
    )
    .await;
    let Ok(collected) = collected else {
        return error_response(
            format,
            ErrorKind::ServiceUnavailableException,
            Some("The request body did not arrive in time."),
        );
    };
    let body = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return error_response(
                    format,
                    ErrorKind::RequestEntityTooLargeException,
                    Some(&format!(
                        "Request body exceeds the limit of {REQUEST_BODY_BYTES_MAX} bytes."
                    )),
                );
            }
            tracing::debug!(%error, "request body could not be read");
            return error_response(format, ErrorKind::SerializationException, None);
        }
    };
    // An aws-chunked body (STREAMING-AWS4-HMAC-SHA256-PAYLOAD) is parsed once authentication
    // has checked and decoded it.
    let chunked = header_str(&parts.headers, "x-amz-content-sha256")
        == Some(millrace_wire::sigv4::STREAMING_PAYLOAD);
    // Body parse before the operation check, as AWS does.
    if body.is_empty() {
        let kind = if operation.is_some() || firehose_operation.is_some() {
            ErrorKind::SerializationException
        } else {
            ErrorKind::UnknownOperationException
        };
        return error_response(format, kind, None);
    }
    // The hot requests (PutRecords, PutRecord) decode in one pass here; a body the fast
    // decoder accepts is valid, so its syntax needs no separate check. Anything it declines
    // takes the ordinary path below, errors included, in AWS's order.
    let mut predecoded = match operation {
        Some(operation) if !chunked => kinesis::fast::decode(operation, format, &body),
        _ => None,
    };
    if !chunked && predecoded.is_none() && !parses(format, &body) {
        return error_response(format, ErrorKind::SerializationException, None);
    }
    if operation.is_none() && firehose_operation.is_none() {
        return error_response(format, ErrorKind::UnknownOperationException, None);
    }
    // The SigV4 scope names the service the client signed for.
    let signing_service = if firehose_operation.is_some() {
        "firehose"
    } else {
        auth::SIGNING_SERVICE
    };
    let received = body.clone();
    let (identity, body) = match authenticate(app, &parts, body, signing_service) {
        Ok(pair) => pair,
        Err((kind, message)) => return error_response(format, kind, Some(&message)),
    };
    if body.as_ptr() != received.as_ptr() || body.len() != received.len() {
        // Authentication decoded the body (aws-chunked): what was decoded before is stale.
        predecoded = None;
    }
    if chunked && !parses(format, &body) {
        return error_response(format, ErrorKind::SerializationException, None);
    }
    if let Some(operation) = firehose_operation {
        let secure = parts.extensions.get::<SecureTransport>().is_some();
        return Box::pin(firehose::respond(
            app, identity, request_id, format, operation, &body, secure,
        ))
        .await;
    }
    let Some(operation) = operation else {
        return error_response(format, ErrorKind::UnknownOperationException, None);
    };
    tracing::Span::current().record("target", operation.name());
    let ctx = RequestContext {
        account: identity.account,
        region: identity.region,
        request_id: request_id.to_string(),
        principal: identity.principal.as_ref().map(|p| p.arn.clone()),
    };
    let decoded =
        match predecoded.map_or_else(|| kinesis::decode_request(operation, format, &body), Ok) {
            Ok(decoded) => decoded,
            Err(error) => return error_response(format, error.kind, error.message.as_deref()),
        };
    if let (Some(security), Some(principal)) = (&app.security, &identity.principal) {
        let secure = parts.extensions.get::<SecureTransport>().is_some();
        if let Err((kind, message)) =
            security
                .authorizer
                .authorize(&app.streams, principal, &ctx, &decoded, secure)
        {
            return error_response(format, kind, Some(&message));
        }
    }
    if let kinesis::Request::SubscribeToShard(input) = decoded {
        return subscribe::respond(app, &ctx, format, input, &parts.headers);
    }
    let logged_stream = app
        .access_log
        .then(|| authz::resource_of(&app.streams, &ctx, &decoded))
        .and_then(|arn| metrics::stream_name_in_arn(&arn).map(str::to_string));
    let mut counted = metrics::Counted::of(&decoded);
    // Puts find their stream's counters before the action, so that a stream with
    // shard-level metrics on gets each record's size (the response lists only shard ids).
    let put_metrics = match &counted {
        Some(
            metrics::Counted::PutRecord { stream, .. }
            | metrics::Counted::PutRecords { stream, .. },
        ) => app
            .kinesis_metrics
            .stream(&ctx.account, &ctx.region, stream)
            .inspect(|m| {
                m.shard_level.load_once(|| {
                    app.streams
                        .enhanced_metrics(&ctx.account, &ctx.region, stream)
                })
            }),
        _ => None,
    };
    if let (Some(m), Some(metrics::Counted::PutRecords { record_bytes, .. })) =
        (&put_metrics, &mut counted)
        && m.shard_level.any_enabled()
    {
        *record_bytes = metrics::record_sizes(&decoded);
    }
    let deleted = match &decoded {
        kinesis::Request::DeleteStream(input) => input.stream_name.clone().or_else(|| {
            input
                .stream_arn
                .as_deref()
                .and_then(metrics::stream_name_in_arn)
                .map(str::to_string)
        }),
        _ => None,
    };
    let mut reserved = None;
    if let kinesis::Request::GetRecords(_) = &decoded {
        match reserve_response(app, GET_RECORDS_RESERVE_BYTES).await {
            Some(permit) => reserved = Some(permit),
            None => {
                return error_response(
                    format,
                    ErrorKind::ServiceUnavailableException,
                    Some("The server is busy. Retry the request."),
                );
            }
        }
    }
    let started = Instant::now();
    let result = app.streams.handle(&ctx, decoded).await;
    if let Some(counted) = &counted {
        let throttle_message = match &result {
            Err(millrace_streams::Error::ThroughputExceeded { message }) => Some(message.as_str()),
            _ => None,
        };
        let (stream_metrics, shard) = match counted {
            metrics::Counted::PutRecord { .. } | metrics::Counted::PutRecords { .. } => (
                put_metrics,
                throttle_message
                    .and_then(metrics::shard_in_throttle_message)
                    .map(str::to_string),
            ),
            metrics::Counted::GetRecords { iterator } => {
                match app.streams.iterator_stream_shard(iterator) {
                    Some((stream, shard)) => {
                        let found = app
                            .kinesis_metrics
                            .stream(&ctx.account, &ctx.region, &stream)
                            .inspect(|m| {
                                m.shard_level.load_once(|| {
                                    app.streams
                                        .enhanced_metrics(&ctx.account, &ctx.region, &stream)
                                })
                            });
                        (found, Some(shard))
                    }
                    None => (None, None),
                }
            }
        };
        if let Some(stream_metrics) = stream_metrics {
            metrics::count(
                &stream_metrics,
                counted,
                result.as_ref().ok(),
                throttle_message.is_some(),
                shard.as_deref(),
                started.elapsed().as_micros() as u64,
            );
        }
    }
    if let Ok(
        kinesis::Response::EnableEnhancedMonitoring(output)
        | kinesis::Response::DisableEnhancedMonitoring(output),
    ) = &result
        && let Some(arn) = &output.stream_arn
        && let Some((account, region, name)) = metrics::parse_stream_arn(arn)
        && let Some(stream_metrics) = app.kinesis_metrics.stream(account, region, name)
    {
        stream_metrics.shard_level.set_enabled(
            &output
                .desired_shard_level_metrics
                .as_ref()
                .map_or_else(Vec::new, |names| {
                    names.iter().map(|n| n.as_str().to_string()).collect()
                }),
        );
    }
    if let (Some(stream), Ok(_)) = (&deleted, &result) {
        app.kinesis_metrics
            .forget(&ctx.account, &ctx.region, stream);
    }
    let mut response = match result {
        Ok(response) => {
            let body = kinesis::encode_response(format, &response);
            drop(response);
            match reserved {
                Some(permit) => budgeted(format.content_type(), body, permit),
                None => simple(StatusCode::OK, format.content_type(), body),
            }
        }
        Err(error) => service_error(format, &error, request_id),
    };
    if let Some(stream) = logged_stream {
        response.extensions_mut().insert(LoggedStream(stream));
    }
    response
}

/// The stream a request named, for the access log.
#[derive(Clone, Debug)]
struct LoggedStream(String);

fn parses(format: Format, body: &[u8]) -> bool {
    match format {
        Format::Json => millrace_wire::json::is_valid(body),
        Format::Cbor => millrace_wire::cbor::parse(body).is_ok(),
    }
}

/// Authentication (`auth`): the verified principal with configured credentials, else
/// development mode's identification. Returns the body to use (decoded when aws-chunked).
fn authenticate(
    app: &App,
    parts: &http::request::Parts,
    body: Bytes,
    service: &str,
) -> Result<(auth::Identity, Bytes), auth::AuthError> {
    let Some(security) = &app.security else {
        let identity = auth::identify(&parts.headers, parts.uri.query(), &app.config)?;
        return Ok((identity, body));
    };
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (identity, decoded) = security
        .authenticator
        .authenticate(parts, &body, now_secs, service)?;
    Ok((identity, decoded.map(Bytes::from).unwrap_or(body)))
}

pub(crate) fn service_error(
    format: Format,
    error: &millrace_streams::Error,
    request_id: &str,
) -> Response<Body> {
    let (kind, message) = error.to_aws();
    if error.is_internal() {
        tracing::error!(%request_id, %error, "request failed inside Millrace");
    } else {
        tracing::debug!(%error, "request refused");
    }
    error_response(format, kind, message.as_deref())
}

pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
