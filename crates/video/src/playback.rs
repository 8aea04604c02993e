//! Playback: HLS and DASH streaming sessions (fragmented MP4, or MPEG-2 TS for HLS with
//! `ContainerFormat=MPEG_TS`, served from this server under `/hls/v1/` and `/dash/v1/`),
//! GetClip (an MP4 of a time range) and GetImages (frames
//! decoded by the `ffmpeg` program when it is installed).
//!
//! A session is a random token mapped, in memory, to a stream, a playback mode and a
//! selector; it expires after `Expires` seconds. Playlists and manifests are computed on
//! every request from the fragment index, so LIVE playlists move as fragments arrive.
//! Timelines: HLS and DASH media segments carry producer timestamps in milliseconds
//! (`tfdt`, or PTS/DTS in TS), a clip starts at zero.
//!
//! GetClip is a progressive MP4 written in two passes over the chosen fragments: the sample
//! tables first (one fragment read at a time), then the `mdat` bytes streamed fragment by
//! fragment, so memory holds the tables and about one fragment, never the clip.
//!
//! Tracks: the H.264 video track and, when the stream has one, its AAC audio track (in
//! every format: fMP4 and TS segments, DASH, clips). Not supported: trimming a clip inside a fragment (a clip holds
//! whole fragments).

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::api::{int_field, str_field};
use crate::error::VideoError;
use crate::media::{TimestampKind, timestamp_field};
use crate::mkv::{self, Header};
use crate::mp4;
use crate::store::{FragmentEntry, read_fragment};
use crate::ts;
use crate::{
    Answer, AnswerBody, Call, SESSIONS_MAX, StreamData, Video, fragment_number,
    parse_fragment_number,
};

/// Fragments in one clip at most (AWS: 200) and its size at most (AWS: 100 MB).
pub const CLIP_FRAGMENTS_MAX: usize = 200;
pub const CLIP_BYTES_MAX: u64 = 100 * 1000 * 1000;
const _: () = assert!(CLIP_BYTES_MAX < mp4::PROGRESSIVE_BYTES_MAX);
/// Fragments of a clip's media queued for the connection (each at most 50 MB).
const CLIP_QUEUE_MAX: usize = 1;
/// Images per GetImages call at most (AWS: 100).
pub const IMAGES_MAX: i64 = 100;
/// A fragment counts as following the previous one when the gap is under this.
const CONTINUITY_GAP_MS_MAX: i64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Live,
    LiveReplay,
    OnDemand,
}

#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) uid: u64,
    mode: Mode,
    kind: TimestampKind,
    start_ms: i64,
    end_ms: Option<i64>,
    max_fragments: usize,
    expires_ms: i64,
    dash: bool,
    /// HLS with `ContainerFormat=MPEG_TS`.
    ts: bool,
}

