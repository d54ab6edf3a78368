#!/usr/bin/env bash
# The main job: installs what is needed, builds ringmux (release) and runs the engine
# echo demo over 127.0.0.1, ringmux against blocking sockets, printing what it measured.
# usage: tools/demo.sh [ringmux-echo options]   (default: --runs=1 --seconds=2)
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
if [ -f build/build.ninja ]; then
  meson setup --reconfigure build >/dev/null
else
  meson setup build --buildtype=release >/dev/null
fi
ninja -C build >/dev/null
[ $# -gt 0 ] || set -- --runs=1 --seconds=2
exec build/tools/ringmux-echo "$@"
