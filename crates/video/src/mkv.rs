//! An incremental Matroska (EBML) reader for PutMedia, and the few writers GetMedia needs.
//!
//! Hand-written rather than a crate: PutMedia needs only the element framing (IDs and sizes
//! as EBML variable-length integers), the session header (EBML header, Segment, Info,
//! Tracks) and Cluster children (Timecode, SimpleBlock, BlockGroup); about 400 lines, no
//! dependency and full control over bounds.
//!
//! [`Ingest`] is push-based: [`Ingest::push`] takes the bytes as they arrive and returns
//! the events they complete (a fragment started, a fragment complete, an error). It holds at
//! most one element (or one cluster, at most [`FRAGMENT_BYTES_MAX`]) in memory. Every
//! cluster is one fragment: it must start with a keyframe, span at most
//! [`FRAGMENT_DURATION_MS_MAX`], and its timecode must not go back. A stored fragment is the
//! session header (with the Segment re-written with an unknown size) followed by the
//! cluster (re-written with a known size): a complete MKV document on its own.
//!
//! Not supported: EBML lacing inside video blocks is accepted on ingest but not remuxed to
//! MP4; a second EBML header or Segment on one connection is an error (as on AWS).

use crate::error::AckError;

pub const ID_EBML: u32 = 0x1A45_DFA3;
pub const ID_SEGMENT: u32 = 0x1853_8067;
pub const ID_SEEK_HEAD: u32 = 0x114D_9B74;
pub const ID_INFO: u32 = 0x1549_A966;
pub const ID_TIMECODE_SCALE: u32 = 0x2A_D7B1;
pub const ID_TRACKS: u32 = 0x1654_AE6B;
pub const ID_TRACK_ENTRY: u32 = 0xAE;
pub const ID_TRACK_NUMBER: u32 = 0xD7;
pub const ID_TRACK_TYPE: u32 = 0x83;
pub const ID_CODEC_ID: u32 = 0x86;
pub const ID_CODEC_PRIVATE: u32 = 0x63A2;
pub const ID_DEFAULT_DURATION: u32 = 0x23_E383;
pub const ID_VIDEO: u32 = 0xE0;
pub const ID_PIXEL_WIDTH: u32 = 0xB0;
pub const ID_PIXEL_HEIGHT: u32 = 0xBA;
pub const ID_CLUSTER: u32 = 0x1F43_B675;
pub const ID_TIMECODE: u32 = 0xE7;
pub const ID_SIMPLE_BLOCK: u32 = 0xA3;
pub const ID_BLOCK_GROUP: u32 = 0xA0;
pub const ID_BLOCK: u32 = 0xA1;
pub const ID_REFERENCE_BLOCK: u32 = 0xFB;
pub const ID_TAGS: u32 = 0x1254_C367;
pub const ID_TAG: u32 = 0x7373;
pub const ID_SIMPLE_TAG: u32 = 0x67C8;
pub const ID_TAG_NAME: u32 = 0x45A3;
pub const ID_TAG_STRING: u32 = 0x4487;
pub const ID_CUES: u32 = 0x1C53_BB6B;

/// Largest fragment (cluster), as AWS documents (50 MB).
pub const FRAGMENT_BYTES_MAX: u64 = 50 * 1000 * 1000;
/// Longest fragment, as AWS documents (10 s).
pub const FRAGMENT_DURATION_MS_MAX: i64 = 10_000;
/// Largest non-cluster element (EBML header, Info, Tracks, Tags, SeekHead, Cues ...).
pub const HEADER_ELEMENT_BYTES_MAX: u64 = 1024 * 1024;
/// Tracks per stream (AWS: up to 3).
pub const TRACKS_MAX: usize = 3;
/// The unknown-size marker for an 8-byte size field.
const UNKNOWN_SIZE_8: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

