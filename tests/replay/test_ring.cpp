// The sender's replay ring: wrap-around, back-pressure at exact capacity, contiguous claims
// across the wrap point, ACK validation, refused reads, and a randomized model test
// against a std::deque.
#include "replay/ring.h"

#include <doctest/doctest.h>

#include <cstring>
#include <deque>
#include <random>
#include <vector>

#include "tests/support.h"

using namespace ringmux;
using namespace ringmux::replay;

namespace {

std::unique_ptr<ReplayRing> make_ring(uint64_t capacity_bytes, uint32_t claim_bytes_max) {
  auto created = ReplayRing::create(capacity_bytes, claim_bytes_max);
  REQUIRE(created.ok());
  return std::move(created).value();
}

std::vector<std::byte> pattern(std::size_t count, uint8_t first) {
  std::vector<std::byte> bytes(count);
  for (std::size_t i = 0; i < count; i++) bytes[i] = std::byte(static_cast<uint8_t>(first + i));
  return bytes;
}

std::vector<std::byte> gather(const ReplaySpans& spans) {
  std::vector<std::byte> out(spans.first.begin(), spans.first.end());
  out.insert(out.end(), spans.second.begin(), spans.second.end());
  return out;
}

}  // namespace

// Proves the default ring is built from the named limits and starts empty.
TEST_CASE("replay ring: default capacity and empty state") {
  auto ring = make_ring(limits::replay_ring_bytes_default, limits::replay_claim_bytes_max);
  CHECK(ring->capacity() == limits::replay_ring_bytes_default);
  CHECK(ring->claim_bytes_max() == limits::replay_claim_bytes_max);
  CHECK(ring->bytes_unacked() == 0);
  CHECK(ring->tail() == 0);
  CHECK(ring->acked() == 0);
  CHECK(ring->invariant());
  // A maximum frame can be claimed at once.
  auto span = ring->claim(limits::replay_claim_bytes_max);
  CHECK(span.size() == limits::replay_claim_bytes_max);
  ring->abort();
}

// Proves bytes appended across the wrap point come back intact, in two spans, at the
// positions they were written at (positions never wrap; only slots do).
TEST_CASE("replay ring: wrap-around keeps positions and bytes") {
  auto ring = make_ring(16, 8);
  const auto first = pattern(12, 0);
  REQUIRE(ring->append(first) == 12);
  REQUIRE(ring->ack(10).value() == 10);
  const auto second = pattern(10, 100);  // positions 12..21: slots 12..15 then 0..5
  REQUIRE(ring->append(second) == 10);
  CHECK(ring->tail() == 22);
  CHECK(ring->bytes_unacked() == 12);

  auto spans = ring->read(12, 100);
  REQUIRE(spans.ok());
  CHECK(spans->first.size() == 4);
  CHECK(spans->second.size() == 6);
  CHECK(gather(spans.value()) == second);

  // The two unacked bytes of the first batch precede them.
  auto tail_of_first = ring->read(10, 2);
  REQUIRE(tail_of_first.ok());
  CHECK(gather(tail_of_first.value()) == std::vector<std::byte>(first.begin() + 10, first.end()));
  CHECK(ring->invariant());
}

// Proves a claim that crosses the wrap point is still one contiguous span, and that the
// committed bytes read back from their wrapped slots (the spill area is copied back).
TEST_CASE("replay ring: a claim across the wrap point is contiguous") {
  auto ring = make_ring(16, 8);
  REQUIRE(ring->append(pattern(13, 0)) == 13);
  REQUIRE(ring->ack(13).ok());
  auto span = ring->claim(8);  // positions 13..20: slots 13..15 and 0..4
  REQUIRE(span.size() == 8);
  const auto frame = pattern(8, 50);
  std::memcpy(span.data(), frame.data(), frame.size());
  ring->commit(8);
  auto spans = ring->read(13, 8);
  REQUIRE(spans.ok());
  CHECK(spans->first.size() == 3);
  CHECK(spans->second.size() == 5);
  CHECK(gather(spans.value()) == frame);
  CHECK(ring->invariant());
}

