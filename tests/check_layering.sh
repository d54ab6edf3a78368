#!/usr/bin/env bash
# Fails when a sans-I/O layer touches the kernel: wire/, replay/ and the state machines
# of mux/ must not include liburing or socket headers, nor call socket functions.
# usage: check_layering.sh SOURCE_ROOT [PATH...]   (directories or files relative to
#        SOURCE_ROOT; default: wire replay and mux's session, stream, flow, slot ring)
set -u
root=${1:?usage: check_layering.sh SOURCE_ROOT [DIR...]}
shift
dirs=("$@")
[ ${#dirs[@]} -gt 0 ] || dirs=(wire replay mux/session.h mux/session.cpp mux/stream_state.h mux/stream_state.cpp
  mux/flow.h mux/slot_ring.h mux/errors.h mux/errors.cpp)
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
# A check that looked at nothing proves nothing.
[ "$checked" -gt 0 ] || { echo "layering: no source files found"; status=1; }
exit $status
