//! [`Table<T>`]: typed tables of fixed-layout records, addressed by a `u64` index.
//!
//! A record is a `bytemuck::Pod` type (plain bytes: no padding, no pointers, every bit
//! pattern valid) that also implements [`Record`], usually through the [`record!`](crate::record!)
//! macro, which declares the layout's name, version and fields. Its bytes are stored as
//! they are in memory, as the value of one key of the paged store per record (see
//! `format::table` for the keys and the metadata record). So:
//!
//! - a record goes through the shard's log and pages like any value: durable when
//!   acknowledged, crash-safe, checkpointed, packed many to a page;
//! - keys are the table id and the index, big-endian, so key order is index order and a
//!   checkpoint (which places its dirty records in key order) packs consecutive indices
//!   into the same pages, which a scan then reads a chunk at a time;
//! - a table is sparse: only records set cost memory or disk, whatever its capacity;
//! - reading needs no decoding: [`Table::with`] runs a closure on the record where it
//!   lies, in the shard's page cache (or in the index, for a record written since the
//!   last checkpoint), with no copy. A record whose bytes happen not to be aligned for
//!   `T` (a page that also holds other keys' records) is copied to the stack first;
//!   [`Table::copied_reads`] counts those.
//!
//! Writes of one index through `set`, `update` and `delete` also hold one of the lock
//! stripes shared by every handle of the table in this `Db`, so that they queue rather
//! than conflict and retry.
//!
//! Transactions: a table write is one put or delete of the record's key. `set_in`,
//! `get_in` and `delete_in` take part in a [`Transaction`] (all or nothing with the rest
//! of it, validated like any key), and `set`, `update` and `delete` are one-key
//! transactions themselves, so they are atomic against transactions writing the same
//! record. Each first reads the record (a read the transaction validates), so the table's
//! record count, adjusted once the transaction commits, stays exact. The lock stripes
//! only keep writers of one index in this process from racing into retries.

use std::marker::PhantomData;
use std::ops::RangeBounds;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use crate::engine::Engine;
use crate::engine::read::Fast;
use crate::engine::scan::Scan;
use crate::engine::table::{TableShared, index_range};
use crate::error::{Error, Result};
use crate::format::table::{self as fmt, ENDIAN_LITTLE, FIELDS_MAX, FieldMeta, NAME_BYTES_MAX, TableMeta};
use crate::key::Key;
use crate::transaction::Transaction;

/// Most records a table scan asks of a shard per request: records are small, so larger
/// chunks than a key-value scan's cut the hops per byte (memory stays bounded by shards
/// x this many records).
const TABLE_SCAN_CHUNK: usize = 4096;

/// A fixed-layout record type a [`Table`] can hold. Implement it with [`record!`](crate::record!), which
/// derives the field list from the struct so that it cannot disagree with it.
///
/// The layout recorded in a table is: `size_of::<Self>()`, `align_of::<Self>()`, the
/// host's endianness (tables are little-endian; big-endian hosts are refused), the
/// schema's name and version, and every field's name, offset and size. Opening a table
/// with a type whose layout differs in any of these is [`Error::SchemaMismatch`]. A
/// change that keeps names, offsets and sizes (say `u32` to `f32`) is not visible in
/// the layout: bump the version when you make one.
pub trait Record: bytemuck::Pod + Send + Sync {
    /// The record's declared layout.
    fn schema() -> Schema;
}

/// A record type's declared layout: see [`Record`] and [`record!`](crate::record!).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    /// A name for the layout (for example the struct's name).
    pub name: &'static str,
    /// The layout's version: bump it when a field changes type without changing size.
    pub version: u32,
    /// Every field, in declaration order.
    pub fields: Vec<Field>,
}

/// One field of a [`Schema`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field's name.
    pub name: &'static str,
    /// `offset_of!` the field.
    pub offset: usize,
    /// `size_of` the field's type.
    pub size: usize,
}

