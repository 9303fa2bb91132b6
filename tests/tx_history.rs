//! Checks the history of a list-append workload for serializability: threads run
//! transactions that read lists and append unique elements to them, over keys on all
//! shards; from what each committed transaction read and appended, and the final lists,
//! the checker builds the dependency graph (write-write from the order of each final
//! list, write-read from the last element each read saw, read-write from the element that
//! followed what a read saw) and searches it for a cycle. It also checks that every read
//! is a prefix of the final list, that every committed append is there exactly once and
//! that no element of an attempt that did not commit is. A unit test shows the checker
//! finds the cycle of a write skew.
//! `RINGDB_SEED=<n>` replays the choice of operations (the seed is printed).

use std::collections::{BTreeMap, HashMap, HashSet};

use ringdb::{Db, Options};

mod common;
use common::Rng;

const KEYS: u64 = 8;
const THREADS: u64 = 6;
const TXS_PER_THREAD: u64 = 120;

/// What a committed transaction did: its element, the lists it read (key → list; for an
/// append, the list just before its element), and the keys it appended to.
#[derive(Debug, Clone)]
struct Committed {
    element: u64,
    reads: Vec<(u64, Vec<u64>)>,
    appends: Vec<u64>,
}

fn key(k: u64) -> Vec<u8> {
    format!("list:{k}").into_bytes()
}

fn decode(v: Option<ringdb::Value>) -> Vec<u64> {
    v.map_or_else(Vec::new, |v| v.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect())
}

fn encode(list: &[u64]) -> Vec<u8> {
    list.iter().flat_map(|e| e.to_le_bytes()).collect()
}

/// Checks a history; returns a description of the first violation, or of a cycle.
fn check(history: &[Committed], finals: &BTreeMap<u64, Vec<u64>>) -> Result<(), String> {
    let writer: HashMap<u64, usize> = history.iter().enumerate().map(|(i, t)| (t.element, i)).collect();
    if writer.len() != history.len() {
        return Err("two committed transactions share an element".into());
    }
    for (k, list) in finals {
        let mut seen = HashSet::new();
        for e in list {
            if !seen.insert(e) {
                return Err(format!("element {e} twice in list {k}"));
            }
            match writer.get(e) {
                Some(&t) if history[t].appends.contains(k) => {}
                _ => return Err(format!("element {e} in list {k} was not appended by a committed transaction")),
            }
        }
    }
    for t in history {
        for k in &t.appends {
            if !finals[k].contains(&t.element) {
                return Err(format!("committed append of {} to list {k} is missing", t.element));
            }
        }
        for (k, read) in &t.reads {
            if !finals[k].starts_with(read) {
                return Err(format!(
                    "transaction {} read {read:?} of list {k}, not a prefix of {:?}",
                    t.element, finals[k]
                ));
            }
        }
    }
    // Dependency edges between committed transactions.
    let mut edges: Vec<HashSet<usize>> = vec![HashSet::new(); history.len()];
    for list in finals.values() {
        for pair in list.windows(2) {
            edges[writer[&pair[0]]].insert(writer[&pair[1]]); // write-write
        }
    }
    for (i, t) in history.iter().enumerate() {
        for (k, read) in &t.reads {
            if let Some(last) = read.last() {
                edges[writer[last]].insert(i); // write-read
            }
            if let Some(next) = finals[k].get(read.len()) {
                edges[i].insert(writer[next]); // read-write (anti-dependency)
            }
        }
        edges[i].remove(&i);
    }
    // Cycle search: iterative depth-first search with colours.
    let mut colour = vec![0u8; history.len()]; // 0 new, 1 on the path, 2 done
    let adjacency: Vec<Vec<usize>> = edges.into_iter().map(|e| e.into_iter().collect()).collect();
    for root in 0..history.len() {
        if colour[root] != 0 {
            continue;
        }
        let mut stack = vec![(root, 0usize)];
        colour[root] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&to) = adjacency[node].get(*next) {
                *next += 1;
                match colour[to] {
                    0 => {
                        colour[to] = 1;
                        stack.push((to, 0));
                    }
                    1 => {
                        let at = stack.iter().position(|&(n, _)| n == to).expect("on the path");
                        let cycle: Vec<u64> = stack[at..].iter().map(|&(n, _)| history[n].element).collect();
                        return Err(format!("serialization cycle through transactions {cycle:?}"));
                    }
                    _ => {}
                }
            } else {
                colour[node] = 2;
                stack.pop();
            }
        }
    }
    Ok(())
}

