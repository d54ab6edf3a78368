// The open-loop schedule of ringmux-loadgen (tools/loadgen/pacer.h), shared by both
// engines: operations fall due on schedule whatever the target does, late ones start in
// order with their due times kept, the backlog of late ones is bounded, and the schedule
// ends by the clock however far behind the target is.
#include <doctest/doctest.h>

#include <algorithm>
#include <vector>

#include "tools/loadgen/pacer.h"

using namespace ringmux::loadgen;

namespace {

constexpr uint64_t ms = 1'000'000;
constexpr uint64_t us = 1'000;

// Every operation `pacer` started and dropped, and those waiting, add up to those fallen due.
void check_accounting(const Pacer& pacer, uint64_t fallen_due) {
  CHECK(pacer.started() + pacer.dropped() + pacer.backlog() == fallen_due);
}

// A runner with one slot (iodepth=1) against a target that takes `service_ns` per call,
// driven by the pacer until it says the schedule is over: what the tcp engine's sender does.
struct Simulated {
  uint64_t end_ns = 0;
  std::vector<uint64_t> latency_ns;
};
Simulated run_one_slot(Pacer& pacer, uint64_t service_ns) {
  Simulated out;
  uint64_t now = 0;
  for (int step = 0; step < 10'000'000 && !pacer.over(now); step++) {
    const auto due = pacer.take(now);
    if (!due) {
      if (!pacer.over(now)) now = pacer.wake_ns();
      continue;
    }
    now += service_ns;  // the call's round trip, then the slot is free
    out.latency_ns.push_back(now - *due);
  }
  pacer.stop(now);
  out.end_ns = now;
  return out;
}

}  // namespace

TEST_CASE("pacer: a target that keeps up gets one operation per interval, on time") {
  Pacer pacer(1000, 0, 10 * ms);
  CHECK(pacer.interval_ns() == 1 * ms);
  uint64_t now = 0;
  std::vector<uint64_t> dues;
  while (!pacer.over(now)) {
    if (auto due = pacer.take(now)) {
      dues.push_back(*due);
      continue;
    }
    CHECK(pacer.wake_ns() > now);
    now = pacer.wake_ns();
  }
  // Nothing falls due at or after the end: 0, 1, ..., 9 ms.
  REQUIRE(dues.size() == 10);
  for (std::size_t k = 0; k < dues.size(); k++) CHECK(dues[k] == k * ms);
  CHECK(pacer.dropped() == 0);
  check_accounting(pacer, 10);
  // Over by the clock; the take that finds it so ends the schedule.
  CHECK(pacer.wake_ns() == 10 * ms);
  CHECK_FALSE(pacer.take(now).has_value());
  CHECK(pacer.wake_ns() == UINT64_MAX);
}

TEST_CASE("pacer: late operations start in order and keep their due times") {
  Pacer pacer(1000, 0, UINT64_MAX);
  // Nobody took anything for 5.5 ms: six operations are due, the oldest first.
  for (uint64_t k = 0; k < 6; k++) {
    auto due = pacer.take(5 * ms + 500 * us);
    REQUIRE(due.has_value());
    CHECK(*due == k * ms);
  }
  CHECK_FALSE(pacer.take(5 * ms + 500 * us).has_value());
  CHECK(pacer.wake_ns() == 6 * ms);
  check_accounting(pacer, 6);
}

TEST_CASE("pacer: the backlog is bounded; operations falling due while it is full are dropped") {
  Pacer pacer(1'000'000, 0, UINT64_MAX, 4);  // 1 us apart, at most 4 waiting
  // 101 operations are due at 100 us: the 4 oldest wait, 97 are dropped.
  auto due = pacer.take(100 * us);
  REQUIRE(due.has_value());
  CHECK(*due == 0);
  CHECK(pacer.backlog() == 3);
  CHECK(pacer.dropped() == 97);
  check_accounting(pacer, 101);
  // A slot frees at 101 us: the next waiting one (due at 1 us), and the one due at 101 us
  // joins the backlog in the place the start made.
  due = pacer.take(101 * us);
  REQUIRE(due.has_value());
  CHECK(*due == 1 * us);
  CHECK(pacer.backlog() == 3);
  CHECK(pacer.dropped() == 97);
  check_accounting(pacer, 102);
}

TEST_CASE("pacer: the schedule ends by the clock, and a long absence costs no loop") {
  // 100 M operations/s, and the runner comes back an hour later: counted in one step.
  Pacer pacer(100'000'000, 0, 300 * ms);
  CHECK_FALSE(pacer.take(3'600'000 * ms).has_value());
  CHECK(pacer.over(3'600'000 * ms));
  CHECK(pacer.started() == 0);
  CHECK(pacer.dropped() == 30'000'000);  // every operation of the 300 ms, none after
  check_accounting(pacer, 30'000'000);
  CHECK(pacer.wake_ns() == UINT64_MAX);
}

TEST_CASE("pacer: stop() drops what waits, once, and nothing falls due after it") {
  Pacer pacer(1000, 0, UINT64_MAX);
  CHECK(pacer.take(2 * ms).has_value());  // due 0; 1 and 2 ms wait
  pacer.stop(2 * ms);
  CHECK(pacer.dropped() == 2);
  pacer.stop(50 * ms);
  CHECK(pacer.dropped() == 2);
  CHECK_FALSE(pacer.take(60 * ms).has_value());
  CHECK(pacer.over(60 * ms));
  check_accounting(pacer, 3);
}

TEST_CASE("pacer: one slot at 1 M calls/s against a 150 us target ends with its 300 ms runtime") {
  // The tcp engine's old sender went on until it had sent every call due in the window:
  // 300,000 calls at 150 us each, 45 s. By the clock it ends at 300 ms (plus the call in
  // flight), the rest counted as dropped, the queueing visible in the latency.
  Pacer pacer(1'000'000, 0, 300 * ms);
  const Simulated run = run_one_slot(pacer, 150 * us);
  CHECK(run.end_ns <= 300 * ms + 150 * us);
  CHECK(pacer.started() == run.latency_ns.size());
  CHECK(pacer.started() == 2000);
  CHECK(pacer.started() + pacer.dropped() == 300'000);
  std::vector<uint64_t> sorted = run.latency_ns;
  std::sort(sorted.begin(), sorted.end());
  // Each call waits behind the backlog: far above the 150 us of the call itself.
  CHECK(sorted[sorted.size() / 2] > 100 * ms);
}
