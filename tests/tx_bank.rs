//! Proves transactions are serializable under concurrency with the bank workload:
//! 1,000 accounts spread over all shards, 16 threads moving random amounts between two
//! accounts with `transact` (never below zero), 2 threads reading every balance in one
//! transaction. Every read-only transaction that commits sees the exact total, the
//! readers commit many times while the writers run (locking mode keeps them live), and
//! the total is unchanged at the end, also after a reopen.
//! `RINGDB_SEED=<n>` replays the choice of transfers (the seed is printed).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ringdb::{Db, Options, WriteBatch};

mod common;
use common::Rng;

const ACCOUNTS: u64 = 1_000;
const INITIAL: u64 = 1_000;
const WRITERS: u64 = 16;
const READERS: u64 = 2;
/// Transfers each writer commits at least (and it goes on while readers read).
const TRANSFERS_MIN: u64 = 150;
/// Read-only transactions each reader commits.
const READS: u64 = 12;

/// Counts a reader as done when dropped, also when it panics, so writers stop and the
/// panic reaches the test.
struct Done<'a>(&'a AtomicU64, &'a AtomicBool);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        if self.0.fetch_add(1, Ordering::Relaxed) + 1 == READERS || std::thread::panicking() {
            self.1.store(false, Ordering::Relaxed);
            self.0.store(READERS, Ordering::Relaxed);
        }
    }
}

fn account(i: u64) -> Vec<u8> {
    format!("acct:{i:04}").into_bytes()
}

fn balance(v: Option<ringdb::Value>) -> u64 {
    u64::from_le_bytes(v.expect("every account exists")[..].try_into().expect("8-byte balances"))
}

#[test]
fn bank_total_is_invariant() {
    let seed = common::seed("bank_total_is_invariant");
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options::default().shards(4).wal_segment_bytes(1 << 20)).unwrap();
    let mut batch = WriteBatch::new();
    for i in 0..ACCOUNTS {
        batch.put(account(i), INITIAL.to_le_bytes()).unwrap();
    }
    db.write_batch(batch).unwrap();
    let total = ACCOUNTS * INITIAL;
    let readers_done = AtomicU64::new(0);
    let transfers = AtomicU64::new(0);
    let transfers_during_reads = AtomicU64::new(0);
    let reading = AtomicBool::new(true);
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let (db, readers_done, transfers, reading) = (&db, &readers_done, &transfers, &reading);
            let transfers_during_reads = &transfers_during_reads;
            s.spawn(move || {
                let mut rng = Rng::for_parts(&[seed, w]);
                let mut done = 0;
                while done < TRANSFERS_MIN || readers_done.load(Ordering::Relaxed) < READERS {
                    let from = rng.range(0, ACCOUNTS - 1);
                    let mut to = rng.range(0, ACCOUNTS - 2);
                    if to >= from {
                        to += 1;
                    }
                    let amount = rng.range(1, 200);
                    db.transact(|tx| {
                        let a = balance(tx.get(account(from))?);
                        let b = balance(tx.get(account(to))?);
                        if a >= amount {
                            tx.put(account(from), (a - amount).to_le_bytes())?;
                            tx.put(account(to), (b + amount).to_le_bytes())?;
                        }
                        Ok(())
                    })
                    .expect("a transfer commits within the attempts");
                    done += 1;
                    transfers.fetch_add(1, Ordering::Relaxed);
                    if reading.load(Ordering::Relaxed) {
                        transfers_during_reads.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        for _ in 0..READERS {
            let (db, readers_done, reading) = (&db, &readers_done, &reading);
            s.spawn(move || {
                let _done = Done(readers_done, reading);
                let mut attempts = 0u64;
                for _ in 0..READS {
                    let sum = db
                        .transact(|tx| {
                            attempts += 1;
                            let mut sum = 0;
                            for i in 0..ACCOUNTS {
                                sum += balance(tx.get(account(i))?);
                            }
                            Ok(sum)
                        })
                        .expect("a reader commits within the attempts");
                    assert_eq!(sum, total, "a committed read-only transaction saw a wrong total");
                }
                println!("reader: {READS} commits in {attempts} attempts");
            });
        }
    });
    let during = transfers_during_reads.load(Ordering::Relaxed);
    println!(
        "{} transfers, {during} while readers read; {:?}",
        transfers.load(Ordering::Relaxed),
        db.stats().tx_conflicts
    );
    // Writers go on until both readers are done, so the readers' commits happened among
    // theirs (500 or so on the development machine; at least one per writer on average).
    assert!(during >= WRITERS, "the writers ran while the readers read ({during} transfers)");
    let sum_all = |db: &Db| (0..ACCOUNTS).map(|i| balance(db.get(account(i)).unwrap())).sum::<u64>();
    assert_eq!(sum_all(&db), total);
    db.close().unwrap();
    let db = Db::open(dir.path(), Options::default().wal_segment_bytes(1 << 20)).unwrap();
    assert_eq!(sum_all(&db), total, "after reopen");
}
