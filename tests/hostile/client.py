"""A raw-frame ringmux client: it sends whatever a case tells it (well-formed or not) and
reads what the server answers, with bounded waits on events (a frame, the close), never
a fixed sleep.

A Client plays the dialing side of one TCP connection. Left alone it behaves: it answers
PINGs, returns credit for the DATA it receives, acknowledges what it received (SPEC §8.1),
and tracks the credit the server granted it, so that send_data() never oversteps it.
Each of these can be turned off by a case that wants to misbehave."""
import collections
import select
import socket
import struct
import time

from . import frames as F

# How long an expected reaction may take. The server answers within microseconds on an
# idle machine; 5 s leaves room for a loaded CI machine and still ends a hung case.
REACTION_TIMEOUT_S = 5.0
# How long a blocked send may wait for the server to read before the case fails.
SEND_TIMEOUT_S = 10.0
# Frames the server may send at any time on a live connection, unrelated to the reaction
# a case waits for: link frames and flow control.
BENIGN_KINDS = frozenset({F.ACK, F.CREDIT, F.PING, F.PONG})
# Frames kept for later waits (RESET, ERROR, ...), beyond which the oldest are dropped.
UNCLAIMED_FRAMES_MAX = 4096
# Bytes read or written per socket call.
IO_BYTES_MAX = 1 << 20
# A well-behaved client acknowledges every this many position-space bytes: far below the
# server's replay bound (16 MiB), so its sender is never held back waiting for our ACK.
ACK_INTERVAL_BYTES = 256 * 1024

# Preamble of a unary request or a stream's OPEN (tools/loadgen/protocol.h): u32 size, u32 flags.
HANDLER_UNARY, HANDLER_SINK, HANDLER_SOURCE, HANDLER_ECHO = 1, 2, 3, 4
RESPONSE_FILL = 0x5A  # the byte ringmux-serve's unary handler answers with


def preamble(size, flags=0):
    return struct.pack("<II", size, flags)


class CaseFailure(Exception):
    """The server's reaction is not the expected one; the message says how."""


class Closed(Exception):
    """The server closed the connection (EOF or reset)."""


