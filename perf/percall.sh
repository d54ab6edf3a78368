#!/usr/bin/env bash
# What one unary call costs, client and server together (ringmux-loadgen with its embedded
# server, 64 calls in flight), on the ringmux engine and on the tcp engine (the raw
# pipelined baseline: length-prefixed messages, no multiplexing), for 64 B, 4 KiB and
# 1 MiB requests (responses of the same size):
#   syscalls per call  strace -f -c over a run of CALLS calls (exact counts; strace slows
#                      the run, which changes batching a little)
#   CPU per call       user + system CPU time of a run without strace, over its calls
# (callgrind would count instructions, but valgrind 3.19 does not run io_uring loops: the
# loadgen hangs or its connect fails under it.)
# usage: perf/percall.sh [BUILD_DIR]
source "$(dirname "$0")/common.sh"
perf_setup percall "${1:-build}"
command -v strace >/dev/null || { echo "percall: strace is not installed" >&2; exit 2; }

run() {  # run ENGINE BS CALLS [PREFIX...]: the loadgen's JSON goes to $out/last.json
  local engine=$1 bs=$2 calls=$3
  shift 3
  "$@" "$tools/ringmux-loadgen" --ioengine="$engine" --name=percall --rw=unary --bs="$bs" --iodepth=64 \
    --size=$((bs * calls)) --cpus_allowed=0 --output-format=json >"$out/last.json"
}

echo "| request = response | engine | calls | syscalls / call | io_uring_enter / call | CPU µs / call |"
echo "|---|---|---|---|---|---|"
for spec in "64 200000" "4096 100000" "1048576 1000"; do
  read -r bs calls <<<"$spec"
  for engine in ringmux tcp; do
    run "$engine" "$bs" "$calls" strace -f -c -o "$out/strace.txt"
    syscalls=$(awk '$NF == "total" {print $(NF-2)}' "$out/strace.txt")
    enters=$(awk '$NF == "io_uring_enter" {print $4}' "$out/strace.txt")
    # CPU of the children (the loadgen) from bash's times, before and after.
    before=$( { times; } | awk 'NR == 2 {print $1 " " $2}')
    run "$engine" "$bs" "$calls"
    after=$( { times; } | awk 'NR == 2 {print $1 " " $2}')
    cpu_us=$(python3 - "$before" "$after" "$calls" <<'PY'
import re, sys
def seconds(text):
    total = 0.0
    for minutes, secs in re.findall(r"(\d+)m([\d.]+)s", text):
        total += int(minutes) * 60 + float(secs)
    return total
print(f"{(seconds(sys.argv[2]) - seconds(sys.argv[1])) * 1e6 / int(sys.argv[3]):.2f}")
PY
)
    echo "| $bs B | $engine | $calls | $(python3 -c "print(f'{$syscalls / $calls:.3f}')") | $(python3 -c "print(f'{${enters:-0} / $calls:.3f}')") | $cpu_us |"
  done
done
