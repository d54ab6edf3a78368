// Allocation of large, long-lived buffers (receive rings, writer buffers, replay rings).
//
// These go through mimalloc when the build has it: glibc's malloc hands large blocks back
// to the kernel on free and takes page faults when they come back, which on the machines
// ringmux targets turns bulk transfers into page-fault storms. Small objects use the
// ordinary allocator. Allocation happens at setup, never per message. Thread-safe.
#pragma once

#include <cstddef>

namespace ringmux {

// Returns `bytes` bytes aligned to `alignment` (a power of two), or nullptr when out of
// memory. The caller owns the block and frees it with large_free.
void* large_alloc(std::size_t bytes, std::size_t alignment = 64) noexcept;
void large_free(void* block) noexcept;

}  // namespace ringmux
