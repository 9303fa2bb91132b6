//! The `transfer` workload (ringdb only): each operation is a transaction that reads two
//! account balances and moves an amount from one to the other (never below zero), the
//! bank workload of ringdb's tests. Each thread commits with its own retry loop, so
//! aborts are counted: an attempt whose commit fails with `Error::Conflict` is an abort,
//! retried after a backoff (20 µs doubling to 5 ms, with jitter, as `Db::transact`).
//!
//! `--pairs` chooses the two accounts' shards: `same-shard` (the single-shard fast
//! path: one log record, no prepare), `cross-shard` (prepare and commit on two shards)
//! or `any`. The first account is drawn from `--distribution` (uniform or scrambled
//! zipfian 0.99); the second is drawn the same way until the pair meets `--pairs`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringdb::{Db, Error, WriteBatch};
use serde::Serialize;

use crate::generator::ScrambledZipfian;
use crate::workload::{BoxError, KeyFormat, Limit};

/// How the two accounts of a transfer relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pairs {
    Any,
    SameShard,
    CrossShard,
}

/// Key distribution of the accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dist {
    Uniform,
    Zipfian,
}

pub struct Spec<'a> {
    pub db: &'a Db,
    pub keys: u64,
    pub key_format: KeyFormat,
    pub threads: usize,
    pub limit: Limit,
    pub dist: Dist,
    pub pairs: Pairs,
    pub seed: u64,
}

/// Figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub seconds: f64,
    pub committed: u64,
    pub attempts: u64,
    pub aborts: u64,
    pub committed_per_sec: f64,
    pub abort_rate: f64,
    /// `commit()` of the attempt that committed, µs: p50, p99, p99.9, max.
    pub commit_us: [f64; 4],
    /// Whole transfer, retries included, µs: p50, p99, p99.9, max.
    pub transfer_us: [f64; 4],
}

const INITIAL: u64 = 1_000_000;

/// One thread's figures: committed, attempts, commit and transfer latencies (ns).
type ThreadFigures = (u64, u64, Histogram<u64>, Histogram<u64>);

/// Writes every account with its initial balance (untimed).
pub fn preload(db: &Db, keys: u64, key_format: KeyFormat) -> Result<(), BoxError> {
    let mut key = Vec::new();
    let mut start = 0;
    while start < keys {
        let end = (start + 1024).min(keys);
        let mut batch = WriteBatch::new();
        for i in start..end {
            key_format.encode(i, &mut key);
            batch.put(&key, INITIAL.to_le_bytes())?;
        }
        db.write_batch(batch)?;
        start = end;
    }
    Ok(())
}

fn draw(dist: Dist, zipf: &ScrambledZipfian, rng: &mut fastrand::Rng, n: u64) -> u64 {
    match dist {
        Dist::Uniform => rng.u64(0..n),
        Dist::Zipfian => zipf.next(rng, n),
    }
}

fn balance(v: Option<ringdb::Value>) -> Result<u64, BoxError> {
    let v = v.ok_or("an account is missing")?;
    Ok(u64::from_le_bytes(v[..].try_into().map_err(|_| "a balance is not 8 bytes")?))
}

fn percentiles(h: &Histogram<u64>) -> [f64; 4] {
    let us = |ns: u64| ns as f64 / 1000.0;
    [us(h.value_at_quantile(0.5)), us(h.value_at_quantile(0.99)), us(h.value_at_quantile(0.999)), us(h.max())]
}

