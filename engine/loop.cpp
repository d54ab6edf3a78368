#include "ringmux/engine/loop.h"

#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>

#include "ringmux/base/assert.h"

namespace ringmux::engine {

namespace {

// Buffer group of the loop's receive ring. One ring per loop, so one group.
constexpr uint16_t recv_buffer_group = 0;

// Tries the set-ups from the fastest to the most portable. DEFER_TASKRUN runs completion
// work only when this thread enters the ring (no IPIs, no surprise preemption of the
// loop); it needs SINGLE_ISSUER. COOP_TASKRUN is the next best on older kernels.
int setup_ring(io_uring& ring, const LoopOptions& options, uint32_t& flags_out) {
  const uint32_t base = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
  uint32_t candidates[4];
  uint32_t count = 0;
  if (options.try_single_issuer && options.try_defer_taskrun) {
    candidates[count++] = base | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  }
  if (options.try_single_issuer) {
    candidates[count++] = base | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN;
  }
  candidates[count++] = base | IORING_SETUP_COOP_TASKRUN;
  candidates[count++] = base;
  int rc = -EINVAL;
  for (uint32_t i = 0; i < count; i++) {
    io_uring_params params{};
    params.flags = candidates[i];
    params.cq_entries = options.cq_entries;
    rc = io_uring_queue_init_params(options.sq_entries, &ring, &params);
    if (rc == 0) {
      flags_out = candidates[i];
      return 0;
    }
    if (rc != -EINVAL) return rc;  // not a missing flag: no point trying the others
  }
  return rc;
}

}  // namespace

uint64_t Loop::clock_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

Result<std::unique_ptr<Loop>, IoError> Loop::create(const LoopOptions& options) {
  std::unique_ptr<Loop> loop(new Loop());
  const int rc = setup_ring(loop->ring_, options, loop->setup_flags_);
  if (rc < 0) {
    return Err{rc == -ENOSYS || rc == -EINVAL ? IoError::not_supported : io_error_from_errno(-rc)};
  }
  loop->ring_ready_ = true;
  loop->spin_ns_ = options.spin_ns;
  // A registered ring fd saves the fdget/fdput of every io_uring_enter. Optional: older
  // kernels lack it and the ring works the same without.
  (void)io_uring_register_ring_fd(&loop->ring_);

  auto buffers = BufferRing::create(loop->ring_, recv_buffer_group, options.recv_buffer_count,
                                    options.recv_buffer_bytes);
  if (!buffers) return Err{buffers.error()};
  loop->buffers_ = std::move(buffers).value();

  loop->event_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (loop->event_fd_ < 0) return Err{io_error_from_errno(errno)};
  loop->wakeup_.callback = &Loop::on_wakeup_complete;
  loop->wakeup_.context = loop.get();
  loop->now_ns_ = clock_ns();
  loop->arm_wakeup();
  return loop;
}

std::unique_ptr<Loop> Loop::create_simulated(uint64_t start_ns) {
  std::unique_ptr<Loop> loop(new Loop());
  loop->simulated_ = true;
  loop->now_ns_ = start_ns;
  return loop;
}

void Loop::advance_to(uint64_t now_ns) noexcept {
  RM_ASSERT(simulated_ && now_ns >= now_ns_);
  stats_.iterations++;
  now_ns_ = now_ns;
  run_deferred();
  // Every timer due: a simulation has no budget to spread over iterations.
  while (timers_.fire_expired(now_ns_, limits::loop_timers_per_iteration_max) != 0) run_deferred();
  run_deferred();
}

Loop::Loop() noexcept {
  // Empty circular lists: each sentinel is its own neighbour.
  for (Deferred* sentinel : {&deferred_, &deferred_round_}) sentinel->next_ = sentinel->prev_ = sentinel;
}

Loop::~Loop() {
  // Deferred work belongs to owners that took it back before the loop goes.
  RM_ASSERT(!deferred_pending() && deferred_round_.next_ == &deferred_round_);
  if (ring_ready_) {
    // Cancel our own eventfd read and wait for it: the kernel would otherwise write into
    // event_value_ after this object is gone. Every other operation belongs to an owner
    // that must have torn itself down first.
    stop_requested_ = true;
    if (wakeup_.submitted) {
      io_uring_sqe* sqe = sqe_unowned();
      io_uring_prep_cancel(sqe, &wakeup_, 0);
      for (int i = 0; i < 1000 && wakeup_.submitted; i++) run_once(true, 10'000'000);
    }
    RM_ASSERT(!wakeup_.submitted);
    RM_ASSERT(ops_in_flight_ == 0);
    buffers_.reset();
    io_uring_queue_exit(&ring_);
    if (event_fd_ >= 0) close(event_fd_);
  }
  RM_ASSERT(!deferred_pending());
  // The sentinels are not queued work (Deferred's destructor checks that).
  for (Deferred* sentinel : {&deferred_, &deferred_round_}) sentinel->next_ = sentinel->prev_ = nullptr;
}

io_uring_sqe* Loop::sqe() noexcept {
  RM_ASSERT(ring_ready_);
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    // The SQ is full: submit what is there (no wait) and take a fresh entry.
    stats_.extra_submits++;
    const int rc = io_uring_submit(&ring_);
    RM_ASSERT(rc >= 0 || rc == -EBUSY || rc == -EAGAIN);
    sqe = io_uring_get_sqe(&ring_);
  }
  RM_ASSERT(sqe != nullptr);
  return sqe;
}

