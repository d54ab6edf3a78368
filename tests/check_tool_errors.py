#!/usr/bin/env python3
"""ringmux-serve and ringmux-chaos name the cause of what goes wrong: a bad option names
the option and what it accepts (exit 2); a CPU the process may not run on names the CPUs
it may; a failed listen names the errno; and ringmux-chaos, while running, says on stderr
why it cannot serve: an upstream that refuses (ECONNREFUSED), running out of descriptors
(EMFILE, with the limits), and reaching its pair limit (pairs_max).

usage: check_tool_errors.py BUILD_DIR"""
import os
import re
import resource
import socket
import subprocess
import sys
from pathlib import Path

TIMEOUT_S = 30
# ringmux-chaos reports at most once a second; a run of 3 s leaves it two chances.
CHAOS_RUN = "--duration=3s"
# The descriptor limit of the EMFILE case: stdio, the listener, the eventfd and a few
# pairs fit; the connections below need more.
CHAOS_FDS_MAX = 24
# ringmux-chaos's pairs_max (tools/chaos/proxy.h), and one more client than it holds.
PAIRS_MAX = 256


def run(command, **kwargs):
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, **kwargs)


def expect_refusal(failures, command, exit_code, *phrases):
    result = run(command)
    missing = [phrase for phrase in phrases if phrase not in result.stderr]
    name = " ".join(str(part) for part in command[1:])
    if result.returncode != exit_code or missing:
        failures.append(f"{name}: exit {result.returncode} (wanted {exit_code}), missing {missing} in {result.stderr!r}")
    else:
        print(f"ok: {name}: {result.stderr.strip()}")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def chaos_run(chaos, upstream_port, clients, preexec_fn=None):
    """Runs ringmux-chaos for CHAOS_RUN on a port it picks, opens `clients` connections
    through it, and returns its stderr."""
    process = subprocess.Popen([chaos, "--listen=127.0.0.1:0", f"--upstream=127.0.0.1:{upstream_port}", CHAOS_RUN],
                               stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)
    first = process.stderr.readline()  # "...; listening on 127.0.0.1:PORT, upstream ..."
    port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", first).group(1))
    opened = []
    for _ in range(clients):
        try:
            opened.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except ConnectionResetError:  # accepted, then reset: the upstream refused it
            opened.append(None)
    _, rest = process.communicate(timeout=TIMEOUT_S)
    for connection in opened:
        if connection is not None:
            connection.close()
    return first + rest


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    build = Path(sys.argv[1]).resolve()
    serve, chaos = build / "tools" / "ringmux-serve", build / "tools" / "ringmux-chaos"
    failures = []

    allowed = sorted(os.sched_getaffinity(0))
    expect_refusal(failures, [serve, f"--cpus={allowed[-1] + 1}"], 2, "option '--cpus'",
                   f"CPU {allowed[-1] + 1} is not one this process may run on (it may run on ")
    expect_refusal(failures, [serve, "--listen"], 2, "option '--listen' needs a value (--listen=ADDRESS:PORT)")
    expect_refusal(failures, [serve, "--frobnicate=1"], 2, "unknown option '--frobnicate' (see --help)")
    expect_refusal(failures, [serve, "--ioengine=dpdk"], 2, "option '--ioengine': 'dpdk' is not one of ringmux, tcp")
    expect_refusal(failures, [serve, "--max_streams=2000000"], 2, "option '--max_streams'", "from 1 to 1048576")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        expect_refusal(failures, [serve, f"--listen=127.0.0.1:{port}", "--duration=1s"], 1, "address already in use")
        expect_refusal(failures, [chaos, f"--listen=127.0.0.1:{port}", "--upstream=127.0.0.1:1"], 1,
                       f"listen on 127.0.0.1:{port}", "(EADDRINUSE)")
    expect_refusal(failures, [chaos, "--listen=127.0.0.1:0"], 2, "option '--upstream' is required")

    # An upstream that refuses: each client is reset, and chaos says why.
    closed_port = free_port()
    stderr = chaos_run(chaos, closed_port, 3)
    wanted = f"upstream 127.0.0.1:{closed_port}: "
    if wanted not in stderr or "(ECONNREFUSED)" not in stderr:
        failures.append(f"chaos, upstream refusing: {stderr!r}")
    else:
        print("ok: chaos, upstream refusing:", [line for line in stderr.splitlines() if wanted in line][0])

    with socket.socket() as upstream:
        upstream.bind(("127.0.0.1", 0))
        upstream.listen(PAIRS_MAX * 2)  # connections complete in the backlog, never accepted
        upstream_port = upstream.getsockname()[1]

        # Out of descriptors: the errno and the limits.
        def limit_fds():
            resource.setrlimit(resource.RLIMIT_NOFILE, (CHAOS_FDS_MAX, CHAOS_FDS_MAX))
        stderr = chaos_run(chaos, upstream_port, CHAOS_FDS_MAX, preexec_fn=limit_fds)
        if "(EMFILE)" not in stderr or f"descriptor limit {CHAOS_FDS_MAX}" not in stderr:
            failures.append(f"chaos, {CHAOS_FDS_MAX} descriptors: {stderr!r}")
        else:
            print("ok: chaos out of descriptors:", [line for line in stderr.splitlines() if "EMFILE" in line][0])

        # The pair limit: said once, with the limit's name.
        stderr = chaos_run(chaos, upstream_port, PAIRS_MAX + 1)
        if stderr.count(f"{PAIRS_MAX} pairs open, the most it holds (pairs_max") != 1:
            failures.append(f"chaos, {PAIRS_MAX + 1} clients: {stderr!r}")
        else:
            print("ok: chaos at its pair limit:", [line for line in stderr.splitlines() if "pairs_max" in line][0])

    for failure in failures:
        print("FAIL:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
