// InlineFunction: a move-only callable wrapper that never allocates: the callable lives in
// `Capacity` bytes inside the wrapper, and one that does not fit is a compile error (capture
// a pointer to the state instead). For callbacks made once per message (a unary call's
// completion), where std::function would allocate for any capture over 16 bytes.
#pragma once

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

#include "ringmux/base/assert.h"

namespace ringmux {

template <typename Signature, std::size_t Capacity = 64>
class InlineFunction;

template <typename R, typename... Args, std::size_t Capacity>
class InlineFunction<R(Args...), Capacity> {
 public:
  InlineFunction() noexcept = default;
  InlineFunction(std::nullptr_t) noexcept {}
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, InlineFunction> &&
                                                    std::is_invocable_r_v<R, std::decay_t<F>&, Args...>>>
  InlineFunction(F&& callable) noexcept(std::is_nothrow_constructible_v<std::decay_t<F>, F&&>) {
    using Callable = std::decay_t<F>;
    static_assert(sizeof(Callable) <= Capacity, "the callable does not fit: capture a pointer to its state");
    static_assert(alignof(Callable) <= alignof(std::max_align_t), "over-aligned callable");
    static_assert(std::is_nothrow_move_constructible_v<Callable>, "the callable must move without throwing");
    new (storage_) Callable(std::forward<F>(callable));
    invoke_ = [](void* storage, Args... args) -> R {
      return (*std::launder(static_cast<Callable*>(storage)))(std::forward<Args>(args)...);
    };
    manage_ = [](void* to, void* from) noexcept {
      auto* source = std::launder(static_cast<Callable*>(from));
      if (to != nullptr) new (to) Callable(std::move(*source));
      source->~Callable();
    };
  }
  InlineFunction(InlineFunction&& other) noexcept { take(other); }
  InlineFunction& operator=(InlineFunction&& other) noexcept {
    if (this != &other) {
      reset();
      take(other);
    }
    return *this;
  }
  InlineFunction(const InlineFunction&) = delete;
  InlineFunction& operator=(const InlineFunction&) = delete;
  ~InlineFunction() { reset(); }

  explicit operator bool() const noexcept { return invoke_ != nullptr; }
  R operator()(Args... args) {
    RM_ASSERT(invoke_ != nullptr);
    return invoke_(storage_, std::forward<Args>(args)...);
  }
  void reset() noexcept {
    if (manage_ != nullptr) manage_(nullptr, storage_);
    invoke_ = nullptr;
    manage_ = nullptr;
  }

 private:
  void take(InlineFunction& other) noexcept {
    if (other.manage_ == nullptr) return;
    other.manage_(storage_, other.storage_);
    invoke_ = other.invoke_;
    manage_ = other.manage_;
    other.invoke_ = nullptr;
    other.manage_ = nullptr;
  }

  alignas(std::max_align_t) unsigned char storage_[Capacity];
  R (*invoke_)(void*, Args...) = nullptr;
  void (*manage_)(void* to, void* from) noexcept = nullptr;
};

}  // namespace ringmux
