//! ringdb from a tokio multi-thread runtime: many tasks awaiting durable writes.
//! `cargo run --example tokio -- [DIR]`
//!
//! Every write returns an `Ack`, a future that needs no particular runtime: awaiting it
//! parks the task (not the thread) until the write is on stable storage. Reads complete
//! at once. Opening and the final close block, so they run on the blocking pool.

use std::time::Instant;

use ringdb::{Db, Options, WriteBatch};

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = match std::env::args().nth(1) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::env::temp_dir().join("ringdb-example-tokio"),
    };
    let options = Options::default().wal_segment_bytes(4 << 20);
    let open_dir = dir.clone();
    let db = tokio::task::spawn_blocking(move || Db::open(open_dir, options)).await??;
    println!("opened {} with {} shards, {} keys", dir.display(), db.shard_count(), db.stats().keys);

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..64u32 {
        let db = db.clone();
        tasks.spawn(async move {
            for i in 0..50u32 {
                let key = format!("task{task}/item{i}");
                db.put_async(key.as_bytes(), i.to_le_bytes()).await?;
                let value = db.get_async(key.as_bytes()).await?;
                assert_eq!(value.as_deref(), Some(&i.to_le_bytes()[..]));
            }
            // A batch: all of its ops that fall on one shard are one log record.
            let mut batch = WriteBatch::new();
            batch.put(format!("task{task}/done").as_bytes(), b"yes")?.delete(format!("task{task}/item0").as_bytes())?;
            db.write_batch_async(batch).await?;
            Ok::<(), ringdb::Error>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    db.flush_async().await?;
    let stats = db.stats();
    println!(
        "{} puts and {} batches from 64 tasks in {:?}: {} log flushes, {:.1} records per flush",
        stats.puts,
        stats.batches,
        started.elapsed(),
        stats.wal_batches,
        stats.mean_batch_records()
    );
    // Dropping other handles first lets close release the directory for the next opener.
    db.close_async().await?;
    Ok(())
}
