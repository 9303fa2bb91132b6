#!/usr/bin/env python3
"""Table and SVG plot of a benches/compare.sh run.

    compare.py RESULTS_DIR [PLOT.svg]

RESULTS_DIR holds <engine>-<workload>.json files written by `loadgen --json`.
"""
import glob
import html
import json
import math
import os
import sys

ENGINE_ORDER = ["ringdb", "rocksdb", "fjall", "redb", "sled", "lmdb"]
WORKLOAD_ORDER = ["a", "b", "c", "d", "e", "f", "fill-random", "fill-seq", "read-random", "update", "mixed"]
COLORS = {"ringdb": "#d62728", "rocksdb": "#1f77b4", "fjall": "#2ca02c", "redb": "#9467bd", "sled": "#ff7f0e", "lmdb": "#8c564b"}


def label(workload):
    return f"YCSB {workload.upper()}" if len(workload) == 1 else workload


def load(results):
    runs = {}
    for path in glob.glob(os.path.join(results, "*.json")):
        with open(path) as f:
            doc = json.load(f)
        runs[(doc["workload"], doc["engine"])] = doc
    return runs


def order(items, preferred):
    return sorted(items, key=lambda x: (preferred.index(x) if x in preferred else len(preferred), x))


def table(runs):
    workloads = order({w for w, _ in runs}, WORKLOAD_ORDER)
    engines = order({e for _, e in runs}, ENGINE_ORDER)
    head = f"| {'workload':<11} | {'engine':<7} | {'ops/s':>10} | {'op':<17} | {'p50 µs':>9} | {'p99 µs':>9} | {'p99.9 µs':>9} |"
    lines = [head, "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"]
    for w in workloads:
        for e in engines:
            doc = runs.get((w, e))
            if doc is None:
                lines.append(f"| {label(w):<11} | {e:<7} | {'failed':>10} | {'':<17} | {'':>9} | {'':>9} | {'':>9} |")
                continue
            first = True
            for op, l in sorted(doc["latency_us"].items()):
                tput = f"{doc['throughput_ops']:.0f}" if first else ""
                lines.append(
                    f"| {label(w) if first else '':<11} | {e if first else '':<7} | {tput:>10} | {op:<17} | "
                    f"{l['p50']:>9.1f} | {l['p99']:>9.1f} | {l['p999']:>9.1f} |"
                )
                first = False
    return "\n".join(lines)


def svg_bars(title, groups, engines, values, log, unit, x0, y0, width, height):
    """A grouped bar chart: groups on x, one bar per engine, log or linear y."""
    out = [f'<text x="{x0 + width / 2}" y="{y0 - 10}" text-anchor="middle" font-size="16">{html.escape(title)}</text>']
    vals = [v for v in values.values() if v and v > 0]
    if not vals:
        return out
    lo = 10 ** math.floor(math.log10(min(vals))) if log else 0
    hi = 10 ** math.ceil(math.log10(max(vals))) if log else max(vals) * 1.1

    def y(v):
        if log:
            return y0 + height - height * (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        return y0 + height - height * v / hi

    out.append(f'<line x1="{x0}" y1="{y0 + height}" x2="{x0 + width}" y2="{y0 + height}" stroke="black"/>')
    out.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y0 + height}" stroke="black"/>')
    ticks = []
    if log:
        t = lo
        while t <= hi * 1.0001:
            ticks.append(t)
            t *= 10
    else:
        ticks = [hi * i / 5 for i in range(6)]
    for t in ticks:
        ty = y(t)
        out.append(f'<line x1="{x0}" y1="{ty:.1f}" x2="{x0 + width}" y2="{ty:.1f}" stroke="#ddd"/>')
        txt = f"{t:,.0f}" if t >= 1 else f"{t:g}"
        out.append(f'<text x="{x0 - 6}" y="{ty + 4:.1f}" text-anchor="end" font-size="11">{txt}</text>')
    out.append(
        f'<text transform="translate({x0 - 62},{y0 + height / 2}) rotate(-90)" text-anchor="middle" font-size="12">{html.escape(unit)}</text>'
    )
    gw = width / max(len(groups), 1)
    bw = gw * 0.8 / max(len(engines), 1)
    for gi, g in enumerate(groups):
        gx = x0 + gi * gw + gw * 0.1
        for ei, e in enumerate(engines):
            v = values.get((g, e))
            if not v:
                continue
            by = y(v)
            out.append(
                f'<rect x="{gx + ei * bw:.1f}" y="{by:.1f}" width="{bw * 0.9:.1f}" height="{y0 + height - by:.1f}" '
                f'fill="{COLORS.get(e, "#777")}"><title>{html.escape(e)} {html.escape(g.replace(chr(10), " "))}: {v:,.1f} {html.escape(unit)}</title></rect>'
            )
        cx = x0 + gi * gw + gw / 2
        spans = "".join(
            f'<tspan x="{cx:.1f}" dy="{0 if i == 0 else 14}">{html.escape(line)}</tspan>' for i, line in enumerate(g.split("\n"))
        )
        out.append(f'<text x="{cx:.1f}" y="{y0 + height + 16}" text-anchor="middle" font-size="12">{spans}</text>')
    return out


def plot(runs, path):
    workloads = order({w for w, _ in runs}, WORKLOAD_ORDER)
    engines = order({e for _, e in runs}, ENGINE_ORDER)
    tput = {(label(w), e): d["throughput_ops"] for (w, e), d in runs.items()}
    p99 = {}
    groups99 = []
    for w in workloads:
        ops = sorted({op for (ww, _), d in runs.items() if ww == w for op in d["latency_us"]})
        for op in ops:
            g = f"{label(w)}\n{op}"
            groups99.append(g)
            for e in engines:
                d = runs.get((w, e))
                if d and op in d["latency_us"]:
                    p99[(g, e)] = d["latency_us"][op]["p99"]
    width = max(900, 110 * len(groups99) + 120)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="790" font-family="sans-serif">',
             '<rect width="100%" height="100%" fill="white"/>']
    parts += svg_bars("throughput (ops/s, log scale)", [label(w) for w in workloads], engines, tput, True, "ops/s",
                      90, 50, width - 130, 260)
    parts += svg_bars("p99 latency per operation (µs, log scale; lower is better)", groups99, engines, p99, True, "µs",
                      90, 410, width - 130, 260)
    for i, e in enumerate(engines):
        lx = 90 + i * 120
        parts.append(f'<rect x="{lx}" y="750" width="14" height="14" fill="{COLORS.get(e, "#777")}"/>')
        parts.append(f'<text x="{lx + 20}" y="762" font-size="13">{html.escape(e)}</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    runs = load(sys.argv[1])
    if not runs:
        print(f"compare.py: no JSON results in {sys.argv[1]}", file=sys.stderr)
        sys.exit(1)
    print(table(runs))
    any_doc = next(iter(runs.values()))
    m, c = any_doc["machine"], any_doc["config"]
    print()
    print(
        f"machine: Linux {m['kernel']}, {m['cpus']} CPUs ({m.get('cpu_model') or 'unknown CPU'}), "
        f"{m['fs_type']} on {m['fs_device']}; {c['keys']} keys, {c['value_size']} B values, durability {c['durability']}"
    )
    for (w, e), d in sorted(runs.items()):
        if w == "a":
            print(f"  {e}: {d['config']['engine_config']}")
    if len(sys.argv) > 2:
        plot(runs, sys.argv[2])


if __name__ == "__main__":
    main()
