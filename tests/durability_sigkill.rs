//! Proves `Durability::Sync` survives SIGKILL at random moments: a child process (this
//! test binary, re-run in child mode) writes puts, deletes and single-shard write batches
//! from several threads and reports each acknowledged write; the parent kills it, reopens
//! and checks that every acknowledged write is there, that at most each writer's one
//! write in flight was added on top, and that a batch is there whole or not at all, with
//! checkpoints running every 64 KiB of log so that many kills land inside one.
//! It repeats on the same directory, at least 20 kill points per run.
//! `RINGDB_SEED=<n>` replays a run (the seed is printed).

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use ringdb::{Db, Options, WriteBatch};

mod common;
use common::{Rng, child_command, emit, line_reader, quarantine_files, sigkill};

const CHILD_ENV: &str = "RINGDB_TEST_SIGKILL_DIR";
const GEN_ENV: &str = "RINGDB_TEST_SIGKILL_GEN";
const SEED_ENV: &str = "RINGDB_TEST_SIGKILL_SEED";
const WRITERS: u64 = 4;
const SHARDS: usize = 3;
const PUT_KEYS: u64 = 10;
const BATCH_KEYS: u64 = 12;
const KILLS: u64 = 28;

fn options() -> Options {
    // Checkpoints every 64 KiB of log, small pages and a small cache: many kills land
    // inside a checkpoint, and values over 512 bytes go to chunks.
    Options::default()
        .shards(SHARDS)
        .wal_segment_bytes(256 << 10)
        .checkpoint_wal_bytes(64 << 10)
        .page_records_max(4)
        .page_chunk_bytes(512)
        .cache_bytes(64 << 10)
}

fn put_key(writer: u64, i: u64) -> Vec<u8> {
    format!("w{writer}-p{i:02}").into_bytes()
}

fn batch_key(writer: u64, i: u64) -> Vec<u8> {
    format!("w{writer}-b{i:02}").into_bytes()
}

/// Every key a writer may touch.
fn writer_keys(writer: u64) -> Vec<Vec<u8>> {
    (0..PUT_KEYS).map(|i| put_key(writer, i)).chain((0..BATCH_KEYS).map(|i| batch_key(writer, i))).collect()
}

/// One write and what it does to the keys (None: deleted).
#[derive(Debug, Clone)]
struct Op {
    desc: String,
    effect: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    batch: bool,
}

fn text(key: &[u8]) -> &str {
    std::str::from_utf8(key).expect("ascii keys")
}

fn filler(rng: &mut Rng) -> String {
    let len = rng.range(0, 600) as usize;
    let c = (b'a' + rng.range(0, 25) as u8) as char;
    std::iter::repeat_n(c, len).collect()
}

/// The write number `seq` of `writer` in generation (child run) `gen`: a function of
/// these alone, so the parent can tell which write was in flight at the kill.
fn op(seed: u64, gen_: u64, writer: u64, seq: u64, shard_of: &dyn Fn(&[u8]) -> usize) -> Op {
    let mut rng = Rng::for_parts(&[seed, gen_, writer, seq]);
    match rng.range(0, 9) {
        0..=4 => {
            let key = put_key(writer, rng.range(0, PUT_KEYS - 1));
            let value = format!("put:g{gen_}:w{writer}:s{seq}:{}", filler(&mut rng)).into_bytes();
            Op { desc: format!("put {}", text(&key)), effect: vec![(key, Some(value))], batch: false }
        }
        5 => {
            let key = put_key(writer, rng.range(0, PUT_KEYS - 1));
            Op { desc: format!("del {}", text(&key)), effect: vec![(key, None)], batch: false }
        }
        _ => {
            // All keys of a batch on one shard: a batch is atomic per shard.
            let mut by_shard: BTreeMap<usize, Vec<Vec<u8>>> = BTreeMap::new();
            for i in 0..BATCH_KEYS {
                let key = batch_key(writer, i);
                by_shard.entry(shard_of(&key)).or_default().push(key);
            }
            let shards: Vec<Vec<Vec<u8>>> = by_shard.into_values().filter(|keys| keys.len() >= 2).collect();
            let mut keys = shards[rng.range(0, shards.len() as u64 - 1) as usize].clone();
            let take = rng.range(2, keys.len().min(6) as u64) as usize;
            for i in 0..take {
                let j = rng.range(i as u64, keys.len() as u64 - 1) as usize;
                keys.swap(i, j);
            }
            keys.truncate(take);
            let id = format!("g{gen_}w{writer}s{seq}");
            let fill = filler(&mut rng);
            let effect: Vec<_> =
                keys.iter().map(|k| (k.clone(), Some(format!("batch:{id}:{}:{fill}", text(k)).into_bytes()))).collect();
            let names: Vec<&str> = keys.iter().map(|k| text(k)).collect();
            Op { desc: format!("batch {id} {}", names.join(",")), effect, batch: true }
        }
    }
}

fn env_u64(name: &str) -> u64 {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set")).parse().unwrap()
}

