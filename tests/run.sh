#!/usr/bin/env bash
# Builds and runs ringmux's tests in one configuration.
# usage: tests/run.sh [normal|asan|tsan|fuzz [SECONDS]]
#   normal  release build with -Werror (the default), every test
#   asan    AddressSanitizer + UndefinedBehaviorSanitizer build, every test
#   tsan    ThreadSanitizer build, the tests that cross threads (engine posting, slot ring,
#           application threads calling into connections, the application-thread client,
#           the chaos proxy's controls)
#   fuzz    clang + libFuzzer: the wire decoder for SECONDS (default 60) over the seed corpus
# Prints "N passed, M failed, K skipped" last and exits non-zero on any failure. The counts
# also go to build-MODE/counts for .ci/run.
set -uo pipefail
mode=${1:-normal}
cd "$(dirname "$0")/.."
root=$(pwd)
jobs=$(nproc)
dir="build-$mode"
[ "$mode" = normal ] && dir=build

setup() {  # setup DIR ARGS...: configure once, reconfigure quietly afterwards
  local d=$1
  shift
  if [ -f "$d/build.ninja" ]; then
    meson setup --reconfigure "$d" "$@" >"$d/setup.log" 2>&1 || { cat "$d/setup.log"; return 1; }
  else
    mkdir -p "$d"
    meson setup "$d" "$@" >"$d/setup.log" 2>&1 || { cat "$d/setup.log"; return 1; }
  fi
}

report() {  # report DIR: count the last meson test run
  python3 "$root/tests/count_results.py" "$1/meson-logs/testlog.json" "$1/counts"
}

# The sanitizer builds: -O1 with line tables only (-g1, after meson's -g) compiles in half
# the time of -O2 -g, and the reports still name file, line and function. debugoptimized
# keeps the asserts on; meson applies a changed optimization level on reconfigure.
sanitizer_build="-Dbuildtype=debugoptimized -Doptimization=1"
sanitizer_flags="'-g1'"

fail_build() {
  echo "0 passed, 1 failed, 0 skipped"
  mkdir -p "$dir" && echo "0 1 0" >"$dir/counts"
  exit 1
}

case "$mode" in
  normal)
    setup "$dir" -Dwerror=true -Dbuildtype=release || fail_build
    ninja -C "$dir" -j "$jobs" || fail_build
    meson test -C "$dir" --print-errorlogs --num-processes 1
    status=$?
    report "$dir"
    exit $status
    ;;
  asan)
    # mimalloc off: ASan must see (and check) every allocation.
    setup "$dir" -Dwerror=true $sanitizer_build -Db_sanitize=address,undefined -Db_lundef=false \
      -Dmimalloc=disabled -Dbenchmarks=disabled "-Dcpp_args=[$sanitizer_flags,'-fno-sanitize-recover=all']" || fail_build
    ninja -C "$dir" -j "$jobs" || fail_build
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      meson test -C "$dir" --print-errorlogs --num-processes 1 --timeout-multiplier 3
    status=$?
    report "$dir"
    exit $status
    ;;
  tsan)
    setup "$dir" -Dwerror=true $sanitizer_build -Db_sanitize=thread -Db_lundef=false \
      -Dmimalloc=disabled -Dbenchmarks=disabled "-Dcpp_args=[$sanitizer_flags]" || fail_build
    ninja -C "$dir" -j "$jobs" tests/engine_tests tests/mux_tests tests/tools_tests || fail_build
    # The cross-thread paths: posting into loops, engine start/stop, the SPSC slot ring,
    # application threads (unary calls, worker streams, mux::Client), the worker pool and the
    # blocking handlers on it, the chaos proxy's thread and its runtime controls, a multi-loop
    # server's hand-over of sessions and resumes between its loops and its per-loop counters,
    # loadgen's client loops (per-core, cross-loop).
    TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
      meson test -C "$dir" --no-rebuild --print-errorlogs --num-processes 1 --timeout-multiplier 3 \
      --test-args='--test-case=*tasks*posted*,engine:*,slot*ring*,threaded:*,worker*stream*,worker*pool*,blocking*handler*,client:*,chaos*,per-core*,cross-loop*' engine mux tools
    status=$?
    report "$dir"
    exit $status
    ;;
  fuzz)
    seconds=${2:-60}
    CXX=clang++ CC=clang setup "$dir" -Dfuzz=true -Dbuildtype=debugoptimized -Dmimalloc=disabled \
      -Dbenchmarks=disabled || fail_build
    ninja -C "$dir" -j "$jobs" tests/fuzz/fuzz_decoder || fail_build
    corpus=$(mktemp -d)
    cp "$root"/tests/fuzz/corpus/decoder/* "$corpus"/
    log="$dir/fuzz.log"
    "$dir/tests/fuzz/fuzz_decoder" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$dir/" \
      "$corpus" "$root/tests/fuzz/corpus/decoder" >"$log" 2>&1
    status=$?
    rm -rf "$corpus"
    grep -E 'stat::number_of_executed_units|Done [0-9]+ runs' "$log" | tail -2
    if [ $status -eq 0 ]; then
      echo "1 passed, 0 failed, 0 skipped"; echo "1 0 0" >"$dir/counts"
    else
      tail -40 "$log"
      echo "0 passed, 1 failed, 0 skipped"; echo "0 1 0" >"$dir/counts"
    fi
    exit $status
    ;;
  *)
    echo "usage: tests/run.sh [normal|asan|tsan|fuzz [SECONDS]]" >&2
    exit 2
    ;;
esac
