// Loop: one io_uring instance and everything that runs on it.
//
// A loop owns its ring (SINGLE_ISSUER + DEFER_TASKRUN where the kernel has them, probed
// with a fallback), its registered ring fd, one provided-buffer ring for receives, its
// timers and its queue of posted tasks. Each iteration makes exactly one
// submit-and-wait call, whose timeout is the earliest timer, then dispatches completions
// through the completion's address (the SQE's user_data), fires timers, runs the tasks
// other threads posted meanwhile, and last runs the work its callbacks deferred (defer():
// a completion reported on the next turn, a connection's one send of what the iteration
// wrote).
//
// Threading: a loop is created on, and thereafter used only by, the thread that runs it
// (SINGLE_ISSUER requires the creating thread to be the submitter). The exceptions are
// post() and request_stop_from_any_thread(), which any thread may call: they push onto a
// lock-free stack that the loop takes every iteration, and wake a loop that may be asleep
// through an eventfd read kept armed in the ring (a busy loop costs a poster no syscall).
#pragma once

#include <liburing.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <utility>

#include "ringmux/base/assert.h"
#include "ringmux/base/limits.h"
#include "ringmux/base/rendezvous.h"
#include "ringmux/base/result.h"
#include "ringmux/engine/buffer_ring.h"
#include "ringmux/engine/completion.h"
#include "ringmux/engine/errors.h"
#include "ringmux/engine/timer.h"

namespace ringmux::engine {

// a + b, or UINT64_MAX where the sum would wrap: deadline arithmetic on budgets a peer
// chose must never turn "far in the future" into "already passed".
constexpr uint64_t add_saturating(uint64_t a, uint64_t b) noexcept { return b > UINT64_MAX - a ? UINT64_MAX : a + b; }

struct LoopOptions {
  uint32_t sq_entries = limits::loop_sq_entries;
  uint32_t cq_entries = limits::loop_cq_entries;
  uint32_t recv_buffer_count = limits::recv_buffer_count;
  uint32_t recv_buffer_bytes = limits::recv_buffer_bytes;
  // Busy-poll budget: before sleeping in io_uring_enter, poll for completions this long
  // (each poll is a non-blocking enter that runs pending task work). Trades CPU for
  // latency where waking an idle core is slow; see limits::loop_spin_ns_default. 0 = never.
  uint64_t spin_ns = limits::loop_spin_ns_default;
  // Tests turn these off to exercise the fallback set-ups on a kernel that has them.
  bool try_defer_taskrun = true;
  bool try_single_issuer = true;
};

// Counters of one loop; read on the loop thread (or after it stopped).
struct LoopStats {
  uint64_t iterations = 0;
  uint64_t enters = 0;        // submit-and-wait calls (each one io_uring_enter at most)
  uint64_t extra_submits = 0;  // submits forced by a full SQ
  uint64_t completions = 0;
  uint64_t cq_overflows = 0;  // iterations that found the CQ overflowed and drained it
  uint64_t recv_no_buffers = 0;  // multishot receives ended by -ENOBUFS and re-armed
  uint64_t tasks_run = 0;
  uint64_t wakeups = 0;  // eventfd completions (posts to a sleeping loop)
  uint64_t posted_drains = 0;  // iterations that ran tasks posted while the loop was awake
  uint64_t spin_polls = 0;  // non-blocking enters made while busy-polling
  uint64_t deferred_run = 0;  // deferred work run (Loop::defer)
};

// Work posted to a loop from any thread. Intrusive: the poster owns the memory until
// `run` is called on the loop thread; `run` may free it.
struct Task {
  Task* next = nullptr;
  void (*run)(Task* task) noexcept = nullptr;
};

// Work of the loop thread for the loop's next turn (Loop::defer): a completion that must
// not run inside the call that started it, or the one send of a connection's output.
// Intrusive and owned by its owner, which takes it back (Loop::cancel_deferred) before it
// goes away; `run` may destroy the owner (the loop no longer touches the node then).
// Invariant: `queued()` exactly when the node is on its loop's list.
class Deferred {
 public:
  using Run = void (*)(Deferred& deferred) noexcept;
  Deferred() = default;
  Deferred(Run run, void* context) noexcept : run_(run), context_(context) {}
  Deferred(const Deferred&) = delete;
  Deferred& operator=(const Deferred&) = delete;
  ~Deferred() { RM_ASSERT(!queued()); }

  void set_run(Run run, void* context) noexcept {
    RM_ASSERT(!queued());
    run_ = run;
    context_ = context;
  }
  void* context() const noexcept { return context_; }
  bool queued() const noexcept { return next_ != nullptr; }

