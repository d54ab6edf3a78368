"""The bounds of the design's resource model: request bytes buffered per call and per
connection, message sizes the serve tool builds, response copies, held bytes of detached
sessions, memory per idle connection, and idle sessions that must live forever."""
import select
import socket
import time

from . import frames as F
from .client import HANDLER_SOURCE, HANDLER_UNARY, CaseFailure, Closed, preamble
from .runner import MIB, case

# Limits of the design (base/limits.h and ringmux-serve's options).
UNARY_REQUEST_BYTES_MAX = 16 * MIB
CONNECTION_REQUEST_BYTES_MAX = 64 * MIB
SERVE_MAX_MESSAGE_DEFAULT = 1 * MIB
DETACHED_HELD_BYTES_MAX = 256 * MIB
REPLAY_BYTES_MAX = 16 * MIB
IDLE_CONNECTION_BYTES_MAX = 16 * 1024
CONTROL_FRAMES_QUEUED_MAX = 4096
PINGS_PER_S = 1_000


def names_limit(text, *words):
    return any(word.lower() in text.lower() for word in words)


# ringmux-serve caps unary requests at --max_message (1 MiB by default); these two cases
# run it at 16 MiB, the library's default unary_request_bytes_max.
@case("unary_request_over_limit", rss_mib=40, server_args=("--max_message=16m",))
def unary_request_over_limit(ctx):
    """A unary request that never ends is cut at unary_request_bytes_max (16 MiB): a
    stream-scoped ERROR resource_exhausted (12) naming the limit; the connection goes on."""
    c = ctx.connected()
    stream_id = c.open(HANDLER_UNARY, preamble(64))
    sent, error = c.send_data(stream_id, UNARY_REQUEST_BYTES_MAX + 4 * MIB,
                              stop=lambda f: f.stream_id == stream_id and f.kind in (F.RESET, F.ERROR))
    if error is None:
        error = c.wait_for(lambda f: f.stream_id == stream_id and f.kind in (F.RESET, F.ERROR),
                           f"ERROR on the unary stream after {sent >> 20} MiB of request")
    if error.kind != F.ERROR or error.status() != F.RESOURCE_EXHAUSTED:
        raise CaseFailure(f"{error!r}: expected ERROR(stream {stream_id}, status 12)")
    if not names_limit(error.text(), "request_bytes_max", "16 MiB", "16777216"):
        raise CaseFailure(f"{error!r}: the message should name the limit")
    ctx.note(f"{error!r} after {sent / MIB:.1f} MiB")
    c.call_unary()


# connection_request_bytes_max: five partial requests of 15 MiB each (under the 16 MiB
# per request) add up past the 64 MiB per connection on the fifth.
PARTIAL_REQUESTS = 5
PARTIAL_REQUEST_BYTES = 15 * MIB


@case("connection_request_bytes_max", rss_mib=96, server_args=("--max_message=16m",))
def connection_request_bytes_max(ctx):
    """Partial unary requests of one connection above connection_request_bytes_max
    (64 MiB): the stream that would exceed it gets ERROR(stream, 12); the others and the
    connection go on."""
    c = ctx.connected()
    streams = [c.open(HANDLER_UNARY, preamble(64)) for _ in range(PARTIAL_REQUESTS)]
    for index, stream_id in enumerate(streams):
        sent, error = c.send_data(stream_id, PARTIAL_REQUEST_BYTES,
                                  stop=lambda f: f.kind in (F.RESET, F.ERROR) and f.stream_id in streams)
        if error is not None and error.stream_id != streams[-1]:
            raise CaseFailure(f"{error!r} with {(index * PARTIAL_REQUEST_BYTES + sent) / MIB:.1f} MiB buffered, "
                              f"under the 64 MiB limit")
    if error is None:
        error = c.wait_for(lambda f: f.kind in (F.RESET, F.ERROR) and f.stream_id in streams,
                           f"ERROR once {PARTIAL_REQUESTS * PARTIAL_REQUEST_BYTES >> 20} MiB were buffered")
    if error.kind != F.ERROR or error.status() != F.RESOURCE_EXHAUSTED or error.stream_id != streams[-1]:
        raise CaseFailure(f"{error!r}: expected ERROR(stream {streams[-1]}, status 12)")
    ctx.note(repr(error))
    c.call_unary()


