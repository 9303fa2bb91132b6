#!/usr/bin/env python3
"""Prints the summary table of benches/run.sh from the JSON files it left in RESULTS_DIR.

usage: summarize.py RESULTS_DIR

fio files: fio-*.json (fio --output-format=json --lat_percentiles=1).
loadgen files: lg-*.json (loadgen --json, schema in loadgen/README.md).
"""

import json
import os
import sys

PUT_RATIO_TARGET = 20.0  # ringdb puts/s at 64 threads over fio single-writer IOPS: at least this
P50_RATIO_TARGET = 1.10  # ringdb 1-thread put p50 over the best fio QD1 p50: at most this

QD1_VARIANTS = [
    ("fio-qd1-buffered-fdatasync", "psync, --direct=0 --fdatasync=1"),
    ("fio-qd1-direct-fdatasync", "psync, --direct=1 --fdatasync=1"),
    ("fio-qd1-uring-direct-dsync", "io_uring, --direct=1 --sync=dsync"),
    ("fio-qd1-psync-direct-dsync", "psync, --direct=1 --sync=dsync"),
]


def load(results, name):
    with open(os.path.join(results, name + ".json")) as f:
        return json.load(f)


def fio_job(results, name):
    return load(results, name)["jobs"][0]


def pct(lat_ns, p="50.000000"):
    """A percentile of a fio latency block, in microseconds (0 if absent)."""
    return lat_ns.get("percentile", {}).get(p, 0) / 1000.0


def fio_qd1(job):
    """(p50 µs, mean µs per durable write, IOPS) of a QD1 fio job.

    With --fdatasync=1 fio times the write and the fdatasync separately; the durable
    latency of one block is their sum, so the p50 reported is write p50 + fdatasync p50
    (fio keeps no histogram of the sum). The mean is exact: 1e6 / IOPS.
    """
    write = job["write"]
    p50 = pct(write["lat_ns"])
    sync = job.get("sync", {}).get("lat_ns", {})
    if sync.get("N", 0) > 0:
        p50 += pct(sync)
    iops = write["iops"]
    return p50, (1e6 / iops if iops else float("inf")), iops


def mark(ok):
    return "yes" if ok else "NO"


def main():
    results = sys.argv[1]
    single_fresh = fio_job(results, "fio-single-fresh")["write"]["iops"]
    single = fio_job(results, "fio-single")["write"]["iops"]
    qd1 = [(label, *fio_qd1(fio_job(results, name))) for name, label in QD1_VARIANTS]
    best_label, best_p50 = min(((label, p50) for label, p50, _, _ in qd1), key=lambda x: x[1])

    lg = {n: load(results, n) for n in ("lg-put-16", "lg-put-64", "lg-put-1", "lg-get-2")}
    put = {n: lg[n]["latency_us"]["put"] for n in ("lg-put-16", "lg-put-64", "lg-put-1")}
    gets = lg["lg-get-2"]
    engine = {n: lg[n]["phases"][-1]["engine_stats"] for n in lg}
    m = lg["lg-put-16"]["machine"]

    print()
    print(f"machine: Linux {m['kernel']}, {m['cpus']} CPUs ({m.get('cpu_model') or '?'}); "
          f"{m['fs_type']} on {m['fs_device']} (mounted at {m['fs_mount']})")
    print()
    print("fio, same filesystem, 4 KiB sequential writes, queue depth 1")
    print(f"  single writer --direct=1 --fdatasync=1, fresh file      {single_fresh:>12,.0f} IOPS")
    print(f"  single writer --direct=1 --fdatasync=1, written file    {single:>12,.0f} IOPS")
    print(f"  {'QD1 durable write variant (written file)':<40} {'p50 µs':>10} {'mean µs':>10} {'IOPS':>10}")
    for label, p50, mean, iops in qd1:
        print(f"  {label:<40} {p50:>10.1f} {mean:>10.1f} {iops:>10,.0f}")
    print(f"  best QD1 p50: {best_p50:.1f} µs ({best_label})")
    print()
    print("ringdb loadgen, durability sync, 16-byte keys, 100-byte values, random keys")
    print(f"  {'run':<28} {'ops/s':>12} {'p50 µs':>9} {'p99 µs':>9} {'p99.9 µs':>9} {'recs/batch':>10}")
    for name, label in (("lg-put-1", "puts, 1 thread"), ("lg-put-16", "puts, 16 threads"),
                        ("lg-put-64", "puts, 64 threads")):
        p = put[name]
        print(f"  {label:<28} {lg[name]['throughput_ops']:>12,.0f} {p['p50']:>9.1f} {p['p99']:>9.1f} "
              f"{p['p999']:>9.1f} {engine[name]['mean_batch_records']:>10.1f}")
    g = gets["latency_us"]["get"]
    print(f"  {'cached gets, 2 threads':<28} {gets['throughput_ops']:>12,.0f} {g['p50']:>9.2f} {g['p99']:>9.2f} "
          f"{g['p999']:>9.2f} {'':>10}")
    print()

    put64 = lg["lg-put-64"]["throughput_ops"]
    ratio = put64 / single
    ratio_fresh = put64 / single_fresh
    p50_1 = put["lg-put-1"]["p50"]
    p50_ratio = p50_1 / best_p50
    rows = [
        ("ringdb puts/s @16 threads", f"{lg['lg-put-16']['throughput_ops']:,.0f}", ""),
        ("ringdb puts/s @64 threads", f"{put64:,.0f}", ""),
        ("@64 / fio single writer (written file)", f"{ratio:.1f}x",
         f"target >= {PUT_RATIO_TARGET:.0f}x: {mark(ratio >= PUT_RATIO_TARGET)}"),
        ("@64 / fio single writer (fresh file)", f"{ratio_fresh:.1f}x",
         f"target >= {PUT_RATIO_TARGET:.0f}x: {mark(ratio_fresh >= PUT_RATIO_TARGET)}"),
        ("ringdb 1-thread put p50", f"{p50_1:.1f} µs", ""),
        ("best fio QD1 p50", f"{best_p50:.1f} µs", best_label),
        ("ringdb p50 / fio best p50", f"{p50_ratio:.2f}x",
         f"target <= {P50_RATIO_TARGET:.2f}x: {mark(p50_ratio <= P50_RATIO_TARGET)}"),
        ("ringdb cached gets/s @2 threads", f"{gets['throughput_ops']:,.0f}", ""),
    ]
    print("summary")
    for label, value, note in rows:
        print(f"  {label:<40} {value:>14}  {note}")


if __name__ == "__main__":
    main()
