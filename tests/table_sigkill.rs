//! Proves a typed table loses no acknowledged `set`, `update` or `delete` when its process
//! is killed with SIGKILL: a child process (this test binary in child mode) writes records
//! from several threads and reports each acknowledged write; the parent kills it at a
//! random moment, reopens, and checks every writer's records against a model (each
//! writer may have had one write in flight, which may or may not be there), and that the
//! table's record count was rebuilt to match. Checkpoints run every 64 KiB of log, so many
//! kills land inside one. `RINGDB_SEED=<n>` replays a run (the seed is printed).

use std::collections::BTreeMap;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use ringdb::{Db, Options};

mod common;
use common::{Rng, child_command, emit, line_reader, sigkill};

const CHILD_ENV: &str = "RINGDB_TEST_TABLE_KILL_DIR";
const GEN_ENV: &str = "RINGDB_TEST_TABLE_KILL_GEN";
const SEED_ENV: &str = "RINGDB_TEST_TABLE_KILL_SEED";
const WRITERS: u64 = 4;
const SLOTS: u64 = 24;
const KILLS: u64 = 8;
const TABLE: &str = "kill";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
struct Rec {
    seq: u64,
    counter: u64,
    generation: u32,
    writer: u32,
    check: u64,
}
ringdb::record!(Rec, "Rec", 1, [seq, counter, generation, writer, check]);

fn options() -> Options {
    Options::default()
        .shards(3)
        .wal_segment_bytes(256 << 10)
        .checkpoint_wal_bytes(64 << 10)
        .page_records_max(4)
        .cache_bytes(64 << 10)
}

/// The writer's `slot`-th index: sparse, and writers never share one.
fn index_of(writer: u64, slot: u64) -> u64 {
    (slot * WRITERS + writer) * 1_000_000_007 + 3
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Set,
    Update,
    Delete,
}

/// Write number `seq` of `writer` in generation `gen_`: a function of these alone.
fn op(seed: u64, gen_: u64, writer: u64, seq: u64) -> (Kind, u64) {
    let mut rng = Rng::for_parts(&[seed, gen_, writer, seq]);
    let kind = match rng.range(0, 9) {
        0..=5 => Kind::Set,
        6..=8 => Kind::Update,
        _ => Kind::Delete,
    };
    (kind, index_of(writer, rng.range(0, SLOTS - 1)))
}

fn set_value(gen_: u64, writer: u64, seq: u64) -> Rec {
    Rec { seq, counter: 0, generation: gen_ as u32, writer: writer as u32, check: seq ^ 0x5a5a_5a5a ^ (writer << 40) }
}

fn updated(mut r: Rec, gen_: u64, seq: u64) -> Rec {
    r.counter += 1;
    r.seq = seq;
    r.generation = gen_ as u32;
    r
}

/// What the write does to the record at its index, given the record before it.
fn effect(kind: Kind, before: Option<Rec>, gen_: u64, writer: u64, seq: u64) -> Option<Rec> {
    match kind {
        Kind::Set => Some(set_value(gen_, writer, seq)),
        Kind::Update => before.map(|r| updated(r, gen_, seq)),
        Kind::Delete => None,
    }
}

fn env_u64(name: &str) -> u64 {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set")).parse().unwrap()
}

