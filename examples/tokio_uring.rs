//! ringdb inside a `tokio_uring` runtime: the runtime's own io_uring and the shards' rings
//! run side by side. `cargo run --example tokio_uring -- [DIR]`
//!
//! `tokio_uring::start` runs a single-threaded runtime; ringdb's writes are awaited like
//! any other future there, while the shards do their I/O on their own threads and rings.

use ringdb::{Db, Options};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = match std::env::args().nth(1) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::env::temp_dir().join("ringdb-example-tokio-uring"),
    };
    tokio_uring::start(async move {
        let db = Db::open(&dir, Options::default().wal_segment_bytes(4 << 20))?;
        println!("opened {} with {} shards", dir.display(), db.shard_count());

        // Local tasks on the runtime's one thread, each awaiting durable writes.
        let mut handles = Vec::new();
        for task in 0..16u32 {
            let db = db.clone();
            handles.push(tokio_uring::spawn(async move {
                for i in 0..100u32 {
                    db.put_async(format!("task{task}/{i}").as_bytes(), i.to_le_bytes()).await?;
                }
                Ok::<(), ringdb::Error>(())
            }));
        }
        for handle in handles {
            handle.await??;
        }

        // File I/O through tokio-uring's ring, its contents stored in ringdb.
        let path = dir.join("note.txt");
        let file =
            tokio_uring::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).await?;
        let (written, _) = file.write_all_at(b"hello from tokio-uring".to_vec(), 0).await;
        written?;
        file.sync_all().await?;
        let (read, buf) = file.read_at(vec![0u8; 64], 0).await;
        let n = read?;
        file.close().await?;
        db.put_async(b"note", &buf[..n]).await?;
        let note = db.get_async(b"note").await?.expect("just written");
        println!("note: {}", String::from_utf8_lossy(&note));
        println!("{} keys, {} puts", db.stats().keys, db.stats().puts);

        db.close_async().await?;
        Ok(())
    })
}
