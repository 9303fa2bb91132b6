//! `loadgen`: drives ringdb (or a peer engine) with a workload from many client threads and
//! reports throughput, HDR latency percentiles and the engine's own counters.
//!
//! With no arguments it runs the default `mixed` workload in a temporary directory:
//! durable random puts from 16 threads, then cached random gets from 2 threads.

mod engine;
mod generator;
mod hlog;
mod machine;
mod plot;
mod report;
mod transfer;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{CommandFactory, Parser, ValueEnum};
use hdrhistogram::Histogram;
use ringdb::{Durability, IoBackend, Options, WalSync};

use crate::engine::{Durable, EngineConfig};
use crate::machine::Machine;
use crate::report::{Config, EngineStats, Latency, Phase, Report};
use crate::workload::{BoxError, Dist, KeyFormat, Limit, Mix, PhaseSpec, ValueSize, Values};

/// Load generator for ringdb.
///
/// Opens a database in a fresh directory, runs one workload (two phases for `mixed`) and
/// prints a db_bench-style line per phase, client-side latency percentiles in
/// microseconds (a table, YCSB's [OVERALL]/[READ] lines and HdrHistogram's percentile
/// distribution) and the engine's own counters (WAL batches, fsyncs, wakeups).
#[derive(Debug, Parser)]
#[command(version, about, long_about, args_override_self = true)]
struct Args {
    /// Parent directory for the database: loadgen creates a fresh `ringdb-loadgen.*`
    /// directory inside it (so the filesystem under test is PATH's). [default: the
    /// system temporary directory, $TMPDIR or /tmp]
    #[arg(long, value_name = "PATH")]
    dir: Option<PathBuf>,

    /// Keep the database directory at exit instead of removing it (its path is printed).
    #[arg(long)]
    keep: bool,

    /// The engine to drive. Peers need loadgen built with the cargo feature of the same
    /// name (`rocksdb` or `rocksdb-system` for rocksdb).
    #[arg(long, value_enum, default_value_t = EngineArg::Ringdb)]
    engine: EngineArg,

    /// What the client threads do. `mixed` runs two phases: `fill-random` with
    /// --threads, then (after a preload of the whole key space) `read-random` with
    /// --read-threads. `a`..`f` are the YCSB core workloads (always preloaded).
    #[arg(long, value_enum, default_value_t = WorkloadArg::Mixed)]
    workload: WorkloadArg,

    /// Size of the key space: keys are the indexes 0..N (YCSB D and E insert past it).
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    keys: u64,

    /// Key length in bytes: the index as a big-endian u64, padded with '-' to this size.
    #[arg(long, value_name = "BYTES", default_value_t = 16)]
    key_size: usize,

    /// Value length in bytes: N, or MIN-MAX for lengths uniform in that range
    /// (deterministic bytes derived from --seed and the key).
    #[arg(long, value_name = "N|MIN-MAX", default_value = "100", value_parser = ValueSize::parse)]
    value_size: ValueSize,

    /// Client threads for the write workloads (fill-seq, fill-random, update, mixed's put
    /// phase) and for the YCSB workloads.
    #[arg(long, value_name = "N", default_value_t = 16)]
    threads: usize,

    /// Client threads for read-random, and for mixed's get phase.
    #[arg(long, value_name = "N", default_value_t = 2)]
    read_threads: usize,

    /// Puts in flight per client thread (fill-seq and fill-random on ringdb). 1: blocking
    /// `put`. More: `put_async`, keeping this many `Ack`s outstanding and waiting on the
    /// oldest (latency is submission to the moment that wait returns).
    #[arg(long, value_name = "N", default_value_t = 1)]
    inflight: usize,

    /// Length of each timed phase, in seconds (ignored when --ops is given).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    duration: f64,

    /// Run each timed phase for this many operations in total (split evenly over the
    /// threads) instead of for --duration. [default: unset, --duration applies]
    #[arg(long, value_name = "N")]
    ops: Option<u64>,

    /// Open loop: issue this many operations per second in total (spread evenly over the
    /// threads) and time each from its scheduled start, so a stall is charged to every
    /// operation it delayed (coordinated-omission correction). [default: unset, closed
    /// loop: each thread issues its next operation when the previous one returns]
    #[arg(long, value_name = "OPS_PER_SEC")]
    rate: Option<f64>,

