//! Byte layouts of everything the log writes, with their encoders and decoders.
//!
//! All integers are little-endian. Every checksum is CRC32C (Castagnoli), and every
//! checksum also covers its record's length field, so a zero-filled tail (which a crash can
//! leave behind a grown file) never passes as a valid empty record.
//!
//! ```text
//! WAL frame (wal/<first WAL position, 20 digits>.wal; one frame per `append` call)
//!   [len u32][crc32c u32][payload: len bytes]          crc over len bytes ++ payload
//!   payload = [kind u8 = 2][reserved 3 bytes = 0][n_records u32][group_position u64]
//!             n_records x [log_id u64][offset u64][timestamp_ms i64][size u32][bytes]
//!   group_position = the WAL position where the group commit holding this frame starts
//!   (equal for every frame written by one `write` + `fdatasync`). Recovery uses it to tell
//!   a torn tail (invalid frames followed at most by frames of the same, unsynced group)
//!   from damage (an invalid frame followed by a frame of a later group, which was only
//!   written after this one was fsynced).
//!
//! Segment record (logs/<log id, 20 digits>/<base offset, 20 digits>.seg)
//!   [len u32][crc32c u32][offset u64][timestamp_ms i64][payload: len bytes]
//!   crc over len bytes ++ offset ++ timestamp_ms ++ payload
//!
//! Index entry (<base offset>.idx beside the segment; fixed width, 32 bytes)
//!   [offset u64][position u64][timestamp_ms i64][kind u32][crc32c u32]
//!   crc over the first 28 bytes; kind 0 = "the record `offset` starts at byte `position`
//!   and has `timestamp_ms`" (one at the first record and then one whenever
//!   `INDEX_INTERVAL_BYTES` of data have passed), kind 1 = seal, written once when the
//!   segment rolls: `offset` = end offset, `position` = segment size, `timestamp_ms` =
//!   newest record's timestamp.
//!
//! Checkpoint (checkpoint; replaced by write to checkpoint.tmp, fsync, rename, fsync dir)
//!   [magic "MRLCKPT1"][wal_position u64][n_logs u64]
//!   n_logs x [log_id u64][end_offset u64][active_base_offset u64]
//!            [active_size_bytes u64][active_index_entries_n u64][last_timestamp_ms i64]
//!   [crc32c u32 over everything before it]
//!   last_timestamp_ms = i64::MIN when the log never had a record.
//! ```
//!
//! This module knows nothing about files, locks or recovery policy: it turns values into
//! bytes and bytes into values, and reports malformed bytes as `Err(reason)`.

/// File name extension of WAL segments.
pub(crate) const WAL_EXTENSION: &str = "wal";
/// File name extension of log segments.
pub(crate) const SEGMENT_EXTENSION: &str = "seg";
/// File name extension of segment index sidecars.
pub(crate) const INDEX_EXTENSION: &str = "idx";

pub(crate) const WAL_FRAME_HEADER_BYTES: usize = 8;
pub(crate) const WAL_PAYLOAD_PREFIX_BYTES: usize = 16;
pub(crate) const WAL_RECORD_HEADER_BYTES: usize = 28;
/// Kind 1 was the layout before `group_position`; it is no longer written nor read.
pub(crate) const WAL_FRAME_KIND_APPEND: u8 = 2;

pub(crate) const SEGMENT_RECORD_HEADER_BYTES: usize = 24;
pub(crate) const INDEX_ENTRY_BYTES: usize = 32;

const CHECKPOINT_MAGIC: &[u8; 8] = b"MRLCKPT1";
const CHECKPOINT_LOG_BYTES: usize = 48;
const NO_TIMESTAMP: i64 = i64::MIN;

