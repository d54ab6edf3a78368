#!/usr/bin/env python3
"""The reports of ringmux-loadgen beyond the numbers: that the JSON of a short run has
exactly the fields tools/loadgen/JSON.md documents (SCHEMA below mirrors that page, and a
check compares the two), that --output-format=terse prints one line per job clone with the
field count tools/loadgen/report.h documents, and that --plot writes a well-formed SVG
naming every job, or fails with a message naming the path when it cannot.

Run by check_loadgen.py (meson test 'loadgen'); also on its own, in about 3 s:
usage: check_loadgen_report.py BUILD_DIR"""
import json
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The schema of --output-format=json, as JSON.md documents it. Nodes:
#   int            a non-negative integer      float   any number
#   str            a string                    {...}   an object with exactly these keys
#   ("array", N)   a list of N                 ("enum", a, b, ...) one of these strings
#   ("map", R, N)  an object whose keys match the regex R and whose values are N
PERCENTILE_KEY = r"^\d{1,3}\.\d{6}$"
LATENCY = {"min": int, "max": int, "mean": float, "stddev": float, "N": int,
           "percentile": ("map", PERCENTILE_KEY, int)}
# json+ adds the histogram's bins, with samples only: bucket value (ns) -> count.
LATENCY_PLUS = dict(LATENCY, bins=("optional", ("map", r"^\d+$", int)))


def direction(latency):
    return {
        "io_bytes": int, "io_kbytes": int, "bw_bytes": int, "bw": int, "iops": float, "runtime": int,
        "total_ios": int, "short_ios": int, "drop_ios": int,
        "slat_ns": {"min": int, "max": int, "mean": float, "stddev": float, "N": int},
        "clat_ns": latency, "lat_ns": latency,
        "bw_min": int, "bw_max": int, "bw_agg": float, "bw_mean": float, "bw_dev": float, "bw_samples": int,
        "iops_min": int, "iops_max": int, "iops_mean": float, "iops_stddev": float, "iops_samples": int,
    }


def schema(latency):
    return {
        "fio version": str, "ringmux_version": int, "timestamp": int, "timestamp_ms": int, "time": str,
        "global options": ("optional", ("map", r".+", str)),
        "jobs": ("array", {
            "jobname": str, "groupid": int, "job_start": int, "job_runtime": int, "job options": ("map", r".+", str),
            "write": direction(latency),
            "read": direction(latency),
            "trim": direction(latency),
            "elapsed": int, "usr_cpu": float, "sys_cpu": float, "ctx": int, "majf": int, "minf": int,
            "latency_depth": int, "latency_target": int, "latency_percentile": float, "latency_window": int,
            "latency_ns": ("map", r"^\d+$", float), "latency_us": ("map", r"^\d+$", float),
            "latency_ms": ("map", r"^(>=)?\d+$", float),
            "ringmux": {
                "engine": ("enum", "ringmux", "tcp"), "rw": ("enum", "unary", "write", "read", "bidi", "quorum"),
                "errors": int, "error": str, "server_confirmed_bytes": int, "client_sent_bytes": int,
                "stream_share_min": float, "stream_share_max": float,
                "verify_errors": int, "verify_gaps": int, "verify_duplicates": int, "verified_messages": int,
                "resumes": int, "bytes_replayed": int, "rate_dropped": int,
                "resume_ns": {"count": int, "p50": int, "p99": int, "max": int},
            },
        }),
    }


SCHEMA = schema(LATENCY)
SCHEMA_PLUS = schema(LATENCY_PLUS)


