//! Wiring of Kinesis Video Streams: the adapter the server calls. Video data lives under
//! `DATA_DIR/video` (stream metadata and one fragment store per stream).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use futures::StreamExt;
use futures::future::BoxFuture;
use millrace_log::Clock;
use millrace_server::{VideoAnswer, VideoBody, VideoCall, VideoService};
use millrace_video::{AnswerBody, BodyError, Call, Video, VideoConfig};

pub struct Adapter(pub Video);

pub fn open(data_dir: &Path, clock: Arc<dyn Clock>) -> anyhow::Result<Video> {
    Video::open(VideoConfig::new(data_dir), clock).context("cannot open the video streams")
}

impl VideoService for Adapter {
    fn serves(&self, path: &str) -> bool {
        Video::serves(path)
    }

    fn operation(&self, path: &str) -> Option<&'static str> {
        Video::operation(path)
    }

    fn resource_arn(
        &self,
        account: &str,
        region: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> String {
        self.0.resource_arn(account, region, headers, body)
    }

    fn handle(&self, call: VideoCall) -> BoxFuture<'static, VideoAnswer> {
        let video = self.0.clone();
        Box::pin(async move {
            let call = Call {
                account: call.account,
                region: call.region,
                method: call.method,
                path: call.path,
                query: call.query,
                headers: call.headers,
                endpoint: call.endpoint,
                body: parking_lot::Mutex::new(
                    call.body.map(|chunk| chunk.map_err(BodyError)).boxed(),
                ),
            };
            let answer = video.handle(call).await;
            VideoAnswer {
                status: answer.status,
                content_type: answer.content_type,
                body: match answer.body {
                    AnswerBody::Bytes(bytes) => VideoBody::Bytes(bytes),
                    AnswerBody::Stream(stream) => VideoBody::Stream(stream),
                },
                error_type: answer.error_type,
                internal_detail: answer.internal_detail,
            }
        })
    }

    fn reset(&self) -> Result<(), String> {
        self.0.reset().map_err(|e| e.to_string())
    }

    fn metrics(&self) -> Vec<(String, Vec<(&'static str, u64)>)> {
        self.0.metrics()
    }
}
