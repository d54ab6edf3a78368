#!/usr/bin/env python3
"""ringmux-serve does not build what a client asks for beyond its --max_message, and holds
as many connections as its file descriptor limit allows.

- A raw client (frames built here from wire/SPEC.md) opens, on one session, four source
  streams (handler 3) asking for 64 MiB messages, a unary call asking for a 64 MiB
  response and a verified sink announcing 64 MiB messages. Each gets a stream-scoped ERROR
  with status resource_exhausted (12) whose message names --max_message; the server's RSS
  grows by less than RSS_GROWTH_MAX_KIB (it grew by 258 MiB when each source stream had a
  message of its own); the connection goes on: a small source stream on it is served.
- ringmux-loadgen against the same server: verified reads and calls at the bound pass; a
  read above it fails with the server's message; the tcp engine closes such a stream.
- --max_message is in --help and refuses values above the protocol's 64 MiB.
- Both tools raise RLIMIT_NOFILE's soft limit to the hard limit; with a small hard limit
  the server says how many connections it can hold and the load generator refuses a run
  that needs more descriptors than it may open.
usage: check_serve_limits.py BUILD_DIR"""
import ctypes
import os
import re
import resource
import socket
import struct
import subprocess
import sys
import time

build = sys.argv[1]
serve = f"{build}/tools/ringmux-serve"
loadgen = f"{build}/tools/ringmux-loadgen"
failures = []

RSS_GROWTH_MAX_KIB = 4096  # stream state of six refused streams is a few KiB
TIMEOUT_S = 10             # every wait below is for an event; this only bounds a broken server

# ---- the few frames this test needs (wire/SPEC.md §2, §4) ---------------------------------

_xxhash = ctypes.CDLL("libxxhash.so.0")
_xxhash.XXH3_64bits.restype = ctypes.c_uint64
_xxhash.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def xxh3(data):
    return _xxhash.XXH3_64bits(bytes(data), len(data))


HEADER = struct.Struct("<IBBHIIQ")  # length, kind, flags, reserved, stream id, header sum, payload sum
HELLO, HELLO_ACK, OPEN, DATA, RESET, ERROR = 0x01, 0x02, 0x03, 0x04, 0x06, 0x0d
END_STREAM = 0x01
RESOURCE_EXHAUSTED, CANCELLED = 12, 1
HANDLER_UNARY, HANDLER_SINK, HANDLER_SOURCE = 1, 2, 3  # tools/loadgen/protocol.h
FLAG_VERIFY = 1
MESSAGE_64_MIB = 64 << 20


def frame(kind, stream_id, payload=b"", flags=0):
    unsummed = HEADER.pack(len(payload), kind, flags, 0, stream_id, 0, xxh3(payload))
    return HEADER.pack(len(payload), kind, flags, 0, stream_id, xxh3(unsummed) & 0xffffffff, xxh3(payload)) + payload


def hello():
    """A new session's HELLO: version 1, a random session id, generation 1, position 0."""
    return frame(HELLO, 0, b"RMUX" + struct.pack("<HHQ", 1, 1, 0) + os.urandom(16) + struct.pack("<QQI", 1, 0, 0))


def open_frame(stream_id, handler, preamble, end_stream=False):
    """OPEN: handler id, no deadline, the loadgen preamble as the initial payload."""
    return frame(OPEN, stream_id, struct.pack("<IQ", handler, 0) + preamble, END_STREAM if end_stream else 0)


class Reader:
    def __init__(self, sock):
        self.sock, self.buffer = sock, b""

    def next(self, deadline):
        """The next frame (kind, flags, stream id, payload), or None at the deadline or close."""
        while True:
            if len(self.buffer) >= HEADER.size:
                length, kind, flags, _, stream_id, _, _ = HEADER.unpack(self.buffer[:HEADER.size])
                if len(self.buffer) >= HEADER.size + length:
                    payload = self.buffer[HEADER.size:HEADER.size + length]
                    self.buffer = self.buffer[HEADER.size + length:]
                    return kind, flags, stream_id, payload
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except socket.timeout:
                return None
            if not data:
                return None
            self.buffer += data


# ---- helpers -------------------------------------------------------------------------------

