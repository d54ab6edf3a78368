// The receiver's side of replay: the ACK policy fires on its byte and time thresholds or
// rides along with a send.
#include "ringmux/replay/receive.h"

#include <doctest/doctest.h>

using namespace ringmux;
using namespace ringmux::replay;

TEST_CASE("replay ack policy: byte threshold") {
  AckPolicy policy(1000, 1'000'000);
  CHECK(!policy.ack_due(0, false));
  policy.on_received(999, 10);
  CHECK(!policy.ack_due(10, false));
  policy.on_received(1000, 11);
  CHECK(policy.ack_due(11, false));
  CHECK(policy.take() == 1000);
  CHECK(policy.unacked_bytes() == 0);
  CHECK(!policy.ack_due(11, false));
  CHECK(policy.invariant());
}

// Proves the ACK becomes due exactly ack interval after the first unacknowledged byte
// (later bytes do not push the deadline back), and that no deadline exists when nothing
// is unacknowledged.
TEST_CASE("replay ack policy: time threshold from the first unacked byte") {
  AckPolicy policy(1'000'000, 5'000);
  CHECK(policy.deadline_ns() == AckPolicy::no_deadline_ns);
  policy.on_received(10, 1'000);
  policy.on_received(20, 4'000);  // a later byte: the clock still runs from 1'000
  CHECK(policy.deadline_ns() == 6'000);
  CHECK(!policy.ack_due(5'999, false));
  CHECK(policy.ack_due(6'000, false));
  CHECK(policy.take() == 20);
  CHECK(policy.deadline_ns() == AckPolicy::no_deadline_ns);
  policy.on_received(25, 9'000);  // the next unacked byte starts a new clock
  CHECK(policy.deadline_ns() == 14'000);
}

// Proves a send that goes out anyway carries an ACK for any unacknowledged byte, and that
// there is nothing to piggy-back when everything is acknowledged.
TEST_CASE("replay ack policy: piggy-backed on a send") {
  AckPolicy policy(1'000'000, 1'000'000'000);
  CHECK(!policy.ack_due(0, true));
  policy.on_received(1, 0);
  CHECK(!policy.ack_due(1, false));
  CHECK(policy.ack_due(1, true));
  CHECK(policy.take() == 1);
  CHECK(!policy.ack_due(2, true));
}

// Proves the handshake's receive position counts as an ACK: nothing is due after it.
TEST_CASE("replay ack policy: the handshake acknowledges its position") {
  AckPolicy policy;
  policy.on_received(500, 0);
  policy.on_handshake(500);
  CHECK(policy.acked_position() == 500);
  CHECK(!policy.ack_due(limits::ack_interval_ns * 2, true));
  CHECK(policy.deadline_ns() == AckPolicy::no_deadline_ns);
}

// Proves the defaults are the named limits.
TEST_CASE("replay ack policy: defaults come from limits") {
  AckPolicy policy;
  policy.on_received(limits::ack_interval_bytes - 1, 0);
  CHECK(!policy.ack_due(limits::ack_interval_ns - 1, false));
  CHECK(policy.ack_due(limits::ack_interval_ns, false));
  policy.on_received(limits::ack_interval_bytes, 1);
  CHECK(policy.ack_due(1, false));
}
