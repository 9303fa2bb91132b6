//! Proves a database written before page records were padded to 8 bytes still opens,
//! reads, and checkpoints: the fixture `tests/fixtures/pages_unaligned/` was written by
//! ringdb at commit d1b2465 (one shard, `page_records_max(200)`,
//! `page_free_space_factor(1)`, 200 keys `k000`..`k199` with 1-byte values, then a
//! checkpoint), so it holds one full page with records back to back and little free
//! space. Rewriting that page pads its 199 live records past the page's old capacity;
//! the checkpoint must give the page the room it needs rather than fail.

use std::path::Path;

use ringdb::{Db, Options};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn options() -> Options {
    Options::default().shards(1).page_records_max(200).page_free_space_factor(1).wal_segment_bytes(64 << 10)
}

fn key(i: u32) -> Vec<u8> {
    format!("k{i:03}").into_bytes()
}

#[test]
fn unaligned_pages_are_read_and_rewritten_aligned() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pages_unaligned");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture, dir.path());
    {
        let db = Db::open(dir.path(), options()).unwrap();
        for i in 0..200 {
            assert_eq!(db.get(&key(i)).unwrap().as_deref(), Some(&[i as u8][..]), "key {i} from the old page");
        }
        // One dead record: the full old page is rewritten with its 199 live records.
        db.put(&key(7), b"seven").unwrap();
        db.checkpoint().unwrap();
        for i in 0..200 {
            let want: &[u8] = if i == 7 { b"seven" } else { &[i as u8] };
            assert_eq!(db.get(&key(i)).unwrap().as_deref(), Some(want), "key {i} after the rewrite");
        }
        db.close().unwrap();
    }
    let db = Db::open(dir.path(), options()).unwrap();
    assert_eq!(db.scan(..).count(), 200);
    assert_eq!(db.get(&key(7)).unwrap().as_deref(), Some(&b"seven"[..]));
    assert_eq!(db.get(&key(199)).unwrap().as_deref(), Some(&[199u8][..]));
    db.close().unwrap();
}
