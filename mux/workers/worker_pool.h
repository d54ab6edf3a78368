// WorkerPool: threads that run jobs a loop hands them (blocking handlers, mux/workers/
// blocking.h), so that a handler may block (disk I/O, a lock, a slow computation) without
// stalling the loop that serves its connection.
//
// Queue: a bounded multi-producer / multi-consumer ring of job pointers (each cell carries
// a sequence number that says whose turn it is: the producer of position p waits for p, the
// consumer for p + 1), addressed by 64-bit positions that never wrap. Admission is counted
// apart from the ring: try_reserve() takes one of queue_jobs_max places or says "full" (a
// return value: the caller refuses its call with a retryable error), and a reserved
// submit always finds a cell. A worker gives its place back when it takes the job.
//
// Sleep: each worker has its own engine::WakeWord and a bit in one idle mask. A worker that
// finds the queue empty announces itself (prepare, then its idle bit), looks at the queue
// once more and sleeps in the kernel on its futex; a submitter that finds an idle bit takes
// it and wakes that worker (one futex wake; none when every worker is busy). Both sides
// publish, then look at the other's word, with sequentially consistent operations, so
// either the submitter sees the idle bit or the worker sees the job: no job waits for a
// worker that sleeps. One wake at a time is on its way (a submit during a wake-up wakes
// nobody: the woken worker looks at the queue when it runs and passes the wake on if more
// is queued). No sleep slices, no polling.
//
// Wakes worth their cost: when every worker sleeps, a submit wakes one. When some are
// awake, another is woken (by the submitter, or by a worker that takes a job and sees more
// behind it) only if the queued jobs, at the pool's average job time, come to at least
// WorkerPoolOptions::wake_worth_ns of work, or if every awake worker has been in its job
// that long (it may be blocked: the queue must not wait for it). Otherwise an awake worker
// takes the job when its own ends, and a burst of short jobs costs one wake-up, not one per
// worker (each wake-up is two context switches: the woken worker's and the preempted
// thread's). Long jobs (a blocking disk read) make the average long, and every queued job
// then wakes a worker as before. A job queued behind a job that blocks while the pool's
// jobs are short waits until the next submit or the end of that job. With a spin
// budget (WorkerPoolOptions::spin_ns), one worker at a time looks at the queue for that
// long before it announces its sleep, and a submitter that finds it looking (its bit in the
// idle mask) takes that bit instead of waking anyone.
//
// Jobs: intrusive (PoolJob), owned by the submitter's layer; the pool never allocates per
// job. A job reports its result itself (blocking.h posts it back to the owning loop).
//
// Placement: WorkerPoolOptions::cpus pins the workers to a set of CPUs (WorkerPool::start).
// A pool that serves one loop's blocking handlers belongs on that loop's CPU: the loop
// waits while its calls run, so the worker takes the CPU the loop leaves, and each
// hand-over (the loop's wake of a worker, the worker's reply) is a wake-up on the same CPU
// instead of one sent to another CPU. On the project's 2-core VM W8's W2 came to 0.56-0.63x
// of inline with the pool on the server loop's CPU against 0.43-0.50x unpinned, W1 about
// the same (perf/RESULTS.md, W8). Handlers that compute for long rather than block belong
// on CPUs without a loop.
//
// Threads: any thread may submit; the workers are the pool's own. Construction and
// destruction on one thread, not a worker. Destruction stops admission, lets the workers
// run every job already queued (each job decides what to do with a call that was cancelled
// meanwhile) and joins them: the loops those jobs report to must still run then.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "ringmux/base/limits.h"
#include "ringmux/base/result.h"
#include "ringmux/engine/errors.h"
#include "ringmux/engine/wake_word.h"
#include "ringmux/mux/workers/slot_ring.h"

namespace ringmux::mux {

// One unit of work for a worker. The submitter owns the memory; `run` is called once, on a
// worker thread, and may free the job.
struct PoolJob {
  void (*run)(PoolJob* job) noexcept = nullptr;
};

struct WorkerPoolOptions {
  uint32_t threads = limits::worker_pool_threads_default;  // 1 .. worker_pool_threads_max
  // Jobs waiting for a worker at most, <= limits::worker_pool_queue_jobs_max.
  uint32_t queue_jobs_max = limits::worker_pool_queue_jobs_max;
  // How long an idle worker looks for the next job before it sleeps on its futex; one
  // worker at a time spins, the others sleep at once. See limits::worker_pool_spin_ns_default.
  uint64_t spin_ns = limits::worker_pool_spin_ns_default;
  // Work (queued jobs x average job time) worth waking another worker for while one is
  // awake; see above and limits::worker_pool_wake_worth_ns_default. 0 = wake whenever
  // jobs wait.
  uint64_t wake_worth_ns = limits::worker_pool_wake_worth_ns_default;
  // Blocking handlers (blocking.h) queue a loop turn's calls and make the wake decision
  // once at the end of the turn (submit_reserved_quiet, wake_for_queued) instead of per
  // call. false = per call (for comparisons).
  bool wake_per_turn = true;
  // The CPUs the workers run on (each on any of them, as the kernel places it); empty: the
  // workers keep the CPU affinity of the thread that makes the pool (a pool made on a
  // pinned loop thread runs on that loop's CPU). Only WorkerPool::start pins (see
  // "Placement" above).
  std::vector<int> cpus;
};

// What a pool counted (WorkerPool::stats(): a snapshot, any thread).
struct WorkerPoolStats {
  uint64_t submitted = 0;     // jobs accepted
  uint64_t refused = 0;       // try_reserve() answers "full" (or "stopping")
  uint64_t run = 0;           // jobs the workers ran
  uint64_t worker_sleeps = 0;  // futex waits of the workers
  uint64_t worker_wakes = 0;   // futex wakes made for sleeping workers
};

class WorkerPool {
 public:
  // A pool whose workers are pinned to options.cpus (when any). Errors: address_invalid
  // when a CPU of the list does not exist or this process may not run on any of them
  // (sched_setaffinity's EINVAL), others from the kernel; no pool is left running then.
  static Result<std::unique_ptr<WorkerPool>, engine::IoError> start(const WorkerPoolOptions& options);
  // A pool whose workers keep the creating thread's CPU affinity: options.cpus must be
  // empty (start() pins).
  explicit WorkerPool(const WorkerPoolOptions& options = {});
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // ---- any thread ----