impl Video {
    pub(crate) fn create_session(
        &self,
        call: &Call,
        body: &Value,
        dash: bool,
    ) -> Result<Answer, VideoError> {
        let stream = self.find_stream(call, body)?;
        if stream.retention_hours == 0 {
            return Err(VideoError::NoDataRetention { name: stream.name });
        }
        let mode = match str_field(body, "PlaybackMode")? {
            None | Some("LIVE") => Mode::Live,
            Some("LIVE_REPLAY") => Mode::LiveReplay,
            Some("ON_DEMAND") => Mode::OnDemand,
            Some(other) => {
                return Err(VideoError::invalid(format!(
                    "PlaybackMode {other} is not LIVE, LIVE_REPLAY or ON_DEMAND."
                )));
            }
        };
        let ts = match str_field(body, "ContainerFormat")? {
            None | Some("FRAGMENTED_MP4") => false,
            Some("MPEG_TS") if !dash => true,
            Some(format) => {
                return Err(VideoError::invalid(format!(
                    "ContainerFormat {format} is not FRAGMENTED_MP4 or MPEG_TS."
                )));
            }
        };
        let selector_field = if dash {
            "DASHFragmentSelector"
        } else {
            "HLSFragmentSelector"
        };
        let selector = body.get(selector_field);
        let kind = match selector.map(|s| str_field(s, "FragmentSelectorType")) {
            Some(kind) => match kind? {
                None => TimestampKind::Server,
                kind => TimestampKind::parse(kind)?,
            },
            None => TimestampKind::Server,
        };
        let range = selector.and_then(|s| s.get("TimestampRange"));
        let start = match range {
            Some(range) => timestamp_field(range, "StartTimestamp")?,
            None => None,
        };
        let end = match range {
            Some(range) => timestamp_field(range, "EndTimestamp")?,
            None => None,
        };
        match (mode, start, end) {
            (Mode::Live, None, None) => {}
            (Mode::Live, _, _) => {
                return Err(VideoError::invalid(
                    "TimestampRange must not be set when PlaybackMode is LIVE.",
                ));
            }
            (Mode::OnDemand, Some(start), Some(end)) if end > start => {
                if end - start > 24 * 3_600_000 {
                    return Err(VideoError::invalid(
                        "The TimestampRange of an ON_DEMAND session spans at most 24 hours.",
                    ));
                }
            }
            (Mode::OnDemand, _, _) => {
                return Err(VideoError::invalid(
                    "ON_DEMAND needs a TimestampRange with StartTimestamp before EndTimestamp.",
                ));
            }
            (Mode::LiveReplay, Some(start), end) if end.is_none_or(|end| end > start) => {}
            (Mode::LiveReplay, _, _) => {
                return Err(VideoError::invalid(
                    "LIVE_REPLAY needs a StartTimestamp (before EndTimestamp, if given).",
                ));
            }
        }
        let expires = int_field(body, "Expires")?.unwrap_or(300);
        if !(300..=43_200).contains(&expires) {
            return Err(VideoError::invalid(
                "Expires must be between 300 and 43200.",
            ));
        }
        let max_field = if dash {
            "MaxManifestFragmentResults"
        } else {
            "MaxMediaPlaylistFragmentResults"
        };
        let default_max = if mode == Mode::OnDemand { 1000 } else { 5 };
        let max = int_field(body, max_field)?.unwrap_or(default_max);
        if !(1..=5000).contains(&max) {
            return Err(VideoError::invalid(format!(
                "{max_field} must be between 1 and 5000."
            )));
        }
        // The stream must have playable media now (AWS checks the codec at this point).
        let data = self.stream_data(stream.uid)?;
        let latest = data.store.lock().entries().last().copied();
        let Some(latest) = latest else {
            return Err(VideoError::FragmentsNotFound);
        };
        let (header, _) = read_fragment(&data.dir, &latest)?;
        let header = Header::parse_stored(&header).map_err(|e| VideoError::Corrupt {
            detail: format!("stored header: {e}"),
        })?;
        let tracks = mp4::Tracks::of(&header)?;
        if ts {
            // As on AWS, H.265 is served as fragmented MP4 only.
            if mp4::is_hevc(tracks.video) {
                return Err(VideoError::invalid(
                    "ContainerFormat MPEG_TS serves H.264 only; use FRAGMENTED_MP4 for H.265.",
                ));
            }
            ts::avc_config(&tracks.video.codec_private)?;
        }
        let now = self.now_ms();
        let session = Session {
            uid: stream.uid,
            mode,
            kind,
            start_ms: start.unwrap_or(i64::MIN),
            end_ms: end,
            max_fragments: max as usize,
            expires_ms: now + expires * 1000,
            dash,
            ts,
        };
        let token = format!(
            "{}{}~",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        {
            let mut sessions = self.inner.sessions.lock();
            if sessions.len() >= SESSIONS_MAX {
                sessions.retain(|_, s| s.expires_ms > now);
            }
            if sessions.len() >= SESSIONS_MAX {
                return Err(VideoError::ClientLimitExceeded {
                    detail: format!("{SESSIONS_MAX} streaming sessions are open"),
                });
            }
            sessions.insert(token.clone(), session);
        }
        let answer = if dash {
            json!({"DASHStreamingSessionURL": format!("{}/dash/v1/getDASHManifest.mpd?SessionToken={token}", call.endpoint)})
        } else {
            json!({"HLSStreamingSessionURL": format!("{}/hls/v1/getHLSMasterPlaylist.m3u8?SessionToken={token}", call.endpoint)})
        };
        Ok(Answer::json(&answer))
    }

    fn session(&self, call: &Call, dash: bool) -> Result<(String, Session), VideoError> {
        let token = call
            .query_param("SessionToken")
            .ok_or(VideoError::SessionNotFound)?;
        let now = self.now_ms();
        let sessions = self.inner.sessions.lock();
        let session = sessions
            .get(&token)
            .filter(|s| s.expires_ms > now && s.dash == dash)
            .cloned()
            .ok_or(VideoError::SessionNotFound)?;
        Ok((token, session))
    }

    /// The fragments a session's playlist lists now.
    fn session_fragments(
        &self,
        session: &Session,
    ) -> Result<(Arc<StreamData>, Vec<FragmentEntry>), VideoError> {
        let data = self.stream_data(session.uid)?;
        let entries = data.store.lock().entries().to_vec();
        let selected: Vec<FragmentEntry> = match session.mode {
            Mode::Live => {
                let skip = entries.len().saturating_sub(session.max_fragments);
                entries.into_iter().skip(skip).collect()
            }
            Mode::LiveReplay | Mode::OnDemand => entries
                .into_iter()
                .filter(|e| {
                    let t = session.kind.of(e);
                    t >= session.start_ms && session.end_ms.is_none_or(|end| t <= end)
                })
                .take(session.max_fragments)
                .collect(),
        };
        Ok((data, selected))
    }

    pub(crate) async fn hls_resource(
        &self,
        call: &Call,
        resource: &str,
    ) -> Result<Answer, VideoError> {
        let (token, session) = self.session(call, false)?;
        match resource {
            "getHLSMasterPlaylist.m3u8" => {
                let (data, fragments) = self.session_fragments(&session)?;
                let (track, audio) = self.tracks_of(&data, fragments.first()).await?;
                let bandwidth = bandwidth(&fragments);
                let codecs = codecs(&track, audio.as_ref());
                let body = format!(
                    "#EXTM3U\n#EXT-X-VERSION:{}\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},CODECS=\"{codecs}\",RESOLUTION={}x{}\ngetHLSMediaPlaylist.m3u8?SessionToken={token}&TrackNumber=1\n",
                    if session.ts { 3 } else { 7 },
                    track.width,
                    track.height
                );
                Ok(Answer::bytes(
                    "application/vnd.apple.mpegurl",
                    body.into_bytes(),
                ))
            }
            "getHLSMediaPlaylist.m3u8" => {
                let (_, fragments) = self.session_fragments(&session)?;
                let all = self.all_entries(session.uid)?;
                let spans: Vec<i64> = fragments.iter().map(|e| span_ms(&all, e)).collect();
                let target = spans.iter().copied().max().unwrap_or(1000).div_euclid(1000) + 1;
                let mut body = format!(
                    "#EXTM3U\n#EXT-X-VERSION:{}\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{}\n",
                    if session.ts { 3 } else { 7 },
                    fragments.first().map(|e| e.seq).unwrap_or(0)
                );
                if session.mode == Mode::OnDemand {
                    body.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n");
                }
                body.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
                if !session.ts {
                    body.push_str(&format!(
                        "#EXT-X-MAP:URI=\"getMP4InitFragment.mp4?SessionToken={token}&TrackNumber=1\"\n"
                    ));
                }
                let resource = if session.ts {
                    "getTSFragment.ts"
                } else {
                    "getMP4MediaFragment.mp4"
                };
                let mut previous: Option<&FragmentEntry> = None;
                for (entry, span) in fragments.iter().zip(&spans) {
                    if let Some(previous) = previous
                        && (entry.producer_ms
                            - (previous.producer_ms + i64::from(previous.duration_ms)))
                        .abs()
                            > CONTINUITY_GAP_MS_MAX
                    {
                        body.push_str("#EXT-X-DISCONTINUITY\n");
                    }
                    body.push_str(&format!(
                        "#EXTINF:{}.{:03},\n{resource}?FragmentNumber={}&SessionToken={token}&TrackNumber=1\n",
                        span / 1000,
                        span % 1000,
                        fragment_number(session.uid, entry.seq)
                    ));
                    previous = Some(entry);
                }
                if session.mode == Mode::OnDemand
                    || (session.mode == Mode::LiveReplay && session.end_ms.is_some())
                {
                    body.push_str("#EXT-X-ENDLIST\n");
                }
                Ok(Answer::bytes(
                    "application/vnd.apple.mpegurl",
                    body.into_bytes(),
                ))
            }
            "getMP4InitFragment.mp4" if !session.ts => self.init_fragment(&session).await,
            "getMP4MediaFragment.mp4" if !session.ts => self.media_fragment(call, &session).await,
            "getTSFragment.ts" if session.ts => self.media_fragment(call, &session).await,
            _ => Err(VideoError::UnknownOperation {
                path: format!("/hls/v1/{resource}"),
            }),
        }
    }

    pub(crate) async fn dash_resource(
        &self,
        call: &Call,
        resource: &str,
    ) -> Result<Answer, VideoError> {
        let (token, session) = self.session(call, true)?;
        match resource {
            "getDASHManifest.mpd" => {
                let (data, fragments) = self.session_fragments(&session)?;
                let (track, audio) = self.tracks_of(&data, fragments.first()).await?;
                let all = self.all_entries(session.uid)?;
                let mut timeline = String::new();
                let mut urls = String::new();
                let mut total_ms = 0i64;
                let origin = fragments.first().map(|e| e.producer_ms).unwrap_or(0);
                for entry in &fragments {
                    let span = span_ms(&all, entry);
                    total_ms += span;
                    timeline.push_str(&format!(
                        "<S t=\"{}\" d=\"{span}\"/>",
                        entry.producer_ms - origin
                    ));
                    urls.push_str(&format!(
                        "<SegmentURL media=\"getMP4MediaFragment.mp4?FragmentNumber={}&amp;SessionToken={token}&amp;TrackNumber=1\"/>\n",
                        fragment_number(session.uid, entry.seq)
                    ));
                }
                let kind = if session.mode == Mode::OnDemand {
                    "static".to_string()
                } else {
                    "dynamic\" minimumUpdatePeriod=\"PT2S\" availabilityStartTime=\"1970-01-01T00:00:00Z".to_string()
                };
                let body = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"urn:mpeg:dash:profile:isoff-live:2011\" type=\"{kind}\" mediaPresentationDuration=\"PT{}.{:03}S\" minBufferTime=\"PT2S\">\n<Period id=\"0\" start=\"PT0S\">\n<AdaptationSet mimeType=\"video/mp4\" segmentAlignment=\"true\" startWithSAP=\"1\">\n<Representation id=\"1\" codecs=\"{}\" width=\"{}\" height=\"{}\" bandwidth=\"{}\">\n<SegmentList timescale=\"1000\" presentationTimeOffset=\"{origin}\">\n<Initialization sourceURL=\"getMP4InitFragment.mp4?SessionToken={token}&amp;TrackNumber=1\"/>\n<SegmentTimeline>{timeline}</SegmentTimeline>\n{urls}</SegmentList>\n</Representation>\n</AdaptationSet>\n</Period>\n</MPD>\n",
                    total_ms / 1000,
                    total_ms % 1000,
                    codecs(&track, audio.as_ref()),
                    track.width,
                    track.height,
                    bandwidth(&fragments),
                );
                Ok(Answer::bytes("application/dash+xml", body.into_bytes()))
            }
            "getMP4InitFragment.mp4" => self.init_fragment(&session).await,
            "getMP4MediaFragment.mp4" => self.media_fragment(call, &session).await,
            _ => Err(VideoError::UnknownOperation {
                path: format!("/dash/v1/{resource}"),
            }),
        }
    }

