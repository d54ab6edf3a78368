#!/usr/bin/env bash
# Quorum-call latency on loopback (issue 6): clusters of 3 and 5 `ringmux-serve --peers`
# members (pinned to CPU 1), and `ringmux-loadgen --rw=quorum` (CPU 0) calling all of them
# with quorum majority and all, 64-byte requests, one call in flight. "slow": one member is
# reached through `ringmux-chaos --latency=1ms` (each direction), i.e. a member 2 ms of round
# trip away. Runs interleaved per cluster; prints a markdown table of medians (p50 and p99
# in us, calls/s); raw JSON in perf/out/quorum/.
# usage: perf/quorum.sh [BUILD_DIR] [RUNS] [SECONDS]   (build, 3, 3)
source "$(dirname "$0")/common.sh"
runs=${2:-3}
seconds=${3:-3}
perf_setup quorum "${1:-build}"

for nodes in 3 5; do
  read -r -a ports <<<"$(free_ports $((nodes + 1)))"
  proxy_port=${ports[$nodes]}
  members=()
  for i in $(seq 0 $((nodes - 1))); do members+=("127.0.0.1:${ports[$i]}"); done
  for i in $(seq 0 $((nodes - 1))); do
    others=$(printf '%s\n' "${members[@]}" | grep -v "^${members[$i]}\$" | paste -sd,)
    background "$tools/ringmux-serve" --listen="${members[$i]}" --peers="$others" --cpus=1 \
      >"$out/serve.$nodes.$i.log" 2>&1
  done
  background taskset -c 1 "$tools/ringmux-chaos" --listen="127.0.0.1:$proxy_port" \
    --upstream="${members[$((nodes - 1))]}" --latency=1ms --seed=1 >"$out/chaos.$nodes.log" 2>&1
  sleep 0.5
  all_peers=$(printf '%s\n' "${members[@]}" | paste -sd,)
  slow_peers=$(printf '%s\n' "${members[@]:0:$((nodes - 1))}" "127.0.0.1:$proxy_port" | paste -sd,)
  for run in $(seq 1 "$runs"); do
    for slow in no yes; do
      peers=$all_peers
      [ "$slow" = yes ] && peers=$slow_peers
      for quorum in majority all; do
        "$tools/ringmux-loadgen" --rw=quorum --peers="$peers" --quorum="$quorum" --bs=64 --iodepth=1 \
          --runtime="$seconds" --ramp_time=0.5 --cpus_allowed=0 --deadline=1s --output-format=json \
          >"$out/q.$nodes.$slow.$quorum.$run.json"
      done
    done
  done
  cleanup
  echo "$nodes nodes done" >&2
done
python3 - "$out" "$runs" <<'EOF'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
print("| members | one member 2 ms away | quorum | calls/s | p50 us | p99 us | errors | runs p50 / p99 us |")
print("|---|---|---|---|---|---|---|---|")
for nodes in (3, 5):
    for slow in ("no", "yes"):
        for quorum in ("majority", "all"):
            jobs = [json.load(open(f"{out}/q.{nodes}.{slow}.{quorum}.{r}.json"))["jobs"][0] for r in range(1, runs + 1)]
            p50 = [j["write"]["clat_ns"]["percentile"]["50.000000"] / 1e3 for j in jobs]
            p99 = [j["write"]["clat_ns"]["percentile"]["99.000000"] / 1e3 for j in jobs]
            iops = [j["write"]["iops"] for j in jobs]
            errors = sum(j["ringmux"]["errors"] for j in jobs)
            each = " · ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(p50, p99))
            print(f"| {nodes} | {slow} | {quorum} | {statistics.median(iops):,.0f} | {statistics.median(p50):.0f} | "
                  f"{statistics.median(p99):.0f} | {errors} | {each} |")
EOF