class Client:
    def __init__(self, port, session_id, rcvbuf=None, auto_pong=True, auto_ack=True, auto_credit=True,
                 connect_timeout_s=REACTION_TIMEOUT_S):
        self.port = port
        self.session_id = session_id
        self.generation = 1
        self.auto_pong, self.auto_ack, self.auto_credit = auto_pong, auto_ack, auto_credit
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: sets the window
        sock.settimeout(connect_timeout_s)
        sock.connect(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.sock = sock
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)
        self.decoder = F.Decoder()
        self.closed = None  # how the server closed: "eof" or "reset"
        self.send_failed = False  # a send found the connection closed
        self.unclaimed = collections.deque(maxlen=UNCLAIMED_FRAMES_MAX)
        self.kind_counts = collections.Counter()
        # Positions (SPEC §8): position-space bytes received, sent and acknowledged.
        self.received_position = 0
        self.sent_position = 0
        self.acked_position = 0
        self.hello_ack = None
        self.next_stream_id = 1
        # Flow control. What the server may send us (our receive windows, as announced in
        # HELLO, else the defaults) and what we may send it (its windows and CREDITs).
        self.recv_stream_window = F.STREAM_WINDOW_DEFAULT
        self.recv_connection_window = F.CONNECTION_WINDOW_DEFAULT
        self.send_stream_window = F.STREAM_WINDOW_DEFAULT
        self.send_credit = {}  # stream id -> bytes we may still send
        self.send_connection_credit = F.CONNECTION_WINDOW_DEFAULT
        self.unreturned = collections.Counter()  # stream id (0: connection) -> consumed, not credited
        self.data_bytes = collections.Counter()  # stream id -> DATA payload bytes received
        self.ended = set()  # streams the server ended (END_STREAM / END)

    # ---- sending -----------------------------------------------------------------------

    def send_raw(self, data, read_while_blocked=True, timeout_s=SEND_TIMEOUT_S):
        """Writes `data` whole. Returns False when the server closed meanwhile. While the
        socket is full, arriving bytes are read into the decoder (not handled: a frame of
        ours may be half written), so that neither side blocks on the other."""
        if self.send_failed:
            return False
        view = memoryview(bytes(data))
        try:
            view = view[self.sock.send(view[:IO_BYTES_MAX]):]  # usually all of it: no poll
        except BlockingIOError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            self.send_failed = True
            return False
        deadline = time.monotonic() + timeout_s
        events = select.POLLOUT | (select.POLLIN if read_while_blocked else 0)
        poller = select.poll()
        poller.register(self.sock, events)
        while view:  # the socket is full: wait until it takes more
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CaseFailure(f"a send stayed blocked for {timeout_s:.0f} s: the server stopped reading")
            ready = poller.poll(remaining * 1000)
            if not ready:
                continue
            revents = ready[0][1]
            if revents & select.POLLIN and self.closed is None:
                try:
                    self._read_some()
                except Closed:
                    return False
            if revents & (select.POLLOUT | select.POLLERR | select.POLLHUP):
                try:
                    sent = self.sock.send(view[:IO_BYTES_MAX])
                except BlockingIOError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    # The server closed; what it sent before is still to be read.
                    self.send_failed = True
                    return False
                view = view[sent:]
        return True

    def send(self, *frame_bytes):
        """Sends well-formed frames, counting their positions. Returns False when closed."""
        for f in frame_bytes:
            offset = 0
            while offset < len(f):
                length, kind = struct.unpack_from("<IB", f, offset)
                if kind in F.POSITION_KINDS:
                    self.sent_position += F.HEADER_BYTES + length
                offset += F.HEADER_BYTES + length
        return self.send_raw(b"".join(frame_bytes))

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # ---- receiving ---------------------------------------------------------------------

    def _read_some(self):
        """Reads what the socket has into the decoder; raises Closed at EOF or reset."""
        try:
            chunk = self.sock.recv(IO_BYTES_MAX)
        except BlockingIOError:
            return
        except ConnectionResetError:
            self.closed = "reset"
            raise Closed("reset") from None
        if not chunk:
            self.closed = "eof"
            raise Closed("eof")
        self.decoder.feed(chunk)

    def recv_frame(self, timeout_s):
        """The next frame (handled: positions, credit, PONG, ACK), or None on timeout.
        Raises Closed once the server closed and every frame before the close was read."""
        deadline = time.monotonic() + timeout_s
        while True:
            f = self.decoder.next()
            if f is not None:
                self._handle(f)
                return f
            if self.closed is not None:
                raise Closed(self.closed)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if self.poller.poll(remaining * 1000):
                try:
                    self._read_some()
                except Closed:
                    continue  # frames decoded before the close come first

    def _handle(self, f):
        self.kind_counts[f.kind] += 1
        if f.kind in F.POSITION_KINDS:
            self.received_position += f.bytes_on_wire()
        if f.kind == F.PING and self.auto_pong and self.closed is None:
            self.send_raw(F.pong(f.u64()))
        elif f.kind == F.CREDIT:
            if f.stream_id == 0:
                self.send_connection_credit += f.u32()
            elif f.stream_id in self.send_credit:
                self.send_credit[f.stream_id] += f.u32()
        elif f.kind == F.HELLO_ACK and self.hello_ack is None:
            self.hello_ack = F.parse_hello_ack(f)
            if self.hello_ack["stream_window"] is not None:
                self.send_stream_window = self.hello_ack["stream_window"]
                self.send_connection_credit = self.hello_ack["connection_window"]
        if f.kind in (F.DATA, F.OPEN) and f.end_stream or f.kind == F.END:
            self.ended.add(f.stream_id)
        if f.kind == F.DATA:
            self.data_bytes[f.stream_id] += len(f.payload)
            self._consumed(f.stream_id, len(f.payload))
        if self.auto_ack and self.received_position - self.acked_position >= ACK_INTERVAL_BYTES and self.closed is None:
            self.acknowledge()

    def _consumed(self, stream_id, size):
        """Credit goes back once a quarter window was consumed (as mux/session/flow.h does); a
        stream the server has ended gets none (it will send no more on it)."""
        if not self.auto_credit or self.closed is not None:
            return
        windows = [(0, self.recv_connection_window)]
        if stream_id not in self.ended:
            windows.append((stream_id, self.recv_stream_window))
        out = []
        for sid, window in windows:
            self.unreturned[sid] += size
            if self.unreturned[sid] >= window // 4:
                out.append(F.credit(sid, self.unreturned[sid]))
                self.unreturned[sid] = 0
        if out:
            self.send(*out)

    def acknowledge(self):
        self.acked_position = self.received_position
        self.send_raw(F.ack(self.received_position))

    # ---- waiting for reactions ---------------------------------------------------------

    def next_frame(self, deadline, what, waited_s):
        """The next frame before `deadline` (time.monotonic()); the close or the deadline
        fails the case, saying it happened while waiting `waited_s` in all for `what`."""
        try:
            f = self.recv_frame(max(deadline - time.monotonic(), 0))
        except Closed as closed:
            raise CaseFailure(f"connection closed ({closed}) while waiting for {what}") from None
        if f is None:
            raise CaseFailure(f"no {what} within {waited_s:.1f} s")
        return f

    def wait_for(self, matches, what, timeout_s=REACTION_TIMEOUT_S, allowed=None):
        """The first frame for which matches(frame) holds (frames that arrived during an
        earlier wait first). `allowed`: kinds that may arrive meanwhile (None: any);
        another kind fails the case, as do the close and the timeout."""
        for f in list(self.unclaimed):
            if matches(f):
                self.unclaimed.remove(f)
                return f
        deadline = time.monotonic() + timeout_s
        while True:
            f = self.next_frame(deadline, what, timeout_s)
            if matches(f):
                return f
            if allowed is not None and f.kind not in allowed:
                raise CaseFailure(f"{f!r} while waiting for {what}")
            if f.kind not in BENIGN_KINDS and f.kind != F.DATA:
                self.unclaimed.append(f)

    def wait_until(self, condition, what, timeout_s=REACTION_TIMEOUT_S):
        """Reads frames until condition() holds (it may hold already); the frames are
        handled, and kept as wait_for keeps them."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            f = self.next_frame(deadline, what, timeout_s)
            if f.kind not in BENIGN_KINDS and f.kind != F.DATA:
                self.unclaimed.append(f)

    def wait_ended(self, stream_id, what, timeout_s=REACTION_TIMEOUT_S):
        """Waits until the server ended its side of `stream_id` (END_STREAM or END); a
        RESET or ERROR on the stream fails the case."""
        def reset(f):
            return f.stream_id == stream_id and f.kind in (F.RESET, F.ERROR)
        self.wait_until(lambda: stream_id in self.ended or any(reset(f) for f in self.unclaimed), what, timeout_s)
        if stream_id not in self.ended:
            raise CaseFailure(f"{next(f for f in self.unclaimed if reset(f))!r} while waiting for {what}")

    def expect_close(self, what="the close", timeout_s=REACTION_TIMEOUT_S, allowed=BENIGN_KINDS, frame_ok=None):
        """Reads until the server closes. A frame of a kind not in `allowed` fails the case
        unless frame_ok(frame) accepts it. Returns the frames read meanwhile."""
        seen = []
        deadline = time.monotonic() + timeout_s
        for f in list(self.unclaimed):
            if f.kind not in allowed and not (frame_ok and frame_ok(f)):
                raise CaseFailure(f"{f!r} before {what}")
        while True:
            remaining = deadline - time.monotonic()
            try:
                f = self.recv_frame(max(remaining, 0))
            except Closed:
                return seen
            if f is None:
                raise CaseFailure(f"connection still open {timeout_s:.1f} s after {what} was due")
            if f.kind not in allowed and not (frame_ok and frame_ok(f)):
                raise CaseFailure(f"{f!r} before {what} (expected no such frame)")
            seen.append(f)

    def expect_connection_error(self, status, text_prefix=None, text_contains=None, allowed=BENIGN_KINDS,
                                timeout_s=REACTION_TIMEOUT_S):
        """ERROR on stream 0 with `status` (its text as asked), then the close."""
        what = f"ERROR(0, status {status})"
        try:
            f = self.wait_for(lambda f: f.kind == F.ERROR and f.stream_id == 0, what, timeout_s, allowed)
        except CaseFailure as failure:
            if self.closed is not None:
                raise CaseFailure(f"closed without an ERROR frame (expected {what})") from None
            raise failure
        if f.status() != status:
            raise CaseFailure(f"{f!r}: expected status {status}")
        text = f.text()
        if text_prefix is not None and not text.startswith(text_prefix):
            raise CaseFailure(f"{f!r}: message should start with {text_prefix!r}")
        if text_contains is not None and not any(word.lower() in text.lower() for word in text_contains):
            raise CaseFailure(f"{f!r}: message should name one of {text_contains}")
        self.expect_close("the close after ERROR", allowed=allowed | {F.ERROR, F.DATA, F.RESET})
        return f

    def expect_stream_end(self, stream_id, status, what=None, timeout_s=REACTION_TIMEOUT_S, allowed=None):
        """RESET or stream-scoped ERROR on `stream_id` carrying `status`."""
        what = what or f"RESET/ERROR(stream {stream_id}, status {status})"
        f = self.wait_for(lambda f: f.kind in (F.RESET, F.ERROR) and f.stream_id == stream_id, what, timeout_s,
                          allowed)
        if f.status() != status:
            raise CaseFailure(f"{f!r}: expected status {status}")
        return f

    # ---- the handshake and streams -----------------------------------------------------

    def send_hello(self, **fields):
        windows = fields.get("windows")
        if windows is not None:
            self.recv_stream_window, self.recv_connection_window = windows
        fields.setdefault("generation", self.generation)
        return self.send(F.hello(self.session_id, **fields))

    def read_hello_ack(self, timeout_s=REACTION_TIMEOUT_S):
        """The HELLO_ACK (any status), the first frame the acceptor sends."""
        f = self.next_frame(time.monotonic() + timeout_s, "the HELLO_ACK", timeout_s)
        if f.kind != F.HELLO_ACK:
            raise CaseFailure(f"first frame from the server is {f!r}, not HELLO_ACK")
        return self.hello_ack

    def handshake(self, **fields):
        """HELLO, then the accepting HELLO_ACK."""
        self.send_hello(**fields)
        ack = self.read_hello_ack()
        if ack["status"] != F.OK:
            raise CaseFailure(f"handshake refused with status {ack['status']}")
        return ack

    def new_stream_id(self):
        stream_id = self.next_stream_id
        self.next_stream_id += 2
        return stream_id

    def open(self, handler_id, payload=b"", deadline_budget_ns=0, end_stream=False, stream_id=None):
        stream_id = self.new_stream_id() if stream_id is None else stream_id
        self.send_credit[stream_id] = self.send_stream_window - len(payload)
        self.send_connection_credit -= len(payload)
        self.send(F.open_frame(stream_id, handler_id, payload, deadline_budget_ns, end_stream))
        return stream_id

    def send_data(self, stream_id, total_bytes, chunk_bytes=256 * 1024, end_stream=False, stop=None,
                  timeout_s=REACTION_TIMEOUT_S):
        """Sends `total_bytes` (> 0) of DATA under the credit the server granted, reading
        its frames meanwhile. Returns (bytes sent, frame): the frame is the first one for
        which stop(frame) held (the sending ends there), else None."""
        sent = 0
        block = bytes(chunk_bytes)
        while sent < total_bytes:
            room = min(self.send_credit.get(stream_id, 0), self.send_connection_credit, total_bytes - sent, chunk_bytes)
            if room > 0:
                last = sent + room == total_bytes
                self.send(F.data(stream_id, block[:room], end_stream and last))
                self.send_credit[stream_id] -= room
                self.send_connection_credit -= room
                sent += room
            # What the server sent meanwhile (without waiting while there is credit left):
            # credit, or the reaction a case waits for.
            while True:
                try:
                    f = self.recv_frame(0 if room > 0 else timeout_s)
                except Closed as closed:
                    raise CaseFailure(f"connection closed ({closed}) after {sent} bytes of DATA") from None
                if f is None:
                    if room == 0:
                        raise CaseFailure(f"no credit for {timeout_s:.1f} s after {sent} of {total_bytes} bytes")
                    break
                if stop is not None and stop(f):
                    return sent, f
                if f.kind not in BENIGN_KINDS and f.kind != F.DATA:
                    self.unclaimed.append(f)
                if room == 0 and f.kind == F.CREDIT:
                    break
        return sent, None

    def call_unary(self, response_bytes=64, body=b"", deadline_budget_ns=0, timeout_s=REACTION_TIMEOUT_S):
        """A unary call to ringmux-serve's echo handler; returns the response size, after
        checking its bytes (the server answers response_bytes of RESPONSE_FILL)."""
        stream_id = self.open(HANDLER_UNARY, preamble(response_bytes) + body, deadline_budget_ns, end_stream=True)
        return self.read_response(stream_id, response_bytes, timeout_s)

    def read_response(self, stream_id, response_bytes, timeout_s=REACTION_TIMEOUT_S):
        for f in self.unclaimed:
            if f.stream_id == stream_id and f.kind in (F.RESET, F.ERROR):
                raise CaseFailure(f"unary call failed: {f!r}")
        fill_ok = True
        deadline = time.monotonic() + timeout_s
        while stream_id not in self.ended:
            f = self.next_frame(deadline, f"the response of the unary call on stream {stream_id}", timeout_s)
            if f.stream_id == stream_id and f.kind in (F.RESET, F.ERROR):
                raise CaseFailure(f"unary call failed: {f!r}")
            if f.stream_id == stream_id and f.kind == F.DATA:
                fill_ok &= f.payload.count(RESPONSE_FILL) == len(f.payload)
            elif f.kind not in BENIGN_KINDS and f.kind != F.DATA:
                self.unclaimed.append(f)
        if self.data_bytes[stream_id] != response_bytes or not fill_ok:
            raise CaseFailure(f"unary call: {self.data_bytes[stream_id]} bytes back (intact: {fill_ok}), "
                              f"expected {response_bytes}")
        return response_bytes

    def describe_received(self):
        return ", ".join(f"{F.kind_name(k)} x{n}" for k, n in sorted(self.kind_counts.items())) or "nothing"
