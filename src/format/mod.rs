//! Pure encoders and decoders of every structure ringdb puts on disk.
//!
//! Nothing here does I/O, so each decoder can be fuzzed and property-tested
//! alone. All integers are little-endian. Every structure carries a magic or a
//! kind byte and a crc32 (IEEE, `crc32fast`); `docs/FORMAT.md` describes each byte.
//! Decoders never panic and never allocate from an unchecked length field. Blob
//! frame compression (`compression`) lives here too: it is an encoding, with no I/O.

pub mod blob;
pub mod checkpoint;
pub(crate) mod compression;
pub mod manifest;
pub mod page;
pub mod record;
pub mod segment;
pub mod table;
pub mod tree;

/// Version of the on-disk format written by this build (manifest, log segments,
/// checkpoints, pages). Version 2 added the transaction record kinds of the log
/// (prepare, commit, abort) and dropped the chunk header (a chunk is the value alone);
/// a version 1 directory is refused with `Error::Incompatible`. Version 3 keeps each
/// shard's keys in a copy-on-write B+tree (`tree`) whose root the checkpoint names,
/// in place of pages listed with a key directory; an older directory is refused the
/// same way.
pub const FORMAT_VERSION: u32 = 3;
/// Version of the blob log's segment format, which transactions did not change.
pub const BLOB_FORMAT_VERSION: u32 = 1;

pub(crate) fn get_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(bytes[at..at + 2].try_into().expect("2 bytes"))
}

pub(crate) fn get_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn get_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

pub(crate) fn put_u16(bytes: &mut [u8], at: usize, v: u16) {
    bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
