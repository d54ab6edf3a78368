#include "ringmux/base/memory.h"

#include <cstdlib>

#include "ringmux/base/assert.h"
#include "ringmux_config.h"

#if RINGMUX_HAVE_MIMALLOC
#include <mimalloc.h>
#endif

namespace ringmux {

void* large_alloc(std::size_t bytes, std::size_t alignment) noexcept {
  RM_ASSERT(alignment != 0 && (alignment & (alignment - 1)) == 0);
  RM_ASSERT(bytes != 0);
#if RINGMUX_HAVE_MIMALLOC
  return mi_malloc_aligned(bytes, alignment);
#else
  const std::size_t rounded = (bytes + alignment - 1) & ~(alignment - 1);
  return std::aligned_alloc(alignment, rounded);
#endif
}

void large_free(void* block) noexcept {
#if RINGMUX_HAVE_MIMALLOC
  mi_free(block);
#else
  std::free(block);
#endif
}

}  // namespace ringmux