/// An element ID (marker bits kept) and its length; `None`: more bytes needed.
pub fn read_id(buf: &[u8]) -> Result<Option<(u32, usize)>, AckError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let len = first.leading_zeros() as usize + 1;
    if len > 4 {
        return Err(AckError::InvalidMkvData);
    }
    let Some(bytes) = buf.get(..len) else {
        return Ok(None);
    };
    let id = bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
    Ok(Some((id, len)))
}

/// A size (marker stripped; `None` inside for "unknown") and its length.
#[allow(clippy::type_complexity)]
pub fn read_size(buf: &[u8]) -> Result<Option<(Option<u64>, usize)>, AckError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first == 0 {
        return Err(AckError::InvalidMkvData);
    }
    let len = first.leading_zeros() as usize + 1;
    let Some(bytes) = buf.get(..len) else {
        return Ok(None);
    };
    let mask = if len == 8 { 0 } else { 0xFFu8 >> len };
    let mut value = u64::from(first & mask);
    let mut all_ones = (first & mask) == mask;
    for b in bytes.iter().skip(1) {
        value = (value << 8) | u64::from(*b);
        all_ones &= *b == 0xFF;
    }
    Ok(Some((if all_ones { None } else { Some(value) }, len)))
}

/// Element header: ID, size, header length; `None`: more bytes needed.
#[allow(clippy::type_complexity)]
pub fn read_header(buf: &[u8]) -> Result<Option<(u32, Option<u64>, usize)>, AckError> {
    let Some((id, id_len)) = read_id(buf)? else {
        return Ok(None);
    };
    let Some((size, size_len)) = read_size(buf.get(id_len..).unwrap_or(&[]))? else {
        return Ok(None);
    };
    Ok(Some((id, size, id_len + size_len)))
}

fn read_uint(data: &[u8]) -> u64 {
    data.iter()
        .take(8)
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

/// Iterates the children of a complete master element's body.
pub fn children(body: &[u8]) -> impl Iterator<Item = Result<(u32, &[u8], &[u8]), AckError>> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let rest = body.get(pos..)?;
        if rest.is_empty() {
            return None;
        }
        let item = match read_header(rest) {
            Ok(Some((id, Some(size), header_len))) => {
                let end = usize::try_from(size)
                    .ok()
                    .and_then(|size| header_len.checked_add(size));
                match end.and_then(|end| rest.get(..end).map(|raw| (end, raw))) {
                    Some((end, raw)) => {
                        pos += end;
                        Ok((id, raw.get(header_len..).unwrap_or(&[]), raw))
                    }
                    None => Err(AckError::InvalidMkvData),
                }
            }
            Ok(_) => Err(AckError::InvalidMkvData),
            Err(error) => Err(error),
        };
        if item.is_err() {
            pos = body.len();
        }
        Some(item)
    })
}

pub fn write_id(out: &mut Vec<u8>, id: u32) {
    let bytes = id.to_be_bytes();
    let skip = (id.leading_zeros() / 8) as usize;
    out.extend_from_slice(bytes.get(skip..).unwrap_or(&bytes));
}

/// An 8-byte size field (simple and always large enough).
pub fn write_size(out: &mut Vec<u8>, size: u64) {
    let value = size | (1u64 << 56);
    out.extend_from_slice(&value.to_be_bytes());
}

