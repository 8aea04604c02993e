//! The media data plane: PutMedia (a chunked MKV upload answered by a stream of JSON
//! acknowledgements), GetMedia, ListFragments and GetMediaForFragmentList.
//!
//! PutMedia runs as a task per upload: it feeds the body to [`crate::mkv::Ingest`] as it
//! arrives and sends, per fragment, BUFFERING (its cluster started), RECEIVED (the cluster
//! is complete) and PERSISTED (written and fsynced), or one ERROR event after which the
//! upload is over. The acknowledgement queue is bounded ([`ACK_QUEUE_MAX`]): a client that
//! does not read its acknowledgements slows its own upload down.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::api::{int_field, str_field};
use crate::error::{AckError, VideoError};
use crate::metrics::Metric;
use crate::mkv::{self, IngestEvent};
use crate::store::{FragmentEntry, read_fragment};
use crate::{
    Answer, AnswerBody, Call, StreamData, StreamMeta, Video, fragment_number,
    parse_fragment_number, seconds,
};

/// Acknowledgements queued for a client at most.
pub const ACK_QUEUE_MAX: usize = 64;
/// Fragments queued ahead of a GetMedia reader at most.
pub const GET_MEDIA_QUEUE_MAX: usize = 4;
/// ListFragments page size at most (AWS: 1000).
pub const LIST_FRAGMENTS_MAX: i64 = 1000;
/// Fragments named by one GetMediaForFragmentList at most (AWS: 1000).
pub const FRAGMENT_LIST_MAX: usize = 1000;

fn ack(event: &str, timecode_ms: i64, number: Option<&str>) -> Bytes {
    let mut value = json!({"EventType": event, "FragmentTimecode": timecode_ms});
    if let (Some(number), Some(map)) = (number, value.as_object_mut()) {
        map.insert("FragmentNumber".into(), json!(number));
    }
    let mut line = value.to_string();
    line.push('\n');
    Bytes::from(line)
}

fn error_ack(error: AckError, timecode_ms: Option<i64>, number: Option<&str>) -> Bytes {
    let (code, id) = error.code();
    let mut value = json!({"EventType": "ERROR", "ErrorId": id, "ErrorCode": code});
    if let Some(map) = value.as_object_mut() {
        if let Some(timecode_ms) = timecode_ms {
            map.insert("FragmentTimecode".into(), json!(timecode_ms));
        }
        if let Some(number) = number {
            map.insert("FragmentNumber".into(), json!(number));
        }
    }
    let mut line = value.to_string();
    line.push('\n');
    Bytes::from(line)
}

/// Parses `x-amzn-producer-start-timestamp` (epoch seconds, optionally with a fraction).
fn parse_epoch_seconds(value: &str) -> Option<i64> {
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| (seconds * 1000.0).round() as i64)
}

/// A request timestamp (epoch seconds as a JSON number, as the SDKs send).
pub(crate) fn timestamp_field(body: &Value, name: &str) -> Result<Option<i64>, VideoError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .map(|s| Some((s * 1000.0).round() as i64))
            .ok_or_else(|| VideoError::invalid(format!("{name} is not a timestamp."))),
        Some(Value::String(s)) => parse_epoch_seconds(s)
            .map(Some)
            .ok_or_else(|| VideoError::invalid(format!("{name} is not a timestamp."))),
        Some(_) => Err(VideoError::invalid(format!("{name} is not a timestamp."))),
    }
}

/// Which timestamp a selector ranges over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimestampKind {
    Producer,
    Server,
}

impl TimestampKind {
    pub(crate) fn parse(value: Option<&str>) -> Result<TimestampKind, VideoError> {
        match value {
            Some("PRODUCER_TIMESTAMP") => Ok(TimestampKind::Producer),
            Some("SERVER_TIMESTAMP") => Ok(TimestampKind::Server),
            _ => Err(VideoError::invalid(
                "FragmentSelectorType must be PRODUCER_TIMESTAMP or SERVER_TIMESTAMP.",
            )),
        }
    }