/// Child mode (only when `RINGDB_TEST_SIGKILL_DIR` is set): writes until killed,
/// printing `ack <writer> <seq> <what>` after each acknowledged write.
#[test]
fn child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let (gen_, seed) = (env_u64(GEN_ENV), env_u64(SEED_ENV));
    emit("opening");
    let db = Db::open(&dir, options()).unwrap_or_else(|e| {
        eprintln!("child: open failed: {e}");
        std::process::exit(3)
    });
    emit("ready");
    let threads: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let db = db.clone();
            std::thread::spawn(move || {
                for seq in 1.. {
                    let op = op(seed, gen_, writer, seq, &|k| db.shard_of(k));
                    let result = if op.batch {
                        let mut batch = WriteBatch::new();
                        for (k, v) in &op.effect {
                            batch.put(k, v.as_ref().unwrap()).unwrap();
                        }
                        db.write_batch(batch)
                    } else {
                        match &op.effect[0] {
                            (k, Some(v)) => db.put(k, v),
                            (k, None) => db.delete(k),
                        }
                    };
                    if let Err(e) = result {
                        eprintln!("child: writer {writer} seq {seq} ({}) failed: {e}", op.desc);
                        std::process::exit(3);
                    }
                    emit(&format!("ack {writer} {seq} {}", op.desc));
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

type Model = HashMap<Vec<u8>, Option<Vec<u8>>>;

fn show(v: &Option<Vec<u8>>) -> String {
    match v {
        None => "absent".into(),
        Some(v) => {
            let s = String::from_utf8_lossy(v);
            let cut: String = s.chars().take(48).collect();
            format!("{cut:?}")
        }
    }
}

/// Checks one writer's keys after a kill: either exactly what was acknowledged, or that
/// plus the whole effect of the one write it had in flight. Returns whether the write
/// in flight survived.
fn check_writer(db: &Db, model: &mut Model, writer: u64, in_flight: &Op, context: &str) -> bool {
    let keys = writer_keys(writer);
    let observed: Model = keys.iter().map(|k| (k.clone(), db.get(k).unwrap().map(Vec::from))).collect();
    let mut with_write = model.clone();
    for (k, v) in &in_flight.effect {
        with_write.insert(k.clone(), v.clone());
    }
    let matches = |expected: &Model| keys.iter().all(|k| observed[k] == expected[k]);
    let survived = if matches(model) {
        false
    } else if matches(&with_write) {
        true
    } else {
        let mut report = String::new();
        for k in &keys {
            if observed[k] != model[k] || observed[k] != with_write[k] {
                report += &format!(
                    "\n  {}: found {}, acknowledged {}, with the write in flight {}",
                    text(k),
                    show(&observed[k]),
                    show(&model[k]),
                    show(&with_write[k])
                );
            }
        }
        panic!(
            "{context}: writer {writer}'s keys are neither what was acknowledged nor that plus its write \
             in flight ({}):{report}",
            in_flight.desc
        );
    };
    for k in keys {
        model.insert(k.clone(), observed[&k].clone());
    }
    survived
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let seed = common::seed("acknowledged_writes_survive_sigkill");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut model: Model = (0..WRITERS).flat_map(writer_keys).map(|k| (k, None)).collect();
    let (mut total_acks, mut batches_acked, mut in_flight_survived) = (0u64, 0u64, 0u64);
    for run in 0..KILLS {
        let gen_ = run + 1;
        let mut child = child_command(
            "child_writer",
            &[(CHILD_ENV, dir.path().display().to_string()), (GEN_ENV, gen_.to_string()), (SEED_ENV, seed.to_string())],
        )
        .spawn()
        .expect("spawn the test binary as a child");
        let (lines, reader) = line_reader(child.stdout.take().unwrap());
        // Most kills land while the writers run; every fourth lands while the child opens
        // the database (replay, torn-tail cut, segment preparation).
        let early = run % 4 == 3;
        let wait_for = if early { "opening" } else { "ready" };
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
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
        let delay = if early { rng.range(0, 15) } else { rng.range(20, 300) };
        std::thread::sleep(Duration::from_millis(delay));
        sigkill(&mut child);
        reader.join().unwrap();
        seen.extend(lines.try_iter());

        let db = Db::open(dir.path(), options()).unwrap_or_else(|e| panic!("run {run}: reopen after SIGKILL: {e}"));
        let shard_of = |k: &[u8]| db.shard_of(k);
        let mut last_seq = vec![0u64; WRITERS as usize];
        for line in &seen {
            let Some(rest) = line.strip_prefix("ack ") else { continue };
            let mut parts = rest.splitn(3, ' ');
            let writer: u64 = parts.next().unwrap().parse().unwrap();
            let seq: u64 = parts.next().unwrap().parse().unwrap();
            let desc = parts.next().unwrap();
            assert_eq!(seq, last_seq[writer as usize] + 1, "run {run}: writer {writer} acks in order");
            last_seq[writer as usize] = seq;
            let op = op(seed, gen_, writer, seq, &shard_of);
            assert_eq!(op.desc, desc, "run {run}: the parent rebuilds the child's writes");
            for (k, v) in op.effect {
                model.insert(k, v);
            }
            total_acks += 1;
            batches_acked += u64::from(op.batch);
        }
        let context = format!("run {run} (seed {seed}, killed {delay} ms after '{wait_for}')");
        for writer in 0..WRITERS {
            let in_flight = op(seed, gen_, writer, last_seq[writer as usize] + 1, &shard_of);
            in_flight_survived += u64::from(check_writer(&db, &mut model, writer, &in_flight, &context));
        }
        let acks: u64 = last_seq.iter().sum();
        println!("run {run}: killed {delay} ms after '{wait_for}', {acks} acknowledged writes");
        db.close().unwrap();
    }
    let quarantined: usize = (0..SHARDS).map(|s| quarantine_files(dir.path(), s).len()).sum();
    println!(
        "{KILLS} kills: {total_acks} acknowledged writes ({batches_acked} batches), {in_flight_survived} writes \
         in flight found durable, {quarantined} torn tails quarantined"
    );
    assert!(total_acks > 0, "the children acknowledged no write: nothing was tested");
}
