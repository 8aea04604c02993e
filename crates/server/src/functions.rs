//! Routing of the Lambda API (`/2015-03-31/...`, REST-JSON) to the function consumers
//! service.
//!
//! The server does not depend on the functions crate: the binary hands the service in as a
//! [`FunctionsService`]. A request under `/2015-03-31/` takes this path instead of the
//! `X-Amz-Target` one: its body is read under `LAMBDA_BODY_BYTES_MAX` (Lambda's 6 MB),
//! authenticated with the SigV4 service name `lambda`, authorized as `lambda:<Operation>` on
//! the resource the service names, and answered with what the service returns. Errors are
//! Lambda's REST-JSON errors: the status, `x-amzn-ErrorType` and `{"Type", "message"}`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use millrace_streams::RequestContext;

use crate::{App, BODY_READ_TIMEOUT_MS, Body, simple};

/// Paths of the Lambda API.
pub const LAMBDA_PATH_PREFIX: &str = "/2015-03-31/";
/// Largest Lambda request body (the synchronous payload limit).
pub const LAMBDA_BODY_BYTES_MAX: usize = 6 * 1024 * 1024;
const SIGNING_SERVICE: &str = "lambda";

/// A REST answer: status, JSON body, and the error type of an error answer.
#[derive(Debug, Clone)]
pub struct RestAnswer {
    pub status: u16,
    pub body: Vec<u8>,
    pub error_type: Option<String>,
    /// Logged at error level (never sent) when the service failed inside.
    pub internal_detail: Option<String>,
}

/// The function consumers service, as the server calls it.
pub trait FunctionsService: Send + Sync + 'static {
    /// The operation (`CreateEventSourceMapping`) and resource ARN (or `*`) of a request,
    /// for authorization; `None` for paths that are no operation.
    fn operation(
        &self,
        method: &str,
        path: &str,
        account: &str,
        region: &str,
    ) -> Option<(&'static str, String)>;

    fn handle<'a>(
        &'a self,
        ctx: &'a RequestContext,
        method: &'a str,
        path: &'a str,
        query: &'a str,
        body: &'a [u8],
    ) -> BoxFuture<'a, RestAnswer>;

    /// Deletes every mapping and function (`POST /moto-api/reset`).
    fn reset(&self) -> BoxFuture<'_, Result<(), String>>;
}

pub(crate) fn serves(app: &App, path: &str) -> bool {
    app.functions.is_some() && path.starts_with(LAMBDA_PATH_PREFIX)
}

pub(crate) async fn reset(app: &App, request_id: &str) {
    if let Some(functions) = &app.functions
        && let Err(error) = functions.reset().await
    {
        tracing::error!(%request_id, %error, "function consumers reset failed");
    }
}

fn lambda_error(status: u16, error_type: &str, message: &str) -> Response<Body> {
    let kind = if status >= 500 { "Service" } else { "User" };
    let body = serde_json::json!({"Type": kind, "message": message}).to_string();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = simple(status, "application/json", body);
    if let Ok(value) = HeaderValue::from_str(error_type) {
        response.headers_mut().insert("x-amzn-ErrorType", value);
    }
    response
}

/// Serves one Lambda API request.
pub(crate) async fn respond(
    app: &Arc<App>,
    request: Request<Incoming>,
    request_id: &str,
) -> Response<Body> {
    let Some(functions) = &app.functions else {
        return lambda_error(404, "UnknownOperationException", "Unknown operation");
    };
    let (parts, body) = request.into_parts();
    let collected = tokio::time::timeout(
        Duration::from_millis(BODY_READ_TIMEOUT_MS),
        Limited::new(body, LAMBDA_BODY_BYTES_MAX).collect(),
    )
    .await;
    let body: Bytes = match collected {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(_)) => {
            return lambda_error(
                413,
                "RequestTooLargeException",
                &format!("Request must be smaller than {LAMBDA_BODY_BYTES_MAX} bytes."),
            );
        }
        Err(_) => {
            return lambda_error(
                400,
                "InvalidRequestContentException",
                "The request body did not arrive in time.",
            );
        }
    };
    let (identity, body) = match crate::authenticate(app, &parts, body, SIGNING_SERVICE) {
        Ok(pair) => pair,
        Err((kind, message)) => return lambda_error(403, kind.type_name(), &message),
    };
    let method = parts.method.as_str();
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or("");
    let operation = functions.operation(method, path, &identity.account, &identity.region);
    if let Some((name, _)) = &operation {
        tracing::Span::current().record("target", *name);
    }
    if let (Some(security), Some(principal), Some((name, resource))) =
        (&app.security, &identity.principal, &operation)
    {
        let secure = parts.extensions.get::<crate::SecureTransport>().is_some();
        let action = format!("lambda:{name}");
        if let Err((kind, message)) = security
            .authorizer
            .authorize_identity(principal, &action, resource, secure)
        {
            return lambda_error(403, kind.type_name(), &message);
        }
    }
    let ctx = RequestContext {
        account: identity.account,
        region: identity.region,
        request_id: request_id.to_string(),
        principal: identity.principal.as_ref().map(|p| p.arn.clone()),
    };
    let answer = functions.handle(&ctx, method, path, query, &body).await;
    if let Some(detail) = &answer.internal_detail {
        tracing::error!(%request_id, %detail, "Lambda API request failed inside Millrace");
    }
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = if answer.body.is_empty() {
        let mut response = Response::new(crate::full(Bytes::new()));
        *response.status_mut() = status;
        response
    } else {
        simple(status, "application/json", answer.body)
    };
    if let Some(error_type) = &answer.error_type
        && let Ok(value) = HeaderValue::from_str(error_type)
    {
        response.headers_mut().insert("x-amzn-ErrorType", value);
    }
    response
}
