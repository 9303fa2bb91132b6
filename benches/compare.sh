#!/usr/bin/env bash
# ringdb beside its peer engines (RocksDB, fjall, redb, sled, LMDB), one run, same flags for all:
# YCSB A, B, C, F and a durable fill, every engine the build includes. Prints a table
# (throughput, p50, p99, p99.9 per operation) and writes an SVG plot.
#
#   benches/compare.sh [DIR]
#
# DIR: where the databases go (a fresh ringdb-compare.* directory inside it, removed at the
# end unless KEEP=1). Default /var/tmp; must not be tmpfs.
#
# Environment (defaults in brackets):
#   KEYS [100000]  DURATION [5] seconds per run  THREADS [16]  VALUE_SIZE [100]
#   DURABILITY [sync]  CACHE [unset: engine defaults]  WORKLOADS ["a b c f fill-random"]
#   FEATURES [peers (fjall, redb, sled, lmdb), plus rocksdb-system when librocksdb is installed]
#   ROCKSDB_LIB_DIR [/usr/lib/x86_64-linux-gnu when it has librocksdb.so]
#   ENGINES [every engine the build includes]  PLOT [compare.svg in the current directory]
#   KEEP=1 keeps the work directory with every run's JSON and text report.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
parent="${1:-/var/tmp}"
keys="${KEYS:-100000}"
duration="${DURATION:-5}"
threads="${THREADS:-16}"
value_size="${VALUE_SIZE:-100}"
durability="${DURABILITY:-sync}"
workloads="${WORKLOADS:-a b c f fill-random}"
plot="${PLOT:-$PWD/compare.svg}"

for tool in python3 cargo; do
    command -v "$tool" >/dev/null || { echo "compare.sh: $tool is not installed" >&2; exit 1; }
done

syslib=/usr/lib/x86_64-linux-gnu
if [[ -z "${FEATURES+x}" ]]; then
    FEATURES="peers"
    if [[ -e "${ROCKSDB_LIB_DIR:-$syslib}/librocksdb.so" ]]; then
        FEATURES="$FEATURES,rocksdb-system"
        export ROCKSDB_LIB_DIR="${ROCKSDB_LIB_DIR:-$syslib}"
    else
        echo "compare.sh: no librocksdb.so: rocksdb left out (apt-get install -y librocksdb-dev clang libclang-dev)" >&2
    fi
fi
if [[ "$FEATURES" == *rocksdb-system* && -z "${ROCKSDB_LIB_DIR:-}" ]]; then
    export ROCKSDB_LIB_DIR="$syslib"
fi

echo "== building loadgen (release, features: ${FEATURES:-none})" >&2
build_started=$SECONDS
(cd "$root" && cargo build --release --quiet -p loadgen ${FEATURES:+--features "$FEATURES"})
echo "== built in $((SECONDS - build_started)) s" >&2
loadgen="${CARGO_TARGET_DIR:-$root/target}/release/loadgen"
engines="${ENGINES:-$("$loadgen" --list-engines | tr '\n' ' ')}"

mkdir -p "$parent"
work="$(mktemp -d "$parent/ringdb-compare.XXXXXX")"
cleanup() {
    if [[ "${KEEP:-0}" == 1 ]]; then echo "compare.sh: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
fstype="$(findmnt -n -o FSTYPE --target "$work" 2>/dev/null || stat -f -c %T "$work")"
if [[ "$fstype" == tmpfs || "$fstype" == ramfs ]]; then
    echo "compare.sh: $work is on $fstype; durable writes measure nothing there, give a disk-backed DIR" >&2
    exit 1
fi

results="$work/results"
mkdir -p "$results"
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
started=$SECONDS
flags=(--keys "$keys" --duration "$duration" --threads "$threads" --value-size "$value_size"
       --durability "$durability")
[[ -n "${CACHE:-}" ]] && flags+=(--cache "$CACHE")
for w in $workloads; do
    for e in $engines; do
        echo "== $e: loadgen --workload $w ${flags[*]}" >&2
        if ! "$loadgen" --engine "$e" --workload "$w" --dir "$work" "${flags[@]}" \
            --json "$results/$e-$w.json" >"$results/$e-$w.txt" 2>"$results/$e-$w.err"; then
            echo "compare.sh: $e $w failed: $(tail -1 "$results/$e-$w.err")" >&2
        fi
    done
done
echo "== done in $((SECONDS - started)) s" >&2

python3 "$here/compare.py" "$results" "$plot"
echo
echo "command: benches/compare.sh (loadgen ${flags[*]}; workloads: $workloads; engines: $engines)"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); work dir $work ($fstype); load average at start $load_start, at end $(cut -d' ' -f1-3 /proc/loadavg)"
echo "plot: $plot"
