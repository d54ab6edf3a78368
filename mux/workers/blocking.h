// Blocking handlers: Registry handlers that run on a WorkerPool (mux/workers/worker_pool.h)
// instead of the loop, for handlers that block (a disk read, a lock, a slow computation).
//
//   WorkerPool pool({.threads = 4});
//   add_blocking_unary(registry, 7, pool, [](BlockingCall& call) {
//     if (call.cancelled()) return;                 // the peer gave up, or the deadline passed
//     call.reply(read_block(call.request()));       // copied; sent by the loop
//   });
//
// Unary (add_blocking_unary, add_blocking_unary_ordered): the loop gathers the request as
// for any unary handler (mux/rpc/server.cpp), copies it into the call's job and queues the
// job on the pool (the pool's wake decision is made once at the end of the loop's turn, for
// all the calls the turn queued: WorkerPoolOptions::wake_per_turn); a worker runs the handler, which replies or fails through its
// BlockingCall; the job then goes back to the owning loop as a posted task (engine::Loop::
// post: a lock-free stack the loop takes whole every iteration, an eventfd write only when
// the loop may sleep), which sends the reply through the call's Responder. No lock on the
// way there or back; the job is pooled, the request and response copies are its only
// allocations.
//
// Refusal: when the pool's queue is full (limits::worker_pool_queue_jobs_max) the call
// fails at once with refused_stream (MuxError::refused on the caller: retryable, nothing
// was processed; wire/SPEC.md §9).
//
// Cancellation and deadlines reach the handler: BlockingCall::cancelled() turns true when
// the peer resets the call, its deadline passes (the handler may also compare
// deadline_ns() with the clock itself) or the connection goes; on_cancel() registers a
// callback for a handler that waits on something it can interrupt. A call cancelled while
// it waits in the queue never runs its handler.
//
// Ordered (add_blocking_unary_ordered): as Registry::add_unary_ordered, the session's
// requests start one at a time in arrival order; the order is held until the reply reaches
// the loop, or until the handler calls release().
//
// Streams (add_blocking_stream): the stream is served through a WorkerStream (mux/workers/
// worker_stream.h), and the handler runs on a worker with it; a full queue refuses the
// stream (refused_stream) before anything is read.
//
// Threads: add_* on the loop threads' setup path, as the Registry's own add_*; the pool must
// outlive the Registry's connections and be destroyed while their loops still run (a job
// reports to its loop). Handlers run on the pool's workers, several at once.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <string_view>

#include "ringmux/mux/rpc/registry.h"
#include "ringmux/mux/workers/worker_pool.h"
#include "ringmux/mux/workers/worker_stream.h"

namespace ringmux::mux {

// One blocking unary call, as its handler sees it on a worker. Valid only during the
// handler's invocation (the reply travels on after it returns).
class BlockingCall {
 public:
  // The whole request, owned by the call.
  virtual std::span<const std::byte> request() const noexcept = 0;
  // The call's deadline on the monotonic clock (engine::Loop::clock_ns), 0 = none.
  virtual uint64_t deadline_ns() const noexcept = 0;
  // True once the call is cancelled (the peer reset it, the connection went) or its
  // deadline has passed: a reply is then dropped. Cheap: one atomic load (and a clock
  // read when the call has a deadline).
  virtual bool cancelled() const noexcept = 0;
  // Runs `callback` once if the call is cancelled: on the loop thread when that happens
  // later, or at once on this thread when it happened already. At most one per call. The
  // callback must own what it touches: it may run after the handler returned, until the
  // reply has reached the loop. Short and non-blocking (it runs on the loop).
  virtual void on_cancel(std::function<void()> callback) noexcept = 0;
  // The response: copied here, sent by the loop after the handler returns. Exactly one of
  // reply / fail; a handler that returns with neither fails the call with handler_error.
  virtual void reply(std::span<const std::byte> response) noexcept = 0;
  virtual void fail(wire::StatusCode status, std::string_view message) noexcept = 0;
  // Ordered handlers: lets the session's next ordered request start (on another worker)
  // while this one goes on. Idempotent; implied by returning. A no-op for unordered ones.
  virtual void release() noexcept = 0;

 protected:
  ~BlockingCall() = default;
};

using BlockingUnaryHandler = std::function<void(BlockingCall& call)>;

// What a blocking stream handler knows of its stream besides the stream itself.
struct BlockingStreamStart {
  StreamId id = 0;
  uint32_t handler_id = 0;
  uint64_t deadline_ns = 0;  // on the monotonic clock; 0 = none
};
// Runs on a worker with the stream (already holding the OPEN's payload as its first
// message); it reads and writes through `stream` and should end or cancel it before it
// returns (a stream left open stays open until the peer ends it or its deadline passes).
using BlockingStreamHandler = std::function<void(WorkerStream& stream, const BlockingStreamStart& start)>;

// Registers `handler` for `handler_id`, run on `pool` (see above). `limits` as for
// Registry::add_unary.
void add_blocking_unary(Registry& registry, uint32_t handler_id, WorkerPool& pool, BlockingUnaryHandler handler,
                        UnaryLimits limits = {});
// As Registry::add_unary_ordered, on `pool`.
void add_blocking_unary_ordered(Registry& registry, uint32_t handler_id, WorkerPool& pool,
                                BlockingUnaryHandler handler, UnaryLimits limits = {});
// Streams the peer opens for `handler_id`, each served by `handler` on a worker of `pool`.
void add_blocking_stream(Registry& registry, uint32_t handler_id, WorkerPool& pool, BlockingStreamHandler handler,
                         const WorkerStreamOptions& options = {});

}  // namespace ringmux::mux
