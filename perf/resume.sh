#!/usr/bin/env bash
# W6 of shared/WORKLOADS.md: W3 (one stream of 64 KiB writes) while the connection is reset
# every 100 ms by ringmux-chaos, with verify=1 (every message stamped and hashed end to end:
# lost and duplicated messages are counted, and the server confirms the bytes it received).
# In the same invocation, interleaved A B C per run:
#   A  W3 direct (loadgen -> ringmux-serve), no proxy, no verify: the plain W3 figure;
#   B  W3 through ringmux-chaos with no fault, verify=1: the same path as C, undisturbed;
#   C  W6: through ringmux-chaos --reset-every=100ms, verify=1.
# ringmux-serve is pinned to CPU 1, the loadgen to CPU 0, the proxy (one thread, poll) to
# CPU 1 with the server. Prints a markdown table of medians; raw JSON in perf/out/resume/.
# usage: perf/resume.sh [BUILD_DIR] [RUNS] [SECONDS]   (build, 3, 5)
source "$(dirname "$0")/common.sh"
runs=${2:-3}
seconds=${3:-5}
perf_setup resume "${1:-build}"

background "$tools/ringmux-serve" --listen=127.0.0.1:0 --cpus=1 >"$out/serve.log" 2>&1
server_port=$(port_of "$out/serve.log" 'port \([0-9]*\)')
start_proxy() {  # start_proxy NAME FAULTS...: in this shell (its pid must reach cleanup)
  local name=$1
  shift
  background nice -n -10 taskset -c 1 "$tools/ringmux-chaos" --listen=127.0.0.1:0 \
    --upstream="127.0.0.1:$server_port" --seed=6 --stats=json "$@" >"$out/chaos.$name.log" 2>&1
}
start_proxy clean
start_proxy reset --reset-every=100ms
clean_port=$(port_of "$out/chaos.clean.log" 'listening on [0-9.]*:\([0-9]*\)')
reset_port=$(port_of "$out/chaos.reset.log" 'listening on [0-9.]*:\([0-9]*\)')

common=(--output-format=json --runtime="$seconds" --ramp_time=0.5 --cpus_allowed=0 --host=127.0.0.1
  --name=w3 --rw=write --bs=64k)
for run in $(seq 1 "$runs"); do
  "$tools/ringmux-loadgen" "${common[@]}" --port="$server_port" >"$out/A.$run.json"
  "$tools/ringmux-loadgen" "${common[@]}" --port="$clean_port" --verify=1 >"$out/B.$run.json"
  "$tools/ringmux-loadgen" "${common[@]}" --port="$reset_port" --verify=1 >"$out/C.$run.json"
  echo "run $run of $runs done" >&2
done
python3 - "$out" "$runs" <<'EOF'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
def job(name, run):
    with open(f"{out}/{name}.{run}.json") as f:
        return json.load(f)["jobs"][0]
def gib(j):
    return j["write"]["bw_bytes"] / 2**30
rows = {k: [job(k, r) for r in range(1, runs + 1)] for k in "ABC"}
med = {k: statistics.median(gib(j) for j in rows[k]) for k in "ABC"}
print("| run | A: W3 direct GiB/s | B: through proxy, no fault, verify GiB/s | C: W6 resets every 100 ms GiB/s | resumes | lost bytes | duplicated msgs | damaged msgs | resume p50 / p99 / max us |")
print("|---|---|---|---|---|---|---|---|---|")
for r in range(runs):
    a, b, c = rows["A"][r], rows["B"][r], rows["C"][r]
    m = c["ringmux"]
    lost = m["client_sent_bytes"] - m["server_confirmed_bytes"] + 64 * 1024 * m["verify_gaps"]
    rn = m["resume_ns"]
    print(f"| {r + 1} | {gib(a):.2f} | {gib(b):.2f} | {gib(c):.2f} | {m['resumes']} | {lost} | {m['verify_duplicates']} | "
          f"{m['verify_errors']} | {rn['p50'] / 1e3:.0f} / {rn['p99'] / 1e3:.0f} / {rn['max'] / 1e3:.0f} |")
print()
p50s = sorted(j["ringmux"]["resume_ns"]["p50"] for j in rows["C"])
p99s = sorted(j["ringmux"]["resume_ns"]["p99"] for j in rows["C"])
print(f"medians: A {med['A']:.2f}, B {med['B']:.2f}, C {med['C']:.2f} GiB/s; "
      f"resume p50 {statistics.median(p50s) / 1e3:.0f} us, p99 {statistics.median(p99s) / 1e3:.0f} us (median of runs); "
      f"W6 goodput / undisturbed W3 on the same path (C/B) {med['C'] / med['B']:.2f}x, "
      f"/ direct W3 (C/A) {med['C'] / med['A']:.2f}x")
for k in "BC":
    for j in rows[k]:
        m = j["ringmux"]
        if m["errors"] or m["verify_errors"] or m["verify_gaps"] or m["verify_duplicates"] or \
           m["server_confirmed_bytes"] != m["client_sent_bytes"]:
            print(f"INTEGRITY FAILURE in {k}: {m}")
EOF
