//! Proves ringdb's async API works on a tokio multi-thread runtime (many concurrent
//! tasks awaiting puts, gets, batches, flushes and close) and inside a `tokio_uring`
//! runtime, whose own io_uring coexists with the shards' rings.

use std::collections::HashMap;

use ringdb::{Db, Durability, Error, Options, WriteBatch};

/// Options for these tests: small segments, so opening (which zero-fills a segment and a
/// spare per shard) stays cheap.
fn opts() -> Options {
    Options::default().wal_segment_bytes(1 << 20)
}

fn key(task: usize, i: usize) -> Vec<u8> {
    format!("task{task:03}/key{i:03}").into_bytes()
}

fn value(task: usize, i: usize) -> Vec<u8> {
    format!("value of task {task} step {i}").into_bytes()
}

const TASKS: usize = 64;
const STEPS: usize = 30;

/// What one task leaves behind: its keys' final values (None: deleted).
async fn task_body(db: Db, task: usize) -> HashMap<Vec<u8>, Option<Vec<u8>>> {
    let mut own = HashMap::new();
    for i in 0..STEPS {
        let k = key(task, i % 10);
        match i % 5 {
            0 | 1 => {
                let v = value(task, i);
                db.put_async(&k, &v).await.unwrap();
                let got = db.get_async(&k).await.unwrap().map(Vec::from);
                assert_eq!(got.as_ref(), Some(&v), "read your own write");
                own.insert(k, Some(v));
            }
            2 => {
                db.delete_async(&k).await.unwrap();
                assert_eq!(db.get_async(&k).await.unwrap(), None);
                own.insert(k, None);
            }
            3 => {
                let mut batch = WriteBatch::new();
                let k2 = key(task, (i + 3) % 10);
                let v = value(task, i);
                batch.put(&k, b"replaced below").unwrap().put(&k2, &v).unwrap().put(&k, &v).unwrap();
                db.write_batch_async(batch).await.unwrap();
                own.insert(k, Some(v.clone()));
                own.insert(k2, Some(v));
            }
            _ => {
                // Several writes in flight from one task, awaited together.
                let v = value(task, i);
                let k2 = key(task, (i + 1) % 10);
                let first = db.put_async(&k, &v);
                let second = db.put_async(&k2, &v);
                let (a, b) = (first.await, second.await);
                a.unwrap();
                b.unwrap();
                own.insert(k, Some(v.clone()));
                own.insert(k2, Some(v));
                let keys: Vec<Vec<u8>> = own.keys().cloned().collect();
                let got = db.multi_get_async(&keys).await.unwrap();
                for (k, v) in keys.iter().zip(got) {
                    assert_eq!(v.map(Vec::from).as_ref(), own[k].as_ref());
                }
            }
        }
        if i % 7 == 0 {
            tokio::task::yield_now().await;
        }
    }
    own
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_multi_thread_many_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let options = opts().shards(3).wal_segment_bytes(256 << 10);
    // Opening replays the log: a blocking call, so it goes to the blocking pool.
    let db = tokio::task::spawn_blocking(move || Db::open(path, options)).await.unwrap().unwrap();

    let mut set = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        set.spawn(task_body(db.clone(), task));
    }
    let mut expected = HashMap::new();
    while let Some(res) = set.join_next().await {
        expected.extend(res.expect("task panicked"));
    }
    assert_eq!(expected.len(), TASKS * 10);
    db.flush_async().await.unwrap();
    let stats = db.stats();
    assert_eq!(stats.keys, expected.values().filter(|v| v.is_some()).count() as u64);
    assert_eq!(stats.puts, (TASKS * (STEPS / 5) * 4) as u64);
    assert_eq!(stats.deletes, (TASKS * STEPS / 5) as u64);

    // Close (on the blocking pool), then other handles see Closed. (`close_async` and a
    // reopen right after it are tested on their own in `close_async_releases_the_directory`.)
    let other = db.clone();
    tokio::task::spawn_blocking(move || db.close()).await.unwrap().unwrap();
    assert!(matches!(other.put_async(b"k", b"v").await, Err(Error::Closed)));
    assert!(matches!(other.get_async(b"k").await, Err(Error::Closed)));
    assert!(matches!(other.flush_async().await, Err(Error::Closed)));
    drop(other);

    let path = dir.path().to_path_buf();
    let db = tokio::task::spawn_blocking(move || Db::open(path, opts())).await.unwrap().unwrap();
    for (k, v) in &expected {
        assert_eq!(db.get_async(k).await.unwrap().map(Vec::from).as_ref(), v.as_ref(), "after reopen: {k:?}");
    }
    tokio::task::spawn_blocking(move || db.close()).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_periodic_flush_async() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let durability =
        Durability::Periodic { bytes: 1 << 30, items: 1 << 30, interval: std::time::Duration::from_secs(3600) };
    let options = opts().shards(2).durability(durability);
    let db = tokio::task::spawn_blocking(move || Db::open(path, options)).await.unwrap().unwrap();
    let mut set = tokio::task::JoinSet::new();
    for task in 0..16 {
        let db = db.clone();
        set.spawn(async move {
            for i in 0..20 {
                db.put_async(key(task, i), value(task, i)).await.unwrap();
            }
            // flush_async resolves once everything acknowledged before it is durable.
            db.flush_async().await.unwrap();
        });
    }
    while let Some(res) = set.join_next().await {
        res.unwrap();
    }
    let stats = db.stats();
    assert!(stats.fsyncs >= 1, "flush made the log durable");
    tokio::task::spawn_blocking(move || db.close()).await.unwrap().unwrap();
    let path = dir.path().to_path_buf();
    let db = tokio::task::spawn_blocking(move || Db::open(path, opts())).await.unwrap().unwrap();
    for task in 0..16 {
        for i in 0..20 {
            assert_eq!(db.get(key(task, i)).unwrap().map(Vec::from), Some(value(task, i)));
        }
    }
    db.close_async().await.unwrap();
}

