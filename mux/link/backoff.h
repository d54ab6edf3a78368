// Exponential backoff with jitter: the delay before each attempt of a redial (a link's
// resume redials, a cluster peer's new sessions), the one backoff of the code base.
//
// The n-th attempt since reset() waits a uniformly random time in [c/2, c] with
// c = min(max, min * 2^(n-1)): the ceiling doubles per failed attempt, and the jitter keeps
// many dialers that lost their peer at the same moment from redialling in lockstep. With
// `first_at_once` the first attempt after reset() goes at once (a transport that just broke
// is worth one immediate try). Loop thread only; no allocation.
#pragma once

#include <algorithm>
#include <cstdint>

#include "ringmux/base/assert.h"

namespace ringmux::mux {

class Backoff {
 public:
  // `seed` only spreads dialers apart (any bits; 0 is fine).
  Backoff(uint64_t min_ns, uint64_t max_ns, uint64_t seed, bool first_at_once) noexcept
      : min_ns_(min_ns), max_ns_(max_ns), state_(seed | 1), first_at_once_(first_at_once) {
    RM_ASSERT(min_ns > 0 && min_ns <= max_ns);
  }

  // The delay before the next attempt; counts the attempt.
  uint64_t next_delay_ns() noexcept {
    const uint32_t attempt = attempts_;
    if (attempts_ < UINT32_MAX) attempts_++;
    if (first_at_once_) {
      if (attempt == 0) return 0;
      return jittered(attempt - 1);
    }
    return jittered(attempt);
  }
  // A connection was made: the next attempt starts from the beginning again.
  void reset() noexcept { attempts_ = 0; }
  uint32_t attempts() const noexcept { return attempts_; }

 private:
  uint64_t jittered(uint32_t doublings) noexcept {
    // min << 30 already exceeds any sane maximum; the shift must not overflow.
    const uint64_t grown = min_ns_ << std::min<uint32_t>(doublings, 30);
    const uint64_t ceiling = grown >= min_ns_ ? std::min(max_ns_, grown) : max_ns_;
    state_ ^= state_ << 13;  // xorshift64: cheap, and jitter needs no more
    state_ ^= state_ >> 7;
    state_ ^= state_ << 17;
    const uint64_t delay = ceiling / 2 + state_ % (ceiling / 2 + 1);
    RM_ASSERT(delay >= ceiling / 2 && delay <= ceiling);
    return delay;
  }

  uint64_t min_ns_;
  uint64_t max_ns_;
  uint64_t state_;
  bool first_at_once_;
  uint32_t attempts_ = 0;
};

}  // namespace ringmux::mux
