//! Storage IO behind a small trait, and its real implementation on the local file system.
//!
//! Every byte the log reads or writes goes through [`Storage`] and [`StorageFile`], so a
//! seeded simulation can stand in for the disk (torn writes, failed fsyncs, bit flips, a
//! full disk) and a test can count fsyncs. The trait is positional (`read_at`,
//! `write_all_at`): the log always knows where it writes, so no file has a cursor.
//!
//! Errors are plain `io::Error`s; the log maps `ErrorKind::StorageFull` (and
//! `QuotaExceeded`) to `LogError::StorageFull` and everything else to `LogError::Io`, so an
//! implementation reports a full disk with that kind (`ENOSPC` does so by itself).
//!
//! This module does not cache handles (see `files`), retry failed calls, or interpret bytes.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, OnceLock, mpsc};

/// The file system operations the log needs.
pub trait Storage: Send + Sync + 'static {
    /// Opens `path` for reading and writing; creates an empty file if `create` and it is
    /// missing. Fails with `io::ErrorKind::NotFound` if it is missing and not `create`.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>>;
    /// Opens `path` as [`Storage::open`] does, for direct IO: every write must then come
    /// from a buffer aligned to 4,096 bytes, at a position and of a length that are
    /// multiples of 4,096. `None` if this storage (or its file system) cannot do direct IO.
    /// Default: `None`.
    fn open_direct(&self, _path: &Path, _create: bool) -> io::Result<Option<Arc<dyn StorageFile>>> {
        Ok(None)
    }
    /// Creates `path` and any missing parents (not durable until `sync_dir` of the parent).
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// The names (not paths) of the entries in directory `path`, in no particular order.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes `path` as [`Storage::remove_file`] does (the name is gone when it returns),
    /// but may free the file's blocks later, off the caller's thread, so that removing a
    /// large file does not stall the writer. Default: `remove_file`.
    fn remove_file_soon(&self, path: &Path) -> io::Result<()> {
        self.remove_file(path)
    }
    /// Removes the empty directory `path`.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Atomically renames `from` to `to`, replacing `to` if it is a file.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the entries of directory `path` (creations, removals, renames) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on the file `path` (created if missing) for as long as the
    /// returned guard lives; fails with `io::ErrorKind::WouldBlock` at once if another
    /// holder has it. A crash of the holder releases it (`flock` semantics).
    fn lock(&self, path: &Path) -> io::Result<StorageLock>;
}

/// Holds a lock taken with [`Storage::lock`] until dropped.
pub type StorageLock = Box<dyn std::any::Any + Send + Sync>;

/// One open file.
pub trait StorageFile: Send + Sync {
    /// Reads into `buf` from `position`; returns the bytes read (0 at or past the end).
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `position`, growing the file as needed.
    fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()>;
    /// Makes the file's data (and the metadata needed to read it back) durable: fdatasync.
    fn sync_data(&self) -> io::Result<()>;
    /// Starts writing `len` bytes from `position` back to the disk without waiting for it,
    /// so that a later [`StorageFile::sync_data`] has little left to write. Only a hint:
    /// nothing is durable until `sync_data`, and failures are ignored. Default: nothing.
    fn start_writeback(&self, _position: u64, _len: u64) {}
    /// Whether the operating system's cache holds every byte of `len` bytes from
    /// `position` (so a read would not wait for the disk). A guess that may be stale at
    /// once; only for choosing how to read. Default: `true` (read as usual).
    fn is_cached(&self, _position: u64, _len: u64) -> bool {
        true
    }
    /// Reads into `buf` from `position` with direct IO, bypassing the operating system's
    /// cache: `buf`'s address, its length and `position` must be multiples of 4,096. Returns
    /// the bytes read (fewer only at the end of the file), or `None` if direct IO is not
    /// possible here (the caller then reads with `read_at`). Default: `None`.
    fn read_direct_at(&self, _buf: &mut [u8], _position: u64) -> io::Result<Option<usize>> {
        Ok(None)
    }
    /// The current length of the file.
    fn size_bytes(&self) -> io::Result<u64>;
    /// Truncates or extends the file to `size_bytes`.
    fn set_size_bytes(&self, size_bytes: u64) -> io::Result<()>;
}

