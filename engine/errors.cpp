#include "ringmux/engine/errors.h"

#include <cerrno>
#include <cstring>

#include "ringmux/base/assert.h"
#include "ringmux/base/log.h"

namespace ringmux::engine {

const char* describe(IoError e) noexcept {
  switch (e) {
    case IoError::none: return "no error";
    case IoError::closed: return "connection closed by peer";
    case IoError::reset: return "connection reset by peer";
    case IoError::refused: return "connection refused";
    case IoError::timed_out: return "operation timed out";
    case IoError::canceled: return "operation canceled";
    case IoError::unreachable: return "network or host unreachable";
    case IoError::address_in_use: return "address already in use";
    case IoError::address_invalid: return "address not valid here";
    case IoError::too_many_files: return "too many open files";
    case IoError::no_memory: return "kernel out of memory";
    case IoError::not_supported: return "io_uring feature not supported by this kernel";
    case IoError::permission_denied: return "permission denied";
    case IoError::handshake_failed: return "handshake failed (peer not authenticated, not speaking TLS, or damaged)";
    case IoError::other: return "unexpected I/O error";
  }
  return "unknown I/O error";
}

Scope scope_of(IoError e) noexcept {
  switch (e) {
    case IoError::not_supported:
    case IoError::no_memory:
    case IoError::too_many_files:
    case IoError::permission_denied:
      return Scope::fatal;
    case IoError::none:
    case IoError::closed:
    case IoError::reset:
    case IoError::refused:
    case IoError::timed_out:
    case IoError::canceled:
    case IoError::unreachable:
    case IoError::address_in_use:
    case IoError::address_invalid:
    case IoError::handshake_failed:
    case IoError::other:
      return Scope::connection;
  }
  return Scope::connection;
}

IoError io_error_from_errno(int err) noexcept {
  RM_ASSERT(err > 0);
  // EINTR/EAGAIN are retried by the operation that saw them; reaching here is a bug.
  RM_ASSERT(err != EINTR && err != EAGAIN);
  switch (err) {
    case ECONNRESET:
    case EPIPE:
    case ECONNABORTED:
      return IoError::reset;
    case ECONNREFUSED: return IoError::refused;
    case ETIMEDOUT:
    case ETIME:
      return IoError::timed_out;
    case ECANCELED: return IoError::canceled;
    case ENETUNREACH:
    case EHOSTUNREACH:
    case ENETDOWN:
      return IoError::unreachable;
    case EADDRINUSE: return IoError::address_in_use;
    case EADDRNOTAVAIL:
    case EAFNOSUPPORT:
      return IoError::address_invalid;
    case EMFILE:
    case ENFILE:
      return IoError::too_many_files;
    case ENOMEM: return IoError::no_memory;
    case ENOSYS:
    case EOPNOTSUPP:
      return IoError::not_supported;
    case EACCES:
    case EPERM:
      return IoError::permission_denied;
    default: return IoError::other;
  }
}

IoError io_error_from_errno_logged(int err, const char* operation, int fd) noexcept {
  const IoError error = io_error_from_errno(err);
  RM_LOG(error == IoError::other ? LogSeverity::error : LogSeverity::debug, LogSubsystem::engine, 0, 0, err,
         "%s on fd %d failed: %s (%s)", operation, fd, strerrordesc_np(err) != nullptr ? strerrordesc_np(err) : "?",
         describe(error));
  return error;
}

}  // namespace ringmux::engine
