//! "Write, flush, SIGKILL": a child writes with a non-Sync durability, calls `flush`,
//! prints `flushed`, then keeps writing; the parent kills it soon after and checks that
//! everything written before the flush is there, and that what survived of the later
//! writes is, per shard, a prefix of them in write order (the log is replayed in order).

use std::collections::HashMap;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use ringdb::{Db, Durability, Options, WriteBatch};

use super::{Rng, child_command, emit, line_reader, sigkill};

pub const DIR_ENV: &str = "RINGDB_TEST_FLUSH_KILL_DIR";
pub const GEN_ENV: &str = "RINGDB_TEST_FLUSH_KILL_GEN";
const THREADS: u64 = 3;
const PRE_PER_THREAD: u64 = 300;
/// The child writes this many keys after the flush, then idles until killed.
const POST_MAX: u64 = 20_000;
const SHARDS: usize = 3;

pub fn options(durability: Durability) -> Options {
    Options::default().shards(SHARDS).wal_segment_bytes(256 << 10).durability(durability)
}

fn pre_key(gen_: u64, t: u64, i: u64) -> Vec<u8> {
    format!("g{gen_}-pre-t{t}-{i:04}").into_bytes()
}

fn pre_value(gen_: u64, t: u64, i: u64) -> Vec<u8> {
    format!("pre g{gen_} t{t} i{i} {}", "x".repeat((i % 200) as usize)).into_bytes()
}

fn post_key(gen_: u64, i: u64) -> Vec<u8> {
    format!("g{gen_}-post-{i:05}").into_bytes()
}

fn post_value(gen_: u64, i: u64) -> Vec<u8> {
    format!("post g{gen_} i{i} {}", "y".repeat(150 + (i % 100) as usize)).into_bytes()
}

/// What the child leaves acknowledged before its flush: key to value (None: deleted).
fn pre_expected(gen_: u64) -> HashMap<Vec<u8>, Option<Vec<u8>>> {
    let mut out = HashMap::new();
    for t in 0..THREADS {
        for i in 0..PRE_PER_THREAD {
            let deleted = i % 10 == 7;
            out.insert(pre_key(gen_, t, i), if deleted { None } else { Some(pre_value(gen_, t, i)) });
        }
    }
    out
}

/// The child's side; call from a child-mode test with the durability under test.
pub fn child(durability: Durability) {
    let Ok(dir) = std::env::var(DIR_ENV) else { return };
    let gen_: u64 = std::env::var(GEN_ENV).expect("generation").parse().unwrap();
    let db = Db::open(&dir, options(durability)).unwrap_or_else(|e| {
        eprintln!("child: open failed: {e}");
        std::process::exit(3)
    });
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let db = db.clone();
            s.spawn(move || {
                for i in 0..PRE_PER_THREAD {
                    let key = pre_key(gen_, t, i);
                    // A first value, replaced: the later write must win after recovery.
                    db.put(&key, b"draft").unwrap();
                    match i % 10 {
                        7 => db.delete(&key).unwrap(),
                        3 => {
                            let mut batch = WriteBatch::new();
                            batch.put(&key, b"draft 2").unwrap().put(&key, pre_value(gen_, t, i)).unwrap();
                            db.write_batch(batch).unwrap();
                        }
                        _ => db.put(&key, pre_value(gen_, t, i)).unwrap(),
                    }
                }
            });
        }
    });
    db.flush().unwrap();
    emit("flushed");
    for i in 0..POST_MAX {
        db.put(post_key(gen_, i), post_value(gen_, i)).unwrap();
    }
    emit("post done");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The parent's side: `kills` rounds of spawn, wait for `flushed`, kill, reopen, check.
/// `child_test` names the child-mode test that calls [`child`].
pub fn parent(test: &str, child_test: &str, kills: u64) {
    let seed = super::seed(test);
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    // Everything that must stay as it is: pre-flush keys, and post-flush keys as found.
    let mut model: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
    let mut post_survived = 0u64;
    for run in 0..kills {
        let gen_ = run + 1;
        let mut child =
            child_command(child_test, &[(DIR_ENV, dir.path().display().to_string()), (GEN_ENV, gen_.to_string())])
                .spawn()
                .expect("spawn the test binary as a child");
        let (lines, reader) = line_reader(child.stdout.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line == "flushed" => break,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(status) = child.try_wait().unwrap() {
                        panic!("run {run}: child exited ({status}) before 'flushed'");
                    }
                    assert!(Instant::now() < deadline, "run {run}: no 'flushed' from the child in 60 s");
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = child.wait().unwrap();
                    panic!("run {run}: child closed its output ({status}) before 'flushed'");
                }
            }
        }
        let delay = rng.range(0, 40);
        std::thread::sleep(Duration::from_millis(delay));
        sigkill(&mut child);
        reader.join().unwrap();

        let db = Db::open(dir.path(), options(Durability::Sync))
            .unwrap_or_else(|e| panic!("run {run}: reopen after SIGKILL: {e}"));
        let context = format!("run {run} (seed {seed}, killed {delay} ms after 'flushed')");
        model.extend(pre_expected(gen_));
        for (k, v) in &model {
            let found = db.get(k).unwrap().map(Vec::from);
            assert!(
                found == *v,
                "{context}: {} is {:?}, expected {:?}",
                String::from_utf8_lossy(k),
                found.map(|f| String::from_utf8_lossy(&f).chars().take(40).collect::<String>()),
                v.as_ref().map(|f| String::from_utf8_lossy(f).chars().take(40).collect::<String>()),
            );
        }
        // Later writes: per shard, those that survived are the first ones written.
        let mut gap_seen = vec![false; db.shard_count()];
        for i in 0..POST_MAX {
            let key = post_key(gen_, i);
            let shard = db.shard_of(&key);
            let found = db.get(&key).unwrap().map(Vec::from);
            match found {
                Some(v) => {
                    assert!(v == post_value(gen_, i), "{context}: post key {i} has a wrong value");
                    assert!(
                        !gap_seen[shard],
                        "{context}: post key {i} of shard {shard} survived, but an earlier one of that shard did not"
                    );
                    post_survived += 1;
                    model.insert(key, Some(v));
                }
                None => {
                    gap_seen[shard] = true;
                    model.insert(key, None);
                }
            }
        }
        println!("{context}: checked");
        db.close().unwrap();
    }
    println!("{kills} kills after flush: every pre-flush write found; {post_survived} post-flush writes survived");
}
