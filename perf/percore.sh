#!/usr/bin/env bash
# W7 (issue 13, per-core efficiency): 8 client connections with 16 unary calls of 64 bytes
# in flight each, against a ringmux-serve of 1 loop (pinned to CPU 1) and of 2 loops
# (--cpus=0,1), interleaved per run (1 loop, 2 loops; same client, same run). The client
# is ringmux-loadgen --numjobs=8 --own_connection --cpus_allowed=0,1: two client loops,
# one per CPU, 4 connections each. Each measurement starts a server of its own and stops it
# when the client is done; the server's final lines give its calls and each loop's
# connections and CPU time (the loop thread's clock), /proc its whole CPU time.
# Three loads: closed loop (as many calls as the machine carries), and paced (--rate_iops)
# at RATE and at 10 x RATE calls/s per connection: the same calls per second for both
# servers, below what either carries, so that the efficiency is compared at equal load. Each server runs with the default busy-poll
# (--spin=20us) and with none (--spin=0): on a machine whose cores the client shares, a
# polling loop burns what the other threads there need. Prints a markdown table per run
# and the medians; raw output in perf/out/percore/.
# usage: perf/percore.sh [BUILD_DIR] [RUNS] [SECONDS] [RATE_PER_CONNECTION]   (build, 3, 5, 5000)
source "$(dirname "$0")/common.sh"
runs=${2:-3}
seconds=${3:-5}
rate=${4:-5000}
perf_setup percore "${1:-build}"

clock_ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# measure NAME SERVE_CPUS SPIN LOADGEN_ARGS...: one server, one client run, the server stopped.
measure() {
  local name=$1 cpus=$2 spin=$3
  shift 3
  : >"$out/$name.serve.log"
  background "$tools/ringmux-serve" --listen=127.0.0.1:0 --cpus="$cpus" --spin="$spin" --duration=600s \
    >"$out/$name.serve.log" 2>&1
  local serve_pid=${pids[-1]}
  local port
  port=$(port_of "$out/$name.serve.log" 'port \([0-9]*\)')
  local before
  before=$(cpu_ticks "$serve_pid")
  "$tools/ringmux-loadgen" --host=127.0.0.1 --port="$port" --output-format=json --runtime="$seconds" --ramp_time=0.5 \
    --name=w7 --rw=unary --bs=64 --iodepth=16 --numjobs=8 --own_connection --group_reporting \
    --cpus_allowed=0,1 "$@" >"$out/$name.json" 2>"$out/$name.err" || true
  echo "$(( $(cpu_ticks "$serve_pid") - before )) $clock_ticks" >"$out/$name.server_ticks"
  kill -INT "$serve_pid" 2>/dev/null || true
  wait "$serve_pid" 2>/dev/null || true
  pids=()
}
for run in $(seq 1 "$runs"); do
  for load in closed paced paced10; do
    args=()
    [ "$load" = paced ] && args=(--rate_iops="$rate")
    [ "$load" = paced10 ] && args=(--rate_iops="$((10 * rate))")
    for spin in 20us 0; do
      measure "$load.spin$spin.1loop.$run" 1 "$spin" "${args[@]}"
      measure "$load.spin$spin.2loops.$run" 0,1 "$spin" "${args[@]}"
    done
  done
  echo "W7 run $run of $runs done" >&2
done
python3 - "$out" "$runs" "$rate" <<'EOF'
import json, re, statistics, sys
out, runs, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def one(name):
    """What one measurement gives: client calls/s, server calls, CPU seconds, loop shares."""
    with open(f"{out}/{name}.json") as f:
        job = json.load(f)["jobs"][0]
    log = open(f"{out}/{name}.serve.log").read()
    calls = int(re.search(r"; connections=\d+ sessions=\d+ resumes=\d+ calls=(\d+)", log).group(1))
    found = re.findall(r"loop \d+: connections=(\d+) sessions_open=\d+ calls=(\d+) cpu=([0-9.]+)s enters=(\d+)", log)
    loops = [(int(c), float(s)) for c, _, s, _ in found]
    calls_per_enter = [int(n) / int(e) if int(e) else 0.0 for _, n, _, e in found]
    ticks, hz = open(f"{out}/{name}.server_ticks").read().split()
    loop_cpu = sum(s for _, s in loops)
    return {
        "iops": job["write"]["iops"],
        "calls": calls, "loop_cpu": loop_cpu, "process_cpu": int(ticks) / int(hz),
        "per_cpu_s": calls / loop_cpu if loop_cpu else 0.0,
        "per_process_cpu_s": calls * int(hz) / int(ticks) if int(ticks) else 0.0,
        "connections": [c for c, _ in loops], "cpu_share": [s / loop_cpu if loop_cpu else 0 for _, s in loops],
        "loop_cpu_s": [s for _, s in loops], "calls_per_enter": calls_per_enter,
        "ns_per_call": loop_cpu * 1e9 / calls if calls else 0.0,
    }

print("| load | spin | server | client calls/s | server calls | server loop CPU s | process CPU s (during the client run) | calls per loop CPU-second | connections per loop | CPU per loop s (share) | calls per io_uring_enter per loop |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
medians = {}
configs = [(load, spin) for load in ("closed", "paced", "paced10") for spin in ("20us", "0")]
for load, spin in configs:
    for server in ("1loop", "2loops"):
        rows = [one(f"{load}.spin{spin}.{server}.{r}") for r in range(1, runs + 1)]
        for r, m in enumerate(rows, 1):
            shares = ", ".join(f"{s:.2f} ({p:.0%})" for s, p in zip(m["loop_cpu_s"], m["cpu_share"]))
            print(f"| {load} run {r} | {spin} | {server} | {m['iops']:,.0f} | {m['calls']:,} | {m['loop_cpu']:.2f} | "
                  f"{m['process_cpu']:.2f} | {m['per_cpu_s']:,.0f} | {' / '.join(map(str, m['connections']))} | {shares} | "
                  f"{' / '.join(f'{c:.1f}' for c in m['calls_per_enter'])} |")
        medians[(load, spin, server)] = {k: statistics.median(m[k] for m in rows)
                                         for k in ("iops", "per_cpu_s", "per_process_cpu_s", "loop_cpu", "process_cpu")}
print()
for load, spin in configs:
    one_loop, two_loops = medians[(load, spin, "1loop")], medians[(load, spin, "2loops")]
    per_connection = rate * (10 if load == "paced10" else 1)
    label = "closed loop" if load == "closed" else f"paced at {per_connection:,} calls/s per connection ({8 * per_connection:,}/s)"
    print(f"{label}, --spin={spin}: calls per server loop CPU-second, median of {runs}: 1 loop {one_loop['per_cpu_s']:,.0f}, "
          f"2 loops {two_loops['per_cpu_s']:,.0f}: 2 loops / 1 loop = {two_loops['per_cpu_s'] / one_loop['per_cpu_s']:.2f}x"
          f"; per process CPU-second {one_loop['per_process_cpu_s']:,.0f} vs {two_loops['per_process_cpu_s']:,.0f}: "
          f"{two_loops['per_process_cpu_s'] / one_loop['per_process_cpu_s']:.2f}x "
          f"(client calls/s {one_loop['iops']:,.0f} vs {two_loops['iops']:,.0f})")
EOF
