#!/usr/bin/env python3
"""The soak's pass criteria can fail: perf/soak_verdict.py on fabricated soak outputs.
A clean 30-minute soak (flat RSS with noise, a warm-up that grows, fds moving within the
churn bound) passes; each injected defect fails exactly the criterion meant to catch it: a
slow RSS leak after the warm-up (+4 %: over the 2 % bound), an fd leak, a verify error in a
client or in the server, a write stream whose bytes the server did not all confirm, a
failed call on the reset path, a resume on a path without faults, resets that never
happened, a churn run that crashed, an idle session that never called, a server that died
before the end. A 60 s soak is held to the short-run bound (2 % + 2 x 8 MiB, about 45 % here):
+40 % passes, +70 % and a leak of +1.5 MB/s fail. No randomness: the noise is a fixed pattern.
usage: check_soak_verdict.py SOURCE_ROOT"""
import copy
import json
import math
import os
import subprocess
import sys
import tempfile

root = sys.argv[1]
verdict_script = os.path.join(root, "perf", "soak_verdict.py")
SECONDS = 1800
IDLE = 32
CHURN_CONNECTIONS_MAX = 4
failures = []


def job(name, rw, **ringmux):
    fields = {"rw": rw, "errors": 0, "error": "", "verify_errors": 0, "verify_gaps": 0, "verify_duplicates": 0,
              "verified_messages": 1000, "server_confirmed_bytes": 0, "client_sent_bytes": 0, "resumes": 0}
    if rw == "write":
        fields["server_confirmed_bytes"] = fields["client_sent_bytes"] = 1 << 30
    fields.update(ringmux)
    return {"jobname": name, "ringmux": fields}


def clean(seconds=SECONDS):
    """A soak of `seconds` that passes: {file name: content}."""
    samples = ["second,rss_kib,fds,cpu_ticks"]
    for second in range(1, seconds + 1):
        warm = 30000 * min(second, 20) / 20  # grows for the first 20 s (within any warm-up), then flat
        noise = 400 * math.sin(second * 0.7) + 250 * math.sin(second * 0.13)  # about +-1.7 %
        fds = 46 + (second * 7 % 3)  # churn connections come and go: 46..48
        samples.append(f"{second},{int(8000 + warm + noise)},{fds},{second * 20}")
    streams = [job("unary", "unary"), job("write", "write"), job("read", "read"), job("bidi", "bidi")]
    reports = {
        "direct": [job("unary", "unary"), job("idle", "unary", verified_messages=IDLE)],
        "steady": copy.deepcopy(streams),
        "reset": [dict(j, ringmux=dict(j["ringmux"], resumes=600)) for j in copy.deepcopy(streams)],
    }
    files = {"samples.csv": "\n".join(samples) + "\n"}
    for name, jobs in reports.items():
        files[f"{name}.json"] = json.dumps({"ringmux_version": 1, "jobs": jobs})
        files[f"{name}.rc"] = "0\n"
    for worker in range(2):
        runs = [json.dumps({"jobs": [job("churn.0", "unary"), job("churn.1", "unary")]}, indent=1) + "\n# exit 0\n"
                for _ in range(3)]
        files[f"churn.{worker}.out"] = "".join(runs)
    files["chaos.reset.json"] = json.dumps({"resets": 600})
    files["serve.log"] = ("ringmux-serve: ringmux engine listening on port 1\n"
                          "ringmux-serve: Interrupt; connections=1 sessions=1 resumes=600 calls=1 bytes_received=1 "
                          "bytes_sent=1 verify_errors=0\n")
    return files


def edit_samples(files, change):
    lines = files["samples.csv"].strip().split("\n")
    rows = [[int(x) for x in line.split(",")] for line in lines[1:]]
    rows = [change(row) for row in rows]
    files["samples.csv"] = lines[0] + "\n" + "".join(",".join(str(x) for x in row) + "\n" for row in rows)


def edit_job(files, client, jobname, **ringmux):
    report = json.loads(files[f"{client}.json"])
    for j in report["jobs"]:
        if j["jobname"] == jobname:
            j["ringmux"].update(ringmux)
    files[f"{client}.json"] = json.dumps(report)


def rss_growth(percent, seconds):  # from the end of the warm-up to the end, linear
    def inject(files):
        warmup = max(math.ceil(seconds * 0.2), 30)
        step = 38000 * percent / 100 / (seconds - warmup)
        edit_samples(files, lambda r: [r[0], r[1] + int(step * max(r[0] - warmup, 0)), r[2], r[3]])
    return inject


