//! The report: db_bench-style text on stdout and the JSON document of `--json`.

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
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
}

impl Latency {
    /// Summarises a histogram recorded in nanoseconds.
    pub fn from_ns(h: &Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            p9999: us(h.value_at_quantile(0.9999)),
            max: us(h.max()),
        }
    }
}

/// The engine's own counters over one phase (differences of two `Db::stats()` snapshots).
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
        EngineStats {
            shards: after.shards,
            puts: after.puts - before.puts,
            gets: after.gets - before.gets,
            wal_batches: delta.wal_batches,
            wal_records: delta.wal_records,
            mean_batch_records: delta.mean_batch_records(),
            fsyncs: after.fsyncs - before.fsyncs,
            wal_bytes: after.wal_bytes - before.wal_bytes,
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
    pub ops: u64,
    pub seconds: f64,
    pub throughput_ops: f64,
    pub micros_per_op: f64,
    /// Client-side latency per operation kind ("put", "get").
    pub latency_us: BTreeMap<String, Latency>,
    /// Gets that found their key (present when the phase did gets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<u64>,
    /// Seconds spent loading the key space before this phase (not part of `seconds`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preload_seconds: Option<f64>,
    pub engine_stats: EngineStats,
}

/// The options the database ran with, and the workload's shape.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub dir: String,
    pub kept: bool,
    pub shards: usize,
    pub durability: String,
    pub direct_io: bool,
    pub io_backend: String,
    pub wal_sync: String,
    pub keys: u64,
    pub key_size: usize,
    pub value_size: usize,
    pub seed: u64,
}

/// The `--json` document. The top-level `ops` .. `latency_us` repeat the last phase.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub workload: String,
    pub engine: &'static str,
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
    let _ = writeln!(
        s,
        "keys       : {} keys of {} B, values of {} B, seed {}",
        config.keys, config.key_size, config.value_size, config.seed
    );
    s
}

pub fn phase_text(p: &Phase) -> String {
    let mut s = String::new();
    if let Some(secs) = p.preload_seconds {
        let _ = writeln!(s, "{:<12} : {} keys in {secs:.2} s (not timed)", "preload", p.engine_stats.keys);
    }
    let _ = writeln!(
        s,
        "{:<12} : {:>10.3} micros/op; {:>10.0} ops/sec; ({} threads x {} in flight, {} ops in {:.3} s)",
        p.workload, p.micros_per_op, p.throughput_ops, p.threads, p.inflight, p.ops, p.seconds
    );
    let _ = writeln!(
        s,
        "  {:<5} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  (client-side, µs)",
        "op", "count", "mean", "p50", "p90", "p99", "p99.9", "p99.99", "max"
    );
    for (name, l) in &p.latency_us {
        let _ = writeln!(
            s,
            "  {:<5} {:>10} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            name, l.count, l.mean, l.p50, l.p90, l.p99, l.p999, l.p9999, l.max
        );
    }
    if let (Some(found), Some(gets)) = (p.found, p.latency_us.get("get")) {
        let pct = if gets.count == 0 { 0.0 } else { 100.0 * found as f64 / gets.count as f64 };
        let _ = writeln!(s, "  gets found : {found} of {} ({pct:.1}%)", gets.count);
    }
    let e = &p.engine_stats;
    let _ = writeln!(
        s,
        "  engine     : {} WAL batches, {:.1} records/batch, {} fsyncs, {:.1} MiB WAL, {} wakeups, {} requests",
        e.wal_batches,
        e.mean_batch_records,
        e.fsyncs,
        e.wal_bytes as f64 / (1 << 20) as f64,
        e.wakeups,
        e.requests
    );
    for (name, l) in &e.latency_us {
        let _ = writeln!(
            s,
            "  engine {:<4}: p50 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs, max {:.2} µs ({} ops, as the engine timed them)",
            name, l.p50, l.p99, l.p999, l.max, l.count
        );
    }
    s
}
