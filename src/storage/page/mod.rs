//! The paged store of a shard: the tree's nodes (leaves are pages of records in
//! key order, padded to the page unit) and large values' chunks in `pages.dat`,
//! a page cache, and copy-on-write checkpoints that let the log be truncated.
//!
//! - `alloc`: the data file's extent allocator with copy-on-write release.
//! - `cache`: the page cache, read by any thread, CLOCK eviction.
//! - `disk`: reads of nodes and chunks on callers' threads, offers to the cache.
//! - `reader`: reads from any thread, the memtable then the tree.
//! - `store`: checkpoints (merging the memtable into the tree) and reading one back.

pub mod alloc;
pub mod cache;
pub mod disk;
pub mod reader;
pub mod store;
