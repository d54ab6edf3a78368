#!/usr/bin/env python3
"""The kTLS path of the TLS transport on the real kernel: the mux tests' kernel case, which
moves both sessions' record layers into the kernel and checks 1,000 echoes over them.

Skipped (exit 77) where the kernel has no `tls` ULP; the hand-over itself is tested
everywhere against a model of the kernel's record layer (tests/mux/link/test_ktls.cpp)."""

import subprocess
import sys
from pathlib import Path

from kernel_tls import ktls_available


def main():
    build = Path(sys.argv[1])
    if not ktls_available():
        print("skipped: this kernel has no tls ULP (setsockopt TCP_ULP \"tls\" fails with ENOENT)")
        return 77
    result = subprocess.run([str(build / "tests" / "mux_tests"), "-tc=tls: the kernel's record layer*", "-s"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=240)
    print(result.stdout[-4000:])
    if "skipped" in result.stdout:
        print("FAIL: the test case skipped although the kernel has the tls ULP")
        return 1
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
