"""Floods (the design's mux/session/flood.h limits, per connection and per second): each is sent
well above its limit, fast enough that a token bucket refilling at the limit cannot keep
up even on a slow machine (several times the limit). The server answers ERROR(0,
resource_exhausted, "flood: ...") and closes; the session is over; the bystander
connection notices nothing (checked by the runner)."""
from . import frames as F
from .client import HANDLER_SINK, CaseFailure, preamble
from .common import session_ended
from .runner import case

# Flood limits of the design, per connection per second.
RESETS_PER_S = 10_000
EMPTY_DATA_PER_S = 10_000
PINGS_PER_S = 1_000
CREDITS_PER_S = 200_000
GOAWAYS_PER_S = 10
IGNORABLE_PER_S = 10_000
# How many times its limit a flood sends: the bucket (one second's worth) overflows unless
# the server takes longer than FLOOD_FACTOR - 1 seconds to read the flood.
FLOOD_FACTOR = 4


def flood(ctx, c, blob, what):
    """Sends the flood `blob`; expects ERROR(0, 12, "flood: ...") and the close, and the
    session to be over."""
    c.send_raw(blob)
    error = c.expect_connection_error(F.RESOURCE_EXHAUSTED, text_prefix="flood:")
    ctx.note(f"{what}: {error!r}")
    session_ended(ctx, c)


def opened_then(c, count, closing):
    """`count` streams, each opened to the sink and at once closed by closing(stream id)."""
    parts = []
    for _ in range(count):
        stream_id = c.new_stream_id()
        parts.append(F.open_frame(stream_id, HANDLER_SINK, preamble(0)))
        parts.append(closing(stream_id))
    return b"".join(parts)


@case("flood_rapid_reset", rss_mib=16)
def rapid_reset(ctx):
    """OPEN + RESET pairs (rapid reset) over 10,000 per second."""
    c = ctx.connected()
    blob = opened_then(c, RESETS_PER_S * FLOOD_FACTOR, lambda s: F.reset(s, F.CANCELLED))
    flood(ctx, c, blob, "OPEN+RESET")


@case("flood_error_as_cancel", rss_mib=16)
def error_as_cancel(ctx):
    """OPEN + stream-scoped ERROR pairs (an ERROR used as a cancel) count as resets."""
    c = ctx.connected()
    blob = opened_then(c, RESETS_PER_S * FLOOD_FACTOR, lambda s: F.error(s, F.CANCELLED, b"cancel"))
    flood(ctx, c, blob, "OPEN+ERROR")


@case("flood_empty_data")
def empty_data(ctx):
    """Empty DATA frames (no payload, no END_STREAM) on an open stream over 10,000 per second."""
    c = ctx.connected()
    stream_id = c.open(HANDLER_SINK, preamble(0))
    flood(ctx, c, F.data(stream_id, b"") * (EMPTY_DATA_PER_S * FLOOD_FACTOR), "empty DATA")


@case("flood_ping")
def ping_flood(ctx):
    """PINGs over 1,000 per second (we read every PONG)."""
    c = ctx.connected()
    flood(ctx, c, F.ping(7) * (PINGS_PER_S * FLOOD_FACTOR), "PING")


@case("flood_unsolicited_pong")
def pong_flood(ctx):
    """PONGs nobody asked for over 1,000 per second."""
    c = ctx.connected()
    flood(ctx, c, F.pong(7) * (PINGS_PER_S * FLOOD_FACTOR), "PONG")


@case("flood_credit", rss_mib=16)
def credit_flood(ctx):
    """CREDIT frames over 200,000 per second (1-byte increments on stream 0)."""
    c = ctx.connected()
    flood(ctx, c, F.credit(0, 1) * (CREDITS_PER_S * FLOOD_FACTOR), "CREDIT")


@case("flood_goaway")
def goaway_flood(ctx):
    """GOAWAY frames over 10 per second."""
    c = ctx.connected()
    flood(ctx, c, F.goaway(0) * (GOAWAYS_PER_S * FLOOD_FACTOR * 10), "GOAWAY")


@case("flood_ignorable_kinds")
def ignorable_flood(ctx):
    """Frames of an ignorable unknown kind (0x80) over 10,000 per second."""
    c = ctx.connected()
    flood(ctx, c, F.frame(0x80, 0, b"") * (IGNORABLE_PER_S * FLOOD_FACTOR), "ignorable kind")


# ping_flood_unread: PINGs sent without reading a byte, through a small receive buffer so
# that the server's PONGs cannot leave.
UNREAD_PINGS = 100_000
UNREAD_RCVBUF_BYTES = 4096


@case("flood_ping_unread")
def ping_flood_unread(ctx):
    """PINGs from a peer that never reads (our PONGs cannot be sent): the server does not
    queue answers without bound; it closes, with ERROR(0, 12, "flood: ...") or without."""
    c = ctx.client(rcvbuf=UNREAD_RCVBUF_BYTES)
    c.handshake()
    c.send_raw(F.ping(9) * UNREAD_PINGS, read_while_blocked=False)

    def flood_error(f):
        return f.kind == F.ERROR and f.stream_id == 0 and f.status() == F.RESOURCE_EXHAUSTED and \
            f.text().startswith("flood:")
    seen = c.expect_close("the close of a peer that never reads", frame_ok=flood_error)
    pongs = sum(1 for f in seen if f.kind == F.PONG)
    if pongs >= UNREAD_PINGS:
        raise CaseFailure(f"every one of {UNREAD_PINGS} PINGs was answered")
    errors = [f for f in seen if f.kind == F.ERROR]
    ctx.note(f"closed after {pongs} PONGs" + (f", {errors[0]!r}" if errors else ", no ERROR"))
