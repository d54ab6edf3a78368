#include "ringmux/mux/workers/blocking.h"

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ringmux/base/assert.h"
#include "ringmux/base/pool.h"
#include "ringmux/engine/loop.h"

namespace ringmux::mux {

namespace {

std::string queue_full_message(const WorkerPool& pool) {
  return "blocking handler refused: the worker pool's queue is full (" + std::to_string(pool.queued()) +
         " calls wait for its " + std::to_string(pool.threads()) +
         " workers; limits::worker_pool_queue_jobs_max); retry";
}

// The pools a loop thread queued calls to in its current turn: each is woken once, at the
// end of the turn (engine::Loop::defer), for the turn's calls together (WorkerPoolOptions::
// wake_per_turn). Per thread: a loop is one thread, and its turn's deferred work runs
// before the turn ends, so the node is never queued when the loop goes.
class TurnWakes {
 public:
  static void submit(engine::Loop& loop, WorkerPool& pool, PoolJob& job) noexcept {
    if (!pool.wake_per_turn()) return pool.submit_reserved(job);
    thread_local TurnWakes wakes;
    pool.submit_reserved_quiet(job);
    if (std::find(wakes.pools_.begin(), wakes.pools_.end(), &pool) == wakes.pools_.end()) {
      wakes.pools_.push_back(&pool);  // keeps its capacity: no allocation after the first turns
    }
    loop.defer(wakes.turn_end_);
  }

 private:
  TurnWakes() : turn_end_(&TurnWakes::on_turn_end, this) {}
  static void on_turn_end(engine::Deferred& node) noexcept {
    auto& self = *static_cast<TurnWakes*>(node.context());
    for (WorkerPool* pool : self.pools_) pool->wake_for_queued();
    self.pools_.clear();
  }

  engine::Deferred turn_end_;
  std::vector<WorkerPool*> pools_;
};

// One blocking unary call between the loop and a worker.
//
// The loop makes it (start()), a worker runs the handler (on_run) and posts it back, the
// loop sends the answer and frees it (on_task). Shared state and who writes it:
//   request_, deadline_ns_      set by the loop before the submit, read-only afterwards;
//   response_, status_, ...     written by the worker, read by the loop after it took
//                               request_complete (the release/acquire pair of pending_);
//   cancel_state_               bits set by either side (cancel_bit: the loop, callback_bit:
//                               the worker); each side calls the callback only when its own
//                               fetch_or found the other bit, so exactly one side calls it;
//   pending_                    requests to the loop: whoever turns it from 0 posts task_.
// The responder is touched on the loop only.
class UnaryJob final : public BlockingCall, public Pooled<UnaryJob> {
 public:
  UnaryJob(std::span<const std::byte> request, std::shared_ptr<Responder> responder,
           const BlockingUnaryHandler& handler, bool ordered)
      : loop_(responder->connection().loop()),
        responder_(std::move(responder)),
        handler_(handler),
        ordered_(ordered),
        deadline_ns_(responder_->deadline_ns()),
        request_(request.begin(), request.end()) {
    pool_job_.run = &UnaryJob::on_run;
    pool_job_.owner = this;
    task_.run = &UnaryJob::on_task;
    task_.owner = this;
  }
  ~UnaryJob() { RM_ASSERT(pending_.load(std::memory_order_relaxed) == 0 && charged_bytes_ == 0); }

  // Loop thread: refuses the call when the pool is full, else submits it.
  static void start(WorkerPool& pool, const BlockingUnaryHandler& handler, bool ordered,
                    std::span<const std::byte> request, std::shared_ptr<Responder> responder) noexcept {
    if (!pool.try_reserve()) return responder->fail(wire::StatusCode::refused_stream, queue_full_message(pool));
    Connection& connection = responder->connection();
    // The copy waits for a worker: charged to the connection's RPC buffer like a request
    // being gathered, until the call's end.
    if (!connection.rpc_charge(request.size())) {
      pool.cancel_reservation();
      return responder->fail(wire::StatusCode::resource_exhausted,
                             "blocking handler refused: this connection's RPC buffer is over its limit of " +
                                 std::to_string(connection.options().rpc_bytes_max) +
                                 " bytes (limits::connection_rpc_bytes_max)");
    }
    auto* job = new UnaryJob(request, responder, handler, ordered);
    job->charged_bytes_ = request.size();
    // The responder calls this on the loop if the call is cancelled before the reply went
    // out (peer reset, deadline, connection gone); the job lives until its task ran, after
    // which the responder is done and calls it no more.
    job->responder_->on_cancel([job] { job->cancel_on_loop(); });
    TurnWakes::submit(job->loop_, pool, job->pool_job_);
  }