    fn all_entries(&self, uid: u64) -> Result<Vec<FragmentEntry>, VideoError> {
        Ok(self.stream_data(uid)?.store.lock().entries().to_vec())
    }

    /// The video track and the AAC audio track (if any) of a fragment's header.
    async fn tracks_of(
        &self,
        data: &Arc<StreamData>,
        entry: Option<&FragmentEntry>,
    ) -> Result<(mkv::Track, Option<mkv::Track>), VideoError> {
        let entry = match entry {
            Some(entry) => *entry,
            None => data
                .store
                .lock()
                .entries()
                .last()
                .copied()
                .ok_or(VideoError::FragmentsNotFound)?,
        };
        let (header, _) = read_blocking(data, entry).await?;
        let header = Header::parse_stored(&header).map_err(|e| VideoError::Corrupt {
            detail: format!("stored header: {e}"),
        })?;
        let tracks = mp4::Tracks::of(&header)?;
        Ok((
            tracks.video.clone(),
            tracks.audio.map(|(track, _)| track.clone()),
        ))
    }

    async fn init_fragment(&self, session: &Session) -> Result<Answer, VideoError> {
        let (data, fragments) = self.session_fragments(session)?;
        let (video, audio) = self.tracks_of(&data, fragments.first()).await?;
        let audio = match &audio {
            Some(track) => Some((track, ts::aac_config(&track.codec_private)?)),
            None => None,
        };
        let tracks = mp4::Tracks {
            video: &video,
            audio,
        };
        Ok(Answer::bytes("video/mp4", mp4::init_segment(tracks)))
    }

