//! [`WriteBatch`]: several puts and deletes applied together.

use crate::error::{Error, Result};
use crate::format::record::{OP_DELETE, OP_PUT, encode_op};
use crate::{KEY_BYTES_MAX, VALUE_BYTES_MAX};

/// Puts and deletes applied in order, all or nothing, also across shards and crashes.
///
/// A batch whose keys all fall on one shard is one log record. A batch spanning shards
/// commits through the transaction protocol (a prepare record on each shard, then a
/// commit), so after a crash all of it or none of it is there, and transactions see all
/// of it or none of it. It never fails with a conflict: it waits for keys a transaction
/// holds. See `docs/ARCHITECTURE.md`, "Batches and atomicity".
///
/// ```
/// let mut batch = ringdb::WriteBatch::new();
/// batch.put(b"a", b"1")?.delete(b"b")?;
/// assert_eq!(batch.len(), 2);
/// # Ok::<(), ringdb::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    /// Encoded ops (see `format::record`), back to back.
    pub(crate) data: Vec<u8>,
    /// (start, key start, key len, end) of each op in `data`.
    pub(crate) ops: Vec<(usize, usize, usize, usize)>,
    pub(crate) user_bytes: u64,
}

pub(crate) fn check_key(key: &[u8]) -> Result<()> {
    if key.len() > KEY_BYTES_MAX {
        return Err(Error::KeyTooLarge { len: key.len(), max: KEY_BYTES_MAX });
    }
    Ok(())
}

/// [`check_key`], and refuses the keys reserved for typed tables.
pub(crate) fn check_user_key(key: &[u8]) -> Result<()> {
    check_key(key)?;
    if crate::format::table::is_reserved(key) {
        return Err(Error::InvalidArgument(format!(
            "keys starting with {:?} are reserved for typed tables (ringdb::Table); use another prefix",
            bytes::Bytes::from_static(crate::format::table::RESERVED_PREFIX)
        )));
    }
    Ok(())
}

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
        let key_start = start + crate::format::record::OP_HEADER_BYTES;
        self.ops.push((start, key_start, key.len(), self.data.len()));
        self.user_bytes += (key.len() + value.len()) as u64;
    }

    /// Adds a put. Fails (adding nothing) on a key or value over the limits, or a key
    /// reserved for typed tables.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<&mut WriteBatch> {
        check_user_key(key)?;
        check_value(value)?;
        self.push(OP_PUT, key, value);
        Ok(self)
    }

    /// Adds a delete. Fails (adding nothing) on a key over the limit, or a key reserved
    /// for typed tables.
    pub fn delete(&mut self, key: &[u8]) -> Result<&mut WriteBatch> {
        check_user_key(key)?;
        self.push(OP_DELETE, key, &[]);
        Ok(self)
    }

    /// A put of any key, the typed tables' reserved ones included (for `Table`).
    pub(crate) fn put_any(&mut self, key: &[u8], value: &[u8]) -> Result<&mut WriteBatch> {
        check_key(key)?;
        check_value(value)?;
        self.push(OP_PUT, key, value);
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
        self.user_bytes = 0;
    }
}
