#!/usr/bin/env bash
# W1, W3 and W6 of shared/WORKLOADS.md over mutual TLS 1.3 against plaintext, through the
# shipped tools (ringmux-loadgen -> ringmux-serve, --tls-*), in one invocation:
#   W1  unary 64 B, 1 call in flight: calls/s, p50, p99;
#   W3  one stream of 64 KiB writes: GiB/s;
#   W6  W3 through ringmux-chaos --reset-every=100ms with verify=1: goodput, resumes, and
#       lost, duplicated and damaged messages (all must be 0).
# Two servers run throughout, plain and TLS, both pinned to CPU 1 with the proxies; the
# loadgen is pinned to CPU 0. Each run goes W1 plain, W1 tls, W3 plain, W3 tls, W6 plain,
# W6 tls (interleaved); the table gives each run and the medians. Certificates (an EC P-256
# CA, a server and a client leaf) are made with the openssl command in perf/out/tls_tools/.
# Raw JSON in perf/out/tls_tools/.
# usage: perf/tls_tools.sh [BUILD_DIR] [RUNS] [SECONDS]   (build, 3, 5)
source "$(dirname "$0")/common.sh"
runs=${2:-3}
seconds=${3:-5}
perf_setup tls_tools "${1:-build}"

pki=$out/pki
mkdir -p "$pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$pki/ca.key" -out "$pki/ca.pem" \
  -days 2 -subj /CN=ca -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
  2>/dev/null
for leaf in server client; do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$pki/$leaf.key" \
    -out "$pki/$leaf.csr" -subj "/CN=$leaf" 2>/dev/null
  echo "subjectAltName=DNS:$leaf,IP:127.0.0.1" >"$pki/$leaf.ext"
  openssl x509 -req -in "$pki/$leaf.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial -days 2 \
    -extfile "$pki/$leaf.ext" -out "$pki/$leaf.pem" 2>/dev/null
done
tls_of() { echo "--tls-cert=$pki/$1.pem --tls-key=$pki/$1.key --tls-ca=$pki/ca.pem"; }

# shellcheck disable=SC2046 # the TLS options are words on purpose
background "$tools/ringmux-serve" --listen=127.0.0.1:0 --cpus=1 >"$out/serve.plain.log" 2>&1
background "$tools/ringmux-serve" --listen=127.0.0.1:0 --cpus=1 $(tls_of server) >"$out/serve.tls.log" 2>&1
port_plain=$(port_of "$out/serve.plain.log" 'port \([0-9]*\)')
port_tls=$(port_of "$out/serve.tls.log" 'port \([0-9]*\)')
for mode in plain tls; do
  upstream=$port_plain
  [ "$mode" = tls ] && upstream=$port_tls
  background nice -n -10 taskset -c 1 "$tools/ringmux-chaos" --listen=127.0.0.1:0 \
    --upstream="127.0.0.1:$upstream" --seed=6 --stats=json --reset-every=100ms >"$out/chaos.$mode.log" 2>&1
done
chaos_plain=$(port_of "$out/chaos.plain.log" 'listening on [0-9.]*:\([0-9]*\)')
chaos_tls=$(port_of "$out/chaos.tls.log" 'listening on [0-9.]*:\([0-9]*\)')

common=(--output-format=json --runtime="$seconds" --ramp_time=0.5 --cpus_allowed=0 --host=127.0.0.1)
declare -A workload=(
  [W1]="--name=w1 --rw=unary --bs=64 --iodepth=1"
  [W3]="--name=w3 --rw=write --bs=64k"
  [W6]="--name=w6 --rw=write --bs=64k --verify=1"
)
for run in $(seq 1 "$runs"); do
  for w in W1 W3 W6; do
    for mode in plain tls; do
      port=$port_plain tls=""
      [ "$mode" = tls ] && port=$port_tls tls=$(tls_of client)
      [ "$w" = W6 ] && [ "$mode" = plain ] && port=$chaos_plain
      [ "$w" = W6 ] && [ "$mode" = tls ] && port=$chaos_tls
      # shellcheck disable=SC2086 # job and TLS options are words on purpose
      "$tools/ringmux-loadgen" "${common[@]}" --port="$port" $tls ${workload[$w]} \
        >"$out/$w.$mode.$run.json" 2>"$out/$w.$mode.$run.err"
    done
  done
  echo "run $run of $runs done" >&2
