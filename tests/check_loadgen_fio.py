#!/usr/bin/env python3
"""ringmux-loadgen as fio's tools and fio users see it (issue 14):

- json+ read by fio's own fio_jsonplus_clat2csv (Debian's fio package, installed by
  tools/install-deps.sh): the percentiles it computes from our bins are the ones we report,
  within the histogram's error (0.78 %), and its --validate accepts the CSV it wrote;
- the log files (write_lat_log, write_bw_log, write_iops_log, log_avg_msec) have the shape
  of the logs fio 3.33 itself writes (a real fio run with the null engine makes the
  reference here), one latency line per operation the report counts, and bandwidth and
  IOPS windows that add up to the report's totals;
- --output=FILE, --status-interval with neither stdout nor stderr a terminal, SIGINT and
  SIGTERM ending a run with the report of what ran, a size-only run's rates over the time
  it took, time_based;
- fio's unit rules (kb_base, 4k / 4ki / 4kib), job files in order with stonewall, include
  and ${ENV}, cpus_allowed naming a CPU this process may not use, the tcp engine's unary
  calls with resp_bs other than bs.

Every wait is for an event (a report on the pipe, the process's exit) with a generous
bound; no check depends on how fast a loaded machine runs.
usage: check_loadgen_fio.py BUILD_DIR"""
import csv
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

build = sys.argv[1]
loadgen = f"{build}/tools/ringmux-loadgen"
failures = []
# The histogram's promise (base/histogram.h): a reported value is within this share of the
# exact sample, and a bucket's value is the one fio writes for it.
RELATIVE_ERROR = 1 / 128
WAIT_S = 120  # a bound on any one run, far past what it takes


def run(args, **kwargs):
    return subprocess.run([loadgen] + args, capture_output=True, text=True, timeout=WAIT_S, **kwargs)


def json_documents(text):
    """Every JSON document in `text` (status reports come one after another)."""
    decoder, at, documents = json.JSONDecoder(), 0, []
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            return documents
        document, at = decoder.raw_decode(text, at)
        documents.append(document)


def check(condition, ok, failure):
    if condition:
        print(f"ok: {ok}")
    else:
        failures.append(failure)
    return condition


def job_json(args, label):
    """One json run's document, or None (and a failure)."""
    result = run(["--output-format=json"] + args)
    if result.returncode != 0:
        failures.append(f"{label}: exit {result.returncode}: {result.stderr.strip()}")
        return None
    return json.loads(result.stdout)


for tool in ["fio", "fio_jsonplus_clat2csv"]:
    if shutil.which(tool) is None:
        print(f"FAIL: {tool} is not installed (tools/install-deps.sh installs Debian's fio)")
        sys.exit(1)

