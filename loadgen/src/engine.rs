//! The small trait loadgen drives, and its implementations: ringdb always, and the peer
//! engines (RocksDB, fjall, redb, sled, LMDB) behind cargo features of the same names.

use std::path::Path;

use ringdb::{Ack, Db, Options, WriteBatch};

use crate::workload::BoxError;

/// How writes are acknowledged, mapped onto each engine's own durability setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durable {
    /// Acknowledged once on stable storage.
    Sync,
    /// Made durable within `ms` milliseconds.
    Periodic { ms: u64 },
    /// Acknowledged at once; durable only after a flush or close.
    None,
}

/// What the engine-independent flags ask of an engine (only the peers read it).
#[derive(Debug, Clone)]
#[cfg_attr(
    not(any(
        feature = "rocksdb",
        feature = "rocksdb-system",
        feature = "fjall",
        feature = "redb",
        feature = "sled",
        feature = "lmdb"
    )),
    allow(dead_code)
)]
pub struct EngineConfig {
    pub durable: Durable,
    /// Cache size in bytes (`--cache`), if given.
    pub cache_bytes: Option<u64>,
}

/// A write whose acknowledgement may still be outstanding (`--inflight` above 1).
pub enum Pending {
    /// Already acknowledged.
    Done,
    /// A ringdb `put_async`.
    Ringdb(Ack),
}

impl Pending {
    pub fn wait(self) -> Result<(), BoxError> {
        match self {
            Pending::Done => Ok(()),
            Pending::Ringdb(ack) => Ok(ack.wait()?),
        }
    }
}

/// The operations loadgen's workloads need. Implementations must be shareable by the
/// client threads.
pub trait Engine: Send + Sync {
    /// Short name (`ringdb`, `rocksdb`, ...).
    fn name(&self) -> &'static str;
    /// How `--durability`, `--cache` and the rest were applied, for the report.
    fn describe(&self) -> String;
    /// Writes one key, returning when it is acknowledged under the configured durability.
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), BoxError>;
    /// Starts a write (ringdb: `put_async`); engines without one write synchronously.
    fn put_async(&self, key: &[u8], value: &[u8]) -> Result<Pending, BoxError> {
        self.put(key, value).map(|()| Pending::Done)
    }
    /// Whether `put_async` really overlaps writes.
    fn has_async_puts(&self) -> bool {
        false
    }
    /// Reads one key; returns the value's length if found.
    fn get(&self, key: &[u8]) -> Result<Option<usize>, BoxError>;
    /// Reads `keys.len()` records in key order starting at `keys[0]` (a range scan), and
    /// returns how many it read. `keys` are the consecutive keys of the key space from
    /// `keys[0]` on, so an engine without range scans could read exactly those keys.
    fn scan(&self, keys: &[Vec<u8>]) -> Result<usize, BoxError>;
    /// Whether `--cache` sets a cache of this engine's (LMDB has none of its own).
    fn applies_cache(&self) -> bool {
        true
    }
    /// How `scan` works on this engine (for the report).
    fn scan_mode(&self) -> &'static str;
    /// Loads records in bulk (the untimed preload); durable by the end of `finish_load`.
    fn load(&self, records: &[(Vec<u8>, &[u8])]) -> Result<(), BoxError>;
    /// Makes everything loaded durable.
    fn finish_load(&self) -> Result<(), BoxError>;
    /// ringdb's own database, for its statistics.
    fn ringdb(&self) -> Option<&Db> {
        None
    }
    /// Flushes and closes.
    fn close(self: Box<Self>) -> Result<(), BoxError>;
}

/// Whether this build includes `engine` (peers are cargo features).
// With every feature on, the arms are all `true` and clippy would suggest `matches!`.
#[allow(clippy::match_like_matches_macro)]
pub fn compiled_in(engine: &str) -> bool {
    match engine {
        "ringdb" => true,
        "rocksdb" => cfg!(any(feature = "rocksdb", feature = "rocksdb-system")),
        "fjall" => cfg!(feature = "fjall"),
        "redb" => cfg!(feature = "redb"),
        "sled" => cfg!(feature = "sled"),
        "lmdb" => cfg!(feature = "lmdb"),
        _ => false,
    }
}

