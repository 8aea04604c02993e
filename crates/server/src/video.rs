//! Routing of the Kinesis Video Streams REST APIs (`/createStream`, `/putMedia`,
//! `/getMedia`, `/listFragments`, `/hls/v1/...` ...) to the video service.
//!
//! The server does not depend on the video crate: the binary hands the service in as a
//! [`VideoService`]. Unlike the other services, bodies stream both ways: a PutMedia upload
//! is handed over as it arrives (it may last hours) and the acknowledgements, GetMedia's
//! MKV and the like are sent as the service produces them. Requests are authenticated with
//! the SigV4 service name `kinesisvideo` (a streamed PutMedia body with an empty payload
//! hash, as the producer SDKs sign it); HLS and DASH session resources are authorized by
//! their session token, as on AWS; every other call is authorized as
//! `kinesisvideo:<Operation>` on the stream's ARN (`VideoService::resource_arn`). Errors
//! are REST-JSON: status, `x-amzn-ErrorType` and `{"Message"}`.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::{Frame, Incoming};

use crate::{App, Body, simple};

const SIGNING_SERVICE: &str = "kinesisvideo";

/// One request to the video service.
pub struct VideoCall {
    pub account: String,
    pub region: String,
    pub method: String,
    pub path: String,
    pub query: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    /// `http://host:port` as the client reached this server.
    pub endpoint: String,
    /// The request body as it arrives; an error ends it.
    pub body: BoxStream<'static, Result<Bytes, String>>,
}

pub enum VideoBody {
    Bytes(Vec<u8>),
    /// Sent as the service produces it (a bounded queue).
    Stream(tokio::sync::mpsc::Receiver<Bytes>),
}

pub struct VideoAnswer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: VideoBody,
    pub error_type: Option<&'static str>,
    /// Logged at error level (never sent) when the service failed inside.
    pub internal_detail: Option<String>,
}

/// The video service, as the server calls it.
pub trait VideoService: Send + Sync + 'static {
    /// Whether the path is one of the service's.
    fn serves(&self, path: &str) -> bool;
    /// The operation name of a path (`PutMedia`), for authorization and logs.
    fn operation(&self, path: &str) -> Option<&'static str>;
    /// The ARN the request acts on (a stream's, or `*`), from the `x-amzn-*` headers and
    /// the JSON body (empty for PutMedia), for authorization.
    fn resource_arn(
        &self,
        account: &str,
        region: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> String;
    fn handle(&self, call: VideoCall) -> BoxFuture<'static, VideoAnswer>;
    /// Deletes every video stream (`POST /moto-api/reset`).
    fn reset(&self) -> Result<(), String>;

    /// The `AWS/KinesisVideo` running totals of every video stream:
    /// (`account/region/name`, [(AWS metric name, total)]).
    fn metrics(&self) -> Vec<(String, Vec<(&'static str, u64)>)> {
        Vec::new()
    }
}

pub(crate) fn serves(app: &App, path: &str) -> bool {
    app.video.as_ref().is_some_and(|video| video.serves(path))
}

pub(crate) fn reset(app: &App, request_id: &str) {
    if let Some(video) = &app.video
        && let Err(error) = video.reset()
    {
        tracing::error!(%request_id, %error, "video streams reset failed");
    }
}

fn video_error(status: u16, error_type: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"Message": message}).to_string();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = simple(status, "application/json", body);
    if let Ok(value) = HeaderValue::from_str(error_type) {
        response.headers_mut().insert("x-amzn-ErrorType", value);
    }
    response
}

