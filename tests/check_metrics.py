#!/usr/bin/env python3
"""ringmux-serve --metrics serves Prometheus text exposition on GET /metrics, and
--stats-interval prints a summary line periodically.

- ringmux-serve starts with --metrics=127.0.0.1:0 (it prints the port it got) and
  --stats-interval; a short ringmux-loadgen run of unary calls goes against it.
- GET /metrics answers 200 with Content-Type text/plain; version=0.0.4; promtool check
  metrics accepts the body (Debian's prometheus package; without promtool that part says
  skipped); the calls and bytes counters moved by at least what the run did; every
  counter ends in _total and has HELP and TYPE lines.
- The library's snapshots, per loop (the run's unary calls, then a stream-churn run of
  sink streams): the loop's iterations and completions moved; the link counted a stream
  per call and per sink stream, at least a frame each way per call, and more bytes than
  the payload; the call-time histograms (Prometheus histograms with _bucket, _sum,
  _count) count exactly the calls and the streams the server finished, their buckets are
  cumulative and end at +Inf with the count, a unary handler's mean time is below a
  second and a stream's above the unary one's.
- A cluster member (--peers, --loops=2) exports its peer's health and session counters
  (the peer's series appear once the session is up: a wait for that event, bounded), and
  its call histogram counts the calls it served; promtool accepts that exposition too.
- Another path answers 404, another method 405, a request head over the bound 431.
- stderr holds at least one "stats:" line with the calls counted.
usage: check_metrics.py BUILD_DIR"""
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from free_ports import free_ports

build = sys.argv[1]
serve = f"{build}/tools/ringmux-serve"
loadgen = f"{build}/tools/ringmux-loadgen"
failures = []
TIMEOUT_S = 30             # bounds a broken tool; every wait is for an event
REQUEST_BYTES_MAX = 8192   # tools/serve/metrics.h: metrics_request_bytes_max


def check(condition, what):
    print(("ok: " if condition else "FAIL: ") + what)
    if not condition:
        failures.append(what)


def read_port(process, label):
    """The port ringmux-serve printed for `label` ('listening on port', 'metrics on port')."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        match = re.search(label + r" (\d+)", line)
        if match:
            return int(match.group(1))
    raise SystemExit(f"ringmux-serve printed no '{label}' line")


def get(port, path, method="GET"):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.status, response.headers.get("Content-Type"), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type"), error.read().decode()


def samples(text):
    """Metric name with labels -> value."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


