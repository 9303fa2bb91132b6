//! A quick single-writer check: N durable puts from one thread, median latency.
//! `cargo run --release --example smoke -- DIR [dsync|fdatasync]`
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or("/var/tmp/ringdb-smoke".into());
    let sync = match args.next().as_deref() {
        Some("fdatasync") => ringdb::WalSync::Fdatasync,
        _ => ringdb::WalSync::Dsync,
    };
    let spin: u64 = std::env::var("SPIN").ok().and_then(|s| s.parse().ok()).unwrap_or(50);
    let cspin: u64 = std::env::var("CSPIN").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    let db = ringdb::Db::open(&dir, ringdb::Options::default().wal_sync(sync).spin_us(spin).client_spin_us(cspin))?;
    let mut lat = Vec::new();
    for i in 0..5000u32 {
        let t = std::time::Instant::now();
        db.put(i.to_le_bytes(), [7u8; 100])?;
        lat.push(t.elapsed().as_micros() as u64);
    }
    lat.sort();
    println!("{sync:?}: p50 {} us, p99 {} us", lat[lat.len() / 2], lat[lat.len() * 99 / 100]);
    db.close()?;
    Ok(())
}
