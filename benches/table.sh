#!/usr/bin/env bash
# Typed tables' figures beside fio's, on the same filesystem, in one run:
#   Table::with and Table::get per second on cached 64-byte records, one shard, 1 and 2 reader threads
#   full scan of 10M 64-byte records from a cold cache, MB/s   vs  fio sequential read 1 MiB QD8
# Usage: benches/table.sh [DIR] [SCAN_RECORDS]   (default: a fresh directory under /var/tmp, not
# tmpfs; 10000000 records). Needs about 3 GiB of disk and 4 GiB of memory at 10M records.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
command -v fio >/dev/null || { echo "fio is missing: apt-get install -y fio" >&2; exit 1; }
base="${1:-/var/tmp}"
scan_records="${2:-10000000}"
work="$(mktemp -d "$base/ringdb-table.XXXXXX")"
trap 'rm -rf "$work"' EXIT
(cd "$root" && cargo build --release --quiet --example table_bench)
bench="${CARGO_TARGET_DIR:-$root/target}/release/examples/table_bench"

echo "== fio sequential read (1 GiB file, O_DIRECT, 1 MiB blocks, QD8)" >&2
fio --name=lay --filename="$work/fio.dat" --rw=write --bs=1M --size=1G --direct=1 --output-format=json >/dev/null
sync; sleep 2
sr_bw=$(fio --name=seqread --rw=read --bs=1M --direct=1 --ioengine=io_uring --iodepth=8 --size=1G \
    --filename="$work/fio.dat" --output-format=json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][0]["read"]["bw_bytes"])')
rm -f "$work/fio.dat"

echo "== ringdb with/get on 1M cached 64-byte records, one shard, 1 thread" >&2
"$bench" point "$work/p1" 1000000 5 1 > "$work/p1.txt"; rm -rf "$work/p1"
echo "== ringdb with/get on 1M cached 64-byte records, one shard, 2 threads" >&2
"$bench" point "$work/p2" 1000000 5 2 > "$work/p2.txt"; rm -rf "$work/p2"
echo "== ringdb full scan of $scan_records 64-byte records, cold cache" >&2
"$bench" scan "$work/scan" "$scan_records" > "$work/scan.txt"

python3 - "$work" "$sr_bw" "$scan_records" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import sys
work, sr_bw, records, load = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def read(name):
    out = {}
    for line in open(f"{work}/{name}.txt"):
        parts = line.split()
        if len(parts) >= 2:
            out[parts[0]] = float(parts[1])
    return out
p1, p2, scan = read("p1"), read("p2"), read("scan")
print(f"load average at the end: {load}")
print(f"{'figure':<62} {'ringdb':>14} {'fio':>12} {'ratio':>7}")
print("reads per second of wall time (and per second of CPU time the reader threads got):")
for name, p in (("1 thread", p1), ("2 threads", p2)):
    print(f"{'Table::with/s, cached 64 B records, one shard, ' + name:<62} {p['with_per_s']:>14,.0f}  ({p['with_per_cpu_s']:,.0f} per CPU-s)")
    print(f"{'Table::get/s,  cached 64 B records, one shard, ' + name:<62} {p['get_per_s']:>14,.0f}  ({p['get_per_cpu_s']:,.0f} per CPU-s)")
    print(f"{'Db::get/s of 64 B values (same count, same shard), ' + name:<62} {p['kv_get_per_s']:>14,.0f}  ({p['kv_get_per_cpu_s']:,.0f} per CPU-s)")
    print(f"{'  reads copied for alignment / cache misses while reading':<62} {p['copied_reads']:>7,.0f} / {p['cache_misses_during_reads']:,.0f}")
fio_mb = sr_bw / 1e6
print(f"{'full scan of %s x 64 B records, cold cache, MB/s' % f'{records:,}':<62} {scan['scan_mb_s']:>14,.1f} {fio_mb:>12,.0f} {scan['scan_mb_s']/fio_mb:>7.3f}")
print(f"{'  the same scan, records/s':<62} {scan['scan_records_per_s']:>14,.0f}")
print(f"{'  records per CPU-second of the whole process (all threads)':<62} {scan['scan_records_per_cpu_s']:>14,.0f}  ({scan['scan_cpu_seconds']:.1f} CPU-s in {scan['scan_seconds']:.1f} s)")
print(f"{'  pages read by the scan':<62} {scan['scan_pages_read']:>14,.0f}")
print(f"{'load (set_many of 2000, Durability::None), records/s':<62} {scan['load_records_per_s']:>14,.0f}")
print(f"{'Db::open (key directory of every record), s':<62} {scan['open_seconds']:>14.2f}")
print(f"{'first Db::table (counts the records), s':<62} {scan['table_open_seconds']:>14.2f}")
print(f"{'data file / index memory estimate, MiB':<62} {scan['data_file_bytes']/2**20:>14,.0f} / {scan['index_bytes']/2**20:,.0f}")
PY
