#!/usr/bin/env bash
# The perf harness: W1-W5 of shared/WORKLOADS.md with ringmux-loadgen, ioengine=ringmux and
# ioengine=tcp interleaved (A B A B A B), embedded server pinned to CPU 1, client to CPU 0.
# Prints a markdown table of medians and ratios; the raw JSON of every run stays in
# perf/out/workloads/. About 3 minutes.
# usage: perf/workloads.sh [BUILD_DIR] [RUNS] [SECONDS]   (build, 3, 3)
#
# W11 (many streams, issue 16): perf/workloads.sh BUILD_DIR RUNS SECONDS W11 [BEFORE_BUILD_DIR]
# One connection of --rw=write --bs=4k --streams=N for N from 64 to 100,000 against a
# ringmux-serve of its own (pinned to CPU 1, client on CPU 0), with the slowest and fastest
# stream's share and the client's and server's CPU seconds; then stream churn (open, write
# 4 KiB, end, 1,000 streams in flight) against unary calls of 4 KiB with 1,000 in flight.
# With BEFORE_BUILD_DIR the same table is measured with that build, interleaved, same run.
# Medians of RUNS. Raw JSON and times in perf/out/w11/.
source "$(dirname "$0")/common.sh"
runs=${2:-3}
seconds=${3:-3}
if [ "${4:-}" = W11 ]; then
  perf_setup w11 "${1:-build}"
  builds=("$build")
  if [ -n "${5:-}" ]; then
    perf_setup_more "$5"
    builds+=("$5")
  fi
  w11_serve() {  # w11_serve BUILD MAX_STREAMS: starts a server; sets $serve_pid, $serve_port
    : >"$out/serve.log"
    background "$1/tools/ringmux-serve" --listen=127.0.0.1:0 --cpus=1 --max_streams="$2" --duration=600s \
      >"$out/serve.log" 2>&1
    serve_pid=${pids[-1]}
    serve_port=$(port_of "$out/serve.log" 'port \([0-9]*\)')
  }
  cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
  w11_run() {  # w11_run BUILD LABEL NAME MAX_STREAMS LOADGEN_ARGS...: one measured run
    local b=$1 label=$2 name=$3 max=$4
    shift 4
    w11_serve "$b" "$max"
    local before_ticks
    before_ticks=$(cpu_ticks "$serve_pid")
    TIMEFORMAT='%U %S'
    { time "$b/tools/ringmux-loadgen" --host=127.0.0.1 --port="$serve_port" --cpus_allowed=0 \
        --output-format=json --runtime="$seconds" --ramp_time=0.5 --name="$name" "$@" \
        >"$out/$name.$label.json" 2>"$out/$name.$label.err"; } 2>"$out/$name.$label.time" || true
    echo "$(( $(cpu_ticks "$serve_pid") - before_ticks ))" >"$out/$name.$label.server_ticks"
    kill -INT "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" 2>/dev/null || true
    pids=()
  }
  stream_counts=(64 256 1024 4096 10000 16384 100000)
  for run in $(seq 1 "$runs"); do
    for n in "${stream_counts[@]}"; do
      for b in "${builds[@]}"; do
        label=$( [ "$b" = "$build" ] && echo after || echo before ).$run
        # A build older than issue 16 allows at most 16384 streams on a connection.
        max=$n
        [ "$label" != "after.$run" ] && [ "$n" -gt 16384 ] && max=16384
        w11_run "$b" "$label" "s$n" "$max" --rw=write --bs=4k --streams="$n"
      done
    done
    w11_run "$build" "after.$run" churn 16384 --rw=write --bs=4k --streams=1000 --stream_messages=1
    w11_run "$build" "after.$run" unary 16384 --rw=unary --bs=4k --resp_bs=8 --iodepth=1000
    echo "W11 run $run of $runs done" >&2
  done
  python3 perf/summarize_w11.py "$out" "$runs" "${stream_counts[@]}"
  exit 0
fi
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
