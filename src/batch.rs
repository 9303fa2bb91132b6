//! [`WriteBatch`]: several puts and deletes applied together.

use crate::VALUE_BYTES_MAX;
use crate::error::{Error, Result};
use crate::format::record::{OP_DELETE, OP_HEADER_BYTES, OP_PUT, encode_op};
use crate::key::Key;

/// Puts and deletes applied in order, all or nothing, also across shards and crashes.
///
/// A batch whose keys all fall on one shard is one log record. A batch spanning shards
/// commits through the transaction protocol (a prepare record on each shard, then a
/// commit), so after a crash all of it or none of it is there, and transactions see all
/// of it or none of it. It never fails with a conflict: it waits for keys a transaction
/// holds. See `docs/ARCHITECTURE.md`, "Batches and atomicity".
///
/// Keys and values are anything that is bytes (`impl AsRef<[u8]>`); they are copied into
/// the batch.
///
/// ```
/// let mut batch = ringdb::WriteBatch::new();
/// batch.put(b"a", b"1")?.delete(b"b")?.put("c", vec![3u8])?;
/// assert_eq!(batch.len(), 3);
/// # Ok::<(), ringdb::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    /// Encoded ops (see `format::record`), back to back.
    data: Vec<u8>,
    /// (start, key length) of each op in `data`; an op ends where the next starts.
    ops: Vec<(usize, usize)>,
}

/// Refuses a value longer than [`VALUE_BYTES_MAX`].
pub(crate) fn check_value(value: &[u8]) -> Result<()> {
    if value.len() > VALUE_BYTES_MAX {
        return Err(Error::ValueTooLarge { len: value.len(), max: VALUE_BYTES_MAX });
    }
    Ok(())
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    fn push(&mut self, kind: u8, key: &[u8], value: &[u8]) {
        let start = self.data.len();
        encode_op(&mut self.data, kind, key, value);
        self.ops.push((start, key.len()));
    }

    /// Each op, encoded, with its key, in order.
    pub(crate) fn ops(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.ops.iter().enumerate().map(|(i, &(start, key_len))| {
            let end = self.ops.get(i + 1).map_or(self.data.len(), |&(next, _)| next);
            let key_start = start + OP_HEADER_BYTES;
            (&self.data[start..end], &self.data[key_start..key_start + key_len])
        })
    }

    /// Adds a put. Fails (adding nothing) on a key or value over the limits, or a key
    /// reserved for typed tables.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<&mut WriteBatch> {
        self.put_key(Key::user(key.as_ref())?, value.as_ref())
    }

    /// Adds a delete. Fails (adding nothing) on a key over the limit, or a key reserved
    /// for typed tables.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> Result<&mut WriteBatch> {
        let key = Key::user(key.as_ref())?;
        self.push(OP_DELETE, &key, &[]);
        Ok(self)
    }

    /// Adds a put of a validated key (a caller's, or a typed table's own).
    pub(crate) fn put_key(&mut self, key: Key<'_>, value: &[u8]) -> Result<&mut WriteBatch> {
        check_value(value)?;
        self.push(OP_PUT, &key, value);
        Ok(self)
    }

    /// Number of ops.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no ops.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Removes every op, keeping the memory.
    pub fn clear(&mut self) {
        self.data.clear();
        self.ops.clear();
    }
}
