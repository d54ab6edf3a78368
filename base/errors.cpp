#include "ringmux/base/errors.h"

namespace ringmux {

const char* describe(Scope scope) noexcept {
  switch (scope) {
    case Scope::stream: return "stream";
    case Scope::session: return "session";
    case Scope::connection: return "connection";
    case Scope::fatal: return "fatal";
  }
  return "unknown scope";
}

}  // namespace ringmux