/// Reads as many bytes as possible into `buf` from `position` (stops early only at the end
/// of the file); returns how many were read.
pub(crate) fn read_fully_at(
    file: &dyn StorageFile,
    buf: &mut [u8],
    position: u64,
) -> io::Result<usize> {
    let mut n_read = 0;
    while n_read < buf.len() {
        let Some(rest) = buf.get_mut(n_read..) else {
            break;
        };
        let n = match file.read_at(rest, position + n_read as u64) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        n_read += n;
    }
    Ok(n_read)
}

/// Removes every file in directory `path`, then the directory (one level: the log never
/// nests directories below a log's directory).
pub(crate) fn remove_dir_with_files(storage: &dyn Storage, path: &Path) -> io::Result<()> {
    for name in storage.list_dir(path)? {
        storage.remove_file(&path.join(name))?;
    }
    storage.remove_dir(path)
}

/// [`Storage`] on the operating system's file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsStorage;

struct OsFile {
    file: File,
    path: std::path::PathBuf,
    /// A second descriptor of the same file, opened with `O_DIRECT` on the first direct
    /// read (`None` inside: direct IO is not possible for this file).
    direct: OnceLock<Option<File>>,
}

impl Storage for OsStorage {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(OsFile::new(file, path)))
    }

    #[cfg(target_os = "linux")]
    fn open_direct(&self, path: &Path, create: bool) -> io::Result<Option<Arc<dyn StorageFile>>> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .custom_flags(libc::O_DIRECT)
            .open(path);
        match opened {
            Ok(file) => Ok(Some(Arc::new(OsFile::new(file, path)))),
            // The file system cannot do direct IO (tmpfs before Linux 6.6, some FUSE file
            // systems).
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            // Names that are not UTF-8 were not written by the log; skip them.
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_file_soon(&self, path: &Path) -> io::Result<()> {
        // Unlinking a file nobody has open frees its blocks inside `unlink`: about 200 ms
        // for a 128 MiB WAL segment on ext4, during which the log writer (and so every
        // append) waited. With a descriptor still open, `unlink` only drops the name and
        // the kernel frees the blocks at the last `close`, which the closer thread does.
        let held = match OpenOptions::new().write(true).open(path) {
            Ok(file) => Some(file),
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Err(error),
            Err(_) => None, // remove it the slow way
        };
        fs::remove_file(path)?;
        if let Some(file) = held {
            close_soon(file);
        }
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn lock(&self, path: &Path) -> io::Result<StorageLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // `flock(LOCK_EX | LOCK_NB)`: per open file, so a second `Log` in the same process
        // is refused too, and the kernel drops it when the process dies.
        match file.try_lock() {
            Ok(()) => Ok(Box::new(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            Err(std::fs::TryLockError::Error(error)) => Err(error),
        }
    }
}

/// Frees an unlinked file's blocks a few MiB at a time, from the end, then closes it.
/// Freeing a 128 MiB file in one go held ext4's journal for about 200 ms, and the WAL's
/// fdatasync waited behind it; small truncations keep each journal handle short.
fn release(file: File) {
    const STEP_BYTES: u64 = 4 * 1024 * 1024;
    if let Ok(metadata) = file.metadata() {
        let mut len = metadata.len();
        while len > STEP_BYTES {
            len -= STEP_BYTES;
            if file.set_len(len).is_err() {
                break;
            }
        }
    }
    drop(file);
}

/// Closes `file` on the closer thread (started on first use, alive for the process), or
/// here if that thread cannot be started.
fn close_soon(file: File) {
    static CLOSER: OnceLock<Option<mpsc::Sender<File>>> = OnceLock::new();
    let closer = CLOSER.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<File>();
        std::thread::Builder::new()
            .name("millrace-log-close".into())
            .spawn(move || {
                for file in receiver {
                    release(file);
                }
            })
            .ok()
            .map(|_| sender)
    });
    // A failed send hands the file back inside the error, which closes it here.
    if let Some(sender) = closer {
        let _ = sender.send(file);
    }
}

