"""The case registry and the loop that runs each case against its own ringmux-serve.

Around every case the runner checks what the issue asks of all of them:
- before: a fresh server answers a unary call, and a bystander connection is set up (a
  well-behaved client, answering PINGs on its own thread while the case runs);
- the case itself asserts the server's exact reaction;
- after: the server is alive, the bystander saw nothing but link and flow-control frames
  and is still served on its connection, a fresh connection is served, and the server's
  peak RSS during the case grew by no more than the case's bound."""
import argparse
import os
import json
import random
import resource
import threading
import time
import traceback

from . import frames as F
from .client import BENIGN_KINDS, REACTION_TIMEOUT_S, CaseFailure, Client, Closed
from .server import Server, ServerError

MIB = 1024 * 1024
# Peak RSS growth a case may cause unless it says otherwise: a few connections and their
# buffers. Every case that makes the server hold more names its own bound.
RSS_GROWTH_DEFAULT_BYTES = 8 * MIB
# Idle connections measured by idle_connections_rss (--idle-connections overrides).
IDLE_CONNECTIONS_DEFAULT = 1000
# File descriptors this process and the server need beyond the idle connections.
FDS_SPARE = 4096


class Case:
    def __init__(self, name, function, rss_bound, server_args, bystander, fresh_retry_s, extra, release_only):
        self.name, self.function, self.rss_bound = name, function, rss_bound
        self.server_args, self.bystander, self.fresh_retry_s, self.extra = server_args, bystander, fresh_retry_s, extra
        self.release_only = release_only
        self.doc = " ".join((function.__doc__ or "").split())


CASES = []


def case(name, rss_mib=None, server_args=(), bystander=True, fresh_retry_s=0.0, extra=False, release_only=False):
    """Registers a case. rss_mib: its bound on the server's peak RSS growth in MiB (or a
    function of the command-line options that returns it); server_args:
    ringmux-serve options; bystander: False where a case's server would cut a thread-driven
    client (1 ms keepalive); fresh_retry_s: how long a fresh connection may be refused
    after the case (the case filled a bounded queue); extra: run only when named or with --all;
    release_only: skipped (and counted so) in a sanitizer build, for a case that must move
    hundreds of MiB within a server timeout, which a sanitizer on a loaded machine cannot."""
    def register(function):
        rss_bound = RSS_GROWTH_DEFAULT_BYTES / MIB if rss_mib is None else rss_mib
        CASES.append(Case(name, function, rss_bound, tuple(server_args), bystander, fresh_retry_s, extra, release_only))
        return function
    return register


class Context:
    """What a case gets: its server, clients that are closed after it, a seeded random
    source, and notes for its PASS line."""

    def __init__(self, server, rng, options):
        self.server = server
        self.port = server.port
        self.rng = rng
        self.options = options
        self.clients = []
        self.notes = []

    def session_id(self):
        return bytes(self.rng.getrandbits(8) for _ in range(16))

    def client(self, session_id=None, **options):
        c = Client(self.port, session_id or self.session_id(), **options)
        self.clients.append(c)
        return c

    def connected(self, **options):
        """A client past the handshake (HELLO answered by an accepting HELLO_ACK)."""
        hello_fields = options.pop("hello", {})
        c = self.client(**options)
        c.handshake(**hello_fields)
        return c

    def resume(self, old, generation=None, receive_position=None, **options):
        """A new connection resuming `old`'s session: sends the RESUME HELLO (generation
        one newer, our receive position, unless told otherwise); the caller reads the answer."""
        c = self.client(session_id=old.session_id, **options)
        c.generation = old.generation + 1 if generation is None else generation
        c.received_position = old.received_position
        c.acked_position = old.received_position
        c.sent_position = old.sent_position
        c.next_stream_id = old.next_stream_id
        c.send_hello(resume=True, receive_position=old.received_position if receive_position is None
                     else receive_position)
        return c

    def note(self, text):
        self.notes.append(text)

    def close_clients(self):
        for c in self.clients:
            c.close()
        self.clients = []


class Bystander(threading.Thread):
    """A well-behaved client on its own thread: it answers PINGs and records any frame
    other than link and flow-control frames (an ERROR or GOAWAY meant for a hostile peer
    reaching it is a failure)."""

    def __init__(self, client):
        super().__init__(daemon=True)
        self.client = client
        self.stopping = threading.Event()
        self.problems = []

    def run(self):
        while not self.stopping.is_set():
            try:
                f = self.client.recv_frame(0.05)
            except Closed as closed:
                self.problems.append(f"closed ({closed})")
                return
            except Exception as error:  # a decode error: the server sent bad bytes
                self.problems.append(repr(error))
                return
            if f is not None and f.kind not in BENIGN_KINDS:
                self.problems.append(repr(f))

    def check(self):
        """After the case: nothing unexpected arrived, and a call on it is served."""
        self.stopping.set()
        self.join(REACTION_TIMEOUT_S)
        if self.problems:
            raise CaseFailure(f"bystander connection disturbed: {'; '.join(self.problems[:3])}")
        self.client.call_unary()