void Loop::reserve_sqes(uint32_t count) noexcept {
  RM_ASSERT(count <= ring_.sq.ring_entries);
  if (io_uring_sq_space_left(&ring_) < count) {
    stats_.extra_submits++;
    const int rc = io_uring_submit(&ring_);
    RM_ASSERT(rc >= 0 || rc == -EBUSY || rc == -EAGAIN);
  }
  RM_ASSERT(io_uring_sq_space_left(&ring_) >= count);
}

void Loop::prepare(io_uring_sqe* sqe, Completion& completion) noexcept {
  RM_ASSERT(!completion.submitted);
  RM_ASSERT(completion.callback != nullptr);
  completion.submitted = true;
  ops_in_flight_++;
  io_uring_sqe_set_data(sqe, &completion);
}

io_uring_sqe* Loop::sqe_unowned() noexcept {
  io_uring_sqe* entry = sqe();
  io_uring_sqe_set_data64(entry, 0);
  return entry;
}

void Loop::arm_wakeup() noexcept {
  io_uring_sqe* entry = sqe();
  io_uring_prep_read(entry, event_fd_, &event_value_, sizeof(event_value_), 0);
  prepare(entry, wakeup_);
}

void Loop::on_wakeup_complete(Completion& completion, int32_t result, uint32_t) noexcept {
  Loop& loop = owner_of<Loop>(completion);
  loop.stats_.wakeups++;
  // Cleared before the stack is taken: a post that lands after this store writes the
  // eventfd again, so no task is left behind without a wake-up (see post()).
  loop.wake_pending_.store(false, std::memory_order_seq_cst);
  loop.run_posted_tasks();
  if (loop.stop_from_other_thread_.load(std::memory_order_acquire)) loop.stop_requested_ = true;
  if (result == -ECANCELED) return;  // teardown
  RM_ASSERT(result == sizeof(uint64_t) || result == -EAGAIN || result == -EINTR);
  loop.arm_wakeup();
}

void Loop::post(Task* task) noexcept {
  RM_ASSERT(task != nullptr && task->run != nullptr && !simulated_);
  Task* head = posted_.load(std::memory_order_relaxed);
  do {
    task->next = head;
  } while (!posted_.compare_exchange_weak(head, task, std::memory_order_seq_cst, std::memory_order_relaxed));
  // An awake loop takes the stack before it sleeps again (run_once): only a loop that may
  // be asleep needs the eventfd. Both sides are seq_cst: either this load sees the loop's
  // announcement, or the loop's look at the stack after announcing sees this task.
  if (!sleeping_.load(std::memory_order_seq_cst)) return;
  if (!wake_pending_.exchange(true, std::memory_order_seq_cst)) {
    const uint64_t one = 1;
    // A full eventfd counter (EAGAIN) already means "wake up"; nothing else can fail here.
    const ssize_t written = write(event_fd_, &one, sizeof(one));
    RM_ASSERT(written == sizeof(one) || errno == EAGAIN);
  }
}

