// Session: two sans-I/O sessions wired back to back in memory. Scripts every stream
// transition end to end, flow control and its violations, STOP, refusal, GOAWAY, floods,
// and the writer's batching, asserting the scope and code of every error.
#include "mux/session.h"

#include <doctest/doctest.h>

#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "wire/codec.h"

using namespace ringmux;
using namespace ringmux::mux;
using wire::StatusCode;

namespace {

using Bytes = std::vector<std::byte>;
using ringmux::ByteVector;

Bytes bytes_of(std::string_view text) {
  Bytes out(text.size());
  std::memcpy(out.data(), text.data(), text.size());
  return out;
}

// Records every event of one session; can auto-consume what it receives.
struct Recorder final : SessionHandler {
  Session* session = nullptr;
  bool auto_consume = true;
  struct StreamLog {
    uint32_t handler_id = 0;
    Bytes received;
    bool remote_ended = false;
    bool closed = false;
    std::optional<MuxError> reset;
    bool stopped = false;
    int writable = 0;
    std::string message;
  };
  std::map<StreamId, StreamLog> streams;
  std::vector<uint64_t> pongs;
  std::optional<uint32_t> goaway_last;

  void on_stream_opened(StreamId id, uint32_t handler_id, uint64_t, std::span<const std::byte> payload,
                        bool end_stream) noexcept override {
    auto& log = streams[id];
    log.handler_id = handler_id;
    log.received.insert(log.received.end(), payload.begin(), payload.end());
    log.remote_ended = end_stream;
    if (auto_consume) session->consume(id, payload.size(), 0);
  }
  void on_stream_data(StreamId id, std::span<const std::byte> payload, bool end_stream) noexcept override {
    auto& log = streams[id];
    log.received.insert(log.received.end(), payload.begin(), payload.end());
    log.remote_ended |= end_stream;
    if (auto_consume) session->consume(id, payload.size(), 0);
  }
  void on_stream_reset(StreamId id, MuxError error, std::string_view message) noexcept override {
    streams[id].reset = error;
    streams[id].message = std::string(message);
  }
  void on_stream_closed(StreamId id) noexcept override { streams[id].closed = true; }
  void on_stream_writable(StreamId id) noexcept override { streams[id].writable++; }
  void on_stream_stopped(StreamId id) noexcept override { streams[id].stopped = true; }
  void on_goaway(uint32_t last_stream_id, StatusCode) noexcept override { goaway_last = last_stream_id; }
  void on_pong(uint64_t opaque) noexcept override { pongs.push_back(opaque); }
};

// A dialer and an acceptor joined by an in-memory "socket".
struct Pair {
  explicit Pair(SessionOptions client_options = {}, SessionOptions server_options = {})
      : client(client_log, with_role(client_options, true)), server(server_log, with_role(server_options, false)) {
    client_log.session = &client;
    server_log.session = &server;
  }
  static SessionOptions with_role(SessionOptions options, bool dialer) {
    options.dialer = dialer;
    return options;
  }
  // Moves batches both ways until neither side has output (bounded).
  void pump() {
    for (int round = 0; round < 1000; round++) {
      const bool moved = move(client, server) | move(server, client);
      if (!moved) return;
    }
    FAIL("sessions kept talking for 1000 rounds");
  }
  static bool move(Session& from, Session& to) {
    if (!from.has_output()) return false;
    ByteVector control, data;
    from.take_batch(control, data);
    if (!to.failed()) {
      (void)to.receive(control, 0);
      (void)to.receive(data, 0);
    }
    return true;
  }
  Recorder client_log;
  Recorder server_log;
  Session client;
  Session server;
};

// Encodes one raw frame for injection.
template <typename Encode>
Bytes raw(Encode encode) {
  Bytes out(2048);
  out.resize(encode(std::span<std::byte>(out)));
  return out;
}

}  // namespace

// Proves a unary-shaped exchange: OPEN with END_STREAM, one response with END_STREAM,
// both sides see the stream close cleanly and forget it.
TEST_CASE("session: unary call shape closes cleanly on both sides") {
  Pair pair;
  const Bytes request = bytes_of("read block 7");
  auto id = pair.client.open(42, 1'000'000, request, true);
  REQUIRE(id.ok());
  CHECK(id.value() == 1);  // the dialer opens odd ids
  pair.pump();
  auto& served = pair.server_log.streams[1];
  CHECK(served.handler_id == 42);
  CHECK(served.received == request);
  CHECK(served.remote_ended);
  const Bytes response = bytes_of("block 7 contents");
  CHECK(pair.server.write(1, response, true).value() == response.size());
  pair.pump();
  CHECK(pair.client_log.streams[1].received == response);
  CHECK(pair.client_log.streams[1].closed);
  CHECK(pair.server_log.streams[1].closed);
  CHECK(pair.client.streams_open() == 0);
  CHECK(pair.server.streams_open() == 0);
}