    /// When a write is acknowledged: `sync` (on stable storage), `periodic` (made durable
    /// within --periodic-ms), `none` (at once; made durable only by flush and close).
    /// Peers map it onto their own settings (loadgen/README.md).
    #[arg(long, value_enum, default_value_t = DurabilityArg::Sync)]
    durability: DurabilityArg,

    /// Flush interval of --durability periodic, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10)]
    periodic_ms: u64,

    /// Number of shards (ringdb); 0 means one per CPU this process may run on.
    #[arg(long, value_name = "N", default_value_t = 0)]
    shards: usize,

    /// Cache size (bytes; suffixes K, M, G for KiB, MiB, GiB): ringdb's page cache
    /// (`Options::cache_bytes`, 64K..=1T) or the peers' block or page caches (not LMDB,
    /// which has none of its own).
    /// [default: each engine's own; ringdb's is 256 MiB]
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    cache: Option<u64>,

    /// Open ringdb's write-ahead log with O_DIRECT (turn off on tmpfs).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    direct_io: bool,

    /// ringdb's shard I/O backend.
    #[arg(long, value_enum, default_value_t = IoBackendArg::Uring)]
    io_backend: IoBackendArg,

    /// How a ringdb WAL batch is made durable: one RWF_DSYNC write, or a write then
    /// fdatasync.
    #[arg(long, value_enum, default_value_t = WalSyncArg::Dsync)]
    wal_sync: WalSyncArg,

    /// How long an idle ringdb shard polls its queue before sleeping (Options::spin_us), in µs.
    #[arg(long, value_name = "US", default_value_t = 50)]
    spin_us: u64,

    /// How long a blocked ringdb writer polls for its answer before sleeping
    /// (Options::client_spin_us), in µs.
    #[arg(long, value_name = "US", default_value_t = 100)]
    client_spin_us: u64,

    /// A ringdb shard checkpoints once this many log bytes were appended since its last
    /// checkpoint (Options::checkpoint_wal_bytes; suffixes K, M, G). [default: ringdb's, 64 MiB]
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    checkpoint_wal_bytes: Option<u64>,

    /// A ringdb shard with writes since its last checkpoint checkpoints at least this
    /// often (Options::checkpoint_interval), in milliseconds. [default: ringdb's, 60000]
    #[arg(long, value_name = "MS")]
    checkpoint_interval_ms: Option<u64>,

    /// Longest YCSB E scan: each scan reads a uniform 1..=N records from its start key.
    #[arg(long, value_name = "N", default_value_t = 100)]
    scan_length: usize,

    /// Key distribution of the YCSB workloads. [default: the workload's own: latest for
    /// D, zipfian (scrambled, constant 0.99) for the others]
    #[arg(long, value_enum, value_name = "DIST")]
    distribution: Option<DistArg>,

    /// Which accounts a `transfer` pairs: on the same shard (one-step commit), on two
    /// shards (prepare and commit), or any two.
    #[arg(long, value_enum, default_value_t = PairsArg::Any)]
    pairs: PairsArg,

    /// Seed of the key choice and the values; the same seed replays the same keys.
    #[arg(long, default_value_t = 42)]
    seed: u64,

    /// Write every key of the key space once before the (first) timed phase, untimed.
    /// read-random, update and the YCSB workloads always preload.
    #[arg(long)]
    preload: bool,

    /// Also write the report as JSON to FILE (schema in loadgen/README.md).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Write HdrHistogram interval logs (one histogram per operation per --interval) to FILE.
    #[arg(long, value_name = "FILE")]
    hlog: Option<PathBuf>,

    /// Draw latency percentiles per operation and throughput over time to FILE (SVG).
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,

    /// Interval of the throughput samples and of the --hlog histograms, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    interval: f64,