def fd_leak(files):  # one fd more every 60 s: a connection never closed now and then
    edit_samples(files, lambda r: [r[0], r[1], r[2] + r[0] // 60, r[3]])


def server_died(files):
    files["samples.csv"] = "\n".join(files["samples.csv"].split("\n")[:400]) + "\n"


def churn_crash(files):
    files["churn.1.out"] += "# exit 139\n"


def server_verify(files):
    files["serve.log"] = files["serve.log"].replace("verify_errors=0", "verify_errors=2")


def no_resets(files):
    files["chaos.reset.json"] = json.dumps({"resets": 0})
    report = json.loads(files["reset.json"])
    for j in report["jobs"]:
        j["ringmux"]["resumes"] = 0
    files["reset.json"] = json.dumps(report)


def failed_call(files):
    edit_job(files, "reset", "unary", errors=1, error="connection lost")
    files["reset.rc"] = "1\n"


CASES = [
    ("clean", lambda f: None, set()),
    ("rss +1 % after warm-up", rss_growth(1, SECONDS), set()),
    ("rss leak after warm-up (+4 %)", rss_growth(4, SECONDS), {"rss growth after warm-up"}),
    ("fd leak", fd_leak, {"fds flat after warm-up"}),
    ("server gone early", server_died, {"server alive"}),
    ("verify error in a client", lambda f: edit_job(f, "steady", "bidi", verify_errors=1), {"verify"}),
    ("message lost", lambda f: edit_job(f, "reset", "read", verify_gaps=3), {"verify"}),
    ("write bytes unconfirmed", lambda f: edit_job(f, "reset", "write", server_confirmed_bytes=1 << 29), {"verify"}),
    ("server verify error", server_verify, {"verify"}),
    ("failed call on the reset path", failed_call, {"failed calls", "clients complete"}),
    ("resume without a fault", lambda f: edit_job(f, "direct", "unary", resumes=1), {"no resume without a fault"}),
    ("resume on the fault-free stream session", lambda f: edit_job(f, "steady", "read", resumes=2),
     {"no resume without a fault"}),
    ("resets that never happened", no_resets, {"resets happened and were survived"}),
    ("churn run crashed", churn_crash, {"clients complete"}),
    ("an idle session never called", lambda f: edit_job(f, "direct", "idle", verified_messages=IDLE - 1),
     {"clients complete"}),
]


SHORT = 60
SHORT_CASES = [
    ("60 s: clean", lambda f: None, set()),
    # Linear growth over the 30 s after the warm-up: the windows compared see about 3/4 of it.
    ("60 s: rss +40 % (under the short-run bound)", rss_growth(40, SHORT), set()),
    ("60 s: rss +70 % (over the short-run bound)", rss_growth(70, SHORT), {"rss growth after warm-up"}),
    # 1.5 MB/s for the 30 s after the warm-up, on about 38 MB.
    ("60 s: rss leak of 1.5 MB/s", rss_growth(100 * 1500 * (SHORT - 30) / 38000, SHORT), {"rss growth after warm-up"}),
]


def run_case(name, inject, expected, seconds=SECONDS):
    files = clean(seconds)
    inject(files)
    with tempfile.TemporaryDirectory() as out:
        for file_name, content in files.items():
            with open(os.path.join(out, file_name), "w", encoding="utf-8") as f:
                f.write(content)
        result = subprocess.run([sys.executable, verdict_script, out, f"--seconds={seconds}", f"--idle-sessions={IDLE}",
                                 f"--churn-connections-max={CHURN_CONNECTIONS_MAX}", "--reset-connections=1",
                                 "--stream-sessions=2"],
                                capture_output=True, text=True, timeout=60)
    failed = {line.split(":", 1)[0][6:] for line in result.stdout.splitlines() if line.startswith("FAIL  ")}
    want_code = 1 if expected else 0
    if result.returncode != want_code or failed != expected:
        failures.append(f"{name}: exit {result.returncode} (want {want_code}), failed {sorted(failed)} "
                        f"(want {sorted(expected)})\n{result.stdout}{result.stderr}")
    else:
        print(f"ok: {name}: " + (f"fails {', '.join(sorted(failed))}" if failed else "passes"))


for case in CASES:
    run_case(*case)
for case in SHORT_CASES:
    run_case(*case, seconds=SHORT)
for failure in failures:
    print("FAIL:", failure)
sys.exit(1 if failures else 0)
