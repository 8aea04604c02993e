//! MPEG-2 transport stream (ISO/IEC 13818-1) media segments for HLS sessions with
//! `ContainerFormat=MPEG_TS`: one self-contained segment per stored fragment.
//!
//! Hand-written rather than a crate (none was worth its weight, and ffmpeg bindings are
//! out of the build): 188-byte packets; a PAT and a PMT at the start of every segment; the
//! H.264 track as PES packets on [`PID_VIDEO`] (stream type 0x1B) with PTS and DTS, its AVCC
//! frames rewritten to Annex B with an access unit delimiter first and the SPS and PPS of
//! the `avcC` before every keyframe; PCR on the video PID; an AAC track (when the stream has
//! one) as ADTS frames on [`PID_AUDIO`] (stream type 0x0F). Timestamps are the output
//! timeline's milliseconds in the 90 kHz clock, modulo 2^33 as the standard wraps them.
//!
//! Continuity counters: every segment starts each PID at 0 and pads the packets of its
//! last PES so that the PID ends on counter 15. Segments are made independently (a player
//! may fetch any of them), and this way any segment follows any other without a counter
//! discontinuity (demuxers flag the next packet as corrupt otherwise). PAT and PMT are one
//! packet each; sections are not affected by counters.
//!
//! Not supported: H.265 in TS (HLS serves it as fragmented MP4 only), AAC object types
//! above 4 or an explicit sampling frequency (ADTS cannot carry them).

use crate::error::VideoError;
use crate::mp4::Sample;

pub const PACKET_BYTES: usize = 188;
const PAYLOAD_BYTES: usize = PACKET_BYTES - 4;
const SYNC_BYTE: u8 = 0x47;
const PID_PAT: u16 = 0;
const PID_PMT: u16 = 0x1000;
pub const PID_VIDEO: u16 = 0x100;
pub const PID_AUDIO: u16 = 0x101;
const STREAM_TYPE_H264: u8 = 0x1B;
const STREAM_TYPE_AAC_ADTS: u8 = 0x0F;
const STREAM_ID_VIDEO: u8 = 0xE0;
const STREAM_ID_AUDIO: u8 = 0xC0;
/// PTS, DTS and the PCR base are 33-bit counts of a 90 kHz clock.
const CLOCK_WRAP: i64 = 1 << 33;
const ADTS_HEADER_BYTES: usize = 7;
/// ADTS frame length is a 13-bit field.
const ADTS_FRAME_BYTES_MAX: usize = (1 << 13) - 1;
const START_CODE: [u8; 4] = [0, 0, 0, 1];
const ACCESS_UNIT_DELIMITER: [u8; 6] = [0, 0, 0, 1, 0x09, 0xF0];
const NAL_TYPE_AUD: u8 = 9;

/// What the `avcC` (AVCDecoderConfigurationRecord) says, ready for Annex B.
#[derive(Debug, Clone)]
pub struct AvcConfig {
    nal_length_bytes: usize,
    /// SPS and PPS NAL units, each after a start code.
    parameter_sets: Vec<u8>,
}

/// Parses an `avcC` record (ISO/IEC 14496-15 5.3.3.1).
pub fn avc_config(avcc: &[u8]) -> Result<AvcConfig, VideoError> {
    let invalid = || VideoError::InvalidCodecPrivateData;
    let length_byte = avcc.get(4).ok_or_else(invalid)?;
    let nal_length_bytes = usize::from(length_byte & 0x03) + 1;
    if nal_length_bytes == 3 {
        return Err(invalid());
    }
    let mut parameter_sets = Vec::new();
    let mut pos = 5usize;
    for count_mask in [0x1Fu8, 0xFF] {
        let count = avcc.get(pos).ok_or_else(invalid)? & count_mask;
        pos += 1;
        for _ in 0..count {
            let len_bytes = avcc.get(pos..pos + 2).ok_or_else(invalid)?;
            let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
            let nal = avcc.get(pos + 2..pos + 2 + len).ok_or_else(invalid)?;
            parameter_sets.extend_from_slice(&START_CODE);
            parameter_sets.extend_from_slice(nal);
            pos += 2 + len;
        }
    }
    Ok(AvcConfig {
        nal_length_bytes,
        parameter_sets,
    })
}

