#include "ringmux/engine/wake_word.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>

#include "ringmux/base/assert.h"

namespace ringmux::engine {

// The word is private to the process: FUTEX_PRIVATE_FLAG spares the kernel the lookup of a
// shared mapping. FUTEX_WAIT_BITSET takes an absolute timeout on CLOCK_MONOTONIC, the
// clock of every deadline in ringmux, so a sleep that a signal interrupts resumes with the
// same deadline and needs no arithmetic.
bool WakeWord::wait(uint32_t key, uint64_t deadline_ns) noexcept {
  timespec deadline{};
  timespec* timeout = nullptr;
  if (deadline_ns != 0) {
    deadline.tv_sec = static_cast<time_t>(deadline_ns / 1'000'000'000u);
    deadline.tv_nsec = static_cast<long>(deadline_ns % 1'000'000'000u);
    timeout = &deadline;
  }
  sleeps_.fetch_add(1, std::memory_order_relaxed);
  const long rc = syscall(SYS_futex, &word_, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, key, timeout, nullptr,
                          FUTEX_BITSET_MATCH_ANY);
  if (rc == 0) return true;
  // EAGAIN: the word changed before the kernel looked (a wake came first); EINTR: a signal.
  RM_ASSERT(errno == ETIMEDOUT || errno == EAGAIN || errno == EINTR);
  if (errno != ETIMEDOUT) return true;
  timeouts_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

void WakeWord::wake_sleeper() noexcept {
  wakes_.fetch_add(1, std::memory_order_relaxed);
  // One sleeper at a time: waking one is waking all.
  const long rc = syscall(SYS_futex, &word_, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, 1, nullptr, nullptr, 0);
  RM_ASSERT(rc >= 0);
}

}  // namespace ringmux::engine
