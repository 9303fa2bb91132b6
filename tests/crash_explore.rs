//! Crash-state exploration on the simulated disk: a seeded workload over the key-value
//! API (puts, deletes, batches, large values that become chunks, checkpoints, flushes,
//! reopen cycles) is cut by a power cut at a random I/O operation, the disk keeps a
//! random subset of its unsynced writes (some torn), and the reopened database must hold
//! every durable write with its latest value and no half-applied batch (see
//! `common::sim::Model`); open must not fail. Some runs then flip bits at rest: open and
//! reads must then answer `Error::Corruption` or data that was written, never other data.
//!
//! `RINGDB_CRASH_STATES=<n>` sets how many crash states to explore (default 15,000; a soak:
//! `RINGDB_CRASH_STATES=1000000 cargo test --release --test crash_explore -- --nocapture`).
//! The base seed comes from `RINGDB_SEED` (printed); a failing run prints its own seed,
//! and `RINGDB_REPLAY=<run seed>` replays just that run (a `crash_extremes` run with
//! `RINGDB_REPLAY_MODE=keep-none` or `keep-all` as well).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Rng;
use common::sim::{Model, Op, Write, read_all};
use ringdb::{CrashMode, Db, Durability, Error, IoBackend, Options, SimDisk, SimFaults, WalSync, WriteBatch};

/// A soak prints its progress every this many crash states.
const PROGRESS_STATES: u64 = 50_000;

/// Keys the workload writes (few, so keys are overwritten and deleted often).
const KEYS: u64 = 48;

#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    states: u64,
    /// Crash states in which some unsettled operation survived, and in which some was lost.
    kept_some: u64,
    lost_some: u64,
    flips: u64,
    flips_detected: u64,
    checkpoints: u64,
    torn_writes: u64,
    /// Faults injected, and opens that failed under them.
    faults: u64,
    faulted_opens: u64,
    /// Power cuts during an open.
    recovery_crashes: u64,
}

impl Figures {
    fn add(&mut self, o: &Figures) {
        self.states += o.states;
        self.kept_some += o.kept_some;
        self.lost_some += o.lost_some;
        self.flips += o.flips;
        self.flips_detected += o.flips_detected;
        self.checkpoints += o.checkpoints;
        self.torn_writes += o.torn_writes;
        self.faults += o.faults;
        self.faulted_opens += o.faulted_opens;
        self.recovery_crashes += o.recovery_crashes;
    }
}

/// A run's settings, all drawn from its seed.
struct Setup {
    options: Options,
    shards: usize,
    /// Acknowledged writes are durable only once flushed (`Periodic` or `None`).
    periodic: bool,
    /// I/O faults injected while the workload runs (none at reopen, or only for a first
    /// attempt that may fail with `Error::Io`).
    faults: Option<SimFaults>,
    faults_at_open: bool,
    cycles: u32,
    pipeline_max: u64,
    flip: bool,
}

fn setup(seed: u64, disk: &SimDisk) -> Setup {
    let mut rng = Rng::for_parts(&[seed, 1]);
    let shards = if rng.range(0, 3) == 0 { 2 } else { 1 };
    let (periodic, durability) = match rng.range(0, 7) {
        // Flushed only when asked (or when a batch fills): acknowledged writes stay at risk.
        0 => (true, Durability::Periodic { bytes: 1 << 20, items: 100_000, interval: Duration::from_secs(3600) }),
        1 => (true, Durability::None),
        _ => (false, Durability::Sync),
    };
    let faults = (rng.range(0, 3) == 0).then(|| {
        let mut rate = || [0, 0, 2_000, 10_000, 40_000][rng.range(0, 4) as usize];
        SimFaults {
            read_eio_ppm: rate(),
            write_eio_ppm: rate(),
            sync_eio_ppm: rate(),
            short_ppm: rate(),
            enospc_ppm: rate(),
            latency_ppm: rate() * 10,
        }
    });
    let options = Options::default()
        .io_backend(IoBackend::Sim(disk.clone()))
        .shards(shards)
        .durability(durability)
        .wal_sync(if rng.range(0, 1) == 0 { WalSync::Dsync } else { WalSync::Fdatasync })
        .pin_threads(false)
        .spin_us(0)
        .client_spin_us(0)
        .wal_segment_bytes(64 << 10)
        .checkpoint_wal_bytes(64 << 10)
        .group_commit_bytes_max(4096 << rng.range(0, 3))
        .cache_bytes(64 << 10)
        .page_records_max(rng.range(2, 8) as usize)
        .page_chunk_bytes(512);
    Setup {
        options,
        shards,
        periodic,
        faults,
        faults_at_open: rng.range(0, 2) == 0,
        cycles: rng.range(2, 4) as u32,
        pipeline_max: rng.range(1, 4),
        flip: rng.range(0, 6) == 0,
    }
}

