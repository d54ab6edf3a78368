// ReplayError: every way replay and resume can fail, each with its scope.
//
// The sender's held batches, the receiver's position tracking and the resume handshake share this
// one enum. Session-scoped errors mean the two sides no longer agree on the position
// space (or one of them lost it): the session cannot resume and every stream fails with
// session_lost; a new session is the only way on. Connection-scoped errors close the
// current TCP connection; the session may resume on a new one. Which is which is decided
// in scope_of and nowhere else. Pure functions: callable from any thread.
#pragma once

#include <cstdint>
#include <system_error>

#include "ringmux/base/errors.h"
#include "ringmux/wire/frame.h"

namespace ringmux::replay {

enum class ReplayError : uint8_t {
  none = 0,
  // The sender's held batches (replay/held.h).
  ack_ahead,       // connection: an ACK for bytes beyond the tail, bytes that were never sent;
                   // the connection closes and the resume goes by the handshake's positions
  position_gone,   // session: a rewind to before the acked position; those bytes were released
  position_ahead,  // session: a rewind to beyond the tail; those bytes were never written
  // The resume handshake (replay/handshake.h); the first four match HELLO_ACK status codes.
  resume_position_ahead,   // session: the resume position lies beyond what the sender sent
  resume_position_gone,    // session: the sender no longer holds the bytes from that position
  resume_unknown_session,  // session: the accepting side does not know the session (it restarted)
  version_unsupported,     // session: no protocol version in common with the peer
  resume_unauthenticated,  // the resume did not prove the session's secret or came from another
                           // peer identity (SPEC §8.2): refused, and the session it named goes on;
                           // session-scoped for the dialer that hears it
  superseded_generation,   // connection: a HELLO or HELLO_ACK of an older connection generation
                           // than the current one; it is ignored and its connection closed
  handshake_refused,       // connection: the peer refused for a passing reason (going_away,
                           // resource_exhausted, ...); try again later
  handshake_violation,     // connection: a HELLO or HELLO_ACK that breaks the handshake rules
                           // (wrong session id, generation 0, no HELLO outstanding, ...)
};

const char* describe(ReplayError e) noexcept;
inline const char* category_name(ReplayError) noexcept { return "ringmux.replay"; }
inline std::error_code make_error_code(ReplayError e) noexcept { return make_error_code_for(e); }
Scope scope_of(ReplayError e) noexcept;

// The status code that tells the peer about `e`: in a HELLO_ACK that refuses a handshake,
// or in an ERROR on stream 0 before closing. internal_error for the two errors that are
// never sent (superseded_generation closes without an answer; handshake_refused is the
// peer's own verdict).
wire::StatusCode status_of(ReplayError e) noexcept;

}  // namespace ringmux::replay

template <>
struct std::is_error_code_enum<ringmux::replay::ReplayError> : std::true_type {};