/// What an AAC AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1) says, for ADTS headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacConfig {
    pub object_type: u8,
    pub frequency_index: u8,
    pub channels: u8,
}

pub fn aac_config(asc: &[u8]) -> Result<AacConfig, VideoError> {
    let (Some(&a), Some(&b)) = (asc.first(), asc.get(1)) else {
        return Err(VideoError::InvalidCodecPrivateData);
    };
    let config = AacConfig {
        object_type: a >> 3,
        frequency_index: ((a & 0x07) << 1) | (b >> 7),
        channels: (b >> 3) & 0x0F,
    };
    // ADTS's 2-bit profile holds object types 1 to 4; index 15 means an explicit frequency.
    if !(1..=4).contains(&config.object_type) || config.frequency_index >= 13 {
        return Err(VideoError::InvalidCodecPrivateData);
    }
    Ok(config)
}

impl AacConfig {
    /// The sampling rate in Hz.
    pub fn sample_rate(&self) -> u32 {
        const RATES: [u32; 13] = [
            96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
        ];
        RATES
            .get(usize::from(self.frequency_index))
            .copied()
            .unwrap_or(48000)
    }

    fn adts_header(&self, frame_bytes: usize) -> [u8; ADTS_HEADER_BYTES] {
        let len = frame_bytes + ADTS_HEADER_BYTES;
        let profile = self.object_type - 1;
        [
            0xFF,
            0xF1, // MPEG-4, layer 0, no CRC
            (profile << 6) | (self.frequency_index << 2) | ((self.channels >> 2) & 0x01),
            ((self.channels & 0x03) << 6) | ((len >> 11) & 0x03) as u8,
            ((len >> 3) & 0xFF) as u8,
            (((len & 0x07) << 5) as u8) | 0x1F, // buffer fullness 0x7FF: variable rate
            0xFC,
        ]
    }
}

/// The audio track of a segment.
pub struct TsAudio<'a, 'b> {
    pub config: AacConfig,
    pub frames: &'b [Sample<'a>],
}

fn clock_90k(ms: i64) -> u64 {
    (ms.saturating_mul(90)).rem_euclid(CLOCK_WRAP) as u64
}

/// MPEG-2 CRC-32 (polynomial 0x04C11DB7, MSB first, no reflection, no final XOR).
fn crc32_mpeg2(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// A PSI section in one packet (pointer field 0, the rest stuffed with 0xFF).
fn psi_packet(out: &mut Vec<u8>, pid: u16, section: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[
        SYNC_BYTE,
        0x40 | ((pid >> 8) as u8 & 0x1F),
        (pid & 0xFF) as u8,
        0x10,
        0x00,
    ]);
    out.extend_from_slice(section);
    out.extend_from_slice(&crc32_mpeg2(section).to_be_bytes());
    out.resize(start + PACKET_BYTES, 0xFF);
}

fn pat() -> Vec<u8> {
    let mut s = vec![0x00, 0xB0, 13, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01];
    s.extend_from_slice(&[0xE0 | (PID_PMT >> 8) as u8, (PID_PMT & 0xFF) as u8]);
    s
}

