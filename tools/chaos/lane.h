// Lane: one direction of a proxied pair (tools/chaos/proxy.h) with everything the faults
// keep per direction: the byte ring, the records of delayed chunks, the token bucket, the
// corruption cursor, and the seeded random sources. Also the tool's own assertion.
//
// Invariant (check_lane): sent_position <= released_position <= read_position <=
// sent_position + lane_bytes; the records cover exactly (released_position,
// read_position], so there are none exactly when released_position == read_position.
// Positions count bytes since the pair began and never wrap; slot = position & mask.
// Loop thread only; a lane belongs to its pair.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "tools/chaos/faults.h"

namespace ringmux::chaos {

// The chaos tool links nothing of the engine (it must not share the engine's bugs), so it
// carries its own always-on assertion for programmer errors.
[[noreturn]] inline void assert_fail(const char* expression, const char* file, int line) noexcept {
  std::fprintf(stderr, "%s:%d: assertion failed: %s\n", file, line, expression);
  std::abort();
}
#define CHAOS_ASSERT(cond) \
  (__builtin_expect(static_cast<bool>(cond), 1) ? (void)0 : assert_fail(#cond, __FILE__, __LINE__))

// Delayed chunks a lane can track. Only delayed chunks (latency or jitter) take a
// record; when the records run out the lane stops reading, as when its bytes do.
// 4096 covers a full lane of 64-byte reads.
inline constexpr uint32_t lane_records_max = 4096;
static_assert((lane_records_max & (lane_records_max - 1)) == 0, "records are a ring addressed by position & mask");
static_assert(lane_bytes / lane_records_max == 64);

// SplitMix64: small, fast, and the same sequence on every platform and library (the
// std distributions are not), so that a seed replays.
inline uint64_t mix64(uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

class Random {
 public:
  explicit Random(uint64_t seed) noexcept : state_(seed) {}
  uint64_t next() noexcept {
    const uint64_t x = state_;
    state_ += 0x9e3779b97f4a7c15ull;
    return mix64(x);  // mix64 adds the same constant first: this is SplitMix64
  }
  // Uniform in [0, bound); bound > 0. The modulo bias is below bound / 2^64, under 2^-30
  // for the largest bound used (10 s of jitter in ns).
  uint64_t below(uint64_t bound) noexcept { return next() % bound; }
  // Uniform in (0, 1].
  double unit_open_zero() noexcept { return static_cast<double>((next() >> 11) + 1) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

// Bytes to skip before the next corrupted byte: the number of failures before the first
// success of a Bernoulli(p) trial, drawn in O(1) so that p = 1e-6 costs one draw per
// million bytes rather than one per byte. 0 < p <= 1.
inline uint64_t geometric_skip(Random& random, double probability) noexcept {
  if (probability >= 1) return 0;
  const double skip = std::floor(std::log(random.unit_open_zero()) / std::log1p(-probability));
  constexpr double skip_max = 9.0e18;  // beyond any stream's length
  return skip >= skip_max ? static_cast<uint64_t>(skip_max) : static_cast<uint64_t>(skip);
}

struct ChunkRecord {
  uint64_t end_position = 0;  // the chunk is the bytes before this position
  uint64_t due_ns = 0;        // when it may be forwarded
};

// One direction of a pair: bytes read from the source socket into a ring, released when
// their delay is over, and sent to the destination socket. The invariant is above.
struct Lane {
  Lane(Direction lane_direction, uint64_t shape_seed, uint64_t corrupt_seed)
      : direction(lane_direction),
        ring(new std::byte[lane_bytes]),
        records(new ChunkRecord[lane_records_max]),
        shape_random(shape_seed),
        corrupt_random(corrupt_seed) {}

  Direction direction;  // up or down
  std::unique_ptr<std::byte[]> ring;
  std::unique_ptr<ChunkRecord[]> records;
  uint64_t read_position = 0;
  uint64_t released_position = 0;
  uint64_t sent_position = 0;
  uint64_t records_head = 0;  // position of the oldest record
  uint64_t records_tail = 0;  // position after the newest record
  uint64_t last_due_ns = 0;   // due time of the newest record ever pushed: order holds
  uint64_t forwarded_bytes = 0;
  bool source_eof = false;     // the source sent FIN (the lane reads no more)
  bool shutdown_sent = false;  // FIN passed on to the destination
  bool dest_blocked = false;   // the last send would block: wait for POLLOUT
  bool blackholed = false;
  uint64_t bucket_tat_ns = 0;  // token bucket: when it would be full again (GCRA)
  uint64_t next_flip_position = 0;
  uint64_t corrupt_checked_position = 0;  // bytes before it were considered for flips
  double corrupt_probability_in_use = 0;  // the probability next_flip_position was drawn with
  Random shape_random;    // jitter, slice sizes
  Random corrupt_random;  // flip positions and bits: depends on byte offsets only

  uint64_t held_bytes() const noexcept { return read_position - sent_position; }
  uint32_t record_count() const noexcept { return static_cast<uint32_t>(records_tail - records_head); }
  bool finished() const noexcept { return source_eof && (blackholed || shutdown_sent); }
  bool wants_read() const noexcept {
    return !source_eof && (blackholed || (held_bytes() < lane_bytes && record_count() < lane_records_max));
  }
};

inline void check_lane(const Lane& lane) {
  CHAOS_ASSERT(lane.sent_position <= lane.released_position);
  CHAOS_ASSERT(lane.released_position <= lane.read_position);
  CHAOS_ASSERT(lane.held_bytes() <= lane_bytes);
  CHAOS_ASSERT(lane.record_count() <= lane_records_max);
  CHAOS_ASSERT((lane.record_count() == 0) == (lane.released_position == lane.read_position));
  if (lane.record_count() > 0) {
    CHAOS_ASSERT(lane.records[(lane.records_tail - 1) & (lane_records_max - 1)].end_position == lane.read_position);
  }
}

}  // namespace ringmux::chaos