    async fn media_fragment(&self, call: &Call, session: &Session) -> Result<Answer, VideoError> {
        let number = call
            .query_param("FragmentNumber")
            .ok_or_else(|| VideoError::invalid("FragmentNumber is required."))?;
        let data = self.stream_data(session.uid)?;
        let all = data.store.lock().entries().to_vec();
        let entry = parse_fragment_number(session.uid, &number)
            .and_then(|seq| all.binary_search_by_key(&seq, |e| e.seq).ok())
            .and_then(|at| all.get(at).copied())
            .ok_or(VideoError::FragmentsNotFound)?;
        let span = span_ms(&all, &entry);
        let (header, cluster) = read_blocking(&data, entry).await?;
        if session.ts {
            let segment = fragment_ts(&header, &cluster, entry.producer_ms, span)?;
            return Ok(Answer::bytes("video/MP2T", segment));
        }
        let segment = fragment_segment(&header, &cluster, entry.producer_ms, span, entry.seq)?;
        Ok(Answer::bytes("video/mp4", segment))
    }

    pub(crate) async fn get_clip(&self, call: &Call, body: &Value) -> Result<Answer, VideoError> {
        let stream = self.find_stream(call, body)?;
        if stream.retention_hours == 0 {
            return Err(VideoError::NoDataRetention { name: stream.name });
        }
        let selector = body
            .get("ClipFragmentSelector")
            .ok_or_else(|| VideoError::invalid("ClipFragmentSelector is required."))?;
        let kind = TimestampKind::parse(str_field(selector, "FragmentSelectorType")?)?;
        let range = selector
            .get("TimestampRange")
            .ok_or_else(|| VideoError::invalid("TimestampRange is required."))?;
        let start = timestamp_field(range, "StartTimestamp")?
            .ok_or_else(|| VideoError::invalid("StartTimestamp is required."))?;
        let end = timestamp_field(range, "EndTimestamp")?
            .ok_or_else(|| VideoError::invalid("EndTimestamp is required."))?;
        if end <= start {
            return Err(VideoError::invalid(
                "EndTimestamp must be after StartTimestamp.",
            ));
        }
        let data = self.stream_data(stream.uid)?;
        let all = data.store.lock().entries().to_vec();
        // Fragments that overlap the range, up to AWS's clip limits.
        let mut chosen = Vec::new();
        let mut size = 0u64;
        for entry in &all {
            let t = kind.of(entry);
            if t + i64::from(entry.duration_ms) <= start || t > end {
                continue;
            }
            if chosen.len() >= CLIP_FRAGMENTS_MAX || size + entry.size_bytes() > CLIP_BYTES_MAX {
                break;
            }
            size += entry.size_bytes();
            chosen.push(*entry);
        }
        if chosen.is_empty() {
            return Err(VideoError::FragmentsNotFound);
        }
        let spans: Vec<i64> = chosen.iter().map(|e| span_ms(&all, e)).collect();
        // Pass 1: the sample tables, one fragment in memory at a time.
        let dir = data.dir.clone();
        let plan = (chosen.clone(), spans.clone());
        let head = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, VideoError> {
            let (chosen, spans) = plan;
            let mut parts = [mp4::ClipTrack::default(), mp4::ClipTrack::default()];
            let mut decode_ms: [Vec<i64>; 2] = [Vec::new(), Vec::new()];
            let mut first_header = None;
            let mut timeline_ms = 0i64;
            for (entry, span) in chosen.iter().zip(spans) {
                let (header_bytes, cluster) = read_fragment(&dir, entry)?;
                let header = parse_header(&header_bytes)?;
                let samples = clip_samples(&header, &cluster, timeline_ms, span)?;
                // Contiguous fragments keep their spacing; a gap in the stream is closed up.
                timeline_ms += span;
                for ((part, times), samples) in
                    parts.iter_mut().zip(decode_ms.iter_mut()).zip(&samples)
                {
                    part.per_fragment
                        .push(u32::try_from(samples.len()).unwrap_or(u32::MAX));
                    part.samples.extend(samples.iter().map(mp4::SampleInfo::of));
                    times.extend(samples.iter().map(|s| s.decode_ms));
                }
                if first_header.is_none() {
                    first_header = Some(header);
                }
            }
            // A progressive MP4 places samples by their durations alone, so a sample lasts
            // until the next one of its track, across fragments too (a cluster may start
            // with audio a few ms before the video keyframe it belongs to).
            for (part, times) in parts.iter_mut().zip(&decode_ms) {
                for ((sample, this), next) in
                    part.samples.iter_mut().zip(times).zip(times.iter().skip(1))
                {
                    sample.duration_ms = u32::try_from((next - this).max(1)).unwrap_or(1);
                }
            }
            let header = first_header.ok_or(VideoError::FragmentsNotFound)?;
            mp4::progressive_head(mp4::Tracks::of(&header)?, &parts)
        })
        .await
        .map_err(|e| VideoError::Corrupt {
            detail: format!("clip task failed: {e}"),
        })??;
        // Pass 2: the sample bytes, streamed fragment by fragment in the same order.
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(CLIP_QUEUE_MAX);
        tokio::spawn(async move {
            if tx.send(Bytes::from(head)).await.is_err() {
                return;
            }
            let mut timeline_ms = 0i64;
            for (entry, span) in chosen.into_iter().zip(spans) {
                let start = timeline_ms;
                timeline_ms += span;
                let fragment = read_blocking(&data, entry)
                    .await
                    .and_then(|(header, cluster)| {
                        let header = parse_header(&header)?;
                        let samples = clip_samples(&header, &cluster, start, span)?;
                        let all = samples.iter().flatten();
                        let mut bytes = Vec::with_capacity(all.clone().map(|s| s.data.len()).sum());
                        for sample in all {
                            bytes.extend_from_slice(sample.data);
                        }
                        Ok(bytes)
                    });
                match fragment {
                    Ok(bytes) => {
                        if tx.send(Bytes::from(bytes)).await.is_err() {
                            return;
                        }
                    }
                    Err(error) => {
                        // The head is sent: all that is left is to cut the answer short.
                        tracing::error!(%error, "GetClip could not read a fragment it had indexed");
                        return;
                    }
                }
            }
        });
        Ok(Answer {
            status: 200,
            content_type: "video/mp4",
            body: AnswerBody::Stream(rx),
            error_type: None,
            internal_detail: None,
        })
    }

    pub(crate) async fn get_images(&self, call: &Call, body: &Value) -> Result<Answer, VideoError> {
        let stream = self.find_stream(call, body)?;
        let kind = match str_field(body, "ImageSelectorType")? {
            Some("PRODUCER_TIMESTAMP") => TimestampKind::Producer,
            Some("SERVER_TIMESTAMP") => TimestampKind::Server,
            _ => {
                return Err(VideoError::invalid(
                    "ImageSelectorType must be PRODUCER_TIMESTAMP or SERVER_TIMESTAMP.",
                ));
            }
        };
        let start = timestamp_field(body, "StartTimestamp")?
            .ok_or_else(|| VideoError::invalid("StartTimestamp is required."))?;
        let end = timestamp_field(body, "EndTimestamp")?
            .ok_or_else(|| VideoError::invalid("EndTimestamp is required."))?;
        if end < start || end - start > 300_000 {
            return Err(VideoError::invalid(
                "EndTimestamp must be after StartTimestamp and at most 300 seconds later.",
            ));
        }
        let format = match str_field(body, "Format")? {
            Some("JPEG") => "mjpeg",
            Some("PNG") => "png",
            _ => return Err(VideoError::invalid("Format must be JPEG or PNG.")),
        };
        let interval = int_field(body, "SamplingInterval")?.unwrap_or(3000);
        if interval < 200 {
            return Err(VideoError::invalid("SamplingInterval is at least 200 ms."));
        }
        let max = int_field(body, "MaxResults")?
            .unwrap_or(25)
            .clamp(1, IMAGES_MAX);
        let page = max.min(25);
        let width = int_field(body, "WidthPixels")?;
        let height = int_field(body, "HeightPixels")?;
        if width.is_some_and(|w| !(1..=3840).contains(&w))
            || height.is_some_and(|h| !(1..=2160).contains(&h))
        {
            return Err(VideoError::invalid(
                "WidthPixels is at most 3840 and HeightPixels at most 2160.",
            ));
        }
        let quality = body
            .get("FormatConfig")
            .and_then(|c| c.get("JPEGQuality"))
            .and_then(Value::as_str)
            .and_then(|q| q.parse::<i64>().ok())
            .unwrap_or(80)
            .clamp(1, 100);
        let first_index = match str_field(body, "NextToken")? {
            Some(token) => token
                .parse::<i64>()
                .map_err(|_| VideoError::invalid("NextToken is not valid."))?,
            None => 0,
        };
        let data = self.stream_data(stream.uid)?;
        let all = data.store.lock().entries().to_vec();
        let n_total = ((end - start) / interval + 1).min(max);
        let mut images = Vec::new();
        let mut index = first_index;
        while index < n_total && (index - first_index) < page {
            let t = start + index * interval;
            let found = all
                .iter()
                .find(|e| (kind.of(e)..kind.of(e) + i64::from(e.duration_ms).max(1)).contains(&t))
                .copied();
            let image = match found {
                None => json!({"TimeStamp": crate::seconds(t), "Error": "NO_MEDIA"}),
                Some(entry) => {
                    let offset_ms = t - kind.of(&entry);
                    match self
                        .extract_image(&data, entry, offset_ms, format, width, height, quality)
                        .await
                    {
                        Ok(bytes) => {
                            use base64::Engine;
                            json!({"TimeStamp": crate::seconds(t), "ImageContent": base64::engine::general_purpose::STANDARD.encode(bytes)})
                        }
                        Err(VideoError::ImagesUnavailable { detail }) => {
                            return Err(VideoError::ImagesUnavailable { detail });
                        }
                        Err(error) => {
                            tracing::debug!(%error, "GetImages could not decode a frame");
                            json!({"TimeStamp": crate::seconds(t), "Error": "MEDIA_ERROR"})
                        }
                    }
                }
            };
            images.push(image);
            index += 1;
        }
        let mut answer = json!({"Images": images});
        if index < n_total
            && let Some(map) = answer.as_object_mut()
        {
            map.insert("NextToken".into(), json!(index.to_string()));
        }
        Ok(Answer::json(&answer))
    }

    #[allow(clippy::too_many_arguments)]
    async fn extract_image(
        &self,
        data: &Arc<StreamData>,
        entry: FragmentEntry,
        offset_ms: i64,
        codec: &str,
        width: Option<i64>,
        height: Option<i64>,
        quality: i64,
    ) -> Result<Vec<u8>, VideoError> {
        let (header, cluster) = read_blocking(data, entry).await?;
        let mut input = header;
        input.extend_from_slice(&cluster);
        let mut args: Vec<String> = vec![
            "-hide_banner".into(),
            "-loglevel".into(),
            "error".into(),
            "-f".into(),
            "matroska".into(),
            "-i".into(),
            "pipe:0".into(),
            "-ss".into(),
            format!("{}.{:03}", offset_ms / 1000, offset_ms % 1000),
            "-frames:v".into(),
            "1".into(),
        ];
        if let (Some(w), Some(h)) = (width, height) {
            args.push("-vf".into());
            args.push(format!("scale={w}:{h}"));
        } else if let Some(w) = width {
            args.push("-vf".into());
            args.push(format!("scale={w}:-2"));
        } else if let Some(h) = height {
            args.push("-vf".into());
            args.push(format!("scale=-2:{h}"));
        }
        if codec == "mjpeg" {
            // ffmpeg's q:v runs from 2 (best) to 31; JPEGQuality from 1 to 100 (best).
            args.push("-q:v".into());
            args.push((31 - (quality - 1) * 29 / 99).to_string());
        }
        args.extend([
            "-c:v".into(),
            codec.into(),
            "-f".into(),
            "image2pipe".into(),
            "pipe:1".into(),
        ]);
        let mut child = tokio::process::Command::new("ffmpeg")
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| VideoError::ImagesUnavailable {
                detail: e.to_string(),
            })?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| VideoError::ImagesUnavailable {
                detail: "no stdin".into(),
            })?;
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = stdin.write_all(&input).await;
        });
        let output =
            tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
                .await
                .map_err(|_| VideoError::InvalidMediaFrame {
                    detail: "ffmpeg took too long".into(),
                })?
                .map_err(VideoError::Io)?;
        let _ = writer.await;
        if !output.status.success() || output.stdout.is_empty() {
            return Err(VideoError::InvalidMediaFrame {
                detail: format!("ffmpeg exited with {}", output.status),
            });
        }
        Ok(output.stdout)
    }
}