fn value(rng: &mut Rng, seed: u64, op: u64) -> Vec<u8> {
    let len = match rng.range(0, 9) {
        0 => rng.range(600, 5000),    // a chunk of its own
        1 | 2 => rng.range(100, 500), // a large page record
        _ => rng.range(0, 40),
    } as usize;
    let mut v = format!("{seed:x}.{op}.").into_bytes();
    v.extend((0..len).map(|i| b'a' + ((op as usize + i) % 26) as u8));
    v
}

fn key(rng: &mut Rng) -> Vec<u8> {
    format!("k{:03}", rng.range(0, KEYS - 1)).into_bytes()
}

fn random_op(rng: &mut Rng, seed: u64, n: u64) -> Op {
    match rng.range(0, 9) {
        0 | 1 => Op { label: "delete", writes: vec![(key(rng), None)] },
        2 | 3 => {
            let count = rng.range(2, 6);
            let writes: Vec<Write> = (0..count)
                .map(|i| {
                    let k = key(rng);
                    if rng.range(0, 4) == 0 { (k, None) } else { (k, Some(value(rng, seed, n * 8 + i))) }
                })
                .collect();
            Op { label: "batch", writes }
        }
        _ => Op { label: "put", writes: vec![(key(rng), Some(value(rng, seed, n * 8)))] },
    }
}

fn submit(db: &Db, op: &Op) -> ringdb::Ack {
    if op.label == "batch" {
        let mut batch = WriteBatch::new();
        for (k, v) in &op.writes {
            match v {
                Some(v) => batch.put(k, v).expect("sizes are in range"),
                None => batch.delete(k).expect("sizes are in range"),
            };
        }
        return db.write_batch_async(batch);
    }
    // Transactions (being built in parallel) join here: an `Op` whose writes commit or
    // vanish together, across shards, checked by `Model::settle` as one part per shard.
    match &op.writes[0] {
        (k, Some(v)) => db.put_async(k, v),
        (k, None) => db.delete_async(k),
    }
}

/// Runs the workload on an open database until the disk stops or `steps` are done.
fn run_cycle(db: &Db, s: &Setup, model: &mut Model, rng: &mut Rng, seed: u64, figures: &mut Figures, ops: &mut u64) {
    let steps = rng.range(4, 40);
    for _ in 0..steps {
        match rng.range(0, 19) {
            0 => {
                if db.checkpoint().is_err() {
                    return;
                }
                figures.checkpoints += 1;
            }
            1 => {
                if db.flush().is_err() {
                    return;
                }
                // Everything acknowledged before the flush is durable.
                let n = model.tail.len();
                model.durable_prefix(n);
            }
            2 | 3 => {
                // Reads see every acknowledged write (everything in the tail was acknowledged).
                let k = key(rng);
                let want = model.latest().get(&k).cloned();
                match db.get(&k) {
                    Ok(got) => assert_eq!(
                        got.map(|v| v.to_vec()),
                        want,
                        "seed {seed}: get({}) before any crash",
                        String::from_utf8_lossy(&k)
                    ),
                    Err(_) => return,
                }
            }
            _ => {
                let inflight = rng.range(1, s.pipeline_max);
                let mut acks = Vec::new();
                for _ in 0..inflight {
                    *ops += 1;
                    let op = random_op(rng, seed, *ops);
                    acks.push(submit(db, &op));
                    model.issue(op);
                }
                let count = acks.len();
                for (i, ack) in acks.into_iter().enumerate() {
                    if ack.wait().is_err() {
                        // This one failed; the rest are dropped unawaited.
                        model.unacknowledged(count - i);
                        return;
                    }
                    if !s.periodic {
                        // Acknowledged under Sync: durable, like everything before it (the
                        // tail holds nothing older: each earlier write was acknowledged).
                        model.durable_prefix(1);
                    }
                }
            }
        }
    }
}

fn all_keys() -> Vec<Vec<u8>> {
    (0..KEYS).map(|i| format!("k{i:03}").into_bytes()).collect()
}

