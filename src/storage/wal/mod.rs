//! The write-ahead log of a shard: every change is in it before it is acknowledged.
//!
//! - `segment`: creating preallocated, zero-filled segment files, and their sizes (they
//!   grow from 64 KiB to `Options::wal_segment_bytes`).
//! - `writer`: appending records, group commit, rotation, poisoning on failure.
//! - `recovery`: replay on open, torn-tail cut and quarantine, corruption reports.
//!
//! A segment is `<shard>/wal/<seq as 16 hex digits>.log`: one header block, then
//! records back to back (see `format::record`), zeros after the last one.
//! Segments are not reused: once a durable checkpoint covers every record of an
//! older segment, the segment is deleted (`WalWriter::drop_segments_through`).

pub mod recovery;
pub mod segment;
pub mod writer;
