// WireError: every way a byte stream can fail to be ringmux frames.
//
// All wire errors are connection-scoped: once the decoder has seen one, the bytes that
// follow cannot be trusted to be frame boundaries, so the connection is closed (and the
// session may resume on a new one). Pure functions: callable from any thread.
#pragma once

#include <cstdint>
#include <system_error>

#include "ringmux/base/errors.h"

namespace ringmux::wire {

enum class WireError : uint8_t {
  none = 0,
  bad_header_checksum,   // header checksum mismatch: the length cannot be trusted
  bad_payload_checksum,  // payload checksum mismatch
  payload_too_large,     // header claims more than limits::frame_payload_bytes_max
  unknown_kind,          // a kind this version does not know, without the ignorable bit
  bad_flags,             // a flag bit that is not defined for this kind
  reserved_nonzero,      // the header's reserved field is not zero
  stream_id_required,    // a stream frame (OPEN, DATA, END, RESET, STOP) on stream 0
  stream_id_forbidden,   // a connection frame (HELLO, PING, ACK, ...) on a stream
  payload_truncated,     // the payload is shorter than the kind's fixed fields
  trailing_bytes,        // the payload is longer than a fixed-size kind allows
  bad_value,             // a field value the spec forbids (zero credit, text too long)
  bad_magic,             // a HELLO without the "RMUX" magic: not a ringmux peer
  version_unsupported,   // no protocol version in common with the peer
};

const char* describe(WireError e) noexcept;
inline const char* category_name(WireError) noexcept { return "ringmux.wire"; }
inline std::error_code make_error_code(WireError e) noexcept { return make_error_code_for(e); }
inline Scope scope_of(WireError) noexcept { return Scope::connection; }

}  // namespace ringmux::wire

template <>
struct std::is_error_code_enum<ringmux::wire::WireError> : std::true_type {};
