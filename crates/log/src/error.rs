//! The one error type of the log crate, [`LogError`].
//!
//! Variants are structured (what failed, where, which limit) so the service layer can map
//! them to its own errors with one `match`; none carries a free-form message. This module
//! does not decide what a caller should do about an error.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A storage call failed. A failed write before the fsync (the WAL is cut back to its
    /// last acknowledged frame) or a failed read leaves the log usable; a failed fsync, or a
    /// failure that leaves the files in a state the writer cannot tell, also poisons it
    /// (later writes get [`LogError::Poisoned`]).
    #[error("storage error during {op} on {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file system is full (`ENOSPC`, or the disk quota is spent: `EDQUOT`). Nothing of
    /// the failed call was acknowledged, the log is not poisoned, reads keep working, and
    /// writes succeed again once space is freed (deleting logs frees space too). Retryable.
    #[error("no space left on the device during {op} on {}", path.display())]
    StorageFull { op: &'static str, path: PathBuf },
    /// An earlier fsync failed (or a write failed in a way that left the files in an unknown
    /// state); the log refuses every write until it is reopened (and recovery has found out
    /// what really reached the disk). Reads keep working.
    #[error("the log is poisoned by an earlier storage failure; reopen it to recover")]
    Poisoned,
    /// Another `Log` (in this process or another) has the directory open: its lock file is
    /// locked (`flock`). Raised by `Log::open` only.
    #[error("the log directory {} is in use by another process", path.display())]
    Locked { path: PathBuf },
    /// The log does not exist (never created, or deleted).
    #[error("unknown log {log_id}")]
    UnknownLog { log_id: crate::LogId },
    /// One record's payload is larger than `LogConfig::record_bytes_max`.
    #[error("record of {size_bytes} bytes exceeds the limit of {size_bytes_max} bytes")]
    RecordTooLarge {
        size_bytes: usize,
        size_bytes_max: usize,
    },
    /// One `append` call holds more records than [`crate::APPEND_RECORDS_MAX`].
    #[error("append of {n_records} records exceeds the limit of {n_records_max}")]
    TooManyRecords {
        n_records: usize,
        n_records_max: usize,
    },
    /// One `append` call holds more payload bytes than [`crate::APPEND_BYTES_MAX`].
    #[error("append of {size_bytes} payload bytes exceeds the limit of {size_bytes_max} bytes")]
    AppendTooLarge {
        size_bytes: usize,
        size_bytes_max: usize,
    },
    /// Data on disk broke an invariant (checksum, framing, offsets). It is never served.
    #[error("corrupt data in {} at byte {position}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: &'static str,
    },
    /// `shutdown` was called (or the writer thread is gone).
    #[error("the log is closed")]
    Closed,
    /// `LogConfig` breaks one of its documented relations.
    #[error("invalid log configuration: {reason}")]
    InvalidConfig { reason: &'static str },
}

impl LogError {
    /// Maps an `io::Error` from `op` on `path` into [`LogError::Io`], or into
    /// [`LogError::StorageFull`] when the file system is out of space or quota.
    pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LogError {
        let path = path.to_path_buf();
        move |source| match source.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                LogError::StorageFull { op, path }
            }
            _ => LogError::Io { op, path, source },
        }
    }

    /// A copy of this error, for answering every request of a failed group with it
    /// (`io::Error` is not `Clone`; the copy keeps its kind and message).
    pub(crate) fn duplicate(&self) -> LogError {
        match self {
            LogError::Io { op, path, source } => LogError::Io {
                op,
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            LogError::StorageFull { op, path } => LogError::StorageFull {
                op,
                path: path.clone(),
            },
            LogError::Poisoned => LogError::Poisoned,
            LogError::Locked { path } => LogError::Locked { path: path.clone() },
            LogError::UnknownLog { log_id } => LogError::UnknownLog { log_id: *log_id },
            LogError::RecordTooLarge {
                size_bytes,
                size_bytes_max,
            } => LogError::RecordTooLarge {
                size_bytes: *size_bytes,
                size_bytes_max: *size_bytes_max,
            },
            LogError::TooManyRecords {
                n_records,
                n_records_max,
            } => LogError::TooManyRecords {
                n_records: *n_records,
                n_records_max: *n_records_max,
            },
            LogError::AppendTooLarge {
                size_bytes,
                size_bytes_max,
            } => LogError::AppendTooLarge {
                size_bytes: *size_bytes,
                size_bytes_max: *size_bytes_max,
            },
            LogError::Corrupt {
                path,
                position,
                reason,
            } => LogError::Corrupt {
                path: path.clone(),
                position: *position,
                reason,
            },
            LogError::Closed => LogError::Closed,
            LogError::InvalidConfig { reason } => LogError::InvalidConfig { reason },
        }
    }

    pub(crate) fn corrupt(path: &Path, position: u64, reason: &'static str) -> LogError {
        LogError::Corrupt {
            path: path.to_path_buf(),
            position,
            reason,
        }
    }
}

/// Shorthand used by the crate internals.
pub(crate) type Result<T, E = LogError> = std::result::Result<T, E>;
