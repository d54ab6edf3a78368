#!/usr/bin/env python3
"""End to end through ringmux-chaos: damage and broken connections, with verify=1.
- tcp engine (no framing, no checksums): the corrupted bytes reach the application and
  verify counts them, the run fails (exit 1).
- ringmux engine: the server's frame checksums catch each flip first; the connection is
  dropped and the session resumes on a new one, replaying from the server's position, so
  the run succeeds with every message verified, none damaged, missing or repeated, and
  the server confirms every byte written.
- ringmux engine with the connection reset every 100 ms and forwarded in random slices:
  the same, with the resumes counted in the JSON.
- a clean pass through the proxy (no faults) verifies with no error.
usage: check_loadgen_chaos.py BUILD_DIR"""
import json
import re
import subprocess
import sys

build = sys.argv[1]
loadgen = f"{build}/tools/ringmux-loadgen"
serve = f"{build}/tools/ringmux-serve"
chaos = f"{build}/tools/ringmux-chaos"
failures = []


def start(args, pattern):
    """Starts a tool that prints its port on its first line (stdout or stderr)."""
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = process.stdout.readline()
    match = re.search(pattern, line)
    if not match:
        process.kill()
        raise RuntimeError(f"{args[0]} did not say its port: {line!r}")
    return process, int(match.group(1))


def run_through(engine, faults, seed, size="32m"):
    server, server_port = start([serve, "--listen=127.0.0.1:0", f"--ioengine={engine}", "--duration=30s"], r"port (\d+)")
    proxy, proxy_port = start([chaos, "--listen=127.0.0.1:0", f"--upstream=127.0.0.1:{server_port}", f"--seed={seed}",
                               "--duration=30s", "--stats=json"] + faults, r"listening on [\d.]+:(\d+)")
    try:
        result = subprocess.run([loadgen, "--host=127.0.0.1", f"--port={proxy_port}", f"--ioengine={engine}",
                                 "--rw=write", "--bs=64k", f"--size={size}", "--runtime=10", "--verify=1",
                                 "--output-format=json"], capture_output=True, text=True, timeout=60)
    finally:
        proxy.send_signal(2)
        server.send_signal(2)
        proxy_out, _ = proxy.communicate(timeout=20)
        server.communicate(timeout=20)
    job = json.loads(result.stdout)["jobs"][0]["ringmux"] if result.stdout.strip() else {}
    return result.returncode, job, proxy_out


seed = 7
# Corruption at 1e-5 per byte flips ~300 bits in 32 MiB.
code, job, proxy_out = run_through("tcp", ["--direction=up", "--corrupt=1e-5"], seed)
if code != 1 or job.get("verify_errors", 0) == 0:
    failures.append(f"tcp through --corrupt: exit {code}, verify {job}")
else:
    print(f"ok: tcp engine through --corrupt=1e-5: verify caught {job['verify_errors']} damaged messages, exit 1")

def intact(code, job):
    """A ringmux run that rode out its faults: nothing damaged, lost or repeated."""
    return (code == 0 and job.get("resumes", 0) > 0 and job.get("verified_messages", 0) > 0 and
            job.get("verify_errors", 1) == 0 and job.get("verify_gaps", 1) == 0 and
            job.get("verify_duplicates", 1) == 0 and job.get("errors", 1) == 0 and
            job.get("server_confirmed_bytes", 0) == job.get("client_sent_bytes", -1) and
            job.get("resume_ns", {}).get("count", 0) == job["resumes"])


# 512 MiB: long enough (seconds) for several resets.
for name, faults, size in [("--corrupt=1e-5", ["--direction=up", "--corrupt=1e-5"], "32m"),
                           ("--reset-every=100ms --slice=1-4096", ["--reset-every=100ms", "--slice=1-4096"], "512m")]:
    code, job, proxy_out = run_through("ringmux", faults, seed, size)
    if not intact(code, job):
        failures.append(f"ringmux through {name}: exit {code}, job {job}")
    else:
        print(f"ok: ringmux engine through {name}: {job['resumes']} resumes, {job['bytes_replayed']} bytes replayed, "
              f"{job['verified_messages']} messages verified, none damaged, lost or repeated")

for engine in ["tcp", "ringmux"]:
    code, job, _ = run_through(engine, [], seed)
    if code != 0 or job.get("verified_messages", 0) == 0 or job.get("verify_errors", 1) != 0:
        failures.append(f"{engine} through a clean proxy: exit {code}, job {job}")
    else:
        print(f"ok: {engine} engine through a clean proxy: {job['verified_messages']} messages verified")

for failure in failures:
    print("FAIL:", failure)
sys.exit(1 if failures else 0)
