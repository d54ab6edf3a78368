// What this kernel's io_uring offers, found at run time by trying each thing on rings of
// the probe's own: the set-up flags the engine asks for, the registered ring fd, the
// opcodes (IORING_REGISTER_PROBE), the feature bits of io_uring_setup, a provided-buffer
// ring, and a multishot accept and a multishot receive on a 127.0.0.1 connection. The
// tools' --version prints it, so that a user sees what the engine can use on this machine
// and why a feature is absent. Any thread; blocks for at most probe_wait_ns_max per
// loopback completion.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ringmux::tools {

// A loopback connection's completions come within microseconds; a second leaves room for
// a loaded machine and still answers --version promptly when one never comes.
inline constexpr uint64_t probe_wait_ns_max = 1'000'000'000;

enum class Presence : uint8_t {
  present,
  absent,   // the kernel refused it (EINVAL, or the bit or opcode is missing)
  unknown,  // could not be tried: no ring at all, or an unrelated error (detail says which)
};

// How the engine relies on a feature.
enum class EngineUse : uint8_t {
  required,      // Loop or Socket fails without it
  when_present,  // probed by the engine, which falls back without it
  unused,        // reported for the reader; this version of the engine does not use it
};

struct UringFeature {
  std::string_view name;  // "multishot recv"
  EngineUse use = EngineUse::unused;
  Presence presence = Presence::unknown;
  std::string detail;  // for absent and unknown: the cause, e.g. "Invalid argument (EINVAL)"
};

struct UringProbe {
  std::string kernel;  // "Linux 6.1.0-13-amd64 x86_64"
  std::vector<UringFeature> features;  // the ring itself first
};

// Tries every feature once. Never fails: what cannot be tried is `unknown`, with why.
UringProbe probe_uring();

std::string_view presence_name(Presence presence) noexcept;
std::string_view engine_use_name(EngineUse use) noexcept;

}  // namespace ringmux::tools
