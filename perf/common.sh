# Shared by the perf scripts (sourced, not run): the release build, the output directory,
# and the background processes a script starts (stopped with SIGINT on exit).
#   perf_setup NAME BUILD_DIR   builds BUILD_DIR (configured as release when new) and sets
#                               $build, $tools and $out (perf/out/NAME, emptied)
#   perf_setup_more BUILD_DIR   builds the tools of another build dir (a baseline)
#   background CMD...           runs CMD in the background; cleanup stops it
#   free_ports N                N ports the kernel hands out now (closed again: a small race)
#   port_of LOGFILE PATTERN     the port a background tool (started on port 0) names in
#                               its first output line, as PATTERN's \(group\) (waits up to 10 s)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

perf_setup() {
  out=perf/out/$1
  build=$2
  [ -f "$build/build.ninja" ] || meson setup "$build" --buildtype=release >/dev/null
  ninja -C "$build" >/dev/null
  tools="$build/tools"
  rm -rf "$out" && mkdir -p "$out"
}
# perf_setup_more BUILD_DIR: builds the tools of a second build dir (a baseline build).
perf_setup_more() {
  [ -f "$1/build.ninja" ] || meson setup "$1" --buildtype=release >/dev/null
  ninja -C "$1" tools/ringmux-serve tools/ringmux-loadgen >/dev/null
}

pids=()
background() {
  "$@" &
  pids+=($!)
}
cleanup() {
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}
trap cleanup EXIT

free_ports() {
  python3 -c "import socket,sys
s=[socket.socket() for _ in range(int(sys.argv[1]))]
[x.bind(('127.0.0.1',0)) for x in s]
print(' '.join(str(x.getsockname()[1]) for x in s))" "$1"
}

port_of() {
  for _ in $(seq 1 200); do
    if [ -s "$1" ]; then
      sed -n "s/.*$2.*/\1/p" "$1" | head -1
      return
    fi
    sleep 0.05
  done
  echo "no port in $1" >&2
  exit 1
}
