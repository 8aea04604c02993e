//! The read path: records by offset and offsets by timestamp, from segment files.
//!
//! A lookup takes the log's view lock just long enough to copy the segment's metadata and
//! get its file handles, then binary-searches the sparse index with `pread`s and scans at
//! most one index interval (about `INDEX_INTERVAL_BYTES`) to the wanted record. Sequential
//! readers skip the search through a one-entry hint. Every record served is checked against
//! its CRC and expected offset; one that fails is an error (`Corrupt`), never data.
//!
//! Segment bytes come from the page cache when it holds them (`StorageFile::is_cached`),
//! else with direct IO in reads of up to `DIRECT_READ_CHUNK_BYTES` (large runs are written
//! to the segments directly and are not cached; see `direct.rs`), inside
//! `tokio::task::block_in_place` on a multi-threaded runtime so that a read waiting for the
//! disk does not hold up the runtime's other tasks.
//!
//! This module never writes, and never reads at or past a segment's published size, so it
//! cannot see a record before it is durable.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::error::{LogError, Result};
use crate::files::FileKey;
use crate::format::{
    INDEX_ENTRY_BYTES, IndexEntry, IndexEntryKind, SEGMENT_RECORD_HEADER_BYTES,
    SegmentRecordHeader, decode_segment_header,
};
use crate::state::{LogState, ReadHint, SegmentMeta, Shared};
use crate::storage::{StorageFile, read_fully_at};
use crate::{ReadResult, Record};

/// Bytes read from a segment per `pread` when scanning (a record larger than this is read
/// in one piece of its own size).
pub(crate) const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Bytes read per direct read when scanning data the page cache does not hold: without
/// the kernel's readahead, each read waits for the disk, so fewer, larger ones.
const DIRECT_READ_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// One segment, ready to be read without the view lock.
struct OpenSegment {
    meta: SegmentMeta,
    segment: Arc<dyn StorageFile>,
    segment_path: PathBuf,
    index: Arc<dyn StorageFile>,
    index_path: PathBuf,
}

/// Copies the segment holding `offset` and gets its files, under the view lock.
fn open_segment_holding(
    shared: &Shared,
    state: &LogState,
    offset: u64,
) -> Result<Option<(OpenSegment, Option<ReadHint>)>> {
    let view = state.view.lock();
    if view.deleted {
        return Err(LogError::UnknownLog {
            log_id: state.log_id,
        });
    }
    let segment_idx = view
        .segments
        .partition_point(|segment| segment.base_offset <= offset);
    let Some(meta) = segment_idx
        .checked_sub(1)
        .and_then(|segment_idx| view.segments.get(segment_idx))
        .copied()
    else {
        return Ok(None);
    };
    if offset >= meta.end_offset {
        return Ok(None);
    }
    let segment_key = FileKey::segment(state.log_id, meta.base_offset);
    let index_key = FileKey::index(state.log_id, meta.base_offset);
    let segment_path = shared.files.path(segment_key);
    let index_path = shared.files.path(index_key);
    let segment = shared
        .files
        .get(segment_key, false)
        .map_err(LogError::io("open segment", &segment_path))?;
    let index = shared
        .files
        .get(index_key, false)
        .map_err(LogError::io("open index", &index_path))?;
    let hint = view
        .read_hint
        .filter(|hint| hint.base_offset == meta.base_offset && hint.offset == offset);
    Ok(Some((
        OpenSegment {
            meta,
            segment,
            segment_path,
            index,
            index_path,
        },
        hint,
    )))
}

