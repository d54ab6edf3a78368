// Helpers shared by the tests: seeds for randomised tests, io_uring availability.
//
// Every randomised test takes its seed from test_seed(), which prints it; set
// RINGMUX_SEED=N to replay a run. Tests call make_test_loop() and return early with a
// "skipped" message when the kernel has no io_uring (never the case on the project's
// machines, where they must run).
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>

#include "ringmux/engine/loop.h"

namespace ringmux::test {

inline uint64_t test_seed(const char* test_name) {
  uint64_t seed = 0;
  if (const char* env = std::getenv("RINGMUX_SEED"); env != nullptr && *env != '\0') {
    seed = std::strtoull(env, nullptr, 10);
  } else {
    seed = std::random_device{}();
    seed = (seed << 32) ^ std::random_device{}();
  }
  std::printf("%s: seed=%llu (replay with RINGMUX_SEED=%llu)\n", test_name, static_cast<unsigned long long>(seed),
              static_cast<unsigned long long>(seed));
  return seed;
}

// A loop for the calling thread, or nullptr (and a "skipped" message) without io_uring.
inline std::unique_ptr<engine::Loop> make_test_loop(const engine::LoopOptions& options = {}) {
  auto created = engine::Loop::create(options);
  if (!created) {
    if (created.error() == engine::IoError::not_supported) {
      MESSAGE("skipped: this kernel has no usable io_uring");
      return nullptr;
    }
    FAIL("Loop::create failed: " << engine::describe(created.error()));
  }
  return std::move(created).value();
}

}  // namespace ringmux::test
