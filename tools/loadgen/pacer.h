// Pacer: the schedule of an open-loop job (rate_iops), the one both engines use.
//
// Operation k is due at start + k * interval (interval = 1 s / rate, at least 1 ns),
// whatever the target does. A runner takes due operations while it has a free slot (its
// iodepth); an operation whose time has passed waits in the backlog and, once started, its
// latency counts from its due time, so a slow target cannot hide its queueing (no
// coordinated omission). The backlog is bounded (pacer_backlog_max): an operation that
// falls due while it is full is dropped (counted, never started) instead of queued without
// end. The schedule ends by the clock, not by due times: from `until_ns` on nothing falls
// due or is taken, and the operations still waiting are dropped, so a target that cannot
// keep up never stretches a run past its runtime.
//
// Invariant: started + dropped + backlog == operations fallen due so far, and the backlog
// holds due times in increasing order. Pure logic: the caller passes the time
// (Loop::clock_ns()). One thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace ringmux::loadgen {

// Late operations an open-loop job keeps waiting for a free slot. A target this far behind
// is overloaded, which the dropped count says; the operations admitted still measure the
// queueing (each waits behind up to this many). 16 Ki due times are 128 KiB: 16 ms of
// schedule at 1 M calls/s, 1.6 s at 10 k calls/s, and a minute of backlog at 1 M calls/s
// would otherwise hold 480 MiB.
inline constexpr uint32_t pacer_backlog_max = 16 * 1024;

class Pacer {
 public:
  // The schedule of `rate_per_second` (> 0) operations from `start_ns` until `until_ns`
  // (UINT64_MAX: until stop()).
  Pacer(uint64_t rate_per_second, uint64_t start_ns, uint64_t until_ns, uint32_t backlog_max = pacer_backlog_max);

  // The due time of the oldest operation waiting at `now_ns`, which the caller starts now;
  // none when nothing is due yet, or the schedule is over (the backlog is then dropped).
  std::optional<uint64_t> take(uint64_t now_ns) noexcept;
  // When to look again with nothing waiting: the next due time, or the end of the schedule
  // if sooner; UINT64_MAX once stopped.
  uint64_t wake_ns() const noexcept;
  bool over(uint64_t now_ns) const noexcept { return stopped_ || now_ns >= until_ns_; }
  // Ends the schedule at `now_ns` (the runner stops for its own reasons: size reached,
  // errors, the window's end): what is waiting is dropped. Idempotent.
  void stop(uint64_t now_ns) noexcept;

  uint64_t started() const noexcept { return started_; }
  uint64_t dropped() const noexcept { return dropped_; }
  std::size_t backlog() const noexcept { return count_; }
  uint64_t interval_ns() const noexcept { return interval_ns_; }

 private:
  // Moves the operations due by `now_ns` (and before the end) into the backlog; those that
  // find it full are dropped.
  void admit(uint64_t now_ns) noexcept;
  void push(uint64_t due_ns) noexcept;
  uint64_t due_ns(uint64_t k) const noexcept { return start_ns_ + k * interval_ns_; }
  void check_invariant() const noexcept;

  uint64_t interval_ns_;
  uint64_t start_ns_;
  uint64_t until_ns_;
  uint32_t backlog_max_;
  std::vector<uint64_t> ring_;  // the backlog: count_ due times from head_; grows to backlog_max_
  std::size_t head_ = 0;
  std::size_t count_ = 0;
  uint64_t next_k_ = 0;  // the next operation to fall due
  uint64_t started_ = 0;
  uint64_t dropped_ = 0;
  bool stopped_ = false;
};

}  // namespace ringmux::loadgen
