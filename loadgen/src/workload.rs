//! Keys, values, operation mixes, client threads and the timing of one phase.

use std::collections::{BTreeMap, VecDeque};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::engine::{Engine, Pending};
use crate::generator::{Latest, ScrambledZipfian};

/// Errors a client thread can hit.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Latencies are recorded in nanoseconds up to one minute, 3 significant digits.
const LATENCY_NS_MAX: u64 = 60_000_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds")
}

fn record(h: &mut Histogram<u64>, elapsed: Duration) {
    let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).clamp(1, LATENCY_NS_MAX);
    h.record(ns).expect("value clamped to the histogram's bounds");
}

/// Kinds of client operations, each with its own latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// A put of fill-seq, fill-random or update.
    Put,
    /// A get of read-random or update.
    Get,
    /// YCSB read.
    Read,
    /// YCSB update (a put of an existing key, no read).
    Update,
    /// YCSB insert (a put of a new key past the key space).
    Insert,
    /// YCSB scan.
    Scan,
    /// YCSB read-modify-write (the read and the update are also counted as read and update).
    Rmw,
}

impl Op {
    pub const ALL: [Op; 7] = [Op::Put, Op::Get, Op::Read, Op::Update, Op::Insert, Op::Scan, Op::Rmw];

    /// The name in the report and the JSON (`latency_us` keys).
    pub fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::Read => "read",
            Op::Update => "update",
            Op::Insert => "insert",
            Op::Scan => "scan",
            Op::Rmw => "read-modify-write",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How YCSB workloads choose keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dist {
    Uniform,
    /// YCSB's scrambled Zipfian, constant 0.99.
    Zipfian,
    /// YCSB's skewed-latest: the newest keys are the most popular.
    Latest,
}

/// What each client operation does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mix {
    /// Put keys 0, 1, 2, ... (one counter shared by the threads, wrapping at the key space).
    PutSequential,
    /// Put uniformly random keys.
    PutRandom,
    /// Get uniformly random keys.
    GetRandom,
    /// Get a random key, then put a new value for it.
    Update,
    /// A YCSB mix: proportions of read, update, insert, scan and read-modify-write.
    Ycsb { read: f64, update: f64, insert: f64, scan: f64, rmw: f64, dist: Dist },
}

impl Mix {
    /// YCSB core workloads A..F with their standard proportions and distributions.
    pub fn ycsb(letter: char) -> Mix {
        let m = |read, update, insert, scan, rmw, dist| Mix::Ycsb { read, update, insert, scan, rmw, dist };
        match letter {
            'a' => m(0.5, 0.5, 0.0, 0.0, 0.0, Dist::Zipfian),
            'b' => m(0.95, 0.05, 0.0, 0.0, 0.0, Dist::Zipfian),
            'c' => m(1.0, 0.0, 0.0, 0.0, 0.0, Dist::Zipfian),
            'd' => m(0.95, 0.0, 0.05, 0.0, 0.0, Dist::Latest),
            'e' => m(0.0, 0.0, 0.05, 0.95, 0.0, Dist::Zipfian),
            'f' => m(0.5, 0.0, 0.0, 0.0, 0.5, Dist::Zipfian),
            _ => panic!("no YCSB workload {letter}"),
        }
    }

    /// The same mix with another key distribution (YCSB mixes only).
    pub fn with_dist(self, new: Dist) -> Mix {
        match self {
            Mix::Ycsb { read, update, insert, scan, rmw, .. } => {
                Mix::Ycsb { read, update, insert, scan, rmw, dist: new }
            }
            other => other,
        }
    }

    /// The operations whose latencies this mix records.
    pub fn ops(self) -> Vec<Op> {
        match self {
            Mix::PutSequential | Mix::PutRandom => vec![Op::Put],
            Mix::GetRandom => vec![Op::Get],
            Mix::Update => vec![Op::Get, Op::Put],
            Mix::Ycsb { read, update, insert, scan, rmw, .. } => {
                let mut ops = Vec::new();
                if read > 0.0 || rmw > 0.0 {
                    ops.push(Op::Read);
                }
                if update > 0.0 || rmw > 0.0 {
                    ops.push(Op::Update);
                }
                if insert > 0.0 {
                    ops.push(Op::Insert);
                }
                if scan > 0.0 {
                    ops.push(Op::Scan);
                }
                if rmw > 0.0 {
                    ops.push(Op::Rmw);
                }
                ops
            }
        }
    }

