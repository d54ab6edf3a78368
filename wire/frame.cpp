#include "ringmux/wire/frame.h"

namespace ringmux::wire {

const char* describe(StatusCode code) noexcept {
  switch (code) {
    case StatusCode::ok: return "ok";
    case StatusCode::cancelled: return "cancelled";
    case StatusCode::deadline_exceeded: return "deadline exceeded";
    case StatusCode::refused_stream: return "stream refused (retryable)";
    case StatusCode::unknown_handler: return "unknown handler";
    case StatusCode::handler_error: return "handler error";
    case StatusCode::flow_control_error: return "flow-control violation";
    case StatusCode::protocol_error: return "protocol error";
    case StatusCode::internal_error: return "internal error";
    case StatusCode::session_lost: return "session lost";
    case StatusCode::stream_stopped: return "stream stopped by the reader";
    case StatusCode::going_away: return "going away";
    case StatusCode::resource_exhausted: return "resource exhausted";
    case StatusCode::resume_position_ahead: return "resume refused: position ahead of what was sent";
    case StatusCode::resume_position_gone: return "resume refused: position no longer held";
    case StatusCode::resume_unknown_session: return "resume refused: unknown session";
    case StatusCode::version_unsupported: return "no common protocol version";
    case StatusCode::resume_unauthenticated: return "resume refused: not authenticated";
  }
  return "unknown status";
}

StatusCode status_from_wire(uint32_t value) noexcept {
  if (value <= static_cast<uint32_t>(StatusCode::resume_unauthenticated)) return static_cast<StatusCode>(value);
  return StatusCode::internal_error;
}

bool is_known_kind(uint8_t kind) noexcept {
  return kind >= static_cast<uint8_t>(FrameKind::hello) && kind <= static_cast<uint8_t>(FrameKind::error);
}

bool in_position_space(FrameKind kind) noexcept {
  switch (kind) {
    case FrameKind::open:
    case FrameKind::data:
    case FrameKind::end:
    case FrameKind::reset:
    case FrameKind::stop:
    case FrameKind::credit:
    case FrameKind::goaway:
    case FrameKind::error:
      return true;
    case FrameKind::hello:
    case FrameKind::hello_ack:
    case FrameKind::ping:
    case FrameKind::pong:
    case FrameKind::ack:
      return false;
  }
  return false;
}

const char* describe(FrameKind kind) noexcept {
  switch (kind) {
    case FrameKind::hello: return "HELLO";
    case FrameKind::hello_ack: return "HELLO_ACK";
    case FrameKind::open: return "OPEN";
    case FrameKind::data: return "DATA";
    case FrameKind::end: return "END";
    case FrameKind::reset: return "RESET";
    case FrameKind::stop: return "STOP";
    case FrameKind::credit: return "CREDIT";
    case FrameKind::ping: return "PING";
    case FrameKind::pong: return "PONG";
    case FrameKind::ack: return "ACK";
    case FrameKind::goaway: return "GOAWAY";
    case FrameKind::error: return "ERROR";
  }
  return "UNKNOWN";
}

}  // namespace ringmux::wire
