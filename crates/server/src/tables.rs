//! Routing of DynamoDB (`DynamoDB_20120810.*`, JSON 1.0) and CloudWatch (awsQuery form
//! posts, `GraniteServiceVersion20100801.*` JSON 1.0, and RPC v2 CBOR at
//! `/service/GraniteServiceVersion20100801/operation/<Operation>`) to the tables service.
//!
//! As with Firehose, the server does not depend on the service crate: the binary hands in a
//! [`TablesService`], which takes body bytes and gives back an [`TablesAnswer`] (status,
//! content type, headers, body), so the DynamoDB and CloudWatch formats stay in that crate.
//! This module does the HTTP part: recognising the request, reading the body under the same
//! limits as every request, SigV4 authentication (signing names `dynamodb` and
//! `monitoring`), and, with credentials configured, the principal's identity policies
//! (`dynamodb:<Operation>` on the table's ARN, `cloudwatch:<Operation>` on `*`). The
//! service call runs on the blocking pool: a write commits (fsyncs) before it answers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use millrace_wire::{ErrorKind, Format};

use crate::{
    App, BODY_READ_TIMEOUT_MS, Body, REQUEST_BODY_BYTES_MAX, SecureTransport, error_response,
    simple,
};

const DYNAMODB_PREFIX: &str = "DynamoDB_20120810";
const CLOUDWATCH_PREFIX: &str = "GraniteServiceVersion20100801";
const CLOUDWATCH_CBOR_PATH: &str = "/service/GraniteServiceVersion20100801/operation/";

/// Which API a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TablesApi {
    DynamoDb,
    CloudWatch,
}

/// The protocol of a CloudWatch request (DynamoDB is always JSON 1.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TablesProtocol {
    Json10,
    Query,
    RpcV2Cbor,
}

/// One request for the tables service, after authentication.
#[derive(Debug, Clone)]
pub struct TablesCall {
    pub api: TablesApi,
    pub protocol: TablesProtocol,
    /// Empty for awsQuery, whose body names the action.
    pub operation: String,
    pub body: Bytes,
    pub account: String,
    pub region: String,
    pub request_id: String,
}

/// The service's answer, as bytes.
#[derive(Debug, Clone)]
pub struct TablesAnswer {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// DynamoDB tables and CloudWatch metrics, as the server calls them. `call` blocks (it
/// commits to disk); the server runs it on the blocking pool.
pub trait TablesService: Send + Sync + 'static {
    fn call(&self, call: TablesCall) -> TablesAnswer;

    /// Deletes every table and metric (`POST /moto-api/reset`).
    fn reset(&self) -> Result<(), String>;

    /// Stores datapoints of a service's own namespace (`AWS/Kinesis`, `AWS/Firehose`) at
    /// `at_secs`: the metrics roll-up.
    fn put_service_metrics(
        &self,
        _namespace: &str,
        _at_secs: f64,
        _data: &[crate::metrics::Datum],
    ) -> Result<(), String> {
        Ok(())
    }
}

/// The API, protocol and operation a request is for, if the tables service takes it.
pub(crate) fn claim(
    app: &App,
    request: &Request<Incoming>,
    target: &str,
) -> Option<(TablesApi, TablesProtocol, String)> {
    app.tables.as_ref()?;
    if request.method() != Method::POST {
        return None;
    }
    if let Some((service, operation)) = target.split_once('.') {
        return match service {
            DYNAMODB_PREFIX => Some((
                TablesApi::DynamoDb,
                TablesProtocol::Json10,
                operation.to_string(),
            )),
            CLOUDWATCH_PREFIX => Some((
                TablesApi::CloudWatch,
                TablesProtocol::Json10,
                operation.to_string(),
            )),
            _ => None,
        };
    }
    let path = request.uri().path();
    if let Some(operation) = path.strip_prefix(CLOUDWATCH_CBOR_PATH) {
        return Some((
            TablesApi::CloudWatch,
            TablesProtocol::RpcV2Cbor,
            operation.to_string(),
        ));
    }
    let form = crate::header_str(request.headers(), "content-type").is_some_and(|c| {
        c.to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    // Kinesis never posts forms: a form post is CloudWatch's awsQuery.
    form.then(|| (TablesApi::CloudWatch, TablesProtocol::Query, String::new()))
}

pub(crate) fn reset(app: &App, request_id: &str) {
    if let Some(tables) = &app.tables
        && let Err(error) = tables.reset()
    {
        tracing::error!(%request_id, %error, "tables reset failed");
    }
}

fn answer(a: TablesAnswer) -> Response<Body> {
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = simple(status, a.content_type, a.body);
    for (name, value) in a.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// The `Action` of an awsQuery body.
fn query_action(body: &[u8]) -> String {
    std::str::from_utf8(body)
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("Action="))
        .unwrap_or("")
        .to_string()
}

/// The table a DynamoDB request names, for authorization.
fn table_name(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    if let Some(name) = value.get("TableName").and_then(|v| v.as_str()) {
        return Some(name.to_string());
    }
    value
        .get("ResourceArn")
        .and_then(|v| v.as_str())
        .and_then(|arn| arn.split_once(":table/"))
        .map(|(_, rest)| rest.split('/').next().unwrap_or(rest).to_string())
}

pub(crate) async fn respond(
    app: &Arc<App>,
    request: Request<Incoming>,
    request_id: &str,
    (api, protocol, operation): (TablesApi, TablesProtocol, String),
) -> Response<Body> {
    let Some(service) = app.tables.clone() else {
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
    let signing_service = match api {
        TablesApi::DynamoDb => "dynamodb",
        TablesApi::CloudWatch => "monitoring",
    };
    let (identity, body) = match crate::authenticate(app, &parts, body, signing_service) {
        Ok(pair) => pair,
        Err((kind, message)) => return error_response(Format::Json, kind, Some(&message)),
    };
    let operation = if protocol == TablesProtocol::Query {
        query_action(&body)
    } else {
        operation
    };
    tracing::Span::current().record("target", operation.as_str());
    if let (Some(security), Some(principal)) = (&app.security, &identity.principal) {
        let (action, resource) = match api {
            TablesApi::DynamoDb => (
                format!("dynamodb:{operation}"),
                table_name(&body)
                    .map(|t| {
                        format!(
                            "arn:aws:dynamodb:{}:{}:table/{t}",
                            identity.region, identity.account
                        )
                    })
                    .unwrap_or_else(|| "*".to_string()),
            ),
            TablesApi::CloudWatch => (format!("cloudwatch:{operation}"), "*".to_string()),
        };
        let secure = parts.extensions.get::<SecureTransport>().is_some();
        if let Err((kind, message)) = security
            .authorizer
            .authorize_identity(principal, &action, &resource, secure)
        {
            return error_response(Format::Json, kind, Some(&message));
        }
    }
    let call = TablesCall {
        api,
        protocol,
        operation,
        body,
        account: identity.account,
        region: identity.region,
        request_id: request_id.to_string(),
    };
    match tokio::task::spawn_blocking(move || service.call(call)).await {
        Ok(a) => answer(a),
        Err(error) => {
            tracing::error!(%request_id, %error, "tables request panicked");
            let mut response = simple(
                StatusCode::INTERNAL_SERVER_ERROR,
                "application/x-amz-json-1.0",
                "{}",
            );
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}
