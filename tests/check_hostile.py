#!/usr/bin/env python3
"""Hostile peers against ringmux-serve: every check of wire/SPEC.md §2.1, each frame kind
misused, floods, the bounds of the resource model, the handshake and resume misused,
slowloris, truncated and garbage streams, idle connections and idle sessions (issue 11).
Each case asserts the server's exact reaction, that a well-behaved client is still served
(on a connection made before the case and on a fresh one), and the server's peak RSS
growth. Prints PASS/FAIL per case and ends with "N passed, M failed".
usage: check_hostile.py BUILD_DIR [--case=SUBSTRING] [--list] [--all] [--idle-connections=N] [--seed=N]"""
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hostile import cases_wire, cases_handshake, cases_resume, cases_mux, cases_flood, cases_bounds  # noqa: E402,F401 (registers)
from hostile.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
