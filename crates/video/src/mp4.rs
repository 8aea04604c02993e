//! An MP4 (ISO BMFF) writer for an H.264 or H.265 video track and an AAC track: the init segment (`ftyp` + `moov` with an
//! `avc1` sample entry carrying the MKV CodecPrivate as `avcC`) and one media segment
//! (`moof` + `mdat`) per fragment, which HLS and DASH serve; and the head of a progressive
//! MP4 (`ftyp`, `moov` with full sample tables, the `mdat` header) for GetClip, whose
//! sample bytes the caller streams after it.
//!
//! Hand-written rather than a crate: about 250 lines of boxes with exact control over the
//! timeline, no dependency. MKV H.264 frames are AVCC (length-prefixed NAL units), which is
//! what MP4 stores, so frames are copied unchanged. The timescale is 1000 (milliseconds,
//! MKV's usual resolution). Decode times are the sorted presentation times, composition
//! offsets the difference (B-frames work when frames are stored in decode order, as MKV
//! muxers do).
//!
//! Tracks: the video track is track 1; an AAC audio track (when the stream has one) is
//! track 2, with an `mp4a` sample entry whose `esds` carries the MKV CodecPrivate (the
//! AudioSpecificConfig). A media segment has one `traf` per track; its `mdat` holds the
//! video samples, then the audio samples. Audio uses the same millisecond timescale (the
//! resolution MKV gives its blocks).
//!
//! H.265 (`V_MPEGH/ISO/HEVC`) is written the same way with an `hvc1` sample entry and the
//! CodecPrivate as `hvcC`.
//!
//! Not supported: laced blocks.

use crate::error::VideoError;
use crate::mkv::{self, Header, Track};
use crate::ts::AacConfig;

pub const TIMESCALE: u32 = 1000;
const CODEC_H264: &str = "V_MPEG4/ISO/AVC";
const CODEC_H265: &str = "V_MPEGH/ISO/HEVC";
/// The fixed part of an HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1).
const HVCC_HEADER_BYTES: usize = 23;
const CODEC_AAC: &str = "A_AAC";

/// The AAC audio track of a stream, if it has one.
pub fn audio_track(header: &Header) -> Option<&Track> {
    header
        .tracks
        .iter()
        .find(|t| t.codec_id == CODEC_AAC && t.codec_private.len() >= 2)
}

/// The video track of a stream, checked for what MP4 output needs.
pub fn video_track(header: &Header) -> Result<&Track, VideoError> {
    let track = header
        .tracks
        .iter()
        .find(|t| t.track_type == 1 || t.codec_id.starts_with("V_"))
        .ok_or_else(|| VideoError::UnsupportedMediaType {
            detail: "the stream has no video track".into(),
        })?;
    if track.codec_id != CODEC_H264 && track.codec_id != CODEC_H265 {
        return Err(VideoError::UnsupportedMediaType {
            detail: format!(
                "codec {} (only {CODEC_H264} and {CODEC_H265} are served)",
                track.codec_id
            ),
        });
    }
    if track.codec_private.is_empty() {
        return Err(VideoError::MissingCodecPrivateData);
    }
    let min_len = if is_hevc(track) { HVCC_HEADER_BYTES } else { 7 };
    if track.codec_private.first() != Some(&1) || track.codec_private.len() < min_len {
        return Err(VideoError::InvalidCodecPrivateData);
    }
    Ok(track)
}

/// Whether the video track is H.265 (its CodecPrivate is an `hvcC`, not an `avcC`).
pub fn is_hevc(track: &Track) -> bool {
    track.codec_id == CODEC_H265
}

/// The RFC 6381 `codecs` name of the video track: `avc1.PPCCLL` from an `avcC`, or
/// `hvc1.P.C.TL.B` (ISO/IEC 14496-15 annex E) from an `hvcC`.
pub fn codecs_name(track: &Track) -> String {
    let record = &track.codec_private;
    if !is_hevc(track) {
        return match record.get(1..4) {
            Some(p) => format!("avc1.{:02x}{:02x}{:02x}", p[0], p[1], p[2]),
            None => "avc1.42e01e".into(),
        };
    }
    let (Some(&profile), Some(compat), Some(constraints), Some(&level)) = (
        record.get(1),
        record.get(2..6),
        record.get(6..12),
        record.get(12),
    ) else {
        return "hvc1.1.6.L93.B0".into();
    };
    let space = match profile >> 6 {
        1 => "A",
        2 => "B",
        3 => "C",
        _ => "",
    };
    let compat = u32::from_be_bytes([compat[0], compat[1], compat[2], compat[3]]).reverse_bits();
    let tier = if profile & 0x20 != 0 { 'H' } else { 'L' };
    let mut name = format!("hvc1.{space}{}.{compat:X}.{tier}{level}", profile & 0x1F);
    let last = constraints
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |i| i + 1);
    for byte in constraints.iter().take(last.max(1)) {
        name.push_str(&format!(".{byte:X}"));
    }
    name
}

fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&((body.len() + 8) as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
    out
}

fn full_box(kind: &[u8; 4], version: u8, flags: u32, body: &[u8]) -> Vec<u8> {
    let mut inner = Vec::with_capacity(body.len() + 4);
    inner.push(version);
    inner.extend_from_slice(&flags.to_be_bytes()[1..]);
    inner.extend_from_slice(body);
    boxed(kind, &inner)
}

const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

fn matrix() -> Vec<u8> {
    MATRIX.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn ftyp(major: &[u8; 4], brands: &[&[u8; 4]]) -> Vec<u8> {
    let mut ftyp = Vec::new();
    ftyp.extend_from_slice(major);
    ftyp.extend_from_slice(&0u32.to_be_bytes());
    for brand in brands {
        ftyp.extend_from_slice(*brand);
    }
    boxed(b"ftyp", &ftyp)
}

fn mvhd(duration_ms: u32, next_track_id: u32) -> Vec<u8> {
    let mut mvhd = Vec::new();
    mvhd.extend_from_slice(&[0u8; 8]); // creation, modification
    mvhd.extend_from_slice(&TIMESCALE.to_be_bytes());
    mvhd.extend_from_slice(&duration_ms.to_be_bytes());
    mvhd.extend_from_slice(&0x0001_0000u32.to_be_bytes()); // rate
    mvhd.extend_from_slice(&0x0100u16.to_be_bytes()); // volume
    mvhd.extend_from_slice(&[0u8; 10]);
    mvhd.extend(matrix());
    mvhd.extend_from_slice(&[0u8; 24]);
    mvhd.extend_from_slice(&next_track_id.to_be_bytes());
    full_box(b"mvhd", 0, 0, &mvhd)
}

/// The tracks an MP4 output carries: the video track and, if the stream has one, its AAC
/// audio track.
#[derive(Debug, Clone, Copy)]
pub struct Tracks<'a> {
    pub video: &'a Track,
    pub audio: Option<(&'a Track, AacConfig)>,
}

impl<'a> Tracks<'a> {
    /// The stream's tracks, checked for MP4 output (an audio track that is not usable
    /// AAC is an error, not silently dropped).
    pub fn of(header: &'a Header) -> Result<Tracks<'a>, VideoError> {
        let video = video_track(header)?;
        let audio = match audio_track(header) {
            Some(track) => Some((track, crate::ts::aac_config(&track.codec_private)?)),
            None => None,
        };
        Ok(Tracks { video, audio })
    }

    fn next_track_id(&self) -> u32 {
        if self.audio.is_some() { 3 } else { 2 }
    }
}

fn tkhd(track_id: u32, duration_ms: u32, audio: bool, width: u32, height: u32) -> Vec<u8> {
    let mut tkhd = Vec::new();
    tkhd.extend_from_slice(&[0u8; 8]);
    tkhd.extend_from_slice(&track_id.to_be_bytes());
    tkhd.extend_from_slice(&[0u8; 4]);
    tkhd.extend_from_slice(&duration_ms.to_be_bytes());
    tkhd.extend_from_slice(&[0u8; 8]);
    tkhd.extend_from_slice(&[0u8; 4]); // layer, alternate group
    tkhd.extend_from_slice(&(if audio { 0x0100u16 } else { 0 }).to_be_bytes()); // volume
    tkhd.extend_from_slice(&[0u8; 2]);
    tkhd.extend(matrix());
    tkhd.extend_from_slice(&(width << 16).to_be_bytes());
    tkhd.extend_from_slice(&(height << 16).to_be_bytes());
    full_box(b"tkhd", 0, 3, &tkhd)
}

fn mdhd(duration_ms: u32) -> Vec<u8> {
    let mut mdhd = Vec::new();
    mdhd.extend_from_slice(&[0u8; 8]);
    mdhd.extend_from_slice(&TIMESCALE.to_be_bytes());
    mdhd.extend_from_slice(&duration_ms.to_be_bytes());
    mdhd.extend_from_slice(&0x55C4u16.to_be_bytes()); // "und"
    mdhd.extend_from_slice(&0u16.to_be_bytes());
    full_box(b"mdhd", 0, 0, &mdhd)
}

fn hdlr(handler: &[u8; 4], name: &[u8]) -> Vec<u8> {
    let mut hdlr = Vec::new();
    hdlr.extend_from_slice(&[0u8; 4]);
    hdlr.extend_from_slice(handler);
    hdlr.extend_from_slice(&[0u8; 12]);
    hdlr.extend_from_slice(name);
    full_box(b"hdlr", 0, 0, &hdlr)
}

fn dinf() -> Vec<u8> {
    let url = full_box(b"url ", 0, 1, &[]);
    let mut dref = 1u32.to_be_bytes().to_vec();
    dref.extend(url);
    boxed(b"dinf", &full_box(b"dref", 0, 0, &dref))
}

/// An MPEG-4 descriptor (ISO/IEC 14496-1 7.2.2) with a one-byte length (ours are short).
fn descriptor(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag, (body.len() & 0x7F) as u8];
    out.extend_from_slice(body);
    out
}

/// `trak` of the AAC track (id 2); `tables` are the sample tables after `stsd`.
fn audio_trak(track: &Track, config: AacConfig, duration_ms: u32, tables: &[u8]) -> Vec<u8> {
    let mut decoder_config = vec![0x40, 0x15, 0, 0, 0]; // MPEG-4 audio, audio stream
    decoder_config.extend_from_slice(&0u32.to_be_bytes()); // max bitrate
    decoder_config.extend_from_slice(&0u32.to_be_bytes()); // average bitrate
    // CodecPrivate beyond 100 bytes would not fit a one-byte descriptor length.
    let asc = track
        .codec_private
        .get(..track.codec_private.len().min(100))
        .unwrap_or_default();
    decoder_config.extend(descriptor(0x05, asc));
    let mut es = vec![0, 2, 0]; // ES_ID, flags
    es.extend(descriptor(0x04, &decoder_config));
    es.extend(descriptor(0x06, &[0x02]));
    let esds = full_box(b"esds", 0, 0, &descriptor(0x03, &es));

    let mut mp4a = Vec::new();
    mp4a.extend_from_slice(&[0u8; 6]);
    mp4a.extend_from_slice(&1u16.to_be_bytes()); // data reference index
    mp4a.extend_from_slice(&[0u8; 8]);
    mp4a.extend_from_slice(&u16::from(config.channels.max(1)).to_be_bytes());
    mp4a.extend_from_slice(&16u16.to_be_bytes()); // sample size
    mp4a.extend_from_slice(&[0u8; 4]);
    let rate = config.sample_rate().min(65535);
    mp4a.extend_from_slice(&(rate << 16).to_be_bytes());
    mp4a.extend(esds);
    let mut stsd = 1u32.to_be_bytes().to_vec();
    stsd.extend(boxed(b"mp4a", &mp4a));
    let mut stbl = full_box(b"stsd", 0, 0, &stsd);
    stbl.extend_from_slice(tables);

    let mut minf = full_box(b"smhd", 0, 0, &[0u8; 4]);
    minf.extend(dinf());
    minf.extend(boxed(b"stbl", &stbl));
    let mut mdia = mdhd(duration_ms);
    mdia.extend(hdlr(b"soun", b"SoundHandler\0"));
    mdia.extend(boxed(b"minf", &minf));
    let mut trak = tkhd(2, duration_ms, true, 0, 0);
    trak.extend(boxed(b"mdia", &mdia));
    boxed(b"trak", &trak)
}

/// `trak` of the video track (id 1); `tables` are the sample tables after `stsd`.
fn video_trak(track: &Track, duration_ms: u32, tables: &[u8]) -> Vec<u8> {
    let vmhd = full_box(b"vmhd", 0, 1, &[0u8; 8]);

    let mut avc1 = Vec::new();
    avc1.extend_from_slice(&[0u8; 6]);
    avc1.extend_from_slice(&1u16.to_be_bytes()); // data reference index
    avc1.extend_from_slice(&[0u8; 16]);
    avc1.extend_from_slice(&(track.width as u16).to_be_bytes());
    avc1.extend_from_slice(&(track.height as u16).to_be_bytes());
    avc1.extend_from_slice(&0x0048_0000u32.to_be_bytes());
    avc1.extend_from_slice(&0x0048_0000u32.to_be_bytes());
    avc1.extend_from_slice(&0u32.to_be_bytes());
    avc1.extend_from_slice(&1u16.to_be_bytes()); // frame count
    avc1.extend_from_slice(&[0u8; 32]); // compressor name
    avc1.extend_from_slice(&0x0018u16.to_be_bytes());
    avc1.extend_from_slice(&(-1i16).to_be_bytes());
    // The MKV CodecPrivate is the decoder configuration record MP4 stores.
    let (entry, config) = if is_hevc(track) {
        (b"hvc1", b"hvcC")
    } else {
        (b"avc1", b"avcC")
    };
    avc1.extend(boxed(config, &track.codec_private));
    let mut stsd = 1u32.to_be_bytes().to_vec();
    stsd.extend(boxed(entry, &avc1));

    let mut stbl = full_box(b"stsd", 0, 0, &stsd);
    stbl.extend_from_slice(tables);

    let mut minf = vmhd;
    minf.extend(dinf());
    minf.extend(boxed(b"stbl", &stbl));

    let mut mdia = mdhd(duration_ms);
    mdia.extend(hdlr(b"vide", b"VideoHandler\0"));
    mdia.extend(boxed(b"minf", &minf));

    let mut trak = tkhd(1, duration_ms, false, track.width, track.height);
    trak.extend(boxed(b"mdia", &mdia));
    boxed(b"trak", &trak)
}

/// `ftyp` + `moov` for the tracks.
pub fn init_segment(tracks: Tracks) -> Vec<u8> {
    let mut out = ftyp(b"iso6", &[b"iso6", b"iso5", b"avc1", b"mp41"]);
    let mut tables = full_box(b"stts", 0, 0, &0u32.to_be_bytes());
    tables.extend(full_box(b"stsc", 0, 0, &0u32.to_be_bytes()));
    tables.extend(full_box(b"stsz", 0, 0, &[0u8; 8]));
    tables.extend(full_box(b"stco", 0, 0, &0u32.to_be_bytes()));

    let trex = |track_id: u32| {
        let mut trex = Vec::new();
        trex.extend_from_slice(&track_id.to_be_bytes());
        trex.extend_from_slice(&1u32.to_be_bytes());
        trex.extend_from_slice(&[0u8; 12]);
        full_box(b"trex", 0, 0, &trex)
    };
    let mut moov = mvhd(0, tracks.next_track_id());
    moov.extend(video_trak(tracks.video, 0, &tables));
    let mut mvex = trex(1);
    if let Some((audio, config)) = tracks.audio {
        moov.extend(audio_trak(audio, config, 0, &tables));
        mvex.extend(trex(2));
    }
    moov.extend(boxed(b"mvex", &mvex));
    out.extend(boxed(b"moov", &moov));
    out
}

/// What a progressive MP4's sample tables need of one sample (its bytes come later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleInfo {
    pub duration_ms: u32,
    pub composition_offset_ms: i32,
    pub size_bytes: u32,
    pub keyframe: bool,
}