def fresh_call(server, rng, retry_s):
    """A unary call on a new connection; retried for up to retry_s after a refusal."""
    deadline = time.monotonic() + retry_s
    while True:
        c = Client(server.port, bytes(rng.getrandbits(8) for _ in range(16)))
        try:
            c.handshake()
            c.call_unary()
            return
        except CaseFailure as failure:
            if time.monotonic() >= deadline:
                raise CaseFailure(f"fresh well-behaved client not served: {failure}") from None
        finally:
            c.close()


def mib(value):
    return f"{value / MIB:+.1f}"


def run_case(case_, options, seed):
    """Runs one case on its own server; returns (passed, text)."""
    rng = random.Random(f"{seed}/{case_.name}")
    try:
        server = Server(options.build_dir, case_.server_args)
    except ServerError as error:
        return False, f"server did not start: {error}"
    ctx = Context(server, rng, options)
    bystander = None
    try:
        try:
            fresh_call(server, rng, 0)
        except CaseFailure as failure:
            return False, f"harness: the server does not serve before the case: {failure}"
        if case_.bystander:
            bystander = Bystander(ctx.connected())
            ctx.clients.remove(bystander.client)  # it outlives the case's clients
            bystander.client.call_unary()
            bystander.start()
        server.reset_peak()
        rss_before = server.rss_bytes()
        try:
            case_.function(ctx)
        except CaseFailure as failure:
            return False, str(failure)
        except ServerError as error:
            return False, str(error)
        except F.WireViolation as error:
            return False, f"the server broke the wire format: {error}"
        except Exception:
            return False, "suite error: " + traceback.format_exc().strip().replace("\n", " | ")
        finally:
            ctx.close_clients()
        if not server.alive():
            return False, f"the server died ({server.exit_description()}): {server.stderr_text().strip()[-300:]}"
        peak = server.rss_peak_bytes() - rss_before
        try:
            if bystander is not None:
                bystander.check()
            fresh_call(server, rng, case_.fresh_retry_s)
        except CaseFailure as failure:
            return False, str(failure)
        bound = (case_.rss_bound(options) if callable(case_.rss_bound) else case_.rss_bound) * MIB
        growth = f"rss peak {mib(peak)} MiB (bound {bound / MIB:.0f})"
        if peak > bound and not options.sanitized:
            return False, f"server RSS grew too much: {growth}; " + "; ".join(ctx.notes)
        if options.sanitized:
            growth += " (not checked: a sanitizer build's allocator keeps freed memory in quarantine)"
        return True, "; ".join(ctx.notes + [growth])
    finally:
        if bystander is not None:
            bystander.stopping.set()
            bystander.client.close()
        ctx.close_clients()
        server.stop()


def raise_fd_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))  # root only
            return
        except (ValueError, PermissionError):
            needed = hard
    if soft == resource.RLIM_INFINITY or soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def sanitized_build(build_dir):
    """Whether the build uses a sanitizer (meson's b_sanitize): RSS bounds are the release
    build's; AddressSanitizer's quarantine and redzones hold hundreds of MiB more."""
    path = os.path.join(build_dir, "meson-info", "intro-buildoptions.json")
    try:
        with open(path, encoding="utf-8") as f:
            options = json.load(f)
    except (OSError, ValueError):
        return False
    return any(o.get("name") == "b_sanitize" and o.get("value") not in ("none", "", None) for o in options)


def main(argv):
    parser = argparse.ArgumentParser(description="Hostile-peer cases against ringmux-serve (issue 11).")
    parser.add_argument("build_dir", help="the meson build directory (holds tools/ringmux-serve)")
    parser.add_argument("--case", action="append", default=[],
                        help="run the cases whose name contains SUBSTRING (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--all", action="store_true", help="also run the extra (timing-sensitive) cases")
    parser.add_argument("--idle-connections", type=int, default=IDLE_CONNECTIONS_DEFAULT,
                        help=f"connections of idle_connections_rss ({IDLE_CONNECTIONS_DEFAULT})")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random bytes (default: random)")
    options = parser.parse_args(argv)
    if options.list:
        for c in CASES:
            print(f"{c.name}{' (extra)' if c.extra else ''}: {c.doc}")
        print(f"{len(CASES)} cases")
        return 0
    selected = [c for c in CASES if any(s in c.name for s in options.case)] if options.case else \
        [c for c in CASES if options.all or not c.extra]
    if not selected:
        print(f"no case matches {options.case}")
        return 2
    options.sanitized = sanitized_build(options.build_dir)
    if options.sanitized:
        print("sanitizer build: behaviour is checked, RSS bounds are not (the release build checks them)")
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(1 << 32)
    print(f"seed {seed} (--seed={seed} repeats the random bytes)")
    raise_fd_limit(options.idle_connections + FDS_SPARE)
    passed = failed = skipped = 0
    started = time.monotonic()
    for c in selected:
        if c.release_only and options.sanitized:
            print(f"SKIP {c.name}: a release-build case (sanitizer build)", flush=True)
            skipped += 1
            continue
        case_started = time.monotonic()
        ok, text = run_case(c, options, seed)
        print(f"{'PASS' if ok else 'FAIL'} {c.name}: {text} [{time.monotonic() - case_started:.1f} s]", flush=True)
        passed += ok
        failed += not ok
    print(f"ran {passed + failed} cases in {time.monotonic() - started:.0f} s")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0
