#!/usr/bin/env bash
# Fails when the README's API example differs from tests/install/example.cpp, which the
# install test builds against the installed package and runs: the README's code compiles.
set -euo pipefail
root=${1:?usage: check_readme_example.sh SOURCE_ROOT}
block=$(sed -n '/<!-- example: tests\/install\/example.cpp -->/,/<!-- \/example -->/p' "$root/README.md" |
  sed '1d;$d' | sed '1d;$d')
[ -n "$block" ] || { echo "readme: no example block found"; exit 1; }
if ! diff <(printf '%s\n' "$block") "$root/tests/install/example.cpp" >/dev/null; then
  echo "readme: the example differs from tests/install/example.cpp:"
  diff <(printf '%s\n' "$block") "$root/tests/install/example.cpp" | head -20
  exit 1
fi
echo "readme: example matches tests/install/example.cpp ($(printf '%s\n' "$block" | wc -l) lines)"
