"""Frames of the ringmux wire format (wire/SPEC.md), built and parsed byte by byte.

The encoder writes whatever it is told (bad checksums, reserved bits, lengths that lie):
a hostile peer needs frames the C++ codec would refuse to produce. The Decoder checks
what the server sends as strictly as SPEC §2.1 asks, so a harness bug shows as a
decode error instead of a wrong verdict.

Checksums are XXH3-64 (seed 0) from Debian's libxxhash through ctypes, the same
implementation the C++ codec links (wire/checksum.cpp)."""
import ctypes
import struct

_xxhash = ctypes.CDLL("libxxhash.so.0")
_xxhash.XXH3_64bits.restype = ctypes.c_uint64
_xxhash.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def xxh3_64(data):
    data = bytes(data)
    return _xxhash.XXH3_64bits(data, len(data))


# ---- constants of wire/SPEC.md and base/limits.h ------------------------------------

HEADER_BYTES = 24
PAYLOAD_BYTES_MAX = 1024 * 1024 - HEADER_BYTES  # frame_payload_bytes_max
TEXT_BYTES_MAX = 1024  # frame_text_bytes_max

HELLO, HELLO_ACK, OPEN, DATA, END, RESET, STOP, CREDIT, PING, PONG, ACK, GOAWAY, ERROR = range(1, 14)
KIND_NAMES = {HELLO: "HELLO", HELLO_ACK: "HELLO_ACK", OPEN: "OPEN", DATA: "DATA", END: "END", RESET: "RESET",
              STOP: "STOP", CREDIT: "CREDIT", PING: "PING", PONG: "PONG", ACK: "ACK", GOAWAY: "GOAWAY",
              ERROR: "ERROR"}
IGNORABLE_BIT = 0x80
END_STREAM = 0x01
# Kinds whose bytes are numbered by replay positions (SPEC §8).
POSITION_KINDS = {OPEN, DATA, END, RESET, STOP, CREDIT, GOAWAY, ERROR}

# SPEC §7.
OK, CANCELLED, DEADLINE_EXCEEDED, REFUSED_STREAM, UNKNOWN_HANDLER, HANDLER_ERROR = range(6)
FLOW_CONTROL_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, SESSION_LOST, STREAM_STOPPED = range(6, 11)
GOING_AWAY, RESOURCE_EXHAUSTED, RESUME_POSITION_AHEAD, RESUME_POSITION_GONE = range(11, 15)
RESUME_UNKNOWN_SESSION, VERSION_UNSUPPORTED = 15, 16

HELLO_MAGIC = b"RMUX"
HELLO_FLAG_RESUME = 0x1
HELLO_BYTES = 52          # a version 1 HELLO without route_key
HELLO_ROUTE_BYTES = 60    # with route_key
HELLO_WINDOW_BYTES = 68   # with stream_window_bytes, connection_window_bytes (SPEC §4.1, issue 11)
HELLO_ACK_BYTES = 44
HELLO_ACK_WINDOW_BYTES = 52

# Windows announced in HELLO / HELLO_ACK (SPEC §4.1): the defaults when absent, the
# minimums (stream_window_bytes_min, connection_window_bytes_min) and the limit.
STREAM_WINDOW_DEFAULT = 256 * 1024
CONNECTION_WINDOW_DEFAULT = 8 * 1024 * 1024
STREAM_WINDOW_MIN = 16 * 1024
CONNECTION_WINDOW_MIN = 64 * 1024
WINDOW_LIMIT = (1 << 31) - 1


def kind_name(kind):
    return KIND_NAMES.get(kind, f"0x{kind:02x}")


# ---- encoding ---------------------------------------------------------------------------

def header(kind, stream_id, payload, flags=0, reserved=0, length=None, payload_checksum=None,
           header_checksum=None):
    """The 24 header bytes of a frame carrying `payload`; every field can be forced."""
    length = len(payload) if length is None else length
    payload_checksum = xxh3_64(payload) if payload_checksum is None else payload_checksum
    raw = bytearray(struct.pack("<IBBHIIQ", length, kind, flags, reserved, stream_id, 0, payload_checksum))
    if header_checksum is None:
        header_checksum = xxh3_64(raw) & 0xFFFFFFFF
    struct.pack_into("<I", raw, 12, header_checksum)
    return bytes(raw)


def frame(kind, stream_id=0, payload=b"", flags=0, **forced):
    payload = bytes(payload)
    return header(kind, stream_id, payload, flags, **forced) + payload


def hello_payload(session_id, generation=1, receive_position=0, resume=False, version_min=1, version_max=1,
                  features=0, route_key=None, windows=None, magic=HELLO_MAGIC):
    """A HELLO payload: 52 bytes, 60 with route_key, 68 with windows (stream, connection)."""
    payload = magic + struct.pack("<HHQ", version_min, version_max, features) + session_id
    payload += struct.pack("<QQI", generation, receive_position, HELLO_FLAG_RESUME if resume else 0)
    if route_key is not None or windows is not None:
        payload += struct.pack("<Q", route_key or 0)
    if windows is not None:
        payload += struct.pack("<II", *windows)
    return payload