void Loop::request_stop_from_any_thread() noexcept {
  stop_from_other_thread_.store(true, std::memory_order_release);
  if (!wake_pending_.exchange(true, std::memory_order_seq_cst)) {
    const uint64_t one = 1;
    const ssize_t written = write(event_fd_, &one, sizeof(one));
    RM_ASSERT(written == sizeof(one) || errno == EAGAIN);
  }
}

void Loop::run_posted_tasks() noexcept {
  Task* stack = posted_.exchange(nullptr, std::memory_order_seq_cst);
  // The stack is newest first; reverse it so tasks run in posting order.
  Task* fifo = nullptr;
  while (stack != nullptr) {
    Task* next = stack->next;
    stack->next = fifo;
    fifo = stack;
    stack = next;
  }
  while (fifo != nullptr) {
    Task* next = fifo->next;
    stats_.tasks_run++;
    fifo->run(fifo);  // may free fifo
    fifo = next;
  }
}

void Loop::defer(Deferred& deferred) noexcept {
  RM_DEBUG_ASSERT(on_loop_thread());
  RM_ASSERT(deferred.run_ != nullptr);
  if (deferred.queued()) return;
  // At the tail of the queue (deferred_.prev_ is its last node).
  deferred.prev_ = deferred_.prev_;
  deferred.next_ = &deferred_;
  deferred_.prev_->next_ = &deferred;
  deferred_.prev_ = &deferred;
}

void Loop::cancel_deferred(Deferred& deferred) noexcept {
  if (!deferred.queued()) return;
  // In the queue or in the round being run: unlinked the same way from either.
  deferred.prev_->next_ = deferred.next_;
  deferred.next_->prev_ = deferred.prev_;
  deferred.next_ = deferred.prev_ = nullptr;
}

void Loop::run_deferred() noexcept {
  for (uint32_t round = 0; round < limits::loop_deferred_rounds_max && deferred_pending(); round++) {
    // The queue becomes this round; what its work defers queues for the next round.
    RM_ASSERT(deferred_round_.next_ == &deferred_round_);
    deferred_round_.next_ = deferred_.next_;
    deferred_round_.prev_ = deferred_.prev_;
    deferred_round_.next_->prev_ = &deferred_round_;
    deferred_round_.prev_->next_ = &deferred_round_;
    deferred_.next_ = deferred_.prev_ = &deferred_;
    // One node at a time off the front: work may cancel other nodes of this round (an
    // owner destroyed by a callback), which leaves the list whole.
    while (deferred_round_.next_ != &deferred_round_) {
      Deferred& deferred = *deferred_round_.next_;
      cancel_deferred(deferred);
      stats_.deferred_run++;
      deferred.run_(deferred);  // may destroy the node's owner
    }
  }
}

uint32_t Loop::dispatch_completions() noexcept {
  uint32_t count = 0;
  bool overflowed = false;
  while (count < limits::loop_cqes_per_iteration_max) {
    // With IORING_FEAT_NODROP the kernel parks CQEs that did not fit and raises this flag;
    // when the CQ is empty, io_uring_peek_cqe enters with GETEVENTS, which moves them in.
    overflowed |= (IO_URING_READ_ONCE(*ring_.sq.kflags) & IORING_SQ_CQ_OVERFLOW) != 0;
    io_uring_cqe* cqe = nullptr;
    if (io_uring_peek_cqe(&ring_, &cqe) != 0 || cqe == nullptr) break;
    // Copy the CQE and free its slot before the callback runs: the callback may submit,
    // and the kernel may then post into this slot.
    const uint64_t user_data = cqe->user_data;
    const int32_t result = cqe->res;
    const uint32_t flags = cqe->flags;
    io_uring_cq_advance(&ring_, 1);
    count++;
    if (user_data == 0) continue;  // an unowned operation (cancel): nothing to tell
    auto* completion = reinterpret_cast<Completion*>(user_data);
    RM_ASSERT(completion->submitted);
    if ((flags & IORING_CQE_F_MORE) == 0) {
      completion->submitted = false;
      RM_ASSERT(ops_in_flight_ > 0);
      ops_in_flight_--;
    }
    completion->callback(*completion, result, flags);
  }
  if (overflowed) stats_.cq_overflows++;
  stats_.completions += count;
  return count;
}

