#!/usr/bin/env bash
# Fails when a layer breaks the layer tree (DESIGN.md, README "Architecture"):
#  1. the sans-I/O layers (base/, wire/, replay/, mux/session/) and the slot ring must not
#     include liburing or socket headers, nor call socket functions;
#  2. a layer includes only layers below it:
#       base < engine < wire < replay < mux/session < mux/link < mux/rpc < mux/workers < mux/client < cluster
#     (wire, replay and mux/session are sans-I/O: they may not include engine/ either).
# usage: check_layering.sh SOURCE_ROOT [PATH...]   (directories or files relative to
#        SOURCE_ROOT for rule 1; default: the sans-I/O layers). Rule 2 runs on the whole
#        tree when no PATH is given.
set -u
root=${1:?usage: check_layering.sh SOURCE_ROOT [DIR...]}
shift
dirs=("$@")
whole_tree=0
[ ${#dirs[@]} -gt 0 ] || { dirs=(base wire replay mux/session mux/workers/slot_ring.h); whole_tree=1; }
include_re='^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"](liburing(\.h|/[^>"]*)|sys/socket\.h|sys/epoll\.h|sys/uio\.h|netinet/[^>"]*|arpa/inet\.h|unistd\.h|fcntl\.h|poll\.h)[>"]'
names='io_uring_[a-z_]+|socket|accept4?|connect|bind|listen|sendmsg|recvmsg|sendto|recvfrom|send|recv|read|write|close|poll|epoll_wait|setsockopt'
# A call, not a declaration or a member of ours: at the start of a statement or after an
# operator (optionally after "return"), or qualified with a bare "::" (the C library's).
call_re="((^|[=(,!&|?;{}])[[:space:]]*(return[[:space:]]+)?($names)[[:space:]]*\\(|(^|[^A-Za-z0-9_:])::($names)[[:space:]]*\\()"
status=0
checked=0
for dir in "${dirs[@]}"; do
  [ -e "$root/$dir" ] || continue
  while IFS= read -r -d '' file; do
    checked=$((checked + 1))
    # Strip // comments before looking for calls, so prose can name the functions.
    if hits=$(grep -nE "$include_re" "$file"); then
      echo "layering: $file includes a kernel I/O header:"; echo "$hits"; status=1
    fi
    if hits=$(sed -e 's#//.*$##' "$file" | grep -nE "$call_re"); then
      echo "layering: $file calls an I/O function:"; echo "$hits"; status=1
    fi
  done < <(find "$root/$dir" -type f \( -name '*.h' -o -name '*.cpp' -o -name '*.hpp' -o -name '*.cc' \) -print0)
done
echo "layering: checked $checked files in ${dirs[*]}"

# Rule 2: includes point down the tree only ("engine/loop.h" and "ringmux/engine/loop.h"
# name the same layer).
if [ "$whole_tree" = 1 ]; then
  order=(base engine wire replay mux/session mux/link mux/rpc mux/workers mux/client cluster)
  sans_io=" wire replay mux/session "
  layer_of() {  # layer_of PATH: the layer a source path or include belongs to ("" if none)
    local layer best=""
    for layer in "${order[@]}"; do
      case "$1" in "$layer"/*) best=$layer ;; esac
    done
    echo "$best"
  }
  rank_of() {
    local i
    for i in "${!order[@]}"; do [ "${order[$i]}" = "$1" ] && echo "$i" && return; done
  }
  edges=0
  for layer in "${order[@]}"; do
    [ -d "$root/$layer" ] || continue
    while IFS= read -r -d '' file; do
      rel=${file#"$root"/}
      own=$(layer_of "$rel")
      [ "$own" = "$layer" ] || continue  # a file of a deeper layer (mux/ holds four)
      own_rank=$(rank_of "$own")
      while IFS= read -r included; do
        target=$(layer_of "$included")
        [ -n "$target" ] || continue
        edges=$((edges + 1))
        target_rank=$(rank_of "$target")
        if [ "$target_rank" -gt "$own_rank" ]; then
          echo "layering: $rel ($own) includes $included, a layer above it"; status=1
        elif [ "$target" = engine ] && [[ "$sans_io" == *" $own "* ]]; then
          echo "layering: $rel ($own, sans-I/O) includes $included (engine/)"; status=1
        fi
      done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\(ringmux\/\)\{0,1\}\([^"]*\)".*/\2/p' "$file")
    done < <(find "$root/$layer" -type f \( -name '*.h' -o -name '*.cpp' \) -print0)
  done
  echo "layering: checked $edges includes between layers"
  [ "$edges" -gt 0 ] || { echo "layering: no includes between layers found"; status=1; }
fi
# A check that looked at nothing proves nothing.
[ "$checked" -gt 0 ] || { echo "layering: no source files found"; status=1; }
exit $status
