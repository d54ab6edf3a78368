// Timer and TimerHeap: one-shot timers of a loop, kept in a binary min-heap by deadline.
//
// The loop never submits one io_uring timeout per timer: it passes the earliest deadline
// as the timeout of its one submit-and-wait per iteration, then runs what expired. A
// timer is owned by its user (usually embedded in a connection); the heap only points to
// it. Invariant: a timer is armed exactly when heap_index_ != npos, and then
// heap_[heap_index_] == this. Loop thread only.
#pragma once

#include <cstdint>
#include <vector>

namespace ringmux::engine {

class Timer {
 public:
  using Callback = void (*)(Timer& timer) noexcept;

  Timer() = default;
  Timer(Callback callback, void* context) noexcept : callback_(callback), context_(context) {}
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  bool armed() const noexcept { return heap_index_ != npos; }
  uint64_t deadline_ns() const noexcept { return deadline_ns_; }
  void* context() const noexcept { return context_; }
  void set_callback(Callback callback, void* context) noexcept {
    callback_ = callback;
    context_ = context;
  }

 private:
  friend class TimerHeap;
  static constexpr uint32_t npos = UINT32_MAX;

  Callback callback_ = nullptr;
  void* context_ = nullptr;
  uint64_t deadline_ns_ = 0;
  uint32_t heap_index_ = npos;
};

class TimerHeap {
 public:
  // Arms `timer` to fire at `deadline_ns` (monotonic clock); re-arms it if armed.
  void arm(Timer& timer, uint64_t deadline_ns);
  // Disarms `timer`; no effect when it is not armed.
  void disarm(Timer& timer) noexcept;
  // Earliest deadline, or UINT64_MAX when no timer is armed.
  uint64_t next_deadline_ns() const noexcept;
  // Fires the timers whose deadline is <= now_ns, earliest first, at most `budget` of them.
  // A callback may arm or disarm timers, including itself. Returns how many fired.
  uint32_t fire_expired(uint64_t now_ns, uint32_t budget) noexcept;
  std::size_t size() const noexcept { return heap_.size(); }

 private:
  void sift_up(uint32_t index) noexcept;
  void sift_down(uint32_t index) noexcept;
  void place(Timer* timer, uint32_t index) noexcept;
  void remove_at(uint32_t index) noexcept;
  void check_invariant() const noexcept;

  std::vector<Timer*> heap_;
};

}  // namespace ringmux::engine