#[test]
fn inside_tokio_uring_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    tokio_uring::start(async move {
        let db = Db::open(&path, opts().shards(2)).unwrap();

        // Local tasks on the single-threaded tokio-uring runtime.
        let mut handles = Vec::new();
        for task in 0..16 {
            handles.push(tokio_uring::spawn(task_body(db.clone(), task)));
        }
        let mut expected = HashMap::new();
        for h in handles {
            expected.extend(h.await.expect("task"));
        }

        // tokio-uring's own ring works next to ringdb's: write a file through it and
        // store its contents in the database.
        let file_path = path.join("side-file.bin");
        let file = tokio_uring::fs::File::create(&file_path).await.unwrap();
        let contents = b"written through tokio-uring".to_vec();
        let (res, _buf) = file.write_all_at(contents.clone(), 0).await;
        res.unwrap();
        file.sync_all().await.unwrap();
        file.close().await.unwrap();
        let file = tokio_uring::fs::File::open(&file_path).await.unwrap();
        let (res, buf) = file.read_at(vec![0u8; 64], 0).await;
        let n = res.unwrap();
        file.close().await.unwrap();
        db.put_async(b"from-file", &buf[..n]).await.unwrap();
        assert_eq!(db.get_async(b"from-file").await.unwrap().map(Vec::from), Some(contents.clone()));

        db.flush_async().await.unwrap();
        // A blocking close (brief: it waits for the shards to stop); `close_async` followed
        // by a reopen is tested on its own below.
        db.close().unwrap();

        let db = Db::open(&path, opts()).unwrap();
        for (k, v) in &expected {
            assert_eq!(db.get_async(k).await.unwrap().map(Vec::from).as_ref(), v.as_ref());
        }
        assert_eq!(db.get(b"from-file").unwrap().map(Vec::from), Some(contents));
        db.close_async().await.unwrap();
    });
}

/// `close_async` resolves once the database is closed: with no other handle left, the
/// directory can be opened again at once, as after the blocking `close`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_async_releases_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..10u32 {
        let db = Db::open(dir.path(), opts().shards(2)).unwrap();
        db.put_async(b"round", round.to_le_bytes()).await.unwrap();
        db.close_async().await.unwrap();
        let reopened = Db::open(dir.path(), opts());
        assert!(reopened.is_ok(), "round {round}: reopen right after close_async().await: {:?}", reopened.err());
        let db = reopened.unwrap();
        assert_eq!(db.get(b"round").unwrap().map(Vec::from), Some(round.to_le_bytes().to_vec()));
        db.close().unwrap();
    }
}

#[test]
fn close_async_releases_the_directory_on_tokio_uring() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    tokio_uring::start(async move {
        for round in 0..10u32 {
            let db = Db::open(&path, opts().shards(2)).unwrap();
            db.put_async(b"round", round.to_le_bytes()).await.unwrap();
            db.close_async().await.unwrap();
            let reopened = Db::open(&path, opts());
            assert!(reopened.is_ok(), "round {round}: reopen right after close_async().await: {:?}", reopened.err());
            reopened.unwrap().close().unwrap();
        }
    });
}
