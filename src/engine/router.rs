//! Which shard owns a key.
//!
//! `shard = (crc32(key) * shard_count) >> 32`, with crc32 the IEEE polynomial
//! (`crc32fast`). It is part of the on-disk contract: a key must route to the
//! same shard in every release, since each shard replays only its own log.

/// The shard that owns `key` among `shard_count` shards.
pub fn shard_of(key: &[u8], shard_count: usize) -> usize {
    debug_assert!(shard_count > 0);
    ((u64::from(crc32fast::hash(key)) * shard_count as u64) >> 32) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_spread() {
        // Fixed values: a change here breaks every existing database.
        assert_eq!(shard_of(b"", 4), 0);
        assert_eq!(shard_of(b"hello", 4), shard_of(b"hello", 4));
        assert_eq!(crc32fast::hash(b"hello"), 0x3610a686);
        assert_eq!(shard_of(b"hello", 4), ((0x3610a686u64 * 4) >> 32) as usize);
        let mut counts = [0usize; 4];
        for i in 0..40_000u32 {
            counts[shard_of(&i.to_le_bytes(), 4)] += 1;
        }
        assert!(counts.iter().all(|&c| (9_000..11_000).contains(&c)), "{counts:?}");
    }
}