    pub(crate) fn of(self, entry: &FragmentEntry) -> i64 {
        match self {
            TimestampKind::Producer => entry.producer_ms,
            TimestampKind::Server => entry.server_ms,
        }
    }
}

/// A fragment as GetMedia and GetMediaForFragmentList send it: the session header, the
/// cluster, then the `AWS_KINESISVIDEO_*` tags.
fn media_chunk(
    uid: u64,
    entry: &FragmentEntry,
    header: &[u8],
    cluster: &[u8],
    now_ms: i64,
    continuation: bool,
) -> Vec<u8> {
    let number = fragment_number(uid, entry.seq);
    let seconds_text = |ms: i64| format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000));
    let mut tags = vec![
        ("AWS_KINESISVIDEO_FRAGMENT_NUMBER", number.clone()),
        (
            "AWS_KINESISVIDEO_SERVER_TIMESTAMP",
            seconds_text(entry.server_ms),
        ),
        (
            "AWS_KINESISVIDEO_PRODUCER_TIMESTAMP",
            seconds_text(entry.producer_ms),
        ),
    ];
    if continuation {
        tags.push((
            "AWS_KINESISVIDEO_MILLIS_BEHIND_NOW",
            (now_ms - entry.server_ms).max(0).to_string(),
        ));
        tags.push(("AWS_KINESISVIDEO_CONTINUATION_TOKEN", number));
    }
    let mut out = Vec::with_capacity(header.len() + cluster.len() + 512);
    out.extend_from_slice(header);
    out.extend_from_slice(cluster);
    out.extend(mkv::tags_element(&tags));
    out
}

impl Video {
    pub(crate) async fn put_media(&self, mut call: Call) -> Result<Answer, VideoError> {
        let stream = self.find_stream_by(
            &call,
            call.header("x-amzn-stream-name"),
            call.header("x-amzn-stream-arn"),
        )?;
        let relative = match call.header("x-amzn-fragment-timecode-type") {
            None | Some("RELATIVE") => true,
            Some("ABSOLUTE") => false,
            Some(other) => {
                return Err(VideoError::invalid(format!(
                    "x-amzn-fragment-timecode-type must be ABSOLUTE or RELATIVE, not {other}."
                )));
            }
        };
        let start_ms = match call.header("x-amzn-producer-start-timestamp") {
            Some(value) => parse_epoch_seconds(value).ok_or_else(|| {
                VideoError::invalid("x-amzn-producer-start-timestamp is not a timestamp.")
            })?,
            None => self.now_ms(),
        };
        let data = self.stream_data(stream.uid)?;
        let body = std::mem::replace(call.body.get_mut(), futures::stream::empty().boxed());
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(ACK_QUEUE_MAX);
        let video = self.clone();
        tokio::spawn(async move {
            let upload = Upload {
                video,
                stream,
                data,
                relative,
                start_ms,
                tx,
            };
            upload.run(body).await;
        });
        Ok(Answer {
            status: 200,
            content_type: "application/json",
            body: AnswerBody::Stream(rx),
            error_type: None,
            internal_detail: None,
        })
    }

    fn fragments_of(
        &self,
        stream: &StreamMeta,
    ) -> Result<(Arc<StreamData>, Vec<FragmentEntry>), VideoError> {
        let data = self.stream_data(stream.uid)?;
        let entries = data.store.lock().entries().to_vec();
        Ok((data, entries))
    }

