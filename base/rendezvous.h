// Rendezvous: one result handed from one thread to one waiting thread (an atomic flag
// with wait/notify; no lock). Used through engine::Loop::run_and_wait.
//
// Keep it in a shared_ptr held by both sides: the delivering thread may still be inside
// notify_one() when the waiter, woken, returns and lets go of it.
#pragma once

#include <atomic>
#include <cstdint>
#include <utility>

#include "ringmux/base/assert.h"

namespace ringmux {

template <typename T>
class Rendezvous {
 public:
  // Once.
  void deliver(T value) {
    RM_ASSERT(done_.load(std::memory_order_relaxed) == 0);
    result_ = std::move(value);
    done_.store(1, std::memory_order_release);
    done_.notify_one();
  }
  // Blocks until deliver() has run; once.
  T wait() {
    done_.wait(0, std::memory_order_acquire);
    return std::move(result_);
  }

 private:
  T result_{};
  std::atomic<uint32_t> done_{0};
};

}  // namespace ringmux