// Proves that small OPENs, which ride ahead of data, never overtake a large OPEN of the
// same batch: stream ids reach the peer in increasing order (found by loadgen's bssplit,
// where the peer failed the connection on the "reused" smaller id).
TEST_CASE("session: a small OPEN queued after a large one does not overtake it") {
  Pair pair;
  const Bytes large(limits::open_priority_bytes_max + 1, std::byte{7});
  const Bytes small = bytes_of("small");
  auto first = pair.client.open(1, 0, large, true);
  auto second = pair.client.open(1, 0, small, true);
  auto third = pair.client.open(1, 0, small, true);
  REQUIRE(first.ok());
  REQUIRE(second.ok());
  REQUIRE(third.ok());
  pair.pump();
  CHECK_FALSE(pair.server.failed());
  CHECK(pair.server_log.streams[first.value()].received == large);
  CHECK(pair.server_log.streams[second.value()].received == small);
  CHECK(pair.server_log.streams[third.value()].received == small);
  // The next batch starts afresh: a small OPEN rides ahead again.
  auto fourth = pair.client.open(1, 0, small, true);
  REQUIRE(fourth.ok());
  pair.pump();
  CHECK_FALSE(pair.server.failed());
  CHECK(pair.server_log.streams[fourth.value()].received == small);
}

// Proves both sides can open streams (odd and even ids) and that half-close keeps the
// other direction working.
TEST_CASE("session: both sides open streams; half-close keeps the other direction") {
  Pair pair;
  auto from_client = pair.client.open(1, 0, {}, false);
  auto from_server = pair.server.open(2, 0, {}, false);
  REQUIRE(from_client.ok());
  REQUIRE(from_server.ok());
  CHECK(from_server.value() == 2);
  pair.pump();
  CHECK(pair.server_log.streams.count(1) == 1);
  CHECK(pair.client_log.streams.count(2) == 1);
  REQUIRE(pair.client.end(1).ok());
  pair.pump();
  CHECK(pair.server_log.streams[1].remote_ended);
  CHECK(pair.server.write(1, bytes_of("still talking"), false).value() == 13);
  pair.pump();
  CHECK(pair.client_log.streams[1].received == bytes_of("still talking"));
  CHECK(pair.client.write(1, bytes_of("x"), false).error() == MuxError::stream_closed);
  REQUIRE(pair.server.end(1).ok());
  pair.pump();
  CHECK(pair.client_log.streams[1].closed);
}

// Proves the sender stops at the stream window, is told when credit returns, and that
// the receiver never holds more than its window.
TEST_CASE("session: flow control bounds what a slow reader holds") {
  SessionOptions options;
  options.stream_window_bytes = 64 * 1024;
  options.stream_window_bytes_max = 64 * 1024;
  Pair pair(options, options);
  pair.server_log.auto_consume = false;
  auto id = pair.client.open(1, 0, {}, false);
  REQUIRE(id.ok());
  const Bytes big(1 << 20, std::byte{9});
  std::size_t written = 0;
  for (int i = 0; i < 10; i++) {
    written += pair.client.write(1, std::span<const std::byte>(big).subspan(written), false).value();
    pair.pump();
  }
  CHECK(written == 64 * 1024);
  CHECK(pair.server.stream_buffered(1) == 64 * 1024);
  CHECK(pair.client_log.streams[1].writable == 0);
  // The reader consumes half: credit goes back and the writer hears of it.
  pair.server.consume(1, 32 * 1024, 0);
  pair.pump();
  CHECK(pair.client_log.streams[1].writable == 1);
  written += pair.client.write(1, std::span<const std::byte>(big).subspan(written), false).value();
  CHECK(written == 96 * 1024);
  pair.pump();
  CHECK(pair.server.stream_buffered(1) == 64 * 1024);
}