server = subprocess.Popen([serve, "--listen=127.0.0.1:0", "--metrics=127.0.0.1:0", "--stats-interval=200ms"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
try:
    port = read_port(server, "listening on port")
    metrics_port = read_port(server, "metrics on port")
    status, content_type, before = get(metrics_port, "/metrics")
    check(status == 200, f"GET /metrics answers 200 (got {status})")
    check(content_type is not None and content_type.startswith("text/plain; version=0.0.4"),
          f"the exposition's content type (got {content_type})")

    run = subprocess.run([loadgen, "--host=127.0.0.1", f"--port={port}", "--rw=unary", "--bs=4k", "--iodepth=4",
                          "--runtime=1"], capture_output=True, text=True, timeout=TIMEOUT_S)
    check(run.returncode == 0, f"ringmux-loadgen ran (exit {run.returncode}: {run.stderr.strip()[-300:]})")
    stream_run = subprocess.run([loadgen, "--host=127.0.0.1", f"--port={port}", "--rw=write", "--bs=64k",
                                 "--streams=2", "--stream_messages=8", "--size=8m"],
                                capture_output=True, text=True, timeout=TIMEOUT_S)
    check(stream_run.returncode == 0,
          f"ringmux-loadgen ran sink streams (exit {stream_run.returncode}: {stream_run.stderr.strip()[-300:]})")

    status, _, after = get(metrics_port, "/metrics")
    check(status == 200, "GET /metrics after the run answers 200")
    first, second = samples(before), samples(after)
    calls = second.get("ringmux_serve_calls_total", 0) - first.get("ringmux_serve_calls_total", 0)
    received = second.get("ringmux_serve_received_bytes_total", 0) - first.get("ringmux_serve_received_bytes_total", 0)
    sent = second.get("ringmux_serve_sent_bytes_total", 0) - first.get("ringmux_serve_sent_bytes_total", 0)
    check(calls > 0, f"calls counted: {calls:.0f}")
    check(received >= 4096 * calls and sent >= 4096 * calls,
          f"bytes counted: {received:.0f} received, {sent:.0f} sent for {calls:.0f} calls of 4 KiB")
    check(second.get("ringmux_serve_connections_total", 0) >= 1, "the loadgen's connection is counted")
    check(second.get("ringmux_serve_uptime_seconds", 0) > first.get("ringmux_serve_uptime_seconds", 0),
          "the uptime gauge moved")
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", after, re.M))
    helps = set(re.findall(r"^# HELP (\S+) ", after, re.M))
    check(set(types) == helps, "every metric has HELP and TYPE lines")
    check(all(name.endswith("_total") for name, kind in types.items() if kind == "counter"),
          "every counter's name ends in _total")
    check('ringmux_log_events_total{subsystem="link",severity="warning"}' in second,
          "log events are labelled by subsystem and severity")

    def moved(name):
        return second.get(name, 0) - first.get(name, 0)

    check(moved('ringmux_loop_iterations_total{loop="0"}') > 0 and moved('ringmux_loop_completions_total{loop="0"}') > 0,
          "the loop's iterations and completions moved")
    unary_count = moved('ringmux_serve_call_duration_seconds_count{handler="unary"}')
    sink_count = moved('ringmux_serve_call_duration_seconds_count{handler="sink"}')
    opened = moved('ringmux_link_streams_opened_remote_total{loop="0"}')
    check(unary_count == calls, f"the unary histogram counts every call ({unary_count:.0f} of {calls:.0f})")
    # 8 MiB in 64 KiB messages, 8 per stream: 16 sink streams.
    check(sink_count == 16, f"the sink histogram counts the 16 streams of 8 messages (got {sink_count:.0f})")
    check(opened == unary_count + sink_count,
          f"the link counted a stream per call and per sink stream ({opened:.0f} = {unary_count:.0f} + {sink_count:.0f})")
    check(moved('ringmux_link_frames_received_total{loop="0"}') >= calls and
          moved('ringmux_link_frames_sent_total{loop="0"}') >= calls, "at least a frame each way per call")
    check(moved('ringmux_link_received_bytes_total{loop="0"}') > received,
          "the link received more bytes than the payload (frame headers)")
    check('ringmux_link_flow_control_stalls_total{loop="0"}' in second and
          'ringmux_link_floods_total{loop="0"}' in second and 'ringmux_link_resumes_total{loop="0"}' in second,
          "stalls, floods and resumes are exported per loop")
    check(types.get("ringmux_serve_call_duration_seconds") == "histogram", "call times are a histogram")
    for handler in ("unary", "sink"):
        buckets = [(label, value) for label, value in
                   re.findall(r'^ringmux_serve_call_duration_seconds_bucket\{handler="' + handler + r'",le="([^"]+)"\} (\S+)$',
                              after, re.M)]
        counts = [float(value) for _, value in buckets]
        total = second.get(f'ringmux_serve_call_duration_seconds_count{{handler="{handler}"}}', -1)
        check(len(buckets) <= 32 and buckets[-1][0] == "+Inf" and counts == sorted(counts) and counts[-1] == total,
              f"{handler}: {len(buckets)} cumulative buckets ending at +Inf with the count {total:.0f}")
    unary_mean = moved('ringmux_serve_call_duration_seconds_sum{handler="unary"}') / max(unary_count, 1)
    sink_mean = moved('ringmux_serve_call_duration_seconds_sum{handler="sink"}') / max(sink_count, 1)
    check(0 < unary_mean < 1 and sink_mean > unary_mean,
          f"mean times: a unary handler {unary_mean * 1e6:.2f} us, a sink stream {sink_mean * 1e6:.0f} us")

    promtool = shutil.which("promtool")
    if promtool is None:
        print("skipped: promtool is not installed (Debian package prometheus; tools/install-deps.sh)")
    else:
        lint = subprocess.run([promtool, "check", "metrics"], input=after, capture_output=True, text=True,
                              timeout=TIMEOUT_S)
        check(lint.returncode == 0, f"promtool check metrics accepts it ({(lint.stdout + lint.stderr).strip()})")

    status, _, body = get(metrics_port, "/other")
    check(status == 404, f"another path answers 404 (got {status})")
    status, _, _ = get(metrics_port, "/metrics", method="POST")
    check(status == 405, f"another method answers 405 (got {status})")
    with socket.create_connection(("127.0.0.1", metrics_port), timeout=TIMEOUT_S) as raw:
        raw.sendall(b"GET /metrics HTTP/1.1\r\nX-Padding: " + b"a" * (2 * REQUEST_BYTES_MAX))
        answer = raw.recv(4096).decode(errors="replace")
    check(answer.startswith("HTTP/1.1 431"), f"a request head over the bound answers 431 (got {answer[:40]!r})")
    status, _, _ = get(metrics_port, "/metrics")
    check(status == 200, "the responder still answers after those")
finally:
    server.terminate()
    try:
        _, stderr = server.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        server.kill()
        _, stderr = server.communicate()

lines = [line for line in stderr.splitlines() if "stats:" in line]
check(len(lines) >= 1, f"--stats-interval printed {len(lines)} summary lines")
check(any(re.search(r"calls=[1-9]", line) for line in lines), "a summary line counts the calls")
check(server.returncode == 0, f"ringmux-serve exits 0 on SIGTERM (got {server.returncode})")

# A cluster member: two members, the first with --metrics.
member_ports = free_ports(2)
members = []
try:
    for i, member_port in enumerate(member_ports):
        other = member_ports[1 - i]
        members.append(subprocess.Popen(
            [serve, f"--listen=127.0.0.1:{member_port}", f"--peers=127.0.0.1:{other}", "--loops=2", "--duration=60s"]
            + (["--metrics=127.0.0.1:0"] if i == 0 else []),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    read_port(members[0], "listening on port")
    cluster_metrics = read_port(members[0], "metrics on port")
    peer_up = f'ringmux_peer_connected{{peer="127.0.0.1:{member_ports[1]}"}}'
    deadline = time.monotonic() + TIMEOUT_S
    exposition = ""
    while time.monotonic() < deadline:
        _, _, exposition = get(cluster_metrics, "/metrics")
        if samples(exposition).get(peer_up) == 1:
            break
        time.sleep(0.05)
    check(samples(exposition).get(peer_up) == 1, f"the member exports its peer's session as up ({peer_up})")
    quorum = subprocess.run([loadgen, "--rw=quorum", f"--peers=127.0.0.1:{member_ports[0]},127.0.0.1:{member_ports[1]}",
                             "--quorum=all", "--bs=64", "--runtime=300ms", "--deadline=5s"],
                            capture_output=True, text=True, timeout=TIMEOUT_S)
    check(quorum.returncode == 0, f"a quorum run against the members (exit {quorum.returncode})")
    _, _, exposition = get(cluster_metrics, "/metrics")
    values = samples(exposition)
    served = values.get("ringmux_serve_calls_total", 0)
    timed = values.get('ringmux_serve_call_duration_seconds_count{handler="unary"}', -1)
    check(served > 0 and timed == served, f"the member's call histogram counts the {served:.0f} calls it served ({timed:.0f})")
    check(values.get(f'ringmux_peer_frames_received_total{{peer="127.0.0.1:{member_ports[1]}"}}', 0) > 0 and
          f'ringmux_peer_flow_control_stalls_total{{peer="127.0.0.1:{member_ports[1]}"}}' in values,
          "the peer's session counters are exported")
    check('ringmux_loop_iterations_total{loop="1"}' in values, "both loops' counters are exported")
    promtool = shutil.which("promtool")
    if promtool is not None:
        lint = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, text=True,
                              timeout=TIMEOUT_S)
        check(lint.returncode == 0, f"promtool accepts the member's exposition ({(lint.stdout + lint.stderr).strip()})")
finally:
    for member in members:
        member.terminate()
    for member in members:
        try:
            member.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            member.kill()
            member.communicate()

# Bad values name the option.
for args, expected in [(["--metrics=nohost"], "not an IPv4 ADDRESS:PORT"),
                       (["--stats-interval=10ms"], "at least 100ms")]:
    result = subprocess.run([serve, "--listen=127.0.0.1:0", "--duration=1s", *args], capture_output=True, text=True,
                            timeout=TIMEOUT_S)
    check(result.returncode != 0 and expected in result.stderr, f"{args[0]} is refused: {result.stderr.strip()}")

if failures:
    print(f"{len(failures)} failures")
    sys.exit(1)
print("all passed")
