// The fault model of ringmux-chaos: which faults exist, which direction of a proxied
// connection pair each one acts on, their limits, and the check of a fault set.
//
// A pair is one accepted client connection and the proxy's connection to the upstream.
// "up" is client to upstream, "down" is upstream to client. reset-every and cut-every act
// on whole pairs; every other fault acts on one direction (a lane) and is set per lane.
// Plain values and pure functions: any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace ringmux::chaos {

enum class Direction : uint8_t {
  both,  // up and down
  up,    // client to upstream
  down,  // upstream to client
};

// Bytes a pair holds per direction before it stops reading that side, so that a slow
// receiver back-pressures its sender instead of growing the proxy. 256 KiB covers the
// bandwidth-delay product of loopback at test rates and keeps 256 pairs within 128 MiB.
inline constexpr uint32_t lane_bytes = 256u << 10;
static_assert((lane_bytes & (lane_bytes - 1)) == 0, "a lane is a ring addressed by position & mask");

// A slice is one send; a slice larger than a lane could never be filled.
inline constexpr uint32_t slice_bytes_max = lane_bytes;

// Latency and jitter above 10 s hold a lane for longer than any test or TCP retransmit
// timer cares about; such a value is much more likely a typo (100s for 100ms).
inline constexpr uint64_t latency_ns_max = 10'000'000'000;
inline constexpr uint64_t jitter_ns_max = 10'000'000'000;

// Loopback moves a few GiB/s at most. The cap keeps the token bucket's arithmetic
// (burst window in ns times bytes per second) far inside 64 bits.
inline constexpr uint64_t bandwidth_bytes_per_s_max = 64ull << 30;

// Faults of one direction of every pair. Zero (or none) turns a fault off.
struct LaneFaults {
  // Cut the pair (orderly close, both sides) once this many bytes have been forwarded in
  // this direction; the bytes up to the cut are delivered. 0: never.
  uint64_t cut_after_bytes = 0;
  // Each chunk read from the source is held for latency_ns plus a uniform draw in
  // [0, jitter_ns]. A chunk never overtakes its predecessor: order is preserved.
  uint64_t latency_ns = 0;
  uint64_t jitter_ns = 0;
  // Token bucket per pair and direction; bursts of at most 10 ms worth. 0: unlimited.
  uint64_t bandwidth_bytes_per_s = 0;
  // Each send carries a uniform draw of [slice_bytes_min, slice_bytes_max] bytes (fewer
  // when fewer are ready). 0: send whatever is ready.
  uint32_t slice_bytes_min = 0;
  uint32_t slice_bytes_max = 0;
  // From this long after the pair was accepted, bytes in this direction are read and
  // discarded (the sender's writes keep succeeding, nothing arrives, no FIN either).
  // none: never; 0: from the start.
  std::optional<uint64_t> blackhole_after_ns;
  // Each forwarded byte has one random bit flipped with this probability, in [0, 1].
  double corrupt_probability = 0;
};

struct Faults {
  // Each pair is aborted with RST on both sides this long after it was accepted (a
  // client that reconnects is thus reset every period). 0: never.
  uint64_t reset_every_ns = 0;
  // Each pair is closed in order (FIN on both sides) this long after it was accepted.
  uint64_t cut_every_ns = 0;
  LaneFaults up;
  LaneFaults down;
};

// Why `faults` cannot run (a limit exceeded, slice min above max, a probability outside
// [0, 1]), or none. The message names the field as the command line spells it.
std::optional<std::string> check_faults(const Faults& faults);

}  // namespace ringmux::chaos