// Proves a partial commit publishes only what was written and an abort publishes nothing.
TEST_CASE("replay ring: partial commit and abort") {
  auto ring = make_ring(16, 8);
  auto span = ring->claim(8);
  REQUIRE(span.size() == 8);
  std::memcpy(span.data(), pattern(3, 7).data(), 3);
  ring->commit(3);
  CHECK(ring->tail() == 3);
  REQUIRE(!ring->claim(5).empty());
  CHECK(ring->claim_open());
  ring->abort();
  CHECK(!ring->claim_open());
  CHECK(ring->tail() == 3);
  CHECK(gather(ring->read(0, 16).value()) == pattern(3, 7));
}

// Proves back-pressure starts exactly at capacity: a ring holding capacity - n unacked
// bytes accepts a claim of n but not n + 1, append stops at the boundary, and an ACK makes
// exactly the released room available again.
TEST_CASE("replay ring: back-pressure at exact capacity") {
  auto ring = make_ring(16, 8);
  REQUIRE(ring->append(pattern(10, 0)) == 10);
  CHECK(ring->claim(7).empty());  // 10 + 7 > 16: back-pressured, not an error
  CHECK(!ring->claim_open());
  auto fits = ring->claim(6);  // 10 + 6 == 16: fits exactly
  REQUIRE(fits.size() == 6);
  ring->commit(6);
  CHECK(ring->bytes_unacked() == 16);
  CHECK(ring->bytes_free() == 0);
  CHECK(ring->claim(1).empty());
  CHECK(ring->append(pattern(1, 0)) == 0);

  REQUIRE(ring->ack(3).value() == 3);
  CHECK(ring->append(pattern(5, 0)) == 3);  // only the released room is taken
  CHECK(ring->bytes_unacked() == 16);
  // Nothing unacknowledged was overwritten: positions 3..15 still hold the first bytes.
  auto held = ring->read(3, 7);
  REQUIRE(held.ok());
  const auto first = pattern(10, 0);
  CHECK(gather(held.value()) == std::vector<std::byte>(first.begin() + 3, first.end()));
  CHECK(ring->invariant());
}

// Proves an ACK beyond what was written is refused with its own error and changes nothing.
TEST_CASE("replay ring: ack beyond the tail is rejected") {
  auto ring = make_ring(16, 8);
  REQUIRE(ring->append(pattern(5, 0)) == 5);
  auto ahead = ring->ack(6);
  REQUIRE(!ahead.ok());
  CHECK(ahead.error() == ReplayError::ack_ahead);
  CHECK(scope_of(ReplayError::ack_ahead) == Scope::session);
  CHECK(ring->acked() == 0);
  // An open claim is not "written": acking into it is still ahead.
  REQUIRE(!ring->claim(4).empty());
  CHECK(ring->ack(7).error() == ReplayError::ack_ahead);
  ring->abort();
  CHECK(ring->ack(5).value() == 5);  // exactly the tail is fine
}

// Proves an ACK at or below the acked position is ignored: it releases nothing and does
// not move the acked position back.
TEST_CASE("replay ring: stale ack is ignored") {
  auto ring = make_ring(16, 8);
  REQUIRE(ring->append(pattern(10, 0)) == 10);
  REQUIRE(ring->ack(8).value() == 8);
  auto older = ring->ack(4);
  REQUIRE(older.ok());
  CHECK(older.value() == 0);
  auto repeated = ring->ack(8);
  REQUIRE(repeated.ok());
  CHECK(repeated.value() == 0);
  CHECK(ring->acked() == 8);
  CHECK(ring->bytes_unacked() == 2);
}

// Proves reads before the acked position (released) and beyond the tail (never written)
// are refused with distinct errors, and reading at the tail is empty, not an error.
TEST_CASE("replay ring: read of gone or ahead positions is refused") {
  auto ring = make_ring(16, 8);
  REQUIRE(ring->append(pattern(10, 0)) == 10);
  REQUIRE(ring->ack(4).ok());
  auto gone = ring->read(3, 16);
  REQUIRE(!gone.ok());
  CHECK(gone.error() == ReplayError::position_gone);
  auto ahead = ring->read(11, 16);
  REQUIRE(!ahead.ok());
  CHECK(ahead.error() == ReplayError::position_ahead);
  auto at_tail = ring->read(10, 16);
  REQUIRE(at_tail.ok());
  CHECK(at_tail->empty());
  auto at_acked = ring->read(4, 3);  // the count limit holds
  REQUIRE(at_acked.ok());
  CHECK(at_acked->size() == 3);
}

