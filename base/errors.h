// Error vocabulary shared by every layer: error scopes and the std::error_code bridge
// for per-layer error enums.
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

}  // namespace ringmux
