"""The handshake misused (SPEC §1, §4.1, §8.1 and the design's HELLO window fields),
resume with wrong ids, positions and generations, and the bounds on connections that have
not said HELLO yet."""
import select
import socket
import time

from . import frames as F
from .client import HANDLER_UNARY, CaseFailure, Closed, preamble
from .common import mux_violation
from .runner import case

# mux::Acceptor's limits (wire/RESOURCES.md): the HELLO within hello_timeout_ns (5 s), at
# most pending_hellos_max (one listen backlog, 4096) sockets waiting for theirs.
HELLO_TIMEOUT_S = 5.0
PENDING_HELLOS_MAX = 4096
# Sockets opened beyond PENDING_HELLOS_MAX by hello_pending_max: each must be closed at once.
PENDING_HELLOS_EXTRA = 64
# Margin on named timeouts: a closing timer on a loaded machine may run this much late.
TIMEOUT_MARGIN_S = 4.0


def refused_without_answer(ctx, first_bytes, what):
    """A connection whose first bytes are `first_bytes` is closed with no frame at all."""
    c = ctx.client()
    c.send_raw(first_bytes)
    c.expect_close(what, allowed=frozenset())


@case("pre_hello_garbage")
def pre_hello_garbage(ctx):
    """200 random bytes instead of a HELLO: closed without an answer."""
    refused_without_answer(ctx, bytes(ctx.rng.getrandbits(8) for _ in range(200)), "the close for garbage")


@case("pre_hello_ping_first")
def pre_hello_ping_first(ctx):
    """A PING before the HELLO (a HELLO right behind it): closed without an answer."""
    c = ctx.client()
    refused_without_answer(ctx, F.ping(1) + F.hello(c.session_id), "the close for a PING first")


@case("pre_hello_open_first")
def pre_hello_open_first(ctx):
    """An OPEN before the HELLO: closed without an answer (nothing served)."""
    c = ctx.client()
    opening = F.open_frame(1, HANDLER_UNARY, preamble(64), end_stream=True)
    refused_without_answer(ctx, opening + F.hello(c.session_id), "the close for an OPEN first")


@case("pre_hello_hello_ack_first")
def pre_hello_hello_ack_first(ctx):
    """A HELLO_ACK from the dialing side as its first frame: closed without an answer."""
    ack = F.frame(F.HELLO_ACK, 0, bytes(F.HELLO_ACK_BYTES))
    refused_without_answer(ctx, ack + F.hello(ctx.session_id()), "the close for a HELLO_ACK first")


@case("pre_hello_bad_magic")
def pre_hello_bad_magic(ctx):
    """A HELLO whose magic is not RMUX (bad_magic): closed without an answer."""
    refused_without_answer(ctx, F.hello(ctx.session_id(), magic=b"XMUX"), "the close for a bad magic")


@case("pre_hello_version_range_inverted")
def pre_hello_version_inverted(ctx):
    """A HELLO with version_max < version_min (bad_value): closed without an answer."""
    hello = F.hello(ctx.session_id(), version_min=2, version_max=1)
    refused_without_answer(ctx, hello, "the close for an inverted version range")


@case("pre_hello_truncated_then_fin")
def pre_hello_truncated(ctx):
    """Half a HELLO, then FIN: closed without an answer."""
    c = ctx.client()
    c.send_raw(F.hello(c.session_id)[:40])
    c.shutdown_write()
    c.expect_close("the close for a truncated HELLO", allowed=frozenset())


@case("hello_version_unsupported")
def version_unsupported(ctx):
    """A HELLO offering versions 2..3 only: HELLO_ACK with version_unsupported (16), closed."""
    c = ctx.client()
    c.send_hello(version_min=2, version_max=3)
    ack = c.read_hello_ack()
    if ack["status"] != F.VERSION_UNSUPPORTED:
        raise CaseFailure(f"HELLO_ACK status {ack['status']}, expected {F.VERSION_UNSUPPORTED}")
    c.expect_close("the close after refusing the version")


