#include "tools/chaos/faults.h"

#include <cmath>

namespace ringmux::chaos {

namespace {

std::optional<std::string> check_lane(const LaneFaults& lane, const char* name) {
  auto fail = [&](const std::string& option, const std::string& why) {
    return std::optional<std::string>("option '" + option + "' (" + name + "): " + why);
  };
  if (lane.latency_ns > latency_ns_max) return fail("--latency", "above the 10 s limit");
  if (lane.jitter_ns > jitter_ns_max) return fail("--jitter", "above the 10 s limit");
  if (lane.bandwidth_bytes_per_s > bandwidth_bytes_per_s_max) {
    return fail("--bandwidth", "above the " + std::to_string(bandwidth_bytes_per_s_max) + " bytes/s limit");
  }
  if ((lane.slice_bytes_min == 0) != (lane.slice_bytes_max == 0)) {
    return fail("--slice", "min and max must both be set or both be 0");
  }
  if (lane.slice_bytes_min > lane.slice_bytes_max) {
    return fail("--slice", "min " + std::to_string(lane.slice_bytes_min) + " is above max " +
                               std::to_string(lane.slice_bytes_max));
  }
  if (lane.slice_bytes_max > slice_bytes_max) {
    return fail("--slice", "max is above the lane size of " + std::to_string(slice_bytes_max) + " bytes");
  }
  if (!(lane.corrupt_probability >= 0 && lane.corrupt_probability <= 1)) {  // also rejects NaN
    return fail("--corrupt", "the probability is outside [0, 1]");
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> check_faults(const Faults& faults) {
  if (auto error = check_lane(faults.up, "up")) return error;
  return check_lane(faults.down, "down");
}

}  // namespace ringmux::chaos
