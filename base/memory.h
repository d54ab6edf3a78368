// Allocation of large, long-lived buffers (receive rings, writer buffers, replay rings).
//
// These go through mimalloc when the build has it: glibc's malloc hands large blocks back
// to the kernel on free and takes page faults when they come back, which on the machines
// ringmux targets turns bulk transfers into page-fault storms. Small objects use the
// ordinary allocator. Allocation happens at setup, never per message. Thread-safe.
#pragma once

#include <cstddef>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

namespace ringmux {

// Returns `bytes` bytes aligned to `alignment` (a power of two), or nullptr when out of
// memory. The caller owns the block and frees it with large_free.
void* large_alloc(std::size_t bytes, std::size_t alignment = 64) noexcept;
void large_free(void* block) noexcept;

// An allocator that default-initialises what a container grows by: resizing a byte vector
// then leaves the new bytes as they are instead of zeroing them. The writer grows its
// batch and overwrites the new bytes at once; with std::allocator each batch byte was
// written twice (a memset took 3 % of W3's CPU, 6 % of the sending core's).
template <typename T>
struct DefaultInitAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  DefaultInitAllocator() noexcept = default;
  template <typename U>
  DefaultInitAllocator(const DefaultInitAllocator<U>&) noexcept {}
  template <typename U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;  // default-, not value-initialised
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    std::allocator_traits<std::allocator<T>>::construct(static_cast<std::allocator<T>&>(*this), p,
                                                        std::forward<Args>(args)...);
  }
};

// A growable byte buffer whose growth does not zero: the writer's batches.
using ByteVector = std::vector<std::byte, DefaultInitAllocator<std::byte>>;

}  // namespace ringmux