/// The size of a field's type, from a function that reads the field (used by
/// [`record!`](crate::record!), in a constant; the function is never called).
#[doc(hidden)]
pub const fn field_size<S, F>(_read: fn(S) -> F) -> usize {
    core::mem::size_of::<F>()
}

/// Implements [`Record`] for a `#[repr(C)]` struct that is `bytemuck::Pod`, declaring
/// its layout: a name, a version and every field.
///
/// It fails to compile if the fields listed do not add up to the struct's size (a field
/// left out; `Pod` rules out padding), and the table refuses a list that repeats a
/// field.
///
/// ```
/// use bytemuck::{Pod, Zeroable};
///
/// #[derive(Clone, Copy, Pod, Zeroable)]
/// #[repr(C)]
/// struct Sample {
///     at_ms: u64,
///     value: f64,
///     sensor: u32,
///     flags: u32,
/// }
/// ringdb::record!(Sample, "Sample", 1, [at_ms, value, sensor, flags]);
/// ```
///
/// Leaving a field out does not compile:
///
/// ```compile_fail
/// # use bytemuck::{Pod, Zeroable};
/// #[derive(Clone, Copy, Pod, Zeroable)]
/// #[repr(C)]
/// struct Pair { a: u32, b: u32 }
/// ringdb::record!(Pair, "Pair", 1, [a]);
/// ```
#[macro_export]
macro_rules! record {
    ($ty:ty, $name:expr, $version:expr, [$($field:ident),+ $(,)?]) => {
        const _: () = ::core::assert!(
            0 $(+ $crate::field_size(|r: $ty| r.$field))+ == ::core::mem::size_of::<$ty>(),
            "ringdb::record!: the fields listed do not add up to the struct's size; list every field once"
        );
        impl $crate::Record for $ty {
            fn schema() -> $crate::Schema {
                $crate::Schema {
                    name: $name,
                    version: $version,
                    fields: ::std::vec![$($crate::Field {
                        name: ::core::stringify!($field),
                        offset: ::core::mem::offset_of!($ty, $field),
                        size: $crate::field_size(|r: $ty| r.$field),
                    }),+],
                }
            }
        }
    };
}

/// A typed table: records of `T` addressed by a `u64` index, stored in the database's
/// shards (see the module docs). Get one with [`Db::table`](crate::Db::table); cheap to clone, usable from
/// any thread.
///
/// ```
/// use bytemuck::{Pod, Zeroable};
///
/// #[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
/// #[repr(C)]
/// struct Point { x: f64, y: f64 }
/// ringdb::record!(Point, "Point", 1, [x, y]);
///
/// let dir = tempfile::tempdir()?;
/// let db = ringdb::Db::open(dir.path(), ringdb::Options::default())?;
/// let points = db.table::<Point>("points")?.with_capacity(10_000_000_000)?;
/// points.set(42, &Point { x: 1.0, y: 2.0 })?;
/// assert_eq!(points.get(42)?, Some(Point { x: 1.0, y: 2.0 }));
/// assert_eq!(points.with(42, |p| p.x + p.y)?, Some(3.0));
/// points.update(42, |p| p.x = 5.0)?;
/// let all: Vec<(u64, Point)> = points.scan(..).collect::<Result<_, _>>()?;
/// assert_eq!(all, [(42, Point { x: 5.0, y: 2.0 })]);
/// # db.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Table<T: Record> {
    engine: Arc<Engine>,
    shared: Arc<TableShared>,
    _records: PhantomData<fn() -> T>,
}

impl<T: Record> Clone for Table<T> {
    fn clone(&self) -> Self {
        Table { engine: Arc::clone(&self.engine), shared: Arc::clone(&self.shared), _records: PhantomData }
    }
}