/// Opens `engine` in `dir` (an empty directory). `ringdb_options` applies to ringdb only.
pub fn open(
    engine: &str,
    dir: &Path,
    config: &EngineConfig,
    ringdb_options: Options,
) -> Result<Box<dyn Engine>, BoxError> {
    match engine {
        "ringdb" => Ok(Box::new(RingDb::open(dir, ringdb_options)?)),
        #[cfg(any(feature = "rocksdb", feature = "rocksdb-system"))]
        "rocksdb" => Ok(Box::new(peers::Rocks::open(dir, config)?)),
        #[cfg(feature = "fjall")]
        "fjall" => Ok(Box::new(peers::Fjall::open(dir, config)?)),
        #[cfg(feature = "redb")]
        "redb" => Ok(Box::new(peers::Redb::open(dir, config)?)),
        #[cfg(feature = "sled")]
        "sled" => Ok(Box::new(peers::Sled::open(dir, config)?)),
        #[cfg(feature = "lmdb")]
        "lmdb" => Ok(Box::new(peers::Lmdb::open(dir, config)?)),
        _ => {
            let _ = config;
            Err(format!("loadgen was built without the `{engine}` feature").into())
        }
    }
}

/// ringdb through its public API.
pub struct RingDb {
    db: Db,
}

impl RingDb {
    pub fn open(dir: &Path, options: Options) -> Result<RingDb, BoxError> {
        Ok(RingDb { db: Db::open(dir, options)? })
    }
}

impl Engine for RingDb {
    fn name(&self) -> &'static str {
        "ringdb"
    }

    fn describe(&self) -> String {
        format!("ringdb {} ({} shards)", env!("CARGO_PKG_VERSION"), self.db.shard_count())
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), BoxError> {
        Ok(self.db.put(key, value)?)
    }

    fn put_async(&self, key: &[u8], value: &[u8]) -> Result<Pending, BoxError> {
        Ok(Pending::Ringdb(self.db.put_async(key, value)))
    }

    fn has_async_puts(&self) -> bool {
        true
    }

    fn get(&self, key: &[u8]) -> Result<Option<usize>, BoxError> {
        Ok(self.db.get(key)?.map(|v| v.len()))
    }

    fn scan(&self, keys: &[Vec<u8>]) -> Result<usize, BoxError> {
        let mut n = 0;
        for item in self.db.scan(keys[0].as_slice()..).take(keys.len()) {
            item?;
            n += 1;
        }
        Ok(n)
    }

    fn scan_mode(&self) -> &'static str {
        "range scan (Db::scan from the start key)"
    }

    fn load(&self, records: &[(Vec<u8>, &[u8])]) -> Result<(), BoxError> {
        let mut batch = WriteBatch::new();
        for (k, v) in records {
            batch.put(k, v)?;
        }
        Ok(self.db.write_batch(batch)?)
    }

    fn finish_load(&self) -> Result<(), BoxError> {
        // A checkpoint ends the bulk load, so the workload reads what a long-running
        // database holds (records in the tree, an empty memtable), not the memtable alone.
        self.db.flush()?;
        Ok(self.db.checkpoint()?)
    }

    fn ringdb(&self) -> Option<&Db> {
        Some(&self.db)
    }

    fn close(self: Box<Self>) -> Result<(), BoxError> {
        Ok(self.db.close()?)
    }
}

#[cfg(any(
    feature = "rocksdb",
    feature = "rocksdb-system",
    feature = "fjall",
    feature = "redb",
    feature = "sled",
    feature = "lmdb"
))]
mod peers {
    #[allow(unused_imports)]
    use super::{BoxError, Durable, Engine, EngineConfig};
    #[allow(unused_imports)]
    use std::path::Path;

    /// RocksDB (`rocksdb` crate 0.20.1): one default column family. `--durability sync`:
    /// every write with `WriteOptions::set_sync(true)` (the WAL is fsynced before the
    /// write returns). `periodic`: `sync(false)` plus a thread calling `flush_wal(true)`
    /// every `--periodic-ms`. `none`: `sync(false)`. `--cache`: the LRU block cache size.
    #[cfg(any(feature = "rocksdb", feature = "rocksdb-system"))]
    pub struct Rocks {
        db: std::sync::Arc<rocksdb::DB>,
        write: rocksdb::WriteOptions,
        durable: Durable,
        cache_bytes: Option<u64>,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
        flusher: Option<std::thread::JoinHandle<()>>,
    }