def max_message_refused(ctx, handler_id, end_stream):
    c = ctx.connected()
    stream_id = c.open(handler_id, preamble(64 * MIB), end_stream=end_stream)
    error = c.wait_for(lambda f: f.stream_id == stream_id, f"ERROR on stream {stream_id}",
                       allowed=frozenset({F.ACK, F.CREDIT, F.PING, F.PONG}))
    if error.kind != F.ERROR or error.status() != F.RESOURCE_EXHAUSTED:
        raise CaseFailure(f"{error!r}: expected ERROR(stream {stream_id}, status 12)")
    if not names_limit(error.text(), "max_message"):
        raise CaseFailure(f"{error!r}: the message should name --max_message")
    ctx.note(repr(error))
    c.call_unary()


@case("max_message_source")
def max_message_source(ctx):
    """A source stream asking for 64 MiB messages (above --max_message, 1 MiB by default):
    stream-scoped ERROR(12) naming the option, nothing allocated for it."""
    max_message_refused(ctx, HANDLER_SOURCE, end_stream=False)


@case("max_message_unary")
def max_message_unary(ctx):
    """A unary call asking for a 64 MiB response: stream-scoped ERROR(12) naming --max_message."""
    max_message_refused(ctx, HANDLER_UNARY, end_stream=True)


# unary_response_no_copy: four calls whose 64 MiB responses are never read. The server
# holds one 64 MiB response buffer (ringmux-serve's pool) and what the windows let out.
UNREAD_RESPONSES = 4
UNREAD_RESPONSE_BYTES = 64 * MIB


@case("unary_response_no_copy", rss_mib=96, server_args=("--max_message=64m",))
def unary_response_no_copy(ctx):
    """Four 64 MiB unary responses that the client never reads: the rest beyond the
    window is not copied per call (peak RSS growth well under 4 x 64 MiB)."""
    c = ctx.connected(auto_credit=False)
    streams = [c.open(HANDLER_UNARY, preamble(UNREAD_RESPONSE_BYTES), end_stream=True)
               for _ in range(UNREAD_RESPONSES)]
    for stream_id in streams:
        # Once a stream's window of its response has arrived, its handler has replied.
        c.wait_until(lambda: c.data_bytes[stream_id] >= c.recv_stream_window,
                     f"a window of the response on stream {stream_id}")
    ctx.note(f"{len(streams)} responses started, {sum(c.data_bytes.values()) >> 10} KiB read")


# detached_held_bytes_cap: sessions that each pull this much without acknowledging it
# (the server holds it for a resume), then drop their connection.
DETACHED_SESSIONS = 24  # 360 MiB in all: well past the cap
DETACHED_KEPT_SESSIONS = 8  # the newest 120 MiB: under half the cap, must all be kept
PULLED_BYTES = 15 * MIB  # under REPLAY_BYTES_MAX less a send batch: the server gets that far
# The server's resume timeout for this case (--resume_timeout): the case must finish
# before the first detached session would end by it, on a loaded machine too.
RESUME_TIMEOUT_S = 60.0


# Beyond the detached sessions' cap, the server may hold the live session's replay bound,
# the source streams' messages and the allocator's slack.
DETACHED_RSS_SLACK_BYTES = 96 * MIB


@case("detached_held_bytes_cap", rss_mib=(DETACHED_HELD_BYTES_MAX + DETACHED_RSS_SLACK_BYTES) / MIB, release_only=True,
      server_args=("--resume_timeout=60s",))