pub fn write_element(out: &mut Vec<u8>, id: u32, body: &[u8]) {
    write_id(out, id);
    write_size(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// A `Tags` element with one `Tag` holding the given simple tags (GetMedia's
/// `AWS_KINESISVIDEO_*` tags).
pub fn tags_element(tags: &[(&str, String)]) -> Vec<u8> {
    let mut tag = Vec::new();
    for (name, value) in tags {
        let mut simple = Vec::new();
        write_element(&mut simple, ID_TAG_NAME, name.as_bytes());
        write_element(&mut simple, ID_TAG_STRING, value.as_bytes());
        write_element(&mut tag, ID_SIMPLE_TAG, &simple);
    }
    let mut tags_body = Vec::new();
    write_element(&mut tags_body, ID_TAG, &tag);
    let mut out = Vec::new();
    write_element(&mut out, ID_TAGS, &tags_body);
    out
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Track {
    pub number: u64,
    pub track_type: u64,
    pub codec_id: String,
    pub codec_private: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub default_duration_ns: u64,
}

/// What the session header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub timecode_scale_ns: u64,
    pub tracks: Vec<Track>,
}

impl Default for Header {
    fn default() -> Self {
        Header {
            timecode_scale_ns: 1_000_000,
            tracks: Vec::new(),
        }
    }
}

impl Header {
    pub fn to_ms(&self, timecode: i64) -> i64 {
        let scaled = i128::from(timecode) * i128::from(self.timecode_scale_ns) / 1_000_000;
        i64::try_from(scaled).unwrap_or(i64::MAX)
    }

    fn read_info(&mut self, body: &[u8]) -> Result<(), AckError> {
        for child in children(body) {
            let (id, data, _) = child?;
            if id == ID_TIMECODE_SCALE {
                let scale = read_uint(data);
                if scale == 0 {
                    return Err(AckError::InvalidMkvData);
                }
                self.timecode_scale_ns = scale;
            }
        }
        Ok(())
    }

    fn read_tracks(&mut self, body: &[u8]) -> Result<(), AckError> {
        self.tracks.clear();
        for child in children(body) {
            let (id, data, _) = child?;
            if id != ID_TRACK_ENTRY {
                continue;
            }
            let mut track = Track::default();
            for field in children(data) {
                let (id, data, _) = field?;
                match id {
                    ID_TRACK_NUMBER => track.number = read_uint(data),
                    ID_TRACK_TYPE => track.track_type = read_uint(data),
                    ID_CODEC_ID => {
                        track.codec_id = String::from_utf8_lossy(data)
                            .trim_end_matches('\0')
                            .to_string()
                    }
                    ID_CODEC_PRIVATE => track.codec_private = data.to_vec(),
                    ID_DEFAULT_DURATION => track.default_duration_ns = read_uint(data),
                    ID_VIDEO => {
                        for video in children(data) {
                            let (id, data, _) = video?;
                            match id {
                                ID_PIXEL_WIDTH => {
                                    track.width = u32::try_from(read_uint(data)).unwrap_or(0)
                                }
                                ID_PIXEL_HEIGHT => {
                                    track.height = u32::try_from(read_uint(data)).unwrap_or(0)
                                }
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            self.tracks.push(track);
        }
        if self.tracks.len() > TRACKS_MAX {
            return Err(AckError::MoreThanAllowedTracksFound);
        }
        if self.tracks.is_empty() {
            return Err(AckError::InvalidMkvData);
        }
        Ok(())
    }

    /// Parses a stored session header (EBML header, Segment start, Info, Tracks).
    pub fn parse_stored(bytes: &[u8]) -> Result<Header, AckError> {
        let mut header = Header::default();
        let mut pos = 0usize;
        while let Some(rest) = bytes.get(pos..).filter(|r| !r.is_empty()) {
            let Some((id, size, header_len)) = read_header(rest)? else {
                return Err(AckError::InvalidMkvData);
            };
            if id == ID_SEGMENT {
                pos += header_len;
                continue;
            }
            let size = size.ok_or(AckError::InvalidMkvData)?;
            let end = usize::try_from(size)
                .ok()
                .and_then(|s| s.checked_add(header_len))
                .ok_or(AckError::InvalidMkvData)?;
            let body = rest.get(header_len..end).ok_or(AckError::InvalidMkvData)?;
            match id {
                ID_INFO => header.read_info(body)?,
                ID_TRACKS => header.read_tracks(body)?,
                _ => {}
            }
            pos += end;
        }
        Ok(header)
    }
}

/// One frame of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub track: u64,
    /// Absolute presentation time in milliseconds (cluster timecode + block offset).
    pub time_ms: i64,
    pub keyframe: bool,
    /// `true` when the block uses lacing (several frames in one block).
    pub laced: bool,
    /// The frame bytes: offset and length inside the cluster body.
    pub data_start: usize,
    pub data_len: usize,
}

/// A parsed cluster body.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    pub timecode_ms: Option<i64>,
    pub frames: Vec<Frame>,
}

fn parse_block(
    header: &Header,
    cluster_timecode: i64,
    data: &[u8],
    data_offset: usize,
    simple: bool,
    referenced: bool,
) -> Result<Frame, AckError> {
    let Some((track, track_len)) = read_size(data)? else {
        return Err(AckError::InvalidMkvData);
    };
    let track = track.ok_or(AckError::InvalidMkvData)?;
    let rest = data.get(track_len..).ok_or(AckError::InvalidMkvData)?;
    let (Some(hi), Some(lo), Some(flags)) = (rest.first(), rest.get(1), rest.get(2)) else {
        return Err(AckError::InvalidMkvData);
    };
    let relative = i16::from_be_bytes([*hi, *lo]);
    let keyframe = if simple {
        flags & 0x80 != 0
    } else {
        !referenced
    };
    let frame_start = track_len + 3;
    Ok(Frame {
        track,
        time_ms: header.to_ms(cluster_timecode + i64::from(relative)),
        keyframe,
        laced: flags & 0x06 != 0,
        data_start: data_offset + frame_start,
        data_len: data.len().saturating_sub(frame_start),
    })
}

/// Parses one cluster child into `cluster`; `offset` is where `raw` starts in the cluster
/// body. Returns the cluster timecode in raw units once seen.
fn cluster_child(
    header: &Header,
    cluster: &mut Cluster,
    raw_timecode: &mut Option<i64>,
    id: u32,
    data: &[u8],
    data_offset: usize,
) -> Result<(), AckError> {
    match id {
        ID_TIMECODE => {
            let value = i64::try_from(read_uint(data)).map_err(|_| AckError::InvalidMkvData)?;
            *raw_timecode = Some(value);
            cluster.timecode_ms = Some(header.to_ms(value));
        }
        ID_SIMPLE_BLOCK => {
            let timecode = raw_timecode.ok_or(AckError::InvalidMkvData)?;
            let frame = parse_block(header, timecode, data, data_offset, true, false)?;
            cluster.frames.push(frame);
        }
        ID_BLOCK_GROUP => {
            let timecode = raw_timecode.ok_or(AckError::InvalidMkvData)?;
            let mut block = None;
            let mut referenced = false;
            let mut inner_offset = 0usize;
            for child in children(data) {
                let (id, body, raw) = child?;
                let body_offset = inner_offset + (raw.len() - body.len());
                match id {
                    ID_BLOCK => block = Some((body, body_offset)),
                    ID_REFERENCE_BLOCK => referenced = true,
                    _ => {}
                }
                inner_offset += raw.len();
            }
            let (body, body_offset) = block.ok_or(AckError::InvalidMkvData)?;
            let frame = parse_block(
                header,
                timecode,
                body,
                data_offset + body_offset,
                false,
                referenced,
            )?;
            cluster.frames.push(frame);
        }
        _ => {}
    }
    Ok(())
}

/// Parses a complete cluster body (as stored).
pub fn parse_cluster(header: &Header, body: &[u8]) -> Result<Cluster, AckError> {
    let mut cluster = Cluster::default();
    let mut raw_timecode = None;
    let mut offset = 0usize;
    for child in children(body) {
        let (id, data, raw) = child?;
        let data_offset = offset + (raw.len() - data.len());
        cluster_child(
            header,
            &mut cluster,
            &mut raw_timecode,
            id,
            data,
            data_offset,
        )?;
        offset += raw.len();
    }
    Ok(cluster)
}

/// The body of a stored cluster element (`cluster` starts with the Cluster ID).
pub fn cluster_body(cluster: &[u8]) -> Result<&[u8], AckError> {
    match read_header(cluster)? {
        Some((ID_CLUSTER, Some(size), header_len)) => {
            let end = usize::try_from(size)
                .ok()
                .and_then(|s| s.checked_add(header_len))
                .ok_or(AckError::InvalidMkvData)?;
            cluster.get(header_len..end).ok_or(AckError::InvalidMkvData)
        }
        _ => Err(AckError::InvalidMkvData),
    }
}

/// What [`Ingest::push`] reports.
#[derive(Debug)]
pub enum IngestEvent {
    /// A cluster started: its timecode (ms, as sent) is known.
    FragmentStarted { timecode_ms: i64 },
    /// A cluster is complete.
    Fragment(CompleteFragment),
}

#[derive(Debug)]
pub struct CompleteFragment {
    pub timecode_ms: i64,
    pub duration_ms: i64,
    /// Frames (blocks) in the cluster, for the `PutMedia.IncomingFrames` metric.
    pub n_frames: usize,
    /// The session header, then the cluster with a known size.
    pub header: std::sync::Arc<Vec<u8>>,
    pub cluster: Vec<u8>,
}

#[derive(Debug)]
struct OpenCluster {
    /// Declared body size, `None` for unknown size.
    size: Option<u64>,
    body: Vec<u8>,
    parsed: Cluster,
    raw_timecode: Option<i64>,
}

/// The PutMedia parser state.
#[derive(Debug, Default)]
pub struct Ingest {
    buf: Vec<u8>,
    ebml_seen: bool,
    segment_seen: bool,
    tracks_seen: bool,
    header: Header,
    header_bytes: Vec<u8>,
    shared_header: Option<std::sync::Arc<Vec<u8>>>,
    cluster: Option<OpenCluster>,
    last_timecode_ms: Option<i64>,
    failed: bool,
}

impl Ingest {
    pub fn new() -> Ingest {
        Ingest::default()
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The timecode of the cluster being received, once known (for error events).
    pub fn open_timecode_ms(&self) -> Option<i64> {
        self.cluster.as_ref().and_then(|c| c.parsed.timecode_ms)
    }

    /// Feeds bytes; returns the completed events, or the first error (after which the
    /// session is over).
    pub fn push(&mut self, bytes: &[u8], events: &mut Vec<IngestEvent>) -> Result<(), AckError> {
        if self.failed {
            return Err(AckError::InvalidMkvData);
        }
        self.buf.extend_from_slice(bytes);
        let result = self.drain(events);
        if result.is_err() {
            self.failed = true;
            self.buf.clear();
        }
        result
    }

    /// The upload ended: closes an open unknown-size cluster; anything left over is an error.
    pub fn finish(&mut self, events: &mut Vec<IngestEvent>) -> Result<(), AckError> {
        if self.failed {
            return Ok(());
        }
        if let Some(cluster) = &self.cluster
            && cluster.size.is_none()
            && self.buf.is_empty()
        {
            return self.close_cluster(events);
        }
        if self.cluster.is_some() || !self.buf.is_empty() {
            self.failed = true;
            return Err(AckError::InvalidMkvData);
        }
        Ok(())
    }

    fn drain(&mut self, events: &mut Vec<IngestEvent>) -> Result<(), AckError> {
        loop {
            if let Some(cluster) = &self.cluster
                && cluster.size == Some(cluster.body.len() as u64)
            {
                self.close_cluster(events)?;
                continue;
            }
            let Some((id, size, header_len)) = read_header(&self.buf)? else {
                return Ok(());
            };
            if self.cluster.is_some() {
                if !self.cluster_child_ok(id) {
                    // An unknown-size cluster ends where a segment-level element starts.
                    self.close_cluster(events)?;
                    continue;
                }
                let size = size.ok_or(AckError::InvalidMkvData)?;
                let total = (header_len as u64).saturating_add(size);
                if let Some(cluster) = &self.cluster {
                    let body_len = cluster.body.len() as u64;
                    if body_len.saturating_add(total) > FRAGMENT_BYTES_MAX {
                        return Err(AckError::MaxFragmentSizeReached);
                    }
                    if let Some(declared) = cluster.size
                        && body_len + total > declared
                    {
                        return Err(AckError::InvalidMkvData);
                    }
                }
                let total = usize::try_from(total).map_err(|_| AckError::InvalidMkvData)?;
                if self.buf.len() < total {
                    return Ok(());
                }
                let raw: Vec<u8> = self.buf.drain(..total).collect();
                self.add_cluster_child(id, header_len, raw, events)?;
                continue;
            }
            match id {
                ID_EBML => {
                    if self.ebml_seen {
                        return Err(AckError::InvalidMkvData);
                    }
                    let Some(raw) = self.take_element(size, header_len)? else {
                        return Ok(());
                    };
                    self.ebml_seen = true;
                    self.header_bytes.extend_from_slice(&raw);
                }
                ID_SEGMENT => {
                    if !self.ebml_seen || self.segment_seen {
                        return Err(AckError::InvalidMkvData);
                    }
                    self.buf.drain(..header_len);
                    self.segment_seen = true;
                    write_id(&mut self.header_bytes, ID_SEGMENT);
                    self.header_bytes.extend_from_slice(&UNKNOWN_SIZE_8);
                }
                ID_CLUSTER => {
                    if !self.segment_seen || !self.tracks_seen {
                        return Err(AckError::InvalidMkvData);
                    }
                    if size.is_some_and(|size| size > FRAGMENT_BYTES_MAX) {
                        return Err(AckError::MaxFragmentSizeReached);
                    }
                    self.buf.drain(..header_len);
                    self.cluster = Some(OpenCluster {
                        size,
                        body: Vec::new(),
                        parsed: Cluster::default(),
                        raw_timecode: None,
                    });
                }
                _ => {
                    if !self.segment_seen {
                        return Err(AckError::InvalidMkvData);
                    }
                    let Some(raw) = self.take_element(size, header_len)? else {
                        return Ok(());
                    };
                    let body = raw.get(header_len..).unwrap_or(&[]);
                    match id {
                        ID_INFO => {
                            if self.tracks_seen {
                                return Err(AckError::InvalidMkvData);
                            }
                            self.header.read_info(body)?;
                            self.header_bytes.extend_from_slice(&raw);
                        }
                        ID_TRACKS => {
                            if self.tracks_seen {
                                return Err(AckError::InvalidMkvData);
                            }
                            self.header.read_tracks(body)?;
                            self.tracks_seen = true;
                            self.header_bytes.extend_from_slice(&raw);
                            self.shared_header =
                                Some(std::sync::Arc::new(self.header_bytes.clone()));
                        }
                        // SeekHead, Cues, Tags, Void, CRC-32, Chapters ...: skipped.
                        _ => {}
                    }
                }
            }
        }
    }

    fn cluster_child_ok(&self, id: u32) -> bool {
        !matches!(
            id,
            ID_EBML
                | ID_SEGMENT
                | ID_CLUSTER
                | ID_INFO
                | ID_TRACKS
                | ID_TAGS
                | ID_CUES
                | ID_SEEK_HEAD
        )
    }

    /// Takes a complete element of known size (bounded) from the buffer.
    fn take_element(
        &mut self,
        size: Option<u64>,
        header_len: usize,
    ) -> Result<Option<Vec<u8>>, AckError> {
        let size = size.ok_or(AckError::InvalidMkvData)?;
        if size > HEADER_ELEMENT_BYTES_MAX {
            return Err(AckError::InvalidMkvData);
        }
        let total = header_len + usize::try_from(size).map_err(|_| AckError::InvalidMkvData)?;
        if self.buf.len() < total {
            return Ok(None);
        }
        Ok(Some(self.buf.drain(..total).collect()))
    }

    fn add_cluster_child(
        &mut self,
        id: u32,
        header_len: usize,
        raw: Vec<u8>,
        events: &mut Vec<IngestEvent>,
    ) -> Result<(), AckError> {
        let header = &self.header;
        let Some(cluster) = self.cluster.as_mut() else {
            return Err(AckError::InvalidMkvData);
        };
        let had_timecode = cluster.parsed.timecode_ms.is_some();
        let n_frames = cluster.parsed.frames.len();
        let offset = cluster.body.len();
        let data = raw.get(header_len..).unwrap_or(&[]);
        cluster_child(
            header,
            &mut cluster.parsed,
            &mut cluster.raw_timecode,
            id,
            data,
            offset + header_len,
        )?;
        cluster.body.extend_from_slice(&raw);
        if let (false, Some(timecode_ms)) = (had_timecode, cluster.parsed.timecode_ms) {
            if self.last_timecode_ms.is_some_and(|last| timecode_ms < last) {
                return Err(AckError::FragmentTimecodeLesserThanPrevious);
            }
            events.push(IngestEvent::FragmentStarted { timecode_ms });
        }
        if n_frames == 0
            && let Some(first) = cluster.parsed.frames.first()
            && !first.keyframe
        {
            return Err(AckError::FragmentWithoutKeyframe);
        }
        if let (Some(first), Some(last)) =
            (cluster.parsed.timecode_ms, cluster.parsed.frames.last())
            && last.time_ms - first > FRAGMENT_DURATION_MS_MAX
        {
            return Err(AckError::MaxFragmentDurationReached);
        }
        Ok(())
    }

    fn close_cluster(&mut self, events: &mut Vec<IngestEvent>) -> Result<(), AckError> {
        let Some(cluster) = self.cluster.take() else {
            return Ok(());
        };
        let timecode_ms = cluster.parsed.timecode_ms.ok_or(AckError::InvalidMkvData)?;
        if cluster.parsed.frames.is_empty() {
            return Err(AckError::FramesMissing);
        }
        let header = self.shared_header.clone().ok_or(AckError::InvalidMkvData)?;
        let duration_ms = fragment_duration_ms(&self.header, &cluster.parsed);
        self.last_timecode_ms = Some(timecode_ms);
        let mut bytes = Vec::with_capacity(cluster.body.len() + 12);
        write_element(&mut bytes, ID_CLUSTER, &cluster.body);
        events.push(IngestEvent::Fragment(CompleteFragment {
            timecode_ms,
            duration_ms,
            n_frames: cluster.parsed.frames.len(),
            header,
            cluster: bytes,
        }));
        Ok(())
    }
}

/// From the first frame to the end of the last one (the last frame lasts the track's
/// default duration, else the average gap between frames).
pub fn fragment_duration_ms(header: &Header, cluster: &Cluster) -> i64 {
    let track = header.tracks.first().map(|t| t.number).unwrap_or(1);
    let times: Vec<i64> = cluster
        .frames
        .iter()
        .filter(|f| f.track == track)
        .map(|f| f.time_ms)
        .collect();
    let (Some(min), Some(max)) = (times.iter().min(), times.iter().max()) else {
        return 0;
    };
    let default_ms = header
        .tracks
        .first()
        .map(|t| i64::try_from(t.default_duration_ns / 1_000_000).unwrap_or(0))
        .unwrap_or(0);
    let last_ms = if default_ms > 0 {
        default_ms
    } else if times.len() > 1 {
        (max - min) / (times.len() as i64 - 1)
    } else {
        0
    };
    max - min + last_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn element(id: u32, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_element(&mut out, id, body);
        out
    }

    fn uint(id: u32, value: u64) -> Vec<u8> {
        element(id, &value.to_be_bytes())
    }

    fn block(track: u8, relative: i16, key: bool) -> Vec<u8> {
        let mut body = vec![0x80 | track];
        body.extend_from_slice(&relative.to_be_bytes());
        body.push(if key { 0x80 } else { 0 });
        body.extend_from_slice(&[0, 0, 0, 1, 0x65]);
        element(ID_SIMPLE_BLOCK, &body)
    }

    fn session_header() -> Vec<u8> {
        let mut out = element(ID_EBML, &uint(0x4282, 1));
        write_id(&mut out, ID_SEGMENT);
        out.extend_from_slice(&UNKNOWN_SIZE_8);
        out.extend(element(ID_INFO, &uint(ID_TIMECODE_SCALE, 1_000_000)));
        let mut entry = uint(ID_TRACK_NUMBER, 1);
        entry.extend(element(ID_CODEC_ID, b"V_MPEG4/ISO/AVC"));
        out.extend(element(ID_TRACKS, &element(ID_TRACK_ENTRY, &entry)));
        out
    }

    fn cluster(timecode: u64, blocks: &[(i16, bool)]) -> Vec<u8> {
        let mut body = uint(ID_TIMECODE, timecode);
        for (relative, key) in blocks {
            body.extend(block(1, *relative, *key));
        }
        element(ID_CLUSTER, &body)
    }

    fn run(input: &[u8], piece: usize) -> (Vec<IngestEvent>, Result<(), AckError>) {
        let mut ingest = Ingest::new();
        let mut events = Vec::new();
        for chunk in input.chunks(piece) {
            if let Err(error) = ingest.push(chunk, &mut events) {
                return (events, Err(error));
            }
        }
        let result = ingest.finish(&mut events);
        (events, result)
    }

    #[test]
    fn clusters_become_fragments_whatever_the_chunking() {
        let mut input = session_header();
        input.extend(cluster(0, &[(0, true), (40, false)]));
        input.extend(cluster(2000, &[(0, true), (40, false), (80, false)]));
        for piece in [1, 3, 7, 4096] {
            let (events, result) = run(&input, piece);
            assert!(result.is_ok(), "piece {piece}: {result:?}");
            let fragments: Vec<(i64, i64)> = events
                .iter()
                .filter_map(|e| match e {
                    IngestEvent::Fragment(f) => Some((f.timecode_ms, f.duration_ms)),
                    _ => None,
                })
                .collect();
            assert_eq!(fragments, vec![(0, 80), (2000, 120)], "piece {piece}");
        }
    }

    #[test]
    fn stored_fragment_parses_back() {
        let mut input = session_header();
        input.extend(cluster(500, &[(0, true), (40, false)]));
        let (events, result) = run(&input, 5);
        assert!(result.is_ok());
        let Some(IngestEvent::Fragment(fragment)) = events.last() else {
            panic!("no fragment: {events:?}");
        };
        let header = Header::parse_stored(&fragment.header).expect("header");
        assert_eq!(header.tracks.len(), 1);
        assert_eq!(header.tracks[0].codec_id, "V_MPEG4/ISO/AVC");
        let body = cluster_body(&fragment.cluster).expect("cluster");
        let parsed = parse_cluster(&header, body).expect("parse");
        assert_eq!(parsed.timecode_ms, Some(500));
        let times: Vec<i64> = parsed.frames.iter().map(|f| f.time_ms).collect();
        assert_eq!(times, vec![500, 540]);
        let frame = &parsed.frames[0];
        assert_eq!(
            &body[frame.data_start..frame.data_start + frame.data_len],
            &[0, 0, 0, 1, 0x65]
        );
    }

    #[test]
    fn errors() {
        let (_, result) = run(b"this is not a matroska file", 4);
        assert_eq!(result, Err(AckError::InvalidMkvData));

        let mut no_key = session_header();
        no_key.extend(cluster(0, &[(0, false)]));
        assert_eq!(run(&no_key, 10).1, Err(AckError::FragmentWithoutKeyframe));

        let mut back = session_header();
        back.extend(cluster(4000, &[(0, true)]));
        back.extend(cluster(2000, &[(0, true)]));
        assert_eq!(
            run(&back, 10).1,
            Err(AckError::FragmentTimecodeLesserThanPrevious)
        );

        let mut long = session_header();
        long.extend(cluster(0, &[(0, true), (10_001, false)]));
        assert_eq!(run(&long, 10).1, Err(AckError::MaxFragmentDurationReached));

        let mut truncated = session_header();
        let whole = cluster(0, &[(0, true)]);
        truncated.extend_from_slice(&whole[..whole.len() - 2]);
        assert_eq!(run(&truncated, 10).1, Err(AckError::InvalidMkvData));
    }
}