def closed_at_hello_timeout(c, started, trickle=None):
    """Waits for the close of a connection that never completes its HELLO: it must come at
    hello_timeout_ns (5 s) after the connect, with no answer, whatever trickles in."""
    deadline = started + HELLO_TIMEOUT_S + TIMEOUT_MARGIN_S
    while time.monotonic() < deadline:
        if trickle:
            if not c.send_raw(trickle[:1]):
                break
            trickle = trickle[1:]
        try:
            f = c.recv_frame(0.1 if trickle else deadline - time.monotonic())
        except Closed:  # the expected end
            break
        if f is not None:
            raise CaseFailure(f"{f!r} on a connection that never completed its HELLO")
    else:
        raise CaseFailure(f"still open {HELLO_TIMEOUT_S + TIMEOUT_MARGIN_S:.0f} s after the connect")
    elapsed = time.monotonic() - started
    if elapsed < HELLO_TIMEOUT_S - 0.5:
        raise CaseFailure(f"closed after {elapsed:.1f} s, before the {HELLO_TIMEOUT_S:.0f} s HELLO timeout")
    return elapsed


@case("hello_timeout_silent")
def hello_timeout_silent(ctx):
    """A connection that sends nothing is closed at hello_timeout_ns (5 s), no answer."""
    started = time.monotonic()
    c = ctx.client()
    ctx.note(f"closed after {closed_at_hello_timeout(c, started):.1f} s")


@case("hello_timeout_trickle")
def hello_timeout_trickle(ctx):
    """Slowloris before the handshake: a HELLO sent one byte per 100 ms (7.6 s in all) is
    closed at the 5 s HELLO timeout; the bytes do not reset it."""
    started = time.monotonic()
    c = ctx.client()
    ctx.note(f"closed after {closed_at_hello_timeout(c, started, trickle=F.hello(c.session_id)):.1f} s")


@case("hello_pending_max", fresh_retry_s=HELLO_TIMEOUT_S + TIMEOUT_MARGIN_S)
def pending_hellos(ctx):
    """At most pending_hellos_max (4096) sockets wait for their HELLO: 64 more are closed
    at once (long before the 5 s HELLO timeout); established sessions do not notice."""
    started = time.monotonic()
    sockets = []
    try:
        for _ in range(PENDING_HELLOS_MAX + PENDING_HELLOS_EXTRA):
            sockets.append(socket.create_connection(("127.0.0.1", ctx.port), timeout=5))
        poller = select.poll()
        by_fd = {}
        for s in sockets:
            s.setblocking(False)
            poller.register(s, select.POLLIN)
            by_fd[s.fileno()] = s
        closed = set()
        # Closed at once means well before the HELLO timeout closes the others.
        deadline = started + HELLO_TIMEOUT_S - 1.0
        while len(closed) < PENDING_HELLOS_EXTRA and time.monotonic() < deadline:
            for fd, _ in poller.poll(max(deadline - time.monotonic(), 0) * 1000):
                try:
                    data = by_fd[fd].recv(4096)
                except ConnectionResetError:
                    data = b""
                except BlockingIOError:
                    continue
                if data:
                    raise CaseFailure(f"a socket that sent no HELLO received {len(data)} bytes")
                closed.add(fd)
                poller.unregister(fd)
        if len(closed) != PENDING_HELLOS_EXTRA:
            raise CaseFailure(f"{len(closed)} of {len(sockets)} sockets without HELLO closed within "
                              f"{HELLO_TIMEOUT_S - 1.0:.0f} s, expected the {PENDING_HELLOS_EXTRA} beyond "
                              f"{PENDING_HELLOS_MAX}")
        ctx.note(f"{len(closed)} of {len(sockets)} closed at once")
    finally:
        for s in sockets:
            s.close()


