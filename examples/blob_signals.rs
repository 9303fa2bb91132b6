//! A blob log that shuts down cleanly on SIGINT or SIGTERM: the signal only sets a flag;
//! the main loop sees it, makes every appended blob durable (`sync`), then `close`s.
//!
//! ```text
//! cargo run --release --example blob_signals -- [DIR] [MAX_BLOBS]
//! ```
//! Appends one small blob per millisecond with `Periodic` durability (so some are
//! acknowledged before they are durable) until a signal arrives or `MAX_BLOBS` were
//! appended, then reopens the log to show every blob is there.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ringdb::{BlobLog, BlobOptions, Durability};
use signal_hook::consts::{SIGINT, SIGTERM};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let tmp = tempfile::tempdir()?;
    let dir = args.next().map_or_else(|| tmp.path().to_path_buf(), Into::into);
    let max_blobs: u64 = args.next().map_or(Ok(u64::MAX), |s| s.parse())?;

    let stop = Arc::new(AtomicBool::new(false));
    // The handler only stores to the flag: nothing else is safe inside a signal handler.
    signal_hook::flag::register(SIGINT, Arc::clone(&stop))?;
    signal_hook::flag::register(SIGTERM, Arc::clone(&stop))?;

    let durability = Durability::Periodic { bytes: 1 << 20, items: 1000, interval: Duration::from_millis(200) };
    let log = BlobLog::open(&dir, BlobOptions::default().durability(durability))?;
    println!("appending to {} (pid {}); send SIGINT or SIGTERM to stop", dir.display(), std::process::id());
    let mut last = None;
    let mut appended = 0u64;
    while !stop.load(Ordering::Relaxed) && appended < max_blobs {
        last = Some(log.append(format!("event {appended}").as_bytes())?);
        appended += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    // Flush, then close: every acknowledged blob is on stable storage before exit.
    log.sync()?;
    log.close()?;
    println!("stopped after {appended} blobs: synced and closed");

    let log = BlobLog::open(&dir, BlobOptions::default())?;
    if let Some(loc) = last {
        let blob = log.read(loc)?;
        println!("last blob {loc}: {:?}", String::from_utf8_lossy(&blob));
    }
    log.close()?;
    Ok(())
}
