//! The `ringdb` command on real directories made by the library: every subcommand, its
//! exit codes (0 success, 1 failure or damage, 2 usage), its `--json` output, and
//! `check` on a clean directory, a torn log tail and a damaged log record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ringdb::{BlobOptions, Db, Options};
use serde_json::Value;

const KEYS: usize = 120;

fn ringdb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringdb")).args(args).output().expect("the ringdb binary runs")
}

fn path_arg(dir: &Path) -> &str {
    dir.to_str().expect("temporary paths are UTF-8")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("stderr is UTF-8")
}

fn key(i: usize) -> Vec<u8> {
    format!("key:{i:04}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    // 700 bytes, so the 64 KiB log segments below fill and rotate.
    format!("value {i} ").into_bytes().into_iter().cycle().take(700).collect()
}

/// A database of two shards: `KEYS` keys written before a checkpoint and as many after
/// (so the log spans segments and resumes after the checkpoint), a key and value with
/// bytes that need escaping, and a blob log with sealed and open segments. Returns what
/// the key-value store holds.
fn make_db(dir: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut model = BTreeMap::new();
    let db = Db::open(dir, Options::default().shards(2).wal_segment_bytes(64 << 10)).expect("open");
    for i in 0..KEYS {
        db.put(key(i), value(i)).expect("put");
        model.insert(key(i), value(i));
    }
    db.checkpoint().expect("checkpoint");
    for i in KEYS..2 * KEYS {
        db.put(key(i), value(i)).expect("put");
        model.insert(key(i), value(i));
    }
    // A batch across both shards and a transaction: prepare and commit records in the log.
    let mut batch = ringdb::WriteBatch::new();
    for i in 0..8 {
        batch.put(format!("batch:{i}").as_bytes(), b"b").expect("batch put");
        model.insert(format!("batch:{i}").into_bytes(), b"b".to_vec());
    }
    db.write_batch(batch).expect("write batch");
    db.transact(|tx| {
        tx.put(b"tx:a", b"1")?;
        tx.put(b"tx:b", b"2")
    })
    .expect("transaction");
    model.insert(b"tx:a".to_vec(), b"1".to_vec());
    model.insert(b"tx:b".to_vec(), b"2".to_vec());
    db.put(b"bin\t\x00\xff", b"line\nquote\"").expect("put");
    model.insert(b"bin\t\x00\xff".to_vec(), b"line\nquote\"".to_vec());
    let blobs = db
        .blob_log("images", BlobOptions::default().max_segment_bytes(1 << 20).compression(Some(3)))
        .expect("blob log");
    // Even blobs compress (zstd frames), odd ones do not (stored as is) and fill segments.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..16u32 {
        let blob: Vec<u8> = (0..200_000u32)
            .map(|j| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if i % 2 == 0 { (j % 251) as u8 } else { state as u8 }
            })
            .collect();
        blobs.append(&blob).expect("append");
    }
    blobs.close().expect("close blob log");
    db.close().expect("close");
    model
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// The first log segment of shard 0 and its block size (where its first record starts).
fn first_segment(dir: &Path) -> (PathBuf, usize) {
    let wal = dir.join("shard-000/wal");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    let path = segments.into_iter().next().expect("shard 0 has a log segment");
    let bytes = std::fs::read(&path).unwrap();
    let block = u32::from_le_bytes(bytes[32..36].try_into().unwrap()) as usize;
    (path, block)
}