done
echo "TLS path (serve): $(grep -h 'TLS 1.3' "$out/serve.tls.log" | head -1)"
echo "TLS path (loadgen): $(grep -h 'TLS 1.3' "$out/W1.tls.1.err" | head -1)"
python3 - "$out" "$runs" <<'EOF'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
def job(w, mode, run):
    with open(f"{out}/{w}.{mode}.{run}.json") as f:
        return json.load(f)["jobs"][0]
def pct(j, q):
    return j["write"]["clat_ns"]["percentile"][q] / 1e3
gib = 2**30
rows = {(w, m): [job(w, m, r) for r in range(1, runs + 1)] for w in ("W1", "W3", "W6") for m in ("plain", "tls")}
print("| run | mode | W1 calls/s | W1 p50 us | W1 p99 us | W3 GiB/s | W6 GiB/s | W6 resumes | W6 lost bytes | W6 dup msgs | W6 damaged msgs |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
med = {}
for m in ("plain", "tls"):
    for r in range(runs):
        w1, w3, w6 = rows[("W1", m)][r], rows[("W3", m)][r], rows[("W6", m)][r]
        x = w6["ringmux"]
        lost = x["client_sent_bytes"] - x["server_confirmed_bytes"] + 64 * 1024 * x["verify_gaps"]
        print(f"| {r + 1} | {m} | {w1['write']['iops']:,.0f} | {pct(w1, '50.000000'):.1f} | {pct(w1, '99.000000'):.1f} "
              f"| {w3['write']['bw_bytes'] / gib:.2f} | {w6['write']['bw_bytes'] / gib:.2f} | {x['resumes']} | {lost} "
              f"| {x['verify_duplicates']} | {x['verify_errors']} |")
    med[m] = {
        "rate": statistics.median(j["write"]["iops"] for j in rows[("W1", m)]),
        "p50": statistics.median(pct(j, "50.000000") for j in rows[("W1", m)]),
        "p99": statistics.median(pct(j, "99.000000") for j in rows[("W1", m)]),
        "w3": statistics.median(j["write"]["bw_bytes"] / gib for j in rows[("W3", m)]),
        "w6": statistics.median(j["write"]["bw_bytes"] / gib for j in rows[("W6", m)]),
        "resumes": statistics.median(j["ringmux"]["resumes"] for j in rows[("W6", m)]),
    }
print()
p, t = med["plain"], med["tls"]
print(f"medians of {runs}: plain W1 {p['rate']:,.0f} calls/s p50 {p['p50']:.1f} p99 {p['p99']:.1f} us, "
      f"W3 {p['w3']:.2f} GiB/s, W6 {p['w6']:.2f} GiB/s ({p['resumes']:.0f} resumes)")
print(f"medians of {runs}: tls   W1 {t['rate']:,.0f} calls/s p50 {t['p50']:.1f} p99 {t['p99']:.1f} us, "
      f"W3 {t['w3']:.2f} GiB/s, W6 {t['w6']:.2f} GiB/s ({t['resumes']:.0f} resumes)")
print(f"tls/plain: W1 calls/s {t['rate'] / p['rate']:.2f}x, p50 {t['p50'] - p['p50']:+.1f} us, "
      f"p99 {t['p99'] - p['p99']:+.1f} us; W3 {t['w3'] / p['w3']:.2f}x; W6 {t['w6'] / p['w6']:.2f}x")
for m in ("plain", "tls"):
    for w in ("W1", "W3", "W6"):
        for j in rows[(w, m)]:
            x = j["ringmux"]
            if x["errors"] or (w == "W6" and (x["verify_errors"] or x["verify_gaps"] or x["verify_duplicates"] or
                                              x["server_confirmed_bytes"] != x["client_sent_bytes"])):
                print(f"INTEGRITY FAILURE in {w} {m}: {x}")
EOF
