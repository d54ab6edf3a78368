#!/usr/bin/env python3
"""Every tool's --version: the tool and project version (the one <ringmux/version.h> was
generated with), the wire protocol, the liburing built against and the one loaded, the
allocator (mimalloc serving malloc when the build links it), the kernel, and each io_uring
feature as present, absent or unknown. Then, under a seccomp filter, that absence is said
honestly: io_uring_setup failing with ENOSYS makes io_uring absent (and every other feature
unknown, with why); the kernel refusing IORING_REGISTER_PBUF_RING and
IORING_REGISTER_RING_FDS makes those absent and the multishot receive, which needs the
former, unknown.

usage: check_version.py BUILD_DIR"""
import re
import subprocess
import sys
from pathlib import Path

TIMEOUT_S = 30
TOOLS = ["ringmux-serve", "ringmux-loadgen", "ringmux-chaos", "ringmux-echo"]
FEATURES = ["io_uring", "provided buffer rings", "multishot accept", "multishot recv", "SINGLE_ISSUER",
            "DEFER_TASKRUN", "COOP_TASKRUN", "registered ring fd", "SEND_ZC", "recv/send bundles"]
# io_uring_register opcodes (include/uapi/linux/io_uring.h).
IORING_REGISTER_RING_FDS = 20
IORING_REGISTER_PBUF_RING = 22


def features(text):
    """Feature name -> (presence, the rest of its line)."""
    result = {}
    for name in FEATURES:
        match = re.search(r"^  " + re.escape(name) + r" +(present|absent|unknown) +(.*)$", text, re.M)
        if match:
            result[name] = (match.group(1), match.group(2))
    return result


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    build = Path(sys.argv[1]).resolve()
    header = (build / "include" / "ringmux" / "version.h").read_text()
    version = re.search(r'#define RINGMUX_VERSION "([^"]+)"', header).group(1)
    failures = []
    for tool in TOOLS:
        run = subprocess.run([build / "tools" / tool, "--version"], capture_output=True, text=True, timeout=TIMEOUT_S)
        text = run.stdout
        expected = [f"{tool} (ringmux) {version}\n", "wire protocol: version", "liburing: ", "kernel: Linux "]
        missing = [line for line in expected if line not in text]
        found = features(text)
        allocator = re.search(r"^allocator: (.*)$", text, re.M)
        if run.returncode != 0 or missing or len(found) != len(FEATURES) or not allocator:
            failures.append(f"{tool} --version: exit {run.returncode}, missing {missing}, "
                            f"{len(found)} of {len(FEATURES)} features:\n{text}{run.stderr}")
            continue
        # Where the build links mimalloc, it serves the tool's malloc; else the C library does,
        # or in a sanitizer build the sanitizer's runtime (libasan, libtsan), which replaces it.
        served = re.search(r"malloc is served from (\S+)", allocator.group(1))
        wants = "libmimalloc" if allocator.group(1).startswith("mimalloc") else "libc"
        sanitized = served is not None and re.search(r"lib[at]san\.so", served.group(1)) is not None
        if not served or (wants not in served.group(1) and not (wants == "libc" and sanitized)):
            failures.append(f"{tool}: allocator line {allocator.group(1)!r}: malloc should come from {wants}")
        loaded = re.search(r"^liburing: \S+ at build time; loaded from (\S+)$", text, re.M)
        if not loaded or "liburing" not in loaded.group(1):
            failures.append(f"{tool}: the liburing line does not name the loaded library")
        print(f"ok: {tool} --version: {text.splitlines()[0]}; {allocator.group(1)}; "
              f"{sum(p == 'present' for p, _ in found.values())} of {len(FEATURES)} io_uring features present")
    print(subprocess.run([build / "tools" / "ringmux-serve", "--version"], capture_output=True, text=True,
                         timeout=TIMEOUT_S).stdout, end="")

    deny = build / "tests" / "seccomp_deny"
    serve = build / "tools" / "ringmux-serve"
    run = subprocess.run([deny, "io_uring_setup=ENOSYS", "--", serve, "--version"], capture_output=True, text=True,
                         timeout=TIMEOUT_S)
    if run.returncode == 77:
        print(f"skipped: the seccomp cases ({run.stderr.strip()})")
    else:
        found = features(run.stdout)
        ring = found.get("io_uring", ("", ""))
        others = [name for name in FEATURES[1:] if found.get(name, ("", ""))[0] != "unknown"]
        if run.returncode != 0 or ring[0] != "absent" or "ENOSYS" not in ring[1] or others:
            failures.append(f"io_uring_setup denied: io_uring {ring}, not unknown: {others}:\n{run.stdout}{run.stderr}")
        else:
            print(f"ok: io_uring_setup denied: io_uring absent ({ring[1]}); the other {len(FEATURES) - 1} unknown")
        run = subprocess.run([deny, f"io_uring_register:{IORING_REGISTER_PBUF_RING}=EINVAL",
                              f"io_uring_register:{IORING_REGISTER_RING_FDS}=EINVAL", "--", serve, "--version"],
                             capture_output=True, text=True, timeout=TIMEOUT_S)
        found = features(run.stdout)
        wanted = {"provided buffer rings": ("absent", "EINVAL"), "registered ring fd": ("absent", "EINVAL"),
                  "multishot recv": ("unknown", "needs provided buffer rings"), "io_uring": ("present", ""),
                  "multishot accept": ("present", "")}
        wrong = {name: found.get(name) for name, (presence, detail) in wanted.items()
                 if not found.get(name) or found[name][0] != presence or detail not in found[name][1]}
        if run.returncode != 0 or wrong:
            failures.append(f"register opcodes denied: {wrong}:\n{run.stdout}{run.stderr}")
        else:
            print("ok: PBUF_RING and RING_FDS denied: provided buffer rings and registered ring fd absent (EINVAL), "
                  "multishot recv unknown (needs provided buffer rings)")
    for failure in failures:
        print("FAIL:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
