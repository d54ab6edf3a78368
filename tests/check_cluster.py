#!/usr/bin/env python3
"""The cluster tools end to end: three `ringmux-serve --peers --loops=2` members on
127.0.0.1 (each spreads its peer sessions over two loops), and `ringmux-loadgen --rw=quorum`
against them.
- every quorum (majority, all, first, 2) completes calls with no error;
- one member killed: majority still completes with no error; all fails its calls at
  the deadline (errors counted, exit status 1);
- the two members left report their two peer sessions (sessions=2) when they stop;
- bad quorum and loop options are refused with exit status 2 and a message naming the option.
usage: check_cluster.py BUILD_DIR"""
import json
import re
import subprocess
import sys
import time

from free_ports import free_ports

build = sys.argv[1]
loadgen = f"{build}/tools/ringmux-loadgen"
serve = f"{build}/tools/ringmux-serve"
failures = []


def quorum_run(peers, quorum, extra=()):
    result = subprocess.run([loadgen, "--rw=quorum", f"--peers={','.join(peers)}", f"--quorum={quorum}",
                             "--bs=64", "--iodepth=4", "--runtime=1", "--deadline=300ms",
                             "--output-format=json", *extra], capture_output=True, text=True, timeout=60)
    job = json.loads(result.stdout)["jobs"][0] if result.stdout.strip() else {}
    return result.returncode, job, result.stderr


ports = free_ports(3)
peers = [f"127.0.0.1:{p}" for p in ports]
members = []
for i, port in enumerate(ports):
    others = ",".join(p for j, p in enumerate(peers) if j != i)
    members.append(subprocess.Popen([serve, f"--listen=127.0.0.1:{port}", f"--peers={others}", "--loops=2",
                                     "--duration=60s"],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
for member in members:
    line = member.stdout.readline()
    if "listening" not in line:
        failures.append(f"a member did not start: {line!r}")
try:
    for quorum in ["majority", "all", "first", "2"]:
        code, job, err = quorum_run(peers, quorum)
        ops = job.get("write", {}).get("total_ios", 0) if job else 0
        errors = job.get("ringmux", {}).get("errors", -1) if job else -1
        if code != 0 or errors != 0 or job.get("write", {}).get("iops", 0) <= 0:
            failures.append(f"quorum={quorum} with all members up: exit {code}, job {job}, stderr {err}")
        else:
            clat = job["write"]["clat_ns"]["percentile"]
            print(f"ok: quorum={quorum}, 3 members: {job['write']['iops']:.0f} calls/s, "
                  f"p50 {clat['50.000000'] / 1e3:.0f} us, p99 {clat['99.000000'] / 1e3:.0f} us, no error")

    members[2].send_signal(2)
    members[2].communicate(timeout=20)
    time.sleep(0.2)
    code, job, err = quorum_run(peers, "majority")
    if code != 0 or job.get("ringmux", {}).get("errors", -1) != 0 or job.get("write", {}).get("iops", 0) <= 0:
        failures.append(f"majority with one member down: exit {code}, job {job}, stderr {err}")
    else:
        print(f"ok: majority with one of 3 members down: {job['write']['iops']:.0f} calls/s, no error")
    code, job, err = quorum_run(peers, "all")
    message = job.get("ringmux", {}).get("error", "")
    if code != 1 or job.get("ringmux", {}).get("errors", 0) == 0 or "deadline" not in message:
        failures.append(f"all with one member down: exit {code}, job {job}")
    else:
        print(f"ok: all with one member down fails at the deadline ({message})")
finally:
    for i, member in enumerate(members):
        if member.poll() is None:
            member.send_signal(2)
            output, _ = member.communicate(timeout=20)
            sessions = re.search(r"sessions=(\d+)", output or "")
            if sessions is None or int(sessions.group(1)) < 2:
                failures.append(f"member {i} did not report its two peer sessions: exit {member.returncode}, "
                                f"output {output!r}")
            else:
                print(f"ok: member {i} stopped with sessions={sessions.group(1)} over 2 loops")

for args, expected in [(["--rw=quorum", "--runtime=1"], "rw=quorum needs --peers"),
                       (["--rw=quorum", "--peers=127.0.0.1:1", "--quorum=3", "--runtime=1"], "quorum 3 is more than"),
                       (["--rw=quorum", "--peers=nohost", "--runtime=1"], "option 'peers'"),
                       (["--rw=unary", "--peers=127.0.0.1:1", "--runtime=1"], "peers apply to rw=quorum only")]:
    result = subprocess.run([loadgen, *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 2 or expected not in result.stderr:
        failures.append(f"{args}: exit {result.returncode}, stderr {result.stderr!r}")
    else:
        print(f"ok: {' '.join(args)} refused: {result.stderr.strip()}")

for args, expected in [(["--loops=2", "--cpus=0"], "option '--loops': 2 loops but --cpus lists 1 CPUs"),
                       (["--loops=2", "--ioengine=tcp"], "--loops needs --ioengine=ringmux"),
                       (["--peers=127.0.0.1:1", "--loops=0"], "option '--loops'"),
                       (["--peers=127.0.0.1:1", "--loops=65"], "option '--loops'")]:
    result = subprocess.run([serve, "--listen=127.0.0.1:0", "--duration=1s", *args], capture_output=True, text=True,
                            timeout=30)
    if result.returncode != 2 or expected not in result.stderr:
        failures.append(f"serve {args}: exit {result.returncode}, stderr {result.stderr!r}")
    else:
        print(f"ok: serve {' '.join(args)} refused: {result.stderr.strip()}")

for failure in failures:
    print("FAIL:", failure)
sys.exit(1 if failures else 0)
