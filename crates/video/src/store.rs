//! The fragment store of one video stream: append-only segment files of fragments and an
//! index of fixed-size records, both fsynced before a fragment is acknowledged PERSISTED.
//!
//! Layout of a stream's directory:
//! - `segment-<first id, 20 digits>.frag`: fragments back to back; each is the session
//!   header (EBML header, Segment start, Info, Tracks) then one Cluster, so a fragment read
//!   alone is a playable MKV document. A segment is closed past [`SEGMENT_BYTES_MAX`].
//! - `index`: one [`INDEX_RECORD_BYTES`] record per fragment, little-endian: sequence u64,
//!   segment u64, offset u64, header length u32, cluster length u32, producer time ms i64,
//!   server time ms i64, duration ms u32, CRC32C of the fragment bytes u32, CRC32C of the
//!   record's first 56 bytes u32.
//!
//! Write order: fragment bytes, fsync, index record, fsync. Recovery keeps the index records
//! up to the first one that is torn, fails its CRC or points past the end of its segment,
//! and truncates the index there. A fragment whose bytes fail their CRC on read is refused
//! (never served). Retention deletes whole segments whose newest fragment has expired.
//! The index is held in memory (60 bytes a fragment: about 2.6 MB a day for a stream of
//! 2-second fragments); fragment bytes are read from disk on demand.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::VideoError;

pub const SEGMENT_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// A segment is also closed once its first fragment is this old, so that retention (whole
/// segments) can delete slow streams' data within about an hour of its expiry.
pub const SEGMENT_AGE_MS_MAX: i64 = 3_600_000;
pub const INDEX_RECORD_BYTES: usize = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentEntry {
    pub seq: u64,
    pub segment: u64,
    pub offset: u64,
    pub header_len: u32,
    pub cluster_len: u32,
    pub producer_ms: i64,
    pub server_ms: i64,
    pub duration_ms: u32,
    pub crc: u32,
}

impl FragmentEntry {
    pub fn size_bytes(&self) -> u64 {
        u64::from(self.header_len) + u64::from(self.cluster_len)
    }

    fn encode(&self) -> [u8; INDEX_RECORD_BYTES] {
        let mut out = [0u8; INDEX_RECORD_BYTES];
        let mut pos = 0;
        let mut put = |bytes: &[u8]| {
            if let Some(slot) = out.get_mut(pos..pos + bytes.len()) {
                slot.copy_from_slice(bytes);
            }
            pos += bytes.len();
        };
        put(&self.seq.to_le_bytes());
        put(&self.segment.to_le_bytes());
        put(&self.offset.to_le_bytes());
        put(&self.header_len.to_le_bytes());
        put(&self.cluster_len.to_le_bytes());
        put(&self.producer_ms.to_le_bytes());
        put(&self.server_ms.to_le_bytes());
        put(&self.duration_ms.to_le_bytes());
        put(&self.crc.to_le_bytes());
        let crc = crc32c::crc32c(out.get(..56).unwrap_or(&[]));
        if let Some(slot) = out.get_mut(56..60) {
            slot.copy_from_slice(&crc.to_le_bytes());
        }
        out
    }

    fn decode(record: &[u8]) -> Option<FragmentEntry> {
        let body = record.get(..56)?;
        let crc = u32::from_le_bytes(record.get(56..60)?.try_into().ok()?);
        if crc32c::crc32c(body) != crc {
            return None;
        }
        let u64_at = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?))
        };
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?))
        };
        Some(FragmentEntry {
            seq: u64_at(0)?,
            segment: u64_at(8)?,
            offset: u64_at(16)?,
            header_len: u32_at(24)?,
            cluster_len: u32_at(28)?,
            producer_ms: u64_at(32)? as i64,
            server_ms: u64_at(40)? as i64,
            duration_ms: u32_at(48)?,
            crc: u32_at(52)?,
        })
    }
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("segment-{segment:020}.frag"))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[derive(Debug)]
pub struct FragmentStore {
    dir: PathBuf,
    index: File,
    segment: Option<(u64, File, u64)>,
    /// Server time of the open segment's first fragment.
    segment_first_ms: i64,
    /// Sorted by sequence number.
    entries: Vec<FragmentEntry>,
    next_seq: u64,
}

