// Engine: N loops, each on its own thread, optionally pinned to a core.
//
// Each loop is created on its own thread (SINGLE_ISSUER ties a ring to the thread that
// submits) and destroyed there too. Nothing owned by one loop is touched by another
// thread: work reaches a loop through Loop::post, which must not race with stop().
// start/stop/loop() are called by the thread that owns the Engine.
#pragma once

#include <pthread.h>

#include <cstdint>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "ringmux/engine/errors.h"
#include "ringmux/engine/loop.h"
#include "ringmux/base/result.h"

namespace ringmux::engine {

struct EngineOptions {
  uint32_t loop_count = 1;
  // cpus[i] is the core loop i is pinned to; empty means no pinning. When shorter than
  // loop_count, the remaining loops are not pinned.
  std::vector<int> cpus;
  LoopOptions loop;
};

class Engine {
 public:
  // Starts the loops and returns once every one of them is running or one failed to set
  // up (then all are stopped and the first error is returned: not_supported, no_memory,
  // permission_denied, address_invalid for a CPU that does not exist).
  static Result<std::unique_ptr<Engine>, IoError> start(const EngineOptions& options);
  // Stops and joins every loop. Work still posted is run before the loops exit.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  uint32_t loop_count() const noexcept { return static_cast<uint32_t>(slots_.size()); }
  // The loop itself may only be used from its own thread; from other threads use post.
  Loop& loop(uint32_t index) noexcept;
  template <typename F>
  void post(uint32_t index, F&& fn) {
    loop(index).post_fn(std::forward<F>(fn));
  }
  void stop() noexcept;
  // CPU time (user and system) that loop `index`'s thread has used so far: what a loop
  // costs, for per-loop statistics. Any thread, but not during or after stop(); 0 when the
  // thread's clock cannot be read.
  uint64_t loop_cpu_ns(uint32_t index) noexcept;

 private:
  struct LoopSlot;
  Engine() = default;

  std::vector<std::unique_ptr<LoopSlot>> slots_;
  std::vector<std::thread> threads_;
};

// Pins the calling thread to `cpu`. Errors: address_invalid (no such CPU), other.
Result<void, IoError> pin_current_thread(int cpu) noexcept;
// Pins `thread` to the CPUs of `cpus` (the kernel places it on any of them). Errors:
// address_invalid (an empty list, a CPU that does not exist or none this process may run
// on), other.
Result<void, IoError> pin_thread(pthread_t thread, std::span<const int> cpus) noexcept;

}  // namespace ringmux::engine