impl SampleInfo {
    pub fn of(sample: &Sample) -> SampleInfo {
        SampleInfo {
            duration_ms: sample.duration_ms,
            composition_offset_ms: sample.composition_offset_ms,
            size_bytes: u32::try_from(sample.data.len()).unwrap_or(u32::MAX),
            keyframe: sample.keyframe,
        }
    }
}

/// Largest progressive MP4 this writer makes: chunk offsets are 32-bit (`stco`).
pub const PROGRESSIVE_BYTES_MAX: u64 = u32::MAX as u64;

/// One track's part of a progressive MP4: its samples, and how many of them each fragment
/// holds (a fragment's samples of a track are one chunk).
#[derive(Debug, Clone, Default)]
pub struct ClipTrack {
    pub samples: Vec<SampleInfo>,
    pub per_fragment: Vec<u32>,
}

/// `stts`, `ctts` (when needed), `stss` (when not all are sync samples), `stsz`, `stsc`.
fn sample_tables(samples: &[SampleInfo], chunks: &[u32]) -> Vec<u8> {
    let n_samples = samples.len() as u32;
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for sample in samples {
        match runs.last_mut() {
            Some((count, duration)) if *duration == sample.duration_ms => *count += 1,
            _ => runs.push((1, sample.duration_ms)),
        }
    }
    let mut stts = (runs.len() as u32).to_be_bytes().to_vec();
    for (count, duration) in &runs {
        stts.extend_from_slice(&count.to_be_bytes());
        stts.extend_from_slice(&duration.to_be_bytes());
    }
    let mut tables = full_box(b"stts", 0, 0, &stts);

    if samples.iter().any(|s| s.composition_offset_ms != 0) {
        let mut offsets: Vec<(u32, i32)> = Vec::new();
        for sample in samples {
            match offsets.last_mut() {
                Some((count, offset)) if *offset == sample.composition_offset_ms => *count += 1,
                _ => offsets.push((1, sample.composition_offset_ms)),
            }
        }
        let mut ctts = (offsets.len() as u32).to_be_bytes().to_vec();
        for (count, offset) in &offsets {
            ctts.extend_from_slice(&count.to_be_bytes());
            ctts.extend_from_slice(&offset.to_be_bytes());
        }
        // Version 1: signed offsets (decode times are the sorted presentation times).
        let version = u8::from(offsets.iter().any(|(_, o)| *o < 0));
        tables.extend(full_box(b"ctts", version, 0, &ctts));
    }

    if samples.iter().any(|s| !s.keyframe) {
        let keys: Vec<u32> = (1..=n_samples)
            .zip(samples)
            .filter(|(_, s)| s.keyframe)
            .map(|(i, _)| i)
            .collect();
        let mut stss = (keys.len() as u32).to_be_bytes().to_vec();
        for key in keys {
            stss.extend_from_slice(&key.to_be_bytes());
        }
        tables.extend(full_box(b"stss", 0, 0, &stss));
    }

    let mut stsz = 0u32.to_be_bytes().to_vec();
    stsz.extend_from_slice(&n_samples.to_be_bytes());
    for sample in samples {
        stsz.extend_from_slice(&sample.size_bytes.to_be_bytes());
    }
    tables.extend(full_box(b"stsz", 0, 0, &stsz));

    let mut stsc_runs: Vec<(u32, u32)> = Vec::new(); // (first chunk, samples per chunk)
    for (chunk_idx, n) in (1u32..).zip(chunks) {
        if stsc_runs.last().is_none_or(|(_, last)| last != n) {
            stsc_runs.push((chunk_idx, *n));
        }
    }
    let mut stsc = (stsc_runs.len() as u32).to_be_bytes().to_vec();
    for (first, n) in &stsc_runs {
        stsc.extend_from_slice(&first.to_be_bytes());
        stsc.extend_from_slice(&n.to_be_bytes());
        stsc.extend_from_slice(&1u32.to_be_bytes());
    }
    tables.extend(full_box(b"stsc", 0, 0, &stsc));
    tables
}

