//! Proves transactions are atomic and durable across SIGKILL: a child process (this test
//! binary, re-run in child mode) runs the bank workload (16 threads moving money between
//! accounts spread over all shards with `transact`, 2 threads checking the total in
//! read-only transactions, and one thread writing a pair of keys on two shards with
//! cross-shard write batches), with checkpoints every 64 KiB of log so kills also land
//! in checkpoints and log truncation. The parent kills it at random moments, at least 20
//! times on the same directory, some of them during the child's open (recovery). After
//! each reopen the total is exact, every transfer whose commit returned `Ok` (each also
//! writes its thread's sequence number, which the child prints once committed) is there,
//! at most the one in flight per thread besides, and the batch pair is whole.
//! `RINGDB_SEED=<n>` replays a run (the seed is printed).

use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use ringdb::{Db, Options, WriteBatch};

mod common;
use common::{Rng, child_command, emit, line_reader, sigkill};

const CHILD_ENV: &str = "RINGDB_TEST_TX_BANK_DIR";
const GEN_ENV: &str = "RINGDB_TEST_TX_BANK_GEN";
const SEED_ENV: &str = "RINGDB_TEST_TX_BANK_SEED";
const ACCOUNTS: u64 = 1_000;
const INITIAL: u64 = 1_000;
const WRITERS: u64 = 16;
const READERS: u64 = 2;
const KILLS: u64 = 24;

fn options() -> Options {
    Options::default()
        .shards(3)
        .wal_segment_bytes(256 << 10)
        .checkpoint_wal_bytes(64 << 10)
        .page_records_max(8)
        .cache_bytes(256 << 10)
}

fn account(i: u64) -> Vec<u8> {
    format!("acct:{i:04}").into_bytes()
}

fn mark(writer: u64) -> Vec<u8> {
    format!("mark:{writer:02}").into_bytes()
}

fn number(v: Option<ringdb::Value>) -> u64 {
    v.map_or(0, |v| u64::from_le_bytes(v[..].try_into().expect("8-byte numbers")))
}

/// Two keys on different shards, written together by cross-shard batches.
fn pair(db: &Db) -> (Vec<u8>, Vec<u8>) {
    let x = b"pair:x".to_vec();
    let y = (0..).map(|i| format!("pair:y{i}").into_bytes()).find(|y| db.shard_of(y) != db.shard_of(&x)).unwrap();
    (x, y)
}

fn env_u64(name: &str) -> u64 {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set")).parse().unwrap()
}

