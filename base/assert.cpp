#include "ringmux/base/assert.h"

#include <cstdio>
#include <cstdlib>

namespace ringmux {

void assert_fail(const char* expr, const char* file, int line) noexcept {
  std::fprintf(stderr, "%s:%d: assertion failed: %s\n", file, line, expr);
  std::fflush(stderr);
  std::abort();
}

}  // namespace ringmux
