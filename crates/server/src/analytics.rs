//! Routing of `KinesisAnalytics_20150814.*` (JSON 1.1) to the Analytics service.
//!
//! As with the tables service, the server does not depend on the service crate: the binary
//! hands in an [`AnalyticsService`], which takes the operation name and the JSON body and
//! gives back the JSON answer or an error (`__type`, message, status). This module does the
//! HTTP part: claiming the target, reading the body under the same limits as every request,
//! SigV4 authentication (signing name `kinesisanalytics`) and, with credentials configured,
//! the principal's identity policies (`kinesisanalytics:<Operation>` on the application's
//! ARN, `*` for ListApplications and DiscoverInputSchema).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use millrace_streams::RequestContext;
use millrace_wire::{ErrorKind, Format};

use crate::{
    App, BODY_READ_TIMEOUT_MS, Body, REQUEST_BODY_BYTES_MAX, SecureTransport, error_response,
    simple,
};

const TARGET_PREFIX: &str = "KinesisAnalytics_20150814";
const SIGNING_SERVICE: &str = "kinesisanalytics";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// An Analytics error as the client sees it.
#[derive(Debug, Clone)]
pub struct AnalyticsError {
    /// `__type`, e.g. `CodeValidationException`.
    pub error_type: String,
    pub message: String,
    pub status: u16,
    /// Logged at error level (never sent) when the service failed inside.
    pub internal_detail: Option<String>,
}

/// The Analytics service, as the server calls it.
pub trait AnalyticsService: Send + Sync + 'static {
    /// Whether the service has this operation.
    fn has_operation(&self, operation: &str) -> bool;

    /// The application ARN a request names (or `*`), for authorization.
    fn resource_arn(&self, account: &str, region: &str, body: &[u8]) -> String;

    fn handle<'a>(
        &'a self,
        ctx: &'a RequestContext,
        operation: &'a str,
        body: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, AnalyticsError>>;

    /// Deletes every application (`POST /moto-api/reset`).
    fn reset(&self) -> Result<(), String>;

    /// The `AWS/KinesisAnalytics` running totals of every application and flow:
    /// (`account/region/application/flow/id`, [(AWS metric name, total)]).
    fn metrics(&self) -> Vec<(String, Vec<(&'static str, u64)>)> {
        Vec::new()
    }
}

/// The operation a request is for, if the Analytics service takes it.
pub(crate) fn claim(app: &App, request: &Request<Incoming>, target: &str) -> Option<String> {
    app.analytics.as_ref()?;
    if request.method() != Method::POST {
        return None;
    }
    let (service, operation) = target.split_once('.')?;
    (service == TARGET_PREFIX).then(|| operation.to_string())
}

pub(crate) fn reset(app: &App, request_id: &str) {
    if let Some(analytics) = &app.analytics
        && let Err(error) = analytics.reset()
    {
        tracing::error!(%request_id, %error, "analytics reset failed");
    }
}

fn error(error_type: &str, message: &str, status: u16) -> Response<Body> {
    let body = serde_json::json!({"__type": error_type, "message": message}).to_string();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = simple(status, CONTENT_TYPE, body);
    if let Ok(value) = http::HeaderValue::from_str(error_type) {
        response.headers_mut().insert("x-amzn-ErrorType", value);
    }
    response
}

pub(crate) async fn respond(
    app: &Arc<App>,
    request: Request<Incoming>,
    request_id: &str,
    operation: String,
) -> Response<Body> {
    let Some(service) = app.analytics.clone() else {
        return error_response(Format::Json, ErrorKind::UnknownOperationException, None);
    };
    let (parts, body) = request.into_parts();
    let collected = tokio::time::timeout(
        Duration::from_millis(BODY_READ_TIMEOUT_MS),
        Limited::new(body, REQUEST_BODY_BYTES_MAX).collect(),
    )
    .await;
    let body = match collected {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(_)) => {
            return error_response(
                Format::Json,
                ErrorKind::RequestEntityTooLargeException,
                Some(&format!(
                    "Request body exceeds the limit of {REQUEST_BODY_BYTES_MAX} bytes."
                )),
            );
        }
        Err(_) => {
            return error_response(
                Format::Json,
                ErrorKind::ServiceUnavailableException,
                Some("The request body did not arrive in time."),
            );
        }
    };
    // AWS's order: body parse, then operation, then authentication.
    if body.is_empty() || !millrace_wire::json::is_valid(&body) {
        return error_response(Format::Json, ErrorKind::SerializationException, None);
    }
    if !service.has_operation(&operation) {
        return error_response(Format::Json, ErrorKind::UnknownOperationException, None);
    }
    let (identity, body) = match crate::authenticate(app, &parts, body, SIGNING_SERVICE) {
        Ok(pair) => pair,
        Err((kind, message)) => return error_response(Format::Json, kind, Some(&message)),
    };
    tracing::Span::current().record("target", operation.as_str());
    if let (Some(security), Some(principal)) = (&app.security, &identity.principal) {
        let action = format!("kinesisanalytics:{operation}");
        let resource = service.resource_arn(&identity.account, &identity.region, &body);
        let secure = parts.extensions.get::<SecureTransport>().is_some();
        if let Err((kind, message)) = security
            .authorizer
            .authorize_identity(principal, &action, &resource, secure)
        {
            return error_response(Format::Json, kind, Some(&message));
        }
    }
    let ctx = RequestContext {
        account: identity.account,
        region: identity.region,
        request_id: request_id.to_string(),
        principal: identity.principal.as_ref().map(|p| p.arn.clone()),
    };
    match service.handle(&ctx, &operation, &body).await {
        Ok(answer) => simple(StatusCode::OK, CONTENT_TYPE, answer),
        Err(e) => {
            if let Some(detail) = &e.internal_detail {
                tracing::error!(%request_id, %detail, "Analytics request failed inside Millrace");
            }
            error(&e.error_type, &e.message, e.status)
        }
    }
}