async fn read_blocking(
    data: &Arc<StreamData>,
    entry: FragmentEntry,
) -> Result<(Vec<u8>, Vec<u8>), VideoError> {
    let dir = data.dir.clone();
    tokio::task::spawn_blocking(move || read_fragment(&dir, &entry))
        .await
        .map_err(|e| VideoError::Corrupt {
            detail: format!("read task failed: {e}"),
        })?
}

/// The moof+mdat of a stored fragment whose cluster starts at `start_ms` on the output
/// timeline.
fn fragment_segment(
    header_bytes: &[u8],
    cluster: &[u8],
    start_ms: i64,
    span: i64,
    seq: u64,
) -> Result<Vec<u8>, VideoError> {
    let header = parse_header(header_bytes)?;
    let [video, audio] = clip_samples(&header, cluster, start_ms, span)?;
    Ok(mp4::media_segment(
        (seq & 0xFFFF_FFFF) as u32,
        &[&video, &audio],
    ))
}

fn parse_header(header_bytes: &[u8]) -> Result<Header, VideoError> {
    Header::parse_stored(header_bytes).map_err(|e| VideoError::Corrupt {
        detail: format!("stored header: {e}"),
    })
}

/// The video samples and the audio samples (empty without an audio track) of a stored
/// fragment whose cluster starts at `start_ms` on the output timeline.
fn clip_samples<'a>(
    header: &Header,
    cluster: &'a [u8],
    start_ms: i64,
    span: i64,
) -> Result<[Vec<mp4::Sample<'a>>; 2], VideoError> {
    let tracks = mp4::Tracks::of(header)?;
    let body = mkv::cluster_body(cluster).map_err(|e| VideoError::Corrupt {
        detail: format!("stored cluster: {e}"),
    })?;
    let video = mp4::fragment_samples(header, tracks.video, body, start_ms, Some(span))?;
    if video.is_empty() {
        return Err(VideoError::InvalidMediaFrame {
            detail: "the fragment has no video frames".into(),
        });
    }
    let audio = match tracks.audio {
        Some((track, _)) => mp4::fragment_samples(header, track, body, start_ms, Some(span))?,
        None => Vec::new(),
    };
    Ok([video, audio])
}

