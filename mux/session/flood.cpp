#include "ringmux/mux/session/flood.h"

#include "ringmux/base/assert.h"

namespace ringmux::mux {

std::string_view flood_frames(FloodKind kind) noexcept {
  switch (kind) {
    case FloodKind::resets: return "RESET/ERROR frames";
    case FloodKind::empty_data: return "empty DATA frames";
    case FloodKind::pings: return "PING/PONG frames";
    case FloodKind::credits: return "CREDIT frames";
    case FloodKind::goaways: return "GOAWAY frames";
    case FloodKind::ignorable: return "ignorable unknown frames";
  }
  return "frames";
}

std::string flood_message(FloodKind kind, uint32_t per_second) {
  return "flood: " + std::string(flood_frames(kind)) + " over " + std::to_string(per_second) + " per second";
}

FloodGuard::FloodGuard(const FloodLimits& limits) noexcept : limits_(limits) {
  for (std::size_t k = 0; k < flood_kinds; k++) {
    RM_ASSERT(limits_.per_second[k] > 0);
    interval_ns_[k] = burst_ns / limits_.per_second[k];
    RM_ASSERT(interval_ns_[k] > 0);  // at most 10^9 per second
  }
}

}  // namespace ringmux::mux
