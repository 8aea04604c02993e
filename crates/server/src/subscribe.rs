//! SubscribeToShard over HTTP: a 200 response whose body is an
//! `application/vnd.amazon.eventstream`: an `initial-response` event, then one
//! `SubscribeToShardEvent` per batch the subscription yields, until it ends (5 minutes, or
//! the end of a closed shard) or the client goes away. Works the same over HTTP/1.1
//! (chunked) and HTTP/2 (DATA frames).
//!
//! Errors found before the stream starts are ordinary error responses; an error after it
//! started is sent as an `exception` message, and the stream ends.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use millrace_streams::RequestContext;
use millrace_wire::Format;
use millrace_wire::eventstream;
use millrace_wire::kinesis::SubscribeToShardInput;

use crate::{App, Body, service_error};

/// Encoded events buffered between the subscription and a slow client.
const EVENTS_BUFFERED_MAX: usize = 4;

pub fn respond(
    app: &Arc<App>,
    ctx: &RequestContext,
    format: Format,
    input: SubscribeToShardInput,
    _headers: &HeaderMap,
) -> Response<Body> {
    let stream_metrics = crate::metrics::stream_name_in_arn(&input.consumer_arn)
        .and_then(|name| app.kinesis_metrics.stream(&ctx.account, &ctx.region, name));
    let mut subscription = match app.streams.subscribe_to_shard(ctx, input) {
        Ok(subscription) => subscription,
        Err(error) => {
            if let Some(m) = &stream_metrics {
                m.subscribe_success.observe(0);
                // Another subscription is active, or came too soon (AWS counts both).
                if matches!(
                    error,
                    millrace_streams::Error::LimitExceeded { .. }
                        | millrace_streams::Error::ResourceInUse { .. }
                ) {
                    m.subscribe_rate_exceeded.observe(1);
                }
            }
            return service_error(format, &error, &ctx.request_id);
        }
    };
    if let Some(m) = &stream_metrics {
        m.subscribe_success.observe(1);
    }
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(EVENTS_BUFFERED_MAX);
    let request_id = ctx.request_id.clone();
    tokio::spawn(async move {
        if sender
            .send(Bytes::from(eventstream::encode_initial_response(format)))
            .await
            .is_err()
        {
            return;
        }
        while let Some(event) = subscription.next_event().await {
            let frame = match event {
                Ok(event) => {
                    if let Some(m) = &stream_metrics {
                        let n_bytes: usize = event
                            .records
                            .iter()
                            .map(|r| r.data.len() + r.partition_key.as_ref().map_or(0, String::len))
                            .sum();
                        m.subscribe_event_records
                            .observe(event.records.len() as u64);
                        m.subscribe_event_bytes.observe(n_bytes as u64);
                        m.subscribe_event_millis_behind
                            .observe(u64::try_from(event.millis_behind_latest).unwrap_or(0));
                    }
                    eventstream::encode_event(format, "SubscribeToShardEvent", &event)
                }
                Err(error) => {
                    let (kind, message) = error.to_aws();
                    if error.is_internal() {
                        tracing::error!(%request_id, %error, "subscription failed inside Millrace");
                    }
                    let frame = eventstream::encode_exception(format, kind, message.as_deref());
                    let _ = sender.send(Bytes::from(frame)).await;
                    return;
                }
            };
            if sender.send(Bytes::from(frame)).await.is_err() {
                // The client went away.
                return;
            }
        }
    });
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|bytes| {
            (
                Ok::<_, std::convert::Infallible>(Frame::data(bytes)),
                receiver,
            )
        })
    });
    let mut response = Response::new(StreamBody::new(stream).boxed());
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.amazon.eventstream"),
    );
    response
}