/// Child mode: runs the workload until killed, printing `ok <writer> <seq>` after each
/// committed transfer and `batch <seq>` after each batch.
#[test]
fn child_bank() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let (gen_, seed) = (env_u64(GEN_ENV), env_u64(SEED_ENV));
    emit("opening");
    let db = Db::open(&dir, options()).unwrap_or_else(|e| {
        eprintln!("child: open failed: {e}");
        std::process::exit(3)
    });
    emit("ready");
    let mut threads = Vec::new();
    for w in 0..WRITERS {
        let db = db.clone();
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng::for_parts(&[seed, gen_, w]);
            let start = number(db.get(mark(w)).unwrap());
            for seq in start + 1.. {
                let from = rng.range(0, ACCOUNTS - 1);
                let to = (from + rng.range(1, ACCOUNTS - 1)) % ACCOUNTS;
                let amount = rng.range(1, 300);
                let result = db.transact(|tx| {
                    let a = number(tx.get(account(from))?);
                    let b = number(tx.get(account(to))?);
                    if a >= amount {
                        tx.put(account(from), (a - amount).to_le_bytes())?;
                        tx.put(account(to), (b + amount).to_le_bytes())?;
                    }
                    tx.put(mark(w), seq.to_le_bytes())
                });
                if let Err(e) = result {
                    eprintln!("child: transfer {w}/{seq} failed: {e}");
                    std::process::exit(3);
                }
                emit(&format!("ok {w} {seq}"));
            }
        }));
    }
    for _ in 0..READERS {
        let db = db.clone();
        threads.push(std::thread::spawn(move || {
            loop {
                let sum: ringdb::Result<u64> =
                    db.transact(|tx| (0..ACCOUNTS).map(|i| tx.get(account(i)).map(number)).sum());
                match sum {
                    Ok(sum) if sum == ACCOUNTS * INITIAL => {}
                    other => {
                        eprintln!("child: a read-only transaction committed with {other:?}");
                        std::process::exit(3);
                    }
                }
            }
        }));
    }
    {
        let db = db.clone();
        threads.push(std::thread::spawn(move || {
            let (x, y) = pair(&db);
            for seq in number(db.get(&x).unwrap()) + 1.. {
                let mut batch = WriteBatch::new();
                batch.put(&x, seq.to_le_bytes()).unwrap().put(&y, seq.to_le_bytes()).unwrap();
                if let Err(e) = db.write_batch(batch) {
                    eprintln!("child: batch {seq} failed: {e}");
                    std::process::exit(3);
                }
                emit(&format!("batch {seq}"));
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
}

#[test]
fn committed_transfers_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let seed = common::seed("committed_transfers_survive_sigkill");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path(), options()).unwrap();
        let mut batch = WriteBatch::new();
        for i in 0..ACCOUNTS {
            batch.put(account(i), INITIAL.to_le_bytes()).unwrap();
        }
        db.write_batch(batch).unwrap();
        db.close().unwrap();
    }
    let mut acked = vec![0u64; WRITERS as usize];
    let mut batch_acked = 0u64;
    let (mut transfers, mut in_flight_found, mut in_doubt) = (0u64, 0u64, [0u64; 2]);
    for run in 0..KILLS {
        let gen_ = run + 1;
        let mut child = child_command(
            "child_bank",
            &[(CHILD_ENV, dir.path().display().to_string()), (GEN_ENV, gen_.to_string()), (SEED_ENV, seed.to_string())],
        )
        .spawn()
        .expect("spawn the test binary as a child");
        let (lines, reader) = line_reader(child.stdout.take().unwrap());
        // Every fourth kill lands while the child opens (replay, in-doubt decisions).
        let early = run % 4 == 3;
        let wait_for = if early { "opening" } else { "ready" };
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        loop {
            match lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let done = line == wait_for;
                    seen.push(line);
                    if done {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(status) = child.try_wait().unwrap() {
                        panic!("run {run}: child exited ({status}) before '{wait_for}'");
                    }
                    assert!(Instant::now() < deadline, "run {run}: no '{wait_for}' from the child in 60 s");
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = child.wait().unwrap();
                    panic!("run {run}: child closed its output ({status}) before '{wait_for}'");
                }
            }
        }
        let delay = if early { rng.range(0, 15) } else { rng.range(50, 400) };
        std::thread::sleep(Duration::from_millis(delay));
        // Fails if the child exited by itself: a reader saw a wrong total, or a write failed.
        sigkill(&mut child);
        reader.join().unwrap();
        seen.extend(lines.try_iter());
        let context = format!("run {run} (seed {seed}, killed {delay} ms after '{wait_for}')");
        for line in &seen {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts[..] {
                ["ok", w, seq] => {
                    let (w, seq): (usize, u64) = (w.parse().unwrap(), seq.parse().unwrap());
                    assert_eq!(seq, acked[w] + 1, "{context}: writer {w} commits in order");
                    acked[w] = seq;
                    transfers += 1;
                }
                ["batch", seq] => {
                    let seq: u64 = seq.parse().unwrap();
                    assert_eq!(seq, batch_acked + 1, "{context}: batches in order");
                    batch_acked = seq;
                }
                _ => {}
            }
        }
        let db = Db::open(dir.path(), options()).unwrap_or_else(|e| panic!("{context}: reopen: {e}"));
        let stats = db.stats();
        in_doubt[0] += stats.tx_in_doubt_committed;
        in_doubt[1] += stats.tx_in_doubt_aborted;
        let total: u64 = (0..ACCOUNTS).map(|i| number(db.get(account(i)).unwrap())).sum();
        assert_eq!(total, ACCOUNTS * INITIAL, "{context}: the total changed");
        for w in 0..WRITERS {
            let found = number(db.get(mark(w)).unwrap());
            let ok = acked[w as usize];
            assert!(
                found == ok || found == ok + 1,
                "{context}: writer {w}: transfer {found} found, {ok} committed (lost, or more than one in flight)"
            );
            in_flight_found += found - ok;
            acked[w as usize] = found;
        }
        let (x, y) = pair(&db);
        let (vx, vy) = (number(db.get(&x).unwrap()), number(db.get(&y).unwrap()));
        assert_eq!(vx, vy, "{context}: a cross-shard batch is there in part");
        assert!(vx == batch_acked || vx == batch_acked + 1, "{context}: batch {vx} found, {batch_acked} acknowledged");
        batch_acked = vx;
        println!("{context}: {} transfers committed so far", acked.iter().sum::<u64>());
        db.close().unwrap();
    }
    println!(
        "{KILLS} kills: {transfers} committed transfers acknowledged, {in_flight_found} in flight found committed; \
         in-doubt parts decided at open: {} committed, {} aborted",
        in_doubt[0], in_doubt[1]
    );
    assert!(transfers > KILLS * 10, "the children committed too few transfers to test anything ({transfers})");
}