/// The MPEG-2 TS segment of a stored fragment whose cluster starts at `start_ms`.
fn fragment_ts(
    header_bytes: &[u8],
    cluster: &[u8],
    start_ms: i64,
    span: i64,
) -> Result<Vec<u8>, VideoError> {
    let header = parse_header(header_bytes)?;
    let tracks = mp4::Tracks::of(&header)?;
    if mp4::is_hevc(tracks.video) {
        return Err(VideoError::UnsupportedMediaType {
            detail: "H.265 is served as fragmented MP4 only".into(),
        });
    }
    let config = ts::avc_config(&tracks.video.codec_private)?;
    let [video, audio] = clip_samples(&header, cluster, start_ms, span)?;
    ts::segment(
        &config,
        &video,
        tracks.audio.map(|(_, config)| ts::TsAudio {
            config,
            frames: &audio,
        }),
    )
}

/// A fragment's playing time: up to the next fragment when that one follows on directly,
/// else its own duration.
fn span_ms(all: &[FragmentEntry], entry: &FragmentEntry) -> i64 {
    let own = i64::from(entry.duration_ms).max(1);
    let at = all.partition_point(|e| e.seq <= entry.seq);
    match all.get(at) {
        Some(next) => {
            let gap = next.producer_ms - entry.producer_ms;
            if gap > 0 && (gap - own).abs() <= CONTINUITY_GAP_MS_MAX {
                gap
            } else {
                own
            }
        }
        None => own,
    }
}

fn bandwidth(fragments: &[FragmentEntry]) -> u64 {
    let bytes: u64 = fragments.iter().map(|e| e.size_bytes()).sum();
    let ms: u64 = fragments.iter().map(|e| u64::from(e.duration_ms)).sum();
    (bytes * 8 * 1000)
        .checked_div(ms)
        .unwrap_or(2_000_000)
        .max(1)
}

/// The video track's `codecs` name, and `mp4a.40.N` when there is an AAC track.
fn codecs(video: &mkv::Track, audio: Option<&mkv::Track>) -> String {
    let mut codecs = mp4::codecs_name(video);
    if let Some(config) = audio.and_then(|a| ts::aac_config(&a.codec_private).ok()) {
        codecs.push_str(&format!(",mp4a.40.{}", config.object_type));
    }
    codecs
}