    pub fn does_lookups(self) -> bool {
        self.ops().iter().any(|op| matches!(op, Op::Get | Op::Read))
    }

    pub fn can_pipeline(self) -> bool {
        matches!(self, Mix::PutSequential | Mix::PutRandom)
    }
}

/// Fixed-width keys: the index as a big-endian u64 (its low `key_size` bytes when the key is
/// shorter than 8 bytes), then `-` padding up to `key_size`. Keys sort in index order.
#[derive(Debug, Clone, Copy)]
pub struct KeyFormat {
    pub key_size: usize,
}

impl KeyFormat {
    pub fn encode(&self, index: u64, out: &mut Vec<u8>) {
        out.clear();
        let be = index.to_be_bytes();
        let n = self.key_size.min(8);
        out.extend_from_slice(&be[8 - n..]);
        out.resize(self.key_size, b'-');
    }
}

/// Value length: fixed (`min == max`) or uniform in `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueSize {
    pub min: usize,
    pub max: usize,
}

impl ValueSize {
    /// Parses `N` or `MIN-MAX` (bytes).
    pub fn parse(s: &str) -> Result<ValueSize, String> {
        let num = |t: &str| t.trim().parse::<usize>().map_err(|_| format!("`{s}` is not N or MIN-MAX (bytes)"));
        match s.split_once('-') {
            Some((a, b)) => {
                let (min, max) = (num(a)?, num(b)?);
                if min > max {
                    return Err(format!("`{s}`: MIN is above MAX"));
                }
                Ok(ValueSize { min, max })
            }
            None => {
                let n = num(s)?;
                Ok(ValueSize { min: n, max: n })
            }
        }
    }

    /// A length for a new write.
    pub fn pick(&self, rng: &mut fastrand::Rng) -> usize {
        if self.min == self.max { self.min } else { rng.usize(self.min..=self.max) }
    }

    /// A length that depends only on the key (the preload's).
    pub fn for_index(&self, index: u64) -> usize {
        if self.min == self.max {
            self.min
        } else {
            let span = (self.max - self.min + 1) as u64;
            self.min + (crate::generator::fnv1a64(index) % span) as usize
        }
    }
}

impl std::fmt::Display for ValueSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max { write!(f, "{}", self.min) } else { write!(f, "{}-{}", self.min, self.max) }
    }
}

/// Deterministic values: bytes from a seeded pattern, at an offset that depends on the key
/// index, so different keys usually get different values.
pub struct Values {
    pattern: Vec<u8>,
}

const VALUE_OFFSETS: u64 = 251;

impl Values {
    pub fn new(max_size: usize, seed: u64) -> Values {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5641_4c55_4553);
        let pattern = (0..max_size + VALUE_OFFSETS as usize).map(|_| rng.alphanumeric() as u8).collect();
        Values { pattern }
    }

    /// `len` bytes (at most the `max_size` given to `new`) for key `index`.
    pub fn get(&self, index: u64, len: usize) -> &[u8] {
        let offset = (index % VALUE_OFFSETS) as usize;
        &self.pattern[offset..offset + len]
    }
}

/// When a phase stops.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    /// After this long (operations in flight at the deadline still complete and count).
    Duration(Duration),
    /// After this many operations in total, split evenly over the threads.
    Ops(u64),
}

/// Everything a phase needs.
pub struct PhaseSpec<'a> {
    pub engine: &'a dyn Engine,
    pub name: &'a str,
    pub mix: Mix,
    pub threads: usize,
    pub inflight: usize,
    pub limit: Limit,
    /// Keys loaded before the phase (indexes `0..keys`); inserts continue from there.
    pub keys: u64,
    pub key_format: KeyFormat,
    pub values: &'a Values,
    pub value_size: ValueSize,
    /// Longest YCSB scan (lengths are uniform in 1..=scan_length).
    pub scan_length: usize,
    /// Target operations per second over all threads (open loop), or closed loop.
    pub rate: Option<f64>,
    /// Throughput samples (and HdrHistogram log intervals) every this long.
    pub interval: Duration,
    /// Keep interval histograms for `--hlog`.
    pub interval_histograms: bool,
    /// Show a progress bar (only when stderr is a terminal).
    pub progress: bool,
    /// Seeds the per-thread random number generators.
    pub seed: u64,
}