  // ---- BlockingCall, on the worker ----

  std::span<const std::byte> request() const noexcept override { return request_; }
  uint64_t deadline_ns() const noexcept override { return deadline_ns_; }
  bool cancelled() const noexcept override {
    if ((cancel_state_.load(std::memory_order_acquire) & cancel_bit) != 0) return true;
    return deadline_ns_ != 0 && engine::Loop::clock_ns() >= deadline_ns_;
  }
  void on_cancel(std::function<void()> callback) noexcept override {
    RM_ASSERT(callback && !cancel_callback_);  // one per call
    cancel_callback_ = std::move(callback);
    const uint32_t before = cancel_state_.fetch_or(callback_bit, std::memory_order_acq_rel);
    if ((before & cancel_bit) != 0) cancel_callback_();  // cancelled already: the loop did not call it
  }
  void reply(std::span<const std::byte> response) noexcept override {
    if (answered_) return;
    answered_ = true;
    response_.assign(response.begin(), response.end());
  }
  void fail(wire::StatusCode status, std::string_view message) noexcept override {
    if (answered_) return;
    answered_ = true;
    status_ = status == wire::StatusCode::ok ? wire::StatusCode::handler_error : status;
    message_.assign(message);
  }
  void release() noexcept override {
    if (!ordered_ || released_) return;
    released_ = true;
    request_loop(request_release);
  }

 private:
  enum Request : uint32_t {
    request_release = 1,   // an ordered handler let the next request start
    request_complete = 2,  // the handler returned: the answer is ready
  };
  static constexpr uint32_t cancel_bit = 1;
  static constexpr uint32_t callback_bit = 2;

  struct RunNode : PoolJob {
    UnaryJob* owner = nullptr;
  };
  struct TaskNode : engine::Task {
    UnaryJob* owner = nullptr;
  };

  static void on_run(PoolJob* node) noexcept {
    UnaryJob& self = *static_cast<RunNode*>(node)->owner;
    // A call cancelled while it waited for a worker never starts.
    if (!self.cancelled()) self.handler_(self);
    if (!self.answered_) self.fail(wire::StatusCode::handler_error, "blocking handler returned without a reply");
    self.request_loop(request_complete);  // the job is the loop's from here: not touched again
  }

  // Worker: hands `bits` to the loop; posts the task unless it is queued already (then the
  // loop takes these bits with the others).
  void request_loop(uint32_t bits) noexcept {
    engine::Loop& loop = loop_;
    engine::Task* task = &task_;
    if (pending_.fetch_or(bits, std::memory_order_acq_rel) != 0) return;
    loop.post(task);
  }

  static void on_task(engine::Task* node) noexcept {
    UnaryJob& self = *static_cast<TaskNode*>(node)->owner;
    const uint32_t bits = self.pending_.exchange(0, std::memory_order_acq_rel);
    RM_ASSERT(bits != 0);
    if ((bits & request_release) != 0) self.responder_->release();
    if ((bits & request_complete) != 0) self.complete();
  }

  // Loop: sends the answer (the responder drops it if the call was cancelled meanwhile).
  void complete() noexcept {
    release_charge();
    responder_->on_cancel(nullptr);
    if (status_ == wire::StatusCode::ok) {
      responder_->reply(response_);
    } else {
      responder_->fail(status_, message_);
    }
    delete this;
  }

