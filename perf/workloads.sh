#!/usr/bin/env bash
# The perf harness: W1-W5 of shared/WORKLOADS.md with ringmux-loadgen, ioengine=ringmux and
# ioengine=tcp interleaved (A B A B A B), embedded server pinned to CPU 1, client to CPU 0.
# Prints a markdown table of medians and ratios; the raw JSON of every run stays in
# perf/out/workloads/. About 3 minutes.
# usage: perf/workloads.sh [BUILD_DIR] [RUNS] [SECONDS]   (build, 3, 3)
source "$(dirname "$0")/common.sh"
runs=${2:-3}
seconds=${3:-3}
perf_setup workloads "${1:-build}"
loadgen="$tools/ringmux-loadgen"
common=(--output-format=json --runtime="$seconds" --ramp_time=0.5 --cpus_allowed=0)
declare -A workload=(
  [W1]="--name=w1 --rw=unary --bs=64 --iodepth=1"
  [W2]="--name=w2 --rw=unary --bs=64 --iodepth=64"
  [W3]="--name=w3 --rw=write --bs=64k"
  [W3_1m]="--name=w3 --rw=write --bs=1m"
  [W4]="--name=w4 --rw=write --bs=16k --streams=64"
  [W5]="--name=bulk --rw=write --bs=64k --name=probe --rw=unary --bs=64 --iodepth=1"
)
for run in $(seq 1 "$runs"); do
  for w in W1 W2 W3 W4 W5; do
    for engine in ringmux tcp; do
      args=${workload[$w]}
      # The raw baseline of W4 is one flow (WORKLOADS.md); W3's also runs with 1 MiB writes.
      [ "$w" = W4 ] && [ "$engine" = tcp ] && args="--name=w4 --rw=write --bs=16k --streams=1"
      # shellcheck disable=SC2086 # job options are words on purpose
      "$loadgen" "${common[@]}" --ioengine="$engine" $args >"$out/$w.$engine.$run.json"
      if [ "$w" = W3 ] && [ "$engine" = tcp ]; then
        # shellcheck disable=SC2086
        "$loadgen" "${common[@]}" --ioengine=tcp ${workload[W3_1m]} >"$out/W3_1m.tcp.$run.json"
      fi
    done
  done
  echo "run $run of $runs done" >&2
done
python3 perf/summarize.py "$out" "$runs"
