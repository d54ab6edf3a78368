#!/usr/bin/env bash
# Instructions per unary call (callgrind) and system calls per call (strace -f -c), on one
# side of the call at a time, for 64 B, 4 KiB and 1 MiB calls (response = request), on the
# ringmux engine and on the tcp engine (the raw pipelined baseline), for BUILD and, when
# given, BEFORE_BUILD (another tree's build: the "before" rows):
#   client  ringmux-loadgen --host under the tool, ringmux-serve a normal process
#   server  ringmux-serve under the tool, ringmux-loadgen a normal process
# The process measured runs on CPU 0, the other on CPU 1. 64 calls in flight for 64 B and
# 4 KiB, one for 1 MiB (the tcp engine's blocking client writes all its requests before it
# reads: 64 of 1 MiB would fill both sockets and stall it).
# Per call = (count of a run of CALLS2 calls - count of a run of CALLS1 calls) / (CALLS2 -
# CALLS1): what starting and stopping cost cancels. callgrind counts user-space
# instructions only; what the kernel does for the calls shows as the system calls beside.
#
# valgrind 3.19 runs ringmux-loadgen's client (its loop is the only thread that has work),
# but not ringmux-serve: a loop thread waiting in io_uring_enter keeps valgrind's other
# threads out, so the server's main thread never gets to start it. The server is run with
# perf/valgrind_wait.c preloaded (its waits become short sleeps); the polling that adds is
# left out of the counts (it lands in valgrind_wait_poll). The server's first thread (main,
# which waits for a signal, waking every 20 ms) is left out of the server's counts, and the
# serve's clock_nanosleep calls out of its system calls.
# Every process runs under timeout -s KILL; each measurement holds /tmp/ringmux-build.lock
# (callgrind runs are heavy), so do not run this script under that lock. About 10 minutes
# with a before tree when nobody else holds the lock. Raw outputs in perf/out/callgrind/.
# usage: perf/callgrind.sh BUILD [BEFORE_BUILD]
source "$(dirname "$0")/common.sh"

# Bounds of every process (seconds): a measured run takes under a minute under callgrind.
process_seconds_max=600
# How long a server under valgrind may take to start listening.
listen_wait_seconds_max=120
lock=/tmp/ringmux-build.lock
# size in bytes, calls in flight, calls of the shorter and the longer run, pairs of runs on
# the ringmux engine (the median pair is shown). A loadgen gives a job bounded by size 60 s,
# so a run under callgrind (~5 calls of 1 MiB a second) must stay within that. Small calls
# on the ringmux engine are measured three times: the stream table hashes ids with a
# secret drawn per session, and with some secrets its probes run long (a few sessions in a
# hundred: up to 3x the instructions of Session::finish).
specs=("64 64 25600 128000 3" "4096 64 12800 64000 3" "1048576 1 30 120 1")

exec 9>"$lock"
flock 9
perf_setup callgrind "${1:-build}"
trees=("after $build")
if [ -n "${2:-}" ]; then
  perf_setup_more "$2"
  trees+=("before $2")
fi
cc -O2 -Wall -Wextra -shared -fPIC perf/valgrind_wait.c -o "$out/valgrind_wait.so" -ldl
cc -O2 -Wall -Wextra perf/callgrind_calibrate.c -o "$out/callgrind_calibrate" -lxxhash
flock -u 9
command -v valgrind >/dev/null || { echo "callgrind: valgrind is not installed" >&2; exit 2; }
command -v strace >/dev/null || { echo "callgrind: strace is not installed" >&2; exit 2; }

wait_port() {  # wait_port LOG: the port a ringmux-serve names on its first line
  for _ in $(seq 1 $((listen_wait_seconds_max * 10))); do
    if grep -q "listening on port" "$1" 2>/dev/null; then
      sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$1"
      return
    fi
    sleep 0.1
  done
  echo "callgrind: no port in $1" >&2
  exit 1
}
leaf_of() {  # leaf_of PID: the innermost process of a chain (timeout -> strace -> serve)
  local pid=$1 child
  while child=$(pgrep -P "$pid" | head -1) && [ -n "$child" ]; do pid=$child; done
  echo "$pid"
}
calls_done() {  # calls_done JSON: calls the loadgen completed, or "failed"
  python3 -c "import json,sys
job=json.load(open(sys.argv[1]))['jobs'][0]
print(job['write']['clat_ns']['N'] if job['ringmux']['errors'] == 0 else 'failed')" "$1"
}