def detached_held_bytes(ctx):
    """24 sessions each pull 15 MiB from a source stream, never ACK, and drop their
    connection: the held bytes of detached sessions stay under detached_held_bytes_max
    (256 MiB); over it the oldest detached session ends (its resume is refused with 15),
    while the newest 8 (120 MiB between them, under the cap) all resume."""
    dropped = []
    first_drop = None
    for _ in range(DETACHED_SESSIONS):
        c = ctx.connected(auto_ack=False)
        stream_id = c.open(HANDLER_SOURCE, preamble(SERVE_MAX_MESSAGE_DEFAULT))
        c.wait_until(lambda: c.received_position >= PULLED_BYTES, f"{PULLED_BYTES >> 20} MiB from the source")
        c.close()
        first_drop = first_drop or time.monotonic()
        dropped.append(c)
    if time.monotonic() - first_drop > RESUME_TIMEOUT_S - 1:
        raise CaseFailure("too slow: the oldest detached session may have ended by its resume timeout")
    oldest = ctx.resume(dropped[0])
    ack = oldest.read_hello_ack()
    if ack["status"] != F.RESUME_UNKNOWN_SESSION:
        raise CaseFailure(f"the oldest detached session resumed (status {ack['status']}) with "
                          f"{DETACHED_SESSIONS * PULLED_BYTES >> 20} MiB held by detached sessions; "
                          f"server RSS {ctx.server.rss_bytes() / MIB:.0f} MiB")
    # Under the cap sessions are kept: the newest, holding half the cap between them, all
    # resume (newest first; each stays attached, so it frees nothing for the others).
    for age, c in enumerate(reversed(dropped[-DETACHED_KEPT_SESSIONS:])):
        ack = ctx.resume(c).read_hello_ack()
        if ack["status"] != F.OK:
            raise CaseFailure(f"detached session {age + 1} from the newest was refused (status {ack['status']}): "
                              f"the {DETACHED_KEPT_SESSIONS} newest hold {DETACHED_KEPT_SESSIONS * PULLED_BYTES >> 20} "
                              f"MiB, under the {DETACHED_HELD_BYTES_MAX >> 20} MiB cap")
    ctx.note(f"server RSS {ctx.server.rss_bytes() / MIB:.0f} MiB with {DETACHED_SESSIONS} dropped sessions")


class IdleFleet:
    """Many connections that say HELLO, read their HELLO_ACK and then stay idle, answering
    the server's PINGs. Handshakes in flight are bounded, as a well-behaved dialer would."""

    HANDSHAKES_IN_FLIGHT_MAX = 256

    def __init__(self, ctx):
        self.ctx = ctx
        self.sockets = {}  # fd -> socket
        self.decoders = {}
        self.waiting = set()  # fds whose HELLO_ACK has not arrived
        self.last_heard = {}  # fd -> when the server last sent it something
        self.poller = select.poll()

    def open(self, count, timeout_s):
        deadline = time.monotonic() + timeout_s
        while len(self.sockets) < count or self.waiting:
            while len(self.sockets) < count and len(self.waiting) < self.HANDSHAKES_IN_FLIGHT_MAX:
                s = socket.create_connection(("127.0.0.1", self.ctx.port), timeout=5)
                s.sendall(F.hello(self.ctx.session_id()))
                s.setblocking(False)
                self.sockets[s.fileno()] = s
                self.decoders[s.fileno()] = F.Decoder()
                self.waiting.add(s.fileno())
                self.last_heard[s.fileno()] = time.monotonic()
                self.poller.register(s, select.POLLIN)
            if time.monotonic() > deadline:
                raise CaseFailure(f"{len(self.waiting)} handshakes unanswered after {timeout_s:.0f} s")
            self.service(100)

    def service(self, timeout_ms):
        """Handles what arrived: HELLO_ACKs, PINGs (answered); a close fails the case."""
        for fd, _ in self.poller.poll(timeout_ms):
            try:
                data = self.sockets[fd].recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                silent_s = time.monotonic() - self.last_heard[fd]
                raise CaseFailure(f"an idle connection was closed ({len(self.sockets)} open, "
                                  f"{len(self.waiting)} in handshake; it heard nothing for {silent_s:.1f} s)")
            self.last_heard[fd] = time.monotonic()
            decoder = self.decoders[fd]
            decoder.feed(data)
            while (f := decoder.next()) is not None:
                if f.kind == F.HELLO_ACK:
                    status = F.parse_hello_ack(f)["status"]
                    if status != F.OK:
                        raise CaseFailure(f"an idle connection's HELLO_ACK has status {status}")
                    self.waiting.discard(fd)
                elif f.kind == F.PING:
                    self.sockets[fd].send(F.pong(f.u64()))

    def close(self):
        for s in self.sockets.values():
            s.close()


