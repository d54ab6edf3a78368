#!/usr/bin/env python3
"""The 3-member cluster across three network namespaces (separate network stacks) joined
by veth pairs to a bridge in a fourth namespace. Addresses are the test's own
(10.231.0.0/24 inside namespaces it creates and deletes). One member per namespace
(`ringmux-serve --peers --loops=2`: its peer sessions on two loops), and `ringmux-loadgen --rw=quorum` in the first namespace:
- majority and all complete with no error;
- with the third member killed, majority still completes; all fails at its deadline.
Prints "skipped: ..." and exits 77 (meson's skip) only where namespaces cannot be made.
usage: check_netns.py BUILD_DIR"""
import json
import os
import subprocess
import sys
import time

build = os.path.abspath(sys.argv[1])
loadgen = f"{build}/tools/ringmux-loadgen"
serve = f"{build}/tools/ringmux-serve"
tag = f"rmx{os.getpid() % 100000}"
hub = f"{tag}h"
nodes = [f"{tag}n{i}" for i in range(3)]
addresses = [f"10.231.0.{i + 1}" for i in range(3)]
port = 7300
failures = []


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def cleanup():
    for ns in nodes + [hub]:
        ip("netns", "del", ns, check=False)


def setup():
    ip("netns", "add", hub)
    ip("-n", hub, "link", "set", "lo", "up")
    ip("-n", hub, "link", "add", "br0", "type", "bridge")
    ip("-n", hub, "link", "set", "br0", "up")
    for i, ns in enumerate(nodes):
        ip("netns", "add", ns)
        ip("-n", ns, "link", "set", "lo", "up")
        # veth pair: eth0 in the node's namespace, its peer on the hub's bridge.
        ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}", "netns", hub)
        ip("-n", ns, "addr", "add", f"{addresses[i]}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", hub, "link", "set", f"p{i}", "master", "br0")
        ip("-n", hub, "link", "set", f"p{i}", "up")


def quorum_run(quorum):
    peers = ",".join(f"{a}:{port}" for a in addresses)
    result = subprocess.run(["ip", "netns", "exec", nodes[0], loadgen, "--rw=quorum", f"--peers={peers}",
                             f"--quorum={quorum}", "--bs=64", "--iodepth=4", "--runtime=1", "--deadline=300ms",
                             "--output-format=json"], capture_output=True, text=True, timeout=60)
    job = json.loads(result.stdout)["jobs"][0] if result.stdout.strip() else {}
    return result.returncode, job, result.stderr


try:
    setup()
except (subprocess.CalledProcessError, FileNotFoundError) as error:
    cleanup()
    detail = error.stderr.strip() if isinstance(error, subprocess.CalledProcessError) else str(error)
    print(f"skipped: network namespaces cannot be created here ({detail})")
    sys.exit(77)

members = []
try:
    for i, ns in enumerate(nodes):
        others = ",".join(f"{a}:{port}" for j, a in enumerate(addresses) if j != i)
        members.append(subprocess.Popen(["ip", "netns", "exec", ns, serve, f"--listen={addresses[i]}:{port}",
                                         f"--peers={others}", "--loops=2", "--duration=60s"],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for member in members:
        line = member.stdout.readline()
        if "listening" not in line:
            failures.append(f"a member did not start: {line!r}")
    time.sleep(0.3)
    for quorum in ["majority", "all"]:
        code, job, err = quorum_run(quorum)
        if code != 0 or job.get("ringmux", {}).get("errors", -1) != 0 or job.get("write", {}).get("iops", 0) <= 0:
            failures.append(f"quorum={quorum} across namespaces: exit {code}, job {job}, stderr {err}")
        else:
            clat = job["write"]["clat_ns"]["percentile"]
            print(f"ok: quorum={quorum} across 3 namespaces: {job['write']['iops']:.0f} calls/s, "
                  f"p50 {clat['50.000000'] / 1e3:.0f} us, p99 {clat['99.000000'] / 1e3:.0f} us")
    members[2].send_signal(2)
    members[2].communicate(timeout=20)
    time.sleep(0.2)
    code, job, err = quorum_run("majority")
    if code != 0 or job.get("ringmux", {}).get("errors", -1) != 0:
        failures.append(f"majority with the third namespace's member down: exit {code}, job {job}")
    else:
        print("ok: majority with one member down still completes across namespaces")
    code, job, err = quorum_run("all")
    if code != 1 or "deadline" not in job.get("ringmux", {}).get("error", ""):
        failures.append(f"all with one member down: exit {code}, job {job}")
    else:
        print("ok: all with one member down fails at the deadline")
finally:
    for member in members:
        if member.poll() is None:
            member.send_signal(2)
            try:
                member.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                member.kill()
    cleanup()

for failure in failures:
    print("FAIL:", failure)
sys.exit(1 if failures else 0)
