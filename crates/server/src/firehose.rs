//! Routing of `Firehose_20150804.*` to the Firehose service.
//!
//! The server does not depend on the Firehose crate (its Parquet, object store and
//! PostgreSQL dependencies stay out of this crate's build): the binary hands the service in
//! as a [`FirehoseService`]. Requests go through the same front-end checks as Kinesis ones
//! (method, content type, body parse, operation, authentication) in `aws_request`; this module
//! decodes and validates the body against the Firehose model, calls the service and encodes
//! the answer. With credentials configured, the principal's identity policies must allow
//! `firehose:<Operation>` on the delivery stream's ARN (`*` for ListDeliveryStreams); Firehose
//! has no resource policies.

use std::sync::Arc;

use futures::future::BoxFuture;
use http::{Response, StatusCode};
use millrace_streams::RequestContext;
use millrace_wire::firehose::{self as fh, Operation};
use millrace_wire::{ErrorKind, Format};

use crate::{App, Body, auth, error_response, simple};

/// A service error as the client sees it; `internal` ones are logged at error level with
/// `detail`, which is never sent.
#[derive(Debug, Clone)]
pub struct ServiceError {
    pub kind: ErrorKind,
    pub message: Option<String>,
    pub internal: bool,
    pub detail: String,
}

/// The Firehose service, as the server calls it.
pub trait FirehoseService: Send + Sync + 'static {
    fn handle<'a>(
        &'a self,
        ctx: &'a RequestContext,
        request: fh::Request,
    ) -> BoxFuture<'a, Result<fh::Response, ServiceError>>;

    /// Deletes every delivery stream (`POST /moto-api/reset`).
    fn reset(&self) -> Result<(), String>;

    /// The `AWS/Firehose` running totals of every delivery stream:
    /// (`account/region/name`, [(AWS metric name, total)]).
    fn metrics(&self) -> Vec<(String, Vec<(&'static str, u64)>)> {
        Vec::new()
    }
}

/// The Firehose operation a target names, when Firehose is served.
pub(crate) fn operation(app: &App, service: &str, name: &str) -> Option<Operation> {
    if app.firehose.is_none() || service != fh::TARGET_PREFIX {
        return None;
    }
    Operation::from_name(name)
}

/// The delivery stream a request names, if any.
fn delivery_stream_name(request: &fh::Request) -> Option<&str> {
    Some(match request {
        fh::Request::CreateDeliveryStream(i) => &i.delivery_stream_name,
        fh::Request::DeleteDeliveryStream(i) => &i.delivery_stream_name,
        fh::Request::DescribeDeliveryStream(i) => &i.delivery_stream_name,
        fh::Request::ListTagsForDeliveryStream(i) => &i.delivery_stream_name,
        fh::Request::PutRecord(i) => &i.delivery_stream_name,
        fh::Request::PutRecordBatch(i) => &i.delivery_stream_name,
        fh::Request::StartDeliveryStreamEncryption(i) => &i.delivery_stream_name,
        fh::Request::StopDeliveryStreamEncryption(i) => &i.delivery_stream_name,
        fh::Request::TagDeliveryStream(i) => &i.delivery_stream_name,
        fh::Request::UntagDeliveryStream(i) => &i.delivery_stream_name,
        fh::Request::UpdateDestination(i) => &i.delivery_stream_name,
        fh::Request::ListDeliveryStreams(_) => return None,
    })
}

pub(crate) fn reset(app: &App, request_id: &str) {
    if let Some(firehose) = &app.firehose
        && let Err(error) = firehose.reset()
    {
        tracing::error!(%request_id, %error, "Firehose reset failed");
    }
}

/// Decodes, serves and encodes one Firehose request (after authentication).
pub(crate) async fn respond(
    app: &Arc<App>,
    identity: auth::Identity,
    request_id: &str,
    format: Format,
    operation: Operation,
    body: &[u8],
    secure_transport: bool,
) -> Response<Body> {
    let Some(firehose) = &app.firehose else {
        return error_response(format, ErrorKind::UnknownOperationException, None);
    };
    tracing::Span::current().record("target", operation.name());
    let identity_principal = identity.principal.clone();
    let ctx = RequestContext {
        account: identity.account,
        region: identity.region,
        request_id: request_id.to_string(),
        principal: identity.principal.as_ref().map(|p| p.arn.clone()),
    };
    let decoded = match fh::decode_request(operation, format, body) {
        Ok(decoded) => decoded,
        Err(error) => return error_response(format, error.kind, error.message.as_deref()),
    };
    if let (Some(security), Some(principal)) = (&app.security, &identity_principal) {
        let action = format!("firehose:{}", operation.name());
        let resource = delivery_stream_name(&decoded)
            .map(|name| {
                format!(
                    "arn:aws:firehose:{}:{}:deliverystream/{name}",
                    ctx.region, ctx.account
                )
            })
            .unwrap_or_else(|| "*".to_string());
        if let Err((kind, message)) =
            security
                .authorizer
                .authorize_identity(principal, &action, &resource, secure_transport)
        {
            return error_response(format, kind, Some(&message));
        }
    }
    match firehose.handle(&ctx, decoded).await {
        Ok(response) => {
            let body = fh::encode_response(format, &response);
            simple(StatusCode::OK, format.content_type(), body)
        }
        Err(error) => {
            if error.internal {
                tracing::error!(
                    %request_id,
                    detail = %error.detail,
                    "Firehose request failed inside Millrace"
                );
            } else {
                tracing::debug!(detail = %error.detail, "Firehose request refused");
            }
            error_response(format, error.kind, error.message.as_deref())
        }
    }
}