def idle_rss_bound_mib(options):
    return options.idle_connections * IDLE_CONNECTION_BYTES_MAX / MIB + 8


@case("idle_connections_rss", rss_mib=idle_rss_bound_mib)
def idle_connections(ctx):
    """N idle connections after HELLO (--idle-connections, 1000 by default; the issue's
    figure is for 10,000) cost at most 16 KiB of server RSS each."""
    count = ctx.options.idle_connections
    before = ctx.server.rss_bytes()
    fleet = IdleFleet(ctx)
    try:
        fleet.open(count, timeout_s=60 + count / 100)
        fleet.service(0)
        per_connection = (ctx.server.rss_bytes() - before) / count
    finally:
        fleet.close()
    ctx.note(f"{count} idle connections: {per_connection / 1024:.1f} KiB of RSS each")
    if per_connection > IDLE_CONNECTION_BYTES_MAX and not ctx.options.sanitized:
        raise CaseFailure(f"{count} idle connections cost {per_connection / 1024:.1f} KiB of server RSS each "
                          f"(bound {IDLE_CONNECTION_BYTES_MAX >> 10} KiB)")


# idle_session_ping_round_trips: more round trips than the old lifetime count of control
# frames, one PING at a time, paced under the PING flood limit.
ROUND_TRIPS = CONTROL_FRAMES_QUEUED_MAX + 104
PING_RATE_PER_S = PINGS_PER_S * 0.8


@case("idle_session_ping_round_trips")
def idle_ping_round_trips(ctx):
    """An idle session that pings one at a time, reading each PONG, for 4,200 round trips
    (at 800 per second, under the PING flood limit) is never cut off; calls still work."""
    c = ctx.connected()
    started = time.monotonic()
    due = started
    for n in range(1, ROUND_TRIPS + 1):
        # Each PING at least an interval after the one before: a stall is never made up
        # by a burst, so no second (however the server counts them) sees 1,000.
        due = max(due + 1 / PING_RATE_PER_S, time.monotonic())
        while time.monotonic() < due:
            try:
                c.recv_frame(due - time.monotonic())
            except Closed:
                raise CaseFailure(f"cut off after {n - 1} PING round trips") from None
        c.send(F.ping(n))
        try:
            c.wait_for(lambda f: f.kind == F.PONG and f.u64() == n, f"the PONG of PING {n}")
        except CaseFailure as failure:
            raise CaseFailure(f"after {n - 1} round trips: {failure}") from None
    c.call_unary()
    ctx.note(f"{ROUND_TRIPS} round trips in {time.monotonic() - started:.1f} s")


# idle_session_keepalive: the server's own PINGs answered, with a 1 ms keepalive.
KEEPALIVE_PINGS = CONTROL_FRAMES_QUEUED_MAX + 104


@case("idle_session_keepalive", server_args=("--keepalive=1ms",), bystander=False, extra=True)
def idle_keepalive(ctx):
    """An idle session answering each of the server's keepalive PINGs (--keepalive=1ms)
    for 4,200 of them is never cut off. Extra: a 1 ms keepalive declares a peer dead after
    3 ms of silence, which a loaded machine can cause by itself."""
    c = ctx.connected()
    answered = 0
    started = time.monotonic()
    while answered < KEEPALIVE_PINGS:
        try:
            f = c.recv_frame(5.0)
        except Closed:
            raise CaseFailure(f"cut off after answering {answered} PINGs") from None
        if f is None:
            raise CaseFailure(f"no PING for 5 s after {answered}")
        answered += f.kind == F.PING
    c.call_unary()
    ctx.note(f"{answered} PINGs answered in {time.monotonic() - started:.1f} s")