    /// Print the engines this build can drive, one a line, and exit.
    #[arg(long)]
    list_engines: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EngineArg {
    Ringdb,
    Rocksdb,
    Fjall,
    Redb,
    Sled,
    Lmdb,
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
    /// YCSB A: 50% read, 50% update, zipfian.
    A,
    /// YCSB B: 95% read, 5% update, zipfian.
    B,
    /// YCSB C: 100% read, zipfian.
    C,
    /// YCSB D: 95% read, 5% insert, latest.
    D,
    /// YCSB E: 95% scan, 5% insert, zipfian.
    E,
    /// YCSB F: 50% read, 50% read-modify-write, zipfian.
    F,
    /// Transactions moving money between two accounts (ringdb only; see --pairs).
    Transfer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PairsArg {
    Any,
    SameShard,
    CrossShard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DistArg {
    Uniform,
    Zipfian,
    Latest,
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

/// Parses a byte count: digits with an optional K, M, G (or KiB, MiB, GiB) suffix.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("`{s}` is not a size such as 67108864, 64M or 1G"))?;
    let mult: u64 = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("`{s}`: unknown size suffix (use K, M or G)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("`{s}` is too large"))
}

/// One timed phase to run.
struct PhasePlan {
    name: String,
    mix: Mix,
    threads: usize,
    preload: bool,
}

fn plan(args: &Args) -> Vec<PhasePlan> {
    let one = |name: &str, mix, threads, preload| vec![PhasePlan { name: name.to_string(), mix, threads, preload }];
    let ycsb = |letter: char| {
        let mix = match args.distribution {
            None => Mix::ycsb(letter),
            Some(DistArg::Uniform) => Mix::ycsb(letter).with_dist(Dist::Uniform),
            Some(DistArg::Zipfian) => Mix::ycsb(letter).with_dist(Dist::Zipfian),
            Some(DistArg::Latest) => Mix::ycsb(letter).with_dist(Dist::Latest),
        };
        one(&format!("ycsb-{letter}"), mix, args.threads, true)
    };
    match args.workload {
        WorkloadArg::FillSeq => one("fill-seq", Mix::PutSequential, args.threads, args.preload),
        WorkloadArg::FillRandom => one("fill-random", Mix::PutRandom, args.threads, args.preload),
        WorkloadArg::ReadRandom => one("read-random", Mix::GetRandom, args.read_threads, true),
        WorkloadArg::Update => one("update", Mix::Update, args.threads, true),
        WorkloadArg::Mixed => vec![
            PhasePlan { name: "fill-random".into(), mix: Mix::PutRandom, threads: args.threads, preload: args.preload },
            PhasePlan { name: "read-random".into(), mix: Mix::GetRandom, threads: args.read_threads, preload: true },
        ],
        WorkloadArg::A => ycsb('a'),
        WorkloadArg::B => ycsb('b'),
        WorkloadArg::C => ycsb('c'),
        WorkloadArg::D => ycsb('d'),
        WorkloadArg::E => ycsb('e'),
        WorkloadArg::F => ycsb('f'),
        WorkloadArg::Transfer => Vec::new(),
    }
}

/// Checks the flags clap cannot check alone.
fn check(args: &Args) -> Result<(), String> {
    let engine = value_name(&args.engine);
    if !engine::compiled_in(&engine) {
        let feature = if engine == "rocksdb" { "rocksdb (or rocksdb-system)".to_string() } else { engine.clone() };
        return Err(format!(
            "--engine {engine}: this loadgen was built without the `{feature}` cargo feature; \
             rebuild with `cargo build --release -p loadgen --features {}`",
            if engine == "rocksdb" { "rocksdb-system" } else { &engine }
        ));
    }
    if engine == "ringdb" && args.cache.is_some_and(|c| !(64 << 10..=1 << 40).contains(&c)) {
        return Err("--cache for ringdb must be in 64K..=1T (Options::cache_bytes)".into());
    }
    if args.keys == 0 {
        return Err("--keys must be at least 1".into());
    }
    if args.key_size == 0 || args.key_size > ringdb::KEY_BYTES_MAX {
        return Err(format!("--key-size must be in 1..={}", ringdb::KEY_BYTES_MAX));
    }
    if args.key_size < 8 && args.keys > 1u64 << (8 * args.key_size) {
        return Err(format!("--keys {} do not fit in {}-byte keys", args.keys, args.key_size));
    }
    if args.value_size.max > ringdb::VALUE_BYTES_MAX {
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
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err("--rate must be a positive number of operations per second".into());
    }
    if !(args.interval.is_finite() && args.interval >= 0.01) {
        return Err("--interval must be at least 0.01 seconds".into());
    }
    if args.periodic_ms == 0 {
        return Err("--periodic-ms must be at least 1".into());
    }
    if args.workload == WorkloadArg::Transfer && engine != "ringdb" {
        return Err("--workload transfer drives ringdb's transactions only (--engine ringdb)".into());
    }
    if args.workload == WorkloadArg::Transfer && args.distribution == Some(DistArg::Latest) {
        return Err("--workload transfer takes --distribution uniform or zipfian".into());
    }
    if args.scan_length == 0 {
        return Err("--scan-length must be at least 1".into());
    }
    if let Some(p) = args.plot.as_ref().filter(|p| p.extension().and_then(|e| e.to_str()) != Some("svg")) {
        return Err(format!("--plot {}: only SVG is drawn; give a FILE.svg", p.display()));
    }
    Ok(())
}

fn ringdb_options(args: &Args) -> Options {
    let durability = match args.durability {
        DurabilityArg::Sync => Durability::Sync,
        DurabilityArg::Periodic => {
            Durability::Periodic { bytes: 1 << 20, items: 16_384, interval: Duration::from_millis(args.periodic_ms) }
        }
        DurabilityArg::None => Durability::None,
    };
    let options = Options::default()
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
        .client_spin_us(args.client_spin_us);
    let options = match args.cache {
        Some(bytes) => options.cache_bytes(bytes),
        None => options,
    };
    let options = match args.checkpoint_wal_bytes {
        Some(bytes) => options.checkpoint_wal_bytes(bytes),
        None => options,
    };
    match args.checkpoint_interval_ms {
        Some(ms) => options.checkpoint_interval(Duration::from_millis(ms)),
        None => options,
    }
}

/// What one phase left for the plot and the interval log.
struct PhaseData {
    name: String,
    started: SystemTime,
    hists: BTreeMap<String, Histogram<u64>>,
    intervals: Vec<workload::IntervalHistogram>,
}

fn run(args: &Args) -> Result<(), BoxError> {
    let engine_name = value_name(&args.engine);
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("ringdb-loadgen.")
        .tempdir_in(&parent)
        .map_err(|e| format!("create a directory in {}: {e}", parent.display()))?;
    // Removed when `_guard` drops, at the end of `run`, unless --keep.
    let (dir, _guard) = if args.keep { (tmp.keep(), None) } else { (tmp.path().to_path_buf(), Some(tmp)) };

    let machine = Machine::probe(&dir);
    let engine_config = EngineConfig {
        durable: match args.durability {
            DurabilityArg::Sync => Durable::Sync,
            DurabilityArg::Periodic => Durable::Periodic { ms: args.periodic_ms },
            DurabilityArg::None => Durable::None,
        },
        cache_bytes: args.cache,
    };
    let db = engine::open(&engine_name, &dir, &engine_config, ringdb_options(args)).map_err(|e| {
        let hint = if engine_name == "ringdb" && machine.fs_type == "tmpfs" && args.direct_io {
            " (it is on tmpfs, which refuses O_DIRECT before Linux 6.6: give --dir on a disk, or --direct-io false)"
        } else {
            ""
        };
        format!("open {engine_name} in {}: {e}{hint}", dir.display())
    })?;
    let config = Config {
        dir: dir.display().to_string(),
        kept: args.keep,
        engine: engine_name.clone(),
        engine_config: db.describe(),
        shards: db.ringdb().map_or(0, |d| d.shard_count()),
        durability: value_name(&args.durability),
        direct_io: args.direct_io,
        io_backend: value_name(&args.io_backend),
        wal_sync: value_name(&args.wal_sync),
        cache_bytes: args.cache,
        cache_applied: args.cache.is_some() && db.applies_cache(),
        keys: args.keys,
        key_size: args.key_size,
        value_size: args.value_size.to_string(),
        scan_length: args.scan_length,
        scan_mode: db.scan_mode().to_string(),
        rate: args.rate,
        seed: args.seed,
    };
    print!("{}", report::header(&machine, &config));
    if args.workload == WorkloadArg::E {
        println!("scans      : {}", db.scan_mode());
    }

    let key_format = KeyFormat { key_size: args.key_size };
    let values = Values::new(args.value_size.max, args.seed);
    let limit = match args.ops {
        Some(n) => Limit::Ops(n),
        None => Limit::Duration(Duration::from_secs_f64(args.duration)),
    };
    if args.workload == WorkloadArg::Transfer {
        let ringdb = db.ringdb().ok_or("--workload transfer needs ringdb")?;
        eprintln!("loadgen: preloading {} accounts ...", args.keys);
        transfer::preload(ringdb, args.keys, key_format)?;
        let pairs = match args.pairs {
            PairsArg::Any => transfer::Pairs::Any,
            PairsArg::SameShard => transfer::Pairs::SameShard,
            PairsArg::CrossShard => transfer::Pairs::CrossShard,
        };
        let dist = match args.distribution {
            Some(DistArg::Zipfian) => transfer::Dist::Zipfian,
            _ => transfer::Dist::Uniform,
        };
        eprintln!("loadgen: transfer on ringdb with {} threads ...", args.threads);
        let spec = transfer::Spec {
            db: ringdb,
            keys: args.keys,
            key_format,
            threads: args.threads,
            limit,
            dist,
            pairs,
            seed: args.seed,
        };
        let outcome = transfer::run(&spec)?;
        print!("{}", transfer::text(&outcome, pairs, dist, args.threads));
        if let Some(path) = &args.json {
            let text = serde_json::to_string_pretty(&outcome)?;
            std::fs::write(path, text + "\n").map_err(|e| format!("write {}: {e}", path.display()))?;
        }
        db.close().map_err(|e| format!("close: {e}"))?;
        return Ok(());
    }
    let mut phases = Vec::new();
    let mut data = Vec::new();
    for (i, p) in plan(args).into_iter().enumerate() {
        let preload_seconds = if p.preload {
            eprintln!("loadgen: preloading {} keys ...", args.keys);
            let took = workload::preload(
                db.as_ref(),
                args.keys,
                key_format,
                &values,
                args.value_size,
                args.threads.clamp(1, 8),
            )?;
            Some(took.as_secs_f64())
        } else {
            None
        };
        let inflight = if p.mix.can_pipeline() && db.has_async_puts() { args.inflight } else { 1 };
        eprintln!(
            "loadgen: {} on {} with {} threads for {} ...",
            p.name,
            db.name(),
            p.threads,
            match limit {
                Limit::Ops(n) => format!("{n} ops"),
                Limit::Duration(d) => format!("{:.1} s", d.as_secs_f64()),
            }
        );
        let before = db.ringdb().map(|d| d.stats());
        let device_before = machine::device_write_bytes(&machine.fs_device);
        let started = SystemTime::now();
        let spec = PhaseSpec {
            engine: db.as_ref(),
            name: &p.name,
            mix: p.mix,
            threads: p.threads,
            inflight,
            limit,
            keys: args.keys,
            key_format,
            values: &values,
            value_size: args.value_size,
            scan_length: args.scan_length,
            rate: args.rate,
            interval: Duration::from_secs_f64(args.interval),
            interval_histograms: args.hlog.is_some(),
            progress: true,
            seed: args.seed.wrapping_add(i as u64),
        };
        let result = workload::run_phase(&spec)?;
        let device_after = machine::device_write_bytes(&machine.fs_device);
        let after = db.ringdb().map(|d| d.stats());
        let seconds = result.elapsed.as_secs_f64();
        let latency_us: BTreeMap<String, Latency> =
            result.latency.iter().map(|(op, h)| (op.name().to_string(), Latency::from_ns(h))).collect();
        let device_write_bytes = match (device_before, device_after) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        let phase = Phase {
            workload: p.name.clone(),
            threads: p.threads,
            inflight,
            target_rate: args.rate,
            ops: result.ops,
            seconds,
            throughput_ops: result.ops as f64 / seconds,
            micros_per_op: if result.ops == 0 { 0.0 } else { seconds * 1e6 / result.ops as f64 },
            latency_us,
            found: p.mix.does_lookups().then_some(result.found),
            scanned_records: result.latency.contains_key(&workload::Op::Scan).then_some(result.scanned),
            inserted: result.latency.contains_key(&workload::Op::Insert).then_some(result.inserted),
            preload_seconds,
            user_bytes: result.user_bytes,
            device_write_bytes,
            device_write_amplification: device_write_bytes
                .filter(|_| result.user_bytes > 0)
                .map(|b| b as f64 / result.user_bytes as f64),
            throughput_series: result.throughput.clone(),
            engine_stats: match (&before, &after) {
                (Some(b), Some(a)) => Some(EngineStats::between(b, a)),
                _ => None,
            },
        };
        let hists: BTreeMap<String, Histogram<u64>> =
            result.latency.into_iter().map(|(op, h)| (op.name().to_string(), h)).collect();
        print!("{}", report::phase_text(&phase, &hists));
        phases.push(phase);
        data.push(PhaseData { name: p.name, started, hists, intervals: result.intervals });
    }
    db.close().map_err(|e| format!("close: {e}"))?;
    if args.keep {
        println!("kept       : {}", dir.display());
    }

    if let Some(path) = &args.hlog {
        let base = data.first().map_or_else(SystemTime::now, |d| d.started);
        let logs: Vec<hlog::PhaseLog<'_>> = data
            .iter()
            .map(|d| hlog::PhaseLog {
                name: &d.name,
                started: d.started,
                offset: d.started.duration_since(base).unwrap_or_default(),
                intervals: &d.intervals,
            })
            .collect();
        hlog::write(path, &logs)?;
        println!("hlog       : {}", path.display());
    }
    if let Some(path) = &args.plot {
        let multi = data.len() > 1;
        let label = |phase: &str, op: &str| if multi { format!("{phase} {op}") } else { op.to_string() };
        let latency: Vec<plot::LatencySeries<'_>> = data
            .iter()
            .flat_map(|d| d.hists.iter().map(|(op, h)| plot::LatencySeries { label: label(&d.name, op), histogram: h }))
            .collect();
        let throughput: Vec<plot::ThroughputSeries<'_>> = phases
            .iter()
            .map(|p| plot::ThroughputSeries { label: p.workload.clone(), points: &p.throughput_series })
            .collect();
        let title = format!(
            "loadgen {} on {engine_name}: {} keys, {} B values, durability {}",
            value_name(&args.workload),
            args.keys,
            args.value_size,
            value_name(&args.durability)
        );
        plot::write_svg(path, &title, &latency, &throughput)?;
        println!("plot       : {}", path.display());
    }

    let last = phases.last().expect("every workload has a phase").clone();
    let report = Report {
        workload: value_name(&args.workload),
        engine: engine_name,
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
    if args.list_engines {
        for e in EngineArg::value_variants() {
            let name = value_name(e);
            if engine::compiled_in(&name) {
                println!("{name}");
            }
        }
        return std::process::ExitCode::SUCCESS;
    }
    if let Err(msg) = check(&args) {
        // Bad flags: clap's format and exit code (2), like a parse error.
        Args::command().error(clap::error::ErrorKind::ValueValidation, msg).exit();
    }
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("8k"), Ok(8 << 10));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("M").is_err());
    }

    #[test]
    fn flags_parse() {
        Args::command().debug_assert();
        let a = Args::try_parse_from(["loadgen", "--workload", "e", "--value-size", "10-20", "--rate", "1000"])
            .expect("valid flags");
        assert_eq!(a.workload, WorkloadArg::E);
        assert_eq!(a.value_size, ValueSize { min: 10, max: 20 });
        assert_eq!(a.rate, Some(1000.0));
        assert!(check(&a).is_ok());
        assert!(Args::try_parse_from(["loadgen", "--workload", "g"]).is_err());
        assert!(Args::try_parse_from(["loadgen", "--value-size", "20-10"]).is_err());
        let bad = Args::try_parse_from(["loadgen", "--rate", "0"]).expect("parses");
        assert!(check(&bad).is_err());
    }
}
