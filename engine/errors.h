// Error vocabulary shared by every layer: error scopes, the std::error_code bridge for
// per-layer error enums, and the engine's own IoError.
//
// Each layer keeps its errors in one `enum class` whose zero value means "no error".
// A layer makes its enum usable as a std::error_code by defining, in its namespace,
// `const char* describe(E)` and `const char* category_name(E)`, plus a
// `make_error_code(E)` that returns `make_error_code_for(e)`, and specialising
// std::is_error_code_enum. Pure functions: callable from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <system_error>

namespace ringmux {

// How far an error reaches. Decides who is told and what ends.
enum class Scope : uint8_t {
  stream,      // only that stream ends; the connection and its other streams carry on
  session,     // the session ends (for example the peer restarted); every stream fails
  connection,  // the TCP connection is unusable; the session may resume on a new one
  fatal,       // this process cannot go on with the component (setup failed, out of memory)
};

const char* describe(Scope scope) noexcept;

template <typename E>
class EnumErrorCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return category_name(E{}); }
  std::string message(int value) const override { return describe(static_cast<E>(value)); }
};

template <typename E>
const std::error_category& enum_error_category() noexcept {
  static const EnumErrorCategory<E> category;
  return category;
}

template <typename E>
std::error_code make_error_code_for(E e) noexcept {
  return {static_cast<int>(e), enum_error_category<E>()};
}

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
  other,              // any errno not listed above; the raw value is logged where it happens
};

const char* describe(IoError e) noexcept;
inline const char* category_name(IoError) noexcept { return "ringmux.io"; }
inline std::error_code make_error_code(IoError e) noexcept { return make_error_code_for(e); }
Scope scope_of(IoError e) noexcept;

// Maps a positive errno value (a completion's -res) to IoError. The one switch of the
// engine; callers never see EINTR or EAGAIN because the engine retries those itself.
IoError io_error_from_errno(int err) noexcept;

}  // namespace engine
}  // namespace ringmux

template <>
struct std::is_error_code_enum<ringmux::engine::IoError> : std::true_type {};
