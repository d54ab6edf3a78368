#!/usr/bin/env bash
# What one unary call costs, client and server together (ringmux-loadgen with its embedded
# server, 64 calls in flight; 1 MiB calls one at a time), on the ringmux engine and on the tcp engine (the raw
# pipelined baseline: length-prefixed messages, no multiplexing), for 64 B, 4 KiB and
# 1 MiB requests (responses of the same size):
#   syscalls per call  strace -f -c over a run of CALLS calls (exact counts; strace slows
#                      the run, which changes batching a little)
#   CPU per call       user + system CPU time of a run without strace, over its calls
# Instructions per call, one side at a time, are perf/callgrind.sh's. valgrind 3.19 runs an
# io_uring loop fine, as long as no other thread of its process must run while the loop
# waits in io_uring_enter (valgrind does not let them): ringmux-loadgen's client against a
# server outside valgrind runs; this script's embedded server, or ringmux-serve, hangs at
# start unless perf/valgrind_wait.c is preloaded.
# usage: perf/percall.sh [BUILD_DIR]
source "$(dirname "$0")/common.sh"
perf_setup percall "${1:-build}"
command -v strace >/dev/null || { echo "percall: strace is not installed" >&2; exit 2; }

run() {  # run ENGINE BS CALLS DEPTH [PREFIX...]: the loadgen's JSON goes to $out/last.json
  local engine=$1 bs=$2 calls=$3 depth=$4
  shift 4
  "$@" "$tools/ringmux-loadgen" --ioengine="$engine" --name=percall --rw=unary --bs="$bs" --iodepth="$depth" \
    --size=$((bs * calls)) --cpus_allowed=0 --output-format=json >"$out/last.json"
}

echo "| request = response | calls in flight | engine | calls | syscalls / call | io_uring_enter / call | CPU µs / call |"
echo "|---|---|---|---|---|---|---|"
# 1 MiB calls one at a time: the tcp engine's blocking client writes all its requests
# before it reads, so 64 of 1 MiB in flight fill both sockets and it stalls for good.
for spec in "64 100000 64" "4096 50000 64" "1048576 500 1"; do
  read -r bs calls depth <<<"$spec"
  for engine in ringmux tcp; do
    run "$engine" "$bs" "$calls" "$depth" strace -f -c -o "$out/strace.txt"
    syscalls=$(awk '$NF == "total" {print $(NF-2)}' "$out/strace.txt")
    enters=$(awk '$NF == "io_uring_enter" {print $4}' "$out/strace.txt")
    # CPU of the run (user + system, the loadgen and its threads), from its rusage.
    cpu_s=$(python3 - "$tools/ringmux-loadgen" "$engine" "$bs" "$calls" "$depth" "$out/last.json" <<'PY'
import resource, subprocess, sys
loadgen, engine, bs, calls, depth, out = sys.argv[1:]
with open(out, "w") as f:
    subprocess.run([loadgen, f"--ioengine={engine}", "--name=percall", "--rw=unary", f"--bs={bs}",
                    f"--iodepth={depth}", f"--size={int(bs) * int(calls)}", "--cpus_allowed=0",
                    "--output-format=json"], stdout=f, check=True)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(usage.ru_utime + usage.ru_stime)
PY
)
    cpu_us=$(python3 -c "print(f'{$cpu_s * 1e6 / $calls:.2f}')")
    echo "| $bs B | $depth | $engine | $calls | $(python3 -c "print(f'{$syscalls / $calls:.3f}')") | $(python3 -c "print(f'{${enters:-0} / $calls:.3f}')") | $cpu_us |"
  done
done