/// One run: several open / work / crash cycles on a fresh disk. Returns its figures, or
/// what went wrong.
fn explore(seed: u64, crash_mode: Option<CrashMode>, verbose: bool) -> Result<Figures, String> {
    let disk = SimDisk::new(seed);
    let s = setup(seed, &disk);
    if verbose {
        println!(
            "setup: {} shards, faults {:?} (at open: {}), cycles {}, pipeline {}, flip {}, {:?}",
            s.shards, s.faults, s.faults_at_open, s.cycles, s.pipeline_max, s.flip, s.options
        );
    }
    let mut rng = Rng::for_parts(&[seed, 2]);
    let mut model = Model::default();
    let mut figures = Figures::default();
    let mut ops = 0u64;
    let dir = Path::new("/db");
    let mut mutations_per_cycle = 150;
    for cycle in 0..=s.cycles {
        let mut db = None;
        if cycle > 0 && rng.range(0, 2) == 0 {
            // A power cut during recovery itself (cutting a torn tail into quarantine,
            // removing spare segments, preparing a segment): that open fails, and the
            // next one must still find the right state.
            disk.crash_after_ops(rng.range(1, 24));
            match Db::open(dir, s.options.clone()) {
                Ok(opened) if !disk.frozen() => {
                    disk.disarm();
                    db = Some(opened);
                }
                // The cut came in a step whose failure open tolerates (preparing the next
                // segment ahead of need): the database opened on a dead disk.
                Ok(opened) => {
                    drop(opened);
                    disk.crash(rng.next_u64());
                    figures.recovery_crashes += 1;
                }
                Err(_) if disk.frozen() => {
                    disk.crash(rng.next_u64());
                    figures.recovery_crashes += 1;
                }
                Err(e) => return Err(format!("cycle {cycle}: open failed: {e}")),
            }
        }
        if let Some(faults) = s.faults.filter(|_| s.faults_at_open && cycle > 0 && db.is_none()) {
            // A first attempt under faults may fail, but only with an I/O error.
            disk.set_faults(faults);
            match Db::open(dir, s.options.clone()) {
                Ok(opened) => db = Some(opened),
                Err(Error::Io { .. }) => figures.faulted_opens += 1,
                Err(e) => return Err(format!("cycle {cycle}: open under I/O faults failed with {e}, not Error::Io")),
            }
        }
        disk.set_faults(SimFaults::default());
        let db = match db {
            Some(db) => db,
            None => Db::open(dir, s.options.clone()).map_err(|e| format!("cycle {cycle}: open failed: {e}"))?,
        };
        if cycle > 0 {
            let actual = read_all(&db, &all_keys()).map_err(|e| format!("cycle {cycle}: read failed: {e}"))?;
            let before = model.tail.len();
            let latest = model.latest();
            model.settle(&actual, |k| db.shard_of(k), s.shards).map_err(|e| format!("cycle {cycle}: {e}"))?;
            figures.states += 1;
            if before > 0 {
                if actual == latest {
                    figures.kept_some += 1;
                } else {
                    figures.lost_some += 1;
                }
            }
        }
        if cycle == s.cycles {
            db.close().map_err(|e| format!("final close: {e}"))?;
            break;
        }
        let start = disk.stats().mutations;
        if rng.range(0, 4) != 0 {
            disk.crash_after_ops(rng.range(1, mutations_per_cycle));
        }
        if let Some(faults) = s.faults {
            disk.set_faults(faults);
        }
        run_cycle(&db, &s, &mut model, &mut rng, seed, &mut figures, &mut ops);
        drop(db);
        disk.set_faults(SimFaults::default());
        mutations_per_cycle = (disk.stats().mutations - start).clamp(20, 2000);
        let crash_seed = rng.next_u64();
        let mode = match crash_mode {
            Some(mode) => {
                disk.crash_with(mode, crash_seed);
                mode
            }
            None => disk.crash(crash_seed),
        };
        if verbose {
            println!("cycle {cycle}: crash {mode:?}, {} unsettled operations", model.tail.len());
        }
    }
    figures.torn_writes = disk.stats().torn_writes;
    figures.faults = disk.stats().faults;
    if s.flip {
        figures.flips += 1;
        let flipped = disk.flip_bits(rng.next_u64(), rng.range(1, 3) as u32);
        if verbose {
            println!("flipped {flipped:?}");
        }
        let corruption = |e: &Error| matches!(e, Error::Corruption { .. });
        match Db::open(dir, s.options.clone()) {
            Err(e) if corruption(&e) => figures.flips_detected += 1,
            Err(e) => return Err(format!("after bit flips at {flipped:?}: open failed with {e}, not Corruption")),
            Ok(db) => match read_all(&db, &all_keys()) {
                Err(e) if corruption(&e) => figures.flips_detected += 1,
                Err(e) => return Err(format!("after bit flips at {flipped:?}: read failed with {e}, not Corruption")),
                Ok(actual) => {
                    for (k, v) in &actual {
                        if !model.history.get(k).is_some_and(|h| h.contains(v)) {
                            return Err(format!(
                                "after bit flips at {flipped:?}: key {} holds a value never written",
                                String::from_utf8_lossy(k)
                            ));
                        }
                    }
                }
            },
        }
    }
    Ok(figures)
}

