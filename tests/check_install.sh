#!/usr/bin/env bash
# Installs the build into a scratch DESTDIR (relocated, as a user who installed under
# another prefix would have it) and builds programs against it as users do:
#  - ringmux.pc: Cflags name only the prefix's include directory, Libs.private names no
#    library by path; every installed header compiles with an application's own tree of
#    same-named headers (engine/errors.h, base/assert.h, ...) ahead of it on the include
#    path, each of which fails the build if a ringmux header reaches for it;
#  - the README's examples (tests/install/*.cpp: the application-thread client, and calls
#    on one loop) and tests/consumers/app, with nothing but
#    `pkg-config --cflags --libs ringmux`, run; the application again with ringmux-mimalloc;
#  - the same application with CMake: find_package(ringmux CONFIG) and ringmux::ringmux /
#    ringmux::mimalloc, and the version file refusing the next minor version; the README's
#    client example with ringmux::ringmux and -Werror;
#  - the man pages, in section 1.
# usage: check_install.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$(cd "${1:?build dir}" && pwd)
source=$(cd "${2:?source dir}" && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
meson install -C "$build" --no-rebuild --quiet --destdir "$stage" >/dev/null
pc=$(find "$stage" -name ringmux.pc | head -n 1)
[ -n "$pc" ] || { echo "install: no ringmux.pc installed"; exit 1; }
prefix=$stage$(sed -n 's/^prefix=//p' "$pc")
export PKG_CONFIG_PATH=$(dirname "$pc")
pkgconfig() { pkg-config --define-variable=prefix="$prefix" "$@"; }
flags=$(pkgconfig --cflags --libs ringmux)
echo "install: pkg-config ringmux -> $flags"
[ -f "$prefix/include/ringmux/engine/loop.h" ] || { echo "install: headers missing"; exit 1; }
[ -f "$prefix/include/ringmux/version.h" ] || { echo "install: <ringmux/version.h> missing"; exit 1; }
includedir=$(pkgconfig --variable=includedir ringmux)
if [ "$(pkgconfig --cflags-only-I ringmux | xargs)" != "-I$includedir" ]; then
  echo "install: ringmux.pc Cflags must name only -I$includedir: $(pkgconfig --cflags-only-I ringmux)"; exit 1
fi
private=$(sed -n 's/^Libs.private: *//p' "$pc")
if [[ "$private" == */* || "$private" == *mimalloc* ]]; then
  echo "install: ringmux.pc Libs.private names a path or mimalloc: $private"; exit 1
fi
echo "install: ringmux.pc Libs.private: $private"
# ringmux-mimalloc.pc is there unless the build was configured with -Dmimalloc=disabled.
with_mimalloc=0
if pkgconfig --exists ringmux-mimalloc; then
  with_mimalloc=1
  echo "install: ringmux-mimalloc.pc: $(pkgconfig --libs ringmux-mimalloc)"
fi

# An application tree holding a header of every installed name, each an #error.
poison=$stage/poison
headers=()
while IFS= read -r header; do
  relative=${header#"$prefix/include/ringmux/"}
  mkdir -p "$poison/$(dirname "$relative")"
  printf '#error "an installed ringmux header included the application'"'"'s %s"\n' "$relative" >"$poison/$relative"
  headers+=("#include <ringmux/$relative>")
done < <(find "$prefix/include/ringmux" -name '*.h' | sort)
printf '%s\n' "${headers[@]}" >"$stage/all_headers.cpp"
${CXX:-c++} -std=c++20 -fsyntax-only -iquote "$poison" -I "$poison" $(pkgconfig --cflags ringmux) "$stage/all_headers.cpp"
echo "install: ${#headers[@]} installed headers compile with the application's same-named headers ahead of them"

libdir=$(pkgconfig --variable=libdir ringmux)
version=$(pkgconfig --modversion ringmux)
# The README's examples (tests/check_readme_example.sh holds the README to these files):
# the application-thread client, and a unary call and a stream on one loop; built the same
# way, and run.
for example in "$source"/tests/install/*.cpp; do
  name=$(basename "$example" .cpp)
  ${CXX:-c++} -std=c++20 "$example" $flags -o "$stage/$name"
  echo "install: README example $name, built with pkg-config ringmux, runs:"
  LD_LIBRARY_PATH="$libdir" "$stage/$name"
done

# The application, with pkg-config: plain, then with the mimalloc opt-in.
app=$source/tests/consumers/app
echo "install: tests/consumers/app with pkg-config ringmux, then ringmux-mimalloc:"
${CXX:-c++} -std=c++20 -I "$app" "$app/main.cpp" -DEXPECTED_VERSION="\"$version\"" $flags -o "$stage/app"
LD_LIBRARY_PATH="$libdir" "$stage/app"
if [ "$with_mimalloc" = 1 ]; then
  ${CXX:-c++} -std=c++20 -I "$app" "$app/main.cpp" -DEXPECTED_VERSION="\"$version\"" -DEXPECT_MIMALLOC=1 \
    $(pkgconfig --cflags --libs ringmux-mimalloc) -o "$stage/app_mimalloc"
  LD_LIBRARY_PATH="$libdir" "$stage/app_mimalloc"
fi

# The application, with CMake.
cmake_source=$stage/cmake_consumer
mkdir -p "$cmake_source"
cp "$source/tests/consumers/cmake/CMakeLists.txt" "$app/main.cpp" "$source/tests/install/client_example.cpp" \
  "$cmake_source/"
cp -r "$app/engine" "$cmake_source/"
IFS=. read -r major minor _ <<<"$version"
if ! cmake -S "$cmake_source" -B "$stage/cmake_build" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" \
    -DEXPECTED_MAJOR="$major" -DEXPECTED_MINOR="$minor" -DNEXT_MINOR=$((minor + 1)) >"$stage/cmake.log" 2>&1; then
  cat "$stage/cmake.log"; exit 1
fi
grep -- '-- ringmux ' "$stage/cmake.log" | sed 's/^-- /install: cmake: /'
echo "install: tests/consumers/app with CMake, ringmux::ringmux then ringmux::mimalloc:"
cmake --build "$stage/cmake_build" >"$stage/cmake_build.log" 2>&1 || { cat "$stage/cmake_build.log"; exit 1; }
LD_LIBRARY_PATH="$libdir" "$stage/cmake_build/consumer"
LD_LIBRARY_PATH="$libdir" "$stage/cmake_build/consumer_mimalloc"
echo "install: the README's client example with CMake (ringmux::ringmux, -Wall -Wextra -Werror):"
LD_LIBRARY_PATH="$libdir" "$stage/cmake_build/client_example"

# The man pages, where the tools are installed.
if [ -e "$prefix/bin/ringmux-serve" ]; then
  for tool in ringmux-serve ringmux-loadgen ringmux-chaos ringmux-echo; do
    [ -f "$prefix/share/man/man1/$tool.1" ] || { echo "install: no man page for $tool"; exit 1; }
  done
  echo "install: man pages in $(basename "$prefix")/share/man/man1: $(ls "$prefix/share/man/man1" | xargs)"
fi