def validate(node, value, where, errors):
    """Appends to `errors` every place where `value` does not match schema `node`."""
    if node is int:
        if type(value) is not int or value < 0:
            errors.append(f"{where}: {value!r} is not a non-negative integer")
    elif node is float:
        if type(value) not in (int, float):
            errors.append(f"{where}: {value!r} is not a number")
    elif node is str:
        if type(value) is not str:
            errors.append(f"{where}: {value!r} is not a string")
    elif isinstance(node, dict):
        if type(value) is not dict:
            errors.append(f"{where}: not an object")
            return
        for key in node.keys() - value.keys():
            if not (isinstance(node[key], tuple) and node[key][0] == "optional"):
                errors.append(f"{where}.{key}: documented but missing")
        for key in value.keys() - node.keys():
            errors.append(f"{where}.{key}: printed but not documented")
        for key in node.keys() & value.keys():
            validate(node[key], value[key], f"{where}.{key}", errors)
    elif node[0] == "optional":
        validate(node[1], value, where, errors)
    elif node[0] == "array":
        if type(value) is not list:
            errors.append(f"{where}: not an array")
            return
        for i, item in enumerate(value):
            validate(node[1], item, f"{where}[{i}]", errors)
    elif node[0] == "enum":
        if value not in node[1:]:
            errors.append(f"{where}: {value!r} is not one of {node[1:]}")
    elif node[0] == "map":
        if type(value) is not dict:
            errors.append(f"{where}: not an object")
            return
        for key, item in value.items():
            if not re.match(node[1], key):
                errors.append(f"{where}: key {key!r} does not match {node[1]}")
            validate(node[2], item, f"{where}[{key!r}]", errors)
    else:
        raise AssertionError(f"bad schema node {node!r}")


def schema_fields(node, into):
    """Every object key the schema names, at any depth."""
    if isinstance(node, dict):
        for key, child in node.items():
            into.add(key)
            schema_fields(child, into)
    elif isinstance(node, tuple) and node[0] in ("array", "optional"):
        schema_fields(node[1], into)
    return into


def documented_fields():
    """The first column of every `| field | ...` table in JSON.md."""
    fields, in_table = set(), False
    with open(os.path.join(SOURCE, "tools/loadgen/JSON.md"), encoding="utf-8") as doc:
        for line in doc:
            if re.match(r"^\|\s*field\s*\|", line):
                in_table = True
            elif not line.startswith("|"):
                in_table = False
            elif in_table:
                match = re.match(r"^\|\s*`([^`]+)`", line)
                if match:
                    fields.add(match.group(1))
    return fields


def terse_field_count():
    """The count report.h states (its static_assert), so that the test follows the header."""
    with open(os.path.join(SOURCE, "tools/loadgen/report.h"), encoding="utf-8") as header:
        match = re.search(r"terse_field_count == (\d+)", header.read())
    return int(match.group(1)) if match else None


# Three jobs that cover the directions: unary calls (latency in write), a write stream job
# with its own percentile list, and a read stream job (no latency samples). Each ends when
# it has moved its --size, an event, not at the end of a window that load can empty: the
# three share one connection, so `down`'s OPEN queues behind bulk's first windows, and a
# busy machine (a TSan build, another suite beside) once let 300 ms pass before its first
# byte. JOBS_RUNTIME only bounds a run whose target never answers.
JOBS_RUNTIME_MS = 60000
JOBS = [f"--runtime={JOBS_RUNTIME_MS}ms",
        "--name=calls", "--rw=unary", "--bs=64", "--iodepth=4", "--size=16k",
        "--name=bulk", "--rw=write", "--bs=4k", "--streams=2", "--percentile_list=50:99:99.9", "--size=1m",
        "--name=down", "--rw=read", "--bs=4k", "--size=256k"]
DEFAULT_PERCENTILES = [1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99]


