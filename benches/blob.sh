#!/usr/bin/env bash
# Blob log figures beside fio on the same filesystem, each as a ratio of the matching fio job.
#
#   benches/blob.sh [DIR]
#
#   append 1 KiB, Sync, 64 writers      vs  fio write bs=1m iodepth=32 direct=1 io_uring (device bandwidth)
#                                        and fio write bs=4k iodepth=1 direct=1 fdatasync=1 (one sync write at a time)
#   append 512 KiB, Sync, 16 writers    vs  fio write bs=1m iodepth=32 direct=1 io_uring
#   (both appends again with BlobOptions::zero_fill(true))
#   random read 4 KiB, 32 threads       vs  fio randread bs=4k iodepth=32 direct=1 io_uring
#     (library pread path and an mmap of the same segments, cold cache when permitted)
#
# DIR: where the fio file and the logs go (default /var/tmp; tmpfs is refused).
# Environment: RUNTIME (seconds per job, default 8), SIZE (fio file, default 2g),
# READ_GIB (blob data laid out for the read test, default 2).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
parent="${1:-/var/tmp}"
runtime="${RUNTIME:-8}"
size="${SIZE:-2g}"
read_gib="${READ_GIB:-2}"

command -v fio >/dev/null || { echo "blob.sh: fio is not installed (apt-get install fio)" >&2; exit 1; }
mkdir -p "$parent"
work="$(mktemp -d "$parent/ringdb-blob-bench.XXXXXX")"
trap 'rm -rf "$work"' EXIT
fstype="$(findmnt -n -o FSTYPE --target "$work" 2>/dev/null || stat -f -c %T "$work")"
if [[ "$fstype" == tmpfs || "$fstype" == ramfs ]]; then
    echo "blob.sh: $work is on $fstype; give a disk-backed DIR" >&2
    exit 1
fi

(cd "$root" && cargo build --release --quiet --example blob_bench)
bench="${CARGO_TARGET_DIR:-$root/target}/release/examples/blob_bench"

file="$work/fio.dat"
fio_json() {
    fio --filename="$file" --size="$size" --direct=1 --output-format=json "$@"
}
# The JSON field of one fio job: "bw" (KiB/s) or "iops" of its read or write side.
field() {
    python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0][sys.argv[1]]; print(j[sys.argv[2]])' "$@"
}

fio --name=layout --filename="$file" --rw=write --bs=1m --size="$size" --direct=1 --ioengine=psync >/dev/null
seq_kib=$(fio_json --name=seqwrite --rw=write --bs=1m --iodepth=32 --ioengine=io_uring \
    --runtime="$runtime" --time_based | field write bw)
sync_iops=$(fio_json --name=syncwrite --rw=write --bs=4k --iodepth=1 --ioengine=psync --fdatasync=1 \
    --runtime="$runtime" --time_based | field write iops)
rand_iops=$(fio_json --name=randread --rw=randread --bs=4k --iodepth=32 --ioengine=io_uring \
    --runtime="$runtime" --time_based | field read iops)
rm -f "$file"
seq_mb=$(python3 -c "print(f'{$seq_kib * 1024 / 1e6:.1f}')")
echo "fio seqwrite bs=1m qd32: ${seq_mb} MB/s; write+fdatasync bs=4k qd1: ${sync_iops%.*} writes/s; randread bs=4k qd32: ${rand_iops%.*} IOPS"

out="$("$bench" --dir "$work" --seconds "$runtime" --read-gib "$read_gib")"
out="$out
$("$bench" --dir "$work" --seconds "$runtime" --only append --zero-fill true)"
echo "$out"
echo "$out" > "$work/blob_bench.txt"
python3 - "$seq_mb" "$sync_iops" "$rand_iops" "$work/blob_bench.txt" <<'PY'
import sys
seq_mb, sync_iops, rand_iops = (float(x) for x in sys.argv[1:4])
for line in open(sys.argv[4]):
    kv = dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)
    if line.startswith("append"):
        mb = float(kv["mb_per_s"])
        extra = ""
        if kv["blob_bytes"] == "1024":
            extra = f", {float(kv['blobs_per_s']) / sync_iops:.2f}x fio write+fdatasync qd1 ({kv['blobs_per_s']} vs {sync_iops:.0f}/s)"
        print(f"append {kv['blob_bytes']} B x {kv['writers']} writers, zero_fill={kv['zero_fill']}: {mb:.1f} MB/s = {mb / seq_mb:.3f} of fio seqwrite{extra}")
    elif line.startswith("randread"):
        iops = float(kv["iops"])
        print(f"randread 4 KiB {kv['mode']} x {kv['readers']}: {iops:.0f} IOPS = {iops / rand_iops:.2f} of fio randread qd32")
PY
