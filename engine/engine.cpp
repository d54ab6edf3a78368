#include "ringmux/engine/engine.h"

#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <cerrno>
#include <ctime>
#include <string>

#include "ringmux/base/assert.h"

namespace ringmux::engine {

Result<void, IoError> pin_current_thread(int cpu) noexcept { return pin_thread(pthread_self(), {&cpu, 1}); }

Result<void, IoError> pin_thread(pthread_t thread, std::span<const int> cpus) noexcept {
  if (cpus.empty()) return Err{IoError::address_invalid};
  cpu_set_t set;
  CPU_ZERO(&set);
  for (const int cpu : cpus) {
    if (cpu < 0 || cpu >= CPU_SETSIZE) return Err{IoError::address_invalid};
    CPU_SET(cpu, &set);
  }
  const int rc = pthread_setaffinity_np(thread, sizeof(set), &set);
  if (rc != 0) return Err{rc == EINVAL ? IoError::address_invalid : io_error_from_errno(rc)};
  return {};
}

// Hand-off between the Engine and one loop thread. The thread creates the loop, reports
// running or failed, runs it, and destroys it only once the Engine released it: a
// request_stop_from_any_thread() that is still writing the eventfd must never meet a
// destroyed loop.
struct Engine::LoopSlot {
  std::atomic<int> state{0};  // 0 pending, 1 running, 2 failed
  std::atomic<bool> released{false};
  IoError error = IoError::none;
  Loop* loop = nullptr;
};

Result<std::unique_ptr<Engine>, IoError> Engine::start(const EngineOptions& options) {
  RM_ASSERT(options.loop_count > 0);
  std::unique_ptr<Engine> engine(new Engine());
  for (uint32_t i = 0; i < options.loop_count; i++) engine->slots_.push_back(std::make_unique<LoopSlot>());
  for (uint32_t i = 0; i < options.loop_count; i++) {
    const int cpu = i < options.cpus.size() ? options.cpus[i] : -1;
    LoopSlot* slot = engine->slots_[i].get();
    engine->threads_.emplace_back([slot, cpu, i, loop_options = options.loop]() {
      // "ringmux-loop-3" in top -H and /proc/PID/task/*/comm (at most 15 characters).
      const std::string name = "ringmux-loop-" + std::to_string(i % 100);
      (void)pthread_setname_np(pthread_self(), name.c_str());
      auto report = [slot](int state, IoError error) {
        slot->error = error;
        slot->state.store(state, std::memory_order_release);
        slot->state.notify_one();
      };
      if (cpu >= 0) {
        auto pinned = pin_current_thread(cpu);
        if (!pinned) return report(2, pinned.error());
      }
      auto created = Loop::create(loop_options);
      if (!created) return report(2, created.error());
      std::unique_ptr<Loop> loop = std::move(created).value();
      slot->loop = loop.get();
      report(1, IoError::none);
      loop->run();
      slot->released.wait(false, std::memory_order_acquire);
      // Posted work that raced with the stop still runs, so no poster leaks its task.
      for (int round = 0; round < 100 && loop->run_once(false) > 0; round++) {
      }
    });
  }
  IoError first_error = IoError::none;
  for (auto& slot : engine->slots_) {
    slot->state.wait(0, std::memory_order_acquire);
    if (slot->state.load(std::memory_order_acquire) == 2 && first_error == IoError::none) first_error = slot->error;
  }
  if (first_error != IoError::none) {
    engine->stop();
    return Err{first_error};
  }
  return engine;
}

Engine::~Engine() { stop(); }

Loop& Engine::loop(uint32_t index) noexcept {
  RM_ASSERT(index < slots_.size() && slots_[index]->loop != nullptr);
  return *slots_[index]->loop;
}

uint64_t Engine::loop_cpu_ns(uint32_t index) noexcept {
  RM_ASSERT(index < threads_.size());
  clockid_t clock;
  timespec used{};
  if (pthread_getcpuclockid(threads_[index].native_handle(), &clock) != 0) return 0;
  if (clock_gettime(clock, &used) != 0) return 0;
  return static_cast<uint64_t>(used.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(used.tv_nsec);
}

void Engine::stop() noexcept {
  for (auto& slot : slots_) {
    if (slot->loop != nullptr) slot->loop->request_stop_from_any_thread();
    slot->released.store(true, std::memory_order_release);
    slot->released.notify_one();
  }
  for (auto& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
  slots_.clear();
  threads_.clear();
}

}  // namespace ringmux::engine
