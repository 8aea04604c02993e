//! A fragmented MP4 (ISO BMFF) writer for one H.264 track: the init segment (`ftyp` +
//! `moov` with an `avc1` sample entry carrying the MKV CodecPrivate as `avcC`) and one media
//! segment (`moof` + `mdat`) per fragment. HLS, DASH and GetClip are built from these.
//!
//! Hand-written rather than a crate: about 250 lines of boxes with exact control over the
//! timeline, no dependency. MKV H.264 frames are AVCC (length-prefixed NAL units), which is
//! what MP4 stores, so frames are copied unchanged. The timescale is 1000 (milliseconds,
//! MKV's usual resolution). Decode times are the sorted presentation times, composition
//! offsets the difference (B-frames work when frames are stored in decode order, as MKV
//! muxers do).
//!
//! Not supported: audio tracks (a stream's audio is left out of HLS, DASH and clips), H.265,
//! laced blocks.

use crate::error::VideoError;
use crate::mkv::{self, Header, Track};

pub const TIMESCALE: u32 = 1000;
const CODEC_H264: &str = "V_MPEG4/ISO/AVC";

/// The video track of a stream, checked for what MP4 output needs.
pub fn video_track(header: &Header) -> Result<&Track, VideoError> {
    let track = header
        .tracks
        .iter()
        .find(|t| t.track_type == 1 || t.codec_id.starts_with("V_"))
        .ok_or_else(|| VideoError::UnsupportedMediaType {
            detail: "the stream has no video track".into(),
        })?;
    if track.codec_id != CODEC_H264 {
        return Err(VideoError::UnsupportedMediaType {
            detail: format!("codec {} (only {CODEC_H264} is served)", track.codec_id),
        });
    }
    if track.codec_private.is_empty() {
        return Err(VideoError::MissingCodecPrivateData);
    }
    if track.codec_private.first() != Some(&1) || track.codec_private.len() < 7 {
        return Err(VideoError::InvalidCodecPrivateData);
    }
    Ok(track)
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

/// `ftyp` + `moov` for the track.
pub fn init_segment(track: &Track) -> Vec<u8> {
    let mut ftyp = Vec::new();
    ftyp.extend_from_slice(b"iso6");
    ftyp.extend_from_slice(&0u32.to_be_bytes());
    for brand in [b"iso6", b"iso5", b"avc1", b"mp41"] {
        ftyp.extend_from_slice(brand);
    }
    let mut out = boxed(b"ftyp", &ftyp);

    let mut mvhd = Vec::new();
    mvhd.extend_from_slice(&[0u8; 8]); // creation, modification
    mvhd.extend_from_slice(&TIMESCALE.to_be_bytes());
    mvhd.extend_from_slice(&0u32.to_be_bytes()); // duration: fragmented
    mvhd.extend_from_slice(&0x0001_0000u32.to_be_bytes()); // rate
    mvhd.extend_from_slice(&0x0100u16.to_be_bytes()); // volume
    mvhd.extend_from_slice(&[0u8; 10]);
    mvhd.extend(matrix());
    mvhd.extend_from_slice(&[0u8; 24]);
    mvhd.extend_from_slice(&2u32.to_be_bytes()); // next track id

    let mut tkhd = Vec::new();
    tkhd.extend_from_slice(&[0u8; 8]);
    tkhd.extend_from_slice(&1u32.to_be_bytes()); // track id
    tkhd.extend_from_slice(&[0u8; 4]);
    tkhd.extend_from_slice(&0u32.to_be_bytes()); // duration
    tkhd.extend_from_slice(&[0u8; 8]);
    tkhd.extend_from_slice(&[0u8; 8]); // layer, alternate group, volume, reserved
    tkhd.extend(matrix());
    tkhd.extend_from_slice(&(track.width << 16).to_be_bytes());
    tkhd.extend_from_slice(&(track.height << 16).to_be_bytes());

    let mut mdhd = Vec::new();
    mdhd.extend_from_slice(&[0u8; 8]);
    mdhd.extend_from_slice(&TIMESCALE.to_be_bytes());
    mdhd.extend_from_slice(&0u32.to_be_bytes());
    mdhd.extend_from_slice(&0x55C4u16.to_be_bytes()); // "und"
    mdhd.extend_from_slice(&0u16.to_be_bytes());

    let mut hdlr = Vec::new();
    hdlr.extend_from_slice(&[0u8; 4]);
    hdlr.extend_from_slice(b"vide");
    hdlr.extend_from_slice(&[0u8; 12]);
    hdlr.extend_from_slice(b"VideoHandler\0");

    let vmhd = full_box(b"vmhd", 0, 1, &[0u8; 8]);
    let url = full_box(b"url ", 0, 1, &[]);
    let mut dref = 1u32.to_be_bytes().to_vec();
    dref.extend(url);
    let dinf = boxed(b"dinf", &full_box(b"dref", 0, 0, &dref));

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
    avc1.extend(boxed(b"avcC", &track.codec_private));
    let mut stsd = 1u32.to_be_bytes().to_vec();
    stsd.extend(boxed(b"avc1", &avc1));

    let mut stbl = full_box(b"stsd", 0, 0, &stsd);
    stbl.extend(full_box(b"stts", 0, 0, &0u32.to_be_bytes()));
    stbl.extend(full_box(b"stsc", 0, 0, &0u32.to_be_bytes()));
    stbl.extend(full_box(b"stsz", 0, 0, &[0u8; 8]));
    stbl.extend(full_box(b"stco", 0, 0, &0u32.to_be_bytes()));

    let mut minf = vmhd;
    minf.extend(dinf);
    minf.extend(boxed(b"stbl", &stbl));

    let mut mdia = full_box(b"mdhd", 0, 0, &mdhd);
    mdia.extend(full_box(b"hdlr", 0, 0, &hdlr));
    mdia.extend(boxed(b"minf", &minf));

    let mut trak = full_box(b"tkhd", 0, 3, &tkhd);
    trak.extend(boxed(b"mdia", &mdia));

    let mut trex = Vec::new();
    trex.extend_from_slice(&1u32.to_be_bytes());
    trex.extend_from_slice(&1u32.to_be_bytes());
    trex.extend_from_slice(&[0u8; 12]);

    let mut moov = full_box(b"mvhd", 0, 0, &mvhd);
    moov.extend(boxed(b"trak", &trak));
    moov.extend(boxed(b"mvex", &full_box(b"trex", 0, 0, &trex)));
    out.extend(boxed(b"moov", &moov));
    out
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

/// `moof` + `mdat` for the samples (decode times must not be negative).
pub fn media_segment(sequence: u32, samples: &[Sample]) -> Vec<u8> {
    let base = samples.first().map(|s| s.decode_ms.max(0)).unwrap_or(0) as u64;
    let mfhd = full_box(b"mfhd", 0, 0, &sequence.to_be_bytes());
    // default-base-is-moof
    let tfhd = full_box(b"tfhd", 0, 0x02_0000, &1u32.to_be_bytes());
    let tfdt = full_box(b"tfdt", 1, 0, &base.to_be_bytes());
    let trun_flags = 0x0001 | 0x0100 | 0x0200 | 0x0400 | 0x0800;
    let trun_len = 8 + 4 + 4 + 4 + samples.len() * 16;
    let traf_len = 8 + tfhd.len() + tfdt.len() + trun_len;
    let moof_len = 8 + mfhd.len() + traf_len;
    let data_offset = (moof_len + 8) as u32;
    let mut trun = Vec::with_capacity(trun_len);
    trun.extend_from_slice(&(samples.len() as u32).to_be_bytes());
    trun.extend_from_slice(&data_offset.to_be_bytes());
    for sample in samples {
        trun.extend_from_slice(&sample.duration_ms.to_be_bytes());
        trun.extend_from_slice(&(sample.data.len() as u32).to_be_bytes());
        let flags: u32 = if sample.keyframe {
            0x0200_0000
        } else {
            0x0101_0000
        };
        trun.extend_from_slice(&flags.to_be_bytes());
        trun.extend_from_slice(&sample.composition_offset_ms.to_be_bytes());
    }
    let mut traf = tfhd;
    traf.extend(tfdt);
    traf.extend(full_box(b"trun", 1, trun_flags, &trun));
    let mut moof = mfhd;
    moof.extend(boxed(b"traf", &traf));
    let mut out = boxed(b"moof", &moof);
    let mdat_len: usize = samples.iter().map(|s| s.data.len()).sum();
    out.extend_from_slice(&((mdat_len + 8) as u32).to_be_bytes());
    out.extend_from_slice(b"mdat");
    for sample in samples {
        out.extend_from_slice(sample.data);
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
        let segment = media_segment(7, &samples);
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
        let init = init_segment(&track);
        let ftyp_len = u32::from_be_bytes(init[0..4].try_into().expect("len")) as usize;
        assert_eq!(&init[ftyp_len + 4..ftyp_len + 8], b"moov");
        let moov_len =
            u32::from_be_bytes(init[ftyp_len..ftyp_len + 4].try_into().expect("len")) as usize;
        assert_eq!(ftyp_len + moov_len, init.len());
    }
}