# measure BUILD SIDE ENGINE BS DEPTH CALLS TOOL PREFIX: one run, the measured side under
# TOOL (callgrind: PREFIX.out-NN per thread; strace: PREFIX.strace).
measure() {
  local b=$1 side=$2 engine=$3 bs=$4 depth=$5 calls=$6 tool=$7 prefix=$8
  local wrap=() measured_cpu=0 other_cpu=1 serve_pid port
  case $tool in
    callgrind) wrap=(valgrind --tool=callgrind --fair-sched=yes --separate-threads=yes
                     --callgrind-out-file="$prefix.out") ;;
    strace) wrap=(strace -f -c -o "$prefix.strace") ;;
  esac
  local loadgen_args=(--host=127.0.0.1 --ioengine="$engine" --name=cg --rw=unary --bs="$bs" --iodepth="$depth"
                      --size=$((bs * calls)) --output-format=json)
  local serve_args=(--listen=127.0.0.1:0 --ioengine="$engine" --duration="${process_seconds_max}s")
  : >"$prefix.serve.log"
  flock 9
  if [ "$side" = client ]; then
    taskset -c "$other_cpu" timeout -s KILL "$process_seconds_max" "$b/tools/ringmux-serve" "${serve_args[@]}" \
      --cpus="$other_cpu" >"$prefix.serve.log" 2>&1 9>&- &
    serve_pid=$!
    pids+=("$serve_pid")
    port=$(wait_port "$prefix.serve.log")
    taskset -c "$measured_cpu" timeout -s KILL "$process_seconds_max" "${wrap[@]}" "$b/tools/ringmux-loadgen" \
      "${loadgen_args[@]}" --port="$port" --cpus_allowed="$measured_cpu" >"$prefix.loadgen.json" 2>"$prefix.err" 9>&- || true
  else
    local preload=()
    [ "$tool" = callgrind ] && [ "$engine" = ringmux ] && preload=(env LD_PRELOAD="$PWD/$out/valgrind_wait.so")
    taskset -c "$measured_cpu" timeout -s KILL "$process_seconds_max" "${preload[@]}" "${wrap[@]}" \
      "$b/tools/ringmux-serve" "${serve_args[@]}" --cpus="$measured_cpu" >"$prefix.serve.log" 2>"$prefix.err" 9>&- &
    serve_pid=$!
    pids+=("$serve_pid")
    port=$(wait_port "$prefix.serve.log")
    taskset -c "$other_cpu" timeout -s KILL "$process_seconds_max" "$b/tools/ringmux-loadgen" \
      "${loadgen_args[@]}" --port="$port" --cpus_allowed="$other_cpu" >"$prefix.loadgen.json" 2>>"$prefix.err" 9>&- || true
  fi
  kill -INT "$(leaf_of "$serve_pid")" 2>/dev/null || true
  wait "$serve_pid" || true
  pids=()
  flock -u 9
  # The tcp engine's client sends a new request for each response until it has sent its
  # size, so it may finish a few more calls than asked (fewer than in flight).
  done_calls=$(calls_done "$prefix.loadgen.json")
  if [ "$done_calls" = failed ] || [ "$done_calls" -lt "$calls" ] || [ "$done_calls" -ge $((calls + depth + 1)) ]; then
    echo "callgrind: $prefix: $done_calls calls done of $calls" >&2
    exit 1
  fi
}

# syscalls FILE: the calls strace -c counted, without clock_nanosleep (ringmux-serve's main
# thread sleeps 20 ms at a time while it waits for a signal: a count per second, not per call).
syscalls() {
  awk '$NF == "total" {total = $(NF-2)} $NF == "clock_nanosleep" {sleeps = $4} END {print total - sleeps}' "$1"
}

: >"$out/runs.txt"
for tree in "${trees[@]}"; do
  read -r label b <<<"$tree"
  for side in client server; do
    for engine in ringmux tcp; do
      for spec in "${specs[@]}"; do
        read -r bs depth calls1 calls2 pairs <<<"$spec"
        [ "$engine" = ringmux ] || pairs=1
        name=$label.$side.$engine.$bs
        fields=()
        for calls in "$calls1" "$calls2"; do
          measure "$b" "$side" "$engine" "$bs" "$depth" "$calls" strace "$out/$name.$calls.s"
          fields+=("$done_calls" "$(syscalls "$out/$name.$calls.s.strace")")
        done
        fields+=("$pairs")
        for pair in $(seq 1 "$pairs"); do
          for calls in "$calls1" "$calls2"; do
            run=$out/$name.$calls.r$pair
            measure "$b" "$side" "$engine" "$bs" "$depth" "$calls" callgrind "$run"
            skip_main=$([ "$side" = server ] && echo 1 || echo 0)
            python3 perf/callgrind_split.py profile "$run.profile.json" "$skip_main" "$run".out-*
            fields+=("$done_calls")
          done
        done
        # name tree side engine bs depth calls1 calls2; calls done and system calls of the
        # two strace runs; pairs; calls done in each callgrind run
        echo "$name $label $side $engine $bs $depth $calls1 $calls2 ${fields[*]}" >>"$out/runs.txt"
        echo "callgrind: $name done" >&2
      done
    done
  done
done
python3 perf/callgrind_split.py table "$out"

# What a copy and a checksum of a block count for, by block size (rounds of 1 MiB).
calibrate_blocks=(4096 32768 1048576)
for block in "${calibrate_blocks[@]}"; do
  for rounds in 10 30; do
    flock 9
    timeout -s KILL "$process_seconds_max" valgrind --tool=callgrind \
      --callgrind-out-file="$out/calibrate.$block.$rounds.out" "$out/callgrind_calibrate" "$block" "$rounds" \
      >/dev/null 2>"$out/calibrate.$block.$rounds.err" 9>&-
    flock -u 9
  done
done
python3 perf/callgrind_split.py calibrate "$out" 10 30 "${calibrate_blocks[@]}"