    pub(crate) fn list_fragments(&self, call: &Call, body: &Value) -> Result<Answer, VideoError> {
        let stream = self.find_stream(call, body)?;
        let max = int_field(body, "MaxResults")?.unwrap_or(LIST_FRAGMENTS_MAX);
        if !(1..=LIST_FRAGMENTS_MAX).contains(&max) {
            return Err(VideoError::invalid(
                "MaxResults must be between 1 and 1000.",
            ));
        }
        // A NextToken carries the position and the selector, so it continues on its own.
        let (after, kind, start, end) = match str_field(body, "NextToken")? {
            Some(token) => {
                let (seq, kind, start, end) = parse_list_token(token)
                    .ok_or_else(|| VideoError::invalid("NextToken is not valid."))?;
                let kind = match kind {
                    "P" => Some(TimestampKind::Producer),
                    "S" => Some(TimestampKind::Server),
                    "A" => None,
                    _ => return Err(VideoError::invalid("NextToken is not valid.")),
                };
                (seq, kind, start, end)
            }
            None => match body.get("FragmentSelector") {
                Some(selector) => {
                    let kind = TimestampKind::parse(str_field(selector, "FragmentSelectorType")?)?;
                    let range = selector
                        .get("TimestampRange")
                        .ok_or_else(|| VideoError::invalid("TimestampRange is required."))?;
                    let start = timestamp_field(range, "StartTimestamp")?
                        .ok_or_else(|| VideoError::invalid("StartTimestamp is required."))?;
                    let end = timestamp_field(range, "EndTimestamp")?
                        .ok_or_else(|| VideoError::invalid("EndTimestamp is required."))?;
                    if end < start {
                        return Err(VideoError::invalid(
                            "EndTimestamp must not be before StartTimestamp.",
                        ));
                    }
                    (0, Some(kind), start, end)
                }
                None => (0, None, i64::MIN, i64::MAX),
            },
        };
        let (_, entries) = self.fragments_of(&stream)?;
        let selected: Vec<&FragmentEntry> = entries
            .iter()
            .filter(|e| e.seq > after)
            .filter(|e| kind.is_none_or(|kind| (start..=end).contains(&kind.of(e))))
            .collect();
        let page: Vec<Value> = selected
            .iter()
            .take(max as usize)
            .map(|e| {
                json!({
                    "FragmentNumber": fragment_number(stream.uid, e.seq),
                    "FragmentSizeInBytes": e.size_bytes(),
                    "ProducerTimestamp": seconds(e.producer_ms),
                    "ServerTimestamp": seconds(e.server_ms),
                    "FragmentLengthInMilliseconds": e.duration_ms,
                })
            })
            .collect();
        let mut answer = json!({"Fragments": page});
        if selected.len() > max as usize
            && let (Some(last), Some(map)) =
                (selected.get(max as usize - 1), answer.as_object_mut())
        {
            let kind_text = match kind {
                Some(TimestampKind::Producer) => "P",
                Some(TimestampKind::Server) => "S",
                None => "A",
            };
            map.insert(
                "NextToken".into(),
                json!(format!("{}_{kind_text}_{start}_{end}", last.seq)),
            );
        }
        self.count(&stream, Metric::ListFragmentsSuccess, 1);
        Ok(Answer::json(&answer))
    }

