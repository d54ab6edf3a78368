#!/usr/bin/env bash
# The soak (issue 11): one ringmux-serve under everything at once for DURATION, its RSS and
# open fds sampled every second; perf/soak_verdict.py then prints a summary and decides.
# All on 127.0.0.1, every client bounded (open-loop call rates, bandwidth-limited proxies):
#   direct  unary calls at a fixed rate, plus idle_sessions connections that make one
#           verified call each and then hold their session open with keepalives only;
#   steady  unary calls and a write, a read and a bidi stream through a ringmux-chaos
#           proxy that only limits the bandwidth (no fault: a resume there is a failure;
#           this session found the echo stream that kept every byte it echoed);
#   reset   the same through a proxy that also resets every connection reset_every after
#           accept (the session must resume on a new connection and lose nothing);
#   churn   churn_workers loops of short loadgen runs (connect churn_connections
#           connections, unary calls for churn_run, exit), until DURATION is over.
# One stream of each kind per session: through a proxy their windows stay full, and what
# the server holds for them (up to the windows) moves by megabytes within seconds; two of
# each made those swings +-8 % of the RSS.
# Every call and message is verified (--verify=1). Each process has its own runtime and
# stops by itself; perf/common.sh's trap stops what is left when the script exits.
# Output in perf/out/soak/: samples.csv (second,rss_kib,fds,cpu_ticks), each client's JSON,
# the proxy's statistics, the server's log.
# usage: perf/soak.sh DURATION [BUILD_DIR]   (DURATION: 60s, 30m, 1h or seconds; build)
source "$(dirname "$0")/common.sh"

# The verdict's warm-up takes at least 30 s, and the windows compared after it need samples.
seconds_min=40
[[ "${1:-}" =~ ^([0-9]{1,6})(s|m|h)?$ ]] ||
  { echo "usage: perf/soak.sh DURATION [BUILD_DIR]   (DURATION: e.g. 60s, 30m, 1h)" >&2; exit 2; }
