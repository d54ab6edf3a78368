// Base vocabulary: Result, error codes and their std::error_code bridge, errno mapping,
// and the timer heap against a reference model.
#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <random>
#include <string>
#include <system_error>
#include <vector>

#include "ringmux/engine/errors.h"
#include "ringmux/base/result.h"
#include "ringmux/engine/timer.h"
#include "tests/support.h"

using namespace ringmux;
using namespace ringmux::engine;

// Proves Result holds exactly one side, moves its value, and keeps the error code.
TEST_CASE("base: Result holds a value or an error") {
  Result<std::unique_ptr<int>, IoError> good(std::make_unique<int>(7));
  REQUIRE(good.ok());
  CHECK(*good.value() == 7);
  std::unique_ptr<int> taken = std::move(good).value();
  CHECK(*taken == 7);

  Result<std::string, IoError> bad(Err{IoError::refused});
  REQUIRE(!bad.ok());
  CHECK(bad.error() == IoError::refused);

  Result<void, IoError> done;
  CHECK(done.ok());
  Result<void, IoError> failed(Err{IoError::timed_out});
  CHECK(failed.error() == IoError::timed_out);
}

// Proves IoError converts to std::error_code with its own category and a readable message.
TEST_CASE("base: IoError is a std::error_code") {
  const std::error_code code = IoError::reset;
  CHECK(code.value() == static_cast<int>(IoError::reset));
  CHECK(std::string(code.category().name()) == "ringmux.io");
  CHECK(code.message() == "connection reset by peer");
  CHECK(code != std::error_code(IoError::refused));
  CHECK(scope_of(IoError::reset) == Scope::connection);
  CHECK(scope_of(IoError::not_supported) == Scope::fatal);
}

// Proves the one errno switch maps the errors the engine can meet.
TEST_CASE("base: errno mapping") {
  CHECK(io_error_from_errno(ECONNRESET) == IoError::reset);
  CHECK(io_error_from_errno(EPIPE) == IoError::reset);
  CHECK(io_error_from_errno(ECONNREFUSED) == IoError::refused);
  CHECK(io_error_from_errno(ETIMEDOUT) == IoError::timed_out);
  CHECK(io_error_from_errno(ECANCELED) == IoError::canceled);
  CHECK(io_error_from_errno(EHOSTUNREACH) == IoError::unreachable);
  CHECK(io_error_from_errno(EADDRINUSE) == IoError::address_in_use);
  CHECK(io_error_from_errno(EMFILE) == IoError::too_many_files);
  CHECK(io_error_from_errno(ENOMEM) == IoError::no_memory);
  CHECK(io_error_from_errno(EACCES) == IoError::permission_denied);
  CHECK(io_error_from_errno(EXDEV) == IoError::other);
}

// Proves the timer heap fires exactly the armed timers, in deadline order, under random
// arm / re-arm / disarm sequences checked against a sorted reference.
TEST_CASE("base: timer heap matches a reference model under random operations") {
  const uint64_t seed = test::test_seed("timer heap model");
  std::mt19937_64 rng(seed);
  struct Entry {
    Timer timer;
    uint64_t deadline = 0;
    bool armed = false;
    std::vector<int>* fired = nullptr;
    int id = 0;
  };
  std::vector<int> fired;
  std::vector<std::unique_ptr<Entry>> entries;
  for (int i = 0; i < 200; i++) {
    auto entry = std::make_unique<Entry>();
    entry->id = i;
    entry->fired = &fired;
    entry->timer.set_callback([](Timer& t) noexcept {
      auto* e = static_cast<Entry*>(t.context());
      e->fired->push_back(e->id);
    }, entry.get());
    entries.push_back(std::move(entry));
  }
  TimerHeap heap;
  for (int step = 0; step < 20000; step++) {
    Entry& e = *entries[rng() % entries.size()];
    if (rng() % 3 == 0) {
      heap.disarm(e.timer);
      e.armed = false;
    } else {
      e.deadline = rng() % 100000;
      heap.arm(e.timer, e.deadline);
      e.armed = true;
    }
    REQUIRE(e.timer.armed() == e.armed);
  }
  std::vector<std::pair<uint64_t, int>> expected;
  for (auto& e : entries) {
    if (e->armed) expected.emplace_back(e->deadline, e->id);
  }
  std::sort(expected.begin(), expected.end());
  CHECK(heap.size() == expected.size());
  heap.fire_expired(UINT64_MAX, 100000);
  REQUIRE(fired.size() == expected.size());
  for (std::size_t i = 0; i < fired.size(); i++) {
    // Equal deadlines may fire in any order; deadlines must not decrease.
    CHECK(entries[fired[i]]->deadline == expected[i].first);
  }
  CHECK(heap.size() == 0);
}
