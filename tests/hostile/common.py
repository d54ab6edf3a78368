"""Reactions several cases share: a wire error (closed, no frame, nothing after it
interpreted), a mux violation (ERROR on stream 0, closed, session over), and the two
outcomes of a resume."""
from . import frames as F
from .client import BENIGN_KINDS, HANDLER_UNARY, CaseFailure, preamble


def wire_violation(ctx, bad_bytes, client=None):
    """Sends `bad_bytes` on an established connection, followed by a valid unary call that
    must never be answered: SPEC §2.1 closes the connection with no frame, and nothing after
    the bad frame is interpreted. Returns the client (its session may resume)."""
    c = client or ctx.connected()
    c.call_unary()
    trailing = c.new_stream_id()
    c.send_raw(bad_bytes + F.open_frame(trailing, HANDLER_UNARY, preamble(64), end_stream=True))
    c.expect_close("the close for a wire error")
    return c


def resumed_with(ctx, old, status, **resume_fields):
    """Resumes `old`'s session on a new connection (resume_fields: generation or
    receive_position other than the right ones); the HELLO_ACK must carry `status`."""
    c = ctx.resume(old, **resume_fields)
    ack = c.read_hello_ack()
    if ack["status"] != status:
        raise CaseFailure(f"resume ({resume_fields or 'as sent'}): HELLO_ACK status {ack['status']}, "
                          f"expected {status}")
    return c


def session_resumes(ctx, old):
    """The session of `old` resumes on a new connection, where a call is served."""
    c = resumed_with(ctx, old, F.OK)
    if c.hello_ack["receive_position"] != old.sent_position:
        raise CaseFailure(f"resume: the server received up to {c.hello_ack['receive_position']}, "
                          f"we sent {old.sent_position}")
    c.call_unary()
    ctx.note("session resumed")
    return c


def session_ended(ctx, old, status=F.RESUME_UNKNOWN_SESSION, **resume_fields):
    """A resume of `old`'s session is refused with `status` (by default
    resume_unknown_session: the session is over), then closed."""
    c = resumed_with(ctx, old, status, **resume_fields)
    c.expect_close("the close after a refusing HELLO_ACK")


def mux_violation(ctx, c, bad_frames, status, allowed=BENIGN_KINDS, text_contains=None):
    """Sends well-formed frames that break the mux rules: ERROR(0, status), closed, and
    the session is over."""
    c.send(*bad_frames)
    error = c.expect_connection_error(status, allowed=allowed, text_contains=text_contains)
    ctx.note(f"{error!r}")
    session_ended(ctx, c)
    return error
