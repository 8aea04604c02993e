//! Writing the active WAL segment with direct IO (`O_DIRECT`), in whole aligned blocks.
//!
//! Why: through the page cache, every group commit copied its frames into the cache and
//! then its `fdatasync` pushed them through the kernel's buffered writeback, which on the
//! development machine moves about 280 MB/s where the device takes 2 GB/s written directly
//! (`dd ... conv=fdatasync` against `oflag=direct`). With fsync on, nothing written to the
//! WAL is read back except by recovery, so the cache bought nothing.
//!
//! How: direct IO writes whole blocks from an aligned buffer at an aligned position. Each
//! group is written from the start of the block holding the WAL's current end: that
//! block's bytes so far (the tail, kept in memory) are written again, unchanged, in front
//! of the new frames, and the last block is padded with zeros. The bytes on disk before
//! the end therefore never change (a torn write of the tail block writes the same bytes it
//! already held), and the zeros after the end read as an invalid frame, which recovery
//! already treats as the end of the WAL. The file's length runs up to a block ahead of the
//! WAL's end; the writer cuts it back when it leaves the segment (a rotated segment must
//! end at its last frame, or recovery would take the padding for damage).
//!
//! The on-disk format does not change. Storage that cannot do direct IO (tmpfs before
//! Linux 6.6, the simulation) is written as before: plain appends through the page cache.
//!
//! Log segments use the same appender for large runs (see `DIRECT_SEGMENT_RUN_BYTES_MIN`
//! in the writer). Copying a run into the page cache was the largest cost left on the
//! writer thread: on the development VM `copy_folio_from_iter_atomic` took 28–70 % of its
//! CPU, and PutRecords (500 × 1 KiB) ran at 160–227k records/s with the copy against
//! 238–265k without it. Data written this way is not in the page cache, so the read path
//! reads such ranges with direct IO too (`read.rs`): filling the cache on the way back in
//! would cost what the write saved. Small runs, which a tailing consumer reads at once,
//! still go through the page cache.

use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::storage::{Storage, StorageFile, read_fully_at};

/// The alignment direct IO needs of buffers, positions and lengths (the page size, which
/// covers every logical block size in use).
pub(crate) const BLOCK_BYTES: usize = 4096;

/// The write state of a file appended to with direct IO (the active WAL segment, or a
/// log's active segment).
pub(crate) struct DirectAppender {
    /// The segment's bytes from the start of its last partial block to its end
    /// (`size_bytes % BLOCK_BYTES` of them).
    tail: Vec<u8>,
}

impl DirectAppender {
    /// The state of a file whose bytes end at `size_bytes`, read back (through `reader`, a
    /// buffered handle: direct reads would need aligned lengths too) from its last partial
    /// block.
    pub(crate) fn resume(reader: &dyn StorageFile, size_bytes: u64) -> io::Result<DirectAppender> {
        let tail_len = (size_bytes % BLOCK_BYTES as u64) as usize;
        let mut tail = vec![0; tail_len];
        if tail_len > 0 {
            let n_read = read_fully_at(reader, &mut tail, size_bytes - tail_len as u64)?;
            if n_read != tail_len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shorter than its records",
                ));
            }
        }
        Ok(DirectAppender { tail })
    }

    /// Starts `buf` for a group whose frames take `frames_len` bytes: room for all of it
    /// (so that appending the frames does not move the buffer), zeros up to an aligned
    /// address, then the tail. Returns where the frames go.
    pub(crate) fn begin(&self, buf: &mut Vec<u8>, frames_len: usize) -> usize {
        buf.clear();
        buf.reserve(BLOCK_BYTES + self.tail.len() + frames_len + BLOCK_BYTES);
        let pad = buf.as_ptr().align_offset(BLOCK_BYTES).min(BLOCK_BYTES);
        buf.resize(pad, 0);
        buf.extend_from_slice(&self.tail);
        buf.len()
    }

    /// Writes the frames appended to `buf` after [`DirectAppender::begin`] returned
    /// `frames_start`, at `position` (the segment's current size). The tail moves on only
    /// if the write succeeds.
    pub(crate) fn write(
        &mut self,
        file: &dyn StorageFile,
        position: u64,
        buf: &mut Vec<u8>,
        frames_start: usize,
    ) -> io::Result<()> {
        let tail_len = self.tail.len();
        debug_assert_eq!(tail_len as u64, position % BLOCK_BYTES as u64);
        let mut pad = frames_start - tail_len;
        let len = buf.len() - pad;
        let padded_len = len.next_multiple_of(BLOCK_BYTES);
        buf.resize(pad + padded_len, 0);
        if buf.as_ptr().wrapping_add(pad).align_offset(BLOCK_BYTES) != 0 {
            // `begin` reserved room for the frames, so the buffer never moved; if it had,
            // laying the bytes out again keeps the write legal.
            let mut moved: Vec<u8> = Vec::with_capacity(padded_len + BLOCK_BYTES);
            let new_pad = moved.as_ptr().align_offset(BLOCK_BYTES).min(BLOCK_BYTES);
            moved.resize(new_pad, 0);
            moved.extend_from_slice(buf.get(pad..).unwrap_or_default());
            *buf = moved;
            pad = new_pad;
        }
        let start = position - tail_len as u64;
        file.write_all_at(buf.get(pad..).unwrap_or_default(), start)?;
        let new_tail_len = len % BLOCK_BYTES;
        self.tail.clear();
        self.tail.extend_from_slice(
            buf.get(pad + len - new_tail_len..pad + len)
                .unwrap_or_default(),
        );
        Ok(())
    }
}