fn pmt(audio: bool) -> Vec<u8> {
    let mut streams = vec![(STREAM_TYPE_H264, PID_VIDEO)];
    if audio {
        streams.push((STREAM_TYPE_AAC_ADTS, PID_AUDIO));
    }
    let section_len = 9 + 5 * streams.len() + 4;
    let mut s = vec![
        0x02,
        0xB0 | ((section_len >> 8) as u8 & 0x0F),
        (section_len & 0xFF) as u8,
        0x00,
        0x01,
        0xC1,
        0x00,
        0x00,
        0xE0 | (PID_VIDEO >> 8) as u8,
        (PID_VIDEO & 0xFF) as u8,
        0xF0,
        0x00,
    ];
    for (stream_type, pid) in streams {
        s.extend_from_slice(&[
            stream_type,
            0xE0 | (pid >> 8) as u8,
            (pid & 0xFF) as u8,
            0xF0,
            0x00,
        ]);
    }
    s
}

fn timestamp_bytes(prefix: u8, t: u64) -> [u8; 5] {
    [
        (prefix << 4) | (((t >> 29) as u8) & 0x0E) | 1,
        (t >> 22) as u8,
        (((t >> 14) as u8) & 0xFE) | 1,
        (t >> 7) as u8,
        (((t << 1) as u8) & 0xFE) | 1,
    ]
}

/// One PES to packetize.
struct Pes {
    pid: u16,
    dts_90k: u64,
    bytes: Vec<u8>,
    /// The first packet carries a PCR (and the random access flag when a keyframe).
    pcr: bool,
    random_access: bool,
}

fn pes_bytes(stream_id: u8, pts: u64, dts: Option<u64>, payload: &[u8]) -> Vec<u8> {
    let header_data_len: usize = if dts.is_some() { 10 } else { 5 };
    let after_length = 3 + header_data_len + payload.len();
    // Video PES may be longer than the 16-bit field: 0 means "unbounded" (video only).
    let length = u16::try_from(after_length).unwrap_or(0);
    let mut out = Vec::with_capacity(6 + after_length);
    out.extend_from_slice(&[0, 0, 1, stream_id]);
    out.extend_from_slice(&length.to_be_bytes());
    out.push(0x80);
    match dts {
        Some(dts) => {
            out.extend_from_slice(&[0xC0, 10]);
            out.extend_from_slice(&timestamp_bytes(0x3, pts));
            out.extend_from_slice(&timestamp_bytes(0x1, dts));
        }
        None => {
            out.extend_from_slice(&[0x80, 5]);
            out.extend_from_slice(&timestamp_bytes(0x2, pts));
        }
    }
    out.extend_from_slice(payload);
    out
}

/// Writes one packet: header, an adaptation field (when flags are given or the payload
/// does not fill the packet), the payload.
fn ts_packet(
    out: &mut Vec<u8>,
    pid: u16,
    start: bool,
    cc: u8,
    fields: Option<(bool, Option<u64>)>,
    payload: &[u8],
) {
    let packet_start = out.len();
    let needs_adaptation = fields.is_some() || payload.len() < PAYLOAD_BYTES;
    out.extend_from_slice(&[
        SYNC_BYTE,
        (u8::from(start) << 6) | ((pid >> 8) as u8 & 0x1F),
        (pid & 0xFF) as u8,
        (if needs_adaptation { 0x30 } else { 0x10 }) | (cc & 0x0F),
    ]);
    if needs_adaptation {
        let adaptation_len = PAYLOAD_BYTES - payload.len(); // with its length byte
        out.push((adaptation_len - 1) as u8);
        if adaptation_len >= 2 {
            let (random_access, pcr) = fields.unwrap_or((false, None));
            out.push((u8::from(random_access) << 6) | (u8::from(pcr.is_some()) << 4));
            if let Some(base) = pcr {
                out.extend_from_slice(&[
                    (base >> 25) as u8,
                    (base >> 17) as u8,
                    (base >> 9) as u8,
                    (base >> 1) as u8,
                    (((base & 1) as u8) << 7) | 0x7E,
                    0x00,
                ]);
            }
            out.resize(packet_start + 4 + adaptation_len, 0xFF);
        }
    }
    out.extend_from_slice(payload);
    debug_assert_eq!(out.len() - packet_start, PACKET_BYTES);
}