// Proves the yamux half-close stall cannot happen: the reader reads 5 of 10 messages then
// sends STOP; the writer's next write fails with stream_stopped instead of waiting.
TEST_CASE("session: STOP fails the writer's next write promptly") {
  Pair pair;
  auto id = pair.client.open(1, 0, {}, false);
  REQUIRE(id.ok());
  const Bytes message(1000, std::byte{1});
  for (int i = 0; i < 10; i++) REQUIRE(pair.client.write(1, message, false).value() == 1000);
  pair.pump();
  CHECK(pair.server_log.streams[1].received.size() == 10000);
  pair.server.stop(1);
  pair.pump();
  CHECK(pair.client_log.streams[1].stopped);
  auto next = pair.client.write(1, message, false);
  REQUIRE(!next.ok());
  CHECK(next.error() == MuxError::stream_stopped);
  CHECK(scope_of(next.error()) == Scope::stream);
  // The server's own direction still works after it stopped reading.
  CHECK(pair.server.write(1, message, true).value() == 1000);
  pair.pump();
  CHECK(pair.client_log.streams[1].received.size() == 1000);
}

// Proves a reset reaches the peer with its reason, and that data in flight to the
// resetting side is discarded and its connection credit returned.
TEST_CASE("session: reset carries its reason; discarded data is credited") {
  SessionOptions options;
  options.connection_window_bytes = 256 * 1024;
  Pair pair(options, options);
  auto id = pair.client.open(1, 0, {}, false);
  REQUIRE(id.ok());
  pair.pump();
  REQUIRE(pair.server.write(1, Bytes(100 * 1024, std::byte{3}), false).value() > 0);
  pair.client.reset(1, MuxError::cancelled);  // crosses the server's data
  CHECK(pair.client_log.streams[1].reset == MuxError::cancelled);
  pair.pump();
  CHECK(pair.server_log.streams[1].reset == MuxError::cancelled);
  CHECK(pair.client.stats().bytes_discarded > 0);
  CHECK(pair.client.connection_buffered() == 0);
  // The connection window is whole again: a new stream can send a full window.
  auto again = pair.server.open(1, 0, {}, false);
  REQUIRE(again.ok());
  CHECK(pair.server.write(again.value(), Bytes(200 * 1024, std::byte{4}), false).value() > 0);
}

// Proves OPENs beyond the concurrency limit are refused with a retryable code, the rest
// go on, and a retry after a stream finished succeeds.
TEST_CASE("session: streams beyond the limit are refused, retry succeeds") {
  SessionOptions server_options;
  server_options.streams_concurrent_max = 2;
  Pair pair({}, server_options);
  for (int i = 0; i < 3; i++) REQUIRE(pair.client.open(1, 0, bytes_of("hi"), false).ok());
  pair.pump();
  CHECK(pair.server.streams_open() == 2);
  CHECK(pair.client_log.streams[5].reset == MuxError::refused);
  CHECK(pair.server.stats().streams_refused == 1);
  REQUIRE(pair.server.write(1, {}, true).ok());
  REQUIRE(pair.client.end(1).ok());
  pair.pump();
  CHECK(pair.server.streams_open() == 1);
  auto retry = pair.client.open(1, 0, bytes_of("hi"), false);
  REQUIRE(retry.ok());
  pair.pump();
  CHECK(!pair.client_log.streams[retry.value()].reset.has_value());
  CHECK(pair.server.streams_open() == 2);
}

// Proves GOAWAY drains: streams up to the last id go on, later ones are refused, and no
// new stream can be opened toward a peer going away.
TEST_CASE("session: goaway drains") {
  Pair pair;
  REQUIRE(pair.client.open(1, 0, {}, false).ok());
  pair.pump();
  pair.server.goaway(StatusCode::going_away);
  REQUIRE(pair.client.open(1, 0, {}, false).ok());  // crosses the GOAWAY
  pair.pump();
  CHECK(pair.client_log.goaway_last == 1u);
  CHECK(pair.client_log.streams[3].reset == MuxError::refused);
  CHECK(pair.client.open(1, 0, {}, false).error() == MuxError::refused);
  CHECK(pair.server.write(1, bytes_of("last words"), true).ok());
  pair.pump();
  CHECK(pair.client_log.streams[1].received == bytes_of("last words"));
}

// Proves PING is answered with the same bytes.
TEST_CASE("session: ping and pong") {
  Pair pair;
  pair.client.ping(0xabcdef);
  pair.pump();
  CHECK(pair.client_log.pongs == std::vector<uint64_t>{0xabcdef});
}

