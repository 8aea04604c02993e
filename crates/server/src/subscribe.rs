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
    let mut subscription = match app.streams.subscribe_to_shard(ctx, input) {
        Ok(subscription) => subscription,
        Err(error) => return service_error(format, &error, &ctx.request_id),
    };
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
                Ok(event) => eventstream::encode_event(format, "SubscribeToShardEvent", &event),
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
