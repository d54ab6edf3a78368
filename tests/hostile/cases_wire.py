"""Each check of wire/SPEC.md §2.1, in its order, after the handshake; truncated and
garbage streams; a frame trickled in (slowloris)."""
import os
import socket
import struct
import subprocess
import time

from . import frames as F
from .client import HANDLER_SINK, CaseFailure, Closed, preamble
from .common import session_resumes, wire_violation
from .runner import case


@case("harness_checksums_match_codec")
def checksums_match_codec(ctx):
    """The suite's XXH3 (libxxhash through ctypes) agrees with the C++ codec: the HELLO a
    real ringmux-loadgen sends decodes with both checksums verified, and the suite's own
    encoder produces the same bytes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    loadgen = os.path.join(ctx.options.build_dir, "tools", "ringmux-loadgen")
    proc = subprocess.Popen([loadgen, "--host=127.0.0.1", f"--port={listener.getsockname()[1]}", "--runtime=1s"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        listener.settimeout(10)
        conn, _ = listener.accept()
        conn.settimeout(10)
        raw = b""
        wanted = F.HEADER_BYTES  # then the length the header gives
        while len(raw) < wanted:
            chunk = conn.recv(wanted - len(raw))
            if not chunk:
                raise CaseFailure(f"loadgen closed after {len(raw)} bytes")
            raw += chunk
            if len(raw) == F.HEADER_BYTES:
                wanted += struct.unpack_from("<I", raw)[0]
        conn.close()
    finally:
        proc.kill()
        proc.wait()
        listener.close()
    decoder = F.Decoder()
    decoder.feed(raw)
    hello = decoder.next()  # raises on a checksum the suite computes differently
    if hello is None or hello.kind != F.HELLO:
        raise CaseFailure(f"loadgen's first frame is {hello!r}")
    fields = {"generation": hello.u64(32)}
    if len(hello.payload) >= F.HELLO_ROUTE_BYTES:
        fields["route_key"] = hello.u64(52)
    if len(hello.payload) >= F.HELLO_WINDOW_BYTES:
        fields["windows"] = struct.unpack_from("<II", hello.payload, 60)
    again = F.hello(hello.payload[16:32], **fields)
    if again != raw:
        raise CaseFailure(f"the suite encodes {again.hex()}, loadgen sent {raw.hex()}")
    ctx.note(f"loadgen's {len(hello.payload)}-byte HELLO verified and re-encoded byte for byte")


def corrupt(frame_bytes, offset):
    """`frame_bytes` with one bit flipped at `offset`."""
    damaged = bytearray(frame_bytes)
    damaged[offset] ^= 0x01
    return bytes(damaged)


@case("wire_1_header_checksum")
def header_checksum(ctx):
    """§2.1.1: a header checksum that does not match closes the connection, no frame."""
    wire_violation(ctx, corrupt(F.ping(1), 12))


@case("wire_1_header_checksum_session_resumes")
def header_checksum_resumes(ctx):
    """A wire error ends only the connection: the session resumes on a new one (the
    damage may be the network's) and serves calls there."""
    c = wire_violation(ctx, corrupt(F.ping(1), 12))
    session_resumes(ctx, c)


@case("wire_2_payload_too_large")
def payload_too_large(ctx):
    """§2.1.2: a length above 1,048,552 with a valid header checksum closes, no frame."""
    wire_violation(ctx, F.header(F.DATA, 1, b"", length=F.PAYLOAD_BYTES_MAX + 1))


@case("wire_3_reserved_nonzero")
def reserved_nonzero(ctx):
    """§2.1.3: reserved != 0 closes, no frame."""
    wire_violation(ctx, F.frame(F.PING, 0, struct.pack("<Q", 1), reserved=1))


@case("wire_4_unknown_kind")
def unknown_kind(ctx):
    """§2.1.4: an unknown kind without the ignorable bit (0x0e) closes, no frame."""
    wire_violation(ctx, F.frame(0x0E, 0, b""))


@case("wire_4_ignorable_kind_skipped")
def ignorable_kind(ctx):
    """§4: an unknown kind with bit 7 set is skipped after its header is verified (flags,
    stream id and payload checksum not interpreted); the connection goes on."""
    c = ctx.connected()
    skipped = F.frame(0x8E, 12345, bytes(100), flags=0xFF, payload_checksum=0x1234)
    c.send_raw(skipped)
    c.call_unary()
    c.call_unary()


@case("wire_5_bad_flags_ping")
def bad_flags_ping(ctx):
    """§2.1.5: END_STREAM on a PING closes, no frame."""
    wire_violation(ctx, F.frame(F.PING, 0, struct.pack("<Q", 1), flags=F.END_STREAM))


@case("wire_5_bad_flags_data")
def bad_flags_data(ctx):
    """§2.1.5: an undefined flag bit (0x02) on DATA of an open stream closes, no frame."""
    c = ctx.connected()
    stream_id = c.open(HANDLER_SINK, preamble(0))
    wire_violation(ctx, F.frame(F.DATA, stream_id, b"x", flags=0x02), client=c)


@case("wire_6_stream_id_required")
def stream_id_required(ctx):
    """§2.1.6: DATA on stream 0 closes, no frame."""
    wire_violation(ctx, F.frame(F.DATA, 0, b"x"))


@case("wire_6_stream_id_forbidden")
def stream_id_forbidden(ctx):
    """§2.1.6: PING on stream 7 closes, no frame."""
    wire_violation(ctx, F.frame(F.PING, 7, struct.pack("<Q", 1)))


@case("wire_7_payload_truncated")
def payload_truncated(ctx):
    """§2.1.7: a RESET with a 3-byte payload closes, no frame."""
    wire_violation(ctx, F.frame(F.RESET, 1, b"\x01\x00\x00"))


@case("wire_7_trailing_bytes")
def trailing_bytes(ctx):
    """§2.1.7: a PING with a 9-byte payload closes, no frame."""
    wire_violation(ctx, F.frame(F.PING, 0, bytes(9)))


@case("wire_7_text_too_long")
def text_too_long(ctx):
    """§2.1.7: a GOAWAY whose debug text is 1025 bytes closes, no frame (a valid GOAWAY
    would not close)."""
    wire_violation(ctx, F.goaway(0, F.OK, b"x" * (F.TEXT_BYTES_MAX + 1)))


@case("wire_8_payload_checksum")
def payload_checksum(ctx):
    """§2.1.8: a payload checksum that does not match closes, no frame."""
    ping = F.ping(1)
    wire_violation(ctx, ping[:F.HEADER_BYTES] + corrupt(ping[F.HEADER_BYTES:], 0))


@case("wire_9_credit_zero")
def credit_zero(ctx):
    """§2.1.9: CREDIT with a zero increment (bad_value) closes, no frame."""
    wire_violation(ctx, F.frame(F.CREDIT, 0, struct.pack("<I", 0)))


@case("truncated_header_then_fin")
def truncated_header(ctx):
    """A stream that ends inside a frame header (FIN after 10 bytes): closed with no frame;
    the session resumes (a broken transport, not a broken peer)."""
    c = ctx.connected()
    c.call_unary()
    c.send_raw(F.ping(1)[:10])
    c.shutdown_write()
    c.expect_close("the close after a truncated header")
    session_resumes(ctx, c)


@case("truncated_payload_then_fin")
def truncated_payload(ctx):
    """A stream that ends inside a payload (DATA of 100 bytes, 50 sent, FIN): closed with
    no frame; the session resumes."""
    c = ctx.connected()
    stream_id = c.open(HANDLER_SINK, preamble(0))
    c.call_unary()
    c.send_raw(F.data(stream_id, bytes(100))[:F.HEADER_BYTES + 50])
    c.shutdown_write()
    c.expect_close("the close after a truncated payload")
    session_resumes(ctx, c)


@case("garbage_after_hello")
def garbage(ctx):
    """4 KiB of random bytes after the handshake: closed with no frame."""
    c = ctx.connected()
    c.call_unary()
    c.send_raw(bytes(ctx.rng.getrandbits(8) for _ in range(4096)))
    c.expect_close("the close after garbage")


# The trickle of slowloris_frame: one byte per interval, for at most this long (the
# frame_complete_timeout_ns of the design, 5 s, plus a margin for a loaded machine).
TRICKLE_INTERVAL_S = 0.1
FRAME_COMPLETE_TIMEOUT_S = 5.0
TRICKLE_LIMIT_S = FRAME_COMPLETE_TIMEOUT_S + 4.0


@case("slowloris_frame")
def slowloris_frame(ctx):
    """A frame whose bytes trickle in (one per 100 ms) must be complete within
    frame_complete_timeout_ns (5 s), however often a byte arrives: then ERROR(0,
    resource_exhausted, naming the frame) and the close."""
    c = ctx.connected()
    stream_id = c.open(HANDLER_SINK, preamble(0))
    c.call_unary()
    frame_bytes = F.data(stream_id, bytes(1000))
    started = time.monotonic()
    for byte in frame_bytes:
        elapsed = time.monotonic() - started
        if elapsed > TRICKLE_LIMIT_S:
            raise CaseFailure(f"a frame trickled in for {elapsed:.1f} s is still being waited for")
        if not c.send_raw(bytes([byte])):
            break
        try:
            f = c.recv_frame(TRICKLE_INTERVAL_S)
        except Closed:
            raise CaseFailure(f"closed without an ERROR frame after {time.monotonic() - started:.1f} s") from None
        if f is not None and f.kind == F.ERROR:
            c.unclaimed.append(f)
            break
    error = c.expect_connection_error(F.RESOURCE_EXHAUSTED, text_contains=("frame",))
    elapsed = time.monotonic() - started
    if elapsed < FRAME_COMPLETE_TIMEOUT_S - 0.5:
        raise CaseFailure(f"{error!r} after {elapsed:.1f} s, before the 5 s frame timeout")
    ctx.note(f"{error!r} after {elapsed:.1f} s")