/// `name` is `<20 decimal digits>.<extension>`: returns the number.
pub(crate) fn parse_numbered_name(name: &str, extension: &str) -> Option<u64> {
    let (digits, ext) = name.split_once('.')?;
    if ext != extension || digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn numbered_name(number: u64, extension: &str) -> String {
    format!("{number:020}.{extension}")
}

/// A tiny checked reader over a byte slice: every read fails cleanly at the end instead of
/// panicking.
struct ByteReader<'a> {
    bytes: &'a [u8],
}

impl<'a> ByteReader<'a> {
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.bytes.split_first_chunk::<N>()?;
        self.bytes = rest;
        Some(*head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_le_bytes)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }
}

// ---------------------------------------------------------------------------------------
// WAL frames

/// One record inside a WAL frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WalRecord<'a> {
    pub log_id: u64,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub payload: &'a [u8],
}

/// The number of bytes a frame holding records of these payload sizes takes.
pub(crate) fn wal_frame_bytes(n_records: usize, payload_bytes: usize) -> usize {
    WAL_FRAME_HEADER_BYTES
        + WAL_PAYLOAD_PREFIX_BYTES
        + n_records * WAL_RECORD_HEADER_BYTES
        + payload_bytes
}

/// Appends one frame holding `records` to `buf`; `group_position` is the WAL position of the
/// group commit the frame belongs to.
pub(crate) fn encode_wal_frame<'a>(
    buf: &mut Vec<u8>,
    n_records: u32,
    group_position: u64,
    records: impl Iterator<Item = WalRecord<'a>>,
) {
    let frame_start = buf.len();
    buf.extend_from_slice(&[0; WAL_FRAME_HEADER_BYTES]);
    buf.push(WAL_FRAME_KIND_APPEND);
    buf.extend_from_slice(&[0; 3]);
    buf.extend_from_slice(&n_records.to_le_bytes());
    buf.extend_from_slice(&group_position.to_le_bytes());
    for record in records {
        buf.extend_from_slice(&record.log_id.to_le_bytes());
        buf.extend_from_slice(&record.offset.to_le_bytes());
        buf.extend_from_slice(&record.timestamp_ms.to_le_bytes());
        // Payload sizes are capped by `record_bytes_max` (<= u32::MAX, checked in config).
        let size = u32::try_from(record.payload.len()).unwrap_or(u32::MAX);
        buf.extend_from_slice(&size.to_le_bytes());
        buf.extend_from_slice(record.payload);
    }
    let payload_len = buf.len() - frame_start - WAL_FRAME_HEADER_BYTES;
    let len_bytes = u32::try_from(payload_len).unwrap_or(u32::MAX).to_le_bytes();
    let payload_start = frame_start + WAL_FRAME_HEADER_BYTES;
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&len_bytes),
        buf.get(payload_start..).unwrap_or_default(),
    );
    if let Some(header) = buf.get_mut(frame_start..payload_start) {
        let mut header_bytes = [0; WAL_FRAME_HEADER_BYTES];
        let (len_part, crc_part) = header_bytes.split_at_mut(4);
        len_part.copy_from_slice(&len_bytes);
        crc_part.copy_from_slice(&crc.to_le_bytes());
        header.copy_from_slice(&header_bytes);
    }
}

/// Splits a frame header into (payload length, stored crc).
pub(crate) fn decode_wal_frame_header(header: [u8; WAL_FRAME_HEADER_BYTES]) -> (u32, u32) {
    let mut reader = ByteReader { bytes: &header };
    let len = reader.u32().unwrap_or(0);
    let crc = reader.u32().unwrap_or(0);
    (len, crc)
}

/// A decoded WAL frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WalFrame<'a> {
    pub group_position: u64,
    pub records: Vec<WalRecord<'a>>,
}

/// The group position of a frame payload, if its prefix looks like one this version writes
/// (kind, zero reserved bytes). Cheap: no checksum; recovery's scan for later groups uses it
/// to skip most byte positions before paying for a CRC.
pub(crate) fn peek_wal_frame_group(payload_prefix: &[u8]) -> Option<u64> {
    let mut reader = ByteReader {
        bytes: payload_prefix,
    };
    if reader.u8()? != WAL_FRAME_KIND_APPEND || reader.take(3)? != [0, 0, 0] {
        return None;
    }
    reader.u32()?;
    reader.u64()
}

