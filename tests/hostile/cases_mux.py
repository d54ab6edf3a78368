"""Each frame kind misused after the handshake (connection-scoped: ERROR on stream 0 and
the close), and the stream-scoped reactions that leave the connection alone."""
import time

from . import frames as F
from .client import (BENIGN_KINDS, HANDLER_ECHO, HANDLER_SINK, HANDLER_SOURCE, HANDLER_UNARY, CaseFailure,
                     preamble)
from .common import mux_violation, session_resumes
from .runner import case

# A stream id above any the client opened: no stream of the client's parity ever had it.
NEVER_OPENED_ID = 101
# A stream id of the server's parity; ringmux-serve never opens streams.
NEVER_OPENED_SERVER_ID = 100
DEADLINE_MAX_NS = (1 << 64) - 1


def violation_case(name, doc, make_frames, status=F.PROTOCOL_ERROR):
    """Registers a case: a connected client (one call made) sends make_frames(client)."""
    def run(ctx):
        c = ctx.connected()
        c.call_unary()
        mux_violation(ctx, c, make_frames(c), status)
    run.__doc__ = doc
    case(name)(run)


violation_case("open_wrong_parity", "OPEN on an even (server-side) id: ERROR(0, 7), closed, session over.",
               lambda c: [F.open_frame(2, HANDLER_UNARY, preamble(64), end_stream=True)])
violation_case("open_id_not_increasing", "OPEN on id 1 after id 3: ERROR(0, 7), closed, session over.",
               lambda c: [F.open_frame(3, HANDLER_SINK, preamble(0)), F.open_frame(1, HANDLER_SINK, preamble(0))])
violation_case("data_never_opened_stream", "DATA on a stream id never opened: ERROR(0, 7).",
               lambda c: [F.data(NEVER_OPENED_ID, b"x")])
violation_case("data_never_opened_server_stream", "DATA on a server-parity id the server never opened: ERROR(0, 7).",
               lambda c: [F.data(NEVER_OPENED_SERVER_ID, b"x")])
violation_case("end_never_opened_stream", "END on a stream id never opened: ERROR(0, 7).",
               lambda c: [F.end(NEVER_OPENED_ID)])
violation_case("reset_never_opened_stream", "RESET on a stream id never opened: ERROR(0, 7).",
               lambda c: [F.reset(NEVER_OPENED_ID, F.CANCELLED)])
violation_case("stop_never_opened_stream", "STOP on a stream id never opened: ERROR(0, 7).",
               lambda c: [F.stop(NEVER_OPENED_ID)])
violation_case("credit_never_opened_stream", "CREDIT on a stream id never opened: ERROR(0, 7).",
               lambda c: [F.credit(NEVER_OPENED_ID, 1024)])
violation_case("error_never_opened_stream", "A stream-scoped ERROR on a stream id never opened: ERROR(0, 7).",
               lambda c: [F.error(NEVER_OPENED_ID, F.CANCELLED, b"no such stream")])
violation_case("open_after_own_goaway", "OPEN after our own GOAWAY: ERROR(0, 7), not served.",
               lambda c: [F.goaway(0), F.open_frame(c.new_stream_id(), HANDLER_UNARY, preamble(64), end_stream=True)])
violation_case("open_payload_above_window",
               "OPEN whose payload is one byte above the server's stream window: ERROR(0, flow_control 6).",
               lambda c: [F.open_frame(c.new_stream_id(), HANDLER_SINK, bytes(c.send_stream_window + 1))],
               F.FLOW_CONTROL_ERROR)
violation_case("credit_overflow_connection",
               "CREDIT on stream 0 taking the server's credit past 2^31-1: ERROR(0, 6).",
               lambda c: [F.credit(0, F.WINDOW_LIMIT)], F.FLOW_CONTROL_ERROR)
violation_case("credit_overflow_stream",
               "CREDIT on an open stream taking its credit past 2^31-1: ERROR(0, 6).",
               lambda c: [F.open_frame(c.new_stream_id(), HANDLER_SINK, preamble(0)),
                          F.credit(c.next_stream_id - 2, F.WINDOW_LIMIT)], F.FLOW_CONTROL_ERROR)