/// Opens the active WAL segment at `path` (created if missing) whose WAL bytes end at
/// `size_bytes`: for direct IO when `direct` and the storage can do it, else buffered.
/// Returns the file and, for direct writes, their state.
pub(crate) fn open_active(
    storage: &dyn Storage,
    path: &Path,
    size_bytes: u64,
    direct: bool,
) -> io::Result<(Arc<dyn StorageFile>, Option<DirectAppender>)> {
    let file = if direct {
        storage.open_direct(path, true)?
    } else {
        None
    };
    let Some(file) = file else {
        return Ok((storage.open(path, true)?, None));
    };
    let appender = if size_bytes.is_multiple_of(BLOCK_BYTES as u64) {
        DirectAppender { tail: Vec::new() }
    } else {
        DirectAppender::resume(storage.open(path, false)?.as_ref(), size_bytes)?
    };
    Ok((file, Some(appender)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::OsStorage;

    /// Groups of every size land as if appended, and the tail follows the end.
    #[test]
    fn aligned_writes_read_back_as_appends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wal");
        let storage = OsStorage;
        let (file, direct) = open_active(&storage, &path, 0, true).expect("open");
        let Some(mut direct) = direct else {
            return; // this file system cannot do direct IO: nothing to test here
        };
        let mut expected = Vec::new();
        let mut buf = Vec::new();
        for (i, len) in [1usize, 4095, 1, 4096, 9000, 3, 0, 12_288]
            .into_iter()
            .enumerate()
        {
            let frames: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8 | 1).collect();
            let frames_start = direct.begin(&mut buf, frames.len());
            buf.extend_from_slice(&frames);
            direct
                .write(file.as_ref(), expected.len() as u64, &mut buf, frames_start)
                .expect("write");
            expected.extend_from_slice(&frames);
        }
        let size = file.size_bytes().expect("size");
        assert_eq!(
            size,
            (expected.len() as u64).next_multiple_of(BLOCK_BYTES as u64)
        );
        // Read through a buffered handle: direct reads need aligned buffers too.
        let reader = storage.open(&path, false).expect("open to read");
        let mut read = vec![0; size as usize];
        read_fully_at(reader.as_ref(), &mut read, 0).expect("read");
        assert_eq!(read.get(..expected.len()), Some(expected.as_slice()));
        assert!(
            read.get(expected.len()..)
                .unwrap_or_default()
                .iter()
                .all(|b| *b == 0)
        );
        // Reopened at the same end, the tail is read back and appends go on.
        drop(file);
        let (file, direct) =
            open_active(&storage, &path, expected.len() as u64, true).expect("reopen");
        let Some(mut direct) = direct else {
            panic!("direct IO worked a moment ago");
        };
        let frames_start = direct.begin(&mut buf, 4);
        buf.extend_from_slice(b"more");
        direct
            .write(file.as_ref(), expected.len() as u64, &mut buf, frames_start)
            .expect("write");
        expected.extend_from_slice(b"more");
        let mut read = vec![0; expected.len()];
        read_fully_at(reader.as_ref(), &mut read, 0).expect("read");
        assert_eq!(read, expected);
    }
}