    pub(crate) async fn get_media(&self, call: &Call, body: &Value) -> Result<Answer, VideoError> {
        let stream = self.find_stream(call, body)?;
        let selector = body
            .get("StartSelector")
            .ok_or_else(|| VideoError::invalid("StartSelector is required."))?;
        let (data, entries) = self.fragments_of(&stream)?;
        let kind = str_field(selector, "StartSelectorType")?
            .ok_or_else(|| VideoError::invalid("StartSelectorType is required."))?;
        // The first fragment to send: sequence numbers greater than `after`.
        let after = match kind {
            "NOW" => entries.last().map(|e| e.seq).unwrap_or(0),
            "EARLIEST" => 0,
            "FRAGMENT_NUMBER" | "CONTINUATION_TOKEN" => {
                let field = if kind == "FRAGMENT_NUMBER" {
                    "AfterFragmentNumber"
                } else {
                    "ContinuationToken"
                };
                let number = str_field(selector, field)?
                    .ok_or_else(|| VideoError::invalid(format!("{field} is required.")))?;
                let seq = parse_fragment_number(stream.uid, number).ok_or_else(|| {
                    VideoError::invalid(format!("{field} is not a fragment number of this stream."))
                })?;
                // FRAGMENT_NUMBER starts with the fragment, a continuation token after it.
                if kind == "FRAGMENT_NUMBER" {
                    seq.saturating_sub(1)
                } else {
                    seq
                }
            }
            "SERVER_TIMESTAMP" | "PRODUCER_TIMESTAMP" => {
                let start = timestamp_field(selector, "StartTimestamp")?
                    .ok_or_else(|| VideoError::invalid("StartTimestamp is required."))?;
                let kind = if kind == "SERVER_TIMESTAMP" {
                    TimestampKind::Server
                } else {
                    TimestampKind::Producer
                };
                entries
                    .iter()
                    .find(|e| kind.of(e) >= start)
                    .map(|e| e.seq.saturating_sub(1))
                    .unwrap_or_else(|| entries.last().map(|e| e.seq).unwrap_or(0))
            }
            other => {
                return Err(VideoError::invalid(format!(
                    "StartSelectorType {other} is not valid."
                )));
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(GET_MEDIA_QUEUE_MAX);
        let video = self.clone();
        let uid = stream.uid;
        self.count(&stream, Metric::GetMediaSuccess, 1);
        tokio::spawn(async move {
            video.get_media_task(uid, data, after, tx, &stream).await;
        });
        Ok(Answer {
            status: 200,
            content_type: "video/webm",
            body: AnswerBody::Stream(rx),
            error_type: None,
            internal_detail: None,
        })
    }

    async fn get_media_task(
        &self,
        uid: u64,
        data: Arc<StreamData>,
        mut after: u64,
        tx: tokio::sync::mpsc::Sender<Bytes>,
        stream: &StreamMeta,
    ) {
        let mut appended = data.appended.subscribe();
        let idle = Duration::from_millis(self.inner.config.get_media_idle_ms);
        loop {
            let next = {
                let store = data.store.lock();
                let entries = store.entries();
                let at = entries.partition_point(|e| e.seq <= after);
                entries.get(at).copied()
            };
            let Some(entry) = next else {
                // Caught up: wait for a new fragment, end after `idle` without one.
                match tokio::time::timeout(idle, appended.changed()).await {
                    Ok(Ok(())) => continue,
                    _ => return,
                }
            };
            after = entry.seq;
            let dir = data.dir.clone();
            let read = tokio::task::spawn_blocking(move || read_fragment(&dir, &entry)).await;
            let chunk = match read {
                Ok(Ok((header, cluster))) => {
                    media_chunk(uid, &entry, &header, &cluster, self.now_ms(), true)
                }
                Ok(Err(error)) => {
                    tracing::error!(%error, "GetMedia cannot read a fragment");
                    error_chunk(uid, entry.seq, 5000, "INTERNAL_ERROR")
                }
                Err(_) => return,
            };
            let n_bytes = chunk.len() as u64;
            if tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
            self.count(stream, Metric::GetMediaOutgoingBytes, n_bytes);
            self.count(stream, Metric::GetMediaOutgoingFragments, 1);
        }
    }

    pub(crate) async fn get_media_for_fragment_list(
        &self,
        call: &Call,
        body: &Value,
    ) -> Result<Answer, VideoError> {
        let stream = self.find_stream(call, body)?;
        let numbers = body
            .get("Fragments")
            .and_then(Value::as_array)
            .ok_or_else(|| VideoError::invalid("Fragments is required."))?;
        if numbers.is_empty() || numbers.len() > FRAGMENT_LIST_MAX {
            return Err(VideoError::invalid(format!(
                "Fragments must name 1 to {FRAGMENT_LIST_MAX} fragments."
            )));
        }
        let (data, entries) = self.fragments_of(&stream)?;
        let mut wanted = Vec::with_capacity(numbers.len());
        for number in numbers {
            let number = number
                .as_str()
                .ok_or_else(|| VideoError::invalid("Fragment numbers are strings."))?;
            let entry = parse_fragment_number(stream.uid, number)
                .and_then(|seq| {
                    entries
                        .binary_search_by_key(&seq, |e| e.seq)
                        .ok()
                        .and_then(|at| entries.get(at))
                })
                .ok_or_else(|| VideoError::StreamNotFound {
                    name: format!("fragment {number}"),
                })?;
            wanted.push(*entry);
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(GET_MEDIA_QUEUE_MAX);
        let uid = stream.uid;
        let now = self.now_ms();
        tokio::spawn(async move {
            for entry in wanted {
                let dir = data.dir.clone();
                let chunk = match tokio::task::spawn_blocking(move || read_fragment(&dir, &entry))
                    .await
                {
                    Ok(Ok((header, cluster))) => {
                        media_chunk(uid, &entry, &header, &cluster, now, false)
                    }
                    Ok(Err(error)) => {
                        tracing::error!(%error, "GetMediaForFragmentList cannot read a fragment");
                        error_chunk(uid, entry.seq, 5000, "INTERNAL_ERROR")
                    }
                    Err(_) => return,
                };
                if tx.send(Bytes::from(chunk)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Answer {
            status: 200,
            content_type: "video/webm",
            body: AnswerBody::Stream(rx),
            error_type: None,
            internal_detail: None,
        })
    }
}

fn parse_list_token(token: &str) -> Option<(u64, &str, i64, i64)> {
    let mut parts = token.split('_');
    let seq = parts.next()?.parse().ok()?;
    let kind = parts.next()?;
    let start = parts.next()?.parse().ok()?;
    let end = parts.next()?.parse().ok()?;
    Some((seq, kind, start, end))
}

/// A chunk that reports a read error for a fragment (AWS's error tags).
fn error_chunk(uid: u64, seq: u64, id: u32, code: &str) -> Vec<u8> {
    mkv::tags_element(&[
        (
            "AWS_KINESISVIDEO_FRAGMENT_NUMBER",
            fragment_number(uid, seq),
        ),
        ("AWS_KINESISVIDEO_ERROR_CODE", code.to_string()),
        ("AWS_KINESISVIDEO_ERROR_ID", id.to_string()),
    ])
}

/// One PutMedia upload.
struct Upload {
    video: Video,
    stream: StreamMeta,
    data: Arc<StreamData>,
    relative: bool,
    start_ms: i64,
    tx: tokio::sync::mpsc::Sender<Bytes>,
}

impl Upload {
    async fn send(&self, bytes: Bytes) -> bool {
        self.tx.send(bytes).await.is_ok()
    }

    async fn run(self, mut body: crate::BodyStream) {
        let idle = Duration::from_millis(self.video.inner.config.put_media_idle_timeout_ms);
        let mut ingest = mkv::Ingest::new();
        let mut events = Vec::new();
        // The fragment being received: its sequence number, number, timecode, server time.
        let mut current: Option<(u64, String, i64, i64)> = None;
        loop {
            let chunk = match tokio::time::timeout(idle, body.next()).await {
                Ok(Some(Ok(chunk))) => Some(chunk),
                Ok(None) => None,
                Ok(Some(Err(error))) => {
                    tracing::debug!(%error, "PutMedia upload broke off");
                    let tc = current.as_ref().map(|c| c.2);
                    self.send(error_ack(
                        AckError::StreamReadError,
                        tc,
                        current.as_ref().map(|c| c.1.as_str()),
                    ))
                    .await;
                    return;
                }
                Err(_) => {
                    let tc = current.as_ref().map(|c| c.2);
                    self.send(error_ack(
                        AckError::StreamReadError,
                        tc,
                        current.as_ref().map(|c| c.1.as_str()),
                    ))
                    .await;
                    return;
                }
            };
            events.clear();
            let n_bytes = chunk.as_ref().map_or(0, |c| c.len() as u64);
            (self.video).count(&self.stream, Metric::PutMediaIncomingBytes, n_bytes);
            let result = match &chunk {
                Some(bytes) => ingest.push(bytes, &mut events),
                None => ingest.finish(&mut events),
            };
            for event in events.drain(..) {
                match event {
                    IngestEvent::FragmentStarted { timecode_ms } => {
                        let seq = self.data.store.lock().allocate_seq();
                        let number = fragment_number(self.stream.uid, seq);
                        let server_ms = self.video.now_ms();
                        if !self
                            .send(ack("BUFFERING", timecode_ms, Some(&number)))
                            .await
                        {
                            return;
                        }
                        current = Some((seq, number, timecode_ms, server_ms));
                    }
                    IngestEvent::Fragment(fragment) => {
                        let n_frames = fragment.n_frames as u64;
                        let Some((seq, number, _, server_ms)) = current.take() else {
                            self.send(error_ack(
                                AckError::InternalError,
                                Some(fragment.timecode_ms),
                                None,
                            ))
                            .await;
                            return;
                        };
                        if !self
                            .send(ack("RECEIVED", fragment.timecode_ms, Some(&number)))
                            .await
                        {
                            return;
                        }
                        let producer_ms = if self.relative {
                            self.start_ms + fragment.timecode_ms
                        } else {
                            fragment.timecode_ms
                        };
                        match self
                            .persist(
                                seq,
                                fragment.header.clone(),
                                fragment.cluster,
                                producer_ms,
                                server_ms,
                                fragment.duration_ms,
                            )
                            .await
                        {
                            Ok(()) => {
                                (self.video).count(
                                    &self.stream,
                                    Metric::PutMediaIncomingFragments,
                                    1,
                                );
                                (self.video).count(
                                    &self.stream,
                                    Metric::PutMediaIncomingFrames,
                                    n_frames,
                                );
                                (self.video).count(&self.stream, Metric::PutMediaSuccess, 1);
                                if !self
                                    .send(ack("PERSISTED", fragment.timecode_ms, Some(&number)))
                                    .await
                                {
                                    return;
                                }
                            }
                            Err(error) => {
                                tracing::error!(%error, stream = %self.stream.arn, "cannot persist a video fragment");
                                self.send(error_ack(
                                    AckError::ArchivalError,
                                    Some(fragment.timecode_ms),
                                    Some(&number),
                                ))
                                .await;
                                return;
                            }
                        }
                    }
                }
            }
            if let Err(error) = result {
                let tc = current.as_ref().map(|c| c.2).or(ingest.open_timecode_ms());
                self.send(error_ack(error, tc, current.as_ref().map(|c| c.1.as_str())))
                    .await;
                return;
            }
            if chunk.is_none() {
                return;
            }
        }
    }

    async fn persist(
        &self,
        seq: u64,
        header: Arc<Vec<u8>>,
        cluster: Vec<u8>,
        producer_ms: i64,
        server_ms: i64,
        duration_ms: i64,
    ) -> Result<(), VideoError> {
        let data = self.data.clone();
        let retention_ms = i64::from(self.stream.retention_hours) * 3_600_000;
        let now = self.video.now_ms();
        let duration = u32::try_from(duration_ms.max(0)).unwrap_or(u32::MAX);
        let joined = tokio::task::spawn_blocking(move || {
            let mut store = data.store.lock();
            store.append(seq, &header, &cluster, producer_ms, server_ms, duration)?;
            if retention_ms > 0
                && store
                    .entries()
                    .first()
                    .is_some_and(|e| e.server_ms < now - retention_ms)
            {
                store.expire(now - retention_ms)?;
            }
            data.appended.send_replace(seq);
            Ok::<(), VideoError>(())
        })
        .await;
        match joined {
            Ok(result) => result,
            Err(error) => Err(VideoError::Corrupt {
                detail: format!("persist task failed: {error}"),
            }),
        }
    }
}