def hello(session_id, **fields):
    return frame(HELLO, 0, hello_payload(session_id, **fields))


def open_frame(stream_id, handler_id, payload=b"", deadline_budget_ns=0, end_stream=False):
    return frame(OPEN, stream_id, struct.pack("<IQ", handler_id, deadline_budget_ns) + payload,
                 END_STREAM if end_stream else 0)


def data(stream_id, payload, end_stream=False):
    return frame(DATA, stream_id, payload, END_STREAM if end_stream else 0)


def end(stream_id):
    return frame(END, stream_id)


def reset(stream_id, code):
    return frame(RESET, stream_id, struct.pack("<I", code))


def stop(stream_id, code=STREAM_STOPPED):
    return frame(STOP, stream_id, struct.pack("<I", code))


def credit(stream_id, increment):
    return frame(CREDIT, stream_id, struct.pack("<I", increment))


def ping(opaque):
    return frame(PING, 0, struct.pack("<Q", opaque))


def pong(opaque):
    return frame(PONG, 0, struct.pack("<Q", opaque))


def ack(position):
    return frame(ACK, 0, struct.pack("<Q", position))


def goaway(last_stream_id, code=OK, debug=b""):
    return frame(GOAWAY, 0, struct.pack("<II", last_stream_id, code) + debug)


def error(stream_id, status, message=b""):
    return frame(ERROR, stream_id, struct.pack("<I", status) + message)


# ---- decoding ---------------------------------------------------------------------------

class WireViolation(Exception):
    """The server sent bytes that break wire/SPEC.md."""


class Frame:
    __slots__ = ("kind", "flags", "stream_id", "payload")

    def __init__(self, kind, flags, stream_id, payload):
        self.kind, self.flags, self.stream_id, self.payload = kind, flags, stream_id, payload

    @property
    def end_stream(self):
        return bool(self.flags & END_STREAM)

    def u32(self, offset=0):
        return struct.unpack_from("<I", self.payload, offset)[0]

    def u64(self, offset=0):
        return struct.unpack_from("<Q", self.payload, offset)[0]

    def status(self):
        """The status of RESET, STOP or ERROR (a u32 first), of GOAWAY (second u32)."""
        return self.u32(4) if self.kind == GOAWAY else self.u32(0)

    def text(self):
        """The message of ERROR, the debug text of GOAWAY."""
        start = 8 if self.kind == GOAWAY else 4
        return bytes(self.payload[start:]).decode("utf-8", "replace")

    def bytes_on_wire(self):
        return HEADER_BYTES + len(self.payload)

    def __repr__(self):
        text = f"{kind_name(self.kind)}(stream {self.stream_id}"
        if self.kind in (RESET, STOP, CREDIT):
            text += f", {self.u32()}"
        elif self.kind == ERROR or self.kind == GOAWAY:
            text += f", status {self.status()}, {self.text()!r}"
        elif self.kind == HELLO_ACK:
            text += f", status {parse_hello_ack(self)['status']}"
        elif self.kind == DATA:
            text += f", {len(self.payload)} bytes" + (", END_STREAM" if self.end_stream else "")
        return text + ")"


def parse_hello_ack(f):
    p = f.payload
    version, status, features = struct.unpack_from("<HHQ", p, 0)
    generation, receive_position = struct.unpack_from("<QQ", p, 28)
    ack = {"version": version, "status": status, "features": features, "session_id": bytes(p[12:28]),
           "generation": generation, "receive_position": receive_position, "length": len(p),
           "stream_window": None, "connection_window": None}
    if len(p) >= HELLO_ACK_WINDOW_BYTES:
        ack["stream_window"], ack["connection_window"] = struct.unpack_from("<II", p, 44)
    return ack


class Decoder:
    """Bytes in, verified frames out (both checksums and the length limit checked)."""

    def __init__(self):
        self.buffer = bytearray()

    def feed(self, data):
        self.buffer += data

    def next(self):
        if len(self.buffer) < HEADER_BYTES:
            return None
        raw = bytes(self.buffer[:HEADER_BYTES])
        length, kind, flags, reserved, stream_id, header_sum, payload_sum = struct.unpack("<IBBHIIQ", raw)
        zeroed = raw[:12] + b"\0\0\0\0" + raw[16:]
        if xxh3_64(zeroed) & 0xFFFFFFFF != header_sum:
            raise WireViolation(f"bad header checksum from the server: {raw.hex()}")
        if length > PAYLOAD_BYTES_MAX or reserved != 0:
            raise WireViolation(f"bad header from the server: length {length}, reserved {reserved}")
        if len(self.buffer) < HEADER_BYTES + length:
            return None
        with memoryview(self.buffer) as view:
            payload = bytes(view[HEADER_BYTES:HEADER_BYTES + length])  # one copy, not two
        del self.buffer[:HEADER_BYTES + length]
        if not kind & IGNORABLE_BIT and xxh3_64(payload) != payload_sum:
            raise WireViolation(f"bad payload checksum from the server on {kind_name(kind)}")
        return Frame(kind, flags, stream_id, payload)