fn run_seed(base: u64, i: u64) -> u64 {
    let mut rng = Rng::for_parts(&[base, i]);
    rng.next_u64()
}

#[test]
fn crash_states() {
    if let Ok(replay) = std::env::var("RINGDB_REPLAY") {
        let seed: u64 = replay.trim().parse().expect("RINGDB_REPLAY must be an unsigned integer");
        // `crash_extremes` runs keep none or all of the unsynced writes at each crash.
        let mode = match std::env::var("RINGDB_REPLAY_MODE").as_deref() {
            Ok("keep-none") => Some(CrashMode::KeepNone),
            Ok("keep-all") => Some(CrashMode::KeepAll),
            _ => None,
        };
        match explore(seed, mode, true) {
            Ok(f) => println!("run seed={seed}: passed, {f:?}"),
            Err(e) => panic!("run seed={seed}: {e}"),
        }
        return;
    }
    let target: u64 = std::env::var("RINGDB_CRASH_STATES").map_or(15_000, |s| s.trim().parse().expect("a count"));
    let base = common::seed("crash_states");
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4);
    let next = Arc::new(AtomicU64::new(0));
    let states = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (next, states, failed) = (Arc::clone(&next), Arc::clone(&states), Arc::clone(&failed));
            std::thread::spawn(move || {
                let mut figures = Figures::default();
                while states.load(Ordering::Relaxed) < target && !failed.load(Ordering::Relaxed) {
                    let seed = run_seed(base, next.fetch_add(1, Ordering::Relaxed));
                    match explore(seed, None, false) {
                        Ok(f) => {
                            let before = states.fetch_add(f.states, Ordering::Relaxed);
                            if (before + f.states) / PROGRESS_STATES != before / PROGRESS_STATES {
                                println!("crash_states: {} states so far", before + f.states);
                            }
                            figures.add(&f);
                        }
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            return Err(format!("run seed={seed}: {e}\n  replay: RINGDB_REPLAY={seed} cargo test --release --test crash_explore -- --nocapture"));
                        }
                    }
                }
                Ok(figures)
            })
        })
        .collect();
    let mut total = Figures::default();
    let mut errors = Vec::new();
    for h in handles {
        match h.join().expect("worker panicked") {
            Ok(f) => total.add(&f),
            Err(e) => errors.push(e),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "crash_states: {} crash states in {} runs, {:.1} s ({:.0} per minute on {workers} threads); {:?}",
        total.states,
        next.load(Ordering::Relaxed),
        secs,
        total.states as f64 * 60.0 / secs,
        total
    );
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    // The exploration must reach the states it is for: unsettled writes kept and lost,
    // torn writes, checkpoints, and detected corruption.
    if target >= 500 {
        assert!(total.kept_some > 0 && total.lost_some > 0, "{total:?}");
        assert!(total.torn_writes > 0 && total.checkpoints > 0, "{total:?}");
        assert!(total.flips_detected > 0, "{total:?}");
        assert!(total.faults > 0 && total.faulted_opens > 0 && total.recovery_crashes > 0, "{total:?}");
    }
}

/// A run that keeps no unsynced write at each crash and one that keeps all of them, on
/// the same seeds: the workload must survive both extremes.
#[test]
fn crash_extremes() {
    let base = common::seed("crash_extremes");
    for i in 0..40 {
        let seed = run_seed(base, 1_000_000 + i);
        let mode = if i % 2 == 0 { CrashMode::KeepNone } else { CrashMode::KeepAll };
        if let Err(e) = explore(seed, Some(mode), false) {
            panic!("run seed={seed} with {mode:?}: {e}");
        }
    }
}
