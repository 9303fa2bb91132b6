//! Proves blob transactions are all-or-nothing and acknowledged blobs survive SIGKILL: a
//! child process (this test binary in child mode) appends single blobs and transactions
//! from several threads with `Durability::Sync` and reports each acknowledged one; the
//! parent kills it at a random moment, reopens the log (cutting any torn tail), and checks
//! that every acknowledged blob reads back, that every transaction in the log is whole,
//! and that at most each writer's one write in flight was added on top. It repeats on the
//! same directory, at least 20 kill points per run. `RINGDB_SEED=<n>` replays a run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use ringdb::format::blob::{Decoded, decode_header};
use ringdb::{BlobLog, BlobOptions, Location};

mod common;
use common::{Rng, child_command, emit, line_reader, sigkill};

const CHILD_ENV: &str = "RINGDB_TEST_BLOB_KILL_DIR";
const GEN_ENV: &str = "RINGDB_TEST_BLOB_KILL_GEN";
const SEED_ENV: &str = "RINGDB_TEST_BLOB_KILL_SEED";
const WRITERS: u64 = 3;
const KILLS: u64 = 24;

fn options() -> BlobOptions {
    BlobOptions::default().max_segment_bytes(1 << 20).frame_bytes(8 << 10)
}

/// Blob count and sizes of write `seq` of `writer` in generation `gen_`.
fn op(seed: u64, gen_: u64, writer: u64, seq: u64) -> Vec<usize> {
    let mut rng = Rng::for_parts(&[seed, gen_, writer, seq]);
    let count = if rng.range(0, 2) == 0 { 1 } else { rng.range(2, 6) as usize };
    (0..count)
        .map(|_| if rng.range(0, 9) == 0 { rng.range(20_000, 120_000) } else { rng.range(64, 6000) } as usize)
        .collect()
}

