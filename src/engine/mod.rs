//! The engine core: what `Db`, `Transaction` and `Table` share, below the API
//! and above the shards.
//!
//! - `router`: which shard owns a key.
//! - `registry`: cross-shard transaction state shared by the shards.
//! - `read`: turning an index entry into its value on the caller's thread.
//! - `scan`: ordered scans merged across shards.

pub mod read;
pub mod registry;
pub mod router;
pub mod scan;