scratch = tempfile.mkdtemp(prefix="loadgen-fio-")
try:
    # ---- json+ through fio_jsonplus_clat2csv ---------------------------------------------
    plus_path = os.path.join(scratch, "plus.json")
    result = run(["--output-format=json+", f"--output={plus_path}", "--runtime=1",
                  "--name=calls", "--rw=unary", "--bs=64", "--iodepth=4",
                  "--name=echo", "--rw=bidi", "--bs=4k", "--percentile_list=10:50:90:99:99.9:100"])
    if result.returncode != 0 or result.stdout:
        failures.append(f"json+ run: exit {result.returncode}, stdout {result.stdout[:80]!r}: {result.stderr.strip()}")
    else:
        with open(plus_path, encoding="utf-8") as f:
            report = json.load(f)
        stub = os.path.join(scratch, "clat.csv")
        converted = subprocess.run(["fio_jsonplus_clat2csv", plus_path, stub], capture_output=True, text=True,
                                   timeout=WAIT_S)
        validated = subprocess.run(["fio_jsonplus_clat2csv", "--validate", plus_path, stub], capture_output=True,
                                   text=True, timeout=WAIT_S)
        if converted.returncode != 0 or validated.returncode != 0 or "validated" not in validated.stdout:
            failures.append(f"fio_jsonplus_clat2csv: exit {converted.returncode} / {validated.returncode}: "
                            f"{converted.stderr.strip()} {validated.stdout.strip()} {validated.stderr.strip()}")
        else:
            compared = 0
            for number, job in enumerate(report["jobs"]):
                with open(os.path.join(scratch, f"clat_job{number}.csv"), encoding="utf-8") as f:
                    rows = [[cell.strip() for cell in row] for row in csv.reader(f)]
                header, rows = rows[0], [row for row in rows[1:] if row and row[0]]
                for direction in ["read", "write"]:
                    clat = job[direction]["clat_ns"]
                    if clat["N"] == 0:
                        continue
                    column = header.index(f"{direction}_clat_ns_percentile")
                    # fio's tool: each bin's value and the share of samples at or below it.
                    points = [(int(row[0]), float(row[column])) for row in rows if row[column]]
                    for key, ours in clat["percentile"].items():
                        share = float(key) / 100
                        # The first bin that reaches the share; a share equal to a bin's
                        # up to float rounding may land on that bin or the next.
                        candidates = {value for value, reached in points if reached >= share - 1e-9}
                        candidates = sorted(candidates)[:2]
                        near = [v for v in candidates if abs(v - ours) <= RELATIVE_ERROR * v]
                        if not near:
                            failures.append(f"clat2csv {job['jobname']}.{direction} p{key}: we report {ours} ns, "
                                            f"fio's tool {candidates}")
                        compared += 1
            check(compared >= 10, f"fio_jsonplus_clat2csv read our json+ and validated it; its {compared} percentiles "
                  "match ours", f"clat2csv: only {compared} percentiles compared")

    # ---- the keys fio writes, against a real fio json+ document -----------------------------
    # Every key of fio 3.33's json+ (its null engine: no device needed) is in ours, at the
    # same place, but those JSON.md lists under "What fio writes that this does not"; and
    # the latency distribution (latency_ns/us/ms) adds up to 100 % of a job's operations.
    NOT_WRITTEN = {"error", "eta", "sync", "iodepth_level", "iodepth_submit", "iodepth_complete"}

    def key_paths(node, prefix=""):
        paths = set()
        if isinstance(node, dict):
            for key, child in node.items():
                paths.add(prefix + key)
                # Maps whose keys are data (bins, percentiles, options), not fields.
                if key not in ("bins", "percentile", "job options", "global options"):
                    paths |= key_paths(child, prefix + key + ".")
        return paths

    fio_run = subprocess.run(["fio", "--name=ref", "--ioengine=null", "--rw=write", "--bs=4k", "--size=256k",
                              "--output-format=json+"], capture_output=True, text=True, timeout=WAIT_S, cwd=scratch)
    if fio_run.returncode != 0 or result.returncode != 0:
        failures.append(f"fio json+ reference: exit {fio_run.returncode}: {fio_run.stderr.strip()}")
    else:
        fio_doc = json.loads(fio_run.stdout[fio_run.stdout.index("{"):])
        fio_top = set(fio_doc) - {"jobs"}
        fio_job = {path for path in key_paths(fio_doc["jobs"][0]) if path.split(".")[0] not in NOT_WRITTEN}
        missing = sorted((fio_top - set(report)) | {p for p in fio_job if p not in key_paths(report["jobs"][0])})
        sums = [sum(job[unit][key] for unit in ("latency_ns", "latency_us", "latency_ms") for key in job[unit])
                for job in report["jobs"] if job["write"]["clat_ns"]["N"] > 0]
        check(not missing and sums and all(abs(total - 100) < 0.01 for total in sums),
              f"our json+ has all {len(fio_top) + len(fio_job)} keys of fio 3.33's json+ but {sorted(NOT_WRITTEN)}; "
              f"latency_ns/us/ms add up to {[round(total, 3) for total in sums]} %",
              f"keys of fio's json+ missing from ours: {missing}; latency distributions add up to {sums}")

    # ---- log files, against fio's own ------------------------------------------------------
    reference = subprocess.run(["fio", "--name=ref", "--ioengine=null", "--rw=write", "--bs=4k", "--size=256k",
                                "--write_lat_log=" + os.path.join(scratch, "ref"),
                                "--write_bw_log=" + os.path.join(scratch, "ref"),
                                "--write_iops_log=" + os.path.join(scratch, "ref"), "--output-format=terse"],
                               capture_output=True, text=True, timeout=WAIT_S, cwd=scratch)
    fio_lines = []
    for kind in ["lat", "clat", "bw", "iops"]:
        path = os.path.join(scratch, f"ref_{kind}.1.log")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                fio_lines += f.read().splitlines()
    LINE = re.compile(r"^(\d+), (\d+), ([01]), (\d+), 0$")
    check(reference.returncode == 0 and fio_lines and all(LINE.match(line) for line in fio_lines),
          f"fio 3.33 writes its {len(fio_lines)} log lines as 'time, value, direction, bs, 0'",
          f"fio's reference logs: exit {reference.returncode}, {len(fio_lines)} lines, "
          f"first {fio_lines[:2]} {reference.stderr.strip()}")

    def read_log(path):
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        bad = [line for line in lines if not LINE.match(line)]
        if bad:
            failures.append(f"{os.path.basename(path)}: lines not in fio's format: {bad[:3]}")
        return [tuple(int(v) for v in LINE.match(line).groups()) for line in lines if LINE.match(line)]

    prefix = os.path.join(scratch, "lg")
    report = job_json([f"--write_lat_log={prefix}", f"--write_bw_log={prefix}", f"--write_iops_log={prefix}",
                       "--runtime=1200ms", "--name=calls", "--rw=unary", "--bs=64", "--iodepth=2"], "log run")
    if report:
        job = report["jobs"][0]
        lat, clat = read_log(f"{prefix}_lat.1.log"), read_log(f"{prefix}_clat.1.log")
        bw, iops = read_log(f"{prefix}_bw.1.log"), read_log(f"{prefix}_iops.1.log")
        n = job["write"]["clat_ns"]["N"]
        problems = []
        if len(lat) != n or lat != clat:
            problems.append(f"{len(lat)} lat lines ({len(clat)} clat) for {n} operations")
        if any(d != 1 or bs != 64 for _, _, d, bs in lat):
            problems.append(f"lat lines not of the write direction with bs 64: {lat[:2]}")
        if lat and (min(v for _, v, _, _ in lat) != job["write"]["clat_ns"]["min"] or
                    max(v for _, v, _, _ in lat) != job["write"]["clat_ns"]["max"]):
            problems.append("the lat log's extremes are not the report's min and max")
        times = [t for t, _, _, _ in lat]
        if times != sorted(times) or (times and times[-1] > job["job_runtime"]):
            problems.append(f"lat times not in order within the run: {times[:3]} .. {times[-3:]}")
        # Windows of 500 ms: 500, 1000, then the last part (1200); per direction for bw.
        if [t for t, _, _, _ in iops] != [500, 1000, 1200] or [t for t, _, d, _ in bw if d == 1] != [500, 1000, 1200]:
            problems.append(f"windows {[t for t, _, _, _ in iops]} / {[t for t, _, _, _ in bw]}, want 500, 1000, 1200")
        ops = sum(v * (t - prev) / 1000 for (t, v, _, _), prev in zip(iops, [0] + [t for t, _, _, _ in iops]))
        if abs(ops - job["write"]["total_ios"]) > 3:  # each window's rate is rounded to 1/s
            problems.append(f"the iops log adds up to {ops:.0f} operations, the report says {job['write']['total_ios']}")
        kib = sum(v * 0.5 for t, v, d, _ in bw if d == 0 and t <= 1000) + sum(v * 0.2 for t, v, d, _ in bw if d == 0 and t > 1000)
        if abs(kib - job["read"]["io_bytes"] / 1024) > 3:  # KiB/s rounded per window
            problems.append(f"the read bw log adds up to {kib:.1f} KiB, the report {job['read']['io_bytes'] / 1024:.1f}")
        check(not problems, f"logs: {n} latency lines, one per operation; bw and iops windows add up to the report",
              f"logs: {problems}")
    # Averaged: a line per 200 ms window, the windows' mean latency.
    report = job_json([f"--write_lat_log={prefix}avg", "--log_avg_msec=200", "--runtime=1",
                       "--rw=unary", "--bs=64"], "log_avg_msec run")
    if report:
        lat = read_log(f"{prefix}avg_lat.1.log")
        clat = report["jobs"][0]["write"]["clat_ns"]
        check(0 < len(lat) <= 5 and all(t % 200 == 0 and bs == 0 for t, _, _, bs in lat) and
              all(clat["min"] <= v <= clat["max"] for _, v, _, _ in lat),
              f"log_avg_msec=200: {len(lat)} window means within min..max",
              f"log_avg_msec=200: {lat}, clat {clat['min']}..{clat['max']}")

    # ---- --output ----------------------------------------------------------------------------
    out_path = os.path.join(scratch, "report.txt")
    result = run(["--runtime=200ms", "--rw=unary", "--bs=64", f"--output={out_path}", "--output-format=terse,normal"])
    text = open(out_path, encoding="utf-8").read() if os.path.exists(out_path) else ""
    check(result.returncode == 0 and not result.stdout and text.startswith("1;") and "\njob1: (groupid=0" in text,
          "--output: the terse line then the normal report, in the file, nothing on stdout",
          f"--output: exit {result.returncode}, stdout {result.stdout[:60]!r}, file {text[:120]!r}")
    result = run(["--runtime=200ms", "--rw=unary", "--output=/nonexistent-dir/report.txt"])
    check(result.returncode == 1 and "--output" in result.stderr and "/nonexistent-dir/report.txt" in result.stderr
          and "No such file or directory" in result.stderr,
          f"an unwritable --output fails before the run: {result.stderr.strip()}",
          f"unwritable --output: exit {result.returncode}, {result.stderr!r}")

    # ---- --status-interval on pipes --------------------------------------------------------
    result = run(["--runtime=2", "--rw=unary", "--bs=64", "--status-interval=300ms", "--output-format=json"])
    documents = json_documents(result.stdout) if result.returncode == 0 else []
    runtimes = [d["jobs"][0]["job_runtime"] for d in documents]
    check(len(documents) >= 3 and runtimes == sorted(runtimes) and runtimes[-1] == 2000 and not result.stderr,
          f"--status-interval=300ms on pipes: {len(documents) - 1} interim reports, windows {runtimes} ms",
          f"--status-interval: exit {result.returncode}, {len(documents)} documents, runtimes {runtimes}, "
          f"stderr {result.stderr[:200]!r}")

    # ---- SIGINT and SIGTERM: the report of what ran ------------------------------------------
    for sig, engine in [(signal.SIGINT, "ringmux"), (signal.SIGTERM, "tcp")]:
        process = subprocess.Popen([loadgen, "--runtime=60", "--rw=unary", "--bs=64", f"--ioengine={engine}",
                                    "--status-interval=200ms", "--output-format=json"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The signal goes once a status report shows calls done: the job is running.
        first, document = "", ""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            first += line
            document += line
            if not line:
                break
            if line == "}\n":  # a report's last line
                if json.loads(document)["jobs"][0]["write"]["total_ios"] > 0:
                    break
                document = ""
        process.send_signal(sig)
        try:
            rest, errors = process.communicate(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            rest, errors = process.communicate()
        documents = json_documents(first + rest) if process.returncode == 0 else []
        final = documents[-1]["jobs"][0] if documents else {}
        check(process.returncode == 0 and len(documents) >= 2 and 0 < final["job_runtime"] < 60000 and
              final["write"]["total_ios"] > 0 and final["ringmux"]["errors"] == 0 and
              signal.strsignal(sig) in errors,
              f"{signal.Signals(sig).name} ({engine}): the run ended after {final.get('job_runtime')} ms of 60 s and "
              f"reported {final.get('write', {}).get('total_ios')} calls",
              f"{signal.Signals(sig).name} ({engine}): exit {process.returncode}, {len(documents)} documents, "
              f"stderr {errors.strip()!r}")

    # ---- rates of size-only runs, time_based -----------------------------------------------------
    for engine in ["ringmux", "tcp"]:
        report = job_json(["--rw=write", "--bs=64k", "--size=32m", f"--ioengine={engine}"], f"size-only {engine}")
        if report:
            w = report["jobs"][0]["write"]
            seconds = w["runtime"] / 1000
            check(w["io_bytes"] == 32 << 20 and w["runtime"] > 0 and
                  abs(w["bw_bytes"] * seconds - w["io_bytes"]) <= 0.01 * w["io_bytes"] + w["bw_bytes"] * 0.001 and
                  abs(w["iops"] * seconds - w["total_ios"]) <= 0.01 * w["total_ios"] + w["iops"] * 0.001,
                  f"size-only ({engine}): 32 MiB in {w['runtime']} ms, bw_bytes {w['bw_bytes']} = io_bytes / runtime",
                  f"size-only ({engine}): {w}")
    report = job_json(["--rw=unary", "--bs=64", "--size=6400", "--runtime=1", "--time_based"], "time_based")
    if report:
        w = report["jobs"][0]["write"]
        check(w["runtime"] == 1000 and w["io_bytes"] > 6400,
              f"time_based: ran the whole second ({w['io_bytes']} bytes past size=6400)", f"time_based: {w}")

    # ---- fio's units -------------------------------------------------------------------------------
    for args, size, bs in [(["--bs=4kib", "--size=40kib"], 40000, 4000), (["--bs=4ki", "--size=40k"], 40960, 4096),
                           (["--kb_base=1000", "--bs=4k", "--size=40k"], 40000, 4000),
                           (["--kb_base=1000", "--bs=4kib", "--size=40kib"], 40960, 4096)]:
        report = job_json(["--rw=write", "--runtime=60"] + args, f"units {args}")
        if report:
            w = report["jobs"][0]["write"]
            check(w["io_bytes"] == size and w["total_ios"] == size // bs,
                  f"units {' '.join(args)}: {w['total_ios']} messages of {bs} bytes",
                  f"units {args}: io_bytes {w['io_bytes']}, total_ios {w['total_ios']}, want {size} / {size // bs}")

    # ---- job files: order, stonewall, include, ${ENV} -----------------------------------------------
    with open(os.path.join(scratch, "depth.inc"), "w", encoding="utf-8") as f:
        f.write("; included into [first]\niodepth=2\n")
    with open(os.path.join(scratch, "a.fio"), "w", encoding="utf-8") as f:
        f.write("[global]\nruntime=${LOADGEN_TEST_RUNTIME}\nbs=64\n[first]\nrw=unary\ninclude depth.inc\n"
                "[second]\nstonewall\nrw=write\nbs=4k\n")
    with open(os.path.join(scratch, "b.fio"), "w", encoding="utf-8") as f:
        f.write("[third]\nrw=unary\nsize=6400\n")
    environment = dict(os.environ, LOADGEN_TEST_RUNTIME="400ms")
    result = run(["--output-format=json", "--name=zero", "--rw=unary", "--bs=64", "--size=6400", "--runtime=60",
                  os.path.join(scratch, "a.fio"), os.path.join(scratch, "b.fio")], env=environment)
    if result.returncode != 0:
        failures.append(f"job files: exit {result.returncode}: {result.stderr.strip()}")
    else:
        jobs = json.loads(result.stdout)["jobs"]
        names = [j["jobname"] for j in jobs]
        by_name = {j["jobname"]: j for j in jobs}
        problems = []
        if names != ["zero", "first", "second", "third"]:
            problems.append(f"order {names}")
        elif [j["groupid"] for j in jobs] != [0, 0, 1, 1]:
            problems.append(f"groups {[j['groupid'] for j in jobs]}, want 0 0 1 1")
        else:
            first, second = by_name["first"], by_name["second"]
            if first["job options"] != {"name": "first", "rw": "unary", "iodepth": "2"}:
                problems.append(f"first's options {first['job options']} (the include's iodepth=2 missing?)")
            if first["job_runtime"] != 400 or second["job_runtime"] != 400:
                problems.append(f"runtime=${{LOADGEN_TEST_RUNTIME}}: {first['job_runtime']} / {second['job_runtime']} ms")
            # stonewall: the second group starts once the first has ended (1 ms: both times
            # are whole milliseconds).
            if second["job_start"] < first["job_start"] + first["job_runtime"] - 1:
                problems.append(f"second started at {second['job_start']}, before first ended "
                                f"({first['job_start']} + {first['job_runtime']})")
        check(not problems, "job files: command line's jobs, then each file's in order; stonewall starts group 1 "
              "after group 0 ended; include and ${ENV} applied", f"job files: {problems}")
    result = run([os.path.join(scratch, "a.fio")], env={k: v for k, v in os.environ.items()
                                                        if k != "LOADGEN_TEST_RUNTIME"})
    check(result.returncode == 2 and "a.fio line 2" in result.stderr and "${LOADGEN_TEST_RUNTIME} is not set" in result.stderr,
          f"an unset ${{ENV}} names the file, line and variable: {result.stderr.strip()}",
          f"unset env: exit {result.returncode}, {result.stderr!r}")

    # ---- cpus_allowed, tcp unary with resp_bs ---------------------------------------------------------
    refused_cpu = max(os.sched_getaffinity(0)) + 1
    result = run(["--runtime=1", f"--cpus_allowed={refused_cpu}"])
    check(result.returncode == 2 and f"cpus_allowed={refused_cpu}" in result.stderr and f"CPU {refused_cpu}" in result.stderr,
          f"cpus_allowed={refused_cpu} refused: {result.stderr.strip()}",
          f"cpus_allowed={refused_cpu}: exit {result.returncode}, {result.stderr!r}")
    # Responses of another size than their requests, as on ringmux: resp_bs, or bs under a
    # bssplit mix of requests.
    for extra, response in [(["--bs=64", "--resp_bs=8k"], 8192), (["--bssplit=64/50:1k/50", "--resp_bs=8k"], 8192),
                            (["--bssplit=64/50:1k/50"], 4096)]:
        report = job_json(["--ioengine=tcp", "--rw=unary", "--verify=1", "--iodepth=4", "--size=64k",
                           "--runtime=60"] + extra, f"tcp responses {extra}")
        if report:
            job = report["jobs"][0]
            ops = job["write"]["total_ios"]
            check(job["ringmux"]["errors"] == 0 and ops > 0 and job["read"]["io_bytes"] == ops * response and
                  job["ringmux"]["verified_messages"] >= ops,
                  f"tcp unary {' '.join(extra)}: {ops} calls of {response}-byte responses, verified",
                  f"tcp {extra}: {job['ringmux']}, read {job['read']['io_bytes']} bytes for {ops} calls")
finally:
    shutil.rmtree(scratch, ignore_errors=True)

for failure in failures:
    print("FAIL:", failure)
sys.exit(1 if failures else 0)
