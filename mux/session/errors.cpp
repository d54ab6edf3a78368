#include "ringmux/mux/session/errors.h"

namespace ringmux::mux {

const char* describe(MuxError e) noexcept {
  switch (e) {
    case MuxError::none: return "no error";
    case MuxError::stream_closed: return "stream closed for sending";
    case MuxError::stream_reset: return "stream reset";
    case MuxError::stream_stopped: return "peer stopped reading the stream";
    case MuxError::cancelled: return "cancelled";
    case MuxError::deadline_exceeded: return "deadline exceeded";
    case MuxError::refused: return "stream refused by the peer (retryable)";
    case MuxError::unknown_handler: return "no handler with that id on the peer";
    case MuxError::handler_error: return "the remote handler failed";
    case MuxError::resource_exhausted: return "a limit was hit (request or response size, buffered bytes); retry later";
    case MuxError::protocol_violation: return "peer violated the stream protocol";
    case MuxError::flow_control: return "peer sent beyond its flow-control credit";
    case MuxError::flood: return "peer sent control frames or resets past the limits";
    case MuxError::limit_exceeded: return "peer held a resource past its limit (a frame not completed in time)";
    case MuxError::peer_error: return "peer reported a connection error";
    case MuxError::connection_lost: return "connection lost (closed, reset or silent peer)";
    case MuxError::ack_beyond_sent: return "peer acknowledged bytes that were never sent";
    case MuxError::session_lost: return "session lost: it cannot resume (refused by the peer or out of time)";
  }
  return "unknown mux error";
}

Scope scope_of(MuxError e) noexcept {
  switch (e) {
    case MuxError::protocol_violation:
    case MuxError::flow_control:
    case MuxError::flood:
    case MuxError::limit_exceeded:
    case MuxError::peer_error:
    case MuxError::connection_lost:
    case MuxError::ack_beyond_sent:
      return Scope::connection;
    case MuxError::session_lost:
      return Scope::session;
    case MuxError::none:
    case MuxError::stream_closed:
    case MuxError::stream_reset:
    case MuxError::stream_stopped:
    case MuxError::cancelled:
    case MuxError::deadline_exceeded:
    case MuxError::refused:
    case MuxError::unknown_handler:
    case MuxError::handler_error:
    case MuxError::resource_exhausted:
      return Scope::stream;
  }
  return Scope::connection;
}

wire::StatusCode status_of(MuxError e) noexcept {
  using wire::StatusCode;
  switch (e) {
    case MuxError::none: return StatusCode::ok;
    case MuxError::stream_closed: return StatusCode::protocol_error;
    case MuxError::stream_reset: return StatusCode::internal_error;
    case MuxError::stream_stopped: return StatusCode::stream_stopped;
    case MuxError::cancelled: return StatusCode::cancelled;
    case MuxError::deadline_exceeded: return StatusCode::deadline_exceeded;
    case MuxError::refused: return StatusCode::refused_stream;
    case MuxError::unknown_handler: return StatusCode::unknown_handler;
    case MuxError::handler_error: return StatusCode::handler_error;
    case MuxError::resource_exhausted: return StatusCode::resource_exhausted;
    case MuxError::protocol_violation: return StatusCode::protocol_error;
    case MuxError::flow_control: return StatusCode::flow_control_error;
    case MuxError::flood: return StatusCode::resource_exhausted;
    case MuxError::limit_exceeded: return StatusCode::resource_exhausted;
    case MuxError::peer_error: return StatusCode::internal_error;
    case MuxError::connection_lost: return StatusCode::internal_error;
    case MuxError::ack_beyond_sent: return StatusCode::protocol_error;
    case MuxError::session_lost: return StatusCode::session_lost;
  }
  return StatusCode::internal_error;
}

MuxError error_from_status(wire::StatusCode code) noexcept {
  using wire::StatusCode;
  switch (code) {
    case StatusCode::cancelled: return MuxError::cancelled;
    case StatusCode::deadline_exceeded: return MuxError::deadline_exceeded;
    case StatusCode::refused_stream: return MuxError::refused;
    case StatusCode::unknown_handler: return MuxError::unknown_handler;
    case StatusCode::handler_error: return MuxError::handler_error;
    case StatusCode::stream_stopped: return MuxError::stream_stopped;
    case StatusCode::resource_exhausted: return MuxError::resource_exhausted;
    case StatusCode::ok:
    case StatusCode::flow_control_error:
    case StatusCode::protocol_error:
    case StatusCode::internal_error:
    case StatusCode::session_lost:
    case StatusCode::going_away:
    case StatusCode::resume_position_ahead:
    case StatusCode::resume_position_gone:
    case StatusCode::resume_unknown_session:
    case StatusCode::version_unsupported:
    case StatusCode::resume_unauthenticated:
      return MuxError::stream_reset;
  }
  return MuxError::stream_reset;
}

}  // namespace ringmux::mux
