#!/usr/bin/env python3
"""The kTLS path of the TLS transport on a real kernel: the mux tests' TLS cases, where every
connection's record layer moves into the kernel after its handshake, and the kernel case that
checks it (1,000 echoes with both record layers in the kernel).

With them, the TLS sessions handed between a server's loops and a TLS cluster. On a kernel
with the `tls` ULP they run here. Elsewhere (the project's machines) they run
under Debian's 6.1 kernel in qemu (tests/vm/run_in_vm.sh, software emulation: ~40 s, plus a
one-time download of the kernel package), in the release build only (sanitizer builds are
too slow under emulation); skipped (exit 77) where neither is possible. The hand-over itself
is tested everywhere against a model of the kernel's record layer
(tests/mux/link/test_ktls.cpp).

usage: check_ktls.py BUILD_DIR SOURCE_DIR SANITIZE"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

from kernel_tls import ktls_available

VM_TIMEOUT_S = 900  # TCG on two shared cores: ~40 s for the TLS tests when quiet


def check_output(output, code):
    """The run's verdict: doctest's, and the kernel case must have run (not said skipped)."""
    if code != 0:
        print(f"FAIL: the TLS tests exited {code}")
        return 1
    if "skipped: this kernel has no tls ULP" in output:
        print("FAIL: the kernel case skipped although the kernel has the tls ULP")
        return 1
    counts = re.search(r"\[doctest\] test cases: *(\d+) \| *(\d+) passed", output)
    if "Status: SUCCESS" not in output or counts is None or int(counts.group(2)) == 0:
        print("FAIL: no test case ran and passed")
        return 1
    print("PASS on a kernel with the tls ULP")
    return 0


def runs(build):
    """What runs on the kTLS kernel: the TLS tests (the kernel case among them), and the TLS
    sessions handed between loops (only the fd moves when the kernel has the records)."""
    tests = build / "tests"
    return [
        [str(tests / "mux_tests"), "-tc=tls*", "-s"],
        [str(tests / "tools_tests"), "-tc=cross-loop resume over TLS*"],
        [str(tests / "cluster_tests"), "-tc=*over mutual TLS*"],
    ]


def main():
    build, source, sanitize = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    host = ktls_available()
    if not host and sanitize != "none":
        print(f"skipped: no tls ULP in this kernel, and the VM run is for the release build (this one: {sanitize})")
        return 77
    if not host and shutil.which("qemu-system-x86_64") is None:
        print("skipped: no tls ULP in this kernel and no qemu-system-x86_64 to run Debian's kernel "
              "(tools/install-deps.sh installs it)")
        return 77
    vm = source / "tests" / "vm" / "run_in_vm.sh"
    failed = 0
    for args in runs(build):
        print("$", " ".join(args[:2]), "(on this kernel)" if host else "(in the VM)")
        command = args if host else [str(vm), f"--timeout={VM_TIMEOUT_S}", "--", *args]
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                timeout=VM_TIMEOUT_S + 120)
        lines = [line for line in result.stdout.splitlines()
                 if line.startswith(("run_in_vm", "[doctest]")) or "ERROR" in line or "record layer" in line]
        print("\n".join(lines[-60:]))
        if not host and "run_in_vm: tls module loaded" not in result.stdout:
            print(f"FAIL: the VM did not load the tls module (exit {result.returncode})")
            print(result.stdout[-2000:])
            failed += 1
            continue
        failed += check_output(result.stdout, result.returncode)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
