// WakeWord: one thread sleeps until another has published something for it, with a
// deadline; the sleeper is woken by the kernel (a futex on one 32-bit word), never by
// polling. An event count: the word holds an epoch (bits 1..31, bumped by every wake())
// and a "sleeper waiting" bit (bit 0).
//
// The sleeper's pattern, for a condition the wakers make true before they call wake():
//
//   while (!condition()) {
//     const uint32_t key = word.prepare();          // announce: from here, wakes count
//     if (condition()) { word.withdraw(); break; }  // published before the announcement
//     if (!word.wait(key, deadline_ns)) { word.withdraw(); ...deadline... }
//   }
//
// No wake is lost: prepare() and wake() are read-modify-writes of the same word, so one
// of them sees the other. If wake() comes first, prepare() reads its epoch and, through it,
// what was published before it (the check after prepare() finds it); if prepare() comes
// first, wake() sees the waiting bit and calls into the kernel, and wait() either finds
// the epoch changed or is woken. wake() clears the bit, so a burst of wakes costs one
// syscall and a waker finding no sleeper costs one atomic operation and no syscall.
//
// Threads: one sleeper at a time (prepare / withdraw / wait); any thread may wake().
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace ringmux::engine {

// A hint to the core that this thread is spinning (lets a sibling hyperthread run).
inline void spin_pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Looks for `ready()` for up to `spin_ns` before a sleeper sleeps on its word: an event often
// microseconds away costs less found this way than by a sleep and a wake-up. Returns
// ready(). The one spin of the sleepers (worker streams, the worker pool).
template <typename Ready>
bool spin_until(Ready&& ready, uint64_t spin_ns) noexcept {
  if (ready()) return true;
  if (spin_ns == 0) return false;
  const auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(spin_ns);
  do {
    for (int i = 0; i < 64; i++) {
      if (ready()) return true;
      spin_pause();
    }
  } while (std::chrono::steady_clock::now() < until);
  return ready();
}

class WakeWord {
 public:
  WakeWord() = default;
  WakeWord(const WakeWord&) = delete;
  WakeWord& operator=(const WakeWord&) = delete;

  // ---- the sleeper ----

  // Announces the sleeper and returns the key for wait(). The caller then checks its
  // condition once more and either sleeps or withdraws.
  uint32_t prepare() noexcept { return word_.fetch_or(waiting_bit, std::memory_order_acq_rel) | waiting_bit; }
  // The condition held after prepare() (or the sleep is given up): no wake is wanted.
  void withdraw() noexcept { word_.fetch_and(~waiting_bit, std::memory_order_relaxed); }
  // Sleeps until a wake() after the prepare() that returned `key`, or until `deadline_ns`
  // (CLOCK_MONOTONIC, as engine::Loop::clock_ns; 0 = none). Returns false when the deadline
  // passed, true otherwise (woken, the word changed already, or a signal): the caller
  // checks its condition again either way. Counted in sleeps().
  bool wait(uint32_t key, uint64_t deadline_ns) noexcept;

  // ---- any thread, after publishing ----

  // Bumps the epoch and wakes the sleeper if one is announced. Returns whether it made the
  // syscall (a sleeper was waiting), counted in wakes().
  bool wake() noexcept {
    uint32_t word = word_.load(std::memory_order_relaxed);
    while (!word_.compare_exchange_weak(word, (word + epoch_step) & ~waiting_bit, std::memory_order_acq_rel,
                                        std::memory_order_relaxed)) {
    }
    if ((word & waiting_bit) == 0) return false;
    wake_sleeper();
    return true;
  }

  // Counters (any thread may read them; approximate while the threads run).
  uint64_t sleeps() const noexcept { return sleeps_.load(std::memory_order_relaxed); }
  uint64_t timeouts() const noexcept { return timeouts_.load(std::memory_order_relaxed); }
  uint64_t wakes() const noexcept { return wakes_.load(std::memory_order_relaxed); }

 private:
  static constexpr uint32_t waiting_bit = 1;
  static constexpr uint32_t epoch_step = 2;
  void wake_sleeper() noexcept;

  std::atomic<uint32_t> word_{0};
  // Counted only on the paths that make a syscall anyway; read by tests and statistics.
  std::atomic<uint64_t> sleeps_{0};
  std::atomic<uint64_t> timeouts_{0};
  std::atomic<uint64_t> wakes_{0};
};

}  // namespace ringmux::engine
