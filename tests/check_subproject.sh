#!/usr/bin/env bash
# Builds tests/consumers/meson, a parent project that takes this tree as its meson
# subproject through dependency('ringmux') (meson.override_dependency), with the
# application's own engine/errors.h on its include path, and runs its two programs: plain
# ringmux (the application's malloc stays the C library's) and ringmux-mimalloc (malloc
# becomes mimalloc's). Only the library is built in the subproject (no tools, no tests),
# unoptimised and without debug information to keep the test short.
# usage: check_subproject.sh SOURCE_DIR
set -euo pipefail
source=$(cd "${1:?source dir}" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/consumer/subprojects"
cp "$source/tests/consumers/meson/meson.build" "$source/tests/consumers/app/main.cpp" "$work/consumer/"
cp -r "$source/tests/consumers/app/engine" "$work/consumer/"
ln -s "$source" "$work/consumer/subprojects/ringmux"
if ! meson setup "$work/build" "$work/consumer" --buildtype=plain --force-fallback-for=ringmux \
    >"$work/setup.log" 2>&1; then
  cat "$work/setup.log"
  exit 1
fi
grep -E "^Subproject ringmux|Dependency ringmux" "$work/setup.log" | sed 's/^/subproject: /'
ninja -C "$work/build" consumer consumer_mimalloc >"$work/build.log" 2>&1 || { tail -40 "$work/build.log"; exit 1; }
status=0
for program in consumer consumer_mimalloc; do
  "$work/build/$program" || status=$?
  [ "$status" -eq 0 ] || break
done
exit "$status"
