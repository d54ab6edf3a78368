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
  const auto loops = static_cast<uint32_t>(acceptors.size());
  Acceptor::Router router;
  router.place = [loops](const wire::Hello& hello) { return loop_of_hello(hello, loops); };
  router.here = listening;
  router.hand_over = [&engine, acceptors = std::move(acceptors)](uint32_t index, const wire::Hello& hello,
                                                                 Arrival arrival) {
    Acceptor* target = acceptors[index];
    // The HELLO is copied into the task (the one passed here lives only during the call);
    // the arrival moves into it, a released transport with it: the post orders this
    // thread's last use of it before the target loop's first.
    engine.post(index, [target, hello, arrival = std::move(arrival)]() mutable { target->take(hello, std::move(arrival)); });
  };
  return router;
}

}  // namespace ringmux::mux
