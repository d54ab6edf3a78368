// The receiver's side of replay: new bytes are told from duplicates by position, a gap is
// an error, and the ACK policy fires on its byte and time thresholds or rides along with
// a send.
#include "replay/receive.h"

#include <doctest/doctest.h>

#include <vector>

using namespace ringmux;
using namespace ringmux::replay;

namespace {

std::vector<std::byte> pattern(std::size_t count, uint8_t first) {
  std::vector<std::byte> bytes(count);
  for (std::size_t i = 0; i < count; i++) bytes[i] = std::byte(static_cast<uint8_t>(first + i));
  return bytes;
}

}  // namespace

// Proves bytes that start exactly at the receive position are all new and advance it.
TEST_CASE("replay receive: in-order bytes are all new") {
  ReceiveTracker tracker;
  const auto batch = pattern(10, 0);
  auto fresh = tracker.admit(0, batch);
  REQUIRE(fresh.ok());
  CHECK(fresh->size() == 10);
  CHECK(fresh->data() == batch.data());
  CHECK(tracker.position() == 10);
  CHECK(tracker.duplicate_bytes() == 0);
}

// Proves that after a resume, a peer replaying from before our position has its duplicate
// prefix dropped by position: only the bytes beyond our position are returned, and a batch
// that is entirely old returns nothing and leaves the position alone.
TEST_CASE("replay receive: the duplicate prefix of a replay is dropped") {
  ReceiveTracker tracker(100);  // resumed at position 100
  const auto batch = pattern(30, 0);  // the peer replays from 90: positions 90..119
  auto fresh = tracker.admit(90, batch);
  REQUIRE(fresh.ok());
  CHECK(fresh->size() == 20);
  CHECK(fresh->data() == batch.data() + 10);
  CHECK(tracker.position() == 120);
  CHECK(tracker.duplicate_bytes() == 10);
  CHECK(new_bytes_inside(batch, fresh.value()));  // not aligned with the batch start

  auto old = tracker.admit(100, pattern(20, 0));  // positions 100..119 again
  REQUIRE(old.ok());
  CHECK(old->empty());
  CHECK(tracker.position() == 120);
  CHECK(tracker.duplicate_bytes() == 30);

  // A frame-aligned caller sees whole duplicates or whole new frames only.
  const auto frame = pattern(8, 0);
  auto whole = tracker.admit(120, frame);
  REQUIRE(whole.ok());
  CHECK(!new_bytes_inside(frame, whole.value()));
  CHECK(tracker.position() == 128);
}

// Proves a batch that starts after the receive position is refused with receive_gap
// (connection-scoped) and takes nothing: the bytes in between are never silently skipped.
TEST_CASE("replay receive: a gap is an error") {
  ReceiveTracker tracker(50);
  auto gap = tracker.admit(51, pattern(4, 0));
  REQUIRE(!gap.ok());
  CHECK(gap.error() == ReplayError::receive_gap);
  CHECK(scope_of(ReplayError::receive_gap) == Scope::connection);
  CHECK(tracker.position() == 50);
  auto empty_ok = tracker.admit(50, {});  // an empty batch at the position is harmless
  REQUIRE(empty_ok.ok());
  CHECK(empty_ok->empty());
}

// Proves the ACK becomes due exactly at the byte threshold, not one byte before.
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