#[expect(clippy::missing_fields_in_debug, reason = "a table is a handle: its name, id and bounds say which one it is")]
impl<T: Record> std::fmt::Debug for Table<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("name", &self.shared.name)
            .field("id", &self.shared.table_id)
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// The layout `T` declares, checked, as a metadata record (id and capacity left 0).
fn requested_meta<T: Record>() -> Result<TableMeta> {
    let schema = T::schema();
    let bad = |what: String| Err(Error::InvalidArgument(format!("record type `{}`: {what}", schema.name)));
    if cfg!(target_endian = "big") {
        return Err(Error::Incompatible("typed tables store records little-endian; this host is big-endian".into()));
    }
    let size = size_of::<T>();
    if size == 0 {
        return bad("a record of zero bytes cannot be stored".into());
    }
    if size > crate::VALUE_BYTES_MAX {
        return bad(format!("{size} bytes is larger than the {} bytes a value may hold", crate::VALUE_BYTES_MAX));
    }
    if schema.name.is_empty() || schema.name.len() > NAME_BYTES_MAX {
        return bad(format!("the schema name must be 1..={NAME_BYTES_MAX} bytes"));
    }
    if schema.fields.is_empty() || schema.fields.len() > FIELDS_MAX {
        return bad(format!("a schema declares 1..={FIELDS_MAX} fields, not {}", schema.fields.len()));
    }
    let mut by_offset: Vec<&Field> = schema.fields.iter().collect();
    by_offset.sort_by_key(|f| (f.offset, f.size));
    let mut end = 0;
    for f in &by_offset {
        if f.name.is_empty() || f.name.len() > NAME_BYTES_MAX {
            return bad(format!("field name {:?} must be 1..={NAME_BYTES_MAX} bytes", f.name));
        }
        if f.offset < end {
            return bad(format!(
                "field `{}` at offset {} overlaps the field before it (listed twice?)",
                f.name, f.offset
            ));
        }
        end = f.offset + f.size;
    }
    let total: usize = schema.fields.iter().map(|f| f.size).sum();
    if end > size || total != size {
        return bad(format!("the fields cover {total} bytes up to offset {end}, but the type has {size} bytes"));
    }
    let narrow = |v: usize| u32::try_from(v).expect("sizes and offsets are at most VALUE_BYTES_MAX");
    Ok(TableMeta {
        table_id: 0,
        capacity: 0,
        record_bytes: narrow(size),
        record_align: narrow(align_of::<T>()),
        endian: ENDIAN_LITTLE,
        schema_name: schema.name.to_string(),
        schema_version: schema.version,
        fields: schema
            .fields
            .iter()
            .map(|f| FieldMeta { name: f.name.to_string(), offset: narrow(f.offset), size: narrow(f.size) })
            .collect(),
    })
}

/// Opens or creates table `name` (`Db::table`).
pub(crate) fn open<T: Record>(engine: &Arc<Engine>, name: &str) -> Result<Table<T>> {
    crate::engine::table::check_name(name)?;
    let requested = requested_meta::<T>()?;
    let shared =
        crate::engine::table::open(engine, name, requested, |stored, requested| check_layout(name, stored, requested))?;
    Ok(Table { engine: Arc::clone(engine), shared, _records: PhantomData })
}

fn check_layout(name: &str, stored: &TableMeta, requested: &TableMeta) -> Result<()> {
    if stored.same_layout(requested) {
        Ok(())
    } else {
        Err(Error::SchemaMismatch {
            table: name.to_string(),
            stored: stored.describe(),
            requested: requested.describe(),
        })
    }
}

/// Checks a record's bytes and runs `f` on them as a `T`: in place if they are aligned
/// for `T`, else on a copy.
fn view<T: Record, R>(shared: &TableShared, index: u64, bytes: &[u8], f: impl FnOnce(&T) -> R) -> Result<R> {
    if bytes.len() != size_of::<T>() {
        return Err(Error::Corruption {
            file: shared.dir.clone(),
            offset: 0,
            what: format!(
                "typed table `{}`: record {index} holds {} bytes, the table's records have {}",
                shared.name,
                bytes.len(),
                size_of::<T>()
            ),
        });
    }
    if let Ok(record) = bytemuck::try_from_bytes::<T>(bytes) {
        Ok(f(record))
    } else {
        shared.copies.fetch_add(1, Ordering::Relaxed);
        let record: T = bytemuck::pod_read_unaligned(bytes);
        Ok(f(&record))
    }
}