impl OpenSegment {
    fn index_entry(&self, entry_idx: u64) -> Result<IndexEntry> {
        let position = entry_idx * INDEX_ENTRY_BYTES as u64;
        let mut bytes = [0u8; INDEX_ENTRY_BYTES];
        let n = read_fully_at(self.index.as_ref(), &mut bytes, position)
            .map_err(LogError::io("read index", &self.index_path))?;
        if n != INDEX_ENTRY_BYTES {
            return Err(LogError::corrupt(
                &self.index_path,
                position,
                "index shorter than its entry count",
            ));
        }
        let entry = IndexEntry::decode(bytes)
            .map_err(|reason| LogError::corrupt(&self.index_path, position, reason))?;
        if entry.kind != IndexEntryKind::Record
            || entry.offset < self.meta.base_offset
            || entry.offset >= self.meta.end_offset
            || entry.position >= self.meta.size_bytes
        {
            return Err(LogError::corrupt(
                &self.index_path,
                position,
                "index entry outside its segment",
            ));
        }
        Ok(entry)
    }

    /// The last index entry for which `is_at_or_before` holds (a predicate that is true for
    /// a prefix of the entries and must hold for the first one).
    fn search_index(&self, is_at_or_before: impl Fn(&IndexEntry) -> bool) -> Result<IndexEntry> {
        let mut low = 0;
        let mut low_entry = self.index_entry(0)?;
        let mut high = self.meta.index_entries_n;
        while high - low > 1 {
            let mid = low + (high - low) / 2;
            let entry = self.index_entry(mid)?;
            if is_at_or_before(&entry) {
                low = mid;
                low_entry = entry;
            } else {
                high = mid;
            }
        }
        Ok(low_entry)
    }

    fn scanner(&self, position: u64, expected_offset: u64) -> SegmentScanner<'_> {
        SegmentScanner {
            segment: self,
            position,
            expected_offset,
            chunk: Bytes::new(),
            chunk_position: 0,
        }
    }
}

/// Reads consecutive records of one segment, checking each one's framing and offset.
struct SegmentScanner<'a> {
    segment: &'a OpenSegment,
    position: u64,
    expected_offset: u64,
    chunk: Bytes,
    chunk_position: u64,
}

struct ScannedRecord {
    header: SegmentRecordHeader,
    /// `None` when skipped without reading the payload.
    payload: Option<Bytes>,
}

impl SegmentScanner<'_> {
    fn corrupt(&self, reason: &'static str) -> LogError {
        LogError::corrupt(&self.segment.segment_path, self.position, reason)
    }

    /// `len` bytes at `position`, reading a new chunk if the current one does not hold them.
    fn bytes_at(&mut self, position: u64, len: u64) -> Result<Bytes> {
        let chunk_end = self.chunk_position + self.chunk.len() as u64;
        if position < self.chunk_position || position + len > chunk_end {
            let size_bytes_max = self.segment.meta.size_bytes.saturating_sub(position);
            let want = len.max(READ_CHUNK_BYTES as u64).min(size_bytes_max);
            let want = usize::try_from(want).map_err(|_| self.corrupt("record too large"))?;
            let direct_want = usize::try_from(size_bytes_max)
                .unwrap_or(usize::MAX)
                .min(DIRECT_READ_CHUNK_BYTES)
                .max(want);
            self.chunk = read_chunk(self.segment.segment.as_ref(), position, want, direct_want)
                .map_err(LogError::io("read segment", &self.segment.segment_path))?;
            self.chunk_position = position;
        }
        let start = usize::try_from(position - self.chunk_position).unwrap_or(usize::MAX);
        let end = start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
        if end > self.chunk.len() {
            return Err(self.corrupt("segment shorter than its published size"));
        }
        Ok(self.chunk.slice(start..end))
    }

    /// The next record, or `None` at the segment's published end. With `want_payload`, the
    /// payload is read and its checksum verified.
    fn next(&mut self, want_payload: bool) -> Result<Option<ScannedRecord>> {
        if self.expected_offset >= self.segment.meta.end_offset {
            return Ok(None);
        }
        if self.position + SEGMENT_RECORD_HEADER_BYTES as u64 > self.segment.meta.size_bytes {
            return Err(self.corrupt("segment ends before its last record"));
        }
        let header_bytes = self.bytes_at(self.position, SEGMENT_RECORD_HEADER_BYTES as u64)?;
        let header_array: [u8; SEGMENT_RECORD_HEADER_BYTES] = header_bytes
            .as_ref()
            .try_into()
            .map_err(|_| self.corrupt("short record header"))?;
        let header = decode_segment_header(header_array);
        if header.offset != self.expected_offset {
            return Err(self.corrupt("record offset out of sequence"));
        }
        let record_end = self.position + header.record_bytes();
        if record_end > self.segment.meta.size_bytes {
            return Err(self.corrupt("record extends past the segment end"));
        }
        let payload = if want_payload {
            let payload = self.bytes_at(
                self.position + SEGMENT_RECORD_HEADER_BYTES as u64,
                u64::from(header.payload_len),
            )?;
            if !header.checks(&payload) {
                return Err(self.corrupt("record checksum mismatch"));
            }
            Some(payload)
        } else {
            None
        };
        self.position = record_end;
        self.expected_offset += 1;
        Ok(Some(ScannedRecord { header, payload }))
    }
}