impl OsFile {
    fn new(file: File, path: &Path) -> OsFile {
        OsFile {
            file,
            path: path.to_owned(),
            direct: OnceLock::new(),
        }
    }
}

impl StorageFile for OsFile {
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        self.file.read_at(buf, position)
    }

    fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        self.file.write_all_at(buf, position)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    #[cfg(target_os = "linux")]
    fn start_writeback(&self, position: u64, len: u64) {
        use std::os::fd::AsRawFd as _;
        let (Ok(position), Ok(len)) = (i64::try_from(position), i64::try_from(len)) else {
            return;
        };
        // sync_file_range(2) with SYNC_FILE_RANGE_WRITE: queue the range's dirty pages for
        // writeback and return (RocksDB's `bytes_per_sync` does the same). std has no
        // wrapper for it. The result is ignored: this is a hint.
        // SAFETY: the descriptor belongs to `self.file`, open for as long as `self`; the
        // call passes no memory.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                position,
                len,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }

    #[cfg(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    fn is_cached(&self, position: u64, len: u64) -> bool {
        use std::os::fd::AsRawFd as _;
        // cachestat(2) (Linux 6.5): how many pages of a range are in the page cache,
        // without reading anything. libc has no wrapper or number for it on every
        // architecture; 451 is its number in the generic table x86_64 and aarch64 share.
        // (preadv2 with RWF_NOWAIT answers the same question but starts readahead into the
        // cache on a miss, which is what reading directly avoids.)
        #[repr(C)]
        struct Range {
            off: u64,
            len: u64,
        }
        #[repr(C)]
        #[derive(Default)]
        struct Stat {
            nr_cache: u64,
            nr_dirty: u64,
            nr_writeback: u64,
            nr_evicted: u64,
            nr_recently_evicted: u64,
        }
        const SYS_CACHESTAT: libc::c_long = 451;
        const PAGE: u64 = 4096;
        if len == 0 {
            return true;
        }
        let first_page = position / PAGE;
        let end_page = (position + len).div_ceil(PAGE);
        let range = Range {
            off: first_page * PAGE,
            len: (end_page - first_page) * PAGE,
        };
        let mut stat = Stat::default();
        // SAFETY: the descriptor belongs to `self.file`, open for as long as `self`; the
        // kernel reads `range` and writes `stat`, both live and of the layout cachestat(2)
        // defines, for the duration of the call.
        let result = unsafe {
            libc::syscall(
                SYS_CACHESTAT,
                self.file.as_raw_fd(),
                &range as *const Range,
                &mut stat as *mut Stat,
                0,
            )
        };
        // Any failure (ENOSYS before 6.5): read as usual.
        result != 0 || stat.nr_cache >= end_page - first_page
    }

    #[cfg(target_os = "linux")]
    fn read_direct_at(&self, buf: &mut [u8], position: u64) -> io::Result<Option<usize>> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let direct = self.direct.get_or_init(|| {
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(&self.path)
                .ok()
        });
        let Some(direct) = direct else {
            return Ok(None);
        };
        let mut n_read = 0;
        while let Some(rest) = buf.get_mut(n_read..)
            && !rest.is_empty()
        {
            match direct.read_at(rest, position + n_read as u64) {
                Ok(0) => break,
                // A direct read ends short only at the end of the file (which need not be
                // aligned); anything else left would be unaligned to go on with.
                Ok(n) if n % crate::direct::BLOCK_BYTES != 0 => {
                    n_read += n;
                    break;
                }
                Ok(n) => n_read += n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                // The file system refuses direct reads after all: read buffered.
                Err(error) if error.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
                Err(error) => return Err(error),
            }
        }
        Ok(Some(n_read))
    }

    fn size_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_size_bytes(&self, size_bytes: u64) -> io::Result<()> {
        self.file.set_len(size_bytes)
    }
}
