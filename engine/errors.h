// The engine's errors: IoError, what an operation on a socket or the ring can end with
// (base/errors.h has the vocabulary every layer's errors share).
#pragma once

#include <cstdint>
#include <system_error>

#include "ringmux/base/errors.h"

namespace ringmux {
namespace engine {

// Errors of the io_uring runtime: what an operation on a socket or the ring can end with.
// Mapped from errno in one place (io_error_from_errno); EINTR and EAGAIN never leave
// engine/. Every IoError is connection-scoped except the setup errors, which are fatal.
enum class IoError : uint8_t {
  none = 0,
  closed,             // the peer closed its side in order (recv returned 0)
  reset,              // ECONNRESET, EPIPE: the peer reset the connection or it is gone
  refused,            // ECONNREFUSED: nobody listens at the address
  timed_out,          // ETIMEDOUT, or our own connect timeout fired
  canceled,           // the operation was canceled by teardown (ECANCELED)
  unreachable,        // ENETUNREACH, EHOSTUNREACH, ENETDOWN
  address_in_use,     // EADDRINUSE on bind
  address_invalid,    // EADDRNOTAVAIL, EAFNOSUPPORT, or an address string that does not parse
  too_many_files,     // EMFILE, ENFILE: the process or the system is out of descriptors
  no_memory,          // ENOMEM: the kernel could not allocate
  not_supported,      // the kernel lacks an io_uring feature the operation needs
  permission_denied,  // EACCES, EPERM
  handshake_failed,   // a handshake stage refused the peer or its bytes (TLS: certificate not
                      // accepted, not TLS, alert, damaged record); the cause goes to the log hook
  other,              // any errno not listed above; the raw value goes to the log hook (base/log.h)
};

const char* describe(IoError e) noexcept;
inline const char* category_name(IoError) noexcept { return "ringmux.io"; }
inline std::error_code make_error_code(IoError e) noexcept { return make_error_code_for(e); }
Scope scope_of(IoError e) noexcept;

// Maps a positive errno value (a completion's -res) to IoError. The one switch of the
// engine; callers never see EINTR or EAGAIN because the engine retries those itself.
IoError io_error_from_errno(int err) noexcept;

// io_error_from_errno for a failed `operation` on `fd` (-1: none), which also hands the raw
// errno to the log hook (base/log.h), since the IoError may not keep it: at error severity
// when it maps to `other`, at debug severity otherwise (a peer's reset is routine).
IoError io_error_from_errno_logged(int err, const char* operation, int fd) noexcept;

}  // namespace engine
}  // namespace ringmux

template <>
struct std::is_error_code_enum<ringmux::engine::IoError> : std::true_type {};
