//! The paged store of a shard (seed 000's design): records in pages padded to
//! the page unit, a page cache, a free-space heap, and copy-on-write
//! checkpoints that let the log be truncated.
//!
//! - `alloc`: the data file's extent allocator with copy-on-write release.
//! - `cache`: the page cache, read by any thread, CLOCK eviction.
//! - `disk`: reads of pages and chunks on callers' threads, offers to the cache.
//! - `store`: pages, placement, checkpoints, and reading a checkpoint back.

pub mod alloc;
pub mod cache;
pub mod disk;
pub mod store;
