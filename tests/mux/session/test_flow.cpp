// Flow control: credit accounting on both sides, violations, credit return after half a
// window, window growth bounded by its maximum, and credit for discarded data.
#include "ringmux/mux/session/flow.h"

#include <doctest/doctest.h>

using namespace ringmux;
using namespace ringmux::mux;

// Proves the sender never gets more than it was granted and that credit past the
// protocol limit is refused.
TEST_CASE("flow: send credit") {
  SendCredit credit(1000);
  credit.consume(600);
  CHECK(credit.available() == 400);
  CHECK(credit.add(100).ok());
  CHECK(credit.available() == 500);
  SendCredit full(limits::window_bytes_limit - 10);
  auto over = full.add(11);
  REQUIRE(!over.ok());
  CHECK(over.error() == FlowError::credit_limit);
  CHECK(full.add(10).ok());
}

// Proves a peer that sends one byte beyond its credit is caught.
TEST_CASE("flow: data beyond the window is an overflow") {
  RecvWindow window(1000, 4000);
  CHECK(window.on_received(1000).ok());
  auto over = window.on_received(1);
  REQUIRE(!over.ok());
  CHECK(over.error() == FlowError::overflow);
  CHECK(window.buffered() == 1000);
}

// Proves credit goes back once a quarter window is consumed, restoring a whole window,
// and that a slow consumer does not grow the window.
TEST_CASE("flow: credit returns after a quarter window, no growth for a slow consumer") {
  RecvWindow window(1000, 8000);
  const uint64_t rtt_ns = 100'000;
  REQUIRE(window.on_received(1000).ok());
  CHECK(window.on_consumed(200, 1'000'000, rtt_ns) == 0);  // under a quarter: nothing yet
  CHECK(window.on_consumed(100, 2'000'000, rtt_ns) == 300);
  CHECK(window.granted() == 1300);
  REQUIRE(window.on_received(300).ok());
  // The next part comes slowly (10 ms later, 100 RTTs): no growth.
  CHECK(window.on_consumed(300, 12'000'000, rtt_ns) == 300);
  CHECK(window.window_bytes() == 1000);
  CHECK(window.granted() - window.consumed() == 1000);
}

// Proves a cap shrinks a grown window at once and withholds credit until the peer's
// outstanding credit has run down below it; without the cap the window grows back.
TEST_CASE("flow: a cap shrinks the window and withholds credit until it holds") {
  RecvWindow window(1000, 4000);
  const uint64_t rtt_ns = 1'000'000;
  uint64_t now = 1;
  for (int round = 0; round < 10; round++) {  // a fast consumer grows the window to 4000
    const uint64_t allowed = window.granted() - window.received();
    REQUIRE(window.on_received(allowed).ok());
    (void)window.on_consumed(allowed, now += 100'000, rtt_ns);
  }
  REQUIRE(window.window_bytes() == 4000);
  REQUIRE(window.granted() - window.consumed() == 4000);
  // Capped at 2000: 1000 consumed leaves 3000 outstanding, above the cap: no credit.
  REQUIRE(window.on_received(1000).ok());
  CHECK(window.on_consumed(1000, now += 100'000, rtt_ns, 2000) == 0);
  CHECK(window.window_bytes() == 2000);
  REQUIRE(window.on_received(1500).ok());
  CHECK(window.on_consumed(1500, now += 100'000, rtt_ns, 2000) == 500);
  CHECK(window.granted() - window.consumed() == 2000);
  // The cap lifted: a fast consumer grows it again.
  for (int round = 0; round < 4; round++) {
    const uint64_t allowed = window.granted() - window.received();
    REQUIRE(window.on_received(allowed).ok());
    (void)window.on_consumed(allowed, now += 100'000, rtt_ns);
  }
  CHECK(window.window_bytes() == 4000);
}

// Proves a consumer that keeps up doubles the window, up to the maximum and never past.
TEST_CASE("flow: the window grows for a fast consumer and stops at its maximum") {
  RecvWindow window(1000, 4000);
  const uint64_t rtt_ns = 1'000'000;
  uint64_t now = 1;
  uint64_t sent = 0;
  for (int round = 0; round < 20; round++) {
    const uint64_t allowed = window.granted() - window.received();
    REQUIRE(window.on_received(allowed).ok());
    sent += allowed;
    now += 100'000;  // well within 4 RTTs
    const uint32_t credit = window.on_consumed(allowed, now, rtt_ns);
    CHECK(credit > 0);
    CHECK(window.granted() - window.consumed() <= 4000);
  }
  CHECK(window.window_bytes() == 4000);
  CHECK(window.buffered() == 0);
  CHECK(window.consumed() == sent);
}

// Proves data a reset stream discards is credited like consumed data, so the connection
// window does not leak.
TEST_CASE("flow: discarded data returns its credit") {
  RecvWindow connection(1000, 1000);
  REQUIRE(connection.on_received(800).ok());
  // 800 bytes of a stream that was reset are dropped unread.
  CHECK(connection.on_consumed(800, 5, 1) == 800);
  CHECK(connection.granted() - connection.received() == 1000);
}
