//! The web console at `/console`: one static page (HTML, CSS and JavaScript embedded in the
//! binary with `include_str!`, no build step, nothing fetched from elsewhere) and its one
//! JSON endpoint, `/console/api/metrics` (the running totals of `metrics`).
//!
//! Everything else the page shows it reads through the ordinary AWS APIs on this same
//! endpoint (ListStreams, ListShards, GetShardIterator, GetRecords, ListStreamConsumers,
//! ListDeliveryStreams, ListApplications, DescribeApplication, the video `/listStreams`,
//! `/listFragments`, `/getHLSStreamingSessionURL`, ...). In development mode the page signs
//! with a placeholder, which is accepted. With `[[credential]]`s configured, the calls are
//! refused until the user signs in: the page asks for an access key id and secret access
//! key, keeps them in the tab's `sessionStorage` only, and signs every call with SigV4 in
//! the browser (`app.js`, HMAC-SHA256 and SHA-256 from WebCrypto), so the server checks
//! the console's calls like any SDK's: same authentication, same policies, no bypass.
//! WebCrypto exists only in secure contexts (https, or http on localhost/127.0.0.1).
//!
//! Video playback: the page opens an HLS session and plays its fMP4 init segment and media
//! fragments with Media Source Extensions (hand-written, no player library).

use std::sync::Arc;

use http::{Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::{App, Body, simple};

const INDEX_HTML: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const STYLE_CSS: &str = include_str!("console/style.css");

/// True for the paths the console answers.
pub(crate) fn serves(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

pub(crate) fn respond(app: &Arc<App>, path: &str) -> Response<Body> {
    match path {
        "/console" | "/console/" | "/console/index.html" => {
            simple(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML)
        }
        "/console/app.js" => simple(
            StatusCode::OK,
            "application/javascript; charset=utf-8",
            APP_JS,
        ),
        "/console/style.css" => simple(StatusCode::OK, "text/css; charset=utf-8", STYLE_CSS),
        "/console/api/metrics" => simple(
            StatusCode::OK,
            "application/json",
            metrics_json(app).to_string(),
        ),
        _ => simple(
            StatusCode::NOT_FOUND,
            "application/json",
            r#"{"message":"no such console page"}"#,
        ),
    }
}

/// `{"now_ms", "streams": [{account, region, name, metrics: {AWS name: {count, sum}}}],
/// "delivery_streams": [{account, region, name, metrics: {AWS name: total}}],
/// "video_streams" and "analytics": [{key: "account/region/...", metrics: {name: total}}]}`.
fn metrics_json(app: &App) -> Value {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let streams: Vec<Value> = app
        .kinesis_metrics
        .totals()
        .into_iter()
        .map(|(key, values)| {
            let metrics: Map<String, Value> = values
                .into_iter()
                .map(|(name, count, sum)| (name.to_string(), json!({"count": count, "sum": sum})))
                .collect();
            json!({"account": key.account, "region": key.region, "name": key.name, "metrics": metrics})
        })
        .collect();
    let delivery_streams: Vec<Value> = app
        .firehose
        .as_ref()
        .map(|f| f.metrics())
        .unwrap_or_default()
        .into_iter()
        .map(|(key, counters)| {
            let mut parts = key.splitn(3, '/');
            let account = parts.next().unwrap_or("");
            let region = parts.next().unwrap_or("");
            let name = parts.next().unwrap_or("");
            let metrics: Map<String, Value> = counters
                .into_iter()
                .map(|(n, v)| (n.to_string(), json!(v)))
                .collect();
            json!({"account": account, "region": region, "name": name, "metrics": metrics})
        })
        .collect();
    let counters = |totals: Vec<(String, Vec<(&'static str, u64)>)>| -> Vec<Value> {
        totals
            .into_iter()
            .map(|(key, counters)| {
                let metrics: Map<String, Value> = counters
                    .into_iter()
                    .map(|(n, v)| (n.to_string(), json!(v)))
                    .collect();
                json!({"key": key, "metrics": metrics})
            })
            .collect()
    };
    let video = counters(app.video.as_ref().map(|v| v.metrics()).unwrap_or_default());
    let analytics = counters(
        app.analytics
            .as_ref()
            .map(|a| a.metrics())
            .unwrap_or_default(),
    );
    json!({
        "now_ms": now_ms,
        "streams": streams,
        "delivery_streams": delivery_streams,
        "video_streams": video,
        "analytics": analytics,
    })
}
