"""Resume (SPEC §8.1) with wrong session ids, positions and generations."""
from . import frames as F
from .common import resumed_with, session_ended
from .runner import case


def ignored(ctx, old, what, **resume_fields):
    """A HELLO for `old`'s session closed without an answer."""
    c = ctx.resume(old, **resume_fields)
    c.expect_close(what, allowed=frozenset())


def dropped_after_call(ctx):
    """A session that received a response, whose TCP connection we then dropped."""
    c = ctx.connected()
    c.call_unary()
    c.close()
    return c


@case("resume_unknown_session")
def unknown_session(ctx):
    """A RESUME HELLO for a session the server never had: HELLO_ACK resume_unknown_session (15)."""
    c = ctx.client()
    session_ended(ctx, c, F.RESUME_UNKNOWN_SESSION)


@case("resume_position_ahead")
def position_ahead(ctx):
    """A resume claiming 1000 bytes more than the server sent: HELLO_ACK
    resume_position_ahead (13), and the session is over (a correct resume is then 15)."""
    c = dropped_after_call(ctx)
    session_ended(ctx, c, F.RESUME_POSITION_AHEAD, receive_position=c.received_position + 1000)
    session_ended(ctx, c, F.RESUME_UNKNOWN_SESSION, generation=3)


@case("resume_position_gone")
def position_gone(ctx):
    """A resume from position 0 after we acknowledged every byte (the server released
    them): HELLO_ACK resume_position_gone (14), and the session is over."""
    c = ctx.connected()
    c.call_unary()
    c.acknowledge()
    # PING after the ACK: its PONG says the server has handled the ACK.
    c.send(F.ping(0xACC))
    c.wait_for(lambda f: f.kind == F.PONG and f.u64() == 0xACC, "the PONG behind our ACK")
    c.close()
    session_ended(ctx, c, F.RESUME_POSITION_GONE, receive_position=0)
    session_ended(ctx, c, F.RESUME_UNKNOWN_SESSION, generation=3)


@case("resume_stale_generation")
def stale_generation(ctx):
    """HELLOs whose generation is not newer than the session's (2 again, then 1) are
    closed without an answer, and the live connection of generation 2 goes on."""
    c = dropped_after_call(ctx)
    live = resumed_with(ctx, c, F.OK)
    live.call_unary()
    ignored(ctx, c, "the close of a HELLO of the same generation", generation=2)
    ignored(ctx, c, "the close of a HELLO of an older generation", generation=1)
    live.call_unary()


@case("resume_live_id_as_new_session")
def live_id_as_new_session(ctx):
    """A new-session HELLO (no RESUME, generation 1) reusing a live session's id is not
    newer than it: closed without an answer; the live session goes on."""
    live = ctx.connected()
    live.call_unary()
    intruder = ctx.client(session_id=live.session_id)
    intruder.send_hello()
    intruder.expect_close("the close of a HELLO reusing a live id", allowed=frozenset())
    live.call_unary()
