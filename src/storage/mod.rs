//! Storage: what a shard keeps on disk and how it reads it back.
//!
//! - `dir`: the database directory, its lock and its manifest.
//! - `index`: a shard's index (key to value and version, and the key order).
//! - `page`: the paged store (seed 000's pages, the page cache, copy-on-write
//!   checkpoints).
//! - `wal`: the write-ahead log (segments, group-committing writer, recovery).
//! - `segment`: segment files, shared by the log and the blob log (creation,
//!   listing, erasing a range, cutting a torn tail into a quarantine file).
//!
//! Storage sits above `format` (pure encoders and decoders) and `io` (the
//! file system and the shard's ring), and below `shard`, which owns its
//! mutable state.

pub mod dir;
pub mod index;
pub mod page;
pub mod segment;
pub mod tree;
pub mod wal;
