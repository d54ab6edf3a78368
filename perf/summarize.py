#!/usr/bin/env python3
"""Medians and ratios of perf/workloads.sh runs: a markdown table on stdout.
usage: summarize.py OUT_DIR RUNS"""
import json
import statistics
import sys

out, runs = sys.argv[1], int(sys.argv[2])


def load(name, engine, run):
    with open(f"{out}/{name}.{engine}.{run}.json", encoding="utf-8") as f:
        return {job["jobname"]: job for job in json.load(f)["jobs"]}


def median(values):
    return statistics.median(values) if values else float("nan")


def collect(name, engine, pick):
    return median([pick(load(name, engine, r)) for r in range(1, runs + 1)])


def p(job, direction, q):
    return job[direction]["clat_ns"]["percentile"].get(q, 0) / 1000.0


gib = 1 << 30
rows = []
for w in ("W1", "W2"):
    rr = collect(w, "ringmux", lambda j: j[w.lower()]["write"]["iops"])
    tr = collect(w, "tcp", lambda j: j[w.lower()]["write"]["iops"])
    r50 = collect(w, "ringmux", lambda j: p(j[w.lower()], "write", "50.000000"))
    r99 = collect(w, "ringmux", lambda j: p(j[w.lower()], "write", "99.000000"))
    t50 = collect(w, "tcp", lambda j: p(j[w.lower()], "write", "50.000000"))
    t99 = collect(w, "tcp", lambda j: p(j[w.lower()], "write", "99.000000"))
    rows.append(f"| {w} | {rr:,.0f} calls/s · p50 {r50:.1f} · p99 {r99:.1f} µs | {tr:,.0f} · p50 {t50:.1f} · p99 {t99:.1f} µs "
                f"| rate {rr / tr:.2f}x · p99 {r99 / t99:.2f}x |")
w3 = collect("W3", "ringmux", lambda j: j["w3"]["write"]["bw_bytes"]) / gib
w3t = collect("W3", "tcp", lambda j: j["w3"]["write"]["bw_bytes"]) / gib
w3m = collect("W3_1m", "tcp", lambda j: j["w3"]["write"]["bw_bytes"]) / gib
rows.append(f"| W3 | {w3:.2f} GiB/s | {w3t:.2f} GiB/s (64 KiB writes), {w3m:.2f} GiB/s (1 MiB writes) "
            f"| {w3 / w3t:.2f}x / {w3 / w3m:.2f}x |")
w4 = collect("W4", "ringmux", lambda j: j["w4"]["write"]["bw_bytes"]) / gib
w4t = collect("W4", "tcp", lambda j: j["w4"]["write"]["bw_bytes"]) / gib
smin = collect("W4", "ringmux", lambda j: j["w4"]["ringmux"]["stream_share_min"]) * 100
smax = collect("W4", "ringmux", lambda j: j["w4"]["ringmux"]["stream_share_max"]) * 100
rows.append(f"| W4 | {w4:.2f} GiB/s · share {smin:.2f}–{smax:.2f} % | {w4t:.2f} GiB/s (one flow) "
            f"| {w4 / w4t:.2f}x; {w4 / w3:.2f}x of ringmux W3 |")
b = collect("W5", "ringmux", lambda j: j["bulk"]["write"]["bw_bytes"]) / gib
bt = collect("W5", "tcp", lambda j: j["bulk"]["write"]["bw_bytes"]) / gib
q = {k: collect("W5", "ringmux", lambda j, k=k: p(j["probe"], "write", k)) for k in ("50.000000", "99.000000", "99.900000")}
qt = {k: collect("W5", "tcp", lambda j, k=k: p(j["probe"], "write", k)) for k in ("50.000000", "99.000000", "99.900000")}
rows.append(f"| W5 | probe p50/p99/p99.9 {q['50.000000']:.0f}/{q['99.000000']:.0f}/{q['99.900000']:.0f} µs · bulk {b:.2f} GiB/s "
            f"| probe {qt['50.000000']:.0f}/{qt['99.000000']:.0f}/{qt['99.900000']:.0f} µs · bulk {bt:.2f} GiB/s (two connections) "
            f"| bulk {b / w3:.2f}x of ringmux W3 |")
print(f"| workload | ringmux (median of {runs}) | tcp baseline (median of {runs}) | ratio |")
print("|---|---|---|---|")
print("\n".join(rows))
