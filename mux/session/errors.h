// MuxError: errors of streams and sessions, each with its scope.
//
// Stream-scoped errors end one stream and leave the connection alone; connection-scoped
// ones close the connection (the session may resume); session-scoped ones end the session
// (no resume can save it). Which is which is decided here, in
// scope_of, and nowhere else. Pure functions: callable from any thread.
#pragma once

#include <cstdint>
#include <system_error>

#include "ringmux/base/errors.h"
#include "ringmux/wire/frame.h"

namespace ringmux::mux {

enum class MuxError : uint8_t {
  none = 0,
  // Stream-scoped: the operation fails, the stream ends (or already has).
  stream_closed,      // sending after END, or on a stream that is done
  stream_reset,       // the stream was reset (by either side); see the reset code
  stream_stopped,     // the peer sent STOP: it reads no more, so writes fail at once
  cancelled,          // cancelled locally or by the peer
  deadline_exceeded,  // the call's deadline passed
  refused,            // over the peer's concurrency limit: retryable
  unknown_handler,    // the peer has no handler with that id
  handler_error,      // the remote handler failed
  resource_exhausted,  // a limit of the peer or ours (request size, buffered bytes): later
  // Connection-scoped: the peer broke the protocol.
  protocol_violation,  // a frame the stream's state does not allow
  flow_control,        // data beyond the granted credit
  flood,               // control frames or resets faster than the limits allow
  limit_exceeded,      // the peer held a resource past its limit (a frame left incomplete)
  peer_error,          // the peer reported a connection error (ERROR on stream 0)
  connection_lost,     // the transport failed: closed, reset, or the peer fell silent
  ack_beyond_sent,     // the peer acknowledged replay positions we never sent
  // Session-scoped: a new session is the only way on.
  session_lost,  // the session cannot resume: the handshake refused it (unknown to the peer,
                 // positions that no longer agree, no common version) or the resume timeout passed
};

const char* describe(MuxError e) noexcept;
inline const char* category_name(MuxError) noexcept { return "ringmux.mux"; }
inline std::error_code make_error_code(MuxError e) noexcept { return make_error_code_for(e); }
Scope scope_of(MuxError e) noexcept;
// The status code that tells the peer about `e` in a RESET or ERROR frame.
wire::StatusCode status_of(MuxError e) noexcept;
// The local error that a peer's RESET / STOP status code means.
MuxError error_from_status(wire::StatusCode code) noexcept;

}  // namespace ringmux::mux

template <>
struct std::is_error_code_enum<ringmux::mux::MuxError> : std::true_type {};
