// Session: two sans-I/O sessions wired back to back in memory. Scripts every stream
// transition end to end, flow control and its violations, STOP, refusal, GOAWAY, floods,
// and the writer's batching, asserting the scope and code of every error.
#include "ringmux/mux/session/session.h"

#include <doctest/doctest.h>

#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "tests/mux/session/session_pair.h"
#include "tests/support.h"
#include "ringmux/wire/codec.h"

using namespace ringmux;
using namespace ringmux::mux;
using wire::StatusCode;
using namespace ringmux::mux::testing;

namespace {

// One decoded frame, with its payload copied out.
struct Seen {
  wire::FrameKind kind;
  uint32_t stream_id;
  Bytes payload;
  wire::Frame frame() const { return wire::Frame{wire::FrameHeader{static_cast<uint32_t>(payload.size()),
                                                                  static_cast<uint8_t>(kind), 0, stream_id, 0},
                                                payload}; }
};

// Decodes whole frames (a batch as it goes on the wire); fails the test on a wire error.
std::vector<Seen> frames_of(std::span<const std::byte> bytes) {
  std::vector<Seen> out;
  wire::Decoder decoder;
  while (!bytes.empty()) {
    auto step = decoder.next(bytes);
    REQUIRE(step.ok());
    bytes = bytes.subspan(step->consumed);
    if (!step->has_frame) continue;
    out.push_back({step->frame.header.frame_kind(), step->frame.header.stream_id,
                   Bytes(step->frame.payload.begin(), step->frame.payload.end())});
  }
  return out;
}

// Takes `session`'s output as one buffer: link frames, then held bytes, as the glue sends it.
Bytes take_wire(Session& session) {
  ByteVector link;
  replay::HeldSpans held;
  session.take_output(link, held);
  Bytes out(link.begin(), link.end());
  out.insert(out.end(), held.first.begin(), held.first.end());
  out.insert(out.end(), held.second.begin(), held.second.end());
  return out;
}

bool numbered_by_position(wire::FrameKind kind) {
  using wire::FrameKind;
  return kind != FrameKind::hello && kind != FrameKind::hello_ack && kind != FrameKind::ping &&
         kind != FrameKind::pong && kind != FrameKind::ack;
}

// Position-space bytes of `bytes`, counted from the decoded frames (SPEC §8), independent
// of the session's own accounting.
uint64_t position_bytes_of(std::span<const std::byte> bytes) {
  uint64_t total = 0;
  for (const Seen& frame : frames_of(bytes)) {
    if (numbered_by_position(frame.kind)) total += wire::frame_bytes(frame.payload.size());
  }
  return total;
}

wire::SessionId session_id_of(uint8_t seed) {
  wire::SessionId id{};
  for (std::size_t i = 0; i < id.size(); i++) id[i] = static_cast<std::byte>(seed + i * 7);
  return id;
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
  pair.pump();  // the handshake: until its HELLO_ACK the dialer assumes the minimum windows
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
  pair.pump();  // the handshake: a frame before it would be a violation, not a flood
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
  options.flood[FloodKind::resets] = 50;
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
  pair.pump();  // the handshake: the acceptor's windows are known
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

// ---- handshake and positions -----------------------------------------------------------

// Proves the handshake of SPEC §1: the dialer's first bytes are a HELLO for a new session
// (its id, generation 1, receive position 0, no RESUME), the acceptor has nothing to say
// before it, and answers with an accepting HELLO_ACK carrying the same id and generation.
TEST_CASE("session: the first bytes are HELLO and the acceptor answers HELLO_ACK with the same session id") {
  SessionOptions options;
  options.session_id = session_id_of(11);
  Pair pair(options, {});
  CHECK(pair.client.session_id() == options.session_id);
  CHECK(pair.client.generation() == 1);
  CHECK_FALSE(pair.client.handshake_complete());
  CHECK_FALSE(pair.server.handshake_complete());
  REQUIRE(pair.client.has_output());
  CHECK_FALSE(pair.server.has_output());

  const Bytes hello_bytes = take_wire(pair.client);
  const auto hello_frames = frames_of(hello_bytes);
  REQUIRE(hello_frames.size() == 1);
  REQUIRE(hello_frames[0].kind == wire::FrameKind::hello);
  auto hello = wire::parse_hello(hello_frames[0].frame());
  REQUIRE(hello.ok());
  CHECK(hello->session_id == options.session_id);
  CHECK(hello->generation == 1);
  CHECK(hello->receive_position == 0);
  CHECK((hello->hello_flags & wire::hello_flag_resume) == 0);

  REQUIRE(pair.server.receive(hello_bytes, 0).ok());
  CHECK(pair.server.handshake_complete());
  CHECK(pair.server.session_id() == options.session_id);
  CHECK(pair.server.generation() == 1);
  REQUIRE(pair.server.has_output());
  const Bytes ack_bytes = take_wire(pair.server);
  const auto ack_frames = frames_of(ack_bytes);
  REQUIRE(ack_frames.size() == 1);
  REQUIRE(ack_frames[0].kind == wire::FrameKind::hello_ack);
  auto ack = wire::parse_hello_ack(ack_frames[0].frame());
  REQUIRE(ack.ok());
  CHECK(ack->status == StatusCode::ok);
  CHECK(ack->session_id == options.session_id);
  CHECK(ack->generation == 1);
  CHECK(ack->receive_position == 0);

  REQUIRE(pair.client.receive(ack_bytes, 0).ok());
  CHECK(pair.client.handshake_complete());
  // Handshake frames are outside the position space.
  CHECK(pair.client.send_position() == 0);
  CHECK(pair.server.send_position() == 0);
  CHECK(pair.client.receive_position() == 0);
  CHECK(pair.server.receive_position() == 0);
}

// Proves that a frame other than HELLO (acceptor) or HELLO_ACK (dialer) before the
// handshake, or a second handshake frame after it, fails the session with a
// connection-scoped protocol violation.
TEST_CASE("session: frames before the handshake are refused as a protocol violation") {
  Pair pair;
  const Bytes open = raw([](auto out) { return wire::encode_open(out, 1, 0, 1, 0, {}); });
  const Bytes data = raw([](auto out) { return wire::encode_frame(out, wire::FrameKind::data, 0, 1, {}); });
  const Bytes ping = raw([](auto out) { return wire::encode_ping(out, 5); });
  SUBCASE("OPEN to the acceptor before HELLO") {
    CHECK(pair.server.receive(open, 0).error() == MuxError::protocol_violation);
    CHECK(pair.server.failed());
  }
  SUBCASE("PING to the acceptor before HELLO") {
    CHECK(pair.server.receive(ping, 0).error() == MuxError::protocol_violation);
  }
  SUBCASE("HELLO_ACK to the acceptor") {
    wire::HelloAck answer;
    answer.version = 1;
    const Bytes frame = raw([&](auto out) { return wire::encode_hello_ack(out, answer); });
    CHECK(pair.server.receive(frame, 0).error() == MuxError::protocol_violation);
  }
  SUBCASE("DATA to the dialer before HELLO_ACK") {
    CHECK(pair.client.receive(data, 0).error() == MuxError::protocol_violation);
    CHECK(pair.client.failed());
  }
  SUBCASE("HELLO to the dialer") {
    wire::Hello hello;
    hello.generation = 1;
    const Bytes frame = raw([&](auto out) { return wire::encode_hello(out, hello); });
    CHECK(pair.client.receive(frame, 0).error() == MuxError::protocol_violation);
  }
  SUBCASE("a second HELLO after the handshake") {
    pair.pump();
    REQUIRE(pair.server.handshake_complete());
    wire::Hello hello;
    hello.generation = 2;
    const Bytes frame = raw([&](auto out) { return wire::encode_hello(out, hello); });
    CHECK(pair.server.receive(frame, 0).error() == MuxError::protocol_violation);
  }
  const Session& failed = pair.server.failed() ? pair.server : pair.client;
  CHECK(failed.failed());
  CHECK(scope_of(failed.failure()) == Scope::connection);
}

// Proves that what the application queues before the handshake still works and goes out
// behind the handshake frame, in order: the dialer's OPENs and DATA follow its HELLO in the
// first batch; the acceptor, which may send nothing before the HELLO arrives, holds its
// OPEN, DATA and PING and sends them behind its HELLO_ACK.
TEST_CASE("session: frames queued before the handshake go out after it, in order") {
  Pair pair;
  // The acceptor's side first: it has not heard the HELLO yet.
  auto served = pair.server.open(9, 0, bytes_of("early"), false);
  REQUIRE(served.ok());
  CHECK(pair.server.write(served.value(), bytes_of(" and more"), true).value() == 9);
  pair.server.ping(77);
  CHECK_FALSE(pair.server.has_output());
  // The dialer's side: two streams opened before anything was sent.
  auto first = pair.client.open(1, 0, bytes_of("one"), false);
  auto second = pair.client.open(2, 0, bytes_of("two"), true);
  REQUIRE(first.ok());
  REQUIRE(second.ok());
  CHECK(pair.client.write(first.value(), bytes_of("-data"), true).value() == 5);

  const Bytes client_wire = take_wire(pair.client);
  const auto client_frames = frames_of(client_wire);
  REQUIRE(client_frames.size() == 4);
  CHECK(client_frames[0].kind == wire::FrameKind::hello);
  CHECK(client_frames[1].kind == wire::FrameKind::open);
  CHECK(client_frames[1].stream_id == first.value());
  CHECK(client_frames[2].kind == wire::FrameKind::open);
  CHECK(client_frames[2].stream_id == second.value());
  CHECK(client_frames[3].kind == wire::FrameKind::data);
  CHECK(client_frames[3].stream_id == first.value());

  // HELLO and the frames pipelined behind it arrive in one read.
  REQUIRE(pair.server.receive(client_wire, 0).ok());
  CHECK(pair.server_log.streams[first.value()].received == bytes_of("one-data"));
  CHECK(pair.server_log.streams[second.value()].received == bytes_of("two"));
  REQUIRE(pair.server.has_output());
  const Bytes server_wire = take_wire(pair.server);
  const auto server_frames = frames_of(server_wire);
  REQUIRE(server_frames.size() >= 4);
  CHECK(server_frames[0].kind == wire::FrameKind::hello_ack);
  // Then the link frames (the PING), then the queued frames in the order they were queued
  // (control ahead of data), with ACK / CREDIT for what was just received.
  std::vector<wire::FrameKind> queued;
  for (std::size_t i = 1; i < server_frames.size(); i++) {
    if (server_frames[i].kind != wire::FrameKind::ack && server_frames[i].kind != wire::FrameKind::credit) {
      queued.push_back(server_frames[i].kind);
    }
  }
  CHECK(queued == std::vector<wire::FrameKind>{wire::FrameKind::ping, wire::FrameKind::open, wire::FrameKind::data});
  REQUIRE(pair.client.receive(server_wire, 0).ok());
  pair.pump();
  CHECK(pair.client_log.streams[served.value()].received == bytes_of("early and more"));
  CHECK(pair.client_log.streams[served.value()].remote_ended);
  CHECK(pair.client_log.pongs.empty());
  CHECK(pair.server_log.pongs == std::vector<uint64_t>{77});
  CHECK_FALSE(pair.client.failed());
  CHECK_FALSE(pair.server.failed());
}

// Proves the position accounting of SPEC §8 on both sides: after a random exchange (streams
// opened by both sides, data of random sizes, ends, resets with and without messages,
// STOPs, PINGs, a GOAWAY, batches moved in random order and cut at random points) each side's send position equals the other's
// receive position, and both equal the position-space bytes counted independently from the
// frames that crossed; the peer's acknowledged position is the last ACK the other side sent.
TEST_CASE("session: positions on both sides agree after a random exchange") {
  const uint64_t seed = test::test_seed("session positions");
  std::mt19937_64 rng(seed);
  Pair pair;
  uint64_t wire_to_server = 0;  // position-space bytes that crossed, counted from the frames
  uint64_t wire_to_client = 0;
  auto move_counted = [&](Session& from, Session& to, uint64_t& counter) {
    if (!from.has_output()) return false;
    const Bytes bytes = take_wire(from);
    counter += position_bytes_of(bytes);
    // Split the bytes at a random point: positions do not depend on how reads fall.
    const std::size_t cut = bytes.empty() ? 0 : std::uniform_int_distribution<std::size_t>(0, bytes.size())(rng);
    REQUIRE(to.receive(std::span<const std::byte>(bytes).first(cut), 0).ok());
    REQUIRE(to.receive(std::span<const std::byte>(bytes).subspan(cut), 0).ok());
    return true;
  };
  const Bytes pool(200'000, std::byte{0x5a});
  std::vector<StreamId> ids;
  for (int op = 0; op < 3000; op++) {
    Session& side = rng() % 2 == 0 ? pair.client : pair.server;
    const auto pick = rng() % 100;
    if (pick < 10 || ids.empty()) {
      const std::size_t size = rng() % 3000;
      auto id = side.open(1, 0, std::span<const std::byte>(pool).first(size), rng() % 4 == 0);
      if (id.ok()) ids.push_back(id.value());
    } else if (pick < 60) {
      const std::size_t size = rng() % 100'000;
      (void)side.write(ids[rng() % ids.size()], std::span<const std::byte>(pool).first(size), rng() % 8 == 0);
    } else if (pick < 65) {
      (void)side.end(ids[rng() % ids.size()]);
    } else if (pick < 67) {
      side.reset(ids[rng() % ids.size()], MuxError::cancelled, rng() % 2 == 0 ? "" : "gave up");
    } else if (pick < 69) {
      side.stop(ids[rng() % ids.size()]);
    } else if (pick < 72) {
      side.ping(rng());
    } else if (pick < 86) {
      (void)move_counted(pair.client, pair.server, wire_to_server);
    } else {
      (void)move_counted(pair.server, pair.client, wire_to_client);
    }
    REQUIRE_FALSE(pair.client.failed());
    REQUIRE_FALSE(pair.server.failed());
  }
  pair.server.goaway(StatusCode::going_away);  // GOAWAY is in the position space too
  for (int round = 0; round < 1000; round++) {
    const bool moved = move_counted(pair.client, pair.server, wire_to_server) |
                       move_counted(pair.server, pair.client, wire_to_client);
    if (!moved) break;
  }
  REQUIRE_FALSE(pair.client.has_output());
  REQUIRE_FALSE(pair.server.has_output());
  CHECK(wire_to_server > 0);
  CHECK(wire_to_client > 0);
  CHECK(pair.client.send_position() == wire_to_server);
  CHECK(pair.server.receive_position() == wire_to_server);
  CHECK(pair.server.send_position() == wire_to_client);
  CHECK(pair.client.receive_position() == wire_to_client);
  // Every ACK sent was delivered: the receiver's last ACK is what the sender holds.
  CHECK(pair.client.peer_acked_position() == pair.server.acked_position());
  CHECK(pair.server.peer_acked_position() == pair.client.acked_position());
  CHECK(pair.client.peer_acked_position() <= pair.client.send_position());
  CHECK(pair.server.peer_acked_position() <= pair.server.send_position());
}

// Proves the ACK policy: no ACK goes out on its own below ack_interval_bytes; at the
// interval one ACK is queued on its own, carrying the receive position; an ACK rides along
// with any batch that goes out while bytes are unacknowledged; a batch never carries more
// than one ACK (a later position updates the queued one); the sender records the position.
TEST_CASE("session: ACKs are sent by the policy, one per batch at most") {
  SessionOptions options;
  options.stream_window_bytes = 8 * 1024 * 1024;
  options.stream_window_bytes_max = 8 * 1024 * 1024;
  Pair pair(options, options);
  pair.server_log.auto_consume = false;  // no CREDIT: the server's output is ACKs alone
  pair.pump();
  auto id = pair.client.open(1, 0, {}, false);
  REQUIRE(id.ok());
  const Bytes block(limits::send_batch_bytes_target, std::byte{1});
  // Bytes of the client's batches carrying at least `payload_bytes` of payload.
  auto client_wire = [&](std::size_t payload_bytes) {
    Bytes out;
    std::size_t taken = 0;
    while (taken < payload_bytes) {
      taken += pair.client.write(id.value(), std::span<const std::byte>(block).first(
                                                  std::min(block.size(), payload_bytes - taken)), false).value();
      const Bytes batch = take_wire(pair.client);
      out.insert(out.end(), batch.begin(), batch.end());
    }
    return out;
  };
  auto acks_in = [](const std::vector<Seen>& frames) {
    std::vector<uint64_t> positions;
    for (const Seen& frame : frames) {
      if (frame.kind == wire::FrameKind::ack) positions.push_back(wire::parse_ack(frame.frame()).value());
    }
    return positions;
  };

  // Below the interval: nothing is due, nothing to send.
  REQUIRE(pair.server.receive(client_wire(limits::ack_interval_bytes / 2), 0).ok());
  CHECK_FALSE(pair.server.has_output());
  CHECK(pair.server.acked_position() == 0);
  // At the interval: one ACK on its own, with the receive position.
  REQUIRE(pair.server.receive(client_wire(limits::ack_interval_bytes / 2), 0).ok());
  REQUIRE(pair.server.has_output());
  auto batch = frames_of(take_wire(pair.server));
  REQUIRE(batch.size() == 1);
  CHECK(acks_in(batch) == std::vector<uint64_t>{pair.server.receive_position()});
  CHECK(pair.server.acked_position() == pair.server.receive_position());
  // The client records it.
  const uint64_t acked = pair.server.receive_position();
  REQUIRE(pair.client.receive(raw([&](auto out) { return wire::encode_ack(out, acked); }), 0).ok());
  CHECK(pair.client.peer_acked_position() == acked);
  CHECK(pair.client.peer_acked_position() == pair.server.receive_position());

  // Piggy-backed: a few bytes are not due on their own, but ride along with a PING.
  REQUIRE(pair.server.receive(client_wire(100), 0).ok());
  CHECK_FALSE(pair.server.has_output());
  pair.server.ping(3);
  batch = frames_of(take_wire(pair.server));
  REQUIRE(batch.size() == 2);
  CHECK(batch[0].kind == wire::FrameKind::ping);
  CHECK(acks_in(batch) == std::vector<uint64_t>{pair.server.receive_position()});

  // Two intervals before the batch goes: still one ACK, carrying the later position.
  REQUIRE(pair.server.receive(client_wire(limits::ack_interval_bytes), 0).ok());
  REQUIRE(pair.server.receive(client_wire(limits::ack_interval_bytes), 0).ok());
  batch = frames_of(take_wire(pair.server));
  CHECK(acks_in(batch) == std::vector<uint64_t>{pair.server.receive_position()});
  CHECK_FALSE(pair.server.has_output());
  CHECK_FALSE(pair.server.failed());
}

// Proves an ACK for bytes that were never sent (beyond the send position) is the
// connection-scoped ack_beyond_sent, while an ACK of exactly the send position is accepted.
// Without resume it fails the session; with resume only the transport ends: the session
// keeps its streams and the position the peer claimed is not taken.
TEST_CASE("session: an ACK ahead of the send position ends the connection") {
  for (const bool resumable : {false, true}) {
  CAPTURE(resumable);
  SessionOptions options;
  options.resumable = resumable;
  Pair pair(options);
  REQUIRE(pair.client.open(1, 0, bytes_of("hello"), false).ok());
  pair.pump();
  const uint64_t sent = pair.client.send_position();
  REQUIRE(sent > 0);
  REQUIRE(pair.client.receive(raw([&](auto out) { return wire::encode_ack(out, sent); }), 0).ok());
  CHECK(pair.client.peer_acked_position() == sent);
  auto ahead = pair.client.receive(raw([&](auto out) { return wire::encode_ack(out, sent + 1); }), 0);
  REQUIRE_FALSE(ahead.ok());
  CHECK(ahead.error() == MuxError::ack_beyond_sent);
  CHECK(scope_of(ahead.error()) == Scope::connection);
  if (resumable) {
    CHECK_FALSE(pair.client.failed());
    CHECK(pair.client.streams_open() == 1);
  } else {
    CHECK(pair.client.failure() == MuxError::ack_beyond_sent);
    CHECK(pair.client_log.streams[1].reset == MuxError::ack_beyond_sent);
  }
  CHECK(pair.client.peer_acked_position() == sent);
  CHECK(pair.client.held().acked() == sent);
  }
}

// Proves that a RESUME HELLO for a session the acceptor does not know (it restarted) is
// refused with HELLO_ACK status resume_unknown_session, and only that: the acceptor's
// session fails with the session-scoped session_lost and drops what it had queued; the
// dialer that reads the refusal fails with session_lost too.
TEST_CASE("session: RESUME for an unknown session is refused") {
  SessionOptions options;
  options.session_id = session_id_of(42);
  Pair pair(options, {});
  REQUIRE(pair.server.open(1, 0, bytes_of("queued"), false).ok());  // dropped by the refusal
  // The dialer's HELLO, turned into a RESUME (as a dialer that lost its connection sends).
  const auto frames = frames_of(take_wire(pair.client));
  REQUIRE(frames.size() == 1);
  wire::Hello hello = wire::parse_hello(frames[0].frame()).value();
  hello.hello_flags |= wire::hello_flag_resume;
  const Bytes resume = raw([&](auto out) { return wire::encode_hello(out, hello); });

  auto refused = pair.server.receive(resume, 0);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error() == MuxError::session_lost);
  CHECK(scope_of(refused.error()) == Scope::session);
  CHECK(pair.server.failed());
  CHECK_FALSE(pair.server.handshake_complete());
  CHECK(pair.server_log.streams[2].reset == MuxError::session_lost);
  REQUIRE(pair.server.has_output());
  const Bytes answer_bytes = take_wire(pair.server);
  const auto answer_frames = frames_of(answer_bytes);
  REQUIRE(answer_frames.size() == 1);
  REQUIRE(answer_frames[0].kind == wire::FrameKind::hello_ack);
  auto answer = wire::parse_hello_ack(answer_frames[0].frame());
  REQUIRE(answer.ok());
  CHECK(answer->status == StatusCode::resume_unknown_session);
  CHECK(answer->session_id == options.session_id);
  CHECK(answer->generation == hello.generation);

  auto lost = pair.client.receive(answer_bytes, 0);
  REQUIRE_FALSE(lost.ok());
  CHECK(lost.error() == MuxError::session_lost);
  CHECK_FALSE(pair.client.handshake_complete());
}

namespace {

// A resumable pair whose first connection has carried some traffic both ways.
struct ResumablePair : Pair {
  static SessionOptions resumable(uint64_t id) {
    SessionOptions options;
    options.resumable = true;
    options.session_id = session_id_of(id);
    return options;
  }
  ResumablePair() : Pair(resumable(7), resumable(0)) {
    REQUIRE(client.open(1, 0, bytes_of("first"), false).ok());
    REQUIRE(server.open(1, 0, bytes_of("second"), false).ok());
    pump();
    // One more batch from the client carries its ACK of the server's bytes.
    REQUIRE(client.write(1, bytes_of("more"), false).ok());
    pump();
    REQUIRE(client.handshake_complete());
    REQUIRE(server.handshake_complete());
  }
  // Both sides see the transport break; the dialer's next HELLO, as the acceptor reads it.
  wire::Hello break_and_hello() {
    client.on_transport_lost();
    server.on_transport_lost();
    client.start_resume();
    const auto frames = frames_of(take_wire(client));
    REQUIRE(frames.size() == 1);
    return wire::parse_hello(frames[0].frame()).value();
  }
};

}  // namespace

// Proves the acceptor refuses a resume whose position it cannot serve, with the distinct
// status, and that the refusal is session-scoped: its streams fail with session_lost.
// Position ahead: the dialer claims bytes we never sent. Gone: the dialer asks for bytes
// it had acknowledged, which we released.
TEST_CASE("session: a resume from a position ahead of what was sent, or released, is refused") {
  for (const bool ahead : {true, false}) {
    CAPTURE(ahead);
    ResumablePair pair;
    REQUIRE(pair.server.held().acked() > 0);  // the client's ACK rode on its second batch
    wire::Hello hello = pair.break_and_hello();
    CHECK((hello.hello_flags & wire::hello_flag_resume) != 0);
    CHECK(hello.generation == 2);
    hello.receive_position = ahead ? pair.server.send_position() + 1 : pair.server.held().acked() - 1;
    const replay::HelloAnswer answer = pair.server.answer_resume(hello);
    CHECK(answer.verdict == replay::HelloVerdict::refuse);
    CHECK(answer.error == (ahead ? replay::ReplayError::resume_position_ahead : replay::ReplayError::resume_position_gone));
    CHECK(answer.ack.status == (ahead ? StatusCode::resume_position_ahead : StatusCode::resume_position_gone));
    CHECK(pair.server.failure() == MuxError::session_lost);
    CHECK(pair.server_log.streams[1].reset == MuxError::session_lost);
    // The dialer that reads the refusal is lost too.
    const Bytes refusal = raw([&](auto out) { return wire::encode_hello_ack(out, answer.ack); });
    auto lost = pair.client.receive(refusal, 0);
    REQUIRE_FALSE(lost.ok());
    CHECK(pair.client.failure() == MuxError::session_lost);
    CHECK(pair.client_log.streams[1].reset == MuxError::session_lost);
  }
}

// Proves the unconfirmed window of an authenticated session (SPEC 8.2) closes one round
// trip after the HELLO_ACK, even when the acceptor sends nothing: a resumable dialer sends
// an ACK as soon as a new session's HELLO_ACK is in. Before that ACK the acceptor takes a
// new-session HELLO of a newer generation without a proof (the dialer may have lost the
// HELLO_ACK and hold no key); after it, the same HELLO is refused resume_unauthenticated
// and leaves the session as it was, while a RESUME with the key's proof is accepted.
TEST_CASE("session: a keyed session takes a new-session HELLO without a proof only until the dialer's first ACK") {
  replay::ResumeKey key{};
  for (std::size_t i = 0; i < key.size(); i++) key[i] = static_cast<std::byte>(0xa0 + i);
  for (const bool acknowledged : {false, true}) {
    CAPTURE(acknowledged);
    Pair pair(ResumablePair::resumable(9), ResumablePair::resumable(0));
    const auto hello_frames = frames_of(take_wire(pair.client));
    REQUIRE(hello_frames.size() == 1);
    wire::Hello hello = wire::parse_hello(hello_frames[0].frame()).value();
    const Bytes hello_bytes = raw([&](auto out) { return wire::encode_hello(out, hello); });
    REQUIRE(pair.server.receive(hello_bytes, 0).ok());
    REQUIRE(pair.server.handshake_complete());
    pair.server.set_resume_key(key);  // as the glue binds it where the new-session HELLO was taken
    const Bytes hello_ack = take_wire(pair.server);
    REQUIRE(frames_of(hello_ack).size() == 1);  // the HELLO_ACK alone: the acceptor sends no byte
    if (acknowledged) {
      REQUIRE(pair.client.receive(hello_ack, 0).ok());
      pair.client.set_resume_key(key);
      const auto answer = frames_of(take_wire(pair.client));
      REQUIRE(answer.size() == 1);
      CHECK(answer[0].kind == wire::FrameKind::ack);
      CHECK(wire::parse_ack(answer[0].frame()).value() == 0);
      REQUIRE(pair.server.receive(raw([&](auto out) { return wire::encode_ack(out, 0); }), 0).ok());
    }
    // A new-session HELLO of the next generation, with no proof: the dialer after a lost
    // HELLO_ACK, or anyone of its identity who knows the session id.
    pair.server.on_transport_lost();
    wire::Hello retry = hello;
    retry.generation = 2;
    // As the glue does (Connection::adopt): judged first, and only an accepted one is answered.
    const replay::HelloAnswer judged = pair.server.judge_resume(retry);
    if (!acknowledged) {
      CHECK(judged.verdict == replay::HelloVerdict::accept_resume);
      CHECK(pair.server.answer_resume(retry).verdict == replay::HelloVerdict::accept_resume);
      CHECK(pair.server.generation() == 2);
      continue;
    }
    CHECK(judged.verdict == replay::HelloVerdict::refuse);
    CHECK(judged.error == replay::ReplayError::resume_unauthenticated);
    CHECK(judged.ack.status == StatusCode::resume_unauthenticated);
    CHECK_FALSE(pair.server.failed());
    CHECK(pair.server.generation() == 1);
    // The dialer itself resumes with RESUME and the key's proof.
    wire::Hello resume = retry;
    resume.hello_flags |= wire::hello_flag_resume;
    resume.has_resume_proof = true;
    resume.resume_proof = replay::resume_proof(key, resume);
    CHECK(pair.server.judge_resume(resume).verdict == replay::HelloVerdict::accept_resume);
    CHECK(pair.server.answer_resume(resume).verdict == replay::HelloVerdict::accept_resume);
    CHECK(pair.server.generation() == 2);
  }
}

// Proves a HELLO of a superseded generation (an old attempt arriving late) is ignored and
// changes nothing: no answer, the session keeps its state for the current generation.
TEST_CASE("session: a HELLO of an older generation is ignored") {
  ResumablePair pair;
  wire::Hello hello = pair.break_and_hello();
  const replay::HelloAnswer accepted = pair.server.answer_resume(hello);
  REQUIRE(accepted.verdict == replay::HelloVerdict::accept_resume);
  pair.pump();
  CHECK(pair.client.handshake_complete());
  hello.generation = 1;
  const replay::HelloAnswer stale = pair.server.answer_resume(hello);
  CHECK(stale.verdict == replay::HelloVerdict::ignore);
  CHECK(stale.error == replay::ReplayError::superseded_generation);
  CHECK_FALSE(pair.server.failed());
  CHECK(pair.server.generation() == 2);
}

// Proves resume at the session level under random loss: the transport breaks at random
// points, cutting the bytes in flight anywhere (inside frames too); each side replays from
// the other's receive position, and every stream's bytes arrive once and in order.
TEST_CASE("session: random transport losses, each side replays from the other's position") {
  const uint64_t seed = test::test_seed("session resume");
  std::mt19937_64 random(seed);
  ResumablePair pair;
  constexpr int streams = 6;
  std::vector<StreamId> ids;
  std::vector<Bytes> sent(streams);
  for (int i = 0; i < streams; i++) {
    auto id = (i % 2 == 0 ? pair.client : pair.server).open(1, 0, {}, false);
    REQUIRE(id.ok());
    ids.push_back(id.value());
  }
  int losses = 0;
  for (int step = 0; step < 3000; step++) {
    const int i = static_cast<int>(random() % streams);
    Session& writer = i % 2 == 0 ? pair.client : pair.server;
    Bytes message(1 + random() % 3000);
    for (auto& b : message) b = std::byte(random());
    auto taken = writer.write(ids[i], message, false);
    REQUIRE(taken.ok());
    sent[i].insert(sent[i].end(), message.begin(), message.begin() + static_cast<std::ptrdiff_t>(taken.value()));
    // Move some output each way, sometimes cut short: the rest is lost with the transport.
    for (Session* from : {&pair.client, &pair.server}) {
      Session& to = from == &pair.client ? pair.server : pair.client;
      if (!from->has_output() || random() % 3 == 0) continue;
      Bytes wire_bytes = take_wire(*from);
      if (random() % 40 == 0) {
        wire_bytes.resize(random() % (wire_bytes.size() + 1));  // the connection breaks here
        (void)to.receive(wire_bytes, 0);
        losses++;
        pair.client.on_transport_lost();
        pair.server.on_transport_lost();
        pair.client.start_resume();
        const auto hello_frames = frames_of(take_wire(pair.client));
        REQUIRE(hello_frames.size() == 1);
        const auto answer = pair.server.answer_resume(wire::parse_hello(hello_frames[0].frame()).value());
        REQUIRE(answer.verdict == replay::HelloVerdict::accept_resume);
        break;
      }
      REQUIRE(to.receive(wire_bytes, 0).ok());
    }
  }
  pair.pump();
  CHECK(losses > 10);
  // The acceptor accepted every resume; the dialer counts those whose HELLO_ACK reached it
  // (a loss may cut the HELLO_ACK itself, and the next HELLO resumes from there).
  CHECK(pair.server.stats().resumes == static_cast<uint64_t>(losses));
  CHECK(pair.client.stats().resumes <= pair.server.stats().resumes);
  CHECK(pair.client.stats().resumes * 2 > pair.server.stats().resumes);
  for (int i = 0; i < streams; i++) {
    const Recorder& reader = i % 2 == 0 ? pair.server_log : pair.client_log;
    auto it = reader.streams.find(ids[i]);
    REQUIRE(it != reader.streams.end());
    CHECK(it->second.received == sent[i]);
  }
  CHECK_FALSE(pair.client.failed());
  CHECK_FALSE(pair.server.failed());
}