@case("data_after_end")
def data_after_end(ctx):
    """DATA on a stream after our END_STREAM (the server still writes its side): ERROR(0, 7)."""
    c = ctx.connected(auto_credit=False)
    stream_id = c.open(HANDLER_SOURCE, preamble(1024), end_stream=True)
    # The source fills our window and stops: nothing of the server's is in flight when it
    # meets the violation (this case is about the rule, not about a close racing bulk data).
    c.wait_until(lambda: c.data_bytes[stream_id] >= c.recv_stream_window, "a window of the source's DATA")
    c.send(F.data(stream_id, b"x"))
    error = c.expect_connection_error(F.PROTOCOL_ERROR, allowed=BENIGN_KINDS | {F.DATA})
    ctx.note(repr(error))


# data_beyond_credit: a stream window grows to stream_window_bytes_max (2 MiB) at most.
STREAM_WINDOW_GROWTH_MAX = 2 * 1024 * 1024
DATA_CHUNK_BYTES = 64 * 1024


@case("data_beyond_credit", rss_mib=16)
def data_beyond_credit(ctx):
    """DATA past the stream's credit (4.25 MiB by default, on an echo stream whose echo we
    never credit, so the server cannot consume it): ERROR(0, flow_control_error 6), closed."""
    c = ctx.connected(auto_credit=False)
    stream_id = c.open(HANDLER_ECHO, preamble(0))
    # Above any credit the server can have granted: twice its largest window, plus what it
    # may consume by echoing into our window.
    beyond = 2 * max(c.send_stream_window, STREAM_WINDOW_GROWTH_MAX) + c.recv_stream_window
    c.send_raw(F.data(stream_id, bytes(DATA_CHUNK_BYTES)) * (beyond // DATA_CHUNK_BYTES + 1))
    error = c.expect_connection_error(F.FLOW_CONTROL_ERROR, allowed=BENIGN_KINDS | {F.DATA})
    ctx.note(repr(error))


@case("ack_beyond_sent")
def ack_beyond_sent(ctx):
    """An ACK of a position the server never reached closes the connection with no frame
    (transport only): the session resumes."""
    c = ctx.connected()
    c.call_unary()
    c.send_raw(F.ack(c.received_position + 1_000_000))
    c.expect_close("the close after an ACK beyond what was sent")
    session_resumes(ctx, c)


@case("client_connection_error")
def client_connection_error(ctx):
    """An ERROR on stream 0 from the client (it reports a connection error): the server
    closes the connection (it may answer with an ERROR of its own)."""
    c = ctx.connected()
    c.call_unary()
    c.send(F.error(0, F.INTERNAL_ERROR, b"the client gives up"))
    c.expect_close("the close after the client's ERROR", allowed=BENIGN_KINDS | {F.ERROR})


# ---- stream-scoped: the stream ends, the connection goes on ------------------------------

@case("unknown_handler")
def unknown_handler(ctx):
    """OPEN for handler 99: RESET (or ERROR) with unknown_handler (4); the connection goes on."""
    c = ctx.connected()
    stream_id = c.open(99, b"", end_stream=True)
    ctx.note(repr(c.expect_stream_end(stream_id, F.UNKNOWN_HANDLER)))
    c.call_unary()


@case("deadline_below_min")
def deadline_below_min(ctx):
    """A unary OPEN with a 5 us budget (below 10 us): RESET deadline_exceeded (2)."""
    c = ctx.connected()
    stream_id = c.open(HANDLER_UNARY, preamble(64), deadline_budget_ns=5_000, end_stream=True)
    ctx.note(repr(c.expect_stream_end(stream_id, F.DEADLINE_EXCEEDED)))
    c.call_unary()


@case("deadline_budget_max")
def deadline_budget_max(ctx):
    """A budget of 2^64-1 ns does not wrap: a unary call whose request ends after a round
    trip is served, and an echo stream with that budget echoes."""
    c = ctx.connected()
    unary = c.open(HANDLER_UNARY, preamble(64), deadline_budget_ns=DEADLINE_MAX_NS)
    # The PONG says the server has taken the OPEN and its loop has turned (a deadline that
    # wrapped to the past has fired by then).
    c.send(F.ping(0xDEAD))
    c.wait_for(lambda f: f.kind == F.PONG and f.u64() == 0xDEAD, "the PONG behind the OPEN")
    c.send(F.data(unary, b"", end_stream=True))
    c.read_response(unary, 64)
    echo = c.open(HANDLER_ECHO, preamble(0), deadline_budget_ns=DEADLINE_MAX_NS)
    c.send(F.data(echo, b"hello", end_stream=True))
    c.wait_ended(echo, "the end of the echo stream with budget 2^64-1")
    if c.data_bytes[echo] != 5:
        raise CaseFailure(f"echo stream with budget 2^64-1: {c.data_bytes[echo]} bytes back, expected 5")


# stream_deadline_echo: the budget, and how early the reset may come (clocks of client and
# server start a little apart).
STREAM_BUDGET_S = 0.2
EARLY_TOLERANCE_S = 0.01


@case("stream_deadline_echo")
def stream_deadline(ctx):
    """An echo stream opened with a 200 ms budget and left open: the server resets it
    with deadline_exceeded (2) once the budget has passed."""
    c = ctx.connected()
    started = time.monotonic()
    stream_id = c.open(HANDLER_ECHO, preamble(0), deadline_budget_ns=int(STREAM_BUDGET_S * 1e9))
    reset = c.expect_stream_end(stream_id, F.DEADLINE_EXCEEDED)
    elapsed = time.monotonic() - started
    if elapsed < STREAM_BUDGET_S - EARLY_TOLERANCE_S:
        raise CaseFailure(f"{reset!r} after {elapsed * 1000:.0f} ms, before the budget")
    ctx.note(f"{reset!r} after {elapsed * 1000:.0f} ms")
    c.call_unary()


# The server's close timeout for a stopped stream (stopped_stream_close_timeout_ns, 1 s),
# and the margin a loaded machine may add.
STOPPED_STREAM_CLOSE_TIMEOUT_S = 1.0
TIMEOUT_MARGIN_S = 4.0


@case("stream_stop_close_timeout")
def stream_stop(ctx):
    """STOP on a source stream (whose writer then neither ends nor resets): the server
    resets it with stream_stopped (10) within 1 s + margin; the connection goes on."""
    c = ctx.connected()
    stream_id = c.open(HANDLER_SOURCE, preamble(1024))
    c.wait_for(lambda f: f.kind == F.DATA and f.stream_id == stream_id, "the source's first DATA")
    started = time.monotonic()
    c.send(F.stop(stream_id))
    reset = c.expect_stream_end(stream_id, F.STREAM_STOPPED,
                                timeout_s=STOPPED_STREAM_CLOSE_TIMEOUT_S + TIMEOUT_MARGIN_S)
    ctx.note(f"{reset!r} {time.monotonic() - started:.2f} s after STOP")
    c.call_unary()


MAX_STREAMS = 4


@case("streams_concurrent_max", server_args=(f"--max_streams={MAX_STREAMS}",))
def streams_concurrent_max(ctx):
    """With --max_streams=4, a fifth open stream is refused with RESET refused_stream (3);
    once the four end, calls are served."""
    c = ctx.connected()
    sinks = [c.open(HANDLER_SINK, preamble(0)) for _ in range(MAX_STREAMS)]
    fifth = c.open(HANDLER_SINK, preamble(0))
    ctx.note(repr(c.expect_stream_end(fifth, F.REFUSED_STREAM)))
    c.send(*[F.end(s) for s in sinks])
    for s in sinks:
        c.wait_ended(s, f"the sink's answer on stream {s}")
    c.call_unary()


@case("reset_unknown_code")
def reset_unknown_code(ctx):
    """RESET with a status code no version defines (9999) ends that stream only."""
    c = ctx.connected()
    stream_id = c.open(HANDLER_SINK, preamble(0))
    c.send(F.reset(stream_id, 9999))
    c.call_unary()
    c.send(F.data(stream_id, b"late"))  # in flight after a reset: expected, ignored
    c.call_unary()


@case("stream_error_from_client")
def stream_error_from_client(ctx):
    """A stream-scoped ERROR from the client ends that stream only."""
    c = ctx.connected()
    stream_id = c.open(HANDLER_SINK, preamble(0))
    c.send(F.error(stream_id, F.CANCELLED, b"the client cancels"))
    c.call_unary()