impl FragmentStore {
    pub fn open(dir: &Path) -> std::io::Result<FragmentStore> {
        std::fs::create_dir_all(dir)?;
        let index_path = dir.join("index");
        let mut index = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&index_path)?;
        let mut bytes = Vec::new();
        index.read_to_end(&mut bytes)?;
        let mut entries = Vec::new();
        let mut segment_lens = std::collections::HashMap::new();
        for record in bytes.chunks(INDEX_RECORD_BYTES) {
            let Some(entry) = FragmentEntry::decode(record) else {
                break;
            };
            let len = match segment_lens.get(&entry.segment) {
                Some(len) => *len,
                None => {
                    let len = std::fs::metadata(segment_path(dir, entry.segment))
                        .map(|m| m.len())
                        .unwrap_or(0);
                    segment_lens.insert(entry.segment, len);
                    len
                }
            };
            if entry.offset + entry.size_bytes() > len {
                break;
            }
            entries.push(entry);
        }
        let valid = (entries.len() * INDEX_RECORD_BYTES) as u64;
        if valid < bytes.len() as u64 {
            tracing::warn!(dir = %dir.display(), valid, len = bytes.len(), "truncating a torn video index");
            index.set_len(valid)?;
            index.sync_all()?;
        }
        entries.sort_by_key(|e| e.seq);
        let next_seq = entries.iter().map(|e| e.seq + 1).max().unwrap_or(1);
        let mut store = FragmentStore {
            dir: dir.to_path_buf(),
            index,
            segment: None,
            segment_first_ms: i64::MAX,
            entries,
            next_seq,
        };
        if let Some(last) = store.entries.iter().max_by_key(|e| (e.segment, e.offset)) {
            let end = last.offset + last.size_bytes();
            let file = OpenOptions::new()
                .write(true)
                .open(segment_path(dir, last.segment))?;
            file.set_len(end)?;
            store.segment = Some((last.segment, file, end));
            store.segment_first_ms = store
                .entries
                .iter()
                .filter(|e| e.segment == last.segment)
                .map(|e| e.server_ms)
                .min()
                .unwrap_or(i64::MAX);
        }
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn entries(&self) -> &[FragmentEntry] {
        &self.entries
    }

    pub fn allocate_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Appends a fragment durably (both files fsynced) and indexes it.
    pub fn append(
        &mut self,
        seq: u64,
        header: &[u8],
        cluster: &[u8],
        producer_ms: i64,
        server_ms: i64,
        duration_ms: u32,
    ) -> Result<FragmentEntry, VideoError> {
        let size = (header.len() + cluster.len()) as u64;
        let rotate = match &self.segment {
            Some((_, _, len)) => {
                *len > 0
                    && (*len + size > SEGMENT_BYTES_MAX
                        || server_ms.saturating_sub(self.segment_first_ms) > SEGMENT_AGE_MS_MAX)
            }
            None => true,
        };
        if rotate {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(segment_path(&self.dir, seq))?;
            sync_dir(&self.dir)?;
            self.segment = Some((seq, file, 0));
            self.segment_first_ms = server_ms;
        }
        let Some((segment, file, len)) = self.segment.as_mut() else {
            return Err(VideoError::Corrupt {
                detail: "no open segment".into(),
            });
        };
        let mut crc = crc32c::crc32c(header);
        crc = crc32c::crc32c_append(crc, cluster);
        file.write_all(header)?;
        file.write_all(cluster)?;
        file.sync_data()?;
        let entry = FragmentEntry {
            seq,
            segment: *segment,
            offset: *len,
            header_len: u32::try_from(header.len()).unwrap_or(u32::MAX),
            cluster_len: u32::try_from(cluster.len()).unwrap_or(u32::MAX),
            producer_ms,
            server_ms,
            duration_ms,
            crc,
        };
        *len += size;
        self.index.write_all(&entry.encode())?;
        self.index.sync_data()?;
        let at = self.entries.partition_point(|e| e.seq < seq);
        self.entries.insert(at, entry);
        Ok(entry)
    }

