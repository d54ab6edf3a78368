#!/usr/bin/env bash
# Instructions per unary call, counted by callgrind (repeatable; load does not change them):
# ringmux-loadgen with its embedded server (client and server in one process), 64 calls in
# flight, run for N1 and then N2 calls; (Ir(N2) - Ir(N1)) / (N2 - N1) is the cost of one
# call, both sides, without start-up. For 64 B, 4 KiB and 1 MiB requests (responses of
# the same size), on the ringmux engine and on the tcp engine (a raw pipelined baseline:
# length-prefixed messages, no multiplexing). OTHER_LOADGEN (optional): another build's
# ringmux-loadgen, measured the same way on the ringmux engine (before/after).
# usage: perf/percall.sh [BUILD_DIR] [OTHER_LOADGEN]
source "$(dirname "$0")/common.sh"
perf_setup percall "${1:-build}"
other=${2:-}
command -v valgrind >/dev/null || { echo "percall: valgrind is not installed" >&2; exit 2; }

instructions() {  # instructions LOADGEN ENGINE BS CALLS: total Ir of one run
  local file="$out/cg.$$.$RANDOM"
  valgrind --tool=callgrind --callgrind-out-file="$file" "$1" --ioengine="$2" --name=percall --rw=unary \
    --bs="$3" --iodepth=64 --size=$(($3 * $4)) --output-format=json >/dev/null 2>"$file.log" ||
    { echo "percall: $1 failed, see $file.log" >&2; exit 1; }
  sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$file"
  rm -f "$file"
}

per_call() {  # per_call LOADGEN ENGINE BS N1 N2
  local a b
  a=$(instructions "$1" "$2" "$3" "$4")
  b=$(instructions "$1" "$2" "$3" "$5")
  echo $(((b - a) / ($5 - $4)))
}

echo "| request = response | ringmux (Ir/call) | tcp (Ir/call) | ringmux / tcp |${other:+ other build (Ir/call) |}"
echo "|---|---|---|---|${other:+---|}"
for spec in "64 2000 6000" "4096 2000 6000" "1048576 20 60"; do
  read -r bs n1 n2 <<<"$spec"
  r=$(per_call "$tools/ringmux-loadgen" ringmux "$bs" "$n1" "$n2")
  t=$(per_call "$tools/ringmux-loadgen" tcp "$bs" "$n1" "$n2")
  line="| $bs B | $r | $t | $(python3 -c "print(f'{$r / $t:.2f}')") |"
  if [ -n "$other" ]; then line+=" $(per_call "$other" ringmux "$bs" "$n1" "$n2") |"; fi
  echo "$line"
done
