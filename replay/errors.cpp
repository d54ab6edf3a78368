#include "ringmux/replay/errors.h"

namespace ringmux::replay {

const char* describe(ReplayError e) noexcept {
  switch (e) {
    case ReplayError::none: return "no error";
    case ReplayError::ack_ahead: return "acknowledgement beyond what was sent";
    case ReplayError::position_gone: return "replay position already acknowledged and released";
    case ReplayError::position_ahead: return "replay position beyond what was sent";
    case ReplayError::resume_position_ahead: return "resume refused: position beyond what was sent";
    case ReplayError::resume_position_gone: return "resume refused: bytes from that position no longer held";
    case ReplayError::resume_unknown_session: return "resume refused: unknown session (the peer restarted)";
    case ReplayError::version_unsupported: return "handshake refused: no protocol version in common";
    case ReplayError::resume_unauthenticated:
      return "resume refused: no valid proof of the session's secret, or another peer identity";
    case ReplayError::superseded_generation: return "handshake of a superseded connection generation";
    case ReplayError::handshake_refused: return "handshake refused by the peer; retry later";
    case ReplayError::handshake_violation: return "handshake message breaks the protocol";
  }
  return "unknown replay error";
}

Scope scope_of(ReplayError e) noexcept {
  switch (e) {
    case ReplayError::position_gone:
    case ReplayError::position_ahead:
    case ReplayError::resume_position_ahead:
    case ReplayError::resume_position_gone:
    case ReplayError::resume_unknown_session:
    case ReplayError::version_unsupported:
    case ReplayError::resume_unauthenticated:
      return Scope::session;
    case ReplayError::none:
    case ReplayError::ack_ahead:
    case ReplayError::superseded_generation:
    case ReplayError::handshake_refused:
    case ReplayError::handshake_violation:
      return Scope::connection;
  }
  return Scope::connection;
}

wire::StatusCode status_of(ReplayError e) noexcept {
  using wire::StatusCode;
  switch (e) {
    case ReplayError::none: return StatusCode::ok;
    case ReplayError::ack_ahead: return StatusCode::protocol_error;
    case ReplayError::position_gone: return StatusCode::resume_position_gone;
    case ReplayError::position_ahead: return StatusCode::resume_position_ahead;
    case ReplayError::resume_position_ahead: return StatusCode::resume_position_ahead;
    case ReplayError::resume_position_gone: return StatusCode::resume_position_gone;
    case ReplayError::resume_unknown_session: return StatusCode::resume_unknown_session;
    case ReplayError::version_unsupported: return StatusCode::version_unsupported;
    case ReplayError::resume_unauthenticated: return StatusCode::resume_unauthenticated;
    case ReplayError::handshake_violation: return StatusCode::protocol_error;
    case ReplayError::superseded_generation:  // never answered: the connection just closes
    case ReplayError::handshake_refused:      // the peer's verdict, never ours to send
      return StatusCode::internal_error;
  }
  return StatusCode::internal_error;
}

}  // namespace ringmux::replay
