#!/usr/bin/env python3
"""W11 of perf/workloads.sh (many streams on one connection): a markdown table of medians.
usage: summarize_w11.py OUT_DIR RUNS STREAM_COUNT..."""
import json
import os
import statistics
import sys

out, runs, counts = sys.argv[1], int(sys.argv[2]), [int(n) for n in sys.argv[3:]]
ticks_per_second = os.sysconf("SC_CLK_TCK")
gib = 1 << 30


def load(name, label):
    """The job's JSON, client CPU seconds and server CPU seconds; None when it failed."""
    base = f"{out}/{name}.{label}"
    try:
        with open(base + ".json", encoding="utf-8") as f:
            job = json.load(f)["jobs"][0]
    except (OSError, ValueError, IndexError, KeyError):
        with open(base + ".err", encoding="utf-8") as f:
            return {"error": (f.read().strip().splitlines() or ["no output"])[-1]}
    if job["ringmux"]["errors"]:
        return {"error": job["ringmux"]["error"]}
    with open(base + ".time", encoding="utf-8") as f:
        user, system = (float(x) for x in f.read().split()[-2:])
    with open(base + ".server_ticks", encoding="utf-8") as f:
        server = int(f.read()) / ticks_per_second
    return {"job": job, "client_cpu": user + system, "server_cpu": server}


def median_of(name, label):
    samples = [load(name, f"{label}.{r}") for r in range(1, runs + 1)]
    good = [s for s in samples if "job" in s]
    if not good:
        return {"error": samples[0]["error"]}
    pick = lambda f: statistics.median(f(s) for s in good)  # noqa: E731
    return {
        "bw": pick(lambda s: s["job"]["write"]["bw_bytes"]),
        "iops": pick(lambda s: s["job"]["write"]["iops"]),
        "share_min": pick(lambda s: s["job"]["ringmux"]["stream_share_min"]),
        "share_max": pick(lambda s: s["job"]["ringmux"]["stream_share_max"]),
        "client_cpu": pick(lambda s: s["client_cpu"]),
        "server_cpu": pick(lambda s: s["server_cpu"]),
        "failed": len(samples) - len(good),
    }


labels = ["after"] + (["before"] if os.path.exists(f"{out}/s{counts[0]}.before.1.json") else [])
print("| streams | build | GiB/s | x of 64 streams | slowest / fastest share (fair) | slowest / fair "
      "| client CPU s | server CPU s |")
print("|---|---|---|---|---|---|---|---|")
base = {}
for n in counts:
    for label in labels:
        m = median_of(f"s{n}", label)
        if "error" in m:
            print(f"| {n:,} | {label} | failed: {m['error']} | | | | | |")
            continue
        base.setdefault(label, m["bw"])
        fair = 1.0 / n
        print(f"| {n:,} | {label} | {m['bw'] / gib:.2f} | {m['bw'] / base[label]:.2f} | "
              f"{m['share_min'] * 100:.4f} % / {m['share_max'] * 100:.4f} % ({fair * 100:.4f} %) | "
              f"{m['share_min'] / fair:.2f} | {m['client_cpu']:.2f} | {m['server_cpu']:.2f} |"
              + (f" ({m['failed']} of {runs} runs failed)" if m["failed"] else ""))
print()
print("| 4 KiB, 1,000 in flight, one connection | per second | client CPU s | server CPU s |")
print("|---|---|---|---|")
for name, what in (("churn", "streams (open, write 4 KiB, end)"), ("unary", "unary calls (4 KiB request)")):
    m = median_of(name, "after")
    if "error" in m:
        print(f"| {what} | failed: {m['error']} | | |")
        continue
    print(f"| {what} | {m['iops']:,.0f} | {m['client_cpu']:.2f} | {m['server_cpu']:.2f} |")
