#!/usr/bin/env bash
# The paged store's figures beside fio's, on the same filesystem, in one run:
#   uncached 4 KiB point reads (data ~6x the cache, 32 in flight)  vs  fio randread 4k QD32
#   checkpoint write-back MB/s                                     vs  fio sequential write 1 MiB
#   full ordered scan of 1M records of 1 KiB, MB/s                 vs  fio sequential read 1 MiB
#   open time after a crash with 1 GiB of data and a full log
# Usage: benches/pages.sh [DIR]   (default: a fresh directory under /var/tmp; not tmpfs)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
command -v fio >/dev/null || { echo "fio is missing: apt-get install fio" >&2; exit 1; }
base="${1:-/var/tmp}"
work="$(mktemp -d "$base/ringdb-pages.XXXXXX")"
trap 'rm -rf "$work"' EXIT
(cd "$root" && cargo build --release --quiet --example pages_bench)
bench="${CARGO_TARGET_DIR:-$root/target}/release/examples/pages_bench"
get() { awk -v k="$1" '$1 == k { print $2 }' "$2"; }
fio_json() { fio --output-format=json "$@" | python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print(j["read"]["iops"], j["read"]["bw_bytes"], j["write"]["iops"], j["write"]["bw_bytes"])'; }

echo "== fio (file of 1 GiB, O_DIRECT)" >&2
fio --name=lay --filename="$work/fio.dat" --rw=write --bs=1m --size=1g --direct=1 --output-format=json >/dev/null
# Let the device absorb the layout before measuring reads; the first, short run warms up.
sync; sleep 3
fio_json --name=warm --filename="$work/fio.dat" --rw=randread --bs=4k --iodepth=32 --direct=1 --ioengine=io_uring --size=1g --runtime=2 --time_based >/dev/null
read -r rr_iops _ _ _ < <(fio_json --name=rr --filename="$work/fio.dat" --rw=randread --bs=4k --iodepth=32 --direct=1 --ioengine=io_uring --size=1g --runtime=8 --time_based)
read -r _ sr_bw _ _ < <(fio_json --name=sr --filename="$work/fio.dat" --rw=read --bs=1m --iodepth=4 --direct=1 --ioengine=io_uring --size=1g)
read -r _ _ _ sw_bw < <(fio_json --name=sw --filename="$work/fio.dat" --rw=write --bs=1m --iodepth=4 --direct=1 --ioengine=io_uring --size=1g --end_fsync=1)
rm -f "$work/fio.dat"

echo "== ringdb uncached point reads (100k x 4 KiB, 64 MiB cache, 32 threads)" >&2
"$bench" reads "$work/reads" 100000 4096 $((64 << 20)) 32 8 > "$work/reads.txt"
echo "== ringdb uncached point reads, 2 threads x multi_get of 32" >&2
"$bench" reads "$work/readsb" 100000 4096 $((64 << 20)) 2 8 32 > "$work/readsb.txt"
echo "== ringdb full ordered scan (1M x 1 KiB)" >&2
"$bench" scan "$work/scan" 1000000 1024 > "$work/scan.txt"
rm -rf "$work/reads" "$work/readsb" "$work/scan"
echo "== ringdb crash with 1 GiB of data and 64 MiB of log per shard, then open" >&2
"$bench" crash "$work/crash" 1000000 1024 $((128 << 20)) > "$work/crash.txt" 2>/dev/null || true
"$bench" recover "$work/crash" > "$work/recover.txt"

python3 - "$work" "$rr_iops" "$sr_bw" "$sw_bw" <<'PY'
import sys
work, rr_iops, sr_bw, sw_bw = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
def load(name):
    out = {}
    for line in open(f"{work}/{name}.txt"):
        parts = line.split()
        if len(parts) >= 2:
            out[parts[0]] = float(parts[1])
    return out
reads, readsb, scan, crash, rec = (load(n) for n in ("reads", "readsb", "scan", "crash", "recover"))
print(f"{'figure':<58} {'ringdb':>14} {'fio':>14} {'ratio':>7}")
print(f"{'uncached 4 KiB gets/s, 32 threads (data %.1fx cache)' % reads['data_over_cache']:<58} {reads['reads_per_s']:>14,.0f} {rr_iops:>14,.0f} {reads['reads_per_s']/rr_iops:>7.2f}")
print(f"{'uncached 4 KiB gets/s, 2 threads x multi_get(32)':<58} {readsb['reads_per_s']:>14,.0f} {rr_iops:>14,.0f} {readsb['reads_per_s']/rr_iops:>7.2f}")
cp = reads['checkpoint_bytes'] / reads['checkpoint_seconds'] / 1e6
print(f"{'checkpoint write-back MB/s (100k x 4 KiB)':<58} {cp:>14,.0f} {sw_bw/1e6:>14,.0f} {cp/(sw_bw/1e6):>7.2f}")
print(f"{'full scan, 1M x 1 KiB, MB/s':<58} {scan['scan_mb_s']:>14,.0f} {sr_bw/1e6:>14,.0f} {scan['scan_mb_s']/(sr_bw/1e6):>7.2f}")
print(f"{'full scan, records/s':<58} {scan['scan_records_per_s']:>14,.0f}")
print(f"{'open after crash: seconds (records replayed)':<58} {rec['open_seconds']:>14.3f} ({rec['recovered_records']:,.0f} records, {rec['keys']:,.0f} keys)")
PY
