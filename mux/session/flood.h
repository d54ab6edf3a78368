// FloodGuard: the per-connection limits on frames that are cheap to send and costly to
// handle (base/limits.h, "flood limits"), in one place.
//
// Each kind of frame has a rate in frames per second and a burst of one second's worth,
// kept as a generic cell rate: `due_ns_` is when the bucket would be empty again; a frame
// is admitted while that lies at most one second ahead of now, and moves it on by one
// frame's interval. One 64-bit word per kind, no division on the receive path.
//
// Sans I/O: the caller passes the time. Threads: one (the session's).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "ringmux/base/limits.h"

namespace ringmux::mux {

enum class FloodKind : uint8_t {
  resets,      // RESET, and stream-scoped ERROR that ends a stream
  empty_data,  // DATA with no payload and no END_STREAM
  pings,       // PING, and PONG we did not ask for
  credits,     // CREDIT
  goaways,     // GOAWAY
  ignorable,   // frames of ignorable unknown kinds
};
inline constexpr std::size_t flood_kinds = 6;

struct FloodLimits {
  std::array<uint32_t, flood_kinds> per_second{
      limits::peer_resets_per_second_max,   limits::empty_data_frames_per_second_max,
      limits::pings_per_second_max,         limits::credit_frames_per_second_max,
      limits::goaway_frames_per_second_max, limits::ignorable_frames_per_second_max,
  };
  uint32_t& operator[](FloodKind kind) noexcept { return per_second[static_cast<std::size_t>(kind)]; }
  uint32_t operator[](FloodKind kind) const noexcept { return per_second[static_cast<std::size_t>(kind)]; }
};

// What the kind counts, for messages: "RESET/ERROR frames".
std::string_view flood_frames(FloodKind kind) noexcept;
// "flood: RESET/ERROR frames over 10000 per second", for the ERROR frame and the logs.
std::string flood_message(FloodKind kind, uint32_t per_second);

class FloodGuard {
 public:
  explicit FloodGuard(const FloodLimits& limits = {}) noexcept;

  // Counts `count` frames of `kind` at `now_ns`; false when they pass the limit (the caller
  // closes the connection; the guard stays tripped).
  bool admit(FloodKind kind, uint64_t now_ns, uint32_t count = 1) noexcept {
    const std::size_t k = static_cast<std::size_t>(kind);
    uint64_t due = due_ns_[k] > now_ns ? due_ns_[k] : now_ns;
    due += interval_ns_[k] * count;
    due_ns_[k] = due;
    if (due - now_ns <= burst_ns) return true;
    tripped_ = kind;
    has_tripped_ = true;
    return false;
  }
  bool tripped() const noexcept { return has_tripped_; }
  FloodKind tripped_kind() const noexcept { return tripped_; }
  const FloodLimits& limits() const noexcept { return limits_; }

 private:
  static constexpr uint64_t burst_ns = 1'000'000'000;  // one second's worth
  FloodLimits limits_;
  std::array<uint64_t, flood_kinds> interval_ns_{};
  std::array<uint64_t, flood_kinds> due_ns_{};
  FloodKind tripped_ = FloodKind::resets;
  bool has_tripped_ = false;
};

}  // namespace ringmux::mux