/// The head of a progressive (non-fragmented) MP4: `ftyp`, `moov` with complete sample
/// tables per track (`stts`, `ctts` when needed, `stss`, `stsz`, `stsc`, `stco`) and the
/// `mdat` header. The sample bytes follow it, fragment after fragment: in each the video
/// samples, then the audio samples (`parts[0]` is the video, `parts[1]` the audio when
/// `tracks` has it). Only the tables are in memory, so a clip is written without holding
/// its media.
pub fn progressive_head(tracks: Tracks, parts: &[ClipTrack]) -> Result<Vec<u8>, VideoError> {
    let too_large = || VideoError::InvalidMediaFrame {
        detail: "the clip is too large for a 32-bit MP4".into(),
    };
    let n_tracks = if tracks.audio.is_some() { 2 } else { 1 };
    let parts = parts.get(..n_tracks).ok_or(VideoError::FragmentsNotFound)?;
    let n_fragments = parts
        .iter()
        .map(|p| p.per_fragment.len())
        .max()
        .unwrap_or(0);
    // Chunk offsets relative to the mdat payload, in the order the bytes are streamed.
    let mut relative: Vec<Vec<u64>> = vec![Vec::new(); n_tracks];
    let mut chunks: Vec<Vec<u32>> = vec![Vec::new(); n_tracks];
    let mut next_sample = vec![0usize; n_tracks];
    let mut at = 0u64;
    for fragment in 0..n_fragments {
        for (t, part) in parts.iter().enumerate() {
            let n = part.per_fragment.get(fragment).copied().unwrap_or(0);
            if n == 0 {
                continue;
            }
            let first = next_sample.get(t).copied().unwrap_or(0);
            let bytes: u64 = part
                .samples
                .iter()
                .skip(first)
                .take(n as usize)
                .map(|s| u64::from(s.size_bytes))
                .sum();
            if let (Some(offsets), Some(counts), Some(next)) = (
                relative.get_mut(t),
                chunks.get_mut(t),
                next_sample.get_mut(t),
            ) {
                offsets.push(at);
                counts.push(n);
                *next += n as usize;
            }
            at += bytes;
        }
    }
    let mdat_bytes = at;
    let durations: Vec<u32> = parts
        .iter()
        .map(|p| {
            let total: u64 = p.samples.iter().map(|s| u64::from(s.duration_ms)).sum();
            u32::try_from(total).map_err(|_| too_large())
        })
        .collect::<Result<_, _>>()?;
    let tables: Vec<Vec<u8>> = parts
        .iter()
        .zip(&chunks)
        .map(|(p, c)| sample_tables(&p.samples, c))
        .collect();
    let head = |base: u64| -> Result<Vec<u8>, VideoError> {
        let mut traks = Vec::new();
        for (t, (tables, offsets)) in tables.iter().zip(&relative).enumerate() {
            let mut stco = (offsets.len() as u32).to_be_bytes().to_vec();
            for offset in offsets {
                let offset = u32::try_from(base + offset).map_err(|_| too_large())?;
                stco.extend_from_slice(&offset.to_be_bytes());
            }
            let mut tables = tables.clone();
            tables.extend(full_box(b"stco", 0, 0, &stco));
            let duration = durations.get(t).copied().unwrap_or(0);
            match (t, tracks.audio) {
                (0, _) => traks.extend(video_trak(tracks.video, duration, &tables)),
                (_, Some((audio, config))) => {
                    traks.extend(audio_trak(audio, config, duration, &tables))
                }
                (_, None) => {}
            }
        }
        let mut out = ftyp(b"isom", &[b"isom", b"iso2", b"avc1", b"mp41"]);
        let mut moov = mvhd(
            durations.iter().copied().max().unwrap_or(0),
            tracks.next_track_id(),
        );
        moov.extend(traks);
        out.extend(boxed(b"moov", &moov));
        let mdat_len = u32::try_from(mdat_bytes + 8).map_err(|_| too_large())?;
        out.extend_from_slice(&mdat_len.to_be_bytes());
        out.extend_from_slice(b"mdat");
        Ok(out)
    };
    // The head's length depends only on the number of chunks: measure, then place.
    let base = head(0)?.len() as u64;
    let out = head(base)?;
    if out.len() as u64 + mdat_bytes > PROGRESSIVE_BYTES_MAX {
        return Err(too_large());
    }
    Ok(out)
}

