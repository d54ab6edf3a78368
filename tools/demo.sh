#!/usr/bin/env bash
# The main job: installs what is needed, builds ringmux (release) and runs the load
# generator against its embedded server over 127.0.0.1, each workload with the ringmux
# engine and then with the raw blocking-socket baseline (ioengine=tcp), and finally the
# engine echo demo. Prints what it measured.
# usage: tools/demo.sh [SECONDS]   (default 2 per run)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-2}
tools/install-deps.sh
if [ -f build/build.ninja ]; then
  meson setup --reconfigure build >/dev/null
else
  meson setup build --buildtype=release >/dev/null
fi
ninja -C build >/dev/null
loadgen=build/tools/ringmux-loadgen
for workload in "W1 unary ping-pong, 64 B:--rw=unary --bs=64 --iodepth=1" \
                "W2 unary, 64 in flight, 64 B:--rw=unary --bs=64 --iodepth=64" \
                "W3 bulk stream, 64 KiB writes:--rw=write --bs=64k"; do
  title=${workload%%:*}
  args=${workload#*:}
  for engine in ringmux tcp; do
    echo "== $title, ioengine=$engine"
    # shellcheck disable=SC2086 # the job options are words on purpose
    "$loadgen" --runtime="$seconds" --ramp_time=0.5 --ioengine="$engine" --name="$engine" $args |
      grep -E "ops=|50.00th|confirmed|errors" |
      sed -E 's/lat percentiles \(usec\):.* 50\.00th=([0-9.]+).* 99\.00th=([0-9.]+).* 99\.90th=([0-9.]+).*/  latency (usec): p50=\1 p99=\2 p99.9=\3/'
  done
done
echo "== engine echo (ringmux loops vs blocking sockets)"
exec build/tools/ringmux-echo --runs=1 --seconds="$seconds"