/// Up to `want` bytes of `file` from `position` (fewer only at its end): from the page
/// cache when it holds all of them, else with direct IO, else (storage that cannot do
/// direct IO) through the cache. Large runs reach the segments with direct writes (see
/// `direct.rs`), so a backlog is usually not cached; reading it directly skips filling the
/// cache with data a consumer reads once, which cost as much as the write skipped.
fn read_chunk(
    file: &dyn StorageFile,
    position: u64,
    want: usize,
    direct_want: usize,
) -> std::io::Result<Bytes> {
    if file.is_cached(position, want as u64) {
        return read_buffered(file, position, want);
    }
    let want = direct_want;
    let block = crate::direct::BLOCK_BYTES as u64;
    let start = position / block * block;
    let end = (position + want as u64).next_multiple_of(block);
    let len = usize::try_from(end - start).unwrap_or(usize::MAX);
    let mut raw = BytesMut::zeroed(len + crate::direct::BLOCK_BYTES);
    let pad = raw.as_ptr().align_offset(crate::direct::BLOCK_BYTES);
    let read_direct = |aligned: &mut [u8]| file.read_direct_at(aligned, start);
    let direct = match raw.get_mut(pad..pad + len) {
        None => None,
        // A direct read waits for the disk: on a runtime worker, let the runtime move its
        // other tasks to another thread meanwhile.
        Some(aligned)
            if tokio::runtime::Handle::try_current().is_ok_and(|handle| {
                handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
            }) =>
        {
            tokio::task::block_in_place(|| read_direct(aligned))?
        }
        Some(aligned) => read_direct(aligned)?,
    };
    if let Some(n) = direct {
        let skip = pad + (position - start) as usize;
        let end = (pad + n).min(skip + want).max(skip);
        return Ok(raw.freeze().slice(skip..end));
    }
    read_buffered(file, position, want)
}

fn read_buffered(file: &dyn StorageFile, position: u64, want: usize) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::zeroed(want);
    let n = read_fully_at(file, &mut buf, position)?;
    buf.truncate(n);
    Ok(buf.freeze())
}