/// An iterator over `(index, record)` in index order; see [`Table::scan`].
#[must_use = "a scan reads nothing until it is iterated"]
pub struct TableScan<T: Record> {
    inner: Scan,
    shared: Arc<TableShared>,
    failed: bool,
    _records: PhantomData<fn() -> T>,
}

impl<T: Record> Iterator for TableScan<T> {
    type Item = Result<(u64, T)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = self.inner.next()?.and_then(|(key, value)| {
            let Some(index) = fmt::record_index(self.shared.table_id, &key) else {
                return Err(Error::Corruption {
                    file: self.shared.dir.clone(),
                    offset: 0,
                    what: format!("a scan of typed table `{}` met the foreign key {key:?}", self.shared.name),
                });
            };
            let record = view::<T, T>(&self.shared, index, &value, |r| *r)?;
            Ok((index, record))
        });
        self.failed = item.is_err();
        Some(item)
    }
}

impl<T: Record> Table<T> {
    /// The table's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Number of records present (set and not deleted).
    pub fn len(&self) -> u64 {
        self.shared.len.load(Ordering::Relaxed)
    }

    /// Whether no record is present.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Indices `0..capacity()` are accepted. A new table has capacity `u64::MAX`
    /// (no bound) until [`Table::with_capacity`] sets one. Capacity costs nothing: only
    /// records set use memory and disk.
    pub fn capacity(&self) -> u64 {
        self.shared.capacity.load(Ordering::Relaxed)
    }

    /// Sets the table's capacity to `capacity` (durably, recorded in its metadata) and
    /// returns the handle. Lowering it below a record that is present is refused.
    pub fn with_capacity(self, capacity: u64) -> Result<Table<T>> {
        self.engine.check_open()?;
        // Every stripe, in order: no write runs while the bound moves.
        let all: Vec<MutexGuard<'_, ()>> =
            self.shared.stripes.iter().map(|s| s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).collect();
        if capacity < self.capacity() {
            let past = self.scan(capacity..).next().transpose()?;
            if let Some((index, _)) = past {
                return Err(Error::InvalidArgument(format!(
                    "table `{}` holds record {index}, at or past the capacity {capacity} asked for: delete it first",
                    self.shared.name
                )));
            }
        }
        let mut meta = self.shared.meta.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        meta.capacity = capacity;
        crate::engine::table::write_meta(&self.engine, &self.shared.name, &meta)?;
        self.shared.capacity.store(capacity, Ordering::Relaxed);
        *self.shared.meta.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = meta;
        drop(all);
        Ok(self)
    }

    /// The store key of record `index` (what a transaction writes to set it).
    fn record_key(&self, index: u64) -> [u8; fmt::RECORD_KEY_BYTES] {
        self.shared.record_key(index)
    }

    fn check_index(&self, index: u64) -> Result<()> {
        let capacity = self.capacity();
        if index >= capacity {
            return Err(Error::InvalidArgument(format!(
                "index {index} is past table `{}`'s capacity of {capacity} (see Table::with_capacity)",
                self.shared.name
            )));
        }
        Ok(())
    }

    /// Sets record `index` to `record`. Returns once acknowledged under the database's
    /// durability (by default: on stable storage). A one-key transaction underneath, so
    /// the table's record count stays right beside transactions writing this record.
    pub fn set(&self, index: u64, record: &T) -> Result<()> {
        self.check_index(index)?;
        let _stripe = self.shared.stripe(index);
        crate::transaction::transact(&self.engine, |tx| self.set_in(tx, index, record))
    }