/// Serves one video request.
pub(crate) async fn respond(
    app: &Arc<App>,
    request: Request<Incoming>,
    request_id: &str,
) -> Response<Body> {
    let Some(video) = &app.video else {
        return video_error(404, "UnknownOperationException", "Unknown operation");
    };
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let session_resource = path.starts_with("/hls/v1/") || path.starts_with("/dash/v1/");
    let streamed = path == "/putMedia";
    // Bodies other than PutMedia's are small JSON: read them (bounded) to check signatures.
    let mut json = Bytes::new();
    let (identity, body): (_, BoxStream<'static, Result<Bytes, String>>) = if session_resource
        || streamed
    {
        let identity = if session_resource || app.security.is_none() {
            // Players and camera-side tools (ffmpeg, curl) do not sign: session resources
            // and, in development mode, PutMedia are served to unsigned requests in the
            // configured account and region.
            crate::auth::identify(&parts.headers, parts.uri.query(), &app.config).or_else(|error| {
                if crate::header_str(&parts.headers, "authorization").is_none() {
                    Ok(crate::auth::Identity {
                        account: app.config.account_id.clone(),
                        region: app.config.default_region.clone(),
                        principal: None,
                    })
                } else {
                    Err(error)
                }
            })
        } else {
            crate::authenticate(app, &parts, Bytes::new(), SIGNING_SERVICE)
                .map(|(identity, _)| identity)
        };
        let identity = match identity {
            Ok(identity) => identity,
            Err((kind, message)) => return video_error(403, kind.type_name(), &message),
        };
        let stream = BodyStream::new(body)
            .filter_map(|frame| async move {
                match frame {
                    Ok(frame) => frame.into_data().ok().map(Ok),
                    Err(error) => Some(Err(error.to_string())),
                }
            })
            .boxed();
        (identity, stream)
    } else {
        let collected = tokio::time::timeout(
            std::time::Duration::from_millis(crate::BODY_READ_TIMEOUT_MS),
            http_body_util::Limited::new(body, VIDEO_JSON_BODY_BYTES_MAX).collect(),
        )
        .await;
        let bytes = match collected {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(_)) => {
                return video_error(
                    413,
                    "InvalidArgumentException",
                    &format!("The request body is larger than {VIDEO_JSON_BODY_BYTES_MAX} bytes."),
                );
            }
            Err(_) => {
                return video_error(
                    400,
                    "InvalidArgumentException",
                    "The request body did not arrive in time.",
                );
            }
        };
        let (identity, bytes) = match crate::authenticate(app, &parts, bytes, SIGNING_SERVICE) {
            Ok(pair) => pair,
            Err((kind, message)) => return video_error(403, kind.type_name(), &message),
        };
        json = bytes.clone();
        (
            identity,
            futures::stream::once(async move { Ok(bytes) }).boxed(),
        )
    };
    let operation = video.operation(&path);
    if let Some(name) = operation {
        tracing::Span::current().record("target", name);
    }
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-amzn-"))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
        })
        .collect();
    if let (Some(security), Some(principal), Some(name)) =
        (&app.security, &identity.principal, operation)
    {
        let secure = parts.extensions.get::<crate::SecureTransport>().is_some();
        let action = format!("kinesisvideo:{name}");
        let resource = video.resource_arn(&identity.account, &identity.region, &headers, &json);
        if let Err((kind, message)) = security
            .authorizer
            .authorize_identity(principal, &action, &resource, secure)
        {
            return video_error(403, kind.type_name(), &message);
        }
    }
    let scheme = if app.tls.is_some() { "https" } else { "http" };
    let host = crate::header_str(&parts.headers, "host")
        .map(String::from)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| "127.0.0.1:4567".into());
    let call = VideoCall {
        account: identity.account,
        region: identity.region,
        method: parts.method.as_str().to_string(),
        path,
        query: parts.uri.query().unwrap_or("").to_string(),
        headers,
        endpoint: format!("{scheme}://{host}"),
        body,
    };
    let answer = video.handle(call).await;
    if let Some(detail) = &answer.internal_detail {
        tracing::error!(%request_id, %detail, "video request failed inside Millrace");
    }
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = match answer.body {
        VideoBody::Bytes(bytes) => simple(status, answer.content_type, bytes),
        VideoBody::Stream(receiver) => {
            let stream = futures::stream::unfold(receiver, |mut receiver| async move {
                receiver.recv().await.map(|bytes| {
                    (
                        Ok::<_, std::convert::Infallible>(Frame::data(bytes)),
                        receiver,
                    )
                })
            });
            let body = StreamBody::new(stream);
            let mut response = Response::new(BodyExt::boxed(body));
            *response.status_mut() = status;
            if let Ok(value) = HeaderValue::from_str(answer.content_type) {
                response.headers_mut().insert(header::CONTENT_TYPE, value);
            }
            response
        }
    };
    if let Some(error_type) = answer.error_type
        && let Ok(value) = HeaderValue::from_str(error_type)
    {
        response.headers_mut().insert("x-amzn-ErrorType", value);
    }
    response
}

/// Largest JSON request body of the video APIs.
pub const VIDEO_JSON_BODY_BYTES_MAX: usize = 1024 * 1024;