/// Checks a frame's payload against its header and parses its records.
pub(crate) fn decode_wal_frame_payload(
    len: u32,
    crc: u32,
    payload: &[u8],
) -> Result<WalFrame<'_>, &'static str> {
    if crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), payload) != crc {
        return Err("WAL frame checksum mismatch");
    }
    let mut reader = ByteReader { bytes: payload };
    if reader.u8() != Some(WAL_FRAME_KIND_APPEND) {
        return Err("unknown WAL frame kind");
    }
    reader.take(3).ok_or("truncated WAL frame prefix")?;
    let n_records = reader.u32().ok_or("truncated WAL frame prefix")?;
    let group_position = reader.u64().ok_or("truncated WAL frame prefix")?;
    // Each record takes at least its header, so a bogus count cannot make us allocate much.
    let n_records_possible = payload.len() / WAL_RECORD_HEADER_BYTES;
    let n_records = usize::try_from(n_records).map_err(|_| "bad WAL record count")?;
    if n_records > n_records_possible {
        return Err("WAL record count exceeds frame size");
    }
    let mut records = Vec::with_capacity(n_records);
    for _ in 0..n_records {
        let truncated = "truncated WAL record";
        let log_id = reader.u64().ok_or(truncated)?;
        let offset = reader.u64().ok_or(truncated)?;
        let timestamp_ms = reader.i64().ok_or(truncated)?;
        let size = reader.u32().ok_or(truncated)?;
        let size = usize::try_from(size).map_err(|_| truncated)?;
        let payload = reader.take(size).ok_or(truncated)?;
        records.push(WalRecord {
            log_id,
            offset,
            timestamp_ms,
            payload,
        });
    }
    if !reader.bytes.is_empty() {
        return Err("trailing bytes in WAL frame");
    }
    Ok(WalFrame {
        group_position,
        records,
    })
}

// ---------------------------------------------------------------------------------------
// Segment records

/// The fixed-width head of a segment record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentRecordHeader {
    pub payload_len: u32,
    pub crc: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
}

impl SegmentRecordHeader {
    /// Bytes the whole record takes on disk.
    pub fn record_bytes(&self) -> u64 {
        SEGMENT_RECORD_HEADER_BYTES as u64 + u64::from(self.payload_len)
    }

    /// Whether `payload` is the payload this header's checksum was computed over.
    pub fn checks(&self, payload: &[u8]) -> bool {
        segment_record_crc(self.payload_len, self.offset, self.timestamp_ms, payload) == self.crc
    }
}

fn segment_record_crc(payload_len: u32, offset: u64, timestamp_ms: i64, payload: &[u8]) -> u32 {
    // The covered fields gathered first: one checksum call for them instead of three (each
    // call has a fixed cost that showed in profiles at one record per kilobyte).
    let mut covered = [0u8; 20];
    let (len_part, rest) = covered.split_at_mut(4);
    let (offset_part, timestamp_part) = rest.split_at_mut(8);
    len_part.copy_from_slice(&payload_len.to_le_bytes());
    offset_part.copy_from_slice(&offset.to_le_bytes());
    timestamp_part.copy_from_slice(&timestamp_ms.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&covered), payload)
}

/// Appends one segment record to `buf`; returns the bytes it took.
pub(crate) fn encode_segment_record(
    buf: &mut Vec<u8>,
    offset: u64,
    timestamp_ms: i64,
    payload: &[u8],
) -> u64 {
    let payload_len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let crc = segment_record_crc(payload_len, offset, timestamp_ms, payload);
    buf.extend_from_slice(&payload_len.to_le_bytes());
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&timestamp_ms.to_le_bytes());
    buf.extend_from_slice(payload);
    SEGMENT_RECORD_HEADER_BYTES as u64 + payload.len() as u64
}

