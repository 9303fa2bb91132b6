fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap_or("/tmp/ringdb-smoke".into());
    let db = ringdb::Db::open(&dir, ringdb::Options::default().wal_segment_bytes(1 << 20))?;
    println!("keys after open: {}", db.stats().keys);
    let t = std::time::Instant::now();
    for i in 0..2000u32 {
        db.put(&i.to_le_bytes(), format!("value-{i}").as_bytes())?;
    }
    println!("2000 sync puts in {:?}", t.elapsed());
    assert_eq!(db.get(&7u32.to_le_bytes())?.as_deref(), Some(&b"value-7"[..]));
    let s = db.stats();
    println!("{} puts, {} wal batches, {} fsyncs, keys {}", s.puts, s.wal_batches, s.fsyncs, s.keys);
    db.close()?;
    Ok(())
}