/// Runs the workload; checks at the end that the total balance did not change.
pub fn run(spec: &Spec<'_>) -> Result<Outcome, BoxError> {
    let db = spec.db;
    if spec.keys < 2 {
        return Err("--workload transfer needs --keys of at least 2".into());
    }
    if spec.pairs == Pairs::CrossShard && db.shard_count() < 2 {
        return Err("--pairs cross-shard needs at least 2 shards (--shards)".into());
    }
    let stop = AtomicBool::new(false);
    let budget = AtomicU64::new(match spec.limit {
        Limit::Ops(n) => n,
        Limit::Duration(_) => u64::MAX,
    });
    let started = Instant::now();
    let results: Vec<Result<ThreadFigures, BoxError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..spec.threads)
            .map(|t| {
                let (stop, budget) = (&stop, &budget);
                s.spawn(move || -> Result<_, BoxError> {
                    let mut rng = fastrand::Rng::with_seed(spec.seed ^ (t as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                    let zipf = ScrambledZipfian::new();
                    let mut commit_ns = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
                    let mut transfer_ns = commit_ns.clone();
                    let (mut committed, mut attempts) = (0u64, 0u64);
                    let (mut ka, mut kb) = (Vec::new(), Vec::new());
                    while !stop.load(Ordering::Relaxed) && budget.fetch_sub(1, Ordering::Relaxed) > 0 {
                        let a = draw(spec.dist, &zipf, &mut rng, spec.keys);
                        spec.key_format.encode(a, &mut ka);
                        let mut tries = 0;
                        let b = loop {
                            tries += 1;
                            let b = draw(spec.dist, &zipf, &mut rng, spec.keys);
                            spec.key_format.encode(b, &mut kb);
                            let same = db.shard_of(&ka) == db.shard_of(&kb);
                            let ok = b != a
                                && match spec.pairs {
                                    Pairs::Any => true,
                                    Pairs::SameShard => same,
                                    Pairs::CrossShard => !same,
                                };
                            if ok {
                                break b;
                            }
                            if tries > 10_000 {
                                return Err("no account pair meets --pairs (too few keys?)".into());
                            }
                        };
                        let _ = b;
                        let amount = rng.u64(1..1000);
                        let began = Instant::now();
                        let mut backoff = Duration::from_micros(20);
                        loop {
                            attempts += 1;
                            let mut tx = db.transaction();
                            let from = balance(tx.get(&ka)?)?;
                            let to = balance(tx.get(&kb)?)?;
                            if from >= amount {
                                tx.put(&ka, (from - amount).to_le_bytes())?;
                                tx.put(&kb, (to + amount).to_le_bytes())?;
                            }
                            let commit_began = Instant::now();
                            match tx.commit() {
                                Ok(_) => {
                                    commit_ns.saturating_record(commit_began.elapsed().as_nanos() as u64);
                                    break;
                                }
                                Err(Error::Conflict { .. }) => {
                                    let jitter = rng.u64(0..=backoff.as_nanos() as u64 / 2);
                                    std::thread::sleep(backoff / 2 + Duration::from_nanos(jitter));
                                    backoff = (backoff * 2).min(Duration::from_millis(5));
                                }
                                Err(e) => return Err(e.into()),
                            }
                        }
                        transfer_ns.saturating_record(began.elapsed().as_nanos() as u64);
                        committed += 1;
                    }
                    Ok((committed, attempts, commit_ns, transfer_ns))
                })
            })
            .collect();
        if let Limit::Duration(d) = spec.limit {
            let deadline = started + d;
            while Instant::now() < deadline && !handles.iter().all(|h| h.is_finished()) {
                std::thread::sleep(Duration::from_millis(5).min(deadline.saturating_duration_since(Instant::now())));
            }
            stop.store(true, Ordering::Relaxed);
        }
        handles.into_iter().map(|h| h.join().expect("a transfer thread panicked")).collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut commit_ns = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut transfer_ns = commit_ns.clone();
    let (mut committed, mut attempts) = (0, 0);
    for r in results {
        let (c, a, ch, th) = r?;
        committed += c;
        attempts += a;
        commit_ns.add(&ch)?;
        transfer_ns.add(&th)?;
    }
    // Serializability, checked the cheap way: money is neither made nor lost.
    let mut total = 0u64;
    let mut key = Vec::new();
    for i in 0..spec.keys {
        spec.key_format.encode(i, &mut key);
        total += balance(db.get(&key)?)?;
    }
    if total != spec.keys * INITIAL {
        return Err(
            format!("the total balance is {total}, not {}: transactions are broken", spec.keys * INITIAL).into()
        );
    }
    let aborts = attempts - committed;
    Ok(Outcome {
        seconds,
        committed,
        attempts,
        aborts,
        committed_per_sec: committed as f64 / seconds,
        abort_rate: if attempts == 0 { 0.0 } else { aborts as f64 / attempts as f64 },
        commit_us: percentiles(&commit_ns),
        transfer_us: percentiles(&transfer_ns),
    })
}

/// The report's text.
pub fn text(o: &Outcome, pairs: Pairs, dist: Dist, threads: usize) -> String {
    let pairs = match pairs {
        Pairs::Any => "any",
        Pairs::SameShard => "same-shard",
        Pairs::CrossShard => "cross-shard",
    };
    let dist = match dist {
        Dist::Uniform => "uniform",
        Dist::Zipfian => "zipfian 0.99",
    };
    let [c50, c99, c999, cmax] = o.commit_us;
    let [t50, t99, t999, tmax] = o.transfer_us;
    format!(
        "transfer   : {pairs} pairs, {dist}, {threads} threads, {:.1} s\n\
         committed  : {} transactions, {:.0} tx/s\n\
         aborts     : {} of {} attempts ({:.2}%)\n\
         commit us  : p50 {c50:.1}  p99 {c99:.1}  p99.9 {c999:.1}  max {cmax:.1}\n\
         transfer us: p50 {t50:.1}  p99 {t99:.1}  p99.9 {t999:.1}  max {tmax:.1}  (retries included)\n\
         total      : unchanged\n",
        o.seconds,
        o.committed,
        o.committed_per_sec,
        o.aborts,
        o.attempts,
        o.abort_rate * 100.0,
    )
}