    /// Record `index` as transaction `tx` sees it (its own write if it made one); the
    /// read is validated when `tx` commits, like [`Transaction::get`].
    pub fn get_in(&self, tx: &mut Transaction, index: u64) -> Result<Option<T>> {
        let key = self.record_key(index);
        match tx.get_key(Key::reserved(&key))? {
            Some(bytes) => view(&self.shared, index, &bytes, |r| *r).map(Some),
            None => Ok(None),
        }
    }

    /// Sets record `index` to `record` when transaction `tx` commits (all or nothing with
    /// the rest of `tx`).
    pub fn set_in(&self, tx: &mut Transaction, index: u64, record: &T) -> Result<()> {
        self.write_in(tx, index, Some(record)).map(|_| ())
    }

    /// Removes record `index` when transaction `tx` commits; returns whether it is set as
    /// `tx` sees it.
    pub fn delete_in(&self, tx: &mut Transaction, index: u64) -> Result<bool> {
        self.write_in(tx, index, None)
    }

    fn write_in(&self, tx: &mut Transaction, index: u64, record: Option<&T>) -> Result<bool> {
        self.check_index(index)?;
        let key = self.record_key(index);
        // Read first (the read is validated at commit), so the record count can follow.
        let existed = tx.get_key(Key::reserved(&key))?.is_some();
        let before = if tx.wrote_table_record(&key) { false } else { existed };
        tx.write_key(Key::reserved(&key), record.map(bytemuck::bytes_of))?;
        tx.note_table_write(&key, &self.shared, before, record.is_some());
        Ok(existed)
    }