// Proves each protocol violation fails the whole session with a connection-scoped error
// and ends every stream with it.
TEST_CASE("session: protocol violations are connection-scoped and end every stream") {
  Pair pair;
  REQUIRE(pair.client.open(1, 0, {}, false).ok());
  pair.pump();
  SUBCASE("DATA on a stream that never existed") {
    const Bytes frame = raw([](auto out) { return wire::encode_frame(out, wire::FrameKind::data, 0, 99, {}); });
    auto r = pair.server.receive(frame, 0);
    REQUIRE(!r.ok());
    CHECK(r.error() == MuxError::protocol_violation);
  }
  SUBCASE("OPEN with the wrong parity") {
    const Bytes frame = raw([](auto out) { return wire::encode_open(out, 2, 0, 1, 0, {}); });
    CHECK(pair.server.receive(frame, 0).error() == MuxError::protocol_violation);
  }
  SUBCASE("OPEN reusing an id") {
    const Bytes frame = raw([](auto out) { return wire::encode_open(out, 1, 0, 1, 0, {}); });
    CHECK(pair.server.receive(frame, 0).error() == MuxError::protocol_violation);
  }
  SUBCASE("a corrupt frame") {
    Bytes frame = raw([](auto out) { return wire::encode_ping(out, 1); });
    frame[20] ^= std::byte{1};
    CHECK(pair.server.receive(frame, 0).error() == MuxError::protocol_violation);
  }
  SUBCASE("DATA beyond the stream window") {
    const Bytes frame = raw([](auto out) {
      return wire::encode_frame(out, wire::FrameKind::data, 0, 1, Bytes(1, std::byte{0}));
    });
    Bytes big(limits::stream_window_bytes_initial + 1);
    Bytes encoded(wire::frame_bytes(big.size()));
    wire::encode_frame(encoded, wire::FrameKind::data, 0, 1, big);
    CHECK(pair.server.receive(encoded, 0).error() == MuxError::flow_control);
    (void)frame;
  }
  CHECK(pair.server.failed());
  CHECK(scope_of(pair.server.failure()) == Scope::connection);
  CHECK(pair.server_log.streams[1].reset == pair.server.failure());
  CHECK(pair.server.streams_open() == 0);
  CHECK(pair.server.open(1, 0, {}, false).error() == MuxError::stream_closed);
}

// Proves a PING flood beyond the control-queue limit fails the session instead of
// buffering answers without bound.
TEST_CASE("session: a ping flood is cut off at the control-queue limit") {
  SessionOptions options;
  options.control_frames_queued_max = 16;
  Pair pair({}, options);
  Bytes flood;
  for (int i = 0; i < 17; i++) {
    const Bytes ping = raw([i](auto out) { return wire::encode_ping(out, static_cast<uint64_t>(i)); });
    flood.insert(flood.end(), ping.begin(), ping.end());
  }
  auto r = pair.server.receive(flood, 0);
  REQUIRE(!r.ok());
  CHECK(r.error() == MuxError::flood);
  CHECK(scope_of(r.error()) == Scope::connection);
}

// Proves the rapid-reset limit: more RESETs per second than allowed fail the session.
TEST_CASE("session: rapid open/reset beyond the rate limit fails the session") {
  SessionOptions options;
  options.peer_resets_per_second_max = 50;
  Pair pair({}, options);
  MuxError failure = MuxError::none;
  for (int i = 0; i < 100 && failure == MuxError::none; i++) {
    auto id = pair.client.open(1, 0, {}, false);
    REQUIRE(id.ok());
    pair.client.reset(id.value(), MuxError::cancelled);
    pair.pump();
    failure = pair.server.failure();
  }
  CHECK(failure == MuxError::flood);
  CHECK(pair.server.stats().streams_opened_remote <= 51);
}

// Proves the writer interleaves streams: a stream writing alone may fill the batch (up to
// its credit), but once another stream writes, each gets its per-batch quota, so neither
// starves the other.
TEST_CASE("session: the writer serves streams in turns within a batch") {
  Pair pair;
  auto a = pair.client.open(1, 0, {}, false);
  auto b = pair.client.open(1, 0, {}, false);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  const Bytes big(1 << 20, std::byte{5});
  const std::size_t first_a = pair.client.write(a.value(), big, false).value();
  const std::size_t first_b = pair.client.write(b.value(), big, false).value();
  CHECK(first_a == std::min(limits::stream_window_bytes_initial, limits::send_batch_bytes_target));  // alone so far
  CHECK(first_b == limits::stream_batch_bytes_max);
  CHECK(pair.client.write(a.value(), big, false).value() == 0);  // its turn is over for this batch
  pair.pump();
  CHECK(pair.client_log.streams[a.value()].writable == 1);
  CHECK(pair.client_log.streams[b.value()].writable == 1);
  CHECK(pair.server_log.streams[a.value()].received.size() == first_a);
  CHECK(pair.server_log.streams[b.value()].received.size() == first_b);
}
