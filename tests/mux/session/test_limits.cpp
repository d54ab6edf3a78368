// The resource model's bounds (wire/RESOURCES.md), session level: each flood limit trips
// with a message naming it, control frames are bounded by what is queued unsent (an idle
// session lives forever), windows announced in the handshake let any two configurations
// interoperate, and a frame's completion clock is not reset by trickling bytes.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "ringmux/mux/session/flood.h"
#include "ringmux/mux/session/session.h"
#include "tests/mux/session/session_pair.h"
#include "ringmux/wire/codec.h"

using namespace ringmux;
using namespace ringmux::mux;
using namespace ringmux::mux::testing;

namespace {

constexpr uint64_t second_ns = 1'000'000'000;

// `count` copies of one raw frame, back to back.
Bytes repeated(const Bytes& frame, int count) {
  Bytes out;
  out.reserve(frame.size() * static_cast<std::size_t>(count));
  for (int i = 0; i < count; i++) out.insert(out.end(), frame.begin(), frame.end());
  return out;
}

// Feeds `bytes` to the server of a pair whose handshake is done, at `now_ns`, and returns
// the error (none when accepted).
MuxError feed(Pair& pair, const Bytes& bytes, uint64_t now_ns) {
  auto received = pair.server.receive(bytes, now_ns);
  return received ? MuxError::none : received.error();
}

}  // namespace

TEST_CASE("flood guard: a burst of one second's worth, then the rate") {
  FloodLimits limits;
  limits[FloodKind::pings] = 100;
  FloodGuard guard(limits);
  for (int i = 0; i < 100; i++) REQUIRE(guard.admit(FloodKind::pings, 0));
  CHECK(!guard.admit(FloodKind::pings, 0));  // the 101st within the same instant
  CHECK(guard.tripped());
  CHECK(guard.tripped_kind() == FloodKind::pings);
  // Other kinds are counted apart.
  FloodGuard fresh(limits);
  for (int i = 0; i < 100; i++) REQUIRE(fresh.admit(FloodKind::pings, 0));
  CHECK(fresh.admit(FloodKind::credits, 0));
  // At the rate, forever: one every 10 ms for 10 simulated seconds.
  FloodGuard steady(limits);
  for (uint64_t t = 0; t < 10 * second_ns; t += 10'000'000) REQUIRE(steady.admit(FloodKind::pings, t));
  CHECK(flood_message(FloodKind::resets, 10000) == "flood: RESET/ERROR frames over 10000 per second");
}

