//! Keys, values, client threads and the timing of one phase.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringdb::{Ack, Db, WriteBatch};

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

/// Deterministic values: `value_size` bytes from a seeded pattern, at an offset that
/// depends on the key index, so different keys usually get different values.
pub struct Values {
    pattern: Vec<u8>,
    value_size: usize,
}

const VALUE_OFFSETS: u64 = 251;

impl Values {
    pub fn new(value_size: usize, seed: u64) -> Values {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5641_4c55_4553);
        let pattern = (0..value_size + VALUE_OFFSETS as usize).map(|_| rng.alphanumeric() as u8).collect();
        Values { pattern, value_size }
    }

    pub fn get(&self, index: u64) -> &[u8] {
        let offset = (index % VALUE_OFFSETS) as usize;
        &self.pattern[offset..offset + self.value_size]
    }
}

/// What each client operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpMix {
    /// Put keys 0, 1, 2, ... (one counter shared by the threads, wrapping at the key space).
    PutSequential,
    /// Put uniformly random keys.
    PutRandom,
    /// Get uniformly random keys.
    GetRandom,
    /// Get a random key, then put a new value for it (read-modify-write).
    Update,
}

impl OpMix {
    pub fn does_puts(self) -> bool {
        self != OpMix::GetRandom
    }

    pub fn does_gets(self) -> bool {
        matches!(self, OpMix::GetRandom | OpMix::Update)
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
    pub db: &'a Db,
    pub mix: OpMix,
    pub threads: usize,
    pub inflight: usize,
    pub limit: Limit,
    pub keys: u64,
    pub key_format: KeyFormat,
    pub values: &'a Values,
    /// Seeds the per-thread random number generators.
    pub seed: u64,
}

/// What the client threads measured in one phase.
pub struct PhaseResult {
    /// Operations completed (an update counts once).
    pub ops: u64,
    /// Wall time from the first thread's start to the last thread's end.
    pub elapsed: Duration,
    /// Client-side put latency, nanoseconds.
    pub put: Histogram<u64>,
    /// Client-side get latency, nanoseconds.
    pub get: Histogram<u64>,
    /// Gets that found their key.
    pub found: u64,
}

struct ThreadResult {
    ops: u64,
    put: Histogram<u64>,
    get: Histogram<u64>,
    found: u64,
}

/// Runs one phase on `spec.threads` client threads and merges their histograms.
pub fn run_phase(spec: &PhaseSpec<'_>) -> Result<PhaseResult, BoxError> {
    let sequence = AtomicU64::new(0);
    let started = Instant::now();
    let deadline = match spec.limit {
        Limit::Duration(d) => Some(started + d),
        Limit::Ops(_) => None,
    };
    let results: Vec<Result<ThreadResult, BoxError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..spec.threads)
            .map(|t| {
                let quota = match spec.limit {
                    Limit::Ops(total) => {
                        let (n, t64) = (spec.threads as u64, t as u64);
                        Some(total / n + u64::from(t64 < total % n))
                    }
                    Limit::Duration(_) => None,
                };
                let sequence = &sequence;
                std::thread::Builder::new()
                    .name(format!("loadgen-{t}"))
                    .spawn_scoped(scope, move || client(spec, t, quota, deadline, sequence))
                    .expect("spawn client thread")
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("client thread panicked".into()))).collect()
    });
    let elapsed = started.elapsed();
    let mut out = PhaseResult { ops: 0, elapsed, put: new_histogram(), get: new_histogram(), found: 0 };
    for r in results {
        let r = r?;
        out.ops += r.ops;
        out.found += r.found;
        out.put.add(&r.put).expect("same bounds");
        out.get.add(&r.get).expect("same bounds");
    }
    Ok(out)
}

fn client(
    spec: &PhaseSpec<'_>,
    thread: usize,
    quota: Option<u64>,
    deadline: Option<Instant>,
    sequence: &AtomicU64,
) -> Result<ThreadResult, BoxError> {
    let mut rng = fastrand::Rng::with_seed(spec.seed.wrapping_add((thread as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    let mut r = ThreadResult { ops: 0, put: new_histogram(), get: new_histogram(), found: 0 };
    let mut key = Vec::with_capacity(spec.key_format.key_size);
    let mut pending: VecDeque<(Instant, Ack)> = VecDeque::with_capacity(spec.inflight);
    loop {
        if quota.is_some_and(|q| r.ops >= q) {
            break;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        let index = match spec.mix {
            OpMix::PutSequential => sequence.fetch_add(1, Ordering::Relaxed) % spec.keys,
            _ => rng.u64(0..spec.keys),
        };
        spec.key_format.encode(index, &mut key);
        let value = spec.values.get(index);
        match spec.mix {
            OpMix::GetRandom => {
                let v = spec.db.get(&key)?;
                record(&mut r.get, now.elapsed());
                r.found += u64::from(v.is_some());
            }
            OpMix::Update => {
                let v = spec.db.get(&key)?;
                let put_start = Instant::now();
                record(&mut r.get, put_start - now);
                r.found += u64::from(v.is_some());
                // The new value: the old one's neighbour in the pattern (a real update).
                let value = spec.values.get(index.wrapping_add(1));
                spec.db.put(&key, value)?;
                record(&mut r.put, put_start.elapsed());
            }
            OpMix::PutSequential | OpMix::PutRandom if spec.inflight <= 1 => {
                spec.db.put(&key, value)?;
                record(&mut r.put, now.elapsed());
            }
            OpMix::PutSequential | OpMix::PutRandom => {
                if pending.len() >= spec.inflight {
                    let (submitted, ack) = pending.pop_front().expect("queue is full");
                    ack.wait()?;
                    record(&mut r.put, submitted.elapsed());
                }
                pending.push_back((now, spec.db.put_async(&key, value)));
            }
        }
        r.ops += 1;
    }
    for (submitted, ack) in pending {
        ack.wait()?;
        record(&mut r.put, submitted.elapsed());
    }
    Ok(r)
}

/// Writes every key of the key space once, in write batches of `BATCH` keys from a few
/// threads. Not timed into any phase.
pub fn preload(
    db: &Db,
    keys: u64,
    key_format: KeyFormat,
    values: &Values,
    threads: usize,
) -> Result<Duration, BoxError> {
    const BATCH: u64 = 512;
    let started = Instant::now();
    let next = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| -> Result<(), BoxError> {
                    let mut key = Vec::with_capacity(key_format.key_size);
                    loop {
                        let first = next.fetch_add(BATCH, Ordering::Relaxed);
                        if first >= keys {
                            return Ok(());
                        }
                        let mut batch = WriteBatch::new();
                        for index in first..(first + BATCH).min(keys) {
                            key_format.encode(index, &mut key);
                            batch.put(&key, values.get(index))?;
                        }
                        db.write_batch(batch)?;
                    }
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().unwrap_or_else(|_| Err("preload thread panicked".into())))
    })?;
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
        assert_eq!(v.get(7), w.get(7));
        assert_eq!(v.get(7).len(), 100);
        assert_ne!(v.get(7), v.get(8));
        assert_eq!(Values::new(0, 1).get(3), b"");
    }
}
