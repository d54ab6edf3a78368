#!/usr/bin/env python3
"""The kTLS path of the TLS transport on a real kernel: the mux tests' TLS cases, where every
connection's record layer moves into the kernel after its handshake, and the kernel case that
checks it (1,000 echoes with both record layers in the kernel).

On a kernel with the `tls` ULP they run here. Elsewhere (the project's machines) they run
under Debian's 6.1 kernel in qemu (tests/vm/run_in_vm.sh, software emulation: ~40 s, plus a
one-time download of the kernel package), in the release build only (sanitizer builds are
too slow under emulation); skipped (exit 77) where neither is possible. The hand-over itself
is tested everywhere against a model of the kernel's record layer
(tests/mux/link/test_ktls.cpp).

usage: check_ktls.py BUILD_DIR SOURCE_DIR SANITIZE"""

import shutil
import subprocess
import sys
from pathlib import Path

from kernel_tls import ktls_available

KERNEL_CASE = "tls: the kernel's record layer (kTLS) carries the session where the kernel has it"
VM_TIMEOUT_S = 900  # TCG on two shared cores: ~40 s when quiet


def check_output(output, code):
    """The run's verdict: doctest's, and the kernel case must have run (not said skipped)."""
    if code != 0:
        print(f"FAIL: the TLS tests exited {code}")
        return 1
    if "skipped: this kernel has no tls ULP" in output:
        print("FAIL: the kernel case skipped although the kernel has the tls ULP")
        return 1
    if "Status: SUCCESS" not in output:
        print("FAIL: no doctest verdict in the output")
        return 1
    print("PASS: the TLS tests, kTLS case included, on a kernel with the tls ULP")
    return 0


def main():
    build, source, sanitize = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    tests = build / "tests" / "mux_tests"
    args = [str(tests), "-tc=tls*", "-s"]
    if ktls_available():
        result = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
        print(result.stdout[-3000:])
        return check_output(result.stdout, result.returncode)
    if sanitize != "none":
        print(f"skipped: no tls ULP in this kernel, and the VM run is for the release build (this one: {sanitize})")
        return 77
    if shutil.which("qemu-system-x86_64") is None:
        print("skipped: no tls ULP in this kernel and no qemu-system-x86_64 to run Debian's kernel "
              "(tools/install-deps.sh installs it)")
        return 77
    vm = source / "tests" / "vm" / "run_in_vm.sh"
    result = subprocess.run([str(vm), f"--timeout={VM_TIMEOUT_S}", "--", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=VM_TIMEOUT_S + 120)
    lines = [line for line in result.stdout.splitlines()
             if line.startswith(("run_in_vm", "[doctest]")) or "ERROR" in line or "record layer" in line]
    print("\n".join(lines[-60:]))
    if "run_in_vm: tls module loaded" not in result.stdout:
        print(f"FAIL: the VM did not load the tls module (exit {result.returncode})")
        print(result.stdout[-2000:])
        return 1
    return check_output(result.stdout, result.returncode)


if __name__ == "__main__":
    sys.exit(main())
