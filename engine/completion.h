// Completion: the record of one operation submitted to a loop's io_uring.
//
// A completion lives inside the object that owns the operation (a socket, a listener, a
// timer facility); its address is the SQE's user_data, so a CQE is dispatched with no
// lookup. Invariant: `submitted` is true exactly when the kernel owns the completion,
// i.e. from the SQE's preparation until the CQE without IORING_CQE_F_MORE has been
// dispatched. While submitted, the completion must be neither moved, copied nor destroyed.
// Loop thread only.
#pragma once

#include <cstdint>

namespace ringmux::engine {

struct Completion {
  // Called once per CQE. `result` is the CQE's res (a negative errno on failure) and
  // `flags` its flags. `submitted` is already false when this is the final CQE of the
  // operation, so the callback may re-arm the same completion.
  using Callback = void (*)(Completion& completion, int32_t result, uint32_t flags) noexcept;

  Callback callback = nullptr;
  void* context = nullptr;  // the owner, for the callback to recover
  bool submitted = false;

  Completion() = default;
  Completion(const Completion&) = delete;
  Completion& operator=(const Completion&) = delete;
};

// Recovers the owner stored in a completion's context.
template <typename T>
T& owner_of(Completion& completion) noexcept {
  return *static_cast<T*>(completion.context);
}

}  // namespace ringmux::engine