/// One interval's histogram of one operation kind (for `--hlog`).
pub struct IntervalHistogram {
    pub start: Duration,
    pub length: Duration,
    pub op: Op,
    pub histogram: Histogram<u64>,
}

/// What the client threads measured in one phase.
pub struct PhaseResult {
    /// Operations completed (a read-modify-write counts once).
    pub ops: u64,
    /// Wall time from the first thread's start to the last thread's end.
    pub elapsed: Duration,
    /// Client-side latency per operation kind, nanoseconds.
    pub latency: BTreeMap<Op, Histogram<u64>>,
    /// Point lookups (get, read) and how many found their key.
    pub lookups: u64,
    pub found: u64,
    /// Records returned by scans.
    pub scanned: u64,
    /// Key and value bytes the clients wrote.
    pub user_bytes: u64,
    /// Keys inserted past the key space (YCSB D and E).
    pub inserted: u64,
    /// (seconds since the phase start, operations per second over the interval ending there).
    pub throughput: Vec<(f64, f64)>,
    pub intervals: Vec<IntervalHistogram>,
}

struct ThreadResult {
    ops: u64,
    latency: Vec<Option<Histogram<u64>>>,
    lookups: u64,
    found: u64,
    scanned: u64,
    user_bytes: u64,
}

/// A counter on its own cache lines, written by one client thread, read by the monitor.
#[repr(align(128))]
#[derive(Default)]
struct Counter(AtomicU64);

/// State the client threads share.
struct Shared<'a> {
    spec: &'a PhaseSpec<'a>,
    started: Instant,
    deadline: Option<Instant>,
    sequence: AtomicU64,
    /// Next index to insert (starts at `keys`).
    next_insert: AtomicU64,
    /// One past the highest inserted index acknowledged: the key count readers choose from.
    key_count: AtomicU64,
    counters: Vec<Counter>,
    intervals: Mutex<BTreeMap<(u64, Op), Histogram<u64>>>,
}

/// Runs one phase on `spec.threads` client threads and merges their histograms.
pub fn run_phase(spec: &PhaseSpec<'_>) -> Result<PhaseResult, BoxError> {
    let started = Instant::now();
    let shared = Shared {
        spec,
        started,
        deadline: match spec.limit {
            Limit::Duration(d) => Some(started + d),
            Limit::Ops(_) => None,
        },
        sequence: AtomicU64::new(0),
        next_insert: AtomicU64::new(spec.keys),
        key_count: AtomicU64::new(spec.keys),
        counters: (0..spec.threads).map(|_| Counter::default()).collect(),
        intervals: Mutex::new(BTreeMap::new()),
    };
    let done = AtomicBool::new(false);
    let (results, mut throughput, elapsed) = std::thread::scope(|scope| {
        let monitor = scope.spawn(|| monitor(&shared, &done));
        let handles: Vec<_> = (0..spec.threads)
            .map(|t| {
                let quota = match spec.limit {
                    Limit::Ops(total) => {
                        let (n, t64) = (spec.threads as u64, t as u64);
                        Some(total / n + u64::from(t64 < total % n))
                    }
                    Limit::Duration(_) => None,
                };
                let shared = &shared;
                std::thread::Builder::new()
                    .name(format!("loadgen-{t}"))
                    .spawn_scoped(scope, move || client(shared, t, quota))
                    .expect("spawn client thread")
            })
            .collect();
        let results: Vec<Result<ThreadResult, BoxError>> =
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("client thread panicked".into()))).collect();
        let elapsed = started.elapsed();
        done.store(true, Ordering::Relaxed);
        let throughput = monitor.join().unwrap_or_default();
        (results, throughput, elapsed)
    });
    let mut out = PhaseResult {
        ops: 0,
        elapsed,
        latency: BTreeMap::new(),
        lookups: 0,
        found: 0,
        scanned: 0,
        user_bytes: 0,
        inserted: shared.key_count.load(Ordering::Relaxed) - spec.keys,
        throughput: Vec::new(),
        intervals: Vec::new(),
    };
    for op in spec.mix.ops() {
        out.latency.insert(op, new_histogram());
    }
    for r in results {
        let r = r?;
        out.ops += r.ops;
        out.lookups += r.lookups;
        out.found += r.found;
        out.scanned += r.scanned;
        out.user_bytes += r.user_bytes;
        for op in Op::ALL {
            if let Some(h) = &r.latency[op.index()] {
                out.latency.entry(op).or_insert_with(new_histogram).add(h).expect("same bounds");
            }
        }
    }
    // The last, partial interval of the throughput series.
    let last_t = throughput.last().map_or(0.0, |s| s.0);
    let last_ops: f64 = throughput.iter().map(|s| s.1 * spec.interval.as_secs_f64()).sum();
    let tail = elapsed.as_secs_f64() - last_t;
    if tail > spec.interval.as_secs_f64() * 0.05 {
        throughput.push((elapsed.as_secs_f64(), ((out.ops as f64 - last_ops) / tail).max(0.0)));
    }
    out.throughput = throughput;
    let intervals = shared.intervals.into_inner().unwrap_or_else(|e| e.into_inner());
    out.intervals = intervals
        .into_iter()
        .map(|((i, op), histogram)| {
            let start = spec.interval * i as u32;
            let length = spec.interval.min(elapsed.saturating_sub(start));
            IntervalHistogram { start, length, op, histogram }
        })
        .collect();
    Ok(out)
}

