// SlotRing: full and empty as return values, claim/commit/abort and acquire/release in
// place, positions that keep counting past the capacity, and one producer thread
// against one consumer thread (run under ThreadSanitizer by .ci/run).
#include "ringmux/mux/workers/slot_ring.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <thread>

#include "tests/support.h"

using ringmux::mux::SlotRing;

// Proves a ring of 4 holds exactly 4, says full and empty by nullptr, and hands slots out
// in order, in place.
TEST_CASE("slot ring: full and empty are return values; slots are used in place") {
  SlotRing<uint64_t> ring(4);
  CHECK(ring.acquire() == nullptr);
  for (uint64_t i = 0; i < 4; i++) {
    uint64_t* slot = ring.claim();
    REQUIRE(slot != nullptr);
    *slot = 100 + i;
    ring.commit();
  }
  CHECK(ring.claim() == nullptr);
  CHECK(ring.size_approx() == 4);
  const uint64_t* first = ring.acquire();
  REQUIRE(first != nullptr);
  CHECK(*first == 100);
  CHECK(ring.acquire() == first);  // acquiring again before release: the same slot
  ring.release();
  uint64_t* reused = ring.claim();
  REQUIRE(reused != nullptr);
  CHECK(reused == first);  // the released slot is the one the producer gets back
  *reused = 104;
  ring.commit();
  for (uint64_t want = 101; want <= 104; want++) {
    const uint64_t* slot = ring.acquire();
    REQUIRE(slot != nullptr);
    CHECK(*slot == want);
    ring.release();
  }
  CHECK(ring.acquire() == nullptr);
  CHECK(ring.committed_position() == 5);
  CHECK(ring.released_position() == 5);
}

// Proves abort gives the claimed slot back unpublished.
TEST_CASE("slot ring: abort publishes nothing") {
  SlotRing<int> ring(2);
  int* slot = ring.claim();
  REQUIRE(slot != nullptr);
  *slot = 7;
  ring.abort();
  CHECK(ring.acquire() == nullptr);
  CHECK(ring.claim() == slot);
  *slot = 8;
  ring.commit();
  REQUIRE(ring.acquire() != nullptr);
  CHECK(*ring.acquire() == 8);
}

// Proves positions keep counting across many laps of the ring, never resetting.
TEST_CASE("slot ring: positions run past the capacity without wrapping") {
  SlotRing<uint64_t> ring(8);
  for (uint64_t i = 0; i < 100000; i++) {
    uint64_t* slot = ring.claim();
    REQUIRE(slot != nullptr);
    *slot = i;
    ring.commit();
    if (i % 3 == 2) {
      for (int k = 0; k < 3; k++) {
        const uint64_t* read = ring.acquire();
        REQUIRE(read != nullptr);
        CHECK(*read == i - 2 + static_cast<uint64_t>(k));
        ring.release();
      }
    }
  }
  CHECK(ring.committed_position() == 100000);
}

// Proves the ring is a correct SPSC channel across threads: 2 million sequence numbers
// arrive once each, in order, with random bursts on both sides.
TEST_CASE("slot ring: one producer and one consumer thread, every value once and in order") {
  const uint64_t seed = ringmux::test::test_seed("slot ring cross-thread");
  constexpr uint64_t total = 2'000'000;
  SlotRing<uint64_t> ring(64);
  std::thread producer([&] {
    std::mt19937_64 rng(seed);
    uint64_t next = 0;
    while (next < total) {
      const uint64_t burst = 1 + rng() % 100;
      for (uint64_t i = 0; i < burst && next < total; i++) {
        uint64_t* slot = ring.claim();
        if (slot == nullptr) {
          std::this_thread::yield();
          break;
        }
        *slot = next++;
        ring.commit();
      }
    }
  });
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);
  uint64_t expected = 0;
  uint64_t out_of_order = 0;
  while (expected < total) {
    const uint64_t burst = 1 + rng() % 100;
    for (uint64_t i = 0; i < burst; i++) {
      const uint64_t* slot = ring.acquire();
      if (slot == nullptr) {
        std::this_thread::yield();
        break;
      }
      if (*slot != expected) out_of_order++;
      expected++;
      ring.release();
    }
  }
  producer.join();
  CHECK(out_of_order == 0);
  CHECK(expected == total);
  CHECK(ring.acquire() == nullptr);
}