    /// Sets many records in one write per shard: each shard's part of `records` is one
    /// log record, so it survives a crash whole or not at all (atomic per shard, like a
    /// [`WriteBatch`](crate::WriteBatch)), and a bulk load costs one log append per shard
    /// per call instead of one per record. A later entry for the same index wins.
    pub fn set_many(&self, records: &[(u64, T)]) -> Result<()> {
        self.engine.check_open()?;
        for (index, _) in records {
            self.check_index(*index)?;
        }
        // Every stripe involved, in stripe order (so two calls never wait on each other
        // in a cycle), held across the write like `set` holds one.
        let mut stripes: Vec<usize> = records.iter().map(|(i, _)| TableShared::stripe_of(*i)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let _held: Vec<MutexGuard<'_, ()>> = stripes
            .iter()
            .map(|&at| self.shared.stripes[at].lock().unwrap_or_else(std::sync::PoisonError::into_inner))
            .collect();
        let mut batch = crate::batch::WriteBatch::new();
        let mut fresh = std::collections::HashSet::new();
        for (index, record) in records {
            let key = self.record_key(*index);
            if !self.engine.contains(&key)? {
                fresh.insert(*index);
            }
            batch.put_key(Key::reserved(&key), bytemuck::bytes_of(record))?;
        }
        self.engine.write_batch(&batch).wait()?;
        self.shared.len.fetch_add(fresh.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Record `index`, copied out, or `None` if it is not set.
    pub fn get(&self, index: u64) -> Result<Option<T>> {
        self.with(index, |r| *r)
    }

    /// Runs `f` on record `index` where it lies (see the module docs): in the shard's
    /// page cache or the index, with no copy and no decoding; a record not in memory is
    /// read first. Returns `None` (without calling `f`) if the record is not set.
    ///
    /// `f` runs while the record's page is pinned (reclamation of an evicted page waits
    /// for it): keep it short, and do not block in it.
    pub fn with<R>(&self, index: u64, f: impl FnOnce(&T) -> R) -> Result<Option<R>> {
        self.engine.check_open()?;
        let key = self.record_key(index);
        let shared = &self.shared;
        let mut once = Some(f);
        let mut call = |bytes: &[u8]| view(shared, index, bytes, once.take().expect("called once"));
        match self.engine.with_fast(&key, &mut call) {
            Fast::Absent => Ok(None),
            Fast::Done(r) => r.map(Some),
            Fast::Slow => match self.engine.get(&key)? {
                Some(bytes) => call(&bytes).map(Some),
                None => Ok(None),
            },
        }
    }

    /// Runs `f(index, record)` once for each of `indices` (`None` for a record not set),
    /// and returns the results in the order of `indices`. Records in memory or in the
    /// cache are seen where they lie, first; the rest are read on the calling thread, one
    /// after another, then seen in turn.
    pub fn with_many<R>(&self, indices: &[u64], mut f: impl FnMut(u64, Option<&T>) -> R) -> Result<Vec<R>> {
        self.engine.check_open()?;
        let shared = &self.shared;
        let mut out: Vec<Option<R>> = Vec::with_capacity(indices.len());
        let mut misses: Vec<(usize, [u8; fmt::RECORD_KEY_BYTES])> = Vec::new();
        for (at, &index) in indices.iter().enumerate() {
            let key = self.record_key(index);
            let mut call = |bytes: &[u8]| view(shared, index, bytes, |r: &T| f(index, Some(r)));
            match self.engine.with_fast(&key, &mut call) {
                Fast::Absent => out.push(Some(f(index, None))),
                Fast::Done(r) => out.push(Some(r?)),
                Fast::Slow => {
                    out.push(None);
                    misses.push((at, key));
                }
            }
        }
        if !misses.is_empty() {
            let keys: Vec<&[u8]> = misses.iter().map(|(_, key)| &key[..]).collect();
            let values = self.engine.get_many(&keys)?;
            for ((at, _), value) in misses.iter().zip(values) {
                let index = indices[*at];
                out[*at] = Some(match value {
                    Some(bytes) => view(shared, index, &bytes, |r: &T| f(index, Some(r)))?,
                    None => f(index, None),
                });
            }
        }
        Ok(out.into_iter().map(|r| r.expect("every index answered")).collect())
    }

    /// Reads record `index`, lets `f` change it, and writes it back, atomically against
    /// every other write of this index, transactions included (it is a one-key
    /// transaction). Returns the new record, or `None` (writing nothing) if the record is
    /// not set. `f` may run more than once if a transaction raced it; only the last
    /// run's result is written.
    ///
    /// `f` runs while this index's lock stripe is held: it must not write to this table
    /// (that would wait for the stripe it holds).
    pub fn update(&self, index: u64, mut f: impl FnMut(&mut T)) -> Result<Option<T>> {
        self.check_index(index)?;
        let _stripe = self.shared.stripe(index);
        crate::transaction::transact(&self.engine, |tx| {
            let Some(mut record) = self.get_in(tx, index)? else { return Ok(None) };
            f(&mut record);
            self.set_in(tx, index, &record)?;
            Ok(Some(record))
        })
    }

    /// Removes record `index`; returns whether it was set.
    pub fn delete(&self, index: u64) -> Result<bool> {
        self.engine.check_open()?;
        let _stripe = self.shared.stripe(index);
        crate::transaction::transact(&self.engine, |tx| self.delete_in(tx, index))
    }

    /// The records with indices in `range`, in index order, as `(index, record)`. Like
    /// [`Db::scan`](crate::Db::scan): memory stays bounded, and a record's page is read once per chunk of
    /// consecutive records.
    pub fn scan(&self, range: impl RangeBounds<u64>) -> TableScan<T> {
        let range = index_range(self.shared.table_id, range.start_bound(), range.end_bound());
        TableScan {
            inner: self.engine.scan(&range).chunk_max(TABLE_SCAN_CHUNK),
            shared: Arc::clone(&self.shared),
            failed: false,
            _records: PhantomData,
        }
    }

    /// Reads since open (in this process, by every handle of the table) whose record
    /// bytes were not aligned for `T` and were copied to the stack before `f` saw them.
    pub fn copied_reads(&self) -> u64 {
        self.shared.copies.load(Ordering::Relaxed)
    }
}
