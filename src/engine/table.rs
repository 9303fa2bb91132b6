//! The typed tables' state shared by every handle of one table, and their keys.
//!
//! A table's metadata and records are keys in the reserved space (see
//! `format::table` for the layout), made here with `Key::reserved`; the record
//! type's layout is checked by the API (`table.rs`), which hands the engine the
//! metadata it asks for.

use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::Engine;
use super::scan::Scan;
use crate::error::{Error, Result};
use crate::format::record::OP_PUT;
use crate::format::table::{self as fmt, KIND_META, KIND_RECORD, NAME_BYTES_MAX, RESERVED_PREFIX, TableMeta};
use crate::key::{Key, KeyRange, prefix_end};
use crate::stats::OpKind;

/// Lock stripes per table: writes of indices in different stripes never wait for each
/// other (a write holds its stripe across one durable log write).
pub(crate) const STRIPES: usize = 1024;

/// What every handle of one table in a database shares.
pub(crate) struct TableShared {
    pub name: String,
    /// The database's directory, named by corruption errors.
    pub dir: std::path::PathBuf,
    pub meta: Mutex<TableMeta>,
    pub table_id: u32,
    pub capacity: AtomicU64,
    /// Records present, counted on first open and kept up to date by every write.
    pub len: AtomicU64,
    /// Reads that found the record's bytes unaligned for the type and copied them.
    pub copies: AtomicU64,
    pub stripes: Box<[Mutex<()>]>,
}

impl TableShared {
    pub fn stripe_of(index: u64) -> usize {
        // Fibonacci hashing: neighbouring indices land in different stripes.
        (index.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54) as usize % STRIPES
    }

    pub fn stripe(&self, index: u64) -> MutexGuard<'_, ()> {
        self.stripes[TableShared::stripe_of(index)].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The store key of record `index`.
    pub fn record_key(&self, index: u64) -> [u8; fmt::RECORD_KEY_BYTES] {
        fmt::record_key(self.table_id, index)
    }

    /// Adjusts the record count after a write that found the record `existed` and left
    /// it `present`.
    pub fn note_written(&self, existed: bool, present: bool) {
        match (existed, present) {
            (false, true) => {
                self.len.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                let before = self.len.fetch_sub(1, Ordering::Relaxed);
                debug_assert!(before > 0, "a record deleted was counted when it was set");
            }
            _ => {}
        }
    }
}

fn meta_corruption(engine: &Engine, name: &str, what: &str) -> Error {
    Error::Corruption {
        file: engine.dir().to_path_buf(),
        offset: 0,
        what: format!("typed table `{name}`'s metadata: {what}"),
    }
}

/// The key range of one table's records.
pub(crate) fn record_range(table_id: u32) -> KeyRange {
    let first = fmt::record_key(table_id, 0);
    KeyRange::new(Bound::Included(Bytes::copy_from_slice(&first)), prefix_end(&first[..12]))
}

/// The key range of table `table_id`'s records with indices in `(start, end)`.
pub(crate) fn index_range(table_id: u32, start: Bound<&u64>, end: Bound<&u64>) -> KeyRange {
    let key = |i: &u64| Bytes::copy_from_slice(&fmt::record_key(table_id, *i));
    let whole = record_range(table_id);
    let start = match start {
        Bound::Unbounded => whole.start,
        bound => bound.map(key),
    };
    let end = match end {
        Bound::Unbounded => whole.end,
        bound => bound.map(key),
    };
    KeyRange::new(start, end)
}

/// Durably writes table `name`'s metadata record.
pub(crate) fn write_meta(engine: &Engine, name: &str, meta: &TableMeta) -> Result<()> {
    let meta_key = fmt::meta_key(name);
    engine.write_one(OP_PUT, Key::reserved(&meta_key), &fmt::encode_meta(meta), OpKind::Put).wait()
}

/// Refuses a table name that is empty or too long.
pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        return Err(Error::InvalidArgument(format!(
            "a table name is 1..={NAME_BYTES_MAX} bytes; {name:?} has {}",
            name.len()
        )));
    }
    Ok(())
}

/// Opens or creates table `name` whose records have the layout `requested` (id and
/// capacity left 0), checking it against the stored one with `check_layout`. The
/// caller checked the name with [`check_name`] first.
pub(crate) fn open(
    engine: &Engine,
    name: &str,
    mut requested: TableMeta,
    check_layout: impl Fn(&TableMeta, &TableMeta) -> Result<()>,
) -> Result<Arc<TableShared>> {
    debug_assert!(check_name(name).is_ok(), "the API checks a table's name first");
    // Held while a table is looked up or created, so that two threads opening the same
    // new table agree on one id and one record count.
    let mut tables = engine.tables.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(shared) = tables.get(name) {
        let stored = shared.meta.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        check_layout(&stored, &requested)?;
        return Ok(Arc::clone(shared));
    }
    let meta_key = fmt::meta_key(name);
    let meta = if let Some(bytes) = super::read::get(engine.shard_for(&meta_key), &meta_key)? {
        let stored = fmt::decode_meta(&bytes).map_err(|what| meta_corruption(engine, name, &what))?;
        check_layout(&stored, &requested)?;
        stored
    } else {
        requested.table_id = next_table_id(engine)?;
        requested.capacity = u64::MAX;
        write_meta(engine, name, &requested)?;
        requested
    };
    let len = super::scan::count_keys(engine.shards(), &record_range(meta.table_id))?;
    let shared = Arc::new(TableShared {
        name: name.to_string(),
        dir: engine.dir().to_path_buf(),
        table_id: meta.table_id,
        capacity: AtomicU64::new(meta.capacity),
        len: AtomicU64::new(len),
        copies: AtomicU64::new(0),
        meta: Mutex::new(meta),
        stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
    });
    tables.insert(name.to_string(), Arc::clone(&shared));
    Ok(shared)
}

/// One more than the largest table id in use (ids start at 1).
fn next_table_id(engine: &Engine) -> Result<u32> {
    let mut prefix = RESERVED_PREFIX.to_vec();
    prefix.push(KIND_META);
    let mut end = RESERVED_PREFIX.to_vec();
    end.push(KIND_RECORD);
    let metas = KeyRange::new(Bound::Included(Bytes::from(prefix)), Bound::Excluded(Bytes::from(end)));
    let mut largest = 0u32;
    for entry in Scan::new(engine.shards().to_vec(), &metas) {
        let (key, value) = entry?;
        let name = String::from_utf8_lossy(&key[RESERVED_PREFIX.len() + 1..]).into_owned();
        let meta = fmt::decode_meta(&value).map_err(|what| meta_corruption(engine, &name, &what))?;
        largest = largest.max(meta.table_id);
    }
    largest
        .checked_add(1)
        .ok_or_else(|| Error::InvalidArgument("every typed table id is in use (4 billion tables)".into()))
}