/// Content of blob `idx` of that write: an identifying prefix, then seeded bytes.
fn content(seed: u64, gen_: u64, writer: u64, seq: u64, idx: usize, count: usize, len: usize) -> Vec<u8> {
    let mut out = format!("g{gen_}:w{writer}:s{seq}:i{idx}:n{count};").into_bytes();
    let mut rng = Rng::for_parts(&[seed, gen_, writer, seq, idx as u64, 7]);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

fn parse_id(blob: &[u8]) -> (u64, u64, u64, usize, usize) {
    let end = blob.iter().position(|&b| b == b';').expect("an identifying prefix");
    let text = std::str::from_utf8(&blob[..end]).expect("ascii prefix");
    let nums: Vec<u64> = text.split(':').map(|p| p[1..].parse().expect("a number")).collect();
    (nums[0], nums[1], nums[2], nums[3] as usize, nums[4] as usize)
}

fn env_u64(name: &str) -> u64 {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set")).parse().unwrap()
}

/// Child mode: appends until killed, printing `ack <writer> <seq> <locations>`.
#[test]
fn child_appender() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let (gen_, seed) = (env_u64(GEN_ENV), env_u64(SEED_ENV));
    let log = BlobLog::open(&dir, options()).unwrap_or_else(|e| {
        eprintln!("child: open failed: {e}");
        std::process::exit(3)
    });
    emit("ready");
    let threads: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let log = log.clone();
            std::thread::spawn(move || {
                for seq in 0.. {
                    let sizes = op(seed, gen_, writer, seq);
                    let count = sizes.len();
                    let locs = if count == 1 {
                        vec![log.append(&content(seed, gen_, writer, seq, 0, 1, sizes[0])).unwrap()]
                    } else {
                        let mut txn = log.transaction();
                        for (idx, &len) in sizes.iter().enumerate() {
                            txn.append(&content(seed, gen_, writer, seq, idx, count, len)).unwrap();
                        }
                        txn.commit().unwrap()
                    };
                    let text: Vec<String> = locs.iter().map(ToString::to_string).collect();
                    emit(&format!("ack {writer} {seq} {}", text.join(",")));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Every blob in the log with its bytes, found by walking the records of every segment
/// file (no compression here, so a record's payload is the blob).
fn all_blobs(dir: &Path, log: &BlobLog) -> Vec<(Location, Vec<u8>)> {
    let mut out = Vec::new();
    for seg in log.segments().unwrap() {
        let bytes = std::fs::read(dir.join(format!("{:08x}.blob", seg.segment))).unwrap();
        let mut at = seg.data_start;
        while at < seg.end {
            let Decoded::Header(h) = decode_header(&bytes[at as usize..], bytes.len() as u64 - at) else {
                panic!("no record at {at} of segment {} before its end {}", seg.segment, seg.end)
            };
            let start = (at + h.meta_bytes()) as usize;
            let blob = bytes[start..start + h.blob_bytes as usize].to_vec();
            out.push((Location { segment: seg.segment, offset: at, len: h.blob_bytes }, blob));
            at += h.record_bytes();
        }
    }
    out
}

#[test]
fn transactions_are_whole_and_acknowledged_blobs_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let seed = common::seed("blob_sigkill");
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(seed);
    // (gen, writer, seq) -> blob count, for every acknowledged write.
    let mut acked: BTreeMap<(u64, u64, u64), Vec<Location>> = BTreeMap::new();
    let mut total_blobs_seen = 0;
    for gen_ in 0..KILLS {
        let env =
            [(CHILD_ENV, dir.path().display().to_string()), (GEN_ENV, gen_.to_string()), (SEED_ENV, seed.to_string())];
        let mut child = child_command("child_appender", &env).spawn().unwrap();
        let (lines, reader) = line_reader(child.stdout.take().unwrap());
        let ready = lines.recv_timeout(Duration::from_secs(20)).expect("the child opens the log");
        assert_eq!(ready, "ready");
        let run_for = Duration::from_millis(rng.range(5, 120));
        let started = Instant::now();
        let mut gen_acks = Vec::new();
        loop {
            let left = run_for.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            match lines.recv_timeout(left) {
                Ok(line) => gen_acks.push(line),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => panic!("the child died by itself (seed {seed})"),
            }
        }
        sigkill(&mut child);
        reader.join().unwrap();
        gen_acks.extend(lines.try_iter());
        for line in gen_acks {
            let mut parts = line.split(' ');
            assert_eq!(parts.next(), Some("ack"), "{line}");
            let writer: u64 = parts.next().unwrap().parse().unwrap();
            let seq: u64 = parts.next().unwrap().parse().unwrap();
            let locs = parts.next().unwrap().split(',').map(|l| l.parse().unwrap()).collect();
            acked.insert((gen_, writer, seq), locs);
        }
        // Reopen: recovery runs, then check the whole log against what was acknowledged.
        let log = BlobLog::open(dir.path(), options())
            .unwrap_or_else(|e| panic!("reopen after kill {gen_}: {e} (seed {seed})"));
        let mut groups: BTreeMap<(u64, u64, u64), BTreeSet<usize>> = BTreeMap::new();
        let blobs = all_blobs(dir.path(), &log);
        let mut found = BTreeMap::new();
        for (loc, data) in &blobs {
            let (g, w, s, idx, count) = parse_id(data);
            let sizes = op(seed, g, w, s);
            assert_eq!(count, sizes.len());
            assert!(data[..] == content(seed, g, w, s, idx, count, sizes[idx])[..], "{loc} differs (seed {seed})");
            assert!(groups.entry((g, w, s)).or_default().insert(idx), "blob {idx} of g{g} w{w} s{s} twice");
            found.insert(*loc, (g, w, s, idx));
        }
        for (&(g, w, s), locs) in &acked {
            for (idx, loc) in locs.iter().enumerate() {
                assert_eq!(
                    found.get(loc),
                    Some(&(g, w, s, idx)),
                    "acknowledged {loc} (g{g} w{w} s{s}) lost (seed {seed})"
                );
                if g == gen_ {
                    // This generation's blobs also through the read path, after recovery.
                    let sizes = op(seed, g, w, s);
                    let got = log.read(*loc).unwrap_or_else(|e| panic!("read {loc}: {e} (seed {seed})"));
                    assert!(got[..] == content(seed, g, w, s, idx, sizes.len(), sizes[idx])[..], "{loc} (seed {seed})");
                }
            }
        }
        for (&(g, w, s), idxs) in &groups {
            let count = op(seed, g, w, s).len();
            assert_eq!(idxs.len(), count, "g{g} w{w} s{s}: a partial transaction survived (seed {seed})");
            if !acked.contains_key(&(g, w, s)) {
                // Not acknowledged: it must be the writer's one write in flight at the kill.
                let last_acked = acked.range((g, w, 0)..=(g, w, u64::MAX)).next_back().map(|(k, _)| k.2);
                let next = last_acked.map_or(0, |l| l + 1);
                assert_eq!(s, next, "g{g} w{w} s{s} is in the log but was never in flight (seed {seed})");
            }
        }
        total_blobs_seen = blobs.len();
        log.close().unwrap();
    }
    println!("blob_sigkill: {KILLS} kills, {} acknowledged writes, {total_blobs_seen} blobs in the log", acked.len());
    assert!(acked.len() as u64 > KILLS, "the children acknowledged writes");
}
