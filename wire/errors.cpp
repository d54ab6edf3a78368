#include "ringmux/wire/errors.h"

namespace ringmux::wire {

const char* describe(WireError e) noexcept {
  switch (e) {
    case WireError::none: return "no error";
    case WireError::bad_header_checksum: return "frame header checksum mismatch";
    case WireError::bad_payload_checksum: return "frame payload checksum mismatch";
    case WireError::payload_too_large: return "frame payload longer than the limit";
    case WireError::unknown_kind: return "unknown frame kind (not ignorable)";
    case WireError::bad_flags: return "flag not defined for this frame kind";
    case WireError::reserved_nonzero: return "reserved header field is not zero";
    case WireError::stream_id_required: return "stream frame on stream 0";
    case WireError::stream_id_forbidden: return "connection frame on a stream";
    case WireError::payload_truncated: return "frame payload shorter than its fixed fields";
    case WireError::trailing_bytes: return "frame payload longer than its kind allows";
    case WireError::bad_value: return "frame field has a value the protocol forbids";
    case WireError::bad_magic: return "handshake without the RMUX magic";
    case WireError::version_unsupported: return "no protocol version in common";
  }
  return "unknown wire error";
}

}  // namespace ringmux::wire
