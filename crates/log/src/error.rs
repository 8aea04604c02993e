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
    /// A storage call failed. Writes that fail this way also poison the log.
    #[error("storage error during {op} on {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An earlier write or fsync failed; the log refuses every write until it is reopened
    /// (and recovery has found out what really reached the disk).
    #[error("the log is poisoned by an earlier storage failure; reopen it to recover")]
    Poisoned,
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
    /// Maps an `io::Error` from `op` on `path` into [`LogError::Io`].
    pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LogError {
        let path = path.to_path_buf();
        move |source| LogError::Io { op, path, source }
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
