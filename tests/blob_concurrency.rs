//! Proves many threads can append and read one blob log at once: every acknowledged
//! blob reads back exactly from any thread while writers keep appending and segments
//! rotate, with `Sync` and with `Periodic` durability (reads served from memory until
//! the write lands), and after a reopen.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use ringdb::{BlobLog, BlobOptions, Durability, Location};

mod common;
use common::Rng;

const WRITERS: u64 = 8;
const READERS: u64 = 4;
const APPENDS: u64 = 250;

fn content(writer: u64, i: u64) -> Vec<u8> {
    let mut rng = Rng::for_parts(&[writer, i]);
    let len = if rng.range(0, 30) == 0 { rng.range(100_000, 300_000) } else { rng.range(0, 16_000) } as usize;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

fn run(durability: Durability) {
    let seed = common::seed("blob_concurrency");
    let dir = tempfile::tempdir().unwrap();
    let options = || BlobOptions::default().max_segment_bytes(4 << 20).durability(durability);
    let log = BlobLog::open(dir.path(), options()).unwrap();
    let done: Arc<RwLock<Vec<(Location, u64, u64)>>> = Arc::new(RwLock::new(Vec::new()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (log, done) = (log.clone(), Arc::clone(&done));
            std::thread::spawn(move || {
                for i in 0..APPENDS {
                    let data = content(w, i);
                    let loc = if i % 10 == 9 {
                        let mut txn = log.transaction();
                        txn.append(&data).unwrap();
                        txn.append(&data[..data.len() / 2]).unwrap();
                        txn.commit().unwrap()[0]
                    } else {
                        log.append(&data).unwrap()
                    };
                    done.write().unwrap().push((loc, w, i));
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let (log, done) = (log.clone(), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed ^ r);
                let mut reads = 0;
                while reads < 2000 {
                    let pick = {
                        let d = done.read().unwrap();
                        if d.is_empty() { None } else { Some(d[rng.range(0, d.len() as u64 - 1) as usize]) }
                    };
                    let Some((loc, w, i)) = pick else {
                        std::thread::sleep(Duration::from_micros(100));
                        continue;
                    };
                    let got = log.read(loc).unwrap_or_else(|e| panic!("read {loc}: {e} (seed {seed})"));
                    assert!(got[..] == content(w, i)[..], "{loc} differs (seed {seed})");
                    reads += 1;
                }
            })
        })
        .collect();
    for t in writers.into_iter().chain(readers) {
        t.join().unwrap();
    }
    let done = done.read().unwrap().clone();
    assert_eq!(done.len() as u64, WRITERS * APPENDS);
    let mut locs: Vec<Location> = done.iter().map(|d| d.0).collect();
    locs.sort();
    locs.dedup();
    assert_eq!(locs.len(), done.len(), "every blob has its own location");
    assert!(log.segments().unwrap().len() > 2, "the segments rotated");
    log.close().unwrap();
    let log = BlobLog::open(dir.path(), options()).unwrap();
    for (loc, w, i) in done {
        assert!(log.read(loc).unwrap()[..] == content(w, i)[..], "{loc} after reopen");
    }
    log.close().unwrap();
}

#[test]
fn many_threads_append_and_read_with_sync_durability() {
    run(Durability::Sync);
}

#[test]
fn many_threads_append_and_read_with_periodic_durability() {
    run(Durability::Periodic { bytes: 256 << 10, items: 64, interval: Duration::from_millis(5) });
}
