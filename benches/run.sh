#!/usr/bin/env bash
# ringdb's headline figures, measured in one run against fio on the same filesystem.
#
#   benches/run.sh [DIR]
#
# DIR: where the fio files and the databases go (a fresh ringdb-bench.* directory is made
# inside it and removed at the end; KEEP=1 keeps it). Default /var/tmp, which must not be
# tmpfs: O_DIRECT and device flushes are what is measured. Takes about 2 minutes.
#
# Environment: DURATION (seconds per loadgen run, default 10), FIO_RUNTIME (seconds of the
# fio single-writer runs, default 10), FIO_QD1_RUNTIME (seconds of each fio QD1 latency
# variant, default 5), KEEP=1 (keep the work directory and its JSON files).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
parent="${1:-/var/tmp}"
duration="${DURATION:-10}"
fio_runtime="${FIO_RUNTIME:-10}"
qd1_runtime="${FIO_QD1_RUNTIME:-5}"

for tool in fio python3 cargo; do
    if ! command -v "$tool" >/dev/null; then
        hint=""
        [[ "$tool" == fio ]] && hint=" (apt-get install -y fio)"
        echo "run.sh: $tool is not installed$hint" >&2
        exit 1
    fi
done

mkdir -p "$parent"
work="$(mktemp -d "$parent/ringdb-bench.XXXXXX")"
cleanup() {
    if [[ "${KEEP:-0}" == 1 ]]; then
        echo "run.sh: kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

fstype="$(findmnt -n -o FSTYPE --target "$work" 2>/dev/null || stat -f -c %T "$work")"
if [[ "$fstype" == tmpfs || "$fstype" == ramfs ]]; then
    echo "run.sh: $work is on $fstype; durable I/O is not measurable there, give a disk-backed DIR" >&2
    exit 1
fi

echo "== building loadgen (release)" >&2
(cd "$root" && cargo build --release --quiet -p loadgen)
loadgen="${CARGO_TARGET_DIR:-$root/target}/release/loadgen"

results="$work/results"
mkdir -p "$results"
started=$SECONDS
# Other work on the machine skews every figure below: the load averages are printed with them.
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"

# fio: every job writes 4 KiB blocks sequentially at queue depth 1. `lat_percentiles=1`
# only adds percentiles of the total latency (submission to completion) to the JSON.
fio_job() {
    local out="$1" file="$2" runtime="$3"
    shift 3
    fio --name=w --filename="$file" --rw=write --bs=4k --size=256m --runtime="$runtime" --time_based \
        --lat_percentiles=1 --output-format=json --output="$results/$out.json" "$@" >/dev/null
}

echo "== fio single writer, fresh file (fio creates and allocates it): --rw=write --bs=4k --direct=1 --fdatasync=1" >&2
fio_job fio-single-fresh "$work/fio-fresh.dat" "$fio_runtime" --direct=1 --fdatasync=1 --ioengine=psync
rm -f "$work/fio-fresh.dat"

# ringdb's log overwrites segments it zero-filled in advance; give fio the same footing
# by writing its whole file once before the measured runs.
echo "== fio: writing a 256 MiB file once (layout, not measured)" >&2
fio --name=layout --filename="$work/fio.dat" --rw=write --bs=1m --size=256m --direct=1 --ioengine=psync \
    --output-format=json --output="$results/layout.json" >/dev/null

echo "== fio single writer, written file: --rw=write --bs=4k --direct=1 --fdatasync=1" >&2
fio_job fio-single "$work/fio.dat" "$fio_runtime" --direct=1 --fdatasync=1 --ioengine=psync

echo "== fio QD1 durable 4 KiB writes, ${qd1_runtime} s each" >&2
fio_job fio-qd1-buffered-fdatasync "$work/fio.dat" "$qd1_runtime" --direct=0 --fdatasync=1 --ioengine=psync
fio_job fio-qd1-direct-fdatasync "$work/fio.dat" "$qd1_runtime" --direct=1 --fdatasync=1 --ioengine=psync
fio_job fio-qd1-uring-direct-dsync "$work/fio.dat" "$qd1_runtime" --direct=1 --sync=dsync --ioengine=io_uring
fio_job fio-qd1-psync-direct-dsync "$work/fio.dat" "$qd1_runtime" --direct=1 --sync=dsync --ioengine=psync
rm -f "$work/fio.dat"

# loadgen: durable (sync) random puts of 100-byte values, then cached random gets.
run_loadgen() {
    local out="$1"
    shift
    echo "== loadgen $*" >&2
    "$loadgen" --dir "$work" --duration "$duration" --value-size 100 --json "$results/$out.json" "$@" \
        >"$results/$out.txt" 2>/dev/null
}
run_loadgen lg-put-16 --workload fill-random --threads 16
run_loadgen lg-put-64 --workload fill-random --threads 64
run_loadgen lg-put-1 --workload fill-random --threads 1
run_loadgen lg-get-2 --workload read-random --read-threads 2 --preload

echo "== done in $((SECONDS - started)) s" >&2
python3 "$here/summarize.py" "$results"
echo
echo "work dir $work ($fstype); load average at start $load_start, at end $(cut -d' ' -f1-3 /proc/loadavg)"
