//! [`Db`]: the key-value API, callable from any thread, sync or async.
//!
//! A `Db` is a handle on the engine (`engine/`): it checks the caller's input once,
//! into the engine's types (`Key`, `KeyRange`), and hands it down.

use std::future::{Future, Ready, ready};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::batch::WriteBatch;
use crate::blob::{BlobLog, BlobOptions};
use crate::engine::Engine;
use crate::engine::scan::Scan;
use crate::error::{Error, Result};
use crate::format::record::{OP_DELETE, OP_PUT};
use crate::key::{Key, KeyBounds, KeyRange};
use crate::options::Options;
use crate::stats::{OpKind, Stats};
use crate::transaction::Transaction;
use crate::value::{Ack, Value};

/// An open database. Cheap to clone; every clone is a handle on the same shards.
///
/// Keys and values are anything that is bytes (`impl AsRef<[u8]>`): byte-string literals,
/// `&[u8]`, `&str`, `Vec<u8>`, `String`, `Bytes`, a [`Value`] read back. Both are copied
/// before a write call returns, whatever their type.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let db = ringdb::Db::open(dir.path(), ringdb::Options::default())?;
/// db.put(b"hello", b"world")?;
/// db.put("greeting", format!("{} {}", "hello", "world"))?;
/// assert_eq!(db.get(b"hello")?.as_deref(), Some(&b"world"[..]));
/// assert_eq!(db.get("greeting")?.as_deref(), Some(&b"hello world"[..]));
/// db.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Db {
    engine: Arc<Engine>,
}

