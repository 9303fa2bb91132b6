//! The report: db_bench-, YCSB- and HdrHistogram-style text on stdout, and the JSON
//! document of `--json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use ringdb::{OpKind, Stats};
use serde::Serialize;

use crate::machine::Machine;

/// A latency summary in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean: f64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

impl Latency {
    /// Summarises a histogram recorded in nanoseconds.
    pub fn from_ns(h: &Histogram<u64>) -> Latency {
        Latency {
            count: h.len(),
            mean: h.mean() / 1000.0,
            min: if h.is_empty() { 0.0 } else { us(h.min()) },
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p95: us(h.value_at_quantile(0.95)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            p9999: us(h.value_at_quantile(0.9999)),
            max: us(h.max()),
        }
    }
}

/// ringdb's own counters over one phase (differences of two `Db::stats()` snapshots).
#[derive(Debug, Clone, Serialize)]
pub struct EngineStats {
    pub shards: usize,
    pub puts: u64,
    pub gets: u64,
    pub wal_batches: u64,
    pub wal_records: u64,
    pub mean_batch_records: f64,
    pub fsyncs: u64,
    pub wal_bytes: u64,
    /// Key and value bytes callers wrote (`Stats::write_bytes`).
    pub write_bytes: u64,
    /// `(wal_bytes + checkpoint bytes) / write_bytes`: bytes the engine wrote to its log and
    /// data files per byte callers wrote (null without writes).
    pub write_amplification: Option<f64>,
    /// Page reads served from the page cache, and those that missed it.
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// cache_hits / (cache_hits + cache_misses); null when no page was looked up (every
    /// read was served from values held in memory).
    pub cache_hit_ratio: Option<f64>,
    /// Pages read from disk, pages and chunks written by checkpoints, checkpoints done.
    pub pages_read: u64,
    pub pages_written: u64,
    pub chunks_written: u64,
    pub checkpoints: u64,
    pub wakeups: u64,
    pub requests: u64,
    pub keys: u64,
    /// Latency as the engine measured it (request creation to acknowledgement for writes).
    pub latency_us: BTreeMap<String, Latency>,
}

impl EngineStats {
    /// What happened between two snapshots of the same database.
    pub fn between(before: &Stats, after: &Stats) -> EngineStats {
        // A copy of `after` holding differences, so `Stats::mean_batch_records` applies.
        let mut delta = after.clone();
        delta.wal_batches -= before.wal_batches;
        delta.wal_records -= before.wal_records;
        let mut latency_us = BTreeMap::new();
        for kind in OpKind::ALL {
            let Some(now) = after.latency(kind) else { continue };
            let mut h = now.clone();
            if let Some(then) = before.latency(kind) {
                // Counts only grow between snapshots, so this cannot underflow.
                let _ = h.subtract(then);
            }
            if !h.is_empty() {
                latency_us.insert(kind.name().to_string(), Latency::from_ns(&h));
            }
        }
        let wal_bytes = after.wal_bytes - before.wal_bytes;
        let checkpoint_bytes = after.checkpoint_bytes_total.saturating_sub(before.checkpoint_bytes_total);
        let write_bytes = after.write_bytes - before.write_bytes;
        let cache_hits = after.cache_hits - before.cache_hits;
        let cache_misses = after.cache_misses - before.cache_misses;
        EngineStats {
            shards: after.shards,
            puts: after.puts - before.puts,
            gets: after.gets - before.gets,
            wal_batches: delta.wal_batches,
            wal_records: delta.wal_records,
            mean_batch_records: delta.mean_batch_records(),
            fsyncs: after.fsyncs - before.fsyncs,
            wal_bytes,
            write_bytes,
            write_amplification: (write_bytes > 0).then(|| (wal_bytes + checkpoint_bytes) as f64 / write_bytes as f64),
            cache_hits,
            cache_misses,
            cache_hit_ratio: (cache_hits + cache_misses > 0)
                .then(|| cache_hits as f64 / (cache_hits + cache_misses) as f64),
            pages_read: after.pages_read - before.pages_read,
            pages_written: after.pages_written - before.pages_written,
            chunks_written: after.chunks_written - before.chunks_written,
            checkpoints: after.checkpoints - before.checkpoints,
            wakeups: after.wakeups - before.wakeups,
            requests: after.requests - before.requests,
            keys: after.keys,
            latency_us,
        }
    }
}

/// One timed phase.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub workload: String,
    pub threads: usize,
    pub inflight: usize,
    /// Target ops/s of an open-loop run (`--rate`); null for a closed loop.
    pub target_rate: Option<f64>,
    pub ops: u64,
    pub seconds: f64,
    pub throughput_ops: f64,
    pub micros_per_op: f64,
    /// Client-side latency per operation kind ("put", "get", "read", "update", "insert",
    /// "scan", "read-modify-write").
    pub latency_us: BTreeMap<String, Latency>,
    /// Point lookups that found their key (present when the phase did lookups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<u64>,
    /// Records returned by scans (YCSB E).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scanned_records: Option<u64>,
    /// Keys inserted past the key space (YCSB D, E).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inserted: Option<u64>,
    /// Seconds spent loading the key space before this phase (not part of `seconds`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preload_seconds: Option<f64>,
    /// Key and value bytes the clients wrote.
    pub user_bytes: u64,
    /// Bytes the block device under --dir wrote during the phase (the whole device:
    /// other writers count too); null if unknown.
    pub device_write_bytes: Option<u64>,
    /// device_write_bytes / user_bytes; null if either is unknown or zero.
    pub device_write_amplification: Option<f64>,
    /// [seconds since the phase start, ops/s over the interval ending there].
    pub throughput_series: Vec<(f64, f64)>,
    /// ringdb's own counters; null for the peer engines.
    pub engine_stats: Option<EngineStats>,
}