    /// Deletes the segments whose every fragment arrived before `cutoff_server_ms`, except
    /// the segment being written.
    pub fn expire(&mut self, cutoff_server_ms: i64) -> std::io::Result<usize> {
        let current = self.segment.as_ref().map(|(id, _, _)| *id);
        let mut newest: std::collections::BTreeMap<u64, i64> = Default::default();
        for entry in &self.entries {
            let slot = newest.entry(entry.segment).or_insert(i64::MIN);
            *slot = (*slot).max(entry.server_ms);
        }
        let doomed: Vec<u64> = newest
            .into_iter()
            .filter(|(segment, newest)| Some(*segment) != current && *newest < cutoff_server_ms)
            .map(|(segment, _)| segment)
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        let before = self.entries.len();
        self.entries.retain(|e| !doomed.contains(&e.segment));
        // Rewrite the index first (atomically), then delete the segment files.
        let tmp = self.dir.join("index.tmp");
        {
            let mut file = File::create(&tmp)?;
            for entry in &self.entries {
                file.write_all(&entry.encode())?;
            }
            file.sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join("index"))?;
        sync_dir(&self.dir)?;
        self.index = OpenOptions::new()
            .append(true)
            .open(self.dir.join("index"))?;
        for segment in doomed {
            std::fs::remove_file(segment_path(&self.dir, segment))?;
        }
        sync_dir(&self.dir)?;
        Ok(before - self.entries.len())
    }
}

/// Reads a fragment's header and cluster bytes, checking the CRC.
pub fn read_fragment(dir: &Path, entry: &FragmentEntry) -> Result<(Vec<u8>, Vec<u8>), VideoError> {
    let mut file = File::open(segment_path(dir, entry.segment))?;
    file.seek(SeekFrom::Start(entry.offset))?;
    let mut header = vec![0u8; entry.header_len as usize];
    file.read_exact(&mut header)?;
    let mut cluster = vec![0u8; entry.cluster_len as usize];
    file.read_exact(&mut cluster)?;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header), &cluster);
    if crc != entry.crc {
        return Err(VideoError::Corrupt {
            detail: format!(
                "fragment {} in {} fails its checksum",
                entry.seq,
                dir.display()
            ),
        });
    }
    Ok((header, cluster))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_survive_reopen_and_torn_tails_are_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        {
            let mut store = FragmentStore::open(&path).expect("open");
            for i in 0..3 {
                let seq = store.allocate_seq();
                store
                    .append(seq, b"HEAD", &[i as u8; 100], 1000 * i, 2000 * i, 40)
                    .expect("append");
            }
        }
        // A torn record at the end of the index.
        let mut index = OpenOptions::new()
            .append(true)
            .open(path.join("index"))
            .expect("index");
        index.write_all(&[1, 2, 3]).expect("write");
        drop(index);
        let mut store = FragmentStore::open(&path).expect("reopen");
        assert_eq!(store.entries().len(), 3);
        assert_eq!(store.allocate_seq(), 4);
        let (header, cluster) = read_fragment(&path, &store.entries()[2]).expect("read");
        assert_eq!(header, b"HEAD");
        assert_eq!(cluster, vec![2u8; 100]);
        assert_eq!(
            std::fs::metadata(path.join("index")).expect("meta").len(),
            3 * INDEX_RECORD_BYTES as u64
        );
    }

    #[test]
    fn retention_deletes_whole_old_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = FragmentStore::open(dir.path()).expect("open");
        store.append(1, b"H", b"old-1", 0, 0, 0).expect("append");
        store.append(2, b"H", b"old-2", 0, 1000, 0).expect("append");
        // Two hours later the open segment is too old: a new one starts.
        let hours_2 = 2 * 3_600_000;
        store
            .append(3, b"H", b"new", 0, hours_2, 0)
            .expect("append");
        assert_eq!(store.expire(hours_2 - 3_600_000).expect("expire"), 2);
        let seqs: Vec<u64> = store.entries().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![3]);
        assert!(!segment_path(dir.path(), 1).exists());
        drop(store);
        let store = FragmentStore::open(dir.path()).expect("reopen");
        let seqs: Vec<u64> = store.entries().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![3]);
        let (_, cluster) = read_fragment(dir.path(), &store.entries()[0]).expect("read");
        assert_eq!(cluster, b"new");
    }

    #[test]
    fn corrupt_fragment_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = FragmentStore::open(dir.path()).expect("open");
        let entry = store.append(1, b"H", b"CLUSTER", 0, 0, 0).expect("append");
        let segment = segment_path(dir.path(), entry.segment);
        let mut bytes = std::fs::read(&segment).expect("read");
        bytes[3] ^= 0xFF;
        std::fs::write(&segment, bytes).expect("write");
        assert!(matches!(
            read_fragment(dir.path(), &entry),
            Err(VideoError::Corrupt { .. })
        ));
    }
}
