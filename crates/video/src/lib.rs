//! Kinesis Video Streams: the control plane (`kinesisvideo`), PutMedia ingestion, the
//! fragment store, GetMedia, the archived-media APIs (ListFragments,
//! GetMediaForFragmentList, HLS and DASH sessions, GetClip, GetImages) and retention.
//!
//! No HTTP here: the server hands a [`Call`] in (method, path, query, the headers the APIs
//! read, the request body as a stream of bytes) and gets an [`Answer`] back (status, content
//! type, a body that is either bytes or a stream). JSON is parsed here because these are
//! REST-JSON APIs of their own, outside the `wire` crate's Kinesis protocols.
//!
//! State: stream metadata in `DATA_DIR/video/streams.json` (rewritten atomically with an
//! fsync on every control-plane change: control-plane rates are low), fragments in one
//! [`store::FragmentStore`] per stream under `DATA_DIR/video/streams/<uid>/`. Streaming
//! sessions (HLS, DASH) live in memory and end with the process, as their URLs expire.

pub mod error;
pub mod mkv;
pub mod mp4;
pub mod store;
pub mod ts;

mod api;
mod media;
pub mod metrics;
mod playback;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use millrace_log::Clock;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

pub use error::{AckError, AwsError, VideoError};

/// Video streams per account and region.
pub const STREAMS_MAX: usize = 10_000;
/// Tags per stream (AWS: 50).
pub const TAGS_MAX: usize = 50;
/// Largest JSON request body.
pub const JSON_BODY_BYTES_MAX: usize = 1024 * 1024;
/// Open HLS/DASH sessions at most (expired ones are dropped first).
pub const SESSIONS_MAX: usize = 10_000;

/// A request body, as it arrives.
pub type BodyStream = BoxStream<'static, Result<Bytes, BodyError>>;

/// The upload broke off (the connection failed or timed out).
#[derive(Debug, Clone, thiserror::Error)]
#[error("request body: {0}")]
pub struct BodyError(pub String);

/// One request, as the server hands it in.
pub struct Call {
    pub account: String,
    pub region: String,
    pub method: String,
    pub path: String,
    pub query: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    /// This server's base URL as the client reached it (`http://127.0.0.1:4567`): the data
    /// endpoint and the base of session URLs.
    pub endpoint: String,
    /// In a mutex only to make `Call` `Sync` (handlers hold `&Call` across awaits); it
    /// is never locked, only taken with `get_mut`.
    pub body: Mutex<BodyStream>,
}

impl Call {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key == name).then(|| percent_decode(value))
        })
    }
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(v) = u8::from_str_radix(hex, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b == b'+' { b' ' } else { b });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The body of an answer.
pub enum AnswerBody {
    Bytes(Vec<u8>),
    /// Sent as it is produced (PutMedia acknowledgements, GetMedia), through a bounded
    /// queue.
    Stream(tokio::sync::mpsc::Receiver<Bytes>),
}

pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: AnswerBody,
    /// `x-amzn-ErrorType` of an error answer.
    pub error_type: Option<&'static str>,
    /// Logged (never sent) when the request failed inside Millrace.
    pub internal_detail: Option<String>,
}

impl Answer {
    fn json(value: &serde_json::Value) -> Answer {
        Answer {
            status: 200,
            content_type: "application/json",
            body: AnswerBody::Bytes(serde_json::to_vec(value).unwrap_or_default()),
            error_type: None,
            internal_detail: None,
        }
    }

    fn bytes(content_type: &'static str, bytes: Vec<u8>) -> Answer {
        Answer {
            status: 200,
            content_type,
            body: AnswerBody::Bytes(bytes),
            error_type: None,
            internal_detail: None,
        }
    }