/// One sample of a media segment.
#[derive(Debug, Clone)]
pub struct Sample<'a> {
    pub decode_ms: i64,
    pub composition_offset_ms: i32,
    pub duration_ms: u32,
    pub keyframe: bool,
    pub data: &'a [u8],
}

/// The video samples of a stored fragment, on a timeline where the cluster starts at
/// `start_ms`; `span_ms` (when known: the distance to the next fragment) closes the last
/// sample.
pub fn fragment_samples<'a>(
    header: &Header,
    track: &Track,
    cluster_body: &'a [u8],
    start_ms: i64,
    span_ms: Option<i64>,
) -> Result<Vec<Sample<'a>>, VideoError> {
    let cluster = mkv::parse_cluster(header, cluster_body).map_err(|e| VideoError::Corrupt {
        detail: format!("stored cluster: {e}"),
    })?;
    let base_ms = start_ms - cluster.timecode_ms.unwrap_or(0);
    let end_ms = span_ms.map(|span| start_ms + span);
    let frames: Vec<&mkv::Frame> = cluster
        .frames
        .iter()
        .filter(|f| f.track == track.number)
        .collect();
    if frames.iter().any(|f| f.laced) {
        return Err(VideoError::InvalidMediaFrame {
            detail: "laced video blocks are not supported".into(),
        });
    }
    let mut decode: Vec<i64> = frames.iter().map(|f| f.time_ms + base_ms).collect();
    decode.sort_unstable();
    let mut samples = Vec::with_capacity(frames.len());
    for (i, frame) in frames.iter().enumerate() {
        let (Some(dts), Some(data)) = (
            decode.get(i).copied(),
            cluster_body.get(frame.data_start..frame.data_start + frame.data_len),
        ) else {
            return Err(VideoError::InvalidMediaFrame {
                detail: "frame outside its cluster".into(),
            });
        };
        let next = decode.get(i + 1).copied().or(end_ms);
        let duration = match next {
            Some(next) if next > dts => next - dts,
            _ => samples
                .last()
                .map(|s: &Sample| i64::from(s.duration_ms))
                .unwrap_or(i64::try_from(track.default_duration_ns / 1_000_000).unwrap_or(0))
                .max(1),
        };
        samples.push(Sample {
            decode_ms: dts,
            composition_offset_ms: i32::try_from(frame.time_ms + base_ms - dts).unwrap_or(0),
            duration_ms: u32::try_from(duration).unwrap_or(u32::MAX),
            keyframe: frame.keyframe,
            data,
        });
    }
    Ok(samples)
}