pub(crate) fn decode_segment_header(
    bytes: [u8; SEGMENT_RECORD_HEADER_BYTES],
) -> SegmentRecordHeader {
    let mut reader = ByteReader { bytes: &bytes };
    SegmentRecordHeader {
        payload_len: reader.u32().unwrap_or(0),
        crc: reader.u32().unwrap_or(0),
        offset: reader.u64().unwrap_or(0),
        timestamp_ms: reader.i64().unwrap_or(0),
    }
}

// ---------------------------------------------------------------------------------------
// Index entries

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IndexEntryKind {
    Record = 0,
    Seal = 1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub offset: u64,
    pub position: u64,
    pub timestamp_ms: i64,
    pub kind: IndexEntryKind,
}

impl IndexEntry {
    pub fn encode(&self) -> [u8; INDEX_ENTRY_BYTES] {
        let mut bytes = [0u8; INDEX_ENTRY_BYTES];
        let mut body = Vec::with_capacity(INDEX_ENTRY_BYTES);
        body.extend_from_slice(&self.offset.to_le_bytes());
        body.extend_from_slice(&self.position.to_le_bytes());
        body.extend_from_slice(&self.timestamp_ms.to_le_bytes());
        body.extend_from_slice(&(self.kind as u32).to_le_bytes());
        let crc = crc32c::crc32c(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        bytes.copy_from_slice(&body);
        bytes
    }

    /// `Err` when the entry's checksum or kind is wrong (torn or corrupt).
    pub fn decode(bytes: [u8; INDEX_ENTRY_BYTES]) -> Result<IndexEntry, &'static str> {
        let (body, crc_bytes) = bytes.split_at(INDEX_ENTRY_BYTES - 4);
        let mut crc_reader = ByteReader { bytes: crc_bytes };
        if crc_reader.u32() != Some(crc32c::crc32c(body)) {
            return Err("index entry checksum mismatch");
        }
        let mut reader = ByteReader { bytes: body };
        let bad = "truncated index entry";
        let offset = reader.u64().ok_or(bad)?;
        let position = reader.u64().ok_or(bad)?;
        let timestamp_ms = reader.i64().ok_or(bad)?;
        let kind = match reader.u32().ok_or(bad)? {
            0 => IndexEntryKind::Record,
            1 => IndexEntryKind::Seal,
            _ => return Err("unknown index entry kind"),
        };
        Ok(IndexEntry {
            offset,
            position,
            timestamp_ms,
            kind,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Checkpoint

/// What a checkpoint records about one log: its state at the checkpoint's WAL position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CheckpointLog {
    pub log_id: u64,
    pub end_offset: u64,
    pub active_base_offset: u64,
    pub active_size_bytes: u64,
    pub active_index_entries_n: u64,
    pub last_timestamp_ms: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Every WAL frame before this position is in the segment files (fsynced).
    pub wal_position: u64,
    pub logs: Vec<CheckpointLog>,
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(8 + 8 + 8 + self.logs.len() * CHECKPOINT_LOG_BYTES + 4);
        buf.extend_from_slice(CHECKPOINT_MAGIC);
        buf.extend_from_slice(&self.wal_position.to_le_bytes());
        buf.extend_from_slice(&(self.logs.len() as u64).to_le_bytes());
        for log in &self.logs {
            buf.extend_from_slice(&log.log_id.to_le_bytes());
            buf.extend_from_slice(&log.end_offset.to_le_bytes());
            buf.extend_from_slice(&log.active_base_offset.to_le_bytes());
            buf.extend_from_slice(&log.active_size_bytes.to_le_bytes());
            buf.extend_from_slice(&log.active_index_entries_n.to_le_bytes());
            let timestamp_ms = log.last_timestamp_ms.unwrap_or(NO_TIMESTAMP);
            buf.extend_from_slice(&timestamp_ms.to_le_bytes());
        }
        let crc = crc32c::crc32c(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        buf
    }

    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, &'static str> {
        let Some((body, crc_bytes)) = bytes.split_last_chunk::<4>() else {
            return Err("checkpoint too short");
        };
        if u32::from_le_bytes(*crc_bytes) != crc32c::crc32c(body) {
            return Err("checkpoint checksum mismatch");
        }
        let mut reader = ByteReader { bytes: body };
        if reader.array::<8>().as_ref() != Some(CHECKPOINT_MAGIC) {
            return Err("checkpoint magic mismatch");
        }
        let bad = "truncated checkpoint";
        let wal_position = reader.u64().ok_or(bad)?;
        let n_logs = reader.u64().ok_or(bad)?;
        let n_logs = usize::try_from(n_logs).map_err(|_| bad)?;
        if Some(reader.bytes.len()) != n_logs.checked_mul(CHECKPOINT_LOG_BYTES) {
            return Err("checkpoint log count does not match its size");
        }
        let mut logs = Vec::with_capacity(n_logs);
        for _ in 0..n_logs {
            let log_id = reader.u64().ok_or(bad)?;
            let end_offset = reader.u64().ok_or(bad)?;
            let active_base_offset = reader.u64().ok_or(bad)?;
            let active_size_bytes = reader.u64().ok_or(bad)?;
            let active_index_entries_n = reader.u64().ok_or(bad)?;
            let timestamp_ms = reader.i64().ok_or(bad)?;
            logs.push(CheckpointLog {
                log_id,
                end_offset,
                active_base_offset,
                active_size_bytes,
                active_index_entries_n,
                last_timestamp_ms: (timestamp_ms != NO_TIMESTAMP).then_some(timestamp_ms),
            });
        }
        Ok(Checkpoint { wal_position, logs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP_POSITION: u64 = 0x0102_0304_0506_0708;

    fn frame(records: &[WalRecord<'_>]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_wal_frame(
            &mut buf,
            records.len() as u32,
            GROUP_POSITION,
            records.iter().copied(),
        );
        buf
    }

    fn decode(frame: &[u8]) -> Result<Vec<WalRecord<'_>>, &'static str> {
        let (header, payload) = frame
            .split_first_chunk::<WAL_FRAME_HEADER_BYTES>()
            .ok_or("short")?;
        let (len, crc) = decode_wal_frame_header(*header);
        if len as usize != payload.len() {
            return Err("length mismatch");
        }
        let frame = decode_wal_frame_payload(len, crc, payload)?;
        assert_eq!(frame.group_position, GROUP_POSITION);
        assert_eq!(peek_wal_frame_group(payload), Some(GROUP_POSITION));
        Ok(frame.records)
    }

    #[test]
    fn wal_frame_round_trips() {
        let records = [
            WalRecord {
                log_id: 7,
                offset: 0,
                timestamp_ms: 1_000,
                payload: b"alpha",
            },
            WalRecord {
                log_id: 9,
                offset: 41,
                timestamp_ms: -5,
                payload: b"",
            },
        ];
        let bytes = frame(&records);
        assert_eq!(bytes.len(), wal_frame_bytes(2, 5));
        assert_eq!(decode(&bytes), Ok(records.to_vec()));
    }

    #[test]
    fn wal_frame_detects_every_single_bit_flip() {
        let records = [WalRecord {
            log_id: 1,
            offset: 2,
            timestamp_ms: 3,
            payload: b"payload",
        }];
        let bytes = frame(&records);
        for byte_idx in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                if let Some(b) = flipped.get_mut(byte_idx) {
                    *b ^= 1 << bit;
                }
                assert!(
                    decode(&flipped).is_err(),
                    "flip at {byte_idx}:{bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn zero_filled_wal_frame_is_invalid() {
        let zeros = [0u8; 64];
        let (header, payload) = zeros.split_first_chunk::<8>().expect("64 > 8");
        let (len, crc) = decode_wal_frame_header(*header);
        assert_eq!((len, crc), (0, 0));
        assert!(decode_wal_frame_payload(len, crc, payload.get(..0).unwrap_or_default()).is_err());
    }

    #[test]
    fn wal_frame_refuses_absurd_record_count() {
        // A frame whose CRC is right but whose count promises more than it holds.
        let mut payload = vec![WAL_FRAME_KIND_APPEND, 0, 0, 0];
        payload.extend_from_slice(&u32::MAX.to_le_bytes());
        payload.extend_from_slice(&0u64.to_le_bytes());
        let len = payload.len() as u32;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), &payload);
        assert_eq!(
            decode_wal_frame_payload(len, crc, &payload),
            Err("WAL record count exceeds frame size")
        );
    }

    #[test]
    fn segment_record_round_trips_and_checks() {
        let mut buf = Vec::new();
        let n = encode_segment_record(&mut buf, 12, 34, b"hello");
        assert_eq!(n, 29);
        assert_eq!(buf.len(), 29);
        let (header, payload) = buf
            .split_first_chunk::<SEGMENT_RECORD_HEADER_BYTES>()
            .expect("record is longer than its header");
        let header = decode_segment_header(*header);
        assert_eq!(
            (header.payload_len, header.offset, header.timestamp_ms),
            (5, 12, 34)
        );
        assert_eq!(header.record_bytes(), 29);
        assert!(header.checks(payload));
        assert!(!header.checks(b"hellO"));
        let zeros = decode_segment_header([0; SEGMENT_RECORD_HEADER_BYTES]);
        assert!(!zeros.checks(b""), "a zero-filled record must not check");
    }

    #[test]
    fn index_entry_round_trips_and_detects_damage() {
        let entry = IndexEntry {
            offset: 5,
            position: 4096,
            timestamp_ms: 77,
            kind: IndexEntryKind::Seal,
        };
        let bytes = entry.encode();
        assert_eq!(IndexEntry::decode(bytes), Ok(entry));
        let mut damaged = bytes;
        damaged[3] ^= 0x10;
        assert!(IndexEntry::decode(damaged).is_err());
        assert!(IndexEntry::decode([0; INDEX_ENTRY_BYTES]).is_err());
    }

    #[test]
    fn checkpoint_round_trips_and_detects_damage() {
        let checkpoint = Checkpoint {
            wal_position: 123_456,
            logs: vec![
                CheckpointLog {
                    log_id: 1,
                    end_offset: 10,
                    active_base_offset: 8,
                    active_size_bytes: 100,
                    active_index_entries_n: 1,
                    last_timestamp_ms: Some(-3),
                },
                CheckpointLog {
                    log_id: 2,
                    end_offset: 0,
                    active_base_offset: 0,
                    active_size_bytes: 0,
                    active_index_entries_n: 0,
                    last_timestamp_ms: None,
                },
            ],
        };
        let bytes = checkpoint.encode();
        assert_eq!(Checkpoint::decode(&bytes), Ok(checkpoint));
        for cut in [0, 4, 20, bytes.len() - 1] {
            assert!(Checkpoint::decode(bytes.get(..cut).unwrap_or_default()).is_err());
        }
        let mut damaged = bytes.clone();
        damaged[30] ^= 1;
        assert!(Checkpoint::decode(&damaged).is_err());
    }

    #[test]
    fn numbered_names_are_fixed_width() {
        assert_eq!(
            numbered_name(42, SEGMENT_EXTENSION),
            "00000000000000000042.seg"
        );
        assert_eq!(
            parse_numbered_name("00000000000000000042.seg", SEGMENT_EXTENSION),
            Some(42)
        );
        for bad in [
            "42.seg",
            "00000000000000000042.idx",
            "0000000000000000004x.seg",
            "00000000000000000042.seg.tmp",
        ] {
            assert_eq!(parse_numbered_name(bad, SEGMENT_EXTENSION), None, "{bad}");
        }
    }
}