/// Records from `from_offset` on; see `Log::read` for the contract.
pub(crate) fn read(
    shared: &Shared,
    state: &LogState,
    from_offset: u64,
    records_max: usize,
    bytes_max: usize,
) -> Result<ReadResult> {
    let (start_offset, end_offset) = {
        let view = state.view.lock();
        if view.deleted {
            return Err(LogError::UnknownLog {
                log_id: state.log_id,
            });
        }
        (view.start_offset(), view.end_offset)
    };
    let records_max = records_max.max(1);
    let mut records: Vec<Record> = Vec::new();
    let mut payload_bytes = 0usize;
    let mut next_offset = from_offset.max(start_offset);
    'segments: while next_offset < end_offset && records.len() < records_max {
        let Some((segment, hint)) = open_segment_holding(shared, state, next_offset)? else {
            // Trimmed underneath us: the caller sees `next_offset` and asks again.
            break;
        };
        let position = match hint {
            Some(hint) => hint.position,
            None => {
                let target = next_offset;
                let entry = segment.search_index(|entry| entry.offset <= target)?;
                // Skip from the index entry to the wanted record, headers only.
                let mut scanner = segment.scanner(entry.position, entry.offset);
                while scanner.expected_offset < target {
                    if scanner.next(false)?.is_none() {
                        return Err(LogError::corrupt(
                            &segment.segment_path,
                            scanner.position,
                            "segment ends before a published offset",
                        ));
                    }
                }
                scanner.position
            }
        };
        let mut scanner = segment.scanner(position, next_offset);
        while records.len() < records_max {
            let record_position = scanner.position;
            let Some(record) = scanner.next(true)? else {
                break;
            };
            let payload = record.payload.unwrap_or_default();
            if !records.is_empty() && payload_bytes + payload.len() > bytes_max {
                remember_position(state, &segment, record.header.offset, record_position);
                break 'segments;
            }
            payload_bytes += payload.len();
            next_offset = record.header.offset + 1;
            records.push(Record {
                offset: record.header.offset,
                timestamp_ms: record.header.timestamp_ms,
                payload,
            });
            if payload_bytes >= bytes_max {
                break;
            }
        }
        if scanner.expected_offset == next_offset {
            remember_position(state, &segment, next_offset, scanner.position);
        }
        if payload_bytes >= bytes_max {
            break;
        }
    }
    Ok(ReadResult {
        records,
        next_offset,
        end_offset,
    })
}

/// Stores that `offset` starts at byte `position` of `segment` as the log's read hint, so
/// the next sequential read skips the index search.
fn remember_position(state: &LogState, segment: &OpenSegment, offset: u64, position: u64) {
    if offset >= segment.meta.end_offset {
        return;
    }
    state.view.lock().read_hint = Some(ReadHint {
        base_offset: segment.meta.base_offset,
        offset,
        position,
    });
}

/// The first offset whose timestamp is `>= timestamp_ms`, or the end offset.
pub(crate) fn offset_at_timestamp(
    shared: &Shared,
    state: &LogState,
    timestamp_ms: i64,
) -> Result<u64> {
    let (candidate, end_offset) = {
        let view = state.view.lock();
        if view.deleted {
            return Err(LogError::UnknownLog {
                log_id: state.log_id,
            });
        }
        // Timestamps never decrease along a log, so the first segment whose newest record
        // is new enough holds the answer.
        let candidate = view.segments.iter().find(|segment| {
            segment.end_offset > segment.base_offset
                && segment
                    .last_timestamp_ms
                    .is_some_and(|last| last >= timestamp_ms)
        });
        (candidate.copied(), view.end_offset)
    };
    let Some(meta) = candidate else {
        return Ok(end_offset);
    };
    if meta
        .first_timestamp_ms
        .is_none_or(|first| first >= timestamp_ms)
    {
        return Ok(meta.base_offset);
    }
    let Some((segment, _)) = open_segment_holding(shared, state, meta.base_offset)? else {
        // Trimmed since we looked: everything older is gone, so the answer is the new start.
        let view = state.view.lock();
        return Ok(view.start_offset());
    };
    let entry = segment.search_index(|entry| entry.timestamp_ms < timestamp_ms)?;
    let mut scanner = segment.scanner(entry.position, entry.offset);
    // Payloads are read so every header's checksum is verified: an answer derived from a
    // damaged timestamp would position a reader wrongly (the scan is at most one index
    // interval, about `INDEX_INTERVAL_BYTES`, plus one record).
    while let Some(record) = scanner.next(true)? {
        if record.header.timestamp_ms >= timestamp_ms {
            return Ok(record.header.offset);
        }
    }
    // Cannot happen while the segment's newest timestamp is >= the target; be safe anyway.
    Ok(segment.meta.end_offset)
}
