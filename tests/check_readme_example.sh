#!/usr/bin/env bash
# Fails when an example in the README differs from the file it names, or when a file of
# tests/install/ (each built against the installed package and run by the install test)
# has no example block: so the README's code compiles and runs. A block is
#   <!-- example: tests/install/NAME.cpp -->
#   ```cpp
#   ...the file, verbatim...
#   ```
#   <!-- /example -->
set -euo pipefail
root=${1:?usage: check_readme_example.sh SOURCE_ROOT}
readme=$root/README.md
status=0
shown=()
while IFS= read -r path; do
  shown+=("$path")
  block=$(awk -v marker="<!-- example: $path -->" '
    $0 == marker { inside = 1; next }
    inside && $0 == "<!-- /example -->" { exit }
    inside { print }' "$readme" | sed '1d;$d')
  if [ -z "$block" ]; then
    echo "readme: the example block of $path is empty"; status=1; continue
  fi
  if [ ! -f "$root/$path" ]; then
    echo "readme: the example names $path, which does not exist"; status=1; continue
  fi
  if ! diff <(printf '%s\n' "$block") "$root/$path" >/dev/null; then
    echo "readme: the example differs from $path:"
    diff <(printf '%s\n' "$block") "$root/$path" | head -20
    status=1
    continue
  fi
  echo "readme: example matches $path ($(printf '%s\n' "$block" | wc -l) lines)"
done < <(sed -n 's/^<!-- example: \(.*\) -->$/\1/p' "$readme")
[ ${#shown[@]} -gt 0 ] || { echo "readme: no example block found"; exit 1; }
for file in "$root"/tests/install/*.cpp; do
  path=${file#"$root"/}
  if [[ " ${shown[*]} " != *" $path "* ]]; then
    echo "readme: $path is built by the install test but shown nowhere in the README"; status=1
  fi
done
exit $status
