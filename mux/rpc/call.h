// The RPC layer's client side: unary calls over a Connection.
//
// A call is a stream: OPEN carrying the request (what the window cannot carry follows as
// DATA), one response, END. The connection owns the call's observer; the callback runs
// once on the loop thread, never inside call() or inside the Connection::cancel() that
// cancels it: an answer as it is received, an error on a turn of the loop.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "ringmux/base/inline_function.h"
#include "ringmux/mux/link/connection.h"

namespace ringmux::mux {

// Outcome of a unary call: the response bytes (valid during the callback) or an error
// with the peer's message when it sent one.
struct CallResult {
  MuxError error = MuxError::none;
  std::span<const std::byte> response;
  std::string message;
};
// Runs once per call: no allocation (the capture lives inside; at most 64 bytes).
using CallCallback = InlineFunction<void(const CallResult& result), 64>;

// Sends `request` to `handler_id` over `connection` (loop thread); `done` runs once with
// the response or the error (cancelled, deadline_exceeded at `deadline_ns` even if the
// peer is silent, refused, unknown_handler, handler_error with the peer's message, or the
// connection's error), after call() has returned. Returns the call's stream id, usable
// with Connection::cancel() (0 when the call failed at once: `done` hears why on the
// loop's next turn, also if the connection is destroyed before it).
StreamId call(Connection& connection, uint32_t handler_id, std::span<const std::byte> request, uint64_t deadline_ns,
              CallCallback done) noexcept;

}  // namespace ringmux::mux
