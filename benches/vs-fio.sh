#!/usr/bin/env bash
# ringdb beside fio on the same filesystem, one run: each ringdb figure next to the matching
# fio figure and their ratio.
#
#   benches/vs-fio.sh [DIR]
#
#   random read QD32       fio randread  bs=4k iodepth=32 direct=1 io_uring  vs  loadgen read-random, 32 threads, --cache $CACHE,
#                          checkpointed after the preload so gets read the data file
#   random write QD32      fio randwrite bs=4k iodepth=32 direct=1 io_uring  vs  loadgen fill-random, 32 threads, durability sync
#   sequential write       fio write     bs=4k iodepth=32 direct=1 io_uring  vs  loadgen fill-seq, 32 threads, durability sync
#   write+fdatasync QD1    fio write     bs=4k iodepth=1 direct=1 fdatasync=1 psync  vs  loadgen fill-random, 1 thread, durability sync
#
# DIR: where the fio file and the databases go (a fresh ringdb-vs-fio.* directory inside it,
# removed at the end unless KEEP=1). Default /var/tmp; tmpfs is refused. Takes about 90 s.
# Environment: RUNTIME (seconds per fio job and per loadgen run, default 8), SIZE (fio file,
# default 1g), KEYS (loadgen key space, default 65536), VALUE_SIZE (default 4000: a record
# with its 16-byte key and header fits one 4 KiB block), CACHE (ringdb's page cache in the
# random-read run, default 16M, well below the 256 MiB of values), KEEP=1.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
parent="${1:-/var/tmp}"
runtime="${RUNTIME:-8}"
size="${SIZE:-1g}"
keys="${KEYS:-65536}"
value_size="${VALUE_SIZE:-4000}"
cache="${CACHE:-16M}"

if ! command -v fio >/dev/null; then
    echo "vs-fio.sh: fio is not installed; install it with: apt-get install fio" >&2
    exit 1
fi
for tool in python3 cargo; do
    command -v "$tool" >/dev/null || { echo "vs-fio.sh: $tool is not installed" >&2; exit 1; }
done