/// Packets of one PES; `extra` more packets than it needs (bytes split off the ends of
/// chunks, so the order stays) to bring the PID's continuity counter to a chosen value.
fn packetize(out: &mut Vec<u8>, pes: &Pes, cc: &mut u8, extra: usize) {
    let fields = (pes.pcr || pes.random_access)
        .then_some((pes.random_access, pes.pcr.then_some(pes.dts_90k)));
    let len = pes.bytes.len();
    let mut chunks: Vec<(usize, usize)> = Vec::with_capacity(packets_of(pes) + extra);
    let mut at = 0usize;
    while at < len || chunks.is_empty() {
        let capacity = if chunks.is_empty() {
            PAYLOAD_BYTES - first_overhead(pes)
        } else {
            PAYLOAD_BYTES
        };
        let end = (at + capacity).min(len);
        chunks.push((at, end));
        at = end;
    }
    for _ in 0..extra {
        let Some(i) = chunks.iter().rposition(|(a, b)| b - a >= 2) else {
            break;
        };
        let Some(&(a, b)) = chunks.get(i) else { break };
        if let Some(chunk) = chunks.get_mut(i) {
            *chunk = (a, b - 1);
        }
        chunks.insert(i + 1, (b - 1, b));
    }
    for (k, (a, b)) in chunks.into_iter().enumerate() {
        let payload = pes.bytes.get(a..b).unwrap_or_default();
        ts_packet(
            out,
            pes.pid,
            k == 0,
            *cc,
            fields.filter(|_| k == 0),
            payload,
        );
        *cc = (*cc + 1) & 0x0F;
    }
}

/// Adaptation field bytes of a PES's first packet: length byte + flags (+ PCR).
fn first_overhead(pes: &Pes) -> usize {
    if pes.pcr {
        8
    } else if pes.random_access {
        2
    } else {
        0
    }
}

fn packets_of(pes: &Pes) -> usize {
    let len = pes.bytes.len();
    let first = PAYLOAD_BYTES - first_overhead(pes);
    if len <= first {
        1
    } else {
        1 + (len - first).div_ceil(PAYLOAD_BYTES)
    }
}

/// One video sample as Annex B: AUD, SPS/PPS before a keyframe, the NAL units.
fn annex_b(config: &AvcConfig, sample: &Sample) -> Result<Vec<u8>, VideoError> {
    let mut out = Vec::with_capacity(sample.data.len() + config.parameter_sets.len() + 32);
    out.extend_from_slice(&ACCESS_UNIT_DELIMITER);
    if sample.keyframe {
        out.extend_from_slice(&config.parameter_sets);
    }
    let mut rest = sample.data;
    while !rest.is_empty() {
        let (len_bytes, after) =
            rest.split_at_checked(config.nal_length_bytes)
                .ok_or_else(|| VideoError::InvalidMediaFrame {
                    detail: "truncated NAL unit length".into(),
                })?;
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        let (nal, after) =
            after
                .split_at_checked(len)
                .ok_or_else(|| VideoError::InvalidMediaFrame {
                    detail: "a NAL unit runs past its frame".into(),
                })?;
        if nal.first().is_some_and(|b| b & 0x1F != NAL_TYPE_AUD) {
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(nal);
        }
        rest = after;
    }
    Ok(out)
}

