#!/usr/bin/env bash
# Rewrites every project include of a library header from the source root's form to the
# installed form, in every C++ file git tracks under SOURCE_ROOT:
#   #include "engine/loop.h"   ->   #include "ringmux/engine/loop.h"
# for the layers base, engine, wire, replay, mux and cluster. Inside the tree include/ringmux
# maps ringmux/ onto those directories (include/ringmux/meson.build); installed, the headers
# sit under <includedir>/ringmux: in both, a header reaches the others under the ringmux/
# prefix, whatever an application's include path holds (its own engine/errors.h, say).
# Idempotent: includes already under ringmux/, and those of tools/ and tests/ headers, are
# left as they are, and so is tests/consumers/, an application whose engine/errors.h is its
# own. Prints how many files it changed.
# usage: tools/rewrite_includes.sh [SOURCE_ROOT]   (default: this script's tree)
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"
pattern='^([[:space:]]*#[[:space:]]*include[[:space:]]*")((base|engine|wire|replay|mux|cluster)/[^"]*")'
changed=0
# git ls-files lists no file behind include/ringmux's links, so each file is rewritten once.
while IFS= read -r -d '' file; do
  sed -i -E "s@$pattern@\\1ringmux/\\2@" "$file"
  changed=$((changed + 1))
done < <(git ls-files -z -- '*.h' '*.hpp' '*.cpp' '*.cc' '*.in' ':(exclude)tests/consumers/**' |
  xargs -0r grep -lZE "$pattern" --)
echo "rewrite_includes: $changed files rewritten"
