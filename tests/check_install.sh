#!/usr/bin/env bash
# Installs the build into a scratch DESTDIR and builds tests/install/consumer.cpp against
# it with nothing but `pkg-config --cflags --libs ringmux`, then runs it.
# usage: check_install.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$(cd "${1:?build dir}" && pwd)
source=$(cd "${2:?source dir}" && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
meson install -C "$build" --no-rebuild --quiet --destdir "$stage" >/dev/null
pc=$(find "$stage" -name ringmux.pc | head -n 1)
[ -n "$pc" ] || { echo "install: no ringmux.pc installed"; exit 1; }
prefix=$(sed -n 's/^prefix=//p' "$pc")
export PKG_CONFIG_PATH=$(dirname "$pc")
# Relocate the staged prefix, as a user who installed under another prefix would.
flags=$(pkg-config --define-variable=prefix="$stage$prefix" --cflags --libs ringmux)
echo "install: pkg-config ringmux -> $flags"
[ -f "$stage$prefix/include/ringmux/engine/loop.h" ] || { echo "install: headers missing"; exit 1; }
${CXX:-c++} -std=c++20 "$source/tests/install/consumer.cpp" $flags -o "$stage/consumer"
libdir=$(pkg-config --define-variable=prefix="$stage$prefix" --variable=libdir ringmux)
LD_LIBRARY_PATH="$libdir" "$stage/consumer"
# The README's example: a unary call and a stream, built the same way.
${CXX:-c++} -std=c++20 "$source/tests/install/example.cpp" $flags -o "$stage/example"
LD_LIBRARY_PATH="$libdir" "$stage/example"
