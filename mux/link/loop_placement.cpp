#include "ringmux/mux/link/loop_placement.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "ringmux/base/assert.h"

namespace ringmux::mux {

uint32_t loop_of_route_key(uint64_t key, uint32_t loops) noexcept {
  RM_ASSERT(loops > 0);
  return static_cast<uint32_t>((key >> 1) % loops);
}

uint32_t loop_of_hello(const wire::Hello& hello, uint32_t loops) noexcept {
  // Session ids are random, but a dialer might pick them with structure in bit 0 or in
  // the low bits: a hash spreads any of them.
  const uint64_t key =
      hello.route_key != 0 ? hello.route_key : XXH3_64bits(hello.session_id.data(), hello.session_id.size());
  return loop_of_route_key(key, loops);
}

Acceptor::Router hand_over_router(engine::Engine& engine, uint32_t listening, std::vector<Acceptor*> acceptors) {
  RM_ASSERT(acceptors.size() == engine.loop_count() && listening < acceptors.size());
  for (Acceptor* acceptor : acceptors) RM_ASSERT(acceptor != nullptr);
  return [&engine, listening, acceptors = std::move(acceptors)](int fd, const wire::Hello& hello) {
    const uint32_t index = loop_of_hello(hello, static_cast<uint32_t>(acceptors.size()));
    if (index == listening) return false;
    Acceptor* target = acceptors[index];
    // The HELLO is copied into the task: the one passed here lives only during the call.
    engine.post(index, [target, fd, hello] { target->take(fd, hello); });
    return true;
  };
}

}  // namespace ringmux::mux
