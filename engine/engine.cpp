#include "engine/engine.h"

#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <cerrno>

#include "engine/assert.h"

namespace ringmux::engine {

Result<void, IoError> pin_current_thread(int cpu) noexcept {
  if (cpu < 0 || cpu >= CPU_SETSIZE) return Err{IoError::address_invalid};
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  const int rc = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
  if (rc != 0) return Err{rc == EINVAL ? IoError::address_invalid : io_error_from_errno(rc)};
  return {};
}

namespace {

// Hand-off between Engine::start and a loop thread while it sets up.
struct StartSlot {
  std::atomic<int> state{0};  // 0 pending, 1 running, 2 failed
  IoError error = IoError::none;
  Loop* loop = nullptr;
};

}  // namespace

Result<std::unique_ptr<Engine>, IoError> Engine::start(const EngineOptions& options) {
  RM_ASSERT(options.loop_count > 0);
  std::unique_ptr<Engine> engine(new Engine());
  std::vector<StartSlot> slots(options.loop_count);
  for (uint32_t i = 0; i < options.loop_count; i++) {
    const int cpu = i < options.cpus.size() ? options.cpus[i] : -1;
    StartSlot* slot = &slots[i];
    engine->threads_.emplace_back([slot, cpu, loop_options = options.loop]() {
      if (cpu >= 0) {
        auto pinned = pin_current_thread(cpu);
        if (!pinned) {
          slot->error = pinned.error();
          slot->state.store(2, std::memory_order_release);
          slot->state.notify_one();
          return;
        }
      }
      auto created = Loop::create(loop_options);
      if (!created) {
        slot->error = created.error();
        slot->state.store(2, std::memory_order_release);
        slot->state.notify_one();
        return;
      }
      std::unique_ptr<Loop> loop = std::move(created).value();
      slot->loop = loop.get();
      slot->state.store(1, std::memory_order_release);
      slot->state.notify_one();
      loop->run();
      // Posted work that raced with the stop still runs, so no poster leaks its task.
      for (int round = 0; round < 100 && loop->run_once(false) > 0; round++) {
      }
    });
  }
  IoError first_error = IoError::none;
  for (auto& slot : slots) {
    slot.state.wait(0, std::memory_order_acquire);
    if (slot.state.load(std::memory_order_acquire) == 2) {
      if (first_error == IoError::none) first_error = slot.error;
    }
    engine->loops_.push_back(slot.loop);
  }
  if (first_error != IoError::none) {
    engine->stop();
    return Err{first_error};
  }
  return engine;
}

Engine::~Engine() { stop(); }

Loop& Engine::loop(uint32_t index) noexcept {
  RM_ASSERT(index < loops_.size() && loops_[index] != nullptr);
  return *loops_[index];
}

void Engine::stop() noexcept {
  for (Loop* loop : loops_) {
    if (loop != nullptr) loop->request_stop_from_any_thread();
  }
  for (auto& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
  loops_.clear();
  threads_.clear();
}

}  // namespace ringmux::engine