 private:
  friend class Loop;
  Deferred* next_ = nullptr;  // a circular list through the loop's sentinel while queued
  Deferred* prev_ = nullptr;
  Run run_ = nullptr;
  void* context_ = nullptr;
};

class Loop {
 public:
  // Sets up the ring on the calling thread, which becomes the loop's thread. Errors:
  // not_supported (no io_uring or no provided-buffer rings), no_memory, permission_denied.
  static Result<std::unique_ptr<Loop>, IoError> create(const LoopOptions& options = {});
  // A loop with no ring, on a clock that only advance_to() moves: timers and deferred work
  // run as they would, I/O does not exist (sqe(), run() and post() assert). For
  // deterministic simulations of the layers above (the link's resume simulation), where
  // simulated sockets stand in for engine sockets.
  static std::unique_ptr<Loop> create_simulated(uint64_t start_ns = 0);
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  // ---- loop thread ----

  // A free SQE; submits the queue first when it is full (counted in extra_submits).
  // Never returns nullptr. The caller fills it and sets its user_data with prepare().
  io_uring_sqe* sqe() noexcept;
  // Ties `sqe` to `completion`, which must not be submitted, and marks it submitted.
  void prepare(io_uring_sqe* sqe, Completion& completion) noexcept;
  // Makes sure `count` SQEs can be taken without an intermediate submit (linked SQEs must
  // reach the kernel in one batch).
  void reserve_sqes(uint32_t count) noexcept;
  // An SQE whose completion is ignored (cancellations): user_data 0.
  io_uring_sqe* sqe_unowned() noexcept;

  // Runs iterations until request_stop(). Returns at once if a stop is pending.
  void run() noexcept;
  // Runs one iteration; waits for at least one event unless `wait` is false, and never
  // past `timeout_ns` from now. Returns the number of CQEs dispatched.
  uint32_t run_once(bool wait = true, uint64_t timeout_ns = UINT64_MAX) noexcept;
  // Runs iterations until `done()` is true or `timeout_ns` has passed; returns done().
  template <typename Predicate>
  bool run_until(Predicate&& done, uint64_t timeout_ns) noexcept {
    const uint64_t deadline_ns = clock_ns() + timeout_ns;
    while (!done()) {
      const uint64_t now = clock_ns();
      if (now >= deadline_ns) return done();
      run_once(true, deadline_ns - now);
    }
    return true;
  }
  // Simulated loop: moves the clock to `now_ns` (never back), fires the timers due by then,
  // earliest first, and runs the deferred work, as an iteration would.
  void advance_to(uint64_t now_ns) noexcept;
  // The earliest timer's deadline, or UINT64_MAX when none is armed.
  uint64_t next_timer_ns() const noexcept { return timers_.next_deadline_ns(); }
  bool simulated() const noexcept { return simulated_; }
  void request_stop() noexcept { stop_requested_ = true; }
  bool stop_requested() const noexcept { return stop_requested_; }

  // Runs `deferred` on the loop thread once the code running now has returned to the loop:
  // after this iteration's completions and timers, before the loop waits again (queued
  // outside an iteration: when the next one starts). Never inside the call that queues it,
  // and the loop does not sleep while work is queued. Queued nodes run in queue order; a
  // node already queued stays where it is. No allocation.
  void defer(Deferred& deferred) noexcept;
  // Takes `deferred` off the queue (its owner is going away); a no-op when not queued.
  void cancel_deferred(Deferred& deferred) noexcept;
  bool deferred_pending() const noexcept { return deferred_.next_ != &deferred_; }

  // Timers, on the loop's monotonic clock.
  // A delay past the end of the clock (a peer's deadline budget of 2^64-1) saturates.
  void timer_start(Timer& timer, uint64_t delay_ns) { timers_.arm(timer, add_saturating(now_ns_, delay_ns)); }
  void timer_cancel(Timer& timer) noexcept { timers_.disarm(timer); }

  // Monotonic time cached at the start of the iteration (cheap); clock_ns() reads the clock.
  uint64_t now_ns() const noexcept { return now_ns_; }
  static uint64_t clock_ns() noexcept;

  BufferRing& buffers() noexcept { return *buffers_; }
  const LoopStats& stats() const noexcept { return stats_; }
  void note_recv_no_buffers() noexcept { stats_.recv_no_buffers++; }
  // Operations the kernel owns right now (submitted, final CQE not yet dispatched).
  uint32_t ops_in_flight() const noexcept { return ops_in_flight_; }
  bool defer_taskrun() const noexcept { return (setup_flags_ & IORING_SETUP_DEFER_TASKRUN) != 0; }
  bool single_issuer() const noexcept { return (setup_flags_ & IORING_SETUP_SINGLE_ISSUER) != 0; }
  uint32_t setup_flags() const noexcept { return setup_flags_; }
  // Whether the caller runs on this loop's thread (any thread may ask).
  bool on_loop_thread() const noexcept { return std::this_thread::get_id() == thread_; }