fn check_json(dir: &Path) -> (Output, Value) {
    let out = ringdb(&["check", path_arg(dir), "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).expect("check --json prints JSON");
    (out, json)
}

#[test]
fn stats_prints_the_database_figures() {
    let dir = tempfile::tempdir().unwrap();
    let model = make_db(dir.path());
    let out = ringdb(&["stats", path_arg(dir.path())]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(out.stderr.is_empty());
    let text = stdout(&out);
    assert!(
        text.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["keys", &model.len().to_string()]),
        "{text}"
    );

    let out = ringdb(&["stats", path_arg(dir.path()), "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let json: Value = serde_json::from_slice(&out.stdout).expect("stats --json prints JSON");
    assert_eq!(json["keys"], model.len());
    assert_eq!(json["shards"], 2);
    assert!(json["index_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn dump_lists_every_pair_in_key_order_escaped_or_as_hex() {
    let dir = tempfile::tempdir().unwrap();
    let model = make_db(dir.path());
    let out = ringdb(&["dump", path_arg(dir.path())]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let expected: String = model.iter().map(|(k, v)| format!("{}\t{}\n", k.escape_ascii(), v.escape_ascii())).collect();
    assert_eq!(stdout(&out), expected);
    assert!(stdout(&out).contains("\nbin\\t\\x00\\xff\tline\\nquote\\\"\n"));

    let out = ringdb(&["dump", path_arg(dir.path()), "--prefix", "key:000", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = stdout(&out)
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("each line is a JSON object");
            (unhex(v["key"].as_str().unwrap()), unhex(v["value"].as_str().unwrap()))
        })
        .collect();
    let expected: Vec<(Vec<u8>, Vec<u8>)> =
        model.iter().filter(|(k, _)| k.starts_with(b"key:000")).map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(pairs.len(), 10);
    assert_eq!(pairs, expected);
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn get_put_delete_round_trip_and_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let model = make_db(dir.path());
    let d = path_arg(dir.path());

    let out = ringdb(&["get", d, "key:0007"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), format!("{}\n", model[&key(7)].escape_ascii()));
    // An escaped key, as `dump` prints it, is found.
    let out = ringdb(&["get", d, "bin\\t\\x00\\xff", "--raw"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(out.stdout, b"line\nquote\"");

    let out = ringdb(&["put", d, "new\\x01", "fresh\\nvalue"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    let out = ringdb(&["delete", d, "key:0003"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());

    let out = ringdb(&["get", d, "key:0003"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("key \"key:0003\" not found"), "{}", stderr(&out));

    // The library sees both writes after the commands exited.
    let db = Db::open(dir.path(), Options::default()).unwrap();
    assert_eq!(db.get(b"new\x01").unwrap().as_deref(), Some(&b"fresh\nvalue"[..]));
    assert_eq!(db.get(b"key:0003").unwrap(), None);
    db.close().unwrap();
}

#[test]
fn check_passes_a_clean_directory_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    make_db(dir.path());
    let before = snapshot(dir.path());
    let (out, json) = check_json(dir.path());
    assert_eq!(out.status.code(), Some(0), "{json:#}");
    assert_eq!(json["damaged"], false);
    assert!(json["findings"].as_array().unwrap().iter().all(|f| f["severity"] == "note"), "{json:#}");
    let kinds: Vec<&str> = json["verified"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "manifest").count(), 1);
    assert_eq!(kinds.iter().filter(|k| **k == "checkpoint").count(), 2);
    assert!(kinds.iter().filter(|k| **k == "log_segment").count() >= 4, "{kinds:?}");
    assert!(kinds.iter().filter(|k| **k == "blob_segment").count() >= 2, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "blob_manifest").count(), 1, "the blob log's SEGMENTS: {kinds:?}");
    let records: u64 = json["verified"].as_array().unwrap().iter().map(|f| f["records"].as_u64().unwrap()).sum();
    assert!(records >= 16 + KEYS as u64, "{records}");
    let not_verified = json["not_verified"].as_array().unwrap();
    assert_eq!(not_verified.len(), 2);
    assert!(not_verified.iter().all(|f| f["path"].as_str().unwrap().ends_with("pages.dat")
        && f["why"].as_str().unwrap().contains("page verification is not in this version")));

    let out = ringdb(&["check", path_arg(dir.path())]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains("MANIFEST") && text.contains("pages.dat") && text.lines().last().unwrap().starts_with("clean")
    );
    assert_eq!(snapshot(dir.path()), before, "check changed a file");

    // A blob log's own folder is checked alone.
    let (out, json) = check_json(&dir.path().join("blobs/images"));
    assert_eq!(out.status.code(), Some(0), "{json:#}");
    let kinds: Vec<&str> = json["verified"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert!(kinds.iter().all(|k| ["blob_segment", "blob_manifest"].contains(k)), "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "blob_manifest").count(), 1, "{kinds:?}");
}

#[test]
fn check_reports_a_flipped_byte_in_a_log_record_as_damage() {
    let dir = tempfile::tempdir().unwrap();
    make_db(dir.path());
    let (segment, block) = first_segment(dir.path());
    let mut bytes = std::fs::read(&segment).unwrap();
    // Inside the first record's body: later records (later synced flushes) follow it.
    bytes[block + 40] ^= 0x10;
    std::fs::write(&segment, &bytes).unwrap();
    let before = snapshot(dir.path());

    let (out, json) = check_json(dir.path());
    assert_eq!(out.status.code(), Some(1), "{json:#}");
    assert_eq!(json["damaged"], true);
    let damage: Vec<&Value> =
        json["findings"].as_array().unwrap().iter().filter(|f| f["severity"] == "damage").collect();
    assert_eq!(damage.len(), 1, "{json:#}");
    assert_eq!(damage[0]["file"], segment.to_str().unwrap());
    assert_eq!(damage[0]["offset"], block);
    assert!(damage[0]["what"].as_str().unwrap().contains("checksum"), "{json:#}");

    let out = ringdb(&["check", path_arg(dir.path())]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains(&format!("damage: {} at offset {block}", segment.display())), "{text}");
    assert!(text.lines().last().unwrap().starts_with("DAMAGED"));
    assert_eq!(snapshot(dir.path()), before, "check changed a file");
}

#[test]
fn check_reports_a_torn_log_tail_as_torn_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options::default().shards(1)).unwrap();
    for i in 0..10 {
        db.put(key(i), value(i)).unwrap();
    }
    db.close().unwrap();
    let (segment, _) = first_segment(dir.path());
    let mut bytes = std::fs::read(&segment).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    // Garbage where the next flush would have gone: the remains of an interrupted write.
    let at = end.next_multiple_of(8);
    bytes[at..at + 100].fill(0xab);
    std::fs::write(&segment, &bytes).unwrap();

    let (out, json) = check_json(dir.path());
    assert_eq!(out.status.code(), Some(0), "{json:#}");
    let torn: Vec<&Value> = json["findings"].as_array().unwrap().iter().filter(|f| f["severity"] == "torn").collect();
    assert_eq!(torn.len(), 1, "{json:#}");
    assert_eq!(torn[0]["file"], segment.to_str().unwrap());
    assert_eq!(torn[0]["offset"], at);
    assert!(torn[0]["what"].as_str().unwrap().starts_with("torn tail"));
}

#[test]
fn usage_errors_exit_2_and_failures_exit_1_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["get"][..], &["frobnicate"], &["stats"], &["get", "/tmp", "bad\\q"], &["dump", "/tmp", "--bogus"]] {
        let out = ringdb(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty());
    }
    assert!(stderr(&ringdb(&["get", "/tmp", "bad\\q"])).contains("unknown escape `\\q`"));

    let missing = dir.path().join("no-such-db");
    let out = ringdb(&["stats", path_arg(&missing)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no MANIFEST"), "{}", stderr(&out));
    assert!(!missing.exists(), "a failed command created the directory");
    let out = ringdb(&["check", path_arg(dir.path())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("neither a ringdb database"), "{}", stderr(&out));

    let out = ringdb(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("Examples:"));
}
