// Helpers shared by the tests: seeds for randomised tests, io_uring availability, a raw
// loopback socket.
//
// Every randomised test takes its seed from test_seed(), which prints it; set
// RINGMUX_SEED=N to replay a run. Tests call make_test_loop() and return early with a
// "skipped" message when the kernel has no io_uring (never the case on the project's
// machines, where they must run).
#pragma once

#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <utility>

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

// A TCP socket bound to 127.0.0.1 on a free port (listening when `backlog` > 0): its fd
// and port. The test closes the fd.
inline std::pair<int, uint16_t> bound_socket(int backlog) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
  if (backlog > 0) REQUIRE(::listen(fd, backlog) == 0);
  socklen_t length = sizeof(address);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
  return {fd, ntohs(address.sin_port)};
}

}  // namespace ringmux::test