  void cancel_on_loop() noexcept {
    release_charge();  // the connection may be going: give its bytes back while it is there
    const uint32_t before = cancel_state_.fetch_or(cancel_bit, std::memory_order_acq_rel);
    if ((before & callback_bit) != 0) cancel_callback_();
  }

  void release_charge() noexcept {
    if (charged_bytes_ == 0) return;
    responder_->connection().rpc_release(std::exchange(charged_bytes_, 0));
  }

  engine::Loop& loop_;
  std::shared_ptr<Responder> responder_;  // the loop's
  const BlockingUnaryHandler& handler_;   // held by the Registry's handler
  const bool ordered_;
  const uint64_t deadline_ns_;
  const std::vector<std::byte> request_;
  std::size_t charged_bytes_ = 0;  // the loop's: request_ charged to the connection
  RunNode pool_job_;
  TaskNode task_;
  std::atomic<uint32_t> pending_{0};
  std::atomic<uint32_t> cancel_state_{0};
  std::function<void()> cancel_callback_;
  // The worker's until request_complete, then the loop's.
  bool answered_ = false;
  bool released_ = false;
  wire::StatusCode status_ = wire::StatusCode::ok;
  std::vector<std::byte> response_;
  std::string message_;
};

// A stream served on a worker: made on the loop, run and freed on the worker.
struct StreamJob final : PoolJob {
  StreamJob(std::shared_ptr<WorkerStream> stream_ref, const BlockingStreamHandler& handler_ref,
            const BlockingStreamStart& start_ref) noexcept
      : stream(std::move(stream_ref)), handler(handler_ref), start(start_ref) {
    run = &StreamJob::on_run;
  }
  static void on_run(PoolJob* node) noexcept {
    auto* self = static_cast<StreamJob*>(node);
    self->handler(*self->stream, self->start);
    delete self;  // drops the worker's reference to the stream
  }

  std::shared_ptr<WorkerStream> stream;
  const BlockingStreamHandler& handler;  // held by the Registry's handler
  BlockingStreamStart start;
};

void add_unary_on_pool(Registry& registry, uint32_t handler_id, WorkerPool& pool, BlockingUnaryHandler handler,
                       UnaryLimits limits, bool ordered) {
  RM_ASSERT(handler);
  auto shared = std::make_shared<BlockingUnaryHandler>(std::move(handler));
  auto start = [&pool, shared, ordered](std::span<const std::byte> request, std::shared_ptr<Responder> responder) {
    UnaryJob::start(pool, *shared, ordered, request, std::move(responder));
  };
  if (ordered) {
    registry.add_unary_ordered(handler_id, std::move(start), limits);
  } else {
    registry.add_unary(handler_id, std::move(start), limits);
  }
}

}  // namespace

void add_blocking_unary(Registry& registry, uint32_t handler_id, WorkerPool& pool, BlockingUnaryHandler handler,
                        UnaryLimits limits) {
  add_unary_on_pool(registry, handler_id, pool, std::move(handler), limits, false);
}

void add_blocking_unary_ordered(Registry& registry, uint32_t handler_id, WorkerPool& pool,
                                BlockingUnaryHandler handler, UnaryLimits limits) {
  add_unary_on_pool(registry, handler_id, pool, std::move(handler), limits, true);
}

void add_blocking_stream(Registry& registry, uint32_t handler_id, WorkerPool& pool, BlockingStreamHandler handler,
                         const WorkerStreamOptions& options) {
  RM_ASSERT(handler);
  auto shared = std::make_shared<BlockingStreamHandler>(std::move(handler));
  registry.add_stream(handler_id, [&pool, shared, options](const StreamStart& start) -> StreamObserver* {
    if (!pool.try_reserve()) {
      start.refusal = MuxError::refused;  // retryable: nothing was read
      return nullptr;
    }
    WorkerStream::Served served = WorkerStream::serve(start, options);
    auto* job = new StreamJob(std::move(served.stream), *shared, {start.id, start.handler_id, start.deadline_ns});
    pool.submit_reserved(*job);
    return served.observer;
  });
}

}  // namespace ringmux::mux