mkdir -p "$parent"
work="$(mktemp -d "$parent/ringdb-vs-fio.XXXXXX")"
cleanup() {
    if [[ "${KEEP:-0}" == 1 ]]; then echo "vs-fio.sh: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
fstype="$(findmnt -n -o FSTYPE --target "$work" 2>/dev/null || stat -f -c %T "$work")"
if [[ "$fstype" == tmpfs || "$fstype" == ramfs ]]; then
    echo "vs-fio.sh: $work is on $fstype; give a disk-backed DIR" >&2
    exit 1
fi

echo "== building loadgen (release)" >&2
(cd "$root" && cargo build --release --quiet -p loadgen)
loadgen="${CARGO_TARGET_DIR:-$root/target}/release/loadgen"
results="$work/results"
mkdir -p "$results"
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"

file="$work/fio.dat"
echo "== fio: laying out a $size file (not measured)" >&2
fio --name=layout --filename="$file" --rw=write --bs=1m --size="$size" --direct=1 --ioengine=psync \
    --output-format=json --output="$results/layout.json" >/dev/null

fio_job() {
    local out="$1"
    shift
    echo "== fio $out: $*" >&2
    fio --name="$out" --filename="$file" --size="$size" --runtime="$runtime" --time_based --bs=4k \
        --lat_percentiles=1 --output-format=json --output="$results/fio-$out.json" "$@" >/dev/null
}
fio_job randread --rw=randread --iodepth=32 --direct=1 --ioengine=io_uring
fio_job randwrite --rw=randwrite --iodepth=32 --direct=1 --ioengine=io_uring
fio_job seqwrite --rw=write --iodepth=32 --direct=1 --ioengine=io_uring
fio_job fdatasync --rw=write --iodepth=1 --direct=1 --fdatasync=1 --ioengine=psync
rm -f "$file"

run_loadgen() {
    local out="$1"
    shift
    echo "== loadgen $out: $*" >&2
    "$loadgen" --dir "$work" --duration "$runtime" --keys "$keys" --value-size "$value_size" \
        --json "$results/lg-$out.json" "$@" >"$results/lg-$out.txt" 2>/dev/null
}
# A checkpoint 10 ms after the preload moves the values from memory into pages and chunks
# in the data file, so the gets go through the page cache ($cache) and mostly miss.
run_loadgen randread --workload read-random --read-threads 32 --cache "$cache" --checkpoint-interval-ms 10
run_loadgen randwrite --workload fill-random --threads 32 --durability sync
run_loadgen seqwrite --workload fill-seq --threads 32 --durability sync
run_loadgen fdatasync --workload fill-random --threads 1 --durability sync

python3 - "$results" <<'PY'
import json, os, sys
r = sys.argv[1]
def load(n):
    with open(os.path.join(r, n)) as f:
        return json.load(f)
def fio(name, side):
    job = load(f"fio-{name}.json")["jobs"][0][side]
    lat = job["lat_ns"]
    # With --fdatasync=1 fio keeps no histogram of write + fdatasync; add the two p50s.
    p50 = lat.get("percentile", {}).get("50.000000", lat["mean"]) / 1000
    if name == "fdatasync":
        sync = load(f"fio-{name}.json")["jobs"][0].get("sync", {}).get("lat_ns", {})
        p50 += sync.get("percentile", {}).get("50.000000", sync.get("mean", 0)) / 1000
    return job["iops"], job["bw_bytes"] / 2**20, p50
def lg(name):
    d = load(f"lg-{name}.json")
    op = "get" if "get" in d["latency_us"] else "put"
    p = d["phases"][-1]
    return d["throughput_ops"], p["user_bytes"] / 2**20 / p["seconds"] if p["user_bytes"] else None, d["latency_us"][op]["p50"]
rows = [
    ("random read QD32", "randread", "read", "ops/s"),
    ("random write QD32", "randwrite", "write", "ops/s"),
    ("sequential write", "seqwrite", "write", "MiB/s"),
    ("write+fdatasync QD1", "fdatasync", "write", "ops/s"),
]
print(f"{'test':<21} {'fio':>14} {'ringdb':>14} {'ratio':>8}   {'fio p50 µs':>10} {'ringdb p50 µs':>13} {'ratio':>7}")
for title, name, side, unit in rows:
    f_iops, f_bw, f_p50 = fio(name, side)
    l_ops, l_bw, l_p50 = lg(name)
    if unit == "MiB/s":
        fv, lv = f_bw, l_bw or 0.0
    else:
        fv, lv = f_iops, l_ops
    print(f"{title:<21} {fv:>8.0f} {unit:<5} {lv:>8.0f} {unit:<5} {lv / fv if fv else 0:>7.2f}x   {f_p50:>10.1f} {l_p50:>13.1f} {l_p50 / f_p50 if f_p50 else 0:>6.2f}x")
e = load("lg-randread.json")["phases"][-1]["engine_stats"]
gets = load("lg-randread.json")["latency_us"]["get"]["count"]
looked = e["cache_hits"] + e["cache_misses"]
m = load("lg-randread.json")["machine"]
c = load("lg-randread.json")["config"]
print()
print(f"machine: Linux {m['kernel']}, {m['cpus']} CPUs ({m.get('cpu_model') or 'unknown CPU'}), {m['fs_type']} on {m['fs_device']}")
print(f"loadgen: {c['keys']} keys, {c['value_size']} B values (+16 B keys), {c['shards']} shards; fio: 4 KiB blocks")
print("notes:")
print(f"- random read: ringdb's {gets} gets made {looked} page cache lookups: {e['cache_hits']} hits, {e['cache_misses']} misses")
print(f"  (cache {c['cache_bytes']} B for {c['keys']} values; a miss reads the page or chunk from the data file; a key")
print("  looked up again after a checkpoint moved it counts twice). Values written since a shard's last checkpoint")
print("  are held in memory and need no lookup. fio reads the device (O_DIRECT) every time.")
print("- random write / sequential write: ringdb's puts are durable (--durability sync: RWF_DSYNC log writes,")
print("  group-committed); fio's O_DIRECT writes are not flushed, so a volatile device cache may hold them.")
print("- sequential write MiB/s counts key + value bytes for ringdb, block bytes for fio.")
print("- write+fdatasync QD1: fio's p50 is write p50 + fdatasync p50; ringdb's is one durable put's p50.")
print("- ratio: ringdb / fio (throughput: above 1 is ringdb ahead; latency: below 1 is ringdb ahead).")
PY
echo
echo "work dir $work ($fstype); RUNTIME=$runtime SIZE=$size; load average at start $load_start, at end $(cut -d' ' -f1-3 /proc/loadavg)"