def start_serve(args, rlimit=None):
    """Starts ringmux-serve; returns (process, port). `rlimit`: its RLIMIT_NOFILE (soft, hard)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, rlimit)
    process = subprocess.Popen([serve, "--listen=127.0.0.1:0", "--duration=60s"] + args, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, preexec_fn=limit if rlimit else None)
    match = re.search(r"port (\d+)", process.stdout.readline())
    if not match:
        process.kill()
        raise SystemExit(f"FAIL: ringmux-serve {args} did not say its port")
    return process, int(match.group(1))


def stop_serve(process):
    process.send_signal(2)
    out, err = process.communicate(timeout=TIMEOUT_S)
    return out, err


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+) kB", status.read()).group(1))


def open_files_limits(pid):
    with open(f"/proc/{pid}/limits") as limits:
        fields = re.search(r"Max open files\s+(\S+)\s+(\S+)", limits.read())
    return fields.group(1), fields.group(2)


def run_loadgen(args, rlimit=None):
    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, rlimit)
    return subprocess.run([loadgen] + args, capture_output=True, text=True, timeout=60,
                          preexec_fn=limit if rlimit else None)


# ---- refusals on one session ---------------------------------------------------------------

server, port = start_serve([])
sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
reader = Reader(sock)
sock.sendall(hello())
deadline = time.monotonic() + TIMEOUT_S
answer = reader.next(deadline)
while answer is not None and answer[0] != HELLO_ACK:
    answer = reader.next(deadline)
if answer is None or struct.unpack_from("<H", answer[3], 2)[0] != 0:
    server.kill()
    raise SystemExit(f"FAIL: no accepting HELLO_ACK: {answer!r}")
rss_before = rss_kib(server.pid)

# Stream ids: odd, increasing (the dialer's). 1-7: sources asking 64 MiB; 9: a unary call
# asking a 64 MiB response; 11: a verified sink announcing 64 MiB messages.
asks = {1: "source", 3: "source", 5: "source", 7: "source", 9: "unary", 11: "verified sink"}
for stream_id, what in asks.items():
    if what == "source":
        sock.sendall(open_frame(stream_id, HANDLER_SOURCE, struct.pack("<II", MESSAGE_64_MIB, 0)))
    elif what == "unary":
        sock.sendall(open_frame(stream_id, HANDLER_UNARY, struct.pack("<II", MESSAGE_64_MIB, 0), end_stream=True))
    else:
        sock.sendall(open_frame(stream_id, HANDLER_SINK, struct.pack("<IIQ", MESSAGE_64_MIB, FLAG_VERIFY, 42)))
endings = {}
deadline = time.monotonic() + TIMEOUT_S
while len(endings) < len(asks):
    got = reader.next(deadline)
    if got is None:
        break
    kind, _, stream_id, payload = got
    if stream_id in asks and kind in (ERROR, RESET, DATA) and stream_id not in endings:
        endings[stream_id] = (kind, payload)
for stream_id, what in asks.items():
    kind, payload = endings.get(stream_id, (None, b""))
    status = struct.unpack_from("<I", payload)[0] if kind in (ERROR, RESET) else None
    message = payload[4:].decode(errors="replace") if kind == ERROR else ""
    if kind != ERROR or status != RESOURCE_EXHAUSTED or "--max_message" not in message:
        failures.append(f"{what} asking 64 MiB (stream {stream_id}): kind {kind}, status {status}, {message!r}; "
                        f"want ERROR, status {RESOURCE_EXHAUSTED}, a message naming --max_message")
if not any("asking 64 MiB" in f for f in failures):
    print(f"ok: 4 sources, a unary call and a verified sink asking 64 MiB: ERROR({RESOURCE_EXHAUSTED}) "
          f"on each stream: {message!r}")
rss_after = rss_kib(server.pid)
growth = rss_after - rss_before
if growth > RSS_GROWTH_MAX_KIB:
    failures.append(f"server RSS grew by {growth} KiB after the refused asks (limit {RSS_GROWTH_MAX_KIB} KiB)")
else:
    print(f"ok: server RSS {rss_before} -> {rss_after} KiB ({growth:+d} KiB) after the refused asks")

# The session goes on: a source stream of 4 KiB messages on it is served (then cancelled).
sock.sendall(open_frame(13, HANDLER_SOURCE, struct.pack("<II", 4096, 0)))
served = 0
deadline = time.monotonic() + TIMEOUT_S
while served == 0:
    got = reader.next(deadline)
    if got is None:
        break
    if got[0] == DATA and got[2] == 13:
        served = len(got[3])
try:
    sock.sendall(frame(RESET, 13, struct.pack("<I", CANCELLED)))
except OSError as error:
    failures.append(f"the session broke after the refusals: {error}")
if served == 0:
    failures.append("after the refusals, a 4 KiB source stream on the same session got no data")
else:
    print(f"ok: the same session then serves a 4 KiB source stream ({served} bytes in its first DATA)")
sock.close()

# ---- ringmux-loadgen against the same server -----------------------------------------------

target = ["--host=127.0.0.1", f"--port={port}", "--runtime=300ms"]
for label, args in [("read, 4 streams of 1m messages", ["--rw=read", "--bs=1m", "--streams=4"]),
                    ("unary, 1m responses", ["--rw=unary", "--bs=64", "--resp_bs=1m", "--iodepth=2"])]:
    result = run_loadgen(target + args + ["--verify=1"])
    if result.returncode != 0:
        failures.append(f"loadgen {label} at the default bound: exit {result.returncode}: {result.stdout[-300:]}")
    else:
        print(f"ok: loadgen {label}, verified, at the default --max_message")
over = run_loadgen(target + ["--rw=read", "--bs=2m"])
if over.returncode != 1 or "--max_message=1048576" not in over.stdout:
    failures.append(f"loadgen read of 2m messages: exit {over.returncode}, {over.stdout[-300:]!r}")
else:
    print("ok: loadgen read of 2m messages fails: " + over.stdout.strip().splitlines()[-1].strip())
out, err = stop_serve(server)
if server.returncode != 0 or "connections=" not in out:
    failures.append(f"ringmux-serve exit {server.returncode}: {out!r} {err!r}")

# The tcp baseline has no error frames: a source asking more than the bound is closed.
server, port = start_serve(["--ioengine=tcp"])
closed = run_loadgen(["--host=127.0.0.1", f"--port={port}", "--runtime=300ms", "--ioengine=tcp", "--rw=read",
                      "--bs=2m"])
fine = run_loadgen(["--host=127.0.0.1", f"--port={port}", "--runtime=300ms", "--ioengine=tcp", "--rw=read",
                    "--bs=1m", "--verify=1"])
stop_serve(server)
if closed.returncode != 1 or "closed" not in closed.stdout or fine.returncode != 0:
    failures.append(f"tcp engine: 2m read exit {closed.returncode} {closed.stdout[-200:]!r}; "
                    f"1m read exit {fine.returncode} {fine.stdout[-200:]!r}")
else:
    print("ok: tcp engine closes a 2m source stream, serves a verified 1m one")

# ---- the option --------------------------------------------------------------------------

help_text = subprocess.run([serve, "--help"], capture_output=True, text=True, timeout=TIMEOUT_S).stdout
bad = subprocess.run([serve, "--max_message=65m"], capture_output=True, text=True, timeout=TIMEOUT_S)
if "--max_message=SIZE" not in help_text or bad.returncode != 2 or "--max_message" not in bad.stderr:
    failures.append(f"--max_message: in --help {'--max_message=SIZE' in help_text}; 65m: exit {bad.returncode} "
                    f"{bad.stderr!r}")
else:
    print(f"ok: --max_message in --help; 65m refused: {bad.stderr.strip()}")
server, port = start_serve(["--max_message=4m"])
big = run_loadgen(["--host=127.0.0.1", f"--port={port}", "--runtime=300ms", "--rw=read", "--bs=4m", "--verify=1"])
stop_serve(server)
if big.returncode != 0:
    failures.append(f"--max_message=4m: a verified read of 4m messages: exit {big.returncode} {big.stdout[-200:]!r}")
else:
    print("ok: --max_message=4m serves verified 4m messages")

# ---- file descriptors ----------------------------------------------------------------------

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
small_hard = min(hard, 1024) if hard != resource.RLIM_INFINITY else 1024
server, port = start_serve([], rlimit=(256, small_hard))
limits = open_files_limits(server.pid)
_, err = stop_serve(server)
if limits != (str(small_hard), str(small_hard)):
    failures.append(f"ringmux-serve started with nofile 256:{small_hard} runs with {limits}")
elif "connections" not in err or "ulimit" not in err:
    failures.append(f"ringmux-serve with a hard limit of {small_hard} says nothing about it: {err!r}")
else:
    print(f"ok: ringmux-serve raised nofile 256 -> {limits[0]} and says: {err.strip()}")
need = run_loadgen(["--ioengine=tcp", "--rw=write", "--streams=100", "--runtime=100ms"], rlimit=(64, 128))
if need.returncode != 1 or "file descriptors" not in need.stderr or "limit is 128" not in need.stderr:
    failures.append(f"loadgen needing 200 descriptors under a hard limit of 128: exit {need.returncode} "
                    f"{need.stderr!r}")
else:
    print(f"ok: loadgen refuses a run that needs more descriptors: {need.stderr.strip()}")

for failure in failures:
    print("FAIL:", failure)
sys.exit(1 if failures else 0)
