#!/usr/bin/env bash
# The perf harness of the foundation: wire micro-benchmarks and the engine echo benchmark
# against the blocking-socket baseline, interleaved in one invocation, with the engine's
# default busy-poll budget and with busy-polling off. Figures go to perf/RESULTS.md by hand,
# with this command. Takes about 3 minutes. The mux layer's workloads (W1-W5) are
# measured by perf/workloads.sh with ringmux-loadgen.
# usage: perf/run.sh [BUILD_DIR]   (default: build, configured as release)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
[ -f "$build/build.ninja" ] || meson setup "$build" --buildtype=release >/dev/null
ninja -C "$build" >/dev/null
out=perf/out
mkdir -p "$out"
echo "== machine"
echo "$(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo
echo "== wire micro-benchmarks (taskset -c 0)"
taskset -c 0 "$build/perf/bench_wire" --benchmark_min_time=0.2 --benchmark_out="$out/bench_wire.json" \
  --benchmark_out_format=json
echo
echo "== engine echo, default busy-poll (client CPU 0, server CPU 1, 3 A/B pairs x 2 s)"
"$build/tools/ringmux-echo" --runs=3 --seconds=2 2>&1 | tee "$out/echo_spin_default.txt"
echo
echo "== engine echo, busy-poll off (--spin-us=0)"
"$build/tools/ringmux-echo" --runs=3 --seconds=2 --spin-us=0 2>&1 | tee "$out/echo_spin_off.txt"