/// `moof` + `mdat` for the samples of each track (`tracks[0]` is track 1, the video;
/// `tracks[1]`, if given, track 2; decode times must not be negative). A track without
/// samples gets no `traf`.
pub fn media_segment(sequence: u32, tracks: &[&[Sample]]) -> Vec<u8> {
    let trun_flags = 0x0001 | 0x0100 | 0x0200 | 0x0400 | 0x0800;
    let mfhd = full_box(b"mfhd", 0, 0, &sequence.to_be_bytes());
    // The trafs without their trun's data offset, to measure the moof first.
    let traf_len = |samples: &[Sample]| -> usize {
        let tfhd_len = 12 + 4;
        let tfdt_len = 12 + 8;
        let trun_len = 12 + 4 + 4 + samples.len() * 16;
        8 + tfhd_len + tfdt_len + trun_len
    };
    let present: Vec<(u32, &[Sample])> = (1u32..)
        .zip(tracks.iter().copied())
        .filter(|(_, samples)| !samples.is_empty())
        .collect();
    let moof_len = 8 + mfhd.len() + present.iter().map(|(_, s)| traf_len(s)).sum::<usize>();
    let mut moof = mfhd;
    let mut data_offset = moof_len + 8;
    for (track_id, samples) in &present {
        let base = samples.first().map(|s| s.decode_ms.max(0)).unwrap_or(0) as u64;
        // default-base-is-moof
        let mut traf = full_box(b"tfhd", 0, 0x02_0000, &track_id.to_be_bytes());
        traf.extend(full_box(b"tfdt", 1, 0, &base.to_be_bytes()));
        let mut trun = Vec::with_capacity(8 + samples.len() * 16);
        trun.extend_from_slice(&(samples.len() as u32).to_be_bytes());
        trun.extend_from_slice(&(data_offset as u32).to_be_bytes());
        for sample in samples.iter() {
            trun.extend_from_slice(&sample.duration_ms.to_be_bytes());
            trun.extend_from_slice(&(sample.data.len() as u32).to_be_bytes());
            let flags: u32 = if sample.keyframe {
                0x0200_0000
            } else {
                0x0101_0000
            };
            trun.extend_from_slice(&flags.to_be_bytes());
            trun.extend_from_slice(&sample.composition_offset_ms.to_be_bytes());
            data_offset += sample.data.len();
        }
        traf.extend(full_box(b"trun", 1, trun_flags, &trun));
        moof.extend(boxed(b"traf", &traf));
    }
    let mut out = boxed(b"moof", &moof);
    debug_assert_eq!(out.len(), moof_len);
    let mdat_len: usize = present
        .iter()
        .flat_map(|(_, s)| s.iter())
        .map(|s| s.data.len())
        .sum();
    out.extend_from_slice(&((mdat_len + 8) as u32).to_be_bytes());
    out.extend_from_slice(b"mdat");
    for (_, samples) in &present {
        for sample in samples.iter() {
            out.extend_from_slice(sample.data);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_offsets_point_at_the_data() {
        let data = [1u8, 2, 3, 4, 5];
        let samples = [
            Sample {
                decode_ms: 1000,
                composition_offset_ms: 0,
                duration_ms: 40,
                keyframe: true,
                data: &data[..3],
            },
            Sample {
                decode_ms: 1040,
                composition_offset_ms: 0,
                duration_ms: 40,
                keyframe: false,
                data: &data[3..],
            },
        ];
        let segment = media_segment(7, &[&samples]);
        let moof_len = u32::from_be_bytes(segment[0..4].try_into().expect("len")) as usize;
        assert_eq!(&segment[4..8], b"moof");
        assert_eq!(&segment[moof_len + 4..moof_len + 8], b"mdat");
        assert_eq!(&segment[moof_len + 8..], &data);
        let track = Track {
            number: 1,
            track_type: 1,
            codec_id: CODEC_H264.into(),
            codec_private: vec![1, 0x42, 0, 0x1e, 0xff, 0xe1, 0],
            width: 640,
            height: 360,
            default_duration_ns: 0,
        };
        let init = init_segment(Tracks {
            video: &track,
            audio: None,
        });
        let ftyp_len = u32::from_be_bytes(init[0..4].try_into().expect("len")) as usize;
        assert_eq!(&init[ftyp_len + 4..ftyp_len + 8], b"moov");
        let moov_len =
            u32::from_be_bytes(init[ftyp_len..ftyp_len + 4].try_into().expect("len")) as usize;
        assert_eq!(ftyp_len + moov_len, init.len());
    }

    fn find_box<'a>(bytes: &'a [u8], path: &[&[u8; 4]]) -> Option<&'a [u8]> {
        let (first, rest) = path.split_first()?;
        let mut at = 0usize;
        while at + 8 <= bytes.len() {
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().ok()?) as usize;
            if &bytes[at + 4..at + 8] == *first {
                let body = bytes.get(at + 8..at + len)?;
                return if rest.is_empty() {
                    Some(body)
                } else {
                    find_box(body, rest)
                };
            }
            at += len.max(8);
        }
        None
    }

    #[test]
    fn progressive_head_tables_point_at_the_media() {
        let track = Track {
            number: 1,
            track_type: 1,
            codec_id: CODEC_H264.into(),
            codec_private: vec![1, 0x42, 0, 0x1e, 0xff, 0xe1, 0],
            width: 640,
            height: 360,
            default_duration_ns: 0,
        };
        let sample = |size, key| SampleInfo {
            duration_ms: 40,
            composition_offset_ms: 0,
            size_bytes: size,
            keyframe: key,
        };
        let samples = [sample(100, true), sample(10, false), sample(7, true)];
        let tracks = Tracks {
            video: &track,
            audio: None,
        };
        let part = ClipTrack {
            samples: samples.to_vec(),
            per_fragment: vec![2, 1],
        };
        let head = progressive_head(tracks, &[part]).expect("head");
        // The head ends with the mdat header, sized for the samples.
        let mdat = &head[head.len() - 8..];
        assert_eq!(&mdat[4..], b"mdat");
        assert_eq!(
            u32::from_be_bytes(mdat[..4].try_into().expect("len")),
            117 + 8
        );
        let stbl = [b"moov", b"trak", b"mdia", b"minf", b"stbl"];
        let stco = find_box(&head, &[stbl.as_slice(), &[b"stco"]].concat()).expect("stco");
        let offsets: Vec<u32> = stco[8..]
            .chunks(4)
            .map(|c| u32::from_be_bytes(c.try_into().expect("u32")))
            .collect();
        assert_eq!(offsets, [head.len() as u32, head.len() as u32 + 110]);
        let stss = find_box(&head, &[stbl.as_slice(), &[b"stss"]].concat()).expect("stss");
        assert_eq!(&stss[4..], &[0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 3]);
        let stts = find_box(&head, &[stbl.as_slice(), &[b"stts"]].concat()).expect("stts");
        assert_eq!(&stts[4..], &[0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 40]);
        assert!(find_box(&head, &[stbl.as_slice(), &[b"ctts"]].concat()).is_none());
        let stsc = find_box(&head, &[stbl.as_slice(), &[b"stsc"]].concat()).expect("stsc");
        assert_eq!(u32::from_be_bytes(stsc[4..8].try_into().expect("n")), 2);
        let mvhd = find_box(&head, &[b"moov", b"mvhd"]).expect("mvhd");
        assert_eq!(u32::from_be_bytes(mvhd[16..20].try_into().expect("d")), 120);
    }

    #[test]
    fn codecs_names_follow_rfc_6381() {
        let mut track = Track {
            codec_id: CODEC_H264.into(),
            codec_private: vec![1, 0x42, 0xC0, 0x1E, 0xFF, 0xE1, 0],
            ..Track::default()
        };
        assert_eq!(codecs_name(&track), "avc1.42c01e");
        // x265 Main profile, level 2.1 (63), progressive-source constraint flag.
        let mut hvcc = vec![1, 0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 63];
        hvcc.resize(HVCC_HEADER_BYTES, 0);
        track.codec_id = CODEC_H265.into();
        track.codec_private = hvcc;
        assert_eq!(codecs_name(&track), "hvc1.1.6.L63.90");
        assert!(
            video_track(&Header {
                timecode_scale_ns: 1_000_000,
                tracks: vec![track.clone()],
            })
            .is_ok()
        );
    }
}
