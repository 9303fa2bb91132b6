//! The paged store of a shard (seed 000's design), being built: records in pages
//! padded to the page unit, a page cache, a free-space heap, and copy-on-write
//! checkpoints that let the log be truncated. See `docs/design/paged-store.md`.
//!
//! - `alloc`: the data file's extent allocator with copy-on-write release.

#![allow(dead_code, reason = "building blocks of the paged store, wired into the shard in a later change")]

pub mod alloc;