  // ---- any thread ----

  // Queues `task` to run on the loop thread and wakes the loop. Lock-free; a syscall (one
  // eventfd write per burst) only when the loop may be asleep. From the loop thread too:
  // the task then runs at the end of the iteration or later, never inside the posting call.
  void post(Task* task) noexcept;
  // Posts a callable (allocates one small node per call; for control paths, not per
  // message). The task owns the callable: it may run after whoever posted it is gone.
  template <typename F>
  void post_fn(F&& fn) {
    struct FnTask : Task {
      explicit FnTask(F&& f) : fn(std::forward<F>(f)) {}
      std::decay_t<F> fn;
    };
    auto* task = new FnTask(std::forward<F>(fn));
    task->run = [](Task* t) noexcept {
      auto* self = static_cast<FnTask*>(t);
      self->fn();
      delete self;
    };
    post(task);
  }
  // Runs `fn` now when called on the loop thread, else posts it (then `fn` must own what
  // it uses). The one "run on the loop or post it" of the code base.
  template <typename F>
  void run_or_post(F&& fn) {
    if (on_loop_thread()) {
      fn();
      return;
    }
    post_fn(std::forward<F>(fn));
  }
  // Runs `start(complete)` on the loop thread and blocks the calling thread until
  // `complete(result)` has been called (on the loop thread, now or later: an asynchronous
  // operation's completion), then returns the result. Not from this loop's own thread (it
  // would wait for itself forever) nor from a thread this loop may be waiting on. A control
  // path: one allocation and one wake-up.
  template <typename T, typename Start>
  T run_and_wait(Start&& start) {
    RM_ASSERT(!on_loop_thread());
    // Shared: the loop thread may still be inside notify_one() when the waiter returns.
    auto pending = std::make_shared<Rendezvous<T>>();
    post_fn([pending, &start] { start([pending](T result) { pending->deliver(std::move(result)); }); });
    return pending->wait();
  }
  // Runs `fn` on the loop thread and returns once it has: at once when called there, else
  // through run_and_wait.
  template <typename F>
  void run_sync(F&& fn) {
    if (on_loop_thread()) {
      fn();
      return;
    }
    (void)run_and_wait<bool>([&fn](auto complete) {
      fn();
      complete(true);
    });
  }
  // The loop's counters from any thread: copied on the loop thread (run_sync), so the loop
  // must be running (or this be its thread).
  LoopStats stats_snapshot() {
    LoopStats copy;
    run_sync([&] { copy = stats_; });
    return copy;
  }
  void request_stop_from_any_thread() noexcept;
  // Whether the loop is in (or just before) a blocking wait, where posts write its eventfd.
  // A snapshot, for tests and statistics.
  bool sleeping() const noexcept { return sleeping_.load(std::memory_order_relaxed); }

 private:
  Loop() noexcept;
  static void on_wakeup_complete(Completion& completion, int32_t result, uint32_t flags) noexcept;
  void arm_wakeup() noexcept;
  void run_posted_tasks() noexcept;
  // Runs the deferred work, in rounds (limits::loop_deferred_rounds_max).
  void run_deferred() noexcept;
  uint32_t dispatch_completions() noexcept;
  bool spin_for_completions(uint64_t budget_ns) noexcept;

  io_uring ring_{};
  bool ring_ready_ = false;
  bool simulated_ = false;
  uint32_t setup_flags_ = 0;
  uint64_t spin_ns_ = 0;
  std::thread::id thread_ = std::this_thread::get_id();  // the creating (and running) thread
  std::unique_ptr<BufferRing> buffers_;
  TimerHeap timers_;
  LoopStats stats_;
  uint64_t now_ns_ = 0;
  uint32_t ops_in_flight_ = 0;
  bool stop_requested_ = false;
  // Deferred work: the queue, and the round being run (sentinels of circular lists, so a
  // node is taken off either with no search).
  Deferred deferred_;
  Deferred deferred_round_;

  // Cross-thread wake-up: a Treiber stack of tasks (taken whole, so no ABA) and an
  // eventfd whose read stays armed. sleeping_ is true from just before the loop's look at
  // the stack that precedes a blocking wait until the wait returns: posts write the eventfd
  // only then. wake_pending_ is true from the first such write until the eventfd completion
  // is handled, so a burst of posts to a sleeping loop costs one write.
  alignas(64) std::atomic<Task*> posted_{nullptr};
  std::atomic<bool> sleeping_{false};
  std::atomic<bool> wake_pending_{false};
  std::atomic<bool> stop_from_other_thread_{false};
  alignas(64) int event_fd_ = -1;
  uint64_t event_value_ = 0;
  Completion wakeup_;
};

}  // namespace ringmux::engine
