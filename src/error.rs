//! The one error type of ringdb.
//!
//! Every failure the world can cause (I/O errors, corruption, refused kernel
//! features, bad input, a second process) is an [`Error`]; panics are kept for
//! ringdb's own bugs. Messages say what happened, where, and what to do.
//! `Error` is `Clone` because one failed log flush answers every caller of its
//! batch with the same error.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Result alias used across ringdb.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in ringdb. Its `Display` says what happened, where, and
/// what to do; match on the variant to act on it.
///
/// ```
/// use ringdb::{Db, Error, KEY_BYTES_MAX, Options};
///
/// let dir = tempfile::tempdir()?;
/// let db = Db::open(dir.path(), Options::default())?;
/// let long_key = vec![b'k'; KEY_BYTES_MAX + 1];
/// match db.put(&long_key, "v") {
///     Err(Error::KeyTooLarge { len, max }) => assert_eq!((len, max), (KEY_BYTES_MAX + 1, KEY_BYTES_MAX)),
///     other => panic!("expected KeyTooLarge, got {other:?}"),
/// }
/// // The directory stays locked while `db` is open, also to this process.
/// let err = Db::open(dir.path(), Options::default()).err().expect("the directory is locked");
/// assert!(matches!(err, Error::Locked { .. }), "{err}");
/// db.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// A key longer than [`crate::KEY_BYTES_MAX`].
    KeyTooLarge {
        /// Length of the key given.
        len: usize,
        /// Largest length accepted.
        max: usize,
    },
    /// A value longer than [`crate::VALUE_BYTES_MAX`].
    ValueTooLarge {
        /// Length of the value given.
        len: usize,
        /// Largest length accepted.
        max: usize,
    },
    /// A write batch whose encoded size exceeds what one log record may hold.
    BatchTooLarge {
        /// Encoded size of the batch in bytes.
        bytes: usize,
        /// Largest encoded size accepted in bytes.
        max: usize,
    },
    /// An argument or option that cannot work (the message says which and why).
    InvalidArgument(String),
    /// An operating-system call failed.
    Io {
        /// What ringdb was doing.
        op: &'static str,
        /// The file or directory involved, when there is one.
        path: Option<PathBuf>,
        /// The operating system's error.
        source: Arc<io::Error>,
    },
    /// Bytes on disk that fail their checksum or do not decode, before the log's tail.
    Corruption {
        /// The file holding the bad bytes.
        file: PathBuf,
        /// Byte offset of the bad structure in `file`.
        offset: u64,
        /// What was wrong.
        what: String,
    },
    /// Another process (or another `Db` in this one) holds the directory's lock.
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The kernel or a sandbox refused io_uring.
    IoUringUnavailable {
        /// The error from `io_uring_setup`.
        source: Arc<io::Error>,
    },
    /// The filesystem refused O_DIRECT.
    DirectIoUnsupported {
        /// The file that could not be opened with O_DIRECT.
        path: PathBuf,
        /// The error from `open`.
        source: Arc<io::Error>,
    },
    /// The directory was written by an incompatible format or with other settings.
    Incompatible(String),
    /// A log flush failed; the shard accepts no more writes until the database is reopened.
    Poisoned {
        /// The shard that failed.
        shard: usize,
        /// The failure that poisoned it.
        cause: String,
    },
    /// A typed table opened with a record layout other than the one it was created with.
    SchemaMismatch {
        /// The table's name.
        table: String,
        /// The layout recorded in the table.
        stored: String,
        /// The layout of the type it was opened with.
        requested: String,
    },
    /// The database was closed.
    Closed,
    /// A transaction could not commit because another one (or a plain write) changed or
    /// locked what it read or writes. Nothing of it was written; run it again
    /// ([`crate::Db::transact`] does so with backoff).
    Conflict {
        /// The shard that found the conflict.
        shard: usize,
        /// What conflicted.
        what: &'static str,
    },
    /// A transaction grew past [`crate::Options::tx_keys_max`] keys or
    /// [`crate::Options::tx_bytes_max`] bytes. Not retryable: split the work.
    TransactionTooLarge {
        /// `"keys"` or `"bytes"`.
        what: &'static str,
        /// How many it would hold.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<Option<PathBuf>>, source: io::Error) -> Error {
        Error::Io { op, path: path.into(), source: Arc::new(source) }
    }

    /// Whether the error is a transaction conflict, which running the transaction again
    /// may resolve.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    /// The OS error kind behind this error, if it is an I/O error.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io { source, .. }
            | Error::IoUringUnavailable { source }
            | Error::DirectIoUnsupported { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::KeyTooLarge { len, max } => write!(f, "key of {len} bytes is longer than the limit of {max} bytes"),
            Error::ValueTooLarge { len, max } => {
                write!(f, "value of {len} bytes is longer than the limit of {max} bytes")
            }
            Error::BatchTooLarge { bytes, max } => write!(
                f,
                "write batch encodes to {bytes} bytes, more than the {max} bytes one log record may hold \
                 (split the batch, or raise Options::wal_segment_bytes)"
            ),
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::Io { op, path: Some(path), source } => write!(f, "{op} {}: {source}", path.display()),
            Error::Io { op, path: None, source } => write!(f, "{op}: {source}"),
            Error::Corruption { file, offset, what } => {
                write!(f, "corruption in {} at offset {offset}: {what}", file.display())
            }
            Error::Locked { path } => {
                write!(f, "database is locked by another process or handle ({}): close it first", path.display())
            }
            Error::IoUringUnavailable { source } => write!(
                f,
                "io_uring is not available here ({source}; a seccomp profile or kernel.io_uring_disabled?): \
                 open with Options::io_backend(IoBackend::Portable)"
            ),
            Error::DirectIoUnsupported { path, source } => write!(
                f,
                "the filesystem of {} refuses O_DIRECT ({source}; tmpfs, ramfs?): open with Options::direct_io(false)",
                path.display()
            ),
            Error::Incompatible(what) => write!(f, "incompatible database: {what}"),
            Error::Poisoned { shard, cause } => write!(
                f,
                "shard {shard} refuses writes after a failed log flush ({cause}); reopen the database to recover"
            ),
            Error::SchemaMismatch { table, stored, requested } => write!(
                f,
                "table `{table}` holds records of layout {stored}, but was opened with layout {requested}: \
                 open it with the type it was created with, or bump the schema version and use another table"
            ),
            Error::Closed => write!(f, "the database is closed"),
            Error::Conflict { shard, what } => {
                write!(f, "transaction conflict on shard {shard} ({what}); nothing was written, run it again")
            }
            Error::TransactionTooLarge { what, len, max } => write!(
                f,
                "transaction of {len} {what} exceeds the limit of {max} (split it, or raise Options::tx_{what}_max)"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. }
            | Error::IoUringUnavailable { source }
            | Error::DirectIoUnsupported { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}
