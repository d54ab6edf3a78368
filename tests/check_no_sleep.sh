#!/usr/bin/env bash
# Fails when a file under the given paths calls a sleep: worker threads must wait for the
# loop in the kernel on a futex (engine/wake_word.h), woken by the event, never in sleep
# slices or timed polls (issue 13: "no sleep polling").
# usage: check_no_sleep.sh SOURCE_ROOT PATH...   (directories or files relative to SOURCE_ROOT)
set -u
root=${1:?usage: check_no_sleep.sh SOURCE_ROOT PATH...}
shift
[ $# -gt 0 ] || { echo "check_no_sleep: no path given" >&2; exit 2; }
# The C library's sleep(), bare or as ::sleep, not a member function of that name.
sleep_re='(sleep_for|sleep_until|usleep|nanosleep|clock_nanosleep|this_thread::yield|sched_yield|(^|[^A-Za-z0-9_.>:])(::)?sleep)[[:space:]]*\('
status=0
checked=0
for path in "$@"; do
  [ -e "$root/$path" ] || { echo "check_no_sleep: $root/$path does not exist" >&2; exit 2; }
  while IFS= read -r -d '' file; do
    checked=$((checked + 1))
    # Comments may name the calls they rule out.
    if hits=$(sed -e 's#//.*$##' "$file" | grep -nE "$sleep_re"); then
      echo "check_no_sleep: $file sleeps:"; echo "$hits"; status=1
    fi
  done < <(find "$root/$path" -type f \( -name '*.h' -o -name '*.cpp' \) -print0)
done
echo "check_no_sleep: checked $checked files"
exit $status