/// The options the database ran with, and the workload's shape.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub dir: String,
    pub kept: bool,
    pub engine: String,
    pub engine_config: String,
    pub shards: usize,
    pub durability: String,
    pub direct_io: bool,
    pub io_backend: String,
    pub wal_sync: String,
    /// `--cache` in bytes; null when not given.
    pub cache_bytes: Option<u64>,
    /// Whether `--cache` was given (and passed to the engine).
    pub cache_applied: bool,
    pub keys: u64,
    pub key_size: usize,
    /// `--value-size` as given: "100" or "100-1000".
    pub value_size: String,
    pub scan_length: usize,
    pub scan_mode: String,
    pub rate: Option<f64>,
    pub seed: u64,
}

/// The `--json` document. The top-level `ops` .. `latency_us` repeat the last phase.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub workload: String,
    pub engine: String,
    pub loadgen_version: &'static str,
    pub ops: u64,
    pub seconds: f64,
    pub throughput_ops: f64,
    pub latency_us: BTreeMap<String, Latency>,
    pub phases: Vec<Phase>,
    pub machine: Machine,
    pub config: Config,
}

pub fn header(machine: &Machine, config: &Config) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "ringdb loadgen {}", env!("CARGO_PKG_VERSION"));
    let model = machine.cpu_model.as_deref().map(|m| format!(" ({m})")).unwrap_or_default();
    let _ = writeln!(s, "machine    : Linux {}, {} CPUs{model}", machine.kernel, machine.cpus);
    let _ = writeln!(s, "filesystem : {} on {} (mounted at {})", machine.fs_type, machine.fs_device, machine.fs_mount);
    let _ = writeln!(s, "engine     : {}", config.engine_config);
    if config.engine == "ringdb" {
        let _ = writeln!(
            s,
            "database   : {} ({}), {} shards, durability {}, direct_io {}, io_backend {}, wal_sync {}",
            config.dir,
            if config.kept { "kept" } else { "removed at exit" },
            config.shards,
            config.durability,
            config.direct_io,
            config.io_backend,
            config.wal_sync
        );
    } else {
        let _ = writeln!(
            s,
            "database   : {} ({}), durability {}",
            config.dir,
            if config.kept { "kept" } else { "removed at exit" },
            config.durability
        );
    }
    let cache = match (config.cache_bytes, config.cache_applied) {
        (None, _) => "engine default".to_string(),
        (Some(b), true) => format!("{b} B"),
        (Some(b), false) => format!("{b} B requested, n/a for {}", config.engine),
    };
    let rate = config.rate.map(|r| format!("open loop at {r:.0} ops/s")).unwrap_or("closed loop".into());
    let _ = writeln!(
        s,
        "keys       : {} keys of {} B, values of {} B, seed {}, cache {cache}, {rate}",
        config.keys, config.key_size, config.value_size, config.seed
    );
    s
}

/// YCSB's name of an operation in `[READ]`-style lines.
fn ycsb_name(op: &str) -> String {
    op.to_uppercase()
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "n/a".into())
}