/// Child mode (only when the directory variable is set): writes until killed, printing
/// `ack <writer> <seq>` after each acknowledged write.
#[test]
fn child_table_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let (gen_, seed) = (env_u64(GEN_ENV), env_u64(SEED_ENV));
    let db = Db::open(&dir, options()).unwrap_or_else(|e| {
        eprintln!("child: open failed: {e}");
        std::process::exit(3)
    });
    let table = db.table::<Rec>(TABLE).unwrap();
    emit("ready");
    let threads: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let table = table.clone();
            std::thread::spawn(move || {
                for seq in 1.. {
                    let (kind, index) = op(seed, gen_, writer, seq);
                    let result = match kind {
                        Kind::Set => table.set(index, &set_value(gen_, writer, seq)),
                        Kind::Update => table.update(index, |r| *r = updated(*r, gen_, seq)).map(|_| ()),
                        Kind::Delete => table.delete(index).map(|_| ()),
                    };
                    if let Err(e) = result {
                        eprintln!("child: writer {writer} seq {seq} ({kind:?} {index}) failed: {e}");
                        std::process::exit(3);
                    }
                    emit(&format!("ack {writer} {seq}"));
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

#[test]
fn acknowledged_table_writes_survive_sigkill() {
    let seed = common::seed("acknowledged_table_writes_survive_sigkill");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut model: BTreeMap<u64, Option<Rec>> =
        (0..WRITERS).flat_map(|w| (0..SLOTS).map(move |s| (index_of(w, s), None))).collect();
    let (mut total_acks, mut in_flight_survived) = (0u64, 0u64);
    for run in 0..KILLS {
        let gen_ = run + 1;
        let mut child = child_command(
            "child_table_writer",
            &[(CHILD_ENV, dir.path().display().to_string()), (GEN_ENV, gen_.to_string()), (SEED_ENV, seed.to_string())],
        )
        .spawn()
        .expect("spawn the test binary as a child");
        let (lines, reader) = line_reader(child.stdout.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        loop {
            match lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line == "ready" => break,
                Ok(line) => seen.push(line),
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(status) = child.try_wait().unwrap() {
                        panic!("run {run}: child exited ({status}) before 'ready'");
                    }
                    assert!(Instant::now() < deadline, "run {run}: no 'ready' from the child in 60 s");
                }
                Err(RecvTimeoutError::Disconnected) => panic!("run {run}: child closed its output before 'ready'"),
            }
        }
        let delay = rng.range(30, 300);
        std::thread::sleep(Duration::from_millis(delay));
        sigkill(&mut child);
        reader.join().unwrap();
        seen.extend(lines.try_iter());

        let mut last_seq = [0u64; WRITERS as usize];
        for line in &seen {
            let Some(rest) = line.strip_prefix("ack ") else { continue };
            let (writer, seq) = rest.split_once(' ').unwrap();
            let (writer, seq): (u64, u64) = (writer.parse().unwrap(), seq.parse().unwrap());
            assert_eq!(seq, last_seq[writer as usize] + 1, "run {run}: writer {writer} acks in order");
            last_seq[writer as usize] = seq;
            let (kind, index) = op(seed, gen_, writer, seq);
            let after = effect(kind, model[&index], gen_, writer, seq);
            model.insert(index, after);
            total_acks += 1;
        }

        let db = Db::open(dir.path(), options()).unwrap_or_else(|e| panic!("run {run}: reopen after SIGKILL: {e}"));
        let table = db.table::<Rec>(TABLE).unwrap();
        let context = format!("run {run} (seed {seed}, killed {delay} ms after 'ready')");
        for writer in 0..WRITERS {
            let seq = last_seq[writer as usize] + 1;
            let (kind, in_flight_index) = op(seed, gen_, writer, seq);
            let with_write = effect(kind, model[&in_flight_index], gen_, writer, seq);
            for slot in 0..SLOTS {
                let index = index_of(writer, slot);
                let found = table.get(index).unwrap();
                let acknowledged = model[&index];
                if found == acknowledged {
                    continue;
                }
                assert!(
                    index == in_flight_index && found == with_write,
                    "{context}: writer {writer} record {index}: found {found:?}, acknowledged {acknowledged:?}, \
                     with the write in flight ({kind:?} {in_flight_index}) {with_write:?}"
                );
                in_flight_survived += 1;
                model.insert(index, found);
            }
        }
        let present = model.values().filter(|r| r.is_some()).count() as u64;
        assert_eq!(table.len(), present, "{context}: the record count is rebuilt on open");
        let scanned: Vec<u64> = table.scan(..).map(|e| e.unwrap().0).collect();
        let expected: Vec<u64> = model.iter().filter(|(_, r)| r.is_some()).map(|(&i, _)| i).collect();
        assert_eq!(scanned, expected, "{context}: a scan sees exactly the records present");
        println!("run {run}: killed {delay} ms after 'ready', {} acknowledged writes", last_seq.iter().sum::<u64>());
        db.close().unwrap();
    }
    println!(
        "{KILLS} kills: {total_acks} acknowledged table writes, {in_flight_survived} writes in flight found durable"
    );
    assert!(total_acks > 0, "the children acknowledged no write: nothing was tested");
}