// Proves, against a reference std::deque of the unacknowledged bytes, that any mix of
// appends and claims of random sizes, ACKs of random (including stale and ahead)
// positions and re-reads of random ranges keeps every byte at its position, never
// overwrites unacknowledged bytes and refuses exactly the reads it should. Seeded:
// RINGMUX_SEED=N replays a run.
TEST_CASE("replay ring: randomized model against a deque") {
  const uint64_t seed = test::test_seed("replay ring model");
  std::mt19937_64 rng(seed);
  const uint64_t capacity = uint64_t{1} << (4 + rng() % 6);  // 16 .. 512 bytes
  const uint32_t claim_max = static_cast<uint32_t>(1 + rng() % capacity);
  auto ring = make_ring(capacity, claim_max);
  std::deque<std::byte> model;  // bytes of [model_acked, model_tail)
  uint64_t model_acked = 0;
  uint64_t model_tail = 0;
  uint8_t next_byte = 0;
  auto next_pattern = [&](std::size_t count) {
    std::vector<std::byte> bytes(count);
    for (auto& b : bytes) b = std::byte(next_byte++);
    return bytes;
  };

  for (int step = 0; step < 200'000; step++) {
    switch (rng() % 4) {
      case 0: {  // append
        const auto bytes = next_pattern(rng() % (capacity + 1));
        const std::size_t appended = ring->append(bytes);
        const uint64_t room = capacity - (model_tail - model_acked);
        REQUIRE(appended == std::min<uint64_t>(bytes.size(), room));
        model.insert(model.end(), bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(appended));
        model_tail += appended;
        break;
      }
      case 1: {  // claim, write, commit part (or abort)
        const std::size_t want = 1 + rng() % claim_max;
        auto span = ring->claim(want);
        const bool fits = model_tail + want - model_acked <= capacity;
        REQUIRE(span.empty() == !fits);
        if (span.empty()) break;
        REQUIRE(span.size() == want);
        const auto bytes = next_pattern(want);
        std::memcpy(span.data(), bytes.data(), want);
        if (rng() % 8 == 0) {
          ring->abort();
          break;
        }
        const std::size_t used = rng() % (want + 1);
        ring->commit(used);
        model.insert(model.end(), bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(used));
        model_tail += used;
        break;
      }
      case 2: {  // ack a random position around the held range
        const uint64_t low = model_acked > capacity ? model_acked - capacity : 0;
        const uint64_t position = low + rng() % (model_tail + 3 - low);
        auto acked = ring->ack(position);
        if (position > model_tail) {
          REQUIRE(!acked.ok());
          REQUIRE(acked.error() == ReplayError::ack_ahead);
        } else if (position <= model_acked) {
          REQUIRE(acked.ok());
          REQUIRE(acked.value() == 0);
        } else {
          REQUIRE(acked.ok());
          REQUIRE(acked.value() == position - model_acked);
          model.erase(model.begin(), model.begin() + static_cast<std::ptrdiff_t>(position - model_acked));
          model_acked = position;
        }
        break;
      }
      case 3: {  // re-read a random range
        const uint64_t low = model_acked > 4 ? model_acked - 4 : 0;
        const uint64_t from = low + rng() % (model_tail + 3 - low);
        const std::size_t max = rng() % (capacity + 2);
        auto spans = ring->read(from, max);
        if (from < model_acked) {
          REQUIRE(!spans.ok());
          REQUIRE(spans.error() == ReplayError::position_gone);
        } else if (from > model_tail) {
          REQUIRE(!spans.ok());
          REQUIRE(spans.error() == ReplayError::position_ahead);
        } else {
          REQUIRE(spans.ok());
          const auto got = gather(spans.value());
          const std::size_t expected_size = static_cast<std::size_t>(std::min<uint64_t>(model_tail - from, max));
          REQUIRE(got.size() == expected_size);
          const auto begin = model.begin() + static_cast<std::ptrdiff_t>(from - model_acked);
          REQUIRE(std::equal(got.begin(), got.end(), begin));
        }
        break;
      }
    }
    REQUIRE(ring->tail() == model_tail);
    REQUIRE(ring->acked() == model_acked);
    REQUIRE(ring->invariant());
  }
  CHECK(model_tail > 10 * capacity);  // the run wrapped many times
}
