#!/usr/bin/env python3
"""The live status line of ringmux-loadgen: drawn on a terminal (a pseudo-terminal here),
with a percentage and an ETA that counts down, and absent when stderr is a pipe, so that
scripts get clean output. usage: check_loadgen_status.py BUILD_DIR"""
import os
import pty
import re
import select
import subprocess
import sys
import time

loadgen = f"{sys.argv[1]}/tools/ringmux-loadgen"
args = [loadgen, "--rw=unary", "--bs=64", "--iodepth=4", "--runtime=2", "--output-format=json"]
failures = []

# On a terminal: stderr is the pty's slave side; stdout stays a pipe for the report.
master, slave = pty.openpty()
process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
os.close(slave)
screen = b""
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    ready, _, _ = select.select([master], [], [], 0.2)
    if ready:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the slave side closed: the process is gone
            break
        if not chunk:
            break
        screen += chunk
    elif process.poll() is not None:
        break
report, _ = process.communicate(timeout=30)
os.close(master)
text = screen.decode(errors="replace")
lines = [part for part in re.split(r"\r\x1b\[K", text) if part.strip()]
if process.returncode != 0:
    failures.append(f"terminal run exited {process.returncode}")
if len(lines) < 2:
    failures.append(f"expected at least 2 status redraws in 2 s, got {len(lines)}: {text!r}")
etas = [int(m.group(1)) * 60 + int(m.group(2)) for m in (re.search(r"\[eta (\d+)m:(\d+)s\]", line) for line in lines) if m]
if len(etas) != len(lines):
    failures.append(f"a status line without ETA: {lines!r}")
elif etas != sorted(etas, reverse=True) or etas[0] > 2:
    failures.append(f"ETA does not count down from the 2 s runtime: {etas}")
if lines and not all(re.search(r"\[\s*\d+\.\d% done\] \[[\d.]+[kMG]? ops/s\]", line) for line in lines):
    failures.append(f"status line without progress or rate: {lines[0]!r}")
if b'"jobs"' not in report:
    failures.append("the JSON report did not go to stdout")
if not text.endswith("\r\x1b[K"):
    failures.append(f"the line is not erased before the report: {text[-40:]!r}")

# On a pipe: not a byte of status.
piped = subprocess.run(args[:-2] + ["--runtime=1", "--output-format=json"], capture_output=True, timeout=30)
if piped.returncode != 0 or piped.stderr:
    failures.append(f"piped run: exit {piped.returncode}, stderr {piped.stderr[:200]!r}")

for failure in failures:
    print(f"FAIL: {failure}")
print(f"status line: {len(lines)} redraws, ETAs {etas}; {'ok' if not failures else 'FAILED'}")
sys.exit(1 if failures else 0)