def windows_refused(ctx, windows):
    """A HELLO announcing `windows` is malformed (SPEC §4.1: bad_value): closed without an
    answer."""
    c = ctx.client()
    c.send_hello(windows=windows)
    c.expect_close(f"the close for a HELLO announcing windows {windows}", allowed=frozenset())


@case("hello_stream_window_below_min")
def stream_window_below_min(ctx):
    """A 68-byte HELLO announcing a 1 KiB stream window (minimum 16 KiB): closed, no answer."""
    windows_refused(ctx, (1024, F.CONNECTION_WINDOW_DEFAULT))


@case("hello_connection_window_below_min")
def connection_window_below_min(ctx):
    """A HELLO announcing a 32 KiB connection window (minimum 64 KiB): closed, no answer."""
    windows_refused(ctx, (F.STREAM_WINDOW_MIN, 32 * 1024))


@case("hello_window_above_max")
def window_above_max(ctx):
    """A HELLO announcing a 2^31 connection window (limit 2^31-1): closed, no answer."""
    windows_refused(ctx, (F.STREAM_WINDOW_DEFAULT, 1 << 31))


@case("hello_stream_window_above_connection")
def stream_window_above_connection(ctx):
    """A HELLO announcing a stream window above its connection window: closed, no answer."""
    windows_refused(ctx, (1024 * 1024, 512 * 1024))


# hello_windows_exchanged: our stream window, and the call that failed in issue 11 (an
# 800 kB request and response, both above the default 256 KiB window).
ANNOUNCED_STREAM_WINDOW = 1024 * 1024
WINDOWS_CALL_BYTES = 800_000


@case("hello_windows_exchanged", rss_mib=16)
def windows_exchanged(ctx):
    """Windows travel in the handshake: the HELLO_ACK (>= 52 bytes) announces the server's
    windows (at least the minimums), and the server honours ours: with a 1 MiB stream
    window an 800 kB response arrives whole with no CREDIT from us, after an 800 kB request
    sent under the window the server announced."""
    c = ctx.client(auto_credit=False)
    ack = c.handshake(windows=(ANNOUNCED_STREAM_WINDOW, F.CONNECTION_WINDOW_DEFAULT))
    if ack["stream_window"] is None:
        raise CaseFailure(f"HELLO_ACK of {ack['length']} bytes carries no windows (expected >= "
                          f"{F.HELLO_ACK_WINDOW_BYTES})")
    if ack["stream_window"] < F.STREAM_WINDOW_MIN or ack["connection_window"] < F.CONNECTION_WINDOW_MIN:
        raise CaseFailure(f"HELLO_ACK announces windows {ack['stream_window']}/{ack['connection_window']}, "
                          f"below the minimums")
    stream_id = c.open(HANDLER_UNARY, preamble(WINDOWS_CALL_BYTES))
    c.send_data(stream_id, WINDOWS_CALL_BYTES, end_stream=True)
    c.read_response(stream_id, WINDOWS_CALL_BYTES)
    ctx.note(f"server windows {ack['stream_window']}/{ack['connection_window']}")


@case("hello_route_key_60_bytes")
def route_key_hello(ctx):
    """A 60-byte HELLO (with route_key, no windows) is accepted with the default windows."""
    c = ctx.connected(hello={"route_key": 0x0123456789ABCDEF})
    c.call_unary()


@case("second_hello")
def second_hello(ctx):
    """A second HELLO after the handshake: ERROR(0, protocol_error), closed, session over."""
    c = ctx.connected()
    c.call_unary()
    mux_violation(ctx, c, [F.hello(c.session_id)], F.PROTOCOL_ERROR)


@case("hello_ack_from_dialer")
def hello_ack_from_dialer(ctx):
    """A HELLO_ACK sent by the dialing side after the handshake: ERROR(0, 7), closed."""
    c = ctx.connected()
    c.call_unary()
    mux_violation(ctx, c, [F.frame(F.HELLO_ACK, 0, bytes(F.HELLO_ACK_BYTES))], F.PROTOCOL_ERROR)