uint32_t Loop::run_once(bool wait, uint64_t timeout_ns) noexcept {
  RM_ASSERT(ring_ready_);  // a simulated loop moves by advance_to()
  stats_.iterations++;
  now_ns_ = clock_ns();
  // Work deferred outside an iteration (by the loop's owner between two of them), or left
  // over by the last iteration's budget.
  run_deferred();
  const uint64_t next_timer_ns = timers_.next_deadline_ns();
  if (next_timer_ns != UINT64_MAX) {
    const uint64_t until_timer_ns = next_timer_ns > now_ns_ ? next_timer_ns - now_ns_ : 0;
    if (until_timer_ns < timeout_ns) timeout_ns = until_timer_ns;
  }
  if (timeout_ns == 0 || deferred_pending()) wait = false;

  if (wait && spin_ns_ > 0 && spin_for_completions(spin_ns_ < timeout_ns ? spin_ns_ : timeout_ns)) wait = false;
  if (wait) {
    // From here posts must wake the loop (post()); a task posted before this is run now.
    sleeping_.store(true, std::memory_order_seq_cst);
    if (posted_.load(std::memory_order_seq_cst) != nullptr) wait = false;
  }

  stats_.enters++;
  if (wait) {
    io_uring_cqe* cqe = nullptr;
    __kernel_timespec ts{};
    __kernel_timespec* ts_ptr = nullptr;
    if (timeout_ns != UINT64_MAX) {
      ts.tv_sec = static_cast<int64_t>(timeout_ns / 1'000'000'000u);
      ts.tv_nsec = static_cast<int64_t>(timeout_ns % 1'000'000'000u);
      ts_ptr = &ts;
    }
    // The one io_uring_enter of the iteration: submits and waits (timeout via EXT_ARG).
    const int rc = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, ts_ptr, nullptr);
    RM_ASSERT(rc >= 0 || rc == -ETIME || rc == -EINTR || rc == -EBUSY || rc == -EAGAIN);
  } else {
    const int rc = io_uring_submit_and_get_events(&ring_);
    RM_ASSERT(rc >= 0 || rc == -EINTR || rc == -EBUSY || rc == -EAGAIN);
  }
  sleeping_.store(false, std::memory_order_relaxed);
  now_ns_ = clock_ns();

  const uint32_t dispatched = dispatch_completions();
  timers_.fire_expired(now_ns_, limits::loop_timers_per_iteration_max);
  // Tasks posted while the loop was awake (they wrote no eventfd): every iteration, before
  // the deferred work, so what they write leaves in this iteration's send.
  if (posted_.load(std::memory_order_acquire) != nullptr) {
    stats_.posted_drains++;
    run_posted_tasks();
  }
  // What this iteration's callbacks deferred: before the loop waits again.
  run_deferred();
  if (stop_from_other_thread_.load(std::memory_order_relaxed)) stop_requested_ = true;
  return dispatched;
}

bool Loop::spin_for_completions(uint64_t budget_ns) noexcept {
  const uint64_t until_ns = clock_ns() + budget_ns;
  do {
    stats_.spin_polls++;
    // Submits what is queued and runs pending task work without waiting.
    const int rc = io_uring_submit_and_get_events(&ring_);
    RM_ASSERT(rc >= 0 || rc == -EINTR || rc == -EBUSY || rc == -EAGAIN);
    if (io_uring_cq_ready(&ring_) > 0 || posted_.load(std::memory_order_relaxed) != nullptr) return true;
  } while (clock_ns() < until_ns);
  return false;
}

void Loop::run() noexcept {
  while (!stop_requested_) run_once();
}

}  // namespace ringmux::engine
