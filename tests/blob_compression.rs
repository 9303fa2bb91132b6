//! Proves compression is invisible to readers: the same blobs appended with and without
//! zstd read back identically, whole and by range (a range decompresses only its
//! frames), a log written compressed reads with compression off, and compressible data
//! takes less disk. Prints the measured ratio and cost.

use std::time::Instant;

use ringdb::{BlobLog, BlobOptions};

mod common;
use common::Rng;

fn blobs() -> Vec<Vec<u8>> {
    let mut rng = Rng::new(5);
    let pattern = b"the quick brown fox jumps over the lazy dog; ringdb stores blobs. ";
    let text: Vec<u8> = (0..3_000_000).map(|i| pattern[i % pattern.len()]).collect();
    let mut out = vec![Vec::new(), b"x".to_vec()];
    for len in [4095, 4096, 4097, 65_536, 65_537, 1 << 20, 3_000_000] {
        out.push(text[..len].to_vec());
        out.push(rng.bytes(len.min(1 << 20)));
        // Half text, half noise: some frames shrink, some do not.
        let mut mixed = text[..len / 2].to_vec();
        mixed.extend(rng.bytes(len - len / 2));
        out.push(mixed);
    }
    out
}

fn disk_bytes(log: &BlobLog) -> u64 {
    log.segments().unwrap().iter().map(|s| s.live_bytes()).sum()
}

#[test]
fn compression_on_and_off_give_the_same_bytes() {
    let blobs = blobs();
    let (plain_dir, zstd_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let options = BlobOptions::default().frame_bytes(16 << 10);
    let plain = BlobLog::open(plain_dir.path(), options.clone()).unwrap();
    let zstd = BlobLog::open(zstd_dir.path(), options.clone().compression(Some(3))).unwrap();
    let mut locs = Vec::new();
    let (mut plain_us, mut zstd_us) = (0u128, 0u128);
    for b in &blobs {
        let t = Instant::now();
        let p = plain.append(b).unwrap();
        plain_us += t.elapsed().as_micros();
        let t = Instant::now();
        let z = zstd.append(b).unwrap();
        zstd_us += t.elapsed().as_micros();
        locs.push((p, z));
    }
    let check = |plain: &BlobLog, zstd: &BlobLog| {
        for (b, &(p, z)) in blobs.iter().zip(&locs) {
            assert_eq!(p.len, z.len);
            assert!(plain.read(p).unwrap()[..] == b[..] && zstd.read(z).unwrap()[..] == b[..], "blob of {}", b.len());
            let len = b.len() as u64;
            for (x, y) in [(0, len), (1, len / 2), (len / 3, len.saturating_sub(1)), (16_383, 16_385), (40_000, 70_000)]
            {
                if x <= y && y <= len {
                    assert!(zstd.read_range(z, x..y).unwrap()[..] == plain.read_range(p, x..y).unwrap()[..]);
                    assert!(zstd.read_range(z, x..y).unwrap()[..] == b[x as usize..y as usize]);
                }
            }
        }
    };
    check(&plain, &zstd);
    let (p_bytes, z_bytes) = (disk_bytes(&plain), disk_bytes(&zstd));
    let t = Instant::now();
    for &(_, z) in &locs {
        zstd.read(z).unwrap();
    }
    let zstd_read_us = t.elapsed().as_micros();
    let t = Instant::now();
    for &(p, _) in &locs {
        plain.read(p).unwrap();
    }
    let plain_read_us = t.elapsed().as_micros();
    println!(
        "blob_compression: {p_bytes} bytes plain, {z_bytes} with zstd level 3 (ratio {:.2}); \
         append {plain_us} us plain vs {zstd_us} us zstd; read {plain_read_us} us plain vs {zstd_read_us} us zstd",
        p_bytes as f64 / z_bytes as f64
    );
    assert!(z_bytes < p_bytes * 3 / 4, "compressible blobs take less disk");
    plain.close().unwrap();
    zstd.close().unwrap();
    // Reads do not depend on the option: reopen both the other way round.
    let plain = BlobLog::open(plain_dir.path(), options.clone().compression(Some(3))).unwrap();
    let zstd = BlobLog::open(zstd_dir.path(), options).unwrap();
    check(&plain, &zstd);
    plain.close().unwrap();
    zstd.close().unwrap();
}
