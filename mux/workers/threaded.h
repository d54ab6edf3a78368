// Access to a Connection from application threads (a storage node's workers).
//
// The connection lives on its loop and is touched only there: every call made here
// reaches the loop as a posted task (lock-free stack plus an eventfd wake-up, see
// engine::Loop::post), and results come back through memory the calling thread owns.
//
//   RemoteCaller: unary calls, blocking with a deadline or asynchronous.
//   WorkerStream (mux/workers/worker_stream.h): one stream served by worker threads.
//
// Lifetime: a RemoteCaller must not outlive its Connection, and the Connection must not
// be destroyed while a call made through it is in flight.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "ringmux/base/result.h"
#include "ringmux/mux/link/connection.h"
#include "ringmux/mux/rpc/call.h"
#include "ringmux/mux/workers/worker_stream.h"

namespace ringmux::mux {

// The outcome of a unary call made from another thread: the response (owned), or the
// error and the peer's message.
struct CallOutcome {
  MuxError error = MuxError::none;
  std::vector<std::byte> response;
  std::string message;

  // Copies the response out of the loop's receive buffer.
  static CallOutcome of(const CallResult& result);
};

class RemoteCaller {
 public:
  explicit RemoteCaller(Connection& connection) noexcept : connection_(connection) {}

  // Any thread but the connection's loop thread (it would deadlock: asserted). Blocks
  // until the response, the error, or `deadline_ns` (monotonic clock; 0 = none), whose
  // expiry cancels the call on the peer too. `request` is read on the loop while this
  // blocks: no copy is made of it here.
  CallOutcome call(uint32_t handler_id, std::span<const std::byte> request, uint64_t deadline_ns) noexcept;

  // Any thread. Returns at once; `done` runs on the loop thread (it must not block) with
  // the result. `request` is moved into the posted task.
  void call_async(uint32_t handler_id, std::vector<std::byte> request, uint64_t deadline_ns, CallCallback done);

 private:
  Connection& connection_;
};

}  // namespace ringmux::mux