    #[cfg(any(feature = "rocksdb", feature = "rocksdb-system"))]
    impl Rocks {
        pub fn open(dir: &Path, config: &EngineConfig) -> Result<Rocks, BoxError> {
            use std::sync::Arc;
            use std::sync::atomic::{AtomicBool, Ordering};
            let mut opts = rocksdb::Options::default();
            opts.create_if_missing(true);
            opts.increase_parallelism(std::thread::available_parallelism().map(|n| n.get() as i32).unwrap_or(2));
            if let Some(bytes) = config.cache_bytes {
                let cache = rocksdb::Cache::new_lru_cache(bytes as usize)?;
                let mut table = rocksdb::BlockBasedOptions::default();
                table.set_block_cache(&cache);
                opts.set_block_based_table_factory(&table);
            }
            let db = Arc::new(rocksdb::DB::open(&opts, dir)?);
            let mut write = rocksdb::WriteOptions::default();
            write.set_sync(config.durable == Durable::Sync);
            let stop = Arc::new(AtomicBool::new(false));
            let flusher = match config.durable {
                Durable::Periodic { ms } => {
                    let (db, stop) = (Arc::clone(&db), Arc::clone(&stop));
                    Some(std::thread::spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(std::time::Duration::from_millis(ms));
                            let _ = db.flush_wal(true);
                        }
                    }))
                }
                _ => None,
            };
            Ok(Rocks { db, write, durable: config.durable, cache_bytes: config.cache_bytes, stop, flusher })
        }
    }

    #[cfg(any(feature = "rocksdb", feature = "rocksdb-system"))]
    impl Engine for Rocks {
        fn name(&self) -> &'static str {
            "rocksdb"
        }

        fn describe(&self) -> String {
            let how = match self.durable {
                Durable::Sync => "WriteOptions::set_sync(true) on every write".to_string(),
                Durable::Periodic { ms } => format!("sync(false), flush_wal(true) every {ms} ms"),
                Durable::None => "sync(false)".to_string(),
            };
            let cache =
                self.cache_bytes.map(|b| format!("{b} B LRU block cache")).unwrap_or("default block cache".into());
            let lib = if cfg!(feature = "rocksdb") { "bundled librocksdb" } else { "system librocksdb" };
            format!("rocksdb crate 0.20.1 ({lib}); {how}; {cache}")
        }

        fn put(&self, key: &[u8], value: &[u8]) -> Result<(), BoxError> {
            Ok(self.db.put_opt(key, value, &self.write)?)
        }

        fn get(&self, key: &[u8]) -> Result<Option<usize>, BoxError> {
            Ok(self.db.get_pinned(key)?.map(|v| v.len()))
        }

        fn scan(&self, keys: &[Vec<u8>]) -> Result<usize, BoxError> {
            let mode = rocksdb::IteratorMode::From(&keys[0], rocksdb::Direction::Forward);
            let mut n = 0;
            for item in self.db.iterator(mode).take(keys.len()) {
                item?;
                n += 1;
            }
            Ok(n)
        }

        fn scan_mode(&self) -> &'static str {
            "range scan (DB::iterator from the start key)"
        }

        fn load(&self, records: &[(Vec<u8>, &[u8])]) -> Result<(), BoxError> {
            let mut batch = rocksdb::WriteBatch::default();
            for (k, v) in records {
                batch.put(k, v);
            }
            Ok(self.db.write(batch)?)
        }

        fn finish_load(&self) -> Result<(), BoxError> {
            Ok(self.db.flush_wal(true)?)
        }

        fn close(mut self: Box<Self>) -> Result<(), BoxError> {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            if let Some(t) = self.flusher.take() {
                let _ = t.join();
            }
            self.db.flush_wal(true)?;
            Ok(())
        }
    }

    /// Calls `sync` every `ms` milliseconds on a thread of its own until `stop` is set: the
    /// `--durability periodic` of the peers that have no timer of their own.
    #[cfg(any(feature = "fjall", feature = "redb", feature = "lmdb"))]
    fn spawn_syncer(
        ms: u64,
        stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
        sync: impl Fn() + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        let stop = std::sync::Arc::clone(stop);
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(ms));
                sync();
            }
        })
    }

    /// Stops and joins a thread started by `spawn_syncer`.
    #[cfg(any(feature = "fjall", feature = "redb", feature = "lmdb"))]
    fn stop_syncer(
        stop: &std::sync::atomic::AtomicBool,
        syncer: &mut Option<std::thread::JoinHandle<()>>,
    ) -> Result<(), BoxError> {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        match syncer.take().map(std::thread::JoinHandle::join) {
            Some(Err(_)) => Err("the periodic sync thread panicked".into()),
            _ => Ok(()),
        }
    }

    /// fjall 3.x: one keyspace. `--durability sync`: every write is a one-item batch
    /// committed with `durability(Some(PersistMode::SyncAll))` (journal fsynced on
    /// commit). `periodic`: plain `insert` plus a loadgen thread calling
    /// `Database::persist(PersistMode::SyncAll)` every `--periodic-ms` (fjall 3 has no
    /// fsync timer of its own). `none`: plain `insert` (journal flushed to the OS, not
    /// synced). `--cache`: `DatabaseBuilder::cache_size`.
    #[cfg(feature = "fjall")]
    pub struct Fjall {
        db: fjall::Database,
        keyspace: fjall::Keyspace,
        durable: Durable,
        cache_bytes: Option<u64>,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
        syncer: Option<std::thread::JoinHandle<()>>,
    }

    #[cfg(feature = "fjall")]
    impl Fjall {
        pub fn open(dir: &Path, config: &EngineConfig) -> Result<Fjall, BoxError> {
            let mut builder = fjall::Database::builder(dir);
            if let Some(bytes) = config.cache_bytes {
                builder = builder.cache_size(bytes);
            }
            let db = builder.open()?;
            let keyspace = db.keyspace("loadgen", fjall::KeyspaceCreateOptions::default)?;
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let syncer = match config.durable {
                Durable::Periodic { ms } => {
                    let db = db.clone();
                    Some(spawn_syncer(ms, &stop, move || {
                        let _ = db.persist(fjall::PersistMode::SyncAll);
                    }))
                }
                _ => None,
            };
            Ok(Fjall { db, keyspace, durable: config.durable, cache_bytes: config.cache_bytes, stop, syncer })
        }
    }

    #[cfg(feature = "fjall")]
    impl Engine for Fjall {
        fn name(&self) -> &'static str {
            "fjall"
        }

        fn describe(&self) -> String {
            let how = match self.durable {
                Durable::Sync => "each write a batch committed with PersistMode::SyncAll".to_string(),
                Durable::Periodic { ms } => format!("insert, Database::persist(SyncAll) every {ms} ms"),
                Durable::None => "insert, journal buffered by the OS".to_string(),
            };
            let cache = self.cache_bytes.map(|b| format!("cache_size {b} B")).unwrap_or("default cache".into());
            format!("fjall 3.x; {how}; {cache}")
        }

        fn put(&self, key: &[u8], value: &[u8]) -> Result<(), BoxError> {
            if self.durable == Durable::Sync {
                let mut batch = self.db.batch().durability(Some(fjall::PersistMode::SyncAll));
                batch.insert(&self.keyspace, key, value);
                batch.commit()?;
            } else {
                self.keyspace.insert(key, value)?;
            }
            Ok(())
        }

        fn get(&self, key: &[u8]) -> Result<Option<usize>, BoxError> {
            Ok(self.keyspace.get(key)?.map(|v| v.len()))
        }

        fn scan(&self, keys: &[Vec<u8>]) -> Result<usize, BoxError> {
            let mut n = 0;
            for item in self.keyspace.range(keys[0].as_slice()..).take(keys.len()) {
                // A `Guard` reads nothing until asked: take the key and value, as the
                // other engines' iterators hand them out.
                item.into_inner()?;
                n += 1;
            }
            Ok(n)
        }

        fn scan_mode(&self) -> &'static str {
            "range scan (Keyspace::range from the start key)"
        }

        fn load(&self, records: &[(Vec<u8>, &[u8])]) -> Result<(), BoxError> {
            let mut batch = self.db.batch();
            for (k, v) in records {
                batch.insert(&self.keyspace, k.as_slice(), *v);
            }
            Ok(batch.commit()?)
        }

        fn finish_load(&self) -> Result<(), BoxError> {
            Ok(self.db.persist(fjall::PersistMode::SyncAll)?)
        }

        fn close(mut self: Box<Self>) -> Result<(), BoxError> {
            stop_syncer(&self.stop, &mut self.syncer)?;
            Ok(self.db.persist(fjall::PersistMode::SyncAll)?)
        }
    }

    #[cfg(feature = "redb")]
    const REDB_TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("loadgen");

    /// redb 4.x: one table, one write transaction per write. `--durability sync`: redb's
    /// default `Durability::Immediate` (the commit is fsynced). `periodic`:
    /// `Durability::None` (made durable by a later Immediate commit; loadgen commits an
    /// empty one every `--periodic-ms` from a background thread). `none`:
    /// `Durability::None`. `--cache`: `Builder::set_cache_size`. Writers are serialized
    /// by redb.
    #[cfg(feature = "redb")]
    pub struct Redb {
        db: std::sync::Arc<redb::Database>,
        durable: Durable,
        cache_bytes: Option<u64>,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
        syncer: Option<std::thread::JoinHandle<()>>,
    }

    #[cfg(feature = "redb")]
    impl Redb {
        pub fn open(dir: &Path, config: &EngineConfig) -> Result<Redb, BoxError> {
            let mut builder = redb::Builder::new();
            if let Some(bytes) = config.cache_bytes {
                builder.set_cache_size(usize::try_from(bytes)?);
            }
            let db = std::sync::Arc::new(builder.create(dir.join("loadgen.redb"))?);
            let txn = db.begin_write()?;
            txn.open_table(REDB_TABLE)?;
            txn.commit()?;
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let syncer = match config.durable {
                Durable::Periodic { ms } => {
                    let db = std::sync::Arc::clone(&db);
                    Some(spawn_syncer(ms, &stop, move || {
                        // An empty commit with the default Durability::Immediate makes the
                        // Durability::None commits before it durable.
                        if let Ok(txn) = db.begin_write() {
                            let _ = txn.commit();
                        }
                    }))
                }
                _ => None,
            };
            Ok(Redb { db, durable: config.durable, cache_bytes: config.cache_bytes, stop, syncer })
        }

        fn durability(&self) -> redb::Durability {
            match self.durable {
                Durable::Sync => redb::Durability::Immediate,
                Durable::Periodic { .. } | Durable::None => redb::Durability::None,
            }
        }

        /// Commits an empty transaction with the default `Durability::Immediate`, which
        /// makes every earlier `Durability::None` commit durable.
        fn commit_durable(&self) -> Result<(), BoxError> {
            self.db.begin_write()?.commit()?;
            Ok(())
        }
    }

    #[cfg(feature = "redb")]
    impl Engine for Redb {
        fn name(&self) -> &'static str {
            "redb"
        }

        fn describe(&self) -> String {
            let how = match self.durable {
                Durable::Sync => "one write transaction per write, Durability::Immediate (default)".to_string(),
                Durable::Periodic { ms } => {
                    format!("Durability::None, an Immediate commit every {ms} ms")
                }
                Durable::None => "Durability::None".to_string(),
            };
            let cache = self.cache_bytes.map(|b| format!("cache {b} B")).unwrap_or("default cache".into());
            format!("redb 4.x; {how}; {cache}")
        }

        fn put(&self, key: &[u8], value: &[u8]) -> Result<(), BoxError> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(self.durability())?;
            {
                let mut table = txn.open_table(REDB_TABLE)?;
                table.insert(key, value)?;
            }
            txn.commit()?;
            Ok(())
        }

        fn get(&self, key: &[u8]) -> Result<Option<usize>, BoxError> {
            use redb::ReadableDatabase;
            let txn = self.db.begin_read()?;
            let table = txn.open_table(REDB_TABLE)?;
            Ok(table.get(key)?.map(|v| v.value().len()))
        }

        fn scan(&self, keys: &[Vec<u8>]) -> Result<usize, BoxError> {
            use redb::ReadableDatabase;
            let txn = self.db.begin_read()?;
            let table = txn.open_table(REDB_TABLE)?;
            let mut n = 0;
            for item in table.range(keys[0].as_slice()..)?.take(keys.len()) {
                item?;
                n += 1;
            }
            Ok(n)
        }

        fn scan_mode(&self) -> &'static str {
            "range scan (Table::range from the start key)"
        }

        fn load(&self, records: &[(Vec<u8>, &[u8])]) -> Result<(), BoxError> {
            let mut txn = self.db.begin_write()?;
            // Made durable once, by `finish_load`.
            txn.set_durability(redb::Durability::None)?;
            {
                let mut table = txn.open_table(REDB_TABLE)?;
                for (k, v) in records {
                    table.insert(k.as_slice(), *v)?;
                }
            }
            txn.commit()?;
            Ok(())
        }

        fn finish_load(&self) -> Result<(), BoxError> {
            self.commit_durable()
        }

        fn close(mut self: Box<Self>) -> Result<(), BoxError> {
            stop_syncer(&self.stop, &mut self.syncer)?;
            self.commit_durable()
        }
    }

    /// Room for the LMDB map: address space, not memory or disk (the file grows as pages
    /// are written). 256 GiB holds any workload loadgen's flags can describe on the
    /// machines it runs on; a bigger one fails with LMDB's `MDB_MAP_FULL`.
    #[cfg(feature = "lmdb")]
    const LMDB_MAP_BYTES: usize = 256 << 30;

    /// LMDB through heed 0.23 (LMDB `mdb.master`, compiled from C by lmdb-master-sys): the
    /// unnamed database, one write transaction per write (LMDB serializes writers).
    /// `--durability sync`: LMDB's default, every commit syncs its pages, then writes the
    /// meta page through an `O_DSYNC` descriptor, before `commit` returns. `periodic`: the environment opened with
    /// `EnvFlags::NO_SYNC` (commits are not synced) plus a loadgen thread calling
    /// `Env::force_sync` every `--periodic-ms`. `none`: `NO_SYNC`, synced only after the
    /// preload and at close. `--cache` does not apply: LMDB reads through the OS page
    /// cache of its memory map.
    #[cfg(feature = "lmdb")]
    pub struct Lmdb {
        env: heed::Env,
        db: heed::Database<'static, heed::types::Bytes, heed::types::Bytes>,
        durable: Durable,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
        syncer: Option<std::thread::JoinHandle<()>>,
    }

    #[cfg(feature = "lmdb")]
    impl Lmdb {
        pub fn open(dir: &Path, config: &EngineConfig) -> Result<Lmdb, BoxError> {
            let dir = dir.join("lmdb");
            std::fs::create_dir_all(&dir)?;
            let mut options = heed::EnvOpenOptions::new();
            options.map_size(LMDB_MAP_BYTES);
            if config.durable != Durable::Sync {
                // SAFETY: NO_SYNC is marked unsafe for what it risks on a crash (the last
                // commits lost, and with some file systems a damaged file): that is
                // exactly the trade `--durability periodic|none` asks for, and this
                // process never reads the file after a crash.
                unsafe {
                    options.flags(heed::EnvFlags::NO_SYNC);
                }
            }
            // SAFETY: LMDB maps the file into memory; nothing else opens or modifies
            // this fresh directory while the environment is open (loadgen created it
            // for this run).
            let env = unsafe { options.open(&dir)? };
            let wtxn = env.write_txn()?;
            let db = env
                .create_databases_and_commit(wtxn, |opener, wtxn| {
                    opener.create_database(wtxn, None).map(heed::CommitOrAbort::<_, ()>::Commit)
                })?
                .unwrap_commit();
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let syncer = match config.durable {
                Durable::Periodic { ms } => {
                    let env = env.clone();
                    Some(spawn_syncer(ms, &stop, move || {
                        let _ = env.force_sync();
                    }))
                }
                _ => None,
            };
            Ok(Lmdb { env, db, durable: config.durable, stop, syncer })
        }
    }

    #[cfg(feature = "lmdb")]
    impl Engine for Lmdb {
        fn name(&self) -> &'static str {
            "lmdb"
        }

        fn describe(&self) -> String {
            let how = match self.durable {
                Durable::Sync => "one write transaction per write, synced on commit (default)".to_string(),
                Durable::Periodic { ms } => format!("EnvFlags::NO_SYNC, Env::force_sync every {ms} ms"),
                Durable::None => "EnvFlags::NO_SYNC".to_string(),
            };
            format!("lmdb (heed 0.23); {how}; map size {LMDB_MAP_BYTES} B, OS page cache")
        }

        fn applies_cache(&self) -> bool {
            false
        }

        fn put(&self, key: &[u8], value: &[u8]) -> Result<(), BoxError> {
            let mut txn = self.env.write_txn()?;
            self.db.put(&mut txn, key, value)?;
            txn.commit()?;
            Ok(())
        }

        fn get(&self, key: &[u8]) -> Result<Option<usize>, BoxError> {
            let txn = self.env.read_txn()?;
            Ok(self.db.get(&txn, key)?.map(<[u8]>::len))
        }

        fn scan(&self, keys: &[Vec<u8>]) -> Result<usize, BoxError> {
            let txn = self.env.read_txn()?;
            let from = (std::ops::Bound::Included(keys[0].as_slice()), std::ops::Bound::Unbounded);
            let mut n = 0;
            for item in self.db.range(&txn, &from)?.take(keys.len()) {
                item?;
                n += 1;
            }
            Ok(n)
        }

        fn scan_mode(&self) -> &'static str {
            "range scan (Database::range from the start key)"
        }

        fn load(&self, records: &[(Vec<u8>, &[u8])]) -> Result<(), BoxError> {
            // Under `--durability sync` each of these commits is synced too: LMDB's sync
            // is a property of the environment, not of a transaction.
            let mut txn = self.env.write_txn()?;
            for (k, v) in records {
                self.db.put(&mut txn, k, v)?;
            }
            txn.commit()?;
            Ok(())
        }

        fn finish_load(&self) -> Result<(), BoxError> {
            Ok(self.env.force_sync()?)
        }

        fn close(mut self: Box<Self>) -> Result<(), BoxError> {
            stop_syncer(&self.stop, &mut self.syncer)?;
            Ok(self.env.force_sync()?)
        }
    }

    /// sled 0.34: the default tree. `--durability sync`: `flush_every_ms(None)` and
    /// `Db::flush()` after every write (sled's documented way to make a write durable).
    /// `periodic`: `flush_every_ms(Some(--periodic-ms))`. `none`: `flush_every_ms(None)`,
    /// no flushes. `--cache`: `Config::cache_capacity`.
    #[cfg(feature = "sled")]
    pub struct Sled {
        db: sled::Db,
        durable: Durable,
        cache_bytes: Option<u64>,
    }

    #[cfg(feature = "sled")]
    impl Sled {
        pub fn open(dir: &Path, config: &EngineConfig) -> Result<Sled, BoxError> {
            let mut c = sled::Config::new().path(dir.join("sled"));
            if let Some(bytes) = config.cache_bytes {
                c = c.cache_capacity(bytes);
            }
            c = c.flush_every_ms(match config.durable {
                Durable::Periodic { ms } => Some(ms),
                _ => None,
            });
            Ok(Sled { db: c.open()?, durable: config.durable, cache_bytes: config.cache_bytes })
        }
    }

    #[cfg(feature = "sled")]
    impl Engine for Sled {
        fn name(&self) -> &'static str {
            "sled"
        }

        fn describe(&self) -> String {
            let how = match self.durable {
                Durable::Sync => "flush_every_ms(None), Db::flush() after every write".to_string(),
                Durable::Periodic { ms } => format!("flush_every_ms(Some({ms}))"),
                Durable::None => "flush_every_ms(None), no flush".to_string(),
            };
            let cache = self.cache_bytes.map(|b| format!("cache_capacity {b} B")).unwrap_or("default cache".into());
            format!("sled 0.34; {how}; {cache}")
        }

        fn put(&self, key: &[u8], value: &[u8]) -> Result<(), BoxError> {
            self.db.insert(key, value)?;
            if self.durable == Durable::Sync {
                self.db.flush()?;
            }
            Ok(())
        }

        fn get(&self, key: &[u8]) -> Result<Option<usize>, BoxError> {
            Ok(self.db.get(key)?.map(|v| v.len()))
        }

        fn scan(&self, keys: &[Vec<u8>]) -> Result<usize, BoxError> {
            let mut n = 0;
            for item in self.db.range(keys[0].as_slice()..).take(keys.len()) {
                item?;
                n += 1;
            }
            Ok(n)
        }

        fn scan_mode(&self) -> &'static str {
            "range scan (Tree::range from the start key)"
        }

        fn load(&self, records: &[(Vec<u8>, &[u8])]) -> Result<(), BoxError> {
            let mut batch = sled::Batch::default();
            for (k, v) in records {
                batch.insert(k.as_slice(), *v);
            }
            Ok(self.db.apply_batch(batch)?)
        }

        fn finish_load(&self) -> Result<(), BoxError> {
            self.db.flush()?;
            Ok(())
        }

        fn close(self: Box<Self>) -> Result<(), BoxError> {
            self.db.flush()?;
            Ok(())
        }
    }
}
