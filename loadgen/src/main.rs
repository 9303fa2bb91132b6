//! `loadgen`: drives a ringdb database with a workload from many client threads and
//! reports throughput, HDR latency percentiles and the engine's own counters.
//!
//! With no arguments it runs the default `mixed` workload in a temporary directory:
//! durable random puts from 16 threads, then cached random gets from 2 threads.

mod machine;
mod report;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ringdb::{Db, Durability, IoBackend, Options, WalSync};

use crate::machine::Machine;
use crate::report::{Config, EngineStats, Latency, Phase, Report};
use crate::workload::{BoxError, KeyFormat, Limit, OpMix, PhaseSpec, Values};

/// Load generator for ringdb.
///
/// Opens a database in a fresh directory, runs one workload (two phases for `mixed`) and
/// prints a db_bench-style line per phase, client-side latency percentiles in
/// microseconds and the engine's own counters (WAL batches, fsyncs, wakeups).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Parent directory for the database: loadgen creates a fresh `ringdb-loadgen.*`
    /// directory inside it (so the filesystem under test is PATH's). [default: the
    /// system temporary directory, $TMPDIR or /tmp]
    #[arg(long, value_name = "PATH")]
    dir: Option<PathBuf>,

    /// Keep the database directory at exit instead of removing it (its path is printed).
    #[arg(long)]
    keep: bool,

    /// What the client threads do. `mixed` runs two phases: `fill-random` with
    /// --threads, then (after a preload of the whole key space) `read-random` with
    /// --read-threads.
    #[arg(long, value_enum, default_value_t = WorkloadArg::Mixed)]
    workload: WorkloadArg,

    /// Size of the key space: keys are the indexes 0..N.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    keys: u64,

    /// Key length in bytes: the index as a big-endian u64, padded with '-' to this size.
    #[arg(long, value_name = "BYTES", default_value_t = 16)]
    key_size: usize,

    /// Value length in bytes (deterministic bytes derived from --seed and the key).
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    value_size: usize,

    /// Client threads for the write workloads (fill-seq, fill-random, update, and
    /// mixed's put phase).
    #[arg(long, value_name = "N", default_value_t = 16)]
    threads: usize,

    /// Client threads for read-random, and for mixed's get phase.
    #[arg(long, value_name = "N", default_value_t = 2)]
    read_threads: usize,

    /// Puts in flight per client thread. 1: blocking `put`. More: `put_async`, keeping
    /// this many `Ack`s outstanding and waiting on the oldest (latency is submission to
    /// the moment that wait returns).
    #[arg(long, value_name = "N", default_value_t = 1)]
    inflight: usize,

    /// Length of each timed phase, in seconds (ignored when --ops is given).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    duration: f64,

    /// Run each timed phase for this many operations in total (split evenly over the
    /// threads) instead of for --duration. [default: unset, --duration applies]
    #[arg(long, value_name = "N")]
    ops: Option<u64>,

    /// When a put is acknowledged: `sync` (on stable storage), `periodic` (made durable
    /// within --periodic-ms, 1 MiB or 16384 records), `none` (at once; made durable only
    /// by flush and close).
    #[arg(long, value_enum, default_value_t = DurabilityArg::Sync)]
    durability: DurabilityArg,

    /// Flush interval of --durability periodic, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10)]
    periodic_ms: u64,

    /// Number of shards; 0 means one per CPU this process may run on.
    #[arg(long, value_name = "N", default_value_t = 0)]
    shards: usize,

    /// Open the write-ahead log with O_DIRECT (turn off on tmpfs).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    direct_io: bool,

    /// The shards' I/O backend.
    #[arg(long, value_enum, default_value_t = IoBackendArg::Uring)]
    io_backend: IoBackendArg,

    /// How a WAL batch is made durable: one RWF_DSYNC write, or a write then fdatasync.
    #[arg(long, value_enum, default_value_t = WalSyncArg::Dsync)]
    wal_sync: WalSyncArg,

    /// How long an idle shard polls its queue before sleeping (Options::spin_us), in µs.
    #[arg(long, default_value_t = 50)]
    spin_us: u64,

    /// How long a blocked writer polls for its answer before sleeping
    /// (Options::client_spin_us), in µs.
    #[arg(long, default_value_t = 100)]
    client_spin_us: u64,

    /// Seed of the key choice and the values; the same seed replays the same keys.
    #[arg(long, default_value_t = 42)]
    seed: u64,

    /// Write every key of the key space once before the (first) timed phase, untimed.
    /// read-random and update always preload.
    #[arg(long)]
    preload: bool,

    /// Also write the report as JSON to FILE (schema in loadgen/README.md).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WorkloadArg {
    /// Put keys 0, 1, 2, ... in order (wrapping at --keys).
    FillSeq,
    /// Put uniformly random keys.
    FillRandom,
    /// Get uniformly random keys of a preloaded key space.
    ReadRandom,
    /// Get a random key, then put a new value for it (preloaded key space).
    Update,
    /// fill-random, then read-random: a durable put phase and a cached get phase.
    Mixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DurabilityArg {
    Sync,
    Periodic,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum IoBackendArg {
    Uring,
    Portable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WalSyncArg {
    Dsync,
    Fdatasync,
}

fn value_name<T: ValueEnum>(v: &T) -> String {
    v.to_possible_value().map(|p| p.get_name().to_string()).unwrap_or_default()
}

/// One timed phase to run.
struct PhasePlan {
    name: &'static str,
    mix: OpMix,
    threads: usize,
    preload: bool,
}

fn plan(args: &Args) -> Vec<PhasePlan> {
    let one = |name, mix, threads, preload| vec![PhasePlan { name, mix, threads, preload }];
    match args.workload {
        WorkloadArg::FillSeq => one("fill-seq", OpMix::PutSequential, args.threads, args.preload),
        WorkloadArg::FillRandom => one("fill-random", OpMix::PutRandom, args.threads, args.preload),
        WorkloadArg::ReadRandom => one("read-random", OpMix::GetRandom, args.read_threads, true),
        WorkloadArg::Update => one("update", OpMix::Update, args.threads, true),
        WorkloadArg::Mixed => vec![
            PhasePlan { name: "fill-random", mix: OpMix::PutRandom, threads: args.threads, preload: args.preload },
            PhasePlan { name: "read-random", mix: OpMix::GetRandom, threads: args.read_threads, preload: true },
        ],
    }
}

fn check(args: &Args) -> Result<(), String> {
    if args.keys == 0 {
        return Err("--keys must be at least 1".into());
    }
    if args.key_size == 0 || args.key_size > ringdb::KEY_BYTES_MAX {
        return Err(format!("--key-size must be in 1..={}", ringdb::KEY_BYTES_MAX));
    }
    if args.key_size < 8 && args.keys > 1u64 << (8 * args.key_size) {
        return Err(format!("--keys {} do not fit in {}-byte keys", args.keys, args.key_size));
    }
    if args.value_size > ringdb::VALUE_BYTES_MAX {
        return Err(format!("--value-size must be at most {}", ringdb::VALUE_BYTES_MAX));
    }
    if args.threads == 0 || args.read_threads == 0 || args.inflight == 0 {
        return Err("--threads, --read-threads and --inflight must be at least 1".into());
    }
    if args.ops.is_none() && !(args.duration.is_finite() && args.duration > 0.0) {
        return Err("--duration must be a positive number of seconds".into());
    }
    if args.ops == Some(0) {
        return Err("--ops must be at least 1".into());
    }
    if args.periodic_ms == 0 {
        return Err("--periodic-ms must be at least 1".into());
    }
    Ok(())
}

fn options(args: &Args) -> Options {
    let durability = match args.durability {
        DurabilityArg::Sync => Durability::Sync,
        DurabilityArg::Periodic => {
            Durability::Periodic { bytes: 1 << 20, items: 16_384, interval: Duration::from_millis(args.periodic_ms) }
        }
        DurabilityArg::None => Durability::None,
    };
    Options::default()
        .shards(args.shards)
        .durability(durability)
        .direct_io(args.direct_io)
        .io_backend(match args.io_backend {
            IoBackendArg::Uring => IoBackend::Uring,
            IoBackendArg::Portable => IoBackend::Portable,
        })
        .wal_sync(match args.wal_sync {
            WalSyncArg::Dsync => WalSync::Dsync,
            WalSyncArg::Fdatasync => WalSync::Fdatasync,
        })
        .spin_us(args.spin_us)
        .client_spin_us(args.client_spin_us)
}

fn run(args: &Args) -> Result<(), BoxError> {
    check(args)?;
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("ringdb-loadgen.")
        .tempdir_in(&parent)
        .map_err(|e| format!("create a directory in {}: {e}", parent.display()))?;
    // Removed when `_guard` drops, at the end of `run`, unless --keep.
    let (dir, _guard) = if args.keep { (tmp.keep(), None) } else { (tmp.path().to_path_buf(), Some(tmp)) };

    let machine = Machine::probe(&dir);
    let db = Db::open(&dir, options(args)).map_err(|e| {
        let hint = if machine.fs_type == "tmpfs" && args.direct_io {
            " (it is on tmpfs, which refuses O_DIRECT before Linux 6.6: give --dir on a disk, or --direct-io false)"
        } else {
            ""
        };
        format!("open {}: {e}{hint}", dir.display())
    })?;
    let config = Config {
        dir: dir.display().to_string(),
        kept: args.keep,
        shards: db.shard_count(),
        durability: value_name(&args.durability),
        direct_io: args.direct_io,
        io_backend: value_name(&args.io_backend),
        wal_sync: value_name(&args.wal_sync),
        keys: args.keys,
        key_size: args.key_size,
        value_size: args.value_size,
        seed: args.seed,
    };
    print!("{}", report::header(&machine, &config));

    let key_format = KeyFormat { key_size: args.key_size };
    let values = Values::new(args.value_size, args.seed);
    let limit = match args.ops {
        Some(n) => Limit::Ops(n),
        None => Limit::Duration(Duration::from_secs_f64(args.duration)),
    };
    let mut phases = Vec::new();
    for (i, p) in plan(args).into_iter().enumerate() {
        let preload_seconds = if p.preload {
            eprintln!("loadgen: preloading {} keys ...", args.keys);
            let took = workload::preload(&db, args.keys, key_format, &values, args.threads.clamp(1, 8))?;
            Some(took.as_secs_f64())
        } else {
            None
        };
        let inflight = if p.mix == OpMix::GetRandom || p.mix == OpMix::Update { 1 } else { args.inflight };
        eprintln!(
            "loadgen: {} with {} threads for {} ...",
            p.name,
            p.threads,
            match limit {
                Limit::Ops(n) => format!("{n} ops"),
                Limit::Duration(d) => format!("{:.1} s", d.as_secs_f64()),
            }
        );
        let before = db.stats();
        let spec = PhaseSpec {
            db: &db,
            mix: p.mix,
            threads: p.threads,
            inflight,
            limit,
            keys: args.keys,
            key_format,
            values: &values,
            seed: args.seed.wrapping_add(i as u64),
        };
        let result = workload::run_phase(&spec)?;
        let after = db.stats();
        let seconds = result.elapsed.as_secs_f64();
        let mut latency_us = BTreeMap::new();
        if p.mix.does_puts() {
            latency_us.insert("put".to_string(), Latency::from_ns(&result.put));
        }
        if p.mix.does_gets() {
            latency_us.insert("get".to_string(), Latency::from_ns(&result.get));
        }
        let phase = Phase {
            workload: p.name.to_string(),
            threads: p.threads,
            inflight,
            ops: result.ops,
            seconds,
            throughput_ops: result.ops as f64 / seconds,
            micros_per_op: if result.ops == 0 { 0.0 } else { seconds * 1e6 / result.ops as f64 },
            latency_us,
            found: p.mix.does_gets().then_some(result.found),
            preload_seconds,
            engine_stats: EngineStats::between(&before, &after),
        };
        print!("{}", report::phase_text(&phase));
        phases.push(phase);
    }
    db.close().map_err(|e| format!("close: {e}"))?;
    if args.keep {
        println!("kept       : {}", dir.display());
    }

    let last = phases.last().expect("every workload has a phase").clone();
    let report = Report {
        workload: value_name(&args.workload),
        engine: "ringdb",
        loadgen_version: env!("CARGO_PKG_VERSION"),
        ops: last.ops,
        seconds: last.seconds,
        throughput_ops: last.throughput_ops,
        latency_us: last.latency_us,
        phases,
        machine,
        config,
    };
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