    pub fn error(error: &VideoError) -> Answer {
        let aws = error.to_aws();
        Answer {
            status: aws.status,
            content_type: "application/json",
            body: AnswerBody::Bytes(
                serde_json::to_vec(&serde_json::json!({"Message": aws.message}))
                    .unwrap_or_default(),
            ),
            error_type: Some(aws.error_type),
            internal_detail: error.is_internal().then(|| error.to_string()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct VideoConfig {
    /// `DATA_DIR/video`.
    pub dir: PathBuf,
    /// A PutMedia upload that sends nothing for this long is ended (STREAM_READ_ERROR).
    pub put_media_idle_timeout_ms: u64,
    /// GetMedia ends after it has caught up and no fragment arrived for this long.
    pub get_media_idle_ms: u64,
}

impl VideoConfig {
    pub fn new(data_dir: &Path) -> VideoConfig {
        VideoConfig {
            dir: data_dir.join("video"),
            put_media_idle_timeout_ms: 30_000,
            get_media_idle_ms: 3_000,
        }
    }
}

/// A stream's metadata, as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StreamMeta {
    account: String,
    region: String,
    name: String,
    arn: String,
    uid: u64,
    device_name: Option<String>,
    media_type: Option<String>,
    kms_key_id: Option<String>,
    version: String,
    creation_ms: i64,
    retention_hours: u32,
    tags: std::collections::BTreeMap<String, String>,
}

/// A stream's fragments and the signal of new ones.
struct StreamData {
    store: Mutex<store::FragmentStore>,
    dir: PathBuf,
    /// The newest appended sequence number (GetMedia waits on it).
    appended: tokio::sync::watch::Sender<u64>,
}

struct Inner {
    config: VideoConfig,
    clock: Arc<dyn Clock>,
    streams: Mutex<Vec<StreamMeta>>,
    data: Mutex<HashMap<u64, Arc<StreamData>>>,
    sessions: Mutex<HashMap<String, playback::Session>>,
    metrics: metrics::VideoMetrics,
}

/// The Video Streams service.
#[derive(Clone)]
pub struct Video {
    inner: Arc<Inner>,
}

const CONTROL_PATHS: &[&str] = &[
    "/createStream",
    "/describeStream",
    "/listStreams",
    "/deleteStream",
    "/updateStream",
    "/updateDataRetention",
    "/getDataEndpoint",
    "/tagStream",
    "/untagStream",
    "/listTagsForStream",
    "/TagResource",
    "/UntagResource",
    "/ListTagsForResource",
];
const DATA_PATHS: &[&str] = &[
    "/putMedia",
    "/getMedia",
    "/listFragments",
    "/getMediaForFragmentList",
    "/getHLSStreamingSessionURL",
    "/getDASHStreamingSessionURL",
    "/getClip",
    "/getImages",
];

impl Video {
    /// Opens the catalog and every stream's fragment store (recovering torn tails).
    pub fn open(config: VideoConfig, clock: Arc<dyn Clock>) -> Result<Video, VideoError> {
        std::fs::create_dir_all(config.dir.join("streams"))?;
        let catalog = config.dir.join("streams.json");
        let streams: Vec<StreamMeta> = match std::fs::read(&catalog) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| VideoError::Corrupt {
                detail: format!("{}: {e}", catalog.display()),
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(error.into()),
        };
        let mut data = HashMap::new();
        for stream in &streams {
            data.insert(stream.uid, Arc::new(open_data(&config.dir, stream.uid)?));
        }
        Ok(Video {
            inner: Arc::new(Inner {
                config,
                clock,
                streams: Mutex::new(streams),
                data: Mutex::new(data),
                sessions: Mutex::new(HashMap::new()),
                metrics: metrics::VideoMetrics::default(),
            }),
        })
    }

    /// Whether a path is one of this service's.
    pub fn serves(path: &str) -> bool {
        CONTROL_PATHS.contains(&path)
            || DATA_PATHS.contains(&path)
            || path.starts_with("/hls/v1/")
            || path.starts_with("/dash/v1/")
    }

    /// The operation name of a path (for authorization and logs).
    pub fn operation(path: &str) -> Option<&'static str> {
        let name = CONTROL_PATHS
            .iter()
            .chain(DATA_PATHS)
            .find(|p| **p == path)
            .map(|p| p.trim_start_matches('/'))?;
        Some(match name {
            "createStream" => "CreateStream",
            "describeStream" => "DescribeStream",
            "listStreams" => "ListStreams",
            "deleteStream" => "DeleteStream",
            "updateStream" => "UpdateStream",
            "updateDataRetention" => "UpdateDataRetention",
            "getDataEndpoint" => "GetDataEndpoint",
            "tagStream" => "TagStream",
            "untagStream" => "UntagStream",
            "listTagsForStream" => "ListTagsForStream",
            "TagResource" => "TagResource",
            "UntagResource" => "UntagResource",
            "ListTagsForResource" => "ListTagsForResource",
            "putMedia" => "PutMedia",
            "getMedia" => "GetMedia",
            "listFragments" => "ListFragments",
            "getMediaForFragmentList" => "GetMediaForFragmentList",
            "getHLSStreamingSessionURL" => "GetHLSStreamingSessionURL",
            "getDASHStreamingSessionURL" => "GetDASHStreamingSessionURL",
            "getClip" => "GetClip",
            "getImages" => "GetImages",
            _ => return None,
        })
    }

    /// Serves one request.
    pub async fn handle(&self, call: Call) -> Answer {
        let result = self.dispatch(call).await;
        match result {
            Ok(answer) => answer,
            Err(error) => Answer::error(&error),
        }
    }

    async fn dispatch(&self, call: Call) -> Result<Answer, VideoError> {
        let path = call.path.clone();
        if let Some(rest) = path.strip_prefix("/hls/v1/") {
            return self.hls_resource(&call, rest).await;
        }
        if let Some(rest) = path.strip_prefix("/dash/v1/") {
            return self.dash_resource(&call, rest).await;
        }
        if call.method != "POST" {
            return Err(VideoError::UnknownOperation { path });
        }
        if path == "/putMedia" {
            return self.put_media(call).await;
        }
        let (call, body) = read_json(call).await?;
        match path.as_str() {
            "/createStream" => self.create_stream(&call, &body),
            "/describeStream" => self.describe_stream(&call, &body),
            "/listStreams" => self.list_streams(&call, &body),
            "/deleteStream" => self.delete_stream(&call, &body),
            "/updateStream" => self.update_stream(&call, &body),
            "/updateDataRetention" => self.update_data_retention(&call, &body),
            "/getDataEndpoint" => self.get_data_endpoint(&call, &body),
            "/tagStream" | "/TagResource" => self.tag_stream(&call, &body),
            "/untagStream" | "/UntagResource" => self.untag_stream(&call, &body),
            "/listTagsForStream" | "/ListTagsForResource" => {
                self.list_tags_for_stream(&call, &body)
            }
            "/getMedia" => self.get_media(&call, &body).await,
            "/listFragments" => self.list_fragments(&call, &body),
            "/getMediaForFragmentList" => self.get_media_for_fragment_list(&call, &body).await,
            "/getHLSStreamingSessionURL" => self.create_session(&call, &body, false),
            "/getDASHStreamingSessionURL" => self.create_session(&call, &body, true),
            "/getClip" => self.get_clip(&call, &body).await,
            "/getImages" => self.get_images(&call, &body).await,
            _ => Err(VideoError::UnknownOperation { path }),
        }
    }

    /// The `AWS/KinesisVideo` running totals of every stream: (`account/region/name`,
    /// [(AWS metric name, total)]), sorted by key (`metrics`).
    pub fn metrics(&self) -> Vec<(String, Vec<(&'static str, u64)>)> {
        let live: Vec<String> = (self.inner.streams.lock().iter())
            .map(|s| format!("{}/{}/{}", s.account, s.region, s.name))
            .collect();
        self.inner.metrics.totals(&live)
    }

    /// Counts toward a stream's `AWS/KinesisVideo` metric.
    fn count(&self, stream: &StreamMeta, metric: metrics::Metric, value: u64) {
        (self.inner.metrics).add(&stream.account, &stream.region, &stream.name, metric, value);
    }

    /// Deletes every stream (the test-hygiene reset).
    /// The ARN a request acts on, for authorization (`kinesisvideo:<Operation>` on it): the
    /// `StreamARN` (or `ResourceARN`) of a JSON body or PutMedia's `x-amzn-stream-arn`;
    /// else the ARN of the stream a `StreamName` (or `x-amzn-stream-name`) names in the
    /// caller's account and region, or, when there is no such stream yet (CreateStream),
    /// `arn:aws:kinesisvideo:REGION:ACCOUNT:stream/NAME/*`; `*` for calls about no stream
    /// (ListStreams). A body that is not JSON names nothing: the action refuses it later.
    pub fn resource_arn(
        &self,
        account: &str,
        region: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> String {
        let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let field = |name: &str| {
            json.as_ref()
                .and_then(|v| v.get(name))
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
        };
        let header = |name: &str| {
            headers
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        if let Some(arn) = field("StreamARN")
            .or_else(|| field("ResourceARN"))
            .or_else(|| header("x-amzn-stream-arn"))
        {
            return arn;
        }
        let Some(name) = field("StreamName").or_else(|| header("x-amzn-stream-name")) else {
            return "*".into();
        };
        let streams = self.inner.streams.lock();
        streams
            .iter()
            .find(|s| s.account == account && s.region == region && s.name == name)
            .map(|s| s.arn.clone())
            .unwrap_or_else(|| format!("arn:aws:kinesisvideo:{region}:{account}:stream/{name}/*"))
    }

    pub fn reset(&self) -> Result<(), VideoError> {
        self.inner.metrics.clear();
        let uids: Vec<u64> = {
            let mut streams = self.inner.streams.lock();
            let uids = streams.iter().map(|s| s.uid).collect();
            streams.clear();
            self.save(&streams)?;
            uids
        };
        self.inner.sessions.lock().clear();
        for uid in uids {
            self.inner.data.lock().remove(&uid);
            let _ = std::fs::remove_dir_all(stream_dir(&self.inner.config.dir, uid));
        }
        Ok(())
    }

    fn now_ms(&self) -> i64 {
        self.inner.clock.now_millis()
    }

    fn save(&self, streams: &[StreamMeta]) -> Result<(), VideoError> {
        let dir = &self.inner.config.dir;
        let tmp = dir.join("streams.json.tmp");
        let bytes = serde_json::to_vec_pretty(streams).map_err(|e| VideoError::Corrupt {
            detail: e.to_string(),
        })?;
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, dir.join("streams.json"))?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }

    fn stream_data(&self, uid: u64) -> Result<Arc<StreamData>, VideoError> {
        self.inner
            .data
            .lock()
            .get(&uid)
            .cloned()
            .ok_or_else(|| VideoError::Corrupt {
                detail: format!("stream {uid} has no fragment store"),
            })
    }
}

fn stream_dir(dir: &Path, uid: u64) -> PathBuf {
    dir.join("streams").join(uid.to_string())
}

fn open_data(dir: &Path, uid: u64) -> Result<StreamData, VideoError> {
    let dir = stream_dir(dir, uid);
    let store = store::FragmentStore::open(&dir)?;
    let last = store.entries().last().map(|e| e.seq).unwrap_or(0);
    Ok(StreamData {
        store: Mutex::new(store),
        dir,
        appended: tokio::sync::watch::channel(last).0,
    })
}

/// Reads a JSON body (at most [`JSON_BODY_BYTES_MAX`]); an empty body is `{}`.
async fn read_json(mut call: Call) -> Result<(Call, serde_json::Value), VideoError> {
    use futures::StreamExt;
    let mut bytes = Vec::new();
    let body = call.body.get_mut();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| VideoError::invalid(e.to_string()))?;
        if bytes.len() + chunk.len() > JSON_BODY_BYTES_MAX {
            return Err(VideoError::BodyTooLarge {
                max: JSON_BODY_BYTES_MAX,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    let value = if bytes.iter().all(u8::is_ascii_whitespace) {
        serde_json::json!({})
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| VideoError::invalid(format!("The request body is not valid JSON: {e}")))?
    };
    if !value.is_object() {
        return Err(VideoError::invalid(
            "The request body must be a JSON object.",
        ));
    }
    Ok((call, value))
}

/// Fragment numbers: 47 decimal digits, increasing within a stream: a fixed prefix, the
/// stream's uid (16 digits) and the fragment's sequence number (20 digits).
const FRAGMENT_NUMBER_PREFIX: &str = "91343852333";

fn fragment_number(uid: u64, seq: u64) -> String {
    format!("{FRAGMENT_NUMBER_PREFIX}{uid:016}{seq:020}")
}

fn parse_fragment_number(uid: u64, number: &str) -> Option<u64> {
    if number.len() != 47 || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let expected = format!("{FRAGMENT_NUMBER_PREFIX}{uid:016}");
    if number.get(..27)? != expected {
        return None;
    }
    number.get(27..)?.parse().ok()
}

fn seconds(ms: i64) -> serde_json::Value {
    serde_json::json!(ms as f64 / 1000.0)
}