impl Db {
    /// Opens (creating if needed) the database in `dir`: takes its lock, reads or writes
    /// its manifest, starts one thread per shard and replays each shard's log.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "the options are handed over as built, like every builder; taking them by reference would change the public API"
    )]
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Db> {
        Ok(Db { engine: Arc::new(Engine::open(dir.as_ref(), &options)?) })
    }

    /// The database's directory.
    pub fn path(&self) -> &Path {
        self.engine.dir()
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.engine.shard_count()
    }

    /// The shard that owns `key`.
    pub fn shard_of(&self, key: impl AsRef<[u8]>) -> usize {
        self.engine.shard_of(key.as_ref())
    }

    fn single(&self, kind: u8, key: &[u8], value: &[u8], op: OpKind) -> Ack {
        match Key::user(key) {
            Ok(key) => self.engine.write_one(kind, key, value, op),
            Err(e) => Ack::failed(e),
        }
    }

    /// Sets `key` to `value`. Returns when the write is acknowledged under the
    /// database's [`crate::Durability`] (by default: on stable storage).
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        self.single(OP_PUT, key.as_ref(), value.as_ref(), OpKind::Put).wait()
    }

    /// [`Db::put`], returning an [`Ack`] to await (or [`Ack::wait`] on) instead of blocking.
    /// The key and value are copied before this returns.
    pub fn put_async(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Ack {
        self.single(OP_PUT, key.as_ref(), value.as_ref(), OpKind::Put)
    }

    /// Removes `key` (removing an absent key is not an error).
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<()> {
        self.single(OP_DELETE, key.as_ref(), &[], OpKind::Delete).wait()
    }

    /// [`Db::delete`], as an [`Ack`].
    pub fn delete_async(&self, key: impl AsRef<[u8]>) -> Ack {
        self.single(OP_DELETE, key.as_ref(), &[], OpKind::Delete)
    }

    /// Applies every op of `batch` in order, all or nothing, also across shards and
    /// crashes (see [`WriteBatch`]).
    pub fn write_batch(&self, batch: WriteBatch) -> Result<()> {
        self.write_batch_async(batch).wait()
    }

    /// [`Db::write_batch`], as an [`Ack`].
    #[expect(
        clippy::needless_pass_by_value,
        reason = "a batch is handed over to be written, as `Db::write_batch` takes it; the public API stays one shape"
    )]
    pub fn write_batch_async(&self, batch: WriteBatch) -> Ack {
        // The batch's own methods validated its keys and values as they were added.
        self.engine.write_batch(&batch)
    }

    /// The value of `key`, or `None`. Reads never wait for the shard thread: they see
    /// every acknowledged write.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Value>> {
        self.get_bytes(key.as_ref())
    }

    /// [`Db::get`] once the key is bytes: one copy of the code for every key type.
    fn get_bytes(&self, key: &[u8]) -> Result<Option<Value>> {
        let key = Key::user(key)?;
        self.engine.check_open()?;
        let started = Instant::now();
        let value = self.engine.get(&key)?;
        self.engine.record_get(started.elapsed());
        Ok(value.map(Value))
    }

    /// The entries with keys in `range`, in key order, across all shards. Memory stays
    /// bounded whatever the range's size (see [`Scan`]). `range` is any standard range
    /// of byte-like keys, or `..` for every key (see [`KeyBounds`]); the scan reads
    /// nothing until iterated.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let db = ringdb::Db::open(dir.path(), ringdb::Options::default())?;
    /// db.put(b"a", b"1")?;
    /// db.put(b"b", b"2")?;
    /// db.put(b"c", b"3")?;
    /// let keys: Vec<Vec<u8>> = db.scan(b"a"..b"c").map(|e| e.map(|(k, _)| k.to_vec())).collect::<Result<_, _>>()?;
    /// assert_eq!(keys, [b"a".to_vec(), b"b".to_vec()]);
    /// assert_eq!(db.scan(..).count(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a scan reads nothing until it is iterated"]
    pub fn scan(&self, range: impl KeyBounds) -> Scan {
        self.user_scan(&KeyRange::copied(&range))
    }

    /// The entries whose keys start with `prefix`, in key order.
    #[must_use = "a scan reads nothing until it is iterated"]
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Scan {
        self.user_scan(&KeyRange::prefix(prefix.as_ref()))
    }

    /// A caller's scan of `range`: the typed tables' reserved keys are left out.
    fn user_scan(&self, range: &KeyRange) -> Scan {
        if let Err(e) = self.engine.check_open() {
            return Scan::failed(e);
        }
        self.engine.scan(range).hiding_reserved()
    }

    /// Opens the typed table `name` of records `T`, creating it (with no capacity bound)
    /// if it does not exist. Opening an existing table checks that `T`'s layout is the
    /// one the table was created with: another layout is [`Error::SchemaMismatch`].
    /// See [`Table`](crate::Table).
    pub fn table<T: crate::Record>(&self, name: &str) -> Result<crate::Table<T>> {
        self.engine.check_open()?;
        crate::table::open(&self.engine, name)
    }

    /// [`Db::get`] as a future (it completes at once: reads do not wait on the shard).
    pub fn get_async(&self, key: impl AsRef<[u8]>) -> Ready<Result<Option<Value>>> {
        ready(self.get_bytes(key.as_ref()))
    }

    /// The values of several keys, in the order given.
    ///
    /// Keys whose tree nodes are not cached are read on the calling thread, one after
    /// another.
    pub fn multi_get<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Value>>> {
        self.engine.check_open()?;
        let started = Instant::now();
        let mut checked = Vec::with_capacity(keys.len());
        for k in keys {
            checked.push(Key::user(k.as_ref())?.as_bytes());
        }
        let values = self.engine.get_many(&checked)?;
        if !keys.is_empty() {
            let each = started.elapsed() / keys.len() as u32;
            for _ in 0..keys.len() {
                self.engine.record_get(each);
            }
        }
        Ok(values.into_iter().map(|v| v.map(Value)).collect())
    }

    /// [`Db::multi_get`] as a future (it completes at once).
    pub fn multi_get_async<K: AsRef<[u8]>>(&self, keys: &[K]) -> Ready<Result<Vec<Option<Value>>>> {
        ready(self.multi_get(keys))
    }

    /// Returns when every write acknowledged before the call is on stable storage (a
    /// no-op wait under `Durability::Sync`; a log flush under `Periodic` and `None`).
    pub fn flush(&self) -> Result<()> {
        self.flush_async().wait()
    }

    /// [`Db::flush`], as an [`Ack`].
    pub fn flush_async(&self) -> Ack {
        self.engine.flush()
    }

    /// Writes a checkpoint on every shard now: values written since the last one go to
    /// pages, and log segments the checkpoint covers are deleted. Returns when every
    /// shard's checkpoint is durable. Shards also checkpoint on their own (see
    /// `Options::checkpoint_wal_bytes` and `Options::checkpoint_interval`).
    pub fn checkpoint(&self) -> Result<()> {
        self.checkpoint_async().wait()
    }

    /// [`Db::checkpoint`], as an [`Ack`].
    pub fn checkpoint_async(&self) -> Ack {
        self.engine.checkpoint()
    }

    /// Starts a transaction; see [`Transaction`].
    pub fn transaction(&self) -> Transaction {
        Transaction::new(Arc::clone(&self.engine))
    }

    /// Runs `f` in a transaction and commits it, running it again on a conflict, with
    /// a backoff from [`TRANSACT_BACKOFF_FIRST`](crate::TRANSACT_BACKOFF_FIRST) doubling
    /// up to [`TRANSACT_BACKOFF_MAX`](crate::TRANSACT_BACKOFF_MAX) (with jitter), at most
    /// [`TRANSACT_ATTEMPTS_MAX`](crate::TRANSACT_ATTEMPTS_MAX) times; returns `f`'s value
    /// from the attempt that committed. An error from `f` other than a conflict rolls
    /// back and is returned at once.
    ///
    /// After [`TRANSACT_OPTIMISTIC_ATTEMPTS`](crate::TRANSACT_OPTIMISTIC_ATTEMPTS)
    /// conflicts, each attempt first locks (shared, waiting for writers) the keys the
    /// previous attempt read without writing them, so a large read-mostly transaction
    /// finishes even under constant writes: those keys cannot change before it commits.
    /// So the closure must not itself write such a key with a plain
    /// `put`/`delete`/`write_batch`: that write would wait for the transaction, which
    /// waits for the closure.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let db = ringdb::Db::open(dir.path(), ringdb::Options::default())?;
    /// let n = db.transact(|tx| {
    ///     let n = tx.get(b"counter")?.map_or(0, |v| v[0]) + 1;
    ///     tx.put(b"counter", &[n])?;
    ///     Ok(n)
    /// })?;
    /// assert_eq!(n, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn transact<T>(&self, f: impl FnMut(&mut Transaction) -> Result<T>) -> Result<T> {
        crate::transaction::transact(&self.engine, f)
    }

    /// Makes everything durable and stops the shards. Other clones of this handle get
    /// [`Error::Closed`] afterwards. Dropping the last handle closes too, ignoring errors.
    pub fn close(self) -> Result<()> {
        self.engine.shutdown()
    }

    /// [`Db::close`] as a future: the shutdown runs on a helper thread, so awaiting it
    /// never blocks an executor thread.
    pub fn close_async(self) -> impl Future<Output = Result<()>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let engine = Arc::clone(&self.engine);
        let spawned = std::thread::Builder::new().name("ringdb-close".into()).spawn(move || {
            // `shutdown` releases the directory's lock before it returns.
            let _ = reply.send(engine.shutdown());
        });
        async move {
            spawned.map_err(|e| Error::io("spawn close thread", None, e))?;
            rx.await.unwrap_or(Err(Error::Closed))
        }
    }

    /// Counters and latency histograms since open.
    pub fn stats(&self) -> Stats {
        self.engine.stats()
    }
}

impl Db {
    /// Opens (creating if needed) the blob log named `name` beside this database, in
    /// `<db dir>/blobs/<name>/`. `name` is 1 to 64 ASCII letters, digits, `-` or `_`.
    /// The log is independent of the key-value data: close it on its own.
    /// [`Error::Closed`] once the database is closed.
    pub fn blob_log(&self, name: &str, options: BlobOptions) -> Result<BlobLog> {
        self.engine.check_open()?;
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(Error::InvalidArgument(format!(
                "blob log name {name:?} must be 1 to 64 ASCII letters, digits, '-' or '_'"
            )));
        }
        BlobLog::open(self.path().join("blobs").join(name), options)
    }
}