fn total_ops(shared: &Shared<'_>) -> u64 {
    shared.counters.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
}

/// Samples throughput every `interval` and drives the progress bar (on a terminal only).
fn monitor(shared: &Shared<'_>, done: &AtomicBool) -> Vec<(f64, f64)> {
    let spec = shared.spec;
    let bar = (spec.progress && std::io::stderr().is_terminal()).then(|| {
        let (len, template) = match spec.limit {
            Limit::Ops(n) => (n, "{prefix:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} ops {msg}"),
            Limit::Duration(d) => (d.as_millis() as u64, "{prefix:>12} [{elapsed_precise}] {wide_bar} {msg}"),
        };
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(indicatif::ProgressStyle::with_template(template).expect("valid template"));
        bar.set_prefix(spec.name.to_string());
        bar
    });
    let tick = Duration::from_millis(100).min(spec.interval);
    let mut samples = Vec::new();
    let mut next_sample = shared.started + spec.interval;
    let mut last_ops = 0;
    let (mut recent_ops, mut recent_at) = (0, shared.started);
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(
            tick.min(next_sample.saturating_duration_since(Instant::now())).max(Duration::from_millis(1)),
        );
        let now = Instant::now();
        let ops = total_ops(shared);
        if now >= next_sample {
            let t = next_sample.duration_since(shared.started).as_secs_f64();
            samples.push((t, (ops - last_ops) as f64 / spec.interval.as_secs_f64()));
            last_ops = ops;
            next_sample += spec.interval;
        }
        if let Some(bar) = &bar {
            match spec.limit {
                Limit::Ops(_) => bar.set_position(ops),
                Limit::Duration(_) => bar.set_position(now.duration_since(shared.started).as_millis() as u64),
            }
            if now.duration_since(recent_at) >= Duration::from_millis(500) {
                let rate = (ops - recent_ops) as f64 / now.duration_since(recent_at).as_secs_f64();
                bar.set_message(format!("{ops} ops, {rate:.0} ops/s"));
                (recent_ops, recent_at) = (ops, now);
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    samples
}

/// A thread's histograms: whole-phase, and the current interval's (for `--hlog`).
struct Hists {
    phase: Vec<Option<Histogram<u64>>>,
    interval: Option<Vec<Option<Histogram<u64>>>>,
    interval_index: u64,
    interval_end: Instant,
}

impl Hists {
    fn record(&mut self, op: Op, elapsed: Duration) {
        if let Some(h) = &mut self.phase[op.index()] {
            record(h, elapsed);
        }
        if let Some(h) = self.interval.as_mut().and_then(|iv| iv[op.index()].as_mut()) {
            record(h, elapsed);
        }
    }

    /// Hands the interval histograms to `shared` if `now` is past the interval's end.
    fn rotate(&mut self, shared: &Shared<'_>, now: Instant, force: bool) {
        let Some(iv) = &mut self.interval else { return };
        if !force && now < self.interval_end {
            return;
        }
        let mut all = shared.intervals.lock().unwrap_or_else(|e| e.into_inner());
        for op in Op::ALL {
            if let Some(h) = iv[op.index()].as_mut().filter(|h| !h.is_empty()) {
                all.entry((self.interval_index, op)).or_insert_with(new_histogram).add(&*h).expect("same bounds");
                h.reset();
            }
        }
        drop(all);
        let step = shared.spec.interval.as_nanos().max(1);
        self.interval_index = (now.duration_since(shared.started).as_nanos() / step) as u64;
        self.interval_end = shared.started + shared.spec.interval * (self.interval_index as u32 + 1);
    }
}

/// Sleeps until `at` (open loop): sleeps for long waits, yields for short ones.
fn wait_until(at: Instant) {
    loop {
        let now = Instant::now();
        if now >= at {
            return;
        }
        let left = at - now;
        if left > Duration::from_micros(200) {
            std::thread::sleep(left - Duration::from_micros(100));
        } else {
            std::thread::yield_now();
        }
    }
}

fn client(shared: &Shared<'_>, thread: usize, quota: Option<u64>) -> Result<ThreadResult, BoxError> {
    let spec = shared.spec;
    let engine = spec.engine;
    let mut rng = fastrand::Rng::with_seed(spec.seed.wrapping_add((thread as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    let ops = spec.mix.ops();
    let make = |enabled: bool| -> Vec<Option<Histogram<u64>>> {
        Op::ALL.iter().map(|op| (enabled && ops.contains(op)).then(new_histogram)).collect()
    };
    let mut hists = Hists {
        phase: make(true),
        interval: spec.interval_histograms.then(|| make(true)),
        interval_index: 0,
        interval_end: shared.started + spec.interval,
    };
    let mut r = ThreadResult { ops: 0, latency: Vec::new(), lookups: 0, found: 0, scanned: 0, user_bytes: 0 };
    let mut key = Vec::with_capacity(spec.key_format.key_size);
    let mut scan_keys: Vec<Vec<u8>> = Vec::new();
    let mut pending: VecDeque<(Instant, Pending)> = VecDeque::with_capacity(spec.inflight);
    let pipelined = spec.inflight > 1 && spec.mix.can_pipeline() && engine.has_async_puts();
    let zipfian = ScrambledZipfian::new();
    let mut latest = match spec.mix {
        Mix::Ycsb { dist: Dist::Latest, .. } => Some(Latest::new(spec.keys)),
        _ => None,
    };
    // Open loop: this thread's share of the rate, its first slot staggered among the threads.
    let period = spec.rate.map(|rate| Duration::from_secs_f64(spec.threads as f64 / rate));
    let mut next_at = period.map(|p| shared.started + p.mul_f64(thread as f64 / spec.threads as f64));
    let counter = &shared.counters[thread].0;
    let mut last_end = Instant::now();
    // Reads the clock at the end of an operation and keeps it as the next one's start.
    let stamp = |last_end: &mut Instant| {
        *last_end = Instant::now();
        *last_end
    };
    loop {
        if quota.is_some_and(|q| r.ops >= q) {
            break;
        }
        // The previous operation's end is this one's start (one clock read per operation).
        let mut now = last_end;
        if shared.deadline.is_some_and(|d| now >= d) {
            break;
        }
        // The intended start: with --rate, the op's slot in the schedule, even when the
        // previous op overran it (coordinated-omission correction); else now.
        let intended = match (next_at.as_mut(), period) {
            (Some(at), Some(p)) => {
                let slot = *at;
                *at += p;
                if shared.deadline.is_some_and(|d| slot >= d) {
                    break;
                }
                if slot > now {
                    wait_until(slot);
                    now = Instant::now();
                }
                slot
            }
            _ => now,
        };
        hists.rotate(shared, now, false);
        match spec.mix {
            Mix::PutSequential | Mix::PutRandom => {
                let index = match spec.mix {
                    Mix::PutSequential => shared.sequence.fetch_add(1, Ordering::Relaxed) % spec.keys,
                    _ => rng.u64(0..spec.keys),
                };
                spec.key_format.encode(index, &mut key);
                let value = spec.values.get(index, spec.value_size.pick(&mut rng));
                r.user_bytes += (key.len() + value.len()) as u64;
                if pipelined {
                    if pending.len() >= spec.inflight {
                        let (submitted, p) = pending.pop_front().expect("queue is full");
                        p.wait()?;
                        hists.record(Op::Put, stamp(&mut last_end) - submitted);
                    }
                    pending.push_back((intended, engine.put_async(&key, value)?));
                    stamp(&mut last_end);
                } else {
                    engine.put(&key, value)?;
                    hists.record(Op::Put, stamp(&mut last_end) - intended);
                }
            }
            Mix::GetRandom => {
                let index = rng.u64(0..spec.keys);
                spec.key_format.encode(index, &mut key);
                let v = engine.get(&key)?;
                hists.record(Op::Get, stamp(&mut last_end) - intended);
                r.lookups += 1;
                r.found += u64::from(v.is_some());
            }
            Mix::Update => {
                let index = rng.u64(0..spec.keys);
                spec.key_format.encode(index, &mut key);
                let v = engine.get(&key)?;
                let put_start = Instant::now();
                hists.record(Op::Get, put_start - intended);
                r.lookups += 1;
                r.found += u64::from(v.is_some());
                // The new value: the old one's neighbour in the pattern (a real update).
                let value = spec.values.get(index.wrapping_add(1), spec.value_size.pick(&mut rng));
                r.user_bytes += (key.len() + value.len()) as u64;
                engine.put(&key, value)?;
                hists.record(Op::Put, stamp(&mut last_end) - put_start);
            }
            Mix::Ycsb { read, update, insert, scan, dist, .. } => {
                let count = shared.key_count.load(Ordering::Acquire).max(1);
                let mut choose = |rng: &mut fastrand::Rng| match dist {
                    Dist::Uniform => rng.u64(0..count),
                    Dist::Zipfian => zipfian.next(rng, count),
                    Dist::Latest => latest.as_mut().expect("latest generator").next(rng, count),
                };
                let dice = rng.f64();
                if dice < read {
                    let index = choose(&mut rng);
                    spec.key_format.encode(index, &mut key);
                    let v = engine.get(&key)?;
                    hists.record(Op::Read, stamp(&mut last_end) - intended);
                    r.lookups += 1;
                    r.found += u64::from(v.is_some());
                } else if dice < read + update {
                    let index = choose(&mut rng);
                    spec.key_format.encode(index, &mut key);
                    let value =
                        spec.values.get(index.wrapping_add(rng.u64(1..VALUE_OFFSETS)), spec.value_size.pick(&mut rng));
                    r.user_bytes += (key.len() + value.len()) as u64;
                    engine.put(&key, value)?;
                    hists.record(Op::Update, stamp(&mut last_end) - intended);
                } else if dice < read + update + insert {
                    let index = shared.next_insert.fetch_add(1, Ordering::Relaxed);
                    spec.key_format.encode(index, &mut key);
                    let value = spec.values.get(index, spec.value_size.pick(&mut rng));
                    r.user_bytes += (key.len() + value.len()) as u64;
                    engine.put(&key, value)?;
                    hists.record(Op::Insert, stamp(&mut last_end) - intended);
                    shared.key_count.fetch_max(index + 1, Ordering::Release);
                } else if dice < read + update + insert + scan {
                    let first = choose(&mut rng);
                    let len = rng.usize(1..=spec.scan_length).min((count - first) as usize).max(1);
                    scan_keys.resize_with(len.max(scan_keys.len()), Vec::new);
                    for (i, k) in scan_keys[..len].iter_mut().enumerate() {
                        spec.key_format.encode(first + i as u64, k);
                    }
                    let n = engine.scan(&scan_keys[..len])?;
                    hists.record(Op::Scan, stamp(&mut last_end) - intended);
                    r.scanned += n as u64;
                } else {
                    // Read-modify-write: read a key, then write a new value for it.
                    let index = choose(&mut rng);
                    spec.key_format.encode(index, &mut key);
                    let v = engine.get(&key)?;
                    let write_start = Instant::now();
                    hists.record(Op::Read, write_start - intended);
                    r.lookups += 1;
                    r.found += u64::from(v.is_some());
                    let len = v.unwrap_or_else(|| spec.value_size.pick(&mut rng));
                    let value =
                        spec.values.get(index.wrapping_add(rng.u64(1..VALUE_OFFSETS)), len.min(spec.value_size.max));
                    r.user_bytes += (key.len() + value.len()) as u64;
                    engine.put(&key, value)?;
                    let end = stamp(&mut last_end);
                    hists.record(Op::Update, end - write_start);
                    hists.record(Op::Rmw, end - intended);
                }
            }
        }
        r.ops += 1;
        counter.store(r.ops, Ordering::Relaxed);
    }
    for (submitted, p) in pending {
        p.wait()?;
        hists.record(Op::Put, submitted.elapsed());
    }
    hists.rotate(shared, Instant::now(), true);
    r.latency = hists.phase;
    Ok(r)
}

/// Writes every key of `0..keys` once, in batches of `BATCH` keys from a few threads. Not
/// timed into any phase.
pub fn preload(
    engine: &dyn Engine,
    keys: u64,
    key_format: KeyFormat,
    values: &Values,
    value_size: ValueSize,
    threads: usize,
) -> Result<Duration, BoxError> {
    const BATCH: u64 = 512;
    let started = Instant::now();
    let next = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| -> Result<(), BoxError> {
                    let mut records = Vec::with_capacity(BATCH as usize);
                    loop {
                        let first = next.fetch_add(BATCH, Ordering::Relaxed);
                        if first >= keys {
                            return Ok(());
                        }
                        records.clear();
                        for index in first..(first + BATCH).min(keys) {
                            let mut key = Vec::with_capacity(key_format.key_size);
                            key_format.encode(index, &mut key);
                            records.push((key, values.get(index, value_size.for_index(index))));
                        }
                        engine.load(&records)?;
                    }
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().unwrap_or_else(|_| Err("preload thread panicked".into())))
    })?;
    engine.finish_load()?;
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_width_and_ordered() {
        let f = KeyFormat { key_size: 16 };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        f.encode(255, &mut a);
        f.encode(256, &mut b);
        assert_eq!(a.len(), 16);
        assert_eq!(&a[..8], &255u64.to_be_bytes());
        assert_eq!(&a[8..], b"--------");
        assert!(a < b);
        let short = KeyFormat { key_size: 2 };
        short.encode(0x0102, &mut a);
        assert_eq!(a, [1, 2]);
    }

    #[test]
    fn values_are_deterministic() {
        let v = Values::new(100, 42);
        let w = Values::new(100, 42);
        assert_eq!(v.get(7, 100), w.get(7, 100));
        assert_eq!(v.get(7, 100).len(), 100);
        assert_ne!(v.get(7, 100), v.get(8, 100));
        assert_eq!(Values::new(0, 1).get(3, 0), b"");
    }

    #[test]
    fn value_sizes_parse_and_stay_in_range() {
        assert_eq!(ValueSize::parse("100"), Ok(ValueSize { min: 100, max: 100 }));
        assert_eq!(ValueSize::parse("10-20"), Ok(ValueSize { min: 10, max: 20 }));
        assert!(ValueSize::parse("20-10").is_err());
        assert!(ValueSize::parse("abc").is_err());
        assert!(ValueSize::parse("-5").is_err());
        let vs = ValueSize { min: 10, max: 20 };
        let mut rng = fastrand::Rng::with_seed(1);
        let picks: Vec<usize> = (0..1000).map(|_| vs.pick(&mut rng)).collect();
        assert!(picks.iter().all(|&n| (10..=20).contains(&n)));
        assert!(picks.contains(&10) && picks.contains(&20));
        assert!((0..1000).all(|i| (10..=20).contains(&vs.for_index(i))));
    }

    #[test]
    fn ycsb_mixes_are_the_standard_ones() {
        let Mix::Ycsb { read, update, dist, .. } = Mix::ycsb('a') else { panic!() };
        assert_eq!((read, update, dist), (0.5, 0.5, Dist::Zipfian));
        let Mix::Ycsb { read, insert, dist, .. } = Mix::ycsb('d') else { panic!() };
        assert_eq!((read, insert, dist), (0.95, 0.05, Dist::Latest));
        let Mix::Ycsb { scan, insert, .. } = Mix::ycsb('e') else { panic!() };
        assert_eq!((scan, insert), (0.95, 0.05));
        assert_eq!(Mix::ycsb('f').ops(), vec![Op::Read, Op::Update, Op::Rmw]);
        assert_eq!(Mix::ycsb('c').ops(), vec![Op::Read]);
    }
}
