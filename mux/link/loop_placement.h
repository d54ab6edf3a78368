// Placement of accepted sessions over an Engine's loops, and the listening loop's router
// that hands each socket, with its HELLO, to the loop that owns its session.
//
// One loop listens; its acceptor reads every new connection's HELLO. The HELLO names the
// loop: its route_key when the dialer sent one (wire/SPEC.md §4.1), else a hash of its
// session id. Both are the same on every connection of a session, so a resume reaches the
// loop where the session lives without any table shared between loops: the placement is
// a pure function of the HELLO and the loop count. A socket owned by another loop is
// posted there (Acceptor::take), where that loop's acceptor starts or resumes the session;
// so is a handshaken transport (TLS), released whole by the listening loop's acceptor and
// adopted there. From then on nothing of the connection crosses loops.
//
// Threads: loop_of_* from any thread. The router runs on the listening loop's thread (it
// is that acceptor's Router); it posts to the other loops.
// Lifetime: the engine and every acceptor in `acceptors` outlive the router; the owner
// closes the listening acceptor first (no more hand-overs), then the others on their own
// loops, whose queues run the hand-overs posted before that close first.
#pragma once

#include <cstdint>
#include <vector>

#include "ringmux/engine/engine.h"
#include "ringmux/mux/link/acceptor.h"
#include "ringmux/wire/frame.h"

namespace ringmux::mux {

// The loop (of `loops`) that owns route key `key`. Bit 0 is left out: the cluster uses it
// to decide which member of a pair dials, and placement must not correlate with that.
uint32_t loop_of_route_key(uint64_t key, uint32_t loops) noexcept;

// The loop (of `loops`) an accepted session belongs to: by its route_key when sent, else
// by a hash of its session id.
uint32_t loop_of_hello(const wire::Hello& hello, uint32_t loops) noexcept;

// The Router of the acceptor on loop `listening` of `engine`: it places each session by
// loop_of_hello; a socket or released transport whose session belongs to loop
// i != listening goes to acceptors[i] (posted; Acceptor::take runs on loop i's thread), the
// listening loop's own sessions stay with its acceptor. acceptors[i] is loop i's acceptor,
// one per loop of `engine`.
Acceptor::Router hand_over_router(engine::Engine& engine, uint32_t listening, std::vector<Acceptor*> acceptors);

}  // namespace ringmux::mux
