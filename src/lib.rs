//! ringdb: an embedded storage engine for Linux, one io_uring per core.
//!
//! One thread per shard owns a slice of the keys, its own io_uring and its
//! own write-ahead log, written with O_DIRECT in group-committed batches.
//! Clients call from any thread, blocking or async: writes travel to the
//! owning shard over a channel; reads go straight to the shard's concurrent
//! index and never wait for the shard thread.
//!
//! ```
//! use ringdb::{Db, Options, WriteBatch};
//!
//! let dir = tempfile::tempdir()?;
//! let db = Db::open(dir.path(), Options::default())?;
//! db.put(b"apple", b"red")?;
//! let mut batch = WriteBatch::new();
//! batch.put(b"banana", b"yellow")?.delete(b"apple")?;
//! db.write_batch(batch)?;
//! assert_eq!(db.get(b"apple")?, None);
//! assert_eq!(db.get(b"banana")?.as_deref(), Some(&b"yellow"[..]));
//! db.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Typed tables ([`Table`]) hold fixed-layout records (`bytemuck::Pod` types
//! declared with [`record!`](crate::record!)) addressed by a `u64` index, read in place with no
//! deserialization, in the same shards.
//!
//! Layers, top to bottom, each using only those below it (`docs/ARCHITECTURE.md`,
//! "Layers"; `tests/code_layers.rs` checks it): the API (`db`, `table`,
//! `transaction`, `blob`) → `engine` (what the API types share: shards, registry,
//! limits; writes, commits, reads, scans, typed tables) → `shard` (one thread per
//! shard: loop, writes, reads, recovery, checkpoints, transactions, locks) →
//! `storage` (directory, index, pages, log, segment files) → `io` (io_uring,
//! portable or simulated backend; the file system) and `format` (pure encoders and
//! decoders). `key`, `options`, `stats`, `value`, `batch` and `error` are the
//! vocabulary every layer above them may use. [`verify`], beside the API, checks a
//! directory offline: it reads the files with `std::fs` and decodes them with `format`
//! alone.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
// Pedantic lints chosen for the library (not its tests); each exception is a local
// `#[expect(.., reason = "..")]`. A function fits on a screen: at most 100 lines.
#![warn(clippy::too_many_lines)]
// Integer casts: offsets, LSNs and lengths on disk must not wrap, lose their sign or be
// truncated silently; a widening cast is written `From` so it cannot become a narrowing one.
// `cast_possible_truncation` is not in the set yet: most of its hits are `u64` offsets
// narrowed to `usize` on a 64-bit-only engine, each to be made a `try_from` or a local
// `expect` with its bound, which is more than a lint pass should change at once.
#![warn(clippy::cast_lossless, clippy::cast_sign_loss, clippy::cast_possible_wrap, clippy::checked_conversions)]
// Pointers handed to the kernel and to io_uring: take them with `&raw`, never through a
// temporary reference, and keep their type and constness explicit.
#![warn(clippy::borrow_as_ptr, clippy::ptr_as_ptr, clippy::ptr_cast_constness)]
// Control flow that says what it means: a skipped variant or a fallthrough `else` is
// where a new record kind or error case gets silently ignored.
#![warn(
    clippy::single_match_else,
    clippy::match_wildcard_for_single_variants,
    clippy::manual_let_else,
    clippy::option_option,
    clippy::semicolon_if_nothing_returned
)]
// Ownership and copies on the hot path: no value moved where a borrow does, no clone
// where an in-place copy does, no `self` that is never read.
#![warn(
    clippy::needless_pass_by_value,
    clippy::assigning_clones,
    clippy::implicit_clone,
    clippy::cloned_instead_of_copied,
    clippy::unused_self,
    clippy::trivially_copy_pass_by_ref,
    clippy::large_types_passed_by_value,
    clippy::ref_option
)]
// Code that fails only at run time, on a rare path: an `Instant` minus a `Duration` that
// underflows, a bound check that an upcast makes always true, a pointer cast to a stricter
// alignment, an iterator with no end. Invariants are written as `assert!` so they read as such.
#![warn(
    clippy::unchecked_time_subtraction,
    clippy::invalid_upcast_comparisons,
    clippy::cast_ptr_alignment,
    clippy::maybe_infinite_iter,
    clippy::manual_assert
)]
// Nothing that looks used but is not: a `Result` that is always `Ok`, an `async fn` with no
// `.await`, a binding named unused that is read, a `()` pattern written as `_`.
#![warn(
    clippy::unnecessary_wraps,
    clippy::unused_async,
    clippy::used_underscore_binding,
    clippy::ignored_unit_patterns
)]
// Debug output of state that is inspected after a failure must not hide fields.
#![warn(clippy::missing_fields_in_debug)]
// Plain, uniform code is easier to review: iterate and format the same way everywhere.
#![warn(
    clippy::redundant_closure_for_method_calls,
    clippy::explicit_iter_loop,
    clippy::explicit_into_iter_loop,
    clippy::uninlined_format_args,
    clippy::needless_for_each
)]

