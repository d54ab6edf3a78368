#include "ringmux/mux/workers/worker_pool.h"

#include <bit>

#include "ringmux/base/assert.h"
#include "ringmux/engine/engine.h"
#include "ringmux/engine/loop.h"

namespace ringmux::mux {

Result<std::unique_ptr<WorkerPool>, engine::IoError> WorkerPool::start(const WorkerPoolOptions& options) {
  WorkerPoolOptions unpinned = options;
  unpinned.cpus.clear();
  auto pool = std::make_unique<WorkerPool>(unpinned);
  if (options.cpus.empty()) return pool;
  // Pinned from here, before any job: a worker runs on another CPU only until its pinning
  // (the kernel moves a running thread at once).
  for (uint32_t i = 0; i < pool->thread_count_; i++) {
    auto pinned = engine::pin_thread(pool->workers_[i].thread.native_handle(), options.cpus);
    if (!pinned) return Err{pinned.error()};  // the pool stops and joins its workers
  }
  return pool;
}

WorkerPool::WorkerPool(const WorkerPoolOptions& options)
    : thread_count_(options.threads),
      queue_jobs_max_(options.queue_jobs_max),
      spin_ns_(options.spin_ns),
      wake_worth_ns_(options.wake_worth_ns),
      wake_per_turn_(options.wake_per_turn),
      workers_mask_((uint64_t{1} << options.threads) - 1),
      mask_(std::bit_ceil(options.queue_jobs_max) - 1),
      cells_(new Cell[mask_ + 1]),
      workers_(new Worker[options.threads]),
      // Until jobs are measured they count as long: a first burst spreads over the pool.
      job_ns_average_(options.wake_worth_ns) {
  RM_ASSERT(options.threads >= 1 && options.threads <= limits::worker_pool_threads_max);
  RM_ASSERT(options.queue_jobs_max >= 1 && options.queue_jobs_max <= limits::worker_pool_queue_jobs_max);
  RM_ASSERT(options.cpus.empty());  // WorkerPool::start pins
  // Cell p is the producer's for position p to begin with.
  for (uint64_t i = 0; i <= mask_; i++) cells_[i].sequence.store(i, std::memory_order_relaxed);
  for (uint32_t i = 0; i < thread_count_; i++) workers_[i].thread = std::thread([this, i] { run_worker(i); });
}

WorkerPool::~WorkerPool() {
  stopping_.store(true, std::memory_order_seq_cst);
  // Every worker either sees stopping_ after its announcement or is woken here (wake()
  // bumps its epoch whether or not it sleeps yet).
  for (uint32_t i = 0; i < thread_count_; i++) workers_[i].wake.wake();
  for (uint32_t i = 0; i < thread_count_; i++) workers_[i].thread.join();
  RM_ASSERT(admitted_.load(std::memory_order_relaxed) == 0);  // every job admitted ran
}

bool WorkerPool::try_reserve() noexcept {
  if (stopping_.load(std::memory_order_relaxed)) {
    refused_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  uint32_t admitted = admitted_.load(std::memory_order_relaxed);
  do {
    if (admitted >= queue_jobs_max_) {
      refused_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
  } while (!admitted_.compare_exchange_weak(admitted, admitted + 1, std::memory_order_relaxed));
  return true;
}

void WorkerPool::cancel_reservation() noexcept {
  const uint32_t before = admitted_.fetch_sub(1, std::memory_order_relaxed);
  RM_ASSERT(before > 0);
}

void WorkerPool::submit_reserved(PoolJob& job) noexcept {
  submit_reserved_quiet(job);
  wake_for_queued();
}

void WorkerPool::submit_reserved_quiet(PoolJob& job) noexcept {
  RM_ASSERT(job.run != nullptr);
  push(job);
  submitted_.fetch_add(1, std::memory_order_relaxed);
}

void WorkerPool::wake_for_queued() noexcept {
  // The look at the idle mask is a read-modify-write after the push: a worker's
  // announcement (also one) either comes later in the mask's order, and then it sees the
  // job, or earlier, and then this sees the worker. It takes the spinner's bit: a spinning
  // worker finds the job, and nobody needs a wake.
  // It wakes nobody either while a woken worker is on its way: that one looks at the queue
  // once it runs (and wakes the next if more is queued), and a burst of submits during a
  // wake-up costs one wake, not one per submit.
  // And it wakes nobody when a worker is awake that will look at the queue soon enough.
  const uint64_t idle = idle_mask_.fetch_and(~spinner_bit, std::memory_order_acq_rel);
  if ((idle & (spinner_bit | waking_bit)) != 0) return;
  if (looks_empty()) return;  // taken already (a quiet batch that a worker found)
  if (wake_wanted(idle)) wake_one_idle();
}

bool WorkerPool::wake_wanted(uint64_t idle) const noexcept {
  const uint64_t sleeping = idle & workers_mask_;
  if (sleeping == 0) return false;                // every worker is awake: one takes it
  const uint64_t awake = workers_mask_ & ~sleeping;
  if (awake == 0 || wake_worth_ns_ == 0) return true;  // nobody else looks (or: always wake)
  // Enough work queued for one more worker?
  // The dequeue position first: the enqueue position read after it is never behind it.
  const uint64_t dequeued = dequeue_position_.load(std::memory_order_relaxed);
  const uint64_t queued_jobs = enqueue_position_.load(std::memory_order_relaxed) - dequeued;
  const uint64_t average_ns = job_ns_average_.load(std::memory_order_relaxed);
  if (queued_jobs >= 1 && average_ns >= wake_worth_ns_ / queued_jobs) return true;
  // Not enough: no wake if an awake worker is between jobs or started its job recently (it
  // looks at the queue when the job ends). An awake worker that announced nothing is one of
  // those the idle mask's order guarantees to look at the queue after this job was queued.
  const uint64_t now_ns = engine::Loop::clock_ns();
  for (uint64_t rest = awake; rest != 0; rest &= rest - 1) {
    const uint64_t started_ns = workers_[std::countr_zero(rest)].job_started_ns.load(std::memory_order_relaxed);
    if (started_ns == 0 || now_ns - started_ns < wake_worth_ns_) return false;
  }
  return true;  // every awake worker has been in its job a while: it may be blocked
}

void WorkerPool::note_job_ns(uint64_t job_ns) noexcept {
  // Weight 1/8 for the newest job: a few jobs move it.
  const uint64_t average_ns = job_ns_average_.load(std::memory_order_relaxed);
  job_ns_average_.store(average_ns - average_ns / 8 + job_ns / 8, std::memory_order_relaxed);
}

void WorkerPool::push(PoolJob& job) noexcept {
  // A reservation guarantees a cell: at most queue_jobs_max <= mask_ + 1 jobs are queued,
  // and a consumer that took position p frees cell p at once.
  uint64_t position = enqueue_position_.load(std::memory_order_relaxed);
  Cell* cell;
  for (;;) {
    cell = &cells_[position & mask_];
    const uint64_t sequence = cell->sequence.load(std::memory_order_acquire);
    const auto lag = static_cast<int64_t>(sequence - position);
    if (lag == 0) {
      if (enqueue_position_.compare_exchange_weak(position, position + 1, std::memory_order_relaxed)) break;
    } else {
      // lag < 0: the consumer of the previous lap has claimed the cell but not yet freed it
      // (a moment); lag > 0: another producer took this position. Either way, look again.
      position = enqueue_position_.load(std::memory_order_relaxed);
    }
  }
  cell->job = &job;
  cell->sequence.store(position + 1, std::memory_order_release);
}

PoolJob* WorkerPool::try_pop() noexcept {
  uint64_t position = dequeue_position_.load(std::memory_order_relaxed);
  Cell* cell;
  for (;;) {
    cell = &cells_[position & mask_];
    const uint64_t sequence = cell->sequence.load(std::memory_order_acquire);
    const auto lag = static_cast<int64_t>(sequence - (position + 1));
    if (lag == 0) {
      if (dequeue_position_.compare_exchange_weak(position, position + 1, std::memory_order_relaxed)) break;
    } else if (lag < 0) {
      return nullptr;  // empty (or the producer of this position has not published yet)
    } else {
      position = dequeue_position_.load(std::memory_order_relaxed);
    }
  }
  PoolJob* job = cell->job;
  cell->job = nullptr;
  // The cell is the producer's again, for the next lap.
  cell->sequence.store(position + mask_ + 1, std::memory_order_release);
  const uint32_t before = admitted_.fetch_sub(1, std::memory_order_relaxed);
  RM_ASSERT(before > 0);
  return job;
}

bool WorkerPool::looks_empty() const noexcept {
  const uint64_t position = dequeue_position_.load(std::memory_order_seq_cst);
  return cells_[position & mask_].sequence.load(std::memory_order_seq_cst) != position + 1;
}

bool WorkerPool::wake_one_idle() noexcept {
  uint64_t mask = idle_mask_.load(std::memory_order_acquire);
  // Bounded: each failed round means the mask changed under it (a worker announced or
  // woke); after that many rounds the workers are busy changing it and find the queue.
  for (uint32_t round = 0; round < 4 * thread_count_; round++) {
    const uint64_t idle = mask & ~(spinner_bit | waking_bit);
    if ((mask & waking_bit) != 0 || idle == 0) return false;
    const uint64_t bit = idle & (~idle + 1);  // the lowest idle worker
    // Takes the worker's bit and marks a wake on its way, in one step.
    if (idle_mask_.compare_exchange_weak(mask, (mask & ~bit) | waking_bit, std::memory_order_acq_rel,
                                         std::memory_order_acquire)) {
      workers_[std::countr_zero(bit)].wake.wake();
      return true;
    }
  }
  return false;
}

void WorkerPool::settle_awake(uint64_t bit) noexcept {
  const uint64_t before = idle_mask_.fetch_and(~bit, std::memory_order_acq_rel);
  // A waker took this worker's bit and marked its wake: the wake has arrived, and this
  // worker looks at the queue next.
  if ((before & bit) == 0) idle_mask_.fetch_and(~waking_bit, std::memory_order_acq_rel);
}

void WorkerPool::run_worker(uint32_t index) noexcept {
  RM_ASSERT(index < waking_index);
  Worker& self = workers_[index];
  const uint64_t bit = uint64_t{1} << index;
  bool may_spin = true;  // not spun since the last job (or the last wake)
  for (;;) {
    if (PoolJob* job = try_pop()) {
      may_spin = true;
      const uint64_t started_ns = engine::Loop::clock_ns();
      self.job_started_ns.store(started_ns, std::memory_order_relaxed);
      // More behind it: another worker may start on them while this one runs its job, if
      // they are worth a wake-up (this worker counts as one that looks again soon).
      if (!looks_empty() && wake_wanted(idle_mask_.load(std::memory_order_acquire))) wake_one_idle();
      self.run.store(self.run.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      job->run(job);
      // The job may have freed itself: only the clock is read after it.
      const uint64_t ended_ns = engine::Loop::clock_ns();
      self.job_started_ns.store(0, std::memory_order_relaxed);
      note_job_ns(ended_ns - started_ns);
      continue;
    }
    if (stopping_.load(std::memory_order_acquire)) return;  // nothing queued, none to come
    if (may_spin && spin_ns_ > 0 &&
        (idle_mask_.fetch_or(spinner_bit, std::memory_order_acq_rel) & spinner_bit) == 0) {
      // The spinner: looks until a job shows, a submitter takes its bit (a job was pushed)
      // or the budget is spent; then takes what there is, or goes on to sleep.
      may_spin = false;
      engine::spin_until(
          [this] {
            return (idle_mask_.load(std::memory_order_acquire) & spinner_bit) == 0 || !looks_empty() ||
                   stopping_.load(std::memory_order_relaxed);
          },
          spin_ns_);
      idle_mask_.fetch_and(~spinner_bit, std::memory_order_acq_rel);
      continue;
    }
    const uint32_t key = self.wake.prepare();
    idle_mask_.fetch_or(bit, std::memory_order_seq_cst);
    if (!looks_empty() || stopping_.load(std::memory_order_seq_cst)) {
      // Published before the announcement: take it (or stop) instead of sleeping.
      settle_awake(bit);
      self.wake.withdraw();
      continue;
    }
    (void)self.wake.wait(key, 0);  // no deadline: woken by a submitter or the destructor
    // Woken by a submitter (which took the bit), by the destructor or by a signal.
    settle_awake(bit);
    self.wake.withdraw();
    may_spin = true;
  }
}

WorkerPoolStats WorkerPool::stats() const noexcept {
  WorkerPoolStats stats;
  stats.submitted = submitted_.load(std::memory_order_relaxed);
  stats.refused = refused_.load(std::memory_order_relaxed);
  for (uint32_t i = 0; i < thread_count_; i++) {
    stats.run += workers_[i].run.load(std::memory_order_relaxed);
    stats.worker_sleeps += workers_[i].wake.sleeps();
    stats.worker_wakes += workers_[i].wake.wakes();
  }
  return stats;
}

}  // namespace ringmux::mux