def check(loadgen):
    """Runs the checks; returns the failures (strings), prints an "ok" line per check."""
    failures = []

    def run(args):
        return subprocess.run([loadgen] + args, capture_output=True, text=True, timeout=JOBS_RUNTIME_MS / 1000 + 60)

    # The schema here and the tables of JSON.md name the same fields.
    documented, checked = documented_fields(), schema_fields(SCHEMA_PLUS, set())
    if documented != checked:
        failures.append(f"JSON.md and the test's schema differ: only in JSON.md {sorted(documented - checked)}, "
                        f"only in the schema {sorted(checked - documented)}")
    else:
        print(f"ok: JSON.md documents the {len(checked)} fields of the schema")

    with tempfile.TemporaryDirectory(prefix="loadgen-report-") as scratch:
        # (a) json+ against the schema, with --plot in the same run; json too.
        svg_path = os.path.join(scratch, "x.svg")
        result = run(["--output-format=json+", f"--plot={svg_path}"] + JOBS)
        if result.returncode != 0:
            failures.append(f"json+plot run: exit {result.returncode}: {result.stderr.strip()}")
            return failures
        report = json.loads(result.stdout)
        errors = []
        validate(SCHEMA_PLUS, report, "$", errors)
        # json+: bins exactly where there are samples, adding up to N.
        for job in report["jobs"] if not errors else []:
            for name in ["read", "write", "trim"]:
                for latency in ["clat_ns", "lat_ns"]:
                    clat = job[name][latency]
                    if ("bins" in clat) != (clat["N"] > 0) or sum(clat.get("bins", {}).values()) != clat["N"]:
                        errors.append(f"{job['jobname']}.{name}.{latency}: N {clat['N']}, bins {clat.get('bins')}")
        # Plain json: the same document without bins.
        plain = run(["--output-format=json", f"--runtime={JOBS_RUNTIME_MS}ms", "--name=calls", "--rw=unary", "--bs=64",
                     "--size=4k"])
        if plain.returncode != 0:
            errors.append(f"json run: exit {plain.returncode}: {plain.stderr.strip()}")
        else:
            validate(SCHEMA, json.loads(plain.stdout), "$(json)", errors)
        failures += [f"json schema: {e}" for e in errors]
        names = [job["jobname"] for job in report["jobs"]]
        if names != ["calls", "bulk", "down"]:
            failures.append(f"json: jobs {names}, want calls, bulk, down")
        if not errors and names == ["calls", "bulk", "down"]:
            calls, bulk, down = report["jobs"]
            # The percentile keys follow each job's list; the direction without the
            # operations has no latency at all.
            for job, direction, want in [(calls, "write", DEFAULT_PERCENTILES), (bulk, "write", [50, 99, 99.9])]:
                clat = job[direction]["clat_ns"]
                keys = [f"{p:.6f}" for p in want]
                if list(clat["percentile"]) != keys:
                    failures.append(f"json {job['jobname']}: percentile keys {list(clat['percentile'])}, want {keys}")
                elif not (clat["N"] > 0 and clat["min"] <= clat["percentile"]["50.000000"] <= clat["max"]
                          and clat["min"] <= clat["mean"] <= clat["max"]):
                    failures.append(f"json {job['jobname']}: inconsistent clat_ns {clat}")
                # Each job ends by size, long before the runtime: rates are over the time it took.
                if not 0 < job[direction]["runtime"] < JOBS_RUNTIME_MS or job["job_runtime"] != job[direction]["runtime"]:
                    failures.append(f"json {job['jobname']}: runtime {job[direction]['runtime']} ms, job_runtime "
                                    f"{job['job_runtime']} ms for a job bound by size (runtime {JOBS_RUNTIME_MS} ms)")
            for job, direction in [(calls, "read"), (bulk, "read"), (down, "write")]:
                clat = job[direction]["clat_ns"]
                if clat["N"] != 0 or clat["percentile"] or job[direction]["iops"] != 0:
                    failures.append(f"json {job['jobname']}.{direction}: operations where none are: {job[direction]}")
            # Read streams carry their operations in read (latency: none measured so far).
            if down["read"]["io_bytes"] <= 0 or down["read"]["iops"] <= 0:
                failures.append(f"json down: read direction moved nothing: {down['read']}")
        if not any(f.startswith("json") for f in failures):
            print(f"ok: json of {len(names)} jobs matches the schema")

        # (c) The SVG of that run: well formed, one curve per job with samples, every job named.
        try:
            root = ET.parse(svg_path).getroot()
        except (OSError, ET.ParseError) as error:
            failures.append(f"plot: {svg_path} is not well-formed XML ({error})")
        else:
            ns = "{http://www.w3.org/2000/svg}"
            text = " ".join("".join(t.itertext()) for t in root.iter(f"{ns}text"))
            curves = root.findall(f".//{ns}polyline")
            problems = []
            if root.tag != f"{ns}svg":
                problems.append(f"root element {root.tag}")
            problems += [f"job {n} not named" for n in names if n not in text]
            problems += [f"no '{label}' axis label" for label in ["percentile", "latency"] if label not in text]
            if root.find(f"{ns}title") is None or "latency" not in (root.find(f"{ns}title").text or ""):
                problems.append("no title")
            with_samples = sum(1 for job in report["jobs"]
                               if job["read" if job["ringmux"]["rw"] == "read" else "write"]["clat_ns"]["N"] > 0)
            if len(curves) != with_samples or with_samples < 2:  # calls and bulk at least
                problems.append(f"{len(curves)} curves, want one per job with samples ({with_samples})")
            _, _, width, height = (float(v) for v in root.get("viewBox").split())
            for curve in curves:
                points = [tuple(map(float, p.split(","))) for p in curve.get("points").split()]
                if len(points) < 10 or not all(0 <= x <= width and 0 <= y <= height for x, y in points):
                    problems.append(f"curve {curve.findtext(f'{ns}title')}: {len(points)} points, or outside the view")
                elif any(b[0] < a[0] or b[1] > a[1] for a, b in zip(points, points[1:])):
                    # Percentiles never decrease: rightwards, the curve only rises (y shrinks).
                    problems.append(f"curve {curve.findtext(f'{ns}title')} is not monotonic")
            failures += [f"plot: {p}" for p in problems]
            if not problems:
                print(f"ok: --plot wrote a well-formed SVG, {len(curves)} curves, {len(names)} jobs named")

        # (b) terse: one line per job clone, the documented field count, fields in place.
        want_fields = terse_field_count()
        result = run(["--output-format=terse"] + JOBS + ["--numjobs=2"])
        lines = result.stdout.splitlines()
        want_names = ["calls", "bulk", "down.0", "down.1"]
        if want_fields is None:
            failures.append("terse: no 'terse_field_count == N' in tools/loadgen/report.h")
        elif result.returncode != 0:
            failures.append(f"terse run: exit {result.returncode}: {result.stderr.strip()}")
        elif [line.split(";")[2] if ";" in line else line for line in lines] != want_names:
            failures.append(f"terse: lines {lines!r}, want one for each of {want_names}")
        else:
            problems = []
            slot = re.compile(r"^(\d+\.\d{6}%=\d+\.\d{3}|0%=0)$")
            for line in lines:
                fields = line.split(";")
                name = fields[2]
                if len(fields) != want_fields:
                    problems.append(f"{name}: {len(fields)} fields, want {want_fields}")
                    continue
                if fields[0] != "1" or not re.match(r"^\d+\.\d+\.\d+", fields[1]) or fields[3] != "ringmux":
                    problems.append(f"{name}: header {fields[:6]}")
                read, write = fields[6:34], fields[34:62]
                for label, section in [("read", read), ("write", write)]:
                    try:
                        [float(v) for v in section[:8]]
                    except ValueError:
                        problems.append(f"{name} {label}: non-numeric {section[:8]}")
                    if not all(slot.match(s) for s in section[8:]):
                        problems.append(f"{name} {label}: bad percentile slots {section[8:]}")
                try:
                    [float(v) for v in fields[62:]]
                except ValueError:
                    problems.append(f"{name}: non-numeric ringmux fields {fields[62:]}")
                # Where the operations are: write for unary and write, read for read.
                ops = read if fields[4] == "read" else write
                filled = [s for s in ops[8:] if s != "0%=0"]
                # Read streams measure no latency so far: 0 slots, or all 17 once they do.
                want_filled = {"calls": [17], "bulk": [3]}.get(name, [0, 17])
                if len(filled) not in want_filled or int(ops[0]) <= 0 or int(ops[3]) <= 0:
                    problems.append(f"{name}: {len(filled)} percentiles (want {want_filled}), section {ops[:8]}")
                elif name == "bulk" and not filled[1].startswith("99.000000%="):
                    problems.append(f"bulk: second percentile slot {filled[1]!r}")
            failures += [f"terse: {p}" for p in problems]
            if not problems:
                print(f"ok: terse, {len(lines)} lines of {want_fields} fields")

    # A plot that cannot be written: refused before the run, naming the option and path.
    bad = run(["--runtime=300ms", "--rw=unary", "--bs=64", "--plot=/nonexistent-dir/x.svg"])
    if bad.returncode == 0 or "--plot" not in bad.stderr or "/nonexistent-dir/x.svg" not in bad.stderr \
            or "No such file or directory" not in bad.stderr or bad.stdout:
        failures.append(f"unwritable plot: exit {bad.returncode}, stderr {bad.stderr!r}, stdout {bad.stdout[:80]!r}")
    else:
        print(f"ok: unwritable --plot fails (exit {bad.returncode}): {bad.stderr.strip()}")
    return failures


if __name__ == "__main__":
    found = check(f"{sys.argv[1]}/tools/ringmux-loadgen")
    for failure in found:
        print("FAIL:", failure)
    sys.exit(1 if found else 0)