mod batch;
mod blob;
mod db;
mod engine;
mod error;
mod failpoint;
pub mod format;
mod io;
mod key;
mod options;
mod shard;
mod stats;
mod storage;
mod table;
mod transaction;
mod value;
pub mod verify;

pub use batch::WriteBatch;
pub use blob::{
    BLOB_SEGMENT_BYTES_MAX, BLOB_SEGMENT_BYTES_MIN, BlobDropEvent, BlobLog, BlobOptions, BlobPersistEvent,
    BlobRotateEvent, BlobTransaction, Location, SegmentInfo,
};
pub use db::Db;
pub use engine::scan::SCAN_CHUNK;
/// From [`Db::scan`] and [`Db::scan_prefix`]; each item is a `(key, value)` or the error
/// that ended the scan.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let db = ringdb::Db::open(dir.path(), ringdb::Options::default())?;
/// for (i, name) in ["ant", "bee", "cat", "cow"].into_iter().enumerate() {
///     db.put(name, [u8::try_from(i)?])?;
/// }
/// let mut found = Vec::new();
/// for entry in db.scan_prefix("c") {
///     let (key, value) = entry?;
///     found.push((String::from_utf8(key.to_vec())?, value[0]));
/// }
/// assert_eq!(found, [("cat".to_string(), 2), ("cow".to_string(), 3)]);
/// // The first two keys from "b" on: an iterator like any other.
/// let keys: Vec<ringdb::Value> = db.scan(b"b"..).take(2).map(|e| e.map(|(k, _)| k)).collect::<ringdb::Result<_>>()?;
/// assert_eq!(keys, [b"bee", b"cat"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(inline)]
pub use engine::scan::Scan;
pub use error::{Error, Result};
#[cfg(feature = "sim")]
pub use io::sim::{CrashMode, SECTOR_BYTES, SimDisk, SimFaults, SimStats};
pub use key::{KEY_BYTES_MAX, KeyBounds};
pub use options::{
    Durability, IoBackend, Options, PersistCallback, PersistEvent, WAL_SEGMENT_BYTES_MAX, WAL_SEGMENT_BYTES_MIN,
    WalSync,
};
pub use stats::{OpKind, Stats};
#[doc(hidden)]
pub use table::field_size;
pub use table::{Field, Record, Schema, Table, TableScan};
pub use transaction::{
    CommitInfo, TRANSACT_ATTEMPTS_MAX, TRANSACT_BACKOFF_FIRST, TRANSACT_BACKOFF_MAX, TRANSACT_OPTIMISTIC_ATTEMPTS,
    Transaction,
};
pub use value::{Ack, Value};

/// Longest value accepted, in bytes.
pub const VALUE_BYTES_MAX: usize = 16 * 1024 * 1024;

// The README's Rust snippets, compiled and run as doctests (`cargo test --doc`).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme_doctests {}