case "${BASH_REMATCH[2]}" in
  h) seconds=$((10#${BASH_REMATCH[1]} * 3600)) ;;
  m) seconds=$((10#${BASH_REMATCH[1]} * 60)) ;;
  *) seconds=$((10#${BASH_REMATCH[1]})) ;;
esac
[ "$seconds" -ge "$seconds_min" ] || { echo "soak: DURATION '$1' is shorter than ${seconds_min}s" >&2; exit 2; }
perf_setup soak "${2:-build}"

# The load: small enough for a 2-core machine shared with the server (the clients and
# the proxies together stay under one core), large enough that every path moves data.
idle_sessions=32         # connections held open doing nothing but keepalive
direct_rate_iops=500     # unary calls/s on the direct connection
proxied_rate_iops=200    # unary calls/s beside the streams, on each proxied session
proxy_bandwidth=8m       # bytes/s per direction through each proxy (bounds the streams)
reset_every=1s           # each connection through the reset proxy lives this long
churn_workers=2          # churn loops running at once
churn_connections=2      # connections of one churn run (--numjobs with --own_connection)
churn_run=500ms          # how long one churn run calls
churn_rate_iops=200      # unary calls/s on each churn connection
churn_runs_max=$((seconds * 4))  # per worker: a run takes at least churn_run (a bound, not a target)
tail_seconds=3           # clients run this much longer than the sampling: every sample is under load
grace_seconds=60         # server and proxies outlive the clients by this much at most
stop_at=$(($(date +%s) + seconds + tail_seconds))

# The default keepalive (1 s, dead after 3 s). At 250 ms (dead after 750 ms) one of three
# 60 s soaks on a loaded machine (load average 8 on 2 cores) saw 64 resumes of direct
# sessions and one of a churn session, with no fault on their path.
background "$tools/ringmux-serve" --listen=127.0.0.1:0 --duration=$((seconds + tail_seconds + grace_seconds))s \
  >"$out/serve.log" 2>&1
server_pid=${pids[-1]}
server_port=$(port_of "$out/serve.log" 'port \([0-9]*\)')
proxy_pids=()
start_proxy() {  # start_proxy NAME FAULTS...: in this shell (its pid must reach cleanup)
  local name=$1
  shift
  background "$tools/ringmux-chaos" --listen=127.0.0.1:0 --upstream="127.0.0.1:$server_port" --seed=11 \
    --duration=$((seconds + tail_seconds + grace_seconds))s --stats=json --bandwidth="$proxy_bandwidth" "$@" \
    >"$out/chaos.$name.json" 2>"$out/chaos.$name.log"
  proxy_pids+=("${pids[-1]}")
}
start_proxy steady
start_proxy reset --reset-every="$reset_every"
steady_port=$(port_of "$out/chaos.steady.log" 'listening on [0-9.]*:\([0-9]*\)')
reset_port=$(port_of "$out/chaos.reset.log" 'listening on [0-9.]*:\([0-9]*\)')

loadgen=("$tools/ringmux-loadgen" --output-format=json --host=127.0.0.1 --verify=1)
clients=()  # NAME:PID of the whole-soak loadgen runs
client() {  # client NAME PORT JOB_OPTIONS...: a loadgen run for the whole soak (its exit code goes to NAME.rc)
  local name=$1 port=$2
  shift 2
  background "${loadgen[@]}" --port="$port" --runtime=$((seconds + tail_seconds)) "$@" \
    >"$out/$name.json" 2>"$out/$name.err"
  clients+=("$name:${pids[-1]}")
}
client direct "$server_port" \
  --name=unary --rw=unary --bs=4k --iodepth=8 --rate_iops="$direct_rate_iops" \
  --name=idle --rw=unary --bs=64 --size=64 --numjobs="$idle_sessions" --own_connection --group_reporting
streams=(--name=unary --rw=unary --bs=4k --iodepth=8 --rate_iops="$proxied_rate_iops"
  --name=write --rw=write --bs=16k --name=read --rw=read --bs=16k --name=bidi --rw=bidi --bs=4k)
client steady "$steady_port" "${streams[@]}"
client reset "$reset_port" "${streams[@]}"

# One churn loop: runs until the soak's end, each run's JSON followed by "# exit CODE".
churn() {  # churn WORKER
  trap 'exit 130' INT TERM  # stop between runs (a run is short and ends by itself)
  local log="$out/churn.$1"
  for ((run = 0; run < churn_runs_max && $(date +%s) < stop_at; run++)); do
    local code=0
    "${loadgen[@]}" --port="$server_port" --name=churn --rw=unary --bs=1k --iodepth=4 --rate_iops="$churn_rate_iops" \
      --runtime="$churn_run" --numjobs="$churn_connections" --own_connection >>"$log.out" 2>>"$log.err" || code=$?
    echo "# exit $code" >>"$log.out"
  done
}
churn_pids=()
for ((worker = 0; worker < churn_workers; worker++)); do
  background churn "$worker"
  churn_pids+=("${pids[-1]}")
done

# The sampler: second, VmRSS (KiB), open fds and CPU time used so far (utime + stime, in
# clock ticks) of the server; it stops early if the server is gone.
echo "second,rss_kib,fds,cpu_ticks" >"$out/samples.csv"
start_ns=$(date +%s%N)
for ((second = 1; second <= seconds; second++)); do
  left_ns=$((start_ns + second * 1000000000 - $(date +%s%N)))
  [ "$left_ns" -le 0 ] || sleep "$((left_ns / 1000000000)).$(printf %09d $((left_ns % 1000000000)))"
  rss_kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$server_pid/status" 2>/dev/null || true)
  [ -n "$rss_kib" ] || { echo "soak: ringmux-serve is gone at second $second" >&2; break; }
  fds=$( (ls "/proc/$server_pid/fd" 2>/dev/null || true) | wc -l)
  cpu_ticks=$(awk '{ print $14 + $15 }' "/proc/$server_pid/stat" 2>/dev/null || true)
  echo "$second,$rss_kib,$fds,${cpu_ticks:-0}" >>"$out/samples.csv"
done

# The clients end by their runtimes; then the proxies and the server print their statistics.
for entry in "${clients[@]}"; do
  code=0
  wait "${entry#*:}" || code=$?
  echo "$code" >"$out/${entry%%:*}.rc"
done
for pid in "${churn_pids[@]}"; do wait "$pid" || true; done
for pid in "${proxy_pids[@]}" "$server_pid"; do
  kill -INT "$pid" 2>/dev/null || true
  wait "$pid" || true
done

python3 perf/soak_verdict.py "$out" --seconds="$seconds" --idle-sessions="$idle_sessions" --ticks-per-s="$(getconf CLK_TCK)" \
  --churn-connections-max=$((churn_workers * churn_connections)) --reset-connections=1 --stream-sessions=2
