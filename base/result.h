// Result<T, E>: a value or an error code, for peer and OS errors.
//
// Invariant: a Result holds exactly one of a T or an E; reading the other side is a
// programmer error and asserts. E is a per-layer `enum class` (engine::IoError,
// wire::WireError, ...) whose zero value is never an error. Normal flow (full,
// would-block, back-pressured) is not an error and is never returned through E.
// No exceptions: this is the error channel of engine/, wire/, replay/ and mux/.
// A Result is a plain value; it may be used from any thread that owns it.
#pragma once

#include <new>
#include <type_traits>
#include <utility>

#include "ringmux/base/assert.h"

namespace ringmux {

// Tag type so `return Err{code};` reads as what it is.
template <typename E>
struct Err {
  E code;
};
template <typename E>
Err(E) -> Err<E>;

template <typename T, typename E>
class [[nodiscard]] Result {
  static_assert(std::is_enum_v<E>, "error type must be an enum");

 public:
  Result(T value) noexcept(std::is_nothrow_move_constructible_v<T>)  // NOLINT: implicit by design
      : ok_(true) {
    new (&value_) T(std::move(value));
  }
  Result(Err<E> err) noexcept : ok_(false), error_(err.code) {}  // NOLINT: implicit by design

  Result(Result&& other) noexcept(std::is_nothrow_move_constructible_v<T>) : ok_(other.ok_) {
    if (ok_) {
      new (&value_) T(std::move(other.value_));
    } else {
      error_ = other.error_;
    }
  }
  Result(const Result&) = delete;
  Result& operator=(const Result&) = delete;
  Result& operator=(Result&&) = delete;
  ~Result() {
    if (ok_) value_.~T();
  }

  bool ok() const noexcept { return ok_; }
  explicit operator bool() const noexcept { return ok_; }

  T& value() & noexcept {
    RM_ASSERT(ok_);
    return value_;
  }
  const T& value() const& noexcept {
    RM_ASSERT(ok_);
    return value_;
  }
  T&& value() && noexcept {
    RM_ASSERT(ok_);
    return std::move(value_);
  }
  T* operator->() noexcept { return &value(); }
  T& operator*() & noexcept { return value(); }

  E error() const noexcept {
    RM_ASSERT(!ok_);
    return error_;
  }

 private:
  bool ok_;
  union {
    T value_;
    E error_;
  };
};

// Result of an operation that yields nothing but may fail.
template <typename E>
class [[nodiscard]] Result<void, E> {
 public:
  Result() noexcept : ok_(true), error_() {}
  Result(Err<E> err) noexcept : ok_(false), error_(err.code) {}  // NOLINT: implicit by design

  bool ok() const noexcept { return ok_; }
  explicit operator bool() const noexcept { return ok_; }
  E error() const noexcept {
    RM_ASSERT(!ok_);
    return error_;
  }

 private:
  bool ok_;
  E error_;
};

}  // namespace ringmux