/// A transport stream segment of the video samples and, if given, the audio frames (both
/// on the output timeline in milliseconds).
pub fn segment(
    video_config: &AvcConfig,
    video: &[Sample],
    audio: Option<TsAudio>,
) -> Result<Vec<u8>, VideoError> {
    let mut pes_list =
        Vec::with_capacity(video.len() + audio.as_ref().map_or(0, |a| a.frames.len()));
    for sample in video {
        let dts = clock_90k(sample.decode_ms);
        let pts = clock_90k(sample.decode_ms + i64::from(sample.composition_offset_ms));
        let payload = annex_b(video_config, sample)?;
        pes_list.push(Pes {
            pid: PID_VIDEO,
            dts_90k: dts,
            bytes: pes_bytes(STREAM_ID_VIDEO, pts, Some(dts), &payload),
            pcr: true,
            random_access: sample.keyframe,
        });
    }
    if let Some(audio) = &audio {
        for frame in audio.frames {
            if frame.data.len() + ADTS_HEADER_BYTES > ADTS_FRAME_BYTES_MAX {
                return Err(VideoError::InvalidMediaFrame {
                    detail: "an AAC frame is too large for ADTS".into(),
                });
            }
            let mut payload = Vec::with_capacity(frame.data.len() + ADTS_HEADER_BYTES);
            payload.extend_from_slice(&audio.config.adts_header(frame.data.len()));
            payload.extend_from_slice(frame.data);
            let pts = clock_90k(frame.decode_ms + i64::from(frame.composition_offset_ms));
            pes_list.push(Pes {
                pid: PID_AUDIO,
                dts_90k: pts,
                bytes: pes_bytes(STREAM_ID_AUDIO, pts, None, &payload),
                pcr: false,
                random_access: false,
            });
        }
    }
    // Interleave by decode time (stable: video first at equal times). Compare on the
    // millisecond timeline, not the wrapped clock.
    let mut order: Vec<(i64, usize)> = video
        .iter()
        .map(|s| s.decode_ms)
        .chain(
            audio
                .iter()
                .flat_map(|a| a.frames.iter().map(|f| f.decode_ms)),
        )
        .enumerate()
        .map(|(i, t)| (t, i))
        .collect();
    order.sort();

    // Counter padding: the last PES of each PID gets the packets that bring it to 15.
    let mut totals = [0usize; 2];
    let mut last = [None::<usize>; 2];
    for (i, pes) in pes_list.iter().enumerate() {
        let slot = usize::from(pes.pid == PID_AUDIO);
        totals[slot] += packets_of(pes);
        last[slot] = Some(i);
    }
    let extra = totals.map(|n| (16 - n % 16) % 16);

    let bytes_estimate: usize = pes_list
        .iter()
        .map(|p| (p.bytes.len() / PAYLOAD_BYTES + 2) * PACKET_BYTES)
        .sum();
    let mut out = Vec::with_capacity(bytes_estimate + 2 * PACKET_BYTES + 16 * PACKET_BYTES);
    psi_packet(&mut out, PID_PAT, &pat());
    psi_packet(&mut out, PID_PMT, &pmt(audio.is_some()));
    let mut counters = [0u8; 2];
    for (_, i) in order {
        let Some(pes) = pes_list.get(i) else { continue };
        let slot = usize::from(pes.pid == PID_AUDIO);
        let pad = if last[slot] == Some(i) {
            extra[slot]
        } else {
            0
        };
        packetize(&mut out, pes, &mut counters[slot], pad);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AVCC: [u8; 16] = [
        1, 0x42, 0xC0, 0x1E, 0xFF, 0xE1, 0x00, 0x03, 0x67, 0x42, 0xC0, 0x01, 0x00, 0x02, 0x68, 0xCE,
    ];

    fn packets(segment: &[u8]) -> Vec<&[u8]> {
        assert_eq!(segment.len() % PACKET_BYTES, 0);
        segment.chunks(PACKET_BYTES).collect()
    }

    fn pid(packet: &[u8]) -> u16 {
        (u16::from(packet[1] & 0x1F) << 8) | u16::from(packet[2])
    }

    #[test]
    fn crc_matches_the_mpeg2_check_value() {
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
    }

    #[test]
    fn avcc_becomes_annex_b_with_parameter_sets_before_keyframes() {
        let config = avc_config(&AVCC).expect("avcC");
        let frame = [0, 0, 0, 2, 0x65, 0xAA, 0, 0, 0, 1, 0x06];
        let sample = Sample {
            decode_ms: 0,
            composition_offset_ms: 0,
            duration_ms: 40,
            keyframe: true,
            data: &frame,
        };
        let out = annex_b(&config, &sample).expect("annex b");
        assert_eq!(
            out,
            [
                0, 0, 0, 1, 0x09, 0xF0, 0, 0, 0, 1, 0x67, 0x42, 0xC0, 0, 0, 0, 1, 0x68, 0xCE, 0, 0,
                0, 1, 0x65, 0xAA, 0, 0, 0, 1, 0x06
            ]
        );
        let broken = Sample {
            data: &[0, 0, 0, 9, 1],
            ..sample
        };
        assert!(matches!(
            annex_b(&config, &broken),
            Err(VideoError::InvalidMediaFrame { .. })
        ));
        assert!(matches!(
            avc_config(&[1, 0x42]),
            Err(VideoError::InvalidCodecPrivateData)
        ));
    }

    #[test]
    fn every_pid_ends_on_counter_15_and_packets_are_well_formed() {
        let config = avc_config(&AVCC).expect("avcC");
        let big = vec![0u8; 1000];
        let mut frame = (996u32).to_be_bytes().to_vec();
        frame.push(0x65);
        frame.extend_from_slice(&big[..995]);
        let video: Vec<Sample> = (0..7)
            .map(|i| Sample {
                decode_ms: 1_000 + i * 40,
                composition_offset_ms: 0,
                duration_ms: 40,
                keyframe: i == 0,
                data: &frame,
            })
            .collect();
        let aac = [0x21u8; 300];
        let audio: Vec<Sample> = (0..13)
            .map(|i| Sample {
                decode_ms: 1_000 + i * 21,
                composition_offset_ms: 0,
                duration_ms: 21,
                keyframe: true,
                data: &aac,
            })
            .collect();
        let config_aac = aac_config(&[0x11, 0x90]).expect("asc");
        assert_eq!(config_aac.sample_rate(), 48000);
        assert_eq!(config_aac.channels, 2);
        let out = segment(
            &config,
            &video,
            Some(TsAudio {
                config: config_aac,
                frames: &audio,
            }),
        )
        .expect("segment");
        let packets = packets(&out);
        assert!(packets.iter().all(|p| p[0] == SYNC_BYTE));
        assert_eq!(pid(packets[0]), PID_PAT);
        assert_eq!(pid(packets[1]), PID_PMT);
        for wanted in [PID_VIDEO, PID_AUDIO] {
            let counters: Vec<u8> = packets
                .iter()
                .filter(|p| pid(p) == wanted)
                .map(|p| p[3] & 0x0F)
                .collect();
            assert_eq!(counters.len() % 16, 0, "pid {wanted:#x}");
            for (i, cc) in counters.iter().enumerate() {
                assert_eq!(usize::from(*cc), i % 16);
            }
        }
        // The first video packet starts a PES, with the random access flag and a PCR.
        let first_video = packets.iter().find(|p| pid(p) == PID_VIDEO).expect("video");
        assert_eq!(first_video[1] & 0x40, 0x40);
        assert_eq!(first_video[3] & 0x30, 0x30);
        assert_eq!(first_video[5] & 0x50, 0x50);
        let pes = &first_video[4 + 1 + usize::from(first_video[4])..];
        assert_eq!(&pes[..4], &[0, 0, 1, STREAM_ID_VIDEO]);
        // ADTS sync word at the start of each audio payload.
        let first_audio = packets.iter().find(|p| pid(p) == PID_AUDIO).expect("audio");
        let at = 4 + if first_audio[3] & 0x20 != 0 {
            1 + usize::from(first_audio[4])
        } else {
            0
        };
        assert_eq!(&first_audio[at + 14..at + 16], &[0xFF, 0xF1]);
        assert_eq!(clock_90k(-1), (CLOCK_WRAP - 90) as u64);
    }
}