#[test]
fn checker_finds_a_cycle() {
    // Write skew: T1 and T2 both read lists 0 and 1 empty; T1 appends to 0, T2 to 1.
    // Each read-write depends on the other: a cycle.
    let history = vec![
        Committed { element: 1, reads: vec![(0, vec![]), (1, vec![])], appends: vec![0] },
        Committed { element: 2, reads: vec![(0, vec![]), (1, vec![])], appends: vec![1] },
    ];
    let finals: BTreeMap<u64, Vec<u64>> = [(0, vec![1]), (1, vec![2])].into_iter().collect();
    let err = check(&history, &finals).unwrap_err();
    assert!(err.contains("cycle"), "{err}");
    // The same with T2 reading T1's append is serializable (T1 then T2).
    let history = vec![
        Committed { element: 1, reads: vec![(0, vec![]), (1, vec![])], appends: vec![0] },
        Committed { element: 2, reads: vec![(0, vec![1]), (1, vec![])], appends: vec![1] },
    ];
    check(&history, &finals).unwrap();
    // A lost element, and an element of an attempt that did not commit, are caught.
    let lost: BTreeMap<u64, Vec<u64>> = [(0, vec![]), (1, vec![2])].into_iter().collect();
    assert!(check(&history, &lost).unwrap_err().contains("missing"));
    let stray: BTreeMap<u64, Vec<u64>> = [(0, vec![1, 9]), (1, vec![2])].into_iter().collect();
    assert!(check(&history, &stray).unwrap_err().contains("not appended"));
}

#[test]
fn list_append_history_is_serializable() {
    let seed = common::seed("list_append_history_is_serializable");
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options::default().shards(3).wal_segment_bytes(1 << 20)).unwrap();
    let history: Vec<Committed> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let db = &db;
                s.spawn(move || {
                    let mut rng = Rng::for_parts(&[seed, t]);
                    let mut attempt = 0u64;
                    let mut committed = Vec::new();
                    for _ in 0..TXS_PER_THREAD {
                        // 1 to 3 operations on distinct keys: reads or appends.
                        let ops: Vec<(u64, bool)> = {
                            let n = rng.range(1, 3);
                            let mut keys: Vec<u64> = Vec::new();
                            while keys.len() < n as usize {
                                let k = rng.range(0, KEYS - 1);
                                if !keys.contains(&k) {
                                    keys.push(k);
                                }
                            }
                            keys.into_iter().map(|k| (k, rng.range(0, 1) == 0)).collect()
                        };
                        let done = db
                            .transact(|tx| {
                                attempt += 1;
                                let element = t << 32 | attempt;
                                let mut c = Committed { element, reads: Vec::new(), appends: Vec::new() };
                                for &(k, append) in &ops {
                                    let mut list = decode(tx.get(key(k))?);
                                    c.reads.push((k, list.clone()));
                                    if append {
                                        list.push(element);
                                        tx.put(key(k), encode(&list))?;
                                        c.appends.push(k);
                                    }
                                }
                                Ok(c)
                            })
                            .expect("commits within the attempts");
                        committed.push(done);
                    }
                    committed
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let finals: BTreeMap<u64, Vec<u64>> = (0..KEYS).map(|k| (k, decode(db.get(key(k)).unwrap()))).collect();
    let appended: usize = finals.values().map(Vec::len).sum();
    println!("{} committed transactions, {appended} elements appended", history.len());
    assert!(appended > 100, "too few appends to test anything");
    if let Err(violation) = check(&history, &finals) {
        panic!("seed {seed}: {violation}");
    }
}