// The old bug: the control-frame count only grew on a session without stream traffic, so a
// session answering one PING at a time was cut off after exactly 4,096.
TEST_CASE("limits: an idle session answers 10,000 PINGs one at a time and lives on") {
  SessionOptions client;
  client.flood[FloodKind::pings] = 1'000'000;  // Pair::pump hands the PONGs over at time 0
  Pair pair(client, {});
  pair.pump();
  for (int i = 0; i < 10'000; i++) {
    const Bytes ping = raw([i](auto out) { return wire::encode_ping(out, static_cast<uint64_t>(i)); });
    // One every 10 ms of simulated time: within the PING rate limit.
    REQUIRE(feed(pair, ping, static_cast<uint64_t>(i) * 10'000'000) == MuxError::none);
    REQUIRE(pair.server.has_output());
    pair.pump();  // the PONG goes out
  }
  CHECK(!pair.server.failed());
  CHECK(pair.client_log.pongs.size() == 10'000);
}

TEST_CASE("limits: PONGs queued unsent beyond the limit cut a peer that does not read") {
  SessionOptions options;
  options.control_frames_queued_max = 64;
  Pair pair({}, options);
  pair.pump();
  const Bytes ping = raw([](auto out) { return wire::encode_ping(out, 7); });
  // Nothing is taken from the server between them: the answers pile up.
  MuxError error = MuxError::none;
  int fed = 0;
  for (; fed < 100 && error == MuxError::none; fed++) error = feed(pair, ping, static_cast<uint64_t>(fed) * 10'000'000);
  CHECK(error == MuxError::flood);
  CHECK(fed == 65);
  CHECK(pair.server.failure_message().find("queued unsent") != std::string::npos);
}

TEST_CASE("limits: each flood limit trips and names itself") {
  struct Case {
    const char* name;
    FloodKind kind;
    Bytes (*frame)(StreamId id);
    bool needs_stream;
  };
  const Case cases[] = {
      {"empty DATA", FloodKind::empty_data,
       [](StreamId id) { return raw([id](auto out) { return wire::encode_frame(out, wire::FrameKind::data, 0, id, {}); }); },
       true},
      {"CREDIT", FloodKind::credits,
       [](StreamId) { return raw([](auto out) { return wire::encode_credit(out, 0, 1); }); }, false},
      {"PING", FloodKind::pings, [](StreamId) { return raw([](auto out) { return wire::encode_ping(out, 1); }); },
       false},
      {"PONG", FloodKind::pings, [](StreamId) { return raw([](auto out) { return wire::encode_pong(out, 1); }); },
       false},
      {"GOAWAY", FloodKind::goaways,
       [](StreamId) { return raw([](auto out) { return wire::encode_goaway(out, 0, StatusCode::going_away, {}); }); },
       false},
      {"ignorable", FloodKind::ignorable,
       [](StreamId) {
         return raw([](auto out) { return wire::encode_frame(out, static_cast<wire::FrameKind>(0x90), 0, 0, {}); });
       },
       false},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    SessionOptions options;
    options.flood[c.kind] = 50;
    Pair pair({}, options);
    pair.pump();
    StreamId id = 0;
    if (c.needs_stream) {
      auto opened = pair.client.open(1, 0, {}, false);
      REQUIRE(opened.ok());
      id = opened.value();
      pair.pump();
    }
    // 50 in one instant are admitted; the 51st is a flood.
    CHECK(feed(pair, repeated(c.frame(id), 50), 0) == MuxError::none);
    CHECK(feed(pair, c.frame(id), 0) == MuxError::flood);
    CHECK(pair.server.failure_message() == flood_message(c.kind, 50));
  }
}

// A stream-scoped ERROR ends a stream as a RESET does: it counts against the same limit.
TEST_CASE("limits: cancelling by stream ERROR is rate-limited like RESET") {
  SessionOptions options;
  options.flood[FloodKind::resets] = 20;
  Pair pair({}, options);
  pair.pump();
  MuxError failure = MuxError::none;
  int rounds = 0;
  for (; rounds < 100 && failure == MuxError::none; rounds++) {
    auto id = pair.client.open(1, 0, {}, false);
    REQUIRE(id.ok());
    pair.client.reset(id.value(), MuxError::cancelled, "cancelled with a reason");  // an ERROR frame
    pair.pump();
    failure = pair.server.failure();
  }
  CHECK(failure == MuxError::flood);
  CHECK(rounds == 21);
  CHECK(pair.server.failure_message() == flood_message(FloodKind::resets, 20));
}

TEST_CASE("limits: an OPEN after the peer's own GOAWAY is a violation") {
  Pair pair;
  pair.pump();
  const Bytes goaway = raw([](auto out) { return wire::encode_goaway(out, 0, StatusCode::going_away, {}); });
  REQUIRE(feed(pair, goaway, 0) == MuxError::none);
  const Bytes open = raw([](auto out) { return wire::encode_open(out, 1, 0, 1, 0, {}); });
  CHECK(feed(pair, open, 0) == MuxError::protocol_violation);
  CHECK(pair.server.failure_message() == "OPEN after the peer's own GOAWAY");
  CHECK(pair.server_log.streams.empty());  // never served
}

// The case: a client with 1 MiB stream windows sent an 800 kB call to a default
// server, which took it for a flow-control violation.
TEST_CASE("limits: windows announced in the handshake let different configurations talk") {
  SessionOptions big;
  big.stream_window_bytes = 1024 * 1024;
  big.stream_window_bytes_max = 1024 * 1024;
  Pair pair(big, {});
  pair.pump();
  CHECK(pair.client.peer_stream_window_bytes() == limits::stream_window_bytes_initial);
  CHECK(pair.server.peer_stream_window_bytes() == 1024 * 1024);
  const Bytes call(800 * 1000, std::byte{3});
  auto opened = pair.client.open_some(1, 0, call, true);
  REQUIRE(opened.ok());
  CHECK(opened->taken == limits::stream_window_bytes_initial);  // the server's window, not ours
  std::size_t sent = opened->taken;
  for (int round = 0; round < 100 && sent < call.size(); round++) {
    pair.pump();
    auto taken = pair.client.write(opened->id, std::span<const std::byte>(call).subspan(sent), true);
    REQUIRE(taken.ok());
    sent += taken.value();
  }
  pair.pump();
  CHECK(!pair.server.failed());
  CHECK(pair.server_log.streams[opened->id].received.size() == call.size());
  CHECK(pair.server_log.streams[opened->id].remote_ended);
}

TEST_CASE("limits: before its HELLO_ACK a dialer assumes only the minimum windows") {
  Pair pair;
  const Bytes big(1024 * 1024, std::byte{1});
  auto opened = pair.client.open_some(1, 0, big, false);
  REQUIRE(opened.ok());
  CHECK(opened->taken == limits::stream_window_bytes_min);
  pair.pump();  // the HELLO_ACK adds the rest of the acceptor's window
  auto more = pair.client.write(opened->id, std::span<const std::byte>(big).subspan(opened->taken), false);
  REQUIRE(more.ok());
  CHECK(opened->taken + more.value() == limits::stream_window_bytes_initial);
  pair.pump();
  CHECK(!pair.server.failed());
}

TEST_CASE("limits: a HELLO announcing windows below the minimum is malformed") {
  wire::Hello hello;
  hello.stream_window_bytes = limits::stream_window_bytes_min - 1;
  hello.connection_window_bytes = limits::connection_window_bytes_min;
  const Bytes bytes = raw([&](auto out) { return wire::encode_hello(out, hello); });
  wire::Decoder decoder;
  auto step = decoder.next(bytes);
  REQUIRE(step.ok());
  REQUIRE(step->has_frame);
  CHECK(wire::parse_hello(step->frame).error() == wire::WireError::bad_value);
}

TEST_CASE("limits: a frame's completion clock starts with its first byte, not its last") {
  Pair pair;
  pair.pump();
  CHECK(pair.server.frame_started_ns() == 0);
  const Bytes ping = raw([](auto out) { return wire::encode_ping(out, 9); });
  // One byte at a time, 100 ms apart: the clock keeps the first byte's time.
  for (std::size_t i = 0; i + 1 < ping.size(); i++) {
    REQUIRE(feed(pair, Bytes{ping[i]}, 1000 + i * 100'000'000) == MuxError::none);
    CHECK(pair.server.frame_started_ns() == 1000);
  }
  REQUIRE(feed(pair, Bytes{ping.back()}, 5 * second_ns) == MuxError::none);
  CHECK(pair.server.frame_started_ns() == 0);  // complete
  // A frame completed and the next begun in one call: the clock restarts there.
  Bytes one_and_a_half = ping;
  one_and_a_half.insert(one_and_a_half.end(), ping.begin(), ping.begin() + 10);
  REQUIRE(feed(pair, one_and_a_half, 6 * second_ns) == MuxError::none);
  CHECK(pair.server.frame_started_ns() == 6 * second_ns);
}