  // Takes a place in the queue: false when queue_jobs_max jobs wait already or the pool is
  // stopping (counted in refused). A reservation is used by submit_reserved() or given
  // back by cancel_reservation().
  bool try_reserve() noexcept;
  void cancel_reservation() noexcept;
  // Queues `job` in the place reserved before; wakes an idle worker if there is one.
  void submit_reserved(PoolJob& job) noexcept;
  // Queues `job` as submit_reserved() does but wakes nobody: the caller calls
  // wake_for_queued() after its batch (a loop, at the end of its turn). Until then the
  // job may wait for a worker that sleeps.
  void submit_reserved_quiet(PoolJob& job) noexcept;
  // Wakes a worker for what was queued quietly, if one is wanted (the rule of
  // submit_reserved()).
  void wake_for_queued() noexcept;
  // try_reserve(), then submit_reserved(): false (nothing queued) when full.
  bool try_submit(PoolJob& job) noexcept {
    if (!try_reserve()) return false;
    submit_reserved(job);
    return true;
  }

  uint32_t threads() const noexcept { return thread_count_; }
  bool wake_per_turn() const noexcept { return wake_per_turn_; }
  // Jobs reserved or queued and not yet taken by a worker (a snapshot).
  uint32_t queued() const noexcept { return admitted_.load(std::memory_order_relaxed); }
  WorkerPoolStats stats() const noexcept;

 private:
  struct Cell {
    std::atomic<uint64_t> sequence{0};
    PoolJob* job = nullptr;
  };
  struct alignas(cache_line_bytes) Worker {
    engine::WakeWord wake;
    std::thread thread;
    std::atomic<uint64_t> run{0};
    // When its running job started (engine::Loop::clock_ns); 0 between jobs. Written by the
    // worker, read by wakers deciding whether it will look at the queue soon.
    std::atomic<uint64_t> job_started_ns{0};
  };

  void push(PoolJob& job) noexcept;
  PoolJob* try_pop() noexcept;
  bool looks_empty() const noexcept;
  // Wakes one idle worker, if any is announced and no wake is on its way; returns whether
  // it woke one.
  bool wake_one_idle() noexcept;
  // Whether a job queued now wants another worker woken, given `idle` (a value of the idle
  // mask that the caller read after the job was queued): see "Wakes worth their cost".
  bool wake_wanted(uint64_t idle) const noexcept;
  // Folds one job's run time into the pool's average.
  void note_job_ns(uint64_t job_ns) noexcept;
  // A worker found itself awake after its announcement: takes its bit back, and ends the
  // wake a waker marked for it.
  void settle_awake(uint64_t bit) noexcept;
  void run_worker(uint32_t index) noexcept;

  const uint32_t thread_count_;
  const uint32_t queue_jobs_max_;
  const uint64_t spin_ns_;
  const uint64_t wake_worth_ns_;
  const bool wake_per_turn_;
  const uint64_t workers_mask_;  // a bit per worker
  const uint64_t mask_;
  std::unique_ptr<Cell[]> cells_;
  std::unique_ptr<Worker[]> workers_;
  alignas(cache_line_bytes) std::atomic<uint64_t> enqueue_position_{0};
  alignas(cache_line_bytes) std::atomic<uint64_t> dequeue_position_{0};
  // Bit i < waking_index: worker i announced its sleep; waking_bit: a woken worker has not
  // run yet (submitters wake nobody meanwhile); spinner_bit: a worker spins.
  static constexpr uint32_t waking_index = 62;
  static constexpr uint64_t waking_bit = uint64_t{1} << waking_index;
  static constexpr uint64_t spinner_bit = uint64_t{1} << 63;
  static_assert(limits::worker_pool_threads_max <= waking_index, "a bit per worker, the waking and spinner bits");
  alignas(cache_line_bytes) std::atomic<uint64_t> idle_mask_{0};
  alignas(cache_line_bytes) std::atomic<uint32_t> admitted_{0};   // reserved or queued, not yet taken
  // The average run time of a job (an exponential average over the workers' jobs; a
  // statistic: the workers' updates may overwrite each other).
  std::atomic<uint64_t> job_ns_average_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> submitted_{0};
  std::atomic<uint64_t> refused_{0};
};

}  // namespace ringmux::mux