pub fn phase_text(p: &Phase, hists: &BTreeMap<String, Histogram<u64>>) -> String {
    let mut s = String::new();
    if let Some(secs) = p.preload_seconds {
        let _ = writeln!(s, "{:<12} : key space loaded in {secs:.2} s (not timed)", "preload");
    }
    let mode = match p.target_rate {
        Some(r) => format!("open loop at {r:.0} ops/s, latency from the intended start"),
        None => "closed loop".to_string(),
    };
    // db_bench's line.
    let _ = writeln!(
        s,
        "{:<12} : {:>10.3} micros/op; {:>10.0} ops/sec; ({} threads x {} in flight, {mode}, {} ops in {:.3} s)",
        p.workload, p.micros_per_op, p.throughput_ops, p.threads, p.inflight, p.ops, p.seconds
    );
    let _ = writeln!(
        s,
        "  {:<17} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  (client-side, µs)",
        "op", "count", "mean", "p50", "p90", "p99", "p99.9", "p99.99", "max"
    );
    for (name, l) in &p.latency_us {
        let _ = writeln!(
            s,
            "  {:<17} {:>10} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            name, l.count, l.mean, l.p50, l.p90, l.p99, l.p999, l.p9999, l.max
        );
    }
    if let Some(found) = p.found {
        let lookups: u64 = ["get", "read"].iter().filter_map(|n| p.latency_us.get(*n)).map(|l| l.count).sum();
        let pct = if lookups == 0 { 0.0 } else { 100.0 * found as f64 / lookups as f64 };
        let _ = writeln!(s, "  lookups found : {found} of {lookups} ({pct:.1}%)");
    }
    if let Some(n) = p.scanned_records {
        let _ = writeln!(s, "  scans read    : {n} records");
    }
    if let Some(n) = p.inserted {
        let _ = writeln!(s, "  inserted      : {n} new keys");
    }
    let _ = writeln!(
        s,
        "  device        : {} written for {:.1} MiB of keys and values (device write amplification {})",
        p.device_write_bytes.map(|b| format!("{:.1} MiB", b as f64 / (1 << 20) as f64)).unwrap_or("n/a".into()),
        p.user_bytes as f64 / (1 << 20) as f64,
        fmt_opt(p.device_write_amplification, 2)
    );
    match &p.engine_stats {
        Some(e) => {
            let _ = writeln!(
                s,
                "  engine        : {} WAL batches, {:.1} records/batch, {} fsyncs, {:.1} MiB WAL, write amplification {} (WAL bytes / user bytes), {} wakeups, {} requests",
                e.wal_batches,
                e.mean_batch_records,
                e.fsyncs,
                e.wal_bytes as f64 / (1 << 20) as f64,
                fmt_opt(e.write_amplification, 2),
                e.wakeups,
                e.requests
            );
            let _ = writeln!(
                s,
                "  page store    : cache hit ratio {}, {} pages read, {} pages and {} chunks written by {} checkpoints",
                match e.cache_hit_ratio {
                    Some(r) => format!("{:.1}% ({} hits, {} misses)", 100.0 * r, e.cache_hits, e.cache_misses),
                    None => "n/a (no page lookups)".to_string(),
                },
                e.pages_read,
                e.pages_written,
                e.chunks_written,
                e.checkpoints
            );
            for (name, l) in &e.latency_us {
                let _ = writeln!(
                    s,
                    "  engine {:<7}: p50 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs, max {:.2} µs ({} ops, as the engine timed them)",
                    name, l.p50, l.p99, l.p999, l.max, l.count
                );
            }
        }
        None => {
            let _ = writeln!(
                s,
                "  engine        : n/a (WAL batches, fsyncs, cache hit ratio and write amplification are ringdb's own counters)"
            );
        }
    }
    // YCSB's summary lines.
    let _ = writeln!(s, "  [OVERALL], RunTime(ms), {:.0}", p.seconds * 1000.0);
    let _ = writeln!(s, "  [OVERALL], Throughput(ops/sec), {:.1}", p.throughput_ops);
    for (name, l) in &p.latency_us {
        let n = ycsb_name(name);
        let _ = writeln!(s, "  [{n}], Operations, {}", l.count);
        let _ = writeln!(s, "  [{n}], AverageLatency(us), {:.3}", l.mean);
        let _ = writeln!(s, "  [{n}], MinLatency(us), {:.3}", l.min);
        let _ = writeln!(s, "  [{n}], MaxLatency(us), {:.3}", l.max);
        let _ = writeln!(s, "  [{n}], 95thPercentileLatency(us), {:.3}", l.p95);
        let _ = writeln!(s, "  [{n}], 99thPercentileLatency(us), {:.3}", l.p99);
        let _ = writeln!(s, "  [{n}], 99.9thPercentileLatency(us), {:.3}", l.p999);
        let _ = writeln!(s, "  [{n}], Return=OK, {}", l.count);
    }
    // HdrHistogram's percentile distribution, at the usual quantiles.
    for (name, h) in hists {
        if h.is_empty() {
            continue;
        }
        let _ = writeln!(s, "  {name}: HdrHistogram percentile distribution (µs)");
        let _ = writeln!(s, "  {:>12} {:>14} {:>10} {:>16}", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
        for q in [0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 0.9999, 1.0] {
            let v = if q == 1.0 { h.max() } else { h.value_at_quantile(q) };
            let count = h.count_between(0, v);
            let inv = if q >= 1.0 { "inf".to_string() } else { format!("{:.2}", 1.0 / (1.0 - q)) };
            let _ = writeln!(s, "  {:>12.3} {:>14.12} {:>10} {:>16}", us(v), q, count, inv);
        }
        let _ =
            writeln!(s, "  #[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]", h.mean() / 1000.0, h.stdev() / 1000.0);
        let _ = writeln!(s, "  #[Max     = {:>12.3}, Total count    = {:>12}]", us(h.max()), h.len());
    }
    s
}
